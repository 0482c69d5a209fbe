//! Hashpool pool-stats: the pool publishes its events here (stats-sv2 over
//! TCP); this service keeps them as time series in SQLite and serves the
//! pool dashboard, a JSON API and Prometheus metrics. It can restart without
//! touching mining, and the pool can restart without losing history.
//!
//! The shell (config, tasks, the routes both stats services serve) is
//! `stats_common`'s; this crate adds what is the pool's own:
//!
//! - `state`: what the pool's messages add up to (no IO)
//! - `api`: the JSON of the API, from the state and the store
//! - `dashboard`: the HTML page

pub mod api;
mod dashboard;
pub mod state;

use axum::Router;
use stats_common::http::{by_hours, by_limit};
use stats_common::store::History;
use stats_common::{Core, Defaults, Service, ServiceConfig, Shared, StoreError};

pub use stats_common::{start, Running as RunningPoolStats, ServiceError as PoolStatsError};

use crate::state::PoolState;

/// pool-stats, as the shell in `stats_common` runs it.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats;

/// `pool-stats --config config/pool-stats.toml`: every setting of the service.
pub type PoolStatsConfig = ServiceConfig<PoolStats>;

impl Service for PoolStats {
    const DEFAULTS: Defaults = Defaults {
        name: "pool-stats",
        env_prefix: "POOL_STATS",
        ingest_port: 4000,
        http_port: 8080,
        data_dir: "state/pool-stats",
        db_file: "pool-stats.sqlite",
    };
    type State = PoolState;
    type Stats = api::Stats;

    fn stats(core: &Core<PoolState>, now: i64) -> Result<api::Stats, StoreError> {
        api::stats(core, now)
    }

    fn metrics(stats: &api::Stats) -> String {
        api::metrics(stats)
    }

    fn dashboard(
        history: &History,
        stats: &api::Stats,
        range: &str,
        hours: u32,
        now: i64,
    ) -> Result<String, StoreError> {
        let chart = stats_common::api::hashrate(history, hours, now)?;
        Ok(dashboard::render(stats, &chart, range))
    }

    fn routes() -> Router<Shared<PoolState>> {
        Router::new()
            .route("/api/miners", by_hours(api::miners))
            .route("/api/blocks", by_limit(api::blocks))
    }
}

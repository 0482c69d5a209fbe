//! Hashpool proxy-stats: the translator publishes its events here
//! (stats-sv2 over TCP); this service keeps them as time series in SQLite
//! and serves the proxy dashboard (miners, wallet, quotes), a JSON API and
//! Prometheus metrics. It can restart without touching mining, and the
//! translator can restart without losing history.
//!
//! The shell (config, tasks, the routes both stats services serve) is
//! `stats_common`'s; this crate adds what is the translator's own:
//!
//! - `state`: what the translator's messages add up to (no IO)
//! - `api`: the JSON of the API, from the state and the store
//! - `dashboard`: the HTML page

pub mod api;
mod dashboard;
pub mod state;

use axum::Router;
use stats_common::http::{by_hours, by_limit};
use stats_common::store::History;
use stats_common::{Core, Defaults, Service, ServiceConfig, Shared, StoreError};

pub use stats_common::{start, Running as RunningProxyStats, ServiceError as ProxyStatsError};

use crate::state::ProxyState;

/// proxy-stats, as the shell in `stats_common` runs it.
#[derive(Debug, Clone, Copy)]
pub struct ProxyStats;

/// `proxy-stats --config config/proxy-stats.toml`: every setting of the service.
pub type ProxyStatsConfig = ServiceConfig<ProxyStats>;

impl Service for ProxyStats {
    const DEFAULTS: Defaults = Defaults {
        name: "proxy-stats",
        env_prefix: "PROXY_STATS",
        ingest_port: 4001,
        http_port: 8081,
        data_dir: "state/proxy-stats",
        db_file: "proxy-stats.sqlite",
    };
    type State = ProxyState;
    type Stats = api::Stats;

    fn stats(core: &Core<ProxyState>, now: i64) -> Result<api::Stats, StoreError> {
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
        let total = stats_common::api::hashrate(history, hours, now)?;
        let per_miner = api::miners(history, hours, now)?;
        Ok(dashboard::render(stats, &total, &per_miner, range))
    }

    fn routes() -> Router<Shared<ProxyState>> {
        Router::new()
            .route("/api/miners", by_hours(api::miners))
            .route("/api/quotes", by_limit(api::quotes))
    }
}

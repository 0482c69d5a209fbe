//! Hashpool proxy-stats: the translator publishes its events here
//! (stats-sv2 over TCP); this service keeps them as time series in SQLite
//! and serves the proxy dashboard (miners, wallet, quotes), a JSON API and
//! Prometheus metrics. It can restart without touching mining, and the
//! translator can restart without losing history.
//!
//! - `aggregate`: what the translator's messages add up to (no IO)
//! - `api`: the JSON of the API, from the aggregate and the store
//! - `dashboard`: the HTML page

pub mod aggregate;
pub mod api;
pub mod config;
mod dashboard;

use axum::extract::{Query, State};
use axum::response::{Html, Response};
use axum::routing::get;
use axum::{Json, Router};
use roles_common::CancellationToken;
use stats_common::service::{metrics_response, run_blocking};
use stats_common::{now_ms, ApiError, HoursQuery, Settings, Shared};

pub use config::ProxyStatsConfig;
pub use stats_common::{Running as RunningProxyStats, ServiceError as ProxyStatsError};

use crate::aggregate::ProxyAggregate;

/// Opens the store in `data_dir`, binds both listeners and starts serving.
pub async fn start(
    config: ProxyStatsConfig,
    shutdown: CancellationToken,
) -> Result<RunningProxyStats, ProxyStatsError> {
    let settings = Settings {
        name: "proxy-stats",
        ingest_listen: config.ingest_listen,
        http_listen: config.http_listen,
        data_dir: config.data_dir,
        db_file: "proxy-stats.sqlite",
        retention_days: config.retention_days,
    };
    stats_common::start::<ProxyAggregate>(settings, router, shutdown).await
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    config: ProxyStatsConfig,
    shutdown: CancellationToken,
) -> Result<(), ProxyStatsError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

type AppState = State<Shared<ProxyAggregate>>;

fn router(shared: Shared<ProxyAggregate>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/stats", get(stats))
        .route("/api/hashrate", get(hashrate))
        .route("/api/miners", get(miners))
        .route("/api/quotes", get(quotes))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

#[derive(serde::Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

#[derive(serde::Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn dashboard(
    State(shared): AppState,
    Query(q): Query<RangeQuery>,
) -> Result<Html<String>, ApiError> {
    let (label, hours) = stats_common::html::range_hours(q.range.as_deref());
    run_blocking(&shared, move |core| {
        let now = now_ms();
        let stats = api::stats(core, now)?;
        let total = api::hashrate(core, hours, now)?;
        let per_miner = api::miners(core, hours, now)?;
        Ok(Html(dashboard::render(&stats, &total, &per_miner, label)))
    })
    .await
}

async fn stats(State(shared): AppState) -> Result<Json<api::Stats>, ApiError> {
    run_blocking(&shared, |core| Ok(Json(api::stats(core, now_ms())?))).await
}

async fn hashrate(
    State(shared): AppState,
    Query(q): Query<HoursQuery>,
) -> Result<Json<api::Hashrate>, ApiError> {
    let hours = q.hours()?;
    run_blocking(&shared, move |core| {
        Ok(Json(api::hashrate(core, hours, now_ms())?))
    })
    .await
}

async fn miners(
    State(shared): AppState,
    Query(q): Query<HoursQuery>,
) -> Result<Json<api::Miners>, ApiError> {
    let hours = q.hours()?;
    run_blocking(&shared, move |core| {
        Ok(Json(api::miners(core, hours, now_ms())?))
    })
    .await
}

async fn quotes(
    State(shared): AppState,
    Query(q): Query<LimitQuery>,
) -> Result<Json<api::Quotes>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    run_blocking(&shared, move |core| Ok(Json(api::quotes(core, limit)?))).await
}

async fn metrics(State(shared): AppState) -> Result<Response, ApiError> {
    run_blocking(&shared, |core| {
        Ok(metrics_response(api::metrics(&api::stats(core, now_ms())?)))
    })
    .await
}

//! What the two stats services (pool-stats, proxy-stats) share: everything
//! but their state, their own routes and their dashboard sections.
//!
//! - `ingest`: the publisher listener (stats-sv2 frames over TCP, hello with
//!   the publisher secret first; timeouts and connection caps)
//! - `store`: the SQLite file: 1-minute buckets, records, saved state,
//!   downtime, and the limits on what it keeps
//! - `series`: ranges, downsampling steps and hashrate timelines (no IO)
//! - `core`: the publisher session and the `ServiceState` trait (no IO)
//! - `config`: the config file, with each service's `Defaults`
//! - `service`: the `Service` trait and the tasks: ingest, apply-and-flush
//!   loop, pruning, HTTP
//! - `http`, `api`: the routes both serve and the JSON they compute alike
//! - `metrics`, `chart`, `html`, `format`: Prometheus text, SVG charts, the
//!   dashboard page, and how figures are written

pub mod api;
pub mod chart;
pub mod config;
pub mod core;
pub mod format;
pub mod html;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod series;
pub mod service;
pub mod store;
#[doc(hidden)]
pub mod testing;

pub use crate::core::{
    Core, LinkState, LiveKey, LiveRefusals, Publisher, Sender, ServiceState, MAX_LIVE_ENTRIES,
};
pub use config::{Defaults, ServiceConfig};
pub use http::ApiError;
pub use service::{main, run, start, Running, Service, ServiceError, Shared};
pub use store::{Store, StoreError, StoreLimits, Write};

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

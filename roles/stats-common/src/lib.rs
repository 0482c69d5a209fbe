//! What the two stats services (pool-stats, proxy-stats) share:
//!
//! - `ingest`: the publisher listener (stats-sv2 frames over TCP, hello first)
//! - `store`: the SQLite file: 1-minute buckets, records, saved state, downtime
//! - `series`: ranges, downsampling steps and hashrate timelines (no IO)
//! - `core`: the publisher session and the `Aggregate` trait (no IO)
//! - `service`: the tasks: ingest, apply-and-flush loop, pruning, HTTP
//! - `metrics`, `chart`, `html`, `format`: Prometheus text, SVG charts, the
//!   dashboard page, and how figures are written

pub mod chart;
pub mod core;
pub mod format;
pub mod html;
pub mod ingest;
pub mod metrics;
pub mod series;
pub mod service;
pub mod store;
#[doc(hidden)]
pub mod testing;

pub use crate::core::{Aggregate, Core, Publisher};
pub use service::{start, ApiError, HoursQuery, Running, ServiceError, Settings, Shared};
pub use store::{Store, StoreError, Write};

/// Now as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

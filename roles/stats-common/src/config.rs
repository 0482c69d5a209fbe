//! `<service> --config config/<service>.toml`: the settings of a stats
//! service. Both services have the same fields; each has its own defaults.

use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use roles_common::stats_publisher::PublisherSecret;
use roles_common::{ConfigError, Validate};
use serde::Deserialize;

use crate::service::Service;

/// The longest retention accepted (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Default `max_per_miner_rows`: 30 days of ~45 miners mining every minute,
/// a few hundred MB of SQLite.
pub const DEFAULT_MAX_PER_MINER_ROWS: u64 = 2_000_000;
/// Default `max_records`.
pub const DEFAULT_MAX_RECORDS: u64 = 100_000;

/// What tells one stats service from the other, besides its state and pages.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// "pool-stats" or "proxy-stats": for logs, the dashboard subtitle and
    /// the shipped config file `config/<name>.toml`.
    pub name: &'static str,
    /// Environment overrides are `<env_prefix>__<FIELD>`.
    pub env_prefix: &'static str,
    /// Default port of `ingest_listen` (on 127.0.0.1, where no
    /// `publisher_secret` is needed).
    pub ingest_port: u16,
    /// Default port of `http_listen` (on every address).
    pub http_port: u16,
    pub data_dir: &'static str,
    /// File name of the SQLite database inside `data_dir`.
    pub db_file: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig<S: Service> {
    /// Where the publisher (the pool or the translator) connects to publish
    /// its stats (stats-sv2 over TCP).
    pub ingest_listen: SocketAddr,
    /// The secret every publisher's hello must carry (its `[stats] secret`);
    /// a connection without it is closed before anything it sends is read.
    /// Required unless `ingest_listen` is a loopback address.
    pub publisher_secret: Option<PublisherSecret>,
    /// The dashboard, the JSON API and /metrics.
    pub http_listen: SocketAddr,
    /// Directory of the SQLite time-series file.
    pub data_dir: PathBuf,
    /// Days of history kept; older data is deleted every hour, and events
    /// dated before that are not recorded.
    pub retention_days: u32,
    /// Rows of per-miner history (one per miner, or per downstream, and
    /// minute) kept at most; beyond it the oldest minutes go first. Totals
    /// and the whole pool's history are not affected.
    pub max_per_miner_rows: u64,
    /// Records of each kind (quotes, blocks) kept at most; beyond it the
    /// oldest go first.
    pub max_records: u64,
    #[serde(skip)]
    service: PhantomData<S>,
}

impl<S: Service> Default for ServiceConfig<S> {
    fn default() -> Self {
        let defaults = S::DEFAULTS;
        ServiceConfig {
            ingest_listen: (Ipv4Addr::LOCALHOST, defaults.ingest_port).into(),
            publisher_secret: None,
            http_listen: (Ipv4Addr::UNSPECIFIED, defaults.http_port).into(),
            data_dir: defaults.data_dir.into(),
            retention_days: 30,
            max_per_miner_rows: DEFAULT_MAX_PER_MINER_ROWS,
            max_records: DEFAULT_MAX_RECORDS,
            service: PhantomData,
        }
    }
}

impl<S: Service> ServiceConfig<S> {
    /// Defaults everywhere but the data directory (tests, embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> ServiceConfig<S> {
        ServiceConfig {
            data_dir: data_dir.into(),
            ..ServiceConfig::default()
        }
    }
}

impl<S: Service> Validate for ServiceConfig<S> {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "is empty"));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(ConfigError::new(
                "retention_days",
                format!("must be 1 to {MAX_RETENTION_DAYS}"),
            ));
        }
        match &self.publisher_secret {
            Some(secret) => secret.check("publisher_secret")?,
            None if !self.ingest_listen.ip().is_loopback() => {
                return Err(ConfigError::new(
                    "publisher_secret",
                    format!(
                        "must be set when ingest_listen ({}) is not a loopback address, \
                         or anyone who reaches it could publish figures",
                        self.ingest_listen
                    ),
                ))
            }
            None => {}
        }
        for (field, value) in [
            ("max_per_miner_rows", self.max_per_miner_rows),
            ("max_records", self.max_records),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

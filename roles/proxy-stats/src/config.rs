//! `proxy-stats --config config/proxy-stats.toml`: every setting of the service.

use std::net::SocketAddr;
use std::path::PathBuf;

use roles_common::{ConfigError, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyStatsConfig {
    /// Where the translator connects to publish its stats (stats-sv2 over TCP).
    #[serde(default = "default_ingest_listen")]
    pub ingest_listen: SocketAddr,
    /// The dashboard, the JSON API and /metrics.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Directory of the SQLite time-series file (`proxy-stats.sqlite`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Days of history kept; older data is deleted every hour.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_ingest_listen() -> SocketAddr {
    "0.0.0.0:4001".parse().expect("valid")
}
fn default_http_listen() -> SocketAddr {
    "0.0.0.0:8081".parse().expect("valid")
}
fn default_data_dir() -> PathBuf {
    "state/proxy-stats".into()
}
fn default_retention_days() -> u32 {
    30
}

impl ProxyStatsConfig {
    /// Defaults everywhere but the data directory (tests, embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> ProxyStatsConfig {
        ProxyStatsConfig {
            ingest_listen: default_ingest_listen(),
            http_listen: default_http_listen(),
            data_dir: data_dir.into(),
            retention_days: default_retention_days(),
        }
    }
}

impl Validate for ProxyStatsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        stats_common::service::validate_common(&self.data_dir, self.retention_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<ProxyStatsConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        roles_common::load_config(&path, "PROXY_STATS_TEST_UNSET")
    }

    #[test]
    fn the_shipped_config_loads_with_the_documented_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/proxy-stats.toml");
        let shipped: ProxyStatsConfig =
            roles_common::load_config(&path, "PROXY_STATS_TEST_UNSET").unwrap();
        let defaults = load("").unwrap();
        assert_eq!(shipped.ingest_listen, defaults.ingest_listen);
        assert_eq!(shipped.http_listen, defaults.http_listen);
        assert_eq!(shipped.data_dir, defaults.data_dir);
        assert_eq!(shipped.retention_days, defaults.retention_days);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        for (text, field) in [
            ("retention_days = 0\n", "retention_days"),
            ("retention_days = 100000\n", "retention_days"),
            ("ingest_listen = \"nowhere\"\n", "ingest_listen"),
            ("data_dir = \"\"\n", "data_dir"),
            ("http_port = 1\n", "http_port"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(field), "{text:?} gave {err}");
            assert!(!err.contains('\n'));
        }
    }
}

//! The miner's TOML config (config/miner.toml).

use std::str::FromStr;

use roles_common::{ConfigError, Validate};
use serde::Deserialize;

/// What the miner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Hash on all cores and submit every share found.
    #[default]
    Cpu,
    /// Simulate `load.miners` miners, each submitting `load.shares_per_second`.
    Load,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadConfig {
    /// Simulated miners (one SV1 connection each).
    pub miners: usize,
    /// Shares each simulated miner submits per second (at most).
    pub shares_per_second: f64,
    /// Hashes per second each simulated miner does instead (every share
    /// found is submitted, as by a real device); 0 = paced by shares.
    pub hashrate: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            miners: 10,
            shares_per_second: 1.0,
            hashrate: 0.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinerConfig {
    /// The translator's SV1 address, `host:port` (a `stratum+tcp://` prefix is allowed).
    pub url: String,
    /// A locking key `<66 hex>[.worker]` (ehash locked to that key) or any name.
    pub username: String,
    pub password: String,
    /// Hashing threads; 0 = all cores.
    pub threads: usize,
    pub mode: Mode,
    /// Ask for version rolling (`mining.configure`).
    pub version_rolling: bool,
    pub load: LoadConfig,
    /// Seconds between hashrate / share count log lines; 0 = never.
    pub stats_interval_secs: u64,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            url: "127.0.0.1:34255".into(),
            username: "hashpool-miner".into(),
            password: "x".into(),
            threads: 0,
            mode: Mode::Cpu,
            version_rolling: true,
            load: LoadConfig::default(),
            stats_interval_secs: 10,
        }
    }
}

impl MinerConfig {
    /// `host:port` without any scheme.
    pub fn address(&self) -> &str {
        self.url
            .strip_prefix("stratum+tcp://")
            .unwrap_or(&self.url)
            .trim_end_matches('/')
    }

    /// The number of hashing threads (`threads`, or all cores when 0).
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

impl Validate for MinerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        roles_common::check_host_port("url", self.address())?;
        if self.username.is_empty() || self.username.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "username",
                "must be non-empty without spaces",
            ));
        }
        let key = self.username.split('.').next().unwrap_or_default();
        if key.len() == 66 && key.chars().all(|c| c.is_ascii_hexdigit()) {
            ehash::LockingKey::from_str(key).map_err(|e| {
                ConfigError::new("username", format!("not a valid locking key: {e}"))
            })?;
        }
        if self.threads > 4096 {
            return Err(ConfigError::new("threads", "must be at most 4096"));
        }
        if self.mode == Mode::Load {
            if self.load.miners == 0 || self.load.miners > 100_000 {
                return Err(ConfigError::new(
                    "load.miners",
                    "must be between 1 and 100000",
                ));
            }
            // Below one share a day, the interval between shares overflows
            // a timer.
            let r = self.load.shares_per_second;
            if !(r.is_finite() && (1e-5..=1_000_000.0).contains(&r)) {
                return Err(ConfigError::new(
                    "load.shares_per_second",
                    "must be a number from 0.00001 (about one a day) to 1000000",
                ));
            }
            let h = self.load.hashrate;
            if !(h.is_finite() && h >= 0.0) {
                return Err(ConfigError::new(
                    "load.hashrate",
                    "must be a number of hashes per second, 0 or above",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        assert!(MinerConfig::default().validate().is_ok());
        let c = MinerConfig {
            url: "nonsense".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "url");
        let mut c = MinerConfig {
            url: "stratum+tcp://10.0.0.1:3333".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.address(), "10.0.0.1:3333");
        c.username = format!("04{}.rig", "00".repeat(32));
        assert_eq!(c.validate().unwrap_err().field, "username");
        c.username =
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798.rig".into();
        assert!(c.validate().is_ok());
        c.mode = Mode::Load;
        for bad in [0.0, 1e-20] {
            c.load.shares_per_second = bad;
            assert_eq!(c.validate().unwrap_err().field, "load.shares_per_second");
        }
        c.load.shares_per_second = 2.0;
        c.load.miners = 0;
        assert_eq!(c.validate().unwrap_err().field, "load.miners");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<MinerConfig>(r#"{"url":"a:1","thread":2}"#).unwrap_err();
        assert!(e.to_string().contains("thread"), "{e}");
        let c: MinerConfig =
            serde_json::from_str(r#"{"mode":"load","load":{"miners":3}}"#).unwrap();
        assert_eq!((c.mode, c.load.miners), (Mode::Load, 3));
    }
}

//! Configuration and the hash rate <-> work per share conversion.

use std::fmt;

/// Expected hashes per share for a miner at `hashrate` (hashes per second)
/// to send `shares_per_minute` shares: `hashrate * 60 / shares_per_minute`.
///
/// A share target `t` is met by `2^256 / (t + 1)` hashes on average; callers
/// turn this work into a target that way (and a share's target back into its
/// work for [`Vardiff::on_share`](crate::Vardiff::on_share)).
pub fn work_per_share(hashrate: f64, shares_per_minute: f64) -> f64 {
    hashrate * 60.0 / shares_per_minute
}

/// The hash rate at which a share of `work` expected hashes comes every
/// `60 / shares_per_minute` seconds: the inverse of [`work_per_share`].
pub fn hashrate_for_work(work: f64, shares_per_minute: f64) -> f64 {
    work * shares_per_minute / 60.0
}

/// How a [`Vardiff`](crate::Vardiff) aims and how far it may move.
#[derive(Debug, Clone, PartialEq)]
pub struct VardiffConfig {
    /// The share rate aimed at, per minute.
    pub shares_per_minute: f64,
    /// The lowest estimate ever set, hashes per second (the pool's minimum
    /// difficulty expressed as a hash rate with [`hashrate_for_work`]).
    pub min_hashrate: f64,
    /// The highest estimate ever set, hashes per second.
    pub max_hashrate: f64,
    /// Hysteresis: no retarget while the measured rate is within
    /// `[estimate / band, estimate * band]`, i.e. while the share rate is
    /// within `[aim / band, aim * band]`. Must be > 1.
    pub band: f64,
    /// One retarget moves the estimate by at most this factor, up or down.
    /// Must be >= `band`, so that one step can bring the share rate back
    /// into the band.
    pub max_step: f64,
    /// Time constant of the decaying average, milliseconds (ckpool decides
    /// on a 5-minute one).
    pub time_constant_ms: u64,
    /// How long a new difficulty may take to reach the miner: until its
    /// next job (the job interval). Once the caller reports the miner's
    /// difficulty ([`Vardiff::on_difficulty`](crate::Vardiff::on_difficulty)):
    /// how long after a report shares mined at the previous one may still
    /// come (a few seconds). See the [crate] documentation.
    pub difficulty_delay_ms: u64,
}

impl Default for VardiffConfig {
    /// Six shares a minute, 1 H/s to 1 EH/s, band ×1.5, steps of ×4 at most,
    /// a 5-minute average, jobs every 30 s.
    fn default() -> Self {
        Self {
            shares_per_minute: 6.0,
            min_hashrate: 1.0,
            max_hashrate: 1e18,
            band: 1.5,
            max_step: 4.0,
            time_constant_ms: 300_000,
            difficulty_delay_ms: 30_000,
        }
    }
}

impl VardiffConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        if !positive(self.shares_per_minute) {
            return Err(ConfigError::new("shares_per_minute", "must be > 0"));
        }
        if !positive(self.min_hashrate) {
            return Err(ConfigError::new("min_hashrate", "must be > 0"));
        }
        if !(positive(self.max_hashrate) && self.max_hashrate >= self.min_hashrate) {
            return Err(ConfigError::new("max_hashrate", "must be >= min_hashrate"));
        }
        if !(self.band.is_finite() && self.band > 1.0) {
            return Err(ConfigError::new("band", "must be > 1"));
        }
        if !(self.max_step.is_finite() && self.max_step >= self.band) {
            return Err(ConfigError::new("max_step", "must be >= band"));
        }
        if self.time_constant_ms == 0 {
            return Err(ConfigError::new("time_constant_ms", "must be > 0"));
        }
        Ok(())
    }
}

/// An invalid [`VardiffConfig`] field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl ConfigError {
    fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vardiff config: {} {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_and_hashrate_convert_both_ways() {
        // 1 MH/s at 6 shares a minute: a share every 10 s, 10 MH each.
        assert_eq!(work_per_share(1e6, 6.0), 1e7);
        assert_eq!(hashrate_for_work(1e7, 6.0), 1e6);
    }

    #[test]
    fn the_default_is_valid_and_nonsense_is_not() {
        assert_eq!(VardiffConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut VardiffConfig)| {
            let mut config = VardiffConfig::default();
            f(&mut config);
            config.validate().unwrap_err().field
        };
        assert_eq!(bad(|c| c.shares_per_minute = 0.0), "shares_per_minute");
        assert_eq!(bad(|c| c.shares_per_minute = f64::NAN), "shares_per_minute");
        assert_eq!(bad(|c| c.min_hashrate = -1.0), "min_hashrate");
        assert_eq!(bad(|c| c.max_hashrate = 0.5), "max_hashrate");
        assert_eq!(bad(|c| c.band = 1.0), "band");
        assert_eq!(bad(|c| c.max_step = 1.2), "max_step");
        assert_eq!(bad(|c| c.time_constant_ms = 0), "time_constant_ms");
    }
}

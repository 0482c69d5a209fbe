//! Per-miner variable difficulty, sans-IO (time is passed in, in seconds).
//!
//! The translator estimates each miner's hash rate from the shares it sends
//! and, when the share rate is far from the aim, asks the pool for a new
//! target with `UpdateChannel` (nominal hash rate); the pool answers with
//! `SetTarget`, which becomes the miner's `mining.set_difficulty`.

use stratum_core::bitcoin::Target;

/// Retarget when the share rate is outside [aim / BAND, aim * BAND].
const BAND: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct Vardiff {
    shares_per_minute: f64,
    /// Shortest window a decision is made on.
    window_secs: u64,
    window_start: u64,
    shares: u32,
    hashrate: f32,
}

/// Expected hashes of one share at `target`: 2^256 / (target + 1), as f64.
pub fn hashes_per_share(target: &Target) -> f64 {
    // difficulty_float is diff1_target / target; diff1 is ~2^32 hashes.
    target.difficulty_float() * 4_295_032_833.0
}

impl Vardiff {
    pub fn new(shares_per_minute: f32, window_secs: u64) -> Self {
        Self {
            shares_per_minute: shares_per_minute as f64,
            window_secs: window_secs.max(1),
            window_start: 0,
            shares: 0,
            hashrate: 0.0,
        }
    }

    /// A channel (re)opened at `hashrate`.
    pub fn reset(&mut self, now: u64, hashrate: f32) {
        self.window_start = now;
        self.shares = 0;
        self.hashrate = hashrate;
    }

    /// The current estimate of the miner's hash rate (hashes/s).
    pub fn hashrate(&self) -> f32 {
        self.hashrate
    }

    pub fn on_share(&mut self, _now: u64) {
        self.shares = self.shares.saturating_add(1);
    }

    /// A new nominal hash rate, if the share rate left the band.
    pub fn tick(&mut self, now: u64, target: &Target) -> Option<f32> {
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed < self.window_secs {
            return None;
        }
        let per_minute = self.shares as f64 * 60.0 / elapsed as f64;
        let aim = self.shares_per_minute;
        if per_minute >= aim / BAND && per_minute <= aim * BAND {
            // in band: start a new window
            self.window_start = now;
            self.shares = 0;
            return None;
        }
        let new_rate = if self.shares == 0 {
            // nothing at all: the target is far too hard; drop fast
            (self.hashrate as f64 / 4.0).max(1.0)
        } else {
            self.shares as f64 * hashes_per_share(target) / elapsed as f64
        };
        self.window_start = now;
        self.shares = 0;
        self.hashrate = new_rate as f32;
        Some(self.hashrate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2^224 - 1: one share is ~2^32 expected hashes.
    fn target_2_224() -> Target {
        let mut be = [0u8; 32];
        be[4..].fill(0xff);
        Target::from_be_bytes(be)
    }

    #[test]
    fn in_band_changes_nothing() {
        let mut v = Vardiff::new(6.0, 30);
        v.reset(0, 1e6);
        let t = target_2_224();
        for _ in 0..6 {
            v.on_share(0);
        }
        assert_eq!(v.tick(60, &t), None);
    }

    #[test]
    fn too_many_shares_raise_the_hashrate_to_the_measured_one() {
        let mut v = Vardiff::new(6.0, 30);
        v.reset(0, 1e6);
        let t = target_2_224();
        for _ in 0..60 {
            v.on_share(0);
        }
        let r = v.tick(60, &t).expect("retarget");
        // 60 shares of 2^32 hashes in 60 s
        assert!((r as f64 / 2f64.powi(32) - 1.0).abs() < 0.01, "{r}");
    }

    #[test]
    fn silence_lowers_the_hashrate_and_short_windows_wait() {
        let mut v = Vardiff::new(6.0, 30);
        v.reset(100, 1e6);
        let t = target_2_224();
        assert_eq!(v.tick(110, &t), None);
        assert_eq!(v.tick(200, &t), Some(250_000.0));
    }
}

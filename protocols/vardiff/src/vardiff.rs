//! The per-miner controller: estimate, detect changes, retarget.

use crate::average::DecayingRate;
use crate::clock::SteadyClock;
use crate::config::{work_per_share, ConfigError, VardiffConfig};
use crate::detect::{Detector, Exposure, Share};

/// One miner's variable difficulty. See the [crate] documentation.
#[derive(Debug, Clone)]
pub struct Vardiff {
    config: VardiffConfig,
    /// The current estimate: the hash rate the miner's difficulty is set for.
    hashrate: f64,
    /// A retarget was cut short by `max_step`: carry on next tick, band or not.
    stepping: bool,
    average: DecayingRate,
    detector: Detector,
    exposure: Exposure,
    /// The caller's time, never running back.
    clock: SteadyClock,
}

impl Vardiff {
    /// A miner starting at `initial_hashrate` (clamped to the configured range).
    pub fn new(
        config: VardiffConfig,
        now_ms: u64,
        initial_hashrate: f64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::start(config, now_ms, initial_hashrate))
    }

    /// Starts over at `hashrate`, forgetting every share (a channel reopened,
    /// or the caller set the difficulty itself).
    ///
    /// A difficulty reported with [`on_difficulty`](Self::on_difficulty)
    /// stays reported: the miner still mines at it.
    pub fn reset(&mut self, now_ms: u64, hashrate: f64) {
        let mut clock = self.clock;
        let now_ms = clock.at(now_ms);
        let reported = self.exposure.reported();
        *self = Self::start(self.config.clone(), now_ms, hashrate);
        self.clock = clock;
        if let Some(work) = reported {
            self.exposure.report(now_ms, work);
        }
    }

    fn start(config: VardiffConfig, now_ms: u64, initial_hashrate: f64) -> Self {
        let hashrate = clamp_hashrate(&config, initial_hashrate);
        let work = work_per_share(hashrate, config.shares_per_minute);
        // The average starts as if the miner had hashed at the initial
        // estimate for one time constant: the first lucky share or quiet
        // minute does not move it; a real difference is a detected change.
        let prior_s = config.time_constant_ms as f64 / 1000.0;
        Self {
            average: DecayingRate::new(
                config.time_constant_ms,
                now_ms,
                hashrate * prior_s,
                prior_s,
            ),
            detector: Detector::new(now_ms, 0.0, hashrate),
            exposure: Exposure::new(now_ms, config.difficulty_delay_ms, work),
            config,
            hashrate,
            stepping: false,
            clock: SteadyClock::new(now_ms),
        }
    }

    /// A share mined at a difficulty worth `work` expected hashes
    /// (`2^256 / (target + 1)` of the target it was mined at, which may be
    /// an older one than the current). Non-positive or non-finite work is ignored.
    pub fn on_share(&mut self, now_ms: u64, work: f64) {
        if !(work.is_finite() && work > 0.0) {
            return;
        }
        let now_ms = self.clock(now_ms);
        self.exposure.on_share(now_ms, work);
        self.average.advance(now_ms);
        self.detector.on_share(Share {
            at_ms: now_ms,
            work,
            exposure: self.exposure.total(),
            belief: self.average.rate(),
        });
        self.average.add(now_ms, work);
    }

    /// The caller's word on the difficulty the miner mines at: from `now_ms`
    /// on, `work` expected hashes per share (`2^256 / (target + 1)` of the
    /// target just sent to the miner, or found in force). Call it right
    /// after [`new`](Self::new) and whenever that changes (repeating it is
    /// harmless; a [`reset`](Self::reset) keeps the last one reported).
    ///
    /// Once called, the expected share counts behind drought detection
    /// follow the reported difficulties only: the estimator's own retargets
    /// no longer count as applied (a pending one is cancelled), and
    /// [`VardiffConfig::difficulty_delay_ms`] becomes how long shares mined
    /// at the previously reported difficulty may still arrive (see the
    /// [crate] documentation for the settings). Shares are still credited
    /// with their own work ([`on_share`](Self::on_share)). Non-positive or
    /// non-finite work is ignored.
    pub fn on_difficulty(&mut self, now_ms: u64, work: f64) {
        if !(work.is_finite() && work > 0.0) {
            return;
        }
        let now_ms = self.clock(now_ms);
        self.exposure.report(now_ms, work);
    }

    /// Call every second or so. Returns the new estimate when the miner's
    /// difficulty should change (to [`work_per_share`] of it).
    pub fn tick(&mut self, now_ms: u64) -> Option<f64> {
        let now_ms = self.clock(now_ms);
        self.exposure.advance(now_ms);
        self.average.advance(now_ms);
        if let Some(change) = self.detector.detect(now_ms, self.exposure.total()) {
            self.average
                .restart(now_ms, change.rate * change.span_s, change.span_s);
            self.detector.restart(change.shares, change.rate);
        }
        self.retarget(now_ms)
    }

    /// The current estimate, hashes per second: what the difficulty is set for.
    pub fn hashrate(&self) -> f64 {
        self.hashrate
    }

    /// The measured rate (the decaying average), hashes per second. It moves
    /// with every share; [`hashrate`](Self::hashrate) follows it when it
    /// leaves the band.
    pub fn measured_hashrate(&self) -> f64 {
        self.average.rate()
    }

    /// Expected hashes per share at the current estimate.
    pub fn work_per_share(&self) -> f64 {
        work_per_share(self.hashrate, self.config.shares_per_minute)
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &VardiffConfig {
        &self.config
    }

    fn clock(&mut self, now_ms: u64) -> u64 {
        self.clock.at(now_ms)
    }

    /// Moves the estimate toward the measured rate when it left the band, by
    /// at most `max_step`, within the configured range.
    fn retarget(&mut self, now_ms: u64) -> Option<f64> {
        let measured = self.average.rate();
        let band = self.config.band;
        let in_band = measured >= self.hashrate / band && measured <= self.hashrate * band;
        if in_band && !self.stepping {
            return None;
        }
        let step = self.config.max_step;
        let stepped = measured.clamp(self.hashrate / step, self.hashrate * step);
        let target = clamp_hashrate(&self.config, stepped);
        self.stepping = stepped != measured && target == stepped;
        if target == self.hashrate {
            return None;
        }
        self.hashrate = target;
        self.exposure.retarget(now_ms, self.work_per_share());
        Some(target)
    }
}

fn clamp_hashrate(config: &VardiffConfig, hashrate: f64) -> f64 {
    if hashrate.is_nan() {
        return config.min_hashrate;
    }
    hashrate.clamp(config.min_hashrate, config.max_hashrate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPM: f64 = 6.0;

    fn config() -> VardiffConfig {
        VardiffConfig {
            shares_per_minute: SPM,
            min_hashrate: 1e3,
            max_hashrate: 1e12,
            ..VardiffConfig::default()
        }
    }

    /// Feeds evenly spaced shares of `work` (the exact mean, no luck) so that
    /// they credit `rate` hashes per second, ticking every second, for
    /// `secs` seconds from `start_ms`. Returns every retarget.
    fn feed(vardiff: &mut Vardiff, start_ms: u64, secs: u64, rate: f64, work: f64) -> Vec<f64> {
        let gap_ms = work / rate * 1000.0;
        let mut next_share_ms = start_ms as f64 + gap_ms;
        let mut retargets = Vec::new();
        for second in 1..=secs {
            let tick_ms = start_ms + second * 1000;
            while next_share_ms <= tick_ms as f64 {
                vardiff.on_share(next_share_ms as u64, work);
                next_share_ms += gap_ms;
            }
            retargets.extend(vardiff.tick(tick_ms));
        }
        retargets
    }

    #[test]
    fn a_wall_clock_stepped_back_changes_nothing() {
        let hour = 3_600_000;
        let start = 10 * hour;
        let mut vardiff = Vardiff::new(config(), start, 1e6).unwrap();
        let work = vardiff.work_per_share();
        assert_eq!(feed(&mut vardiff, start, 600, 1e6, work), Vec::<f64>::new());
        // NTP sets the clock back an hour; the miner mines on as before.
        let back = start + 600_000 - hour;
        assert_eq!(feed(&mut vardiff, back, 1800, 1e6, work), Vec::<f64>::new());
        assert_eq!(vardiff.hashrate(), 1e6);
    }

    #[test]
    fn a_share_rate_inside_the_band_does_not_retarget() {
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        // 1.3 times the estimate: 7.8 shares a minute, inside [4, 9].
        let work = vardiff.work_per_share();
        assert_eq!(feed(&mut vardiff, 0, 3600, 1.3e6, work), Vec::<f64>::new());
        assert!((vardiff.measured_hashrate() / 1.3e6 - 1.0).abs() < 0.05);
        assert_eq!(vardiff.hashrate(), 1e6);
    }

    #[test]
    fn a_share_rate_outside_the_band_retargets_to_the_measured_rate() {
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        let work = vardiff.work_per_share();
        // 1.7 times: 10.2 shares a minute, outside the band.
        let retargets = feed(&mut vardiff, 0, 3600, 1.7e6, work);
        assert_eq!(retargets.len(), 1, "{retargets:?}");
        assert!((1.5e6..1.8e6).contains(&retargets[0]), "{retargets:?}");
    }

    #[test]
    fn one_retarget_moves_at_most_max_step() {
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        let work = vardiff.work_per_share();
        // A flood: 1000 times the estimate, 100 shares a second.
        let retargets = feed(&mut vardiff, 0, 60, 1e9, work);
        let mut previous = 1e6;
        for &hashrate in &retargets {
            assert!(hashrate <= previous * 4.0 * (1.0 + 1e-12), "{retargets:?}");
            assert!(hashrate > previous, "{retargets:?}");
            previous = hashrate;
        }
        // Several steps were needed, and they got there.
        assert!(retargets.len() >= 5, "{retargets:?}");
        assert!((5e8..=1.2e9).contains(&vardiff.hashrate()), "{retargets:?}");
    }

    #[test]
    fn silence_lowers_the_estimate_progressively_down_to_the_minimum() {
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        let retargets = feed(&mut vardiff, 0, 3600, 0.0, 1.0);
        // Nothing in the first minute: a minute without shares is not
        // unusual enough at one share per 10 s.
        let mut quiet = Vardiff::new(config(), 0, 1e6).unwrap();
        assert_eq!(feed(&mut quiet, 0, 60, 0.0, 1.0), Vec::<f64>::new());
        let mut previous = 1e6;
        for &hashrate in &retargets {
            assert!(
                hashrate < previous && hashrate >= previous / 4.0,
                "{retargets:?}"
            );
            previous = hashrate;
        }
        assert_eq!(vardiff.hashrate(), 1e3, "{retargets:?}");
    }

    #[test]
    fn estimates_stay_within_the_configured_range() {
        let mut vardiff = Vardiff::new(config(), 0, 1e15).unwrap();
        assert_eq!(vardiff.hashrate(), 1e12);
        let work = vardiff.work_per_share();
        let retargets = feed(&mut vardiff, 0, 600, 1e14, work * 100.0);
        assert!(retargets.is_empty(), "{retargets:?}");
        assert_eq!(vardiff.hashrate(), 1e12);

        assert_eq!(Vardiff::new(config(), 0, 1.0).unwrap().hashrate(), 1e3);
        assert_eq!(Vardiff::new(config(), 0, f64::NAN).unwrap().hashrate(), 1e3);
    }

    #[test]
    fn shares_credit_the_work_they_were_mined_at() {
        // The estimate was raised to 1 MH/s but the miner still mines at a
        // difficulty 100 times easier: 100 times the shares, each worth 1/100.
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        let easy_work = vardiff.work_per_share() / 100.0;
        let retargets = feed(&mut vardiff, 0, 600, 1e6, easy_work);
        assert!(retargets.is_empty(), "{retargets:?}");
        assert!((vardiff.measured_hashrate() / 1e6 - 1.0).abs() < 0.05);
    }

    #[test]
    fn reset_forgets_the_shares() {
        let mut vardiff = Vardiff::new(config(), 0, 1e6).unwrap();
        let work = vardiff.work_per_share();
        feed(&mut vardiff, 0, 600, 1e6, work);
        vardiff.reset(600_000, 5e6);
        assert_eq!(vardiff.hashrate(), 5e6);
        assert_eq!(vardiff.measured_hashrate(), 5e6);
        // Time never runs back: an earlier reset time is no time passing.
        vardiff.reset(0, 5e6);
        assert_eq!(vardiff.tick(0), None);
    }

    #[test]
    fn droughts_are_measured_at_the_reported_difficulty() {
        // 60 shares a minute: one a second at the estimate's own difficulty...
        let config = VardiffConfig {
            shares_per_minute: 60.0,
            difficulty_delay_ms: 5_000,
            ..config()
        };
        let mut assumed = Vardiff::new(config, 0, 1e6).unwrap();
        let mut reported = assumed.clone();
        // ...but the pool set one ten times harder: one share every 10 s.
        reported.on_difficulty(0, 10.0 * reported.work_per_share());
        // Silence. Assuming its own difficulty, the estimator expects a share
        // a second and declares a drought within 10 s.
        let early = feed(&mut assumed, 0, 10, 0.0, 1.0);
        assert!(!early.is_empty(), "{early:?}");
        // Told the real one, it expects a share every 10 s: a minute and a
        // half of silence (9.2 expected, P(0) < 1e-4) is the first drought.
        assert_eq!(feed(&mut reported, 0, 90, 0.0, 1.0), Vec::<f64>::new());
        let late = feed(&mut reported, 90_000, 5, 0.0, 1.0);
        assert!(!late.is_empty(), "{late:?}");
    }

    #[test]
    fn a_reset_keeps_the_reported_difficulty() {
        let config = VardiffConfig {
            shares_per_minute: 60.0,
            ..config()
        };
        let mut vardiff = Vardiff::new(config, 0, 1e6).unwrap();
        vardiff.on_difficulty(0, 10.0 * vardiff.work_per_share());
        vardiff.reset(10_000, 1e6);
        // Still one share per 10 s expected: a minute of silence is no drought.
        assert_eq!(feed(&mut vardiff, 10_000, 60, 0.0, 1.0), Vec::<f64>::new());
        // Nonsense is ignored.
        vardiff.on_difficulty(70_000, f64::NAN);
        vardiff.on_difficulty(70_000, 0.0);
        assert_eq!(vardiff.exposure.reported(), Some(1e7));
    }

    #[test]
    fn an_invalid_config_is_refused() {
        let config = VardiffConfig {
            band: 0.5,
            ..config()
        };
        assert_eq!(Vardiff::new(config, 0, 1e6).unwrap_err().field, "band");
    }
}

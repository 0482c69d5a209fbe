//! A simulated Poisson miner driving a vardiff controller, in simulated time
//! (enabled by the `sim` feature).
//!
//! The miner hashes at a true rate given as a function of time and finds
//! shares as a Poisson process: exponential gaps with mean
//! `work_per_share / true_rate`, drawn from a seeded generator, so a run is
//! deterministic and costs one event per share (not per hash). Like a real
//! SV1 miner behind a proxy, it takes its difficulty from the controller
//! only at job boundaries: a retarget applies from the next job, and shares
//! carry the work they were mined at. The controller is ticked once per
//! tick interval, after the shares of that interval.
//!
//! The difficulty the miner takes may differ from the one the controller
//! asked for by a fixed factor ([`SimConfig::work_factor`]), as when a
//! translator's estimate is turned into a target by a pool aiming at another
//! share rate; with [`SimConfig::report_difficulty`] the controller is told
//! the work the miner actually takes at each job
//! ([`Controller::on_difficulty`]).
//!
//! Anything implementing [`Controller`] can be driven: [`Vardiff`] does, and
//! the pool's and the translator's own difficulty code can through a small
//! adapter.
//!
//! ```
//! use vardiff::sim::{simulate, SimConfig};
//! use vardiff::{Vardiff, VardiffConfig};
//!
//! let mut vardiff = Vardiff::new(VardiffConfig::default(), 0, 1e6).unwrap();
//! let config = SimConfig { duration_ms: 3_600_000, ..SimConfig::default() };
//! let trace = simulate(&mut vardiff, &config, |_now_ms| 5e6);
//! let last = trace.last().unwrap();
//! assert!(last.hashrate > 2.5e6 && last.hashrate < 1e7);
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Vardiff;

/// What the simulator drives: a per-miner difficulty controller.
pub trait Controller {
    /// A share mined at a difficulty worth `work` expected hashes.
    fn on_share(&mut self, now_ms: u64, work: f64);
    /// Called every tick; a new hash rate estimate when it retargets.
    fn tick(&mut self, now_ms: u64) -> Option<f64>;
    /// The current estimate, hashes per second.
    fn hashrate(&self) -> f64;
    /// Expected hashes per share the miner should mine at from its next job.
    fn work_per_share(&self) -> f64;
    /// The miner mines at `work` expected hashes per share from `now_ms`
    /// (called at each job with [`SimConfig::report_difficulty`]). Does
    /// nothing unless the controller takes such reports.
    fn on_difficulty(&mut self, _now_ms: u64, _work: f64) {}
}

impl Controller for Vardiff {
    fn on_share(&mut self, now_ms: u64, work: f64) {
        Vardiff::on_share(self, now_ms, work)
    }
    fn tick(&mut self, now_ms: u64) -> Option<f64> {
        Vardiff::tick(self, now_ms)
    }
    fn hashrate(&self) -> f64 {
        Vardiff::hashrate(self)
    }
    fn work_per_share(&self) -> f64 {
        Vardiff::work_per_share(self)
    }
    fn on_difficulty(&mut self, now_ms: u64, work: f64) {
        Vardiff::on_difficulty(self, now_ms, work)
    }
}

/// How a simulation runs. Simulated time starts at 0 ms: create the
/// controller at 0.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the share arrivals (`rand`'s `StdRng`: the same seed gives the
    /// same run for a given `rand` version).
    pub seed: u64,
    pub duration_ms: u64,
    /// The controller is ticked at the end of each interval.
    pub tick_ms: u64,
    /// The miner takes the controller's difficulty at each multiple of this.
    pub job_interval_ms: u64,
    /// The most shares a second the miner can find and send (a real miner
    /// and its link saturate too); keeps a flood at a hopelessly easy
    /// difficulty from costing millions of events. Must be finite.
    pub max_shares_per_second: f64,
    /// The miner mines at this multiple of the controller's
    /// [`work_per_share`](Controller::work_per_share): a pool turning the
    /// controller's estimate into a target at its own share rate (10 when
    /// the pool aims at 6 shares a minute and the controller at 60).
    pub work_factor: f64,
    /// At each job, tell the controller the work the miner takes
    /// ([`Controller::on_difficulty`]), as a translator does when it sends
    /// `mining.set_difficulty`.
    pub report_difficulty: bool,
}

impl Default for SimConfig {
    /// Seed 1, one hour, ticks every second, jobs every 30 s, at most 1000
    /// shares a second, the controller's difficulty as it is, no reports.
    fn default() -> Self {
        Self {
            seed: 1,
            duration_ms: 3_600_000,
            tick_ms: 1_000,
            job_interval_ms: 30_000,
            max_shares_per_second: 1_000.0,
            work_factor: 1.0,
            report_difficulty: false,
        }
    }
}

/// The state at the end of one tick interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// End of the interval (the tick's time).
    pub end_ms: u64,
    /// The miner's true hash rate during the interval.
    pub true_hashrate: f64,
    /// The controller's estimate after the tick.
    pub hashrate: f64,
    /// Expected hashes per share the miner mined at during the interval.
    pub miner_work: f64,
    /// Shares found during the interval.
    pub shares: u32,
}

impl Sample {
    /// The miner's expected share rate per minute during the interval (its
    /// Poisson intensity, free of the counting noise of a single minute).
    pub fn shares_per_minute(&self) -> f64 {
        self.true_hashrate * 60.0 / self.miner_work
    }

    /// Estimate over true rate (infinite while the miner is idle).
    pub fn ratio(&self) -> f64 {
        self.hashrate / self.true_hashrate
    }

    /// Whether the estimate is within ×2 of the true rate.
    pub fn within_2x(&self) -> bool {
        (0.5..=2.0).contains(&self.ratio())
    }

    /// Whether the estimate is within ×2 of the true rate and the share
    /// rate within ×2 of `aim` shares a minute.
    pub fn in_band(&self, aim: f64) -> bool {
        self.within_2x() && (aim / 2.0..=aim * 2.0).contains(&self.shares_per_minute())
    }
}

/// Seconds from `from_ms` until the estimate is first within ×2 of the true
/// rate, looking no further than `until_ms`.
pub fn seconds_to_2x(samples: &[Sample], from_ms: u64, until_ms: u64) -> Option<u64> {
    samples
        .iter()
        .filter(|s| s.end_ms > from_ms && s.end_ms <= until_ms)
        .find(|s| s.within_2x())
        .map(|s| (s.end_ms - from_ms) / 1000)
}

/// Runs `controller` against a miner hashing at `true_hashrate(now_ms)`
/// (sampled at the start of each tick interval) and returns one sample per
/// tick interval.
pub fn simulate<C: Controller + ?Sized>(
    controller: &mut C,
    config: &SimConfig,
    true_hashrate: impl Fn(u64) -> f64,
) -> Vec<Sample> {
    let tick_ms = config.tick_ms.max(1);
    let job_ms = config.job_interval_ms.max(1);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut samples = Vec::with_capacity((config.duration_ms / tick_ms) as usize);
    let mut miner_work = controller.work_per_share();
    let mut start_ms = 0;
    let mut next_job_ms = 0;
    while start_ms < config.duration_ms {
        let end_ms = start_ms + tick_ms;
        if start_ms >= next_job_ms {
            miner_work = controller.work_per_share() * config.work_factor;
            if config.report_difficulty {
                controller.on_difficulty(start_ms, miner_work);
            }
            next_job_ms += job_ms;
        }
        let rate = true_hashrate(start_ms).max(0.0);
        let per_second = (rate / miner_work).min(config.max_shares_per_second);
        let shares = mine(
            controller, &mut rng, start_ms, end_ms, per_second, miner_work,
        );
        controller.tick(end_ms);
        samples.push(Sample {
            end_ms,
            true_hashrate: rate,
            hashrate: controller.hashrate(),
            miner_work,
            shares,
        });
        start_ms = end_ms;
    }
    samples
}

/// Poisson arrivals over `[start_ms, end_ms)`; the process is memoryless, so
/// drawing afresh each interval (when the rate or the work may change) is exact.
fn mine<C: Controller + ?Sized>(
    controller: &mut C,
    rng: &mut StdRng,
    start_ms: u64,
    end_ms: u64,
    per_second: f64,
    work: f64,
) -> u32 {
    if !(per_second.is_finite() && per_second > 0.0) {
        return 0;
    }
    let mut shares = 0;
    let mut at_s = start_ms as f64 / 1000.0;
    loop {
        // 1 - U is in (0, 1]: the logarithm is finite.
        let uniform: f64 = rng.gen();
        at_s += -(1.0 - uniform).ln() / per_second;
        let at_ms = (at_s * 1000.0) as u64;
        if at_ms >= end_ms {
            return shares;
        }
        controller.on_share(at_ms, work);
        shares += 1;
    }
}

/// One sample per minute: the last of each minute, for per-minute
/// statistics (with a tick interval that divides a minute).
pub fn minutes(samples: &[Sample]) -> impl Iterator<Item = &Sample> {
    samples.iter().filter(|s| s.end_ms % 60_000 == 0)
}

//! The pool's vardiff under the Poisson miner simulation: a channel of the
//! core (standard and extended) is credited the simulated shares and ticked,
//! and the target the pool sets is what the simulated miner mines at, from
//! its next job. Every retarget must come with a job at the new target.

use super::*;
use ::vardiff::hashrate_for_work;
use ::vardiff::sim::{minutes, seconds_to_2x, simulate, Controller, Sample, SimConfig};
use stratum_core::mining_sv2::OpenStandardMiningChannelOwned;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const SPM: f64 = 6.0;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Standard,
    Extended,
}

/// One channel of a pool core, as the simulator's controller.
struct PoolChannel {
    core: PoolCore,
    channel_id: u32,
    retargets: usize,
}

impl PoolChannel {
    fn open(kind: Kind, nominal_hashrate: f32) -> Self {
        Self::open_on(core(), kind, nominal_hashrate)
    }

    fn open_on(mut core: PoolCore, kind: Kind, nominal_hashrate: f32) -> Self {
        setup(&mut core, 1);
        core.on_new_template(template(1));
        core.on_set_new_prev_hash(prev(1, NEVER));
        let identity = str0255_truncated(&format!("{KEY}.sim"));
        let open = match kind {
            Kind::Extended => {
                MiningOwned::OpenExtendedMiningChannel(OpenExtendedMiningChannelOwned {
                    request_id: 1,
                    user_identity: identity,
                    nominal_hash_rate: nominal_hashrate,
                    max_target: U256Owned::from([0xff; 32]),
                    min_extranonce_size: 4,
                })
            }
            Kind::Standard => {
                MiningOwned::OpenStandardMiningChannel(OpenStandardMiningChannelOwned {
                    request_id: 1,
                    user_identity: identity,
                    nominal_hash_rate: nominal_hashrate,
                    max_target: U256Owned::from([0xff; 32]),
                })
            }
        };
        on_message(&mut core, 1, AnyMessageOwned::Mining(open));
        let channel_id = *core.channels.keys().next().expect("the channel opened");
        Self {
            core,
            channel_id,
            retargets: 0,
        }
    }

    fn target(&self) -> Target {
        self.core.channels[&self.channel_id].target()
    }

    /// Checks what a retarget sent: the new target, then a job at it.
    fn check_retarget(&mut self, actions: Vec<Action>) -> bool {
        let sent: Vec<MiningOwned> = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(1, AnyMessageOwned::Mining(m)) => Some(m),
                _ => None,
            })
            .collect();
        match &sent[..] {
            [] => false,
            [MiningOwned::SetTarget(t), job] => {
                assert_eq!(t.channel_id, self.channel_id);
                assert_eq!(
                    Target::from_le_bytes(t.maximum_target.to_array()),
                    self.target()
                );
                let job_id = match job {
                    MiningOwned::NewExtendedMiningJob(j) => {
                        assert!(j.min_ntime.clone().into_inner().is_some(), "an active job");
                        j.job_id
                    }
                    MiningOwned::NewMiningJob(j) => {
                        assert!(j.min_ntime.clone().into_inner().is_some(), "an active job");
                        j.job_id
                    }
                    other => panic!("a job must follow SetTarget, got {other:?}"),
                };
                let channel = &self.core.channels[&self.channel_id];
                assert_eq!(channel.job_target(job_id), Some(self.target()));
                if self.core.config.whole_units {
                    let bits = self.core.config.unit_bits;
                    let units = ehash::ehash_amount(self.target(), bits);
                    assert_eq!(self.target(), ehash::target_worth(units, bits));
                }
                self.retargets += 1;
                true
            }
            other => panic!("expected SetTarget and a job, got {other:?}"),
        }
    }
}

impl Controller for PoolChannel {
    fn on_share(&mut self, now_ms: u64, work: f64) {
        // Credited as an accepted share is (no share is validated here, so
        // a renewal of the channel is of no concern).
        let channel = self.core.channels.get_mut(&self.channel_id).unwrap();
        channel.on_share_accepted(now_ms, work as u64, false);
    }

    fn tick(&mut self, now_ms: u64) -> Option<f64> {
        let actions = self.core.on_vardiff_tick(now_ms);
        self.check_retarget(actions).then(|| self.hashrate())
    }

    /// What the pool's target is set for.
    fn hashrate(&self) -> f64 {
        hashrate_for_work(self.work_per_share(), SPM)
    }

    fn work_per_share(&self) -> f64 {
        ehash::work_hashes(self.target()) as f64
    }
}

fn run(kind: Kind, seed: u64, hours: u64, rate: impl Fn(u64) -> f64) -> (Vec<Sample>, usize) {
    let mut channel = PoolChannel::open(kind, 1e6);
    let samples = run_on(&mut channel, seed, hours, rate);
    (samples, channel.retargets)
}

fn run_on(
    channel: &mut PoolChannel,
    seed: u64,
    hours: u64,
    rate: impl Fn(u64) -> f64,
) -> Vec<Sample> {
    let config = SimConfig {
        seed,
        duration_ms: hours * HOUR_MS,
        ..SimConfig::default()
    };
    simulate(channel, &config, rate)
}

/// The minutes after the first half hour in band, and all of them.
fn settled_in_band(samples: &[Sample]) -> (usize, usize) {
    let settled: Vec<&Sample> = minutes(samples)
        .filter(|s| s.end_ms > 30 * MINUTE_MS)
        .collect();
    let good = settled.iter().filter(|s| s.in_band(SPM)).count();
    (good, settled.len())
}

#[test]
fn both_kinds_of_channel_converge_from_1_khs_to_100_ths_and_stay_in_band() {
    for kind in [Kind::Standard, Kind::Extended] {
        for (seed, rate) in (1..).zip([1e3, 1e6, 1e9, 1e12, 1e14]) {
            let (samples, retargets) = run(kind, seed, 2, |_| rate);
            let converged = seconds_to_2x(&samples, 0, 2 * HOUR_MS)
                .unwrap_or_else(|| panic!("{kind:?} {rate:e}: never within x2"));
            assert!(converged <= 20 * 60, "{kind:?} {rate:e}: {converged} s");
            let (good, all) = settled_in_band(&samples);
            assert!(
                good * 10 >= all * 9,
                "{kind:?} {rate:e}: {good} of {all} minutes in band ({retargets} retargets)"
            );
        }
    }
}

#[test]
fn both_kinds_follow_a_rate_switching_x10_and_a_paused_miner() {
    for kind in [Kind::Standard, Kind::Extended] {
        // x10 up and down every 5 minutes around 1 GH/s, with a 3-minute
        // pause (CPU starvation) at the start of every hour.
        let rate = |now_ms: u64| {
            if now_ms % HOUR_MS >= 50 * MINUTE_MS && now_ms % HOUR_MS < 53 * MINUTE_MS {
                0.0
            } else if (now_ms / (5 * MINUTE_MS)) % 2 == 1 {
                1e10
            } else {
                1e9
            }
        };
        let (samples, _) = run(kind, 7, 3, rate);
        let (mut rises, mut rises_fast, mut falls, mut falls_slow) = (0, 0, 0, 0);
        for switch_ms in (1..36).map(|i| i * 5 * MINUTE_MS) {
            let (before, after) = (rate(switch_ms - 1), rate(switch_ms));
            if before == 0.0 || after == 0.0 || before == after {
                continue;
            }
            let took = seconds_to_2x(&samples, switch_ms, switch_ms + 5 * MINUTE_MS);
            if after > before {
                rises += 1;
                rises_fast += usize::from(took.is_some_and(|t| t <= 180));
            } else {
                falls += 1;
                falls_slow += usize::from(took.is_none());
            }
        }
        assert!(
            rises >= 10 && rises_fast * 10 >= rises * 9,
            "{kind:?}: {rises_fast}/{rises}"
        );
        assert!(
            falls >= 10 && falls_slow * 10 <= falls,
            "{kind:?}: {falls_slow} of {falls} falls over 5 min"
        );
        for s in &samples {
            let highest = [0, 5 * MINUTE_MS, 8 * MINUTE_MS]
                .iter()
                .map(|back| rate(s.end_ms.saturating_sub(*back)))
                .fold(0.0, f64::max);
            if highest > 0.0 {
                assert!(s.hashrate <= highest * 4.0, "{kind:?}: {s:?} over x4");
            }
            assert!(s.hashrate >= 1.0, "{kind:?}: under the minimum: {s:?}");
        }
        // After each pause the estimate is back within x2 in 3 minutes.
        for hour in 0..3 {
            let resume = hour * HOUR_MS + 53 * MINUTE_MS;
            let took = seconds_to_2x(&samples, resume, resume + 3 * MINUTE_MS);
            assert!(
                took.is_some(),
                "{kind:?}: not back after the pause of hour {hour}"
            );
        }
    }
}

/// With a mint, targets are worth whole amounts of ehash: near one ehash a
/// share (1.6 here, so 2) the share rate is off the aim by up to a half,
/// and vardiff still settles in band, on either kind of channel.
#[test]
fn with_a_mint_vardiff_settles_on_whole_amounts_of_ehash() {
    let bits = UnitBits::new(20).unwrap();
    let kinds = [Kind::Extended, Kind::Standard, Kind::Extended];
    for ((seed, units), kind) in [(11, 1.6), (12, 2.4), (13, 12.5)].into_iter().zip(kinds) {
        let core = core_with_a_mint(bits);
        let rate = units * (1u64 << 20) as f64 * 60.0 / SPM;
        let mut channel = PoolChannel::open_on(core, kind, 1e3);
        let samples = run_on(&mut channel, seed, 2, |_| rate);
        let (good, all) = settled_in_band(&samples);
        assert!(
            good * 10 >= all * 9,
            "{kind:?} {units}: {good} of {all} minutes in band ({} retargets)",
            channel.retargets
        );
        let target = channel.target();
        assert_eq!(
            target,
            ehash::target_worth(ehash::ehash_amount(target, bits), bits)
        );
    }
}

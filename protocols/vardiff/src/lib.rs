//! Per-miner variable difficulty, sans-IO.
//!
//! A [`Vardiff`] estimates one miner's hash rate from the shares it sends
//! and says when the miner's difficulty should change. It has no clock and
//! no socket: the caller passes the time (milliseconds) and each share's
//! work, ticks it every second or so, and applies the new difficulty itself.
//!
//! ```
//! use vardiff::{work_per_share, Vardiff, VardiffConfig};
//!
//! let config = VardiffConfig::default(); // 6 shares a minute
//! // A channel opened with a nominal 1 MH/s.
//! let mut vardiff = Vardiff::new(config.clone(), 0, 1e6)?;
//! // Each accepted share, with the work of the target it was mined at:
//! // 2^256 / (target + 1) expected hashes.
//! vardiff.on_share(4_000, 1e7);
//! // Every second or so.
//! if let Some(hashrate) = vardiff.tick(5_000) {
//!     // Set the miner's target for this much work per share.
//!     let work = work_per_share(hashrate, config.shares_per_minute);
//!     // Optionally, once the miner has it: the work of the target it
//!     // really got (see "The miner's difficulty" below).
//!     vardiff.on_difficulty(5_000, work);
//! }
//! # Ok::<(), vardiff::ConfigError>(())
//! ```
//!
//! # How it works
//!
//! **Work, not shares.** Each share is credited the work of the target it
//! was mined at, never the current one. After a raise the miner keeps
//! sending shares at the old, easier target until its next job; counted at
//! the new target they would inflate the estimate by the size of the raise,
//! and the next raise would feed on that one.
//!
//! **A decaying average.** The measured rate is work over time, both decayed
//! with a 5-minute time constant (ckpool decides on the same window). Decaying
//! the elapsed time too makes a fresh average the plain mean over its span,
//! so it needs no warm-up correction. It starts as if the miner had hashed at
//! the initial estimate for one time constant.
//!
//! **Change detection.** A 5-minute average is precise but takes minutes to
//! forget: a miner that stops, or whose true rate is 1000 times the
//! estimate, must not wait that long. So each tick looks at the windows that
//! end now and start at one of the last 16 shares, and asks how likely each
//! window's share count is at the rate believed when it started (a Poisson
//! tail). A *flood* (8 or more shares' worth, at least twice the expected
//! count, less likely than 1 in 10^5) or a *drought* (at most 2 shares, the
//! open gap since the last one included, at most half the expected count,
//! less likely than 1 in 10^4) is a change: the average restarts from that
//! window and forgets what came before. A flood restarts at the lower end of
//! its window's confidence interval, a drought at the rate for which the
//! count it saw is the median outcome (after T seconds of silence at H
//! hashes per share: H ln 2 / T; with n shares about n + 0.68 shares' worth).
//! The expected count needs the difficulty the miner mines at: the caller's
//! report of it, or else the estimate's own, assumed to reach the miner
//! [`VardiffConfig::difficulty_delay_ms`] after a retarget (below).
//!
//! **Retargeting.** The estimate moves to the measured rate when the latter
//! leaves the band `[estimate / band, estimate * band]` (the share rate left
//! `[aim / band, aim * band]`), by at most `max_step` per tick (it carries on
//! next tick until it gets there), and always within `[min_hashrate,
//! max_hashrate]`.
//!
//! # The miner's difficulty
//!
//! Shares are always credited at their own work, so the *measured* rate does
//! not depend on which difficulty the miner mines at. Drought detection does:
//! it expects `rate × time / work per share` shares. By default the
//! estimator assumes the miner mines at its own
//! [`work_per_share`](Vardiff::work_per_share), from
//! `difficulty_delay_ms` after each retarget (the heavier of the old and the
//! new until then). When the caller applies the estimate differently — a
//! translator whose pool turns the requested hash rate into a target at the
//! pool's own share rate, a pool clamping to a miner's maximum target — that
//! assumption is wrong: with a pool at 6 shares a minute behind a translator
//! at 60, the estimator expected ten times the shares that came, declared
//! false droughts and fell to 4.5 times under the true rate.
//!
//! [`Vardiff::on_difficulty`] fixes that: the caller reports the work of the
//! target the miner mines at, when it sends it (and after
//! [`Vardiff::new`]). From the first report on, reports are authoritative:
//! the estimator's own retargets no longer count as applied, and
//! `difficulty_delay_ms` becomes how long after a report shares mined at the
//! previously reported difficulty may still come (the heavier of the two is
//! assumed meanwhile). A reset keeps the reported difficulty. Recommended:
//!
//! - A caller that applies the estimate exactly and only with its jobs need
//!   not report: `difficulty_delay_ms` = its job interval (30 s by default).
//! - A caller that reports as it sends the new difficulty with a clean job:
//!   `difficulty_delay_ms` of a few seconds, the miner's latency. The
//!   translator reports at each `mining.set_difficulty` (5 s); the pool at
//!   each target change, which it sends with a new job at once (10 s: the
//!   miner may be behind a translator).
//! - Report whenever the difficulty may have changed; repeating the same
//!   one is harmless. A too short delay errs towards false droughts after an
//!   easier difficulty, a too long one only delays real droughts that much.
//!
//! # Why these numbers
//!
//! - Band ×1.5: at 6 shares a minute the 5-minute average holds about 60
//!   shares' worth of evidence, so it is within ±13% (one sigma); ×1.5 is more
//!   than three sigmas, so a steady miner is almost never retargeted, and the
//!   estimate stays within ×1.5 of the measured rate, well inside the ×2 that
//!   keeps the share rate useful.
//! - Steps of ×4 at most: a single decision cannot go far on one odd window,
//!   yet a flood 1000 times the estimate is followed within five ticks.
//! - Flood 1 in 10^5, drought 1 in 10^4: a false flood is the expensive
//!   mistake (it raises the difficulty, and the shares that would correct it
//!   then come rarely); a false drought lowers it and the shares that pour
//!   in correct it within a minute or two.
//! - A drought restarts at the median-unbiased rate, not at half a share
//!   more than it saw (the posterior mean under Jeffreys' prior): a drought
//!   is declared as soon as the silence is improbable enough, so a silence
//!   always restarted at the belief / 18, below the true rate after most
//!   falls (and false droughts), up to ×9 under it after a ×2 fall. At ln 2
//!   shares' worth it restarts at the belief / 13: in simulation, runs that
//!   went under half the true rate after a ×10 fall went from 18% to 4%
//!   (from 42% to 5% behind a pool at a tenth of the share rate), and
//!   falls up to ×20 are followed as fast; after a ×1000 fall one more
//!   drought may be needed (the slowest tenth: 11.5 minutes to ×2 instead
//!   of 9.5).
//!
//! # Limits
//!
//! Evidence comes only with shares. After a ×10 fall at 6 shares a minute
//! the miner finds 0.6 shares a minute at its old difficulty: the simulated
//! fall is proven and followed in about a minute and a half (median), but a
//! few lucky shares can hold the estimate up for more than three minutes
//! (about one fall in eight) or five (one or two percent). A rise, a flood
//! or a resumed miner is followed within seconds. A higher `shares_per_minute`
//! reacts faster: at 12 a minute, falls take 50 s (median).
//!
//! The `sim` feature adds [`sim`], a deterministic Poisson miner that drives
//! any difficulty controller in simulated time; this crate's tests use it
//! to check the figures above.

mod average;
mod clock;
mod config;
mod detect;
#[cfg(feature = "sim")]
pub mod sim;
mod vardiff;

pub use clock::SteadyClock;
pub use config::{hashrate_for_work, work_per_share, ConfigError, VardiffConfig};
pub use vardiff::Vardiff;

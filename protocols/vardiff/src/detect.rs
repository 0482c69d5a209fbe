//! Change detection: are the most recent shares plausible at the average rate?
//!
//! The decaying average is precise but slow: after the miner's rate changes
//! it needs minutes to forget the past. So each tick also looks at the
//! windows that end now and start at one of the last [`RECENT_SHARES`]
//! shares, and asks of each how likely its share count would be at the rate
//! believed when it started (the average then; a Poisson tail). A window far
//! too busy (a flood) or far too quiet (a drought, the open gap since the
//! last share included) marks a change: the caller restarts the average from
//! that window and forgets the shares before it.
//!
//! The false alarm rates quoted below were measured on simulated steady
//! miners at six shares a minute.

use std::collections::VecDeque;

/// Shares kept for change detection: the longest window spans this many gaps.
pub(crate) const RECENT_SHARES: usize = 16;
/// A window's rate must be at least this far from the belief to be a change
/// (and then also improbable, below).
const CHANGE_RATIO: f64 = 2.0;
/// A flood needs at least this many shares' worth of work: at one share
/// every few seconds, bursts of a few lucky shares happen every hour.
const FLOOD_MIN_SHARES: f64 = 8.0;
/// A flood's share count must be less likely than this at the believed rate
/// (the many windows tested make false floods far likelier: about one per
/// two days). Strict, because a false flood is expensive: it raises the
/// difficulty, and the shares that would correct it then come rarely.
const FLOOD_P: f64 = 1e-5;
/// A flood restarts the average at the lower end of its window's 90%
/// confidence interval (this one-sided tail), not at the point estimate: a
/// lucky burst overshoots less, and a real flood is detected again at once
/// if that was too low.
const FLOOD_LOWER_BOUND_P: f64 = 0.05;
/// A drought is a window with this many shares at most: the open gap since
/// the last share, or one or two more gaps. Longer windows add chances of
/// false alarms more than evidence; slower declines are the average's business.
const DROUGHT_MAX_SHARES: usize = 2;
/// A drought's share count must be less likely than this at the believed
/// rate: about one false drought per nine hours. It lowers the difficulty,
/// and the shares that then pour in correct it within a minute or two.
const DROUGHT_P: f64 = 1e-4;

/// A share as the detector keeps it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    pub at_ms: u64,
    /// Expected hashes of the share (the work it was credited).
    pub work: f64,
    /// [`Exposure::total`] when the share arrived.
    pub exposure: f64,
    /// The average rate just before the share: the belief that the shares
    /// after it are tested against.
    pub belief: f64,
}

/// A window whose share count is implausible at the believed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Change {
    /// The window's own estimate of the hash rate, hashes per second.
    pub rate: f64,
    /// The window's length, seconds.
    pub span_s: f64,
    /// Shares inside the window (after its starting share).
    pub shares: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Detector {
    /// Newest at the back.
    recent: VecDeque<Share>,
    /// Where the oldest window starts: the share just before `recent`, or the
    /// last restart (a pseudo-share without work).
    origin: Share,
}

impl Detector {
    pub(crate) fn new(now_ms: u64, exposure: f64, belief: f64) -> Self {
        Self {
            recent: VecDeque::with_capacity(RECENT_SHARES),
            origin: Share {
                at_ms: now_ms,
                work: 0.0,
                exposure,
                belief,
            },
        }
    }

    pub(crate) fn on_share(&mut self, share: Share) {
        if self.recent.len() == RECENT_SHARES {
            if let Some(oldest) = self.recent.pop_front() {
                self.origin = oldest;
            }
        }
        self.recent.push_back(share);
    }

    /// After a change: keeps the `shares` newest shares (the window of the
    /// change becomes the oldest one; what came before belongs to the old
    /// rate), all now tested against the new `belief`.
    pub(crate) fn restart(&mut self, shares: usize, belief: f64) {
        while self.recent.len() > shares {
            if let Some(oldest) = self.recent.pop_front() {
                self.origin = oldest;
            }
        }
        for share in self
            .recent
            .iter_mut()
            .chain(std::iter::once(&mut self.origin))
        {
            share.belief = belief;
        }
    }

    /// The longest window whose share count contradicts the belief at its
    /// start, `exposure` being [`Exposure::total`] now. The longest, not the
    /// most significant: it holds the most evidence, and the most extreme
    /// window of many would overstate the change.
    pub(crate) fn detect(&self, now_ms: u64, exposure: f64) -> Option<Change> {
        let mut found = None;
        let mut work = 0.0;
        let mut largest: f64 = 0.0;
        let starts = self
            .recent
            .iter()
            .rev()
            .chain(std::iter::once(&self.origin));
        for (shares, start) in starts.enumerate() {
            if start.at_ms < now_ms {
                let span_s = (now_ms - start.at_ms) as f64 / 1000.0;
                let window = Window {
                    shares,
                    work,
                    largest,
                    span_s,
                    exposure: exposure - start.exposure,
                };
                let belief = start.belief;
                found = window.flood(belief).or(window.drought(belief)).or(found);
            }
            work += start.work;
            largest = largest.max(start.work);
        }
        found
    }
}

/// The shares after one starting share, up to now.
struct Window {
    shares: usize,
    work: f64,
    /// The largest share's work.
    largest: f64,
    span_s: f64,
    /// Expected shares per unit of hash rate over the window.
    exposure: f64,
}

impl Window {
    /// Too much work: counted in units of the largest share so that one
    /// heavy share among light ones (a difficulty raise reaching the miner)
    /// is one lucky event, not a burst.
    fn flood(&self, belief: f64) -> Option<Change> {
        if self.largest <= 0.0 {
            return None;
        }
        let heavy_shares = (self.work / self.largest + 1e-9).floor();
        let expected = belief * self.span_s / self.largest;
        if heavy_shares < FLOOD_MIN_SHARES || heavy_shares < CHANGE_RATIO * expected {
            return None;
        }
        let n = heavy_shares as u32;
        if poisson_upper_tail(n, expected) >= FLOOD_P {
            return None;
        }
        let lower_bound = poisson_mean_with_upper_tail(n, FLOOD_LOWER_BOUND_P) / heavy_shares;
        Some(Change {
            rate: self.work / self.span_s * lower_bound,
            span_s: self.span_s,
            shares: self.shares,
        })
    }

    /// Too few shares for the time the miner had at its (assumed) difficulty.
    fn drought(&self, belief: f64) -> Option<Change> {
        if self.shares > DROUGHT_MAX_SHARES || self.exposure <= 0.0 {
            return None;
        }
        let expected = belief * self.exposure;
        let shares = self.shares as f64;
        if shares * CHANGE_RATIO > expected
            || poisson_cdf(self.shares as u32, expected) >= DROUGHT_P
        {
            return None;
        }
        // The rate at which the window's count is the median outcome
        // (median-unbiased): ln 2 shares' worth for a silence, about n + 0.68
        // for n shares; never zero, however long the silence. (Half a share,
        // the posterior mean under Jeffreys' prior, undershot: a drought is
        // declared as soon as the count is improbable, so with no share the
        // restart would always be the belief / 18.)
        Some(Change {
            rate: poisson_median_mean(self.shares as u32) / self.exposure,
            span_s: self.span_s,
            shares: self.shares,
        })
    }
}

/// P(X <= n) for X ~ Poisson(mean).
fn poisson_cdf(n: u32, mean: f64) -> f64 {
    let mut term = (-mean).exp();
    let mut sum = term;
    for i in 1..=n {
        term *= mean / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// The mean at which P(X >= n) = p for X ~ Poisson(mean), by bisection
/// (the tail grows with the mean): a lower confidence bound on the mean
/// after observing n.
fn poisson_mean_with_upper_tail(n: u32, p: f64) -> f64 {
    let (mut low, mut high) = (0.0, n as f64);
    for _ in 0..50 {
        let mid = 0.5 * (low + high);
        if poisson_upper_tail(n, mid) < p {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// The mean at which n is the median of X ~ Poisson(mean): P(X <= n) = 1/2
/// (ln 2 for n = 0, about n + 0.68 above).
fn poisson_median_mean(n: u32) -> f64 {
    poisson_mean_with_upper_tail(n + 1, 0.5)
}

/// P(X >= n) for X ~ Poisson(mean), summed upwards so that it stays accurate
/// when tiny (callers have mean well below n).
fn poisson_upper_tail(n: u32, mean: f64) -> f64 {
    let mut term = (-mean).exp();
    for i in 1..=n {
        term *= mean / i as f64;
    }
    let mut sum = 0.0;
    let mut i = n;
    while term > sum * 1e-12 && i < n + 1000 {
        sum += term;
        i += 1;
        term *= mean / i as f64;
    }
    sum.min(1.0)
}

/// Expected shares per unit of hash rate since the start: the integral of
/// `dt / work_per_share(t)`, with the work per share the miner is assumed to
/// mine at. Multiplied by a hash rate it gives an expected share count.
///
/// Until the caller reports a difficulty, the miner is assumed to mine at the
/// estimator's own: a new difficulty reaches the miner with its next job, so
/// for `delay_ms` after a retarget the miner may still be on the previous
/// one: the assumed work per share is the largest of those possibly in force
/// (fewer expected shares: a drought is then never declared too early). A
/// share heavier than that since the last retarget means the caller's
/// difficulty is harder than ours (rounded, or raised to a pool minimum): its
/// work is assumed instead.
///
/// Once the caller reports the difficulty the miner mines at
/// ([`report`](Self::report)), that is authoritative: the estimator's own
/// retargets no longer count (the caller reports the difficulty they lead
/// to, whatever it is), the assumptions made so far are dropped, and
/// `delay_ms` is how long shares mined at the previously *reported*
/// difficulty may still come. A heavier share counts only once no change is
/// pending (after the delay, it would mean the report is wrong).
#[derive(Debug, Clone)]
pub(crate) struct Exposure {
    total: f64,
    at_ms: u64,
    delay_ms: u64,
    /// (from_ms, work per share) of the difficulties possibly still in force, oldest first.
    in_force: VecDeque<(u64, f64)>,
    /// The last share's work, forgotten at a retarget (or report).
    last_share_work: f64,
    /// The caller reports the difficulty: `in_force` holds reported ones only.
    reported: bool,
}

impl Exposure {
    pub(crate) fn new(now_ms: u64, delay_ms: u64, work_per_share: f64) -> Self {
        Self {
            total: 0.0,
            at_ms: now_ms,
            delay_ms,
            in_force: VecDeque::from([(now_ms, work_per_share)]),
            last_share_work: 0.0,
            reported: false,
        }
    }

    pub(crate) fn total(&self) -> f64 {
        self.total
    }

    pub(crate) fn advance(&mut self, now_ms: u64) {
        if now_ms <= self.at_ms {
            return;
        }
        let elapsed_s = (now_ms - self.at_ms) as f64 / 1000.0;
        self.total += elapsed_s / self.assumed_work();
        self.at_ms = now_ms;
        // A difficulty replaced more than `delay_ms` ago has left the miner.
        let horizon = now_ms.saturating_sub(self.delay_ms);
        while self.in_force.len() > 1 && self.in_force[1].0 <= horizon {
            self.in_force.pop_front();
        }
    }

    pub(crate) fn on_share(&mut self, now_ms: u64, work: f64) {
        self.advance(now_ms);
        if !self.reported || self.in_force.len() == 1 {
            self.last_share_work = work;
        }
    }

    /// The estimator's own new difficulty, sent now; ignored once the caller
    /// reports difficulties.
    pub(crate) fn retarget(&mut self, now_ms: u64, work_per_share: f64) {
        self.advance(now_ms);
        if self.reported {
            return;
        }
        self.in_force.push_back((now_ms, work_per_share));
        self.last_share_work = 0.0;
    }

    /// The caller's word: the miner mines at `work_per_share` from now on.
    /// The first report replaces every assumption made so far; a later one
    /// leaves the previously reported difficulty in force for the delay. A
    /// report of the difficulty already reported changes nothing.
    pub(crate) fn report(&mut self, now_ms: u64, work_per_share: f64) {
        self.advance(now_ms);
        if self.reported {
            if self.in_force.back().map(|&(_, work)| work) == Some(work_per_share) {
                return;
            }
            self.in_force.push_back((now_ms, work_per_share));
        } else {
            self.reported = true;
            self.in_force = VecDeque::from([(now_ms, work_per_share)]);
        }
        self.last_share_work = 0.0;
    }

    /// The difficulty last reported, if the caller reports them.
    pub(crate) fn reported(&self) -> Option<f64> {
        let latest = self.in_force.back().map(|&(_, work)| work);
        latest.filter(|_| self.reported)
    }

    fn assumed_work(&self) -> f64 {
        let in_force = self.in_force.iter().map(|&(_, work)| work);
        in_force.fold(self.last_share_work, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detector that believes 1000 H/s, and the exposure of a miner
    /// assumed to mine at `work_per_share` (a retarget takes 30 s).
    struct Miner {
        exposure: Exposure,
        detector: Detector,
    }

    impl Miner {
        fn new(work_per_share: f64) -> Self {
            Self {
                exposure: Exposure::new(0, 30_000, work_per_share),
                detector: Detector::new(0, 0.0, 1000.0),
            }
        }

        /// A share worth `work` at `at_ms`.
        fn share(&mut self, at_ms: u64, work: f64) {
            self.exposure.advance(at_ms);
            self.detector.on_share(Share {
                at_ms,
                work,
                exposure: self.exposure.total(),
                belief: 1000.0,
            });
        }

        /// What the detector sees at `now_ms`, with the exposure as it stands.
        fn detect(&self, now_ms: u64) -> Option<Change> {
            self.detector.detect(now_ms, self.exposure.total())
        }
    }

    #[test]
    fn poisson_tails_match_closed_forms() {
        assert!((poisson_cdf(0, 2.0) - (-2.0f64).exp()).abs() < 1e-15);
        assert!((poisson_cdf(1, 2.0) - 3.0 * (-2.0f64).exp()).abs() < 1e-15);
        let tail = poisson_upper_tail(2, 0.01);
        let exact = 1.0 - (-0.01f64).exp() * 1.01;
        assert!((tail - exact).abs() / exact < 1e-6, "{tail} {exact}");
        // A tiny tail is not lost to cancellation.
        assert!(poisson_upper_tail(10, 0.001) > 0.0);
        // The median mean of 0 is ln 2; of n, n + 2/3 give or take.
        assert!((poisson_median_mean(0) - std::f64::consts::LN_2).abs() < 1e-12);
        for n in 1..=2 {
            let mean = poisson_median_mean(n);
            assert!((poisson_cdf(n, mean) - 0.5).abs() < 1e-12, "{n}: {mean}");
        }
    }

    #[test]
    fn shares_at_the_average_rate_are_no_change() {
        // 1000 H/s, one 10_000-hash share every 10 s.
        let mut miner = Miner::new(10_000.0);
        for i in 1..=40 {
            miner.share(i * 10_000, 10_000.0);
        }
        miner.exposure.advance(405_000);
        assert_eq!(miner.detect(405_000), None);
    }

    #[test]
    fn a_burst_of_shares_is_a_flood_measured_by_its_work() {
        let mut miner = Miner::new(10_000.0);
        miner.share(10_000, 10_000.0);
        // Then 20 shares in 2 s: 100_000 H/s instead of 1000.
        for i in 1..=20 {
            miner.share(10_000 + i * 100, 10_000.0);
        }
        let change = miner.detect(12_000).expect("flood");
        // The longest window: all 16 kept shares, 1.6 s. Its rate is taken
        // at the lower end of its confidence interval, about 0.64 of 100_000.
        assert_eq!(change.shares, RECENT_SHARES);
        assert!((55_000.0..75_000.0).contains(&change.rate), "{change:?}");
        // Restarted at that rate, the same shares are no longer a change.
        miner.detector.restart(change.shares, change.rate);
        assert_eq!(miner.detect(12_000), None);
    }

    #[test]
    fn one_heavy_share_after_many_light_ones_is_not_a_flood() {
        let mut miner = Miner::new(100.0);
        // 1000 H/s at 100 hashes per share, then one share of a raised difficulty.
        for i in 1..=15 {
            miner.share(i * 100, 100.0);
        }
        miner.share(1_550, 100_000.0);
        assert_eq!(miner.detect(1_600), None);
    }

    #[test]
    fn a_long_silence_is_a_drought_and_the_estimate_shrinks_with_it() {
        // 1000 H/s expected, one share per 10 s, and none comes.
        let mut miner = Miner::new(10_000.0);
        // A minute of silence is unusual, not a change.
        miner.exposure.advance(60_000);
        assert_eq!(miner.detect(60_000), None);
        miner.exposure.advance(100_000);
        let early = miner.detect(100_000).expect("drought");
        miner.exposure.advance(200_000);
        let late = miner.detect(200_000).expect("drought");
        // ln 2 shares' worth over the silence: 6931 hashes / 100 s, then / 200 s.
        let ln2_share = 10_000.0 * std::f64::consts::LN_2;
        assert!((early.rate - ln2_share / 100.0).abs() < 1e-9, "{early:?}");
        assert!((late.rate - ln2_share / 200.0).abs() < 1e-9, "{late:?}");
    }

    #[test]
    fn the_longest_improbable_window_is_the_change() {
        let mut miner = Miner::new(10_000.0);
        miner.share(10_000, 10_000.0);
        // At 110 s only the silence since the share is improbable enough...
        miner.exposure.advance(110_000);
        let early = miner.detect(110_000).expect("drought");
        assert_eq!(early.shares, 0);
        let ln2_share = 10_000.0 * std::f64::consts::LN_2;
        assert!((early.rate - ln2_share / 100.0).abs() < 1e-9, "{early:?}");
        // ...at 210 s the window from the start, the share included, is too:
        // more evidence, 1.68 shares' work (the median mean of 1) over 210 s.
        miner.exposure.advance(210_000);
        let late = miner.detect(210_000).expect("drought");
        assert_eq!(late.shares, 1);
        let one = poisson_median_mean(1);
        assert!((1.67..1.69).contains(&one), "{one}");
        assert!(
            (late.rate - one * 10_000.0 / 210.0).abs() < 1e-9,
            "{late:?}"
        );
    }

    #[test]
    fn exposure_assumes_a_heavier_share_until_the_next_retarget() {
        let mut exposure = Exposure::new(0, 30_000, 1000.0);
        exposure.on_share(10_000, 4000.0);
        exposure.advance(14_000);
        assert!((exposure.total() - 0.011).abs() < 1e-12);
        exposure.retarget(14_000, 1000.0);
        exposure.advance(15_000);
        assert!((exposure.total() - 0.012).abs() < 1e-12);
    }

    #[test]
    fn a_reported_difficulty_is_authoritative() {
        let mut exposure = Exposure::new(0, 5_000, 1000.0);
        // Our own retarget at 10 s, to an easier difficulty, still pending...
        exposure.retarget(10_000, 100.0);
        // ...is cancelled by the caller's word: the miner mines at 4000 from 10 s.
        exposure.report(10_000, 4000.0);
        assert_eq!(exposure.reported(), Some(4000.0));
        assert!((exposure.total() - 0.01).abs() < 1e-12);
        // Our own retargets no longer count.
        exposure.retarget(20_000, 10.0);
        exposure.advance(30_000);
        assert!((exposure.total() - 0.015).abs() < 1e-12);
        // A later, easier report: the previous one is assumed for the delay
        // (5 s at 4000), then the new one (5 s at 1000). Repeating it changes nothing.
        exposure.report(30_000, 1000.0);
        exposure.report(32_000, 1000.0);
        exposure.advance(35_000);
        exposure.advance(40_000);
        assert!((exposure.total() - (0.015 + 0.00125 + 0.005)).abs() < 1e-12);
        // A share mined at the previous difficulty within the delay is
        // expected: it does not make the new one look harder...
        exposure.report(40_000, 500.0);
        exposure.on_share(41_000, 1000.0);
        exposure.advance(45_000);
        exposure.advance(46_000);
        assert!((exposure.total() - (0.02125 + 0.005 + 0.002)).abs() < 1e-12);
        // ...but a heavier share once no change is pending is assumed (the
        // report was wrong), until the next report.
        exposure.on_share(46_000, 2000.0);
        exposure.advance(48_000);
        assert!((exposure.total() - (0.02825 + 0.001)).abs() < 1e-12);
        exposure.report(48_000, 400.0);
        exposure.advance(53_000);
        exposure.advance(58_000);
        assert!((exposure.total() - (0.02925 + 0.01 + 0.0125)).abs() < 1e-12);
    }

    #[test]
    fn exposure_assumes_the_heaviest_difficulty_until_the_delay_has_passed() {
        let mut exposure = Exposure::new(0, 30_000, 1000.0);
        exposure.advance(10_000);
        assert!((exposure.total() - 0.01).abs() < 1e-12);
        // Easier difficulty sent at 10 s: still 1000 hashes per share until 40 s.
        exposure.retarget(10_000, 100.0);
        exposure.advance(40_000);
        assert!((exposure.total() - 0.04).abs() < 1e-12);
        exposure.advance(50_000);
        assert!((exposure.total() - 0.14).abs() < 1e-12);
    }
}

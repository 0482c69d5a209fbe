//! The exponentially decaying average of credited work.

/// Work and elapsed time, both decayed by `exp(-age / time_constant)`; the
/// hash rate is their ratio.
///
/// Decaying the elapsed time as well as the work means that an average
/// restarted from a short span is the plain mean over that span, growing into
/// an exponential average as time passes: no warm-up bias to correct (ckpool
/// divides its decayed share rate by a "time bias" for the same reason).
#[derive(Debug, Clone)]
pub(crate) struct DecayingRate {
    time_constant_s: f64,
    work: f64,
    span_s: f64,
    at_ms: u64,
}

impl DecayingRate {
    /// An average that starts as if `work` had been credited over the last `span_s` seconds.
    pub(crate) fn new(time_constant_ms: u64, now_ms: u64, work: f64, span_s: f64) -> Self {
        let mut average = Self {
            time_constant_s: time_constant_ms as f64 / 1000.0,
            work: 0.0,
            span_s: 0.0,
            at_ms: now_ms,
        };
        average.restart(now_ms, work, span_s);
        average
    }

    /// Forgets the past: from now on the average starts from `work` over `span_s`.
    pub(crate) fn restart(&mut self, now_ms: u64, work: f64, span_s: f64) {
        self.work = work.max(0.0);
        // A zero span would make the rate infinite; a millisecond is the clock's resolution.
        self.span_s = span_s.max(0.001);
        self.at_ms = now_ms;
    }

    /// Decays everything to `now_ms`; earlier times are ignored (the clock never runs back).
    pub(crate) fn advance(&mut self, now_ms: u64) {
        if now_ms <= self.at_ms {
            return;
        }
        let elapsed_s = (now_ms - self.at_ms) as f64 / 1000.0;
        let keep = (-elapsed_s / self.time_constant_s).exp();
        self.work *= keep;
        self.span_s = self.span_s * keep + self.time_constant_s * (1.0 - keep);
        self.at_ms = now_ms;
    }

    pub(crate) fn add(&mut self, now_ms: u64, work: f64) {
        self.advance(now_ms);
        self.work += work;
    }

    /// Hashes per second.
    pub(crate) fn rate(&self) -> f64 {
        self.work / self.span_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_is_measured_exactly_whatever_the_share_size() {
        // 1000 H/s credited as one 10_000-hash share every 10 s, for 50 minutes.
        let mut avg = DecayingRate::new(300_000, 0, 1000.0 * 60.0, 60.0);
        for i in 1..=300u64 {
            avg.add(i * 10_000, 10_000.0);
        }
        avg.advance(3_000_000);
        // Just after a share the average sits at its top: within half a share of the rate.
        let rate = avg.rate();
        assert!((1000.0..1040.0).contains(&rate), "{rate}");
    }

    #[test]
    fn silence_decays_the_rate_with_the_time_constant() {
        let mut avg = DecayingRate::new(60_000, 0, 6_000.0, 60.0);
        avg.advance(60_000);
        // The work decays by e; the span stays one time constant.
        let rate = avg.rate();
        assert!((rate - 100.0 / std::f64::consts::E).abs() < 0.01, "{rate}");
    }

    #[test]
    fn a_restart_is_the_plain_mean_over_its_span() {
        let mut avg = DecayingRate::new(300_000, 0, 1e9 * 300.0, 300.0);
        avg.restart(10_000, 5_000.0, 5.0);
        assert_eq!(avg.rate(), 1000.0);
        // Shortly after, new work is averaged over the grown span.
        avg.add(15_000, 5_000.0);
        let rate = avg.rate();
        assert!((rate - 1000.0).abs() < 20.0, "{rate}");
    }
}

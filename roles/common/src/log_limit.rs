//! At most one log line per interval for a warning a peer can repeat at
//! will (ignored frames, refused requests): a stranger must not be able to
//! fill the disk or drown the operator's logs. The lines left out are
//! counted, and the next line says how many.

use std::time::{Duration, Instant};

/// How often a repeated warning from one peer is logged at most.
pub const PEER_WARNING_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct LogLimit {
    every: Duration,
    next: Option<Instant>,
    left_out: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(PEER_WARNING_EVERY)
    }
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        LogLimit {
            every,
            next: None,
            left_out: 0,
        }
    }

    /// One more occurrence at `now`: `Some(left_out)` if it is to be logged
    /// (with how many were not since the last line), `None` if not.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(next) if now < next => {
                self.left_out += 1;
                None
            }
            _ => {
                self.next = Some(now + self.every);
                Some(std::mem::take(&mut self.left_out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_line_counts_the_ones_left_out() {
        let mut limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(limit.check(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.check(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(limit.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(25)), Some(1));
    }
}

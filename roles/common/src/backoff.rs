//! The delay between connection attempts of a link that reconnects by
//! itself.

use std::time::{Duration, Instant};

/// The delay before the next connection attempt: doubling from `MIN` to
/// `MAX` while attempts fail, back to `MIN` only after a connection stayed
/// up for `MAX` (one that fails right after it came up is a failure too).
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    attempt: u64,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self {
            delay: Self::MIN,
            attempt: 0,
        }
    }

    /// Whether a connection that came up at `up` (if it did) held: it
    /// stayed up `MAX`.
    pub fn held(up: Option<Instant>) -> bool {
        up.is_some_and(|at| at.elapsed() >= Self::MAX)
    }

    /// After a connection that came up at `up` (if it did) ended: the delay
    /// to wait, and the attempt number (1 after a connection that held).
    pub fn after(&mut self, up: Option<Instant>) -> (Duration, u64) {
        if Self::held(up) {
            self.delay = Self::MIN;
            self.attempt = 0;
        }
        self.attempt += 1;
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Self::MAX);
        (delay, self.attempt)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_and_resets_only_after_a_connection_that_held() {
        let mut backoff = Backoff::new();
        let failed = |b: &mut Backoff| b.after(None);
        assert_eq!(failed(&mut backoff), (Backoff::MIN, 1));
        assert_eq!(failed(&mut backoff), (Backoff::MIN * 2, 2));
        // Up, and down at once: still backing off.
        assert_eq!(backoff.after(Some(Instant::now())), (Backoff::MIN * 4, 3));
        let long_ago = Instant::now() - Backoff::MAX;
        assert_eq!(backoff.after(Some(long_ago)), (Backoff::MIN, 1));
    }
}

//! Time as vardiff counts it, from a caller's clock that may step back.

/// Milliseconds that never run back, read from a caller's clock that may
/// (a wall clock stepped back by NTP, a virtual machine resumed): a step
/// back counts as no time passing, and time runs on from there. Clamping
/// to the latest time seen instead would freeze it until the caller's clock
/// caught up, and every share meanwhile would look as if it came at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteadyClock {
    /// The caller's time at the last reading.
    last_seen: u64,
    /// What that reading gave.
    now: u64,
}

impl SteadyClock {
    /// A clock reading the caller's `now` as it is.
    pub fn new(now: u64) -> Self {
        Self {
            last_seen: now,
            now,
        }
    }

    /// The time at the caller's `now`.
    pub fn at(&mut self, now: u64) -> u64 {
        self.now = self.now.saturating_add(now.saturating_sub(self.last_seen));
        self.last_seen = now;
        self.now
    }

    /// The time at the last reading.
    pub fn now(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_back_costs_no_time_and_time_runs_on_from_it() {
        let hour = 3_600_000;
        let mut clock = SteadyClock::new(10 * hour);
        assert_eq!(clock.at(10 * hour + 5_000), 10 * hour + 5_000);
        // The caller's clock goes back an hour...
        assert_eq!(clock.at(9 * hour + 5_000), 10 * hour + 5_000);
        // ...and on from there, a second at a time.
        assert_eq!(clock.at(9 * hour + 6_000), 10 * hour + 6_000);
        assert_eq!(clock.at(9 * hour + 7_000), 10 * hour + 7_000);
        assert_eq!(clock.now(), 10 * hour + 7_000);
    }
}

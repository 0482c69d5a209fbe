//! When a batch's requests that got no answer were sent, and so when none
//! of them can still reach the mint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Mint timeouts after the last unanswered request of a batch when none of
/// its requests can still reach the mint: the mint drops a request whose
/// client left, and a proxy in between gives up long before.
pub const HOLD_TIMEOUTS: u32 = 10;

/// The store keeps when (unix seconds) a batch's last request that got no
/// answer was sent, across restarts; for the requests of this process the
/// monotonic clock decides instead, so a wall clock stepped forward cannot
/// end a hold early.
#[derive(Debug, Default)]
pub struct Unanswered {
    sent: Mutex<HashMap<i64, Instant>>,
}

impl Unanswered {
    /// A request of batch `id` sent by this process got no answer (`at`).
    pub fn note(&self, id: i64, at: Instant) {
        roles_common::lock(&self.sent).insert(id, at);
    }

    /// Batch `id` is closed.
    pub fn forget(&self, id: i64) {
        roles_common::lock(&self.sent).remove(&id);
    }

    /// Whether no request of batch `id` can still reach the mint: `hold`
    /// has passed since the last that got no answer, sent at
    /// `unanswered_since` (unix seconds) by the store, or noted by this
    /// process.
    pub fn quiet(
        &self,
        id: i64,
        unanswered_since: u64,
        hold: Duration,
        (unix_now, now): (u64, Instant),
    ) -> bool {
        match roles_common::lock(&self.sent).get(&id) {
            Some(at) => now.saturating_duration_since(*at) >= hold,
            None => unix_now >= unanswered_since.saturating_add(hold.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(300);

    #[test]
    fn a_batch_of_an_earlier_run_is_quiet_by_the_stores_time() {
        let unanswered = Unanswered::default();
        let now = Instant::now();
        assert!(!unanswered.quiet(7, 1_000, HOLD, (1_299, now)));
        assert!(unanswered.quiet(7, 1_000, HOLD, (1_300, now)));
        assert!(
            !unanswered.quiet(7, u64::MAX, HOLD, (1_300, now)),
            "no overflow"
        );
    }

    #[test]
    fn a_batch_of_this_run_is_quiet_by_the_monotonic_clock_whatever_the_wall_clock_says() {
        let unanswered = Unanswered::default();
        let sent = Instant::now();
        unanswered.note(7, sent);
        // The wall clock stepped a day forward: not quiet yet.
        assert!(!unanswered.quiet(7, 1_000, HOLD, (1_000 + 86_400, sent + HOLD / 2)));
        // Stepped back: quiet all the same once the hold has passed.
        assert!(unanswered.quiet(7, 1_000, HOLD, (0, sent + HOLD)));
        unanswered.forget(7);
        assert!(
            !unanswered.quiet(7, 1_000, HOLD, (1_000, sent + HOLD)),
            "the store's again"
        );
    }
}

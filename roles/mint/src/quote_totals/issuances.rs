//! Where the totals stand in cdk's log of issuances (`mint_quote_issued`,
//! a row each time a wallet mints a quote, numbered by the database), so a
//! refresh counts only the rows added since the last one, each once.
//!
//! SQLite numbers rows in commit order. PostgreSQL hands a number out when
//! the row is inserted, so a row numbered below one already read may still
//! commit: every number skipped by a read is a gap, asked for again at each
//! refresh until its row appears, or for [`GAP_LIFETIME`] (a transaction
//! that rolled back leaves its number unused for good).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a skipped number is asked for before it is taken as a
/// transaction that rolled back.
pub const GAP_LIFETIME: Duration = Duration::from_secs(600);

/// Most skipped numbers asked for; past it, the oldest are dropped.
pub const MAX_GAPS: usize = 10_000;

/// A cursor at the start of the log: every row is read, every number
/// skipped is a gap (the newest [`MAX_GAPS`] of them).
#[derive(Debug, Default)]
pub struct IssuanceCursor {
    /// Every row numbered up to here was read, or is one of `gaps`.
    after: i64,
    /// Skipped numbers, with when each was first skipped.
    gaps: BTreeMap<i64, Instant>,
}

impl IssuanceCursor {
    /// A cursor as a checkpoint left it: its gaps are asked for from `now`.
    pub fn resume(after: i64, gaps: &[i64], now: Instant) -> Self {
        let gaps = gaps.iter().map(|&gap| (gap, now)).collect();
        let mut cursor = Self { after, gaps };
        cursor.keep_newest_gaps();
        cursor
    }

    /// Where the next read of the log starts (after this number).
    pub fn after(&self) -> i64 {
        self.after
    }

    /// The skipped numbers to ask for again.
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Takes the numbers of the rows read after [`Self::after`], ascending:
    /// those skipped become gaps and the cursor moves past the last.
    pub fn read(&mut self, numbers: &[i64], now: Instant) {
        for &number in numbers {
            if number <= self.after {
                continue;
            }
            let skipped = (number - self.after - 1).min(MAX_GAPS as i64);
            for gap in number - skipped..number {
                self.gaps.insert(gap, now);
            }
            self.after = number;
        }
        self.keep_newest_gaps();
    }

    /// Drops the oldest gaps past [`MAX_GAPS`].
    fn keep_newest_gaps(&mut self) {
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
        }
    }

    /// Takes the numbers of gaps whose rows have appeared.
    pub fn found(&mut self, numbers: &[i64]) {
        for number in numbers {
            self.gaps.remove(number);
        }
    }

    /// Drops the gaps asked for longer than [`GAP_LIFETIME`]; how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.gaps.len();
        self.gaps
            .retain(|_, since| now.saturating_duration_since(*since) < GAP_LIFETIME);
        before - self.gaps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_in_a_row_move_the_cursor_and_leave_no_gap() {
        let mut cursor = IssuanceCursor::default();
        cursor.read(&[1, 2, 3], Instant::now());
        assert_eq!(cursor.after(), 3);
        assert!(cursor.gaps().is_empty());
    }

    #[test]
    fn a_skipped_number_is_asked_for_until_its_row_appears() {
        let mut cursor = IssuanceCursor::default();
        let now = Instant::now();
        cursor.read(&[1, 4, 6], now);
        assert_eq!(cursor.after(), 6);
        assert_eq!(cursor.gaps(), vec![2, 3, 5]);

        cursor.found(&[3]);
        assert_eq!(cursor.gaps(), vec![2, 5]);
        // A number at or below the cursor read again changes nothing.
        cursor.read(&[2, 5], now);
        assert_eq!((cursor.after(), cursor.gaps()), (6, vec![2, 5]));
    }

    #[test]
    fn a_gap_never_filled_is_dropped_after_its_lifetime() {
        let mut cursor = IssuanceCursor::default();
        let start = Instant::now();
        cursor.read(&[2], start);
        cursor.read(&[4], start + GAP_LIFETIME / 2);
        assert_eq!(cursor.expire(start + GAP_LIFETIME / 2), 0);
        assert_eq!(cursor.expire(start + GAP_LIFETIME), 1);
        assert_eq!(cursor.gaps(), vec![3]);
        assert_eq!(cursor.expire(start + GAP_LIFETIME * 2), 1);
        assert!(cursor.gaps().is_empty());
    }

    #[test]
    fn a_jump_keeps_at_most_the_bound_of_gaps_the_newest_ones() {
        let mut cursor = IssuanceCursor::default();
        let now = Instant::now();
        cursor.read(&[1_000_000], now);
        let gaps = cursor.gaps();
        assert_eq!(gaps.len(), MAX_GAPS);
        assert_eq!(gaps.last(), Some(&999_999));

        cursor.read(&[1_000_002], now);
        let gaps = cursor.gaps();
        assert_eq!(gaps.len(), MAX_GAPS);
        assert_eq!(gaps.last(), Some(&1_000_001));
        assert_eq!(gaps.first(), Some(&(1_000_001 - MAX_GAPS as i64)));
    }
}

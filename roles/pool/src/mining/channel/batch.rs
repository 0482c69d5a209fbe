//! The shares a channel accepted since its last SubmitSharesSuccess.
//!
//! SV2 acknowledges accepted shares in batches: a success names the last
//! share it covers, how many shares it covers and their summed difficulty,
//! so a downstream takes every share up to that sequence number as
//! answered. The count is the channel's, not one extranonce prefix's:
//! shares of jobs sent before a renewal join the batch being counted, and
//! a renewal leaves it as it is. channels_sv2 counts per prefix and a
//! count started on one prefix could never be finished on the next.

/// What one SubmitSharesSuccess acknowledges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::mining) struct Batch {
    pub last_sequence_number: u32,
    pub accepted: u32,
    /// Summed difficulty of the shares' job targets.
    pub work_sum: f64,
}

pub(super) struct Batching {
    size: u32,
    open: Option<Batch>,
}

impl Batching {
    /// Batches of `size` shares (at least one).
    pub fn new(size: usize) -> Batching {
        Batching {
            size: u32::try_from(size).unwrap_or(u32::MAX).max(1),
            open: None,
        }
    }

    /// Counts an accepted share of `difficulty`; the batch to acknowledge
    /// when it is full, or at once when `now` (a share that solves a block
    /// is answered without waiting for company).
    pub fn on_accepted(
        &mut self,
        sequence_number: u32,
        difficulty: f64,
        now: bool,
    ) -> Option<Batch> {
        let batch = self.open.get_or_insert(Batch {
            last_sequence_number: sequence_number,
            accepted: 0,
            work_sum: 0.0,
        });
        batch.last_sequence_number = sequence_number;
        batch.accepted += 1;
        batch.work_sum += difficulty;
        if now || batch.accepted >= self.size {
            return self.open.take();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(size: usize, shares: &[(u32, bool)]) -> Vec<Batch> {
        let mut batching = Batching::new(size);
        shares
            .iter()
            .filter_map(|&(seq, now)| batching.on_accepted(seq, 2.0, now))
            .collect()
    }

    fn batch(last_sequence_number: u32, accepted: u32) -> Batch {
        Batch {
            last_sequence_number,
            accepted,
            work_sum: 2.0 * accepted as f64,
        }
    }

    #[test]
    fn a_full_batch_is_acknowledged_and_the_next_share_starts_a_new_one() {
        let shares: Vec<(u32, bool)> = (1..=7).map(|seq| (seq, false)).collect();
        assert_eq!(acks(3, &shares), [batch(3, 3), batch(6, 3)]);
    }

    #[test]
    fn a_block_is_acknowledged_at_once_with_the_shares_before_it() {
        let shares = [(1, false), (2, true), (3, false), (4, false), (5, false)];
        assert_eq!(acks(3, &shares), [batch(2, 2), batch(5, 3)]);
    }

    #[test]
    fn a_batch_of_zero_is_a_batch_of_one() {
        assert_eq!(acks(0, &[(9, false)]), [batch(9, 1)]);
    }
}

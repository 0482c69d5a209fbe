//! A share is answered once its journal record is written (defer mode: once
//! its quote exists), and those may come in another order than the shares
//! came: journal writes queued past the writer's channel, the mint's
//! answers and timeouts. A `SubmitSharesSuccess` acknowledges every share
//! of its channel up to its sequence number, so a success waits here until
//! every earlier share of its channel is answered. An error names its share
//! alone and goes out at once.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::mining::ConnId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    /// Succeeded, worth this much work.
    Succeeded(u64),
    Failed,
}

#[derive(Debug, Default)]
struct Channel {
    /// Sequence numbers in the order their shares came.
    order: VecDeque<u32>,
    slots: HashMap<u32, Slot>,
}

#[derive(Debug, Default)]
pub struct InOrder {
    channels: HashMap<(ConnId, u32), Channel>,
}

impl InOrder {
    /// A share whose answer waits (for its quote).
    pub fn expect(&mut self, conn: ConnId, channel_id: u32, sequence_number: u32) {
        let channel = self.channels.entry((conn, channel_id)).or_default();
        // A number used again while its first share waits keeps that slot.
        if let Entry::Vacant(slot) = channel.slots.entry(sequence_number) {
            slot.insert(Slot::Waiting);
            channel.order.push_back(sequence_number);
        }
    }

    /// The share succeeded: the successes that may be sent now, oldest
    /// first (a share never expected is one of them at once).
    pub fn succeeded(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        work: u64,
    ) -> Vec<(u32, u64)> {
        self.settle(conn, channel_id, sequence_number, Slot::Succeeded(work))
            .unwrap_or_else(|| vec![(sequence_number, work)])
    }

    /// The share was answered with an error: the successes it held back.
    pub fn failed(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
    ) -> Vec<(u32, u64)> {
        self.settle(conn, channel_id, sequence_number, Slot::Failed)
            .unwrap_or_default()
    }

    /// None when the share was not waiting.
    fn settle(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        answer: Slot,
    ) -> Option<Vec<(u32, u64)>> {
        let key = (conn, channel_id);
        let channel = self.channels.get_mut(&key)?;
        let slot = channel.slots.get_mut(&sequence_number)?;
        if *slot != Slot::Waiting {
            return None;
        }
        *slot = answer;
        let mut ready = Vec::new();
        while let Some(&front) = channel.order.front() {
            match channel.slots[&front] {
                Slot::Waiting => break,
                Slot::Succeeded(work) => ready.push((front, work)),
                Slot::Failed => {}
            }
            channel.slots.remove(&front);
            channel.order.pop_front();
        }
        if channel.order.is_empty() {
            self.channels.remove(&key);
        }
        Some(ready)
    }

    /// Nothing more is sent to `conn`.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.channels.retain(|(c, _), _| *c != conn);
    }

    /// Shares waiting or held back.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.channels.values().map(|c| c.order.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_waits_for_every_earlier_share_of_its_channel() {
        let mut o = InOrder::default();
        for seq in [1, 2, 3] {
            o.expect(7, 1, seq);
        }
        o.expect(7, 2, 1);
        assert!(o.succeeded(7, 1, 3, 30).is_empty(), "2 and 1 are waiting");
        assert!(o.succeeded(7, 1, 2, 20).is_empty(), "1 is waiting");
        // Another channel does not wait for this one.
        assert_eq!(o.succeeded(7, 2, 1, 5), vec![(1, 5)]);
        assert_eq!(o.succeeded(7, 1, 1, 10), vec![(1, 10), (2, 20), (3, 30)]);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn an_error_lets_the_successes_behind_it_go_and_is_not_one_of_them() {
        let mut o = InOrder::default();
        for seq in [1, 2, 3] {
            o.expect(7, 1, seq);
        }
        assert!(o.succeeded(7, 1, 2, 20).is_empty());
        assert_eq!(o.failed(7, 1, 1), vec![(2, 20)]);
        // Answered twice (a late quote after a timeout): nothing more.
        assert!(o.failed(7, 1, 1).is_empty());
        assert_eq!(o.succeeded(7, 1, 3, 30), vec![(3, 30)]);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn a_sequence_number_used_again_keeps_the_held_success() {
        let mut o = InOrder::default();
        o.expect(7, 1, 1);
        o.expect(7, 1, 5);
        assert!(o.succeeded(7, 1, 5, 50).is_empty());
        o.expect(7, 1, 5);
        assert_eq!(o.succeeded(7, 1, 1, 10), vec![(1, 10), (5, 50)]);
    }

    #[test]
    fn a_share_never_expected_succeeds_at_once_and_a_closed_connection_is_forgotten() {
        let mut o = InOrder::default();
        assert_eq!(o.succeeded(7, 1, 9, 4), vec![(9, 4)]);
        assert!(o.failed(7, 1, 9).is_empty());
        o.expect(7, 1, 1);
        o.expect(8, 1, 1);
        o.connection_closed(7);
        assert_eq!(o.len(), 1);
    }
}

//! How many quote requests the mint holds at once. Past the limit, shares
//! wait in the pool in arrival order and go out as answers come back.
//!
//! Without a limit, a mint slower than the shares arriving holds a queue
//! that grows without bound; once a request has waited there longer than
//! the pool's timeout, the pool asks again for everything overdue, the mint
//! spends its time on those repeats, and falls further behind. With one, a
//! request is answered within about `limit` answers of being sent, and only
//! sent requests are ever asked for again.

use std::collections::{HashSet, VecDeque};

pub struct Window {
    limit: usize,
    /// Sent and not answered.
    sent: HashSet<[u8; 32]>,
    /// Waiting to be sent, oldest first; may hold hashes that left.
    unsent: VecDeque<[u8; 32]>,
}

impl Window {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            sent: HashSet::new(),
            unsent: VecDeque::new(),
        }
    }

    /// A new share: true if it is to be sent now, false if it waits.
    pub fn admit(&mut self, hash: [u8; 32]) -> bool {
        if self.sent.len() < self.limit && self.unsent.is_empty() {
            self.sent.insert(hash);
            true
        } else {
            self.unsent.push_back(hash);
            false
        }
    }

    /// The mint answered for good: the share frees its place.
    pub fn answered(&mut self, hash: &[u8; 32]) {
        self.sent.remove(hash);
    }

    /// The next waiting share to send now, if there is room; `owed` says
    /// whether a waiting share is still owed a quote.
    pub fn next(&mut self, owed: impl Fn(&[u8; 32]) -> bool) -> Option<[u8; 32]> {
        while self.sent.len() < self.limit {
            let hash = self.unsent.pop_front()?;
            if owed(&hash) && self.sent.insert(hash) {
                return Some(hash);
            }
        }
        None
    }

    pub fn is_sent(&self, hash: &[u8; 32]) -> bool {
        self.sent.contains(hash)
    }

    /// The shares the mint holds (to send again when the link comes back).
    pub fn sent(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.sent.iter()
    }

    /// Shares waiting to be sent (an upper bound: some may have left).
    pub fn waiting(&self) -> usize {
        self.unsent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn sends_up_to_the_limit_then_in_arrival_order_as_answers_free_room() {
        let mut w = Window::new(2);
        assert!(w.admit(h(1)));
        assert!(w.admit(h(2)));
        assert!(!w.admit(h(3)));
        assert!(!w.admit(h(4)));
        assert_eq!(w.next(|_| true), None, "no room before an answer");
        w.answered(&h(1));
        assert_eq!(w.next(|_| true), Some(h(3)));
        assert_eq!(w.next(|_| true), None);
        assert!(w.is_sent(&h(3)) && !w.is_sent(&h(4)));
        let mut sent: Vec<_> = w.sent().copied().collect();
        sent.sort();
        assert_eq!(sent, vec![h(2), h(3)]);
    }

    #[test]
    fn a_new_share_waits_behind_older_waiting_ones_even_with_room() {
        let mut w = Window::new(1);
        assert!(w.admit(h(1)));
        assert!(!w.admit(h(2)));
        w.answered(&h(1));
        assert!(!w.admit(h(3)), "h(2) is older");
        assert_eq!(w.next(|_| true), Some(h(2)));
    }

    #[test]
    fn waiting_shares_no_longer_owed_are_skipped() {
        let mut w = Window::new(1);
        assert!(w.admit(h(1)));
        assert!(!w.admit(h(2)));
        assert!(!w.admit(h(3)));
        w.answered(&h(1));
        assert_eq!(w.next(|hash| *hash != h(2)), Some(h(3)));
        assert_eq!(w.waiting(), 0);
    }
}

//! The pool's share -> quote bookkeeping, without IO or clocks of its own
//! (callers pass `now`):
//!
//! - [`PendingShares`]: accepted shares waiting for the mint's answer,
//!   bounded, with a stale timeout;
//! - [`SuccessBatcher`]: in `defer` mode, the shares of one channel that
//!   became ready together, acknowledged by one `SubmitSharesSuccess`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When the pool answers a share (config `share_response_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareResponseMode {
    /// `SubmitSharesSuccess` at once, `MintQuoteNotification` when the quote exists.
    #[default]
    Annotate,
    /// `SubmitSharesSuccess` only once the quote exists; an error otherwise.
    Defer,
}

/// What to do with a share when the pending set is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Answer the share with `SubmitSharesError` (defer mode: nothing was promised yet).
    RejectShare,
    /// Stop reading that connection's shares until there is room (annotate
    /// mode: the share is accepted, so it must be kept).
    Backpressure,
}

impl ShareResponseMode {
    pub fn when_full(self) -> WhenFull {
        match self {
            ShareResponseMode::Annotate => WhenFull::Backpressure,
            ShareResponseMode::Defer => WhenFull::RejectShare,
        }
    }
}

impl std::str::FromStr for ShareResponseMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "annotate" => Ok(Self::Annotate),
            "defer" => Ok(Self::Defer),
            other => Err(format!(
                "unknown share response mode {other:?}: use \"annotate\" or \"defer\""
            )),
        }
    }
}

/// Why a share was not tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackError {
    /// The set holds `capacity` shares already.
    Full,
    /// This share hash is pending already (a replay): the first one stays.
    AlreadyPending,
}

/// Accepted shares waiting for the mint, keyed by share hash.
#[derive(Debug)]
pub struct PendingShares<T> {
    capacity: usize,
    stale_after: Duration,
    shares: HashMap<[u8; 32], (T, Instant)>,
    /// Tracking order, for expiry; entries already resolved are skipped.
    order: VecDeque<([u8; 32], Instant)>,
}

impl<T> PendingShares<T> {
    pub fn new(capacity: usize, stale_after: Duration) -> Self {
        Self {
            capacity,
            stale_after,
            shares: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.shares.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.shares.len() >= self.capacity
    }

    pub fn contains(&self, share_hash: &[u8; 32]) -> bool {
        self.shares.contains_key(share_hash)
    }

    pub fn get(&self, share_hash: &[u8; 32]) -> Option<&T> {
        self.shares.get(share_hash).map(|(item, _)| item)
    }

    /// The pending items, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shares.values().map(|(item, _)| item)
    }

    /// Tracks a share accepted at `now`.
    pub fn track(&mut self, share_hash: [u8; 32], item: T, now: Instant) -> Result<(), TrackError> {
        if self.shares.contains_key(&share_hash) {
            return Err(TrackError::AlreadyPending);
        }
        if self.is_full() {
            return Err(TrackError::Full);
        }
        self.shares.insert(share_hash, (item, now));
        self.order.push_back((share_hash, now));
        Ok(())
    }

    /// The mint answered for `share_hash`: stop tracking it.
    pub fn resolve(&mut self, share_hash: &[u8; 32]) -> Option<T> {
        let (item, _) = self.shares.remove(share_hash)?;
        self.compact_order();
        Some(item)
    }

    /// Removes and returns the shares tracked for longer than the stale timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<([u8; 32], T)> {
        let mut expired = vec![];
        while let Some(&(hash, since)) = self.order.front() {
            if now.saturating_duration_since(since) < self.stale_after {
                break;
            }
            self.order.pop_front();
            // Only if this entry is the live one (not resolved, not re-tracked later).
            if matches!(self.shares.get(&hash), Some((_, at)) if *at == since) {
                let (item, _) = self.shares.remove(&hash).expect("present");
                expired.push((hash, item));
            }
        }
        expired
    }

    /// When the oldest pending share goes stale.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.order
            .iter()
            .find(|(hash, since)| matches!(self.shares.get(hash), Some((_, at)) if at == since))
            .map(|(_, since)| *since + self.stale_after)
    }

    /// Drops resolved entries from the front of the order queue so it stays
    /// proportional to the live set.
    fn compact_order(&mut self) {
        while let Some((hash, since)) = self.order.front() {
            match self.shares.get(hash) {
                Some((_, at)) if at == since => break,
                _ => {
                    self.order.pop_front();
                }
            }
        }
        if self.order.len() > 2 * self.shares.len() + 1024 {
            let shares = &self.shares;
            self.order
                .retain(|(hash, since)| matches!(shares.get(hash), Some((_, at)) if at == since));
        }
    }
}

/// One `SubmitSharesSuccess` for several shares of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessBatch {
    pub channel_id: u32,
    /// The highest sequence number acknowledged.
    pub last_sequence_number: u32,
    pub new_submits_accepted_count: u32,
    pub new_shares_sum: u64,
}

/// Collects ready shares per (connection, channel) until the caller flushes.
#[derive(Debug)]
pub struct SuccessBatcher<C> {
    batches: HashMap<(C, u32), SuccessBatch>,
}

impl<C> Default for SuccessBatcher<C> {
    fn default() -> Self {
        Self {
            batches: HashMap::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> SuccessBatcher<C> {
    pub fn add(&mut self, connection: C, channel_id: u32, sequence_number: u32, weight: u64) {
        let batch = self
            .batches
            .entry((connection, channel_id))
            .or_insert(SuccessBatch {
                channel_id,
                last_sequence_number: sequence_number,
                new_submits_accepted_count: 0,
                new_shares_sum: 0,
            });
        // The later of the two, across a wrap of the sequence numbers.
        if (sequence_number.wrapping_sub(batch.last_sequence_number) as i32) > 0 {
            batch.last_sequence_number = sequence_number;
        }
        batch.new_submits_accepted_count += 1;
        batch.new_shares_sum = batch.new_shares_sum.saturating_add(weight);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Every batch collected since the last drain.
    pub fn drain(&mut self) -> Vec<(C, SuccessBatch)> {
        self.batches
            .drain()
            .map(|((connection, _), batch)| (connection, batch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn tracks_resolves_and_refuses_when_full() {
        let t0 = Instant::now();
        let mut p = PendingShares::new(2, Duration::from_secs(30));
        assert_eq!(p.track(hash(1), "a", t0), Ok(()));
        assert_eq!(
            p.track(hash(1), "again", t0),
            Err(TrackError::AlreadyPending)
        );
        assert_eq!(p.track(hash(2), "b", t0), Ok(()));
        assert!(p.is_full());
        assert_eq!(p.track(hash(3), "c", t0), Err(TrackError::Full));
        assert_eq!(p.resolve(&hash(1)), Some("a"));
        assert_eq!(p.resolve(&hash(1)), None);
        assert_eq!(p.track(hash(3), "c", t0), Ok(()));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn expires_only_stale_live_shares_in_order() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(30);
        let mut p = PendingShares::new(10, stale);
        p.track(hash(1), 1, t0).unwrap();
        p.track(hash(2), 2, t0 + Duration::from_secs(10)).unwrap();
        p.track(hash(3), 3, t0 + Duration::from_secs(20)).unwrap();
        p.resolve(&hash(2));
        assert_eq!(p.next_expiry(), Some(t0 + stale));
        assert!(p.expire(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(p.expire(t0 + Duration::from_secs(45)), vec![(hash(1), 1)]);
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_secs(50)));
        assert_eq!(p.expire(t0 + Duration::from_secs(60)), vec![(hash(3), 3)]);
        assert!(p.is_empty());
        assert_eq!(p.next_expiry(), None);
    }

    #[test]
    fn a_share_tracked_again_after_resolving_expires_on_its_new_time() {
        let t0 = Instant::now();
        let mut p = PendingShares::new(10, Duration::from_secs(30));
        p.track(hash(1), "first", t0).unwrap();
        p.resolve(&hash(1));
        p.track(hash(1), "second", t0 + Duration::from_secs(20))
            .unwrap();
        assert!(p.expire(t0 + Duration::from_secs(31)).is_empty());
        assert_eq!(
            p.expire(t0 + Duration::from_secs(51)),
            vec![(hash(1), "second")]
        );
    }

    #[test]
    fn order_queue_stays_bounded_under_churn() {
        let t0 = Instant::now();
        let mut p = PendingShares::new(10, Duration::from_secs(30));
        p.track(hash(255), 0u32, t0).unwrap(); // an old one that stays
        for i in 0..100_000u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            p.track(h, i, t0).unwrap();
            p.resolve(&h);
        }
        assert!(p.order.len() < 2048, "{}", p.order.len());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn modes_parse_and_say_what_to_do_when_full() {
        assert_eq!("annotate".parse(), Ok(ShareResponseMode::Annotate));
        assert_eq!(
            "defer".parse::<ShareResponseMode>().unwrap().when_full(),
            WhenFull::RejectShare
        );
        assert_eq!(
            ShareResponseMode::default().when_full(),
            WhenFull::Backpressure
        );
        assert!("later"
            .parse::<ShareResponseMode>()
            .unwrap_err()
            .contains("\"annotate\" or \"defer\""));
    }

    #[test]
    fn a_batch_across_the_wrap_of_sequence_numbers_names_the_latest() {
        let mut b = SuccessBatcher::default();
        b.add(1u64, 7, u32::MAX, 1);
        b.add(1u64, 7, 0, 1);
        b.add(1u64, 7, 1, 1);
        let batches = b.drain();
        assert_eq!(batches[0].1.last_sequence_number, 1);
        assert_eq!(batches[0].1.new_submits_accepted_count, 3);
    }

    #[test]
    fn batches_ready_shares_per_channel() {
        let mut b = SuccessBatcher::default();
        b.add(1u64, 7, 10, 4);
        b.add(1u64, 7, 12, 4);
        b.add(1u64, 7, 11, 8);
        b.add(2u64, 7, 3, 1);
        let mut batches = b.drain();
        batches.sort_by_key(|(c, _)| *c);
        assert_eq!(
            batches,
            vec![
                (
                    1,
                    SuccessBatch {
                        channel_id: 7,
                        last_sequence_number: 12,
                        new_submits_accepted_count: 3,
                        new_shares_sum: 16
                    }
                ),
                (
                    2,
                    SuccessBatch {
                        channel_id: 7,
                        last_sequence_number: 3,
                        new_submits_accepted_count: 1,
                        new_shares_sum: 1
                    }
                ),
            ]
        );
        assert!(b.is_empty());
    }
}

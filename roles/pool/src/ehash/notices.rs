//! Notifications (0xC0) and failures (0xC1) owed to translators, without
//! IO: each is kept until a translator acknowledges it (0xC2), which it
//! does once its record of the quote is durable.
//!
//! A notice is either in flight on a connection (sent, not acknowledged) or
//! waiting for its locking key's next channel (its connection closed before
//! the acknowledgement came, or no channel with its key was open). Only the
//! connection a notice is in flight on can acknowledge it. The share stays
//! in the outbox journal until then, so a pool restart loses nothing: the
//! journal replays the share, the mint answers with the same quote, and the
//! notice is owed again.
//!
//! Bounded per locking key and in total. A notice over a bound is refused,
//! never another key's evicted: the caller drops its share from the journal
//! and counts it (the quote itself exists at the mint, where the key's owner
//! can list it). Every change is O(1) (waiting queues hold hashes and are
//! cleaned as they are taken).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;

use crate::mining::ConnId;

/// One notification or failure for a share, as first addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: LockingKey,
    pub message: EhashMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    InFlight { conn: ConnId, sent_at: Instant },
    Waiting,
}

/// Why a notice was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Its key already has `per_key_limit` notices.
    Key,
    /// `total_limit` notices are kept.
    Total,
}

pub struct Notices {
    per_key_limit: usize,
    total_limit: usize,
    entries: HashMap<[u8; 32], (Notice, Place)>,
    /// Waiting notices by key, oldest first; may hold hashes that left.
    waiting: HashMap<LockingKey, VecDeque<[u8; 32]>>,
    in_flight: HashMap<ConnId, HashSet<[u8; 32]>>,
    per_key: HashMap<LockingKey, usize>,
}

impl Notices {
    pub fn new(per_key_limit: usize, total_limit: usize) -> Self {
        Self {
            per_key_limit: per_key_limit.max(1),
            total_limit: total_limit.max(1),
            entries: HashMap::new(),
            waiting: HashMap::new(),
            in_flight: HashMap::new(),
            per_key: HashMap::new(),
        }
    }

    /// Notices kept (in flight and waiting).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Notices waiting for a channel with their key.
    pub fn waiting(&self) -> usize {
        self.entries
            .values()
            .filter(|(_, p)| *p == Place::Waiting)
            .count()
    }

    /// Keeps a notice just sent on `conn`. A notice already kept for the
    /// share is replaced (a resend).
    pub fn sent(
        &mut self,
        share_hash: [u8; 32],
        notice: Notice,
        conn: ConnId,
        now: Instant,
    ) -> Result<(), Overflow> {
        self.admit(&share_hash, &notice.key)?;
        self.in_flight.entry(conn).or_default().insert(share_hash);
        self.entries
            .insert(share_hash, (notice, Place::InFlight { conn, sent_at: now }));
        Ok(())
    }

    /// Keeps a notice until a channel with its key opens.
    pub fn wait(&mut self, share_hash: [u8; 32], notice: Notice) -> Result<(), Overflow> {
        self.admit(&share_hash, &notice.key)?;
        self.waiting
            .entry(notice.key)
            .or_default()
            .push_back(share_hash);
        self.entries.insert(share_hash, (notice, Place::Waiting));
        Ok(())
    }

    /// Room for one more notice of `key` (a notice already kept for the share
    /// takes no more room), counted in.
    fn admit(&mut self, share_hash: &[u8; 32], key: &LockingKey) -> Result<(), Overflow> {
        if self.entries.contains_key(share_hash) {
            self.remove(share_hash);
        }
        let of_key = self.per_key.get(key).copied().unwrap_or(0);
        if of_key >= self.per_key_limit {
            return Err(Overflow::Key);
        }
        if self.entries.len() >= self.total_limit {
            return Err(Overflow::Total);
        }
        *self.per_key.entry(*key).or_default() += 1;
        Ok(())
    }

    /// `conn` acknowledged these shares: the ones in flight on it are done
    /// (returned, with the time since they were sent); any other hash is
    /// ignored.
    pub fn ack(
        &mut self,
        conn: ConnId,
        share_hashes: &[[u8; 32]],
        now: Instant,
    ) -> Vec<([u8; 32], Duration)> {
        let mut done = vec![];
        for hash in share_hashes {
            if let Some((_, Place::InFlight { conn: c, sent_at })) = self.entries.get(hash) {
                if *c == conn {
                    done.push((*hash, now.saturating_duration_since(*sent_at)));
                }
            }
        }
        for (hash, _) in &done {
            self.remove(hash);
        }
        done
    }

    /// `conn` closed: what was in flight on it waits for its key. The keys
    /// that got waiting notices (a channel with one may be open already).
    pub fn connection_closed(&mut self, conn: ConnId) -> Vec<LockingKey> {
        let Some(hashes) = self.in_flight.remove(&conn) else {
            return vec![];
        };
        let mut keys = HashSet::new();
        for hash in hashes {
            if let Some((notice, place)) = self.entries.get_mut(&hash) {
                *place = Place::Waiting;
                self.waiting.entry(notice.key).or_default().push_back(hash);
                keys.insert(notice.key);
            }
        }
        keys.into_iter().collect()
    }

    /// A channel with `key` opened on `conn`: the notices waiting for the
    /// key, now addressed to `channel_id` and in flight on `conn` (the
    /// caller sends them).
    pub fn deliver_waiting(
        &mut self,
        key: &LockingKey,
        conn: ConnId,
        channel_id: u32,
        now: Instant,
    ) -> Vec<([u8; 32], Notice)> {
        let Some(queue) = self.waiting.remove(key) else {
            return vec![];
        };
        let mut out = vec![];
        for hash in queue {
            let Some((notice, place)) = self.entries.get_mut(&hash) else {
                continue;
            };
            if *place != Place::Waiting {
                continue;
            }
            *place = Place::InFlight { conn, sent_at: now };
            notice.message.set_channel_id(channel_id);
            self.in_flight.entry(conn).or_default().insert(hash);
            out.push((hash, notice.clone()));
        }
        out
    }

    /// Notices in flight for longer than `after` without an acknowledgement:
    /// sent again on the same connection (recording is idempotent there).
    pub fn overdue(&mut self, now: Instant, after: Duration) -> Vec<(ConnId, Notice)> {
        let mut out = vec![];
        for (notice, place) in self.entries.values_mut() {
            if let Place::InFlight { conn, sent_at } = place {
                if now.duration_since(*sent_at) >= after {
                    *sent_at = now;
                    out.push((*conn, notice.clone()));
                }
            }
        }
        out
    }

    fn remove(&mut self, share_hash: &[u8; 32]) {
        let Some((notice, place)) = self.entries.remove(share_hash) else {
            return;
        };
        if let Place::InFlight { conn, .. } = place {
            if let Some(set) = self.in_flight.get_mut(&conn) {
                set.remove(share_hash);
                if set.is_empty() {
                    self.in_flight.remove(&conn);
                }
            }
        }
        if let Some(n) = self.per_key.get_mut(&notice.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&notice.key);
                self.waiting.remove(&notice.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;

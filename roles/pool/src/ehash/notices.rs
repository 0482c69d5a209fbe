//! Notifications (0xC0) and failures (0xC1) owed to translators, without
//! IO: each is kept until a translator acknowledges it (0xC2), which it
//! does once its record of the quote is durable.
//!
//! A notice is either in flight on a connection (sent, not acknowledged),
//! queued for one (addressed to it, sent once acknowledgements make room:
//! at most [`IN_FLIGHT_PER_CONNECTION`] are in flight on each), or waiting
//! for its locking key's next channel (its connection closed before the
//! acknowledgement came, the connection never acknowledged it however
//! often it was sent, or no channel with its key was open). Only the
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

/// Notices in flight on one connection at most: well below its send queue
/// (4096 messages), which a burst (a translator back after a while, a mint
/// catching up) would otherwise overflow, closing the connection before it
/// could acknowledge anything, again at every reconnect.
pub const IN_FLIGHT_PER_CONNECTION: usize = 1024;

/// One notification or failure for a share, as first addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: LockingKey,
    pub message: EhashMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Last sent at `sent_at`; first sent on `conn` at `since`.
    InFlight {
        conn: ConnId,
        sent_at: Instant,
        since: Instant,
    },
    Queued {
        conn: ConnId,
    },
    Waiting {
        since: Instant,
    },
}

/// A notice taken off the connection that never acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOff {
    pub key: LockingKey,
    pub conn: ConnId,
    /// The channel it was addressed to.
    pub channel_id: u32,
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
    in_flight_limit: usize,
    entries: HashMap<[u8; 32], (Notice, Place)>,
    /// Waiting notices by key, oldest first; may hold hashes that left.
    waiting: HashMap<LockingKey, VecDeque<[u8; 32]>>,
    in_flight: HashMap<ConnId, HashSet<[u8; 32]>>,
    /// Queued notices by connection, oldest first; may hold hashes that left.
    queued: HashMap<ConnId, VecDeque<[u8; 32]>>,
    per_key: HashMap<LockingKey, usize>,
    /// The channels a notice was taken off, never acknowledging it: it
    /// does not go back to them.
    taken_off_from: HashMap<[u8; 32], Vec<(ConnId, u32)>>,
}

impl Notices {
    pub fn new(per_key_limit: usize, total_limit: usize) -> Self {
        Self {
            per_key_limit: per_key_limit.max(1),
            total_limit: total_limit.max(1),
            in_flight_limit: IN_FLIGHT_PER_CONNECTION,
            entries: HashMap::new(),
            waiting: HashMap::new(),
            in_flight: HashMap::new(),
            queued: HashMap::new(),
            per_key: HashMap::new(),
            taken_off_from: HashMap::new(),
        }
    }

    #[cfg(test)]
    fn with_in_flight_limit(mut self, limit: usize) -> Self {
        self.in_flight_limit = limit.max(1);
        self
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
            .filter(|(_, p)| matches!(p, Place::Waiting { .. }))
            .count()
    }

    /// Keeps a notice addressed to `conn`: `Ok(true)` when it is in flight
    /// (the caller sends it now), `Ok(false)` when it is queued behind
    /// [`IN_FLIGHT_PER_CONNECTION`] others. A notice already kept for the
    /// share is replaced (a resend).
    pub fn send(
        &mut self,
        share_hash: [u8; 32],
        notice: Notice,
        conn: ConnId,
        now: Instant,
    ) -> Result<bool, Overflow> {
        self.admit(&share_hash, &notice.key)?;
        let place = self.place_on(conn, share_hash, now);
        self.entries.insert(share_hash, (notice, place));
        Ok(matches!(place, Place::InFlight { .. }))
    }

    /// Whether `conn` has room for another notice in flight (and none queued
    /// for it).
    pub fn has_room(&self, conn: ConnId) -> bool {
        let in_flight = self.in_flight.get(&conn).map_or(0, HashSet::len);
        let queued = self.queued.get(&conn).is_some_and(|q| !q.is_empty());
        in_flight < self.in_flight_limit && !queued
    }

    /// In flight on `conn` if it has room, else queued for it.
    fn place_on(&mut self, conn: ConnId, share_hash: [u8; 32], now: Instant) -> Place {
        let in_flight = self.in_flight.entry(conn).or_default();
        if in_flight.len() < self.in_flight_limit {
            in_flight.insert(share_hash);
            Place::InFlight {
                conn,
                sent_at: now,
                since: now,
            }
        } else {
            self.queued.entry(conn).or_default().push_back(share_hash);
            Place::Queued { conn }
        }
    }

    /// Keeps a notice until a channel with its key opens (or it waited
    /// too long, see [`Notices::expired`]).
    pub fn wait(
        &mut self,
        share_hash: [u8; 32],
        notice: Notice,
        now: Instant,
    ) -> Result<(), Overflow> {
        self.admit(&share_hash, &notice.key)?;
        self.waiting
            .entry(notice.key)
            .or_default()
            .push_back(share_hash);
        self.entries
            .insert(share_hash, (notice, Place::Waiting { since: now }));
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
    /// ignored. Then [`Notices::release`] fills the room made.
    pub fn ack(
        &mut self,
        conn: ConnId,
        share_hashes: &[[u8; 32]],
        now: Instant,
    ) -> Vec<([u8; 32], Duration)> {
        let mut done = vec![];
        for hash in share_hashes {
            if let Some((
                _,
                Place::InFlight {
                    conn: c, sent_at, ..
                },
            )) = self.entries.get(hash)
            {
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

    /// Notices queued for `conn` that now fit in flight on it (the caller
    /// sends them), oldest first.
    pub fn release(&mut self, conn: ConnId, now: Instant) -> Vec<Notice> {
        let mut out = vec![];
        let Some(queue) = self.queued.get_mut(&conn) else {
            return out;
        };
        let in_flight = self.in_flight.entry(conn).or_default();
        while in_flight.len() < self.in_flight_limit {
            let Some(hash) = queue.pop_front() else {
                break;
            };
            let Some((notice, place)) = self.entries.get_mut(&hash) else {
                continue;
            };
            if *place != (Place::Queued { conn }) {
                continue;
            }
            *place = Place::InFlight {
                conn,
                sent_at: now,
                since: now,
            };
            in_flight.insert(hash);
            out.push(notice.clone());
        }
        if queue.is_empty() {
            self.queued.remove(&conn);
        }
        if in_flight.is_empty() {
            self.in_flight.remove(&conn);
        }
        out
    }

    /// `conn` closed: what was in flight on it or queued for it waits for
    /// its key. The keys that got waiting notices (a channel with one may be
    /// open already).
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) -> Vec<LockingKey> {
        let in_flight = self.in_flight.remove(&conn).unwrap_or_default();
        let queued = self.queued.remove(&conn).unwrap_or_default();
        let mut keys = HashSet::new();
        for hash in in_flight.into_iter().chain(queued) {
            let on_conn = self
                .entries
                .get(&hash)
                .is_some_and(|(_, place)| match *place {
                    Place::InFlight { conn: c, .. } | Place::Queued { conn: c } => c == conn,
                    Place::Waiting { .. } => false,
                });
            if on_conn {
                keys.extend(self.wait_again(hash, now));
            }
        }
        keys.into_iter().collect()
    }

    /// A channel with `key` opened on `conn`: the notices waiting for the
    /// key, now addressed to `channel_id`, are in flight on `conn` (returned:
    /// the caller sends them) or queued for it.
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
            if !matches!(place, Place::Waiting { .. }) {
                continue;
            }
            notice.message.set_channel_id(channel_id);
            let notice = notice.clone();
            let place = self.place_on(conn, hash, now);
            if let Some(entry) = self.entries.get_mut(&hash) {
                entry.1 = place;
            }
            if matches!(place, Place::InFlight { .. }) {
                out.push((hash, notice));
            }
        }
        out
    }

    /// Notices in flight for longer than `after` without an acknowledgement:
    /// sent again on the same connection (recording is idempotent there).
    pub fn overdue(&mut self, now: Instant, after: Duration) -> Vec<(ConnId, Notice)> {
        let mut out = vec![];
        for (notice, place) in self.entries.values_mut() {
            if let Place::InFlight { conn, sent_at, .. } = place {
                if now.duration_since(*sent_at) >= after {
                    *sent_at = now;
                    out.push((*conn, notice.clone()));
                }
            }
        }
        out
    }

    /// Notices in flight on a connection for `after` or longer, sent again
    /// all the while, never acknowledged: taken off it to wait for their
    /// key's next channel, with those queued behind them for the same
    /// channel. Its peer takes notices but not these (a relay whose
    /// downstream left, or did not negotiate the extension), and they would
    /// hold its room for good.
    pub fn take_off_unacknowledged(&mut self, now: Instant, after: Duration) -> Vec<TakenOff> {
        let taken_off = |notice: &Notice, conn| TakenOff {
            key: notice.key,
            conn,
            channel_id: notice.message.channel_id(),
        };
        let mut out: Vec<([u8; 32], TakenOff)> = self
            .entries
            .iter()
            .filter_map(|(hash, (notice, place))| match *place {
                Place::InFlight { conn, since, .. }
                    if now.saturating_duration_since(since) >= after =>
                {
                    Some((*hash, taken_off(notice, conn)))
                }
                _ => None,
            })
            .collect();
        let channels: HashSet<(ConnId, u32)> =
            out.iter().map(|(_, t)| (t.conn, t.channel_id)).collect();
        out.extend(
            self.entries
                .iter()
                .filter_map(|(hash, (notice, place))| match *place {
                    Place::Queued { conn }
                        if channels.contains(&(conn, notice.message.channel_id())) =>
                    {
                        Some((*hash, taken_off(notice, conn)))
                    }
                    _ => None,
                }),
        );
        for (hash, taken) in &out {
            self.leave_in_flight(taken.conn, hash);
            self.wait_again(*hash, now);
            self.taken_off_from
                .entry(*hash)
                .or_default()
                .push((taken.conn, taken.channel_id));
        }
        out.into_iter().map(|(_, taken)| taken).collect()
    }

    /// The channels the notices waiting for `key` were ever taken off:
    /// where they must not go again.
    pub fn taken_off_channels(&self, key: &LockingKey) -> Vec<(ConnId, u32)> {
        let mut channels: Vec<(ConnId, u32)> = self
            .waiting
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|hash| self.taken_off_from.get(hash))
            .flatten()
            .copied()
            .collect();
        channels.sort_unstable();
        channels.dedup();
        channels
    }

    /// Notices that waited `after` or longer for a channel with their key,
    /// given up (removed): their key's owner lists their quotes at the mint.
    pub fn expired(&mut self, now: Instant, after: Duration) -> Vec<([u8; 32], Notice)> {
        let hashes: Vec<[u8; 32]> = self
            .entries
            .iter()
            .filter(|(_, (_, place))| {
                matches!(place, Place::Waiting { since } if now.saturating_duration_since(*since) >= after)
            })
            .map(|(hash, _)| *hash)
            .collect();
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            if let Some((notice, _)) = self.entries.get(&hash) {
                out.push((hash, notice.clone()));
            }
            self.remove(&hash);
        }
        out
    }

    /// The notice for `hash` waits for its key's next channel from `now`
    /// (the caller took it out of where it was): its key.
    fn wait_again(&mut self, hash: [u8; 32], now: Instant) -> Option<LockingKey> {
        let (notice, place) = self.entries.get_mut(&hash)?;
        *place = Place::Waiting { since: now };
        self.waiting.entry(notice.key).or_default().push_back(hash);
        Some(notice.key)
    }

    /// `hash` is no longer in flight on `conn`.
    fn leave_in_flight(&mut self, conn: ConnId, hash: &[u8; 32]) {
        if let Some(set) = self.in_flight.get_mut(&conn) {
            set.remove(hash);
            if set.is_empty() {
                self.in_flight.remove(&conn);
            }
        }
    }

    fn remove(&mut self, share_hash: &[u8; 32]) {
        let Some((notice, place)) = self.entries.remove(share_hash) else {
            return;
        };
        self.taken_off_from.remove(share_hash);
        if let Place::InFlight { conn, .. } = place {
            self.leave_in_flight(conn, share_hash);
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

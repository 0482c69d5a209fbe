//! The mint's memory of served lookups, so a signed request serves once.

use std::collections::{BTreeSet, HashSet};

use super::{LookupError, TIMESTAMP_WINDOW_SECS};

/// The signed messages the mint has served and whose timestamp is still
/// inside the window; a message seen again is refused. Entries leave once
/// their timestamp is too old to be accepted anyway, so the cache holds at
/// most one window of requests, and at most `capacity` entries.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: HashSet<[u8; 32]>,
    /// (the last second the timestamp is accepted, digest), oldest first.
    by_expiry: BTreeSet<(u64, [u8; 32])>,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashSet::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records the digests of a verified request, or refuses it if any was
    /// seen before (then nothing is recorded) or the cache is full.
    pub fn check_and_insert(
        &mut self,
        digests: &[[u8; 32]],
        timestamp: u64,
        now: u64,
    ) -> Result<(), LookupError> {
        self.expire(now);
        if digests.iter().any(|d| self.seen.contains(d)) {
            return Err(LookupError::Replayed);
        }
        if self.seen.len() + digests.len() > self.capacity {
            return Err(LookupError::Busy);
        }
        let expiry = timestamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        for d in digests {
            if self.seen.insert(*d) {
                self.by_expiry.insert((expiry, *d));
            }
        }
        Ok(())
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(expiry, digest)) = self.by_expiry.first() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&digest);
        }
    }
}

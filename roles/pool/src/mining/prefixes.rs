//! The extranonce prefixes of the pool's channels.
//!
//! channels_sv2's allocator hands out a free prefix, and a prefix is free
//! again once the channel generation holding it is dropped: a channel
//! closed, the jobs sent two renewals back, or those given up for a
//! channel that found no prefix free. A header commits to its prefix and,
//! through its coinbase's key commitment, to its channel's locking key,
//! while channels_sv2 refuses duplicate shares per channel only. So a
//! prefix back with a key that held it on the same chain tip could have a
//! header accepted twice (the mint would still quote it once). [`Prefixes`]
//! remembers which keys held each prefix since the tip last moved and
//! hands a prefix back to one of them only when it finds no other free:
//! refusing the channel would cost the miner more.

use std::collections::HashMap;

use ehash::LockingKey;
use stratum_core::channels_sv2::extranonce_manager::{
    AllocatedExtranoncePrefix, ExtranonceAllocator, ExtranonceAllocatorError,
};
use tracing::{debug, warn};

/// Prefixes a key held that one allocation passes over, at most, before
/// it takes one of them: each costs a look at the allocator's bitmap.
const MOST_SET_ASIDE: usize = 16;

/// The keys held by one prefix since the tip moved (None: a channel
/// without a key, whose coinbase commits to none).
type Holders = Vec<Option<LockingKey>>;

pub(super) struct Prefixes {
    allocator: ExtranonceAllocator,
    held: HashMap<Vec<u8>, Holders>,
    /// Pairs of prefix and key in `held`, and the most it keeps: channels
    /// opened and closed at any rate must not grow it without bound.
    remembered: usize,
    most_remembered: usize,
}

impl Prefixes {
    pub fn new(allocator: ExtranonceAllocator) -> Prefixes {
        let most_remembered = 4 * allocator.max_channels() as usize;
        Prefixes {
            allocator,
            held: HashMap::new(),
            remembered: 0,
            most_remembered,
        }
    }

    pub fn allocator(&self) -> &ExtranonceAllocator {
        &self.allocator
    }

    /// A prefix for a channel of `key`: an extended channel's, leaving it
    /// `min_rollable` bytes to roll, or (None) a standard channel's. One
    /// `key` held since the tip moved only when no other is free (or the
    /// next [`MOST_SET_ASIDE`] free ones all are).
    pub fn allocate(
        &mut self,
        key: Option<LockingKey>,
        min_rollable: Option<usize>,
    ) -> Result<AllocatedExtranoncePrefix, ExtranonceAllocatorError> {
        // Held while looking on, so the allocator offers others; the ones
        // not taken are free again when dropped.
        let mut set_aside = Vec::new();
        let prefix = loop {
            let allocated = match min_rollable {
                Some(size) => self.allocator.allocate_extended(size),
                None => self.allocator.allocate_standard(),
            };
            match allocated {
                Ok(prefix) if !self.was_held_by(prefix.as_bytes(), key) => break prefix,
                Ok(prefix) if set_aside.len() < MOST_SET_ASIDE => set_aside.push(prefix),
                Ok(prefix) => break prefix,
                Err(e) if set_aside.is_empty() => return Err(e),
                Err(_) => {
                    debug!(
                        "the only extranonce prefixes free were held by the same key on this tip"
                    );
                    break set_aside.swap_remove(0);
                }
            }
        };
        self.remember(prefix.as_bytes(), key);
        Ok(prefix)
    }

    /// Whether a channel of `key` held `prefix` since the tip moved.
    pub fn was_held_by(&self, prefix: &[u8], key: Option<LockingKey>) -> bool {
        self.held
            .get(prefix)
            .is_some_and(|keys| keys.contains(&key))
    }

    /// The chain tip moved: no header of an earlier tip can be accepted.
    pub fn on_new_tip(&mut self) {
        self.forget();
    }

    fn forget(&mut self) {
        self.held.clear();
        self.remembered = 0;
    }

    fn remember(&mut self, prefix: &[u8], key: Option<LockingKey>) {
        if self.remembered == self.most_remembered {
            warn!(
                remembered = self.remembered,
                "channels opened on this chain tip fill the memory of extranonce \
                 prefixes held: it starts over, and a prefix may come back to a key \
                 that held it (the mint still quotes a share hash once)"
            );
            self.forget();
        }
        let holders = self.held.entry(prefix.to_vec()).or_default();
        if !holders.contains(&key) {
            holders.push(key);
            self.remembered += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Option<LockingKey> {
        let secp = stratum_core::bitcoin::secp256k1::Secp256k1::new();
        let secret = stratum_core::bitcoin::secp256k1::SecretKey::from_slice(&[n; 32]).unwrap();
        let public = secret.public_key(&secp).serialize();
        Some(LockingKey::from_bytes(&public).unwrap())
    }

    fn prefixes(max_channels: u32) -> Prefixes {
        Prefixes::new(ExtranonceAllocator::new(Vec::new(), 16, max_channels).unwrap())
    }

    #[test]
    fn the_keys_that_held_a_prefix_on_the_tip_are_remembered() {
        let mut p = prefixes(2);
        let first = p.allocate(key(1), Some(8)).unwrap();
        let bytes = first.as_bytes().to_vec();
        let _second = p.allocate(key(2), Some(8)).unwrap();
        drop(first);
        let third = p.allocate(key(3), Some(8)).unwrap();
        assert_eq!(third.as_bytes(), bytes);
        assert!(p.was_held_by(&bytes, key(1)) && p.was_held_by(&bytes, key(3)));
        assert!(!p.was_held_by(&bytes, key(2)));
    }

    #[test]
    fn a_key_gets_a_prefix_it_held_back_only_when_no_other_is_free() {
        let mut p = prefixes(3);
        let first = p.allocate(key(1), None).unwrap();
        let bytes = first.as_bytes().to_vec();
        drop(first);
        let second = p.allocate(key(2), None).unwrap();
        let _third = p.allocate(key(2), None).unwrap();
        drop(second);
        // Free: the first (held by key 1), which the allocator offers
        // first, and the second. Key 1 gets the second.
        let fourth = p.allocate(key(1), None).unwrap();
        assert_ne!(fourth.as_bytes(), bytes);
        assert_eq!(
            p.allocator().allocated_count(),
            2,
            "the set-aside one freed"
        );
        // Now only the first is free: handed back rather than refused.
        let fifth = p.allocate(key(1), None).unwrap();
        assert_eq!(fifth.as_bytes(), bytes);
        drop(fifth);
        p.on_new_tip();
        assert!(!p.was_held_by(&bytes, key(1)));
    }

    #[test]
    fn the_memory_of_holders_is_bounded() {
        let mut p = prefixes(1);
        for n in 1..=4 {
            drop(p.allocate(key(n), None).unwrap());
        }
        assert_eq!(p.remembered, 4);
        // Full: it starts over rather than grow.
        drop(p.allocate(key(5), None).unwrap());
        assert_eq!(p.remembered, 1);
        assert!(p.allocate(key(1), None).is_ok());
    }
}

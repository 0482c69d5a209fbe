//! The prev hashes the mint takes on a pool's word: tips it never saw, at a
//! height it missed or at the height of a tip it saw (a block race). A real
//! block has one height, and an outage or a race leaves one or two blocks
//! at a height, not more: so each such prev hash is taken for one height,
//! and [`MAX_PER_HEIGHT`] at most per height, for each pool (one pool's
//! made-up prev hashes take none of another's). A pool cannot then quote
//! work on prev hashes it makes up as it goes, only on a few, which as many
//! blocks of a real race would take. Kept in memory, by each mint process:
//! a restart or a second process takes as many again.

use std::collections::{BTreeMap, HashMap};

use mint_quote_sv2::error_code;

use super::{Pools, MAX_BLOCKS_BEHIND};
use crate::quote::Rejection;

/// Prev hashes taken on a pool's word at one height, at most.
pub const MAX_PER_HEIGHT: usize = 2;
/// (height, pool) pairs kept, the lowest heights forgotten first: every
/// height a pool's history holds, for a few pools.
const MAX_KEPT: usize = 4 * MAX_BLOCKS_BEHIND;

/// The prev hashes taken on a pool's word, by height and pool.
#[derive(Debug, Default)]
pub struct TakenOnWord {
    by_height: BTreeMap<(u32, Pools), Vec<[u8; 32]>>,
    height_of: HashMap<([u8; 32], Pools), u32>,
}

impl TakenOnWord {
    /// Takes `prev_hash` for blocks at `height`, on `pool`'s word: whether
    /// it is new (else taken before for that height), or why it is refused.
    pub fn take(
        &mut self,
        prev_hash: [u8; 32],
        height: u32,
        pool: Pools,
    ) -> Result<bool, Rejection> {
        let refuse = |message: String| Err(Rejection::new(error_code::UNKNOWN_PREV_HASH, message));
        let hex = || ehash::share::hex_be(&prev_hash);
        match self.height_of.get(&(prev_hash, pool)) {
            Some(&taken) if taken == height => return Ok(false),
            Some(&taken) => {
                return refuse(format!(
                    "prev hash {} was taken, never seen, for height {taken}, not {height}",
                    hex()
                ))
            }
            None => {}
        }
        let at_height = self.by_height.entry((height, pool)).or_default();
        if at_height.len() >= MAX_PER_HEIGHT {
            return refuse(format!(
                "{MAX_PER_HEIGHT} prev hashes the mint never saw are taken at height {height} already, its most: not {}",
                hex()
            ));
        }
        at_height.push(prev_hash);
        self.height_of.insert((prev_hash, pool), height);
        while self.by_height.len() > MAX_KEPT {
            if let Some(((_, pool), forgotten)) = self.by_height.pop_first() {
                for prev_hash in forgotten {
                    self.height_of.remove(&(prev_hash, pool));
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: Pools = Pools(0b01);
    const OTHER: Pools = Pools(0b10);

    #[test]
    fn a_prev_hash_taken_on_word_is_for_one_height_and_a_height_takes_a_few() {
        let mut taken = TakenOnWord::default();
        assert_eq!(taken.take([1; 32], 100, POOL), Ok(true));
        assert_eq!(
            taken.take([1; 32], 100, POOL),
            Ok(false),
            "again, as before"
        );
        let elsewhere = taken.take([1; 32], 101, POOL).unwrap_err();
        assert_eq!(elsewhere.code, "unknown-prev-hash");
        assert!(elsewhere.message.contains("for height 100"), "{elsewhere}");
        assert_eq!(taken.take([2; 32], 100, POOL), Ok(true));
        let third = taken.take([3; 32], 100, POOL).unwrap_err();
        assert_eq!(third.code, "unknown-prev-hash");
        // The two taken are still good; another height takes its own.
        assert_eq!(taken.take([2; 32], 100, POOL), Ok(false));
        assert_eq!(taken.take([3; 32], 101, POOL), Ok(true));
        // Another pool's are its own.
        assert_eq!(taken.take([3; 32], 100, OTHER), Ok(true));
        assert_eq!(taken.take([4; 32], 100, OTHER), Ok(true));
    }

    #[test]
    fn the_lowest_heights_are_forgotten_beyond_the_bound() {
        let mut taken = TakenOnWord::default();
        for height in 0..=MAX_KEPT as u32 {
            let mut prev_hash = [0; 32];
            prev_hash[..4].copy_from_slice(&height.to_le_bytes());
            assert_eq!(taken.take(prev_hash, height, POOL), Ok(true));
        }
        assert_eq!(taken.by_height.len(), MAX_KEPT);
        assert_eq!(taken.height_of.len(), MAX_KEPT);
        // Height 0's prev hash is forgotten: taken anew elsewhere.
        assert_eq!(taken.take([0; 32], 50_000, POOL), Ok(true));
    }
}

//! The mint's own view of the chain: a share is quoted only if its header
//! builds on a chain tip fewer than `max_tip_age` blocks back (counted as
//! below), with that tip's nbits and an ntime in range. So work done long
//! ago (any public block header) buys nothing.
//!
//! ```text
//!   prev hash of the header
//!        |
//!        +-- a tip fewer than max_tip_age back --> nbits and ntime checked
//!        +-- an older tip still remembered ------> stale-prev-hash
//!        +-- never seen, at a height between two tips announced one
//!        |   right after the other (the mint was down, its template
//!        |   provider link was, or two blocks came at once)
//!        |                                  ---> checked as above, against
//!        |                                       the tips either side
//!        +-- never seen, at the height of a tip seen (a block race:
//!        |   the pool's node and the mint's took different blocks)
//!        |                                  ---> checked as above, against
//!        |                                       that tip
//!        +-- never seen otherwise ---------------> wait for the chain view
//!                                                  (a share can beat the
//!                                                  mint's own template
//!                                                  provider to a new block)
//!              seen in time ----> checked as above
//!              not seen, provider up ------------> unknown-prev-hash
//!              above the newest tip -------------> chain-unavailable, or
//!                                                  unknown-prev-hash if
//!                                                  MAX_BLOCKS_AHEAD or more
//!                                                  above one of the last day
//!              not seen, provider down ----------> chain-unavailable
//!                                                  (the pool asks again)
//! ```
//!
//! Heights come from the template provider's templates and from the
//! share's coinbase (BIP 34). A pool keeps accepting shares while its mint
//! is down; when a block came and went meanwhile, the shares on it build on
//! a tip the mint never saw. Taking their height from the coinbase trusts
//! the pool for the prev hash at a height the mint missed, and for nothing
//! else: the work is still fresh work for this pool and this key, done
//! after the tip before the gap (its ntime). So does a block race, where
//! the pool's node builds on another block than the mint's at one height:
//! the shares are as fresh as the mint's tip at that height, whichever
//! block the chain keeps. A prev hash so taken on the pool's word is taken
//! for one height, and a few at most per height (`on_word`).
//!
//! A share's age is counted, for the pool that asks, in the blocks that
//! came while that pool's shares were being quoted: a tip ages the shares
//! on older ones only if the mint quoted one of the pool's shares between
//! the tip before it and it, and then by the blocks between the two. While
//! the mint, its database, the pool or the link between them is down, the
//! pool cannot deliver the shares it accepted, and the blocks meanwhile
//! make none of them stale; once its shares are quoted again, it has
//! `max_tip_age` blocks to deliver them. The first tip after the mint
//! followed no chain (it was starting, or its template provider link was
//! down) makes nothing older either. A pool that delivers only now and then
//! keeps older work quotable so, up to a bound: a tip [`MAX_BLOCKS_BEHIND`]
//! blocks below the highest (or as long before the newest, at ten minutes a
//! block) is forgotten, and a share at such a height is stale. Mint
//! processes sharing a database add up what they stored of which pools
//! they quoted (see `template_provider`).
//!
//! [`TipHistory`] decides without IO and [`stored`] is how it is kept in
//! the database; [`Chain`] shares it between the template provider link,
//! which records tips, and the quote requests, which wait on it.

mod history;
mod on_word;
pub mod stored;
mod view;

use mint_quote_sv2::error_code;

use crate::quote::Rejection;

pub use history::{Recorded, TipHistory};
pub use view::{Chain, ChainState, Checked};

/// How far an ntime may be from its tip's time (and after the mint's
/// clock): the two hours of Bitcoin's future-block rule, either side.
pub const NTIME_SLACK_SECS: u32 = 2 * 60 * 60;
/// Blocks below the newest tip beyond which a share is stale whatever
/// the outage: two weeks of mainnet blocks. So many tips are kept at most.
pub const MAX_BLOCKS_BEHIND: usize = 2016;
/// Blocks above the newest tip, when that tip is of the last day, from
/// which a share's height is taken for the pool's error, not the mint's
/// provider being behind: two days of mainnet blocks.
pub const MAX_BLOCKS_AHEAD: u32 = 288;

/// A chain tip as the template provider announced it (`SetNewPrevHash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// The hash new blocks build on, in header byte order.
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    /// The provider's `header_timestamp` for blocks on this tip.
    pub time: u32,
    /// The height of blocks on this tip, as the template it activated says.
    pub height: Option<u32>,
}

/// Pools of the mint's `[[pools]]`, one bit each: the i-th pool's is bit
/// i, and pools from the 64th on share the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pools(pub u64);

impl Pools {
    pub const NONE: Pools = Pools(0);
    /// Every pool: tips stored before they said which pools they age for
    /// aged them all.
    pub const ALL: Pools = Pools(u64::MAX);

    /// The pool at `index` in `[[pools]]`.
    pub fn nth(index: usize) -> Pools {
        Pools(1 << index.min(63))
    }

    pub fn contains(self, pool: Pools) -> bool {
        self.0 & pool.0 != 0
    }
}

/// A tip as the history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptTip {
    pub tip: Tip,
    /// The pools a share was quoted for between the tip before and this
    /// one: they were delivering, and for them only this tip makes the
    /// shares on older ones older.
    pub quoted_for: Pools,
}

/// The fields of a share the chain check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderOnTip {
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    pub ntime: u32,
    /// The block height the share's coinbase is for, if it says.
    pub height: Option<u32>,
}

impl HeaderOnTip {
    pub fn from_header(header: &[u8; 80], height: Option<u32>) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
        Self {
            prev_hash: header[4..36].try_into().expect("32 bytes"),
            ntime: u32_at(68),
            nbits: u32_at(72),
            height,
        }
    }
}

/// The tip a header that may be quoted builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshTip {
    /// One the template provider announced.
    Announced,
    /// One the mint never saw, at a height between two tips it saw one
    /// right after the other.
    Missed { height: u32 },
    /// One the mint never saw, at the height of a tip it saw: the pool's
    /// node and the mint's saw different blocks come (a block race).
    Rival { height: u32 },
}

/// Why a header is not on a fresh tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TipProblem {
    /// No tip the history holds: maybe one not announced yet.
    Unseen,
    Refused(Rejection),
}

impl TipProblem {
    /// What a share on a tip still unseen after the wait gets is decided by
    /// [`Chain::check`]; this is only reached once the tip was seen.
    fn into_rejection(self) -> Rejection {
        match self {
            TipProblem::Refused(r) => r,
            TipProblem::Unseen => Rejection::new(
                error_code::UNKNOWN_PREV_HASH,
                "the share's prev hash is no known chain tip",
            ),
        }
    }
}

#[cfg(test)]
mod tests;

//! The header spaces of the custom jobs set on the pool's chain tip, over
//! every channel, each with the target it was first set at.
//!
//! A custom job's coinbase is its client's, so the same coinbase on the
//! same extranonce prefix makes the same headers whichever channel holds
//! the prefix: a prefix comes back to a channel after renewals, or to
//! another channel of the same key once freed. So the spaces (which take
//! the prefix in) are kept for the pool's tip, on which every custom job
//! must build, closed channels' too, and for the tips just before it,
//! which a reorg or a template provider a block behind can bring back.
//!
//! Bounded for memory: past `max` spaces a tip, only a channel's first job
//! on a tip (or on a new prefix) is taken, and past `max + first_jobs`
//! none. And so that one client cannot take that room from the others, one
//! peer address adds at most `per_address` spaces a tip over its
//! connections and channels (closed ones too), and `first_jobs_per_address`
//! more for first jobs.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use roles_common::limits::AddressCounts;
use stratum_core::bitcoin::Target;

/// What fixes a job's headers but for the miner's nonce, time, version
/// bits and extranonce, cut to 64 bits (two spaces alike by chance would
/// only share a target); `generation` computes them.
pub(super) type HeaderSpace = u64;

/// Tips before the pool's whose custom job spaces are kept.
const KEPT_TIPS: usize = 2;

/// How many spaces are kept a tip.
#[derive(Debug, Clone, Copy)]
pub struct SpaceBounds {
    /// Over every channel.
    pub max: usize,
    /// More for channels' first jobs: one a channel (the pool's
    /// `max_channels`).
    pub first_jobs: usize,
    /// From one peer address, over its connections and channels.
    pub per_address: usize,
    /// More for one address's first jobs: one a channel of a connection
    /// (the pool's `max_channels_per_connection`).
    pub first_jobs_per_address: usize,
}

/// The spaces of one tip.
#[derive(Debug, Default)]
struct TipSpaces {
    targets: HashMap<HeaderSpace, Target>,
    /// Spaces each peer address added.
    added_by: AddressCounts,
}

#[derive(Debug)]
struct Kept {
    tip: Option<[u8; 32]>,
    current: TipSpaces,
    /// The tips before it, newest first.
    earlier: VecDeque<([u8; 32], TipSpaces)>,
    bounds: SpaceBounds,
}

/// Shared by the generations of every custom-work channel, each handle for
/// its connection's peer address (behind a lock only so the core stays
/// `Send`: it is used under the core's).
#[derive(Debug, Clone)]
pub struct CustomSpaces {
    kept: Arc<Mutex<Kept>>,
    /// The peer address of the channel holding this handle; None for the
    /// pool's.
    peer: Option<IpAddr>,
}

impl CustomSpaces {
    /// The pool's, holding nothing yet.
    pub fn new(bounds: SpaceBounds) -> CustomSpaces {
        let kept = Kept {
            tip: None,
            current: TipSpaces::default(),
            earlier: VecDeque::new(),
            bounds,
        };
        CustomSpaces {
            kept: Arc::new(Mutex::new(kept)),
            peer: None,
        }
    }

    /// The handle of a channel of a connection from `peer` (counted as
    /// the connection limits count it: an IPv6 address by its /64).
    pub fn for_peer(&self, peer: IpAddr) -> CustomSpaces {
        CustomSpaces {
            kept: self.kept.clone(),
            peer: Some(peer),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        roles_common::lock(&self.kept)
    }

    /// Spaces held on the pool's tip, over every custom-work channel.
    pub fn held(&self) -> usize {
        self.kept().current.targets.len()
    }

    /// The pool's chain tip is `prev_hash`: the custom jobs set on another
    /// are stale. The spaces of the tips before are kept a while, and those
    /// of a tip that comes back (with what each address added) are its
    /// again.
    pub fn on_tip(&self, prev_hash: [u8; 32]) {
        let mut kept = self.kept();
        let Some(tip) = kept.tip.filter(|tip| *tip != prev_hash) else {
            kept.tip = Some(prev_hash);
            return;
        };
        let back = kept.earlier.iter().position(|(t, _)| *t == prev_hash);
        let spaces = back
            .and_then(|i| kept.earlier.remove(i))
            .map(|(_, spaces)| spaces)
            .unwrap_or_default();
        let left = std::mem::replace(&mut kept.current, spaces);
        kept.earlier.push_front((tip, left));
        kept.earlier.truncate(KEPT_TIPS);
        kept.tip = Some(prev_hash);
    }

    pub(super) fn target(&self, space: &HeaderSpace) -> Option<Target> {
        self.kept().current.targets.get(space).copied()
    }

    /// Why a new space is refused, if it is: its address reached its bound
    /// on the tip, or the pool holds `max` (both with more room for a
    /// channel's `first` job on a tip or a prefix).
    pub(super) fn refusal(&self, first: bool) -> Option<String> {
        let kept = self.kept();
        let SpaceBounds {
            max,
            first_jobs,
            per_address,
            first_jobs_per_address,
        } = kept.bounds;
        let room = |bound: usize, more: usize| match first {
            true => bound.saturating_add(more),
            false => bound,
        };
        let added = self
            .peer
            .map_or(0, |peer| kept.current.added_by.count(peer));
        if added >= room(per_address, first_jobs_per_address) {
            return Some(format!(
                "{added} custom jobs set on this tip from this address already"
            ));
        }
        let held = kept.current.targets.len();
        (held >= room(max, first_jobs))
            .then(|| format!("the pool holds {held} custom jobs over all channels already"))
    }

    /// Records the space's target, unless it has one: whether it was new.
    pub(super) fn record(&self, space: HeaderSpace, target: Target) -> bool {
        let mut kept = self.kept();
        let current = &mut kept.current;
        match current.targets.entry(space) {
            Entry::Vacant(new) => {
                new.insert(target);
                if let Some(peer) = self.peer {
                    current.added_by.add(peer, 1);
                }
                true
            }
            Entry::Occupied(_) => false,
        }
    }
}

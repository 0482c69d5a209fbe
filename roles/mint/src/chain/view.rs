//! The chain view shared by the template provider link, which records
//! tips, and the quote requests, which are checked against it (waiting
//! for a tip not seen yet) and tell it which pools' shares were quoted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mint_quote_sv2::error_code;
use tokio::sync::watch;

use super::on_word::TakenOnWord;
use super::{
    FreshTip, HeaderOnTip, KeptTip, Pools, Recorded, Tip, TipHistory, TipProblem, MAX_BLOCKS_AHEAD,
};
use crate::quote::Rejection;

/// A tip younger than this (Bitcoin Core's initial block download ends
/// within a day of the chain's time) shows its provider following the chain.
const RECENT_TIP_SECS: u32 = 24 * 60 * 60;

/// The chain view as the template provider link keeps it.
#[derive(Debug, Clone)]
pub struct ChainState {
    pub history: TipHistory,
    /// The template provider link is up and has announced its tip.
    pub live: bool,
    /// New tips recorded since the mint started: the interval between
    /// two tips a share was checked in.
    pub epoch: u64,
}

/// A share found on a fresh tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub fresh: FreshTip,
    /// When it was checked: see [`Chain::quoted`].
    pub epoch: u64,
}

/// The chain view shared by the template provider link and the quotes.
pub struct Chain {
    state: watch::Sender<ChainState>,
    /// The pools a share was quoted for since the newest tip came: the
    /// next one ages the shares on older ones for them.
    quoted_since_tip: AtomicU64,
    unseen_tip_wait: Duration,
    /// Tips never seen taken on a pool's word.
    taken_on_word: Mutex<TakenOnWord>,
}

impl Chain {
    pub fn new(history: TipHistory, unseen_tip_wait: Duration) -> Self {
        let state = ChainState {
            history,
            live: false,
            epoch: 0,
        };
        Self {
            state: watch::Sender::new(state),
            quoted_since_tip: AtomicU64::new(0),
            unseen_tip_wait,
            taken_on_word: Mutex::default(),
        }
    }

    /// A tip from the template provider (which is live then); what it
    /// changed and the history, to store, if it changed anything.
    pub fn record(&self, tip: Tip) -> Option<(Recorded, TipHistory)> {
        let mut changed = None;
        self.state.send_modify(|s| {
            let was_blind = !std::mem::replace(&mut s.live, true);
            let recorded = s.history.record(tip, || {
                let quoted = Pools(self.quoted_since_tip.swap(0, Ordering::Relaxed));
                // The first tip after the mint followed no chain (it was
                // starting, or its provider link was down) stands for blocks
                // it did not see come: the shares its pools could not deliver
                // meanwhile must not be the older for them.
                if was_blind {
                    Pools::NONE
                } else {
                    quoted
                }
            });
            if recorded == Recorded::New {
                s.epoch += 1;
            }
            if recorded != Recorded::Nothing {
                changed = Some((recorded, s.history.clone()));
            }
        });
        changed
    }

    /// The interval between tips now.
    pub fn epoch(&self) -> u64 {
        self.state.borrow().epoch
    }

    /// A share of `pool`, checked in `epoch`, was quoted: the pool is
    /// delivering, so the tip that ends that interval ages the shares on
    /// older ones for it.
    pub fn quoted(&self, pool: Pools, epoch: u64) {
        {
            // Held while the bit is set: no tip is recorded in between.
            let state = self.state.borrow();
            if state.epoch == epoch {
                self.quoted_since_tip.fetch_or(pool.0, Ordering::Relaxed);
                return;
            }
        }
        // Tips came while it was written: the first of them ended the
        // interval. Kept in memory; stored with the next tip.
        self.state.send_if_modified(|s| {
            let first_since = s.epoch.checked_sub(epoch).and_then(|n| n.checked_sub(1));
            if let Some(position) = first_since.and_then(|n| usize::try_from(n).ok()) {
                s.history.mark_quoted(position, pool);
            }
            false
        });
    }

    /// Adds what other mint processes stored of the pools quoted before
    /// each tip: a cluster counts a pool's blocks as one.
    pub fn absorb(&self, others: &[KeptTip]) {
        // Waiters wait for tips, not for what they aged: none is woken.
        self.state.send_if_modified(|s| {
            s.history.absorb(others);
            false
        });
    }

    /// The template provider link went down.
    pub fn lost(&self) {
        self.state.send_modify(|s| s.live = false);
    }

    pub fn state(&self) -> ChainState {
        self.state.borrow().clone()
    }

    /// Checks `header`, from `pool`, against the chain view; a tip the
    /// view has not seen is waited for, at most `unseen_tip_wait`.
    pub async fn check(
        &self,
        header: &HeaderOnTip,
        now: u32,
        pool: Pools,
    ) -> Result<Checked, Rejection> {
        let checked = self.check_waiting(header, now, pool).await?;
        match checked.fresh {
            FreshTip::Announced => {}
            FreshTip::Missed { height } | FreshTip::Rival { height } => {
                let new =
                    roles_common::lock(&self.taken_on_word).take(header.prev_hash, height, pool)?;
                if new {
                    log_taken_on_word(header.prev_hash, height, checked.fresh);
                }
            }
        }
        Ok(checked)
    }

    async fn check_waiting(
        &self,
        header: &HeaderOnTip,
        now: u32,
        pool: Pools,
    ) -> Result<Checked, Rejection> {
        let check = |s: &ChainState| {
            let fresh = s.history.check(header, now, pool)?;
            Ok(Checked {
                fresh,
                epoch: s.epoch,
            })
        };
        let unseen = |s: &ChainState| check(s) == Err(TipProblem::Unseen);
        let first = check(&self.state.borrow());
        if first != Err(TipProblem::Unseen) {
            return first.map_err(TipProblem::into_rejection);
        }
        let mut view = self.state.subscribe();
        let waited =
            tokio::time::timeout(self.unseen_tip_wait, view.wait_for(|s| !unseen(s))).await;
        if let Ok(Ok(state)) = waited {
            return check(&state).map_err(TipProblem::into_rejection);
        }
        Err(self.still_unseen(header, now))
    }

    /// Why a share on a tip still unseen after the wait is not quoted now.
    fn still_unseen(&self, header: &HeaderOnTip, now: u32) -> Rejection {
        let prev_hash = ehash::share::hex_be(&header.prev_hash);
        let state = self.state.borrow();
        let newest = state.history.newest();
        let above = match (header.height, newest.map(|t| t.height)) {
            (Some(share), Some(Some(newest))) => share.checked_sub(newest).filter(|&n| n > 0),
            (Some(_), Some(None)) => Some(1),
            _ => None,
        };
        // A provider with a tip of today's is following the chain: one far
        // below the share's height is not, the share's height is wrong.
        let following = newest.is_some_and(|t| now.saturating_sub(t.time) < RECENT_TIP_SECS);
        let (code, message) = match above {
            Some(blocks) if state.live && following && blocks >= MAX_BLOCKS_AHEAD => (
                error_code::UNKNOWN_PREV_HASH,
                format!(
                    "prev hash {prev_hash} is for a block {blocks} above the newest tip the mint's template provider announced, of the last day: no provider is that far behind"
                ),
            ),
            // Not the pool's fault: the share is for a block above any the
            // mint's provider announced, so it is the one behind (slow, or
            // its link silently dead). Asked again, the share passes once it
            // catches up, or is stale by then.
            Some(blocks) => (
                error_code::CHAIN_UNAVAILABLE,
                format!(
                    "the mint's template provider is behind: prev hash {prev_hash} is for a block {blocks} above its newest tip"
                ),
            ),
            None if state.live => (
                error_code::UNKNOWN_PREV_HASH,
                format!(
                    "prev hash {prev_hash} is no tip the mint's template provider announced (waited {:?})",
                    self.unseen_tip_wait
                ),
            ),
            None => (
                error_code::CHAIN_UNAVAILABLE,
                format!("the mint's template provider is down and prev hash {prev_hash} is not in its chain view yet"),
            ),
        };
        Rejection::new(code, message)
    }
}

/// Logs the first share quoted on a tip the mint never saw: an operator
/// sees which prev hashes were taken on the pool's word.
fn log_taken_on_word(prev_hash: [u8; 32], height: u32, fresh: FreshTip) {
    let why = match fresh {
        FreshTip::Rival { .. } => "at the height of one it did (a block race: the pool's node and the mint's took different blocks)",
        FreshTip::Missed { .. } | FreshTip::Announced => "at a height between two it did (the mint or its link was down, or two blocks came at once)",
    };
    tracing::info!(
        prev_hash = %ehash::share::hex_be(&prev_hash),
        height,
        "chain view: quoting shares on a tip the mint's template provider never announced to it, {why}"
    );
}

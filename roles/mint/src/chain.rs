//! The mint's own view of the chain: a share is quoted only if its header
//! builds on one of the last `max_tip_age` chain tips, with that tip's
//! nbits and an ntime in range. So work done long ago (any public block
//! header) buys nothing.
//!
//! ```text
//!   prev hash of the header
//!        |
//!        +-- one of the newest max_tip_age tips --> nbits and ntime checked
//!        +-- an older tip still remembered ------> stale-prev-hash
//!        +-- never seen, at a height between two tips announced one
//!        |   right after the other (the mint was down, its template
//!        |   provider link was, or two blocks came at once)
//!        |                                  ---> checked as above, against
//!        |                                       the tips either side
//!        +-- never seen otherwise ---------------> wait for the chain view
//!                                                  (a share can beat the
//!                                                  mint's own template
//!                                                  provider to a new block)
//!              seen in time ----> checked as above
//!              not seen, provider up ------------> unknown-prev-hash
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
//! after the tip before the gap (its ntime).
//!
//! Age is counted in tips that came while shares were being quoted: a tip
//! ages the shares on older ones only if the mint quoted a share between
//! it and the tip before it. While the mint, its database, its pool link or
//! the pool itself is down, the pool cannot deliver the shares it accepted,
//! and blocks meanwhile do not make them stale; once quoting goes on again,
//! the pool has `max_tip_age` blocks to deliver them.
//!
//! [`TipHistory`] decides without IO; [`Chain`] shares it between the
//! template provider link, which records tips, and the quote requests,
//! which wait on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mint_quote_sv2::error_code;
use tokio::sync::watch;

use crate::quote::Rejection;

/// How far an ntime may be from its tip's time (and after the mint's
/// clock): the two hours of Bitcoin's future-block rule, either side.
pub const NTIME_SLACK_SECS: u32 = 2 * 60 * 60;
/// Aging tips remembered beyond `max_tip_age`, to tell stale work from
/// unknown.
const REMEMBERED_BEYOND: usize = 64;
/// The most tips remembered, aging or not (unless `max_tip_age` asks for
/// more): two weeks of mainnet blocks, however long quoting stopped.
const MAX_TIPS_KEPT: usize = 2016;
/// Serialized size of one tip: prev hash, nbits, time, height, whether it ages.
const TIP_LEN: usize = 45;
/// The same before tips said whether they age (all did).
const TIP_LEN_WITHOUT_AGING: usize = 44;
/// The same before tips had heights.
const TIP_LEN_WITHOUT_HEIGHT: usize = 40;
/// A stored height that is unknown.
const NO_HEIGHT: u32 = u32::MAX;
/// Missed tips whose first share is logged, remembered to log each once.
const MISSED_LOGGED: usize = 16;

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

/// A tip as the history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptTip {
    pub tip: Tip,
    /// The mint quoted a share between the tip before and this one, so the
    /// pool was delivering: only such tips make the shares on older ones
    /// older.
    pub ages: bool,
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

/// The newest tips, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipHistory {
    tips: VecDeque<KeptTip>,
    max_tip_age: usize,
}

impl TipHistory {
    /// `max_tip_age` >= 1: how many of the newest aging tips shares may
    /// build on.
    pub fn new(max_tip_age: usize, tips: impl IntoIterator<Item = KeptTip>) -> Self {
        let mut history = Self {
            tips: tips.into_iter().collect(),
            max_tip_age: max_tip_age.max(1),
        };
        history.forget_old();
        history
    }

    /// Keeps the tips with fewer than `max_tip_age + REMEMBERED_BEYOND`
    /// aging tips newer, [`MAX_TIPS_KEPT`] at most.
    fn forget_old(&mut self) {
        let remembered = self.max_tip_age.saturating_add(REMEMBERED_BEYOND);
        let mut newer_aging = 0;
        let kept = self
            .tips
            .iter()
            .position(|kept| {
                let forgotten = newer_aging >= remembered;
                newer_aging += usize::from(kept.ages);
                forgotten
            })
            .unwrap_or(self.tips.len());
        self.tips.truncate(kept.min(MAX_TIPS_KEPT.max(remembered)));
    }

    /// Records a tip, which ages the older ones if `ages`; false if it is
    /// the newest already (a reconnect).
    pub fn record(&mut self, tip: Tip, ages: bool) -> bool {
        if self.newest() == Some(&tip) {
            return false;
        }
        // The same prev hash again (a provider restart): it moves to the front.
        self.tips.retain(|t| t.tip.prev_hash != tip.prev_hash);
        self.tips.push_front(KeptTip { tip, ages });
        self.forget_old();
        true
    }

    pub fn newest(&self) -> Option<&Tip> {
        self.tips.front().map(|kept| &kept.tip)
    }

    pub fn tips(&self) -> impl Iterator<Item = &KeptTip> {
        self.tips.iter()
    }

    /// Whether `header` builds on a fresh tip, with its nbits, at an ntime
    /// within [`NTIME_SLACK_SECS`] of the tip's time and not past `now`
    /// (unix seconds) by more.
    pub fn check(&self, header: &HeaderOnTip, now: u32) -> Result<FreshTip, TipProblem> {
        if let Some(position) = self
            .tips
            .iter()
            .position(|t| t.tip.prev_hash == header.prev_hash)
        {
            let tip = &self.tips[position].tip;
            let age = self.aging_among_newest(position);
            self.check_fresh(header, now, age, &[tip.nbits], tip.time)?;
            return Ok(FreshTip::Announced);
        }
        let height = header.height.ok_or(TipProblem::Unseen)?;
        let newer = self.gap_around(height).ok_or(TipProblem::Unseen)?;
        let (above, below) = (&self.tips[newer].tip, &self.tips[newer + 1].tip);
        // The tip right after the gap replaced the missed one too.
        let age = self.aging_among_newest(newer + 1);
        // Either side of a difficulty change, the missed tip has one or the other.
        self.check_fresh(header, now, age, &[below.nbits, above.nbits], below.time)?;
        Ok(FreshTip::Missed { height })
    }

    /// How many of the `n` newest tips age the shares on older ones.
    fn aging_among_newest(&self, n: usize) -> usize {
        self.tips.iter().take(n).filter(|kept| kept.ages).count()
    }

    /// The position of the newer of two tips, announced one right after
    /// the other, whose heights `height` falls strictly between, if no tip
    /// is at that height: so the mint saw the chain before and after a
    /// block it never saw. Tips with no height (stored before tips had
    /// them) make no such pair.
    fn gap_around(&self, height: u32) -> Option<usize> {
        if self.tips.iter().any(|t| t.tip.height == Some(height)) {
            return None;
        }
        let mut newer_then_older = self.tips.iter().zip(self.tips.iter().skip(1));
        newer_then_older.position(|(newer, older)| {
            matches!((older.tip.height, newer.tip.height),
                (Some(below), Some(above)) if below < height && height < above)
        })
    }

    /// The checks of a header on a tip `age` aging tips back, whose nbits is one
    /// of `nbits`, and whose time is `tip_time`.
    fn check_fresh(
        &self,
        header: &HeaderOnTip,
        now: u32,
        age: usize,
        nbits: &[u32],
        tip_time: u32,
    ) -> Result<(), TipProblem> {
        let refuse = |code, message| Err(TipProblem::Refused(Rejection::new(code, message)));
        if age >= self.max_tip_age {
            return refuse(
                error_code::STALE_PREV_HASH,
                format!(
                    "the share builds on the tip {age} blocks back (counting those that came while shares were quoted); shares on the newest {} tips are quoted",
                    self.max_tip_age
                ),
            );
        }
        if !nbits.contains(&header.nbits) {
            let expected: Vec<String> = nbits.iter().map(|n| format!("{n:#010x}")).collect();
            return refuse(
                error_code::NBITS_MISMATCH,
                format!(
                    "nbits {:#010x}, the tip's are {}",
                    header.nbits,
                    expected.join(" or ")
                ),
            );
        }
        let earliest = tip_time.saturating_sub(NTIME_SLACK_SECS);
        let latest = now.saturating_add(NTIME_SLACK_SECS);
        if header.ntime < earliest || header.ntime > latest {
            return refuse(
                error_code::NTIME_OUT_OF_RANGE,
                format!(
                    "ntime {} is outside {earliest}..={latest} (the tip's time {tip_time} and the mint's clock {now}, two hours either way)",
                    header.ntime
                ),
            );
        }
        Ok(())
    }

    /// The tips as stored: newest first, [`TIP_LEN`] bytes each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tips.len() * TIP_LEN);
        for KeptTip { tip, ages } in &self.tips {
            out.extend_from_slice(&tip.prev_hash);
            out.extend_from_slice(&tip.nbits.to_le_bytes());
            out.extend_from_slice(&tip.time.to_le_bytes());
            out.extend_from_slice(&tip.height.unwrap_or(NO_HEIGHT).to_le_bytes());
            out.push(u8::from(*ages));
        }
        out
    }

    /// The tips of `bytes` stored as `layout`; `None` if they are not such
    /// a list. Tips stored before tips said whether they age all do.
    pub fn tips_from_bytes(bytes: &[u8], layout: TipLayout) -> Option<Vec<KeptTip>> {
        let tip_len = layout.len();
        if !bytes.len().is_multiple_of(tip_len) {
            return None;
        }
        let u32_at = |c: &[u8], at: usize| u32::from_le_bytes(c[at..at + 4].try_into().expect("4"));
        bytes
            .chunks_exact(tip_len)
            .map(|c| {
                let tip = Tip {
                    prev_hash: c[..32].try_into().expect("32 bytes"),
                    nbits: u32_at(c, 32),
                    time: u32_at(c, 36),
                    height: (layout != TipLayout::WithoutHeights)
                        .then(|| u32_at(c, 40))
                        .filter(|h| *h != NO_HEIGHT),
                };
                let ages = match layout {
                    TipLayout::Current => match c[44] {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                    TipLayout::WithoutAging | TipLayout::WithoutHeights => true,
                };
                Some(KeptTip { tip, ages })
            })
            .collect()
    }
}

/// How a mint stored its tips, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipLayout {
    /// Prev hash, nbits, time, height, whether it ages: [`TipHistory::to_bytes`].
    Current,
    /// Before tips said whether they age.
    WithoutAging,
    /// Before tips had heights.
    WithoutHeights,
}

impl TipLayout {
    fn len(self) -> usize {
        match self {
            TipLayout::Current => TIP_LEN,
            TipLayout::WithoutAging => TIP_LEN_WITHOUT_AGING,
            TipLayout::WithoutHeights => TIP_LEN_WITHOUT_HEIGHT,
        }
    }
}

/// The chain view as the template provider link keeps it.
#[derive(Debug, Clone)]
pub struct ChainState {
    pub history: TipHistory,
    /// The template provider link is up and has announced its tip.
    pub live: bool,
}

/// The chain view shared by the template provider link and the quotes.
pub struct Chain {
    state: watch::Sender<ChainState>,
    /// A share was quoted since the newest tip came: the next one ages.
    quoted_since_tip: AtomicBool,
    unseen_tip_wait: Duration,
    /// Missed tips a share was quoted on, newest last: each is logged once.
    missed_logged: Mutex<VecDeque<[u8; 32]>>,
}

impl Chain {
    pub fn new(history: TipHistory, unseen_tip_wait: Duration) -> Self {
        let state = ChainState {
            history,
            live: false,
        };
        Self {
            state: watch::Sender::new(state),
            quoted_since_tip: AtomicBool::new(false),
            unseen_tip_wait,
            missed_logged: Mutex::default(),
        }
    }

    /// A tip from the template provider (which is live then); the history
    /// if it changed, to store.
    pub fn record(&self, tip: Tip) -> Option<TipHistory> {
        let mut changed = None;
        self.state.send_modify(|s| {
            s.live = true;
            if s.history.newest() != Some(&tip) {
                let ages = self.quoted_since_tip.swap(false, Ordering::Relaxed);
                s.history.record(tip, ages);
                changed = Some(s.history.clone());
            }
        });
        changed
    }

    /// A share was quoted: the pool is delivering, so the next tip ages
    /// the shares on older ones.
    pub fn quoted(&self) {
        self.quoted_since_tip.store(true, Ordering::Relaxed);
    }

    /// The template provider link went down.
    pub fn lost(&self) {
        self.state.send_modify(|s| s.live = false);
    }

    pub fn state(&self) -> ChainState {
        self.state.borrow().clone()
    }

    /// Checks `header` against the chain view; a tip the view has not seen
    /// is waited for, at most `unseen_tip_wait`.
    pub async fn check(&self, header: &HeaderOnTip, now: u32) -> Result<FreshTip, Rejection> {
        let fresh = self.check_waiting(header, now).await?;
        if let FreshTip::Missed { height } = fresh {
            self.log_missed(header.prev_hash, height);
        }
        Ok(fresh)
    }

    async fn check_waiting(&self, header: &HeaderOnTip, now: u32) -> Result<FreshTip, Rejection> {
        let unseen = |s: &ChainState| s.history.check(header, now) == Err(TipProblem::Unseen);
        let first = self.state.borrow().history.check(header, now);
        if first != Err(TipProblem::Unseen) {
            return first.map_err(TipProblem::into_rejection);
        }
        let mut view = self.state.subscribe();
        let waited =
            tokio::time::timeout(self.unseen_tip_wait, view.wait_for(|s| !unseen(s))).await;
        if let Ok(Ok(state)) = waited {
            return state
                .history
                .check(header, now)
                .map_err(TipProblem::into_rejection);
        }
        let prev_hash = ehash::share::hex_be(&header.prev_hash);
        let state = self.state.borrow();
        let newest = state.history.newest().map(|t| t.height);
        let behind = match (header.height, newest) {
            (Some(share), Some(Some(newest))) => share > newest,
            (Some(_), Some(None)) => true,
            _ => false,
        };
        Err(if behind {
            // Not the pool's fault: the share is for a block above any the
            // mint's provider announced, so it is the one behind (slow, or
            // its link silently dead). Asked again, the share passes once
            // it catches up, or is stale by then.
            Rejection::new(
                error_code::CHAIN_UNAVAILABLE,
                format!(
                    "the mint's template provider is behind: prev hash {prev_hash} is for height {}, above its newest tip's",
                    header.height.unwrap_or_default()
                ),
            )
        } else if state.live {
            Rejection::new(
                error_code::UNKNOWN_PREV_HASH,
                format!(
                    "prev hash {prev_hash} is no tip the mint's template provider announced (waited {:?})",
                    self.unseen_tip_wait
                ),
            )
        } else {
            Rejection::new(
                error_code::CHAIN_UNAVAILABLE,
                format!("the mint's template provider is down and prev hash {prev_hash} is not in its chain view yet"),
            )
        })
    }

    /// Logs the first share quoted on a missed tip: an operator sees which
    /// prev hashes were taken on the pool's word.
    fn log_missed(&self, prev_hash: [u8; 32], height: u32) {
        let mut logged = roles_common::lock(&self.missed_logged);
        if logged.contains(&prev_hash) {
            return;
        }
        if logged.len() == MISSED_LOGGED {
            logged.pop_front();
        }
        logged.push_back(prev_hash);
        tracing::info!(
            prev_hash = %ehash::share::hex_be(&prev_hash),
            height,
            "chain view: quoting shares on a tip the mint's template provider never announced to it, at a height between two it did (the mint or its link was down, or two blocks came at once)"
        );
    }
}

#[cfg(test)]
mod tests;

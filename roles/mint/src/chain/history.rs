//! The tips the mint remembers, newest first, and whether a share on one
//! of them is fresh for the pool that asks: decided without IO.

use std::collections::VecDeque;

use mint_quote_sv2::error_code;

use super::{
    FreshTip, HeaderOnTip, KeptTip, Pools, Tip, TipProblem, MAX_BLOCKS_BEHIND, NTIME_SLACK_SECS,
};
use crate::quote::Rejection;

/// Bitcoin's block interval, for the time [`MAX_BLOCKS_BEHIND`] blocks take.
const BLOCK_SECS: u32 = 600;

/// Whether a block at `height` is [`MAX_BLOCKS_BEHIND`] blocks or more
/// below `highest`.
fn too_far_below(highest: u32, height: u32) -> bool {
    highest.saturating_sub(height) as usize >= MAX_BLOCKS_BEHIND
}

/// The newest tips, newest first: at most [`MAX_BLOCKS_BEHIND`], none
/// that many blocks below the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipHistory {
    tips: VecDeque<KeptTip>,
    max_tip_age: usize,
}

/// What recording a tip changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The newest tip, announced again as it was.
    Nothing,
    /// The newest tip, announced again with another time or height.
    Updated,
    /// A new newest tip.
    New,
}

impl TipHistory {
    /// `max_tip_age` >= 1: shares may build on tips fewer blocks back.
    pub fn new(max_tip_age: usize, tips: impl IntoIterator<Item = KeptTip>) -> Self {
        let mut history = Self {
            tips: tips.into_iter().collect(),
            max_tip_age: max_tip_age.max(1),
        };
        history.forget_old();
        history
    }

    /// Keeps [`MAX_BLOCKS_BEHIND`] tips at most, and none that many blocks
    /// below the highest, or that much time (at a block each ten minutes)
    /// before the newest: tips stored before they had heights have times.
    fn forget_old(&mut self) {
        self.tips.truncate(MAX_BLOCKS_BEHIND);
        let highest = self.tips.iter().filter_map(|t| t.tip.height).max();
        let newest_time = self.newest().map(|t| t.time);
        let too_old = |t: &KeptTip| {
            let by_height = matches!((highest, t.tip.height),
                (Some(highest), Some(h)) if too_far_below(highest, h));
            let by_time = newest_time.is_some_and(|newest| {
                newest.saturating_sub(t.tip.time) >= MAX_BLOCKS_BEHIND as u32 * BLOCK_SECS
            });
            by_height || by_time
        };
        if let Some(first_too_old) = self.tips.iter().position(too_old) {
            self.tips.truncate(first_too_old);
        }
    }

    /// Records a tip; a new one ages the shares on older ones for the
    /// pools `quoted_for` gives (asked only then).
    pub fn record(&mut self, tip: Tip, quoted_for: impl FnOnce() -> Pools) -> Recorded {
        if let Some(newest) = self.tips.front_mut() {
            if newest.tip.prev_hash == tip.prev_hash {
                // Announced again (a reconnect, a restart): the same tip since
                // it first came, which aged the others as it did then.
                let again = Tip {
                    time: newest.tip.time.min(tip.time),
                    height: tip.height.or(newest.tip.height),
                    ..tip
                };
                if again == newest.tip {
                    return Recorded::Nothing;
                }
                newest.tip = again;
                return Recorded::Updated;
            }
        }
        // An older tip again (a provider back on an older chain): it moves
        // to the front.
        self.tips.retain(|t| t.tip.prev_hash != tip.prev_hash);
        self.tips.push_front(KeptTip {
            tip,
            quoted_for: quoted_for(),
        });
        self.forget_old();
        Recorded::New
    }

    /// A share of `pool` was quoted before the tip at `position` came,
    /// though after the one before it.
    pub fn mark_quoted(&mut self, position: usize, pool: Pools) {
        if let Some(kept) = self.tips.get_mut(position) {
            kept.quoted_for.0 |= pool.0;
        }
    }

    /// Adds the pools `others` (another mint process's tips) had shares
    /// quoted for before each tip this history holds too; whether any
    /// tip changed.
    pub fn absorb(&mut self, others: &[KeptTip]) -> bool {
        let mut changed = false;
        for kept in &mut self.tips {
            let theirs = others
                .iter()
                .find(|o| o.tip.prev_hash == kept.tip.prev_hash);
            if let Some(theirs) = theirs {
                let both = Pools(kept.quoted_for.0 | theirs.quoted_for.0);
                changed |= both != kept.quoted_for;
                kept.quoted_for = both;
            }
        }
        changed
    }

    pub fn newest(&self) -> Option<&Tip> {
        self.tips.front().map(|kept| &kept.tip)
    }

    pub fn tips(&self) -> impl ExactSizeIterator<Item = &KeptTip> {
        self.tips.iter()
    }

    /// The pools each tip was quoted for, newest first.
    #[cfg(test)]
    pub fn quoted_for_each(&self) -> Vec<Pools> {
        self.tips.iter().map(|kept| kept.quoted_for).collect()
    }

    /// Whether `header`, from `pool`, builds on a fresh tip, with its
    /// nbits, at an ntime within [`NTIME_SLACK_SECS`] of the tip's time
    /// and not past `now` (unix seconds) by more.
    pub fn check(
        &self,
        header: &HeaderOnTip,
        now: u32,
        pool: Pools,
    ) -> Result<FreshTip, TipProblem> {
        if let Some(position) = self
            .tips
            .iter()
            .position(|t| t.tip.prev_hash == header.prev_hash)
        {
            let tip = &self.tips[position].tip;
            let age = self.age(position, pool);
            self.check_fresh(header, now, age, &[tip.nbits], tip.time)?;
            return Ok(FreshTip::Announced);
        }
        let height = header.height.ok_or(TipProblem::Unseen)?;
        let highest = self.tips.iter().filter_map(|t| t.tip.height).max();
        if highest.is_some_and(|highest| too_far_below(highest, height)) {
            return Err(TipProblem::Refused(Rejection::new(
                error_code::STALE_PREV_HASH,
                format!(
                    "the share is for height {height}, {MAX_BLOCKS_BEHIND} blocks or more below the newest tip's"
                ),
            )));
        }
        if let Some(position) = self.tips.iter().position(|t| t.tip.height == Some(height)) {
            // A block race: the pool's node and the mint's took different
            // blocks below this height. The newest tip at that height stands
            // in for the one the mint never saw: their parent is one height.
            let rival = &self.tips[position].tip;
            let age = self.age(position, pool);
            self.check_fresh(header, now, age, &[rival.nbits], rival.time)?;
            return Ok(FreshTip::Rival { height });
        }
        let newer = self.gap_around(height).ok_or(TipProblem::Unseen)?;
        let (above, below) = (&self.tips[newer], &self.tips[newer + 1].tip);
        // The tip right after the gap came after the blocks the mint missed.
        let mut age = self.age(newer, pool);
        if let (true, Some(above_height)) = (above.quoted_for.contains(pool), above.tip.height) {
            age += above_height.saturating_sub(height) as usize;
        }
        // Either side of a difficulty change, the missed tip has one or the other.
        let nbits = [below.nbits, above.tip.nbits];
        self.check_fresh(header, now, age, &nbits, below.time)?;
        Ok(FreshTip::Missed { height })
    }

    /// The age for `pool` of shares on the tip at `position`: the blocks
    /// the newer tips stand for, of those that came while its shares were
    /// quoted.
    fn age(&self, position: usize, pool: Pools) -> usize {
        (0..position)
            .filter(|&i| self.tips[i].quoted_for.contains(pool))
            .map(|i| self.blocks_before(i))
            .sum()
    }

    /// The blocks between the tip at `position` and the one before it: 1,
    /// unless their heights say more (blocks the mint missed).
    fn blocks_before(&self, position: usize) -> usize {
        let height = |p: usize| self.tips.get(p).and_then(|t| t.tip.height);
        match (height(position), height(position + 1)) {
            (Some(newer), Some(older)) if newer > older => (newer - older) as usize,
            _ => 1,
        }
    }

    /// The position of the newer of two tips, announced one right after
    /// the other, whose heights `height` (at which no tip is) falls
    /// strictly between: so the mint saw the chain before and after a
    /// block it never saw. Tips with no height (stored before tips had
    /// them) make no such pair.
    fn gap_around(&self, height: u32) -> Option<usize> {
        let mut newer_then_older = self.tips.iter().zip(self.tips.iter().skip(1));
        newer_then_older.position(|(newer, older)| {
            matches!((older.tip.height, newer.tip.height),
                (Some(below), Some(above)) if below < height && height < above)
        })
    }

    /// The checks of a header on a tip `age` blocks back (for its pool),
    /// whose nbits is one of `nbits`, and whose time is `tip_time`.
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
                    "the share builds on a tip {age} blocks back, counting the blocks that came while the pool's shares were quoted; shares fewer than {} blocks back are quoted",
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
        if header.ntime < earliest {
            return refuse(
                error_code::NTIME_OUT_OF_RANGE,
                format!(
                    "ntime {} is before {earliest} (two hours before the tip's time {tip_time})",
                    header.ntime
                ),
            );
        }
        if header.ntime > latest {
            // Time clears it (or the mint's clock is slow): the pool asks
            // again rather than lose the share.
            return refuse(
                error_code::CHAIN_UNAVAILABLE,
                format!(
                    "ntime {} is after {latest}, two hours after the mint's clock {now} (is it right?): ask again later",
                    header.ntime
                ),
            );
        }
        Ok(())
    }
}

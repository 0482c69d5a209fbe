use std::sync::Arc;
use std::time::Duration;

use super::history::Recorded;
use super::stored::{self, TipLayout};
use super::*;

/// The pool that asks, and another.
const POOL: Pools = Pools(0b01);
const OTHER: Pools = Pools(0b10);

const NOW: u32 = 1_800_000_000;
const BITS: u32 = 0x1d20_0000;

/// Tip n: blocks on it are at height 100 + n.
fn tip(n: u8) -> Tip {
    Tip {
        prev_hash: [n; 32],
        nbits: BITS,
        time: NOW,
        height: Some(height(n)),
    }
}

fn height(n: u8) -> u32 {
    100 + u32::from(n)
}

/// A share on tip n.
fn on(n: u8) -> HeaderOnTip {
    HeaderOnTip {
        prev_hash: [n; 32],
        nbits: BITS,
        ntime: NOW,
        height: Some(height(n)),
    }
}

/// A share on a tip never announced, at the height of tip n.
fn unseen_at(n: u8) -> HeaderOnTip {
    HeaderOnTip {
        prev_hash: [200; 32],
        ..on(n)
    }
}

/// Tips 1..=n announced in order, each while the pool's shares were
/// quoted: n is the newest.
fn history(max_tip_age: usize, n: u8) -> TipHistory {
    let mut h = TipHistory::new(max_tip_age, []);
    for i in 1..=n {
        assert_eq!(h.record(tip(i), || POOL), Recorded::New);
    }
    h
}

/// `tips` as kept when each came while the pool's shares were quoted.
fn aging<const N: usize>(tips: [Tip; N]) -> [KeptTip; N] {
    tips.map(|tip| KeptTip {
        tip,
        quoted_for: POOL,
    })
}

fn refused(r: Result<FreshTip, TipProblem>) -> &'static str {
    match r {
        Err(TipProblem::Refused(r)) => r.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn shares_on_the_newest_tips_pass_and_older_ones_are_stale() {
    let h = history(3, 10);
    for fresh in [10, 9, 8] {
        assert_eq!(
            h.check(&on(fresh), NOW, POOL),
            Ok(FreshTip::Announced),
            "tip {fresh}"
        );
    }
    assert_eq!(refused(h.check(&on(7), NOW, POOL)), "stale-prev-hash");
    assert_eq!(h.check(&on(42), NOW, POOL), Err(TipProblem::Unseen));
}

#[test]
fn the_header_must_carry_its_tips_nbits_and_a_sane_ntime() {
    let h = history(3, 1);
    let other_bits = HeaderOnTip {
        nbits: 0x207f_ffff,
        ..on(1)
    };
    assert_eq!(refused(h.check(&other_bits, NOW, POOL)), "nbits-mismatch");
    let at = |ntime| HeaderOnTip { ntime, ..on(1) };
    assert_eq!(
        h.check(&at(NOW - NTIME_SLACK_SECS), NOW, POOL),
        Ok(FreshTip::Announced)
    );
    assert_eq!(
        h.check(&at(NOW + NTIME_SLACK_SECS), NOW, POOL),
        Ok(FreshTip::Announced)
    );
    for ntime in [NOW - NTIME_SLACK_SECS - 1, 0] {
        assert_eq!(
            refused(h.check(&at(ntime), NOW, POOL)),
            "ntime-out-of-range",
            "{ntime}"
        );
    }
    // Dated after the clock allows: time clears it (or the mint's clock
    // is slow), so the pool asks again rather than lose the share.
    assert_eq!(
        refused(h.check(&at(NOW + NTIME_SLACK_SECS + 1), NOW, POOL)),
        "chain-unavailable"
    );
    assert_eq!(
        h.check(&at(NOW + NTIME_SLACK_SECS + 1), NOW + 1, POOL),
        Ok(FreshTip::Announced)
    );
}

#[test]
fn a_tip_announced_again_is_not_new_and_a_returning_one_moves_to_the_front() {
    let mut h = history(2, 3);
    assert_eq!(h.record(tip(3), || OTHER), Recorded::Nothing);
    // Again later (a provider that restarted): the same tip since it first
    // came, as it aged the others then.
    let later = Tip {
        time: NOW + 600,
        ..tip(3)
    };
    assert_eq!(h.record(later, || Pools::NONE), Recorded::Nothing);
    assert_eq!(h.newest(), Some(&tip(3)));
    assert_eq!(h.check(&on(2), NOW, POOL), Ok(FreshTip::Announced));
    let mut without_height = history(2, 2);
    without_height.record(
        Tip {
            height: None,
            ..tip(3)
        },
        || POOL,
    );
    assert_eq!(
        without_height.record(later, || Pools::NONE),
        Recorded::Updated
    );
    assert_eq!(without_height.newest(), Some(&tip(3)));
    assert_eq!(without_height.tips().next().unwrap().quoted_for, POOL);
    // Tip 1 again (a provider that restarted on an older chain): newest now.
    assert_eq!(h.record(tip(1), || POOL), Recorded::New);
    assert_eq!(h.newest(), Some(&tip(1)));
    assert_eq!(h.tips().count(), 3);
    assert_eq!(h.check(&on(3), NOW, POOL), Ok(FreshTip::Announced));
    assert_eq!(refused(h.check(&on(2), NOW, POOL)), "stale-prev-hash");
}

#[test]
fn the_history_is_bounded_and_survives_its_bytes() {
    let mut h = history(2, 150);
    h.record(
        Tip {
            height: None,
            ..tip(151)
        },
        || Pools(0b110),
    );
    assert_eq!(h.tips().count(), 151);
    let pools = [1, 2, 3].map(stored::test_pool_key);
    let bytes = stored::to_bytes(&h, &pools);
    let tips = stored::tips_from_bytes(&bytes, TipLayout::Current, &pools).unwrap();
    assert_eq!(TipHistory::new(2, tips), h);
    let cut = &bytes[..bytes.len() - 1];
    assert_eq!(
        stored::tips_from_bytes(cut, TipLayout::Current, &pools),
        None
    );

    let mut h = history(2, 1);
    for n in 0..3_000 {
        h.record(numbered(n), || Pools::NONE);
    }
    assert_eq!(h.tips().count(), MAX_BLOCKS_BEHIND);
}

#[test]
fn tips_stored_before_they_had_heights_are_read_without() {
    // Prev hash, nbits, time: 40 bytes a tip, newest first.
    let mut stored = Vec::new();
    for n in [2u8, 1] {
        stored.extend_from_slice(&[n; 32]);
        stored.extend_from_slice(&BITS.to_le_bytes());
        stored.extend_from_slice(&NOW.to_le_bytes());
    }
    let without = |n| KeptTip {
        tip: Tip {
            height: None,
            ..tip(n)
        },
        quoted_for: Pools::ALL,
    };
    assert_eq!(
        stored::tips_from_bytes(&stored, TipLayout::WithoutHeights, &[]),
        Some(vec![without(2), without(1)])
    );
    assert_eq!(
        stored::tips_from_bytes(&[0; 44], TipLayout::WithoutHeights, &[]),
        None
    );
}

/// Tips 1 and 4 announced: the mint missed the blocks at heights 102 and 103.
fn with_missed_blocks(max_tip_age: usize) -> TipHistory {
    TipHistory::new(max_tip_age, aging([tip(4), tip(1)]))
}

#[test]
fn a_share_at_a_height_the_mint_passed_without_seeing_its_tip_is_quoted() {
    let h = with_missed_blocks(6);
    for n in [2, 3] {
        assert_eq!(
            h.check(&unseen_at(n), NOW, POOL),
            Ok(FreshTip::Missed { height: height(n) })
        );
    }
    // The tips it saw are as before.
    assert_eq!(h.check(&on(4), NOW, POOL), Ok(FreshTip::Announced));
    assert_eq!(h.check(&on(1), NOW, POOL), Ok(FreshTip::Announced));
    // Past the newest tip (a block announced late), or with no height.
    assert_eq!(h.check(&unseen_at(5), NOW, POOL), Err(TipProblem::Unseen));
    let no_height = HeaderOnTip {
        height: None,
        ..unseen_at(2)
    };
    assert_eq!(h.check(&no_height, NOW, POOL), Err(TipProblem::Unseen));
}

#[test]
fn a_missed_tip_is_as_fresh_as_its_height_and_checked_against_the_tips_beside_it() {
    // The pool's shares were quoted all along: blocks the mint missed count.
    let h = with_missed_blocks(2);
    assert!(h.check(&unseen_at(3), NOW, POOL).is_ok());
    assert_eq!(
        refused(h.check(&unseen_at(2), NOW, POOL)),
        "stale-prev-hash"
    );
    // Tip 1 is one tip back but three blocks: stale too.
    assert_eq!(refused(h.check(&on(1), NOW, POOL)), "stale-prev-hash");
    // Tip 4 came after an outage (none of the pool's shares quoted since
    // tip 1): the missed blocks make nothing older.
    let h = TipHistory::new(
        2,
        [
            KeptTip {
                tip: tip(4),
                quoted_for: OTHER,
            },
            aging([tip(1)])[0],
        ],
    );
    for share in [unseen_at(2), unseen_at(3), on(1), on(4)] {
        assert!(h.check(&share, NOW, POOL).is_ok(), "{share:?}");
    }
    assert_eq!(refused(h.check(&on(1), NOW, OTHER)), "stale-prev-hash");

    // Before and after a difficulty change, either nbits.
    let h = TipHistory::new(
        6,
        aging([
            Tip {
                nbits: BITS - 1,
                ..tip(4)
            },
            tip(1),
        ]),
    );
    for nbits in [BITS, BITS - 1] {
        let share = HeaderOnTip {
            nbits,
            ..unseen_at(2)
        };
        assert!(h.check(&share, NOW, POOL).is_ok(), "{nbits:#x}");
    }
    let other_bits = HeaderOnTip {
        nbits: BITS + 1,
        ..unseen_at(2)
    };
    assert_eq!(refused(h.check(&other_bits, NOW, POOL)), "nbits-mismatch");
    // Work done after the tip before the gap, two hours either way.
    const HOURS: u32 = 3600;
    let h = TipHistory::new(
        6,
        aging([
            tip(4),
            Tip {
                time: NOW - 3 * HOURS,
                ..tip(1)
            },
        ]),
    );
    let at = |ntime| HeaderOnTip {
        ntime,
        ..unseen_at(2)
    };
    assert!(h.check(&at(NOW - 5 * HOURS), NOW, POOL).is_ok());
    assert_eq!(
        refused(h.check(&at(NOW - 5 * HOURS - 1), NOW, POOL)),
        "ntime-out-of-range"
    );
}

#[test]
fn a_share_on_a_rival_of_a_tip_the_mint_saw_is_as_fresh_as_that_tip() {
    // The pool's node took another block than the mint's below heights
    // 108 to 110: its shares are as old as the mint's tips there.
    let h = history(3, 10);
    for n in [10, 9, 8] {
        assert_eq!(
            h.check(&unseen_at(n), NOW, POOL),
            Ok(FreshTip::Rival { height: height(n) }),
            "at tip {n}'s height"
        );
    }
    assert_eq!(
        refused(h.check(&unseen_at(7), NOW, POOL)),
        "stale-prev-hash"
    );
    // With that tip's nbits, and an ntime at most two hours before its
    // time: not another tip's.
    let own = |n: u8| Tip {
        nbits: BITS + u32::from(n),
        time: NOW - 600 * u32::from(10 - n),
        ..tip(n)
    };
    let h = TipHistory::new(3, aging([own(10), own(9), own(8)]));
    let rival_of_9 = |nbits, ntime| HeaderOnTip {
        nbits,
        ntime,
        ..unseen_at(9)
    };
    let (bits_9, time_9) = (own(9).nbits, own(9).time);
    assert!(h.check(&rival_of_9(bits_9, time_9), NOW, POOL).is_ok());
    assert_eq!(
        refused(h.check(&rival_of_9(own(10).nbits, time_9), NOW, POOL)),
        "nbits-mismatch"
    );
    let early = time_9 - NTIME_SLACK_SECS - 1;
    assert_eq!(
        refused(h.check(&rival_of_9(bits_9, early), NOW, POOL)),
        "ntime-out-of-range"
    );
    assert!(h
        .check(
            &rival_of_9(bits_9, own(10).time - NTIME_SLACK_SECS - 1),
            NOW,
            POOL
        )
        .is_ok());
    // The newest tip at a height stands in: a reorg the mint followed left
    // two there (tip 9 came back after tip 10, at its height).
    let reorged = TipHistory::new(
        2,
        aging([
            tip(11),
            Tip {
                height: Some(height(10)),
                ..tip(12)
            },
            tip(10),
            tip(9),
            tip(8),
        ]),
    );
    assert!(reorged.check(&unseen_at(10), NOW, POOL).is_ok());
    assert_eq!(
        reorged.check(&unseen_at(12), NOW, POOL),
        Err(TipProblem::Unseen)
    );
}

#[test]
fn only_two_tips_with_heights_announced_one_after_the_other_make_a_gap() {
    let unseen = |h: &TipHistory, n| h.check(&unseen_at(n), NOW, POOL);
    let no_height = |t: Tip| Tip { height: None, ..t };
    // Tips stored before they had heights, then the provider's tip with
    // one: the mint saw heights 101 to 103, it just cannot tell.
    let upgraded = TipHistory::new(
        6,
        aging([tip(4), no_height(tip(3)), no_height(tip(2)), tip(1)]),
    );
    for n in [2, 3] {
        assert_eq!(unseen(&upgraded, n), Err(TipProblem::Unseen), "{n}");
    }
    // A first start: nothing below the first tip.
    let first = TipHistory::new(6, aging([tip(4)]));
    assert_eq!(unseen(&first, 2), Err(TipProblem::Unseen));
    // Without heights at all.
    let no_heights = TipHistory::new(6, aging([tip(4), tip(1)].map(no_height)));
    assert_eq!(unseen(&no_heights, 2), Err(TipProblem::Unseen));
}

#[test]
fn tips_that_came_while_none_of_the_pools_shares_was_quoted_age_none() {
    // The pool was cut off (or the mint down) from tip 2 to tip 9; another
    // pool's shares were quoted meanwhile.
    let mut h = history(2, 1);
    for n in 2..=9 {
        h.record(tip(n), || OTHER);
    }
    h.record(tip(10), || POOL);
    assert_eq!(h.check(&on(1), NOW, POOL), Ok(FreshTip::Announced));
    assert_eq!(h.check(&on(5), NOW, POOL), Ok(FreshTip::Announced));
    assert_eq!(refused(h.check(&on(5), NOW, OTHER)), "stale-prev-hash");
    // Quoted again: the next tip makes them stale.
    h.record(tip(11), || Pools(0b11));
    assert_eq!(refused(h.check(&on(1), NOW, POOL)), "stale-prev-hash");
    assert_eq!(refused(h.check(&on(9), NOW, POOL)), "stale-prev-hash");
    assert_eq!(h.check(&on(10), NOW, POOL), Ok(FreshTip::Announced));
}

/// A tip known by its number n, beyond the 255 of [`tip`].
fn numbered(n: u32) -> Tip {
    let mut prev_hash = [0xee; 32];
    prev_hash[..4].copy_from_slice(&n.to_le_bytes());
    Tip {
        prev_hash,
        height: Some(1_000 + n),
        ..tip(0)
    }
}

#[test]
fn however_long_the_outage_a_tip_two_weeks_of_blocks_back_is_forgotten() {
    let mut h = history(2, 1);
    for n in 0..500 {
        h.record(numbered(n), || Pools::NONE);
    }
    assert_eq!(h.tips().count(), 501, "all kept");
    assert_eq!(h.check(&on(1), NOW, POOL), Ok(FreshTip::Announced));
    // A mint back after weeks: the tips before are too old, and so is
    // every height between them and its first tip.
    let mut h = history(2, 4);
    h.record(numbered(2_016 + 104 - 1_000), || Pools::NONE);
    assert_eq!(h.tips().count(), 1);
    for share in [on(4), unseen_at(3)] {
        assert_eq!(refused(h.check(&share, NOW, POOL)), "stale-prev-hash");
    }
    let mut h = history(2, 4);
    h.record(numbered(2_016 + 104 - 1_000 - 1), || Pools::NONE);
    assert_eq!(h.check(&on(4), NOW, POOL), Ok(FreshTip::Announced));
    assert_eq!(
        h.check(&unseen_at(200), NOW, POOL),
        Ok(FreshTip::Missed {
            height: height(200)
        })
    );
    // Tips stored before they had heights go by their time.
    let no_height = |n, time| Tip {
        height: None,
        time,
        ..tip(n)
    };
    const TWO_WEEKS: u32 = 2016 * 600;
    let mut h = TipHistory::new(6, aging([no_height(1, NOW - TWO_WEEKS)]));
    h.record(no_height(2, NOW - 1), || POOL);
    assert_eq!(h.tips().count(), 2);
    h.record(no_height(3, NOW), || POOL);
    assert_eq!(h.tips().count(), 2);
    assert_eq!(h.check(&on(1), NOW, POOL), Err(TipProblem::Unseen));
}

fn chain(wait_ms: u64) -> Arc<Chain> {
    Arc::new(Chain::new(history(3, 1), Duration::from_millis(wait_ms)))
}

#[tokio::test]
async fn a_share_on_a_tip_announced_while_it_waits_passes() {
    let chain = chain(5_000);
    chain.record(tip(1));
    let announcer = chain.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        announcer.record(tip(2));
    });
    assert_eq!(
        chain.check(&on(2), NOW, POOL).await.map(|c| c.fresh),
        Ok(FreshTip::Announced)
    );
}

#[tokio::test]
async fn a_share_waiting_for_its_tip_passes_once_a_later_one_shows_the_mint_missed_it() {
    // A restarted mint knows tip 1; the provider is at tip 3 by now.
    let chain = Arc::new(Chain::new(history(6, 1), Duration::from_millis(5_000)));
    let announcer = chain.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        announcer.record(tip(3));
    });
    assert_eq!(
        chain.check(&unseen_at(2), NOW, POOL).await.map(|c| c.fresh),
        Ok(FreshTip::Missed { height: height(2) })
    );
}

#[tokio::test]
async fn a_tip_never_announced_is_unknown_while_the_provider_is_up() {
    let chain = chain(50);
    assert!(chain.record(tip(1)).is_none(), "tip 1 was known already");
    assert!(chain.state().live);
    // Below the first tip the mint saw: no tip either side of it.
    let r = chain
        .check(&unseen_at(0), NOW, POOL)
        .await
        .map(|c| c.fresh)
        .unwrap_err();
    assert_eq!(r.code, "unknown-prev-hash");
}

#[tokio::test]
async fn a_share_above_every_tip_announced_asks_for_patience_while_the_provider_is_behind() {
    let chain = chain(50);
    chain.record(tip(1));
    assert!(chain.state().live);
    let r = chain
        .check(&on(9), NOW, POOL)
        .await
        .map(|c| c.fresh)
        .unwrap_err();
    assert_eq!(r.code, "chain-unavailable", "{}", r.message);
    assert!(mint_quote_sv2::error_code::is_transient(r.code));
    // Once the provider catches up with a different block below that
    // height, the share is a rival of the mint's tip there.
    chain.record(tip(10));
    assert_eq!(
        chain
            .check(&unseen_at(10), NOW, POOL)
            .await
            .map(|c| c.fresh),
        Ok(FreshTip::Rival { height: height(10) })
    );
}

#[tokio::test]
async fn a_share_too_far_above_every_tip_announced_is_the_pools_error() {
    let chain = chain(50);
    chain.record(tip(1));
    let above = |blocks| HeaderOnTip {
        height: Some(height(1) + blocks),
        ..unseen_at(1)
    };
    let r = chain
        .check(&above(MAX_BLOCKS_AHEAD - 1), NOW, POOL)
        .await
        .unwrap_err();
    assert_eq!(r.code, "chain-unavailable", "{}", r.message);
    let r = chain
        .check(&above(MAX_BLOCKS_AHEAD), NOW, POOL)
        .await
        .unwrap_err();
    assert_eq!(r.code, "unknown-prev-hash", "{}", r.message);
    assert!(!mint_quote_sv2::error_code::is_transient(r.code));
    // Nor when its newest tip is older than a day: it may be stuck.
    let later = NOW + 24 * 60 * 60;
    let r = chain
        .check(&above(MAX_BLOCKS_AHEAD), later, POOL)
        .await
        .unwrap_err();
    assert_eq!(r.code, "chain-unavailable", "{}", r.message);
    // Without its provider, the mint cannot tell.
    chain.lost();
    let r = chain
        .check(&above(MAX_BLOCKS_AHEAD), NOW, POOL)
        .await
        .unwrap_err();
    assert_eq!(r.code, "chain-unavailable", "{}", r.message);
}

#[tokio::test]
async fn without_its_provider_the_mint_quotes_known_tips_and_asks_for_patience_on_others() {
    let chain = chain(50);
    chain.record(tip(2));
    chain.lost();
    assert_eq!(
        chain.check(&on(2), NOW, POOL).await.map(|c| c.fresh),
        Ok(FreshTip::Announced)
    );
    let r = chain
        .check(&on(9), NOW, POOL)
        .await
        .map(|c| c.fresh)
        .unwrap_err();
    assert_eq!(r.code, "chain-unavailable");
    assert!(mint_quote_sv2::error_code::is_transient(r.code));
}

#[tokio::test]
async fn a_tip_ages_the_older_ones_for_the_pools_whose_shares_were_quoted_since_the_tip_before() {
    let chain = Arc::new(Chain::new(history(2, 1), Duration::from_millis(50)));
    let fresh = |pool| {
        let chain = chain.clone();
        async move { chain.check(&on(1), NOW, pool).await.map(|c| c.fresh) }
    };
    chain.record(tip(2));
    chain.record(tip(3));
    assert_eq!(fresh(POOL).await, Ok(FreshTip::Announced));
    let epoch = chain.check(&on(3), NOW, POOL).await.unwrap().epoch;
    chain.quoted(POOL, epoch);
    // The same tip again (a reconnect) is no new tip: the quote still counts.
    assert!(chain.record(tip(3)).is_none());
    chain.record(tip(4));
    assert_eq!(fresh(POOL).await, Ok(FreshTip::Announced));
    chain.quoted(POOL, chain.epoch());
    chain.quoted(OTHER, chain.epoch());
    chain.record(tip(5));
    // Nothing quoted since tip 5.
    let (_, stored) = chain.record(tip(6)).expect("a new tip");
    assert_eq!(
        stored.quoted_for_each(),
        [
            Pools::NONE,
            Pools(0b11),
            POOL,
            Pools::NONE,
            Pools::NONE,
            POOL
        ]
    );
    assert_eq!(
        chain.check(&on(1), NOW, POOL).await.unwrap_err().code,
        "stale-prev-hash"
    );
    assert_eq!(fresh(OTHER).await, Ok(FreshTip::Announced));
}

#[tokio::test]
async fn a_share_written_while_a_tip_came_counts_before_that_tip() {
    let chain = Arc::new(Chain::new(history(2, 1), Duration::from_millis(50)));
    let checked = chain.check(&on(1), NOW, POOL).await.unwrap();
    chain.record(tip(2));
    chain.record(tip(3));
    // Quoted once written, after tips 2 and 3 came: tip 2 ended the
    // interval it was checked in.
    chain.quoted(POOL, checked.epoch);
    let (_, stored) = chain.record(tip(4)).expect("a new tip");
    assert_eq!(
        stored.quoted_for_each(),
        [Pools::NONE, Pools::NONE, POOL, POOL]
    );
}

#[tokio::test]
async fn the_first_tip_after_the_mint_followed_no_chain_makes_nothing_older() {
    // Restarted knowing tip 1, the mint quotes a share of the pool before
    // its provider announces tip 9: the blocks between came while it was
    // down, and the pool could not deliver the shares on them.
    let chain = Arc::new(Chain::new(history(2, 1), Duration::from_millis(50)));
    chain.quoted(POOL, chain.epoch());
    chain.record(tip(9));
    let fresh = |share: HeaderOnTip| {
        let chain = chain.clone();
        async move { chain.check(&share, NOW, POOL).await.map(|c| c.fresh) }
    };
    assert_eq!(fresh(on(1)).await, Ok(FreshTip::Announced));
    assert_eq!(
        fresh(unseen_at(3)).await,
        Ok(FreshTip::Missed { height: height(3) })
    );
    // Its provider link down and back with tip 12: the same.
    chain.quoted(POOL, chain.epoch());
    chain.lost();
    chain.record(tip(12));
    assert_eq!(fresh(on(9)).await, Ok(FreshTip::Announced));
    // Followed since: the next tips count their blocks.
    for n in [13, 14] {
        chain.quoted(POOL, chain.epoch());
        chain.record(tip(n));
    }
    assert_eq!(fresh(on(13)).await, Ok(FreshTip::Announced));
    assert_eq!(fresh(on(9)).await.unwrap_err().code, "stale-prev-hash");
}

use std::sync::Arc;

use super::*;

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

/// Tips 1..=n announced in order, each while shares were quoted: n is
/// the newest.
fn history(max_tip_age: usize, n: u8) -> TipHistory {
    let mut h = TipHistory::new(max_tip_age, []);
    for i in 1..=n {
        assert!(h.record(tip(i), true));
    }
    h
}

/// `tips` as kept when each came while shares were quoted.
fn aging<const N: usize>(tips: [Tip; N]) -> [KeptTip; N] {
    tips.map(|tip| KeptTip { tip, ages: true })
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
            h.check(&on(fresh), NOW),
            Ok(FreshTip::Announced),
            "tip {fresh}"
        );
    }
    assert_eq!(refused(h.check(&on(7), NOW)), "stale-prev-hash");
    assert_eq!(h.check(&on(42), NOW), Err(TipProblem::Unseen));
}

#[test]
fn the_header_must_carry_its_tips_nbits_and_a_sane_ntime() {
    let h = history(3, 1);
    let other_bits = HeaderOnTip {
        nbits: 0x207f_ffff,
        ..on(1)
    };
    assert_eq!(refused(h.check(&other_bits, NOW)), "nbits-mismatch");
    let at = |ntime| HeaderOnTip { ntime, ..on(1) };
    assert_eq!(
        h.check(&at(NOW - NTIME_SLACK_SECS), NOW),
        Ok(FreshTip::Announced)
    );
    assert_eq!(
        h.check(&at(NOW + NTIME_SLACK_SECS), NOW),
        Ok(FreshTip::Announced)
    );
    for ntime in [NOW - NTIME_SLACK_SECS - 1, NOW + NTIME_SLACK_SECS + 1, 0] {
        assert_eq!(
            refused(h.check(&at(ntime), NOW)),
            "ntime-out-of-range",
            "{ntime}"
        );
    }
}

#[test]
fn a_tip_announced_again_is_not_new_and_a_returning_one_moves_to_the_front() {
    let mut h = history(2, 3);
    assert!(!h.record(tip(3), true));
    // Tip 1 again (a provider that restarted on an older chain): newest now.
    assert!(h.record(tip(1), true));
    assert_eq!(h.newest(), Some(&tip(1)));
    assert_eq!(h.tips().count(), 3);
    assert_eq!(h.check(&on(3), NOW), Ok(FreshTip::Announced));
    assert_eq!(refused(h.check(&on(2), NOW)), "stale-prev-hash");
}

#[test]
fn the_history_is_bounded_and_survives_its_bytes() {
    let mut h = history(2, 150);
    h.record(
        Tip {
            height: None,
            ..tip(151)
        },
        false,
    );
    // The newest does not age the others: one more is kept.
    assert_eq!(h.tips().count(), 2 + REMEMBERED_BEYOND + 1);
    let tips = TipHistory::tips_from_bytes(&h.to_bytes(), TipLayout::Current).unwrap();
    assert_eq!(TipHistory::new(2, tips), h);
    assert_eq!(
        TipHistory::tips_from_bytes(&[0; 46], TipLayout::Current),
        None
    );
    let mut bad_flag = [0; 45];
    bad_flag[44] = 2;
    assert_eq!(
        TipHistory::tips_from_bytes(&bad_flag, TipLayout::Current),
        None
    );
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
    let without = |n| Tip {
        height: None,
        ..tip(n)
    };
    assert_eq!(
        TipHistory::tips_from_bytes(&stored, TipLayout::WithoutHeights),
        Some(aging([without(2), without(1)]).to_vec())
    );
    assert_eq!(
        TipHistory::tips_from_bytes(&[0; 44], TipLayout::WithoutHeights),
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
            h.check(&unseen_at(n), NOW),
            Ok(FreshTip::Missed { height: height(n) })
        );
    }
    // The tips it saw are as before; at their heights, another is unseen.
    assert_eq!(h.check(&on(4), NOW), Ok(FreshTip::Announced));
    assert_eq!(h.check(&on(1), NOW), Ok(FreshTip::Announced));
    for n in [1, 4] {
        assert_eq!(h.check(&unseen_at(n), NOW), Err(TipProblem::Unseen));
    }
    // Past the newest tip (a block announced late), or with no height.
    assert_eq!(h.check(&unseen_at(5), NOW), Err(TipProblem::Unseen));
    let no_height = HeaderOnTip {
        height: None,
        ..unseen_at(2)
    };
    assert_eq!(h.check(&no_height, NOW), Err(TipProblem::Unseen));
}

#[test]
fn a_missed_tip_is_as_old_as_the_tip_after_it_and_checked_against_the_tips_beside_it() {
    // Blocks the mint missed do not count: tip 4 replaced the missed tips
    // (and tip 1, through them), so they are one aging tip back.
    let mut h = with_missed_blocks(2);
    for n in [2, 3] {
        assert!(h.check(&unseen_at(n), NOW).is_ok(), "{n}");
    }
    assert!(h.check(&on(1), NOW).is_ok());
    h.record(tip(5), true);
    for n in [2, 3] {
        assert_eq!(refused(h.check(&unseen_at(n), NOW)), "stale-prev-hash");
    }
    assert_eq!(refused(h.check(&on(1), NOW)), "stale-prev-hash");
    assert!(h.check(&on(4), NOW).is_ok());

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
        assert!(h.check(&share, NOW).is_ok(), "{nbits:#x}");
    }
    let other_bits = HeaderOnTip {
        nbits: BITS + 1,
        ..unseen_at(2)
    };
    assert_eq!(refused(h.check(&other_bits, NOW)), "nbits-mismatch");
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
    assert!(h.check(&at(NOW - 5 * HOURS), NOW).is_ok());
    assert_eq!(
        refused(h.check(&at(NOW - 5 * HOURS - 1), NOW)),
        "ntime-out-of-range"
    );
}

#[test]
fn only_two_tips_with_heights_announced_one_after_the_other_make_a_gap() {
    let unseen = |h: &TipHistory, n| h.check(&unseen_at(n), NOW);
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
fn tips_that_came_while_no_share_was_quoted_age_no_share() {
    // The pool was cut off (or the mint down) from tip 2 to tip 9.
    let mut h = history(2, 1);
    for n in 2..=9 {
        h.record(tip(n), false);
    }
    h.record(tip(10), true);
    assert_eq!(h.check(&on(1), NOW), Ok(FreshTip::Announced));
    assert_eq!(h.check(&on(5), NOW), Ok(FreshTip::Announced));
    // Quoting again: the next aging tip makes them stale.
    h.record(tip(11), true);
    assert_eq!(refused(h.check(&on(1), NOW)), "stale-prev-hash");
    assert_eq!(refused(h.check(&on(9), NOW)), "stale-prev-hash");
    assert_eq!(h.check(&on(10), NOW), Ok(FreshTip::Announced));
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
fn tips_that_age_nothing_are_kept_for_two_weeks_of_blocks() {
    let mut h = history(2, 1);
    for n in 0..500 {
        h.record(numbered(n), false);
    }
    assert_eq!(h.tips().count(), 501, "all kept");
    assert_eq!(h.check(&on(1), NOW), Ok(FreshTip::Announced));
    for n in 500..3_000 {
        h.record(numbered(n), false);
    }
    assert_eq!(h.tips().count(), MAX_TIPS_KEPT);
    assert_eq!(h.check(&on(1), NOW), Err(TipProblem::Unseen), "forgotten");
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
    assert_eq!(chain.check(&on(2), NOW).await, Ok(FreshTip::Announced));
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
        chain.check(&unseen_at(2), NOW).await,
        Ok(FreshTip::Missed { height: height(2) })
    );
}

#[tokio::test]
async fn a_tip_never_announced_is_unknown_while_the_provider_is_up() {
    let chain = chain(50);
    assert!(chain.record(tip(1)).is_none(), "tip 1 was known already");
    assert!(chain.state().live);
    let r = chain.check(&unseen_at(1), NOW).await.unwrap_err();
    assert_eq!(r.code, "unknown-prev-hash");
}

#[tokio::test]
async fn a_share_above_every_tip_announced_asks_for_patience_while_the_provider_is_behind() {
    let chain = chain(50);
    chain.record(tip(1));
    assert!(chain.state().live);
    let r = chain.check(&on(9), NOW).await.unwrap_err();
    assert_eq!(r.code, "chain-unavailable", "{}", r.message);
    assert!(mint_quote_sv2::error_code::is_transient(r.code));
    // Once the provider catches up with a different block at that height,
    // the share is refused for good.
    chain.record(tip(10));
    let r = chain.check(&unseen_at(10), NOW).await.unwrap_err();
    assert_eq!(r.code, "unknown-prev-hash");
}

#[tokio::test]
async fn without_its_provider_the_mint_quotes_known_tips_and_asks_for_patience_on_others() {
    let chain = chain(50);
    chain.record(tip(2));
    chain.lost();
    assert_eq!(chain.check(&on(2), NOW).await, Ok(FreshTip::Announced));
    let r = chain.check(&on(9), NOW).await.unwrap_err();
    assert_eq!(r.code, "chain-unavailable");
    assert!(mint_quote_sv2::error_code::is_transient(r.code));
}

#[tokio::test]
async fn a_tip_ages_the_older_ones_only_if_a_share_was_quoted_since_the_tip_before() {
    let chain = Arc::new(Chain::new(history(2, 1), Duration::from_millis(50)));
    chain.record(tip(2));
    chain.record(tip(3));
    assert_eq!(chain.check(&on(1), NOW).await, Ok(FreshTip::Announced));
    chain.quoted();
    // The same tip again (a reconnect) is no new tip: the quote still counts.
    assert!(chain.record(tip(3)).is_none());
    chain.record(tip(4));
    assert_eq!(chain.check(&on(1), NOW).await, Ok(FreshTip::Announced));
    chain.quoted();
    let stored = chain.record(tip(5)).expect("a new tip");
    assert_eq!(
        stored.tips().map(|kept| kept.ages).collect::<Vec<_>>(),
        [true, true, false, false, true]
    );
    let r = chain.check(&on(1), NOW).await.unwrap_err();
    assert_eq!(r.code, "stale-prev-hash");
}

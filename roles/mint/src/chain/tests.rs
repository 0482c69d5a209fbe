use std::sync::Arc;

use super::*;

const NOW: u32 = 1_800_000_000;
const BITS: u32 = 0x1d20_0000;

fn tip(n: u8) -> Tip {
    Tip {
        prev_hash: [n; 32],
        nbits: BITS,
        time: NOW,
    }
}

fn on(n: u8) -> HeaderOnTip {
    HeaderOnTip {
        prev_hash: [n; 32],
        nbits: BITS,
        ntime: NOW,
    }
}

/// Tips 1..=n announced in order: n is the newest.
fn history(max_tip_age: usize, n: u8) -> TipHistory {
    let mut h = TipHistory::new(max_tip_age, []);
    for i in 1..=n {
        assert!(h.record(tip(i)));
    }
    h
}

fn refused(r: Result<(), TipProblem>) -> &'static str {
    match r {
        Err(TipProblem::Refused(r)) => r.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn shares_on_the_newest_tips_pass_and_older_ones_are_stale() {
    let h = history(3, 10);
    for fresh in [10, 9, 8] {
        assert_eq!(h.check(&on(fresh), NOW), Ok(()), "tip {fresh}");
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
    assert_eq!(h.check(&at(NOW - NTIME_SLACK_SECS), NOW), Ok(()));
    assert_eq!(h.check(&at(NOW + NTIME_SLACK_SECS), NOW), Ok(()));
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
    assert!(!h.record(tip(3)));
    // Tip 1 again (a provider that restarted on an older chain): newest now.
    assert!(h.record(tip(1)));
    assert_eq!(h.newest(), Some(&tip(1)));
    assert_eq!(h.tips().count(), 3);
    assert_eq!(h.check(&on(3), NOW), Ok(()));
    assert_eq!(refused(h.check(&on(2), NOW)), "stale-prev-hash");
}

#[test]
fn the_history_is_bounded_and_survives_its_bytes() {
    let h = history(2, 200);
    assert_eq!(h.tips().count(), 2 + REMEMBERED_BEYOND);
    let tips = TipHistory::tips_from_bytes(&h.to_bytes()).unwrap();
    assert_eq!(TipHistory::new(2, tips), h);
    assert_eq!(TipHistory::tips_from_bytes(&[0; 41]), None);
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
    assert_eq!(chain.check(&on(2), NOW).await, Ok(()));
}

#[tokio::test]
async fn a_tip_never_announced_is_unknown_while_the_provider_is_up() {
    let chain = chain(50);
    assert!(chain.record(tip(1)).is_none(), "tip 1 was known already");
    assert!(chain.state().live);
    let r = chain.check(&on(9), NOW).await.unwrap_err();
    assert_eq!(r.code, "unknown-prev-hash");
}

#[tokio::test]
async fn without_its_provider_the_mint_quotes_known_tips_and_asks_for_patience_on_others() {
    let chain = chain(50);
    chain.record(tip(2));
    chain.lost();
    assert_eq!(chain.check(&on(2), NOW).await, Ok(()));
    let r = chain.check(&on(9), NOW).await.unwrap_err();
    assert_eq!(r.code, "chain-unavailable");
    assert!(mint_quote_sv2::error_code::is_transient(r.code));
}

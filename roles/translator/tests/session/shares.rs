//! Shares: translated, checked against the channel, answered and relayed.

use super::*;

#[test]
fn shares_become_sv2_shares_the_channel_validates_and_the_pool_answer_is_relayed() {
    let (mut h, en1) = Harness::ready("rig");
    assert_eq!(en1, 7u32.to_be_bytes());
    for i in 0..8u64 {
        let share = h.share(&en1, true);
        h.submit(100 + i, &share);
        let fwd = h.forwarded();
        // [zero padding][extranonce1][extranonce2]
        let mut expected = vec![0u8; ROLLABLE as usize - EXTRANONCE1_SIZE - 4];
        expected.extend(&en1);
        expected.extend(&share.extranonce2);
        assert_eq!(fwd.extranonce.as_bytes(), &expected[..]);
        assert_eq!(
            (fwd.channel_id, fwd.nonce, fwd.ntime),
            (CHANNEL, share.nonce, share.ntime)
        );
        assert!(
            h.sv1.iter().all(|v| v["id"] != json!(100 + i)),
            "answered before the pool"
        );
        h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id: CHANNEL,
            last_sequence_number: fwd.sequence_number,
            new_submits_accepted_count: 1,
            new_shares_sum: 1,
        }));
        assert_eq!(h.response(100 + i)["result"], true);
    }
    assert_eq!(h.session.share_counts(), (8, 0));
}

#[test]
fn one_success_acknowledges_every_earlier_share() {
    let (mut h, en1) = Harness::ready("rig");
    let mut last = 0;
    for i in 0..3u64 {
        let share = h.share(&en1, true);
        h.submit(10 + i, &share);
        last = h.forwarded().sequence_number;
    }
    h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
        channel_id: CHANNEL,
        last_sequence_number: last,
        new_submits_accepted_count: 3,
        new_shares_sum: 3,
    }));
    for i in 0..3u64 {
        assert_eq!(h.response(10 + i)["result"], true);
    }
}

#[test]
fn a_share_under_the_channel_target_is_answered_false_and_not_forwarded() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, false);
    h.submit(5, &share);
    assert!(h.upstream.is_empty());
    let r = h.response(5);
    assert_eq!(r["error"][0], 23, "{r}");
    assert_eq!(h.session.share_counts(), (0, 1));
}

/// What the stats are told of a share refused because the pool is behind.
const BACKLOG_REFUSAL: MinerStat = MinerStat::Share {
    accepted: false,
    work: 0,
    backlogged: true,
};

/// A share submitted as id 5 is forwarded, then refused by the pool with
/// `code` (the stats cleared in between).
fn refused_by_the_pool(code: &str) -> Harness {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, true);
    h.submit(5, &share);
    let seq = h.forwarded().sequence_number;
    h.stats.clear();
    h.pool_sends(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
        channel_id: CHANNEL,
        sequence_number: seq,
        error_code: str0255(code),
    }));
    h
}

#[test]
fn the_pools_refusal_reaches_the_miner_with_its_reason() {
    let mut h = refused_by_the_pool("stale-share");
    h.refused(5, "stale-share");
}

/// A share the translator turned away, the pool not reading, is answered
/// as never sent, and counted with those refused for a backlog.
#[test]
fn a_share_turned_away_for_a_pool_not_reading_is_told_so_and_counted_apart() {
    let mut h = refused_by_the_pool("pool-not-reading");
    h.refused(5, "not sent: the pool is not reading");
    assert_eq!(h.stats, vec![BACKLOG_REFUSAL]);
}

#[test]
fn unknown_jobs_bad_extranonce2_and_bad_params_get_errors_without_disconnecting() {
    let (mut h, en1) = Harness::ready("rig");
    let mut share = h.share(&en1, true);
    share.job_id = "ffff".into();
    h.submit(5, &share);
    assert_eq!(h.response(5)["error"][0], 21);
    let mut share = h.share(&en1, true);
    share.extranonce2 = vec![1, 2];
    h.submit(6, &share);
    assert_eq!(h.response(6)["error"][0], 20);
    h.line(json!({"id": 7, "method": "mining.submit", "params": ["rig", "1", "zz", "1", "1"]}));
    assert_eq!(h.response(7)["error"][0], -32602);
    h.line(json!({"id": 8, "method": "mining.nonsense", "params": []}));
    assert_eq!(h.response(8)["error"][0], -32601);
    assert!(h.upstream.is_empty());
    assert_eq!(h.closed, None);
}

#[test]
fn unparsable_json_disconnects_the_miner() {
    let mut h = Harness::new();
    let outs = h.session.on_line("{\"id\": 1, \"method\": ", 0);
    h.apply(outs);
    assert!(
        h.closed.as_deref().unwrap().contains("malformed"),
        "{:?}",
        h.closed
    );
}

#[test]
fn a_share_on_a_job_of_the_previous_chain_tip_is_answered_stale() {
    let (mut h, en1) = Harness::ready("rig");
    let old = h.share(&en1, true);
    h.job(2, POOL_PREFIX.len()); // new prevhash
    assert!(h.last_notify().clean);
    h.submit(40, &old);
    assert_eq!(h.refused(40, "stale")["error"][0], 21);
    assert!(h.upstream.is_empty());
}

#[test]
fn without_waiting_for_the_pool_a_valid_share_is_answered_at_once() {
    let mut h = Harness::with(SessionConfig {
        wait_for_pool: false,
        ..config()
    });
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());
    let share = h.share(&en1, true);
    h.submit(50, &share);
    assert_eq!(h.response(50)["result"], true);
    h.forwarded();
    // a low-difficulty share is still refused
    let weak = h.share(&en1, false);
    h.submit(51, &weak);
    assert_eq!(h.response(51)["error"][0], 23);
}

#[test]
fn shares_beyond_the_backlog_are_refused_and_counted_apart_in_stats() {
    let (mut h, en1) = Harness::ready("rig");
    for id in 0..MAX_PENDING_SUBMITS as u64 {
        let share = h.share(&en1, true);
        h.submit(100 + id, &share);
    }
    assert_eq!(h.upstream.len(), MAX_PENDING_SUBMITS, "all forwarded");
    h.stats.clear();
    let share = h.share(&en1, true);
    h.submit(1, &share);
    h.refused(1, "too many shares awaiting the pool");
    assert_eq!(h.stats, vec![BACKLOG_REFUSAL]);
    assert_eq!(h.closed, None);
    // Once the pool answers, the refused share goes through: it was not
    // kept as seen.
    let last = MAX_PENDING_SUBMITS as u32 - 1;
    h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
        channel_id: CHANNEL,
        last_sequence_number: last,
        new_submits_accepted_count: last + 1,
        new_shares_sum: 0,
    }));
    h.upstream.clear();
    h.submit(2, &share);
    h.forwarded();
}

//! The pool going away and coming back: the miner's session survives, or
//! is closed when the next pool has no room for it.

use super::*;

#[test]
fn an_upstream_reconnect_keeps_the_miner_and_its_extranonce1() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, true);
    h.submit(30, &share);
    h.forwarded();
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    h.refused(30, "lost");
    // A share on the old job, while there is no channel: stale (21), not a
    // failed login (24), which firmware may act on.
    h.submit(31, &share);
    assert_eq!(h.response(31)["error"][0], 21);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    h.take_open();
    h.open_success(&[9, 9, 9]);
    h.sv1.clear();
    h.job(5, 3);
    let job = h.last_notify();
    assert!(job.clean, "the first job after a reconnect is clean");
    assert!(
        job.coinb1.ends_with(&[9, 9, 9, 0, 0, 0, 0]),
        "pool prefix and padding in coinb1"
    );
    let share = h.share(&en1, true);
    h.submit(32, &share);
    assert_eq!(h.forwarded().channel_id, CHANNEL);
    assert_eq!(h.closed, None);
}

/// The pool's answer to an open asking for more extranonce than it has.
fn no_extranonce_room() -> MiningOwned {
    MiningOwned::OpenMiningChannelError(OpenMiningChannelErrorOwned {
        request_id: 1,
        error_code: str0255("min-extranonce-size-too-large"),
    })
}

/// After a failover, the first open the session sends: its min_extranonce_size.
fn reopen_after_failover(h: &mut Harness) -> u16 {
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => o.min_extranonce_size,
        other => panic!("expected an open, got {other:?}"),
    }
}

#[test]
fn a_subscribed_miner_is_moved_to_a_smaller_extranonce2_when_the_next_pool_has_less_room() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.extranonce.subscribe", "params": []}));
    assert_eq!(h.response(2)["result"], true);
    h.line(json!({"id": 3, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());

    // the next pool has 6 bytes to roll: 4 of extranonce1 and 2 of extranonce2
    assert_eq!(reopen_after_failover(&mut h), (EXTRANONCE1_SIZE + 4) as u16);
    h.pool_sends(no_extranonce_room());
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => {
            assert_eq!(o.min_extranonce_size, (EXTRANONCE1_SIZE + 2) as u16)
        }
        other => panic!("expected a second open asking for less, got {other:?}"),
    }
    assert_eq!(h.closed, None);
    h.sv1.clear();
    h.open_success_with(&[7; 10], 6);
    let set = h
        .sv1
        .iter()
        .find(|v| v["method"] == "mining.set_extranonce")
        .expect("a mining.set_extranonce");
    assert_eq!(set["params"], json!([hex::encode(&en1), 2]));
    h.job_with(2, 10, 6);
    let share = h.share_with(&en1, 2, true);
    h.submit(30, &share);
    assert_eq!(h.forwarded().extranonce.to_owned_bytes().len(), 6);
    // the old size is refused now
    let old = h.share_with(&en1, 4, true);
    h.submit(31, &old);
    h.refused(31, "extranonce2");
    assert_eq!(h.closed, None);
}

#[test]
fn a_miner_without_extranonce_subscription_is_closed_when_the_next_pool_has_no_room() {
    let (mut h, _) = Harness::ready("rig");
    reopen_after_failover(&mut h);
    h.pool_sends(no_extranonce_room());
    assert!(h.upstream.is_empty(), "no second open: {:?}", h.upstream);
    let reason = h
        .closed
        .expect("the miner is closed, so its firmware fails over");
    assert!(reason.contains("min-extranonce-size-too-large"), "{reason}");
}

#[test]
fn a_channel_the_pool_closes_is_reopened_a_few_times_then_the_miner_is_dropped() {
    let (mut h, _) = Harness::ready("rig");
    for _ in 0..3 {
        h.pool_sends(MiningOwned::CloseChannel(
            stratum_core::mining_sv2::CloseChannelOwned {
                channel_id: CHANNEL,
                reason_code: str0255("seen-shares-budget-exhausted"),
            },
        ));
        assert_eq!(h.closed, None);
        assert_eq!(h.take_open(), format!("{WALLET_KEY}.rig"));
        h.open_success(&POOL_PREFIX);
    }
    h.pool_sends(MiningOwned::CloseChannel(
        stratum_core::mining_sv2::CloseChannelOwned {
            channel_id: CHANNEL,
            reason_code: str0255("go-away"),
        },
    ));
    assert!(h.closed.as_deref().unwrap().contains("go-away"));
}

/// A channel reopened after a failover starts at the rate vardiff found, not
/// at the configured one: every miner of a farm at the configured rate
/// would flood the next pool with shares.
#[test]
fn a_reopened_channel_starts_at_the_rate_vardiff_found() {
    let (mut h, en1) = Harness::ready("rig");
    // Two shares every three seconds of 16 expected hashes: ~11 h/s, far
    // under the nominal 1000 h/s.
    let mut last_rate = None;
    for second in 0..180u64 {
        h.now += 1;
        if second % 3 != 2 {
            let share = h.share(&en1, true);
            h.submit(1000 + second, &share);
            h.forwarded();
        }
        let outs = h.session.on_tick(h.now);
        h.apply(outs);
        while let Some(m) = h.upstream.pop() {
            if let MiningOwned::UpdateChannel(u) = m {
                last_rate = Some(u.nominal_hash_rate);
            }
        }
    }
    let last_rate = last_rate.expect("vardiff lowered the rate");
    assert!(last_rate < 1000.0 / 4.0, "{last_rate}");
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => {
            assert_eq!(o.nominal_hash_rate, last_rate)
        }
        other => panic!("expected an open, got {other:?}"),
    }
}

/// An open sent just before the pool link was lost can be answered on the
/// next link besides the open sent after: the miner keeps the first
/// channel and closes the other.
#[test]
fn a_channel_opened_twice_is_closed() {
    let (mut h, en1) = Harness::ready("rig");
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    h.take_open();
    h.open_success(&POOL_PREFIX);
    let twice = OpenExtendedMiningChannelSuccessOwned {
        request_id: 2,
        channel_id: CHANNEL + 1,
        target: U256Owned::from(easy_target_le()),
        extranonce_size: ROLLABLE,
        extranonce_prefix: B032Owned::new(vec![7, 7, 7]).unwrap(),
        group_channel_id: 0,
    };
    h.pool_sends(MiningOwned::OpenExtendedMiningChannelSuccess(twice));
    match h.upstream.pop() {
        Some(MiningOwned::CloseChannel(c)) => assert_eq!(c.channel_id, CHANNEL + 1),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(h.session.channel_id(), Some(CHANNEL));
    // A refusal of either open leaves the miner on the channel it holds.
    h.pool_sends(MiningOwned::OpenMiningChannelError(
        OpenMiningChannelErrorOwned {
            request_id: 3,
            error_code: str0255("max-channels"),
        },
    ));
    assert_eq!(h.closed, None);
    assert_eq!(h.session.channel_id(), Some(CHANNEL));
    h.job(6, POOL_PREFIX.len());
    let share = h.share(&en1, true);
    h.submit(40, &share);
    assert_eq!(h.forwarded().channel_id, CHANNEL);
}

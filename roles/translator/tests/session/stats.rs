//! What the stats service hears of a session.

use super::*;

#[test]
fn the_stats_service_hears_the_authorized_miner_its_answered_shares_and_its_hashrate() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig-1", "x"]}));
    assert!(
        h.stats.is_empty(),
        "not authorized before the channel exists"
    );
    h.take_open();
    h.open_success(&POOL_PREFIX);
    assert!(h.session.announced());
    assert_eq!(
        std::mem::take(&mut h.stats),
        vec![
            MinerStat::Connected {
                name: "rig-1".into()
            },
            MinerStat::Hashrate(1000)
        ],
        "the SV1 username, and the starting estimate"
    );
    h.user = "rig-1".into();
    h.job(1, POOL_PREFIX.len());

    // Shares count once the pool answered: 1 in 16 hashes meets the target.
    let share = h.share(&en1, true);
    h.submit(10, &share);
    let fwd = h.forwarded();
    assert!(h.stats.is_empty(), "not answered yet");
    h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
        channel_id: CHANNEL,
        last_sequence_number: fwd.sequence_number,
        new_submits_accepted_count: 1,
        new_shares_sum: 1,
    }));
    let refused = MinerStat::Share {
        accepted: false,
        work: 0,
        backlogged: false,
    };
    assert_eq!(
        std::mem::take(&mut h.stats),
        vec![MinerStat::Share {
            accepted: true,
            work: 16,
            backlogged: false,
        }]
    );
    let share = h.share(&en1, true);
    h.submit(11, &share);
    let fwd = h.forwarded();
    h.pool_sends(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
        channel_id: CHANNEL,
        sequence_number: fwd.sequence_number,
        error_code: str0255("stale-share"),
    }));
    let weak = h.share(&en1, false);
    h.submit(12, &weak);
    assert_eq!(std::mem::take(&mut h.stats), vec![refused.clone(), refused]);

    // The estimate at least every minute, not more often without a decision.
    h.now += 60;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    assert!(
        matches!(&h.stats[..], [MinerStat::Hashrate(_)]),
        "{:?}",
        h.stats
    );
    // (A minute without shares at the channel's easy target is a drought:
    // vardiff steps down for a few seconds, each step a decision.)
    let mut quiet = 0;
    for _ in 0..10 {
        h.stats.clear();
        h.upstream.clear();
        h.now += 1;
        let outs = h.session.on_tick(h.now);
        h.apply(outs);
        let decided = h
            .upstream
            .iter()
            .any(|m| matches!(m, MiningOwned::UpdateChannel(_)));
        assert!(h.stats.is_empty() || decided, "{:?}", h.stats);
        quiet += usize::from(h.stats.is_empty());
    }
    assert!(quiet > 0);
    h.stats.clear();

    // A re-opened channel is the same miner: announced once.
    h.pool_sends(MiningOwned::CloseChannel(
        stratum_core::mining_sv2::CloseChannelOwned {
            channel_id: CHANNEL,
            reason_code: str0255("seen-shares-budget-exhausted"),
        },
    ));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    assert!(!h
        .stats
        .iter()
        .any(|s| matches!(s, MinerStat::Connected { .. })));
}

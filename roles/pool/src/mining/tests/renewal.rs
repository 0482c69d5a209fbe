//! A channel whose duplicate detection fills up on one chain tip is renewed
//! on a new extranonce prefix, never closed, and no retired share comes back.

use super::*;
use stratum_core::channels_sv2::seen_shares_budget;

/// What the pool sent channel 1's connection.
fn sent(actions: &[Action]) -> Vec<&MiningOwned> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(1, AnyMessageOwned::Mining(m)) => Some(m),
            _ => None,
        })
        .collect()
}

fn prefix(core: &PoolCore, channel_id: u32) -> Vec<u8> {
    let c = core.channels[&channel_id].extended().unwrap();
    c.get_extranonce_prefix().to_vec()
}

fn submit_standard(core: &mut PoolCore, share: SubmitSharesStandardOwned) -> Vec<Action> {
    let msg = MiningOwned::SubmitSharesStandard(share);
    on_message(core, 1, AnyMessageOwned::Mining(msg))
}

fn submit(core: &mut PoolCore, share: &SubmitSharesExtendedOwned) -> Vec<Action> {
    let msg = MiningOwned::SubmitSharesExtended(share.clone());
    on_message(core, 1, AnyMessageOwned::Mining(msg))
}

#[test]
fn a_channel_whose_duplicate_detection_fills_is_renewed_and_never_closed() {
    renewed_twice(1);
}

/// Renewed mid-batch: the batch's shares are acknowledged before the new
/// prefix, once.
#[test]
fn a_channel_renewed_mid_batch_acknowledges_the_batch_once() {
    renewed_twice(7);
}

fn renewed_twice(share_batch_size: usize) {
    let mut core = core();
    core.config.share_batch_size = share_batch_size;
    // At 3 shares a minute channels_sv2 keeps its smallest budget.
    core.config.shares_per_minute = 3.0;
    let budget = seen_shares_budget(3.0);
    let (channel_id, _, _) = open_on_tip(&mut core, NEVER);
    // The easiest target: every hash is a share, so a flood costs nothing.
    let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from([0xff; 32]),
    });
    let actions = on_message(&mut core, 1, AnyMessageOwned::Mining(update));
    let mut job = match &sent(&actions)[..] {
        [MiningOwned::SetTarget(_), MiningOwned::NewExtendedMiningJob(j)] => j.clone(),
        other => panic!("{other:?}"),
    };
    let mut prefixes = vec![prefix(&core, channel_id)];
    let mut retired = Vec::new();
    let (mut accepted, mut acknowledged, mut nonce) = (0, 0, 0);
    // Two renewals: three quarters of the budget each.
    while accepted < 2 * budget - budget / 2 + 100 {
        let (share, _) = share_from(&core, channel_id, &job, nonce, |_| true);
        nonce = share.nonce + 1;
        let actions = submit(&mut core, &share);
        assert!(
            actions.iter().any(|a| matches!(a, Action::Accepted(_))),
            "share {accepted} refused: {actions:?}"
        );
        accepted += 1;
        let sent = sent(&actions);
        for m in &sent {
            if let MiningOwned::SubmitSharesSuccess(s) = m {
                assert_eq!(s.last_sequence_number, share.sequence_number);
                acknowledged += s.new_submits_accepted_count;
            }
        }
        let Some(at) = sent
            .iter()
            .position(|m| matches!(m, MiningOwned::SetExtranoncePrefix(_)))
        else {
            continue;
        };
        // Renewed: the new prefix, then a job and the prevhash activating it.
        let MiningOwned::SetExtranoncePrefix(p) = sent[at] else {
            unreachable!()
        };
        assert_eq!(p.channel_id, channel_id);
        assert_eq!(p.extranonce_prefix.as_bytes(), prefix(&core, channel_id));
        assert!(!prefixes.contains(&prefix(&core, channel_id)));
        prefixes.push(prefix(&core, channel_id));
        job = match &sent[at + 1..] {
            [MiningOwned::NewExtendedMiningJob(j), MiningOwned::SetNewPrevHash(p)] => {
                assert_eq!(p.job_id, j.job_id);
                assert_eq!(p.prev_hash.to_array(), [7u8; 32], "the same chain tip");
                assert!(j.job_id > job.job_id, "no id names two jobs: {j:?}");
                j.clone()
            }
            other => panic!("{other:?}"),
        };
        retired.push(share);
    }
    // More shares than the budget on one tip, twice: renewed twice, never
    // closed, and every share acknowledged once (but those of the batch
    // still filling).
    assert_eq!(prefixes.len(), 3, "renewals");
    let unacknowledged = accepted - acknowledged as usize;
    assert!(
        unacknowledged < share_batch_size,
        "{accepted} accepted, {acknowledged} acknowledged"
    );
    assert!(core.channels.contains_key(&channel_id));
    assert_eq!(core.stats().channels_open, 1);
    // A share of a retired job, sent again, is refused as stale, not paid twice.
    for share in retired {
        let actions = submit(&mut core, &share);
        assert!(
            matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesError(e)]
                if e.sequence_number == share.sequence_number
                    && e.error_code.as_bytes() == b"stale-share"),
            "{actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Accepted(_))));
    }
    // A job id never sent is no retired job.
    let (mut unknown, _) = share_from(&core, channel_id, &job, nonce, |_| true);
    unknown.job_id = job.job_id + 1;
    let actions = submit(&mut core, &unknown);
    assert!(
        matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesError(e)]
            if e.error_code.as_bytes() == b"invalid-job-id"),
        "{actions:?}"
    );
    // Shares of the new jobs, named by the ids sent, are accepted.
    let (share, _) = share_from(&core, channel_id, &job, nonce, |_| true);
    let actions = submit(&mut core, &share);
    assert!(
        actions.iter().any(|a| matches!(a, Action::Accepted(_))),
        "{actions:?}"
    );
}

/// A standard channel is renewed too (its jobs carry their merkle root, so
/// no prefix message): its new job's id follows the old ones, and a share
/// of the retired job is refused as stale.
#[test]
fn a_renewed_standard_channel_numbers_its_jobs_on() {
    let mut core = core();
    core.config.shares_per_minute = 3.0;
    let due = seen_shares_budget(3.0) - seen_shares_budget(3.0) / 4;
    setup(&mut core, 1);
    core.on_new_template(template(1));
    core.on_set_new_prev_hash(prev(1, NEVER));
    let open = OpenStandardMiningChannelOwned {
        request_id: 1,
        user_identity: str0255_truncated(&format!("{KEY}.s")),
        nominal_hash_rate: 10.0,
        max_target: U256Owned::from([0xff; 32]),
    };
    let actions = on_message(&mut core, 1, AnyMessageOwned::Mining(open.into()));
    let channel_id = *core.channels.keys().max().unwrap();
    let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from([0xff; 32]),
    });
    let mut actions = [
        actions,
        on_message(&mut core, 1, AnyMessageOwned::Mining(update)),
    ]
    .concat();
    // A share of `job` (every hash is one at this target).
    let on = |job: &stratum_core::mining_sv2::NewMiningJobOwned, nonce| SubmitSharesStandardOwned {
        channel_id,
        sequence_number: nonce,
        job_id: job.job_id,
        nonce,
        ntime: 1_800_000_000,
        version: job.version,
    };
    let mut jobs = vec![];
    for nonce in 0..due as u32 {
        jobs.extend(sent(&actions).into_iter().filter_map(|m| match m {
            MiningOwned::NewMiningJob(j) => Some(j.clone()),
            _ => None,
        }));
        let job = jobs.last().expect("a job");
        actions = submit_standard(&mut core, on(job, nonce));
        assert!(
            actions.iter().any(|a| matches!(a, Action::Accepted(_))),
            "share {nonce} refused: {actions:?}"
        );
    }
    let renewed = sent(&actions)
        .into_iter()
        .find_map(|m| match m {
            MiningOwned::NewMiningJob(j) => Some(j.clone()),
            _ => None,
        })
        .expect("renewed: a new job");
    assert!(
        jobs.iter().all(|j| renewed.job_id > j.job_id),
        "{jobs:?} then {renewed:?}"
    );
    let retired = jobs.last().unwrap();
    let actions = submit_standard(&mut core, on(retired, u32::MAX));
    assert!(
        matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesError(e)]
            if e.error_code.as_bytes() == b"stale-share"),
        "{actions:?}"
    );
    let actions = submit_standard(&mut core, on(&renewed, u32::MAX - 1));
    assert!(
        actions.iter().any(|a| matches!(a, Action::Accepted(_))),
        "{actions:?}"
    );
}

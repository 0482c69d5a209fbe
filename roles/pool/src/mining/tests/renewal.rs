//! A channel whose duplicate detection fills up on one chain tip is renewed
//! on a new extranonce prefix, never closed, and no retired share comes back.

use super::*;
use roles_common::stats_publisher::now_ms;
use roles_common::sv2::setup_connection;
use stratum_core::channels_sv2::{
    chain_tip::ChainTip, seen_shares_budget, server::jobs::factory::JobFactory,
};
use stratum_core::job_declaration_sv2::{AllocateMiningJobTokenOwned, DeclareMiningJobOwned};
use stratum_core::parsers_sv2::JobDeclarationOwned;

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

/// A work-selecting connection (1) with a job declaration connection (1)
/// and an extended channel at the easiest target, on the tip of
/// `template(1)`; the channel's id.
fn open_custom_work_channel(core: &mut PoolCore) -> u32 {
    const REQUIRES_WORK_SELECTION: u32 = 0b10;
    const DECLARE_TX_DATA: u32 = 0b1;
    core.on_connect(1);
    on_message(core, 1, setup_message(REQUIRES_WORK_SELECTION));
    core.on_new_template(template(1));
    core.on_set_new_prev_hash(prev(1, NEVER));
    let jds = core.jds().expect("a job declarator");
    jds.on_connect(1);
    let peer = "127.0.0.1:1".parse().unwrap();
    let setup = setup_connection(
        Protocol::JobDeclarationProtocol,
        DECLARE_TX_DATA,
        peer,
        "",
        "",
    );
    let msg = AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(setup));
    assert!(jds.on_message(1, msg, now_ms()).close.is_none());
    let actions = on_message(core, 1, open_extended(&format!("{KEY}.w")));
    let channel_id = match &sent(&actions)[..] {
        // Custom work: no job of the pool's.
        [MiningOwned::OpenExtendedMiningChannelSuccess(s)] => s.channel_id,
        other => panic!("{other:?}"),
    };
    let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from([0xff; 32]),
    });
    let actions = on_message(core, 1, AnyMessageOwned::Mining(update));
    assert!(matches!(&sent(&actions)[..], [MiningOwned::SetTarget(_)]));
    channel_id
}

/// What jd-client does for a new custom job: declares `template(1)` at the
/// pool's job declarator, then sets it on the channel. The job as the
/// channel mines it, named by the id SetCustomMiningJob.Success gave.
fn set_custom_job(core: &mut PoolCore, channel_id: u32) -> NewExtendedMiningJobOwned {
    let (t, p, now) = (template(1), prev(1, NEVER), now_ms());
    let reward = TxOut {
        value: Amount::from_sat(t.coinbase_tx_value_remaining),
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    };
    let jd = |core: &mut PoolCore, m| {
        let reply = core
            .jds()
            .unwrap()
            .on_message(1, AnyMessageOwned::JobDeclaration(m), now);
        match <[AnyMessageOwned; 1]>::try_from(reply.messages) {
            Ok([AnyMessageOwned::JobDeclaration(m)]) => m,
            other => panic!("{other:?}"),
        }
    };
    let allocate = JobDeclarationOwned::AllocateMiningJobToken(AllocateMiningJobTokenOwned {
        user_identifier: str0255_truncated("jdc"),
        request_id: 1,
    });
    let JobDeclarationOwned::AllocateMiningJobTokenSuccess(allocated) = jd(core, allocate) else {
        panic!("no token")
    };
    // The full extranonce (prefix and rollable part) is what a coinbase
    // leaves room for, so a renewal's new prefix changes nothing here.
    let factory = JobFactory::new(true, Some("jdc".into()), None);
    let (prefix, suffix) = factory
        .new_coinbase_tx_prefix_and_suffix(t.clone(), vec![reward.clone()], 16)
        .unwrap();
    let declare = JobDeclarationOwned::DeclareMiningJob(DeclareMiningJobOwned {
        request_id: 2,
        mining_job_token: allocated.mining_job_token,
        version: t.version,
        coinbase_tx_prefix: prefix.try_into().unwrap(),
        coinbase_tx_suffix: suffix.try_into().unwrap(),
        wtxid_list: Seq064KOwned::new(Vec::new()).unwrap(),
        excess_data: B064KOwned::new(Vec::new()).unwrap(),
    });
    let JobDeclarationOwned::DeclareMiningJobSuccess(declared) = jd(core, declare) else {
        panic!("not declared")
    };
    let outputs = vec![reward, ehash::key_commitment_output(&KEY.parse().unwrap())];
    let tip = ChainTip::new(p.prev_hash, p.n_bits, p.header_timestamp);
    let token = declared.new_mining_job_token;
    let m = factory
        .new_custom_job(channel_id, 3, token, tip, t, outputs, 16)
        .unwrap();
    let msg = AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m));
    let actions = on_message(core, 1, msg);
    let job_id = match &sent(&actions)[..] {
        [MiningOwned::SetCustomMiningJobSuccess(s)] => s.job_id,
        other => panic!("{other:?}"),
    };
    let c = core.channels[&channel_id].extended().unwrap();
    let job = c.get_active_job().unwrap().get_job_message().clone();
    NewExtendedMiningJobOwned { job_id, ..job }
}

/// A custom-work channel is renewed too: the pool sends only the new
/// prefix (its jobs are the downstream's to set), and the custom job set
/// after it gets an id past every id given before.
#[test]
fn a_renewed_custom_work_channel_numbers_its_custom_jobs_on() {
    let mut core = PoolCore::new(CoreConfig {
        job_declaration: true,
        // At 3 shares a minute channels_sv2 keeps its smallest budget.
        shares_per_minute: 3.0,
        ..core().config
    })
    .unwrap();
    let channel_id = open_custom_work_channel(&mut core);
    let first = set_custom_job(&mut core, channel_id);
    let old_prefix = prefix(&core, channel_id);
    let mut nonce = 0;
    let (retired, renewal) = loop {
        assert!(nonce as usize <= seen_shares_budget(3.0), "never renewed");
        let (share, _) = share_from(&core, channel_id, &first, nonce, |_| true);
        nonce = share.nonce + 1;
        let actions = submit(&mut core, &share);
        assert!(
            actions.iter().any(|a| matches!(a, Action::Accepted(_))),
            "share of nonce {} refused: {actions:?}",
            share.nonce
        );
        let sent: Vec<MiningOwned> = sent(&actions).into_iter().cloned().collect();
        if sent
            .iter()
            .any(|m| matches!(m, MiningOwned::SetExtranoncePrefix(_)))
        {
            break (share, sent);
        }
    };
    // The share's acknowledgement, the new prefix, and no job or prevhash.
    match &renewal[..] {
        [MiningOwned::SubmitSharesSuccess(_), MiningOwned::SetExtranoncePrefix(p)] => {
            assert_eq!(p.channel_id, channel_id);
            assert_eq!(p.extranonce_prefix.as_bytes(), prefix(&core, channel_id));
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(prefix(&core, channel_id), old_prefix);
    assert_eq!(core.stats().channels_open, 1);

    let second = set_custom_job(&mut core, channel_id);
    assert!(
        second.job_id > first.job_id,
        "no id names two jobs: {} then {}",
        first.job_id,
        second.job_id
    );
    // A share of the retired job is stale, not paid again.
    let actions = submit(&mut core, &retired);
    assert!(
        matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesError(e)]
            if e.error_code.as_bytes() == b"stale-share"),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Accepted(_))));
    // A share of the new job, mined on the new prefix, is paid for its header.
    let (share, header) = share_from(&core, channel_id, &second, 0, |_| true);
    let actions = submit(&mut core, &share);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Accepted(a) if a.header == header)),
        "{actions:?}"
    );
    // An id never sent names no job.
    let unknown = SubmitSharesExtendedOwned {
        job_id: second.job_id + 1,
        ..share
    };
    let actions = submit(&mut core, &unknown);
    assert!(
        matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesError(e)]
            if e.error_code.as_bytes() == b"invalid-job-id"),
        "{actions:?}"
    );
}

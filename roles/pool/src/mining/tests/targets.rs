//! A share is paid at its job's target, and no header is a share of two
//! jobs of different targets: a miner would submit each hash under the job
//! paying most (at a fourfold retarget, 1.75 times its work on average).

use super::renewal::{
    any_accepted, declare_custom_job, open_custom_work_channel, paid_for, sent, set_declared_job,
    share_error, submit,
};
use super::*;

/// The target a hash meets once in `1 / (top + 1) * 256` tries.
fn target_below(top: u8) -> Target {
    let mut bytes = [0xff; 32];
    bytes[0] = top;
    Target::from_be_bytes(bytes)
}

/// A hash meets it once in four tries.
fn quarter() -> Target {
    target_below(0x3f)
}

/// Once in sixteen.
fn sixteenth() -> Target {
    target_below(0x0f)
}

/// The target the accepted share in `actions` is paid at.
fn paid_at(actions: &[Action]) -> Option<Target> {
    actions.iter().find_map(|a| match a {
        Action::Accepted(a) => Some(Target::from_le_bytes(a.target)),
        _ => None,
    })
}

/// UpdateChannel to `target`: what the pool sent back.
fn update_to(core: &mut PoolCore, channel_id: u32, target: Target) -> Vec<MiningOwned> {
    let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from(target.to_le_bytes()),
    });
    let actions = on_message(core, 1, AnyMessageOwned::Mining(update));
    assert_eq!(core.channels[&channel_id].target(), target);
    sent(&actions).into_iter().cloned().collect()
}

/// The channel's target set to `target` without a job, then the pool's
/// job on `template(id)`, whose transactions and coinbase are those of
/// every `template(_)`: the same headers as the channel's older jobs.
fn same_template_at(
    core: &mut PoolCore,
    channel_id: u32,
    target: Target,
    id: u64,
) -> NewExtendedMiningJobOwned {
    let channel = core.channels.get_mut(&channel_id).unwrap();
    assert_eq!(channel.update(0.0, Some(target)), Ok(target));
    let template = NewTemplateOwned {
        future_template: false,
        ..template(id)
    };
    let actions = core.on_new_template(template);
    match &sent(&actions)[..] {
        [MiningOwned::NewExtendedMiningJob(j)] => j.clone(),
        other => panic!("{other:?}"),
    }
}

/// A job sent on a retarget has a coinbase of its own: a hash found on an
/// older job is paid at that job's target, under the older job only, and
/// the older job's honest shares still coming are paid in full.
#[test]
fn a_job_sent_on_a_retarget_shares_no_header_with_the_jobs_before_it() {
    let mut core = core();
    let (a, _, _) = open_on_tip(&mut core, NEVER);
    let old = match &update_to(&mut core, a, quarter())[..] {
        [MiningOwned::SetTarget(_), MiningOwned::NewExtendedMiningJob(j)] => j.clone(),
        other => panic!("{other:?}"),
    };
    let new = match &update_to(&mut core, a, sixteenth())[..] {
        [MiningOwned::SetTarget(t), MiningOwned::NewExtendedMiningJob(j)] => {
            assert_eq!(
                Target::from_le_bytes(t.maximum_target.to_array()),
                sixteenth()
            );
            j.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(old.coinbase_tx_suffix, new.coinbase_tx_suffix);
    assert_eq!(core.channels[&a].job_target(old.job_id), Some(quarter()));
    assert_eq!(core.channels[&a].job_target(new.job_id), Some(sixteenth()));

    // A hash of the old job meeting the new, harder target, named as the
    // new job's: another header, never paid as this one.
    let (found, header) = share(&core, a, &old, |h| h <= sixteenth());
    let renamed = SubmitSharesExtendedOwned {
        job_id: new.job_id,
        ..found.clone()
    };
    let actions = submit(&mut core, &renamed);
    assert!(!paid_for(&actions, &header), "{actions:?}");
    // Under its own job it is paid at that job's target.
    let actions = submit(&mut core, &found);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(quarter()));
    // An honest share of the old job meeting only its target is paid.
    let (late, header) = share_from(&core, a, &old, found.nonce + 1, |h| {
        h > sixteenth() && h <= quarter()
    });
    let actions = submit(&mut core, &late);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(quarter()));
    // The new job's shares are paid at the new target (past the nonce of
    // the renamed share, which may have met it as a share of the new job).
    let (share, header) = share_from(&core, a, &new, found.nonce + 1, |h| h <= sixteenth());
    let actions = submit(&mut core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(sixteenth()));
}

/// Jobs with the same headers (templates alike in all but their id) have
/// one target, their newest's: an older job's shares must meet it and are
/// paid at it, harder or easier than the one they were sent with.
#[test]
fn jobs_with_the_same_headers_share_the_newest_jobs_target() {
    let mut core = core();
    let (a, opened, _) = open_on_tip(&mut core, NEVER);
    let easy = same_template_at(&mut core, a, quarter(), 2);
    assert_eq!(core.channels[&a].job_target(opened.job_id), Some(quarter()));
    let hard = same_template_at(&mut core, a, sixteenth(), 3);
    for job in [&opened, &easy, &hard] {
        assert_eq!(core.channels[&a].job_target(job.job_id), Some(sixteenth()));
    }

    // Meeting only the target the job was sent with is not enough now.
    let (short, _) = share(&core, a, &easy, |h| h > sixteenth() && h <= quarter());
    let actions = submit(&mut core, &short);
    assert_eq!(share_error(&actions).as_deref(), Some("difficulty-too-low"));
    assert!(!any_accepted(&actions));
    // A hash meeting the newest target is paid at it, under any of them.
    let (met, header) = share_from(&core, a, &easy, short.nonce + 1, |h| h <= sixteenth());
    let actions = submit(&mut core, &met);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(sixteenth()));

    // Easier again: the hard job's shares are paid at the easier target.
    let easier = same_template_at(&mut core, a, quarter(), 4);
    assert_eq!(core.channels[&a].job_target(hard.job_id), Some(quarter()));
    let (share, header) = share_from(&core, a, &hard, met.nonce + 1, |h| h <= sixteenth());
    let actions = submit(&mut core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(quarter()));
    assert_eq!(core.channels[&a].job_target(easier.job_id), Some(quarter()));
}

/// A custom job declared and set again after a retarget has the headers of the one set
/// before: both take the new target.
#[test]
fn a_custom_job_set_again_after_a_retarget_takes_the_older_ones_target_too() {
    let mut core = core_with_job_declaration();
    let channel_id = open_custom_work_channel(&mut core);
    let declared = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let first = set_declared_job(&mut core, channel_id, declared);
    assert!(matches!(
        &update_to(&mut core, channel_id, sixteenth())[..],
        [MiningOwned::SetTarget(_)]
    ));
    let (short, _) = share(&core, channel_id, &first, |h| h > sixteenth());
    let actions = submit(&mut core, &short);
    assert!(
        any_accepted(&actions),
        "set before the retarget: {actions:?}"
    );

    // Declared again (a token is good for one job), set again.
    let declared = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let second = set_declared_job(&mut core, channel_id, declared);
    assert_ne!(first.job_id, second.job_id);
    let (short, _) = share_from(&core, channel_id, &first, short.nonce + 1, |h| {
        h > sixteenth()
    });
    let actions = submit(&mut core, &short);
    assert_eq!(share_error(&actions).as_deref(), Some("difficulty-too-low"));
    let (met, header) = share_from(&core, channel_id, &first, short.nonce + 1, |h| {
        h <= sixteenth()
    });
    let actions = submit(&mut core, &met);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(sixteenth()));
}

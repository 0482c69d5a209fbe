//! A work-selecting channel keeps the header space of every custom job
//! until its tip moves; over every channel the pool keeps a bounded number
//! of them, freed as channels close, renew twice or move to a new tip.

use super::renewal::{declare_numbered_job, open_custom_work_channel, sent};
use super::*;
use crate::mining::channel::TOO_MANY_JOBS;

fn core_keeping_custom_jobs(max_custom_jobs: usize) -> PoolCore {
    PoolCore::new(CoreConfig {
        max_custom_jobs,
        ..core_with_job_declaration().config
    })
    .unwrap()
}

/// A second custom-work channel on connection 1.
fn open_another(core: &mut PoolCore) -> u32 {
    let actions = on_message(core, 1, open_extended(&format!("{KEY}.other")));
    match &sent(&actions)[..] {
        [MiningOwned::OpenExtendedMiningChannelSuccess(s)] => s.channel_id,
        other => panic!("{other:?}"),
    }
}

/// Sets the job numbered `number` on the tip of `p`: the refusal code if
/// the channel refuses it.
fn set_numbered(
    core: &mut PoolCore,
    channel_id: u32,
    p: SetNewPrevHashOwned,
    number: u64,
) -> Result<(), String> {
    let m = declare_numbered_job(core, channel_id, p, Some(number));
    let msg = AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m));
    match &sent(&on_message(core, 1, msg))[..] {
        [MiningOwned::SetCustomMiningJobSuccess(_)] => Ok(()),
        [MiningOwned::SetCustomMiningJobError(e)] => {
            Err(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_jobs_are_bounded_over_all_channels_and_freed_as_a_channel_closes() {
    let mut core = core_keeping_custom_jobs(3);
    let a = open_custom_work_channel(&mut core);
    let b = open_another(&mut core);
    let tip = || prev(1, NEVER);
    set_numbered(&mut core, a, tip(), 1).unwrap();
    set_numbered(&mut core, a, tip(), 2).unwrap();
    set_numbered(&mut core, b, tip(), 3).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 3);

    // Full: a job with headers of its own is refused, on either channel;
    // one with headers the channel has, at their target, is not.
    assert_eq!(
        set_numbered(&mut core, b, tip(), 4),
        Err(TOO_MANY_JOBS.to_string())
    );
    assert_eq!(
        set_numbered(&mut core, a, tip(), 4),
        Err(TOO_MANY_JOBS.to_string())
    );
    set_numbered(&mut core, a, tip(), 1).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 3);

    let close = MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id: b,
        reason_code: str0255_truncated("done"),
    });
    on_message(&mut core, 1, AnyMessageOwned::Mining(close));
    assert_eq!(core.stats().custom_jobs_held, 2);
    set_numbered(&mut core, a, tip(), 4).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 3);

    core.on_disconnect(1);
    assert_eq!(core.stats().custom_jobs_held, 0);
}

#[test]
fn a_channel_moving_to_a_new_tip_frees_the_custom_jobs_of_the_old_one() {
    let mut core = core_keeping_custom_jobs(2);
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    set_numbered(&mut core, a, prev(1, NEVER), 2).unwrap();
    assert_eq!(
        set_numbered(&mut core, a, prev(1, NEVER), 3),
        Err(TOO_MANY_JOBS.to_string())
    );

    let moved = SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    };
    core.on_new_template(template(2));
    core.on_set_new_prev_hash(moved.clone());
    set_numbered(&mut core, a, moved.clone(), 3).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 1);
    set_numbered(&mut core, a, moved, 4).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 2);
}

/// A renewal keeps the jobs set before it (they are paid until the tip
/// moves) and counts the new prefix's apart.
#[test]
fn a_renewed_channel_counts_the_custom_jobs_of_both_prefixes() {
    let mut core = core_keeping_custom_jobs(3);
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    let renewed = core.renew_channel(a);
    assert!(
        matches!(&sent(&renewed)[..], [MiningOwned::SetExtranoncePrefix(_)]),
        "{renewed:?}"
    );
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    set_numbered(&mut core, a, prev(1, NEVER), 2).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 3);
    assert_eq!(
        set_numbered(&mut core, a, prev(1, NEVER), 3),
        Err(TOO_MANY_JOBS.to_string())
    );
    // A second renewal drops the first prefix's jobs.
    core.renew_channel(a);
    assert_eq!(core.stats().custom_jobs_held, 2);
    set_numbered(&mut core, a, prev(1, NEVER), 3).unwrap();
}

/// A channel's first job on a tip is taken even with the pool full: a
/// client always has a job to mine, and the count passes the bound by one
/// a channel at most.
#[test]
fn a_channels_first_job_on_a_tip_is_taken_with_the_pool_full() {
    let mut core = core_keeping_custom_jobs(1);
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    let b = open_another(&mut core);
    set_numbered(&mut core, b, prev(1, NEVER), 2).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 2);
    assert_eq!(
        set_numbered(&mut core, b, prev(1, NEVER), 3),
        Err(TOO_MANY_JOBS.to_string())
    );
}

//! The pool keeps the header space of every custom job set on its tip,
//! over every channel (closed ones too: a prefix comes back to a channel
//! of the same key), against a bound over all and one per peer address,
//! and forgets them when its tip moves. A prefix that comes back brings no
//! custom job back at another target.

use super::renewal::{
    any_accepted, connect_work_selecting, declare_numbered_job, open_custom_work_channel,
    open_custom_work_channel_at, open_custom_work_channel_on, prefix, sent, sent_to,
    set_declared_job,
};
use super::*;
use crate::mining::channel::{HEADERS_AT_ANOTHER_TARGET, TOO_MANY_JOBS};

fn core_keeping_custom_jobs(max_custom_jobs: usize) -> PoolCore {
    PoolCore::new(CoreConfig {
        max_custom_jobs,
        ..core_with_job_declaration().config
    })
    .unwrap()
}

/// Sets the job numbered `number` on the tip of `p`: the refusal code if
/// the channel refuses it.
fn set_numbered(
    core: &mut PoolCore,
    channel_id: u32,
    p: SetNewPrevHashOwned,
    number: u64,
) -> Result<(), String> {
    set_numbered_on(core, 1, channel_id, p, number)
}

/// [`set_numbered`] on a channel of connection `conn`.
fn set_numbered_on(
    core: &mut PoolCore,
    conn: ConnId,
    channel_id: u32,
    p: SetNewPrevHashOwned,
    number: u64,
) -> Result<(), String> {
    let m = declare_numbered_job(core, channel_id, p, Some(number));
    let msg = AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m));
    match &sent_to(&on_message(core, conn, msg), conn)[..] {
        [MiningOwned::SetCustomMiningJobSuccess(_)] => Ok(()),
        [MiningOwned::SetCustomMiningJobError(e)] => {
            Err(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        other => panic!("{other:?}"),
    }
}

/// The pool's tip moves on (template 2, on another prev hash): its
/// SetNewPrevHash.
fn move_tip(core: &mut PoolCore) -> SetNewPrevHashOwned {
    let moved = SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    };
    core.on_new_template(template(2));
    core.on_set_new_prev_hash(moved.clone());
    moved
}

/// At a harder target, the job numbered 1 (set before on the tip of `p`)
/// is refused for its headers; one numbered 2 is taken.
fn job_1_refused_at_a_harder_target(core: &mut PoolCore, channel_id: u32, p: SetNewPrevHashOwned) {
    let harder = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from([0x0f; 32]),
    });
    on_message(core, 1, AnyMessageOwned::Mining(harder));
    assert_eq!(
        set_numbered(core, channel_id, p.clone(), 1),
        Err(HEADERS_AT_ANOTHER_TARGET.to_string())
    );
    set_numbered(core, channel_id, p, 2).unwrap();
}

#[test]
fn custom_jobs_are_bounded_over_all_channels_and_kept_for_the_tip() {
    let mut core = core_keeping_custom_jobs(3);
    let a = open_custom_work_channel(&mut core);
    let b = open_custom_work_channel_on(&mut core, 1);
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

    // A closed channel's jobs are kept until the tip moves.
    close_channel(&mut core, 1, b);
    assert_eq!(core.stats().custom_jobs_held, 3);
    assert_eq!(
        set_numbered(&mut core, a, tip(), 4),
        Err(TOO_MANY_JOBS.to_string())
    );
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

    let moved = move_tip(&mut core);
    set_numbered(&mut core, a, moved.clone(), 3).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 1);
    set_numbered(&mut core, a, moved, 4).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 2);
}

/// A renewal keeps the jobs set before it (they are paid until the tip
/// moves); the same job on the new prefix has headers of its own, and the
/// first job on a new prefix has the room of a first job.
#[test]
fn a_renewed_channel_keeps_the_custom_jobs_of_every_prefix_for_the_tip() {
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
    core.renew_channel(a);
    assert_eq!(core.stats().custom_jobs_held, 3);
    // The first job on the new prefix is taken (the old prefix's go
    // stale), even with the pool full; the next is not.
    set_numbered(&mut core, a, prev(1, NEVER), 3).unwrap();
    assert_eq!(
        set_numbered(&mut core, a, prev(1, NEVER), 4),
        Err(TOO_MANY_JOBS.to_string())
    );
}

/// A channel renewed back onto a prefix it held on the tip (freed two
/// renewals back), now at another target, cannot set a job it set there
/// before: its held-back hashes would be paid at the new target.
#[test]
fn a_prefix_that_comes_back_brings_no_custom_job_back_at_another_target() {
    let mut core = PoolCore::new(CoreConfig {
        max_channels: 3,
        ..core_with_job_declaration().config
    })
    .unwrap();
    let a = open_custom_work_channel(&mut core);
    let first_prefix = prefix(&core, a);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    for _ in 0..3 {
        core.renew_channel(a);
    }
    assert_eq!(prefix(&core, a), first_prefix, "back on its first prefix");
    job_1_refused_at_a_harder_target(&mut core, a, prev(1, NEVER));
}

/// A channel's first job on a tip is taken even with the pool full: a
/// client should have a job to mine.
#[test]
fn a_channels_first_job_on_a_tip_is_taken_with_the_pool_full() {
    let mut core = core_keeping_custom_jobs(1);
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();
    let b = open_custom_work_channel_on(&mut core, 1);
    set_numbered(&mut core, b, prev(1, NEVER), 2).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 2);
    assert_eq!(
        set_numbered(&mut core, b, prev(1, NEVER), 3),
        Err(TOO_MANY_JOBS.to_string())
    );
}

/// Channels opened, given a first job and closed, one after another, pass
/// the bound only by as many first jobs as the pool has channel places.
#[test]
fn first_jobs_of_channels_come_and_gone_are_bounded_too() {
    let mut core = PoolCore::new(CoreConfig {
        max_custom_jobs: 1,
        max_channels: 4,
        ..core_with_job_declaration().config
    })
    .unwrap();
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 0).unwrap();
    let mut refused = 0;
    for number in 1..=10 {
        let b = open_custom_work_channel_on(&mut core, 1);
        match set_numbered(&mut core, b, prev(1, NEVER), number) {
            Ok(()) => {}
            Err(code) => {
                assert_eq!(code, TOO_MANY_JOBS);
                refused += 1;
            }
        }
        close_channel(&mut core, 1, b);
    }
    assert_eq!(core.stats().custom_jobs_held, 1 + 4);
    assert_eq!(refused, 10 - 4);
}

/// A tip the pool left and came back to (a reorg, a template provider a
/// block behind) has its custom jobs' headers again: a job set there before
/// cannot come back at another target.
#[test]
fn a_tip_that_comes_back_keeps_its_custom_jobs_targets() {
    let mut core = core_with_job_declaration();
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, prev(1, NEVER), 1).unwrap();

    move_tip(&mut core);
    assert_eq!(core.stats().custom_jobs_held, 0);
    core.on_new_template(template(3));
    core.on_set_new_prev_hash(prev(3, NEVER));
    assert_eq!(core.stats().custom_jobs_held, 1);

    job_1_refused_at_a_harder_target(&mut core, a, prev(3, NEVER));
}

/// The connections of one address set at most `max_custom_jobs_per_address`
/// custom jobs with headers of their own on a tip, over their channels
/// (closed ones' too), and `max_channels_per_connection` more first jobs:
/// so one client, however many connections it opens, cannot take the room
/// of the others. A tip that comes back has its counts back.
#[test]
fn one_address_cannot_take_the_custom_job_room_of_the_others() {
    let mut core = PoolCore::new(CoreConfig {
        max_custom_jobs_per_address: 2,
        max_channels_per_connection: 3,
        ..core_with_job_declaration().config
    })
    .unwrap();
    let other: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let tip = || prev(1, NEVER);
    let a = open_custom_work_channel(&mut core);
    set_numbered(&mut core, a, tip(), 1).unwrap();
    let b = open_custom_work_channel_on(&mut core, 1);
    set_numbered(&mut core, b, tip(), 2).unwrap();
    close_channel(&mut core, 1, b);
    assert_eq!(
        set_numbered(&mut core, a, tip(), 3),
        Err(TOO_MANY_JOBS.to_string())
    );
    // A job with headers it set before is no new one.
    set_numbered(&mut core, a, tip(), 1).unwrap();

    // A second connection from the address: first jobs only, three at most.
    connect_work_selecting(&mut core, 2, LOCAL);
    let c = open_custom_work_channel_on(&mut core, 2);
    set_numbered_on(&mut core, 2, c, tip(), 3).unwrap();
    assert_eq!(
        set_numbered_on(&mut core, 2, c, tip(), 4),
        Err(TOO_MANY_JOBS.to_string())
    );
    let d = open_custom_work_channel_on(&mut core, 1);
    set_numbered(&mut core, d, tip(), 4).unwrap();
    let e = open_custom_work_channel_on(&mut core, 2);
    set_numbered_on(&mut core, 2, e, tip(), 5).unwrap();
    let h = open_custom_work_channel_on(&mut core, 2);
    assert_eq!(
        set_numbered_on(&mut core, 2, h, tip(), 6),
        Err(TOO_MANY_JOBS.to_string())
    );

    // Another address sets its own.
    connect_work_selecting(&mut core, 3, other);
    let f = open_custom_work_channel_on(&mut core, 3);
    set_numbered_on(&mut core, 3, f, tip(), 7).unwrap();
    set_numbered_on(&mut core, 3, f, tip(), 8).unwrap();
    assert_eq!(core.stats().custom_jobs_held, 7);

    // The next tip: counts start over; back on the first, they are back.
    let moved = move_tip(&mut core);
    set_numbered(&mut core, a, moved.clone(), 9).unwrap();
    set_numbered(&mut core, a, moved, 10).unwrap();
    core.on_new_template(template(3));
    core.on_set_new_prev_hash(prev(3, NEVER));
    assert_eq!(
        set_numbered(&mut core, a, prev(3, NEVER), 11),
        Err(TOO_MANY_JOBS.to_string())
    );
    let g = open_custom_work_channel_on(&mut core, 3);
    set_numbered_on(&mut core, 3, g, prev(3, NEVER), 11).unwrap();
}

/// A block found on a custom job is its client's to publish (the pool's
/// template provider knows none of its transactions): nothing goes to the
/// template provider, and the block is counted, the stats told its height
/// from its coinbase.
#[test]
fn a_block_on_a_custom_job_is_counted_and_left_to_its_client() {
    let mut core = core_with_job_declaration();
    let channel_id = open_custom_work_channel_at(&mut core, EASY);
    let m = declare_numbered_job(&mut core, channel_id, prev(1, EASY), None);
    let job = set_declared_job(&mut core, channel_id, m);
    let network = Target::from_compact(CompactTarget::from_consensus(EASY));
    let (share, header) = share_from(&core, channel_id, &job, 0, |h| h <= network);
    let message = MiningOwned::SubmitSharesExtended(share);
    let actions = core.on_message(1, AnyMessageOwned::Mining(message));
    assert!(any_accepted(&actions), "{actions:?}");
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::SubmitSolution(_))));
    assert_eq!(core.stats().blocks_found, 1);
    assert!(stats_events(&actions).contains(&StatsEvent::BlockFound {
        channel_id,
        height: 1,
        block_hash: sha256d::Hash::hash(&header).to_byte_array(),
    }));
}

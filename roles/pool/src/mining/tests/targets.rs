//! A share is paid at its job's target, and no header is a share of two
//! jobs of different targets: a miner would submit each hash under the job
//! paying most, or hold back an easy job's hashes until a job with its
//! headers came at a harder target (at a fourfold step, 1.75 times its
//! work on average).

use super::renewal::{
    any_accepted, core_of_capacity, declare_custom_job, declare_numbered_job, job_in,
    open_custom_work_channel, paid_for, prefix, sent, set_declared_job, share_error, submit,
};
use super::*;
use crate::mining::channel::{HEADERS_AT_ANOTHER_TARGET, MAX_CUSTOM_SPACES, TOO_MANY_JOBS};

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
/// every `template(_)` (a template provider sending a template again).
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

/// The pool numbers a job's coinbase by the channel's target: a template
/// sent again gets the headers of the job before it only at the same
/// target, and a target left and come back to gets a number of its own.
#[test]
fn the_pools_jobs_share_headers_only_at_one_target() {
    let mut core = core();
    let (a, opened, at_open) = open_on_tip(&mut core, NEVER);
    let again = same_template_at(&mut core, a, at_open, 2);
    assert_eq!(again.coinbase_tx_suffix, opened.coinbase_tx_suffix);
    let hard = same_template_at(&mut core, a, sixteenth(), 3);
    assert_ne!(hard.coinbase_tx_suffix, opened.coinbase_tx_suffix);
    let hard_again = same_template_at(&mut core, a, sixteenth(), 4);
    assert_eq!(hard_again.coinbase_tx_suffix, hard.coinbase_tx_suffix);
    let back = same_template_at(&mut core, a, at_open, 5);
    assert_ne!(back.coinbase_tx_suffix, opened.coinbase_tx_suffix);
    assert_ne!(back.coinbase_tx_suffix, hard.coinbase_tx_suffix);
    let channel = &core.channels[&a];
    for (job, target) in [
        (&opened, at_open),
        (&again, at_open),
        (&hard, sixteenth()),
        (&hard_again, sixteenth()),
        (&back, at_open),
    ] {
        assert_eq!(channel.job_target(job.job_id), Some(target));
    }
    // The hard job's shares are paid at its target, whatever came after.
    let (share, header) = share(&core, a, &hard, |h| h <= sixteenth());
    let actions = submit(&mut core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(sixteenth()));
}

/// Two channels of one key on one tip get jobs of different coinbases (their
/// numbers are drawn at random): a prefix that came back to the key on the
/// tip brings back no header of the channel that held it.
#[test]
fn channels_of_one_key_number_their_jobs_apart() {
    let mut core = core();
    let (a, first, _) = open_on_tip(&mut core, NEVER);
    let actions = on_message(&mut core, 1, open_extended(&format!("{KEY}.other")));
    let other = job_in(&sent(&actions).into_iter().cloned().collect::<Vec<_>>());
    assert_ne!(other.channel_id, a);
    assert_ne!(other.coinbase_tx_suffix, first.coinbase_tx_suffix);
}

/// A new target takes a new number at once, before any job is made at it:
/// a future job made at the old target and activated at the new one keeps
/// its number, and a job made later at the old target again gets another.
#[test]
fn a_future_job_activated_at_a_new_target_keeps_a_number_of_its_own() {
    let mut core = core();
    setup(&mut core, 1);
    assert!(core.on_new_template(template(1)).is_empty());
    let actions = on_message(&mut core, 1, open_extended(&format!("{KEY}.w")));
    let future = job_in(&sent(&actions).into_iter().cloned().collect::<Vec<_>>());
    let a = future.channel_id;
    let at_open = core.channels[&a].target();
    let channel = core.channels.get_mut(&a).unwrap();
    assert_eq!(channel.update(0.0, Some(sixteenth())), Ok(sixteenth()));
    core.on_set_new_prev_hash(prev(1, NEVER));
    assert_eq!(
        core.channels[&a].job_target(future.job_id),
        Some(sixteenth())
    );
    let back = same_template_at(&mut core, a, at_open, 2);
    assert_ne!(back.coinbase_tx_suffix, future.coinbase_tx_suffix);
    assert_eq!(core.channels[&a].job_target(back.job_id), Some(at_open));
}

/// A custom job with the headers of one set before on the tip at another
/// target is refused, even once channels_sv2 has dropped the old one: a
/// miner holding back the old job's hashes would have them paid at the new
/// target. Numbered, as jd-client numbers its declarations, it is set; and
/// the old job's hashes are paid at the old job's target.
#[test]
fn a_custom_job_with_the_headers_of_one_at_another_target_is_refused() {
    let mut core = core_with_job_declaration();
    let channel_id = open_custom_work_channel(&mut core);
    let declared = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let first = set_declared_job(&mut core, channel_id, declared);
    let easiest = core.channels[&channel_id].target();
    let (held, header) = share(&core, channel_id, &first, |h| h <= sixteenth());

    assert!(matches!(
        &update_to(&mut core, channel_id, sixteenth())[..],
        [MiningOwned::SetTarget(_)]
    ));
    // More numbered jobs than channels_sv2 keeps: the first is dropped.
    for number in 1..=20 {
        let m = declare_numbered_job(&mut core, channel_id, prev(1, NEVER), Some(number));
        set_declared_job(&mut core, channel_id, m);
    }
    let actions = submit(&mut core, &held);
    assert_eq!(share_error(&actions).as_deref(), Some("invalid-job-id"));
    let again = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let msg = AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(again));
    let actions = on_message(&mut core, 1, msg);
    match &sent(&actions)[..] {
        [MiningOwned::SetCustomMiningJobError(e)] => {
            assert_eq!(
                e.error_code.as_bytes(),
                HEADERS_AT_ANOTHER_TARGET.as_bytes()
            )
        }
        other => panic!("{other:?}"),
    }

    // At the first job's target its headers are welcome again, and the
    // held hash is paid at that target.
    update_to(&mut core, channel_id, easiest);
    let again = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let second = set_declared_job(&mut core, channel_id, again);
    let actions = submit(
        &mut core,
        &SubmitSharesExtendedOwned {
            job_id: second.job_id,
            ..held
        },
    );
    assert!(paid_for(&actions, &header), "{actions:?}");
    assert_eq!(paid_at(&actions), Some(easiest));
    assert!(any_accepted(&actions));
}

/// A custom-work channel remembers a bounded number of headers per tip:
/// past them, custom jobs are refused until the tip moves.
#[test]
fn a_custom_work_channel_takes_a_bounded_number_of_jobs_per_tip() {
    let mut core = core_with_job_declaration();
    let channel_id = open_custom_work_channel(&mut core);
    for number in 0..MAX_CUSTOM_SPACES as u64 {
        let m = declare_numbered_job(&mut core, channel_id, prev(1, NEVER), Some(number));
        set_declared_job(&mut core, channel_id, m);
    }
    let m = declare_numbered_job(&mut core, channel_id, prev(1, NEVER), Some(u64::MAX));
    let msg = AnyMessageOwned::Mining(MiningOwned::SetCustomMiningJob(m));
    let actions = on_message(&mut core, 1, msg);
    match &sent(&actions)[..] {
        [MiningOwned::SetCustomMiningJobError(e)] => {
            assert_eq!(e.error_code.as_bytes(), TOO_MANY_JOBS.as_bytes())
        }
        other => panic!("{other:?}"),
    }
}

/// A channel renewed back onto a prefix it held before on the tip (freed
/// two renewals back, no duplicate detection remembering its shares) sends
/// jobs of other headers: a hash accepted then is no share again.
#[test]
fn a_prefix_that_comes_back_to_its_channel_brings_back_none_of_its_headers() {
    let mut core = core_of_capacity(3);
    let (channel_id, first, target) = open_on_tip(&mut core, NEVER);
    let first_prefix = prefix(&core, channel_id);
    let (accepted, header) = share(&core, channel_id, &first, |h| h <= target);
    assert!(any_accepted(&submit(&mut core, &accepted)));

    let mut renewal = vec![];
    for _ in 0..3 {
        renewal = core.renew_channel(channel_id);
    }
    assert_eq!(
        prefix(&core, channel_id),
        first_prefix,
        "renewed back onto its first prefix"
    );
    let sent: Vec<MiningOwned> = sent(&renewal).into_iter().cloned().collect();
    let back = job_in(&sent);
    let (_, again) = share_from(&core, channel_id, &back, accepted.nonce, |_| true);
    assert_ne!(again, header, "the same nonce makes another header");
}

/// With a mint a share is paid its work rounded down to whole ehash, so
/// every channel's target is the nearer one worth a whole amount (worth
/// 1.7 ehash, a share would be paid 1), within the channel's maximum.
#[test]
fn with_a_mint_every_target_is_worth_a_whole_amount_of_ehash() {
    let bits = UnitBits::new(4).unwrap();
    let worth = |units| ehash::target_worth(units, bits);
    let mut core = core_with_a_mint(bits);
    // 10 H/s at 6 shares a minute: about 100 hashes a share, 6.3 ehash of 16.
    let (channel_id, _, target) = open_on_tip(&mut core, NEVER);
    assert_eq!(target, worth(6));
    // About 1.7 ehash a share (2.72 H/s), then 2.4 (3.84 H/s).
    let mut update = |hashrate: f32, max: Target| {
        let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
            channel_id,
            nominal_hash_rate: hashrate,
            maximum_target: U256Owned::from(max.to_le_bytes()),
        });
        let actions = on_message(&mut core, 1, AnyMessageOwned::Mining(update));
        let target = core.channels[&channel_id].target();
        (
            target,
            job_in(&sent(&actions).into_iter().cloned().collect::<Vec<_>>()),
        )
    };
    let any = Target::from_le_bytes([0xff; 32]);
    assert_eq!(update(2.72, any).0, worth(2));
    assert_eq!(update(3.84, any).0, worth(2));
    // About 1.3 ehash, nearer to 1, but the downstream asks for at least
    // 1.25 (20 hashes): 2.
    let (target, job) = update(2.08, ehash::target_worth(5, UnitBits::new(2).unwrap()));
    assert_eq!(target, worth(2));
    // A share of it is paid 2.
    let (share, _) = share(&core, channel_id, &job, |hash| hash <= target);
    let paid = accepted(&mut core, MiningOwned::SubmitSharesExtended(share));
    assert_eq!(Target::from_le_bytes(paid.target), worth(2));
    assert_eq!(paid.amount, 2);
}

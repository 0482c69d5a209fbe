//! A channel whose duplicate detection fills up on one chain tip is renewed
//! on a new extranonce prefix, never closed, and no share is paid twice.
//! Shares of the jobs sent before a renewal count until the chain tip moves.

use super::*;
use roles_common::stats_publisher::now_ms;
use roles_common::sv2::setup_connection;
use stratum_core::channels_sv2::{
    chain_tip::ChainTip, seen_shares_budget, server::jobs::factory::JobFactory,
};
use stratum_core::job_declaration_sv2::{AllocateMiningJobTokenOwned, DeclareMiningJobOwned};
use stratum_core::mining_sv2::SetCustomMiningJobOwned;
use stratum_core::parsers_sv2::JobDeclarationOwned;

/// What the pool sent channel 1's connection.
pub(super) fn sent(actions: &[Action]) -> Vec<&MiningOwned> {
    sent_to(actions, 1)
}

/// The mining messages `actions` send to connection `conn`.
pub(super) fn sent_to(actions: &[Action], conn: ConnId) -> Vec<&MiningOwned> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(to, AnyMessageOwned::Mining(m)) if *to == conn => Some(m),
            _ => None,
        })
        .collect()
}

pub(super) fn prefix(core: &PoolCore, channel_id: u32) -> Vec<u8> {
    let c = core.channels[&channel_id].extended().unwrap();
    c.get_extranonce_prefix().to_vec()
}

fn submit_standard(core: &mut PoolCore, share: SubmitSharesStandardOwned) -> Vec<Action> {
    let msg = MiningOwned::SubmitSharesStandard(share);
    on_message(core, 1, AnyMessageOwned::Mining(msg))
}

pub(super) fn submit(core: &mut PoolCore, share: &SubmitSharesExtendedOwned) -> Vec<Action> {
    let msg = MiningOwned::SubmitSharesExtended(share.clone());
    on_message(core, 1, AnyMessageOwned::Mining(msg))
}

/// The error code of the one message sent, if it is a SubmitShares.Error.
pub(super) fn share_error(actions: &[Action]) -> Option<String> {
    match &sent(actions)[..] {
        [MiningOwned::SubmitSharesError(e)] => {
            Some(String::from_utf8_lossy(e.error_code.as_bytes()).into_owned())
        }
        _ => None,
    }
}

/// The channel's target made the easiest, so a flood costs nothing: the
/// job sent with it.
fn easiest_target(core: &mut PoolCore, channel_id: u32) -> NewExtendedMiningJobOwned {
    let update = MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: 0.0,
        maximum_target: U256Owned::from([0xff; 32]),
    });
    let actions = on_message(core, 1, AnyMessageOwned::Mining(update));
    match &sent(&actions)[..] {
        [MiningOwned::SetTarget(_), MiningOwned::NewExtendedMiningJob(j)] => j.clone(),
        other => panic!("{other:?}"),
    }
}

/// Whether `actions` accept a share.
pub(super) fn any_accepted(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Accepted(_)))
}

/// Submits the share of `job` from `nonce` on, mined on `prefix` (one
/// `channel_id` held before its renewal): what the pool did, and the next
/// nonce.
fn submit_on_prefix(
    core: &mut PoolCore,
    channel_id: u32,
    prefix: &[u8],
    job: &NewExtendedMiningJobOwned,
    nonce: u32,
) -> (Vec<Action>, u32) {
    let c = core.channels[&channel_id].extended().unwrap();
    let (share, _) = share_on_prefix(c, prefix, job, nonce, |_| true);
    (submit(core, &share), share.nonce + 1)
}

/// Whether `actions` accept a share of exactly `header`.
pub(super) fn paid_for(actions: &[Action], header: &[u8; 80]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Accepted(a) if &a.header == header))
}

/// The extended job among `sent`.
pub(super) fn job_in(sent: &[MiningOwned]) -> NewExtendedMiningJobOwned {
    sent.iter()
        .find_map(|m| match m {
            MiningOwned::NewExtendedMiningJob(j) => Some(j.clone()),
            _ => None,
        })
        .expect("a job")
}

/// Shares of `job` from nonce `nonce` on, each accepted, until one brings
/// a renewal: that share, what was sent with it, and the next nonce.
fn flood_until_renewed(
    core: &mut PoolCore,
    channel_id: u32,
    job: &NewExtendedMiningJobOwned,
    mut nonce: u32,
) -> (SubmitSharesExtendedOwned, Vec<MiningOwned>, u32) {
    let start = nonce;
    loop {
        assert!(
            (nonce - start) as usize <= seen_shares_budget(core.config.shares_per_minute as f64),
            "never renewed"
        );
        let (share, _) = share_from(core, channel_id, job, nonce, |_| true);
        nonce = share.nonce + 1;
        let actions = submit(core, &share);
        assert!(
            any_accepted(&actions),
            "share of nonce {} refused: {actions:?}",
            share.nonce
        );
        let sent: Vec<MiningOwned> = sent(&actions).into_iter().cloned().collect();
        if sent
            .iter()
            .any(|m| matches!(m, MiningOwned::SetExtranoncePrefix(_)))
        {
            return (share, sent, nonce);
        }
    }
}

/// An extended channel at the easiest target on a tip of `nbits`, flooded
/// at 3 shares a minute (channels_sv2's smallest budget) until renewed.
struct Renewed {
    core: PoolCore,
    channel_id: u32,
    /// The job the flood was mined on, and the prefix it was sent with.
    old_job: NewExtendedMiningJobOwned,
    old_prefix: Vec<u8>,
    /// The job the renewal sent, on the new prefix.
    new_job: NewExtendedMiningJobOwned,
    /// The first nonce not mined from yet.
    nonce: u32,
}

impl Renewed {
    fn new(nbits: u32, share_batch_size: usize) -> Renewed {
        let mut core = core();
        core.config.share_batch_size = share_batch_size;
        core.config.shares_per_minute = 3.0;
        let (channel_id, _, _) = open_on_tip(&mut core, nbits);
        let old_job = easiest_target(&mut core, channel_id);
        let old_prefix = prefix(&core, channel_id);
        let (_, renewal, nonce) = flood_until_renewed(&mut core, channel_id, &old_job, 0);
        Renewed {
            core,
            channel_id,
            old_job,
            old_prefix,
            new_job: job_in(&renewal),
            nonce,
        }
    }

    /// The next share of the old job, mined on the old prefix, whose hash
    /// `accept`s; its header.
    fn old_share(
        &mut self,
        accept: impl Fn(Target) -> bool,
    ) -> (SubmitSharesExtendedOwned, [u8; 80]) {
        let c = self.core.channels[&self.channel_id].extended().unwrap();
        let mined = share_on_prefix(c, &self.old_prefix, &self.old_job, self.nonce, accept);
        self.nonce = mined.0.nonce + 1;
        mined
    }

    /// The next share of the renewal's job whose hash `accept`s; its header.
    fn new_share(
        &mut self,
        accept: impl Fn(Target) -> bool,
    ) -> (SubmitSharesExtendedOwned, [u8; 80]) {
        let mined = share_from(
            &self.core,
            self.channel_id,
            &self.new_job,
            self.nonce,
            accept,
        );
        self.nonce = mined.0.nonce + 1;
        mined
    }
}

#[test]
fn a_channel_whose_duplicate_detection_fills_is_renewed_and_never_closed() {
    renewed_twice(1);
}

/// Renewed mid-batch: the batch goes on across the renewal, each share
/// acknowledged once.
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
    let mut job = easiest_target(&mut core, channel_id);
    let mut prefixes = vec![prefix(&core, channel_id)];
    let mut retired = Vec::new();
    let (mut accepted, mut acknowledged, mut nonce) = (0, 0, 0);
    // Two renewals: three quarters of the budget each.
    while accepted < 2 * budget - budget / 2 + 100 {
        let (share, _) = share_from(&core, channel_id, &job, nonce, |_| true);
        nonce = share.nonce + 1;
        let actions = submit(&mut core, &share);
        assert!(
            any_accepted(&actions),
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
        // Renewed: the new prefix, then a job mined at once. No prevhash:
        // the jobs sent before stay valid on the same chain tip.
        let MiningOwned::SetExtranoncePrefix(p) = sent[at] else {
            unreachable!()
        };
        assert_eq!(p.channel_id, channel_id);
        assert_eq!(p.extranonce_prefix.as_bytes(), prefix(&core, channel_id));
        assert!(!prefixes.contains(&prefix(&core, channel_id)));
        prefixes.push(prefix(&core, channel_id));
        job = match &sent[at + 1..] {
            [MiningOwned::NewExtendedMiningJob(j)] => {
                assert!(j.min_ntime.clone().into_inner().is_some(), "active: {j:?}");
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
    // The share that brought each renewal, sent again, is not paid twice:
    // stale two prefixes back, a duplicate on the prefix before this one.
    for (share, code) in retired.iter().zip(["stale-share", "duplicate-share"]) {
        let actions = submit(&mut core, share);
        assert_eq!(share_error(&actions).as_deref(), Some(code), "{actions:?}");
        assert!(!any_accepted(&actions));
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
    assert!(any_accepted(&actions), "{actions:?}");
}

/// SetExtranoncePrefix applies to the jobs sent after it: a share of a job
/// sent before it (on its way at the renewal) is checked on the old prefix
/// and paid, and a block among them is submitted and acknowledged at once.
/// Once the chain tip moves those jobs are stale, and their prefix is free
/// again.
#[test]
fn shares_of_jobs_sent_before_a_renewal_count_until_the_chain_tip_moves() {
    let mut r = Renewed::new(EASY, 7);
    assert_eq!(r.core.allocator.allocated_count(), 2, "both prefixes held");

    let network = Target::from_compact(CompactTarget::from_consensus(EASY));
    for block in [false, true] {
        let (share, header) = r.old_share(|h| (h <= network) == block);
        let actions = submit(&mut r.core, &share);
        let accepted = actions
            .iter()
            .find_map(|a| match a {
                Action::Accepted(a) => Some(a),
                _ => None,
            })
            .unwrap_or_else(|| panic!("block {block}: {actions:?}"));
        assert_eq!(accepted.header, header, "on the old prefix");
        assert_eq!(accepted.block_found, block);
        assert_eq!(check_proof(accepted, KEY), Ok(Some(1)));
        if block {
            assert!(
                matches!(&sent(&actions)[..], [MiningOwned::SubmitSharesSuccess(s)]
                    if s.last_sequence_number == share.sequence_number),
                "{actions:?}"
            );
        }
        let solution = actions
            .iter()
            .any(|a| matches!(a, Action::SubmitSolution(_)));
        assert_eq!(solution, block, "{actions:?}");
        // Sent again, it is a duplicate.
        let actions = submit(&mut r.core, &share);
        assert_eq!(share_error(&actions).as_deref(), Some("duplicate-share"));
    }
    // A share of the new job is paid too.
    let (share, header) = r.new_share(|h| h > network);
    let actions = submit(&mut r.core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");

    // The chain tip moves.
    r.core.on_new_template(template(2));
    r.core.on_set_new_prev_hash(SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    });
    assert_eq!(
        r.core.allocator.allocated_count(),
        1,
        "the old prefix freed"
    );
    let (share, _) = r.old_share(|_| true);
    let actions = submit(&mut r.core, &share);
    assert_eq!(share_error(&actions).as_deref(), Some("stale-share"));
}

/// Renewed after a template that is not a future one (a new block template
/// on the same tip): the job of the tip's template and the later one both go
/// out active at once, the later last, and shares of both are paid.
#[test]
fn a_renewal_after_a_template_on_the_same_tip_sends_both_jobs_active() {
    let mut core = core();
    core.config.shares_per_minute = 3.0;
    let (channel_id, _, _) = open_on_tip(&mut core, NEVER);
    easiest_target(&mut core, channel_id);
    let later = NewTemplateOwned {
        future_template: false,
        ..template(2)
    };
    let actions = core.on_new_template(later);
    let before = job_in(&sent(&actions).into_iter().cloned().collect::<Vec<_>>());
    let (_, renewal, nonce) = flood_until_renewed(&mut core, channel_id, &before, 0);
    let jobs: Vec<&NewExtendedMiningJobOwned> = renewal
        .iter()
        .filter_map(|m| match m {
            MiningOwned::NewExtendedMiningJob(j) => Some(j),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 2, "{renewal:?}");
    assert!(jobs
        .iter()
        .all(|j| j.min_ntime.clone().into_inner().is_some()));
    assert!(jobs[0].job_id < jobs[1].job_id && before.job_id < jobs[0].job_id);
    assert!(!renewal
        .iter()
        .any(|m| matches!(m, MiningOwned::SetNewPrevHash(_))));
    for (i, job) in jobs.into_iter().enumerate() {
        let (share, header) = share_from(&core, channel_id, job, nonce + i as u32, |_| true);
        let actions = submit(&mut core, &share);
        assert!(paid_for(&actions, &header), "{actions:?}");
    }
}

/// Acknowledged by the core (no ehash flow), shares of the old prefix and
/// the new, interleaved, are counted in one batch: each success covers
/// the shares since the one before, up to its sequence number. The batch
/// the flood began goes on across the renewal.
#[test]
fn old_and_new_prefix_shares_interleaved_are_acknowledged_in_the_channels_batches() {
    const BATCH: u32 = 7;
    let mut r = Renewed::new(NEVER, BATCH as usize);
    let successes_in = |actions: &[Action]| -> Vec<(u32, u32)> {
        sent(actions)
            .into_iter()
            .filter_map(|m| match m {
                MiningOwned::SubmitSharesSuccess(s) => {
                    Some((s.last_sequence_number, s.new_submits_accepted_count))
                }
                _ => None,
            })
            .collect()
    };
    // One share a nonce: the flood's shares not acknowledged yet are in
    // the first success after the renewal.
    let flooded = r.nonce;
    let left = flooded % BATCH;
    assert_ne!(left, 0, "a batch left open by the flood");
    for new in 1..=BATCH - left {
        let (share, _) = r.new_share(|_| true);
        let successes = successes_in(&submit(&mut r.core, &share));
        match new == BATCH - left {
            true => assert_eq!(successes, [(share.sequence_number, BATCH)]),
            false => assert_eq!(successes, []),
        }
    }
    let mut since_success = 0;
    let mut successes = 0;
    for i in 0..2 * BATCH {
        let (share, _) = match i % 3 {
            1 => r.old_share(|_| true),
            _ => r.new_share(|_| true),
        };
        let actions = submit(&mut r.core, &share);
        assert!(any_accepted(&actions));
        since_success += 1;
        for (last, count) in successes_in(&actions) {
            assert_eq!(last, share.sequence_number);
            assert_eq!(count, since_success, "share {i}");
            since_success = 0;
            successes += 1;
        }
    }
    // Old ones and new ones, in two full batches.
    assert_eq!((successes, since_success), (2, 0));
}

/// A locking key other than `KEY` (twice the generator).
const OTHER_KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

/// A core whose extranonce allocator holds `max_channels` prefixes, at 3
/// shares a minute (channels_sv2's smallest duplicate-detection budget).
pub(super) fn core_of_capacity(max_channels: u32) -> PoolCore {
    let mut core = core();
    core.config.max_channels = max_channels;
    core.allocator = extranonce_allocator(&core.config).unwrap();
    core.config.shares_per_minute = 3.0;
    core
}

/// A locking key other than `KEY` and `OTHER_KEY` (three times the generator).
const THIRD_KEY: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";

/// Opens an extended channel of `key` on connection 1: its id, or the
/// error code refusing it.
fn open_channel(core: &mut PoolCore, key: &str, worker: &str) -> Result<u32, String> {
    open_request(core, open_extended(&format!("{key}.{worker}")))
}

/// Sends an open `request` on connection 1: the channel's id, or the
/// error code refusing it.
fn open_request(core: &mut PoolCore, request: AnyMessageOwned) -> Result<u32, String> {
    let actions = on_message(core, 1, request);
    sent(&actions)
        .into_iter()
        .find_map(|m| match m {
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => Some(Ok(s.channel_id)),
            MiningOwned::OpenMiningChannelError(e) => Some(Err(String::from_utf8_lossy(
                e.error_code.as_bytes(),
            )
            .into_owned())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{actions:?}"))
}

/// `max_channels` counts open channels. With every extranonce prefix held,
/// a channel renewing or opening takes the one held by the jobs sent before
/// the last renewal of a channel of another key, and those jobs are stale
/// from then on. Never from a channel of its own key: every coinbase
/// commits to its channel's key, so a header accepted on the prefix could
/// repeat.
#[test]
fn with_no_prefix_free_a_channel_takes_the_old_jobs_prefix_of_another_key() {
    let mut core = core_of_capacity(3);
    let (a, _, _) = open_on_tip(&mut core, NEVER);
    let b = open_channel(&mut core, OTHER_KEY, "b").unwrap();
    let a_first = easiest_target(&mut core, a);
    let a_first_prefix = prefix(&core, a);
    let (_, renewal, mut a_nonce) = flood_until_renewed(&mut core, a, &a_first, 0);
    let a_second = job_in(&renewal);
    assert_eq!(core.allocator.allocated_count(), 3, "every prefix held");

    // Not for a channel of a's key, and a's first job is still paid.
    let refused = open_channel(&mut core, KEY, "c");
    assert_eq!(refused, Err("channel-capacity-exhausted".to_string()));
    let paid;
    (paid, a_nonce) = submit_on_prefix(&mut core, a, &a_first_prefix, &a_first, a_nonce);
    assert!(any_accepted(&paid), "{paid:?}");

    // b, renewing, takes a's old prefix: a's first job is stale, its
    // second goes on.
    let b_first = easiest_target(&mut core, b);
    let (_, _, b_nonce) = flood_until_renewed(&mut core, b, &b_first, 0);
    assert_eq!(core.allocator.allocated_count(), 3);
    let (share, _) = share_from(&core, a, &a_first, a_nonce, |_| true);
    let stale = submit(&mut core, &share);
    assert_eq!(share_error(&stale).as_deref(), Some("stale-share"));
    let (share, _) = share_from(&core, a, &a_second, a_nonce, |_| true);
    let paid = submit(&mut core, &share);
    assert!(any_accepted(&paid), "{paid:?}");

    // A channel of a's key, opening, takes b's old prefix.
    open_channel(&mut core, KEY, "c").unwrap();
    let (share, _) = share_from(&core, b, &b_first, b_nonce, |_| true);
    let stale = submit(&mut core, &share);
    assert_eq!(share_error(&stale).as_deref(), Some("stale-share"));
}

/// At capacity, of the channels of other keys, the one whose old jobs were
/// retired longest ago gives their prefix up: its miners have had the
/// longest to move on to the new one.
#[test]
fn at_capacity_the_old_jobs_retired_longest_ago_give_their_prefix_up() {
    let mut core = core_of_capacity(5);
    let (a, _, _) = open_on_tip(&mut core, NEVER);
    let b = open_channel(&mut core, OTHER_KEY, "b").unwrap();
    let b_first = easiest_target(&mut core, b);
    let (_, _, b_nonce) = flood_until_renewed(&mut core, b, &b_first, 0);
    core.clock = SteadyClock::new(core.clock.now() + 1_000);
    let a_first = easiest_target(&mut core, a);
    let a_first_prefix = prefix(&core, a);
    let (_, _, a_nonce) = flood_until_renewed(&mut core, a, &a_first, 0);
    open_channel(&mut core, THIRD_KEY, "c").unwrap();
    assert_eq!(core.allocator.allocated_count(), 5, "every prefix held");

    open_channel(&mut core, THIRD_KEY, "d").unwrap();
    let (share, _) = share_from(&core, b, &b_first, b_nonce, |_| true);
    let stale = submit(&mut core, &share);
    assert_eq!(share_error(&stale).as_deref(), Some("stale-share"));
    let (paid, _) = submit_on_prefix(&mut core, a, &a_first_prefix, &a_first, a_nonce);
    assert!(any_accepted(&paid), "{paid:?}");
}

/// An open request refused for its hash rate takes no prefix, even at
/// capacity: the old jobs that could have given theirs up are still paid.
#[test]
fn an_open_refused_at_capacity_for_its_hash_rate_leaves_the_old_jobs_paid() {
    let mut core = core_of_capacity(2);
    let (a, _, _) = open_on_tip(&mut core, NEVER);
    let a_first = easiest_target(&mut core, a);
    let a_first_prefix = prefix(&core, a);
    let (_, _, a_nonce) = flood_until_renewed(&mut core, a, &a_first, 0);
    assert_eq!(core.allocator.allocated_count(), 2, "every prefix held");

    let mut request = open_extended(&format!("{OTHER_KEY}.b"));
    if let AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannel(m)) = &mut request {
        m.nominal_hash_rate = -1.0;
    }
    let refused = open_request(&mut core, request);
    assert_eq!(refused, Err("invalid-nominal-hashrate".to_string()));
    let (paid, _) = submit_on_prefix(&mut core, a, &a_first_prefix, &a_first, a_nonce);
    assert!(any_accepted(&paid), "{paid:?}");

    // A valid one still takes the old jobs' prefix.
    open_channel(&mut core, OTHER_KEY, "b").unwrap();
}

/// A channel never takes back the prefix of its own old jobs on the same
/// tip (a header accepted on it could be accepted again): with no other
/// prefix free it cannot renew, and is closed once its duplicate detection
/// is full, as without renewals.
#[test]
fn a_channel_never_renews_onto_the_prefix_of_its_own_old_jobs() {
    let mut core = core_of_capacity(2);
    let (a, _, _) = open_on_tip(&mut core, NEVER);
    let first = easiest_target(&mut core, a);
    let (_, renewal, mut nonce) = flood_until_renewed(&mut core, a, &first, 0);
    let job = job_in(&renewal);
    let budget = seen_shares_budget(3.0);
    for accepted in 0.. {
        assert!(accepted <= budget, "never closed");
        let (share, _) = share_from(&core, a, &job, nonce, |_| true);
        nonce = share.nonce + 1;
        let actions = submit(&mut core, &share);
        let sent = sent(&actions);
        assert!(
            !sent
                .iter()
                .any(|m| matches!(m, MiningOwned::SetExtranoncePrefix(_))),
            "renewed onto a prefix it held: {actions:?}"
        );
        if sent
            .iter()
            .any(|m| matches!(m, MiningOwned::CloseChannel(_)))
        {
            break;
        }
    }
    assert!(!core.channels.contains_key(&a));
}

/// Shares of the jobs sent before a renewal may fill the rest of the old
/// prefix's duplicate detection: then they are stale, and the channel,
/// mining on the new prefix, stays open.
#[test]
fn old_jobs_whose_duplicate_detection_fills_are_stale_and_the_channel_stays_open() {
    let mut r = Renewed::new(NEVER, 1);
    let budget = seen_shares_budget(3.0);
    let mut old_accepted = 0;
    let refused = loop {
        assert!(old_accepted <= budget, "never full");
        let (share, _) = r.old_share(|_| true);
        let actions = submit(&mut r.core, &share);
        match share_error(&actions) {
            Some(code) => break code,
            None => old_accepted += 1,
        }
    };
    // Renewed at three quarters of the budget: the last quarter was left.
    assert_eq!(old_accepted, budget / 4);
    assert_eq!(refused, "stale-share");
    assert_eq!(r.core.stats().channels_open, 1);
    let (share, _) = r.new_share(|_| true);
    let actions = submit(&mut r.core, &share);
    assert!(any_accepted(&actions), "{actions:?}");
}

/// A standard channel is renewed too (its jobs carry their merkle root, so
/// no prefix message): its new job's id follows the old ones, and a share
/// of the job before it counts until the chain tip moves, then is stale.
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
        ntime: TIP_TIME,
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
        assert!(any_accepted(&actions), "share {nonce} refused: {actions:?}");
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
    let before = jobs.last().unwrap();
    let actions = submit_standard(&mut core, on(before, u32::MAX));
    assert!(any_accepted(&actions), "{actions:?}");
    let actions = submit_standard(&mut core, on(&renewed, u32::MAX - 1));
    assert!(any_accepted(&actions), "{actions:?}");
    core.on_new_template(template(2));
    core.on_set_new_prev_hash(SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    });
    let actions = submit_standard(&mut core, on(before, u32::MAX - 2));
    assert_eq!(share_error(&actions).as_deref(), Some("stale-share"));
}

/// Connection `conn` from `peer`, set up to select its own work.
pub(super) fn connect_work_selecting(core: &mut PoolCore, conn: ConnId, peer: std::net::IpAddr) {
    const REQUIRES_WORK_SELECTION: u32 = 0b10;
    core.on_connect(conn, peer);
    on_message(core, conn, setup_message(REQUIRES_WORK_SELECTION));
}

/// A channel on work-selecting connection `conn`: its id.
pub(super) fn open_custom_work_channel_on(core: &mut PoolCore, conn: ConnId) -> u32 {
    let actions = on_message(core, conn, open_extended(&format!("{KEY}.on{conn}")));
    match &sent_to(&actions, conn)[..] {
        // Custom work: no job of the pool's.
        [MiningOwned::OpenExtendedMiningChannelSuccess(s)] => s.channel_id,
        other => panic!("{other:?}"),
    }
}

/// A work-selecting connection (1) with a job declaration connection (1)
/// and an extended channel at the easiest target, on the tip of
/// `template(1)`; the channel's id.
pub(super) fn open_custom_work_channel(core: &mut PoolCore) -> u32 {
    open_custom_work_channel_at(core, NEVER)
}

/// [`open_custom_work_channel`], the network at `nbits`.
pub(super) fn open_custom_work_channel_at(core: &mut PoolCore, nbits: u32) -> u32 {
    const DECLARE_TX_DATA: u32 = 0b1;
    connect_work_selecting(core, 1, LOCAL);
    core.on_new_template(template(1));
    core.on_set_new_prev_hash(prev(1, nbits));
    let mut jds = core.jds().expect("a job declarator");
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
    drop(jds);
    let channel_id = open_custom_work_channel_on(core, 1);
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
/// pool's job declarator, then sets it on the channel on the tip of `p`. The
/// job as the channel mines it, named by the id SetCustomMiningJob.Success
/// gave.
fn set_custom_job(
    core: &mut PoolCore,
    channel_id: u32,
    p: SetNewPrevHashOwned,
) -> NewExtendedMiningJobOwned {
    let m = declare_custom_job(core, channel_id, p);
    set_declared_job(core, channel_id, m)
}

/// `template(1)` declared at the pool's job declarator: its
/// SetCustomMiningJob for the channel, on the tip of `p`.
pub(super) fn declare_custom_job(
    core: &mut PoolCore,
    channel_id: u32,
    p: SetNewPrevHashOwned,
) -> SetCustomMiningJobOwned {
    declare_numbered_job(core, channel_id, p, None)
}

/// [`declare_custom_job`], its coinbase numbered `number` (as jd-client
/// numbers its declarations) if Some.
pub(super) fn declare_numbered_job(
    core: &mut PoolCore,
    channel_id: u32,
    p: SetNewPrevHashOwned,
    number: Option<u64>,
) -> SetCustomMiningJobOwned {
    let (t, now) = (template(1), now_ms());
    let reward = TxOut {
        value: Amount::from_sat(t.coinbase_tx_value_remaining),
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    };
    let numbered = number.map(ehash::coinbase::job_number_output);
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
    let declared_outputs = [vec![reward.clone()], numbered.iter().cloned().collect()].concat();
    let (prefix, suffix) = factory
        .new_coinbase_tx_prefix_and_suffix(t.clone(), declared_outputs, 16)
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
    let mut outputs = vec![reward, ehash::key_commitment_output(&KEY.parse().unwrap())];
    outputs.extend(numbered);
    let tip = ChainTip::new(p.prev_hash, p.n_bits, p.header_timestamp);
    let token = declared.new_mining_job_token;
    factory
        .new_custom_job(channel_id, 3, token, tip, t, outputs, 16)
        .unwrap()
}

/// Sets `m` on the channel: the job as the channel mines it, named by the
/// id SetCustomMiningJob.Success gave.
pub(super) fn set_declared_job(
    core: &mut PoolCore,
    channel_id: u32,
    m: SetCustomMiningJobOwned,
) -> NewExtendedMiningJobOwned {
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
        allow_coinbase_only: true,
        // At 3 shares a minute channels_sv2 keeps its smallest budget.
        shares_per_minute: 3.0,
        ..core().config
    })
    .unwrap();
    let channel_id = open_custom_work_channel(&mut core);
    let declared = declare_custom_job(&mut core, channel_id, prev(1, NEVER));
    let first = set_declared_job(&mut core, channel_id, declared.clone());
    let old_prefix = prefix(&core, channel_id);
    let (last, renewal, nonce) = flood_until_renewed(&mut core, channel_id, &first, 0);
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

    // The client sets the job it declared again, for the new prefix.
    let second = set_declared_job(&mut core, channel_id, declared);
    assert!(
        second.job_id > first.job_id,
        "no id names two jobs: {} then {}",
        first.job_id,
        second.job_id
    );
    // The share that brought the renewal, sent again, is not paid again.
    let actions = submit(&mut core, &last);
    assert_eq!(share_error(&actions).as_deref(), Some("duplicate-share"));
    assert!(!any_accepted(&actions));
    // A share of the new job, mined on the new prefix, is paid for its header.
    let (share, header) = share_from(&core, channel_id, &second, 0, |_| true);
    let actions = submit(&mut core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");
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
    // The job set before the renewal counts on its prefix until the
    // downstream sets a job on another tip; then it is stale.
    let c = core.channels[&channel_id].extended().unwrap();
    let (share, header) = share_on_prefix(c, &old_prefix, &first, nonce, |_| true);
    let actions = submit(&mut core, &share);
    assert!(paid_for(&actions, &header), "{actions:?}");
    let moved = SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    };
    core.on_new_template(template(2));
    core.on_set_new_prev_hash(moved.clone());
    set_custom_job(&mut core, channel_id, moved);
    let (actions, _) =
        submit_on_prefix(&mut core, channel_id, &old_prefix, &first, share.nonce + 1);
    assert_eq!(share_error(&actions).as_deref(), Some("stale-share"));
}

/// When the pool's chain tip moves, shares of the custom jobs set on the
/// old one are stale, as those of pool jobs are, until the downstream sets
/// a job on the new tip.
#[test]
fn custom_jobs_on_a_tip_the_pool_has_left_are_stale() {
    let mut core = core_with_job_declaration();
    let channel_id = open_custom_work_channel(&mut core);
    let first = set_custom_job(&mut core, channel_id, prev(1, NEVER));
    let (share, _) = share_from(&core, channel_id, &first, 0, |_| true);
    let actions = submit(&mut core, &share);
    assert!(any_accepted(&actions), "{actions:?}");

    let moved = SetNewPrevHashOwned {
        prev_hash: U256Owned::from([8u8; 32]),
        ..prev(2, NEVER)
    };
    core.on_new_template(template(2));
    core.on_set_new_prev_hash(moved.clone());
    let (share, _) = share_from(&core, channel_id, &first, share.nonce + 1, |_| true);
    let actions = submit(&mut core, &share);
    assert_eq!(share_error(&actions).as_deref(), Some("stale-share"));

    let second = set_custom_job(&mut core, channel_id, moved.clone());
    let (share, _) = share_from(&core, channel_id, &second, share.nonce + 1, |_| true);
    let actions = submit(&mut core, &share);
    assert!(any_accepted(&actions), "{actions:?}");
    // The same tip announced again leaves the new job as it is.
    core.on_set_new_prev_hash(moved);
    let (share, _) = share_from(&core, channel_id, &second, share.nonce + 1, |_| true);
    let actions = submit(&mut core, &share);
    assert!(any_accepted(&actions), "{actions:?}");
}

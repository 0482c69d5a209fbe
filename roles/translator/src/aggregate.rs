//! Aggregated mode (`aggregate_channels = true`), sans-IO: every miner
//! shares one extended channel, opened with the wallet's key.
//!
//! Each [`MinerSession`](crate::miner::MinerSession) still believes it has
//! a channel of its own: this struct answers its `OpenExtendedMiningChannel`
//! with the shared channel's success and the current jobs, fans the pool's
//! jobs out to every member, and renumbers shares (one sequence space per
//! channel upstream, one per miner downstream) so each miner gets the pool's
//! answer to its own shares. Miners differ by their extranonce1, so their
//! shares never collide. One channel carries one key: a miner whose username
//! is another key is refused (per-miner keys need per-miner channels).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey};
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned, SetNewPrevHashOwned,
    SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesSuccessOwned,
};
use stratum_core::parsers_sv2::MiningOwned;

/// Jobs kept for miners that join later.
const MAX_KEPT_JOBS: usize = 8;

#[derive(Debug, Clone)]
pub enum Action {
    ToMiner(u32, MiningOwned),
    /// To the pool; an `OpenExtendedMiningChannel` gets its request id from the router.
    Upstream(MiningOwned),
}

pub struct Aggregate {
    wallet_key: LockingKey,
    channel: Option<OpenExtendedMiningChannelSuccessOwned>,
    opening: bool,
    waiting: Vec<u32>,
    members: BTreeSet<u32>,
    /// The last SetNewPrevHash.
    prev: Option<SetNewPrevHashOwned>,
    /// The job a joining miner starts from on that tip: the one the
    /// SetNewPrevHash activated or, since a new extranonce prefix, the
    /// first job sent active on it (a renewal sends no SetNewPrevHash).
    tip_job: Option<NewExtendedMiningJobOwned>,
    /// Jobs since (active ones) and future ones, in arrival order.
    jobs: Vec<NewExtendedMiningJobOwned>,
    /// Members that joined on a tip with no job to start from (between a
    /// new prefix and its first job): that job starts them.
    untipped: BTreeSet<u32>,
    /// Upstream sequence number -> (miner, its own sequence number).
    shares: BTreeMap<u32, (u32, u32)>,
    next_sequence: u32,
}

impl Aggregate {
    pub fn new(wallet_key: LockingKey) -> Self {
        Self {
            wallet_key,
            channel: None,
            opening: false,
            waiting: Vec::new(),
            members: BTreeSet::new(),
            prev: None,
            tip_job: None,
            jobs: Vec::new(),
            untipped: BTreeSet::new(),
            shares: BTreeMap::new(),
            next_sequence: 1,
        }
    }

    pub fn channel_id(&self) -> Option<u32> {
        self.channel.as_ref().map(|c| c.channel_id)
    }

    pub fn identity(&self) -> String {
        format!("{}.translator", self.wallet_key)
    }

    fn members(&self) -> Vec<u32> {
        self.members.iter().copied().collect()
    }

    /// How a joining miner starts on the current tip: its job as a future
    /// job, then a SetNewPrevHash activating it.
    fn start_on_tip(&self) -> Option<[MiningOwned; 2]> {
        let (job, prev) = (self.tip_job.as_ref()?, self.prev.as_ref()?);
        let activate = SetNewPrevHashOwned {
            job_id: job.job_id,
            min_ntime: job.min_ntime.clone().into_inner().unwrap_or(prev.min_ntime),
            ..prev.clone()
        };
        let mut future = job.clone();
        future.min_ntime = stratum_core::binary_sv2::Sv2OptionOwned::new(None);
        Some([
            MiningOwned::NewExtendedMiningJob(future),
            MiningOwned::SetNewPrevHash(activate),
        ])
    }

    fn replay(&mut self, miner: u32) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(c) = &self.channel {
            out.push(Action::ToMiner(
                miner,
                MiningOwned::OpenExtendedMiningChannelSuccess(c.clone()),
            ));
        }
        match self.start_on_tip() {
            Some(start) => out.extend(start.map(|m| Action::ToMiner(miner, m))),
            None if self.prev.is_some() => {
                self.untipped.insert(miner);
            }
            None => {}
        }
        for job in &self.jobs {
            out.push(Action::ToMiner(
                miner,
                MiningOwned::NewExtendedMiningJob(job.clone()),
            ));
        }
        out
    }

    /// A miner asks for "its" channel.
    pub fn on_open(&mut self, miner: u32, open: OpenExtendedMiningChannelOwned) -> Vec<Action> {
        let identity = String::from_utf8_lossy(open.user_identity.as_bytes()).to_string();
        let key = parse_user_identity(&identity).ok().map(|m| m.locking_key);
        if key != Some(self.wallet_key) {
            return vec![Action::ToMiner(
                miner,
                MiningOwned::OpenMiningChannelError(OpenMiningChannelErrorOwned {
                    request_id: open.request_id,
                    error_code: str0255_truncated("per-miner-keys-need-aggregate_channels=false"),
                }),
            )];
        }
        if self.channel.is_some() {
            self.members.insert(miner);
            return self.replay(miner);
        }
        self.waiting.push(miner);
        if self.opening {
            return vec![];
        }
        self.opening = true;
        vec![Action::Upstream(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 0,
                user_identity: str0255_truncated(&self.identity()),
                ..open
            },
        ))]
    }

    pub fn on_open_success(&mut self, s: OpenExtendedMiningChannelSuccessOwned) -> Vec<Action> {
        self.opening = false;
        if self.waiting.is_empty() {
            // Every miner that asked for it left meanwhile.
            return vec![close(s.channel_id)];
        }
        self.channel = Some(s);
        let waiting = std::mem::take(&mut self.waiting);
        let mut out = Vec::new();
        for miner in waiting {
            self.members.insert(miner);
            out.extend(self.replay(miner));
        }
        out
    }

    pub fn on_open_error(&mut self, e: OpenMiningChannelErrorOwned) -> Vec<Action> {
        self.opening = false;
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|m| Action::ToMiner(m, MiningOwned::OpenMiningChannelError(e.clone())))
            .collect()
    }

    fn broadcast(&self, msg: MiningOwned) -> Vec<Action> {
        self.members()
            .into_iter()
            .map(|m| Action::ToMiner(m, msg.clone()))
            .collect()
    }

    /// A message of the pool about the shared channel.
    pub fn on_upstream(&mut self, msg: MiningOwned) -> Vec<Action> {
        match msg {
            MiningOwned::NewExtendedMiningJob(job) => {
                let active = job.min_ntime.clone().into_inner().is_some();
                if active && self.tip_job.is_none() && self.prev.is_some() {
                    self.tip_job = Some(job.clone());
                    return self.start_untipped(job);
                }
                self.jobs.push(job.clone());
                if self.jobs.len() > MAX_KEPT_JOBS {
                    self.jobs.remove(0);
                }
                self.broadcast(MiningOwned::NewExtendedMiningJob(job))
            }
            MiningOwned::SetNewPrevHash(prev) => self.on_new_prev_hash(prev),
            MiningOwned::SetTarget(t) => {
                if let Some(c) = self.channel.as_mut() {
                    c.target = t.maximum_target.clone();
                }
                self.broadcast(MiningOwned::SetTarget(t))
            }
            MiningOwned::SubmitSharesSuccess(s) => self.on_success(s),
            MiningOwned::SubmitSharesError(e) => match self.shares.remove(&e.sequence_number) {
                Some((miner, local)) => vec![Action::ToMiner(
                    miner,
                    MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
                        sequence_number: local,
                        ..e
                    }),
                )],
                None => vec![],
            },
            MiningOwned::SetExtranoncePrefix(p) => {
                // Miners that join later get the prefix of the jobs to come,
                // and only those jobs: one joining would take an older job
                // for one on the new prefix.
                if let Some(c) = self.channel.as_mut() {
                    c.extranonce_prefix = p.extranonce_prefix.clone();
                }
                self.tip_job = None;
                self.jobs.clear();
                self.broadcast(MiningOwned::SetExtranoncePrefix(p))
            }
            MiningOwned::CloseChannel(c) => {
                let out = self.broadcast(MiningOwned::CloseChannel(c));
                self.reset();
                out
            }
            other => self.broadcast(other),
        }
    }

    /// The first job active on the tip since a new prefix: the members
    /// that joined without a job start on it, the others mine it at once
    /// (a SetNewPrevHash would make them drop the jobs they have).
    fn start_untipped(&mut self, job: NewExtendedMiningJobOwned) -> Vec<Action> {
        let untipped = std::mem::take(&mut self.untipped);
        let start = self.start_on_tip().expect("the tip's job was just set");
        let mut out = Vec::new();
        for miner in self.members() {
            match untipped.contains(&miner) {
                true => out.extend(start.clone().map(|m| Action::ToMiner(miner, m))),
                false => out.push(Action::ToMiner(
                    miner,
                    MiningOwned::NewExtendedMiningJob(job.clone()),
                )),
            }
        }
        out
    }

    /// A new tip: the job it names is kept as the tip's, the others dropped.
    fn on_new_prev_hash(&mut self, prev: SetNewPrevHashOwned) -> Vec<Action> {
        let named = |j: &&NewExtendedMiningJobOwned| j.job_id == prev.job_id;
        let job = (self.jobs.iter().find(named))
            .or(self.tip_job.as_ref().filter(named))
            .cloned();
        self.jobs.clear();
        // Every member got the job it names (replayed or sent since).
        if job.is_some() {
            self.untipped.clear();
        }
        self.tip_job = job;
        self.prev = Some(prev.clone());
        self.broadcast(MiningOwned::SetNewPrevHash(prev))
    }

    /// The pool acknowledged the channel's shares up to a sequence number:
    /// each miner is told of its own, in its own numbering.
    fn on_success(&mut self, s: SubmitSharesSuccessOwned) -> Vec<Action> {
        // Up to `last` as sequence numbers wrap: the half of the space
        // behind it, oldest first.
        let last = s.last_sequence_number;
        let from = last.wrapping_sub(u32::MAX / 2);
        let done: Vec<u32> = if from <= last {
            self.shares.range(from..=last).map(|(k, _)| *k).collect()
        } else {
            let before_wrap = self.shares.range(from..);
            before_wrap
                .chain(self.shares.range(..=last))
                .map(|(k, _)| *k)
                .collect()
        };
        let mut per_miner: HashMap<u32, (u32, u32)> = HashMap::new();
        for seq in done {
            if let Some((miner, local)) = self.shares.remove(&seq) {
                let e = per_miner.entry(miner).or_insert((local, 0));
                e.0 = local;
                e.1 += 1;
            }
        }
        per_miner
            .into_iter()
            .map(|(miner, (local, count))| {
                Action::ToMiner(
                    miner,
                    MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                        channel_id: s.channel_id,
                        last_sequence_number: local,
                        new_submits_accepted_count: count,
                        new_shares_sum: 0,
                    }),
                )
            })
            .collect()
    }

    /// A miner's share: renumbered into the channel's sequence space.
    pub fn on_submit(&mut self, miner: u32, mut share: SubmitSharesExtendedOwned) -> Vec<Action> {
        let global = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        self.shares.insert(global, (miner, share.sequence_number));
        share.sequence_number = global;
        vec![Action::Upstream(MiningOwned::SubmitSharesExtended(share))]
    }

    /// A miner left; the channel closes with its last member.
    pub fn on_leave(&mut self, miner: u32) -> Vec<Action> {
        self.members.remove(&miner);
        self.untipped.remove(&miner);
        self.waiting.retain(|m| *m != miner);
        self.shares.retain(|_, (m, _)| *m != miner);
        if self.members.is_empty() && self.waiting.is_empty() {
            if let Some(channel_id) = self.channel_id() {
                self.reset();
                return vec![close(channel_id)];
            }
        }
        vec![]
    }

    /// The channel is gone (pool closed it, or the connection dropped).
    pub fn reset(&mut self) {
        self.channel = None;
        self.opening = false;
        self.waiting.clear();
        self.members.clear();
        self.prev = None;
        self.tip_job = None;
        self.jobs.clear();
        self.untipped.clear();
        self.shares.clear();
    }
}

/// CloseChannel of the shared channel, which no miner uses any more.
fn close(channel_id: u32) -> Action {
    Action::Upstream(MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id,
        reason_code: str0255_truncated("no-miners-left"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_core::binary_sv2::{
        B032Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned,
    };

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const OTHER: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

    fn open(identity: &str) -> OpenExtendedMiningChannelOwned {
        OpenExtendedMiningChannelOwned {
            request_id: 0,
            user_identity: str0255_truncated(identity),
            nominal_hash_rate: 10.0,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: 8,
        }
    }

    fn success() -> OpenExtendedMiningChannelSuccessOwned {
        OpenExtendedMiningChannelSuccessOwned {
            request_id: 1,
            channel_id: 9,
            target: U256Owned::from([0xff; 32]),
            extranonce_size: 12,
            extranonce_prefix: B032Owned::new(vec![1, 2, 3, 4]).unwrap(),
            group_channel_id: 0,
        }
    }

    fn job(id: u32) -> NewExtendedMiningJobOwned {
        NewExtendedMiningJobOwned {
            channel_id: 9,
            job_id: id,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![]).unwrap(),
            coinbase_tx_prefix: B064KOwned::new(vec![1]).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(vec![2]).unwrap(),
        }
    }

    fn share(seq: u32) -> SubmitSharesExtendedOwned {
        SubmitSharesExtendedOwned {
            channel_id: 9,
            sequence_number: seq,
            job_id: 1,
            nonce: 0,
            ntime: 0,
            version: 0,
            extranonce: B032Owned::new(vec![0; 8]).unwrap(),
        }
    }

    fn to_miner(out: &[Action], miner: u32) -> Vec<&MiningOwned> {
        out.iter()
            .filter_map(|o| match o {
                Action::ToMiner(m, msg) if *m == miner => Some(msg),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_channel_for_all_and_late_miners_get_the_current_work() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        let out = a.on_open(1, open(&format!("{KEY}.a")));
        assert!(
            matches!(&out[..], [Action::Upstream(MiningOwned::OpenExtendedMiningChannel(o))]
            if o.user_identity.as_bytes() == a.identity().as_bytes())
        );
        assert!(
            a.on_open(2, open(&format!("{KEY}.b"))).is_empty(),
            "one open upstream"
        );
        let out = a.on_open_success(success());
        assert_eq!(to_miner(&out, 1).len(), 1);
        assert_eq!(to_miner(&out, 2).len(), 1);
        a.on_upstream(MiningOwned::NewExtendedMiningJob(job(1)));
        let prev = SetNewPrevHashOwned {
            channel_id: 9,
            job_id: 1,
            prev_hash: U256Owned::from([7; 32]),
            min_ntime: 100,
            nbits: 0x1d00_ffff,
        };
        let out = a.on_upstream(MiningOwned::SetNewPrevHash(prev));
        assert_eq!(out.len(), 2, "both miners get the prevhash");
        let late = a.on_open(3, open(KEY));
        let msgs = to_miner(&late, 3);
        assert!(matches!(
            msgs[0],
            MiningOwned::OpenExtendedMiningChannelSuccess(_)
        ));
        assert!(matches!(msgs[1], MiningOwned::NewExtendedMiningJob(j) if j.job_id == 1));
        assert!(matches!(msgs[2], MiningOwned::SetNewPrevHash(p) if p.job_id == 1));
    }

    /// A miner joining between a new prefix and its first job (behind a
    /// job declaration client that job comes a round trip later) gets no
    /// job on the old prefix, then starts on that job, activated for it
    /// alone: the member already mining keeps its jobs.
    #[test]
    fn a_miner_joining_between_a_new_prefix_and_its_job_starts_on_that_job() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        a.on_open(1, open(KEY));
        a.on_open_success(success());
        a.on_upstream(MiningOwned::NewExtendedMiningJob(job(1)));
        a.on_upstream(MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id: 9,
            job_id: 1,
            prev_hash: U256Owned::from([7; 32]),
            min_ntime: 100,
            nbits: 0x1d00_ffff,
        }));
        let prefix = stratum_core::mining_sv2::SetExtranoncePrefixOwned {
            channel_id: 9,
            extranonce_prefix: B032Owned::new(vec![9; 4]).unwrap(),
        };
        a.on_upstream(MiningOwned::SetExtranoncePrefix(prefix));
        let joined = a.on_open(2, open(KEY));
        assert!(
            matches!(&to_miner(&joined, 2)[..], [MiningOwned::OpenExtendedMiningChannelSuccess(s)]
                if s.extranonce_prefix.as_bytes() == [9; 4]),
            "{joined:?}"
        );
        let mut renewed = job(2);
        renewed.min_ntime = Sv2OptionOwned::new(Some(100));
        let out = a.on_upstream(MiningOwned::NewExtendedMiningJob(renewed));
        assert!(
            matches!(&to_miner(&out, 1)[..], [MiningOwned::NewExtendedMiningJob(j)]
                if j.job_id == 2 && j.min_ntime.clone().into_inner() == Some(100)),
            "{out:?}"
        );
        let started = |msgs: &[&MiningOwned]| {
            matches!(msgs, [MiningOwned::NewExtendedMiningJob(j), MiningOwned::SetNewPrevHash(p)]
                if j.job_id == 2 && j.min_ntime.clone().into_inner().is_none()
                    && (p.job_id, p.prev_hash.to_array(), p.min_ntime) == (2, [7; 32], 100))
        };
        assert!(started(&to_miner(&out, 2)), "{out:?}");
        // Started once: a miner joining now starts the same way.
        let later = a.on_open(3, open(KEY));
        assert!(started(&to_miner(&later, 3)[1..]), "{later:?}");
        let next = a.on_upstream(MiningOwned::NewExtendedMiningJob(job(3)));
        assert_eq!(to_miner(&next, 2).len(), 1, "{next:?}");
    }

    /// The pool's success for the shared channel's shares up to `last`.
    fn success_up_to(last: u32, count: u32) -> MiningOwned {
        MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id: 9,
            last_sequence_number: last,
            new_submits_accepted_count: count,
            new_shares_sum: count.into(),
        })
    }

    #[test]
    fn shares_are_renumbered_and_answers_go_back_to_their_miner() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        a.on_open(1, open(KEY));
        a.on_open(2, open(KEY));
        a.on_open_success(success());
        let mut upstream = vec![];
        for (miner, local) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
            match &a.on_submit(miner, share(local))[..] {
                [Action::Upstream(MiningOwned::SubmitSharesExtended(s))] => {
                    upstream.push(s.sequence_number)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(upstream, vec![1, 2, 3, 4]);
        let err = a.on_upstream(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
            channel_id: 9,
            sequence_number: 2,
            error_code: str0255_truncated("stale-share"),
        }));
        assert!(
            matches!(to_miner(&err, 2)[..], [MiningOwned::SubmitSharesError(e)] if e.sequence_number == 1)
        );
        let ok = a.on_upstream(success_up_to(4, 3));
        assert!(
            matches!(to_miner(&ok, 1)[..], [MiningOwned::SubmitSharesSuccess(s)]
            if s.last_sequence_number == 2 && s.new_submits_accepted_count == 2)
        );
        assert!(
            matches!(to_miner(&ok, 2)[..], [MiningOwned::SubmitSharesSuccess(s)]
            if s.last_sequence_number == 2 && s.new_submits_accepted_count == 1)
        );
    }

    #[test]
    fn a_success_past_the_wrap_of_the_channels_numbering_answers_the_shares_before_it() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        a.on_open(1, open(KEY));
        a.on_open_success(success());
        a.next_sequence = u32::MAX - 1;
        for local in 1..=3 {
            a.on_submit(1, share(local));
        }
        let ok = a.on_upstream(success_up_to(1, 3));
        assert!(
            matches!(to_miner(&ok, 1)[..], [MiningOwned::SubmitSharesSuccess(s)]
            if s.last_sequence_number == 3 && s.new_submits_accepted_count == 3),
            "{ok:?}"
        );
        assert!(a.shares.is_empty());
    }

    #[test]
    fn another_key_is_refused_and_the_last_miner_closes_the_channel() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        let out = a.on_open(5, open(OTHER));
        assert!(matches!(
            to_miner(&out, 5)[..],
            [MiningOwned::OpenMiningChannelError(_)]
        ));
        a.on_open(1, open(KEY));
        a.on_open_success(success());
        let out = a.on_leave(1);
        assert!(
            matches!(&out[..], [Action::Upstream(MiningOwned::CloseChannel(c))] if c.channel_id == 9)
        );
        assert_eq!(a.channel_id(), None);
    }

    #[test]
    fn a_channel_opened_after_every_miner_asking_left_is_closed() {
        let mut a = Aggregate::new(KEY.parse().unwrap());
        a.on_open(1, open(KEY));
        assert!(a.on_leave(1).is_empty(), "nothing open to close yet");
        let out = a.on_open_success(success());
        assert!(
            matches!(&out[..], [Action::Upstream(MiningOwned::CloseChannel(c))] if c.channel_id == 9),
            "{out:?}"
        );
        assert_eq!(a.channel_id(), None);
        let out = a.on_open(2, open(KEY));
        assert!(
            matches!(
                &out[..],
                [Action::Upstream(MiningOwned::OpenExtendedMiningChannel(_))]
            ),
            "the next miner opens it again: {out:?}"
        );
    }
}

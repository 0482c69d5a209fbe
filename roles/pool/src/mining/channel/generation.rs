//! One extranonce prefix of a channel: the channels_sv2 channel built on it
//! and the jobs it numbered. A renewal starts a new generation; the one it
//! replaces still validates the shares of its jobs until the chain tip
//! moves (or another channel needs its prefix), since SetExtranoncePrefix
//! applies only to jobs sent after it.
//!
//! A share is paid at its job's target, so no header may be a share of two
//! jobs of different targets: a miner would submit each hash under the job
//! paying most, or hold back the hashes of an easy job until a job with the
//! same headers came at a harder target. The pool numbers its jobs'
//! coinbases by target, so its jobs never share headers across targets; a
//! custom job whose headers a job of this tip had at another target, on
//! any channel, is refused ([`CustomSpaces`]). Each header space has one
//! target, its first job's on the tip, which its shares must meet and are
//! paid at.

use std::collections::{HashMap, HashSet};

use mint_quote_sv2::CoinbaseProof;
use stratum_core::bitcoin::hashes::{sha256, Hash, HashEngine};
use stratum_core::bitcoin::Target;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::channels_sv2::{
    chain_tip::ChainTip,
    server::{
        extended::ExtendedChannel,
        jobs::{extended::ExtendedJob, standard::StandardJob},
        share_accounting::{ShareValidationError, ShareValidationResult},
        standard::StandardChannel,
    },
};
use stratum_core::mining_sv2::{
    SetCustomMiningJobOwned, ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
    ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
};

use super::custom_spaces::{CustomSpaces, HeaderSpace};
use super::{proof, Kind, Submission, Validation};

/// Header spaces a custom-work channel adds on one extranonce prefix and
/// chain tip (a custom job past them is refused until the tip moves or the
/// channel is renewed): custom jobs' spaces are kept after channels_sv2
/// drops the jobs, or an old job's held-back hashes could come again under
/// a new job with its coinbase.
pub const MAX_CUSTOM_SPACES: usize = 16_384;

/// SetCustomMiningJob.Error codes.
pub const HEADERS_AT_ANOTHER_TARGET: &str = "job-headers-at-another-target";
pub const TOO_MANY_JOBS: &str = "too-many-jobs-on-this-tip";

pub(super) struct Generation {
    pub kind: Kind,
    /// The header space of each job channels_sv2 still accepts shares on.
    job_spaces: HashMap<u32, HeaderSpace>,
    /// The target of each space of those jobs: that of its first job. (A
    /// custom-work channel's are in its [`CustomSpaces`].)
    space_targets: HashMap<HeaderSpace, Target>,
    /// What the downstream's job ids add to channels_sv2's. channels_sv2
    /// numbers a new generation's jobs from 1 again: sent past every id
    /// sent before, no id ever names two jobs, and a share names the
    /// generation of its job.
    pub job_id_offset: u32,
    /// The highest job id channels_sv2 gave in this generation.
    pub last_job_id: u32,
    /// On a custom-work channel, where its spaces are kept, and how many
    /// it added there since the channel's tip moved (not reset when the
    /// pool's tip comes back: the pool-wide bound still counts them).
    custom_spaces: Option<CustomSpaces>,
    custom_spaces_added: usize,
}

impl Generation {
    pub fn new(kind: Kind, job_id_offset: u32, custom_spaces: Option<CustomSpaces>) -> Generation {
        Generation {
            kind,
            job_spaces: HashMap::new(),
            space_targets: HashMap::new(),
            job_id_offset,
            last_job_id: 0,
            custom_spaces,
            custom_spaces_added: 0,
        }
    }

    /// Where its spaces are kept, on a custom-work channel.
    pub fn custom_spaces(&self) -> Option<&CustomSpaces> {
        self.custom_spaces.as_ref()
    }

    /// Keeps its spaces in `spaces` from now on (a channel becoming one of
    /// custom work, before its first job).
    pub fn keep_spaces_in(&mut self, spaces: CustomSpaces) {
        self.custom_spaces = Some(spaces);
    }

    /// The offset of the generation that follows this one.
    pub fn next_offset(&self) -> u32 {
        self.job_id_offset.wrapping_add(self.last_job_id)
    }

    /// The id the downstream knows a job by.
    pub fn outward(&self, job_id: u32) -> u32 {
        job_id.wrapping_add(self.job_id_offset)
    }

    /// The channels_sv2 id of the job the downstream sent as `sent`.
    pub fn inward(&self, sent: u32) -> u32 {
        sent.wrapping_sub(self.job_id_offset)
    }

    /// Whether `sent` may name one of this generation's jobs: an id sent
    /// before it began names an older one's (the ids of later generations
    /// are the channel's to tell apart, newest generation first).
    pub fn numbered(&self, sent: u32) -> bool {
        !(1..=self.job_id_offset).contains(&sent)
    }

    /// Records job `job_id` (active or past), made at `target`. A job with
    /// the headers of one before it on the tip takes that one's target.
    pub fn record_job(&mut self, job_id: u32, target: Target) {
        let space = match &self.kind {
            Kind::Standard(c) => standard_job(c, job_id).map(standard_space),
            Kind::Extended(c) => extended_job(c, job_id).map(extended_space),
        };
        let Some(space) = space else {
            return;
        };
        self.job_spaces.insert(job_id, space);
        match &self.custom_spaces {
            Some(spaces) => self.custom_spaces_added += spaces.record(space, target) as usize,
            None => {
                self.space_targets.entry(space).or_insert(target);
            }
        }
    }

    /// The target a share of job `job_id` must meet and is paid at, if the
    /// job is live.
    pub fn job_target(&self, job_id: u32) -> Option<Target> {
        let space = self.job_spaces.get(&job_id)?;
        match &self.custom_spaces {
            Some(spaces) => spaces.target(space),
            None => self.space_targets.get(space).copied(),
        }
    }

    /// Whether custom job `m` may be set at `target`: no job of the pool's
    /// tip, on any channel, had its headers at another target, and there
    /// is room to remember them (more for the channel's `first` job on a
    /// tip or a prefix: a client should have a job to mine).
    pub fn check_custom_job(
        &self,
        m: &SetCustomMiningJobOwned,
        target: Target,
        first: bool,
    ) -> Result<(), (String, &'static str)> {
        let (Kind::Extended(c), Some(spaces)) = (&self.kind, &self.custom_spaces) else {
            return Ok(());
        };
        // Built as the channel will build it, on a factory of its own: the
        // channel's would number a job.
        let job = JobFactory::new(true, None, None)
            .new_extended_job_from_custom_job(
                m.clone(),
                c.get_extranonce_prefix().to_vec(),
                c.get_full_extranonce_size(),
            )
            .map_err(|e| (format!("{e:?}"), "invalid-coinbase-tx"))?;
        match spaces.target(&extended_space(&job)) {
            Some(known) if known != target => Err((
                format!(
                    "a job of this tip had these headers at target {known:x}, not {target:x}: \
                     number the coinbase"
                ),
                HEADERS_AT_ANOTHER_TARGET,
            )),
            Some(_) => Ok(()),
            None if !first && self.custom_spaces_added >= MAX_CUSTOM_SPACES => Err((
                format!("{MAX_CUSTOM_SPACES} jobs on this tip already"),
                TOO_MANY_JOBS,
            )),
            None => spaces
                .refusal(first)
                .map_or(Ok(()), |e| Err((e, TOO_MANY_JOBS))),
        }
    }

    /// Forgets every job's target: the chain tip moved. (New maps: a full
    /// one would keep its memory.)
    pub fn forget_all_jobs(&mut self) {
        self.job_spaces = HashMap::new();
        self.space_targets = HashMap::new();
        self.custom_spaces_added = 0;
    }

    /// Forgets the jobs channels_sv2 no longer accepts shares on, and the
    /// targets of their spaces (a custom-work channel's are kept for the
    /// tip in its [`CustomSpaces`]).
    pub fn forget_dropped_jobs(&mut self) {
        let kind = &self.kind;
        self.job_spaces.retain(|job_id, _| match kind {
            Kind::Standard(c) => standard_job(c, *job_id).is_some(),
            Kind::Extended(c) => extended_job(c, *job_id).is_some(),
        });
        let live: HashSet<&HeaderSpace> = self.job_spaces.values().collect();
        self.space_targets.retain(|space, _| live.contains(space));
    }

    pub fn chain_tip(&self) -> Option<&ChainTip> {
        each_kind!(Kind, &self.kind, c => c.get_chain_tip())
    }

    /// Validates a share naming its job by its channels_sv2 id; None when
    /// the share is of the other kind than the channel. `pool_tag` is the
    /// coinbase tag the jobs carry; `locked`: the channel has a locking key,
    /// so an accepted share needs its coinbase proof; `retired`: the last
    /// renewal replaced this generation.
    pub fn validate(
        &mut self,
        share: Submission,
        pool_tag: &str,
        locked: bool,
        retired: bool,
    ) -> Option<Validation> {
        // Before validation: an accepted share's job is the active or a past job.
        let (header, proof) = self
            .share_header(&share)
            .map_or((None, None), |(header, proof)| (Some(header), proof));
        let job_id = share.id().job_id;
        let job_target = self.job_target(job_id);
        let result = match (&mut self.kind, share) {
            (Kind::Standard(c), Submission::Standard(s)) => c.validate_share(s),
            (Kind::Extended(c), Submission::Extended(s)) => c.validate_share(s),
            _ => return None,
        };
        // Its duplicate detection full, a replaced generation's jobs are
        // done with; the channel goes on on the new one.
        let result = match result {
            Err(ShareValidationError::SeenSharesBudgetExhausted) if retired => Err(
                ShareValidationError::Stale(ERROR_CODE_SUBMIT_SHARES_STALE_SHARE),
            ),
            // channels_sv2 checks the target the job was made with; its
            // headers' may be another (the first job's on them).
            Ok(ShareValidationResult::Valid(hash))
                if job_target.is_some_and(|t| Target::from_le_bytes(hash.to_byte_array()) > t) =>
            {
                Err(ShareValidationError::DoesNotMeetTarget(
                    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
                ))
            }
            result => result,
        };
        let proof = match (&result, locked) {
            // A standard job's coinbase is rebuilt only for a share worth a quote.
            (Ok(_), true) => proof.or_else(|| self.standard_proof(job_id, pool_tag)),
            _ => None,
        };
        Some(Validation {
            result,
            header,
            proof,
            job_target,
            retired,
        })
    }

    /// The header a share commits to, rebuilt the way channels_sv2 validates
    /// it; for an extended share also its coinbase proof, which the header's
    /// merkle root is computed from.
    fn share_header(&self, share: &Submission) -> Option<([u8; 80], Option<CoinbaseProof>)> {
        let (merkle_root, proof) = match (&self.kind, share) {
            (Kind::Standard(c), Submission::Standard(s)) => (
                standard_job(c, s.job_id)?.get_merkle_root().to_array(),
                None,
            ),
            (Kind::Extended(c), Submission::Extended(s)) => {
                let proof = proof::extended(extended_job(c, s.job_id)?, s.extranonce.as_bytes());
                let root = ehash::coinbase::merkle_root_of(&proof.coinbase, &proof.merkle_path);
                (root, Some(proof))
            }
            _ => return None,
        };
        let (version, ntime, nonce) =
            each_kind!(Submission, share, s => (s.version, s.ntime, s.nonce));
        let tip = self.chain_tip()?;
        let header = ehash::share::header_bytes(
            version,
            tip.prev_hash().to_array(),
            merkle_root,
            ntime,
            tip.nbits(),
            nonce,
        );
        Some((header, proof))
    }

    /// The coinbase proof of a share on standard job `job_id`, rebuilt.
    fn standard_proof(&self, job_id: u32, pool_tag: &str) -> Option<CoinbaseProof> {
        match &self.kind {
            Kind::Standard(c) => proof::standard(standard_job(c, job_id)?, pool_tag),
            Kind::Extended(_) => None,
        }
    }
}

/// The job a share on a standard channel names: the active one or a past one.
fn standard_job(c: &StandardChannel, job_id: u32) -> Option<&StandardJob> {
    c.get_active_job()
        .filter(|j| j.get_job_id() == job_id)
        .or_else(|| c.get_past_job(job_id))
}

/// The job a share on an extended channel names: the active one or a past one.
fn extended_job(c: &ExtendedChannel, job_id: u32) -> Option<&ExtendedJob> {
    c.get_active_job()
        .filter(|j| j.get_job_id() == job_id)
        .or_else(|| c.get_past_job(job_id))
}

/// The header space of a standard job: its merkle root.
fn standard_space(job: &StandardJob) -> HeaderSpace {
    first_64_bits(job.get_merkle_root().to_array())
}

/// The header space of an extended job: its coinbase around the rollable
/// extranonce (the channel's extranonce prefix in it) and its merkle path.
fn extended_space(job: &ExtendedJob) -> HeaderSpace {
    let mut engine = sha256::Hash::engine();
    let prefix = job.get_coinbase_tx_prefix_without_bip141();
    let suffix = job.get_coinbase_tx_suffix_without_bip141();
    // Lengths first: no other split of the bytes hashes the same.
    for part in [&prefix[..], job.get_extranonce_prefix(), &suffix[..]] {
        engine.input(&(part.len() as u64).to_le_bytes());
        engine.input(part);
    }
    for node in job.get_merkle_path().iter() {
        engine.input(&node.to_array());
    }
    first_64_bits(sha256::Hash::from_engine(engine).to_byte_array())
}

fn first_64_bits(hash: [u8; 32]) -> HeaderSpace {
    u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"))
}

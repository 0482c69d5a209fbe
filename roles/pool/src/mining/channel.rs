//! One mining channel, standard or extended, behind methods that do not care
//! which: channels_sv2 has a type per kind, the pool treats them alike.
//! The kind is matched here and in `generation` (a channel's jobs on one
//! extranonce prefix), nowhere else.

use ehash::{LockingKey, UnitBits};
use mint_quote_sv2::CoinbaseProof;
use stratum_core::binary_sv2::{B032Owned, U256Owned};
use stratum_core::bitcoin::{Target, TxOut};
use stratum_core::channels_sv2::{
    extranonce_manager::{ExtranonceAllocator, ExtranonceAllocatorError},
    seen_shares_budget,
    server::{
        error::{ExtendedChannelError, StandardChannelError},
        extended::ExtendedChannel,
        jobs::{extended::ExtendedJob, standard::StandardJob},
        share_accounting::{ShareValidationError, ShareValidationResult},
        standard::StandardChannel,
    },
};
use stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned, SetCustomMiningJobOwned,
    SetExtranoncePrefixOwned, SetNewPrevHashOwned as MiningSetNewPrevHash,
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tracing::{debug, warn};
use vardiff::{Vardiff, VardiffConfig};

use super::{mining, proof, u256, Action, ConnId, CoreConfig};
use batch::Batching;
pub(super) use custom_spaces::{CustomSpaces, SpaceBounds};
use generation::Generation;
#[cfg(test)]
pub(super) use generation::{HEADERS_AT_ANOTHER_TARGET, MAX_CUSTOM_SPACES, TOO_MANY_JOBS};

/// OpenMiningChannel.Error code: no extranonce prefix is free.
pub(super) const CAPACITY_EXHAUSTED: &str = "channel-capacity-exhausted";

/// How many shares a channel due for renewal takes between two attempts
/// (an attempt fails only when no extranonce prefix is free).
const RENEW_RETRY_SHARES: usize = 64;

/// The channels_sv2 channel behind a [`Channel`].
enum Kind {
    Standard(Box<StandardChannel>),
    Extended(Box<ExtendedChannel>),
}

/// What a channels_sv2 channel is built from: a downstream's open request,
/// or a channel being renewed.
struct KindSpec {
    identity: String,
    /// Some for an extended channel: the rollable extranonce it needs.
    min_extranonce_size: Option<usize>,
    /// Already clamped to the pool's minimum difficulty.
    max_target: Target,
    hashrate: f32,
}

impl KindSpec {
    /// Allocates an extranonce prefix, then takes an id from `new_id` (not
    /// before: a refused allocation uses none). Err: what went wrong and the
    /// error code refusing the channel.
    fn build(
        &self,
        allocator: &mut ExtranonceAllocator,
        new_id: impl FnOnce() -> u32,
        config: &CoreConfig,
    ) -> Result<Kind, (String, &'static str)> {
        let (batch, spm, signature) = (
            config.share_batch_size,
            config.shares_per_minute,
            config.pool_signature.clone(),
        );
        let (identity, max_target, hashrate) =
            (self.identity.clone(), self.max_target, self.hashrate);
        let refused = |e: &dyn std::fmt::Debug, code| (format!("{e:?}"), code);
        Ok(match self.min_extranonce_size {
            Some(min_size) => {
                let prefix = allocator
                    .allocate_extended(min_size)
                    .map_err(|e| refused(&("extranonce", &e), extranonce_code(&e)))?;
                let rollable = allocator.rollable_extranonce_size() as u16;
                // Compact: rustfmt would give each of the eleven arguments a line.
                #[rustfmt::skip]
                let channel = ExtendedChannel::new_for_pool(
                    new_id(), identity, prefix, max_target, hashrate, true, rollable,
                    batch, spm, signature, None,
                )
                .map_err(|e| refused(&e, e.code()))?;
                Kind::Extended(Box::new(channel))
            }
            None => {
                let prefix = allocator
                    .allocate_standard()
                    .map_err(|e| refused(&("extranonce", &e), extranonce_code(&e)))?;
                // As compact as the extended one above.
                #[rustfmt::skip]
                let channel = StandardChannel::new_for_pool(
                    new_id(), identity, prefix, max_target, hashrate,
                    batch, spm, signature, None,
                )
                .map_err(|e| refused(&e, e.code()))?;
                Kind::Standard(Box::new(channel))
            }
        })
    }
}

/// Evaluates `$body` with `$c` bound to the value of either variant of
/// `$enum` (a channel, a request, a share): the channels_sv2 and mining_sv2
/// types of both kinds have the same method and field names.
macro_rules! each_kind {
    ($enum:ident, $value:expr, $c:ident => $body:expr) => {
        match $value {
            $enum::Standard($c) => $body,
            $enum::Extended($c) => $body,
        }
    };
}

mod batch;
mod custom_spaces;
mod generation;

pub(super) use batch::Batch;

/// A downstream's request to open a channel.
pub(super) enum OpenRequest {
    Standard(OpenStandardMiningChannelOwned),
    Extended(OpenExtendedMiningChannelOwned),
}

/// A downstream's share.
pub(super) enum Submission {
    Standard(SubmitSharesStandardOwned),
    Extended(SubmitSharesExtendedOwned),
}

impl OpenRequest {
    pub(super) fn request_id(&self) -> u32 {
        each_kind!(OpenRequest, self, m => m.request_id)
    }

    pub(super) fn user_identity(&self) -> String {
        let identity = each_kind!(OpenRequest, self, m => m.user_identity.as_bytes());
        String::from_utf8_lossy(identity).to_string()
    }

    /// The channel it asks for, within the pool's minimum difficulty.
    fn kind_spec(&self, config: &CoreConfig) -> KindSpec {
        let (min_extranonce_size, max_target, hashrate) = match self {
            Self::Extended(m) => (
                Some(m.min_extranonce_size as usize),
                &m.max_target,
                m.nominal_hash_rate,
            ),
            Self::Standard(m) => (None, &m.max_target, m.nominal_hash_rate),
        };
        KindSpec {
            identity: self.user_identity(),
            min_extranonce_size,
            max_target: config.clamp(Target::from_le_bytes(max_target.to_array())),
            hashrate,
        }
    }

    pub(super) fn kind_name(&self) -> &'static str {
        match self {
            Self::Standard(_) => "standard",
            Self::Extended(_) => "extended",
        }
    }
}

/// Which share: what every SubmitShares names.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShareId {
    pub channel_id: u32,
    pub sequence_number: u32,
    pub job_id: u32,
}

impl Submission {
    pub(super) fn id(&self) -> ShareId {
        each_kind!(Submission, self, s => ShareId {
            channel_id: s.channel_id,
            sequence_number: s.sequence_number,
            job_id: s.job_id,
        })
    }
}

/// A share whose job id is the one channels_sv2 knows its job by, in the
/// generation of the job.
pub(super) struct Inward {
    share: Submission,
    /// Of the generation the last renewal replaced.
    retired: bool,
}

/// What validating a share gave.
pub(super) struct Validation {
    pub result: Result<ShareValidationResult, ShareValidationError>,
    /// The share's block header, rebuilt the way channels_sv2 validated it.
    pub header: Option<[u8; 80]>,
    /// Where an accepted share's work was done, for the mint (only on a
    /// channel with a locking key).
    pub proof: Option<CoinbaseProof>,
    /// The target the share had to meet and is paid at (that of the first
    /// job of the tip with its job's headers), if the channel knows the job.
    pub job_target: Option<Target>,
    /// The share is of a job sent before the channel was last renewed.
    pub retired: bool,
}

/// The error code channels_sv2 attaches to a refused open or update
/// ("invalid-channel" for an error that carries none).
trait ErrorCode {
    fn code(&self) -> &'static str;
}

macro_rules! impl_error_code {
    ($($error:ty: $($variant:ident)|+;)+) => {$(
        impl ErrorCode for $error {
            fn code(&self) -> &'static str {
                match self {
                    $(Self::$variant(c))|+ => c,
                    _ => "invalid-channel",
                }
            }
        }
    )+};
}

impl_error_code! {
    ExtendedChannelError: OpenChannelInvalidNominalHashrate | OpenChannelInvalidMaxTarget
        | RequestedMinExtranonceSizeTooLarge | UpdateChannelInvalidNominalHashrate
        | UpdateChannelInvalidMaxTarget;
    StandardChannelError: OpenChannelInvalidNominalHashrate | OpenChannelInvalidMaxTarget
        | UpdateChannelInvalidNominalHashrate | UpdateChannelInvalidMaxTarget;
}

/// The job message of a job, whichever its kind, naming it `job_id`.
trait JobMessage {
    fn message(&self, job_id: u32) -> MiningOwned;
}

impl JobMessage for StandardJob {
    fn message(&self, job_id: u32) -> MiningOwned {
        let mut message = self.get_job_message().clone();
        message.job_id = job_id;
        MiningOwned::NewMiningJob(message)
    }
}

impl JobMessage for ExtendedJob {
    fn message(&self, job_id: u32) -> MiningOwned {
        let mut message = self.get_job_message().clone();
        message.job_id = job_id;
        MiningOwned::NewExtendedMiningJob(message)
    }
}

/// One open channel of a downstream connection.
pub(super) struct Channel {
    /// The connection that owns it.
    pub conn: ConnId,
    /// From the channel's user_identity (None only when keys are not required).
    pub locking_key: Option<LockingKey>,
    /// Its Open…Success is queued for the peer: ehash notifications for it
    /// may follow (never before, or the peer could not place them).
    pub announced: bool,
    /// Its jobs are the custom jobs its downstream sets, never the pool's
    /// ([`Channel::set_custom_work`]).
    pub custom_work: bool,
    /// Custom jobs whose ids (as sent) are at most this are on a chain tip
    /// the pool has since left: their shares are stale.
    custom_jobs_stale_through: Option<u32>,
    jobs: Generation,
    /// The generation the last renewal replaced, until the chain tip moves
    /// (or a channel of another key, with no prefix free, takes its prefix).
    retired: Option<Box<Generation>>,
    /// The pool's clock at the last renewal.
    renewed_ms: u64,
    batching: Batching,
    vardiff: Vardiff,
    /// Share hashes channels_sv2 holds for duplicate detection (all those
    /// accepted since the chain tip changed or the channel was renewed),
    /// against its budget: it refuses every share once that is full.
    seen_shares: usize,
    seen_shares_budget: usize,
    /// The number the coinbase of each job made at the channel's current
    /// target on its current prefix carries: random at open, one more at
    /// each change of target and each renewal. So two jobs of the pool
    /// share headers only when one channel made them at one target on one
    /// prefix, even when a prefix comes back to a channel that held it.
    job_number: u64,
    /// Idle checks in a row that found no share accepted over their whole
    /// period; None until the first check since the channel opened or last
    /// had a share accepted.
    idle_checks: Option<u32>,
    /// With a mint, the unit its shares are paid in: its targets are worth
    /// whole amounts of it ([`ehash::whole_units_target`]).
    paid_in: Option<UnitBits>,
}

impl Channel {
    /// Opens a channel for `request`: allocates its extranonce prefix, then
    /// takes an id from `new_id` (not before: a refused allocation uses none).
    /// The error code refusing it otherwise.
    pub(super) fn open(
        conn: ConnId,
        request: &OpenRequest,
        locking_key: Option<LockingKey>,
        allocator: &mut ExtranonceAllocator,
        new_id: impl FnOnce() -> u32,
        config: &CoreConfig,
        now_ms: u64,
    ) -> Result<Channel, &'static str> {
        let refuse = |e: &dyn std::fmt::Display, code| {
            debug!(conn, "refusing {} channel: {e}", request.kind_name());
            code
        };
        let kind = request
            .kind_spec(config)
            .build(allocator, new_id, config)
            .map_err(|(e, code)| refuse(&e, code))?;
        let nominal = each_kind!(Kind, &kind, c => c.get_nominal_hashrate());
        let vardiff = Vardiff::new(vardiff_config(config), now_ms, nominal as f64)
            .map_err(|e| refuse(&e, "invalid-nominal-hashrate"))?;
        let mut channel = Channel {
            conn,
            locking_key,
            announced: false,
            custom_work: false,
            custom_jobs_stale_through: None,
            jobs: Generation::new(kind, 0, None),
            retired: None,
            renewed_ms: 0,
            batching: Batching::new(config.share_batch_size),
            vardiff,
            seen_shares: 0,
            seen_shares_budget: seen_shares_budget(config.shares_per_minute as f64),
            job_number: rand::random(),
            idle_checks: None,
            paid_in: config.whole_units.then_some(config.unit_bits),
        };
        channel.pay_whole_units();
        channel.report_target(now_ms);
        Ok(channel)
    }

    /// The error code refusing `request` for anything but a full allocator:
    /// channels_sv2 checks the hash rate and the target only once it holds
    /// a prefix. Opened on a fresh allocator of `allocator`'s layout, so no
    /// channel gives its prefix up for a request refused anyway.
    pub(super) fn check_open(
        request: &OpenRequest,
        allocator: &ExtranonceAllocator,
        config: &CoreConfig,
    ) -> Result<(), &'static str> {
        let mut fresh = ExtranonceAllocator::new(
            allocator.local_prefix().to_vec(),
            allocator.total_extranonce_len(),
            allocator.max_channels(),
        )
        .map_err(|e| extranonce_code(&e))?;
        Channel::open(0, request, None, &mut fresh, || 0, config, 0).map(drop)
    }

    /// The OpenStandardMiningChannelSuccess / OpenExtendedMiningChannelSuccess
    /// answering `request_id`.
    pub(super) fn open_success(&self, request_id: u32) -> MiningOwned {
        let channel_id = self.id();
        let target = u256(&self.target());
        let extranonce_prefix =
            each_kind!(Kind, &self.jobs.kind, c => c.get_extranonce_prefix().to_vec());
        let extranonce_prefix = B032Owned::new(extranonce_prefix).expect("at most 32 bytes");
        match &self.jobs.kind {
            Kind::Standard(_) => MiningOwned::OpenStandardMiningChannelSuccess(
                OpenStandardMiningChannelSuccessOwned {
                    request_id,
                    channel_id,
                    target,
                    extranonce_prefix,
                    group_channel_id: 0,
                },
            ),
            Kind::Extended(c) => MiningOwned::OpenExtendedMiningChannelSuccess(
                OpenExtendedMiningChannelSuccessOwned {
                    request_id,
                    channel_id,
                    target,
                    extranonce_size: c.get_rollable_extranonce_size(),
                    extranonce_prefix,
                    group_channel_id: 0,
                },
            ),
        }
    }

    pub(super) fn id(&self) -> u32 {
        each_kind!(Kind, &self.jobs.kind, c => c.get_channel_id())
    }

    pub(super) fn target(&self) -> Target {
        each_kind!(Kind, &self.jobs.kind, c => *c.get_target())
    }

    pub(super) fn nominal_hashrate(&self) -> f32 {
        each_kind!(Kind, &self.jobs.kind, c => c.get_nominal_hashrate())
    }

    /// The target a share of a job of the current generation must meet and
    /// is paid at, if the channel still knows the job.
    #[cfg(test)]
    pub(super) fn job_target(&self, job_id: u32) -> Option<Target> {
        self.jobs.job_target(job_id)
    }

    /// Sets a new nominal hashrate (and maximum target, from UpdateChannel);
    /// the channel's new target, or the UpdateChannel.Error code. A new
    /// target takes a new job number at once: a future job made before,
    /// activated at the new target, keeps the old number, which no later
    /// job gets.
    pub(super) fn update(
        &mut self,
        nominal_hashrate: f32,
        max_target: Option<Target>,
    ) -> Result<Target, &'static str> {
        let before = self.target();
        each_kind!(Kind, &mut self.jobs.kind, c => c
            .update_channel(nominal_hashrate, max_target)
            .map_err(|e| e.code()))?;
        self.pay_whole_units();
        let target = self.target();
        if target != before {
            self.job_number = self.job_number.wrapping_add(1);
        }
        Ok(target)
    }

    /// Moves its target to the nearer one worth a whole amount of ehash,
    /// within its maximum target: shares are paid their work rounded down.
    fn pay_whole_units(&mut self) {
        let Some(unit_bits) = self.paid_in else {
            return;
        };
        each_kind!(Kind, &mut self.jobs.kind, c => {
            let target =
                ehash::whole_units_target(*c.get_target(), *c.get_requested_max_target(), unit_bits);
            c.set_target(target).expect("a whole amount's target is not zero");
        });
    }

    /// The downstream declared its hash rate (UpdateChannel): vardiff
    /// starts over from it, so the pool does not fight a downstream that
    /// runs its own.
    pub(super) fn on_declared_hashrate(&mut self, now_ms: u64, hashrate: f32) {
        self.vardiff.reset(now_ms, hashrate as f64);
        self.report_target(now_ms);
    }

    /// Tells vardiff the miner mines at the channel's target from now on:
    /// the target may not be the one vardiff asked for (a declared hash
    /// rate, the miner's maximum target), and every change of it is sent
    /// with a job at once (`retargeted`).
    fn report_target(&mut self, now_ms: u64) {
        let work = ehash::work_hashes(self.target()) as f64;
        self.vardiff.on_difficulty(now_ms, work);
    }

    /// Runs vardiff; the channel's new target when it changed.
    pub(super) fn vardiff_tick(&mut self, now_ms: u64) -> Option<Target> {
        let new_hashrate = self.vardiff.tick(now_ms)? as f32;
        let target = self.target();
        let new_target = match self.update(new_hashrate, None) {
            Ok(t) => t,
            Err(code) => {
                debug!(
                    channel_id = self.id(),
                    new_hashrate, code, "vardiff: refused"
                );
                return None;
            }
        };
        self.report_target(now_ms);
        if new_target == target {
            return None;
        }
        debug!(channel_id = self.id(), new_hashrate, "vardiff: new target");
        Some(new_target)
    }

    /// Makes it a channel whose jobs its downstream sets, the header spaces
    /// of those jobs kept in the pool's `spaces`.
    pub(super) fn set_custom_work(&mut self, spaces: CustomSpaces) {
        self.custom_work = true;
        self.jobs.keep_spaces_in(spaces);
    }

    /// Counts an idle check: the whole periods between checks that have
    /// gone by since the channel opened or last had a share accepted.
    /// Counted in checks, not by a clock, so a stepped clock closes nothing.
    pub(super) fn idle_check(&mut self) -> u32 {
        let checks = self.idle_checks.map_or(0, |n| n + 1);
        self.idle_checks = Some(checks);
        checks
    }

    /// A template: the job message built from it (a future job, or the
    /// new active job of a non-future template).
    pub(super) fn on_new_template(
        &mut self,
        template: NewTemplateOwned,
        outputs: Vec<TxOut>,
    ) -> Option<Action> {
        if self.custom_work {
            return None;
        }
        let (channel_id, template_id) = (self.id(), template.template_id);
        let future = template.future_template;
        // Every job of a channel with a key commits its coinbase to that key.
        let mut outputs = outputs;
        outputs.extend(self.locking_key.as_ref().map(ehash::key_commitment_output));
        // No header is a share of two jobs of different targets (see
        // `Generation`).
        outputs.push(ehash::coinbase::job_number_output(self.job_number));
        let offset = self.jobs.job_id_offset;
        let built = each_kind!(Kind, &mut self.jobs.kind, c => {
            match c.on_new_template(template, outputs) {
                Err(e) => Err(format!("{e:?}")),
                Ok(()) => Ok(if future {
                    c.get_future_job_id_from_template_id(template_id)
                        .and_then(|id| c.get_future_job(id))
                } else {
                    c.get_active_job()
                }
                .map(|job| (job.get_job_id(), job.message(job.get_job_id().wrapping_add(offset))))),
            }
        });
        let (job_id, message) = match built {
            Err(e) => {
                warn!(channel_id, template_id, "cannot build a job: {e}");
                return None;
            }
            Ok(job) => job?,
        };
        self.jobs.last_job_id = self.jobs.last_job_id.max(job_id);
        if !future {
            self.jobs.record_job(job_id, self.target());
            self.jobs.forget_dropped_jobs();
        }
        Some(Action::Send(self.conn, mining(message)))
    }

    /// The chain tip moved: the SetNewPrevHash naming the job now active.
    pub(super) fn on_set_new_prev_hash(&mut self, prev: &SetNewPrevHashOwned) -> Option<Action> {
        if self.custom_work {
            // The downstream sets its jobs on the new tip itself; until it
            // does, shares of those it set are stale, as a pool job's are.
            if self.is_new_tip(&prev.prev_hash) {
                self.custom_jobs_stale_through = Some(self.jobs.outward(self.jobs.last_job_id));
            }
            return None;
        }
        let channel_id = self.id();
        // channels_sv2 forgets the shares it has seen only on a new tip.
        let new_tip = self.is_new_tip(&prev.prev_hash);
        let applied = each_kind!(Kind, &mut self.jobs.kind, c => c
            .on_set_new_prev_hash(prev.clone())
            .map(|()| c.get_active_job().map(|j| j.get_job_id()))
            .map_err(|e| format!("{e:?}")));
        let job_id = match applied {
            Ok(job_id) => job_id,
            Err(e) => {
                warn!(channel_id, "cannot apply SetNewPrevHash: {e}");
                return None;
            }
        };
        self.jobs.forget_all_jobs();
        if new_tip {
            self.on_new_tip();
        }
        let job_id = job_id?;
        self.jobs.record_job(job_id, self.target());
        Some(Action::Send(
            self.conn,
            mining(MiningOwned::SetNewPrevHash(MiningSetNewPrevHash {
                channel_id,
                job_id: self.jobs.outward(job_id),
                prev_hash: prev.prev_hash.clone(),
                min_ntime: prev.header_timestamp,
                nbits: prev.n_bits,
            })),
        ))
    }

    /// The active job's message (min_ntime set: mined at once), for a
    /// renewed channel.
    pub(super) fn active_job(&self) -> Option<Action> {
        let message = each_kind!(Kind, &self.jobs.kind, c => {
            let job = c.get_active_job()?;
            job.message(self.jobs.outward(job.get_job_id()))
        });
        Some(Action::Send(self.conn, mining(message)))
    }

    /// A custom job (checked by the job declarator) becomes the active job;
    /// its id. Err: why it is refused, and the error code. It is refused
    /// when a job set before on this tip had its headers at another target
    /// (the downstream must number its coinbases, as jd-client does), since
    /// a miner holding back hashes of the old job would have them paid at
    /// the new one.
    pub(super) fn on_set_custom_mining_job(
        &mut self,
        m: SetCustomMiningJobOwned,
    ) -> Result<u32, (String, &'static str)> {
        let new_tip = self.is_new_tip(&m.prev_hash);
        // The first job on a tip, or on a new prefix (after a renewal the
        // jobs of the old one go stale): the client needs it to mine.
        let first = new_tip || self.jobs.chain_tip().is_none();
        self.jobs.check_custom_job(&m, self.target(), first)?;
        let Kind::Extended(c) = &mut self.jobs.kind else {
            let e = "custom jobs go on extended channels";
            return Err((e.into(), "invalid-channel-id"));
        };
        let job_id = c
            .on_set_custom_mining_job(m)
            .map_err(|e| (format!("{e:?}"), "invalid-coinbase-tx"))?;
        if new_tip {
            self.jobs.forget_all_jobs();
            self.on_new_tip();
        }
        self.jobs.record_job(job_id, self.target());
        self.jobs.forget_dropped_jobs();
        self.jobs.last_job_id = self.jobs.last_job_id.max(job_id);
        Ok(self.jobs.outward(job_id))
    }

    /// Whether `prev_hash` is another chain tip than the channel's. A new
    /// generation has no tip before its first job: the replaced one's is
    /// the channel's.
    fn is_new_tip(&self, prev_hash: &U256Owned) -> bool {
        let tip = (self.jobs.chain_tip()).or_else(|| self.retired.as_deref()?.chain_tip());
        tip.is_none_or(|tip| tip.prev_hash() != *prev_hash)
    }

    /// The chain tip moved: channels_sv2 forgot the shares it had seen, and
    /// every job sent before the last renewal is stale.
    fn on_new_tip(&mut self) {
        self.seen_shares = 0;
        self.retired = None;
    }

    /// When the generation the last renewal replaced was retired, by the
    /// pool's clock; None when there is none.
    pub(super) fn retired_since_ms(&self) -> Option<u64> {
        self.retired.as_ref().map(|_| self.renewed_ms)
    }

    /// Drops the generation the last renewal replaced, if any, freeing its
    /// extranonce prefix: shares of the jobs sent before the renewal are
    /// stale from now on.
    pub(super) fn drop_retired(&mut self) -> bool {
        let dropped = self.retired.take().is_some();
        if dropped {
            debug!(
                channel_id = self.id(),
                "jobs sent before the last renewal dropped to free their extranonce prefix"
            );
        }
        dropped
    }

    /// `share` with the job id channels_sv2 knows its job by, in the
    /// generation of its job; None for a job of a generation no longer
    /// kept, or a custom job on a tip the pool has left (stale). Any other
    /// id goes to the current generation as it is, where channels_sv2
    /// refuses an id it never gave as `invalid-job-id`.
    pub(super) fn inward(&self, mut share: Submission) -> Option<Inward> {
        let sent = share.id().job_id;
        if self
            .custom_jobs_stale_through
            .is_some_and(|last| sent <= last)
        {
            return None;
        }
        let retired = !self.jobs.numbered(sent);
        let generation = match retired {
            false => &self.jobs,
            true => self.retired.as_deref().filter(|r| r.numbered(sent))?,
        };
        let job_id = generation.inward(sent);
        each_kind!(Submission, &mut share, s => s.job_id = job_id);
        Some(Inward { share, retired })
    }

    /// Validates a share; None when the share is of the other kind than the
    /// channel. `pool_tag` is the coinbase tag the channel's jobs carry.
    pub(super) fn validate_share(&mut self, share: Inward, pool_tag: &str) -> Option<Validation> {
        let locked = self.locking_key.is_some();
        let generation = match share.retired {
            false => &mut self.jobs,
            true => self.retired.as_deref_mut().expect("routed by inward"),
        };
        generation.validate(share.share, pool_tag, locked, share.retired)
    }

    /// Counts an accepted share for vardiff, at the work of the target it
    /// was mined at. True when the channel is due for [`renew`](Self::renew):
    /// three quarters of its duplicate-detection budget are used (and every
    /// [`RENEW_RETRY_SHARES`] shares after, while renewing fails). A
    /// share of the `retired` generation takes none of the current one's
    /// budget.
    pub(super) fn on_share_accepted(&mut self, now_ms: u64, work: u64, retired: bool) -> bool {
        self.vardiff.on_share(now_ms, work as f64);
        self.idle_checks = None;
        if retired {
            return false;
        }
        self.seen_shares += 1;
        let due = self.seen_shares_budget - self.seen_shares_budget / 4;
        self.seen_shares >= due && (self.seen_shares - due).is_multiple_of(RENEW_RETRY_SHARES)
    }

    /// Counts an accepted share in the batch being acknowledged, at the
    /// difficulty of the target it was mined at; the SubmitSharesSuccess
    /// due, if any (at once for a share that solves a block).
    pub(super) fn batch_share(
        &mut self,
        sequence_number: u32,
        target: Target,
        block_found: bool,
    ) -> Option<Batch> {
        let difficulty = target.difficulty_float();
        self.batching
            .on_accepted(sequence_number, difficulty, block_found)
    }

    /// Starts the channel over on a new extranonce prefix, keeping its id,
    /// key, target and vardiff. channels_sv2 keeps the hash of every share
    /// accepted on a chain tip, to refuse duplicates, and refuses every share
    /// once it holds its budget of them; a renewed channel starts a new
    /// generation with an empty set. The new prefix is in every new
    /// coinbase, and the job number moves on (the prefix may be one this
    /// channel held two renewals back), so no new header is one of the old
    /// ones. The replaced generation, with its hashes, takes the shares
    /// still coming on its jobs until the chain tip moves (one generation
    /// back; older ones are stale).
    ///
    /// The caller sends what [`renewal_message`](Self::renewal_message)
    /// gives, then the channel's jobs as to a new channel. Err: why the new
    /// generation could not be made, and its error code (the channel
    /// carries on as it was). `now_ms`: the pool's clock.
    pub(super) fn renew(
        &mut self,
        allocator: &mut ExtranonceAllocator,
        config: &CoreConfig,
        now_ms: u64,
    ) -> Result<(), (String, &'static str)> {
        let (id, target) = (self.id(), self.target());
        let min_extranonce_size = match &self.jobs.kind {
            Kind::Extended(c) => Some(c.get_rollable_extranonce_size() as usize),
            Kind::Standard(_) => None,
        };
        let spec = each_kind!(Kind, &self.jobs.kind, c => KindSpec {
            identity: c.get_user_identity().to_string(),
            min_extranonce_size,
            max_target: *c.get_requested_max_target(),
            hashrate: c.get_nominal_hashrate(),
        });
        let mut kind = spec.build(allocator, || id, config)?;
        each_kind!(Kind, &mut kind, c => c
            .set_target(target)
            .map_err(|e| (format!("{e:?}"), "invalid-channel")))?;
        let next = Generation::new(
            kind,
            self.jobs.next_offset(),
            self.jobs.custom_spaces().cloned(),
        );
        self.retired = Some(Box::new(std::mem::replace(&mut self.jobs, next)));
        self.renewed_ms = now_ms;
        self.seen_shares = 0;
        // The new prefix may be one this channel held before on this tip
        // (freed two renewals back): its jobs' headers must not be those
        // accepted then, which no duplicate detection remembers any more.
        self.job_number = self.job_number.wrapping_add(1);
        Ok(())
    }

    /// What a downstream is told of a renewal before its new jobs: the new
    /// extranonce prefix, on an extended channel (a standard channel's jobs
    /// carry their merkle root, the prefix in it).
    pub(super) fn renewal_message(&self) -> Option<MiningOwned> {
        let Kind::Extended(c) = &self.jobs.kind else {
            return None;
        };
        let prefix = c.get_extranonce_prefix().to_vec();
        Some(MiningOwned::SetExtranoncePrefix(SetExtranoncePrefixOwned {
            channel_id: c.get_channel_id(),
            extranonce_prefix: B032Owned::new(prefix).expect("at most 32 bytes"),
        }))
    }

    /// The channels_sv2 extended channel, for tests that build shares.
    #[cfg(test)]
    pub(super) fn extended(&self) -> Option<&ExtendedChannel> {
        match &self.jobs.kind {
            Kind::Extended(c) => Some(c),
            Kind::Standard(_) => None,
        }
    }
}

/// The vardiff settings of every channel.
fn vardiff_config(config: &CoreConfig) -> VardiffConfig {
    VardiffConfig {
        shares_per_minute: config.shares_per_minute as f64,
        // The channel reports its target (`report_target`), sent with a job
        // at once: shares at the previous one come only for the miner's
        // latency (a translator's hop included).
        difficulty_delay_ms: 10_000,
        ..VardiffConfig::default()
    }
}

fn extranonce_code(e: &ExtranonceAllocatorError) -> &'static str {
    match e {
        ExtranonceAllocatorError::CapacityExhausted => CAPACITY_EXHAUSTED,
        _ => "min-extranonce-size-too-large",
    }
}

//! One SV1 miner and its SV2 extended channel, as a sans-IO state machine.
//!
//! Feed it the miner's lines ([`MinerSession::on_line`]), the upstream's
//! messages for its channel ([`MinerSession::on_upstream`]) and timer ticks
//! ([`MinerSession::on_tick`]); it answers with [`Out`] actions the IO layer
//! applies: lines to the miner, SV2 messages to the pool, or a disconnect.
//!
//! Extranonce layout of the channel (`rollable` bytes after the pool's prefix):
//!
//! ```text
//! [pool prefix][zero padding][extranonce1: 4 bytes][extranonce2: extranonce2_size]
//! ```
//!
//! The pool prefix and the padding are appended to `coinb1`, which the miner
//! treats as opaque, so `extranonce1` is known at `mining.subscribe` (before
//! the channel exists) and survives an upstream reconnect: the miner stays
//! connected when the channel is re-opened with another prefix.

use std::collections::{BTreeMap, HashMap};

use ehash::{parse_user_identity, LockingKey};
use serde_json::{json, Value};
use stratum_core::binary_sv2::{B032Owned, Str0255Owned, U256Owned};
use stratum_core::bitcoin::Target;
use stratum_core::channels_sv2::client::extended::{ExtendedChannel, ExtendedJob};
use stratum_core::channels_sv2::client::share_accounting::ShareValidationError;
use stratum_core::channels_sv2::extranonce_manager::ExtranoncePrefix;
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned, SubmitSharesExtendedOwned,
    UpdateChannelOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, info, warn};

use crate::sv1::{self, code, Request};
use crate::vardiff::Vardiff;

/// Bytes of extranonce1 the translator hands out (a per-miner counter).
pub const EXTRANONCE1_SIZE: usize = 4;

/// Version bits a miner may roll (BIP-320 general-purpose bits).
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

/// SV1 shares waiting for the pool's answer; beyond this the miner is told no.
const MAX_PENDING_SUBMITS: usize = 4096;

/// SV1 job ids remembered per miner (the most recent ones).
const MAX_SV1_JOBS: usize = 64;

/// A channel the pool closes is re-opened at most this often per window;
/// beyond that the miner is disconnected.
const MAX_REOPENS: usize = 3;
const REOPEN_WINDOW_SECS: u64 = 60;

/// A miner's hash rate is reported at least this often (seconds).
pub const HASHRATE_REPORT_SECS: u64 = 60;

/// Settings every miner session shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub extranonce2_size: usize,
    pub nominal_hashrate: f32,
    pub shares_per_minute: f32,
    /// Key of quotes for miners whose username is not a key.
    pub wallet_key: LockingKey,
    pub keepalive_secs: u64,
    /// Seconds between vardiff decisions (UpdateChannel); 0 = off.
    pub vardiff_secs: u64,
    /// Answer a share only once the pool did (true), or as soon as the
    /// channel target accepts it (false: for pools that batch their
    /// acknowledgements; the pool's refusals are then only logged).
    pub wait_for_pool: bool,
}

/// What the IO layer does next.
#[derive(Debug, Clone)]
pub enum Out {
    /// A line (with its newline) to the miner.
    Sv1(String),
    /// A message to the pool. `OpenExtendedMiningChannel.request_id` is set
    /// by the upstream router.
    Upstream(MiningOwned),
    /// Disconnect the miner, with the reason to log.
    Close(String),
    /// Tell the stats service (the IO layer adds the miner id and the time).
    Stats(MinerStat),
}

/// What the stats service hears about one miner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MinerStat {
    /// Authorized (its channel is open), under its SV1 username.
    Connected { name: String },
    /// A share was answered; `work` is the expected hashes of the target it
    /// met (0 when refused).
    Share { accepted: bool, work: u64 },
    /// The vardiff estimate of the miner's hash rate, hashes per second.
    Hashrate(u64),
}

struct Sv1Job {
    sv2_job_id: u32,
    ntime: u32,
}

/// One miner: SV1 state, its channel and pending shares.
pub struct MinerSession {
    config: SessionConfig,
    extranonce1: [u8; EXTRANONCE1_SIZE],
    subscribed: bool,
    extranonce_subscribed: bool,
    version_mask: Option<u32>,
    /// `user_identity` of the channel (`<key hex>[.worker]`), once authorized.
    identity: Option<String>,
    locking_key: Option<LockingKey>,
    pending_authorize: Vec<Value>,
    channel: Option<ExtendedChannel>,
    channel_id: Option<u32>,
    opening: bool,
    jobs: BTreeMap<u64, Sv1Job>,
    next_sv1_job: u64,
    last_prev_hash: Option<[u8; 32]>,
    last_notify_at: u64,
    difficulty_sent: Option<f64>,
    /// sequence number -> (SV1 request id, work of the share's target)
    pending_submits: HashMap<u32, (Value, u64)>,
    next_sequence: u32,
    vardiff: Vardiff,
    accepted: u64,
    rejected: u64,
    /// When the pool closed this miner's channel (recent ones).
    reopens: Vec<u64>,
    /// The SV1 username of the authorization in progress or done.
    username: Option<String>,
    /// Whether `MinerStat::Connected` was emitted.
    announced: bool,
    hashrate_reported_at: u64,
}

fn rejection_reason(e: &ShareValidationError) -> (i64, &'static str) {
    match e {
        ShareValidationError::Stale(_) => (code::JOB_NOT_FOUND, "stale share"),
        ShareValidationError::InvalidJobId(_) => (code::JOB_NOT_FOUND, "job not found"),
        ShareValidationError::DoesNotMeetTarget(_) => {
            (code::LOW_DIFFICULTY, "low difficulty share")
        }
        ShareValidationError::DuplicateShare(_) => (code::DUPLICATE_SHARE, "duplicate share"),
        ShareValidationError::VersionRollingNotAllowed(_) => {
            (code::OTHER, "version rolling not allowed")
        }
        ShareValidationError::BadExtranonceSize(_) => (code::OTHER, "bad extranonce2 size"),
        ShareValidationError::Invalid(c) if c.contains("version") => {
            (code::OTHER, "invalid version bits")
        }
        ShareValidationError::Invalid(_) => (code::OTHER, "invalid share (ntime out of range?)"),
        ShareValidationError::NoChainTip => (code::JOB_NOT_FOUND, "no work yet"),
    }
}

/// An SV1 username that is not a key becomes a worker name under the wallet's key.
fn worker_name(user: &str) -> String {
    user.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect()
}

impl MinerSession {
    pub fn new(config: SessionConfig, miner_id: u32) -> Self {
        let vardiff = Vardiff::new(config.shares_per_minute, config.vardiff_secs);
        Self {
            config,
            extranonce1: miner_id.to_be_bytes(),
            subscribed: false,
            extranonce_subscribed: false,
            version_mask: None,
            identity: None,
            locking_key: None,
            pending_authorize: Vec::new(),
            channel: None,
            channel_id: None,
            opening: false,
            jobs: BTreeMap::new(),
            next_sv1_job: 1,
            last_prev_hash: None,
            last_notify_at: 0,
            difficulty_sent: None,
            pending_submits: HashMap::new(),
            next_sequence: 1,
            vardiff,
            accepted: 0,
            rejected: 0,
            reopens: Vec::new(),
            username: None,
            announced: false,
            hashrate_reported_at: 0,
        }
    }

    /// Whether the stats service was told this miner connected (so it must
    /// be told when it leaves).
    pub fn announced(&self) -> bool {
        self.announced
    }

    pub fn channel_id(&self) -> Option<u32> {
        self.channel_id
    }

    pub fn locking_key(&self) -> Option<LockingKey> {
        self.locking_key
    }

    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Shares the pool accepted / refused (including those refused locally).
    pub fn share_counts(&self) -> (u64, u64) {
        (self.accepted, self.rejected)
    }

    fn min_extranonce_size(&self) -> u16 {
        (EXTRANONCE1_SIZE + self.config.extranonce2_size) as u16
    }

    /// The message that opens (or re-opens) this miner's channel.
    fn open_channel(&mut self) -> Option<Out> {
        let identity = self.identity.clone()?;
        self.opening = true;
        let user_identity: Str0255Owned = identity.try_into().ok()?;
        Some(Out::Upstream(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 0,
                user_identity,
                nominal_hash_rate: self.config.nominal_hashrate,
                max_target: U256Owned::from([0xffu8; 32]),
                min_extranonce_size: self.min_extranonce_size(),
            },
        )))
    }

    /// Handles one line from the miner (without the newline).
    pub fn on_line(&mut self, line: &str, now: u64) -> Vec<Out> {
        let line = line.trim();
        if line.is_empty() {
            return vec![];
        }
        let request = match sv1::parse_request(line) {
            Ok(r) => r,
            Err(e) => {
                return match e.id {
                    Some(id) => vec![Out::Sv1(sv1::error(&id, e.code, &e.message))],
                    None => vec![Out::Close(format!("malformed SV1 line: {}", e.message))],
                }
            }
        };
        match request {
            Request::Response => vec![],
            Request::Subscribe { id } => {
                self.subscribed = true;
                vec![Out::Sv1(sv1::ok(
                    &id,
                    json!([
                        [
                            ["mining.set_difficulty", hex::encode(self.extranonce1)],
                            ["mining.notify", hex::encode(self.extranonce1)]
                        ],
                        hex::encode(self.extranonce1),
                        self.config.extranonce2_size
                    ]),
                ))]
            }
            Request::Configure {
                id,
                extensions,
                version_mask,
            } => {
                let mut result = serde_json::Map::new();
                for ext in &extensions {
                    if ext == "version-rolling" {
                        let mask = version_mask.unwrap_or(u32::MAX) & VERSION_ROLLING_MASK;
                        self.version_mask = Some(mask);
                        result.insert("version-rolling".into(), json!(true));
                        result.insert("version-rolling.mask".into(), json!(format!("{mask:08x}")));
                    } else {
                        result.insert(ext.clone(), json!(false));
                    }
                }
                vec![Out::Sv1(sv1::ok(&id, Value::Object(result)))]
            }
            Request::ExtranonceSubscribe { id } => {
                self.extranonce_subscribed = true;
                vec![Out::Sv1(sv1::ok(&id, json!(true)))]
            }
            Request::SuggestDifficulty { id } => {
                // The pool sets the target (vardiff); the suggestion is acknowledged only.
                vec![Out::Sv1(sv1::ok(&id, json!(true)))]
            }
            Request::Unknown { id, method } => {
                debug!(method, "unknown SV1 method");
                vec![Out::Sv1(sv1::error(
                    &id,
                    code::METHOD_NOT_FOUND,
                    &format!("unknown method {method}"),
                ))]
            }
            Request::Authorize { id, user } => self.on_authorize(id, &user),
            Request::Submit {
                id,
                job_id,
                extranonce2,
                ntime,
                nonce,
                version_bits,
            } => self.on_submit(id, &job_id, extranonce2, ntime, nonce, version_bits, now),
        }
    }

    fn on_authorize(&mut self, id: Value, user: &str) -> Vec<Out> {
        if !self.subscribed {
            return vec![Out::Sv1(sv1::error(
                &id,
                code::NOT_SUBSCRIBED,
                "not subscribed",
            ))];
        }
        if self.channel.is_some() {
            return vec![Out::Sv1(sv1::ok(&id, json!(true)))];
        }
        if self.identity.is_none() {
            let (key, identity) = match parse_user_identity(user) {
                Ok(miner) => (
                    miner.locking_key,
                    match miner.worker {
                        Some(w) => format!("{}.{}", miner.locking_key, worker_name(&w)),
                        None => miner.locking_key.to_string(),
                    },
                ),
                Err(_) => {
                    let worker = worker_name(user);
                    let key = self.config.wallet_key;
                    (
                        key,
                        if worker.is_empty() {
                            key.to_string()
                        } else {
                            format!("{key}.{worker}")
                        },
                    )
                }
            };
            self.identity = Some(identity);
            self.locking_key = Some(key);
            self.username = Some(user.to_string());
        }
        self.pending_authorize.push(id);
        if self.opening {
            return vec![];
        }
        self.open_channel().into_iter().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn on_submit(
        &mut self,
        id: Value,
        job_id: &str,
        extranonce2: Vec<u8>,
        ntime: u32,
        nonce: u32,
        version_bits: Option<u32>,
        now: u64,
    ) -> Vec<Out> {
        let reject = |this: &mut Self, code: i64, msg: &str| {
            this.rejected += 1;
            vec![
                Out::Sv1(sv1::error(&id, code, msg)),
                Out::Stats(MinerStat::Share {
                    accepted: false,
                    work: 0,
                }),
            ]
        };
        let (Some(channel), Some(channel_id)) = (self.channel.as_mut(), self.channel_id) else {
            return reject(self, code::UNAUTHORIZED, "not authorized (no channel yet)");
        };
        let Some(sv2_job_id) = u64::from_str_radix(job_id, 16)
            .ok()
            .and_then(|j| self.jobs.get(&j))
            .map(|j| j.sv2_job_id)
        else {
            return reject(self, code::JOB_NOT_FOUND, "job not found");
        };
        if extranonce2.len() != self.config.extranonce2_size {
            return reject(self, code::OTHER, "bad extranonce2 size");
        }
        let job = channel
            .get_active_job()
            .filter(|j| j.job_message.job_id == sv2_job_id)
            .or_else(|| channel.get_past_job(sv2_job_id))
            .or_else(|| channel.get_stale_job(sv2_job_id))
            .map(|j| (j.job_message.version, ehash::work_hashes(j.target)));
        let Some((job_version, work)) = job else {
            return reject(self, code::JOB_NOT_FOUND, "job not found");
        };
        let version = match (version_bits, self.version_mask) {
            (None, _) => job_version,
            (Some(bits), Some(mask)) => {
                if bits & !mask != 0 {
                    return reject(
                        self,
                        code::OTHER,
                        "version bits outside the negotiated mask",
                    );
                }
                (job_version & !mask) | (bits & mask)
            }
            (Some(_), None) => {
                return reject(self, code::OTHER, "version rolling not negotiated");
            }
        };
        let rollable = channel.get_rollable_extranonce_size() as usize;
        let pad = rollable.saturating_sub(EXTRANONCE1_SIZE + extranonce2.len());
        let mut extranonce = vec![0u8; pad];
        extranonce.extend_from_slice(&self.extranonce1);
        extranonce.extend_from_slice(&extranonce2);
        let sequence_number = self.next_sequence;
        let share = SubmitSharesExtendedOwned {
            channel_id,
            sequence_number,
            job_id: sv2_job_id,
            nonce,
            ntime,
            version,
            extranonce: match B032Owned::new(extranonce) {
                Ok(e) => e,
                Err(_) => return reject(self, code::OTHER, "extranonce too long"),
            },
        };
        match channel.validate_share(share.clone()) {
            Ok(_) => {
                if self.pending_submits.len() >= MAX_PENDING_SUBMITS {
                    return reject(self, code::OTHER, "too many shares awaiting the pool");
                }
                self.next_sequence = self.next_sequence.wrapping_add(1);
                self.vardiff.on_share(now);
                let forward = Out::Upstream(MiningOwned::SubmitSharesExtended(share));
                if self.config.wait_for_pool {
                    self.pending_submits.insert(sequence_number, (id, work));
                    vec![forward]
                } else {
                    self.accepted += 1;
                    vec![
                        forward,
                        Out::Sv1(sv1::ok(&id, json!(true))),
                        Out::Stats(MinerStat::Share {
                            accepted: true,
                            work,
                        }),
                    ]
                }
            }
            Err(e) => {
                let (code, msg) = rejection_reason(&e);
                debug!(channel_id, ?e, "share refused before forwarding");
                reject(self, code, msg)
            }
        }
    }

    /// The upstream connection is ready (again): open the channel if the
    /// miner is authorized.
    pub fn on_upstream_ready(&mut self) -> Vec<Out> {
        if self.identity.is_some() && self.channel.is_none() && !self.opening {
            return self.open_channel().into_iter().collect();
        }
        vec![]
    }

    /// The upstream connection is gone: the channel with it. Shares waiting
    /// for an answer are answered false (the pool never acknowledged them);
    /// the miner stays connected and gets new jobs once a pool is back.
    pub fn on_upstream_lost(&mut self) -> Vec<Out> {
        self.channel = None;
        self.channel_id = None;
        self.opening = false;
        self.jobs.clear();
        let mut out = Vec::new();
        for (_, (id, _)) in self.pending_submits.drain() {
            self.rejected += 1;
            out.push(Out::Sv1(sv1::error(
                &id,
                code::OTHER,
                "pool connection lost",
            )));
            out.push(Out::Stats(MinerStat::Share {
                accepted: false,
                work: 0,
            }));
        }
        out
    }

    /// A message from the pool about this miner's channel.
    pub fn on_upstream(&mut self, msg: MiningOwned, now: u64) -> Vec<Out> {
        match msg {
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => {
                self.opening = false;
                let prefix = match ExtranoncePrefix::from_wire(s.extranonce_prefix.to_owned_bytes())
                {
                    Ok(p) => p,
                    Err(e) => return vec![Out::Close(format!("bad extranonce prefix: {e:?}"))],
                };
                if (s.extranonce_size as usize) < EXTRANONCE1_SIZE + self.config.extranonce2_size {
                    return vec![Out::Close(format!(
                        "pool gave {} extranonce bytes, {} needed",
                        s.extranonce_size,
                        EXTRANONCE1_SIZE + self.config.extranonce2_size
                    ))];
                }
                let target = Target::from_le_bytes(s.target.to_array());
                let channel = match ExtendedChannel::new(
                    s.channel_id,
                    self.identity.clone().unwrap_or_default(),
                    prefix,
                    target,
                    self.config.nominal_hashrate,
                    true,
                    s.extranonce_size,
                    None,
                ) {
                    Ok(c) => c,
                    Err(e) => return vec![Out::Close(format!("cannot track channel: {e:?}"))],
                };
                info!(
                    channel_id = s.channel_id,
                    identity = self.identity.as_deref().unwrap_or(""),
                    "channel opened"
                );
                self.channel = Some(channel);
                self.channel_id = Some(s.channel_id);
                self.vardiff.reset(now, self.config.nominal_hashrate);
                let mut out: Vec<Out> = self
                    .pending_authorize
                    .drain(..)
                    .map(|id| Out::Sv1(sv1::ok(&id, json!(true))))
                    .collect();
                if !self.announced {
                    self.announced = true;
                    out.push(Out::Stats(MinerStat::Connected {
                        name: self.username.clone().unwrap_or_default(),
                    }));
                }
                out.push(self.hashrate_report(now));
                if let Some(mask) = self.version_mask {
                    out.push(Out::Sv1(sv1::set_version_mask(mask)));
                }
                out.extend(self.difficulty_update(&target));
                out
            }
            MiningOwned::OpenMiningChannelError(e) => {
                self.opening = false;
                let reason = String::from_utf8_lossy(e.error_code.as_bytes()).to_string();
                warn!(reason, "pool refused the channel");
                self.identity = None;
                self.locking_key = None;
                self.pending_authorize
                    .drain(..)
                    .map(|id| {
                        Out::Sv1(sv1::error(
                            &id,
                            code::UNAUTHORIZED,
                            &format!("pool refused: {reason}"),
                        ))
                    })
                    .collect()
            }
            MiningOwned::NewExtendedMiningJob(job) => self.on_new_job(job, now),
            MiningOwned::SetNewPrevHash(p) => {
                let Some(channel) = self.channel.as_mut() else {
                    return vec![];
                };
                if let Err(e) = channel.on_set_new_prev_hash(p) {
                    warn!(?e, "SetNewPrevHash refused");
                    return vec![];
                }
                self.notify_active(true, now)
            }
            MiningOwned::SetTarget(t) => {
                let Some(channel) = self.channel.as_mut() else {
                    return vec![];
                };
                let target = Target::from_le_bytes(t.maximum_target.to_array());
                if let Err(e) = channel.set_target(target) {
                    warn!(?e, "SetTarget refused");
                    return vec![];
                }
                // Per SV2, jobs already received keep their target: the new
                // difficulty reaches the miner with the next job.
                debug!(channel_id = t.channel_id, "new channel target");
                vec![]
            }
            MiningOwned::SubmitSharesSuccess(s) => {
                if let Some(c) = self.channel.as_mut() {
                    c.on_share_acknowledgement(s.new_submits_accepted_count, s.new_shares_sum);
                }
                let last = s.last_sequence_number;
                let mut done: Vec<u32> = self
                    .pending_submits
                    .keys()
                    .copied()
                    .filter(|seq| seq.wrapping_sub(last) as i32 <= 0)
                    .collect();
                done.sort_unstable();
                let mut out = Vec::new();
                for (id, work) in done
                    .into_iter()
                    .filter_map(|seq| self.pending_submits.remove(&seq))
                {
                    self.accepted += 1;
                    out.push(Out::Sv1(sv1::ok(&id, json!(true))));
                    out.push(Out::Stats(MinerStat::Share {
                        accepted: true,
                        work,
                    }));
                }
                out
            }
            MiningOwned::SubmitSharesError(e) => {
                let reason = String::from_utf8_lossy(e.error_code.as_bytes()).to_string();
                if let Some(c) = self.channel.as_mut() {
                    c.on_share_rejection(&reason);
                }
                match self.pending_submits.remove(&e.sequence_number) {
                    Some((id, _)) => {
                        self.rejected += 1;
                        let code = match reason.as_str() {
                            "stale-share" | "invalid-job-id" => code::JOB_NOT_FOUND,
                            "difficulty-too-low" => code::LOW_DIFFICULTY,
                            "duplicate-share" => code::DUPLICATE_SHARE,
                            _ => code::OTHER,
                        };
                        vec![
                            Out::Sv1(sv1::error(
                                &id,
                                code,
                                &format!("rejected by the pool: {reason}"),
                            )),
                            Out::Stats(MinerStat::Share {
                                accepted: false,
                                work: 0,
                            }),
                        ]
                    }
                    None => {
                        warn!(
                            channel_id = e.channel_id,
                            sequence_number = e.sequence_number,
                            reason,
                            "the pool refused a share already answered"
                        );
                        vec![]
                    }
                }
            }
            MiningOwned::CloseChannel(c) => {
                let reason = String::from_utf8_lossy(c.reason_code.as_bytes()).to_string();
                let mut out = self.on_upstream_lost();
                // Re-open (e.g. after "seen-shares-budget-exhausted"), keeping
                // the miner connected, unless the pool keeps closing it.
                self.reopens
                    .retain(|t| now.saturating_sub(*t) < REOPEN_WINDOW_SECS);
                if self.reopens.len() >= MAX_REOPENS {
                    out.push(Out::Close(format!("pool closed the channel: {reason}")));
                } else {
                    info!(reason, "pool closed the channel: re-opening it");
                    self.reopens.push(now);
                    out.extend(self.open_channel());
                }
                out
            }
            MiningOwned::SetExtranoncePrefix(p) => {
                if let Some(c) = self.channel.as_mut() {
                    let ok = ExtranoncePrefix::from_wire(p.extranonce_prefix.to_owned_bytes())
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|prefix| {
                            c.set_extranonce_prefix(prefix)
                                .map_err(|e| format!("{e:?}"))
                        });
                    if let Err(e) = ok {
                        return vec![Out::Close(format!("bad SetExtranoncePrefix: {e}"))];
                    }
                }
                vec![]
            }
            MiningOwned::UpdateChannelError(e) => {
                debug!(code = %String::from_utf8_lossy(e.error_code.as_bytes()), "UpdateChannel refused");
                vec![]
            }
            other => {
                debug!(?other, "ignoring upstream message");
                vec![]
            }
        }
    }

    fn on_new_job(&mut self, job: NewExtendedMiningJobOwned, now: u64) -> Vec<Out> {
        let Some(channel) = self.channel.as_mut() else {
            return vec![];
        };
        let active = job.min_ntime.clone().into_inner().is_some();
        if let Err(e) = channel.on_new_extended_mining_job(job) {
            warn!(?e, "job refused");
            return vec![];
        }
        if active {
            self.notify_active(false, now)
        } else {
            vec![]
        }
    }

    /// `mining.set_difficulty` for `target`, unless the miner has it already.
    fn difficulty_update(&mut self, target: &Target) -> Vec<Out> {
        let diff = sv1::difficulty_of_target(&target.to_le_bytes());
        if self.difficulty_sent == Some(diff) {
            return vec![];
        }
        self.difficulty_sent = Some(diff);
        vec![Out::Sv1(sv1::set_difficulty(diff))]
    }

    /// `mining.notify` for the active job (if there is one and a chain tip).
    fn notify_active(&mut self, clean: bool, now: u64) -> Vec<Out> {
        let Some(channel) = self.channel.as_ref() else {
            return vec![];
        };
        let (Some(job), Some(tip)) = (channel.get_active_job(), channel.get_chain_tip()) else {
            return vec![];
        };
        let prev_hash: [u8; 32] = tip.prev_hash().to_array();
        let clean = clean || self.last_prev_hash != Some(prev_hash);
        let min_ntime = job
            .job_message
            .min_ntime
            .clone()
            .into_inner()
            .unwrap_or(tip.min_ntime());
        let job = job.clone();
        let nbits = tip.nbits();
        // The job's own target (SV2: a job keeps the target it came with).
        let mut out = self.difficulty_update(&job.target);
        let notify = self.build_notify(
            &job,
            prev_hash,
            nbits,
            min_ntime.max(now as u32),
            clean,
            min_ntime,
        );
        self.last_prev_hash = Some(prev_hash);
        self.last_notify_at = now;
        out.push(Out::Sv1(notify));
        out
    }

    fn build_notify(
        &mut self,
        job: &ExtendedJob,
        prev_hash: [u8; 32],
        nbits: u32,
        ntime: u32,
        clean: bool,
        min_ntime: u32,
    ) -> String {
        // ntime may not exceed what the channel accepts: stay at min_ntime
        // unless the clock is ahead of it (keepalive refreshes).
        let ntime = ntime.clamp(min_ntime, min_ntime.saturating_add(3600));
        let sv1_id = self.next_sv1_job;
        self.next_sv1_job += 1;
        // Older SV1 ids stay mapped (bounded): a share on a job the new chain
        // tip made stale is then answered "stale share", not "job not found".
        self.jobs.insert(
            sv1_id,
            Sv1Job {
                sv2_job_id: job.job_message.job_id,
                ntime,
            },
        );
        while self.jobs.len() > MAX_SV1_JOBS {
            self.jobs.pop_first();
        }
        let rollable = self
            .channel
            .as_ref()
            .map(|c| c.get_rollable_extranonce_size() as usize)
            .unwrap_or(0);
        let pad = rollable.saturating_sub(EXTRANONCE1_SIZE + self.config.extranonce2_size);
        let mut coinb1 = job.job_message.coinbase_tx_prefix.to_owned_bytes();
        coinb1.extend_from_slice(&job.extranonce_prefix);
        coinb1.extend(std::iter::repeat_n(0u8, pad));
        sv1::Notify {
            job_id: format!("{sv1_id:x}"),
            prev_hash,
            coinb1,
            coinb2: job.job_message.coinbase_tx_suffix.to_owned_bytes(),
            merkle_branch: job
                .job_message
                .merkle_path
                .iter()
                .map(|h| h.to_array())
                .collect(),
            version: job.job_message.version,
            nbits,
            ntime,
            clean_jobs: clean,
        }
        .to_line()
    }

    /// Timer: vardiff (UpdateChannel to the pool) and keepalive jobs.
    pub fn on_tick(&mut self, now: u64) -> Vec<Out> {
        let mut out = Vec::new();
        let (Some(channel), Some(channel_id)) = (self.channel.as_ref(), self.channel_id) else {
            return out;
        };
        let retarget = if self.config.vardiff_secs > 0 {
            self.vardiff.tick(now, channel.get_target())
        } else {
            None
        };
        if let Some(hashrate) = retarget {
            info!(
                channel_id,
                hashrate, "vardiff: updating the channel's hash rate"
            );
            out.push(Out::Upstream(MiningOwned::UpdateChannel(
                UpdateChannelOwned {
                    channel_id,
                    nominal_hash_rate: hashrate,
                    maximum_target: U256Owned::from([0xffu8; 32]),
                },
            )));
        }
        if retarget.is_some()
            || now.saturating_sub(self.hashrate_reported_at) >= HASHRATE_REPORT_SECS
        {
            out.push(self.hashrate_report(now));
        }
        if now.saturating_sub(self.last_notify_at) >= self.config.keepalive_secs {
            // keepalive: the same job again, ntime refreshed, so the miner
            // does not run out of work on a quiet chain.
            out.extend(self.notify_active(false, now));
        }
        out
    }

    /// The current vardiff estimate, for the stats service.
    fn hashrate_report(&mut self, now: u64) -> Out {
        self.hashrate_reported_at = now;
        Out::Stats(MinerStat::Hashrate(self.vardiff.hashrate() as u64))
    }

    /// The ntime a SV1 job was sent with (tests).
    pub fn job_ntime(&self, sv1_job_id: &str) -> Option<u32> {
        let id = u64::from_str_radix(sv1_job_id, 16).ok()?;
        self.jobs.get(&id).map(|j| j.ntime)
    }
}

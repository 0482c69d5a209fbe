//! One SV1 miner and its SV2 extended channel, as a sans-IO state machine.
//!
//! Feed it the miner's lines ([`MinerSession::on_line`]), the upstream's
//! messages for its channel ([`MinerSession::on_upstream`]) and timer ticks
//! ([`MinerSession::on_tick`]); it answers with [`Action`] actions the IO layer
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ehash::{parse_user_identity, LockingKey};
use serde_json::{json, Value};
use stratum_core::binary_sv2::{Str0255Owned, U256Owned};
use stratum_core::bitcoin::Target;
use stratum_core::channels_sv2::client::extended::ExtendedChannel;
use stratum_core::mining_sv2::{OpenExtendedMiningChannelOwned, UpdateChannelOwned};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, info};

use ::sv1::server::{self as sv1, code, Request};

mod jobs;
mod shares;
pub use shares::MAX_PENDING_SUBMITS;
use vardiff::{hashrate_for_work, SteadyClock, Vardiff, VardiffConfig};

/// Bytes of extranonce1 the translator hands out (a per-miner counter).
pub const EXTRANONCE1_SIZE: usize = 4;

/// The least extranonce2 a miner is given: when a pool has no room for the
/// configured size, a miner that subscribed to extranonce changes is moved
/// down to what fits, at least this.
pub const MIN_EXTRANONCE2_SIZE: usize = 2;

/// Version bits a miner may roll (BIP-320 general-purpose bits).
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

/// A miner's hash rate is reported at least this often (seconds).
pub const HASHRATE_REPORT_SECS: u64 = 60;

/// A miner's suggested difficulty reaches the pool at most this often
/// (seconds): each costs the pool a new job, and the last one is sent.
pub const SUGGESTION_INTERVAL_SECS: u64 = 5;

/// `mining.authorize` requests one miner may have waiting for its channel
/// (while the pool is away, say); more are refused.
pub const MAX_PENDING_AUTHORIZE: usize = 16;

/// Settings every miner session shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub extranonce2_size: usize,
    pub nominal_hashrate: f32,
    pub shares_per_minute: f32,
    /// Key of quotes for miners whose username is not a key.
    pub wallet_key: LockingKey,
    pub keepalive_secs: u64,
    /// Seconds between vardiff checks (an UpdateChannel when the estimate
    /// moved); 0 = off.
    pub vardiff_secs: u64,
    /// Answer a share only once the pool did (true), or as soon as the
    /// channel target accepts it (false: for pools that batch their
    /// acknowledgements; the pool's refusals are then only logged).
    pub wait_for_pool: bool,
}

/// What the IO layer does next.
#[derive(Debug, Clone)]
pub enum Action {
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
    /// met (0 when refused); `backlogged`: refused because too many shares
    /// were waiting for the pool's answer.
    Share {
        accepted: bool,
        work: u64,
        backlogged: bool,
    },
    /// The vardiff estimate of the miner's hash rate, hashes per second.
    Hashrate(u64),
}

struct Sv1Job {
    sv1_id: u64,
    sv2_job_id: u32,
    ntime: u32,
}

/// The job sent with this SV1 id, if still remembered.
fn sv1_job(jobs: &VecDeque<Sv1Job>, sv1_id: u64) -> Option<&Sv1Job> {
    let at = jobs.binary_search_by_key(&sv1_id, |j| j.sv1_id).ok()?;
    jobs.get(at)
}

/// One miner: SV1 state, its channel and pending shares.
pub struct MinerSession {
    /// Shared by every session (an idle miner's memory counts).
    config: Arc<SessionConfig>,
    extranonce1: [u8; EXTRANONCE1_SIZE],
    subscribed: bool,
    extranonce_subscribed: bool,
    /// The extranonce2 size this miner was told (subscribe or set_extranonce).
    extranonce2_size: usize,
    /// The pool refused the configured extranonce size: ask for the least
    /// this miner can roll instead.
    shrink_extranonce: bool,
    version_mask: Option<u32>,
    /// `user_identity` of the channel (`<key hex>[.worker]`), once authorized.
    identity: Option<String>,
    locking_key: Option<LockingKey>,
    /// The hash rate the channel opens (and reopens) with: the configured
    /// one, what the miner's suggested difficulty means, or vardiff's last
    /// estimate, whichever came last.
    nominal_hashrate: f32,
    pending_authorize: Vec<Value>,
    channel: Option<ExtendedChannel>,
    channel_id: Option<u32>,
    opening: bool,
    /// The SV1 jobs sent, oldest first (ids rise).
    jobs: VecDeque<Sv1Job>,
    next_sv1_job: u64,
    last_prev_hash: Option<[u8; 32]>,
    last_notify_at: u64,
    difficulty_sent: Option<f64>,
    /// sequence number -> (SV1 request id, work of the share's target)
    pending_submits: HashMap<u32, (Value, u64)>,
    next_sequence: u32,
    vardiff: Vardiff,
    vardiff_checked_at: u64,
    /// The caller's seconds, never running back: vardiff, throttles and
    /// keepalives count intervals, which a wall clock stepped back would stall.
    clock: SteadyClock,
    /// The last difficulty the miner suggested is not yet the channel's.
    suggestion_unsent: bool,
    /// When a suggested difficulty last went to the pool.
    suggestion_sent_at: Option<u64>,
    /// Shares refused in the current episode of "too many shares awaiting
    /// the pool" (0: none going on).
    backlog_refusals: u64,
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

/// UpdateChannel of `channel_id` to `hashrate`, any target the pool sets.
fn update_channel(channel_id: u32, hashrate: f32) -> Action {
    Action::Upstream(MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: hashrate,
        maximum_target: U256Owned::from([0xffu8; 32]),
    }))
}

/// An SV1 username that is not a key becomes a worker name under the wallet's key.
fn worker_name(user: &str) -> String {
    user.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect()
}

impl MinerSession {
    pub fn new(config: Arc<SessionConfig>, miner_id: u32) -> Self {
        let nominal_hashrate = config.nominal_hashrate;
        let extranonce2_size = config.extranonce2_size;
        let vardiff = Vardiff::new(
            VardiffConfig {
                shares_per_minute: config.shares_per_minute as f64,
                // Each difficulty is reported as it is sent to the miner with
                // a clean job (`difficulty_update`): shares at the previous
                // one come only for the miner's latency.
                difficulty_delay_ms: 5_000,
                ..VardiffConfig::default()
            },
            0,
            config.nominal_hashrate as f64,
        )
        .expect("shares_per_minute is validated > 0");
        Self {
            config,
            extranonce1: miner_id.to_be_bytes(),
            subscribed: false,
            extranonce_subscribed: false,
            extranonce2_size,
            shrink_extranonce: false,
            version_mask: None,
            identity: None,
            locking_key: None,
            nominal_hashrate,
            pending_authorize: Vec::new(),
            channel: None,
            channel_id: None,
            opening: false,
            jobs: VecDeque::new(),
            next_sv1_job: 1,
            last_prev_hash: None,
            last_notify_at: 0,
            difficulty_sent: None,
            pending_submits: HashMap::new(),
            next_sequence: 1,
            vardiff,
            vardiff_checked_at: 0,
            clock: SteadyClock::new(0),
            suggestion_unsent: false,
            suggestion_sent_at: None,
            backlog_refusals: 0,
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
        let extranonce2 = if self.shrink_extranonce {
            MIN_EXTRANONCE2_SIZE.min(self.extranonce2_size)
        } else {
            self.extranonce2_size
        };
        (EXTRANONCE1_SIZE + extranonce2) as u16
    }

    /// The message that opens (or re-opens) this miner's channel.
    fn open_channel(&mut self) -> Option<Action> {
        let identity = self.identity.clone()?;
        self.opening = true;
        // The open carries the hash rate the last suggestion meant.
        self.suggestion_unsent = false;
        let user_identity: Str0255Owned = identity.try_into().ok()?;
        Some(Action::Upstream(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 0,
                user_identity,
                nominal_hash_rate: self.nominal_hashrate,
                max_target: U256Owned::from([0xffu8; 32]),
                min_extranonce_size: self.min_extranonce_size(),
            },
        )))
    }

    /// Handles one line from the miner (without the newline).
    pub fn on_line(&mut self, line: &str, now: u64) -> Vec<Action> {
        let now = self.clock.at(now);
        let line = line.trim();
        if line.is_empty() {
            return vec![];
        }
        let request = match sv1::parse_request(line) {
            Ok(r) => r,
            Err(e) => {
                return match e.id {
                    Some(id) => vec![Action::Sv1(sv1::error(&id, e.code, &e.message))],
                    None => vec![Action::Close(format!("malformed SV1 line: {}", e.message))],
                }
            }
        };
        match request {
            Request::Response => vec![],
            Request::Subscribe { id } => {
                self.subscribed = true;
                vec![Action::Sv1(sv1::ok(
                    &id,
                    json!([
                        [
                            ["mining.set_difficulty", hex::encode(self.extranonce1)],
                            ["mining.notify", hex::encode(self.extranonce1)]
                        ],
                        hex::encode(self.extranonce1),
                        self.extranonce2_size
                    ]),
                ))]
            }
            Request::Configure {
                id,
                extensions,
                version_mask,
            } => self.on_configure(id, &extensions, version_mask),
            Request::ExtranonceSubscribe { id } => {
                self.extranonce_subscribed = true;
                vec![Action::Sv1(sv1::ok(&id, json!(true)))]
            }
            Request::SuggestDifficulty { id, difficulty } => {
                let mut out = vec![Action::Sv1(sv1::ok(&id, json!(true)))];
                out.extend(self.on_suggested_difficulty(difficulty, now));
                out
            }
            Request::Unknown { id, method } => {
                debug!(method, "unknown SV1 method");
                vec![Action::Sv1(sv1::error(
                    &id,
                    code::METHOD_NOT_FOUND,
                    &format!("unknown method {method}"),
                ))]
            }
            Request::Authorize { id, user } => self.on_authorize(id, &user),
            Request::Submit { id, submit } => self.on_submit(id, submit, now),
        }
    }

    /// The miner asks for a share difficulty: the hash rate it means at our
    /// share rate is what the channel opens with, or is updated to (the
    /// pool keeps the target within its bounds and answers with a job at
    /// it), and where vardiff goes on from. Once the miner has sent shares,
    /// only a difficulty above the one it mines at is taken: a lower one
    /// would undo vardiff, and repeated, hold a fast miner at the pool's
    /// floor with a flood of shares.
    fn on_suggested_difficulty(&mut self, difficulty: f64, now: u64) -> Option<Action> {
        let target = Target::from_be_bytes(::sv1::target_from_difficulty(difficulty));
        let work = ehash::work_hashes(target) as f64;
        let hashrate = hashrate_for_work(work, self.config.shares_per_minute as f64);
        let shares_sent = self.accepted + self.rejected > 0 || !self.pending_submits.is_empty();
        if shares_sent
            && self
                .difficulty_sent
                .is_some_and(|mining_at| difficulty <= mining_at)
        {
            debug!(
                difficulty,
                "ignoring a lower difficulty suggested after shares: vardiff sets it"
            );
            return None;
        }
        debug!(difficulty, hashrate, "the miner suggests a difficulty");
        self.nominal_hashrate = hashrate as f32;
        self.vardiff.reset(now * 1000, hashrate);
        self.suggestion_unsent = true;
        self.send_suggestion(now)
    }

    /// The UpdateChannel of the last suggested difficulty, if it is not the
    /// channel's yet and none went within [`SUGGESTION_INTERVAL_SECS`].
    fn send_suggestion(&mut self, now: u64) -> Option<Action> {
        let channel_id = self.channel.as_ref().and(self.channel_id)?;
        // A clock stepped back makes no suggestion wait.
        let recent = (self.suggestion_sent_at)
            .is_some_and(|at| (at..at + SUGGESTION_INTERVAL_SECS).contains(&now));
        if !self.suggestion_unsent || recent {
            return None;
        }
        self.suggestion_unsent = false;
        self.suggestion_sent_at = Some(now);
        Some(update_channel(channel_id, self.nominal_hashrate))
    }

    /// `mining.configure`: only version rolling is offered.
    fn on_configure(
        &mut self,
        id: Value,
        extensions: &[String],
        version_mask: Option<u32>,
    ) -> Vec<Action> {
        let mut result = serde_json::Map::new();
        for ext in extensions {
            if ext == "version-rolling" {
                let mask = version_mask.unwrap_or(u32::MAX) & VERSION_ROLLING_MASK;
                self.version_mask = Some(mask);
                result.insert("version-rolling".into(), json!(true));
                result.insert("version-rolling.mask".into(), json!(format!("{mask:08x}")));
            } else {
                result.insert(ext.clone(), json!(false));
            }
        }
        vec![Action::Sv1(sv1::ok(&id, Value::Object(result)))]
    }

    fn on_authorize(&mut self, id: Value, user: &str) -> Vec<Action> {
        if !self.subscribed {
            return vec![Action::Sv1(sv1::error(
                &id,
                code::NOT_SUBSCRIBED,
                "not subscribed",
            ))];
        }
        let (key, identity) = self.identity_of(user);
        // Every share of the connection goes to one channel, locked to one
        // key: another user's shares would pay the first's key.
        if let Some(first) = self.locking_key.filter(|first| *first != key) {
            return vec![Action::Sv1(sv1::error(
                &id,
                code::UNAUTHORIZED,
                &format!("this connection mines for {first}: one locking key per connection"),
            ))];
        }
        if self.channel.is_some() {
            return vec![Action::Sv1(sv1::ok(&id, json!(true)))];
        }
        if self.identity.is_none() {
            self.identity = Some(identity);
            self.locking_key = Some(key);
            self.username = Some(user.to_string());
        }
        if self.pending_authorize.len() >= MAX_PENDING_AUTHORIZE {
            return vec![Action::Sv1(sv1::error(
                &id,
                code::OTHER,
                "too many authorizations waiting for the pool",
            ))];
        }
        self.pending_authorize.push(id);
        if self.opening {
            return vec![];
        }
        self.open_channel().into_iter().collect()
    }

    /// The locking key a username mines for, and the channel's user
    /// identity: `<key>[.worker]` for a key of its own, else the wallet's
    /// key with the username as the worker.
    fn identity_of(&self, user: &str) -> (LockingKey, String) {
        match parse_user_identity(user) {
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
        }
    }

    /// The upstream connection is ready (again): open the channel if the
    /// miner is authorized.
    pub fn on_upstream_ready(&mut self) -> Vec<Action> {
        if self.identity.is_some() && self.channel.is_none() && !self.opening {
            return self.open_channel().into_iter().collect();
        }
        vec![]
    }

    /// The upstream connection is gone: the channel with it. Shares waiting
    /// for an answer are answered false (the pool never acknowledged them);
    /// the miner stays connected and gets new jobs once a pool is back.
    pub fn on_upstream_lost(&mut self) -> Vec<Action> {
        self.channel = None;
        self.channel_id = None;
        self.opening = false;
        self.jobs.clear();
        self.fail_pending_submits()
    }

    /// Timer: vardiff (UpdateChannel to the pool) and keepalive jobs.
    pub fn on_tick(&mut self, now: u64) -> Vec<Action> {
        let now = self.clock.at(now);
        let mut out = Vec::new();
        let (Some(_), Some(channel_id)) = (self.channel.as_ref(), self.channel_id) else {
            return out;
        };
        out.extend(self.send_suggestion(now));
        let due = self.config.vardiff_secs > 0
            && now.saturating_sub(self.vardiff_checked_at) >= self.config.vardiff_secs;
        let retarget = if due {
            self.vardiff_checked_at = now;
            self.vardiff.tick(now * 1000).map(|h| h as f32)
        } else {
            None
        };
        if let Some(hashrate) = retarget {
            info!(
                channel_id,
                hashrate, "vardiff: updating the channel's hash rate"
            );
            // A reopened channel (a failover, a pool's close) starts from
            // it too, not from the configured rate.
            self.nominal_hashrate = hashrate;
            out.push(update_channel(channel_id, hashrate));
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
    fn hashrate_report(&mut self, now: u64) -> Action {
        self.hashrate_reported_at = now;
        Action::Stats(MinerStat::Hashrate(self.vardiff.hashrate() as u64))
    }

    /// The ntime a SV1 job was sent with (tests).
    pub fn job_ntime(&self, sv1_job_id: &str) -> Option<u32> {
        let id = u64::from_str_radix(sv1_job_id, 16).ok()?;
        sv1_job(&self.jobs, id).map(|j| j.ntime)
    }
}

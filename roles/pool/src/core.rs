//! The pool's protocol and bookkeeping, without IO.
//!
//! [`PoolCore`] takes decoded messages (from downstream connections and from
//! the template provider) and returns [`Action`]s: messages to send, a
//! connection to close, a block to submit, an accepted share to publish, an
//! event for the stats service. The io module owns the sockets and applies
//! the actions.

use std::collections::{HashMap, HashSet, VecDeque};

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey, UnitBits};
use ehash_ext_sv2::EHASH_EXTENSION_TYPE;
use roles_common::sv2::message_name;
use stratum_core::binary_sv2::{B032Owned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::Script;
use stratum_core::bitcoin::{
    block::{Header, Version},
    consensus::serialize,
    hashes::{sha256d, Hash},
    pow::CompactTarget,
    Amount, BlockHash, ScriptBuf, Target, TxMerkleNode, TxOut,
};
use stratum_core::channels_sv2::{
    extranonce_manager::ExtranonceAllocator,
    merkle_root::merkle_root_from_path,
    server::{
        error::{ExtendedChannelError, StandardChannelError},
        extended::ExtendedChannel,
        share_accounting::{ShareValidationError, ShareValidationResult},
        standard::StandardChannel,
    },
    Vardiff, VardiffState,
};
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::extensions_sv2::{
    RequestExtensionsErrorOwned, RequestExtensionsOwned, RequestExtensionsSuccessOwned,
};
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, OpenStandardMiningChannelOwned,
    OpenStandardMiningChannelSuccessOwned, SetNewPrevHashOwned as MiningSetNewPrevHash,
    SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesStandardOwned,
    SubmitSharesSuccessOwned, UpdateChannelErrorOwned, UpdateChannelOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, ExtensionsOwned, MiningOwned,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};
use tracing::{debug, info, warn};

/// Identifies one downstream connection.
pub type ConnId = u64;

/// Error codes of our own (the SV2 spec leaves these to the pool).
pub const ERROR_NO_LOCKING_KEY: &str = "invalid-user-identity";
pub const ERROR_UNSUPPORTED_FLAGS: &str = "unsupported-feature-flags";
pub const ERROR_UNSUPPORTED_PROTOCOL: &str = "unsupported-protocol";

/// Settings of the core (taken from the pool config).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub pool_signature: String,
    pub reward_script: ScriptBuf,
    pub shares_per_minute: f32,
    pub share_batch_size: usize,
    pub unit_bits: UnitBits,
    pub require_locking_key: bool,
    pub max_channels: u32,
    pub extranonce_len: u8,
    /// Whether the core answers accepted shares with SubmitSharesSuccess
    /// itself. Off when the ehash flow answers them (after the share is
    /// journaled, or after its quote in defer mode).
    pub acknowledge_shares: bool,
}

/// Everything the ehash flow needs about one accepted share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedShare {
    /// The downstream connection that submitted it.
    pub connection_id: ConnId,
    pub channel_id: u32,
    pub sequence_number: u32,
    /// sha256d of `header`, in SV2 (little-endian) byte order.
    pub share_hash: [u8; 32],
    /// The exact serialized block header of the share.
    pub header: [u8; 80],
    /// The channel target the share was validated against, little-endian.
    pub target: [u8; 32],
    /// `ehash::ehash_amount(target, unit_bits)`.
    pub amount: u64,
    /// The channel's locking key (None only when keys are not required).
    pub locking_key: Option<LockingKey>,
    /// Whether the share also solved a block.
    pub block_found: bool,
}

/// What the io layer must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send a message to a downstream connection.
    Send(ConnId, AnyMessageOwned),
    /// Close a downstream connection (after the messages queued before) with a reason.
    Close(ConnId, String),
    /// Send a block solution to the template provider.
    SubmitSolution(SubmitSolutionOwned),
    /// Publish an accepted share.
    Accepted(AcceptedShare),
    /// Tell the stats service.
    Stats(StatsEvent),
}

/// What the stats service hears about (the io layer adds the time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsEvent {
    /// A downstream completed SetupConnection with these flags.
    DownstreamConnected {
        conn: ConnId,
        flags: u32,
    },
    /// A downstream that completed SetupConnection is gone.
    DownstreamDisconnected {
        conn: ConnId,
    },
    ChannelOpened {
        conn: ConnId,
        channel_id: u32,
    },
    ChannelClosed {
        conn: ConnId,
        channel_id: u32,
    },
    /// Every share, accepted or not; `work` is the expected hashes of the
    /// target it was accepted at (0 when refused).
    ShareSubmitted {
        conn: ConnId,
        channel_id: u32,
        accepted: bool,
        work: u64,
    },
    /// A block solution went to the template provider.
    BlockFound {
        channel_id: u32,
        /// From the template's coinbase prefix (BIP 34); 0 if unreadable.
        height: u32,
        /// Little-endian.
        block_hash: [u8; 32],
    },
}

fn share_refused_event(conn: ConnId, channel_id: u32) -> Action {
    Action::Stats(StatsEvent::ShareSubmitted {
        conn,
        channel_id,
        accepted: false,
        work: 0,
    })
}

/// The block height a template's coinbase prefix starts with (BIP 34).
fn bip34_height(coinbase_prefix: &[u8]) -> Option<u32> {
    let first = Script::from_bytes(coinbase_prefix).instructions().next()?;
    u32::try_from(first.ok()?.script_num()?).ok()
}

enum ChannelKind {
    Standard(Box<StandardChannel>),
    Extended(Box<ExtendedChannel>),
}

struct ChannelEntry {
    conn: ConnId,
    kind: ChannelKind,
    locking_key: Option<LockingKey>,
    /// The target each job was created with (mirrors channels_sv2, whose map is private).
    job_targets: HashMap<u32, Target>,
    vardiff: VardiffState,
}

#[derive(Debug, Default)]
struct ConnState {
    setup_done: bool,
    ehash: bool,
    channels: HashSet<u32>,
}

/// Counters for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub blocks_found: u64,
    pub channels_open: usize,
}

const KEPT_FUTURE_TEMPLATES: usize = 16;

/// The pool's state: connections, channels, the current templates.
pub struct PoolCore {
    config: CoreConfig,
    allocator: ExtranonceAllocator,
    connections: HashMap<ConnId, ConnState>,
    channels: HashMap<u32, ChannelEntry>,
    next_channel_id: u32,
    future_templates: VecDeque<NewTemplateOwned>,
    /// The future template the last SetNewPrevHash activated.
    active_template: Option<NewTemplateOwned>,
    /// A non-future template that arrived after it (fee updates of sv2-tp).
    latest_template: Option<NewTemplateOwned>,
    prev_hash: Option<SetNewPrevHashOwned>,
    stats: Stats,
}

fn mining(m: MiningOwned) -> AnyMessageOwned {
    AnyMessageOwned::Mining(m)
}

fn u256(target: &Target) -> U256Owned {
    U256Owned::from(target.to_le_bytes())
}

/// The channel a share names, if `conn` owns it; otherwise the actions
/// refusing the share with `invalid-channel-id`.
fn share_channel<'a>(
    channels: &'a mut HashMap<u32, ChannelEntry>,
    stats: &mut Stats,
    conn: ConnId,
    channel_id: u32,
    seq: u32,
) -> Result<&'a mut ChannelEntry, Vec<Action>> {
    match channels.get_mut(&channel_id).filter(|e| e.conn == conn) {
        Some(entry) => Ok(entry),
        None => {
            debug!(conn, channel_id, "share for an unknown channel");
            Err(refuse_share(stats, conn, channel_id, seq))
        }
    }
}

/// Counts a share refused for naming a channel it cannot be for.
fn refuse_share(stats: &mut Stats, conn: ConnId, channel_id: u32, seq: u32) -> Vec<Action> {
    stats.shares_rejected += 1;
    vec![
        PoolCore::share_error(conn, channel_id, seq, "invalid-channel-id"),
        share_refused_event(conn, channel_id),
    ]
}

impl PoolCore {
    pub fn new(config: CoreConfig) -> Result<Self, String> {
        let allocator =
            ExtranonceAllocator::new(Vec::new(), config.extranonce_len, config.max_channels)
                .map_err(|e| format!("extranonce allocator: {e:?}"))?;
        Ok(Self {
            config,
            allocator,
            connections: HashMap::new(),
            channels: HashMap::new(),
            next_channel_id: 1,
            future_templates: VecDeque::new(),
            active_template: None,
            latest_template: None,
            prev_hash: None,
            stats: Stats::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            channels_open: self.channels.len(),
            ..self.stats.clone()
        }
    }

    /// The connection owning `channel_id`, and whether it negotiated the ehash extension.
    pub fn channel_owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        let conn = self.channels.get(&channel_id)?.conn;
        let ehash = self
            .connections
            .get(&conn)
            .map(|c| c.ehash)
            .unwrap_or(false);
        Some((conn, ehash))
    }

    /// An open channel locked to `key` on a connection that negotiated the
    /// ehash extension (the lowest channel id, for determinism).
    pub fn ehash_channel_with_key(&self, key: &LockingKey) -> Option<(ConnId, u32)> {
        self.channels
            .iter()
            .filter(|(_, c)| {
                c.locking_key.as_ref() == Some(key) && self.connection_has_ehash(c.conn)
            })
            .map(|(id, c)| (c.conn, *id))
            .min_by_key(|(_, id)| *id)
    }

    /// The locking key of an open channel (`Some(None)`: open, without key).
    pub fn channel_locking_key(&self, channel_id: u32) -> Option<Option<LockingKey>> {
        self.channels.get(&channel_id).map(|c| c.locking_key)
    }

    /// Whether a connection negotiated the ehash extension.
    pub fn connection_has_ehash(&self, conn: ConnId) -> bool {
        self.connections
            .get(&conn)
            .map(|c| c.ehash)
            .unwrap_or(false)
    }

    /// Whether the pool has a chain tip to build jobs on.
    pub fn has_chain_tip(&self) -> bool {
        self.prev_hash.is_some()
    }

    /// Whether a connection got past SetupConnection.
    pub fn connection_setup_done(&self, conn: ConnId) -> bool {
        self.connections
            .get(&conn)
            .map(|c| c.setup_done)
            .unwrap_or(false)
    }

    pub fn on_connect(&mut self, conn: ConnId) {
        self.connections.insert(conn, ConnState::default());
    }

    /// Drops a connection and its channels (freeing their extranonce
    /// prefixes); returns the stats events saying so.
    pub fn on_disconnect(&mut self, conn: ConnId) -> Vec<Action> {
        let Some(state) = self.connections.remove(&conn) else {
            return vec![];
        };
        let mut channels: Vec<u32> = state.channels.into_iter().collect();
        channels.sort_unstable();
        let mut actions = Vec::new();
        for channel_id in channels {
            self.channels.remove(&channel_id);
            actions.push(Action::Stats(StatsEvent::ChannelClosed {
                conn,
                channel_id,
            }));
        }
        if state.setup_done {
            actions.push(Action::Stats(StatsEvent::DownstreamDisconnected { conn }));
        }
        actions
    }

    fn reward_outputs(&self, template: &NewTemplateOwned) -> Vec<TxOut> {
        vec![TxOut {
            value: Amount::from_sat(template.coinbase_tx_value_remaining),
            script_pubkey: self.config.reward_script.clone(),
        }]
    }

    /// What CoinbaseOutputConstraints should tell the template provider.
    pub fn coinbase_output_constraints(&self) -> (u32, u16) {
        let out = TxOut {
            value: Amount::ZERO,
            script_pubkey: self.config.reward_script.clone(),
        };
        (serialize(&out).len() as u32, 4)
    }

    // ---------------------------------------------------------------- downstream

    /// Handles one message of a downstream connection.
    pub fn on_message(&mut self, conn: ConnId, msg: AnyMessageOwned) -> Vec<Action> {
        let Some(state) = self.connections.get(&conn) else {
            return vec![];
        };
        let setup_done = state.setup_done;
        match msg {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m)) => {
                if setup_done {
                    return vec![Action::Close(conn, "second SetupConnection".into())];
                }
                self.on_setup_connection(conn, m)
            }
            other if !setup_done => vec![Action::Close(
                conn,
                format!("{} before SetupConnection", message_name(&other)),
            )],
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                ExtensionsNegotiationOwned::RequestExtensions(m),
            )) => self.on_request_extensions(conn, m),
            AnyMessageOwned::Mining(m) => match m {
                MiningOwned::OpenExtendedMiningChannel(m) => self.open_extended(conn, m),
                MiningOwned::OpenStandardMiningChannel(m) => self.open_standard(conn, m),
                MiningOwned::SubmitSharesExtended(m) => self.submit_extended(conn, m),
                MiningOwned::SubmitSharesStandard(m) => self.submit_standard(conn, m),
                MiningOwned::UpdateChannel(m) => self.update_channel(conn, m),
                MiningOwned::CloseChannel(m) => self.close_channel(conn, m.channel_id),
                other => {
                    let name = message_name(&AnyMessageOwned::Mining(other));
                    warn!(
                        conn,
                        "ignoring {name}: not a message a downstream sends to a pool"
                    );
                    vec![]
                }
            },
            other => {
                warn!(conn, "ignoring unexpected {}", message_name(&other));
                vec![]
            }
        }
    }

    fn on_setup_connection(&mut self, conn: ConnId, m: SetupConnectionOwned) -> Vec<Action> {
        let refuse = |code: &str, reason: String| {
            vec![
                Action::Send(
                    conn,
                    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
                        SetupConnectionErrorOwned {
                            flags: 0,
                            error_code: str0255_truncated(code),
                        },
                    )),
                ),
                Action::Close(conn, reason),
            ]
        };
        if m.protocol != Protocol::MiningProtocol {
            return refuse(
                ERROR_UNSUPPORTED_PROTOCOL,
                format!("SetupConnection for protocol {:?}", m.protocol),
            );
        }
        if m.min_version > 2 || m.max_version < 2 {
            return refuse(
                "protocol-version-mismatch",
                format!(
                    "SetupConnection for versions {}..={}",
                    m.min_version, m.max_version
                ),
            );
        }
        // Mining flags: bit 1 REQUIRES_WORK_SELECTION (custom jobs) is not offered.
        if m.flags & 0b10 != 0 {
            return refuse(
                ERROR_UNSUPPORTED_FLAGS,
                "downstream requires work selection".into(),
            );
        }
        if let Some(state) = self.connections.get_mut(&conn) {
            state.setup_done = true;
        }
        info!(
            conn,
            vendor = %String::from_utf8_lossy(m.vendor.as_bytes()),
            flags = m.flags,
            "SetupConnection accepted"
        );
        vec![
            Action::Send(
                conn,
                AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(
                    SetupConnectionSuccessOwned {
                        used_version: 2,
                        flags: 0,
                    },
                )),
            ),
            Action::Stats(StatsEvent::DownstreamConnected {
                conn,
                flags: m.flags,
            }),
        ]
    }

    /// Grants the requested extensions the pool supports (the ehash one);
    /// RequestExtensions.Error only when none of them is supported, as SRI
    /// roles do. Unknown ones are refused by their absence from the Success.
    fn on_request_extensions(&mut self, conn: ConnId, m: RequestExtensionsOwned) -> Vec<Action> {
        let requested = m.requested_extensions.into_inner();
        let (supported, unsupported): (Vec<u16>, Vec<u16>) = requested
            .iter()
            .copied()
            .partition(|e| *e == EHASH_EXTENSION_TYPE);
        let reply = if !supported.is_empty() {
            if let Some(state) = self.connections.get_mut(&conn) {
                state.ehash = true;
            }
            info!(conn, ?unsupported, "ehash extension negotiated");
            ExtensionsNegotiationOwned::RequestExtensionsSuccess(RequestExtensionsSuccessOwned {
                request_id: m.request_id,
                supported_extensions: Seq064KOwned::new(vec![EHASH_EXTENSION_TYPE])
                    .expect("one element"),
            })
        } else {
            info!(
                conn,
                ?unsupported,
                "refusing RequestExtensions: none supported"
            );
            ExtensionsNegotiationOwned::RequestExtensionsError(RequestExtensionsErrorOwned {
                request_id: m.request_id,
                unsupported_extensions: Seq064KOwned::new(unsupported)
                    .unwrap_or_else(|_| Seq064KOwned::new(Vec::new()).expect("empty")),
                required_extensions: Seq064KOwned::new(Vec::new()).expect("empty"),
            })
        };
        vec![Action::Send(
            conn,
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(reply)),
        )]
    }

    fn open_error(conn: ConnId, request_id: u32, code: &str) -> Vec<Action> {
        vec![Action::Send(
            conn,
            mining(MiningOwned::OpenMiningChannelError(
                OpenMiningChannelErrorOwned {
                    request_id,
                    error_code: str0255_truncated(code),
                },
            )),
        )]
    }

    /// The locking key of a new channel, or the error code refusing it.
    fn locking_key(&self, conn: ConnId, identity: &str) -> Result<Option<LockingKey>, ()> {
        match parse_user_identity(identity) {
            Ok(id) => Ok(Some(id.locking_key)),
            Err(e) if self.config.require_locking_key => {
                warn!(
                    conn,
                    identity, "refusing channel: user_identity has no locking key: {e}"
                );
                Err(())
            }
            Err(e) => {
                debug!(conn, identity, "channel without locking key: {e}");
                Ok(None)
            }
        }
    }

    fn new_channel_id(&mut self) -> u32 {
        loop {
            let id = self.next_channel_id;
            self.next_channel_id = self.next_channel_id.wrapping_add(1).max(1);
            if !self.channels.contains_key(&id) {
                return id;
            }
        }
    }

    fn open_extended(&mut self, conn: ConnId, m: OpenExtendedMiningChannelOwned) -> Vec<Action> {
        let request_id = m.request_id;
        let identity = String::from_utf8_lossy(m.user_identity.as_bytes()).to_string();
        let Ok(locking_key) = self.locking_key(conn, &identity) else {
            return Self::open_error(conn, request_id, ERROR_NO_LOCKING_KEY);
        };
        let prefix = match self
            .allocator
            .allocate_extended(m.min_extranonce_size as usize)
        {
            Ok(p) => p,
            Err(e) => {
                warn!(conn, "refusing extended channel: extranonce: {e:?}");
                let code = match e {
                    stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocatorError::CapacityExhausted => "channel-capacity-exhausted",
                    _ => "min-extranonce-size-too-large",
                };
                return Self::open_error(conn, request_id, code);
            }
        };
        let rollable = self.allocator.rollable_extranonce_size() as u16;
        let prefix_bytes = prefix.as_bytes().to_vec();
        let channel_id = self.new_channel_id();
        let max_target = Target::from_le_bytes(m.max_target.to_array());
        let channel = match ExtendedChannel::new_for_pool(
            channel_id,
            identity.clone(),
            prefix,
            max_target,
            m.nominal_hash_rate,
            true,
            rollable,
            self.config.share_batch_size,
            self.config.shares_per_minute,
            self.config.pool_signature.clone(),
            None,
        ) {
            Ok(c) => c,
            Err(e) => {
                warn!(conn, "refusing extended channel: {e:?}");
                let code = match e {
                    ExtendedChannelError::OpenChannelInvalidNominalHashrate(c)
                    | ExtendedChannelError::OpenChannelInvalidMaxTarget(c)
                    | ExtendedChannelError::RequestedMinExtranonceSizeTooLarge(c) => c,
                    _ => "invalid-channel",
                };
                return Self::open_error(conn, request_id, code);
            }
        };
        let target = *channel.get_target();
        let mut entry = ChannelEntry {
            conn,
            kind: ChannelKind::Extended(Box::new(channel)),
            locking_key,
            job_targets: HashMap::new(),
            vardiff: VardiffState::new().expect("system clock after 1970"),
        };
        let mut actions = vec![Action::Send(
            conn,
            mining(MiningOwned::OpenExtendedMiningChannelSuccess(
                OpenExtendedMiningChannelSuccessOwned {
                    request_id,
                    channel_id,
                    target: u256(&target),
                    extranonce_size: rollable,
                    extranonce_prefix: B032Owned::new(prefix_bytes).expect("at most 32 bytes"),
                    group_channel_id: 0,
                },
            )),
        )];
        actions.extend(self.initial_jobs(&mut entry, channel_id));
        actions.push(Action::Stats(StatsEvent::ChannelOpened {
            conn,
            channel_id,
        }));
        info!(
            conn,
            channel_id,
            identity,
            nominal_hashrate = m.nominal_hash_rate,
            "extended channel opened"
        );
        self.channels.insert(channel_id, entry);
        if let Some(state) = self.connections.get_mut(&conn) {
            state.channels.insert(channel_id);
        }
        actions
    }

    fn open_standard(&mut self, conn: ConnId, m: OpenStandardMiningChannelOwned) -> Vec<Action> {
        let request_id = m.request_id;
        let identity = String::from_utf8_lossy(m.user_identity.as_bytes()).to_string();
        let Ok(locking_key) = self.locking_key(conn, &identity) else {
            return Self::open_error(conn, request_id, ERROR_NO_LOCKING_KEY);
        };
        let prefix = match self.allocator.allocate_standard() {
            Ok(p) => p,
            Err(e) => {
                warn!(conn, "refusing standard channel: extranonce: {e:?}");
                return Self::open_error(conn, request_id, "channel-capacity-exhausted");
            }
        };
        let prefix_bytes = prefix.as_bytes().to_vec();
        let channel_id = self.new_channel_id();
        let max_target = Target::from_le_bytes(m.max_target.to_array());
        let channel = match StandardChannel::new_for_pool(
            channel_id,
            identity.clone(),
            prefix,
            max_target,
            m.nominal_hash_rate,
            self.config.share_batch_size,
            self.config.shares_per_minute,
            self.config.pool_signature.clone(),
            None,
        ) {
            Ok(c) => c,
            Err(e) => {
                warn!(conn, "refusing standard channel: {e:?}");
                let code = match e {
                    StandardChannelError::OpenChannelInvalidNominalHashrate(c)
                    | StandardChannelError::OpenChannelInvalidMaxTarget(c) => c,
                    _ => "invalid-channel",
                };
                return Self::open_error(conn, request_id, code);
            }
        };
        let target = *channel.get_target();
        let mut entry = ChannelEntry {
            conn,
            kind: ChannelKind::Standard(Box::new(channel)),
            locking_key,
            job_targets: HashMap::new(),
            vardiff: VardiffState::new().expect("system clock after 1970"),
        };
        let mut actions = vec![Action::Send(
            conn,
            mining(MiningOwned::OpenStandardMiningChannelSuccess(
                OpenStandardMiningChannelSuccessOwned {
                    request_id,
                    channel_id,
                    target: u256(&target),
                    extranonce_prefix: B032Owned::new(prefix_bytes).expect("at most 32 bytes"),
                    group_channel_id: 0,
                },
            )),
        )];
        actions.extend(self.initial_jobs(&mut entry, channel_id));
        actions.push(Action::Stats(StatsEvent::ChannelOpened {
            conn,
            channel_id,
        }));
        info!(conn, channel_id, identity, "standard channel opened");
        self.channels.insert(channel_id, entry);
        if let Some(state) = self.connections.get_mut(&conn) {
            state.channels.insert(channel_id);
        }
        actions
    }

    /// The job and prevhash a new channel starts with: the future template
    /// the current prevhash activated, then that prevhash, then a later
    /// non-future template if there is one.
    /// Future templates not activated yet are added too, so the next
    /// SetNewPrevHash finds them.
    fn initial_jobs(&self, entry: &mut ChannelEntry, channel_id: u32) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut activated = None;
        if let (Some(template), Some(prev)) = (self.active_template.clone(), self.prev_hash.clone())
        {
            activated = Some(prev.template_id);
            actions.extend(self.channel_new_template(entry, channel_id, template));
            actions.extend(self.channel_prev_hash(entry, channel_id, prev));
            if let Some(latest) = self.latest_template.clone() {
                actions.extend(self.channel_new_template(entry, channel_id, latest));
            }
        }
        for pending in self
            .future_templates
            .iter()
            .filter(|t| activated.is_none_or(|id| t.template_id > id))
        {
            actions.extend(self.channel_new_template(entry, channel_id, pending.clone()));
        }
        actions
    }

    fn close_channel(&mut self, conn: ConnId, channel_id: u32) -> Vec<Action> {
        if self.channels.get(&channel_id).map(|c| c.conn) != Some(conn) {
            return vec![];
        }
        self.channels.remove(&channel_id);
        if let Some(state) = self.connections.get_mut(&conn) {
            state.channels.remove(&channel_id);
        }
        info!(conn, channel_id, "channel closed by downstream");
        vec![Action::Stats(StatsEvent::ChannelClosed {
            conn,
            channel_id,
        })]
    }

    fn share_error(conn: ConnId, channel_id: u32, sequence_number: u32, code: &str) -> Action {
        Action::Send(
            conn,
            mining(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
                channel_id,
                sequence_number,
                error_code: str0255_truncated(code),
            })),
        )
    }

    fn submit_extended(&mut self, conn: ConnId, share: SubmitSharesExtendedOwned) -> Vec<Action> {
        let (channel_id, seq) = (share.channel_id, share.sequence_number);
        let entry = match share_channel(&mut self.channels, &mut self.stats, conn, channel_id, seq)
        {
            Ok(entry) => entry,
            Err(refusal) => return refusal,
        };
        let ChannelKind::Extended(channel) = &mut entry.kind else {
            return refuse_share(&mut self.stats, conn, channel_id, seq);
        };
        // The header, rebuilt the way channels_sv2 validates it (before
        // validation: an accepted share's job is the active or a past job).
        let header = channel
            .get_active_job()
            .filter(|j| j.get_job_message().job_id == share.job_id)
            .or_else(|| channel.get_past_job(share.job_id))
            .and_then(|job| {
                let mut extranonce = job.get_extranonce_prefix().to_vec();
                extranonce.extend_from_slice(share.extranonce.as_bytes());
                let merkle_root = merkle_root_from_path(
                    &job.get_coinbase_tx_prefix_without_bip141(),
                    &job.get_coinbase_tx_suffix_without_bip141(),
                    &extranonce,
                    job.get_merkle_path().as_slice(),
                )?;
                let tip = channel.get_chain_tip()?;
                Some(header_bytes(
                    share.version,
                    tip.prev_hash().to_array(),
                    merkle_root,
                    share.ntime,
                    tip.nbits(),
                    share.nonce,
                ))
            });
        let result = channel.validate_share(share.clone());
        let batch = channel.get_share_accounting().should_acknowledge();
        let acct = channel.get_share_accounting();
        let success = (
            acct.get_last_share_sequence_number(),
            acct.get_last_batch_accepted(),
            acct.get_last_batch_work_sum(),
        );
        self.after_validation(
            conn,
            channel_id,
            seq,
            share.job_id,
            header,
            result,
            batch,
            success,
        )
    }

    fn submit_standard(&mut self, conn: ConnId, share: SubmitSharesStandardOwned) -> Vec<Action> {
        let (channel_id, seq) = (share.channel_id, share.sequence_number);
        let entry = match share_channel(&mut self.channels, &mut self.stats, conn, channel_id, seq)
        {
            Ok(entry) => entry,
            Err(refusal) => return refusal,
        };
        let ChannelKind::Standard(channel) = &mut entry.kind else {
            return refuse_share(&mut self.stats, conn, channel_id, seq);
        };
        let header = channel
            .get_active_job()
            .filter(|j| j.get_job_id() == share.job_id)
            .or_else(|| channel.get_past_job(share.job_id))
            .and_then(|job| {
                let tip = channel.get_chain_tip()?;
                Some(header_bytes(
                    share.version,
                    tip.prev_hash().to_array(),
                    job.get_merkle_root().to_array(),
                    share.ntime,
                    tip.nbits(),
                    share.nonce,
                ))
            });
        let result = channel.validate_share(share.clone());
        let batch = channel.get_share_accounting().should_acknowledge();
        let acct = channel.get_share_accounting();
        let success = (
            acct.get_last_share_sequence_number(),
            acct.get_last_batch_accepted(),
            acct.get_last_batch_work_sum(),
        );
        self.after_validation(
            conn,
            channel_id,
            seq,
            share.job_id,
            header,
            result,
            batch,
            success,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn after_validation(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        seq: u32,
        job_id: u32,
        header: Option<[u8; 80]>,
        result: Result<ShareValidationResult, ShareValidationError>,
        acknowledge: bool,
        (last_seq, accepted, work_sum): (u32, u32, u64),
    ) -> Vec<Action> {
        let (share_hash, solution) = match result {
            Ok(ShareValidationResult::Valid(hash)) => (hash, None),
            Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
                (hash, Some((template_id, coinbase)))
            }
            Err(e) => {
                self.stats.shares_rejected += 1;
                let code = match e {
                    ShareValidationError::Invalid(c)
                    | ShareValidationError::Stale(c)
                    | ShareValidationError::InvalidJobId(c)
                    | ShareValidationError::DoesNotMeetTarget(c)
                    | ShareValidationError::VersionRollingNotAllowed(c)
                    | ShareValidationError::DuplicateShare(c)
                    | ShareValidationError::BadExtranonceSize(c) => c,
                    ShareValidationError::InvalidCoinbase => "invalid-share",
                    ShareValidationError::NoChainTip => "stale-share",
                    ShareValidationError::SeenSharesBudgetExhausted => {
                        warn!(
                            conn,
                            channel_id, "seen-shares budget exhausted: closing the channel"
                        );
                        self.channels.remove(&channel_id);
                        if let Some(state) = self.connections.get_mut(&conn) {
                            state.channels.remove(&channel_id);
                        }
                        return vec![
                            Action::Send(
                                conn,
                                mining(MiningOwned::CloseChannel(CloseChannelOwned {
                                    channel_id,
                                    reason_code: str0255_truncated("seen-shares-budget-exhausted"),
                                })),
                            ),
                            share_refused_event(conn, channel_id),
                            Action::Stats(StatsEvent::ChannelClosed { conn, channel_id }),
                        ];
                    }
                };
                debug!(conn, channel_id, seq, code, "share rejected");
                return vec![
                    Self::share_error(conn, channel_id, seq, code),
                    share_refused_event(conn, channel_id),
                ];
            }
        };
        self.stats.shares_accepted += 1;
        debug!(conn, channel_id, seq, "share accepted");
        let entry = self.channels.get_mut(&channel_id).expect("validated above");
        entry.vardiff.increment_shares_since_last_update();
        let mut actions = Vec::new();
        let block_found = solution.is_some();
        if (acknowledge || block_found) && self.config.acknowledge_shares {
            actions.push(Action::Send(
                conn,
                mining(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                    channel_id,
                    last_sequence_number: last_seq,
                    new_submits_accepted_count: accepted.max(1),
                    new_shares_sum: work_sum,
                })),
            ));
        }
        let share_hash: [u8; 32] = share_hash.to_byte_array();
        // The target the share was accepted at: its job's.
        let target = entry
            .job_targets
            .get(&job_id)
            .copied()
            .unwrap_or(match &entry.kind {
                ChannelKind::Extended(c) => *c.get_target(),
                ChannelKind::Standard(c) => *c.get_target(),
            });
        actions.push(Action::Stats(StatsEvent::ShareSubmitted {
            conn,
            channel_id,
            accepted: true,
            work: ehash::work_hashes(target),
        }));
        match (header, entry.job_targets.get(&job_id)) {
            (Some(header), Some(target)) => {
                debug_assert_eq!(sha256d::Hash::hash(&header).to_byte_array(), share_hash);
                actions.push(Action::Accepted(AcceptedShare {
                    connection_id: conn,
                    channel_id,
                    sequence_number: seq,
                    share_hash,
                    header,
                    target: target.to_le_bytes(),
                    amount: ehash::ehash_amount(*target, self.config.unit_bits),
                    locking_key: entry.locking_key,
                    block_found,
                }));
            }
            _ => warn!(
                conn,
                channel_id, job_id, "accepted share without a known job target"
            ),
        }
        if let Some((template_id, coinbase)) = solution {
            self.stats.blocks_found += 1;
            let header = header.expect("a block has a header");
            match template_id {
                Some(template_id) => {
                    info!(
                        conn,
                        channel_id,
                        template_id,
                        hash = %BlockHash::from_byte_array(share_hash),
                        "block found, submitting it to the template provider"
                    );
                    let version = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
                    let ntime = u32::from_le_bytes(header[68..72].try_into().expect("4 bytes"));
                    let nonce = u32::from_le_bytes(header[76..80].try_into().expect("4 bytes"));
                    match coinbase.try_into() {
                        Ok(coinbase_tx) => {
                            actions.push(Action::SubmitSolution(SubmitSolutionOwned {
                                template_id,
                                version,
                                header_timestamp: ntime,
                                header_nonce: nonce,
                                coinbase_tx,
                            }));
                            actions.push(Action::Stats(StatsEvent::BlockFound {
                                channel_id,
                                height: self.template_height(template_id).unwrap_or(0),
                                block_hash: share_hash,
                            }));
                        }
                        Err(e) => warn!("coinbase does not fit SubmitSolution: {e:?}"),
                    }
                }
                None => warn!(
                    conn,
                    channel_id, "block found on a custom job: not submitted"
                ),
            }
        }
        actions
    }

    /// The height of a template the pool still knows.
    fn template_height(&self, template_id: u64) -> Option<u32> {
        let template = [&self.active_template, &self.latest_template]
            .into_iter()
            .flatten()
            .chain(self.future_templates.iter())
            .find(|t| t.template_id == template_id)?;
        bip34_height(template.coinbase_prefix.as_bytes())
    }

    fn update_channel(&mut self, conn: ConnId, m: UpdateChannelOwned) -> Vec<Action> {
        let channel_id = m.channel_id;
        let Some(entry) = self
            .channels
            .get_mut(&channel_id)
            .filter(|e| e.conn == conn)
        else {
            return vec![Action::Send(
                conn,
                mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: str0255_truncated("invalid-channel-id"),
                })),
            )];
        };
        let max_target = Target::from_le_bytes(m.maximum_target.to_array());
        let result = match &mut entry.kind {
            ChannelKind::Extended(c) => c
                .update_channel(m.nominal_hash_rate, Some(max_target))
                .map(|_| *c.get_target())
                .map_err(|e| match e {
                    ExtendedChannelError::UpdateChannelInvalidNominalHashrate(c)
                    | ExtendedChannelError::UpdateChannelInvalidMaxTarget(c) => c,
                    _ => "invalid-channel",
                }),
            ChannelKind::Standard(c) => c
                .update_channel(m.nominal_hash_rate, Some(max_target))
                .map(|_| *c.get_target())
                .map_err(|e| match e {
                    StandardChannelError::UpdateChannelInvalidNominalHashrate(c)
                    | StandardChannelError::UpdateChannelInvalidMaxTarget(c) => c,
                    _ => "invalid-channel",
                }),
        };
        match result {
            Ok(target) => vec![set_target(conn, channel_id, &target)],
            Err(code) => vec![Action::Send(
                conn,
                mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: str0255_truncated(code),
                })),
            )],
        }
    }

    /// Runs vardiff on every channel; sends SetTarget where the target changed.
    pub fn on_vardiff_tick(&mut self) -> Vec<Action> {
        let spm = self.config.shares_per_minute;
        let mut actions = Vec::new();
        for (channel_id, entry) in self.channels.iter_mut() {
            let (hashrate, target) = match &entry.kind {
                ChannelKind::Extended(c) => (c.get_nominal_hashrate(), *c.get_target()),
                ChannelKind::Standard(c) => (c.get_nominal_hashrate(), *c.get_target()),
            };
            match entry.vardiff.try_vardiff(hashrate, &target, spm) {
                Ok(Some(new_hashrate)) => {
                    let new_target = match &mut entry.kind {
                        ChannelKind::Extended(c) => c
                            .update_channel(new_hashrate, None)
                            .ok()
                            .map(|_| *c.get_target()),
                        ChannelKind::Standard(c) => c
                            .update_channel(new_hashrate, None)
                            .ok()
                            .map(|_| *c.get_target()),
                    };
                    if let Some(new_target) = new_target {
                        if new_target != target {
                            debug!(channel_id, new_hashrate, "vardiff: new target");
                            actions.push(set_target(entry.conn, *channel_id, &new_target));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => debug!(channel_id, "vardiff: {e:?}"),
            }
        }
        actions
    }

    // ---------------------------------------------------------------- template provider

    fn channel_new_template(
        &self,
        entry: &mut ChannelEntry,
        channel_id: u32,
        template: NewTemplateOwned,
    ) -> Vec<Action> {
        let outputs = self.reward_outputs(&template);
        let future = template.future_template;
        let template_id = template.template_id;
        let message = match &mut entry.kind {
            ChannelKind::Extended(c) => {
                if let Err(e) = c.on_new_template(template, outputs) {
                    warn!(channel_id, template_id, "cannot build a job: {e:?}");
                    return vec![];
                }
                let job = if future {
                    c.get_future_job_id_from_template_id(template_id)
                        .and_then(|id| c.get_future_job(id))
                } else {
                    c.get_active_job()
                };
                let Some(job) = job else { return vec![] };
                if !future {
                    entry.job_targets.insert(job.get_job_id(), *c.get_target());
                }
                MiningOwned::NewExtendedMiningJob(job.get_job_message().clone())
            }
            ChannelKind::Standard(c) => {
                if let Err(e) = c.on_new_template(template, outputs) {
                    warn!(channel_id, template_id, "cannot build a job: {e:?}");
                    return vec![];
                }
                let job = if future {
                    c.get_future_job_id_from_template_id(template_id)
                        .and_then(|id| c.get_future_job(id))
                } else {
                    c.get_active_job()
                };
                let Some(job) = job else { return vec![] };
                if !future {
                    entry.job_targets.insert(job.get_job_id(), *c.get_target());
                }
                MiningOwned::NewMiningJob(job.get_job_message().clone())
            }
        };
        vec![Action::Send(entry.conn, mining(message))]
    }

    fn channel_prev_hash(
        &self,
        entry: &mut ChannelEntry,
        channel_id: u32,
        prev: SetNewPrevHashOwned,
    ) -> Vec<Action> {
        let (job_id, target) = match &mut entry.kind {
            ChannelKind::Extended(c) => {
                if let Err(e) = c.on_set_new_prev_hash(prev.clone()) {
                    warn!(channel_id, "cannot apply SetNewPrevHash: {e:?}");
                    return vec![];
                }
                (c.get_active_job().map(|j| j.get_job_id()), *c.get_target())
            }
            ChannelKind::Standard(c) => {
                if let Err(e) = c.on_set_new_prev_hash(prev.clone()) {
                    warn!(channel_id, "cannot apply SetNewPrevHash: {e:?}");
                    return vec![];
                }
                (c.get_active_job().map(|j| j.get_job_id()), *c.get_target())
            }
        };
        entry.job_targets.clear();
        let Some(job_id) = job_id else { return vec![] };
        entry.job_targets.insert(job_id, target);
        vec![Action::Send(
            entry.conn,
            mining(MiningOwned::SetNewPrevHash(MiningSetNewPrevHash {
                channel_id,
                job_id,
                prev_hash: prev.prev_hash.clone(),
                min_ntime: prev.header_timestamp,
                nbits: prev.n_bits,
            })),
        )]
    }

    /// A NewTemplate from the template provider: a job on every channel.
    pub fn on_new_template(&mut self, template: NewTemplateOwned) -> Vec<Action> {
        debug!(
            template_id = template.template_id,
            future = template.future_template,
            "NewTemplate"
        );
        if template.future_template {
            self.future_templates.push_back(template.clone());
            while self.future_templates.len() > KEPT_FUTURE_TEMPLATES {
                self.future_templates.pop_front();
            }
        } else {
            if self.prev_hash.is_none() {
                warn!("non-future template before any SetNewPrevHash: ignored");
                return vec![];
            }
            self.latest_template = Some(template.clone());
        }
        let mut channels = std::mem::take(&mut self.channels);
        let mut actions = Vec::new();
        for (id, entry) in channels.iter_mut() {
            actions.extend(self.channel_new_template(entry, *id, template.clone()));
        }
        self.channels = channels;
        actions
    }

    /// A SetNewPrevHash from the template provider: the tip moved.
    pub fn on_set_new_prev_hash(&mut self, prev: SetNewPrevHashOwned) -> Vec<Action> {
        let Some(template) = self
            .future_templates
            .iter()
            .find(|t| t.template_id == prev.template_id)
            .cloned()
        else {
            warn!(
                template_id = prev.template_id,
                "SetNewPrevHash for an unknown template: ignored"
            );
            return vec![];
        };
        info!(
            template_id = prev.template_id,
            prev_hash = %BlockHash::from_byte_array(prev.prev_hash.to_array()),
            "new chain tip"
        );
        self.future_templates
            .retain(|t| t.template_id >= prev.template_id);
        self.active_template = Some(template);
        self.latest_template = None;
        self.prev_hash = Some(prev.clone());
        let mut channels = std::mem::take(&mut self.channels);
        let mut actions = Vec::new();
        for (id, entry) in channels.iter_mut() {
            actions.extend(self.channel_prev_hash(entry, *id, prev.clone()));
        }
        self.channels = channels;
        actions
    }
}

fn set_target(conn: ConnId, channel_id: u32, target: &Target) -> Action {
    Action::Send(
        conn,
        mining(MiningOwned::SetTarget(SetTargetOwned {
            channel_id,
            maximum_target: u256(target),
        })),
    )
}

/// The 80 serialized bytes of a block header.
pub fn header_bytes(
    version: u32,
    prev_hash: [u8; 32],
    merkle_root: [u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let header = Header {
        version: Version::from_consensus(version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(merkle_root),
        time: ntime,
        bits: CompactTarget::from_consensus(nbits),
        nonce,
    };
    serialize(&header).try_into().expect("a header is 80 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_core::binary_sv2::{B064KOwned, Seq0255Owned};
    use stratum_core::bitcoin::consensus::serialize as ser;
    use stratum_core::mining_sv2::NewExtendedMiningJobOwned;

    const NEVER: u32 = 0x0300_0001;
    const EASY: u32 = 0x207f_ffff;
    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    fn core() -> PoolCore {
        PoolCore::new(CoreConfig {
            pool_signature: "test".into(),
            reward_script: ScriptBuf::from_bytes(vec![0x51]),
            shares_per_minute: 6.0,
            share_batch_size: 1,
            unit_bits: UnitBits::new(0).unwrap(),
            require_locking_key: true,
            max_channels: 1000,
            extranonce_len: 16,
            acknowledge_shares: true,
        })
        .unwrap()
    }

    fn template(id: u64) -> NewTemplateOwned {
        let out = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x00]),
        };
        NewTemplateOwned {
            template_id: id,
            future_template: true,
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_prefix: vec![0x01, 0x01].try_into().unwrap(),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: 5_000_000_000,
            coinbase_tx_outputs_count: 1,
            coinbase_tx_outputs: B064KOwned::new(ser(&out)).unwrap(),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255Owned::new(Vec::new()).unwrap(),
        }
    }

    fn prev(id: u64, nbits: u32) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            template_id: id,
            prev_hash: U256Owned::from([7u8; 32]),
            header_timestamp: 1_800_000_000,
            n_bits: nbits,
            target: U256Owned::from(
                Target::from_compact(CompactTarget::from_consensus(nbits)).to_le_bytes(),
            ),
        }
    }

    /// `on_message` without its stats events (tests of those look at them).
    fn on_message(core: &mut PoolCore, conn: ConnId, msg: AnyMessageOwned) -> Vec<Action> {
        core.on_message(conn, msg)
            .into_iter()
            .filter(|a| !matches!(a, Action::Stats(_)))
            .collect()
    }

    fn stats_events(actions: &[Action]) -> Vec<StatsEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stats(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn setup_message(flags: u32) -> AnyMessageOwned {
        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
            protocol: Protocol::MiningProtocol,
            min_version: 2,
            max_version: 2,
            flags,
            endpoint_host: str0255_truncated(""),
            endpoint_port: 0,
            vendor: str0255_truncated("t"),
            hardware_version: str0255_truncated(""),
            firmware: str0255_truncated(""),
            device_id: str0255_truncated(""),
        }))
    }

    fn setup(core: &mut PoolCore, conn: ConnId) {
        core.on_connect(conn);
        let actions = on_message(core, conn, setup_message(0));
        assert!(matches!(
            &actions[..],
            [Action::Send(
                _,
                AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(_))
            )]
        ));
    }

    fn open_extended(identity: &str) -> AnyMessageOwned {
        AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id: 1,
                user_identity: str0255_truncated(identity),
                nominal_hash_rate: 10.0,
                max_target: U256Owned::from([0xff; 32]),
                min_extranonce_size: 4,
            },
        ))
    }

    fn request_extensions(exts: Vec<u16>) -> AnyMessageOwned {
        AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
            ExtensionsNegotiationOwned::RequestExtensions(RequestExtensionsOwned {
                request_id: 3,
                requested_extensions: Seq064KOwned::new(exts).unwrap(),
            }),
        ))
    }

    #[test]
    fn anything_before_setup_connection_closes_the_connection() {
        let mut core = core();
        core.on_connect(1);
        let actions = on_message(&mut core, 1, open_extended(KEY));
        match &actions[..] {
            [Action::Close(1, reason)] => {
                assert_eq!(reason, "OpenExtendedMiningChannel before SetupConnection")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ehash_is_granted_and_unknown_extensions_refused() {
        let mut core = core();
        setup(&mut core, 1);
        // Only unknown extensions: RequestExtensions.Error naming them.
        let actions = on_message(&mut core, 1, request_extensions(vec![0x0002]));
        match &actions[..] {
            [Action::Send(
                1,
                AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensionsError(e),
                )),
            )] => assert_eq!(e.unsupported_extensions.clone().into_inner(), vec![0x0002]),
            other => panic!("{other:?}"),
        }
        assert!(!core.connection_has_ehash(1));
        // ehash among unknown ones: only ehash is granted.
        let actions = on_message(
            &mut core,
            1,
            request_extensions(vec![0x0002, EHASH_EXTENSION_TYPE]),
        );
        match &actions[..] {
            [Action::Send(
                1,
                AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensionsSuccess(s),
                )),
            )] => assert_eq!(
                s.supported_extensions.clone().into_inner(),
                vec![EHASH_EXTENSION_TYPE]
            ),
            other => panic!("{other:?}"),
        }
        assert!(core.connection_has_ehash(1));
    }

    #[test]
    fn a_channel_without_locking_key_is_refused() {
        let mut core = core();
        setup(&mut core, 1);
        let actions = on_message(&mut core, 1, open_extended("alice.rig1"));
        match &actions[..] {
            [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)))] => {
                assert_eq!(e.error_code.as_bytes(), ERROR_NO_LOCKING_KEY.as_bytes())
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(core.stats().channels_open, 0);
    }

    /// Opens a channel on a tip with `nbits`; returns the channel id, its job and target.
    fn open_on_tip(core: &mut PoolCore, nbits: u32) -> (u32, NewExtendedMiningJobOwned, Target) {
        setup(core, 1);
        assert!(core.on_new_template(template(1)).is_empty());
        assert!(core.on_set_new_prev_hash(prev(1, nbits)).is_empty());
        let actions = on_message(core, 1, open_extended(&format!("{KEY}.w")));
        let mut channel = None;
        let mut job = None;
        let mut saw_prev = false;
        for a in actions {
            match a {
                Action::Send(
                    1,
                    AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s)),
                ) => channel = Some((s.channel_id, Target::from_le_bytes(s.target.to_array()))),
                Action::Send(1, AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j))) => {
                    job = Some(j)
                }
                Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p))) => {
                    saw_prev = true;
                    assert_eq!(Some(p.job_id), job.as_ref().map(|j| j.job_id));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(saw_prev);
        let (id, target) = channel.unwrap();
        (id, job.unwrap(), target)
    }

    fn share(
        core: &PoolCore,
        channel_id: u32,
        job: &NewExtendedMiningJobOwned,
        accept: impl Fn(Target) -> bool,
    ) -> (SubmitSharesExtendedOwned, [u8; 80]) {
        let entry = &core.channels[&channel_id];
        let ChannelKind::Extended(c) = &entry.kind else {
            unreachable!()
        };
        let extranonce = vec![9u8; c.get_rollable_extranonce_size() as usize];
        let mut full = c.get_extranonce_prefix().to_vec();
        full.extend_from_slice(&extranonce);
        let root = merkle_root_from_path(
            job.coinbase_tx_prefix.as_bytes(),
            job.coinbase_tx_suffix.as_bytes(),
            &full,
            job.merkle_path.as_slice(),
        )
        .unwrap();
        for nonce in 0u32.. {
            let header = header_bytes(
                job.version,
                [7u8; 32],
                root,
                1_800_000_000,
                c.get_chain_tip().unwrap().nbits(),
                nonce,
            );
            if accept(Target::from_le_bytes(
                sha256d::Hash::hash(&header).to_byte_array(),
            )) {
                return (
                    SubmitSharesExtendedOwned {
                        channel_id,
                        sequence_number: nonce,
                        job_id: job.job_id,
                        nonce,
                        ntime: 1_800_000_000,
                        version: job.version,
                        extranonce: B032Owned::new(extranonce).unwrap(),
                    },
                    header,
                );
            }
        }
        unreachable!()
    }

    #[test]
    fn with_the_ehash_flow_the_core_publishes_shares_but_never_acknowledges_them() {
        let mut core = core();
        core.config.acknowledge_shares = false;
        let (channel_id, job, target) = open_on_tip(&mut core, NEVER);
        let (submit, _) = share(&core, channel_id, &job, |h| h <= target);
        let actions = on_message(
            &mut core,
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit)),
        );
        assert!(matches!(&actions[..], [Action::Accepted(a)] if a.channel_id == channel_id));
        // The channel's key is found for the flow's routing.
        let key: LockingKey = KEY.parse().unwrap();
        assert_eq!(core.channel_locking_key(channel_id), Some(Some(key)));
        assert_eq!(
            core.ehash_channel_with_key(&key),
            None,
            "connection 1 did not negotiate ehash"
        );
    }

    #[test]
    fn an_accepted_share_carries_its_exact_header_and_amount() {
        let mut core = core();
        let (channel_id, job, target) = open_on_tip(&mut core, NEVER);
        let (submit, header) = share(&core, channel_id, &job, |h| h <= target);
        let actions = on_message(
            &mut core,
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit.clone())),
        );
        let mut accepted = None;
        for a in &actions {
            match a {
                Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))) => {
                    assert_eq!(s.last_sequence_number, submit.sequence_number)
                }
                Action::Accepted(a) => accepted = Some(a.clone()),
                other => panic!("{other:?}"),
            }
        }
        let a = accepted.expect("published");
        assert_eq!(a.header, header);
        assert_eq!(sha256d::Hash::hash(&a.header).to_byte_array(), a.share_hash);
        assert_eq!(a.target, target.to_le_bytes());
        assert_eq!(
            a.amount,
            ehash::ehash_amount(target, UnitBits::new(0).unwrap())
        );
        assert_eq!(a.locking_key.unwrap().to_string(), KEY);
        assert_eq!(
            (a.connection_id, a.channel_id, a.block_found),
            (1, channel_id, false)
        );

        // The same share again is a duplicate; a weak one is too low.
        let actions = on_message(
            &mut core,
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit)),
        );
        assert!(
            matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"duplicate-share")
        );
        let (weak, _) = share(&core, channel_id, &job, |h| h > target);
        let actions = on_message(
            &mut core,
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(weak)),
        );
        assert!(
            matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"difficulty-too-low")
        );

        // After the tip moves, the old job is stale.
        core.on_new_template(template(2));
        let actions = core.on_set_new_prev_hash(SetNewPrevHashOwned {
            prev_hash: U256Owned::from([8u8; 32]),
            ..prev(2, NEVER)
        });
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(_)))
        )));
        let (late, _) = share(&core, channel_id, &job, |_| true);
        let actions = on_message(
            &mut core,
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(late)),
        );
        assert!(
            matches!(&actions[..], [Action::Send(1, AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))] if e.error_code.as_bytes() == b"stale-share")
        );

        // Disconnecting frees the channel.
        core.on_disconnect(1);
        assert_eq!(core.stats().channels_open, 0);
    }

    #[test]
    fn a_block_share_becomes_a_submit_solution() {
        let mut core = core();
        let (channel_id, job, target) = open_on_tip(&mut core, EASY);
        let network = Target::from_compact(CompactTarget::from_consensus(EASY));
        let (submit, header) = share(&core, channel_id, &job, |h| h <= target && h <= network);
        let actions = core.on_message(
            1,
            AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(submit.clone())),
        );
        let solution = actions
            .iter()
            .find_map(|a| match a {
                Action::SubmitSolution(s) => Some(s.clone()),
                _ => None,
            })
            .expect("solution");
        assert_eq!(solution.template_id, 1);
        assert_eq!(solution.header_nonce, submit.nonce);
        // The solution's coinbase hashes to the header's merkle root.
        let tx: stratum_core::bitcoin::Transaction =
            stratum_core::bitcoin::consensus::deserialize(solution.coinbase_tx.as_bytes()).unwrap();
        assert_eq!(
            &header[36..68],
            tx.compute_txid().to_byte_array().as_slice()
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Accepted(s) if s.block_found)));
        assert_eq!(core.stats().blocks_found, 1);
        // Height 1: the template's coinbase prefix pushes 1 (BIP 34).
        assert!(stats_events(&actions).contains(&StatsEvent::BlockFound {
            channel_id,
            height: 1,
            block_hash: sha256d::Hash::hash(&header).to_byte_array(),
        }));
    }

    #[test]
    fn stats_events_report_the_downstream_its_channels_and_every_share() {
        let mut core = core();
        core.on_connect(1);
        let actions = core.on_message(1, setup_message(0b100));
        assert_eq!(
            stats_events(&actions),
            vec![StatsEvent::DownstreamConnected {
                conn: 1,
                flags: 0b100
            }]
        );
        core.on_new_template(template(1));
        core.on_set_new_prev_hash(prev(1, NEVER));
        let open = |core: &mut PoolCore| {
            let actions = core.on_message(1, open_extended(&format!("{KEY}.w")));
            let (channel_id, target) = actions
                .iter()
                .find_map(|a| match a {
                    Action::Send(
                        _,
                        AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(s)),
                    ) => Some((s.channel_id, Target::from_le_bytes(s.target.to_array()))),
                    _ => None,
                })
                .expect("opened");
            let job = actions
                .iter()
                .find_map(|a| match a {
                    Action::Send(
                        _,
                        AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j)),
                    ) => Some(j.clone()),
                    _ => None,
                })
                .expect("a job");
            assert_eq!(
                stats_events(&actions),
                vec![StatsEvent::ChannelOpened {
                    conn: 1,
                    channel_id
                }]
            );
            (channel_id, target, job)
        };
        let (first, target, job) = open(&mut core);
        let submit = |core: &mut PoolCore, share: SubmitSharesExtendedOwned| {
            stats_events(&core.on_message(
                1,
                AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(share)),
            ))
        };
        let shared = |accepted, work| StatsEvent::ShareSubmitted {
            conn: 1,
            channel_id: first,
            accepted,
            work,
        };

        // Accepted: the work of the target it met. Refused: none.
        let (good, _) = share(&core, first, &job, |h| h <= target);
        let work = ehash::work_hashes(target);
        assert!(work > 0);
        assert_eq!(submit(&mut core, good.clone()), vec![shared(true, work)]);
        assert_eq!(submit(&mut core, good.clone()), vec![shared(false, 0)]);
        let (weak, _) = share(&core, first, &job, |h| h > target);
        assert_eq!(submit(&mut core, weak), vec![shared(false, 0)]);
        let unknown = SubmitSharesExtendedOwned {
            channel_id: 99,
            ..good
        };
        assert_eq!(
            submit(&mut core, unknown),
            vec![StatsEvent::ShareSubmitted {
                conn: 1,
                channel_id: 99,
                accepted: false,
                work: 0
            }]
        );

        // Closed by the downstream, then by the disconnect.
        let close = core.on_message(
            1,
            AnyMessageOwned::Mining(MiningOwned::CloseChannel(CloseChannelOwned {
                channel_id: first,
                reason_code: str0255_truncated("bye"),
            })),
        );
        assert_eq!(
            stats_events(&close),
            vec![StatsEvent::ChannelClosed {
                conn: 1,
                channel_id: first
            }]
        );
        let (second, _, _) = open(&mut core);
        assert_eq!(
            stats_events(&core.on_disconnect(1)),
            vec![
                StatsEvent::ChannelClosed {
                    conn: 1,
                    channel_id: second
                },
                StatsEvent::DownstreamDisconnected { conn: 1 }
            ]
        );
        // A connection that never completed SetupConnection was never announced.
        core.on_connect(2);
        assert!(core.on_disconnect(2).is_empty());
    }
}

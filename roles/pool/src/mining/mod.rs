//! The pool's mining protocol and bookkeeping, without IO.
//!
//! [`PoolCore`] takes decoded messages (from downstream connections and from
//! the template provider) and returns [`Action`]s: messages to send, a
//! connection to close, a block to submit, an accepted share to publish, an
//! event for the stats service. The io module owns the sockets and applies
//! the actions.
//!
//! By concern: `connection` (SetupConnection, extension negotiation,
//! connect and disconnect), `channel` (one channel, standard or extended,
//! behind one type), `channels` (open, update, close, vardiff), `shares`
//! (share submission, accepted shares, blocks), `templates` (templates and
//! chain tip from the template provider), `stats` (counters and stats events).

mod channel;
mod channels;
mod connection;
mod custom_jobs;
mod proof;
mod shares;
mod stats;
mod templates;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ehash::{LockingKey, UnitBits};
use mint_quote_sv2::CoinbaseProof;
use roles_common::limits::AddressCounts;
use roles_common::sv2::message_name;
use stratum_core::binary_sv2::U256Owned;
use stratum_core::bitcoin::{ScriptBuf, Target};
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::parsers_sv2::{
    AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, ExtensionsOwned, MiningOwned,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};

pub use channels::IdleChannels;
pub use ehash::share::header_bytes;
pub(crate) use stats::downstream_id;
pub use stats::{Stats, StatsEvent};

use crate::jds::JobDeclarator;
use channel::{Channel, CustomSpaces, OpenRequest, SpaceBounds, Submission};
use connection::ConnState;
use vardiff::SteadyClock;

/// Identifies one downstream connection.
pub type ConnId = u64;

/// Settings of the core (taken from the pool config).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub pool_signature: String,
    pub reward_script: ScriptBuf,
    pub shares_per_minute: f32,
    pub share_batch_size: usize,
    pub unit_bits: UnitBits,
    /// With a mint: every channel's target is worth a whole amount of
    /// ehash, since a share is paid its work rounded down.
    pub whole_units: bool,
    /// The easiest target any channel gets (open, UpdateChannel, vardiff):
    /// with a mint, the target worth one ehash, so every accepted share is
    /// paid; `None` without one.
    pub easiest_target: Option<Target>,
    pub require_locking_key: bool,
    pub max_channels: u32,
    pub max_channels_per_connection: u32,
    /// Most channels open over the connections of one peer address.
    pub max_channels_per_ip: u32,
    /// When channels with no share accepted are closed; `None`: never.
    pub idle_channels: Option<IdleChannels>,
    pub extranonce_len: u8,
    /// Whether the core answers accepted shares with SubmitSharesSuccess
    /// itself. Off when the ehash flow answers them (after the share is
    /// journaled, or after its quote in defer mode).
    pub acknowledge_shares: bool,
    /// Whether the pool runs a job declarator: clients may then require
    /// work selection and set custom jobs.
    pub job_declaration: bool,
    /// Whether its clients may be coinbase-only (no DECLARE_TX_DATA).
    pub allow_coinbase_only: bool,
    /// Custom jobs with headers of their own the pool keeps for its tip,
    /// over every work-selecting channel.
    pub max_custom_jobs: usize,
    /// Of those, the most one peer address may set on a tip.
    pub max_custom_jobs_per_address: usize,
}

impl CoreConfig {
    /// A downstream's maximum target, made no easier than [`Self::easiest_target`].
    pub(crate) fn clamp(&self, max_target: Target) -> Target {
        self.easiest_target
            .map_or(max_target, |easiest| max_target.min(easiest))
    }
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
    /// Its connection negotiated the ehash extension (reads notifications).
    pub ehash: bool,
    /// Whether the share also solved a block.
    pub block_found: bool,
    /// Its coinbase and merkle path (with a locking key only).
    pub proof: Option<CoinbaseProof>,
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
    /// Send a message to a job declaration client (a late answer).
    JobDeclaration(crate::jds::JdConnId, crate::jds::JdLate),
}

/// Error codes of our own (the SV2 spec leaves these to the pool).
pub const ERROR_NO_LOCKING_KEY: &str = "invalid-user-identity";
pub const ERROR_UNSUPPORTED_FLAGS: &str = "unsupported-feature-flags";
pub const ERROR_UNSUPPORTED_PROTOCOL: &str = "unsupported-protocol";

/// The pool's state: connections, channels, the current templates.
pub struct PoolCore {
    config: CoreConfig,
    allocator: ExtranonceAllocator,
    connections: HashMap<ConnId, ConnState>,
    /// Channels open over the connections of each peer address.
    address_channels: AddressCounts,
    channels: HashMap<u32, Channel>,
    next_channel_id: u32,
    future_templates: VecDeque<NewTemplateOwned>,
    /// The future template the last SetNewPrevHash activated.
    active_template: Option<NewTemplateOwned>,
    /// A non-future template that arrived after it (fee updates of sv2-tp).
    latest_template: Option<NewTemplateOwned>,
    prev_hash: Option<SetNewPrevHashOwned>,
    stats: Stats,
    /// Unix milliseconds as of the last vardiff tick, never running back:
    /// the time of shares (a wall clock stepped back stalls nothing).
    clock: SteadyClock,
    /// The header spaces of the custom jobs set on the tip.
    custom_spaces: CustomSpaces,
    /// Behind a lock of its own: a large declaration's hashing holds up
    /// other job declaration clients, not the pool's shares.
    jds: Option<Arc<Mutex<JobDeclarator>>>,
}

fn mining(m: MiningOwned) -> AnyMessageOwned {
    AnyMessageOwned::Mining(m)
}

/// Bytes every downstream may roll at least, after the pool's prefix.
const MIN_ROLLABLE: usize = 8;

/// Channel extranonce prefixes begin with up to 4 random bytes of this
/// process: a channel opened after a restart never gets the prefix of one
/// before it, so a miner handed the same job again does new work (the mint
/// would refuse to pay twice for the same header).
fn extranonce_allocator(config: &CoreConfig) -> Result<ExtranonceAllocator, String> {
    let new = |session: Vec<u8>| {
        ExtranonceAllocator::new(session, config.extranonce_len, config.max_channels)
            .map_err(|e| format!("extranonce allocator: {e:?}"))
    };
    let rollable = new(Vec::new())?.rollable_extranonce_size() as usize;
    let session_len = rollable.saturating_sub(MIN_ROLLABLE).min(4);
    new(rand::random::<[u8; 4]>()[..session_len].to_vec())
}

fn u256(target: &Target) -> U256Owned {
    U256Owned::from(target.to_le_bytes())
}

impl PoolCore {
    pub fn new(config: CoreConfig) -> Result<Self, String> {
        let allocator = extranonce_allocator(&config)?;
        Ok(Self {
            allocator,
            connections: HashMap::new(),
            address_channels: AddressCounts::default(),
            channels: HashMap::new(),
            next_channel_id: 1,
            future_templates: VecDeque::new(),
            active_template: None,
            latest_template: None,
            prev_hash: None,
            stats: Stats::default(),
            clock: SteadyClock::new(0),
            custom_spaces: CustomSpaces::new(SpaceBounds {
                max: config.max_custom_jobs,
                first_jobs: config.max_channels as usize,
                per_address: config.max_custom_jobs_per_address,
                first_jobs_per_address: config.max_channels_per_connection as usize,
            }),
            jds: config.job_declaration.then(|| {
                let jds =
                    JobDeclarator::new(config.reward_script.clone(), config.allow_coinbase_only);
                Arc::new(Mutex::new(jds))
            }),
            config,
        })
    }

    /// The job declarator, when the pool runs one, locked.
    pub fn jds(&self) -> Option<MutexGuard<'_, JobDeclarator>> {
        self.jds.as_deref().map(roles_common::lock)
    }

    /// The job declarator, to lock without the pool core.
    pub fn jds_handle(&self) -> Option<Arc<Mutex<JobDeclarator>>> {
        self.jds.clone()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            channels_open: self.channels.len(),
            custom_jobs_held: self.custom_spaces.held(),
            ..self.stats.clone()
        }
    }

    /// The connection owning `channel_id`, and whether it negotiated the ehash extension.
    pub fn channel_owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        let conn = self.channels.get(&channel_id)?.conn;
        Some((conn, self.connection_has_ehash(conn)))
    }

    /// An announced channel locked to `key` on a connection that negotiated
    /// the ehash extension, other than those in `except` (the lowest channel
    /// id, for determinism).
    pub fn ehash_channel_with_key(
        &self,
        key: &LockingKey,
        except: &[(ConnId, u32)],
    ) -> Option<(ConnId, u32)> {
        self.channels
            .iter()
            .filter(|(_, c)| {
                c.announced
                    && c.locking_key.as_ref() == Some(key)
                    && self.connection_has_ehash(c.conn)
            })
            .map(|(id, c)| (c.conn, *id))
            .filter(|c| !except.contains(c))
            .min_by_key(|(_, id)| *id)
    }

    /// The channel's Open…Success is queued for its peer: from now on it
    /// takes ehash notifications. Its locking key (`None`: open without one)
    /// and whether its connection negotiated the extension; `None` if the
    /// channel is gone.
    pub fn announce_channel(&mut self, channel_id: u32) -> Option<(Option<LockingKey>, bool)> {
        let channel = self.channels.get_mut(&channel_id)?;
        channel.announced = true;
        let (conn, key) = (channel.conn, channel.locking_key);
        Some((key, self.connection_has_ehash(conn)))
    }

    /// Whether a connection negotiated the ehash extension.
    pub fn connection_has_ehash(&self, conn: ConnId) -> bool {
        self.connection_ehash(conn).unwrap_or(false)
    }

    /// `Some(negotiated the ehash extension)` while `conn` is connected.
    pub fn connection_ehash(&self, conn: ConnId) -> Option<bool> {
        self.connections.get(&conn).map(|c| c.ehash)
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

    /// Channels `conn` has open.
    pub fn connection_channels(&self, conn: ConnId) -> usize {
        self.connections.get(&conn).map_or(0, |c| c.channels.len())
    }

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
            AnyMessageOwned::Mining(m) => self.on_mining_message(conn, m),
            other => {
                self.warn_peer(
                    conn,
                    format_args!("ignoring unexpected {}", message_name(&other)),
                );
                vec![]
            }
        }
    }

    fn on_mining_message(&mut self, conn: ConnId, m: MiningOwned) -> Vec<Action> {
        match m {
            MiningOwned::OpenExtendedMiningChannel(m) => {
                self.open_channel(conn, OpenRequest::Extended(m))
            }
            MiningOwned::OpenStandardMiningChannel(m) => {
                self.open_channel(conn, OpenRequest::Standard(m))
            }
            MiningOwned::SubmitSharesExtended(m) => {
                self.submit_share(conn, Submission::Extended(m))
            }
            MiningOwned::SubmitSharesStandard(m) => {
                self.submit_share(conn, Submission::Standard(m))
            }
            MiningOwned::UpdateChannel(m) => self.update_channel(conn, m),
            MiningOwned::CloseChannel(m) => self.close_channel(conn, m.channel_id),
            MiningOwned::SetCustomMiningJob(m) => {
                self.set_custom_job(conn, m, roles_common::stats_publisher::now_ms())
            }
            other => {
                let name = message_name(&AnyMessageOwned::Mining(other));
                self.warn_peer(
                    conn,
                    format_args!("ignoring {name}: not a message a downstream sends to a pool"),
                );
                vec![]
            }
        }
    }
}

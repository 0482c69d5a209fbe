//! The Hashpool pool: a Stratum V2 mining server over Noise.
//!
//! Downstreams (miners, translators) speak the SV2 mining protocol:
//! SetupConnection, RequestExtensions (the ehash extension is granted,
//! anything else refused with RequestExtensions.Error), standard and
//! extended channels (channels_sv2: jobs from templates, vardiff, share
//! validation, duplicates, stale jobs). Templates come from a template
//! provider (devnet-tp or sv2-tp) whose authority key is pinned; block
//! solutions go back to it.
//!
//! Every accepted share becomes an [`AcceptedShare`] (header, hash, target,
//! ehash amount, locking key) handed to an [`AcceptedShareSink`]; the ehash
//! flow (mint quotes) consumes it. [`PoolHandle::send_extension`] sends an
//! ehash extension message to the connection owning a channel, if that
//! connection negotiated the extension.
//!
//! With a `[mint]` config table the pool runs the ehash flow: every accepted
//! share is journaled in an outbox, asked for at the mint, and answered by a
//! MintQuoteNotification on the owning connection (`annotate`) or by a
//! SubmitSharesSuccess once its quote exists (`defer`). See [`ehash`].
//!
//! Where things live: [`mining`] is the sans-IO mining protocol (connections,
//! channels, shares, templates); [`ehash`] is the ehash flow (its sans-IO
//! state machine [`ehash::flow`], its task, the outbox and the mint link);
//! `io` holds the sockets and tasks of the mining side (downstreams, template
//! provider, timers); this file starts it all and is the crate's API.

pub mod config;
pub mod ehash;
mod io;
pub mod jds;
pub mod mining;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::PoolConfig;
pub use crate::io::{AcceptedShareSink, PoolEvent};
pub use crate::mining::{AcceptedShare, ConnId, Stats};
use ehash_ext_sv2::EhashMessage;
use mint_quote_sv2::MintStatsResponse;
use roles_common::stats_publisher::StatsPublisher;
use roles_common::tasks::RoleTasks;
use stats_sv2::role;
use stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    TaskEnded(String),
}

/// Why an extension message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendExtensionError {
    #[error("no open channel {0}")]
    UnknownChannel(u32),
    #[error("the connection of channel {0} did not negotiate the ehash extension")]
    NotNegotiated(u32),
    #[error("the connection of channel {0} is closing")]
    ConnectionGone(u32),
}

/// Hooks the ehash flow plugs into.
#[derive(Default, Clone)]
pub struct Hooks {
    pub accepted_shares: Option<Arc<dyn AcceptedShareSink>>,
}

/// A running pool.
pub struct PoolHandle {
    local_addr: SocketAddr,
    jds_addr: Option<SocketAddr>,
    shared: Arc<io::Shared>,
    tasks: RoleTasks,
    mint_stats: Option<Arc<std::sync::Mutex<Option<MintStatsResponse>>>>,
}

impl PoolHandle {
    /// The address downstreams connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address job declaration clients connect to, with `[jds]`.
    pub fn jds_addr(&self) -> Option<SocketAddr> {
        self.jds_addr
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<PoolEvent> {
        self.shared.events.subscribe()
    }

    /// The latest MintStatsResponse, when the ehash flow runs and the mint answered.
    pub fn mint_stats(&self) -> Option<MintStatsResponse> {
        self.mint_stats
            .as_ref()?
            .lock()
            .expect("stats lock")
            .clone()
    }

    /// How long each notification acknowledged since the last call waited
    /// for its acknowledgement (the latest 100,000 at most).
    pub fn take_ack_round_trips(&self) -> Vec<std::time::Duration> {
        self.shared.take_ack_round_trips()
    }

    /// Ehash notifications refused since start: over the bounds of what is
    /// kept until acknowledged.
    pub fn notices_refused(&self) -> u64 {
        self.shared
            .notices_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn stats(&self) -> Stats {
        self.shared.core().stats()
    }

    /// The publisher of the pool's stats events (disabled without `[stats]`).
    pub fn stats_publisher(&self) -> &StatsPublisher {
        &self.shared.stats
    }

    /// Whether the connection owning `channel_id` negotiated the ehash extension.
    pub fn channel_has_ehash(&self, channel_id: u32) -> Option<bool> {
        self.shared
            .core()
            .channel_owner(channel_id)
            .map(|(_, ehash)| ehash)
    }

    /// Sends an ehash extension message to the connection owning `channel_id`
    /// (never to a connection that did not negotiate the extension).
    pub fn send_extension(
        &self,
        channel_id: u32,
        message: EhashMessage,
    ) -> Result<(), SendExtensionError> {
        let owner = self.shared.core().channel_owner(channel_id);
        match owner {
            None => Err(SendExtensionError::UnknownChannel(channel_id)),
            Some((_, false)) => Err(SendExtensionError::NotNegotiated(channel_id)),
            Some((conn, true)) => {
                if self.shared.push(conn, io::Outbound::Ehash(message)) {
                    Ok(())
                } else {
                    Err(SendExtensionError::ConnectionGone(channel_id))
                }
            }
        }
    }

    /// Waits until the pool stopped: its shutdown token was cancelled, or
    /// one of its tasks ended on its own (`Err` naming it).
    pub async fn wait(self) -> Result<(), String> {
        self.tasks.wait().await
    }
}

/// Binds the listener, starts the template provider link and serves.
pub async fn start(
    config: PoolConfig,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> Result<PoolHandle, PoolError> {
    // The pool's own: a task ending early stops the pool, nothing else.
    let shutdown = shutdown.child_token();
    let core = mining::PoolCore::new(core_config(&config)).map_err(PoolError::Setup)?;
    let ShareRoute { sink, flow } = share_route(&config, hooks)?;
    let mint_stats = flow.as_ref().map(|f| f.mint_stats.clone());
    let (solutions_tx, solutions_rx) = mpsc::unbounded_channel();
    let stats = StatsPublisher::for_config(config.stats.as_ref(), role::POOL, shutdown.clone());
    let shared = Arc::new(io::Shared::new(core, solutions_tx, sink, stats));
    let (listener, local_addr) = bind(&config.listen_address).await?;
    let jds_listener = match &config.jds {
        Some(jds) => Some(bind(&jds.listen_address).await?),
        None => None,
    };
    let jds_addr = jds_listener.as_ref().map(|(_, addr)| *addr);
    info!(
        %local_addr,
        tp = %config.tp_address,
        unit_bits = config.unit_bits,
        require_locking_key = config.require_locking_key,
        jds = ?jds_addr,
        "pool listening"
    );
    let listeners = Listeners {
        mining: listener,
        jds: jds_listener.map(|(listener, _)| listener),
    };
    let mut tasks = RoleTasks::new(shutdown.clone());
    spawn_mining_tasks(
        &mut tasks,
        &config,
        listeners,
        &shared,
        solutions_rx,
        &shutdown,
    );
    if let Some(flow) = flow {
        tasks.spawn("the ehash flow", flow.run(shared.clone(), shutdown.clone()));
    }
    Ok(PoolHandle {
        local_addr,
        jds_addr,
        shared,
        tasks,
        mint_stats,
    })
}

async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), PoolError> {
    let listen_error = |source| PoolError::Listen {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local_addr))
}

/// The pool's listeners: miners, and job declaration clients with `[jds]`.
struct Listeners {
    mining: TcpListener,
    jds: Option<TcpListener>,
}

fn core_config(config: &PoolConfig) -> mining::CoreConfig {
    mining::CoreConfig {
        pool_signature: config.pool_signature.clone(),
        reward_script: config.reward_script(),
        shares_per_minute: config.shares_per_minute,
        share_batch_size: config.share_batch_size,
        unit_bits: config.unit_bits(),
        whole_units: config.mint.is_some(),
        easiest_target: config.easiest_target(),
        require_locking_key: config.require_locking_key,
        max_channels: config.max_channels,
        max_channels_per_connection: config.max_channels_per_connection,
        max_channels_per_ip: config.max_channels_per_ip,
        idle_channels: config.idle_channels(),
        extranonce_len: config.extranonce_len,
        // With the ehash flow, shares are acknowledged by the flow.
        acknowledge_shares: config.mint.is_none(),
        job_declaration: config.jds.is_some(),
        allow_coinbase_only: config.jds.as_ref().is_some_and(|j| j.allow_coinbase_only),
        // No custom work without a job declarator.
        max_custom_jobs: config
            .jds
            .as_ref()
            .map_or(usize::MAX, |j| j.max_custom_jobs),
        max_custom_jobs_per_address: config
            .jds
            .as_ref()
            .map_or(usize::MAX, |j| j.max_custom_jobs_per_address),
    }
}

/// Where accepted shares go, and the ehash flow consuming them (prepared,
/// to run once the pool is up).
struct ShareRoute {
    sink: Option<Arc<dyn AcceptedShareSink>>,
    flow: Option<ehash::PreparedFlow>,
}

/// The ehash flow with a `[mint]` table, otherwise the hook, if any.
fn share_route(config: &PoolConfig, hooks: Hooks) -> Result<ShareRoute, PoolError> {
    let Some(mint) = &config.mint else {
        return Ok(ShareRoute {
            sink: hooks.accepted_shares,
            flow: None,
        });
    };
    if hooks.accepted_shares.is_some() {
        return Err(PoolError::Setup(
            "an accepted-share hook and the [mint] ehash flow cannot both be set".into(),
        ));
    }
    let (sink, flow) = ehash::prepare(mint, &config.state_dir, config.unit_bits().get())?;
    Ok(ShareRoute {
        sink: Some(Arc::new(sink)),
        flow: Some(flow),
    })
}

/// The listeners, the template provider link and the timers.
fn spawn_mining_tasks(
    tasks: &mut RoleTasks,
    config: &PoolConfig,
    listeners: Listeners,
    shared: &Arc<io::Shared>,
    solutions: mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    shutdown: &CancellationToken,
) {
    let listening = Arc::new(io::Listening {
        public: config.authority_public_key,
        secret: config.authority_secret_key,
        cert_validity_sec: config.cert_validity_sec,
        limits: roles_common::limits::ConnectionLimits::new(
            config.max_connections,
            config.max_connections_per_ip,
        ),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        write_timeout: Duration::from_secs(config.write_timeout_secs),
    });
    tasks.spawn(
        "the mining listener",
        io::accept_loop(
            listeners.mining,
            shared.clone(),
            listening.clone(),
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "the template provider link",
        io::tp_loop(
            io::TpLink {
                address: config.tp_address.clone(),
                authority_public_key: config.tp_authority_public_key,
            },
            shared.clone(),
            solutions,
            shutdown.clone(),
        ),
    );
    if let (Some(listener), Some(jds)) = (listeners.jds, &config.jds) {
        let listening = Arc::new(io::Listening {
            limits: roles_common::limits::ConnectionLimits::new(
                jds.max_connections,
                jds.max_connections_per_ip,
            ),
            ..(*listening).clone()
        });
        tasks.spawn(
            "the job declarator listener",
            io::jds_accept_loop(listener, shared.clone(), listening, shutdown.clone()),
        );
    }
    let idle_check_secs = config.idle_channels().map_or(0, |idle| idle.check_secs);
    let timers: [(&str, u64, io::Tick); 3] = [
        (
            "the vardiff timer",
            config.vardiff_interval_secs,
            io::vardiff_tick,
        ),
        ("the idle channel timer", idle_check_secs, io::idle_tick),
        (
            "the stats log timer",
            config.stats_log_interval_secs,
            io::log_stats,
        ),
    ];
    for (name, secs, tick) in timers.into_iter().filter(|(_, secs, _)| *secs > 0) {
        let period = Duration::from_secs(secs);
        tasks.spawn(
            name,
            io::every(shared.clone(), period, shutdown.clone(), tick),
        );
    }
}

/// Runs the pool until `shutdown` is cancelled.
pub async fn run(config: PoolConfig, shutdown: CancellationToken) -> Result<(), PoolError> {
    let handle = start(config, shutdown, Hooks::default()).await?;
    handle.wait().await.map_err(PoolError::TaskEnded)
}

//! Sockets and tasks: the downstream listener, one task per connection, the
//! template provider link and the vardiff timer. All protocol decisions are
//! made by [`PoolCore`]; this module applies its [`Action`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::LockingKey;
use ehash_ext_sv2::{EhashMessage, MessageSet};
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use roles_common::sv2::{
    self, message_name, send, send_ehash, Incoming, ReadError, SendError, Sv2Connection, Sv2Reader,
};
use stats_sv2::{link, StatsMessage};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::accept_noise_connection;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, SubmitSolutionOwned,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::{AcceptedShare, Action, ConnId, PoolCore, StatsEvent};

/// Receives every accepted share and every opened channel (the ehash flow).
pub trait AcceptedShareSink: Send + Sync + 'static {
    fn accepted(&self, share: AcceptedShare);

    /// A channel opened on `conn` (whose ehash negotiation is `ehash`).
    fn channel_opened(
        &self,
        _conn: ConnId,
        _channel_id: u32,
        _key: Option<LockingKey>,
        _ehash: bool,
    ) {
    }
}

impl AcceptedShareSink for mpsc::UnboundedSender<AcceptedShare> {
    fn accepted(&self, share: AcceptedShare) {
        let _ = self.send(share);
    }
}

/// Something that happened, for tests and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolEvent {
    TemplateProviderConnected,
    TemplateProviderDisconnected(String),
    /// A downstream finished its Noise handshake.
    Connected(ConnId),
    /// A downstream connection closed, with the reason logged.
    ConnectionClosed {
        conn: Option<ConnId>,
        reason: String,
    },
    /// A block solution went to the template provider.
    BlockSubmitted {
        template_id: u64,
    },
}

pub(crate) enum Outbound {
    Message(AnyMessageOwned),
    Ehash(EhashMessage),
    Close(String),
}

/// A downstream that has not completed SetupConnection by then is dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Queue depth per downstream; a peer that lets it fill up is disconnected.
const SEND_QUEUE: usize = 4096;

pub(crate) struct Shared {
    pub(crate) core: Mutex<PoolCore>,
    pub(crate) writers: Mutex<HashMap<ConnId, mpsc::Sender<Outbound>>>,
    solutions: mpsc::UnboundedSender<SubmitSolutionOwned>,
    pub(crate) events: broadcast::Sender<PoolEvent>,
    sink: Option<Arc<dyn AcceptedShareSink>>,
    pub(crate) stats: StatsPublisher,
}

impl Shared {
    pub(crate) fn new(
        core: PoolCore,
        solutions: mpsc::UnboundedSender<SubmitSolutionOwned>,
        sink: Option<Arc<dyn AcceptedShareSink>>,
        stats: StatsPublisher,
    ) -> Self {
        Self {
            core: Mutex::new(core),
            writers: Mutex::new(HashMap::new()),
            solutions,
            events: broadcast::channel(1024).0,
            sink,
            stats,
        }
    }

    pub(crate) fn push(&self, conn: ConnId, out: Outbound) -> bool {
        let mut writers = self.writers.lock().expect("writers lock");
        let Some(tx) = writers.get(&conn) else {
            return false;
        };
        match tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropping its sender ends the connection task ("send queue overflow").
                writers.remove(&conn);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn dispatch(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(conn, msg) => {
                    let opened = opened_channel(&msg);
                    self.push(conn, Outbound::Message(msg));
                    if let (Some(channel_id), Some(sink)) = (opened, &self.sink) {
                        let info = {
                            let core = self.core.lock().expect("core lock");
                            core.channel_locking_key(channel_id)
                                .map(|key| (key, core.connection_has_ehash(conn)))
                        };
                        if let Some((key, ehash)) = info {
                            sink.channel_opened(conn, channel_id, key, ehash);
                        }
                    }
                }
                Action::Close(conn, reason) => {
                    self.push(conn, Outbound::Close(reason));
                }
                Action::SubmitSolution(solution) => {
                    let template_id = solution.template_id;
                    if self.solutions.send(solution).is_ok() {
                        let _ = self.events.send(PoolEvent::BlockSubmitted { template_id });
                    }
                }
                Action::Accepted(share) => {
                    if let Some(sink) = &self.sink {
                        sink.accepted(share);
                    }
                }
                Action::Stats(event) => self.stats.publish(stats_message(event, now_ms())),
            }
        }
    }
}

/// The stats service numbers downstreams with u32: connection ids count up
/// from 1, so they only wrap after 4 billion connections.
pub(crate) fn downstream_id(conn: ConnId) -> u32 {
    conn as u32
}

fn stats_message(event: StatsEvent, timestamp: u64) -> StatsMessage {
    match event {
        StatsEvent::DownstreamConnected { conn, flags } => stats_sv2::DownstreamConnected {
            downstream_id: downstream_id(conn),
            flags,
            timestamp,
        }
        .into(),
        StatsEvent::DownstreamDisconnected { conn } => stats_sv2::DownstreamDisconnected {
            downstream_id: downstream_id(conn),
            timestamp,
        }
        .into(),
        StatsEvent::ChannelOpened { conn, channel_id } => stats_sv2::ChannelOpened {
            downstream_id: downstream_id(conn),
            channel_id,
            timestamp,
        }
        .into(),
        StatsEvent::ChannelClosed { conn, channel_id } => stats_sv2::ChannelClosed {
            downstream_id: downstream_id(conn),
            channel_id,
            timestamp,
        }
        .into(),
        StatsEvent::ShareSubmitted {
            conn,
            channel_id,
            accepted,
            work,
        } => stats_sv2::ShareSubmitted {
            downstream_id: downstream_id(conn),
            channel_id,
            accepted,
            work,
            timestamp,
        }
        .into(),
        StatsEvent::BlockFound {
            channel_id,
            height,
            block_hash,
        } => stats_sv2::BlockFoundOwned {
            height,
            block_hash: block_hash.into(),
            channel_id,
            timestamp,
        }
        .into(),
    }
}

/// The channel a message announces as opened, if it is such a message.
fn opened_channel(msg: &AnyMessageOwned) -> Option<u32> {
    match msg {
        AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(m)) => {
            Some(m.channel_id)
        }
        AnyMessageOwned::Mining(MiningOwned::OpenStandardMiningChannelSuccess(m)) => {
            Some(m.channel_id)
        }
        _ => None,
    }
}

pub(crate) struct Keys {
    pub public: Secp256k1PublicKey,
    pub secret: Secp256k1SecretKey,
    pub cert_validity_sec: u64,
}

// ------------------------------------------------------------------ downstream

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    roles_common::accept_loop("pool", listener, shutdown, move |id, stream, peer| {
        let _ = stream.set_nodelay(true);
        let (shared, keys, shutdown) = (shared.clone(), keys.clone(), connections.clone());
        async move {
            let (conn, result) = serve_downstream(id, stream, peer, &shared, &keys, shutdown).await;
            let reason = match result {
                Ok(()) => {
                    info!(conn = id, %peer, "downstream disconnected");
                    ReadError::ClosedByPeer.to_string()
                }
                Err(reason) => {
                    warn!(conn = id, %peer, "closing downstream connection: {reason}");
                    reason
                }
            };
            let _ = shared
                .events
                .send(PoolEvent::ConnectionClosed { conn, reason });
        }
    })
    .await;
}

async fn serve_downstream(
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    keys: &Keys,
    shutdown: CancellationToken,
) -> (Option<ConnId>, Result<(), String>) {
    let noise =
        match accept_noise_connection(stream, keys.public, keys.secret, keys.cert_validity_sec)
            .await
        {
            Ok(n) => n,
            Err(e) => return (None, Err(format!("noise handshake failed: {e}"))),
        };
    info!(conn = id, %peer, "downstream connected");
    let (reader, mut writer) = noise.into_split();
    let mut reader = Sv2Reader::spawn(reader, "downstream", 256);
    let (out_tx, mut out_rx) = mpsc::channel(SEND_QUEUE);
    shared
        .writers
        .lock()
        .expect("writers lock")
        .insert(id, out_tx);
    shared.core.lock().expect("core lock").on_connect(id);
    let _ = shared.events.send(PoolEvent::Connected(id));
    let setup_deadline = tokio::time::sleep(SETUP_TIMEOUT);
    tokio::pin!(setup_deadline);
    let mut setup_checked = false;

    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = &mut setup_deadline, if !setup_checked => {
                if !shared.core.lock().expect("core lock").connection_setup_done(id) {
                    break Err(format!("no SetupConnection within {SETUP_TIMEOUT:?}"));
                }
                setup_checked = true;
            }
            incoming = reader.recv() => match incoming {
                Ok(Incoming::Sv2(msg)) => {
                    debug!(conn = id, "received {}", message_name(&msg));
                    let actions = shared.core.lock().expect("core lock").on_message(id, msg);
                    shared.dispatch(actions);
                }
                Ok(Incoming::Ehash(msg)) => {
                    warn!(conn = id, "ignoring a downstream {}", msg.name());
                }
                Err(ReadError::ClosedByPeer) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Message(msg)) => {
                    if let Err(e) = send(&mut writer, msg).await {
                        break Err(e.to_string());
                    }
                }
                Some(Outbound::Ehash(msg)) => match send_ehash(&mut writer, msg).await {
                    Ok(()) => {}
                    Err(e @ SendError::Frame { .. }) => warn!(conn = id, "{e}"),
                    Err(e) => break Err(e.to_string()),
                },
                Some(Outbound::Close(reason)) => break Err(reason),
                None => break Err("send queue overflow (peer does not read)".into()),
            },
        }
    };
    shared.writers.lock().expect("writers lock").remove(&id);
    let (result, closed) = {
        let mut core = shared.core.lock().expect("core lock");
        let setup_done = core.connection_setup_done(id);
        let closed = core.on_disconnect(id);
        let result = match result {
            Ok(()) if !setup_done && !shutdown.is_cancelled() => Err(
                "closed by peer before SetupConnection (did it pin another authority key?)"
                    .to_string(),
            ),
            other => other,
        };
        (result, closed)
    };
    shared.dispatch(closed);
    drop(reader);
    let _ = writer.shutdown().await;
    (Some(id), result)
}

// ------------------------------------------------------------------ template provider

pub(crate) struct TpLink {
    pub address: String,
    pub authority_public_key: Secp256k1PublicKey,
}

pub(crate) async fn tp_loop(
    link: TpLink,
    shared: Arc<Shared>,
    mut solutions: mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = tp_session(&link, &shared, &mut solutions, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match result {
            Ok(()) => "closed".to_string(),
            Err(e) => e,
        };
        warn!(
            address = %link.address,
            "template provider link down: {reason}; retrying in {backoff:?}"
        );
        shared.stats.link_status(link::TEMPLATE_PROVIDER, false);
        let _ = shared
            .events
            .send(PoolEvent::TemplateProviderDisconnected(reason));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn tp_session(
    link: &TpLink,
    shared: &Arc<Shared>,
    solutions: &mut mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut conn = sv2::connect(
        &link.address,
        link.authority_public_key,
        "template provider",
        256,
    )
    .await
    .map_err(|e| e.explain("tp_authority_public_key"))?;
    let result = tp_serve(link, shared, &mut conn, solutions, shutdown).await;
    drop(conn.reader);
    let _ = conn.writer.shutdown().await;
    result
}

/// Sets the connection up, then relays templates to the core and solutions
/// to the template provider.
async fn tp_serve(
    link: &TpLink,
    shared: &Arc<Shared>,
    conn: &mut Sv2Connection,
    solutions: &mut mpsc::UnboundedReceiver<SubmitSolutionOwned>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let setup = sv2::setup_connection(
        Protocol::TemplateDistributionProtocol,
        0,
        conn.peer,
        env!("CARGO_PKG_VERSION"),
        "pool",
    );
    conn.setup(setup).await?;
    let (size, sigops) = shared
        .core
        .lock()
        .expect("core lock")
        .coinbase_output_constraints();
    let constraints = CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: size,
        coinbase_output_max_additional_sigops: sigops,
    };
    conn.send(AnyMessageOwned::TemplateDistribution(
        TemplateDistributionOwned::CoinbaseOutputConstraints(constraints),
    ))
    .await
    .map_err(|e| e.to_string())?;
    info!(address = %link.address, "connected to the template provider");
    shared.stats.link_status(link::TEMPLATE_PROVIDER, true);
    let _ = shared.events.send(PoolEvent::TemplateProviderConnected);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            solution = solutions.recv() => {
                let Some(solution) = solution else { return Ok(()) };
                info!(template_id = solution.template_id, "sending SubmitSolution");
                conn.send(AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::SubmitSolution(solution),
                ))
                .await
                .map_err(|e| e.to_string())?;
            }
            incoming = conn.reader.recv() => {
                let actions = match incoming.map_err(|e| e.to_string())? {
                    Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                        TemplateDistributionOwned::NewTemplate(t),
                    )) => shared.core.lock().expect("core lock").on_new_template(t),
                    Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                        TemplateDistributionOwned::SetNewPrevHash(p),
                    )) => shared.core.lock().expect("core lock").on_set_new_prev_hash(p),
                    Incoming::Sv2(other) => {
                        debug!("ignoring {} from the template provider", message_name(&other));
                        vec![]
                    }
                    Incoming::Ehash(m) => {
                        debug!("ignoring {} from the template provider", m.name());
                        vec![]
                    }
                };
                shared.dispatch(actions);
            }
        }
    }
}

// ------------------------------------------------------------------ vardiff

pub(crate) async fn vardiff_loop(
    shared: Arc<Shared>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                let actions = shared.core.lock().expect("core lock").on_vardiff_tick();
                shared.dispatch(actions);
            }
        }
    }
}

pub(crate) async fn stats_log_loop(
    shared: Arc<Shared>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                let s = shared.core.lock().expect("core lock").stats();
                info!(
                    shares_accepted = s.shares_accepted,
                    shares_rejected = s.shares_rejected,
                    blocks_found = s.blocks_found,
                    channels_open = s.channels_open,
                    "pool stats"
                );
            }
        }
    }
}

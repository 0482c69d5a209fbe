//! Sockets and tasks: the downstream listener, one task per connection, the
//! template provider link and the vardiff timer. All protocol decisions are
//! made by [`PoolCore`]; this module applies its [`Action`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::LockingKey;
use ehash_ext_sv2::{is_ehash_frame, EhashMessage, MessageSet};
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use stats_sv2::{link, StatsMessage};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::{
    accept_noise_connection, connect_with_noise,
    noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf},
    Error as NetError,
};
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::framing_sv2::framing::MessageFrame;
use stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessagesOwned, IsSv2Message, MiningOwned, ParserError,
    TemplateDistributionOwned,
};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, SubmitSolutionOwned,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::{message_name, AcceptedShare, Action, ConnId, PoolCore, StatsEvent};

/// Receives every accepted share (the next issue turns them into mint quotes).
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

fn frame(msg: AnyMessageOwned) -> Result<MessageFrame<AnyMessageOwned>, String> {
    let (t, e, c) = (msg.message_type(), msg.extension_type(), msg.channel_bit());
    MessageFrame::from_message(msg, t, e, c).map_err(|e| format!("cannot frame message: {e:?}"))
}

async fn send(writer: &mut NoiseTcpWriteHalf, msg: AnyMessageOwned) -> Result<(), String> {
    writer
        .write_frame(frame(msg)?)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

const CLOSED_BY_PEER: &str = "closed by peer";

/// Reads frames until an error; `Ok(None)` is a frame that was ignored.
fn spawn_reader(
    mut reader: NoiseTcpReadHalf,
    who: &'static str,
) -> (
    mpsc::Receiver<Result<AnyMessageOwned, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        loop {
            let result = match reader.read_frame().await {
                Ok(mut frame) => {
                    let header = frame.header();
                    let ext = header.ext_type_without_channel_msg();
                    if is_ehash_frame(&header) || (ext != 0 && ext != 0x0001) {
                        warn!(
                            "ignoring a {who} frame of extension 0x{ext:04x} type 0x{:02x}",
                            header.msg_type()
                        );
                        continue;
                    }
                    match AnyMessage::try_from((header, frame.payload())) {
                        Ok(m) => Ok(m.into_owned()),
                        Err(ParserError::UnexpectedMessage(t)) => {
                            warn!("ignoring a {who} message of unknown type 0x{t:02x}");
                            continue;
                        }
                        Err(e) => Err(format!(
                            "malformed frame (message type 0x{:02x}): {e:?}",
                            header.msg_type()
                        )),
                    }
                }
                Err(NetError::SocketClosed) => Err(CLOSED_BY_PEER.to_string()),
                Err(e) => Err(format!("read failed: {e}")),
            };
            let stop = result.is_err();
            if tx.send(result).await.is_err() || stop {
                break;
            }
        }
    });
    (rx, task)
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
                    CLOSED_BY_PEER.to_string()
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
    let (out_tx, mut out_rx) = mpsc::channel(SEND_QUEUE);
    shared
        .writers
        .lock()
        .expect("writers lock")
        .insert(id, out_tx);
    shared.core.lock().expect("core lock").on_connect(id);
    let _ = shared.events.send(PoolEvent::Connected(id));
    let (mut in_rx, reader_task) = spawn_reader(reader, "downstream");
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
            incoming = in_rx.recv() => match incoming {
                Some(Ok(msg)) => {
                    debug!(conn = id, "received {}", message_name(&msg));
                    let actions = shared.core.lock().expect("core lock").on_message(id, msg);
                    shared.dispatch(actions);
                }
                Some(Err(e)) if e == CLOSED_BY_PEER => break Ok(()),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            out = out_rx.recv() => match out {
                Some(Outbound::Message(msg)) => {
                    if let Err(e) = send(&mut writer, msg).await {
                        break Err(e);
                    }
                }
                Some(Outbound::Ehash(msg)) => {
                    let frame = match msg.into_frame() {
                        Ok(f) => f,
                        Err(e) => { warn!(conn = id, "{e}"); continue; }
                    };
                    if let Err(e) = writer.write_frame(frame).await {
                        break Err(format!("write failed: {e}"));
                    }
                }
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
    reader_task.abort();
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
    let stream = tokio::time::timeout(
        stratum_apps::network_helpers::TCP_CONNECT_TIMEOUT,
        TcpStream::connect(&link.address),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect failed: {e}"))?;
    let peer = stream.peer_addr().ok();
    let noise = connect_with_noise(stream, Some(link.authority_public_key))
        .await
        .map_err(|e| format!("noise handshake failed (is tp_authority_public_key right?): {e}"))?;
    let (reader, mut writer) = noise.into_split();
    let (host, port) = match peer {
        Some(p) => (p.ip().to_string(), p.port()),
        None => (String::new(), 0),
    };
    let setup = SetupConnectionOwned {
        protocol: Protocol::TemplateDistributionProtocol,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: host.try_into().map_err(|e| format!("{e:?}"))?,
        endpoint_port: port,
        vendor: "hashpool"
            .to_string()
            .try_into()
            .map_err(|e| format!("{e:?}"))?,
        hardware_version: String::new().try_into().map_err(|e| format!("{e:?}"))?,
        firmware: env!("CARGO_PKG_VERSION")
            .to_string()
            .try_into()
            .map_err(|e| format!("{e:?}"))?,
        device_id: "pool"
            .to_string()
            .try_into()
            .map_err(|e| format!("{e:?}"))?,
    };
    send(
        &mut writer,
        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(setup)),
    )
    .await?;
    let (mut in_rx, reader_task) = spawn_reader(reader, "template provider");
    let result = async {
        match tokio::time::timeout(Duration::from_secs(10), in_rx.recv()).await {
            Ok(Some(Ok(AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(_))))) => {}
            Ok(Some(Ok(AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(e))))) => {
                return Err(format!(
                    "SetupConnection refused: {}",
                    String::from_utf8_lossy(e.error_code.as_bytes())
                ))
            }
            Ok(Some(Ok(other))) => {
                return Err(format!("expected SetupConnection.Success, got {}", message_name(&other)))
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err(CLOSED_BY_PEER.into()),
            Err(_) => return Err("no SetupConnection answer within 10 s".into()),
        }
        let (size, sigops) = shared.core.lock().expect("core lock").coinbase_output_constraints();
        send(
            &mut writer,
            AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::CoinbaseOutputConstraints(CoinbaseOutputConstraintsOwned {
                    coinbase_output_max_additional_size: size,
                    coinbase_output_max_additional_sigops: sigops,
                }),
            ),
        )
        .await?;
        info!(address = %link.address, "connected to the template provider");
        shared.stats.link_status(link::TEMPLATE_PROVIDER, true);
        let _ = shared.events.send(PoolEvent::TemplateProviderConnected);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                solution = solutions.recv() => {
                    let Some(solution) = solution else { return Ok(()) };
                    info!(template_id = solution.template_id, "sending SubmitSolution");
                    send(
                        &mut writer,
                        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SubmitSolution(solution)),
                    )
                    .await?;
                }
                incoming = in_rx.recv() => {
                    let msg = match incoming {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return Err(e),
                        None => return Err(CLOSED_BY_PEER.into()),
                    };
                    let actions = match msg {
                        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(t)) => {
                            shared.core.lock().expect("core lock").on_new_template(t)
                        }
                        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(p)) => {
                            shared.core.lock().expect("core lock").on_set_new_prev_hash(p)
                        }
                        other => {
                            debug!("ignoring {} from the template provider", message_name(&other));
                            vec![]
                        }
                    };
                    shared.dispatch(actions);
                }
            }
        }
    }
    .await;
    reader_task.abort();
    let _ = writer.shutdown().await;
    result
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

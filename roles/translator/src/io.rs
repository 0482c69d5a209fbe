//! Sockets and tasks: the SV1 listener with one task per miner, the upstream
//! router (one Noise connection to the pool carrying every miner's channel,
//! with failover over the configured pools), the quote recorder and the
//! minting loop. Protocol decisions live in [`crate::miner`]; this module
//! moves bytes and applies [`Out`] actions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey};
use ehash_ext_sv2::EhashMessage;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use roles_common::sv2::{self, send, Incoming, ReadError, SendError};
use stats_sv2::{link, StatsMessage};
use stratum_apps::network_helpers::noise_stream::NoiseTcpWriteHalf;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::mining_sv2::CloseChannelOwned;
use stratum_core::parsers_sv2::{AnyMessageOwned, IsSv2Message, MiningOwned};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::aggregate::{AggOut, Aggregate};
use crate::config::UpstreamConfig;
use crate::miner::{MinerSession, MinerStat, Out, SessionConfig};
use crate::quotes::{FailureRecord, QuoteRecord, QuoteState, QuoteStore};
use crate::wallet::EhashWallet;
use crate::TranslatorEvent;

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Router -> miner task.
#[derive(Debug)]
pub(crate) enum ToMiner {
    Upstream(MiningOwned),
    Ready,
    Lost,
}

/// Miner task -> router.
pub(crate) enum ToRouter {
    Register(u32, mpsc::Sender<ToMiner>),
    Unregister(u32),
    Send(u32, MiningOwned),
}

/// Depth of a miner's inbox; a miner task that cannot keep up is dropped.
const MINER_QUEUE: usize = 1024;
/// A miner must subscribe within this time.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ SV1 side

pub(crate) struct MinerContext {
    pub session: SessionConfig,
    pub max_line_bytes: usize,
    pub router: mpsc::UnboundedSender<ToRouter>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub next_id: AtomicU32,
    pub stats: StatsPublisher,
}

fn miner_stat_message(miner_id: u32, stat: MinerStat) -> StatsMessage {
    let timestamp = now_ms();
    match stat {
        MinerStat::Connected { name } => stats_sv2::MinerConnectedOwned {
            miner_id,
            name: str0255_truncated(&name),
            timestamp,
        }
        .into(),
        MinerStat::Share { accepted, work } => stats_sv2::MinerShare {
            miner_id,
            accepted,
            work,
            timestamp,
        }
        .into(),
        MinerStat::Hashrate(hashrate) => stats_sv2::HashrateUpdate {
            miner_id,
            hashrate,
            timestamp,
        }
        .into(),
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<MinerContext>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    roles_common::accept_loop("translator", listener, shutdown, move |_, stream, peer| {
        let _ = stream.set_nodelay(true);
        let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
        let (ctx, shutdown) = (ctx.clone(), connections.clone());
        async move {
            let _ = ctx.events.send(TranslatorEvent::MinerConnected(id));
            let mut session = MinerSession::new(ctx.session.clone(), id);
            let reason = match serve_miner(id, stream, &ctx, &mut session, shutdown).await {
                Ok(()) => {
                    info!(miner = id, %peer, "miner disconnected");
                    "closed by miner".to_string()
                }
                Err(reason) => {
                    warn!(miner = id, %peer, "disconnecting miner: {reason}");
                    reason
                }
            };
            let _ = ctx.router.send(ToRouter::Unregister(id));
            if session.announced() {
                ctx.stats.publish(stats_sv2::MinerDisconnected {
                    miner_id: id,
                    timestamp: now_ms(),
                });
            }
            let _ = ctx
                .events
                .send(TranslatorEvent::MinerDisconnected { miner: id, reason });
        }
    })
    .await;
}

enum LineRead {
    Line,
    Eof,
}

/// Reads one line into `buf` (cancel-safe: partial data stays in `buf`).
async fn read_line_bounded(
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<LineRead, String> {
    loop {
        let available = reader
            .fill_buf()
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        if let Some(pos) = available.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&available[..pos]);
            reader.consume(pos + 1);
            if buf.len() > max {
                return Err(format!("line longer than {max} bytes"));
            }
            return Ok(LineRead::Line);
        }
        let n = available.len();
        buf.extend_from_slice(available);
        reader.consume(n);
        if buf.len() > max {
            return Err(format!("line longer than {max} bytes"));
        }
    }
}

async fn serve_miner(
    id: u32,
    stream: TcpStream,
    ctx: &MinerContext,
    session: &mut MinerSession,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(4096, read);
    let (tx, mut rx) = mpsc::channel(MINER_QUEUE);
    ctx.router
        .send(ToRouter::Register(id, tx))
        .map_err(|_| "translator is stopping".to_string())?;
    let mut buf = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subscribe_deadline = tokio::time::sleep(SUBSCRIBE_TIMEOUT);
    tokio::pin!(subscribe_deadline);
    let mut subscribed_checked = false;
    loop {
        let outs = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = &mut subscribe_deadline, if !subscribed_checked => {
                if session.identity().is_none() {
                    return Err(format!("not authorized within {SUBSCRIBE_TIMEOUT:?}"));
                }
                subscribed_checked = true;
                vec![]
            }
            read = read_line_bounded(&mut reader, &mut buf, ctx.max_line_bytes) => match read? {
                LineRead::Eof => return Ok(()),
                LineRead::Line => {
                    let line = String::from_utf8_lossy(&buf).to_string();
                    buf.clear();
                    debug!(miner = id, line, "sv1 in");
                    session.on_line(&line, now_secs())
                }
            },
            msg = rx.recv() => match msg {
                Some(ToMiner::Upstream(m)) => session.on_upstream(m, now_secs()),
                Some(ToMiner::Ready) => session.on_upstream_ready(),
                Some(ToMiner::Lost) => session.on_upstream_lost(),
                None => return Err("dropped by the router (miner too slow, or translator stopping)".into()),
            },
            _ = tick.tick() => session.on_tick(now_secs()),
        };
        for out in outs {
            match out {
                Out::Sv1(line) => {
                    debug!(miner = id, line = line.trim_end(), "sv1 out");
                    write
                        .write_all(line.as_bytes())
                        .await
                        .map_err(|e| format!("write failed: {e}"))?;
                }
                Out::Upstream(m) => {
                    if ctx.router.send(ToRouter::Send(id, m)).is_err() {
                        return Err("translator is stopping".into());
                    }
                }
                Out::Close(reason) => return Err(reason),
                Out::Stats(stat) => ctx.stats.publish(miner_stat_message(id, stat)),
            }
        }
    }
}

// ------------------------------------------------------------------ upstream

/// What the router knows about a channel.
#[derive(Debug, Clone, Copy)]
struct ChannelInfo {
    miner: u32,
    key: Option<LockingKey>,
    /// The shared channel of aggregated mode (`miner` is meaningless).
    aggregate: bool,
}

pub(crate) struct Router {
    pub upstreams: Vec<UpstreamConfig>,
    /// Aggregated mode: one channel for every miner, with this wallet key.
    pub aggregate: Option<LockingKey>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub quotes: mpsc::UnboundedSender<QuoteEvent>,
    pub stats: StatsPublisher,
}

/// A quote event for the recorder.
#[derive(Debug)]
pub(crate) enum QuoteEvent {
    Notification {
        message: EhashMessage,
        key: Option<LockingKey>,
    },
}

struct RouterState {
    miners: HashMap<u32, mpsc::Sender<ToMiner>>,
    /// request id -> (miner, key of the identity it asked for)
    opening: HashMap<u32, ChannelInfo>,
    channels: HashMap<u32, ChannelInfo>,
    /// Keys of channels that closed, for notifications that arrive after.
    closed_channels: HashMap<u32, Option<LockingKey>>,
    next_request_id: u32,
    aggregate: Option<Aggregate>,
}

const MAX_CLOSED_CHANNELS: usize = 100_000;

impl RouterState {
    fn send_to_miner(&mut self, miner: u32, msg: ToMiner) {
        if let Some(tx) = self.miners.get(&miner) {
            if tx.try_send(msg).is_err() {
                warn!(miner, "miner task does not keep up: dropping it");
                self.miners.remove(&miner);
            }
        }
    }

    fn broadcast(&mut self, make: impl Fn() -> ToMiner) {
        let ids: Vec<u32> = self.miners.keys().copied().collect();
        for id in ids {
            self.send_to_miner(id, make());
        }
    }

    fn forget_channel(&mut self, channel_id: u32) {
        if let Some(info) = self.channels.remove(&channel_id) {
            if self.closed_channels.len() >= MAX_CLOSED_CHANNELS {
                self.closed_channels.clear();
            }
            self.closed_channels.insert(channel_id, info.key);
        }
    }

    fn key_of(&self, channel_id: u32) -> Option<LockingKey> {
        self.channels
            .get(&channel_id)
            .and_then(|c| c.key)
            .or_else(|| self.closed_channels.get(&channel_id).copied().flatten())
    }
}

pub(crate) async fn router_loop(
    router: Router,
    mut commands: mpsc::UnboundedReceiver<ToRouter>,
    shutdown: CancellationToken,
) {
    let mut state = RouterState {
        miners: HashMap::new(),
        opening: HashMap::new(),
        channels: HashMap::new(),
        closed_channels: HashMap::new(),
        next_request_id: 1,
        aggregate: router.aggregate.map(Aggregate::new),
    };
    let mut index = 0usize;
    let mut backoff = Duration::from_millis(200);
    loop {
        let upstream = router.upstreams[index % router.upstreams.len()].clone();
        let result =
            upstream_session(&router, &upstream, &mut state, &mut commands, &shutdown).await;
        // Channels die with the connection.
        let channel_ids: Vec<u32> = state.channels.keys().copied().collect();
        for c in channel_ids {
            state.forget_channel(c);
        }
        state.opening.clear();
        if let Some(a) = state.aggregate.as_mut() {
            a.reset();
        }
        state.broadcast(|| ToMiner::Lost);
        if shutdown.is_cancelled() {
            return;
        }
        let (reason, was_up) = match result {
            Ok(()) => ("closed".to_string(), true),
            Err((e, up)) => (e, up),
        };
        warn!(address = %upstream.address, "pool connection down: {reason}");
        router.stats.link_status(link::POOL, false);
        let _ = router.events.send(TranslatorEvent::UpstreamLost(reason));
        if was_up {
            backoff = Duration::from_millis(200);
        } else {
            // failover: the next pool in the list
            index += 1;
        }
        // keep serving miner registrations while waiting
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut sleep => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => handle_offline_command(&mut state, cmd),
                    None => return,
                },
            }
        }
        if !was_up {
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn handle_offline_command(state: &mut RouterState, cmd: ToRouter) {
    match cmd {
        ToRouter::Register(id, tx) => {
            state.miners.insert(id, tx);
        }
        ToRouter::Unregister(id) => {
            state.miners.remove(&id);
        }
        ToRouter::Send(id, _) => {
            // No pool: the message is dropped; the miner answers what it was
            // waiting for and re-opens its channel on Ready.
            state.send_to_miner(id, ToMiner::Lost);
        }
    }
}

/// One connection to one pool. Err((reason, was_up)).
async fn upstream_session(
    router: &Router,
    upstream: &UpstreamConfig,
    state: &mut RouterState,
    commands: &mut mpsc::UnboundedReceiver<ToRouter>,
    shutdown: &CancellationToken,
) -> Result<(), (String, bool)> {
    let down = |e: String| (e, false);
    let mut conn = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = sv2::connect(&upstream.address, upstream.authority_public_key, "pool", 1024) => {
            r.map_err(|e| down(e.explain("the pool's authority_public_key")))?
        }
    };
    let result = async {
        let setup = sv2::setup_connection(
            Protocol::MiningProtocol,
            sv2::REQUIRES_VERSION_ROLLING,
            conn.peer,
            concat!("translator ", env!("CARGO_PKG_VERSION")),
            "translator",
        );
        conn.setup(setup).await.map_err(down)?;
        let ehash = conn.negotiate_ehash().await.map_err(|e| down(e.to_string()))?;
        if ehash {
            info!(address = %upstream.address, "connected to the pool, ehash extension granted");
        } else {
            warn!(address = %upstream.address, "connected to the pool WITHOUT the ehash extension: shares earn no ehash");
        }
        let _ = router.events.send(TranslatorEvent::UpstreamConnected {
            address: upstream.address.clone(),
            ehash,
        });
        router.stats.link_status(link::POOL, true);
        state.broadcast(|| ToMiner::Ready);
        let up = |e: String| (e, true);
        let (writer, in_rx) = (&mut conn.writer, &mut conn.reader);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    match cmd {
                        ToRouter::Register(id, tx) => {
                            state.miners.insert(id, tx.clone());
                            let _ = tx.try_send(ToMiner::Ready);
                        }
                        ToRouter::Unregister(id) => {
                            state.miners.remove(&id);
                            state.opening.retain(|_, c| c.aggregate || c.miner != id);
                            if let Some(a) = state.aggregate.as_mut() {
                                let outs = a.on_leave(id);
                                for m in deliver(state, outs) {
                                    send_upstream(state, writer, m).await.map_err(|e| up(e.to_string()))?;
                                }
                            }
                            let closing: Vec<u32> = state.channels.iter()
                                .filter(|(_, c)| !c.aggregate && c.miner == id)
                                .map(|(ch, _)| *ch)
                                .collect();
                            for channel_id in closing {
                                state.forget_channel(channel_id);
                                send(writer, AnyMessageOwned::Mining(MiningOwned::CloseChannel(CloseChannelOwned {
                                    channel_id,
                                    reason_code: str0255_truncated("miner-disconnected"),
                                }))).await.map_err(|e| up(e.to_string()))?;
                            }
                        }
                        ToRouter::Send(id, msg) => {
                            let upstream = match (state.aggregate.as_mut(), msg) {
                                (Some(a), MiningOwned::OpenExtendedMiningChannel(o)) => {
                                    let outs = a.on_open(id, o);
                                    deliver(state, outs)
                                }
                                (Some(a), MiningOwned::SubmitSharesExtended(share)) => {
                                    let outs = a.on_submit(id, share);
                                    deliver(state, outs)
                                }
                                // one channel for all: its target is the pool's
                                (Some(_), MiningOwned::UpdateChannel(_)) => vec![],
                                (_, MiningOwned::OpenExtendedMiningChannel(mut open)) => {
                                    let request_id = state.next_request_id;
                                    state.next_request_id = state.next_request_id.wrapping_add(1).max(1);
                                    open.request_id = request_id;
                                    let identity = String::from_utf8_lossy(open.user_identity.as_bytes()).to_string();
                                    let key = parse_user_identity(&identity).ok().map(|m| m.locking_key);
                                    state.opening.insert(request_id, ChannelInfo { miner: id, key, aggregate: false });
                                    send(writer, AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannel(open))).await.map_err(|e| up(e.to_string()))?;
                                    vec![]
                                }
                                (_, msg) => vec![msg],
                            };
                            for m in upstream {
                                send_upstream(state, writer, m).await.map_err(|e| up(e.to_string()))?;
                            }
                        }
                    }
                }
                incoming = in_rx.recv() => {
                    let msg = match incoming {
                        Ok(m) => m,
                        Err(ReadError::ClosedByPeer) => return Err(up("closed by the pool".into())),
                        Err(e) => return Err(up(e.to_string())),
                    };
                    match msg {
                        Incoming::Ehash(m) => {
                            let channel_id = match &m {
                                EhashMessage::MintQuoteNotification(n) => n.channel_id,
                                EhashMessage::MintQuoteFailure(f) => f.channel_id,
                            };
                            let key = state.key_of(channel_id);
                            let _ = router.quotes.send(QuoteEvent::Notification { message: m, key });
                        }
                        Incoming::Sv2(AnyMessageOwned::Mining(m)) => route_mining(state, m),
                        Incoming::Sv2(other) => {
                            debug!("ignoring upstream {:?}", other.message_type());
                        }
                    }
                }
            }
        }
    }
    .await;
    drop(conn.reader);
    let _ = conn.writer.shutdown().await;
    result
}

/// Applies the aggregate's messages for miners; returns those for the pool.
fn deliver(state: &mut RouterState, outs: Vec<AggOut>) -> Vec<MiningOwned> {
    let mut upstream = Vec::new();
    for out in outs {
        match out {
            AggOut::ToMiner(miner, m) => state.send_to_miner(miner, ToMiner::Upstream(m)),
            AggOut::Upstream(m) => upstream.push(m),
        }
    }
    upstream
}

/// Sends a miner's (or the aggregate's) message to the pool, registering
/// aggregated channel opens and forgetting closed channels.
async fn send_upstream(
    state: &mut RouterState,
    writer: &mut NoiseTcpWriteHalf,
    mut m: MiningOwned,
) -> Result<(), SendError> {
    match &mut m {
        MiningOwned::OpenExtendedMiningChannel(open) => {
            // Only the aggregate gets here with an open (per-miner opens are sent directly).
            let request_id = state.next_request_id;
            state.next_request_id = state.next_request_id.wrapping_add(1).max(1);
            open.request_id = request_id;
            let identity = String::from_utf8_lossy(open.user_identity.as_bytes()).to_string();
            let key = parse_user_identity(&identity).ok().map(|m| m.locking_key);
            state.opening.insert(
                request_id,
                ChannelInfo {
                    miner: 0,
                    key,
                    aggregate: true,
                },
            );
        }
        MiningOwned::CloseChannel(c) => state.forget_channel(c.channel_id),
        _ => {}
    }
    send(writer, AnyMessageOwned::Mining(m)).await
}

fn route_mining(state: &mut RouterState, m: MiningOwned) {
    let (miner, m) = match m {
        MiningOwned::OpenExtendedMiningChannelSuccess(s) => {
            if let Some(info) = state
                .opening
                .get(&s.request_id)
                .copied()
                .filter(|i| i.aggregate)
            {
                state.opening.remove(&s.request_id);
                state.channels.insert(s.channel_id, info);
                if let Some(a) = state.aggregate.as_mut() {
                    let outs = a.on_open_success(s);
                    deliver(state, outs);
                }
                return;
            }
            let Some(info) = state.opening.remove(&s.request_id) else {
                debug!(
                    request_id = s.request_id,
                    "channel opened for a miner that left"
                );
                return;
            };
            state.channels.insert(s.channel_id, info);
            (info.miner, MiningOwned::OpenExtendedMiningChannelSuccess(s))
        }
        MiningOwned::OpenMiningChannelError(e) => {
            let Some(info) = state.opening.remove(&e.request_id) else {
                return;
            };
            if info.aggregate {
                if let Some(a) = state.aggregate.as_mut() {
                    let outs = a.on_open_error(e);
                    deliver(state, outs);
                }
                return;
            }
            (info.miner, MiningOwned::OpenMiningChannelError(e))
        }
        other => {
            let channel_id = match &other {
                MiningOwned::NewExtendedMiningJob(j) => j.channel_id,
                MiningOwned::SetNewPrevHash(p) => p.channel_id,
                MiningOwned::SetTarget(t) => t.channel_id,
                MiningOwned::SubmitSharesSuccess(s) => s.channel_id,
                MiningOwned::SubmitSharesError(e) => e.channel_id,
                MiningOwned::CloseChannel(c) => c.channel_id,
                MiningOwned::SetExtranoncePrefix(p) => p.channel_id,
                MiningOwned::UpdateChannelError(e) => e.channel_id,
                _ => {
                    debug!("ignoring an upstream mining message without a channel route");
                    return;
                }
            };
            let Some(info) = state.channels.get(&channel_id).copied() else {
                debug!(channel_id, "message for an unknown channel");
                return;
            };
            if matches!(other, MiningOwned::CloseChannel(_)) {
                state.forget_channel(channel_id);
            }
            if info.aggregate {
                if let Some(a) = state.aggregate.as_mut() {
                    let outs = a.on_upstream(other);
                    deliver(state, outs);
                }
                return;
            }
            (info.miner, other)
        }
    };
    state.send_to_miner(miner, ToMiner::Upstream(m));
}

// ------------------------------------------------------------------ quotes

/// Records every quote event, then wakes the minter.
pub(crate) async fn quote_recorder(
    mut rx: mpsc::UnboundedReceiver<QuoteEvent>,
    store: Arc<QuoteStore>,
    wallet_key: LockingKey,
    mint_now: Arc<Notify>,
    events: broadcast::Sender<TranslatorEvent>,
    stats: StatsPublisher,
) {
    while let Some(QuoteEvent::Notification { message, key }) = rx.recv().await {
        match message {
            EhashMessage::MintQuoteNotification(n) => {
                let quote_id = n.quote_id.as_utf8_or_hex();
                let own = key == Some(wallet_key);
                let record = QuoteRecord {
                    quote_id: quote_id.clone(),
                    share_hash: hex::encode(n.share_hash.to_array()),
                    amount: n.amount,
                    locking_key: key
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    keyset_id: n.keyset_id.as_utf8_or_hex(),
                    channel_id: n.channel_id,
                    sequence_number: n.sequence_number,
                    state: if own {
                        QuoteState::Pending
                    } else {
                        QuoteState::Foreign
                    },
                    created_at: now_secs(),
                    last_error: None,
                };
                // SQLite with synchronous=FULL waits for the disk: off the async workers.
                let inserted = {
                    let (store, record) = (store.clone(), record.clone());
                    tokio::task::spawn_blocking(move || store.insert(&record)).await
                };
                let inserted = match inserted {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(quote = quote_id, "quote recording task failed: {e}");
                        continue;
                    }
                };
                match inserted {
                    Ok(true) => {
                        info!(
                            quote = quote_id,
                            amount = n.amount,
                            channel_id = n.channel_id,
                            key = record.locking_key,
                            own,
                            "ehash quote recorded"
                        );
                        stats.publish(stats_sv2::EhashQuoteOwned {
                            quote_id: str0255_truncated(&quote_id),
                            amount: n.amount,
                            minted: false,
                            timestamp: now_ms(),
                        });
                        let _ = events.send(TranslatorEvent::QuoteRecorded {
                            quote_id,
                            amount: n.amount,
                            own,
                        });
                        if own {
                            mint_now.notify_one();
                        }
                    }
                    Ok(false) => debug!(quote = quote_id, "quote already recorded"),
                    Err(e) => warn!(quote = quote_id, "cannot record quote: {e}"),
                }
            }
            EhashMessage::MintQuoteFailure(f) => {
                let record = FailureRecord {
                    share_hash: hex::encode(f.share_hash.to_array()),
                    channel_id: f.channel_id,
                    sequence_number: f.sequence_number,
                    error_code: f.error_code.as_utf8_or_hex(),
                    error_message: f.error_message.as_utf8_or_hex(),
                    created_at: now_secs(),
                };
                warn!(
                    channel_id = f.channel_id,
                    sequence_number = f.sequence_number,
                    code = record.error_code,
                    message = record.error_message,
                    "the pool could not get a quote for a share"
                );
                let failure = {
                    let (store, record) = (store.clone(), record.clone());
                    tokio::task::spawn_blocking(move || store.insert_failure(&record)).await
                };
                if let Ok(Err(e)) = failure {
                    warn!("cannot record quote failure: {e}");
                }
                let _ = events.send(TranslatorEvent::QuoteFailed {
                    share_hash: record.share_hash,
                    error_code: record.error_code,
                });
            }
        }
    }
}

/// What the minting loop works with.
pub(crate) struct Minter {
    pub wallet: Arc<EhashWallet>,
    pub store: Arc<QuoteStore>,
    /// Most quotes per NUT-29 batch.
    pub batch: usize,
    pub retry: Duration,
    pub mint_now: Arc<Notify>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub stats: StatsPublisher,
}

/// Mints pending quotes whenever told to, and retries on a timer.
pub(crate) async fn minter(minter: Minter, shutdown: CancellationToken) {
    let Minter {
        wallet,
        store,
        batch,
        retry,
        mint_now,
        events,
        stats,
    } = minter;
    publish_balance(&wallet, &stats).await;
    let mut recovered = false;
    loop {
        if !recovered {
            match wallet.recover().await {
                Ok(()) => recovered = true,
                Err(e) => {
                    if e.mint_unreachable() {
                        stats.link_status(link::MINT, false);
                    }
                    warn!("wallet recovery failed (mint unreachable?), retrying: {e}")
                }
            }
        }
        if recovered {
            loop {
                match wallet.mint_pending(&store, batch).await {
                    Ok(round) => {
                        if let Some(up) = round.mint_reachable {
                            stats.link_status(link::MINT, up);
                        }
                        let progressed =
                            !round.minted.is_empty() || !round.already_issued.is_empty();
                        if progressed {
                            for (quote_id, amount) in
                                round.minted.iter().chain(&round.already_issued)
                            {
                                stats.publish(stats_sv2::EhashQuoteOwned {
                                    quote_id: str0255_truncated(quote_id),
                                    amount: *amount,
                                    minted: true,
                                    timestamp: now_ms(),
                                });
                            }
                            publish_balance(&wallet, &stats).await;
                            let _ = events.send(TranslatorEvent::Minted {
                                quotes: round.minted.len() + round.already_issued.len(),
                                amount: round.amount,
                            });
                        }
                        if !progressed || round.left > 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!("minting failed: {e}");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = mint_now.notified() => {}
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// The wallet's balance to the stats service (it reads the local database only).
async fn publish_balance(wallet: &EhashWallet, stats: &StatsPublisher) {
    match wallet.balance().await {
        Ok(balance) => stats.publish(stats_sv2::WalletBalance {
            balance,
            timestamp: now_ms(),
        }),
        Err(e) => warn!("cannot read the wallet balance: {e}"),
    }
}

pub(crate) fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

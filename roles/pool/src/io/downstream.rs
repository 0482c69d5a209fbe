//! The downstream listener and one task per connection: Noise handshake,
//! messages to the core, queued messages back to the peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ehash_ext_sv2::{EhashMessage, MessageSet};
use roles_common::limits::ConnectionLimits;
use roles_common::log_limit::LogLimit;
use roles_common::noise::{self, NoiseWriter};
use roles_common::sv2::{
    message_name, write_outbound, Incoming, ReadError, Sv2Reader, WRITE_BATCH,
};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Outbound, PoolEvent, Shared};
use crate::mining::ConnId;

/// A downstream that has not completed SetupConnection by then is dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Queue depth per downstream; a peer that lets it fill up is disconnected.
const SEND_QUEUE: usize = 4096;

/// How downstreams are let in and kept.
#[derive(Clone)]
pub(crate) struct Listening {
    pub public: Secp256k1PublicKey,
    pub secret: Secp256k1SecretKey,
    pub cert_validity_sec: u64,
    pub limits: ConnectionLimits,
    /// A connection with no channel open that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A peer that takes this long to take one message is closed.
    pub write_timeout: Duration,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    listening: Arc<Listening>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    let limits = listening.limits.clone();
    roles_common::accept_loop(
        "pool",
        listener,
        limits,
        shutdown,
        move |id, stream, peer| {
            let _ = stream.set_nodelay(true);
            let (shared, listening, shutdown) =
                (shared.clone(), listening.clone(), connections.clone());
            async move {
                let (conn, result) =
                    serve_downstream(id, stream, peer, &shared, &listening, shutdown).await;
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
        },
    )
    .await;
}

async fn serve_downstream(
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    listening: &Listening,
    shutdown: CancellationToken,
) -> (Option<ConnId>, Result<(), String>) {
    let (reader, mut writer) = match noise::accept(
        stream,
        listening.public,
        listening.secret,
        listening.cert_validity_sec,
    )
    .await
    {
        Ok(halves) => halves,
        Err(e) => return (None, Err(format!("noise handshake failed: {e}"))),
    };
    info!(conn = id, %peer, "downstream connected");
    let mut reader = Sv2Reader::spawn(reader, "downstream", 256);
    let (out_tx, mut out_rx) = mpsc::channel(SEND_QUEUE);
    shared
        .writers
        .lock()
        .expect("writers lock")
        .insert(id, out_tx);
    shared.core().on_connect(id, peer.ip());
    let _ = shared.events.send(PoolEvent::Connected(id));
    let mut link = Link {
        id,
        reader: &mut reader,
        writer: &mut writer,
        outbound: &mut out_rx,
        idle_timeout: listening.idle_timeout,
        write_timeout: listening.write_timeout,
        warnings: LogLimit::default(),
    };
    let result = link.relay(shared, &shutdown).await;
    shared.writers.lock().expect("writers lock").remove(&id);
    let result = forget(id, shared, result, &shutdown);
    drop(reader);
    let _ = writer.shutdown().await;
    (Some(id), result)
}

/// One downstream connection's two directions.
struct Link<'a> {
    id: ConnId,
    reader: &'a mut Sv2Reader,
    writer: &'a mut NoiseWriter,
    outbound: &'a mut mpsc::Receiver<Outbound>,
    idle_timeout: Duration,
    write_timeout: Duration,
    /// Warnings about what the peer sends, rate-limited.
    warnings: LogLimit,
}

impl Link<'_> {
    /// Hands incoming messages to the core and writes what is queued for the
    /// peer, until either side ends; the reason, if not a clean close.
    async fn relay(&mut self, shared: &Shared, shutdown: &CancellationToken) -> Result<(), String> {
        let id = self.id;
        let setup_deadline = tokio::time::sleep(SETUP_TIMEOUT);
        tokio::pin!(setup_deadline);
        let mut setup_checked = false;
        let mut last_heard = tokio::time::Instant::now();
        // Since when no channel was seen open: a connection whose last
        // channel the pool closed gets the whole timeout to open another.
        let mut channelless_since = Some(last_heard);
        let mut idle_check = tokio::time::interval(self.idle_timeout / 4);
        let mut out = Vec::new();
        loop {
            // Biased: what is queued for the peer goes out before more is
            // read from it, so a peer that sends fast cannot grow its own
            // send queue, and one that stops reading stops being read.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = &mut setup_deadline, if !setup_checked => {
                    if !shared.core().connection_setup_done(id) {
                        return Err(format!("no SetupConnection within {SETUP_TIMEOUT:?}"));
                    }
                    setup_checked = true;
                }
                _ = idle_check.tick() => {
                    let now = tokio::time::Instant::now();
                    if shared.core().connection_channels(id) > 0 {
                        channelless_since = None;
                        continue;
                    }
                    let since = *channelless_since.get_or_insert(now);
                    if now - since >= self.idle_timeout && now - last_heard >= self.idle_timeout {
                        return Err(format!(
                            "idle: no channel open and nothing received for {:?}",
                            self.idle_timeout
                        ));
                    }
                }
                _ = self.outbound.recv_many(&mut out, WRITE_BATCH) => {
                    tokio::time::timeout(self.write_timeout, write_outbound(self.writer, &mut out, id))
                        .await
                        .map_err(|_| format!("peer took no message for {:?}", self.write_timeout))??
                }
                incoming = self.reader.recv() => {
                    last_heard = tokio::time::Instant::now();
                    let Some(incoming) = incoming_or_closed(incoming)? else {
                        return Ok(());
                    };
                    self.on_incoming(incoming, shared);
                }
            }
        }
    }

    /// One message from the peer: to the core, or an acknowledgement to the ehash flow.
    fn on_incoming(&mut self, incoming: Incoming, shared: &Shared) {
        let id = self.id;
        match incoming {
            Incoming::Sv2(msg) => {
                debug!(conn = id, "received {}", message_name(&msg));
                shared.apply(|core| core.on_message(id, msg));
            }
            Incoming::Ehash(EhashMessage::MintQuoteAck(ack))
                if ack.share_hashes.len() > ehash_ext_sv2::MAX_ACKED_PER_MESSAGE =>
            {
                // A translator splits its acknowledgements; one this large
                // only loads the ehash flow (its notices are sent again).
                self.warn_peer(&format!(
                    "ignoring an ehash acknowledgement of {} shares (at most {})",
                    ack.share_hashes.len(),
                    ehash_ext_sv2::MAX_ACKED_PER_MESSAGE
                ));
            }
            Incoming::Ehash(EhashMessage::MintQuoteAck(ack)) => {
                let hashes = ack.share_hashes.iter().map(|h| h.to_array()).collect();
                if !shared.ehash_acked(id, hashes) {
                    self.warn_peer("ignoring an ehash acknowledgement: extension not negotiated");
                }
            }
            Incoming::Ehash(msg) => {
                self.warn_peer(&format!("ignoring a downstream {}", msg.name()))
            }
        }
    }

    fn warn_peer(&mut self, what: &str) {
        if let Some(left_out) = self.warnings.check(std::time::Instant::now()) {
            warn!(conn = self.id, left_out, "{what}");
        }
    }
}

/// What was read: a message, `None` when the peer closed cleanly, or why
/// the connection must close.
fn incoming_or_closed(read: Result<Incoming, ReadError>) -> Result<Option<Incoming>, String> {
    match read {
        Ok(incoming) => Ok(Some(incoming)),
        Err(ReadError::ClosedByPeer) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Drops the connection from the core; the reason it closed.
fn forget(
    id: ConnId,
    shared: &Shared,
    result: Result<(), String>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (result, closed) = {
        let mut core = shared.core();
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
    shared.connection_closed(id);
    result
}

//! The job declarator's listener and one task per job declaration client:
//! Noise handshake (the pool's authority key), then each message to the
//! core's [`JobDeclarator`](crate::jds::JobDeclarator) and its answer back.
//! A client only ever gets answers, so no queue sits between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ehash_ext_sv2::MessageSet;
use roles_common::noise::{self, NoiseWriter};
use roles_common::stats_publisher::now_ms;
use roles_common::sv2::{message_name, send, Incoming, ReadError, Sv2Reader};
use stratum_core::parsers_sv2::AnyMessageOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Listening, Shared};
use crate::jds::{JdConnId, JdLate, JdReply};

/// The most bytes one job declaration frame takes on the wire: a block's
/// transactions (ProvideMissingTransactions.Success, at most 4 MB) with
/// room to spare, above the [`noise::MAX_FRAME_LEN`] of other listeners.
const MAX_FRAME_LEN: usize = 5 * 1024 * 1024;
/// Decoded messages read ahead of the core: a client waits for answers.
const READ_AHEAD: usize = 4;

pub(crate) async fn jds_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    listening: Arc<Listening>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    let limits = listening.limits.clone();
    roles_common::accept_loop(
        "job declarator",
        listener,
        limits,
        shutdown,
        move |id, stream, peer| {
            let (shared, listening, shutdown) =
                (shared.clone(), listening.clone(), connections.clone());
            async move {
                match serve(id, stream, peer, &shared, &listening, shutdown).await {
                    Ok(()) => info!(jd_conn = id, %peer, "job declaration client disconnected"),
                    Err(reason) => {
                        warn!(jd_conn = id, %peer, "closing job declaration client: {reason}")
                    }
                }
            }
        },
    )
    .await;
}

async fn serve(
    id: JdConnId,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    listening: &Listening,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (mut reader, mut writer) = noise::accept(
        stream,
        listening.public,
        listening.secret,
        listening.cert_validity_sec,
    )
    .await
    .map_err(|e| format!("noise handshake failed: {e}"))?;
    reader.limit_frames(MAX_FRAME_LEN);
    info!(jd_conn = id, %peer, "job declaration client connected");
    let mut reader = Sv2Reader::spawn(reader, "job declaration client", READ_AHEAD);
    let (late_tx, mut late) = mpsc::unbounded_channel();
    shared
        .jd_writers
        .lock()
        .expect("jd writers lock")
        .insert(id, late_tx);
    shared.with_jds(|jds| jds.on_connect(id));
    let link = Link {
        id,
        reader: &mut reader,
        writer: &mut writer,
        late: &mut late,
    };
    let result = link.relay(shared, listening, &shutdown).await;
    shared.with_jds(|jds| jds.on_disconnect(id));
    shared
        .jd_writers
        .lock()
        .expect("jd writers lock")
        .remove(&id);
    drop(reader);
    let _ = writer.shutdown().await;
    result
}

/// How often a link looks for its declarations parked too long (see
/// `JobDeclarator::expire_parked`).
const PARKED_CHECK: Duration = Duration::from_secs(1);

/// One client's connection: its messages in, their answers (and the late
/// answers the core queues) out.
struct Link<'a> {
    id: JdConnId,
    reader: &'a mut Sv2Reader,
    writer: &'a mut NoiseWriter,
    late: &'a mut mpsc::UnboundedReceiver<JdLate>,
}

impl Link<'_> {
    async fn relay(
        mut self,
        shared: &Shared,
        listening: &Listening,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let id = self.id;
        // A client declares only when its template changes, which may not
        // happen for a whole block: once set up, a live link may be quiet
        // (a dead one is found by TCP keepalive).
        let mut set_up = false;
        let mut parked_check = tokio::time::interval(PARKED_CHECK);
        parked_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let read = async {
                match set_up {
                    true => Ok(self.reader.recv().await),
                    false => tokio::time::timeout(listening.idle_timeout, self.reader.recv()).await,
                }
            };
            let incoming = tokio::select! {
                // Late answers first: a parked declaration's answer goes out
                // before that of one the client sent after the tip moved.
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                late = self.late.recv() => {
                    let reply = match late {
                        None => return Ok(()),
                        Some(JdLate::Message(m)) => JdReply {
                            messages: vec![m],
                            ..JdReply::default()
                        },
                        Some(JdLate::Accepted(accepted)) => JdReply {
                            accepted: Some(accepted),
                            ..JdReply::default()
                        },
                    };
                    self.answer(reply, shared, listening).await?;
                    continue;
                }
                _ = parked_check.tick() => {
                    let stale = shared.with_jds(|jds| jds.expire_parked(id, now_ms()));
                    for m in stale {
                        send_within(self.writer, m, listening).await?;
                    }
                    continue;
                }
                read = read => read
                    .map_err(|_| format!("idle: nothing received for {:?}", listening.idle_timeout))?,
            };
            let msg = match incoming {
                Ok(Incoming::Sv2(msg)) => msg,
                Ok(Incoming::Ehash(m)) => {
                    return Err(format!("{} on a job declaration link", m.name()))
                }
                Err(ReadError::ClosedByPeer) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            debug!(jd_conn = id, "received {}", message_name(&msg));
            // Hashing done before the declarator is locked.
            let msg = crate::jds::prepare(msg);
            let reply = shared.with_jds(|jds| jds.on_prepared(id, msg, now_ms()));
            self.answer(reply, shared, listening).await?;
            // SetupConnection comes first, or the link is closed above.
            set_up = true;
        }
    }

    /// Sends `reply`; a job it accepted is declared once its merkle path is
    /// built, off the runtime and with the declarator unlocked, and its
    /// answer sent after.
    async fn answer(
        &mut self,
        reply: JdReply,
        shared: &Shared,
        listening: &Listening,
    ) -> Result<(), String> {
        let JdReply {
            messages,
            close,
            accepted,
        } = reply;
        for m in messages {
            send_within(self.writer, m, listening).await?;
        }
        if let Some(reason) = close {
            return Err(reason);
        }
        let Some(accepted) = accepted else {
            return Ok(());
        };
        let (accepted, merkle_path) = tokio::task::spawn_blocking(move || {
            let merkle_path = accepted.merkle_path();
            (accepted, merkle_path)
        })
        .await
        .map_err(|e| format!("building a merkle path: {e}"))?;
        let declared = shared.with_jds(|jds| jds.finish(accepted, merkle_path, now_ms()));
        for m in declared.messages {
            send_within(self.writer, m, listening).await?;
        }
        Ok(())
    }
}

async fn send_within(
    writer: &mut NoiseWriter,
    m: AnyMessageOwned,
    listening: &Listening,
) -> Result<(), String> {
    tokio::time::timeout(listening.write_timeout, send(writer, m))
        .await
        .map_err(|_| format!("peer took no message for {:?}", listening.write_timeout))?
        .map_err(|e| e.to_string())
}

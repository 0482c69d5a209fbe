//! The job declarator's listener and one task per job declaration client:
//! Noise handshake (the pool's authority key), then each message to the
//! core's [`JobDeclarator`](crate::jds::JobDeclarator) and its answer back.
//! A client only ever gets answers, so no queue sits between them.

use std::net::SocketAddr;
use std::sync::Arc;

use ehash_ext_sv2::MessageSet;
use roles_common::stats_publisher::now_ms;
use roles_common::sv2::{message_name, send, Incoming, ReadError, Sv2Reader};
use stratum_apps::network_helpers::accept_noise_connection;
use stratum_apps::network_helpers::noise_stream::NoiseTcpWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Listening, Shared};
use crate::jds::{JdConnId, JdReply};

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
    let noise = accept_noise_connection(
        stream,
        listening.public,
        listening.secret,
        listening.cert_validity_sec,
    )
    .await
    .map_err(|e| format!("noise handshake failed: {e}"))?;
    info!(jd_conn = id, %peer, "job declaration client connected");
    let (reader, mut writer) = noise.into_split();
    let mut reader = Sv2Reader::spawn(reader, "job declaration client", 64);
    with_jds(shared, |jds| jds.on_connect(id));
    let result = relay(id, &mut reader, &mut writer, shared, listening, &shutdown).await;
    with_jds(shared, |jds| jds.on_disconnect(id));
    drop(reader);
    let _ = writer.shutdown().await;
    result
}

fn with_jds<T: Default>(shared: &Shared, f: impl FnOnce(&mut crate::jds::JobDeclarator) -> T) -> T {
    shared.core().jds().map(f).unwrap_or_default()
}

async fn relay(
    id: JdConnId,
    reader: &mut Sv2Reader,
    writer: &mut NoiseTcpWriteHalf,
    shared: &Shared,
    listening: &Listening,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(listening.idle_timeout, reader.recv()) => read
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
        let JdReply { messages, close } = with_jds(shared, |jds| jds.on_message(id, msg, now_ms()));
        for m in messages {
            tokio::time::timeout(listening.write_timeout, send(writer, m))
                .await
                .map_err(|_| format!("peer took no message for {:?}", listening.write_timeout))?
                .map_err(|e| e.to_string())?;
        }
        if let Some(reason) = close {
            return Err(reason);
        }
    }
}

//! The SV1 side: the listener and one task per miner, which reads lines,
//! feeds its [`MinerSession`] and applies the session's actions (lines to
//! the miner, messages to the pool through the router task, stats).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ehash::wire::str0255_truncated;
use roles_common::limits::ConnectionLimits;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use stats_sv2::StatsMessage;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use stratum_core::parsers_sv2::MiningOwned;

use crate::miner::{Action, MinerSession, MinerStat, SessionConfig};
use crate::upstream::{ToMiner, ToRouter};
use crate::TranslatorEvent;

/// Depth of a miner's inbox; a miner task that cannot keep up is dropped.
const MINER_QUEUE: usize = 1024;
/// A miner must subscribe within this time.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct MinerContext {
    pub session: SessionConfig,
    pub max_line_bytes: usize,
    pub max_miners: usize,
    /// A miner that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A miner that takes this long to take one line is closed.
    pub write_timeout: Duration,
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
        MinerStat::Share {
            accepted,
            work,
            backlogged,
        } => stats_sv2::MinerShare {
            miner_id,
            accepted,
            backlogged,
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
    let limits = ConnectionLimits::new(ctx.max_miners, ctx.max_miners);
    roles_common::accept_loop(
        "translator",
        listener,
        limits,
        shutdown,
        move |_, stream, peer| {
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
        },
    )
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
    // A miner's lines are a few hundred bytes (longer ones take more reads
    // into the line buffer, which grows); every idle miner holds both.
    let mut reader = BufReader::with_capacity(512, read);
    let (tx, mut rx) = mpsc::channel(MINER_QUEUE);
    ctx.router
        .send(ToRouter::Register(id, tx))
        .map_err(|_| "translator is stopping".to_string())?;
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subscribe_deadline = tokio::time::sleep(SUBSCRIBE_TIMEOUT);
    tokio::pin!(subscribe_deadline);
    let mut subscribed_checked = false;
    let mut last_heard = tokio::time::Instant::now();
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
                    last_heard = tokio::time::Instant::now();
                    let line = String::from_utf8_lossy(&buf).to_string();
                    buf.clear();
                    debug!(miner = id, line, "sv1 in");
                    session.on_line(&line, roles_common::unix_secs())
                }
            },
            msg = rx.recv() => match msg {
                Some(ToMiner::Upstream(m)) => session.on_upstream(*m, roles_common::unix_secs()),
                Some(ToMiner::Ready) => session.on_upstream_ready(),
                Some(ToMiner::Lost) => session.on_upstream_lost(),
                None => return Err("dropped by the router (miner too slow, or translator stopping)".into()),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() >= ctx.idle_timeout {
                    return Err(format!("idle: nothing from the miner for {:?}", ctx.idle_timeout));
                }
                session.on_tick(roles_common::unix_secs())
            }
        };
        for out in outs {
            match out {
                Action::Sv1(line) => {
                    debug!(miner = id, line = line.trim_end(), "sv1 out");
                    tokio::time::timeout(ctx.write_timeout, write.write_all(line.as_bytes()))
                        .await
                        .map_err(|_| format!("miner took no line for {:?}", ctx.write_timeout))?
                        .map_err(|e| format!("write failed: {e}"))?;
                }
                Action::Upstream(m) => {
                    if let MiningOwned::UpdateChannel(u) = &m {
                        let _ = ctx.events.send(TranslatorEvent::Retargeted {
                            miner: id,
                            hashrate: u.nominal_hash_rate as f64,
                        });
                    }
                    if ctx.router.send(ToRouter::Send(id, m)).is_err() {
                        return Err("translator is stopping".into());
                    }
                }
                Action::Close(reason) => return Err(reason),
                Action::Stats(stat) => ctx.stats.publish(miner_stat_message(id, stat)),
            }
        }
    }
}

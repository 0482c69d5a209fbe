//! The SV1 side: the listener and one task per miner, which reads lines,
//! feeds its [`MinerSession`] and applies the session's actions (lines to
//! the miner, messages to the pool through the router task, stats).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::wire::str0255_truncated;
use ehash::LockingKey;
use futures::StreamExt;
use roles_common::limits::ConnectionLimits;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use stats_sv2::StatsMessage;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use stratum_core::parsers_sv2::MiningOwned;

use crate::config::TranslatorConfig;
use crate::miner::{Action, MinerSession, MinerStat, SessionConfig};
use crate::upstream::{miner_inbox, ToMiner, ToRouter};
use crate::TranslatorEvent;

/// Most messages from the router handled before the miner's lines are written.
const INBOX_BATCH: usize = 64;

/// A miner must subscribe within this time.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct MinerContext {
    pub session: Arc<SessionConfig>,
    pub max_line_bytes: usize,
    pub max_miners: usize,
    pub max_miners_per_ip: usize,
    /// A miner that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A miner that takes this long to take one line is closed.
    pub write_timeout: Duration,
    pub router: mpsc::UnboundedSender<ToRouter>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub ids: Mutex<MinerIds>,
    pub stats: StatsPublisher,
}

impl MinerContext {
    pub fn new(
        config: &TranslatorConfig,
        wallet_key: LockingKey,
        router: mpsc::UnboundedSender<ToRouter>,
        events: broadcast::Sender<TranslatorEvent>,
        stats: StatsPublisher,
    ) -> Self {
        Self {
            session: Arc::new(config.session_config(wallet_key)),
            max_line_bytes: config.max_line_bytes,
            max_miners: config.max_miners,
            max_miners_per_ip: config.max_miners_per_ip,
            idle_timeout: Duration::from_secs(config.miner_idle_timeout_secs),
            write_timeout: Duration::from_secs(config.miner_write_timeout_secs),
            router,
            events,
            ids: Mutex::default(),
            stats,
        }
    }
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

/// The ids of the connected miners. A miner's id is also its extranonce1
/// and its name at the router: when the counter wraps (after 4 billion
/// connections) an id still in use is never given again.
#[derive(Default)]
pub(crate) struct MinerIds {
    last: u32,
    live: HashSet<u32>,
}

impl MinerIds {
    /// An id no connected miner has (never 0).
    fn take(&mut self) -> u32 {
        loop {
            self.last = self.last.wrapping_add(1);
            if self.last != 0 && self.live.insert(self.last) {
                return self.last;
            }
        }
    }

    fn give_back(&mut self, id: u32) {
        self.live.remove(&id);
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<MinerContext>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    let limits = ConnectionLimits::new(ctx.max_miners, ctx.max_miners_per_ip);
    roles_common::accept_loop(
        "translator",
        listener,
        limits,
        shutdown,
        move |_, stream, peer| {
            let _ = stream.set_nodelay(true);
            let id = roles_common::lock(&ctx.ids).take();
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
                roles_common::lock(&ctx.ids).give_back(id);
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

/// Bytes taken from a miner's socket per read.
const READ_CHUNK: usize = 1024;

/// The next line from the miner, without its newline; `None` at end of stream.
///
/// Cancel-safe: what was read stays in `pending`. Reads go through a buffer
/// on the stack and `pending` is freed once it holds no partial line, so an
/// idle miner holds no read buffer.
async fn next_line(
    read: &OwnedReadHalf,
    pending: &mut Vec<u8>,
    max: usize,
) -> Result<Option<String>, String> {
    loop {
        if let Some(end) = pending.iter().position(|b| *b == b'\n') {
            if end > max {
                return Err(format!("line longer than {max} bytes"));
            }
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..=end);
            if pending.is_empty() {
                *pending = Vec::new();
            }
            return Ok(Some(line));
        }
        if pending.len() > max {
            return Err(format!("line longer than {max} bytes"));
        }
        read.readable()
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if !read_available(read, pending).map_err(|e| format!("read failed: {e}"))? {
            return Ok(None);
        }
    }
}

/// Appends what the socket holds to `pending`; `false` at end of stream.
fn read_available(read: &OwnedReadHalf, pending: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    match read.try_read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
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
    let (tx, mut rx) = miner_inbox();
    ctx.router
        .send(ToRouter::Register(id, tx))
        .map_err(|_| "translator is stopping".to_string())?;
    let mut pending = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let connected = tokio::time::Instant::now();
    let mut last_heard = connected;
    loop {
        let outs = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            line = next_line(&read, &mut pending, ctx.max_line_bytes) => match line? {
                None => return Ok(()),
                Some(line) => {
                    last_heard = tokio::time::Instant::now();
                    debug!(miner = id, line, "sv1 in");
                    session.on_line(&line, roles_common::unix_secs())
                }
            },
            msg = rx.next() => {
                let mut outs = on_inbox(session, msg)?;
                // Answers that arrived together leave in one write.
                for _ in 1..INBOX_BATCH {
                    let Ok(more) = rx.try_recv() else { break };
                    outs.extend(on_inbox(session, Some(more))?);
                }
                outs
            }
            _ = tick.tick() => {
                // Checked on the tick rather than with timers of their own:
                // every idle miner would hold them.
                if session.identity().is_none() && connected.elapsed() >= SUBSCRIBE_TIMEOUT {
                    return Err(format!("not authorized within {SUBSCRIBE_TIMEOUT:?}"));
                }
                if last_heard.elapsed() >= ctx.idle_timeout {
                    return Err(format!("idle: nothing from the miner for {:?}", ctx.idle_timeout));
                }
                session.on_tick(roles_common::unix_secs())
            }
        };
        let mut lines = String::new();
        for out in outs {
            match out {
                Action::Sv1(line) => {
                    debug!(miner = id, line = line.trim_end(), "sv1 out");
                    lines.push_str(&line);
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
                Action::Close(reason) => {
                    write_lines(&mut write, &lines, ctx.write_timeout).await?;
                    return Err(reason);
                }
                Action::Stats(stat) => ctx.stats.publish(miner_stat_message(id, stat)),
            }
        }
        write_lines(&mut write, &lines, ctx.write_timeout).await?;
    }
}

/// What the router sent: the session's actions, or why the miner is dropped.
fn on_inbox(session: &mut MinerSession, msg: Option<ToMiner>) -> Result<Vec<Action>, String> {
    Ok(match msg {
        Some(ToMiner::Upstream(m)) => session.on_upstream(*m, roles_common::unix_secs()),
        Some(ToMiner::Ready) => session.on_upstream_ready(),
        Some(ToMiner::Lost) => session.on_upstream_lost(),
        None => {
            return Err("dropped by the router (miner too slow, or translator stopping)".into())
        }
    })
}

/// Writes `lines` (none: nothing) within `timeout`.
async fn write_lines(
    write: &mut OwnedWriteHalf,
    lines: &str,
    timeout: Duration,
) -> Result<(), String> {
    if lines.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(timeout, write.write_all(lines.as_bytes()))
        .await
        .map_err(|_| format!("miner took no line for {timeout:?}"))?
        .map_err(|e| format!("write failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miner_id_in_use_is_never_given_again_when_the_counter_wraps() {
        let mut ids = MinerIds::default();
        let first = ids.take();
        assert_eq!(first, 1);
        ids.last = u32::MAX - 1;
        assert_eq!(ids.take(), u32::MAX);
        // 0 is no id, and 1 is still connected.
        assert_eq!(ids.take(), 2);
        ids.give_back(first);
        ids.last = u32::MAX;
        assert_eq!(ids.take(), 1, "free again once given back");
    }

    /// Both ends of a loopback connection: the miner's writer, our reader.
    async fn connection() -> (TcpStream, OwnedReadHalf) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let miner = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (miner, ours.into_split().0)
    }

    #[tokio::test]
    async fn lines_split_or_joined_by_the_network_come_out_whole() {
        let (mut miner, read) = connection().await;
        let mut pending = Vec::new();
        miner.write_all(b"{\"id\":1}\n{\"id\"").await.unwrap();
        let first = next_line(&read, &mut pending, 100).await.unwrap();
        assert_eq!(first.as_deref(), Some("{\"id\":1}"));
        miner.write_all(b":2}\n\n{\"id\":3}\n").await.unwrap();
        for expected in ["{\"id\":2}", "", "{\"id\":3}"] {
            let line = next_line(&read, &mut pending, 100).await.unwrap();
            assert_eq!(line.as_deref(), Some(expected));
        }
        // An idle miner holds no read buffer.
        assert_eq!(pending.capacity(), 0);
        drop(miner);
        assert_eq!(next_line(&read, &mut pending, 100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_line_past_the_limit_ends_the_connection_with_or_without_its_newline() {
        let (mut miner, read) = connection().await;
        let mut pending = Vec::new();
        miner.write_all(&[b'x'; 101]).await.unwrap();
        miner.write_all(b"\n").await.unwrap();
        let err = next_line(&read, &mut pending, 100).await.unwrap_err();
        assert_eq!(err, "line longer than 100 bytes");

        let (mut miner, read) = connection().await;
        let mut pending = Vec::new();
        miner.write_all(&[b'x'; 5 * READ_CHUNK]).await.unwrap();
        let err = next_line(&read, &mut pending, 100).await.unwrap_err();
        assert_eq!(err, "line longer than 100 bytes");
        assert!(pending.len() <= 100 + READ_CHUNK, "read on past the limit");
    }

    #[tokio::test]
    async fn a_partial_line_survives_a_cancelled_read() {
        let (mut miner, read) = connection().await;
        let mut pending = Vec::new();
        miner.write_all(b"{\"id\":").await.unwrap();
        let waited = tokio::time::timeout(
            Duration::from_millis(100),
            next_line(&read, &mut pending, 100),
        )
        .await;
        assert!(waited.is_err(), "no whole line yet");
        miner.write_all(b"4}\n").await.unwrap();
        let line = next_line(&read, &mut pending, 100).await.unwrap();
        assert_eq!(line.as_deref(), Some("{\"id\":4}"));
    }
}

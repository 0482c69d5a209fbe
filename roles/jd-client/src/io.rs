//! Sockets and tasks. One task owns the [`JdcCore`] and the three upstream
//! links (template provider, job declarator, pool) for one session; what
//! goes to the pool, every share, is written by a task of its own. Each
//! downstream connection has its own task, talking to it through queues.
//!
//! A session runs in one [`Mode`] until a link fails: the template
//! provider or the pool (the same mode again, after a backoff), or the job
//! declarator (refused or unreachable: the pool's own jobs, and another
//! try at the declarator every `jds_retry_secs`). Between sessions no
//! downstream is served; each session ends by closing them, and
//! translators reconnect at once (on their backoff's shortest delay).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roles_common::backoff::Backoff;
use roles_common::limits::ConnectionLimits;
use roles_common::noise;
use roles_common::solutions::SentSolutions;
use roles_common::sv2::{
    self, write_outbound, Incoming, Outbound, Outgoing, ReadError, Sv2Connection, Sv2Reader,
    Sv2Writer, WRITE_BATCH,
};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::{Amount, ScriptBuf, TxOut};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::JdClientConfig;
use crate::core::{Action, DownId, JdcCore, Mode, STALE_RETRY_SECS};
use crate::JdcEvent;

/// Downstream connections at once.
const MAX_DOWNSTREAMS: usize = 4096;
/// Messages queued for one downstream at most; a peer that lets it fill is dropped.
const SEND_QUEUE: usize = 4096;
/// A downstream that takes none of what is written to it for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages to the pool that may wait unwritten (about 8 s of shares at
/// 1,000 shares/s); past that the pool is not reading and the session ends.
const POOL_QUEUE: usize = 8192;
/// Messages to the template provider and the job declarator that may wait
/// unwritten: a few per template; past that the peer is not reading.
const TP_QUEUE: usize = 256;
const JDS_QUEUE: usize = 256;
/// How long a closing session may take to write what it queued for the pool.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Messages of the downstreams waiting for the session task, at most.
pub(crate) const FROM_DOWNSTREAMS: usize = 4096;

/// Downstream task -> session task.
pub(crate) enum FromDownstream {
    Connected(DownId, mpsc::Sender<Outbound>),
    Message(DownId, Incoming),
    Gone(DownId),
}

/// Accepts downstream connections; each gets a task feeding `to_session`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    config: Arc<JdClientConfig>,
    to_session: mpsc::Sender<FromDownstream>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    roles_common::accept_loop(
        "jd-client",
        listener,
        ConnectionLimits::new(MAX_DOWNSTREAMS, MAX_DOWNSTREAMS),
        shutdown,
        move |id, stream, peer| {
            let (config, to_session, shutdown) =
                (config.clone(), to_session.clone(), connections.clone());
            async move {
                match serve_downstream(id, stream, peer, &config, &to_session, shutdown).await {
                    Ok(()) => info!(down = id, %peer, "downstream disconnected"),
                    Err(reason) => warn!(down = id, %peer, "closing downstream: {reason}"),
                }
                let _ = to_session.send(FromDownstream::Gone(id)).await;
            }
        },
    )
    .await;
}

async fn serve_downstream(
    id: DownId,
    stream: TcpStream,
    peer: SocketAddr,
    c: &JdClientConfig,
    to_session: &mpsc::Sender<FromDownstream>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = noise::accept(
        stream,
        c.authority_public_key,
        c.authority_secret_key,
        c.cert_validity_sec,
    )
    .await
    .map_err(|e| format!("noise handshake failed: {e}"))?;
    info!(down = id, %peer, "downstream connected");
    let mut reader = Sv2Reader::spawn(reader, "downstream", 256);
    let (out_tx, mut out_rx) = mpsc::channel(SEND_QUEUE);
    let _ = to_session.send(FromDownstream::Connected(id, out_tx)).await;
    let mut out = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            // What waits is written together, in one write.
            _ = out_rx.recv_many(&mut out, WRITE_BATCH) => {
                let written = tokio::time::timeout(WRITE_TIMEOUT, write_outbound(&mut writer, &mut out, id))
                    .await
                    .unwrap_or_else(|_| Err(format!("peer took no message for {WRITE_TIMEOUT:?}")));
                if let Err(e) = written {
                    break Err(e);
                }
            }
            incoming = reader.recv() => match incoming {
                Ok(m) => {
                    // Waits while the session is busy or between sessions:
                    // the peer's messages then wait in its socket, not here.
                    let sent = tokio::select! {
                        sent = to_session.send(FromDownstream::Message(id, m)) => sent.is_ok(),
                        _ = shutdown.cancelled() => false,
                    };
                    if !sent {
                        break Ok(());
                    }
                }
                Err(ReadError::ClosedByPeer) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            },
        }
    };
    drop(reader);
    let _ = writer.shutdown().await;
    result
}

/// The upstream links of one session.
struct Links {
    tp: Link,
    jds: Option<Link>,
    pool: Link,
}

impl Links {
    /// Writes what each link queued (for at most `within` each), then
    /// closes them.
    async fn close(self, within: Duration) {
        let jds = self.jds.map(|jds| jds.writer.close(within));
        tokio::join!(
            self.pool.writer.close(within),
            self.tp.writer.close(within),
            async {
                if let Some(jds) = jds {
                    jds.await
                }
            }
        );
    }
}

/// An upstream link: written by a task of its own, so the session goes on
/// reading (shares, tips) while a peer is slow to read, and never waits on
/// one that stopped.
struct Link {
    reader: Sv2Reader,
    writer: Sv2Writer,
}

impl Link {
    fn of(connection: Sv2Connection, queue: usize) -> Self {
        let Sv2Connection { writer, reader, .. } = connection;
        Self {
            reader,
            writer: Sv2Writer::spawn(writer, queue),
        }
    }
}

/// Why a session ended, and the mode of the next one.
struct SessionEnd {
    reason: String,
    next: Mode,
}

/// Runs sessions until `shutdown`.
pub(crate) async fn run_sessions(
    config: JdClientConfig,
    mut from_downstream: mpsc::Receiver<FromDownstream>,
    events: broadcast::Sender<JdcEvent>,
    shutdown: CancellationToken,
) {
    let mut mode = Mode::Declared;
    let mut backoff = Backoff::new();
    let mut solutions = SentSolutions::default();
    loop {
        // When the session came up, if it did.
        let mut up = None;
        let end = match connect(&config, mode).await {
            Ok(links) => {
                up = Some(Instant::now());
                info!(?mode, "session started");
                let _ = events.send(JdcEvent::SessionStarted(mode));
                let mut session = Session {
                    config: &config,
                    core: JdcCore::new(mode, &config.user_identifier),
                    downstreams: HashMap::new(),
                    links,
                    events: &events,
                    solutions: &mut solutions,
                };
                let end = session.run(&mut from_downstream, &shutdown).await;
                session.links.close(CLOSE_WITHIN).await;
                end
            }
            Err(end) => end,
        };
        if shutdown.is_cancelled() {
            return;
        }
        warn!(?mode, next = ?end.next, "session ended: {}", end.reason);
        let _ = events.send(JdcEvent::SessionEnded(end.reason.clone()));
        // Another mode is a fresh start.
        if end.next != mode {
            backoff = Backoff::new();
        }
        mode = end.next;
        let (delay, _) = backoff.after(up);
        // Downstreams that come while no session runs are turned away.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut sleep => break,
                msg = from_downstream.recv() => {
                    if let Some(FromDownstream::Connected(_, out)) = msg {
                        let _ = out.try_send(Outbound::Close("no upstream session yet".into()));
                    }
                }
            }
        }
    }
}

/// Connects the links of a session in `mode`; a declarator that cannot be
/// reached means the pool's jobs.
async fn connect(config: &JdClientConfig, mode: Mode) -> Result<Links, SessionEnd> {
    let same = |reason: String| SessionEnd { reason, next: mode };
    let tp = sv2::connect_template_provider(
        &config.tp_address,
        config.tp_authority_public_key,
        "tp_authority_public_key",
        "jd-client",
        coinbase_constraints(),
    )
    .await
    .map_err(|e| same(format!("template provider: {e}")))?;
    let jds = match mode {
        Mode::Declared => Some(connect_jds(config).await.map_err(|e| SessionEnd {
            reason: format!("job declarator unreachable ({e}): mining the pool's jobs"),
            next: Mode::PoolJobs,
        })?),
        Mode::PoolJobs => None,
    };
    let flags = match mode {
        // REQUIRES_WORK_SELECTION
        Mode::Declared => 0b10,
        Mode::PoolJobs => 0,
    };
    let mut pool = sv2::connect(
        &config.pool_address,
        config.pool_authority_public_key,
        "pool",
        1024,
    )
    .await
    .map_err(|e| same(format!("pool: {}", e.explain("pool_authority_public_key"))))?;
    let setup = sv2::setup_connection(
        Protocol::MiningProtocol,
        flags,
        pool.peer,
        env!("CARGO_PKG_VERSION"),
        "jd-client",
    );
    pool.setup(setup)
        .await
        .map_err(|e| same(format!("pool: {e}")))?;
    let ehash = pool
        .negotiate_ehash()
        .await
        .map_err(|e| same(format!("pool: {e}")))?;
    if !ehash {
        warn!("the pool did not grant the ehash extension: no ehash notifications pass through");
    }
    Ok(Links {
        tp: Link::of(tp, TP_QUEUE),
        jds: jds.map(|jds| Link::of(jds, JDS_QUEUE)),
        pool: Link::of(pool, POOL_QUEUE),
    })
}

/// The job declarator connection, set up in full-template mode.
pub(crate) async fn connect_jds(config: &JdClientConfig) -> Result<Sv2Connection, String> {
    let mut jds = sv2::connect(
        &config.jds_address,
        config.pool_authority_public_key,
        "job declarator",
        256,
    )
    .await
    .map_err(|e| e.explain("pool_authority_public_key"))?;
    // DECLARE_TX_DATA: full-template mode.
    let setup = sv2::setup_connection(
        Protocol::JobDeclarationProtocol,
        0b1,
        jds.peer,
        env!("CARGO_PKG_VERSION"),
        "jd-client",
    );
    jds.setup(setup).await?;
    Ok(jds)
}

/// Room in the coinbase for the pool's output, a key commitment and the
/// declaration's number.
fn coinbase_constraints() -> CoinbaseOutputConstraintsOwned {
    let pool_output = TxOut {
        value: Amount::ZERO,
        // The largest standard script: P2WSH / P2TR (34 bytes).
        script_pubkey: ScriptBuf::from_bytes(vec![0; 34]),
    };
    let size = serialize(&pool_output).len()
        + ehash::coinbase::key_commitment_output_len()
        + ehash::coinbase::job_number_output_len();
    CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: size as u32,
        coinbase_output_max_additional_sigops: 4,
    }
}

struct Session<'a> {
    config: &'a JdClientConfig,
    core: JdcCore,
    downstreams: HashMap<DownId, mpsc::Sender<Outbound>>,
    links: Links,
    events: &'a broadcast::Sender<JdcEvent>,
    /// Kept across sessions: see [`SentSolutions`].
    solutions: &'a mut SentSolutions,
}

impl Session<'_> {
    async fn run(
        &mut self,
        from_downstream: &mut mpsc::Receiver<FromDownstream>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let actions = match self.links.jds {
            Some(_) => self.core.on_jds_connected(),
            None => vec![],
        };
        let resent = self.solutions.to_resend().into_iter().map(|solution| {
            info!(
                template_id = solution.template_id,
                "sending SubmitSolution again: the last template provider link may have lost it"
            );
            Action::Tp(AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::SubmitSolution(solution),
            ))
        });
        let actions: Vec<Action> = resent.chain(actions).collect();
        let end = match self.apply(actions).await {
            Err(end) => end,
            Ok(()) => self.serve(from_downstream, shutdown).await,
        };
        for (id, out) in self.downstreams.drain() {
            let _ = out.try_send(Outbound::Close(format!("session ended: {}", end.reason)));
            debug!(down = id, "closed at the end of the session");
        }
        end
    }

    async fn serve(
        &mut self,
        from_downstream: &mut mpsc::Receiver<FromDownstream>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mode = self.core.mode();
        let end = |reason: String, next: Mode| SessionEnd { reason, next };
        let mut retry = tokio::time::interval(Duration::from_secs(self.config.jds_retry_secs));
        retry.tick().await;
        let mut stale_retry = tokio::time::interval(Duration::from_secs(STALE_RETRY_SECS));
        stale_retry.tick().await;
        // Tried beside the links, not in the loop's turn: a declarator that
        // does not answer holds a connect up for seconds, and shares and
        // new tips must go on meanwhile.
        let config = self.config;
        let mut probe = None;
        loop {
            let (jds_reader, jds_writer) = match &mut self.links.jds {
                Some(jds) => (Some(&mut jds.reader), Some(&mut jds.writer)),
                None => (None, None),
            };
            let actions = tokio::select! {
                _ = shutdown.cancelled() => return end("stopping".into(), mode),
                msg = from_downstream.recv() => match msg {
                    Some(msg) => self.on_downstream(msg),
                    None => return end("downstream listener gone".into(), mode),
                },
                reason = self.links.pool.writer.failed() => return end(format!("pool link: {reason}"), mode),
                reason = self.links.tp.writer.failed() => return end(format!("template provider link: {reason}"), mode),
                reason = jds_failed(jds_writer) => return end(format!("job declarator link: {reason}: mining the pool's jobs"), Mode::PoolJobs),
                read = self.links.pool.reader.recv() => match read {
                    Ok(Incoming::Sv2(m)) => self.core.on_upstream(m),
                    Ok(Incoming::Ehash(m)) => self.core.on_upstream_ehash(m),
                    Err(e) => return end(format!("pool link: {e}"), mode),
                },
                read = self.links.tp.reader.recv() => match read {
                    Ok(Incoming::Sv2(m)) => {
                        if let AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(p)) = &m {
                            self.solutions.on_prev_hash(p.prev_hash.to_array());
                        }
                        self.core.on_tp(m)
                    }
                    Ok(Incoming::Ehash(_)) => vec![],
                    Err(e) => return end(format!("template provider link: {e}"), mode),
                },
                read = recv_jds(jds_reader) => match read {
                    Ok(Incoming::Sv2(m)) => self.core.on_jds(m),
                    Ok(Incoming::Ehash(_)) => vec![],
                    Err(e) => return end(format!("job declarator link: {e}: mining the pool's jobs"), Mode::PoolJobs),
                },
                _ = stale_retry.tick(), if mode == Mode::Declared => self.core.on_stale_retry(),
                _ = retry.tick(), if mode == Mode::PoolJobs && probe.is_none() => {
                    probe = Some(Box::pin(connect_jds(config)));
                    vec![]
                }
                probed = async { probe.as_mut().expect("a probe runs").await }, if probe.is_some() => {
                    probe = None;
                    // The next a whole interval after this one ended, not at
                    // once for the ticks missed while it waited on a handshake.
                    retry.reset();
                    match probed {
                        Ok(_) => return end("the job declarator is back: declaring jobs again".into(), Mode::Declared),
                        Err(e) => {
                            debug!("job declarator still unreachable: {e}");
                            vec![]
                        }
                    }
                }
            };
            if let Err(e) = self.apply(actions).await {
                return e;
            }
        }
    }

    fn on_downstream(&mut self, msg: FromDownstream) -> Vec<Action> {
        match msg {
            FromDownstream::Connected(id, out) => {
                self.downstreams.insert(id, out);
                self.core.on_downstream_connect(id);
                vec![]
            }
            FromDownstream::Message(id, Incoming::Sv2(m)) => self.core.on_downstream(id, m),
            FromDownstream::Message(id, Incoming::Ehash(m)) => self.core.on_downstream_ehash(id, m),
            FromDownstream::Gone(id) => {
                self.downstreams.remove(&id);
                self.core.on_downstream_disconnect(id)
            }
        }
    }

    async fn apply(&mut self, actions: Vec<Action>) -> Result<(), SessionEnd> {
        let mode = self.core.mode();
        let link_down = |what: &str, e: String| SessionEnd {
            reason: format!("{what} link: {e}"),
            next: mode,
        };
        for action in actions {
            match action {
                Action::Upstream(m) => self
                    .links
                    .pool
                    .writer
                    .send(Outgoing::Sv2(m))
                    .map_err(|e| link_down("pool", e))?,
                Action::UpstreamEhash(m) => self
                    .links
                    .pool
                    .writer
                    .send(Outgoing::Ehash(m))
                    .map_err(|e| link_down("pool", e))?,
                Action::Downstream(id, m) => self.queue_down(id, Outbound::Message(m)),
                Action::DownstreamEhash(id, m) => self.queue_down(id, Outbound::Ehash(m)),
                Action::CloseDownstream(id, reason) => self.queue_down(id, Outbound::Close(reason)),
                Action::Tp(m) => {
                    let block = match &m {
                        AnyMessageOwned::TemplateDistribution(
                            TemplateDistributionOwned::SubmitSolution(solution),
                        ) => {
                            self.solutions.sent(solution);
                            true
                        }
                        _ => false,
                    };
                    self.links
                        .tp
                        .writer
                        .send(Outgoing::Sv2(m))
                        .map_err(|e| link_down("template provider", e))?;
                    if block {
                        let _ = self.events.send(JdcEvent::BlockSubmitted);
                    }
                }
                Action::Jds(m) => {
                    if let Some(jds) = &self.links.jds {
                        jds.writer.send(Outgoing::Sv2(m)).map_err(|e| SessionEnd {
                            reason: format!("job declarator link: {e}: mining the pool's jobs"),
                            next: Mode::PoolJobs,
                        })?;
                    }
                }
                Action::FallBack(reason) => {
                    return Err(SessionEnd {
                        reason: format!("{reason}: mining the pool's jobs"),
                        next: Mode::PoolJobs,
                    })
                }
            }
        }
        Ok(())
    }

    fn queue_down(&mut self, id: DownId, out: Outbound) {
        let Some(tx) = self.downstreams.get(&id) else {
            return;
        };
        if tx.try_send(out).is_err() {
            warn!(down = id, "downstream does not keep up: dropping it");
            self.downstreams.remove(&id);
        }
    }
}

/// Why writing to the job declarator failed, or never without one.
async fn jds_failed(writer: Option<&mut Sv2Writer>) -> String {
    match writer {
        Some(writer) => writer.failed().await,
        None => std::future::pending().await,
    }
}

/// The next message of the job declarator, or never without one.
async fn recv_jds(reader: Option<&mut Sv2Reader>) -> Result<Incoming, ReadError> {
    match reader {
        Some(reader) => reader.recv().await,
        None => std::future::pending().await,
    }
}

//! What a stats service plugs in (the `Service` trait), and the tasks this
//! crate runs for it: ingest listener, the loop that applies what publishers
//! send and flushes it to SQLite, pruning, and the HTTP server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use roles_common::http::HttpLimits;
use roles_common::CancellationToken;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{Defaults, ServiceConfig};

/// Dashboard connections at once, in all and from one address.
const MAX_HTTP_CONNECTIONS: usize = 256;
const MAX_HTTP_CONNECTIONS_PER_IP: usize = 32;
use crate::core::{Core, ServiceState};
use crate::ingest::{self, IngestPolicy, Ingested};
use crate::store::{History, Store, StoreError, StoreLimits};

/// How often the heartbeat is stamped when nothing arrives: a crashed
/// service's downtime is known to within this.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often data older than the retention period is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Messages applied and flushed in one transaction at most.
const BATCH: usize = 1024;
const DAY_MS: i64 = 86_400_000;

/// The service state shared by the ingest loop and the HTTP handlers.
pub type Shared<A> = Arc<Mutex<Core<A>>>;

/// Locks the state; a handler that panicked while holding the lock left it
/// usable (every update is a whole message), so poisoning is ignored.
pub fn lock<A>(shared: &Shared<A>) -> MutexGuard<'_, Core<A>> {
    roles_common::lock(shared)
}

/// One stats service: what pool-stats and proxy-stats each put into the
/// shell this crate runs (tasks, config, the routes both serve). A unit
/// type, `Debug` and `Clone` so that its config is.
pub trait Service: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// Names, default ports and files.
    const DEFAULTS: Defaults;
    /// What the publisher's messages build.
    type State: ServiceState;
    /// The JSON of `/api/stats`, which the dashboard and `/metrics` show.
    type Stats: Serialize + Send + 'static;

    fn stats(core: &Core<Self::State>, now: i64) -> Result<Self::Stats, StoreError>;

    /// The Prometheus text of `/metrics`.
    fn metrics(stats: &Self::Stats) -> String;

    /// The dashboard page showing `stats`, its charts over the last `hours`
    /// hours (`range` is their label in [`crate::html::RANGES`]) read from
    /// `history`.
    fn dashboard(
        history: &History,
        stats: &Self::Stats,
        range: &str,
        hours: u32,
        now: i64,
    ) -> Result<String, StoreError>;

    /// The service's own routes, besides `/`, `/api/stats`, `/api/hashrate`
    /// and `/metrics`.
    fn routes() -> axum::Router<Shared<Self::State>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store in {dir}: {source}")]
    Store { dir: String, source: StoreError },
}

/// A running stats service; cancel its shutdown token to stop it.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Running {
    /// Waits until every task has stopped (after the token is cancelled);
    /// the last state is flushed by then.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens the store in `data_dir`, binds both listeners and starts serving.
pub async fn start<S: Service>(
    config: ServiceConfig<S>,
    shutdown: CancellationToken,
) -> Result<Running, ServiceError> {
    let defaults = S::DEFAULTS;
    let store_error = |source| ServiceError::Store {
        dir: config.data_dir.display().to_string(),
        source,
    };
    let mut store =
        Store::open(&config.data_dir, defaults.db_file, crate::now_ms()).map_err(store_error)?;
    store.set_limits(StoreLimits {
        max_per_miner_rows: config.max_per_miner_rows,
        max_records: config.max_records,
    });
    let mut core = Core::new(store).map_err(store_error)?;
    core.set_retention_days(config.retention_days);
    let shared: Shared<S::State> = Arc::new(Mutex::new(core));

    let ingest_listener = bind(config.ingest_listen).await?;
    let http_listener = bind(config.http_listen).await?;
    let ingest_addr = local_addr(&ingest_listener, config.ingest_listen)?;
    let http_addr = local_addr(&http_listener, config.http_listen)?;

    let (tx, rx) = mpsc::channel(BATCH * 4);
    let mut tasks = JoinSet::new();
    tasks.spawn(ingest::serve(
        ingest_listener,
        IngestPolicy::new(S::State::ROLE, config.publisher_secret.clone()),
        tx,
        shutdown.clone(),
    ));
    tasks.spawn(apply_loop(
        shared.clone(),
        rx,
        config.retention_days,
        shutdown.clone(),
    ));
    let app = crate::http::router::<S>(shared);
    tasks.spawn(roles_common::http::serve(
        "dashboard",
        http_listener,
        app,
        HttpLimits::new(MAX_HTTP_CONNECTIONS, MAX_HTTP_CONNECTIONS_PER_IP),
        shutdown.clone(),
    ));
    tracing::info!(
        "{} serving: publishers on {ingest_addr} ({}), dashboard on http://{http_addr}/, data in {} (kept {} days)",
        defaults.name,
        if config.publisher_secret.is_some() {
            "with the publisher secret"
        } else {
            "no secret: anyone on this machine may publish"
        },
        config.data_dir.display(),
        config.retention_days
    );
    Ok(Running {
        ingest_addr,
        http_addr,
        tasks,
    })
}

/// Runs until `shutdown` is cancelled.
pub async fn run<S: Service>(
    config: ServiceConfig<S>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// The `main` of a stats service: `<name> --config <file>`.
pub fn main<S: Service>() -> ExitCode {
    roles_common::role_main(S::DEFAULTS.name, S::DEFAULTS.env_prefix, run::<S>)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Listen { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServiceError> {
    listener
        .local_addr()
        .map_err(|source| ServiceError::Listen { addr, source })
}

/// Applies batches of ingested messages and flushes each batch in one
/// transaction; stamps the heartbeat and prunes on timers; flushes a last
/// time on shutdown, so a clean stop's downtime starts exactly then.
async fn apply_loop<A: ServiceState>(
    shared: Shared<A>,
    mut rx: mpsc::Receiver<Ingested>,
    retention_days: u32,
    shutdown: CancellationToken,
) {
    let retention_ms = i64::from(retention_days) * DAY_MS;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wake = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                Wake::Ingested(std::mem::take(&mut batch))
            }
            _ = heartbeat.tick() => Wake::Heartbeat,
            _ = prune.tick() => Wake::Prune,
        };
        run_blocking(&shared, move |core| {
            let now = crate::now_ms();
            match wake {
                Wake::Ingested(events) => apply(core, events, now),
                // The flush below stamps it.
                Wake::Heartbeat => {}
                Wake::Prune => match core.store.prune(now - retention_ms) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("pruned {n} rows older than {retention_days} days"),
                    Err(e) => tracing::error!("pruning failed: {e}"),
                },
            }
            flush(core);
        })
        .await;
    }
    // What the publishers' connections already handed over is applied too.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(event) = rx.try_recv() {
        rest.push(event);
    }
    run_blocking(&shared, move |core| {
        let now = crate::now_ms();
        apply(core, rest, now);
        if let Err(e) = core.flush_all(now) {
            tracing::error!("writing stats at the stop failed: {e}");
        }
    })
    .await;
}

fn apply<A: ServiceState>(core: &mut Core<A>, events: Vec<Ingested>, now: i64) {
    for event in events {
        match event {
            Ingested::Hello(conn, hello) => core.hello(conn, &hello, now),
            Ingested::Message(conn, msg) => {
                core.message(conn, &msg, now);
            }
            Ingested::Closed(conn) => core.closed(conn, now),
        }
    }
}

/// Why the apply loop woke up.
enum Wake {
    Ingested(Vec<Ingested>),
    Heartbeat,
    Prune,
}

fn flush<A: ServiceState>(core: &mut Core<A>) {
    if let Err(e) = core.flush(crate::now_ms()) {
        tracing::error!("writing stats failed: {e}");
    }
}

/// Runs `f` on the state on a blocking thread (SQLite does file IO).
pub async fn run_blocking<A: ServiceState, T: Send + 'static>(
    shared: &Shared<A>,
    f: impl FnOnce(&mut Core<A>) -> T + Send + 'static,
) -> T {
    let shared = shared.clone();
    off_runtime(move || f(&mut lock(&shared))).await
}

/// Runs `f` on a blocking thread: SQLite does file IO.
pub(crate) async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("stats task panicked")
}

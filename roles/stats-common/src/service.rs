//! The tasks of a stats service: ingest listener, the loop that applies what
//! publishers send and flushes it to SQLite, pruning, and the HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roles_common::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::core::{Aggregate, Core};
use crate::ingest::{self, Ingested};
use crate::store::{Store, StoreError};

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
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where and how a stats service runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// For logs: "pool-stats" or "proxy-stats".
    pub name: &'static str,
    pub ingest_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// File name of the SQLite database inside `data_dir`.
    pub db_file: &'static str,
    pub retention_days: u32,
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

/// Opens the store, binds both listeners and starts serving. `router` builds
/// the service's HTTP routes over the shared state.
pub async fn start<A: Aggregate>(
    settings: Settings,
    router: impl FnOnce(Shared<A>) -> axum::Router,
    shutdown: CancellationToken,
) -> Result<Running, ServiceError> {
    let store_error = |source| ServiceError::Store {
        dir: settings.data_dir.display().to_string(),
        source,
    };
    let store =
        Store::open(&settings.data_dir, settings.db_file, crate::now_ms()).map_err(store_error)?;
    let shared: Shared<A> = Arc::new(Mutex::new(Core::new(store).map_err(store_error)?));

    let ingest_listener = bind(settings.ingest_listen).await?;
    let http_listener = bind(settings.http_listen).await?;
    let ingest_addr = local_addr(&ingest_listener, settings.ingest_listen)?;
    let http_addr = local_addr(&http_listener, settings.http_listen)?;

    let (tx, rx) = mpsc::channel(BATCH * 4);
    let mut tasks = JoinSet::new();
    tasks.spawn(ingest::serve(
        ingest_listener,
        A::ROLE,
        tx,
        shutdown.clone(),
    ));
    tasks.spawn(apply_loop(
        shared.clone(),
        rx,
        settings.retention_days,
        shutdown.clone(),
    ));
    let app = router(shared);
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(http_listener, app)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("HTTP server stopped: {e}");
        }
    });
    tracing::info!(
        "{} serving: publishers on {ingest_addr}, dashboard on http://{http_addr}/, data in {} (kept {} days)",
        settings.name,
        settings.data_dir.display(),
        settings.retention_days
    );
    Ok(Running {
        ingest_addr,
        http_addr,
        tasks,
    })
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
async fn apply_loop<A: Aggregate>(
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
        apply(core, rest, crate::now_ms());
        flush(core);
    })
    .await;
}

fn apply<A: Aggregate>(core: &mut Core<A>, events: Vec<Ingested>, now: i64) {
    for event in events {
        match event {
            Ingested::Hello(_, hello) => core.hello(&hello, now),
            Ingested::Message(_, msg) => core.message(&msg),
            Ingested::Closed(_) => core.closed(now),
        }
    }
}

/// Why the apply loop woke up.
enum Wake {
    Ingested(Vec<Ingested>),
    Heartbeat,
    Prune,
}

fn flush<A: Aggregate>(core: &mut Core<A>) {
    if let Err(e) = core.flush(crate::now_ms()) {
        tracing::error!("writing stats failed: {e}");
    }
}

/// Runs `f` on the state on a blocking thread (SQLite does file IO).
pub async fn run_blocking<A: Aggregate, T: Send + 'static>(
    shared: &Shared<A>,
    f: impl FnOnce(&mut Core<A>) -> T + Send + 'static,
) -> T {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&shared)))
        .await
        .expect("stats state task panicked")
}

/// An API error: a status and a one-line reason, as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
}

impl ApiError {
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!("stats query failed: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "stats store unavailable".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response()
    }
}

/// The `hours` query parameter of the chart endpoints.
#[derive(Debug, serde::Deserialize)]
pub struct HoursQuery {
    pub hours: Option<u32>,
}

impl HoursQuery {
    /// The asked number of hours (24 if absent), checked.
    pub fn hours(&self) -> Result<u32, ApiError> {
        match self.hours {
            None => Ok(24),
            Some(h @ 1..=crate::series::MAX_HOURS) => Ok(h),
            Some(h) => Err(ApiError::bad_request(format!(
                "hours={h}: must be 1 to {}",
                crate::series::MAX_HOURS
            ))),
        }
    }
}

/// A `text/plain` Prometheus exposition response.
pub fn metrics_response(body: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The longest retention accepted (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// Checks the config fields both services have.
pub fn validate_common(
    data_dir: &std::path::Path,
    retention_days: u32,
) -> Result<(), roles_common::ConfigError> {
    if data_dir.as_os_str().is_empty() {
        return Err(roles_common::ConfigError::new("data_dir", "is empty"));
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&retention_days) {
        return Err(roles_common::ConfigError::new(
            "retention_days",
            format!("must be 1 to {MAX_RETENTION_DAYS}"),
        ));
    }
    Ok(())
}

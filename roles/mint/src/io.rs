//! Sockets: the Noise listener of the pool link and the Cashu HTTP API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use ehash::wire::MessageSet;
use mint_quote_sv2::MintQuoteMessage;
use roles_common::http::HttpLimits;
use roles_common::limits::ConnectionLimits;
use roles_common::noise::{self, NoiseReader, NoiseWriter};
use roles_common::sv2::WRITE_BATCH;
use roles_common::CancellationToken;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;
use stratum_core::bitcoin::ScriptBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::chain::Pools;
use crate::link::{LinkSession, Step};
use crate::service::{AskingPool, QuoteService};
use crate::MintConfig;

/// A pool must prove its identity this soon after connecting.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pool links open at once at most (each must also authenticate in time),
/// and from one address: one host cannot hold every slot with connections
/// that never authenticate.
const MAX_POOL_LINKS: usize = 64;
const MAX_POOL_LINKS_PER_IP: usize = 16;
/// Wallet connections to the Cashu API at once, in all and from one address.
const MAX_HTTP_CONNECTIONS: usize = 4_096;
const MAX_HTTP_CONNECTIONS_PER_IP: usize = 64;
/// Requests of one connection served at once; more wait (backpressure).
/// Two of the writer's groups: a request holds its place until answered,
/// so with one group's worth the next group could only be read and
/// checked once the writer had committed the last, and writer and checks
/// took turns instead of working side by side.
const MAX_IN_FLIGHT: usize = 2 * crate::quote_writer::MAX_GROUP;
/// Replies queued for the writer of one connection.
const REPLY_QUEUE: usize = 256;

pub struct LinkContext {
    pub service: Arc<QuoteService>,
    pub authority_public_key: Secp256k1PublicKey,
    pub authority_secret_key: Secp256k1SecretKey,
    pub cert_validity_secs: u64,
    /// The pools allowed to create quotes: key and reward script.
    pub pools: Vec<(XOnlyPublicKey, ScriptBuf)>,
}

impl LinkContext {
    pub(crate) fn new(config: &MintConfig, service: Arc<QuoteService>) -> Self {
        Self {
            service,
            authority_public_key: config.authority_public_key,
            authority_secret_key: config.authority_secret_key,
            cert_validity_secs: config.cert_validity_secs,
            pools: config
                .pools
                .iter()
                .map(|p| (p.x_only_key(), p.reward_script()))
                .collect(),
        }
    }

    /// An allowed pool: its reward script and its bit in `[[pools]]`.
    pub(crate) fn pool(&self, pool_key: &XOnlyPublicKey) -> Option<AskingPool> {
        let index = self.pools.iter().position(|(key, _)| key == pool_key)?;
        Some(AskingPool {
            reward_script: self.pools[index].1.clone(),
            bit: Pools::nth(index),
        })
    }

    pub(crate) fn mint_key(&self) -> XOnlyPublicKey {
        XOnlyPublicKey::from_slice(&self.authority_public_key.into_bytes())
            .expect("a key_utils public key is a valid x-only key")
    }
}

/// Accepts pool connections until `shutdown`.
pub async fn serve_link(listener: TcpListener, ctx: Arc<LinkContext>, shutdown: CancellationToken) {
    let connections = shutdown.clone();
    let limits = ConnectionLimits::new(MAX_POOL_LINKS, MAX_POOL_LINKS_PER_IP);
    roles_common::accept_loop(
        "pool link",
        listener,
        limits,
        shutdown,
        move |id, stream, peer| {
            let (ctx, shutdown) = (ctx.clone(), connections.child_token());
            async move {
                match serve_connection(stream, &ctx, shutdown).await {
                    Ok(()) => info!("pool link {id} ({peer}): closed"),
                    Err(reason) => warn!("pool link {id} ({peer}): closed: {reason}"),
                }
            }
        },
    )
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    ctx: &Arc<LinkContext>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    // One small frame per answer: without this, Nagle's algorithm holds an
    // answer until the pool's delayed ACK (~40 ms) whenever one is in flight.
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = noise::accept(stream, ctx.authority_public_key, ctx.authority_secret_key, ctx.cert_validity_secs) =>
            r.map_err(|e| format!("Noise handshake failed: {e:?}"))?,
    };
    let (replies, queue) = mpsc::channel(REPLY_QUEUE);
    let writer_done = shutdown.child_token();
    let writer_task = tokio::spawn(write_replies(writer, queue, writer_done.clone()));

    let mut session = LinkSession::new(
        rand::random(),
        ctx.mint_key(),
        ctx.pools.iter().map(|(key, _)| *key).collect(),
        ctx.service.unit_bits().get(),
    );
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let auth_deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    // The authenticated pool (its shares' coinbases must pay its reward script).
    let mut pool: Option<Arc<AskingPool>> = None;

    let result = loop {
        let read = async {
            if session.pool_key().is_some() {
                Ok(read_message(&mut reader).await)
            } else {
                tokio::time::timeout_at(auth_deadline, read_message(&mut reader)).await
            }
        };
        let message = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = writer_done.cancelled() => break Err("the connection failed while writing".to_string()),
            r = read => match r {
                Err(_) => break Err(format!("no pool authentication within {AUTH_TIMEOUT:?}")),
                Ok(Err(reason)) => break Err(reason),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(message))) => message,
            },
        };
        debug!("pool link: received {}", message.name());
        let authenticated = session.pool_key().is_some();
        let step = session.on_message(message);
        if let (false, Some(key)) = (authenticated, session.pool_key()) {
            info!("pool link: authenticated pool key {key}");
            pool = ctx.pool(&key).map(Arc::new);
        }
        if let Some(reason) = apply(step, ctx, pool.clone(), &replies, &in_flight).await {
            break Err(reason);
        }
    };
    // Let the writer flush what is queued (answers in flight included), then stop.
    drop(replies);
    let _ = writer_task.await;
    result
}

/// Carries out one step of the session: replies queued for the writer,
/// quote and stats requests served on their own tasks, as many at once as
/// `in_flight` allows. `Some(reason)` when the connection must close.
async fn apply(
    step: Step,
    ctx: &Arc<LinkContext>,
    pool: Option<Arc<AskingPool>>,
    replies: &mpsc::Sender<MintQuoteMessage>,
    in_flight: &Arc<Semaphore>,
) -> Option<String> {
    match step {
        Step::Reply(messages) => {
            for m in messages {
                if replies.send(m).await.is_err() {
                    break;
                }
            }
        }
        Step::Close { reply, reason } => {
            for m in reply {
                let _ = replies.send(m).await;
            }
            return Some(reason);
        }
        Step::Quote(request) => {
            let pool = pool.expect("quotes come from an authenticated, allowed pool");
            let permit = acquire(in_flight).await;
            let (service, replies) = (ctx.service.clone(), replies.clone());
            tokio::spawn(async move {
                let answer = service.handle_quote(request, &pool).await;
                let _ = replies.send(answer).await;
                drop(permit);
            });
        }
        Step::Stats(request_id) => {
            let permit = acquire(in_flight).await;
            let (service, replies) = (ctx.service.clone(), replies.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match service.stats(request_id).await {
                    Ok(stats) => {
                        let _ = replies
                            .send(MintQuoteMessage::MintStatsResponse(stats))
                            .await;
                    }
                    Err(e) => warn!("pool link: stats request {request_id} failed: {e}"),
                }
            });
        }
    }
    None
}

async fn acquire(in_flight: &Arc<Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("never closed")
}

/// Reads and decodes one message: `None` when the peer closed the
/// connection; an error (a reason to close) for anything malformed.
async fn read_message(reader: &mut NoiseReader) -> Result<Option<MintQuoteMessage>, String> {
    let mut frame = match reader.read_frame().await {
        Ok(frame) => frame,
        Err(noise::ReadError::Closed) => return Ok(None),
        Err(e) => return Err(format!("read failed: {e}")),
    };
    let header = frame.header();
    MintQuoteMessage::decode(&header, frame.payload())
        .map(Some)
        .map_err(|e| format!("bad frame: {e}"))
}

async fn write_replies(
    mut writer: NoiseWriter,
    mut queue: mpsc::Receiver<MintQuoteMessage>,
    failed: CancellationToken,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for message in batch.drain(..) {
            let name = message.name();
            let frame = match message.into_frame() {
                Ok(frame) => frame,
                Err(e) => {
                    warn!("pool link: cannot encode {name}: {e}");
                    continue;
                }
            };
            if let Err(e) = writer.queue(frame) {
                debug!("pool link: cannot encrypt {name}: {e:?}");
                failed.cancel();
                return;
            }
        }
        if let Err(e) = writer.flush().await {
            debug!("pool link: write failed: {e:?}");
            failed.cancel();
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Serves the Cashu HTTP API until `shutdown`: wallets from one address
/// hold a few connections at most.
pub async fn serve_http(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) {
    roles_common::http::serve(
        "mint http",
        listener,
        router
            .layer(axum::middleware::from_fn(without_forced_yields))
            .layer(axum::middleware::from_fn(cors)),
        HttpLimits::new(MAX_HTTP_CONNECTIONS, MAX_HTTP_CONNECTIONS_PER_IP),
        shutdown,
    )
    .await
}

/// Lets browser wallets call every route, the mint's own (batch mint,
/// lookup, audit) as cdk-axum's: any origin, preflight requests answered
/// here.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        Response::default()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    response
}

/// Runs a request to the end without tokio's forced yields. cdk's SQLite
/// store waits for the write lock on the worker thread itself (busy
/// timeout): a request forced to yield inside its transaction could be
/// queued on a worker that is now waiting for that very lock, and both
/// would stall for the whole 10 s timeout. The request still gives up its
/// thread whenever it waits for something else.
async fn without_forced_yields(request: Request, next: Next) -> Response {
    tokio::task::unconstrained(next.run(request)).await
}

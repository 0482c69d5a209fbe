//! The publisher listener: plain TCP, one stats-sv2 frame after another,
//! `PublisherHello` first. A connection that breaks the protocol is closed
//! with a logged reason; other connections are not affected.
//!
//! What a stranger who can reach the listener can do is bounded: nothing
//! it sends is read past a hello without the service's publisher secret
//! (when one is configured), the hello must come within [`HELLO_TIMEOUT`],
//! a publisher silent for [`IDLE_TIMEOUT`] is dropped, and connections are
//! capped in total and per address. Refusals of connections that never
//! authenticated are logged at most once per interval.
//!
//! One publisher process at a time owns the service's live state: a hello
//! from a process started before one that is connected is refused
//! ([`Publishers`]), so two publishers of one role (or an old process still
//! running beside its successor) cannot take turns at it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roles_common::limits::ConnectionLimits;
use roles_common::log_limit::LogLimit;
use roles_common::stats_publisher::PublisherSecret;
use roles_common::CancellationToken;
use stats_sv2::{
    DecodeError, MessageSet, PublisherHello, StatsMessage, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// SV2 frame header: extension type u16, message type u8, length u24.
const HEADER_LEN: usize = 6;
/// Publishers connected at once at most (a pool or a translator each, and
/// a reconnect or two).
pub const MAX_PUBLISHERS: usize = 64;
/// Publisher connections from one address at most, so that one host cannot
/// take every slot.
pub const MAX_PUBLISHERS_PER_IP: usize = 8;
/// How long after connecting the hello may take.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publisher may stay silent: three keepalive intervals.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3 * stats_sv2::KEEPALIVE_INTERVAL.as_secs());
/// Stats messages are a few hundred bytes at most; anything far larger is
/// not a stats publisher, and must not make the service allocate 16 MiB.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What the ingest side hands to the service, per connection id.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    Hello(u64, PublisherHello),
    Message(u64, StatsMessage),
    /// A connection that had said hello is gone.
    Closed(u64),
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("first message must be PublisherHello, got {0}")]
    NoHello(&'static str),
    #[error(
        "a PublisherHello of stats protocol version 1 (no version, no secret); \
         this service speaks version {PROTOCOL_VERSION}: upgrade the publisher"
    )]
    OutdatedHello,
    #[error(
        "stats protocol version {0}; this service speaks versions \
         {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
    )]
    Version(u16),
    #[error(
        "no publisher secret in the hello; this service requires one \
         (`secret` in the publisher's [stats] table)"
    )]
    MissingSecret,
    #[error("wrong publisher secret")]
    WrongSecret,
    #[error("publisher role {got} is not served here (expected {expected})")]
    WrongRole { expected: u8, got: u8 },
    #[error("a second PublisherHello on the same connection")]
    RepeatedHello,
    #[error(
        "this publisher process started {:.1} s before one that is connected: \
         another publisher of this role runs, or an old process still does; \
         the newest one publishes",
        (.newest - .started_at) as f64 / 1000.0
    )]
    OlderProcess { started_at: u64, newest: u64 },
    #[error("frame payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("no PublisherHello within {} s of connecting", .0.as_secs())]
    HelloTimeout(Duration),
    #[error("silent for {} s (publishers send a keepalive every {} s)",
        .0.as_secs(), stats_sv2::KEEPALIVE_INTERVAL.as_secs())]
    Silent(Duration),
}

/// The protocol of one publisher connection, without IO.
#[derive(Debug)]
pub struct Session {
    expected_role: u8,
    secret: Option<PublisherSecret>,
    greeted: bool,
}

impl Session {
    /// A connection of a publisher of `expected_role`, whose hello must
    /// carry `secret` when there is one.
    pub fn new(expected_role: u8, secret: Option<PublisherSecret>) -> Session {
        Session {
            expected_role,
            secret,
            greeted: false,
        }
    }

    /// Whether the publisher has said a valid hello (so its closing matters).
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// Takes one whole frame (header and payload) and says what it means.
    pub fn on_frame(&mut self, frame: &mut [u8]) -> Result<StatsMessage, ProtocolError> {
        let msg = match StatsMessage::decode_frame(frame) {
            Ok(msg) => msg,
            Err(DecodeError::UnknownMessageType { msg_type, .. })
                if msg_type == stats_sv2::PUBLISHER_HELLO_V1 && !self.greeted =>
            {
                return Err(ProtocolError::OutdatedHello)
            }
            Err(e) => return Err(e.into()),
        };
        match (&msg, self.greeted) {
            (StatsMessage::PublisherHello(hello), false) => {
                self.check_hello(hello)?;
                self.greeted = true;
            }
            (StatsMessage::PublisherHello(_), true) => return Err(ProtocolError::RepeatedHello),
            (other, false) => return Err(ProtocolError::NoHello(other.name())),
            (_, true) => {}
        }
        Ok(msg)
    }

    fn check_hello(&self, hello: &PublisherHello) -> Result<(), ProtocolError> {
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
            return Err(ProtocolError::Version(hello.version));
        }
        if let Some(secret) = &self.secret {
            let given = hello.secret.as_bytes();
            if given.is_empty() {
                return Err(ProtocolError::MissingSecret);
            }
            // Constant time, so the comparison does not tell how much of a
            // guess was right (only whether its length was).
            if !bool::from(given.ct_eq(secret.as_bytes())) {
                return Err(ProtocolError::WrongSecret);
            }
        }
        if hello.role != self.expected_role {
            return Err(ProtocolError::WrongRole {
                expected: self.expected_role,
                got: hello.role,
            });
        }
        Ok(())
    }
}

/// The publisher processes connected: each connection's `started_at`,
/// from its hello.
#[derive(Debug, Default)]
pub struct Publishers(HashMap<u64, u64>);

impl Publishers {
    /// Connection `conn` said hello for a process started at `started_at`:
    /// refused if a process started later is connected.
    pub fn admit(&mut self, conn: u64, started_at: u64) -> Result<(), ProtocolError> {
        let newest = self.0.values().copied().max();
        if let Some(newest) = newest.filter(|&newest| newest > started_at) {
            return Err(ProtocolError::OlderProcess { started_at, newest });
        }
        self.0.insert(conn, started_at);
        Ok(())
    }

    /// Connection `conn` closed (admitted or not).
    pub fn left(&mut self, conn: u64) {
        self.0.remove(&conn);
    }
}

/// Reads one whole frame, or `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<Vec<u8>, ProtocolError>>> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut header[1..]).await?;
    let len = u32::from_le_bytes([header[3], header[4], header[5], 0]) as usize;
    if len > MAX_PAYLOAD {
        return Ok(Some(Err(ProtocolError::TooLarge(len))));
    }
    let mut frame = vec![0u8; HEADER_LEN + len];
    frame[..HEADER_LEN].copy_from_slice(&header);
    reader.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(Some(Ok(frame)))
}

/// Who may publish, and the bounds on their connections.
#[derive(Debug, Clone)]
pub struct IngestPolicy {
    /// The `stats_sv2::role` of the publishers served.
    pub role: u8,
    /// The secret each hello must carry, if any.
    pub secret: Option<PublisherSecret>,
    pub hello_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_publishers: usize,
    pub max_per_ip: usize,
}

impl IngestPolicy {
    /// The policy for publishers of `role`, with the default bounds.
    pub fn new(role: u8, secret: Option<PublisherSecret>) -> IngestPolicy {
        IngestPolicy {
            role,
            secret,
            hello_timeout: HELLO_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_publishers: MAX_PUBLISHERS,
            max_per_ip: MAX_PUBLISHERS_PER_IP,
        }
    }
}

/// Accepts publishers until `shutdown` and forwards what they send; a
/// connection's `Closed` follows its `Hello`.
pub async fn serve(
    listener: TcpListener,
    policy: IngestPolicy,
    out: mpsc::Sender<Ingested>,
    shutdown: CancellationToken,
) {
    let limits = ConnectionLimits::new(policy.max_publishers, policy.max_per_ip);
    let policy = Arc::new(policy);
    let refusals = Arc::new(Mutex::new(LogLimit::default()));
    let publishers = Arc::new(Mutex::new(Publishers::default()));
    roles_common::accept_loop(
        "stats ingest",
        listener,
        limits,
        shutdown.clone(),
        move |id, stream, peer| {
            let out = out.clone();
            let shutdown = shutdown.clone();
            let policy = policy.clone();
            let refusals = refusals.clone();
            let publishers = publishers.clone();
            async move {
                let greeted = tokio::select! {
                    // The service is stopping: nobody to tell.
                    _ = shutdown.cancelled() => false,
                    greeted = connection(id, stream, peer, &policy, &refusals, &publishers, &out) => greeted,
                };
                if greeted {
                    let _ = out.send(Ingested::Closed(id)).await;
                }
                // After its Closed: the service hears of a connection let
                // in meanwhile after this one's end.
                roles_common::lock(&publishers).left(id);
            }
        },
    )
    .await;
}

/// Why a connection's reading stopped.
enum Ended {
    /// Nothing arrived within the time allowed.
    TimedOut(Duration),
    /// The peer sent what the protocol does not allow.
    Refused(ProtocolError),
    /// The peer closed it.
    Closed,
    /// The socket failed.
    Lost(std::io::Error),
}

/// The next frame, within `limit`.
async fn next_frame(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, Ended> {
    match tokio::time::timeout(limit, read_frame(stream)).await {
        Err(_) => Err(Ended::TimedOut(limit)),
        Ok(Ok(Some(Ok(frame)))) => Ok(frame),
        Ok(Ok(Some(Err(e)))) => Err(Ended::Refused(e)),
        Ok(Ok(None)) => Err(Ended::Closed),
        Ok(Err(e)) => Err(Ended::Lost(e)),
    }
}

/// Logs a connection's refusals and closes.
struct ConnectionLog<'a> {
    peer: SocketAddr,
    refusals: &'a Mutex<LogLimit>,
}

impl ConnectionLog<'_> {
    /// Refusals are logged rate-limited: a stranger, or an older process
    /// knocking again, must not flood the log.
    fn refusing(&self, reason: &dyn std::fmt::Display) {
        if let Some(left_out) = roles_common::lock(self.refusals).check(Instant::now()) {
            let more = match left_out {
                0 => String::new(),
                n => format!(" ({n} other refusals since the last line)"),
            };
            tracing::warn!("stats ingest: refusing {}: {reason}{more}", self.peer);
        }
    }

    /// Why the connection closes: logged every time for a publisher that
    /// is let in (`greeted`).
    fn closing(&self, greeted: bool, reason: &dyn std::fmt::Display) {
        if greeted {
            tracing::warn!("stats publisher {}: closing: {reason}", self.peer);
        } else {
            self.refusing(reason);
        }
    }

    /// How reading from the connection ended.
    fn ended(&self, greeted: bool, ended: Ended) {
        let peer = self.peer;
        match ended {
            Ended::TimedOut(limit) if greeted => {
                self.closing(greeted, &ProtocolError::Silent(limit))
            }
            Ended::TimedOut(limit) => self.closing(greeted, &ProtocolError::HelloTimeout(limit)),
            Ended::Refused(e) => self.closing(greeted, &e),
            Ended::Closed if greeted => tracing::info!("stats publisher {peer} disconnected"),
            Ended::Closed => {}
            Ended::Lost(e) if greeted => {
                tracing::info!("stats publisher {peer}: connection lost: {e}")
            }
            Ended::Lost(e) => self.closing(greeted, &format!("connection lost: {e}")),
        }
    }
}

/// Serves one publisher; whether its hello was handed over.
async fn connection(
    id: u64,
    mut stream: TcpStream,
    peer: SocketAddr,
    policy: &IngestPolicy,
    refusals: &Mutex<LogLimit>,
    publishers: &Mutex<Publishers>,
    out: &mpsc::Sender<Ingested>,
) -> bool {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(policy.role, policy.secret.clone());
    let log = ConnectionLog { peer, refusals };
    loop {
        let greeted = session.greeted();
        let limit = if greeted {
            policy.idle_timeout
        } else {
            policy.hello_timeout
        };
        let mut frame = match next_frame(&mut stream, limit).await {
            Ok(frame) => frame,
            Err(ended) => {
                log.ended(greeted, ended);
                return greeted;
            }
        };
        let event = match session.on_frame(&mut frame) {
            Ok(StatsMessage::PublisherHello(hello)) => {
                if let Err(e) = roles_common::lock(publishers).admit(id, hello.started_at) {
                    log.refusing(&e);
                    return false;
                }
                tracing::info!(
                    "stats publisher {peer} connected (started at {}, {} events dropped)",
                    hello.started_at,
                    hello.dropped
                );
                Ingested::Hello(id, hello)
            }
            // Only resets the read timeout.
            Ok(StatsMessage::Keepalive(_)) => continue,
            Ok(msg) => Ingested::Message(id, msg),
            Err(e) => {
                log.closing(session.greeted(), &e);
                return session.greeted();
            }
        };
        if out.send(event).await.is_err() {
            return session.greeted();
        }
    }
}

#[cfg(test)]
mod tests;

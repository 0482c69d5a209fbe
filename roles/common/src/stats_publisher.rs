//! Publishing stats-sv2 messages to a stats service (pool-stats,
//! proxy-stats) without ever slowing mining down.
//!
//! [`StatsPublisher::publish`] only appends to a bounded in-memory queue
//! ([`StatsQueue`]: when full, the oldest event is dropped and counted). A
//! background task connects to the service, sends a `PublisherHello` first on
//! every connection, then the queued events in order, then the current state
//! of every link and a snapshot of what is live ([`LiveSet`]); on any error
//! it reconnects with exponential backoff. Events queued while the service
//! is away are sent once it is back, up to the queue's capacity; link
//! states and the snapshot are sent on every connection and after a
//! `LinkStatus` or a connect or disconnect event was dropped, so one
//! dropped or lost still reaches the service. With
//! nothing to send it sends a `Keepalive` every [`KEEPALIVE_INTERVAL`], so
//! the service can close connections that went silent.
//!
//! The hello carries the service's publisher secret ([`PublisherSecret`],
//! `secret` in the `[stats]` table) when one is configured.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use stats_sv2::{
    Keepalive, LinkStatus, MessageSet, PublisherHello, StatsMessage, KEEPALIVE_INTERVAL,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::{ConfigError, Validate};

mod live;

use live::LiveSet;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Unix time in milliseconds, the `timestamp` of every stats message.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ config

/// The shared secret a stats service asks of its publishers (its
/// `publisher_secret`, the publisher's `[stats] secret`). Text of
/// [`PublisherSecret::MIN_LEN`] to [`PublisherSecret::MAX_LEN`] bytes;
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PublisherSecret(String);

impl PublisherSecret {
    /// Shorter secrets are guessable.
    pub const MIN_LEN: usize = 16;
    /// What `PublisherHello` can carry.
    pub const MAX_LEN: usize = stats_sv2::MAX_SECRET_LEN;

    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// 32 random bytes, as 64 hex digits.
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 32]>()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Checks the length; errors name `field`.
    pub fn check(&self, field: &str) -> Result<(), ConfigError> {
        let len = self.0.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(ConfigError::new(
                field,
                format!(
                    "is {len} bytes long; use {} to {} (e.g. `openssl rand -hex 32`)",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for PublisherSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublisherSecret(hidden)")
    }
}

/// The `[stats]` table of the pool and the translator: where their stats
/// service listens. Without it nothing is published.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSettings {
    /// `host:port` of the stats service's publisher listener.
    pub address: String,
    /// Events kept while the service is away; beyond this the oldest are
    /// dropped (and counted).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The service's `publisher_secret`, when it has one.
    #[serde(default)]
    pub secret: Option<PublisherSecret>,
}

fn default_queue_capacity() -> usize {
    100_000
}

impl StatsSettings {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            queue_capacity: default_queue_capacity(),
            secret: None,
        }
    }

    /// The same settings, sending `secret` in the hello.
    pub fn with_secret(self, secret: PublisherSecret) -> Self {
        Self {
            secret: Some(secret),
            ..self
        }
    }
}

/// Errors name the fields as they appear in the role configs (`stats.…`).
impl Validate for StatsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        crate::check_host_port("stats.address", &self.address)?;
        if self.queue_capacity == 0 {
            return Err(ConfigError::new(
                "stats.queue_capacity",
                "must be at least 1",
            ));
        }
        if let Some(secret) = &self.secret {
            secret.check("stats.secret")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ sans-IO parts

/// A FIFO of at most `capacity` items that drops its oldest item to make
/// room, counting every drop.
#[derive(Debug)]
pub struct StatsQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> StatsQueue<T> {
    /// A queue of at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Grows on demand: a large capacity costs nothing until used.
            items: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Appends `item`, dropping the oldest item when full; returns the
    /// item dropped.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items dropped since the queue was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The last known state of each link, so a link that is reported down on
/// every failed reconnect attempt is published once per change.
#[derive(Debug, Default)]
pub struct LinkStates(BTreeMap<u8, bool>);

impl LinkStates {
    /// True when `up` differs from what was last recorded for `link` (or
    /// nothing was).
    pub fn changed(&mut self, link: u8, up: bool) -> bool {
        self.0.insert(link, up) != Some(up)
    }

    /// A `LinkStatus` dated `timestamp` for every link recorded, by link.
    pub fn statuses(&self, timestamp: u64) -> Vec<LinkStatus> {
        self.0
            .iter()
            .map(|(&link, &up)| LinkStatus {
                link,
                up,
                timestamp,
            })
            .collect()
    }
}

// ------------------------------------------------------------------ publisher

struct Shared {
    queue: Mutex<StatsQueue<StatsMessage>>,
    links: Mutex<LinkStates>,
    live: Mutex<LiveSet>,
    /// A `LinkStatus` was dropped from the queue: the links' states are due.
    link_status_dropped: AtomicBool,
    /// A connect or disconnect event was dropped: the live snapshot is due.
    lifecycle_dropped: AtomicBool,
    wake: Notify,
    connected: AtomicBool,
}

/// Publishes stats events to a stats service. Cheap to clone; all clones
/// feed the same queue and connection.
#[derive(Clone)]
pub struct StatsPublisher {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for StatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsPublisher")
            .field("enabled", &self.shared.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl StatsPublisher {
    /// A publisher that publishes nothing (no `[stats]` table).
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    /// Publishes to `settings.address` as `role` (a [`stats_sv2::role`])
    /// until `shutdown`; [`disabled`](Self::disabled) when `settings` is None.
    /// Needs a tokio runtime.
    pub fn for_config(
        settings: Option<&StatsSettings>,
        role: u8,
        shutdown: CancellationToken,
    ) -> Self {
        match settings {
            Some(settings) => Self::start(settings, role, shutdown),
            None => Self::disabled(),
        }
    }

    /// Starts the connection task. Needs a tokio runtime.
    pub fn start(settings: &StatsSettings, role: u8, shutdown: CancellationToken) -> Self {
        Self::start_with_keepalive(settings, role, KEEPALIVE_INTERVAL, shutdown)
    }

    /// [`start`](Self::start), with a `Keepalive` after `keepalive` of
    /// nothing sent (tests).
    #[doc(hidden)]
    pub fn start_with_keepalive(
        settings: &StatsSettings,
        role: u8,
        keepalive: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(StatsQueue::new(settings.queue_capacity)),
            links: Mutex::new(LinkStates::default()),
            live: Mutex::new(LiveSet::default()),
            link_status_dropped: AtomicBool::new(false),
            lifecycle_dropped: AtomicBool::new(false),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
        });
        let task = Task {
            address: settings.address.clone(),
            secret: settings.secret.clone(),
            keepalive,
            role,
            // The role starts with its publisher: a new value tells the
            // service the role restarted.
            started_at: now_ms(),
            shared: shared.clone(),
        };
        tokio::spawn(task.run(shutdown));
        Self {
            shared: Some(shared),
        }
    }

    /// Queues `msg` for the service. Never blocks nor waits: when the queue
    /// is full the oldest event is dropped.
    pub fn publish(&self, msg: impl Into<StatsMessage>) {
        let Some(shared) = &self.shared else { return };
        let msg = msg.into();
        // Held while queueing, as the links are: the snapshot is never
        // older than what was queued before it was taken.
        let _live = msg.is_lifecycle().then(|| {
            let mut live = shared.live.lock().expect("live set lock");
            live.record(&msg);
            live
        });
        let dropped = shared.queue.lock().expect("stats queue lock").push(msg);
        match dropped {
            Some(StatsMessage::LinkStatus(_)) => {
                shared.link_status_dropped.store(true, Ordering::Relaxed);
            }
            Some(d) if d.is_lifecycle() => shared.lifecycle_dropped.store(true, Ordering::Relaxed),
            _ => {}
        }
        shared.wake.notify_one();
    }

    /// Publishes `LinkStatus` for `link` (a [`stats_sv2::link`]) only when
    /// its state changed, so callers can report every observation.
    pub fn link_status(&self, link: u8, up: bool) {
        let Some(shared) = &self.shared else { return };
        // Held while queueing: a link's states are queued in the order they
        // were recorded, so the last one queued is the one recorded.
        let mut links = shared.links.lock().expect("links lock");
        if links.changed(link, up) {
            self.publish(LinkStatus {
                link,
                up,
                timestamp: now_ms(),
            });
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.queue.lock().expect("stats queue lock").dropped())
    }

    /// Whether a connection to the service is up (its hello was sent).
    pub fn is_connected(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.connected.load(Ordering::Relaxed))
    }
}

struct Task {
    address: String,
    secret: Option<PublisherSecret>,
    keepalive: Duration,
    role: u8,
    started_at: u64,
    shared: Arc<Shared>,
}

impl Task {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        // Logs once per outage: warn when the service goes away, info when it is back.
        let mut away = false;
        // The service closed the last connection soon after the hello (a
        // wrong secret or role, a newer process of this role publishing, a
        // restart): the backoff keeps growing, as for a failed connect.
        let mut refused = false;
        // Attempts since a connection last held.
        let mut attempts = 0;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = connect(&self.address) => c,
            };
            let (up, reason) = match connected {
                Ok(stream) => {
                    if refused {
                        debug!(address = %self.address, "connected to the stats service again");
                    } else if away {
                        let dropped = self.dropped();
                        info!(address = %self.address, dropped, "stats service is back");
                    } else {
                        info!(address = %self.address, "publishing stats");
                    }
                    away = false;
                    let up = Instant::now();
                    // After refusals, a connection that holds is told of once.
                    let taken = async {
                        tokio::time::sleep(Backoff::MAX).await;
                        info!(
                            address = %self.address,
                            attempts,
                            "stats service took this publisher: publishing stats"
                        );
                        std::future::pending::<()>().await
                    };
                    // Shutdown wins even over a write the service does not read.
                    let result = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        result = self.serve(stream) => result,
                        _ = taken, if refused => unreachable!("pending"),
                    };
                    self.shared.connected.store(false, Ordering::Relaxed);
                    let Err(reason) = result;
                    (Some(up), reason)
                }
                Err(reason) => (None, reason),
            };
            let (delay, attempt) = backoff.after(up);
            refused = up.is_some() && !Backoff::held(up);
            attempts = attempt;
            if refused {
                // The 1st, 2nd, 4th, 8th... in a row.
                if attempt.is_power_of_two() {
                    warn!(
                        address = %self.address,
                        attempt,
                        "stats service closed the connection soon after the hello ({reason}): \
                         a restart, or a refusal its log explains; events are queued meanwhile"
                    );
                }
                away = true;
            } else if !away {
                warn!(
                    address = %self.address,
                    "stats service away ({reason}); events are queued until it is back"
                );
                away = true;
            } else {
                debug!(address = %self.address, "stats service still unreachable: {reason}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.shared
            .queue
            .lock()
            .expect("stats queue lock")
            .dropped()
    }

    /// Sends the hello, then queued events, then the links' states and the
    /// live snapshot, and a keepalive whenever there was nothing to send for
    /// a while; returns only on an error.
    async fn serve(&self, stream: TcpStream) -> Result<Infallible, String> {
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        let mut writer = BufWriter::new(writer);
        let secret = self.secret.as_ref().map_or(&[][..], |s| s.as_bytes());
        let hello =
            PublisherHello::new(self.role, self.started_at, self.dropped(), secret, now_ms())
                .map_err(|e| e.to_string())?;
        write(&mut writer, hello.into()).await?;
        flush(&mut writer).await?;
        self.shared.connected.store(true, Ordering::Relaxed);
        // The links' states and the live snapshot go once the queue is
        // empty, after every event queued before them, so an older state
        // cannot arrive last: at the start of every connection (an event may
        // have been lost in flight) and after one was dropped from the
        // queue. The service keeps the `since` of a state it already had,
        // and the counts of what the snapshot names.
        let (mut links_due, mut live_due) = (true, true);
        loop {
            let next = self.shared.queue.lock().expect("stats queue lock").pop();
            if next.is_none() {
                links_due |= self
                    .shared
                    .link_status_dropped
                    .swap(false, Ordering::Relaxed);
                live_due |= self.shared.lifecycle_dropped.swap(false, Ordering::Relaxed);
            }
            match next {
                Some(msg) => write(&mut writer, msg).await?,
                None if links_due || live_due => {
                    let now = now_ms();
                    if std::mem::take(&mut links_due) {
                        let states = self.shared.links.lock().expect("links lock").statuses(now);
                        for status in states {
                            write(&mut writer, status.into()).await?;
                        }
                    }
                    if std::mem::take(&mut live_due) {
                        // Copied, so publishing never waits for the
                        // snapshot to be built.
                        let live = self.shared.live.lock().expect("live set lock").clone();
                        for msg in live.snapshot(now) {
                            write(&mut writer, msg).await?;
                        }
                    }
                }
                None => {
                    flush(&mut writer).await?;
                    tokio::select! {
                        // notify_one keeps a permit: a publish between the
                        // empty pop and this wait is not missed.
                        _ = self.shared.wake.notified() => {}
                        closed = closed_by_peer(&mut reader) => return Err(closed),
                        _ = tokio::time::sleep(self.keepalive) => {
                            let keepalive = Keepalive { timestamp: now_ms() };
                            write(&mut writer, keepalive.into()).await?;
                        }
                    }
                }
            }
        }
    }
}

async fn connect(address: &str) -> Result<TcpStream, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))
}

async fn write(writer: &mut BufWriter<OwnedWriteHalf>, msg: StatsMessage) -> Result<(), String> {
    let bytes = match msg.to_frame_bytes() {
        Ok(b) => b,
        Err(e) => {
            // Cannot happen for the fixed-size stats messages; skip rather than stall.
            warn!("stats message not sent: {e}");
            return Ok(());
        }
    };
    writer
        .write_all(&bytes)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

async fn flush(writer: &mut BufWriter<OwnedWriteHalf>) -> Result<(), String> {
    writer
        .flush()
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// Resolves when the service closes the connection. It sends nothing, so
/// reading is how a closed connection is noticed while idle, before events
/// would be written into it and lost.
async fn closed_by_peer(reader: &mut OwnedReadHalf) -> String {
    let mut buf = [0u8; 256];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return "closed by the stats service".into(),
            Ok(_) => continue,
            Err(e) => return format!("read failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;

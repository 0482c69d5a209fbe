//! Publishing stats-sv2 messages to a stats service (pool-stats,
//! proxy-stats) without ever slowing mining down.
//!
//! [`StatsPublisher::publish`] only appends to a bounded in-memory queue
//! ([`StatsQueue`]: when full, the oldest event is dropped and counted). A
//! background task connects to the service, sends a `PublisherHello` first on
//! every connection, then the queued events in order; on any error it
//! reconnects with exponential backoff. Events queued while the service is
//! away are sent once it is back, up to the queue's capacity.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use stats_sv2::{LinkStatus, MessageSet, PublisherHello, StatsMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{ConfigError, Validate};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Unix time in milliseconds, the `timestamp` of every stats message.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ config

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
}

fn default_queue_capacity() -> usize {
    100_000
}

impl StatsSettings {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

/// Errors name the fields as they appear in the role configs (`stats.…`).
impl Validate for StatsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let valid = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(ConfigError::new(
                "stats.address",
                format!("`{}` is not host:port", self.address),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new(
                "stats.queue_capacity",
                "must be at least 1",
            ));
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

    /// Appends `item`, dropping the oldest item when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
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
pub struct LinkStates(HashMap<u8, bool>);

impl LinkStates {
    /// True when `up` differs from what was last recorded for `link` (or
    /// nothing was).
    pub fn changed(&mut self, link: u8, up: bool) -> bool {
        self.0.insert(link, up) != Some(up)
    }
}

// ------------------------------------------------------------------ publisher

struct Shared {
    queue: Mutex<StatsQueue<StatsMessage>>,
    links: Mutex<LinkStates>,
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(StatsQueue::new(settings.queue_capacity)),
            links: Mutex::new(LinkStates::default()),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
        });
        let task = Task {
            address: settings.address.clone(),
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
        shared
            .queue
            .lock()
            .expect("stats queue lock")
            .push(msg.into());
        shared.wake.notify_one();
    }

    /// Publishes `LinkStatus` for `link` (a [`stats_sv2::link`]) only when
    /// its state changed, so callers can report every observation.
    pub fn link_status(&self, link: u8, up: bool) {
        let Some(shared) = &self.shared else { return };
        if shared.links.lock().expect("links lock").changed(link, up) {
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
    role: u8,
    started_at: u64,
    shared: Arc<Shared>,
}

impl Task {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        // Logs once per outage: warn when the service goes away, info when it is back.
        let mut away = false;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = connect(&self.address) => c,
            };
            let reason = match connected {
                Ok(stream) => {
                    backoff = BACKOFF_MIN;
                    let dropped = self.dropped();
                    if away {
                        info!(address = %self.address, dropped, "stats service is back");
                    } else {
                        info!(address = %self.address, "publishing stats");
                    }
                    away = false;
                    // Shutdown wins even over a write the service does not read.
                    let result = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        result = self.serve(stream) => result,
                    };
                    self.shared.connected.store(false, Ordering::Relaxed);
                    let Err(reason) = result;
                    reason
                }
                Err(reason) => reason,
            };
            if !away {
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
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn dropped(&self) -> u64 {
        self.shared
            .queue
            .lock()
            .expect("stats queue lock")
            .dropped()
    }

    /// Sends the hello, then queued events; returns only on an error.
    async fn serve(&self, stream: TcpStream) -> Result<Infallible, String> {
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        let mut writer = BufWriter::new(writer);
        let hello = PublisherHello {
            role: self.role,
            started_at: self.started_at,
            dropped: self.dropped(),
            timestamp: now_ms(),
        };
        write(&mut writer, hello.into()).await?;
        flush(&mut writer).await?;
        self.shared.connected.store(true, Ordering::Relaxed);
        loop {
            let next = self.shared.queue.lock().expect("stats queue lock").pop();
            match next {
                Some(msg) => write(&mut writer, msg).await?,
                None => {
                    flush(&mut writer).await?;
                    tokio::select! {
                        // notify_one keeps a permit: a publish between the
                        // empty pop and this wait is not missed.
                        _ = self.shared.wake.notified() => {}
                        closed = closed_by_peer(&mut reader) => return Err(closed),
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

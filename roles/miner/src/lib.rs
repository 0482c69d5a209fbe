//! Hashpool's SV1 CPU miner and load generator.
//!
//! `cpu` mode: one SV1 connection to the translator, sha256d on `threads`
//! std threads (each its own nonce range and extranonce2 values), every share
//! meeting the difficulty submitted. `load` mode ([`load`]): `load.miners`
//! connections, each finding real shares on a small shared thread pool,
//! paced to `load.shares_per_second` each, or hashing at `load.hashrate`.
//!
//! The protocol and the share search are sans-IO in [`sv1`]; sockets, tasks
//! and threads live here.

pub mod config;
pub mod load;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use ::sv1::client::{self as sv1, Event, Job, Session, Share};
pub use config::{LoadConfig, MinerConfig, Mode};
pub use load::LoadControl;

const AGENT: &str = concat!("hashpool-miner/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping miner waits for answers to shares already submitted.
const DRAIN: Duration = Duration::from_secs(3);
/// Nonces hashed between checks for new work / shutdown.
const CHUNK: u32 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    #[error("miner task failed: {0}")]
    Task(String),
}

/// Counters of a running miner (all connections).
#[derive(Debug, Default)]
pub struct Stats {
    pub hashes: AtomicU64,
    pub submitted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// The reason given for the last share rejected.
    last_rejection: std::sync::Mutex<Option<String>>,
}

impl Stats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }
    pub fn last_rejection(&self) -> Option<String> {
        roles_common::lock(&self.last_rejection).clone()
    }
}

/// A running miner.
pub struct Miner {
    stats: Arc<Stats>,
    load: Arc<LoadControl>,
    task: JoinHandle<()>,
}

impl Miner {
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The hash rate of load mode's hash-paced miners (see [`load`]).
    pub fn load_control(&self) -> Arc<LoadControl> {
        self.load.clone()
    }

    /// Waits until the miner stopped (after `shutdown` was cancelled).
    pub async fn wait(self) -> Result<(), MinerError> {
        self.task.await.map_err(|e| MinerError::Task(e.to_string()))
    }
}

/// Starts the miner on the current tokio runtime.
pub fn start(config: MinerConfig, shutdown: CancellationToken) -> Miner {
    let stats = Arc::new(Stats::default());
    let load = Arc::new(LoadControl::default());
    let (s, control) = (stats.clone(), load.clone());
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let logger = tokio::spawn(log_stats(
            s.clone(),
            config.stats_interval_secs,
            shutdown.clone(),
        ));
        match config.mode {
            Mode::Cpu => run_cpu(config, s.clone(), shutdown).await,
            Mode::Load => load::run_load(config, s.clone(), control, shutdown).await,
        }
        logger.abort();
        info!(
            "miner: stopped; {} hashes in {:.1} s ({} average), shares accepted {}, rejected {}",
            s.hashes(),
            started.elapsed().as_secs_f64(),
            format_hashrate(s.hashes() as f64 / started.elapsed().as_secs_f64().max(1e-9)),
            s.accepted(),
            s.rejected()
        );
    });
    Miner { stats, load, task }
}

/// Runs the miner until `shutdown` is cancelled.
pub async fn run(config: MinerConfig, shutdown: CancellationToken) -> Result<(), MinerError> {
    info!(
        "miner: {:?} mode against {} as {}",
        config.mode,
        config.address(),
        config.username
    );
    start(config, shutdown).wait().await
}

/// "12.3 kH/s".
pub fn format_hashrate(hashes_per_sec: f64) -> String {
    let units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s"];
    let mut v = hashes_per_sec;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

async fn log_stats(stats: Arc<Stats>, interval_secs: u64, shutdown: CancellationToken) {
    if interval_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(interval_secs));
    tick.tick().await;
    let (mut last, mut at) = (stats.hashes(), Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (now_hashes, now) = (stats.hashes(), Instant::now());
        let rate = (now_hashes - last) as f64 / now.duration_since(at).as_secs_f64();
        info!(
            "hashrate {}, shares accepted {}, rejected {}",
            format_hashrate(rate),
            stats.accepted(),
            stats.rejected()
        );
        (last, at) = (now_hashes, now);
    }
}

/// Sleeps for the backoff (or until shutdown); false on shutdown.
async fn backoff(delay: &mut Duration, shutdown: &CancellationToken) -> bool {
    let d = *delay;
    *delay = (*delay * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// What a connection knows about its work.
#[derive(Debug, Default)]
struct Conn {
    extranonce1: Option<Vec<u8>>,
    extranonce2_size: usize,
    difficulty: Option<f64>,
    version_mask: Option<u32>,
    job: Option<Job>,
}

impl Conn {
    fn work(&self) -> Option<Work> {
        Some(Work {
            job: self.job.clone()?,
            extranonce1: self.extranonce1.clone()?,
            extranonce2_size: self.extranonce2_size,
            target: sv1::target_from_difficulty(self.difficulty.unwrap_or(1.0)),
            version_mask: self.version_mask,
        })
    }

    /// Applies a work-related event; true when the work changed.
    fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Subscribed {
                extranonce1,
                extranonce2_size,
            }
            | Event::Extranonce {
                extranonce1,
                extranonce2_size,
            } => {
                self.extranonce1 = Some(extranonce1.clone());
                self.extranonce2_size = *extranonce2_size;
            }
            Event::VersionMask(mask) => self.version_mask = *mask,
            Event::NewJob(job) => self.job = Some(job.clone()),
            Event::Difficulty(d) => self.difficulty = Some(*d),
            _ => return false,
        }
        true
    }
}

/// Everything a hashing thread needs.
#[derive(Debug, Clone)]
struct Work {
    job: Job,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    target: [u8; 32],
    version_mask: Option<u32>,
}

impl Work {
    /// The header template for work unit `unit` (its extranonce2 and version bits).
    fn template(&self, unit: u64) -> ([u8; 80], Vec<u8>, Option<u32>) {
        let en2 = sv1::extranonce2(unit, self.extranonce2_size);
        let (version, bits) = match self.version_mask {
            Some(mask) if mask != 0 => {
                let bits = ((unit as u32) << mask.trailing_zeros()) & mask;
                ((self.job.version & !mask) | bits, Some(bits))
            }
            _ => (self.job.version, None),
        };
        let header = self
            .job
            .header(&self.extranonce1, &en2, self.job.ntime, 0, version);
        (header, en2, bits)
    }

    fn share(&self, en2: Vec<u8>, nonce: u32, version_bits: Option<u32>) -> Share {
        Share {
            job_id: self.job.job_id.clone(),
            extranonce2: en2,
            ntime: self.job.ntime,
            nonce,
            version_bits,
        }
    }
}

/// Connects and sends configure / subscribe / authorize.
async fn open(
    config: &MinerConfig,
    user: &str,
    session: &mut Session,
) -> std::io::Result<(ServerLines, tokio::net::tcp::OwnedWriteHalf)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(config.address()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut hello = String::new();
    if config.version_rolling {
        hello += &session.configure_version_rolling();
    }
    hello += &session.subscribe(AGENT);
    hello += &session.authorize(user, &config.password);
    w.write_all(hello.as_bytes()).await?;
    Ok((ServerLines::new(r), w))
}

/// The longest line taken from the server: a mining.notify carries a
/// coinbase of at most 64 KiB in hex, and a few merkle branches.
const MAX_SERVER_LINE: usize = 256 * 1024;

/// Lines from the server, each at most [`MAX_SERVER_LINE`] bytes: one that
/// never ends a line cannot make the miner buffer without bound.
pub(crate) struct ServerLines(FramedRead<tokio::net::tcp::OwnedReadHalf, LinesCodec>);

impl ServerLines {
    fn new(read: tokio::net::tcp::OwnedReadHalf) -> Self {
        Self(FramedRead::new(
            read,
            LinesCodec::new_with_max_length(MAX_SERVER_LINE),
        ))
    }

    /// The next line; an error once the stream ended. Cancel safe.
    pub(crate) async fn next_line(&mut self) -> Result<String, String> {
        match self.0.next().await {
            Some(Ok(line)) => Ok(line),
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => Err(format!(
                "the server sent a line longer than {MAX_SERVER_LINE} bytes"
            )),
            Some(Err(LinesCodecError::Io(e))) => Err(format!("read failed: {e}")),
            None => Err("closed by the server".into()),
        }
    }
}

// ---------------------------------------------------------------- cpu mode

struct Shared {
    work: Mutex<Option<Arc<Work>>>,
    generation: AtomicU64,
    next_unit: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn set_work(&self, work: Option<Work>) {
        *roles_common::lock(&self.work) = work.map(Arc::new);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> (u64, Option<Arc<Work>>) {
        let w = roles_common::lock(&self.work).clone();
        (self.generation.load(Ordering::SeqCst), w)
    }
}

/// One hashing thread: nonces `[start, end)` of every work unit it takes.
fn hash_thread(
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    shares: mpsc::UnboundedSender<Share>,
    start: u32,
    end: u32,
) {
    while !shared.stop.load(Ordering::Relaxed) {
        let (generation, work) = shared.current();
        let Some(work) = work else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let unit = shared.next_unit.fetch_add(1, Ordering::Relaxed);
        let (header, en2, bits) = work.template(unit);
        let mut nonce = start;
        while nonce < end {
            if shared.stop.load(Ordering::Relaxed)
                || shared.generation.load(Ordering::Relaxed) != generation
            {
                break;
            }
            let chunk_end = nonce.saturating_add(CHUNK).min(end);
            let (found, hashes) = sv1::scan(&header, nonce, chunk_end, &work.target);
            stats.hashes.fetch_add(hashes, Ordering::Relaxed);
            match found {
                Some((n, _)) => {
                    let _ = shares.send(work.share(en2.clone(), n, bits));
                    nonce = n.saturating_add(1);
                    if n == u32::MAX {
                        break;
                    }
                }
                None => nonce = chunk_end,
            }
        }
    }
}

async fn run_cpu(config: MinerConfig, stats: Arc<Stats>, shutdown: CancellationToken) {
    let threads = config.thread_count();
    info!("miner: hashing on {threads} thread(s)");
    let shared = Arc::new(Shared {
        work: Mutex::new(None),
        generation: AtomicU64::new(0),
        next_unit: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = vec![];
    for i in 0..threads as u64 {
        let start = ((1u64 << 32) * i / threads as u64) as u32;
        let end = ((1u64 << 32) * (i + 1) / threads as u64).min(u32::MAX as u64) as u32;
        let (shared, stats, tx) = (shared.clone(), stats.clone(), tx.clone());
        match std::thread::Builder::new()
            .name(format!("miner-hash-{i}"))
            .spawn(move || hash_thread(shared, stats, tx, start, end))
        {
            Ok(h) => handles.push(h),
            Err(e) => warn!("miner: cannot start hashing thread {i}: {e}"),
        }
    }
    drop(tx);
    let mut delay = Duration::from_secs(1);
    loop {
        match cpu_session(&config, &shared, &stats, &mut rx, &shutdown).await {
            Ok(true) => delay = Duration::from_secs(1),
            Ok(false) => {}
            Err(e) => warn!("miner: connection to {}: {e}", config.address()),
        }
        shared.set_work(None);
        while rx.try_recv().is_ok() {}
        if shutdown.is_cancelled() || !backoff(&mut delay, &shutdown).await {
            break;
        }
        info!("miner: reconnecting to {}", config.address());
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await;
}

/// One connection in cpu mode; Ok(true) if it got work before it ended.
async fn cpu_session(
    config: &MinerConfig,
    shared: &Shared,
    stats: &Stats,
    shares: &mut mpsc::UnboundedReceiver<Share>,
    shutdown: &CancellationToken,
) -> Result<bool, String> {
    let mut session = Session::new();
    let (mut lines, mut writer) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(false),
        r = open(config, &config.username, &mut session) => r.map_err(|e| e.to_string())?,
    };
    info!("miner: connected to {}", config.address());
    let mut conn = Conn::default();
    let mut got_work = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                shared.set_work(None);
                drain(&mut session, &mut lines, stats).await;
                return Ok(got_work);
            }
            line = lines.next_line() => {
                let line = line?;
                let event = session.handle_line(&line).map_err(|e| e.to_string())?;
                if let Event::Authorized(false) = event {
                    return Err(format!("`{}` not authorized", config.username));
                }
                count(&event, stats);
                if conn.apply(&event) {
                    if let Some(work) = conn.work() {
                        if !got_work {
                            info!("miner: got work, hashing");
                        }
                        got_work = true;
                        debug!("miner: new work, job {}", work.job.job_id);
                        shared.set_work(Some(work));
                    }
                }
            }
            Some(share) = shares.recv() => {
                // shares found on work replaced since are not sent
                if conn.job.as_ref().map(|j| &j.job_id) != Some(&share.job_id) {
                    continue;
                }
                let line = session.submit(&config.username, &share);
                writer.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
                stats.submitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn count(event: &Event, stats: &Stats) {
    match event {
        Event::Accepted => {
            let n = stats.accepted.fetch_add(1, Ordering::Relaxed) + 1;
            debug!("miner: share accepted ({n})");
        }
        Event::Rejected(reason) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            *roles_common::lock(&stats.last_rejection) = Some(reason.to_string());
            warn!("miner: share rejected: {reason}");
        }
        _ => {}
    }
}

/// On shutdown: waits (bounded) for the answers to shares already submitted,
/// so the counts match what the server accepted.
async fn drain(session: &mut Session, lines: &mut ServerLines, stats: &Stats) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    while session.pending_submits() > 0 {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(line)) => {
                if let Ok(event) = session.handle_line(&line) {
                    count(&event, stats);
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_line_longer_than_the_limit_ends_the_session() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"id\":1}\n").await.unwrap();
            // Never a newline again.
            let junk = vec![b'x'; 64 * 1024];
            while stream.write_all(&junk).await.is_ok() {}
        });
        let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut lines = ServerLines::new(read);
        assert_eq!(lines.next_line().await.unwrap(), "{\"id\":1}");
        let ended = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("ends at the limit, not when the server stops");
        assert!(ended.unwrap_err().contains("longer than"));
        drop((lines, write));
        server.await.unwrap();
    }

    #[test]
    fn hashrate_is_human_readable() {
        assert_eq!(format_hashrate(950.0), "950.00 H/s");
        assert_eq!(format_hashrate(1_234_000.0), "1.23 MH/s");
    }

    #[test]
    fn work_units_differ_in_extranonce2_and_version_bits() {
        let mut s = Session::new();
        let line = serde_json::json!({"method": "mining.notify", "params": [
            "1", "00".repeat(32), "01", "02", [], "20000000", "207fffff", "00000001", true
        ]})
        .to_string();
        let Event::NewJob(job) = s.handle_line(&line).unwrap() else {
            panic!()
        };
        let work = Work {
            job,
            extranonce1: vec![1],
            extranonce2_size: 4,
            target: sv1::target_from_difficulty(1e-9),
            version_mask: Some(0x1fffe000),
        };
        let (h1, e1, b1) = work.template(1);
        let (h2, e2, b2) = work.template(2);
        assert_ne!(h1, h2);
        assert_ne!(e1, e2);
        assert_eq!((b1, b2), (Some(0x2000), Some(0x4000)));
        assert_eq!(&h2[0..4], &0x2000_4000u32.to_le_bytes());
        // an easy target: found at once, and the hash really meets it
        let (found, _) = sv1::scan(&h1, 0, 1000, &work.target);
        let (nonce, hash) = found.unwrap();
        let mut header = h1;
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        assert_eq!(sv1::header_hash_be(&header), hash);
        assert!(sv1::meets(&hash, &work.target));
    }
}

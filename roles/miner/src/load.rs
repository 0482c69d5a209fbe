//! `load` mode: `load.miners` SV1 connections, each finding real shares at
//! the difficulty the translator sets, on a small shared thread pool.
//!
//! A simulated miner is paced either by shares (`load.shares_per_second`:
//! it searches until it finds one, whatever the difficulty) or, with
//! `load.hashrate` set, by hashes: it hashes that many nonces a second and
//! submits every share they contain, like a real device of that speed. The
//! hash rate can be changed while running ([`LoadControl`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{backoff, count, drain, open, Conn, MinerConfig, Stats, Work};
use ::sv1::client::{self as sv1, Event, Session, Share};

/// Nonces a share-paced search tries before giving up on this tick.
const SEARCH_LIMIT: u32 = 1 << 22;
/// How often a hash-paced miner hashes its next slice.
const HASH_TICK: Duration = Duration::from_millis(100);

/// The hash rate of every hash-paced simulated miner, changeable at run time.
#[derive(Debug, Default)]
pub struct LoadControl {
    /// f64 bits; 0 = paced by shares.
    hashrate: AtomicU64,
}

impl LoadControl {
    pub fn set_hashrate(&self, hashes_per_second: f64) {
        self.hashrate
            .store(hashes_per_second.max(0.0).to_bits(), Ordering::Relaxed);
    }

    pub fn hashrate(&self) -> f64 {
        f64::from_bits(self.hashrate.load(Ordering::Relaxed))
    }
}

pub(crate) async fn run_load(
    config: MinerConfig,
    stats: Arc<Stats>,
    control: Arc<LoadControl>,
    shutdown: CancellationToken,
) {
    let threads = config.thread_count().min(4);
    let pool = Arc::new(Semaphore::new(threads));
    control.set_hashrate(config.load.hashrate);
    let config = Arc::new(config);
    if config.load.hashrate > 0.0 {
        info!(
            "miner: load mode, {} miners hashing at {} each, on {threads} thread(s)",
            config.load.miners,
            crate::format_hashrate(config.load.hashrate)
        );
    } else {
        info!(
            "miner: load mode, {} miners at {} shares/s each, searching on {threads} thread(s)",
            config.load.miners, config.load.shares_per_second
        );
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..config.load.miners {
        let user = if config.username.contains('.') {
            format!("{}-{i}", config.username)
        } else {
            format!("{}.load{i}", config.username)
        };
        let miner = LoadMiner {
            config: config.clone(),
            user,
            pool: pool.clone(),
            stats: stats.clone(),
            control: control.clone(),
        };
        set.spawn(miner.run(shutdown.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// One simulated miner.
struct LoadMiner {
    config: Arc<MinerConfig>,
    user: String,
    pool: Arc<Semaphore>,
    stats: Arc<Stats>,
    control: Arc<LoadControl>,
}

impl LoadMiner {
    async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.session(&shutdown).await {
                Ok(true) => delay = Duration::from_secs(1),
                Ok(false) => {}
                Err(e) => warn!("miner {}: {e}", self.user),
            }
            if shutdown.is_cancelled() || !backoff(&mut delay, &shutdown).await {
                return;
            }
        }
    }

    /// One connection; `Ok(true)` when it got work before it ended.
    async fn session(&self, shutdown: &CancellationToken) -> Result<bool, String> {
        let mut session = Session::new();
        let (mut lines, mut writer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            r = open(&self.config, &self.user, &mut session) => r.map_err(|e| e.to_string())?,
        };
        let mut conn = Conn::default();
        let mut work: Option<Arc<Work>> = None;
        let mut unit = 0u64;
        let mut tick = tokio::time::interval(self.tick_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    drain(&mut session, &mut lines, &self.stats).await;
                    return Ok(work.is_some());
                }
                line = lines.next_line() => {
                    let line = line?;
                    let event = session.handle_line(&line).map_err(|e| e.to_string())?;
                    if let Event::Authorized(false) = event {
                        return Err(format!("`{}` not authorized", self.user));
                    }
                    count(&event, &self.stats);
                    if conn.apply(&event) {
                        work = conn.work().map(Arc::new);
                    }
                }
                _ = tick.tick(), if work.is_some() => {
                    let Some(w) = work.clone() else { continue };
                    unit += 1;
                    for share in self.mine(w, unit).await? {
                        // The job may have changed during the search.
                        if conn.job.as_ref().map(|j| &j.job_id) != Some(&share.job_id) {
                            continue;
                        }
                        let line = session.submit(&self.user, &share);
                        writer.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
                        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn tick_interval(&self) -> Duration {
        if self.control.hashrate() > 0.0 {
            HASH_TICK
        } else {
            Duration::from_secs_f64(1.0 / self.config.load.shares_per_second)
        }
    }

    /// One tick's hashing of work unit `unit`: every share in the slice of
    /// the hash rate (hash-paced), or the first share found (share-paced).
    async fn mine(&self, w: Arc<Work>, unit: u64) -> Result<Vec<Share>, String> {
        let hashrate = self.control.hashrate();
        let (budget, all) = if hashrate > 0.0 {
            let slice = hashrate * HASH_TICK.as_secs_f64();
            (slice.round().clamp(1.0, u32::MAX as f64) as u32, true)
        } else {
            (SEARCH_LIMIT, false)
        };
        let permit = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (shares, hashes) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (header, en2, bits) = w.template(unit);
            let (mut shares, mut hashes, mut start) = (Vec::new(), 0u64, 0u32);
            while start < budget {
                let (found, done) = sv1::scan(&header, start, budget, &w.target);
                hashes += done;
                let Some((nonce, _)) = found else { break };
                shares.push(w.share(en2.clone(), nonce, bits));
                if !all {
                    break;
                }
                start = nonce + 1;
            }
            (shares, hashes)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.stats.hashes.fetch_add(hashes, Ordering::Relaxed);
        Ok(shares)
    }
}

//! The SV2 load generator of the pool benchmarks: N extended channels (one
//! per Noise connection) submitting valid shares to any pool, named by its
//! address and authority key, with a window of shares in flight per
//! channel; and the CPU and memory of a process, from /proc.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio_util::sync::CancellationToken;

use crate::{Incoming, MiningClient};

/// The pool a load runs against, and how its channels open.
#[derive(Debug, Clone)]
pub struct LoadTarget {
    pub address: SocketAddr,
    /// The pool's Noise authority public key (base58).
    pub authority_key: String,
    pub user_identity: String,
    /// Declared per channel: with the pool's shares per minute it sets how
    /// many hashes a share takes.
    pub nominal_hashrate: f32,
    /// Negotiates the ehash extension, as a translator does: the pool then
    /// keeps each share's notification until one of its key's channels
    /// acknowledges it.
    pub ehash: bool,
}

/// What one load step measured.
#[derive(Debug, Clone)]
pub struct LoadFigures {
    pub accepted_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// How many shares were refused with each error code, over the whole
    /// run (warm-up included).
    pub refusals: BTreeMap<String, u64>,
}

impl LoadFigures {
    /// Shares refused over the whole run (warm-up included).
    pub fn rejected(&self) -> u64 {
        self.refusals.values().sum()
    }
}

/// Runs `connections` channels against `target` with `window` shares in
/// flight each: they open (32 handshakes at a time), warm up one second,
/// then are measured for `measure`. `during` runs while measuring (to read
/// the pool's CPU, say). Panics if a connection is lost.
pub async fn run_load<F: std::future::Future<Output = ()>>(
    target: &LoadTarget,
    connections: usize,
    window: usize,
    measure: Duration,
    during: impl FnOnce(Duration) -> F,
) -> LoadFigures {
    let accepted = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let refusals = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(connections.max(1));
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let counters = (accepted.clone(), measuring.clone());
        let (latencies, refusals, stop, ready_tx, gate) = (
            latencies.clone(),
            refusals.clone(),
            stop.clone(),
            ready_tx.clone(),
            gate.clone(),
        );
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = {
                let _permit = gate.acquire().await.expect("gate");
                open_channel(&target).await
            };
            let _ = ready_tx.send(()).await;
            drop(ready_tx);
            let local = submit_until_stopped(&mut client, window, counters, &stop).await;
            latencies.lock().expect("latencies").extend(local.latencies);
            let mut refusals = refusals.lock().expect("refusals");
            for (code, n) in local.refusals {
                *refusals.entry(code).or_default() += n;
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..connections {
        ready_rx.recv().await.expect("all connections ready");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    during(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies.sort();
    let percentile = |p: f64| match latencies.len() {
        0 => f64::NAN,
        n => latencies[((n as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0,
    };
    let refusals = std::mem::take(&mut *refusals.lock().expect("refusals"));
    LoadFigures {
        accepted_per_sec: accepted.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        refusals,
    }
}

/// Connects (a busy pool may let a handshake time out: tried up to ten
/// times) and opens a channel.
async fn open_channel(target: &LoadTarget) -> MiningClient {
    let mut attempt = 0;
    let mut client = loop {
        attempt += 1;
        match MiningClient::connect(target.address, &target.authority_key).await {
            Ok(client) => break client,
            Err(e) if attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                eprintln!("connect attempt {attempt} failed ({e:?}); trying again");
            }
            Err(e) => panic!("connect: {e:?}"),
        }
    };
    client.setup_connection(0).await;
    if target.ehash {
        client
            .request_extensions(vec![ehash_ext_sv2::EHASH_EXTENSION_TYPE])
            .await;
    }
    let channel = client
        .open_extended(&target.user_identity, target.nominal_hashrate, 8)
        .await
        .expect("channel");
    client.wait_for_work(channel).await;
    client
}

/// What one connection saw.
#[derive(Default)]
struct Local {
    /// Success latencies seen while measuring.
    latencies: Vec<Duration>,
    /// Refusals by error code, over the whole run.
    refusals: BTreeMap<String, u64>,
}

/// Keeps `window` shares in flight until `stop`.
async fn submit_until_stopped(
    client: &mut MiningClient,
    window: usize,
    (accepted, measuring): (Arc<AtomicU64>, Arc<AtomicBool>),
    stop: &CancellationToken,
) -> Local {
    let channel = *client.channels.keys().next().expect("one channel");
    let mut in_flight: HashMap<u32, Instant> = HashMap::new();
    let mut local = Local::default();
    loop {
        while in_flight.len() < window {
            let share = client.valid_share(channel, false);
            let seq = client.submit(channel, &share).await;
            in_flight.insert(seq, Instant::now());
        }
        let msg = tokio::select! {
            _ = stop.cancelled() => return local,
            msg = client.recv() => msg,
        };
        match msg {
            Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s)))) => {
                let acked = take_acknowledged(&mut in_flight, s.last_sequence_number);
                if measuring.load(Ordering::Relaxed) {
                    accepted.fetch_add(acked.len() as u64, Ordering::Relaxed);
                    local.latencies.extend(acked);
                }
            }
            Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))) => {
                in_flight.remove(&e.sequence_number);
                let code = e.error_code.as_utf8_or_hex();
                *local.refusals.entry(code).or_default() += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("connection lost: {e}"),
        }
    }
}

/// The shares a `SubmitSharesSuccess` up to `last_sequence_number`
/// acknowledges, taken from those in flight (sequence number -> when sent):
/// one success may acknowledge several, every one up to its last sequence
/// number, as SV2 acknowledges shares in order. How long each waited.
pub fn take_acknowledged(
    in_flight: &mut HashMap<u32, Instant>,
    last_sequence_number: u32,
) -> Vec<Duration> {
    let mut waited = Vec::new();
    in_flight.retain(|seq, sent| {
        let acked = *seq <= last_sequence_number;
        if acked {
            waited.push(sent.elapsed());
        }
        !acked
    });
    waited
}

/// A process's CPU time (user + system, clock ticks of 1/100 s) and its
/// resident and peak resident memory (KiB), from /proc; zeros when gone.
pub fn process_usage(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses): state is field 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12), kib("VmRSS:"), kib("VmHWM:"))
}

/// Clock ticks per second of [`process_usage`] (USER_HZ on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_takes_every_share_in_flight_up_to_its_sequence_number() {
        let sent = Instant::now();
        let mut in_flight: HashMap<u32, Instant> =
            [1, 2, 3, 5].into_iter().map(|seq| (seq, sent)).collect();
        assert_eq!(take_acknowledged(&mut in_flight, 3).len(), 3);
        assert_eq!(in_flight.keys().copied().collect::<Vec<_>>(), vec![5]);
        assert!(take_acknowledged(&mut in_flight, 4).is_empty());
        assert_eq!(take_acknowledged(&mut in_flight, 5).len(), 1);
        assert!(in_flight.is_empty());
    }
}

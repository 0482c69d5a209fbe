//! Load generator: N SV2 extended channels (one per Noise connection)
//! submitting valid low-difficulty shares to a real pool, at N = 1, 100 and
//! 1000. Prints accepted shares/s, p50/p99 SubmitShares.Success latency and
//! the pool's CPU and RSS. Asserts nothing about timings.
//!
//! The pool (with devnet-tp, whose target is never met) runs in a child
//! process (this same binary, re-executed) so its CPU and RSS can be read
//! from /proc/<pid> apart from the load generator's.
//!
//! Run: `cargo bench -p hashpool-tests --bench pool_load`
//! Env: POOL_LOAD_SECS (seconds measured per step, default 8),
//!      POOL_LOAD_STEPS (default "1,100,1000"), POOL_LOAD_WINDOW (shares in
//!      flight per channel, default 4).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashpool_tests::*;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "HASHPOOL_POOL_LOAD_CHILD";
/// Shares per minute the pool aims each channel at: high, so that one
/// channel's duplicate-detection budget (2 x 600 x spm, at most 2^20) lasts
/// the whole run, and shares are cheap to find.
const SHARES_PER_MINUTE: f32 = 100_000.0;
/// ~16 hashes per share at that rate.
const NOMINAL_HASHRATE: f32 = 16.0 * SHARES_PER_MINUTE / 60.0;

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        run_pool_child();
        return;
    }
    // `cargo bench` passes --bench; nothing else is accepted.
    let secs: u64 = env_or("POOL_LOAD_SECS", 8);
    let window: usize = env_or("POOL_LOAD_WINDOW", 4);
    let steps: Vec<usize> = std::env::var("POOL_LOAD_STEPS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pool process");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("pool process output").expect("line");
        if let Some(rest) = line.strip_prefix("READY ") {
            break rest.parse().expect("address");
        }
    };

    println!("pool_load: pool pid {pid} at {addr}; {secs} s per step, {window} shares in flight per channel");
    println!(
        "{:>11} {:>14} {:>10} {:>10} {:>12} {:>10} {:>10}",
        "connections", "accepted/s", "p50 ms", "p99 ms", "pool CPU %", "RSS MB", "rejected"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for n in steps {
        let r = runtime.block_on(step(addr, n, window, Duration::from_secs(secs), pid));
        println!(
            "{:>11} {:>14.0} {:>10.2} {:>10.2} {:>12.1} {:>10.1} {:>10}",
            n, r.rate, r.p50_ms, r.p99_ms, r.cpu_percent, r.rss_mb, r.rejected
        );
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The child: devnet-tp and the pool until stdin closes.
fn run_pool_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tp, shutdown) = start_tp(dir.path(), NBITS_NEVER).await;
        let mut config = pool_config(tp.local_addr());
        config.shares_per_minute = SHARES_PER_MINUTE;
        let pool = pool::start(config, shutdown.clone(), Default::default())
            .await
            .expect("pool");
        println!("READY {}", pool.local_addr());
        let _ = std::io::stdout().flush();
        // Parent gone (stdin closed) -> stop.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .ok();
        shutdown.cancel();
        pool.wait().await;
        tp.wait().await;
    });
}

struct StepResult {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_percent: f64,
    rss_mb: f64,
    rejected: u64,
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

const TICKS_PER_SEC: f64 = 100.0;

async fn step(
    addr: SocketAddr,
    n: usize,
    window: usize,
    measure: Duration,
    pid: u32,
) -> StepResult {
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));

    // Open the connections a few at a time (handshakes are CPU work on both sides).
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (accepted, rejected, measuring, latencies, stop, ready_tx, gate) = (
            accepted.clone(),
            rejected.clone(),
            measuring.clone(),
            latencies.clone(),
            stop.clone(),
            ready_tx.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = {
                let _permit = gate.acquire().await.expect("gate");
                let mut client = MiningClient::connect(addr, POOL_PUBLIC_KEY)
                    .await
                    .expect("connect");
                client.setup_connection(0).await;
                let channel = client
                    .open_extended(IDENTITY, NOMINAL_HASHRATE, 8)
                    .await
                    .expect("channel");
                client.wait_for_work(channel).await;
                client
            };
            let channel = *client.channels.keys().next().expect("one channel");
            let _ = ready_tx.send(()).await;
            drop(ready_tx);
            let mut in_flight: HashMap<u32, Instant> = HashMap::new();
            let mut local = Vec::new();
            loop {
                while in_flight.len() < window {
                    let share = client.valid_share(channel, false);
                    let seq = client.submit(channel, &share).await;
                    in_flight.insert(seq, Instant::now());
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = client.conn.recv() => match msg {
                        Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s)))) => {
                            if let Some(sent) = in_flight.remove(&s.last_sequence_number) {
                                if measuring.load(Ordering::Relaxed) {
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                    local.push(sent.elapsed());
                                }
                            }
                        }
                        Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))) => {
                            in_flight.remove(&e.sequence_number);
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => panic!("connection lost: {e}"),
                    }
                }
            }
            latencies.lock().expect("latencies").extend(local);
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.expect("all connections ready");
    }

    // Warm up one second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_ticks(pid);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(pid);
    let rss = rss_mb(pid);
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().expect("latencies"));
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1000.0
    };
    StepResult {
        rate: accepted.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_percent: (cpu_after - cpu_before) as f64 / TICKS_PER_SEC / elapsed * 100.0,
        rss_mb: rss,
        rejected: rejected.load(Ordering::Relaxed),
    }
}

const IDENTITY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798.load";

//! Load generator: N SV2 extended channels (one per Noise connection)
//! submitting valid low-difficulty shares to a real pool, at N = 1, 100 and
//! 1000. Prints accepted shares/s, p50/p99 SubmitShares.Success latency and
//! the pool's CPU and RSS. Asserts nothing about timings.
//!
//! By default the pool (with devnet-tp, whose target is never met) runs in
//! a child process (this same binary, re-executed) so its CPU and RSS can
//! be read from /proc/<pid> apart from the load generator's. With
//! POOL_LOAD_TARGET it loads any pool instead (SRI's pool_sv2, for
//! bench/side-by-side.sh): that pool must aim at SHARES_PER_MINUTE.
//!
//! Run: `cargo bench -p hashpool-tests --bench pool_load`
//! Env: POOL_LOAD_SECS (seconds measured per step, default 8),
//!      POOL_LOAD_STEPS (default "1,100,1000"), POOL_LOAD_WINDOW (shares in
//!      flight per channel, default 4), POOL_LOAD_TARGET (a pool's address),
//!      POOL_LOAD_AUTHORITY_KEY (its authority key, default the devnet's),
//!      POOL_LOAD_PID (its process, for CPU and RSS).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hashpool_tests::*;

const CHILD_ENV: &str = "HASHPOOL_POOL_LOAD_CHILD";
/// Shares per minute the pool aims each channel at: high, so that one
/// channel's duplicate-detection budget (2 x 600 x spm, at most 2^20) lasts
/// the whole run, and shares are cheap to find.
const SHARES_PER_MINUTE: f32 = 100_000.0;
/// ~16 hashes per share at that rate.
const NOMINAL_HASHRATE: f32 = 16.0 * SHARES_PER_MINUTE / 60.0;
const IDENTITY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798.load";

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
    let target = std::env::var("POOL_LOAD_TARGET").ok().map(|a| {
        let address: SocketAddr = a.parse().expect("POOL_LOAD_TARGET: an address");
        (
            address,
            std::env::var("POOL_LOAD_PID")
                .ok()
                .and_then(|p| p.parse().ok()),
        )
    });
    let (address, pid, child) = match target {
        Some((address, pid)) => (address, pid, None),
        None => {
            let (address, pid, child) = spawn_pool_child();
            (address, Some(pid), Some(child))
        }
    };
    let target = LoadTarget {
        address,
        authority_key: std::env::var("POOL_LOAD_AUTHORITY_KEY")
            .unwrap_or_else(|_| POOL_PUBLIC_KEY.to_string()),
        user_identity: IDENTITY.to_string(),
        nominal_hashrate: NOMINAL_HASHRATE,
        ehash: false,
    };
    println!(
        "pool_load: pool at {address} (pid {pid:?}); {secs} s per step, {window} shares in \
         flight per channel"
    );
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
        run_step(&runtime, &target, pid, (n, window), secs);
    }
    if let Some(mut child) = child {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// One step: `n` connections with `window` shares in flight each loading
/// `target` (its process `pid`) for `secs`; prints a row.
fn run_step(
    runtime: &tokio::runtime::Runtime,
    target: &LoadTarget,
    pid: Option<u32>,
    (n, window): (usize, usize),
    secs: u64,
) {
    let usage = || pid.map_or((0, 0, 0), process_usage);
    let mut cpu_percent = f64::NAN;
    let figures = runtime.block_on(run_load(
        target,
        n,
        window,
        Duration::from_secs(secs),
        |measure| {
            let cpu_percent = &mut cpu_percent;
            async move {
                let before = usage().0;
                tokio::time::sleep(measure).await;
                let ticks = usage().0 - before;
                *cpu_percent = ticks as f64 / TICKS_PER_SEC / measure.as_secs_f64() * 100.0;
            }
        },
    ));
    println!(
        "{:>11} {:>14.0} {:>10.2} {:>10.2} {:>12.1} {:>10.1} {:>10}",
        n,
        figures.accepted_per_sec,
        figures.p50_ms,
        figures.p99_ms,
        cpu_percent,
        usage().1 as f64 / 1024.0,
        figures.rejected()
    );
    if !figures.refusals.is_empty() {
        println!("{:>11} refused: {:?}", "", figures.refusals);
    }
}

/// Our pool (and devnet-tp) in a child process: its address and pid.
// The child goes back to the caller, which waits for it; a panic here
// ends the benchmark anyway.
#[allow(clippy::zombie_processes)]
fn spawn_pool_child() -> (SocketAddr, u32, Child) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pool process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = lines.next().expect("pool process output").expect("line");
        if let Some(rest) = line.strip_prefix("READY ") {
            return (rest.parse().expect("address"), child.id(), child);
        }
    }
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
        pool.wait().await.check("pool");
        tp.wait().await;
    });
}

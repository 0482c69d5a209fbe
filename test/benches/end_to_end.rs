//! End to end as deployed: devnet-tp, mint, pool and translator each in its
//! own process (the shipped config files on free ports, file SQLite), and
//! the load generator submitting real shares through the translator. Prints
//! every 10 s the shares accepted, quotes notified and minted and the
//! backlog between them; then accepted shares/s, share-to-notification
//! latency (p50/p99, and the p99 of each 10 s of shares) and
//! share-to-minted-ehash latency (p50/p99), and CPU and RSS per role.
//! Asserts only that every accepted share was minted.
//!
//!     bench/end-to-end.sh [miners] [shares/s per miner] [seconds] [hashes per share]
//!     JD=1 bench/end-to-end.sh ...   (through jd-client: declared jobs)
//!
//! Hashes per share (default 20,000, the tests' shipped configs) sets the
//! translator's difficulty: the generator finds every share by real proof
//! of work on the same cores, so cheaper shares reach higher rates (the
//! pool's and mint's unit_bits follow, so a share stays worth 16 to 31
//! ehash).
//!
//! Latency: the translator's stats events (to an in-process sink) give each
//! share's acceptance time and each quote's record and mint times; shares
//! and quotes pair in order (the pool and mint keep it), so share i is
//! minted when quote i is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use stats_sv2::StatsMessage;
use tokio_util::sync::CancellationToken;

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Quotes the translator was notified of, and those it minted, so far.
fn quotes_seen(events: &[StatsMessage]) -> (usize, usize) {
    let (mut notified, mut minted) = (0, 0);
    for event in events {
        if let StatsMessage::EhashQuote(q) = event {
            if q.minted {
                minted += 1;
            } else {
                notified += 1;
            }
        }
    }
    (notified, minted)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The p99 (ms) of the latencies of the shares accepted in each window of
/// [`PROGRESS_EVERY`]: whether the tail grows with the run or comes in bursts.
fn p99_by_window(latencies: &[(u64, f64)]) -> Vec<String> {
    let Some(first) = latencies.iter().map(|(at, _)| *at).min() else {
        return Vec::new();
    };
    let window_ms = PROGRESS_EVERY.as_millis() as u64;
    let mut windows: Vec<Vec<f64>> = Vec::new();
    for (at, ms) in latencies {
        let i = ((at - first) / window_ms) as usize;
        if windows.len() <= i {
            windows.resize(i + 1, Vec::new());
        }
        windows[i].push(*ms);
    }
    windows
        .iter_mut()
        .map(|w| {
            w.sort_by(f64::total_cmp);
            if w.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", percentile(w, 0.99))
            }
        })
        .collect()
}

fn main() {
    let Some([miners, rate, secs, hashes]) = bench_args([20.0, 5.0, 30.0, 20_000.0]) else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(miners as usize, rate, secs, hashes));
}

async fn bench(miners: usize, rate: f64, secs: f64, hashes: f64) {
    let dir = tempfile::tempdir().unwrap();
    let sink = StatsSink::start().await;
    let stats_address = sink.settings().address;
    let c = ShippedConfigs::write(dir.path(), NBITS_NEVER, Some(&stats_address));
    c.with_hashes_per_share(hashes);
    c.with_shipped_mint_timings();
    let declared = std::env::var_os("JD").is_some_and(|v| v == "1");
    let roles = start_roles(&c, dir.path(), declared).await;
    let before = usage(&roles);
    let path = if declared {
        "translator -> jd-client (declared jobs) -> pool -> mint"
    } else {
        "translator -> pool -> mint"
    };
    println!(
        "end to end: {miners} simulated miners x {rate} shares/s for {secs} s, \
         ~{hashes} hashes a share ({path}, each its own process)"
    );
    let load = run_load(&c, &sink, miners, rate, secs).await;
    let after = usage(&roles);

    // Every accepted share's quote minted (a channel of the wallet's key
    // stays open for the notifications of the last shares).
    let _idle = idle_miner(c.translator_addr).await;
    until_minted(&sink, load.accepted).await;

    println!(
        "accepted {} shares ({} rejected) in {:.1} s: {:.0} shares/s",
        load.accepted,
        load.rejected,
        load.elapsed,
        load.accepted as f64 / load.elapsed
    );
    print_latencies(&sink.received());
    for (((name, _, _), b), a) in roles.iter().zip(&before).zip(&after) {
        println!(
            "{name:>10}: CPU {:5.1}% of one core, RSS {:6.1} MiB (peak {:.1} MiB)",
            (a.0 - b.0) as f64 / TICKS_PER_SEC / load.elapsed * 100.0,
            a.1 as f64 / 1024.0,
            a.2 as f64 / 1024.0
        );
    }
    println!("load generator (this process): real proof of work for every share");
}

/// The roles, each its own process, listening: devnet-tp, mint, pool,
/// jd-client if `declared`, translator.
async fn start_roles(
    c: &ShippedConfigs,
    dir: &std::path::Path,
    declared: bool,
) -> Vec<(&'static str, RoleChild, std::net::SocketAddr)> {
    let mut roles = vec![
        ("devnet-tp", RoleChild::spawn("devnet-tp", &c.tp), c.tp_addr),
        ("mint", RoleChild::spawn("mint", &c.mint), c.mint_http),
    ];
    let jd = declared.then(|| c.with_declared_jobs(dir));
    roles.push(("pool", RoleChild::spawn("pool", &c.pool), c.pool_addr));
    if let Some(jd) = &jd {
        until_listening(c.pool_addr, "pool").await;
        let child = RoleChild::spawn("jd-client", &jd.jd_client);
        roles.push(("jd-client", child, jd.jd_client_addr));
    }
    roles.push((
        "translator",
        RoleChild::spawn("translator", &c.translator),
        c.translator_addr,
    ));
    for (name, _, addr) in &roles {
        until_listening(*addr, name).await;
    }
    roles
}

/// Each role's CPU ticks and memory now.
fn usage(roles: &[(&str, RoleChild, std::net::SocketAddr)]) -> Vec<(u64, u64, u64)> {
    roles
        .iter()
        .map(|(_, child, _)| process_usage(child.pid().unwrap()))
        .collect()
}

/// What the load generator did.
struct Load {
    accepted: u64,
    rejected: u64,
    elapsed: f64,
}

/// Runs the load generator through the translator for `secs`, printing
/// progress every [`PROGRESS_EVERY`].
async fn run_load(
    c: &ShippedConfigs,
    sink: &StatsSink,
    miners: usize,
    rate: f64,
    secs: f64,
) -> Load {
    let mut config = miner::MinerConfig {
        url: c.translator_addr.to_string(),
        username: "load".into(),
        mode: miner::Mode::Load,
        stats_interval_secs: 0,
        ..Default::default()
    };
    config.load.miners = miners;
    config.load.shares_per_second = rate;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = miner::start(config, shutdown.clone());
    let stats = running.stats();
    let end = started + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        tokio::time::sleep_until(end.min(Instant::now() + PROGRESS_EVERY).into()).await;
        let (notified, minted) = quotes_seen(&sink.received());
        println!(
            "{:>5.0} s: accepted {}, notified {notified}, minted {minted}, backlog (notified, not minted) {}",
            started.elapsed().as_secs_f64(),
            stats.accepted(),
            notified.saturating_sub(minted)
        );
    }
    shutdown.cancel();
    running.wait().await.unwrap();
    Load {
        accepted: stats.accepted(),
        rejected: stats.rejected(),
        elapsed: started.elapsed().as_secs_f64(),
    }
}

/// Waits until `accepted` quotes are minted (two minutes at most).
async fn until_minted(sink: &StatsSink, accepted: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, minted) = quotes_seen(&sink.received());
        if minted as u64 >= accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {minted} of {accepted} accepted shares minted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Share-to-notification and share-to-minted latencies, from the
/// translator's stats `events`.
fn print_latencies(events: &[StatsMessage]) {
    let shares: Vec<u64> = events
        .iter()
        .filter_map(|m| match m {
            StatsMessage::MinerShare(s) if s.accepted => Some(s.timestamp),
            _ => None,
        })
        .collect();
    let quote_times = |minted: bool| {
        events.iter().filter_map(move |m| match m {
            StatsMessage::EhashQuote(q) if q.minted == minted => {
                Some((q.quote_id.as_utf8_or_hex(), q.timestamp))
            }
            _ => None,
        })
    };
    let recorded: Vec<(String, u64)> = quote_times(false).collect();
    let minted_at: HashMap<String, u64> = quote_times(true).collect();
    // Shares and quotes are paired in order: one miner key, one pipeline.
    let mut latency: Vec<f64> = shares
        .iter()
        .zip(&recorded)
        .filter_map(|(share, (id, _))| Some(minted_at.get(id)?.saturating_sub(*share) as f64))
        .collect();
    latency.sort_by(f64::total_cmp);
    let notified_at: Vec<(u64, f64)> = shares
        .iter()
        .zip(&recorded)
        .map(|(share, (_, at))| (*share, at.saturating_sub(*share) as f64))
        .collect();
    let mut notified: Vec<f64> = notified_at.iter().map(|(_, ms)| *ms).collect();
    notified.sort_by(f64::total_cmp);
    if !notified.is_empty() {
        println!(
            "share accepted -> quote notification at the translator: p50 {:.0} ms, p99 {:.0} ms",
            percentile(&notified, 0.5),
            percentile(&notified, 0.99),
        );
        println!(
            "  p99 of each 10 s of shares: {}",
            p99_by_window(&notified_at).join(", ")
        );
    }
    if !latency.is_empty() {
        println!(
            "share accepted -> ehash minted: p50 {:.0} ms, p99 {:.0} ms ({} shares)",
            percentile(&latency, 0.5),
            percentile(&latency, 0.99),
            latency.len()
        );
    }
}

//! Side by side: SRI's translator_sv2 and our translator, each its own
//! process in front of the same upstream (our pool without its ehash flow,
//! on devnet-tp, each its own process: the shipped configs on free ports),
//! loaded in turn by the same SV1 load generator (`roles/miner` load mode:
//! simulated miners submitting real shares at the translators' fixed
//! difficulty: each miner's nominal hash rate at 6 shares a minute, so 10 H/s
//! means 100 hashes a share). Prints, for each translator, the shares/s
//! the pool accepted from it (counted from the pool's log, until the last
//! share of the run reached it: SRI's translator answers its miners at
//! once and passes their shares on later, so what it answered is not what
//! it carried), what it answered its miners, its CPU and RSS, and ours/SRI
//! of the first: the translation alone (the ehash path end to end is
//! `bench/end-to-end.sh`).
//!
//! Then each translator's memory per idle SV1 connection: RSS before and
//! after `idle` miners subscribed, authorized and got their first job.
//!
//!     bench/translator-side-by-side.sh [miners] [shares/s per miner] [seconds] [H/s per miner] [idle]
//!
//! `TRANSLATOR_SV2` names SRI's binary (the script installs it).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hashpool_tests::*;
use tokio_util::sync::CancellationToken;

struct Figures {
    /// Answered as accepted to the miners.
    accepted: u64,
    rejected: u64,
    /// Submitted by the miners, answered or not.
    submitted: u64,
    /// Hashed by the miners: over `submitted`, what a share cost them.
    hashes: u64,
    /// Seconds the miners ran.
    elapsed: f64,
    /// Accepted by the pool, and the seconds from the start until the
    /// last of them (a translator may answer its miners before it has
    /// passed their shares on).
    pool_accepted: u64,
    until_pool: f64,
    /// The translator's CPU seconds, from the start until the pool's last share.
    cpu_secs: f64,
    rss_kib: u64,
}

impl Figures {
    fn answered_per_second(&self) -> f64 {
        self.accepted as f64 / self.elapsed
    }

    fn pool_per_second(&self) -> f64 {
        self.pool_accepted as f64 / self.until_pool.max(f64::MIN_POSITIVE)
    }

    /// The translator's CPU time per share the pool accepted, in µs: what
    /// a share costs it, whatever limits the rate.
    fn cpu_per_share_us(&self) -> f64 {
        self.cpu_secs / self.pool_accepted.max(1) as f64 * 1e6
    }

    /// % of one core, from the start until the pool's last share.
    fn cpu_percent(&self) -> f64 {
        self.cpu_secs / self.until_pool * 100.0
    }
}

/// The pool's accepted shares so far, from the last "pool stats" line of
/// its log (written every second here).
fn pool_accepted(pool_log: &Path) -> u64 {
    let log = std::fs::read_to_string(pool_log).unwrap_or_default();
    log.lines()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once("shares_accepted=")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits until the pool's count stops growing (three seconds without a
/// new share); the count, and when it last grew.
async fn pool_settled(pool_log: &Path) -> (u64, Instant) {
    let (mut count, mut grew) = (pool_accepted(pool_log), Instant::now());
    while grew.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = pool_accepted(pool_log);
        if now != count {
            (count, grew) = (now, Instant::now());
        }
    }
    (count, grew)
}

fn main() {
    let Some([miners, rate, secs, hashrate, idle]) = bench_args([20.0, 10.0, 20.0, 10.0, 2000.0])
    else {
        return;
    };
    let sri = std::env::var("TRANSLATOR_SV2").expect("TRANSLATOR_SV2: SRI's translator_sv2 binary");
    tokio::runtime::Runtime::new().unwrap().block_on(bench(
        &sri,
        miners as usize,
        rate,
        secs,
        hashrate,
        idle as usize,
    ));
}

/// SRI's translator config: per-miner channels, vardiff off at `hashrate`
/// and 6 shares a minute, upstream our pool.
fn sri_config(
    dir: &Path,
    listen: std::net::SocketAddr,
    pool: std::net::SocketAddr,
    hashrate: f64,
) -> String {
    let (_, key) = miner_key();
    let toml = format!(
        "downstream_address = \"{}\"\n\
         downstream_port = {}\n\
         max_supported_version = 2\n\
         min_supported_version = 2\n\
         downstream_extranonce2_size = 4\n\
         aggregate_channels = false\n\
         [downstream_difficulty_config]\n\
         min_individual_miner_hashrate = {hashrate:?}\n\
         shares_per_minute = 6.0\n\
         enable_vardiff = false\n\
         job_keepalive_interval_secs = 60\n\
         [[upstreams]]\n\
         address = \"{}\"\n\
         port = {}\n\
         authority_pubkey = \"{POOL_PUBLIC_KEY}\"\n\
         user_identity = \"{key}\"\n",
        listen.ip(),
        listen.port(),
        pool.ip(),
        pool.port(),
    );
    let path = dir.join("translator_sv2.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

async fn load(
    address: std::net::SocketAddr,
    pid: u32,
    miners: usize,
    rate: f64,
    secs: f64,
    pool_log: &Path,
) -> Figures {
    let mut config = miner::MinerConfig {
        url: address.to_string(),
        username: "load".into(),
        mode: miner::Mode::Load,
        stats_interval_secs: 0,
        ..Default::default()
    };
    config.load.miners = miners;
    config.load.shares_per_second = rate;
    let (pool_before, _) = pool_settled(pool_log).await;
    let before = process_usage(pid);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = miner::start(config, shutdown.clone());
    let stats = running.stats();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    shutdown.cancel();
    running.wait().await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (pool_after, last) = pool_settled(pool_log).await;
    let until_pool = last.duration_since(started).as_secs_f64().max(elapsed);
    let after = process_usage(pid);
    Figures {
        accepted: stats.accepted(),
        rejected: stats.rejected(),
        submitted: stats.submitted.load(std::sync::atomic::Ordering::Relaxed),
        hashes: stats.hashes(),
        elapsed,
        pool_accepted: pool_after - pool_before,
        until_pool,
        cpu_secs: (after.0 - before.0) as f64 / TICKS_PER_SEC,
        rss_kib: after.1,
    }
}

/// RSS added per idle SV1 miner (KiB): `n` miners subscribed, authorized
/// and holding their first job, opened 100 at a time.
async fn idle_rss(address: std::net::SocketAddr, pid: u32, n: usize) -> f64 {
    let before = process_usage(pid).1;
    let mut miners = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(100) {
        let mut starts = tokio::task::JoinSet::new();
        for i in batch * 100..n.min(batch * 100 + 100) {
            starts.spawn(async move { Sv1Client::start(address, &format!("idle.{i}")).await });
        }
        miners.extend(starts.join_all().await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = process_usage(pid).1;
    drop(miners);
    after.saturating_sub(before) as f64 / n as f64
}

async fn bench(sri: &str, miners: usize, rate: f64, secs: f64, hashrate: f64, idle: usize) {
    let dir = tempfile::tempdir().unwrap();
    let c = ShippedConfigs::write(dir.path(), NBITS_NEVER, None);
    // The pool: one ehash per hash, so its channel target is the
    // translators' share target and every share a miner submits goes
    // upstream; and no ehash flow, which SRI's translator would leave
    // quoted but unminted, to be paid for by the next run.
    let table = |path: &Path| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut pool = table(&c.pool);
    set_config(&mut pool, "unit_bits", 0);
    set_config(&mut pool, "max_channels_per_connection", 65_536);
    set_config(&mut pool, "max_channels_per_ip", 65_536);
    set_config(&mut pool, "stats_log_interval_secs", 1);
    pool.remove("mint");
    write_config(dir.path(), "pool.toml", &pool);
    let mut translator = table(&c.translator);
    set_config(&mut translator, "nominal_hashrate", hashrate);
    write_config(dir.path(), "translator.toml", &translator);
    let upstream = [
        ("devnet-tp", RoleChild::spawn("devnet-tp", &c.tp), c.tp_addr),
        ("mint", RoleChild::spawn("mint", &c.mint), c.mint_http),
        ("pool", RoleChild::spawn("pool", &c.pool), c.pool_addr),
    ];
    for (name, _, addr) in &upstream {
        until_listening(*addr, name).await;
    }
    let sri_addr = free_address();
    let mut sri_child: Child = Command::new(sri)
        .args([
            "-c",
            &sri_config(dir.path(), sri_addr, c.pool_addr, hashrate),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("SRI's translator_sv2 starts");
    until_listening(sri_addr, "SRI translator_sv2").await;
    let ours = RoleChild::spawn("translator", &c.translator);
    until_listening(c.translator_addr, "translator").await;

    println!(
        "translators side by side: {miners} simulated SV1 miners at {hashrate} H/s nominal, \
         each up to {rate} shares/s, for {secs} s per translator; same pool, mint and devnet-tp \
         (release processes)"
    );
    let pool_log = c.pool.with_extension("log");
    let theirs = load(sri_addr, sri_child.id(), miners, rate, secs, &pool_log).await;
    let ours_figures = load(
        c.translator_addr,
        ours.pid().unwrap(),
        miners,
        rate,
        secs,
        &pool_log,
    )
    .await;
    println!("then {idle} idle miners on each");
    let sri_idle = idle_rss(sri_addr, sri_child.id(), idle).await;
    let ours_idle = idle_rss(c.translator_addr, ours.pid().unwrap(), idle).await;
    let _ = sri_child.kill();
    let _ = sri_child.wait();
    if ours_figures.accepted == 0 {
        print_warnings("our translator", &dir.path().join("translator.log"));
    }
    print_table(&theirs, &ours_figures, idle, (sri_idle, ours_idle));
}

/// The last warnings and errors of `log`: why `who` accepted nothing.
fn print_warnings(who: &str, log: &Path) {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(20)
        .collect();
    println!("{who} accepted nothing; its log ends:");
    for line in tail.iter().rev() {
        println!("  {line}");
    }
}

/// The figures of both translators, one row each, and their ratios;
/// `idle_rss`: the RSS per idle miner (KiB) of SRI's and ours.
fn print_table(theirs: &Figures, ours_figures: &Figures, idle: usize, idle_rss: (f64, f64)) {
    let (sri_idle, ours_idle) = idle_rss;
    println!(
        "| translator | shares/s accepted by the pool | shares/s answered to the miners | \
         submitted | rejected | hashes a share | CPU % of one core | CPU µs a share | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, f) in [("SRI translator_sv2", theirs), ("ours", ours_figures)] {
        println!(
            "| {name} | {:.0} ({} in {:.1} s) | {:.0} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
            f.pool_per_second(),
            f.pool_accepted,
            f.until_pool,
            f.answered_per_second(),
            f.submitted,
            f.rejected,
            f.hashes as f64 / f.submitted.max(1) as f64,
            f.cpu_percent(),
            f.cpu_per_share_us(),
            f.rss_kib as f64 / 1024.0
        );
    }
    println!(
        "RSS per idle SV1 miner at {idle} miners: SRI {sri_idle:.1} KiB, ours {ours_idle:.1} KiB"
    );
    println!(
        "ours / SRI: {:.2} (shares/s accepted by the pool), {:.2} (shares per CPU second)",
        ours_figures.pool_per_second() / theirs.pool_per_second().max(f64::MIN_POSITIVE),
        theirs.cpu_per_share_us() / ours_figures.cpu_per_share_us().max(f64::MIN_POSITIVE)
    );
}

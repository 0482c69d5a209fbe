//! Hostile load: every role a child process on 127.0.0.1, three honest
//! miners mining through the translator, and at the same time strangers
//! (on other loopback addresses, as other machines would be) trying every
//! listener: thousands of idle SV1 and SV2 connections, channels opened to
//! exhaustion, junk shares as fast as the pool answers them, slowloris on
//! the mint's HTTP API and the dashboard, forged stats. The honest miners
//! keep their share rate, every share of theirs is minted, and no process
//! grows past a bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use stats_sv2::{MessageSet, PublisherHello, ShareSubmitted, StatsMessage};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

role_child_entry!();

/// Each of the two measured phases (quiet, then under attack).
const PHASE: Duration = Duration::from_secs(40);
/// Honest miners and the shares each submits per second.
const HONEST_MINERS: usize = 3;
const HONEST_SHARES_PER_SECOND: f64 = 2.0;
/// Idle connections held by strangers.
const IDLE_SV1: usize = 2_000;
const IDLE_SV2: usize = 300;
const NO_HANDSHAKE_SV2: usize = 700;
/// Channels opened to exhaustion on each of this many connections, and
/// the pool's cap on channels per connection.
const CHANNEL_HOGS: usize = 2;
const HOG_CHANNELS: u64 = 500;
/// Slowloris connections per address, and addresses, per HTTP server.
const SLOWLORIS_PER_IP: usize = 30;
const SLOWLORIS_IPS: u8 = 4;
/// No role's peak resident memory may exceed this.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// A stranger's address: 127.0.0.`n` (n >= 2; 127.0.0.1 is the honest side's).
fn stranger(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_miners_keep_mining_and_are_paid_while_strangers_attack_every_listener() {
    let fds = raise_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let roles = Roles::start(d);
    roles.until_listening().await;

    let shutdown = CancellationToken::new();
    let honest = miner::start(
        load_miner_config(
            roles.c.translator_addr,
            "honest",
            HONEST_MINERS,
            HONEST_SHARES_PER_SECOND,
        ),
        shutdown.clone(),
    );
    let stats = honest.stats();
    until_accepted(&stats, HONEST_MINERS as u64 * 2).await;

    let quiet = accepted_during(&stats, PHASE).await;
    println!("quiet: {quiet} shares accepted in {PHASE:?}");

    let stop = CancellationToken::new();
    let attack = Attack::start(&roles, stop.clone()).await;
    println!("attack under way: {}", attack.report());
    let (under_attack, probes) =
        tokio::join!(accepted_during(&stats, PHASE), probe_http(&roles, PHASE));
    println!(
        "under attack: {under_attack} shares accepted in {PHASE:?} ({:.0}% of quiet); {}",
        100.0 * under_attack as f64 / quiet as f64,
        attack.report()
    );
    println!("{probes}");
    let attack = attack.stop(stop).await;

    shutdown.cancel();
    honest.wait().await.unwrap();
    let accepted = stats.accepted();
    assert_eq!(stats.rejected(), 0, "no honest share refused");

    // Strangers held and tried what the test says they did.
    assert!(attack.idle_sv1 >= IDLE_SV1 / 2, "{}", attack.report());
    assert_eq!(
        attack.channels,
        CHANNEL_HOGS as u64 * HOG_CHANNELS,
        "{}",
        attack.report()
    );
    assert!(
        attack.channel_refusals >= CHANNEL_HOGS as u64,
        "{}",
        attack.report()
    );
    assert!(attack.junk_shares > 1_000, "{}", attack.report());
    assert!(attack.slowloris_closed > 0, "{}", attack.report());
    // Honest miners were not starved.
    assert!(
        under_attack as f64 >= 0.8 * quiet as f64,
        "{under_attack} accepted under attack, {quiet} in a quiet run of the same length"
    );
    assert_eq!(probes.failed, 0, "{probes}");
    // Every honest share becomes ehash in the translator's wallet.
    let minted = roles.until_minted(accepted).await;
    println!("{accepted} honest shares accepted, {minted} quotes minted");
    // Forged stats never reach the dashboard.
    let miners = http_get(roles.stats_http, "/api/miners?hours=24")
        .await
        .expect("dashboard API answers");
    assert!(!miners.contains(&FORGED_DOWNSTREAM.to_string()), "{miners}");
    let stats = http_get(roles.stats_http, "/api/stats")
        .await
        .expect("dashboard API answers");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["shares_accepted"].as_u64() >= Some(accepted),
        "the pool's own figures: {stats}\npool-stats log:\n{}",
        roles.log_tail("pool-stats")
    );
    // A forged share of 2^50 hashes would make the pool's rate terahashes.
    let hashrate = stats["hashrate"].as_f64().unwrap();
    assert!(hashrate < 1e9, "forged work counted: {hashrate} H/s");
    assert!(attack.forged_refused > 0, "{}", attack.report());
    // Memory stayed bounded.
    for (name, kib) in roles.peak_rss() {
        println!(
            "{name}: peak RSS {} MiB (bound {} MiB)",
            kib / 1024,
            RSS_BOUND_KIB / 1024
        );
        assert!(kib < RSS_BOUND_KIB, "{name} peaked at {kib} KiB");
    }
    println!("open files limit {fds}");
    roles.stop();
}

// ---------------------------------------------------------------- the roles

/// Quotes answered after their miner left, with nobody to take their
/// notifications, are refused once the pool keeps as many as it may (here
/// one). The pool says so at most once an interval, with a count, where it
/// wrote a line for each (90,000 lines in 25 s under the benchmark, while
/// the mint drained its backlog after the load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_nobody_takes_cost_the_pool_a_log_line_an_interval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = ShippedConfigs::write(d, NBITS_NEVER, None);
    let mut p = load_toml(&c.pool);
    set_config(&mut p, "mint.undelivered_per_key", 1);
    set_config(&mut p, "mint.undelivered_total", 1);
    set_config(&mut p, "stats_log_interval_secs", 1);
    write_config(d, "pool.toml", &p);
    let tp = RoleChild::spawn("devnet-tp", &c.tp);
    until_listening(c.tp_addr, "devnet-tp").await;
    let mut pool = RoleChild::spawn("pool", &c.pool);
    until_listening(c.pool_addr, "pool").await;

    // The mint is down while the miner mines: its shares wait in the
    // pool's journal, and are quoted once the miner has gone.
    let target = LoadTarget {
        address: c.pool_addr,
        authority_key: POOL_PUBLIC_KEY.to_string(),
        user_identity: format!("{LOCKING_KEY}.load"),
        // ~16 hashes a share at the shipped 6 shares a minute.
        nominal_hashrate: 1.6,
        ehash: true,
    };
    let figures = run_load(&target, 2, 4, Duration::from_secs(2), tokio::time::sleep).await;
    assert_eq!(figures.rejected(), 0, "{figures:?}");
    let mut mint = RoleChild::spawn("mint", &c.mint);
    let quoting = Instant::now();

    let refused = |log: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.split("ehash_notices_refused=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused(&pool.log()) < 100 {
        assert!(
            Instant::now() < deadline,
            "{} refused, {figures:?}; the pool's log ends:\n{}",
            refused(&pool.log()),
            pool.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = pool.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("too many unacknowledged ehash notifications"))
        .count();
    // One line an interval (10 s) at most, however slow the mint's drain.
    let at_most = 1 + quoting.elapsed().as_secs() / 10;
    assert!(
        (1..=at_most).contains(&(lines as u64)),
        "{lines} lines for {} refused notifications in {:?}",
        refused(&log),
        quoting.elapsed()
    );
    for (name, child) in [("pool", &mut pool), ("mint", &mut mint)] {
        assert!(child.interrupt(), "{name}:\n{}", child.log_tail(40));
    }
    drop(tp);
}

/// devnet-tp, mint, pool, pool-stats and translator, each its own process
/// from the shipped configs.
struct Roles {
    c: ShippedConfigs,
    stats_http: SocketAddr,
    stats_ingest: SocketAddr,
    children: Vec<(&'static str, RoleChild, SocketAddr)>,
    translator_data: std::path::PathBuf,
}

impl Roles {
    fn start(d: &Path) -> Roles {
        let c = ShippedConfigs::write(d, NBITS_NEVER, None);
        let (stats_ingest, stats_http) = (free_address(), free_address());
        let secret = "hostile-load-test-publisher-secret";
        let mut s = shipped_config("pool-stats.toml");
        set_config(&mut s, "ingest_listen", stats_ingest.to_string());
        set_config(&mut s, "http_listen", stats_http.to_string());
        set_config(
            &mut s,
            "data_dir",
            d.join("pool-stats").display().to_string(),
        );
        set_config(&mut s, "publisher_secret", secret);
        let stats_toml = write_config(d, "pool-stats.toml", &s);
        let mut p = load_toml(&c.pool);
        let mut stats = toml::Table::new();
        stats.insert("address".into(), stats_ingest.to_string().into());
        stats.insert("secret".into(), secret.into());
        p.insert("stats".into(), stats.into());
        // Fewer channels per connection than shipped, for the hogs to reach
        // the cap in seconds on a debug build.
        set_config(&mut p, "max_channels_per_connection", HOG_CHANNELS as i64);
        write_config(d, "pool.toml", &p);
        // One ehash a share: the pool's floor, whatever the miner's rate.
        let mut t = load_toml(&c.translator);
        set_config(&mut t, "nominal_hashrate", 1.0);
        write_config(d, "translator.toml", &t);

        let children = vec![
            ("devnet-tp", RoleChild::spawn("devnet-tp", &c.tp), c.tp_addr),
            ("mint", RoleChild::spawn("mint", &c.mint), c.mint_http),
            (
                "pool-stats",
                RoleChild::spawn("pool-stats", &stats_toml),
                stats_http,
            ),
            ("pool", RoleChild::spawn("pool", &c.pool), c.pool_addr),
            (
                "translator",
                RoleChild::spawn("translator", &c.translator),
                c.translator_addr,
            ),
        ];
        Roles {
            stats_http,
            stats_ingest,
            children,
            translator_data: d.join("translator"),
            c,
        }
    }

    async fn until_listening(&self) {
        for (name, _, addr) in &self.children {
            until_listening(*addr, name).await;
        }
    }

    /// Waits until the translator minted `accepted` quotes (and holds no
    /// other); returns how many it minted.
    async fn until_minted(&self, accepted: u64) -> u64 {
        // The wallet mints at its own pace: what fails is a minute without progress.
        let mut deadline = Instant::now() + Duration::from_secs(60);
        let mut minted = 0;
        loop {
            let t =
                translator::quotes::QuoteStore::open(&self.translator_data.join("quotes.sqlite"))
                    .and_then(|s| s.totals())
                    .unwrap();
            if t.minted.0 == accepted && t.pending.0 == 0 {
                assert_eq!(t.foreign.0 + t.failures, 0, "{t:?}");
                return t.minted.0;
            }
            if t.minted.0 > minted {
                minted = t.minted.0;
                deadline = Instant::now() + Duration::from_secs(60);
            }
            assert!(
                Instant::now() < deadline,
                "{accepted} honest shares accepted, translator {t:?}; its log ends:\n{}",
                self.log_tail("translator")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn log_tail(&self, role: &str) -> String {
        self.children
            .iter()
            .find(|(name, ..)| *name == role)
            .map(|(_, child, _)| child.log_tail(40))
            .unwrap_or_default()
    }

    fn peak_rss(&self) -> Vec<(&'static str, u64)> {
        self.children
            .iter()
            .map(|(name, child, _)| (*name, child.peak_rss_kib().expect("running")))
            .collect()
    }

    fn stop(mut self) {
        for (name, child, _) in self.children.iter_mut().rev() {
            assert!(
                child.interrupt(),
                "{name} did not stop cleanly:\n{}",
                child.log_tail(40)
            );
        }
    }
}

fn load_toml(path: &Path) -> toml::Table {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

/// Thousands of sockets on each side: the soft limit on open files raised
/// as far as the hard one allows (the roles, children, inherit it).
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on this process's own limit, with a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 8_192,
        "the test needs 8192 open files, the hard limit is {}",
        limit.rlim_max
    );
    limit.rlim_cur
}

async fn accepted_during(stats: &miner::Stats, phase: Duration) -> u64 {
    let before = stats.accepted();
    tokio::time::sleep(phase).await;
    stats.accepted() - before
}

// ---------------------------------------------------------------- the strangers

/// The downstream a forged publisher claims shares for.
const FORGED_DOWNSTREAM: u32 = 4_242_424;

#[derive(Default)]
struct Counters {
    idle_sv1: AtomicU64,
    idle_sv2: AtomicU64,
    channels: AtomicU64,
    channel_refusals: AtomicU64,
    junk_shares: AtomicU64,
    slowloris_closed: AtomicU64,
    forged_refused: AtomicU64,
}

/// What the strangers did, once stopped.
#[derive(Debug)]
struct AttackReport {
    idle_sv1: usize,
    channels: u64,
    channel_refusals: u64,
    junk_shares: u64,
    slowloris_closed: u64,
    forged_refused: u64,
}

impl AttackReport {
    fn report(&self) -> String {
        format!("{self:?}")
    }
}

struct Attack {
    counters: Arc<Counters>,
    tasks: JoinSet<()>,
    held: Vec<TcpStream>,
}

impl Attack {
    /// Starts every stranger and returns once the idle connections are held
    /// and the channel hogs are full.
    async fn start(roles: &Roles, stop: CancellationToken) -> Attack {
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        let pool = roles.c.pool_addr;
        // The hogs first: once idle connections fill the pool's per-address
        // cap, a new connection from that address is refused.
        for _ in 0..CHANNEL_HOGS {
            tasks.spawn(hog_channels(pool, counters.clone(), stop.clone()));
        }
        tasks.spawn(flood_junk_shares(pool, counters.clone(), stop.clone()));
        for i in 0..SLOWLORIS_IPS {
            for (base, addr) in [(10, roles.c.mint_http), (20, roles.stats_http)] {
                for _ in 0..SLOWLORIS_PER_IP {
                    tasks.spawn(slowloris(
                        stranger(base + i),
                        addr,
                        counters.clone(),
                        stop.clone(),
                    ));
                }
            }
        }
        tasks.spawn(forge_stats(
            roles.stats_ingest,
            counters.clone(),
            stop.clone(),
        ));
        let mut held = Vec::new();
        // SV1: four addresses, a subscribe from half of them, then silence.
        for i in 0..IDLE_SV1 {
            let from = stranger(30 + (i % 4) as u8);
            if let Ok(mut s) = tcp_from(from, roles.c.translator_addr).await {
                if i % 2 == 0 {
                    let _ = s
                        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
                        .await;
                }
                held.push(s);
            }
        }
        counters
            .idle_sv1
            .store(held.len() as u64, Ordering::Relaxed);
        // SV2: raw TCP that never shakes hands, and Noise sessions that set
        // up and then say nothing.
        for i in 0..NO_HANDSHAKE_SV2 {
            if let Ok(s) = tcp_from(stranger(40 + (i % 2) as u8), pool).await {
                held.push(s);
            }
        }
        for i in 0..IDLE_SV2 {
            let counters = counters.clone();
            let stop = stop.clone();
            let from = stranger(42 + (i % 2) as u8);
            tasks.spawn(async move {
                let Ok(mut conn) = Sv2Conn::connect_from(from, pool, POOL_PUBLIC_KEY).await else {
                    return;
                };
                conn.setup(
                    stratum_core::common_messages_sv2::Protocol::MiningProtocol,
                    0,
                )
                .await;
                counters.idle_sv2.fetch_add(1, Ordering::Relaxed);
                stop.cancelled().await;
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while counters.channel_refusals.load(Ordering::Relaxed) < CHANNEL_HOGS as u64 {
            assert!(
                Instant::now() < deadline,
                "the channel hogs never filled up: {} channels",
                counters.channels.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Attack {
            counters,
            tasks,
            held,
        }
    }

    fn report(&self) -> String {
        let c = &self.counters;
        format!(
            "{} idle SV1 connections, {} idle SV2 sessions and {} SV2 connections without a \
             handshake, {} channels hogged ({} refused), {} junk shares, {} slowloris connections \
             closed by the servers, {} forged stats publishers refused",
            c.idle_sv1.load(Ordering::Relaxed),
            c.idle_sv2.load(Ordering::Relaxed),
            self.held.len() as u64 - c.idle_sv1.load(Ordering::Relaxed),
            c.channels.load(Ordering::Relaxed),
            c.channel_refusals.load(Ordering::Relaxed),
            c.junk_shares.load(Ordering::Relaxed),
            c.slowloris_closed.load(Ordering::Relaxed),
            c.forged_refused.load(Ordering::Relaxed),
        )
    }

    async fn stop(mut self, stop: CancellationToken) -> AttackReport {
        stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        let c = &self.counters;
        AttackReport {
            idle_sv1: c.idle_sv1.load(Ordering::Relaxed) as usize,
            channels: c.channels.load(Ordering::Relaxed),
            channel_refusals: c.channel_refusals.load(Ordering::Relaxed),
            junk_shares: c.junk_shares.load(Ordering::Relaxed),
            slowloris_closed: c.slowloris_closed.load(Ordering::Relaxed),
            forged_refused: c.forged_refused.load(Ordering::Relaxed),
        }
    }
}

/// One connection opening channels, a batch at a time, until the pool
/// refuses; then it holds them.
async fn hog_channels(pool: SocketAddr, counters: Arc<Counters>, stop: CancellationToken) {
    let Ok(conn) = Sv2Conn::connect_from(stranger(50), pool, POOL_PUBLIC_KEY).await else {
        return;
    };
    let mut client = MiningClient::over(conn);
    client.setup_connection(0).await;
    let identity = format!("{}.hog", LOCKING_KEY);
    'open: loop {
        for _ in 0..128 {
            client
                .try_open_extended(&identity, 1.0, 8)
                .await
                .expect("the hog stays connected");
        }
        let mut answers = 0;
        while answers < 128 {
            match client.conn.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenExtendedMiningChannelSuccess(_),
                ))) => {
                    answers += 1;
                    counters.channels.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenMiningChannelError(e),
                ))) => {
                    assert_eq!(
                        String::from_utf8_lossy(e.error_code.as_bytes()),
                        "too-many-channels"
                    );
                    counters.channel_refusals.fetch_add(1, Ordering::Relaxed);
                    break 'open;
                }
                Ok(_) => {}
                Err(e) => panic!("the pool closed a channel hog: {e}"),
            }
        }
    }
    // Hold the channels (no new block comes: nothing more is sent for them).
    stop.cancelled().await;
}

/// One channel at the pool's easiest target, and shares with random nonces
/// (nearly all below target) as fast as the pool answers them.
async fn flood_junk_shares(pool: SocketAddr, counters: Arc<Counters>, stop: CancellationToken) {
    const BATCH: u32 = 100;
    let conn = Sv2Conn::connect_from(stranger(51), pool, POOL_PUBLIC_KEY)
        .await
        .expect("flooder connects");
    let mut client = MiningClient::over(conn);
    client.setup_connection(0).await;
    let channel = client
        .open_extended(&format!("{}.flood", LOCKING_KEY), 0.0, 8)
        .await
        .expect("flood channel");
    client.wait_for_work(channel).await;
    while !stop.is_cancelled() {
        let seq = client
            .send_junk_shares(channel, BATCH)
            .await
            .expect("the pool keeps the flooder");
        counters
            .junk_shares
            .fetch_add(BATCH as u64, Ordering::Relaxed);
        // Until the pool answered the batch's last share.
        loop {
            match client.conn.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e))))
                    if e.sequence_number == seq =>
                {
                    break
                }
                Ok(Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))))
                    if s.last_sequence_number >= seq =>
                {
                    break
                }
                Ok(_) => {}
                Err(e) => panic!("the pool closed the flooder: {e}"),
            }
        }
    }
}

/// An HTTP request whose headers never end: one header line a second, a
/// new connection whenever the server closes one.
async fn slowloris(
    from: IpAddr,
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(mut s) = tcp_from(from, addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: hashpool\r\n").await;
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        break;
                    }
                }
                n = s.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { break },
            }
        }
        counters.slowloris_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A publisher without the secret, claiming a miner: refused every time.
async fn forge_stats(ingest: SocketAddr, counters: Arc<Counters>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if forge_once(ingest).await {
            counters.forged_refused.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Sends a hello with a wrong secret and a forged share; whether the
/// service closed the connection.
async fn forge_once(ingest: SocketAddr) -> bool {
    let now = roles_common::stats_publisher::now_ms();
    let hello = StatsMessage::PublisherHello(PublisherHello {
        version: stats_sv2::PROTOCOL_VERSION,
        role: stats_sv2::role::POOL,
        started_at: now,
        dropped: 0,
        secret: "not-the-publisher-secret".to_string().try_into().unwrap(),
        timestamp: now,
    });
    let share = StatsMessage::ShareSubmitted(ShareSubmitted {
        downstream_id: FORGED_DOWNSTREAM,
        channel_id: 1,
        accepted: true,
        work: 1 << 50,
        timestamp: now,
    });
    let Ok(mut s) = tcp_from(stranger(60), ingest).await else {
        return false;
    };
    for m in [hello, share] {
        if s.write_all(&m.to_frame_bytes().unwrap()).await.is_err() {
            return true;
        }
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

// ---------------------------------------------------------------- honest HTTP

/// What the honest HTTP clients saw during the attack.
#[derive(Debug, Default)]
struct Probes {
    answered: u64,
    failed: u64,
    slowest: (Duration, &'static str),
    failures: Vec<String>,
}

impl std::fmt::Display for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "honest HTTP requests to the mint and the dashboard: {} answered (slowest {:?}), {} failed {:?}",
            self.answered, self.slowest, self.failed, self.failures
        )
    }
}

/// Every two seconds for `phase`: the mint's keysets and the dashboard page.
async fn probe_http(roles: &Roles, phase: Duration) -> Probes {
    let mut probes = Probes::default();
    let end = Instant::now() + phase;
    while Instant::now() < end {
        for (addr, path) in [(roles.c.mint_http, "/v1/keysets"), (roles.stats_http, "/")] {
            let started = Instant::now();
            match http_get(addr, path).await {
                Ok(_) => {
                    probes.answered += 1;
                    probes.slowest = probes.slowest.max((started.elapsed(), path));
                }
                Err(e) => {
                    probes.failed += 1;
                    probes.failures.push(format!("{path}: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    probes
}

/// GET `path` from 127.0.0.1; the body of a 200 answer.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: hashpool\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer).to_string();
        match answer.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(format!("not a 200: {:.200}", answer)),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

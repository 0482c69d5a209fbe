//! The stats services with the real roles on 127.0.0.1: the pool publishes
//! to pool-stats, the translator to proxy-stats, while the load generator
//! mines. Restarting a publisher keeps the history and publishing resumes;
//! restarting a stats service does not disturb mining and its downtime shows;
//! the hashrate computed from shares matches the load generator's pace.
//! Both services ask for a publisher secret; figures sent without it never
//! reach the API or the dashboards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use roles_common::stats_publisher::{PublisherSecret, StatsSettings};
use serde_json::Value;
use stats_common::testing::{eventually, get_json, http, Browser, Publisher};
use stats_sv2::StatsMessage;
use tokio_util::sync::CancellationToken;
use translator::{TranslatorConfig, TranslatorHandle};

const WAIT: Duration = Duration::from_secs(30);

/// One test at a time: each runs the whole stack and a load generator, and
/// the pace test needs the CPU it asks for.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy)]
enum Service {
    Pool,
    Proxy,
}

/// pool-stats or proxy-stats, restartable on the same data and ports.
struct StatsService {
    kind: Service,
    dir: tempfile::TempDir,
    ingest: SocketAddr,
    http: SocketAddr,
    secret: PublisherSecret,
    running: Option<(stats_common::Running, CancellationToken)>,
}

impl StatsService {
    async fn start(kind: Service) -> StatsService {
        let mut s = StatsService {
            kind,
            dir: tempfile::tempdir().unwrap(),
            ingest: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
            secret: PublisherSecret::random(),
            running: None,
        };
        s.restart().await;
        s
    }

    /// Starts the service; after the first start it keeps its ports, so the
    /// publisher finds it again.
    async fn restart(&mut self) {
        let shutdown = CancellationToken::new();
        let running = match self.kind {
            Service::Pool => {
                let mut c = pool_stats::PoolStatsConfig::with_data_dir(self.dir.path());
                (c.ingest_listen, c.http_listen) = (self.ingest, self.http);
                c.publisher_secret = Some(self.secret.clone());
                pool_stats::start(c, shutdown.clone()).await
            }
            Service::Proxy => {
                let mut c = proxy_stats::ProxyStatsConfig::with_data_dir(self.dir.path());
                (c.ingest_listen, c.http_listen) = (self.ingest, self.http);
                c.publisher_secret = Some(self.secret.clone());
                proxy_stats::start(c, shutdown.clone()).await
            }
        }
        .expect("stats service starts");
        (self.ingest, self.http) = (running.ingest_addr, running.http_addr);
        self.running = Some((running, shutdown));
    }

    async fn stop(&mut self) {
        if let Some((running, shutdown)) = self.running.take() {
            stop_role("stats service", WAIT, &shutdown, running.wait()).await;
        }
    }

    fn settings(&self) -> StatsSettings {
        StatsSettings::new(self.ingest.to_string()).with_secret(self.secret.clone())
    }

    async fn get(&self, path: &str) -> Value {
        get_json(self.http, path).await
    }

    /// The stats once the publisher, restarted since `before` (a new start
    /// time), has published 10 more shares and `also` holds.
    async fn after_restart(
        &self,
        what: &str,
        before: &Value,
        also: impl Fn(&Value) -> bool,
    ) -> Value {
        self.stats_when(what, |s| {
            s["publisher"]["started_at"].as_u64() != Some(u64_at(before, "/publisher/started_at"))
                && s["shares_accepted"].as_u64() >= Some(u64_at(before, "/shares_accepted") + 10)
                && also(s)
        })
        .await
    }

    async fn stats_when(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            let s = self.get("/api/stats").await;
            pred(&s).then_some(s)
        })
        .await
    }
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

struct Translator {
    config: TranslatorConfig,
    running: Option<(TranslatorHandle, CancellationToken)>,
}

impl Translator {
    /// Starts the translator; after the first start it keeps its port, so
    /// the miners reconnect to it.
    async fn start(&mut self) {
        let shutdown = CancellationToken::new();
        let handle = translator::start(self.config.clone(), shutdown.clone())
            .await
            .expect("translator starts");
        self.config.listen_address = handle.local_addr();
        self.running = Some((handle, shutdown));
    }

    async fn stop(&mut self) {
        if let Some((handle, shutdown)) = self.running.take() {
            stop_role("translator", WAIT, &shutdown, handle.wait()).await;
        }
    }
}

/// The whole stack publishing to both stats services, and the load generator.
struct Mining {
    pool_stats: StatsService,
    proxy_stats: StatsService,
    stack: EhashStack,
    translator: Translator,
    _translator_dir: tempfile::TempDir,
    miner: miner::Miner,
    miner_shutdown: CancellationToken,
    miners: usize,
    shares_per_second: f64,
}

impl Mining {
    async fn start(miners: usize, shares_per_second: f64) -> Mining {
        let pool_stats = StatsService::start(Service::Pool).await;
        let proxy_stats = StatsService::start(Service::Proxy).await;
        let settings = pool_stats.settings();
        let stack = EhashStack::start("annotate", |c| c.stats = Some(settings)).await;
        let translator_dir = tempfile::tempdir().unwrap();
        let mut config = translator_config(
            &[stack.pool_addr()],
            &stack.mint_url(),
            translator_dir.path(),
        );
        config.stats = Some(proxy_stats.settings());
        let mut translator = Translator {
            config,
            running: None,
        };
        translator.start().await;
        let miner_config = load_miner_config(
            translator.config.listen_address,
            "rig",
            miners,
            shares_per_second,
        );
        let miner_shutdown = CancellationToken::new();
        let miner = miner::start(miner_config, miner_shutdown.clone());
        Mining {
            pool_stats,
            proxy_stats,
            stack,
            translator,
            _translator_dir: translator_dir,
            miner,
            miner_shutdown,
            miners,
            shares_per_second,
        }
    }

    /// Waits until the miners had `n` more shares accepted than now.
    async fn mine(&self, n: u64) {
        let stats = self.miner.stats();
        let target = stats.accepted() + n;
        eventually("shares accepted", || async {
            (stats.accepted() >= target).then_some(())
        })
        .await;
    }

    async fn stop(mut self) {
        stop_miner(WAIT, &self.miner_shutdown, self.miner).await;
        self.translator.stop().await;
        self.stack.stop().await;
        self.pool_stats.stop().await;
        self.proxy_stats.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_publishers_keep_their_history_and_publish_again() {
    let _serial = SERIAL.lock().await;
    let mut m = Mining::start(2, 4.0).await;
    m.mine(10).await;

    // The pool restarts while pool-stats runs.
    let before = m
        .pool_stats
        .stats_when("shares at pool-stats", |s| {
            s["shares_accepted"].as_u64() >= Some(10) && s["proxies"][0].is_object()
        })
        .await;
    m.stack.stop_pool().await;
    m.stack.start_pool().await;
    let after = m
        .pool_stats
        .after_restart("the restarted pool's shares", &before, |s| {
            s["proxies"][0].is_object()
        })
        .await;
    assert!(u64_at(&after, "/publisher/restarts") >= 1);
    assert_eq!(after["publisher"]["connected"], true);
    // Only the restarted pool's connection is live; what came before is kept.
    assert_eq!(after["proxies"].as_array().unwrap().len(), 1, "{after}");
    assert!(u64_at(&after, "/proxies/0/shares_accepted") < u64_at(&after, "/shares_accepted"));
    assert_eq!(after["links"]["template_provider"]["state"], "up");

    // The translator restarts while proxy-stats runs.
    let before = m
        .proxy_stats
        .stats_when("shares at proxy-stats", |s| {
            s["shares_accepted"].as_u64() >= Some(10)
        })
        .await;
    m.translator.stop().await;
    m.translator.start().await;
    let after = m
        .proxy_stats
        .after_restart("the restarted translator's shares", &before, |s| {
            s["miners"].as_array().map(Vec::len) == Some(m.miners)
        })
        .await;
    assert!(u64_at(&after, "/publisher/restarts") >= 1);
    let rig_shares: u64 = after["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|miner| u64_at(miner, "/shares_accepted"))
        .sum();
    assert!(
        rig_shares < u64_at(&after, "/shares_accepted"),
        "the miners' counts start over with the new process, the totals do not: {after}"
    );
    assert_eq!(after["links"]["pool"]["state"], "up");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_stats_services_leave_mining_alone_and_show_the_gap() {
    let _serial = SERIAL.lock().await;
    let mut m = Mining::start(2, 4.0).await;
    m.mine(10).await;
    m.pool_stats
        .stats_when("shares at pool-stats", |s| {
            s["shares_accepted"].as_u64() >= Some(10)
        })
        .await;

    let stopped = stats_common::now_ms() as u64;
    m.pool_stats.stop().await;
    m.proxy_stats.stop().await;
    // Mining goes on while both services are down.
    let rejected = m.miner.stats().rejected();
    m.mine(20).await;
    assert_eq!(m.miner.stats().rejected(), rejected);
    m.pool_stats.restart().await;
    m.proxy_stats.restart().await;
    let restarted = stats_common::now_ms() as u64;

    // The publishers reconnect and replay what they queued: the services
    // count every share, and their downtime is on record.
    m.mine(5).await;
    m.miner_shutdown.cancel();
    // stats-sv2 has no acknowledgements: frames a stopping service had not
    // read yet are gone, a few at most; replay failing would lose dozens.
    const LOST_AT_STOP: u64 = 2;
    let accepted_by_pool = || m.stack.pool().stats().shares_accepted;
    for service in [&m.pool_stats, &m.proxy_stats] {
        // The translator publishes each share the pool accepted from it.
        let counted = eventually("every share at the stats service", || async {
            let s = service.get("/api/stats").await;
            let counted = u64_at(&s, "/shares_accepted");
            (counted + LOST_AT_STOP >= accepted_by_pool()).then_some(counted)
        })
        .await;
        assert!(counted > 30 && counted <= accepted_by_pool());
        let h = service.get("/api/hashrate?hours=1").await;
        let gaps = h["gaps"].as_array().unwrap();
        assert_eq!(gaps.len(), 1, "{h}");
        let (from, to) = (u64_at(&gaps[0], "/from"), u64_at(&gaps[0], "/to"));
        assert!(
            from + 1000 >= stopped && from <= restarted && to >= from && to <= restarted,
            "gap {from}..{to}, stopped at {stopped}, restarted at {restarted}"
        );
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_whose_disconnect_was_dropped_leaves_with_the_next_snapshot() {
    let _serial = SERIAL.lock().await;
    let mut m = Mining::start(1, 4.0).await;
    // A queue so small that a few events while proxy-stats is away push
    // out what came before them.
    m.translator.stop().await;
    m.translator.config.stats = Some(StatsSettings {
        queue_capacity: 4,
        ..m.proxy_stats.settings()
    });
    m.translator.start().await;
    let ghost_config = load_miner_config(m.translator.config.listen_address, "ghost", 1, 1.0);
    let ghost_shutdown = CancellationToken::new();
    let ghost = miner::start(ghost_config, ghost_shutdown.clone());
    let names = |s: &Value| -> Vec<String> {
        let miners = s["miners"].as_array().cloned().unwrap_or_default();
        miners.iter().map(|m| m["name"].to_string()).collect()
    };
    let rig_shares = |s: &Value| {
        let miners = s["miners"].as_array().cloned().unwrap_or_default();
        let rig = miners
            .iter()
            .find(|m| !m["name"].to_string().contains("ghost"));
        rig.map_or(0, |m| u64_at(m, "/shares_accepted"))
    };
    let before = m
        .proxy_stats
        .stats_when("the ghost, and the rig with 10 shares", |s| {
            let names = names(s);
            names.len() == 2 && names.iter().any(|n| n.contains("ghost")) && rig_shares(s) >= 10
        })
        .await;

    // The ghost leaves while proxy-stats is away, and more events follow
    // than the queue holds: its disconnect is dropped.
    m.proxy_stats.stop().await;
    stop_miner(WAIT, &ghost_shutdown, ghost).await;
    m.mine(12).await;
    m.proxy_stats.restart().await;
    let s = m
        .proxy_stats
        .stats_when("only the rig", |s| {
            s["publisher"]["dropped"].as_u64() > Some(0) && names(s).len() == 1
        })
        .await;
    assert!(!names(&s)[0].contains("ghost"), "{s}");
    // The snapshot keeps the rig's counts (a new entry would count only
    // what came after it: most shares meanwhile were dropped).
    assert!(
        rig_shares(&s) >= rig_shares(&before),
        "the rig's counts kept: {s}"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashrate_from_shares_matches_the_load_generators_pace() {
    let _serial = SERIAL.lock().await;
    // A rate the whole debug-built stack keeps up with on a busy machine:
    // every share is also quoted by the mint and minted by the wallet.
    let m = Mining::start(3, 1.0).await;
    m.mine(3).await;
    let started = stats_common::now_ms();
    let began = Instant::now();

    // The first whole minute bucket after mining began, once it is over
    // and its shares have arrived.
    let minute = 60_000;
    let bucket = (started / minute + 1) * minute;
    let deadline = Duration::from_secs(150);
    let point = |h: &Value| {
        h["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["t"].as_i64() == Some(bucket))
            .and_then(|p| p["hashrate"].as_f64())
    };
    // The generator's own count of accepted shares, sampled around the
    // bucket's edges: the rate it really achieved on this (busy) machine.
    let miner_stats = m.miner.stats();
    let mut samples: Vec<(u64, u64)> = vec![];
    let (proxy, pool) = loop {
        assert!(began.elapsed() < deadline, "no complete minute in time");
        samples.push((stats_common::now_ms() as u64, miner_stats.accepted()));
        if stats_common::now_ms() > bucket + minute + 3000 {
            let proxy = m.proxy_stats.get("/api/hashrate?hours=1").await;
            let pool = m.pool_stats.get("/api/hashrate?hours=1").await;
            if let (Some(a), Some(b)) = (point(&proxy), point(&pool)) {
                break (a, b);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Each share is mined at the translator's fixed difficulty (vardiff
    // off): nominal hashrate x 60 / shares per minute expected hashes. The
    // shares are those the generator had answered within the bucket (a
    // share is answered within milliseconds of its submission).
    let work_per_share = f64::from(TRANSLATOR_HASHRATE) * 60.0 / 6.0;
    let accepted_at = |t: u64| {
        samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(0, |(_, n)| *n)
    };
    let in_bucket = accepted_at(bucket as u64 + minute as u64) - accepted_at(bucket as u64);
    let expected = in_bucket as f64 * work_per_share / 60.0;
    let paced = m.miners as f64 * m.shares_per_second * work_per_share;
    println!("the generator achieved {expected:.0} of its paced {paced:.0} H/s in that minute");
    println!(
        "minute {bucket}: proxy-stats {proxy:.0} H/s, pool-stats {pool:.0} H/s, expected {expected:.0} H/s"
    );
    for (who, measured) in [("proxy-stats", proxy), ("pool-stats", pool)] {
        let error = (measured - expected).abs() / expected;
        assert!(
            error <= 0.10,
            "{who}: {measured:.0} H/s is {:.1}% off {expected:.0} H/s",
            error * 100.0
        );
    }

    // The dashboards with live data (the services' own tests compare every
    // figure with the API; here the figures keep moving).
    let browser = Browser::start().await;
    for (service, name) in [
        (&m.pool_stats, "pool-dashboard-live"),
        (&m.proxy_stats, "proxy-dashboard-live"),
    ] {
        browser.open(&format!("http://{}/", service.http)).await;
        let figures = browser.stats().await;
        assert!(figures.len() > 10, "{name}: {figures:?}");
        assert!(
            figures.iter().all(|(_, _, text)| !text.contains('?')),
            "{figures:?}"
        );
        let path = browser.screenshot(name).await;
        println!("{name} screenshot: {}", path.display());
    }
    browser.quit().await;
    m.stop().await;
}

/// What forgers publish: figures no real role sends, each marked so that it
/// can be looked for anywhere in the API and on the dashboards.
mod forged {
    use ehash::wire::str0255;
    use stats_sv2::*;

    pub const ID: u32 = 0x0F0F_0F0F;
    pub const NAME: &str = "forged-miner";
    pub const QUOTE: &str = "forged-quote";
    pub const AMOUNT: u64 = 987_654_321;
    /// Work that would show as an absurd hashrate.
    pub const WORK: u64 = 1 << 60;
    /// Block hash on the wire (little-endian); displayed as "ab…ab".
    pub const HASH: [u8; 32] = [0xAB; 32];

    pub fn pool(t: u64) -> Vec<StatsMessage> {
        vec![
            DownstreamConnected {
                downstream_id: ID,
                flags: 0,
                timestamp: t,
            }
            .into(),
            ShareSubmitted {
                downstream_id: ID,
                channel_id: ID,
                accepted: true,
                work: WORK,
                timestamp: t,
            }
            .into(),
            BlockFoundOwned {
                height: ID,
                block_hash: HASH.into(),
                channel_id: ID,
                timestamp: t,
            }
            .into(),
            MintStats {
                quotes_unpaid: AMOUNT,
                quotes_paid: AMOUNT,
                quotes_issued: AMOUNT,
                ehash_quoted: AMOUNT,
                ehash_issued: AMOUNT,
                timestamp: t,
            }
            .into(),
            LinkStatus {
                link: link::TEMPLATE_PROVIDER,
                up: false,
                timestamp: t,
            }
            .into(),
        ]
    }

    pub fn proxy(t: u64) -> Vec<StatsMessage> {
        vec![
            MinerConnectedOwned {
                miner_id: ID,
                name: str0255("name", NAME).unwrap(),
                timestamp: t,
            }
            .into(),
            MinerShare {
                miner_id: ID,
                accepted: true,
                backlogged: false,
                work: WORK,
                timestamp: t,
            }
            .into(),
            WalletBalance {
                balance: AMOUNT,
                timestamp: t,
            }
            .into(),
            EhashQuoteOwned {
                quote_id: str0255("quote_id", QUOTE).unwrap(),
                amount: AMOUNT,
                minted: true,
                timestamp: t,
            }
            .into(),
            LinkStatus {
                link: link::POOL,
                up: false,
                timestamp: t,
            }
            .into(),
        ]
    }

    /// Text that shows a forged figure if it appears in `text` (JSON or HTML).
    pub fn markers() -> Vec<String> {
        vec![
            NAME.into(),
            QUOTE.into(),
            ID.to_string(),
            AMOUNT.to_string(),
            "abababab".into(),
        ]
    }
}

/// Connects to `service` the ways a stranger without its secret can, and
/// sends `figures` on each connection: no secret, a wrong secret, the
/// version 1 hello (no secret at all), no hello. Returns the connections.
async fn forge(
    service: &StatsService,
    role: u8,
    started_at: u64,
    figures: &[StatsMessage],
) -> Vec<Publisher> {
    let addr = service.ingest;
    let mut forgers = vec![
        Publisher::connect(addr, role, started_at).await,
        Publisher::connect_with(addr, role, started_at, b"not the secret, a good guess").await,
        Publisher::connect_silently(addr).await,
    ];
    let mut v1 = Publisher::connect_silently(addr).await;
    let mut hello = vec![0, 0, stats_sv2::PUBLISHER_HELLO_V1, 25, 0, 0, role];
    for field in [started_at, 0, started_at] {
        hello.extend(field.to_le_bytes());
    }
    v1.send_raw(&hello).await;
    forgers.push(v1);
    for forger in &mut forgers {
        for msg in figures {
            if !forger.try_send(msg.clone()).await {
                break;
            }
        }
    }
    forgers
}

/// Every place a figure can show: the JSON API and the dashboard page.
async fn everything_shown(service: &StatsService) -> String {
    let mut shown = String::new();
    for path in [
        "/api/stats",
        "/api/hashrate?hours=1",
        "/api/miners?hours=1",
        "/api/blocks?limit=1000",
        "/api/quotes?limit=1000",
        "/metrics",
        "/?range=1h",
    ] {
        let (status, body) = http(service.http, "GET", path, None).await;
        // /api/blocks is pool-stats', /api/quotes proxy-stats'.
        if status == 404 {
            continue;
        }
        assert_eq!(status, 200, "GET {path}: {body}");
        shown += &body;
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stats_never_reach_the_dashboards() {
    let _serial = SERIAL.lock().await;
    let m = Mining::start(2, 4.0).await;
    m.mine(5).await;
    let pool_before = m
        .pool_stats
        .stats_when("the pool's figures", |s| {
            s["shares_accepted"].as_u64() >= Some(5) && s["proxies"][0].is_object()
        })
        .await;
    let proxy_before = m
        .proxy_stats
        .stats_when("the translator's figures", |s| {
            s["shares_accepted"].as_u64() >= Some(5) && s["miners"][0].is_object()
        })
        .await;

    // A new started_at too: a forger must not reset the live state either.
    let t = stats_common::now_ms() as u64;
    let mut forgers = forge(&m.pool_stats, stats_sv2::role::POOL, t, &forged::pool(t)).await;
    let proxy_forgers = forge(
        &m.proxy_stats,
        stats_sv2::role::TRANSLATOR,
        t,
        &forged::proxy(t),
    )
    .await;
    forgers.extend(proxy_forgers);

    // The real roles' later figures arrive: anything forged would have by now.
    m.mine(10).await;
    let later = |before: &Value| {
        let shares = u64_at(before, "/shares_accepted") + 10;
        move |s: &Value| s["shares_accepted"].as_u64() >= Some(shares)
    };
    for (service, before) in [
        (&m.pool_stats, &pool_before),
        (&m.proxy_stats, &proxy_before),
    ] {
        let s = service
            .stats_when("the real publisher's later figures", later(before))
            .await;
        assert_eq!(
            s["publisher"]["started_at"],
            before["publisher"]["started_at"]
        );
        assert_eq!(s["publisher"]["restarts"], before["publisher"]["restarts"]);
        assert_eq!(s["publisher"]["connected"], true);
        let shown = everything_shown(service).await;
        for marker in forged::markers() {
            assert!(!shown.contains(&marker), "forged {marker} shown:\n{shown}");
        }
        let h = service.get("/api/hashrate?hours=1").await;
        let absurd = forged::WORK as f64 / 60.0 / 2.0;
        assert!(
            h["points"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["hashrate"].as_f64().unwrap_or(0.0) < absurd),
            "forged work in the hashrate: {h}"
        );
    }
    let s = m.pool_stats.get("/api/stats").await;
    assert_eq!(s["links"]["template_provider"]["state"], "up", "{s}");
    let s = m.proxy_stats.get("/api/stats").await;
    assert_eq!(s["links"]["pool"]["state"], "up", "{s}");
    // The services hung up on every forger.
    for forger in &mut forgers {
        forger.expect_closed().await;
    }
    m.stop().await;
}

//! The stats services with the real roles on 127.0.0.1: the pool publishes
//! to pool-stats, the translator to proxy-stats, while the load generator
//! mines. Restarting a publisher keeps the history and publishing resumes;
//! restarting a stats service does not disturb mining and its downtime shows;
//! the hashrate computed from shares matches the load generator's pace.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use miner::{MinerConfig, Mode};
use roles_common::stats_publisher::StatsSettings;
use serde_json::Value;
use stats_common::testing::{eventually, get_json, Browser};
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
    running: Option<(stats_common::Running, CancellationToken)>,
}

impl StatsService {
    async fn start(kind: Service) -> StatsService {
        let mut s = StatsService {
            kind,
            dir: tempfile::tempdir().unwrap(),
            ingest: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
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
                pool_stats::start(c, shutdown.clone()).await
            }
            Service::Proxy => {
                let mut c = proxy_stats::ProxyStatsConfig::with_data_dir(self.dir.path());
                (c.ingest_listen, c.http_listen) = (self.ingest, self.http);
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
        StatsSettings::new(self.ingest.to_string())
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
        let mut miner_config = MinerConfig {
            url: translator.config.listen_address.to_string(),
            username: "rig".into(),
            threads: 1,
            mode: Mode::Load,
            stats_interval_secs: 1,
            ..Default::default()
        };
        miner_config.load.miners = miners;
        miner_config.load.shares_per_second = shares_per_second;
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

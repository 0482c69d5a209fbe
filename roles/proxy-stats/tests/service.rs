//! proxy-stats as a whole: real stats-sv2 frames over TCP in, JSON, HTML and
//! Prometheus text out; restarts of the service and of the translator.

use std::net::SocketAddr;
use std::path::Path;

use ehash::wire::str0255;
use proxy_stats::{ProxyStatsConfig, RunningProxyStats};
use roles_common::CancellationToken;
use serde_json::Value;
use stats_common::testing::{assert_figures_match, eventually, get_json, http, Browser, Publisher};
use stats_sv2::*;

const MINUTE: u64 = 60_000;

struct Service {
    running: RunningProxyStats,
    shutdown: CancellationToken,
}

impl Service {
    async fn start(dir: &Path) -> Service {
        let mut config = ProxyStatsConfig::with_data_dir(dir);
        config.ingest_listen = "127.0.0.1:0".parse().unwrap();
        config.http_listen = "127.0.0.1:0".parse().unwrap();
        let shutdown = CancellationToken::new();
        let running = proxy_stats::start(config, shutdown.clone()).await.unwrap();
        Service { running, shutdown }
    }

    fn http(&self) -> SocketAddr {
        self.running.http_addr
    }

    async fn publisher(&self, started_at: u64) -> Publisher {
        Publisher::connect(self.running.ingest_addr, role::TRANSLATOR, started_at).await
    }

    async fn stats_when(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let addr = self.http();
        eventually(what, || async {
            let s = get_json(addr, "/api/stats").await;
            pred(&s).then_some(s)
        })
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

fn now() -> u64 {
    stats_common::now_ms() as u64
}

/// The start of the minute `n` whole minutes before the current one.
fn minute_ago(n: u64) -> u64 {
    (now() / MINUTE - n) * MINUTE
}

fn share(miner_id: u32, accepted: bool, work: u64, timestamp: u64) -> MinerShare {
    MinerShare {
        miner_id,
        accepted,
        work,
        timestamp,
    }
}

fn quote(id: &str, amount: u64, minted: bool, timestamp: u64) -> EhashQuoteOwned {
    EhashQuoteOwned {
        quote_id: str0255("quote_id", id).unwrap(),
        amount,
        minted,
        timestamp,
    }
}

/// Two miners since three minutes ago: alice mines 1.2 MH a minute (20
/// kH/s) in each of the last two whole minutes, bob half that and one
/// rejected share; three quotes, one minted; links and wallet reported.
async fn publish_mining(p: &mut Publisher) {
    let t = minute_ago(3);
    for (id, name) in [(1, "alice.rig1"), (2, "bob")] {
        p.send(MinerConnectedOwned {
            miner_id: id,
            name: str0255("name", name).unwrap(),
            timestamp: t,
        })
        .await;
    }
    for minute in [2, 1] {
        for i in 0..2 {
            p.send(share(1, true, 600_000, minute_ago(minute) + i * 1000))
                .await;
        }
        p.send(share(2, true, 600_000, minute_ago(minute) + 5000))
            .await;
    }
    p.send(share(2, false, 600_000, minute_ago(1) + 9000)).await;
    p.send(HashrateUpdate {
        miner_id: 1,
        hashrate: 21_000,
        timestamp: minute_ago(1) + 10_000,
    })
    .await;
    for (i, id) in ["q-aaa", "q-bbb", "q-ccc"].iter().enumerate() {
        p.send(quote(id, 4, false, minute_ago(1) + 11_000 + i as u64))
            .await;
    }
    p.send(quote("q-aaa", 4, true, minute_ago(1) + 20_000))
        .await;
    p.send(LinkStatus {
        link: link::POOL,
        up: true,
        timestamp: t,
    })
    .await;
    p.send(LinkStatus {
        link: link::MINT,
        up: true,
        timestamp: t,
    })
    .await;
    p.send(WalletBalance {
        balance: 4,
        timestamp: minute_ago(1) + 21_000,
    })
    .await;
}

#[tokio::test]
async fn published_events_show_in_the_api_metrics_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;

    let (_, page) = http(service.http(), "GET", "/", None).await;
    assert!(
        page.contains("not reported yet"),
        "wallet before any report"
    );
    assert!(page.contains("no miner connected"));

    let mut p = service.publisher(now()).await;
    publish_mining(&mut p).await;
    let s = service
        .stats_when("the wallet", |s| s["wallet_balance"] == 4)
        .await;
    assert_eq!(s["shares_accepted"], 6);
    assert_eq!(s["shares_rejected"], 1);
    assert_eq!(s["quotes_received"], 3);
    assert_eq!(s["quotes_minted"], 1);
    assert_eq!(s["links"]["pool"]["state"], "up");
    let miners = s["miners"].as_array().unwrap();
    assert_eq!(miners.len(), 2);
    assert_eq!(miners[0]["name"], "alice.rig1");
    assert_eq!(miners[0]["estimate"], 21_000);
    assert_eq!(miners[1]["shares"], 3);
    assert_eq!(miners[1]["shares_rejected"], 1);
    let quotes = s["recent_quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 3);
    let minted: Vec<_> = quotes.iter().filter(|q| q["state"] == "minted").collect();
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0]["quote_id"], "q-aaa");
    assert!(minted[0]["received_at"].is_number() && minted[0]["minted_at"].is_number());

    // Per-miner hashrate from shares: alice 1.2 MH a minute = 20 kH/s.
    let m = get_json(service.http(), "/api/miners?hours=1").await;
    let alice = &m["miners"][0];
    assert_eq!(alice["name"], "alice.rig1");
    let at = |points: &Value, t: u64| {
        points
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["t"] == t)
            .and_then(|p| p["hashrate"].as_f64())
    };
    assert_eq!(at(&alice["points"], minute_ago(1)), Some(20_000.0));
    assert_eq!(at(&m["miners"][1]["points"], minute_ago(2)), Some(10_000.0));
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    assert_eq!(at(&h["points"], minute_ago(2)), Some(30_000.0));
    let q = get_json(service.http(), "/api/quotes?limit=2").await;
    assert_eq!(q["quotes"].as_array().unwrap().len(), 2);
    let (status, _) = http(service.http(), "GET", "/api/miners?hours=100000", None).await;
    assert_eq!(status, 400);

    let (status, metrics) = http(service.http(), "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE hashpool_proxy_shares_accepted_total counter",
        "hashpool_proxy_shares_accepted_total 6",
        "hashpool_proxy_quotes_minted_total 1",
        "hashpool_proxy_miners_connected 2",
        "hashpool_proxy_wallet_balance 4",
        "hashpool_proxy_link_up{link=\"pool\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert!(metrics.contains("hashpool_proxy_miner_hashrate{miner=\"alice.rig1\"}"));

    let (_, page) = http(service.http(), "GET", "/?range=7d", None).await;
    assert!(page.contains(r#"data-stat="/wallet_balance" data-format="wallet">4<"#));
    assert!(page.contains(">alice.rig1<"));
    assert_eq!(
        page.matches("<svg").count(),
        2,
        "total and per-miner charts"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_restarted_service_keeps_history_and_shows_its_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let started_at = now();
    let mut p = service.publisher(started_at).await;
    publish_mining(&mut p).await;
    service
        .stats_when("the wallet", |s| s["wallet_balance"] == 4)
        .await;
    let stopped_at = now();
    service.stop().await;
    drop(p);

    let service = Service::start(dir.path()).await;
    let s = get_json(service.http(), "/api/stats").await;
    assert_eq!(s["shares_accepted"], 6, "totals kept");
    assert_eq!(s["recent_quotes"].as_array().unwrap().len(), 3);
    let m = get_json(service.http(), "/api/miners?hours=1").await;
    assert_eq!(m["miners"].as_array().unwrap().len(), 2, "history kept");
    let gaps = m["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{m}");
    assert!(gaps[0]["from"].as_u64().unwrap() >= stopped_at.saturating_sub(1000));

    // The same translator process reconnects: its miners are still live.
    let mut p = service.publisher(started_at).await;
    p.send(share(1, true, 1, now())).await;
    let s = service
        .stats_when("the reconnect", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(s["miners"].as_array().unwrap().len(), 2);
    service.stop().await;
}

#[tokio::test]
async fn a_restarted_translator_resets_miners_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut p = service.publisher(now() - 5000).await;
    publish_mining(&mut p).await;
    service
        .stats_when("the wallet", |s| s["wallet_balance"] == 4)
        .await;
    drop(p);

    let mut p = service.publisher(now()).await;
    p.send(MinerConnectedOwned {
        miner_id: 1,
        name: str0255("name", "carol").unwrap(),
        timestamp: now(),
    })
    .await;
    let s = service
        .stats_when("the new translator", |s| s["publisher"]["restarts"] == 1)
        .await;
    let s = if s["miners"].as_array().unwrap().len() == 1 {
        s
    } else {
        service
            .stats_when("carol", |s| s["miners"].as_array().unwrap().len() == 1)
            .await
    };
    assert_eq!(s["miners"][0]["name"], "carol", "old miners forgotten");
    assert_eq!(s["links"]["pool"]["state"], "unknown");
    assert_eq!(s["wallet_balance"], 4, "the wallet outlives the process");
    assert_eq!(s["shares_accepted"], 6, "totals kept");
    let m = get_json(service.http(), "/api/miners?hours=1").await;
    assert_eq!(m["miners"].as_array().unwrap().len(), 2, "history kept");
    service.stop().await;
}

#[tokio::test]
async fn dashboard_figures_match_the_api_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    // Three quarters of an hour of history at a varying rate, for the chart.
    for (id, name) in [(1, "alice.rig1"), (2, "bob")] {
        p.send(MinerConnectedOwned {
            miner_id: id,
            name: str0255("name", name).unwrap(),
            timestamp: minute_ago(46),
        })
        .await;
    }
    for minute in (4..=45).rev() {
        for i in 0..(2 + minute % 5) {
            p.send(share(
                1 + (i as u32 % 2),
                true,
                600_000,
                minute_ago(minute) + i * 1000,
            ))
            .await;
        }
    }
    publish_mining(&mut p).await;
    service
        .stats_when("the wallet", |s| s["wallet_balance"] == 4)
        .await;

    let browser = Browser::start().await;
    let url = format!("http://{}/", service.http());
    let mut checked = 0;
    // A minute boundary between page and API would move the windows: retry.
    for attempt in 0.. {
        let before = get_json(service.http(), "/api/stats").await;
        browser.open(&url).await;
        let figures = browser.stats().await;
        let after = get_json(service.http(), "/api/stats").await;
        let strip = |mut v: Value| {
            v["now"] = Value::Null;
            v
        };
        if strip(before.clone()) != strip(after) && attempt < 3 {
            continue;
        }
        checked = assert_figures_match(&figures, &before);
        let pointers: Vec<&str> = figures.iter().map(|f| f.0.as_str()).collect();
        for must in [
            "/hashrate",
            "/wallet_balance",
            "/links/pool/state",
            "/links/mint/state",
            "/miners/0/name",
            "/miners/0/hashrate",
            "/miners/1/shares_rejected",
            "/miners/1/connected_since",
            "/recent_quotes/0/quote_id",
            "/recent_quotes/2/state",
        ] {
            assert!(pointers.contains(&must), "{must} not on the page");
        }
        break;
    }
    let path = browser.screenshot("proxy-dashboard").await;
    println!(
        "proxy dashboard screenshot: {} ({checked} figures checked)",
        path.display()
    );
    browser.quit().await;
    service.stop().await;
}

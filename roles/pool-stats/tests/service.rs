//! pool-stats as a whole: real stats-sv2 frames over TCP in, JSON, HTML and
//! Prometheus text out; restarts of the service and of the publisher.

use std::net::SocketAddr;
use std::path::Path;

use pool_stats::{PoolStatsConfig, RunningPoolStats};
use roles_common::CancellationToken;
use serde_json::Value;
use stats_common::testing::{assert_figures_match, eventually, get_json, http, Browser, Publisher};
use stats_sv2::*;

const MINUTE: u64 = 60_000;

struct Service {
    running: RunningPoolStats,
    shutdown: CancellationToken,
}

impl Service {
    async fn start(dir: &Path) -> Service {
        let mut config = PoolStatsConfig::with_data_dir(dir);
        config.ingest_listen = "127.0.0.1:0".parse().unwrap();
        config.http_listen = "127.0.0.1:0".parse().unwrap();
        let shutdown = CancellationToken::new();
        let running = pool_stats::start(config, shutdown.clone()).await.unwrap();
        Service { running, shutdown }
    }

    fn http(&self) -> SocketAddr {
        self.running.http_addr
    }

    async fn publisher(&self, started_at: u64) -> Publisher {
        Publisher::connect(self.running.ingest_addr, role::POOL, started_at).await
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

fn share(downstream_id: u32, accepted: bool, work: u64, timestamp: u64) -> ShareSubmitted {
    ShareSubmitted {
        downstream_id,
        channel_id: 1,
        accepted,
        work,
        timestamp,
    }
}

/// A proxy that connected three minutes ago and mined 6 MH in each of the
/// last two whole minutes (100 kH/s), one share rejected, two quotes.
async fn publish_mining(p: &mut Publisher) {
    let t = minute_ago(3);
    p.send(DownstreamConnected {
        downstream_id: 1,
        flags: 6,
        timestamp: t,
    })
    .await;
    p.send(ChannelOpened {
        downstream_id: 1,
        channel_id: 1,
        timestamp: t,
    })
    .await;
    for minute in [2, 1] {
        for i in 0..3 {
            p.send(share(1, true, 2_000_000, minute_ago(minute) + i * 1000))
                .await;
        }
    }
    p.send(share(1, false, 0, minute_ago(1) + 5000)).await;
    for _ in 0..2 {
        p.send(QuoteCreated {
            downstream_id: 1,
            channel_id: 1,
            amount: 7,
            timestamp: minute_ago(1) + 6000,
        })
        .await;
    }
    p.send(LinkStatus {
        link: link::TEMPLATE_PROVIDER,
        up: true,
        timestamp: t,
    })
    .await;
    p.send(LinkStatus {
        link: link::MINT,
        up: false,
        timestamp: t,
    })
    .await;
}

async fn publish_block_and_mint_stats(p: &mut Publisher) {
    let mut hash = [0u8; 32];
    hash[31] = 0x0f;
    hash[0] = 0x42;
    p.send(BlockFoundOwned {
        height: 144,
        block_hash: hash.into(),
        channel_id: 1,
        timestamp: minute_ago(1) + 7000,
    })
    .await;
    p.send(MintStats {
        quotes_unpaid: 0,
        quotes_paid: 1,
        quotes_issued: 1,
        ehash_quoted: 14,
        ehash_issued: 7,
        timestamp: minute_ago(1) + 8000,
    })
    .await;
}

#[tokio::test]
async fn published_events_show_in_the_api_metrics_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    publish_mining(&mut p).await;

    let s = service
        .stats_when("the shares", |s| s["quotes_created"] == 2)
        .await;
    assert_eq!(s["publisher"]["connected"], true);
    assert_eq!(s["shares_accepted"], 6);
    assert_eq!(s["shares_rejected"], 1);
    assert_eq!(s["ehash_created"], 14);
    assert_eq!(s["links"]["template_provider"]["state"], "up");
    assert_eq!(s["links"]["mint"]["state"], "down");
    let proxy = &s["proxies"][0];
    assert_eq!(proxy["downstream_id"], 1);
    assert_eq!(proxy["channels"], 1);
    assert_eq!(proxy["shares_rejected"], 1);
    // Before the mint's figures arrive, redeemed is unknown, never "?".
    assert_eq!(s["quotes_redeemed"], Value::Null);
    let (_, page) = http(service.http(), "GET", "/", None).await;
    assert!(page.contains("waiting for the mint"));
    assert!(!page.contains(">?<"));

    // Hashrate from shares: 6 MH in a minute is 100 kH/s.
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    assert_eq!(h["step_secs"], 60);
    let points = h["points"].as_array().unwrap();
    let at = |t: u64| {
        points
            .iter()
            .find(|p| p["t"] == t)
            .unwrap_or_else(|| panic!("no point at {t}: {h}"))["hashrate"]
            .as_f64()
    };
    assert_eq!(at(minute_ago(1)), Some(100_000.0));
    assert_eq!(at(minute_ago(2)), Some(100_000.0));
    let day = get_json(service.http(), "/api/hashrate?hours=24").await;
    assert_eq!(day["step_secs"], 300);
    let miners = get_json(service.http(), "/api/miners?hours=1").await;
    assert_eq!(miners["downstreams"][0]["downstream_id"], "1");
    let (status, _) = http(service.http(), "GET", "/api/hashrate?hours=0", None).await;
    assert_eq!(status, 400);

    publish_block_and_mint_stats(&mut p).await;
    let s = service
        .stats_when("the mint's figures", |s| s["quotes_redeemed"] == 1)
        .await;
    assert_eq!(s["blocks_found"], 1);
    assert_eq!(s["mint"]["ehash_issued"], 7);
    let blocks = get_json(service.http(), "/api/blocks").await;
    let block = &blocks["blocks"][0];
    assert_eq!(block["height"], 144);
    assert!(
        block["hash"].as_str().unwrap().starts_with("0f00"),
        "{block}"
    );
    assert!(block["hash"].as_str().unwrap().ends_with("42"));

    let (status, metrics) = http(service.http(), "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE hashpool_pool_shares_accepted_total counter",
        "hashpool_pool_shares_accepted_total 6",
        "hashpool_pool_shares_rejected_total 1",
        "hashpool_pool_quotes_created_total 2",
        "hashpool_pool_blocks_found_total 1",
        "hashpool_pool_downstreams_connected 1",
        "hashpool_pool_link_up{link=\"template_provider\"} 1",
        "hashpool_pool_link_up{link=\"mint\"} 0",
        "hashpool_mint_quotes{state=\"issued\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }

    let (_, page) = http(service.http(), "GET", "/?range=24h", None).await;
    assert!(page.contains(r#"data-stat="/quotes_redeemed" data-format="mint-count">1<"#));
    assert!(page.contains("<svg"));
    assert!(!page.contains("waiting for the mint"));

    drop(p);
    service
        .stats_when("the publisher to be gone", |s| {
            s["publisher"]["connected"] == false
        })
        .await;
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
        .stats_when("the shares", |s| s["quotes_created"] == 2)
        .await;
    let stopped_at = now();
    service.stop().await;
    drop(p);

    let service = Service::start(dir.path()).await;
    let s = get_json(service.http(), "/api/stats").await;
    assert_eq!(s["shares_accepted"], 6, "totals kept");
    assert_eq!(s["publisher"]["connected"], false);
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    let gaps = h["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{h}");
    assert!(gaps[0]["from"].as_u64().unwrap() >= stopped_at.saturating_sub(1000));
    assert!(gaps[0]["to"].as_u64().unwrap() <= now());
    let known: Vec<f64> = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["hashrate"].as_f64())
        .filter(|v| *v > 0.0)
        .collect();
    assert_eq!(known, [100_000.0, 100_000.0], "history kept: {h}");

    // The same pool process reconnects: its proxies are still live.
    let mut p = service.publisher(started_at).await;
    p.send(share(1, true, 1, now())).await;
    let s = service
        .stats_when("the reconnect", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(s["proxies"][0]["shares_accepted"], 7);
    assert_eq!(s["links"]["template_provider"]["state"], "up");
    service.stop().await;
}

#[tokio::test]
async fn a_restarted_pool_resets_live_state_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut p = service.publisher(now() - 10_000).await;
    publish_mining(&mut p).await;
    service
        .stats_when("the shares", |s| s["quotes_created"] == 2)
        .await;
    drop(p);

    // New process, new started_at; it reports its dropped events.
    let mut p = Publisher::connect(service.running.ingest_addr, role::POOL, now()).await;
    p.send(PublisherHello {
        role: role::POOL,
        started_at: 1,
        dropped: 0,
        timestamp: 1,
    })
    .await;
    p.expect_closed().await; // a second hello breaks the protocol

    let mut p = service.publisher(now() + 1).await;
    p.send(share(9, true, 1_000, now())).await;
    let s = service
        .stats_when("the new pool", |s| s["shares_accepted"] == 7)
        .await;
    let proxies = s["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 1, "old proxies forgotten: {s}");
    assert_eq!(proxies[0]["downstream_id"], 9);
    assert_eq!(s["links"]["mint"]["state"], "unknown");
    assert!(s["publisher"]["restarts"].as_u64().unwrap() >= 1);
    assert_eq!(s["quotes_created"], 2, "totals kept");
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    assert!(h["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["hashrate"] == 100_000.0));
    service.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut good = service.publisher(now()).await;

    let mut bad = service.publisher(now()).await;
    bad.send_raw(&[0, 0, 0x7F, 2, 0, 0, 1, 2]).await; // unknown message type
    bad.expect_closed().await;
    let mut wrong_role = Publisher::connect(service.running.ingest_addr, role::TRANSLATOR, 1).await;
    wrong_role.expect_closed().await;

    good.send(share(1, true, 60, now())).await;
    service
        .stats_when("the good publisher's share", |s| s["shares_accepted"] == 1)
        .await;
    service.stop().await;
}

#[tokio::test]
async fn dashboard_figures_match_the_api_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    // Three quarters of an hour of history at a varying rate, for the chart.
    for minute in (4..=45).rev() {
        for i in 0..(2 + minute % 5) {
            p.send(share(1, true, 2_000_000, minute_ago(minute) + i * 1000))
                .await;
        }
    }
    publish_mining(&mut p).await;
    publish_block_and_mint_stats(&mut p).await;
    service
        .stats_when("the events", |s| {
            s["blocks_found"] == 1 && s["quotes_redeemed"] == 1
        })
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
            "/shares_accepted",
            "/quotes_created",
            "/quotes_redeemed",
            "/blocks_found",
            "/links/template_provider/state",
            "/links/mint/state",
            "/proxies/0/shares_accepted",
            "/proxies/0/last_share",
            "/recent_blocks/0/hash",
        ] {
            assert!(pointers.contains(&must), "{must} not on the page");
        }
        break;
    }
    let path = browser.screenshot("pool-dashboard").await;
    println!(
        "pool dashboard screenshot: {} ({checked} figures checked)",
        path.display()
    );
    browser.quit().await;
    service.stop().await;
}

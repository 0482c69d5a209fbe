//! pool-stats as a whole: real stats-sv2 frames over TCP in, JSON, HTML and
//! Prometheus text out. The suite both stats services run, then the pool's
//! own figures: proxies, quotes, blocks and the mint's counters.

use pool_stats::PoolStats;
use serde_json::Value;
use stats_common::testing::suite::Fixture;
use stats_common::testing::{
    get_json, http, live_entry, live_snapshot, minute_ago, now, TestService,
};
use stats_sv2::*;

struct Pool;

stats_common::service_suite!(Pool);

impl Fixture for Pool {
    type Service = PoolStats;
    // 6 MH in a minute.
    const HASHRATE: f64 = 100_000.0;
    const CONNECTED: &'static str = "/proxies";
    const LEFT_OUT: &'static str = "/proxies_left_out";
    const LINK_UP: &'static str = "/links/template_provider/state";
    const ON_DASHBOARD: &'static [&'static str] = &[
        "/quotes_created",
        "/quotes_redeemed",
        "/blocks_found",
        "/links/mint/state",
        "/proxies/0/shares_accepted",
        "/proxies/0/last_share",
        "/recent_blocks/0/hash",
    ];
    const SCREENSHOT: &'static str = "pool-dashboard";

    fn mining() -> Vec<StatsMessage> {
        mining()
    }

    fn mined(stats: &Value) -> bool {
        stats["quotes_created"] == 2 && stats["links"]["mint"]["state"] == "down"
    }

    fn share(id: u32, work: u64, t: u64) -> StatsMessage {
        share(id, true, work, t).into()
    }

    const ID: &'static str = "downstream_id";

    fn snapshot(ids: &[u32], since: u64, t: u64) -> Vec<StatsMessage> {
        let entries = ids
            .iter()
            .map(|&id| live_entry(live::DOWNSTREAM, id, since, t));
        live_snapshot(entries.collect(), t)
    }

    fn connect(downstream_id: u32, timestamp: u64) -> StatsMessage {
        DownstreamConnected {
            downstream_id,
            flags: 0,
            timestamp,
        }
        .into()
    }

    fn everything() -> Vec<StatsMessage> {
        let mut events = Vec::new();
        // Three quarters of an hour at a varying rate, for the chart.
        for minute in (4..=45).rev() {
            for i in 0..(2 + minute % 5) {
                events.push(share(1, true, 2_000_000, minute_ago(minute) + i * 1000).into());
            }
        }
        events.extend(mining());
        events.extend(block_and_mint_stats());
        events
    }

    fn shows_everything(stats: &Value) -> bool {
        stats["blocks_found"] == 1 && stats["quotes_redeemed"] == 1
    }

    fn assert_kept(stats: &Value, miners: &Value) {
        assert_eq!(stats["proxies"][0]["shares_accepted"], 7, "{stats}");
        assert_eq!(miners["downstreams"][0]["downstream_id"], "1", "{miners}");
    }

    fn assert_reset(stats: &Value, miners: &Value) {
        assert_eq!(stats["proxies"][0]["downstream_id"], 9, "{stats}");
        assert_eq!(stats["links"]["mint"]["state"], "unknown");
        assert_eq!(stats["quotes_created"], 2, "totals kept");
        assert_eq!(
            miners["downstreams"][0]["downstream_id"], "1",
            "history kept: {miners}"
        );
    }
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
fn mining() -> Vec<StatsMessage> {
    let t = minute_ago(3);
    let mut events: Vec<StatsMessage> = vec![
        DownstreamConnected {
            downstream_id: 1,
            flags: 6,
            timestamp: t,
        }
        .into(),
        ChannelOpened {
            downstream_id: 1,
            channel_id: 1,
            timestamp: t,
        }
        .into(),
    ];
    for minute in [2, 1] {
        for i in 0..3 {
            events.push(share(1, true, 2_000_000, minute_ago(minute) + i * 1000).into());
        }
    }
    events.push(share(1, false, 0, minute_ago(1) + 5000).into());
    for _ in 0..2 {
        let quote = QuoteCreated {
            downstream_id: 1,
            channel_id: 1,
            amount: 7,
            timestamp: minute_ago(1) + 6000,
        };
        events.push(quote.into());
    }
    for (link, up) in [(link::TEMPLATE_PROVIDER, true), (link::MINT, false)] {
        events.push(
            LinkStatus {
                link,
                up,
                timestamp: t,
            }
            .into(),
        );
    }
    events
}

fn block_and_mint_stats() -> Vec<StatsMessage> {
    let mut hash = [0u8; 32];
    hash[31] = 0x0f;
    hash[0] = 0x42;
    vec![
        BlockFoundOwned {
            height: 144,
            block_hash: hash.into(),
            channel_id: 1,
            timestamp: minute_ago(1) + 7000,
        }
        .into(),
        MintStats {
            quotes_unpaid: 0,
            quotes_paid: 1,
            quotes_issued: 1,
            ehash_quoted: 14,
            ehash_issued: 7,
            timestamp: minute_ago(1) + 8000,
        }
        .into(),
    ]
}

#[tokio::test]
async fn proxies_quotes_blocks_and_the_mint_show_in_the_api_metrics_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<PoolStats>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    p.send_all(mining()).await;

    let s = service.stats_when("the mining", Pool::mined).await;
    assert_eq!(s["ehash_created"], 14);
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
    let miners = get_json(service.http(), "/api/miners?hours=1").await;
    assert_eq!(miners["downstreams"][0]["downstream_id"], "1");

    p.send_all(block_and_mint_stats()).await;
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
    assert!(!page.contains("waiting for the mint"));
    service.stop().await;
}

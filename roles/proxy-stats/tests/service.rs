//! proxy-stats as a whole: real stats-sv2 frames over TCP in, JSON, HTML and
//! Prometheus text out. The suite both stats services run, then the
//! translator's own figures: miners by name, the wallet and quotes.

use ehash::wire::str0255;
use proxy_stats::ProxyStats;
use serde_json::Value;
use stats_common::testing::suite::Fixture;
use stats_common::testing::{
    get_json, http, live_entry, live_snapshot, minute_ago, now, TestService,
};
use stats_sv2::*;

struct Proxy;

stats_common::service_suite!(Proxy);

impl Fixture for Proxy {
    type Service = ProxyStats;
    // alice 1.2 MH and bob 0.6 MH in a minute.
    const HASHRATE: f64 = 30_000.0;
    const CONNECTED: &'static str = "/miners";
    const LEFT_OUT: &'static str = "/miners_left_out";
    const LINK_UP: &'static str = "/links/pool/state";
    const ON_DASHBOARD: &'static [&'static str] = &[
        "/wallet_balance",
        "/links/mint/state",
        "/miners/0/name",
        "/miners/0/hashrate",
        "/miners/1/shares_rejected",
        "/miners/1/connected_since",
        "/recent_quotes/0/quote_id",
        "/recent_quotes/2/state",
    ];
    const SCREENSHOT: &'static str = "proxy-dashboard";

    fn mining() -> Vec<StatsMessage> {
        mining()
    }

    fn mined(stats: &Value) -> bool {
        stats["wallet_balance"] == 4
    }

    fn share(id: u32, work: u64, t: u64) -> StatsMessage {
        share(id, true, work, t).into()
    }

    const ID: &'static str = "miner_id";

    fn snapshot(ids: &[u32], since: u64, t: u64) -> Vec<StatsMessage> {
        let entries = ids.iter().map(|&id| LiveEntryOwned {
            name: str0255("name", &format!("rig{id:05}")).unwrap(),
            ..live_entry(live::MINER, id, since, t)
        });
        live_snapshot(entries.collect(), t)
    }

    fn connect(miner_id: u32, timestamp: u64) -> StatsMessage {
        MinerConnectedOwned {
            miner_id,
            name: str0255("name", &format!("rig{miner_id:05}")).unwrap(),
            timestamp,
        }
        .into()
    }

    fn everything() -> Vec<StatsMessage> {
        let mut events = connect_alice_and_bob(minute_ago(46));
        // Three quarters of an hour at a varying rate, for the charts.
        for minute in (4..=45).rev() {
            for i in 0..(2 + minute % 5) {
                let miner = 1 + (i as u32 % 2);
                events.push(share(miner, true, 600_000, minute_ago(minute) + i * 1000).into());
            }
        }
        events.extend(mining());
        events
    }

    fn shows_everything(stats: &Value) -> bool {
        Self::mined(stats)
    }

    fn assert_kept(stats: &Value, miners: &Value) {
        assert_eq!(stats["recent_quotes"].as_array().unwrap().len(), 3);
        assert_eq!(stats["wallet_balance"], 4);
        assert_eq!(miners["miners"].as_array().unwrap().len(), 2, "{miners}");
    }

    fn assert_reset(stats: &Value, miners: &Value) {
        // A miner seen only through its shares is named after its id.
        assert_eq!(
            stats["miners"][0]["name"], "miner 9",
            "old miners forgotten"
        );
        assert_eq!(
            stats["wallet_balance"], 4,
            "the wallet outlives the process"
        );
        assert_eq!(stats["quotes_received"], 3, "totals kept");
        let names: Vec<&Value> = miners["miners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["name"])
            .collect();
        assert_eq!(names, ["alice.rig1", "bob"], "history kept: {miners}");
    }
}

fn share(miner_id: u32, accepted: bool, work: u64, timestamp: u64) -> MinerShare {
    MinerShare {
        miner_id,
        accepted,
        backlogged: false,
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

fn connect_alice_and_bob(t: u64) -> Vec<StatsMessage> {
    [(1, "alice.rig1"), (2, "bob")]
        .into_iter()
        .map(|(id, name)| {
            MinerConnectedOwned {
                miner_id: id,
                name: str0255("name", name).unwrap(),
                timestamp: t,
            }
            .into()
        })
        .collect()
}

/// Two miners since three minutes ago: alice mines 1.2 MH a minute (20
/// kH/s) in each of the last two whole minutes, bob half that and one
/// rejected share; three quotes, one minted; links and wallet reported.
fn mining() -> Vec<StatsMessage> {
    let t = minute_ago(3);
    let mut events = connect_alice_and_bob(t);
    for minute in [2, 1] {
        for i in 0..2 {
            events.push(share(1, true, 600_000, minute_ago(minute) + i * 1000).into());
        }
        events.push(share(2, true, 600_000, minute_ago(minute) + 5000).into());
    }
    events.push(share(2, false, 600_000, minute_ago(1) + 9000).into());
    events.push(
        HashrateUpdate {
            miner_id: 1,
            hashrate: 21_000,
            timestamp: minute_ago(1) + 10_000,
        }
        .into(),
    );
    for (i, id) in ["q-aaa", "q-bbb", "q-ccc"].iter().enumerate() {
        events.push(quote(id, 4, false, minute_ago(1) + 11_000 + i as u64).into());
    }
    events.push(quote("q-aaa", 4, true, minute_ago(1) + 20_000).into());
    for link in [link::POOL, link::MINT] {
        events.push(
            LinkStatus {
                link,
                up: true,
                timestamp: t,
            }
            .into(),
        );
    }
    events.push(
        WalletBalance {
            balance: 4,
            timestamp: minute_ago(1) + 21_000,
        }
        .into(),
    );
    events
}

#[tokio::test]
async fn miners_the_wallet_and_quotes_show_in_the_api_metrics_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<ProxyStats>::start(dir.path()).await;

    let (_, page) = http(service.http(), "GET", "/", None).await;
    assert!(
        page.contains("not reported yet"),
        "wallet before any report"
    );
    assert!(page.contains("no miner connected"));

    let mut p = service.publisher(now()).await;
    p.send_all(mining()).await;
    let s = service.stats_when("the wallet", Proxy::mined).await;
    assert_eq!(s["quotes_received"], 3);
    assert_eq!(s["quotes_minted"], 1);
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
    assert!(metrics.contains("hashpool_proxy_miner_hashrate{miner=\"alice.rig1\",miner_id=\"1\"}"));

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
async fn a_restarted_translator_names_its_miners_anew() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<ProxyStats>::start(dir.path()).await;
    let mut p = service.publisher(now() - 5000).await;
    p.send_all(mining()).await;
    service.stats_when("the wallet", Proxy::mined).await;
    drop(p);

    let mut p = service.publisher(now()).await;
    p.send(MinerConnectedOwned {
        miner_id: 1,
        name: str0255("name", "carol").unwrap(),
        timestamp: now(),
    })
    .await;
    let s = service
        .stats_when("carol", |s| s["miners"][0]["name"] == "carol")
        .await;
    assert_eq!(s["miners"].as_array().unwrap().len(), 1, "{s}");
    service.stop().await;
}

#[tokio::test]
async fn miners_of_one_name_each_show_their_own_hashrate() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<ProxyStats>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    for id in [1, 2] {
        p.send(MinerConnectedOwned {
            miner_id: id,
            name: str0255("name", "farm").unwrap(),
            timestamp: minute_ago(3),
        })
        .await;
    }
    for minute in [2, 1] {
        p.send(share(1, true, 1_200_000, minute_ago(minute))).await;
    }
    let s = service
        .stats_when("both miners", |s| {
            s["miners"].as_array().is_some_and(|m| m.len() == 2) && s["miners"][0]["shares"] == 2
        })
        .await;
    let hashrate = |row: usize| s["miners"][row]["hashrate"].as_f64();
    assert!(hashrate(0).is_some_and(|h| h > 0.0), "{s}");
    assert_eq!(hashrate(1), Some(0.0), "the other rig did no work: {s}");

    let (_, metrics) = http(service.http(), "GET", "/metrics", None).await;
    let rows: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("hashpool_proxy_miner_hashrate{"))
        .collect();
    assert_eq!(rows.len(), 2, "one series per miner:\n{metrics}");
    assert!(rows[1].starts_with("hashpool_proxy_miner_hashrate{miner=\"farm\",miner_id=\"2\"} 0"));
    service.stop().await;
}

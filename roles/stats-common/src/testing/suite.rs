//! The tests both stats services run, each through [`service_suite!`](crate::service_suite)
//! in its `tests/service.rs`: the config, ingest, restarts of either side,
//! the routes both serve, and the dashboard against the API in Chromium.
//! What is a service's own is tested next to that line.

use std::path::Path;

use serde_json::Value;
use stats_sv2::{role, LinkStatus, PublisherHello, StatsMessage};

use super::{
    assert_figures_match, get_json, http, minute_ago, now, Browser, Publisher, TestService,
};
use crate::api::MAX_LISTED;
use crate::{Service, ServiceConfig, ServiceState};
use roles_common::stats_publisher::PublisherSecret;

/// What the suite needs of one service.
pub trait Fixture {
    type Service: Service;
    /// The hashrate [`Fixture::mining`] makes in each of the last two whole
    /// minutes (H/s).
    const HASHRATE: f64;
    /// The `/api/stats` array of what is connected to the publisher.
    const CONNECTED: &'static str;
    /// The `/api/stats` count of what is connected but not in
    /// [`Fixture::CONNECTED`].
    const LEFT_OUT: &'static str;
    /// The `/api/stats` pointer of a link state [`Fixture::mining`] reports up.
    const LINK_UP: &'static str;
    /// `/api/stats` pointers the dashboard shows after [`Fixture::everything`],
    /// besides the hashrate, the share counts and the link states.
    const ON_DASHBOARD: &'static [&'static str];
    /// File name of the dashboard's screenshot, without `.png`.
    const SCREENSHOT: &'static str;

    /// One publisher process mining since three minutes ago: six accepted
    /// shares in the last two whole minutes, [`Fixture::HASHRATE`] in each,
    /// one rejected share, and [`Fixture::LINK_UP`] reported up.
    fn mining() -> Vec<StatsMessage>;
    /// Whether `/api/stats` shows all of [`Fixture::mining`].
    fn mined(stats: &Value) -> bool;
    /// An accepted share of `work` at `t` by miner (or downstream) `id`;
    /// [`Fixture::mining`] connects id 1.
    fn share(id: u32, work: u64, t: u64) -> StatsMessage;
    /// Miner (or downstream) `id` connecting at `t`.
    fn connect(id: u32, t: u64) -> StatsMessage;
    /// The field of [`Fixture::CONNECTED`]'s entries holding their id.
    const ID: &'static str;
    /// A snapshot naming miners (or downstreams) `ids` live since `since`,
    /// dated `t`.
    fn snapshot(ids: &[u32], since: u64, t: u64) -> Vec<StatsMessage>;
    /// Three quarters of an hour of history, [`Fixture::mining`] and all
    /// else the dashboard shows.
    fn everything() -> Vec<StatsMessage>;
    /// Whether `/api/stats` shows all of [`Fixture::everything`].
    fn shows_everything(stats: &Value) -> bool;
    /// The service restarted after [`Fixture::mining`], and the same
    /// publisher process sent a share by id 1: checks the service's own
    /// figures in `/api/stats` and `/api/miners?hours=1`.
    fn assert_kept(stats: &Value, miners: &Value);
    /// A new publisher process sent a share by id 9 after
    /// [`Fixture::mining`]: checks as [`Fixture::assert_kept`] does.
    fn assert_reset(stats: &Value, miners: &Value);
}

/// Runs the suite's tests for the [`Fixture`] `$fixture`.
#[macro_export]
macro_rules! service_suite {
    ($fixture:ty) => {
        $crate::service_suite!(@sync $fixture:
            the_shipped_config_loads_with_the_documented_defaults,
            bad_config_values_are_refused_naming_the_field);
        $crate::service_suite!(@async $fixture:
            published_events_show_in_the_api_and_dashboard,
            a_restarted_service_keeps_history_and_shows_its_downtime,
            a_restarted_publisher_resets_live_state_and_keeps_history,
            an_older_publisher_process_waits_until_the_newer_one_is_gone,
            link_states_reported_again_keep_their_since,
            a_malformed_frame_closes_only_its_connection,
            a_crowd_is_listed_by_hashrate_and_counted,
            a_snapshot_keeps_what_it_names_and_drops_the_rest,
            refused_messages_are_counted_in_the_api_and_metrics,
            only_a_publisher_with_the_secret_is_heard,
            dashboard_figures_match_the_api_in_chromium);
    };
    (@sync $fixture:ty: $($test:ident),*) => {
        $(#[test]
        fn $test() {
            $crate::testing::suite::$test::<$fixture>();
        })*
    };
    (@async $fixture:ty: $($test:ident),*) => {
        $(#[tokio::test]
        async fn $test() {
            $crate::testing::suite::$test::<$fixture>().await;
        })*
    };
}

fn load<S: Service>(text: &str) -> Result<ServiceConfig<S>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    roles_common::load_config(&path, &unset_env_prefix::<S>())
}

/// An environment prefix no variable has, so the environment changes nothing.
fn unset_env_prefix<S: Service>() -> String {
    format!("{}_TEST_UNSET", S::DEFAULTS.env_prefix)
}

pub fn the_shipped_config_loads_with_the_documented_defaults<F: Fixture>() {
    let defaults = <F::Service as Service>::DEFAULTS;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(format!("{}.toml", defaults.name));
    let shipped: ServiceConfig<F::Service> =
        roles_common::load_config(&path, &unset_env_prefix::<F::Service>()).unwrap();
    let loaded = load::<F::Service>("").unwrap();
    assert_eq!(shipped.ingest_listen, loaded.ingest_listen);
    assert_eq!(shipped.http_listen, loaded.http_listen);
    assert_eq!(shipped.data_dir, loaded.data_dir);
    assert_eq!(shipped.retention_days, loaded.retention_days);
    assert_eq!(shipped.max_per_miner_rows, loaded.max_per_miner_rows);
    assert_eq!(shipped.max_records, loaded.max_records);
    assert_eq!(loaded.ingest_listen.port(), defaults.ingest_port);
    assert!(
        loaded.ingest_listen.ip().is_loopback() && shipped.ingest_listen.ip().is_loopback(),
        "no secret by default: this machine only"
    );
    assert_eq!(shipped.publisher_secret, None);
    assert_eq!(loaded.publisher_secret, None);
    assert_eq!(loaded.http_listen.port(), defaults.http_port);
    assert_eq!(loaded.data_dir, Path::new(defaults.data_dir));
}

pub fn bad_config_values_are_refused_naming_the_field<F: Fixture>() {
    for (text, field) in [
        ("retention_days = 0\n", "retention_days"),
        ("retention_days = 100000\n", "retention_days"),
        ("ingest_listen = \"nowhere\"\n", "ingest_listen"),
        ("data_dir = \"\"\n", "data_dir"),
        ("http_port = 1\n", "http_port"),
        // Reachable from elsewhere without a secret: anyone could publish.
        ("ingest_listen = \"0.0.0.0:4000\"\n", "publisher_secret"),
        ("ingest_listen = \"[::]:4000\"\n", "publisher_secret"),
        ("publisher_secret = \"too short\"\n", "publisher_secret"),
        ("max_per_miner_rows = 0\n", "max_per_miner_rows"),
        ("max_records = 0\n", "max_records"),
    ] {
        let err = load::<F::Service>(text).unwrap_err();
        assert!(err.contains(field), "{text:?} gave {err}");
        assert!(!err.contains('\n'));
        assert!(
            !err.contains("too short"),
            "the secret is not echoed: {err}"
        );
    }
    let open = load::<F::Service>(
        "ingest_listen = \"0.0.0.0:4000\"\npublisher_secret = \"0123456789abcdef\"\n",
    )
    .unwrap();
    assert!(open.publisher_secret.is_some());
}

pub async fn a_crowd_is_listed_by_hashrate_and_counted<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    let crowd = MAX_LISTED as u32 + 3;
    let mut events: Vec<_> = (1..=crowd)
        .map(|id| F::connect(id, minute_ago(3)))
        .collect();
    // The last connected, last in the list's order, are the only busy ones.
    events.extend((crowd - 2..=crowd).map(|id| F::share(id, 6_000_000, minute_ago(1))));
    p.send_all(events).await;

    let s = service
        .stats_when("the crowd", |s| s["shares_accepted"] == 3)
        .await;
    assert_eq!(connected::<F>(&s), MAX_LISTED);
    assert_eq!(s.pointer(F::LEFT_OUT).unwrap(), 3);
    let busy = s.pointer(F::CONNECTED).unwrap().as_array().unwrap();
    let busy = busy.iter().filter(|e| e["hashrate"].as_f64() > Some(0.0));
    assert_eq!(busy.count(), 3, "the busiest are listed");

    let (_, page) = http(service.http(), "GET", "/", None).await;
    let note = format!(r#"data-stat="{}" data-format="count">3<"#, F::LEFT_OUT);
    assert!(page.contains(&note), "no left-out note");
    let (_, metrics) = http(service.http(), "GET", "/metrics", None).await;
    assert!(
        metrics.contains(&format!("_connected {crowd}\n")),
        "{metrics}"
    );
    service.stop().await;
}

pub async fn a_snapshot_keeps_what_it_names_and_drops_the_rest<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    let mut events: Vec<_> = (1..=3).map(|id| F::connect(id, minute_ago(3))).collect();
    events.push(F::share(1, 6_000_000, minute_ago(1)));
    // 2 and 3 leave, their disconnects lost; 4 came, its connect lost.
    events.extend(F::snapshot(&[1, 4], minute_ago(2), now()));
    events.push(F::share(4, 6_000_000, minute_ago(1)));
    p.send_all(events).await;

    let s = service
        .stats_when("the snapshot", |s| s["shares_accepted"] == 2)
        .await;
    let live = s.pointer(F::CONNECTED).unwrap().as_array().unwrap();
    let ids: Vec<_> = live.iter().map(|e| e[F::ID].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 4], "{s}");
    assert_eq!(live[0]["shares_accepted"], 1, "counts kept: {s}");
    assert_eq!(live[1]["connected_since"], minute_ago(2), "{s}");
    service.stop().await;
}

pub async fn refused_messages_are_counted_in_the_api_and_metrics<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    let day = 86_400_000;
    p.send_all(vec![
        F::share(1, 1, now() + day),
        F::share(1, 1, now() + day),
        F::share(1, 1, 1),
        F::share(1, 1, now()),
    ])
    .await;
    let s = service
        .stats_when("the share in range", |s| s["shares_accepted"] == 1)
        .await;
    assert_eq!(s["losses"]["refused_future"], 2, "{s}");
    assert_eq!(s["losses"]["refused_past"], 1, "{s}");
    assert_eq!(s["losses"]["writes_dropped"], 0, "{s}");
    let (_, metrics) = http(service.http(), "GET", "/metrics", None).await;
    for line in [
        "_stats_refused_total{reason=\"future\"} 2",
        "_stats_refused_total{reason=\"past\"} 1",
        "_stats_refused_total{reason=\"live_limit\"} 0",
        "_stats_writes_dropped_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l.ends_with(line)),
            "{line}:\n{metrics}"
        );
    }
    service.stop().await;
}

/// The hashrate of the point at `t` of a chart from `/api/hashrate`.
fn hashrate_at(chart: &Value, t: u64) -> Option<f64> {
    chart["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["t"] == t)
        .unwrap_or_else(|| panic!("no point at {t}: {chart}"))["hashrate"]
        .as_f64()
}

fn connected<F: Fixture>(stats: &Value) -> usize {
    stats
        .pointer(F::CONNECTED)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

pub async fn published_events_show_in_the_api_and_dashboard<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    p.send_all(F::mining()).await;

    let s = service.stats_when("the mining", F::mined).await;
    assert_eq!(s["publisher"]["connected"], true);
    assert_eq!(s["shares_accepted"], 6);
    assert_eq!(s["shares_rejected"], 1);
    assert_eq!(s.pointer(F::LINK_UP).unwrap(), "up");
    assert!(connected::<F>(&s) > 0, "{s}");

    // Hashrate from shares: the accepted work of a minute over 60 s.
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    assert_eq!(h["step_secs"], 60);
    assert_eq!(hashrate_at(&h, minute_ago(1)), Some(F::HASHRATE));
    assert_eq!(hashrate_at(&h, minute_ago(2)), Some(F::HASHRATE));
    let day = get_json(service.http(), "/api/hashrate?hours=24").await;
    assert_eq!(day["step_secs"], 300);
    for path in ["/api/hashrate?hours=0", "/api/hashrate?hours=100000"] {
        let (status, body) = http(service.http(), "GET", path, None).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }

    let (status, metrics) = http(service.http(), "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("_publisher_connected 1\n"), "{metrics}");

    let (status, page) = http(service.http(), "GET", "/?range=24h", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<svg"));
    assert!(!page.contains(">?<"));

    drop(p);
    service
        .stats_when("the publisher to be gone", |s| {
            s["publisher"]["connected"] == false
        })
        .await;
    service.stop().await;
}

pub async fn a_restarted_service_keeps_history_and_shows_its_downtime<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let started_at = now();
    let mut p = service.publisher(started_at).await;
    p.send_all(F::mining()).await;
    let before = service.stats_when("the mining", F::mined).await;
    let stopped_at = now();
    service.stop().await;
    drop(p);
    // The heartbeat counts in milliseconds: a restart within the same one
    // would leave no downtime to show.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let service = TestService::<F::Service>::start(dir.path()).await;
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
    assert_eq!(known, [F::HASHRATE, F::HASHRATE], "history kept: {h}");

    // The same publisher process reconnects: what it had connected is live.
    let mut p = service.publisher(started_at).await;
    p.send(F::share(1, 1, now())).await;
    let s = service
        .stats_when("the reconnect", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(connected::<F>(&s), connected::<F>(&before), "{s}");
    assert_eq!(s.pointer(F::LINK_UP).unwrap(), "up");
    F::assert_kept(&s, &get_json(service.http(), "/api/miners?hours=1").await);
    service.stop().await;
}

pub async fn a_restarted_publisher_resets_live_state_and_keeps_history<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now() - 10_000).await;
    p.send_all(F::mining()).await;
    service.stats_when("the mining", F::mined).await;
    drop(p);

    // A new process: a new started_at.
    let mut p = service.publisher(now()).await;
    p.send(F::share(9, 1_000, now())).await;
    let s = service
        .stats_when("the new publisher", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(connected::<F>(&s), 1, "the old connections forgotten: {s}");
    assert_eq!(s.pointer(F::LINK_UP).unwrap(), "unknown");
    assert!(s["publisher"]["restarts"].as_u64().unwrap() >= 1);
    let h = get_json(service.http(), "/api/hashrate?hours=1").await;
    assert!(
        h["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["hashrate"] == F::HASHRATE),
        "history kept: {h}"
    );
    F::assert_reset(&s, &get_json(service.http(), "/api/miners?hours=1").await);
    service.stop().await;
}

/// Two publisher processes of one role (two pools on one service, or an
/// old process still running beside its successor): the one started last
/// keeps the live state, and the older one is let in once it is gone.
pub async fn an_older_publisher_process_waits_until_the_newer_one_is_gone<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let started_at = now();
    let mut newer = service.publisher(started_at).await;
    newer.send_all(F::mining()).await;
    let before = service.stats_when("the mining", F::mined).await;

    let mut older = service.publisher(started_at - 60_000).await;
    older.expect_closed().await;
    newer.send(F::share(1, 1, now())).await;
    let s = service
        .stats_when("the newer one's share", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(s["publisher"]["started_at"], started_at, "{s}");
    assert_eq!(s["publisher"]["restarts"], 0, "{s}");
    assert_eq!(connected::<F>(&s), connected::<F>(&before), "{s}");

    drop(newer);
    service
        .stats_when("the newer one gone", |s| {
            s["publisher"]["connected"] == false
        })
        .await;
    let mut older = service.publisher(started_at - 60_000).await;
    older.send(F::share(9, 1_000, now())).await;
    let s = service
        .stats_when("the older one's share", |s| s["shares_accepted"] == 8)
        .await;
    assert_eq!(s["publisher"]["started_at"], started_at - 60_000, "{s}");
    assert_eq!(s["publisher"]["restarts"], 1, "{s}");
    assert_eq!(connected::<F>(&s), 1, "its own live state only: {s}");
    service.stop().await;
}

pub async fn link_states_reported_again_keep_their_since<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let started_at = now();
    let mut p = service.publisher(started_at).await;
    p.send_all(F::mining()).await;
    let before = service.stats_when("the mining", F::mined).await;
    drop(p);

    // The same publisher reconnects and reports its links again, as it
    // does on every connection, then a share to wait for.
    let mut p = service.publisher(started_at).await;
    let again = F::mining()
        .into_iter()
        .filter_map(|msg| match msg {
            StatsMessage::LinkStatus(l) => Some(
                LinkStatus {
                    timestamp: now(),
                    ..l
                }
                .into(),
            ),
            _ => None,
        })
        .collect();
    p.send_all(again).await;
    p.send(F::share(1, 1, now())).await;
    let s = service
        .stats_when("the share after the links", |s| s["shares_accepted"] == 7)
        .await;
    assert_eq!(s.pointer(F::LINK_UP).unwrap(), "up");
    assert_eq!(s["links"], before["links"], "{s}");
    service.stop().await;
}

pub async fn a_malformed_frame_closes_only_its_connection<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut good = service.publisher(now()).await;

    let mut bad = service.publisher(now()).await;
    bad.send_raw(&[0, 0, 0x7F, 2, 0, 0, 1, 2]).await; // unknown message type
    bad.expect_closed().await;
    let own_role = <F::Service as Service>::State::ROLE;
    let other_role = if own_role == role::POOL {
        role::TRANSLATOR
    } else {
        role::POOL
    };
    let mut wrong_role = Publisher::connect(service.running.ingest_addr, other_role, 1).await;
    wrong_role.expect_closed().await;
    let mut twice = service.publisher(now()).await;
    twice
        .send(PublisherHello::new(own_role, 1, 0, b"", 1).unwrap())
        .await;
    twice.expect_closed().await; // a second hello breaks the protocol

    good.send(F::share(1, 60, now())).await;
    service
        .stats_when("the good publisher's share", |s| s["shares_accepted"] == 1)
        .await;
    service.stop().await;
}

/// A service with a publisher secret: publishers without it (no secret, a
/// wrong one, the version 1 hello that had none, no hello at all) are
/// closed, and none of what they send counts, not even a new `started_at`.
pub async fn only_a_publisher_with_the_secret_is_heard<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let secret = PublisherSecret::new("a secret only the publisher knows");
    let service = TestService::<F::Service>::start_with(dir.path(), |c| {
        c.publisher_secret = Some(secret.clone());
    })
    .await;
    let started_at = now() - 5_000;
    let mut good = service.publisher(started_at).await;
    good.send(F::share(1, 60, now())).await;
    service
        .stats_when("the good publisher's share", |s| s["shares_accepted"] == 1)
        .await;

    let addr = service.running.ingest_addr;
    let role = <F::Service as Service>::State::ROLE;
    let forged_at = now();
    let mut forgers = vec![
        Publisher::connect(addr, role, forged_at).await,
        Publisher::connect_with(
            addr,
            role,
            forged_at,
            b"a secret only the publisher guessed",
        )
        .await,
        // The same secret as a prefix: lengths differ, so it is wrong too.
        Publisher::connect_with(addr, role, forged_at, b"a secret only the publisher knows!").await,
        Publisher::connect_silently(addr).await,
    ];
    let mut v1 = Publisher::connect_silently(addr).await;
    // A version 1 hello: role, started_at, dropped, timestamp, no secret.
    let mut v1_hello = vec![0, 0, stats_sv2::PUBLISHER_HELLO_V1, 25, 0, 0, role];
    for field in [forged_at, 0, forged_at] {
        v1_hello.extend(field.to_le_bytes());
    }
    v1.send_raw(&v1_hello).await;
    forgers.push(v1);
    for forger in &mut forgers {
        for msg in F::mining() {
            if !forger.try_send(msg).await {
                break;
            }
        }
    }

    // The good publisher's next share, sent after the forgers' figures.
    good.send(F::share(1, 60, now())).await;
    let s = service
        .stats_when("the good publisher's second share", |s| {
            s["shares_accepted"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(s["shares_accepted"], 2, "{s}");
    assert_eq!(s["shares_rejected"], 0, "{s}");
    assert_eq!(s["publisher"]["started_at"], started_at, "{s}");
    assert_eq!(s["publisher"]["restarts"], 0, "{s}");
    assert!(!F::mined(&s), "{s}");
    assert_eq!(s.pointer(F::LINK_UP).unwrap(), "unknown", "{s}");
    // Closed, so nothing they sent can be read later either.
    for forger in &mut forgers {
        forger.expect_closed().await;
    }
    assert_eq!(
        get_json(service.http(), "/api/stats").await["shares_accepted"],
        2
    );
    service.stop().await;
}

pub async fn dashboard_figures_match_the_api_in_chromium<F: Fixture>() {
    let dir = tempfile::tempdir().unwrap();
    let service = TestService::<F::Service>::start(dir.path()).await;
    let mut p = service.publisher(now()).await;
    p.send_all(F::everything()).await;
    service
        .stats_when("everything published", F::shows_everything)
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
        let common = [
            "/hashrate",
            "/shares_accepted",
            "/shares_rejected",
            "/publisher/connected",
            F::LINK_UP,
        ];
        for must in common.iter().chain(F::ON_DASHBOARD) {
            assert!(pointers.contains(must), "{must} not on the page");
        }
        break;
    }
    let path = browser.screenshot(F::SCREENSHOT).await;
    println!(
        "{} screenshot: {} ({checked} figures checked)",
        F::SCREENSHOT,
        path.display()
    );
    browser.quit().await;
    service.stop().await;
}

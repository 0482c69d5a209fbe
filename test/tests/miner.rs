//! The real miner (`roles/miner`) against the real translator, pool, mint and
//! devnet-tp on 127.0.0.1 (port 0): its shares are accepted and the wallet
//! grows by exactly what they are worth; the load generator submits real
//! shares at its paced rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use miner::{MinerConfig, Mode};
use stats_sv2::StatsMessage;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use translator::{TranslatorConfig, TranslatorHandle};

struct RunningTranslator {
    handle: TranslatorHandle,
    shutdown: CancellationToken,
}

impl RunningTranslator {
    async fn start(config: TranslatorConfig) -> Self {
        let shutdown = CancellationToken::new();
        let handle = translator::start(config, shutdown.clone())
            .await
            .expect("translator starts");
        Self { handle, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle.wait())
            .await
            .expect("translator stops");
    }
}

fn miner_config(addr: SocketAddr, mode: Mode) -> MinerConfig {
    let mut c = MinerConfig {
        url: addr.to_string(),
        username: "rig".into(),
        threads: 2,
        mode,
        stats_interval_secs: 1,
        ..Default::default()
    };
    c.load.miners = 3;
    c.load.shares_per_second = 4.0;
    c
}

/// Waits until the miner counted `n` accepted shares.
async fn until_accepted(stats: &miner::Stats, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.accepted() < n {
        assert!(
            Instant::now() < deadline,
            "only {} shares accepted, {} rejected",
            stats.accepted(),
            stats.rejected()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_miner_is_paid_exactly_its_accepted_shares() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    // ~20k hashes per share: a handful of shares per second from a debug build
    config.nominal_hashrate = 2000.0;
    let tr = RunningTranslator::start(config).await;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = miner::start(
        miner_config(tr.handle.local_addr(), Mode::Cpu),
        shutdown.clone(),
    );
    let stats = running.stats();
    until_accepted(&stats, 5).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("miner stops")
        .expect("miner ran");
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = stats.accepted();
    assert_eq!(stats.rejected(), 0);
    assert!(stats.hashes() >= accepted);
    assert_eq!(
        stack.pool().stats().shares_accepted,
        accepted,
        "the miner counted every share the pool accepted"
    );
    // A share accepted just before the miner left has its quote notification
    // held by the pool until a channel with the same key opens again: a
    // miner with a plain username (the wallet's key) reconnects, without mining.
    let mut again = tokio::net::TcpStream::connect(tr.handle.local_addr())
        .await
        .unwrap();
    again
        .write_all(
            b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"idle\"]}\n\
              {\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"idle\",\"x\"]}\n",
        )
        .await
        .unwrap();
    // one quote per accepted share, all minted into the translator's wallet
    let store = tr.handle.quotes().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let totals = loop {
        let t = store.totals().unwrap();
        if t.minted.0 >= accepted || Instant::now() > deadline {
            break t;
        }
        tr.handle.mint_now();
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            totals.minted.0,
            totals.pending.0,
            totals.foreign.0,
            totals.failures
        ),
        (accepted, 0, 0, 0),
        "{accepted} shares accepted: {totals:?}"
    );
    let total = totals.minted.1;
    assert!(total >= accepted, "every share is worth something");
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), total);
    drop(again);
    println!(
        "miner: {accepted} shares accepted, {} hashes in {elapsed:.1} s ({}), wallet balance {total}",
        stats.hashes(),
        miner::format_hashrate(stats.hashes() as f64 / elapsed)
    );
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_submits_real_shares_at_its_rate() {
    let stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    let config = miner_config(tr.handle.local_addr(), Mode::Load);
    let (miners, rate) = (config.load.miners as u64, config.load.shares_per_second);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = miner::start(config, shutdown.clone());
    let stats = running.stats();
    until_accepted(&stats, 4 * miners).await;
    assert_eq!(
        stack.pool.stats().channels_open,
        miners as usize,
        "one channel per simulated miner"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("load generator stops")
        .expect("load generator ran");
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = stats.accepted();
    assert_eq!(stats.rejected(), 0);
    assert_eq!(stack.pool.stats().shares_accepted, accepted);
    // paced: never more than one share per tick per miner
    let bound = (miners as f64 * (1.0 + rate * elapsed)).ceil() as u64;
    assert!(
        accepted <= bound,
        "{accepted} shares in {elapsed:.1} s exceeds the pace ({bound})"
    );
    println!("load: {miners} miners, {accepted} shares accepted in {elapsed:.1} s");
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_publishes_its_miners_shares_quotes_and_wallet_balance() {
    let sink = StatsSink::start().await;
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    config.nominal_hashrate = 2000.0;
    config.stats = Some(sink.settings());
    let tr = RunningTranslator::start(config).await;
    let shutdown = CancellationToken::new();
    let miner_config = miner_config(tr.handle.local_addr(), Mode::Cpu);
    let username = miner_config.username.clone();
    let running = miner::start(miner_config, shutdown.clone());
    let stats = running.stats();
    until_accepted(&stats, 3).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("miner stops")
        .expect("miner ran");
    let accepted = stats.accepted();

    // The miner announced itself under its username, and left.
    let received = sink
        .wait_until("the miner leaving", |r| {
            r.iter()
                .any(|m| matches!(m, StatsMessage::MinerDisconnected(_)))
        })
        .await;
    match &received[0] {
        StatsMessage::PublisherHello(h) => assert_eq!(h.role, stats_sv2::role::TRANSLATOR),
        other => panic!("expected the hello first, got {other:?}"),
    }
    let (miner_id, name) = received
        .iter()
        .find_map(|m| match m {
            StatsMessage::MinerConnected(c) => Some((c.miner_id, c.name.as_utf8_or_hex())),
            _ => None,
        })
        .expect("the miner was announced");
    assert_eq!(name, username);
    let shares_accepted = received
        .iter()
        .filter(|m| matches!(m, StatsMessage::MinerShare(s) if s.miner_id == miner_id && s.accepted && s.work > 0))
        .count() as u64;
    assert_eq!(shares_accepted, accepted);
    assert!(received
        .iter()
        .any(|m| matches!(m, StatsMessage::HashrateUpdate(h) if h.miner_id == miner_id)));
    assert!(received.iter().any(
        |m| matches!(m, StatsMessage::LinkStatus(l) if l.link == stats_sv2::link::POOL && l.up)
    ));

    // Quotes held for the miner's key reach the next channel with that key
    // (see the_cpu_miner_is_paid_exactly_its_accepted_shares).
    let mut again = tokio::net::TcpStream::connect(tr.handle.local_addr())
        .await
        .unwrap();
    again
        .write_all(
            b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"idle\"]}\n\
              {\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"idle\",\"x\"]}\n",
        )
        .await
        .unwrap();
    let store = tr.handle.quotes().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.totals().unwrap().minted.0 < accepted {
        assert!(Instant::now() < deadline, "quotes never all minted");
        tr.handle.mint_now();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let balance = tr.handle.wallet().balance().await.unwrap();
    assert!(balance > 0);
    let minted = |r: &[StatsMessage]| -> u64 {
        r.iter()
            .filter_map(|m| match m {
                StatsMessage::EhashQuote(q) if q.minted => Some(q.amount),
                _ => None,
            })
            .sum()
    };
    let last_balance = |r: &[StatsMessage]| {
        r.iter().rev().find_map(|m| match m {
            StatsMessage::WalletBalance(b) => Some(b.balance),
            _ => None,
        })
    };
    let received = sink
        .wait_until("the minted quotes and the balance", |r| {
            minted(r) == balance && last_balance(r) == Some(balance)
        })
        .await;
    let recorded = received
        .iter()
        .filter(|m| matches!(m, StatsMessage::EhashQuote(q) if !q.minted))
        .count() as u64;
    assert_eq!(recorded, accepted, "one record per accepted share");
    assert!(
        received.iter().any(
            |m| matches!(m, StatsMessage::LinkStatus(l) if l.link == stats_sv2::link::MINT && l.up)
        ),
        "minting reached the mint"
    );
    assert!(
        matches!(received.iter().find(|m| matches!(m, StatsMessage::WalletBalance(_))),
            Some(StatsMessage::WalletBalance(b)) if b.balance == 0),
        "the balance at start"
    );
    assert_eq!(tr.handle.stats_publisher().dropped(), 0);
    drop(again);
    tr.stop().await;
    stack.stop().await;
}

//! Many miners at once: connections held, floods, aggregated channels,
//! and the forwarding benchmark.

use super::*;
use crate::full_chain::{minted_quotes, recorded_quotes};

/// `n` miners, each subscribed, authorized and holding a job.
async fn connect_miners(addr: SocketAddr, n: usize) -> Vec<Sv1Client> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        set.spawn(async move { (i, Sv1Client::start(addr, &format!("m{i}")).await) });
    }
    let mut miners: Vec<(usize, Sv1Client)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        miners.push(r.expect("miner task"));
    }
    miners.sort_by_key(|(i, _)| *i);
    miners.into_iter().map(|(_, m)| m).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sv1_connections_are_held() {
    let (mut stack, tr) = stack_and_translator(NBITS_NEVER).await;
    // warm up allocator and tasks with one miner
    let mut first = Sv1Client::start(tr.addr(), "first").await;
    let before = process_usage(std::process::id()).1;
    let mut miners = connect_miners(tr.addr(), 1000).await;
    let after = process_usage(std::process::id()).1;
    println!(
        "1000 SV1 connections held: RSS +{} KiB, {:.1} KiB per connection \
         (translator session + its pool channel + the test client, one process, debug build)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 1000.0
    );
    assert_eq!(stack.pool.stats().channels_open, 1001);
    // every one of them can still mine: a sample across the range, and the first
    for i in [0usize, 1, 499, 500, 998, 999] {
        mine_and_check(&mut stack, &mut miners[i], &format!("m{i}")).await;
    }
    mine_and_check(&mut stack, &mut first, "first").await;
    drop(miners);
    tr.stop().await;
    stack.stop().await;
}

/// A share flood on one chain tip fills the pool's duplicate detection: the
/// pool renews the miner's channel on a new extranonce prefix, which reaches
/// the miner in its next job, and mining goes on. Nothing is closed, no share
/// is refused, and a share of a job sent before the renewal still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_chain_tip_renews_the_channel_and_the_miner_mines_on() {
    flood_renews_and_mining_goes_on(false).await;
}

/// The same through the translator's one shared channel; a miner joining
/// after the renewal starts on the new prefix's job and is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_renews_the_aggregated_channel_and_a_miner_joining_after_mines() {
    flood_renews_and_mining_goes_on(true).await;
}

async fn flood_renews_and_mining_goes_on(aggregate: bool) {
    // One share a minute: channels_sv2's smallest budget, no vardiff.
    let mut stack = Stack::start_with(NBITS_NEVER, |c| {
        c.shares_per_minute = 1.0;
        c.vardiff_interval_secs = 0;
    })
    .await;
    let budget = stratum_core::channels_sv2::seen_shares_budget(1.0);
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
    config.nominal_hashrate = 0.1;
    config.vardiff_interval_secs = 0;
    config.aggregate_channels = aggregate;
    let tr = RunningTranslator::start(config).await;
    let mut miner = Sv1Client::start(tr.addr(), "flood").await;
    let first_coinb1 = miner.job.as_ref().unwrap().coinb1.clone();
    let (mut accepted, mut refused) = (0, 0);
    let mut channels = std::collections::BTreeSet::new();
    let mut before_renewal = None;
    while accepted <= budget + 100 {
        if miner.job.as_ref().unwrap().coinb1 == first_coinb1 {
            before_renewal = miner.job.clone();
        }
        if miner.mine_one("flood").await.is_err() {
            refused += 1;
        }
        while let Ok(share) = stack.accepted.try_recv() {
            channels.insert(share.channel_id);
            accepted += 1;
        }
    }
    println!("{accepted} shares accepted on one tip, {refused} refused");
    // One channel throughout (a closed one would have been reopened with
    // another id), and not even a share in flight at the renewal refused.
    assert_eq!(channels.len(), 1, "channels {channels:?}");
    assert_eq!(refused, 0);
    let coinb1 = &miner.job.as_ref().unwrap().coinb1;
    assert_ne!(coinb1, &first_coinb1, "the new prefix is in the coinbase");
    // The chain tip has not moved: the last job on the old prefix is still
    // good, through the translator and at the pool.
    let renewed = std::mem::replace(&mut miner.job, before_renewal);
    let found = miner
        .mine_one("flood")
        .await
        .expect("a share of the old prefix");
    let paid = async {
        while let Some(share) = stack.accepted.recv().await {
            if share.header == found.header {
                return share;
            }
        }
        panic!("the pool stopped")
    };
    let share = tokio::time::timeout(Duration::from_secs(10), paid)
        .await
        .expect("the pool accepted the share of the old prefix");
    assert!(channels.contains(&share.channel_id));
    miner.job = renewed;
    mine_and_check(&mut stack, &mut miner, "flood").await;
    if aggregate {
        let mut late = Sv1Client::start(tr.addr(), "late").await;
        assert_eq!(
            late.job.as_ref().unwrap().coinb1,
            miner.job.as_ref().unwrap().coinb1
        );
        mine_and_check(&mut stack, &mut late, "late").await;
    }
    tr.stop().await;
    stack.stop().await;
}

/// A pool that stops reading (too busy to) while miners flood: once the
/// queue to it is nearly full the translator turns shares away, answered as
/// refused by the pool, rather than end every miner's session, and sends
/// them on again once the pool reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_stops_reading_gets_shares_turned_away_not_its_session_ended() {
    let mut stack = Stack::start_with(NBITS_NEVER, |c| c.vardiff_interval_secs = 0).await;
    let relay = Relay::start(stack.pool_addr().to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[relay.addr], NO_MINT_URL, dir.path());
    // A hash or two a share, and shares answered once sent: what a miner
    // has waiting is not bounded by the pool's answers, so a flood reaches
    // the queue to the pool.
    config.nominal_hashrate = 0.1;
    config.wait_for_pool = false;
    let mut tr = RunningTranslator::start(config).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    mine_and_check(&mut stack, &mut miner, "rig").await;

    // The flood's channels open, then the pool stops reading.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let flood = load_miner_config(tr.addr(), "flood", 2, 50_000.0);
    let flood = miner::start(flood, shutdown.clone());
    until_accepted(&flood.stats(), 10).await;
    relay.hold();
    let started = Instant::now();
    let turning_away = |e: &TranslatorEvent| {
        matches!(
            e,
            TranslatorEvent::PoolNotReading | TranslatorEvent::UpstreamLost(_)
        )
    };
    let first = tr
        .wait_event_within(Duration::from_secs(120), turning_away)
        .await;
    assert!(
        matches!(first, TranslatorEvent::PoolNotReading),
        "{first:?}"
    );
    let flooded = flood.stats().submitted.load(Ordering::Relaxed);
    println!(
        "shares turned away after {flooded} in {:?}",
        started.elapsed()
    );
    stop_miner(WAIT, &shutdown, flood).await;

    // Nothing of before the release may pass for the pool reading again.
    let lost = |e: &TranslatorEvent| matches!(e, TranslatorEvent::UpstreamLost(_));
    assert!(!tr.take_events().iter().any(lost));
    relay.release();
    // Shares sent while the pool catches up are turned away too: one more
    // every half second, until one goes to it.
    let reading = |e: &TranslatorEvent| {
        matches!(
            e,
            TranslatorEvent::PoolReadingAgain { .. } | TranslatorEvent::UpstreamLost(_)
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (share, again) = loop {
        assert!(Instant::now() < deadline, "the pool never read again");
        let share = miner.find_share();
        miner
            .submit("rig", &share)
            .await
            .expect("answered once sent");
        let half_a_second = Duration::from_millis(500);
        if let Ok(again) = tokio::time::timeout(half_a_second, tr.wait_event(reading)).await {
            break (share, again);
        }
    };
    assert!(
        matches!(again, TranslatorEvent::PoolReadingAgain { turned_away } if turned_away > 0),
        "{again:?}"
    );
    // The pool gets the share, after the flood's, on the session it had.
    let reached = async {
        while let Some(accepted) = stack.accepted.recv().await {
            if accepted.header == share.header {
                return;
            }
        }
        panic!("the pool stopped")
    };
    tokio::time::timeout(Duration::from_secs(120), reached)
        .await
        .expect("the pool accepted the share sent after the flood");
    assert!(!tr.take_events().iter().any(lost), "the session went on");
    tr.stop().await;
    stack.stop().await;
}

/// Benchmark (not a test): SV1 shares/s forwarded and p99 submit latency at
/// 1, 100 and 1000 miners. Run with
/// `cargo test --release -p hashpool-tests --test translator -- --ignored --nocapture bench_`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_sv1_forwarding() {
    for n in [1usize, 100, 1000] {
        // a duplicate-detection budget (shares_per_minute x 1200) that 5 s of load does not exhaust
        let stack = Stack::start_with(NBITS_NEVER, |c| c.shares_per_minute = 1000.0).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
        // ~1 hash per share: the figures measure the proxy, not the CPU miner
        config.nominal_hashrate = 0.1;
        let tr = RunningTranslator::start(config).await;
        let miners = connect_miners(tr.addr(), n).await;
        let duration = std::time::Duration::from_secs(5);
        let start = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, mut m) in miners.into_iter().enumerate() {
            set.spawn(async move {
                let mut latencies = vec![];
                let mut rejected = 0u64;
                let user = format!("m{i}");
                while start.elapsed() < duration {
                    let share = m.find_share();
                    let t = std::time::Instant::now();
                    match m.submit(&user, &share).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(_) => rejected += 1,
                    }
                }
                (latencies, rejected)
            });
        }
        let mut all = vec![];
        let mut rejected = 0;
        while let Some(r) = set.join_next().await {
            let (l, r) = r.unwrap();
            all.extend(l);
            rejected += r;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort();
        let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        println!(
            "{n:>5} miners: {:>8.0} shares/s accepted, p50 {:?}, p99 {:?} submit latency, {} rejected, pool accepted {}",
            all.len() as f64 / elapsed,
            p(0.5),
            p(0.99),
            rejected,
            stack.pool.stats().shares_accepted
        );
        tr.stop().await;
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_mode_shares_one_channel_and_pays_the_wallet() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    config.aggregate_channels = true;
    let mut tr = RunningTranslator::start(config).await;
    let mut a = Sv1Client::start(tr.addr(), "a").await;
    let mut b = Sv1Client::start(tr.addr(), "b").await;
    assert_ne!(a.extranonce1, b.extranonce1);
    assert_eq!(
        stack.pool().stats().channels_open,
        1,
        "one channel for both"
    );
    for _ in 0..3 {
        a.mine_one("a").await.expect("a's share accepted");
        b.mine_one("b").await.expect("b's share accepted");
    }
    // a username that is another key cannot be paid on the shared channel
    let mut keyed = Sv1Client::connect(tr.addr()).await;
    keyed.subscribe().await;
    let refused = keyed.authorize(&format!("{LOCKING_KEY}.bob")).await;
    assert!(refused.is_err(), "{refused:?}");
    let quotes = recorded_quotes(&mut tr, 6).await;
    assert!(quotes.iter().all(|(_, _, own)| *own));
    minted_quotes(&mut tr, 6).await;
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), total);
    drop((a, b, keyed));
    tr.stop().await;
    stack.stop().await;
}

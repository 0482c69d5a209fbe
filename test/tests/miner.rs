//! The real miner (`roles/miner`) against the real translator, pool, mint and
//! devnet-tp on 127.0.0.1 (port 0): its shares are accepted and the wallet
//! grows by exactly what they are worth; the load generator submits real
//! shares at its paced rate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use miner::{MinerConfig, Mode};
use stats_sv2::StatsMessage;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_miner_is_paid_exactly_its_accepted_shares() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let pool = stack.pool_addr();
    cpu_miner_is_paid_exactly_its_accepted_shares(&stack, pool).await;
    stack.stop().await;
}

/// The SV1 jobs carry merkle branches: the miner, the translator, the pool
/// and the mint each rebuild the same merkle root from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_miner_is_paid_exactly_on_blocks_carrying_transactions() {
    let (stack, _chain) = EhashStack::start_with_transactions("annotate", |_| {}).await;
    let pool = stack.pool_addr();
    cpu_miner_is_paid_exactly_its_accepted_shares(&stack, pool).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_submits_real_shares_at_its_rate() {
    let (stack, tr) = stack_and_translator(NBITS_NEVER).await;
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
    stop_miner(WAIT, &shutdown, running).await;
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

/// A load-mode miner hashing at `hashrate` (real shares, every one found).
fn hashing_miner(addr: SocketAddr, miners: usize, hashrate: f64) -> MinerConfig {
    let mut c = miner_config(addr, Mode::Load);
    c.threads = 1;
    c.load.miners = miners;
    c.load.hashrate = hashrate;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_miner_without_blocks_mines_at_the_easier_difficulty_within_seconds() {
    // No block will be found and devnet-tp sends no fresh templates: only
    // the pool's job at the new target can bring the miner its difficulty.
    const SPM: f32 = 60.0;
    let mut stack = Stack::start_with(NBITS_NEVER, |c| c.shares_per_minute = SPM).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
    const HASHRATE: f64 = 20_000.0;
    const NOMINAL: f64 = HASHRATE * 16.0;
    // One share a second aimed at; the channel starts 16 times too hard.
    config.shares_per_minute = SPM;
    config.nominal_hashrate = NOMINAL as f32;
    config.vardiff_interval_secs = 1;
    let mut tr = RunningTranslator::start(config).await;
    let shutdown = CancellationToken::new();
    let running = miner::start(hashing_miner(tr.addr(), 1, HASHRATE), shutdown.clone());
    let initial_work = vardiff::work_per_share(NOMINAL, SPM as f64);
    // A drought is sure only after some 15 s without the shares expected
    // (P < 1e-4), later if a few came by luck.
    let lowered = tr
        .wait_event_within(Duration::from_secs(60), |e| {
            matches!(e, translator::TranslatorEvent::Retargeted { .. })
        })
        .await;
    let decided = Instant::now();
    let translator::TranslatorEvent::Retargeted { hashrate, .. } = lowered else {
        unreachable!()
    };
    assert!(hashrate < NOMINAL, "the difficulty goes down: {hashrate}");
    let share = loop {
        let share = tokio::time::timeout(Duration::from_secs(30), stack.accepted.recv())
            .await
            .expect("a share at the easier difficulty within seconds")
            .expect("pool runs");
        let work = ehash::work_hashes(stratum_core::bitcoin::Target::from_le_bytes(share.target));
        if (work as f64) <= initial_work / 2.0 {
            break share;
        }
    };
    println!(
        "vardiff: lowered to {} (miner at {}); first share at the new difficulty {:?} later",
        miner::format_hashrate(hashrate),
        miner::format_hashrate(HASHRATE),
        decided.elapsed()
    );
    assert_eq!(stack.pool.stats().channels_open, 1);
    assert_eq!(stack.pool.stats().shares_rejected, 0);
    assert!(share.channel_id > 0);
    shutdown.cancel();
    running.wait().await.unwrap();
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_whose_rate_alternates_every_minute_is_followed_and_every_share_minted() {
    let stack = EhashStack::start("annotate", |c| {
        c.shares_per_minute = 30.0;
        c.vardiff_interval_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    const SLOW: f64 = 10_000.0;
    const FAST: f64 = 60_000.0;
    config.shares_per_minute = 30.0;
    config.nominal_hashrate = SLOW as f32;
    config.vardiff_interval_secs = 1;
    let tr = RunningTranslator::start(config).await;
    let shutdown = CancellationToken::new();
    let running = miner::start(hashing_miner(tr.addr(), 1, SLOW), shutdown.clone());
    let (stats, control) = (running.stats(), running.load_control());
    let mut retargets = 0;
    // Quiet stretches are expected (few shares right after a rate drop).
    let mut events = tr.handle.subscribe_events();
    for minute in 0..4 {
        control.set_hashrate(if minute % 2 == 0 { SLOW } else { FAST });
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let event = match tokio::time::timeout_at(until.into(), events.recv()).await {
                Err(_) => break,
                Ok(Ok(event)) => event,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(e)) => panic!("translator events: {e}"),
            };
            if let translator::TranslatorEvent::Retargeted { .. } = event {
                retargets += 1;
            }
            assert!(
                !matches!(event, translator::TranslatorEvent::UpstreamLost(_)),
                "{event:?}"
            );
        }
    }
    shutdown.cancel();
    running.wait().await.unwrap();
    let accepted = stats.accepted();
    // Nothing refused: no "too many shares awaiting the pool", no channel
    // closed under the miner (its shares would be answered "pool connection
    // lost"), no share at a stale difficulty.
    assert_eq!(
        stats.rejected(),
        0,
        "{accepted} accepted, last refusal: {:?}",
        stats.last_rejection()
    );
    assert!(
        retargets >= 2,
        "vardiff followed the rate: {retargets} retargets"
    );
    assert!(accepted >= 20, "{accepted} shares in 4 minutes");
    assert_eq!(stack.pool().stats().shares_accepted, accepted);
    // Every accepted share minted into the translator's wallet.
    let again = idle_miner(tr.addr()).await;
    let totals = tr
        .minted_totals(
            accepted,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await;
    assert_eq!(
        (totals.minted.0, totals.pending.0, totals.failures),
        (accepted, 0, 0),
        "{totals:?}"
    );
    println!(
        "vardiff: {accepted} shares over 4 minutes alternating {} / {}, {retargets} retargets, all minted",
        miner::format_hashrate(SLOW),
        miner::format_hashrate(FAST)
    );
    drop(again);
    tr.stop().await;
    stack.stop().await;
}

role_child_entry!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_killed_twenty_times_loses_and_doubles_no_ehash() {
    use rand::Rng;
    // devnet-tp, the mint and the pool in this process; the translator a
    // child process killed with SIGKILL at random moments while two miners
    // keep submitting: one for the proxy's wallet, one with its own key.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = ShippedConfigs::write(d, NBITS_NEVER, None);
    let stop = CancellationToken::new();
    let tp = devnet_tp::start(load_config(&c.tp), stop.clone())
        .await
        .unwrap();
    let mint = mint::start(load_config(&c.mint), stop.clone())
        .await
        .unwrap();
    let pool = pool::start(load_config(&c.pool), stop.clone(), pool::Hooks::default())
        .await
        .unwrap();
    let mut translator = RoleChild::spawn("translator", &c.translator);
    until_listening(c.translator_addr, "translator").await;
    let mint_url = format!("http://{}", c.mint_http);
    let own = translator::wallet::OwnWallet::open(&d.join("own-wallet"), &mint_url)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut own_config = miner_config(c.translator_addr, Mode::Cpu);
    own_config.username = own.username(Some("own"));
    own_config.threads = 1;
    let mut proxy_config = miner_config(c.translator_addr, Mode::Cpu);
    proxy_config.threads = 1;
    let miners = [
        miner::start(proxy_config, shutdown.clone()),
        miner::start(own_config, shutdown.clone()),
    ];
    until_accepted(&miners[1].stats(), 2).await;
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        translator.kill();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..300))).await;
        translator.restart();
        until_listening(c.translator_addr, "translator").await;
    }
    // Both miners mining on the last translator: a key's unacknowledged
    // notifications wait for that key's next channel.
    for m in &miners {
        let stats = m.stats();
        until_accepted(&stats, stats.accepted() + 1).await;
    }
    shutdown.cancel();
    for m in miners {
        m.wait().await.unwrap();
    }

    // Settled: every share the pool accepted has its quote, and the
    // translator holds every quote, its own minted. Shares the translator
    // forwarded before the miners stopped may still reach the pool: its
    // count is read again each time.
    let tr_data = d.join("translator");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (accepted, totals) = loop {
        let accepted = pool.stats().shares_accepted;
        let created = pool
            .mint_stats()
            .map_or(0, |m| m.quotes_unpaid + m.quotes_paid + m.quotes_issued);
        let t = translator::quotes::QuoteStore::open(&tr_data.join("quotes.sqlite"))
            .and_then(|s| s.totals())
            .unwrap();
        if created == accepted && t.pending.0 == 0 && t.minted.0 + t.foreign.0 == accepted {
            break (accepted, t);
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {accepted} accepted, {created} quotes created, {} notices refused, \
             translator {t:?}; the translator's log ends:\n{}",
            pool.notices_refused(),
            translator.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(translator.interrupt(), "{}", translator.log());

    // Per key: what the mint holds equals what its wallet minted, once.
    let config: translator::TranslatorConfig = load_config(&c.translator);
    let (_, proxy) = translator::open_wallet(&config).await.unwrap();
    let at_mint = |quotes: Vec<ehash::lookup::QuoteEntry>| {
        let issued = quotes
            .iter()
            .filter(|q| q.state == ehash::lookup::QuoteState::Issued)
            .count() as u64;
        (
            quotes.len() as u64,
            issued,
            quotes.iter().map(|q| q.amount).sum::<u64>(),
        )
    };
    let (proxy_quotes, proxy_issued, proxy_amount) = at_mint(proxy.quotes_at_mint().await.unwrap());
    assert_eq!(
        (proxy_quotes, proxy_issued),
        (totals.minted.0, totals.minted.0)
    );
    assert_eq!(proxy.balance().await.unwrap(), proxy_amount);
    let claimed = translator::cli::run_wallet_command_on(
        &own.wallet,
        &own.store,
        translator::cli::WalletCommand::Claim {
            keep_quotes_hours: None,
        },
    )
    .await
    .unwrap();
    let (own_quotes, own_issued, own_amount) = at_mint(own.wallet.quotes_at_mint().await.unwrap());
    assert_eq!(
        (own_quotes, own_issued),
        (totals.foreign.0, totals.foreign.0),
        "{claimed}"
    );
    assert_eq!(own.wallet.balance().await.unwrap(), own_amount);
    assert!(own_quotes > 0 && proxy_quotes > 0);
    // Nothing minted twice: the mint issued exactly what the two wallets
    // hold (its counts reach the pool every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = pool.mint_stats().unwrap();
        if m.quotes_issued == accepted || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(m.quotes_issued, accepted);
    assert_eq!(m.ehash_issued, proxy_amount + own_amount);
    println!(
        "translator killed 20 times: {accepted} shares accepted and quoted; \
         proxy wallet {proxy_quotes} quotes ({proxy_amount} ehash), own-key wallet {own_quotes} ({own_amount})"
    );
    stop.cancel();
    pool.wait().await.check("pool");
    mint.wait().await.check("mint");
    tp.wait().await;
}

/// Every warning and error the roles logged, by role: what a test that
/// failed to settle prints, so a failure on a busy machine can be explained.
fn warnings_of(roles: &[(&str, RoleChild, SocketAddr)]) -> String {
    roles
        .iter()
        .flat_map(|(name, child, _)| {
            child
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(|l| format!("{name}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_killed_and_restarted_in_turn_loses_and_doubles_no_ehash() {
    // The shipped config files, on free ports and a temp state dir; every
    // role a child process the test kills with SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = ShippedConfigs::write(d, NBITS_FEW_SECONDS, None);
    let (tp_toml, mint_toml, pool_toml, tr_toml) = (&c.tp, &c.mint, &c.pool, &c.translator);
    let mut roles = [
        (
            "devnet-tp",
            RoleChild::spawn("devnet-tp", tp_toml),
            c.tp_addr,
        ),
        ("mint", RoleChild::spawn("mint", mint_toml), c.mint_http),
        ("pool", RoleChild::spawn("pool", pool_toml), c.pool_addr),
        (
            "translator",
            RoleChild::spawn("translator", tr_toml),
            c.translator_addr,
        ),
    ];
    for (name, _, addr) in &roles {
        until_listening(*addr, name).await;
    }
    // Money and keys on disk are their owner's only.
    for (path, mode) in [
        ("pool", 0o700),
        ("pool/outbox.journal", 0o600),
        ("mint", 0o700),
        ("mint/mint.sqlite", 0o600),
        ("translator", 0o700),
        ("translator/wallet.sqlite", 0o600),
        ("translator/quotes.sqlite", 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(d.join(path)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }

    // The miner keeps mining through every kill: nothing is paused.
    let shutdown = CancellationToken::new();
    let running = miner::start(miner_config(c.translator_addr, Mode::Cpu), shutdown.clone());
    let stats = running.stats();
    until_accepted(&stats, 3).await;

    for (name, child, addr) in roles.iter_mut() {
        let before = stats.accepted();
        child.kill();
        // down for a moment while the miner keeps hashing
        tokio::time::sleep(Duration::from_millis(500)).await;
        child.restart();
        until_listening(*addr, name).await;
        until_accepted(&stats, before + 3).await;
        println!("{name} killed and restarted; mining goes on");
    }

    // Mine until the chain has a block from this stack.
    let deadline = Instant::now() + Duration::from_secs(120);
    while devnet_tp::store::load(&d.join("tp"))
        .unwrap()
        .blocks
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no block found");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    running.wait().await.unwrap();
    let (accepted, rejected, submitted) = (stats.accepted(), stats.rejected(), stats.submitted());

    // Every role stops cleanly on SIGINT...
    for (name, child, _) in roles.iter_mut().rev() {
        assert!(
            child.interrupt(),
            "{name} did not exit 0 on SIGINT:\n{}",
            child.log()
        );
    }
    let blocks = devnet_tp::store::load(&d.join("tp")).unwrap().blocks.len();

    // ...and comes back in this process on the same state, to settle every
    // quote still owed: the mint's counts against the wallet's.
    let stop = CancellationToken::new();
    let tp = devnet_tp::start(load_config(tp_toml), stop.clone())
        .await
        .unwrap();
    let mint = mint::start(load_config(mint_toml), stop.clone())
        .await
        .unwrap();
    let pool = pool::start(load_config(pool_toml), stop.clone(), pool::Hooks::default())
        .await
        .unwrap();
    let tr = translator::start(load_config(tr_toml), stop.clone())
        .await
        .unwrap();
    // Notifications held for the wallet's key reach its next channel.
    let idle = idle_miner(tr.local_addr()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled = 0;
    let (mint_stats, quotes) = loop {
        tr.mint_now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quotes = tr.quotes().totals().unwrap();
        if let Some(m) = pool.mint_stats() {
            // A mint killed between creating a quote and indexing it creates
            // the share's quote again on the replay: the first stays unpaid,
            // worth nothing (at most one per mint kill).
            assert!(m.quotes_unpaid <= 1, "{m:?}");
            let created = m.quotes_paid + m.quotes_issued;
            let done =
                created >= accepted && m.quotes_issued == created && quotes.minted.0 == created;
            settled = if done { settled + 1 } else { 0 };
            // settled across two mint stats rounds: nothing more arrives
            if settled >= 4 {
                break (m, quotes);
            }
        }
        assert!(
            Instant::now() < deadline,
            "never settled: accepted {accepted}, mint {:?}, translator {quotes:?}, pending {:?}, \
             failures {:?}\n{}",
            pool.mint_stats(),
            tr.quotes()
                .pending(&tr.wallet().locking_key().to_string(), 5)
                .unwrap(),
            tr.quotes().newest_failures(5).unwrap(),
            warnings_of(&roles)
        );
    };
    let created = mint_stats.quotes_issued;
    let balance = tr.wallet().balance().await.unwrap();
    println!(
        "after killing each role: {submitted} shares submitted, {accepted} accepted, {rejected} rejected; \
         {created} quotes created and minted; wallet {balance} ehash; {blocks} blocks"
    );
    // A share the pool journaled just before it was killed is quoted, though
    // the miner was answered "pool connection lost": between accepted and
    // submitted.
    assert!(
        accepted <= created && created <= submitted,
        "every accepted share has a quote, and only submitted shares have one"
    );
    assert_eq!(quotes.pending.0 + quotes.foreign.0 + quotes.failures, 0);
    assert_eq!(quotes.minted.0, created, "one wallet record per quote");
    assert_eq!(
        (quotes.minted.1, balance),
        (mint_stats.ehash_issued, mint_stats.ehash_issued),
        "the wallet holds exactly the ehash the mint issued"
    );
    assert!(blocks >= 1, "the tip moved");
    drop(idle);
    stop.cancel();
    tr.wait().await.check("translator");
    pool.wait().await.check("pool");
    mint.wait().await.check("mint");
    tp.wait().await;
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
    stop_miner(WAIT, &shutdown, running).await;
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
    let again = idle_miner(tr.handle.local_addr()).await;
    let totals = tr
        .minted_totals(accepted, Duration::from_secs(30), Duration::from_millis(50))
        .await;
    assert!(totals.minted.0 >= accepted, "quotes never all minted");
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

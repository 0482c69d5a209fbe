//! Job declaration across the real roles on 127.0.0.1: miners mine
//! through jd-client on templates of its own template provider, declared
//! at the pool's job declarator; every accepted share is paid exactly once,
//! through fallbacks to the pool's jobs; blocks found on declared jobs land
//! in the chain with their transactions.

use std::time::Duration;

use hashpool_tests::*;
use miner::Mode;
use tokio_util::sync::CancellationToken;

role_child_entry!();

/// The pool with its job declarator on a port of its own, taking only
/// full-template clients such as jd-client.
fn with_jds(pool: &mut pool::PoolConfig) {
    pool.jds = Some(pool::config::JdsSettings {
        listen_address: "127.0.0.1:0".into(),
        allow_coinbase_only: false,
        ..Default::default()
    });
}

/// jd-client on the template provider at `tp` and the stack's pool, once
/// it mines declared jobs; its stop token and its later events.
async fn start_jd_client(
    stack: &EhashStack,
    tp: std::net::SocketAddr,
) -> (
    jd_client::JdcHandle,
    CancellationToken,
    tokio::sync::broadcast::Receiver<jd_client::JdcEvent>,
) {
    let jds = stack.pool_config.jds.as_ref().expect("a job declarator");
    let config = jd_client_config(tp, stack.pool_addr(), jds.listen_address.parse().unwrap());
    let shutdown = CancellationToken::new();
    let jdc = jd_client::start(config, shutdown.clone()).await.unwrap();
    let mut events = jdc.subscribe_events();
    let started = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        started,
        jd_client::JdcEvent::SessionStarted(jd_client::Mode::Declared)
    );
    (jdc, shutdown, events)
}

/// A translator on jd-client with a CPU miner hashing through it.
async fn mine_through(
    stack: &EhashStack,
    jdc: &jd_client::JdcHandle,
    dir: &std::path::Path,
) -> (RunningTranslator, CancellationToken, miner::Miner) {
    let mut config = translator_config(&[jdc.local_addr()], &stack.mint_url(), dir);
    config.nominal_hashrate = 2000.0;
    let tr = RunningTranslator::start(config).await;
    let stop_mining = CancellationToken::new();
    let running = miner::start(
        miner_config(tr.handle.local_addr(), Mode::Cpu),
        stop_mining.clone(),
    );
    (tr, stop_mining, running)
}

/// miner -> translator -> jd-client -> pool (+ its job declarator) -> mint:
/// the miner mines templates of jd-client's own template provider, with
/// their transactions, declared at the pool, and every share is paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_miner_mines_declared_jobs_through_jd_client_and_is_paid_exactly() {
    let (stack, _chain) = EhashStack::start_with_transactions("annotate", with_jds).await;
    let (jdc, shutdown, mut events) = start_jd_client(&stack, stack.tp().local_addr()).await;
    cpu_miner_is_paid_exactly_its_accepted_shares(&stack, jdc.local_addr()).await;
    assert!(
        events.try_recv().is_err(),
        "jd-client mined declared jobs throughout (no session ended)"
    );
    assert!(stack.pool().stats().shares_accepted > 0);
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    stack.stop().await;
}

/// The pool's vardiff retargets the channel a miner hashes on through
/// jd-client: jd-client declares the template again, numbered, for that
/// channel and sets it at the new target. Shares come at more than one
/// target, jd-client stays on declared jobs (the pool takes its jobs
/// declared again), and every accepted share is paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retargeted_channel_gets_its_template_declared_again_and_every_share_is_paid() {
    let sink = StatsSink::start().await;
    let settings = sink.settings();
    let (stack, _chain) = EhashStack::start_with_transactions("annotate", move |pool| {
        with_jds(pool);
        pool.vardiff_interval_secs = 1;
        pool.stats = Some(settings);
    })
    .await;
    let (jdc, shutdown, mut events) = start_jd_client(&stack, stack.tp().local_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tr, stop_mining, running) = mine_through(&stack, &jdc, dir.path()).await;
    sink.wait_until("shares accepted at two targets", |received| {
        let works: std::collections::BTreeSet<u64> = received
            .iter()
            .filter_map(|m| match m {
                stats_sv2::StatsMessage::ShareSubmitted(s) if s.accepted => Some(s.work),
                _ => None,
            })
            .collect();
        works.len() >= 2
    })
    .await;
    stop_miner(WAIT, &stop_mining, running).await;
    assert!(
        events.try_recv().is_err(),
        "jd-client mined declared jobs throughout (no session ended)"
    );
    let accepted = stack.pool().stats().shares_accepted;
    every_accepted_share_minted_once(&tr, accepted, Duration::from_secs(60)).await;
    tr.stop().await;
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    stack.stop().await;
}

/// The pool (and its job declarator with it) is killed (SIGKILL) and comes
/// back while miners mine through jd-client: they stay connected, mine the
/// pool's jobs in between, then declared jobs again; every accepted share
/// is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jd_client_falls_back_while_the_pool_is_killed_and_declares_again_losing_nothing() {
    let (mut stack, _chain) = EhashStack::start_with_transactions("annotate", with_jds).await;
    let mut pool = stack.pool_in_a_child().await;
    until_listening(stack.pool_addr(), "the pool child").await;
    let (jdc, shutdown, mut events) = start_jd_client(&stack, stack.tp().local_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tr, stop_mining, running) = mine_through(&stack, &jdc, dir.path()).await;
    let stats = running.stats();
    until_accepted(&stats, 3).await;

    pool.kill();
    let mut modes = vec![];
    let restarted = async {
        // The job declarator is gone with the pool: the pool's jobs next.
        loop {
            if let jd_client::JdcEvent::SessionStarted(mode) = events.recv().await.unwrap() {
                modes.push(mode);
                break;
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    pool.restart();
    tokio::time::timeout(Duration::from_secs(30), restarted)
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("declared jobs again")
            .unwrap();
        if let jd_client::JdcEvent::SessionStarted(mode) = event {
            modes.push(mode);
            if mode == jd_client::Mode::Declared {
                break;
            }
        }
    }
    assert_eq!(modes.first(), Some(&jd_client::Mode::PoolJobs), "{modes:?}");
    let before = stats.accepted();
    until_accepted(&stats, before + 3).await;
    stop_miner(WAIT, &stop_mining, running).await;
    // Shares found while no pool was there are refused, and not owed. A
    // share the pool journaled just before it was killed is quoted even if
    // its success never reached the miner (who counted it refused): between
    // the shares the miner saw accepted and those it submitted.
    let (accepted, submitted) = (stats.accepted(), stats.submitted());
    let again = idle_miner(tr.handle.local_addr()).await;
    let totals = tr
        .minted_totals(accepted, Duration::from_secs(60), Duration::from_millis(50))
        .await;
    assert_eq!(
        (totals.pending.0, totals.foreign.0, totals.failures),
        (0, 0, 0),
        "{totals:?}"
    );
    assert!(
        accepted <= totals.minted.0 && totals.minted.0 <= submitted,
        "{accepted} accepted, {submitted} submitted, {totals:?}"
    );
    assert_eq!(
        tr.handle.wallet().balance().await.unwrap(),
        totals.minted.1,
        "each quote minted once"
    );
    drop(again);
    tr.stop().await;
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    pool.kill();
    stack.stop().await;
}

/// A block found on a declared job goes to jd-client's template provider:
/// it lands in the chain with the declared transactions, paying the pool,
/// even when the link loses the first SubmitSolution (the next session
/// sends it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_on_a_declared_job_lands_in_the_chain_with_its_transactions() {
    // About one block per 190 k hashes: several a minute from a debug build.
    const NBITS: u32 = 0x1e5a_8278;
    let chain = tempfile::tempdir().unwrap();
    premine_blocks_with_transactions(chain.path()).await;
    let chain_dir = chain.path().to_path_buf();
    let stack = EhashStack::start_on(
        "annotate",
        |tp| {
            with_mempool(tp);
            tp.state_dir = chain_dir;
            tp.nbits = NBITS;
        },
        with_jds,
    )
    .await;
    let relay = Relay::start(stack.tp().local_addr().to_string());
    let (jdc, shutdown, mut events) = start_jd_client(&stack, relay.addr).await;
    // Larger than jd-client's other messages to its template provider
    // (RequestTransactionData): its first SubmitSolution.
    relay.lose_next_write_over(120);
    let mut blocks = stack.tp().subscribe_blocks();
    let height = stack.tp().height();
    let dir = tempfile::tempdir().unwrap();
    let (tr, stop_mining, running) = mine_through(&stack, &jdc, dir.path()).await;
    let submitted =
        async { while events.recv().await.unwrap() != jd_client::JdcEvent::BlockSubmitted {} };
    tokio::time::timeout(Duration::from_secs(180), submitted)
        .await
        .expect("a block found on a declared job");
    // No other block can be found: the one that lands is the one lost.
    stop_miner(WAIT, &stop_mining, running).await;
    let block = tokio::time::timeout(WAIT, blocks.recv())
        .await
        .expect("the block lands")
        .unwrap();
    assert!(block.height > height);
    let stored = stack.tp().block(block.height).unwrap();
    assert!(
        !stored.transactions.is_empty(),
        "the declared job's transactions are in the block"
    );
    let coinbase: stratum_core::bitcoin::Transaction =
        stratum_core::bitcoin::consensus::deserialize(&hex::decode(&stored.coinbase).unwrap())
            .unwrap();
    let tag = jd_client::core::DECLARED_TAG.as_bytes();
    assert!(coinbase.input[0]
        .script_sig
        .as_bytes()
        .windows(tag.len())
        .any(|w| w == tag));
    assert!(coinbase
        .output
        .iter()
        .any(|o| o.script_pubkey.as_bytes() == [0x51] && o.value.to_sat() > 0));
    tr.stop().await;
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    stack.stop().await;
}

/// jd-client's own template provider requires an output the pool's does
/// not (devnet-tp's faucet): the job declarator refuses every declaration
/// ("invalid-coinbase-tx"), so jd-client mines the pool's own jobs, and the
/// miner is paid exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_declaration_means_the_pool_s_jobs_and_the_miner_is_still_paid() {
    let stack = EhashStack::start("annotate", with_jds).await;
    let own_chain = tempfile::tempdir().unwrap();
    let mut own = tp_config(own_chain.path(), NBITS_NEVER);
    with_mempool(&mut own);
    let (own_tp, own_tp_stop) = start_tp_with(own).await;
    let mut config = jd_client_config(
        own_tp.local_addr(),
        stack.pool_addr(),
        stack.pool().jds_addr().unwrap(),
    );
    config.jds_retry_secs = 3600;
    let shutdown = CancellationToken::new();
    let jdc = jd_client::start(config, shutdown.clone()).await.unwrap();
    let mut events = jdc.subscribe_events();
    let mut seen = vec![];
    let fell_back = async {
        loop {
            let event = events.recv().await.unwrap();
            seen.push(event.clone());
            if event == jd_client::JdcEvent::SessionStarted(jd_client::Mode::PoolJobs) {
                break;
            }
        }
    };
    // The first declaration needs a channel: a translator with a miner.
    let pool = jdc.local_addr();
    let paid = cpu_miner_is_paid_exactly_its_accepted_shares(&stack, pool);
    let (_, ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(60), fell_back)
                .await
                .unwrap()
        },
        paid
    );
    assert!(
        seen.iter().any(|e| matches!(e, jd_client::JdcEvent::SessionEnded(reason) if reason.contains("invalid-coinbase-tx"))),
        "{seen:?}"
    );
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    stop_role("own devnet-tp", WAIT, &own_tp_stop, own_tp.wait()).await;
    stack.stop().await;
}

/// A job declarator that takes connections and never answers: each retry
/// waits on it until its handshake times out (seconds); meanwhile the
/// miners' shares go on being answered on the pool's jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarator_that_never_answers_holds_up_no_share() {
    use tokio::io::AsyncReadExt;
    let stack = EhashStack::start("annotate", |_| {}).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // Each connection it takes: a receiver that ends when the client closes it.
    let (probes_tx, mut probes) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        loop {
            let (mut conn, _) = silent.accept().await.unwrap();
            let (open, closed) = tokio::sync::oneshot::channel::<()>();
            let _ = probes_tx.send(closed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                drop(open);
            });
        }
    });
    let config = jd_client_config(stack.tp().local_addr(), stack.pool_addr(), silent_addr);
    let shutdown = CancellationToken::new();
    let jdc = jd_client::start(config, shutdown.clone()).await.unwrap();
    let mut events = jdc.subscribe_events();
    tokio::time::timeout(Duration::from_secs(60), async {
        while events.recv().await.unwrap()
            != jd_client::JdcEvent::SessionStarted(jd_client::Mode::PoolJobs)
        {}
    })
    .await
    .expect("the pool's jobs once the declarator does not answer");

    let mut client = MiningClient::connect(jdc.local_addr(), POOL_PUBLIC_KEY)
        .await
        .unwrap();
    client.setup_connection(0).await;
    let (_, key) = miner_key();
    let channel = client
        .open_extended(&format!("{key}.rig"), 1.0, 4)
        .await
        .expect("channel opens");
    client.wait_for_work(channel).await;
    // The next retry, waiting on the declarator.
    while probes.try_recv().is_ok() {}
    let mut waiting = tokio::time::timeout(Duration::from_secs(30), probes.recv())
        .await
        .expect("jd-client tries the declarator again")
        .unwrap();
    let share = client.valid_share(channel, false);
    assert_eq!(client.submit_and_wait(channel, &share).await, Ok(()));
    assert_eq!(
        waiting.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty),
        "the share was answered while the retry waited on the declarator"
    );
    holder.abort();
    stop_role("jd-client", WAIT, &shutdown, jdc.wait()).await;
    stack.stop().await;
}

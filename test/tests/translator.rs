//! The translator against the real pool, devnet-tp and mint on 127.0.0.1
//! (port 0), with a test SV1 miner that builds its headers from
//! `mining.notify` on its own: a share the pool accepts proves the SV1 <->
//! SV2 translation end to end.

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdk::amount::SplitTarget;
use cdk::nuts::SecretKey;
use cdk::wallet::ReceiveOptions;
use ehash::LockingKey;
use hashpool_tests::*;
use mint_support::{mint_with, share, PoolClient, TestMint};
use pool::AcceptedShare;
use serde_json::json;
use translator::cli::WalletCommand;
use translator::quotes::{QuoteState, QuoteStore};
use translator::wallet::{ehash_method, locking_secret, EhashWallet};
use translator::{TranslatorConfig, TranslatorEvent};

async fn accepted(stack: &mut Stack) -> AcceptedShare {
    tokio::time::timeout(WAIT, stack.accepted.recv())
        .await
        .expect("accepted share in time")
        .expect("pool running")
}

/// Mines one share and checks the pool accepted exactly that header.
async fn mine_and_check(
    stack: &mut Stack,
    miner: &mut Sv1Client,
    user: &str,
) -> (Sv1Share, AcceptedShare) {
    let share = miner.mine_one(user).await.expect("share accepted");
    let acc = accepted(stack).await;
    assert_eq!(
        acc.header, share.header,
        "the pool validated the miner's own header"
    );
    assert_eq!(acc.share_hash, share.hash);
    (share, acc)
}

/// Reads until a clean `mining.notify` arrives (a new channel or chain tip).
async fn wait_clean_job(miner: &mut Sv1Client) {
    loop {
        let v = miner.recv().await.expect("miner still connected");
        if v["method"] == "mining.notify" && v["params"][8] == true {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_shares_are_accepted_by_the_pool_with_the_exact_header() {
    let (mut stack, tr) = stack_and_translator(NBITS_NEVER).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig1").await;
    assert_eq!(miner.extranonce2_size, 4);
    for _ in 0..5 {
        let (_, acc) = mine_and_check(&mut stack, &mut miner, "rig1").await;
        assert_eq!(
            acc.locking_key,
            Some(tr.wallet_key()),
            "a plain username mines for the wallet"
        );
    }
    // with version rolling
    let mut rolling = Sv1Client::connect(tr.addr()).await;
    assert_eq!(rolling.configure_version_rolling().await, Some(0x1fff_e000));
    rolling.subscribe().await;
    assert_eq!(rolling.authorize("rig2").await, Ok(true));
    rolling.wait_job().await;
    let mut rolled = 0;
    for _ in 0..6 {
        let (share, _) = mine_and_check(&mut stack, &mut rolling, "rig2").await;
        rolled += share.version_bits.is_some() as u32;
    }
    assert!(rolled > 0, "some shares rolled version bits");
    assert_eq!(stack.pool.stats().shares_accepted, 11);
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_that_is_a_key_opens_a_channel_locked_to_that_key() {
    let (mut stack, tr) = stack_and_translator(NBITS_NEVER).await;
    let user = format!("{LOCKING_KEY}.bob");
    let mut miner = Sv1Client::start(tr.addr(), &user).await;
    let (_, acc) = mine_and_check(&mut stack, &mut miner, &user).await;
    assert_eq!(
        acc.locking_key.map(|k| k.to_string()).as_deref(),
        Some(LOCKING_KEY)
    );
    assert_ne!(acc.locking_key, Some(tr.wallet_key()));
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sv1_input_disconnects_only_that_miner() {
    let (mut stack, mut tr) = stack_and_translator(NBITS_NEVER).await;
    let mut good = Sv1Client::start(tr.addr(), "good").await;
    mine_and_check(&mut stack, &mut good, "good").await;

    // malformed JSON: disconnected
    let mut garbage = Sv1Client::connect(tr.addr()).await;
    garbage
        .send_raw(b"{\"id\": 1, \"method\": mining.subscribe\n")
        .await
        .unwrap();
    garbage.expect_closed().await;
    let reason = tr
        .wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("malformed")))
        .await;
    println!("{reason:?}");

    // an oversized line (no newline in sight): disconnected
    let mut flood = Sv1Client::connect(tr.addr()).await;
    flood.subscribe().await;
    let _ = flood.send_raw(&vec![b'x'; 64 * 1024]).await;
    flood.expect_closed().await;
    tr.wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("longer than")))
        .await;

    // a submit for an unknown job: an error, and the miner keeps mining
    let mut confused = Sv1Client::start(tr.addr(), "confused").await;
    let mut share = confused.find_share();
    share.job_id = "deadbeef".into();
    let err = confused.submit("confused", &share).await.unwrap_err();
    assert_eq!(err[0], 21, "{err}");
    // a share under the target: false with a reason, not sent to the pool
    let weak = confused.find_share_with(|hash, target| hash > target);
    let err = confused.submit("confused", &weak).await.unwrap_err();
    assert_eq!(err[0], 23, "{err}");
    mine_and_check(&mut stack, &mut confused, "confused").await;

    // bad params and unknown methods: errors, still connected
    let r = confused
        .request(
            "mining.submit",
            json!(["confused", "1", "nothex", "1", "1"]),
        )
        .await;
    assert_eq!(r["error"][0], -32602);

    // the first miner never noticed
    for _ in 0..3 {
        mine_and_check(&mut stack, &mut good, "good").await;
    }
    assert_eq!(stack.pool.stats().shares_accepted, 5);
    tr.stop().await;
    stack.stop().await;
}

/// Waits until the pool has no channel open (a closed miner's went with it).
async fn until_pool_channels_closed(stack: &Stack) {
    let deadline = std::time::Instant::now() + WAIT;
    while stack.pool.stats().channels_open > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool channel stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_are_capped_and_a_silent_one_is_closed_with_its_channel() {
    let stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
    config.max_miners = 1;
    config.miner_idle_timeout_secs = 2;
    let mut tr = RunningTranslator::start(config).await;
    let mut first = Sv1Client::start(tr.addr(), "first").await;
    assert_eq!(stack.pool.stats().channels_open, 1);

    // A second miner while one is connected: closed at once.
    let mut second = tokio::net::TcpStream::connect(tr.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut second, &mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // The first says nothing: closed, and its pool channel with it.
    first.expect_closed().await;
    tr.wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("idle")))
        .await;
    until_pool_channels_closed(&stack).await;
    // Room again for a miner.
    let mut next = Sv1Client::start(tr.addr(), "next").await;
    next.wait_job().await;
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_stops_reading_is_closed_with_its_channel_after_the_write_timeout() {
    let stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
    config.miner_write_timeout_secs = 1;
    let mut tr = RunningTranslator::start(config).await;
    // A small receive buffer, so the translator's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut miner = Sv1Client::over(socket.connect(tr.addr()).await.unwrap());
    miner.subscribe().await;
    assert_eq!(miner.authorize("rig").await, Ok(true));
    assert_eq!(stack.pool.stats().channels_open, 1);
    // Requests the translator must answer, never reading an answer.
    let flood = tokio::spawn(async move {
        let line = b"{\"id\":1,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n";
        while miner.send_raw(line).await.is_ok() {}
    });
    let reason = tr
        .wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { .. }))
        .await;
    let TranslatorEvent::MinerDisconnected { reason, .. } = reason else {
        unreachable!()
    };
    assert!(reason.contains("took no line"), "{reason}");
    flood.await.unwrap();
    until_pool_channels_closed(&stack).await;
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miners_suggested_difficulty_is_the_difficulty_it_mines_at() {
    let (mut stack, tr) = stack_and_translator(NBITS_NEVER).await;
    let near = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-3;
    let mut miner = Sv1Client::connect(tr.addr()).await;
    miner.subscribe().await;
    let r = miner
        .request("mining.suggest_difficulty", json!([1e-6]))
        .await;
    assert_eq!(r["result"], true);
    assert_eq!(miner.authorize("rig").await, Ok(true));
    miner.wait_job().await;
    assert!(near(miner.difficulty, 1e-6), "{}", miner.difficulty);
    mine_and_check(&mut stack, &mut miner, "rig").await;

    // A new suggestion on an open channel: the pool's next job comes at it.
    miner
        .request("mining.suggest_difficulty", json!([2e-6]))
        .await;
    tokio::time::timeout(WAIT, async {
        while !near(miner.difficulty, 2e-6) {
            let v = miner.recv().await.expect("connection open");
            miner.seen.push_back(v);
        }
    })
    .await
    .expect("the suggested difficulty arrives");
    mine_and_check(&mut stack, &mut miner, "rig").await;
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_fails_over_to_the_next_pool_and_keeps_its_miners() {
    let mut first = Stack::start(NBITS_NEVER).await;
    let mut second = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    // a dead address first: skipped
    let dead = free_address();
    let mut tr = RunningTranslator::start(translator_config(
        &[dead, first.pool_addr(), second.pool_addr()],
        NO_MINT_URL,
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    mine_and_check(&mut first, &mut miner, "rig").await;

    // the first pool goes away: the miner stays connected and mines on the second
    first.pool_shutdown.cancel();
    tr.wait_event(|e| matches!(e, TranslatorEvent::UpstreamLost(_)))
        .await;
    wait_clean_job(&mut miner).await;
    let en1 = miner.extranonce1.clone();
    mine_and_check(&mut second, &mut miner, "rig").await;
    assert_eq!(miner.extranonce1, en1);
    tr.stop().await;
    first.tp_shutdown.cancel();
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_pool_with_less_extranonce_room_keeps_miners_that_subscribed_to_changes() {
    let mut first = Stack::start(NBITS_NEVER).await;
    // 8 bytes of extranonce: 2 of channel index, 6 to roll (the translator
    // hands out 4 of extranonce1 and asks 4 of extranonce2 by default)
    let mut second = Stack::start_with(NBITS_NEVER, |c| c.extranonce_len = 8).await;
    let dir = tempfile::tempdir().unwrap();
    let mut tr = RunningTranslator::start(translator_config(
        &[first.pool_addr(), second.pool_addr()],
        NO_MINT_URL,
        dir.path(),
    ))
    .await;
    let mut subscribed = Sv1Client::connect(tr.addr()).await;
    subscribed.subscribe().await;
    let r = subscribed
        .request("mining.extranonce.subscribe", json!([]))
        .await;
    assert_eq!(r["result"], true);
    assert_eq!(subscribed.authorize("rig").await, Ok(true));
    subscribed.wait_job().await;
    let mut plain = Sv1Client::start(tr.addr(), "old-rig").await;
    assert_eq!(subscribed.extranonce2_size, 4);
    mine_and_check(&mut first, &mut subscribed, "rig").await;
    mine_and_check(&mut first, &mut plain, "old-rig").await;

    first.pool_shutdown.cancel();
    tr.wait_event(|e| matches!(e, TranslatorEvent::UpstreamLost(_)))
        .await;
    // the subscribed miner is told its smaller extranonce2, then gets work
    let en1 = subscribed.extranonce1.clone();
    wait_clean_job(&mut subscribed).await;
    assert!(
        (2..4).contains(&subscribed.extranonce2_size),
        "extranonce2 moved down to what fits: {}",
        subscribed.extranonce2_size
    );
    assert_eq!(subscribed.extranonce1, en1);
    mine_and_check(&mut second, &mut subscribed, "rig").await;
    // the one that cannot be told is closed, so its firmware fails over
    plain.expect_closed().await;
    tr.stop().await;
    first.tp_shutdown.cancel();
    second.stop().await;
}

// ---------------------------------------------------------------- mint and wallet

/// A mint with its database in memory (as the mint's own tests start it),
/// the pool's link to it, and a quote store in a fresh directory.
async fn mint_link_and_store() -> (TestMint, PoolClient, tempfile::TempDir, QuoteStore) {
    init_logging();
    let mint = TestMint::start(mint_support::config(":memory:")).await;
    let link = mint.pool().await;
    let dir = tempfile::tempdir().unwrap();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    (mint, link, dir, store)
}

/// A paid quote worth 2^zero_bits, locked to `key`.
async fn quote(link: &mut PoolClient, zero_bits: u32, key: LockingKey) -> (String, u64) {
    (
        link.quote_id(share(zero_bits, key)).await,
        1u64 << zero_bits,
    )
}

fn seed() -> [u8; 64] {
    translator::config::seed_from_mnemonic(TRANSLATOR_MNEMONIC).unwrap()
}

/// The translator's wallet (the test mnemonic) on `mint`, its database in `dir`.
async fn open_wallet(mint: &TestMint, dir: &Path) -> EhashWallet {
    EhashWallet::open(&mint.running.http_url(), &dir.join("wallet.sqlite"), seed())
        .await
        .unwrap()
}

/// The output of `command` on the wallet and quote store, as the CLI prints it.
async fn wallet_command(
    wallet: &EhashWallet,
    store: &QuoteStore,
    command: WalletCommand,
) -> String {
    translator::cli::run_wallet_command_on(wallet, store, command)
        .await
        .unwrap()
}

/// `wallet send amount` from `wallet`; a fresh wallet of the mint at
/// `mint_url` receives exactly that. Returns the token.
async fn send_to_fresh_wallet(
    wallet: &EhashWallet,
    store: &QuoteStore,
    mint_url: &str,
    amount: u64,
) -> String {
    let out = wallet_command(wallet, store, WalletCommand::Send { amount }).await;
    let token = out.trim();
    let received = hashpool_tests::wallet(mint_url)
        .receive(token, ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), amount);
    token.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_mints_its_quotes_exactly_once_and_a_sent_token_is_received_elsewhere() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let mut total = 0;
    for bits in [1, 2, 3, 4, 5] {
        let (id, amount) = quote(&mut link, bits, key).await;
        store
            .insert(&quote_record(&id, amount, key, QuoteState::Pending))
            .unwrap();
        total += amount;
    }
    wallet.recover().await.unwrap();
    // Batches of at most 3, side by side: all five in one round.
    let round = wallet.mint_pending(&store, 3).await.unwrap();
    assert_eq!((round.minted.len(), round.left), (5, 0));
    assert_eq!(round.amount, total);
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "balance = sum of the quotes, exactly"
    );
    // nothing left, nothing twice
    let again = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(again.minted.is_empty() && again.already_issued.is_empty());
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (5, total));

    // wallet send -> a fresh wallet receives it
    let token = send_to_fresh_wallet(&wallet, &store, &mint.running.http_url(), 7).await;
    assert!(token.starts_with("cashuB"), "{token}");
    assert_eq!(wallet.balance().await.unwrap(), total - 7);
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_minting_before_recording_mints_nothing_twice() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let mut quotes = vec![];
    let mut total = 0;
    {
        let wallet = open_wallet(&mint, dir.path()).await;
        let key = wallet.locking_key();
        for bits in [3, 4, 5, 6] {
            let (id, amount) = quote(&mut link, bits, key).await;
            store
                .insert(&quote_record(&id, amount, key, QuoteState::Pending))
                .unwrap();
            quotes.push(id);
            total += amount;
        }
        // The wallet minted two quotes, then the process died before the
        // records said so.
        let secret = locking_secret(&seed());
        for id in &quotes[..2] {
            wallet
                .cdk()
                .fetch_mint_quote(id, Some(ehash_method()))
                .await
                .unwrap();
        }
        let ids: Vec<&str> = quotes[..2].iter().map(String::as_str).collect();
        let keys: HashMap<String, SecretKey> = quotes[..2]
            .iter()
            .map(|q| (q.clone(), secret.clone()))
            .collect();
        wallet
            .cdk()
            .batch_mint(&ids, SplitTarget::default(), None, Some(keys))
            .await
            .unwrap();
    }
    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.already_issued.len(), 2);
    assert_eq!(round.minted.len(), 2);
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (4, total));
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_the_mint_issued_elsewhere_is_found_when_its_batch_is_refused() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let (elsewhere, amount) = quote(&mut link, 3, key).await;
    let (fresh, fresh_amount) = quote(&mut link, 4, key).await;
    // Another wallet with the same seed (its own database, its secret
    // counter elsewhere: not our outputs) mints one first.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_wallet(&mint, other_dir.path()).await;
    other.recover().await.unwrap();
    let keyset = other.cdk().active_keyset().await.unwrap().id;
    other
        .cdk()
        .localstore
        .increment_keyset_counter(&keyset, 1000)
        .await
        .unwrap();
    let other_store = QuoteStore::open_in_memory().unwrap();
    other_store
        .insert(&quote_record(&elsewhere, amount, key, QuoteState::Pending))
        .unwrap();
    let minted = other.mint_pending(&other_store, 10).await.unwrap();
    assert_eq!(minted.amount, amount);
    // Our wallet records both as paid (the pool was told they were); the
    // mint refuses the batch, and asking it about each quote sorts them out.
    for (id, amount) in [(&elsewhere, amount), (&fresh, fresh_amount)] {
        store
            .insert(&quote_record(id, amount, key, QuoteState::Pending))
            .unwrap();
    }
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 10).await.unwrap();
    assert_eq!(round.already_issued, vec![(elsewhere, amount)]);
    assert_eq!(round.minted, vec![(fresh, fresh_amount)]);
    assert_eq!(wallet.balance().await.unwrap(), fresh_amount);
    assert_eq!(store.totals().unwrap().minted, (2, amount + fresh_amount));
    mint.stop().await;
}

/// A proxy to `target` that lets through the first request whose bytes
/// contain each of `paths` and drops its answer: the connection closes
/// instead. The paths whose answer it has dropped.
async fn answer_dropping_proxy(
    target: SocketAddr,
    paths: &[&'static str],
) -> (SocketAddr, Arc<Mutex<Vec<&'static str>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(Mutex::new(paths.to_vec()));
    let dropped = Arc::new(Mutex::new(vec![]));
    let dropped_by_proxy = dropped.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_target, mut to_target) = upstream.into_split();
            let (armed, dropped) = (armed.clone(), dropped_by_proxy.clone());
            let dropping = Arc::new(AtomicBool::new(false));
            let dropping_up = dropping.clone();
            tokio::spawn(async move {
                let up = async {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        let request = &buf[..n];
                        let hit = {
                            let mut armed = armed.lock().unwrap();
                            let at = armed
                                .iter()
                                .position(|p| request.windows(p.len()).any(|w| w == p.as_bytes()));
                            at.map(|i| armed.remove(i))
                        };
                        if let Some(path) = hit {
                            dropped.lock().unwrap().push(path);
                            dropping_up.store(true, Ordering::SeqCst);
                        }
                        if to_target.write_all(request).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n @ 1..) = from_target.read(&mut buf).await {
                        if dropping.load(Ordering::SeqCst) {
                            break;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    (addr, dropped)
}

/// Paid quotes of 2^bits for each of `bits`, recorded pending; their sum.
async fn pending_quotes(
    link: &mut PoolClient,
    store: &QuoteStore,
    key: LockingKey,
    bits: impl IntoIterator<Item = u32>,
) -> u64 {
    let mut total = 0;
    for bits in bits {
        let (id, amount) = quote(link, bits, key).await;
        store
            .insert(&quote_record(&id, amount, key, QuoteState::Pending))
            .unwrap();
        total += amount;
    }
    total
}

/// The mint signs a batch and its answer never reaches the wallet: the
/// wallet asks the mint what it signed (NUT-09) and keeps those proofs,
/// minting nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_was_lost_is_restored_from_the_mint_not_minted_again() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let target: SocketAddr = mint.running.http_url()["http://".len()..].parse().unwrap();
    let (proxy, dropped) = answer_dropping_proxy(target, &["/v1/mint/ehash/batch"]).await;
    let url = format!("http://{proxy}");
    let wallet = EhashWallet::open(&url, &dir.path().join("wallet.sqlite"), seed())
        .await
        .unwrap();
    let key = wallet.locking_key();
    let total = pending_quotes(&mut link, &store, key, 1..=6).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(*dropped.lock().unwrap(), ["/v1/mint/ehash/batch"]);
    assert_eq!(
        (round.minted.len(), round.amount, round.left),
        (6, total, 0)
    );
    assert!(store.batches().unwrap().is_empty(), "the batch is closed");
    assert_eq!(wallet.balance().await.unwrap(), total, "each proof once");
    let stats = link.stats().await;
    assert_eq!((stats.quotes_paid, stats.quotes_issued), (0, 6));
    // The restored proofs are good: sent, and received elsewhere.
    send_to_fresh_wallet(&wallet, &store, &url, total).await;
    mint.stop().await;
}

/// A process that dies with a batch open (the mint signed it, the answer
/// and the wallet's question about it lost) leaves it to the next start:
/// the next round settles it first, then mints the newer quotes, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_left_by_a_dead_process_is_settled_before_new_ones() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let target: SocketAddr = mint.running.http_url()["http://".len()..].parse().unwrap();
    let lost = ["/v1/mint/ehash/batch", "/v1/restore"];
    let (proxy, dropped) = answer_dropping_proxy(target, &lost).await;
    let db = dir.path().join("wallet.sqlite");
    let key = {
        let wallet = EhashWallet::open(&format!("http://{proxy}"), &db, seed())
            .await
            .unwrap();
        wallet.recover().await.unwrap();
        wallet.locking_key()
    };
    let first = pending_quotes(&mut link, &store, key, 1..=3).await;
    {
        let wallet = EhashWallet::open(&format!("http://{proxy}"), &db, seed())
            .await
            .unwrap();
        assert!(wallet.mint_pending(&store, 50).await.is_err());
        assert_eq!(*dropped.lock().unwrap(), lost);
        assert_eq!(store.batches().unwrap().len(), 1, "left open");
        assert_eq!(wallet.balance().await.unwrap(), 0);
    }
    let second = pending_quotes(&mut link, &store, key, 4..=5).await;
    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!((round.minted.len(), round.left), (5, 0));
    assert!(store.batches().unwrap().is_empty());
    assert_eq!(store.totals().unwrap().minted, (5, first + second));
    assert_eq!(wallet.balance().await.unwrap(), first + second);
    let stats = link.stats().await;
    assert_eq!((stats.quotes_paid, stats.quotes_issued), (0, 5));
    mint.stop().await;
}

/// Thousands of quotes minted in NUT-29 batches, the mint (its own process)
/// killed with SIGKILL while a batch is on its way: every quote is issued
/// once and minted once, and the wallet holds exactly their sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_quotes_minted_in_batches_across_a_mint_kill_each_exactly_once() {
    const QUOTES: u64 = 2000;
    const BATCH: usize = 100;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let (http, link_addr) = (files.http, files.link);
    let mut mint = files.spawn().await;
    let mut link = PoolClient::authenticated(link_addr, mint_support::POOL_SECRET).await;

    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let wallet = EhashWallet::open(&files.url(), &dir.path().join("wallet.sqlite"), seed())
        .await
        .unwrap();
    let key = wallet.locking_key();
    let mut records = Vec::new();
    for i in 0..QUOTES {
        let (id, amount) = quote(&mut link, (i % 4) as u32, key).await;
        records.push(quote_record(&id, amount, key, QuoteState::Pending));
    }
    let total: u64 = records.iter().map(|r| r.amount).sum();
    store.record(&records, &[]).unwrap();
    wallet.recover().await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let (mut rounds, mut failed, mut killed) = (0, 0, false);
    let (mut last_round, mut left_by_kill) = (Duration::ZERO, 0);
    loop {
        let minted = store.totals().unwrap().minted.0;
        if minted == QUOTES {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{minted} of {QUOTES} minted after {rounds} rounds"
        );
        rounds += 1;
        let started = std::time::Instant::now();
        let result = if !killed && minted >= QUOTES / 2 {
            // Killed well into a round, as the last one went: with its
            // batches on their way.
            killed = true;
            let kill = async {
                tokio::time::sleep(last_round * 3 / 5).await;
                mint.kill();
            };
            let (result, ()) = tokio::join!(wallet.mint_pending(&store, BATCH), kill);
            mint.restart();
            until_listening(http, "mint http").await;
            left_by_kill = result.as_ref().map_or(0, |round| round.left);
            result
        } else {
            wallet.mint_pending(&store, BATCH).await
        };
        last_round = started.elapsed();
        if let Err(e) = result {
            failed += 1;
            println!("minting round failed: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "{QUOTES} quotes minted in {rounds} rounds ({failed} failed, \
         {left_by_kill} left pending by the kill)"
    );
    assert!(killed);
    assert_eq!(store.totals().unwrap().minted, (QUOTES, total));
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "nothing lost, nothing twice"
    );
    let mut link = PoolClient::authenticated(link_addr, mint_support::POOL_SECRET).await;
    let stats = link.stats().await;
    assert_eq!(
        (stats.quotes_unpaid, stats.quotes_paid, stats.quotes_issued),
        (0, 0, QUOTES),
        "every quote issued once"
    );
    mint.kill();
}

/// The wallets of four miners minting at once, each round's batches side
/// by side, against one mint on file SQLite (its own process, the shipped
/// config): the mint serves every batch, none fails waiting for the
/// database, and each quote is issued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_minting_at_once_have_every_batch_served() {
    const WALLETS: u8 = 4;
    const QUOTES: u64 = 200;
    const BATCH: usize = 10;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let mint = files.spawn().await;
    let mut link = PoolClient::authenticated(files.link, mint_support::POOL_SECRET).await;

    let mut miners = vec![];
    for n in 1..=WALLETS {
        let path = |name: &str| dir.path().join(format!("{name}-{n}.sqlite"));
        let wallet = EhashWallet::open(&files.url(), &path("wallet"), [n; 64])
            .await
            .unwrap();
        let store = QuoteStore::open(&path("quotes")).unwrap();
        let key = wallet.locking_key();
        let mut records = vec![];
        for i in 0..QUOTES {
            let (id, amount) = quote(&mut link, (i % 4) as u32, key).await;
            records.push(quote_record(&id, amount, key, QuoteState::Pending));
        }
        store.record(&records, &[]).unwrap();
        let total: u64 = records.iter().map(|r| r.amount).sum();
        miners.push((wallet, store, total));
    }
    let minting = miners.iter().map(|(wallet, store, _)| async move {
        let mut rounds = 0;
        loop {
            let round = wallet.mint_pending(store, BATCH).await.unwrap();
            assert_eq!(round.left, 0, "quotes left pending: a batch was not served");
            if round.minted.is_empty() {
                return rounds;
            }
            rounds += 1;
        }
    });
    let rounds = futures::future::join_all(minting).await;
    println!("rounds per wallet: {rounds:?}");
    for (wallet, store, total) in &miners {
        assert_eq!(store.totals().unwrap().minted, (QUOTES, *total));
        assert_eq!(wallet.balance().await.unwrap(), *total);
    }
    let stats = link.stats().await;
    assert_eq!(
        (stats.quotes_paid, stats.quotes_issued),
        (0, QUOTES * u64::from(WALLETS)),
        "every quote issued once"
    );
    drop(mint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_locked_to_a_miners_key_are_listed_and_only_that_miner_can_mint_them() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let miner_secret = SecretKey::generate();
    let miner_key = LockingKey::from_bytes(&miner_secret.public_key().to_bytes()).unwrap();
    let (id, amount) = quote(&mut link, 4, miner_key).await;
    store
        .insert(&quote_record(&id, amount, miner_key, QuoteState::Foreign))
        .unwrap();

    let listing = wallet_command(&wallet, &store, WalletCommand::Quotes).await;
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the quote is listed");
    assert!(
        line.contains("miner-key") && line.contains(&miner_key.to_string()),
        "{line}"
    );

    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(round.minted.is_empty());
    // the proxy's key cannot mint it
    wallet
        .cdk()
        .fetch_mint_quote(&id, Some(ehash_method()))
        .await
        .unwrap();
    let keys: HashMap<String, SecretKey> = [(id.clone(), locking_secret(&seed()))].into();
    assert!(wallet
        .cdk()
        .batch_mint(&[id.as_str()], SplitTarget::default(), None, Some(keys))
        .await
        .is_err());
    assert_eq!(wallet.balance().await.unwrap(), 0);
    // the miner's own wallet can
    let own = hashpool_tests::wallet(&mint.running.http_url());
    assert_eq!(
        mint_with(&own, &[id.as_str()], &miner_secret).await,
        Ok(amount)
    );
    mint.stop().await;
}

// ---------------------------------------------------------------- the whole chain
//
// SV1 miner -> translator -> pool (ehash flow, annotate) -> mint, and the
// translator's wallet minting what the pool announced.

/// Waits until the translator recorded `n` quotes; returns (quote id, amount, own).
async fn recorded_quotes(tr: &mut RunningTranslator, n: usize) -> Vec<(String, u64, bool)> {
    let mut quotes = vec![];
    while quotes.len() < n {
        if let TranslatorEvent::QuoteRecorded {
            quote_id,
            amount,
            own,
        } = tr
            .wait_event(|e| matches!(e, TranslatorEvent::QuoteRecorded { .. }))
            .await
        {
            quotes.push((quote_id, amount, own));
        }
    }
    quotes
}

/// Waits until `n` quotes are minted (read from the store: the wallet's
/// events may have gone by while the test waited for others).
async fn minted_quotes(tr: &mut RunningTranslator, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while tr.handle.quotes().totals().unwrap().minted.0 < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            tr.handle.quotes().totals()
        );
        tr.handle.mint_now();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_the_wallet_balance_is_the_sum_of_the_accepted_shares() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let mut tr = RunningTranslator::with_pool(stack.pool_addr(), &stack.mint_url()).await;
    let ehash = tr
        .wait_event(|e| matches!(e, TranslatorEvent::UpstreamConnected { .. }))
        .await;
    assert_eq!(
        ehash,
        TranslatorEvent::UpstreamConnected {
            address: stack.pool_addr().to_string(),
            ehash: true
        }
    );
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    let mut hashes = vec![];
    for _ in 0..5 {
        hashes.push(miner.mine_one("rig").await.expect("accepted").hash);
    }
    let quotes = recorded_quotes(&mut tr, 5).await;
    assert!(quotes.iter().all(|(_, amount, own)| *own && *amount > 0));
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    // every accepted share has its quote, with its hash
    let store = tr.handle.quotes().clone();
    let mut recorded: Vec<String> = store
        .all()
        .unwrap()
        .into_iter()
        .map(|r| r.share_hash)
        .collect();
    let mut mined: Vec<String> = hashes.iter().map(hex::encode).collect();
    recorded.sort();
    mined.sort();
    assert_eq!(recorded, mined);
    minted_quotes(&mut tr, 5).await;
    let wallet = tr.handle.wallet().clone();
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "balance = sum of the shares' amounts"
    );
    assert_eq!(store.totals().unwrap().minted, (5, total));

    // `wallet send` -> a fresh wallet receives the token
    send_to_fresh_wallet(&wallet, &store, &stack.mint_url(), 1).await;
    assert_eq!(wallet.balance().await.unwrap(), total - 1);
    tr.stop().await;
    stack.stop().await;
}

role_child_entry!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_quotes_recorded_while_the_minter_waits_are_minted_in_one_batch() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let wait = Duration::from_secs(8);
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    config.mint_wait_ms = wait.as_millis() as u64;
    // No retry round within the test: only the wait decides when to mint.
    config.mint_retry_secs = 600;
    let mut tr = RunningTranslator::start(config).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    // A first share, minted by the round at start-up or after the wait.
    miner.mine_one("rig").await.expect("accepted");
    tr.wait_event(|e| matches!(e, TranslatorEvent::Minted { .. }))
        .await;
    // The minter's other wakes of start-up (the pool connection, the first
    // share's notification if the start-up round minted it) pass, with
    // nothing to mint, before the next share is found.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut events = tr.handle.subscribe_events();
    // Told of the next quote, the minter waits: every quote seen recorded
    // within half the wait (the pipeline's latency aside) is in its round.
    miner.mine_one("rig").await.expect("accepted");
    wait_broadcast(&mut events, WAIT, "translator events", |e| {
        matches!(e, TranslatorEvent::QuoteRecorded { .. })
    })
    .await;
    let window_end = Instant::now() + wait / 2;
    // Fewer than one batch (the test config's 50).
    let mut accepted = 1;
    while accepted < 20 && Instant::now() < window_end {
        miner.mine_one("rig").await.expect("accepted");
        accepted += 1;
    }
    let mut recorded = 1;
    let mut minted = None;
    while let Ok(event) = tokio::time::timeout_at(window_end.into(), events.recv()).await {
        match event.expect("translator events") {
            TranslatorEvent::QuoteRecorded { .. } => recorded += 1,
            e @ TranslatorEvent::Minted { .. } => {
                minted = Some(e);
                break;
            }
            _ => {}
        }
    }
    let minted = match minted {
        Some(e) => e,
        None => {
            wait_broadcast(&mut events, WAIT * 2, "translator events", |e| {
                matches!(e, TranslatorEvent::Minted { .. })
            })
            .await
        }
    };
    assert!(
        matches!(minted, TranslatorEvent::Minted { quotes, .. } if quotes >= recorded.max(2)),
        "{accepted} shares, {recorded} quotes seen recorded within {:?}, the first round: {minted:?}",
        wait / 2
    );
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_a_killed_translator_mints_every_quote_once_after_restart() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // The first run, a child process, cannot reach the mint: its quotes are
    // recorded, not minted, when it is killed with SIGKILL.
    let (listen, unreachable) = (free_address(), free_address());
    let mut config = translator_config(
        &[stack.pool_addr()],
        &format!("http://{unreachable}"),
        dir.path(),
    );
    config.listen_address = listen;
    let config_path = dir.path().join("translator.toml");
    std::fs::write(&config_path, translator_toml(&config)).unwrap();
    let mut child = RoleChild::spawn("translator", &config_path);
    until_listening(listen, "the translator child").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut miner = Sv1Client::start(listen, "rig").await;
    for _ in 0..4 {
        miner.mine_one("rig").await.expect("accepted");
    }
    let quotes_db = dir.path().join("quotes.sqlite");
    let first_total: u64 = loop {
        let recorded = QuoteStore::open(&quotes_db)
            .and_then(|s| s.all())
            .unwrap_or_default();
        if recorded.len() == 4 {
            break recorded.iter().map(|q| q.amount).sum();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quotes never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill(); // SIGKILL: no shutdown step runs
    drop(miner);

    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    for _ in 0..3 {
        miner.mine_one("rig").await.expect("accepted");
    }
    let second = recorded_quotes(&mut tr, 3).await;
    minted_quotes(&mut tr, 7).await;
    let total: u64 = first_total + second.iter().map(|(_, a, _)| a).sum::<u64>();
    let wallet = tr.handle.wallet().clone();
    let store = tr.handle.quotes().clone();
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (7, total));
    // another round finds nothing to do
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(round.minted.is_empty() && round.already_issued.is_empty());
    assert_eq!(wallet.balance().await.unwrap(), total);
    tr.stop().await;
    stack.stop().await;
}

/// A translator config as a TOML file (the child loads it like `translator --config`).
fn translator_toml(c: &TranslatorConfig) -> String {
    let upstreams: String = c
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "\n[[upstreams]]\naddress = \"{}\"\nauthority_public_key = \"{}\"\n",
                u.address, POOL_PUBLIC_KEY
            )
        })
        .collect();
    format!(
        "network = \"devnet\"\nlisten_address = \"{}\"\nmint_url = \"{}\"\ndata_dir = \"{}\"\nmnemonic = \"{}\"\n\
         aggregate_channels = false\nnominal_hashrate = {:?}\nshares_per_minute = {:?}\n\
         vardiff_interval_secs = {}\nextranonce2_size = {}\nmax_line_bytes = {}\nkeepalive_secs = {}\n\
         wait_for_pool = {}\nmint_batch_size = {}\nmint_wait_ms = {}\nmint_retry_secs = {}\n{upstreams}",
        c.listen_address,
        c.mint_url,
        c.data_dir.display(),
        c.mnemonic,
        c.nominal_hashrate,
        c.shares_per_minute,
        c.vardiff_interval_secs,
        c.extranonce2_size,
        c.max_line_bytes,
        c.keepalive_secs,
        c.wait_for_pool,
        c.mint_batch_size,
        c.mint_wait_ms,
        c.mint_retry_secs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_a_miners_own_key_gets_quotes_only_it_can_mint() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let mut tr = RunningTranslator::with_pool(stack.pool_addr(), &stack.mint_url()).await;
    let miner_secret = SecretKey::generate();
    let miner_key = LockingKey::from_bytes(&miner_secret.public_key().to_bytes()).unwrap();
    let user = format!("{miner_key}.alice");
    let mut miner = Sv1Client::start(tr.addr(), &user).await;
    for _ in 0..3 {
        miner.mine_one(&user).await.expect("accepted");
    }
    let quotes = recorded_quotes(&mut tr, 3).await;
    assert!(quotes.iter().all(|(_, _, own)| !own));
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    let store = tr.handle.quotes().clone();
    let wallet = tr.handle.wallet().clone();
    let listing = wallet_command(&wallet, &store, WalletCommand::Quotes).await;
    for (id, _, _) in &quotes {
        let line = listing
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .expect("listed");
        assert!(
            line.contains("miner-key") && line.contains(&miner_key.to_string()),
            "{line}"
        );
    }
    // the proxy's key cannot mint them
    let ids: Vec<&str> = quotes.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in &ids {
        wallet
            .cdk()
            .fetch_mint_quote(id, Some(ehash_method()))
            .await
            .unwrap();
    }
    let proxy_keys: HashMap<String, SecretKey> = ids
        .iter()
        .map(|id| (id.to_string(), locking_secret(&seed())))
        .collect();
    assert!(wallet
        .cdk()
        .batch_mint(&ids, SplitTarget::default(), None, Some(proxy_keys))
        .await
        .is_err());
    assert_eq!(wallet.balance().await.unwrap(), 0);
    // the miner's own wallet can
    let own = hashpool_tests::wallet(&stack.mint_url());
    assert_eq!(mint_with(&own, &ids, &miner_secret).await, Ok(total));
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_defer_mode_answers_the_miner_only_as_the_pool_does() {
    let mut stack = EhashStack::start("defer", |c| {
        if let Some(m) = c.mint.as_mut() {
            m.timeout_secs = 1;
        }
    })
    .await;
    let mut tr = RunningTranslator::with_pool(stack.pool_addr(), &stack.mint_url()).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    for _ in 0..3 {
        miner
            .mine_one("rig")
            .await
            .expect("accepted once its quote exists");
    }
    let quotes = recorded_quotes(&mut tr, 3).await;
    minted_quotes(&mut tr, 3).await;
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), total);

    // The mint goes down: the pool cannot get a quote, and the miner is told so.
    stack.stop_mint().await;
    let err = miner
        .mine_one("rig")
        .await
        .expect_err("no quote, no success");
    assert!(err[1].as_str().unwrap().contains("mint"), "{err}");
    tr.stop().await;
    stack.stop().await;
}

// ---------------------------------------------------------------- load

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
/// the miner in its next job, and mining goes on. Nothing is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_chain_tip_renews_the_channel_and_the_miner_mines_on() {
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
    let tr = RunningTranslator::start(config).await;
    let mut miner = Sv1Client::start(tr.addr(), "flood").await;
    let first_coinb1 = miner.job.as_ref().unwrap().coinb1.clone();
    let (mut accepted, mut refused) = (0, 0);
    let mut channels = std::collections::BTreeSet::new();
    while accepted <= budget + 100 {
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
    // another id), and only shares in flight at the renewal refused.
    assert_eq!(channels.len(), 1, "channels {channels:?}");
    assert!(refused <= 5, "{refused} refused");
    let coinb1 = &miner.job.as_ref().unwrap().coinb1;
    assert_ne!(coinb1, &first_coinb1, "the new prefix is in the coinbase");
    mine_and_check(&mut stack, &mut miner, "flood").await;
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

//! The translator against the real pool, devnet-tp and mint on 127.0.0.1
//! (port 0), with a test SV1 miner that builds its headers from
//! `mining.notify` on its own: a share the pool accepts proves the SV1 <->
//! SV2 translation end to end.

#[path = "../../../roles/mint/tests/support/mod.rs"]
mod mint_support;

mod consolidation;
mod full_chain;
mod late_answers;
mod load;
mod mint_proxies;
mod wallet;

// Roles started as child processes of this binary run here (by its name).
role_child_entry!();

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
use translator::wallet::{
    ehash_method, locking_secret, EhashWallet, Holdings, BATCHES_PER_ROUND, DEFAULT_MINT_TIMEOUT,
};
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

/// The pool closes a channel no share was accepted on for its idle timeout;
/// the translator opens the miner a new one, and the miner, still
/// connected, gets a clean job and mines on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_whose_idle_channel_the_pool_closes_mines_on_a_new_one() {
    let mut stack = Stack::start_with(NBITS_NEVER, |c| c.idle_channel_timeout_secs = 4).await;
    let tr = RunningTranslator::with_pool(stack.pool_addr(), NO_MINT_URL).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig1").await;
    let (_, first) = mine_and_check(&mut stack, &mut miner, "rig1").await;
    wait_clean_job(&mut miner).await;
    let (_, second) = mine_and_check(&mut stack, &mut miner, "rig1").await;
    assert_ne!(
        second.channel_id, first.channel_id,
        "the share came on a new channel"
    );
    assert_eq!(stack.pool.stats().channels_open, 1);
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

/// A connection the translator has no room for: closed before a line.
async fn closed_at_once(mut miner: tokio::net::TcpStream) {
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read(&mut miner, &mut [0u8; 1]),
    )
    .await
    .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
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
    closed_at_once(tokio::net::TcpStream::connect(tr.addr()).await.unwrap()).await;

    // The first says nothing: closed, and its pool channel with it.
    first.expect_closed().await;
    tr.wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("idle")))
        .await;
    until_pool_channels_closed(&stack).await;
    // Room again for a miner, once the first's slot is given back (just
    // after its disconnection is told).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Sv1Client::try_start(tr.addr(), "next").await {
            Ok(_) => break,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no room for a miner: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tr.stop().await;
    stack.stop().await;
}

/// Miners from one address past `max_miners_per_ip` are closed at once;
/// another address still gets in, up to `max_miners`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_from_one_address_are_capped() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let config = TranslatorConfig {
        max_miners: 2,
        max_miners_per_ip: 1,
        ..translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path())
    };
    let tr = RunningTranslator::start(config).await;
    let addr = tr.addr();
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, last], 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let subscribed = |mut miner: tokio::net::TcpStream| async move {
        let subscribe = json!({"id": 1, "method": "mining.subscribe", "params": []});
        miner
            .write_all(format!("{subscribe}\n").as_bytes())
            .await
            .unwrap();
        let mut reader = tokio::io::BufReader::new(miner);
        let mut line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(line.contains("\"result\""), "{line}");
        reader
    };
    let _first = subscribed(from(1).await).await;
    closed_at_once(from(1).await).await;
    let _other = subscribed(from(2).await).await;
    closed_at_once(from(3).await).await;
    tr.stop().await;
    stack.stop().await;
}

/// A connection mines for one locking key: a second key authorized on it
/// is refused (its shares would pay the first), a second worker of the same
/// key is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_authorizing_a_second_locking_key_is_refused() {
    let (stack, tr) = stack_and_translator(NBITS_NEVER).await;
    let other_key = LockingKey::from_bytes(&SecretKey::generate().public_key().to_bytes()).unwrap();
    let mut miner = Sv1Client::start(tr.addr(), "rig-1").await;
    let refused = miner.authorize(&other_key.to_string()).await.unwrap_err();
    assert_eq!(refused[0], 24, "{refused}");
    assert_eq!(miner.authorize("rig-2").await, Ok(true));
    tr.stop().await;
    stack.stop().await;
}

/// Miners that authorize and leave at once, before the pool has answered
/// their channel's open, leave nothing open at the pool: each channel
/// opened after its miner left is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_that_leave_while_their_channel_opens_leave_no_channel_at_the_pool() {
    use tokio::io::AsyncWriteExt;
    let (mut stack, mut tr) = stack_and_translator(NBITS_NEVER).await;
    const LEAVING: usize = 20;
    for n in 0..LEAVING {
        let mut miner = tokio::net::TcpStream::connect(tr.addr()).await.unwrap();
        let lines = format!(
            "{}\n{}\n",
            json!({"id": 1, "method": "mining.subscribe", "params": []}),
            json!({"id": 2, "method": "mining.authorize", "params": [format!("rig{n}"), "x"]}),
        );
        miner.write_all(lines.as_bytes()).await.unwrap();
    }
    for _ in 0..LEAVING {
        tr.wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { .. }))
            .await;
    }
    // The pool answers in order: once this miner's channel is open, every
    // open before it was answered.
    let mut good = Sv1Client::start(tr.addr(), "good").await;
    mine_and_check(&mut stack, &mut good, "good").await;
    let deadline = std::time::Instant::now() + WAIT;
    while stack.pool.stats().channels_open > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} channels open at the pool for one miner",
            stack.pool.stats().channels_open
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_stops_reading_is_closed_with_its_channel_after_the_write_timeout() {
    let stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], NO_MINT_URL, dir.path());
    config.miner_write_timeout_secs = 1;
    let tr = RunningTranslator::start(config).await;
    // A small receive buffer, so the translator's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut miner = Sv1Client::over(socket.connect(tr.addr()).await.unwrap());
    miner.subscribe().await;
    assert_eq!(miner.authorize("rig").await, Ok(true));
    assert_eq!(stack.pool.stats().channels_open, 1);
    // Requests the translator must answer, never reading an answer.
    let mut events = tr.handle.subscribe_events();
    let flood = tokio::spawn(async move {
        let line = b"{\"id\":1,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n";
        while miner.send_raw(line).await.is_ok() {}
    });
    // Filling the socket buffers takes tens of thousands of answers: a few
    // seconds, far more on a machine busy with other tests.
    let reason = wait_broadcast(
        &mut events,
        Duration::from_secs(120),
        "translator events",
        |e| matches!(e, TranslatorEvent::MinerDisconnected { .. }),
    )
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

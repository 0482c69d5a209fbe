//! The ehash flow across restarts: the mint and the pool killed and
//! restarted, notifications owed until acknowledged.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_restart_mid_run_loses_no_share() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;

    let mut shares = mine(&mut client, channel, 2).await;
    let mut notifications = client.notifications(2).await;
    // The pool has asked the mint for its totals: they are checkpointed at
    // the stop, and the restarted mint resumes from there.
    until_mint_stats(&stack, |m| m.quotes_paid == 2).await;
    stack.stop_mint().await;
    // Accepted while the mint is down: answered at once, quoted later.
    shares.extend(mine(&mut client, channel, 3).await);
    stack.start_mint().await;
    notifications.extend(client.notifications(3).await);
    assert_one_notification_per_share(&shares, &notifications);

    let wallet = wallet(&stack.mint_url());
    assert_eq!(
        mint_quotes(&wallet, &quote_ids(&notifications), &secret).await,
        Ok(total(&shares))
    );
    // The restarted mint's totals, from its checkpoint and what came after.
    until_mint_stats(&stack, |m| {
        (m.quotes_unpaid, m.quotes_paid, m.quotes_issued) == (0, 0, 5)
            && m.ehash_issued == total(&shares)
    })
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_on_a_block_that_came_and_went_while_the_mint_was_down_are_quoted() {
    // Block target 2^248: one share in about 25 of the test channel's is a
    // block, and the test picks which.
    let mut stack = EhashStack::start_on("annotate", |tp| tp.nbits = 0x2001_0000, |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let mut shares = mine(&mut client, channel, 1).await;

    // While the mint is down, two blocks: the shares between them build
    // on a tip the mint never sees.
    stack.stop_mint().await;
    let mut on_missed_tip = vec![];
    for round in 0..2 {
        let target = client.channels[&channel].target();
        let block = client.valid_share(channel, true);
        let prev_hashes = client.channels[&channel].prev_hash_count;
        assert_eq!(client.submit_and_wait(channel, &block).await, Ok(()));
        shares.push((
            block.hash,
            ehash::ehash_amount(target, ehash::UnitBits::new(0).unwrap()),
        ));
        client
            .wait_for_prev_hash_count(channel, prev_hashes + 1)
            .await;
        let mined = mine(&mut client, channel, 2).await;
        if round == 0 {
            on_missed_tip = mined.clone();
        }
        shares.extend(mined);
    }
    stack.start_mint().await;

    let notifications = client.notifications(shares.len()).await;
    assert!(
        !client.seen.iter().any(|m| matches!(
            m,
            Incoming::Ehash(ehash_ext_sv2::EhashMessage::MintQuoteFailure(_))
        )),
        "no share was refused: {:?}",
        client.seen
    );
    assert_one_notification_per_share(&shares, &notifications);
    assert!(on_missed_tip.iter().all(|(hash, _)| notifications
        .iter()
        .any(|n| n.share_hash.to_array() == *hash)));
    assert_eq!(
        mint_quotes(
            &wallet(&stack.mint_url()),
            &quote_ids(&notifications),
            &secret
        )
        .await,
        Ok(total(&shares))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_a_stopped_pool_owed_are_quoted_however_many_blocks_came_before_it_returned() {
    let mut stack = EhashStack::start_on("annotate", |tp| tp.nbits = 0x2001_0000, |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;

    // Accepted while the mint is down, then the pool stops owing them.
    stack.stop_mint().await;
    let shares = mine(&mut client, channel, 3).await;
    drop(client);
    stack.stop_pool().await;

    // The mint is back and follows the chain: more blocks than its
    // max_tip_age (6) come while no pool delivers anything.
    stack.start_mint().await;
    let mut tdp = TdpClient::connect(stack.tp().local_addr()).await;
    for _ in 0..=stack.mint_config.chain.as_ref().unwrap().max_tip_age {
        let (template, prev) = tdp.template().await;
        tdp.solve_and_submit(&template, &prev).await;
    }
    tdp.template().await;
    // The mint hears of the last block as the client did.
    tokio::time::sleep(Duration::from_millis(500)).await;

    stack.start_pool().await;
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// Waits (20 s at most) until the mint's totals, as the pool last asked
/// for them, are as `wanted`.
async fn until_mint_stats(
    stack: &EhashStack,
    wanted: impl Fn(&mint_quote_sv2::MintStatsResponse) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = stack.pool().mint_stats();
        if stats.as_ref().is_some_and(&wanted) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mint's totals: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_mode_answers_after_the_quote_and_with_mint_timeout_while_the_mint_is_down() {
    let mut stack = EhashStack::start("defer", |c| c.mint.as_mut().unwrap().timeout_secs = 1).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;

    // The success arrives only once the quote exists: its notification came first.
    let shares = mine(&mut client, channel, 2).await;
    let notified = client.notifications(0).await;
    assert_eq!(
        notified.len(),
        2,
        "both notifications were received before the successes"
    );
    assert_one_notification_per_share(&shares, &notified);

    stack.stop_mint().await;
    let share = client.valid_share(channel, false);
    assert_eq!(
        client.submit_and_wait(channel, &share).await,
        Err("mint-timeout".to_string())
    );

    stack.start_mint().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let share = client.valid_share(channel, false);
        match client.submit_and_wait(channel, &share).await {
            Ok(()) => break,
            Err(code) => assert_eq!(code, "mint-timeout"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shares never succeeded again"
        );
    }
    stack.stop().await;
}

/// A client with the ehash extension on the stack's pool, once the pool
/// (restarted as a child process) listens again.
async fn connect_when_up(stack: &EhashStack) -> MiningClient {
    until_listening(stack.pool_addr(), "the pool child").await;
    stack.client(true).await
}

/// A second pool on a running pool's state dir is refused before it
/// touches the outbox journal: the first goes on journaling and quoting,
/// and once it stopped a pool starts there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pool_on_a_state_dir_is_refused() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let second = pool::PoolConfig {
        listen_address: "127.0.0.1:0".into(),
        ..stack.pool_config.clone()
    };
    let refused = pool::start(
        second,
        tokio_util::sync::CancellationToken::new(),
        pool::Hooks::default(),
    )
    .await
    .err()
    .expect("a second pool is refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "state_dir {} is in use by another pool (pid {}): one pool per state_dir",
            stack.pool_config.state_dir.display(),
            std::process::id()
        )
    );

    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 2).await;
    assert_one_notification_per_share(&shares, &client.notifications(2).await);
    stack.stop_pool().await;
    stack.start_pool().await;
    stack.stop().await;
}

/// Shares replayed at a restart go to the mint behind the shares miners
/// send now: a backlog larger than the pending set refuses no live share
/// (in defer mode a share is refused at once when there is no room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_backlog_refuses_no_live_share() {
    const OWED: usize = 12;
    let mut stack = EhashStack::start("defer", |pool| {
        pool.mint.as_mut().unwrap().pending_capacity = 4;
    })
    .await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    // Quoted and notified, never acknowledged: owed across the restart.
    let mut shares = mine(&mut client, channel, OWED).await;
    client.notifications(OWED).await;
    drop(client);
    stack.stop_pool().await;
    stack.stop_mint().await;
    // The backlog cannot drain while the mint is away.
    stack.start_pool().await;
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let target = client.channels[&channel].target();
    let live = client.valid_share(channel, false);
    let seq = client.submit(channel, &live).await;
    stack.start_mint().await;
    assert_eq!(client.share_result(channel, seq).await, Ok(()));
    let amount = ehash::ehash_amount(target, ehash::UnitBits::new(0).unwrap());
    shares.push((live.hash, amount));
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_killed_abruptly_and_restarted_loses_no_share() {
    // The pool runs as a child process; the mint is down, so its shares are
    // only in the pool's outbox when it is killed with SIGKILL.
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    stack.stop_mint().await;
    let mut child = stack.pool_in_a_child().await;
    let (secret, key) = miner_key();
    let mut client = connect_when_up(&stack).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 4).await;
    child.kill(); // SIGKILL: no shutdown step runs
    drop(client);

    // Mint back, pool back on its state dir: the owed requests are replayed
    // and their notifications wait for the key's next channel.
    stack.start_mint().await;
    child.restart();
    let mut client = connect_when_up(&stack).await;
    let channel = open_channel(&mut client, &key).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    child.kill();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_unacknowledged_when_the_pool_is_killed_are_sent_again_until_acknowledged() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let mut child = stack.pool_in_a_child().await;
    let (secret, key) = miner_key();

    // Notified, never acknowledged, then the pool dies (SIGKILL).
    let mut client = connect_when_up(&stack).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 3).await;
    let first = client.notifications(shares.len()).await;
    assert_one_notification_per_share(&shares, &first);
    child.kill();
    drop(client);

    // Back on its state: the same quotes reach the key's next channel.
    child.restart();
    let mut client = connect_when_up(&stack).await;
    let channel = open_channel(&mut client, &key).await;
    let again = client.notifications(shares.len()).await;
    assert_one_notification_per_share(&shares, &again);
    let mut ids = quote_ids(&again);
    ids.sort();
    let mut first_ids = quote_ids(&first);
    first_ids.sort();
    assert_eq!(ids, first_ids, "the same quotes, not new ones");
    let hashes: Vec<[u8; 32]> = again.iter().map(|n| n.share_hash.to_array()).collect();
    client.ack(channel, &hashes).await;
    let wallet = wallet(&stack.mint_url());
    assert_eq!(
        mint_quotes(&wallet, &ids, &secret).await,
        Ok(total(&shares))
    );
    child.kill();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_for_a_gone_miner_survive_a_pool_restart_and_reach_its_next_channel() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    stack.stop_mint().await;
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 3).await;
    drop(client); // the miner leaves before its quotes exist

    // The quotes are created with nobody to tell: their shares stay in the
    // outbox until a translator acknowledges them.
    stack.start_mint().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.pool().mint_stats().map_or(0, |m| m.quotes_paid) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quotes were never created"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.stop_pool().await;
    stack.start_pool().await;

    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// An acknowledgement of more shares than a translator ever puts in one
/// is ignored: the notice it named is still owed, and reaches the key's
/// next channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_larger_than_a_translator_sends_is_ignored() {
    use ehash_ext_sv2::{EhashMessage, MintQuoteAckOwned, MAX_ACKED_PER_MESSAGE};
    let stack = EhashStack::start("annotate", |_| {}).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    mine(&mut client, channel, 1).await;
    let first = client.notifications(1).await;
    let mut hashes = vec![first[0].share_hash.clone()];
    hashes.extend((0..MAX_ACKED_PER_MESSAGE as u32).map(|n| {
        let mut fake = [0u8; 32];
        fake[..4].copy_from_slice(&n.to_le_bytes());
        stratum_core::binary_sv2::U256Owned::from(fake)
    }));
    let oversized = MintQuoteAckOwned {
        channel_id: channel,
        share_hashes: stratum_core::binary_sv2::Seq064KOwned::new(hashes).unwrap(),
    };
    client
        .conn
        .send_ehash(EhashMessage::MintQuoteAck(oversized))
        .await;
    drop(client);

    let mut client = stack.client(true).await;
    open_channel(&mut client, &key).await;
    let again = client.notifications(1).await;
    assert_eq!(quote_ids(&again), quote_ids(&first), "still owed");
    stack.stop().await;
}

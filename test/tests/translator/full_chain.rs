//! The whole chain: SV1 miner -> translator -> pool (ehash flow, annotate)
//! -> mint, and the translator's wallet minting what the pool announced.

use super::*;
use crate::wallet::{seed, send_to_fresh_wallet, wallet_command};

/// Waits until the translator recorded `n` quotes; returns (quote id, amount, own).
pub(crate) async fn recorded_quotes(
    tr: &mut RunningTranslator,
    n: usize,
) -> Vec<(String, u64, bool)> {
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
pub(crate) async fn minted_quotes(tr: &mut RunningTranslator, n: u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_records_of_quotes_done_with_are_deleted_once_old_and_pending_ones_kept() {
    use translator::quotes::{QuoteRecord, QuoteState, QuoteStore};
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    // Records a translator of two days ago left: done with, and one still
    // pending (a quote the mint does not know: it stays pending).
    let two_days_ago = roles_common::unix_secs() - 2 * 86_400;
    let old = |id: &str, state| QuoteRecord {
        quote_id: id.into(),
        share_hash: format!("{id}-hash"),
        amount: 1,
        locking_key: "02aa".into(),
        keyset_id: "00ab".into(),
        channel_id: 1,
        sequence_number: 1,
        state,
        created_at: two_days_ago,
        last_error: None,
    };
    std::fs::create_dir_all(dir.path()).unwrap();
    let store = QuoteStore::open(&config.quotes_db_path()).unwrap();
    let mut records: Vec<_> = (0..3)
        .map(|i| old(&format!("old-minted-{i}"), QuoteState::Minted))
        .collect();
    records.push(old("old-foreign", QuoteState::Foreign));
    records.push(old("old-pending", QuoteState::Pending));
    store.record(&records, &[]).unwrap();
    drop(store);

    let mut tr = RunningTranslator::start(config).await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    miner.mine_one("rig").await.expect("accepted");
    let quote = recorded_quotes(&mut tr, 1).await.remove(0).0;
    let store = tr.handle.quotes().clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let left: Vec<String> = store
            .all()
            .unwrap()
            .into_iter()
            .map(|r| r.quote_id)
            .collect();
        if !left
            .iter()
            .any(|id| id.starts_with("old-minted") || id == "old-foreign")
        {
            break left;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.contains(&"old-pending".to_string()), "{left:?}");
    assert!(left.contains(&quote), "today's quote is kept: {left:?}");
    tr.stop().await;
    stack.stop().await;
}

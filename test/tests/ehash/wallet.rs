//! Wallets of the ehash flow: the translator's wallet lists and looks up
//! its quotes at the mint, and a miner with its own key claims its shares.

use super::*;

/// A translator's wallet of a fresh seed at the stack's mint, in memory.
async fn translator_wallet(stack: &EhashStack) -> translator::wallet::EhashWallet {
    let seed: [u8; 64] = rand::random::<[u8; 32]>().repeat(2).try_into().unwrap();
    translator::wallet::EhashWallet::in_memory(&stack.mint_url(), seed)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_wallet_lists_exactly_its_own_quotes_at_the_mint() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let wallet = translator_wallet(&stack).await;
    let (_, other_key) = miner_key();
    let mut own = stack.client(true).await;
    let mut other = stack.client(true).await;
    let own_channel = open_channel(&mut own, &wallet.locking_key()).await;
    let other_channel = open_channel(&mut other, &other_key).await;
    mine(&mut own, own_channel, 3).await;
    mine(&mut other, other_channel, 2).await;
    let notified = own.notifications(3).await;
    other.notifications(2).await;

    // Exactly the wallet's quotes, with their amounts, paid and not yet minted.
    let listed = wallet.quotes_at_mint().await.unwrap();
    let mut expected: Vec<(String, u64)> = notified
        .iter()
        .map(|n| (n.quote_id.as_utf8_or_hex(), n.amount))
        .collect();
    let mut got: Vec<(String, u64)> = listed.iter().map(|q| (q.quote.clone(), q.amount)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let own_key = wallet.locking_key().to_string();
    assert!(listed
        .iter()
        .all(|q| q.pubkey == own_key && q.state == ehash::lookup::QuoteState::Paid));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_wallet_looks_up_what_it_missed_from_where_it_left_off() {
    use ehash::lookup::MAX_LIMIT;
    use translator::wallet::LookedUp;
    let stack = EhashStack::start("annotate", |_| {}).await;
    let wallet = translator_wallet(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let store = translator::quotes::QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &wallet.locking_key()).await;
    // Three quotes, then (a second later) more than a page of younger ones;
    // none recorded, as if their notifications never came.
    mine(&mut client, channel, 3).await;
    client.notifications(3).await;
    let old = roles_common::unix_secs();
    while roles_common::unix_secs() == old {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let young_from = roles_common::unix_secs();
    let young = MAX_LIMIT as usize + 1;
    mine(&mut client, channel, young).await;
    client.notifications(young).await;

    // The older quotes only; the listing stops on the first page, at the
    // first younger quote, and the next look-up starts there.
    let mint = wallet.cdk().mint_url.to_string();
    let key = wallet.locking_key().to_string();
    let looked_up = wallet.record_from_mint(&store, young_from, usize::MAX);
    assert_eq!(
        looked_up.await.unwrap(),
        LookedUp {
            found: 3,
            finished: true
        }
    );
    assert_eq!(store.lookup_cursor(&mint, &key).unwrap(), None);
    // Then the younger ones, a page at most per look-up: the first page
    // holds 97 of them, the next look-up goes on from the second.
    let looked_up = wallet.record_from_mint(&store, u64::MAX, 1).await.unwrap();
    let on_first_page = MAX_LIMIT as usize - 3;
    assert_eq!(
        looked_up,
        LookedUp {
            found: on_first_page,
            finished: false
        }
    );
    let looked_up = wallet.record_from_mint(&store, u64::MAX, 1).await.unwrap();
    assert_eq!(
        looked_up,
        LookedUp {
            found: young - on_first_page,
            finished: true
        }
    );
    // The next look-up starts at the last page.
    assert_eq!(store.all().unwrap().len(), 3 + young);
    let last_page = store.lookup_cursor(&mint, &key).unwrap();
    assert_eq!(
        last_page.expect("a cursor past the first page").key_index,
        0
    );
    // The last page holds what the first page of 100 left: a store that
    // knows nothing but where the look-up stood finds those 4 from there.
    let other_dir = tempfile::tempdir().unwrap();
    let empty = translator::quotes::QuoteStore::open(&other_dir.path().join("q.sqlite")).unwrap();
    empty.record_looked_up(&mint, &key, &[], last_page).unwrap();
    let from_last_page = wallet.record_from_mint(&empty, u64::MAX, usize::MAX);
    assert_eq!(
        from_last_page.await.unwrap().found,
        3 + young - MAX_LIMIT as usize
    );
    // Nothing new: nothing found, and the look-up stays where it was, for
    // the store opened again too (a restarted proxy).
    let again = wallet.record_from_mint(&store, u64::MAX, usize::MAX);
    assert_eq!(again.await.unwrap().found, 0);
    drop(store);
    let reopened = translator::quotes::QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    assert_eq!(reopened.lookup_cursor(&mint, &key).unwrap(), last_page);
    // Another mint's look-up of the same key starts from the start.
    assert_eq!(
        reopened.lookup_cursor("http://127.0.0.1:1", &key).unwrap(),
        None
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_with_its_own_key_claims_exactly_its_shares_and_the_proxy_cannot() {
    use translator::cli::{run_wallet_command_on, WalletCommand};
    use translator::wallet::OwnWallet;
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        &dir.path().join("tr"),
    );
    config.nominal_hashrate = 2000.0;
    let proxy_secret = translator::wallet::locking_secret(&config.seed());
    let tr = RunningTranslator::start(config).await;

    // The miner's own wallet: a fresh mnemonic, and the username to mine with.
    let own = OwnWallet::open(&dir.path().join("own"), &stack.mint_url())
        .await
        .unwrap();
    let run = |command| run_wallet_command_on(&own.wallet, &own.store, command);
    let key = run(WalletCommand::Key {
        worker: Some("rig".into()),
    })
    .await
    .unwrap();
    let username = key
        .lines()
        .find_map(|l| l.strip_prefix("SV1 username: "))
        .expect("a username")
        .to_string();
    assert_eq!(username, own.username(Some("rig")));

    let shutdown = tokio_util::sync::CancellationToken::new();
    let miner = miner::start(
        miner::MinerConfig {
            url: tr.addr().to_string(),
            username,
            threads: 1,
            ..Default::default()
        },
        shutdown.clone(),
    );
    let stats = miner.stats();
    while stats.accepted() < 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    miner.wait().await.unwrap();

    // Every accepted share's quote reaches the translator, locked to the miner's key.
    let accepted = stack.pool().stats().shares_accepted;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let foreign = loop {
        let records = tr.handle.quotes().all().unwrap();
        let foreign: Vec<_> = records
            .into_iter()
            .filter(|r| r.state == translator::quotes::QuoteState::Foreign)
            .collect();
        if foreign.len() as u64 >= accepted {
            break foreign;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {accepted} quotes",
            foreign.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(foreign.len() as u64, accepted);
    let ids: Vec<String> = foreign.iter().map(|r| r.quote_id.clone()).collect();
    let sum: u64 = foreign.iter().map(|r| r.amount).sum();

    // The proxy's key cannot mint them (NUT-20); the miner's claim mints them all, once.
    assert!(mint_quotes(&wallet(&stack.mint_url()), &ids, &proxy_secret)
        .await
        .is_err());
    // The claim deletes the record of a quote created days ago and minted
    // since, and keeps the one created two hours ago and those it mints.
    let minted = |quote_id: &str, created_at| translator::quotes::QuoteRecord {
        quote_id: quote_id.into(),
        share_hash: "00".repeat(32),
        amount: 1,
        locking_key: own.wallet.locking_key().to_string(),
        keyset_id: String::new(),
        channel_id: 1,
        sequence_number: 1,
        state: translator::quotes::QuoteState::Minted,
        created_at,
        last_error: None,
    };
    let two_hours_ago = roles_common::unix_secs() - 2 * 3600;
    own.store
        .record(
            &[minted("days-ago", 1), minted("hours-ago", two_hours_ago)],
            &[],
        )
        .unwrap();
    let claim = || WalletCommand::Claim {
        keep_quotes_hours: None,
    };
    let claimed = run(claim()).await.unwrap();
    assert!(
        claimed.contains(&format!("minted now: {accepted} quotes, {sum} hash")),
        "{claimed}"
    );
    assert!(
        claimed.contains(
            "deleted the records of 1 quotes done with and 0 refused shares, created over 24 h ago"
        ),
        "{claimed}"
    );
    assert_eq!(own.store.totals().unwrap().minted, (accepted + 1, sum + 1));
    assert_eq!(own.wallet.balance().await.unwrap(), sum);
    let again = run(claim()).await.unwrap();
    assert!(again.contains("minted now: 0 quotes, 0 hash"), "{again}");
    assert!(!again.contains("deleted"), "{again}");

    // A token sent from it is received by another wallet.
    let token = run(WalletCommand::Send { amount: 1 }).await.unwrap();
    let other = OwnWallet::open(&dir.path().join("other"), &stack.mint_url())
        .await
        .unwrap();
    let received = run_wallet_command_on(
        &other.wallet,
        &other.store,
        WalletCommand::Receive {
            token: token.trim().to_string(),
        },
    )
    .await
    .unwrap();
    assert!(received.contains("received: 1 hash"), "{received}");
    assert_eq!(other.wallet.balance().await.unwrap(), 1);
    assert_eq!(own.wallet.balance().await.unwrap(), sum - 1);
    tr.stop().await;
    stack.stop().await;
}

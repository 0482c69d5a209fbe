//! The ehash flow with the real roles on 127.0.0.1: devnet-tp, the mint, the
//! pool (annotate and defer modes), SV2 test clients and cdk wallets.

use std::time::Duration;

use ehash::LockingKey;
use ehash_ext_sv2::{MintQuoteNotificationOwned, EHASH_EXTENSION_TYPE};
use hashpool_tests::*;
use roles_common::testing::load_shipped;
use stats_sv2::StatsMessage;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

/// Opens an extended channel locked to `key` and waits for its first job.
async fn open_channel(client: &mut MiningClient, key: &LockingKey) -> u32 {
    let channel = client
        .open_extended(&format!("{key}.rig"), 1.0, 4)
        .await
        .expect("channel opens");
    client.wait_for_work(channel).await;
    channel
}

/// Mines `n` accepted shares; returns (share hash, ehash amount) of each.
async fn mine(client: &mut MiningClient, channel: u32, n: usize) -> Vec<([u8; 32], u64)> {
    let mut shares = vec![];
    for _ in 0..n {
        let target = client.channels[&channel].target();
        let share = client.mine_one(channel).await.expect("share accepted");
        shares.push((
            share.hash,
            ehash::ehash_amount(target, ehash::UnitBits::new(0).unwrap()),
        ));
    }
    shares
}

fn quote_ids(notifications: &[MintQuoteNotificationOwned]) -> Vec<String> {
    notifications
        .iter()
        .map(|n| n.quote_id.as_utf8_or_hex())
        .collect()
}

/// Every share has exactly one notification, with its hash and amount.
fn assert_one_notification_per_share(
    shares: &[([u8; 32], u64)],
    notifications: &[MintQuoteNotificationOwned],
) {
    assert_eq!(notifications.len(), shares.len());
    for (hash, amount) in shares {
        let matching: Vec<_> = notifications
            .iter()
            .filter(|n| n.share_hash.to_array() == *hash)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one notification for share {}",
            ehash::share::hex_be(hash)
        );
        assert_eq!(matching[0].amount, *amount);
    }
}

fn total(shares: &[([u8; 32], u64)]) -> u64 {
    shares.iter().map(|(_, a)| a).sum()
}

/// `shares` (mined earlier, perhaps on another connection) each have one
/// notification on `channel`, and `secret` mints exactly their amounts.
async fn notified_and_minted(
    stack: &EhashStack,
    client: &mut MiningClient,
    channel: u32,
    shares: &[([u8; 32], u64)],
    secret: &cdk::nuts::SecretKey,
) {
    let notifications = client.notifications(shares.len()).await;
    assert_one_notification_per_share(shares, &notifications);
    assert!(notifications.iter().all(|n| n.channel_id == channel));
    let wallet = wallet(&stack.mint_url());
    assert_eq!(
        mint_quotes(&wallet, &quote_ids(&notifications), secret).await,
        Ok(total(shares))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_share_gets_one_notification_and_mints_its_amount_with_the_channels_key() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;

    let shares = mine(&mut client, channel, 5).await;
    let notifications = client.notifications(5).await;
    assert_one_notification_per_share(&shares, &notifications);
    assert!(notifications.iter().all(|n| n.channel_id == channel));

    // Another key cannot mint them; the channel's key mints exactly their amounts.
    let (other, _) = miner_key();
    let ids = quote_ids(&notifications);
    assert!(mint_quotes(&wallet(&stack.mint_url()), &ids, &other)
        .await
        .is_err());
    let wallet = wallet(&stack.mint_url());
    assert_eq!(
        mint_quotes(&wallet, &ids, &secret).await,
        Ok(total(&shares))
    );
    assert_eq!(
        u64::from(wallet.total_balance().await.unwrap()),
        total(&shares)
    );

    // The pool keeps the mint's latest stats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(stats) = stack.pool().mint_stats() {
            if stats.quotes_issued == 5 {
                assert_eq!(stats.ehash_issued, total(&shares));
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mint stats never showed 5 issued quotes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_on_templates_carrying_transactions_are_quoted_and_minted() {
    let (stack, _chain) = EhashStack::start_with_transactions("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = client
        .open_extended(&format!("{key}.rig"), 1.0, 4)
        .await
        .expect("channel opens");
    // Jobs on a template with transactions carry a merkle path.
    let job_id = client
        .wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(job)))
                if job.channel_id == channel && job.merkle_path.len() >= 2 =>
            {
                Some(job.job_id)
            }
            _ => None,
        })
        .await;
    client.wait_for_work(channel).await;
    let shares = mine(&mut client, channel, 5).await;
    let active = client.channels[&channel].active_job.unwrap();
    assert!(active >= job_id);
    assert!(
        client.channels[&channel].extended_jobs[&active]
            .merkle_path
            .len()
            >= 2
    );
    assert!(stack.tp().mempool_len() > 0);
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// A stack whose pool runs its job declarator on a chain with transactions,
/// and a template (with transactions) a client's own template provider
/// (the same devnet-tp) gives, with its prevhash and its transactions.
async fn declarable_template() -> (
    EhashStack,
    tempfile::TempDir,
    stratum_core::template_distribution_sv2::SetNewPrevHashOwned,
    stratum_core::template_distribution_sv2::NewTemplateOwned,
    Vec<stratum_core::bitcoin::Transaction>,
) {
    let (stack, chain) = EhashStack::start_with_transactions("annotate", |pool| {
        pool.jds = Some(pool::config::JdsSettings {
            listen_address: "127.0.0.1:0".into(),
        })
    })
    .await;
    let mut tdp = TdpClient::connect(stack.tp().local_addr()).await;
    let (_, prev) = tdp.template().await;
    let template = tdp.template_with_transactions().await;
    let txs = tdp.transaction_data(template.template_id).await.unwrap();
    (stack, chain, prev, template, txs)
}

/// A work-selecting connection with the ehash extension and an extended
/// channel locked to `key`.
async fn work_selecting_channel(stack: &EhashStack, key: &LockingKey) -> (MiningClient, u32) {
    let mut client = MiningClient::connect(stack.pool_addr(), POOL_PUBLIC_KEY)
        .await
        .unwrap();
    client.setup_connection(0b10).await;
    client
        .request_extensions(vec![ehash_ext_sv2::EHASH_EXTENSION_TYPE])
        .await;
    let channel = client
        .open_extended(&format!("{key}.rig"), 1.0, 4)
        .await
        .expect("channel opens");
    (client, channel)
}

/// A job declaration client declares the template of its own template
/// provider (the same devnet-tp, with transactions) and mines it as a
/// custom job: every share is quoted and minted. What does not pay the
/// pool, or does not commit to the channel's key, is refused by name and
/// the connections stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_on_a_declared_job_are_quoted_and_minted() {
    let (stack, _chain, prev, template, txs) = declarable_template().await;

    let mut jdc = JdTestClient::connect(stack.pool().jds_addr().unwrap()).await;
    let (token, pool_script) = jdc.allocate().await;
    let mut theirs = pool_output(&template, &pool_script);
    theirs.script_pubkey = stratum_core::bitcoin::ScriptBuf::from_bytes(vec![0x52]);
    let refused = jdc
        .declare(declaration(1, token, &template, vec![theirs], &txs), &txs)
        .await;
    assert_eq!(refused, Err("invalid-coinbase-tx".to_string()));
    // An unknown token, and a transaction that is not the one declared.
    let unknown = stratum_core::binary_sv2::B0255Owned::new(vec![7; 8]).unwrap();
    let to_pool = pool_output(&template, &pool_script);
    let refused = jdc
        .declare(
            declaration(3, unknown, &template, vec![to_pool.clone()], &txs),
            &txs,
        )
        .await;
    assert_eq!(refused, Err("invalid-mining-job-token".to_string()));
    let (token, _) = jdc.allocate().await;
    let mut forged = declaration(4, token, &template, vec![to_pool.clone()], &txs);
    let mut wtxids = forged.wtxid_list.clone().into_inner();
    wtxids[0] = stratum_core::binary_sv2::U256Owned::from([9u8; 32]);
    forged.wtxid_list = stratum_core::binary_sv2::Seq064KOwned::new(wtxids).unwrap();
    assert_eq!(
        jdc.declare(forged, &txs).await,
        Err("invalid-job".to_string())
    );
    let (token, _) = jdc.allocate().await;
    let declared = jdc
        .declare(
            declaration(2, token, &template, vec![to_pool.clone()], &txs),
            &txs,
        )
        .await
        .expect("declared");

    let (secret, key) = miner_key();
    let (mut client, channel) = work_selecting_channel(&stack, &key).await;
    let keyless = custom_job(
        channel,
        declared.clone(),
        &template,
        &prev,
        vec![to_pool.clone()],
    );
    assert_eq!(
        client.set_custom_job(&keyless).await,
        Err("invalid-coinbase-tx-outputs".to_string())
    );
    let outputs = vec![to_pool, ehash::coinbase::key_commitment_output(&key)];
    let job = custom_job(channel, declared, &template, &prev, outputs);
    let job_id = client.set_custom_job(&job).await.expect("custom job set");
    client.mine_custom_job(&job, job_id);
    let shares = mine(&mut client, channel, 5).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// A coinbase-only client declares nothing: it sets its allocated token on
/// its channel with its own template, and its shares are minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coinbase_only_client_sets_its_token_directly_and_is_paid() {
    let (stack, _chain, prev, template, _) = declarable_template().await;
    let mut jdc = JdTestClient::connect_coinbase_only(stack.pool().jds_addr().unwrap()).await;
    let (token, pool_script) = jdc.allocate().await;

    let (secret, key) = miner_key();
    let (mut client, channel) = work_selecting_channel(&stack, &key).await;
    let outputs = vec![
        pool_output(&template, &pool_script),
        ehash::coinbase::key_commitment_output(&key),
    ];
    let job = custom_job(channel, token, &template, &prev, outputs);
    let job_id = client.set_custom_job(&job).await.expect("custom job set");
    client.mine_custom_job(&job, job_id);
    let shares = mine(&mut client, channel, 3).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_only_its_own_notifications_and_one_without_the_extension_none() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let (_, key_a) = miner_key();
    let (_, key_b) = miner_key();
    let (_, key_c) = miner_key();
    let mut a = stack.client(true).await;
    let mut b = stack.client(true).await;
    let mut c = stack.client(false).await;
    let ch_a = open_channel(&mut a, &key_a).await;
    let ch_b = open_channel(&mut b, &key_b).await;
    let ch_c = open_channel(&mut c, &key_c).await;

    let shares_a = mine(&mut a, ch_a, 2).await;
    let shares_b = mine(&mut b, ch_b, 2).await;
    let shares_c = mine(&mut c, ch_c, 3).await;
    assert_one_notification_per_share(&shares_a, &a.notifications(2).await);
    assert_one_notification_per_share(&shares_b, &b.notifications(2).await);

    // C mined normally and never saw an ehash frame; its quotes exist (locked to C).
    assert_eq!(shares_c.len(), 3);
    let more = mine(&mut c, ch_c, 1).await;
    assert_eq!(more.len(), 1);
    assert!(!c.saw_ehash());
    let mint = &stack.mint.as_ref().unwrap().0.mint;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mint.mint_quotes().await.unwrap().len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "C's quotes were never created"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more arrived for A or B.
    assert!(a.seen.iter().all(|m| !matches!(m, Incoming::Ehash(_))));
    assert!(b.seen.iter().all(|m| !matches!(m, Incoming::Ehash(_))));
    stack.stop().await;
}

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
    let (found, resume) = wallet
        .record_from_mint(&store, None, young_from)
        .await
        .unwrap();
    assert_eq!((found, resume), (3, None));
    // Then the younger ones; the next look-up starts at the last page.
    let (found, resume) = wallet
        .record_from_mint(&store, resume, u64::MAX)
        .await
        .unwrap();
    assert_eq!(found, young);
    assert_eq!(store.all().unwrap().len(), 3 + young);
    // The last page holds what the first page of 100 left: a store that
    // knows nothing finds those 4 from there.
    let last_page = resume.expect("a cursor past the first page");
    assert_eq!(last_page.key_index, 0);
    let other_dir = tempfile::tempdir().unwrap();
    let empty = translator::quotes::QuoteStore::open(&other_dir.path().join("q.sqlite")).unwrap();
    let from_last_page = wallet.record_from_mint(&empty, resume, u64::MAX).await;
    assert_eq!(
        from_last_page.unwrap(),
        (3 + young - MAX_LIMIT as usize, resume)
    );
    // Nothing new: nothing found, and the look-up stays where it was.
    let again = wallet.record_from_mint(&store, resume, u64::MAX).await;
    assert_eq!(again.unwrap(), (0, Some(last_page)));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_restart_mid_run_loses_no_share() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;

    let mut shares = mine(&mut client, channel, 2).await;
    let mut notifications = client.notifications(2).await;
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
    stack.stop().await;
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

role_child_entry!();

/// Stops the pool in this process and starts it again as a child process
/// (from its config written as TOML), on a fresh port and the same state.
async fn connect_when_up(stack: &EhashStack) -> MiningClient {
    until_listening(stack.pool_addr(), "the pool child").await;
    stack.client(true).await
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

/// The stack's pool config as a TOML file (the child loads it like `pool --config`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ehash_extension_is_granted_alone_or_among_unknown_ones() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let mut client = stack.client(false).await;
    let answer = client
        .request_extensions(vec![0x0002, EHASH_EXTENSION_TYPE])
        .await;
    assert!(
        matches!(&answer, stratum_core::parsers_sv2::ExtensionsNegotiationOwned::RequestExtensionsSuccess(s)
            if s.supported_extensions.clone().into_inner() == vec![EHASH_EXTENSION_TYPE]),
        "{answer:?}"
    );
    stack.stop().await;
}

#[test]
fn the_shipped_pool_and_mint_configs_agree() {
    let pool: pool::PoolConfig = load_shipped("pool.toml");
    let mint: mint::MintConfig = load_shipped("mint.toml");
    assert_eq!(
        pool.stats
            .as_ref()
            .expect("the shipped pool publishes stats")
            .address,
        "127.0.0.1:4000"
    );
    let link = pool.mint.as_ref().expect("the shipped pool pays ehash");
    assert_eq!(
        pool.unit_bits, mint.unit_bits,
        "the mint refuses a pool with other unit_bits"
    );
    assert_eq!(link.address, mint.link_listen.to_string());
    assert_eq!(
        link.authority_public_key.into_bytes(),
        mint.authority_public_key.into_bytes()
    );
    let identity: stratum_apps::key_utils::Secp256k1PublicKey = link.identity_secret_key.into();
    let allowed = mint
        .pools
        .iter()
        .find(|p| p.key.into_bytes() == identity.into_bytes())
        .expect("the mint allows the shipped pool");
    assert_eq!(
        allowed.reward_script, pool.coinbase_reward_script,
        "the mint refuses shares whose coinbase pays another script"
    );
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

fn count(received: &[StatsMessage], pred: impl Fn(&StatsMessage) -> bool) -> usize {
    received.iter().filter(|m| pred(m)).count()
}

fn link_up(received: &[StatsMessage], which: u8) -> bool {
    received
        .iter()
        .any(|m| matches!(m, StatsMessage::LinkStatus(l) if l.link == which && l.up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_publishes_every_share_quote_channel_link_and_the_mint_stats() {
    let sink = StatsSink::start().await;
    let stack = EhashStack::start("annotate", |c| c.stats = Some(sink.settings())).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let shares = mine(&mut client, channel, 3).await;
    // The same share again is refused (duplicate).
    let again = client.valid_share(channel, false);
    client.submit_and_wait(channel, &again).await.unwrap();
    assert!(client.submit_and_wait(channel, &again).await.is_err());
    client.notifications(4).await;
    let pool_stats = stack.pool().stats();
    assert_eq!(
        (pool_stats.shares_accepted, pool_stats.shares_rejected),
        (4, 1)
    );
    let mint = &stack.mint.as_ref().unwrap().0.mint;
    let quotes = mint.mint_quotes().await.unwrap().len();
    assert_eq!(quotes, 4);

    let quoted = total(&shares) + ehash::work_hashes(client.channels[&channel].target());
    let received = sink
        .wait_until("every share, quote and the mint's totals", |r| {
            count(r, |m| matches!(m, StatsMessage::ShareSubmitted(_))) == 5
                && count(r, |m| matches!(m, StatsMessage::QuoteCreated(_))) == quotes
                && r.iter()
                    .any(|m| matches!(m, StatsMessage::MintStats(s) if s.ehash_quoted == quoted))
        })
        .await;
    match &received[0] {
        StatsMessage::PublisherHello(h) => assert_eq!(h.role, stats_sv2::role::POOL),
        other => panic!("expected the hello first, got {other:?}"),
    }
    let accepted: Vec<u64> = received
        .iter()
        .filter_map(|m| match m {
            StatsMessage::ShareSubmitted(s) if s.accepted => Some(s.work),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len() as u64, pool_stats.shares_accepted);
    assert_eq!(accepted.iter().sum::<u64>(), quoted, "work of each target");
    assert_eq!(
        count(
            &received,
            |m| matches!(m, StatsMessage::ShareSubmitted(s) if !s.accepted && s.work == 0)
        ),
        1
    );
    let quote_amounts: u64 = received
        .iter()
        .filter_map(|m| match m {
            StatsMessage::QuoteCreated(q) => {
                assert_eq!(q.channel_id, channel);
                Some(q.amount)
            }
            _ => None,
        })
        .sum();
    assert_eq!(quote_amounts, quoted);
    assert!(link_up(&received, stats_sv2::link::TEMPLATE_PROVIDER));
    assert!(link_up(&received, stats_sv2::link::MINT));
    assert!(received
        .iter()
        .any(|m| matches!(m, StatsMessage::ChannelOpened(c) if c.channel_id == channel)));
    let downstream = received
        .iter()
        .find_map(|m| match m {
            StatsMessage::DownstreamConnected(d) => Some(d.downstream_id),
            _ => None,
        })
        .expect("the downstream was announced");

    // The downstream leaves: its channel closes with it.
    drop(client);
    sink.wait_until("the downstream leaving", |r| {
        r.iter().any(|m| matches!(m, StatsMessage::ChannelClosed(c) if c.channel_id == channel && c.downstream_id == downstream))
            && r.iter().any(|m| matches!(m, StatsMessage::DownstreamDisconnected(d) if d.downstream_id == downstream))
    })
    .await;
    assert_eq!(stack.pool().stats_publisher().dropped(), 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mining_goes_on_while_the_stats_service_is_away_and_the_overflow_is_counted() {
    let settings = dead_stats_settings(2).await;
    let stack = EhashStack::start("annotate", |c| c.stats = Some(settings)).await;
    let (_, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    // Link up, downstream, channel: the tiny queue is full already.
    let publisher = stack.pool().stats_publisher();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.dropped() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = publisher.dropped();
    let shares = mine(&mut client, channel, 3).await;
    assert_eq!(shares.len(), 3);
    assert_eq!(stack.pool().stats().shares_accepted, 3);
    assert!(
        publisher.dropped() >= before + 3,
        "each share's event pushes an older one out: {before} -> {}",
        publisher.dropped()
    );
    assert!(!publisher.is_connected());
    stack.stop().await;
}

#[test]
fn the_shipped_devnet_keys_are_refused_on_any_other_network() {
    fn refused<C: serde::de::DeserializeOwned + roles_common::Validate + std::fmt::Debug>(
        file: &str,
    ) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut config = shipped_config(file);
        let devnet = write_config(dir.path(), file, &config);
        load_config::<C>(&devnet); // loads as shipped
        set_config(&mut config, "network", "signet");
        let path = write_config(dir.path(), file, &config);
        roles_common::load_config::<C>(&path, "HASHPOOL_TEST_NETWORK").unwrap_err()
    }
    for (file, error) in [
        ("pool.toml", refused::<pool::PoolConfig>("pool.toml")),
        ("mint.toml", refused::<mint::MintConfig>("mint.toml")),
        (
            "translator.toml",
            refused::<translator::TranslatorConfig>("translator.toml"),
        ),
        (
            "jd-client.toml",
            refused::<jd_client::JdClientConfig>("jd-client.toml"),
        ),
    ] {
        assert!(error.contains("published devnet"), "{file}: {error}");
        assert!(error.contains("signet"), "{file}: {error}");
        assert!(!error.contains('\n'), "{file}: {error}");
    }
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
    let claimed = run(WalletCommand::Claim).await.unwrap();
    assert!(
        claimed.contains(&format!("minted now: {accepted} quotes, {sum} hash")),
        "{claimed}"
    );
    assert_eq!(own.wallet.balance().await.unwrap(), sum);
    let again = run(WalletCommand::Claim).await.unwrap();
    assert!(again.contains("minted now: 0 quotes, 0 hash"), "{again}");

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

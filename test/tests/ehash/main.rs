//! The ehash flow with the real roles on 127.0.0.1: devnet-tp, the mint, the
//! pool (annotate and defer modes), SV2 test clients and cdk wallets.

use std::time::Duration;

use ehash::LockingKey;
use ehash_ext_sv2::{MintQuoteNotificationOwned, EHASH_EXTENSION_TYPE};
use hashpool_tests::*;
use roles_common::testing::load_shipped;
use stats_sv2::StatsMessage;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

mod restarts;
mod stats;
mod wallet;

// Roles started as child processes of this binary run here (by its name).
role_child_entry!();

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

/// A share is paid its work rounded down to whole ehash, so its channel's
/// target is worth a whole amount: with one ehash worth 16 hashes, a hash
/// rate making 1.6 ehash a share gets a target worth 2, and each share
/// mints 2 (at 1.6's target it would be paid 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_target_is_worth_a_whole_amount_and_its_shares_mint_it() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let bits = ehash::UnitBits::new(4).unwrap();
    stack.stop_pool().await;
    stack.stop_mint().await;
    stack.mint_config.unit_bits = 4;
    stack.pool_config.unit_bits = 4;
    stack.start_mint().await;
    stack.start_pool().await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    // 2.56 H/s at 6 shares a minute: 25.6 hashes a share, 1.6 ehash.
    let channel = client
        .open_extended(&format!("{key}.rig"), 2.56, 4)
        .await
        .expect("channel opens");
    client.wait_for_work(channel).await;
    assert_eq!(
        client.channels[&channel].target(),
        ehash::target_worth(2, bits)
    );
    let mut shares = vec![];
    for _ in 0..3 {
        let share = client.mine_one(channel).await.expect("share accepted");
        shares.push((share.hash, 2));
    }
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// A channel whose duplicate detection nearly fills on one tip is renewed
/// on a new extranonce prefix; a share of a job sent before the renewal,
/// mined on the old prefix, is still quoted and mints its amount, like
/// every share before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_of_a_job_sent_before_a_renewal_is_quoted_and_minted() {
    // One share a minute: channels_sv2's smallest budget, renewed at 3,072.
    let stack = EhashStack::start("annotate", |pool| {
        pool.shares_per_minute = 1.0;
        pool.vardiff_interval_secs = 0;
    })
    .await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = open_channel(&mut client, &key).await;
    let first_prefix = client.channels[&channel].extranonce_prefix.clone();
    let mut before_renewal = client.channels[&channel].clone();
    let mut shares = 0;
    while client.channels[&channel].extranonce_prefix == first_prefix {
        assert!(shares < 5_000, "never renewed");
        before_renewal = client.channels[&channel].clone();
        mine(&mut client, channel, 1).await;
        shares += 1;
    }
    // Mined as the miner had it: the last job sent before the renewal, on
    // the prefix it was sent with.
    let renewed = std::mem::replace(client.channels.get_mut(&channel).unwrap(), before_renewal);
    let old = mine(&mut client, channel, 1).await;
    *client.channels.get_mut(&channel).unwrap() = renewed;
    let notifications = client.notifications(shares + 1).await;
    let notified: Vec<_> = notifications
        .iter()
        .filter(|n| n.share_hash.to_array() == old[0].0)
        .collect();
    assert_eq!(
        notified.len(),
        1,
        "one notification for the old prefix's share"
    );
    assert_eq!(notified[0].amount, old[0].1);
    let ids = quote_ids(&[notified[0].clone()]);
    let wallet = wallet(&stack.mint_url());
    assert_eq!(mint_quotes(&wallet, &ids, &secret).await, Ok(old[0].1));
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
            ..Default::default()
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
    work_selecting_channel_from(stack, key, [127, 0, 0, 1].into()).await
}

/// [`work_selecting_channel`] on a connection from local address `from`.
async fn work_selecting_channel_from(
    stack: &EhashStack,
    key: &LockingKey,
    from: std::net::IpAddr,
) -> (MiningClient, u32) {
    let conn = Sv2Conn::connect_from(from, stack.pool_addr(), POOL_PUBLIC_KEY)
        .await
        .unwrap();
    let mut client = MiningClient::over(conn);
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
    // An unknown token, and a transaction list the coinbase's witness
    // commitment is not for.
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
        Err("invalid-coinbase-tx".to_string())
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
    let outputs = vec![
        to_pool.clone(),
        ehash::coinbase::key_commitment_output(&key),
    ];
    let job = custom_job(channel, declared, &template, &prev, outputs);
    let job_id = client.set_custom_job(&job).await.expect("custom job set");
    client.mine_custom_job(&job, job_id);
    let shares = mine(&mut client, channel, 5).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;

    // Declared again for a new target, as jd-client does, numbered in an
    // output of its own: declared, set, minted.
    let retarget = ehash::coinbase::job_number_output(1);
    let (token, _) = jdc.allocate().await;
    let outputs = vec![to_pool.clone(), retarget.clone()];
    let declared = jdc
        .declare(declaration(5, token, &template, outputs, &txs), &txs)
        .await
        .expect("declared again");
    let outputs = vec![
        to_pool.clone(),
        ehash::coinbase::key_commitment_output(&key),
        retarget,
    ];
    let again = custom_job(channel, declared, &template, &prev, outputs);
    let job_id = client.set_custom_job(&again).await.expect("set again");
    client.mine_custom_job(&again, job_id);
    let shares = mine(&mut client, channel, 3).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;

    // At a new target, the first job's coinbase again, unnumbered: its
    // headers are the first job's, so the pool refuses it.
    client.update_channel(channel, 1000.0).await;
    client
        .wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SetTarget(t)))
                if t.channel_id == channel =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let (token, _) = jdc.allocate().await;
    let declared = jdc
        .declare(
            declaration(6, token, &template, vec![to_pool.clone()], &txs),
            &txs,
        )
        .await
        .expect("declared");
    let outputs = vec![
        to_pool.clone(),
        ehash::coinbase::key_commitment_output(&key),
    ];
    let unnumbered = custom_job(channel, declared, &template, &prev, outputs);
    assert_eq!(
        client.set_custom_job(&unnumbered).await,
        Err("job-headers-at-another-target".to_string())
    );

    // A client that numbers nothing itself but puts the token's outputs in
    // its coinbase, as the protocol asks (SRI's JDC does, a token a
    // template), declares headers of their own: taken at the new target.
    let (token, mut asked) = jdc.allocate_with_outputs().await;
    asked[0].value = to_pool.value;
    let declared = jdc
        .declare(declaration(7, token, &template, asked.clone(), &txs), &txs)
        .await
        .expect("declared");
    asked.insert(1, ehash::coinbase::key_commitment_output(&key));
    let job = custom_job(channel, declared, &template, &prev, asked);
    let job_id = client.set_custom_job(&job).await.expect("taken");
    client.mine_custom_job(&job, job_id);
    let shares = mine(&mut client, channel, 2).await;
    notified_and_minted(&stack, &mut client, channel, &shares, &secret).await;
    stack.stop().await;
}

/// A coinbase-only client declares nothing: it sets its allocated token on
/// its channel with its own template, and its shares are minted.
/// `template` as the block after it (what a client whose template
/// provider saw a block before the pool did declares): its coinbase's
/// height one more.
fn the_block_after(
    template: &stratum_core::template_distribution_sv2::NewTemplateOwned,
) -> stratum_core::template_distribution_sv2::NewTemplateOwned {
    use stratum_core::bitcoin::ScriptBuf;
    let prefix = template.coinbase_prefix.as_bytes();
    let height = ehash::coinbase::bip34_height(prefix).expect("a BIP34 height");
    let push = |height: u32| ScriptBuf::builder().push_int(height.into()).into_bytes();
    let old = push(height);
    assert!(
        prefix.starts_with(&old),
        "the prefix starts with its height"
    );
    let mut next = push(height + 1);
    next.extend_from_slice(&prefix[old.len()..]);
    stratum_core::template_distribution_sv2::NewTemplateOwned {
        coinbase_prefix: next.try_into().unwrap(),
        ..template.clone()
    }
}

/// A declaration for the block after the pool's next waits for the pool's
/// tip; when its time is up the client hears it refused as stale, though
/// it said nothing more meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_clients_declaration_that_waits_too_long_is_refused_as_stale() {
    let (stack, _chain, _, template, txs) = declarable_template().await;
    let mut jdc = JdTestClient::connect(stack.pool().jds_addr().unwrap()).await;
    let (token, pool_script) = jdc.allocate().await;
    let ahead = the_block_after(&template);
    let m = declaration(
        1,
        token,
        &ahead,
        vec![pool_output(&ahead, &pool_script)],
        &txs,
    );
    let answer = tokio::time::timeout(Duration::from_secs(30), jdc.declare(m, &txs))
        .await
        .expect("answered, the client quiet");
    assert_eq!(answer, Err("stale-chain-tip".to_string()));
    stack.stop().await;
}

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

/// A coinbase-only client's custom job on `channel` for `template`, its
/// coinbase numbered `number` (headers of its own).
async fn numbered_custom_job(
    jdc: &mut JdTestClient,
    channel: u32,
    key: &LockingKey,
    (template, prev): &(
        stratum_core::template_distribution_sv2::NewTemplateOwned,
        stratum_core::template_distribution_sv2::SetNewPrevHashOwned,
    ),
    number: u64,
) -> stratum_core::mining_sv2::SetCustomMiningJobOwned {
    let (token, pool_script) = jdc.allocate().await;
    let outputs = vec![
        pool_output(template, &pool_script),
        ehash::coinbase::key_commitment_output(key),
        ehash::coinbase::job_number_output(number),
    ];
    custom_job(channel, token, template, prev, outputs)
}

/// The custom jobs the pool keeps are bounded per peer address (`[jds]
/// max_custom_jobs_per_address`, over its connections and channels, closed
/// ones too) and over every channel (`max_custom_jobs`): past either, a
/// job with headers of its own is refused `too-many-jobs-on-this-tip` and
/// the channel mines the job it has. An address at its bound takes no room
/// from another. Every share is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_jobs_kept_are_bounded_per_address_and_over_every_channel() {
    let stack = EhashStack::start("annotate", |pool| {
        pool.jds = Some(pool::config::JdsSettings {
            listen_address: "127.0.0.1:0".into(),
            max_custom_jobs: 5,
            max_custom_jobs_per_address: 2,
            ..Default::default()
        })
    })
    .await;
    let tip = TdpClient::connect(stack.tp().local_addr())
        .await
        .template()
        .await;
    let mut jdc = JdTestClient::connect_coinbase_only(stack.pool().jds_addr().unwrap()).await;
    let refused = Err("too-many-jobs-on-this-tip".to_string());
    let (secret, key) = miner_key();
    let (mut client, first) = work_selecting_channel(&stack, &key).await;
    let second = client
        .open_extended(&format!("{key}.rig2"), 1.0, 4)
        .await
        .expect("channel opens");

    let job = numbered_custom_job(&mut jdc, first, &key, &tip, 1).await;
    let job_id = client.set_custom_job(&job).await.expect("custom job set");
    client.mine_custom_job(&job, job_id);
    let mut shares = mine(&mut client, first, 2).await;
    let job = numbered_custom_job(&mut jdc, second, &key, &tip, 2).await;
    client.set_custom_job(&job).await.expect("custom job set");

    // The address's bound.
    let job = numbered_custom_job(&mut jdc, first, &key, &tip, 3).await;
    assert_eq!(client.set_custom_job(&job).await, refused);
    shares.extend(mine(&mut client, first, 2).await);
    client.close_channel(second).await;
    // Its closed channel's job still counted, and a new connection's.
    let job = numbered_custom_job(&mut jdc, first, &key, &tip, 3).await;
    assert_eq!(client.set_custom_job(&job).await, refused);
    let (mut again, channel) = work_selecting_channel(&stack, &key).await;
    let job = numbered_custom_job(&mut jdc, channel, &key, &tip, 4).await;
    again.set_custom_job(&job).await.expect("a first job set");
    let job = numbered_custom_job(&mut jdc, channel, &key, &tip, 5).await;
    assert_eq!(again.set_custom_job(&job).await, refused);
    shares.extend(mine(&mut client, first, 2).await);
    notified_and_minted(&stack, &mut client, first, &shares, &secret).await;

    // Another address has room of its own.
    let (other_secret, other_key) = miner_key();
    let (mut other, channel) =
        work_selecting_channel_from(&stack, &other_key, [127, 0, 0, 2].into()).await;
    let job = numbered_custom_job(&mut jdc, channel, &other_key, &tip, 6).await;
    other.set_custom_job(&job).await.expect("custom job set");
    let job = numbered_custom_job(&mut jdc, channel, &other_key, &tip, 7).await;
    let job_id = other.set_custom_job(&job).await.expect("custom job set");
    other.mine_custom_job(&job, job_id);
    let other_shares = mine(&mut other, channel, 2).await;

    // The pool holds its bound: a third address has a first job only.
    let (_, third_key) = miner_key();
    let (mut third, channel_3) =
        work_selecting_channel_from(&stack, &third_key, [127, 0, 0, 3].into()).await;
    let job = numbered_custom_job(&mut jdc, channel_3, &third_key, &tip, 8).await;
    third.set_custom_job(&job).await.expect("a first job set");
    let job = numbered_custom_job(&mut jdc, channel_3, &third_key, &tip, 9).await;
    assert_eq!(third.set_custom_job(&job).await, refused);
    notified_and_minted(&stack, &mut other, channel, &other_shares, &other_secret).await;
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

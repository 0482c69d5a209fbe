//! The mint trusts work, not the pool, with the real roles on 127.0.0.1:
//! it follows devnet-tp's chain and quotes only shares on its fresh tips,
//! and it publishes an issuance audit that `hashpool audit` verifies.

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ehash::audit::{AuditPage, AuditSummary};
use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;
use hashpool::audit::{audit, AuditSource, MintAudit};
use hashpool_tests::*;
use mint_quote_sv2::{MintQuoteMessage, MintQuoteRequestOwned};
use mint_support::{share_on, PoolClient, TestMint};
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

/// A mint with its database in `dir` following the devnet-tp at `tp`:
/// shares up to 2 blocks back are quoted, an unseen tip is awaited 3 s.
fn following(tp: SocketAddr, dir: &Path) -> mint::MintConfig {
    let database = dir.join("mint.sqlite");
    mint::MintConfig {
        chain: Some(mint::ChainSettings {
            tp_address: tp.to_string(),
            tp_authority_public_key: public_key(TP_PUBLIC_KEY),
            max_tip_age: 2,
            unseen_tip_wait_secs: 3,
        }),
        ..mint_support::config(database.to_str().unwrap())
    }
}

async fn mint_following(tp: SocketAddr, dir: &Path) -> TestMint {
    TestMint::start(following(tp, dir)).await
}

/// A share on the tip `prev` announces, for a block at `height`, worth
/// 2^8 ehash.
fn on_tip(prev: &SetNewPrevHashOwned, height: u32, key: LockingKey) -> MintQuoteRequestOwned {
    share_on(
        prev.prev_hash.to_array(),
        prev.n_bits,
        prev.header_timestamp,
        height,
        8,
        key,
    )
}

/// The height of blocks on `template` (its coinbase prefix, BIP 34).
fn height_of(template: &NewTemplateOwned) -> u32 {
    ehash::coinbase::bip34_height(template.coinbase_prefix.as_bytes()).expect("a BIP 34 height")
}

/// `prev` with another prev hash.
fn made_up(prev: &SetNewPrevHashOwned, byte: u8) -> SetNewPrevHashOwned {
    SetNewPrevHashOwned {
        prev_hash: [byte; 32].into(),
        ..prev.clone()
    }
}

/// The mint's answer: Ok(quote id) or Err(error code).
async fn ask(link: &mut PoolClient, request: MintQuoteRequestOwned) -> Result<String, String> {
    answer(link.quote(request).await)
}

fn answer(message: MintQuoteMessage) -> Result<String, String> {
    match message {
        MintQuoteMessage::MintQuoteResponse(r) => Ok(r.quote_id.as_utf8_or_hex()),
        MintQuoteMessage::MintQuoteError(e) => Err(e.error_code.as_utf8_or_hex()),
        other => panic!("expected a quote answer, got {other:?}"),
    }
}

/// devnet-tp (every share a block) and a mint following it, with the
/// pool's link to the mint and a template-distribution client to make
/// blocks with.
struct Scene {
    dir: tempfile::TempDir,
    tp: devnet_tp::TpHandle,
    tp_stop: roles_common::CancellationToken,
    mint: TestMint,
    link: PoolClient,
    tdp: TdpClient,
}

impl Scene {
    async fn start() -> Scene {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let (tp, tp_stop) = start_tp(&dir.path().join("tp"), NBITS_EASY).await;
        let mint = mint_following(tp.local_addr(), dir.path()).await;
        let link = mint.pool().await;
        let tdp = TdpClient::connect(tp.local_addr()).await;
        Scene {
            dir,
            tp,
            tp_stop,
            mint,
            link,
            tdp,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_quotes_only_work_on_the_fresh_tips_of_its_own_chain_view_or_their_rivals() {
    let Scene {
        dir,
        tp,
        tp_stop,
        mint,
        mut link,
        mut tdp,
    } = Scene::start().await;
    let tp_addr = tp.local_addr();
    let (_, key) = miner_key();

    let (template_a, a) = tdp.template().await;
    let h = height_of(&template_a);
    let first = on_tip(&a, h, key);
    let first_id = ask(&mut link, first.clone())
        .await
        .expect("quoted on tip A");

    // A share on block B reaches the mint before devnet-tp announces B.
    let (solution, b_hash) = solve(&template_a, &a);
    let b = SetNewPrevHashOwned {
        prev_hash: b_hash.to_byte_array().into(),
        ..a.clone()
    };
    link.send(MintQuoteMessage::MintQuoteRequest(on_tip(&b, h + 1, key)))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tdp.submit(solution).await;
    let raced = answer(link.recv().await.expect("an answer"));
    assert!(raced.is_ok(), "a share on a tip announced late: {raced:?}");

    // Tip C: now A is two tips back.
    let (template_b, announced_b) = tdp.template().await;
    assert_eq!(announced_b.prev_hash.to_array(), b_hash.to_byte_array());
    tdp.solve_and_submit(&template_b, &announced_b).await;
    let (_, c) = tdp.template().await;
    assert!(ask(&mut link, on_tip(&c, h + 2, key)).await.is_ok());
    assert!(ask(&mut link, on_tip(&announced_b, h + 1, key))
        .await
        .is_ok());
    assert_eq!(
        ask(&mut link, on_tip(&a, h, key)).await,
        Err("stale-prev-hash".into())
    );
    // Quoted before it went stale: a replay still gets its quote.
    assert_eq!(ask(&mut link, first).await, Ok(first_id));

    // A block race (the pool's node took another block than the mint's):
    // a tip it did not see, at the height of one it did, is as fresh as
    // that one; for that height only, and two such tips at a height at most.
    for (byte, height) in [(7, h + 1), (8, h + 2)] {
        assert!(ask(&mut link, on_tip(&made_up(&c, byte), height, key))
            .await
            .is_ok());
    }
    assert_eq!(
        ask(&mut link, on_tip(&made_up(&c, 7), h + 2, key)).await,
        Err("unknown-prev-hash".into()),
        "taken for another height"
    );
    assert!(ask(&mut link, on_tip(&made_up(&c, 5), h + 2, key))
        .await
        .is_ok());
    assert_eq!(
        ask(&mut link, on_tip(&made_up(&c, 6), h + 2, key)).await,
        Err("unknown-prev-hash".into()),
        "a third at one height"
    );
    // As stale as A at A's height; below the first tip it saw, unknown.
    assert_eq!(
        ask(&mut link, on_tip(&made_up(&c, 3), h, key)).await,
        Err("stale-prev-hash".into())
    );
    assert_eq!(
        ask(&mut link, on_tip(&made_up(&c, 4), h - 1, key)).await,
        Err("unknown-prev-hash".into())
    );
    let other_bits = SetNewPrevHashOwned {
        n_bits: c.n_bits - 1,
        ..c.clone()
    };
    assert_eq!(
        ask(&mut link, on_tip(&other_bits, h + 2, key)).await,
        Err("nbits-mismatch".into())
    );
    let tomorrow = SetNewPrevHashOwned {
        header_timestamp: c.header_timestamp + 24 * 3600,
        ..c.clone()
    };
    assert_eq!(
        ask(&mut link, on_tip(&tomorrow, h + 2, key)).await,
        Err("chain-unavailable".into()),
        "dated after the mint's clock allows: asked again later"
    );

    // Without its template provider, a restarted mint still knows its
    // tips, and asks for patience on tips it has not seen.
    drop(tdp);
    tp_stop.cancel();
    tp.wait().await;
    mint.stop().await;
    let mint = mint_following(tp_addr, dir.path()).await;
    let mut link = mint.pool().await;
    assert!(ask(&mut link, on_tip(&c, h + 2, key)).await.is_ok());
    assert!(ask(&mut link, on_tip(&made_up(&c, 9), h + 2, key))
        .await
        .is_ok());
    assert_eq!(
        ask(&mut link, on_tip(&made_up(&c, 9), h + 3, key)).await,
        Err("chain-unavailable".into())
    );
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mint_quotes_shares_on_blocks_that_came_and_went_while_it_was_down() {
    let mut scene = Scene::start().await;
    let (_, key) = miner_key();
    let tdp = &mut scene.tdp;
    let (template_a, a) = tdp.template().await;
    let h = height_of(&template_a);
    assert!(ask(&mut scene.link, on_tip(&a, h, key)).await.is_ok());

    // Blocks on A, B and C while the mint is down: it never sees B and C,
    // on which a pool kept accepting shares.
    scene.mint.stop().await;
    tdp.solve_and_submit(&template_a, &a).await;
    let (template_b, b) = tdp.template().await;
    tdp.solve_and_submit(&template_b, &b).await;
    let (template_c, c) = tdp.template().await;
    tdp.solve_and_submit(&template_c, &c).await;
    let (template_d, d) = tdp.template().await;
    assert_eq!(height_of(&template_c), h + 2);

    // Back, it learns D from devnet-tp. The blocks that came while it
    // quoted nothing age no share: those on A, B and C, which the pool
    // could not deliver, are all quoted, though A is three blocks back.
    let mint = mint_following(scene.tp.local_addr(), scene.dir.path()).await;
    let mut link = mint.pool().await;
    let on_c = on_tip(&c, h + 2, key);
    let quote = ask(&mut link, on_c.clone())
        .await
        .expect("a share on a tip the mint missed is quoted");
    assert_eq!(ask(&mut link, on_c).await, Ok(quote), "and only once");
    assert!(ask(&mut link, on_tip(&d, h + 3, key)).await.is_ok());
    for (tip, height) in [(&b, h + 1), (&a, h)] {
        assert!(
            ask(&mut link, on_tip(tip, height, key)).await.is_ok(),
            "a share on the tip at {height}, delivered once the mint is back"
        );
    }
    // The mint cannot tell C from another block at that height: there it
    // takes the pool's word.
    assert!(ask(&mut link, on_tip(&made_up(&c, 7), h + 2, key))
        .await
        .is_ok());

    // Quoting goes on: blocks E and F, each after a quote, age the rest.
    tdp.solve_and_submit(&template_d, &d).await;
    let (template_e, e) = tdp.template().await;
    // Answered once the mint saw E: the quote comes after E.
    assert!(ask(&mut link, on_tip(&e, h + 4, key)).await.is_ok());
    tdp.solve_and_submit(&template_e, &e).await;
    let (template_f, f) = tdp.template().await;
    assert!(ask(&mut link, on_tip(&f, h + 5, key)).await.is_ok());
    for (tip, height) in [(&a, h), (&b, h + 1), (&c, h + 2), (&d, h + 3)] {
        assert_eq!(
            ask(&mut link, on_tip(tip, height, key)).await,
            Err("stale-prev-hash".into()),
            "two aging tips back at most: the tip at {height}"
        );
    }
    assert!(ask(&mut link, on_tip(&e, h + 4, key)).await.is_ok());

    // Refused shares show no delivery: block H, after only refusals,
    // makes nothing older. (A refused share on a tip the mint has not seen
    // yet is answered once it has.)
    let refused_on = |tip: &SetNewPrevHashOwned, height| {
        let other_bits = SetNewPrevHashOwned {
            n_bits: tip.n_bits - 1,
            ..tip.clone()
        };
        on_tip(&other_bits, height, key)
    };
    tdp.solve_and_submit(&template_f, &f).await;
    let (template_g, g) = tdp.template().await;
    let refusal = ask(&mut link, refused_on(&g, h + 6)).await;
    assert_eq!(refusal, Err("nbits-mismatch".into()));
    tdp.solve_and_submit(&template_g, &g).await;
    let (_, blocks_h) = tdp.template().await;
    let refusal = ask(&mut link, refused_on(&blocks_h, h + 7)).await;
    assert_eq!(refusal, Err("nbits-mismatch".into()));
    assert!(
        ask(&mut link, on_tip(&f, h + 5, key)).await.is_ok(),
        "one block back (G) for this pool, not two"
    );
    mint.stop().await;
    scene.tp_stop.cancel();
    scene.tp.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_cut_off_while_another_pools_shares_are_quoted_keeps_its_shares_fresh() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (tp, tp_stop) = start_tp(&dir.path().join("tp"), NBITS_EASY).await;
    // A second pool, paid to the same script as the first.
    let mut config = following(tp.local_addr(), dir.path());
    config.pools.push(mint::AllowedPool {
        key: secret_key(mint_support::STRANGER_SECRET).into(),
        reward_script: hex::encode(mint_support::pool_script().as_bytes()),
    });
    let mint = TestMint::start(config).await;
    let mut first = mint.pool().await;
    let mut second = mint.pool_as(mint_support::STRANGER_SECRET).await;
    let mut tdp = TdpClient::connect(tp.local_addr()).await;
    let (_, key) = miner_key();

    let (mut template, mut tip) = tdp.template().await;
    let h = height_of(&template);
    let a = tip.clone();
    assert!(ask(&mut first, on_tip(&a, h, key)).await.is_ok());
    assert!(ask(&mut second, on_tip(&a, h, key)).await.is_ok());
    // The second pool is cut off with a share on A it accepted; three
    // blocks come while the first pool's shares go on being quoted.
    let held = on_tip(&a, h, key);
    for height in h + 1..=h + 3 {
        tdp.solve_and_submit(&template, &tip).await;
        (template, tip) = tdp.template().await;
        assert!(ask(&mut first, on_tip(&tip, height, key)).await.is_ok());
    }
    assert_eq!(
        ask(&mut first, on_tip(&a, h, key)).await,
        Err("stale-prev-hash".into()),
        "three blocks back for the first pool"
    );
    assert!(
        ask(&mut second, held).await.is_ok(),
        "one block back for the second: the block after its last quote"
    );
    mint.stop().await;
    tp_stop.cancel();
    tp.wait().await;
}

/// Mines until `n` shares are accepted (a share on a job the template
/// provider's return retired may be refused); their hashes.
async fn mine_accepted(client: &mut MiningClient, channel: u32, n: usize) -> Vec<[u8; 32]> {
    let mut accepted = vec![];
    while accepted.len() < n {
        if let Ok(share) = client.mine_one(channel).await {
            accepted.push(share.hash);
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_provider_killed_and_restarted_under_load_loses_no_share() {
    let mut stack = EhashStack::start("annotate", |_| {}).await;
    let (secret, key) = miner_key();
    let mut client = stack.client(true).await;
    let channel = client
        .open_extended(&format!("{key}.rig"), 1.0, 4)
        .await
        .expect("channel opens");
    client.wait_for_work(channel).await;

    let mut shares = mine_accepted(&mut client, channel, 10).await;
    // Mining goes on while devnet-tp is down for 3 s and after it is back.
    let (_, during) = tokio::join!(
        stack.restart_tp_after(Duration::from_secs(3)),
        mine_accepted(&mut client, channel, 60)
    );
    shares.extend(during);
    shares.extend(mine_accepted(&mut client, channel, 10).await);

    let notifications = client.notifications(shares.len()).await;
    let mut notified: Vec<[u8; 32]> = notifications
        .iter()
        .map(|n| n.share_hash.to_array())
        .collect();
    notified.sort();
    let mut expected = shares.clone();
    expected.sort();
    assert_eq!(notified, expected, "one notification per accepted share");
    assert!(
        !client
            .seen
            .iter()
            .any(|m| matches!(m, Incoming::Ehash(EhashMessage::MintQuoteFailure(_)))),
        "no share was refused"
    );
    let ids: Vec<String> = notifications
        .iter()
        .map(|n| n.quote_id.as_utf8_or_hex())
        .collect();
    let amount: u64 = notifications.iter().map(|n| n.amount).sum();
    assert_eq!(
        mint_quotes(&wallet(&stack.mint_url()), &ids, &secret).await,
        Ok(amount)
    );
    stack.stop().await;
}

/// The first `n` notifications of distinct shares on `channel`, each
/// acknowledged (one not acknowledged in time is sent again).
async fn notified_once(
    client: &mut MiningClient,
    channel: u32,
    n: usize,
) -> Vec<ehash_ext_sv2::MintQuoteNotificationOwned> {
    let mut unique = std::collections::HashMap::new();
    while unique.len() < n {
        let batch = client.notifications(1).await;
        let hashes: Vec<[u8; 32]> = batch.iter().map(|q| q.share_hash.to_array()).collect();
        client.ack(channel, &hashes).await;
        for q in batch {
            unique.entry(q.share_hash.to_array()).or_insert(q);
        }
    }
    unique.into_values().collect()
}

/// The mint's audit with one byte of one entry's coinbase changed, as a
/// mint that rewrote its history would serve it.
struct Tampered {
    real: MintAudit,
    entry: u64,
}

impl AuditSource for Tampered {
    async fn summary(&self) -> Result<AuditSummary, String> {
        self.real.summary().await
    }

    async fn page(&self, start: u64, limit: u32) -> Result<AuditPage, String> {
        let mut page = self.real.page(start, limit).await?;
        if let Some(i) = self.entry.checked_sub(start) {
            if let Some(entry) = page.entries.get_mut(i as usize) {
                let at = entry.coinbase.len() - 2;
                let byte = u8::from_str_radix(&entry.coinbase[at..], 16).unwrap() ^ 1;
                entry.coinbase.replace_range(at.., &format!("{byte:02x}"));
            }
        }
        Ok(page)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_verifies_every_issued_quote_and_names_a_tampered_one() {
    const PER_KEY: usize = 1000;
    let stack = EhashStack::start("annotate", |_| {}).await;
    let mut minted = 0;
    let mut notified = 0;
    let mut clients = vec![];
    // One miner on a standard channel, one on an extended channel.
    for standard in [true, false] {
        let (secret, key) = miner_key();
        let mut client = stack.client(true).await;
        let identity = format!("{key}.rig");
        let channel = if standard {
            client.open_standard(&identity, 1.0).await
        } else {
            client.open_extended(&identity, 1.0, 4).await
        }
        .expect("channel opens");
        client.wait_for_work(channel).await;
        clients.push((secret, key, client, channel));
    }
    for (secret, _, client, channel) in &mut clients {
        mine_accepted(client, *channel, PER_KEY).await;
        let notifications = notified_once(client, *channel, PER_KEY).await;
        let ids: Vec<String> = notifications
            .iter()
            .map(|n| n.quote_id.as_utf8_or_hex())
            .collect();
        let amount: u64 = notifications.iter().map(|n| n.amount).sum();
        notified += amount;
        let wallet = wallet(&stack.mint_url());
        // The stack's mint takes 100 quotes a batch.
        for batch in ids.chunks(100) {
            minted += mint_quotes(&wallet, batch, secret).await.unwrap();
        }
    }
    assert_eq!(minted, notified);

    let mut pages = 0;
    let report = audit(&MintAudit::new(&stack.mint_url()), |_, _| pages += 1)
        .await
        .expect("the audit passes");
    assert_eq!(pages, 2, "1000 entries a page");
    assert_eq!(report.summary.entries, 2 * PER_KEY as u64);
    assert_eq!(report.totals.quotes, 2 * PER_KEY as u64);
    assert_eq!(
        report.totals.ehash, minted,
        "the audit's total is what the wallets minted"
    );
    for (_, key, _, _) in &clients {
        assert_eq!(report.totals.per_key[&key.to_string()].0, PER_KEY as u64);
    }
    // The mint's own stats, as the pool hears them every second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = stack.pool().mint_stats();
        if stats
            .as_ref()
            .is_some_and(|s| (s.quotes_issued, s.ehash_issued) == (2 * PER_KEY as u64, minted))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mint's stats {stats:?} never showed {} quotes and {minted} ehash issued",
            2 * PER_KEY
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let tampered = Tampered {
        real: MintAudit::new(&stack.mint_url()),
        entry: 1234,
    };
    let failure = audit(&tampered, |_, _| {}).await.unwrap_err();
    assert_eq!(failure.entry, Some(1234), "{failure}");
    assert!(failure.to_string().starts_with("entry 1234: "), "{failure}");
    stack.stop().await;
}

//! The real mint on 127.0.0.1 (ports 0), a pool-link client speaking the
//! mint-quote subprotocol over Noise, and a real cdk Wallet over HTTP.

mod support;

use cdk::amount::{Amount, SplitTarget};
use cdk::error::ErrorCode;
use cdk::nuts::nut29::BatchMintRequest;
use cdk::nuts::{CurrencyUnit, PreMintSecrets, SecretKey};
use ehash::wire::MessageSet;
use mint::MintConfig;
use mint_quote_sv2::client::{ClientHandshake, HandshakeStep};
use mint_quote_sv2::MintQuoteMessage;
use roles_common::testing::{refused_config, shipped_config_with};
use serde_json::Value;
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_pool_gets_a_quote_that_only_the_locking_key_mints() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (miner_secret, miner) = miner_key();

    let request = share(6, miner);
    let share_hash = request.share_hash.clone();
    let answer = pool.quote(request).await;
    let MintQuoteMessage::MintQuoteResponse(response) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(response.share_hash, share_hash);
    let active = mint.running.mint.get_active_keysets()[&CurrencyUnit::custom("hash")];
    assert_eq!(response.keyset_id.as_utf8_or_hex(), active.to_string());
    // Denominations 2^0..2^63, no input fee.
    let keyset = mint.running.mint.get_keyset_info(&active).unwrap();
    assert_eq!(
        keyset.amounts,
        (0..64).map(|i| 1u64 << i).collect::<Vec<_>>()
    );
    assert_eq!(keyset.input_fee_ppk, 0);
    let quote_id = response.quote_id.as_utf8_or_hex();

    // Another key cannot mint it.
    let (thief_secret, _) = miner_key();
    let thief = mint.wallet();
    assert!(mint_with(&thief, &[&quote_id], &thief_secret)
        .await
        .is_err());
    assert_eq!(u64::from(thief.total_balance().await.unwrap()), 0);

    // The locking key mints exactly the share's amount.
    let wallet = mint.wallet();
    assert_eq!(
        mint_with(&wallet, &[&quote_id], &miner_secret).await,
        Ok(64)
    );
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), 64);

    let stats = pool.stats().await;
    assert_eq!(
        (stats.quotes_issued, stats.ehash_quoted, stats.ehash_issued),
        (1, 64, 64)
    );
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut29_batch_mints_many_quotes_at_once() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (miner_secret, miner) = miner_key();
    let mut ids = vec![];
    let mut expected = 0;
    for zero_bits in 1..=12 {
        ids.push(pool.quote_id(share(zero_bits, miner)).await);
        expected += 1u64 << zero_bits;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let wallet = mint.wallet();
    assert_eq!(mint_with(&wallet, &ids, &miner_secret).await, Ok(expected));
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), expected);
    mint.stop().await;
}

/// The batch route as a wallet meets it: a batch asked for again (its
/// answer lost) gets the same signatures, the same quotes with new outputs
/// are refused as issued, and a batch naming a quote twice, too many
/// quotes or an unknown one is refused; refusals are 400 with a Cashu
/// error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_asked_again_gets_the_same_signatures_and_a_bad_one_a_cashu_error() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (miner_secret, miner) = miner_key();
    let ids = vec![
        pool.quote_id(share(3, miner)).await,
        pool.quote_id(share(5, miner)).await,
    ];

    let request = batch_request(&mint, &ids, 8 + 32, &miner_secret);
    let (status, first) = post_batch(&mint, &request).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(post_batch(&mint, &request).await, (200, first));

    let code = |refusal: &Value| refusal["code"].as_u64();
    let issued = ErrorCode::TokensAlreadyIssued.to_code();
    let again = batch_request(&mint, &ids, 8 + 32, &miner_secret);
    let (status, refusal) = post_batch(&mint, &again).await;
    assert_eq!(
        (status, refusal["code"].as_u64()),
        (400, Some(issued.into()))
    );

    let twice = vec![ids[0].clone(), ids[0].clone()];
    let (status, refusal) =
        post_batch(&mint, &batch_request(&mint, &twice, 16, &miner_secret)).await;
    let duplicate = ErrorCode::DuplicateQuoteIds.to_code();
    assert_eq!((status, code(&refusal)), (400, Some(duplicate.into())));
    let max = mint
        .running
        .mint
        .mint_info()
        .await
        .unwrap()
        .nuts
        .nut29
        .max_batch_size;
    let too_many: Vec<String> = (0..=max.unwrap())
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let (status, refusal) =
        post_batch(&mint, &batch_request(&mint, &too_many, 1, &miner_secret)).await;
    let exceeded = ErrorCode::BatchSizeExceeded.to_code();
    assert_eq!((status, code(&refusal)), (400, Some(exceeded.into())));

    let unknown = vec!["f0f6b1b9-5ac4-4b47-9e3b-6e4f6f1b0d2a".to_string()];
    let (status, refusal) =
        post_batch(&mint, &batch_request(&mint, &unknown, 8, &miner_secret)).await;
    assert_eq!(status, 400, "{refusal}");
    assert!(refusal["detail"].is_string(), "{refusal}");
    mint.stop().await;
}

/// Browser wallets may call the mint's own routes as they call cdk's: a
/// preflight is answered, and answers allow any origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_wallets_may_call_every_route() {
    let mint = TestMint::start(config(":memory:")).await;
    let preflight = http(&mint, "OPTIONS /v1/mint/ehash/batch").await;
    assert!(preflight.starts_with("HTTP/1.1 200"), "{preflight}");
    for request in [
        "OPTIONS /v1/mint/ehash/batch",
        "OPTIONS /v1/mint/quote/ehash/pubkey",
        "GET /v1/ehash/audit",
        "GET /v1/info",
    ] {
        let answer = http(&mint, request).await.to_ascii_lowercase();
        assert!(
            answer.contains("access-control-allow-origin: *"),
            "{request}: {answer}"
        );
    }
    mint.stop().await;
}

/// The head of the mint's answer to `request` ("METHOD /path") from a page
/// of another origin.
async fn http(mint: &TestMint, request: &str) -> String {
    let mut stream = TcpStream::connect(mint.running.http_addr).await.unwrap();
    let head = format!(
        "{request} HTTP/1.1\r\nHost: mint\r\nOrigin: http://wallet.example\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![];
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.split("\r\n\r\n").next().unwrap().to_string()
}

/// A NUT-29 request for `quotes` worth `total` together, fresh outputs,
/// each quote signed with `key` (NUT-20).
fn batch_request(
    mint: &TestMint,
    quotes: &[String],
    total: u64,
    key: &SecretKey,
) -> BatchMintRequest<String> {
    let keyset = mint.running.mint.get_active_keysets()[&CurrencyUnit::custom("hash")];
    let amounts = (0..64).map(|i| 1u64 << i).collect();
    let outputs = PreMintSecrets::random(
        keyset,
        Amount::from(total),
        &SplitTarget::default(),
        &(0, amounts).into(),
    )
    .unwrap();
    let mut request = BatchMintRequest {
        quotes: quotes.to_vec(),
        quote_amounts: None,
        outputs: outputs.blinded_messages(),
        signatures: None,
    };
    let signatures = quotes
        .iter()
        .map(|quote| Some(request.sign_quote(quote, key).unwrap()))
        .collect();
    request.signatures = Some(signatures);
    request
}

/// POSTs `request` to the ehash batch route: (status, JSON answer).
async fn post_batch(mint: &TestMint, request: &BatchMintRequest<String>) -> (u16, Value) {
    mint.post_json("/v1/mint/ehash/batch", request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_wrong_key_and_replayed_proofs_are_refused() {
    let mint = TestMint::start(config(":memory:")).await;
    let addr = mint.running.link_addr;
    let (_, miner) = miner_key();

    // A quote request right after SetupConnection, without a proof.
    let mut sneaky = PoolClient::connect(addr).await;
    let handshake = ClientHandshake::new(mint_key(), secret(POOL_SECRET), 0);
    sneaky
        .send(handshake.setup_connection("127.0.0.1", addr.port()))
        .await;
    assert!(matches!(
        sneaky.recv().await,
        Ok(MintQuoteMessage::SetupConnectionSuccess(_))
    ));
    assert!(matches!(
        sneaky.recv().await,
        Ok(MintQuoteMessage::PoolAuthChallenge(_))
    ));
    sneaky
        .send(MintQuoteMessage::MintQuoteRequest(share(2, miner)))
        .await;
    match sneaky.recv().await {
        Ok(MintQuoteMessage::PoolAuthError(e)) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "not-authenticated")
        }
        other => panic!("{other:?}"),
    }
    assert!(sneaky.is_closed().await);

    // A quote request before SetupConnection.
    let mut rude = PoolClient::connect(addr).await;
    rude.send(MintQuoteMessage::MintQuoteRequest(share(2, miner)))
        .await;
    assert!(rude.is_closed().await);

    // A pool key that is not on the allow-list.
    let mut stranger = PoolClient::connect(addr).await;
    let mut handshake = ClientHandshake::new(mint_key(), secret(STRANGER_SECRET), 0);
    stranger
        .send(handshake.setup_connection("127.0.0.1", addr.port()))
        .await;
    let mut refusal = None;
    while refusal.is_none() {
        match handshake.on_message(stranger.recv().await.unwrap()) {
            Ok(HandshakeStep::Send(m)) => stranger.send(*m).await,
            Ok(HandshakeStep::Wait) => {}
            Ok(HandshakeStep::Done) => panic!("a stranger authenticated"),
            Err(e) => refusal = Some(e.to_string()),
        }
    }
    assert!(refusal.unwrap().contains("unknown-pool-key"));
    assert!(stranger.is_closed().await);

    // A valid proof from one session replayed on another.
    let mut first = PoolClient::connect(addr).await;
    let mut handshake = ClientHandshake::new(mint_key(), secret(POOL_SECRET), 0);
    first
        .send(handshake.setup_connection("127.0.0.1", addr.port()))
        .await;
    handshake.on_message(first.recv().await.unwrap()).unwrap();
    let HandshakeStep::Send(proof) = handshake.on_message(first.recv().await.unwrap()).unwrap()
    else {
        panic!("no proof")
    };
    let mut replay = PoolClient::connect(addr).await;
    replay
        .send(handshake.setup_connection("127.0.0.1", addr.port()))
        .await;
    replay.recv().await.unwrap();
    replay.recv().await.unwrap();
    replay.send(*proof).await;
    match replay.recv().await {
        Ok(MintQuoteMessage::PoolAuthError(e)) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "invalid-signature")
        }
        other => panic!("{other:?}"),
    }
    assert!(replay.is_closed().await);

    // None of them created a quote.
    let stats = mint.pool().await.stats().await;
    mint.assert_no_quote(&stats).await;
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehash_quotes_cannot_be_created_over_http() {
    let mint = TestMint::start(config(":memory:")).await;
    let wallet = mint.wallet();
    // The method is advertised (NUT-04) ...
    let info = wallet.fetch_mint_info().await.unwrap().unwrap();
    // (and the URL is the one bound, not the configured port 0)
    assert_eq!(info.urls, Some(vec![mint.running.http_url()]));
    assert!(info
        .nuts
        .nut04
        .methods
        .iter()
        .any(|m| m.method == ehash_method()));
    // ... but the public route refuses to create its quotes, whatever the extra says.
    let extra =
        serde_json::json!({"share_hash": "00".repeat(32), "authorization": "00".repeat(16)});
    let refused = wallet
        .mint_quote(
            ehash_method(),
            Some(64.into()),
            None,
            Some(extra.to_string()),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = wallet
        .mint_quote(ehash_method(), Some(64.into()), None, None)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(mint.running.mint.mint_quotes().await.unwrap().is_empty());
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_target_a_wrong_amount_or_another_keys_work_creates_no_quote() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (_, miner) = miner_key();

    let mut wrong_amount = share(8, miner);
    wrong_amount.amount += 1;
    let share_hash = wrong_amount.share_hash.clone();
    match pool.quote(wrong_amount).await {
        MintQuoteMessage::MintQuoteError(e) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "amount-mismatch");
            assert_eq!(e.share_hash, share_hash);
        }
        other => panic!("{other:?}"),
    }

    // A header that does not meet the target it claims.
    let mut missed = share(8, miner);
    let mut header = missed.header_bytes();
    loop {
        header[76] = header[76].wrapping_add(1);
        let mut hash = sha256d::Hash::hash(&header).to_byte_array();
        hash.reverse();
        if hash[0] != 0 {
            break;
        }
    }
    missed = claimed_as(&missed, &header, miner);
    match pool.quote(missed).await {
        MintQuoteMessage::MintQuoteError(e) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "invalid-proof-of-work")
        }
        other => panic!("{other:?}"),
    }

    // Real work, claimed for another key than its coinbase commits to.
    let (_, thief) = miner_key();
    let honest = share(8, miner);
    let stolen = claimed_as(&honest, &honest.header_bytes(), thief);
    match pool.quote(stolen).await {
        MintQuoteMessage::MintQuoteError(e) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "key-commitment-mismatch")
        }
        other => panic!("{other:?}"),
    }

    // The connection stays usable, and no quote exists.
    let stats = pool.stats().await;
    mint.assert_no_quote(&stats).await;
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_worth_more_or_less_than_the_mints_limits_gets_no_quote() {
    let mint = TestMint::start(MintConfig {
        min_amount: 4,
        max_amount: 16,
        ..config(":memory:")
    })
    .await;
    let mut pool = mint.pool().await;
    let (_, miner) = miner_key();
    for zero_bits in [1, 5] {
        match pool.quote(share(zero_bits, miner)).await {
            MintQuoteMessage::MintQuoteError(e) => {
                assert_eq!(e.error_code.as_utf8_or_hex(), "amount-out-of-range");
                assert!(e.error_message.as_utf8_or_hex().contains("4..=16"));
            }
            other => panic!("{other:?}"),
        }
    }
    let stats = pool.stats().await;
    mint.assert_no_quote(&stats).await;
    assert!(matches!(
        pool.quote(share(4, miner)).await,
        MintQuoteMessage::MintQuoteResponse(_)
    ));
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_share_twice_gets_the_same_quote_and_mints_once() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let mut other_pool = mint.pool().await;
    let (miner_secret, miner) = miner_key();

    let request = share(5, miner);
    // Twice at the same time on two connections, then once more later.
    pool.send(MintQuoteMessage::MintQuoteRequest(request.clone()))
        .await;
    other_pool
        .send(MintQuoteMessage::MintQuoteRequest(request.clone()))
        .await;
    let a = pool.recv().await.unwrap();
    let b = other_pool.recv().await.unwrap();
    assert_eq!(a, b);
    let first = pool.quote_id(request.clone()).await;
    let MintQuoteMessage::MintQuoteResponse(a) = a else {
        panic!("{a:?}")
    };
    assert_eq!(a.quote_id.as_utf8_or_hex(), first);

    let wallet = mint.wallet();
    assert_eq!(mint_with(&wallet, &[&first], &miner_secret).await, Ok(32));
    // Asked again after minting: the same quote, nothing new to mint.
    assert_eq!(pool.quote_id(request).await, first);
    assert!(mint_with(&mint.wallet(), &[&first], &miner_secret)
        .await
        .is_err());
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), 32);

    let stats = pool.stats().await;
    assert_eq!(
        (
            stats.quotes_unpaid,
            stats.quotes_paid,
            stats.quotes_issued,
            stats.ehash_quoted,
            stats.ehash_issued
        ),
        (0, 0, 1, 32, 32)
    );
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_every_quote_is_still_there_and_mintable() {
    let (_dir, _, config) = config_on_disk();
    let (miner_secret, miner) = miner_key();

    let mint = TestMint::start(config.clone()).await;
    let mut pool = mint.pool().await;
    let mut ids = vec![];
    for zero_bits in [3, 4, 5] {
        ids.push(pool.quote_id(share(zero_bits, miner)).await);
    }
    // Mint the first one before the restart.
    assert_eq!(
        mint_with(&mint.wallet(), &[&ids[0]], &miner_secret).await,
        Ok(8)
    );
    mint.stop().await;

    // Restarted with other limits: the config wins over the stored mint info.
    let mut changed = config.clone();
    changed.max_amount = 1 << 40;
    let mint = TestMint::start(changed).await;
    let info = mint.wallet().fetch_mint_info().await.unwrap().unwrap();
    let ehash = info
        .nuts
        .nut04
        .methods
        .iter()
        .find(|m| m.method == ehash_method())
        .unwrap();
    assert_eq!(ehash.max_amount, Some((1u64 << 40).into()));

    let mut pool = mint.pool().await;
    let stats = pool.stats().await;
    assert_eq!(
        (
            stats.quotes_paid,
            stats.quotes_issued,
            stats.ehash_quoted,
            stats.ehash_issued
        ),
        (2, 1, 8 + 16 + 32, 8)
    );
    let wallet = mint.wallet();
    assert_eq!(
        mint_with(&wallet, &[&ids[1], &ids[2]], &miner_secret).await,
        Ok(16 + 32)
    );
    // A share quoted before the restart keeps its quote.
    let stats = pool.stats().await;
    assert_eq!((stats.quotes_issued, stats.ehash_issued), (3, 56));
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_asked_again_after_the_limits_changed_keeps_its_quote() {
    let (_dir, _, config) = config_on_disk();
    let (_, miner) = miner_key();
    let mint = TestMint::start(config.clone()).await;
    let request = share(5, miner);
    let quoted = mint.pool().await.quote_id(request.clone()).await;
    mint.stop().await;

    // 32 ehash is above the new limit: refused when new, kept when quoted.
    let mut lower = config;
    lower.max_amount = 16;
    let mint = TestMint::start(lower).await;
    let mut pool = mint.pool().await;
    assert_eq!(pool.quote_id(request.clone()).await, quoted);
    // Not to a request for another key: the quote is not its to hear of.
    let mut other_key = request;
    other_key.locking_key = miner_key().1.into();
    match pool.quote(other_key).await {
        MintQuoteMessage::MintQuoteError(_) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    match pool.quote(share(6, miner)).await {
        MintQuoteMessage::MintQuoteError(e) => {
            assert_eq!(e.error_code.as_utf8_or_hex(), "amount-out-of-range")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_own_connection() {
    let mint = TestMint::start(config(":memory:")).await;
    let addr = mint.running.link_addr;
    let (_, miner) = miner_key();
    let mut good = mint.pool().await;
    good.quote_id(share(2, miner)).await;

    // A MintQuoteRequest with bytes after its last field.
    let mut oversized = mint.pool().await;
    let mut payload = MintQuoteMessage::MintQuoteRequest(share(2, miner))
        .to_frame_bytes()
        .unwrap()[6..]
        .to_vec();
    payload.extend([0u8; 64]);
    oversized.send_bytes_as_frame(0x80, payload).await;
    assert!(oversized.is_closed().await);

    // A truncated one, and an unknown message type.
    let mut truncated = mint.pool().await;
    let payload = MintQuoteMessage::MintQuoteRequest(share(2, miner))
        .to_frame_bytes()
        .unwrap()[6..100]
        .to_vec();
    truncated.send_bytes_as_frame(0x80, payload).await;
    assert!(truncated.is_closed().await);
    let mut unknown = mint.pool().await;
    unknown.send_bytes_as_frame(0x7e, vec![1, 2, 3]).await;
    assert!(unknown.is_closed().await);

    // Garbage instead of a Noise handshake: any 64 bytes pass for the
    // initiator's key, so the mint answers, then the next bytes fail their MAC.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0xde; 200]).await.unwrap();
    let closed = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 256];
        loop {
            match tokio::io::AsyncReadExt::read(&mut raw, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the mint kept a garbage connection open");

    // The first connection never noticed.
    good.quote_id(share(3, miner)).await;
    assert_eq!(good.stats().await.quotes_paid, 2);
    mint.stop().await;
}

#[test]
fn the_shipped_config_is_valid() {
    let config = shipped_config();
    assert_eq!(config.link_listen.port(), 34260);
    assert_eq!(config.http_listen.port(), 3338);
}

#[test]
fn a_bad_config_stops_the_mint_with_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped_config_with(
        dir.path(),
        "mint.toml",
        &[(
            "link_listen = \"127.0.0.1:34260\"",
            "link_listen = \"port 34260\"",
        )],
    );
    refused_config(
        std::process::Command::new(env!("CARGO_BIN_EXE_mint"))
            .arg("--config")
            .arg(&path),
        &["`link_listen`"],
    );
}

#[test]
fn a_mint_off_the_devnet_needs_a_chain_view_with_a_sane_tip_age() {
    let dir = tempfile::tempdir().unwrap();
    let mint = |replacements: &[(&str, &str)]| {
        let path = shipped_config_with(dir.path(), "mint.toml", replacements);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mint"));
        command.arg("--config").arg(path);
        command
    };
    refused_config(
        &mut mint(&[("max_tip_age = 6", "max_tip_age = 0")]),
        &["chain.max_tip_age"],
    );
    refused_config(
        &mut mint(&[
            ("network = \"devnet\"", "network = \"signet\""),
            ("[chain]", ""),
            ("tp_address = \"127.0.0.1:8442\"", ""),
            (
                "tp_authority_public_key = \"9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg\"",
                "",
            ),
            ("max_tip_age = 6", ""),
            ("unseen_tip_wait_secs = 10", ""),
        ]),
        &["`chain`", "devnet"],
    );
}

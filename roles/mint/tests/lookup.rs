//! The quote lookup by locking key against the real mint on 127.0.0.1:
//! quotes created over the pool link, looked up over HTTP with signed
//! requests.

mod support;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use cdk::nuts::SecretKey;
use cdk_common::database::{Error as DbError, MintDatabase};
use ehash::lookup::{
    sign_request, Cursor, LookupFields, LookupRequest, LookupResponse, QuoteEntry, QuoteState,
};
use ehash::LockingKey;
use mint_quote_sv2::MintQuoteMessage;
use serde_json::{json, Value};
use stratum_core::bitcoin::secp256k1::PublicKey;
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fields(limit: Option<u32>, cursor: Option<Cursor>) -> LookupFields<'static> {
    LookupFields {
        method: "ehash",
        timestamp: now(),
        nonce: rand::random(),
        limit,
        cursor,
    }
}

fn signed(secrets: &[&SecretKey], mint_key: &PublicKey, fields: &LookupFields) -> LookupRequest {
    let secrets: Vec<_> = secrets.iter().map(|s| ***s).collect();
    sign_request(&secrets, mint_key, fields)
}

/// The mint's NUT-06 pubkey, as a wallet learns it.
async fn info_pubkey(mint: &TestMint) -> PublicKey {
    let info = mint.wallet().fetch_mint_info().await.unwrap().unwrap();
    *info.pubkey.expect("the mint advertises a pubkey")
}

/// POSTs `body` to the lookup of `method`: (status, JSON answer).
async fn post(mint: &TestMint, method: &str, body: &impl serde::Serialize) -> (u16, Value) {
    mint.post_json(&format!("/v1/mint/quote/{method}/pubkey"), body)
        .await
}

async fn page(mint: &TestMint, request: &LookupRequest) -> LookupResponse {
    let (status, json) = post(mint, "ehash", request).await;
    assert_eq!(status, 200, "{json}");
    serde_json::from_value(json).unwrap()
}

/// Quotes of `zero_bits` shares for `key`; returns their ids.
async fn quotes_for(pool: &mut PoolClient, key: LockingKey, zero_bits: &[u32]) -> Vec<String> {
    let mut ids = vec![];
    for &bits in zero_bits {
        ids.push(pool.quote_id(share(bits, key)).await);
    }
    ids
}

/// Every page of `secrets`' quotes at `limit`, checking each page's size.
async fn all_pages(
    mint: &TestMint,
    secrets: &[&SecretKey],
    mint_key: &PublicKey,
    limit: u32,
) -> Vec<Vec<QuoteEntry>> {
    let mut pages = vec![];
    let mut cursor = None;
    loop {
        let request = signed(secrets, mint_key, &fields(Some(limit), cursor));
        let answer = page(mint, &request).await;
        assert!(answer.quotes.len() <= limit as usize);
        pages.push(answer.quotes);
        match answer.next_cursor {
            None => return pages,
            Some(next) => cursor = Some(next.parse().unwrap()),
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_lookup_lists_exactly_the_keys_quotes_with_amounts_and_states() {
    let config = config(":memory:");
    let expected_key = config.info_pubkey();
    let mint = TestMint::start(config).await;
    let mut pool = mint.pool().await;
    let (secret_a, key_a) = miner_key();
    let (secret_b, key_b) = miner_key();
    let ids_a = quotes_for(&mut pool, key_a, &[3, 4, 5, 6]).await;
    let ids_b = quotes_for(&mut pool, key_b, &[2, 7]).await;
    // One of A's quotes minted: issued.
    assert_eq!(
        mint_with(&mint.wallet(), &[&ids_a[1]], &secret_a).await,
        Ok(16)
    );

    let mint_key = info_pubkey(&mint).await;
    assert_eq!(mint_key, expected_key);
    let answer = page(&mint, &signed(&[&secret_a], &mint_key, &fields(None, None))).await;
    assert_eq!(answer.next_cursor, None);
    let listed: Vec<(String, u64, QuoteState)> = answer
        .quotes
        .iter()
        .map(|q| (q.quote.clone(), q.amount, q.state))
        .collect();
    assert_eq!(
        listed,
        vec![
            (ids_a[0].clone(), 8, QuoteState::Paid),
            (ids_a[1].clone(), 16, QuoteState::Issued),
            (ids_a[2].clone(), 32, QuoteState::Paid),
            (ids_a[3].clone(), 64, QuoteState::Paid),
        ]
    );
    let started = now() - 600;
    for q in &answer.quotes {
        assert_eq!(q.pubkey, key_a.to_string());
        assert!(q.created_time >= started && q.created_time <= now());
    }

    // B sees only B's; both keys in one request list A's, then B's.
    let answer = page(&mint, &signed(&[&secret_b], &mint_key, &fields(None, None))).await;
    let ids: Vec<String> = answer.quotes.iter().map(|q| q.quote.clone()).collect();
    assert_eq!(ids, ids_b);
    let both = signed(&[&secret_a, &secret_b], &mint_key, &fields(None, None));
    let ids: Vec<String> = page(&mint, &both)
        .await
        .quotes
        .into_iter()
        .map(|q| q.quote)
        .collect();
    assert_eq!(ids, [ids_a, ids_b].concat());

    // A key without quotes gets an empty list.
    let (secret_c, _) = miner_key();
    let answer = page(&mint, &signed(&[&secret_c], &mint_key, &fields(None, None))).await;
    assert!(answer.quotes.is_empty() && answer.next_cursor.is_none());
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_never_exceed_the_limit_and_list_each_quote_once() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (secret_a, key_a) = miner_key();
    let (secret_b, key_b) = miner_key();
    let ids_a = quotes_for(&mut pool, key_a, &[1, 2, 3, 4, 5, 6, 7]).await;
    let ids_b = quotes_for(&mut pool, key_b, &[1, 2, 3]).await;
    let mint_key = info_pubkey(&mint).await;

    let pages = all_pages(&mint, &[&secret_a], &mint_key, 3).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let listed: Vec<String> = pages.concat().into_iter().map(|q| q.quote).collect();
    assert_eq!(listed, ids_a);

    // Across keys: each quote once, A's then B's, no page over the limit.
    let pages = all_pages(&mint, &[&secret_a, &secret_b], &mint_key, 4).await;
    let listed: Vec<String> = pages.concat().into_iter().map(|q| q.quote).collect();
    assert_eq!(listed, [ids_a.clone(), ids_b].concat());
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), listed.len());

    // A limit above the maximum is served as the maximum.
    let request = signed(&[&secret_a], &mint_key, &fields(Some(1_000_000), None));
    assert_eq!(page(&mint, &request).await.quotes.len(), ids_a.len());
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_written_together_are_paged_each_once_in_one_order() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (secret, key) = miner_key();
    // All sent before an answer is read: the writer takes them in a few
    // groups, and the key's list keeps many ids in one entry.
    let shares: Vec<_> = (0..150).map(|i| share(1 + i % 7, key)).collect();
    for share in &shares {
        pool.send(MintQuoteMessage::MintQuoteRequest(share.clone()))
            .await;
    }
    let mut quoted = HashSet::new();
    for _ in &shares {
        match pool.recv().await.unwrap() {
            MintQuoteMessage::MintQuoteResponse(answer) => {
                quoted.insert(answer.quote_id.as_utf8_or_hex());
            }
            other => panic!("not a quote: {other:?}"),
        }
    }
    assert_eq!(quoted.len(), shares.len());
    let mint_key = info_pubkey(&mint).await;

    let listed = |pages: Vec<Vec<QuoteEntry>>| -> Vec<String> {
        pages.concat().into_iter().map(|q| q.quote).collect()
    };
    let by_100 = listed(all_pages(&mint, &[&secret], &mint_key, 100).await);
    let by_7 = listed(all_pages(&mint, &[&secret], &mint_key, 7).await);
    assert_eq!(by_100.iter().cloned().collect::<HashSet<_>>(), quoted);
    assert_eq!(by_100.len(), shares.len(), "each quote once");
    assert_eq!(by_7, by_100);
    mint.stop().await;
}

/// Status and error code of an answer that must be a refusal.
async fn refused(mint: &TestMint, method: &str, body: &impl serde::Serialize) -> (u16, String) {
    let (status, json) = post(mint, method, body).await;
    assert!((400..500).contains(&status), "{status} {json}");
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "no detail in {json}");
    (status, json["error"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_clear_4xx() {
    let (mint, mut pool) = TestMint::with_pool().await;
    let (secret_a, key_a) = miner_key();
    let (secret_b, _) = miner_key();
    quotes_for(&mut pool, key_a, &[3]).await;
    let mint_key = info_pubkey(&mint).await;

    // B's signature under A's key.
    let mut forged = signed(&[&secret_a], &mint_key, &fields(None, None));
    forged.pubkey_signatures =
        signed(&[&secret_b], &mint_key, &fields(None, None)).pubkey_signatures;
    assert_eq!(
        refused(&mint, "ehash", &forged).await,
        (403, "invalid-signature".into())
    );

    // Served once, refused when replayed.
    let request = signed(&[&secret_a], &mint_key, &fields(None, None));
    assert_eq!(page(&mint, &request).await.quotes.len(), 1);
    assert_eq!(
        refused(&mint, "ehash", &request).await,
        (409, "replayed-request".into())
    );

    // Another mint process on the same database (here a second lookup
    // service on this mint's) refuses it too; its digest is forgotten only
    // once the request could not be accepted anyway.
    let other = mint::lookup::QuoteLookup::new(mint.running.mint.clone(), mint_key);
    let body = serde_json::to_vec(&request).unwrap();
    assert!(matches!(
        other.lookup("ehash", &body, now()).await,
        Err(mint::lookup::Refusal::Request(
            ehash::lookup::LookupError::Replayed
        ))
    ));
    let expiry = request.timestamp + ehash::lookup::TIMESTAMP_WINDOW_SECS;
    assert_eq!(other.forget_expired(expiry).await, Ok(0));
    assert_eq!(other.forget_expired(expiry + 1).await, Ok(1));

    // Two minutes old, and two minutes ahead.
    for skew in [-120i64, 120] {
        let mut f = fields(None, None);
        f.timestamp = now().saturating_add_signed(skew);
        let stale = signed(&[&secret_a], &mint_key, &f);
        assert_eq!(
            refused(&mint, "ehash", &stale).await,
            (400, "stale-timestamp".into())
        );
    }

    // Unsigned: no signatures at all, or an empty list.
    let mut unsigned =
        serde_json::to_value(signed(&[&secret_a], &mint_key, &fields(None, None))).unwrap();
    unsigned
        .as_object_mut()
        .unwrap()
        .remove("pubkey_signatures");
    assert_eq!(
        refused(&mint, "ehash", &unsigned).await,
        (400, "malformed-request".into())
    );
    unsigned["pubkey_signatures"] = json!([]);
    assert_eq!(
        refused(&mint, "ehash", &unsigned).await,
        (400, "malformed-request".into())
    );

    // Signed for another mint's key.
    let (other_mint, _) = miner_key();
    let elsewhere = signed(&[&secret_a], &other_mint.public_key(), &fields(None, None));
    assert_eq!(
        refused(&mint, "ehash", &elsewhere).await,
        (403, "invalid-signature".into())
    );

    // Too many keys, a bad cursor, another method, not JSON.
    let many: Vec<SecretKey> = (0..11).map(|_| SecretKey::generate()).collect();
    let many: Vec<&SecretKey> = many.iter().collect();
    let too_many = signed(&many, &mint_key, &fields(None, None));
    assert_eq!(
        refused(&mint, "ehash", &too_many).await,
        (400, "too-many-pubkeys".into())
    );
    let mut bad_cursor =
        serde_json::to_value(signed(&[&secret_a], &mint_key, &fields(None, None))).unwrap();
    bad_cursor["cursor"] = json!("0:-1");
    assert_eq!(
        refused(&mint, "ehash", &bad_cursor).await,
        (400, "bad-cursor".into())
    );
    let request = signed(&[&secret_a], &mint_key, &fields(None, None));
    assert_eq!(
        refused(&mint, "bolt11", &request).await,
        (404, "unknown-method".into())
    );
    assert_eq!(
        refused(&mint, "ehash", &"not a request").await,
        (400, "malformed-request".into())
    );
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_made_before_the_index_existed_are_indexed_at_start() {
    let (_dir, database, config) = config_on_disk();
    let (secret, key) = miner_key();

    let mint = TestMint::start(config.clone()).await;
    let ids = quotes_for(&mut mint.pool().await, key, &[2, 3, 4]).await;
    mint.stop().await;

    // Remove the index, as a database from before it would be.
    let db = cdk_sqlite::MintSqliteDatabase::new(&database)
        .await
        .unwrap();
    let mut tx = <_ as MintDatabase<DbError>>::begin_transaction(&db)
        .await
        .unwrap();
    for position in ["0000000000000000", "0000000000000001", "0000000000000002"] {
        tx.kv_remove("ehash", &format!("kq{key}"), position)
            .await
            .unwrap();
    }
    tx.kv_remove("ehash", "key_next", &key.to_string())
        .await
        .unwrap();
    tx.kv_remove("ehash", "key_index", "backfilled")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(db);

    // Restarted: the earlier quotes are listed (ordered by their creation
    // second, so in any order within one), then the new one.
    let mint = TestMint::start(config).await;
    let new = quotes_for(&mut mint.pool().await, key, &[5]).await;
    let mint_key = info_pubkey(&mint).await;
    let answer = page(&mint, &signed(&[&secret], &mint_key, &fields(None, None))).await;
    let mut listed: Vec<String> = answer.quotes.into_iter().map(|q| q.quote).collect();
    assert_eq!(listed.pop(), Some(new[0].clone()));
    listed.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(listed, ids);
    mint.stop().await;
}

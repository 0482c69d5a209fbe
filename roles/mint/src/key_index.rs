//! The locking key -> quote ids index, in the mint's KV store next to the
//! share index: cdk's database has no query by NUT-20 pubkey.
//!
//! Each key's quotes are numbered 0, 1, 2, ... in the order they were
//! created, so a page of the lookup is a run of point reads from a position
//! (cost: the page, not the key's history). Layout, namespace `ehash`:
//!
//! - `key_next` / `<key hex>` -> the next free position (u64 big-endian), a hint
//! - `kq<key hex>` / `<position, 16 hex digits>` -> quote id
//! - `key_index` / `backfilled` -> present once quotes created before this
//!   index existed have been added
//!
//! Entries are only ever added; positions are dense.

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::QuoteId;
use ehash::LockingKey;

use crate::service::KV_NAMESPACE;

const NEXT: &str = "key_next";
const META: &str = "key_index";
const BACKFILLED: &str = "backfilled";
/// Positions tried past a stale hint before giving up (the hint lags only
/// when another writer appended concurrently, by a few positions at most).
const MAX_PROBES: u64 = 1024;

fn entries(key: &LockingKey) -> String {
    format!("kq{key}")
}

fn slot(position: u64) -> String {
    format!("{position:016x}")
}

fn corrupt(what: String) -> Error {
    Error::Internal(format!("locking-key index: {what}"))
}

/// Adds `quote_id` at the end of `key`'s quotes, inside `tx`; returns its position.
pub async fn append(
    tx: &mut DynMintTransaction,
    key: &LockingKey,
    quote_id: &QuoteId,
) -> Result<u64, Error> {
    let key_hex = key.to_string();
    let hint = match tx.kv_read(KV_NAMESPACE, NEXT, &key_hex).await? {
        None => 0,
        Some(bytes) => decode_position(&bytes)?,
    };
    let namespace = entries(key);
    let id = quote_id.to_string();
    for position in hint..hint.saturating_add(MAX_PROBES) {
        if tx
            .kv_write_if_absent(KV_NAMESPACE, &namespace, &slot(position), id.as_bytes())
            .await?
        {
            let next = (position + 1).to_be_bytes();
            tx.kv_write(KV_NAMESPACE, NEXT, &key_hex, &next).await?;
            return Ok(position);
        }
    }
    Err(corrupt(format!(
        "no free position for {key_hex} after {hint}"
    )))
}

/// Up to `n` quote ids of `key` from `position` on, in creation order.
pub async fn read(
    db: &DynMintDatabase,
    key: &LockingKey,
    position: u64,
    n: usize,
) -> Result<Vec<QuoteId>, Error> {
    let namespace = entries(key);
    let mut ids = Vec::with_capacity(n.min(256));
    // A cursor near u64::MAX reads to the end of the range, never past it.
    let positions = (0..n as u64).map_while(|i| position.checked_add(i));
    for p in positions {
        let Some(bytes) = db.kv_read(KV_NAMESPACE, &namespace, &slot(p)).await? else {
            break;
        };
        let id = String::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<QuoteId>().ok())
            .ok_or_else(|| corrupt(format!("entry {p} of {key} is not a quote id")))?;
        ids.push(id);
    }
    Ok(ids)
}

fn decode_position(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("{}-byte position", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// Indexes, once, the ehash quotes created before the index existed, in
/// creation order. Runs before the mint serves, so nothing else appends.
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if db.kv_read(KV_NAMESPACE, META, BACKFILLED).await?.is_some() {
        return Ok(0);
    }
    let method = cdk::nuts::PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into());
    let mut quotes: Vec<_> = mint
        .mint_quotes()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .into_iter()
        .filter(|q| q.payment_method == method)
        .filter_map(|q| {
            let key = LockingKey::from_bytes(&q.pubkey?.to_bytes()).ok()?;
            Some((q.created_time, q.id, key))
        })
        .collect();
    quotes.sort_by_key(|(created, id, _)| (*created, id.to_string()));
    let mut tx = db.begin_transaction().await?;
    for (_, id, key) in &quotes {
        append(&mut tx, key, id).await?;
    }
    tx.kv_write(KV_NAMESPACE, META, BACKFILLED, &[1]).await?;
    tx.commit().await?;
    Ok(quotes.len())
}

//! The locking key -> quote ids index, in the mint's KV store next to the
//! share index: cdk's database has no query by NUT-20 pubkey.
//!
//! Each key's quotes are a [`KvLog`] (`kq<key hex>`, its hint under
//! `key_next` / `<key hex>`) in creation order, so a page of the lookup is a
//! run of point reads from a position. `key_index` / `backfilled` is present
//! once quotes created before this index existed have been added.

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::QuoteId;
use ehash::LockingKey;

use crate::kv_log::KvLog;
use crate::service::{ehash_quotes_oldest_first, KV_NAMESPACE};

const NEXT: &str = "key_next";
const META: &str = "key_index";
const BACKFILLED: &str = "backfilled";

/// The list of `key`'s quotes; `list` and `key_hex` hold its names.
fn quotes_of<'a>(list: &'a str, key_hex: &'a str) -> KvLog<'a> {
    KvLog {
        list,
        hints: NEXT,
        hint_key: key_hex,
    }
}

/// Adds `quote_id` at the end of `key`'s quotes, inside `tx`; returns its position.
pub async fn append(
    tx: &mut DynMintTransaction,
    key: &LockingKey,
    quote_id: &QuoteId,
) -> Result<u64, Error> {
    let (list, key_hex) = (format!("kq{key}"), key.to_string());
    quotes_of(&list, &key_hex)
        .append(tx, quote_id.to_string().as_bytes())
        .await
}

/// Up to `n` quote ids of `key` from `position` on, in creation order.
pub async fn read(
    db: &DynMintDatabase,
    key: &LockingKey,
    position: u64,
    n: usize,
) -> Result<Vec<QuoteId>, Error> {
    let (list, key_hex) = (format!("kq{key}"), key.to_string());
    let entries = quotes_of(&list, &key_hex).read(db, position, n).await?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            String::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<QuoteId>().ok())
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "locking-key index: entry {} of {key} is not a quote id",
                        position + i as u64
                    ))
                })
        })
        .collect()
}

/// Indexes, once, the ehash quotes created before the index existed, in
/// creation order. Runs before the mint serves, so nothing else appends.
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if db.kv_read(KV_NAMESPACE, META, BACKFILLED).await?.is_some() {
        return Ok(0);
    }
    let quotes: Vec<_> = ehash_quotes_oldest_first(mint)
        .await?
        .into_iter()
        .filter_map(|q| {
            let key = LockingKey::from_bytes(&q.pubkey?.to_bytes()).ok()?;
            Some((q.id, key))
        })
        .collect();
    let mut tx = db.begin_transaction().await?;
    for (id, key) in &quotes {
        append(&mut tx, key, id).await?;
    }
    tx.kv_write(KV_NAMESPACE, META, BACKFILLED, &[1]).await?;
    tx.commit().await?;
    Ok(quotes.len())
}

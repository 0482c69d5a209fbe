//! The locking key -> quote ids index, in the mint's KV store: cdk's
//! database has no query by NUT-20 pubkey.
//!
//! Each key's quotes are a [`KvLog`] (`kq<key hex>`, its hint under
//! `key_next` / `<key hex>`) in creation order, so a page of the lookup is a
//! run of point reads from a position. `key_index` / `backfilled` is present
//! once quotes created before this index existed have been added.

use std::collections::BTreeMap;

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

/// Adds quote ids, in creation order, at the end of `key`'s quotes,
/// inside the transaction that creates the quotes.
async fn append(
    tx: &mut DynMintTransaction,
    key: &LockingKey,
    quote_ids: &[QuoteId],
) -> Result<(), Error> {
    let (list, key_hex) = (format!("kq{key}"), key.to_string());
    let entries: Vec<String> = quote_ids.iter().map(QuoteId::to_string).collect();
    quotes_of(&list, &key_hex).append(tx, &entries).await
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
    let mut by_key = QuotesByKey::default();
    for quote in ehash_quotes_oldest_first(mint).await? {
        let key = quote.pubkey.map(|k| LockingKey::from_bytes(&k.to_bytes()));
        if let Some(Ok(key)) = key {
            by_key.add(key, quote.id);
        }
    }
    let mut tx = db.begin_transaction().await?;
    let indexed = by_key.append(&mut tx).await?;
    tx.kv_write(KV_NAMESPACE, META, BACKFILLED, &[1]).await?;
    tx.commit().await?;
    Ok(indexed)
}

/// New quotes by locking key, in creation order within each key, to append
/// to each key's list at once.
#[derive(Debug, Default)]
pub struct QuotesByKey(BTreeMap<LockingKey, Vec<QuoteId>>);

impl QuotesByKey {
    pub fn add(&mut self, key: LockingKey, quote_id: QuoteId) {
        self.0.entry(key).or_default().push(quote_id);
    }

    /// Appends every key's quotes inside `tx`; how many quotes.
    pub async fn append(&self, tx: &mut DynMintTransaction) -> Result<usize, Error> {
        for (key, quote_ids) in &self.0 {
            append(tx, key, quote_ids).await?;
        }
        Ok(self.0.values().map(Vec::len).sum())
    }
}

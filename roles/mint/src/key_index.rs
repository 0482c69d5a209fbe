//! The locking key -> quote ids index, in the mint's KV store: cdk's
//! database has no query by NUT-20 pubkey.
//!
//! Each key's quotes are a [`KvLog`] of quote ids (`kq<key hex>`, its hint
//! under `key_next` / `<key hex>`) in creation order, so a page of the
//! lookup is a run of point reads from a position. A quote's position is
//! its entry's, shifted left by [`ID_BITS`], plus its place in the entry.
//! `key_index` / `backfilled` is present once quotes created before this
//! index existed have been added.

use std::collections::BTreeMap;

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::QuoteId;
use ehash::LockingKey;

use crate::kv_log::{entry_ids, id_entries, KvLog, IDS_PER_ENTRY, ID_BITS};
use crate::quote_writer::{backfilled, begin_backfill, finish_backfill};
use crate::service::ehash_quotes_oldest_first;

const NEXT: &str = "key_next";
const META: &str = "key_index";

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
    quotes_of(&list, &key_hex)
        .append(tx, &id_entries(quote_ids))
        .await
}

/// Up to `n` quote ids of `key` from `position` on, in creation order, each
/// with its position.
pub async fn read(
    db: &DynMintDatabase,
    key: &LockingKey,
    position: u64,
    n: usize,
) -> Result<Vec<(u64, QuoteId)>, Error> {
    let (list, key_hex) = (format!("kq{key}"), key.to_string());
    let quotes = quotes_of(&list, &key_hex);
    let mut entry = position >> ID_BITS;
    let mut skip = (position & (IDS_PER_ENTRY as u64 - 1)) as usize;
    let mut found = Vec::with_capacity(n.min(IDS_PER_ENTRY));
    while found.len() < n {
        let Some(bytes) = quotes.read(db, entry, 1).await?.pop() else {
            break;
        };
        let ids = entry_ids(&bytes).ok_or_else(|| {
            Error::Internal(format!(
                "locking-key index: entry {entry} of {key} is not a list of quote ids"
            ))
        })?;
        let want = n - found.len();
        for (i, id) in ids.into_iter().enumerate().skip(skip).take(want) {
            found.push(((entry << ID_BITS) | i as u64, id));
        }
        skip = 0;
        entry += 1;
    }
    Ok(found)
}

/// Indexes, once, the ehash quotes created before the index existed, in
/// creation order. Runs before the mint serves, in the writers' turn (see
/// [`crate::quote_totals::backfill`]).
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if backfilled(&db, META).await? {
        return Ok(0);
    }
    let mut by_key = QuotesByKey::default();
    for quote in ehash_quotes_oldest_first(mint).await? {
        let key = quote.pubkey.map(|k| LockingKey::from_bytes(&k.to_bytes()));
        if let Some(Ok(key)) = key {
            by_key.add(key, quote.id);
        }
    }
    let Some(mut tx) = begin_backfill(&db, META).await? else {
        return Ok(0);
    };
    let indexed = by_key.append(&mut tx).await?;
    finish_backfill(tx, META).await?;
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

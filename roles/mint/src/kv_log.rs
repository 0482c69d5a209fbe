//! Append-only lists in the mint's KV store (namespace `ehash`): entries
//! numbered 0, 1, 2, ... in the order they were added, so a page is a run of
//! point reads from a position (cost: the page, not the list's length).
//!
//! - `<list>` / `<position, 16 hex digits>` -> entry
//! - `<hints>` / `<hint key>` -> the list's next free position (u64
//!   big-endian); a hint, since positions are found by probing from it
//!
//! Entries are only ever added; positions are dense.

use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;

use crate::service::KV_NAMESPACE;

/// Positions tried past a stale hint before giving up (the hint lags only
/// when another writer appended concurrently, by a few positions at most).
const MAX_PROBES: u64 = 1024;

/// One list: its namespace and where its next-position hint is kept.
pub struct KvLog<'a> {
    pub list: &'a str,
    pub hints: &'a str,
    pub hint_key: &'a str,
}

fn slot(position: u64) -> String {
    format!("{position:016x}")
}

fn corrupt(what: String) -> Error {
    Error::Internal(format!("KV list: {what}"))
}

impl KvLog<'_> {
    /// Adds `entry` at the end of the list, inside `tx`; returns its position.
    pub async fn append(&self, tx: &mut DynMintTransaction, entry: &[u8]) -> Result<u64, Error> {
        let hint = match tx.kv_read(KV_NAMESPACE, self.hints, self.hint_key).await? {
            None => 0,
            Some(bytes) => decode_position(&bytes)?,
        };
        for position in hint..hint.saturating_add(MAX_PROBES) {
            if tx
                .kv_write_if_absent(KV_NAMESPACE, self.list, &slot(position), entry)
                .await?
            {
                let next = (position + 1).to_be_bytes();
                tx.kv_write(KV_NAMESPACE, self.hints, self.hint_key, &next)
                    .await?;
                return Ok(position);
            }
        }
        Err(corrupt(format!(
            "no free position in {} after {hint}",
            self.list
        )))
    }

    /// Up to `n` entries from `position` on, in the order they were added.
    pub async fn read(
        &self,
        db: &DynMintDatabase,
        position: u64,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut entries = Vec::with_capacity(n.min(256));
        // A cursor near u64::MAX reads to the end of the range, never past it.
        let positions = (0..n as u64).map_while(|i| position.checked_add(i));
        for p in positions {
            let Some(bytes) = db.kv_read(KV_NAMESPACE, self.list, &slot(p)).await? else {
                break;
            };
            entries.push(bytes);
        }
        Ok(entries)
    }

    /// The number of entries (the first free position), probing from the hint.
    pub async fn len(&self, db: &DynMintDatabase) -> Result<u64, Error> {
        let mut position = match db.kv_read(KV_NAMESPACE, self.hints, self.hint_key).await? {
            None => 0,
            Some(bytes) => decode_position(&bytes)?,
        };
        while db
            .kv_read(KV_NAMESPACE, self.list, &slot(position))
            .await?
            .is_some()
        {
            position += 1;
        }
        Ok(position)
    }
}

fn decode_position(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("{}-byte position", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

//! Append-only lists in the mint's KV store (namespace `ehash`): entries
//! numbered 0, 1, 2, ... in the order they were added, so a page is a run of
//! point reads from a position (cost: the page, not the list's length).
//!
//! - `<list>` / `<position, 16 hex digits>` -> entry
//! - `<hints>` / `<hint key>` -> the list's next free position (u64
//!   big-endian); a hint, since positions are found by probing from it
//!
//! Entries are only ever added; positions are dense.
//!
//! A list of quote ids keeps up to [`IDS_PER_ENTRY`] ids an entry, one per
//! line ([`id_entries`], [`entry_ids`]): the quotes of one transaction cost
//! a statement per 64, not one each, and an entry stays within a database
//! page. An entry of one id, all that older mints wrote, reads the same.

use std::collections::HashMap;

use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::QuoteId;
use cdk_sql_common::database::DatabaseExecutor;
use cdk_sql_common::stmt::{query, Column};

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

/// Bits of a quote's place within its entry of a list of quote ids.
pub const ID_BITS: u32 = 6;
/// Most quote ids in one entry of a list of quote ids.
pub const IDS_PER_ENTRY: usize = 1 << ID_BITS;

/// `ids`, in order, as the entries of a list of quote ids.
pub fn id_entries(ids: &[QuoteId]) -> Vec<String> {
    ids.chunks(IDS_PER_ENTRY)
        .map(|ids| {
            let ids: Vec<String> = ids.iter().map(QuoteId::to_string).collect();
            ids.join("\n")
        })
        .collect()
}

/// The quote ids of one entry of a list of quote ids; `None` if it holds
/// anything else, or too many.
pub fn entry_ids(entry: &[u8]) -> Option<Vec<QuoteId>> {
    let ids: Vec<QuoteId> = std::str::from_utf8(entry)
        .ok()?
        .split('\n')
        .map(|id| id.parse().ok())
        .collect::<Option<_>>()?;
    (ids.len() <= IDS_PER_ENTRY).then_some(ids)
}

fn slot(position: u64) -> String {
    format!("{position:016x}")
}

fn corrupt(what: String) -> Error {
    Error::Internal(format!("KV list: {what}"))
}

impl KvLog<'_> {
    /// Adds `entries` at the end of the list, in order, inside `tx`: one
    /// read and one write of the hint for all of them, so a transaction
    /// that adds many entries pays for the hint once.
    pub async fn append<E: AsRef<[u8]>>(
        &self,
        tx: &mut DynMintTransaction,
        entries: &[E],
    ) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut position = match tx.kv_read(KV_NAMESPACE, self.hints, self.hint_key).await? {
            None => 0,
            Some(bytes) => decode_position(&bytes)?,
        };
        let mut probes = 0;
        for entry in entries {
            while !tx
                .kv_write_if_absent(KV_NAMESPACE, self.list, &slot(position), entry.as_ref())
                .await?
            {
                probes += 1;
                if probes >= MAX_PROBES {
                    return Err(corrupt(format!(
                        "no free position in {} up to {position}",
                        self.list
                    )));
                }
                position += 1;
            }
            position += 1;
        }
        tx.kv_write(
            KV_NAMESPACE,
            self.hints,
            self.hint_key,
            &position.to_be_bytes(),
        )
        .await
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

    /// The same entries as [`KvLog::read`], in one statement on `conn`, a
    /// connection to the database of cdk's KV store (its `kv_store` table).
    pub async fn read_on<E: DatabaseExecutor>(
        &self,
        conn: &E,
        position: u64,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let slots: Vec<String> = (0..n as u64)
            .map_while(|i| position.checked_add(i))
            .map(slot)
            .collect();
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let rows = query(
            "SELECT key, value FROM kv_store WHERE primary_namespace = :namespace \
             AND secondary_namespace = :list AND key IN (:slots)",
        )?
        .bind("namespace", KV_NAMESPACE)
        .bind("list", self.list)
        .bind_vec("slots", slots.clone())?
        .fetch_all(conn)
        .await?;
        let mut found: HashMap<String, Vec<u8>> = HashMap::with_capacity(rows.len());
        for row in rows {
            match <[Column; 2]>::try_from(row) {
                Ok([Column::Text(key), Column::Blob(value)]) => {
                    found.insert(key, value);
                }
                _ => return Err(corrupt(format!("{}: a row is no key and value", self.list))),
            }
        }
        // Entries up to the first free position, as `read` stops there.
        Ok(slots.iter().map_while(|s| found.remove(s)).collect())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LIST: KvLog<'static> = KvLog {
        list: "test_list",
        hints: "test_next",
        hint_key: "next",
    };

    fn entries(all: &[&str]) -> Vec<Vec<u8>> {
        all.iter().map(|e| e.as_bytes().to_vec()).collect()
    }

    #[tokio::test]
    async fn entries_added_together_or_past_a_stale_hint_keep_their_order() {
        let db: DynMintDatabase = Arc::new(cdk_sqlite::mint::memory::empty().await.unwrap());
        let mut tx = db.begin_transaction().await.unwrap();
        LIST.append(&mut tx, &["a", "b", "c"]).await.unwrap();
        tx.commit().await.unwrap();

        // A hint behind the end, as another writer's append leaves it.
        let mut tx = db.begin_transaction().await.unwrap();
        tx.kv_write(KV_NAMESPACE, LIST.hints, LIST.hint_key, &1u64.to_be_bytes())
            .await
            .unwrap();
        LIST.append(&mut tx, &["d", "e"]).await.unwrap();
        LIST.append::<&str>(&mut tx, &[]).await.unwrap();
        tx.commit().await.unwrap();

        let all = LIST.read(&db, 0, 10).await.unwrap();
        assert_eq!(all, entries(&["a", "b", "c", "d", "e"]));
        assert_eq!(LIST.read(&db, 3, 1).await.unwrap(), entries(&["d"]));
        assert_eq!(LIST.len(&db).await.unwrap(), 5);
        let hint = db.kv_read(KV_NAMESPACE, LIST.hints, LIST.hint_key).await;
        assert_eq!(hint.unwrap(), Some(5u64.to_be_bytes().to_vec()));
    }

    /// The same entries read in one statement, on another connection to a
    /// file database, as the quote totals read them.
    #[tokio::test]
    async fn one_statement_reads_what_point_reads_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.sqlite");
        let path = path.to_str().unwrap();
        let db: DynMintDatabase =
            Arc::new(cdk_sqlite::MintSqliteDatabase::new(path).await.unwrap());
        let mut tx = db.begin_transaction().await.unwrap();
        LIST.append(&mut tx, &["a", "b", "c", "d", "e"])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let pool =
            cdk_sql_common::pool::Pool::<cdk_sqlite::SqliteConnectionManager>::new(path.into());
        let conn = pool.get().await.unwrap();

        for (position, n) in [
            (0, 10),
            (0, 5),
            (1, 3),
            (4, 1),
            (5, 4),
            (2, 0),
            (u64::MAX - 1, 3),
        ] {
            assert_eq!(
                LIST.read_on(&*conn, position, n).await.unwrap(),
                LIST.read(&db, position, n).await.unwrap(),
                "{n} from {position}"
            );
        }
        assert_eq!(
            LIST.read_on(&*conn, 1, 3).await.unwrap(),
            entries(&["b", "c", "d"])
        );
    }
}

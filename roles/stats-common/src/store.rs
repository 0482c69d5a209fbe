//! The SQLite file of a stats service: 1-minute buckets of counters, records
//! (blocks, quotes), the service's saved state, and the spans when the
//! service itself was down.
//!
//! Downtime is found from a heartbeat: every write stamps `last_alive`; on
//! open, the span from the last stamp to now is recorded as a gap.
//!
//! Besides the retention (data older than it is pruned), [`StoreLimits`]
//! bound what the publisher's figures can make the file hold: per-miner
//! rows (key other than "") and records of each kind, the oldest going
//! first. Whole-pool rows (key "") are bounded by the retention alone, as
//! there are a few per minute.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::series::MINUTE_MS;

mod history;

pub use history::{History, KeySums, Record};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a store in memory has no readers")]
    InMemory,
}

/// One change for the store, produced by a service's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Adds `value` to the 1-minute bucket of `series` / `key` holding time `t`.
    Add {
        series: &'static str,
        key: String,
        t: i64,
        value: f64,
    },
    /// Inserts a record, or merges the fields of `data` (a JSON object) into
    /// the record of the same kind and id, keeping its first time `t`.
    Record {
        kind: &'static str,
        id: String,
        t: i64,
        data: serde_json::Value,
    },
}

impl Write {
    /// A [`Write::Add`].
    pub fn add(series: &'static str, key: impl Into<String>, t: i64, value: f64) -> Write {
        Write::Add {
            series,
            key: key.into(),
            t,
            value,
        }
    }
}

/// What the store keeps at most besides the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Rows of series keyed by a miner (or downstream): key other than "".
    pub max_per_miner_rows: u64,
    /// Records of each kind.
    pub max_records: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_per_miner_rows: crate::config::DEFAULT_MAX_PER_MINER_ROWS,
            max_records: crate::config::DEFAULT_MAX_RECORDS,
        }
    }
}

pub struct Store {
    /// The writer's connection, which it also reads through.
    history: History,
    /// The file, for readers; none for a store in memory.
    path: Option<PathBuf>,
    limits: StoreLimits,
    /// Rows of keyed series in the file.
    per_miner_rows: u64,
    /// Records in the file, per kind.
    records: HashMap<String, u64>,
    /// Times rows or records were deleted for the limits (for the log).
    evictions: u64,
}

/// How long a write waits for a reader's lock (rusqlite's default).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The meta key of [`Store::prune`]'s last cut-off.
pub(crate) const PRUNED_BEFORE: &str = "pruned_before";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    series TEXT NOT NULL,
    key TEXT NOT NULL,
    minute INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, key, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_by_minute ON buckets (minute);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    t INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS records_by_time ON records (kind, t);
CREATE TABLE IF NOT EXISTS downtime (from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL);
";

impl Store {
    /// Opens (or creates) `dir/file_name` and records the downtime since the
    /// file was last written.
    pub fn open(dir: &Path, file_name: &str, now: i64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(file_name);
        let conn = Connection::open(&path)?;
        // WAL: readers do not block the writer; NORMAL sync is durable
        // enough for statistics and much cheaper.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A log that grew while readers held it is cut back to this once
        // a checkpoint empties it.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        Self::init(conn, Some(path), now)
    }

    /// A store that lives in memory: it has no readers.
    #[cfg(test)]
    pub(crate) fn open_in_memory(now: i64) -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, None, now)
    }

    /// A read-only connection of its own, reading the store as it is now
    /// until dropped: what an HTTP request reads while ingest goes on.
    pub fn reader(&self) -> Result<History, StoreError> {
        let path = self.path.as_deref().ok_or(StoreError::InMemory)?;
        History::open_reader(path)
    }

    /// What the store holds, read on the writer's connection.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Makes every later write fail, as a full disk would.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self) {
        self.history
            .conn
            .execute_batch("DROP TABLE buckets")
            .unwrap();
    }

    fn init(conn: Connection, path: Option<PathBuf>, now: i64) -> Result<Store, StoreError> {
        conn.execute_batch(SCHEMA)?;
        let mut store = Store {
            history: History {
                conn,
                created_at: now,
                pruned_before: i64::MIN,
            },
            path,
            limits: StoreLimits::default(),
            per_miner_rows: 0,
            records: HashMap::new(),
            evictions: 0,
        };
        store.count()?;
        let history = &mut store.history;
        match history.meta_i64("created_at")? {
            Some(created) => history.created_at = created,
            None => store.set_meta("created_at", &now.to_string())?,
        }
        let history = &mut store.history;
        history.pruned_before = history.meta_i64(PRUNED_BEFORE)?.unwrap_or(i64::MIN);
        if let Some(last_alive) = history.meta_i64("last_alive")? {
            if last_alive < now {
                history.conn.execute(
                    "INSERT INTO downtime (from_ms, to_ms) VALUES (?1, ?2)",
                    params![last_alive, now],
                )?;
            }
        }
        store.alive(now)?;
        Ok(store)
    }

    /// Bounds what later writes may leave in the file; a file holding more
    /// already is cut down at the next [`Store::apply`].
    pub fn set_limits(&mut self, limits: StoreLimits) {
        self.limits = limits;
    }

    /// Rows of keyed (per-miner) series in the file.
    pub fn per_miner_rows(&self) -> u64 {
        self.per_miner_rows
    }

    /// Counts what the limits bound, from the file.
    fn count(&mut self) -> Result<(), StoreError> {
        self.per_miner_rows = self.history.conn.query_row(
            "SELECT COUNT(*) FROM buckets WHERE key != ''",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64;
        let mut stmt = self
            .history
            .conn
            .prepare("SELECT kind, COUNT(*) FROM records GROUP BY kind")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
        })?;
        self.records = rows.collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Stamps the heartbeat: the service is running at `now`.
    pub fn alive(&self, now: i64) -> Result<(), StoreError> {
        self.set_meta("last_alive", &now.to_string())
    }

    /// Applies `writes`, saves the service's `state` when given and stamps
    /// the heartbeat, in one transaction.
    pub fn apply(
        &mut self,
        writes: &[Write],
        state: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        // Counted apart and kept only if the transaction commits.
        let mut per_miner_rows = self.per_miner_rows;
        let mut records = self.records.clone();
        let tx = self.history.conn.transaction()?;
        write_all(&tx, writes, &mut per_miner_rows, &mut records)?;
        let evicted = evict(&tx, &self.limits, &mut per_miner_rows, &mut records)?;
        let mut upsert_meta =
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        if let Some(state) = state {
            upsert_meta.execute(params!["state", state])?;
        }
        upsert_meta.execute(params!["last_alive", now.to_string()])?;
        drop(upsert_meta);
        tx.commit()?;
        self.per_miner_rows = per_miner_rows;
        self.records = records;
        if evicted > 0 {
            self.evictions += 1;
            // Logged at the 1st, 2nd, 4th, 8th... time.
            if self.evictions.is_power_of_two() {
                tracing::warn!(
                    times = self.evictions,
                    "stats history at its limits ({} per-miner rows, {} records of a kind): \
                     deleted the oldest {evicted}",
                    self.limits.max_per_miner_rows,
                    self.limits.max_records
                );
            }
        }
        Ok(())
    }

    /// Deletes buckets, records and downtime older than `before`; returns
    /// how many rows went.
    pub fn prune(&mut self, before: i64) -> Result<usize, StoreError> {
        let tx = self.history.conn.transaction()?;
        let mut deleted = tx.execute(
            // The minute alone on one side, so its index is used.
            "DELETE FROM buckets WHERE minute <= ?1 - ?2",
            params![before, MINUTE_MS],
        )?;
        deleted += tx.execute("DELETE FROM records WHERE t < ?1", params![before])?;
        deleted += tx.execute("DELETE FROM downtime WHERE to_ms < ?1", params![before])?;
        let pruned_before = self.history.pruned_before.max(before);
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![PRUNED_BEFORE, pruned_before.to_string()],
        )?;
        tx.commit()?;
        self.history.pruned_before = pruned_before;
        if deleted > 0 {
            self.count()?;
        }
        self.empty_log()?;
        Ok(deleted)
    }

    /// Empties the write-ahead log, if no reader holds it: the automatic
    /// checkpoints cannot pass a reader, and readers (dashboards) that keep
    /// overlapping would let it grow. A reader present, it is tried again at
    /// the next prune: this never waits for readers, with ingest held up.
    fn empty_log(&self) -> Result<(), StoreError> {
        let conn = &self.history.conn;
        conn.busy_timeout(Duration::ZERO)?;
        // One row: whether a reader held the log, its pages, those copied.
        let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        });
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if checkpoint? != 0 {
            tracing::debug!("the stats log is held by a reader: emptied at a later prune");
        }
        Ok(())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.history.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }
}

/// Adds `writes` in `tx`, counting the keyed rows and records it inserts.
fn write_all(
    tx: &rusqlite::Transaction,
    writes: &[Write],
    per_miner_rows: &mut u64,
    records: &mut HashMap<String, u64>,
) -> Result<(), StoreError> {
    let mut add = tx.prepare_cached(
        "INSERT INTO buckets (series, key, minute, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (series, key, minute) DO UPDATE SET value = value + excluded.value",
    )?;
    // Keyed rows and records are updated, or else inserted and
    // counted: how many there are is what the limits bound.
    let mut update_keyed = tx.prepare_cached(
        "UPDATE buckets SET value = value + ?4
         WHERE series = ?1 AND key = ?2 AND minute = ?3",
    )?;
    let mut insert_keyed = tx.prepare_cached(
        "INSERT INTO buckets (series, key, minute, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut update_record = tx.prepare_cached(
        "UPDATE records SET data = json_patch(data, ?3) WHERE kind = ?1 AND id = ?2",
    )?;
    let mut insert_record =
        tx.prepare_cached("INSERT INTO records (kind, id, t, data) VALUES (?1, ?2, ?3, ?4)")?;
    for write in writes {
        match write {
            Write::Add {
                series,
                key,
                t,
                value,
            } => {
                let minute = t.div_euclid(MINUTE_MS) * MINUTE_MS;
                let row = params![series, key, minute, value];
                if key.is_empty() {
                    add.execute(row)?;
                } else if update_keyed.execute(row)? == 0 {
                    insert_keyed.execute(row)?;
                    *per_miner_rows += 1;
                }
            }
            Write::Record { kind, id, t, data } => {
                let data = data.to_string();
                if update_record.execute(params![kind, id, data])? == 0 {
                    insert_record.execute(params![kind, id, t, data])?;
                    *records.entry(kind.to_string()).or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

/// Deletes the oldest keyed rows and records past `limits` in `tx`;
/// returns how many.
fn evict(
    tx: &rusqlite::Transaction,
    limits: &StoreLimits,
    per_miner_rows: &mut u64,
    records: &mut HashMap<String, u64>,
) -> Result<u64, StoreError> {
    let mut evicted = 0;
    let excess = per_miner_rows.saturating_sub(limits.max_per_miner_rows);
    if excess > 0 {
        let n = tx.execute(
            "DELETE FROM buckets WHERE (series, key, minute) IN
             (SELECT series, key, minute FROM buckets WHERE key != ''
              ORDER BY minute LIMIT ?1)",
            params![excess as i64],
        )? as u64;
        *per_miner_rows -= n;
        evicted += n;
    }
    for (kind, count) in records.iter_mut() {
        let excess = count.saturating_sub(limits.max_records);
        if excess > 0 {
            let n = tx.execute(
                "DELETE FROM records WHERE rowid IN
                 (SELECT rowid FROM records WHERE kind = ?1 ORDER BY t, id LIMIT ?2)",
                params![kind, excess as i64],
            )? as u64;
            *count -= n;
            evicted += n;
        }
    }
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Gap;
    use serde_json::json;

    const T0: i64 = 1_795_000_020_000; // 20 s into a minute

    #[test]
    fn adds_land_in_one_minute_buckets_and_sum_per_step() {
        let mut store = Store::open_in_memory(T0).unwrap();
        let minute = T0 / MINUTE_MS * MINUTE_MS;
        store
            .apply(
                &[
                    Write::add("work", "a", minute, 10.0),
                    Write::add("work", "a", minute + 59_999, 5.0),
                    Write::add("work", "b", minute + 60_000, 7.0),
                    Write::add("work", "a", minute + 5 * MINUTE_MS, 1.0),
                    Write::add("other", "a", minute, 100.0),
                ],
                None,
                T0,
            )
            .unwrap();
        let end = minute + 10 * MINUTE_MS;
        let a = store
            .history()
            .sums("work", "a", minute, end, MINUTE_MS)
            .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[&minute], 15.0);
        assert_eq!(a.get(&(minute + MINUTE_MS)), None, "b's");
        assert_eq!(a[&(minute + 5 * MINUTE_MS)], 1.0);

        // Downsampled to 5-minute steps, aligned to multiples of the step.
        let step = 5 * MINUTE_MS;
        let coarse = store
            .history()
            .sums("work", "a", 0, i64::MAX, step)
            .unwrap();
        let first = minute / step * step;
        assert_eq!(coarse[&first], 15.0, "{coarse:?}");
        assert_eq!(coarse.values().sum::<f64>(), 16.0);

        let (by_key, keys) = store
            .history()
            .sums_by_key("work", (minute, end), MINUTE_MS, None, 10)
            .unwrap();
        assert_eq!(by_key["b"][&(minute + MINUTE_MS)], 7.0);
        assert_eq!(by_key["a"].len(), 2);
        assert_eq!(keys, 2);
        // The key with the most work first; one left out is still counted.
        let (top, keys) = store
            .history()
            .sums_by_key("work", (minute, end), MINUTE_MS, Some("nobody"), 1)
            .unwrap();
        assert_eq!(
            (top.keys().map(String::as_str).collect::<Vec<_>>(), keys),
            (vec!["a"], 2)
        );
        let (others, keys) = store
            .history()
            .sums_by_key("work", (minute, end), MINUTE_MS, Some("a"), 10)
            .unwrap();
        assert_eq!(
            (others.keys().map(String::as_str).collect::<Vec<_>>(), keys),
            (vec!["b"], 1)
        );
        assert_eq!(
            store.history().total("work", "a", minute, end).unwrap(),
            16.0
        );
        assert_eq!(
            store
                .history()
                .total("work", "a", minute, minute + 1)
                .unwrap(),
            15.0
        );
        assert_eq!(
            store.history().first_bucket("work", "b").unwrap(),
            Some(minute + MINUTE_MS)
        );
        assert_eq!(store.history().first_bucket("nothing", "").unwrap(), None);
    }

    #[test]
    fn records_merge_fields_and_keep_their_first_time() {
        let mut store = Store::open_in_memory(T0).unwrap();
        store
            .apply(
                &[Write::Record {
                    kind: "quote",
                    id: "q1".into(),
                    t: T0,
                    data: json!({"amount": 5, "received_at": T0}),
                }],
                None,
                T0,
            )
            .unwrap();
        store
            .apply(
                &[
                    Write::Record {
                        kind: "quote",
                        id: "q1".into(),
                        t: T0 + 9,
                        data: json!({"amount": 5, "minted_at": T0 + 9}),
                    },
                    Write::Record {
                        kind: "quote",
                        id: "q2".into(),
                        t: T0 + 1,
                        data: json!({"amount": 1}),
                    },
                ],
                None,
                T0,
            )
            .unwrap();
        let records = store.history().records("quote", 10).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "q2", "newest first");
        assert_eq!(records[1].t, T0);
        assert_eq!(
            records[1].data,
            json!({"amount": 5, "received_at": T0, "minted_at": T0 + 9})
        );
        assert_eq!(store.history().record_count("quote").unwrap(), 2);
        assert_eq!(store.history().records("quote", 1).unwrap().len(), 1);
    }

    #[test]
    fn reopening_keeps_history_and_state_and_records_the_downtime() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), "s.sqlite", T0).unwrap();
        store
            .apply(
                &[Write::add("work", "", T0, 42.0)],
                Some("{\"x\":1}"),
                T0 + 1_000,
            )
            .unwrap();
        assert!(store.history().gaps(0, i64::MAX).unwrap().is_empty());
        drop(store);

        let store = Store::open(dir.path(), "s.sqlite", T0 + 61_000).unwrap();
        assert_eq!(store.history().created_at(), T0);
        assert_eq!(
            store.history().state().unwrap().as_deref(),
            Some("{\"x\":1}")
        );
        assert_eq!(
            store.history().total("work", "", 0, i64::MAX).unwrap(),
            42.0
        );
        assert_eq!(
            store.history().gaps(0, i64::MAX).unwrap(),
            [Gap {
                from: T0 + 1_000,
                to: T0 + 61_000
            }]
        );
        // Only gaps overlapping the asked span.
        assert!(store
            .history()
            .gaps(T0 + 61_000, T0 + 90_000)
            .unwrap()
            .is_empty());
        store.alive(T0 + 70_000).unwrap();
        drop(store);

        let store = Store::open(dir.path(), "s.sqlite", T0 + 80_000).unwrap();
        assert_eq!(store.history().gaps(0, i64::MAX).unwrap().len(), 2);
        assert_eq!(
            store.history().gaps(T0 + 75_000, i64::MAX).unwrap()[0].from,
            T0 + 70_000
        );
    }

    #[test]
    fn a_reader_reads_one_snapshot_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let created = T0 - 60 * 86_400_000;
        let mut store = Store::open(dir.path(), "s.sqlite", created).unwrap();
        store
            .apply(&[Write::add("work", "", T0, 1.0)], None, T0)
            .unwrap();
        store.prune(T0 - 86_400_000).unwrap();

        let reader = store.reader().unwrap();
        assert_eq!(
            (reader.created_at(), reader.history_from()),
            (created, T0 - 86_400_000)
        );
        assert_eq!(reader.total("work", "", 0, i64::MAX).unwrap(), 1.0);
        // Writes and prunes commit with the reader open, which keeps its snapshot.
        store
            .apply(&[Write::add("work", "", T0, 2.0)], None, T0)
            .unwrap();
        store.prune(T0 - 1_000).unwrap();
        assert_eq!(reader.total("work", "", 0, i64::MAX).unwrap(), 1.0);
        let later = store.reader().unwrap();
        assert_eq!(later.total("work", "", 0, i64::MAX).unwrap(), 3.0);
        assert_eq!(later.history_from(), T0 - 1_000);
        // The log is emptied at a prune once no reader holds it.
        let wal = dir.path().join("s.sqlite-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        drop((reader, later));
        store.prune(T0 - 1_000).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        assert!(matches!(
            Store::open_in_memory(T0).unwrap().reader(),
            Err(StoreError::InMemory)
        ));
    }

    #[test]
    fn per_miner_rows_beyond_the_limit_go_oldest_first_and_whole_pool_rows_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), "s.sqlite", T0).unwrap();
        store.set_limits(StoreLimits {
            max_per_miner_rows: 3,
            max_records: 100,
        });
        let minute = |n: i64| T0 / MINUTE_MS * MINUTE_MS + n * MINUTE_MS;
        let mut writes = vec![];
        for n in 0..5 {
            writes.push(Write::add("work", format!("miner {n}"), minute(n), 1.0));
            writes.push(Write::add("work", "", minute(n), 1.0));
        }
        // Adding to a row that exists makes no new row.
        writes.push(Write::add("work", "miner 4", minute(4), 1.0));
        store.apply(&writes, None, T0).unwrap();
        assert_eq!(store.per_miner_rows(), 3);
        let (kept, _) = store
            .history()
            .sums_by_key("work", (0, i64::MAX), MINUTE_MS, Some(""), 10)
            .unwrap();
        let mut names: Vec<&String> = kept.keys().collect();
        names.sort();
        assert_eq!(names, ["miner 2", "miner 3", "miner 4"], "the newest kept");
        assert_eq!(
            store.history().total("work", "", 0, i64::MAX).unwrap(),
            5.0,
            "whole-pool history is not cut"
        );
        drop(store);

        // The count survives a restart, and the limit holds on.
        let mut store = Store::open(dir.path(), "s.sqlite", T0).unwrap();
        store.set_limits(StoreLimits {
            max_per_miner_rows: 3,
            max_records: 100,
        });
        assert_eq!(store.per_miner_rows(), 3);
        store
            .apply(&[Write::add("work", "miner 9", minute(9), 1.0)], None, T0)
            .unwrap();
        assert_eq!(store.per_miner_rows(), 3);
        assert_eq!(
            store
                .history()
                .total("work", "miner 2", 0, i64::MAX)
                .unwrap(),
            0.0
        );
        assert_eq!(
            store
                .history()
                .total("work", "miner 9", 0, i64::MAX)
                .unwrap(),
            1.0
        );
    }

    #[test]
    fn records_beyond_the_limit_go_oldest_first() {
        let mut store = Store::open_in_memory(T0).unwrap();
        store.set_limits(StoreLimits {
            max_per_miner_rows: 100,
            max_records: 2,
        });
        let record = |kind, id: &str, t| Write::Record {
            kind,
            id: id.into(),
            t,
            data: json!({"t": t}),
        };
        store
            .apply(
                &[
                    record("quote", "q1", T0),
                    record("quote", "q2", T0 + 1),
                    record("block", "b1", T0 - 5),
                    // A merge into a kept record is no new record.
                    record("quote", "q2", T0 + 9),
                    record("quote", "q3", T0 + 2),
                ],
                None,
                T0,
            )
            .unwrap();
        let ids: Vec<String> = store
            .history()
            .records("quote", 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["q3", "q2"]);
        assert_eq!(
            store.history().record_count("block").unwrap(),
            1,
            "kinds apart"
        );
    }

    #[test]
    fn pruning_drops_only_what_is_older_than_the_cutoff() {
        let mut store = Store::open_in_memory(T0).unwrap();
        let old = T0 - 40 * 86_400_000;
        store
            .apply(
                &[
                    Write::add("work", "", old, 1.0),
                    Write::add("work", "", T0, 2.0),
                    Write::Record {
                        kind: "block",
                        id: "old".into(),
                        t: old,
                        data: json!({}),
                    },
                    Write::Record {
                        kind: "block",
                        id: "new".into(),
                        t: T0,
                        data: json!({}),
                    },
                ],
                None,
                T0,
            )
            .unwrap();
        let cutoff = T0 - 30 * 86_400_000;
        store
            .apply(&[Write::add("work", "a", old, 1.0)], None, T0)
            .unwrap();
        assert_eq!(store.per_miner_rows(), 1);
        assert_eq!(store.prune(cutoff).unwrap(), 3);
        assert_eq!(store.per_miner_rows(), 0, "counted again after pruning");
        assert_eq!(store.history().total("work", "", 0, i64::MAX).unwrap(), 2.0);
        let blocks = store.history().records("block", 10).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].id, "new");
        assert_eq!(store.prune(cutoff).unwrap(), 0);
    }

    #[test]
    fn history_starts_where_the_last_prune_cut_even_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let created = T0 - 60 * 86_400_000;
        let mut store = Store::open(dir.path(), "s.sqlite", created).unwrap();
        assert_eq!(store.history().history_from(), created);
        let cutoff = T0 - 30 * 86_400_000;
        store.prune(cutoff).unwrap();
        assert_eq!(store.history().history_from(), cutoff);
        store.prune(cutoff - 1).unwrap();
        assert_eq!(store.history().history_from(), cutoff, "never moves back");
        drop(store);
        let store = Store::open(dir.path(), "s.sqlite", T0).unwrap();
        assert_eq!(
            (store.history().created_at(), store.history().history_from()),
            (created, cutoff)
        );
    }
}

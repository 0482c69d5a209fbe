//! Reading a stats store: chart sums, totals, records, downtime and the
//! saved state. The writer reads through its own connection; an HTTP
//! request through a read-only one of its own (see [`super::Store::reader`]), so a
//! slow query never holds up ingest.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{StoreError, PRUNED_BEFORE};
use crate::series::Gap;

/// Sums per key, then per step start.
pub type KeySums = HashMap<String, HashMap<i64, f64>>;

/// A stored record, as [`super::Write::Record`] made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub t: i64,
    pub data: serde_json::Value,
}

/// The store's history, read on one connection.
pub struct History {
    pub(super) conn: Connection,
    pub(super) created_at: i64,
    /// What the last prune deleted everything before (Unix ms).
    pub(super) pruned_before: i64,
}

impl History {
    /// A read-only connection to the store file at `path`, reading one
    /// snapshot of it (a read transaction) for as long as it lives.
    pub(super) fn open_reader(path: &Path) -> Result<History, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The first read below starts the snapshot.
        conn.execute_batch("BEGIN")?;
        let mut history = History {
            conn,
            created_at: 0,
            pruned_before: i64::MIN,
        };
        history.created_at = history.meta_i64("created_at")?.unwrap_or(0);
        history.pruned_before = history.meta_i64(PRUNED_BEFORE)?.unwrap_or(i64::MIN);
        Ok(history)
    }

    /// When this store was first created (Unix ms).
    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    /// Where its history starts: its creation, or what the last prune kept
    /// (before that, nothing is known, not nothing mined).
    pub fn history_from(&self) -> i64 {
        self.created_at.max(self.pruned_before)
    }

    /// The service state saved by the last [`super::Store::apply`].
    pub fn state(&self) -> Result<Option<String>, StoreError> {
        self.meta("state")
    }

    /// Sums of `series` / `key` per step of `step` ms (keyed by step start)
    /// over buckets in `[from, to)`.
    pub fn sums(
        &self,
        series: &str,
        key: &str,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<HashMap<i64, f64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT (minute / ?4) * ?4 AS t, SUM(value) FROM buckets
             WHERE series = ?1 AND key = ?5 AND minute >= ?2 AND minute < ?3
             GROUP BY t",
        )?;
        let rows = stmt.query_map(params![series, from, to, step, key], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, f64>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Like [`Self::sums`], per key, for the `limit` keys (other than
    /// `except`) with the most in the span; with how many keys have any.
    pub fn sums_by_key(
        &self,
        series: &str,
        span: (i64, i64),
        step: i64,
        except: Option<&str>,
        limit: usize,
    ) -> Result<(KeySums, u64), StoreError> {
        let (from, to) = span;
        let keys: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(DISTINCT key) FROM buckets
             WHERE series = ?1 AND minute >= ?2 AND minute < ?3 AND key IS NOT ?4",
            )?
            .query_row(params![series, from, to, except], |row| row.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "WITH top AS (
                SELECT key FROM buckets
                WHERE series = ?1 AND minute >= ?2 AND minute < ?3 AND key IS NOT ?5
                GROUP BY key ORDER BY SUM(value) DESC, key LIMIT ?6
             )
             SELECT key, (minute / ?4) * ?4 AS t, SUM(value) FROM buckets
             WHERE series = ?1 AND minute >= ?2 AND minute < ?3 AND key IN top
             GROUP BY key, t",
        )?;
        let mut out = KeySums::new();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![series, from, to, step, except, limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, f64>(2)?,
            ))
        })?;
        for row in rows {
            let (key, t, value) = row?;
            out.entry(key).or_default().insert(t, value);
        }
        Ok((out, keys.max(0) as u64))
    }

    /// The sum of `series` / `key` over buckets in `[from, to)`.
    pub fn total(&self, series: &str, key: &str, from: i64, to: i64) -> Result<f64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COALESCE(SUM(value), 0) FROM buckets
             WHERE series = ?1 AND key = ?4 AND minute >= ?2 AND minute < ?3",
        )?;
        Ok(stmt.query_row(params![series, from, to, key], |row| row.get(0))?)
    }

    /// The start of the earliest bucket of `series` / `key`.
    pub fn first_bucket(&self, series: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT MIN(minute) FROM buckets WHERE series = ?1 AND key = ?2")?;
        Ok(stmt.query_row(params![series, key], |row| row.get(0))?)
    }

    /// The newest `limit` records of `kind`, newest first.
    pub fn records(&self, kind: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, t, data FROM records WHERE kind = ?1 ORDER BY t DESC, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![kind, limit as i64], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t, data) = row?;
            // The store only ever writes JSON here; a hand-edited row reads as null.
            let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
            out.push(Record { id, t, data });
        }
        Ok(out)
    }

    /// How many records of `kind` are kept.
    pub fn record_count(&self, kind: &str) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM records WHERE kind = ?1")?;
        Ok(stmt.query_row(params![kind], |row| row.get::<_, i64>(0))? as u64)
    }

    /// The service's downtime spans that overlap `[from, to)`, oldest first.
    pub fn gaps(&self, from: i64, to: i64) -> Result<Vec<Gap>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT from_ms, to_ms FROM downtime WHERE from_ms < ?2 AND to_ms > ?1 ORDER BY from_ms",
        )?;
        let rows = stmt.query_map(params![from, to], |row| {
            Ok(Gap {
                from: row.get(0)?,
                to: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub(super) fn meta_i64(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()))
    }
}

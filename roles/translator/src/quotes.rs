//! Persisted record of every ehash quote the pool announced (0xC0) or
//! failed to create (0xC1), in a SQLite file of its own next to the wallet.
//!
//! A record is written before anything else happens with the quote, so a
//! crash never loses one: pending quotes are minted on the next start.
//!
//! States: `pending` (locked to the wallet's key, not minted yet),
//! `minted`, `foreign` (locked to a miner's own key: listed for that miner's
//! wallet to mint, never minted here).
//!
//! A mint batch is recorded here before its request leaves (its keyset, the
//! first secret counter of its outputs and its quotes in request order), and
//! closed with its quotes marked minted once their proofs are in the
//! wallet: a batch found open was interrupted, and its outputs can be
//! derived again to ask the mint what it signed. One process at a time
//! mints from a file's records ([`QuoteStore::take_minter`]): a second
//! would take the first's open batches for interrupted ones.
//!
//! Records of quotes done with (minted, or foreign) and of failures are
//! deleted once older than the translator's `keep_quotes_hours`
//! ([`QuoteStore::prune_all`]); pending ones stay until minted.
//!
//! It also keeps where the wallet's look-up of its key's quotes at a mint
//! goes on from, so a restarted proxy does not list every quote it ever had
//! (a busy one's run into the millions) again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ehash::lookup::Cursor;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};

/// The locking key recorded for a quote whose notification came on a
/// channel of no known key: a look-up that finds it locked to the wallet's
/// key records it as the wallet's.
pub const UNKNOWN_KEY: &str = "unknown";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteState {
    Pending,
    Minted,
    Foreign,
}

impl QuoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            QuoteState::Pending => "pending",
            QuoteState::Minted => "minted",
            QuoteState::Foreign => "foreign",
        }
    }

    fn parse(s: &str) -> QuoteState {
        match s {
            "minted" => QuoteState::Minted,
            "foreign" => QuoteState::Foreign,
            _ => QuoteState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRecord {
    pub quote_id: String,
    /// Share hash, hex of the SV2 (little-endian) bytes.
    pub share_hash: String,
    pub amount: u64,
    /// Locking key (compressed, hex).
    pub locking_key: String,
    pub keyset_id: String,
    pub channel_id: u32,
    pub sequence_number: u32,
    pub state: QuoteState,
    /// Unix seconds.
    pub created_at: u64,
    /// Last minting error, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub share_hash: String,
    pub channel_id: u32,
    pub sequence_number: u32,
    pub error_code: String,
    pub error_message: String,
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("quote records: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("quote records file: {0}")]
    File(#[from] std::io::Error),
    #[error(
        "{} is being minted from by another process{}: a translator on the same \
         data_dir or a `wallet claim`; one at a time",
        path.display(),
        roles_common::pid_lock::pid_note(*pid)
    )]
    MinterRunning { path: PathBuf, pid: Option<u32> },
    #[error("quote records: {0}")]
    MinterLock(roles_common::pid_lock::PidLockError),
}

/// A NUT-29 mint request as recorded before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintBatch {
    /// Assigned when the batch is recorded.
    pub id: i64,
    pub keyset_id: String,
    /// The secret counter of the batch's first output; the others follow
    /// on (the outputs carry the quotes' total).
    pub counter_start: u32,
    /// (quote id, amount), in the order of the request.
    pub quotes: Vec<(String, u64)>,
    /// When (unix seconds) the last request of it that may still reach the
    /// mint was sent: one that got no answer, or the first (a crash leaves
    /// its fate unknown). Set when the batch is recorded.
    pub unanswered_since: u64,
}

/// Sum of amounts and count of records by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub pending: (u64, u64),
    pub minted: (u64, u64),
    pub foreign: (u64, u64),
    pub failures: u64,
}

pub struct QuoteStore {
    conn: Mutex<Connection>,
    /// The file, if not in memory.
    path: Option<PathBuf>,
}

/// The lock file of the process minting from a quote records file, next to it.
const MINTER_LOCK_FILE: &str = "minter.lock";

/// Held by the one process minting from a quote records file, until dropped.
#[derive(Debug)]
pub struct MinterLock {
    _lock: Option<roles_common::pid_lock::PidLock>,
}

/// A quote the mint refused to mint waits this long (seconds) before it is
/// tried again, behind every quote not refused: one that can never be
/// minted (another mint's, say) must not hold up the others. The wait
/// doubles with each refusal, up to [`RETRY_REFUSED_MAX_SECS`]: one the
/// mint will never mint costs it a few requests an hour, not a minute.
pub const RETRY_REFUSED_SECS: u64 = 60;
pub const RETRY_REFUSED_MAX_SECS: u64 = 3_600;

/// Records [`QuoteStore::prune_all`] deletes in one transaction at most.
const PRUNE_CHUNK: usize = 2_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quotes (
    quote_id        TEXT PRIMARY KEY,
    share_hash      TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    locking_key     TEXT NOT NULL,
    keyset_id       TEXT NOT NULL,
    channel_id      INTEGER NOT NULL,
    sequence_number INTEGER NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_error      TEXT,
    failed_at       INTEGER,
    refusals        INTEGER
);
DROP INDEX IF EXISTS quotes_state;
CREATE INDEX IF NOT EXISTS quotes_state_created ON quotes(state, created_at);
CREATE TABLE IF NOT EXISTS quote_failures (
    share_hash      TEXT PRIMARY KEY,
    channel_id      INTEGER NOT NULL,
    sequence_number INTEGER NOT NULL,
    error_code      TEXT NOT NULL,
    error_message   TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quote_failures_created ON quote_failures(created_at);
CREATE TABLE IF NOT EXISTS mint_batches (
    batch_id        INTEGER PRIMARY KEY,
    keyset_id       TEXT NOT NULL,
    counter_start   INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    unanswered_at   INTEGER
);
CREATE TABLE IF NOT EXISTS mint_batch_quotes (
    quote_id        TEXT PRIMARY KEY,
    batch_id        INTEGER NOT NULL,
    position        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lookups (
    mint_url        TEXT NOT NULL,
    locking_key     TEXT NOT NULL,
    key_index       INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    PRIMARY KEY (mint_url, locking_key)
);
";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<QuoteRecord> {
    Ok(QuoteRecord {
        quote_id: row.get(0)?,
        share_hash: row.get(1)?,
        amount: row.get::<_, i64>(2)? as u64,
        locking_key: row.get(3)?,
        keyset_id: row.get(4)?,
        channel_id: row.get::<_, i64>(5)? as u32,
        sequence_number: row.get::<_, i64>(6)? as u32,
        state: QuoteState::parse(&row.get::<_, String>(7)?),
        created_at: row.get::<_, i64>(8)? as u64,
        last_error: row.get(9)?,
    })
}

const COLUMNS: &str = "quote_id, share_hash, amount, locking_key, keyset_id, channel_id, \
                       sequence_number, state, created_at, last_error";

/// Adds `column` (an INTEGER that may be NULL) to `table` of a file made
/// by a version without it.
fn add_column_if_missing(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<()> {
    if conn
        .prepare(&format!("SELECT {column} FROM {table} LIMIT 0"))
        .is_err()
    {
        conn.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {column} INTEGER"),
            [],
        )?;
    }
    Ok(())
}

/// Inserts quotes and failures in `tx`, as [`QuoteStore::record`] does.
fn insert(
    tx: &Transaction<'_>,
    quotes: &[QuoteRecord],
    failures: &[FailureRecord],
) -> Result<Vec<bool>, StoreError> {
    let mut new = Vec::with_capacity(quotes.len());
    // A quote first found at the mint (its notification late) is
    // completed by the notification; anything else is kept as it was.
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO quotes ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) \
         ON CONFLICT(quote_id) DO UPDATE SET share_hash = excluded.share_hash, \
         keyset_id = excluded.keyset_id, channel_id = excluded.channel_id, \
         sequence_number = excluded.sequence_number \
         WHERE quotes.share_hash = '' AND excluded.share_hash != ''"
    ))?;
    for r in quotes {
        let n = insert.execute(params![
            r.quote_id,
            r.share_hash,
            r.amount as i64,
            r.locking_key,
            r.keyset_id,
            r.channel_id as i64,
            r.sequence_number as i64,
            r.state.as_str(),
            r.created_at as i64,
            r.last_error,
        ])?;
        new.push(n == 1);
    }
    let mut insert_failure =
        tx.prepare_cached("INSERT OR IGNORE INTO quote_failures VALUES (?1,?2,?3,?4,?5,?6)")?;
    for f in failures {
        insert_failure.execute(params![
            f.share_hash,
            f.channel_id as i64,
            f.sequence_number as i64,
            f.error_code,
            f.error_message,
            f.created_at as i64,
        ])?;
    }
    Ok(new)
}

impl QuoteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        roles_common::private::create_file(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    /// Makes this process the one minting from the file's records, for as
    /// long as the lock lives; refused while another holds it. (A store in
    /// memory has no other process to keep out.)
    pub fn take_minter(&self) -> Result<MinterLock, StoreError> {
        use roles_common::pid_lock::{PidLock, PidLockError};
        let Some(path) = &self.path else {
            return Ok(MinterLock { _lock: None });
        };
        match PidLock::take(&path.with_file_name(MINTER_LOCK_FILE)) {
            Ok(lock) => Ok(MinterLock { _lock: Some(lock) }),
            Err(PidLockError::Held { pid, .. }) => Err(StoreError::MinterRunning {
                path: path.clone(),
                pid,
            }),
            Err(e) => Err(StoreError::MinterLock(e)),
        }
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA)?;
        // Files of versions before refused quotes were held back, and
        // before unanswered batches were sent again.
        add_column_if_missing(&conn, "quotes", "failed_at")?;
        add_column_if_missing(&conn, "quotes", "refusals")?;
        add_column_if_missing(&conn, "mint_batches", "unanswered_at")?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent.
        roles_common::lock(&self.conn)
    }

    /// Records a quote; `false` if it was already recorded (a replayed
    /// notification), which leaves the stored record as it was.
    pub fn insert(&self, r: &QuoteRecord) -> Result<bool, StoreError> {
        Ok(self.record(std::slice::from_ref(r), &[])?[0])
    }

    /// Records quotes and failures in one transaction (one disk sync);
    /// whether each quote was new (a replayed notification leaves its
    /// stored record as it was; a notification completes a record found at
    /// the mint first, and counts as new).
    pub fn record(
        &self,
        quotes: &[QuoteRecord],
        failures: &[FailureRecord],
    ) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let new = insert(&tx, quotes, failures)?;
        tx.commit()?;
        Ok(new)
    }

    /// Where the look-up of `key`'s quotes at `mint` goes on from (`None`:
    /// the start).
    pub fn lookup_cursor(&self, mint: &str, key: &str) -> Result<Option<Cursor>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT key_index, position FROM lookups WHERE mint_url = ?1 AND locking_key = ?2",
                [mint, key],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()?;
        Ok(row.map(|(key_index, position)| Cursor {
            key_index: key_index as u32,
            position: position as u64,
        }))
    }

    /// Records the quotes a page of the look-up of `key`'s quotes at `mint`
    /// found missing, and where the next look-up goes on from, in one
    /// transaction. A quote recorded with [`UNKNOWN_KEY`] becomes one of
    /// `quotes` (the key's, pending).
    pub fn record_looked_up(
        &self,
        mint: &str,
        key: &str,
        quotes: &[QuoteRecord],
        next: Option<Cursor>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut claim = tx.prepare_cached(
                "UPDATE quotes SET locking_key = ?2, state = ?3, last_error = ?4, amount = ?5 \
                 WHERE quote_id = ?1 AND locking_key = ?6",
            )?;
            for r in quotes {
                claim.execute(params![
                    r.quote_id,
                    r.locking_key,
                    r.state.as_str(),
                    r.last_error,
                    r.amount as i64,
                    UNKNOWN_KEY
                ])?;
            }
        }
        insert(&tx, quotes, &[])?;
        match next {
            Some(cursor) => tx.execute(
                "INSERT INTO lookups VALUES (?1, ?2, ?3, ?4) ON CONFLICT(mint_url, locking_key) \
                 DO UPDATE SET key_index = excluded.key_index, position = excluded.position",
                params![mint, key, cursor.key_index as i64, cursor.position as i64],
            )?,
            None => tx.execute(
                "DELETE FROM lookups WHERE mint_url = ?1 AND locking_key = ?2",
                [mint, key],
            )?,
        };
        tx.commit()?;
        Ok(())
    }

    /// Deletes the records of quotes done with (minted here, or foreign)
    /// and of failures created before `before` (unix seconds), a chunk per
    /// transaction with the store let go in between, until none is left or
    /// `stop()`; how many of each.
    pub fn prune_all(
        &self,
        before: u64,
        stop: impl Fn() -> bool,
    ) -> Result<(usize, usize), StoreError> {
        let (mut quotes, mut failures) = (0, 0);
        while !stop() {
            let (q, f) = self.prune(before, PRUNE_CHUNK)?;
            (quotes, failures) = (quotes + q, failures + f);
            if q < PRUNE_CHUNK && f < PRUNE_CHUNK {
                break;
            }
            // The store's lock is not fair: a waiting recorder gets a chance.
            std::thread::yield_now();
        }
        Ok((quotes, failures))
    }

    /// Deletes up to `limit` records of quotes done with created before
    /// `before`, and up to `limit` failures of then; how many of each.
    fn prune(&self, before: u64, limit: usize) -> Result<(usize, usize), StoreError> {
        let conn = self.conn();
        let (before, limit) = (before as i64, limit as i64);
        let quotes = conn.execute(
            "DELETE FROM quotes WHERE rowid IN (SELECT rowid FROM quotes \
             WHERE state IN ('minted', 'foreign') AND created_at < ?1 LIMIT ?2)",
            params![before, limit],
        )?;
        let failures = conn.execute(
            "DELETE FROM quote_failures WHERE rowid IN \
             (SELECT rowid FROM quote_failures WHERE created_at < ?1 LIMIT ?2)",
            params![before, limit],
        )?;
        Ok((quotes, failures))
    }

    /// Which of `quote_ids` are recorded with their key (not with
    /// [`UNKNOWN_KEY`]).
    pub fn known(&self, quote_ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let conn = self.conn();
        let mut known = HashSet::new();
        for chunk in quote_ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT quote_id FROM quotes WHERE quote_id IN ({marks}) AND locking_key != '{UNKNOWN_KEY}'"
            ))?;
            let rows = stmt.query_map(params_from_iter(chunk), |row| row.get::<_, String>(0))?;
            for id in rows {
                known.insert(id?);
            }
        }
        Ok(known)
    }

    /// One quote's record (the tests' view: the translator asks in bulk).
    #[cfg(test)]
    pub fn get(&self, quote_id: &str) -> Result<Option<QuoteRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM quotes WHERE quote_id = ?1"),
                [quote_id],
                row_to_record,
            )
            .optional()?)
    }

    /// Up to `limit` quotes locked to `key` waiting to be minted and in no
    /// open batch, oldest first: those the mint never refused, then those
    /// whose wait since it last refused them is over (see
    /// [`RETRY_REFUSED_SECS`]). Quotes of another
    /// key (a wallet whose mnemonic changed) wait apart: they must not take
    /// the places of the wallet's own.
    pub fn pending(&self, key: &str, limit: usize) -> Result<Vec<QuoteRecord>, StoreError> {
        let conn = self.conn();
        let query = |refused: &str| {
            format!(
                "SELECT {COLUMNS} FROM quotes WHERE state = 'pending' AND locking_key = ?2 \
                 AND {refused} AND quote_id NOT IN (SELECT quote_id FROM mint_batch_quotes) \
                 ORDER BY created_at, rowid LIMIT ?1"
            )
        };
        let mut stmt = conn.prepare_cached(&query("failed_at IS NULL"))?;
        let rows = stmt.query_map(params![limit as i64, key], row_to_record)?;
        let mut quotes = rows.collect::<Result<Vec<_>, _>>()?;
        if quotes.len() < limit {
            let now = roles_common::unix_secs();
            let left = limit - quotes.len();
            let waited = "failed_at + MIN(?4 << MIN(COALESCE(refusals, 1) - 1, 16), ?5) <= ?3";
            let mut stmt = conn.prepare_cached(&query(waited))?;
            let rows = stmt.query_map(
                params![
                    left as i64,
                    key,
                    now as i64,
                    RETRY_REFUSED_SECS as i64,
                    RETRY_REFUSED_MAX_SECS as i64
                ],
                row_to_record,
            )?;
            quotes.extend(rows.collect::<Result<Vec<_>, _>>()?);
        }
        Ok(quotes)
    }

    /// Every quote, oldest first.
    pub fn all(&self) -> Result<Vec<QuoteRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM quotes ORDER BY created_at, rowid"
        ))?;
        let rows = stmt.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` quotes, the oldest of them first.
    pub fn newest(&self, limit: usize) -> Result<Vec<QuoteRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS}, rowid AS r FROM quotes \
             ORDER BY created_at DESC, rowid DESC LIMIT ?1) ORDER BY created_at, r"
        ))?;
        let rows = stmt.query_map([limit as i64], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` failures, the oldest of them first.
    pub fn newest_failures(&self, limit: usize) -> Result<Vec<FailureRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT share_hash, channel_id, sequence_number, error_code, error_message, created_at \
             FROM (SELECT *, rowid AS r FROM quote_failures \
             ORDER BY created_at DESC, rowid DESC LIMIT ?1) ORDER BY created_at, r",
        )?;
        let rows = stmt.query_map([limit as i64], |row| {
            Ok(FailureRecord {
                share_hash: row.get(0)?,
                channel_id: row.get::<_, i64>(1)? as u32,
                sequence_number: row.get::<_, i64>(2)? as u32,
                error_code: row.get(3)?,
                error_message: row.get(4)?,
                created_at: row.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks quotes minted (in one transaction).
    pub fn mark_minted(&self, quote_ids: &[String]) -> Result<(), StoreError> {
        self.close_batches(&[], quote_ids)
    }

    /// Records batches about to be requested (one transaction); `batches`
    /// get their ids.
    pub fn open_batches(&self, batches: &mut [MintBatch]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = roles_common::unix_secs();
        for batch in batches.iter_mut() {
            tx.execute(
                "INSERT INTO mint_batches (keyset_id, counter_start, created_at) VALUES (?1,?2,?3)",
                params![batch.keyset_id, batch.counter_start, now as i64],
            )?;
            batch.id = tx.last_insert_rowid();
            batch.unanswered_since = now;
            let mut insert = tx.prepare_cached(
                "INSERT INTO mint_batch_quotes (quote_id, batch_id, position) VALUES (?1,?2,?3)",
            )?;
            for (position, (quote_id, _)) in batch.quotes.iter().enumerate() {
                insert.execute(params![quote_id, batch.id, position as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The batches recorded and not closed, oldest first.
    pub fn batches(&self) -> Result<Vec<MintBatch>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT batch_id, keyset_id, counter_start, COALESCE(unanswered_at, created_at) \
             FROM mint_batches ORDER BY batch_id",
        )?;
        let mut batches = stmt
            .query_map([], |row| {
                Ok(MintBatch {
                    id: row.get(0)?,
                    keyset_id: row.get(1)?,
                    counter_start: row.get(2)?,
                    quotes: vec![],
                    unanswered_since: row.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut quotes = conn.prepare(
            "SELECT q.quote_id, q.amount FROM mint_batch_quotes b \
             JOIN quotes q ON q.quote_id = b.quote_id WHERE b.batch_id = ?1 ORDER BY b.position",
        )?;
        for batch in &mut batches {
            batch.quotes = quotes
                .query_map([batch.id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(batches)
    }

    /// A request of the batch sent at `at` (unix seconds) got no answer: it
    /// may still reach the mint.
    pub fn unanswered(&self, batch_id: i64, at: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE mint_batches SET unanswered_at = ?2 WHERE batch_id = ?1",
            params![batch_id, at as i64],
        )?;
        Ok(())
    }

    /// Closes batches (one transaction): `minted` quotes are marked minted,
    /// the batches' other quotes are pending again.
    pub fn close_batches(&self, batch_ids: &[i64], minted: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for id in minted {
            tx.execute(
                "UPDATE quotes SET state = 'minted', last_error = NULL WHERE quote_id = ?1",
                [id],
            )?;
        }
        for id in batch_ids {
            tx.execute("DELETE FROM mint_batch_quotes WHERE batch_id = ?1", [id])?;
            tx.execute("DELETE FROM mint_batches WHERE batch_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Why the last attempt to mint a quote failed (it is tried again in
    /// the next round).
    pub fn set_error(&self, quote_id: &str, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE quotes SET last_error = ?2 WHERE quote_id = ?1",
            params![quote_id, error],
        )?;
        Ok(())
    }

    /// The amount the mint holds for a quote recorded with another (the
    /// notice of it was wrong): it is minted, and counted, at the mint's.
    pub fn set_amount(&self, quote_id: &str, amount: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE quotes SET amount = ?2 WHERE quote_id = ?1",
            params![quote_id, amount as i64],
        )?;
        Ok(())
    }

    /// The mint refused to mint a quote, for `error`: it waits behind the
    /// others, longer with each refusal ([`RETRY_REFUSED_SECS`]).
    pub fn set_refused(&self, quote_id: &str, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE quotes SET last_error = ?2, failed_at = ?3, \
             refusals = COALESCE(refusals, 0) + 1 WHERE quote_id = ?1",
            params![quote_id, error, roles_common::unix_secs() as i64],
        )?;
        Ok(())
    }

    pub fn totals(&self) -> Result<Totals, StoreError> {
        let conn = self.conn();
        let mut t = Totals::default();
        let mut stmt = conn.prepare(
            "SELECT state, COUNT(*), COALESCE(SUM(amount), 0) FROM quotes GROUP BY state",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, i64>(2)? as u64,
            ))
        })?;
        for row in rows {
            let (state, count, sum) = row?;
            match QuoteState::parse(&state) {
                QuoteState::Pending => t.pending = (count, sum),
                QuoteState::Minted => t.minted = (count, sum),
                QuoteState::Foreign => t.foreign = (count, sum),
            }
        }
        t.failures = conn.query_row("SELECT COUNT(*) FROM quote_failures", [], |r| {
            r.get::<_, i64>(0)
        })? as u64;
        Ok(t)
    }
}

#[cfg(test)]
mod tests;

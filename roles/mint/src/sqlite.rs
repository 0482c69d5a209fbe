//! The mint's SQLite database: cdk's own (`cdk-sqlite` under cdk's SQL
//! layer), except that its writers take turns in the process.
//!
//! SQLite lets one transaction write at a time, and cdk begins every
//! transaction `IMMEDIATE`. A transaction that finds another writing waits
//! in SQLite's busy handler, which sleeps 1, 2, 5, ... up to 100 ms
//! between tries whatever the other does. Under load (the quote writer's
//! groups and the wallets' batch mints) that left writers asleep while the
//! database was free, and a quote waited for a sleeper, not for a writer.
//!
//! Here a transaction first takes the process's writers' turn, a fair
//! queue that wakes the next writer when one commits or rolls back, and
//! only then begins in SQLite: writers of this process never meet in the
//! busy handler. A write outside a transaction (cdk marks each quote of
//! a batch mint checked that way) takes the turn for its one statement;
//! reads never do, and other processes still meet in the busy handler.
//! The turn is given up with the transaction, or with the connection if
//! cdk discards it.
//!
//! That mark ([`CLAIM_CHECK`]) only changes a quote whose payment check is
//! due, which this mint's quotes never are: it is first read, without the
//! turn, and made only where it would change a row. A batch mint of a
//! thousand quotes otherwise waited a thousand turns, each behind a group
//! of quotes, and minting starved while the mint quoted.
//!
//! A file database's WAL is checkpointed (its pages copied into the
//! database file, which is then synced) by a thread of its own, at the
//! pace of [`Checkpoints::PACE`] (every 200 ms), never by a writer:
//! SQLite's automatic checkpoint runs inside the commit that crosses a
//! thousand pages, so that writer, and every quote queued behind its turn,
//! waited for thousands of pages to be copied and a second sync. The
//! thread copies the bulk while the writers go on. Every few checkpoints
//! (once a second), or sooner once the WAL holds more than 64 MiB, it then
//! takes the turn to copy the few pages they wrote meanwhile: the WAL is
//! then all copied, and the next writer starts it over instead of growing
//! it for ever. Not at every checkpoint, since the writers wait out that
//! copy and the database file's sync (tens of ms on a busy disk). While
//! writes go on, the WAL's file keeps the largest size it reached (a
//! hundred MB after a burst of thousands of quotes a second): writing over
//! it is cheaper than growing it. Once a whole second passes without a
//! write, the file is emptied. Commits stay durable as before
//! (`synchronous = FULL`, the WAL synced at every commit).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cdk_common::database::Error;
use cdk_sql_common::database::{DatabaseConnector, DatabaseExecutor, DatabaseTransaction};
use cdk_sql_common::pool::{self, DatabaseConfig, DatabasePool};
use cdk_sql_common::stmt::{query, Column, PlaceholderValue, SqlPart, Statement};
use cdk_sql_common::value::Value;
use cdk_sql_common::SQLMintDatabase;
use cdk_sqlite::SqliteConnectionManager;
use futures::FutureExt;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{debug, warn};

/// The mint's SQLite database.
pub type MintSqlite = SQLMintDatabase<WriterTurns>;

type Sqlite = <SqliteConnectionManager as DatabasePool>::Connection;
type SqliteConfig = <SqliteConnectionManager as DatabasePool>::Config;
type SqliteTransaction = <Sqlite as DatabaseConnector>::Transaction;

/// How long a transaction waits for its turn before failing, as long as
/// cdk lets SQLite's busy handler wait.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// cdk's claim of a quote's payment check (whitespace aside), made for
/// every quote of a batch mint outside its transaction.
const CLAIM_CHECK: &str = "UPDATE mint_quote SET last_checked = :last_checked \
    WHERE id = :quote_id AND last_checked < :threshold";
/// Whether [`CLAIM_CHECK`] would change a row.
const CLAIM_DUE: &str =
    "SELECT COUNT(*) FROM mint_quote WHERE id = :quote_id AND last_checked < :threshold";

/// When the checkpointer runs, and when it takes the writers' turn.
#[derive(Debug, Clone, Copy)]
struct Checkpoints {
    /// How often it copies the WAL into a file database. At a thousand
    /// quotes a second the WAL grows by a few megabytes meanwhile.
    every: Duration,
    /// How many checkpoints it makes per one under the writers' turn,
    /// which lets the WAL start over.
    turn_every: u64,
    /// How much the WAL may hold (bytes) before it takes the turn at its
    /// next checkpoint, whatever the round.
    wal_limit: u64,
}

impl Checkpoints {
    const PACE: Checkpoints = Checkpoints {
        every: Duration::from_millis(200),
        turn_every: 5,
        wal_limit: 64 << 20,
    };
}

/// What a WAL frame holds besides its page.
const WAL_FRAME_HEADER: u64 = 24;

/// Opens (and migrates) the database at `path` (`:memory:` for one that
/// lives in the process).
pub async fn open(path: &str) -> Result<MintSqlite, Error> {
    open_checkpointing(path, Checkpoints::PACE).await
}

async fn open_checkpointing(path: &str, pace: Checkpoints) -> Result<MintSqlite, Error> {
    let config = TurnsConfig {
        sqlite: path.into(),
        turn: Arc::new(Mutex::new(())),
        on_file: !path.contains(":memory:"),
        open: Arc::new(()),
    };
    let db = MintSqlite::new(config.clone()).await?;
    if config.on_file {
        checkpoint_in_background(&config, pace)?;
    }
    Ok(db)
}

/// cdk-sqlite's connections, each knowing the one turn of the pool.
#[derive(Debug)]
pub struct WriterTurns;

#[derive(Debug, Clone)]
pub struct TurnsConfig {
    sqlite: SqliteConfig,
    turn: Arc<Mutex<()>>,
    /// A file database (cdk-sqlite's rule: `:memory:` anywhere is not).
    on_file: bool,
    /// Alive while the pool (which holds its config) is: the checkpointer
    /// stops once it is gone.
    open: Arc<()>,
}

impl DatabaseConfig for TurnsConfig {
    fn max_size(&self) -> usize {
        self.sqlite.max_size()
    }

    fn default_timeout(&self) -> Duration {
        self.sqlite.default_timeout()
    }
}

impl DatabasePool for WriterTurns {
    type Connection = Connection;
    type Config = TurnsConfig;
    type Error = Error;

    fn new_resource(
        config: &TurnsConfig,
        stale: Arc<AtomicBool>,
        timeout: Duration,
    ) -> Result<Connection, pool::Error<Error>> {
        let sqlite = sqlite_connection(&config.sqlite, stale, timeout)?;
        if config.on_file {
            // The checkpointer's work, never a writer's.
            run_now(sqlite.batch(query("PRAGMA wal_autocheckpoint = 0")?))?;
        }
        Ok(Connection {
            sqlite,
            turn: config.turn.clone(),
            held: None,
        })
    }
}

/// A connection of cdk-sqlite's, with cdk's settings.
fn sqlite_connection(
    config: &SqliteConfig,
    stale: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<Sqlite, pool::Error<Error>> {
    SqliteConnectionManager::new_resource(config, stale, timeout).map_err(|e| match e {
        pool::Error::Poison => pool::Error::Poison,
        pool::Error::Timeout => pool::Error::Timeout,
        pool::Error::Resource(e) => pool::Error::Resource(Error::Database(Box::new(e))),
    })
}

/// Runs a statement on a connection only its caller uses (a new one, or
/// the checkpointer's). cdk-sqlite runs SQLite synchronously under the
/// connection's lock, so the future is ready at its first poll.
fn run_now<T>(statement: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    statement
        .now_or_never()
        .unwrap_or_else(|| Err(Error::Internal("a connection of one user was busy".into())))
}

/// Starts the thread that checkpoints the WAL of `config`'s database at
/// `pace`, on a connection of its own, until the pool is gone.
fn checkpoint_in_background(config: &TurnsConfig, pace: Checkpoints) -> Result<(), Error> {
    let sqlite = sqlite_connection(
        &config.sqlite,
        Arc::new(AtomicBool::new(false)),
        config.sqlite.default_timeout(),
    )
    .map_err(|e| Error::Internal(format!("checkpointer's connection: {e}")))?;
    let open = Arc::downgrade(&config.open);
    let turn = config.turn.clone();
    std::thread::Builder::new()
        .name("mint-checkpoint".into())
        .spawn(move || checkpoint_every(&sqlite, &turn, pace, &open))
        .map_err(|e| Error::Internal(format!("checkpointer's thread: {e}")))?;
    Ok(())
}

fn checkpoint_every(sqlite: &Sqlite, turn: &Mutex<()>, pace: Checkpoints, open: &Weak<()>) {
    let frame = wal_frame_size(sqlite);
    let mut failing = false;
    // The WAL as the last checkpoint under the turn left it.
    let mut last_full = None;
    for round in 1u64.. {
        std::thread::sleep(pace.every);
        if open.strong_count() == 0 {
            return;
        }
        let bulk = checkpoint(sqlite);
        let wal_full = matches!(&bulk, Ok(row) if wal_frames(row) * frame > pace.wal_limit);
        let checkpointed = if round % pace.turn_every == 0 || wal_full {
            let _turn = turn.blocking_lock();
            let full = bulk.and(checkpoint(sqlite));
            match full {
                // Nothing written since the last one, all copied: the file
                // is given back, until the next write starts it over.
                Ok(row) if all_copied(&row) && last_full.as_ref() == Some(&row) => {
                    last_full = None;
                    truncate(sqlite)
                }
                Ok(row) => {
                    last_full = Some(row.clone());
                    Ok(row)
                }
                Err(e) => Err(e),
            }
        } else {
            bulk
        };
        match checkpointed {
            Ok(row) => {
                if failing {
                    warn!("the mint database's checkpoints work again");
                }
                failing = false;
                debug!(?row, "mint database checkpoint: (busy, WAL pages, copied)");
            }
            Err(e) if !failing => {
                failing = true;
                warn!("cannot checkpoint the mint database, its WAL grows until it can: {e}");
            }
            Err(_) => {}
        }
    }
}

/// Copies the WAL's pages that no reader still needs, waiting for no one.
fn checkpoint(sqlite: &Sqlite) -> Result<Option<Vec<Column>>, Error> {
    run_now(sqlite.fetch_one(query("PRAGMA wal_checkpoint(PASSIVE)")?))
}

/// Empties the WAL's file once it is all copied. Without waiting for
/// readers (busy_timeout 0): SQLite holds the write lock while it waits,
/// and a reader still on the WAL only means another try later.
fn truncate(sqlite: &Sqlite) -> Result<Option<Vec<Column>>, Error> {
    run_now(sqlite.batch(query("PRAGMA busy_timeout = 0")?))?;
    run_now(sqlite.fetch_one(query("PRAGMA wal_checkpoint(TRUNCATE)")?))
}

/// The bytes a WAL frame takes: its header and one page.
fn wal_frame_size(sqlite: &Sqlite) -> u64 {
    let page = query("PRAGMA page_size").and_then(|page| run_now(sqlite.pluck(page)));
    let page = match page {
        Ok(Some(Value::Integer(page))) => page.unsigned_abs(),
        _ => 4096, // SQLite's default
    };
    page + WAL_FRAME_HEADER
}

/// How many frames the WAL holds, from a checkpoint's (busy, WAL frames,
/// copied) row.
fn wal_frames(row: &Option<Vec<Column>>) -> u64 {
    match row.as_deref() {
        Some([_, Value::Integer(frames), ..]) => frames.unsigned_abs(),
        _ => 0,
    }
}

/// Whether a checkpoint's (busy, WAL frames, copied) row copied a WAL that
/// holds frames, all of them.
fn all_copied(row: &Option<Vec<Column>>) -> bool {
    match row.as_deref() {
        Some([Value::Integer(0), Value::Integer(frames), Value::Integer(copied)]) => {
            *frames > 0 && copied == frames
        }
        _ => false,
    }
}

/// A cdk-sqlite connection; `held` while its transaction is open.
#[derive(Debug)]
pub struct Connection {
    sqlite: Sqlite,
    turn: Arc<Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl Connection {
    /// The turn for one statement that may write: outside a transaction,
    /// SQLite makes it a transaction of its own. Inside one, the
    /// transaction holds the turn already.
    async fn turn_for_statement(&self) -> Result<Option<OwnedMutexGuard<()>>, Error> {
        match self.held {
            Some(_) => Ok(None),
            None => take_turn(&self.turn).await.map(Some),
        }
    }
}

/// The read that tells whether `statement` would change a row, where it is
/// cdk's [`CLAIM_CHECK`].
fn claim_due(statement: &Statement) -> Option<Statement> {
    let mut shape = String::new();
    for part in &statement.parts {
        match part {
            SqlPart::Raw(sql) => shape.push_str(sql),
            SqlPart::Placeholder(name, _) => {
                shape.push(':');
                shape.push_str(name);
            }
        }
    }
    if !shape.split_whitespace().eq(CLAIM_CHECK.split_whitespace()) {
        return None;
    }
    let mut due = query(CLAIM_DUE).ok()?;
    for part in &statement.parts {
        if let SqlPart::Placeholder(name, Some(PlaceholderValue::Value(value))) = part {
            due = due.bind(name, value.clone());
        }
    }
    Some(due)
}

impl DatabaseConnector for Connection {
    type Transaction = TakeTurn;
}

/// Waits for the writers' turn, at most [`TURN_TIMEOUT`].
async fn take_turn(turn: &Arc<Mutex<()>>) -> Result<OwnedMutexGuard<()>, Error> {
    tokio::time::timeout(TURN_TIMEOUT, turn.clone().lock_owned())
        .await
        .map_err(|_| {
            Error::Internal(format!(
                "no turn to write to the database within {TURN_TIMEOUT:?}"
            ))
        })
}

/// Begins after taking the turn; gives it up once the transaction is over.
pub struct TakeTurn;

#[async_trait::async_trait]
impl DatabaseTransaction<Connection> for TakeTurn {
    async fn begin(conn: &mut Connection) -> Result<(), Error> {
        let turn = take_turn(&conn.turn).await?;
        SqliteTransaction::begin(&mut conn.sqlite).await?;
        conn.held = Some(turn);
        Ok(())
    }

    async fn commit(conn: &mut Connection) -> Result<(), Error> {
        // A failed commit leaves the transaction open: cdk rolls it back
        // (or discards the connection), and the turn goes with that.
        SqliteTransaction::commit(&mut conn.sqlite).await?;
        conn.held = None;
        Ok(())
    }

    async fn rollback(conn: &mut Connection) -> Result<(), Error> {
        let rolled_back = SqliteTransaction::rollback(&mut conn.sqlite).await;
        if rolled_back.is_ok() {
            conn.held = None;
        }
        rolled_back
    }
}

#[async_trait::async_trait]
impl DatabaseExecutor for Connection {
    fn name() -> &'static str {
        Sqlite::name()
    }

    async fn execute(&self, statement: Statement) -> Result<usize, Error> {
        // Inside a transaction the turn is held already: nothing to spare.
        if let Some(due) = self.held.is_none().then(|| claim_due(&statement)).flatten() {
            // A claim that would change no row now is answered as if it
            // had been made at the moment of this read.
            if let Some(Value::Integer(0)) = self.sqlite.pluck(due).await? {
                return Ok(0);
            }
        }
        let _turn = self.turn_for_statement().await?;
        self.sqlite.execute(statement).await
    }

    async fn fetch_one(&self, statement: Statement) -> Result<Option<Vec<Column>>, Error> {
        self.sqlite.fetch_one(statement).await
    }

    async fn fetch_all(&self, statement: Statement) -> Result<Vec<Vec<Column>>, Error> {
        self.sqlite.fetch_all(statement).await
    }

    async fn pluck(&self, statement: Statement) -> Result<Option<Column>, Error> {
        self.sqlite.pluck(statement).await
    }

    async fn batch(&self, statement: Statement) -> Result<(), Error> {
        let _turn = self.turn_for_statement().await?;
        self.sqlite.batch(statement).await
    }
}

#[cfg(test)]
mod tests {
    use cdk_common::database::mint::QuotesDatabase;
    use cdk_common::database::{KVStoreDatabase, MintDatabase};

    use super::*;
    use crate::service::KV_NAMESPACE;

    /// A database on a file, and the turn its writers take.
    async fn database(dir: &tempfile::TempDir) -> (MintSqlite, Arc<Mutex<()>>) {
        let turn = Arc::new(Mutex::new(()));
        let path = dir.path().join("mint.sqlite");
        let config = TurnsConfig {
            sqlite: path.to_str().unwrap().into(),
            turn: turn.clone(),
            on_file: true,
            open: Arc::new(()),
        };
        (MintSqlite::new(config).await.unwrap(), turn)
    }

    /// A database on a file in `dir` whose WAL is checkpointed at `pace`,
    /// and its path.
    async fn checkpointing(
        dir: &tempfile::TempDir,
        pace: Checkpoints,
    ) -> (MintSqlite, std::path::PathBuf) {
        let path = dir.path().join("mint.sqlite");
        let db = open_checkpointing(path.to_str().unwrap(), pace)
            .await
            .unwrap();
        (db, path)
    }

    /// The shipped pace, checkpointing `every`.
    fn checkpoints_every(every: Duration) -> Checkpoints {
        Checkpoints {
            every,
            ..Checkpoints::PACE
        }
    }

    static VALUE: [u8; 64 * 1024] = [7; 64 * 1024];

    /// Writes `count` values of 64 KiB, `v0`, `v1`, ..., eight a transaction.
    async fn write_values(db: &MintSqlite, count: usize) {
        for first in (0..count).step_by(8) {
            let mut tx = db.begin_transaction().await.unwrap();
            for i in first..(first + 8).min(count) {
                tx.kv_write(KV_NAMESPACE, "t", &format!("v{i}"), &VALUE)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }

    /// Whether the database file alone, without its WAL, holds value `key`:
    /// read from a copy of the file.
    async fn in_database_file(path: &std::path::Path, key: &str) -> Result<bool, Error> {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.sqlite");
        std::fs::copy(path, &copy).unwrap();
        let db = open(copy.to_str().unwrap()).await?;
        Ok(db.kv_read(KV_NAMESPACE, "t", key).await?.is_some())
    }

    #[tokio::test]
    async fn writers_leave_the_wal_to_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let (db, path) = checkpointing(&dir, checkpoints_every(Duration::from_secs(3600))).await;
        // 8 MiB: twice the WAL at which SQLite's own checkpoint would run.
        write_values(&db, 128).await;
        assert!(
            !in_database_file(&path, "v0").await.unwrap(),
            "a writer copied the WAL into the database file"
        );
        assert!(db
            .kv_read(KV_NAMESPACE, "t", "v127")
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn under_writes_that_never_pause_the_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        // Never the turn by the round: only the WAL's size brings it.
        let pace = Checkpoints {
            every: Duration::from_millis(20),
            turn_every: u64::MAX,
            wal_limit: 4 << 20,
        };
        let (db, path) = checkpointing(&dir, pace).await;
        // 64 MiB in commits one after the other, the checkpointer working
        // meanwhile: a checkpoint of its own never finds the WAL all copied.
        write_values(&db, 1024).await;
        let wal = std::fs::metadata(path.with_extension("sqlite-wal")).unwrap();
        assert!(
            wal.len() < 32 << 20,
            "the WAL grew to {} MiB for 64 MiB written",
            wal.len() >> 20
        );
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (db, path) = checkpointing(&dir, checkpoints_every(Duration::from_millis(50))).await;
        write_values(&db, 16).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // A copy taken while a checkpoint writes may be torn: try again.
        while !in_database_file(&path, "v15").await.unwrap_or(false) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the last write never reached the database file"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn once_writes_pause_the_wal_file_is_emptied_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (db, path) = checkpointing(&dir, checkpoints_every(Duration::from_millis(50))).await;
        write_values(&db, 16).await;
        let wal = path.with_extension("sqlite-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 1 << 20);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&wal).unwrap().len() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the WAL still holds {} bytes with no write for seconds",
                std::fs::metadata(&wal).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(in_database_file(&path, "v15").await.unwrap());
        // The next write starts the WAL over.
        write_values(&db, 1).await;
        assert!(db.kv_read(KV_NAMESPACE, "t", "v0").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_transaction_holds_the_turn_from_begin_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (db, turn) = database(&dir).await;
        assert!(turn.try_lock().is_ok(), "free while no transaction is open");

        let mut tx = db.begin_transaction().await.unwrap();
        assert!(turn.try_lock().is_err(), "held by an open transaction");
        tx.kv_write(KV_NAMESPACE, "t", "a", b"1").await.unwrap();
        tx.commit().await.unwrap();
        assert!(turn.try_lock().is_ok(), "given up at commit");

        let tx = db.begin_transaction().await.unwrap();
        tx.rollback().await.unwrap();
        assert!(turn.try_lock().is_ok(), "given up at rollback");

        // Dropped unfinished: cdk rolls it back on a task of its own.
        drop(db.begin_transaction().await.unwrap());
        let _free = tokio::time::timeout(Duration::from_secs(5), turn.lock())
            .await
            .expect("given up once the dropped transaction is rolled back");
    }

    #[tokio::test]
    async fn a_second_writer_waits_for_the_turn_then_sees_the_first_ones_write() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(&dir).await;
        let db = Arc::new(db);
        let mut first = db.begin_transaction().await.unwrap();
        first.kv_write(KV_NAMESPACE, "t", "a", b"1").await.unwrap();

        let (begun, mut second_begun) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let db = db.clone();
            async move {
                let mut tx = db.begin_transaction().await.unwrap();
                let _ = begun.send(());
                let seen = tx.kv_read(KV_NAMESPACE, "t", "a").await.unwrap();
                tx.commit().await.unwrap();
                seen
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            second_begun.try_recv().is_err(),
            "began while the first writer's transaction was open"
        );
        first.commit().await.unwrap();
        assert_eq!(second.await.unwrap(), Some(b"1".to_vec()));
    }

    /// A quote whose payment check was last claimed at `last_checked`.
    async fn quote_checked_at(db: &MintSqlite, last_checked: u64) -> cdk_common::QuoteId {
        let id = cdk_common::QuoteId::new();
        let unit = cdk::nuts::CurrencyUnit::custom(ehash::constants::UNIT);
        let zero = cdk_common::Amount::new(0, unit.clone());
        let mut quote = cdk_common::mint::MintQuote::new(
            Some(id.clone()),
            "ehash:test".into(),
            unit,
            None,
            0,
            cdk_common::payment::PaymentIdentifier::QuoteId(id.clone()),
            None,
            zero.clone(),
            zero,
            cdk::nuts::PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into()),
            0,
            0,
            vec![],
            vec![],
            None,
        );
        quote.set_last_checked(last_checked);
        let mut tx = db.begin_transaction().await.unwrap();
        tx.add_mint_quote(quote).await.unwrap();
        tx.commit().await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_write_outside_a_transaction_waits_for_the_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(&dir).await;
        let db = Arc::new(db);
        let due = quote_checked_at(&db, 0).await;
        let open = db.begin_transaction().await.unwrap();

        // cdk claims a quote's payment check this way before a batch mint.
        let claimed = tokio::spawn({
            let db = db.clone();
            async move { db.try_update_mint_quote_last_checked(&due, 100, 10).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !claimed.is_finished(),
            "wrote while another transaction was open"
        );
        open.commit().await.unwrap();
        assert!(claimed.await.unwrap().unwrap(), "the due check is claimed");
    }

    #[tokio::test]
    async fn a_claim_that_would_change_nothing_is_answered_without_the_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = database(&dir).await;
        let recent = quote_checked_at(&db, 95).await;
        let unknown = cdk_common::QuoteId::new();
        let _open = db.begin_transaction().await.unwrap();

        for quote in [&recent, &unknown] {
            let claimed = tokio::time::timeout(
                Duration::from_secs(2),
                db.try_update_mint_quote_last_checked(quote, 100, 10),
            )
            .await
            .expect("answered while another transaction holds the turn");
            assert!(!claimed.unwrap(), "nothing to claim");
        }
    }
}

//! The totals of the ehash quotes (`MintStatsResponse`) without reading
//! every quote each time: cdk's database only lists all quotes, which grows
//! with every share the mint ever quoted.
//!
//! Every ehash quote's id is appended to a [`KvLog`] (`quote_ids`) in the
//! transaction that creates it, so the list is the same for every mint
//! process sharing the database (entries of up to 64 ids, as every list of
//! quote ids). [`QuoteTotals`] follows that list from where it stopped, and
//! cdk's log of issuances ([`issuances`]) for the quotes it holds open: a
//! refresh costs the quotes created and minted since the last one, however
//! many wait unminted. `quote_ids` / `backfilled` is present once quotes
//! created before this list existed have been added.
//!
//! A restarted mint would read every quote once more. So the totals of a
//! refresh are kept in the KV store ([`checkpoint`]), at most once a
//! minute, and a new [`QuoteTotals`] starts from there: its first refresh
//! costs what changed since, not every quote ever made.
//!
//! A quote's state follows from two of its columns, paid and issued, and
//! the [`TotalsReader`] reads just those, one statement a page, on a
//! connection of its own. cdk's reads of whole quotes (two more statements
//! each, the locking key parsed) took 5% of the mint's CPU at a thousand
//! quotes a second, refreshed every 10 s; they remain for an in-memory
//! database, whose one connection is cdk's: there every open quote is read
//! again at each refresh.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::{MintQuoteState, QuoteId};
use cdk_postgres::PgConnectionPool;
use cdk_sql_common::database::DatabaseExecutor;
use cdk_sql_common::pool::{DatabasePool, Pool};
use cdk_sql_common::stmt::{query, Column};
use cdk_sqlite::SqliteConnectionManager;

use crate::kv_log::{entry_ids, id_entries, KvLog};
use crate::service::{ehash_quotes_oldest_first, KV_NAMESPACE};

mod checkpoint;
mod issuances;

use issuances::{IssuanceCursor, GAP_LIFETIME};

const IDS: KvLog<'static> = KvLog {
    list: "quote_ids",
    hints: "quote_ids_next",
    hint_key: "next",
};
const META: &str = "quote_ids";
const BACKFILLED: &str = "backfilled";

/// Quotes, or entries of the list, read from the database at once.
const PAGE: usize = 1000;

/// Where the checkpoint is kept in the KV store (namespace `ehash`).
const CHECKPOINT: (&str, &str) = ("quote_totals", "checkpoint");
/// A checkpoint is written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Past this many open quotes (~55 bytes each in a checkpoint) none is
/// written: a write that large would hold up quoting.
const MAX_CHECKPOINT_OPEN: usize = 250_000;

/// Adds quote ids, in creation order, to the list of ehash quotes, inside
/// the transaction that creates the quotes.
pub async fn append(tx: &mut DynMintTransaction, quote_ids: &[QuoteId]) -> Result<(), Error> {
    IDS.append(tx, &id_entries(quote_ids)).await
}

/// Lists, once, the ehash quotes created before the list existed, in
/// creation order. Runs before the mint serves, so nothing else appends.
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if db.kv_read(KV_NAMESPACE, META, BACKFILLED).await?.is_some() {
        return Ok(0);
    }
    let quotes = ehash_quotes_oldest_first(mint).await?;
    let ids: Vec<QuoteId> = quotes.into_iter().map(|quote| quote.id).collect();
    let mut tx = db.begin_transaction().await?;
    append(&mut tx, &ids).await?;
    tx.kv_write(KV_NAMESPACE, META, BACKFILLED, &[1]).await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// What the totals count, as of the last refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub quotes_unpaid: u64,
    pub quotes_paid: u64,
    pub quotes_issued: u64,
    pub ehash_quoted: u64,
    pub ehash_issued: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    state: MintQuoteState,
    quoted: u64,
    issued: u64,
}

/// A quote's amounts paid and issued.
#[derive(Debug)]
struct Amounts {
    id: QuoteId,
    paid: u64,
    issued: u64,
}

impl Amounts {
    /// The quote's state, as cdk derives it from the same two amounts.
    fn state(&self) -> MintQuoteState {
        if self.paid == 0 && self.issued == 0 {
            MintQuoteState::Unpaid
        } else if self.paid > self.issued {
            MintQuoteState::Paid
        } else {
            MintQuoteState::Issued
        }
    }
}

/// Where the totals read the list and the quotes' amounts.
pub enum TotalsReader {
    /// Through cdk: for an in-memory database, which has one connection.
    Cdk(DynMintDatabase),
    /// A file database, opened again for reading.
    Sqlite(Arc<Pool<SqliteConnectionManager>>),
    /// A PostgreSQL database, with connections of the totals' own.
    Postgres(Arc<Pool<PgConnectionPool>>),
}

impl TotalsReader {
    /// The quote ids in up to `n` entries of the list from `position` on,
    /// and how many entries they were in.
    async fn listed(&self, position: u64, n: usize) -> Result<(u64, Vec<QuoteId>), Error> {
        let entries = match self {
            Self::Cdk(db) => IDS.read(db, position, n).await?,
            Self::Sqlite(pool) => IDS.read_on(&*connection(pool).await?, position, n).await?,
            Self::Postgres(pool) => IDS.read_on(&*connection(pool).await?, position, n).await?,
        };
        let mut ids = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            ids.extend(entry_ids(entry).ok_or_else(|| {
                let at = position + i as u64;
                Error::Internal(format!("quote_ids: entry {at} is not a list of quote ids"))
            })?);
        }
        Ok((entries.len() as u64, ids))
    }

    /// The amounts of those of `ids` that exist, in no particular order.
    async fn amounts(&self, ids: &[QuoteId]) -> Result<Vec<Amounts>, Error> {
        match self {
            Self::Cdk(db) => {
                let quotes = db.get_mint_quotes_by_ids(ids).await?;
                Ok(quotes
                    .into_iter()
                    .flatten()
                    .map(|quote| Amounts {
                        paid: quote.amount_paid().value(),
                        issued: quote.amount_issued().value(),
                        id: quote.id,
                    })
                    .collect())
            }
            Self::Sqlite(pool) => amounts_on(&*connection(pool).await?, ids).await,
            Self::Postgres(pool) => amounts_on(&*connection(pool).await?, ids).await,
        }
    }

    /// The checkpoint's bytes, if one was written. None is kept for an
    /// in-memory database, which a restart empties.
    async fn checkpoint(&self) -> Result<Option<Vec<u8>>, Error> {
        let statement = query(
            "SELECT value FROM kv_store WHERE primary_namespace = :namespace \
             AND secondary_namespace = :section AND key = :key",
        )?
        .bind("namespace", KV_NAMESPACE)
        .bind("section", CHECKPOINT.0)
        .bind("key", CHECKPOINT.1);
        let row = match self {
            Self::Cdk(_) => return Ok(None),
            Self::Sqlite(pool) => statement.fetch_one(&*connection(pool).await?).await?,
            Self::Postgres(pool) => statement.fetch_one(&*connection(pool).await?).await?,
        };
        match row.as_deref() {
            None => Ok(None),
            Some([Column::Blob(bytes)]) => Ok(Some(bytes.clone())),
            Some(_) => Err(Error::Internal(
                "kv_store: the checkpoint of quote totals is no value".into(),
            )),
        }
    }

    /// Whether cdk's log of issuances can be read (not through cdk).
    pub(crate) fn follows_issuances(&self) -> bool {
        !matches!(self, Self::Cdk(_))
    }

    /// The number of the log's last row, if any.
    async fn last_issuance(&self) -> Result<Option<i64>, Error> {
        let rows = self
            .issuances(query("SELECT MAX(id) FROM mint_quote_issued")?)
            .await?;
        match rows.as_slice() {
            [row] => match row.as_slice() {
                [Column::Integer(last)] => Ok(Some(*last)),
                [Column::Null] => Ok(None),
                _ => Err(Error::Internal(
                    "mint_quote_issued: MAX(id) is no number".into(),
                )),
            },
            _ => Err(Error::Internal(
                "mint_quote_issued: MAX(id) is no row".into(),
            )),
        }
    }

    /// Up to `n` rows of the log numbered after `after`, ascending: each
    /// row's number and the quote minted.
    async fn issuances_after(&self, after: i64, n: usize) -> Result<Vec<(i64, QuoteId)>, Error> {
        let sql = format!(
            "SELECT id, quote_id FROM mint_quote_issued WHERE id > :after ORDER BY id LIMIT {n}"
        );
        let rows = self.issuances(query(&sql)?.bind("after", after)).await?;
        rows.into_iter().map(issuance).collect()
    }

    /// The rows of the log numbered `numbers` that exist.
    async fn issuances_among(&self, numbers: &[i64]) -> Result<Vec<(i64, QuoteId)>, Error> {
        let statement = query("SELECT id, quote_id FROM mint_quote_issued WHERE id IN (:ids)")?
            .bind_vec("ids", numbers.to_vec())?;
        let rows = self.issuances(statement).await?;
        rows.into_iter().map(issuance).collect()
    }

    async fn issuances(
        &self,
        statement: cdk_sql_common::stmt::Statement,
    ) -> Result<Vec<Vec<Column>>, Error> {
        Ok(match self {
            Self::Cdk(_) => {
                return Err(Error::Internal(
                    "the issuance log of an in-memory database is read through cdk only".into(),
                ))
            }
            Self::Sqlite(pool) => statement.fetch_all(&*connection(pool).await?).await?,
            Self::Postgres(pool) => statement.fetch_all(&*connection(pool).await?).await?,
        })
    }
}

/// One row of cdk's log of issuances: its number and the quote minted.
fn issuance(row: Vec<Column>) -> Result<(i64, QuoteId), Error> {
    match <[Column; 2]>::try_from(row) {
        Ok([Column::Integer(number), Column::Text(id)]) => QuoteId::from_str(&id)
            .map(|id| (number, id))
            .map_err(|_| Error::Internal(format!("mint_quote_issued: bad quote id {id}"))),
        _ => Err(Error::Internal(
            "mint_quote_issued: a row is no number and quote id".into(),
        )),
    }
}

async fn connection<RM: DatabasePool>(
    pool: &Arc<Pool<RM>>,
) -> Result<cdk_sql_common::pool::PooledResource<RM>, Error> {
    pool.get().await.map_err(|e| Error::Database(Box::new(e)))
}

/// The amounts of quotes, in one statement on cdk's `mint_quote` table.
async fn amounts_on<E: DatabaseExecutor>(conn: &E, ids: &[QuoteId]) -> Result<Vec<Amounts>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query("SELECT id, amount_paid, amount_issued FROM mint_quote WHERE id IN (:ids)")?
        .bind_vec("ids", ids.iter().map(QuoteId::to_string).collect())?
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|row| match <[Column; 3]>::try_from(row) {
            Ok([Column::Text(id), Column::Integer(paid), Column::Integer(issued)]) => Ok(Amounts {
                id: QuoteId::from_str(&id)
                    .map_err(|_| Error::Internal(format!("mint_quote: bad id {id}")))?,
                paid: u64::try_from(paid)
                    .map_err(|_| Error::Internal(format!("quote {id}: paid {paid}")))?,
                issued: u64::try_from(issued)
                    .map_err(|_| Error::Internal(format!("quote {id}: issued {issued}")))?,
            }),
            _ => Err(Error::Internal(
                "mint_quote: a row is no id and two amounts".into(),
            )),
        })
        .collect()
}

/// The totals, kept up to date by [`QuoteTotals::refresh`].
#[derive(Debug, Default)]
pub struct QuoteTotals {
    /// The list's next position to read.
    next: u64,
    /// Quotes not issued yet, as last read.
    open: HashMap<QuoteId, Open>,
    /// Issued quotes: done with, counted once.
    issued: Totals,
    /// Where cdk's log of issuances is followed from; `None` until the
    /// first refresh, and for ever where the log is read through cdk.
    issuances: Option<IssuanceCursor>,
    /// Quotes whose amounts the last refresh read.
    quotes_read: usize,
    /// Rows of the log of issuances the last refresh read.
    issuances_read: usize,
    /// When this process last wrote a checkpoint.
    checkpointed: Option<Instant>,
}

impl QuoteTotals {
    /// Reads the quotes added since the last refresh and those of the open
    /// ones minted since, a page at a time: memory holds the open quotes
    /// and one page of entries.
    pub async fn refresh(&mut self, reader: &TotalsReader) -> Result<Totals, Error> {
        let started = Instant::now();
        self.quotes_read = 0;
        self.issuances_read = 0;
        if self.issuances.is_none() && reader.follows_issuances() {
            let cursor = match self.resume(reader).await? {
                Some(cursor) => cursor,
                // Before the first listing: a quote minted after it is
                // read is minted past here in the log.
                None => IssuanceCursor::starting_at(reader.last_issuance().await?),
            };
            self.issuances = Some(cursor);
        }
        // What the log does not tell: a payment (only of an older mint's
        // unpaid quote, paid when its share comes again), or any change
        // where the log is not read.
        let following = self.issuances.is_some();
        let stale: Vec<QuoteId> = self
            .open
            .iter()
            .filter(|(_, open)| !following || open.state == MintQuoteState::Unpaid)
            .map(|(id, _)| id.clone())
            .collect();
        for page in stale.chunks(PAGE) {
            self.read_quotes(reader, page).await?;
        }
        loop {
            let (entries, ids) = reader.listed(self.next, PAGE).await?;
            if entries == 0 {
                break;
            }
            // All read before any is counted: entries that fail to read
            // are read again whole, and no quote is counted twice.
            let mut amounts = Vec::with_capacity(ids.len());
            for page in ids.chunks(PAGE) {
                amounts.extend(self.fetch(reader, page).await?);
            }
            for quote in &amounts {
                self.update(quote);
            }
            self.next += entries;
        }
        if let Some(mut cursor) = self.issuances.take() {
            let followed = self.follow(&mut cursor, reader, Instant::now()).await;
            self.issuances = Some(cursor);
            followed?;
        }
        tracing::debug!(
            "quote totals: {} quotes and {} issuances read in {:?}, {} open",
            self.quotes_read,
            self.issuances_read,
            started.elapsed(),
            self.open.len()
        );
        Ok(self.totals())
    }

    /// Starts from the checkpoint, if one can be read: where it left the
    /// log of issuances.
    async fn resume(&mut self, reader: &TotalsReader) -> Result<Option<IssuanceCursor>, Error> {
        let Some(bytes) = reader.checkpoint().await? else {
            return Ok(None);
        };
        match checkpoint::decode(&bytes) {
            Ok(checkpoint) => {
                tracing::info!(
                    "quote totals resumed from their checkpoint: {} quotes issued, {} open",
                    checkpoint.issued.quotes_issued,
                    checkpoint.open.len()
                );
                self.next = checkpoint.next;
                self.issued = checkpoint.issued;
                self.open = checkpoint.open.into_iter().collect();
                let now = Instant::now();
                let cursor = IssuanceCursor::resume(checkpoint.after, &checkpoint.gaps, now);
                Ok(Some(cursor))
            }
            Err(e) => {
                tracing::warn!(
                    "the checkpoint of quote totals is unreadable ({e}): every quote is read again"
                );
                Ok(None)
            }
        }
    }

    /// Keeps the totals of the last refresh as the checkpoint, unless one
    /// was written less than [`CHECKPOINT_EVERY`] ago; whether it wrote.
    /// Only where the log of issuances is followed (a file or PostgreSQL
    /// database), and for at most [`MAX_CHECKPOINT_OPEN`] open quotes.
    pub async fn checkpoint(&mut self, db: &DynMintDatabase) -> Result<bool, Error> {
        if self
            .checkpointed
            .is_some_and(|at| at.elapsed() < CHECKPOINT_EVERY)
        {
            return Ok(false);
        }
        self.write_checkpoint(db).await
    }

    /// Keeps the totals of the last refresh as the checkpoint now (see
    /// [`Self::checkpoint`]); whether it wrote.
    pub async fn write_checkpoint(&mut self, db: &DynMintDatabase) -> Result<bool, Error> {
        let Some(cursor) = &self.issuances else {
            return Ok(false);
        };
        self.checkpointed = Some(Instant::now());
        if self.open.len() > MAX_CHECKPOINT_OPEN {
            tracing::warn!(
                "{} quotes are open (never minted): too many to checkpoint the quote totals, \
                 so a restarted mint reads every quote once",
                self.open.len()
            );
            return Ok(false);
        }
        let Some(bytes) = checkpoint::encode(self, cursor) else {
            return Ok(false);
        };
        let mut tx = db.begin_transaction().await?;
        tx.kv_write(KV_NAMESPACE, CHECKPOINT.0, CHECKPOINT.1, &bytes)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Reads again the open quotes minted in the log past `cursor`, and in
    /// the rows it skipped that have appeared since.
    async fn follow(
        &mut self,
        cursor: &mut IssuanceCursor,
        reader: &TotalsReader,
        now: Instant,
    ) -> Result<(), Error> {
        loop {
            let rows = reader.issuances_after(cursor.after(), PAGE).await?;
            self.issuances_read += rows.len();
            self.read_minted(reader, &rows).await?;
            let numbers: Vec<i64> = rows.iter().map(|(number, _)| *number).collect();
            cursor.read(&numbers, now);
            if rows.len() < PAGE {
                break;
            }
        }
        for gaps in cursor.gaps().chunks(PAGE) {
            let rows = reader.issuances_among(gaps).await?;
            self.read_minted(reader, &rows).await?;
            let numbers: Vec<i64> = rows.iter().map(|(number, _)| *number).collect();
            cursor.found(&numbers);
        }
        let expired = cursor.expire(now);
        if expired > 0 {
            tracing::debug!(
                "{expired} numbers skipped in cdk's issuance log did not appear in {GAP_LIFETIME:?}: \
                 taken as rolled back"
            );
        }
        Ok(())
    }

    /// Reads the quotes of `rows` of the log that are open. One not open is
    /// counted issued already, or not listed yet (and read when it is).
    async fn read_minted(
        &mut self,
        reader: &TotalsReader,
        rows: &[(i64, QuoteId)],
    ) -> Result<(), Error> {
        let minted: HashSet<&QuoteId> = rows
            .iter()
            .map(|(_, id)| id)
            .filter(|id| self.open.contains_key(*id))
            .collect();
        if minted.is_empty() {
            return Ok(());
        }
        let minted: Vec<QuoteId> = minted.into_iter().cloned().collect();
        self.read_quotes(reader, &minted).await
    }

    /// Reads open quotes again: counting one twice changes nothing.
    async fn read_quotes(&mut self, reader: &TotalsReader, ids: &[QuoteId]) -> Result<(), Error> {
        for quote in &self.fetch(reader, ids).await? {
            self.update(quote);
        }
        Ok(())
    }

    async fn fetch(
        &mut self,
        reader: &TotalsReader,
        ids: &[QuoteId],
    ) -> Result<Vec<Amounts>, Error> {
        self.quotes_read += ids.len();
        let amounts = reader.amounts(ids).await?;
        if amounts.len() < ids.len() {
            // Listed in the transaction that created them: missing only if
            // deleted, which the mint never does.
            tracing::warn!(
                "{} listed quotes are not in the database",
                ids.len() - amounts.len()
            );
        }
        Ok(amounts)
    }

    /// Whether a checkpoint can be written: the totals were read in this
    /// process, where the log of issuances is followed.
    pub fn checkpointable(&self) -> bool {
        self.issuances.is_some()
    }

    /// Quotes not issued yet.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Quotes whose amounts the last refresh read.
    #[cfg(test)]
    pub fn quotes_read(&self) -> usize {
        self.quotes_read
    }

    fn update(&mut self, quote: &Amounts) {
        let state = quote.state();
        if state == MintQuoteState::Issued {
            self.open.remove(&quote.id);
            self.issued.quotes_issued += 1;
            self.issued.ehash_quoted = self.issued.ehash_quoted.saturating_add(quote.paid);
            self.issued.ehash_issued = self.issued.ehash_issued.saturating_add(quote.issued);
        } else {
            let open = Open {
                state,
                quoted: quote.paid,
                issued: quote.issued,
            };
            self.open.insert(quote.id.clone(), open);
        }
    }

    fn totals(&self) -> Totals {
        let mut totals = self.issued;
        for open in self.open.values() {
            totals.ehash_quoted = totals.ehash_quoted.saturating_add(open.quoted);
            totals.ehash_issued = totals.ehash_issued.saturating_add(open.issued);
            match open.state {
                MintQuoteState::Unpaid => totals.quotes_unpaid += 1,
                _ => totals.quotes_paid += 1,
            }
        }
        totals
    }
}

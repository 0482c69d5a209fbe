//! The totals of the ehash quotes (`MintStatsResponse`) without reading
//! every quote each time: cdk's database only lists all quotes, which grows
//! with every share the mint ever quoted.
//!
//! Every ehash quote's id is appended to a [`KvLog`] (`quote_ids`) in the
//! transaction that creates it, so the list is the same for every mint
//! process sharing the database (entries of up to 64 ids, as every list of
//! quote ids). [`QuoteTotals`] follows that list from where it stopped for
//! what was quoted, and cdk's log of issuances ([`issuances`]) row by row
//! for what was minted: a refresh costs the quotes created and the mints
//! made since the last one, and memory holds no quote however many wait
//! unminted (a miner may collect its own quotes once a month). `quote_ids`
//! / `backfilled` is present once quotes created before this list existed
//! have been added.
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
//! database, whose one connection is cdk's and whose log cannot be read:
//! there every quote is read again at each refresh.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdk::mint::Mint;
use cdk_common::database::mint::{DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error;
use cdk_common::QuoteId;
use cdk_postgres::PgConnectionPool;
use cdk_sql_common::database::DatabaseExecutor;
use cdk_sql_common::pool::{DatabasePool, Pool};
use cdk_sql_common::stmt::{query, Column};
use cdk_sqlite::SqliteConnectionManager;

use crate::kv_log::{entry_ids, id_entries, KvLog};
use crate::quote_writer::{backfilled, begin_backfill, finish_backfill};
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
/// Quotes [`backfill`] listed unpaid: each is listed again nowhere when its
/// share comes again and the writer indexes it (see [`listed_unpaid`]).
const LISTED_UNPAID: &str = "quote_ids_unpaid";

/// Quotes, or entries of the list, read from the database at once.
const PAGE: usize = 1000;

/// Where the checkpoint is kept in the KV store (namespace `ehash`).
const CHECKPOINT: (&str, &str) = ("quote_totals", "checkpoint");
/// A checkpoint is written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Past this many unpaid quotes (~37 bytes each in a checkpoint) none is
/// written: a write that large would hold up quoting.
const MAX_CHECKPOINT_UNPAID: usize = 250_000;

/// Adds quote ids, in creation order, to the list of ehash quotes, inside
/// the transaction that creates the quotes.
pub async fn append(tx: &mut DynMintTransaction, quote_ids: &[QuoteId]) -> Result<(), Error> {
    IDS.append(tx, &id_entries(quote_ids)).await
}

/// Lists, once, the ehash quotes created before the list existed, in
/// creation order. Runs before the mint serves, in the writers' turn, so
/// nothing else appends (mint processes on one database starting together
/// take turns, and only the first lists them).
pub async fn backfill(mint: &Mint) -> Result<usize, Error> {
    let db = mint.localstore();
    if backfilled(&db, META).await? {
        return Ok(0);
    }
    // Only mints that listed theirs serve, so none is missed.
    let quotes = ehash_quotes_oldest_first(mint).await?;
    let Some(mut tx) = begin_backfill(&db, META).await? else {
        return Ok(0);
    };
    for quote in quotes
        .iter()
        .filter(|quote| quote.amount_paid().value() == 0)
    {
        tx.kv_write(KV_NAMESPACE, LISTED_UNPAID, &quote.id.to_string(), &[])
            .await?;
    }
    let ids: Vec<QuoteId> = quotes.into_iter().map(|quote| quote.id).collect();
    append(&mut tx, &ids).await?;
    finish_backfill(tx, META).await?;
    Ok(ids.len())
}

/// Whether `quote_id` is a quote [`backfill`] listed unpaid, forgotten as
/// it is asked: an older mint's leftover, whose share has come again to be
/// indexed and paid. The totals count quotes as listed, so it must not be
/// listed twice.
pub async fn listed_unpaid(tx: &mut DynMintTransaction, quote_id: &QuoteId) -> Result<bool, Error> {
    let key = quote_id.to_string();
    if tx
        .kv_read(KV_NAMESPACE, LISTED_UNPAID, &key)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    tx.kv_remove(KV_NAMESPACE, LISTED_UNPAID, &key).await?;
    Ok(true)
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

/// A number of quotes and an amount of ehash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    quotes: u64,
    ehash: u64,
}

/// A quote's amounts paid and issued.
#[derive(Debug)]
struct Amounts {
    id: QuoteId,
    paid: u64,
    issued: u64,
}

/// One row of cdk's log of issuances, as the totals count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Issuance {
    number: i64,
    /// Of an ehash quote: the log holds every payment method's.
    ehash: bool,
    amount: u64,
    /// What the quote's rows numbered before this one issued.
    before: u64,
    /// The quote's amount paid.
    paid: u64,
}

impl Issuance {
    /// Whether this row issues the last of its quote. An ehash quote is
    /// paid once, before any mint, and cdk locks a quote to mint it, so a
    /// quote's rows are numbered in the order they commit and exactly one
    /// of them does.
    fn completes(&self) -> bool {
        self.before < self.paid && self.before.saturating_add(self.amount) >= self.paid
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

    /// Up to `n` rows of the log numbered after `after`, ascending.
    async fn issuances_after(&self, after: i64, n: usize) -> Result<Vec<Issuance>, Error> {
        let sql = format!("{ISSUANCES} WHERE i.id > :after ORDER BY i.id LIMIT {n}");
        let rows = self.issuances(query(&sql)?.bind("after", after)).await?;
        rows.into_iter().map(issuance).collect()
    }

    /// The rows of the log numbered `numbers` that exist.
    async fn issuances_among(&self, numbers: &[i64]) -> Result<Vec<Issuance>, Error> {
        let sql = format!("{ISSUANCES} WHERE i.id IN (:ids)");
        let statement = query(&sql)?.bind_vec("ids", numbers.to_vec())?;
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

/// Rows of cdk's log of issuances with what counting them takes (see
/// [`Issuance`]); a quote's earlier rows are found by its index.
const ISSUANCES: &str = "SELECT i.id, i.amount, \
     CAST(COALESCE((SELECT SUM(e.amount) FROM mint_quote_issued e \
     WHERE e.quote_id = i.quote_id AND e.id < i.id), 0) AS BIGINT), \
     q.amount_paid, q.payment_method \
     FROM mint_quote_issued i JOIN mint_quote q ON q.id = i.quote_id";

/// One row of [`ISSUANCES`].
fn issuance(row: Vec<Column>) -> Result<Issuance, Error> {
    let bad = || Error::Internal("mint_quote_issued: a row is not as read".into());
    let [Column::Integer(number), Column::Integer(amount), Column::Integer(before), Column::Integer(paid), Column::Text(method)] =
        <[Column; 5]>::try_from(row).map_err(|_| bad())?
    else {
        return Err(bad());
    };
    let unsigned = |value: i64| {
        u64::try_from(value)
            .map_err(|_| Error::Internal(format!("mint_quote_issued {number}: amount {value}")))
    };
    Ok(Issuance {
        number,
        ehash: method == ehash::constants::PAYMENT_METHOD,
        amount: unsigned(amount)?,
        before: unsigned(before)?,
        paid: unsigned(paid)?,
    })
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

/// The totals, kept up to date by [`QuoteTotals::refresh`]. They hold no
/// quote but the unpaid ones: what was minted is counted from cdk's log of
/// issuances, row by row, so a quote left unminted for ever costs nothing.
#[derive(Debug, Default)]
pub struct QuoteTotals {
    /// The list's next position to read.
    next: u64,
    /// Listed quotes that were paid, and the ehash they were quoted.
    paid: Tally,
    /// Quotes issued whole, and all the ehash issued.
    issued: Tally,
    /// Listed quotes not paid yet: an older mint's, paid when their share
    /// comes again.
    unpaid: HashSet<QuoteId>,
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
    /// Reads the rows of the log of issuances and the quotes added since the
    /// last refresh, a page at a time. Where the log cannot be read, every
    /// quote is read again.
    pub async fn refresh(&mut self, reader: &TotalsReader) -> Result<Totals, Error> {
        let started = Instant::now();
        self.quotes_read = 0;
        self.issuances_read = 0;
        if !reader.follows_issuances() {
            *self = Self::default();
        } else if self.issuances.is_none() {
            // Without a checkpoint, from the log's start: every row is
            // counted once, and a number skipped by a transaction not yet
            // committed is asked for again, as later.
            let cursor = self.resume(reader).await?.unwrap_or_default();
            self.issuances = Some(cursor);
        }
        // The log before the list: a quote is listed in the transaction
        // that creates it (an older mint's, once, before this mint serves),
        // so every quote counted issued is counted paid.
        if let Some(mut cursor) = self.issuances.take() {
            let followed = self.follow(&mut cursor, reader, Instant::now()).await;
            self.issuances = Some(cursor);
            followed?;
        }
        let unpaid: Vec<QuoteId> = self.unpaid.iter().cloned().collect();
        for page in unpaid.chunks(PAGE) {
            for quote in &self.fetch(reader, page).await? {
                self.count(quote);
            }
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
                self.count(quote);
            }
            self.next += entries;
        }
        tracing::debug!(
            "quote totals: {} quotes and {} issuances read in {:?}, {} unpaid",
            self.quotes_read,
            self.issuances_read,
            started.elapsed(),
            self.unpaid.len()
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
                    "quote totals resumed from their checkpoint: {} quotes issued, {} paid, {} unpaid",
                    checkpoint.issued.quotes,
                    checkpoint.paid.quotes.saturating_sub(checkpoint.issued.quotes),
                    checkpoint.unpaid.len()
                );
                self.next = checkpoint.next;
                self.paid = checkpoint.paid;
                self.issued = checkpoint.issued;
                self.unpaid = checkpoint.unpaid.into_iter().collect();
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
    /// database), and for at most [`MAX_CHECKPOINT_UNPAID`] unpaid quotes.
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
        if self.unpaid.len() > MAX_CHECKPOINT_UNPAID {
            tracing::warn!(
                "{} quotes are unpaid: too many to checkpoint the quote totals, \
                 so a restarted mint reads every quote once",
                self.unpaid.len()
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

    /// Counts the rows of the log past `cursor`, and those of the numbers
    /// it skipped that have appeared since: each row once.
    async fn follow(
        &mut self,
        cursor: &mut IssuanceCursor,
        reader: &TotalsReader,
        now: Instant,
    ) -> Result<(), Error> {
        loop {
            let rows = reader.issuances_after(cursor.after(), PAGE).await?;
            self.count_issuances(&rows);
            cursor.read(&numbers(&rows), now);
            if rows.len() < PAGE {
                break;
            }
        }
        for gaps in cursor.gaps().chunks(PAGE) {
            let rows = reader.issuances_among(gaps).await?;
            self.count_issuances(&rows);
            cursor.found(&numbers(&rows));
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

    fn count_issuances(&mut self, rows: &[Issuance]) {
        self.issuances_read += rows.len();
        for row in rows {
            count_issuance(&mut self.issued, row);
        }
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

    /// Quotes held in memory: the unpaid ones.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.unpaid.len()
    }

    /// Quotes whose amounts the last refresh read.
    #[cfg(test)]
    pub fn quotes_read(&self) -> usize {
        self.quotes_read
    }

    /// Counts a quote read from the list, or read again while unpaid. What
    /// it issued is counted here only where the log is not followed.
    fn count(&mut self, quote: &Amounts) {
        if quote.paid == 0 && quote.issued == 0 {
            self.unpaid.insert(quote.id.clone());
            return;
        }
        self.unpaid.remove(&quote.id);
        self.paid.quotes += 1;
        self.paid.ehash = self.paid.ehash.saturating_add(quote.paid);
        if self.issuances.is_none() {
            self.issued.ehash = self.issued.ehash.saturating_add(quote.issued);
            if quote.issued >= quote.paid {
                self.issued.quotes += 1;
            }
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            quotes_unpaid: self.unpaid.len() as u64,
            quotes_paid: self.paid.quotes.saturating_sub(self.issued.quotes),
            quotes_issued: self.issued.quotes,
            ehash_quoted: self.paid.ehash,
            ehash_issued: self.issued.ehash,
        }
    }
}

/// Adds a row of the log to `issued`, if of an ehash quote.
fn count_issuance(issued: &mut Tally, row: &Issuance) {
    if !row.ehash {
        return;
    }
    issued.ehash = issued.ehash.saturating_add(row.amount);
    if row.completes() {
        issued.quotes += 1;
    }
}

fn numbers(rows: &[Issuance]) -> Vec<i64> {
    rows.iter().map(|row| row.number).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(before: u64, amount: u64, paid: u64) -> Issuance {
        Issuance {
            number: 1,
            ehash: true,
            amount,
            before,
            paid,
        }
    }

    #[test]
    fn of_a_quotes_rows_only_the_one_that_issues_its_last_completes_it() {
        assert!(row(0, 5, 5).completes(), "minted whole");
        assert!(!row(0, 2, 5).completes(), "a first part");
        assert!(row(2, 3, 5).completes(), "the rest");
        assert!(!row(5, 1, 5).completes(), "past the end");
    }

    #[test]
    fn rows_of_other_payment_methods_count_nothing() {
        let mut issued = Tally::default();
        count_issuance(&mut issued, &row(0, 5, 5));
        count_issuance(
            &mut issued,
            &Issuance {
                ehash: false,
                ..row(0, 7, 7)
            },
        );
        count_issuance(&mut issued, &row(0, 2, 4));
        assert_eq!(
            issued,
            Tally {
                quotes: 1,
                ehash: 7
            }
        );
    }
}

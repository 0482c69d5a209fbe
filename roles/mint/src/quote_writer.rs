//! The writer of quotes, with group commit.
//!
//! Every checked share goes to one writer, on a thread of its own. It takes
//! all the shares waiting when it is free (at most [`MAX_GROUP`]) and
//! writes them in one database transaction, so one disk sync covers the
//! whole group: under light load a group is a single share and nothing
//! waits for company; under heavy load the sync, the dearest part of a
//! quote on a file database, is shared.
//!
//! For each share, inside the transaction: its quote is found by its
//! request `ehash:<share hash>`, or created; a new quote is listed for its
//! locking key, in the audit and in the totals, and paid, its payment named
//! by the quote's id. Quote, lists, audit entry and payment commit together
//! or not at all, so a quote found is already paid and listed. An answer is
//! sent only after the commit: a quote id the pool hears is durable.
//!
//! The one key that comes in random order is the request: quote ids are
//! time-ordered (UUID v7), so every other index a quote joins grows at its
//! end, where a group of quotes shares a few pages.
//!
//! An older mint created a quote, then indexed it by share hash (a KV entry)
//! and listed it, then paid it, each in its own transaction. A quote found
//! unpaid is such a leftover: listed unless its index entry says it was,
//! then paid.
//!
//! Exactly once comes from the database, since several mint processes may
//! share it: a request has one quote, a payment id one payment, a share
//! hash at most one index entry (unique constraints). Each
//! transaction first takes the writers' turn (one row every writer
//! updates), so writers of all processes commit one after the other and
//! never deadlock one another (every new quote appends to the one audit
//! log: they would queue there anyway); the constraints are the backstop.
//! A writer that still loses a race (its insert waits for the winner's
//! transaction and fails once it commits) rolls back, writes the share
//! again, finds the winner's quote and answers its id, already paid.
//!
//! A group whose transaction fails is written again one share at a time,
//! so a share that cannot be written fails only itself; a share that loses
//! a race (or a deadlock) is written again, at most [`MAX_ATTEMPTS`] times.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdk::mint::Mint;
use cdk::nuts::{CurrencyUnit, PaymentMethod, PublicKey};
use cdk_common::database::mint::{Acquired, DynMintDatabase, DynMintTransaction};
use cdk_common::database::Error as DatabaseError;
use cdk_common::mint::MintQuote;
use cdk_common::payment::{PaymentIdentifier, WaitPaymentResponse};
use cdk_common::{Amount, QuoteId};
use ehash::LockingKey;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::key_index::QuotesByKey;
use crate::quote::Rejection;
use crate::quoting::QuotingMark;
use crate::service::{mint_error, KV_NAMESPACE};
use crate::{audit, quote_totals};

/// An older mint's index of quotes by share hash.
const KV_SHARES: &str = "shares";
/// The row each transaction of quotes updates first: the writers' turn.
const KV_WRITERS: &str = "writers";
const KV_TURN: &str = "turn";

/// A quote's `last_checked` (unix seconds) that cdk never finds old enough
/// to ask the payment backend again: far in the future, within SQL's i64.
const PAYMENT_CHECK_NEVER_DUE: u64 = i64::MAX as u64;

/// Attempts at one share while it loses races; a race is settled by the
/// winner's commit, so the second attempt normally finds its quote.
pub const MAX_ATTEMPTS: u32 = 4;

/// Most shares written in one transaction. Bounds how long the writer holds
/// the database (and so how long the audit summary or a wallet's mint
/// waits), while still sharing one sync among thousands of quotes a second.
pub const MAX_GROUP: usize = 512;

/// Shares waiting for the writer; callers wait beyond this.
const QUEUE: usize = 4 * MAX_GROUP;
/// A transaction not done this long after it began is given up (rolled
/// back, or its connection discarded) and its shares answered
/// `mint-error`: a database gone silent (its host crashed while holding
/// the connection) must not hold the writer for the hours TCP takes to
/// notice. The pool asks again; a commit that did go through is found then.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked share, ready to be written: everything that costs CPU but no
/// database (the key, the audit entry's JSON) is done by the caller, in
/// parallel, before the share reaches the one writer.
#[derive(Debug, Clone)]
pub struct ShareToQuote {
    pub share_hex: String,
    pub amount: u64,
    pub pubkey: PublicKey,
    pub locking_key: LockingKey,
    pub audit_entry: Vec<u8>,
}

struct Job {
    share: ShareToQuote,
    answer: oneshot::Sender<Result<QuoteId, Rejection>>,
    /// Dropped with the job, once its quote is written (or refused).
    _quoting: Option<QuotingMark>,
}

/// The handle callers write quotes through.
pub struct QuoteWriter {
    jobs: mpsc::Sender<Job>,
    writing: Arc<Mutex<()>>,
    #[cfg(test)]
    groups: Arc<AtomicU64>,
    #[cfg(test)]
    races_lost: Arc<AtomicU64>,
    mint: Arc<Mint>,
}

/// Resolves once the writer's thread has ended: every handle dropped, and
/// what was queued written.
pub struct WriterStopped(oneshot::Receiver<()>);

impl WriterStopped {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

impl QuoteWriter {
    /// Starts the writer's thread; it ends when every handle is dropped.
    pub fn start(mint: Arc<Mint>) -> (Self, WriterStopped) {
        Self::start_with(mint, COMMIT_TIMEOUT)
    }

    fn start_with(mint: Arc<Mint>, commit_timeout: Duration) -> (Self, WriterStopped) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writing = Arc::new(Mutex::new(()));
        let groups = Arc::new(AtomicU64::new(0));
        let races_lost = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            mint: mint.clone(),
            unit: CurrencyUnit::custom(ehash::constants::UNIT),
            method: PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.to_string()),
            writing: writing.clone(),
            groups: groups.clone(),
            races_lost: races_lost.clone(),
            commit_timeout,
        };
        // cdk-sqlite runs each statement, and the disk sync of each commit,
        // on the thread that awaits it: on a runtime worker that would stall
        // the tasks queued there. The writer has a thread of its own, where
        // the next group's arrival wakes it directly, not through a worker
        // busy with the checks of that group.
        let runtime = tokio::runtime::Handle::current();
        let (stopped, writer_stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("mint-quote-writer".into())
            .spawn(move || {
                runtime.block_on(writer.run(queue));
                let _ = stopped.send(());
            })
            .expect("the quote writer's thread starts");
        let handle = Self {
            jobs,
            writing,
            #[cfg(test)]
            groups,
            #[cfg(test)]
            races_lost,
            mint,
        };
        (handle, WriterStopped(writer_stopped))
    }

    /// The share's quote, created and paid once; answered when durable.
    pub async fn quote(
        &self,
        share: ShareToQuote,
        quoting: Option<QuotingMark>,
    ) -> Result<QuoteId, Rejection> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            share,
            answer,
            _quoting: quoting,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| mint_error("the quote writer has stopped"))?;
        answered
            .await
            .map_err(|_| mint_error("the quote writer dropped a share"))?
    }

    /// The paid quote already written for a share and locked to `key`, if
    /// any. An unpaid one (an older mint's leftover, paid only when the
    /// share is written again) is none: a wallet could never mint it.
    pub async fn quote_of(
        &self,
        share_hex: &str,
        key: &PublicKey,
    ) -> Result<Option<QuoteId>, Rejection> {
        let quote = self
            .mint
            .localstore()
            .get_mint_quote_by_request(&request_of(share_hex))
            .await
            .map_err(mint_error)?;
        Ok(quote
            .filter(|quote| quote.amount_paid().value() > 0 && quote.pubkey.as_ref() == Some(key))
            .map(|quote| quote.id))
    }

    /// How many groups the writer has written since it started.
    #[cfg(test)]
    pub fn groups_written(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// How many transactions lost a race to another writer since it started.
    #[cfg(test)]
    pub fn races_lost(&self) -> u64 {
        self.races_lost.load(Ordering::Relaxed)
    }

    /// Runs `work` between two groups, while no quote is being written.
    pub async fn while_idle<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let _idle = self.writing.lock().await;
        work.await
    }
}

struct Writer {
    mint: Arc<Mint>,
    unit: CurrencyUnit,
    method: PaymentMethod,
    writing: Arc<Mutex<()>>,
    groups: Arc<AtomicU64>,
    races_lost: Arc<AtomicU64>,
    commit_timeout: Duration,
}

/// Why a transaction of quotes did not commit.
enum Failure {
    /// Another transaction wrote one of its shares first, or the database
    /// broke a deadlock with it: another attempt finds what the winner wrote.
    LostRace(String),
    Rejected(Rejection),
    /// Not done within the commit timeout: its shares one at a time would
    /// each wait as long.
    TimedOut(Duration),
}

impl Failure {
    fn timed_out(after: Duration) -> Rejection {
        mint_error(format!(
            "the database did not finish writing the quote within {after:?}; ask again"
        ))
    }
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

/// A database error; a unique constraint that refused a write, or a
/// deadlock, is a lost race.
fn db_failure(e: DatabaseError) -> Failure {
    match e {
        DatabaseError::Duplicate | DatabaseError::Locked | DatabaseError::ConcurrentUpdate => {
            Failure::LostRace(e.to_string())
        }
        e => Failure::Rejected(mint_error(e)),
    }
}

fn cdk_failure(e: cdk::Error) -> Failure {
    match e {
        cdk::Error::Database(e) => db_failure(e),
        cdk::Error::ConcurrentUpdate => Failure::LostRace(e.to_string()),
        e => Failure::Rejected(mint_error(e)),
    }
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut shares = 0u64;
        let mut group = Vec::new();
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            // A share whose asker went away (a Redis batch dropped at a stop)
            // is written all the same: checked already, it might not pass the
            // chain's checks when its pool asks again, tips later.
            let group = std::mem::take(&mut group);
            let _writing = self.writing.lock().await;
            shares += group.len() as u64;
            // A group that panics fails its shares (their answers are
            // dropped), not the writer.
            let written = AssertUnwindSafe(self.write_group(group)).catch_unwind();
            if written.await.is_err() {
                tracing::error!("the quote writer panicked on a group; its shares failed");
            }
            self.groups.fetch_add(1, Ordering::Relaxed);
        }
        let groups = self.groups.load(Ordering::Relaxed);
        let races = self.races_lost.load(Ordering::Relaxed);
        tracing::info!(
            "quote writer stopped: {shares} quotes written in {groups} transactions \
             ({races} lost a race to another writer)"
        );
    }

    async fn write_group(&self, group: Vec<Job>) {
        if group.len() > 1 {
            let shares: Vec<&ShareToQuote> = group.iter().map(|job| &job.share).collect();
            match self.commit(&shares).await {
                Ok(quote_ids) => {
                    for (job, quote_id) in group.into_iter().zip(quote_ids) {
                        let _ = job.answer.send(Ok(quote_id));
                    }
                    return;
                }
                Err(Failure::LostRace(why)) => tracing::info!(
                    shares = group.len(),
                    "a group of quotes lost a race to another writer ({why}); \
                     writing its shares one at a time"
                ),
                Err(Failure::Rejected(rejection)) => tracing::warn!(
                    shares = group.len(),
                    "a group of quotes failed ({rejection}); writing its shares one at a time"
                ),
                Err(Failure::TimedOut(after)) => {
                    tracing::error!(
                        shares = group.len(),
                        "the database did not finish a group of quotes within {after:?}: \
                         rolled back, its shares answered mint-error"
                    );
                    for job in group {
                        let _ = job.answer.send(Err(Failure::timed_out(after)));
                    }
                    return;
                }
            }
        }
        for job in group {
            let answer = self.commit_one(&job.share).await;
            let _ = job.answer.send(answer);
        }
    }

    /// One share's quote, written again while it loses races.
    async fn commit_one(&self, share: &ShareToQuote) -> Result<QuoteId, Rejection> {
        let mut attempt = 1;
        loop {
            match self.commit(&[share]).await {
                Ok(mut quote_ids) => return Ok(quote_ids.remove(0)),
                Err(Failure::Rejected(rejection)) => return Err(rejection),
                Err(Failure::TimedOut(after)) => {
                    tracing::error!(
                        share = share.share_hex,
                        "the database did not finish a quote within {after:?}: rolled back"
                    );
                    return Err(Failure::timed_out(after));
                }
                Err(Failure::LostRace(why)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        share = share.share_hex,
                        attempt,
                        "lost a race to another writer ({why}); writing the share again"
                    );
                    attempt += 1;
                }
                Err(Failure::LostRace(why)) => {
                    return Err(mint_error(format!(
                        "share {} lost {MAX_ATTEMPTS} races to other writers, the last: {why}",
                        share.share_hex
                    )))
                }
            }
        }
    }

    /// Quotes and pays every share in one transaction; the quote ids in
    /// the order of `shares`. Run to the end without tokio's forced yields,
    /// like the HTTP API's requests (see `io::without_forced_yields`).
    /// Given up after the commit timeout: dropped, cdk's transaction rolls
    /// back (or discards its connection).
    async fn commit(&self, shares: &[&ShareToQuote]) -> Result<Vec<QuoteId>, Failure> {
        let transaction = tokio::task::unconstrained(self.commit_in_transaction(shares));
        tokio::time::timeout(self.commit_timeout, transaction)
            .await
            .unwrap_or(Err(Failure::TimedOut(self.commit_timeout)))
    }

    async fn commit_in_transaction(
        &self,
        shares: &[&ShareToQuote],
    ) -> Result<Vec<QuoteId>, Failure> {
        let mut tx = self
            .mint
            .localstore()
            .begin_transaction()
            .await
            .map_err(mint_error)?;
        let mut quote_ids = Vec::with_capacity(shares.len());
        let mut newly_paid = Vec::new();
        let mut listed = NewQuotes::default();
        let mut written = take_turn(&mut tx).await;
        if written.is_ok() {
            for share in shares {
                match self.quote_and_pay(&mut tx, share, &mut listed).await {
                    Ok((quote, paid_now)) => {
                        quote_ids.push(quote.id.clone());
                        if paid_now {
                            newly_paid.push(quote.inner());
                        }
                    }
                    Err(failure) => {
                        written = Err(failure);
                        break;
                    }
                }
            }
        }
        if written.is_ok() {
            written = listed.append(&mut tx).await.map_err(db_failure);
        }
        let committed = match written {
            Ok(()) => tx.commit().await.map_err(db_failure),
            Err(failure) => {
                if let Err(e) = tx.rollback().await {
                    tracing::warn!("rolling back a group of quotes: {e}");
                }
                Err(failure)
            }
        };
        if let Err(Failure::LostRace(_)) = &committed {
            self.races_lost.fetch_add(1, Ordering::Relaxed);
        }
        committed?;
        // Wallets subscribed over websockets hear of payments once durable.
        let pubsub = self.mint.pubsub_manager();
        for quote in &newly_paid {
            pubsub.mint_quote_payment(quote, quote.amount_paid());
        }
        Ok(quote_ids)
    }

    /// The share's quote, found or created, and paid. `true` when this
    /// call recorded the payment.
    async fn quote_and_pay<'a>(
        &self,
        tx: &mut DynMintTransaction,
        share: &'a ShareToQuote,
        listed: &mut NewQuotes<'a>,
    ) -> Result<(Acquired<MintQuote>, bool), Failure> {
        let mut quote = match self.find(tx, share, listed).await? {
            Some(quote) => quote,
            None => self.create(tx, share, listed).await?,
        };
        let mut paid_now = false;
        if quote.amount_paid().value() == 0 {
            let payment = WaitPaymentResponse {
                payment_identifier: PaymentIdentifier::QuoteId(quote.id.clone()),
                payment_amount: Amount::new(share.amount, self.unit.clone()),
                payment_id: quote.id.to_string(),
            };
            paid_now = self
                .mint
                .pay_mint_quote(tx, &mut quote, payment)
                .await
                .map_err(cdk_failure)?;
        }
        if quote.amount_paid().value() != share.amount {
            return Err(Failure::Rejected(mint_error(format!(
                "quote {} shows {} paid, expected {}",
                quote.id,
                quote.amount_paid().value(),
                share.amount
            ))));
        }
        Ok((quote, paid_now))
    }

    /// The share's quote, if one was written; an older mint's leftover
    /// (unpaid) is listed here unless its index entry says it was.
    async fn find<'a>(
        &self,
        tx: &mut DynMintTransaction,
        share: &'a ShareToQuote,
        listed: &mut NewQuotes<'a>,
    ) -> Result<Option<Acquired<MintQuote>>, Failure> {
        let found = tx
            .get_mint_quote_by_request(&request_of(&share.share_hex))
            .await
            .map_err(db_failure)?;
        if let Some(quote) = &found {
            if quote.amount_paid().value() == 0 {
                let indexed = tx
                    .kv_read(KV_NAMESPACE, KV_SHARES, &share.share_hex)
                    .await
                    .map_err(db_failure)?;
                if indexed.is_none() {
                    index(tx, share, &quote.id, listed).await?;
                }
            }
        }
        Ok(found)
    }

    async fn create<'a>(
        &self,
        tx: &mut DynMintTransaction,
        share: &'a ShareToQuote,
        listed: &mut NewQuotes<'a>,
    ) -> Result<Acquired<MintQuote>, Failure> {
        let quote_id = QuoteId::new();
        let now = roles_common::unix_secs();
        let zero = Amount::new(0, self.unit.clone());
        let mut quote = MintQuote::new(
            Some(quote_id.clone()),
            request_of(&share.share_hex),
            self.unit.clone(),
            Some(Amount::new(share.amount, self.unit.clone())),
            0,
            PaymentIdentifier::QuoteId(quote_id.clone()),
            Some(share.pubkey),
            zero.clone(),
            zero,
            self.method.clone(),
            now,
            now,
            vec![],
            vec![],
            Some(serde_json::json!({ "share_hash": share.share_hex })),
        );
        // Paid as it is created, the backend never has a payment to report:
        // a check never due spares cdk a write per quote at every mint
        // request and status query.
        quote.set_last_checked(PAYMENT_CHECK_NEVER_DUE);
        let quote = tx.add_mint_quote(quote).await.map_err(db_failure)?;
        listed.add(share, &quote_id);
        Ok(quote)
    }
}

/// Indexes an older mint's leftover quote by share hash, as that mint did,
/// and lists it for its locking key, in the audit and in the quote totals:
/// a quote that can be paid is always listed, since the lists are appended
/// before the transaction commits.
async fn index<'a>(
    tx: &mut DynMintTransaction,
    share: &'a ShareToQuote,
    quote_id: &QuoteId,
    listed: &mut NewQuotes<'a>,
) -> Result<(), Failure> {
    let first = tx
        .kv_write_if_absent(
            KV_NAMESPACE,
            KV_SHARES,
            &share.share_hex,
            quote_id.to_string().as_bytes(),
        )
        .await
        .map_err(db_failure)?;
    if !first {
        return Err(Failure::LostRace(format!(
            "another writer indexed share {}",
            share.share_hex
        )));
    }
    if quote_totals::listed_unpaid(tx, quote_id)
        .await
        .map_err(db_failure)?
    {
        listed.add_but_to_totals(share, quote_id);
    } else {
        listed.add(share, quote_id);
    }
    Ok(())
}

/// The quotes a transaction indexed, for the lists they join: each list
/// is appended once, when every share is written, so its position hint is
/// read and written once per transaction, not once per quote.
#[derive(Default)]
struct NewQuotes<'a> {
    ids: Vec<QuoteId>,
    audit_entries: Vec<&'a [u8]>,
    by_key: QuotesByKey,
}

impl<'a> NewQuotes<'a> {
    fn add(&mut self, share: &'a ShareToQuote, quote_id: &QuoteId) {
        self.ids.push(quote_id.clone());
        self.add_but_to_totals(share, quote_id);
    }

    /// Adds a quote the totals' list holds already.
    fn add_but_to_totals(&mut self, share: &'a ShareToQuote, quote_id: &QuoteId) {
        self.audit_entries.push(&share.audit_entry);
        self.by_key.add(share.locking_key, quote_id.clone());
    }

    async fn append(&self, tx: &mut DynMintTransaction) -> Result<(), DatabaseError> {
        self.by_key.append(tx).await?;
        audit::append(tx, &self.audit_entries).await?;
        quote_totals::append(tx, &self.ids).await
    }
}

/// Takes the writers' turn: the row stays locked, and other writers'
/// transactions wait, until this one ends.
async fn take_turn(tx: &mut DynMintTransaction) -> Result<(), Failure> {
    writers_turn(tx).await.map_err(db_failure)
}

/// Waits for the writers' turn (one row every writer of the database
/// writes first), held until `tx` ends: mint processes on one database
/// write quotes, and list them, one after the other.
async fn writers_turn(tx: &mut DynMintTransaction) -> Result<(), DatabaseError> {
    tx.kv_write(KV_NAMESPACE, KV_WRITERS, KV_TURN, &[]).await
}

/// The flag a one-time backfill of `list` (a KV namespace's name) sets.
const BACKFILLED: &str = "backfilled";

/// Whether the one-time backfill of `list` is done.
pub(crate) async fn backfilled(db: &DynMintDatabase, list: &str) -> Result<bool, DatabaseError> {
    Ok(db.kv_read(KV_NAMESPACE, list, BACKFILLED).await?.is_some())
}

/// The transaction of the one-time backfill of `list`, in the writers'
/// turn; `None` if another mint did it meanwhile (mints starting together
/// on one database take turns, and only the first does it). The caller
/// reads what it needs before (on SQLite in memory the transaction holds
/// the only connection) and ends with [`finish_backfill`].
pub(crate) async fn begin_backfill(
    db: &DynMintDatabase,
    list: &str,
) -> Result<Option<DynMintTransaction>, DatabaseError> {
    let mut tx = db.begin_transaction().await?;
    writers_turn(&mut tx).await?;
    if tx.kv_read(KV_NAMESPACE, list, BACKFILLED).await?.is_some() {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}

/// Marks the backfill of `list` done and commits it.
pub(crate) async fn finish_backfill(
    mut tx: DynMintTransaction,
    list: &str,
) -> Result<(), DatabaseError> {
    tx.kv_write(KV_NAMESPACE, list, BACKFILLED, &[1]).await?;
    tx.commit().await
}

/// The request cdk stores for an ehash quote; unique per quote.
fn request_of(share_hex: &str) -> String {
    format!("ehash:{share_hex}")
}

#[cfg(test)]
mod tests;

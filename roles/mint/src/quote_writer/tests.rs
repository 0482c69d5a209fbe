//! The writer's tests, each run against SQLite (in memory and on file) and
//! against PostgreSQL (a throwaway server per test, as
//! `roles_common::services` starts it).

use cdk::nuts::SecretKey;

use super::*;
use crate::config::MintConfig;
use crate::quote_totals::{QuoteTotals, Totals, TotalsReader};
use cdk_common::MintQuoteState;

/// A mint on one of the backends, and the server it runs on.
struct Backend {
    mint: Arc<Mint>,
    /// How the mint process reads its quote totals on this backend.
    totals: TotalsReader,
    postgres: Option<roles_common::services::Postgres>,
    /// Where a file database lives.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn sqlite() -> Self {
        let (mint, totals) = open(":memory:").await;
        Self {
            mint,
            totals,
            postgres: None,
            _dir: None,
        }
    }

    async fn sqlite_file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (mint, totals) = open(dir.path().join("mint.sqlite").to_str().unwrap()).await;
        Self {
            mint,
            totals,
            postgres: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        let postgres = tokio::task::spawn_blocking(|| {
            roles_common::services::Postgres::start(roles_common::services::ProcessGroup::Parent)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
        let (mint, totals) = open(&postgres.url()).await;
        Self {
            mint,
            totals,
            postgres: Some(postgres),
            _dir: None,
        }
    }

    /// Another mint on the same PostgreSQL database, as another mint
    /// process opens it.
    async fn another_mint(&self) -> Arc<Mint> {
        open(&self.postgres.as_ref().expect("PostgreSQL").url())
            .await
            .0
    }

    /// Waits until some transaction waits for a lock another one holds. On
    /// SQLite a writer waits for the database before its transaction
    /// begins, unseen: returns at once.
    async fn until_a_transaction_waits(&self) {
        self.until_transactions_wait(1).await
    }

    /// [`Backend::until_a_transaction_waits`], for `n` of them.
    async fn until_transactions_wait(&self, n: i64) {
        let Some(postgres) = &self.postgres else {
            return;
        };
        let (client, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no transaction ever waited for a lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The mint on `database` and its totals' reader, as the mint process
/// opens them.
async fn open(database: &str) -> (Arc<Mint>, TotalsReader) {
    let config = MintConfig {
        database: database.into(),
        chain: None,
        ..roles_common::testing::load_shipped("mint.toml")
    };
    let db = crate::open_database(&config).await.unwrap();
    let mint = Arc::new(
        crate::build_mint(&config, &db, "http://127.0.0.1:3338")
            .await
            .unwrap(),
    );
    (mint, db.totals)
}

/// Declares each test fn (taking a [`Backend`]) as a test on SQLite in
/// memory, on SQLite on file and on PostgreSQL.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::sqlite().await).await
                }
            )*
        }
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::sqlite_file().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::postgres().await).await
                }
            )*
        }
    };
}

on_every_backend!(
    shares_waiting_together_are_written_in_one_group_each_quoted_and_paid_once,
    the_same_share_twice_in_one_group_gets_one_quote,
    a_share_that_cannot_be_written_fails_alone_and_its_group_is_quoted,
    a_quote_created_but_never_indexed_is_found_listed_and_paid,
    a_quote_indexed_but_never_paid_is_paid_and_not_listed_again,
    a_quote_another_writer_creates_first_is_the_answer_paid_once,
    a_share_another_writer_indexes_first_is_answered_with_its_quote,
    the_totals_follow_new_and_issued_quotes_and_read_only_the_new_ones,
    the_totals_count_a_long_log_of_issuances_once,
    quotes_written_together_share_list_entries_and_entries_of_one_still_count,
    a_keys_quotes_written_together_are_read_from_any_of_their_positions,
    quotes_made_before_the_list_are_listed_once,
    a_leftover_listed_unpaid_then_paid_when_its_share_comes_again_counts_once,
    a_restarted_mint_resumes_its_totals_from_the_checkpoint,
);

fn share(amount: u64) -> ShareToQuote {
    let pubkey = SecretKey::generate().public_key();
    ShareToQuote {
        share_hex: hex::encode(rand::random::<[u8; 32]>()),
        amount,
        pubkey,
        locking_key: LockingKey::from_bytes(&pubkey.to_bytes()).unwrap(),
        audit_entry: b"{}".to_vec(),
    }
}

async fn stored(mint: &Mint, quote_id: &QuoteId) -> MintQuote {
    mint.localstore()
        .get_mint_quote(quote_id)
        .await
        .unwrap()
        .expect("the quote is stored")
}

/// Its quote shows `share` paid, once.
async fn paid_once(mint: &Mint, quote_id: &QuoteId, share: &ShareToQuote) {
    let quote = stored(mint, quote_id).await;
    assert_eq!(quote.amount_paid().value(), share.amount);
    assert_eq!(quote.payment_ids(), vec![&quote_id.to_string()]);
}

/// The quotes listed for `share`'s locking key.
async fn listed_for(mint: &Mint, share: &ShareToQuote) -> Vec<QuoteId> {
    let listed = crate::key_index::read(&mint.localstore(), &share.locking_key, 0, 10).await;
    listed.unwrap().into_iter().map(|(_, id)| id).collect()
}

/// An unpaid quote for `share` as another writer (or an older mint) adds
/// it, in `tx`.
async fn add_quote(tx: &mut DynMintTransaction, share: &ShareToQuote) -> QuoteId {
    let quote_id = QuoteId::new();
    let unit = CurrencyUnit::custom(ehash::constants::UNIT);
    tx.add_mint_quote(MintQuote::new(
        Some(quote_id.clone()),
        format!("ehash:{}", share.share_hex),
        unit.clone(),
        Some(Amount::new(share.amount, unit.clone())),
        0,
        PaymentIdentifier::QuoteId(quote_id.clone()),
        Some(share.pubkey),
        Amount::new(0, unit.clone()),
        Amount::new(0, unit),
        PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into()),
        0,
        0,
        vec![],
        vec![],
        None,
    ))
    .await
    .unwrap();
    quote_id
}

/// `share` indexed to `quote_id`, in `tx`, as an older mint indexed it (by
/// the writer's own index write); the lists it would join are left alone.
async fn add_index(tx: &mut DynMintTransaction, share: &ShareToQuote, quote_id: &QuoteId) {
    let indexed = index(tx, share, quote_id, &mut NewQuotes::default()).await;
    assert!(indexed.is_ok(), "the share was indexed already");
}

async fn quote_all(
    writer: &Arc<QuoteWriter>,
    shares: &[ShareToQuote],
) -> Vec<Result<QuoteId, Rejection>> {
    let tasks: Vec<_> = shares
        .iter()
        .map(|share| {
            let (writer, share) = (writer.clone(), share.clone());
            tokio::spawn(async move { writer.quote(share, None).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Quotes `shares` at once, all queued while the writer is held, so they
/// reach it together.
/// Quotes of the shares worth each of `amounts`, all answered: their ids,
/// in that order.
async fn quoted(writer: &Arc<QuoteWriter>, amounts: std::ops::RangeInclusive<u64>) -> Vec<QuoteId> {
    let shares: Vec<_> = amounts.map(share).collect();
    let answers = quote_all(writer, &shares).await;
    answers
        .into_iter()
        .map(|answer| answer.expect("quoted"))
        .collect()
}

async fn quote_together(
    writer: &Arc<QuoteWriter>,
    shares: &[ShareToQuote],
) -> Vec<Result<QuoteId, Rejection>> {
    let mut queued = None;
    writer
        .while_idle(async {
            queued = Some(tokio::spawn({
                let (writer, shares) = (writer.clone(), shares.to_vec());
                async move { quote_all(&writer, &shares).await }
            }));
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        })
        .await;
    queued.expect("spawned").await.unwrap()
}

async fn shares_waiting_together_are_written_in_one_group_each_quoted_and_paid_once(
    backend: Backend,
) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let shares: Vec<_> = (1..=300).map(share).collect();

    // Everything queues while the writer is held, then goes in few groups.
    let answers = quote_together(&writer, &shares).await;
    assert!(
        writer.groups_written() <= 3,
        "{} groups for 300 waiting shares",
        writer.groups_written()
    );

    let mut ids = std::collections::HashSet::new();
    for (share, answer) in shares.iter().zip(&answers) {
        let quote_id = answer.clone().expect("quoted");
        assert!(ids.insert(quote_id.clone()), "a quote id given twice");
        let quote = stored(&mint, &quote_id).await;
        assert_eq!(quote.amount_paid().value(), share.amount);
        assert_eq!(quote.pubkey, Some(share.pubkey));
        assert_eq!(quote.request, format!("ehash:{}", share.share_hex));
        assert_eq!(
            quote.last_checked(),
            PAYMENT_CHECK_NEVER_DUE,
            "paid at creation: no payment check is ever due"
        );
        assert_eq!(
            writer
                .quote_of(&share.share_hex, &share.pubkey)
                .await
                .unwrap(),
            Some(quote_id.clone())
        );
        assert_eq!(listed_for(&mint, share).await, vec![quote_id]);
    }

    // The same shares again, in other groups: the same quotes, paid once.
    let again = quote_all(&writer, &shares).await;
    assert_eq!(again, answers);
    for (share, answer) in shares.iter().zip(&answers) {
        paid_once(&mint, answer.as_ref().unwrap(), share).await;
    }
}

async fn the_same_share_twice_in_one_group_gets_one_quote(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let one = share(5);
    let answers = quote_together(&writer, &vec![one.clone(); 4]).await;
    let first = answers[0].clone().unwrap();
    assert!(
        answers.iter().all(|a| a.as_ref() == Ok(&first)),
        "{answers:?}"
    );
    paid_once(&mint, &first, &one).await;
}

/// A share whose asker gave up before the writer took it is quoted all the
/// same (it was accepted, and its pool may ask again only tips later); the
/// writer stops once its handles are gone, after writing what was queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_nobody_waits_for_is_quoted_and_the_writer_stops_after_the_queue() {
    let mint = Backend::sqlite().await.mint;
    let (writer, stopped) = QuoteWriter::start(mint.clone());
    let writer = Arc::new(writer);
    let ask = |share: &ShareToQuote| {
        let (writer, share) = (writer.clone(), share.clone());
        tokio::spawn(async move { writer.quote(share, None).await })
    };
    let (first, given_up) = (share(1), share(2));
    let wait = || tokio::time::sleep(std::time::Duration::from_millis(200));
    let (first_answer,) = writer
        .while_idle(async {
            // The writer takes `first` and waits; `given_up` queues behind it.
            let first_answer = ask(&first);
            wait().await;
            let gave_up = ask(&given_up);
            wait().await;
            gave_up.abort();
            (first_answer,)
        })
        .await;
    let quote_id = first_answer.await.unwrap().expect("quoted");
    paid_once(&mint, &quote_id, &first).await;

    drop(writer);
    tokio::time::timeout(std::time::Duration::from_secs(10), stopped.wait())
        .await
        .expect("the writer stops once its handles are gone");
    let store = mint.localstore();
    let request = request_of(&given_up.share_hex);
    let quote = store.get_mint_quote_by_request(&request).await.unwrap();
    let quote = quote.expect("the share nobody waited for is quoted");
    paid_once(&mint, &quote.id, &given_up).await;
}

async fn a_share_that_cannot_be_written_fails_alone_and_its_group_is_quoted(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    // A share quoted at 7, then claimed at 8: its quote shows 7 paid.
    let quoted = share(7);
    writer.quote(quoted.clone(), None).await.unwrap();
    let mut group: Vec<_> = (1..=20).map(share).collect();
    group.insert(
        10,
        ShareToQuote {
            amount: 8,
            ..quoted
        },
    );

    let answers = quote_together(&writer, &group).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 10 {
            let rejection = answer.as_ref().unwrap_err();
            assert_eq!(rejection.code, mint_quote_sv2::error_code::MINT_ERROR);
            assert!(
                rejection.message.contains("7 paid, expected 8"),
                "{rejection}"
            );
        } else {
            let quote = stored(&mint, answer.as_ref().unwrap()).await;
            assert_eq!(quote.amount_paid().value(), group[i].amount);
        }
    }
}

async fn a_quote_created_but_never_indexed_is_found_listed_and_paid(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = QuoteWriter::start(mint.clone()).0;
    let orphan = share(3);
    // As an older mint left it: created by its request, never indexed.
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    let quote_id = add_quote(&mut tx, &orphan).await;
    tx.commit().await.unwrap();

    assert_eq!(writer.quote(orphan.clone(), None).await.unwrap(), quote_id);
    paid_once(&mint, &quote_id, &orphan).await;
    assert_eq!(listed_for(&mint, &orphan).await, vec![quote_id.clone()]);

    // Written again: the same quote, neither paid nor listed twice.
    assert_eq!(writer.quote(orphan.clone(), None).await.unwrap(), quote_id);
    paid_once(&mint, &quote_id, &orphan).await;
    assert_eq!(listed_for(&mint, &orphan).await, vec![quote_id]);
}

async fn a_quote_indexed_but_never_paid_is_paid_and_not_listed_again(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = QuoteWriter::start(mint.clone()).0;
    let leftover = share(4);
    // As an older mint left it: created and indexed (its lists were
    // written with the index), never paid.
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    let quote_id = add_quote(&mut tx, &leftover).await;
    add_index(&mut tx, &leftover, &quote_id).await;
    tx.commit().await.unwrap();
    // Not an answer to a replay: no wallet could mint it.
    assert_eq!(
        writer
            .quote_of(&leftover.share_hex, &leftover.pubkey)
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        writer.quote(leftover.clone(), None).await.unwrap(),
        quote_id
    );
    paid_once(&mint, &quote_id, &leftover).await;
    assert_eq!(listed_for(&mint, &leftover).await, vec![]);
    assert_eq!(
        writer
            .quote_of(&leftover.share_hex, &leftover.pubkey)
            .await
            .unwrap(),
        Some(quote_id)
    );
}

/// Another writer (a mint process on the same database, here an older one
/// that indexed its quotes and paid them later) creates the share's quote
/// first, and commits while this writer's insert of its own quote waits:
/// that insert fails, and the share written again finds the other's quote
/// and pays it.
async fn a_quote_another_writer_creates_first_is_the_answer_paid_once(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let contested = share(9);
    let mut other = mint.localstore().begin_transaction().await.unwrap();
    let winner = add_quote(&mut other, &contested).await;
    add_index(&mut other, &contested, &winner).await;

    let answer = tokio::spawn({
        let (writer, contested) = (writer.clone(), contested.clone());
        async move { writer.quote(contested, None).await }
    });
    backend.until_a_transaction_waits().await;
    other.commit().await.unwrap();

    assert_eq!(answer.await.unwrap(), Ok(winner.clone()));
    paid_once(&mint, &winner, &contested).await;
    if backend.postgres.is_some() {
        assert_eq!(writer.races_lost(), 1);
    }
}

/// A quote an older mint created but never indexed, which another writer
/// indexes first while this writer's index entry waits: the entry is not
/// written, and the share written again finds the other's.
async fn a_share_another_writer_indexes_first_is_answered_with_its_quote(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let orphan = share(6);
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    let quote_id = add_quote(&mut tx, &orphan).await;
    tx.commit().await.unwrap();
    let mut other = mint.localstore().begin_transaction().await.unwrap();
    add_index(&mut other, &orphan, &quote_id).await;

    let answer = tokio::spawn({
        let (writer, orphan) = (writer.clone(), orphan.clone());
        async move { writer.quote(orphan, None).await }
    });
    backend.until_a_transaction_waits().await;
    other.commit().await.unwrap();

    assert_eq!(answer.await.unwrap(), Ok(quote_id.clone()));
    paid_once(&mint, &quote_id, &orphan).await;
    if backend.postgres.is_some() {
        assert_eq!(writer.races_lost(), 1);
    }
}

/// Two mint processes on one PostgreSQL database, each with its writer,
/// quote the same shares at once (in opposite orders): each share has one
/// quote, paid once, indexed and audited once, and both answer its id.
/// The totals as the mint counted them before they were kept: every
/// ehash quote read.
async fn totals_of_every_quote(mint: &Mint) -> Totals {
    let mut totals = Totals::default();
    for quote in mint.mint_quotes().await.unwrap() {
        match quote.state() {
            MintQuoteState::Unpaid => totals.quotes_unpaid += 1,
            MintQuoteState::Paid => totals.quotes_paid += 1,
            MintQuoteState::Issued => totals.quotes_issued += 1,
        }
        totals.ehash_quoted += quote.amount_paid().value();
        totals.ehash_issued += quote.amount_issued().value();
    }
    totals
}

/// The totals as a process that has just started counts them.
async fn counted_afresh(reader: &TotalsReader) -> Totals {
    QuoteTotals::default().refresh(reader).await.unwrap()
}

/// Records `amount` of `quote_id` issued (`None`: what is left), as cdk
/// does when a wallet mints it, inside `tx`.
async fn issue_in(tx: &mut DynMintTransaction, quote_id: &QuoteId, amount: Option<u64>) {
    let mut quote = tx.get_mint_quote(quote_id).await.unwrap().expect("stored");
    let left = quote.amount_paid().value() - quote.amount_issued().value();
    let amount = Amount::new(amount.unwrap_or(left), quote.unit.clone());
    quote.add_issuance(amount).unwrap();
    tx.update_mint_quote(&mut quote).await.unwrap();
}

/// Records `quote_id` issued whole, as cdk does when a wallet mints it.
async fn issue(mint: &Mint, quote_id: &QuoteId) {
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    issue_in(&mut tx, quote_id, None).await;
    tx.commit().await.unwrap();
}

async fn the_totals_follow_new_and_issued_quotes_and_read_only_the_new_ones(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let mut totals = QuoteTotals::default();
    let ids = quoted(&writer, 1..=5).await;
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_paid, fresh.ehash_quoted), (5, 15));
    assert_eq!(fresh, totals_of_every_quote(&mint).await);

    for id in &ids[..2] {
        issue(&mint, id).await;
    }
    quote_all(&writer, &(6..=7).map(share).collect::<Vec<_>>()).await;
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!(
        (fresh.quotes_paid, fresh.quotes_issued, fresh.ehash_issued),
        (5, 2, 3)
    );
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
    assert_eq!(totals.held(), 0, "no quote is held, open or issued");
    // Where cdk's log of issuances is read, what was minted comes from it:
    // only the two new quotes are read. Elsewhere every quote is.
    let follows = backend.totals.follows_issuances();
    assert_eq!(totals.quotes_read(), if follows { 2 } else { 7 });

    totals.refresh(&backend.totals).await.unwrap();
    assert_eq!(totals.quotes_read(), if follows { 0 } else { 7 });

    // Minted in part, then the rest.
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    issue_in(&mut tx, &ids[2], Some(1)).await;
    tx.commit().await.unwrap();
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_paid, fresh.ehash_issued), (5, 4));
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
    issue(&mint, &ids[2]).await;
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_issued, fresh.ehash_issued), (3, 6));
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
    assert_eq!(totals.quotes_read(), if follows { 0 } else { 7 });

    // Another process sharing the database counts the same.
    assert_eq!(counted_afresh(&backend.totals).await, fresh);
}

/// More rows in cdk's log of issuances than a page, some quotes minted in
/// two parts: every mint counted once, by the next refresh and another
/// process alike.
async fn the_totals_count_a_long_log_of_issuances_once(backend: Backend) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let shares: Vec<_> = (0..2_600).map(|i| share(1 + i % 7)).collect();
    let ids: Vec<QuoteId> = quote_together(&writer, &shares)
        .await
        .into_iter()
        .map(|answer| answer.expect("quoted"))
        .collect();
    // Most minted whole, some in two parts, the last hundred not at all.
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    for (i, id) in ids[..2_500].iter().enumerate() {
        if i % 10 == 0 {
            issue_in(&mut tx, id, Some(1)).await;
        }
        issue_in(&mut tx, id, None).await;
    }
    tx.commit().await.unwrap();

    let mut totals = QuoteTotals::default();
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!(
        (fresh.quotes_paid, fresh.quotes_issued),
        (100, 2_500),
        "{fresh:?}"
    );
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
    assert_eq!(totals.refresh(&backend.totals).await.unwrap(), fresh);
    assert_eq!(counted_afresh(&backend.totals).await, fresh);
}

async fn a_restarted_mint_resumes_its_totals_from_the_checkpoint(backend: Backend) {
    let mint = backend.mint.clone();
    let db = mint.localstore();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let ids = quoted(&writer, 1..=6).await;
    issue(&mint, &ids[0]).await;
    let mut before = QuoteTotals::default();
    before.refresh(&backend.totals).await.unwrap();
    // Kept only where a restart finds the database again.
    let follows = backend.totals.follows_issuances();
    assert_eq!(before.checkpoint(&db).await.unwrap(), follows);
    assert!(!before.checkpoint(&db).await.unwrap(), "not due again yet");

    // After the checkpoint: two new quotes, an open one minted.
    quote_all(&writer, &(7..=8).map(share).collect::<Vec<_>>()).await;
    issue(&mint, &ids[1]).await;
    let mut restarted = QuoteTotals::default();
    let fresh = restarted.refresh(&backend.totals).await.unwrap();
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
    assert_eq!((fresh.quotes_paid, fresh.quotes_issued), (6, 2));
    // The two new ones, not all eight.
    assert_eq!(restarted.quotes_read(), if follows { 2 } else { 8 });

    // An unreadable checkpoint: every quote read again, the same totals.
    let mut tx = db.begin_transaction().await.unwrap();
    let garbage = b"QTC1 cut short";
    tx.kv_write(KV_NAMESPACE, "quote_totals", "checkpoint", garbage)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut unreadable = QuoteTotals::default();
    assert_eq!(unreadable.refresh(&backend.totals).await.unwrap(), fresh);
    assert_eq!(unreadable.quotes_read(), 8);
}

async fn quotes_written_together_share_list_entries_and_entries_of_one_still_count(
    backend: Backend,
) {
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    // One at a time: an entry each, as older mints listed every quote.
    for amount in 1..=3 {
        writer.quote(share(amount), None).await.expect("quoted");
    }
    let shares: Vec<_> = (4..=303).map(share).collect();
    quote_together(&writer, &shares).await;
    assert!(
        writer.groups_written() <= 6,
        "{} groups",
        writer.groups_written()
    );

    let entries = mint
        .localstore()
        .kv_list(KV_NAMESPACE, "quote_ids")
        .await
        .unwrap()
        .len();
    // 3 entries of one, then at most 64 ids an entry in at most 3 groups.
    assert!(entries <= 3 + 7, "303 quotes listed in {entries} entries");
    let totals = counted_afresh(&backend.totals).await;
    assert_eq!(totals.quotes_paid, 303);
    assert_eq!(totals, totals_of_every_quote(&mint).await);
}

async fn a_keys_quotes_written_together_are_read_from_any_of_their_positions(backend: Backend) {
    let mint = backend.mint.clone();
    let db = mint.localstore();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let one_key = share(1);
    // One quote on its own, then 150 together, all for one key.
    let shares: Vec<_> = (1..=151)
        .map(|amount| ShareToQuote {
            pubkey: one_key.pubkey,
            locking_key: one_key.locking_key,
            ..share(amount)
        })
        .collect();
    writer.quote(shares[0].clone(), None).await.expect("quoted");
    let answers = quote_together(&writer, &shares[1..]).await;
    let quoted: std::collections::HashSet<QuoteId> =
        answers.into_iter().map(|a| a.expect("quoted")).collect();

    let key = &one_key.locking_key;
    let all = crate::key_index::read(&db, key, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 151);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "positions ascend");
    let later: std::collections::HashSet<QuoteId> =
        all[1..].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(later, quoted);
    let entries = db.kv_list(KV_NAMESPACE, &format!("kq{key}")).await.unwrap();
    assert!(
        entries.len() <= 1 + 3 + 2,
        "151 quotes in {} entries",
        entries.len()
    );
    for (i, (position, _)) in all.iter().enumerate() {
        let rest = crate::key_index::read(&db, key, *position, 1000).await;
        assert_eq!(rest.unwrap(), all[i..], "from position {position}");
        let two = crate::key_index::read(&db, key, *position, 2).await;
        assert_eq!(two.unwrap(), all[i..(i + 2).min(all.len())]);
    }
    // Past the last id of an entry: the next entry's first.
    let past_first_entry = (1 << crate::kv_log::ID_BITS) - 1;
    let rest = crate::key_index::read(&db, key, past_first_entry, 1000).await;
    assert_eq!(rest.unwrap(), all[1..]);
}

/// Quotes of shares worth `amounts`, as a mint that kept no list made
/// them: unpaid, indexed.
async fn quoted_by_an_older_mint(mint: &Mint, amounts: std::ops::RangeInclusive<u64>) {
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    for amount in amounts {
        let share = share(amount);
        let quote_id = add_quote(&mut tx, &share).await;
        add_index(&mut tx, &share, &quote_id).await;
    }
    tx.commit().await.unwrap();
}

async fn quotes_made_before_the_list_are_listed_once(backend: Backend) {
    let mint = backend.mint.clone();
    quoted_by_an_older_mint(&mint, 1..=3).await;

    assert_eq!(crate::quote_totals::backfill(&mint).await.unwrap(), 3);
    assert_eq!(crate::quote_totals::backfill(&mint).await.unwrap(), 0);
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    quote_all(&writer, &[share(4)]).await;
    let totals = counted_afresh(&backend.totals).await;
    assert_eq!((totals.quotes_unpaid, totals.quotes_paid), (3, 1));
    assert_eq!(totals, totals_of_every_quote(&mint).await);
}

/// An older mint's leftover, created but never indexed, listed by the
/// backfill while unpaid: when its share comes again the writer indexes
/// and pays it, and the totals count it once.
async fn a_leftover_listed_unpaid_then_paid_when_its_share_comes_again_counts_once(
    backend: Backend,
) {
    let mint = backend.mint.clone();
    let orphan = share(5);
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    let quote_id = add_quote(&mut tx, &orphan).await;
    tx.commit().await.unwrap();
    assert_eq!(crate::quote_totals::backfill(&mint).await.unwrap(), 1);
    let mut totals = QuoteTotals::default();
    let before = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((before.quotes_unpaid, before.quotes_paid), (1, 0));

    let writer = QuoteWriter::start(mint.clone()).0;
    assert_eq!(writer.quote(orphan.clone(), None).await.unwrap(), quote_id);
    let after = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((after.quotes_unpaid, after.quotes_paid), (0, 1));
    assert_eq!(after, totals_of_every_quote(&mint).await);
    assert_eq!(counted_afresh(&backend.totals).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_quote_minted_in_a_transaction_that_commits_late_is_counted() {
    let backend = Backend::postgres().await;
    let mint = backend.mint.clone();
    let writer = Arc::new(QuoteWriter::start(mint.clone()).0);
    let ids = quoted(&writer, 1..=3).await;
    let mut totals = QuoteTotals::default();
    totals.refresh(&backend.totals).await.unwrap();

    // The first takes its number in the log, the second commits past it.
    let db = mint.localstore();
    let mut late = db.begin_transaction().await.unwrap();
    issue_in(&mut late, &ids[0], None).await;
    issue(&mint, &ids[1]).await;
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_paid, fresh.quotes_issued), (2, 1));

    late.commit().await.unwrap();
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_paid, fresh.quotes_issued), (1, 2));
    assert_eq!(fresh, totals_of_every_quote(&mint).await);

    // One rolled back leaves its number unused, and counts nothing.
    let mut rolled_back = db.begin_transaction().await.unwrap();
    issue_in(&mut rolled_back, &ids[2], None).await;
    rolled_back.rollback().await.unwrap();
    issue(&mint, &ids[2]).await;
    let fresh = totals.refresh(&backend.totals).await.unwrap();
    assert_eq!((fresh.quotes_paid, fresh.quotes_issued), (0, 3));
    assert_eq!(fresh, totals_of_every_quote(&mint).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_postgres_answer_one_quote_per_share_paid_once() {
    let backend = Backend::postgres().await;
    // Opened after the first has set the database up, as a second process.
    let other = backend.another_mint().await;
    let writers = [
        Arc::new(QuoteWriter::start(backend.mint.clone()).0),
        Arc::new(QuoteWriter::start(other).0),
    ];
    let shares: Vec<_> = (1..=300).map(share).collect();
    let reversed: Vec<_> = shares.iter().rev().cloned().collect();

    let (answers, reversed_answers) = tokio::join!(
        quote_all(&writers[0], &shares),
        quote_all(&writers[1], &reversed)
    );

    let mint = &backend.mint;
    let db = mint.localstore();
    for (i, share) in shares.iter().enumerate() {
        let quote_id = answers[i].clone().expect("quoted");
        assert_eq!(reversed_answers[shares.len() - 1 - i], Ok(quote_id.clone()));
        paid_once(mint, &quote_id, share).await;
        assert_eq!(listed_for(mint, share).await, vec![quote_id]);
    }
    assert_eq!(mint.mint_quotes().await.unwrap().len(), shares.len());
    assert_eq!(
        db.kv_list(KV_NAMESPACE, "audit").await.unwrap().len(),
        shares.len()
    );
    let totals = counted_afresh(&backend.totals).await;
    assert_eq!(
        totals.quotes_paid,
        shares.len() as u64,
        "each quote listed once"
    );
}

/// A database that stops answering (here: a writer that holds the writers'
/// turn and never finishes) costs the quotes waiting on it a `mint-error`
/// after the commit timeout, not the writer itself: once the database
/// answers again, the same shares are quoted, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_transaction_stuck_past_the_commit_timeout_fails_its_shares_and_the_writer_goes_on(
) {
    let backend = Backend::postgres().await;
    let mint = backend.mint.clone();
    let timeout = std::time::Duration::from_millis(500);
    let writer = Arc::new(QuoteWriter::start_with(mint.clone(), timeout).0);
    let mut stuck = mint.localstore().begin_transaction().await.unwrap();
    take_turn(&mut stuck).await.ok().unwrap();

    let shares: Vec<_> = (1..=3).map(share).collect();
    let answers = quote_together(&writer, &shares).await;
    for answer in &answers {
        let rejection = answer.as_ref().unwrap_err();
        assert_eq!(rejection.code, mint_quote_sv2::error_code::MINT_ERROR);
        assert!(rejection.message.contains("did not finish"), "{rejection}");
    }
    // One group, or more where a busy machine split them: each given up.
    assert!((1..=3).contains(&writer.groups_written()));

    stuck.rollback().await.unwrap();
    // A busy machine can make a free database miss 500 ms too: the pool
    // asks again, as the answer says. A writer still stuck never answers.
    let mut waiting = shares.clone();
    for _ in 0..20 {
        let again = quote_together(&writer, &waiting).await;
        let mut slow = vec![];
        for (share, answer) in waiting.into_iter().zip(again) {
            match answer {
                Ok(quote_id) => paid_once(&mint, &quote_id, &share).await,
                Err(rejection) if rejection.message.contains("did not finish") => slow.push(share),
                Err(rejection) => panic!("{rejection}"),
            }
        }
        waiting = slow;
        if waiting.is_empty() {
            return;
        }
    }
    panic!("the writer still fails {} shares", waiting.len());
}

/// Two mint processes of a database upgraded together list the quotes of
/// older mints at once: they take turns, and only the first lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_mints_starting_together_list_older_quotes_once() {
    let backend = Backend::postgres().await;
    let mint = backend.mint.clone();
    let db = mint.localstore();
    quoted_by_an_older_mint(&mint, 1..=3).await;

    // Both wait for the turn a third writer holds, then go one by one.
    let mut holder = db.begin_transaction().await.unwrap();
    writers_turn(&mut holder).await.unwrap();
    let other = backend.another_mint().await;
    let starting = [mint.clone(), other].map(|mint| {
        tokio::spawn(async move { crate::quote_totals::backfill(&mint).await.unwrap() })
    });
    backend.until_transactions_wait(2).await;
    holder.commit().await.unwrap();
    let mut listed = vec![];
    for start in starting {
        listed.push(start.await.unwrap());
    }
    listed.sort();
    assert_eq!(listed, [0, 3]);
    let totals = counted_afresh(&backend.totals).await;
    assert_eq!(totals.quotes_unpaid, 3, "each listed once");
    assert_eq!(totals, totals_of_every_quote(&mint).await);
}

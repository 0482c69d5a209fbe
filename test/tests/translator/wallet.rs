//! The translator's wallet against a real mint: minting its quotes exactly
//! once through crashes, lost answers and a killed mint.

use super::consolidation::{fewest, proof_rows};
use super::mint_proxies::answer_dropping_proxy;
use super::*;

/// A mint with its database in memory (as the mint's own tests start it),
/// the pool's link to it, and a quote store in a fresh directory.
pub(super) async fn mint_link_and_store() -> (TestMint, PoolClient, tempfile::TempDir, QuoteStore) {
    init_logging();
    let mint = TestMint::start(mint_support::config(":memory:")).await;
    let link = mint.pool().await;
    let dir = tempfile::tempdir().unwrap();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    (mint, link, dir, store)
}

/// A paid quote worth 2^zero_bits, locked to `key`.
async fn quote(link: &mut PoolClient, zero_bits: u32, key: LockingKey) -> (String, u64) {
    (
        link.quote_id(share(zero_bits, key)).await,
        1u64 << zero_bits,
    )
}

pub(crate) fn seed() -> [u8; 64] {
    translator::config::seed_from_mnemonic(TRANSLATOR_MNEMONIC).unwrap()
}

/// The translator's wallet (the test mnemonic) on `mint`, its database in `dir`.
pub(super) async fn open_wallet(mint: &TestMint, dir: &Path) -> EhashWallet {
    wallet_at(&mint.running.http_url(), &dir.join("wallet.sqlite")).await
}

/// The translator's wallet (the test mnemonic) of the mint at `url`, its
/// database at `db`.
pub(super) async fn wallet_at(url: &str, db: &Path) -> EhashWallet {
    EhashWallet::open(url, DEFAULT_MINT_TIMEOUT, db, seed())
        .await
        .unwrap()
}

/// The output of `command` on the wallet and quote store, as the CLI prints it.
pub(crate) async fn wallet_command(
    wallet: &EhashWallet,
    store: &QuoteStore,
    command: WalletCommand,
) -> String {
    translator::cli::run_wallet_command_on(wallet, store, command)
        .await
        .unwrap()
}

/// `wallet send amount` from `wallet`; a fresh wallet of the mint at
/// `mint_url` receives exactly that. Returns the token.
pub(crate) async fn send_to_fresh_wallet(
    wallet: &EhashWallet,
    store: &QuoteStore,
    mint_url: &str,
    amount: u64,
) -> String {
    let out = wallet_command(wallet, store, WalletCommand::Send { amount }).await;
    let token = out.trim();
    let received = hashpool_tests::wallet(mint_url)
        .receive(token, ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), amount);
    token.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_mints_its_quotes_exactly_once_and_a_sent_token_is_received_elsewhere() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let mut total = 0;
    for bits in [1, 2, 3, 4, 5] {
        let (id, amount) = quote(&mut link, bits, key).await;
        store
            .insert(&quote_record(&id, amount, key, QuoteState::Pending))
            .unwrap();
        total += amount;
    }
    wallet.recover().await.unwrap();
    // Batches of at most 3, side by side: all five in one round.
    let round = wallet.mint_pending(&store, 3).await.unwrap();
    assert_eq!((round.minted.len(), round.left), (5, 0));
    assert_eq!(round.amount, total);
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "balance = sum of the quotes, exactly"
    );
    // nothing left, nothing twice
    let again = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(again.minted.is_empty() && again.already_issued.is_empty());
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (5, total));

    // wallet send -> a fresh wallet receives it
    let token = send_to_fresh_wallet(&wallet, &store, &mint.running.http_url(), 7).await;
    assert!(token.starts_with("cashuB"), "{token}");
    assert_eq!(wallet.balance().await.unwrap(), total - 7);
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_minting_before_recording_mints_nothing_twice() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let mut quotes = vec![];
    let mut total = 0;
    {
        let wallet = open_wallet(&mint, dir.path()).await;
        let key = wallet.locking_key();
        for bits in [3, 4, 5, 6] {
            let (id, amount) = quote(&mut link, bits, key).await;
            store
                .insert(&quote_record(&id, amount, key, QuoteState::Pending))
                .unwrap();
            quotes.push(id);
            total += amount;
        }
        // The wallet minted two quotes, then the process died before the
        // records said so.
        let secret = locking_secret(&seed());
        for id in &quotes[..2] {
            wallet
                .cdk()
                .fetch_mint_quote(id, Some(ehash_method()))
                .await
                .unwrap();
        }
        let ids: Vec<&str> = quotes[..2].iter().map(String::as_str).collect();
        let keys: HashMap<String, SecretKey> = quotes[..2]
            .iter()
            .map(|q| (q.clone(), secret.clone()))
            .collect();
        wallet
            .cdk()
            .batch_mint(&ids, SplitTarget::default(), None, Some(keys))
            .await
            .unwrap();
    }
    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.already_issued.len(), 2);
    assert_eq!(round.minted.len(), 2);
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (4, total));
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_the_mint_issued_elsewhere_is_found_when_its_batch_is_refused() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let (elsewhere, amount) = quote(&mut link, 3, key).await;
    let (fresh, fresh_amount) = quote(&mut link, 4, key).await;
    // Another wallet with the same seed (its own database, its secret
    // counter elsewhere: not our outputs) mints one first.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_wallet(&mint, other_dir.path()).await;
    other.recover().await.unwrap();
    let keyset = other.cdk().active_keyset().await.unwrap().id;
    other
        .cdk()
        .localstore
        .increment_keyset_counter(&keyset, 1000)
        .await
        .unwrap();
    let other_store = QuoteStore::open_in_memory().unwrap();
    other_store
        .insert(&quote_record(&elsewhere, amount, key, QuoteState::Pending))
        .unwrap();
    let minted = other.mint_pending(&other_store, 10).await.unwrap();
    assert_eq!(minted.amount, amount);
    // Our wallet records both as paid (the pool was told they were); the
    // mint refuses the batch, and asking it about each quote sorts them out.
    for (id, amount) in [(&elsewhere, amount), (&fresh, fresh_amount)] {
        store
            .insert(&quote_record(id, amount, key, QuoteState::Pending))
            .unwrap();
    }
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 10).await.unwrap();
    assert_eq!(round.already_issued, vec![(elsewhere, amount)]);
    assert_eq!(round.minted, vec![(fresh, fresh_amount)]);
    assert_eq!(wallet.balance().await.unwrap(), fresh_amount);
    assert_eq!(store.totals().unwrap().minted, (2, amount + fresh_amount));
    mint.stop().await;
}

/// Two wallets on one seed, each with its own database (a second
/// translator on the same mnemonic), derive the same outputs. The one that
/// mints second finds its batch's outputs signed for the other's quotes: it
/// takes none of those signatures for its own quotes, leaves no batch open,
/// and mints its quotes at other counters, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_whose_outputs_another_on_its_seed_had_signed_mints_at_other_counters() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    // Both started before either minted: start-up finds nothing signed.
    wallet.recover().await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_wallet(&mint, other_dir.path()).await;
    other.recover().await.unwrap();
    let other_store = QuoteStore::open_in_memory().unwrap();
    let other_total = pending_quotes(&mut link, &other_store, key, [3, 5]).await;
    let minted = other.mint_pending(&other_store, 10).await.unwrap();
    assert_eq!(minted.amount, other_total);

    let total = pending_quotes(&mut link, &store, key, [4, 6]).await;
    let round = wallet.mint_pending(&store, 10).await.unwrap();
    assert_eq!(round.amount, total, "{round:?}");
    assert!(round.already_issued.is_empty(), "{round:?}");
    let url = mint.running.http_url();
    each_issued_once_to(&wallet, &store, &mut link, &url, (4, total)).await;
    mint.stop().await;
}

/// A wallet whose database is fresh (lost, or a second translator on the
/// mnemonic) finds at start-up the outputs the mint signed at its counters
/// for the seed's earlier use, and moves past them before it mints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_starting_on_a_used_seed_moves_its_counter_past_what_the_mint_signed() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let key = open_wallet(&mint, dir.path()).await.locking_key();
    let earlier_dir = tempfile::tempdir().unwrap();
    let earlier = open_wallet(&mint, earlier_dir.path()).await;
    earlier.recover().await.unwrap();
    let earlier_store = QuoteStore::open_in_memory().unwrap();
    // One batch of 62 in five outputs: counters 0 to 4.
    pending_quotes(&mut link, &earlier_store, key, [1, 2, 3, 4, 5]).await;
    let minted = earlier.mint_pending(&earlier_store, 5).await.unwrap();
    assert_eq!(minted.minted.len(), 5);

    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let keyset = wallet.cdk().active_keyset().await.unwrap().id;
    let counter = wallet
        .cdk()
        .localstore
        .increment_keyset_counter(&keyset, 0)
        .await
        .unwrap();
    // Probes at 0, 1, 3 signed, 7 not, then of 4, 5 and 6 only 4: the
    // counter is 5.
    assert_eq!(counter, 5);
    let total = pending_quotes(&mut link, &store, key, [4, 6]).await;
    let round = wallet.mint_pending(&store, 10).await.unwrap();
    assert_eq!(round.amount, total, "{round:?}");
    let url = mint.running.http_url();
    each_issued_once_to(&wallet, &store, &mut link, &url, (7, total)).await;
    mint.stop().await;
}

/// A wallet started on a used seed moves its counter just past the last
/// output the mint signed, however far from the others, leaving no run of
/// unused outputs behind: a restore from the mnemonic, which stops at
/// `--gap` batches never signed, finds what it minted after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_wallet_mints_past_a_used_seed_is_found_by_a_restore() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let key = open_wallet(&mint, dir.path()).await.locking_key();
    let earlier_dir = tempfile::tempdir().unwrap();
    let earlier = open_wallet(&mint, earlier_dir.path()).await;
    earlier.recover().await.unwrap();
    let keyset = earlier.cdk().active_keyset().await.unwrap().id;
    let earlier_store = QuoteStore::open_in_memory().unwrap();
    // Five outputs at counters 0 to 4, then five at 255 to 259 (where a
    // probe lands; the next is at 511).
    let mut earlier_total = 0;
    for (bits, skip) in [([1, 2, 3, 4, 5], 250), ([6, 7, 8, 9, 10], 0)] {
        earlier_total += pending_quotes(&mut link, &earlier_store, key, bits).await;
        let round = earlier.mint_pending(&earlier_store, 5).await.unwrap();
        assert_eq!(round.minted.len(), 5, "{round:?}");
        let store = &earlier.cdk().localstore;
        store.increment_keyset_counter(&keyset, skip).await.unwrap();
    }
    drop(earlier);

    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let counters = &wallet.cdk().localstore;
    assert_eq!(
        counters.increment_keyset_counter(&keyset, 0).await.unwrap(),
        260
    );
    let total = pending_quotes(&mut link, &store, key, [4, 6]).await;
    assert_eq!(wallet.mint_pending(&store, 10).await.unwrap().amount, total);
    drop(wallet);

    // Batches of 100 from 0: 100-199 never signed, 200-299 signed.
    let new_dir = tempfile::tempdir().unwrap();
    let restored = open_wallet(&mint, new_dir.path()).await;
    let restore = WalletCommand::Restore { gap: 2 };
    let out = wallet_command(&restored, &store, restore).await;
    let (all, unit) = (earlier_total + total, ehash::constants::UNIT);
    assert!(
        out.contains(&format!("restored: {all} {unit} spendable")),
        "{out}"
    );
    assert_eq!(restored.balance().await.unwrap(), all);
    mint.stop().await;
}

/// Paid quotes of 2^bits for each of `bits`, recorded pending; their sum.
pub(super) async fn pending_quotes(
    link: &mut PoolClient,
    store: &QuoteStore,
    key: LockingKey,
    bits: impl IntoIterator<Item = u32>,
) -> u64 {
    let mut total = 0;
    for bits in bits {
        let (id, amount) = quote(link, bits, key).await;
        store
            .insert(&quote_record(&id, amount, key, QuoteState::Pending))
            .unwrap();
        total += amount;
    }
    total
}

/// Quotes the mint cannot mint (another mint's, say) are held back once it
/// refuses them: the wallet's other quotes are minted, however many of
/// the refused ones come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_the_mint_refuses_never_hold_up_the_others() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let batch = 2;
    let unknown: Vec<String> = (0..batch * BATCHES_PER_ROUND)
        .map(|n| format!("00000000-0000-4000-8000-{n:012x}"))
        .collect();
    for id in &unknown {
        store
            .insert(&quote_record(id, 2, key, QuoteState::Pending))
            .unwrap();
    }
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, batch).await.unwrap();
    assert_eq!((round.minted.len(), round.left), (0, unknown.len()));

    let total = pending_quotes(&mut link, &store, key, [1, 2, 3]).await;
    let round = wallet.mint_pending(&store, batch).await.unwrap();
    assert_eq!(round.minted.len(), 3, "{round:?}");
    assert_eq!(round.left, 0, "the refused ones wait: {round:?}");
    assert_eq!(wallet.balance().await.unwrap(), total);
    let held = store.all().unwrap();
    let held = held.iter().find(|r| r.quote_id == unknown[0]).unwrap();
    assert_eq!(held.state, QuoteState::Pending);
    assert!(held.last_error.is_some());
    mint.stop().await;
}

/// The mint issued its (`quotes`, total) quotes, each once, all to
/// `wallet`: no batch left open, the balance their total, and the proofs
/// good (sent, and received by a fresh wallet of the mint at `url`).
pub(super) async fn each_issued_once_to(
    wallet: &EhashWallet,
    store: &QuoteStore,
    link: &mut PoolClient,
    url: &str,
    (quotes, total): (u64, u64),
) {
    assert!(store.batches().unwrap().is_empty(), "the batch is closed");
    assert_eq!(wallet.balance().await.unwrap(), total, "each proof once");
    let stats = link.stats().await;
    assert_eq!((stats.quotes_paid, stats.quotes_issued), (0, quotes));
    send_to_fresh_wallet(wallet, store, url, total).await;
}

/// One quote the mint refuses in a batch (a notice that named the wrong
/// key, here) refuses the whole batch: its batch-mates are minted all the
/// same, and it alone waits. A quote recorded at another amount than the
/// mint holds (a wrong notice too) is minted, and counted, at the mint's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_the_mint_refuses_in_a_batch_holds_up_none_of_its_batch_mates() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    let good = pending_quotes(&mut link, &store, key, 1..=5).await;
    let other = LockingKey::from_bytes(&SecretKey::generate().public_key().to_bytes()).unwrap();
    let (foreign, amount) = quote(&mut link, 2, other).await;
    let (misstated, worth) = quote(&mut link, 3, key).await;
    for record in [
        quote_record(&foreign, amount, key, QuoteState::Pending),
        quote_record(&misstated, worth + 1, key, QuoteState::Pending),
    ] {
        store.insert(&record).unwrap();
    }
    wallet.recover().await.unwrap();

    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.minted.len(), 6, "{round:?}");
    assert_eq!(round.amount, good + worth);
    assert_eq!(wallet.balance().await.unwrap(), good + worth);
    let records = store.all().unwrap();
    let record = |id: &str| records.iter().find(|r| r.quote_id == id).unwrap();
    assert_eq!(record(&misstated).amount, worth, "at the mint's amount");
    let held = record(&foreign);
    assert_eq!(held.state, QuoteState::Pending);
    assert!(held.last_error.is_some(), "{held:?}");
    mint.stop().await;
}

/// The mint signs a batch and its answer never reaches the wallet: the
/// wallet asks the mint what it signed (NUT-09) and keeps those proofs,
/// minting nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_was_lost_is_restored_from_the_mint_not_minted_again() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let (proxy, dropped) =
        answer_dropping_proxy(mint.running.http_addr, &["/v1/mint/ehash/batch"]).await;
    let url = format!("http://{proxy}");
    let wallet = wallet_at(&url, &dir.path().join("wallet.sqlite")).await;
    let key = wallet.locking_key();
    let total = pending_quotes(&mut link, &store, key, 1..=6).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(*dropped.lock().unwrap(), ["/v1/mint/ehash/batch"]);
    assert_eq!(
        (round.minted.len(), round.amount, round.left),
        (6, total, 0)
    );
    each_issued_once_to(&wallet, &store, &mut link, &url, (6, total)).await;
    mint.stop().await;
}

/// A process that dies with a batch open (the mint signed it, the answer
/// and the wallet's question about it lost) leaves it to the next start:
/// the next round settles it first, then mints the newer quotes, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_left_by_a_dead_process_is_settled_before_new_ones() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let lost = ["/v1/mint/ehash/batch", "/v1/restore"];
    let (proxy, dropped) = answer_dropping_proxy(mint.running.http_addr, &lost).await;
    let db = dir.path().join("wallet.sqlite");
    let key = {
        // Recovered on the mint itself: the proxy drops the round's answers.
        let wallet = open_wallet(&mint, dir.path()).await;
        wallet.recover().await.unwrap();
        wallet.locking_key()
    };
    let first = pending_quotes(&mut link, &store, key, 1..=3).await;
    {
        let wallet = wallet_at(&format!("http://{proxy}"), &db).await;
        assert!(wallet.mint_pending(&store, 50).await.is_err());
        assert_eq!(*dropped.lock().unwrap(), lost);
        assert_eq!(store.batches().unwrap().len(), 1, "left open");
        assert_eq!(wallet.balance().await.unwrap(), 0);
    }
    let second = pending_quotes(&mut link, &store, key, 4..=5).await;
    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!((round.minted.len(), round.left), (5, 0));
    assert!(store.batches().unwrap().is_empty());
    assert_eq!(store.totals().unwrap().minted, (5, first + second));
    assert_eq!(wallet.balance().await.unwrap(), first + second);
    let stats = link.stats().await;
    assert_eq!((stats.quotes_paid, stats.quotes_issued), (0, 5));
    mint.stop().await;
}

/// A batch that cannot be settled (its keyset unknown to the mint) stays
/// open, logged, and holds up none of the wallet's other quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_settled_holds_up_no_other_quote() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    wallet.recover().await.unwrap();
    let key = wallet.locking_key();
    let (stuck_id, stuck_amount) = quote(&mut link, 4, key).await;
    store
        .insert(&quote_record(
            &stuck_id,
            stuck_amount,
            key,
            QuoteState::Pending,
        ))
        .unwrap();
    let mut stuck = [translator::quotes::MintBatch {
        id: 0,
        keyset_id: "00ffffffffffffff".into(),
        counter_start: 0,
        quotes: vec![(stuck_id, stuck_amount)],
        unanswered_since: 0,
    }];
    store.open_batches(&mut stuck).unwrap();
    let others = pending_quotes(&mut link, &store, key, 1..=3).await;
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.minted.len(), 3, "{round:?}");
    assert_eq!(wallet.balance().await.unwrap(), others);
    assert_eq!(
        store.batches().unwrap().len(),
        1,
        "the stuck batch stays open"
    );
    mint.stop().await;
}

/// A process stored a batch's proofs and died before closing the batch;
/// the next start consolidates those proofs (spent, their rows deleted)
/// before it settles the batch: settling adds none of them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_settled_after_its_proofs_were_consolidated_adds_none_back() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let lost = ["/v1/mint/ehash/batch", "/v1/restore"];
    let lost_twice = [lost, lost].concat();
    let (proxy, _) = answer_dropping_proxy(mint.running.http_addr, &lost_twice).await;
    let db = dir.path().join("wallet.sqlite");
    {
        // Recovered on the mint itself: the proxy drops the round's answers.
        open_wallet(&mint, dir.path())
            .await
            .recover()
            .await
            .unwrap();
        let wallet = wallet_at(&format!("http://{proxy}"), &db).await;
        let key = wallet.locking_key();
        // Two batches of three quotes of 2: two proofs each (4 + 2).
        pending_quotes(&mut link, &store, key, [1; 6]).await;
        assert!(wallet.mint_pending(&store, 3).await.is_err());
        assert_eq!(store.batches().unwrap().len(), 2, "left open");
    }
    let wallet = open_wallet(&mint, dir.path()).await;
    // As if the dead process had stored the batches' proofs: the wallet's
    // own seed restores them (NUT-13).
    wallet.cdk().restore().await.unwrap();
    assert_eq!(
        (wallet.balance().await.unwrap(), proof_rows(&wallet).await),
        (12, 4)
    );
    let kept = wallet.consolidate(0).await.unwrap();
    assert_eq!((kept.swapped, kept.proofs), (4, fewest(12)));

    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.minted.len(), 6, "the batches are settled");
    assert!(store.batches().unwrap().is_empty());
    assert_eq!(wallet.balance().await.unwrap(), 12, "no proof added back");
    assert_eq!(proof_rows(&wallet).await, fewest(12));
    send_to_fresh_wallet(&wallet, &store, &mint.running.http_url(), 12).await;
    mint.stop().await;
}

/// Thousands of quotes minted in NUT-29 batches, the mint (its own process)
/// killed with SIGKILL while a batch is on its way: every quote is issued
/// once and minted once, and the wallet holds exactly their sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_quotes_minted_in_batches_across_a_mint_kill_each_exactly_once() {
    const QUOTES: u64 = 2000;
    const BATCH: usize = 100;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let (http, link_addr) = (files.http, files.link);
    let mut mint = files.spawn().await;
    let mut link = PoolClient::authenticated(link_addr, mint_support::POOL_SECRET).await;

    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let wallet = wallet_at(&files.url(), &dir.path().join("wallet.sqlite")).await;
    let key = wallet.locking_key();
    let mut records = Vec::new();
    for i in 0..QUOTES {
        let (id, amount) = quote(&mut link, (i % 4) as u32, key).await;
        records.push(quote_record(&id, amount, key, QuoteState::Pending));
    }
    let total: u64 = records.iter().map(|r| r.amount).sum();
    store.record(&records, &[]).unwrap();
    wallet.recover().await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let (mut rounds, mut failed, mut killed) = (0, 0, false);
    let (mut last_round, mut left_by_kill) = (Duration::ZERO, 0);
    loop {
        let minted = store.totals().unwrap().minted.0;
        if minted == QUOTES {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{minted} of {QUOTES} minted after {rounds} rounds"
        );
        rounds += 1;
        let started = std::time::Instant::now();
        let result = if !killed && minted >= QUOTES / 2 {
            // Killed well into a round, as the last one went: with its
            // batches on their way.
            killed = true;
            let kill = async {
                tokio::time::sleep(last_round * 3 / 5).await;
                mint.kill();
            };
            let (result, ()) = tokio::join!(wallet.mint_pending(&store, BATCH), kill);
            mint.restart();
            until_listening(http, "mint http").await;
            left_by_kill = result.as_ref().map_or(0, |round| round.left);
            result
        } else {
            wallet.mint_pending(&store, BATCH).await
        };
        last_round = started.elapsed();
        if let Err(e) = result {
            failed += 1;
            println!("minting round failed: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "{QUOTES} quotes minted in {rounds} rounds ({failed} failed, \
         {left_by_kill} left pending by the kill)"
    );
    assert!(killed);
    assert_eq!(store.totals().unwrap().minted, (QUOTES, total));
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "nothing lost, nothing twice"
    );
    let mut link = PoolClient::authenticated(link_addr, mint_support::POOL_SECRET).await;
    let stats = link.stats().await;
    assert_eq!(
        (stats.quotes_unpaid, stats.quotes_paid, stats.quotes_issued),
        (0, 0, QUOTES),
        "every quote issued once"
    );
    mint.kill();
}

/// The wallets of four miners minting at once, each round's batches side
/// by side, against one mint on file SQLite (its own process, the shipped
/// config): the mint serves every batch, none fails waiting for the
/// database, and each quote is issued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_minting_at_once_have_every_batch_served() {
    const WALLETS: u8 = 4;
    const QUOTES: u64 = 200;
    const BATCH: usize = 10;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let mint = files.spawn().await;
    let mut link = PoolClient::authenticated(files.link, mint_support::POOL_SECRET).await;

    let mut miners = vec![];
    for n in 1..=WALLETS {
        let path = |name: &str| dir.path().join(format!("{name}-{n}.sqlite"));
        let wallet =
            EhashWallet::open(&files.url(), DEFAULT_MINT_TIMEOUT, &path("wallet"), [n; 64])
                .await
                .unwrap();
        let store = QuoteStore::open(&path("quotes")).unwrap();
        let key = wallet.locking_key();
        let mut records = vec![];
        for i in 0..QUOTES {
            let (id, amount) = quote(&mut link, (i % 4) as u32, key).await;
            records.push(quote_record(&id, amount, key, QuoteState::Pending));
        }
        store.record(&records, &[]).unwrap();
        let total: u64 = records.iter().map(|r| r.amount).sum();
        miners.push((wallet, store, total));
    }
    let minting = miners.iter().map(|(wallet, store, _)| async move {
        let mut rounds = 0;
        loop {
            let round = wallet.mint_pending(store, BATCH).await.unwrap();
            assert_eq!(round.left, 0, "quotes left pending: a batch was not served");
            if round.minted.is_empty() {
                return rounds;
            }
            rounds += 1;
        }
    });
    let rounds = futures::future::join_all(minting).await;
    println!("rounds per wallet: {rounds:?}");
    for (wallet, store, total) in &miners {
        assert_eq!(store.totals().unwrap().minted, (QUOTES, *total));
        assert_eq!(wallet.balance().await.unwrap(), *total);
    }
    let stats = link.stats().await;
    assert_eq!(
        (stats.quotes_paid, stats.quotes_issued),
        (0, QUOTES * u64::from(WALLETS)),
        "every quote issued once"
    );
    drop(mint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_locked_to_a_miners_key_are_listed_and_only_that_miner_can_mint_them() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let miner_secret = SecretKey::generate();
    let miner_key = LockingKey::from_bytes(&miner_secret.public_key().to_bytes()).unwrap();
    let (id, amount) = quote(&mut link, 4, miner_key).await;
    store
        .insert(&quote_record(&id, amount, miner_key, QuoteState::Foreign))
        .unwrap();

    let listing = wallet_command(&wallet, &store, WalletCommand::Quotes).await;
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the quote is listed");
    assert!(
        line.contains("miner-key") && line.contains(&miner_key.to_string()),
        "{line}"
    );

    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(round.minted.is_empty());
    // the proxy's key cannot mint it
    wallet
        .cdk()
        .fetch_mint_quote(&id, Some(ehash_method()))
        .await
        .unwrap();
    let keys: HashMap<String, SecretKey> = [(id.clone(), locking_secret(&seed()))].into();
    assert!(wallet
        .cdk()
        .batch_mint(&[id.as_str()], SplitTarget::default(), None, Some(keys))
        .await
        .is_err());
    assert_eq!(wallet.balance().await.unwrap(), 0);
    // the miner's own wallet can
    let own = hashpool_tests::wallet(&mint.running.http_url());
    assert_eq!(
        mint_with(&own, &[id.as_str()], &miner_secret).await,
        Ok(amount)
    );
    mint.stop().await;
}

/// One process at a time mints from a data dir: while a translator runs,
/// a second translator on its data dir and a `wallet claim` of its config
/// are refused, naming it, with nothing done; once it stopped, the claim
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_is_minted_from_by_one_process_at_a_time() {
    init_logging();
    let mint = TestMint::start(mint_support::config(":memory:")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = TranslatorConfig {
        keep_quotes_hours: 1000,
        ..translator_config(&[free_address()], &mint.running.http_url(), dir.path())
    };
    let tr = RunningTranslator::start(config.clone()).await;
    // A record done with, two days old: kept by the translator, deleted by
    // a claim keeping records a day.
    let old = translator::quotes::QuoteRecord {
        created_at: roles_common::unix_secs() - 48 * 3600,
        ..quote_record("old", 1, tr.wallet_key(), QuoteState::Minted)
    };
    tr.handle.quotes().insert(&old).unwrap();

    let held = format!(
        "{} is being minted from by another process (pid {})",
        dir.path().join("quotes.sqlite").display(),
        std::process::id()
    );
    let claim = || WalletCommand::Claim {
        keep_quotes_hours: Some(24),
    };
    let refused = translator::cli::run_wallet_command(&config, claim())
        .await
        .unwrap_err();
    assert!(refused.starts_with(&held), "{refused}");
    let records = || tr.handle.quotes().all().unwrap();
    assert_eq!(records(), std::slice::from_ref(&old), "nothing done");
    let second = translator::start(config.clone(), tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("a second translator on the data dir is refused");
    assert!(second.to_string().starts_with(&held), "{second}");

    tr.stop().await;
    let claimed = translator::cli::run_wallet_command(&config, claim())
        .await
        .unwrap();
    assert!(
        claimed.contains("deleted the records of 1 quotes done with"),
        "{claimed}"
    );
    drop(mint);
}

/// A wallet.sqlite lost: `wallet restore` finds from the mnemonic alone the
/// ecash the wallet held (not what it spent), once however often it runs,
/// and the wallet mints on at counters past it. On a wallet that holds its
/// proofs, it adds nothing: a token sent and not claimed yet stays sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_wallet_is_restored_from_its_mnemonic_alone() {
    let (mint, mut link, dir, store) = mint_link_and_store().await;
    let wallet = open_wallet(&mint, dir.path()).await;
    let key = wallet.locking_key();
    wallet.recover().await.unwrap();
    let total = pending_quotes(&mut link, &store, key, [1, 2, 3, 4, 5]).await;
    assert_eq!(wallet.mint_pending(&store, 3).await.unwrap().amount, total);
    let url = mint.running.http_url();
    send_to_fresh_wallet(&wallet, &store, &url, 7).await;
    let unclaimed = wallet_command(&wallet, &store, WalletCommand::Send { amount: 5 }).await;
    let held = wallet.balance().await.unwrap();
    assert_eq!(held, total - 12);
    let unit = ehash::constants::UNIT;
    let restore = WalletCommand::Restore { gap: 3 };
    let out = wallet_command(&wallet, &store, restore.clone()).await;
    assert!(
        out.contains(&format!("restored: 0 {unit} spendable")),
        "{out}"
    );
    assert_eq!(
        wallet.balance().await.unwrap(),
        held,
        "the token stays sent"
    );
    drop(wallet);

    let new_dir = tempfile::tempdir().unwrap();
    let restored = open_wallet(&mint, new_dir.path()).await;
    let keyset = restored.cdk().active_keyset().await.unwrap().id;
    let counter = || async {
        let store = &restored.cdk().localstore;
        store.increment_keyset_counter(&keyset, 0).await.unwrap()
    };
    assert_eq!(restored.balance().await.unwrap(), 0);
    let out = wallet_command(&restored, &store, restore.clone()).await;
    // The unclaimed token's proofs too: the mint still has them unspent.
    let spendable = held + 5;
    assert!(
        out.contains(&format!(
            "restored: {spendable} {unit} spendable, 0 {unit} pending"
        )),
        "{out}"
    );
    assert!(!out.contains(&format!(", 0 {unit} found spent")), "{out}");
    assert_eq!(restored.balance().await.unwrap(), spendable);
    let past_found = counter().await;
    assert!(past_found > 0);
    let out = wallet_command(&restored, &store, restore).await;
    assert!(
        out.contains(&format!("; {spendable} {unit} held already")),
        "{out}"
    );
    assert_eq!(
        restored.balance().await.unwrap(),
        spendable,
        "nothing twice"
    );
    assert_eq!(counter().await, past_found, "the counter moved once");

    let more = pending_quotes(&mut link, &store, key, [6]).await;
    assert_eq!(
        restored.mint_pending(&store, 10).await.unwrap().amount,
        more
    );
    assert_eq!(restored.balance().await.unwrap(), spendable + more);
    send_to_fresh_wallet(&restored, &store, &url, spendable + more).await;
    // The token sent before the loss is worth nothing now.
    let late = hashpool_tests::wallet(&url)
        .receive(unclaimed.trim(), ReceiveOptions::default())
        .await;
    assert!(late.is_err(), "{late:?}");
    mint.stop().await;
}

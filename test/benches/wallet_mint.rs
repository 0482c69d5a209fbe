//! The translator's wallet against a mint in its own process (the shipped
//! config, file SQLite): how fast the mint creates quotes over the pool
//! link ([`IN_FLIGHT`] requests at a time, as a busy pool sends them), then how fast
//! the wallet mints them in NUT-29 batches of each size, side by side with
//! cdk's own `Wallet::batch_mint` minting as many quotes of the same amounts
//! one batch at a time (as the translator did before). Prints quotes/s,
//! round times, the ratio and the mint's RSS; asserts only that every quote
//! was minted once, for exactly its amount.
//!
//!     cargo bench -p hashpool-tests --bench wallet_mint [quotes per size]

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cdk::amount::Amount;
use cdk::nuts::MintQuoteState;
use cdk::wallet::MintQuote;
use hashpool_tests::*;
use mint_quote_sv2::MintQuoteMessage;
use mint_support::{share, PoolClient, POOL_SECRET};
use translator::quotes::{QuoteState, QuoteStore};
use translator::wallet::{
    ehash_method, ehash_unit, fewest_proofs, locking_secret, EhashWallet, BATCHES_PER_ROUND,
    DEFAULT_MINT_TIMEOUT,
};

const BATCH_SIZES: [usize; 2] = [100, 1000];
/// Quote requests on the pool link at once while quotes are created.
const IN_FLIGHT: usize = 64;

fn main() {
    let Some([quotes]) = bench_args([5000.0]) else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quotes as usize));
}

async fn bench(quotes: usize) {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let mint = files.spawn().await;
    let mut link = PoolClient::authenticated(files.link, POOL_SECRET).await;
    let seed = translator::config::seed_from_mnemonic(TRANSLATOR_MNEMONIC).unwrap();
    let wallet = EhashWallet::open(
        &files.url(),
        DEFAULT_MINT_TIMEOUT,
        &dir.path().join("wallet.sqlite"),
        seed,
    )
    .await
    .unwrap();
    wallet.recover().await.unwrap();
    // cdk's path, in a wallet of its own (other secrets), minting quotes
    // locked to the same key.
    let reference = EhashWallet::open(
        &files.url(),
        DEFAULT_MINT_TIMEOUT,
        &dir.path().join("cdk.sqlite"),
        [9; 64],
    )
    .await
    .unwrap();
    reference.recover().await.unwrap();
    let key = wallet.locking_key();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    println!(
        "wallet minting: {quotes} quotes of 1, 2, 4 and 8 per batch size, mint in its own \
         process; ours: rounds of up to {BATCHES_PER_ROUND} batches side by side, \
         each carrying its total in the fewest outputs; cdk: Wallet::batch_mint, \
         one batch at a time"
    );

    let (mut total, mut reference_total) = (0, 0);
    for size in BATCH_SIZES {
        let (created, quoting) = create_quotes(&mut link, key, quotes).await;
        total += created.iter().map(|(_, a)| a).sum::<u64>();
        let records: Vec<_> = created
            .iter()
            .map(|(id, amount)| quote_record(id, *amount, key, QuoteState::Pending))
            .collect();
        store.record(&records, &[]).unwrap();

        let mut ours = mint_ours(&wallet, &store, size, &mint, quotes).await;

        let (created, _) = create_quotes(&mut link, key, quotes).await;
        reference_total += created.iter().map(|(_, a)| a).sum::<u64>();
        let mut cdk = mint_cdk(&reference, &seed, &created, size, &mint).await;
        println!(
            "batches of {size:>4}: the mint quoted at {quoting:>5.0} quotes/s \
             ({IN_FLIGHT} requests in flight)\n  \
             ours {:>5.0} quotes/s, rounds p50 {:.0?} p99 {:.0?}, CPU wallet {:.0}% mint {:.0}%\n  \
             cdk  {:>5.0} quotes/s, batches p50 {:.0?} p99 {:.0?}, CPU wallet {:.0}% mint {:.0}%\n  \
             ours / cdk {:.1}, ours / the mint's quote rate {:.2}",
            ours.rate,
            percentile(&mut ours.rounds, 0.5),
            percentile(&mut ours.rounds, 0.99),
            ours.cpu.0,
            ours.cpu.1,
            cdk.rate,
            percentile(&mut cdk.rounds, 0.5),
            percentile(&mut cdk.rounds, 0.99),
            cdk.cpu.0,
            cdk.cpu.1,
            ours.rate / cdk.rate,
            ours.rate / quoting,
        );
    }
    let totals = store.totals().unwrap();
    assert_eq!(totals.minted, ((quotes * BATCH_SIZES.len()) as u64, total));
    assert_eq!(wallet.balance().await.unwrap(), total, "each quote once");
    assert_eq!(reference.balance().await.unwrap(), reference_total);
    let rss = mint.peak_rss_kib().unwrap_or(0);
    println!("mint peak RSS {:.1} MiB", rss as f64 / 1024.0);
    drop(mint);
}

/// How fast a wallet minted: quotes/s, each round's (or batch's) time,
/// and the CPU of this process and the mint (% of one core).
struct Minted {
    rate: f64,
    rounds: Vec<Duration>,
    cpu: (f64, f64),
}

/// Our wallet mints the store's `quotes` pending quotes, in rounds of
/// batches of up to `size`.
async fn mint_ours(
    wallet: &EhashWallet,
    store: &QuoteStore,
    size: usize,
    mint: &RoleChild,
    quotes: usize,
) -> Minted {
    let (started, cpu) = (Instant::now(), Cpu::now(mint));
    let mut rounds = Vec::new();
    loop {
        let round_started = Instant::now();
        let round = wallet.mint_pending(store, size).await.unwrap();
        if round.minted.is_empty() && round.already_issued.is_empty() {
            break;
        }
        assert_eq!(round.left, 0, "a quote was refused");
        rounds.push(round_started.elapsed());
    }
    Minted {
        rate: quotes as f64 / started.elapsed().as_secs_f64(),
        rounds,
        cpu: cpu.share_since(mint, started),
    }
}

/// cdk's `Wallet::batch_mint` mints `created`, one batch of up to `size`
/// at a time.
async fn mint_cdk(
    reference: &EhashWallet,
    seed: &[u8; 64],
    created: &[(String, u64)],
    size: usize,
    mint: &RoleChild,
) -> Minted {
    let (started, cpu) = (Instant::now(), Cpu::now(mint));
    let mut rounds = Vec::new();
    for batch in created.chunks(size) {
        let round_started = Instant::now();
        cdk_batch_mint(reference, seed, batch).await;
        rounds.push(round_started.elapsed());
    }
    Minted {
        rate: created.len() as f64 / started.elapsed().as_secs_f64(),
        rounds,
        cpu: cpu.share_since(mint, started),
    }
}

/// `n` paid quotes locked to `key`, of 1, 2, 4 and 8 in turn, and the
/// rate the mint quoted them at with [`IN_FLIGHT`] requests on the link
/// (the shares are made before the clock starts).
async fn create_quotes(
    link: &mut PoolClient,
    key: ehash::LockingKey,
    n: usize,
) -> (Vec<(String, u64)>, f64) {
    let mut requests = (0..n)
        .map(|i| share((i % 4) as u32, key))
        .collect::<Vec<_>>();
    let amounts: HashMap<[u8; 32], u64> = requests
        .iter()
        .map(|r| (r.share_hash.to_array(), r.amount))
        .collect();
    let started = Instant::now();
    let (mut quotes, mut in_flight) = (Vec::with_capacity(n), 0);
    loop {
        while in_flight < IN_FLIGHT {
            let Some(request) = requests.pop() else { break };
            link.send(MintQuoteMessage::MintQuoteRequest(request)).await;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        match link.recv().await.unwrap() {
            MintQuoteMessage::MintQuoteResponse(r) => {
                let amount = amounts[&r.share_hash.to_array()];
                quotes.push((r.quote_id.as_utf8_or_hex(), amount));
                in_flight -= 1;
            }
            other => panic!("expected a quote, got {other:?}"),
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    (quotes, rate)
}

/// Mints `quotes` with cdk's own batch mint, recording each as paid first.
async fn cdk_batch_mint(wallet: &EhashWallet, seed: &[u8; 64], quotes: &[(String, u64)]) {
    let cdk = wallet.cdk();
    let secret = locking_secret(seed);
    for (id, amount) in quotes {
        let quote = MintQuote {
            id: id.clone(),
            mint_url: cdk.mint_url.clone(),
            payment_method: ehash_method(),
            amount: Some(Amount::from(*amount)),
            unit: ehash_unit(),
            request: String::new(),
            state: MintQuoteState::Paid,
            expiry: 0,
            secret_key: None,
            amount_issued: Amount::ZERO,
            amount_paid: Amount::from(*amount),
            updated_at: 0,
            estimated_blocks: None,
            used_by_operation: None,
            version: 0,
        };
        cdk.localstore.add_mint_quote(quote).await.unwrap();
    }
    let ids: Vec<&str> = quotes.iter().map(|(id, _)| id.as_str()).collect();
    let keys: HashMap<String, _> = quotes
        .iter()
        .map(|(id, _)| (id.clone(), secret.clone()))
        .collect();
    cdk.batch_mint(&ids, fewest_proofs(), None, Some(keys))
        .await
        .unwrap();
}

/// CPU time so far (clock ticks) of this process and of the mint.
struct Cpu(u64, u64);

impl Cpu {
    fn now(mint: &RoleChild) -> Cpu {
        let ticks = |pid| hashpool_tests::process_usage(pid).0;
        Cpu(ticks(std::process::id()), mint.pid().map_or(0, ticks))
    }

    /// The percent of one core the wallet (this process) and the mint used
    /// since `self`, taken at `started`.
    fn share_since(&self, mint: &RoleChild, started: Instant) -> (f64, f64) {
        let now = Cpu::now(mint);
        let ticks = started.elapsed().as_secs_f64() * 100.0;
        (
            (now.0 - self.0) as f64 * 100.0 / ticks,
            (now.1 - self.1) as f64 * 100.0 / ticks,
        )
    }
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 - 1.0) * p).round() as usize]
}

//! The translator's wallet against a mint in its own process (the shipped
//! config, file SQLite): how fast the mint creates quotes over the pool
//! link (one request at a time, as the benchmark's only pool), then how fast
//! the wallet mints them in NUT-29 batches of each size. Prints quotes/s,
//! round times and the mint's RSS; asserts only that every quote was minted
//! once, for exactly its amount.
//!
//!     cargo bench -p hashpool-tests --bench wallet_mint [quotes per size]

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::time::Instant;

use hashpool_tests::*;
use mint_support::{share, PoolClient, POOL_SECRET};
use translator::quotes::{QuoteState, QuoteStore};
use translator::wallet::EhashWallet;

const BATCH_SIZES: [usize; 2] = [100, 1000];

fn main() {
    let Some([quotes]) = bench_args([5000.0]) else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bench(quotes as usize));
}

async fn bench(quotes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let files = MintFiles::write(dir.path());
    let mint = RoleChild::spawn("mint", &files.config);
    until_listening(files.link, "mint link").await;
    until_listening(files.http, "mint http").await;
    let mut link = PoolClient::authenticated(files.link, POOL_SECRET).await;
    let seed = translator::config::seed_from_mnemonic(TRANSLATOR_MNEMONIC).unwrap();
    let wallet = EhashWallet::open(&files.url(), &dir.path().join("wallet.sqlite"), seed)
        .await
        .unwrap();
    wallet.recover().await.unwrap();
    let key = wallet.locking_key();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    println!("wallet minting: {quotes} quotes per batch size, mint in its own process");

    let mut total = 0;
    for size in BATCH_SIZES {
        let started = Instant::now();
        let mut records = Vec::with_capacity(quotes);
        for i in 0..quotes {
            let zero_bits = (i % 4) as u32;
            let quote_id = link.quote_id(share(zero_bits, key)).await;
            records.push(quote_record(
                &quote_id,
                1 << zero_bits,
                key,
                QuoteState::Pending,
            ));
        }
        let created = started.elapsed();
        total += records.iter().map(|r| r.amount).sum::<u64>();
        store.record(&records, &[]).unwrap();

        let started = Instant::now();
        let mut rounds = Vec::new();
        loop {
            let round_started = Instant::now();
            let round = wallet.mint_pending(&store, size).await.unwrap();
            if round.minted.is_empty() && round.already_issued.is_empty() {
                break;
            }
            assert_eq!(round.left, 0, "a quote was refused");
            rounds.push(round_started.elapsed());
        }
        let minted = started.elapsed();
        rounds.sort();
        let percentile = |p: f64| rounds[((rounds.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "batches of {size:>4}: created {quotes} quotes at {:>5.0} quotes/s, minted at {:>5.0} \
             quotes/s ({} rounds, p50 {:?}, p99 {:?})",
            quotes as f64 / created.as_secs_f64(),
            quotes as f64 / minted.as_secs_f64(),
            rounds.len(),
            percentile(0.5),
            percentile(0.99),
        );
    }
    let totals = store.totals().unwrap();
    assert_eq!(totals.minted, ((quotes * BATCH_SIZES.len()) as u64, total));
    assert_eq!(wallet.balance().await.unwrap(), total, "each quote once");
    let rss = mint.peak_rss_kib().unwrap_or(0);
    println!("mint peak RSS {:.1} MiB", rss as f64 / 1024.0);
    drop(mint);
}

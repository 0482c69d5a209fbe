//! Quote requests served over the Noise pool link: requests/s and p50/p99
//! latency, with an in-memory and a file SQLite database, one request at a
//! time and pipelined (every quote also appends its audit entry), then what
//! each check of one request costs, and how long stats take with every
//! quote unminted, also after a restart. Prints figures; asserts only that
//! every answer is a quote.
//!
//!     cargo bench -p mint --bench quote_link

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ehash::coinbase::testing::{coinbase, mine_header};
use ehash::wire::MessageSet;
use mint::chain::{HeaderOnTip, KeptTip, Pools, Tip, TipHistory};
use mint_quote_sv2::{CoinbaseProof, MintQuoteMessage, MintQuoteRequestOwned};
use support::*;
use tokio::sync::mpsc;

const REQUESTS: usize = 10_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(database: &str, window: usize) {
    let mint = TestMint::start(config(database)).await;
    let (_, miner) = miner_key();
    let shares: Vec<MintQuoteRequestOwned> = (0..REQUESTS).map(|_| share(1, miner)).collect();
    let pool = mint.pool().await;
    let (mut reader, mut writer) = (pool.reader, pool.writer);

    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<([u8; 32], Instant)>();
    let (credit_tx, mut credit_rx) = mpsc::channel::<()>(window);
    for _ in 0..window {
        credit_tx.send(()).await.unwrap();
    }
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for request in shares {
            credit_rx.recv().await.unwrap();
            sent_tx
                .send((request.share_hash(), Instant::now()))
                .unwrap();
            let frame = MintQuoteMessage::MintQuoteRequest(request)
                .into_frame()
                .unwrap();
            writer.write_frame(frame).await.unwrap();
        }
        writer
    });

    let mut pending: HashMap<[u8; 32], Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(REQUESTS);
    while latencies.len() < REQUESTS {
        let mut frame = reader.read_frame().await.expect("an answer");
        let header = frame.header();
        let answer = MintQuoteMessage::decode(&header, frame.payload()).unwrap();
        let MintQuoteMessage::MintQuoteResponse(response) = answer else {
            panic!("not a quote: {answer:?}")
        };
        while let Ok((hash, at)) = sent_rx.try_recv() {
            pending.insert(hash, at);
        }
        let sent = pending
            .remove(&response.share_hash.to_array())
            .expect("answer to a sent request");
        latencies.push(sent.elapsed());
        let _ = credit_tx.try_send(());
    }
    let elapsed = started.elapsed();
    let _ = sender.await;
    latencies.sort();
    println!(
        "{:<10} window {:>3}: {REQUESTS} quotes in {:>6.2} s = {:>7.1} quotes/s, latency p50 {:>7.2} ms, p99 {:>7.2} ms",
        if database == ":memory:" { "in-memory" } else { "file" },
        window,
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    stats_refresh(&mint).await;
    mint.stop().await;
    if database != ":memory:" {
        // Stopped, the mint kept its totals: a restart reads from there.
        let mint = TestMint::start(config(database)).await;
        let mut pool = mint.pool().await;
        let started = Instant::now();
        let resumed = pool.stats().await;
        println!(
            "{:<10} restarted, from the checkpoint: first answer {:>6.1} ms ({} quotes unminted)",
            "",
            started.elapsed().as_secs_f64() * 1e3,
            resumed.quotes_paid,
        );
        mint.stop().await;
        let size = |suffix: &str| {
            std::fs::metadata(format!("{database}{suffix}")).map_or(0, |file| file.len()) as f64
        };
        let (main, wal) = (size(""), size("-wal"));
        println!(
            "{:<10} database on file: {:.1} MB, {:.0} bytes a quote (and a WAL of {:.1} MB)",
            "",
            main / 1e6,
            main / REQUESTS as f64,
            wal / 1e6,
        );
    }
}

/// How long the mint takes to answer stats with every quote still unminted:
/// the first refresh reads them all, the next only what changed (on file;
/// in memory every open quote is read again).
async fn stats_refresh(mint: &TestMint) {
    let mut pool = mint.pool().await;
    let started = Instant::now();
    let first = pool.stats().await;
    let first_took = started.elapsed();
    let started = Instant::now();
    let next = pool.stats().await;
    let next_took = started.elapsed();
    assert_eq!(next.quotes_paid, first.quotes_paid);
    println!(
        "{:<10} stats with {} quotes unminted: first answer {:>6.1} ms, the next {:>6.1} ms",
        "",
        first.quotes_paid,
        first_took.as_secs_f64() * 1e3,
        next_took.as_secs_f64() * 1e3,
    );
}

/// What the mint's checks of one request cost on one core: all of them
/// (unit, locking key, proof of work, amount and the coinbase proof with the
/// merkle path of a ~4,000-transaction block), and the coinbase proof alone,
/// what protocol version 2 added. The link figures above include them all.
fn check_cost() {
    const CHECKS: u32 = 20_000;
    let (_, miner) = miner_key();
    let proof = CoinbaseProof {
        coinbase: coinbase(&pool_script(), &miner, &[7; 16]),
        merkle_path: vec![[9; 32]; 12],
    };
    let (header, target) = mine_header(&proof.coinbase, &proof.merkle_path, 1);
    let request = MintQuoteRequestOwned::new(&header, target, 2, miner, &proof).unwrap();
    let unit_bits = ehash::UnitBits::new(0).unwrap();
    let per_check = |check: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..CHECKS {
            check();
        }
        started.elapsed() / CHECKS
    };
    let keys = mint::quote::KnownKeys::default();
    let all = per_check(&|| {
        mint::quote::check_request(&request, unit_bits, &pool_script(), &keys).unwrap();
    });
    let coinbase_proof = per_check(&|| {
        let proof = request.proof();
        let script = pool_script();
        ehash::check_coinbase(
            &header,
            &proof.coinbase,
            &proof.merkle_path,
            &script,
            &miner,
        )
        .unwrap();
    });
    // The chain view of a mint that has seen many blocks, the share on the
    // oldest fresh tip of the default six; and the audit entry it stores.
    let tips = (0..70u8).map(|i| KeptTip {
        tip: Tip {
            prev_hash: [i; 32],
            nbits: 0x1703_4219,
            time: 1_800_000_000,
            height: Some(900_000 - u32::from(i)),
        },
        quoted_for: Pools::ALL,
    });
    let history = TipHistory::new(6, tips);
    let on_tip = HeaderOnTip {
        prev_hash: [5; 32],
        nbits: 0x1703_4219,
        ntime: 1_800_000_000,
        height: Some(899_995),
    };
    let chain = per_check(&|| {
        history
            .check(&on_tip, 1_800_000_000, Pools::nth(0))
            .unwrap();
    });
    let checked = mint::quote::check_request(&request, unit_bits, &pool_script(), &keys).unwrap();
    let audit_entry = per_check(&|| {
        std::hint::black_box(mint::audit::encode(&checked, 1_800_000_000));
    });
    println!(
        "checks of one request on one core: {:.1} µs in all ({:.0}/s), of which the coinbase proof {:.1} µs; then the chain view {:.2} µs and the audit entry {:.1} µs",
        all.as_secs_f64() * 1e6,
        1.0 / all.as_secs_f64(),
        coinbase_proof.as_secs_f64() * 1e6,
        chain.as_secs_f64() * 1e6,
        audit_entry.as_secs_f64() * 1e6,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("mint quote link benchmark: {REQUESTS} MintQuoteRequests per run, one authenticated pool connection");
    for window in [1, 64, 512] {
        run(":memory:", window).await;
        let dir = tempfile::tempdir().unwrap();
        run(dir.path().join("mint.sqlite").to_str().unwrap(), window).await;
    }
    check_cost();
}

//! Notifications acknowledged per second through one translator, and the
//! acknowledgement round trip (pool sends a 0xC0 -> the translator records
//! it durably -> its 0xC2 reaches the pool), p50 and p99. devnet-tp, the
//! mint (file SQLite), the pool and the translator in this process; load
//! generator miners through the translator. Prints figures; asserts only
//! that every accepted share was acknowledged.
//!
//!     cargo bench -p hashpool-tests --bench acks

use std::time::{Duration, Instant};

use hashpool_tests::*;
use tokio_util::sync::CancellationToken;

const MINERS: usize = 20;
const SHARES_PER_SECOND: f64 = 10.0;
const RUN: Duration = Duration::from_secs(20);

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let tr = RunningTranslator::with_pool(stack.pool_addr(), &stack.mint_url()).await;
    let shutdown = CancellationToken::new();
    let mut config = miner::MinerConfig {
        url: tr.addr().to_string(),
        username: "bench".into(),
        threads: 2,
        mode: miner::Mode::Load,
        stats_interval_secs: 0,
        ..Default::default()
    };
    config.load.miners = MINERS;
    config.load.shares_per_second = SHARES_PER_SECOND;
    let running = miner::start(config, shutdown.clone());
    // Warm up: every miner has its channel.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.pool().take_ack_round_trips();
    let accepted_before = stack.pool().stats().shares_accepted;
    tokio::time::sleep(RUN).await;
    shutdown.cancel();
    running.wait().await.unwrap();
    let accepted = stack.pool().stats().shares_accepted - accepted_before;
    // Let the last acknowledgements arrive.
    let mut round_trips = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    while (round_trips.len() as u64) < accepted && Instant::now() < deadline {
        round_trips.extend(stack.pool().take_ack_round_trips());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = RUN.as_secs_f64();
    round_trips.sort();
    assert!(
        round_trips.len() as u64 >= accepted,
        "{} of {accepted} accepted shares acknowledged",
        round_trips.len()
    );
    println!(
        "acks: {MINERS} SV1 miners through one translator: {} notifications acknowledged \
         in {elapsed:.1} s ({:.0}/s); round trip p50 {:.2} ms, p99 {:.2} ms",
        round_trips.len(),
        round_trips.len() as f64 / elapsed,
        percentile(&round_trips, 0.50),
        percentile(&round_trips, 0.99),
    );
    tr.stop().await;
    stack.stop().await;
}

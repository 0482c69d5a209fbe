//! End to end through devnet-tp, the pool's ehash flow and the mint (file
//! SQLite): accepted shares/s and the time from a share's submission to its
//! SubmitSharesSuccess and to its MintQuoteNotification, in annotate and
//! defer modes. Prints figures; asserts only that every share was answered.
//!
//!     cargo bench -p hashpool-tests --bench ehash_flow

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ehash_ext_sv2::EhashMessage;
use hashpool_tests::*;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

const CLIENTS: usize = 4;
const SHARES_PER_CLIENT: usize = 500;
const WINDOW: usize = 16;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// One client: submits with up to WINDOW unanswered shares; returns the
/// success and notification latencies of its shares.
async fn client_run(mut client: MiningClient, channel: u32) -> (Vec<Duration>, Vec<Duration>) {
    let mut sent_at: HashMap<u32, Instant> = HashMap::new();
    let mut hash_sent: HashMap<[u8; 32], Instant> = HashMap::new();
    let (mut successes, mut notifications) = (vec![], vec![]);
    let mut submitted = 0;
    while notifications.len() < SHARES_PER_CLIENT || successes.len() < SHARES_PER_CLIENT {
        while submitted < SHARES_PER_CLIENT && sent_at.len() < WINDOW {
            let share = client.valid_share(channel, false);
            let seq = client.submit(channel, &share).await;
            let now = Instant::now();
            sent_at.insert(seq, now);
            hash_sent.insert(share.hash, now);
            submitted += 1;
        }
        match client.recv().await.expect("connection open") {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))) => {
                successes.extend(take_acknowledged(&mut sent_at, s.last_sequence_number));
            }
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e))) => {
                panic!("share refused: {:?}", e.error_code)
            }
            Incoming::Ehash(EhashMessage::MintQuoteNotification(n)) => {
                let at = hash_sent
                    .remove(&n.share_hash.to_array())
                    .expect("a share of ours");
                notifications.push(at.elapsed());
            }
            _ => {}
        }
    }
    (successes, notifications)
}

async fn run(mode: &str) {
    let stack = EhashStack::start(mode, |_| {}).await;
    let mut tasks = vec![];
    let started = Instant::now();
    for _ in 0..CLIENTS {
        let (_, key) = miner_key();
        let mut client = stack.client(true).await;
        let channel = client
            .open_extended(&format!("{key}.bench"), 1.0, 4)
            .await
            .expect("opens");
        client.wait_for_work(channel).await;
        tasks.push(tokio::spawn(client_run(client, channel)));
    }
    let (mut successes, mut notifications) = (vec![], vec![]);
    for t in tasks {
        let (s, n) = t.await.expect("client finished");
        successes.extend(s);
        notifications.extend(n);
    }
    let elapsed = started.elapsed();
    successes.sort();
    notifications.sort();
    let total = CLIENTS * SHARES_PER_CLIENT;
    println!(
        "{mode:<8} {CLIENTS} clients x {SHARES_PER_CLIENT} shares (window {WINDOW}): {:>7.1} shares/s quoted end to end; \
         to success p50 {:>6.2} ms p99 {:>6.2} ms; to notification p50 {:>6.2} ms p99 {:>6.2} ms",
        total as f64 / elapsed.as_secs_f64(),
        percentile(&successes, 0.5),
        percentile(&successes, 0.99),
        percentile(&notifications, 0.5),
        percentile(&notifications, 0.99),
    );
    stack.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("ehash flow benchmark: devnet-tp + pool + mint (file SQLite) in one process, SV2 clients over Noise");
    run("annotate").await;
    run("defer").await;
}

//! Quote requests served by a mint cluster on PostgreSQL: quotes/s, p50/p99
//! latency (request appended -> answer read), and the mint processes' CPU
//! and peak RSS, with 1, 2 and 3 mint processes reading one Redis stream;
//! then one process's Noise pool link at the same load, on the same kind of
//! database; then both transports to one process on a SQLite file. The
//! requests (real shares, signed by an allowed pool) are made before the
//! clock starts. Each run has a fresh database and Redis.
//!
//!     cargo bench -p hashpool-tests --bench scale_out [requests] [in flight]

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ehash::wire::MessageSet;
use hashpool_tests::scale_out::{pool_identity, Cluster};
use hashpool_tests::*;
use mint_quote_sv2::stream::{keypair, SignedEntry, StreamKeys};
use mint_quote_sv2::{MintQuoteMessage, MintQuoteRequestOwned};
use mint_support::{share, PoolClient, POOL_SECRET};
use stratum_core::bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};
use tokio::sync::{mpsc, Semaphore};

fn main() {
    let Some([requests, window]) = bench_args([5_000.0, 512.0]) else {
        return;
    };
    let (requests, window) = (requests as usize, window as usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{requests} quote requests, {window} in flight, mint processes on one PostgreSQL (fsync on)"
        );
        for mints in 1..=3 {
            let cluster = Cluster::start(0, mints, false).await;
            let run = Run::start(&cluster);
            let latencies = over_redis(&cluster, requests, window).await;
            run.report(&format!("redis, {mints} mint process(es)"), latencies);
            cluster.stop().await;
        }
        let cluster = Cluster::start(0, 1, false).await;
        let run = Run::start(&cluster);
        let latencies = over_noise(&cluster, requests, window).await;
        run.report("noise link, 1 mint process", latencies);
        cluster.stop().await;

        // The transports alone: one mint process on a SQLite file, which
        // writes quotes far faster than PostgreSQL through cdk.
        println!("one mint process on a SQLite file (synchronous, WAL):");
        for transport in ["redis", "noise link"] {
            let sqlite = tempfile::tempdir().unwrap();
            let database = sqlite.path().join("mint.sqlite").display().to_string();
            let cluster = Cluster::start_on(0, 1, false, Some(database)).await;
            let run = Run::start(&cluster);
            let latencies = match transport {
                "redis" => over_redis(&cluster, requests, window).await,
                _ => over_noise(&cluster, requests, window).await,
            };
            run.report(&format!("{transport}, SQLite"), latencies);
            cluster.stop().await;
        }
    });
}

/// Real shares of the cluster's first pool, worth 2 ehash each.
fn requests(n: usize) -> Vec<MintQuoteRequestOwned> {
    let (_, key) = miner_key();
    (0..n).map(|_| share(1, key)).collect()
}

/// The mint processes' CPU time and the wall clock at the start of a run.
struct Run<'a> {
    cluster: &'a Cluster,
    cpu: Vec<Duration>,
    started: Instant,
}

impl<'a> Run<'a> {
    fn start(cluster: &'a Cluster) -> Self {
        Self {
            cpu: cluster.mints.iter().map(|m| cpu_time(&m.process)).collect(),
            cluster,
            started: Instant::now(),
        }
    }

    fn report(self, what: &str, mut latencies: Vec<Duration>) {
        let elapsed = self.started.elapsed();
        latencies.sort();
        let cpu: Duration = self
            .cluster
            .mints
            .iter()
            .zip(&self.cpu)
            .map(|(m, before)| cpu_time(&m.process).saturating_sub(*before))
            .sum();
        let rss: Vec<String> = self
            .cluster
            .mints
            .iter()
            .map(|m| format!("{}", m.process.child.peak_rss_kib().unwrap_or(0) / 1024))
            .collect();
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "{what:<30} {:>7.0} quotes/s  p50 {:>7.1} ms  p99 {:>7.1} ms  mints' CPU {:>4.0}%  peak RSS {} MiB",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
            rss.join("/"),
        );
    }
}

/// A process's user + system CPU time (clock ticks of 10 ms).
fn cpu_time(process: &hashpool_tests::scale_out::Process) -> Duration {
    let ticks = process.child.pid().map_or(0, |pid| process_usage(pid).0);
    Duration::from_millis(ticks * 10)
}

/// Adds `entries` to the request `stream`, each once a credit is free (as
/// many as there are in one round trip), telling `sent` when.
async fn send_to_redis(
    entries: Vec<([u8; 32], SignedEntry)>,
    mut writer: redis::aio::MultiplexedConnection,
    credits: Arc<Semaphore>,
    stream: String,
    sent: mpsc::UnboundedSender<([u8; 32], Instant)>,
) {
    let mut entries = entries.into_iter();
    loop {
        let first = credits.acquire().await.unwrap();
        first.forget();
        let extra = credits.available_permits().min(511);
        credits.acquire_many(extra as u32).await.unwrap().forget();
        let batch: Vec<_> = entries.by_ref().take(1 + extra).collect();
        if batch.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let now = Instant::now();
        for (hash, signed) in &batch {
            roles_common::redis_stream::add(&mut pipe, &stream, 1_000_000, signed);
            sent.send((*hash, now)).unwrap();
        }
        pipe.query_async::<()>(&mut writer).await.unwrap();
    }
}

async fn over_redis(cluster: &Cluster, n: usize, window: usize) -> Vec<Duration> {
    let keys = StreamKeys::new("hashpool");
    let pool = keypair(&SecretKey::from_slice(&pool_identity(0).0.into_bytes()).unwrap());
    let mint_key =
        XOnlyPublicKey::from_slice(&public_key(MINT_PUBLIC_KEY).into_bytes()).expect("key");
    let entries: Vec<([u8; 32], SignedEntry)> = requests(n)
        .into_iter()
        .map(|r| {
            let hash = r.share_hash();
            let signed =
                SignedEntry::sign(MintQuoteMessage::MintQuoteRequest(r), &pool, &mint_key).unwrap();
            (hash, signed)
        })
        .collect();
    let connections = roles_common::redis_stream::connect(&cluster.redis.url())
        .await
        .unwrap();
    let (writer, mut reader) = (connections.commands, connections.blocking);
    let credits = Arc::new(Semaphore::new(window));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<([u8; 32], Instant)>();

    let sender = tokio::spawn(send_to_redis(
        entries,
        writer,
        credits.clone(),
        keys.requests(),
        sent_tx,
    ));

    let answers = keys.answers(&pool.x_only_public_key().0);
    let (mut cursor, mut sent, mut latencies) = ("0-0".to_string(), HashMap::new(), vec![]);
    let mut duplicates = 0u64;
    while latencies.len() < n {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&answers)
            .arg(&cursor)
            .query_async(&mut reader)
            .await
            .unwrap();
        for entry in roles_common::redis_stream::read_reply(&reply) {
            cursor = entry.id.clone();
            let (_, answer) = entry
                .signed
                .unwrap()
                .open(&pool.x_only_public_key().0, &[mint_key])
                .unwrap();
            let MintQuoteMessage::MintQuoteResponse(response) = answer else {
                panic!("not a quote: {answer:?}");
            };
            while let Ok((hash, at)) = sent_rx.try_recv() {
                sent.insert(hash, at);
            }
            // A request served twice (claimed from a process that was
            // slow, not dead) is answered twice with the same quote.
            let Some(at) = sent.remove(&response.share_hash.to_array()) else {
                duplicates += 1;
                continue;
            };
            latencies.push(at.elapsed());
            credits.add_permits(1);
        }
    }
    sender.await.unwrap();
    if duplicates > 0 {
        println!("  ({duplicates} requests answered twice)");
    }
    latencies
}

async fn over_noise(cluster: &Cluster, n: usize, window: usize) -> Vec<Duration> {
    let pool = PoolClient::authenticated(cluster.mints[0].link, POOL_SECRET).await;
    let (mut reader, mut writer) = (pool.reader, pool.writer);
    let credits = Arc::new(Semaphore::new(window));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<([u8; 32], Instant)>();
    let requests = requests(n);
    let sender = {
        let credits = credits.clone();
        tokio::spawn(async move {
            for request in requests {
                credits.acquire().await.unwrap().forget();
                sent_tx
                    .send((request.share_hash(), Instant::now()))
                    .unwrap();
                let frame = MintQuoteMessage::MintQuoteRequest(request)
                    .into_frame()
                    .unwrap();
                writer.write_frame(frame).await.unwrap();
            }
            writer
        })
    };
    let (mut sent, mut latencies) = (HashMap::new(), vec![]);
    while latencies.len() < n {
        let mut frame = reader.read_frame().await.expect("an answer");
        let header = frame.header();
        let answer = MintQuoteMessage::decode(&header, frame.payload()).unwrap();
        let MintQuoteMessage::MintQuoteResponse(response) = answer else {
            panic!("not a quote: {answer:?}");
        };
        while let Ok((hash, at)) = sent_rx.try_recv() {
            sent.insert(hash, at);
        }
        let at: Instant = sent
            .remove(&response.share_hash.to_array())
            .expect("an answer to a sent request");
        latencies.push(at.elapsed());
        credits.add_permits(1);
    }
    let _ = sender.await;
    latencies
}

//! The pool's job declarator: DeclareMiningJob round trips
//! (AllocateMiningJobToken, then DeclareMiningJob of a template with its
//! transactions, all known to the pool) on one JD connection, then on K at
//! once; then SetCustomMiningJob round trips on a work-selecting channel.
//! devnet-tp (its mempool on, two blocks premined, no block after) and the
//! pool with `[jds]` in this process. Prints declarations/s, custom jobs/s
//! and p50/p99 round trips; asserts nothing about timings.
//!
//!     cargo bench -p hashpool-tests --bench jds [declarations] [connections] [custom jobs]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hashpool_tests::*;
use stratum_core::binary_sv2::B0255Owned;
use stratum_core::bitcoin::{Transaction, TxOut};
use stratum_core::job_declaration_sv2::DeclareMiningJobOwned;
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tokio_util::sync::CancellationToken;

/// How long devnet-tp's mempool fills before the template is taken.
const MEMPOOL_FILL: Duration = Duration::from_secs(5);

fn main() {
    let Some([declarations, connections, custom_jobs]) = bench_args([1000.0, 8.0, 200.0]) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench(
            declarations as usize,
            (connections as usize).max(1),
            custom_jobs as usize,
        ));
}

async fn bench(declarations: usize, connections: usize, custom_jobs: usize) {
    let chain = tempfile::tempdir().expect("temp dir");
    premine_blocks_with_transactions(chain.path()).await;
    let mut tp_config = tp_config(chain.path(), NBITS_NEVER);
    with_mempool(&mut tp_config);
    let (tp, tp_shutdown) = start_tp_with(tp_config).await;
    let mut config = pool_config(tp.local_addr());
    config.jds = Some(pool::config::JdsSettings {
        listen_address: "127.0.0.1:0".into(),
        ..Default::default()
    });
    let pool_shutdown = CancellationToken::new();
    let pool = pool::start(config, pool_shutdown.clone(), Default::default())
        .await
        .expect("pool starts");
    let jds = pool.jds_addr().expect("the job declarator listens");

    // A template on the tip, with what the mempool gathered meanwhile.
    let mut tdp = TdpClient::connect(tp.local_addr()).await;
    let (_, prev) = tdp.template().await;
    tokio::time::sleep(MEMPOOL_FILL).await;
    let template = loop {
        let template = tdp.next_new_template().await;
        if template.merkle_path.len() >= 2 {
            break template;
        }
    };
    let txs = Arc::new(tdp.transaction_data(template.template_id).await.unwrap());
    // The pool asks for the template's transactions too; one declaration
    // provides any it does not know yet.
    let mut warm_up = JdTestClient::connect(jds).await;
    let (token, pool_script) = warm_up.allocate().await;
    let to_pool = pool_output(&template, &pool_script);
    let base = Arc::new(declaration(
        1,
        token,
        &template,
        vec![to_pool.clone()],
        &txs,
    ));
    warm_up
        .declare((*base).clone(), &txs)
        .await
        .expect("declared");
    println!(
        "jds: declarations of a template with {} transactions ({} wtxids, {} bytes of coinbase)",
        txs.len(),
        base.wtxid_list.len(),
        base.coinbase_tx_prefix.len() + base.coinbase_tx_suffix.len()
    );

    let started = Instant::now();
    let (mut sequential, _) = declare(jds, declarations, base.clone(), txs.clone()).await;
    report("1 connection", &mut sequential, started.elapsed());

    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let share = declarations / connections + usize::from(i < declarations % connections);
            tokio::spawn(declare(jds, share, base.clone(), txs.clone()))
        })
        .collect();
    let mut concurrent = vec![];
    for task in tasks {
        concurrent.extend(task.await.expect("declarations").0);
    }
    report(
        &format!("{connections} connections"),
        &mut concurrent,
        started.elapsed(),
    );

    // Custom jobs: each declared job set once on a work-selecting channel.
    let (_, tokens) = declare(jds, custom_jobs, base.clone(), txs.clone()).await;
    set_custom_jobs(pool.local_addr(), tokens, &template, &prev, to_pool).await;

    pool_shutdown.cancel();
    pool.wait().await.check("pool");
    tp_shutdown.cancel();
    tp.wait().await;
}

/// Sets a custom job of each of `tokens` in turn on one work-selecting
/// channel; prints the rate and round trips.
async fn set_custom_jobs(
    pool: std::net::SocketAddr,
    tokens: Vec<B0255Owned>,
    template: &NewTemplateOwned,
    prev: &SetNewPrevHashOwned,
    to_pool: TxOut,
) {
    let mut client = MiningClient::connect(pool, POOL_PUBLIC_KEY)
        .await
        .expect("connects");
    client.setup_connection(0b10).await; // REQUIRES_WORK_SELECTION
    let channel = client
        .open_extended(&format!("{LOCKING_KEY}.bench"), 1.0, 4)
        .await
        .expect("channel opens");
    let key: ehash::LockingKey = LOCKING_KEY.parse().expect("a key");
    let outputs = vec![to_pool, ehash::coinbase::key_commitment_output(&key)];
    let jobs: Vec<_> = tokens
        .into_iter()
        .zip(1..)
        .map(|(token, request_id)| {
            let mut job = custom_job(channel, token, template, prev, outputs.clone());
            job.request_id = request_id;
            job
        })
        .collect();
    let mut round_trips = Vec::with_capacity(jobs.len());
    let started = Instant::now();
    for job in &jobs {
        let sent = Instant::now();
        client.set_custom_job(job).await.expect("custom job set");
        round_trips.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    round_trips.sort();
    println!(
        "SetCustomMiningJob, 1 channel: {} in {:.2} s ({:.0}/s); round trip p50 {:.2} ms, p99 {:.2} ms",
        round_trips.len(),
        elapsed.as_secs_f64(),
        round_trips.len() as f64 / elapsed.as_secs_f64(),
        percentile(&round_trips, 0.50),
        percentile(&round_trips, 0.99),
    );
}

/// `n` declarations of `base` in turn on a new JD connection: the round
/// trip of each (allocation and declaration) and the declared jobs' tokens.
async fn declare(
    jds: std::net::SocketAddr,
    n: usize,
    base: Arc<DeclareMiningJobOwned>,
    txs: Arc<Vec<Transaction>>,
) -> (Vec<Duration>, Vec<B0255Owned>) {
    let mut jdc = JdTestClient::connect(jds).await;
    let (mut round_trips, mut tokens) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for request_id in 1..=n as u32 {
        let mut m = (*base).clone();
        m.request_id = request_id;
        let sent = Instant::now();
        (m.mining_job_token, _) = jdc.allocate().await;
        tokens.push(jdc.declare(m, &txs).await.expect("declared"));
        round_trips.push(sent.elapsed());
    }
    (round_trips, tokens)
}

fn report(what: &str, round_trips: &mut [Duration], elapsed: Duration) {
    round_trips.sort();
    println!(
        "declarations, {what}: {} in {:.2} s ({:.0}/s); round trip p50 {:.2} ms, p99 {:.2} ms",
        round_trips.len(),
        elapsed.as_secs_f64(),
        round_trips.len() as f64 / elapsed.as_secs_f64(),
        percentile(round_trips, 0.50),
        percentile(round_trips, 0.99),
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

//! Scale-out: several mint processes, each its own child process with its
//! own HTTP API and pool link, serving one mint from one PostgreSQL
//! database, and several pools sending their quote requests to them over
//! Redis Streams.

#[path = "../../roles/mint/tests/support/mod.rs"]
mod mint_support;

use std::collections::HashMap;
use std::time::Duration;

use cdk::nuts::State;
use cdk::wallet::ReceiveOptions;
use ehash::wire::MessageSet;
use hashpool_tests::scale_out::{pool_identity, Cluster};
use hashpool_tests::*;
use mint_quote_sv2::stream::{keypair, SignedEntry, StreamKeys};
use mint_quote_sv2::MintQuoteMessage;
use mint_support::{share, PoolClient, POOL_SECRET};
use redis::aio::MultiplexedConnection;
use stratum_core::bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};

hashpool_tests::role_child_entry!();

/// Ehash quoted through one process's pool link and minted through its
/// HTTP API is spent (swapped) through the other's, which then knows it is
/// spent and its quotes issued; what the other signed spends at the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehash_minted_at_one_mint_process_is_spent_at_another() {
    let set_up = Cluster::start(0, 2, false).await;
    let (first, second) = (&set_up.mints[0], &set_up.mints[1]);
    let (secret, key) = miner_key();

    // Shares worth 1, 2, 4 and 8 ehash, quoted at the first process; the
    // last one asked again at the second gets the same quote.
    let mut link = PoolClient::authenticated(first.link, POOL_SECRET).await;
    let requests: Vec<_> = (0..4).map(|zero_bits| share(zero_bits, key)).collect();
    let mut quote_ids = Vec::new();
    for request in &requests {
        quote_ids.push(link.quote_id(request.clone()).await);
    }
    let mut other_link = PoolClient::authenticated(second.link, POOL_SECRET).await;
    assert_eq!(
        other_link.quote_id(requests[3].clone()).await,
        quote_ids[3],
        "one share, one quote, whichever process is asked"
    );

    let at_first = wallet(&first.url());
    assert_eq!(mint_quotes(&at_first, &quote_ids, &secret).await, Ok(15));
    let minted = at_first.get_unspent_proofs().await.unwrap();

    // Swapped at the second process: spent for both.
    let at_second = wallet(&second.url());
    let received = at_second
        .receive_proofs(minted.clone(), ReceiveOptions::default(), None, None)
        .await
        .unwrap();
    assert_eq!(u64::from(received), 15);
    let states = at_first.check_proofs_spent(minted.clone()).await.unwrap();
    assert!(states.iter().all(|s| s.state == State::Spent), "{states:?}");
    assert!(
        mint_quotes(&wallet(&second.url()), &quote_ids, &secret)
            .await
            .is_err(),
        "quotes issued at the first process are issued at the second"
    );

    // And back: the second process's signatures spend at the first.
    let swapped = at_second.get_unspent_proofs().await.unwrap();
    let back = wallet(&first.url())
        .receive_proofs(swapped, ReceiveOptions::default(), None, None)
        .await
        .unwrap();
    assert_eq!(u64::from(back), 15);

    // A signed quote lookup served by one process is a replay at the other.
    let info = at_first.fetch_mint_info().await.unwrap().unwrap();
    let fields = ehash::lookup::LookupFields {
        method: "ehash",
        timestamp: roles_common::unix_secs(),
        nonce: rand::random(),
        limit: None,
        cursor: None,
    };
    let lookup = ehash::lookup::sign_request(&[*secret], &info.pubkey.unwrap(), &fields);
    let status = |url: String| {
        let lookup = &lookup;
        async move {
            cdk::http_client::HttpClient::new()
                .post(&format!("{url}/v1/mint/quote/ehash/pubkey"))
                .json(lookup)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(first.url()).await, 200);
    assert_eq!(
        status(second.url()).await,
        409,
        "replayed at another process"
    );
}

// ---- Redis Streams transport: pools and a mint cluster -------------------

/// A miner on one pool of the cluster, and the shares it had accepted.
struct ClusterMiner {
    secret: cdk::nuts::SecretKey,
    key: ehash::LockingKey,
    client: MiningClient,
    channel: u32,
    /// share hash -> ehash amount
    shares: HashMap<[u8; 32], u64>,
    /// share hash -> quote id, from the notifications
    quotes: HashMap<[u8; 32], String>,
}

impl ClusterMiner {
    async fn connect(
        cluster: &Cluster,
        pool: usize,
        secret: cdk::nuts::SecretKey,
        key: ehash::LockingKey,
    ) -> Self {
        let mut client = cluster.client(pool).await;
        let channel = client
            .open_extended(&format!("{key}.rig"), 1.0, 4)
            .await
            .expect("channel opens");
        client.wait_for_work(channel).await;
        Self {
            secret,
            key,
            client,
            channel,
            shares: HashMap::new(),
            quotes: HashMap::new(),
        }
    }

    async fn mine(&mut self, n: usize) {
        for _ in 0..n {
            let target = self.client.channels[&self.channel].target();
            let share = self
                .client
                .mine_one(self.channel)
                .await
                .expect("share accepted");
            let amount = ehash::ehash_amount(target, ehash::UnitBits::new(0).unwrap());
            self.shares.insert(share.hash, amount);
        }
    }

    /// Reads notifications (acknowledging them) until every share has its
    /// quote; a share notified twice (a resend) must name the same quote.
    async fn collect_quotes(&mut self, cluster: &Cluster) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.quotes.len() < self.shares.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} shares quoted\n{}",
                self.quotes.len(),
                self.shares.len(),
                cluster.logs()
            );
            let notifications = self.client.notifications(1).await;
            let mut hashes = vec![];
            for n in notifications {
                let hash = n.share_hash.to_array();
                assert_eq!(
                    self.shares.get(&hash),
                    Some(&n.amount),
                    "a notification for an unknown share or amount"
                );
                let quote = n.quote_id.as_utf8_or_hex();
                if let Some(earlier) = self.quotes.insert(hash, quote.clone()) {
                    assert_eq!(earlier, quote, "one share, two quotes");
                }
                hashes.push(hash);
            }
            self.client.ack(self.channel, &hashes).await;
        }
    }

    fn total(&self) -> u64 {
        self.shares.values().sum()
    }

    fn quote_ids(&self) -> Vec<String> {
        self.quotes.values().cloned().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_and_three_mint_processes_quote_every_share_once_through_crashes_and_redis_losses(
) {
    let mut cluster = Cluster::start(2, 3, true).await;
    let mut miners = vec![];
    for pool in 0..2 {
        let (secret, key) = miner_key();
        miners.push(ClusterMiner::connect(&cluster, pool, secret, key).await);
    }
    for m in &mut miners {
        m.mine(5).await;
    }

    // Mint processes die holding requests: the live ones claim and serve
    // them. With every mint paused, requests wait in the stream; a consumer
    // takes some and dies without acknowledging them (what a mint process
    // killed mid-group leaves behind), and mint 0 is killed with SIGKILL.
    for mint in &cluster.mints {
        mint.process.pause();
    }
    for m in &mut miners {
        m.mine(5).await;
    }
    let keys = StreamKeys::new("hashpool");
    let taken = take_as(&mut connect(&cluster).await, &keys, "mint-dead", 4).await;
    assert!(taken > 0, "the dead consumer took requests");
    cluster.mints[0].process.child.kill();
    for mint in &cluster.mints[1..] {
        mint.process.resume();
    }
    for m in &mut miners {
        m.mine(10).await;
    }

    // What the dead consumer held is claimed by a live process.
    let mut conn = connect(&cluster).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pending_of(&mut conn, &keys, "mint-dead").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "what the dead consumer held is never claimed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The requests change hands before the claimer logs it.
    while !cluster.mints[1..]
        .iter()
        .any(|m| m.process.child.log().contains("claimed"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a live mint process claimed requests\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Redis is killed with SIGKILL and started again: its append-only file
    // (synced on every write) still holds the requests, pending entries and
    // answers it acknowledged.
    tokio::task::block_in_place(|| {
        cluster.redis.kill();
        cluster.redis.start_again()
    })
    .expect("redis starts again");
    for m in &mut miners {
        m.mine(5).await;
    }

    // Redis loses everything (FLUSHALL) with requests unserved: the pools
    // ask again for what stays unanswered past their timeout.
    for mint in &cluster.mints[1..] {
        mint.process.pause();
    }
    for m in &mut miners {
        m.mine(3).await;
    }
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut connect(&cluster).await)
        .await
        .expect("FLUSHALL");
    for mint in &cluster.mints[1..] {
        mint.process.resume();
    }

    // Pool 1 dies with shares unanswered; restarted, it asks for them again.
    for mint in &cluster.mints[1..] {
        mint.process.pause();
    }
    miners[1].mine(5).await;
    cluster.pools[1].restart().await;
    for mint in &cluster.mints[1..] {
        mint.process.resume();
    }
    let old = miners.pop().expect("pool 1's miner");
    let mut again = ClusterMiner::connect(&cluster, 1, old.secret, old.key).await;
    again.shares = old.shares;
    again.mine(3).await;
    miners.push(again);

    // No mint running (paused, and their alive key gone, deleted here
    // rather than waited out): the pools' links go down, and shares
    // accepted meanwhile write nothing to a request stream no one reads.
    // Resumed, the mints refresh the key, the links come back and the
    // shares are quoted.
    for mint in &cluster.mints[1..] {
        mint.process.pause();
    }
    let no_mint = |cluster: &Cluster| -> Vec<usize> {
        let pools = cluster.pools.iter();
        pools
            .map(|p| p.child.log().matches("no mint is running").count())
            .collect()
    };
    let before_del = no_mint(&cluster);
    let mut conn = connect(&cluster).await;
    redis::cmd("DEL")
        .arg(keys.mint_alive())
        .query_async::<()>(&mut conn)
        .await
        .expect("DEL");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !no_mint(&cluster)
        .iter()
        .zip(&before_del)
        .all(|(now, before)| now > before)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pools' links stay up with no mint running\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = || async {
        redis::cmd("XLEN")
            .arg(keys.requests())
            .query_async::<usize>(&mut connect(&cluster).await)
            .await
            .expect("XLEN")
    };
    let before = requests().await;
    for m in &mut miners {
        m.mine(3).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        requests().await,
        before,
        "requests written with no mint running"
    );
    for mint in &cluster.mints[1..] {
        mint.process.resume();
    }

    for m in &mut miners {
        m.collect_quotes(&cluster).await;
    }
    // Each pool's miner mints exactly its shares' ehash, through a
    // different surviving mint process.
    for (i, m) in miners.iter().enumerate() {
        let wallet = wallet(&cluster.mint_url(1 + i));
        assert_eq!(
            mint_quotes(&wallet, &m.quote_ids(), &m.secret).await,
            Ok(m.total()),
            "pool {i}'s miner mints its shares\n{}",
            cluster.logs()
        );
    }
    // And the mints created one quote per share, no more: the audit counts
    // every quote, and verifies each entry's work.
    let shares: usize = miners.iter().map(|m| m.shares.len()).sum();
    let source = hashpool::audit::MintAudit::new(&cluster.mint_url(2));
    let report = hashpool::audit::audit(&source, |_, _| {})
        .await
        .expect("the audit passes");
    assert_eq!(report.summary.quotes, shares as u64, "one quote per share");
    assert_eq!(report.summary.entries, shares as u64);
    assert_eq!(
        report.summary.ehash_quoted,
        miners.iter().map(ClusterMiner::total).sum::<u64>()
    );
    cluster.stop().await;
}

async fn add_entry(conn: &mut MultiplexedConnection, stream: &str, fields: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    cmd.query_async::<String>(conn).await.expect("XADD");
}

async fn connect(cluster: &Cluster) -> MultiplexedConnection {
    redis::Client::open(cluster.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Takes up to `n` new requests as consumer `name` of the mints' group,
/// never to acknowledge them.
async fn take_as(
    conn: &mut MultiplexedConnection,
    keys: &StreamKeys,
    name: &str,
    n: usize,
) -> usize {
    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(mint_quote_sv2::stream::MINTS_GROUP)
        .arg(name)
        .arg("COUNT")
        .arg(n)
        .arg("STREAMS")
        .arg(keys.requests())
        .arg(">")
        .query_async(conn)
        .await
        .expect("XREADGROUP");
    reply.map_or(0, |r| r.keys.iter().map(|k| k.ids.len()).sum())
}

/// How many requests consumer `name` holds unacknowledged.
async fn pending_of(conn: &mut MultiplexedConnection, keys: &StreamKeys, name: &str) -> usize {
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(keys.requests())
        .arg(mint_quote_sv2::stream::MINTS_GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .arg(name)
        .query_async(conn)
        .await
        .expect("XPENDING");
    pending.len()
}

/// Waits until the mints have taken and acknowledged every request.
async fn wait_requests_served(conn: &mut MultiplexedConnection, keys: &StreamKeys) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg(keys.requests())
            .query_async(conn)
            .await
            .expect("XLEN");
        if len == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{len} requests never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_the_stream_without_an_allowed_pools_signature_creates_nothing() {
    let cluster = Cluster::start(0, 1, false).await;
    let keys = StreamKeys::new("hashpool");
    let client = redis::Client::open(cluster.redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mint_key = XOnlyPublicKey::from_slice(&public_key(MINT_PUBLIC_KEY).into_bytes()).unwrap();
    let pool_secret = SecretKey::from_slice(&pool_identity(0).0.into_bytes()).unwrap();
    let pool = keypair(&pool_secret);
    let request = || MintQuoteMessage::MintQuoteRequest(share(8, miner_key().1));

    // A key off the allow-list; the pool's key signing for another mint;
    // the pool's signature over another request; no signature at all.
    let stranger = SignedEntry::sign(
        request(),
        &keypair(&SecretKey::from_slice(&[7; 32]).unwrap()),
        &mint_key,
    )
    .unwrap();
    let other_mint =
        XOnlyPublicKey::from_slice(&public_key(WRONG_PUBLIC_KEY).into_bytes()).unwrap();
    let misdirected = SignedEntry::sign(request(), &pool, &other_mint).unwrap();
    let mut swapped = SignedEntry::sign(request(), &pool, &mint_key).unwrap();
    swapped.frame = request().to_frame_bytes().unwrap();
    for entry in [&stranger, &misdirected, &swapped] {
        let fields = entry.fields();
        add_entry(&mut conn, &keys.requests(), &fields).await;
    }
    add_entry(&mut conn, &keys.requests(), &[("frame", &swapped.frame)]).await;
    // A field name that is not UTF-8, and no fields a stream reader expects.
    redis::cmd("XADD")
        .arg(keys.requests())
        .arg("*")
        .arg(&b"\xff\xfe"[..])
        .arg("x")
        .query_async::<String>(&mut conn)
        .await
        .expect("XADD");
    wait_requests_served(&mut conn, &keys).await;

    let answers: u64 = redis::cmd("XLEN")
        .arg(keys.answers(&pool.x_only_public_key().0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(answers, 0, "nothing answered");

    // The same kind of request, signed by the pool for this mint, is quoted.
    let signed = SignedEntry::sign(request(), &pool, &mint_key).unwrap();
    add_entry(&mut conn, &keys.requests(), &signed.fields()).await;
    wait_requests_served(&mut conn, &keys).await;
    // One quote in all: the refused entries created none.
    use hashpool::audit::AuditSource;
    let audit = hashpool::audit::MintAudit::new(&cluster.mint_url(0));
    assert_eq!(audit.summary().await.expect("summary").quotes, 1);
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(keys.answers(&pool.x_only_public_key().0))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let answers = roles_common::redis_stream::entries(&reply);
    assert_eq!(answers.len(), 1);
    let (_, answer) = answers[0]
        .signed
        .clone()
        .unwrap()
        .open(&pool.x_only_public_key().0, &[mint_key])
        .expect("the mint signed the answer for the pool");
    assert!(
        matches!(answer, MintQuoteMessage::MintQuoteResponse(_)),
        "{answer:?}"
    );
    cluster.stop().await;
}

/// The mints reading one prefix's requests must share one database: a mint
/// on another takes none of them, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_on_another_database_takes_none_of_the_prefixs_requests() {
    let mut cluster = Cluster::start(0, 1, false).await;
    let other = cluster.dir.path().join("other.sqlite");
    cluster
        .start_mint(1, 1, false, &other.display().to_string())
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cluster.mints[1]
        .process
        .child
        .log_tail(50)
        .contains("takes none of their requests")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mint on another database never said so:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // It never joined the mints' group; the first did.
    let mut conn = connect(&cluster).await;
    let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(StreamKeys::new("hashpool").requests())
        .arg(mint_quote_sv2::stream::MINTS_GROUP)
        .query_async(&mut conn)
        .await
        .expect("XINFO CONSUMERS");
    let names: Vec<String> = consumers
        .iter()
        .map(|c| redis::from_redis_value(c["name"].clone()).unwrap())
        .collect();
    assert_eq!(names, ["mint-0"]);
    cluster.stop().await;
}

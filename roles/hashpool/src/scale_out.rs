//! `hashpool devnet --scale-out`: the devnet as a small cluster. The mint
//! keeps its database in PostgreSQL and reads quote requests from Redis
//! Streams; a second mint instance serves the same database and stream, and
//! a second pool, with its own identity key and outbox, sends its requests
//! there too. The translator mines on the first pool and fails over to the
//! second. PostgreSQL and Redis run as child processes in temporary
//! directories, so the mint database does not outlive a run; each run
//! starts from nothing: its state dir (`<state_dir>-scale-out`: chain,
//! outboxes, wallet, log) is emptied at start.

use std::net::SocketAddr;
use std::path::Path;

use pool::config::MintTransport;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

use crate::profile::DevnetConfigs;
use roles_common::services::{Postgres, ProcessGroup, Redis};

/// The second pool's identity key towards the mint (devnet only: public).
const SECOND_POOL_IDENTITY: &str = "VJCtphiyTgEZe7rb98GUeAE6yxVLocVWmvt68y3BuQqqshcK8";

/// How long a request held by a stopped mint instance waits to be claimed.
const CLAIM_IDLE_MS: u64 = 5_000;

/// The cluster's database and stream servers, owned by a thread of their
/// own that started them: they stop when it ends, so they go with the
/// devnet even if it is killed.
pub struct Services {
    pub postgres_addr: SocketAddr,
    pub redis_url: String,
    /// Dropping it ends the thread, which stops the servers.
    stop: std::sync::mpsc::Sender<()>,
    owner: std::thread::JoinHandle<()>,
}

impl Services {
    /// Stops both servers (off the runtime: it waits for them to exit).
    pub async fn stop(self) {
        drop(self.stop);
        let owner = self.owner;
        let _ = tokio::task::spawn_blocking(move || owner.join()).await;
    }
}

/// Starts PostgreSQL and Redis and points the mint and the pool at them.
pub async fn start_services(c: &mut DevnetConfigs) -> Result<Services, String> {
    let (started, urls) = tokio::sync::oneshot::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    // Off the runtime: initdb and the waits for the servers block. Their
    // own process groups: Ctrl-C reaches the devnet alone, which stops them
    // after the mints and pools.
    let owner = std::thread::Builder::new()
        .name("scale-out-servers".into())
        .spawn(move || {
            let own = ProcessGroup::Own;
            let servers = Postgres::start(own).and_then(|p| Ok((p, Redis::start(own)?)));
            let urls = match &servers {
                Ok((p, r)) => Ok((p.url(), p.addr(), r.url())),
                Err(e) => Err(e.clone()),
            };
            let _ = started.send(urls);
            // Until told to stop, or the devnet is gone.
            let _ = stopped.recv();
            drop(servers);
        })
        .map_err(|e| format!("starting the servers' thread: {e}"))?;
    let (postgres_url, postgres_addr, redis_url) = urls
        .await
        .map_err(|_| "the servers' thread ended".to_string())??;
    let services = Services {
        postgres_addr,
        redis_url,
        stop,
        owner,
    };
    c.mint.database = postgres_url;
    c.mint.redis = Some(mint::RedisSettings {
        url: services.redis_url.clone(),
        prefix: roles_common::redis_stream::default_prefix(),
        consumer: Some("devnet-mint-a".into()),
        claim_idle_ms: CLAIM_IDLE_MS,
    });
    let first_pool = c
        .mint
        .pools
        .first()
        .cloned()
        .ok_or("the mint allows no pool")?;
    c.mint.pools.push(mint::AllowedPool {
        key: second_identity().1,
        reward_script: first_pool.reward_script,
    });
    if let Some(link) = c.pool.mint.as_mut() {
        link.transport = MintTransport::Redis;
        link.redis_url = Some(services.redis_url.clone());
        link.redis_prefix = roles_common::redis_stream::default_prefix();
    }
    Ok(services)
}

fn second_identity() -> (Secp256k1SecretKey, Secp256k1PublicKey) {
    let secret: Secp256k1SecretKey = SECOND_POOL_IDENTITY.parse().expect("a valid key");
    (secret, secret.into())
}

/// The second mint instance: the first's config on ports the system picks,
/// under its own consumer name.
pub fn second_mint(first: &mint::MintConfig) -> mint::MintConfig {
    let mut c = first.clone();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    c.http_listen = any;
    c.link_listen = any;
    c.public_url = None;
    if let Some(redis) = c.redis.as_mut() {
        redis.consumer = Some("devnet-mint-b".into());
    }
    c
}

/// The second pool: the first's config with its own identity key, a port
/// the system picks and its own state; it publishes no stats and declares
/// no jobs.
pub fn second_pool(first: &pool::PoolConfig, state_dir: &Path) -> pool::PoolConfig {
    let mut c = first.clone();
    c.listen_address = "127.0.0.1:0".into();
    c.state_dir = state_dir.join("pool-b");
    c.stats = None;
    c.jds = None;
    if let Some(link) = c.mint.as_mut() {
        link.identity_secret_key = second_identity().0;
    }
    c
}

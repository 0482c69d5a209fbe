//! A scale-out deployment for tests: pools and mint processes, each a child
//! process the test can SIGKILL, sharing one PostgreSQL database and one
//! Redis that the test starts itself, on devnet-tp. Every mint process has
//! the same mnemonic (so the same keysets), its own HTTP API and pool link,
//! and reads the pools' quote requests from Redis Streams.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use devnet_tp::TpHandle;
use roles_common::services::{Postgres, ProcessGroup, Redis};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::role_child::RoleChild;
use crate::shipped_configs::{set_config, shipped_config, write_config};
use crate::*;

/// How long a request held by a dead mint process waits to be claimed.
pub const CLAIM_IDLE_MS: u64 = 1_000;

/// Identity keys of the cluster's pools: the shipped pool's, then the 32
/// bytes 0x40 and 0x41 (base58check).
const POOL_IDENTITIES: [&str; 3] = [
    POOL_IDENTITY_SECRET_KEY,
    "VJCtphiyTgEZe7rb98GUeAE6yxVLocVWmvt68y3BuQqqshcK8",
    "VjrEfUmSdA2zctNN5dP4c2DQJ4o1BBfvoYAHzwCHWfiU1AsFo",
];

/// The identity key of the cluster's pool `i`, its public half, and the
/// reward script its coinbases pay ("51", "52", ...).
pub fn pool_identity(i: usize) -> (Secp256k1SecretKey, Secp256k1PublicKey, String) {
    let secret = secret_key(POOL_IDENTITIES[i]);
    (secret, secret.into(), format!("{:02x}", 0x51 + i))
}

/// A role running as a child process, and where it listens.
pub struct Process {
    pub addr: SocketAddr,
    pub child: RoleChild,
}

impl Process {
    /// Starts `role` from `config` and waits until it listens on every one
    /// of `addrs` (the first is kept as its address).
    async fn start(role: &str, config: &Path, addrs: &[SocketAddr]) -> Process {
        let process = Process {
            addr: addrs[0],
            child: RoleChild::spawn(role, config),
        };
        for addr in addrs {
            process.wait_listening(*addr).await;
        }
        process
    }

    async fn wait_listening(&self, addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing listens on {addr}; the child's log ends:\n{}",
                self.child.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP: it holds its connections but does nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.pid().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{signal} {pid}");
    }

    /// SIGKILLs it and starts it again from the same config and state.
    pub async fn restart(&mut self) {
        self.child.restart();
        self.wait_listening(self.addr).await;
    }
}

/// A mint process: its HTTP API is `addr`.
pub struct MintProcess {
    pub process: Process,
    pub link: SocketAddr,
}

impl MintProcess {
    /// The base URL of its Cashu HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }
}

pub struct Cluster {
    /// Dropped first: the processes end before their servers.
    pub pools: Vec<Process>,
    pub mints: Vec<MintProcess>,
    tp: Option<TpHandle>,
    tp_shutdown: CancellationToken,
    pub redis: Redis,
    pub postgres: Postgres,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// `pools` pools and `mints` mint processes, all up. With
    /// `follow_chain`, the mints follow devnet-tp's chain.
    pub async fn start(pools: usize, mints: usize, follow_chain: bool) -> Cluster {
        Self::start_on(pools, mints, follow_chain, None).await
    }

    /// [`Self::start`] with the mints' database at `database` instead of the
    /// cluster's PostgreSQL (a SQLite file serves one mint process only).
    pub async fn start_on(
        pools: usize,
        mints: usize,
        follow_chain: bool,
        database: Option<String>,
    ) -> Cluster {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let (tp, tp_shutdown) = start_tp(dir.path(), NBITS_NEVER).await;
        let (redis, postgres) = tokio::task::spawn_blocking(|| {
            (
                Redis::start(ProcessGroup::Parent),
                Postgres::start(ProcessGroup::Parent),
            )
        })
        .await
        .expect("servers start");
        let mut cluster = Cluster {
            pools: vec![],
            mints: vec![],
            tp: Some(tp),
            tp_shutdown,
            redis: redis.unwrap_or_else(|e| panic!("Redis: {e}")),
            postgres: postgres.unwrap_or_else(|e| panic!("PostgreSQL: {e}")),
            dir,
        };
        // One after the other: the first sets the database up (tables,
        // keysets), which is not meant to run twice at once.
        let database = database.unwrap_or_else(|| cluster.postgres.url());
        for i in 0..mints {
            cluster
                .start_mint(i, pools.max(1), follow_chain, &database)
                .await;
        }
        for i in 0..pools {
            cluster.start_pool(i).await;
        }
        cluster
    }

    fn tp_addr(&self) -> SocketAddr {
        self.tp.as_ref().expect("devnet-tp running").local_addr()
    }

    /// The shipped mint config on fresh ports, `database` and the cluster's
    /// Redis, allowing the cluster's first `pools` pools.
    pub async fn start_mint(&mut self, i: usize, pools: usize, follow_chain: bool, database: &str) {
        let (http, link) = (free_address(), free_address());
        let mut c = shipped_config("mint.toml");
        set_config(&mut c, "http_listen", http.to_string());
        set_config(&mut c, "link_listen", link.to_string());
        set_config(&mut c, "database", database);
        set_config(&mut c, "unit_bits", 0i64);
        if follow_chain {
            set_config(&mut c, "chain.tp_address", self.tp_addr().to_string());
        } else {
            c.remove("chain");
        }
        let mut redis = toml::Table::new();
        redis.insert("url".into(), self.redis.url().into());
        redis.insert("consumer".into(), format!("mint-{i}").into());
        redis.insert("claim_idle_ms".into(), (CLAIM_IDLE_MS as i64).into());
        c.insert("redis".into(), redis.into());
        let allowed: Vec<toml::Value> = (0..pools)
            .map(|p| {
                let (_, key, script) = pool_identity(p);
                let mut pool = toml::Table::new();
                pool.insert("key".into(), key.to_string().into());
                pool.insert("reward_script".into(), script.into());
                pool.into()
            })
            .collect();
        c.insert("pools".into(), allowed.into());
        let config = write_config(self.dir.path(), &format!("mint-{i}.toml"), &c);
        let process = Process::start("mint", &config, &[http, link]).await;
        self.mints.push(MintProcess { process, link });
    }

    /// The shipped pool config on a fresh port, its own identity, reward
    /// script and state, sending its quote requests over Redis.
    async fn start_pool(&mut self, i: usize) {
        let (identity, _, script) = pool_identity(i);
        let addr = free_address();
        let mut c = shipped_config("pool.toml");
        set_config(&mut c, "listen_address", addr.to_string());
        set_config(&mut c, "tp_address", self.tp_addr().to_string());
        set_config(&mut c, "coinbase_reward_script", script);
        set_config(&mut c, "unit_bits", 0i64);
        set_config(&mut c, "vardiff_interval_secs", 0i64);
        set_config(&mut c, "stats_log_interval_secs", 0i64);
        let state = self.dir.path().join(format!("pool-{i}"));
        set_config(&mut c, "state_dir", state.display().to_string());
        c.remove("stats");
        set_config(&mut c, "mint.transport", "redis");
        set_config(&mut c, "mint.redis_url", self.redis.url());
        set_config(&mut c, "mint.identity_secret_key", identity.to_string());
        set_config(&mut c, "mint.timeout_secs", 5i64);
        set_config(&mut c, "mint.stats_interval_secs", 1i64);
        let config = write_config(self.dir.path(), &format!("pool-{i}.toml"), &c);
        self.pools
            .push(Process::start("pool", &config, &[addr]).await);
    }

    pub fn mint_url(&self, i: usize) -> String {
        self.mints[i].url()
    }

    /// A mining client of pool `i` with the ehash extension.
    pub async fn client(&self, i: usize) -> MiningClient {
        let mut c = MiningClient::set_up(self.pools[i].addr).await;
        c.request_extensions(vec![ehash_ext_sv2::EHASH_EXTENSION_TYPE])
            .await;
        c
    }

    /// Every child's log tail, for a failure message.
    pub fn logs(&self) -> String {
        let mints = self.mints.iter().map(|m| &m.process);
        let named = mints
            .enumerate()
            .map(|(i, p)| (format!("mint {i}"), p))
            .chain(
                self.pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("pool {i}"), p)),
            );
        named
            .map(|(name, p)| format!("--- {name}\n{}\n", p.child.log_tail(30)))
            .collect()
    }

    pub async fn stop(mut self) {
        self.pools.clear();
        self.mints.clear();
        self.tp_shutdown.cancel();
        if let Some(tp) = self.tp.take() {
            tp.wait().await;
        }
    }
}

//! The roles under test started in this process on 127.0.0.1 port 0:
//! devnet-tp and the pool ([`Stack`]), plus the mint and the ehash flow
//! ([`EhashStack`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use devnet_tp::{TpConfig, TpHandle};
use pool::{AcceptedShare, Hooks, PoolConfig, PoolEvent, PoolHandle};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::keys::*;
use crate::mining_client::MiningClient;
use crate::tcp_relay::Relay;

pub fn tp_config(state_dir: &Path, nbits: u32) -> TpConfig {
    TpConfig {
        listen_address: "127.0.0.1:0".into(),
        authority_public_key: public_key(TP_PUBLIC_KEY),
        authority_secret_key: secret_key(TP_SECRET_KEY),
        cert_validity_sec: 3600,
        state_dir: state_dir.to_path_buf(),
        nbits,
        initial_subsidy_sats: 5_000_000_000,
        halving_interval: 150,
        // Tests that count jobs see templates only when the tip moves.
        template_refresh_secs: 0,
        coinbase_maturity: devnet_tp::utxo::BITCOIN_COINBASE_MATURITY,
        mempool_tx_per_minute: 0,
    }
}

/// A jd-client on 127.0.0.1 port 0 with its own template provider at `tp`
/// and the pool's listeners. It serves downstreams with the pool's keys, so
/// a translator configured for the pool connects to it unchanged.
pub fn jd_client_config(
    tp: SocketAddr,
    pool: SocketAddr,
    jds: SocketAddr,
) -> jd_client::JdClientConfig {
    jd_client::JdClientConfig {
        network: roles_common::Network::Devnet,
        listen_address: "127.0.0.1:0".into(),
        authority_public_key: public_key(POOL_PUBLIC_KEY),
        authority_secret_key: secret_key(POOL_SECRET_KEY),
        cert_validity_sec: 3600,
        tp_address: tp.to_string(),
        tp_authority_public_key: public_key(TP_PUBLIC_KEY),
        pool_address: pool.to_string(),
        jds_address: jds.to_string(),
        pool_authority_public_key: public_key(POOL_PUBLIC_KEY),
        user_identifier: "test-jdc".into(),
        jds_retry_secs: 1,
    }
}

pub fn pool_config(tp_address: SocketAddr) -> PoolConfig {
    PoolConfig {
        network: roles_common::Network::Devnet,
        listen_address: "127.0.0.1:0".into(),
        authority_public_key: public_key(POOL_PUBLIC_KEY),
        authority_secret_key: secret_key(POOL_SECRET_KEY),
        cert_validity_sec: 3600,
        tp_address: tp_address.to_string(),
        tp_authority_public_key: public_key(TP_PUBLIC_KEY),
        pool_signature: "hashpool-test".into(),
        coinbase_reward_script: "51".into(),
        shares_per_minute: 6.0,
        share_batch_size: 1,
        vardiff_interval_secs: 0,
        min_share_difficulty: 0.0,
        unit_bits: 0,
        require_locking_key: true,
        max_channels: 65_536,
        max_channels_per_connection: 4_096,
        max_channels_per_ip: 65_536,
        max_connections: 10_000,
        max_connections_per_ip: 10_000,
        idle_timeout_secs: 600,
        idle_channel_timeout_secs: 600,
        write_timeout_secs: 30,
        extranonce_len: 16,
        stats_log_interval_secs: 0,
        state_dir: std::env::temp_dir().join("hashpool-tests-unused"),
        mint: None,
        stats: None,
        jds: None,
    }
}

/// A mint config on 127.0.0.1 port 0 with its database in `dir`, following
/// the chain of the devnet-tp at `tp`.
pub fn mint_config(dir: &Path, tp: SocketAddr) -> mint::MintConfig {
    mint::MintConfig {
        network: roles_common::Network::Devnet,
        http_listen: "127.0.0.1:0".parse().expect("valid"),
        public_url: None,
        link_listen: "127.0.0.1:0".parse().expect("valid"),
        authority_public_key: public_key(MINT_PUBLIC_KEY),
        authority_secret_key: secret_key(MINT_SECRET_KEY),
        cert_validity_secs: 3600,
        pools: vec![mint::AllowedPool {
            key: public_key(POOL_IDENTITY_PUBLIC_KEY),
            reward_script: "51".into(),
        }],
        database: dir.join("mint.sqlite").to_string_lossy().into_owned(),
        mnemonic: MINT_MNEMONIC.into(),
        unit_bits: 0,
        min_amount: 1,
        max_amount: i64::MAX as u64,
        max_batch_size: 100,
        chain: Some(mint::ChainSettings {
            tp_address: tp.to_string(),
            tp_authority_public_key: public_key(TP_PUBLIC_KEY),
            max_tip_age: 6,
            unseen_tip_wait_secs: 10,
        }),
        redis: None,
        name: "test mint".into(),
        description: None,
    }
}

/// The `[mint]` table of a pool config for a mint link at `address`.
pub fn mint_settings(address: SocketAddr, mode: &str) -> pool::config::MintSettings {
    pool::config::MintSettings {
        transport: pool::config::MintTransport::Noise,
        redis_url: None,
        redis_prefix: "hashpool".into(),
        address: address.to_string(),
        authority_public_key: public_key(MINT_PUBLIC_KEY),
        identity_secret_key: secret_key(POOL_IDENTITY_SECRET_KEY),
        share_response_mode: mode.into(),
        timeout_secs: 30,
        pending_capacity: 10_000,
        undelivered_per_key: 1000,
        undelivered_total: 10_000,
        stats_interval_secs: 1,
    }
}

/// devnet-tp on 127.0.0.1 port 0 with its chain in `state_dir`, and the
/// token that stops it.
pub async fn start_tp(state_dir: &Path, nbits: u32) -> (TpHandle, CancellationToken) {
    start_tp_with(tp_config(state_dir, nbits)).await
}

/// devnet-tp with `config`, and the token that stops it.
pub async fn start_tp_with(config: TpConfig) -> (TpHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let tp = devnet_tp::start(config, shutdown.clone())
        .await
        .expect("devnet-tp starts");
    (tp, shutdown)
}

/// Stops a role running in this process: cancels its `shutdown` token and
/// waits at most `within` for `stopped` (its handle's `wait()`), which must
/// end well.
pub async fn stop_role(
    what: &str,
    within: Duration,
    shutdown: &CancellationToken,
    stopped: impl Future<Output = impl Stopped>,
) {
    shutdown.cancel();
    tokio::time::timeout(within, stopped)
        .await
        .unwrap_or_else(|_| panic!("{what} stops"))
        .check(what);
}

/// How a role's `wait()` ended: `()`, or an error naming a task that ended
/// on its own.
pub trait Stopped {
    /// Panics, naming `what`, unless it ended well.
    fn check(self, what: &str);
}

impl Stopped for () {
    fn check(self, _: &str) {}
}

impl Stopped for Result<(), String> {
    fn check(self, what: &str) {
        if let Err(e) = self {
            panic!("{what} stopped with an error: {e}");
        }
    }
}

/// Logs of the roles under test, when `RUST_LOG` is set (e.g. `RUST_LOG=info`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Waits up to `within` for an event of `events` matching `pred`; `what`
/// names the events in failure messages. Lagging only skips events.
pub async fn wait_broadcast<E: Clone>(
    events: &mut broadcast::Receiver<E>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&E) -> bool,
) -> E {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("{what} closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching {what} within {within:?}"))
}

/// A devnet-tp and a pool, on 127.0.0.1 port 0.
pub struct Stack {
    pub tp: TpHandle,
    pub pool: PoolHandle,
    pub events: broadcast::Receiver<PoolEvent>,
    pub accepted: mpsc::UnboundedReceiver<AcceptedShare>,
    pub tp_shutdown: CancellationToken,
    pub pool_shutdown: CancellationToken,
    pub state_dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(nbits: u32) -> Stack {
        Self::start_with(nbits, |_| {}).await
    }

    /// [`Stack::start`], the pool reaching its template provider through
    /// a [`Relay`] (which can lose its writes or cut the link).
    pub async fn start_behind_relay(nbits: u32) -> (Stack, Relay) {
        let mut relay = None;
        let stack = Self::start_with(nbits, |c| {
            let started = Relay::start(c.tp_address.clone());
            c.tp_address = started.addr.to_string();
            relay = Some(started);
        })
        .await;
        (stack, relay.expect("the relay started"))
    }

    pub async fn start_with(nbits: u32, tweak: impl FnOnce(&mut PoolConfig)) -> Stack {
        init_logging();
        let state_dir = tempfile::tempdir().expect("temp dir");
        let (tp, tp_shutdown) = start_tp(state_dir.path(), nbits).await;
        let (tx, accepted) = mpsc::unbounded_channel();
        let pool_shutdown = CancellationToken::new();
        let mut config = pool_config(tp.local_addr());
        tweak(&mut config);
        let pool = pool::start(
            config,
            pool_shutdown.clone(),
            Hooks {
                accepted_shares: Some(std::sync::Arc::new(tx)),
            },
        )
        .await
        .expect("pool starts");
        let events = pool.subscribe_events();
        Stack {
            tp,
            pool,
            events,
            accepted,
            tp_shutdown,
            pool_shutdown,
            state_dir,
        }
    }

    pub fn pool_addr(&self) -> SocketAddr {
        self.pool.local_addr()
    }

    /// A mining client that finished SetupConnection.
    pub async fn client(&self) -> MiningClient {
        MiningClient::set_up(self.pool_addr()).await
    }

    /// Waits for a pool event matching `pred`.
    pub async fn wait_event(&mut self, pred: impl FnMut(&PoolEvent) -> bool) -> PoolEvent {
        wait_broadcast(&mut self.events, WAIT, "pool events", pred).await
    }

    pub async fn stop(self) {
        self.pool_shutdown.cancel();
        self.tp_shutdown.cancel();
        self.pool.wait().await.check("pool");
        self.tp.wait().await;
    }
}

/// devnet-tp, the mint and the pool with its ehash flow, each restartable
/// on the same state (and the same ports).
pub struct EhashStack {
    pub dir: tempfile::TempDir,
    tp_config: TpConfig,
    tp: Option<TpHandle>,
    tp_shutdown: CancellationToken,
    pub mint_config: mint::MintConfig,
    pub mint: Option<(mint::RunningMint, CancellationToken)>,
    pub pool_config: PoolConfig,
    pub pool: Option<(PoolHandle, CancellationToken)>,
}

impl EhashStack {
    /// Everything running, with `mode` "annotate" or "defer".
    pub async fn start(mode: &str, tweak: impl FnOnce(&mut PoolConfig)) -> EhashStack {
        Self::start_on(mode, |_| {}, tweak).await
    }

    /// Everything running on a chain whose templates carry transactions
    /// (devnet-tp's mempool on, two blocks premined): a job has a merkle
    /// path from its first template on. The chain's directory lives as
    /// long as the returned guard.
    pub async fn start_with_transactions(
        mode: &str,
        tweak: impl FnOnce(&mut PoolConfig),
    ) -> (EhashStack, tempfile::TempDir) {
        let chain = tempfile::tempdir().expect("temp dir");
        crate::tdp_client::premine_blocks_with_transactions(chain.path()).await;
        let chain_dir = chain.path().to_path_buf();
        let stack = Self::start_on(
            mode,
            |tp| {
                crate::tdp_client::with_mempool(tp);
                tp.state_dir = chain_dir;
            },
            tweak,
        )
        .await;
        // The mempool fills, and the next template carries it to the pool.
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        while stack.tp().mempool_len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the mempool stays empty"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (stack, chain)
    }

    /// Everything running, devnet-tp's config changed by `tp_tweak` first
    /// (it mines no block unless the tweak sets its `nbits`).
    pub async fn start_on(
        mode: &str,
        tp_tweak: impl FnOnce(&mut TpConfig),
        tweak: impl FnOnce(&mut PoolConfig),
    ) -> EhashStack {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tp_config = tp_config(dir.path(), NBITS_NEVER);
        tp_tweak(&mut tp_config);
        let (tp, tp_shutdown) = start_tp_with(tp_config.clone()).await;
        tp_config.listen_address = tp.local_addr().to_string();
        let mut stack = EhashStack {
            mint_config: mint_config(dir.path(), tp.local_addr()),
            pool_config: pool_config(tp.local_addr()),
            dir,
            tp_config,
            tp: Some(tp),
            tp_shutdown,
            mint: None,
            pool: None,
        };
        stack.start_mint().await;
        let link = stack.mint_link_addr();
        stack.pool_config.mint = Some(mint_settings(link, mode));
        stack.pool_config.state_dir = stack.dir.path().join("pool");
        tweak(&mut stack.pool_config);
        stack.start_pool().await;
        stack
    }

    /// Starts the mint; after the first start it keeps its ports.
    pub async fn start_mint(&mut self) {
        let shutdown = CancellationToken::new();
        let running = mint::start(self.mint_config.clone(), shutdown.clone())
            .await
            .expect("mint starts");
        self.mint_config.http_listen = running.http_addr;
        self.mint_config.link_listen = running.link_addr;
        self.mint = Some((running, shutdown));
    }

    pub async fn stop_mint(&mut self) {
        if let Some((running, shutdown)) = self.mint.take() {
            shutdown.cancel();
            running.wait().await.check("mint");
        }
    }

    /// Starts the pool; after the first start it keeps its port.
    pub async fn start_pool(&mut self) {
        let shutdown = CancellationToken::new();
        let pool = pool::start(self.pool_config.clone(), shutdown.clone(), Hooks::default())
            .await
            .expect("pool starts");
        self.pool_config.listen_address = pool.local_addr().to_string();
        if let (Some(jds), Some(addr)) = (&mut self.pool_config.jds, pool.jds_addr()) {
            jds.listen_address = addr.to_string();
        }
        self.pool = Some((pool, shutdown));
    }

    pub async fn stop_pool(&mut self) {
        if let Some((pool, shutdown)) = self.pool.take() {
            shutdown.cancel();
            pool.wait().await.check("pool");
        }
    }

    pub fn pool(&self) -> &PoolHandle {
        &self.pool.as_ref().expect("pool running").0
    }

    /// Stops devnet-tp, waits `down`, and starts it again on the same
    /// address and chain.
    pub async fn restart_tp_after(&mut self, down: Duration) {
        let running = self.tp.take().expect("devnet-tp running");
        self.tp_shutdown.cancel();
        running.wait().await;
        tokio::time::sleep(down).await;
        self.tp_shutdown = CancellationToken::new();
        let tp = devnet_tp::start(self.tp_config.clone(), self.tp_shutdown.clone())
            .await
            .expect("devnet-tp starts again");
        self.tp = Some(tp);
    }

    pub fn tp(&self) -> &TpHandle {
        self.tp.as_ref().expect("devnet-tp running")
    }

    /// Stops the pool and runs it again as a child process (which a test
    /// can kill with SIGKILL), on fresh fixed ports (its job declarator's
    /// too, with one), with the same state dir.
    pub async fn pool_in_a_child(&mut self) -> crate::role_child::RoleChild {
        self.stop_pool().await;
        self.pool_config.listen_address = crate::free_address().to_string();
        if let Some(jds) = self.pool_config.jds.as_mut() {
            jds.listen_address = crate::free_address().to_string();
        }
        let config_path = self.dir.path().join("pool.toml");
        std::fs::write(&config_path, self.pool_toml()).unwrap();
        crate::role_child::RoleChild::spawn("pool", &config_path)
    }

    /// The pool's config as a file: what `pool_in_a_child` runs.
    fn pool_toml(&self) -> String {
        let c = &self.pool_config;
        let m = c.mint.as_ref().expect("the ehash stack's pool has a mint");
        let jds = c.jds.as_ref().map_or(String::new(), |jds| {
            format!("\n[jds]\nlisten_address = \"{}\"\n", jds.listen_address)
        });
        format!(
            r#"network = "devnet"
listen_address = "{listen}"
authority_public_key = "{pool_pub}"
authority_secret_key = "{pool_sec}"
tp_address = "{tp}"
tp_authority_public_key = "{tp_pub}"
coinbase_reward_script = "51"
vardiff_interval_secs = 0
unit_bits = 0
stats_log_interval_secs = 0
state_dir = "{state}"

[mint]
address = "{mint}"
authority_public_key = "{mint_pub}"
identity_secret_key = "{pool_id}"
share_response_mode = "annotate"
stats_interval_secs = 1
{jds}"#,
            listen = c.listen_address,
            pool_pub = POOL_PUBLIC_KEY,
            pool_sec = POOL_SECRET_KEY,
            tp = c.tp_address,
            tp_pub = TP_PUBLIC_KEY,
            state = c.state_dir.display(),
            mint = m.address,
            mint_pub = MINT_PUBLIC_KEY,
            pool_id = POOL_IDENTITY_SECRET_KEY,
        )
    }

    pub fn mint_link_addr(&self) -> SocketAddr {
        self.mint_config.link_listen
    }

    pub fn mint_url(&self) -> String {
        format!("http://{}", self.mint_config.http_listen)
    }

    pub fn pool_addr(&self) -> SocketAddr {
        self.pool_config
            .listen_address
            .parse()
            .expect("bound address")
    }

    /// A client that finished SetupConnection and, if `ehash`, negotiated the extension.
    pub async fn client(&self, ehash: bool) -> MiningClient {
        let mut c = MiningClient::set_up(self.pool_addr()).await;
        if ehash {
            c.request_extensions(vec![ehash_ext_sv2::EHASH_EXTENSION_TYPE])
                .await;
        }
        c
    }

    pub async fn stop(mut self) {
        self.stop_pool().await;
        self.stop_mint().await;
        self.tp_shutdown.cancel();
        if let Some(tp) = self.tp.take() {
            tp.wait().await;
        }
    }
}

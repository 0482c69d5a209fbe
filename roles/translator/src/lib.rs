//! The Hashpool translator proxy: SV1 miners in, SV2 out, a wallet that
//! mints their ehash.
//!
//! - SV1 server ([`sv1`], [`miner`]): subscribe, authorize, submit, notify,
//!   set_difficulty, configure (version rolling), extranonce.subscribe;
//!   per-miner vardiff (the `vardiff` crate's estimator) and keepalive jobs.
//! - One SV2 extended channel per miner over one Noise connection to the
//!   pool, with failover over `upstreams`; an upstream reconnect keeps the
//!   miners connected (their extranonce1 is the translator's, the pool's
//!   prefix travels in `coinb1`).
//! - The ehash extension (0x4EA5): every `MintQuoteNotification` /
//!   `MintQuoteFailure` is recorded ([`quotes`]); quotes locked to the
//!   wallet's key are minted in NUT-29 batches ([`wallet`]); quotes locked to
//!   a miner's own key are listed for that miner's wallet.
//!
//! [`miner`] (one miner's session), [`router`] (whose channel is which),
//! [`aggregate`] (the shared channel), [`sv1`] and [`quotes`]
//! are sans-IO. The tasks: `miners` (the SV1 listener, one task per miner),
//! `upstream` (the pool connection) and `quote_tasks` (recording and
//! minting quotes).

pub mod aggregate;
pub mod cli;
pub mod config;
pub mod miner;
mod miners;
mod quote_tasks;
pub mod quotes;
pub mod router;
mod upstream;
pub mod wallet;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::{TranslatorConfig, UpstreamConfig};

use crate::quotes::{MinterLock, QuoteStore};
use crate::wallet::EhashWallet;
use roles_common::private;
use roles_common::stats_publisher::StatsPublisher;
use roles_common::tasks::RoleTasks;
use stats_sv2::role;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum TranslatorError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] quotes::StoreError),
    #[error(transparent)]
    Wallet(#[from] wallet::WalletError),
    #[error("{0}")]
    TaskEnded(String),
}

/// Something that happened, for tests and monitoring.
#[derive(Debug, Clone, PartialEq)]
pub enum TranslatorEvent {
    UpstreamConnected {
        address: String,
        ehash: bool,
    },
    UpstreamLost(String),
    /// The pool reads too slowly: shares are turned away (answered
    /// `pool-not-reading`) until it catches up.
    PoolNotReading,
    /// The pool reads again, after `turned_away` shares were turned away.
    PoolReadingAgain {
        turned_away: u64,
    },
    MinerConnected(u32),
    /// Vardiff asked the pool for a new difficulty for a miner, set for
    /// `hashrate` hashes per second.
    Retargeted {
        miner: u32,
        hashrate: f64,
    },
    MinerDisconnected {
        miner: u32,
        reason: String,
    },
    QuoteRecorded {
        quote_id: String,
        amount: u64,
        own: bool,
    },
    QuoteFailed {
        share_hash: String,
        error_code: String,
    },
    /// A minting round: quotes minted (or found already issued) and the amount minted now.
    Minted {
        quotes: usize,
        amount: u64,
    },
}

/// A running translator.
pub struct TranslatorHandle {
    local_addr: SocketAddr,
    events: broadcast::Sender<TranslatorEvent>,
    store: Arc<QuoteStore>,
    wallet: Arc<EhashWallet>,
    mint_now: Arc<Notify>,
    stats: StatsPublisher,
    tasks: RoleTasks,
}

impl TranslatorHandle {
    /// The SV1 listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<TranslatorEvent> {
        self.events.subscribe()
    }

    pub fn quotes(&self) -> &Arc<QuoteStore> {
        &self.store
    }

    pub fn wallet(&self) -> &Arc<EhashWallet> {
        &self.wallet
    }

    /// The publisher of the translator's stats events (disabled without `[stats]`).
    pub fn stats_publisher(&self) -> &StatsPublisher {
        &self.stats
    }

    /// Starts a minting round now (instead of at the next retry).
    pub fn mint_now(&self) {
        self.mint_now.notify_one();
    }

    /// Waits until the translator stopped: its shutdown token was
    /// cancelled, or one of its tasks ended on its own (`Err` naming it).
    pub async fn wait(self) -> Result<(), String> {
        self.tasks.wait().await
    }

    /// Stops every task at once, as a crash would (tests).
    pub fn abort(self) {
        self.tasks.abort();
    }
}

/// Opens the quote records and the wallet of `config.data_dir`.
pub async fn open_wallet(
    config: &TranslatorConfig,
) -> Result<(Arc<QuoteStore>, Arc<EhashWallet>), TranslatorError> {
    private::create_dir(&config.data_dir).map_err(|source| TranslatorError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Arc::new(QuoteStore::open(&config.quotes_db_path())?);
    let wallet = Arc::new(
        EhashWallet::open(
            &config.mint_url,
            config.mint_timeout(),
            &config.wallet_db_path(),
            config.seed(),
        )
        .await?,
    );
    Ok((store, wallet))
}

/// The SV1 listener and the address it got.
async fn bind_miners(
    config: &TranslatorConfig,
) -> Result<(TcpListener, SocketAddr), TranslatorError> {
    let listen = |source| TranslatorError::Listen {
        address: config.listen_address,
        source,
    };
    let listener = TcpListener::bind(config.listen_address)
        .await
        .map_err(listen)?;
    let local_addr = listener.local_addr().map_err(listen)?;
    Ok((listener, local_addr))
}

/// Binds the SV1 listener, connects upstream and starts the wallet.
pub async fn start(
    config: TranslatorConfig,
    shutdown: CancellationToken,
) -> Result<TranslatorHandle, TranslatorError> {
    // Its own: a task ending early stops the translator, nothing else.
    let shutdown = shutdown.child_token();
    let (store, wallet) = open_wallet(&config).await?;
    let minter_lock = store.take_minter()?;
    let (listener, local_addr) = bind_miners(&config).await?;
    let (events, _) = broadcast::channel(4096);
    let wallet_key = wallet.locking_key();
    info!(
        %local_addr,
        upstreams = ?config.upstreams.iter().map(|u| u.address.as_str()).collect::<Vec<_>>(),
        mint = config.mint_url,
        wallet_key = %wallet_key,
        "translator listening for SV1 miners"
    );
    let stats =
        StatsPublisher::for_config(config.stats.as_ref(), role::TRANSLATOR, shutdown.clone());
    let (router_tx, router_rx) = mpsc::unbounded_channel();
    let (quote_tx, quote_rx) = mpsc::unbounded_channel();
    let mint_now = Arc::new(Notify::new());
    let ctx = Arc::new(miners::MinerContext::new(
        &config,
        wallet_key,
        router_tx.clone(),
        events.clone(),
        stats.clone(),
    ));
    let mut tasks = RoleTasks::new(shutdown.clone());
    tasks.spawn(
        "the SV1 listener",
        miners::accept_loop(listener, ctx, shutdown.clone()),
    );
    tasks.spawn(
        "the upstream link",
        upstream::run(
            upstream::UpstreamLink {
                upstreams: config.upstreams.clone(),
                aggregate: config.aggregate_channels.then_some(wallet_key),
                events: events.clone(),
                quotes: quote_tx,
                stats: stats.clone(),
            },
            router_rx,
            shutdown.clone(),
        ),
    );
    let recorder = quote_tasks::Recorder {
        store: store.clone(),
        wallet_key,
        mint_now: mint_now.clone(),
        router: router_tx,
        events: events.clone(),
        stats: stats.clone(),
    };
    let minter = (wallet.clone(), minter_lock);
    spawn_quote_tasks(&mut tasks, &config, recorder, quote_rx, minter, shutdown);
    Ok(TranslatorHandle {
        local_addr,
        events,
        store,
        wallet,
        mint_now,
        stats,
        tasks,
    })
}

/// Starts the tasks that take the pool's quotes to ecash: recording them
/// (`recorder`), minting them with `wallet` (while this process holds the
/// store's minter lock), pruning old records and keeping the wallet.
fn spawn_quote_tasks(
    tasks: &mut RoleTasks,
    config: &TranslatorConfig,
    recorder: quote_tasks::Recorder,
    quotes: mpsc::UnboundedReceiver<router::Notification>,
    (wallet, minter_lock): (Arc<EhashWallet>, MinterLock),
    shutdown: CancellationToken,
) {
    let minter = quote_tasks::Minter {
        _lock: minter_lock,
        wallet: wallet.clone(),
        store: recorder.store.clone(),
        batch: config.mint_batch_size,
        wait: Duration::from_millis(config.mint_wait_ms),
        retry: Duration::from_secs(config.mint_retry_secs),
        mint_now: recorder.mint_now.clone(),
        events: recorder.events.clone(),
        stats: recorder.stats.clone(),
    };
    tasks.spawn(
        "the quote pruner",
        quote_tasks::prune_quotes(
            recorder.store.clone(),
            Duration::from_secs(config.keep_quotes_hours.saturating_mul(3600)),
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "the wallet upkeep",
        quote_tasks::keep_wallet(
            wallet,
            recorder.stats.clone(),
            recorder.events.subscribe(),
            shutdown.clone(),
        ),
    );
    tasks.spawn(
        "the quote recorder",
        quote_tasks::record_quotes(recorder, quotes),
    );
    tasks.spawn("the minter", quote_tasks::mint_quotes(minter, shutdown));
}

/// Runs the translator until `shutdown` is cancelled.
pub async fn run(
    config: TranslatorConfig,
    shutdown: CancellationToken,
) -> Result<(), TranslatorError> {
    let handle = start(config, shutdown).await?;
    handle.wait().await.map_err(TranslatorError::TaskEnded)
}

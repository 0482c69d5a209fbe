//! devnet-tp: a Stratum V2 template provider for a private devnet chain.
//!
//! It speaks template distribution over Noise the way sv2-tp does:
//! SetupConnection and CoinbaseOutputConstraints in; a future NewTemplate and
//! its SetNewPrevHash out; SubmitSolution in. A solution is rebuilt into a
//! block (the template's coinbase slot and transactions), checked against
//! the header's nBits target, the clock and the chain's coins, persisted in
//! the state dir (a block that cannot be saved is refused), appended, and
//! the next template goes to every client; while the tip stays, a fresh
//! template follows every `template_refresh_secs`.
//! RequestTransactionData is answered with the template's transactions.
//!
//! With `mempool_tx_per_minute`, the provider's own [`wallet`] spends the
//! faucet outputs of its coinbases into the [`mempool`] at that rate: real,
//! signed transactions that templates carry, so blocks are not empty.
//!
//! [`chain`], [`mempool`], [`utxo`] and [`wallet`] are sans-IO; [`io`] the sockets.

pub mod chain;
pub mod config;
mod io;
pub mod mempool;
pub mod store;
pub mod utxo;
pub mod wallet;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::TpConfig;
pub use io::BlockEvent;
use stratum_core::bitcoin::BlockHash;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::chain::{Chain, ChainParams};
use crate::wallet::Wallet;

#[derive(Debug, thiserror::Error)]
pub enum TpError {
    #[error("state dir: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Chain(#[from] chain::ChainError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

/// A running template provider.
pub struct TpHandle {
    local_addr: SocketAddr,
    shared: Arc<io::Shared>,
    task: JoinHandle<()>,
}

impl TpHandle {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Height of the tip.
    pub fn height(&self) -> u32 {
        self.shared.chain.lock().expect("chain lock").height()
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.shared.chain.lock().expect("chain lock").tip_hash()
    }

    /// The block at `height`, as stored.
    pub fn block(&self, height: u32) -> Option<chain::StoredBlock> {
        let chain = self.shared.chain.lock().expect("chain lock");
        chain.blocks().get(height as usize).cloned()
    }

    /// Transactions waiting in the mempool.
    pub fn mempool_len(&self) -> usize {
        self.shared
            .chain
            .lock()
            .expect("chain lock")
            .mempool()
            .len()
    }

    /// Every block appended from now on.
    pub fn subscribe_blocks(&self) -> broadcast::Receiver<BlockEvent> {
        self.shared.blocks.subscribe()
    }

    /// Waits until the provider stopped (its shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads the chain, binds the listener and starts serving.
pub async fn start(config: TpConfig, shutdown: CancellationToken) -> Result<TpHandle, TpError> {
    let params = ChainParams {
        nbits: config.nbits,
        initial_subsidy_sats: config.initial_subsidy_sats,
        halving_interval: config.halving_interval,
        coinbase_maturity: config.coinbase_maturity,
    };
    let stored = store::load(&config.state_dir)?;
    let mut chain = Chain::load(params, stored.blocks, stored.next_template_id, io::now())?;
    if config.mempool_tx_per_minute > 0 {
        chain = chain.with_wallet(Wallet::from_seed(
            &config.authority_secret_key.0.secret_bytes(),
        ));
    }
    info!(
        height = chain.height(),
        tip = %chain.tip_hash(),
        nbits = format!("0x{:08x}", config.nbits),
        coins = chain.coins().len(),
        mempool_tx_per_minute = config.mempool_tx_per_minute,
        state_dir = %config.state_dir.display(),
        "chain loaded"
    );
    let shared = Arc::new(io::Shared::new(chain, config.state_dir.clone()));
    {
        let chain = shared.chain.lock().expect("chain lock");
        shared.persist(&chain, None)?;
    }
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(|source| TpError::Listen {
            address: config.listen_address.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| TpError::Listen {
        address: config.listen_address.clone(),
        source,
    })?;
    info!(%local_addr, "devnet template provider listening");
    let keys = Arc::new(io::Keys {
        public: config.authority_public_key,
        secret: config.authority_secret_key,
        cert_validity_sec: config.cert_validity_sec,
    });
    if config.mempool_tx_per_minute > 0 {
        tokio::spawn(io::make_transactions(
            shared.clone(),
            std::time::Duration::from_secs_f64(60.0 / f64::from(config.mempool_tx_per_minute)),
            shutdown.clone(),
        ));
    }
    if config.template_refresh_secs > 0 {
        tokio::spawn(io::refresh_templates(
            shared.clone(),
            std::time::Duration::from_secs(config.template_refresh_secs),
            shutdown.clone(),
        ));
    }
    let task = tokio::spawn(io::accept_loop(listener, shared.clone(), keys, shutdown));
    Ok(TpHandle {
        local_addr,
        shared,
        task,
    })
}

/// Runs the template provider until `shutdown` is cancelled.
pub async fn run(config: TpConfig, shutdown: CancellationToken) -> Result<(), TpError> {
    let handle = start(config, shutdown).await?;
    handle.wait().await;
    Ok(())
}

//! devnet-tp: a Stratum V2 template provider for a private devnet chain.
//!
//! It speaks template distribution over Noise the way sv2-tp does:
//! SetupConnection and CoinbaseOutputConstraints in; a future NewTemplate and
//! its SetNewPrevHash out; SubmitSolution in. A solution is rebuilt into a
//! block (empty blocks: merkle root = coinbase txid), checked against the
//! header's nBits target, appended, persisted in the state dir, and the next
//! template goes to every client; while the tip stays, a fresh template
//! follows every `template_refresh_secs`. RequestTransactionData is answered.
//!
//! [`chain`] is the sans-IO chain and template logic; [`io`] the sockets.

pub mod chain;
pub mod config;
mod io;
pub mod store;

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
    };
    let stored = store::load(&config.state_dir)?;
    let chain = Chain::load(params, stored.blocks, stored.next_template_id)?;
    info!(
        height = chain.height(),
        tip = %chain.tip_hash(),
        nbits = format!("0x{:08x}", config.nbits),
        state_dir = %config.state_dir.display(),
        "chain loaded"
    );
    let shared = Arc::new(io::Shared::new(chain, config.state_dir.clone()));
    {
        let chain = shared.chain.lock().expect("chain lock");
        shared.persist(&chain)?;
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

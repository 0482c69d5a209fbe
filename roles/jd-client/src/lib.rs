//! Hashpool's job declaration client (`jd-client`): miners behind it mine
//! block templates of its own template provider, declared at the pool's
//! job declarator, and are paid ehash by the pool like any other miner.
//!
//! ```text
//!   SV1 miners -> translator -> jd-client :34265 -> pool :34254 (custom jobs)
//!                                  |   \---------> pool's JDS :34264 (declarations)
//!                                  \-> own template provider :8442
//! ```
//!
//! Downstream it serves the SV2 mining protocol like a pool (our translator
//! connects to it unchanged, pinning this role's authority key); each
//! downstream channel is one pool channel, so shares, targets and the ehash
//! extension (notifications down, acknowledgements up) pass through.
//! [`core`] is the sans-IO logic; `io` the sockets and the sessions.
//!
//! When the job declarator is unreachable, or refuses a job or a custom
//! job for any reason but a stale chain tip, the client mines the pool's own
//! jobs (it reconnects to the pool without work selection; its downstreams
//! reconnect, their miners stay connected) and tries the declarator again
//! every `jds_retry_secs`; once it answers, declared jobs resume the same way.

pub mod config;
pub mod core;
mod io;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::JdClientConfig;
pub use core::Mode;
use roles_common::tasks::RoleTasks;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum JdcError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    TaskEnded(String),
}

/// Something that happened, for tests and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JdcEvent {
    /// Links up in this mode; downstreams are served.
    SessionStarted(Mode),
    /// A session ended, with the reason.
    SessionEnded(String),
    /// A block found on a declared job was queued for the template
    /// provider (sent again on the next session's link if that one ends
    /// before it is written).
    BlockSubmitted,
}

/// A running jd-client.
pub struct JdcHandle {
    local_addr: SocketAddr,
    events: broadcast::Sender<JdcEvent>,
    tasks: RoleTasks,
}

impl JdcHandle {
    /// Where downstreams connect (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<JdcEvent> {
        self.events.subscribe()
    }

    /// Waits until it stopped: its shutdown token was cancelled, or one
    /// of its tasks ended on its own (`Err` naming it).
    pub async fn wait(self) -> Result<(), String> {
        self.tasks.wait().await
    }
}

/// Binds the downstream listener and starts the sessions.
pub async fn start(
    config: JdClientConfig,
    shutdown: CancellationToken,
) -> Result<JdcHandle, JdcError> {
    // Its own: a task ending early stops jd-client, nothing else.
    let shutdown = shutdown.child_token();
    let listen_error = |source| JdcError::Listen {
        address: config.listen_address.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.listen_address)
        .await
        .map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    info!(
        %local_addr,
        tp = %config.tp_address,
        pool = %config.pool_address,
        jds = %config.jds_address,
        "jd-client listening"
    );
    let (events, _) = broadcast::channel(256);
    let (to_session, from_downstream) = mpsc::channel(io::FROM_DOWNSTREAMS);
    let config = Arc::new(config);
    let mut tasks = RoleTasks::new(shutdown.clone());
    tasks.spawn(
        "the downstream listener",
        io::accept_loop(listener, config.clone(), to_session, shutdown.clone()),
    );
    tasks.spawn(
        "the sessions",
        io::run_sessions((*config).clone(), from_downstream, events.clone(), shutdown),
    );
    Ok(JdcHandle {
        local_addr,
        events,
        tasks,
    })
}

/// Runs the jd-client until `shutdown` is cancelled.
pub async fn run(config: JdClientConfig, shutdown: CancellationToken) -> Result<(), JdcError> {
    let handle = start(config, shutdown).await?;
    handle.wait().await.map_err(JdcError::TaskEnded)
}

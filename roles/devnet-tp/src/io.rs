//! Sockets and tasks: the Noise listener and one task per client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ehash::wire::str0255_truncated;
use roles_common::limits::ConnectionLimits;
use roles_common::noise::{self, NoiseWriter};
use roles_common::sv2::{flush, message_name, queue, Incoming, Outgoing, ReadError, Sv2Reader};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::BlockHash;
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::chain::{AcceptedBlock, Chain, SolutionError, StoredBlock};
use crate::store::{self, StoreError, StoredChain};

/// Clients (pools, mints) connected at once at most.
const MAX_CLIENTS: usize = 64;
/// A client must send SetupConnection this soon after connecting: silent
/// connections would otherwise hold the slots of pools and mints.
const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A client that takes none of what is written to it this long is closed
/// (its updates would pile up behind it).
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Messages read ahead of the connection's loop at most: a client's
/// frames can be large, and a slow loop must not hold many.
const READ_AHEAD: usize = 8;

/// A block the template provider appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    pub height: u32,
    pub hash: BlockHash,
}

/// What every serving client is sent as it happens.
#[derive(Debug, Clone)]
enum Update {
    /// The tip moved.
    Tip(Tip),
    /// A fresh template on the same tip.
    Refresh(NewTemplateOwned),
}

#[derive(Debug, Clone)]
struct Tip {
    template: NewTemplateOwned,
    prev_hash: SetNewPrevHashOwned,
}

pub(crate) struct Shared {
    pub(crate) chain: Mutex<Chain>,
    state_dir: PathBuf,
    updates: broadcast::Sender<Update>,
    pub(crate) blocks: broadcast::Sender<BlockEvent>,
}

/// Why a solution did not become a block.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error(transparent)]
    Refused(#[from] SolutionError),
    #[error("its block cannot be saved: {0}")]
    NotSaved(#[from] StoreError),
}

pub(crate) struct Keys {
    pub public: Secp256k1PublicKey,
    pub secret: Secp256k1SecretKey,
    pub cert_validity_sec: u64,
}

pub(crate) fn now() -> u32 {
    roles_common::unix_secs() as u32
}

impl Shared {
    pub(crate) fn new(chain: Chain, state_dir: PathBuf) -> Self {
        Self {
            chain: Mutex::new(chain),
            state_dir,
            updates: broadcast::channel(16).0,
            blocks: broadcast::channel(64).0,
        }
    }

    /// The current tip and a receiver of every update after it, both
    /// taken under the chain lock that every update is sent under: a
    /// client never gets an update older than the tip it was given.
    fn subscribe_at_tip(&self) -> (broadcast::Receiver<Update>, Tip) {
        let mut chain = self.chain.lock().expect("chain lock");
        let (template, prev_hash) = chain.current_template(now());
        let tip = Tip {
            template,
            prev_hash,
        };
        (self.updates.subscribe(), tip)
    }

    /// Saves `chain`, followed by `new_block` if there is one.
    pub(crate) fn persist(
        &self,
        chain: &Chain,
        new_block: Option<&StoredBlock>,
    ) -> Result<(), StoreError> {
        let mut blocks = chain.blocks().to_vec();
        blocks.extend(new_block.cloned());
        store::save(
            &self.state_dir,
            &StoredChain {
                next_template_id: chain.next_template_id() + 1000,
                blocks,
            },
        )
    }

    /// A fresh template on the current tip for every serving client. Sent
    /// under the chain lock: never after a newer tip's update.
    fn refresh_template(&self) {
        let mut chain = self.chain.lock().expect("chain lock");
        let template = chain.refresh_template(now());
        debug!(template_id = template.template_id, "refreshed template");
        let _ = self.updates.send(Update::Refresh(template));
    }

    /// Checks a solution, saves the chain with its block and only then
    /// appends and announces the block: one a restart would lose is refused.
    pub(crate) fn submit_solution(
        &self,
        solution: &SubmitSolutionOwned,
    ) -> Result<AcceptedBlock, SubmitError> {
        let mut chain = self.chain.lock().expect("chain lock");
        let checked = chain.check_solution(solution, now())?;
        self.persist(&chain, Some(checked.stored()))?;
        let block = chain.append(checked);
        let (template, prev_hash) = chain.current_template(now());
        let _ = self.updates.send(Update::Tip(Tip {
            template,
            prev_hash,
        }));
        drop(chain);
        let _ = self.blocks.send(BlockEvent {
            height: block.height,
            hash: block.hash,
        });
        Ok(block)
    }
}

/// Sends every serving client a fresh template on the current tip every
/// `every`, until `shutdown`.
pub(crate) async fn refresh_templates(
    shared: Arc<Shared>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        shared.refresh_template();
    }
}

/// The wallet puts one transaction in the mempool every `every`, until
/// `shutdown`. They reach miners with the next template.
pub(crate) async fn make_transactions(
    shared: Arc<Shared>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_logged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let mut chain = shared.chain.lock().expect("chain lock");
        match chain.add_wallet_transaction() {
            Some(Ok(txid)) => {
                waiting_logged = false;
                debug!(%txid, mempool = chain.mempool().len(), "wallet transaction in the mempool");
            }
            Some(Err(e)) => debug!("wallet transaction not made: {e}"),
            None if !waiting_logged => {
                waiting_logged = true;
                info!(
                    height = chain.height(),
                    "the wallet has no mature coin yet; transactions start once a faucet output matures"
                );
            }
            None => {}
        }
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    roles_common::accept_loop(
        "template provider",
        listener,
        ConnectionLimits::new(MAX_CLIENTS, MAX_CLIENTS),
        shutdown,
        move |id, stream, peer| {
            let (shared, keys, shutdown) = (shared.clone(), keys.clone(), connections.clone());
            async move {
                match serve(id, stream, peer, shared, keys, shutdown).await {
                    Ok(()) => info!(client = id, %peer, "client disconnected"),
                    Err(reason) => warn!(client = id, %peer, "closing client connection: {reason}"),
                }
            }
        },
    )
    .await;
}

/// NewTemplate and its SetNewPrevHash, as sent to every client.
fn tip_messages(tip: Tip) -> [AnyMessageOwned; 2] {
    debug!(
        template_id = tip.template.template_id,
        "sending NewTemplate and SetNewPrevHash"
    );
    [
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(tip.template)),
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(
            tip.prev_hash,
        )),
    ]
}

async fn send_all(
    writer: &mut NoiseWriter,
    messages: impl IntoIterator<Item = AnyMessageOwned>,
) -> Result<(), String> {
    for m in messages {
        queue(writer, Outgoing::Sv2(m)).map_err(|e| e.to_string())?;
    }
    flush(writer).await.map_err(|e| e.to_string())
}

async fn serve(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (reader, mut writer) =
        noise::accept(stream, keys.public, keys.secret, keys.cert_validity_sec)
            .await
            .map_err(|e| format!("noise handshake failed: {e}"))?;
    info!(client = id, %peer, "client connected");
    let mut reader = Sv2Reader::spawn(reader, "client", READ_AHEAD);
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let mut client = Client {
        id,
        setup_done: false,
        updates: None,
    };
    let mut ignored = roles_common::log_limit::LogLimit::default();
    let result = loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tokio::time::sleep_until(setup_deadline), if !client.setup_done => {
                break Err(format!("no SetupConnection within {SETUP_TIMEOUT:?}"));
            }
            update = async { client.updates.as_mut().expect("serving").recv().await },
                if client.updates.is_some() => match update {
                Ok(Update::Tip(tip)) => Reply::send(tip_messages(tip)),
                Ok(Update::Refresh(template)) => Reply::send([AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::NewTemplate(template),
                )]),
                Err(broadcast::error::RecvError::Lagged(_)) => client.serve(&shared),
                Err(broadcast::error::RecvError::Closed) => break Ok(()),
            },
            msg = reader.recv() => match msg {
                Ok(Incoming::Sv2(msg)) => client.on_message(&shared, msg),
                Ok(Incoming::Ehash(_)) => {
                    if let Some(left_out) = ignored.check(std::time::Instant::now()) {
                        warn!(client = id, left_out, "ignoring an ehash extension message");
                    }
                    continue;
                }
                Err(ReadError::ClosedByPeer) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            },
        };
        match tokio::time::timeout(WRITE_TIMEOUT, send_all(&mut writer, reply.messages)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(format!("the client took nothing for {WRITE_TIMEOUT:?}")),
        }
        if let Some(reason) = reply.close {
            break Err(reason);
        }
    };
    drop(reader);
    let _ = writer.shutdown().await;
    result
}

/// What to send a client, and whether to close its connection after.
#[derive(Default)]
struct Reply {
    messages: Vec<AnyMessageOwned>,
    close: Option<String>,
}

impl Reply {
    fn send(messages: impl IntoIterator<Item = AnyMessageOwned>) -> Self {
        Reply {
            messages: messages.into_iter().collect(),
            close: None,
        }
    }

    fn close(reason: impl Into<String>) -> Self {
        Reply {
            messages: vec![],
            close: Some(reason.into()),
        }
    }
}

/// One client's connection state.
struct Client {
    id: u64,
    setup_done: bool,
    /// Updates after the tip last sent, once CoinbaseOutputConstraints
    /// came and templates flow.
    updates: Option<broadcast::Receiver<Update>>,
}

impl Client {
    /// The current tip, and updates from it on (those queued before it
    /// are dropped: the tip includes them).
    fn serve(&mut self, shared: &Shared) -> Reply {
        let (updates, tip) = shared.subscribe_at_tip();
        self.updates = Some(updates);
        Reply::send(tip_messages(tip))
    }

    fn on_message(&mut self, shared: &Shared, msg: AnyMessageOwned) -> Reply {
        match (self.setup_done, msg) {
            (false, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m))) => {
                if m.protocol != Protocol::TemplateDistributionProtocol
                    || m.min_version > 2
                    || m.max_version < 2
                {
                    let err = SetupConnectionErrorOwned {
                        flags: 0,
                        error_code: str0255_truncated("unsupported-protocol"),
                    };
                    return Reply {
                        messages: vec![AnyMessageOwned::Common(
                            CommonMessagesOwned::SetupConnectionError(err),
                        )],
                        close: Some("SetupConnection for another protocol or version".into()),
                    };
                }
                self.setup_done = true;
                let ok = SetupConnectionSuccessOwned {
                    used_version: 2,
                    flags: 0,
                };
                Reply::send([AnyMessageOwned::Common(
                    CommonMessagesOwned::SetupConnectionSuccess(ok),
                )])
            }
            (false, other) => {
                Reply::close(format!("{} before SetupConnection", message_name(&other)))
            }
            (true, AnyMessageOwned::TemplateDistribution(tdp)) => self.on_tdp(shared, tdp),
            (true, other) => {
                warn!(
                    client = self.id,
                    "ignoring unexpected {}",
                    message_name(&other)
                );
                Reply::default()
            }
        }
    }

    fn on_tdp(&mut self, shared: &Shared, msg: TemplateDistributionOwned) -> Reply {
        let id = self.id;
        match msg {
            TemplateDistributionOwned::CoinbaseOutputConstraints(c) => {
                debug!(
                    client = id,
                    max_additional_size = c.coinbase_output_max_additional_size,
                    "CoinbaseOutputConstraints"
                );
                if self.updates.is_some() {
                    return Reply::default();
                }
                self.serve(shared)
            }
            TemplateDistributionOwned::RequestTransactionData(r) => {
                let chain = shared.chain.lock().expect("chain lock");
                let reply = match chain.transaction_data(r.template_id) {
                    Ok(ok) => TemplateDistributionOwned::RequestTransactionDataSuccess(ok),
                    Err(err) => TemplateDistributionOwned::RequestTransactionDataError(err),
                };
                Reply::send([AnyMessageOwned::TemplateDistribution(reply)])
            }
            TemplateDistributionOwned::SubmitSolution(solution) => {
                let template_id = solution.template_id;
                match shared.submit_solution(&solution) {
                    Ok(block) => info!(
                        client = id,
                        height = block.height,
                        hash = %block.hash,
                        "block accepted, tip moved"
                    ),
                    Err(e @ SubmitError::Refused(_)) => {
                        warn!(client = id, template_id, "solution refused: {e}")
                    }
                    Err(e @ SubmitError::NotSaved(_)) => {
                        error!(client = id, template_id, "solution refused: {e}")
                    }
                }
                Reply::default()
            }
            other => {
                warn!(
                    client = id,
                    "ignoring {} (a client does not send it)",
                    message_name(&AnyMessageOwned::TemplateDistribution(other))
                );
                Reply::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::{params, solve, EASY};
    use crate::config::TpConfig;
    use roles_common::sv2;
    use std::time::Duration;

    /// The shipped config on 127.0.0.1 port 0, its chain in `dir`.
    fn shipped_config(dir: &std::path::Path) -> TpConfig {
        TpConfig {
            listen_address: "127.0.0.1:0".into(),
            state_dir: dir.to_path_buf(),
            ..roles_common::testing::load_shipped("devnet-tp.toml")
        }
    }

    /// A client that connects and never says SetupConnection loses its
    /// slot: the template provider closes it.
    #[tokio::test]
    async fn a_client_that_never_sets_up_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let config = shipped_config(dir.path());
        let shutdown = CancellationToken::new();
        let tp = crate::start(config.clone(), shutdown.clone())
            .await
            .unwrap();
        let stream = TcpStream::connect(tp.local_addr()).await.unwrap();
        let (mut reader, _writer) = noise::connect(stream, Some(config.authority_public_key))
            .await
            .unwrap();
        let closed = tokio::time::timeout(SETUP_TIMEOUT * 2, reader.read_frame()).await;
        assert!(
            matches!(closed, Ok(Err(_))),
            "closed without a frame: {:?}",
            closed.map(|r| r.is_ok())
        );
        shutdown.cancel();
    }

    /// Updates made before a client asks for templates are older than the
    /// tip it is then given: it never gets them after that tip.
    #[tokio::test]
    async fn a_client_gets_no_template_older_than_the_tip_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let config = TpConfig {
            nbits: EASY,
            template_refresh_secs: 0,
            ..shipped_config(dir.path())
        };
        let shutdown = CancellationToken::new();
        let tp = crate::start(config.clone(), shutdown.clone())
            .await
            .unwrap();
        let address = tp.local_addr().to_string();
        let mut conn = sv2::connect(&address, config.authority_public_key, "tp", 16)
            .await
            .unwrap();
        let setup = sv2::setup_connection(
            Protocol::TemplateDistributionProtocol,
            0,
            conn.peer,
            "test",
            "test",
        );
        conn.setup(setup).await.unwrap();

        // Connected and set up: a template refreshed on the tip, then a block.
        tp.shared.refresh_template();
        let solution = {
            let mut chain = tp.shared.chain.lock().unwrap();
            let (template, prev_hash) = chain.current_template(now());
            solve(&mut chain, &template, &prev_hash)
        };
        tp.shared.submit_solution(&solution).unwrap();

        conn.send(AnyMessageOwned::TemplateDistribution(
            TemplateDistributionOwned::CoinbaseOutputConstraints(
                stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned {
                    coinbase_output_max_additional_size: 100,
                    coinbase_output_max_additional_sigops: 4,
                },
            ),
        ))
        .await
        .unwrap();
        let mut newest = 0;
        let mut templates = 0;
        while let Some(Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(m)))) =
            conn.reader.recv_within(Duration::from_millis(500)).await
        {
            if let TemplateDistributionOwned::NewTemplate(t) = m {
                assert!(
                    t.template_id > newest,
                    "template {} after {newest}",
                    t.template_id
                );
                newest = t.template_id;
                templates += 1;
            }
        }
        assert_eq!(templates, 1, "the tip's template, once");
        shutdown.cancel();
    }

    #[test]
    fn a_block_that_cannot_be_saved_is_refused_and_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        // A state dir that is a regular file: nothing can be written in it,
        // even by root.
        let state_dir = dir.path().join("state");
        std::fs::write(&state_dir, b"").unwrap();
        let chain = Chain::load(params(EASY), vec![], 1, now()).unwrap();
        let shared = Shared::new(chain, state_dir.clone());
        let mut blocks = shared.blocks.subscribe();
        let solution = {
            let mut chain = shared.chain.lock().unwrap();
            let (template, prev_hash) = chain.current_template(now());
            solve(&mut chain, &template, &prev_hash)
        };

        let err = shared.submit_solution(&solution).unwrap_err();
        assert!(matches!(err, SubmitError::NotSaved(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&state_dir.join("chain.json").display().to_string()),
            "{message}"
        );
        assert!(message.contains("Not a directory"), "{message}");
        assert_eq!(shared.chain.lock().unwrap().height(), 0);
        assert!(blocks.try_recv().is_err(), "nothing announced");

        // Memory is as before: once the state dir can be written, the same
        // solution makes the block.
        std::fs::remove_file(&state_dir).unwrap();
        std::fs::create_dir(&state_dir).unwrap();
        let block = shared.submit_solution(&solution).unwrap();
        assert_eq!(block.height, 1);
        assert_eq!(blocks.try_recv().unwrap().hash, block.hash);
        assert_eq!(store::load(&state_dir).unwrap().blocks.len(), 2);
    }
}

//! Sockets and tasks: the Noise listener and one task per client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use roles_common::sv2::{message_name, send, Incoming, ReadError, SendError, Sv2Reader};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::{accept_noise_connection, noise_stream::NoiseTcpWriteHalf};
use stratum_core::bitcoin::BlockHash;
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::chain::Chain;
use crate::store::{self, StoredChain};

/// A block the template provider appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    pub height: u32,
    pub hash: BlockHash,
}

#[derive(Debug, Clone)]
struct Tip {
    template: NewTemplateOwned,
    prev_hash: SetNewPrevHashOwned,
}

pub(crate) struct Shared {
    pub(crate) chain: Mutex<Chain>,
    state_dir: PathBuf,
    tips: broadcast::Sender<Tip>,
    pub(crate) blocks: broadcast::Sender<BlockEvent>,
}

pub(crate) struct Keys {
    pub public: Secp256k1PublicKey,
    pub secret: Secp256k1SecretKey,
    pub cert_validity_sec: u64,
}

pub(crate) fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Shared {
    pub(crate) fn new(chain: Chain, state_dir: PathBuf) -> Self {
        Self {
            chain: Mutex::new(chain),
            state_dir,
            tips: broadcast::channel(16).0,
            blocks: broadcast::channel(64).0,
        }
    }

    fn current_tip(&self) -> Tip {
        let mut chain = self.chain.lock().expect("chain lock");
        let (template, prev_hash) = chain.current_template(now());
        Tip {
            template,
            prev_hash,
        }
    }

    pub(crate) fn persist(&self, chain: &Chain) -> Result<(), store::StoreError> {
        store::save(
            &self.state_dir,
            &StoredChain {
                next_template_id: chain.next_template_id() + 1000,
                blocks: chain.blocks().to_vec(),
            },
        )
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

async fn send_tip(writer: &mut NoiseTcpWriteHalf, tip: Tip) -> Result<(), SendError> {
    debug!(
        template_id = tip.template.template_id,
        "sending NewTemplate and SetNewPrevHash"
    );
    send(
        writer,
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(tip.template)),
    )
    .await?;
    send(
        writer,
        AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(
            tip.prev_hash,
        )),
    )
    .await
}

async fn serve(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let noise = accept_noise_connection(stream, keys.public, keys.secret, keys.cert_validity_sec)
        .await
        .map_err(|e| format!("noise handshake failed: {e}"))?;
    info!(client = id, %peer, "client connected");
    let (reader, mut writer) = noise.into_split();
    let mut reader = Sv2Reader::spawn(reader, "client", 64);

    let mut tips = shared.tips.subscribe();
    let mut setup_done = false;
    let mut serving = false;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            tip = tips.recv(), if serving => {
                let tip = match tip {
                    Ok(tip) => tip,
                    Err(broadcast::error::RecvError::Lagged(_)) => shared.current_tip(),
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                };
                if let Err(e) = send_tip(&mut writer, tip).await {
                    break Err(e.to_string());
                }
            }
            msg = reader.recv() => {
                let msg = match msg {
                    Ok(Incoming::Sv2(msg)) => msg,
                    Ok(Incoming::Ehash(_)) => {
                        warn!(client = id, "ignoring an ehash extension message");
                        continue;
                    }
                    Err(ReadError::ClosedByPeer) => break Ok(()),
                    Err(e) => break Err(e.to_string()),
                };
                match (setup_done, msg) {
                    (false, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m))) => {
                        if m.protocol != Protocol::TemplateDistributionProtocol
                            || m.min_version > 2
                            || m.max_version < 2
                        {
                            let err = SetupConnectionErrorOwned {
                                flags: 0,
                                error_code: "unsupported-protocol".to_string().try_into().expect("short"),
                            };
                            let _ = send(&mut writer, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(err))).await;
                            break Err("SetupConnection for another protocol or version".into());
                        }
                        setup_done = true;
                        let ok = SetupConnectionSuccessOwned { used_version: 2, flags: 0 };
                        if let Err(e) = send(&mut writer, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(ok))).await {
                            break Err(e.to_string());
                        }
                    }
                    (false, other) => {
                        break Err(format!("{} before SetupConnection", message_name(&other)));
                    }
                    (true, AnyMessageOwned::TemplateDistribution(tdp)) => {
                        match handle_tdp(id, &shared, tdp) {
                            Ok(Reply::None) => {}
                            Ok(Reply::StartServing) => {
                                if !serving {
                                    serving = true;
                                    if let Err(e) = send_tip(&mut writer, shared.current_tip()).await {
                                        break Err(e.to_string());
                                    }
                                }
                            }
                            Ok(Reply::Message(m)) => {
                                if let Err(e) = send(&mut writer, m).await {
                                    break Err(e.to_string());
                                }
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    (true, other) => {
                        warn!(client = id, "ignoring unexpected {}", message_name(&other));
                    }
                }
            }
        }
    };
    drop(reader);
    let _ = writer.shutdown().await;
    result
}

enum Reply {
    None,
    StartServing,
    Message(AnyMessageOwned),
}

fn handle_tdp(id: u64, shared: &Shared, msg: TemplateDistributionOwned) -> Result<Reply, String> {
    match msg {
        TemplateDistributionOwned::CoinbaseOutputConstraints(c) => {
            debug!(
                client = id,
                max_additional_size = c.coinbase_output_max_additional_size,
                "CoinbaseOutputConstraints"
            );
            Ok(Reply::StartServing)
        }
        TemplateDistributionOwned::RequestTransactionData(r) => {
            let chain = shared.chain.lock().expect("chain lock");
            let reply = match chain.transaction_data(r.template_id) {
                Ok(ok) => TemplateDistributionOwned::RequestTransactionDataSuccess(ok),
                Err(err) => TemplateDistributionOwned::RequestTransactionDataError(err),
            };
            Ok(Reply::Message(AnyMessageOwned::TemplateDistribution(reply)))
        }
        TemplateDistributionOwned::SubmitSolution(solution) => {
            let mut chain = shared.chain.lock().expect("chain lock");
            match chain.submit_solution(&solution) {
                Ok(block) => {
                    info!(
                        client = id,
                        height = block.height,
                        hash = %block.hash,
                        "block accepted, tip moved"
                    );
                    if let Err(e) = shared.persist(&chain) {
                        warn!("cannot persist the chain: {e}");
                    }
                    let (template, prev_hash) = chain.current_template(now());
                    drop(chain);
                    let _ = shared.blocks.send(BlockEvent {
                        height: block.height,
                        hash: block.hash,
                    });
                    let _ = shared.tips.send(Tip {
                        template,
                        prev_hash,
                    });
                }
                Err(e) => warn!(
                    client = id,
                    template_id = solution.template_id,
                    "solution refused: {e}"
                ),
            }
            Ok(Reply::None)
        }
        other => {
            warn!(
                client = id,
                "ignoring {} (a client does not send it)",
                message_name(&AnyMessageOwned::TemplateDistribution(other))
            );
            Ok(Reply::None)
        }
    }
}

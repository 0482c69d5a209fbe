//! Shared helpers of the cross-role integration tests: configs on
//! 127.0.0.1 port 0, a running devnet-tp + pool stack, an SV2 mining test
//! client (Noise, channels, CPU share finder), a template distribution
//! test client and a stand-in for the stats services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use devnet_tp::{TpConfig, TpHandle};
use ehash_ext_sv2::{is_ehash_frame, EhashMessage, MessageSet};
use pool::{AcceptedShare, Hooks, PoolConfig, PoolEvent, PoolHandle};
use roles_common::stats_publisher::StatsSettings;
use stats_sv2::StatsMessage;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::{
    connect_with_noise,
    noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf},
    Error as NetError,
};
use stratum_core::binary_sv2::{B032Owned, Seq064KOwned, Str0255Owned, U256Owned};
use stratum_core::bitcoin::{
    block::{Header, Version},
    hashes::{sha256d, Hash},
    pow::CompactTarget,
    BlockHash, Target, TxMerkleNode,
};
use stratum_core::channels_sv2::merkle_root::merkle_root_from_path;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::extensions_sv2::RequestExtensionsOwned;
use stratum_core::framing_sv2::framing::{MessageFrame, SerializedFrame};
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, NewMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenStandardMiningChannelOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
    SubmitSharesStandardOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, ExtensionsOwned,
    IsSv2Message, MiningOwned,
};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// DEVNET/TEST ONLY keys (the same as config/*.toml).
pub const POOL_PUBLIC_KEY: &str = "9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS";
pub const POOL_SECRET_KEY: &str = "68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm";
pub const TP_PUBLIC_KEY: &str = "9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg";
pub const TP_SECRET_KEY: &str = "Yjp4a7Gdp4rn14jbVLzcJQp3wtpBqLDLdoodFYn8xQSiWQCBz";
/// A valid key that belongs to nobody in the tests.
pub const WRONG_PUBLIC_KEY: &str = "9azwdG9sKYpNJJJjMv2L6dFhZ3VorymaC7eBAbKmKvSU6D5KPQS";

/// Block target that no share ever meets (target 1).
pub const NBITS_NEVER: u32 = 0x0300_0001;
/// Block target that half of all hashes meet: every share is a block.
pub const NBITS_EASY: u32 = 0x207f_ffff;

/// A locking key (the secp256k1 generator, compressed).
pub const LOCKING_KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

/// How long a test waits for any one message before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn public_key(s: &str) -> Secp256k1PublicKey {
    s.parse().expect("valid test public key")
}

pub fn secret_key(s: &str) -> Secp256k1SecretKey {
    s.parse().expect("valid test secret key")
}

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
        unit_bits: 0,
        require_locking_key: true,
        max_channels: 65_536,
        extranonce_len: 16,
        stats_log_interval_secs: 0,
        state_dir: std::env::temp_dir().join("hashpool-tests-unused"),
        mint: None,
        stats: None,
    }
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

/// Logs of the roles under test, when `RUST_LOG` is set (e.g. `RUST_LOG=info`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Stack {
    pub async fn start(nbits: u32) -> Stack {
        Self::start_with(nbits, |_| {}).await
    }

    pub async fn start_with(nbits: u32, tweak: impl FnOnce(&mut PoolConfig)) -> Stack {
        init_logging();
        let state_dir = tempfile::tempdir().expect("temp dir");
        let tp_shutdown = CancellationToken::new();
        let tp = devnet_tp::start(tp_config(state_dir.path(), nbits), tp_shutdown.clone())
            .await
            .expect("devnet-tp starts");
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
        let mut c = MiningClient::connect(self.pool_addr(), POOL_PUBLIC_KEY)
            .await
            .expect("connects");
        c.setup_connection(0).await;
        c
    }

    /// Waits for a pool event matching `pred`.
    pub async fn wait_event(&mut self, mut pred: impl FnMut(&PoolEvent) -> bool) -> PoolEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("pool events closed"),
                }
            }
        })
        .await
        .expect("pool event in time")
    }

    pub async fn stop(self) {
        self.pool_shutdown.cancel();
        self.tp_shutdown.cancel();
        self.pool.wait().await;
        self.tp.wait().await;
    }
}

// ---------------------------------------------------------------- SV2 over Noise

/// One SV2 message or frame received.
#[derive(Debug, Clone)]
pub enum Incoming {
    Sv2(AnyMessageOwned),
    Ehash(EhashMessage),
}

/// A Noise connection with a reader task (so receiving can time out safely).
pub struct Sv2Conn {
    writer: NoiseTcpWriteHalf,
    rx: mpsc::Receiver<Result<Incoming, String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Sv2Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn spawn_reader(
    mut reader: NoiseTcpReadHalf,
) -> (
    mpsc::Receiver<Result<Incoming, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        loop {
            let item = match reader.read_frame().await {
                Ok(mut frame) => {
                    let header = frame.header();
                    if is_ehash_frame(&header) {
                        EhashMessage::decode(&header, frame.payload())
                            .map(Incoming::Ehash)
                            .map_err(|e| e.to_string())
                    } else {
                        AnyMessage::try_from((header, frame.payload()))
                            .map(|m| Incoming::Sv2(m.into_owned()))
                            .map_err(|e| format!("{e:?}"))
                    }
                }
                Err(NetError::SocketClosed) => Err("closed".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    (rx, task)
}

impl Sv2Conn {
    pub async fn connect(addr: SocketAddr, authority_key: &str) -> Result<Sv2Conn, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let noise = connect_with_noise(stream, Some(public_key(authority_key)))
            .await
            .map_err(|e| e.to_string())?;
        let (reader, writer) = noise.into_split();
        let (rx, reader) = spawn_reader(reader);
        Ok(Sv2Conn { writer, rx, reader })
    }

    pub async fn send(&mut self, msg: AnyMessageOwned) {
        let (t, e, c) = (msg.message_type(), msg.extension_type(), msg.channel_bit());
        let frame = MessageFrame::from_message(msg, t, e, c).expect("frame");
        self.writer.write_frame(frame).await.expect("write");
    }

    /// Sends a plaintext frame as given (header and payload), encrypted.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let frame = SerializedFrame::from_bytes(bytes).map_err(|e| format!("{e:?}"))?;
        self.writer
            .write_frame(frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next message, or Err when the connection closed.
    pub async fn recv(&mut self) -> Result<Incoming, String> {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err("closed".into()),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// Waits until the peer closes the connection; panics if it sends a
    /// message or stays open.
    pub async fn expect_closed(&mut self) -> String {
        match self.recv().await {
            Err(e) => e,
            Ok(m) => panic!("expected the connection to close, got {m:?}"),
        }
    }
}

pub fn str0255(s: &str) -> Str0255Owned {
    s.to_string().try_into().expect("short string")
}

pub fn setup_connection(protocol: Protocol, flags: u32) -> AnyMessageOwned {
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: str0255("127.0.0.1"),
        endpoint_port: 0,
        vendor: str0255("hashpool-tests"),
        hardware_version: str0255(""),
        firmware: str0255(""),
        device_id: str0255("test"),
    }))
}

// ---------------------------------------------------------------- mining client

/// What a client knows about one of its channels.
#[derive(Debug, Clone, Default)]
pub struct ChannelState {
    pub channel_id: u32,
    pub extended: bool,
    pub target: [u8; 32],
    pub extranonce_prefix: Vec<u8>,
    pub extranonce_size: u16,
    pub extended_jobs: HashMap<u32, NewExtendedMiningJobOwned>,
    pub standard_jobs: HashMap<u32, NewMiningJobOwned>,
    pub prev_hash: Option<SetNewPrevHashOwned>,
    /// The job to mine on: set by SetNewPrevHash or a non-future job.
    pub active_job: Option<u32>,
    pub prev_hash_count: usize,
}

impl ChannelState {
    pub fn target(&self) -> Target {
        Target::from_le_bytes(self.target)
    }
}

/// A share found by [`MiningClient::find_share`].
#[derive(Debug, Clone)]
pub struct FoundShare {
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    pub extranonce: Vec<u8>,
    pub header: [u8; 80],
    pub hash: [u8; 32],
}

static SEARCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An SV2 mining client that tracks its channels' jobs and finds shares on the CPU.
pub struct MiningClient {
    pub conn: Sv2Conn,
    pub channels: HashMap<u32, ChannelState>,
    /// Messages received and not yet consumed by a `wait_*` call.
    pub seen: Vec<Incoming>,
    next_request_id: u32,
    next_sequence: u32,
}

impl MiningClient {
    pub async fn connect(addr: SocketAddr, authority_key: &str) -> Result<MiningClient, String> {
        Ok(MiningClient {
            conn: Sv2Conn::connect(addr, authority_key).await?,
            channels: HashMap::new(),
            seen: Vec::new(),
            next_request_id: 1,
            next_sequence: 1,
        })
    }

    /// Receives one message and updates channel state from it.
    pub async fn recv(&mut self) -> Result<Incoming, String> {
        let msg = self.conn.recv().await?;
        if let Incoming::Sv2(AnyMessageOwned::Mining(m)) = &msg {
            self.observe(m);
        }
        Ok(msg)
    }

    fn observe(&mut self, m: &MiningOwned) {
        match m {
            MiningOwned::NewExtendedMiningJob(j) => {
                if let Some(c) = self.channels.get_mut(&j.channel_id) {
                    c.extended_jobs.insert(j.job_id, j.clone());
                    if j.min_ntime.clone().into_inner().is_some() {
                        c.active_job = Some(j.job_id);
                    }
                }
            }
            MiningOwned::NewMiningJob(j) => {
                if let Some(c) = self.channels.get_mut(&j.channel_id) {
                    c.standard_jobs.insert(j.job_id, j.clone());
                    if j.min_ntime.clone().into_inner().is_some() {
                        c.active_job = Some(j.job_id);
                    }
                }
            }
            MiningOwned::SetNewPrevHash(p) => {
                if let Some(c) = self.channels.get_mut(&p.channel_id) {
                    c.prev_hash = Some(p.clone());
                    c.active_job = Some(p.job_id);
                    c.prev_hash_count += 1;
                }
            }
            MiningOwned::SetTarget(t) => {
                if let Some(c) = self.channels.get_mut(&t.channel_id) {
                    c.target = t.maximum_target.to_array();
                }
            }
            _ => {}
        }
    }

    /// Waits for a message matching `pred` (others are kept in `seen`).
    pub async fn wait_for<T>(&mut self, mut pred: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            let msg = self.recv().await.expect("connection open");
            if let Some(t) = pred(&msg) {
                return t;
            }
            self.seen.push(msg);
        }
    }

    pub async fn setup_connection(&mut self, flags: u32) {
        self.conn
            .send(setup_connection(Protocol::MiningProtocol, flags))
            .await;
        self.wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionSuccess(s),
            )) => Some(*s),
            Incoming::Sv2(AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
                e,
            ))) => {
                panic!("SetupConnection refused: {:?}", e.error_code)
            }
            _ => None,
        })
        .await;
    }

    /// Sends RequestExtensions and returns the answer.
    pub async fn request_extensions(&mut self, extensions: Vec<u16>) -> ExtensionsNegotiationOwned {
        self.conn
            .send(AnyMessageOwned::Extensions(
                ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensions(RequestExtensionsOwned {
                        request_id: 7,
                        requested_extensions: Seq064KOwned::new(extensions).expect("fits"),
                    }),
                ),
            ))
            .await;
        self.wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                r,
            ))) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Opens an extended channel; Err(error_code) if refused.
    pub async fn open_extended(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: u16,
    ) -> Result<u32, String> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.conn
            .send(AnyMessageOwned::Mining(
                MiningOwned::OpenExtendedMiningChannel(OpenExtendedMiningChannelOwned {
                    request_id,
                    user_identity: str0255(identity),
                    nominal_hash_rate,
                    max_target: U256Owned::from([0xffu8; 32]),
                    min_extranonce_size,
                }),
            ))
            .await;
        let result = self
            .wait_for(|m| match m {
                Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenExtendedMiningChannelSuccess(s),
                )) if s.request_id == request_id => Some(Ok(s.clone())),
                Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)))
                    if e.request_id == request_id =>
                {
                    Some(Err(
                        String::from_utf8_lossy(e.error_code.as_bytes()).to_string()
                    ))
                }
                _ => None,
            })
            .await?;
        self.channels.insert(
            result.channel_id,
            ChannelState {
                channel_id: result.channel_id,
                extended: true,
                target: result.target.to_array(),
                extranonce_prefix: result.extranonce_prefix.as_bytes().to_vec(),
                extranonce_size: result.extranonce_size,
                ..Default::default()
            },
        );
        self.replay_seen();
        Ok(result.channel_id)
    }

    /// Opens a standard channel; Err(error_code) if refused.
    pub async fn open_standard(
        &mut self,
        identity: &str,
        nominal_hash_rate: f32,
    ) -> Result<u32, String> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.conn
            .send(AnyMessageOwned::Mining(
                MiningOwned::OpenStandardMiningChannel(OpenStandardMiningChannelOwned {
                    request_id,
                    user_identity: str0255(identity),
                    nominal_hash_rate,
                    max_target: U256Owned::from([0xffu8; 32]),
                }),
            ))
            .await;
        let result = self
            .wait_for(|m| match m {
                Incoming::Sv2(AnyMessageOwned::Mining(
                    MiningOwned::OpenStandardMiningChannelSuccess(s),
                )) if s.request_id == request_id => Some(Ok(s.clone())),
                Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(e)))
                    if e.request_id == request_id =>
                {
                    Some(Err(
                        String::from_utf8_lossy(e.error_code.as_bytes()).to_string()
                    ))
                }
                _ => None,
            })
            .await?;
        self.channels.insert(
            result.channel_id,
            ChannelState {
                channel_id: result.channel_id,
                extended: false,
                target: result.target.to_array(),
                extranonce_prefix: result.extranonce_prefix.as_bytes().to_vec(),
                ..Default::default()
            },
        );
        self.replay_seen();
        Ok(result.channel_id)
    }

    /// Jobs that arrived before the channel was registered.
    fn replay_seen(&mut self) {
        let seen: Vec<Incoming> = self.seen.clone();
        for m in &seen {
            if let Incoming::Sv2(AnyMessageOwned::Mining(m)) = m {
                self.observe(m);
            }
        }
    }

    /// Waits until `channel_id` has a job and a prevhash to mine on.
    pub async fn wait_for_work(&mut self, channel_id: u32) {
        while !self.has_work(channel_id) {
            let msg = self.recv().await.expect("connection open");
            self.seen.push(msg);
        }
    }

    fn has_work(&self, channel_id: u32) -> bool {
        let Some(c) = self.channels.get(&channel_id) else {
            return false;
        };
        let Some(job) = c.active_job else {
            return false;
        };
        c.prev_hash.is_some()
            && (c.extended_jobs.contains_key(&job) || c.standard_jobs.contains_key(&job))
    }

    /// Waits for the next SetNewPrevHash of `channel_id` after `count` seen.
    pub async fn wait_for_prev_hash_count(&mut self, channel_id: u32, count: usize) {
        while self.channels[&channel_id].prev_hash_count < count || !self.has_work(channel_id) {
            let msg = self.recv().await.expect("connection open");
            self.seen.push(msg);
        }
    }

    /// The header of a share on the active job (or `job_id`).
    pub fn header(&self, channel_id: u32, job_id: u32, extranonce: &[u8], nonce: u32) -> [u8; 80] {
        let c = &self.channels[&channel_id];
        let prev = c.prev_hash.as_ref().expect("prevhash");
        let (version, merkle_root) = if c.extended {
            let job = &c.extended_jobs[&job_id];
            let mut full = c.extranonce_prefix.clone();
            full.extend_from_slice(extranonce);
            let root = merkle_root_from_path(
                job.coinbase_tx_prefix.as_bytes(),
                job.coinbase_tx_suffix.as_bytes(),
                &full,
                job.merkle_path.as_slice(),
            )
            .expect("coinbase deserializes");
            (job.version, root)
        } else {
            let job = &c.standard_jobs[&job_id];
            (job.version, job.merkle_root.to_array())
        };
        let header = Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
            time: prev.min_ntime,
            bits: CompactTarget::from_consensus(prev.nbits),
            nonce,
        };
        stratum_core::bitcoin::consensus::serialize(&header)
            .try_into()
            .expect("80 bytes")
    }

    /// Searches nonces on the active job for a header whose hash satisfies `accept(hash_as_target)`.
    pub fn find_share(&self, channel_id: u32, accept: impl Fn(Target) -> bool) -> FoundShare {
        let c = &self.channels[&channel_id];
        let job_id = c.active_job.expect("active job");
        let prev = c.prev_hash.as_ref().expect("prevhash");
        let version = if c.extended {
            c.extended_jobs[&job_id].version
        } else {
            c.standard_jobs[&job_id].version
        };
        // Every search starts somewhere new, so two searches never find the same share.
        let run = SEARCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut extranonce = vec![0x42u8; c.extranonce_size as usize];
        for (i, b) in run.to_le_bytes().iter().enumerate().take(extranonce.len()) {
            extranonce[i] = *b;
        }
        let start = (run as u32).wrapping_mul(0x9e37_79b9);
        // Fix the merkle root once; only the nonce changes.
        let base = self.header(channel_id, job_id, &extranonce, 0);
        let mut header = base;
        for i in 0u32.. {
            let nonce = start.wrapping_add(i);
            header[76..80].copy_from_slice(&nonce.to_le_bytes());
            let hash = sha256d::Hash::hash(&header).to_byte_array();
            if accept(Target::from_le_bytes(hash)) {
                return FoundShare {
                    job_id,
                    nonce,
                    ntime: prev.min_ntime,
                    version,
                    extranonce,
                    header,
                    hash,
                };
            }
        }
        unreachable!("no nonce found")
    }

    /// A share meeting the channel target (and not the network target unless `block`).
    pub fn valid_share(&self, channel_id: u32, block: bool) -> FoundShare {
        let c = &self.channels[&channel_id];
        let target = c.target();
        let network = Target::from_compact(CompactTarget::from_consensus(
            c.prev_hash.as_ref().expect("prevhash").nbits,
        ));
        self.find_share(channel_id, |h| h <= target && (h <= network) == block)
    }

    /// Sends a share; returns its sequence number.
    pub async fn submit(&mut self, channel_id: u32, share: &FoundShare) -> u32 {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.submit_with_seq(channel_id, share, seq).await;
        seq
    }

    pub async fn submit_with_seq(&mut self, channel_id: u32, share: &FoundShare, seq: u32) {
        let extended = self
            .channels
            .get(&channel_id)
            .map(|c| c.extended)
            .unwrap_or(true);
        let msg = if extended {
            MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
                extranonce: B032Owned::new(share.extranonce.clone()).expect("fits"),
            })
        } else {
            MiningOwned::SubmitSharesStandard(SubmitSharesStandardOwned {
                channel_id,
                sequence_number: seq,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            })
        };
        self.conn.send(AnyMessageOwned::Mining(msg)).await;
    }

    /// Waits for the answer to share `seq`: Ok(()) for SubmitShares.Success,
    /// Err(error_code) for SubmitShares.Error.
    pub async fn share_result(&mut self, channel_id: u32, seq: u32) -> Result<(), String> {
        self.wait_for(|m| match m {
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s)))
                if s.channel_id == channel_id && s.last_sequence_number == seq =>
            {
                Some(Ok(()))
            }
            Incoming::Sv2(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e)))
                if e.channel_id == channel_id && e.sequence_number == seq =>
            {
                Some(Err(
                    String::from_utf8_lossy(e.error_code.as_bytes()).to_string()
                ))
            }
            _ => None,
        })
        .await
    }

    /// Finds, submits and waits for one valid non-block share.
    pub async fn mine_one(&mut self, channel_id: u32) -> Result<FoundShare, String> {
        let share = self.valid_share(channel_id, false);
        let seq = self.submit(channel_id, &share).await;
        self.share_result(channel_id, seq).await.map(|_| share)
    }
}

// ---------------------------------------------------------------- template distribution client

/// A template distribution client of devnet-tp (what a pool does, by hand).
pub struct TdpClient {
    pub conn: Sv2Conn,
}

impl TdpClient {
    pub async fn connect(addr: SocketAddr) -> TdpClient {
        let mut conn = Sv2Conn::connect(addr, TP_PUBLIC_KEY)
            .await
            .expect("connects");
        conn.send(setup_connection(Protocol::TemplateDistributionProtocol, 0))
            .await;
        match conn.recv().await {
            Ok(Incoming::Sv2(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionSuccess(_),
            ))) => {}
            other => panic!("expected SetupConnection.Success, got {other:?}"),
        }
        use stratum_core::parsers_sv2::TemplateDistributionOwned as T;
        conn.send(AnyMessageOwned::TemplateDistribution(
            T::CoinbaseOutputConstraints(
                stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned {
                    coinbase_output_max_additional_size: 100,
                    coinbase_output_max_additional_sigops: 4,
                },
            ),
        ))
        .await;
        TdpClient { conn }
    }

    /// The next NewTemplate and SetNewPrevHash.
    pub async fn template(
        &mut self,
    ) -> (
        stratum_core::template_distribution_sv2::NewTemplateOwned,
        stratum_core::template_distribution_sv2::SetNewPrevHashOwned,
    ) {
        use stratum_core::parsers_sv2::TemplateDistributionOwned as T;
        let template = loop {
            if let Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(T::NewTemplate(t)))) =
                self.conn.recv().await
            {
                break t;
            }
        };
        let prev = loop {
            if let Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(T::SetNewPrevHash(p)))) =
                self.conn.recv().await
            {
                break p;
            }
        };
        (template, prev)
    }

    /// Solves `template` on the CPU (the target must be easy) and submits it.
    pub async fn solve_and_submit(
        &mut self,
        template: &stratum_core::template_distribution_sv2::NewTemplateOwned,
        prev: &stratum_core::template_distribution_sv2::SetNewPrevHashOwned,
    ) -> BlockHash {
        use stratum_core::bitcoin::{Amount, ScriptBuf, TxOut};
        use stratum_core::parsers_sv2::TemplateDistributionOwned as T;
        let coinbase = devnet_tp::chain::build_coinbase(
            template,
            b"tdp-test",
            TxOut {
                value: Amount::from_sat(template.coinbase_tx_value_remaining),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
            },
        );
        let txid = coinbase.compute_txid();
        let mut header = Header {
            version: Version::from_consensus(template.version as i32),
            prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
            merkle_root: TxMerkleNode::from_byte_array(txid.to_byte_array()),
            time: prev.header_timestamp,
            bits: CompactTarget::from_consensus(prev.n_bits),
            nonce: 0,
        };
        while !header.target().is_met_by(header.block_hash()) {
            header.nonce += 1;
        }
        self.conn
            .send(AnyMessageOwned::TemplateDistribution(T::SubmitSolution(
                stratum_core::template_distribution_sv2::SubmitSolutionOwned {
                    template_id: template.template_id,
                    version: template.version,
                    header_timestamp: header.time,
                    header_nonce: header.nonce,
                    coinbase_tx: stratum_core::bitcoin::consensus::serialize(&coinbase)
                        .try_into()
                        .expect("fits"),
                },
            )))
            .await;
        header.block_hash()
    }
}

/// sha256d of a header, little-endian (SV2 order).
pub fn sha256d(bytes: &[u8]) -> [u8; 32] {
    sha256d::Hash::hash(bytes).to_byte_array()
}

// ---------------------------------------------------------------- the ehash stack

/// Devnet-only keys of the mint and of the pool's identity on the mint link
/// (as in config/mint.toml and config/pool.toml).
pub const MINT_PUBLIC_KEY: &str = "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd";
pub const MINT_SECRET_KEY: &str = "kaEBavE3GDF58RVUYTmAv3cG8miPAZ2cucwLnYAZf6XHTp3Ba";
pub const POOL_IDENTITY_PUBLIC_KEY: &str = "9agtKxDCNZ7BwrfFkX7pNY7qRvDcXaCqoW928MhFP8LE4yen9Sm";
pub const POOL_IDENTITY_SECRET_KEY: &str = "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp";
pub const MINT_MNEMONIC: &str =
    "order shock flip tribe strong rigid planet deputy question matter decide little";

/// A mint config on 127.0.0.1 port 0 with its database in `dir`.
pub fn mint_config(dir: &Path) -> mint::MintConfig {
    mint::MintConfig {
        network: roles_common::Network::Devnet,
        http_listen: "127.0.0.1:0".parse().expect("valid"),
        public_url: None,
        link_listen: "127.0.0.1:0".parse().expect("valid"),
        authority_public_key: public_key(MINT_PUBLIC_KEY),
        authority_secret_key: secret_key(MINT_SECRET_KEY),
        cert_validity_secs: 3600,
        allowed_pool_keys: vec![public_key(POOL_IDENTITY_PUBLIC_KEY)],
        database: dir.join("mint.sqlite").to_string_lossy().into_owned(),
        mnemonic: MINT_MNEMONIC.into(),
        unit_bits: 0,
        min_amount: 1,
        max_amount: i64::MAX as u64,
        max_batch_size: 100,
        name: "test mint".into(),
        description: None,
    }
}

/// The `[mint]` table of a pool config for a mint link at `address`.
pub fn mint_settings(address: SocketAddr, mode: &str) -> pool::config::MintSettings {
    pool::config::MintSettings {
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

/// devnet-tp, the mint and the pool with its ehash flow, each restartable
/// on the same state (and the same ports).
pub struct EhashStack {
    pub dir: tempfile::TempDir,
    pub tp: TpHandle,
    tp_shutdown: CancellationToken,
    pub mint_config: mint::MintConfig,
    pub mint: Option<(mint::RunningMint, CancellationToken)>,
    pub pool_config: PoolConfig,
    pub pool: Option<(PoolHandle, CancellationToken)>,
}

impl EhashStack {
    /// Everything running, with `mode` "annotate" or "defer".
    pub async fn start(mode: &str, tweak: impl FnOnce(&mut PoolConfig)) -> EhashStack {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let tp_shutdown = CancellationToken::new();
        let tp = devnet_tp::start(tp_config(dir.path(), NBITS_NEVER), tp_shutdown.clone())
            .await
            .expect("devnet-tp starts");
        let mut stack = EhashStack {
            mint_config: mint_config(dir.path()),
            pool_config: pool_config(tp.local_addr()),
            dir,
            tp,
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
            running.wait().await;
        }
    }

    /// Starts the pool; after the first start it keeps its port.
    pub async fn start_pool(&mut self) {
        let shutdown = CancellationToken::new();
        let pool = pool::start(self.pool_config.clone(), shutdown.clone(), Hooks::default())
            .await
            .expect("pool starts");
        self.pool_config.listen_address = pool.local_addr().to_string();
        self.pool = Some((pool, shutdown));
    }

    pub async fn stop_pool(&mut self) {
        if let Some((pool, shutdown)) = self.pool.take() {
            shutdown.cancel();
            pool.wait().await;
        }
    }

    pub fn pool(&self) -> &PoolHandle {
        &self.pool.as_ref().expect("pool running").0
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
        let mut c = MiningClient::connect(self.pool_addr(), POOL_PUBLIC_KEY)
            .await
            .expect("connects");
        c.setup_connection(0).await;
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
        self.tp.wait().await;
    }
}

/// A miner's NUT-20 key pair: the cdk secret key and its locking key.
pub fn miner_key() -> (cdk::nuts::SecretKey, ehash::LockingKey) {
    let secret = cdk::nuts::SecretKey::generate();
    let locking =
        ehash::LockingKey::from_bytes(&secret.public_key().to_bytes()).expect("valid key");
    (secret, locking)
}

/// A cdk wallet for the ehash unit of the mint at `url`.
pub fn wallet(url: &str) -> cdk::wallet::Wallet {
    let db = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(cdk_sqlite::wallet::memory::empty())
    })
    .expect("wallet db");
    cdk::wallet::WalletBuilder::new()
        .mint_url(url.parse().expect("mint url"))
        .unit(cdk::nuts::CurrencyUnit::custom(ehash::constants::UNIT))
        .localstore(std::sync::Arc::new(db))
        .seed(
            rand::random::<[u8; 32]>()
                .repeat(2)
                .try_into()
                .expect("64 bytes"),
        )
        .without_rate_limiting()
        .build()
        .expect("wallet")
}

/// Mints `quote_ids` (NUT-29 batch) with `key`; returns the amount minted.
pub async fn mint_quotes(
    wallet: &cdk::wallet::Wallet,
    quote_ids: &[String],
    key: &cdk::nuts::SecretKey,
) -> Result<u64, String> {
    let method = cdk::nuts::PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into());
    for id in quote_ids {
        wallet
            .fetch_mint_quote(id, Some(method.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let ids: Vec<&str> = quote_ids.iter().map(String::as_str).collect();
    let keys = quote_ids
        .iter()
        .map(|id| (id.clone(), key.clone()))
        .collect();
    let proofs = wallet
        .batch_mint(&ids, cdk::amount::SplitTarget::default(), None, Some(keys))
        .await
        .map_err(|e| e.to_string())?;
    Ok(proofs.iter().map(|p| u64::from(p.amount)).sum())
}

impl MiningClient {
    /// Waits until `n` MintQuoteNotifications arrived (counting those already
    /// seen) and returns them, removing them from `seen`.
    pub async fn notifications(
        &mut self,
        n: usize,
    ) -> Vec<ehash_ext_sv2::MintQuoteNotificationOwned> {
        let mut found = vec![];
        let mut rest = vec![];
        for m in std::mem::take(&mut self.seen) {
            match m {
                Incoming::Ehash(EhashMessage::MintQuoteNotification(q)) => found.push(q),
                other => rest.push(other),
            }
        }
        self.seen = rest;
        while found.len() < n {
            let q = tokio::time::timeout(
                Duration::from_secs(30),
                self.wait_for(|m| match m {
                    Incoming::Ehash(EhashMessage::MintQuoteNotification(q)) => Some(q.clone()),
                    _ => None,
                }),
            )
            .await
            .expect("notification in time");
            found.push(q);
        }
        found
    }

    /// Whether any ehash message (0xC0/0xC1) was received so far.
    pub fn saw_ehash(&self) -> bool {
        self.seen.iter().any(|m| matches!(m, Incoming::Ehash(_)))
    }
}

// ---------------------------------------------------------------- translator

/// DEVNET/TEST ONLY: the public BIP-39 test mnemonic.
pub const TRANSLATOR_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
/// ~100 hashes per share at 6 shares/minute: CPU shares in milliseconds.
pub const TRANSLATOR_HASHRATE: f32 = 10.0;

/// A translator config on 127.0.0.1 port 0 with the test mnemonic.
pub fn translator_config(
    upstreams: &[SocketAddr],
    mint_url: &str,
    data_dir: &Path,
) -> translator::TranslatorConfig {
    translator::TranslatorConfig {
        network: roles_common::Network::Devnet,
        listen_address: "127.0.0.1:0".parse().unwrap(),
        upstreams: upstreams
            .iter()
            .map(|a| translator::UpstreamConfig {
                address: a.to_string(),
                authority_public_key: public_key(POOL_PUBLIC_KEY),
            })
            .collect(),
        mint_url: mint_url.to_string(),
        data_dir: data_dir.to_path_buf(),
        mnemonic: TRANSLATOR_MNEMONIC.into(),
        aggregate_channels: false,
        nominal_hashrate: TRANSLATOR_HASHRATE,
        shares_per_minute: 6.0,
        vardiff_interval_secs: 0,
        extranonce2_size: 4,
        max_line_bytes: 4096,
        keepalive_secs: 600,
        wait_for_pool: true,
        mint_batch_size: 50,
        mint_retry_secs: 1,
        stats: None,
    }
}

// ---------------------------------------------------------------- stats service stand-in

/// A plain TCP listener in place of pool-stats / proxy-stats: it decodes
/// every stats frame of every connection, in arrival order.
pub struct StatsSink {
    address: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<StatsMessage>>>,
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatsSink {
    pub async fn start() -> StatsSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = listener.local_addr().expect("bound");
        let received = std::sync::Arc::<std::sync::Mutex<Vec<StatsMessage>>>::default();
        let errors = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let (r, e) = (received.clone(), errors.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, e) = (r.clone(), e.clone());
                tokio::spawn(async move {
                    if let Err(error) = read_stats(stream, &r).await {
                        e.lock().expect("errors lock").push(error);
                    }
                });
            }
        });
        StatsSink {
            address,
            received,
            errors,
            task,
        }
    }

    /// A `[stats]` table pointing at this sink.
    pub fn settings(&self) -> StatsSettings {
        StatsSettings::new(self.address.to_string())
    }

    /// Everything received so far (failing the test on an undecodable frame).
    pub fn received(&self) -> Vec<StatsMessage> {
        let errors = self.errors.lock().expect("errors lock").clone();
        assert!(errors.is_empty(), "bad stats frames: {errors:?}");
        self.received.lock().expect("received lock").clone()
    }

    /// Polls until `done` holds for what was received, or fails after 30 s.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[StatsMessage]) -> bool,
    ) -> Vec<StatsMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never showed {what}: {received:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StatsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads stats frames until the publisher closes the connection.
async fn read_stats(
    mut stream: TcpStream,
    received: &std::sync::Mutex<Vec<StatsMessage>>,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut frame = vec![0u8; 6];
        if stream.read_exact(&mut frame).await.is_err() {
            return Ok(());
        }
        let len = u32::from_le_bytes([frame[3], frame[4], frame[5], 0]) as usize;
        frame.resize(6 + len, 0);
        stream
            .read_exact(&mut frame[6..])
            .await
            .map_err(|e| format!("truncated frame: {e}"))?;
        let message = StatsMessage::decode_frame(&mut frame).map_err(|e| e.to_string())?;
        received.lock().expect("received lock").push(message);
    }
}

/// A `[stats]` table for an address where nothing listens.
pub async fn dead_stats_settings(queue_capacity: usize) -> StatsSettings {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("bound");
    drop(listener);
    StatsSettings {
        queue_capacity,
        ..StatsSettings::new(address.to_string())
    }
}

// ------------------------------------------------------------------ roles as child processes
//
// A test binary re-executes itself to run one role as a child process the
// test can kill with SIGKILL: a real crash, no shutdown step runs. Each test
// file that does so declares `role_child_entry!();`.

/// The role the re-executed test binary runs ("devnet-tp", "mint", "pool", "translator").
pub const ROLE_CHILD_ROLE: &str = "HASHPOOL_TEST_ROLE";
/// Its config file (TOML, loaded like `<role> --config`).
pub const ROLE_CHILD_CONFIG: &str = "HASHPOOL_TEST_ROLE_CONFIG";

/// Declares the `role_child` test a re-executed test binary runs.
#[macro_export]
macro_rules! role_child_entry {
    () => {
        #[test]
        fn role_child() {
            $crate::run_role_child_if_asked();
        }
    };
}

/// In a re-executed test binary: runs the role named by the environment
/// until SIGINT/SIGTERM (or SIGKILL). Otherwise returns at once.
pub fn run_role_child_if_asked() {
    let (Ok(role), Some(path)) = (
        std::env::var(ROLE_CHILD_ROLE),
        std::env::var_os(ROLE_CHILD_CONFIG),
    ) else {
        return;
    };
    fn load<C: serde::de::DeserializeOwned + roles_common::Validate>(path: &std::ffi::OsStr) -> C {
        roles_common::load_config(Path::new(path), "HASHPOOL_TEST_ROLE_CHILD").expect("config")
    }
    stratum_apps::config_helpers::logging::init_logging(None);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(async {
        let shutdown = roles_common::shutdown_on_signal();
        match role.as_str() {
            "devnet-tp" => devnet_tp::run(load(&path), shutdown)
                .await
                .map_err(|e| e.to_string()),
            "mint" => mint::run(load(&path), shutdown)
                .await
                .map_err(|e| e.to_string()),
            "pool" => pool::run(load(&path), shutdown)
                .await
                .map_err(|e| e.to_string()),
            "translator" => translator::run(load(&path), shutdown)
                .await
                .map_err(|e| e.to_string()),
            other => Err(format!("no role {other}")),
        }
    });
    result.expect("the role ran");
}

/// A role running as a child process of the test.
pub struct RoleChild {
    role: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl RoleChild {
    /// Starts `role` from `config`; its output goes to `<config>.log`.
    pub fn spawn(role: &str, config: &Path) -> Self {
        let mut this = Self {
            role: role.to_string(),
            config: config.to_path_buf(),
            log: config.with_extension("log"),
            child: None,
        };
        this.start();
        this
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("child log");
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["role_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_CHILD_ROLE, &self.role)
            .env(ROLE_CHILD_CONFIG, &self.config)
            .stdout(log.try_clone().expect("child log"))
            .stderr(log)
            .spawn()
            .expect("role child starts");
        self.child = Some(child);
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the role again from the same config (and state).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGINT (a graceful stop); returns whether it exited successfully.
    pub fn interrupt(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        sent && child.wait().is_ok_and(|s| s.success())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The child's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RoleChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address on 127.0.0.1 nobody listens on right now (for a role that
/// must come back on the same address after a restart, or a dead one).
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// An SV1 miner that authorizes with a plain username (the wallet's key)
/// and never mines: the pool holds a quote notification for a miner that
/// left until a channel with the same key opens, and this opens one.
pub async fn idle_miner(translator: SocketAddr) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut idle = TcpStream::connect(translator).await.expect("translator");
    idle.write_all(
        b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"idle\"]}\n\
          {\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"idle\",\"x\"]}\n",
    )
    .await
    .expect("idle miner");
    idle
}

/// Waits until something accepts connections on `addr`.
pub async fn until_listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A role config from a TOML file, as `<role> --config` loads it.
pub fn load_config<C: serde::de::DeserializeOwned + roles_common::Validate>(path: &Path) -> C {
    roles_common::load_config(path, "HASHPOOL_TEST_CONFIG").expect("config loads")
}

/// About one block per 1.5 M hashes: a few per minute from a debug CPU miner.
pub const NBITS_FEW_SECONDS: u32 = 0x1e0b_504f;

/// The shipped config files (`config/*.toml`) of devnet-tp, mint, pool and
/// translator, rewritten for a test: fixed free ports on 127.0.0.1 (a killed
/// role comes back on the same address), state under one directory, ~20 k
/// hashes per share (vardiff off) worth ~19 ehash (2^10 hashes each), the
/// translator's stats to `translator_stats` if given, the pool's nowhere.
pub struct ShippedConfigs {
    pub tp: std::path::PathBuf,
    pub mint: std::path::PathBuf,
    pub pool: std::path::PathBuf,
    pub translator: std::path::PathBuf,
    pub tp_addr: SocketAddr,
    pub mint_http: SocketAddr,
    pub mint_link: SocketAddr,
    pub pool_addr: SocketAddr,
    pub translator_addr: SocketAddr,
}

impl ShippedConfigs {
    pub fn write(dir: &Path, nbits: u32, translator_stats: Option<&str>) -> Self {
        let [tp_addr, mint_http, mint_link, pool_addr, translator_addr] =
            [(); 5].map(|_| free_address());
        let state = |name: &str| dir.join(name).display().to_string();

        let mut c = shipped_config("devnet-tp.toml");
        set_config(&mut c, "listen_address", tp_addr.to_string());
        set_config(&mut c, "state_dir", state("tp"));
        set_config(&mut c, "nbits", nbits as i64);
        let tp = write_config(dir, "devnet-tp.toml", &c);

        let mut c = shipped_config("mint.toml");
        set_config(&mut c, "http_listen", mint_http.to_string());
        set_config(&mut c, "link_listen", mint_link.to_string());
        set_config(&mut c, "database", state("mint/mint.sqlite"));
        set_config(&mut c, "unit_bits", 10);
        let mint = write_config(dir, "mint.toml", &c);

        let mut c = shipped_config("pool.toml");
        set_config(&mut c, "listen_address", pool_addr.to_string());
        set_config(&mut c, "tp_address", tp_addr.to_string());
        set_config(&mut c, "state_dir", state("pool"));
        set_config(&mut c, "unit_bits", 10);
        set_config(&mut c, "vardiff_interval_secs", 0);
        set_config(&mut c, "mint.address", mint_link.to_string());
        set_config(&mut c, "mint.timeout_secs", 2);
        set_config(&mut c, "mint.stats_interval_secs", 1);
        c.remove("stats");
        let pool = write_config(dir, "pool.toml", &c);

        let mut c = shipped_config("translator.toml");
        set_config(&mut c, "listen_address", translator_addr.to_string());
        set_config(&mut c, "mint_url", format!("http://{mint_http}"));
        set_config(&mut c, "data_dir", state("translator"));
        set_config(&mut c, "nominal_hashrate", 2000.0);
        set_config(&mut c, "vardiff_interval_secs", 0);
        set_config(&mut c, "mint_retry_secs", 1);
        c["upstreams"].as_array_mut().expect("upstreams")[0]
            .as_table_mut()
            .expect("an upstream")
            .insert("address".into(), pool_addr.to_string().into());
        match translator_stats {
            Some(addr) => set_config(&mut c, "stats.address", addr),
            None => {
                c.remove("stats");
            }
        }
        let translator = write_config(dir, "translator.toml", &c);
        Self {
            tp,
            mint,
            pool,
            translator,
            tp_addr,
            mint_http,
            mint_link,
            pool_addr,
            translator_addr,
        }
    }
}

/// A shipped config file (`config/<name>`) as a TOML table to adjust.
pub fn shipped_config(name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    std::fs::read_to_string(path)
        .expect("shipped config")
        .parse()
        .expect("valid TOML")
}

/// Sets `key` ("a" or "table.a") in a config table.
pub fn set_config(table: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    match key.split_once('.') {
        Some((outer, inner)) => {
            let outer = table
                .get_mut(outer)
                .and_then(|v| v.as_table_mut())
                .unwrap_or_else(|| panic!("no table {outer}"));
            outer.insert(inner.to_string(), value.into());
        }
        None => {
            table.insert(key.to_string(), value.into());
        }
    }
}

pub fn write_config(dir: &Path, name: &str, table: &toml::Table) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(table).expect("TOML")).expect("config written");
    path
}

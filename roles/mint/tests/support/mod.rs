//! Shared by the mint's integration tests and its benchmark: a mint on
//! 127.0.0.1 port 0, a pool-link client, shares with real proof of work, and
//! a cdk wallet.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cdk::amount::SplitTarget;
use cdk::http_client::HttpClient;
use cdk::nuts::{CurrencyUnit, PaymentMethod, SecretKey};
use cdk::wallet::{Wallet, WalletBuilder};
use ehash::coinbase::testing::{coinbase_tx_at, mine_header, mine_header_on};
use ehash::wire::MessageSet;
use ehash::LockingKey;
use mint::{MintConfig, RunningMint};
use mint_quote_sv2::client::{ClientHandshake, HandshakeStep};
use mint_quote_sv2::{
    CoinbaseProof, MintQuoteMessage, MintQuoteRequestOwned, MintStatsRequest, MintStatsResponse,
};
use roles_common::noise::{self, NoiseReader, NoiseWriter};
use roles_common::CancellationToken;
use stratum_apps::key_utils::Secp256k1SecretKey;
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::secp256k1::{self as secp, XOnlyPublicKey};
use stratum_core::bitcoin::ScriptBuf;
use tokio::net::TcpStream;

// Devnet-only keys (public, never use them for real): the pool's identity
// on the mint link (as in config/pool.toml), and one the mint does not allow.
pub const POOL_SECRET: &str = "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp";
pub const STRANGER_SECRET: &str = "EazFUaDycieLShyfesSP4VoypLVAcebNvBFQgM6jBx4pPBfMG";
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// config/mint.toml as shipped: the devnet keys, allowed pool and mnemonic.
pub fn shipped_config() -> MintConfig {
    roles_common::testing::load_shipped("mint.toml")
}

/// The shipped config on 127.0.0.1 port 0, one ehash per hash (unit_bits
/// 0), with `database`.
pub fn config(database: &str) -> MintConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MintConfig {
        http_listen: any,
        link_listen: any,
        database: database.to_string(),
        unit_bits: 0,
        // The test shares are mined on made-up tips.
        chain: None,
        ..shipped_config()
    }
}

/// A config whose SQLite file is in a fresh directory (removed with the
/// `TempDir`), and that file.
pub fn config_on_disk() -> (tempfile::TempDir, PathBuf, MintConfig) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("mint.sqlite");
    let config = config(database.to_str().unwrap());
    (dir, database, config)
}

pub struct TestMint {
    pub running: RunningMint,
    shutdown: CancellationToken,
}

impl TestMint {
    pub async fn start(config: MintConfig) -> Self {
        let shutdown = CancellationToken::new();
        let running = mint::start(config, shutdown.clone())
            .await
            .expect("mint starts");
        Self { running, shutdown }
    }

    /// A mint with an in-memory database, and an authenticated pool on it.
    pub async fn with_pool() -> (Self, PoolClient) {
        let mint = Self::start(config(":memory:")).await;
        let pool = mint.pool().await;
        (mint, pool)
    }

    /// Neither the mint's figures (`stats`) nor its database know any quote.
    pub async fn assert_no_quote(&self, stats: &MintStatsResponse) {
        assert_eq!(
            stats.quotes_unpaid + stats.quotes_paid + stats.quotes_issued,
            0
        );
        assert!(self.running.mint.mint_quotes().await.unwrap().is_empty());
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.running.wait())
            .await
            .expect("mint stops")
            .expect("mint stops well");
    }

    pub async fn pool(&self) -> PoolClient {
        self.pool_as(POOL_SECRET).await
    }

    /// A pool authenticated with the identity key `pool_secret`.
    pub async fn pool_as(&self, pool_secret: &str) -> PoolClient {
        PoolClient::authenticated(self.running.link_addr, pool_secret).await
    }

    pub fn wallet(&self) -> Wallet {
        wallet_for(&self.running.http_url())
    }

    /// POSTs `body` as JSON to `path` of the HTTP API: (status, JSON answer).
    pub async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.running.http_url());
        let response = HttpClient::new()
            .post(&url)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let json = response.json().await.expect("a JSON answer");
        (status, json)
    }
}

pub fn wallet_for(url: &str) -> Wallet {
    let db = futures_block(cdk_sqlite::wallet::memory::empty()).unwrap();
    WalletBuilder::new()
        .mint_url(url.parse().unwrap())
        .unit(CurrencyUnit::custom(ehash::constants::UNIT))
        .localstore(Arc::new(db))
        .seed(rand::random::<[u8; 32]>().repeat(2).try_into().unwrap())
        .without_rate_limiting()
        .build()
        .unwrap()
}

pub fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

pub fn ehash_method() -> PaymentMethod {
    PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into())
}

/// A pool-link client: Noise initiator pinning the mint's key.
pub struct PoolClient {
    pub reader: NoiseReader,
    pub writer: NoiseWriter,
}

impl PoolClient {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let key = shipped_config().authority_public_key;
        let (reader, writer) = noise::connect(stream, Some(key)).await.unwrap();
        Self { reader, writer }
    }

    pub async fn authenticated(addr: std::net::SocketAddr, pool_secret: &str) -> Self {
        let mut client = Self::connect(addr).await;
        let mut handshake = ClientHandshake::new(mint_key(), secret(pool_secret), 0);
        client
            .send(handshake.setup_connection("127.0.0.1", addr.port()))
            .await;
        loop {
            let message = client.recv().await.expect("handshake reply");
            match handshake.on_message(message).expect("handshake succeeds") {
                HandshakeStep::Send(m) => client.send(*m).await,
                HandshakeStep::Wait => {}
                HandshakeStep::Done => return client,
            }
        }
    }

    pub async fn send(&mut self, message: MintQuoteMessage) {
        self.writer
            .write_frame(message.into_frame().unwrap())
            .await
            .unwrap();
    }

    /// Sends `payload` under a frame header as it is, to send what no encoder would.
    pub async fn send_bytes_as_frame(&mut self, msg_type: u8, payload: Vec<u8>) {
        let len = payload.len() as u32;
        let mut bytes = vec![
            0,
            0,
            msg_type,
            len as u8,
            (len >> 8) as u8,
            (len >> 16) as u8,
        ];
        bytes.extend(payload);
        let frame = stratum_core::framing_sv2::framing::SerializedFrame::from_bytes(bytes).unwrap();
        self.writer.write_frame(frame).await.unwrap();
    }

    /// The next message, or why there is none (closed, garbage).
    pub async fn recv(&mut self) -> Result<MintQuoteMessage, String> {
        let mut frame = tokio::time::timeout(TIMEOUT, self.reader.read_frame())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        let header = frame.header();
        MintQuoteMessage::decode(&header, frame.payload()).map_err(|e| e.to_string())
    }

    pub async fn quote(&mut self, request: MintQuoteRequestOwned) -> MintQuoteMessage {
        self.send(MintQuoteMessage::MintQuoteRequest(request)).await;
        self.recv().await.expect("an answer")
    }

    pub async fn quote_id(&mut self, request: MintQuoteRequestOwned) -> String {
        match self.quote(request).await {
            MintQuoteMessage::MintQuoteResponse(r) => r.quote_id.as_utf8_or_hex(),
            other => panic!("expected a quote, got {other:?}"),
        }
    }

    pub async fn stats(&mut self) -> MintStatsResponse {
        self.send(MintQuoteMessage::MintStatsRequest(MintStatsRequest {
            request_id: 42,
        }))
        .await;
        match self.recv().await.unwrap() {
            MintQuoteMessage::MintStatsResponse(s) => {
                assert_eq!(s.request_id, 42);
                s
            }
            other => panic!("expected stats, got {other:?}"),
        }
    }

    /// Whether the mint has closed this connection.
    pub async fn is_closed(&mut self) -> bool {
        matches!(self.recv().await, Err(e) if e != "timed out")
    }
}

pub fn mint_key() -> XOnlyPublicKey {
    let key = shipped_config().authority_public_key;
    XOnlyPublicKey::from_slice(&key.into_bytes()).unwrap()
}

pub fn secret(base58: &str) -> secp::SecretKey {
    let key = Secp256k1SecretKey::from_str(base58).unwrap();
    secp::SecretKey::from_slice(&key.into_bytes()).unwrap()
}

/// A miner's NUT-20 key pair.
pub fn miner_key() -> (SecretKey, LockingKey) {
    let secret = SecretKey::generate();
    let locking = LockingKey::from_bytes(&secret.public_key().to_bytes()).unwrap();
    (secret, locking)
}

/// The reward script of the shipped devnet pool (`coinbase_reward_script`),
/// which the shipped mint config allows.
pub fn pool_script() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0x51])
}

/// A share worth exactly 2^zero_bits expected hashes (and ehash at unit_bits
/// 0), mined on a coinbase that pays the pool and commits to `key`.
pub fn share(zero_bits: u32, key: LockingKey) -> MintQuoteRequestOwned {
    let proof = proof_for(key, ehash::coinbase::testing::HEIGHT);
    let (header, target) = mine_header(&proof.coinbase, &proof.merkle_path, zero_bits);
    MintQuoteRequestOwned::new(&header, target, 1u64 << zero_bits, key, &proof).unwrap()
}

/// [`share`] on a chain tip: its prev hash, nbits, an ntime, and the
/// height of blocks on it.
pub fn share_on(
    prev_hash: [u8; 32],
    nbits: u32,
    ntime: u32,
    height: u32,
    zero_bits: u32,
    key: LockingKey,
) -> MintQuoteRequestOwned {
    let proof = proof_for(key, height);
    let (header, target) = mine_header_on(
        prev_hash,
        nbits,
        ntime,
        &proof.coinbase,
        &proof.merkle_path,
        zero_bits,
    );
    MintQuoteRequestOwned::new(&header, target, 1u64 << zero_bits, key, &proof).unwrap()
}

/// A fresh coinbase for a block at `height` paying the pool and committing
/// to `key`, with a path.
fn proof_for(key: LockingKey, height: u32) -> CoinbaseProof {
    let unique = rand::random::<[u8; 16]>();
    CoinbaseProof {
        coinbase: serialize(&coinbase_tx_at(height, &pool_script(), &key, &unique)),
        merkle_path: vec![rand::random(), rand::random()],
    }
}

/// `request` with another header or locking key: its target, amount and
/// coinbase proof unchanged.
pub fn claimed_as(
    request: &MintQuoteRequestOwned,
    header: &[u8; 80],
    key: LockingKey,
) -> MintQuoteRequestOwned {
    let target = request.target.to_array();
    MintQuoteRequestOwned::new(header, target, request.amount, key, &request.proof()).unwrap()
}

pub async fn mint_with(
    wallet: &Wallet,
    quote_ids: &[&str],
    key: &SecretKey,
) -> Result<u64, String> {
    for id in quote_ids {
        wallet
            .fetch_mint_quote(id, Some(ehash_method()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let keys: HashMap<String, SecretKey> = quote_ids
        .iter()
        .map(|id| (id.to_string(), key.clone()))
        .collect();
    let proofs = wallet
        .batch_mint(quote_ids, SplitTarget::default(), None, Some(keys))
        .await
        .map_err(|e| e.to_string())?;
    Ok(proofs.iter().map(|p| u64::from(p.amount)).sum())
}

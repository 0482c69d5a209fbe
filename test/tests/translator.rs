//! The translator against the real pool, devnet-tp and mint on 127.0.0.1
//! (port 0), with a test SV1 miner that builds its headers from
//! `mining.notify` on its own: a share the pool accepts proves the SV1 <->
//! SV2 translation end to end.

#[path = "../../roles/translator/tests/support/sv1_client.rs"]
mod sv1_client;
mod sv1_deps {
    pub use hex;
    pub use serde_json;
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use cdk::amount::SplitTarget;
use cdk::nuts::{CurrencyUnit, SecretKey};
use cdk::wallet::{ReceiveOptions, Wallet, WalletBuilder};
use ehash::wire::MessageSet;
use ehash::LockingKey;
use hashpool_tests::*;
use mint_quote_sv2::client::{ClientHandshake, HandshakeStep};
use mint_quote_sv2::{MintQuoteMessage, MintQuoteRequestOwned};
use pool::AcceptedShare;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::secp256k1::{self as secp, XOnlyPublicKey};
use sv1_client::{Sv1Client, Sv1Share};
use sv1_deps::serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use translator::quotes::{QuoteRecord, QuoteState, QuoteStore};
use translator::wallet::{ehash_method, locking_secret, EhashWallet};
use translator::{TranslatorConfig, TranslatorEvent, TranslatorHandle};

// ---------------------------------------------------------------- translator

struct RunningTranslator {
    handle: TranslatorHandle,
    events: broadcast::Receiver<TranslatorEvent>,
    shutdown: CancellationToken,
}

impl RunningTranslator {
    async fn start(config: TranslatorConfig) -> Self {
        let shutdown = CancellationToken::new();
        let handle = translator::start(config, shutdown.clone())
            .await
            .expect("translator starts");
        let events = handle.subscribe_events();
        Self {
            handle,
            events,
            shutdown,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn wallet_key(&self) -> LockingKey {
        self.handle.wallet().locking_key()
    }

    async fn wait_event(
        &mut self,
        mut pred: impl FnMut(&TranslatorEvent) -> bool,
    ) -> TranslatorEvent {
        tokio::time::timeout(WAIT * 2, async {
            loop {
                match self.events.recv().await {
                    Ok(e) if pred(&e) => return e,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("translator events closed"),
                }
            }
        })
        .await
        .expect("translator event in time")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle.wait())
            .await
            .expect("translator stops");
    }
}

async fn accepted(stack: &mut Stack) -> AcceptedShare {
    tokio::time::timeout(WAIT, stack.accepted.recv())
        .await
        .expect("accepted share in time")
        .expect("pool running")
}

/// Mines one share and checks the pool accepted exactly that header.
async fn mine_and_check(
    stack: &mut Stack,
    miner: &mut Sv1Client,
    user: &str,
) -> (Sv1Share, AcceptedShare) {
    let share = miner.mine_one(user).await.expect("share accepted");
    let acc = accepted(stack).await;
    assert_eq!(
        acc.header, share.header,
        "the pool validated the miner's own header"
    );
    assert_eq!(acc.share_hash, share.hash);
    (share, acc)
}

/// Reads until a clean `mining.notify` arrives (a new channel or chain tip).
async fn wait_clean_job(miner: &mut Sv1Client) {
    loop {
        let v = miner.recv().await.expect("miner still connected");
        if v["method"] == "mining.notify" && v["params"][8] == true {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_shares_are_accepted_by_the_pool_with_the_exact_header() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig1").await;
    assert_eq!(miner.extranonce2_size, 4);
    for _ in 0..5 {
        let (_, acc) = mine_and_check(&mut stack, &mut miner, "rig1").await;
        assert_eq!(
            acc.locking_key,
            Some(tr.wallet_key()),
            "a plain username mines for the wallet"
        );
    }
    // with version rolling
    let mut rolling = Sv1Client::connect(tr.addr()).await;
    assert_eq!(rolling.configure_version_rolling().await, Some(0x1fff_e000));
    rolling.subscribe().await;
    assert_eq!(rolling.authorize("rig2").await, Ok(true));
    rolling.wait_job().await;
    let mut rolled = 0;
    for _ in 0..6 {
        let (share, _) = mine_and_check(&mut stack, &mut rolling, "rig2").await;
        rolled += share.version_bits.is_some() as u32;
    }
    assert!(rolled > 0, "some shares rolled version bits");
    assert_eq!(stack.pool.stats().shares_accepted, 11);
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_that_is_a_key_opens_a_channel_locked_to_that_key() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    let user = format!("{LOCKING_KEY}.bob");
    let mut miner = Sv1Client::start(tr.addr(), &user).await;
    let (_, acc) = mine_and_check(&mut stack, &mut miner, &user).await;
    assert_eq!(
        acc.locking_key.map(|k| k.to_string()).as_deref(),
        Some(LOCKING_KEY)
    );
    assert_ne!(acc.locking_key, Some(tr.wallet_key()));
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sv1_input_disconnects_only_that_miner() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    let mut good = Sv1Client::start(tr.addr(), "good").await;
    mine_and_check(&mut stack, &mut good, "good").await;

    // malformed JSON: disconnected
    let mut garbage = Sv1Client::connect(tr.addr()).await;
    garbage
        .send_raw(b"{\"id\": 1, \"method\": mining.subscribe\n")
        .await
        .unwrap();
    garbage.expect_closed().await;
    let reason = tr
        .wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("malformed")))
        .await;
    println!("{reason:?}");

    // an oversized line (no newline in sight): disconnected
    let mut flood = Sv1Client::connect(tr.addr()).await;
    flood.subscribe().await;
    let _ = flood.send_raw(&vec![b'x'; 64 * 1024]).await;
    flood.expect_closed().await;
    tr.wait_event(|e| matches!(e, TranslatorEvent::MinerDisconnected { reason, .. } if reason.contains("longer than")))
        .await;

    // a submit for an unknown job: an error, and the miner keeps mining
    let mut confused = Sv1Client::start(tr.addr(), "confused").await;
    let mut share = confused.find_share();
    share.job_id = "deadbeef".into();
    let err = confused.submit("confused", &share).await.unwrap_err();
    assert_eq!(err[0], 21, "{err}");
    // a share under the target: false with a reason, not sent to the pool
    let weak = confused.find_share_with(|hash, target| hash > target);
    let err = confused.submit("confused", &weak).await.unwrap_err();
    assert_eq!(err[0], 23, "{err}");
    mine_and_check(&mut stack, &mut confused, "confused").await;

    // bad params and unknown methods: errors, still connected
    let r = confused
        .request(
            "mining.submit",
            json!(["confused", "1", "nothex", "1", "1"]),
        )
        .await;
    assert_eq!(r["error"][0], -32602);

    // the first miner never noticed
    for _ in 0..3 {
        mine_and_check(&mut stack, &mut good, "good").await;
    }
    assert_eq!(stack.pool.stats().shares_accepted, 5);
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_translator_fails_over_to_the_next_pool_and_keeps_its_miners() {
    let mut first = Stack::start(NBITS_NEVER).await;
    let mut second = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    // a dead address first: skipped
    let dead = free_address();
    let mut tr = RunningTranslator::start(translator_config(
        &[dead, first.pool_addr(), second.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    mine_and_check(&mut first, &mut miner, "rig").await;

    // the first pool goes away: the miner stays connected and mines on the second
    first.pool_shutdown.cancel();
    tr.wait_event(|e| matches!(e, TranslatorEvent::UpstreamLost(_)))
        .await;
    wait_clean_job(&mut miner).await;
    let en1 = miner.extranonce1.clone();
    mine_and_check(&mut second, &mut miner, "rig").await;
    assert_eq!(miner.extranonce1, en1);
    tr.stop().await;
    first.tp_shutdown.cancel();
    second.stop().await;
}

// ---------------------------------------------------------------- mint and wallet

// DEVNET/TEST ONLY keys (as in roles/mint/tests/support).
const MINT_PUBLIC: &str = "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd";
const MINT_SECRET: &str = "kaEBavE3GDF58RVUYTmAv3cG8miPAZ2cucwLnYAZf6XHTp3Ba";
const MINT_POOL_PUBLIC: &str = "9agtKxDCNZ7BwrfFkX7pNY7qRvDcXaCqoW928MhFP8LE4yen9Sm";
const MINT_POOL_SECRET: &str = "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp";
const MINT_MNEMONIC: &str =
    "order shock flip tribe strong rigid planet deputy question matter decide little";

fn mint_config(database: &str) -> mint::MintConfig {
    mint::MintConfig {
        network: roles_common::Network::Devnet,
        http_listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        link_listen: "127.0.0.1:0".parse().unwrap(),
        authority_public_key: MINT_PUBLIC.parse().unwrap(),
        authority_secret_key: MINT_SECRET.parse().unwrap(),
        cert_validity_secs: 3600,
        allowed_pool_keys: vec![MINT_POOL_PUBLIC.parse().unwrap()],
        database: database.to_string(),
        mnemonic: MINT_MNEMONIC.to_string(),
        unit_bits: 0,
        min_amount: 1,
        max_amount: i64::MAX as u64,
        max_batch_size: 100,
        name: "test mint".into(),
        description: None,
    }
}

struct TestMint {
    running: mint::RunningMint,
    shutdown: CancellationToken,
}

impl TestMint {
    async fn start() -> TestMint {
        init_logging();
        let shutdown = CancellationToken::new();
        let running = mint::start(mint_config(":memory:"), shutdown.clone())
            .await
            .expect("mint starts");
        TestMint { running, shutdown }
    }

    fn url(&self) -> String {
        self.running.http_url()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.running.wait())
            .await
            .expect("mint stops");
    }
}

/// What the pool does on the mint link: quotes for shares, by hand.
struct QuoteClient {
    reader: NoiseTcpReadHalf,
    writer: NoiseTcpWriteHalf,
}

impl QuoteClient {
    async fn connect(mint: &TestMint) -> QuoteClient {
        let addr = mint.running.link_addr;
        let stream = TcpStream::connect(addr).await.unwrap();
        let key: Secp256k1PublicKey = MINT_PUBLIC.parse().unwrap();
        let (reader, writer) = connect_with_noise(stream, Some(key))
            .await
            .unwrap()
            .into_split();
        let mut c = QuoteClient { reader, writer };
        let mint_key = XOnlyPublicKey::from_slice(&key.into_bytes()).unwrap();
        let pool_secret = secp::SecretKey::from_slice(
            &Secp256k1SecretKey::from_str(MINT_POOL_SECRET)
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        let mut handshake = ClientHandshake::new(mint_key, pool_secret, 0);
        c.send(handshake.setup_connection("127.0.0.1", addr.port()))
            .await;
        loop {
            let m = c.recv().await;
            match handshake.on_message(m).expect("handshake") {
                HandshakeStep::Send(m) => c.send(m).await,
                HandshakeStep::Wait => {}
                HandshakeStep::Done => return c,
            }
        }
    }

    async fn send(&mut self, m: MintQuoteMessage) {
        self.writer
            .write_frame(m.into_frame().unwrap())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> MintQuoteMessage {
        let mut frame = tokio::time::timeout(WAIT, self.reader.read_frame())
            .await
            .expect("mint answers")
            .expect("frame");
        let header = frame.header();
        MintQuoteMessage::decode(&header, frame.payload()).unwrap()
    }

    /// A paid quote worth 2^zero_bits, locked to `key`.
    async fn quote(&mut self, zero_bits: u32, key: LockingKey) -> (String, u64) {
        let request = share_request(zero_bits, key);
        self.send(MintQuoteMessage::MintQuoteRequest(request)).await;
        match self.recv().await {
            MintQuoteMessage::MintQuoteResponse(r) => {
                (r.quote_id.as_utf8_or_hex(), 1u64 << zero_bits)
            }
            other => panic!("expected a quote, got {other:?}"),
        }
    }
}

/// A header meeting target 2^(256 - zero_bits) - 1 (worth 2^zero_bits at unit_bits 0).
fn share_request(zero_bits: u32, key: LockingKey) -> MintQuoteRequestOwned {
    let mut target_be = [0xffu8; 32];
    for bit in 0..zero_bits as usize {
        target_be[bit / 8] &= !(0x80 >> (bit % 8));
    }
    let mut target_le = target_be;
    target_le.reverse();
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&0x2000_0000u32.to_le_bytes());
    header[4..36].copy_from_slice(&rand::random::<[u8; 32]>());
    header[36..68].copy_from_slice(&rand::random::<[u8; 32]>());
    header[72..76].copy_from_slice(&0x207f_ffffu32.to_le_bytes());
    for nonce in 0u32.. {
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        let mut hash = sha256d::Hash::hash(&header).to_byte_array();
        hash.reverse();
        if hash <= target_be {
            break;
        }
    }
    MintQuoteRequestOwned::new(&header, target_le, 1u64 << zero_bits, key)
}

fn record(quote_id: &str, amount: u64, key: LockingKey, state: QuoteState) -> QuoteRecord {
    QuoteRecord {
        quote_id: quote_id.into(),
        share_hash: format!("{:064x}", rand::random::<u64>()),
        amount,
        locking_key: key.to_string(),
        keyset_id: String::new(),
        channel_id: 1,
        sequence_number: 1,
        state,
        created_at: 0,
        last_error: None,
    }
}

fn seed() -> [u8; 64] {
    translator::config::seed_from_mnemonic(TRANSLATOR_MNEMONIC).unwrap()
}

fn fresh_wallet(url: &str) -> Wallet {
    let db = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(cdk_sqlite::wallet::memory::empty())
    })
    .unwrap();
    WalletBuilder::new()
        .mint_url(url.parse().unwrap())
        .unit(CurrencyUnit::custom(ehash::constants::UNIT))
        .localstore(std::sync::Arc::new(db))
        .seed(rand::random::<[u8; 32]>().repeat(2).try_into().unwrap())
        .without_rate_limiting()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_mints_its_quotes_exactly_once_and_a_sent_token_is_received_elsewhere() {
    let mint = TestMint::start().await;
    let mut link = QuoteClient::connect(&mint).await;
    let dir = tempfile::tempdir().unwrap();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let wallet = EhashWallet::open(&mint.url(), &dir.path().join("wallet.sqlite"), seed())
        .await
        .unwrap();
    let key = wallet.locking_key();
    let mut total = 0;
    for bits in [1, 2, 3, 4, 5] {
        let (id, amount) = link.quote(bits, key).await;
        store
            .insert(&record(&id, amount, key, QuoteState::Pending))
            .unwrap();
        total += amount;
    }
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 3).await.unwrap();
    assert_eq!(round.minted.len(), 3, "batches are bounded");
    let round2 = wallet.mint_pending(&store, 3).await.unwrap();
    assert_eq!(round.amount + round2.amount, total);
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "balance = sum of the quotes, exactly"
    );
    // nothing left, nothing twice
    let again = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(again.minted.is_empty() && again.already_issued.is_empty());
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (5, total));

    // wallet send -> a fresh wallet receives it
    let token = translator::cli::run_wallet_command_on(
        &wallet,
        &store,
        translator::cli::WalletCommand::Send { amount: 7 },
    )
    .await
    .unwrap();
    let token = token.trim();
    assert!(token.starts_with("cashuB"), "{token}");
    let other = fresh_wallet(&mint.url());
    let received = other
        .receive(token, ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 7);
    assert_eq!(wallet.balance().await.unwrap(), total - 7);
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_minting_before_recording_mints_nothing_twice() {
    let mint = TestMint::start().await;
    let mut link = QuoteClient::connect(&mint).await;
    let dir = tempfile::tempdir().unwrap();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let mut quotes = vec![];
    let mut total = 0;
    {
        let wallet = EhashWallet::open(&mint.url(), &dir.path().join("wallet.sqlite"), seed())
            .await
            .unwrap();
        let key = wallet.locking_key();
        for bits in [3, 4, 5, 6] {
            let (id, amount) = link.quote(bits, key).await;
            store
                .insert(&record(&id, amount, key, QuoteState::Pending))
                .unwrap();
            quotes.push(id);
            total += amount;
        }
        // The wallet minted two quotes, then the process died before the
        // records said so.
        let secret = locking_secret(&seed());
        for id in &quotes[..2] {
            wallet
                .cdk()
                .fetch_mint_quote(id, Some(ehash_method()))
                .await
                .unwrap();
        }
        let ids: Vec<&str> = quotes[..2].iter().map(String::as_str).collect();
        let keys: HashMap<String, SecretKey> = quotes[..2]
            .iter()
            .map(|q| (q.clone(), secret.clone()))
            .collect();
        wallet
            .cdk()
            .batch_mint(&ids, SplitTarget::default(), None, Some(keys))
            .await
            .unwrap();
    }
    let wallet = EhashWallet::open(&mint.url(), &dir.path().join("wallet.sqlite"), seed())
        .await
        .unwrap();
    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert_eq!(round.already_issued.len(), 2);
    assert_eq!(round.minted.len(), 2);
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (4, total));
    mint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_locked_to_a_miners_key_are_listed_and_only_that_miner_can_mint_them() {
    let mint = TestMint::start().await;
    let mut link = QuoteClient::connect(&mint).await;
    let dir = tempfile::tempdir().unwrap();
    let store = QuoteStore::open(&dir.path().join("quotes.sqlite")).unwrap();
    let wallet = EhashWallet::open(&mint.url(), &dir.path().join("wallet.sqlite"), seed())
        .await
        .unwrap();
    let miner_secret = SecretKey::generate();
    let miner_key = LockingKey::from_bytes(&miner_secret.public_key().to_bytes()).unwrap();
    let (id, amount) = link.quote(4, miner_key).await;
    store
        .insert(&record(&id, amount, miner_key, QuoteState::Foreign))
        .unwrap();

    let listing = translator::cli::run_wallet_command_on(
        &wallet,
        &store,
        translator::cli::WalletCommand::Quotes,
    )
    .await
    .unwrap();
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the quote is listed");
    assert!(
        line.contains("miner-key") && line.contains(&miner_key.to_string()),
        "{line}"
    );

    wallet.recover().await.unwrap();
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(round.minted.is_empty());
    // the proxy's key cannot mint it
    wallet
        .cdk()
        .fetch_mint_quote(&id, Some(ehash_method()))
        .await
        .unwrap();
    let keys: HashMap<String, SecretKey> = [(id.clone(), locking_secret(&seed()))].into();
    assert!(wallet
        .cdk()
        .batch_mint(&[id.as_str()], SplitTarget::default(), None, Some(keys))
        .await
        .is_err());
    assert_eq!(wallet.balance().await.unwrap(), 0);
    // the miner's own wallet can
    let own = fresh_wallet(&mint.url());
    own.fetch_mint_quote(&id, Some(ehash_method()))
        .await
        .unwrap();
    let keys: HashMap<String, SecretKey> = [(id.clone(), miner_secret)].into();
    let proofs = own
        .batch_mint(&[id.as_str()], SplitTarget::default(), None, Some(keys))
        .await
        .unwrap();
    assert_eq!(
        proofs.iter().map(|p| u64::from(p.amount)).sum::<u64>(),
        amount
    );
    mint.stop().await;
}

// ---------------------------------------------------------------- the whole chain
//
// SV1 miner -> translator -> pool (ehash flow, annotate) -> mint, and the
// translator's wallet minting what the pool announced.

/// Waits until the translator recorded `n` quotes; returns (quote id, amount, own).
async fn recorded_quotes(tr: &mut RunningTranslator, n: usize) -> Vec<(String, u64, bool)> {
    let mut quotes = vec![];
    while quotes.len() < n {
        if let TranslatorEvent::QuoteRecorded {
            quote_id,
            amount,
            own,
        } = tr
            .wait_event(|e| matches!(e, TranslatorEvent::QuoteRecorded { .. }))
            .await
        {
            quotes.push((quote_id, amount, own));
        }
    }
    quotes
}

/// Waits until minting rounds covered `n` quotes.
async fn minted_quotes(tr: &mut RunningTranslator, n: usize) {
    let mut count = 0;
    while count < n {
        if let TranslatorEvent::Minted { quotes, .. } = tr
            .wait_event(|e| matches!(e, TranslatorEvent::Minted { .. }))
            .await
        {
            count += quotes;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_the_wallet_balance_is_the_sum_of_the_accepted_shares() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        dir.path(),
    ))
    .await;
    let ehash = tr
        .wait_event(|e| matches!(e, TranslatorEvent::UpstreamConnected { .. }))
        .await;
    assert_eq!(
        ehash,
        TranslatorEvent::UpstreamConnected {
            address: stack.pool_addr().to_string(),
            ehash: true
        }
    );
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    let mut hashes = vec![];
    for _ in 0..5 {
        hashes.push(miner.mine_one("rig").await.expect("accepted").hash);
    }
    let quotes = recorded_quotes(&mut tr, 5).await;
    assert!(quotes.iter().all(|(_, amount, own)| *own && *amount > 0));
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    // every accepted share has its quote, with its hash
    let store = tr.handle.quotes().clone();
    let mut recorded: Vec<String> = store
        .all()
        .unwrap()
        .into_iter()
        .map(|r| r.share_hash)
        .collect();
    let mut mined: Vec<String> = hashes.iter().map(hex::encode).collect();
    recorded.sort();
    mined.sort();
    assert_eq!(recorded, mined);
    minted_quotes(&mut tr, 5).await;
    let wallet = tr.handle.wallet().clone();
    assert_eq!(
        wallet.balance().await.unwrap(),
        total,
        "balance = sum of the shares' amounts"
    );
    assert_eq!(store.totals().unwrap().minted, (5, total));

    // `wallet send` -> a fresh wallet receives the token
    let out = translator::cli::run_wallet_command_on(
        &wallet,
        &store,
        translator::cli::WalletCommand::Send { amount: 1 },
    )
    .await
    .unwrap();
    let other = fresh_wallet(&stack.mint_url());
    let received = other
        .receive(out.trim(), ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 1);
    assert_eq!(wallet.balance().await.unwrap(), total - 1);
    tr.stop().await;
    stack.stop().await;
}

role_child_entry!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_a_killed_translator_mints_every_quote_once_after_restart() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    // The first run, a child process, cannot reach the mint: its quotes are
    // recorded, not minted, when it is killed with SIGKILL.
    let (listen, unreachable) = (free_address(), free_address());
    let mut config = translator_config(
        &[stack.pool_addr()],
        &format!("http://{unreachable}"),
        dir.path(),
    );
    config.listen_address = listen;
    let config_path = dir.path().join("translator.toml");
    std::fs::write(&config_path, translator_toml(&config)).unwrap();
    let mut child = RoleChild::spawn("translator", &config_path);
    until_listening(listen, "the translator child").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut miner = Sv1Client::start(listen, "rig").await;
    for _ in 0..4 {
        miner.mine_one("rig").await.expect("accepted");
    }
    let quotes_db = dir.path().join("quotes.sqlite");
    let first_total: u64 = loop {
        let recorded = QuoteStore::open(&quotes_db)
            .and_then(|s| s.all())
            .unwrap_or_default();
        if recorded.len() == 4 {
            break recorded.iter().map(|q| q.amount).sum();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quotes never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill(); // SIGKILL: no shutdown step runs
    drop(miner);

    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    for _ in 0..3 {
        miner.mine_one("rig").await.expect("accepted");
    }
    let second = recorded_quotes(&mut tr, 3).await;
    minted_quotes(&mut tr, 7).await;
    let total: u64 = first_total + second.iter().map(|(_, a, _)| a).sum::<u64>();
    let wallet = tr.handle.wallet().clone();
    let store = tr.handle.quotes().clone();
    assert_eq!(wallet.balance().await.unwrap(), total);
    assert_eq!(store.totals().unwrap().minted, (7, total));
    // another round finds nothing to do
    let round = wallet.mint_pending(&store, 50).await.unwrap();
    assert!(round.minted.is_empty() && round.already_issued.is_empty());
    assert_eq!(wallet.balance().await.unwrap(), total);
    tr.stop().await;
    stack.stop().await;
}

/// A translator config as a TOML file (the child loads it like `translator --config`).
fn translator_toml(c: &TranslatorConfig) -> String {
    let upstreams: String = c
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "\n[[upstreams]]\naddress = \"{}\"\nauthority_public_key = \"{}\"\n",
                u.address, POOL_PUBLIC_KEY
            )
        })
        .collect();
    format!(
        "network = \"devnet\"\nlisten_address = \"{}\"\nmint_url = \"{}\"\ndata_dir = \"{}\"\nmnemonic = \"{}\"\n\
         aggregate_channels = false\nnominal_hashrate = {:?}\nshares_per_minute = {:?}\n\
         vardiff_interval_secs = {}\nextranonce2_size = {}\nmax_line_bytes = {}\nkeepalive_secs = {}\n\
         wait_for_pool = {}\nmint_batch_size = {}\nmint_retry_secs = {}\n{upstreams}",
        c.listen_address,
        c.mint_url,
        c.data_dir.display(),
        c.mnemonic,
        c.nominal_hashrate,
        c.shares_per_minute,
        c.vardiff_interval_secs,
        c.extranonce2_size,
        c.max_line_bytes,
        c.keepalive_secs,
        c.wait_for_pool,
        c.mint_batch_size,
        c.mint_retry_secs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_a_miners_own_key_gets_quotes_only_it_can_mint() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        dir.path(),
    ))
    .await;
    let miner_secret = SecretKey::generate();
    let miner_key = LockingKey::from_bytes(&miner_secret.public_key().to_bytes()).unwrap();
    let user = format!("{miner_key}.alice");
    let mut miner = Sv1Client::start(tr.addr(), &user).await;
    for _ in 0..3 {
        miner.mine_one(&user).await.expect("accepted");
    }
    let quotes = recorded_quotes(&mut tr, 3).await;
    assert!(quotes.iter().all(|(_, _, own)| !own));
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    let store = tr.handle.quotes().clone();
    let wallet = tr.handle.wallet().clone();
    let listing = translator::cli::run_wallet_command_on(
        &wallet,
        &store,
        translator::cli::WalletCommand::Quotes,
    )
    .await
    .unwrap();
    for (id, _, _) in &quotes {
        let line = listing
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .expect("listed");
        assert!(
            line.contains("miner-key") && line.contains(&miner_key.to_string()),
            "{line}"
        );
    }
    // the proxy's key cannot mint them
    let ids: Vec<&str> = quotes.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in &ids {
        wallet
            .cdk()
            .fetch_mint_quote(id, Some(ehash_method()))
            .await
            .unwrap();
    }
    let proxy_keys: HashMap<String, SecretKey> = ids
        .iter()
        .map(|id| (id.to_string(), locking_secret(&seed())))
        .collect();
    assert!(wallet
        .cdk()
        .batch_mint(&ids, SplitTarget::default(), None, Some(proxy_keys))
        .await
        .is_err());
    assert_eq!(wallet.balance().await.unwrap(), 0);
    // the miner's own wallet can
    let own = fresh_wallet(&stack.mint_url());
    for id in &ids {
        own.fetch_mint_quote(id, Some(ehash_method()))
            .await
            .unwrap();
    }
    let keys: HashMap<String, SecretKey> = ids
        .iter()
        .map(|id| (id.to_string(), miner_secret.clone()))
        .collect();
    let proofs = own
        .batch_mint(&ids, SplitTarget::default(), None, Some(keys))
        .await
        .unwrap();
    assert_eq!(
        proofs.iter().map(|p| u64::from(p.amount)).sum::<u64>(),
        total
    );
    tr.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chain_defer_mode_answers_the_miner_only_as_the_pool_does() {
    let mut stack = EhashStack::start("defer", |c| {
        if let Some(m) = c.mint.as_mut() {
            m.timeout_secs = 1;
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        &stack.mint_url(),
        dir.path(),
    ))
    .await;
    let mut miner = Sv1Client::start(tr.addr(), "rig").await;
    for _ in 0..3 {
        miner
            .mine_one("rig")
            .await
            .expect("accepted once its quote exists");
    }
    let quotes = recorded_quotes(&mut tr, 3).await;
    minted_quotes(&mut tr, 3).await;
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), total);

    // The mint goes down: the pool cannot get a quote, and the miner is told so.
    stack.stop_mint().await;
    let err = miner
        .mine_one("rig")
        .await
        .expect_err("no quote, no success");
    assert!(err[1].as_str().unwrap().contains("mint"), "{err}");
    tr.stop().await;
    stack.stop().await;
}

// ---------------------------------------------------------------- load

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` miners, each subscribed, authorized and holding a job.
async fn connect_miners(addr: SocketAddr, n: usize) -> Vec<Sv1Client> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        set.spawn(async move { (i, Sv1Client::start(addr, &format!("m{i}")).await) });
    }
    let mut miners: Vec<(usize, Sv1Client)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        miners.push(r.expect("miner task"));
    }
    miners.sort_by_key(|(i, _)| *i);
    miners.into_iter().map(|(_, m)| m).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sv1_connections_are_held() {
    let mut stack = Stack::start(NBITS_NEVER).await;
    let dir = tempfile::tempdir().unwrap();
    let tr = RunningTranslator::start(translator_config(
        &[stack.pool_addr()],
        "http://127.0.0.1:9",
        dir.path(),
    ))
    .await;
    // warm up allocator and tasks with one miner
    let mut first = Sv1Client::start(tr.addr(), "first").await;
    let before = rss_kib();
    let mut miners = connect_miners(tr.addr(), 1000).await;
    let after = rss_kib();
    println!(
        "1000 SV1 connections held: RSS +{} KiB, {:.1} KiB per connection \
         (translator session + its pool channel + the test client, one process, debug build)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 1000.0
    );
    assert_eq!(stack.pool.stats().channels_open, 1001);
    // every one of them can still mine: a sample across the range, and the first
    for i in [0usize, 1, 499, 500, 998, 999] {
        mine_and_check(&mut stack, &mut miners[i], &format!("m{i}")).await;
    }
    mine_and_check(&mut stack, &mut first, "first").await;
    drop(miners);
    tr.stop().await;
    stack.stop().await;
}

/// Benchmark (not a test): SV1 shares/s forwarded and p99 submit latency at
/// 1, 100 and 1000 miners. Run with
/// `cargo test --release -p hashpool-tests --test translator -- --ignored --nocapture bench_`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_sv1_forwarding() {
    for n in [1usize, 100, 1000] {
        // a duplicate-detection budget (shares_per_minute x 1200) that 5 s of load does not exhaust
        let stack = Stack::start_with(NBITS_NEVER, |c| c.shares_per_minute = 1000.0).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = translator_config(&[stack.pool_addr()], "http://127.0.0.1:9", dir.path());
        // ~1 hash per share: the figures measure the proxy, not the CPU miner
        config.nominal_hashrate = 0.1;
        let tr = RunningTranslator::start(config).await;
        let miners = connect_miners(tr.addr(), n).await;
        let duration = std::time::Duration::from_secs(5);
        let start = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, mut m) in miners.into_iter().enumerate() {
            set.spawn(async move {
                let mut latencies = vec![];
                let mut rejected = 0u64;
                let user = format!("m{i}");
                while start.elapsed() < duration {
                    let share = m.find_share();
                    let t = std::time::Instant::now();
                    match m.submit(&user, &share).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(_) => rejected += 1,
                    }
                }
                (latencies, rejected)
            });
        }
        let mut all = vec![];
        let mut rejected = 0;
        while let Some(r) = set.join_next().await {
            let (l, r) = r.unwrap();
            all.extend(l);
            rejected += r;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort();
        let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        println!(
            "{n:>5} miners: {:>8.0} shares/s accepted, p50 {:?}, p99 {:?} submit latency, {} rejected, pool accepted {}",
            all.len() as f64 / elapsed,
            p(0.5),
            p(0.99),
            rejected,
            stack.pool.stats().shares_accepted
        );
        tr.stop().await;
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_mode_shares_one_channel_and_pays_the_wallet() {
    let stack = EhashStack::start("annotate", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[stack.pool_addr()], &stack.mint_url(), dir.path());
    config.aggregate_channels = true;
    let mut tr = RunningTranslator::start(config).await;
    let mut a = Sv1Client::start(tr.addr(), "a").await;
    let mut b = Sv1Client::start(tr.addr(), "b").await;
    assert_ne!(a.extranonce1, b.extranonce1);
    assert_eq!(
        stack.pool().stats().channels_open,
        1,
        "one channel for both"
    );
    for _ in 0..3 {
        a.mine_one("a").await.expect("a's share accepted");
        b.mine_one("b").await.expect("b's share accepted");
    }
    // a username that is another key cannot be paid on the shared channel
    let mut keyed = Sv1Client::connect(tr.addr()).await;
    keyed.subscribe().await;
    let refused = keyed.authorize(&format!("{LOCKING_KEY}.bob")).await;
    assert!(refused.is_err(), "{refused:?}");
    let quotes = recorded_quotes(&mut tr, 6).await;
    assert!(quotes.iter().all(|(_, _, own)| *own));
    minted_quotes(&mut tr, 6).await;
    let total: u64 = quotes.iter().map(|(_, a, _)| a).sum();
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), total);
    drop((a, b, keyed));
    tr.stop().await;
    stack.stop().await;
}

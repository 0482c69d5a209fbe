//! The translator under test: its config on 127.0.0.1, a running instance
//! and an idle SV1 miner.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ehash::LockingKey;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use translator::quotes::{QuoteRecord, QuoteState, Totals};
use translator::{TranslatorConfig, TranslatorEvent, TranslatorHandle};

use crate::keys::{public_key, POOL_PUBLIC_KEY, TRANSLATOR_MNEMONIC, WAIT};
use crate::stack::{stop_role, wait_broadcast, EhashStack, Stack};

/// ~100 hashes per share at 6 shares/minute: CPU shares in milliseconds.
pub const TRANSLATOR_HASHRATE: f32 = 10.0;

/// A mint URL where nothing answers, for a translator whose wallet is not
/// under test.
pub const NO_MINT_URL: &str = "http://127.0.0.1:9";

/// A translator config on 127.0.0.1 port 0 with the test mnemonic.
pub fn translator_config(
    upstreams: &[SocketAddr],
    mint_url: &str,
    data_dir: &Path,
) -> TranslatorConfig {
    TranslatorConfig {
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
        max_miners: 10_000,
        max_miners_per_ip: 10_000,
        miner_idle_timeout_secs: 900,
        miner_write_timeout_secs: 30,
        keepalive_secs: 600,
        wait_for_pool: true,
        mint_batch_size: 50,
        mint_wait_ms: 0,
        mint_retry_secs: 1,
        mint_timeout_secs: 30,
        keep_quotes_hours: 24,
        stats: None,
    }
}

/// A translator started in this process, with its events.
pub struct RunningTranslator {
    pub handle: TranslatorHandle,
    events: broadcast::Receiver<TranslatorEvent>,
    shutdown: CancellationToken,
    /// The data dir it made for itself, removed when it is dropped.
    _data_dir: Option<tempfile::TempDir>,
}

impl RunningTranslator {
    pub async fn start(config: TranslatorConfig) -> Self {
        let shutdown = CancellationToken::new();
        let handle = translator::start(config, shutdown.clone())
            .await
            .expect("translator starts");
        let events = handle.subscribe_events();
        Self {
            handle,
            events,
            shutdown,
            _data_dir: None,
        }
    }

    /// The test config with the pool at `pool`, the mint at `mint_url` and
    /// its data in a fresh directory of its own.
    pub async fn with_pool(pool: SocketAddr, mint_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut tr = Self::start(translator_config(&[pool], mint_url, dir.path())).await;
        tr._data_dir = Some(dir);
        tr
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The wallet's own locking key.
    pub fn wallet_key(&self) -> LockingKey {
        self.handle.wallet().locking_key()
    }

    /// The events that arrived and were not read yet (those the channel
    /// dropped as lagging left out).
    pub fn take_events(&mut self) -> Vec<TranslatorEvent> {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut events = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(event) => events.push(event),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return events,
            }
        }
    }

    /// Waits for a translator event matching `pred`.
    pub async fn wait_event(
        &mut self,
        pred: impl FnMut(&TranslatorEvent) -> bool,
    ) -> TranslatorEvent {
        self.wait_event_within(WAIT * 2, pred).await
    }

    /// Waits at most `within` for a translator event matching `pred`.
    pub async fn wait_event_within(
        &mut self,
        within: Duration,
        pred: impl FnMut(&TranslatorEvent) -> bool,
    ) -> TranslatorEvent {
        wait_broadcast(&mut self.events, within, "translator events", pred).await
    }

    /// The quote store's totals once `count` quotes are minted and none is
    /// pending, asking the translator to mint every `poll`; or as they are
    /// after `within`.
    pub async fn minted_totals(&self, count: u64, within: Duration, poll: Duration) -> Totals {
        let store = self.handle.quotes().clone();
        let deadline = Instant::now() + within;
        loop {
            let t = store.totals().expect("quote totals");
            // Quotes may outnumber the shares the miner saw accepted (a
            // success lost with a killed pool).
            if (t.minted.0 >= count && t.pending.0 == 0) || Instant::now() > deadline {
                return t;
            }
            self.handle.mint_now();
            tokio::time::sleep(poll).await;
        }
    }

    pub async fn stop(self) {
        stop_role("translator", WAIT, &self.shutdown, self.handle.wait()).await;
    }
}

/// devnet-tp and the pool, and a translator on them whose wallet is not
/// under test.
pub async fn stack_and_translator(nbits: u32) -> (Stack, RunningTranslator) {
    let stack = Stack::start(nbits).await;
    let tr = RunningTranslator::with_pool(stack.pool_addr(), NO_MINT_URL).await;
    (stack, tr)
}

/// Stops a miner started with `shutdown`, waiting at most `within`; it must
/// have run without error.
pub async fn stop_miner(within: Duration, shutdown: &CancellationToken, miner: miner::Miner) {
    shutdown.cancel();
    tokio::time::timeout(within, miner.wait())
        .await
        .expect("miner stops")
        .expect("miner ran");
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

/// A quote record as the translator's recorder writes one, for a store a
/// test fills itself (a random share hash).
pub fn quote_record(
    quote_id: &str,
    amount: u64,
    key: LockingKey,
    state: QuoteState,
) -> QuoteRecord {
    QuoteRecord {
        quote_id: quote_id.into(),
        share_hash: hex::encode(rand::random::<[u8; 32]>()),
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

/// The `accepted` shares of the miners gone from `tr` are all quoted and
/// minted into its wallet, once each, within `within`: the wallet's
/// balance.
pub async fn every_accepted_share_minted_once(
    tr: &RunningTranslator,
    accepted: u64,
    within: Duration,
) -> u64 {
    // Quotes of shares accepted just before the miner left reach the wallet
    // through another channel with its key.
    let again = idle_miner(tr.handle.local_addr()).await;
    let totals = tr
        .minted_totals(accepted, within, Duration::from_millis(50))
        .await;
    assert_eq!(
        (
            totals.minted.0,
            totals.pending.0,
            totals.foreign.0,
            totals.failures
        ),
        (accepted, 0, 0, 0),
        "{accepted} shares accepted: {totals:?}"
    );
    assert_eq!(tr.handle.wallet().balance().await.unwrap(), totals.minted.1);
    drop(again);
    totals.minted.1
}

/// A CPU miner behind a translator whose upstream is `upstream` is paid
/// exactly its accepted shares.
pub async fn cpu_miner_is_paid_exactly_its_accepted_shares(
    stack: &EhashStack,
    upstream: SocketAddr,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = translator_config(&[upstream], &stack.mint_url(), dir.path());
    // ~20k hashes per share: a handful of shares per second from a debug build
    config.nominal_hashrate = 2000.0;
    let tr = RunningTranslator::start(config).await;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = miner::start(
        crate::load_miner::miner_config(tr.handle.local_addr(), miner::Mode::Cpu),
        shutdown.clone(),
    );
    let stats = running.stats();
    crate::load_miner::until_accepted(&stats, 5).await;
    stop_miner(WAIT, &shutdown, running).await;
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = stats.accepted();
    assert_eq!(stats.rejected(), 0);
    assert!(stats.hashes() >= accepted);
    assert_eq!(
        stack.pool().stats().shares_accepted,
        accepted,
        "the miner counted every share the pool accepted"
    );
    let total = every_accepted_share_minted_once(&tr, accepted, Duration::from_secs(30)).await;
    assert!(total >= accepted, "every share is worth something");
    println!(
        "miner: {accepted} shares accepted, {} hashes in {elapsed:.1} s ({}), wallet balance {total}",
        stats.hashes(),
        miner::format_hashrate(stats.hashes() as f64 / elapsed)
    );
    tr.stop().await;
}

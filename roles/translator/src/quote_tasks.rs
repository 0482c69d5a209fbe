//! The quote tasks: the recorder writes every ehash notification from the
//! pool to the quote store (durably, off the async workers) and then
//! acknowledges it to the pool, and the minter
//! mints the quotes locked to the wallet's key in NUT-29 batches whenever
//! the recorder wakes it, and on a retry timer; after minting, at most
//! once per [`UPKEEP_EVERY`] (less often once the wallet is so large that
//! reading it takes long), the wallet's proofs are consolidated once more
//! than [`CONSOLIDATE_ABOVE`] and its balance goes to the stats service.
//! The records of quotes done with are deleted once old ([`prune_quotes`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ehash::wire::str0255_truncated;
use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use stats_sv2::link;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::quotes::{FailureRecord, MinterLock, QuoteRecord, QuoteState, QuoteStore, UNKNOWN_KEY};
use crate::router::Notification;
use crate::upstream::ToRouter;
use crate::wallet::{EhashWallet, CONSOLIDATE_ABOVE};
use crate::TranslatorEvent;

/// How often the wallet key's quotes at the mint are compared with the store.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(600);
/// Quotes younger than this are left to their notifications.
const LOOKUP_GRACE_SECS: u64 = 120;
/// Pages (of up to 100 quotes) a look-up lists between minting rounds: a
/// busy key lists thousands of pages every interval, and minting must not
/// wait for them all.
const LOOKUP_PAGES_AT_ONCE: usize = 20;
/// The wallet's upkeep (its proofs read, consolidated when too many, its
/// balance published) runs at most this often while minting.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// And waits this many times as long as the last run took: a wallet of a
/// million proofs (one kept from before consolidation) takes a fair part of
/// a second to read, a core if read every second.
const UPKEEP_PAUSE_PER_RUN: u32 = 20;

/// Notifications recorded in one transaction at most.
const MAX_RECORD_BATCH: usize = 1024;

/// How often old records of quotes done with are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the quote recorder works with.
pub(crate) struct Recorder {
    pub store: Arc<QuoteStore>,
    pub wallet_key: LockingKey,
    pub mint_now: Arc<Notify>,
    /// Acknowledgements go to the pool through the router task.
    pub router: mpsc::UnboundedSender<ToRouter>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub stats: StatsPublisher,
}

/// Records every ehash notification from the pool (those waiting are
/// written in one durable transaction), acknowledges them to the pool, then
/// wakes the minter.
pub(crate) async fn record_quotes(
    recorder: Recorder,
    mut rx: mpsc::UnboundedReceiver<Notification>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        recorder.record(std::mem::take(&mut batch)).await;
    }
}

/// A notification as the store records it.
enum Entry {
    Quote { record: QuoteRecord, own: bool },
    Failure(FailureRecord),
}

impl Recorder {
    fn entry(&self, Notification { message, key }: Notification) -> Option<Entry> {
        Some(match message {
            EhashMessage::MintQuoteNotification(n) => {
                let own = key == Some(self.wallet_key);
                let record = QuoteRecord {
                    quote_id: n.quote_id.as_utf8_or_hex(),
                    share_hash: hex::encode(n.share_hash.to_array()),
                    amount: n.amount,
                    locking_key: key
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| UNKNOWN_KEY.into()),
                    keyset_id: n.keyset_id.as_utf8_or_hex(),
                    channel_id: n.channel_id,
                    sequence_number: n.sequence_number,
                    state: if own {
                        QuoteState::Pending
                    } else {
                        QuoteState::Foreign
                    },
                    created_at: roles_common::unix_secs(),
                    last_error: None,
                };
                Entry::Quote { record, own }
            }
            EhashMessage::MintQuoteFailure(f) => Entry::Failure(FailureRecord {
                share_hash: hex::encode(f.share_hash.to_array()),
                channel_id: f.channel_id,
                sequence_number: f.sequence_number,
                error_code: f.error_code.as_utf8_or_hex(),
                error_message: f.error_message.as_utf8_or_hex(),
                created_at: roles_common::unix_secs(),
            }),
            EhashMessage::MintQuoteAck(_) => {
                warn!("ignoring an ehash acknowledgement from the pool");
                return None;
            }
        })
    }

    /// Records a batch durably, then acknowledges it (per channel) and
    /// reports what was new. Nothing is acknowledged when the write failed:
    /// the pool sends those notifications again.
    async fn record(&self, batch: Vec<Notification>) {
        let mut acks: BTreeMap<u32, Vec<[u8; 32]>> = BTreeMap::new();
        for n in &batch {
            if let Some(hash) = n.message.share_hash() {
                acks.entry(n.message.channel_id()).or_default().push(hash);
            }
        }
        let (mut quotes, mut failures) = (vec![], vec![]);
        for n in batch {
            match self.entry(n) {
                Some(Entry::Quote { record, own }) => quotes.push((record, own)),
                Some(Entry::Failure(f)) => failures.push(f),
                None => {}
            }
        }
        // SQLite with synchronous=FULL waits for the disk: off the async workers.
        let written = {
            let store = self.store.clone();
            let records: Vec<QuoteRecord> = quotes.iter().map(|(r, _)| r.clone()).collect();
            let failures = failures.clone();
            tokio::task::spawn_blocking(move || store.record(&records, &failures)).await
        };
        let new = match written {
            Ok(Ok(new)) => new,
            Ok(Err(e)) => return warn!("cannot record {} quotes: {e}", quotes.len()),
            Err(e) => return warn!("quote recording task failed: {e}"),
        };
        for (channel_id, share_hashes) in acks {
            let _ = self.router.send(ToRouter::Ack {
                channel_id,
                share_hashes,
            });
        }
        let mut mint = false;
        for ((record, own), new) in quotes.into_iter().zip(new) {
            if new {
                mint |= own;
                self.recorded(record, own);
            } else {
                debug!(quote = record.quote_id, "quote already recorded");
            }
        }
        for failure in failures {
            self.failed(failure);
        }
        if mint {
            self.mint_now.notify_one();
        }
    }

    fn recorded(&self, record: QuoteRecord, own: bool) {
        // One a share: the minting rounds say at info what became ehash.
        debug!(
            quote = record.quote_id,
            amount = record.amount,
            channel_id = record.channel_id,
            key = record.locking_key,
            own,
            "ehash quote recorded"
        );
        self.stats.publish(stats_sv2::EhashQuoteOwned {
            quote_id: str0255_truncated(&record.quote_id),
            amount: record.amount,
            minted: false,
            timestamp: now_ms(),
        });
        let _ = self.events.send(TranslatorEvent::QuoteRecorded {
            quote_id: record.quote_id,
            amount: record.amount,
            own,
        });
    }

    fn failed(&self, record: FailureRecord) {
        warn!(
            channel_id = record.channel_id,
            sequence_number = record.sequence_number,
            code = record.error_code,
            message = record.error_message,
            "the pool could not get a quote for a share"
        );
        let _ = self.events.send(TranslatorEvent::QuoteFailed {
            share_hash: record.share_hash,
            error_code: record.error_code,
        });
    }
}

/// Deletes the records of quotes done with (minted, or a miner's own) and
/// of failures once older than `keep`, at start and every [`PRUNE_EVERY`]:
/// at a thousand shares a second they would fill ~25 GB a day.
pub(crate) async fn prune_quotes(
    store: Arc<QuoteStore>,
    keep: Duration,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let before = roles_common::unix_secs().saturating_sub(keep.as_secs());
        let (store, stop) = (store.clone(), shutdown.clone());
        let pruned =
            tokio::task::spawn_blocking(move || store.prune_all(before, || stop.is_cancelled()))
                .await;
        match pruned {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((quotes, failures))) => info!(
                quotes,
                failures,
                "deleted the records of quotes minted or of miners' own keys, and of failures, \
                 older than {} h",
                keep.as_secs() / 3600
            ),
            Ok(Err(e)) => warn!("cannot delete old quote records: {e}"),
            Err(e) => warn!("deleting old quote records failed: {e}"),
        }
    }
}

/// What the minting loop works with.
pub(crate) struct Minter {
    /// This process mints from the store's file while the loop runs.
    pub _lock: MinterLock,
    pub wallet: Arc<EhashWallet>,
    pub store: Arc<QuoteStore>,
    /// Most quotes per NUT-29 batch.
    pub batch: usize,
    /// How long to wait, once told of a quote, for more to join its batch.
    pub wait: Duration,
    pub retry: Duration,
    pub mint_now: Arc<Notify>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub stats: StatsPublisher,
}

/// Mints pending quotes whenever told to, and retries on a timer.
pub(crate) async fn mint_quotes(minter: Minter, shutdown: CancellationToken) {
    let mut events = minter.events.subscribe();
    // At start-up, after every pool reconnect (a gap in which notifications
    // may have gone missing) and every LOOKUP_INTERVAL, the mint's own list
    // of the wallet key's quotes is compared with the store, from where the
    // last comparison left off, kept in the store (quotes are paid as they
    // are created, so an entry once listed never changes into one to
    // record).
    let mut recovered = false;
    let mut look_up = LookUpDue::new(minter.retry, Instant::now());
    let mut lookup = tokio::time::interval(LOOKUP_INTERVAL);
    lookup.tick().await;
    loop {
        if !recovered {
            recovered = minter.recover().await;
        }
        if recovered && look_up.is_due(Instant::now()) {
            let created_before = look_up.created_before(roles_common::unix_secs());
            let end = minter.look_up_missing(created_before).await;
            look_up.finished(end, Instant::now());
        }
        if recovered {
            minter.mint_pending(&shutdown).await;
        }
        // A look-up that listed its pages for now goes on after the round.
        if recovered && look_up.is_due(Instant::now()) {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        let wake = next_round(
            &minter.mint_now,
            &mut events,
            &mut lookup,
            minter.retry,
            minter.wait,
            || minter.anything_to_mint(),
            &shutdown,
        );
        match wake.await {
            Round::Mint => {}
            Round::LookUpAndMint => look_up.again(Instant::now()),
            Round::Stop => return,
        }
    }
}

/// When the minter compares the wallet key's quotes at the mint with the
/// store: at start, at every reconnect and look-up interval, after a
/// minting round while a look-up has pages left, and after a look-up that
/// failed not before `retry` later (a mint that cannot answer it, one
/// whose clock is off say, would be asked before every round).
#[derive(Debug)]
struct LookUpDue {
    /// `None`: done until told again.
    at: Option<Instant>,
    retry: Duration,
    /// The creation time the look-up in progress lists quotes up to: kept
    /// until it is done, so a list that grows faster than it is read ends.
    listing_before: Option<u64>,
}

impl LookUpDue {
    fn new(retry: Duration, now: Instant) -> Self {
        Self {
            at: Some(now),
            retry,
            listing_before: None,
        }
    }

    /// Up to when the look-up lists, at `now_secs` (unix): quotes younger
    /// than [`LOOKUP_GRACE_SECS`] are left to their notifications, on their
    /// way.
    fn created_before(&mut self, now_secs: u64) -> u64 {
        *self
            .listing_before
            .get_or_insert(now_secs.saturating_sub(LOOKUP_GRACE_SECS))
    }

    fn is_due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| at <= now)
    }

    /// A look-up ended so.
    fn finished(&mut self, end: LookUpEnd, now: Instant) {
        self.at = match end {
            LookUpEnd::Done => None,
            LookUpEnd::More => Some(now),
            LookUpEnd::Failed => Some(now + self.retry),
        };
        if end != LookUpEnd::More {
            self.listing_before = None;
        }
    }

    /// A reconnect or the look-up interval: due now.
    fn again(&mut self, now: Instant) {
        self.at = Some(now);
    }
}

/// How a look-up (of at most [`LOOKUP_PAGES_AT_ONCE`] pages) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookUpEnd {
    /// Listed to the end.
    Done,
    /// Pages are left: it goes on after a minting round.
    More,
    /// The mint did not answer it.
    Failed,
}

/// What the minter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Mint,
    /// Compare the wallet key's quotes at the mint with the store, then mint.
    LookUpAndMint,
    /// Shutdown.
    Stop,
}

/// Waits for the minter's next round.
///
/// A round starts when the recorder tells of quotes (then `wait` later,
/// so the quotes recorded meanwhile join the batch), after a pool
/// reconnect or the look-up interval, or `retry` after the last round.
/// Quotes recorded while a round ran tell the minter once more, though
/// that round may have minted them: a wait begun with nothing to mint
/// would end before the next quote came, and its batch would be early
/// and small, so such a wake starts nothing.
async fn next_round(
    mint_now: &Notify,
    events: &mut broadcast::Receiver<TranslatorEvent>,
    lookup: &mut tokio::time::Interval,
    retry: Duration,
    wait: Duration,
    anything_to_mint: impl Fn() -> bool,
    shutdown: &CancellationToken,
) -> Round {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Round::Stop,
            _ = mint_now.notified() => {}
            _ = reconnected(events) => return Round::LookUpAndMint,
            _ = lookup.tick() => return Round::LookUpAndMint,
            _ = tokio::time::sleep(retry) => return Round::Mint,
        };
        if anything_to_mint() {
            tokio::select! {
                _ = shutdown.cancelled() => return Round::Stop,
                _ = tokio::time::sleep(wait) => return Round::Mint,
            }
        }
    }
}

/// Resolves when the translator connected to a pool again.
async fn reconnected(events: &mut broadcast::Receiver<TranslatorEvent>) {
    loop {
        match events.recv().await {
            Ok(TranslatorEvent::UpstreamConnected { .. }) => return,
            // Events missed while minting: the periodic look-up covers a
            // reconnect among them; one per lag would stall minting.
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Minter {
    /// Whether a quote waits to be minted or a batch to be settled (if the
    /// store cannot tell: yes).
    fn anything_to_mint(&self) -> bool {
        let key = self.wallet.locking_key().to_string();
        let pending = self.store.pending(&key, 1).map(|quotes| !quotes.is_empty());
        let open = self.store.batches().map(|batches| !batches.is_empty());
        pending.unwrap_or(true) || open.unwrap_or(true)
    }

    /// Restores what an interrupted run left (see [`EhashWallet::recover`]);
    /// whether it succeeded.
    async fn recover(&self) -> bool {
        match self.wallet.recover().await {
            Ok(()) => true,
            Err(e) => {
                if e.mint_unreachable() {
                    self.stats.link_status(link::MINT, false);
                }
                warn!("wallet recovery failed (mint unreachable?), retrying: {e}");
                false
            }
        }
    }

    /// Records the quotes of the wallet's key created before
    /// `created_before` that the mint holds and the store does not know,
    /// listed from where the last look-up left off, at most
    /// [`LOOKUP_PAGES_AT_ONCE`] pages.
    async fn look_up_missing(&self, created_before: u64) -> LookUpEnd {
        let looked_up =
            self.wallet
                .record_from_mint(&self.store, created_before, LOOKUP_PAGES_AT_ONCE);
        match looked_up.await {
            Ok(done) if done.finished => LookUpEnd::Done,
            Ok(_) => LookUpEnd::More,
            Err(e) => {
                warn!("cannot compare the wallet key's quotes with the mint's, retrying: {e}");
                LookUpEnd::Failed
            }
        }
    }

    /// Mints round after round while the last was full and every quote of
    /// it went through, until `shutdown` (a backlog must not hold the
    /// process; what is left is minted after the restart). Quotes recorded
    /// during a round that was not full wait for the next wake and its wait.
    async fn mint_pending(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let round = match self.wallet.mint_pending(&self.store, self.batch).await {
                Ok(round) => round,
                Err(e) => {
                    warn!("minting failed: {e}");
                    return;
                }
            };
            if let Some(up) = round.mint_reachable {
                self.stats.link_status(link::MINT, up);
            }
            let done = round.minted.len() + round.already_issued.len();
            if done > 0 {
                for (quote_id, amount) in round.minted.iter().chain(&round.already_issued) {
                    self.stats.publish(stats_sv2::EhashQuoteOwned {
                        quote_id: str0255_truncated(quote_id),
                        amount: *amount,
                        minted: true,
                        timestamp: now_ms(),
                    });
                }
                let _ = self.events.send(TranslatorEvent::Minted {
                    quotes: done,
                    amount: round.amount,
                });
            }
            if !round.full || round.left > 0 {
                return;
            }
        }
    }
}

/// At start and after minting (see [`after_minting`]), consolidates the
/// wallet's proofs and publishes its balance.
pub(crate) async fn keep_wallet(
    wallet: Arc<EhashWallet>,
    stats: StatsPublisher,
    events: broadcast::Receiver<TranslatorEvent>,
    shutdown: CancellationToken,
) {
    after_minting(events, shutdown, || upkeep(&wallet, &stats)).await
}

/// Runs `work` at start, then once minting rounds happened, [`UPKEEP_EVERY`]
/// after the first of them, or [`UPKEEP_PAUSE_PER_RUN`] times as long as
/// `work` last took if that is longer: the rounds of that while are all in
/// its one run.
async fn after_minting<Work: std::future::Future<Output = ()>>(
    mut events: broadcast::Receiver<TranslatorEvent>,
    shutdown: CancellationToken,
    mut work: impl FnMut() -> Work,
) {
    loop {
        let started = tokio::time::Instant::now();
        work().await;
        let took = started.elapsed();
        let pause = UPKEEP_EVERY.max(took * UPKEEP_PAUSE_PER_RUN);
        if pause > UPKEEP_EVERY {
            debug!("the wallet's upkeep took {took:?}: next in {pause:?} at the soonest");
        }
        let minted = async {
            loop {
                match events.recv().await {
                    Ok(TranslatorEvent::Minted { .. }) | Err(RecvError::Lagged(_)) => return true,
                    Ok(_) => {}
                    Err(RecvError::Closed) => return false,
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            minted = minted => if !minted { return },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        // Rounds until now are in the run that follows.
        while !matches!(
            events.try_recv(),
            Err(TryRecvError::Empty | TryRecvError::Closed)
        ) {}
    }
}

/// Consolidates the wallet's proofs once more than [`CONSOLIDATE_ABOVE`],
/// and publishes its balance to the stats service.
async fn upkeep(wallet: &EhashWallet, stats: &StatsPublisher) {
    match wallet.consolidate(CONSOLIDATE_ABOVE).await {
        Ok(holdings) => stats.publish(stats_sv2::WalletBalance {
            balance: holdings.balance,
            timestamp: now_ms(),
        }),
        Err(e) => warn!("cannot read the wallet's proofs: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn minted() -> TranslatorEvent {
        TranslatorEvent::Minted {
            quotes: 1,
            amount: 16,
        }
    }

    /// A minter between rounds, its clock paused: what `next_round` sees.
    struct Between {
        mint_now: Arc<Notify>,
        events: broadcast::Sender<TranslatorEvent>,
        heard: broadcast::Receiver<TranslatorEvent>,
        lookup: tokio::time::Interval,
        anything: Arc<std::sync::atomic::AtomicBool>,
        shutdown: CancellationToken,
    }

    #[test]
    fn a_failed_look_up_waits_for_the_retry_and_a_done_one_for_the_next_interval() {
        let start = Instant::now();
        let mut due = LookUpDue::new(RETRY, start);
        assert!(due.is_due(start), "at start");
        due.finished(LookUpEnd::Failed, start);
        assert!(!due.is_due(start + WAIT), "not before every round");
        assert!(due.is_due(start + RETRY));
        due.finished(LookUpEnd::Done, start + RETRY);
        assert!(!due.is_due(start + RETRY * 100), "done until told again");
        due.again(start + RETRY * 100);
        assert!(due.is_due(start + RETRY * 100));
    }

    #[test]
    fn a_look_up_with_pages_left_goes_on_after_the_round_up_to_where_it_began() {
        let start = Instant::now();
        let mut due = LookUpDue::new(RETRY, start);
        let before = due.created_before(10_000);
        assert_eq!(before, 10_000 - LOOKUP_GRACE_SECS);
        due.finished(LookUpEnd::More, start + WAIT);
        assert!(due.is_due(start + WAIT), "at once, after the round");
        assert_eq!(
            due.created_before(10_500),
            before,
            "a list that grows as it is read still ends"
        );
        due.finished(LookUpEnd::Done, start + WAIT * 2);
        due.again(start + RETRY * 100);
        assert_eq!(due.created_before(20_000), 20_000 - LOOKUP_GRACE_SECS);
        due.finished(LookUpEnd::Failed, start + RETRY * 100);
        assert_eq!(due.created_before(30_000), 30_000 - LOOKUP_GRACE_SECS);
    }

    /// Not a divisor of LOOKUP_INTERVAL: no retry at a look-up's moment.
    const RETRY: Duration = Duration::from_secs(35);
    const WAIT: Duration = Duration::from_millis(200);

    impl Between {
        async fn new() -> Self {
            let mut lookup = tokio::time::interval(LOOKUP_INTERVAL);
            lookup.tick().await;
            let (events, heard) = broadcast::channel(16);
            Self {
                mint_now: Arc::new(Notify::new()),
                events,
                heard,
                lookup,
                anything: Default::default(),
                shutdown: CancellationToken::new(),
            }
        }

        /// When the next round starts (from now), and what it does.
        async fn next_round(&mut self) -> (Duration, Round) {
            let start = tokio::time::Instant::now();
            let anything = &self.anything;
            let wake = next_round(
                &self.mint_now,
                &mut self.heard,
                &mut self.lookup,
                RETRY,
                WAIT,
                || anything.load(Ordering::SeqCst),
                &self.shutdown,
            )
            .await;
            (start.elapsed(), wake)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn told_of_quotes_the_minter_waits_for_company_then_mints() {
        let mut m = Between::new().await;
        m.anything.store(true, Ordering::SeqCst);
        m.mint_now.notify_one();
        assert_eq!(m.next_round().await, (WAIT, Round::Mint));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_for_quotes_a_round_already_minted_starts_no_wait() {
        let mut m = Between::new().await;
        // Left by quotes the last round minted: nothing is pending now.
        m.mint_now.notify_one();
        let later = Duration::from_secs(5);
        let (anything, told) = (m.anything.clone(), m.mint_now.clone());
        let mint_now = async move {
            tokio::time::sleep(later).await;
            anything.store(true, Ordering::SeqCst);
            told.notify_one();
        };
        let (_, (after, wake)) = tokio::join!(mint_now, m.next_round());
        assert_eq!(
            (after, wake),
            (later + WAIT, Round::Mint),
            "the wait starts at the quote recorded later"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn untold_the_minter_retries_and_looks_up_on_its_timers_and_reconnects() {
        let mut m = Between::new().await;
        let start = tokio::time::Instant::now();
        assert_eq!(m.next_round().await, (RETRY, Round::Mint));
        while m.next_round().await.1 == Round::Mint {}
        assert_eq!(
            start.elapsed(),
            LOOKUP_INTERVAL,
            "looked up on the interval"
        );

        let connected = TranslatorEvent::UpstreamConnected {
            address: "pool".into(),
            ehash: true,
        };
        m.events.send(connected).unwrap();
        assert_eq!(m.next_round().await, (Duration::ZERO, Round::LookUpAndMint));
        m.shutdown.cancel();
        assert_eq!(m.next_round().await.1, Round::Stop);
    }

    #[tokio::test(start_paused = true)]
    async fn the_upkeep_runs_at_start_and_once_for_the_rounds_of_a_second() {
        let (events, rx) = broadcast::channel(1024);
        let reads = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(after_minting(rx, shutdown.clone(), {
            let reads = reads.clone();
            move || {
                reads.fetch_add(1, Ordering::SeqCst);
                std::future::ready(())
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "read at start");

        // Fifty rounds within half a second: one read, after the last of them.
        for _ in 0..50 {
            events.send(minted()).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "no read before UPKEEP_EVERY"
        );
        tokio::time::sleep(UPKEEP_EVERY).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);

        // Other events read nothing; a later round is read again.
        let _ = events.send(TranslatorEvent::UpstreamLost("gone".into()));
        tokio::time::sleep(UPKEEP_EVERY * 3).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        events.send(minted()).unwrap();
        tokio::time::sleep(UPKEEP_EVERY * 2).await;
        assert_eq!(reads.load(Ordering::SeqCst), 3);

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_upkeep_that_takes_long_runs_less_often() {
        let (events, rx) = broadcast::channel(1024);
        let reads = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let read_takes = UPKEEP_EVERY / 4;
        let task = tokio::spawn(after_minting(rx, shutdown.clone(), {
            let reads = reads.clone();
            move || {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(read_takes)
            }
        }));
        tokio::time::sleep(read_takes * 2).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "read at start");

        events.send(minted()).unwrap();
        let pause = read_takes * UPKEEP_PAUSE_PER_RUN;
        tokio::time::sleep(pause - read_takes * 2).await;
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "not read again within {pause:?}, though minted"
        );
        tokio::time::sleep(read_takes * 4).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);

        shutdown.cancel();
        task.await.unwrap();
    }
}

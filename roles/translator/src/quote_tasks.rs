//! The quote tasks: the recorder writes every ehash notification from the
//! pool to the quote store (durably, off the async workers), and the minter
//! mints the quotes locked to the wallet's key in NUT-29 batches whenever
//! the recorder wakes it, and on a retry timer.

use std::sync::Arc;
use std::time::Duration;

use ehash::wire::str0255_truncated;
use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
use stats_sv2::link;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::quotes::{FailureRecord, QuoteRecord, QuoteState, QuoteStore};
use crate::router::Notification;
use crate::wallet::EhashWallet;
use crate::{now_secs, TranslatorEvent};

/// What the quote recorder works with.
pub(crate) struct Recorder {
    pub store: Arc<QuoteStore>,
    pub wallet_key: LockingKey,
    pub mint_now: Arc<Notify>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub stats: StatsPublisher,
}

/// Records every ehash notification from the pool, then wakes the minter.
pub(crate) async fn record_quotes(
    recorder: Recorder,
    mut rx: mpsc::UnboundedReceiver<Notification>,
) {
    while let Some(Notification { message, key }) = rx.recv().await {
        match message {
            EhashMessage::MintQuoteNotification(n) => {
                let own = key == Some(recorder.wallet_key);
                let record = QuoteRecord {
                    quote_id: n.quote_id.as_utf8_or_hex(),
                    share_hash: hex::encode(n.share_hash.to_array()),
                    amount: n.amount,
                    locking_key: key
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    keyset_id: n.keyset_id.as_utf8_or_hex(),
                    channel_id: n.channel_id,
                    sequence_number: n.sequence_number,
                    state: if own {
                        QuoteState::Pending
                    } else {
                        QuoteState::Foreign
                    },
                    created_at: now_secs(),
                    last_error: None,
                };
                recorder.record_quote(record, own).await;
            }
            EhashMessage::MintQuoteFailure(f) => {
                let record = FailureRecord {
                    share_hash: hex::encode(f.share_hash.to_array()),
                    channel_id: f.channel_id,
                    sequence_number: f.sequence_number,
                    error_code: f.error_code.as_utf8_or_hex(),
                    error_message: f.error_message.as_utf8_or_hex(),
                    created_at: now_secs(),
                };
                recorder.record_failure(record).await;
            }
        }
    }
}

impl Recorder {
    async fn record_quote(&self, record: QuoteRecord, own: bool) {
        // SQLite with synchronous=FULL waits for the disk: off the async workers.
        let inserted = {
            let (store, record) = (self.store.clone(), record.clone());
            tokio::task::spawn_blocking(move || store.insert(&record)).await
        };
        let quote_id = record.quote_id;
        match inserted {
            Ok(Ok(true)) => {
                info!(
                    quote = quote_id,
                    amount = record.amount,
                    channel_id = record.channel_id,
                    key = record.locking_key,
                    own,
                    "ehash quote recorded"
                );
                self.stats.publish(stats_sv2::EhashQuoteOwned {
                    quote_id: str0255_truncated(&quote_id),
                    amount: record.amount,
                    minted: false,
                    timestamp: now_ms(),
                });
                let _ = self.events.send(TranslatorEvent::QuoteRecorded {
                    quote_id,
                    amount: record.amount,
                    own,
                });
                if own {
                    self.mint_now.notify_one();
                }
            }
            Ok(Ok(false)) => debug!(quote = quote_id, "quote already recorded"),
            Ok(Err(e)) => warn!(quote = quote_id, "cannot record quote: {e}"),
            Err(e) => warn!(quote = quote_id, "quote recording task failed: {e}"),
        }
    }

    async fn record_failure(&self, record: FailureRecord) {
        warn!(
            channel_id = record.channel_id,
            sequence_number = record.sequence_number,
            code = record.error_code,
            message = record.error_message,
            "the pool could not get a quote for a share"
        );
        let failure = {
            let (store, record) = (self.store.clone(), record.clone());
            tokio::task::spawn_blocking(move || store.insert_failure(&record)).await
        };
        if let Ok(Err(e)) = failure {
            warn!("cannot record quote failure: {e}");
        }
        let _ = self.events.send(TranslatorEvent::QuoteFailed {
            share_hash: record.share_hash,
            error_code: record.error_code,
        });
    }
}

/// What the minting loop works with.
pub(crate) struct Minter {
    pub wallet: Arc<EhashWallet>,
    pub store: Arc<QuoteStore>,
    /// Most quotes per NUT-29 batch.
    pub batch: usize,
    pub retry: Duration,
    pub mint_now: Arc<Notify>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub stats: StatsPublisher,
}

/// Mints pending quotes whenever told to, and retries on a timer.
pub(crate) async fn mint_quotes(minter: Minter, shutdown: CancellationToken) {
    publish_balance(&minter.wallet, &minter.stats).await;
    let mut recovered = false;
    loop {
        if !recovered {
            recovered = minter.recover().await;
        }
        if recovered {
            minter.mint_pending().await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = minter.mint_now.notified() => {}
            _ = tokio::time::sleep(minter.retry) => {}
        }
    }
}

impl Minter {
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

    /// Mints batch after batch while every quote of the last one went through.
    async fn mint_pending(&self) {
        loop {
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
                publish_balance(&self.wallet, &self.stats).await;
                let _ = self.events.send(TranslatorEvent::Minted {
                    quotes: done,
                    amount: round.amount,
                });
            }
            if done == 0 || round.left > 0 {
                return;
            }
        }
    }
}

/// The wallet's balance to the stats service (it reads the local database only).
async fn publish_balance(wallet: &EhashWallet, stats: &StatsPublisher) {
    match wallet.balance().await {
        Ok(balance) => stats.publish(stats_sv2::WalletBalance {
            balance,
            timestamp: now_ms(),
        }),
        Err(e) => warn!("cannot read the wallet balance: {e}"),
    }
}

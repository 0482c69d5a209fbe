//! The one writer of quotes, with group commit.
//!
//! Every checked share goes to one task. It takes all the shares waiting
//! when it is free (at most [`MAX_GROUP`]) and writes them in one database
//! transaction, so one disk sync covers the whole group: under light load a
//! group is a single share and nothing waits for company; under heavy load
//! the sync, the dearest part of a quote on a file database, is shared.
//!
//! For each share, inside the transaction: its quote is found (by the share
//! index, or by its request `ehash:<share hash>` for a quote an older mint
//! created and stopped before indexing) or created; a new quote is indexed
//! by share hash and by locking key and gets its audit entry; the quote is
//! paid with the share hash as payment id, which cdk records once. Quote,
//! indexes, audit entry and payment commit together or not at all, so a
//! share is quoted and paid exactly once whatever crashes when. An answer
//! is sent only after the commit: a quote id the pool hears is durable.
//!
//! A group whose transaction fails is written again one share at a time,
//! so a share that cannot be written fails only itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cdk::mint::Mint;
use cdk::nuts::{CurrencyUnit, PaymentMethod, PublicKey};
use cdk_common::database::mint::{Acquired, DynMintTransaction};
use cdk_common::mint::MintQuote;
use cdk_common::payment::{PaymentIdentifier, WaitPaymentResponse};
use cdk_common::{Amount, QuoteId};
use ehash::LockingKey;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::quote::Rejection;
use crate::service::{mint_error, KV_NAMESPACE};
use crate::{audit, key_index};

const KV_SHARES: &str = "shares";

/// Most shares written in one transaction. Bounds how long the writer holds
/// the database (and so how long the audit summary or a wallet's mint
/// waits), while still sharing one sync among thousands of quotes a second.
pub const MAX_GROUP: usize = 512;

/// Shares waiting for the writer; callers wait beyond this.
const QUEUE: usize = 4 * MAX_GROUP;

/// A checked share, ready to be written: everything that costs CPU but no
/// database (the key, the audit entry's JSON) is done by the caller, in
/// parallel, before the share reaches the one writer.
#[derive(Debug, Clone)]
pub struct ShareToQuote {
    pub share_hex: String,
    pub amount: u64,
    pub pubkey: PublicKey,
    pub locking_key: LockingKey,
    pub audit_entry: Vec<u8>,
}

struct Job {
    share: ShareToQuote,
    answer: oneshot::Sender<Result<QuoteId, Rejection>>,
}

/// The handle callers write quotes through.
pub struct QuoteWriter {
    jobs: mpsc::Sender<Job>,
    writing: Arc<Mutex<()>>,
    #[cfg(test)]
    groups: Arc<AtomicU64>,
    mint: Arc<Mint>,
}

impl QuoteWriter {
    /// Starts the writer task; it ends when the handle is dropped.
    pub fn start(mint: Arc<Mint>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writing = Arc::new(Mutex::new(()));
        let groups = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            mint: mint.clone(),
            unit: CurrencyUnit::custom(ehash::constants::UNIT),
            method: PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.to_string()),
            writing: writing.clone(),
            groups: groups.clone(),
        };
        tokio::spawn(writer.run(queue));
        Self {
            jobs,
            writing,
            #[cfg(test)]
            groups,
            mint,
        }
    }

    /// The share's quote, created and paid once; answered when durable.
    pub async fn quote(&self, share: ShareToQuote) -> Result<QuoteId, Rejection> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { share, answer })
            .await
            .map_err(|_| mint_error("the quote writer has stopped"))?;
        answered
            .await
            .map_err(|_| mint_error("the quote writer dropped a share"))?
    }

    /// The quote already written for a share, if any.
    pub async fn indexed_quote(&self, share_hex: &str) -> Result<Option<QuoteId>, Rejection> {
        let value = self
            .mint
            .localstore()
            .kv_read(KV_NAMESPACE, KV_SHARES, share_hex)
            .await
            .map_err(mint_error)?;
        value.map(|bytes| parse_quote_id(&bytes)).transpose()
    }

    /// How many groups the writer has written since it started.
    #[cfg(test)]
    pub fn groups_written(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Runs `work` between two groups, while no quote is being written.
    pub async fn while_idle<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let _idle = self.writing.lock().await;
        work.await
    }
}

fn parse_quote_id(bytes: &[u8]) -> Result<QuoteId, Rejection> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<QuoteId>().ok())
        .ok_or_else(|| mint_error("corrupt share index entry"))
}

struct Writer {
    mint: Arc<Mint>,
    unit: CurrencyUnit,
    method: PaymentMethod,
    writing: Arc<Mutex<()>>,
    groups: Arc<AtomicU64>,
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let writer = Arc::new(self);
        let runtime = tokio::runtime::Handle::current();
        let mut shares = 0u64;
        let mut group = Vec::new();
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            let group = std::mem::take(&mut group);
            let _writing = writer.writing.lock().await;
            shares += group.len() as u64;
            // cdk-sqlite runs each statement, and the disk sync of each
            // commit, on the thread that awaits it. On a runtime worker that
            // would stall the tasks queued there, the callers of the last
            // group among them, so the next group would find no company.
            let (this, runtime) = (writer.clone(), runtime.clone());
            let written =
                tokio::task::spawn_blocking(move || runtime.block_on(this.write_group(group)));
            if let Err(e) = written.await {
                tracing::error!("the quote writer failed on a group: {e}");
            }
            writer.groups.fetch_add(1, Ordering::Relaxed);
        }
        let groups = writer.groups.load(Ordering::Relaxed);
        tracing::info!("quote writer stopped: {shares} quotes written in {groups} transactions");
    }

    async fn write_group(&self, group: Vec<Job>) {
        let shares: Vec<&ShareToQuote> = group.iter().map(|job| &job.share).collect();
        match self.commit(&shares).await {
            Ok(quote_ids) => {
                for (job, quote_id) in group.into_iter().zip(quote_ids) {
                    let _ = job.answer.send(Ok(quote_id));
                }
            }
            Err(rejection) if group.len() > 1 => {
                tracing::warn!(
                    shares = group.len(),
                    "a group of quotes failed ({rejection}); writing its shares one at a time"
                );
                for job in group {
                    let answer = self
                        .commit(&[&job.share])
                        .await
                        .map(|mut ids| ids.remove(0));
                    let _ = job.answer.send(answer);
                }
            }
            Err(rejection) => {
                for job in group {
                    let _ = job.answer.send(Err(rejection.clone()));
                }
            }
        }
    }

    /// Quotes and pays every share in one transaction; the quote ids in
    /// the order of `shares`.
    async fn commit(&self, shares: &[&ShareToQuote]) -> Result<Vec<QuoteId>, Rejection> {
        let mut tx = self
            .mint
            .localstore()
            .begin_transaction()
            .await
            .map_err(mint_error)?;
        let mut quote_ids = Vec::with_capacity(shares.len());
        let mut newly_paid = Vec::new();
        for share in shares {
            match self.quote_and_pay(&mut tx, share).await {
                Ok((quote, paid_now)) => {
                    quote_ids.push(quote.id.clone());
                    if paid_now {
                        newly_paid.push(quote.inner());
                    }
                }
                Err(rejection) => {
                    if let Err(e) = tx.rollback().await {
                        tracing::warn!("rolling back a group of quotes: {e}");
                    }
                    return Err(rejection);
                }
            }
        }
        tx.commit().await.map_err(mint_error)?;
        // Wallets subscribed over websockets hear of payments once durable.
        let pubsub = self.mint.pubsub_manager();
        for quote in &newly_paid {
            pubsub.mint_quote_payment(quote, quote.amount_paid());
        }
        Ok(quote_ids)
    }

    /// The share's quote, found or created, then paid. `true` when this
    /// call recorded the payment.
    async fn quote_and_pay(
        &self,
        tx: &mut DynMintTransaction,
        share: &ShareToQuote,
    ) -> Result<(Acquired<MintQuote>, bool), Rejection> {
        let mut quote = match self.find(tx, share).await? {
            Some(quote) => quote,
            None => self.create(tx, share).await?,
        };
        let payment = WaitPaymentResponse {
            payment_identifier: PaymentIdentifier::QuoteId(quote.id.clone()),
            payment_amount: Amount::new(share.amount, self.unit.clone()),
            payment_id: share.share_hex.clone(),
        };
        let paid_now = self
            .mint
            .pay_mint_quote(tx, &mut quote, payment)
            .await
            .map_err(mint_error)?;
        if quote.amount_paid().value() != share.amount {
            return Err(mint_error(format!(
                "quote {} shows {} paid, expected {}",
                quote.id,
                quote.amount_paid().value(),
                share.amount
            )));
        }
        Ok((quote, paid_now))
    }

    async fn find(
        &self,
        tx: &mut DynMintTransaction,
        share: &ShareToQuote,
    ) -> Result<Option<Acquired<MintQuote>>, Rejection> {
        let indexed = tx
            .kv_read(KV_NAMESPACE, KV_SHARES, &share.share_hex)
            .await
            .map_err(mint_error)?;
        if let Some(bytes) = indexed {
            let quote_id = parse_quote_id(&bytes)?;
            let quote = tx.get_mint_quote(&quote_id).await.map_err(mint_error)?;
            return quote
                .map(Some)
                .ok_or_else(|| mint_error(format!("indexed quote {quote_id} vanished")));
        }
        let unindexed = tx
            .get_mint_quote_by_request(&request(share))
            .await
            .map_err(mint_error)?;
        if let Some(quote) = &unindexed {
            self.index(tx, share, &quote.id).await?;
        }
        Ok(unindexed)
    }

    async fn create(
        &self,
        tx: &mut DynMintTransaction,
        share: &ShareToQuote,
    ) -> Result<Acquired<MintQuote>, Rejection> {
        let quote_id = QuoteId::new();
        let now = roles_common::unix_secs();
        let zero = Amount::new(0, self.unit.clone());
        let quote = MintQuote::new(
            Some(quote_id.clone()),
            request(share),
            self.unit.clone(),
            Some(Amount::new(share.amount, self.unit.clone())),
            0,
            PaymentIdentifier::QuoteId(quote_id.clone()),
            Some(share.pubkey),
            zero.clone(),
            zero,
            self.method.clone(),
            now,
            now,
            vec![],
            vec![],
            Some(serde_json::json!({ "share_hash": share.share_hex })),
        );
        let quote = tx.add_mint_quote(quote).await.map_err(mint_error)?;
        self.index(tx, share, &quote_id).await?;
        Ok(quote)
    }

    /// Indexes a quote by share hash and by locking key and appends its
    /// audit entry: a quote that can be paid is always listed for its key
    /// and in the audit.
    async fn index(
        &self,
        tx: &mut DynMintTransaction,
        share: &ShareToQuote,
        quote_id: &QuoteId,
    ) -> Result<(), Rejection> {
        tx.kv_write(
            KV_NAMESPACE,
            KV_SHARES,
            &share.share_hex,
            quote_id.to_string().as_bytes(),
        )
        .await
        .map_err(mint_error)?;
        key_index::append(tx, &share.locking_key, quote_id)
            .await
            .map_err(mint_error)?;
        audit::append(tx, &share.audit_entry)
            .await
            .map_err(mint_error)?;
        Ok(())
    }
}

/// The request cdk stores for an ehash quote; unique per quote.
fn request(share: &ShareToQuote) -> String {
    format!("ehash:{}", share.share_hex)
}

#[cfg(test)]
mod tests;

//! Quote creation and stats against the cdk mint: what the link does with
//! an authenticated pool's requests.

use std::sync::Arc;

use cdk::mint::Mint;
use cdk::nuts::{CurrencyUnit, MintQuoteCustomRequest, PaymentMethod, PublicKey};
use cdk_common::mint_quote::MintQuoteRequest;
use cdk_common::payment::{PaymentIdentifier, WaitPaymentResponse};
use cdk_common::{Amount, MintQuoteState, QuoteId};
use ehash::wire::{str0255, str0255_truncated};
use ehash::UnitBits;
use mint_quote_sv2::{
    error_code, MintQuoteErrorOwned, MintQuoteMessage, MintQuoteRequestOwned,
    MintQuoteResponseOwned, MintStatsResponse,
};
use stratum_core::bitcoin::Script;
use tokio::sync::Mutex;

use crate::backend::EhashBackend;
use crate::chain::{Chain, HeaderOnTip};
use crate::quote::{check_request, CheckedShare, Rejection};
use crate::{audit, key_index};

/// KV namespace of the mint's own indexes (share hash -> quote id here,
/// locking key -> quote ids in `key_index`), in the mint's database.
pub(crate) const KV_NAMESPACE: &str = "ehash";
const KV_SHARES: &str = "shares";

pub struct QuoteService {
    mint: Arc<Mint>,
    backend: Arc<EhashBackend>,
    unit: CurrencyUnit,
    method: PaymentMethod,
    unit_bits: UnitBits,
    /// The mint's chain view; `None` on a devnet mint without `[chain]`.
    chain: Option<Arc<Chain>>,
    /// Quotes are written one at a time. SQLite has one writer anyway, and
    /// cdk-sqlite waits for the write lock (up to 10 s) blocking the thread
    /// it runs on: several quotes waiting at once could block every worker
    /// thread, so the holder of the lock could not finish and the mint would
    /// stall until the waits fail. Waiting here is async. It also quotes a
    /// share that arrives twice at the same time once.
    writes: Mutex<()>,
}

impl QuoteService {
    pub fn new(
        mint: Arc<Mint>,
        backend: Arc<EhashBackend>,
        unit_bits: UnitBits,
        chain: Option<Arc<Chain>>,
    ) -> Self {
        Self {
            mint,
            backend,
            unit: CurrencyUnit::custom(ehash::constants::UNIT),
            method: PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.to_string()),
            unit_bits,
            chain,
            writes: Mutex::new(()),
        }
    }

    pub fn unit_bits(&self) -> UnitBits {
        self.unit_bits
    }

    /// Answers a `MintQuoteRequest`: a `MintQuoteResponse` (for a new or an
    /// already quoted share) or a `MintQuoteError`.
    /// `pool_script` is the reward script of the pool that asks.
    pub async fn handle_quote(
        &self,
        request: MintQuoteRequestOwned,
        pool_script: &Script,
    ) -> MintQuoteMessage {
        let share_hash = request.share_hash.clone();
        let result = match check_request(&request, self.unit_bits, pool_script) {
            Ok(share) => self.quote_fresh_share(&share).await,
            Err(rejection) => Err(rejection),
        };
        match result {
            Ok((quote_id, keyset_id)) => {
                MintQuoteMessage::MintQuoteResponse(MintQuoteResponseOwned {
                    share_hash,
                    quote_id: str0255("quote_id", &quote_id).expect("quote ids are short"),
                    keyset_id: str0255("keyset_id", &keyset_id).expect("keyset ids are short"),
                })
            }
            Err(rejection) => {
                tracing::info!(
                    share_hash = %hex::encode(share_hash.as_bytes()),
                    "no quote: {rejection}"
                );
                MintQuoteMessage::MintQuoteError(MintQuoteErrorOwned {
                    share_hash,
                    error_code: str0255_truncated(rejection.code),
                    error_message: str0255_truncated(&rejection.message),
                })
            }
        }
    }

    /// Quotes a checked share if it builds on a fresh chain tip. A share
    /// quoted before (a replay) gets its quote whatever the chain did since.
    async fn quote_fresh_share(&self, share: &CheckedShare) -> Result<(String, String), Rejection> {
        if let Some(chain) = &self.chain {
            let on_tip = HeaderOnTip::from_header(&share.header);
            let now = u32::try_from(roles_common::unix_secs()).unwrap_or(u32::MAX);
            if let Err(rejection) = chain.check(&on_tip, now).await {
                let share_hex = hex::encode(share.share_hash);
                if self.indexed_quote(&share_hex).await?.is_none() {
                    return Err(rejection);
                }
            }
        }
        self.quote_share(share).await
    }

    /// Runs `work` while no quote is being written.
    pub async fn while_no_quote_is_written<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let _one_writer = self.writes.lock().await;
        work.await
    }

    /// Creates (once) and pays the quote of a checked share; returns its quote
    /// id and the active keyset id.
    ///
    /// Order: create the quote, index it (by share hash and by locking key),
    /// then pay it. A crash between creating and indexing leaves an unpaid
    /// quote nobody can mint; cdk allows one quote per request
    /// (`ehash:<share hash>`), so the replayed request finds it, indexes and
    /// pays it. A crash after indexing finds the index and pays (payment id
    /// = share hash, which cdk records once). So a share is never paid twice.
    async fn quote_share(&self, share: &CheckedShare) -> Result<(String, String), Rejection> {
        let share_hex = hex::encode(share.share_hash);
        let _one_writer = self.writes.lock().await;

        let quote_id = match self.indexed_quote(&share_hex).await? {
            Some(quote_id) => {
                tracing::debug!(share_hash = %share_hex, %quote_id, "share already quoted");
                quote_id
            }
            None => {
                let quote_id = match self.unindexed_quote(&share_hex).await? {
                    Some(quote_id) => quote_id,
                    None => self.create_quote(share).await?,
                };
                self.index_quote(&share_hex, share, &quote_id).await?;
                quote_id
            }
        };
        self.pay(&quote_id, share.amount, &share_hex).await?;
        Ok((quote_id.to_string(), self.active_keyset()?))
    }

    /// The quote a run that crashed before indexing created for the share.
    async fn unindexed_quote(&self, share_hex: &str) -> Result<Option<QuoteId>, Rejection> {
        let quote = self
            .mint
            .localstore()
            .get_mint_quote_by_request(&format!("ehash:{share_hex}"))
            .await
            .map_err(mint_error)?;
        Ok(quote.map(|q| q.id))
    }

    async fn indexed_quote(&self, share_hex: &str) -> Result<Option<QuoteId>, Rejection> {
        let value = self
            .mint
            .localstore()
            .kv_read(KV_NAMESPACE, KV_SHARES, share_hex)
            .await
            .map_err(mint_error)?;
        value
            .map(|bytes| {
                String::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<QuoteId>().ok())
                    .ok_or_else(|| mint_error("corrupt share index entry"))
            })
            .transpose()
    }

    /// Indexes a new quote by share hash and by locking key and appends
    /// its audit entry, in one transaction: a quote that can be paid is
    /// always listed for its key and in the audit.
    async fn index_quote(
        &self,
        share_hex: &str,
        share: &CheckedShare,
        quote_id: &QuoteId,
    ) -> Result<(), Rejection> {
        let db = self.mint.localstore();
        let mut tx = db.begin_transaction().await.map_err(mint_error)?;
        tx.kv_write(
            KV_NAMESPACE,
            KV_SHARES,
            share_hex,
            quote_id.to_string().as_bytes(),
        )
        .await
        .map_err(mint_error)?;
        key_index::append(&mut tx, &share.locking_key, quote_id)
            .await
            .map_err(mint_error)?;
        audit::append(&mut tx, &share.audit_entry(roles_common::unix_secs()))
            .await
            .map_err(mint_error)?;
        tx.commit().await.map_err(mint_error)
    }

    async fn create_quote(&self, share: &CheckedShare) -> Result<QuoteId, Rejection> {
        let pubkey = PublicKey::from_slice(&share.locking_key.to_bytes())
            .map_err(|e| Rejection::new(error_code::INVALID_LOCKING_KEY, e.to_string()))?;
        let authorization = self.backend.authorize(share, pubkey);
        let request = MintQuoteRequest::Custom {
            method: self.method.clone(),
            request: MintQuoteCustomRequest {
                amount: Some(share.amount.into()),
                unit: self.unit.clone(),
                description: None,
                pubkey: Some(pubkey),
                extra: authorization.extra(share),
            },
        };
        let response = self
            .mint
            .get_mint_quote(request)
            .await
            .map_err(mint_error)?;
        Ok(response.quote().clone())
    }

    async fn pay(&self, quote_id: &QuoteId, amount: u64, share_hex: &str) -> Result<(), Rejection> {
        self.mint
            .pay_mint_quote_for_request_id(WaitPaymentResponse {
                payment_identifier: PaymentIdentifier::QuoteId(quote_id.clone()),
                payment_amount: Amount::new(amount, self.unit.clone()),
                payment_id: share_hex.to_string(),
            })
            .await
            .map_err(mint_error)?;
        // cdk answers Ok even when no quote matched: check it is paid.
        let quote = self
            .mint
            .localstore()
            .get_mint_quote(quote_id)
            .await
            .map_err(mint_error)?
            .ok_or_else(|| mint_error(format!("quote {quote_id} vanished")))?;
        if quote.amount_paid().value() != amount {
            return Err(mint_error(format!(
                "quote {quote_id} shows {} paid, expected {amount}",
                quote.amount_paid().value()
            )));
        }
        Ok(())
    }

    fn active_keyset(&self) -> Result<String, Rejection> {
        self.mint
            .get_active_keysets()
            .get(&self.unit)
            .map(|id| id.to_string())
            .ok_or_else(|| mint_error("no active keyset for unit hash"))
    }

    /// Totals of the ehash quotes in the mint's database.
    pub async fn stats(&self, request_id: u32) -> Result<MintStatsResponse, String> {
        let quotes = self.mint.mint_quotes().await.map_err(|e| e.to_string())?;
        let mut stats = MintStatsResponse {
            request_id,
            quotes_unpaid: 0,
            quotes_paid: 0,
            quotes_issued: 0,
            ehash_quoted: 0,
            ehash_issued: 0,
        };
        for quote in quotes.iter().filter(|q| q.payment_method == self.method) {
            match quote.state() {
                MintQuoteState::Unpaid => stats.quotes_unpaid += 1,
                MintQuoteState::Paid => stats.quotes_paid += 1,
                MintQuoteState::Issued => stats.quotes_issued += 1,
            }
            stats.ehash_quoted = stats
                .ehash_quoted
                .saturating_add(quote.amount_paid().value());
            stats.ehash_issued = stats
                .ehash_issued
                .saturating_add(quote.amount_issued().value());
        }
        Ok(stats)
    }
}

fn mint_error(e: impl std::fmt::Display) -> Rejection {
    tracing::error!("mint error while quoting: {e}");
    Rejection::new(error_code::MINT_ERROR, e.to_string())
}

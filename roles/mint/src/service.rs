//! What the link does with an authenticated pool's requests: a quote
//! request is checked here and written by the `quote_writer`; stats are
//! counted from the cdk mint's quotes.

use std::ops::RangeInclusive;
use std::sync::Arc;

use cdk::mint::Mint;
use cdk::nuts::{CurrencyUnit, PublicKey};
use ehash::wire::{str0255, str0255_truncated};
use ehash::UnitBits;
use mint_quote_sv2::{
    error_code, MintQuoteErrorOwned, MintQuoteMessage, MintQuoteRequestOwned,
    MintQuoteResponseOwned, MintStatsResponse,
};
use stratum_core::bitcoin::ScriptBuf;

use crate::audit;
use crate::chain::{Chain, HeaderOnTip, Pools};
use crate::quote::{check_request, CheckedShare, KnownKeys, Rejection};
use crate::quote_totals::{QuoteTotals, TotalsReader};
use crate::quote_writer::{QuoteWriter, ShareToQuote, WriterStopped};
use crate::quoting::{QuotingMark, QuotingNow, Turn};

/// KV namespace of the mint's own indexes (share hash -> quote id in
/// `quote_writer`, locking key -> quote ids in `key_index`), in the mint's
/// database.
pub(crate) const KV_NAMESPACE: &str = "ehash";

/// Every ehash quote in the database, oldest first: for indexes filled
/// once, before the mint serves, with the quotes made before they existed.
pub(crate) async fn ehash_quotes_oldest_first(
    mint: &Mint,
) -> Result<Vec<cdk_common::mint::MintQuote>, cdk_common::database::Error> {
    let method = cdk::nuts::PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into());
    let mut quotes: Vec<_> = mint
        .mint_quotes()
        .await
        .map_err(|e| cdk_common::database::Error::Internal(e.to_string()))?
        .into_iter()
        .filter(|q| q.payment_method == method)
        .collect();
    quotes.sort_by_key(|q| (q.created_time, q.id.to_string()));
    Ok(quotes)
}

/// The allowed pool a request comes from.
#[derive(Debug, Clone)]
pub struct AskingPool {
    pub reward_script: ScriptBuf,
    /// Its bit in the chain view's record of whose shares were quoted.
    pub bit: Pools,
}

pub struct QuoteService {
    mint: Arc<Mint>,
    writer: QuoteWriter,
    unit: CurrencyUnit,
    unit_bits: UnitBits,
    /// The mint's NUT-04 limits on one quote's amount.
    amounts: RangeInclusive<u64>,
    /// The mint's chain view; `None` on a devnet mint without `[chain]`.
    chain: Option<Arc<Chain>>,
    keys: KnownKeys,
    totals: tokio::sync::Mutex<QuoteTotals>,
    totals_reader: TotalsReader,
    /// Shares being quoted now: a copy asked meanwhile (the pool asks again
    /// what is unanswered) waits for the first, so it is never refused for
    /// what changed since the first was checked while that one's quote is
    /// being written.
    quoting: Arc<QuotingNow>,
}

impl QuoteService {
    /// Starts the quote writer (call within the runtime); it stops once the
    /// service is dropped.
    pub(crate) fn new(
        mint: Arc<Mint>,
        unit_bits: UnitBits,
        amounts: RangeInclusive<u64>,
        chain: Option<Arc<Chain>>,
        totals_reader: TotalsReader,
    ) -> (Self, WriterStopped) {
        let (writer, writer_stopped) = QuoteWriter::start(mint.clone());
        let service = Self {
            writer,
            mint,
            unit: CurrencyUnit::custom(ehash::constants::UNIT),
            unit_bits,
            amounts,
            chain,
            keys: KnownKeys::default(),
            totals: Default::default(),
            totals_reader,
            quoting: Arc::default(),
        };
        (service, writer_stopped)
    }

    pub fn unit_bits(&self) -> UnitBits {
        self.unit_bits
    }

    /// Answers a `MintQuoteRequest` of `pool`: a `MintQuoteResponse` (for
    /// a new or an already quoted share) or a `MintQuoteError`.
    pub async fn handle_quote(
        &self,
        request: MintQuoteRequestOwned,
        pool: &AskingPool,
    ) -> MintQuoteMessage {
        let share_hash = request.share_hash.clone();
        let result = loop {
            match QuotingNow::start(&self.quoting, request.share_hash()) {
                Turn::Mine(quoting) => break self.quote(&request, pool, quoting).await,
                // Then its quote is found, or it is checked anew.
                Turn::Wait(mut done) => while done.changed().await.is_ok() {},
            }
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

    /// A new share's quote, or the quote of a share quoted before.
    async fn quote(
        &self,
        request: &MintQuoteRequestOwned,
        pool: &AskingPool,
        quoting: QuotingMark,
    ) -> Result<(String, String), Rejection> {
        let result = match check_request(request, self.unit_bits, &pool.reward_script, &self.keys) {
            Ok(share) => self.quote_fresh_share(&share, pool.bit, quoting).await,
            Err(rejection) => Err(rejection),
        };
        match result {
            Err(rejection) => self.quoted_before(request, rejection, pool.bit).await,
            quoted => quoted,
        }
    }

    /// Quotes a checked share of `pool` if it builds on a fresh chain tip;
    /// its mark goes with it to the writer, which drops it once the quote
    /// is written (whoever waits for the answer).
    async fn quote_fresh_share(
        &self,
        share: &CheckedShare,
        pool: Pools,
        quoting: QuotingMark,
    ) -> Result<(String, String), Rejection> {
        let checked = match &self.chain {
            Some(chain) => {
                let on_tip = HeaderOnTip::from_header(&share.header, share.height);
                let now = u32::try_from(roles_common::unix_secs()).unwrap_or(u32::MAX);
                Some((chain, chain.check(&on_tip, now, pool).await?))
            }
            None => None,
        };
        let quote_id = self
            .writer
            .quote(self.prepare(share)?, Some(quoting))
            .await?;
        if let Some((chain, checked)) = checked {
            chain.quoted(pool, checked.epoch);
        }
        Ok((quote_id.to_string(), self.active_keyset()?))
    }

    /// A share quoted before (a replay whose answer was lost) gets its
    /// quote whatever changed since: the chain moved on, or the operator
    /// changed the amount limits or `unit_bits`. Its header must hash to
    /// the share hash and its key be the quote's; otherwise, or if it was
    /// never quoted, `rejection` (the database failing to say is a mint
    /// error: asked again).
    async fn quoted_before(
        &self,
        request: &MintQuoteRequestOwned,
        rejection: Rejection,
        pool: Pools,
    ) -> Result<(String, String), Rejection> {
        if ehash::share::header_hash(&request.header_bytes()) != request.share_hash() {
            return Err(rejection);
        }
        let Ok(key) = PublicKey::from_slice(&request.locking_key_bytes()) else {
            return Err(rejection);
        };
        let epoch = self.chain.as_ref().map(|chain| chain.epoch());
        // A failed look-up is a mint error (the database), not `rejection`.
        let Some(quote_id) = self
            .writer
            .quote_of(&hex::encode(request.share_hash()), &key)
            .await?
        else {
            return Err(rejection);
        };
        // The pool is delivering: a replay shows it as well.
        if let (Some(chain), Some(epoch)) = (&self.chain, epoch) {
            chain.quoted(pool, epoch);
        }
        Ok((quote_id.to_string(), self.active_keyset()?))
    }

    /// What the writer needs of a share, computed here, off the writer.
    fn prepare(&self, share: &CheckedShare) -> Result<ShareToQuote, Rejection> {
        if !self.amounts.contains(&share.amount) {
            return Err(Rejection::new(
                error_code::AMOUNT_OUT_OF_RANGE,
                format!(
                    "{} ehash is outside this mint's limits {}..={}",
                    share.amount,
                    self.amounts.start(),
                    self.amounts.end()
                ),
            ));
        }
        Ok(ShareToQuote {
            share_hex: hex::encode(share.share_hash),
            amount: share.amount,
            // The key was parsed (a point on the curve) when the request was
            // checked; parsing it again would cost a square root per quote.
            pubkey: PublicKey::from(share.locking_key.public_key()),
            locking_key: share.locking_key,
            audit_entry: audit::encode(share, roles_common::unix_secs()),
        })
    }

    /// Runs `work` while no quote is being written.
    pub async fn while_no_quote_is_written<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        self.writer.while_idle(work).await
    }

    fn active_keyset(&self) -> Result<String, Rejection> {
        self.mint
            .get_active_keysets()
            .get(&self.unit)
            .map(|id| id.to_string())
            .ok_or_else(|| mint_error("no active keyset for unit hash"))
    }

    /// Totals of the ehash quotes in the mint's database (callers at the
    /// same moment take turns, each reading only what changed since).
    pub async fn stats(&self, request_id: u32) -> Result<MintStatsResponse, String> {
        let mut kept = self.totals.lock().await;
        let totals = kept
            .refresh(&self.totals_reader)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = kept.checkpoint(&self.mint.localstore()).await {
            tracing::warn!("cannot write the checkpoint of quote totals: {e}");
        }
        drop(kept);
        Ok(MintStatsResponse {
            request_id,
            quotes_unpaid: totals.quotes_unpaid,
            quotes_paid: totals.quotes_paid,
            quotes_issued: totals.quotes_issued,
            ehash_quoted: totals.ehash_quoted,
            ehash_issued: totals.ehash_issued,
        })
    }

    /// At a stop: brings the totals up to date and keeps them as the
    /// checkpoint, so the next start reads only what comes after. Not if
    /// no one asked for them in this run, nor while a refresh runs: either
    /// could be a first read, which would hold up the stop for long. Nor
    /// for an in-memory database, which keeps none.
    pub async fn checkpoint_totals(&self) {
        let Ok(mut totals) = self.totals.try_lock() else {
            tracing::info!("quote totals being read at the stop: not checkpointed");
            return;
        };
        if !totals.checkpointable() {
            return;
        }
        let written = match totals.refresh(&self.totals_reader).await {
            Ok(_) => totals.write_checkpoint(&self.mint.localstore()).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(true) => tracing::info!("quote totals checkpointed"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot checkpoint the quote totals at the stop: {e}"),
        }
    }
}

pub(crate) fn mint_error(e: impl std::fmt::Display) -> Rejection {
    tracing::error!("mint error while quoting: {e}");
    Rejection::new(error_code::MINT_ERROR, e.to_string())
}

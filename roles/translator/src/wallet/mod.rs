//! The translator's ehash wallet: a cdk Wallet on SQLite (rate limiting off)
//! that mints the pending quotes of the [`QuoteStore`] in NUT-29 batches
//! ([`issue`]), signing each with the wallet's locking secret key (NUT-20).
//!
//! Never twice: the mint refuses a second issuance, an interrupted batch is
//! settled by asking the mint what it signed, and a quote the mint reports
//! as issued otherwise (by another wallet of the same key) is marked minted
//! without minting.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdk::amount::{Amount, SplitTarget};
use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, SecretKey};
use cdk::wallet::{BaseHttpClient, MintConnector, SendOptions, Wallet, WalletBuilder};
use cdk::MintQuoteResponse;
use cdk_sqlite::WalletSqliteDatabase;
use ehash::LockingKey;
use stratum_core::bitcoin::hashes::{sha256, Hash};
use tracing::{debug, info, warn};

use crate::quotes::{QuoteStore, StoreError};

mod consolidate;
mod counters;
mod dir;
mod issue;
mod lookup;
mod restore;
mod settle;
mod transport;
mod unanswered;

pub use consolidate::{Holdings, CONSOLIDATE_ABOVE};
pub use dir::{OwnWallet, MNEMONIC_FILE};
pub use issue::BATCHES_PER_ROUND;
pub use lookup::LookedUp;
pub use restore::{Restored, RESTORE_BATCH};
pub use transport::DEFAULT_MINT_TIMEOUT;

/// The wallet's client of its mint: every request bounded in time.
type MintClient = BaseHttpClient<transport::TimedTransport>;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet: {0}")]
    Cdk(#[from] cdk::Error),
    #[error("wallet proofs: {0}")]
    Proofs(#[from] cdk::nuts::nut00::Error),
    #[error("wallet database: {0}")]
    Database(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl WalletError {
    /// Whether the request got no answer from the mint.
    pub fn mint_unreachable(&self) -> bool {
        self.connection_failed() || self.timed_out()
    }

    /// Whether the request took longer than the mint timeout (cdk's
    /// `Timeout`, from the wallet's transport).
    pub fn timed_out(&self) -> bool {
        matches!(self, WalletError::Cdk(cdk::Error::Timeout))
    }

    /// Whether the request got no HTTP answer at all (the connection was
    /// refused or broke, or the answer was unreadable: cdk's
    /// `HttpError(None, _)`): the mint, or the way to it, is down.
    pub fn connection_failed(&self) -> bool {
        matches!(self, WalletError::Cdk(cdk::Error::HttpError(None, _)))
    }

    /// Whether the mint may still act on the request: it got no answer, or
    /// a server error not from the mint itself (a proxy's 502 or 504, say,
    /// while the mint goes on), or a proxy's rate limit (429). An answer
    /// from the mint is final.
    pub fn answer_unknown(&self) -> bool {
        match self {
            WalletError::Cdk(cdk::Error::HttpError(Some(status), _)) => {
                *status >= 500 || *status == 429
            }
            e => e.mint_unreachable(),
        }
    }
}

/// What one minting round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintRound {
    /// Quotes minted now (quote id, amount), and their total amount.
    pub minted: Vec<(String, u64)>,
    pub amount: u64,
    /// Quotes the mint had issued otherwise (to another wallet of the same
    /// key), marked minted (quote id, amount).
    pub already_issued: Vec<(String, u64)>,
    /// Quotes left pending (mint unreachable, not paid yet, refused).
    pub left: usize,
    /// The round took as many quotes as a round holds: more may be waiting.
    pub full: bool,
    /// Whether the mint answered this round's requests: `None` when none
    /// was made, `Some(true)` when at least one got an answer.
    pub mint_reachable: Option<bool>,
}

impl MintRound {
    /// A request of the round ended so: it reached the mint unless it got
    /// no answer.
    fn saw_answer<T>(&mut self, answer: &Result<T, WalletError>) {
        let reached = !matches!(answer, Err(e) if e.mint_unreachable());
        self.mint_reachable = Some(self.mint_reachable == Some(true) || reached);
    }
}

/// What a quote of the ehash method has left to mint, by the mint's account.
fn mintable(quote: &MintQuoteResponse<String>) -> Option<u64> {
    match quote {
        MintQuoteResponse::Custom { response, .. } => {
            let left = response.amount_paid.checked_sub(response.amount_issued)?;
            Some(u64::from(left))
        }
        _ => None,
    }
}

/// An amount in the fewest proofs (its binary decomposition).
/// Not cdk's default split, which reads every unspent proof of the wallet
/// for each quote of a batch, so minting slowed as the wallet grew.
pub fn fewest_proofs() -> SplitTarget {
    SplitTarget::Value(Amount::from(u64::MAX))
}

fn database(e: cdk::cdk_database::Error) -> WalletError {
    WalletError::Database(e.to_string())
}

pub fn ehash_unit() -> CurrencyUnit {
    CurrencyUnit::custom(ehash::constants::UNIT)
}

pub fn ehash_method() -> PaymentMethod {
    PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.into())
}

/// The wallet's own locking secret, derived from the seed (domain separated
/// from cdk's own derivations).
pub fn locking_secret(seed: &[u8; 64]) -> SecretKey {
    let mut data = b"hashpool/translator/locking-key/v1".to_vec();
    data.extend_from_slice(seed);
    let digest = sha256::Hash::hash(&data).to_byte_array();
    SecretKey::from_slice(&digest).expect("a sha256 digest is a valid secret key (p ~ 2^-128)")
}

pub struct EhashWallet {
    wallet: Wallet,
    /// The connection to the mint, shared with `wallet`.
    client: Arc<MintClient>,
    /// How long one request to the mint may take.
    timeout: Duration,
    seed: [u8; 64],
    secret: SecretKey,
    key: LockingKey,
    /// A consolidating swap got no answer (see [`consolidate`]).
    swap_unsettled: AtomicBool,
    /// When this run's batch requests that got no answer were sent.
    unanswered: unanswered::Unanswered,
}

impl EhashWallet {
    /// Opens (or creates) the wallet database at `db_path`; each request
    /// to the mint at `mint_url` may take up to `timeout`.
    pub async fn open(
        mint_url: &str,
        timeout: Duration,
        db_path: &Path,
        seed: [u8; 64],
    ) -> Result<Self, WalletError> {
        roles_common::private::create_file(db_path)
            .map_err(|e| WalletError::Database(format!("{}: {e}", db_path.display())))?;
        let db = WalletSqliteDatabase::new(db_path.to_path_buf())
            .await
            .map_err(|e| WalletError::Database(e.to_string()))?;
        Self::with_db(mint_url, timeout, db, seed)
    }

    /// A wallet in memory (tests).
    pub async fn in_memory(mint_url: &str, seed: [u8; 64]) -> Result<Self, WalletError> {
        let db = cdk_sqlite::wallet::memory::empty()
            .await
            .map_err(|e| WalletError::Database(e.to_string()))?;
        Self::with_db(mint_url, DEFAULT_MINT_TIMEOUT, db, seed)
    }

    fn with_db(
        mint_url: &str,
        timeout: Duration,
        db: WalletSqliteDatabase,
        seed: [u8; 64],
    ) -> Result<Self, WalletError> {
        let mint_url: MintUrl = mint_url
            .parse()
            .map_err(|e| WalletError::Other(format!("mint_url: {e}")))?;
        let transport = transport::TimedTransport::new(timeout);
        let client = Arc::new(MintClient::with_transport(
            mint_url.clone(),
            transport,
            None,
        ));
        let wallet = WalletBuilder::new()
            .mint_url(mint_url)
            .shared_client(client.clone())
            .unit(ehash_unit())
            .localstore(Arc::new(db))
            .seed(seed)
            .without_rate_limiting()
            .build()?;
        let secret = locking_secret(&seed);
        let key = LockingKey::from_bytes(&secret.public_key().to_bytes())
            .map_err(|e| WalletError::Other(format!("locking key: {e}")))?;
        Ok(Self {
            wallet,
            client,
            timeout,
            seed,
            secret,
            key,
            swap_unsettled: AtomicBool::new(false),
            unanswered: Default::default(),
        })
    }

    /// The key quotes of this wallet are locked to.
    pub fn locking_key(&self) -> LockingKey {
        self.key
    }

    pub fn cdk(&self) -> &Wallet {
        &self.wallet
    }

    /// Finishes what a crash interrupted in cdk's own operations (its
    /// sagas: sends, receives, swaps); mint batches are settled by
    /// [`mint_pending`](Self::mint_pending). Needs the mint; what cdk
    /// leaves pending (it could not ask the mint) is recovered again before
    /// the next consolidation. Then moves the keyset counter past outputs
    /// the mint signed for another use of it ([`counters`]).
    pub async fn recover(&self) -> Result<(), WalletError> {
        self.recover_sagas().await?;
        // Best effort: a batch whose outputs turn out signed before moves
        // the counter too.
        let keyset = self.wallet.active_keyset().await?;
        let skipped = self
            .skip_counters_signed_before(keyset.id, &mut MintRound::default())
            .await;
        if let Err(e) = skipped {
            warn!("cannot ask the mint which of this wallet's next outputs it signed: {e}");
        }
        Ok(())
    }

    /// Finishes what a crash or a lost answer interrupted in cdk's own
    /// operations; what it could not finish (the mint unreachable) is
    /// recovered again before the next consolidation.
    async fn recover_sagas(&self) -> Result<(), WalletError> {
        let report = self.wallet.recover_incomplete_sagas().await?;
        debug!(?report, "wallet saga recovery");
        if report.failed > 0 {
            warn!(
                failed = report.failed,
                "interrupted wallet operations could not be recovered"
            );
        }
        self.swap_unsettled
            .store(report.skipped > 0, Ordering::Relaxed);
        Ok(())
    }

    pub async fn balance(&self) -> Result<u64, WalletError> {
        Ok(u64::from(self.wallet.total_balance().await?))
    }

    /// Receives a cashuB token of this wallet's mint and unit; the amount
    /// received.
    pub async fn receive(&self, token: &str) -> Result<u64, WalletError> {
        let amount = self
            .wallet
            .receive(token, cdk::wallet::ReceiveOptions::default())
            .await?;
        Ok(u64::from(amount))
    }

    /// A cashuB token of `amount` ehash.
    pub async fn send(&self, amount: u64) -> Result<String, WalletError> {
        let prepared = self
            .wallet
            .prepare_send(Amount::from(amount), SendOptions::default())
            .await?;
        let token = prepared.confirm(None).await?;
        Ok(token.to_string())
    }

    /// Mints the pending quotes of `store` locked to this wallet's key:
    /// first settles the batches an interrupted round left open, then
    /// mints one round of up to [`BATCHES_PER_ROUND`] NUT-29 batches of at
    /// most `batch` quotes (and the mint's own limit), the round's quotes
    /// spread over them.
    pub async fn mint_pending(
        &self,
        store: &QuoteStore,
        batch: usize,
    ) -> Result<MintRound, WalletError> {
        let mut round = MintRound::default();
        let restored = self.settle_open_batches(store, &mut round).await?;
        let batch = self.batch_size(batch).await;
        let pending = store.pending(&self.key.to_string(), batch * BATCHES_PER_ROUND)?;
        round.full = pending.len() == batch * BATCHES_PER_ROUND;
        let ready: Vec<_> = pending
            .into_iter()
            .map(|record| (record.quote_id, record.amount))
            .collect();
        let taken = restored + ready.len();
        if !ready.is_empty() {
            let size = issue::spread(ready.len(), batch);
            let refused = self.mint_in_batches(store, ready, size, &mut round).await?;
            if !refused.is_empty() {
                self.ask_about(store, refused, batch, &mut round).await?;
            }
        }
        round.left += taken.saturating_sub(round.minted.len() + round.already_issued.len());
        if !round.minted.is_empty() {
            info!(
                quotes = round.minted.len(),
                amount = round.amount,
                "minted ehash"
            );
        }
        Ok(round)
    }

    /// Asks the mint about each quote of a refused batch: those it issued
    /// otherwise are marked minted, those still paid are minted again (at
    /// the mint's amount), the rest stay pending with the reason (behind
    /// the others for a while, when the mint itself refused them).
    async fn ask_about(
        &self,
        store: &QuoteStore,
        quotes: Vec<(String, u64)>,
        batch: usize,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        let mut paid = vec![];
        for (id, amount) in quotes {
            let quote = self
                .client
                .get_mint_quote_status(ehash_method(), &id)
                .await
                .map_err(WalletError::from);
            round.saw_answer(&quote);
            match quote.as_ref().map(|quote| quote.state()) {
                Ok(Some(MintQuoteState::Issued)) => {
                    info!(quote = id, "quote already issued: marked minted");
                    store.mark_minted(std::slice::from_ref(&id))?;
                    round.already_issued.push((id, amount));
                }
                Ok(Some(MintQuoteState::Paid)) => {
                    let amount = match quote.ok().and_then(|quote| mintable(&quote)) {
                        Some(at_mint) if at_mint != amount => {
                            warn!(
                                quote = id,
                                recorded = amount,
                                at_mint,
                                "the mint holds this quote at another amount: minted at the mint's"
                            );
                            store.set_amount(&id, at_mint)?;
                            at_mint
                        }
                        _ => amount,
                    };
                    paid.push((id, amount));
                }
                Ok(_) => store.set_refused(&id, "not paid")?,
                Err(e) if e.answer_unknown() => {
                    // The rest would wait as long each (a proxy's error, the
                    // mint's too): they stay pending, none refused.
                    warn!(quote = id, "cannot ask the mint about a quote: {e}");
                    store.set_error(&id, &e.to_string())?;
                    break;
                }
                Err(e) => {
                    warn!(quote = id, "the mint refuses to tell of a quote: {e}");
                    store.set_refused(&id, &e.to_string())?;
                }
            }
        }
        self.mint_apart(store, paid, batch, round).await
    }

    /// Mints `quotes`, each paid at the mint, in batches halved while the
    /// mint refuses them: one quote it refuses refuses its whole batch, and
    /// must hold up none of its batch-mates. The quotes it refuses alone
    /// stay pending with the reason. (A refusal of the mint's own, of every
    /// batch, costs about two requests a quote, four at a time, a minute.)
    async fn mint_apart(
        &self,
        store: &QuoteStore,
        mut quotes: Vec<(String, u64)>,
        mut size: usize,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        while !quotes.is_empty() {
            let refused = self.mint_in_batches(store, quotes, size, round).await?;
            if size == 1 {
                for (id, _) in refused {
                    store.set_refused(&id, "refused by the mint")?;
                }
                break;
            }
            size = refused.len().min(size).div_ceil(2);
            quotes = refused;
        }
        Ok(())
    }

    /// `wanted`, within the most quotes the mint takes in one batch (NUT-29
    /// `max_batch_size`, from the mint info cdk keeps; unknown: `wanted`).
    pub(super) async fn batch_size(&self, wanted: usize) -> usize {
        let limit = match self.wallet.load_mint_info().await {
            Ok(info) => info.nuts.nut29.max_batch_size,
            Err(e) => {
                debug!("no mint info for its batch limit: {e}");
                None
            }
        };
        let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        wanted.min(limit).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_from_the_mint_itself_is_final() {
        let error = |e: cdk::Error| WalletError::Cdk(e);
        let no_answer = [
            error(cdk::Error::HttpError(None, "connection reset".into())),
            error(cdk::Error::Timeout),
        ];
        for e in &no_answer {
            assert!(e.mint_unreachable() && e.answer_unknown(), "{e}");
        }
        assert!(no_answer[0].connection_failed(), "the mint is down");
        assert!(
            !no_answer[1].connection_failed(),
            "only slow, for this request"
        );
        // A gateway that gave up: the mint was reached, it may go on.
        let gateway = error(cdk::Error::HttpError(Some(504), "gateway timeout".into()));
        assert!(!gateway.mint_unreachable() && gateway.answer_unknown());
        let rate_limited = error(cdk::Error::HttpError(Some(429), "slow down".into()));
        assert!(rate_limited.answer_unknown());
        // The mint's own errors (its database failing, say) come as cashu
        // error bodies: answers, though not always final ones.
        let refusals = [
            error(cdk::Error::IssuedQuote),
            error(cdk::Error::UnknownErrorResponse("database busy".into())),
            error(cdk::Error::HttpError(Some(400), "bad request".into())),
        ];
        for e in &refusals {
            assert!(!e.mint_unreachable() && !e.answer_unknown(), "{e}");
        }
    }
}

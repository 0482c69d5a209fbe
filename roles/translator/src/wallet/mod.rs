//! The translator's ehash wallet: a cdk Wallet on SQLite (rate limiting off)
//! that mints the pending quotes of the [`QuoteStore`] in NUT-29 batches,
//! signing each with the wallet's locking secret key (NUT-20).
//!
//! Never twice: a quote the mint reports as already issued is marked minted
//! without minting (its proofs came back through cdk's saga recovery, run
//! first); the mint itself refuses a second issuance.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cdk::amount::{Amount, SplitTarget};
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, SecretKey};
use cdk::wallet::{MintQuote, SendOptions, Wallet, WalletBuilder};
use cdk_sqlite::WalletSqliteDatabase;
use ehash::LockingKey;
use stratum_core::bitcoin::hashes::{sha256, Hash};
use tracing::{debug, info, warn};

use crate::quotes::{QuoteStore, StoreError};

mod dir;
mod lookup;

pub use dir::{OwnWallet, MNEMONIC_FILE};

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet: {0}")]
    Cdk(#[from] cdk::Error),
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
        matches!(self, WalletError::Cdk(e) if !reached_mint(e))
    }
}

/// cdk reports an HTTP exchange that got no status (connection refused,
/// timeout, an unreadable answer) as `HttpError(None, _)`.
fn reached_mint(e: &cdk::Error) -> bool {
    !matches!(e, cdk::Error::HttpError(None, _))
}

/// What one minting round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintRound {
    /// Quotes minted now (quote id, amount), and their total amount.
    pub minted: Vec<(String, u64)>,
    pub amount: u64,
    /// Quotes found already issued (recovered earlier), marked minted
    /// (quote id, amount).
    pub already_issued: Vec<(String, u64)>,
    /// Quotes left pending (mint unreachable, not paid yet, refused).
    pub left: usize,
    /// Whether the mint answered this round's requests: `None` when none
    /// was made, `Some(true)` when at least one got an answer.
    pub mint_reachable: Option<bool>,
}

impl MintRound {
    fn saw_mint(&mut self, reached: bool) {
        self.mint_reachable = Some(self.mint_reachable == Some(true) || reached);
    }
}

/// Where a quote of a given amount stands, as a wallet's copy of it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Issued,
    Paid,
    Unpaid,
}

impl Readiness {
    fn of(quote: &MintQuote, amount: u64) -> Readiness {
        let issued = u64::from(quote.amount_issued);
        if quote.state == MintQuoteState::Issued || (issued > 0 && issued >= amount) {
            Readiness::Issued
        } else if u64::from(quote.amount_paid) >= amount || quote.state == MintQuoteState::Paid {
            Readiness::Paid
        } else {
            Readiness::Unpaid
        }
    }
}

/// The most blinded outputs one mint request may carry: cdk's default
/// `max_outputs` (the mint does not publish its own).
const MAX_OUTPUTS: usize = 1000;

/// How many of `quotes`, from the first, fit in one mint request: each
/// needs one output per set bit of its amount ([`fewest_proofs`]).
fn within_output_limit(quotes: &[(String, u64)]) -> usize {
    let mut outputs = 0;
    let fit = quotes
        .iter()
        .take_while(|(_, amount)| {
            outputs += amount.count_ones() as usize;
            outputs <= MAX_OUTPUTS
        })
        .count();
    fit.max(1)
}

/// Each quote's amount in the fewest proofs (its binary decomposition).
/// Not cdk's default split, which reads every unspent proof of the wallet
/// for each quote of a batch, so minting slowed as the wallet grew.
pub fn fewest_proofs() -> SplitTarget {
    SplitTarget::Value(Amount::from(u64::MAX))
}

fn database(e: cdk::cdk_database::Error) -> WalletError {
    WalletError::Database(e.to_string())
}

fn ids(quotes: &[(String, u64)]) -> Vec<String> {
    quotes.iter().map(|(id, _)| id.clone()).collect()
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
    secret: SecretKey,
    key: LockingKey,
}

impl EhashWallet {
    /// Opens (or creates) the wallet database at `db_path`.
    pub async fn open(mint_url: &str, db_path: &Path, seed: [u8; 64]) -> Result<Self, WalletError> {
        roles_common::private::create_file(db_path)
            .map_err(|e| WalletError::Database(format!("{}: {e}", db_path.display())))?;
        let db = WalletSqliteDatabase::new(db_path.to_path_buf())
            .await
            .map_err(|e| WalletError::Database(e.to_string()))?;
        Self::with_db(mint_url, db, seed)
    }

    /// An in-memory wallet (tests).
    pub async fn in_memory(mint_url: &str, seed: [u8; 64]) -> Result<Self, WalletError> {
        let db = cdk_sqlite::wallet::memory::empty()
            .await
            .map_err(|e| WalletError::Database(e.to_string()))?;
        Self::with_db(mint_url, db, seed)
    }

    fn with_db(
        mint_url: &str,
        db: WalletSqliteDatabase,
        seed: [u8; 64],
    ) -> Result<Self, WalletError> {
        let wallet = WalletBuilder::new()
            .mint_url(
                mint_url
                    .parse()
                    .map_err(|e| WalletError::Other(format!("mint_url: {e}")))?,
            )
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
            secret,
            key,
        })
    }

    /// The key quotes of this wallet are locked to.
    pub fn locking_key(&self) -> LockingKey {
        self.key
    }

    pub fn cdk(&self) -> &Wallet {
        &self.wallet
    }

    /// Finishes mint operations a crash interrupted (cdk sagas). Needs the mint.
    pub async fn recover(&self) -> Result<(), WalletError> {
        let report = self.wallet.recover_incomplete_sagas().await?;
        debug!(?report, "wallet saga recovery");
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

    /// Mints up to `batch` pending quotes of `store` locked to this wallet's
    /// key, in one NUT-29 batch (of at most the mint's own limit). One at a
    /// time: cdk 0.18.3 records a batch's secret counter range for recovery
    /// as "the counter now, minus its outputs", which a batch minted
    /// alongside would make wrong.
    pub async fn mint_pending(
        &self,
        store: &QuoteStore,
        batch: usize,
    ) -> Result<MintRound, WalletError> {
        let batch = self.batch_size(batch).await;
        let mut round = MintRound::default();
        let mut ready = self.paid_quotes(store, batch, &mut round).await?;
        // The rest stay pending, known paid, for the next round.
        ready.truncate(within_output_limit(&ready));
        if !round.already_issued.is_empty() {
            info!(
                count = round.already_issued.len(),
                "quotes already issued: marked minted"
            );
            store.mark_minted(&ids(&round.already_issued))?;
        }
        if ready.is_empty() {
            return Ok(round);
        }
        self.mint_ready(store, ready, &mut round).await?;
        if !round.minted.is_empty() {
            info!(
                quotes = round.minted.len(),
                amount = round.amount,
                "minted ehash"
            );
        }
        Ok(round)
    }

    /// `wanted`, within the most quotes the mint takes in one batch (NUT-29
    /// `max_batch_size`, from the mint info cdk keeps; unknown: `wanted`).
    async fn batch_size(&self, wanted: usize) -> usize {
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

    /// The pending quotes ready to mint (quote id, amount); those already
    /// issued go to `round.already_issued`, the rest stay pending with the
    /// reason recorded.
    ///
    /// The mint answers the pool with a quote only once it is paid, so a
    /// notified quote the wallet has not seen is recorded as paid without
    /// asking the mint. The mint is asked only about quotes an interrupted
    /// mint left reserved, and about every quote of a batch it refused
    /// ([`mint_ready`](Self::mint_ready)).
    async fn paid_quotes(
        &self,
        store: &QuoteStore,
        batch: usize,
        round: &mut MintRound,
    ) -> Result<Vec<(String, u64)>, WalletError> {
        let own_key = self.key.to_string();
        let mut ready = Vec::new();
        for record in store.pending(batch)? {
            if record.locking_key != own_key {
                // Cannot happen for records written by the quote flow (they are
                // "foreign"); kept pending, never minted with a wrong key.
                round.left += 1;
                continue;
            }
            let localstore = &self.wallet.localstore;
            let known = localstore
                .get_mint_quote(&record.quote_id)
                .await
                .map_err(database)?;
            let quote = match known {
                None => {
                    localstore
                        .add_mint_quote(self.paid_quote(&record.quote_id, record.amount))
                        .await
                        .map_err(database)?;
                    ready.push((record.quote_id, record.amount));
                    continue;
                }
                Some(q) if q.used_by_operation.is_none() => q,
                Some(_) => match self.fetch_quote(&record.quote_id).await {
                    Ok(q) => {
                        round.saw_mint(true);
                        q
                    }
                    Err(e) => {
                        round.saw_mint(!e.mint_unreachable());
                        warn!(quote = record.quote_id, "cannot fetch quote: {e}");
                        store.set_error(&record.quote_id, &e.to_string())?;
                        round.left += 1;
                        continue;
                    }
                },
            };
            match Readiness::of(&quote, record.amount) {
                Readiness::Issued => round.already_issued.push((record.quote_id, record.amount)),
                Readiness::Paid => ready.push((record.quote_id, record.amount)),
                Readiness::Unpaid => {
                    store.set_error(&record.quote_id, "not paid yet")?;
                    round.left += 1;
                }
            }
        }
        Ok(ready)
    }

    /// A quote of `amount` the mint has paid, as the wallet records it.
    fn paid_quote(&self, quote_id: &str, amount: u64) -> MintQuote {
        MintQuote {
            id: quote_id.to_string(),
            mint_url: self.wallet.mint_url.clone(),
            payment_method: ehash_method(),
            amount: Some(Amount::from(amount)),
            unit: ehash_unit(),
            request: String::new(),
            state: MintQuoteState::Paid,
            expiry: 0,
            secret_key: Some(self.secret.clone()),
            amount_issued: Amount::ZERO,
            amount_paid: Amount::from(amount),
            updated_at: 0,
            estimated_blocks: None,
            used_by_operation: None,
            version: 0,
        }
    }

    /// Mints paid quotes in one NUT-29 batch. If the batch fails, the mint
    /// is asked about each quote, and those still to mint are minted one by
    /// one, so one bad quote does not block the others.
    async fn mint_ready(
        &self,
        store: &QuoteStore,
        ready: Vec<(String, u64)>,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        let batch = self.batch_mint(&ready).await;
        round.saw_mint(!matches!(&batch, Err(e) if e.mint_unreachable()));
        let e = match batch {
            Ok(amount) => {
                store.mark_minted(&ids(&ready))?;
                round.amount += amount;
                round.minted.extend(ready);
                return Ok(());
            }
            Err(e) => e,
        };
        warn!(
            count = ready.len(),
            "batch mint failed ({e}); asking the mint about each quote and minting one by one"
        );
        for (id, amount) in ready {
            let quote = match self.fetch_quote(&id).await {
                Ok(quote) => quote,
                Err(e) => {
                    Self::mint_failed(store, &id, &e, round)?;
                    continue;
                }
            };
            match Readiness::of(&quote, amount) {
                Readiness::Issued => {
                    store.mark_minted(std::slice::from_ref(&id))?;
                    round.already_issued.push((id, amount));
                }
                Readiness::Unpaid => {
                    store.set_error(&id, "not paid yet")?;
                    round.left += 1;
                }
                Readiness::Paid => match self.batch_mint(&[(id.clone(), amount)]).await {
                    Ok(a) => {
                        store.mark_minted(std::slice::from_ref(&id))?;
                        round.amount += a;
                        round.minted.push((id, a));
                    }
                    Err(e) => Self::mint_failed(store, &id, &e, round)?,
                },
            }
        }
        Ok(())
    }

    fn mint_failed(
        store: &QuoteStore,
        quote_id: &str,
        e: &WalletError,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        warn!(quote = quote_id, "mint failed: {e}");
        store.set_error(quote_id, &e.to_string())?;
        round.left += 1;
        Ok(())
    }

    /// The quote as the mint knows it, with no reservation left by a mint
    /// operation a crash interrupted (cdk refuses to mint a reserved quote:
    /// "already in use by another operation").
    async fn fetch_quote(&self, quote_id: &str) -> Result<MintQuote, WalletError> {
        let quote = self
            .wallet
            .fetch_mint_quote(quote_id, Some(ehash_method()))
            .await?;
        let Some(operation) = quote.used_by_operation.clone() else {
            return Ok(quote);
        };
        if quote.state == MintQuoteState::Issued || quote.amount_issued > Amount::ZERO {
            // The mint signed: cdk's status check resumes the operation and
            // restores the proofs.
            info!(quote = quote_id, operation, "finishing an interrupted mint");
            return Ok(self.wallet.check_mint_quote_status(quote_id).await?);
        }
        // The mint never signed (it marks a quote issued as it signs), so there
        // is nothing to restore: release the reservation and mint afresh. cdk
        // 0.18.3 cannot do this itself: its saga recovery refuses the mint's
        // empty restore answer, and a crash between reserving and saving the
        // saga leaves a reservation with no saga at all.
        let id = uuid::Uuid::parse_str(&operation)
            .map_err(|e| WalletError::Other(format!("operation id {operation}: {e}")))?;
        warn!(
            quote = quote_id,
            operation, "releasing a quote an interrupted mint left reserved (never signed)"
        );
        let store = &self.wallet.localstore;
        store.delete_saga(&id).await.map_err(database)?;
        store.release_mint_quote(&id).await.map_err(database)?;
        Ok(store
            .get_mint_quote(quote_id)
            .await
            .map_err(database)?
            .unwrap_or(quote))
    }

    async fn batch_mint(&self, quotes: &[(String, u64)]) -> Result<u64, WalletError> {
        let ids: Vec<&str> = quotes.iter().map(|(id, _)| id.as_str()).collect();
        let keys: HashMap<String, SecretKey> = quotes
            .iter()
            .map(|(id, _)| (id.clone(), self.secret.clone()))
            .collect();
        let proofs = self
            .wallet
            .batch_mint(&ids, fewest_proofs(), None, Some(keys))
            .await?;
        Ok(proofs.iter().map(|p| u64::from(p.amount)).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotes(amounts: impl IntoIterator<Item = u64>) -> Vec<(String, u64)> {
        amounts.into_iter().map(|a| (String::new(), a)).collect()
    }

    #[test]
    fn a_batch_holds_as_many_quotes_as_their_outputs_allow() {
        // One output per set bit of each amount.
        assert_eq!(within_output_limit(&quotes([1; 1001])), 1000);
        assert_eq!(within_output_limit(&quotes([19; 400])), 333);
        assert_eq!(within_output_limit(&quotes([u64::MAX; 20])), 15);
        assert_eq!(within_output_limit(&quotes([8, 3, 7])), 3);
        assert_eq!(within_output_limit(&[]), 1, "nothing to cut");
    }
}

//! Settling the NUT-29 batches left open: a request refused, one that got
//! no answer, a crash between recording a batch and closing it.
//!
//! The mint signs a batch whole or not at all, and only the outputs
//! recorded with it (derived from the seed at its counters):
//!
//! ```text
//!   open batch ──> which outputs did the mint sign? (NUT-09 restore)
//!                    │ all, its quotes issued      │ none
//!                    v                             v
//!              store, close           its only request refused? ── yes ──> close,
//!                                                  │ no                   quotes pending
//!                                                  v
//!                                      send the same request again
//!     signed: store, close │ no answer: stays open │ refused: see below
//! ```
//!
//! Outputs signed otherwise (some of them, at other amounts, or all with a
//! quote not issued) were signed for another use of their counters (see [`super::counters`]):
//! the batch is closed with nothing stored, its quotes pending again, and
//! the counter moves past what the mint signed.
//!
//! A batch whose request got no answer is never closed on "nothing signed
//! yet": the request may still be on its way through the mint (a proxy
//! gave up on it, the wallet's timeout passed), and its quotes minted with
//! other outputs would then be issued to outputs the wallet forgot. Sent
//! again as it was, the batch is signed once, by either request. A refusal
//! of the copy closes the batch (after asking once more what the mint
//! signed) only when it tells that the first cannot be signed later (a
//! quote issued), or once the last request of it that got no answer was
//! sent [`HOLD_TIMEOUTS`] mint timeouts ago: the mint may refuse the copy
//! for a passing reason (its database busy) while the first is still on
//! its way.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Instant;

use cdk::nuts::{
    BatchCheckMintQuoteRequest, BlindSignature, CheckStateRequest, Id, Keys, MintQuoteState,
    PreMintSecrets, PublicKey, RestoreRequest, State,
};
use cdk::wallet::types::ProofInfo;
use cdk::wallet::MintConnector;
use tracing::{error, info, warn};

use super::issue::{derive_outputs, off_runtime, signed_outputs, signs_as_asked, MAX_OUTPUTS};
use super::unanswered::HOLD_TIMEOUTS;
use super::{ehash_method, EhashWallet, MintRound, WalletError};
use crate::quotes::{MintBatch, QuoteStore};

/// What is known of an open batch's last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LastRequest {
    /// The mint answered it with a refusal: nothing of it is signed later.
    Refused,
    /// No answer came, or none is known (a crash): the mint may still sign it.
    Unanswered,
}

/// How a batch was settled.
enum Settled {
    /// These proofs, for the batch's quotes (none, if the mint signed only
    /// part of it).
    Signed(MintBatch, Vec<ProofInfo>),
    /// The mint signed nothing of it: closed, its quotes pending again.
    Unsigned(MintBatch),
    /// Not yet: a request of it may still reach the mint.
    LeftOpen,
    /// The mint did not tell in time what it signed (a restore, a cheap
    /// request): the other open batches wait for the next round too, or a
    /// hung mint would cost a timeout per open batch, every round.
    MintTooSlow(WalletError),
}

/// What settling batches did: the quotes it minted, and those of batches
/// closed unsigned (pending again).
#[derive(Debug, Default)]
pub(super) struct Settlement {
    pub minted: HashSet<String>,
    pub released: HashSet<String>,
}

/// Whether a refusal of a batch's copy tells that no earlier request of it
/// can be signed later: a quote of it is issued (by that request, or
/// another wallet), or an output of it is signed. (cdk 0.18's batch mint
/// reports an output signed before as an internal error, code 50000: a
/// passing refusal, after which the batch stays open and the next round's
/// restore finds it signed.)
fn refusal_is_final(refusal: &WalletError) -> bool {
    matches!(
        refusal,
        WalletError::Cdk(cdk::Error::IssuedQuote | cdk::Error::BlindedMessageAlreadySigned)
    )
}

impl EhashWallet {
    /// Settles the batches an earlier run or round left open; how many
    /// quotes it minted.
    pub(super) async fn settle_open_batches(
        &self,
        store: &QuoteStore,
        round: &mut MintRound,
    ) -> Result<usize, WalletError> {
        let open = store.batches()?;
        if open.is_empty() {
            return Ok(0);
        }
        info!(batches = open.len(), "settling mint batches left open");
        let open = open
            .into_iter()
            .map(|batch| (batch, LastRequest::Unanswered))
            .collect();
        Ok(self.settle(store, open, round).await?.minted.len())
    }

    /// Settles `batches` (see the module doc). A batch that cannot be
    /// settled now stays open, logged, without holding up the others (its
    /// quotes wait with it; every other quote is minted); all stay open
    /// when the mint cannot be reached at all, or is too slow to tell what
    /// it signed.
    pub(super) async fn settle(
        &self,
        store: &QuoteStore,
        batches: Vec<(MintBatch, LastRequest)>,
        round: &mut MintRound,
    ) -> Result<Settlement, WalletError> {
        let (mut settled, mut settlement) = (vec![], Settlement::default());
        for (batch, last) in batches {
            let id = batch.id;
            match self.settle_one(store, batch, last, round).await {
                Ok(Settled::Signed(batch, proofs)) => {
                    self.unanswered.forget(batch.id);
                    settled.push((batch, proofs));
                }
                Ok(Settled::Unsigned(batch)) => {
                    self.unanswered.forget(batch.id);
                    settlement
                        .released
                        .extend(batch.quotes.into_iter().map(|(id, _)| id));
                }
                Ok(Settled::LeftOpen) => {}
                Ok(Settled::MintTooSlow(e)) => {
                    warn!(
                        batch = id,
                        "the mint did not tell in time what it signed ({e}): the open batches \
                         wait for the next round"
                    );
                    break;
                }
                Err(e) if e.connection_failed() => return Err(e),
                Err(e) => warn!(batch = id, "cannot settle this batch now, left open: {e}"),
            }
        }
        settlement.minted = settled
            .iter()
            .flat_map(|(batch, _)| batch.quotes.iter().map(|(id, _)| id.clone()))
            .collect();
        let settled = self.without_spent(settled).await?;
        self.store_and_close(store, settled, round).await?;
        Ok(settlement)
    }

    async fn settle_one(
        &self,
        store: &QuoteStore,
        batch: MintBatch,
        mut last: LastRequest,
        round: &mut MintRound,
    ) -> Result<Settled, WalletError> {
        let keyset_id = Id::from_str(&batch.keyset_id)
            .map_err(|e| WalletError::Other(format!("batch keyset {}: {e}", batch.keyset_id)))?;
        let keys = self.wallet.keyset(keyset_id).await?.keys;
        let fees = self.fees_and_amounts(keyset_id).await?;
        let premint = {
            let (seed, batch) = (self.seed, batch.clone());
            off_runtime(move || derive_outputs(&seed, &batch, &fees)).await?
        };
        loop {
            let by_blinded = match self.signed_at_mint(&premint, round).await {
                Err(e) if e.timed_out() => return Ok(Settled::MintTooSlow(e)),
                restored => restored?,
            };
            let (signed, signatures) = signed_outputs(premint.clone(), &by_blinded);
            if !signatures.is_empty() {
                let outputs = premint.secrets.len();
                return self
                    .settle_signed(store, batch, (signed, signatures), outputs, keys, round)
                    .await;
            }
            if last == LastRequest::Refused {
                info!(
                    batch = batch.id,
                    "the mint signed nothing of this batch: its quotes are pending again"
                );
                store.close_batches(&[batch.id], &[])?;
                return Ok(Settled::Unsigned(batch));
            }
            match self
                .send_again(store, &batch, premint.clone(), keys.clone(), round)
                .await?
            {
                Some(settled) => return Ok(settled),
                None => last = LastRequest::Refused,
            }
        }
    }

    /// Settles a batch of `outputs` outputs the mint signed (some of):
    /// its proofs if the mint signed it whole, at its outputs' amounts,
    /// issuing its quotes; anything else was signed for another use of
    /// these counters, and the batch is closed with its quotes pending.
    async fn settle_signed(
        &self,
        store: &QuoteStore,
        batch: MintBatch,
        (signed, signatures): (PreMintSecrets, Vec<BlindSignature>),
        outputs: usize,
        keys: Keys,
        round: &mut MintRound,
    ) -> Result<Settled, WalletError> {
        let whole = signatures.len() == outputs
            && signed
                .secrets
                .iter()
                .zip(&signatures)
                .all(|(output, signature)| signs_as_asked(signature, &output.blinded_message));
        let issued = if whole {
            match self.issued_at_mint(&batch, round).await {
                Err(e) if e.timed_out() => return Ok(Settled::MintTooSlow(e)),
                issued => issued?,
            }
        } else {
            false
        };
        if issued {
            info!(
                batch = batch.id,
                quotes = batch.quotes.len(),
                "restored a signed batch"
            );
            let proofs = self.proofs(signed, signatures, keys).await?;
            return Ok(Settled::Signed(batch, proofs));
        }
        error!(
            batch = batch.id,
            signed = signatures.len(),
            outputs,
            "the mint signed this batch's outputs for another use of their counters, not for \
             its quotes: the batch is closed, its quotes pending again"
        );
        self.skip_counters_signed_before(signed.keyset_id, round)
            .await?;
        store.close_batches(&[batch.id], &[])?;
        Ok(Settled::Unsigned(batch))
    }

    /// Sends a batch the mint signed nothing of, whose last request got no
    /// answer, again as it was. `None` when the mint refused the copy and
    /// what it signed is to be asked once more, the first request no
    /// longer able to reach it (see the module doc).
    async fn send_again(
        &self,
        store: &QuoteStore,
        batch: &MintBatch,
        premint: PreMintSecrets,
        keys: Keys,
        round: &mut MintRound,
    ) -> Result<Option<Settled>, WalletError> {
        info!(
            batch = batch.id,
            quotes = batch.quotes.len(),
            "the mint signed nothing of this batch yet and a request of it got no answer: \
             sending it again as it was"
        );
        let sent = self.send_batch(batch, premint, keys).await;
        round.saw_answer(&sent);
        let e = match sent {
            Ok(proofs) => return Ok(Some(Settled::Signed(batch.clone(), proofs))),
            Err(e) if e.answer_unknown() => {
                self.note_unanswered(store, batch.id)?;
                return Err(e);
            }
            Err(e) => e,
        };
        let hold = self.timeout.saturating_mul(HOLD_TIMEOUTS);
        let now = (roles_common::unix_secs(), Instant::now());
        let quiet = self
            .unanswered
            .quiet(batch.id, batch.unanswered_since, hold, now);
        if !refusal_is_final(&e) && !quiet {
            warn!(
                batch = batch.id,
                "the mint refused the batch sent again ({e}); left open: a request of it that \
                 got no answer may still reach the mint (for {hold:?} after it was sent)"
            );
            return Ok(Some(Settled::LeftOpen));
        }
        warn!(
            batch = batch.id,
            "the mint refused the batch sent again ({e}); asking what it signed"
        );
        Ok(None)
    }

    /// A request of batch `id` got no answer: it may still reach the mint,
    /// for a while (see [`HOLD_TIMEOUTS`]).
    pub(super) fn note_unanswered(&self, store: &QuoteStore, id: i64) -> Result<(), WalletError> {
        self.unanswered.note(id, Instant::now());
        store.unanswered(id, roles_common::unix_secs())?;
        Ok(())
    }

    /// The signatures the mint holds for `premint`'s outputs (NUT-09), by
    /// blinded message.
    pub(super) async fn signed_at_mint(
        &self,
        premint: &cdk::nuts::PreMintSecrets,
        round: &mut MintRound,
    ) -> Result<HashMap<PublicKey, BlindSignature>, WalletError> {
        let restored = self
            .client
            .post_restore(RestoreRequest {
                outputs: premint.blinded_messages(),
            })
            .await
            .map_err(WalletError::from);
        round.saw_answer(&restored);
        let restored = restored?;
        Ok(restored
            .outputs
            .iter()
            .zip(restored.signatures)
            .map(|(output, signature)| (output.blinded_secret, signature))
            .collect())
    }

    /// Whether the mint reports every quote of `batch` issued (NUT-29's
    /// batch check, in as many requests as the mint's batch limit asks).
    async fn issued_at_mint(
        &self,
        batch: &MintBatch,
        round: &mut MintRound,
    ) -> Result<bool, WalletError> {
        let limit = self.batch_size(batch.quotes.len()).await;
        for quotes in batch.quotes.chunks(limit) {
            let request = BatchCheckMintQuoteRequest {
                quotes: quotes.iter().map(|(id, _)| id.clone()).collect(),
            };
            let states = self
                .client
                .post_batch_check_mint_quote_status(&ehash_method(), request)
                .await
                .map_err(WalletError::from);
            round.saw_answer(&states);
            let states = states?;
            // Each quote asked about, once, issued.
            let answered: HashSet<&str> = states
                .iter()
                .filter(|quote| quote.state() == Some(MintQuoteState::Issued))
                .map(|quote| quote.quote().as_str())
                .collect();
            if states.len() != quotes.len()
                || !quotes.iter().all(|(id, _)| answered.contains(id.as_str()))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The batches' proofs less those the mint reports spent (NUT-07): a
    /// crash may have stored a batch's proofs before closing it, and they
    /// may have been spent since and their rows deleted (a consolidation).
    async fn without_spent(
        &self,
        batches: Vec<(MintBatch, Vec<ProofInfo>)>,
    ) -> Result<Vec<(MintBatch, Vec<ProofInfo>)>, WalletError> {
        let ys: Vec<PublicKey> = batches
            .iter()
            .flat_map(|(_, proofs)| proofs.iter().map(|p| p.y))
            .collect();
        let mut spent = HashSet::new();
        for ys in ys.chunks(MAX_OUTPUTS) {
            let request = CheckStateRequest { ys: ys.to_vec() };
            let states = self.client.post_check_state(request).await?.states;
            let ys = states.into_iter().filter(|s| s.state == State::Spent);
            spent.extend(ys.map(|s| s.y));
        }
        if !spent.is_empty() {
            warn!(
                proofs = spent.len(),
                "proofs of a settled batch were spent already: not added again"
            );
        }
        let unspent = |proofs: Vec<ProofInfo>| -> Vec<ProofInfo> {
            proofs
                .into_iter()
                .filter(|p| !spent.contains(&p.y))
                .collect()
        };
        Ok(batches
            .into_iter()
            .map(|(batch, proofs)| (batch, unspent(proofs)))
            .collect())
    }
}

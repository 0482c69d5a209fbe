//! Minting the store's paid quotes in NUT-29 batches with a fixed number of
//! disk syncs per round, however many quotes it takes (cdk's own batch mint
//! writes the wallet database several times per quote, a sync each).
//!
//! One round:
//!
//! ```text
//!   reserve outputs ──> record batches ──> POST /v1/mint/ehash/batch
//!   (keyset counter,    (quote store)      (side by side)
//!    wallet database)                              │ signed
//!                                                  v
//!                     close batches   <──   store the proofs
//!                     (quotes minted)       (wallet database)
//! ```
//!
//! A batch's outputs carry the total of its quotes in the fewest proofs
//! (NUT-29 asks only that the totals match): a hundred quotes of a few
//! ehash each take about seven outputs, not a hundred. Elliptic-curve work
//! per output (blinding, the mint's signature and DLEQ proof, checking it,
//! unblinding) is what bounds both processes, and the wallet holds fewer
//! proofs.
//!
//! The outputs are derived from the seed at the reserved counters (NUT-13),
//! so a batch found open (a crash, an answer that never came, a refusal) is
//! settled from them ([`super::settle`]). A quote is never in a second
//! batch while its first is open.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cdk::amount::{Amount, FeeAndAmounts};
use cdk::dhke::construct_proofs;
use cdk::nuts::{
    nut12, BatchMintRequest, BlindSignature, BlindedMessage, Id, Keys, PreMintSecrets, PublicKey,
    SecretKey, State,
};
use cdk::secp256k1::{Keypair, Message};
use cdk::wallet::types::ProofInfo;
use cdk::wallet::MintConnector;
use cdk::SECP256K1;
use stratum_core::bitcoin::hashes::{sha256, Hash};
use tracing::warn;

use super::settle::LastRequest;
use super::{database, fewest_proofs, EhashWallet, MintRound, WalletError};
use crate::quotes::{MintBatch, QuoteStore};

/// NUT-29 batches in one round, requested side by side: the mint checks
/// one while it signs another, and the wallet checks an answer while the
/// mint works on the next.
pub const BATCHES_PER_ROUND: usize = 4;

/// The most blinded outputs one mint request may carry: cdk's default
/// `max_outputs` (the mint does not publish its own).
pub(super) const MAX_OUTPUTS: usize = 1000;

/// The fewest quotes a batch is given when a round's quotes are spread.
const MIN_SPREAD: usize = 25;

/// The quotes per batch for a round of `quotes`, at most `limit`: spread
/// over [`BATCHES_PER_ROUND`] batches, none below [`MIN_SPREAD`]. A batch
/// mint holds the mint's database for its whole transaction, and quotes
/// the mint writes meanwhile wait for it: several small batches side by
/// side keep that wait short, and a busy round still takes
/// `BATCHES_PER_ROUND * limit` quotes.
pub(super) fn spread(quotes: usize, limit: usize) -> usize {
    quotes
        .div_ceil(BATCHES_PER_ROUND)
        .max(MIN_SPREAD)
        .min(limit)
        .max(1)
}

/// Splits `quotes` into batches of at most `size` quotes whose total takes
/// at most [`MAX_OUTPUTS`] outputs (`outputs` counts a total's), in order.
pub(super) fn split_into_batches(
    quotes: Vec<(String, u64)>,
    size: usize,
    outputs: impl Fn(u64) -> usize,
) -> Vec<Vec<(String, u64)>> {
    let mut batches: Vec<Vec<(String, u64)>> = vec![];
    let mut total = 0u64;
    for quote in quotes {
        let grown = total
            .checked_add(quote.1)
            .filter(|&t| outputs(t) <= MAX_OUTPUTS);
        match (batches.last_mut(), grown) {
            (Some(last), Some(grown)) if last.len() < size => {
                total = grown;
                last.push(quote);
            }
            _ => {
                total = quote.1;
                batches.push(vec![quote]);
            }
        }
    }
    batches
}

/// The sum of a batch's quotes, which its outputs carry.
fn batch_total(quotes: &[(String, u64)]) -> Result<u64, WalletError> {
    quotes
        .iter()
        .try_fold(0u64, |sum, (_, amount)| sum.checked_add(*amount))
        .ok_or_else(|| WalletError::Other("a batch's total overflows".into()))
}

impl EhashWallet {
    /// Mints `quotes` in one round of NUT-29 requests of at most `size`
    /// quotes each (see the module doc). Quotes the mint did not sign stay
    /// pending; those of a request it refused, and of no batch still open,
    /// are returned, for the caller to ask about one by one.
    pub(super) async fn mint_in_batches(
        &self,
        store: &QuoteStore,
        quotes: Vec<(String, u64)>,
        size: usize,
        round: &mut MintRound,
    ) -> Result<Vec<(String, u64)>, WalletError> {
        let keyset = self.wallet.active_keyset().await?;
        let fees = self.fees_and_amounts(keyset.id).await?;
        let groups = split_into_batches(quotes, size, |total| {
            output_count(total, &fees).unwrap_or(usize::MAX)
        });
        let count = |quotes: &[(String, u64)]| -> Result<u32, WalletError> {
            let n = output_count(batch_total(quotes)?, &fees)?;
            u32::try_from(n).map_err(|_| WalletError::Other("too many outputs".into()))
        };
        let counts = groups
            .iter()
            .map(|group| count(group))
            .collect::<Result<Vec<u32>, _>>()?;
        let total: u32 = counts.iter().sum();
        // One reservation for the round: no other operation of the wallet
        // derives these counters again.
        let end = self.keyset_counter(keyset.id, total).await?;
        let mut counter = end - total;
        let mut batches = Vec::with_capacity(groups.len());
        for (quotes, outputs) in groups.into_iter().zip(counts) {
            batches.push(MintBatch {
                id: 0,
                keyset_id: keyset.id.to_string(),
                counter_start: counter,
                quotes,
                unanswered_since: 0,
            });
            counter += outputs;
        }
        store.open_batches(&mut batches)?;

        let answers = self.request_batches(&batches, &keyset.keys, &fees).await;
        let (mut signed, mut unsettled, mut refused) = (vec![], vec![], vec![]);
        for (batch, answer) in batches.into_iter().zip(answers) {
            round.saw_answer(&answer);
            match answer {
                Ok(proofs) => signed.push((batch, proofs)),
                Err(e) => {
                    warn!(
                        batch = batch.id,
                        quotes = batch.quotes.len(),
                        "batch mint failed ({e}); asking the mint what it signed"
                    );
                    let last = if e.answer_unknown() {
                        self.note_unanswered(store, batch.id)?;
                        LastRequest::Unanswered
                    } else {
                        refused.extend(batch.quotes.iter().cloned());
                        LastRequest::Refused
                    };
                    unsettled.push((batch, last));
                }
            }
        }
        self.store_and_close(store, signed, round).await?;
        let released = self.settle(store, unsettled, round).await?.released;
        refused.retain(|(id, _)| released.contains(id));
        Ok(refused)
    }

    /// Stores the proofs the wallet does not hold yet (one write), then
    /// closes the batches with their quotes minted (one transaction).
    pub(super) async fn store_and_close(
        &self,
        store: &QuoteStore,
        batches: Vec<(MintBatch, Vec<ProofInfo>)>,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut signed = vec![];
        let (mut ids, mut minted) = (vec![], vec![]);
        for (batch, proofs) in batches {
            signed.extend(proofs);
            ids.push(batch.id);
            for (quote_id, amount) in batch.quotes {
                minted.push(quote_id.clone());
                round.amount = round.amount.saturating_add(amount);
                round.minted.push((quote_id, amount));
            }
        }
        // Settling a batch whose proofs a crash stored before it was closed
        // must not add them again (they may have been spent since).
        let new = self.not_held(signed).await?;
        self.wallet
            .localstore
            .update_proofs(new, vec![])
            .await
            .map_err(database)?;
        store.close_batches(&ids, &minted)?;
        Ok(())
    }

    /// `proofs` but those the wallet holds already (whatever their state).
    pub(super) async fn not_held(
        &self,
        proofs: Vec<ProofInfo>,
    ) -> Result<Vec<ProofInfo>, WalletError> {
        if proofs.is_empty() {
            return Ok(proofs);
        }
        let ys = proofs.iter().map(|p| p.y).collect();
        let held: HashSet<PublicKey> = (self.wallet.localstore.get_proofs_by_ys(ys).await)
            .map_err(database)?
            .into_iter()
            .map(|p| p.y)
            .collect();
        Ok(proofs
            .into_iter()
            .filter(|p| !held.contains(&p.y))
            .collect())
    }

    /// Sends `batches`, [`BATCHES_PER_ROUND`] side by side at most; the
    /// proofs of each, once the mint signed every output. Outputs are
    /// derived and answers checked on blocking threads.
    async fn request_batches(
        &self,
        batches: &[MintBatch],
        keys: &Keys,
        fees: &FeeAndAmounts,
    ) -> Vec<Result<Vec<ProofInfo>, WalletError>> {
        let mut answers = Vec::with_capacity(batches.len());
        for side_by_side in batches.chunks(BATCHES_PER_ROUND) {
            let requests = side_by_side.iter().map(|batch| async move {
                let outputs = {
                    let (seed, batch, fees) = (self.seed, batch.clone(), fees.clone());
                    off_runtime(move || derive_outputs(&seed, &batch, &fees)).await?
                };
                self.send_batch(batch, outputs, keys.clone()).await
            });
            answers.extend(futures::future::join_all(requests).await);
        }
        answers
    }

    /// Sends `batch` with `outputs`, its own; the proofs once the mint
    /// signed every output.
    pub(super) async fn send_batch(
        &self,
        batch: &MintBatch,
        outputs: PreMintSecrets,
        keys: Keys,
    ) -> Result<Vec<ProofInfo>, WalletError> {
        let request = {
            let (secret, batch, outputs) = (self.secret.clone(), batch.clone(), outputs.clone());
            off_runtime(move || Ok(signed_request(&batch, &outputs, &secret))).await?
        };
        let answer = self
            .client
            .post_batch_mint(&super::ehash_method(), request)
            .await?;
        self.proofs(outputs, answer.signatures, keys).await
    }

    /// The proofs of `premint` from the mint's signatures, each checked
    /// against its output (amount, keyset, DLEQ proof).
    pub(super) fn proofs(
        &self,
        premint: PreMintSecrets,
        signatures: Vec<BlindSignature>,
        keys: Keys,
    ) -> impl std::future::Future<Output = Result<Vec<ProofInfo>, WalletError>> + Send + 'static
    {
        let mint_url = self.wallet.mint_url.clone();
        off_runtime(move || {
            check_signatures(
                &signatures,
                premint.secrets.iter().map(|p| &p.blinded_message),
                &keys,
            )?;
            let proofs = construct_proofs(signatures, premint.rs(), premint.secrets(), &keys)
                .map_err(|e| {
                    WalletError::Other(format!("unblinding the mint's signatures: {e}"))
                })?;
            proofs
                .into_iter()
                .zip(&premint.secrets)
                .map(|(proof, pre)| {
                    let info = ProofInfo::new(
                        proof,
                        mint_url.clone(),
                        State::Unspent,
                        super::ehash_unit(),
                    )?;
                    Ok(match pre.derivation_index {
                        Some(index) => info.with_derivation_index(index),
                        None => info,
                    })
                })
                .collect::<Result<_, cdk::Error>>()
                .map_err(WalletError::from)
        })
    }

    pub(super) async fn fees_and_amounts(
        &self,
        keyset_id: Id,
    ) -> Result<FeeAndAmounts, WalletError> {
        Ok(self
            .wallet
            .get_keyset_fees_and_amounts_by_id(keyset_id)
            .await?)
    }
}

/// Runs CPU-bound work (elliptic-curve operations by the thousand) off the
/// async workers, so the batches in flight use every core.
pub(super) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WalletError> + Send + 'static,
) -> Result<T, WalletError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WalletError::Other(format!("wallet task: {e}")))?
}

/// The outputs of `batch`, derived from `seed` at its counters: its total
/// in the fewest proofs.
pub(super) fn derive_outputs(
    seed: &[u8; 64],
    batch: &MintBatch,
    fees: &FeeAndAmounts,
) -> Result<PreMintSecrets, WalletError> {
    let keyset_id = Id::from_str(&batch.keyset_id)
        .map_err(|e| WalletError::Other(format!("batch keyset {}: {e}", batch.keyset_id)))?;
    PreMintSecrets::from_seed(
        keyset_id,
        batch.counter_start,
        seed,
        Amount::from(batch_total(&batch.quotes)?),
        &fewest_proofs(),
        fees,
    )
    .map_err(|e| WalletError::Other(format!("deriving outputs: {e}")))
}

/// The NUT-29 request of `batch`, each quote signed with the wallet's
/// locking key (NUT-20: a BIP-340 signature of the message cashu defines).
/// The key pair is computed once for the batch, not once per quote as
/// cashu's `sign_quote` does.
fn signed_request(
    batch: &MintBatch,
    outputs: &PreMintSecrets,
    secret: &SecretKey,
) -> BatchMintRequest<String> {
    let mut request = BatchMintRequest {
        quotes: batch.quotes.iter().map(|(id, _)| id.clone()).collect(),
        quote_amounts: Some(batch.quotes.iter().map(|(_, a)| Amount::from(*a)).collect()),
        outputs: outputs.blinded_messages(),
        signatures: None,
    };
    let keypair = Keypair::from_secret_key(&SECP256K1, secret);
    let signatures = request
        .quotes
        .iter()
        .map(|quote| {
            let digest = sha256::Hash::hash(&request.msg_to_sign(quote)).to_byte_array();
            let signature = SECP256K1.sign_schnorr(&Message::from_digest(digest), &keypair);
            Some(signature.to_string())
        })
        .collect();
    request.signatures = Some(signatures);
    request
}

/// How many outputs a total of `amount` takes.
fn output_count(amount: u64, fees: &FeeAndAmounts) -> Result<usize, WalletError> {
    Amount::from(amount)
        .split_targeted(&fewest_proofs(), fees)
        .map(|split| split.len())
        .map_err(|e| WalletError::Other(format!("splitting {amount}: {e}")))
}

/// The outputs of `premint` the mint signed (found in `by_blinded`), with
/// their signatures, in output order.
pub(super) fn signed_outputs(
    premint: PreMintSecrets,
    by_blinded: &HashMap<PublicKey, BlindSignature>,
) -> (PreMintSecrets, Vec<BlindSignature>) {
    let mut signed = PreMintSecrets::new(premint.keyset_id);
    let mut signatures = vec![];
    for pre in premint.secrets {
        if let Some(signature) = by_blinded.get(&pre.blinded_message.blinded_secret) {
            signatures.push(signature.clone());
            signed.secrets.push(pre);
        }
    }
    (signed, signatures)
}

/// Whether `signature` is of `output`'s amount and keyset.
pub(super) fn signs_as_asked(signature: &BlindSignature, output: &BlindedMessage) -> bool {
    signature.amount == output.amount && signature.keyset_id == output.keyset_id
}

/// Each signature matches its output (amount, keyset) and carries a valid
/// DLEQ proof when it carries one.
fn check_signatures<'a>(
    signatures: &[BlindSignature],
    outputs: impl ExactSizeIterator<Item = &'a BlindedMessage>,
    keys: &Keys,
) -> Result<(), WalletError> {
    let bad = |why: String| WalletError::Other(format!("the mint's answer: {why}"));
    if signatures.len() != outputs.len() {
        return Err(bad(format!(
            "{} signatures for {} outputs",
            signatures.len(),
            outputs.len()
        )));
    }
    for (signature, output) in signatures.iter().zip(outputs) {
        if !signs_as_asked(signature, output) {
            return Err(bad("a signature of another amount or keyset".into()));
        }
        let key = keys
            .amount_key(signature.amount)
            .ok_or_else(|| bad(format!("no key for amount {}", signature.amount)))?;
        match signature.verify_dleq(key, output.blinded_secret) {
            Ok(()) | Err(nut12::Error::MissingDleqProof) => {}
            Err(e) => return Err(bad(format!("DLEQ proof: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotes(amounts: &[u64]) -> Vec<(String, u64)> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("q{i}"), *a))
            .collect()
    }

    fn sizes(batches: &[Vec<(String, u64)>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    /// A batch of quotes of `amounts` from counter 10 of a test seed, and
    /// its outputs.
    fn outputs_of(amounts: &[u64]) -> (MintBatch, PreMintSecrets) {
        let fees: FeeAndAmounts = (0, (0..64).map(|i| 1u64 << i).collect::<Vec<_>>()).into();
        let batch = MintBatch {
            id: 1,
            keyset_id: "009a1f293253e41e".into(),
            counter_start: 10,
            quotes: quotes(amounts),
            unanswered_since: 0,
        };
        let outputs = derive_outputs(&[7; 64], &batch, &fees).unwrap();
        (batch, outputs)
    }

    fn signature_for(output: &BlindedMessage) -> BlindSignature {
        BlindSignature {
            amount: output.amount,
            keyset_id: output.keyset_id,
            c: output.blinded_secret,
            dleq: None,
        }
    }

    #[test]
    fn a_batch_carries_its_total_in_the_fewest_outputs_at_its_counters() {
        // 3 + 4 + 5 = 12 = 8 + 4.
        let (_, outputs) = outputs_of(&[3, 4, 5]);
        let amounts: Vec<u64> = outputs.amounts().into_iter().map(u64::from).collect();
        assert_eq!(amounts, [8, 4]);
        let counters: Vec<Option<u32>> = outputs
            .secrets
            .iter()
            .map(|pre| pre.derivation_index)
            .collect();
        assert_eq!(counters, [Some(10), Some(11)]);
        // Derived again, the same outputs: a batch can be restored.
        assert_eq!(
            outputs_of(&[3, 4, 5]).1.blinded_messages(),
            outputs.blinded_messages()
        );
        assert!(batch_total(&quotes(&[u64::MAX, 1])).is_err());
    }

    #[test]
    fn signed_outputs_are_those_the_mint_answered_in_output_order() {
        // 1 + 2 + 4 + 8 + 16 = 31: five outputs.
        let (_, outputs) = outputs_of(&[31]);
        let blinded = outputs.blinded_messages();
        let answered: HashMap<PublicKey, BlindSignature> = [3, 0, 4]
            .iter()
            .map(|&i| (blinded[i].blinded_secret, signature_for(&blinded[i])))
            .collect();
        let (signed, signatures) = signed_outputs(outputs.clone(), &answered);
        let expected: Vec<PublicKey> = [0, 3, 4]
            .iter()
            .map(|&i| blinded[i].blinded_secret)
            .collect();
        let order: Vec<PublicKey> = signatures.iter().map(|s| s.c).collect();
        assert_eq!(order, expected, "signatures in the order of their outputs");
        let kept: Vec<PublicKey> = signed
            .blinded_messages()
            .iter()
            .map(|b| b.blinded_secret)
            .collect();
        assert_eq!(kept, expected, "each with its own output");

        let (none, signatures) = signed_outputs(outputs, &HashMap::new());
        assert!(none.secrets.is_empty() && signatures.is_empty());
    }

    #[test]
    fn each_quote_is_signed_as_the_mint_checks_it() {
        let (batch, outputs) = outputs_of(&[1, 2, 4]);
        let secret = SecretKey::generate();
        let request = signed_request(&batch, &outputs, &secret);
        let signatures = request.signatures.clone().unwrap();
        assert_eq!(signatures.len(), 3);
        for (quote, signature) in request.quotes.iter().zip(&signatures) {
            let signature = signature.as_deref().unwrap();
            request
                .verify_quote_signature(quote, signature, &secret.public_key())
                .unwrap();
            let other = SecretKey::generate().public_key();
            assert!(request
                .verify_quote_signature(quote, signature, &other)
                .is_err());
        }
        // A signature covers its own quote only.
        let first = signatures[0].as_deref().unwrap();
        assert!(request
            .verify_quote_signature(&request.quotes[1], first, &secret.public_key())
            .is_err());
    }

    #[test]
    fn a_rounds_quotes_are_spread_over_its_batches_within_the_limit() {
        assert_eq!(spread(200, 250), 50, "a calm round: four batches");
        assert_eq!(spread(1000, 250), 250, "a full round: four at the limit");
        assert_eq!(spread(5000, 250), 250);
        assert_eq!(spread(201, 250), 51, "never a fifth batch");
        assert_eq!(spread(30, 250), MIN_SPREAD, "few quotes: few batches");
        assert_eq!(spread(1, 250), MIN_SPREAD);
        assert_eq!(spread(100, 10), 10, "the limit wins");
        assert_eq!(spread(0, 0), 1);
    }

    #[test]
    fn batches_hold_at_most_their_size_and_the_mints_output_limit() {
        // One output per power of two in a batch's total.
        let ones = |total: u64| total.count_ones() as usize;
        assert_eq!(sizes(&split_into_batches(quotes(&[1; 5]), 3, ones)), [3, 2]);
        assert_eq!(
            sizes(&split_into_batches(quotes(&[1; 5000]), 5000, ones)),
            [5000],
            "5000 quotes of 1 take 6 outputs"
        );
        // Outputs counted by quotes: 1000 fit.
        let per_quote = |total: u64| total as usize;
        assert_eq!(
            sizes(&split_into_batches(quotes(&[1; 1001]), 5000, per_quote)),
            [1000, 1]
        );
        // A total that would overflow starts a new batch.
        assert_eq!(
            sizes(&split_into_batches(quotes(&[u64::MAX, 1, 2]), 100, ones)),
            [1, 2]
        );
        assert!(split_into_batches(vec![], 10, ones).is_empty());
        let order: Vec<String> = split_into_batches(quotes(&[1, 2, 3]), 2, ones)
            .concat()
            .into_iter()
            .map(|q| q.0)
            .collect();
        assert_eq!(order, ["q0", "q1", "q2"], "in order");
    }
}

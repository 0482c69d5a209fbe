//! Minting the store's paid quotes in NUT-29 batches with a fixed number of
//! disk syncs per round, however many quotes it takes (cdk's own batch mint
//! writes the wallet database several times per quote, a sync each).
//!
//! One round:
//!
//! ```text
//!   reserve outputs ──> record batches ──> POST /v1/mint/ehash/batch
//!   (keyset counter,    (quote store)      (one after the other)
//!    wallet database)                              │ signed
//!                                                  v
//!                     close batches   <──   store the proofs
//!                     (quotes minted)       (wallet database)
//! ```
//!
//! The outputs are derived from the seed at the reserved counters (NUT-13),
//! so a batch found open (a crash, an answer that never came, a refusal) is
//! settled by deriving them again and asking the mint which it signed
//! (NUT-09 restore): those quotes are minted, the others are pending again.
//! A quote is never in a second batch while its first is open.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cdk::amount::{Amount, FeeAndAmounts};
use cdk::dhke::construct_proofs;
use cdk::nuts::{
    nut12, BatchMintRequest, BlindSignature, BlindedMessage, Id, Keys, PreMintSecrets, PublicKey,
    RestoreRequest, SecretKey, State,
};
use cdk::wallet::types::ProofInfo;
use cdk::wallet::MintConnector;
use tracing::{info, warn};

use super::{database, fewest_proofs, EhashWallet, MintRound, WalletError};
use crate::quotes::{MintBatch, QuoteStore};

/// NUT-29 batches in one round. Their outputs are derived side by side and
/// their requests sent one after the other, each answer checked while the
/// mint signs the next: cdk's mint on SQLite, given batch mints at the same
/// time, now and then fails one with "database is locked" after its 10 s
/// busy timeout.
pub const BATCHES_PER_ROUND: usize = 4;

/// The most blinded outputs one mint request may carry: cdk's default
/// `max_outputs` (the mint does not publish its own).
const MAX_OUTPUTS: usize = 1000;

/// A batch's outputs, derived from the seed.
struct Outputs {
    premint: PreMintSecrets,
    /// How many outputs each quote of the batch has, in order.
    per_quote: Vec<usize>,
}

/// Splits `quotes` into batches of at most `size` quotes and
/// [`MAX_OUTPUTS`] outputs each (`outputs` counts a quote's), in order.
pub(super) fn split_into_batches(
    quotes: Vec<(String, u64)>,
    size: usize,
    outputs: impl Fn(u64) -> usize,
) -> Vec<Vec<(String, u64)>> {
    let mut batches: Vec<Vec<(String, u64)>> = vec![];
    let mut used = 0;
    for quote in quotes {
        let n = outputs(quote.1);
        match batches.last_mut() {
            Some(last) if last.len() < size && used + n <= MAX_OUTPUTS => {
                used += n;
                last.push(quote);
            }
            _ => {
                used = n;
                batches.push(vec![quote]);
            }
        }
    }
    batches
}

impl EhashWallet {
    /// Mints `quotes` in one round of NUT-29 requests of at most `size`
    /// quotes each (see the module doc). Quotes the mint did not sign stay
    /// pending; those of a request it refused are returned, for the caller
    /// to ask about one by one.
    pub(super) async fn mint_in_batches(
        &self,
        store: &QuoteStore,
        quotes: Vec<(String, u64)>,
        size: usize,
        round: &mut MintRound,
    ) -> Result<Vec<(String, u64)>, WalletError> {
        let keyset = self.wallet.active_keyset().await?;
        let fees = self.fees_and_amounts(keyset.id).await?;
        let groups = split_into_batches(quotes, size, |amount| {
            output_count(amount, &fees).unwrap_or(MAX_OUTPUTS)
        });
        let count = |quotes: &[(String, u64)]| -> Result<u32, WalletError> {
            let mut n = 0;
            for (_, amount) in quotes {
                n += output_count(*amount, &fees)?;
            }
            u32::try_from(n).map_err(|_| WalletError::Other("too many outputs".into()))
        };
        let counts = groups
            .iter()
            .map(|group| count(group))
            .collect::<Result<Vec<u32>, _>>()?;
        let total: u32 = counts.iter().sum();
        // One reservation for the round: no other operation of the wallet
        // derives these counters again.
        let end = self
            .wallet
            .localstore
            .increment_keyset_counter(&keyset.id, total)
            .await
            .map_err(database)?;
        let mut counter = end - total;
        let mut batches = Vec::with_capacity(groups.len());
        for (quotes, outputs) in groups.into_iter().zip(counts) {
            batches.push(MintBatch {
                id: 0,
                keyset_id: keyset.id.to_string(),
                counter_start: counter,
                quotes,
            });
            counter += outputs;
        }
        store.open_batches(&mut batches)?;

        let answers = self.request_batches(&batches, &keyset.keys, &fees).await;
        let (mut signed, mut unsettled, mut refused) = (vec![], vec![], vec![]);
        for (batch, answer) in batches.into_iter().zip(answers) {
            match answer {
                Ok(proofs) => {
                    round.saw_mint(true);
                    signed.push((batch, proofs));
                }
                Err(e) => {
                    round.saw_mint(!e.mint_unreachable());
                    warn!(
                        batch = batch.id,
                        quotes = batch.quotes.len(),
                        "batch mint failed ({e}); asking the mint what it signed"
                    );
                    if !e.mint_unreachable() {
                        refused.extend(batch.quotes.iter().cloned());
                    }
                    unsettled.push(batch);
                }
            }
        }
        self.store_and_close(store, signed, round).await?;
        let restored = self.settle(store, unsettled, round).await?;
        refused.retain(|(id, _)| !restored.contains(id));
        Ok(refused)
    }

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
        Ok(self.settle(store, open, round).await?.len())
    }

    /// Asks the mint which outputs of `batches` it signed (NUT-09): those
    /// quotes are minted, the others pending again; the quotes minted. A
    /// batch stays open while the mint cannot be asked.
    async fn settle(
        &self,
        store: &QuoteStore,
        batches: Vec<MintBatch>,
        round: &mut MintRound,
    ) -> Result<HashSet<String>, WalletError> {
        let mut settled = vec![];
        for batch in batches {
            let keyset_id = Id::from_str(&batch.keyset_id).map_err(|e| {
                WalletError::Other(format!("batch keyset {}: {e}", batch.keyset_id))
            })?;
            let keys = self.wallet.keyset(keyset_id).await?.keys;
            let fees = self.fees_and_amounts(keyset_id).await?;
            let outputs = {
                let (seed, batch) = (self.seed, batch.clone());
                off_runtime(move || derive_outputs(&seed, &batch, &fees)).await?
            };
            let restored = self
                .client
                .post_restore(RestoreRequest {
                    outputs: outputs.premint.blinded_messages(),
                })
                .await
                .map_err(WalletError::from);
            round.saw_mint(!matches!(&restored, Err(e) if e.mint_unreachable()));
            let restored = restored?;
            let by_blinded: HashMap<PublicKey, BlindSignature> = restored
                .outputs
                .iter()
                .zip(restored.signatures)
                .map(|(output, signature)| (output.blinded_secret, signature))
                .collect();
            let signed = signed_quotes(&batch, &outputs, &by_blinded);
            if signed.quotes.is_empty() {
                info!(
                    batch = batch.id,
                    "the mint signed nothing of this batch: its quotes are pending again"
                );
                store.close_batches(&[batch.id], &[])?;
                continue;
            }
            info!(
                batch = batch.id,
                quotes = signed.quotes.len(),
                "restored a signed batch"
            );
            let proofs = self.proofs(signed.premint, signed.signatures, keys).await?;
            settled.push((
                MintBatch {
                    quotes: signed.quotes,
                    ..batch
                },
                proofs,
            ));
        }
        let restored = settled
            .iter()
            .flat_map(|(batch, _)| batch.quotes.iter().map(|(id, _)| id.clone()))
            .collect();
        self.store_and_close(store, settled, round).await?;
        Ok(restored)
    }

    /// Stores the proofs the wallet does not hold yet (one write), then
    /// closes the batches with their quotes minted (one transaction).
    async fn store_and_close(
        &self,
        store: &QuoteStore,
        batches: Vec<(MintBatch, Vec<ProofInfo>)>,
        round: &mut MintRound,
    ) -> Result<(), WalletError> {
        if batches.is_empty() {
            return Ok(());
        }
        let ys: Vec<PublicKey> = batches
            .iter()
            .flat_map(|(_, proofs)| proofs.iter().map(|p| p.y))
            .collect();
        // Settling a batch whose proofs a crash stored before it was closed
        // must not add them again (they may have been spent since).
        let held: HashSet<PublicKey> = self
            .wallet
            .localstore
            .get_proofs_by_ys(ys)
            .await
            .map_err(database)?
            .into_iter()
            .map(|p| p.y)
            .collect();
        let mut new = vec![];
        let (mut ids, mut minted) = (vec![], vec![]);
        for (batch, proofs) in batches {
            new.extend(proofs.into_iter().filter(|p| !held.contains(&p.y)));
            ids.push(batch.id);
            for (quote_id, amount) in batch.quotes {
                minted.push(quote_id.clone());
                round.amount += amount;
                round.minted.push((quote_id, amount));
            }
        }
        self.wallet
            .localstore
            .update_proofs(new, vec![])
            .await
            .map_err(database)?;
        store.close_batches(&ids, &minted)?;
        Ok(())
    }

    /// Sends `batches` one after the other (see [`BATCHES_PER_ROUND`]); the
    /// proofs of each, once the mint signed every output.
    async fn request_batches(
        &self,
        batches: &[MintBatch],
        keys: &Keys,
        fees: &FeeAndAmounts,
    ) -> Vec<Result<Vec<ProofInfo>, WalletError>> {
        let prepared = batches.iter().map(|batch| {
            let (seed, secret, batch, fees) =
                (self.seed, self.secret.clone(), batch.clone(), fees.clone());
            off_runtime(move || {
                let outputs = derive_outputs(&seed, &batch, &fees)?;
                let request = signed_request(&batch, &outputs, &secret)?;
                Ok((outputs, request))
            })
        });
        let mut checking = Vec::with_capacity(batches.len());
        for prepared in futures::future::join_all(prepared).await {
            let answer = match prepared {
                Ok((outputs, request)) => self
                    .client
                    .post_batch_mint(&super::ehash_method(), request)
                    .await
                    .map(|answer| (outputs, answer))
                    .map_err(WalletError::from),
                Err(e) => Err(e),
            };
            // Checked and unblinded on a blocking thread from now on.
            checking.push(answer.map(|(outputs, answer)| {
                tokio::spawn(self.proofs(outputs.premint, answer.signatures, keys.clone()))
            }));
        }
        let mut proofs = Vec::with_capacity(batches.len());
        for checked in checking {
            proofs.push(match checked {
                Ok(task) => task
                    .await
                    .unwrap_or_else(|e| Err(WalletError::Other(format!("wallet task: {e}")))),
                Err(e) => Err(e),
            });
        }
        proofs
    }

    /// The proofs of `premint` from the mint's signatures, each checked
    /// against its output (amount, keyset, DLEQ proof).
    fn proofs(
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

    async fn fees_and_amounts(&self, keyset_id: Id) -> Result<FeeAndAmounts, WalletError> {
        Ok(self
            .wallet
            .get_keyset_fees_and_amounts_by_id(keyset_id)
            .await?)
    }
}

/// Runs CPU-bound work (elliptic-curve operations by the thousand) off the
/// async workers, so the batches in flight use every core.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WalletError> + Send + 'static,
) -> Result<T, WalletError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WalletError::Other(format!("wallet task: {e}")))?
}

/// The outputs of `batch`, derived from `seed` at its counters.
fn derive_outputs(
    seed: &[u8; 64],
    batch: &MintBatch,
    fees: &FeeAndAmounts,
) -> Result<Outputs, WalletError> {
    let keyset_id = Id::from_str(&batch.keyset_id)
        .map_err(|e| WalletError::Other(format!("batch keyset {}: {e}", batch.keyset_id)))?;
    let mut premint = PreMintSecrets::new(keyset_id);
    let mut per_quote = Vec::with_capacity(batch.quotes.len());
    let mut counter = batch.counter_start;
    for (_, amount) in &batch.quotes {
        let quote = PreMintSecrets::from_seed(
            keyset_id,
            counter,
            seed,
            Amount::from(*amount),
            &fewest_proofs(),
            fees,
        )
        .map_err(|e| WalletError::Other(format!("deriving outputs: {e}")))?;
        counter += quote.secrets.len() as u32;
        per_quote.push(quote.secrets.len());
        premint.secrets.extend(quote.secrets);
    }
    Ok(Outputs { premint, per_quote })
}

/// The NUT-29 request of `batch`, each quote signed with the wallet's
/// locking key (NUT-20).
fn signed_request(
    batch: &MintBatch,
    outputs: &Outputs,
    secret: &SecretKey,
) -> Result<BatchMintRequest<String>, WalletError> {
    let mut request = BatchMintRequest {
        quotes: batch.quotes.iter().map(|(id, _)| id.clone()).collect(),
        quote_amounts: Some(batch.quotes.iter().map(|(_, a)| Amount::from(*a)).collect()),
        outputs: outputs.premint.blinded_messages(),
        signatures: None,
    };
    let mut signatures = Vec::with_capacity(batch.quotes.len());
    for quote in &request.quotes {
        let signature = request
            .sign_quote(quote, secret)
            .map_err(|e| WalletError::Other(format!("signing quote {quote}: {e}")))?;
        signatures.push(Some(signature));
    }
    request.signatures = Some(signatures);
    Ok(request)
}

/// How many outputs a quote of `amount` takes.
pub(super) fn output_count(amount: u64, fees: &FeeAndAmounts) -> Result<usize, WalletError> {
    Amount::from(amount)
        .split_targeted(&fewest_proofs(), fees)
        .map(|split| split.len())
        .map_err(|e| WalletError::Other(format!("splitting {amount}: {e}")))
}

/// The quotes of a batch whose every output the mint signed, with those
/// outputs and signatures in order.
struct Signed {
    quotes: Vec<(String, u64)>,
    premint: PreMintSecrets,
    signatures: Vec<BlindSignature>,
}

fn signed_quotes(
    batch: &MintBatch,
    outputs: &Outputs,
    by_blinded: &HashMap<PublicKey, BlindSignature>,
) -> Signed {
    let mut signed = Signed {
        quotes: vec![],
        premint: PreMintSecrets::new(outputs.premint.keyset_id),
        signatures: vec![],
    };
    let mut offset = 0;
    for (quote, n) in batch.quotes.iter().zip(&outputs.per_quote) {
        let own = &outputs.premint.secrets[offset..offset + n];
        offset += n;
        let found: Vec<&BlindSignature> = own
            .iter()
            .filter_map(|pre| by_blinded.get(&pre.blinded_message.blinded_secret))
            .collect();
        if found.len() == own.len() {
            signed.quotes.push(quote.clone());
            signed.premint.secrets.extend(own.iter().cloned());
            signed.signatures.extend(found.into_iter().cloned());
        } else if !found.is_empty() {
            // The mint signs a quote's outputs together or not at all.
            warn!(
                quote = quote.0,
                signed = found.len(),
                outputs = own.len(),
                "the mint signed part of a quote's outputs: left pending"
            );
        }
    }
    signed
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
        if signature.amount != output.amount || signature.keyset_id != output.keyset_id {
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

    /// The outputs of quotes of `amounts` from counter 0 of a test seed.
    fn outputs_of(amounts: &[u64]) -> (MintBatch, Outputs) {
        let fees: FeeAndAmounts = (0, (0..64).map(|i| 1u64 << i).collect::<Vec<_>>()).into();
        let batch = MintBatch {
            id: 1,
            keyset_id: "009a1f293253e41e".into(),
            counter_start: 0,
            quotes: quotes(amounts),
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
    fn a_restored_quote_counts_only_with_every_output_signed() {
        // 3 = 1 + 2 (two outputs), 4 (one), 5 = 1 + 4 (two).
        let (batch, outputs) = outputs_of(&[3, 4, 5]);
        assert_eq!(outputs.per_quote, [2, 1, 2]);
        let blinded = outputs.premint.blinded_messages();
        // All of the first and the last quote's outputs, one of the second's.
        let answered: HashMap<PublicKey, BlindSignature> = [0, 1, 3, 4]
            .iter()
            .map(|&i| (blinded[i].blinded_secret, signature_for(&blinded[i])))
            .collect();
        let signed = signed_quotes(&batch, &outputs, &answered);
        assert_eq!(
            signed.quotes,
            vec![("q0".to_string(), 3), ("q2".to_string(), 5)]
        );
        let order: Vec<PublicKey> = signed.signatures.iter().map(|s| s.c).collect();
        let expected: Vec<PublicKey> = [0, 1, 3, 4]
            .iter()
            .map(|&i| blinded[i].blinded_secret)
            .collect();
        assert_eq!(order, expected, "signatures in the order of their outputs");
        assert_eq!(signed.premint.secrets.len(), 4);

        let none = signed_quotes(&batch, &outputs, &HashMap::new());
        assert!(none.quotes.is_empty() && none.signatures.is_empty());
    }

    #[test]
    fn batches_hold_at_most_their_size_and_the_mints_output_limit() {
        let ones = |a: u64| a.count_ones() as usize;
        assert_eq!(sizes(&split_into_batches(quotes(&[1; 5]), 3, ones)), [3, 2]);
        assert_eq!(
            sizes(&split_into_batches(quotes(&[1; 1001]), 5000, ones)),
            [1000, 1]
        );
        // 19 takes three outputs: 333 fit in 1000.
        assert_eq!(
            sizes(&split_into_batches(quotes(&[19; 400]), 5000, ones)),
            [333, 67]
        );
        assert_eq!(
            sizes(&split_into_batches(quotes(&[u64::MAX; 20]), 100, ones)),
            [15, 5]
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

//! The devnet's unspent outputs and the checks a transaction must pass to
//! spend them, without IO.
//!
//! A devnet is not a full node: it verifies P2WPKH spends (the kind its own
//! wallet makes, and what most wallets make) and refuses every other
//! script kind by name, rather than accepting what it cannot check.

use std::collections::{HashMap, HashSet};

use stratum_core::bitcoin::{
    ecdsa,
    secp256k1::{Message, Secp256k1, VerifyOnly},
    sighash::SighashCache,
    CompressedPublicKey, OutPoint, Transaction, TxOut,
};

/// Blocks a coinbase output waits before it can be spent (Bitcoin's rule).
pub const BITCOIN_COINBASE_MATURITY: u32 = 100;

/// An unspent output and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    pub output: TxOut,
    pub height: u32,
    pub coinbase: bool,
}

/// Why a transaction cannot be mined on top of a set of coins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction has no inputs")]
    NoInputs,
    #[error("transaction has no outputs")]
    NoOutputs,
    #[error("a coinbase transaction outside the first place of a block")]
    Coinbase,
    #[error("input {0} spends an output that does not exist or is spent")]
    MissingInput(OutPoint),
    #[error("input {0} is spent twice in the transaction")]
    DuplicateInput(OutPoint),
    #[error("input {outpoint} spends a coinbase output of height {height}, mature at {mature_at}")]
    Immature {
        outpoint: OutPoint,
        height: u32,
        mature_at: u32,
    },
    #[error("outputs pay {outputs} sat, more than the inputs' {inputs} sat")]
    Overspends { inputs: u64, outputs: u64 },
    #[error("input {0} spends a script the devnet does not verify (only P2WPKH)")]
    UnsupportedScript(usize),
    #[error("input {0}: signature does not verify: {1}")]
    BadSignature(usize, String),
}

/// The unspent outputs of a chain (or of a chain and a mempool on top of it).
#[derive(Debug, Clone, Default)]
pub struct UtxoSet {
    coins: HashMap<OutPoint, Coin>,
}

impl UtxoSet {
    pub fn get(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.coins.get(outpoint)
    }

    pub fn len(&self) -> usize {
        self.coins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&OutPoint, &Coin)> {
        self.coins.iter()
    }

    /// Spends `tx`'s inputs and adds its outputs, unchecked (see [`UtxoSet::check`]).
    pub fn apply(&mut self, tx: &Transaction, height: u32) {
        let coinbase = tx.is_coinbase();
        if !coinbase {
            for input in &tx.input {
                self.coins.remove(&input.previous_output);
            }
        }
        let txid = tx.compute_txid();
        for (vout, output) in tx.output.iter().enumerate() {
            // Provably unspendable outputs (the witness commitment) never become coins.
            if output.script_pubkey.is_op_return() {
                continue;
            }
            self.coins.insert(
                OutPoint::new(txid, vout as u32),
                Coin {
                    output: output.clone(),
                    height,
                    coinbase,
                },
            );
        }
    }

    /// Checks that `tx` can be mined in a block at `height` on top of these
    /// coins: it spends existing, mature outputs, each once, with valid
    /// signatures, and pays no more than it spends. Returns its fee.
    pub fn check(
        &self,
        tx: &Transaction,
        height: u32,
        coinbase_maturity: u32,
        secp: &Secp256k1<VerifyOnly>,
    ) -> Result<u64, TxError> {
        if tx.is_coinbase() {
            return Err(TxError::Coinbase);
        }
        if tx.input.is_empty() {
            return Err(TxError::NoInputs);
        }
        if tx.output.is_empty() {
            return Err(TxError::NoOutputs);
        }
        let mut seen = HashSet::new();
        let mut spent = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            let outpoint = input.previous_output;
            if !seen.insert(outpoint) {
                return Err(TxError::DuplicateInput(outpoint));
            }
            let coin = self
                .coins
                .get(&outpoint)
                .ok_or(TxError::MissingInput(outpoint))?;
            let mature_at = coin.height.saturating_add(coinbase_maturity);
            if coin.coinbase && height < mature_at {
                return Err(TxError::Immature {
                    outpoint,
                    height: coin.height,
                    mature_at,
                });
            }
            spent.push(&coin.output);
        }
        let sum = |outs: &mut dyn Iterator<Item = &TxOut>| {
            outs.map(|o| o.value.to_sat())
                .fold(0u64, u64::saturating_add)
        };
        let inputs = sum(&mut spent.iter().copied());
        let outputs = sum(&mut tx.output.iter());
        if outputs > inputs {
            return Err(TxError::Overspends { inputs, outputs });
        }
        // Signatures last: they cost the most.
        let mut sighashes = SighashCache::new(tx);
        for (index, output) in spent.into_iter().enumerate() {
            verify_p2wpkh(tx, &mut sighashes, index, output, secp)?;
        }
        Ok(inputs - outputs)
    }
}

/// Verifies input `index` as a P2WPKH spend of `spent`: witness = [sig, key],
/// the key hashes to the output's program, the signature is over BIP143.
fn verify_p2wpkh(
    tx: &Transaction,
    sighashes: &mut SighashCache<&Transaction>,
    index: usize,
    spent: &TxOut,
    secp: &Secp256k1<VerifyOnly>,
) -> Result<(), TxError> {
    if !spent.script_pubkey.is_p2wpkh() {
        return Err(TxError::UnsupportedScript(index));
    }
    let bad = |reason: &str| TxError::BadSignature(index, reason.to_string());
    let witness = &tx.input[index].witness;
    if witness.len() != 2 || !tx.input[index].script_sig.is_empty() {
        return Err(bad("a P2WPKH witness is [signature, public key]"));
    }
    let signature = ecdsa::Signature::from_slice(&witness[0]).map_err(|e| bad(&e.to_string()))?;
    let key = CompressedPublicKey::from_slice(&witness[1]).map_err(|e| bad(&e.to_string()))?;
    if spent.script_pubkey != stratum_core::bitcoin::ScriptBuf::new_p2wpkh(&key.wpubkey_hash()) {
        return Err(bad("the public key does not match the spent output"));
    }
    let sighash = sighashes
        .p2wpkh_signature_hash(
            index,
            &spent.script_pubkey,
            spent.value,
            signature.sighash_type,
        )
        .map_err(|e| bad(&e.to_string()))?;
    secp.verify_ecdsa(&Message::from(sighash), &signature.signature, &key.0)
        .map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use stratum_core::bitcoin::{
        absolute::LockTime, hashes::Hash, transaction, Amount, ScriptBuf, Sequence, TxIn, Txid,
        Witness,
    };

    use super::*;
    use crate::wallet::{Wallet, TX_FEE_SATS};

    const MATURITY: u32 = 2;

    /// Coins holding one coinbase output of `sats` at height 1 paying `script`.
    fn coins_with_coinbase(script: &ScriptBuf, sats: u64) -> (UtxoSet, OutPoint) {
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![0x51]),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(sats),
                script_pubkey: script.clone(),
            }],
        };
        let mut coins = UtxoSet::default();
        coins.apply(&coinbase, 1);
        (coins, OutPoint::new(coinbase.compute_txid(), 0))
    }

    #[test]
    fn a_wallet_spend_of_a_mature_coin_passes_and_moves_the_coins() {
        let secp = Secp256k1::verification_only();
        let wallet = Wallet::from_seed(b"seed");
        let (mut coins, outpoint) = coins_with_coinbase(wallet.script_pubkey(), 1_000_000);
        let tx = wallet.spend(outpoint, Amount::from_sat(1_000_000)).unwrap();
        assert_eq!(tx.output.len(), 2, "a large coin is split in two");
        assert_eq!(coins.check(&tx, 3, MATURITY, &secp), Ok(TX_FEE_SATS));
        coins.apply(&tx, 3);
        assert!(coins.get(&outpoint).is_none());
        let txid = tx.compute_txid();
        assert_eq!(
            coins.get(&OutPoint::new(txid, 1)).map(|c| c.coinbase),
            Some(false)
        );
        // Spent now: the same transaction again spends nothing.
        assert_eq!(
            coins.check(&tx, 3, MATURITY, &secp),
            Err(TxError::MissingInput(outpoint))
        );
    }

    #[test]
    fn immature_missing_doubled_and_overspending_inputs_are_named() {
        let secp = Secp256k1::verification_only();
        let wallet = Wallet::from_seed(b"seed");
        let (coins, outpoint) = coins_with_coinbase(wallet.script_pubkey(), 1_000_000);
        let tx = wallet.spend(outpoint, Amount::from_sat(1_000_000)).unwrap();
        assert_eq!(
            coins.check(&tx, 2, MATURITY, &secp),
            Err(TxError::Immature {
                outpoint,
                height: 1,
                mature_at: 3
            })
        );

        let mut elsewhere = tx.clone();
        let missing = OutPoint::new(Txid::all_zeros(), 9);
        elsewhere.input[0].previous_output = missing;
        assert_eq!(
            coins.check(&elsewhere, 3, MATURITY, &secp),
            Err(TxError::MissingInput(missing))
        );

        let mut twice = tx.clone();
        twice.input.push(tx.input[0].clone());
        assert_eq!(
            coins.check(&twice, 3, MATURITY, &secp),
            Err(TxError::DuplicateInput(outpoint))
        );

        let mut greedy = tx.clone();
        greedy.output[0].value = Amount::from_sat(1_000_000);
        assert!(matches!(
            coins.check(&greedy, 3, MATURITY, &secp),
            Err(TxError::Overspends {
                inputs: 1_000_000,
                ..
            })
        ));
    }

    #[test]
    fn a_changed_output_or_a_stranger_s_signature_does_not_verify() {
        let secp = Secp256k1::verification_only();
        let wallet = Wallet::from_seed(b"seed");
        let (coins, outpoint) = coins_with_coinbase(wallet.script_pubkey(), 1_000_000);
        let tx = wallet.spend(outpoint, Amount::from_sat(1_000_000)).unwrap();

        // Paying less to someone else: the signature covers the outputs.
        let mut redirected = tx.clone();
        redirected.output[1].script_pubkey = ScriptBuf::from_bytes(vec![0x51]);
        assert!(matches!(
            coins.check(&redirected, 3, MATURITY, &secp),
            Err(TxError::BadSignature(0, _))
        ));

        // Another wallet signing for this wallet's coin.
        let stranger = Wallet::from_seed(b"other");
        let stolen = stranger
            .spend(outpoint, Amount::from_sat(1_000_000))
            .unwrap();
        assert!(matches!(
            coins.check(&stolen, 3, MATURITY, &secp),
            Err(TxError::BadSignature(0, reason)) if reason.contains("does not match")
        ));
    }

    #[test]
    fn spends_of_scripts_the_devnet_cannot_verify_are_refused() {
        let secp = Secp256k1::verification_only();
        let wallet = Wallet::from_seed(b"seed");
        let anyone = ScriptBuf::from_bytes(vec![0x51]);
        let (coins, outpoint) = coins_with_coinbase(&anyone, 1_000_000);
        let tx = wallet.spend(outpoint, Amount::from_sat(1_000_000)).unwrap();
        assert_eq!(
            coins.check(&tx, 3, MATURITY, &secp),
            Err(TxError::UnsupportedScript(0))
        );
    }
}

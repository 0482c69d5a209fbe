//! The template provider's own wallet: one P2WPKH key that receives a share
//! of every coinbase (the faucet output of each template) and spends it in
//! the transactions that fill the devnet's mempool.

use stratum_core::bitcoin::{
    absolute::LockTime,
    ecdsa,
    hashes::{sha256, Hash},
    secp256k1::{Message, Secp256k1, SecretKey, SignOnly},
    sighash::{EcdsaSighashType, SighashCache},
    transaction, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Witness,
};

/// Fee of every wallet transaction (1 input, up to 2 outputs: ~141 vbytes).
pub const TX_FEE_SATS: u64 = 1_000;
/// Outputs smaller than this are not worth splitting further.
const SPLIT_ABOVE_SATS: u64 = 100_000;

#[derive(Debug)]
pub struct Wallet {
    secret: SecretKey,
    public: CompressedPublicKey,
    script_pubkey: ScriptBuf,
    secp: Secp256k1<SignOnly>,
}

impl Wallet {
    /// The wallet derived from `seed` (the provider's authority secret key),
    /// so it survives restarts without a file of its own.
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut engine = sha256::Hash::engine();
        stratum_core::bitcoin::hashes::HashEngine::input(&mut engine, b"hashpool devnet-tp wallet");
        stratum_core::bitcoin::hashes::HashEngine::input(&mut engine, seed);
        let digest = sha256::Hash::from_engine(engine);
        let secret = SecretKey::from_slice(digest.as_byte_array())
            .expect("a sha256 digest is a valid key with overwhelming probability");
        let secp = Secp256k1::signing_only();
        let public = CompressedPublicKey(secret.public_key(&secp));
        let script_pubkey = ScriptBuf::new_p2wpkh(&public.wpubkey_hash());
        Self {
            secret,
            public,
            script_pubkey,
            secp,
        }
    }

    /// Where the faucet output and every wallet transaction pay.
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// A signed transaction spending `coin` (worth `value`) back to the
    /// wallet, less [`TX_FEE_SATS`]: split in two while the coin is large, so
    /// the wallet always has more coins to spend. None if it is too small.
    pub fn spend(&self, coin: OutPoint, value: Amount) -> Option<Transaction> {
        let rest = value.to_sat().checked_sub(TX_FEE_SATS)?;
        if rest < TX_FEE_SATS {
            return None;
        }
        let amounts = if rest > SPLIT_ABOVE_SATS {
            vec![rest / 2, rest - rest / 2]
        } else {
            vec![rest]
        };
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: coin,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: amounts
                .into_iter()
                .map(|sats| TxOut {
                    value: Amount::from_sat(sats),
                    script_pubkey: self.script_pubkey.clone(),
                })
                .collect(),
        };
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &self.script_pubkey, value, EcdsaSighashType::All)
            .expect("the wallet's script is P2WPKH");
        let signature = ecdsa::Signature::sighash_all(
            self.secp.sign_ecdsa(&Message::from(sighash), &self.secret),
        );
        tx.input[0].witness = Witness::p2wpkh(&signature, &self.public.0);
        Some(tx)
    }
}

//! The coinbase of a declared job: rebuilt from DeclareMiningJob's prefix
//! and suffix (the extranonce between them is the miners' and unknown to
//! the declarator, so it is taken as zeros), and the rule that it pays the
//! pool.
//!
//! The prefix is hostile input: every length in it is checked before use.

use stratum_core::bitcoin::consensus::encode::{deserialize, deserialize_partial, VarInt};
use stratum_core::bitcoin::{Script, Transaction, TxOut};

/// Why a declared job is refused: the DeclareMiningJob.Error code and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub details: String,
}

fn invalid(details: impl Into<String>) -> Refusal {
    Refusal {
        code: "invalid-coinbase-tx",
        details: details.into(),
    }
}

/// The coinbase of `prefix || extranonce || suffix` with a zero extranonce.
pub fn rebuild(prefix: &[u8], suffix: &[u8]) -> Result<Transaction, Refusal> {
    // version (4), optional segwit marker and flag, input count, the
    // null outpoint (36), the scriptSig length, then its first bytes.
    let mut at = 4;
    if prefix.get(4..6) == Some(&[0x00, 0x01]) {
        at += 2;
    }
    let (inputs, used) = varint(prefix.get(at..).unwrap_or_default())
        .ok_or_else(|| invalid("the prefix ends before the input count"))?;
    if inputs != 1 {
        return Err(Refusal {
            code: "invalid-coinbase-tx-input",
            details: format!("a coinbase has exactly one input, not {inputs}"),
        });
    }
    at += used + 36;
    let (script_len, used) = varint(prefix.get(at..).unwrap_or_default())
        .ok_or_else(|| invalid("the prefix ends before the scriptSig length"))?;
    at += used;
    let in_prefix = prefix.len().saturating_sub(at) as u64;
    let extranonce = script_len
        .checked_sub(in_prefix)
        .filter(|n| *n <= 100)
        .ok_or_else(|| invalid("the scriptSig length does not fit the prefix"))?;
    let mut bytes = Vec::with_capacity(prefix.len() + extranonce as usize + suffix.len());
    bytes.extend_from_slice(prefix);
    bytes.resize(prefix.len() + extranonce as usize, 0);
    bytes.extend_from_slice(suffix);
    let tx: Transaction =
        deserialize(&bytes).map_err(|e| invalid(format!("not a transaction: {e}")))?;
    if !tx.is_coinbase() {
        return Err(Refusal {
            code: "invalid-coinbase-tx-input",
            details: "the input spends an output: not a coinbase".into(),
        });
    }
    Ok(tx)
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    deserialize_partial::<VarInt>(bytes)
        .ok()
        .map(|(v, used)| (v.0, used))
}

/// A declared coinbase pays the pool everything except what the template
/// provider itself requires: each output pays `reward_script`, or is worth
/// nothing (commitments), or is one of `required` (a template's valued
/// outputs, matched once each). At least one pays the pool.
pub fn check_pays_pool(
    coinbase: &Transaction,
    reward_script: &Script,
    required: &[TxOut],
) -> Result<(), Refusal> {
    let mut required: Vec<&TxOut> = required.iter().filter(|o| o.value.to_sat() > 0).collect();
    let mut to_pool = 0u64;
    for out in &coinbase.output {
        if out.script_pubkey.as_script() == reward_script {
            to_pool = to_pool.saturating_add(out.value.to_sat());
        } else if out.value.to_sat() == 0 {
            continue;
        } else if let Some(i) = required.iter().position(|r| *r == out) {
            required.swap_remove(i);
        } else {
            return Err(invalid(format!(
                "the coinbase pays {} sat to {}, neither the pool's reward script nor an output \
                 the template provider requires",
                out.value.to_sat(),
                hex::encode(out.script_pubkey.as_bytes())
            )));
        }
    }
    if to_pool == 0 {
        return Err(invalid(format!(
            "the coinbase pays nothing to the pool's reward script {}",
            hex::encode(reward_script.as_bytes())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stratum_core::bitcoin::consensus::serialize;
    use stratum_core::bitcoin::{
        absolute::LockTime, transaction, Amount, OutPoint, ScriptBuf, Sequence, TxIn, Witness,
    };

    use super::*;

    fn pool() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    /// A segwit coinbase (as a template provider's coinbases are).
    fn coinbase(outputs: Vec<TxOut>) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![0x01, 0x07, 0x08, 9, 9, 9, 9, 1, 2, 3, 4]),
                sequence: Sequence::MAX,
                witness: Witness::from(vec![vec![0u8; 32]]),
            }],
            output: outputs,
        }
    }

    fn pays(sats: u64, script: ScriptBuf) -> TxOut {
        TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: script,
        }
    }

    /// Splits `tx` around its scriptSig's last `extranonce` bytes.
    fn split(tx: &Transaction, extranonce: usize) -> (Vec<u8>, Vec<u8>) {
        let bytes = serialize(tx);
        let script = tx.input[0].script_sig.as_bytes();
        let end = bytes
            .windows(script.len())
            .position(|w| w == script)
            .unwrap()
            + script.len();
        (bytes[..end - extranonce].to_vec(), bytes[end..].to_vec())
    }

    #[test]
    fn a_coinbase_is_rebuilt_with_a_zero_extranonce() {
        let tx = coinbase(vec![pays(100, pool())]);
        let (prefix, suffix) = split(&tx, 4);
        let rebuilt = rebuild(&prefix, &suffix).unwrap();
        let script = rebuilt.input[0].script_sig.as_bytes();
        assert_eq!(script.len(), tx.input[0].script_sig.len());
        assert_eq!(&script[script.len() - 4..], &[0, 0, 0, 0]);
        assert_eq!(rebuilt.output, tx.output);
    }

    #[test]
    fn hostile_prefixes_are_refused_without_panicking() {
        let tx = coinbase(vec![pays(100, pool())]);
        let (prefix, suffix) = split(&tx, 4);
        for cut in 0..prefix.len() {
            let _ = rebuild(&prefix[..cut], &suffix);
        }
        let mut long = prefix.clone();
        long.extend_from_slice(&[7; 300]);
        assert!(rebuild(&long, &suffix).is_err());
        assert!(rebuild(&prefix, &[]).is_err());
        let mut two_inputs = prefix.clone();
        two_inputs[6] = 2; // after the version and the segwit marker
        assert_eq!(
            rebuild(&two_inputs, &suffix).unwrap_err().code,
            "invalid-coinbase-tx-input"
        );
    }

    #[test]
    fn only_the_pool_and_the_template_provider_are_paid() {
        let faucet = pays(500, ScriptBuf::from_bytes(vec![0x00, 0x14, 7]));
        let commitment = pays(0, ScriptBuf::from_bytes(vec![0x6a, 1, 2]));
        let ok = coinbase(vec![pays(100, pool()), faucet.clone(), commitment.clone()]);
        assert!(check_pays_pool(&ok, &pool(), std::slice::from_ref(&faucet)).is_ok());

        let thief = coinbase(vec![
            pays(1, pool()),
            pays(99, ScriptBuf::from_bytes(vec![0x52])),
        ]);
        let refused = check_pays_pool(&thief, &pool(), std::slice::from_ref(&faucet)).unwrap_err();
        assert_eq!(refused.code, "invalid-coinbase-tx");
        assert!(
            refused.details.contains("99 sat to 52"),
            "{}",
            refused.details
        );

        // The template's output once, not twice.
        let twice = coinbase(vec![pays(100, pool()), faucet.clone(), faucet.clone()]);
        assert!(check_pays_pool(&twice, &pool(), std::slice::from_ref(&faucet)).is_err());

        let nothing = coinbase(vec![faucet.clone(), commitment]);
        assert!(check_pays_pool(&nothing, &pool(), &[faucet])
            .unwrap_err()
            .details
            .contains("pays nothing to the pool"));
    }
}

//! The coinbase of a declared job: rebuilt from DeclareMiningJob's prefix
//! and suffix (the extranonce between them is the miners' and unknown to
//! the declarator, so it is taken as zeros), and the rule that it pays the
//! pool.
//!
//! The prefix is hostile input: every length in it is checked before use.
//! What a declared job keeps of its coinbase is [`DeclaredCoinbase`]: the
//! fields a custom job is checked against, its outputs as a digest, so a
//! job holds a few hundred bytes however large the client made it.

use stratum_core::bitcoin::absolute::LockTime;
use stratum_core::bitcoin::consensus::encode::{
    deserialize, deserialize_partial, serialize, VarInt,
};
use stratum_core::bitcoin::hashes::{sha256, Hash, HashEngine};
use stratum_core::bitcoin::{Script, ScriptBuf, Transaction, TxOut};

/// A coinbase's scriptSig is 2 to 100 bytes (consensus: `bad-cb-length`).
const MAX_COINBASE_SCRIPT_SIG: u64 = 100;

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
    if !(2..=MAX_COINBASE_SCRIPT_SIG).contains(&script_len) {
        return Err(invalid(format!(
            "a {script_len}-byte scriptSig: a coinbase's is 2 to {MAX_COINBASE_SCRIPT_SIG} bytes"
        )));
    }
    let in_prefix = prefix.len().saturating_sub(at) as u64;
    let extranonce = script_len
        .checked_sub(in_prefix)
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

/// Whether `coinbase` commits to the witnesses of a block whose other
/// transactions have `wtxids` (BIP141): its last output of a commitment's
/// form must commit to them and to its witness reserved value (one 32-byte
/// witness item). Without one no transaction of the block may have a
/// witness, the coinbase's checked here, the others' once all are known:
/// `Ok(false)`.
pub fn check_witness_commitment(
    coinbase: &Transaction,
    wtxids: &[[u8; 32]],
) -> Result<bool, Refusal> {
    let witness = &coinbase.input[0].witness;
    let Some(found) = coinbase
        .output
        .iter()
        .rev()
        .find(|o| ehash::coinbase::is_witness_commitment(&o.script_pubkey))
    else {
        if !witness.is_empty() {
            return Err(invalid(
                "the coinbase has a witness and no witness commitment",
            ));
        }
        return Ok(false);
    };
    let reserved: [u8; 32] = match (witness.len(), witness.nth(0)) {
        (1, Some(item)) => item.try_into().map_err(|_| {
            invalid(format!(
                "the coinbase's witness reserved value is {} bytes, not 32",
                item.len()
            ))
        })?,
        _ => {
            return Err(invalid(
                "a coinbase with a witness commitment has one witness item, its reserved value",
            ))
        }
    };
    let expected = ehash::coinbase::witness_commitment_script(wtxids, &reserved);
    if found.script_pubkey.as_bytes()[..38] != expected.as_bytes()[..] {
        return Err(invalid(
            "the witness commitment is not that of the declared transactions",
        ));
    }
    Ok(true)
}

/// A block's coinbase must be final in it: a lock time its sequence
/// enables is below the block's height, or its median time past. That
/// time is unknown here, but no later than two hours past the clock: only
/// a time lock beyond is refused (an earlier one may still not be final).
pub fn check_final(coinbase: &Transaction, height: Option<u32>, now: u32) -> Result<(), Refusal> {
    if !coinbase.is_lock_time_enabled() {
        return Ok(());
    }
    let lock = coinbase.lock_time.to_consensus_u32();
    let (not_final, what) = match coinbase.lock_time {
        LockTime::Blocks(_) => (height.is_some_and(|h| lock >= h), "height"),
        LockTime::Seconds(_) => (lock > now.saturating_add(2 * 60 * 60), "time"),
    };
    if not_final {
        return Err(invalid(format!(
            "the coinbase is locked until {what} {lock}: not final in the next block"
        )));
    }
    Ok(())
}

/// What a custom job's coinbase is checked against, of a declared one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCoinbase {
    pub version: u32,
    /// At most 100 bytes ([`rebuild`] checks it), the extranonce zeros.
    pub script_sig: ScriptBuf,
    pub sequence: u32,
    pub lock_time: u32,
    /// [`outputs_digest`] of its outputs.
    pub outputs: [u8; 32],
}

impl DeclaredCoinbase {
    pub fn of(coinbase: &Transaction) -> Self {
        let input = &coinbase.input[0];
        DeclaredCoinbase {
            version: coinbase.version.0 as u32,
            script_sig: input.script_sig.clone(),
            sequence: input.sequence.0,
            lock_time: coinbase.lock_time.to_consensus_u32(),
            outputs: outputs_digest(&coinbase.output),
        }
    }
}

/// A digest of `outputs` but for key commitments, which differ between the
/// channels one declared job is set on (each commits to its own key).
pub fn outputs_digest(outputs: &[TxOut]) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    for output in outputs {
        if !ehash::coinbase::is_key_commitment(&output.script_pubkey) {
            engine.input(&serialize(output));
        }
    }
    sha256::Hash::from_engine(engine).to_byte_array()
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

    /// A block whose coinbase scriptSig is not 2 to 100 bytes is invalid.
    #[test]
    fn a_coinbase_script_sig_is_2_to_100_bytes() {
        for (len, valid) in [(1, false), (2, true), (100, true), (101, false)] {
            let mut tx = coinbase(vec![pays(100, pool())]);
            tx.input[0].script_sig = ScriptBuf::from_bytes(vec![7; len]);
            let (prefix, suffix) = split(&tx, 1);
            assert_eq!(rebuild(&prefix, &suffix).is_ok(), valid, "{len} bytes");
        }
    }

    #[test]
    fn the_last_witness_commitment_counts_and_commits_to_the_reserved_value() {
        let wtxids = [[1u8; 32], [2u8; 32]];
        let commitment = |wtxids: &[[u8; 32]], reserved: [u8; 32]| {
            pays(
                0,
                ehash::coinbase::witness_commitment_script(wtxids, &reserved),
            )
        };
        let right = coinbase(vec![pays(100, pool()), commitment(&wtxids, [0; 32])]);
        assert_eq!(check_witness_commitment(&right, &wtxids), Ok(true));
        assert!(check_witness_commitment(&right, &wtxids[..1]).is_err());

        let wrong_last = coinbase(vec![
            commitment(&wtxids, [0; 32]),
            commitment(&wtxids[..1], [0; 32]),
        ]);
        assert!(check_witness_commitment(&wrong_last, &wtxids).is_err());
        let right_last = coinbase(vec![
            commitment(&wtxids[..1], [0; 32]),
            commitment(&wtxids, [0; 32]),
        ]);
        assert_eq!(check_witness_commitment(&right_last, &wtxids), Ok(true));
        let other_reserved = coinbase(vec![commitment(&wtxids, [1; 32])]);
        assert!(check_witness_commitment(&other_reserved, &wtxids).is_err());
        let mut two_items = right.clone();
        two_items.input[0].witness.push([0u8; 32]);
        assert!(check_witness_commitment(&two_items, &wtxids).is_err());

        // Without one, the coinbase has no witness either.
        let mut none = coinbase(vec![pays(100, pool())]);
        assert!(check_witness_commitment(&none, &wtxids).is_err());
        none.input[0].witness.clear();
        assert_eq!(check_witness_commitment(&none, &wtxids), Ok(false));
    }

    /// A block whose coinbase is locked past it is invalid.
    #[test]
    fn a_coinbase_is_final_in_the_next_block() {
        let now = 1_800_000_000;
        let locked = |lock_time: LockTime, sequence: Sequence| {
            let mut tx = coinbase(vec![pays(100, pool())]);
            tx.lock_time = lock_time;
            tx.input[0].sequence = sequence;
            tx
        };
        let height = |h| LockTime::from_height(h).unwrap();
        let time = |t| LockTime::from_time(t).unwrap();
        let enabled = Sequence::ENABLE_LOCKTIME_NO_RBF;
        // Bitcoin Core's coinbases: locked to the height before, final.
        assert!(check_final(&locked(height(99), enabled), Some(100), now).is_ok());
        assert!(check_final(&locked(height(100), enabled), Some(100), now).is_err());
        assert!(check_final(&locked(height(100), Sequence::MAX), Some(100), now).is_ok());
        assert!(check_final(&locked(time(now), enabled), Some(100), now).is_ok());
        assert!(check_final(&locked(time(now + 7201), enabled), Some(100), now).is_err());
    }

    /// A declared job keeps a digest of its outputs but for key
    /// commitments (each channel's own).
    #[test]
    fn the_outputs_digest_leaves_out_key_commitments_only() {
        let key: ehash::LockingKey =
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                .parse()
                .unwrap();
        let commitment = ehash::coinbase::key_commitment_output(&key);
        let plain = [pays(100, pool())];
        let committed = [pays(100, pool()), commitment];
        assert_eq!(outputs_digest(&plain), outputs_digest(&committed));
        assert_ne!(outputs_digest(&plain), outputs_digest(&[pays(99, pool())]));
        let zero = pays(0, ScriptBuf::from_bytes(vec![0x6a, 1, 2]));
        assert_ne!(
            outputs_digest(&plain),
            outputs_digest(&[pays(100, pool()), zero])
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

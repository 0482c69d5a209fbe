//! Work in context: what ties a share's block header to the pool that
//! handed out the job and to the key its quote is locked to.
//!
//! A header commits to its transactions through the merkle root; the first
//! transaction is the coinbase. So a share proves work *for this pool and
//! this key* when, from the coinbase and the merkle path of the job:
//!
//! 1. the merkle root rebuilt from the coinbase's txid and the path is the
//!    header's merkle root;
//! 2. the coinbase has an output paying the pool's reward script;
//! 3. the coinbase has exactly one key-commitment output, and it commits to
//!    the quote's locking key.
//!
//! The key commitment is a zero-value output
//! `OP_RETURN <36 bytes: "EHK1" || sha256("ehash/locking-key" || key)>`,
//! `key` the 33-byte compressed locking key. The pool adds it to every job
//! of a channel with a locking key, so work done on one channel's jobs can
//! never be claimed for another key. Outputs are parsed by consensus rules,
//! so there is no ambiguity about where the commitment is; and since it is
//! an output rather than extranonce bytes, translators and SV1 firmware need
//! no change, and a job-declaration client adds the same output to its own
//! coinbase.

use stratum_core::bitcoin::blockdata::opcodes::all::OP_RETURN;
use stratum_core::bitcoin::consensus::{deserialize, serialize};
use stratum_core::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};
use stratum_core::bitcoin::script::{PushBytesBuf, ScriptBuf};
use stratum_core::bitcoin::{Amount, Script, Transaction, TxOut};

use crate::LockingKey;

/// The first bytes of a key commitment's data push.
pub const KEY_COMMITMENT_MAGIC: [u8; 4] = *b"EHK1";
/// The tag hashed before the key: commitments are not reusable elsewhere.
const KEY_COMMITMENT_TAG: &[u8] = b"ehash/locking-key";
/// Largest coinbase transaction a proof may carry (the SV2 B064K bound).
pub const MAX_COINBASE_LEN: usize = 65_535;
/// Longest merkle path: a block of 2^24 transactions is far past any limit.
pub const MAX_MERKLE_PATH: usize = 24;

/// Why a coinbase does not tie a share to this pool and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseError {
    #[error("the coinbase is not a transaction: {0}")]
    NotATransaction(String),
    #[error("the transaction is not a coinbase (one input spending nothing)")]
    NotACoinbase,
    #[error("merkle path of {0} hashes (at most {MAX_MERKLE_PATH})")]
    PathTooLong(usize),
    #[error("the merkle root of the coinbase and path is {rebuilt}, the header's is {header}")]
    MerkleRootMismatch { rebuilt: String, header: String },
    #[error("the coinbase pays nothing to the pool's reward script {0}")]
    NotPayingPool(String),
    #[error("the coinbase has no key commitment output")]
    NoKeyCommitment,
    #[error("the coinbase has {0} key commitment outputs (exactly one allowed)")]
    SeveralKeyCommitments(usize),
    #[error("the coinbase commits to another locking key")]
    KeyCommitmentMismatch,
}

/// sha256(tag || compressed key): what a coinbase commits to for `key`.
pub fn key_commitment(key: &LockingKey) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(KEY_COMMITMENT_TAG);
    engine.input(&key.to_bytes());
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The zero-value output committing a coinbase to `key`.
pub fn key_commitment_output(key: &LockingKey) -> TxOut {
    let mut data = KEY_COMMITMENT_MAGIC.to_vec();
    data.extend_from_slice(&key_commitment(key));
    let push = PushBytesBuf::try_from(data).expect("36 bytes fit a push");
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::new_op_return(push),
    }
}

/// Serialized size of a key commitment output (for coinbase size budgets).
pub fn key_commitment_output_len() -> usize {
    // 8 (value) + 1 (script length) + 1 (OP_RETURN) + 1 (push 36) + 36.
    8 + 1 + 2 + KEY_COMMITMENT_MAGIC.len() + 32
}

/// The zero-value output `OP_RETURN <number, 8 bytes LE>` numbering a
/// job's coinbase, so that jobs of one channel and template differ in their
/// headers: the pool numbers its jobs by the channel's target (a random
/// number at open, one more at each change), a job-declaration client its
/// declarations. No header is then a share of two jobs paying different
/// targets.
pub fn job_number_output(number: u64) -> TxOut {
    let push = PushBytesBuf::from(number.to_le_bytes());
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::new_op_return(push),
    }
}

/// Serialized size of a [`job_number_output`].
pub fn job_number_output_len() -> usize {
    // 8 (value) + 1 (script length) + 1 (OP_RETURN) + 1 (push 8) + 8.
    8 + 1 + 2 + 8
}

/// Whether `script` is a key commitment output's (to any key).
pub fn is_key_commitment(script: &Script) -> bool {
    commitment_of(script).is_some()
}

/// The commitment an output carries, if it is a key commitment output.
fn commitment_of(script: &Script) -> Option<&[u8]> {
    let bytes = script.as_bytes();
    let data = bytes
        .strip_prefix(&[OP_RETURN.to_u8(), 36])?
        .strip_prefix(&KEY_COMMITMENT_MAGIC)?;
    (data.len() == 32).then_some(data)
}

/// The coinbase transaction in `bytes`, re-serialized without its witness:
/// the form its txid hashes and proofs carry.
pub fn coinbase_without_witness(bytes: &[u8]) -> Result<Vec<u8>, CoinbaseError> {
    let mut tx = parse_coinbase(bytes)?;
    for input in &mut tx.input {
        input.witness.clear();
    }
    Ok(serialize(&tx))
}

fn parse_coinbase(bytes: &[u8]) -> Result<Transaction, CoinbaseError> {
    if bytes.len() > MAX_COINBASE_LEN {
        return Err(CoinbaseError::NotATransaction(format!(
            "{} bytes (at most {MAX_COINBASE_LEN})",
            bytes.len()
        )));
    }
    let tx: Transaction =
        deserialize(bytes).map_err(|e| CoinbaseError::NotATransaction(e.to_string()))?;
    if !tx.is_coinbase() {
        return Err(CoinbaseError::NotACoinbase);
    }
    Ok(tx)
}

/// The merkle root of a block whose first transaction has `txid`, with
/// `path` the sibling hashes from the leaf up (SV2 `merkle_path` order).
pub fn merkle_root(txid: [u8; 32], path: &[[u8; 32]]) -> [u8; 32] {
    path.iter().fold(txid, |node, sibling| {
        let mut engine = sha256d::Hash::engine();
        engine.input(&node);
        engine.input(sibling);
        sha256d::Hash::from_engine(engine).to_byte_array()
    })
}

/// The coinbase's merkle path (SV2 `merkle_path`) in a block whose other
/// transactions have `txids`, in block order: the sibling at each level of
/// the tree, from the leaves up.
pub fn coinbase_merkle_path(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut level: Vec<[u8; 32]> = std::iter::once([0u8; 32])
        .chain(txids.iter().copied())
        .collect();
    let mut path = Vec::new();
    while level.len() > 1 {
        path.push(level[1]);
        if level.len() % 2 == 1 {
            level.push(*level.last().expect("not empty"));
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let mut engine = sha256d::Hash::engine();
                engine.input(&pair[0]);
                engine.input(&pair[1]);
                sha256d::Hash::from_engine(engine).to_byte_array()
            })
            .collect();
    }
    path
}

/// The first bytes of a block's BIP141 witness commitment output script:
/// OP_RETURN, a 36-byte push, then 0xaa21a9ed and the 32-byte commitment.
pub const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// The script of a block's witness commitment output (BIP141): the
/// sha256d of the witness merkle root (the coinbase's leaf as zeros, then
/// `wtxids` in block order) and the coinbase's witness reserved value.
pub fn witness_commitment_script(wtxids: &[[u8; 32]], reserved: &[u8; 32]) -> ScriptBuf {
    let root = merkle_root([0; 32], &coinbase_merkle_path(wtxids));
    let mut engine = sha256d::Hash::engine();
    engine.input(&root);
    engine.input(reserved);
    let mut script = WITNESS_COMMITMENT_HEADER.to_vec();
    script.extend_from_slice(&sha256d::Hash::from_engine(engine).to_byte_array());
    ScriptBuf::from_bytes(script)
}

/// Whether `script` has a witness commitment's form: consensus takes the
/// last output of that form as the block's commitment.
pub fn is_witness_commitment(script: &Script) -> bool {
    script.len() >= 38 && script.as_bytes().starts_with(&WITNESS_COMMITMENT_HEADER)
}

/// The merkle root of a block whose coinbase, serialized without witness,
/// is `coinbase` (its txid is the sha256d of those bytes).
pub fn merkle_root_of(coinbase: &[u8], path: &[[u8; 32]]) -> [u8; 32] {
    merkle_root(sha256d::Hash::hash(coinbase).to_byte_array(), path)
}

/// The block height a coinbase scriptSig (or a template's coinbase prefix)
/// starts with (BIP 34; a non-minimal push reads too); `None` if it starts
/// with no number.
pub fn bip34_height(script_sig: &[u8]) -> Option<u32> {
    let first = Script::from_bytes(script_sig).instructions().next()?.ok()?;
    u32::try_from(first.script_num()?).ok()
}

/// The block height a serialized coinbase transaction is for
/// ([`bip34_height`] of its scriptSig); `None` if it is no coinbase or
/// says none.
pub fn coinbase_height(coinbase: &[u8]) -> Option<u32> {
    let tx = parse_coinbase(coinbase).ok()?;
    bip34_height(tx.input.first()?.script_sig.as_bytes())
}

/// Checks that `header` commits to `coinbase` through `merkle_path`, that
/// the coinbase pays `pool_script`, and that it commits to `key`. Returns
/// the block height the coinbase is for ([`bip34_height`]), if it says.
pub fn check_coinbase(
    header: &[u8; 80],
    coinbase: &[u8],
    merkle_path: &[[u8; 32]],
    pool_script: &Script,
    key: &LockingKey,
) -> Result<Option<u32>, CoinbaseError> {
    if merkle_path.len() > MAX_MERKLE_PATH {
        return Err(CoinbaseError::PathTooLong(merkle_path.len()));
    }
    let tx = parse_coinbase(coinbase)?;
    let rebuilt = merkle_root(tx.compute_txid().to_byte_array(), merkle_path);
    let in_header: [u8; 32] = header[36..68].try_into().expect("32 bytes");
    if rebuilt != in_header {
        return Err(CoinbaseError::MerkleRootMismatch {
            rebuilt: hex::encode(rebuilt),
            header: hex::encode(in_header),
        });
    }
    if !tx.output.iter().any(|o| o.script_pubkey == *pool_script) {
        return Err(CoinbaseError::NotPayingPool(hex::encode(
            pool_script.as_bytes(),
        )));
    }
    let commitments: Vec<&[u8]> = tx
        .output
        .iter()
        .filter_map(|o| commitment_of(&o.script_pubkey))
        .collect();
    match commitments.as_slice() {
        [] => Err(CoinbaseError::NoKeyCommitment),
        [one] if *one == key_commitment(key) => Ok(bip34_height(tx.input[0].script_sig.as_bytes())),
        [_] => Err(CoinbaseError::KeyCommitmentMismatch),
        several => Err(CoinbaseError::SeveralKeyCommitments(several.len())),
    }
}

/// Coinbases for tests of the roles that check them.
#[doc(hidden)]
pub mod testing {
    use stratum_core::bitcoin::transaction::{OutPoint, Sequence, TxIn, Version};
    use stratum_core::bitcoin::{absolute::LockTime, Witness};

    use super::*;

    /// The block height of [`coinbase`] and [`coinbase_tx`].
    pub const HEIGHT: u32 = 7;

    /// A coinbase paying `pool_script` and committing to `key`, serialized
    /// without witness, for a block at [`HEIGHT`]; `unique` goes in its
    /// scriptSig.
    pub fn coinbase(pool_script: &Script, key: &LockingKey, unique: &[u8]) -> Vec<u8> {
        serialize(&coinbase_tx(pool_script, key, unique))
    }

    /// The transaction [`coinbase`] serializes.
    pub fn coinbase_tx(pool_script: &Script, key: &LockingKey, unique: &[u8]) -> Transaction {
        coinbase_tx_at(HEIGHT, pool_script, key, unique)
    }

    /// [`coinbase_tx`] for a block at `height`.
    pub fn coinbase_tx_at(
        height: u32,
        pool_script: &Script,
        key: &LockingKey,
        unique: &[u8],
    ) -> Transaction {
        let mut script_sig = stratum_core::bitcoin::script::Builder::new()
            .push_int(i64::from(height))
            .into_script()
            .into_bytes();
        script_sig.push(unique.len() as u8);
        script_sig.extend_from_slice(unique);
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(5_000_000_000),
                    script_pubkey: pool_script.to_owned(),
                },
                key_commitment_output(key),
            ],
        }
    }

    /// A header committing to `coinbase` through `merkle_path` whose hash
    /// has `zero_bits` leading zero bits, and that target (little-endian):
    /// a share worth 2^zero_bits expected hashes.
    /// The tip is made up (the coinbase's sha256), as are nbits and ntime.
    pub fn mine_header(
        coinbase: &[u8],
        merkle_path: &[[u8; 32]],
        zero_bits: u32,
    ) -> ([u8; 80], [u8; 32]) {
        let made_up_tip = sha256::Hash::hash(coinbase).to_byte_array();
        mine_header_on(
            made_up_tip,
            0x207f_ffff,
            0,
            coinbase,
            merkle_path,
            zero_bits,
        )
    }

    /// [`mine_header`] on the chain tip `prev_hash`, with `nbits` and `ntime`.
    pub fn mine_header_on(
        prev_hash: [u8; 32],
        nbits: u32,
        ntime: u32,
        coinbase: &[u8],
        merkle_path: &[[u8; 32]],
        zero_bits: u32,
    ) -> ([u8; 80], [u8; 32]) {
        let mut target_be = [0xffu8; 32];
        for bit in 0..zero_bits as usize {
            target_be[bit / 8] &= !(0x80 >> (bit % 8));
        }
        let mut header = [0u8; 80];
        header[0..4].copy_from_slice(&0x2000_0000u32.to_le_bytes());
        header[4..36].copy_from_slice(&prev_hash);
        header[36..68].copy_from_slice(&merkle_root_of(coinbase, merkle_path));
        header[68..72].copy_from_slice(&ntime.to_le_bytes());
        header[72..76].copy_from_slice(&nbits.to_le_bytes());
        for nonce in 0u32.. {
            header[76..80].copy_from_slice(&nonce.to_le_bytes());
            let mut hash = crate::share::header_hash(&header);
            hash.reverse();
            if hash <= target_be {
                break;
            }
        }
        target_be.reverse();
        (header, target_be)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_core::bitcoin::blockdata::constants::genesis_block;
    use stratum_core::bitcoin::{Network, Witness};

    const KEY_A: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const KEY_B: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

    fn key(hex: &str) -> LockingKey {
        hex.parse().unwrap()
    }

    fn pool_script() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    /// The commitment is the one the bitcoin crate computes for a block.
    #[test]
    fn the_witness_commitment_is_bip141_s() {
        use stratum_core::bitcoin::{merkle_tree, Block, WitnessMerkleNode};
        for n in [0usize, 1, 2, 3, 7] {
            let wtxids: Vec<[u8; 32]> = (1..=n).map(|i| [i as u8; 32]).collect();
            let reserved = [9u8; 32];
            let leaves = std::iter::once([0u8; 32])
                .chain(wtxids.iter().copied())
                .map(WitnessMerkleNode::from_byte_array);
            let root = merkle_tree::calculate_root(leaves).unwrap();
            let expected = Block::compute_witness_commitment(&root, &reserved);
            let script = witness_commitment_script(&wtxids, &reserved);
            assert!(is_witness_commitment(&script));
            assert_eq!(&script.as_bytes()[6..], expected.as_byte_array(), "{n}");
        }
        assert!(!is_witness_commitment(Script::from_bytes(
            &WITNESS_COMMITMENT_HEADER
        )));
    }

    fn paying(script: ScriptBuf, key: &LockingKey) -> Transaction {
        testing::coinbase_tx(&script, key, &[1, 2, 3, 4])
    }

    /// A header whose merkle root commits to `tx` through `path`.
    fn header_for(tx: &Transaction, path: &[[u8; 32]]) -> [u8; 80] {
        let mut header = [0u8; 80];
        header[0] = 0x20;
        let root = merkle_root(tx.compute_txid().to_byte_array(), path);
        header[36..68].copy_from_slice(&root);
        header
    }

    fn check(
        tx: &Transaction,
        path: &[[u8; 32]],
        key_hex: &str,
    ) -> Result<Option<u32>, CoinbaseError> {
        let header = header_for(tx, path);
        check_coinbase(&header, &serialize(tx), path, &pool_script(), &key(key_hex))
    }

    #[test]
    fn a_coinbase_paying_the_pool_and_committing_to_the_key_passes_with_its_height() {
        let tx = paying(pool_script(), &key(KEY_A));
        assert_eq!(check(&tx, &[], KEY_A), Ok(Some(testing::HEIGHT)));
        let tx = testing::coinbase_tx_at(840_000, &pool_script(), &key(KEY_A), b"x");
        assert_eq!(
            check(&tx, &[[1; 32], [2; 32], [3; 32]], KEY_A),
            Ok(Some(840_000))
        );
    }

    /// A numbered job has another txid, and its work is proved as any job's.
    #[test]
    fn a_job_number_changes_the_txid_and_nothing_the_mint_checks() {
        let tx = paying(pool_script(), &key(KEY_A));
        let mut retargeted = tx.clone();
        retargeted.output.push(job_number_output(1));
        assert_ne!(retargeted.compute_txid(), tx.compute_txid());
        let mut again = tx.clone();
        again.output.push(job_number_output(2));
        assert_ne!(again.compute_txid(), retargeted.compute_txid());
        assert_eq!(
            check(&retargeted, &[[1; 32]], KEY_A),
            Ok(Some(testing::HEIGHT))
        );
        assert!(!is_key_commitment(&job_number_output(1).script_pubkey));
        assert_eq!(
            serialize(&job_number_output(u64::MAX)).len(),
            job_number_output_len()
        );
    }

    #[test]
    fn the_bip34_height_is_the_first_push_of_the_script_sig() {
        // As Bitcoin Core writes them: OP_0, OP_1..OP_16, then minimal pushes.
        assert_eq!(bip34_height(&[0x00, 0x00]), Some(0));
        assert_eq!(bip34_height(&[0x51, 0x00]), Some(1));
        assert_eq!(bip34_height(&[0x60]), Some(16));
        assert_eq!(bip34_height(&[0x01, 0x11, 0xaa]), Some(17));
        assert_eq!(bip34_height(&[0x03, 0x40, 0xd1, 0x0c]), Some(840_000));
        // No number first, a truncated push, a negative number, nothing.
        assert_eq!(bip34_height(&[0x6a]), None);
        assert_eq!(bip34_height(&[0x03, 0x40]), None);
        assert_eq!(bip34_height(&[0x4f]), None);
        assert_eq!(bip34_height(&[0x01, 0x81]), None);
        assert_eq!(bip34_height(&[]), None);
    }

    #[test]
    fn work_for_one_key_cannot_be_claimed_for_another() {
        let tx = paying(pool_script(), &key(KEY_A));
        assert_eq!(
            check(&tx, &[[1; 32]], KEY_B),
            Err(CoinbaseError::KeyCommitmentMismatch)
        );
    }

    #[test]
    fn a_coinbase_paying_another_script_is_refused() {
        let tx = paying(ScriptBuf::from_bytes(vec![0x52]), &key(KEY_A));
        assert_eq!(
            check(&tx, &[], KEY_A),
            Err(CoinbaseError::NotPayingPool("51".into()))
        );
    }

    #[test]
    fn a_coinbase_without_or_with_two_commitments_is_refused() {
        let mut tx = paying(pool_script(), &key(KEY_A));
        tx.output.pop();
        assert_eq!(check(&tx, &[], KEY_A), Err(CoinbaseError::NoKeyCommitment));
        // Committing to both keys must not let either claim the work.
        tx.output.push(key_commitment_output(&key(KEY_A)));
        tx.output.push(key_commitment_output(&key(KEY_B)));
        assert_eq!(
            check(&tx, &[], KEY_B),
            Err(CoinbaseError::SeveralKeyCommitments(2))
        );
    }

    #[test]
    fn a_header_not_committing_to_the_coinbase_is_refused() {
        let tx = paying(pool_script(), &key(KEY_A));
        let header = header_for(&tx, &[[1; 32]]);
        let err = check_coinbase(
            &header,
            &serialize(&tx),
            &[[2; 32]],
            &pool_script(),
            &key(KEY_A),
        )
        .unwrap_err();
        assert!(matches!(err, CoinbaseError::MerkleRootMismatch { .. }));
    }

    #[test]
    fn the_genesis_block_proves_nothing_for_any_key() {
        // A real header with its real coinbase: the merkle root matches,
        // but it pays no pool of ours and commits to no key.
        let block = genesis_block(Network::Bitcoin);
        let mut header = [0u8; 80];
        header.copy_from_slice(&serialize(&block.header));
        let coinbase = serialize(&block.txdata[0]);
        let its_script = block.txdata[0].output[0].script_pubkey.clone();
        assert_eq!(
            check_coinbase(&header, &coinbase, &[], &its_script, &key(KEY_A)),
            Err(CoinbaseError::NoKeyCommitment)
        );
        assert!(matches!(
            check_coinbase(&header, &coinbase, &[], &pool_script(), &key(KEY_A)),
            Err(CoinbaseError::NotPayingPool(_))
        ));
    }

    #[test]
    fn garbage_and_non_coinbase_transactions_are_refused() {
        let header = [0u8; 80];
        let key = key(KEY_A);
        for bytes in [vec![], vec![0xff; 10], vec![0u8; MAX_COINBASE_LEN + 1]] {
            assert!(matches!(
                check_coinbase(&header, &bytes, &[], &pool_script(), &key),
                Err(CoinbaseError::NotATransaction(_))
            ));
        }
        let mut tx = paying(pool_script(), &key);
        tx.input[0].previous_output.vout = 0;
        assert_eq!(
            check_coinbase(&header, &serialize(&tx), &[], &pool_script(), &key),
            Err(CoinbaseError::NotACoinbase)
        );
        assert_eq!(
            check_coinbase(&header, &[], &[[0; 32]; 25], &pool_script(), &key),
            Err(CoinbaseError::PathTooLong(25))
        );
    }

    #[test]
    fn the_witness_is_dropped_and_the_txid_kept() {
        let mut tx = paying(pool_script(), &key(KEY_A));
        tx.input[0].witness = Witness::from(vec![vec![0u8; 32]]);
        let stripped = coinbase_without_witness(&serialize(&tx)).unwrap();
        assert!(stripped.len() < serialize(&tx).len());
        let back: Transaction = deserialize(&stripped).unwrap();
        assert_eq!(back.compute_txid(), tx.compute_txid());
        let path = [[1; 32], [2; 32]];
        assert_eq!(
            merkle_root_of(&stripped, &path),
            merkle_root(tx.compute_txid().to_byte_array(), &path)
        );
        assert_eq!(
            serialize(&key_commitment_output(&key(KEY_A))).len(),
            key_commitment_output_len()
        );
    }
}

//! What the mint checks before it creates a quote for a share (no IO): the
//! proof of work is real, it was done on a coinbase that pays the asking
//! pool and commits to the quote's locking key, and the amount is exactly
//! what that work is worth. So a compromised pool host can neither print
//! ehash from headers mined elsewhere nor hand one miner's work to another.

use std::collections::HashMap;
use std::sync::Mutex;

use ehash::{CoinbaseError, LockingKey, LockingKeyError, UnitBits};
use mint_quote_sv2::{error_code, CoinbaseProof, MintQuoteRequestOwned};
use stratum_core::bitcoin::pow::Target;
use stratum_core::bitcoin::Script;

/// A share that passed every check, with the proof it was checked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedShare {
    pub share_hash: [u8; 32],
    pub amount: u64,
    pub locking_key: LockingKey,
    pub header: [u8; 80],
    pub target: Target,
    pub proof: CoinbaseProof,
    /// The block height its coinbase is for (BIP 34), if it says.
    pub height: Option<u32>,
}

/// Why no quote: the `MintQuoteError` code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Most keys [`KnownKeys`] holds; past it, it starts afresh.
const KNOWN_KEYS: usize = 16_384;

/// Locking keys already parsed, by their bytes: a miner's key comes with
/// every one of its shares, and parsing it (a point decompression, so a
/// square root) was 5% of the mint's CPU. Only valid keys are kept.
#[derive(Debug, Default)]
pub struct KnownKeys(Mutex<HashMap<[u8; 33], LockingKey>>);

impl KnownKeys {
    /// The request's locking key, parsed once for all its shares.
    pub fn of(&self, request: &MintQuoteRequestOwned) -> Result<LockingKey, LockingKeyError> {
        let bytes = request.locking_key_bytes();
        if let Some(key) = roles_common::lock(&self.0).get(&bytes) {
            return Ok(*key);
        }
        let key = LockingKey::from_bytes(&bytes)?;
        let mut known = roles_common::lock(&self.0);
        if known.len() >= KNOWN_KEYS {
            known.clear();
        }
        known.insert(bytes, key);
        Ok(key)
    }
}

/// Checks unit, locking key, proof of work, its coinbase (paying
/// `pool_script`, committing to the locking key) and amount of a quote request.
pub fn check_request(
    request: &MintQuoteRequestOwned,
    unit_bits: UnitBits,
    pool_script: &Script,
    keys: &KnownKeys,
) -> Result<CheckedShare, Rejection> {
    let unit = request.unit.as_bytes();
    if unit != ehash::constants::UNIT.as_bytes() {
        return Err(Rejection::new(
            error_code::UNSUPPORTED_UNIT,
            format!(
                "unit {:?} is not {:?}",
                String::from_utf8_lossy(unit),
                ehash::constants::UNIT
            ),
        ));
    }
    let locking_key = keys
        .of(request)
        .map_err(|e| Rejection::new(error_code::INVALID_LOCKING_KEY, e.to_string()))?;

    let target = Target::from_le_bytes(request.target.to_array());
    let header = request.header_bytes();
    let hash = ehash::verify_share(&header, target)
        .map_err(|e| Rejection::new(error_code::INVALID_PROOF_OF_WORK, e.to_string()))?;
    if hash != request.share_hash() {
        return Err(Rejection::new(
            error_code::INVALID_PROOF_OF_WORK,
            "share_hash is not sha256d of the header",
        ));
    }

    let proof = request.proof();
    let height = ehash::check_coinbase(
        &header,
        &proof.coinbase,
        &proof.merkle_path,
        pool_script,
        &locking_key,
    )
    .map_err(|e| Rejection::new(coinbase_error_code(&e), e.to_string()))?;

    let expected = ehash::ehash_amount(target, unit_bits);
    if request.amount != expected {
        return Err(Rejection::new(
            error_code::AMOUNT_MISMATCH,
            format!(
                "amount {} is not {expected}, the ehash of this target at unit_bits {}",
                request.amount,
                unit_bits.get()
            ),
        ));
    }
    if expected == 0 {
        return Err(Rejection::new(
            error_code::ZERO_AMOUNT,
            format!(
                "the share is worth 0 ehash at unit_bits {}",
                unit_bits.get()
            ),
        ));
    }
    Ok(CheckedShare {
        share_hash: hash,
        amount: expected,
        locking_key,
        header,
        target,
        proof,
        height,
    })
}

fn coinbase_error_code(e: &CoinbaseError) -> &'static str {
    match e {
        CoinbaseError::NotATransaction(_)
        | CoinbaseError::NotACoinbase
        | CoinbaseError::PathTooLong(_) => error_code::INVALID_COINBASE,
        CoinbaseError::MerkleRootMismatch { .. } => error_code::MERKLE_ROOT_MISMATCH,
        CoinbaseError::NotPayingPool(_) => error_code::COINBASE_NOT_PAYING_POOL,
        CoinbaseError::NoKeyCommitment
        | CoinbaseError::SeveralKeyCommitments(_)
        | CoinbaseError::KeyCommitmentMismatch => error_code::KEY_COMMITMENT_MISMATCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::coinbase::testing::{coinbase, mine_header};
    use mint_quote_sv2::{CoinbaseProof, MintQuoteRequestOwned};
    use stratum_core::bitcoin::blockdata::constants::genesis_block;
    use stratum_core::bitcoin::consensus::serialize;
    use stratum_core::bitcoin::{Network, ScriptBuf};

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const OTHER_KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
    /// Shares at 2^8 expected hashes: mined in a blink.
    const ZERO_BITS: u32 = 8;

    fn bits(n: u32) -> UnitBits {
        UnitBits::new(n).unwrap()
    }

    fn pool_script() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    fn key(hex: &str) -> LockingKey {
        hex.parse().unwrap()
    }

    /// A share mined on a coinbase paying `script` and committing to
    /// `committed`, asked for `claimed`, worth `amount`.
    fn share_for(
        script: &Script,
        committed: &str,
        claimed: &str,
        amount: u64,
    ) -> MintQuoteRequestOwned {
        let proof = CoinbaseProof {
            coinbase: coinbase(script, &key(committed), b"unique"),
            merkle_path: vec![[3; 32], [4; 32]],
        };
        let (header, target) = mine_header(&proof.coinbase, &proof.merkle_path, ZERO_BITS);
        MintQuoteRequestOwned::new(&header, target, amount, key(claimed), &proof).unwrap()
    }

    fn honest(amount: u64) -> MintQuoteRequestOwned {
        share_for(&pool_script(), KEY, KEY, amount)
    }

    fn code(request: &MintQuoteRequestOwned, unit_bits: u32) -> &'static str {
        check_request(
            request,
            bits(unit_bits),
            &pool_script(),
            &KnownKeys::default(),
        )
        .unwrap_err()
        .code
    }

    #[test]
    fn a_real_share_with_the_right_amount_passes() {
        let request = honest(1 << ZERO_BITS);
        let keys = KnownKeys::default();
        let share = check_request(&request, bits(0), &pool_script(), &keys).unwrap();
        assert_eq!(share.amount, 1 << ZERO_BITS);
        assert_eq!(share.locking_key.to_string(), KEY);
        assert_eq!(share.share_hash, request.share_hash());
    }

    #[test]
    fn a_wrong_amount_is_refused() {
        let keys = KnownKeys::default();
        let err = check_request(&honest(257), bits(0), &pool_script(), &keys).unwrap_err();
        assert_eq!(err.code, "amount-mismatch");
        assert!(err.message.contains("257 is not 256"), "{}", err.message);
    }

    #[test]
    fn the_genesis_block_is_refused() {
        // Real work, with its real coinbase: it pays no pool of ours.
        let block = genesis_block(Network::Bitcoin);
        let mut header = [0u8; 80];
        header.copy_from_slice(&serialize(&block.header));
        let proof = CoinbaseProof {
            coinbase: serialize(&block.txdata[0]),
            merkle_path: vec![],
        };
        let request =
            MintQuoteRequestOwned::new(&header, Target::MAX.to_le_bytes(), 1, key(KEY), &proof)
                .unwrap();
        assert_eq!(code(&request, 32), "coinbase-not-paying-pool");
        // Claimed with no coinbase at all.
        let bare = MintQuoteRequestOwned::new(
            &header,
            Target::MAX.to_le_bytes(),
            1,
            key(KEY),
            &CoinbaseProof::default(),
        )
        .unwrap();
        assert_eq!(code(&bare, 32), "invalid-coinbase");
    }

    /// Mainnet block 840,000 (the fourth halving), field by field.
    fn block_840000() -> [u8; 80] {
        let mut header = Vec::with_capacity(80);
        header.extend_from_slice(&0x2a5f_e000u32.to_le_bytes());
        let mut prev =
            hex::decode("0000000000000000000172014ba58d66455762add0512355ad651207918494ab")
                .unwrap();
        prev.reverse();
        header.extend_from_slice(&prev);
        let mut root =
            hex::decode("031b417c3a1828ddf3d6527fc210daafcc9218e81f98257f88d4d43bd7a5894f")
                .unwrap();
        root.reverse();
        header.extend_from_slice(&root);
        header.extend_from_slice(&1_713_571_767u32.to_le_bytes());
        header.extend_from_slice(&0x1703_4219u32.to_le_bytes());
        header.extend_from_slice(&0xea63_987du32.to_le_bytes());
        header.try_into().unwrap()
    }

    #[test]
    fn mainnet_block_840000_is_real_work_and_buys_nothing() {
        let header = block_840000();
        assert_eq!(
            ehash::share::hex_be(&ehash::share::header_hash(&header)),
            "0000000000000000000320283a032748cef8227873ff4872689bf23f1cda83a5"
        );
        let target = Target::from_compact(stratum_core::bitcoin::CompactTarget::from_consensus(
            0x1703_4219,
        ));
        let amount = ehash::ehash_amount(target, bits(20));
        assert!(amount > 1 << 50, "worth {amount} ehash at unit_bits 20");
        let claim = |proof: &CoinbaseProof| {
            MintQuoteRequestOwned::new(&header, target.to_le_bytes(), amount, key(KEY), proof)
                .unwrap()
        };
        // Without its coinbase; with one of ours that this header never hashed.
        assert_eq!(
            code(&claim(&CoinbaseProof::default()), 20),
            "invalid-coinbase"
        );
        let ours = CoinbaseProof {
            coinbase: coinbase(&pool_script(), &key(KEY), b"840000"),
            merkle_path: vec![[1; 32]; 12],
        };
        assert_eq!(code(&claim(&ours), 20), "merkle-root-mismatch");
    }

    #[test]
    fn work_for_one_key_claimed_for_another_is_refused() {
        let request = share_for(&pool_script(), KEY, OTHER_KEY, 1 << ZERO_BITS);
        assert_eq!(code(&request, 0), "key-commitment-mismatch");
    }

    #[test]
    fn a_coinbase_paying_another_script_is_refused() {
        let other = ScriptBuf::from_bytes(vec![0x52]);
        let request = share_for(&other, KEY, KEY, 1 << ZERO_BITS);
        assert_eq!(code(&request, 0), "coinbase-not-paying-pool");
    }

    #[test]
    fn a_merkle_path_that_misses_the_header_is_refused() {
        let mut request = honest(1 << ZERO_BITS);
        let mut path = request.proof().merkle_path;
        path[1] = [5; 32];
        let proof = CoinbaseProof {
            merkle_path: path,
            ..request.proof()
        };
        let target = request.target.to_array();
        request = MintQuoteRequestOwned::new(
            &request.header_bytes(),
            target,
            1 << ZERO_BITS,
            key(KEY),
            &proof,
        )
        .unwrap();
        assert_eq!(code(&request, 0), "merkle-root-mismatch");
    }

    #[test]
    fn a_header_that_misses_the_target_is_refused() {
        let request = honest(1 << ZERO_BITS);
        let mut header = request.header_bytes();
        // Other nonces until one misses the 2^-8 target.
        let target = Target::from_le_bytes(request.target.to_array());
        while ehash::verify_share(&header, target).is_ok() {
            header[76] = header[76].wrapping_add(1);
        }
        let missed = MintQuoteRequestOwned::new(
            &header,
            target.to_le_bytes(),
            256,
            key(KEY),
            &request.proof(),
        )
        .unwrap();
        assert_eq!(code(&missed, 0), "invalid-proof-of-work");
    }

    #[test]
    fn a_share_hash_that_is_not_the_headers_is_refused() {
        let mut req = honest(1 << ZERO_BITS);
        req.share_hash = [7u8; 32].into();
        assert_eq!(code(&req, 0), "invalid-proof-of-work");
    }

    #[test]
    fn an_easier_claimed_target_cannot_inflate_the_amount() {
        // Claiming a harder target than the hash meets fails the proof of work.
        let honest = honest(1 << ZERO_BITS);
        let mut be = [0u8; 32];
        be[7] = 1; // 2^192
        let req = MintQuoteRequestOwned::new(
            &honest.header_bytes(),
            Target::from_be_bytes(be).to_le_bytes(),
            1 << 56,
            key(KEY),
            &honest.proof(),
        )
        .unwrap();
        assert_eq!(code(&req, 0), "invalid-proof-of-work");
    }

    #[test]
    fn bad_key_unit_and_zero_amount_are_refused() {
        let mut req = honest(1 << ZERO_BITS);
        req.locking_key.prefix = 0x04;
        assert_eq!(code(&req, 0), "invalid-locking-key");

        let mut req = honest(1 << ZERO_BITS);
        req.unit = ehash::wire::str0255("unit", "sat").unwrap();
        assert_eq!(code(&req, 0), "unsupported-unit");

        // 2^8 expected hashes are worth 0 at unit_bits 9.
        assert_eq!(code(&honest(0), 9), "zero-amount");
    }

    #[test]
    fn a_known_key_is_the_key_and_a_bad_one_is_refused_every_time() {
        let keys = KnownKeys::default();
        let request = honest(1 << ZERO_BITS);
        for _ in 0..2 {
            assert_eq!(keys.of(&request), Ok(key(KEY)));
        }
        let mut off_curve = honest(1 << ZERO_BITS);
        off_curve.locking_key.x = [0xff; 32].into();
        for _ in 0..2 {
            assert_eq!(keys.of(&off_curve), Err(LockingKeyError::NotOnCurve));
        }
        assert_eq!(roles_common::lock(&keys.0).len(), 1);
        let share = check_request(&request, bits(0), &pool_script(), &keys).unwrap();
        assert_eq!(share.locking_key, key(KEY));
    }

    #[test]
    fn known_keys_start_afresh_when_full() {
        let keys = KnownKeys::default();
        let mut request = honest(1 << ZERO_BITS);
        let mut added = 0;
        let mut x = [0u8; 32];
        while added < KNOWN_KEYS {
            x[..8].copy_from_slice(&(added as u64 * 7919 + 1).to_be_bytes());
            request.locking_key.x = x.into();
            if keys.of(&request).is_ok() {
                added += 1;
            }
            x[31] = x[31].wrapping_add(1);
        }
        assert_eq!(roles_common::lock(&keys.0).len(), KNOWN_KEYS);
        assert_eq!(keys.of(&honest(1 << ZERO_BITS)), Ok(key(KEY)));
        assert_eq!(roles_common::lock(&keys.0).len(), 1);
    }
}

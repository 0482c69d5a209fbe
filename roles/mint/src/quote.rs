//! What the mint checks before it creates a quote for a share (no IO): the
//! proof of work is real and the amount is exactly what that work is worth,
//! so a compromised pool host cannot print ehash without hashes.

use ehash::{LockingKey, UnitBits};
use mint_quote_sv2::{error_code, MintQuoteRequestOwned};
use stratum_core::bitcoin::pow::Target;

/// A share that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedShare {
    pub share_hash: [u8; 32],
    pub amount: u64,
    pub locking_key: LockingKey,
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

/// Checks unit, locking key, proof of work and amount of a quote request.
pub fn check_request(
    request: &MintQuoteRequestOwned,
    unit_bits: UnitBits,
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
    let locking_key = request
        .locking_key()
        .map_err(|e| Rejection::new(error_code::INVALID_LOCKING_KEY, e.to_string()))?;

    let target = Target::from_le_bytes(request.target.to_array());
    let hash = ehash::verify_share(&request.header_bytes(), target)
        .map_err(|e| Rejection::new(error_code::INVALID_PROOF_OF_WORK, e.to_string()))?;
    if hash != request.share_hash() {
        return Err(Rejection::new(
            error_code::INVALID_PROOF_OF_WORK,
            "share_hash is not sha256d of the header",
        ));
    }

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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mint_quote_sv2::MintQuoteRequestOwned;

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    /// The genesis header meets the difficulty-1 target.
    fn genesis() -> [u8; 80] {
        let hex = concat!(
            "0100000000000000000000000000000000000000000000000000000000000000",
            "000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa",
            "4b1e5e4a29ab5f49ffff001d1dac2b7c"
        );
        let bytes: Vec<u8> = (0..80)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    fn bits(n: u32) -> UnitBits {
        UnitBits::new(n).unwrap()
    }

    fn request(amount: u64) -> MintQuoteRequestOwned {
        MintQuoteRequestOwned::new(
            &genesis(),
            Target::MAX.to_le_bytes(),
            amount,
            KEY.parse().unwrap(),
        )
    }

    #[test]
    fn a_real_share_with_the_right_amount_passes() {
        let share = check_request(&request(65_537), bits(16)).unwrap();
        assert_eq!(share.amount, 65_537);
        assert_eq!(share.locking_key.to_string(), KEY);
        assert_eq!(share.share_hash, request(1).share_hash());
    }

    #[test]
    fn a_wrong_amount_is_refused() {
        let err = check_request(&request(65_538), bits(16)).unwrap_err();
        assert_eq!(err.code, "amount-mismatch");
        assert!(
            err.message.contains("65538 is not 65537"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_header_that_misses_the_target_is_refused() {
        let mut header = genesis();
        header[76] ^= 1; // another nonce
        let req =
            MintQuoteRequestOwned::new(&header, Target::MAX.to_le_bytes(), 1, KEY.parse().unwrap());
        assert_eq!(
            check_request(&req, bits(32)).unwrap_err().code,
            "invalid-proof-of-work"
        );
    }

    #[test]
    fn a_share_hash_that_is_not_the_headers_is_refused() {
        let mut req = request(1);
        req.share_hash = [7u8; 32].into();
        let err = check_request(&req, bits(32)).unwrap_err();
        assert_eq!(err.code, "invalid-proof-of-work");
    }

    #[test]
    fn an_easier_claimed_target_cannot_inflate_the_amount() {
        // Claiming a harder target than the hash meets fails the proof of work.
        let mut be = [0u8; 32];
        be[7] = 1; // 2^192: far below the genesis hash
        let req = MintQuoteRequestOwned::new(
            &genesis(),
            Target::from_be_bytes(be).to_le_bytes(),
            1 << 32,
            KEY.parse().unwrap(),
        );
        assert_eq!(
            check_request(&req, bits(32)).unwrap_err().code,
            "invalid-proof-of-work"
        );
    }

    #[test]
    fn bad_key_unit_and_zero_amount_are_refused() {
        let mut req = request(1);
        req.locking_key.prefix = 0x04;
        assert_eq!(
            check_request(&req, bits(32)).unwrap_err().code,
            "invalid-locking-key"
        );

        let mut req = request(1);
        req.unit = ehash::wire::str0255("unit", "sat").unwrap();
        assert_eq!(
            check_request(&req, bits(32)).unwrap_err().code,
            "unsupported-unit"
        );

        // Difficulty 1 is worth 0 at unit_bits 33.
        assert_eq!(
            check_request(&request(0), bits(33)).unwrap_err().code,
            "zero-amount"
        );
    }
}

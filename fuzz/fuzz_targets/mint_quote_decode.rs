#![no_main]
//! Hostile bytes into the MintQuoteMessage decoders: every message type, both
//! channel bits, and whole frames. Decoding must return, never panic, and
//! whatever decodes must encode back to a frame of the same length that
//! decodes to the same message. A decoded request or proof also goes through
//! the checks the mint runs on it, which see its fields unfiltered.

use std::sync::LazyLock;

use ehash::wire::testing::decode_every_type;
use ehash::UnitBits;
use libfuzzer_sys::fuzz_target;
use mint_quote_sv2::auth::testing::{key, xonly};
use mint_quote_sv2::{auth, MintQuoteMessage, ShareHeaderOwned};
use stratum_core::bitcoin::pow::Target;
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;

/// (mint key, allowed pool key); deriving them per input would dominate the run.
static KEYS: LazyLock<(XOnlyPublicKey, XOnlyPublicKey)> =
    LazyLock::new(|| (xonly(&key(2)), xonly(&key(1))));

fuzz_target!(|data: &[u8]| {
    decode_every_type::<MintQuoteMessage>(data);
    match hashpool_fuzz::frame_round_trip::<MintQuoteMessage>(data) {
        Some(MintQuoteMessage::MintQuoteRequest(r)) => {
            let _ = r.locking_key();
            let header = r.header_bytes();
            assert_eq!(ShareHeaderOwned::from_consensus_bytes(&header), r.header);
            let target = Target::from_le_bytes(r.target.to_array());
            let _ = ehash::verify_share(&header, target);
            for bits in [0, 1, 8, 32, 63, 64] {
                let _ = ehash::ehash_amount(target, UnitBits::new(bits).expect("in range"));
            }
        }
        Some(MintQuoteMessage::PoolAuthProof(p)) => {
            let (mint, pool) = *KEYS;
            let _ = auth::verify_proof(&[7; 32], &mint, &p, &[pool]);
        }
        _ => {}
    }
});

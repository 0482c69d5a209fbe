//! Proof of work of a share: sha256d of its 80-byte block header, read as a
//! little-endian 256-bit number, must not exceed the channel target.

use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::pow::{CompactTarget, Target};
use stratum_core::bitcoin::{BlockHash, TxMerkleNode};

/// Why a share does not prove the work it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("share hash {} is above the target {}", hex_be(.hash), hex_be(.target))]
    AboveTarget { hash: [u8; 32], target: [u8; 32] },
}

/// Big-endian hex of a little-endian 256-bit value (a share or block hash,
/// a target), as block explorers show it.
pub fn hex_be(le: &[u8; 32]) -> String {
    let mut be = *le;
    be.reverse();
    hex::encode(be)
}

/// The 80 serialized bytes of a block header (hashes in SV2 byte order).
pub fn header_bytes(
    version: u32,
    prev_hash: [u8; 32],
    merkle_root: [u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let header = Header {
        version: Version::from_consensus(version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(merkle_root),
        time: ntime,
        bits: CompactTarget::from_consensus(nbits),
        nonce,
    };
    serialize(&header).try_into().expect("a header is 80 bytes")
}

/// sha256d of a serialized block header, in the byte order SV2 carries hashes
/// (little-endian, as in `SubmitSharesSuccess`).
pub fn header_hash(header: &[u8; 80]) -> [u8; 32] {
    sha256d::Hash::hash(header).to_byte_array()
}

/// Checks that `header` hashes at or below `target` and returns its hash.
pub fn verify_share(header: &[u8; 80], target: Target) -> Result<[u8; 32], ShareError> {
    let hash = header_hash(header);
    if Target::from_le_bytes(hash) <= target {
        Ok(hash)
    } else {
        Err(ShareError::AboveTarget {
            hash,
            target: target.to_le_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Bitcoin genesis block header.
    fn genesis() -> [u8; 80] {
        hex::decode(
            "0100000000000000000000000000000000000000000000000000000000000000\
             000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa\
             4b1e5e4a29ab5f49ffff001d1dac2b7c",
        )
        .unwrap()
        .try_into()
        .unwrap()
    }

    #[test]
    fn genesis_meets_difficulty_one() {
        let hash = verify_share(&genesis(), Target::MAX).unwrap();
        assert_eq!(
            hex_be(&hash),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
    }

    #[test]
    fn genesis_misses_a_harder_target() {
        let mut be = [0u8; 32];
        be[6] = 0x01; // 2^200: genesis hash 0x0000000000_19d6... is above it
        let err = verify_share(&genesis(), Target::from_be_bytes(be)).unwrap_err();
        assert!(err.to_string().starts_with(
            "share hash 000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f is above"
        ));
    }

    #[test]
    fn a_changed_nonce_misses() {
        let mut header = genesis();
        header[79] ^= 1;
        assert!(verify_share(&header, Target::MAX).is_err());
    }
}

//! How the pool proves its identity to the mint inside a Noise session.
//!
//! Noise NX authenticates only the responder (the mint). The mint sends a
//! fresh random challenge; the pool signs, with BIP-340 Schnorr, the tagged
//! hash of (challenge, mint authority key, pool key). The challenge ties the
//! proof to this session; the mint's key ties it to this mint, so a proof
//! relayed from another mint's session does not verify here.

use crate::{PoolAuthChallengeOwned, PoolAuthProofOwned};
use stratum_core::bitcoin::hashes::{sha256, Hash, HashEngine};
use stratum_core::bitcoin::secp256k1::{
    schnorr, Keypair, Message, Secp256k1, SecretKey, XOnlyPublicKey,
};

/// BIP-340 style tag of the signed digest.
pub const POOL_AUTH_TAG: &[u8] = b"hashpool/mint-quote/pool-auth/v1";

/// Why a proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("pool key is not a valid x-only secp256k1 key")]
    InvalidPoolKey,
    #[error("pool key {0} is not on the mint's allow-list")]
    UnknownPoolKey(XOnlyPublicKey),
    #[error("signature does not verify for this session's challenge")]
    InvalidSignature,
}

impl AuthError {
    /// The `PoolAuthError.error_code` for this error.
    pub fn error_code(&self) -> &'static str {
        match self {
            AuthError::InvalidPoolKey | AuthError::InvalidSignature => {
                crate::error_code::INVALID_SIGNATURE
            }
            AuthError::UnknownPoolKey(_) => crate::error_code::UNKNOWN_POOL_KEY,
        }
    }
}

/// tagged_hash(tag, challenge || mint_key || pool_key), as in BIP-340.
pub fn pool_auth_digest(
    challenge: &[u8; 32],
    mint_key: &XOnlyPublicKey,
    pool_key: &XOnlyPublicKey,
) -> [u8; 32] {
    let tag = sha256::Hash::hash(POOL_AUTH_TAG);
    let mut engine = sha256::Hash::engine();
    engine.input(tag.as_ref());
    engine.input(tag.as_ref());
    engine.input(challenge);
    engine.input(&mint_key.serialize());
    engine.input(&pool_key.serialize());
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// A challenge message from 32 random bytes.
pub fn challenge(random: [u8; 32]) -> PoolAuthChallengeOwned {
    PoolAuthChallengeOwned {
        challenge: random.into(),
    }
}

/// The pool's proof for `challenge` on a session with the mint `mint_key`.
pub fn sign_proof(
    challenge: &[u8; 32],
    mint_key: &XOnlyPublicKey,
    pool_secret: &SecretKey,
) -> PoolAuthProofOwned {
    let secp = Secp256k1::signing_only();
    let keypair = Keypair::from_secret_key(&secp, pool_secret);
    let (pool_key, _) = keypair.x_only_public_key();
    let digest = pool_auth_digest(challenge, mint_key, &pool_key);
    let signature = secp.sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair);
    PoolAuthProofOwned {
        pool_key: pool_key.serialize().into(),
        signature: signature.serialize().into(),
    }
}

/// Checks `proof` against this session's `challenge`, the mint's own key and
/// the allow-list, and returns the authenticated pool key.
pub fn verify_proof(
    challenge: &[u8; 32],
    mint_key: &XOnlyPublicKey,
    proof: &PoolAuthProofOwned,
    allowed: &[XOnlyPublicKey],
) -> Result<XOnlyPublicKey, AuthError> {
    let pool_key = XOnlyPublicKey::from_slice(proof.pool_key.as_bytes())
        .map_err(|_| AuthError::InvalidPoolKey)?;
    if !allowed.contains(&pool_key) {
        return Err(AuthError::UnknownPoolKey(pool_key));
    }
    let signature = schnorr::Signature::from_slice(proof.signature.as_bytes())
        .map_err(|_| AuthError::InvalidSignature)?;
    let digest = pool_auth_digest(challenge, mint_key, &pool_key);
    Secp256k1::verification_only()
        .verify_schnorr(&signature, &Message::from_digest(digest), &pool_key)
        .map_err(|_| AuthError::InvalidSignature)?;
    Ok(pool_key)
}

/// Keys for the handshake tests, of this crate and of the mint.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// The secret key of 32 bytes `byte`.
    pub fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).expect("a valid secret key")
    }

    /// The x-only public key of `secret`.
    pub fn xonly(secret: &SecretKey) -> XOnlyPublicKey {
        secret.x_only_public_key(&Secp256k1::signing_only()).0
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{key, xonly};
    use super::*;

    #[test]
    fn a_proof_verifies_for_its_session_only() {
        let (pool, mint, other_mint) = (key(1), key(2), key(3));
        let allowed = [xonly(&pool)];
        let proof = sign_proof(&[7; 32], &xonly(&mint), &pool);

        assert_eq!(
            verify_proof(&[7; 32], &xonly(&mint), &proof, &allowed),
            Ok(xonly(&pool))
        );
        // Replayed on a session with another challenge.
        assert_eq!(
            verify_proof(&[8; 32], &xonly(&mint), &proof, &allowed),
            Err(AuthError::InvalidSignature)
        );
        // Relayed to another mint.
        assert_eq!(
            verify_proof(&[7; 32], &xonly(&other_mint), &proof, &allowed),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn keys_off_the_allow_list_are_refused() {
        let (pool, mint, stranger) = (key(1), key(2), key(4));
        let proof = sign_proof(&[7; 32], &xonly(&mint), &stranger);
        let err = verify_proof(&[7; 32], &xonly(&mint), &proof, &[xonly(&pool)]).unwrap_err();
        assert_eq!(err, AuthError::UnknownPoolKey(xonly(&stranger)));
        assert_eq!(err.error_code(), "unknown-pool-key");
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let (pool, mint, stranger) = (key(1), key(2), key(4));
        let mut proof = sign_proof(&[7; 32], &xonly(&mint), &stranger);
        proof.pool_key = xonly(&pool).serialize().into();
        assert_eq!(
            verify_proof(&[7; 32], &xonly(&mint), &proof, &[xonly(&pool)]),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn garbage_keys_and_signatures_are_refused() {
        let (pool, mint) = (key(1), key(2));
        let mut proof = sign_proof(&[7; 32], &xonly(&mint), &pool);
        proof.pool_key = [0xff; 32].into();
        assert_eq!(
            verify_proof(&[7; 32], &xonly(&mint), &proof, &[xonly(&pool)]),
            Err(AuthError::InvalidPoolKey)
        );
        let mut proof = sign_proof(&[7; 32], &xonly(&mint), &pool);
        proof.signature = [0xff; 64].into();
        assert_eq!(
            verify_proof(&[7; 32], &xonly(&mint), &proof, &[xonly(&pool)]),
            Err(AuthError::InvalidSignature)
        );
    }
}

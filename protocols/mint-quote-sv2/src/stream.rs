//! The mint-quote messages carried over Redis Streams instead of a Noise
//! link, for a pool and mint cluster that share a Redis.
//!
//! Every message is one stream entry holding the SV2 frame of the message,
//! the signer's x-only key and a BIP-340 signature over the tagged hash of
//! (recipient key, signer key, frame). Pools sign requests with their
//! identity key for the mint's authority key; mints sign answers with the
//! authority key for the asking pool's key. Whoever can write to Redis can
//! therefore neither create a quote nor forge an answer: an entry counts
//! only if its signer is on the reader's allow-list and the signature binds
//! it to the reader. A replayed request is harmless (the mint answers a
//! share it quoted before with the same quote).
//!
//! Keys, under a deployment's prefix:
//! - `<prefix>:mint-quote:requests`: every pool's requests, read by the
//!   mints as the consumer group [`MINTS_GROUP`];
//! - `<prefix>:mint-quote:answers:<pool key hex>`: one pool's answers;
//! - `<prefix>:mint-quote:mint`: a hash with the active keyset and the
//!   mint's `unit_bits`, published by every mint process;
//! - `<prefix>:mint-quote:alive`: refreshed by every running mint process
//!   every [`MINT_ALIVE_EVERY`], gone [`MINT_ALIVE_TTL`] after the last
//!   one stopped. Without it a pool's link is down: requests written while
//!   no mint reads them (resent at every timeout) would pile up in the
//!   request stream for the mints to read through when they return.

use std::time::Duration;

use ehash::wire::MessageSet;
use stratum_core::bitcoin::hashes::{sha256, Hash, HashEngine};
use stratum_core::bitcoin::secp256k1::{
    schnorr, Keypair, Message, Secp256k1, SecretKey, XOnlyPublicKey,
};

use crate::MintQuoteMessage;

/// BIP-340 style tag of the signed digest.
pub const STREAM_TAG: &[u8] = b"hashpool/mint-quote/stream/v1";

/// The consumer group the mint processes read requests as.
pub const MINTS_GROUP: &str = "mints";

/// Field names of an entry.
pub const FIELD_SIGNER: &str = "signer";
pub const FIELD_FRAME: &str = "frame";
pub const FIELD_SIGNATURE: &str = "sig";

/// Fields of the mint's published hash.
pub const FIELD_KEYSET: &str = "keyset";
pub const FIELD_UNIT_BITS: &str = "unit_bits";
/// The id of the database every mint reading the prefix's requests must
/// share (each mint keeps its database's id in that database).
pub const FIELD_DATABASE: &str = "database";

/// How long the key a mint refreshes lives, and how often each refreshes it.
pub const MINT_ALIVE_TTL: Duration = Duration::from_secs(30);
pub const MINT_ALIVE_EVERY: Duration = Duration::from_secs(5);

/// Largest frame an entry may carry: a request with the longest coinbase
/// proof the protocol allows is far below.
pub const MAX_FRAME: usize = 64 * 1024;

/// The Redis keys of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    prefix: String,
}

impl StreamKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn requests(&self) -> String {
        format!("{}:mint-quote:requests", self.prefix)
    }

    pub fn answers(&self, pool_key: &XOnlyPublicKey) -> String {
        format!("{}:mint-quote:answers:{pool_key}", self.prefix)
    }

    pub fn mint_info(&self) -> String {
        format!("{}:mint-quote:mint", self.prefix)
    }

    pub fn mint_alive(&self) -> String {
        format!("{}:mint-quote:alive", self.prefix)
    }
}

/// Why an entry is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
    #[error("signer {0} is not on the allow-list")]
    UnknownSigner(XOnlyPublicKey),
    #[error("the signature does not verify")]
    InvalidSignature,
    #[error("the frame does not decode: {0}")]
    Frame(String),
}

/// One signed message, as stored in a stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    pub signer: [u8; 32],
    pub frame: Vec<u8>,
    pub signature: [u8; 64],
}

/// tagged_hash(tag, recipient || signer || frame), as in BIP-340.
fn digest(recipient: &XOnlyPublicKey, signer: &XOnlyPublicKey, frame: &[u8]) -> [u8; 32] {
    let tag = sha256::Hash::hash(STREAM_TAG);
    let mut engine = sha256::Hash::engine();
    engine.input(tag.as_ref());
    engine.input(tag.as_ref());
    engine.input(&recipient.serialize());
    engine.input(&signer.serialize());
    engine.input(frame);
    sha256::Hash::from_engine(engine).to_byte_array()
}

impl SignedEntry {
    /// `message` framed and signed by `signer` for `recipient`.
    pub fn sign(
        message: MintQuoteMessage,
        signer: &Keypair,
        recipient: &XOnlyPublicKey,
    ) -> Result<Self, crate::EncodeError> {
        Ok(Self::sign_frame(
            message.to_frame_bytes()?,
            signer,
            recipient,
        ))
    }

    /// A message framed already (header and payload), signed by `signer`
    /// for `recipient`.
    pub fn sign_frame(frame: Vec<u8>, signer: &Keypair, recipient: &XOnlyPublicKey) -> Self {
        let (signer_key, _) = signer.x_only_public_key();
        let digest = digest(recipient, &signer_key, &frame);
        let signature = Secp256k1::signing_only()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), signer);
        Self {
            signer: signer_key.serialize(),
            frame,
            signature: signature.serialize(),
        }
    }

    /// The entry's fields, to add to a stream.
    pub fn fields(&self) -> [(&'static str, &[u8]); 3] {
        [
            (FIELD_SIGNER, &self.signer),
            (FIELD_FRAME, &self.frame),
            (FIELD_SIGNATURE, &self.signature),
        ]
    }

    /// An entry from its fields as read; `field` looks one up by name.
    pub fn from_fields<'a>(
        field: impl Fn(&'static str) -> Option<&'a [u8]>,
    ) -> Result<Self, EntryError> {
        let get = |name| field(name).ok_or(EntryError::Missing(name));
        let signer = get(FIELD_SIGNER)?
            .try_into()
            .map_err(|_| EntryError::Malformed(FIELD_SIGNER))?;
        let frame = get(FIELD_FRAME)?;
        if frame.len() > MAX_FRAME {
            return Err(EntryError::Malformed(FIELD_FRAME));
        }
        let signature = get(FIELD_SIGNATURE)?
            .try_into()
            .map_err(|_| EntryError::Malformed(FIELD_SIGNATURE))?;
        Ok(Self {
            signer,
            frame: frame.to_vec(),
            signature,
        })
    }

    /// Checks the signer against `allowed` and the signature against
    /// `recipient` (the reader's own key), then decodes the message.
    pub fn open(
        mut self,
        recipient: &XOnlyPublicKey,
        allowed: &[XOnlyPublicKey],
    ) -> Result<(XOnlyPublicKey, MintQuoteMessage), EntryError> {
        let signer = XOnlyPublicKey::from_slice(&self.signer)
            .map_err(|_| EntryError::Malformed(FIELD_SIGNER))?;
        if !allowed.contains(&signer) {
            return Err(EntryError::UnknownSigner(signer));
        }
        let signature = schnorr::Signature::from_slice(&self.signature)
            .map_err(|_| EntryError::Malformed(FIELD_SIGNATURE))?;
        let digest = digest(recipient, &signer, &self.frame);
        Secp256k1::verification_only()
            .verify_schnorr(&signature, &Message::from_digest(digest), &signer)
            .map_err(|_| EntryError::InvalidSignature)?;
        let message = MintQuoteMessage::decode_frame(&mut self.frame)
            .map_err(|e| EntryError::Frame(e.to_string()))?;
        Ok((signer, message))
    }
}

/// A key pair from a secret key, for signing entries.
pub fn keypair(secret: &SecretKey) -> Keypair {
    Keypair::from_secret_key(&Secp256k1::signing_only(), secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::key;
    use crate::MintStatsRequest;

    fn xonly(secret: &SecretKey) -> XOnlyPublicKey {
        keypair(secret).x_only_public_key().0
    }

    fn stats(id: u32) -> MintQuoteMessage {
        MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id: id })
    }

    /// Reads an entry back the way a stream reader sees it: by field name.
    fn reread(entry: &SignedEntry) -> Result<SignedEntry, EntryError> {
        let fields = entry.fields();
        SignedEntry::from_fields(|name| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| *value)
        })
    }

    #[test]
    fn an_entry_signed_for_the_reader_by_an_allowed_signer_opens() {
        let (pool, mint) = (key(1), key(2));
        let entry = SignedEntry::sign(stats(7), &keypair(&pool), &xonly(&mint)).unwrap();
        let (signer, message) = reread(&entry)
            .unwrap()
            .open(&xonly(&mint), &[xonly(&pool)])
            .unwrap();
        assert_eq!(signer, xonly(&pool));
        assert_eq!(message, stats(7));
    }

    #[test]
    fn a_signer_off_the_allow_list_is_refused() {
        let (pool, mint, other) = (key(1), key(2), key(3));
        let entry = SignedEntry::sign(stats(7), &keypair(&other), &xonly(&mint)).unwrap();
        assert_eq!(
            entry.open(&xonly(&mint), &[xonly(&pool)]),
            Err(EntryError::UnknownSigner(xonly(&other)))
        );
    }

    #[test]
    fn a_changed_frame_a_borrowed_key_or_another_recipient_fails_the_signature() {
        let (pool, mint, other_mint) = (key(1), key(2), key(4));
        let entry = SignedEntry::sign(stats(7), &keypair(&pool), &xonly(&mint)).unwrap();
        let allowed = [xonly(&pool), xonly(&key(3))];

        let mut changed = entry.clone();
        changed.frame = stats(8).to_frame_bytes().unwrap();
        assert_eq!(
            changed.open(&xonly(&mint), &allowed),
            Err(EntryError::InvalidSignature)
        );

        let mut borrowed = entry.clone();
        borrowed.signer = xonly(&key(3)).serialize();
        assert_eq!(
            borrowed.open(&xonly(&mint), &allowed),
            Err(EntryError::InvalidSignature)
        );

        assert_eq!(
            entry.open(&xonly(&other_mint), &allowed),
            Err(EntryError::InvalidSignature)
        );
    }

    #[test]
    fn missing_short_and_oversized_fields_are_refused_by_name() {
        let entry = SignedEntry::sign(stats(1), &keypair(&key(1)), &xonly(&key(2))).unwrap();
        let without = |skip: &'static str| {
            let fields = entry.fields();
            SignedEntry::from_fields(|name| {
                fields
                    .iter()
                    .find(|(n, _)| *n == name && name != skip)
                    .map(|(_, v)| *v)
            })
        };
        assert_eq!(without(FIELD_FRAME), Err(EntryError::Missing(FIELD_FRAME)));
        let short = SignedEntry::from_fields(|name| match name {
            FIELD_SIGNER => Some(&[1u8; 31][..]),
            _ => Some(&[0u8; 64][..]),
        });
        assert_eq!(short, Err(EntryError::Malformed(FIELD_SIGNER)));
        let huge = vec![0u8; MAX_FRAME + 1];
        let oversized = SignedEntry::from_fields(|name| match name {
            FIELD_SIGNER => Some(&entry.signer[..]),
            FIELD_FRAME => Some(&huge[..]),
            _ => Some(&entry.signature[..]),
        });
        assert_eq!(oversized, Err(EntryError::Malformed(FIELD_FRAME)));
    }

    #[test]
    fn a_signed_garbage_frame_is_refused_without_panic() {
        let (pool, mint) = (key(1), key(2));
        let keypair = keypair(&pool);
        let frame = vec![0xffu8; 40];
        let digest = digest(&xonly(&mint), &xonly(&pool), &frame);
        let signature = Secp256k1::signing_only()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair);
        let entry = SignedEntry {
            signer: xonly(&pool).serialize(),
            frame,
            signature: signature.serialize(),
        };
        assert!(matches!(
            entry.open(&xonly(&mint), &[xonly(&pool)]),
            Err(EntryError::Frame(_))
        ));
    }

    #[test]
    fn keys_are_named_under_the_prefix() {
        let keys = StreamKeys::new("hp");
        assert_eq!(keys.requests(), "hp:mint-quote:requests");
        assert_eq!(keys.mint_info(), "hp:mint-quote:mint");
        let pool = xonly(&key(1));
        assert_eq!(keys.answers(&pool), format!("hp:mint-quote:answers:{pool}"));
    }
}

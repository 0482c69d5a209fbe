//! The miner's locking key: the NUT-20 public key a share's quote is locked
//! to, named in an SV2 `user_identity` or an SV1 username as a 33-byte
//! compressed secp256k1 key in hex, optionally followed by `.workername`.

use core::fmt;
use core::str::FromStr;
use stratum_core::bitcoin::secp256k1::PublicKey;

/// Length in hex characters of a compressed public key.
const KEY_HEX_LEN: usize = 66;

/// A valid compressed secp256k1 public key that quotes are locked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockingKey(PublicKey);

/// Why a string or byte string is not a locking key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockingKeyError {
    #[error("no locking key: the identity is empty")]
    Empty,
    #[error(
        "locking key must be {KEY_HEX_LEN} hex characters (a 33-byte compressed public key), got {0}"
    )]
    WrongLength(usize),
    #[error("locking key is not hex: {0:?} at position {1}")]
    NotHex(char, usize),
    #[error("locking key must start with 02 or 03 (compressed), got {0:02x}")]
    NotCompressed(u8),
    #[error("locking key is not a point on secp256k1")]
    NotOnCurve,
    #[error("worker name after '.' is empty")]
    EmptyWorkerName,
}

impl LockingKey {
    /// From the 33 bytes of a compressed key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LockingKeyError> {
        if bytes.len() != KEY_HEX_LEN / 2 {
            return Err(LockingKeyError::WrongLength(bytes.len() * 2));
        }
        if bytes[0] != 0x02 && bytes[0] != 0x03 {
            return Err(LockingKeyError::NotCompressed(bytes[0]));
        }
        PublicKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| LockingKeyError::NotOnCurve)
    }

    /// The 33 bytes of the compressed key.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }

    pub fn public_key(&self) -> PublicKey {
        self.0
    }
}

impl From<PublicKey> for LockingKey {
    fn from(key: PublicKey) -> Self {
        Self(key)
    }
}

impl FromStr for LockingKey {
    type Err = LockingKeyError;

    /// Exactly 66 hex characters, nothing around them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(LockingKeyError::Empty);
        }
        if let Some((pos, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(LockingKeyError::NotHex(c, pos));
        }
        if s.len() != KEY_HEX_LEN {
            return Err(LockingKeyError::WrongLength(s.len()));
        }
        let bytes = hex::decode(s).expect("checked: even number of hex digits");
        Self::from_bytes(&bytes)
    }
}

impl fmt::Display for LockingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.to_bytes()))
    }
}

/// What a miner's identity string says: whose key, and which worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinerIdentity {
    pub locking_key: LockingKey,
    pub worker: Option<String>,
}

/// Parses `<66 hex chars>[.<worker>]`, as in an SV2 `user_identity` or an SV1
/// username. Surrounding whitespace is ignored; the worker name is kept as is.
pub fn parse_user_identity(identity: &str) -> Result<MinerIdentity, LockingKeyError> {
    let identity = identity.trim();
    let (key, worker) = match identity.split_once('.') {
        Some((_, "")) => return Err(LockingKeyError::EmptyWorkerName),
        Some((key, worker)) => (key, Some(worker.to_string())),
        None => (identity, None),
    };
    Ok(MinerIdentity {
        locking_key: key.parse()?,
        worker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The secp256k1 generator point G, compressed.
    const G: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn parses_a_bare_key() {
        let id = parse_user_identity(G).unwrap();
        assert_eq!(id.locking_key.to_string(), G);
        assert_eq!(id.worker, None);
    }

    #[test]
    fn parses_key_with_worker_and_keeps_dots_in_worker() {
        let id = parse_user_identity(&format!(" {G}.rig-1.left ")).unwrap();
        assert_eq!(id.locking_key.to_string(), G);
        assert_eq!(id.worker.as_deref(), Some("rig-1.left"));
    }

    #[test]
    fn uppercase_hex_is_accepted_and_normalised() {
        let id = parse_user_identity(&G.to_uppercase()).unwrap();
        assert_eq!(id.locking_key.to_string(), G);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        use LockingKeyError::*;
        assert_eq!(parse_user_identity(""), Err(Empty));
        assert_eq!(parse_user_identity(".worker"), Err(Empty));
        assert_eq!(parse_user_identity(&format!("{G}.")), Err(EmptyWorkerName));
        assert_eq!(parse_user_identity(&G[..64]), Err(WrongLength(64)));
        assert_eq!(parse_user_identity("bc1qxyz"), Err(NotHex('q', 3)));
        let uncompressed_prefix = format!("04{}", &G[2..]);
        assert_eq!(
            parse_user_identity(&uncompressed_prefix),
            Err(NotCompressed(0x04))
        );
        // x = 5 has no point on secp256k1 (5^3 + 7 = 132 is not a square mod p).
        let off_curve = format!("02{:064x}", 5);
        assert_eq!(parse_user_identity(&off_curve), Err(NotOnCurve));
        assert_eq!(
            NotHex('q', 3).to_string(),
            "locking key is not hex: 'q' at position 3"
        );
        assert_eq!(
            WrongLength(64).to_string(),
            "locking key must be 66 hex characters (a 33-byte compressed public key), got 64"
        );
    }

    #[test]
    fn bytes_round_trip() {
        let key: LockingKey = G.parse().unwrap();
        assert_eq!(LockingKey::from_bytes(&key.to_bytes()), Ok(key));
        assert_eq!(
            LockingKey::from_bytes(&[2u8; 32]),
            Err(LockingKeyError::WrongLength(64))
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,100}") {
            let _ = parse_user_identity(&s);
        }

        #[test]
        fn never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = LockingKey::from_bytes(&b);
        }
    }
}

//! The messages of the mint-quote subprotocol. Field order is wire order.

use binary_sv2::{Deserialize, PubKey, Seq0255, Serialize, Signature, Str0255, B064K, U256};

/// `SetupConnection` with the same wire layout as the common SV2 message.
///
/// common_messages_sv2 decodes `protocol` into an enum of the three
/// protocols SV2 allocates and refuses any other value, so it cannot carry
/// the mint-quote protocol value; this twin keeps `protocol` a plain byte.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetupConnection<'decoder> {
    pub protocol: u8,
    pub min_version: u16,
    pub max_version: u16,
    pub flags: u32,
    pub endpoint_host: Str0255<'decoder>,
    pub endpoint_port: u16,
    pub vendor: Str0255<'decoder>,
    pub hardware_version: Str0255<'decoder>,
    pub firmware: Str0255<'decoder>,
    pub device_id: Str0255<'decoder>,
}

/// Mint -> pool, right after `SetupConnection.Success`: 32 fresh random bytes
/// the pool must sign. A new connection gets a new challenge, so a proof is
/// good for one Noise session only.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PoolAuthChallenge<'decoder> {
    pub challenge: U256<'decoder>,
}

/// Pool -> mint: the pool's x-only public key and its BIP-340 Schnorr
/// signature over [`crate::auth::pool_auth_digest`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PoolAuthProof<'decoder> {
    pub pool_key: PubKey<'decoder>,
    pub signature: Signature<'decoder>,
}

/// Mint -> pool: the proof is accepted. Carries the mint's view of the
/// shared ehash settings, so a misconfigured pool finds out at once.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PoolAuthSuccess {
    /// The mint's `unit_bits`: one ehash is 2^unit_bits expected hashes.
    pub unit_bits: u8,
}

/// Mint -> pool: the proof is refused; the mint closes the connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PoolAuthError<'decoder> {
    /// One of [`crate::error_code`].
    pub error_code: Str0255<'decoder>,
}

/// An 80-byte Bitcoin block header, field by field; its wire form is the
/// consensus serialization, so the mint hashes exactly these bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ShareHeader<'decoder> {
    pub version: u32,
    pub prev_hash: U256<'decoder>,
    pub merkle_root: U256<'decoder>,
    pub time: u32,
    pub bits: u32,
    pub nonce: u32,
}

/// A 33-byte compressed secp256k1 public key: the 0x02/0x03 prefix and the
/// x coordinate (big-endian, as in the usual serialization). Validity is
/// checked where it is used ([`ehash::LockingKey::from_bytes`]), so that a
/// bad key gets a `MintQuoteError` rather than a dropped connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CompressedPubKey<'decoder> {
    pub prefix: u8,
    pub x: U256<'decoder>,
}

/// Pool -> mint: create a quote worth the work of one accepted share.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteRequest<'decoder> {
    /// sha256d of `header`; the correlation id of the request, and the
    /// payment id that makes quote creation idempotent.
    pub share_hash: U256<'decoder>,
    pub header: ShareHeader<'decoder>,
    /// The channel target the share was accepted against (little-endian).
    pub target: U256<'decoder>,
    /// ehash amount: floor(work(target) / 2^unit_bits).
    pub amount: u64,
    /// Cashu unit, `hash`.
    pub unit: Str0255<'decoder>,
    /// NUT-20 key the quote is locked to.
    pub locking_key: CompressedPubKey<'decoder>,
    /// The share's coinbase transaction, serialized without witness: it
    /// pays the pool and commits to `locking_key` ([`ehash::coinbase`]).
    pub coinbase_tx: B064K<'decoder>,
    /// Sibling hashes from the coinbase's txid up to the header's merkle
    /// root (as in `NewExtendedMiningJob.merkle_path`).
    pub merkle_path: Seq0255<'decoder, U256<'decoder>>,
}

/// Mint -> pool: the quote for `share_hash` exists and is paid.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteResponse<'decoder> {
    pub share_hash: U256<'decoder>,
    /// cdk's quote id.
    pub quote_id: Str0255<'decoder>,
    /// The active keyset id (hex) the quote can be minted on.
    pub keyset_id: Str0255<'decoder>,
}

/// Mint -> pool: no quote was created for `share_hash`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteError<'decoder> {
    pub share_hash: U256<'decoder>,
    /// One of [`crate::error_code`].
    pub error_code: Str0255<'decoder>,
    /// Human-readable detail.
    pub error_message: Str0255<'decoder>,
}

/// Pool -> mint: ask for the quote totals.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintStatsRequest {
    /// Echoed in the response.
    pub request_id: u32,
}

/// Mint -> pool: quote totals read from the mint's database.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintStatsResponse {
    pub request_id: u32,
    /// ehash quotes not paid yet (should stay 0: the mint pays on creation).
    pub quotes_unpaid: u64,
    /// Paid, not yet minted by the wallet.
    pub quotes_paid: u64,
    /// Minted (ecash issued).
    pub quotes_issued: u64,
    /// Sum of the amounts of all ehash quotes.
    pub ehash_quoted: u64,
    /// Sum of the ehash issued as ecash.
    pub ehash_issued: u64,
}

/// The `error_code` values of [`MintQuoteError`] and [`PoolAuthError`].
pub mod error_code {
    /// sha256d(header) is above the target, or differs from `share_hash`.
    pub const INVALID_PROOF_OF_WORK: &str = "invalid-proof-of-work";
    /// `amount` is not the ehash amount of `target`.
    pub const AMOUNT_MISMATCH: &str = "amount-mismatch";
    /// The share is worth 0 ehash: no quote.
    pub const ZERO_AMOUNT: &str = "zero-amount";
    /// `amount` is outside the mint's limits on one quote.
    pub const AMOUNT_OUT_OF_RANGE: &str = "amount-out-of-range";
    /// `unit` is not `hash`.
    pub const UNSUPPORTED_UNIT: &str = "unsupported-unit";
    /// `locking_key` is not a valid compressed secp256k1 key.
    pub const INVALID_LOCKING_KEY: &str = "invalid-locking-key";
    /// The coinbase is not a coinbase transaction, or the merkle path is too long.
    pub const INVALID_COINBASE: &str = "invalid-coinbase";
    /// The merkle root of the coinbase and path is not the header's.
    pub const MERKLE_ROOT_MISMATCH: &str = "merkle-root-mismatch";
    /// The coinbase pays nothing to the asking pool's reward script.
    pub const COINBASE_NOT_PAYING_POOL: &str = "coinbase-not-paying-pool";
    /// The coinbase does not commit (exactly once) to `locking_key`.
    pub const KEY_COMMITMENT_MISMATCH: &str = "key-commitment-mismatch";
    /// The header's prev hash is a chain tip older than the mint's
    /// `max_tip_age`: the work is not fresh.
    pub const STALE_PREV_HASH: &str = "stale-prev-hash";
    /// The header's prev hash is no tip the mint's chain view ever had.
    pub const UNKNOWN_PREV_HASH: &str = "unknown-prev-hash";
    /// The header's nbits are not those of its chain tip.
    pub const NBITS_MISMATCH: &str = "nbits-mismatch";
    /// The header's ntime is more than two hours before its tip's time or
    /// after the mint's clock.
    pub const NTIME_OUT_OF_RANGE: &str = "ntime-out-of-range";
    /// The mint's template provider is down and the share's tip is not in
    /// its chain view yet (retryable).
    pub const CHAIN_UNAVAILABLE: &str = "chain-unavailable";
    /// The mint failed to create or pay the quote (retryable).
    pub const MINT_ERROR: &str = "mint-error";
    /// A request arrived before the pool proved its identity.
    pub const NOT_AUTHENTICATED: &str = "not-authenticated";
    /// The pool key is not on the mint's allow-list.
    pub const UNKNOWN_POOL_KEY: &str = "unknown-pool-key";
    /// The signature does not verify for this session's challenge.
    pub const INVALID_SIGNATURE: &str = "invalid-signature";

    /// Whether a `MintQuoteError` with `code` is worth asking again later:
    /// the mint could not decide yet, the share may well be good.
    pub fn is_transient(code: &str) -> bool {
        matches!(code, MINT_ERROR | CHAIN_UNAVAILABLE)
    }
}

impl ShareHeaderOwned {
    /// From the 80 bytes of a serialized block header.
    pub fn from_consensus_bytes(header: &[u8; 80]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let u256_at = |i: usize| -> binary_sv2::U256Owned {
            <[u8; 32]>::try_from(&header[i..i + 32])
                .expect("32 bytes")
                .into()
        };
        Self {
            version: u32_at(0),
            prev_hash: u256_at(4),
            merkle_root: u256_at(36),
            time: u32_at(68),
            bits: u32_at(72),
            nonce: u32_at(76),
        }
    }

    /// The 80 bytes of the serialized block header.
    pub fn consensus_bytes(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        out[0..4].copy_from_slice(&self.version.to_le_bytes());
        out[4..36].copy_from_slice(self.prev_hash.as_bytes());
        out[36..68].copy_from_slice(self.merkle_root.as_bytes());
        out[68..72].copy_from_slice(&self.time.to_le_bytes());
        out[72..76].copy_from_slice(&self.bits.to_le_bytes());
        out[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }
}

impl From<ehash::LockingKey> for CompressedPubKeyOwned {
    fn from(key: ehash::LockingKey) -> Self {
        let bytes = key.to_bytes();
        Self {
            prefix: bytes[0],
            x: <[u8; 32]>::try_from(&bytes[1..]).expect("32 bytes").into(),
        }
    }
}

impl MintQuoteRequestOwned {
    /// The request for a share with this header, found against `target`
    /// (little-endian), worth `amount` ehash, locked to `locking_key`, with
    /// the proof of where the work was done (`proof`).
    ///
    /// Fails only for a coinbase longer than the message can carry (64 KiB).
    pub fn new(
        header: &[u8; 80],
        target: [u8; 32],
        amount: u64,
        locking_key: ehash::LockingKey,
        proof: &CoinbaseProof,
    ) -> Result<Self, ehash::wire::EncodeError> {
        let too_long = |message| ehash::wire::EncodeError {
            message,
            reason: "longer than the field can carry".to_string(),
        };
        let merkle_path = proof
            .merkle_path
            .iter()
            .map(|h| binary_sv2::U256Owned::from(*h))
            .collect();
        Ok(Self {
            share_hash: ehash::share::header_hash(header).into(),
            header: ShareHeaderOwned::from_consensus_bytes(header),
            target: target.into(),
            amount,
            unit: ehash::wire::str0255("unit", ehash::constants::UNIT).expect("short"),
            locking_key: locking_key.into(),
            coinbase_tx: binary_sv2::B064KOwned::new(proof.coinbase.clone())
                .map_err(|_| too_long("coinbase_tx"))?,
            merkle_path: binary_sv2::Seq0255Owned::new(merkle_path)
                .map_err(|_| too_long("merkle_path"))?,
        })
    }

    /// The coinbase and merkle path the request carries.
    pub fn proof(&self) -> CoinbaseProof {
        CoinbaseProof {
            coinbase: self.coinbase_tx.to_owned_bytes(),
            merkle_path: self.merkle_path.iter().map(|h| h.to_array()).collect(),
        }
    }

    /// The share's serialized block header.
    pub fn header_bytes(&self) -> [u8; 80] {
        self.header.consensus_bytes()
    }

    /// The NUT-20 key, if it is a valid compressed key.
    pub fn locking_key(&self) -> Result<ehash::LockingKey, ehash::LockingKeyError> {
        ehash::LockingKey::from_bytes(&self.locking_key_bytes())
    }

    /// The NUT-20 key's 33 bytes as sent, not checked to be a key.
    pub fn locking_key_bytes(&self) -> [u8; 33] {
        let mut bytes = [0u8; 33];
        bytes[0] = self.locking_key.prefix;
        bytes[1..].copy_from_slice(self.locking_key.x.as_bytes());
        bytes
    }

    pub fn share_hash(&self) -> [u8; 32] {
        self.share_hash.to_array()
    }
}

/// Where a share's work was done: its coinbase (without witness) and the
/// merkle path from the coinbase's txid to the header's merkle root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoinbaseProof {
    pub coinbase: Vec<u8>,
    pub merkle_path: Vec<[u8; 32]>,
}

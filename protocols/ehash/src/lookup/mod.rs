//! Quote lookup by locking key: how a miner lists, at the mint, every ehash
//! quote locked (NUT-20) to their key, proving with a signature that the key
//! is theirs, so they need to trust neither the pool nor a proxy to learn
//! their quote ids.
//!
//! # The exchange
//!
//! `POST /v1/mint/quote/ehash/pubkey` with a [`LookupRequest`]:
//!
//! ```json
//! {
//!   "pubkeys": ["02…66 hex"],
//!   "pubkey_signatures": ["…128 hex"],
//!   "timestamp": 1767225600,
//!   "nonce": "…32 hex",
//!   "limit": 100,
//!   "cursor": "0:100"
//! }
//! ```
//!
//! answered with a [`LookupResponse`]
//! (`{"quotes": [{"quote", "pubkey", "amount", "state", "created_time"}], "next_cursor"}`)
//! or a 4xx [`LookupErrorBody`] (`{"error": "<code>", "detail": "<why>"}`).
//!
//! Signature `i` is a BIP-340 Schnorr signature by the secret key of
//! `pubkeys[i]` over [`lookup_digest`]:
//!
//! ```text
//! SHA256( "Hashpool_MintQuoteLookup_v1"      UTF-8, 27 bytes
//!      || mint_pubkey                        33 bytes, the mint's NUT-06 `pubkey`
//!      || pubkey                             33 bytes, pubkeys[i]
//!      || len(method) || method              1 byte, then UTF-8 ("ehash")
//!      || timestamp                          u64 big-endian, Unix seconds
//!      || nonce                              16 bytes
//!      || limit                              u32 big-endian, 0 when absent
//!      || cursor )                           0x00 when absent, else
//!                                            0x01 || key_index u32 BE || position u64 BE
//! ```
//!
//! # Where this differs from the Cashu NUT proposal "Mint Quote Lookup by Public Key"
//!
//! The shape follows the proposal (cashubtc/nuts PR 341): the same route
//! shape, `pubkeys` and `pubkey_signatures` in the same order, BIP-340
//! signatures over a SHA-256 of a domain tag, the mint's NUT-06 pubkey and
//! the key, and a `{"quotes": [...]}` answer. It differs on purpose:
//!
//! - **Freshness.** The proposal's message is static: whoever sees one
//!   request (a log, a TLS-terminating proxy) can replay it forever and
//!   follow that key's quotes. Ours commits to a `timestamp` the mint
//!   accepts only within [`TIMESTAMP_WINDOW_SECS`] of its clock, and to a
//!   random `nonce`; the mint refuses a signed message it has already served
//!   within the window ([`ReplayCache`]), so a captured request is useless
//!   once used, and entirely after the window.
//! - **Every field is signed.** Method, limit and cursor are in the message,
//!   so nobody on the path can turn one signed request into another.
//! - **A distinct domain tag** (`Hashpool_MintQuoteLookup_v1`, not
//!   `Cashu_MintQuoteLookup_v1`): one of our signatures is never a valid
//!   signature of the NUT's message, nor the reverse.
//! - **Paging.** A key earns a quote per share, so the answer is paged:
//!   `limit` (at most [`MAX_LIMIT`]) and an opaque `cursor`; the answer
//!   carries `next_cursor` until the last page. Keys are listed one after
//!   the other, each in the order its quotes were created.
//! - **Small entries.** Each entry has the quote id, its key (one of the
//!   requester's own), amount, state (`UNPAID`/`PAID`/`ISSUED`) and creation
//!   time; not the NUT-04 quote response, and nothing about other keys.
//! - **Bounds.** At most [`MAX_PUBKEYS`] keys per request, no duplicates; a
//!   request is refused as a whole if any signature fails.
//!
//! Pure logic: the mint and the wallet pass the clock in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stratum_core::bitcoin::hashes::{sha256, Hash, HashEngine};
use stratum_core::bitcoin::secp256k1::{
    schnorr, Keypair, Message, PublicKey, Secp256k1, SecretKey,
};

use crate::LockingKey;

mod replay;
pub use replay::ReplayCache;

/// Domain tag at the start of every signed lookup message.
pub const DOMAIN_TAG: &[u8] = b"Hashpool_MintQuoteLookup_v1";
/// Most keys one request may name.
pub const MAX_PUBKEYS: usize = 10;
/// Most quotes in one page; a larger `limit` is served as this.
pub const MAX_LIMIT: u32 = 100;
/// How far a request's timestamp may be from the mint's clock, either way.
pub const TIMESTAMP_WINDOW_SECS: u64 = 60;
/// Bytes of the random nonce.
pub const NONCE_LEN: usize = 16;
/// Most characters of a client's string quoted back in an error.
pub const MAX_QUOTED_LEN: usize = 64;
/// Signed messages the mint remembers per window; beyond that it refuses
/// lookups until old entries expire (memory stays bounded).
pub const REPLAY_CACHE_CAPACITY: usize = 100_000;

/// The HTTP path of the lookup for `method`.
pub fn lookup_path(method: &str) -> String {
    format!("/v1/mint/quote/{method}/pubkey")
}

/// The request body, as on the wire (hex strings, checked by [`verify_request`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    pub pubkeys: Vec<String>,
    pub pubkey_signatures: Vec<String>,
    pub timestamp: u64,
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One page of quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupResponse {
    pub quotes: Vec<QuoteEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What the mint says about one quote locked to a requested key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteEntry {
    /// The quote id, as in NUT-04.
    pub quote: String,
    /// The requested key the quote is locked to (compressed, hex).
    pub pubkey: String,
    pub amount: u64,
    pub state: QuoteState,
    /// Unix seconds.
    pub created_time: u64,
}

/// NUT-04 quote state, spelled as NUT-04 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QuoteState {
    Unpaid,
    Paid,
    Issued,
}

/// The body of every refusal: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupErrorBody {
    pub error: String,
    pub detail: String,
}

/// A position in the listing: the index of a key in the request's
/// `pubkeys`, and a position in that key's quotes, as the mint numbers them
/// (not a count: positions may skip). On the wire `"<k>:<p>"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub key_index: u32,
    pub position: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_index, self.position)
    }
}

impl FromStr for Cursor {
    type Err = LookupError;

    /// Decimal digits only on both sides of one ':'.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LookupError::BadCursor(format!("{:?} is not <key index>:<position>", clip(s)));
        let (k, p) = s.split_once(':').ok_or_else(bad)?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(k) || !digits(p) {
            return Err(bad());
        }
        Ok(Self {
            key_index: k.parse().map_err(|_| bad())?,
            position: p.parse().map_err(|_| bad())?,
        })
    }
}

/// Why a lookup is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{0} pubkeys in one request; at most {MAX_PUBKEYS}")]
    TooManyPubkeys(usize),
    #[error("bad cursor: {0}")]
    BadCursor(String),
    #[error("unknown payment method {0:?}: quotes are looked up for \"{method}\"", method = crate::constants::PAYMENT_METHOD)]
    UnknownMethod(String),
    #[error("timestamp {timestamp} is {} s from the mint's clock ({now}); at most {TIMESTAMP_WINDOW_SECS} s allowed", now.abs_diff(*timestamp))]
    StaleTimestamp { timestamp: u64, now: u64 },
    #[error("signature {index} does not verify for pubkey {pubkey} over this mint's key {mint_key} (wrong key, wrong mint, or altered request)")]
    InvalidSignature {
        index: usize,
        pubkey: String,
        mint_key: String,
    },
    #[error("this signed request was already used; sign a new one with a fresh nonce")]
    Replayed,
    #[error("too many lookups in the last {TIMESTAMP_WINDOW_SECS} s; try again shortly")]
    Busy,
}

impl LookupError {
    /// The stable code of [`LookupErrorBody::error`].
    pub fn code(&self) -> &'static str {
        match self {
            LookupError::Malformed(_) => "malformed-request",
            LookupError::TooManyPubkeys(_) => "too-many-pubkeys",
            LookupError::BadCursor(_) => "bad-cursor",
            LookupError::UnknownMethod(_) => "unknown-method",
            LookupError::StaleTimestamp { .. } => "stale-timestamp",
            LookupError::InvalidSignature { .. } => "invalid-signature",
            LookupError::Replayed => "replayed-request",
            LookupError::Busy => "busy",
        }
    }

    pub fn body(&self) -> LookupErrorBody {
        LookupErrorBody {
            error: self.code().to_string(),
            detail: self.to_string(),
        }
    }
}

/// The signed fields of a request besides the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupFields<'a> {
    pub method: &'a str,
    pub timestamp: u64,
    pub nonce: [u8; NONCE_LEN],
    pub limit: Option<u32>,
    pub cursor: Option<Cursor>,
}

/// The 32 bytes signature `i` signs (see the module documentation).
pub fn lookup_digest(mint_key: &PublicKey, key: &LockingKey, fields: &LookupFields) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(DOMAIN_TAG);
    engine.input(&mint_key.serialize());
    engine.input(&key.to_bytes());
    // The length byte frames the name; only "ehash" is ever verified.
    engine.input(&[fields.method.len().min(u8::MAX as usize) as u8]);
    engine.input(fields.method.as_bytes());
    engine.input(&fields.timestamp.to_be_bytes());
    engine.input(&fields.nonce);
    engine.input(&fields.limit.unwrap_or(0).to_be_bytes());
    match fields.cursor {
        None => engine.input(&[0]),
        Some(c) => {
            engine.input(&[1]);
            engine.input(&c.key_index.to_be_bytes());
            engine.input(&c.position.to_be_bytes());
        }
    }
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// A request for the keys of `secrets`, signed for the mint `mint_key`.
pub fn sign_request(
    secrets: &[SecretKey],
    mint_key: &PublicKey,
    fields: &LookupFields,
) -> LookupRequest {
    let secp = Secp256k1::signing_only();
    let mut request = LookupRequest {
        pubkeys: Vec::with_capacity(secrets.len()),
        pubkey_signatures: Vec::with_capacity(secrets.len()),
        timestamp: fields.timestamp,
        nonce: hex::encode(fields.nonce),
        limit: fields.limit,
        cursor: fields.cursor.map(|c| c.to_string()),
    };
    for secret in secrets {
        let keypair = Keypair::from_secret_key(&secp, secret);
        let key = LockingKey::from(keypair.public_key());
        let digest = lookup_digest(mint_key, &key, fields);
        // The message is fresh (timestamp and nonce): no auxiliary randomness needed.
        let signature = secp.sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair);
        request.pubkeys.push(key.to_string());
        request
            .pubkey_signatures
            .push(hex::encode(signature.serialize()));
    }
    request
}

/// A request whose every signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLookup {
    pub keys: Vec<LockingKey>,
    /// The page size to serve: the request's limit, at most [`MAX_LIMIT`].
    pub limit: u32,
    /// Where to start (the start of the first key when absent).
    pub cursor: Cursor,
    pub timestamp: u64,
    /// The signed digests, for the replay cache.
    pub digests: Vec<[u8; 32]>,
}

/// The mint's check of a request for `method`, at `now` (Unix seconds).
/// Cheap checks come first; signatures are verified last, all of them.
pub fn verify_request(
    request: &LookupRequest,
    mint_key: &PublicKey,
    method: &str,
    now: u64,
) -> Result<VerifiedLookup, LookupError> {
    check_method(method)?;
    let keys = parse_keys(&request.pubkeys)?;
    let signatures = parse_signatures(&request.pubkey_signatures, keys.len())?;
    let nonce = parse_nonce(&request.nonce)?;
    let limit = match request.limit {
        Some(0) => return Err(LookupError::Malformed("limit must be at least 1".into())),
        Some(n) => n.min(MAX_LIMIT),
        None => MAX_LIMIT,
    };
    let cursor = match &request.cursor {
        None => None,
        Some(s) => Some(parse_cursor(s, keys.len())?),
    };
    if now.abs_diff(request.timestamp) > TIMESTAMP_WINDOW_SECS {
        return Err(LookupError::StaleTimestamp {
            timestamp: request.timestamp,
            now,
        });
    }
    let fields = LookupFields {
        method,
        timestamp: request.timestamp,
        nonce,
        limit: request.limit,
        cursor,
    };
    let secp = Secp256k1::verification_only();
    let mut digests = Vec::with_capacity(keys.len());
    for (index, (key, signature)) in keys.iter().zip(&signatures).enumerate() {
        let digest = lookup_digest(mint_key, key, &fields);
        let (xonly, _) = key.public_key().x_only_public_key();
        secp.verify_schnorr(signature, &Message::from_digest(digest), &xonly)
            .map_err(|_| LookupError::InvalidSignature {
                index,
                pubkey: key.to_string(),
                mint_key: hex::encode(mint_key.serialize()),
            })?;
        digests.push(digest);
    }
    Ok(VerifiedLookup {
        keys,
        limit,
        cursor: cursor.unwrap_or_default(),
        timestamp: request.timestamp,
        digests,
    })
}

/// Only ehash quotes are looked up.
pub fn check_method(method: &str) -> Result<(), LookupError> {
    if method == crate::constants::PAYMENT_METHOD {
        Ok(())
    } else {
        Err(LookupError::UnknownMethod(clip(method)))
    }
}

fn parse_keys(pubkeys: &[String]) -> Result<Vec<LockingKey>, LookupError> {
    if pubkeys.is_empty() {
        return Err(LookupError::Malformed("pubkeys is empty".into()));
    }
    if pubkeys.len() > MAX_PUBKEYS {
        return Err(LookupError::TooManyPubkeys(pubkeys.len()));
    }
    let mut keys = Vec::with_capacity(pubkeys.len());
    for (i, s) in pubkeys.iter().enumerate() {
        let key: LockingKey = s
            .parse()
            .map_err(|e| LookupError::Malformed(format!("pubkeys[{i}]: {e}")))?;
        if keys.contains(&key) {
            return Err(LookupError::Malformed(format!(
                "pubkeys[{i}] repeats an earlier key"
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_signatures(sigs: &[String], n: usize) -> Result<Vec<schnorr::Signature>, LookupError> {
    if sigs.len() != n {
        return Err(LookupError::Malformed(format!(
            "{} pubkey_signatures for {n} pubkeys; one per key, in the same order",
            sigs.len()
        )));
    }
    sigs.iter()
        .enumerate()
        .map(|(i, s)| {
            let bad = |why: &str| LookupError::Malformed(format!("pubkey_signatures[{i}]: {why}"));
            let bytes = decode_hex(s, 64).map_err(|e| bad(&e))?;
            schnorr::Signature::from_slice(&bytes).map_err(|_| bad("not a BIP-340 signature"))
        })
        .collect()
}

fn parse_nonce(s: &str) -> Result<[u8; NONCE_LEN], LookupError> {
    let bytes =
        decode_hex(s, NONCE_LEN).map_err(|e| LookupError::Malformed(format!("nonce: {e}")))?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes);
    Ok(nonce)
}

fn parse_cursor(s: &str, keys: usize) -> Result<Cursor, LookupError> {
    let cursor: Cursor = s.parse()?;
    if cursor.key_index as usize >= keys {
        return Err(LookupError::BadCursor(format!(
            "key index {} but the request names {keys} keys",
            cursor.key_index
        )));
    }
    Ok(cursor)
}

/// Exactly `len` bytes of hex (either case), or why not.
fn decode_hex(s: &str, len: usize) -> Result<Vec<u8>, String> {
    if s.len() != 2 * len {
        return Err(format!(
            "expected {} hex characters, got {}",
            2 * len,
            s.len()
        ));
    }
    hex::decode(s).map_err(|e| format!("not hex: {e}"))
}

/// A hostile string, shortened for an error message.
fn clip(s: &str) -> String {
    s.chars().take(MAX_QUOTED_LEN).collect()
}

#[cfg(test)]
mod tests;

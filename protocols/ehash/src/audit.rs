//! The public issuance audit: the mint publishes, for every ehash quote it
//! issued, the proof it checked (header, coinbase, merkle path, target,
//! amount, locking key, issuance time; never the quote id), so anyone can
//! verify offline that every ehash is backed by work on the pool's jobs for
//! that key, and that no share was paid twice.
//!
//! # HTTP, served by the mint
//!
//! - `GET /v1/ehash/audit` -> [`AuditSummary`]: what entries are checked
//!   against (unit_bits, the allowed pools' reward scripts), how many there
//!   are, and the mint's own totals they must add up to.
//! - `GET /v1/ehash/audit/entries?start=N&limit=M` -> [`AuditPage`]: entries
//!   `N..N+M` in issuance order (at most [`MAX_PAGE`]).
//!
//! All byte strings are lowercase hex; `header`, `coinbase` and the
//! `merkle_path` hashes in consensus byte order, `target` as 32 big-endian
//! bytes (the way targets are written).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use stratum_core::bitcoin::pow::Target;
use stratum_core::bitcoin::ScriptBuf;

use crate::coinbase::{check_coinbase, CoinbaseError};
use crate::{ehash_amount, verify_share, LockingKey, UnitBits};

/// Most entries one page carries.
pub const MAX_PAGE: u32 = 1000;

/// What the mint checked before it issued one quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub header: String,
    pub coinbase: String,
    pub merkle_path: Vec<String>,
    pub target: String,
    pub amount: u64,
    pub locking_key: String,
    /// Unix seconds.
    pub issued_at: u64,
}

/// `GET /v1/ehash/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub unit_bits: u32,
    /// The allowed pools' reward scripts: each entry's coinbase pays one.
    pub reward_scripts: Vec<String>,
    pub entries: u64,
    /// The mint's own count of ehash quotes, and the ehash they are worth.
    pub quotes: u64,
    pub ehash_quoted: u64,
}

/// `GET /v1/ehash/audit/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub start: u64,
    pub entries: Vec<AuditEntry>,
}

/// An entry that verified: the share it proves and what it was worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub share_hash: [u8; 32],
    pub locking_key: LockingKey,
    pub amount: u64,
}

impl AuditEntry {
    pub fn new(
        header: &[u8; 80],
        coinbase: &[u8],
        merkle_path: &[[u8; 32]],
        target: Target,
        amount: u64,
        locking_key: &[u8; 33],
        issued_at: u64,
    ) -> Self {
        Self {
            header: hex::encode(header),
            coinbase: hex::encode(coinbase),
            merkle_path: merkle_path.iter().map(hex::encode).collect(),
            target: hex::encode(target.to_be_bytes()),
            amount,
            locking_key: hex::encode(locking_key),
            issued_at,
        }
    }

    /// Re-checks the entry as the mint did: proof of work, merkle root, a
    /// coinbase paying one of `reward_scripts` and committing to the key,
    /// and the amount the target is worth at `unit_bits`.
    pub fn verify(
        &self,
        reward_scripts: &[ScriptBuf],
        unit_bits: UnitBits,
    ) -> Result<VerifiedEntry, String> {
        let header: [u8; 80] = decode_array(&self.header, "header")?;
        let target = Target::from_be_bytes(decode_array(&self.target, "target")?);
        let coinbase = hex::decode(&self.coinbase).map_err(|e| format!("coinbase: {e}"))?;
        let path = self
            .merkle_path
            .iter()
            .map(|h| decode_array::<32>(h, "merkle_path"))
            .collect::<Result<Vec<_>, _>>()?;
        let locking_key: LockingKey = self
            .locking_key
            .parse()
            .map_err(|e| format!("locking_key: {e}"))?;
        let share_hash = verify_share(&header, target).map_err(|e| e.to_string())?;
        check_paying_any(&header, &coinbase, &path, reward_scripts, &locking_key)
            .map_err(|e| e.to_string())?;
        let worth = ehash_amount(target, unit_bits);
        if self.amount != worth || worth == 0 {
            return Err(format!(
                "amount {} is not {worth}, what the target is worth at unit_bits {}",
                self.amount,
                unit_bits.get()
            ));
        }
        Ok(VerifiedEntry {
            share_hash,
            locking_key,
            amount: worth,
        })
    }
}

/// [`check_coinbase`] against several allowed pools: the first that the
/// coinbase pays decides.
fn check_paying_any(
    header: &[u8; 80],
    coinbase: &[u8],
    path: &[[u8; 32]],
    reward_scripts: &[ScriptBuf],
    key: &LockingKey,
) -> Result<(), CoinbaseError> {
    let mut last = CoinbaseError::NotPayingPool(String::new());
    for script in reward_scripts {
        match check_coinbase(header, coinbase, path, script, key) {
            Err(e @ CoinbaseError::NotPayingPool(_)) => last = e,
            decided => return decided.map(|_| ()),
        }
    }
    Err(last)
}

fn decode_array<const N: usize>(text: &str, field: &str) -> Result<[u8; N], String> {
    hex::decode(text)
        .map_err(|e| format!("{field}: {e}"))?
        .try_into()
        .map_err(|v: Vec<u8>| format!("{field}: {} bytes, expected {N}", v.len()))
}

/// The issuance so far, as verified entries add up.
#[derive(Debug, Default)]
pub struct AuditTotals {
    shares: HashSet<[u8; 32]>,
    /// Per locking key: (quotes, ehash).
    pub per_key: BTreeMap<String, (u64, u64)>,
    pub quotes: u64,
    pub ehash: u64,
}

impl AuditTotals {
    /// Adds one verified entry; an error if its share was counted before.
    pub fn add(&mut self, entry: &VerifiedEntry) -> Result<(), String> {
        if !self.shares.insert(entry.share_hash) {
            return Err(format!(
                "share {} appears twice",
                crate::share::hex_be(&entry.share_hash)
            ));
        }
        let key = self
            .per_key
            .entry(entry.locking_key.to_string())
            .or_default();
        key.0 += 1;
        key.1 = key.1.saturating_add(entry.amount);
        self.quotes += 1;
        self.ehash = self.ehash.saturating_add(entry.amount);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coinbase::testing::{coinbase, mine_header};

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const BITS: u32 = 8;

    fn pool() -> ScriptBuf {
        ScriptBuf::from_bytes(vec![0x51])
    }

    fn entry(unique: &[u8]) -> AuditEntry {
        let key: LockingKey = KEY.parse().unwrap();
        let cb = coinbase(&pool(), &key, unique);
        let path = [[3; 32]];
        let (header, target) = mine_header(&cb, &path, BITS);
        let target = Target::from_le_bytes(target);
        AuditEntry::new(&header, &cb, &path, target, 1 << BITS, &key.to_bytes(), 7)
    }

    fn zero() -> UnitBits {
        UnitBits::new(0).unwrap()
    }

    #[test]
    fn an_honest_entry_verifies_and_adds_up_once() {
        let e = entry(b"a");
        let json = serde_json::to_string(&e).unwrap();
        let back: AuditEntry = serde_json::from_str(&json).unwrap();
        let verified = back.verify(&[ScriptBuf::new(), pool()], zero()).unwrap();
        assert_eq!(verified.amount, 256);
        let mut totals = AuditTotals::default();
        totals.add(&verified).unwrap();
        totals
            .add(&entry(b"b").verify(&[pool()], zero()).unwrap())
            .unwrap();
        assert_eq!((totals.quotes, totals.ehash), (2, 512));
        assert_eq!(totals.per_key[KEY], (2, 512));
        let twice = totals.add(&verified).unwrap_err();
        assert!(twice.contains("appears twice"), "{twice}");
    }

    #[test]
    fn any_changed_field_fails_verification() {
        let honest = entry(b"a");
        let mut flips: Vec<AuditEntry> = vec![];
        // One byte changed in each: the header's merkle root, the coinbase's
        // locktime, the path's hash, the target's top byte (twice as easy).
        for (field, byte) in [(0, 40), (1, usize::MAX), (2, 31), (3, 0)] {
            let mut e = honest.clone();
            let text = match field {
                0 => &mut e.header,
                1 => &mut e.coinbase,
                2 => &mut e.merkle_path[0],
                _ => &mut e.target,
            };
            let at = byte.min(text.len() / 2 - 1) * 2;
            let flipped = u8::from_str_radix(&text[at..at + 2], 16).unwrap() ^ 0x01;
            text.replace_range(at..at + 2, &format!("{flipped:02x}"));
            flips.push(e);
        }
        flips.push(AuditEntry {
            amount: 257,
            ..honest.clone()
        });
        flips.push(AuditEntry {
            locking_key: "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
                .into(),
            ..honest.clone()
        });
        for (i, e) in flips.iter().enumerate() {
            assert!(e.verify(&[pool()], zero()).is_err(), "change {i} verified");
        }
        let other_pool = ScriptBuf::from_bytes(vec![0x52]);
        let err = honest.verify(&[other_pool], zero()).unwrap_err();
        assert!(err.contains("pays nothing"), "{err}");
    }
}

//! The public issuance audit, served over HTTP next to cdk-axum's routes
//! (the format and the checks are in `ehash::audit`): every quote's proof is
//! appended to a [`KvLog`] in the same transaction that indexes the quote,
//! so a quote that can be paid always has its entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cdk::mint::Mint;
use cdk_common::database::mint::DynMintTransaction;
use cdk_common::database::Error;
use ehash::audit::{AuditEntry, AuditPage, AuditSummary, MAX_PAGE};
use serde::Deserialize;
use stratum_core::bitcoin::pow::Target;
use tracing::error;

use crate::kv_log::KvLog;
use crate::quote::CheckedShare;
use crate::service::QuoteService;

const LOG: KvLog<'static> = KvLog {
    list: "audit",
    hints: "audit_next",
    hint_key: "next",
};

/// The first byte of an entry stored in binary; entries stored as JSON
/// (`{`, as earlier versions did) still read.
const BINARY_V1: u8 = 1;
/// Version, header, target, amount, locking key, issued at, coinbase
/// length, path length.
const FIXED_LEN: usize = 1 + 80 + 32 + 8 + 33 + 8 + 4 + 1;

/// A share's audit entry as it is stored: its proof in binary, half the
/// size of the JSON the API serves and without the hex and JSON encoding
/// on the quoting path; [`decode`] renders it for the API.
///
/// version 1 | header (80) | target, big-endian (32) | amount (u64 LE) |
/// locking key (33) | issued at (u64 LE) | coinbase length (u32 LE) |
/// merkle path length (u8) | coinbase | merkle path (32 each)
pub fn encode(share: &CheckedShare, issued_at: u64) -> Vec<u8> {
    let path = &share.proof.merkle_path;
    let mut out = Vec::with_capacity(FIXED_LEN + 32 * path.len() + share.proof.coinbase.len());
    out.push(BINARY_V1);
    out.extend_from_slice(&share.header);
    out.extend_from_slice(&share.target.to_be_bytes());
    out.extend_from_slice(&share.amount.to_le_bytes());
    out.extend_from_slice(&share.locking_key.to_bytes());
    out.extend_from_slice(&issued_at.to_le_bytes());
    // A checked share comes from a decoded request, whose coinbase is at
    // most 64 KiB (B064K) and whose path at most 255 hashes (Seq0255).
    let coinbase_len = u32::try_from(share.proof.coinbase.len()).expect("a B064K coinbase");
    out.extend_from_slice(&coinbase_len.to_le_bytes());
    out.push(u8::try_from(path.len()).expect("a Seq0255 merkle path"));
    out.extend_from_slice(&share.proof.coinbase);
    for hash in path {
        out.extend_from_slice(hash);
    }
    out
}

/// A stored entry as the API serves it.
fn decode(stored: &[u8]) -> Result<AuditEntry, String> {
    match stored.first() {
        Some(&BINARY_V1) => {
            decode_binary(stored).ok_or_else(|| "truncated or overlong".to_string())
        }
        Some(b'{') => serde_json::from_slice(stored).map_err(|e| e.to_string()),
        Some(other) => Err(format!("unknown format {other:#04x}")),
        None => Err("empty".to_string()),
    }
}

fn decode_binary(stored: &[u8]) -> Option<AuditEntry> {
    let mut rest = stored.get(1..)?;
    let mut take = |n: usize| {
        let (field, after) = rest.split_at_checked(n)?;
        rest = after;
        Some(field)
    };
    let header: [u8; 80] = take(80)?.try_into().ok()?;
    let target = Target::from_be_bytes(take(32)?.try_into().ok()?);
    let amount = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let locking_key: [u8; 33] = take(33)?.try_into().ok()?;
    let issued_at = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let coinbase_len = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let hashes = usize::from(take(1)?[0]);
    let coinbase = take(usize::try_from(coinbase_len).ok()?)?;
    let path: Vec<[u8; 32]> = take(32 * hashes)?
        .chunks_exact(32)
        .map(|hash| hash.try_into().expect("32 bytes"))
        .collect();
    if !rest.is_empty() {
        return None;
    }
    Some(AuditEntry::new(
        &header,
        coinbase,
        &path,
        target,
        amount,
        &locking_key,
        issued_at,
    ))
}

/// Appends quotes' [`encode`]d audit entries, in order, inside the
/// transaction that indexes them.
pub async fn append(tx: &mut DynMintTransaction, entries: &[&[u8]]) -> Result<(), Error> {
    LOG.append(tx, entries).await
}

/// A summary is computed at most this often: it counts every quote while
/// holding the quote writer, and anyone may ask for it.
const SUMMARY_FRESH: Duration = Duration::from_secs(5);

pub struct Audit {
    mint: Arc<Mint>,
    service: Arc<QuoteService>,
    reward_scripts: Vec<String>,
    summary: tokio::sync::Mutex<Option<(Instant, AuditSummary)>>,
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    start: u64,
    limit: Option<u32>,
}

impl Audit {
    /// `reward_scripts`: the allowed pools' scripts, hex.
    pub fn new(mint: Arc<Mint>, service: Arc<QuoteService>, reward_scripts: Vec<String>) -> Self {
        Self {
            mint,
            service,
            reward_scripts,
            summary: tokio::sync::Mutex::new(None),
        }
    }

    /// [`Self::fresh_summary`], at most [`SUMMARY_FRESH`] old.
    pub async fn summary(&self) -> Result<AuditSummary, String> {
        let mut cached = self.summary.lock().await;
        if let Some((at, summary)) = cached.as_ref() {
            if at.elapsed() < SUMMARY_FRESH {
                return Ok(summary.clone());
            }
        }
        let summary = self.fresh_summary().await?;
        *cached = Some((Instant::now(), summary.clone()));
        Ok(summary)
    }

    /// The number of entries and the mint's totals, taken while no quote
    /// is being written, so they describe the same quotes.
    async fn fresh_summary(&self) -> Result<AuditSummary, String> {
        // Brought up to date first, the totals read only the last moment's
        // quotes while quoting waits.
        self.service.stats(0).await?;
        let (entries, stats) = self
            .service
            .while_no_quote_is_written(async {
                let entries = LOG.len(&self.mint.localstore()).await;
                (entries, self.service.stats(0).await)
            })
            .await;
        let stats = stats?;
        Ok(AuditSummary {
            unit_bits: self.service.unit_bits().get().into(),
            reward_scripts: self.reward_scripts.clone(),
            entries: entries.map_err(|e| e.to_string())?,
            quotes: stats.quotes_paid + stats.quotes_issued,
            ehash_quoted: stats.ehash_quoted,
        })
    }

    /// Up to `limit` entries from `start` on.
    pub async fn page(&self, start: u64, limit: u32) -> Result<AuditPage, String> {
        let raw = LOG
            .read(&self.mint.localstore(), start, limit.min(MAX_PAGE) as usize)
            .await
            .map_err(|e| e.to_string())?;
        let entries = raw
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                decode(bytes)
                    .map_err(|e| format!("audit entry {} is corrupt: {e}", start + i as u64))
            })
            .collect::<Result<_, _>>()?;
        Ok(AuditPage { start, entries })
    }
}

/// `GET /v1/ehash/audit` and `GET /v1/ehash/audit/entries?start=&limit=`.
pub fn router(audit: Arc<Audit>) -> Router {
    Router::new()
        .route("/v1/ehash/audit", get(summary))
        .route("/v1/ehash/audit/entries", get(page))
        .with_state(audit)
}

async fn summary(State(audit): State<Arc<Audit>>) -> Response {
    answer(audit.summary().await)
}

async fn page(State(audit): State<Arc<Audit>>, Query(q): Query<PageQuery>) -> Response {
    answer(audit.page(q.start, q.limit.unwrap_or(MAX_PAGE)).await)
}

fn answer<T: serde::Serialize>(result: Result<T, String>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => {
            error!("audit: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mint_quote_sv2::CoinbaseProof;

    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    fn share() -> CheckedShare {
        CheckedShare {
            share_hash: [9; 32],
            amount: 16,
            locking_key: KEY.parse().unwrap(),
            header: [5; 80],
            target: Target::from_be_bytes([0x0f; 32]),
            proof: CoinbaseProof {
                coinbase: vec![1, 2, 3, 4, 5],
                merkle_path: vec![[6; 32], [7; 32]],
            },
            height: None,
        }
    }

    #[test]
    fn a_stored_entry_reads_as_the_entry_earlier_versions_stored_as_json() {
        // What a mint storing JSON wrote for `share()` at 1,800,000,000.
        let earlier = format!(
            r#"{{"header":"{}","coinbase":"0102030405","merkle_path":["{}","{}"],"target":"{}","amount":16,"locking_key":"{KEY}","issued_at":1800000000}}"#,
            "05".repeat(80),
            "06".repeat(32),
            "07".repeat(32),
            "0f".repeat(32),
        );
        let entry = decode(earlier.as_bytes()).unwrap();
        let stored = encode(&share(), 1_800_000_000);
        assert_eq!(decode(&stored), Ok(entry));
        assert!(
            stored.len() * 2 < earlier.len(),
            "{} vs {}",
            stored.len(),
            earlier.len()
        );
    }

    #[test]
    fn a_damaged_entry_is_refused_not_misread() {
        let stored = encode(&share(), 1_800_000_000);
        let refused = Err("truncated or overlong".to_string());
        // Cut inside the merkle path, inside the coinbase, or with a byte more.
        assert_eq!(decode(&stored[..stored.len() - 1]), refused);
        assert_eq!(decode(&stored[..FIXED_LEN + 3]), refused);
        assert_eq!(decode(&[stored.as_slice(), &[0]].concat()), refused);
        assert_eq!(decode(&stored[..10]), refused);
        assert_eq!(decode(&[7, 1, 2]), Err("unknown format 0x07".into()));
        assert_eq!(decode(&[]), Err("empty".into()));
        assert!(decode(b"{\"header\":").is_err());
    }
}

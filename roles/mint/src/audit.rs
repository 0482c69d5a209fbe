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
use tracing::error;

use crate::kv_log::KvLog;
use crate::quote::Rejection;
use crate::service::{mint_error, QuoteService};

const LOG: KvLog<'static> = KvLog {
    list: "audit",
    hints: "audit_next",
    hint_key: "next",
};

/// An audit entry as it is stored.
pub fn encode(entry: &AuditEntry) -> Result<Vec<u8>, Rejection> {
    serde_json::to_vec(entry).map_err(mint_error)
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
                serde_json::from_slice(bytes)
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

//! Quote lookup by locking key over HTTP: `POST /v1/mint/quote/ehash/pubkey`,
//! served next to cdk-axum's routes. The request, its signatures and the
//! freshness rules are in `ehash::lookup`; this module checks a request
//! against the mint's key, its clock and its replay cache (in memory, and
//! in the database for the other mint processes sharing it), and reads the
//! page from the locking-key index.
//!
//! The mint key the signatures commit to is the mint's NUT-06 `pubkey`
//! (`GET /v1/info`), which wallets learn from there.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cdk::mint::Mint;
use cdk_common::database::mint::DynMintDatabase;
use cdk_common::{MintQuoteState, QuoteId};
use ehash::lookup::{
    check_method, verify_request, Cursor, LookupError, LookupErrorBody, LookupRequest,
    LookupResponse, QuoteEntry, QuoteState, ReplayCache, VerifiedLookup, REPLAY_CACHE_CAPACITY,
    TIMESTAMP_WINDOW_SECS,
};
use ehash::LockingKey;
use roles_common::CancellationToken;
use stratum_core::bitcoin::secp256k1::PublicKey;
use tracing::{debug, error, warn};

use crate::key_index;
use crate::service::KV_NAMESPACE;

/// KV list of the digests of served lookups (namespace `ehash`).
const KV_SERVED_LOOKUPS: &str = "served-lookups";

/// Longest detail echoed from a parser error (it may quote the input).
const MAX_DETAIL: usize = 200;

/// Why a lookup got no page.
#[derive(Debug)]
pub enum Refusal {
    /// The request: answered 4xx.
    Request(LookupError),
    /// The mint's database: answered 500.
    Mint(String),
}

impl From<LookupError> for Refusal {
    fn from(e: LookupError) -> Self {
        Refusal::Request(e)
    }
}

pub struct QuoteLookup {
    mint: Arc<Mint>,
    mint_key: PublicKey,
    replay: Mutex<ReplayCache>,
}

impl QuoteLookup {
    pub fn new(mint: Arc<Mint>, mint_key: PublicKey) -> Self {
        Self {
            mint,
            mint_key,
            replay: Mutex::new(ReplayCache::new(REPLAY_CACHE_CAPACITY)),
        }
    }

    /// Answers a request body for `method` at `now` (Unix seconds).
    pub async fn lookup(
        &self,
        method: &str,
        body: &[u8],
        now: u64,
    ) -> Result<LookupResponse, Refusal> {
        check_method(method)?;
        let request: LookupRequest = serde_json::from_slice(body).map_err(|e| {
            let why: String = e.to_string().chars().take(MAX_DETAIL).collect();
            LookupError::Malformed(format!("not a lookup request: {why}"))
        })?;
        let verified = verify_request(&request, &self.mint_key, method, now)?;
        roles_common::lock(&self.replay).check_and_insert(
            &verified.digests,
            verified.timestamp,
            now,
        )?;
        self.remember(&verified).await?;
        self.page(&verified).await.map_err(Refusal::Mint)
    }

    /// Records the request's digests in the database, where every mint
    /// process sharing it finds them: a request served by one is refused
    /// by all. The key starts with the last second the request is
    /// accepted, so expired digests are found by their keys alone.
    async fn remember(&self, v: &VerifiedLookup) -> Result<(), Refusal> {
        let failed = |e: cdk_common::database::Error| Refusal::Mint(e.to_string());
        let mut tx = self
            .mint
            .localstore()
            .begin_transaction()
            .await
            .map_err(failed)?;
        let expiry = v.timestamp.saturating_add(TIMESTAMP_WINDOW_SECS);
        for digest in &v.digests {
            let key = format!("{expiry:016x}-{}", hex::encode(digest));
            let fresh = tx
                .kv_write_if_absent(KV_NAMESPACE, KV_SERVED_LOOKUPS, &key, &[1])
                .await
                .map_err(failed)?;
            if !fresh {
                tx.rollback().await.map_err(failed)?;
                return Err(Refusal::Request(LookupError::Replayed));
            }
        }
        tx.commit().await.map_err(failed)
    }

    /// Forgets the digests of requests too old to be accepted at `now`
    /// anyway; how many.
    pub async fn forget_expired(&self, now: u64) -> Result<usize, String> {
        let db = self.mint.localstore();
        let keys = db
            .kv_list(KV_NAMESPACE, KV_SERVED_LOOKUPS)
            .await
            .map_err(|e| e.to_string())?;
        let expired: Vec<String> = keys
            .into_iter()
            .filter(|key| {
                key.get(..16)
                    .and_then(|expiry| u64::from_str_radix(expiry, 16).ok())
                    .is_some_and(|expiry| expiry < now)
            })
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut tx = db.begin_transaction().await.map_err(|e| e.to_string())?;
        for key in &expired {
            tx.kv_remove(KV_NAMESPACE, KV_SERVED_LOOKUPS, key)
                .await
                .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(expired.len())
    }

    /// Up to `limit` quotes from the cursor on: each key's quotes in creation
    /// order, then the next key's.
    async fn page(&self, v: &VerifiedLookup) -> Result<LookupResponse, String> {
        let db = self.mint.localstore();
        let limit = v.limit as usize;
        let mut quotes = Vec::with_capacity(limit);
        let mut cursor = v.cursor;
        while let Some(key) = v.keys.get(cursor.key_index as usize) {
            let want = limit - quotes.len();
            let ids = key_index::read(&db, key, cursor.position, want + 1)
                .await
                .map_err(|e| e.to_string())?;
            for (_, id) in ids.iter().take(want) {
                quotes.extend(entry(&db, key, id).await?);
            }
            if let Some((next, _)) = ids.get(want) {
                cursor.position = *next;
                return Ok(LookupResponse {
                    quotes,
                    next_cursor: Some(cursor.to_string()),
                });
            }
            cursor = Cursor {
                key_index: cursor.key_index + 1,
                position: 0,
            };
            if quotes.len() == limit {
                break;
            }
        }
        let next = v.keys.get(cursor.key_index as usize).map(|_| cursor);
        Ok(LookupResponse {
            quotes,
            next_cursor: next.map(|c| c.to_string()),
        })
    }
}

/// The entry of one indexed quote, checked to be locked to `key`.
async fn entry(
    db: &DynMintDatabase,
    key: &LockingKey,
    id: &QuoteId,
) -> Result<Option<QuoteEntry>, String> {
    let Some(quote) = db.get_mint_quote(id).await.map_err(|e| e.to_string())? else {
        warn!(quote = %id, "indexed quote not in the database: skipped");
        return Ok(None);
    };
    if quote.pubkey.map(|p| p.to_bytes()) != Some(key.to_bytes()) {
        warn!(quote = %id, %key, "indexed quote is locked to another key: skipped");
        return Ok(None);
    }
    let state = match quote.state() {
        MintQuoteState::Unpaid => QuoteState::Unpaid,
        MintQuoteState::Paid => QuoteState::Paid,
        MintQuoteState::Issued => QuoteState::Issued,
    };
    let amount = quote
        .amount
        .as_ref()
        .map(|a| a.value())
        .unwrap_or_else(|| quote.amount_paid().value());
    Ok(Some(QuoteEntry {
        quote: quote.id.to_string(),
        pubkey: key.to_string(),
        amount,
        state,
        created_time: quote.created_time,
    }))
}

/// Forgets expired lookup digests every window until `shutdown`.
pub async fn forget_expired_periodically(lookup: Arc<QuoteLookup>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(TIMESTAMP_WINDOW_SECS));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = lookup.forget_expired(roles_common::unix_secs()).await {
            warn!("forgetting expired lookup digests: {e}");
        }
    }
}

/// The lookup route, to merge with cdk-axum's router.
pub fn router(lookup: Arc<QuoteLookup>) -> Router {
    Router::new()
        .route("/v1/mint/quote/{method}/pubkey", post(handle))
        .with_state(lookup)
}

async fn handle(
    State(lookup): State<Arc<QuoteLookup>>,
    method: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(method)) = method else {
        return refuse(&LookupError::UnknownMethod("(undecodable)".into()));
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let error = LookupError::Malformed(rejection.body_text());
            return (rejection.status(), Json(error.body())).into_response();
        }
    };
    match lookup
        .lookup(&method, &body, roles_common::unix_secs())
        .await
    {
        Ok(page) => {
            debug!(quotes = page.quotes.len(), "quote lookup served");
            Json(page).into_response()
        }
        Err(Refusal::Request(e)) => {
            debug!("quote lookup refused: {e}");
            refuse(&e)
        }
        Err(Refusal::Mint(e)) => {
            error!("quote lookup failed: {e}");
            let body = LookupErrorBody {
                error: "mint-error".into(),
                detail: "the mint could not read its quotes; try again later".into(),
            };
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

fn refuse(e: &LookupError) -> Response {
    (status(e), Json(e.body())).into_response()
}

/// The HTTP status of each refusal: always 4xx.
pub fn status(e: &LookupError) -> StatusCode {
    match e {
        LookupError::Malformed(_)
        | LookupError::TooManyPubkeys(_)
        | LookupError::BadCursor(_)
        | LookupError::StaleTimestamp { .. } => StatusCode::BAD_REQUEST,
        LookupError::UnknownMethod(_) => StatusCode::NOT_FOUND,
        LookupError::InvalidSignature { .. } => StatusCode::FORBIDDEN,
        LookupError::Replayed => StatusCode::CONFLICT,
        LookupError::Busy => StatusCode::TOO_MANY_REQUESTS,
    }
}

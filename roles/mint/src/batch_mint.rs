//! The ehash batch mint over HTTP: `POST /v1/mint/ehash/batch` (NUT-29),
//! served here in place of cdk-axum's handler for the same path.
//!
//! cdk-axum's handler reads every quote of a batch from the database to
//! check that its payment method is the route's, and cdk's
//! `process_mint_request` then reads each quote again to mint it. The first
//! read only repeats a check the second makes: `process_mint_request`
//! refuses a batch whose quotes do not all share one method, and a method
//! that is not one of NUT-29's configured methods, which here are ehash
//! alone (`lib.rs` configures them; [`router`] checks it). With wallets
//! minting thousands of quotes a second that read was 8% of the mint's CPU.
//!
//! Everything else is as cdk-axum does it: a batch's bounds (no quote, too
//! many, one twice) refused before any work, the same NUT-19 cache of
//! responses (a wallet that lost an answer gets the same signatures when
//! it asks again), the same errors (400 with a Cashu error body).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cdk::error::ErrorResponse;
use cdk::mint::{Mint, MintInput};
use cdk::nuts::nut29::BatchMintRequest;
use cdk::nuts::MintResponse;
use cdk_axum::cache::HttpCache;
use cdk_common::QuoteId;
use ehash::constants::PAYMENT_METHOD;

/// The one batch-mint path this mint serves (`/v1/mint/{method}/batch`).
const PATH: &str = "/v1/mint/ehash/batch";

struct BatchMint {
    mint: Arc<Mint>,
    cache: Arc<HttpCache>,
    /// NUT-29 `max_batch_size`, fixed at start.
    max_batch_size: Option<usize>,
}

impl BatchMint {
    /// A batch's bounds, checked before its cache key is computed (a
    /// hash of the whole request) and before any quote is read.
    fn check_bounds(&self, quotes: &[QuoteId]) -> Result<(), cdk::Error> {
        if quotes.is_empty() {
            return Err(cdk::Error::UnknownQuote);
        }
        if let Some(max) = self.max_batch_size.filter(|max| quotes.len() > *max) {
            return Err(cdk::Error::BatchSizeExceeded {
                actual: quotes.len(),
                max,
            });
        }
        if quotes.iter().collect::<HashSet<_>>().len() != quotes.len() {
            return Err(cdk::Error::DuplicateQuoteIds);
        }
        Ok(())
    }
}

/// The route, to merge next to cdk-axum's (a path without parameters wins
/// over cdk's `/v1/mint/{method}/batch`). Refused unless the mint batches
/// ehash quotes alone, which this route relies on.
pub async fn router(mint: Arc<Mint>) -> Result<Router, String> {
    let nut29 = mint
        .mint_info()
        .await
        .map_err(|e| format!("mint info: {e}"))?
        .nuts
        .nut29;
    if nut29.methods != Some(vec![PAYMENT_METHOD.to_string()]) {
        return Err(format!(
            "NUT-29 batch methods are {:?}, the ehash batch route needs [\"{PAYMENT_METHOD}\"] alone",
            nut29.methods
        ));
    }
    let state = Arc::new(BatchMint {
        mint,
        cache: Arc::new(HttpCache::default()),
        max_batch_size: nut29
            .max_batch_size
            .map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
    });
    Ok(Router::new()
        .route(PATH, post(batch_mint))
        .with_state(state))
}

async fn batch_mint(
    State(state): State<Arc<BatchMint>>,
    Json(request): Json<BatchMintRequest<QuoteId>>,
) -> Response {
    if let Err(e) = state.check_bounds(&request.quotes) {
        return refused(e);
    }
    let key = state
        .cache
        .calculate_key(&("mint_batch", PAYMENT_METHOD, &request));
    if let Some(key) = &key {
        if let Some(cached) = state.cache.get::<MintResponse>(key).await {
            return Json(cached).into_response();
        }
    }
    match state
        .mint
        .process_mint_request(MintInput::Batch(request))
        .await
    {
        Ok(response) => {
            if let Some(key) = key {
                state.cache.set(key, &response).await;
            }
            Json(response).into_response()
        }
        Err(e) => refused(e),
    }
}

/// NUT-00: a refused request is answered 400 with a Cashu error body.
fn refused(error: cdk::Error) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorResponse::from(error))).into_response()
}

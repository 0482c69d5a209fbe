//! The HTTP side of a stats service: the routes both services serve, route
//! builders for each service's own, query parameters and error answers.
//!
//! Charts and records are read on a connection of the request's own (see
//! [`crate::Store::reader`]), with the ingest lock held only to open it: a year
//! of history takes its time without stalling ingest. `/api/stats` reads
//! the live state under the lock, with queries of a few rows each.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::core::ServiceState;
use crate::service::{lock, off_runtime, run_blocking, Service, Shared};
use crate::store::{History, StoreError};
use crate::{api, html, now_ms};

/// The dashboard, `/api/stats`, `/api/hashrate`, `/metrics` and the
/// service's own routes.
pub(crate) fn router<S: Service>(shared: Shared<S::State>) -> Router {
    Router::new()
        .route("/", get(dashboard::<S>))
        .route("/api/stats", get(stats::<S>))
        .route("/api/hashrate", by_hours(api::hashrate))
        .route("/metrics", get(metrics::<S>))
        .merge(S::routes())
        .with_state(shared)
}

#[derive(Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn dashboard<S: Service>(
    State(shared): State<Shared<S::State>>,
    Query(q): Query<RangeQuery>,
) -> Result<Html<String>, ApiError> {
    let (range, hours) = html::range_hours(q.range.as_deref());
    let now = now_ms();
    let (stats, history) = run_blocking(&shared, move |core| -> Result<_, ApiError> {
        Ok((S::stats(core, now)?, core.store.reader()?))
    })
    .await?;
    off_runtime(move || Ok(Html(S::dashboard(&history, &stats, range, hours, now)?))).await
}

async fn stats<S: Service>(
    State(shared): State<Shared<S::State>>,
) -> Result<Json<S::Stats>, ApiError> {
    run_blocking(&shared, |core| Ok(Json(S::stats(core, now_ms())?))).await
}

async fn metrics<S: Service>(State(shared): State<Shared<S::State>>) -> Result<Response, ApiError> {
    run_blocking(&shared, |core| {
        let body = S::metrics(&S::stats(core, now_ms())?);
        Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response())
    })
    .await
}

/// A GET route taking `?hours=` (see [`HoursQuery`]) that answers
/// `f(history, hours, now)` as JSON.
pub fn by_hours<A: ServiceState, T: Serialize + Send + 'static>(
    f: fn(&History, u32, i64) -> Result<T, StoreError>,
) -> MethodRouter<Shared<A>> {
    get(
        move |State(shared): State<Shared<A>>, Query(q): Query<HoursQuery>| async move {
            let hours = q.hours()?;
            read_history(&shared, move |history| {
                Ok(Json(f(history, hours, now_ms())?))
            })
            .await
        },
    )
}

/// A GET route taking `?limit=` (100 if absent, 1 to 1000) that answers
/// `f(history, limit)` as JSON.
pub fn by_limit<A: ServiceState, T: Serialize + Send + 'static>(
    f: fn(&History, usize) -> Result<T, StoreError>,
) -> MethodRouter<Shared<A>> {
    get(
        move |State(shared): State<Shared<A>>, Query(q): Query<LimitQuery>| async move {
            let limit = q.limit.unwrap_or(100).clamp(1, 1000);
            read_history(&shared, move |history| Ok(Json(f(history, limit)?))).await
        },
    )
}

/// Runs `f` on a blocking thread over a reader of the store, the ingest
/// lock held only while the reader opens.
async fn read_history<A: ServiceState, T: Send + 'static>(
    shared: &Shared<A>,
    f: impl FnOnce(&History) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = shared.clone();
    off_runtime(move || {
        let history = lock(&shared).store.reader()?;
        f(&history)
    })
    .await
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

/// The `hours` query parameter of the chart endpoints.
#[derive(Debug, Deserialize)]
pub struct HoursQuery {
    pub hours: Option<u32>,
}

impl HoursQuery {
    /// The asked number of hours (24 if absent), checked.
    pub fn hours(&self) -> Result<u32, ApiError> {
        match self.hours {
            None => Ok(24),
            Some(h @ 1..=crate::series::MAX_HOURS) => Ok(h),
            Some(h) => Err(ApiError::bad_request(format!(
                "hours={h}: must be 1 to {}",
                crate::series::MAX_HOURS
            ))),
        }
    }
}

/// An API error: a status and a one-line reason, as JSON.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
}

impl ApiError {
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!("stats query failed: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "stats store unavailable".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::core::Core;
    use crate::store::Store;

    #[derive(Default, Clone, Serialize, Deserialize)]
    struct Nothing;

    impl ServiceState for Nothing {
        const ROLE: u8 = stats_sv2::role::POOL;
        fn publisher_restarted(&mut self) {}
        fn apply(
            &mut self,
            _: &stats_sv2::StatsMessage,
            _: crate::Sender,
            _: &mut Vec<crate::Write>,
        ) {
        }
    }

    #[tokio::test]
    async fn history_is_read_with_the_ingest_lock_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s.sqlite", 0).unwrap();
        let shared: Shared<Nothing> = Arc::new(Mutex::new(Core::new(store).unwrap()));
        let ingest = shared.clone();
        let free = read_history(&shared, move |history| {
            history.gaps(0, 1)?;
            Ok(ingest.try_lock().is_ok())
        })
        .await
        .unwrap();
        assert!(free, "the query held the lock ingest needs");
    }
}

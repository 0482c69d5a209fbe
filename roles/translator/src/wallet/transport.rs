//! The wallet's HTTP transport to its mint: cdk's own, each request bounded
//! in time. cdk sets no timeout, and a mint (or a proxy before it) that
//! takes a request and never answers would hold the minting task forever.
//!
//! A request that timed out may still be acted on by the mint: the wallet
//! treats it as unanswered, never as refused (see `settle`).

use std::future::Future;
use std::time::Duration;

use cdk::nuts::nut22::AuthToken;
use cdk_http_client::{Async, HttpError, RawResponse, Transport};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

/// How long a request to the mint may take unless configured otherwise.
pub const DEFAULT_MINT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct TimedTransport {
    inner: Async,
    timeout: Duration,
}

impl TimedTransport {
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Async::default(),
            timeout,
        }
    }

    async fn timed<T>(
        &self,
        request: impl Future<Output = Result<T, HttpError>>,
    ) -> Result<T, HttpError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }
}

#[async_trait::async_trait]
impl Transport for TimedTransport {
    fn with_proxy(
        &mut self,
        proxy: Url,
        host_matcher: Option<&str>,
        accept_invalid_certs: bool,
    ) -> Result<(), HttpError> {
        self.inner
            .with_proxy(proxy, host_matcher, accept_invalid_certs)
    }

    async fn http_get<R>(&self, url: Url, auth: Option<AuthToken>) -> Result<R, HttpError>
    where
        R: DeserializeOwned,
    {
        self.timed(self.inner.http_get(url, auth)).await
    }

    async fn http_get_raw(
        &self,
        url: Url,
        auth: Option<AuthToken>,
    ) -> Result<RawResponse, HttpError> {
        self.timed(self.inner.http_get_raw(url, auth)).await
    }

    async fn http_post<P, R>(
        &self,
        url: Url,
        auth_token: Option<AuthToken>,
        payload: &P,
    ) -> Result<R, HttpError>
    where
        P: Serialize + Send + Sync,
        R: DeserializeOwned,
    {
        self.timed(self.inner.http_post(url, auth_token, payload))
            .await
    }

    async fn http_post_form_raw<P>(
        &self,
        url: Url,
        auth_token: Option<AuthToken>,
        payload: &P,
    ) -> Result<RawResponse, HttpError>
    where
        P: Serialize + Send + Sync,
    {
        self.timed(self.inner.http_post_form_raw(url, auth_token, payload))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that takes connections and never answers.
    async fn silent_server() -> (tokio::net::TcpListener, Url) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/info", listener.local_addr().unwrap());
        (listener, url.parse().unwrap())
    }

    #[tokio::test]
    async fn a_request_the_server_never_answers_times_out() {
        let (_listener, url) = silent_server().await;
        let transport = TimedTransport::new(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let answer = transport.http_get::<serde_json::Value>(url, None).await;
        assert!(matches!(answer, Err(HttpError::Timeout)), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

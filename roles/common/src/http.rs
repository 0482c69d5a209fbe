//! An axum router served over HTTP/1 with bounds, so that slow or idle
//! clients cannot hold the server: connections per IP and in total, a
//! deadline for each request's headers (which also ends a kept-alive
//! connection that stays silent), and a longest life per connection (which
//! ends a body sent byte by byte).

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::limits::ConnectionLimits;
use crate::CancellationToken;

/// How an HTTP server bounds its clients.
#[derive(Clone)]
pub struct HttpLimits {
    pub connections: ConnectionLimits,
    /// A request's headers, or the next request on a kept-alive connection,
    /// must arrive within this.
    pub header_read_timeout: Duration,
    /// No connection lives longer.
    pub max_connection_time: Duration,
}

impl HttpLimits {
    /// `max_total` connections, `max_per_ip` from one address, headers
    /// within 10 s, connections of 2 minutes at most.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            connections: ConnectionLimits::new(max_total, max_per_ip),
            header_read_timeout: Duration::from_secs(10),
            max_connection_time: Duration::from_secs(120),
        }
    }
}

/// After shutdown, a connection gets this long to finish its request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let connections = shutdown.clone();
    let admit = limits.connections.clone();
    crate::accept_loop(what, listener, admit, shutdown, move |_, stream, peer| {
        // An answer is not held for the client's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (limits, shutdown) = (limits.clone(), connections.clone());
        async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                        Ok(result) => result,
                        Err(_) => return,
                    }
                }
                _ = tokio::time::sleep(limits.max_connection_time) => {
                    tracing::debug!(%peer, "{what}: closing a connection open for {:?}", limits.max_connection_time);
                    return;
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "{what}: connection ended: {e}");
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server(limits: HttpLimits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { "hello" }).post(|body: String| async move { body }),
        );
        let stop = CancellationToken::new();
        tokio::spawn(serve("test http", listener, router, limits, stop.clone()));
        (addr, stop)
    }

    fn short(max_total: usize, max_per_ip: usize) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connection_time: Duration::from_secs(2),
            ..HttpLimits::new(max_total, max_per_ip)
        }
    }

    /// Reads until the peer closes; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut out = vec![];
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .expect("closed by the server")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_closed() {
        let (addr, stop) = server(short(8, 8)).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        read_to_close(&mut slow).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        // An honest request is answered.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(read_to_close(&mut ok).await.ends_with("hello"));
        stop.cancel();
    }

    #[tokio::test]
    async fn a_silent_kept_alive_connection_and_a_slow_body_are_closed() {
        let (addr, stop) = server(short(8, 8)).await;
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_to_close(&mut kept).await.ends_with("hello"));
        // A body trickled in byte by byte: cut off by the connection's life.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        trickle
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let closed = async {
            let mut byte = [0u8; 1];
            loop {
                if trickle.write_all(b"x").await.is_err() {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut byte))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the trickling client is closed");
        assert!(started.elapsed() >= Duration::from_secs(1));
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_bound_are_closed_at_once() {
        let (addr, stop) = server(short(8, 1)).await;
        let _held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        over.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok();
        assert_eq!(read_to_close(&mut over).await, "");
        stop.cancel();
    }
}

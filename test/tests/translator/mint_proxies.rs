//! Proxies between the wallet and its mint that lose or delay what a real
//! network (or a proxy that gives up) does.

use std::sync::atomic::AtomicUsize;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// A proxy to `target` that lets through the first request whose bytes
/// contain each of `paths` and drops its answer: the connection closes
/// instead. The paths whose answer it has dropped.
pub(crate) async fn answer_dropping_proxy(
    target: SocketAddr,
    paths: &[&'static str],
) -> (SocketAddr, Arc<Mutex<Vec<&'static str>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(Mutex::new(paths.to_vec()));
    let dropped = Arc::new(Mutex::new(vec![]));
    let dropped_by_proxy = dropped.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_target, mut to_target) = upstream.into_split();
            let (armed, dropped) = (armed.clone(), dropped_by_proxy.clone());
            let dropping = Arc::new(AtomicBool::new(false));
            let dropping_up = dropping.clone();
            tokio::spawn(async move {
                let up = async {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        let request = &buf[..n];
                        let hit = {
                            let mut armed = armed.lock().unwrap();
                            let at = armed
                                .iter()
                                .position(|p| request.windows(p.len()).any(|w| w == p.as_bytes()));
                            at.map(|i| armed.remove(i))
                        };
                        if let Some(path) = hit {
                            dropped.lock().unwrap().push(path);
                            dropping_up.store(true, Ordering::SeqCst);
                        }
                        if to_target.write_all(request).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0; 1 << 16];
                    while let Ok(n @ 1..) = from_target.read(&mut buf).await {
                        if dropping.load(Ordering::SeqCst) {
                            break;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    (addr, dropped)
}

/// Where the held request of a [`LateDelivery`] proxy is.
enum Held {
    Armed,
    Receiving,
    Holding(Vec<u8>),
    Delivered,
}

/// What a [`LateDelivery`] proxy does with the next request of its path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextRequest {
    /// Delivers the held request, then this one.
    Forward,
    /// Answers this one with the refusal of a mint whose database is busy
    /// (as cdk answers its internal errors); the held one waits for
    /// [`LateDelivery::deliver_held`].
    RefuseAsBusy,
    /// Never answers it either, nor delivers it.
    Swallow,
}

/// A proxy to a mint that holds the first request whose bytes contain its
/// path: the client gets no answer and the mint does not see it until it
/// is delivered, as a request that was on its way all along (behind a
/// proxy that gave up on it, say).
pub(crate) struct LateDelivery {
    pub addr: SocketAddr,
    target: SocketAddr,
    held: Arc<Mutex<Held>>,
    /// The status lines the mint answered the held request with.
    answered: Arc<Mutex<Vec<String>>>,
    /// Requests of the path seen.
    seen: Arc<AtomicUsize>,
}

/// The answer of a mint whose database failed a request: HTTP 400 with
/// cashu's error body, code 50000.
fn busy() -> String {
    let body = r#"{"code":50000,"detail":"database busy"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl LateDelivery {
    /// Relays to `target`, holding the first request of `path`; the next
    /// request of `path` is handled as `next` says.
    pub(crate) async fn start(target: SocketAddr, path: &'static str, next: NextRequest) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            target,
            held: Arc::new(Mutex::new(Held::Armed)),
            answered: Arc::new(Mutex::new(vec![])),
            seen: Arc::new(AtomicUsize::new(0)),
        };
        let relay = proxy.clone_handle();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let relay = relay.clone_handle();
                tokio::spawn(async move { relay.relay(client, path, next).await });
            }
        });
        proxy
    }

    fn clone_handle(&self) -> Self {
        Self {
            addr: self.addr,
            target: self.target,
            held: self.held.clone(),
            answered: self.answered.clone(),
            seen: self.seen.clone(),
        }
    }

    /// How many requests of its path it saw.
    pub(crate) fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Delivers the held request to the mint, if one is held; its answer's
    /// status line is kept in `answered`.
    pub(crate) async fn deliver_held(&self) {
        let late = {
            let mut held = self.held.lock().unwrap();
            match std::mem::replace(&mut *held, Held::Delivered) {
                Held::Holding(request) => Some(request),
                other => {
                    *held = other;
                    None
                }
            }
        };
        if let Some(late) = late {
            let status = deliver(self.target, &late).await;
            self.answered.lock().unwrap().push(status);
        }
    }

    /// The status lines the mint answered the held request with.
    pub(crate) fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }

    async fn relay(&self, client: TcpStream, path: &str, next: NextRequest) {
        let upstream = TcpStream::connect(self.target).await.unwrap();
        let (mut from_client, to_client) = client.into_split();
        let to_client = tokio::sync::Mutex::new(to_client);
        let (mut from_target, mut to_target) = upstream.into_split();
        let up = async {
            let mut buf = vec![0; 1 << 16];
            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                let request = &buf[..n];
                if request.windows(path.len()).any(|w| w == path.as_bytes()) {
                    self.seen.fetch_add(1, Ordering::SeqCst);
                    let first = {
                        let mut held = self.held.lock().unwrap();
                        let first = matches!(*held, Held::Armed);
                        if first {
                            *held = Held::Receiving;
                        }
                        first
                    };
                    if first || next == NextRequest::Swallow {
                        let whole = whole_request(request.to_vec(), &mut from_client).await;
                        if first {
                            *self.held.lock().unwrap() = Held::Holding(whole);
                        }
                        // Silent until the client gives up.
                        while let Ok(1..) = from_client.read(&mut buf).await {}
                        return;
                    }
                    let holding = matches!(*self.held.lock().unwrap(), Held::Holding(_));
                    if holding && next == NextRequest::RefuseAsBusy {
                        // Read whole, answered, never delivered.
                        whole_request(request.to_vec(), &mut from_client).await;
                        let mut to_client = to_client.lock().await;
                        if to_client.write_all(busy().as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    self.deliver_held().await;
                }
                if to_target.write_all(request).await.is_err() {
                    return;
                }
            }
        };
        let down = async {
            let mut buf = vec![0; 1 << 16];
            while let Ok(n @ 1..) = from_target.read(&mut buf).await {
                if to_client.lock().await.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! { _ = up => {}, _ = down => {} }
    }
}

/// `start` and the rest of its HTTP request (its headers and
/// Content-Length bytes of body).
async fn whole_request(mut request: Vec<u8>, from: &mut OwnedReadHalf) -> Vec<u8> {
    let complete = |request: &[u8]| {
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        request.len() >= end + 4 + length
    };
    let mut buf = vec![0; 1 << 16];
    while !complete(&request) {
        match from.read(&mut buf).await {
            Ok(n @ 1..) => request.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    request
}

/// Sends `request` to `target` on a connection of its own; the status line
/// of the answer.
async fn deliver(target: SocketAddr, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(request).await.unwrap();
    let (mut answer, mut buf) = (vec![], [0u8; 4096]);
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match conn.read(&mut buf).await {
            Ok(n @ 1..) => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

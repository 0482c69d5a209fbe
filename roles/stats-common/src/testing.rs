//! Helpers for the services' tests: a service on ephemeral ports, a
//! publisher, a minimal HTTP client, a WebDriver client that opens a
//! dashboard in headless Chromium, and the test suite both services run.
//! Not part of the services' API.

pub mod suite;

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roles_common::stats_publisher::PublisherSecret;
use roles_common::CancellationToken;
use serde_json::{json, Value};
use stats_sv2::{MessageSet, PublisherHello, StatsMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Running, Service, ServiceConfig, ServiceState};

/// How long [`eventually`] polls before failing the test.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing the test after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A live snapshot entry of `kind` for `id` since `since`, dated
/// `timestamp`, with no channel, flags or name.
pub fn live_entry(kind: u8, id: u32, since: u64, timestamp: u64) -> stats_sv2::LiveEntryOwned {
    stats_sv2::LiveEntryOwned {
        kind,
        id,
        channel_id: 0,
        flags: 0,
        name: String::new().try_into().expect("an empty name fits"),
        since,
        timestamp,
    }
}

/// A live snapshot of `entries` (begin, the entries, end), dated `t`.
pub fn live_snapshot(entries: Vec<stats_sv2::LiveEntryOwned>, t: u64) -> Vec<StatsMessage> {
    let end = stats_sv2::LiveEnd {
        entries: entries.len() as u32,
        timestamp: t,
    };
    std::iter::once(stats_sv2::LiveBegin { timestamp: t }.into())
        .chain(entries.into_iter().map(StatsMessage::from))
        .chain(std::iter::once(end.into()))
        .collect()
}

/// Now as Unix milliseconds, as publishers stamp their messages.
pub fn now() -> u64 {
    crate::now_ms() as u64
}

/// The start of the minute `n` whole minutes before the current one.
pub fn minute_ago(n: u64) -> u64 {
    const MINUTE: u64 = 60_000;
    (now() / MINUTE - n) * MINUTE
}

/// A stats service on 127.0.0.1 ephemeral ports, over a data dir that
/// outlives it.
pub struct TestService<S> {
    pub running: Running,
    /// The publisher secret the service asks for, if any.
    pub secret: Option<PublisherSecret>,
    shutdown: CancellationToken,
    service: PhantomData<S>,
}

impl<S: Service> TestService<S> {
    pub async fn start(data_dir: &Path) -> TestService<S> {
        Self::start_with(data_dir, |_| {}).await
    }

    /// Starts the service with its config changed by `adjust` first.
    pub async fn start_with(
        data_dir: &Path,
        adjust: impl FnOnce(&mut ServiceConfig<S>),
    ) -> TestService<S> {
        let mut config = ServiceConfig::<S>::with_data_dir(data_dir);
        config.ingest_listen = "127.0.0.1:0".parse().unwrap();
        config.http_listen = "127.0.0.1:0".parse().unwrap();
        adjust(&mut config);
        let secret = config.publisher_secret.clone();
        let shutdown = CancellationToken::new();
        let running = crate::start(config, shutdown.clone()).await.unwrap();
        TestService {
            running,
            secret,
            shutdown,
            service: PhantomData,
        }
    }

    pub fn http(&self) -> SocketAddr {
        self.running.http_addr
    }

    /// A publisher of the service's role, connected and greeted (with the
    /// service's secret).
    pub async fn publisher(&self, started_at: u64) -> Publisher {
        let secret = self.secret.as_ref().map_or(&[][..], |s| s.as_bytes());
        Publisher::connect_with(self.running.ingest_addr, S::State::ROLE, started_at, secret).await
    }

    /// `/api/stats` once `pred` holds for it.
    pub async fn stats_when(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let addr = self.http();
        eventually(what, || async {
            let s = get_json(addr, "/api/stats").await;
            pred(&s).then_some(s)
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

/// A publisher connection, as the pool or translator makes one.
pub struct Publisher {
    stream: TcpStream,
}

impl Publisher {
    /// Connects and sends `PublisherHello` without a secret.
    pub async fn connect(addr: SocketAddr, role: u8, started_at: u64) -> Publisher {
        Self::connect_with(addr, role, started_at, b"").await
    }

    /// Connects and sends `PublisherHello` with `secret`.
    pub async fn connect_with(
        addr: SocketAddr,
        role: u8,
        started_at: u64,
        secret: &[u8],
    ) -> Publisher {
        let mut publisher = Self::connect_silently(addr).await;
        let hello = PublisherHello::new(role, started_at, 0, secret, started_at).expect("a hello");
        publisher.send(hello).await;
        publisher
    }

    /// Connects and sends nothing.
    pub async fn connect_silently(addr: SocketAddr) -> Publisher {
        let stream = TcpStream::connect(addr).await.expect("connect to ingest");
        Publisher { stream }
    }

    pub async fn send(&mut self, msg: impl Into<StatsMessage>) {
        let bytes = msg.into().to_frame_bytes().expect("frame");
        self.send_raw(&bytes).await;
    }

    pub async fn send_all(&mut self, msgs: Vec<StatsMessage>) {
        for msg in msgs {
            self.send(msg).await;
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send to ingest");
    }

    /// Like [`Publisher::send`], for a connection the service may have
    /// closed already: whether the bytes were written.
    pub async fn try_send(&mut self, msg: impl Into<StatsMessage>) -> bool {
        let bytes = msg.into().to_frame_bytes().expect("frame");
        self.stream.write_all(&bytes).await.is_ok()
    }

    /// Waits until the service closes the connection.
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
            .await
            .expect("the service did not close the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "unexpected data: {read:?}");
    }
}

/// One HTTP/1.1 request; returns the status and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to HTTP");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    // Read by Content-Length: chromedriver answers "Connection: close" but
    // keeps the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, body_start) = loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&raw[..split]).to_string(),
                split + 4,
            );
        }
        let n = stream.read(&mut buf).await.expect("read response");
        assert!(n > 0, "connection closed before the response header");
        raw.extend_from_slice(&buf[..n]);
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    let mut body = raw.split_off(body_start);
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = stream.read(&mut buf).await.expect("read body");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else {
        stream.read_to_end(&mut body).await.expect("read body");
        if header("transfer-encoding").as_deref() == Some("chunked") {
            body = dechunk(&body);
        }
    }
    (status, String::from_utf8(body).expect("UTF-8 body"))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// GET `path` and parse the JSON body; panics unless the status is 200.
pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Where screenshots go: `<target dir>/screenshots/`, next to the test
/// binary's `debug/` directory.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    target.join("screenshots")
}

/// A chromedriver process and one headless Chromium session in it.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

const ELEMENTS_SCRIPT: &str = "return Array.from(document.querySelectorAll('[data-stat]'))\
    .map(e => [e.getAttribute('data-stat'), e.getAttribute('data-format'), e.textContent.trim()]);";

impl Browser {
    /// Starts chromedriver (from `$CHROMEDRIVER` or `PATH`) and a headless
    /// Chromium session; fails the test with what to install when missing.
    pub async fn start() -> Browser {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = roles_common::free_port::free_port().expect("a free port");
        let driver = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}): the dashboard tests need Debian's chromium and \
                     chromium-driver; run scripts/setup.sh to install them"
                )
            });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        eventually("chromedriver to listen", || async {
            TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1360,2000",
                     "--hide-scrollbars"]
        });
        if let Ok(binary) = std::env::var("CHROMIUM") {
            options["binary"] = json!(binary);
        } else if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let created = browser
            .command(
                "POST",
                "/session",
                json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then(|| body.to_string());
        let (status, text) = http(self.addr, method, path, body.as_deref()).await;
        let reply: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("webdriver {path}: {e}: {text}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {reply}");
        reply["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn open(&self, url: &str) {
        self.command("POST", &self.session_path("/url"), json!({ "url": url }))
            .await;
    }

    /// Every `[data-stat]` element of the page: (pointer, format, text).
    pub async fn stats(&self) -> Vec<(String, String, String)> {
        let value = self
            .command(
                "POST",
                &self.session_path("/execute/sync"),
                json!({"script": ELEMENTS_SCRIPT, "args": []}),
            )
            .await;
        serde_json::from_value(value).expect("[pointer, format, text] triples")
    }

    /// Saves a PNG of the window to `<target>/screenshots/<name>.png` and
    /// returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let value = self
            .command("GET", &self.session_path("/screenshot"), Value::Null)
            .await;
        let png = base64_decode(value.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn quit(mut self) {
        let path = self.session_path("");
        let _ = http(self.addr, "DELETE", &path, None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Checks every figure of a dashboard against the API: each `data-stat`
/// pointer must exist in `api` and its text must be the API value written
/// as the page writes it. Returns how many figures were checked.
pub fn assert_figures_match(page: &[(String, String, String)], api: &Value) -> usize {
    for (pointer, kind, text) in page {
        let value = api
            .pointer(pointer)
            .unwrap_or_else(|| panic!("the page shows {pointer}, which the API lacks: {api}"));
        assert_eq!(
            text,
            &crate::html::format_value(kind, value),
            "figure {pointer} on the page differs from the API value {value}"
        );
        assert!(!text.contains('?'), "{pointer} shows a question mark");
    }
    page.len()
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("base64 character") as u32;
        acc = ((acc << 6) | v) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_chunked_bodies_decode() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(base64_decode("iVBORw=="), b"\x89PNG");
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
    }
}

//! A Stratum V1 test miner over TCP: speaks SV1 as firmware does and builds
//! its headers with `sv1::client` (the miner's code, independent of the
//! translator's `sv1::server`), so a translation mistake shows up as a share
//! the pool refuses. Requests and answers stay raw JSON so a test can send
//! anything and check error codes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use sv1::client::{self, Event, Job};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long `recv` waits for the next line.
const RECV_WAIT: Duration = Duration::from_secs(20);

/// A share the test miner found: what it submits, plus the header and hash
/// the pool should report back.
pub type Sv1Share = client::Found;

/// Numbers share searches across all test miners, so none finds a share twice.
static SEARCH: AtomicU64 = AtomicU64::new(1);

pub struct Sv1Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub difficulty: f64,
    pub job: Option<Job>,
    pub version_mask: Option<u32>,
    /// Notifications and unmatched messages, oldest first.
    pub seen: VecDeque<Value>,
}

impl Sv1Client {
    pub async fn connect(addr: SocketAddr) -> Sv1Client {
        Sv1Client::over(TcpStream::connect(addr).await.expect("connects"))
    }

    /// A miner on a connection the test made.
    pub fn over(stream: TcpStream) -> Sv1Client {
        let (r, w) = stream.into_split();
        Sv1Client {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
            extranonce1: vec![],
            extranonce2_size: 0,
            difficulty: 1.0,
            job: None,
            version_mask: None,
            seen: VecDeque::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub async fn send(&mut self, method: &str, params: Value) -> u64 {
        self.try_send(method, params).await.expect("write")
    }

    async fn try_send(&mut self, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line = sv1::jsonrpc::request(json!(id), method, params);
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The next message; Err when the connection closed.
    pub async fn recv(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = tokio::time::timeout(RECV_WAIT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| "no message in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        let v: Value = serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?;
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            let params = v.get("params").unwrap_or(&Value::Null);
            match client::notification(method, params).map_err(|e| format!("{e}: {line}"))? {
                Event::NewJob(job) => self.job = Some(job),
                Event::Difficulty(d) => self.difficulty = d,
                Event::VersionMask(mask) => self.version_mask = mask,
                Event::Extranonce {
                    extranonce1,
                    extranonce2_size,
                } => {
                    self.extranonce1 = extranonce1;
                    self.extranonce2_size = extranonce2_size;
                }
                _ => {}
            }
        }
        Ok(v)
    }

    /// Sends a request and waits for its response (notifications are kept in `seen`).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.try_request(method, params)
            .await
            .expect("connection open")
    }

    async fn try_request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.try_send(method, params).await?;
        self.try_response(id).await
    }

    pub async fn response(&mut self, id: u64) -> Value {
        self.try_response(id).await.expect("connection open")
    }

    async fn try_response(&mut self, id: u64) -> Result<Value, String> {
        loop {
            let v = self.recv().await?;
            if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                return Ok(v);
            }
            self.seen.push_back(v);
        }
    }

    pub async fn subscribe(&mut self) {
        self.try_subscribe().await.expect("subscribed");
    }

    async fn try_subscribe(&mut self) -> Result<(), String> {
        let r = self
            .try_request("mining.subscribe", json!(["hashpool-test/1.0"]))
            .await?;
        (self.extranonce1, self.extranonce2_size) = client::subscribed(&r["result"])
            .map_err(|e| format!("a subscribe result: {e}: {r}"))?;
        Ok(())
    }

    /// Asks for every bit; returns the mask granted.
    pub async fn configure_version_rolling(&mut self) -> Option<u32> {
        let r = self
            .request("mining.configure", client::version_rolling_params(u32::MAX))
            .await;
        let mask = client::granted_version_mask(&r["result"]);
        self.version_mask = mask;
        mask
    }

    /// `mining.authorize`; Ok(true) when authorized.
    pub async fn authorize(&mut self, user: &str) -> Result<bool, Value> {
        let r = self.request("mining.authorize", json!([user, "x"])).await;
        if r["error"].is_null() {
            Ok(r["result"].as_bool().unwrap_or(false))
        } else {
            Err(r["error"].clone())
        }
    }

    /// subscribe + authorize + first job.
    pub async fn start(addr: SocketAddr, user: &str) -> Sv1Client {
        Sv1Client::try_start(addr, user)
            .await
            .expect("a miner starts")
    }

    /// subscribe + authorize + first job; why not, if the connection
    /// closed (a translator with no room for the miner) or the miner was
    /// not authorized.
    pub async fn try_start(addr: SocketAddr, user: &str) -> Result<Sv1Client, String> {
        let mut c = Sv1Client::connect(addr).await;
        c.try_subscribe().await?;
        let r = c
            .try_request("mining.authorize", json!([user, "x"]))
            .await?;
        if r["result"] != json!(true) {
            return Err(format!("not authorized: {r}"));
        }
        c.try_wait_job().await?;
        Ok(c)
    }

    pub async fn wait_job(&mut self) {
        self.try_wait_job().await.expect("connection open");
    }

    async fn try_wait_job(&mut self) -> Result<(), String> {
        while self.job.is_none() {
            let v = self.recv().await?;
            self.seen.push_back(v);
        }
        Ok(())
    }

    /// Searches a share meeting the current difficulty on the current job.
    pub fn find_share(&self) -> Sv1Share {
        self.find_share_with(|hash_be, target_be| hash_be <= target_be)
    }

    /// Searches a header whose hash satisfies `accept(hash_be, target_be)`.
    pub fn find_share_with(&self, accept: impl Fn(&[u8; 32], &[u8; 32]) -> bool) -> Sv1Share {
        client::search(
            self.job.as_ref().expect("a job"),
            &self.extranonce1,
            self.extranonce2_size,
            self.difficulty,
            self.version_mask,
            SEARCH.fetch_add(1, Ordering::Relaxed),
            accept,
        )
    }

    pub async fn submit(&mut self, user: &str, share: &Sv1Share) -> Result<(), Value> {
        let params = client::submit_params(user, share);
        let r = self.request("mining.submit", params).await;
        if r["error"].is_null() && r["result"] == json!(true) {
            Ok(())
        } else {
            Err(r["error"].clone())
        }
    }

    /// Finds and submits a share meeting the difficulty; returns it if accepted.
    pub async fn mine_one(&mut self, user: &str) -> Result<Sv1Share, Value> {
        let share = self.find_share();
        self.submit(user, &share).await.map(|_| share)
    }

    /// Waits until the connection is closed by the other side.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv().await {
                Err(e) if e == "closed" || e.contains("reset") => return,
                Err(e) => panic!("expected the connection to close: {e}"),
                Ok(_) => {}
            }
        }
    }
}

//! A Stratum V1 test miner: speaks SV1 as firmware does and builds block
//! headers from `mining.notify` on its own (independent of the translator's
//! code), so a translation mistake shows up as a share the pool refuses.
//!
//! Shared by roles/translator/tests and test/tests/translator.rs; the crate
//! including it provides `crate::sv1_deps::{hex, serde_json}`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::sv1_deps::{hex, serde_json};
use serde_json::{json, Value};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn sha256d(data: &[u8]) -> [u8; 32] {
    sha256d::Hash::hash(data).to_byte_array()
}

/// A job as `mining.notify` describes it.
#[derive(Debug, Clone)]
pub struct Sv1Job {
    pub job_id: String,
    pub prevhash: String,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<Vec<u8>>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

fn hex_u32(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().expect("hex string"), 16).expect("hex u32")
}

impl Sv1Job {
    pub fn from_params(p: &Value) -> Self {
        Sv1Job {
            job_id: p[0].as_str().unwrap().to_string(),
            prevhash: p[1].as_str().unwrap().to_string(),
            coinb1: hex::decode(p[2].as_str().unwrap()).unwrap(),
            coinb2: hex::decode(p[3].as_str().unwrap()).unwrap(),
            branch: p[4]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
                .collect(),
            version: hex_u32(&p[5]),
            nbits: hex_u32(&p[6]),
            ntime: hex_u32(&p[7]),
            clean: p[8].as_bool().unwrap(),
        }
    }

    /// The 80-byte header, as cpuminer builds it.
    pub fn header(&self, en1: &[u8], en2: &[u8], ntime: u32, nonce: u32, version: u32) -> [u8; 80] {
        let mut coinbase = self.coinb1.clone();
        coinbase.extend_from_slice(en1);
        coinbase.extend_from_slice(en2);
        coinbase.extend_from_slice(&self.coinb2);
        let mut root = sha256d(&coinbase);
        for h in &self.branch {
            let mut cat = root.to_vec();
            cat.extend_from_slice(h);
            root = sha256d(&cat);
        }
        // prevhash: every 4-byte word of the SV1 string is byte-swapped
        let mut prev = hex::decode(&self.prevhash).unwrap();
        for w in prev.chunks_mut(4) {
            w.reverse();
        }
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&prev);
        h[36..68].copy_from_slice(&root);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }
}

/// The big-endian target of an SV1 difficulty (diff 1 = 0xffff * 2^208).
pub fn target_of_difficulty(diff: f64) -> [u8; 32] {
    let t = 65535.0 * 2f64.powi(208) / diff;
    if t >= 2f64.powi(256) {
        return [0xff; 32];
    }
    let e = t.log2().floor() as i32;
    let mut out = [0u8; 32];
    if e < 52 {
        out[24..].copy_from_slice(&(t as u64).to_be_bytes());
        return out;
    }
    // 53-bit mantissa shifted left by (e - 52)
    let m = (t / 2f64.powi(e - 52)) as u64;
    let shift = (e - 52) as usize;
    for bit in 0..64 {
        if m >> bit & 1 == 1 {
            let pos = bit + shift; // bit position from the least significant end
            if pos < 256 {
                out[31 - pos / 8] |= 1 << (pos % 8);
            }
        }
    }
    out
}

/// A share found on a job.
#[derive(Debug, Clone)]
pub struct Sv1Share {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub version_bits: Option<u32>,
    /// sha256d of the header, little-endian (SV2 order).
    pub hash: [u8; 32],
    pub header: [u8; 80],
}

static SEARCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub struct Sv1Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub difficulty: f64,
    pub job: Option<Sv1Job>,
    pub version_mask: Option<u32>,
    /// Notifications and unmatched messages, oldest first.
    pub seen: VecDeque<Value>,
}

impl Sv1Client {
    pub async fn connect(addr: SocketAddr) -> Sv1Client {
        let stream = TcpStream::connect(addr).await.expect("connects");
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
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        self.writer.write_all(line.as_bytes()).await.expect("write");
        id
    }

    /// The next message; Err when the connection closed.
    pub async fn recv(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| "no message in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        let v: Value = serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?;
        match v.get("method").and_then(Value::as_str) {
            Some("mining.set_difficulty") => {
                self.difficulty = v["params"][0].as_f64().expect("difficulty")
            }
            Some("mining.notify") => self.job = Some(Sv1Job::from_params(&v["params"])),
            Some("mining.set_version_mask") => self.version_mask = Some(hex_u32(&v["params"][0])),
            _ => {}
        }
        Ok(v)
    }

    /// Sends a request and waits for its response (notifications are kept in `seen`).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    pub async fn response(&mut self, id: u64) -> Value {
        loop {
            let v = self.recv().await.expect("connection open");
            if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                return v;
            }
            self.seen.push_back(v);
        }
    }

    pub async fn subscribe(&mut self) {
        let r = self
            .request("mining.subscribe", json!(["hashpool-test/1.0"]))
            .await;
        let result = &r["result"];
        self.extranonce1 = hex::decode(result[1].as_str().unwrap()).unwrap();
        self.extranonce2_size = result[2].as_u64().unwrap() as usize;
    }

    pub async fn configure_version_rolling(&mut self) -> Option<u32> {
        let r = self
            .request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]),
            )
            .await;
        let mask = r["result"]["version-rolling.mask"]
            .as_str()
            .map(|s| u32::from_str_radix(s, 16).unwrap());
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
        let mut c = Sv1Client::connect(addr).await;
        c.subscribe().await;
        assert_eq!(c.authorize(user).await, Ok(true), "authorized");
        c.wait_job().await;
        c
    }

    pub async fn wait_job(&mut self) {
        while self.job.is_none() {
            let v = self.recv().await.expect("connection open");
            self.seen.push_back(v);
        }
    }

    /// Searches a share meeting the current difficulty on the current job.
    pub fn find_share(&self) -> Sv1Share {
        self.find_share_with(|hash_be, target_be| hash_be <= target_be)
    }

    /// Searches a header whose hash satisfies `accept(hash_be, target_be)`.
    pub fn find_share_with(&self, accept: impl Fn(&[u8; 32], &[u8; 32]) -> bool) -> Sv1Share {
        search(
            self.job.as_ref().expect("a job"),
            &self.extranonce1,
            self.extranonce2_size,
            self.difficulty,
            self.version_mask,
            accept,
        )
    }

    pub async fn submit(&mut self, user: &str, share: &Sv1Share) -> Result<(), Value> {
        let mut params = vec![
            json!(user),
            json!(share.job_id),
            json!(hex::encode(&share.extranonce2)),
            json!(format!("{:08x}", share.ntime)),
            json!(format!("{:08x}", share.nonce)),
        ];
        if let Some(bits) = share.version_bits {
            params.push(json!(format!("{bits:08x}")));
        }
        let r = self.request("mining.submit", Value::Array(params)).await;
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

/// Searches nonces on `job` for a header whose hash satisfies
/// `accept(hash_be, target_be)`; every search starts somewhere new.
pub fn search(
    job: &Sv1Job,
    extranonce1: &[u8],
    extranonce2_size: usize,
    difficulty: f64,
    version_mask: Option<u32>,
    accept: impl Fn(&[u8; 32], &[u8; 32]) -> bool,
) -> Sv1Share {
    let target = target_of_difficulty(difficulty);
    let run = SEARCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut en2 = vec![0u8; extranonce2_size];
    for (i, b) in run.to_le_bytes().iter().enumerate().take(en2.len()) {
        en2[i] = *b;
    }
    let (version, version_bits) = match version_mask {
        Some(mask) if run & 1 == 0 => {
            let bits = (0x0000_2000u32 << (run % 8)) & mask;
            ((job.version & !mask) | bits, Some(bits))
        }
        _ => (job.version, None),
    };
    let mut header = job.header(extranonce1, &en2, job.ntime, 0, version);
    for nonce in 0u32.. {
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        let hash = sha256d(&header);
        let mut be = hash;
        be.reverse();
        if accept(&be, &target) {
            return Sv1Share {
                job_id: job.job_id.clone(),
                extranonce2: en2,
                ntime: job.ntime,
                nonce,
                version_bits,
                hash,
                header,
            };
        }
    }
    unreachable!()
}

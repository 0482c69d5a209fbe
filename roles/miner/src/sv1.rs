//! Stratum V1 client protocol, sans-IO: request lines out, parsed server
//! messages in, block headers from `mining.notify`, targets from difficulty.

use std::collections::HashMap;

use serde_json::{json, Value};
use stratum_core::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};

/// A malformed or unexpected server line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad SV1 message: {0}")]
pub struct ParseError(pub String);

fn bad(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
}

/// A job as `mining.notify` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    /// The previous block hash as SV1 sends it (every 4-byte word swapped).
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

fn str_param<'a>(p: &'a Value, i: usize, name: &str) -> Result<&'a str, ParseError> {
    p.get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{name} missing or not a string")))
}

fn hex_param(p: &Value, i: usize, name: &str) -> Result<Vec<u8>, ParseError> {
    hex::decode(str_param(p, i, name)?).map_err(|_| bad(format!("{name} is not hex")))
}

fn u32_param(p: &Value, i: usize, name: &str) -> Result<u32, ParseError> {
    u32::from_str_radix(str_param(p, i, name)?, 16)
        .map_err(|_| bad(format!("{name} is not a hex u32")))
}

fn hash32(bytes: Vec<u8>, name: &str) -> Result<[u8; 32], ParseError> {
    bytes
        .try_into()
        .map_err(|_| bad(format!("{name} is not 32 bytes")))
}

impl Job {
    /// Parses `mining.notify` params.
    pub fn from_params(p: &Value) -> Result<Job, ParseError> {
        let branch = p
            .get(4)
            .and_then(Value::as_array)
            .ok_or_else(|| bad("merkle branch missing"))?
            .iter()
            .map(|h| {
                let b = h
                    .as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .ok_or_else(|| bad("merkle branch entry is not hex"))?;
                hash32(b, "merkle branch entry")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Job {
            job_id: str_param(p, 0, "job id")?.to_string(),
            prevhash: hash32(hex_param(p, 1, "prevhash")?, "prevhash")?,
            coinb1: hex_param(p, 2, "coinb1")?,
            coinb2: hex_param(p, 3, "coinb2")?,
            merkle_branch: branch,
            version: u32_param(p, 5, "version")?,
            nbits: u32_param(p, 6, "nbits")?,
            ntime: u32_param(p, 7, "ntime")?,
            clean: p.get(8).and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The merkle root of the coinbase built with these extranonces.
    pub fn merkle_root(&self, extranonce1: &[u8], extranonce2: &[u8]) -> [u8; 32] {
        let mut coinbase = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        coinbase.extend_from_slice(&self.coinb1);
        coinbase.extend_from_slice(extranonce1);
        coinbase.extend_from_slice(extranonce2);
        coinbase.extend_from_slice(&self.coinb2);
        let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
        for node in &self.merkle_branch {
            let mut cat = [0u8; 64];
            cat[..32].copy_from_slice(&root);
            cat[32..].copy_from_slice(node);
            root = sha256d::Hash::hash(&cat).to_byte_array();
        }
        root
    }

    /// The 80-byte block header.
    pub fn header(
        &self,
        extranonce1: &[u8],
        extranonce2: &[u8],
        ntime: u32,
        nonce: u32,
        version: u32,
    ) -> [u8; 80] {
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        for (dst, src) in h[4..36].chunks_mut(4).zip(self.prevhash.chunks(4)) {
            dst.copy_from_slice(src);
            dst.reverse();
        }
        h[36..68].copy_from_slice(&self.merkle_root(extranonce1, extranonce2));
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }
}

/// sha256d of a header, big-endian (the order targets are compared in).
pub fn header_hash_be(header: &[u8; 80]) -> [u8; 32] {
    let mut h = sha256d::Hash::hash(header).to_byte_array();
    h.reverse();
    h
}

/// The big-endian 256-bit target of an SV1 difficulty:
/// difficulty 1 = 0x00000000FFFF0000..., difficulty d = that / d
/// (below 1 the target is larger; saturates at 2^256 - 1).
pub fn target_from_difficulty(difficulty: f64) -> [u8; 32] {
    if difficulty.is_nan() || difficulty <= 0.0 {
        return [0xff; 32];
    }
    // target = m * 2^208 with m = 0xffff / difficulty
    let m = 65535.0 / difficulty;
    if m >= 2f64.powi(48) {
        return [0xff; 32];
    }
    // v = m * 2^64 (< 2^112), target = v << 144
    let v = (m * 2f64.powi(64)) as u128;
    let mut out = [0u8; 32];
    out[..14].copy_from_slice(&v.to_be_bytes()[2..16]);
    out
}

/// Whether a big-endian hash meets a big-endian target.
pub fn meets(hash_be: &[u8; 32], target_be: &[u8; 32]) -> bool {
    hash_be <= target_be
}

/// Scans nonces `start..end` of `header` (nonce bytes ignored) for a hash
/// meeting `target`; returns the first nonce found and how many hashes were done.
/// Hashes the first 64 bytes once (midstate).
pub fn scan(
    header: &[u8; 80],
    start: u32,
    end: u32,
    target_be: &[u8; 32],
) -> (Option<(u32, [u8; 32])>, u64) {
    let mut mid = sha256::Hash::engine();
    mid.input(&header[..64]);
    let mut tail = [0u8; 16];
    tail.copy_from_slice(&header[64..80]);
    let mut nonce = start;
    while nonce < end {
        tail[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut e = mid.clone();
        e.input(&tail);
        let first = sha256::Hash::from_engine(e);
        let mut hash = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
        // quick reject: the most significant byte of the BE hash is hash[31]
        if hash[31] <= target_be[0] {
            hash.reverse();
            if meets(&hash, target_be) {
                return (Some((nonce, hash)), u64::from(nonce - start) + 1);
            }
        }
        nonce += 1;
    }
    (None, u64::from(end - start))
}

/// `n` as an extranonce2 of `size` bytes (little-endian counter, zero padded).
pub fn extranonce2(n: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    for (d, s) in v.iter_mut().zip(n.to_le_bytes()) {
        *d = s;
    }
    v
}

/// A share ready to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// The rolled version bits (already masked), when version rolling is on.
    pub version_bits: Option<u32>,
}

/// What a server line meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Subscribed {
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    },
    Authorized(bool),
    /// The answer to `mining.configure` (or `mining.set_version_mask`): the mask, if any.
    VersionMask(Option<u32>),
    NewJob(Job),
    Difficulty(f64),
    Extranonce {
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    },
    Accepted,
    Rejected(String),
    /// Anything else (unknown notifications, answers nobody waits for).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Configure,
    Subscribe,
    Authorize,
    Submit,
}

/// One SV1 client session: numbers requests and matches the answers.
#[derive(Debug, Default)]
pub struct Session {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl Session {
    pub fn new() -> Self {
        Self {
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    fn request(&mut self, kind: Pending, method: &str, params: Value) -> String {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, kind);
        json!({"id": id, "method": method, "params": params}).to_string() + "\n"
    }

    /// Submits still waiting for an answer.
    pub fn pending_submits(&self) -> usize {
        self.pending
            .values()
            .filter(|k| **k == Pending::Submit)
            .count()
    }

    pub fn configure_version_rolling(&mut self) -> String {
        self.request(
            Pending::Configure,
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]),
        )
    }

    pub fn subscribe(&mut self, agent: &str) -> String {
        self.request(Pending::Subscribe, "mining.subscribe", json!([agent]))
    }

    pub fn authorize(&mut self, user: &str, password: &str) -> String {
        self.request(
            Pending::Authorize,
            "mining.authorize",
            json!([user, password]),
        )
    }

    pub fn submit(&mut self, user: &str, share: &Share) -> String {
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
        self.request(Pending::Submit, "mining.submit", Value::Array(params))
    }

    /// Parses one server line.
    pub fn handle_line(&mut self, line: &str) -> Result<Event, ParseError> {
        let v: Value = serde_json::from_str(line.trim()).map_err(|e| bad(e.to_string()))?;
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            let p = v.get("params").unwrap_or(&Value::Null);
            return Ok(match method {
                "mining.notify" => Event::NewJob(Job::from_params(p)?),
                "mining.set_difficulty" => {
                    let d = p
                        .get(0)
                        .and_then(Value::as_f64)
                        .filter(|d| d.is_finite() && *d > 0.0)
                        .ok_or_else(|| bad("difficulty is not a positive number"))?;
                    Event::Difficulty(d)
                }
                "mining.set_extranonce" => Event::Extranonce {
                    extranonce1: hex_param(p, 0, "extranonce1")?,
                    extranonce2_size: extranonce2_size(p.get(1))?,
                },
                "mining.set_version_mask" => Event::VersionMask(Some(u32_param(p, 0, "mask")?)),
                _ => Event::Ignored,
            });
        }
        let id = v.get("id").and_then(Value::as_u64);
        let Some(kind) = id.and_then(|id| self.pending.remove(&id)) else {
            return Ok(Event::Ignored);
        };
        let result = v.get("result").unwrap_or(&Value::Null);
        let error = v.get("error").unwrap_or(&Value::Null);
        Ok(match kind {
            Pending::Configure => Event::VersionMask(
                result
                    .get("version-rolling.mask")
                    .and_then(Value::as_str)
                    .filter(|_| result["version-rolling"] != json!(false))
                    .and_then(|s| u32::from_str_radix(s, 16).ok()),
            ),
            Pending::Subscribe => {
                if !error.is_null() {
                    return Err(bad(format!("subscribe refused: {error}")));
                }
                Event::Subscribed {
                    extranonce1: hex_param(result, 1, "extranonce1")?,
                    extranonce2_size: extranonce2_size(result.get(2))?,
                }
            }
            Pending::Authorize => Event::Authorized(error.is_null() && *result == json!(true)),
            Pending::Submit => {
                if error.is_null() && *result == json!(true) {
                    Event::Accepted
                } else if error.is_null() {
                    Event::Rejected("rejected".into())
                } else {
                    Event::Rejected(error.to_string())
                }
            }
        })
    }
}

fn extranonce2_size(v: Option<&Value>) -> Result<usize, ParseError> {
    v.and_then(Value::as_u64)
        .filter(|n| (1..=32).contains(n))
        .map(|n| n as usize)
        .ok_or_else(|| bad("extranonce2 size missing or not in 1..=32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_one_is_the_classic_target() {
        let t = target_from_difficulty(1.0);
        assert_eq!(
            hex::encode(t),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(
            hex::encode(target_from_difficulty(2.0)),
            "000000007fff8000000000000000000000000000000000000000000000000000"
        );
        // below 1 (devnet): a larger target
        assert_eq!(
            hex::encode(target_from_difficulty(1.0 / 256.0)),
            "000000ffff000000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(target_from_difficulty(1e-30), [0xff; 32]);
        assert!(target_from_difficulty(1e6) < target_from_difficulty(1e5));
    }

    /// Bitcoin block 125552, the classic worked example of the header hash.
    #[test]
    fn known_block_header_hashes_to_its_block_hash() {
        let header: [u8; 80] = hex::decode(
            "01000000\
             81cd02ab7e569e8bcd9317e2fe99f2de44d49ab2b8851ba4a308000000000000\
             e320b6c2fffc8d750423db8b1eb942ae710e951ed797f7affc8892b0f1fc122b\
             c7f5d74d\
             f2b9441a\
             42a14695",
        )
        .unwrap()
        .try_into()
        .unwrap();
        assert_eq!(
            hex::encode(header_hash_be(&header)),
            "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
        );
        // the scan finds the same nonce with the block's own target
        let target = target_from_difficulty(244112.49);
        let nonce = 0x9546a142;
        let (found, hashes) = scan(&header, nonce - 10, nonce + 10, &target);
        assert_eq!(found.map(|(n, _)| n), Some(nonce));
        assert_eq!(hashes, 11);
        assert_eq!(found.unwrap().1, header_hash_be(&header));
    }

    fn notify_line() -> String {
        // a job with one merkle branch entry
        json!({"id": null, "method": "mining.notify", "params": [
            "1f", "00000001000000020000000300000004000000050000000600000007000000ff",
            "01000000010000", "ffffffff00", ["11".repeat(32)],
            "20000000", "207fffff", "5f5e1000", true
        ]})
        .to_string()
    }

    #[test]
    fn notify_builds_the_header_as_firmware_does() {
        let mut s = Session::new();
        let Event::NewJob(job) = s.handle_line(&notify_line()).unwrap() else {
            panic!("a job")
        };
        assert_eq!(job.job_id, "1f");
        assert!(job.clean);
        let (en1, en2) = ([0xaa, 0xbb], extranonce2(1, 4));
        assert_eq!(en2, [1, 0, 0, 0]);
        let h = job.header(&en1, &en2, 0x5f5e1001, 7, 0x2000_4000);
        assert_eq!(&h[0..4], &0x2000_4000u32.to_le_bytes());
        // prevhash words byte-swapped
        assert_eq!(&h[4..12], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&h[32..36], &[0xff, 0, 0, 0]);
        // merkle root: sha256d(sha256d(coinbase) || branch)
        let coinbase = hex::decode("01000000010000aabb01000000ffffffff00").unwrap();
        let mut cat = sha256d::Hash::hash(&coinbase).to_byte_array().to_vec();
        cat.extend_from_slice(&[0x11; 32]);
        assert_eq!(&h[36..68], &sha256d::Hash::hash(&cat).to_byte_array());
        assert_eq!(&h[68..72], &0x5f5e1001u32.to_le_bytes());
        assert_eq!(&h[72..76], &0x207fffffu32.to_le_bytes());
        assert_eq!(&h[76..80], &7u32.to_le_bytes());
    }

    #[test]
    fn a_session_matches_answers_to_requests() {
        let mut s = Session::new();
        let conf = s.configure_version_rolling();
        assert!(conf.ends_with('\n') && conf.contains("mining.configure"));
        let sub = s.subscribe("hashpool-miner");
        assert!(sub.contains(r#""id":2"#));
        let auth = s.authorize("rig", "x");
        assert!(auth.contains(r#""params":["rig","x"]"#));
        assert_eq!(
            s.handle_line(r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#).unwrap(),
            Event::VersionMask(Some(0x1fffe000))
        );
        assert_eq!(
            s.handle_line(r#"{"id":2,"result":[[["mining.notify","1"]],"0a0b",4],"error":null}"#)
                .unwrap(),
            Event::Subscribed {
                extranonce1: vec![10, 11],
                extranonce2_size: 4
            }
        );
        assert_eq!(
            s.handle_line(r#"{"id":3,"result":true,"error":null}"#)
                .unwrap(),
            Event::Authorized(true)
        );
        assert_eq!(
            s.handle_line(r#"{"id":null,"method":"mining.set_difficulty","params":[0.001]}"#)
                .unwrap(),
            Event::Difficulty(0.001)
        );
        assert_eq!(
            s.handle_line(r#"{"id":null,"method":"mining.set_extranonce","params":["ff01",8]}"#)
                .unwrap(),
            Event::Extranonce {
                extranonce1: vec![0xff, 1],
                extranonce2_size: 8
            }
        );
        let share = Share {
            job_id: "1f".into(),
            extranonce2: vec![1, 0, 0, 0],
            ntime: 0x5f5e1000,
            nonce: 0xdeadbeef,
            version_bits: Some(0x0000_4000),
        };
        let line = s.submit("rig", &share);
        assert!(
            line.contains(r#""params":["rig","1f","01000000","5f5e1000","deadbeef","00004000"]"#),
            "{line}"
        );
        let again = s.submit("rig", &share);
        assert_eq!(s.pending_submits(), 2);
        assert_eq!(
            s.handle_line(r#"{"id":4,"result":true,"error":null}"#)
                .unwrap(),
            Event::Accepted
        );
        assert!(again.contains(r#""id":5"#));
        assert!(matches!(
            s.handle_line(r#"{"id":5,"result":null,"error":[23,"Low difficulty share",null]}"#)
                .unwrap(),
            Event::Rejected(r) if r.contains("Low difficulty")
        ));
        assert_eq!(s.pending_submits(), 0);
        // unknown ids and methods are ignored; garbage and bad params are errors
        assert_eq!(
            s.handle_line(r#"{"id":99,"result":true}"#).unwrap(),
            Event::Ignored
        );
        assert_eq!(
            s.handle_line(r#"{"id":null,"method":"client.show_message","params":["hi"]}"#)
                .unwrap(),
            Event::Ignored
        );
        assert!(s.handle_line("{not json").is_err());
        assert!(s
            .handle_line(r#"{"method":"mining.set_difficulty","params":[-1]}"#)
            .is_err());
        assert!(s
            .handle_line(r#"{"method":"mining.notify","params":["1","zz"]}"#)
            .is_err());
    }
}

//! The client side of Stratum V1, as a miner speaks it: request lines out,
//! parsed server messages in, block headers from `mining.notify`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::jsonrpc;

mod job;

pub use crate::difficulty::target_from_difficulty;
/// A share ready to submit.
pub use crate::Submit as Share;
pub use job::{extranonce2, header_hash_be, meets, scan, scan_with, search, Found, Job};

/// A malformed or unexpected server line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad SV1 message: {0}")]
pub struct ParseError(pub String);

fn bad(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
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

/// `mining.configure` params asking for version rolling under `mask`.
pub fn version_rolling_params(mask: u32) -> Value {
    json!([["version-rolling"], {"version-rolling.mask": format!("{mask:08x}"), "version-rolling.min-bit-count": 2}])
}

/// `mining.submit` params for `share`, submitted as `user`.
pub fn submit_params(user: &str, share: &Share) -> Value {
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
    Value::Array(params)
}

/// The version mask a `mining.configure` result grants, if any.
pub fn granted_version_mask(result: &Value) -> Option<u32> {
    result
        .get("version-rolling.mask")
        .and_then(Value::as_str)
        .filter(|_| result["version-rolling"] != json!(false))
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

/// extranonce1 and the extranonce2 size from a `mining.subscribe` result.
pub fn subscribed(result: &Value) -> Result<(Vec<u8>, usize), ParseError> {
    Ok((
        hex_param(result, 1, "extranonce1")?,
        extranonce2_size(result.get(2))?,
    ))
}

/// Parses a server notification (a line with a `method`).
pub fn notification(method: &str, p: &Value) -> Result<Event, ParseError> {
    Ok(match method {
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
    })
}

fn extranonce2_size(v: Option<&Value>) -> Result<usize, ParseError> {
    v.and_then(Value::as_u64)
        .filter(|n| (1..=32).contains(n))
        .map(|n| n as usize)
        .ok_or_else(|| bad("extranonce2 size missing or not in 1..=32"))
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
        jsonrpc::request(json!(id), method, params)
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
            version_rolling_params(0x1fff_e000),
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
        self.request(Pending::Submit, "mining.submit", submit_params(user, share))
    }

    /// Parses one server line.
    pub fn handle_line(&mut self, line: &str) -> Result<Event, ParseError> {
        let v: Value = serde_json::from_str(line.trim()).map_err(|e| bad(e.to_string()))?;
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            return notification(method, v.get("params").unwrap_or(&Value::Null));
        }
        let id = v.get("id").and_then(Value::as_u64);
        let Some(kind) = id.and_then(|id| self.pending.remove(&id)) else {
            return Ok(Event::Ignored);
        };
        let result = v.get("result").unwrap_or(&Value::Null);
        let error = v.get("error").unwrap_or(&Value::Null);
        Ok(match kind {
            Pending::Configure => Event::VersionMask(granted_version_mask(result)),
            Pending::Subscribe => {
                if !error.is_null() {
                    return Err(bad(format!("subscribe refused: {error}")));
                }
                let (extranonce1, extranonce2_size) = subscribed(result)?;
                Event::Subscribed {
                    extranonce1,
                    extranonce2_size,
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

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_core::bitcoin::hashes::{sha256d, Hash};

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

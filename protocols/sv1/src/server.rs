//! The server side of Stratum V1: parsing what miners send and building what
//! they receive.
//!
//! Byte orders follow what SV1 firmware expects: `prevhash` is the header's
//! previous-block hash with every 4-byte word byte-swapped; `version`,
//! `nbits`, `ntime` and `nonce` are big-endian hex of the u32.

use serde_json::{json, Value};

pub use crate::difficulty::difficulty_of_target;
use crate::jsonrpc::{line, request};
pub use crate::Submit;

/// SV1 error codes, as used by common pools and understood by firmware.
pub mod code {
    pub const OTHER: i64 = 20;
    pub const JOB_NOT_FOUND: i64 = 21;
    pub const DUPLICATE_SHARE: i64 = 22;
    pub const LOW_DIFFICULTY: i64 = 23;
    pub const UNAUTHORIZED: i64 = 24;
    pub const NOT_SUBSCRIBED: i64 = 25;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
}

/// A request a miner sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Subscribe {
        id: Value,
    },
    Authorize {
        id: Value,
        user: String,
    },
    Submit {
        id: Value,
        submit: Submit,
    },
    /// `mining.configure`; only `version-rolling` is offered.
    Configure {
        id: Value,
        extensions: Vec<String>,
        /// The miner's `version-rolling.mask`, if it sent one.
        version_mask: Option<u32>,
    },
    ExtranonceSubscribe {
        id: Value,
    },
    /// `mining.suggest_difficulty`: the share difficulty the miner asks for.
    SuggestDifficulty {
        id: Value,
        difficulty: f64,
    },
    /// A method this proxy does not serve.
    Unknown {
        id: Value,
        method: String,
    },
    /// A reply to something the proxy sent (miners rarely do this); ignored.
    Response,
}

/// Why a line is not a request. `id` is set when the line had one, so the
/// miner can be answered with an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub id: Option<Value>,
    pub code: i64,
    pub message: String,
}

impl ParseError {
    fn params(id: &Value, message: impl Into<String>) -> Self {
        Self {
            id: Some(id.clone()),
            code: code::INVALID_PARAMS,
            message: message.into(),
        }
    }
}

fn hex_u32(id: &Value, field: &str, v: Option<&Value>) -> Result<u32, ParseError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::params(id, format!("{field}: expected a hex string")))?;
    let s = s.trim_start_matches("0x");
    if s.is_empty() || s.len() > 8 {
        return Err(ParseError::params(
            id,
            format!("{field}: expected 1-8 hex digits"),
        ));
    }
    u32::from_str_radix(s, 16).map_err(|_| ParseError::params(id, format!("{field}: not hex")))
}

/// The longest string id a request may carry: a session keeps the ids of
/// the requests it has yet to answer (thousands of shares awaiting the
/// pool), and every firmware sends numbers or short strings.
pub const MAX_ID_LEN: usize = 64;

/// A request id a session may keep: null, a number, or a short string.
fn fair_id(id: &Value) -> bool {
    match id {
        Value::Null | Value::Number(_) => true,
        Value::String(s) => s.len() <= MAX_ID_LEN,
        _ => false,
    }
}

/// Parses one line (without its newline).
pub fn parse_request(line: &str) -> Result<Request, ParseError> {
    let value: Value = serde_json::from_str(line).map_err(|e| ParseError {
        id: None,
        code: -32700,
        message: format!("parse error: {e}"),
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ParseError {
            id: None,
            code: -32600,
            message: "expected a JSON object".into(),
        });
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if !fair_id(&id) {
        return Err(ParseError {
            id: None,
            code: -32600,
            message: format!("the id must be a number, or a string of at most {MAX_ID_LEN} bytes"),
        });
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        if obj.contains_key("result") || obj.contains_key("error") {
            return Ok(Request::Response);
        }
        return Err(ParseError {
            id: Some(id),
            code: -32600,
            message: "missing method".into(),
        });
    };
    let empty = Vec::new();
    let params = match obj.get("params") {
        None | Some(Value::Null) => &empty,
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ParseError::params(&id, "params must be an array")),
    };
    Ok(match method {
        "mining.subscribe" => Request::Subscribe { id },
        "mining.authorize" => {
            let user = params
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| ParseError::params(&id, "username: expected a string"))?;
            Request::Authorize {
                id,
                user: user.to_string(),
            }
        }
        "mining.submit" => Request::Submit {
            submit: parse_submit(&id, params)?,
            id,
        },
        "mining.configure" => {
            let (extensions, version_mask) = parse_configure(&id, params)?;
            Request::Configure {
                id,
                extensions,
                version_mask,
            }
        }
        "mining.extranonce.subscribe" => Request::ExtranonceSubscribe { id },
        "mining.suggest_difficulty" => {
            // A number, or a number in a string (some firmware sends that).
            let difficulty = params
                .first()
                .and_then(|d| d.as_f64().or_else(|| d.as_str()?.parse().ok()))
                .filter(|d| d.is_finite() && *d > 0.0)
                .ok_or_else(|| ParseError::params(&id, "difficulty: expected a positive number"))?;
            Request::SuggestDifficulty { id, difficulty }
        }
        other => Request::Unknown {
            id,
            method: other.to_string(),
        },
    })
}

fn parse_submit(id: &Value, params: &[Value]) -> Result<Submit, ParseError> {
    if params.len() < 5 {
        return Err(ParseError::params(id, "expected 5 or 6 params"));
    }
    let job_id = params[1]
        .as_str()
        .ok_or_else(|| ParseError::params(id, "job_id: expected a string"))?
        .to_string();
    let en2 = params[2]
        .as_str()
        .ok_or_else(|| ParseError::params(id, "extranonce2: expected a hex string"))?;
    let extranonce2 =
        hex::decode(en2).map_err(|_| ParseError::params(id, "extranonce2: not hex"))?;
    let ntime = hex_u32(id, "ntime", params.get(3))?;
    let nonce = hex_u32(id, "nonce", params.get(4))?;
    let version_bits = match params.get(5) {
        None | Some(Value::Null) => None,
        v => Some(hex_u32(id, "version_bits", v)?),
    };
    Ok(Submit {
        job_id,
        extranonce2,
        ntime,
        nonce,
        version_bits,
    })
}

/// The extensions asked for, and the version-rolling mask if one was sent.
fn parse_configure(id: &Value, params: &[Value]) -> Result<(Vec<String>, Option<u32>), ParseError> {
    let extensions = params
        .first()
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let version_mask = match params.get(1).and_then(|o| o.get("version-rolling.mask")) {
        None => None,
        v => Some(hex_u32(id, "version-rolling.mask", v)?),
    };
    Ok((extensions, version_mask))
}

pub fn ok(id: &Value, result: Value) -> String {
    line(json!({"id": id, "result": result, "error": null}))
}

pub fn error(id: &Value, code: i64, message: &str) -> String {
    line(json!({"id": id, "result": null, "error": [code, message, null]}))
}

/// `mining.set_difficulty`.
pub fn set_difficulty(difficulty: f64) -> String {
    request(Value::Null, "mining.set_difficulty", json!([difficulty]))
}

/// `mining.set_version_mask`.
pub fn set_version_mask(mask: u32) -> String {
    request(
        Value::Null,
        "mining.set_version_mask",
        json!([format!("{mask:08x}")]),
    )
}

/// `mining.set_extranonce`: the miner's new extranonce1 and extranonce2
/// size, in force from the next `mining.notify`.
pub fn set_extranonce(extranonce1: &[u8], extranonce2_size: usize) -> String {
    request(
        Value::Null,
        "mining.set_extranonce",
        json!([hex::encode(extranonce1), extranonce2_size]),
    )
}

/// What a `mining.notify` carries, in header byte order (converted on output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub job_id: String,
    /// Previous block hash as in the header (internal byte order).
    pub prev_hash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    /// Merkle path, each hash in internal byte order.
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean_jobs: bool,
}

/// The SV1 `prevhash` string: the header bytes with each 4-byte word reversed.
pub fn prevhash_hex(prev_hash: &[u8; 32]) -> String {
    let mut swapped = *prev_hash;
    for word in swapped.chunks_mut(4) {
        word.reverse();
    }
    hex::encode(swapped)
}

impl Notify {
    pub fn to_line(&self) -> String {
        let branch: Vec<String> = self.merkle_branch.iter().map(hex::encode).collect();
        request(
            Value::Null,
            "mining.notify",
            json!([
                self.job_id,
                prevhash_hex(&self.prev_hash),
                hex::encode(&self.coinb1),
                hex::encode(&self.coinb2),
                branch,
                format!("{:08x}", self.version),
                format!("{:08x}", self.nbits),
                format!("{:08x}", self.ntime),
                self.clean_jobs,
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cpuminer_handshake() {
        assert_eq!(
            parse_request(
                r#"{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}"#
            ),
            Ok(Request::Subscribe { id: json!(1) })
        );
        assert_eq!(
            parse_request(
                r#"{"id": 2, "method": "mining.authorize", "params": ["bob.rig1", "x"]}"#
            ),
            Ok(Request::Authorize {
                id: json!(2),
                user: "bob.rig1".into()
            })
        );
    }

    #[test]
    fn a_suggested_difficulty_is_a_positive_number() {
        for line in [
            r#"{"id":3,"method":"mining.suggest_difficulty","params":[512]}"#,
            r#"{"id":3,"method":"mining.suggest_difficulty","params":["512"]}"#,
        ] {
            assert_eq!(
                parse_request(line),
                Ok(Request::SuggestDifficulty {
                    id: json!(3),
                    difficulty: 512.0
                })
            );
        }
        for bad in ["[]", "[0]", "[-1]", r#"["x"]"#] {
            let line = format!(r#"{{"id":3,"method":"mining.suggest_difficulty","params":{bad}}}"#);
            assert_eq!(parse_request(&line).unwrap_err().code, -32602, "{bad}");
        }
    }

    #[test]
    fn parses_a_submit_with_and_without_version_bits() {
        let r = parse_request(
            r#"{"id":4,"method":"mining.submit","params":["w","1a","00000001","5f5e1000","0000abcd"]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Submit {
                id: json!(4),
                submit: Submit {
                    job_id: "1a".into(),
                    extranonce2: vec![0, 0, 0, 1],
                    ntime: 0x5f5e_1000,
                    nonce: 0xabcd,
                    version_bits: None,
                },
            }
        );
        let r = parse_request(
            r#"{"id":5,"method":"mining.submit","params":["w","1a","00","5f5e1000","0000abcd","1fffe000"]}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::Submit {
                submit: Submit {
                    version_bits: Some(0x1fff_e000),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn parses_configure_version_rolling() {
        let r = parse_request(
            r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2}]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Configure {
                id: json!(1),
                extensions: vec!["version-rolling".into()],
                version_mask: Some(0x1fff_e000)
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error_with_the_id_when_known() {
        assert_eq!(parse_request("{not json").unwrap_err().id, None);
        assert_eq!(parse_request("[1,2]").unwrap_err().id, None);
        let e =
            parse_request(r#"{"id":9,"method":"mining.submit","params":["w","1","zz","1","1"]}"#)
                .unwrap_err();
        assert_eq!((e.id, e.code), (Some(json!(9)), code::INVALID_PARAMS));
        let e = parse_request(r#"{"id":9,"method":"mining.submit","params":["w"]}"#).unwrap_err();
        assert_eq!(e.id, Some(json!(9)));
        let e = parse_request(
            r#"{"id":9,"method":"mining.submit","params":["w","1","00","123456789","1"]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("ntime"), "{e:?}");
        assert!(matches!(
            parse_request(r#"{"id":3,"method":"mining.bogus"}"#),
            Ok(Request::Unknown { .. })
        ));
    }

    #[test]
    fn only_numbers_and_short_strings_are_ids() {
        for id in [
            "1",
            "\"a\"",
            "null",
            &format!("\"{}\"", "x".repeat(MAX_ID_LEN)),
        ] {
            let line = format!(r#"{{"id":{id},"method":"mining.subscribe","params":[]}}"#);
            assert!(parse_request(&line).is_ok(), "{line}");
        }
        let long = format!("\"{}\"", "x".repeat(MAX_ID_LEN + 1));
        for id in [long.as_str(), "[1]", "{}", "true"] {
            let line = format!(r#"{{"id":{id},"method":"mining.subscribe","params":[]}}"#);
            let e = parse_request(&line).unwrap_err();
            assert_eq!((e.id, e.code), (None, -32600), "{line}");
        }
    }

    #[test]
    fn prevhash_is_word_swapped() {
        let mut prev = [0u8; 32];
        for (i, b) in prev.iter_mut().enumerate() {
            *b = i as u8;
        }
        let s = prevhash_hex(&prev);
        assert!(s.starts_with("03020100070605040b0a0908"), "{s}");
    }

    #[test]
    fn notify_has_nine_params_in_sv1_order() {
        let n = Notify {
            job_id: "7".into(),
            prev_hash: [0; 32],
            coinb1: vec![1, 2],
            coinb2: vec![3],
            merkle_branch: vec![[0xaa; 32]],
            version: 0x2000_0000,
            nbits: 0x1d00_ffff,
            ntime: 0x6000_0000,
            clean_jobs: true,
        };
        let v: Value = serde_json::from_str(n.to_line().trim_end()).unwrap();
        let p = v["params"].as_array().unwrap();
        assert_eq!(p.len(), 9);
        assert_eq!(p[2], "0102");
        assert_eq!(p[5], "20000000");
        assert_eq!(p[6], "1d00ffff");
        assert_eq!(p[7], "60000000");
        assert_eq!(p[8], true);
    }
}

//! What the pool and the mint share of the Redis Streams transport
//! (`mint_quote_sv2::stream`): connections, signed entries in and out of
//! streams, and config checks.
//!
//! Replies are read as raw values, entry by entry: whoever can write to
//! Redis can put anything in a stream (field names that are not UTF-8,
//! values of any type), and such an entry must cost only itself, never
//! the reply it comes in.

use std::time::Duration;

use mint_quote_sv2::stream::{EntryError, SignedEntry, FIELD_FRAME, FIELD_SIGNATURE, FIELD_SIGNER};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Pipeline, Value};

/// How long a command may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking read waits for entries before it returns empty.
pub const BLOCK: Duration = Duration::from_secs(1);

/// The key prefix of a deployment unless configured.
pub const DEFAULT_PREFIX: &str = "hashpool";

pub fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}

/// Why a `redis_url` is refused, if it is.
pub fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") {
        return Err(
            "must start with redis:// (there is no TLS: keep Redis on a private network)".into(),
        );
    }
    // Parsing opens nothing; the error does not repeat the URL (a password).
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("is not a Redis URL: {e}"))
}

/// Why a key prefix is refused, if it is.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    match prefix.is_empty() || prefix.contains(char::is_whitespace) {
        true => Err("must be non-empty, without spaces"),
        false => Ok(()),
    }
}

/// Two connections to Redis: one for commands, one for blocking reads (a
/// blocking read holds its connection until it returns).
pub struct Connections {
    pub commands: MultiplexedConnection,
    pub blocking: MultiplexedConnection,
}

pub async fn connect(url: &str) -> Result<Connections, String> {
    let client = Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
    let config = |timeout| {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(timeout))
    };
    let commands = client
        .get_multiplexed_async_connection_with_config(&config(COMMAND_TIMEOUT))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let blocking = client
        .get_multiplexed_async_connection_with_config(&config(COMMAND_TIMEOUT + BLOCK))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    Ok(Connections { commands, blocking })
}

/// One stream entry as read: its id, and the signed message it holds or
/// why it holds none.
#[derive(Debug)]
pub struct StreamEntry {
    pub id: String,
    pub signed: Result<SignedEntry, EntryError>,
}

/// The entries of an `XREAD` / `XREADGROUP` reply, of every stream in it
/// (nil when the read timed out).
pub fn read_reply(reply: &Value) -> Vec<StreamEntry> {
    let streams: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, entries)| entries).collect(),
        _ => vec![],
    };
    streams.into_iter().flat_map(entries).collect()
}

/// The entries of an entry list (`XRANGE`, `XREVRANGE`, or the second
/// element of an `XAUTOCLAIM` reply). An entry without a readable id is
/// skipped: nothing could refer to it.
pub fn entries(list: &Value) -> Vec<StreamEntry> {
    let Value::Array(list) = list else {
        return vec![];
    };
    list.iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let id = match parts.first()? {
                Value::BulkString(id) => String::from_utf8(id.clone()).ok()?,
                Value::SimpleString(id) => id.clone(),
                _ => return None,
            };
            let signed = match parts.get(1) {
                Some(Value::Array(fields)) => signed_entry(fields),
                // Deleted since it was delivered.
                _ => Err(EntryError::Missing(FIELD_FRAME)),
            };
            Some(StreamEntry { id, signed })
        })
        .collect()
}

/// An `XAUTOCLAIM` reply: where the next scan starts, and the entries
/// claimed.
pub fn autoclaim_reply(reply: &Value) -> (String, Vec<StreamEntry>) {
    let Value::Array(parts) = reply else {
        return ("0-0".into(), vec![]);
    };
    let next = match parts.first() {
        Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
        Some(Value::SimpleString(id)) => id.clone(),
        _ => "0-0".into(),
    };
    (next, parts.get(1).map(entries).unwrap_or_default())
}

/// The signed entry of a field list (name, value, name, value, ...).
fn signed_entry(fields: &[Value]) -> Result<SignedEntry, EntryError> {
    let find = |wanted: &'static str| -> Result<Option<&[u8]>, EntryError> {
        for pair in fields.chunks(2) {
            if let [Value::BulkString(name), value] = pair {
                if name.as_slice() == wanted.as_bytes() {
                    return match value {
                        Value::BulkString(bytes) => Ok(Some(bytes.as_slice())),
                        _ => Err(EntryError::Malformed(wanted)),
                    };
                }
            }
        }
        Ok(None)
    };
    for name in [FIELD_SIGNER, FIELD_FRAME, FIELD_SIGNATURE] {
        find(name)?;
    }
    SignedEntry::from_fields(|name| find(name).ok().flatten())
}

/// Queues `XADD key MAXLEN ~ max_len * <entry>` on `pipe`: the stream is
/// trimmed to about `max_len` entries, the oldest first.
pub fn add(pipe: &mut Pipeline, key: &str, max_len: usize, entry: &SignedEntry) {
    let cmd = pipe
        .cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*");
    for (field, value) in entry.fields() {
        cmd.arg(field).arg(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mint_quote_sv2::stream::keypair;
    use mint_quote_sv2::{MintQuoteMessage, MintStatsRequest};
    use stratum_apps::stratum_core::bitcoin::secp256k1::SecretKey;

    fn bulk(bytes: &[u8]) -> Value {
        Value::BulkString(bytes.to_vec())
    }

    fn signed() -> SignedEntry {
        let key = keypair(&SecretKey::from_slice(&[1; 32]).unwrap());
        let message = MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id: 1 });
        SignedEntry::sign(message, &key, &key.x_only_public_key().0).unwrap()
    }

    fn entry(id: &str, fields: Vec<Value>) -> Value {
        Value::Array(vec![bulk(id.as_bytes()), Value::Array(fields)])
    }

    #[test]
    fn a_redis_url_must_parse_and_its_error_hides_the_password() {
        check_url("redis://:secret@10.0.0.5:6379/2").unwrap();
        assert!(check_url("rediss://10.0.0.5:6379").is_err(), "no TLS");
        let error = check_url("redis://:secret@10.0.0.5:notaport").unwrap_err();
        assert!(error.starts_with("is not a Redis URL"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn hostile_entries_cost_only_themselves() {
        let good = signed();
        let good_fields: Vec<Value> = good
            .fields()
            .iter()
            .flat_map(|(name, value)| [bulk(name.as_bytes()), bulk(value)])
            .collect();
        let mut wrong_type = good_fields.clone();
        wrong_type[3] = Value::Int(7);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"requests"),
            Value::Array(vec![
                entry("1-0", vec![bulk(b"\xff\xfe"), bulk(b"x")]),
                entry("2-0", good_fields),
                entry("3-0", wrong_type),
                Value::Array(vec![bulk(b"4-0"), Value::Nil]),
                Value::Int(5),
                entry("6-0", vec![bulk(b"frame")]),
            ]),
        ])]);
        let read = read_reply(&reply);
        let ids: Vec<&str> = read.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "6-0"]);
        assert_eq!(read[0].signed, Err(EntryError::Missing(FIELD_SIGNER)));
        assert_eq!(read[1].signed.as_ref(), Ok(&good));
        assert_eq!(read[2].signed, Err(EntryError::Malformed(FIELD_FRAME)));
        assert_eq!(read[3].signed, Err(EntryError::Missing(FIELD_FRAME)));
        assert_eq!(read[4].signed, Err(EntryError::Missing(FIELD_SIGNER)));
        assert!(read_reply(&Value::Nil).is_empty());
        assert!(read_reply(&Value::Int(1)).is_empty());
    }

    #[test]
    fn an_autoclaim_reply_gives_the_next_cursor_and_the_entries() {
        let reply = Value::Array(vec![
            bulk(b"17-3"),
            Value::Array(vec![Value::Array(vec![bulk(b"9-0"), Value::Nil])]),
            Value::Array(vec![]),
        ]);
        let (next, claimed) = autoclaim_reply(&reply);
        assert_eq!(next, "17-3");
        assert_eq!(claimed.len(), 1);
        assert_eq!(autoclaim_reply(&Value::Nil).0, "0-0");
    }

    #[test]
    fn urls_and_prefixes_are_checked() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("rediss://host").is_err());
        assert!(check_prefix("hashpool").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a b").is_err());
    }
}

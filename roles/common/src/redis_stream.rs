//! What the pool and the mint share of the Redis Streams transport
//! (`mint_quote_sv2::stream`): connections, and signed entries in and out
//! of streams.

use std::time::Duration;

use mint_quote_sv2::stream::{EntryError, SignedEntry};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamId;
use redis::{AsyncConnectionConfig, Client, Pipeline, Value};

/// How long a command may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking read waits for entries before it returns empty.
pub const BLOCK: Duration = Duration::from_secs(1);

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

/// The signed entry a stream entry holds.
pub fn signed_entry(entry: &StreamId) -> Result<SignedEntry, EntryError> {
    SignedEntry::from_fields(|name| match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        _ => None,
    })
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

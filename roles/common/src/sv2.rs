//! SV2 over Noise, as every role and test client speaks it: framing and
//! sending a message, one reader task per connection that yields either an
//! SV2 message or an ehash-extension message, the client side of connecting
//! (TCP, Noise with a pinned authority key, SetupConnection) and the ehash
//! extension negotiation.
//!
//! Reading a Noise frame is not cancellation safe, so a task reads and the
//! connection's loop selects on [`Sv2Reader::recv`], which is.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ehash::wire::str0255_truncated;
use ehash_ext_sv2::{grants_ehash_extension, is_ehash_frame, EhashMessage, MessageSet};
use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_apps::network_helpers::TCP_CONNECT_TIMEOUT;
use stratum_apps::stratum_core::bitcoin::{consensus::deserialize, Transaction};
use stratum_apps::stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::parsers_sv2::{
    message_type_to_name, AnyMessage, AnyMessageOwned, CommonMessagesOwned,
    ExtensionsNegotiationOwned, ExtensionsOwned, IsSv2Message, ParserError,
    TemplateDistributionOwned,
};
use stratum_apps::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, RequestTransactionDataSuccessOwned,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::warn;

use crate::noise::{self, NoiseReader, NoiseWriter};

pub use stratum_apps::stratum_core::extensions_sv2::EXTENSION_TYPE_EXTENSIONS_NEGOTIATION as EXTENSIONS_NEGOTIATION;

/// SetupConnection flag of the mining protocol: the client's devices may
/// roll version bits.
pub const REQUIRES_VERSION_ROLLING: u32 = 0b100;

/// How long a client waits for the answer to SetupConnection or to
/// RequestExtensions.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One message received on an SV2 connection.
#[derive(Debug, Clone)]
pub enum Incoming {
    Sv2(AnyMessageOwned),
    Ehash(EhashMessage),
}

/// Why a connection stopped yielding messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("closed by peer")]
    ClosedByPeer,
    #[error("malformed frame (message type 0x{msg_type:02x}): {reason}")]
    Malformed { msg_type: u8, reason: String },
    #[error("read failed: {0}")]
    Io(String),
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cannot frame {message}: {reason}")]
    Frame {
        message: &'static str,
        reason: String,
    },
    #[error("write failed: {0}")]
    Io(String),
}

/// The name of a message, for logs. Message types are a namespace per
/// extension, so Extensions Negotiation is named here, not by type.
pub fn message_name(msg: &AnyMessageOwned) -> &'static str {
    match msg {
        AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(m)) => match m {
            ExtensionsNegotiationOwned::RequestExtensions(_) => "RequestExtensions",
            ExtensionsNegotiationOwned::RequestExtensionsSuccess(_) => "RequestExtensions.Success",
            ExtensionsNegotiationOwned::RequestExtensionsError(_) => "RequestExtensions.Error",
        },
        other => message_type_to_name(other.message_type()),
    }
}

/// The frame of one SV2 message.
pub fn frame(msg: AnyMessageOwned) -> Result<MessageFrame<AnyMessageOwned>, SendError> {
    let name = message_name(&msg);
    let (t, e, c) = (msg.message_type(), msg.extension_type(), msg.channel_bit());
    MessageFrame::from_message(msg, t, e, c).map_err(|e| SendError::Frame {
        message: name,
        reason: format!("{e:?}"),
    })
}

/// Most messages written together: one write of a few kilobytes.
pub const WRITE_BATCH: usize = 64;

/// Frames and encrypts one message after those queued on `writer`;
/// [`flush`] sends them.
pub fn queue(writer: &mut NoiseWriter, message: Outgoing) -> Result<(), SendError> {
    let queued = match message {
        Outgoing::Sv2(m) => writer.queue(frame(m)?),
        Outgoing::Ehash(m) => writer.queue(m.into_frame().map_err(|e| SendError::Frame {
            message: e.message,
            reason: e.reason,
        })?),
    };
    queued.map_err(|e| SendError::Io(e.to_string()))
}

/// Writes what is queued on `writer`.
pub async fn flush(writer: &mut NoiseWriter) -> Result<(), SendError> {
    writer
        .flush()
        .await
        .map_err(|e| SendError::Io(e.to_string()))
}

/// Frames and writes one SV2 message.
pub async fn send(writer: &mut NoiseWriter, msg: AnyMessageOwned) -> Result<(), SendError> {
    queue(writer, Outgoing::Sv2(msg))?;
    flush(writer).await
}

/// Frames and writes one ehash-extension message.
pub async fn send_ehash(writer: &mut NoiseWriter, msg: EhashMessage) -> Result<(), SendError> {
    queue(writer, Outgoing::Ehash(msg))?;
    flush(writer).await
}

/// One message to send on an SV2 connection.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Sv2(AnyMessageOwned),
    Ehash(EhashMessage),
}

/// What a connection's task is handed for its peer: a message, or the
/// order to close the connection (with the reason logged).
#[derive(Debug, Clone)]
pub enum Outbound {
    Message(AnyMessageOwned),
    Ehash(EhashMessage),
    Close(String),
}

/// Writes `batch` (drained) to connection `conn` in one write. An ehash message that
/// cannot be framed is skipped with a warning and the connection goes on.
/// Err(why the connection must close): writing failed, or the batch held a
/// `Close` (what came before it is written first); an empty batch means
/// the queue was dropped because the peer let it fill up.
pub async fn write_outbound(
    writer: &mut NoiseWriter,
    batch: &mut Vec<Outbound>,
    conn: u64,
) -> Result<(), String> {
    if batch.is_empty() {
        return Err("send queue overflow (peer does not read)".into());
    }
    let mut close = None;
    for out in batch.drain(..) {
        let message = match out {
            Outbound::Message(msg) => Outgoing::Sv2(msg),
            Outbound::Ehash(msg) => Outgoing::Ehash(msg),
            Outbound::Close(reason) => {
                close = Some(reason);
                break;
            }
        };
        let ehash = matches!(message, Outgoing::Ehash(_));
        match queue(writer, message) {
            Ok(()) => {}
            Err(e @ SendError::Frame { .. }) if ehash => warn!(conn, "{e}"),
            Err(e) => return Err(e.to_string()),
        }
    }
    flush(writer).await.map_err(|e| e.to_string())?;
    close.map_or(Ok(()), Err)
}

/// The sending half of a connection, written by its own task from a
/// bounded queue. The connection's loop only queues, so it goes on reading
/// while the peer is slow to read: two peers that each stop reading until
/// their own write goes through wait on each other for good once both
/// sockets' buffers are full.
pub struct Sv2Writer {
    tx: mpsc::Sender<Outgoing>,
    task: tokio::task::JoinHandle<String>,
    /// Why writing failed, for a `send` after it did.
    failure: Arc<OnceLock<String>>,
}

impl Sv2Writer {
    /// Starts writing; `capacity` messages may wait unwritten. What waits
    /// when the socket takes more is written together.
    pub fn spawn(mut writer: NoiseWriter, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel(capacity);
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                let sent = batch
                    .drain(..)
                    .try_for_each(|message| queue(&mut writer, message));
                let written = match sent {
                    Ok(()) => flush(&mut writer).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    let reason = e.to_string();
                    let _ = failed.set(reason.clone());
                    return reason;
                }
            }
            let _ = writer.shutdown().await;
            "closed".to_string()
        });
        Self { tx, task, failure }
    }

    /// Queues `message` without waiting; an error when the peer has left
    /// the whole queue unread, or writing failed.
    pub fn send(&self, message: Outgoing) -> Result<(), String> {
        self.tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "the peer read none of the last {} messages",
                self.tx.max_capacity()
            ),
            mpsc::error::TrySendError::Closed(_) => match self.failure.get() {
                Some(reason) => format!("writing failed: {reason}"),
                None => "writing failed".to_string(),
            },
        })
    }

    /// How many more messages may be queued now.
    pub fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// Resolves when writing failed, with why; poll it until it resolves,
    /// not after.
    pub async fn failed(&mut self) -> String {
        match (&mut self.task).await {
            Ok(reason) => reason,
            Err(e) => e.to_string(),
        }
    }

    /// Writes what is queued (for at most `within`), then closes the
    /// sending side of the socket. A writer that failed is closed already.
    pub async fn close(self, within: Duration) {
        let Self { tx, mut task, .. } = self;
        drop(tx);
        // A finished task may have given its output to `failed`: polled
        // again, it would panic.
        if task.is_finished() {
            return;
        }
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// The receiving half of a connection: a task reads and decodes frames and
/// hands them over through a bounded queue. Dropping it stops the task.
pub struct Sv2Reader {
    rx: mpsc::Receiver<Result<Incoming, ReadError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sv2Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sv2Reader {
    /// Starts reading. `who` names the peer in the log lines of ignored
    /// frames; `queue` is how many decoded messages may wait.
    ///
    /// Frames of extensions other than 0 (core), Extensions Negotiation and
    /// ehash, and messages parsers_sv2 does not know, are logged and
    /// skipped (SV2 peers may send what this side does not speak). A frame
    /// that does not decode ends the stream with [`ReadError::Malformed`].
    pub fn spawn(mut reader: NoiseReader, who: &'static str, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue);
        let task = tokio::spawn(async move {
            loop {
                let item = match reader.read_frame().await {
                    Ok(mut frame) => {
                        let header = frame.header();
                        match decode(header, frame.payload(), who) {
                            Some(item) => item,
                            None => continue,
                        }
                    }
                    Err(noise::ReadError::Closed) => Err(ReadError::ClosedByPeer),
                    Err(e) => Err(ReadError::Io(e.to_string())),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        Self { rx, task }
    }

    /// The next message (cancellation safe). After an error the stream
    /// has ended.
    pub async fn recv(&mut self) -> Result<Incoming, ReadError> {
        self.rx.recv().await.unwrap_or(Err(ReadError::ClosedByPeer))
    }

    /// The next message within `timeout`; `None` when none came in time.
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Result<Incoming, ReadError>> {
        tokio::time::timeout(timeout, self.recv()).await.ok()
    }
}

/// Decodes one frame; `None` for a frame to skip.
fn decode(
    header: stratum_apps::stratum_core::framing_sv2::header::Header,
    payload: &mut [u8],
    who: &str,
) -> Option<Result<Incoming, ReadError>> {
    let msg_type = header.msg_type();
    if is_ehash_frame(&header) {
        return Some(
            EhashMessage::decode(&header, payload)
                .map(Incoming::Ehash)
                .map_err(|e| ReadError::Malformed {
                    msg_type,
                    reason: e.to_string(),
                }),
        );
    }
    let ext = header.ext_type_without_channel_msg();
    if ext != 0 && ext != EXTENSIONS_NEGOTIATION {
        warn!("ignoring a {who} frame of extension 0x{ext:04x} type 0x{msg_type:02x}");
        return None;
    }
    match AnyMessage::try_from((header, payload)) {
        Ok(m) => Some(Ok(Incoming::Sv2(m.into_owned()))),
        Err(ParserError::UnexpectedMessage(t)) => {
            warn!("ignoring a {who} message of unknown type 0x{t:02x}");
            None
        }
        Err(e) => Some(Err(ReadError::Malformed {
            msg_type,
            reason: format!("{e:?}"),
        })),
    }
}

/// A client connection: the writer, the reader task and the peer address.
pub struct Sv2Connection {
    pub writer: NoiseWriter,
    pub reader: Sv2Reader,
    pub peer: SocketAddr,
}

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Tcp(std::io::Error),
    #[error("noise handshake failed: {0}")]
    Noise(String),
}

impl ConnectError {
    /// The error as a log line; a failed handshake names the config field
    /// holding the pinned key, the usual cause.
    pub fn explain(&self, key_field: &str) -> String {
        match self {
            ConnectError::Noise(_) => format!("{self} (is {key_field} right?)"),
            _ => self.to_string(),
        }
    }
}

/// Connects over TCP and Noise, pinning the responder's authority key.
pub async fn connect(
    address: &str,
    authority: Secp256k1PublicKey,
    who: &'static str,
    queue: usize,
) -> Result<Sv2Connection, ConnectError> {
    let stream = tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Tcp)?;
    handshake(stream, authority, who, queue).await
}

/// The Noise handshake (as initiator) over a connected `stream`.
pub async fn handshake(
    stream: TcpStream,
    authority: Secp256k1PublicKey,
    who: &'static str,
    queue: usize,
) -> Result<Sv2Connection, ConnectError> {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().map_err(ConnectError::Tcp)?;
    let (reader, writer) = noise::connect(stream, Some(authority))
        .await
        .map_err(|e| ConnectError::Noise(e.to_string()))?;
    Ok(Sv2Connection {
        writer,
        reader: Sv2Reader::spawn(reader, who, queue),
        peer,
    })
}

/// Connects to a template provider as a template-distribution client:
/// Noise (pinning `authority`, whose config field is `key_field`),
/// SetupConnection, then the coinbase output constraints, after which the
/// provider sends templates and chain tips. An error is a log line.
pub async fn connect_template_provider(
    address: &str,
    authority: Secp256k1PublicKey,
    key_field: &str,
    device_id: &str,
    constraints: CoinbaseOutputConstraintsOwned,
) -> Result<Sv2Connection, String> {
    let mut conn = connect(address, authority, "template provider", 256)
        .await
        .map_err(|e| e.explain(key_field))?;
    let setup = setup_connection(
        Protocol::TemplateDistributionProtocol,
        0,
        conn.peer,
        env!("CARGO_PKG_VERSION"),
        device_id,
    );
    conn.setup(setup).await?;
    conn.send(AnyMessageOwned::TemplateDistribution(
        TemplateDistributionOwned::CoinbaseOutputConstraints(constraints),
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The transactions of a RequestTransactionData.Success, decoded; an error
/// names the first one that does not decode.
pub fn template_transactions(
    data: &RequestTransactionDataSuccessOwned,
) -> Result<Vec<Transaction>, String> {
    data.transaction_list
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            deserialize(bytes.as_ref()).map_err(|e| {
                format!(
                    "template {}: transaction {i} does not decode: {e}",
                    data.template_id
                )
            })
        })
        .collect()
}

/// The SetupConnection a Hashpool client sends (vendor "hashpool").
pub fn setup_connection(
    protocol: Protocol,
    flags: u32,
    peer: SocketAddr,
    firmware: &str,
    device_id: &str,
) -> SetupConnectionOwned {
    SetupConnectionOwned {
        protocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: str0255_truncated(&peer.ip().to_string()),
        endpoint_port: peer.port(),
        vendor: str0255_truncated("hashpool"),
        hardware_version: str0255_truncated(""),
        firmware: str0255_truncated(firmware),
        device_id: str0255_truncated(device_id),
    }
}

impl Sv2Connection {
    /// Sends one SV2 message.
    pub async fn send(&mut self, msg: AnyMessageOwned) -> Result<(), SendError> {
        send(&mut self.writer, msg).await
    }

    /// Sends SetupConnection and waits for the answer; an error is a log line.
    pub async fn setup(
        &mut self,
        setup: SetupConnectionOwned,
    ) -> Result<SetupConnectionSuccessOwned, String> {
        self.send(AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnection(setup),
        ))
        .await
        .map_err(|e| e.to_string())?;
        match self.reader.recv_within(HANDSHAKE_TIMEOUT).await {
            Some(Ok(Incoming::Sv2(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionSuccess(s),
            )))) => Ok(s),
            Some(Ok(Incoming::Sv2(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionError(e),
            )))) => Err(format!(
                "SetupConnection refused: {}",
                String::from_utf8_lossy(e.error_code.as_bytes())
            )),
            Some(Ok(Incoming::Sv2(other))) => Err(format!(
                "expected SetupConnection.Success, got {}",
                message_name(&other)
            )),
            Some(Ok(Incoming::Ehash(m))) => Err(format!(
                "expected SetupConnection.Success, got {}",
                m.name()
            )),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!(
                "no SetupConnection answer within {HANDSHAKE_TIMEOUT:?}"
            )),
        }
    }

    /// Asks for the ehash extension; whether the peer granted it. A peer
    /// that does not know Extensions Negotiation (it answers something
    /// else, or nothing in time) did not grant it.
    pub async fn negotiate_ehash(&mut self) -> Result<bool, ReadError> {
        let request = ehash_ext_sv2::request_ehash_extension(1).into_owned();
        self.send(AnyMessageOwned::Extensions(
            ExtensionsOwned::ExtensionsNegotiation(ExtensionsNegotiationOwned::RequestExtensions(
                request,
            )),
        ))
        .await
        .map_err(|e| ReadError::Io(e.to_string()))?;
        match self.reader.recv_within(HANDSHAKE_TIMEOUT).await {
            Some(Ok(Incoming::Sv2(AnyMessageOwned::Extensions(
                ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensionsSuccess(s),
                ),
            )))) => Ok(grants_ehash_extension(&s)),
            Some(Ok(_)) | None => Ok(false),
            Some(Err(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::key_utils::Secp256k1SecretKey;
    use tokio::net::TcpListener;

    /// A Noise connection on 127.0.0.1: the client's sending half and the
    /// server's receiving half.
    async fn noise_pair() -> (NoiseWriter, NoiseReader) {
        let public: Secp256k1PublicKey = "9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS"
            .parse()
            .unwrap();
        let secret: Secp256k1SecretKey = "68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm"
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            noise::accept(stream, public, secret, 3600).await.unwrap()
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let (_, client_write) = noise::connect(stream, Some(public)).await.unwrap();
        let (server_read, _server_write) = server.await.unwrap();
        (client_write, server_read)
    }

    /// A message that says `n` (in its endpoint port).
    fn numbered_message(n: u16) -> AnyMessageOwned {
        let peer = SocketAddr::from(([127, 0, 0, 1], n));
        let setup = setup_connection(Protocol::MiningProtocol, 0, peer, &"f".repeat(200), "d");
        AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(setup))
    }

    fn numbered(n: u16) -> Outgoing {
        Outgoing::Sv2(numbered_message(n))
    }

    #[tokio::test]
    async fn queuing_never_waits_on_a_peer_that_reads_nothing_and_keeps_the_order() {
        let (writer, server) = noise_pair().await;
        let writer = Sv2Writer::spawn(writer, 16);
        let mut queued: u16 = 0;
        let refused = loop {
            match writer.send(numbered(queued)) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(
                queued < u16::MAX,
                "the peer's unread messages were never refused"
            );
            // The writer task fills the socket's buffers meanwhile.
            tokio::task::yield_now().await;
        };
        assert_eq!(refused, "the peer read none of the last 16 messages");

        let mut reader = Sv2Reader::spawn(server, "test", 16);
        for n in 0..queued {
            match reader.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::Common(
                    CommonMessagesOwned::SetupConnection(s),
                ))) => assert_eq!(s.endpoint_port, n),
                other => panic!("message {n}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_batch_is_written_up_to_its_close_and_the_close_gives_the_reason() {
        let (mut writer, server) = noise_pair().await;
        let message = |n| Outbound::Message(numbered_message(n));
        let mut batch = vec![message(1), message(2)];
        write_outbound(&mut writer, &mut batch, 7).await.unwrap();
        assert!(batch.is_empty());
        let mut batch = vec![message(3), Outbound::Close("bye".into()), message(4)];
        let closed = write_outbound(&mut writer, &mut batch, 7).await;
        assert_eq!(closed, Err("bye".to_string()));
        let overflow = write_outbound(&mut writer, &mut vec![], 7).await;
        assert_eq!(
            overflow,
            Err("send queue overflow (peer does not read)".into())
        );
        drop(writer);

        let mut reader = Sv2Reader::spawn(server, "test", 16);
        for n in 1..=3 {
            match reader.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::Common(
                    CommonMessagesOwned::SetupConnection(s),
                ))) => assert_eq!(s.endpoint_port, n),
                other => panic!("message {n}: {other:?}"),
            }
        }
        assert!(reader.recv().await.is_err(), "nothing after the close");
    }

    #[tokio::test]
    async fn a_writer_that_failed_says_why_and_closes() {
        let (writer, server) = noise_pair().await;
        let mut writer = Sv2Writer::spawn(writer, 16);
        drop(server);
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    reason = writer.failed() => break reason,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {
                        let _ = writer.send(numbered(1));
                    }
                }
            }
        })
        .await
        .expect("writing to a closed peer fails");
        assert!(failed.contains("write failed"), "{failed}");
        let refused = writer.send(numbered(2)).unwrap_err();
        assert!(refused.contains(&failed), "{refused}");
        writer.close(Duration::from_secs(1)).await;
    }
}

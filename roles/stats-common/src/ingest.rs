//! The publisher listener: plain TCP, one stats-sv2 frame after another,
//! `PublisherHello` first. A connection that breaks the protocol is closed
//! with a logged reason; other connections are not affected.

use std::net::SocketAddr;

use roles_common::limits::ConnectionLimits;
use roles_common::CancellationToken;
use stats_sv2::{MessageSet, PublisherHello, StatsMessage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// SV2 frame header: extension type u16, message type u8, length u24.
const HEADER_LEN: usize = 6;
/// Publishers connected at once at most (a pool or a translator each).
const MAX_PUBLISHERS: usize = 64;
/// Stats messages are a few hundred bytes at most; anything far larger is
/// not a stats publisher, and must not make the service allocate 16 MiB.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What the ingest side hands to the service, per connection id.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    Hello(u64, PublisherHello),
    Message(u64, StatsMessage),
    /// A connection that had said hello is gone.
    Closed(u64),
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("first message must be PublisherHello, got {0}")]
    NoHello(&'static str),
    #[error("publisher role {got} is not served here (expected {expected})")]
    WrongRole { expected: u8, got: u8 },
    #[error("a second PublisherHello on the same connection")]
    RepeatedHello,
    #[error("frame payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] stats_sv2::DecodeError),
}

/// The protocol of one publisher connection, without IO.
#[derive(Debug)]
pub struct Session {
    expected_role: u8,
    greeted: bool,
}

impl Session {
    pub fn new(expected_role: u8) -> Session {
        Session {
            expected_role,
            greeted: false,
        }
    }

    /// Whether the publisher has said hello (so its closing matters).
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// Takes one whole frame (header and payload) and says what it means.
    pub fn on_frame(&mut self, frame: &mut [u8]) -> Result<StatsMessage, ProtocolError> {
        let msg = StatsMessage::decode_frame(frame)?;
        match (&msg, self.greeted) {
            (StatsMessage::PublisherHello(hello), false) => {
                if hello.role != self.expected_role {
                    return Err(ProtocolError::WrongRole {
                        expected: self.expected_role,
                        got: hello.role,
                    });
                }
                self.greeted = true;
            }
            (StatsMessage::PublisherHello(_), true) => return Err(ProtocolError::RepeatedHello),
            (other, false) => return Err(ProtocolError::NoHello(other.name())),
            (_, true) => {}
        }
        Ok(msg)
    }
}

/// Reads one whole frame, or `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<Vec<u8>, ProtocolError>>> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut header[1..]).await?;
    let len = u32::from_le_bytes([header[3], header[4], header[5], 0]) as usize;
    if len > MAX_PAYLOAD {
        return Ok(Some(Err(ProtocolError::TooLarge(len))));
    }
    let mut frame = vec![0u8; HEADER_LEN + len];
    frame[..HEADER_LEN].copy_from_slice(&header);
    reader.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(Some(Ok(frame)))
}

/// Accepts publishers until `shutdown` and forwards what they send; a
/// connection's `Closed` follows its `Hello`.
pub async fn serve(
    listener: TcpListener,
    expected_role: u8,
    out: mpsc::Sender<Ingested>,
    shutdown: CancellationToken,
) {
    roles_common::accept_loop(
        "stats ingest",
        listener,
        ConnectionLimits::new(MAX_PUBLISHERS, MAX_PUBLISHERS),
        shutdown.clone(),
        move |id, stream, peer| {
            let out = out.clone();
            let shutdown = shutdown.clone();
            async move {
                let greeted = tokio::select! {
                    // The service is stopping: nobody to tell.
                    _ = shutdown.cancelled() => false,
                    greeted = connection(id, stream, peer, expected_role, &out) => greeted,
                };
                if greeted {
                    let _ = out.send(Ingested::Closed(id)).await;
                }
            }
        },
    )
    .await;
}

async fn connection(
    id: u64,
    mut stream: TcpStream,
    peer: SocketAddr,
    expected_role: u8,
    out: &mpsc::Sender<Ingested>,
) -> bool {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(expected_role);
    loop {
        let mut frame = match read_frame(&mut stream).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                tracing::warn!("stats publisher {peer}: closing: {e}");
                return session.greeted();
            }
            Ok(None) => {
                tracing::info!("stats publisher {peer} disconnected");
                return session.greeted();
            }
            Err(e) => {
                tracing::info!("stats publisher {peer}: connection lost: {e}");
                return session.greeted();
            }
        };
        let event = match session.on_frame(&mut frame) {
            Ok(StatsMessage::PublisherHello(hello)) => {
                tracing::info!(
                    "stats publisher {peer} connected (started at {}, {} events dropped)",
                    hello.started_at,
                    hello.dropped
                );
                Ingested::Hello(id, hello)
            }
            Ok(msg) => Ingested::Message(id, msg),
            Err(e) => {
                tracing::warn!("stats publisher {peer}: closing: {e}");
                return session.greeted();
            }
        };
        if out.send(event).await.is_err() {
            return session.greeted();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats_sv2::{role, WalletBalance};

    fn frame(msg: impl Into<StatsMessage>) -> Vec<u8> {
        msg.into().to_frame_bytes().unwrap()
    }

    fn hello(role: u8) -> Vec<u8> {
        frame(PublisherHello {
            role,
            started_at: 1,
            dropped: 0,
            timestamp: 2,
        })
    }

    fn balance() -> Vec<u8> {
        frame(WalletBalance {
            balance: 5,
            timestamp: 3,
        })
    }

    #[test]
    fn hello_first_then_messages() {
        let mut s = Session::new(role::TRANSLATOR);
        assert!(matches!(
            s.on_frame(&mut hello(role::TRANSLATOR)),
            Ok(StatsMessage::PublisherHello(_))
        ));
        assert!(s.greeted());
        assert!(matches!(
            s.on_frame(&mut balance()),
            Ok(StatsMessage::WalletBalance(_))
        ));
        assert_eq!(
            s.on_frame(&mut hello(role::TRANSLATOR)),
            Err(ProtocolError::RepeatedHello)
        );
    }

    #[test]
    fn no_hello_or_the_wrong_role_is_refused() {
        let mut s = Session::new(role::TRANSLATOR);
        assert_eq!(
            s.on_frame(&mut balance()),
            Err(ProtocolError::NoHello("WalletBalance"))
        );
        let mut s = Session::new(role::TRANSLATOR);
        assert_eq!(
            s.on_frame(&mut hello(role::POOL)),
            Err(ProtocolError::WrongRole {
                expected: role::TRANSLATOR,
                got: role::POOL
            })
        );
        assert!(!s.greeted());
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut s = Session::new(role::POOL);
        let mut bad = hello(role::POOL);
        bad[2] = 0xEE; // unknown message type
        assert!(matches!(
            s.on_frame(&mut bad),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_ones_refused() {
        let mut bytes = hello(role::POOL);
        bytes.extend(balance());
        let mut reader = &bytes[..];
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            hello(role::POOL)
        );
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            balance()
        );
        assert!(read_frame(&mut reader).await.unwrap().is_none());

        let huge = [0u8, 0, 1, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            read_frame(&mut &huge[..]).await.unwrap().unwrap(),
            Err(ProtocolError::TooLarge(0xFF_FFFF))
        );
        // Cut inside a frame: an IO error, not a panic or a silent end.
        let cut = &hello(role::POOL)[..8];
        assert!(read_frame(&mut &cut[..]).await.is_err());
    }
}

//! The test side of an SV2 connection over Noise, on the workspace's one
//! implementation ([`roles_common::sv2`]): it panics where a test would
//! only unwrap, and bounds every wait by [`WAIT`].

use std::net::{IpAddr, SocketAddr};

use roles_common::sv2::{self, ConnectError, Sv2Connection};
use stratum_core::binary_sv2::Str0255Owned;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionSuccessOwned};
use stratum_core::framing_sv2::framing::SerializedFrame;
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned};
use tokio::net::{TcpSocket, TcpStream};

pub use roles_common::sv2::{Incoming, ReadError};

use crate::keys::{public_key, WAIT};

/// How many received messages may wait unread (a load bench receives many).
const QUEUE: usize = 1024;

/// A Noise connection whose reader is a task, so receiving can time out safely.
pub struct Sv2Conn {
    conn: Sv2Connection,
}

impl Sv2Conn {
    pub async fn connect(addr: SocketAddr, authority_key: &str) -> Result<Sv2Conn, ConnectError> {
        let conn =
            sv2::connect(&addr.to_string(), public_key(authority_key), "peer", QUEUE).await?;
        Ok(Sv2Conn { conn })
    }

    /// Connects from `local` (any 127.0.0.0/8 address is this machine): a
    /// test can play peers at different IP addresses.
    pub async fn connect_from(
        local: IpAddr,
        addr: SocketAddr,
        authority_key: &str,
    ) -> Result<Sv2Conn, ConnectError> {
        let stream = tcp_from(local, addr).await.map_err(ConnectError::Tcp)?;
        Sv2Conn::over(stream, authority_key).await
    }

    /// The Noise handshake over a TCP connection the test made.
    pub async fn over(stream: TcpStream, authority_key: &str) -> Result<Sv2Conn, ConnectError> {
        let conn = sv2::handshake(stream, public_key(authority_key), "peer", QUEUE).await?;
        Ok(Sv2Conn { conn })
    }

    pub async fn send(&mut self, msg: AnyMessageOwned) {
        self.try_send(msg).await.expect("send");
    }

    /// Sends; Err once the connection is gone.
    pub async fn try_send(&mut self, msg: AnyMessageOwned) -> Result<(), String> {
        self.conn.send(msg).await.map_err(|e| e.to_string())
    }

    /// Sends an ehash extension message.
    pub async fn send_ehash(&mut self, msg: ehash_ext_sv2::EhashMessage) {
        sv2::send_ehash(&mut self.conn.writer, msg)
            .await
            .expect("send");
    }

    /// Sends a plaintext frame as given (header and payload), encrypted.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let frame = SerializedFrame::from_bytes(bytes).map_err(|e| format!("{e:?}"))?;
        self.conn
            .writer
            .write_frame(frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// SetupConnection for `protocol`; panics unless it succeeds.
    pub async fn setup(&mut self, protocol: Protocol, flags: u32) -> SetupConnectionSuccessOwned {
        match self.try_setup(protocol, flags).await {
            Ok(success) => success,
            Err(e) => panic!("{e}"),
        }
    }

    /// SetupConnection for `protocol`: its success, or why it failed.
    pub async fn try_setup(
        &mut self,
        protocol: Protocol,
        flags: u32,
    ) -> Result<SetupConnectionSuccessOwned, String> {
        self.conn
            .setup(setup_connection_owned(protocol, flags))
            .await
    }

    /// The next message, or Err when the connection ended.
    pub async fn recv(&mut self) -> Result<Incoming, ReadError> {
        match self.conn.reader.recv_within(WAIT).await {
            Some(item) => item,
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// Waits until the peer closes the connection; panics if it sends a
    /// message or stays open. Returns why the stream ended.
    pub async fn expect_closed(&mut self) -> ReadError {
        match self.recv().await {
            Err(e) => e,
            Ok(m) => panic!("expected the connection to close, got {m:?}"),
        }
    }
}

/// A TCP connection to `addr` from the address `local` (port chosen by the system).
pub async fn tcp_from(local: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

pub fn str0255(s: &str) -> Str0255Owned {
    s.to_string().try_into().expect("short string")
}

/// SetupConnection as the Hashpool clients send it, from 127.0.0.1.
pub fn setup_connection(protocol: Protocol, flags: u32) -> AnyMessageOwned {
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(
        setup_connection_owned(protocol, flags),
    ))
}

fn setup_connection_owned(
    protocol: Protocol,
    flags: u32,
) -> stratum_core::common_messages_sv2::SetupConnectionOwned {
    let from = SocketAddr::from(([127, 0, 0, 1], 0));
    sv2::setup_connection(protocol, flags, from, "", "test")
}

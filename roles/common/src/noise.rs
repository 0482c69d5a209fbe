//! SV2 over Noise on a TCP stream, with as few system calls as the traffic
//! allows: the reader takes every byte that has arrived in one read and
//! decodes the whole frames among them; the writer encrypts the frames
//! queued together into one buffer and sends them with one write.
//!
//! stratum-apps' `NoiseTcpStream` reads each frame's header and payload
//! with two reads (and a third that finds nothing) and sends each frame on
//! its own; at tens of thousands of shares a second those system calls
//! took a third of the pool's CPU. The handshake, the framing and the
//! encryption are codec_sv2's and noise_sv2's; only the IO is here, and
//! the bytes on the wire are the same.

use std::time::Duration;

use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::Error;
use stratum_apps::stratum_core::codec_sv2::{
    Decoded, Decrypted, EncodableFrame, ExpectsHandshakeMessage, Handshake, HandshakeMessage,
    InitiatorSent, NoiseDecoder, NoiseEncoder, SerializedFrame, Transport, TransportDecryptState,
    TransportEncryptState,
};
use stratum_apps::stratum_core::noise_sv2::{
    AeadError, Initiator, Responder, ELLSWIFT_ENCODING_SIZE,
    INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long each handshake message may take to arrive.
const HANDSHAKE_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for one read on a quiet connection: an idle connection holds no
/// more than this.
const QUIET_READ: usize = 1024;
/// Room for one read after a read that filled its room: more was waiting.
const BUSY_READ: usize = 64 * 1024;
/// The writer keeps a buffer this large between writes, no larger.
const KEPT_WRITE_BUFFER: usize = 4 * 1024;
/// A peer that vanished (its host down, the path cut without a reset) ends
/// the connection within about a minute, not the kernel's two hours: probes
/// after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...this far apart...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// ...and data sent but unacknowledged this long ends it too.
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(60);
/// The most bytes one frame of the mining, template distribution (but
/// RequestTransactionData.Success) or mint quote protocols takes on the
/// wire: their largest message, SetCustomMiningJob, is under 150 KB.
/// Every accepted connection (its peer a stranger) takes frames up to this
/// long, so that it cannot make the listener buffer the 16 MiB SV2 allows;
/// a listener whose protocol needs more raises it
/// ([`NoiseReader::limit_frames`]).
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Why no frame was read. The stream has ended after any of them.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("closed by peer")]
    Closed,
    #[error("a frame longer than the {limit} bytes this connection takes")]
    TooLong { limit: usize },
    #[error("{0}")]
    Broken(Error),
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        match e {
            Error::SocketClosed => ReadError::Closed,
            other => ReadError::Broken(other),
        }
    }
}

/// Connects as the Noise initiator over `stream`; with `authority`, the
/// responder must hold a certificate signed by that key.
pub async fn connect(
    stream: TcpStream,
    authority: Option<Secp256k1PublicKey>,
) -> Result<(NoiseReader, NoiseWriter), Error> {
    let initiator = match authority {
        Some(key) => Initiator::from_raw_k(key.into_bytes()),
        None => Initiator::without_pk(),
    }
    .map_err(|_| Error::InvalidKey)?;
    keep_alive(&stream);
    let (mut socket_in, mut socket_out) = stream.into_split();
    let mut decoder = NoiseDecoder::new();
    let mut encoder = NoiseEncoder::new();
    let (first, handshake) = Handshake::initiator(initiator).step_0()?;
    write_all(&mut socket_out, encoder.encode_handshake(first).as_ref()).await?;
    let second = handshake_message::<InitiatorSent>(&mut socket_in, &mut decoder).await?;
    let payload: [u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE] = second
        .payload()
        .try_into()
        .map_err(|_| Error::HandshakeRemoteInvalidMessage)?;
    let transport = handshake.step_2(payload)?;
    Ok(halves(socket_in, socket_out, decoder, encoder, transport))
}

/// Accepts `stream` as the Noise responder, with a certificate of
/// `cert_validity_secs` signed by the authority key pair; its reader takes
/// frames up to [`MAX_FRAME_LEN`].
pub async fn accept(
    stream: TcpStream,
    public: Secp256k1PublicKey,
    secret: Secp256k1SecretKey,
    cert_validity_secs: u64,
) -> Result<(NoiseReader, NoiseWriter), Error> {
    let responder = Responder::from_authority_kp(
        &public.into_bytes(),
        &secret.into_bytes(),
        Duration::from_secs(cert_validity_secs),
    )
    .map_err(|_| Error::InvalidKey)?;
    keep_alive(&stream);
    let (mut socket_in, mut socket_out) = stream.into_split();
    let mut decoder = NoiseDecoder::new();
    let mut encoder = NoiseEncoder::new();
    let first = handshake_message::<Responder>(&mut socket_in, &mut decoder).await?;
    let payload: [u8; ELLSWIFT_ENCODING_SIZE] = first
        .payload()
        .try_into()
        .map_err(|_| Error::HandshakeRemoteInvalidMessage)?;
    let (second, transport) = Handshake::responder(responder).step_1(payload)?;
    write_all(&mut socket_out, encoder.encode_handshake(second).as_ref()).await?;
    let (mut reader, writer) = halves(socket_in, socket_out, decoder, encoder, transport);
    reader.limit_frames(MAX_FRAME_LEN);
    Ok((reader, writer))
}

/// Sets TCP keepalive and the unacknowledged-data timeout on `stream`: a
/// link that only reads (a template provider's) would otherwise wait on a
/// dead peer for ever. Best effort: a socket that refuses keeps working.
fn keep_alive(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_TIMEOUT));
}

/// Reads exactly one handshake message: its bytes are all a handshake
/// holds, so nothing of the first transport frames is read here.
async fn handshake_message<R: ExpectsHandshakeMessage>(
    socket: &mut OwnedReadHalf,
    decoder: &mut NoiseDecoder,
) -> Result<HandshakeMessage, Error> {
    loop {
        tokio::time::timeout(
            HANDSHAKE_READ_TIMEOUT,
            socket.read_exact(decoder.writable()),
        )
        .await
        .map_err(|_| Error::HandshakeTimeout)?
        .map_err(|_| Error::SocketClosed)?;
        if let Decoded::Frame(message) = decoder.next_handshake_frame::<R>()? {
            return Ok(message);
        }
    }
}

async fn write_all(socket: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), Error> {
    socket
        .write_all(bytes)
        .await
        .map_err(|_| Error::SocketClosed)
}

fn halves(
    socket_in: OwnedReadHalf,
    socket_out: OwnedWriteHalf,
    decoder: NoiseDecoder,
    encoder: NoiseEncoder,
    transport: Transport,
) -> (NoiseReader, NoiseWriter) {
    let (encrypt, decrypt) = transport.split();
    (
        NoiseReader {
            socket: socket_in,
            decoder,
            state: Some(decrypt),
            bytes: Vec::new(),
            consumed: 0,
            busy: false,
            frame_len: 0,
            max_frame_len: usize::MAX,
        },
        NoiseWriter {
            socket: socket_out,
            encoder,
            state: encrypt,
            queued: Vec::new(),
        },
    )
}

/// The receiving half: decrypts frames out of whatever has arrived.
pub struct NoiseReader {
    socket: OwnedReadHalf,
    decoder: NoiseDecoder,
    /// `None` once decryption failed: the stream is broken for good.
    state: Option<TransportDecryptState>,
    /// Bytes read and not yet decoded, from `consumed` on.
    bytes: Vec<u8>,
    consumed: usize,
    /// The last read filled all its room.
    busy: bool,
    /// Bytes of the frame being decoded so far, as they came on the wire.
    frame_len: usize,
    max_frame_len: usize,
}

impl NoiseReader {
    /// Frames longer than `max` bytes on the wire end the stream with
    /// [`ReadError::TooLong`] (none by default).
    pub fn limit_frames(&mut self, max: usize) {
        self.max_frame_len = max;
    }

    /// The next frame. Not cancellation safe: a frame half read when the
    /// future is dropped is lost, and the stream with it.
    pub async fn read_frame(&mut self) -> Result<SerializedFrame, ReadError> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(frame);
            }
            self.read_more().await?;
        }
    }

    /// The next whole frame among the bytes already read, if there is one.
    fn next_buffered(&mut self) -> Result<Option<SerializedFrame>, ReadError> {
        loop {
            let wanted = self.decoder.writable_len();
            self.frame_len += wanted;
            if self.frame_len > self.max_frame_len {
                self.state = None;
                return Err(ReadError::TooLong {
                    limit: self.max_frame_len,
                });
            }
            let unread = &self.bytes[self.consumed..];
            if unread.len() < wanted {
                self.frame_len -= wanted;
                return Ok(None);
            }
            self.decoder.writable().copy_from_slice(&unread[..wanted]);
            self.consumed += wanted;
            let state = self.state.take().ok_or(Error::CodecError(
                stratum_apps::stratum_core::codec_sv2::Error::AeadError(AeadError),
            ))?;
            match self
                .decoder
                .next_transport_frame(state)
                .map_err(Error::from)?
            {
                Decrypted::Frame(frame, state) => {
                    self.state = Some(state);
                    self.frame_len = 0;
                    return Ok(Some(frame));
                }
                Decrypted::Incomplete(_, state) => self.state = Some(state),
            }
        }
    }

    /// One read of whatever has arrived, after the bytes not decoded yet.
    async fn read_more(&mut self) -> Result<(), ReadError> {
        self.bytes.drain(..self.consumed);
        self.consumed = 0;
        let room = if self.busy { BUSY_READ } else { QUIET_READ };
        if self.bytes.is_empty() && self.bytes.capacity() > room {
            // Quiet again: give the large buffer back.
            self.bytes = Vec::new();
        }
        self.bytes.reserve(room);
        let spare = self.bytes.capacity() - self.bytes.len();
        let read = self
            .socket
            .read_buf(&mut self.bytes)
            .await
            .map_err(|_| ReadError::Closed)?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        self.busy = read == spare;
        Ok(())
    }
}

/// The sending half: frames queued together leave in one write.
pub struct NoiseWriter {
    socket: OwnedWriteHalf,
    encoder: NoiseEncoder,
    state: TransportEncryptState,
    /// Encrypted frames not written yet.
    queued: Vec<u8>,
}

impl NoiseWriter {
    /// Encrypts `frame` after the frames queued before it; [`Self::flush`]
    /// sends them.
    pub fn queue<F: EncodableFrame>(&mut self, frame: F) -> Result<(), Error> {
        let encrypted = self.encoder.encode_transport(frame, &mut self.state)?;
        self.queued.extend_from_slice(encrypted.as_ref());
        Ok(())
    }

    /// Writes every queued frame. Not cancellation safe: a write cut short
    /// leaves the peer half a frame.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let written = write_all(&mut self.socket, &self.queued).await;
        self.queued.clear();
        if self.queued.capacity() > KEPT_WRITE_BUFFER {
            // A burst's buffer is not kept by a connection going quiet.
            self.queued = Vec::new();
        }
        written
    }

    /// Encrypts and writes one frame (and any queued before it).
    pub async fn write_frame<F: EncodableFrame>(&mut self, frame: F) -> Result<(), Error> {
        self.queue(frame)?;
        self.flush().await
    }

    /// Closes the sending side of the socket.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.socket
            .shutdown()
            .await
            .map_err(|_| Error::SocketClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::network_helpers::noise_stream::NoiseTcpStream;
    use stratum_apps::network_helpers::{accept_noise_connection, connect_with_noise};
    use stratum_apps::stratum_core::framing_sv2::framing::SerializedFrame as RawFrame;
    use tokio::net::TcpListener;

    fn public() -> Secp256k1PublicKey {
        "9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS"
            .parse()
            .unwrap()
    }

    fn secret() -> Secp256k1SecretKey {
        "68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm"
            .parse()
            .unwrap()
    }

    /// A frame of message type `n % 256` whose payload is `len` bytes of `n`.
    fn frame(n: u8, len: usize) -> RawFrame<Vec<u8>> {
        let mut bytes = vec![0, 0, n];
        bytes.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        bytes.extend(std::iter::repeat_n(n, len));
        RawFrame::from_bytes(bytes).unwrap()
    }

    fn check(frame: &mut SerializedFrame, n: u8, len: usize) {
        let header = frame.header();
        assert_eq!((header.msg_type(), header.payload_length()), (n, len));
        assert!(frame.payload().iter().all(|&b| b == n));
    }

    async fn bind() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    async fn pair() -> ((NoiseReader, NoiseWriter), (NoiseReader, NoiseWriter)) {
        let (listener, address) = bind().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, public(), secret(), 3600).await.unwrap()
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let client = connect(stream, Some(public())).await.unwrap();
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn frames_queued_together_arrive_whole_and_in_order_whatever_their_size() {
        let ((_, mut writer), (mut reader, _)) = pair().await;
        // Small ones, one larger than a quiet read, one spanning several
        // Noise chunks: split across reads every way.
        let sizes = [0, 1, 40, 3_000, 70_000, 5, 200_000, 12];
        for (n, &len) in sizes.iter().enumerate() {
            writer.queue(frame(n as u8, len)).unwrap();
        }
        let writing = tokio::spawn(async move {
            writer.flush().await.unwrap();
            writer
        });
        for (n, &len) in sizes.iter().enumerate() {
            check(&mut reader.read_frame().await.unwrap(), n as u8, len);
        }
        let mut writer = writing.await.unwrap();
        writer.write_frame(frame(99, 7)).await.unwrap();
        check(&mut reader.read_frame().await.unwrap(), 99, 7);
    }

    #[tokio::test]
    async fn a_frame_arriving_a_byte_at_a_time_is_read_whole() {
        // A relay passes the client's bytes to the server one at a time.
        let (listener, address) = bind().await;
        let (relay_listener, relay_address) = bind().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, public(), secret(), 3600).await.unwrap()
        });
        tokio::spawn(async move {
            let (mut client, _) = relay_listener.accept().await.unwrap();
            let mut server = TcpStream::connect(address).await.unwrap();
            server.set_nodelay(true).unwrap();
            let (mut from_client, mut to_client) = client.split();
            let (mut from_server, mut to_server) = server.split();
            let up = async {
                let mut byte = [0u8; 1];
                while from_client.read_exact(&mut byte).await.is_ok() {
                    to_server.write_all(&byte).await.unwrap();
                    tokio::task::yield_now().await;
                }
            };
            let down = tokio::io::copy(&mut from_server, &mut to_client);
            let _ = tokio::join!(up, down);
        });
        let stream = TcpStream::connect(relay_address).await.unwrap();
        let (_, mut writer) = connect(stream, Some(public())).await.unwrap();
        let (mut reader, _) = server.await.unwrap();
        writer.queue(frame(1, 300)).unwrap();
        writer.queue(frame(2, 0)).unwrap();
        writer.flush().await.unwrap();
        check(&mut reader.read_frame().await.unwrap(), 1, 300);
        check(&mut reader.read_frame().await.unwrap(), 2, 0);
    }

    #[tokio::test]
    async fn speaks_the_same_wire_as_stratum_apps_both_ways() {
        // stratum-apps' responder, this initiator.
        let (listener, address) = bind().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept_noise_connection(stream, public(), secret(), 3600)
                .await
                .unwrap()
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let (mut reader, mut writer) = connect(stream, Some(public())).await.unwrap();
        let (mut their_reader, mut their_writer) = server.await.unwrap().into_split();
        writer.queue(frame(1, 10)).unwrap();
        writer.queue(frame(2, 20_000)).unwrap();
        writer.flush().await.unwrap();
        check(&mut their_reader.read_frame().await.unwrap(), 1, 10);
        check(&mut their_reader.read_frame().await.unwrap(), 2, 20_000);
        their_writer.write_frame(frame(3, 30)).await.unwrap();
        check(&mut reader.read_frame().await.unwrap(), 3, 30);

        // This responder, stratum-apps' initiator.
        let (listener, address) = bind().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, public(), secret(), 3600).await.unwrap()
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let client: NoiseTcpStream = connect_with_noise(stream, Some(public())).await.unwrap();
        let (mut their_reader, mut their_writer) = client.into_split();
        let (mut reader, mut writer) = server.await.unwrap();
        their_writer.write_frame(frame(4, 40)).await.unwrap();
        their_writer.write_frame(frame(5, 0)).await.unwrap();
        check(&mut reader.read_frame().await.unwrap(), 4, 40);
        check(&mut reader.read_frame().await.unwrap(), 5, 0);
        writer.write_frame(frame(6, 60)).await.unwrap();
        check(&mut their_reader.read_frame().await.unwrap(), 6, 60);
    }

    #[tokio::test]
    async fn a_wrong_authority_key_fails_the_handshake() {
        let (listener, address) = bind().await;
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = accept(stream, public(), secret(), 3600).await;
        });
        let other: Secp256k1PublicKey = "9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg"
            .parse()
            .unwrap();
        let stream = TcpStream::connect(address).await.unwrap();
        assert!(connect(stream, Some(other)).await.is_err());
    }

    #[tokio::test]
    async fn connections_probe_a_silent_peer_and_give_up_on_unacknowledged_data() {
        let (listener, address) = bind().await;
        let stream = TcpStream::connect(address).await.unwrap();
        drop(listener);
        keep_alive(&stream);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(UNACKNOWLEDGED_TIMEOUT)
        );
    }

    #[tokio::test]
    async fn a_closed_peer_ends_the_reader_with_socket_closed() {
        let ((_, writer), (mut reader, _)) = pair().await;
        drop(writer);
        assert!(matches!(reader.read_frame().await, Err(ReadError::Closed)));
    }

    #[tokio::test]
    async fn an_accepted_connection_ends_at_a_frame_longer_than_the_limit() {
        let ((_, mut writer), (mut reader, _)) = pair().await;
        // On the wire: the encrypted header, the payload and a MAC per chunk.
        let wire_len = |len: usize| 22 + len + 16 * len.div_ceil(65_519);
        let fits = (0..MAX_FRAME_LEN)
            .rev()
            .find(|&len| wire_len(len) <= MAX_FRAME_LEN)
            .unwrap();
        writer.write_frame(frame(1, fits)).await.unwrap();
        writer.write_frame(frame(2, fits + 1)).await.unwrap();
        check(&mut reader.read_frame().await.unwrap(), 1, fits);
        assert!(matches!(
            reader.read_frame().await,
            Err(ReadError::TooLong {
                limit: MAX_FRAME_LEN
            })
        ));
    }
}

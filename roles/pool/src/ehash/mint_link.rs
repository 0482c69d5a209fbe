//! The pool's link to the mint: forwards quote requests, asks for stats
//! periodically, reports answers; reconnects with backoff and says so in
//! the logs. Two transports: a Noise connection to one mint (this module:
//! it pins the mint's authority key and proves the pool's identity), or
//! Redis Streams read by a mint cluster (`redis_link`).
//!
//! The link keeps no request of its own: on every `Up` the pool resends
//! everything the mint still owes (the mint answers a replayed share with
//! the same quote), so nothing is lost while the link is down.

use std::time::Duration;

use ehash::wire::MessageSet;
use mint_quote_sv2::client::{ClientHandshake, HandshakeStep};
use mint_quote_sv2::{
    MintQuoteMessage, MintQuoteRequestOwned, MintStatsRequest, MintStatsResponse,
};
use roles_common::backoff::Backoff;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_core::bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct MintLinkConfig {
    pub transport: Transport,
    /// The mint's authority key, pinned.
    pub authority_public_key: Secp256k1PublicKey,
    /// The pool's identity key; its public half is on the mint's allow-list.
    pub identity_secret_key: Secp256k1SecretKey,
    pub unit_bits: u8,
    pub stats_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// host:port of the mint's pool link.
    Noise { address: String },
    /// A Redis shared with a mint cluster, and the deployment's key prefix.
    Redis { url: String, prefix: String },
}

/// What the link reports to the pool.
#[derive(Debug, Clone, PartialEq)]
pub enum MintEvent {
    /// Authenticated: resend everything the mint still owes.
    Up,
    /// The link is down (it reconnects by itself).
    Down {
        reason: String,
    },
    /// A `MintQuoteResponse` or `MintQuoteError`.
    Answer(MintQuoteMessage),
    Stats(MintStatsResponse),
}

/// Sends quote requests to the mint while the link is up.
#[derive(Clone)]
pub struct MintLink {
    requests: mpsc::Sender<MintQuoteRequestOwned>,
}

impl MintLink {
    /// Queues a request; requests queued while the link is down are dropped
    /// (the pool resends what is owed on `Up`). False if the link task stopped.
    pub async fn send(&self, request: MintQuoteRequestOwned) -> bool {
        self.requests.send(request).await.is_ok()
    }

    /// Starts the link task. Events arrive on the returned receiver.
    pub fn spawn(
        config: MintLinkConfig,
        shutdown: CancellationToken,
    ) -> (MintLink, mpsc::UnboundedReceiver<MintEvent>) {
        let (requests, queue) = mpsc::channel(1024);
        // Unbounded so the link never waits on the pool: the pool may be busy
        // sending requests into the bounded queue above, and answers are
        // bounded by the requests in flight.
        let (events, events_rx) = mpsc::unbounded_channel();
        match config.transport.clone() {
            Transport::Noise { address } => {
                tokio::spawn(run(address, config, queue, events, shutdown));
            }
            Transport::Redis { url, prefix } => {
                tokio::spawn(super::redis_link::run(
                    url, prefix, config, queue, events, shutdown,
                ));
            }
        }
        (MintLink { requests }, events_rx)
    }
}

async fn run(
    address: String,
    config: MintLinkConfig,
    mut queue: mpsc::Receiver<MintQuoteRequestOwned>,
    events: mpsc::UnboundedSender<MintEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut up = None;
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = connect(&address, &config) => c,
        };
        let reason = match connected {
            Ok((reader, writer)) => {
                info!(
                    "mint link up: {address} (authenticated, unit_bits {})",
                    config.unit_bits
                );
                up = Some(std::time::Instant::now());
                if events.send(MintEvent::Up).is_err() {
                    return;
                }
                let reason = serve(&config, reader, writer, &mut queue, &events, &shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
                reason
            }
            Err(reason) => reason,
        };
        let down = Down {
            link: &address,
            reason,
            up,
        };
        if !down
            .wait(&mut backoff, &mut queue, &events, &shutdown)
            .await
        {
            return;
        }
    }
}

/// A connection of either transport that ended.
pub(super) struct Down<'a> {
    /// The link, as the logs name it.
    pub link: &'a str,
    pub reason: String,
    /// When it came up, if it did.
    pub up: Option<std::time::Instant>,
}

impl Down<'_> {
    /// Says so (in the log, at growing intervals, and to the pool), drops
    /// the requests queued meanwhile (the pool resends what is owed on the
    /// next `Up`) and waits out the backoff. False once the link must stop.
    pub async fn wait(
        self,
        backoff: &mut Backoff,
        queue: &mut mpsc::Receiver<MintQuoteRequestOwned>,
        events: &mpsc::UnboundedSender<MintEvent>,
        shutdown: &CancellationToken,
    ) -> bool {
        let (delay, attempt) = backoff.after(self.up);
        if attempt == 1 || attempt.is_power_of_two() {
            warn!(
                "mint link down ({}): {}; retrying in {delay:?} (attempt {attempt})",
                self.link, self.reason
            );
        }
        if events
            .send(MintEvent::Down {
                reason: self.reason,
            })
            .is_err()
        {
            return false;
        }
        while queue.try_recv().is_ok() {}
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

async fn connect(
    address: &str,
    config: &MintLinkConfig,
) -> Result<(NoiseTcpReadHalf, NoiseTcpWriteHalf), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
    // Small frames, each awaited: not held for the mint's delayed ACK.
    let _ = stream.set_nodelay(true);
    let noise = connect_with_noise(stream, Some(config.authority_public_key))
        .await
        .map_err(|e| {
            format!("Noise handshake failed (is authority_public_key the mint's?): {e}")
        })?;
    let (mut reader, mut writer) = noise.into_split();

    let mint_key = XOnlyPublicKey::from_slice(&config.authority_public_key.into_bytes())
        .map_err(|e| format!("mint key: {e}"))?;
    let pool_secret = SecretKey::from_slice(&config.identity_secret_key.into_bytes())
        .map_err(|e| format!("pool identity key: {e}"))?;
    let mut handshake = ClientHandshake::new(mint_key, pool_secret, config.unit_bits);
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "0"));
    write(
        &mut writer,
        handshake.setup_connection(host, port.parse().unwrap_or(0)),
    )
    .await?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let message = read(&mut reader).await?;
            match handshake.on_message(message).map_err(|e| e.to_string())? {
                HandshakeStep::Send(m) => write(&mut writer, *m).await?,
                HandshakeStep::Wait => {}
                HandshakeStep::Done => return Ok::<(), String>(()),
            }
        }
    })
    .await
    .map_err(|_| "no answer to the handshake".to_string())??;
    Ok((reader, writer))
}

/// Runs one authenticated connection until it fails; returns why.
async fn serve(
    config: &MintLinkConfig,
    mut reader: NoiseTcpReadHalf,
    writer: NoiseTcpWriteHalf,
    queue: &mut mpsc::Receiver<MintQuoteRequestOwned>,
    events: &mpsc::UnboundedSender<MintEvent>,
    shutdown: &CancellationToken,
) -> String {
    // Reads and writes run apart so a slow write never delays reading answers.
    let (outgoing, outgoing_rx) = mpsc::channel::<MintQuoteMessage>(1024);
    let mut writer_task = tokio::spawn(write_all(writer, outgoing_rx));
    let mut stats_timer = tokio::time::interval(config.stats_interval);
    let mut request_id = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return "shutting down".into(),
            r = &mut writer_task => return r.unwrap_or_else(|e| e.to_string()),
            request = queue.recv() => match request {
                Some(r) => { let _ = outgoing.send(MintQuoteMessage::MintQuoteRequest(r)).await; }
                None => return "the pool stopped".into(),
            },
            _ = stats_timer.tick() => {
                request_id = request_id.wrapping_add(1);
                let _ = outgoing.send(MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id })).await;
            }
            message = read(&mut reader) => {
                let event = match message {
                    Ok(MintQuoteMessage::MintStatsResponse(stats)) => MintEvent::Stats(stats),
                    Ok(m @ (MintQuoteMessage::MintQuoteResponse(_) | MintQuoteMessage::MintQuoteError(_))) => MintEvent::Answer(m),
                    Ok(other) => return format!("unexpected {} from the mint", other.name()),
                    Err(reason) => return reason,
                };
                if events.send(event).is_err() {
                    return "the pool stopped".into();
                }
            }
        }
    }
}

async fn write_all(
    mut writer: NoiseTcpWriteHalf,
    mut outgoing: mpsc::Receiver<MintQuoteMessage>,
) -> String {
    while let Some(message) = outgoing.recv().await {
        if let Err(e) = write(&mut writer, message).await {
            return e;
        }
    }
    "writer closed".into()
}

async fn write(writer: &mut NoiseTcpWriteHalf, message: MintQuoteMessage) -> Result<(), String> {
    let name = message.name();
    let frame = message.into_frame().map_err(|e| e.to_string())?;
    writer
        .write_frame(frame)
        .await
        .map_err(|e| format!("writing {name} failed: {e}"))
}

async fn read(reader: &mut NoiseTcpReadHalf) -> Result<MintQuoteMessage, String> {
    let mut frame = reader
        .read_frame()
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    let header = frame.header();
    MintQuoteMessage::decode(&header, frame.payload())
        .map_err(|e| format!("bad frame from the mint: {e}"))
}

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
use mint_quote_sv2::{MintQuoteMessage, MintStatsRequest, MintStatsResponse};
use roles_common::backoff::Backoff;
use roles_common::noise::{self, NoiseReader, NoiseWriter};
use roles_common::sv2::WRITE_BATCH;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::secp256k1::{SecretKey, XOnlyPublicKey};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::request::RequestFrame;

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
    /// How long the mint may send nothing (answers, or the answer to the
    /// stats request sent every `stats_interval`) or take none of the
    /// requests written to it before it is taken for hung and the link
    /// reconnects: see [`silence_limit`].
    pub silence_limit: Duration,
}

/// Three stats intervals, but at least 30 s: a mint busy on a slow disk
/// is not taken for a hung one.
pub fn silence_limit(stats_interval: Duration) -> Duration {
    stats_interval
        .saturating_mul(3)
        .max(Duration::from_secs(30))
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
    requests: mpsc::Sender<RequestFrame>,
}

impl MintLink {
    /// Queues a request, never waiting: the pool's flow must not stop for a
    /// mint that is down or hung. False when it was not queued (the queue
    /// is full, or the link task stopped); requests queued while the link
    /// is down are dropped too. Either way the request stays owed: the pool
    /// asks again at its mint timeout and when the link comes back up.
    pub fn send(&self, request: RequestFrame) -> bool {
        self.requests.try_send(request).is_ok()
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
    mut queue: mpsc::Receiver<RequestFrame>,
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
        queue: &mut mpsc::Receiver<RequestFrame>,
        events: &mpsc::UnboundedSender<MintEvent>,
        shutdown: &CancellationToken,
    ) -> bool {
        // Ended because the pool is stopping: nothing to say or retry.
        if shutdown.is_cancelled() || events.is_closed() {
            return false;
        }
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
) -> Result<(NoiseReader, NoiseWriter), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
    // Small frames, each awaited: not held for the mint's delayed ACK.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = noise::connect(stream, Some(config.authority_public_key))
        .await
        .map_err(|e| {
            format!("Noise handshake failed (is authority_public_key the mint's?): {e}")
        })?;

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
///
/// Reading and writing are two loops polled side by side, so answers are
/// read while a write waits: the mint stops reading requests while its
/// answers are not read, and a link that wrote before reading again would
/// wait on the mint as the mint waits on it, both socket buffers full.
async fn serve(
    config: &MintLinkConfig,
    mut reader: NoiseReader,
    mut writer: NoiseWriter,
    queue: &mut mpsc::Receiver<RequestFrame>,
    events: &mpsc::UnboundedSender<MintEvent>,
    shutdown: &CancellationToken,
) -> String {
    let silence = config.silence_limit;
    let reading = async {
        loop {
            let Ok(read) = timeout(silence, read(&mut reader)).await else {
                return format!("the mint sent nothing for {silence:?}, not even stats");
            };
            let event = match read {
                Ok(MintQuoteMessage::MintStatsResponse(stats)) => MintEvent::Stats(stats),
                Ok(
                    m @ (MintQuoteMessage::MintQuoteResponse(_)
                    | MintQuoteMessage::MintQuoteError(_)),
                ) => MintEvent::Answer(m),
                Ok(other) => return format!("unexpected {} from the mint", other.name()),
                Err(reason) => return reason,
            };
            if events.send(event).is_err() {
                return "the pool stopped".to_string();
            }
        }
    };
    let writing = async {
        let mut stats_timer = tokio::time::interval(config.stats_interval);
        let mut request_id = 0u32;
        let mut requests = Vec::new();
        loop {
            let written = tokio::select! {
                _ = queue.recv_many(&mut requests, WRITE_BATCH) => {
                    if requests.is_empty() {
                        return "the pool stopped".to_string();
                    }
                    timeout(silence, write_requests(&mut writer, requests.drain(..))).await
                }
                _ = stats_timer.tick() => {
                    request_id = request_id.wrapping_add(1);
                    let stats = MintStatsRequest { request_id };
                    timeout(silence, write(&mut writer, MintQuoteMessage::MintStatsRequest(stats))).await
                }
            };
            match written {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return reason,
                Err(_) => return format!("the mint took nothing written to it for {silence:?}"),
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => "shutting down".into(),
        reason = reading => reason,
        reason = writing => reason,
    }
}

async fn write(writer: &mut NoiseWriter, message: MintQuoteMessage) -> Result<(), String> {
    let name = message.name();
    let frame = message.into_frame().map_err(|e| e.to_string())?;
    writer
        .write_frame(frame)
        .await
        .map_err(|e| format!("writing {name} failed: {e}"))
}

/// Writes `requests` together, as they were framed.
async fn write_requests(
    writer: &mut NoiseWriter,
    requests: impl Iterator<Item = RequestFrame>,
) -> Result<(), String> {
    for request in requests {
        writer
            .queue(request)
            .map_err(|e| format!("writing a quote request failed: {e}"))?;
    }
    writer
        .flush()
        .await
        .map_err(|e| format!("writing failed: {e}"))
}

async fn read(reader: &mut NoiseReader) -> Result<MintQuoteMessage, String> {
    let mut frame = reader
        .read_frame()
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    let header = frame.header();
    MintQuoteMessage::decode(&header, frame.payload())
        .map_err(|e| format!("bad frame from the mint: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::wire::str0255;
    use mint_quote_sv2::{
        auth, CoinbaseProof, MintQuoteErrorOwned, MintQuoteRequestOwned, PoolAuthSuccess,
    };
    use stratum_core::bitcoin::secp256k1::Secp256k1;
    use stratum_core::common_messages_sv2::SetupConnectionSuccess;
    use tokio::net::{TcpListener, TcpSocket};

    const UNIT_BITS: u8 = 4;

    /// The shipped mint's authority key pair and the shipped pool's identity.
    fn keys() -> (Secp256k1PublicKey, Secp256k1SecretKey, Secp256k1SecretKey) {
        (
            "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd"
                .parse()
                .unwrap(),
            "kaEBavE3GDF58RVUYTmAv3cG8miPAZ2cucwLnYAZf6XHTp3Ba"
                .parse()
                .unwrap(),
            "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp"
                .parse()
                .unwrap(),
        )
    }

    fn requests(count: u32) -> Vec<RequestFrame> {
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let key: ehash::LockingKey = key.public_key(&Secp256k1::new()).into();
        (0..count)
            .map(|n| {
                let mut header = [0u8; 80];
                header[..4].copy_from_slice(&n.to_le_bytes());
                // Large, so that few requests fill the socket buffers.
                let proof = CoinbaseProof {
                    coinbase: vec![0; 4096],
                    merkle_path: vec![],
                };
                let request = MintQuoteRequestOwned::new(&header, [0xff; 32], 4, key, &proof);
                RequestFrame::new(request.unwrap()).unwrap()
            })
            .collect()
    }

    fn refusal(n: u32) -> MintQuoteMessage {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&n.to_le_bytes());
        MintQuoteMessage::MintQuoteError(MintQuoteErrorOwned {
            share_hash: hash.into(),
            error_code: str0255("c", mint_quote_sv2::error_code::INVALID_PROOF_OF_WORK).unwrap(),
            error_message: str0255("m", "a made-up answer, long enough to fill buffers fast")
                .unwrap(),
        })
    }

    /// A mint that authenticates any pool, then is busy for a second and
    /// writes `answers` answers before it reads a single request (as a mint
    /// busy answering does), then reads whatever comes.
    async fn mint_answering_first(
        listener: TcpListener,
        keys: (Secp256k1PublicKey, Secp256k1SecretKey),
        answers: u32,
    ) {
        let (mut reader, mut writer) = authenticate_any_pool(&listener, keys).await;
        // Busy for a while: the pool's requests pile up unread meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for n in 0..answers {
            write(&mut writer, refusal(n)).await.unwrap();
        }
        while read(&mut reader).await.is_ok() {}
    }

    /// The mint's side of one connection up to authentication success.
    async fn authenticate_any_pool(
        listener: &TcpListener,
        (public, secret): (Secp256k1PublicKey, Secp256k1SecretKey),
    ) -> (NoiseReader, NoiseWriter) {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = noise::accept(stream, public, secret, 3600).await.unwrap();
        read(&mut reader).await.unwrap();
        let setup = SetupConnectionSuccess {
            used_version: 1,
            flags: 0,
        };
        write(&mut writer, MintQuoteMessage::SetupConnectionSuccess(setup))
            .await
            .unwrap();
        let challenge = auth::challenge([9; 32]);
        write(&mut writer, MintQuoteMessage::PoolAuthChallenge(challenge))
            .await
            .unwrap();
        read(&mut reader).await.unwrap();
        let success = PoolAuthSuccess {
            unit_bits: UNIT_BITS,
        };
        write(&mut writer, MintQuoteMessage::PoolAuthSuccess(success))
            .await
            .unwrap();
        (reader, writer)
    }

    fn config(address: String, stats_interval: Duration) -> MintLinkConfig {
        let (mint_public, _, pool_secret) = keys();
        MintLinkConfig {
            transport: Transport::Noise { address },
            authority_public_key: mint_public,
            identity_secret_key: pool_secret,
            unit_bits: UNIT_BITS,
            stats_interval,
            silence_limit: stats_interval * 3,
        }
    }

    /// Neither side's socket buffers may fill for good: while the mint
    /// writes answers and reads nothing, the link's requests pile up
    /// unwritten, and the link must still read every answer.
    #[tokio::test]
    async fn answers_are_read_while_requests_wait_to_be_written() {
        const ANSWERS: u32 = 4_000;
        const REQUESTS: u32 = 4_000;
        // Small buffers on the mint's side fill with fewer frames.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 * 1024).unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (mint_public, mint_secret, _) = keys();
        let mint = tokio::spawn(mint_answering_first(
            listener,
            (mint_public, mint_secret),
            ANSWERS,
        ));
        let shutdown = CancellationToken::new();
        let (link, mut events) =
            MintLink::spawn(config(address, Duration::from_secs(3600)), shutdown.clone());
        assert_eq!(events.recv().await, Some(MintEvent::Up));
        let requests = requests(REQUESTS);
        let sending = link.clone();
        let sender = tokio::spawn(async move {
            for r in requests {
                // A full queue takes nothing: offered again as the pool would.
                while !sending.send(r.clone()) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });

        let mut answered = 0;
        let read_all = async {
            while answered < ANSWERS {
                match events.recv().await {
                    Some(MintEvent::Answer(_)) => answered += 1,
                    Some(MintEvent::Stats(_)) => {}
                    other => panic!("link failed: {other:?}"),
                }
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(60), read_all).await;
        assert!(
            done.is_ok(),
            "{answered} of {ANSWERS} answers read: the link stopped reading"
        );
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("every request written once the mint reads")
            .unwrap();
        shutdown.cancel();
        mint.abort();
    }

    /// A mint process that stops (hung, or its host gone) behind a live
    /// TCP connection: the link must not wait on it for ever.
    #[tokio::test]
    async fn a_mint_that_goes_silent_is_taken_down_and_requests_never_wait_on_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (mint_public, mint_secret, _) = keys();
        let mint = tokio::spawn(async move {
            let _connection = authenticate_any_pool(&listener, (mint_public, mint_secret)).await;
            std::future::pending::<()>().await
        });
        let shutdown = CancellationToken::new();
        let stats_interval = Duration::from_millis(200);
        let (link, mut events) = MintLink::spawn(config(address, stats_interval), shutdown.clone());
        assert_eq!(events.recv().await, Some(MintEvent::Up));
        // Far more requests than the queue holds: none of them waits.
        let offered = requests(5_000);
        let queued = offered.into_iter().filter(|r| link.send(r.clone())).count();
        assert!(queued < 5_000, "the queue is bounded");
        let down = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the link gave up on the silent mint");
        let Some(MintEvent::Down { reason }) = down else {
            panic!("{down:?}")
        };
        assert!(
            reason.contains("the mint sent nothing") || reason.contains("took nothing"),
            "{reason}"
        );
        shutdown.cancel();
        mint.abort();
    }
}

use super::*;
use stats_sv2::{role, Keepalive, WalletBalance};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

/// How long a test waits for what must happen.
const WAIT: Duration = Duration::from_secs(10);

fn frame(msg: impl Into<StatsMessage>) -> Vec<u8> {
    msg.into().to_frame_bytes().unwrap()
}

fn hello_with(role: u8, secret: &[u8]) -> Vec<u8> {
    frame(PublisherHello::new(role, 1, 0, secret, 2).unwrap())
}

fn hello(role: u8) -> Vec<u8> {
    hello_with(role, b"")
}

/// A pool publisher's hello for a process started at `started_at`.
fn hello_started_at(started_at: u64) -> Vec<u8> {
    frame(PublisherHello::new(role::POOL, started_at, 0, b"", started_at).unwrap())
}

fn balance() -> Vec<u8> {
    frame(WalletBalance {
        balance: 5,
        timestamp: 3,
    })
}

const SECRET: &str = "0123456789abcdef-secret";

fn secret() -> Option<PublisherSecret> {
    Some(PublisherSecret::new(SECRET))
}

#[test]
fn hello_first_then_messages() {
    let mut s = Session::new(role::TRANSLATOR, None);
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
fn a_process_started_before_a_connected_one_is_refused_until_that_one_leaves() {
    let mut p = Publishers::default();
    p.admit(1, 2_000).unwrap();
    assert_eq!(
        p.admit(2, 1_000),
        Err(ProtocolError::OlderProcess {
            started_at: 1_000,
            newest: 2_000
        })
    );
    // The same process again (a reconnect beside its lingering
    // connection), or a newer one, is let in.
    p.admit(3, 2_000).unwrap();
    p.admit(4, 3_000).unwrap();
    assert!(p.admit(5, 2_999).is_err(), "older than the newest");
    for conn in [1, 3, 4] {
        p.left(conn);
    }
    p.left(2); // never admitted: nothing to forget
    p.admit(5, 1_000).unwrap();
    assert!(ProtocolError::OlderProcess {
        started_at: 1_000,
        newest: 2_500
    }
    .to_string()
    .contains("started 1.5 s before one that is connected"));
}

#[test]
fn no_hello_or_the_wrong_role_is_refused() {
    let mut s = Session::new(role::TRANSLATOR, None);
    assert_eq!(
        s.on_frame(&mut balance()),
        Err(ProtocolError::NoHello("WalletBalance"))
    );
    let mut s = Session::new(role::TRANSLATOR, None);
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
    let mut s = Session::new(role::POOL, None);
    let mut bad = hello(role::POOL);
    bad[2] = 0xEE; // unknown message type
    assert!(matches!(
        s.on_frame(&mut bad),
        Err(ProtocolError::Decode(_))
    ));
}

#[test]
fn only_the_right_secret_is_let_in() {
    let cases: [(&[u8], Result<(), ProtocolError>); 5] = [
        (SECRET.as_bytes(), Ok(())),
        (b"", Err(ProtocolError::MissingSecret)),
        (b"0123456789abcdef-secreT", Err(ProtocolError::WrongSecret)),
        (b"0123456789abcdef-secret ", Err(ProtocolError::WrongSecret)),
        (b"0123456789abcdef", Err(ProtocolError::WrongSecret)),
    ];
    for (given, expected) in cases {
        let mut s = Session::new(role::POOL, secret());
        let got = s.on_frame(&mut hello_with(role::POOL, given)).map(|_| ());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(given));
        assert_eq!(s.greeted(), expected.is_ok());
    }
    // A wrong secret is refused before the role is looked at.
    let mut s = Session::new(role::POOL, secret());
    assert_eq!(
        s.on_frame(&mut hello_with(role::TRANSLATOR, b"guess")),
        Err(ProtocolError::WrongSecret)
    );
    // Without a secret configured any hello will do (loopback only).
    let mut s = Session::new(role::POOL, None);
    assert!(s.on_frame(&mut hello_with(role::POOL, b"whatever")).is_ok());
}

#[test]
fn an_outdated_publisher_is_told_so() {
    // The version 1 hello of a pool: role, started_at, dropped, timestamp.
    let mut v1 = vec![0, 0, 0x0C, 25, 0, 0, role::POOL];
    for field in [1_795_000_000_000u64, 7, 1_795_000_000_123] {
        v1.extend(field.to_le_bytes());
    }
    let mut s = Session::new(role::POOL, secret());
    let err = s.on_frame(&mut v1).unwrap_err();
    assert_eq!(err, ProtocolError::OutdatedHello);
    assert!(err.to_string().contains("upgrade the publisher"), "{err}");

    // Version 2 publishers send no snapshots of what is live, and are heard.
    let mut v2 = PublisherHello::new(role::POOL, 1, 0, SECRET.as_bytes(), 2).unwrap();
    v2.version = 2;
    let mut s = Session::new(role::POOL, secret());
    assert!(s.on_frame(&mut frame(v2)).is_ok());

    let mut future = PublisherHello::new(role::POOL, 1, 0, SECRET.as_bytes(), 2).unwrap();
    future.version = PROTOCOL_VERSION + 1;
    let mut s = Session::new(role::POOL, secret());
    assert_eq!(
        s.on_frame(&mut frame(future)),
        Err(ProtocolError::Version(PROTOCOL_VERSION + 1))
    );
}

#[test]
fn refusals_never_show_the_secret() {
    for e in [ProtocolError::MissingSecret, ProtocolError::WrongSecret] {
        assert!(!e.to_string().contains(SECRET));
    }
    let hello = PublisherHello::new(role::POOL, 1, 0, SECRET.as_bytes(), 2).unwrap();
    let shown = format!("{:?}", StatsMessage::PublisherHello(hello));
    assert!(!shown.contains(SECRET), "{shown}");
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&hex), "{shown}");
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

/// The listener on 127.0.0.1 with `policy`, and what it hands over.
struct Ingest {
    addr: SocketAddr,
    rx: mpsc::Receiver<Ingested>,
    shutdown: CancellationToken,
}

impl Ingest {
    async fn start(policy: IngestPolicy) -> Ingest {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, policy, tx, shutdown.clone()));
        Ingest { addr, rx, shutdown }
    }

    async fn next(&mut self) -> Ingested {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an event in time")
            .expect("the ingest runs")
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn policy(secret: Option<PublisherSecret>) -> IngestPolicy {
    IngestPolicy::new(role::POOL, secret)
}

async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((ip, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Waits until the service closes `stream` (fails the test after `within`);
/// returns how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .expect("the connection was not closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "unexpected data: {read:?}");
    started.elapsed()
}

#[tokio::test]
async fn with_a_wrong_or_missing_secret_nothing_is_read_past_the_hello() {
    let mut ingest = Ingest::start(policy(secret())).await;
    for given in [&b""[..], b"0123456789abcdef-guess"] {
        let mut forger = TcpStream::connect(ingest.addr).await.unwrap();
        forger
            .write_all(&hello_with(role::POOL, given))
            .await
            .unwrap();
        let _ = forger.write_all(&balance()).await;
        closed_within(&mut forger, WAIT).await;
    }
    // The right secret: hello and message arrive, and they are the first
    // events, so nothing of the forgers' was handed over.
    let mut publisher = TcpStream::connect(ingest.addr).await.unwrap();
    publisher
        .write_all(&hello_with(role::POOL, SECRET.as_bytes()))
        .await
        .unwrap();
    publisher.write_all(&balance()).await.unwrap();
    assert!(matches!(ingest.next().await, Ingested::Hello(..)));
    assert!(matches!(
        ingest.next().await,
        Ingested::Message(_, StatsMessage::WalletBalance(_))
    ));
}

#[tokio::test]
async fn an_older_process_is_closed_at_its_hello_and_let_in_once_the_newer_one_is_gone() {
    let mut ingest = Ingest::start(policy(None)).await;
    let mut newer = TcpStream::connect(ingest.addr).await.unwrap();
    newer.write_all(&hello_started_at(2_000)).await.unwrap();
    let Ingested::Hello(newer_id, _) = ingest.next().await else {
        panic!("no hello")
    };

    let mut older = TcpStream::connect(ingest.addr).await.unwrap();
    older.write_all(&hello_started_at(1_000)).await.unwrap();
    let _ = older.write_all(&balance()).await;
    closed_within(&mut older, WAIT).await;
    // Nothing of the older one was handed over: the newer one's message is next.
    newer.write_all(&balance()).await.unwrap();
    assert_eq!(
        ingest.next().await,
        Ingested::Message(
            newer_id,
            StatsMessage::WalletBalance(WalletBalance {
                balance: 5,
                timestamp: 3
            })
        )
    );

    drop(newer);
    assert_eq!(ingest.next().await, Ingested::Closed(newer_id));
    let mut older = TcpStream::connect(ingest.addr).await.unwrap();
    older.write_all(&hello_started_at(1_000)).await.unwrap();
    match ingest.next().await {
        Ingested::Hello(_, h) => assert_eq!(h.started_at, 1_000),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_connection_without_a_hello_in_time_is_closed() {
    let mut p = policy(None);
    p.hello_timeout = Duration::from_millis(300);
    let ingest = Ingest::start(p).await;
    // Silent, and a hello that never ends (sent a byte short).
    let connected = Instant::now();
    let mut silent = TcpStream::connect(ingest.addr).await.unwrap();
    let mut slow = TcpStream::connect(ingest.addr).await.unwrap();
    let h = hello(role::POOL);
    slow.write_all(&h[..h.len() - 1]).await.unwrap();
    for stream in [&mut silent, &mut slow] {
        closed_within(stream, WAIT).await;
        let took = connected.elapsed();
        assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    }
}

#[tokio::test]
async fn a_publisher_silent_for_the_idle_timeout_is_dropped_and_keepalives_keep_it() {
    let mut p = policy(None);
    p.hello_timeout = Duration::from_millis(300);
    p.idle_timeout = Duration::from_millis(600);
    let mut ingest = Ingest::start(p).await;
    let mut publisher = TcpStream::connect(ingest.addr).await.unwrap();
    publisher.write_all(&hello(role::POOL)).await.unwrap();
    let Ingested::Hello(id, _) = ingest.next().await else {
        panic!("no hello")
    };
    // Keepalives well within the timeout, for longer than it: still open,
    // and nothing of them is handed over.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher
            .write_all(&frame(Keepalive { timestamp: 9 }))
            .await
            .unwrap();
    }
    publisher.write_all(&balance()).await.unwrap();
    assert!(matches!(
        ingest.next().await,
        Ingested::Message(_, StatsMessage::WalletBalance(_))
    ));
    let took = closed_within(&mut publisher, WAIT).await;
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    assert_eq!(ingest.next().await, Ingested::Closed(id));
}

#[tokio::test]
async fn connections_over_the_caps_are_closed_at_once() {
    let mut p = policy(None);
    p.max_publishers = 3;
    p.max_per_ip = 2;
    // Long enough that only a cap can close a connection in this test.
    p.hello_timeout = Duration::from_secs(60);
    let ingest = Ingest::start(p).await;
    let a1 = connect_from([127, 0, 0, 1], ingest.addr).await;
    let a2 = connect_from([127, 0, 0, 1], ingest.addr).await;
    let mut a3 = connect_from([127, 0, 0, 1], ingest.addr).await;
    closed_within(&mut a3, WAIT).await;
    // Another address still gets in, up to the total.
    let mut b1 = connect_from([127, 0, 0, 2], ingest.addr).await;
    let mut c1 = connect_from([127, 0, 0, 3], ingest.addr).await;
    closed_within(&mut c1, WAIT).await;
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b1.read(&mut buf))
            .await
            .is_err(),
        "an admitted connection stays open"
    );
    drop((a1, a2));
}

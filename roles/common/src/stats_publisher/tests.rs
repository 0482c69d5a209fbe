use super::*;
use crate::backoff::Backoff;
use stats_sv2::{role, HashrateUpdate, MinerConnectedOwned, MinerDisconnected};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn the_queue_is_fifo_and_drops_its_oldest_items_counting_them() {
    let mut q = StatsQueue::new(3);
    for i in 0..5 {
        q.push(i);
    }
    assert_eq!((q.len(), q.dropped()), (3, 2));
    assert_eq!(q.pop(), Some(2));
    q.push(5);
    assert_eq!(q.dropped(), 2, "room was made by the pop");
    assert_eq!(
        std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(q.is_empty());
}

#[test]
fn a_zero_capacity_queue_still_keeps_the_newest_item() {
    let mut q = StatsQueue::new(0);
    q.push(1);
    q.push(2);
    assert_eq!((q.pop(), q.dropped()), (Some(2), 1));
}

#[test]
fn link_states_report_only_changes() {
    let mut links = LinkStates::default();
    assert!(links.changed(1, false), "the first observation is news");
    assert!(!links.changed(1, false));
    assert!(links.changed(1, true));
    assert!(links.changed(2, true), "links are independent");
    assert!(!links.changed(1, true));
}

#[test]
fn settings_default_the_capacity_and_errors_name_the_field() {
    let s: StatsSettings = toml::from_str("address = \"127.0.0.1:4000\"").unwrap();
    assert_eq!(s, StatsSettings::new("127.0.0.1:4000"));
    assert_eq!(s.queue_capacity, 100_000);
    assert!(s.validate().is_ok());
    assert!(StatsSettings::new("stats.example:4001").validate().is_ok());
    for bad in ["127.0.0.1", ":4000", "127.0.0.1:x", "127.0.0.1:70000"] {
        assert_eq!(
            StatsSettings::new(bad).validate().unwrap_err().field,
            "stats.address",
            "{bad}"
        );
    }
    let zero = StatsSettings {
        queue_capacity: 0,
        ..StatsSettings::new("127.0.0.1:4000")
    };
    assert_eq!(zero.validate().unwrap_err().field, "stats.queue_capacity");
    assert!(toml::from_str::<StatsSettings>("address = \"a:1\"\nqueue = 1").is_err());
}

#[test]
fn the_secret_is_checked_and_never_shown() {
    let s: StatsSettings =
        toml::from_str("address = \"127.0.0.1:4000\"\nsecret = \"0123456789abcdef\"").unwrap();
    assert_eq!(s.secret, Some(PublisherSecret::new("0123456789abcdef")));
    assert!(s.validate().is_ok());
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
    for bad in ["short", &"x".repeat(PublisherSecret::MAX_LEN + 1)] {
        let s = StatsSettings::new("127.0.0.1:4000").with_secret(PublisherSecret::new(bad));
        let err = s.validate().unwrap_err();
        assert_eq!(err.field, "stats.secret");
        assert!(!err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn random_secrets_are_long_and_differ() {
    let a = PublisherSecret::random();
    let b = PublisherSecret::random();
    assert_eq!(a.as_bytes().len(), 64);
    assert!(a.check("x").is_ok());
    assert_ne!(a, b);
}

#[test]
fn a_disabled_publisher_publishes_nothing() {
    let p = StatsPublisher::disabled();
    p.publish(event(1));
    p.link_status(stats_sv2::link::MINT, true);
    assert_eq!(p.dropped(), 0);
    assert!(!p.is_connected());
}

/// An event that is not a connect or disconnect.
fn event(miner_id: u32) -> StatsMessage {
    HashrateUpdate {
        miner_id,
        hashrate: 1,
        timestamp: 7,
    }
    .into()
}

/// Reads the next event, past any empty snapshot.
async fn next_event(stream: &mut TcpStream) -> StatsMessage {
    loop {
        match read_message(stream).await {
            StatsMessage::LiveBegin(_) => {
                let end = read_message(stream).await;
                assert!(matches!(end, StatsMessage::LiveEnd(_)), "{end:?}");
            }
            other => return other,
        }
    }
}

/// Reads a live snapshot: the ids of its entries.
async fn read_snapshot(stream: &mut TcpStream) -> Vec<u32> {
    let begin = read_message(stream).await;
    assert!(matches!(begin, StatsMessage::LiveBegin(_)), "{begin:?}");
    let mut ids = vec![];
    loop {
        match read_message(stream).await {
            StatsMessage::LiveEntry(e) => ids.push(e.id),
            StatsMessage::LiveEnd(end) => {
                assert_eq!(end.entries as usize, ids.len());
                return ids;
            }
            other => panic!("{other:?} in a snapshot"),
        }
    }
}

/// Reads one stats frame.
async fn read_message(stream: &mut TcpStream) -> StatsMessage {
    tokio::time::timeout(WAIT, async {
        let mut frame = vec![0u8; 6];
        stream.read_exact(&mut frame).await.expect("a header");
        let len = u32::from_le_bytes([frame[3], frame[4], frame[5], 0]) as usize;
        frame.resize(6 + len, 0);
        stream.read_exact(&mut frame[6..]).await.expect("a payload");
        StatsMessage::decode_frame(&mut frame).expect("a stats message")
    })
    .await
    .expect("a message in time")
}

async fn accept(listener: &TcpListener) -> TcpStream {
    tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the publisher connects in time")
        .expect("accepted")
        .0
}

fn hello(msg: StatsMessage) -> PublisherHello {
    match msg {
        StatsMessage::PublisherHello(h) => h,
        other => panic!("expected PublisherHello first, got {other:?}"),
    }
}

/// Polls `cond` until it holds (or fails the test after WAIT).
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn hello_first_then_events_in_order_and_after_a_reconnect_the_events_queued_meanwhile() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let before = now_ms();
    let p = StatsPublisher::start(
        &StatsSettings::new(address.to_string()),
        role::TRANSLATOR,
        shutdown.clone(),
    );
    p.publish(event(1));
    let mut conn = accept(&listener).await;
    let first = hello(read_message(&mut conn).await);
    assert_eq!((first.role, first.dropped), (role::TRANSLATOR, 0));
    assert_eq!(first.version, stats_sv2::PROTOCOL_VERSION);
    assert!(first.secret.as_bytes().is_empty(), "no secret configured");
    assert!(first.started_at >= before && first.timestamp >= first.started_at);
    for id in 2..=4 {
        p.publish(event(id));
    }
    for id in 1..=4 {
        assert_eq!(next_event(&mut conn).await, event(id));
    }

    // The service goes away: events published meanwhile wait for it.
    drop(conn);
    drop(listener);
    until("noticed the closed connection", || !p.is_connected()).await;
    p.publish(event(5));
    p.publish(event(6));
    let listener = TcpListener::bind(address).await.unwrap();
    let mut conn = accept(&listener).await;
    let second = hello(read_message(&mut conn).await);
    assert_eq!(second.started_at, first.started_at, "same publisher");
    assert_eq!(second.dropped, 0);
    assert_eq!(read_message(&mut conn).await, event(5));
    assert_eq!(read_message(&mut conn).await, event(6));
    assert!(read_snapshot(&mut conn).await.is_empty());
    assert!(p.is_connected());

    shutdown.cancel();
    let mut rest = vec![];
    let eof = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "the publisher closes on shutdown");
}

/// A service that refuses the publisher at its hello (a wrong secret, or a
/// newer process publishing) is knocked on less and less often.
#[tokio::test]
async fn a_publisher_refused_at_its_hello_backs_off_as_from_an_absent_service() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let p = StatsPublisher::start(
        &StatsSettings::new(listener.local_addr().unwrap().to_string()),
        role::POOL,
        shutdown.clone(),
    );
    let mut refused_at = vec![];
    for _ in 0..5 {
        let mut conn = accept(&listener).await;
        refused_at.push(tokio::time::Instant::now());
        hello(read_message(&mut conn).await);
        drop(conn);
    }
    // The waits double from Backoff::MIN (they were all Backoff::MIN when
    // a connection counted as the service being back).
    for (i, pair) in refused_at.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        assert!(waited >= Backoff::MIN * (1 << i), "wait {i}: {waited:?}");
    }
    drop(p);
    shutdown.cancel();
}

#[tokio::test]
async fn without_a_service_the_overflow_is_dropped_oldest_first_and_counted_exactly() {
    // An address where nothing listens (yet).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let shutdown = CancellationToken::new();
    let settings = StatsSettings {
        queue_capacity: 3,
        ..StatsSettings::new(address.to_string())
    };
    let p = StatsPublisher::start(&settings, role::POOL, shutdown.clone());
    for id in 1..=10 {
        p.publish(event(id));
    }
    assert_eq!(p.dropped(), 7);
    p.link_status(stats_sv2::link::POOL, false);
    p.link_status(stats_sv2::link::POOL, false);
    assert_eq!(p.dropped(), 8, "a repeated link state is not queued");

    // When the service appears it learns how many were lost, then gets the newest.
    let listener = TcpListener::bind(address).await.unwrap();
    let mut conn = accept(&listener).await;
    let h = hello(read_message(&mut conn).await);
    assert_eq!((h.role, h.dropped), (role::POOL, 8));
    assert_eq!(read_message(&mut conn).await, event(9));
    assert_eq!(read_message(&mut conn).await, event(10));
    match read_message(&mut conn).await {
        StatsMessage::LinkStatus(l) => assert_eq!((l.link, l.up), (stats_sv2::link::POOL, false)),
        other => panic!("{other:?}"),
    }
    shutdown.cancel();
}

#[tokio::test]
async fn the_hello_carries_the_secret_and_an_idle_publisher_sends_keepalives() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let settings = StatsSettings::new(address.to_string())
        .with_secret(PublisherSecret::new("0123456789abcdef-secret"));
    let keepalive = Duration::from_millis(100);
    let p =
        StatsPublisher::start_with_keepalive(&settings, role::POOL, keepalive, shutdown.clone());
    let mut conn = accept(&listener).await;
    let h = hello(read_message(&mut conn).await);
    assert_eq!(h.secret.as_bytes(), b"0123456789abcdef-secret");
    assert!(read_snapshot(&mut conn).await.is_empty());
    // Nothing else to send: keepalives, again and again.
    for _ in 0..3 {
        assert!(matches!(
            read_message(&mut conn).await,
            StatsMessage::Keepalive(_)
        ));
    }
    // Events still go through, in order.
    p.publish(event(1));
    loop {
        match read_message(&mut conn).await {
            StatsMessage::Keepalive(_) => continue,
            other => {
                assert_eq!(other, event(1));
                break;
            }
        }
    }
    shutdown.cancel();
}

/// A translator's publisher to `address` with a queue of `capacity`, and
/// its shutdown; keepalives show quickly that nothing else is coming.
fn translator_publisher(
    address: std::net::SocketAddr,
    capacity: usize,
) -> (StatsPublisher, CancellationToken) {
    let shutdown = CancellationToken::new();
    let settings = StatsSettings {
        queue_capacity: capacity,
        ..StatsSettings::new(address.to_string())
    };
    let keepalive = Duration::from_millis(100);
    let p = StatsPublisher::start_with_keepalive(
        &settings,
        role::TRANSLATOR,
        keepalive,
        shutdown.clone(),
    );
    (p, shutdown)
}

/// The `(link, up)` of a `LinkStatus`.
fn link_state(msg: StatsMessage) -> (u8, bool) {
    match msg {
        StatsMessage::LinkStatus(l) => (l.link, l.up),
        other => panic!("expected LinkStatus, got {other:?}"),
    }
}

#[tokio::test]
async fn the_link_states_follow_every_connection_and_every_dropped_link_status() {
    use stats_sv2::link::{MINT, POOL};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (p, shutdown) = translator_publisher(address, 4);
    p.link_status(MINT, false);
    for id in 1..=4 {
        p.publish(event(id));
    }
    assert_eq!(p.dropped(), 1, "the mint going down was dropped");
    p.link_status(MINT, false);
    p.link_status(POOL, true);
    p.link_status(POOL, false);

    let listener = TcpListener::bind(address).await.unwrap();
    let mut conn = accept(&listener).await;
    assert_eq!(hello(read_message(&mut conn).await).dropped, 3);
    assert_eq!(read_message(&mut conn).await, event(3));
    assert_eq!(read_message(&mut conn).await, event(4));
    assert_eq!(link_state(read_message(&mut conn).await), (POOL, true));
    assert_eq!(link_state(read_message(&mut conn).await), (POOL, false));
    // After the queue, so the pool's older state queued above is not last.
    assert_eq!(link_state(read_message(&mut conn).await), (MINT, false));
    assert_eq!(link_state(read_message(&mut conn).await), (POOL, false));
    assert!(read_snapshot(&mut conn).await.is_empty());
    assert!(matches!(
        read_message(&mut conn).await,
        StatsMessage::Keepalive(_)
    ));

    // A restarted service may have lost them in flight: it gets them again.
    drop(conn);
    drop(listener);
    until("noticed the closed connection", || !p.is_connected()).await;
    let listener = TcpListener::bind(address).await.unwrap();
    let mut conn = accept(&listener).await;
    hello(read_message(&mut conn).await);
    assert_eq!(link_state(read_message(&mut conn).await), (MINT, false));
    assert_eq!(link_state(read_message(&mut conn).await), (POOL, false));
    assert!(read_snapshot(&mut conn).await.is_empty());
    assert!(matches!(
        read_message(&mut conn).await,
        StatsMessage::Keepalive(_)
    ));

    // One dropped while connected goes again once the queue is empty.
    p.link_status(MINT, true);
    for id in 5..=8 {
        p.publish(event(id));
    }
    assert_eq!(p.dropped(), 4, "the mint coming up was dropped");
    for id in 5..=8 {
        assert_eq!(read_message(&mut conn).await, event(id));
    }
    assert_eq!(link_state(read_message(&mut conn).await), (MINT, true));
    assert_eq!(link_state(read_message(&mut conn).await), (POOL, false));
    // Only the links: the snapshot is due after a lost connect or disconnect.
    assert!(matches!(
        read_message(&mut conn).await,
        StatsMessage::Keepalive(_)
    ));
    shutdown.cancel();
}

fn miner_connected(miner_id: u32) -> StatsMessage {
    MinerConnectedOwned {
        miner_id,
        name: ehash::wire::str0255_truncated("rig"),
        timestamp: 7,
    }
    .into()
}

fn miner_disconnected(miner_id: u32) -> StatsMessage {
    MinerDisconnected {
        miner_id,
        timestamp: 8,
    }
    .into()
}

#[tokio::test]
async fn the_live_snapshot_follows_every_connection_and_makes_up_for_dropped_disconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (p, shutdown) = translator_publisher(address, 3);
    for id in 1..=3 {
        p.publish(miner_connected(id));
    }
    let mut conn = accept(&listener).await;
    hello(read_message(&mut conn).await);
    for id in 1..=3 {
        assert_eq!(read_message(&mut conn).await, miner_connected(id));
    }
    assert_eq!(read_snapshot(&mut conn).await, [1, 2, 3]);

    // Away, the service misses miner 2 leaving: its disconnect is dropped.
    drop(conn);
    drop(listener);
    until("noticed the closed connection", || !p.is_connected()).await;
    p.publish(miner_disconnected(2));
    for id in 4..=6 {
        p.publish(event(id));
    }
    assert_eq!(p.dropped(), 1);
    let listener = TcpListener::bind(address).await.unwrap();
    let mut conn = accept(&listener).await;
    hello(read_message(&mut conn).await);
    for id in 4..=6 {
        assert_eq!(read_message(&mut conn).await, event(id));
    }
    assert_eq!(read_snapshot(&mut conn).await, [1, 3], "miner 2 left");

    // One dropped while connected: the snapshot goes again.
    p.publish(miner_disconnected(3));
    for id in 7..=9 {
        p.publish(event(id));
    }
    for id in 7..=9 {
        assert_eq!(next_event(&mut conn).await, event(id));
    }
    assert_eq!(read_snapshot(&mut conn).await, [1]);
    shutdown.cancel();
}

/// What a test's subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A publisher let in after refusals (logged) says so once its connection
/// has held: its operator knows the refusals are over.
#[tokio::test]
async fn a_publisher_let_in_after_refusals_says_so_once_it_holds() {
    let log = LogBuffer::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The runtime is this thread's: the publisher's task logs here.
    let _logging = tracing::subscriber::set_default(subscriber);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let _p = StatsPublisher::start(
        &StatsSettings::new(listener.local_addr().unwrap().to_string()),
        role::POOL,
        shutdown.clone(),
    );
    for _ in 0..2 {
        let mut conn = accept(&listener).await;
        hello(read_message(&mut conn).await);
    }
    let mut held = accept(&listener).await;
    hello(read_message(&mut held).await);
    tokio::time::sleep(Backoff::MAX + Duration::from_millis(500)).await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let taken: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("stats service took this publisher"))
        .collect();
    assert_eq!(taken.len(), 1, "{text}");
    assert!(taken[0].contains("attempts=2"), "{text}");
    shutdown.cancel();
}

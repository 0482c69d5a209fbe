//! A stand-in for the stats services (pool-stats, proxy-stats).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::wire::MessageSet;
use roles_common::stats_publisher::StatsSettings;
use stats_sv2::StatsMessage;
use tokio::net::{TcpListener, TcpStream};

/// A plain TCP listener in place of pool-stats / proxy-stats: it decodes
/// every stats frame of every connection, in arrival order.
pub struct StatsSink {
    address: SocketAddr,
    received: Arc<Mutex<Vec<StatsMessage>>>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatsSink {
    pub async fn start() -> StatsSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("bound");
        let received = Arc::<Mutex<Vec<StatsMessage>>>::default();
        let errors = Arc::<Mutex<Vec<String>>>::default();
        let (r, e) = (received.clone(), errors.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, e) = (r.clone(), e.clone());
                tokio::spawn(async move {
                    if let Err(error) = read_stats(stream, &r).await {
                        e.lock().expect("errors lock").push(error);
                    }
                });
            }
        });
        StatsSink {
            address,
            received,
            errors,
            task,
        }
    }

    /// A `[stats]` table pointing at this sink.
    pub fn settings(&self) -> StatsSettings {
        StatsSettings::new(self.address.to_string())
    }

    /// Everything received so far (failing the test on an undecodable frame).
    pub fn received(&self) -> Vec<StatsMessage> {
        let errors = self.errors.lock().expect("errors lock").clone();
        assert!(errors.is_empty(), "bad stats frames: {errors:?}");
        self.received.lock().expect("received lock").clone()
    }

    /// Polls until `done` holds for what was received, or fails after 30 s.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[StatsMessage]) -> bool,
    ) -> Vec<StatsMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never showed {what}: {received:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for StatsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads stats frames until the publisher closes the connection.
async fn read_stats(
    mut stream: TcpStream,
    received: &Mutex<Vec<StatsMessage>>,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut frame = vec![0u8; 6];
        if stream.read_exact(&mut frame).await.is_err() {
            return Ok(());
        }
        let len = u32::from_le_bytes([frame[3], frame[4], frame[5], 0]) as usize;
        frame.resize(6 + len, 0);
        stream
            .read_exact(&mut frame[6..])
            .await
            .map_err(|e| format!("truncated frame: {e}"))?;
        let message = StatsMessage::decode_frame(&mut frame).map_err(|e| e.to_string())?;
        received.lock().expect("received lock").push(message);
    }
}

/// A `[stats]` table for an address where nothing listens.
pub async fn dead_stats_settings(queue_capacity: usize) -> StatsSettings {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("bound");
    drop(listener);
    StatsSettings {
        queue_capacity,
        ..StatsSettings::new(address.to_string())
    }
}

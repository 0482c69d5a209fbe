//! The real miner (`roles/miner`) in load mode, as tests drive it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use miner::{MinerConfig, Mode};

/// The CPU miner (2 threads) or the load generator at `addr`.
pub fn miner_config(addr: SocketAddr, mode: Mode) -> MinerConfig {
    MinerConfig {
        threads: 2,
        mode,
        ..load_miner_config(addr, "rig", 3, 4.0)
    }
}

/// `miners` simulated SV1 miners at `url`, each submitting real shares at
/// `shares_per_second`.
pub fn load_miner_config(
    url: SocketAddr,
    username: &str,
    miners: usize,
    shares_per_second: f64,
) -> MinerConfig {
    let mut c = MinerConfig {
        url: url.to_string(),
        username: username.into(),
        threads: 1,
        mode: Mode::Load,
        stats_interval_secs: 1,
        ..Default::default()
    };
    c.load.miners = miners;
    c.load.shares_per_second = shares_per_second;
    c
}

/// Waits until the miner counted `n` accepted shares (a minute at most).
pub async fn until_accepted(stats: &miner::Stats, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.accepted() < n {
        assert!(
            Instant::now() < deadline,
            "only {} shares accepted, {} rejected",
            stats.accepted(),
            stats.rejected()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

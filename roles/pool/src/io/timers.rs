//! Periodic work: the vardiff tick, the idle channel check and the "pool
//! stats" log line.

use std::sync::atomic::Ordering;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Shared;
use crate::mining::PoolCore;

/// Periodic work on the pool's shared state.
pub(crate) type Tick = fn(&Shared);

/// Calls `tick` every `period` (first after one period) until shutdown.
pub(crate) async fn every(
    shared: Arc<Shared>,
    period: Duration,
    shutdown: CancellationToken,
    tick: Tick,
) {
    let mut interval = tokio::time::interval(period);
    // After a stall (a paused machine), one tick, not a burst of them: the
    // idle check would count periods the shares waiting to be read were in.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => tick(&shared),
        }
    }
}

/// Runs vardiff on every channel.
pub(crate) fn vardiff_tick(shared: &Shared) {
    let now_ms = roles_common::stats_publisher::now_ms();
    shared.apply(|core| core.on_vardiff_tick(now_ms));
}

/// Closes the channels idle past the pool's timeout.
pub(crate) fn idle_tick(shared: &Shared) {
    shared.apply(PoolCore::on_idle_tick);
}

/// The "pool stats" log line.
pub(crate) fn log_stats(shared: &Shared) {
    let s = shared.core().stats();
    info!(
        shares_accepted = s.shares_accepted,
        shares_rejected = s.shares_rejected,
        blocks_found = s.blocks_found,
        channels_open = s.channels_open,
        custom_jobs_held = s.custom_jobs_held,
        ehash_notices_refused = shared.notices_refused.load(Ordering::Relaxed),
        "pool stats"
    );
}

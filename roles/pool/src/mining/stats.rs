//! What the pool counts (for logs, tests and the benchmark) and what it tells
//! the stats service.

use stats_sv2::StatsMessage;

use super::{Action, ConnId};

/// Counters for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub blocks_found: u64,
    pub channels_open: usize,
    /// Custom jobs of distinct headers set on the pool's tip, over every
    /// work-selecting channel, closed ones too (`[jds] max_custom_jobs`
    /// bounds it).
    pub custom_jobs_held: usize,
}

/// What the stats service hears about (the io layer adds the time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsEvent {
    /// A downstream completed SetupConnection with these flags.
    DownstreamConnected {
        conn: ConnId,
        flags: u32,
    },
    /// A downstream that completed SetupConnection is gone.
    DownstreamDisconnected {
        conn: ConnId,
    },
    ChannelOpened {
        conn: ConnId,
        channel_id: u32,
    },
    ChannelClosed {
        conn: ConnId,
        channel_id: u32,
    },
    /// Every share, accepted or not; `work` is the expected hashes of the
    /// target it was accepted at (0 when refused).
    ShareSubmitted {
        conn: ConnId,
        channel_id: u32,
        accepted: bool,
        work: u64,
    },
    /// A block solution went to the template provider.
    BlockFound {
        channel_id: u32,
        /// From the template's coinbase prefix (BIP 34); 0 if unreadable.
        height: u32,
        /// Little-endian.
        block_hash: [u8; 32],
    },
}

/// The stats event of a refused share.
pub(super) fn share_refused_event(conn: ConnId, channel_id: u32) -> Action {
    Action::Stats(StatsEvent::ShareSubmitted {
        conn,
        channel_id,
        accepted: false,
        work: 0,
    })
}

/// The stats service numbers downstreams with u32: connection ids count up
/// from 1, so they only wrap after 4 billion connections.
pub(crate) fn downstream_id(conn: ConnId) -> u32 {
    conn as u32
}

impl StatsEvent {
    /// The stats-sv2 message of this event, stamped with `timestamp` (ms).
    pub fn into_message(self, timestamp: u64) -> StatsMessage {
        match self {
            StatsEvent::DownstreamConnected { conn, flags } => stats_sv2::DownstreamConnected {
                downstream_id: downstream_id(conn),
                flags,
                timestamp,
            }
            .into(),
            StatsEvent::DownstreamDisconnected { conn } => stats_sv2::DownstreamDisconnected {
                downstream_id: downstream_id(conn),
                timestamp,
            }
            .into(),
            StatsEvent::ChannelOpened { conn, channel_id } => stats_sv2::ChannelOpened {
                downstream_id: downstream_id(conn),
                channel_id,
                timestamp,
            }
            .into(),
            StatsEvent::ChannelClosed { conn, channel_id } => stats_sv2::ChannelClosed {
                downstream_id: downstream_id(conn),
                channel_id,
                timestamp,
            }
            .into(),
            StatsEvent::ShareSubmitted {
                conn,
                channel_id,
                accepted,
                work,
            } => stats_sv2::ShareSubmitted {
                downstream_id: downstream_id(conn),
                channel_id,
                accepted,
                work,
                timestamp,
            }
            .into(),
            StatsEvent::BlockFound {
                channel_id,
                height,
                block_hash,
            } => stats_sv2::BlockFoundOwned {
                height,
                block_hash: block_hash.into(),
                channel_id,
                timestamp,
            }
            .into(),
        }
    }
}

//! Channel requests of a downstream (open, update, close) and the vardiff
//! tick over every channel.

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey};
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::{
    OpenMiningChannelErrorOwned, SetTargetOwned, UpdateChannelErrorOwned, UpdateChannelOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, info, warn};

use super::channel::{Channel, OpenRequest};
use super::{mining, u256, Action, ConnId, PoolCore, StatsEvent, ERROR_NO_LOCKING_KEY};

impl PoolCore {
    /// OpenStandardMiningChannel / OpenExtendedMiningChannel: the success,
    /// the channel's first jobs and prevhash; or OpenMiningChannel.Error.
    pub(super) fn open_channel(&mut self, conn: ConnId, request: OpenRequest) -> Vec<Action> {
        let request_id = request.request_id();
        let identity = request.user_identity();
        let Ok(locking_key) = self.locking_key(conn, &identity) else {
            return open_error(conn, request_id, ERROR_NO_LOCKING_KEY);
        };
        let (channels, next_id) = (&self.channels, &mut self.next_channel_id);
        let opened = Channel::open(
            conn,
            &request,
            locking_key,
            &mut self.allocator,
            || new_channel_id(next_id, |id| channels.contains_key(&id)),
            &self.config,
        );
        let mut channel = match opened {
            Ok(channel) => channel,
            Err(code) => return open_error(conn, request_id, code),
        };
        let channel_id = channel.id();
        let mut actions = vec![Action::Send(conn, mining(channel.open_success(request_id)))];
        actions.extend(self.initial_jobs(&mut channel));
        actions.push(Action::Stats(StatsEvent::ChannelOpened {
            conn,
            channel_id,
        }));
        info!(
            conn,
            channel_id,
            identity,
            nominal_hashrate = channel.nominal_hashrate(),
            "{} channel opened",
            request.kind_name()
        );
        self.channels.insert(channel_id, channel);
        if let Some(state) = self.connections.get_mut(&conn) {
            state.channels.insert(channel_id);
        }
        actions
    }

    /// The locking key of a new channel; `Err` refuses the channel.
    fn locking_key(&self, conn: ConnId, identity: &str) -> Result<Option<LockingKey>, ()> {
        match parse_user_identity(identity) {
            Ok(id) => Ok(Some(id.locking_key)),
            Err(e) if self.config.require_locking_key => {
                warn!(
                    conn,
                    identity, "refusing channel: user_identity has no locking key: {e}"
                );
                Err(())
            }
            Err(e) => {
                debug!(conn, identity, "channel without locking key: {e}");
                Ok(None)
            }
        }
    }

    pub(super) fn close_channel(&mut self, conn: ConnId, channel_id: u32) -> Vec<Action> {
        if self.channels.get(&channel_id).map(|c| c.conn) != Some(conn) {
            return vec![];
        }
        self.remove_channel(conn, channel_id);
        info!(conn, channel_id, "channel closed by downstream");
        vec![Action::Stats(StatsEvent::ChannelClosed {
            conn,
            channel_id,
        })]
    }

    /// Forgets a channel (freeing its extranonce prefix).
    pub(super) fn remove_channel(&mut self, conn: ConnId, channel_id: u32) {
        self.channels.remove(&channel_id);
        if let Some(state) = self.connections.get_mut(&conn) {
            state.channels.remove(&channel_id);
        }
    }

    pub(super) fn update_channel(&mut self, conn: ConnId, m: UpdateChannelOwned) -> Vec<Action> {
        let channel_id = m.channel_id;
        let result = match self
            .channels
            .get_mut(&channel_id)
            .filter(|c| c.conn == conn)
        {
            None => Err("invalid-channel-id"),
            Some(channel) => channel.update(
                m.nominal_hash_rate,
                Some(Target::from_le_bytes(m.maximum_target.to_array())),
            ),
        };
        match result {
            Ok(target) => vec![set_target(conn, channel_id, &target)],
            Err(code) => vec![Action::Send(
                conn,
                mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: str0255_truncated(code),
                })),
            )],
        }
    }

    /// Runs vardiff on every channel; sends SetTarget where the target changed.
    pub fn on_vardiff_tick(&mut self) -> Vec<Action> {
        let spm = self.config.shares_per_minute;
        let mut actions = Vec::new();
        for (channel_id, channel) in self.channels.iter_mut() {
            if let Some(target) = channel.vardiff_tick(spm) {
                actions.push(set_target(channel.conn, *channel_id, &target));
            }
        }
        actions
    }
}

/// The next free channel id (ids wrap, skipping 0 and those in use).
fn new_channel_id(next: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        let id = *next;
        *next = next.wrapping_add(1).max(1);
        if !in_use(id) {
            return id;
        }
    }
}

fn open_error(conn: ConnId, request_id: u32, code: &str) -> Vec<Action> {
    vec![Action::Send(
        conn,
        mining(MiningOwned::OpenMiningChannelError(
            OpenMiningChannelErrorOwned {
                request_id,
                error_code: str0255_truncated(code),
            },
        )),
    )]
}

fn set_target(conn: ConnId, channel_id: u32, target: &Target) -> Action {
    Action::Send(
        conn,
        mining(MiningOwned::SetTarget(SetTargetOwned {
            channel_id,
            maximum_target: u256(target),
        })),
    )
}

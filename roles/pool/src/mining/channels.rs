//! Channel requests of a downstream (open, update, close), and the vardiff
//! tick and the idle check over every channel.

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey};
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::ERROR_CODE_OPEN_MINING_CHANNEL_STANDARD_CHANNELS_NOT_SUPPORTED_FOR_CUSTOM_WORK as ERROR_STANDARD_FOR_CUSTOM_WORK;
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenMiningChannelErrorOwned, SetTargetOwned, UpdateChannelErrorOwned,
    UpdateChannelOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, info, warn};

use super::channel::{Channel, OpenRequest, CAPACITY_EXHAUSTED};
use super::{mining, u256, Action, ConnId, PoolCore, StatsEvent, ERROR_NO_LOCKING_KEY};

/// OpenMiningChannel.Error code: the connection has as many channels open
/// as one may.
pub const ERROR_TOO_MANY_CHANNELS: &str = "too-many-channels";
/// CloseChannel reasons: no share was accepted on the channel for the
/// pool's `idle_channel_timeout_secs`; its duplicate detection is full and
/// it could not be renewed.
pub const REASON_IDLE_CHANNEL: &str = "idle-channel";
pub const REASON_SEEN_SHARES_EXHAUSTED: &str = "seen-shares-budget-exhausted";

/// When the pool closes a channel nobody mines on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleChannels {
    /// Seconds between idle checks.
    pub check_secs: u64,
    /// Checks in a row, each a whole period with no share accepted, that
    /// close a channel.
    pub checks: u32,
}

impl IdleChannels {
    /// A check every tenth of `timeout_secs` (every second at least), so a
    /// channel closes within a tenth of the timeout past it; None for 0
    /// (never).
    pub fn for_timeout(timeout_secs: u64) -> Option<IdleChannels> {
        (timeout_secs > 0).then(|| {
            let check_secs = (timeout_secs / 10).max(1);
            IdleChannels {
                check_secs,
                checks: timeout_secs.div_ceil(check_secs) as u32,
            }
        })
    }

    /// The least time a channel goes with no share accepted before it closes.
    pub fn timeout_secs(&self) -> u64 {
        self.check_secs * self.checks as u64
    }
}

impl PoolCore {
    /// OpenStandardMiningChannel / OpenExtendedMiningChannel: the success,
    /// the channel's first jobs and prevhash; or OpenMiningChannel.Error.
    pub(super) fn open_channel(&mut self, conn: ConnId, request: OpenRequest) -> Vec<Action> {
        let request_id = request.request_id();
        let identity = request.user_identity();
        let locking_key = match self.locking_key(conn, &identity) {
            Ok(key) => key,
            Err(e) => {
                self.warn_peer(
                    conn,
                    format_args!(
                        "refusing channel {identity:?}: user_identity has no locking key: {e}"
                    ),
                );
                return open_error(conn, request_id, ERROR_NO_LOCKING_KEY);
            }
        };
        // The peer of a connection selecting its own work.
        let work_selecting_peer = self
            .connections
            .get(&conn)
            .and_then(|c| c.work_selection.then_some(c.peer));
        if work_selecting_peer.is_some() && matches!(request, OpenRequest::Standard(_)) {
            self.warn_peer(
                conn,
                format_args!("refusing a standard channel: this connection selects its own work"),
            );
            return open_error(conn, request_id, ERROR_STANDARD_FOR_CUSTOM_WORK);
        }
        if !self.has_room_for_a_channel(conn) {
            return open_error(conn, request_id, ERROR_TOO_MANY_CHANNELS);
        }
        let mut opened = self.new_channel(conn, &request, locking_key);
        if matches!(opened, Err(CAPACITY_EXHAUSTED)) {
            if let Err(code) = Channel::check_open(&request, &self.allocator, &self.config) {
                opened = Err(code);
            } else if self.free_retired_prefix(locking_key) {
                opened = self.new_channel(conn, &request, locking_key);
            }
        }
        let mut channel = match opened {
            Ok(channel) => channel,
            Err(code) => {
                self.warn_peer(conn, format_args!("refusing a channel: {code}"));
                return open_error(conn, request_id, code);
            }
        };
        if let Some(peer) = work_selecting_peer {
            channel.set_custom_work(self.custom_spaces.for_peer(peer));
        }
        let channel_id = channel.id();
        let mut actions = vec![Action::Send(conn, mining(channel.open_success(request_id)))];
        actions.extend(self.initial_jobs(&mut channel, false));
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
            if state.channels.insert(channel_id) {
                self.address_channels.add(state.peer, 1);
            }
        }
        actions
    }

    /// Whether `conn` may open one more channel: its own bound, and its
    /// address's over all its connections (a refusal logged, naming it).
    fn has_room_for_a_channel(&mut self, conn: ConnId) -> bool {
        let limit = self.config.max_channels_per_connection as usize;
        if self.connection_channels(conn) >= limit {
            self.warn_peer(
                conn,
                format_args!(
                    "refusing a channel: {limit} open on this connection, the most allowed \
                     (max_channels_per_connection)"
                ),
            );
            return false;
        }
        let Some(peer) = self.connections.get(&conn).map(|c| c.peer) else {
            return true;
        };
        let limit = self.config.max_channels_per_ip as usize;
        if self.address_channels.count(peer) >= limit {
            self.warn_peer(
                conn,
                format_args!(
                    "refusing a channel: {limit} open over the connections from {}, \
                     the most one address may have (max_channels_per_ip)",
                    roles_common::limits::counted_as(peer)
                ),
            );
            return false;
        }
        true
    }

    /// A channel for `request`, or the error code refusing it.
    fn new_channel(
        &mut self,
        conn: ConnId,
        request: &OpenRequest,
        locking_key: Option<LockingKey>,
    ) -> Result<Channel, &'static str> {
        let (channels, next_id) = (&self.channels, &mut self.next_channel_id);
        Channel::open(
            conn,
            request,
            locking_key,
            &mut self.allocator,
            || new_channel_id(next_id, |id| channels.contains_key(&id)),
            &self.config,
            self.clock.now(),
        )
    }

    /// Frees an extranonce prefix for a channel of `key`: the one held by
    /// the jobs sent before the last renewal of a channel of another key.
    /// `max_channels` counts open channels, and a channel opening or
    /// renewing comes before shares still due on old jobs. Only a channel
    /// of another key gives its prefix up: every coinbase commits to its
    /// channel's key, so headers accepted on the prefix cannot repeat under
    /// the new one, even those of custom jobs (whose coinbase, unlike a pool
    /// job's, need carry no number of the pool's; after several hand-overs on
    /// one tip a prefix can still come back to a key that held it, and the
    /// mint quotes a share hash once).
    /// Of those, the jobs retired longest ago: their miners have had the
    /// longest to move on, so the fewest shares still due on them go stale.
    /// False when no channel can.
    fn free_retired_prefix(&mut self, key: Option<LockingKey>) -> bool {
        let Some(key) = key else {
            return false;
        };
        let oldest = self
            .channels
            .values_mut()
            .filter(|c| c.locking_key.is_some_and(|k| k != key))
            .filter_map(|c| Some((c.retired_since_ms()?, c)))
            .min_by_key(|(since, _)| *since);
        oldest.is_some_and(|(_, c)| c.drop_retired())
    }

    /// The locking key of a new channel; `Err` refuses the channel.
    fn locking_key(&self, conn: ConnId, identity: &str) -> Result<Option<LockingKey>, String> {
        match parse_user_identity(identity) {
            Ok(id) => Ok(Some(id.locking_key)),
            Err(e) if self.config.require_locking_key => Err(e.to_string()),
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

    /// Closes a channel from the pool's side, telling its downstream why.
    pub(super) fn close_by_pool(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        reason: &str,
    ) -> Vec<Action> {
        self.remove_channel(conn, channel_id);
        vec![
            Action::Send(
                conn,
                mining(MiningOwned::CloseChannel(CloseChannelOwned {
                    channel_id,
                    reason_code: str0255_truncated(reason),
                })),
            ),
            Action::Stats(StatsEvent::ChannelClosed { conn, channel_id }),
        ]
    }

    /// Forgets a channel (freeing its extranonce prefix).
    pub(super) fn remove_channel(&mut self, conn: ConnId, channel_id: u32) {
        self.channels.remove(&channel_id);
        if let Some(state) = self.connections.get_mut(&conn) {
            if state.channels.remove(&channel_id) {
                self.address_channels.remove(state.peer, 1);
            }
        }
    }

    pub(super) fn update_channel(&mut self, conn: ConnId, m: UpdateChannelOwned) -> Vec<Action> {
        let channel_id = m.channel_id;
        let now_ms = self.clock.now();
        let result = match self
            .channels
            .get_mut(&channel_id)
            .filter(|c| c.conn == conn)
        {
            None => Err("invalid-channel-id"),
            Some(channel) => {
                let target = channel.update(
                    m.nominal_hash_rate,
                    Some(
                        self.config
                            .clamp(Target::from_le_bytes(m.maximum_target.to_array())),
                    ),
                );
                if target.is_ok() {
                    channel.on_declared_hashrate(now_ms, m.nominal_hash_rate);
                }
                target
            }
        };
        match result {
            Ok(_) => self.retargeted(channel_id),
            Err(code) => vec![Action::Send(
                conn,
                mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: str0255_truncated(code),
                })),
            )],
        }
    }

    /// Runs vardiff on every channel at `now_ms` (the core's clock for the
    /// shares until the next tick); a channel whose target changed gets it
    /// at once.
    pub fn on_vardiff_tick(&mut self, now_ms: u64) -> Vec<Action> {
        let now_ms = self.clock.at(now_ms);
        let retargeted: Vec<u32> = self
            .channels
            .iter_mut()
            .filter_map(|(id, channel)| channel.vardiff_tick(now_ms).map(|_| *id))
            .collect();
        retargeted
            .into_iter()
            .flat_map(|channel_id| self.retargeted(channel_id))
            .collect()
    }

    /// An idle check: closes every channel with no share accepted over
    /// [`IdleChannels::checks`] whole periods. An open channel holds one of
    /// `max_channels` extranonce prefixes whether it mines or not: without
    /// this, a peer opening channels it never mines on could hold them all.
    pub fn on_idle_tick(&mut self) -> Vec<Action> {
        let Some(idle) = self.config.idle_channels else {
            return vec![];
        };
        let closing: Vec<(ConnId, u32)> = self
            .channels
            .iter_mut()
            .filter_map(|(id, c)| (c.idle_check() >= idle.checks).then_some((c.conn, *id)))
            .collect();
        let mut actions = Vec::new();
        for (conn, channel_id) in closing {
            info!(
                conn,
                channel_id,
                "no share accepted for {} s: closing the channel",
                idle.timeout_secs()
            );
            actions.extend(self.close_by_pool(conn, channel_id, REASON_IDLE_CHANNEL));
        }
        actions
    }

    /// A channel's target changed: SetTarget, then a job at the new target
    /// on the current template. Jobs keep the target they were made with,
    /// so without a new job the miner would go on at the old difficulty
    /// until the template provider sends the next template.
    pub(super) fn retargeted(&mut self, channel_id: u32) -> Vec<Action> {
        let template = self
            .current_template()
            .map(|t| (self.reward_outputs(&t), t));
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            return vec![];
        };
        let mut actions = vec![set_target(channel.conn, channel_id, &channel.target())];
        if let Some((outputs, template)) = template {
            actions.extend(channel.on_new_template(template, outputs));
        }
        actions
    }

    /// A channel whose duplicate detection is nearly full starts over on a
    /// new extranonce prefix ([`Channel::renew`]): the new prefix, then its
    /// jobs, active at once. The jobs sent before stay valid until the
    /// chain tip moves. With no prefix free, it takes the one held by the
    /// jobs sent before another channel's last renewal, if one can give it
    /// up ([`free_retired_prefix`](Self::free_retired_prefix)).
    pub(super) fn renew_channel(&mut self, channel_id: u32) -> Vec<Action> {
        let Some(mut channel) = self.channels.remove(&channel_id) else {
            return vec![];
        };
        let conn = channel.conn;
        let mut actions = Vec::new();
        let now_ms = self.clock.now();
        let mut renewed = channel.renew(&mut self.allocator, &self.config, now_ms);
        if matches!(renewed, Err((_, CAPACITY_EXHAUSTED)))
            && self.free_retired_prefix(channel.locking_key)
        {
            renewed = channel.renew(&mut self.allocator, &self.config, now_ms);
        }
        match renewed {
            Ok(()) => {
                info!(
                    conn,
                    channel_id, "duplicate detection nearly full: channel renewed"
                );
                if let Some(jds) = self.jds.as_deref().filter(|_| channel.custom_work) {
                    roles_common::lock(jds).on_channel_renewed(channel_id);
                }
                let prefix = channel.renewal_message();
                actions.extend(prefix.map(|m| Action::Send(conn, mining(m))));
                actions.extend(self.initial_jobs(&mut channel, true));
            }
            Err((e, _)) => warn!(conn, channel_id, "cannot renew the channel: {e}"),
        }
        self.channels.insert(channel_id, channel);
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

//! The upstream router, sans-IO: one connection to the pool carries every
//! miner's channel, and this struct knows which channel is whose.
//!
//! Inputs are what a miner's session sends ([`Router::on_miner_message`]),
//! a miner leaving, what the pool sends, and the connection's loss; the
//! output is a list of [`Action`]s for the IO layer (`upstream.rs`). The
//! router numbers channel opens (request ids), answers each pool message to
//! the miner that owns its channel, closes a leaving miner's channels,
//! drives the shared channel in aggregated mode ([`Aggregate`]) and attaches
//! the channel's locking key to every ehash notification, also for channels
//! that have closed since.

use std::collections::{HashMap, VecDeque};

use ehash::wire::str0255_truncated;
use ehash::{parse_user_identity, LockingKey};
use ehash_ext_sv2::EhashMessage;
use stratum_core::mining_sv2::CloseChannelOwned;
use stratum_core::parsers_sv2::MiningOwned;
use tracing::debug;

use crate::aggregate::{self, Aggregate};

/// Keys of closed channels kept for late notifications; beyond this the
/// channel closed longest ago is forgotten first.
const MAX_CLOSED_CHANNELS: usize = 100_000;

/// What the IO layer does next.
#[derive(Debug, Clone)]
pub enum Action {
    /// A pool message for one miner's session.
    ToMiner(u32, MiningOwned),
    /// A message for the pool.
    Upstream(MiningOwned),
    /// An ehash notification for the quote recorder.
    Quote(Notification),
    /// An acknowledgement of recorded notifications, for the pool.
    Ack(EhashMessage),
}

/// An ehash message from the pool with the locking key of its channel
/// (`None` when the router never knew the channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub message: EhashMessage,
    pub key: Option<LockingKey>,
}

/// Who a channel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Miner(u32),
    /// The shared channel of aggregated mode.
    Aggregate,
}

#[derive(Debug, Clone, Copy)]
struct ChannelInfo {
    owner: Owner,
    key: Option<LockingKey>,
}

pub struct Router {
    /// Request id -> the channel being opened.
    opening: HashMap<u32, ChannelInfo>,
    /// Request id -> the key of a channel being opened for a miner that
    /// left: the pool may send notices on it before it closes.
    abandoned: HashMap<u32, Option<LockingKey>>,
    channels: HashMap<u32, ChannelInfo>,
    /// Keys of channels that closed, for notifications that arrive after.
    closed_channels: HashMap<u32, Option<LockingKey>>,
    /// Closed channel ids, the earliest closed first.
    closed_order: VecDeque<u32>,
    next_request_id: u32,
    aggregate: Option<Aggregate>,
}

impl Router {
    /// A router for per-miner channels, or with `aggregate` one shared
    /// channel locked to that (the wallet's) key.
    pub fn new(aggregate: Option<LockingKey>) -> Self {
        Self {
            opening: HashMap::new(),
            abandoned: HashMap::new(),
            channels: HashMap::new(),
            closed_channels: HashMap::new(),
            closed_order: VecDeque::new(),
            next_request_id: 1,
            aggregate: aggregate.map(Aggregate::new),
        }
    }

    /// The locking key of a channel, open or closed.
    pub fn key_of(&self, channel_id: u32) -> Option<LockingKey> {
        self.channels
            .get(&channel_id)
            .and_then(|c| c.key)
            .or_else(|| self.closed_channels.get(&channel_id).copied().flatten())
    }

    /// A miner's session sent a message for the pool. One for a channel
    /// the miner does not hold is dropped: sent before the pool link was
    /// lost, it names a channel of the old link, whose id the new link may
    /// have given another miner (the session answered it when told of the
    /// loss).
    pub fn on_miner_message(&mut self, miner: u32, msg: MiningOwned) -> Vec<Action> {
        let Some(aggregate) = self.aggregate.as_mut() else {
            let channel_id = match &msg {
                MiningOwned::SubmitSharesExtended(s) => Some(s.channel_id),
                MiningOwned::UpdateChannel(u) => Some(u.channel_id),
                MiningOwned::CloseChannel(c) => Some(c.channel_id),
                _ => None,
            };
            if let Some(channel_id) = channel_id {
                let owner = self.channels.get(&channel_id).map(|c| c.owner);
                if owner != Some(Owner::Miner(miner)) {
                    debug!(
                        miner,
                        channel_id, "dropped a miner's message for a channel it does not hold"
                    );
                    return vec![];
                }
            }
            return vec![self.upstream(Owner::Miner(miner), msg)];
        };
        let outs = match msg {
            MiningOwned::OpenExtendedMiningChannel(open) => aggregate.on_open(miner, open),
            MiningOwned::SubmitSharesExtended(share) => aggregate.on_submit(miner, share),
            // One channel for all: its target is the pool's, and it closes
            // with its last member.
            MiningOwned::UpdateChannel(_) | MiningOwned::CloseChannel(_) => vec![],
            other => return vec![self.upstream(Owner::Miner(miner), other)],
        };
        self.deliver(outs)
    }

    /// A miner left: its channels close (the shared one with its last member).
    pub fn on_miner_left(&mut self, miner: u32) -> Vec<Action> {
        let (left, opening): (HashMap<u32, ChannelInfo>, _) = std::mem::take(&mut self.opening)
            .into_iter()
            .partition(|(_, c)| c.owner == Owner::Miner(miner));
        self.opening = opening;
        self.abandoned
            .extend(left.into_iter().map(|(request_id, c)| (request_id, c.key)));
        let mut actions = match self.aggregate.as_mut() {
            Some(a) => {
                let outs = a.on_leave(miner);
                self.deliver(outs)
            }
            None => vec![],
        };
        let mut closing: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, c)| c.owner == Owner::Miner(miner))
            .map(|(channel_id, _)| *channel_id)
            .collect();
        closing.sort_unstable();
        for channel_id in closing {
            self.forget_channel(channel_id);
            actions.push(close_channel(channel_id, "miner-disconnected"));
        }
        actions
    }

    /// A mining message from the pool.
    pub fn on_upstream(&mut self, msg: MiningOwned) -> Vec<Action> {
        match msg {
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => {
                let Some(info) = self.opening.remove(&s.request_id) else {
                    // Request ids are never reused: no one will mine on it.
                    // The pool may already have sent it the notices owed
                    // to its key: they keep that key.
                    debug!(
                        request_id = s.request_id,
                        channel_id = s.channel_id,
                        "channel opened for a miner that left: closing it"
                    );
                    if let Some(key) = self.abandoned.remove(&s.request_id) {
                        self.remember_closed(s.channel_id, key);
                    }
                    return vec![close_channel(s.channel_id, "miner-disconnected")];
                };
                self.channels.insert(s.channel_id, info);
                let msg = MiningOwned::OpenExtendedMiningChannelSuccess(s);
                self.deliver_to_owner(info.owner, msg)
            }
            MiningOwned::OpenMiningChannelError(e) => match self.opening.remove(&e.request_id) {
                Some(info) => {
                    self.deliver_to_owner(info.owner, MiningOwned::OpenMiningChannelError(e))
                }
                None => {
                    self.abandoned.remove(&e.request_id);
                    vec![]
                }
            },
            other => {
                let Some(channel_id) = channel_of(&other) else {
                    debug!("ignoring an upstream mining message without a channel route");
                    return vec![];
                };
                let Some(info) = self.channels.get(&channel_id).copied() else {
                    debug!(channel_id, "message for an unknown channel");
                    return vec![];
                };
                if matches!(other, MiningOwned::CloseChannel(_)) {
                    self.forget_channel(channel_id);
                }
                self.deliver_to_owner(info.owner, other)
            }
        }
    }

    /// An ehash message from the pool: to the recorder, with its channel's key.
    pub fn on_ehash(&self, message: EhashMessage) -> Vec<Action> {
        if let EhashMessage::MintQuoteAck(_) = message {
            debug!("ignoring an ehash acknowledgement from the pool");
            return vec![];
        }
        let key = self.key_of(message.channel_id());
        vec![Action::Quote(Notification { message, key })]
    }

    /// The notifications of these shares, received on `channel_id`, are
    /// recorded: their acknowledgements for the pool.
    pub fn acknowledge(channel_id: u32, share_hashes: &[[u8; 32]]) -> Vec<Action> {
        ehash_ext_sv2::acks(channel_id, share_hashes)
            .into_iter()
            .map(Action::Ack)
            .collect()
    }

    /// The pool connection is gone, and every channel with it.
    pub fn on_upstream_lost(&mut self) {
        let channel_ids: Vec<u32> = self.channels.keys().copied().collect();
        for channel_id in channel_ids {
            self.forget_channel(channel_id);
        }
        self.opening.clear();
        self.abandoned.clear();
        if let Some(a) = self.aggregate.as_mut() {
            a.reset();
        }
    }

    /// A message for the pool on behalf of `owner`: an open gets its
    /// request id, a close forgets the channel.
    fn upstream(&mut self, owner: Owner, mut msg: MiningOwned) -> Action {
        match &mut msg {
            MiningOwned::OpenExtendedMiningChannel(open) => {
                let request_id = self.next_request_id;
                self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
                open.request_id = request_id;
                let identity = String::from_utf8_lossy(open.user_identity.as_bytes()).to_string();
                let key = parse_user_identity(&identity).ok().map(|m| m.locking_key);
                self.opening.insert(request_id, ChannelInfo { owner, key });
            }
            MiningOwned::CloseChannel(c) => self.forget_channel(c.channel_id),
            _ => {}
        }
        Action::Upstream(msg)
    }

    /// A pool message for a channel's owner (through the aggregate for the
    /// shared channel).
    fn deliver_to_owner(&mut self, owner: Owner, msg: MiningOwned) -> Vec<Action> {
        match (owner, self.aggregate.as_mut()) {
            (Owner::Miner(miner), _) => vec![Action::ToMiner(miner, msg)],
            (Owner::Aggregate, Some(a)) => {
                let outs = match msg {
                    MiningOwned::OpenExtendedMiningChannelSuccess(s) => a.on_open_success(s),
                    MiningOwned::OpenMiningChannelError(e) => a.on_open_error(e),
                    other => a.on_upstream(other),
                };
                self.deliver(outs)
            }
            (Owner::Aggregate, None) => vec![],
        }
    }

    /// The aggregate's outputs as the router's.
    fn deliver(&mut self, outs: Vec<aggregate::Action>) -> Vec<Action> {
        outs.into_iter()
            .map(|out| match out {
                aggregate::Action::ToMiner(miner, m) => Action::ToMiner(miner, m),
                aggregate::Action::Upstream(m) => self.upstream(Owner::Aggregate, m),
            })
            .collect()
    }

    fn forget_channel(&mut self, channel_id: u32) {
        if let Some(info) = self.channels.remove(&channel_id) {
            self.remember_closed(channel_id, info.key);
        }
    }

    /// Keeps the key of a closed channel for notices that come after.
    fn remember_closed(&mut self, channel_id: u32, key: Option<LockingKey>) {
        // A reused channel id moves to the back: its old entry is stale.
        if self.closed_channels.insert(channel_id, key).is_some() {
            self.closed_order.retain(|id| *id != channel_id);
        }
        self.closed_order.push_back(channel_id);
        while self.closed_order.len() > MAX_CLOSED_CHANNELS {
            if let Some(oldest) = self.closed_order.pop_front() {
                self.closed_channels.remove(&oldest);
            }
        }
    }
}

/// CloseChannel of `channel_id`, for the pool.
fn close_channel(channel_id: u32, reason: &str) -> Action {
    Action::Upstream(MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id,
        reason_code: str0255_truncated(reason),
    }))
}

/// The channel a pool message is routed by.
fn channel_of(msg: &MiningOwned) -> Option<u32> {
    Some(match msg {
        MiningOwned::NewExtendedMiningJob(j) => j.channel_id,
        MiningOwned::SetNewPrevHash(p) => p.channel_id,
        MiningOwned::SetTarget(t) => t.channel_id,
        MiningOwned::SubmitSharesSuccess(s) => s.channel_id,
        MiningOwned::SubmitSharesError(e) => e.channel_id,
        MiningOwned::CloseChannel(c) => c.channel_id,
        MiningOwned::SetExtranoncePrefix(p) => p.channel_id,
        MiningOwned::UpdateChannelError(e) => e.channel_id,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;

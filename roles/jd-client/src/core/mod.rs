//! The job declaration client, without IO.
//!
//! Downstream it looks like a pool (SV2 mining, extended channels, the ehash
//! extension); upstream it is one connection to the pool. Each downstream
//! channel is one pool channel with the same id, user identity and
//! extranonce prefix, so shares, targets and ehash notifications pass
//! through unchanged, and acknowledgements go back up.
//!
//! What differs is where jobs come from ([`Mode`]):
//!
//! ```text
//!  own template provider --templates, txs--> declare at the JDS --token-->
//!    SetCustomMiningJob on every pool channel --job id--> job downstream
//! ```
//!
//! In [`Mode::Declared`] the upstream connection selects its own work, and
//! every job is a template of this client's own template provider,
//! declared at the pool's job declarator ([`jobs`]). In [`Mode::PoolJobs`]
//! (the fallback when the job declarator is unreachable or refuses) the
//! pool's own jobs pass through. A mode change is a new session: the io
//! layer reconnects upstream and closes the downstream connections, which
//! reconnect at once (a translator keeps its SV1 miners connected).

mod jobs;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use ehash::LockingKey;
use ehash_ext_sv2::{EhashMessage, EHASH_EXTENSION_TYPE};
use roles_common::sv2::message_name;
use stratum_core::binary_sv2::Seq064KOwned;
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::extensions_sv2::{RequestExtensionsOwned, RequestExtensionsSuccessOwned};
use stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessageOwned, CommonMessagesOwned, ExtensionsNegotiationOwned, ExtensionsOwned, MiningOwned,
};
use tracing::{debug, info, warn};

pub use jobs::DECLARED_TAG;

/// Identifies one downstream connection.
pub type DownId = u64;

/// Where jobs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Templates of this client's template provider, declared at the pool.
    Declared,
    /// The pool's own jobs (the job declarator is away or refused).
    PoolJobs,
}

/// What the io layer must do.
#[derive(Debug, Clone)]
pub enum Action {
    Upstream(AnyMessageOwned),
    UpstreamEhash(EhashMessage),
    Downstream(DownId, AnyMessageOwned),
    DownstreamEhash(DownId, EhashMessage),
    /// Close a downstream connection after what was queued for it.
    CloseDownstream(DownId, String),
    /// To the job declarator.
    Jds(AnyMessageOwned),
    /// To the template provider.
    Tp(AnyMessageOwned),
    /// Declared jobs cannot go on: mine the pool's jobs (a new session).
    FallBack(String),
}

#[derive(Debug, Default)]
struct Downstream {
    setup_done: bool,
    ehash: bool,
    channels: HashSet<u32>,
}

/// A channel: downstream and upstream at once (same id).
#[derive(Debug, Clone)]
struct Channel {
    owner: DownId,
    key: Option<LockingKey>,
    extranonce_prefix: Vec<u8>,
    extranonce_size: u16,
    /// The prev hash of the last job sent down (declared mode).
    prev_hash: Option<[u8; 32]>,
}

impl Channel {
    fn full_extranonce(&self) -> usize {
        self.extranonce_prefix.len() + self.extranonce_size as usize
    }
}

pub struct JdcCore {
    mode: Mode,
    downstreams: HashMap<DownId, Downstream>,
    /// Upstream request id -> the downstream and its request id.
    opening: HashMap<u32, (DownId, u32, Option<LockingKey>)>,
    next_request_id: u32,
    channels: HashMap<u32, Channel>,
    /// Owners of closed channels: the pool's notifications for shares
    /// accepted just before a close still reach them (latest last, bounded).
    closed: VecDeque<(u32, DownId)>,
    jobs: jobs::Jobs,
}

/// Closed channels remembered for late notifications.
const KEPT_CLOSED: usize = 65_536;

/// Seconds between declarations of a template the declarator refused as on
/// a stale tip (the pool's template provider behind this client's).
pub const STALE_RETRY_SECS: u64 = 2;
/// Such declarations sent again in a row before mining the pool's jobs
/// (30 s).
pub const MAX_STALE_RETRIES: u32 = 15;

fn mining(m: MiningOwned) -> AnyMessageOwned {
    AnyMessageOwned::Mining(m)
}

impl JdcCore {
    pub fn new(mode: Mode, user_identifier: &str) -> Self {
        Self {
            mode,
            downstreams: HashMap::new(),
            opening: HashMap::new(),
            next_request_id: 1,
            channels: HashMap::new(),
            closed: VecDeque::new(),
            jobs: jobs::Jobs::new(user_identifier),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Channels open through this client.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn on_downstream_connect(&mut self, id: DownId) {
        self.downstreams.insert(id, Downstream::default());
    }

    /// A downstream left: its channels close upstream too.
    pub fn on_downstream_disconnect(&mut self, id: DownId) -> Vec<Action> {
        let Some(down) = self.downstreams.remove(&id) else {
            return vec![];
        };
        self.opening.retain(|_, (owner, _, _)| *owner != id);
        self.closed.retain(|(_, owner)| *owner != id);
        let mut ids: Vec<u32> = down.channels.into_iter().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|channel_id| {
                self.channels.remove(&channel_id);
                Action::Upstream(mining(MiningOwned::CloseChannel(
                    stratum_core::mining_sv2::CloseChannelOwned {
                        channel_id,
                        reason_code: ehash::wire::str0255_truncated("downstream-disconnected"),
                    },
                )))
            })
            .collect()
    }

    /// Every downstream connection (closed by the io layer when a session ends).
    pub fn downstream_ids(&self) -> Vec<DownId> {
        self.downstreams.keys().copied().collect()
    }

    /// One message from a downstream connection.
    pub fn on_downstream(&mut self, id: DownId, msg: AnyMessageOwned) -> Vec<Action> {
        let Some(down) = self.downstreams.get_mut(&id) else {
            return vec![];
        };
        match (down.setup_done, msg) {
            (false, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m))) => {
                match setup_refusal(&m) {
                    Some(code) => vec![
                        Action::Downstream(
                            id,
                            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
                                SetupConnectionErrorOwned {
                                    flags: 0,
                                    error_code: ehash::wire::str0255_truncated(code),
                                },
                            )),
                        ),
                        Action::CloseDownstream(id, format!("SetupConnection refused: {code}")),
                    ],
                    None => {
                        down.setup_done = true;
                        vec![Action::Downstream(
                            id,
                            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(
                                SetupConnectionSuccessOwned {
                                    used_version: 2,
                                    flags: 0,
                                },
                            )),
                        )]
                    }
                }
            }
            (false, other) => vec![Action::CloseDownstream(
                id,
                format!("{} before SetupConnection", message_name(&other)),
            )],
            (
                true,
                AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                    ExtensionsNegotiationOwned::RequestExtensions(m),
                )),
            ) => self.on_request_extensions(id, m),
            (true, AnyMessageOwned::Mining(m)) => self.on_downstream_mining(id, m),
            (true, other) => {
                warn!(
                    down = id,
                    "ignoring {} from a downstream",
                    message_name(&other)
                );
                vec![]
            }
        }
    }

    fn on_request_extensions(&mut self, id: DownId, m: RequestExtensionsOwned) -> Vec<Action> {
        let requested = m.requested_extensions.into_inner();
        let ehash = requested.contains(&EHASH_EXTENSION_TYPE);
        if let Some(down) = self.downstreams.get_mut(&id) {
            down.ehash = ehash;
        }
        let supported: Vec<u16> = requested
            .into_iter()
            .filter(|e| *e == EHASH_EXTENSION_TYPE)
            .collect();
        vec![Action::Downstream(
            id,
            AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
                ExtensionsNegotiationOwned::RequestExtensionsSuccess(
                    RequestExtensionsSuccessOwned {
                        request_id: m.request_id,
                        supported_extensions: Seq064KOwned::new(supported).expect("fits"),
                    },
                ),
            )),
        )]
    }

    fn on_downstream_mining(&mut self, id: DownId, m: MiningOwned) -> Vec<Action> {
        match m {
            MiningOwned::OpenExtendedMiningChannel(open) => self.open_channel(id, open),
            MiningOwned::OpenStandardMiningChannel(open) => vec![Action::Downstream(
                id,
                mining(MiningOwned::OpenMiningChannelError(
                    OpenMiningChannelErrorOwned {
                        request_id: open.request_id,
                        error_code: ehash::wire::str0255_truncated(
                            "standard-channels-not-supported-for-custom-work",
                        ),
                    },
                )),
            )],
            MiningOwned::SubmitSharesExtended(share) => {
                if !self.owns(id, share.channel_id) {
                    debug!(
                        down = id,
                        channel_id = share.channel_id,
                        "share for a channel it does not own"
                    );
                    return vec![];
                }
                let mut actions = self.jobs.block_found(&share);
                actions.push(Action::Upstream(mining(MiningOwned::SubmitSharesExtended(
                    share,
                ))));
                actions
            }
            MiningOwned::UpdateChannel(u) if self.owns(id, u.channel_id) => {
                vec![Action::Upstream(mining(MiningOwned::UpdateChannel(u)))]
            }
            MiningOwned::CloseChannel(c) if self.owns(id, c.channel_id) => {
                self.forget_channel(c.channel_id);
                vec![Action::Upstream(mining(MiningOwned::CloseChannel(c)))]
            }
            other => {
                warn!(down = id, "ignoring {}", message_name(&mining(other)));
                vec![]
            }
        }
    }

    fn owns(&self, id: DownId, channel_id: u32) -> bool {
        self.channels
            .get(&channel_id)
            .is_some_and(|c| c.owner == id)
    }

    fn open_channel(
        &mut self,
        id: DownId,
        mut open: OpenExtendedMiningChannelOwned,
    ) -> Vec<Action> {
        let key = ehash::parse_user_identity(&open.user_identity.as_utf8_or_hex())
            .ok()
            .map(|identity| identity.locking_key);
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.opening.insert(request_id, (id, open.request_id, key));
        open.request_id = request_id;
        vec![Action::Upstream(mining(
            MiningOwned::OpenExtendedMiningChannel(open),
        ))]
    }

    /// An ehash acknowledgement from a downstream goes to the pool, for a
    /// channel of that downstream's (the pool takes acknowledgements per
    /// connection: one downstream's must not count for another's).
    pub fn on_downstream_ehash(&mut self, id: DownId, msg: EhashMessage) -> Vec<Action> {
        match msg {
            EhashMessage::MintQuoteAck(ref ack) if self.owner_of(ack.channel_id) == Some(id) => {
                vec![Action::UpstreamEhash(msg)]
            }
            EhashMessage::MintQuoteAck(ack) => {
                warn!(
                    down = id,
                    channel_id = ack.channel_id,
                    "ignoring a downstream's acknowledgement for a channel it does not hold"
                );
                vec![]
            }
            other => {
                warn!(
                    down = id,
                    "ignoring a downstream {}",
                    ehash_ext_sv2::MessageSet::name(&other)
                );
                vec![]
            }
        }
    }

    /// One message from the pool.
    pub fn on_upstream(&mut self, msg: AnyMessageOwned) -> Vec<Action> {
        let AnyMessageOwned::Mining(m) = msg else {
            debug!("ignoring {} from the pool", message_name(&msg));
            return vec![];
        };
        match m {
            MiningOwned::OpenExtendedMiningChannelSuccess(ok) => self.on_channel_opened(ok),
            MiningOwned::OpenMiningChannelError(mut e) => {
                let Some((owner, down_request, _)) = self.opening.remove(&e.request_id) else {
                    return vec![];
                };
                e.request_id = down_request;
                vec![Action::Downstream(
                    owner,
                    mining(MiningOwned::OpenMiningChannelError(e)),
                )]
            }
            MiningOwned::SetCustomMiningJobSuccess(ok) => {
                let channel_id = ok.channel_id;
                let view = self.channel_view(channel_id);
                let (actions, prev) = self.jobs.on_custom_job_set(ok, view.as_ref());
                if let (Some(prev), Some(c)) = (prev, self.channels.get_mut(&channel_id)) {
                    c.prev_hash = Some(prev);
                }
                actions
            }
            MiningOwned::SetCustomMiningJobError(e) => {
                // The pool may close a channel (idle, say) while a custom job
                // for it is on the way: its refusal says nothing of the job.
                let closed = !self.channels.contains_key(&e.channel_id);
                self.jobs.on_custom_job_refused(e, closed)
            }
            MiningOwned::SetExtranoncePrefix(p) => {
                let channel_id = p.channel_id;
                // The tip stays: the job set again on the new prefix goes down
                // active at once, and the downstream keeps the jobs it has
                // (the pool takes their shares until the tip moves).
                if let Some(c) = self.channels.get_mut(&channel_id) {
                    c.extranonce_prefix = p.extranonce_prefix.as_bytes().to_vec();
                }
                let mut actions = self.to_owner(channel_id, MiningOwned::SetExtranoncePrefix(p));
                if self.mode == Mode::Declared {
                    let view = self.channel_view(channel_id);
                    actions.extend(self.jobs.set_on_channel(view.as_ref()));
                }
                actions
            }
            other => self.relay_to_owner(other),
        }
    }

    /// The pool opened a channel a downstream asked for: the downstream is
    /// answered, and in declared mode the channel gets its job.
    fn on_channel_opened(&mut self, mut ok: OpenExtendedMiningChannelSuccessOwned) -> Vec<Action> {
        let Some((owner, down_request, key)) = self.opening.remove(&ok.request_id) else {
            return vec![];
        };
        let channel = Channel {
            owner,
            key,
            extranonce_prefix: ok.extranonce_prefix.as_bytes().to_vec(),
            extranonce_size: ok.extranonce_size,
            prev_hash: None,
        };
        let channel_id = ok.channel_id;
        info!(down = owner, channel_id, "channel opened through the pool");
        self.channels.insert(channel_id, channel);
        if let Some(down) = self.downstreams.get_mut(&owner) {
            down.channels.insert(channel_id);
        }
        ok.request_id = down_request;
        let mut actions = vec![Action::Downstream(
            owner,
            mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok)),
        )];
        if self.mode == Mode::Declared {
            let (view, views) = (self.channel_view(channel_id), self.channel_views());
            actions.extend(
                self.jobs
                    .on_channel_opened(self.mode, view.as_ref(), &views),
            );
        }
        actions
    }

    /// A message for one channel: to the channel's owner, and the channel
    /// forgotten on a close, its jobs retargeted on a new target.
    fn relay_to_owner(&mut self, other: MiningOwned) -> Vec<Action> {
        let Some(channel_id) = channel_of(&other) else {
            debug!("ignoring {} from the pool", message_name(&mining(other)));
            return vec![];
        };
        let is_close = matches!(other, MiningOwned::CloseChannel(_));
        let retarget = matches!(other, MiningOwned::SetTarget(_)) && self.mode == Mode::Declared;
        let mut actions = self.to_owner(channel_id, other);
        if is_close {
            self.forget_channel(channel_id);
        }
        if retarget {
            let views = self.channel_views();
            actions.extend(self.jobs.on_target_changed(self.mode, &views, channel_id));
        }
        actions
    }

    /// A channel closed: its owner is remembered for late notifications.
    fn forget_channel(&mut self, channel_id: u32) {
        let Some(c) = self.channels.remove(&channel_id) else {
            return;
        };
        if let Some(down) = self.downstreams.get_mut(&c.owner) {
            down.channels.remove(&channel_id);
        }
        self.closed.push_back((channel_id, c.owner));
        while self.closed.len() > KEPT_CLOSED {
            self.closed.pop_front();
        }
    }

    fn to_owner(&self, channel_id: u32, m: MiningOwned) -> Vec<Action> {
        match self.channels.get(&channel_id) {
            Some(c) => vec![Action::Downstream(c.owner, mining(m))],
            None => vec![],
        }
    }

    /// An ehash message from the pool: to the channel's owner, if it
    /// negotiated the extension.
    pub fn on_upstream_ehash(&mut self, msg: EhashMessage) -> Vec<Action> {
        let channel_id = match &msg {
            EhashMessage::MintQuoteNotification(n) => n.channel_id,
            EhashMessage::MintQuoteFailure(f) => f.channel_id,
            EhashMessage::MintQuoteAck(_) => return vec![],
        };
        let Some(owner) = self.owner_of(channel_id) else {
            return vec![];
        };
        if !self.downstreams.get(&owner).is_some_and(|d| d.ehash) {
            return vec![];
        }
        vec![Action::DownstreamEhash(owner, msg)]
    }

    /// The downstream of a channel, open or closed lately: a share accepted
    /// just before its channel closed is notified (and acknowledged) late.
    fn owner_of(&self, channel_id: u32) -> Option<DownId> {
        self.channels.get(&channel_id).map(|c| c.owner).or_else(|| {
            self.closed
                .iter()
                .rev()
                .find(|(id, _)| *id == channel_id)
                .map(|(_, owner)| *owner)
        })
    }

    fn channel_view(&self, channel_id: u32) -> Option<jobs::ChannelView> {
        let c = self.channels.get(&channel_id)?;
        Some(jobs::ChannelView {
            channel_id,
            owner: c.owner,
            key: c.key,
            extranonce_prefix: c.extranonce_prefix.clone(),
            full_extranonce: c.full_extranonce(),
            prev_hash: c.prev_hash,
        })
    }

    fn channel_views(&self) -> Vec<jobs::ChannelView> {
        let mut ids: Vec<u32> = self.channels.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.channel_view(id))
            .collect()
    }

    /// One message from the template provider.
    pub fn on_tp(&mut self, msg: AnyMessageOwned) -> Vec<Action> {
        let views = self.channel_views();
        self.jobs.on_tp(msg, self.mode, &views)
    }

    /// The job declarator connection is up: tokens are asked for.
    pub fn on_jds_connected(&mut self) -> Vec<Action> {
        self.jobs.on_jds_connected()
    }

    /// One message from the job declarator.
    pub fn on_jds(&mut self, msg: AnyMessageOwned) -> Vec<Action> {
        let views = self.channel_views();
        self.jobs.on_jds(msg, &views)
    }

    /// Timer, every [`STALE_RETRY_SECS`]: a template the declarator refused
    /// as on a stale tip is declared again.
    pub fn on_stale_retry(&mut self) -> Vec<Action> {
        let views = self.channel_views();
        self.jobs.retry_stale(self.mode, &views)
    }
}

/// A downstream's SetupConnection: the mining protocol, version 2, and no
/// work selection of its own (this client selects the work).
fn setup_refusal(m: &SetupConnectionOwned) -> Option<&'static str> {
    if m.protocol != Protocol::MiningProtocol {
        return Some("unsupported-protocol");
    }
    if m.min_version > 2 || m.max_version < 2 {
        return Some("protocol-version-mismatch");
    }
    if m.flags & 0b10 != 0 {
        return Some("unsupported-feature-flags");
    }
    None
}

/// The channel a pool message is for.
fn channel_of(m: &MiningOwned) -> Option<u32> {
    Some(match m {
        MiningOwned::NewExtendedMiningJob(j) => j.channel_id,
        MiningOwned::SetNewPrevHash(p) => p.channel_id,
        MiningOwned::SetTarget(t) => t.channel_id,
        MiningOwned::SubmitSharesSuccess(s) => s.channel_id,
        MiningOwned::SubmitSharesError(e) => e.channel_id,
        MiningOwned::CloseChannel(c) => c.channel_id,
        MiningOwned::UpdateChannelError(e) => e.channel_id,
        _ => return None,
    })
}

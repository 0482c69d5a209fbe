//! Sockets and tasks: the downstream listener and connections
//! (`downstream`), the template provider link (`template_provider`), the
//! timers (`timers`). All protocol decisions are made by [`PoolCore`]; this
//! module applies its [`Action`]s.

mod downstream;
mod jds;
mod template_provider;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ehash::LockingKey;
use roles_common::stats_publisher::{now_ms, StatsPublisher};
pub(crate) use roles_common::sv2::Outbound;
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tokio::sync::{broadcast, mpsc};

use crate::mining::{AcceptedShare, Action, ConnId, PoolCore};

pub(crate) use downstream::{accept_loop, Listening};
pub(crate) use jds::jds_accept_loop;
pub(crate) use template_provider::{tp_loop, TpLink};
pub(crate) use timers::{every, idle_tick, log_stats, vardiff_tick, Tick};

/// Receives every accepted share and every opened channel (the ehash flow).
pub trait AcceptedShareSink: Send + Sync + 'static {
    fn accepted(&self, share: AcceptedShare);

    /// A channel opened on `conn` (whose ehash negotiation is `ehash`).
    fn channel_opened(
        &self,
        _conn: ConnId,
        _channel_id: u32,
        _key: Option<LockingKey>,
        _ehash: bool,
    ) {
    }

    /// `conn` (which negotiated the ehash extension) acknowledged the
    /// notifications of these shares.
    fn acked(&self, _conn: ConnId, _share_hashes: Vec<[u8; 32]>) {}

    /// `conn` closed.
    fn connection_closed(&self, _conn: ConnId) {}
}

impl AcceptedShareSink for mpsc::UnboundedSender<AcceptedShare> {
    fn accepted(&self, share: AcceptedShare) {
        let _ = self.send(share);
    }
}

/// Something that happened, for tests and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolEvent {
    TemplateProviderConnected,
    /// The link ended, or a connection attempt failed; the next attempt
    /// is in `retry_in`.
    TemplateProviderDisconnected {
        reason: String,
        retry_in: Duration,
    },
    /// A downstream finished its Noise handshake.
    Connected(ConnId),
    /// A downstream connection closed, with the reason logged.
    ConnectionClosed {
        conn: Option<ConnId>,
        reason: String,
    },
    /// A block solution went to the template provider.
    BlockSubmitted {
        template_id: u64,
    },
}

/// Acknowledgement round trips kept for monitoring at most.
const MAX_ACK_ROUND_TRIPS: usize = 100_000;

pub(crate) struct Shared {
    pub(crate) core: Mutex<PoolCore>,
    /// The core's job declarator, locked without the core.
    jds: Option<Arc<Mutex<crate::jds::JobDeclarator>>>,
    /// Held from the core's decision until its messages are queued: see
    /// [`Shared::apply`].
    in_order: Mutex<()>,
    pub(crate) writers: Mutex<HashMap<ConnId, mpsc::Sender<Outbound>>>,
    /// Job declaration clients, for answers that come later than their
    /// request (numbered apart from `writers`).
    pub(crate) jd_writers:
        Mutex<HashMap<crate::jds::JdConnId, mpsc::UnboundedSender<crate::jds::JdLate>>>,
    solutions: mpsc::UnboundedSender<SubmitSolutionOwned>,
    pub(crate) events: broadcast::Sender<PoolEvent>,
    sink: Option<Arc<dyn AcceptedShareSink>>,
    pub(crate) stats: StatsPublisher,
    /// Ehash notifications the flow could not keep until acknowledged.
    pub(crate) notices_refused: AtomicU64,
    /// How long acknowledged notifications took, latest last (bounded).
    ack_round_trips: Mutex<VecDeque<Duration>>,
}

impl Shared {
    /// The pool core, locked. A task that panicked holding it does not
    /// take the others down with it.
    pub(crate) fn core(&self) -> MutexGuard<'_, PoolCore> {
        roles_common::lock(&self.core)
    }

    /// Runs `f` on the job declarator, if the pool runs one (the core is
    /// not locked meanwhile).
    pub(crate) fn with_jds<T: Default>(
        &self,
        f: impl FnOnce(&mut crate::jds::JobDeclarator) -> T,
    ) -> T {
        self.jds
            .as_deref()
            .map(|jds| f(&mut roles_common::lock(jds)))
            .unwrap_or_default()
    }

    /// Whether the pool runs a job declarator.
    pub(crate) fn has_jds(&self) -> bool {
        self.jds.is_some()
    }

    /// Runs `f` on the core and carries out what it decided before any
    /// other task's next decision: messages to a connection leave in the
    /// order the core made them (a vardiff tick's job on the old tip never
    /// after the template provider's SetNewPrevHash, a template never
    /// before its channel's open success).
    pub(crate) fn apply(&self, f: impl FnOnce(&mut PoolCore) -> Vec<Action>) {
        let _in_order = roles_common::lock(&self.in_order);
        let actions = f(&mut self.core());
        self.dispatch(actions);
    }

    pub(crate) fn new(
        core: PoolCore,
        solutions: mpsc::UnboundedSender<SubmitSolutionOwned>,
        sink: Option<Arc<dyn AcceptedShareSink>>,
        stats: StatsPublisher,
    ) -> Self {
        Self {
            jds: core.jds_handle(),
            core: Mutex::new(core),
            in_order: Mutex::new(()),
            writers: Mutex::new(HashMap::new()),
            jd_writers: Mutex::new(HashMap::new()),
            solutions,
            events: broadcast::channel(1024).0,
            sink,
            stats,
            notices_refused: AtomicU64::new(0),
            ack_round_trips: Mutex::new(VecDeque::new()),
        }
    }

    /// Keeps the latest acknowledgement round trips for monitoring.
    pub(crate) fn record_ack_round_trips(&self, round_trips: Vec<Duration>) {
        let mut kept = self.ack_round_trips.lock().expect("round trips lock");
        kept.extend(round_trips);
        while kept.len() > MAX_ACK_ROUND_TRIPS {
            kept.pop_front();
        }
    }

    /// The acknowledgement round trips recorded since the last call.
    pub(crate) fn take_ack_round_trips(&self) -> Vec<Duration> {
        self.ack_round_trips
            .lock()
            .expect("round trips lock")
            .drain(..)
            .collect()
    }

    /// `conn` acknowledged ehash notifications (its ehash negotiation checked here).
    pub(crate) fn ehash_acked(&self, conn: ConnId, share_hashes: Vec<[u8; 32]>) -> bool {
        let negotiated = self.core().connection_has_ehash(conn);
        if let (true, Some(sink)) = (negotiated, &self.sink) {
            sink.acked(conn, share_hashes);
        }
        negotiated
    }

    /// `conn` closed: the ehash flow keeps what it did not acknowledge.
    pub(crate) fn connection_closed(&self, conn: ConnId) {
        if let Some(sink) = &self.sink {
            sink.connection_closed(conn);
        }
    }

    pub(crate) fn push(&self, conn: ConnId, out: Outbound) -> bool {
        let mut writers = self.writers.lock().expect("writers lock");
        let Some(tx) = writers.get(&conn) else {
            return false;
        };
        match tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropping its sender ends the connection task ("send queue overflow").
                writers.remove(&conn);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn dispatch(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(conn, msg) => {
                    let opened = opened_channel(&msg);
                    self.push(conn, Outbound::Message(msg));
                    // Announced only once its success is queued, so that no
                    // notification for the channel can overtake it.
                    let announced = opened.and_then(|channel_id| {
                        let mut core = self.core();
                        Some((channel_id, core.announce_channel(channel_id)?))
                    });
                    if let (Some((channel_id, (key, ehash))), Some(sink)) = (announced, &self.sink)
                    {
                        sink.channel_opened(conn, channel_id, key, ehash);
                    }
                }
                Action::Close(conn, reason) => {
                    self.push(conn, Outbound::Close(reason));
                }
                Action::SubmitSolution(solution) => {
                    let template_id = solution.template_id;
                    if self.solutions.send(solution).is_ok() {
                        let _ = self.events.send(PoolEvent::BlockSubmitted { template_id });
                    }
                }
                Action::Accepted(share) => {
                    if let Some(sink) = &self.sink {
                        sink.accepted(share);
                    }
                }
                Action::Stats(event) => self.stats.publish(event.into_message(now_ms())),
                Action::JobDeclaration(conn, msg) => {
                    if let Some(tx) = self.jd_writers.lock().expect("jd writers lock").get(&conn) {
                        let _ = tx.send(msg);
                    }
                }
            }
        }
    }
}

/// The channel a message announces as opened, if it is such a message.
fn opened_channel(msg: &AnyMessageOwned) -> Option<u32> {
    match msg {
        AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(m)) => {
            Some(m.channel_id)
        }
        AnyMessageOwned::Mining(MiningOwned::OpenStandardMiningChannelSuccess(m)) => {
            Some(m.channel_id)
        }
        _ => None,
    }
}

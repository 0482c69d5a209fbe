//! Runs the ehash flow around the sans-IO [`QuoteFlow`]: accepted shares
//! are journaled in the outbox, then asked for at the mint; the mint's
//! answers become notifications (0xC0/0xC1) to the owning connection, or
//! successes and errors in defer mode. A share stays in the outbox until a
//! translator acknowledges its notification: after a restart the mint is
//! asked again (it answers with the same quote) and the notification is
//! owed again.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ehash::pending::ShareResponseMode;
use ehash::wire::{str0255_truncated, MessageSet};
use ehash::LockingKey;
use mint_quote_sv2::{MintQuoteRequestOwned, MintStatsResponse};
use roles_common::log_limit::LogLimit;
use roles_common::pid_lock::{pid_note, PidLock, PidLockError};
use roles_common::private;
use roles_common::stats_publisher::now_ms;
use stats_sv2::{link, MintStats, QuoteCreated};
use stratum_core::mining_sv2::{SubmitSharesErrorOwned, SubmitSharesSuccessOwned};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::flow::{Action, Directory, QuoteFlow, QuoteFlowConfig, QuoteShare, MINT_QUEUE_FULL};
use super::mint_link::{self, MintEvent, MintLink, MintLinkConfig};
use super::notices::Overflow;
use super::outbox::{Outbox, Owed, Synced};
use super::persist::{decode_owed, encode_owed, retire_undelivered_json};
use super::request::RequestFrame;
use crate::config::MintSettings;
use crate::io::{AcceptedShareSink, Outbound, Shared};
use crate::mining::{downstream_id, AcceptedShare, ConnId};
use crate::PoolError;

/// SubmitSharesError code when the outbox cannot journal a share.
const OUTBOX_ERROR: &str = "ehash-outbox-error";
/// Quote requests the mint holds at once: within the link's queue, and
/// twice the mint's largest group of quotes written together, so it reads
/// the next group while it writes one.
const AT_MINT_LIMIT: usize = 1024;
/// A share whose coinbase proof could not be built (the mint would refuse it).
const NO_COINBASE_PROOF: &str = "ehash-no-coinbase-proof";

/// How often unacknowledged notifications are looked at for a resend.
const RESEND_CHECK: Duration = Duration::from_secs(5);
/// The lock file of the pool holding a state dir.
const LOCK_FILE: &str = "pool.lock";

pub(crate) enum FlowInput {
    Share(Box<AcceptedShare>),
    /// A translator acknowledged notifications on `conn`.
    Acked {
        conn: ConnId,
        share_hashes: Vec<[u8; 32]>,
    },
    ConnectionClosed(ConnId),
    ChannelOpened {
        conn: ConnId,
        channel_id: u32,
        key: Option<LockingKey>,
        ehash: bool,
    },
}

/// What the pool core hands the flow (never blocks the core).
pub(crate) struct FlowSink(mpsc::UnboundedSender<FlowInput>);

impl AcceptedShareSink for FlowSink {
    fn accepted(&self, share: AcceptedShare) {
        let _ = self.0.send(FlowInput::Share(Box::new(share)));
    }

    fn channel_opened(&self, conn: ConnId, channel_id: u32, key: Option<LockingKey>, ehash: bool) {
        let _ = self.0.send(FlowInput::ChannelOpened {
            conn,
            channel_id,
            key,
            ehash,
        });
    }

    fn acked(&self, conn: ConnId, share_hashes: Vec<[u8; 32]>) {
        let _ = self.0.send(FlowInput::Acked { conn, share_hashes });
    }

    fn connection_closed(&self, conn: ConnId) {
        let _ = self.0.send(FlowInput::ConnectionClosed(conn));
    }
}

/// The flow, prepared before the pool starts (the outbox is opened and its
/// owed requests read), started once the pool's shared state exists.
pub(crate) struct PreparedFlow {
    /// This pool alone writes the state dir's journal while the flow runs.
    lock: PidLock,
    settings: MintSettings,
    unit_bits: u8,
    outbox: Outbox,
    owed: Owed,
    inputs: mpsc::UnboundedReceiver<FlowInput>,
    pub(crate) mint_stats: Arc<Mutex<Option<MintStatsResponse>>>,
}

pub(crate) fn prepare(
    settings: &MintSettings,
    state_dir: &Path,
    unit_bits: u8,
) -> Result<(FlowSink, PreparedFlow), PoolError> {
    let lock = lock_state_dir(state_dir)?;
    let (outbox, owed) = Outbox::open(&state_dir.join("outbox.journal"))
        .map_err(|e| PoolError::Setup(e.to_string()))?;
    retire_undelivered_json(state_dir);
    let (tx, inputs) = mpsc::unbounded_channel();
    Ok((
        FlowSink(tx),
        PreparedFlow {
            lock,
            settings: settings.clone(),
            unit_bits,
            outbox,
            owed,
            inputs,
            mint_stats: Arc::new(Mutex::new(None)),
        },
    ))
}

/// Takes the state dir for this pool: a second pool on it would compact the
/// journal under the first, which would go on writing to a file no longer
/// named (everything it journals after, lost at its next start).
fn lock_state_dir(state_dir: &Path) -> Result<PidLock, PoolError> {
    let setup = |e: String| PoolError::Setup(e);
    private::create_dir(state_dir)
        .map_err(|e| setup(format!("state_dir {}: {e}", state_dir.display())))?;
    PidLock::take(&state_dir.join(LOCK_FILE)).map_err(|e| match e {
        PidLockError::Held { pid, .. } => setup(format!(
            "state_dir {} is in use by another pool{}: one pool per state_dir",
            state_dir.display(),
            pid_note(pid)
        )),
        e => setup(e.to_string()),
    })
}

/// Channel ownership as the pool core knows it now.
struct CoreDirectory<'a>(&'a Shared);

impl Directory for CoreDirectory<'_> {
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        self.0.core().channel_owner(channel_id)
    }

    fn connection(&self, conn: ConnId) -> Option<bool> {
        self.0.core().connection_ehash(conn)
    }

    fn ehash_channel_with_key(
        &self,
        key: &LockingKey,
        except: &[(ConnId, u32)],
    ) -> Option<(ConnId, u32)> {
        self.0.core().ehash_channel_with_key(key, except)
    }
}

/// The channel journaled shares come back on, with the journal's verdict.
type Journaled = mpsc::UnboundedSender<(QuoteShare, Result<(), String>)>;

impl PreparedFlow {
    pub(crate) async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let PreparedFlow {
            lock: _lock,
            settings,
            unit_bits,
            outbox,
            owed,
            mut inputs,
            mint_stats,
        } = self;
        let mut task = Running::new(&settings);
        let owed_count = owed.len();
        task.restore(owed, &outbox).await;
        info!(
            mode = ?task.mode,
            owed = owed_count,
            "ehash flow started: every accepted share becomes a quote at the mint"
        );
        let (link, mut mint_events) = MintLink::spawn(
            MintLinkConfig {
                transport: settings.link_transport(),
                authority_public_key: settings.authority_public_key,
                identity_secret_key: settings.identity_secret_key,
                unit_bits,
                stats_interval: Duration::from_secs(settings.stats_interval_secs),
                silence_limit: mint_link::silence_limit(Duration::from_secs(
                    settings.stats_interval_secs,
                )),
            },
            shutdown.clone(),
        );
        // Journaled shares come back here; appends run concurrently so one
        // disk sync covers many shares.
        let (journaled_tx, mut journaled) = mpsc::unbounded_channel();
        let mut exec = Executor {
            shared: &shared,
            link: &link,
            outbox: &outbox,
            refused_per_key: LogLimit::default(),
            refused_in_total: LogLimit::default(),
        };
        let mut resend = tokio::time::interval(RESEND_CHECK);
        loop {
            let deadline = task.flow.next_deadline();
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = resend.tick() => task.flow.on_resend_tick(Instant::now(), &CoreDirectory(&shared)),
                Some(input) = inputs.recv() => task.on_input(input, &shared, &outbox, &journaled_tx),
                Some((share, result)) = journaled.recv() => task.on_journaled(share, result),
                Some(event) = mint_events.recv() => task.on_mint_event(event, &shared, &mint_stats),
                _ = sleep_until(deadline) => task.flow.on_tick(Instant::now(), &CoreDirectory(&shared)),
            };
            task.apply(actions, &mut exec).await;
        }
        if let Err(e) = outbox.close().await {
            warn!("outbox not flushed at shutdown: {e}");
        }
        info!(
            pending = task.flow.pending(),
            not_yet_sent = task.flow.waiting_to_send(),
            unacknowledged = task.flow.notices().len(),
            "ehash flow stopped; shares not yet acknowledged stay in the outbox"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The running flow: the sans-IO [`QuoteFlow`] and what only its task holds.
struct Running {
    flow: QuoteFlow,
    mode: ShareResponseMode,
    capacity: usize,
    /// Annotate mode: journaled shares waiting for room in the pending set.
    overflow: VecDeque<QuoteShare>,
    /// Shares the journal replayed at start, waiting to be asked of the
    /// mint: they go in while fewer than [`AT_MINT_LIMIT`] shares, and
    /// less than half the pending set, are pending, behind the shares
    /// miners send now, so that a backlog (every notification a day's
    /// departed keys are owed) never holds up or refuses those. (While live
    /// shares keep the mint that busy, replays wait in the journal.)
    replays: VecDeque<QuoteShare>,
}

impl Running {
    fn new(settings: &MintSettings) -> Self {
        let mode = settings.mode();
        let capacity = settings.pending_capacity;
        let flow = QuoteFlow::new(QuoteFlowConfig {
            mode,
            pending_capacity: capacity,
            at_mint_limit: AT_MINT_LIMIT,
            mint_timeout: Duration::from_secs(settings.timeout_secs),
            undelivered_per_key: settings.undelivered_per_key,
            undelivered_total: settings.undelivered_total,
        });
        Self {
            flow,
            mode,
            capacity,
            overflow: VecDeque::new(),
            replays: VecDeque::new(),
        }
    }

    /// After a restart: the shares the outbox still holds are asked for again.
    async fn restore(&mut self, owed: Owed, outbox: &Outbox) {
        let now = Instant::now();
        for (hash, payload) in owed {
            match decode_owed(&payload) {
                // Sent to the mint as soon as the link is up.
                Some(share) => self.replays.push_back(share),
                None => {
                    error!(
                        "outbox entry {} is unreadable or its locking key is no key \
                         (a request of an earlier version, without a coinbase proof?), \
                         dropping it",
                        ehash::share::hex_be(&hash)
                    );
                    outbox.done(hash).await;
                }
            }
        }
        // Before the link is up: nothing to send yet.
        drop(self.admit_replays(now));
    }

    fn on_input(
        &mut self,
        input: FlowInput,
        shared: &Shared,
        outbox: &Outbox,
        journaled: &Journaled,
    ) -> Vec<Action> {
        match input {
            FlowInput::Share(share) => self.on_accepted(*share, outbox, journaled),
            FlowInput::ChannelOpened {
                conn,
                channel_id,
                key,
                ehash,
            } => self
                .flow
                .on_channel_opened(conn, channel_id, key, ehash, Instant::now()),
            FlowInput::Acked { conn, share_hashes } => {
                self.flow.on_ack(conn, &share_hashes, Instant::now())
            }
            FlowInput::ConnectionClosed(conn) => {
                self.flow
                    .on_connection_closed(conn, &CoreDirectory(shared), Instant::now())
            }
        }
    }

    fn on_mint_event(
        &mut self,
        event: MintEvent,
        shared: &Shared,
        mint_stats: &Mutex<Option<MintStatsResponse>>,
    ) -> Vec<Action> {
        match event {
            MintEvent::Up => {
                shared.stats.link_status(link::MINT, true);
                self.flow.on_mint_up()
            }
            MintEvent::Down { reason } => {
                debug!("mint link down: {reason}");
                shared.stats.link_status(link::MINT, false);
                vec![]
            }
            MintEvent::Answer(answer) => {
                let mut actions = self.flow.on_mint_answer(answer, &CoreDirectory(shared));
                actions.extend(self.admit_overflow());
                actions.extend(self.admit_replays(Instant::now()));
                actions
            }
            MintEvent::Stats(stats) => {
                debug!(?stats, "mint stats");
                shared.stats.publish(MintStats {
                    quotes_unpaid: stats.quotes_unpaid,
                    quotes_paid: stats.quotes_paid,
                    quotes_issued: stats.quotes_issued,
                    ehash_quoted: stats.ehash_quoted,
                    ehash_issued: stats.ehash_issued,
                    timestamp: now_ms(),
                });
                *mint_stats.lock().expect("stats lock") = Some(stats);
                vec![]
            }
        }
    }

    /// Executes what the flow decided.
    async fn apply(&mut self, actions: Vec<Action>, exec: &mut Executor<'_>) {
        exec.run(actions).await;
        exec.run(self.flow.flush_successes()).await;
    }

    /// A share the core accepted: journal it (concurrently), or acknowledge it
    /// at once when there is no quote to ask for.
    fn on_accepted(
        &mut self,
        share: AcceptedShare,
        outbox: &Outbox,
        journaled: &Journaled,
    ) -> Vec<Action> {
        let key = match share.locking_key {
            Some(key) if share.amount > 0 => key,
            _ => {
                debug!(
                    channel_id = share.channel_id,
                    amount = share.amount,
                    "share worth no quote (no locking key or 0 ehash): acknowledged without one"
                );
                self.flow.acknowledge(
                    share.connection_id,
                    share.channel_id,
                    share.sequence_number,
                    share.amount,
                );
                return vec![];
            }
        };
        let request = share
            .proof
            .as_ref()
            .ok_or_else(|| "no coinbase proof".to_string())
            .and_then(|proof| {
                MintQuoteRequestOwned::new(&share.header, share.target, share.amount, key, proof)
                    .and_then(RequestFrame::new)
                    .map_err(|e| e.to_string())
            });
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                // Unprovable work would be refused by the mint: refused here,
                // so the miner is not told it earned ehash it never gets.
                error!(
                    "share {} cannot be quoted: {e}",
                    ehash::share::hex_be(&share.share_hash)
                );
                return vec![Action::ShareError {
                    conn: share.connection_id,
                    channel_id: share.channel_id,
                    sequence_number: share.sequence_number,
                    code: NO_COINBASE_PROOF,
                }];
            }
        };
        let quote_share = QuoteShare {
            conn: Some(share.connection_id),
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            request,
            locking_key: key,
            notify: share.ehash,
        };
        let payload = encode_owed(&quote_share);
        self.flow
            .expect(share.connection_id, share.channel_id, share.sequence_number);
        let journaled = journaled.clone();
        let synced = move |result| drop(journaled.send((quote_share, result)));
        outbox.append(share.share_hash, payload, Synced::new(synced));
        vec![]
    }

    /// A share is on disk: track it and ask the mint; annotate mode acknowledges it now.
    fn on_journaled(&mut self, share: QuoteShare, result: Result<(), String>) -> Vec<Action> {
        let conn = share.conn.expect("live shares have a connection");
        let (channel_id, sequence_number) = (share.channel_id, share.sequence_number);
        let hash = share.request.share_hash();
        let refuse = |code| Action::ShareError {
            conn,
            channel_id,
            sequence_number,
            code,
        };
        if let Err(e) = result {
            error!("cannot journal share {}: {e}", ehash::share::hex_be(&hash));
            self.flow.refused(conn, channel_id, sequence_number);
            return vec![refuse(OUTBOX_ERROR)];
        }
        let annotate = self.mode == ShareResponseMode::Annotate;
        if self.flow.is_full() && annotate && self.overflow.len() < self.capacity {
            // Backpressure: its success waits until the mint catches up.
            self.overflow.push_back(share);
            return vec![];
        }
        let amount = share.request.amount();
        match self.flow.on_share(share, Instant::now()) {
            Ok(actions) => {
                if annotate {
                    self.flow
                        .acknowledge(conn, channel_id, sequence_number, amount);
                }
                actions
            }
            Err(_) => {
                warn!(
                    "too many shares waiting for the mint: refusing a share with {MINT_QUEUE_FULL}"
                );
                self.flow.refused(conn, channel_id, sequence_number);
                vec![refuse(MINT_QUEUE_FULL), Action::Done(hash)]
            }
        }
    }

    /// Moves replayed shares into the pending set while fewer than
    /// [`AT_MINT_LIMIT`], and less than half of it, are pending.
    fn admit_replays(&mut self, now: Instant) -> Vec<Action> {
        let limit = AT_MINT_LIMIT.min(self.capacity / 2).max(1);
        let mut actions = vec![];
        while self.flow.pending() < limit && !self.flow.is_full() {
            let Some(share) = self.replays.pop_front() else {
                break;
            };
            actions.extend(self.flow.on_share(share, now).unwrap_or_default());
        }
        actions
    }

    /// Moves held-back shares into the pending set as it frees up.
    fn admit_overflow(&mut self) -> Vec<Action> {
        let mut actions = vec![];
        while !self.flow.is_full() {
            let Some(share) = self.overflow.pop_front() else {
                break;
            };
            if let Some(conn) = share.conn {
                self.flow.acknowledge(
                    conn,
                    share.channel_id,
                    share.sequence_number,
                    share.request.amount(),
                );
            }
            actions.extend(
                self.flow
                    .on_share(share, Instant::now())
                    .unwrap_or_default(),
            );
        }
        actions
    }
}

struct Executor<'a> {
    shared: &'a Shared,
    link: &'a MintLink,
    outbox: &'a Outbox,
    /// Notifications refused past a bound, logged at most once an interval
    /// for each bound, with a count: with nobody taking a key's
    /// notifications, every one of them is refused.
    refused_per_key: LogLimit,
    refused_in_total: LogLimit,
}

impl Executor<'_> {
    async fn run(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendToMint(request) => {
                    // Not queued: still owed, asked again later.
                    self.link.send(request);
                }
                Action::Success { conn, batch } => {
                    self.shared.push(
                        conn,
                        Outbound::Message(AnyMessageOwned::Mining(
                            MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                                channel_id: batch.channel_id,
                                last_sequence_number: batch.last_sequence_number,
                                new_submits_accepted_count: batch.new_submits_accepted_count,
                                new_shares_sum: batch.new_shares_sum,
                            }),
                        )),
                    );
                }
                Action::ShareError {
                    conn,
                    channel_id,
                    sequence_number,
                    code,
                } => {
                    self.shared.push(
                        conn,
                        Outbound::Message(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(
                            SubmitSharesErrorOwned {
                                channel_id,
                                sequence_number,
                                error_code: str0255_truncated(code),
                            },
                        ))),
                    );
                }
                Action::Notify { conn, message } => {
                    self.shared.push(conn, Outbound::Ehash(message));
                }
                Action::Done(hash) => self.outbox.done(hash).await,
                Action::Refused { overflow, message } => {
                    // Logged and counted, never another key's notice evicted.
                    let limit = match overflow {
                        Overflow::Key => &mut self.refused_per_key,
                        Overflow::Total => &mut self.refused_in_total,
                    };
                    if let Some(left_out) = limit.check(Instant::now()) {
                        let more = match left_out {
                            0 => String::new(),
                            n => format!(" ({n} more not kept since the last line)"),
                        };
                        warn!(
                            ?overflow,
                            "too many unacknowledged ehash notifications: not keeping a {}; \
                             its quote stays at the mint for its key's owner{more}",
                            message.name()
                        );
                    }
                    self.shared
                        .notices_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Action::Acknowledged(round_trips) => {
                    self.shared.record_ack_round_trips(round_trips);
                }
                Action::QuoteCreated {
                    conn,
                    channel_id,
                    amount,
                } => self.shared.stats.publish(QuoteCreated {
                    downstream_id: downstream_id(conn),
                    channel_id,
                    amount,
                    timestamp: now_ms(),
                }),
            }
        }
    }
}

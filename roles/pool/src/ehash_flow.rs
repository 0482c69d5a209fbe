//! Runs the ehash flow around the sans-IO [`QuoteFlow`]: accepted shares
//! are journaled in the outbox, then asked for at the mint; the mint's
//! answers become notifications (0xC0/0xC1) to the owning connection, or
//! successes and errors in defer mode. Undelivered notifications are kept in
//! `<state_dir>/undelivered.json` across restarts.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ehash::pending::{ShareResponseMode, TrackError};
use ehash::wire::{str0255_truncated, MessageSet};
use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;
use mint_quote_sv2::{MintQuoteMessage, MintQuoteRequestOwned, MintStatsResponse};
use roles_common::stats_publisher::now_ms;
use serde::{Deserialize, Serialize};
use stats_sv2::{link, MintStats, QuoteCreated};
use stratum_core::mining_sv2::{SubmitSharesErrorOwned, SubmitSharesSuccessOwned};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::MintSettings;
use crate::core::{AcceptedShare, ConnId};
use crate::io::{downstream_id, AcceptedShareSink, Outbound, Shared};
use crate::mint_link::{MintEvent, MintLink, MintLinkConfig};
use crate::outbox::{Outbox, Owed};
use crate::quote_flow::{
    Action, Directory, QuoteFlow, QuoteFlowConfig, QuoteShare, UndeliveredNotification,
    MINT_QUEUE_FULL,
};
use crate::PoolError;

/// SubmitSharesError code when the outbox cannot journal a share.
const OUTBOX_ERROR: &str = "ehash-outbox-error";

pub(crate) enum FlowInput {
    Share(AcceptedShare),
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
        let _ = self.0.send(FlowInput::Share(share));
    }

    fn channel_opened(&self, conn: ConnId, channel_id: u32, key: Option<LockingKey>, ehash: bool) {
        let _ = self.0.send(FlowInput::ChannelOpened {
            conn,
            channel_id,
            key,
            ehash,
        });
    }
}

/// The flow, prepared before the pool starts (the outbox is opened and its
/// owed requests read), started once the pool's shared state exists.
pub(crate) struct PreparedFlow {
    settings: MintSettings,
    unit_bits: u8,
    outbox: Outbox,
    owed: Owed,
    undelivered_path: PathBuf,
    inputs: mpsc::UnboundedReceiver<FlowInput>,
    pub(crate) mint_stats: Arc<Mutex<Option<MintStatsResponse>>>,
}

pub(crate) fn prepare(
    settings: &MintSettings,
    state_dir: &Path,
    unit_bits: u8,
) -> Result<(FlowSink, PreparedFlow), PoolError> {
    let (outbox, owed) = Outbox::open(&state_dir.join("outbox.journal"))
        .map_err(|e| PoolError::Setup(e.to_string()))?;
    let (tx, inputs) = mpsc::unbounded_channel();
    Ok((
        FlowSink(tx),
        PreparedFlow {
            settings: settings.clone(),
            unit_bits,
            outbox,
            owed,
            undelivered_path: state_dir.join("undelivered.json"),
            inputs,
            mint_stats: Arc::new(Mutex::new(None)),
        },
    ))
}

/// Channel ownership as the pool core knows it now.
struct CoreDirectory<'a>(&'a Shared);

impl Directory for CoreDirectory<'_> {
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        self.0
            .core
            .lock()
            .expect("core lock")
            .channel_owner(channel_id)
    }

    fn ehash_channel_with_key(&self, key: &LockingKey) -> Option<(ConnId, u32)> {
        self.0
            .core
            .lock()
            .expect("core lock")
            .ehash_channel_with_key(key)
    }
}

/// The outbox payload of a share: channel id, sequence number, request frame.
fn encode_owed(share: &QuoteShare) -> Vec<u8> {
    let mut out = share.channel_id.to_le_bytes().to_vec();
    out.extend_from_slice(&share.sequence_number.to_le_bytes());
    out.extend(
        MintQuoteMessage::MintQuoteRequest(share.request.clone())
            .to_frame_bytes()
            .expect("a quote request fits a frame"),
    );
    out
}

fn decode_owed(payload: &[u8]) -> Option<QuoteShare> {
    let channel_id = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let sequence_number = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    match MintQuoteMessage::decode_frame(&mut payload.get(8..)?.to_vec()).ok()? {
        MintQuoteMessage::MintQuoteRequest(request) => Some(QuoteShare {
            conn: None,
            channel_id,
            sequence_number,
            request,
        }),
        _ => None,
    }
}

/// One kept notification as stored in `undelivered.json`.
#[derive(Serialize, Deserialize)]
struct StoredNotification {
    locking_key: String,
    sequence_number: u32,
    /// The ehash extension frame, hex.
    frame: String,
}

fn load_undelivered(path: &Path) -> Vec<(LockingKey, UndeliveredNotification)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let stored: Vec<StoredNotification> = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            error!("{}: unreadable, keeping it aside: {e}", path.display());
            let _ = std::fs::rename(path, path.with_extension("json.unreadable"));
            return vec![];
        }
    };
    stored
        .into_iter()
        .filter_map(|s| {
            let key: LockingKey = s.locking_key.parse().ok()?;
            let mut frame = hex::decode(&s.frame).ok()?;
            let message = EhashMessage::decode_frame(&mut frame).ok()?;
            Some((
                key,
                UndeliveredNotification {
                    sequence_number: s.sequence_number,
                    message,
                },
            ))
        })
        .collect()
}

fn save_undelivered(path: &Path, flow: &QuoteFlow) {
    let stored: Vec<StoredNotification> = flow
        .undelivered()
        .iter()
        .map(|(key, n)| StoredNotification {
            locking_key: key.to_string(),
            sequence_number: n.sequence_number,
            frame: hex::encode(n.message.clone().to_frame_bytes().expect("fits a frame")),
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec(&stored)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        error!(
            "cannot save undelivered notifications to {}: {e}",
            path.display()
        );
    }
}

impl PreparedFlow {
    pub(crate) async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let settings = self.settings;
        let mode = settings.mode();
        let capacity = settings.pending_capacity;
        let mut flow = QuoteFlow::new(QuoteFlowConfig {
            mode,
            pending_capacity: capacity,
            mint_timeout: Duration::from_secs(settings.timeout_secs),
            undelivered_per_key: settings.undelivered_per_key,
            undelivered_total: settings.undelivered_total,
        });
        let outbox = self.outbox;
        let now = Instant::now();
        let mut overflow: VecDeque<QuoteShare> = VecDeque::new();
        let owed = self.owed.len();
        for (hash, payload) in self.owed {
            match decode_owed(&payload) {
                // Sent to the mint as soon as the link is up.
                Some(share) => match flow.on_share(share.clone(), now) {
                    Ok(_) => {}
                    Err(_) => overflow.push_back(share),
                },
                None => {
                    error!(
                        "outbox entry {} is unreadable, dropping it",
                        ehash::share::hex_be(&hash)
                    );
                    outbox.done(hash).await;
                }
            }
        }
        for (key, n) in load_undelivered(&self.undelivered_path) {
            flow.keep_undelivered(key, n);
        }
        let mut saved_version = flow.undelivered_version();
        info!(
            mode = ?mode,
            owed,
            undelivered = flow.undelivered().len(),
            "ehash flow started: every accepted share becomes a quote at the mint"
        );

        let (link, mut mint_events) = MintLink::spawn(
            MintLinkConfig {
                address: settings.address.clone(),
                authority_public_key: settings.authority_public_key,
                identity_secret_key: settings.identity_secret_key,
                unit_bits: self.unit_bits,
                stats_interval: Duration::from_secs(settings.stats_interval_secs),
            },
            shutdown.clone(),
        );
        let mut inputs = self.inputs;
        // Journaled shares come back here; appends run concurrently so one
        // disk sync covers many shares.
        let (journaled_tx, mut journaled) =
            mpsc::unbounded_channel::<(QuoteShare, Result<(), String>)>();
        let exec = Executor {
            shared: &shared,
            link: &link,
            outbox: &outbox,
        };

        loop {
            let deadline = flow.next_deadline();
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(input) = inputs.recv() => match input {
                    FlowInput::Share(share) => on_accepted(&mut flow, share, &outbox, &journaled_tx),
                    FlowInput::ChannelOpened { conn, channel_id, key, ehash } => {
                        flow.on_channel_opened(conn, channel_id, key, ehash)
                    }
                },
                Some((share, result)) = journaled.recv() => {
                    on_journaled(&mut flow, &mut overflow, share, result, mode, capacity)
                }
                Some(event) = mint_events.recv() => match event {
                    MintEvent::Up => {
                        shared.stats.link_status(link::MINT, true);
                        flow.on_mint_up()
                    }
                    MintEvent::Down { reason } => {
                        debug!("mint link down: {reason}");
                        shared.stats.link_status(link::MINT, false);
                        vec![]
                    }
                    MintEvent::Answer(answer) => {
                        let mut actions = flow.on_mint_answer(answer, &CoreDirectory(&shared));
                        actions.extend(admit_overflow(&mut flow, &mut overflow));
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
                        *self.mint_stats.lock().expect("stats lock") = Some(stats);
                        vec![]
                    }
                },
                _ = sleep_until(deadline) => flow.on_tick(Instant::now(), &CoreDirectory(&shared)),
            };
            // A request is marked done in the outbox only after what it led to
            // is handed on: kept notifications are on disk first.
            let (done, actions): (Vec<Action>, Vec<Action>) = actions
                .into_iter()
                .partition(|a| matches!(a, Action::Done(_)));
            exec.run(actions).await;
            exec.run(flow.flush_successes()).await;
            if flow.undelivered_version() != saved_version {
                save_undelivered(&self.undelivered_path, &flow);
                saved_version = flow.undelivered_version();
            }
            exec.run(done).await;
        }
        save_undelivered(&self.undelivered_path, &flow);
        info!(
            pending = flow.pending(),
            "ehash flow stopped; pending quote requests stay in the outbox"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A share the core accepted: journal it (concurrently), or acknowledge it
/// at once when there is no quote to ask for.
fn on_accepted(
    flow: &mut QuoteFlow,
    share: AcceptedShare,
    outbox: &Outbox,
    journaled: &mpsc::UnboundedSender<(QuoteShare, Result<(), String>)>,
) -> Vec<Action> {
    let key = match share.locking_key {
        Some(key) if share.amount > 0 => key,
        _ => {
            debug!(
                channel_id = share.channel_id,
                amount = share.amount,
                "share worth no quote (no locking key or 0 ehash): acknowledged without one"
            );
            flow.acknowledge(
                share.connection_id,
                share.channel_id,
                share.sequence_number,
                share.amount,
            );
            return vec![];
        }
    };
    let quote_share = QuoteShare {
        conn: Some(share.connection_id),
        channel_id: share.channel_id,
        sequence_number: share.sequence_number,
        request: MintQuoteRequestOwned::new(&share.header, share.target, share.amount, key),
    };
    let (outbox, journaled) = (outbox.clone(), journaled.clone());
    tokio::spawn(async move {
        let result = outbox
            .append(share.share_hash, encode_owed(&quote_share))
            .await
            .map_err(|e| e.to_string());
        let _ = journaled.send((quote_share, result));
    });
    vec![]
}

/// A share is on disk: track it and ask the mint; annotate mode acknowledges it now.
fn on_journaled(
    flow: &mut QuoteFlow,
    overflow: &mut VecDeque<QuoteShare>,
    share: QuoteShare,
    result: Result<(), String>,
    mode: ShareResponseMode,
    capacity: usize,
) -> Vec<Action> {
    let conn = share.conn.expect("live shares have a connection");
    let refuse = |code| Action::ShareError {
        conn,
        channel_id: share.channel_id,
        sequence_number: share.sequence_number,
        code,
    };
    if let Err(e) = result {
        error!(
            "cannot journal share {}: {e}",
            ehash::share::hex_be(&share.request.share_hash())
        );
        return vec![refuse(OUTBOX_ERROR)];
    }
    match flow.on_share(share.clone(), Instant::now()) {
        Ok(actions) => {
            if mode == ShareResponseMode::Annotate {
                flow.acknowledge(
                    conn,
                    share.channel_id,
                    share.sequence_number,
                    share.request.amount,
                );
            }
            actions
        }
        Err(TrackError::Full)
            if mode == ShareResponseMode::Annotate && overflow.len() < capacity =>
        {
            // Backpressure: its success waits until the mint catches up.
            overflow.push_back(share);
            vec![]
        }
        Err(_) => {
            warn!("too many shares waiting for the mint: refusing a share with {MINT_QUEUE_FULL}");
            vec![
                refuse(MINT_QUEUE_FULL),
                Action::Done(share.request.share_hash()),
            ]
        }
    }
}

/// Moves held-back shares into the pending set as it frees up.
fn admit_overflow(flow: &mut QuoteFlow, overflow: &mut VecDeque<QuoteShare>) -> Vec<Action> {
    let mut actions = vec![];
    while !flow.is_full() {
        let Some(share) = overflow.pop_front() else {
            break;
        };
        if let Some(conn) = share.conn {
            flow.acknowledge(
                conn,
                share.channel_id,
                share.sequence_number,
                share.request.amount,
            );
        }
        actions.extend(flow.on_share(share, Instant::now()).unwrap_or_default());
    }
    actions
}

struct Executor<'a> {
    shared: &'a Shared,
    link: &'a MintLink,
    outbox: &'a Outbox,
}

impl Executor<'_> {
    async fn run(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendToMint(request) => {
                    self.link.send(request).await;
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
                Action::Evicted(message) => {
                    warn!(
                        "undelivered notification evicted (limits reached): {}",
                        message.name()
                    );
                }
                Action::QuoteCreated {
                    conn,
                    channel_id,
                    amount,
                } => self.shared.stats.publish(QuoteCreated {
                    // 0: the connection of a share replayed after a restart is unknown.
                    downstream_id: conn.map_or(0, downstream_id),
                    channel_id,
                    amount,
                    timestamp: now_ms(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_payload_round_trips() {
        let key: LockingKey = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap();
        let share = QuoteShare {
            conn: Some(3),
            channel_id: 7,
            sequence_number: 9,
            request: MintQuoteRequestOwned::new(&[5u8; 80], [0xff; 32], 12, key),
        };
        let decoded = decode_owed(&encode_owed(&share)).unwrap();
        assert_eq!(
            decoded,
            QuoteShare {
                conn: None,
                ..share
            }
        );
        assert_eq!(decode_owed(&[1, 2, 3]), None);
    }
}

//! The ehash flow of the pool, without IO: every accepted share becomes a
//! quote request to the mint, and every answer becomes a notification to the
//! connection that owns the share's channel (or, in `defer` mode, the share's
//! success or error).
//!
//! The flow's task (`task.rs`) journals each share in the outbox before
//! handing it here, executes the returned [`Action`]s, and calls
//! [`QuoteFlow::on_tick`] at [`QuoteFlow::next_deadline`]. A share leaves
//! the outbox ([`Action::Done`]) only once its notification is acknowledged
//! by a translator ([`Notices`]), or when there is nobody to notify.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ehash::pending::{PendingShares, ShareResponseMode, SuccessBatch, SuccessBatcher, TrackError};
use ehash::share::hex_be as hex;
use ehash::LockingKey;
use ehash_ext_sv2::{EhashMessage, MintQuoteFailureOwned, MintQuoteNotificationOwned};
use mint_quote_sv2::{error_code, MintQuoteErrorOwned, MintQuoteMessage, MintQuoteResponseOwned};

use super::notices::{Notice, Notices, Overflow};
use super::request::RequestFrame;
use crate::mining::ConnId;
use in_order::InOrder;
use window::Window;

mod in_order;
mod window;

/// `SubmitSharesError` codes of the defer mode.
pub const MINT_QUOTE_FAILED: &str = "mint-quote-failed";
pub const MINT_TIMEOUT: &str = "mint-timeout";
pub const MINT_QUEUE_FULL: &str = "mint-queue-full";
/// A share the same as one still owed from before a restart.
pub const DUPLICATE_SHARE: &str = "duplicate-share";

/// A notification not acknowledged this long after it was sent is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
/// A notification this long in flight on one connection (sent again every
/// [`RESEND_AFTER`]) without an acknowledgement is taken off it, and goes
/// to another open channel with its key or waits for the key's next one: a
/// peer can take notifications and never acknowledge some (a job
/// declaration client whose downstream left, or did not negotiate the
/// extension), which would hold the connection's room for good. A live
/// translator acknowledges within a second or so of the notification.
pub const TAKE_OFF_AFTER: Duration = Duration::from_secs(4 * 30);
/// A notification waiting this long for a channel with its key is given up
/// and its share done: the key's owner may never come back, and every share
/// kept would be asked of the mint again at each restart. The quote stays
/// at the mint, listed by key for its owner.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone)]
pub struct QuoteFlowConfig {
    pub mode: ShareResponseMode,
    /// Shares waiting for the mint at most.
    pub pending_capacity: usize,
    /// Requests sent to the mint and not answered at most; the other
    /// pending shares wait in the pool until answers free room.
    pub at_mint_limit: usize,
    /// Defer mode: the share's error after this long without an answer.
    /// Annotate mode: the request is sent again after this long.
    pub mint_timeout: Duration,
    /// Notifications kept per locking key / in total until a translator
    /// acknowledges them.
    pub undelivered_per_key: usize,
    pub undelivered_total: usize,
}

/// An accepted share with a quote to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteShare {
    /// `None` for a share replayed from the outbox after a restart.
    pub conn: Option<ConnId>,
    pub channel_id: u32,
    pub sequence_number: u32,
    pub request: RequestFrame,
    /// The request's locking key, parsed once: every notification needs it.
    pub locking_key: LockingKey,
    /// Its connection negotiated the ehash extension: only then is anyone
    /// told of its quote (a client without it never reads one, and its
    /// miner lists the quote at the mint instead).
    pub notify: bool,
}

impl QuoteShare {
    fn share_hash(&self) -> [u8; 32] {
        self.request.share_hash()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SendToMint(RequestFrame),
    /// Defer mode: acknowledge ready shares of a channel.
    Success {
        conn: ConnId,
        batch: SuccessBatch,
    },
    /// Defer mode: the share failed.
    ShareError {
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        code: &'static str,
    },
    /// 0xC0 / 0xC1 to a connection that negotiated the extension.
    Notify {
        conn: ConnId,
        message: EhashMessage,
    },
    /// The share's notification is acknowledged, or nobody is to get one:
    /// mark it done in the outbox.
    Done([u8; 32]),
    /// Notifications were acknowledged this long after they were sent.
    Acknowledged(Vec<Duration>),
    /// A notification could not be kept until acknowledged (logged, counted);
    /// its quote stays at the mint, listed for its key's owner.
    Refused {
        overflow: Overflow,
        message: EhashMessage,
    },
    /// The mint created the quote of a pending share (for the stats service).
    QuoteCreated {
        conn: ConnId,
        channel_id: u32,
        amount: u64,
    },
}

/// Who owns a channel now: the pool core answers.
pub trait Directory {
    /// The connection owning `channel_id`, and whether it negotiated the
    /// ehash extension.
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)>;

    /// `Some(negotiated the ehash extension)` while `conn` is connected.
    fn connection(&self, conn: ConnId) -> Option<bool>;

    /// An open channel locked to `key` on a connection that negotiated the
    /// ehash extension, other than those in `except`: (connection, channel id).
    fn ehash_channel_with_key(
        &self,
        key: &LockingKey,
        except: &[(ConnId, u32)],
    ) -> Option<(ConnId, u32)>;
}

/// A directory for tests: channel id -> (connection, ehash negotiated, key).
impl Directory for HashMap<u32, (ConnId, bool, Option<LockingKey>)> {
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        self.get(&channel_id)
            .map(|(conn, ehash, _)| (*conn, *ehash))
    }

    /// A connection is connected while it owns a channel here.
    fn connection(&self, conn: ConnId) -> Option<bool> {
        self.values()
            .find(|(c, _, _)| *c == conn)
            .map(|(_, ehash, _)| *ehash)
    }

    fn ehash_channel_with_key(
        &self,
        key: &LockingKey,
        except: &[(ConnId, u32)],
    ) -> Option<(ConnId, u32)> {
        self.iter()
            .filter(|(_, (_, ehash, k))| *ehash && k.as_ref() == Some(key))
            .map(|(channel, (conn, _, _))| (*conn, *channel))
            .filter(|c| !except.contains(c))
            .min_by_key(|(_, channel)| *channel)
    }
}

pub struct QuoteFlow {
    config: QuoteFlowConfig,
    pending: PendingShares<QuoteShare>,
    window: Window,
    batcher: SuccessBatcher<ConnId>,
    notices: Notices,
    /// Shares the defer mode already answered with an error.
    given_up: HashSet<[u8; 32]>,
    /// Successes held until the earlier shares of their channel are answered.
    in_order: InOrder,
}

impl QuoteFlow {
    pub fn new(config: QuoteFlowConfig) -> Self {
        Self {
            pending: PendingShares::new(config.pending_capacity, config.mint_timeout),
            window: Window::new(config.at_mint_limit),
            batcher: SuccessBatcher::default(),
            notices: Notices::new(config.undelivered_per_key, config.undelivered_total),
            given_up: HashSet::new(),
            in_order: InOrder::default(),
            config,
        }
    }

    pub fn mode(&self) -> ShareResponseMode {
        self.config.mode
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn is_full(&self) -> bool {
        self.pending.is_full()
    }

    /// Notifications sent or waiting, not yet acknowledged.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.next_expiry()
    }

    // --- channels -----------------------------------------------------------------

    /// A channel opened: notifications waiting for its key go out on it (if
    /// its connection negotiated the extension).
    pub fn on_channel_opened(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        key: Option<LockingKey>,
        ehash: bool,
        now: Instant,
    ) -> Vec<Action> {
        let (Some(key), true) = (key, ehash) else {
            return vec![];
        };
        self.notices
            .deliver_waiting(&key, conn, channel_id, now)
            .into_iter()
            .map(|(_, notice)| Action::Notify {
                conn,
                message: notice.message,
            })
            .collect()
    }

    /// A translator acknowledged notifications: their shares are done, and
    /// notifications queued for the connection take their room.
    pub fn on_ack(&mut self, conn: ConnId, share_hashes: &[[u8; 32]], now: Instant) -> Vec<Action> {
        let acked = self.notices.ack(conn, share_hashes, now);
        if acked.is_empty() {
            return vec![];
        }
        let round_trips = acked.iter().map(|(_, rtt)| *rtt).collect();
        let mut actions: Vec<Action> = acked.into_iter().map(|(h, _)| Action::Done(h)).collect();
        actions.push(Action::Acknowledged(round_trips));
        actions.extend(self.release(conn, now));
        actions
    }

    /// Notifications queued for `conn` that fit in flight on it now: sent.
    fn release(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        self.notices
            .release(conn, now)
            .into_iter()
            .map(|notice| Action::Notify {
                conn,
                message: notice.message,
            })
            .collect()
    }

    /// A connection closed: what it did not acknowledge goes to an open
    /// channel with the same key (one may have opened on another connection
    /// before this one was seen closing), or waits for the key's next one.
    pub fn on_connection_closed(
        &mut self,
        conn: ConnId,
        dir: &impl Directory,
        now: Instant,
    ) -> Vec<Action> {
        self.in_order.connection_closed(conn);
        let mut actions = vec![];
        for key in self.notices.connection_closed(conn, now) {
            if let Some((owner, channel_id)) = dir.ehash_channel_with_key(&key, &[]) {
                actions.extend(self.on_channel_opened(owner, channel_id, Some(key), true, now));
            }
        }
        actions
    }

    /// Notifications unacknowledged for [`TAKE_OFF_AFTER`]: taken off their
    /// connection (see there), for [`RESEND_AFTER`]: sent again; those
    /// waiting for [`WAIT_AT_MOST`]: given up, their shares done.
    pub fn on_resend_tick(&mut self, now: Instant, dir: &impl Directory) -> Vec<Action> {
        let mut actions = self.take_off_unacknowledged(now, dir);
        actions.extend(self.notices.overdue(now, RESEND_AFTER).into_iter().map(
            |(conn, notice)| Action::Notify {
                conn,
                message: notice.message,
            },
        ));
        let expired = self.notices.expired(now, WAIT_AT_MOST);
        if !expired.is_empty() {
            tracing::info!(
                notices = expired.len(),
                "ehash notifications waited {WAIT_AT_MOST:?} for a channel with their key: \
                 given up, their quotes stay at the mint, listed by key for their owners"
            );
        }
        actions.extend(expired.into_iter().map(|(hash, _)| Action::Done(hash)));
        actions
    }

    /// Takes off their connections the notifications it never acknowledged:
    /// each goes to an open channel with its key other than those it (or
    /// another waiting for the key) was ever taken off, or waits for the
    /// key's next; notifications queued for the connections take the room
    /// made.
    fn take_off_unacknowledged(&mut self, now: Instant, dir: &impl Directory) -> Vec<Action> {
        let taken_off = self.notices.take_off_unacknowledged(now, TAKE_OFF_AFTER);
        if taken_off.is_empty() {
            return vec![];
        }
        tracing::warn!(
            notices = taken_off.len(),
            "ehash notifications unacknowledged for {TAKE_OFF_AFTER:?} though sent again: \
             taken off their connections, for another channel with their key"
        );
        let mut actions = vec![];
        let (mut keys, mut conns) = (HashSet::new(), HashSet::new());
        for t in &taken_off {
            conns.insert(t.conn);
            if !keys.insert(t.key) {
                continue;
            }
            let never_acknowledged = self.notices.taken_off_channels(&t.key);
            if let Some((conn, channel_id)) =
                dir.ehash_channel_with_key(&t.key, &never_acknowledged)
            {
                actions.extend(self.on_channel_opened(conn, channel_id, Some(t.key), true, now));
            }
        }
        for conn in conns {
            actions.extend(self.release(conn, now));
        }
        actions
    }

    // --- shares and the mint -----------------------------------------------------

    /// An accepted (and journaled) share: ask the mint, now or once it
    /// holds fewer than `at_mint_limit` requests. `Err` when the pending
    /// set is full (defer: answer the share with [`MINT_QUEUE_FULL`];
    /// annotate: hold the connection until there is room).
    pub fn on_share(&mut self, share: QuoteShare, now: Instant) -> Result<Vec<Action>, TrackError> {
        let hash = share.share_hash();
        let request = share.request.clone();
        let id = share
            .conn
            .map(|conn| (conn, share.channel_id, share.sequence_number));
        match self.pending.track(hash, share, now) {
            Ok(()) if self.window.admit(hash) => Ok(vec![Action::SendToMint(request)]),
            Ok(()) => Ok(self.send_waiting(now)),
            // A replay of a share already waiting: it is asked for already.
            // A live share the same as one replayed after a restart (sent
            // again by its miner) is a duplicate, deferred or not.
            Err(TrackError::AlreadyPending) => Ok(id
                .filter(|_| self.config.mode == ShareResponseMode::Defer)
                .map(|(conn, channel_id, sequence_number)| {
                    self.refused(conn, channel_id, sequence_number);
                    Action::ShareError {
                        conn,
                        channel_id,
                        sequence_number,
                        code: DUPLICATE_SHARE,
                    }
                })
                .into_iter()
                .collect()),
            Err(TrackError::Full) => Err(TrackError::Full),
        }
    }

    /// A share the core accepted, whose answer waits (for its journal
    /// record; deferred, for its quote too). Expected before it is
    /// journaled, so no success of a later share of its channel goes out
    /// before its own answer: every path from here answers it
    /// ([`QuoteFlow::refused`] for those the task refuses).
    pub fn expect(&mut self, conn: ConnId, channel_id: u32, sequence_number: u32) {
        self.in_order.expect(conn, channel_id, sequence_number);
    }

    /// An expected share was answered with an error; the successes it
    /// held back go out after it.
    pub fn refused(&mut self, conn: ConnId, channel_id: u32, sequence_number: u32) {
        self.answered(conn, channel_id, sequence_number, None, true);
    }

    /// The mint link came (back) up: ask again for everything the mint
    /// held (the rest waits its turn).
    pub fn on_mint_up(&self) -> Vec<Action> {
        self.window
            .sent()
            .filter_map(|hash| self.pending.get(hash))
            .map(|share| Action::SendToMint(share.request.clone()))
            .collect()
    }

    /// Shares waiting in the pool, not yet sent to the mint.
    pub fn waiting_to_send(&self) -> usize {
        self.window.waiting()
    }

    /// Sends waiting shares while the mint has room; each one's timeout
    /// starts when it is sent.
    fn send_waiting(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = vec![];
        loop {
            let pending = &self.pending;
            let Some(hash) = self.window.next(|hash| pending.contains(hash)) else {
                break;
            };
            let share = self.pending.resolve(&hash).expect("owed");
            actions.push(Action::SendToMint(share.request.clone()));
            self.pending
                .track(hash, share, now)
                .expect("just removed, so there is room");
        }
        actions
    }

    /// A `MintQuoteResponse` or `MintQuoteError` from the mint.
    pub fn on_mint_answer(
        &mut self,
        answer: MintQuoteMessage,
        dir: &impl Directory,
    ) -> Vec<Action> {
        match answer {
            MintQuoteMessage::MintQuoteResponse(response) => self.on_quote(response, dir),
            MintQuoteMessage::MintQuoteError(error) => self.on_quote_error(error, dir),
            other => {
                tracing::warn!("ignoring {:?} from the mint", other);
                vec![]
            }
        }
    }

    /// The mint created the share's quote: notify (and, deferred, acknowledge) it.
    fn on_quote(&mut self, response: MintQuoteResponseOwned, dir: &impl Directory) -> Vec<Action> {
        let hash = response.share_hash.to_array();
        let given_up = self.given_up.remove(&hash);
        let Some(share) = self.pending.resolve(&hash) else {
            // Answered before (a request sent again): its notification is
            // on its way already.
            tracing::debug!("mint answered for share {} that is not pending", hex(&hash));
            return vec![];
        };
        self.window.answered(&hash);
        let now = Instant::now();
        let mut actions = self.send_waiting(now);
        // A share replayed after a restart was most likely quoted before it
        // (it replays until its notification is acknowledged): not counted
        // again, and its downstream is unknown.
        actions.extend(share.conn.map(|conn| Action::QuoteCreated {
            conn,
            channel_id: share.channel_id,
            amount: share.request.amount(),
        }));
        if self.config.mode == ShareResponseMode::Defer && !given_up {
            self.settle(&share, Some(share.request.amount()), dir);
        }
        let notification = EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            share_hash: response.share_hash,
            quote_id: response.quote_id,
            keyset_id: response.keyset_id,
            amount: share.request.amount(),
        });
        actions.extend(self.route(&share, notification, dir, now));
        actions
    }

    /// The mint refused the share's quote: for now (asked again after the
    /// timeout; deferred, the share's error now) or for good (a failure
    /// notification; deferred, the share's error).
    fn on_quote_error(&mut self, error: MintQuoteErrorOwned, dir: &impl Directory) -> Vec<Action> {
        let hash = error.share_hash.to_array();
        let code = error.error_code.as_utf8_or_hex();
        if error_code::is_transient(&code) {
            return self.on_transient_error(hash, &code, &error, dir);
        }
        let Some(share) = self.pending.resolve(&hash) else {
            return vec![];
        };
        // Defer: a share given up (timed out) was answered already.
        let given_up = self.given_up.remove(&hash);
        self.window.answered(&hash);
        let now = Instant::now();
        let mut actions = self.send_waiting(now);
        tracing::error!(
            "mint refused share {} for good: {code}: {}",
            hex(&hash),
            error.error_message.as_utf8_or_hex()
        );
        if self.config.mode == ShareResponseMode::Defer && !given_up {
            actions.extend(self.fail(&share, MINT_QUOTE_FAILED, dir));
        }
        let failure = EhashMessage::MintQuoteFailure(MintQuoteFailureOwned {
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            share_hash: error.share_hash,
            error_code: error.error_code,
            error_message: error.error_message,
        });
        actions.extend(self.route(&share, failure, dir, now));
        actions
    }

    /// The mint could not decide yet: the share stays owed and is asked for
    /// again after the timeout, as if the mint had not answered.
    fn on_transient_error(
        &mut self,
        hash: [u8; 32],
        code: &str,
        error: &MintQuoteErrorOwned,
        dir: &impl Directory,
    ) -> Vec<Action> {
        tracing::warn!(
            "mint could not quote share {} yet: {code}: {}",
            hex(&hash),
            error.error_message.as_utf8_or_hex()
        );
        let Some(share) = self.pending.get(&hash) else {
            return vec![];
        };
        if self.config.mode == ShareResponseMode::Annotate || !self.given_up.insert(hash) {
            return vec![];
        }
        let share = share.clone();
        self.fail(&share, MINT_QUOTE_FAILED, dir)
            .into_iter()
            .collect()
    }

    /// Shares whose mint answer is overdue. Defer: the share's error now (a
    /// late quote still reaches the miner as a notification). Both: asked
    /// again if the mint held it (a waiting share keeps its turn).
    pub fn on_tick(&mut self, now: Instant, dir: &impl Directory) -> Vec<Action> {
        let mut actions = vec![];
        for (hash, share) in self.pending.expire(now) {
            match self.config.mode {
                ShareResponseMode::Defer => {
                    if self.given_up.insert(hash) {
                        actions.extend(self.fail(&share, MINT_TIMEOUT, dir));
                    }
                }
                ShareResponseMode::Annotate => {}
            }
            // Keep asking: the share was accepted, so its quote is owed
            // (in defer mode it may still arrive as a plain notification).
            if self.window.is_sent(&hash) {
                actions.push(Action::SendToMint(share.request.clone()));
            }
            self.pending
                .track(hash, share, now)
                .expect("just removed, so there is room");
        }
        actions
    }

    /// Acknowledges a share (annotate mode once it is journaled; any mode
    /// for a share with no quote to wait for), once the earlier shares of
    /// its channel are answered.
    pub fn acknowledge(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        weight: u64,
    ) {
        // After the earlier shares of its channel, like any success.
        self.in_order.expect(conn, channel_id, sequence_number);
        self.answered(conn, channel_id, sequence_number, Some(weight), true);
    }

    /// Defer mode: the share is answered (`Some(work)`: it succeeded), while
    /// its channel is still its connection's or not.
    fn settle(&mut self, share: &QuoteShare, work: Option<u64>, dir: &impl Directory) {
        if let Some(conn) = share.conn {
            let live = live_owner(share, dir).is_some();
            self.answered(conn, share.channel_id, share.sequence_number, work, live);
        }
    }

    /// Defer mode: the share's error, to its connection while it owns the
    /// share's channel; the share is answered.
    fn fail(
        &mut self,
        share: &QuoteShare,
        code: &'static str,
        dir: &impl Directory,
    ) -> Option<Action> {
        let error = live_owner(share, dir).map(|(conn, _)| Action::ShareError {
            conn,
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            code,
        });
        self.settle(share, None, dir);
        error
    }

    /// A share is answered (`Some(work)`: it succeeded): the successes it
    /// held back, its own too, go to the batcher if its channel is `live`.
    fn answered(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        work: Option<u64>,
        live: bool,
    ) {
        let ready = match work {
            Some(work) => self
                .in_order
                .succeeded(conn, channel_id, sequence_number, work),
            None => self.in_order.failed(conn, channel_id, sequence_number),
        };
        if live {
            for (seq, work) in ready {
                self.batcher.add(conn, channel_id, seq, work);
            }
        }
    }

    /// One `SubmitSharesSuccess` per channel for the shares that became
    /// ready since the last flush.
    pub fn flush_successes(&mut self) -> Vec<Action> {
        self.batcher
            .drain()
            .into_iter()
            .map(|(conn, batch)| Action::Success { conn, batch })
            .collect()
    }

    /// To the share's connection while it is connected, if it negotiated
    /// the extension (on the share's channel even if that closed since: the
    /// peer still knows its key); when that connection is gone, to an open
    /// channel with the same locking key; otherwise kept for the key's next
    /// channel. Kept until acknowledged;
    /// a share nobody is to be notified of is done at once.
    fn route(
        &mut self,
        share: &QuoteShare,
        message: EhashMessage,
        dir: &impl Directory,
        now: Instant,
    ) -> Vec<Action> {
        let hash = share.share_hash();
        let key = share.locking_key;
        let connected = share
            .conn
            .and_then(|conn| Some((conn, dir.connection(conn)?)));
        let target = match connected {
            // A client without the extension never sees ehash messages.
            Some((_, false)) => return vec![Action::Done(hash)],
            Some((conn, true)) => Some((conn, share.channel_id)),
            None if !share.notify => return vec![Action::Done(hash)],
            // The connection is gone: an open channel with the same key gets it.
            None => dir.ehash_channel_with_key(&key, &[]),
        };
        let mut notice = Notice {
            key,
            message: message.clone(),
        };
        let (kept, send) = match target {
            Some((conn, channel_id)) => {
                notice.message.set_channel_id(channel_id);
                let send = Action::Notify {
                    conn,
                    message: notice.message.clone(),
                };
                match self.notices.send(hash, notice, conn, now) {
                    Ok(true) => (Ok(()), Some(send)),
                    Ok(false) => (Ok(()), None),
                    // Not kept: sent once while the connection has room for
                    // notices in flight (past that cap a burst would fill its
                    // queue and close it); else only the key's owner finds
                    // the quote, at the mint.
                    Err(overflow) => (Err(overflow), self.notices.has_room(conn).then_some(send)),
                }
            }
            None => (self.notices.wait(hash, notice, now), None),
        };
        let mut actions: Vec<Action> = send.into_iter().collect();
        if let Err(overflow) = kept {
            actions.push(Action::Refused { overflow, message });
            actions.push(Action::Done(hash));
        }
        actions
    }
}

/// The share's connection, if it still owns the share's channel.
fn live_owner(share: &QuoteShare, dir: &impl Directory) -> Option<(ConnId, bool)> {
    let conn = share.conn?;
    dir.owner(share.channel_id)
        .filter(|(owner, _)| *owner == conn)
}

#[cfg(test)]
mod tests;

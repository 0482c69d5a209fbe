//! The ehash flow of the pool, without IO: every accepted share becomes a
//! quote request to the mint, and every answer becomes a notification to the
//! connection that owns the share's channel (or, in `defer` mode, the share's
//! success or error).
//!
//! The flow's task (`task.rs`) journals each share in the outbox before
//! handing it here, executes the returned [`Action`]s, and calls
//! [`QuoteFlow::on_tick`] at [`QuoteFlow::next_deadline`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ehash::pending::{
    PendingShares, ShareResponseMode, SuccessBatch, SuccessBatcher, TrackError, Undelivered,
};
use ehash::share::hex_be as hex;
use ehash::LockingKey;
use ehash_ext_sv2::{EhashMessage, MintQuoteFailureOwned, MintQuoteNotificationOwned};
use mint_quote_sv2::{
    error_code, MintQuoteErrorOwned, MintQuoteMessage, MintQuoteRequestOwned,
    MintQuoteResponseOwned,
};

use crate::mining::ConnId;

/// `SubmitSharesError` codes of the defer mode.
pub const MINT_QUOTE_FAILED: &str = "mint-quote-failed";
pub const MINT_TIMEOUT: &str = "mint-timeout";
pub const MINT_QUEUE_FULL: &str = "mint-queue-full";

#[derive(Debug, Clone)]
pub struct QuoteFlowConfig {
    pub mode: ShareResponseMode,
    /// Shares waiting for the mint at most.
    pub pending_capacity: usize,
    /// Defer mode: the share's error after this long without an answer.
    /// Annotate mode: the request is sent again after this long.
    pub mint_timeout: Duration,
    /// Notifications kept per locking key / in total while no channel with
    /// that key is open.
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
    pub request: MintQuoteRequestOwned,
}

impl QuoteShare {
    fn share_hash(&self) -> [u8; 32] {
        self.request.share_hash()
    }
    fn locking_key(&self) -> Option<LockingKey> {
        self.request.locking_key().ok()
    }
}

/// A notification waiting for its locking key's next channel.
#[derive(Debug, Clone, PartialEq)]
pub struct UndeliveredNotification {
    pub sequence_number: u32,
    pub message: EhashMessage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SendToMint(MintQuoteRequestOwned),
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
    /// The mint answered for this share for good: mark it done in the outbox.
    Done([u8; 32]),
    /// A notification was evicted from the undelivered store (logged, counted).
    Evicted(EhashMessage),
    /// The mint created the quote of a pending share (for the stats service).
    QuoteCreated {
        /// `None` for a share replayed from the outbox after a restart.
        conn: Option<ConnId>,
        channel_id: u32,
        amount: u64,
    },
}

/// Who owns a channel now: the pool core answers.
pub trait Directory {
    /// The connection owning `channel_id`, and whether it negotiated the
    /// ehash extension.
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)>;

    /// An open channel locked to `key` on a connection that negotiated the
    /// ehash extension: (connection, channel id).
    fn ehash_channel_with_key(&self, key: &LockingKey) -> Option<(ConnId, u32)>;
}

/// A directory for tests: channel id -> (connection, ehash negotiated, key).
impl Directory for HashMap<u32, (ConnId, bool, Option<LockingKey>)> {
    fn owner(&self, channel_id: u32) -> Option<(ConnId, bool)> {
        self.get(&channel_id)
            .map(|(conn, ehash, _)| (*conn, *ehash))
    }

    fn ehash_channel_with_key(&self, key: &LockingKey) -> Option<(ConnId, u32)> {
        self.iter()
            .find(|(_, (_, ehash, k))| *ehash && k.as_ref() == Some(key))
            .map(|(channel, (conn, _, _))| (*conn, *channel))
    }
}

pub struct QuoteFlow {
    config: QuoteFlowConfig,
    pending: PendingShares<QuoteShare>,
    batcher: SuccessBatcher<ConnId>,
    undelivered: Undelivered<UndeliveredNotification>,
    /// Shares the defer mode already answered with an error.
    given_up: HashSet<[u8; 32]>,
    /// Bumped on every change to the undelivered store, to know when to persist it.
    undelivered_version: u64,
}

impl QuoteFlow {
    pub fn new(config: QuoteFlowConfig) -> Self {
        Self {
            pending: PendingShares::new(config.pending_capacity, config.mint_timeout),
            batcher: SuccessBatcher::default(),
            undelivered: Undelivered::new(config.undelivered_per_key, config.undelivered_total),
            given_up: HashSet::new(),
            undelivered_version: 0,
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

    pub fn undelivered(&self) -> &Undelivered<UndeliveredNotification> {
        &self.undelivered
    }

    /// Changes whenever the undelivered store changes.
    pub fn undelivered_version(&self) -> u64 {
        self.undelivered_version
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.next_expiry()
    }

    // --- channels -----------------------------------------------------------------

    /// A channel opened: notifications kept for its key go out on it (if its
    /// connection negotiated the extension).
    pub fn on_channel_opened(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        key: Option<LockingKey>,
        ehash: bool,
    ) -> Vec<Action> {
        let (Some(key), true) = (key, ehash) else {
            return vec![];
        };
        let kept = self.undelivered.take(&key);
        if !kept.is_empty() {
            self.undelivered_version += 1;
        }
        kept.into_iter()
            .map(|n| Action::Notify {
                conn,
                message: readdress(n.message, channel_id),
            })
            .collect()
    }

    /// Keeps a notification for a key until a channel with it opens.
    /// Restores what the outbox persisted after a restart too.
    pub fn keep_undelivered(
        &mut self,
        key: LockingKey,
        notification: UndeliveredNotification,
    ) -> Vec<Action> {
        self.undelivered_version += 1;
        self.undelivered
            .push(key, notification)
            .map(|evicted| Action::Evicted(evicted.message))
            .into_iter()
            .collect()
    }

    // --- shares and the mint -----------------------------------------------------

    /// An accepted (and journaled) share: ask the mint. `Err` when the pending
    /// set is full (defer: answer the share with [`MINT_QUEUE_FULL`];
    /// annotate: hold the connection until there is room).
    pub fn on_share(&mut self, share: QuoteShare, now: Instant) -> Result<Vec<Action>, TrackError> {
        let request = share.request.clone();
        match self.pending.track(share.share_hash(), share, now) {
            Ok(()) => Ok(vec![Action::SendToMint(request)]),
            // A replay of a share already waiting: it is asked for already.
            Err(TrackError::AlreadyPending) => Ok(vec![]),
            Err(TrackError::Full) => Err(TrackError::Full),
        }
    }

    /// The mint link came (back) up: ask again for everything still owed.
    pub fn on_mint_up(&self) -> Vec<Action> {
        self.pending_requests()
            .into_iter()
            .map(Action::SendToMint)
            .collect()
    }

    fn pending_requests(&self) -> Vec<MintQuoteRequestOwned> {
        self.pending.iter().map(|s| s.request.clone()).collect()
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
        let mut actions = vec![Action::Done(hash)];
        let given_up = self.given_up.remove(&hash);
        let Some(share) = self.pending.resolve(&hash) else {
            tracing::debug!("mint answered for share {} that is not pending", hex(&hash));
            return actions;
        };
        actions.push(Action::QuoteCreated {
            conn: share.conn,
            channel_id: share.channel_id,
            amount: share.request.amount,
        });
        if self.config.mode == ShareResponseMode::Defer && !given_up {
            if let Some((conn, _)) = live_owner(&share, dir) {
                self.batcher.add(
                    conn,
                    share.channel_id,
                    share.sequence_number,
                    share.request.amount,
                );
            }
        }
        let notification = EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            share_hash: response.share_hash,
            quote_id: response.quote_id,
            keyset_id: response.keyset_id,
            amount: share.request.amount,
        });
        actions.extend(self.route(&share, notification, dir));
        actions
    }

    /// The mint refused the share's quote: for now (annotate: asked again
    /// later) or for good (a failure notification, deferred: the share's error).
    fn on_quote_error(&mut self, error: MintQuoteErrorOwned, dir: &impl Directory) -> Vec<Action> {
        let hash = error.share_hash.to_array();
        let code = error.error_code.as_utf8_or_hex();
        if code == error_code::MINT_ERROR && self.config.mode == ShareResponseMode::Annotate {
            // The mint failed on its side: the share stays owed and is
            // asked for again after the timeout.
            tracing::warn!(
                "mint could not quote share {} yet: {}",
                hex(&hash),
                error.error_message.as_utf8_or_hex()
            );
            return vec![];
        }
        let mut actions = vec![Action::Done(hash)];
        let Some(share) = self.pending.resolve(&hash) else {
            return actions;
        };
        tracing::error!(
            "mint refused share {} for good: {code}: {}",
            hex(&hash),
            error.error_message.as_utf8_or_hex()
        );
        if self.config.mode == ShareResponseMode::Defer {
            if let Some((conn, _)) = live_owner(&share, dir) {
                actions.push(Action::ShareError {
                    conn,
                    channel_id: share.channel_id,
                    sequence_number: share.sequence_number,
                    code: MINT_QUOTE_FAILED,
                });
            }
        }
        let failure = EhashMessage::MintQuoteFailure(MintQuoteFailureOwned {
            channel_id: share.channel_id,
            sequence_number: share.sequence_number,
            share_hash: error.share_hash,
            error_code: error.error_code,
            error_message: error.error_message,
        });
        actions.extend(self.route(&share, failure, dir));
        actions
    }

    /// Shares whose mint answer is overdue. Defer: the share's error now (a
    /// late quote still reaches the miner as a notification). Annotate: ask
    /// again.
    pub fn on_tick(&mut self, now: Instant, dir: &impl Directory) -> Vec<Action> {
        let mut actions = vec![];
        for (hash, share) in self.pending.expire(now) {
            match self.config.mode {
                ShareResponseMode::Defer => {
                    if let Some((conn, _)) = live_owner(&share, dir) {
                        if !self.given_up.contains(&hash) {
                            actions.push(Action::ShareError {
                                conn,
                                channel_id: share.channel_id,
                                sequence_number: share.sequence_number,
                                code: MINT_TIMEOUT,
                            });
                        }
                    }
                    self.given_up.insert(hash);
                }
                ShareResponseMode::Annotate => {}
            }
            // Keep asking: the share was accepted, so its quote is owed
            // (in defer mode it may still arrive as a plain notification).
            actions.push(Action::SendToMint(share.request.clone()));
            self.pending
                .track(hash, share, now)
                .expect("just removed, so there is room");
        }
        actions
    }

    /// Acknowledges a share now (annotate mode once it is journaled; any
    /// mode for a share with no quote to wait for).
    pub fn acknowledge(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        sequence_number: u32,
        weight: u64,
    ) {
        self.batcher.add(conn, channel_id, sequence_number, weight);
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

    /// To the owning connection if it negotiated the extension; when that
    /// connection is gone, to an open channel with the same locking key;
    /// otherwise kept for the key's next channel.
    fn route(
        &mut self,
        share: &QuoteShare,
        message: EhashMessage,
        dir: &impl Directory,
    ) -> Vec<Action> {
        if let Some((conn, ehash)) = live_owner(share, dir) {
            return if ehash {
                vec![Action::Notify { conn, message }]
            } else {
                // A client without the extension never sees ehash messages.
                vec![]
            };
        }
        // The connection is gone: an open channel with the same key gets it.
        if let Some((conn, channel_id)) = share
            .locking_key()
            .and_then(|key| dir.ehash_channel_with_key(&key))
        {
            return vec![Action::Notify {
                conn,
                message: readdress(message, channel_id),
            }];
        }
        match share.locking_key() {
            Some(key) => self.keep_undelivered(
                key,
                UndeliveredNotification {
                    sequence_number: share.sequence_number,
                    message,
                },
            ),
            None => vec![],
        }
    }
}

/// The share's connection, if it still owns the share's channel.
fn live_owner(share: &QuoteShare, dir: &impl Directory) -> Option<(ConnId, bool)> {
    let conn = share.conn?;
    dir.owner(share.channel_id)
        .filter(|(owner, _)| *owner == conn)
}

/// A kept notification re-addressed to the channel it is delivered on.
fn readdress(message: EhashMessage, channel_id: u32) -> EhashMessage {
    match message {
        EhashMessage::MintQuoteNotification(mut m) => {
            m.channel_id = channel_id;
            EhashMessage::MintQuoteNotification(m)
        }
        EhashMessage::MintQuoteFailure(mut m) => {
            m.channel_id = channel_id;
            EhashMessage::MintQuoteFailure(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::wire::str0255;
    use stratum_core::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn key(n: u8) -> LockingKey {
        let mut secret = [0u8; 32];
        secret[31] = n;
        PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&secret).unwrap())
            .into()
    }

    fn flow(mode: ShareResponseMode) -> QuoteFlow {
        QuoteFlow::new(QuoteFlowConfig {
            mode,
            pending_capacity: 4,
            mint_timeout: TIMEOUT,
            undelivered_per_key: 10,
            undelivered_total: 100,
        })
    }

    /// A flow in `mode` that asked the mint for `shares` at `now`.
    fn asking(mode: ShareResponseMode, shares: &[&QuoteShare], now: Instant) -> QuoteFlow {
        let mut f = flow(mode);
        for s in shares {
            f.on_share((*s).clone(), now).unwrap();
        }
        f
    }

    /// A share: its header's bytes vary with `n` (the flow never checks proof of work).
    fn share(conn: Option<ConnId>, channel: u32, seq: u32, n: u8, k: LockingKey) -> QuoteShare {
        let mut header = [0u8; 80];
        header[0] = n;
        QuoteShare {
            conn,
            channel_id: channel,
            sequence_number: seq,
            request: MintQuoteRequestOwned::new(&header, [0xff; 32], 4, k),
        }
    }

    fn quoted(s: &QuoteShare) -> MintQuoteMessage {
        MintQuoteMessage::MintQuoteResponse(MintQuoteResponseOwned {
            share_hash: s.request.share_hash.clone(),
            quote_id: str0255("q", "quote-1").unwrap(),
            keyset_id: str0255("k", "00aa").unwrap(),
        })
    }

    fn refused(s: &QuoteShare, code: &str) -> MintQuoteMessage {
        MintQuoteMessage::MintQuoteError(MintQuoteErrorOwned {
            share_hash: s.request.share_hash.clone(),
            error_code: str0255("c", code).unwrap(),
            error_message: str0255("m", "no").unwrap(),
        })
    }

    fn notified_channel(actions: &[Action], conn: ConnId) -> Option<u32> {
        actions.iter().find_map(|a| match a {
            Action::Notify {
                conn: c,
                message: EhashMessage::MintQuoteNotification(n),
            } if *c == conn => Some(n.channel_id),
            _ => None,
        })
    }

    type Dir = HashMap<u32, (ConnId, bool, Option<LockingKey>)>;

    #[test]
    fn annotate_sends_the_request_then_notifies_the_owner_only() {
        let now = Instant::now();
        let mut f = flow(ShareResponseMode::Annotate);
        let dir: Dir = HashMap::from([(7, (1, true, None)), (8, (2, true, None))]);

        let s = share(Some(1), 7, 42, 1, key(1));
        assert_eq!(
            f.on_share(s.clone(), now),
            Ok(vec![Action::SendToMint(s.request.clone())])
        );
        let actions = f.on_mint_answer(quoted(&s), &dir);
        assert!(actions.contains(&Action::Done(s.request.share_hash())));
        assert!(actions.contains(&Action::QuoteCreated {
            conn: Some(1),
            channel_id: 7,
            amount: s.request.amount
        }));
        assert_eq!(notified_channel(&actions, 1), Some(7));
        assert_eq!(notified_channel(&actions, 2), None);
        assert!(
            f.flush_successes().is_empty(),
            "annotate mode never batches successes"
        );
        // Exactly one notification per share: a second answer is not routed.
        assert_eq!(
            f.on_mint_answer(quoted(&s), &dir),
            vec![Action::Done(s.request.share_hash())]
        );
    }

    #[test]
    fn a_connection_without_the_extension_never_gets_ehash_messages() {
        let dir: Dir = HashMap::from([(7, (1, false, None))]);
        let s = share(Some(1), 7, 1, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
        let actions = f.on_mint_answer(quoted(&s), &dir);
        assert!(!actions.iter().any(|a| matches!(a, Action::Notify { .. })));
        assert!(f.undelivered().is_empty());
    }

    #[test]
    fn notifications_of_a_gone_connection_wait_for_the_keys_next_channel() {
        let s = share(Some(1), 7, 5, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
        // Connection 1 is gone; channel 7 now belongs to connection 4 (another key).
        let dir: Dir = HashMap::from([(7, (4, true, Some(key(2))))]);
        let actions = f.on_mint_answer(quoted(&s), &dir);
        assert!(!actions.iter().any(|a| matches!(a, Action::Notify { .. })));
        assert_eq!(f.undelivered().len(), 1);

        // Another key's channel gets nothing, nor a channel without the
        // extension; the same key's new channel gets it.
        assert!(f.on_channel_opened(3, 1, Some(key(2)), true).is_empty());
        assert!(f.on_channel_opened(3, 9, Some(key(1)), false).is_empty());
        let delivered = f.on_channel_opened(3, 2, Some(key(1)), true);
        assert_eq!(notified_channel(&delivered, 3), Some(2));
        assert!(f.undelivered().is_empty());
    }

    #[test]
    fn a_replayed_share_goes_to_an_open_channel_with_its_key() {
        let s = share(None, 7, 5, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
        let dir: Dir = HashMap::from([(3, (9, false, Some(key(1)))), (4, (8, true, Some(key(1))))]);
        let actions = f.on_mint_answer(quoted(&s), &dir);
        assert_eq!(notified_channel(&actions, 8), Some(4));
        assert!(f.undelivered().is_empty());
    }

    #[test]
    fn replayed_shares_have_no_connection_and_are_kept_by_key() {
        let now = Instant::now();
        let s = share(None, 7, 5, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], now);
        // A replay of the same share again (restart, then reconnect) asks once.
        assert_eq!(f.on_share(s.clone(), now), Ok(vec![]));
        f.on_mint_answer(quoted(&s), &Dir::new());
        assert_eq!(f.undelivered().len(), 1);
    }

    #[test]
    fn the_mint_coming_back_gets_every_owed_request_again() {
        let a = share(None, 1, 1, 1, key(1));
        let b = share(None, 1, 2, 2, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&a, &b], Instant::now());
        f.on_mint_answer(quoted(&a), &Dir::new());
        assert_eq!(f.on_mint_up(), vec![Action::SendToMint(b.request)]);
    }

    #[test]
    fn annotate_retries_overdue_and_mint_error_requests_and_says_when_full() {
        let now = Instant::now();
        let s = share(None, 1, 1, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], now);
        assert_eq!(
            f.on_mint_answer(refused(&s, "mint-error"), &Dir::new()),
            vec![]
        );
        assert_eq!(f.pending(), 1);
        assert_eq!(
            f.on_tick(now + TIMEOUT, &Dir::new()),
            vec![Action::SendToMint(s.request.clone())]
        );
        assert_eq!(f.pending(), 1);
        for n in 2..=4 {
            f.on_share(share(None, 1, n as u32, n, key(1)), now)
                .unwrap();
        }
        assert_eq!(
            f.on_share(share(None, 1, 9, 9, key(1)), now),
            Err(TrackError::Full)
        );
    }

    #[test]
    fn a_refusal_for_good_sends_a_failure() {
        let dir: Dir = HashMap::from([(7, (1, true, None))]);
        let s = share(Some(1), 7, 3, 1, key(1));
        let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
        let actions = f.on_mint_answer(refused(&s, "amount-mismatch"), &dir);
        assert!(actions.contains(&Action::Done(s.request.share_hash())));
        assert!(actions.iter().any(|a| matches!(a, Action::Notify { conn: 1, message: EhashMessage::MintQuoteFailure(m) } if m.sequence_number == 3)));
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn defer_batches_successes_per_channel_after_the_quotes() {
        let dir: Dir = HashMap::from([(7, (1, true, None))]);
        let a = share(Some(1), 7, 10, 1, key(1));
        let b = share(Some(1), 7, 11, 2, key(1));
        let mut f = asking(ShareResponseMode::Defer, &[&a, &b], Instant::now());
        assert!(
            f.flush_successes().is_empty(),
            "no success before the quotes"
        );
        f.on_mint_answer(quoted(&a), &dir);
        f.on_mint_answer(quoted(&b), &dir);
        assert_eq!(
            f.flush_successes(),
            vec![Action::Success {
                conn: 1,
                batch: SuccessBatch {
                    channel_id: 7,
                    last_sequence_number: 11,
                    new_submits_accepted_count: 2,
                    new_shares_sum: 8
                }
            }]
        );
    }

    #[test]
    fn defer_times_out_fails_and_refuses_when_full() {
        let now = Instant::now();
        let dir: Dir = HashMap::from([(7, (1, false, None))]);
        let s = share(Some(1), 7, 10, 1, key(1));
        let mut f = asking(ShareResponseMode::Defer, &[&s], now);
        let actions = f.on_tick(now + TIMEOUT, &dir);
        assert!(actions.contains(&Action::ShareError {
            conn: 1,
            channel_id: 7,
            sequence_number: 10,
            code: MINT_TIMEOUT
        }));
        // Still asked for; a late quote gives no success (the error was sent).
        assert!(actions.contains(&Action::SendToMint(s.request.clone())));
        assert!(!f
            .on_tick(now + 2 * TIMEOUT, &dir)
            .iter()
            .any(|a| matches!(a, Action::ShareError { .. })));
        f.on_mint_answer(quoted(&s), &dir);
        assert!(f.flush_successes().is_empty());

        let t = share(Some(1), 7, 11, 2, key(1));
        f.on_share(t.clone(), now).unwrap();
        let actions = f.on_mint_answer(refused(&t, "mint-error"), &dir);
        assert!(actions.contains(&Action::ShareError {
            conn: 1,
            channel_id: 7,
            sequence_number: 11,
            code: MINT_QUOTE_FAILED
        }));

        for n in 3..=6 {
            f.on_share(share(Some(1), 7, n as u32, n, key(1)), now)
                .unwrap();
        }
        assert_eq!(
            f.on_share(share(Some(1), 7, 9, 9, key(1)), now),
            Err(TrackError::Full)
        );
    }
}

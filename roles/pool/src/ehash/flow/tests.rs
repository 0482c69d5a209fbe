use super::*;
use ehash::wire::str0255;
use mint_quote_sv2::{CoinbaseProof, MintQuoteRequestOwned};
use stratum_core::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};

const TIMEOUT: Duration = Duration::from_secs(30);

fn key(n: u8) -> LockingKey {
    let mut secret = [0u8; 32];
    secret[31] = n;
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&secret).unwrap()).into()
}

fn flow(mode: ShareResponseMode) -> QuoteFlow {
    QuoteFlow::new(QuoteFlowConfig {
        mode,
        pending_capacity: 4,
        at_mint_limit: 4,
        mint_timeout: TIMEOUT,
        undelivered_per_key: 10,
        undelivered_total: 100,
    })
}

/// A flow in `mode` that asked the mint for `shares` at `now` (each
/// expected as the task does when the core accepts it).
fn asking(mode: ShareResponseMode, shares: &[&QuoteShare], now: Instant) -> QuoteFlow {
    let mut f = flow(mode);
    for s in shares {
        if let Some(conn) = s.conn {
            f.expect(conn, s.channel_id, s.sequence_number);
        }
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
        request: RequestFrame::new(
            MintQuoteRequestOwned::new(&header, [0xff; 32], 4, k, &CoinbaseProof::default())
                .unwrap(),
        )
        .unwrap(),
        locking_key: k,
        notify: true,
    }
}

fn quoted(s: &QuoteShare) -> MintQuoteMessage {
    MintQuoteMessage::MintQuoteResponse(MintQuoteResponseOwned {
        share_hash: s.request.share_hash().into(),
        quote_id: str0255("q", "quote-1").unwrap(),
        keyset_id: str0255("k", "00aa").unwrap(),
    })
}

fn refused(s: &QuoteShare, code: &str) -> MintQuoteMessage {
    MintQuoteMessage::MintQuoteError(MintQuoteErrorOwned {
        share_hash: s.request.share_hash().into(),
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

/// What an acknowledgement made the flow do, round-trip times left out.
fn acked(f: &mut QuoteFlow, conn: ConnId, hashes: &[[u8; 32]]) -> Vec<Action> {
    f.on_ack(conn, hashes, Instant::now())
        .into_iter()
        .filter(|a| !matches!(a, Action::Acknowledged(_)))
        .collect()
}

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
    assert!(
        !actions.contains(&Action::Done(s.request.share_hash())),
        "the share stays in the outbox until its notification is acknowledged"
    );
    assert!(actions.contains(&Action::QuoteCreated {
        conn: 1,
        channel_id: 7,
        amount: s.request.amount()
    }));
    assert_eq!(notified_channel(&actions, 1), Some(7));
    assert_eq!(notified_channel(&actions, 2), None);
    assert!(
        f.flush_successes().is_empty(),
        "annotate mode never batches successes"
    );
    // Exactly one notification per share: a second answer is not routed.
    assert_eq!(f.on_mint_answer(quoted(&s), &dir), vec![]);
    // Another connection cannot acknowledge it; its own can, once.
    assert_eq!(acked(&mut f, 2, &[s.request.share_hash()]), vec![]);
    assert_eq!(
        acked(&mut f, 1, &[s.request.share_hash()]),
        vec![Action::Done(s.request.share_hash())]
    );
    assert_eq!(acked(&mut f, 1, &[s.request.share_hash()]), vec![]);
    assert!(f.notices().is_empty());
}

/// Connection 1's share on channel 7 (key 1), quoted: its notification
/// addressed as `dir` says. The flow, the share, and a time just after.
fn notified(dir: &Dir) -> (QuoteFlow, QuoteShare, Instant) {
    let s = share(Some(1), 7, 42, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    f.on_mint_answer(quoted(&s), dir);
    (f, s, Instant::now())
}

#[test]
fn an_unacknowledged_notification_follows_its_key_to_the_next_connection_and_is_resent() {
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1))))]);
    let (mut f, s, now) = notified(&dir);
    // Unacknowledged for RESEND_AFTER: sent again on the same connection.
    assert!(f.on_resend_tick(now, &dir).is_empty());
    let again = f.on_resend_tick(now + RESEND_AFTER * 2, &dir);
    assert_eq!(notified_channel(&again, 1), Some(7));
    // The connection closes before acknowledging: the next channel with the
    // key, on a new connection, gets it; only that connection can acknowledge.
    assert!(f.on_connection_closed(1, &Dir::new(), now).is_empty());
    assert_eq!(acked(&mut f, 1, &[s.request.share_hash()]), vec![]);
    let delivered = f.on_channel_opened(5, 3, Some(key(1)), true, now);
    assert_eq!(notified_channel(&delivered, 5), Some(3));
    assert_eq!(
        acked(&mut f, 5, &[s.request.share_hash()]),
        vec![Action::Done(s.request.share_hash())]
    );
}

/// A job declaration client takes notifications for a channel whose
/// downstream left, and never acknowledges them.
#[test]
fn a_notification_never_acknowledged_goes_to_another_channel_with_its_key() {
    let (mut f, s, sent) = notified(&HashMap::from([(7, (1, true, Some(key(1))))]));
    // Channel 7 closed; the key's owner came back on channel 9 of the same
    // connection while the notification was in flight: nothing waited then.
    assert!(f
        .on_channel_opened(1, 9, Some(key(1)), true, sent)
        .is_empty());
    let dir: Dir = HashMap::from([(9, (1, true, Some(key(1))))]);
    let resent = f.on_resend_tick(sent + RESEND_AFTER, &dir);
    assert_eq!(
        notified_channel(&resent, 1),
        Some(7),
        "sent again as it was"
    );
    let almost = f.on_resend_tick(sent + TAKE_OFF_AFTER - Duration::from_secs(1), &dir);
    assert_eq!(notified_channel(&almost, 1), Some(7));
    let moved = f.on_resend_tick(sent + TAKE_OFF_AFTER, &dir);
    assert_eq!(notified_channel(&moved, 1), Some(9));
    assert_eq!(
        acked(&mut f, 1, &[s.request.share_hash()]),
        vec![Action::Done(s.request.share_hash())]
    );
}

/// The key's first channel is the one that never acknowledges: another of
/// the key's channels, on another connection, gets the notification.
#[test]
fn a_notification_never_acknowledged_goes_past_the_channel_that_took_it() {
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1)))), (9, (2, true, Some(key(1))))]);
    let (mut f, s, sent) = notified(&dir);
    let later = sent + TAKE_OFF_AFTER;
    let moved = f.on_resend_tick(later, &dir);
    assert_eq!(notified_channel(&moved, 2), Some(9), "{moved:?}");
    assert_eq!(
        acked(&mut f, 2, &[s.request.share_hash()]),
        vec![Action::Done(s.request.share_hash())]
    );
}

/// Two of the key's channels that never acknowledge (a job declaration
/// client's two downstreams without the extension): the notification
/// tries each once, then waits for the key's next channel.
#[test]
fn a_notification_tries_each_channel_that_never_acknowledges_once() {
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1)))), (9, (1, true, Some(key(1))))]);
    let (mut f, _, sent) = notified(&dir);
    let first = sent + TAKE_OFF_AFTER;
    assert_eq!(notified_channel(&f.on_resend_tick(first, &dir), 1), Some(9));
    let second = first + TAKE_OFF_AFTER;
    assert_eq!(notified_channel(&f.on_resend_tick(second, &dir), 1), None);
    assert_eq!(f.notices().waiting(), 1);
    let later = second + TAKE_OFF_AFTER;
    assert_eq!(notified_channel(&f.on_resend_tick(later, &dir), 1), None);
    let delivered = f.on_channel_opened(2, 11, Some(key(1)), true, later);
    assert_eq!(notified_channel(&delivered, 2), Some(11));
}

/// A connection that keeps a channel open without taking its notifications
/// (a job declaration client's downstream without the extension): taken
/// off it, they wait for the key's next channel instead of going back to it.
#[test]
fn a_notification_never_acknowledged_on_the_keys_only_channel_waits_for_the_next() {
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1))))]);
    let (mut f, s, sent) = notified(&dir);
    let later = sent + TAKE_OFF_AFTER;
    assert!(f.on_resend_tick(later, &dir).is_empty());
    assert_eq!(f.notices().waiting(), 1);
    assert_eq!(acked(&mut f, 1, &[s.request.share_hash()]), vec![]);
    let delivered = f.on_channel_opened(2, 3, Some(key(1)), true, later);
    assert_eq!(notified_channel(&delivered, 2), Some(3));
}

#[test]
fn a_closed_connections_notification_goes_to_the_keys_channel_opened_before_the_close_was_seen() {
    let (mut f, s, now) = notified(&HashMap::from([(7, (1, true, Some(key(1))))]));
    // The miner's new connection opened its channel before the pool saw the
    // old one close: nothing waited then.
    assert!(f
        .on_channel_opened(2, 9, Some(key(1)), true, now)
        .is_empty());
    let dir: Dir = HashMap::from([(9, (2, true, Some(key(1))))]);
    let delivered = f.on_connection_closed(1, &dir, now);
    assert_eq!(notified_channel(&delivered, 2), Some(9));
    assert_eq!(
        acked(&mut f, 2, &[s.request.share_hash()]),
        vec![Action::Done(s.request.share_hash())]
    );
}

#[test]
fn a_full_notice_store_refuses_and_drops_the_share_from_the_outbox() {
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1))))]);
    let mut f = QuoteFlow::new(QuoteFlowConfig {
        mode: ShareResponseMode::Annotate,
        pending_capacity: 4,
        at_mint_limit: 4,
        mint_timeout: TIMEOUT,
        undelivered_per_key: 1,
        undelivered_total: 100,
    });
    let (a, b) = (
        share(Some(1), 7, 1, 1, key(1)),
        share(Some(1), 7, 2, 2, key(1)),
    );
    f.on_share(a.clone(), Instant::now()).unwrap();
    f.on_share(b.clone(), Instant::now()).unwrap();
    f.on_mint_answer(quoted(&a), &dir);
    let actions = f.on_mint_answer(quoted(&b), &dir);
    assert!(actions.iter().any(|a| matches!(a, Action::Refused { .. })));
    assert!(
        actions.iter().any(|a| matches!(a, Action::Notify { .. })),
        "sent once, the connection having room: {actions:?}"
    );
    assert!(actions.contains(&Action::Done(b.request.share_hash())));
    assert_eq!(f.notices().len(), 1, "the first notice stays");
}

#[test]
fn a_connection_without_the_extension_never_gets_ehash_messages() {
    let dir: Dir = HashMap::from([(7, (1, false, None))]);
    let s = share(Some(1), 7, 1, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    let actions = f.on_mint_answer(quoted(&s), &dir);
    assert!(!actions.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert!(
        actions.contains(&Action::Done(s.request.share_hash())),
        "nobody to notify: done at once"
    );
    assert!(f.notices().is_empty());
}

#[test]
fn notifications_of_a_gone_connection_wait_for_the_keys_next_channel() {
    let s = share(Some(1), 7, 5, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    // Connection 1 is gone; channel 7 now belongs to connection 4 (another key).
    let dir: Dir = HashMap::from([(7, (4, true, Some(key(2))))]);
    let actions = f.on_mint_answer(quoted(&s), &dir);
    assert!(!actions.iter().any(|a| matches!(a, Action::Notify { .. })));
    assert_eq!(f.notices().waiting(), 1);

    // Another key's channel gets nothing, nor a channel without the
    // extension; the same key's new channel gets it.
    let now = Instant::now();
    assert!(f
        .on_channel_opened(3, 1, Some(key(2)), true, now)
        .is_empty());
    assert!(f
        .on_channel_opened(3, 9, Some(key(1)), false, now)
        .is_empty());
    let delivered = f.on_channel_opened(3, 2, Some(key(1)), true, now);
    assert_eq!(notified_channel(&delivered, 3), Some(2));
    assert_eq!((f.notices().len(), f.notices().waiting()), (1, 0));
}

#[test]
fn a_quote_after_its_channel_closed_still_reaches_the_connected_translator() {
    // The miner left (channel 7 closed) before the mint answered; the
    // translator's connection 1 is still up (its channel 8 has another key)
    // and remembers channel 7's key.
    let s = share(Some(1), 7, 5, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    let dir: Dir = HashMap::from([(8, (1, true, Some(key(2))))]);
    let actions = f.on_mint_answer(quoted(&s), &dir);
    assert_eq!(notified_channel(&actions, 1), Some(7));
    assert_eq!((f.notices().len(), f.notices().waiting()), (1, 0));
}

#[test]
fn a_replayed_share_goes_to_an_open_channel_with_its_key() {
    let s = share(None, 7, 5, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    let dir: Dir = HashMap::from([(3, (9, false, Some(key(1)))), (4, (8, true, Some(key(1))))]);
    let actions = f.on_mint_answer(quoted(&s), &dir);
    assert_eq!(notified_channel(&actions, 8), Some(4));
    assert_eq!(f.notices().waiting(), 0);
}

#[test]
fn a_share_of_a_client_without_the_extension_is_done_once_quoted_even_replayed() {
    let s = QuoteShare {
        notify: false,
        ..share(None, 7, 5, 1, key(1))
    };
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    // A client with the extension and the same key is connected: not its share.
    let dir: Dir = HashMap::from([(4, (8, true, Some(key(1))))]);
    let actions = f.on_mint_answer(quoted(&s), &dir);
    assert!(actions.contains(&Action::Done(s.request.share_hash())));
    assert_eq!(notified_channel(&actions, 8), None);
    assert!(
        f.notices().is_empty(),
        "nothing waits for a key's next channel"
    );
}

#[test]
fn replayed_shares_have_no_connection_and_are_kept_by_key() {
    let now = Instant::now();
    let s = share(None, 7, 5, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], now);
    // A replay of the same share again (restart, then reconnect) asks once.
    assert_eq!(f.on_share(s.clone(), now), Ok(vec![]));
    f.on_mint_answer(quoted(&s), &Dir::new());
    assert_eq!(f.notices().waiting(), 1);
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
fn annotate_retries_overdue_and_transient_errors_and_says_when_full() {
    let now = Instant::now();
    let s = share(None, 1, 1, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], now);
    for code in ["mint-error", "chain-unavailable"] {
        assert_eq!(f.on_mint_answer(refused(&s, code), &Dir::new()), vec![]);
    }
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
fn defer_fails_a_share_the_mint_cannot_quote_yet_and_keeps_asking_for_it() {
    let now = Instant::now();
    let dir: Dir = HashMap::from([(7, (1, false, None))]);
    let s = share(Some(1), 7, 10, 1, key(1));
    let mut f = asking(ShareResponseMode::Defer, &[&s], now);
    for code in ["chain-unavailable", "mint-error"] {
        let actions = f.on_mint_answer(refused(&s, code), &dir);
        let errors = actions
            .iter()
            .filter(|a| matches!(a, Action::ShareError { .. }))
            .count();
        // The miner hears once; the share stays owed.
        assert_eq!(errors, usize::from(code == "chain-unavailable"), "{code}");
        assert_eq!(f.pending(), 1);
    }
    assert_eq!(
        f.on_tick(now + TIMEOUT, &dir),
        vec![Action::SendToMint(s.request.clone())]
    );
    // Its quote still reaches the miner as a notification, not a success.
    f.on_mint_answer(quoted(&s), &dir);
    assert_eq!(f.pending(), 0);
    assert!(f.flush_successes().is_empty());
}

#[test]
fn a_refusal_for_good_sends_a_failure() {
    let dir: Dir = HashMap::from([(7, (1, true, None))]);
    let s = share(Some(1), 7, 3, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], Instant::now());
    let actions = f.on_mint_answer(refused(&s, "amount-mismatch"), &dir);
    assert!(!actions.contains(&Action::Done(s.request.share_hash())));
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

/// A success acknowledges every share of its channel up to its sequence
/// number: one quoted before an earlier share is answered waits for it.
#[test]
fn defer_acknowledges_a_channel_s_shares_in_order() {
    let now = Instant::now();
    let dir: Dir = HashMap::from([(7, (1, true, None))]);
    let (a, b, c) = (
        share(Some(1), 7, 10, 1, key(1)),
        share(Some(1), 7, 11, 2, key(1)),
        share(Some(1), 7, 13, 3, key(1)),
    );
    let mut f = asking(ShareResponseMode::Defer, &[&a, &b], now);
    f.on_mint_answer(quoted(&b), &dir);
    assert!(f.flush_successes().is_empty(), "10 is not answered yet");
    // A share worth no quote waits its turn too.
    f.acknowledge(1, 7, 12, 0);
    assert!(f.flush_successes().is_empty());
    // 10 times out: its error, then the successes behind it.
    let actions = f.on_tick(now + TIMEOUT, &dir);
    assert!(actions.contains(&Action::ShareError {
        conn: 1,
        channel_id: 7,
        sequence_number: 10,
        code: MINT_TIMEOUT
    }));
    assert_eq!(
        f.flush_successes(),
        vec![Action::Success {
            conn: 1,
            batch: SuccessBatch {
                channel_id: 7,
                last_sequence_number: 12,
                new_submits_accepted_count: 2,
                new_shares_sum: 4
            }
        }]
    );
    // Refused for good after its timeout: not answered twice.
    let actions = f.on_mint_answer(refused(&a, "amount-mismatch"), &dir);
    assert!(!actions
        .iter()
        .any(|x| matches!(x, Action::ShareError { .. })));
    // In order again, the next share is acknowledged as soon as it is quoted.
    f.expect(1, 7, 13);
    f.on_share(c.clone(), now).unwrap();
    f.on_mint_answer(quoted(&c), &dir);
    assert!(
        matches!(&f.flush_successes()[..], [Action::Success { batch, .. }] if batch.last_sequence_number == 13 && batch.new_submits_accepted_count == 1)
    );
}

/// The shares the task refuses (journal failed, pending set full) and a
/// live share the same as one replayed after a restart are answered with
/// their error, and hold no later success back.
#[test]
fn defer_refusals_let_later_successes_go() {
    let now = Instant::now();
    let dir: Dir = HashMap::from([(7, (1, true, None))]);
    let replayed = share(None, 7, 1, 1, key(1));
    let mut f = asking(ShareResponseMode::Defer, &[&replayed], now);
    f.expect(1, 7, 10);
    f.expect(1, 7, 11);
    let b = share(Some(1), 7, 12, 2, key(1));
    f.expect(1, 7, 12);
    f.on_share(b.clone(), now).unwrap();
    f.on_mint_answer(quoted(&b), &dir);
    assert!(f.flush_successes().is_empty(), "10 and 11 come first");
    // 10: its journal record could not be written.
    f.refused(1, 7, 10);
    assert!(f.flush_successes().is_empty(), "11 comes first");
    // 11: the same share as the one replayed.
    let again = QuoteShare {
        conn: Some(1),
        sequence_number: 11,
        ..replayed.clone()
    };
    assert_eq!(
        f.on_share(again, now).unwrap(),
        vec![Action::ShareError {
            conn: 1,
            channel_id: 7,
            sequence_number: 11,
            code: DUPLICATE_SHARE
        }]
    );
    assert!(
        matches!(&f.flush_successes()[..], [Action::Success { batch, .. }]
        if batch.last_sequence_number == 12 && batch.new_submits_accepted_count == 1)
    );
}

/// Annotate mode: a share journaled before an earlier one (writes queued
/// past the writer's channel finish in any order) is acknowledged after it.
#[test]
fn annotate_acknowledges_a_channel_s_shares_in_order() {
    let mut f = flow(ShareResponseMode::Annotate);
    for seq in [10, 11, 12] {
        f.expect(1, 7, seq);
    }
    f.acknowledge(1, 7, 11, 4);
    assert!(f.flush_successes().is_empty(), "10 is not journaled yet");
    f.acknowledge(1, 7, 10, 4);
    assert!(
        matches!(&f.flush_successes()[..], [Action::Success { batch, .. }]
        if batch.last_sequence_number == 11 && batch.new_submits_accepted_count == 2)
    );
    // 12 could not be journaled: refused, and nothing holds back 13.
    f.refused(1, 7, 12);
    f.expect(1, 7, 13);
    f.acknowledge(1, 7, 13, 4);
    assert!(
        matches!(&f.flush_successes()[..], [Action::Success { batch, .. }]
        if batch.last_sequence_number == 13 && batch.new_submits_accepted_count == 1)
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
    let actions = f.on_mint_answer(refused(&t, "amount-mismatch"), &dir);
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

fn sent(actions: &[Action]) -> Vec<[u8; 32]> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendToMint(r) => Some(r.share_hash()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_slow_mint_holds_at_most_the_limit_and_only_its_requests_are_asked_again() {
    let now = Instant::now();
    let shares: Vec<_> = (1..=4)
        .map(|n| share(None, 1, n as u32, n, key(1)))
        .collect();
    let hashes: Vec<_> = shares.iter().map(|s| s.share_hash()).collect();
    let mut f = QuoteFlow::new(QuoteFlowConfig {
        mode: ShareResponseMode::Annotate,
        pending_capacity: 10,
        at_mint_limit: 2,
        mint_timeout: TIMEOUT,
        undelivered_per_key: 10,
        undelivered_total: 100,
    });
    let mut asked = vec![];
    for s in &shares {
        asked.extend(sent(&f.on_share(s.clone(), now).unwrap()));
    }
    assert_eq!(asked, hashes[..2], "the mint holds two");
    assert_eq!(f.waiting_to_send(), 2);

    // Overdue: only what the mint holds is asked again; the rest keep
    // their turn.
    let later = now + TIMEOUT;
    assert_eq!(sent(&f.on_tick(later, &Dir::new())), hashes[..2]);
    assert_eq!(sent(&f.on_mint_up()).len(), 2);

    // An answer frees room for the oldest waiting share, whose timeout
    // starts then.
    let actions = f.on_mint_answer(quoted(&shares[0]), &Dir::new());
    assert_eq!(sent(&actions), hashes[2..3]);
    let refusal = f.on_mint_answer(refused(&shares[1], "amount-mismatch"), &Dir::new());
    assert_eq!(sent(&refusal), hashes[3..4]);
    assert_eq!(f.waiting_to_send(), 0);
    assert_eq!(f.pending(), 2);
}

#[test]
fn notifications_beyond_a_connections_in_flight_limit_go_out_as_acknowledgements_make_room() {
    use crate::ehash::notices::IN_FLIGHT_PER_CONNECTION;
    let now = Instant::now();
    let total = IN_FLIGHT_PER_CONNECTION + 3;
    let mut f = QuoteFlow::new(QuoteFlowConfig {
        mode: ShareResponseMode::Annotate,
        pending_capacity: total,
        at_mint_limit: total,
        mint_timeout: TIMEOUT,
        undelivered_per_key: total,
        undelivered_total: total,
    });
    let dir: Dir = HashMap::from([(7, (1, true, Some(key(1))))]);
    let mut notified = vec![];
    for i in 0..total {
        let mut s = share(Some(1), 7, i as u32, 0, key(1));
        let mut header = [0u8; 80];
        header[..4].copy_from_slice(&(i as u32).to_le_bytes());
        s.request = RequestFrame::new(
            MintQuoteRequestOwned::new(&header, [0xff; 32], 4, key(1), &CoinbaseProof::default())
                .unwrap(),
        )
        .unwrap();
        f.on_share(s.clone(), now).unwrap();
        if notified_channel(&f.on_mint_answer(quoted(&s), &dir), 1).is_some() {
            notified.push(s.request.share_hash());
        }
    }
    assert_eq!(notified.len(), IN_FLIGHT_PER_CONNECTION, "the rest queue");
    let actions = acked(&mut f, 1, &notified[..2]);
    let sent = actions
        .iter()
        .filter(|a| matches!(a, Action::Notify { conn: 1, .. }))
        .count();
    assert_eq!(sent, 2, "two acknowledged, two more sent: {actions:?}");
    assert_eq!(f.notices().len(), total - 2);
}

#[test]
fn a_notification_nobody_takes_for_a_day_is_given_up_and_its_share_done() {
    let now = Instant::now();
    let s = share(None, 7, 5, 1, key(1));
    let mut f = asking(ShareResponseMode::Annotate, &[&s], now);
    f.on_mint_answer(quoted(&s), &Dir::new());
    let answered = Instant::now();
    assert_eq!(f.notices().waiting(), 1);
    assert!(f
        .on_resend_tick(answered + WAIT_AT_MOST / 2, &Dir::new())
        .is_empty());
    assert_eq!(
        f.on_resend_tick(answered + WAIT_AT_MOST, &Dir::new()),
        vec![Action::Done(s.request.share_hash())]
    );
    assert!(f.notices().is_empty());
}

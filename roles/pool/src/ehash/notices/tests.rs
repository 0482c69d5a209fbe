use super::*;
use ehash::wire::str0255_truncated;
use ehash_ext_sv2::MintQuoteNotificationOwned;
use stratum_core::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};

fn key(n: u8) -> LockingKey {
    let mut secret = [0u8; 32];
    secret[31] = n;
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&secret).unwrap()).into()
}

fn hash(n: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(&n.to_le_bytes());
    h
}

fn notice(k: LockingKey, n: u32) -> Notice {
    Notice {
        key: k,
        message: EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
            channel_id: 1,
            sequence_number: n,
            share_hash: hash(n).into(),
            quote_id: str0255_truncated("q"),
            keyset_id: str0255_truncated("k"),
            amount: 1,
        }),
    }
}

/// The hashes `conn`'s acknowledgement made done.
fn acked(n: &mut Notices, conn: ConnId, hashes: &[[u8; 32]]) -> Vec<[u8; 32]> {
    n.ack(conn, hashes, Instant::now())
        .into_iter()
        .map(|(h, _)| h)
        .collect()
}

#[test]
fn only_the_connection_a_notice_is_in_flight_on_can_acknowledge_it() {
    let now = Instant::now();
    let mut n = Notices::new(10, 100);
    n.send(hash(1), notice(key(1), 1), 7, now).unwrap();
    n.send(hash(2), notice(key(1), 2), 7, now).unwrap();
    assert_eq!(acked(&mut n, 8, &[hash(1)]), Vec::<[u8; 32]>::new());
    assert_eq!(acked(&mut n, 7, &[hash(1), hash(9)]), vec![hash(1)]);
    assert_eq!(acked(&mut n, 7, &[hash(1)]), Vec::<[u8; 32]>::new(), "once");
    assert_eq!(n.len(), 1);
}

#[test]
fn a_closed_connections_notices_wait_for_the_keys_next_channel() {
    let now = Instant::now();
    let mut n = Notices::new(10, 100);
    n.send(hash(1), notice(key(1), 1), 7, now).unwrap();
    n.send(hash(2), notice(key(2), 2), 7, now).unwrap();
    n.wait(hash(3), notice(key(1), 3), now).unwrap();
    let mut keys = n.connection_closed(7, now);
    keys.sort_by_key(|k| k.to_string());
    assert_eq!(keys.len(), 2);
    assert_eq!(n.waiting(), 3);
    assert_eq!(
        acked(&mut n, 7, &[hash(1)]),
        Vec::<[u8; 32]>::new(),
        "the connection is gone"
    );
    let mut sent: Vec<[u8; 32]> = n
        .deliver_waiting(&key(1), 9, 4, now)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    sent.sort();
    assert_eq!(sent, vec![hash(1), hash(3)]);
    assert!(
        n.deliver_waiting(&key(1), 9, 4, now).is_empty(),
        "delivered once"
    );
    assert_eq!(
        acked(&mut n, 9, &[hash(1), hash(3)]),
        vec![hash(1), hash(3)]
    );
    assert_eq!((n.len(), n.waiting()), (1, 1));
}

#[test]
fn a_full_key_or_store_refuses_the_new_notice_and_evicts_nothing() {
    let now = Instant::now();
    let mut n = Notices::new(2, 3);
    n.wait(hash(1), notice(key(1), 1), now).unwrap();
    n.send(hash(2), notice(key(1), 2), 7, now).unwrap();
    assert_eq!(n.wait(hash(3), notice(key(1), 3), now), Err(Overflow::Key));
    n.wait(hash(4), notice(key(2), 4), now).unwrap();
    assert_eq!(
        n.wait(hash(5), notice(key(3), 5), now),
        Err(Overflow::Total)
    );
    assert_eq!(n.len(), 3, "nothing of another key was evicted");
    // A resend of a kept notice takes no more room.
    n.send(hash(1), notice(key(1), 1), 8, now).unwrap();
    assert_eq!(n.len(), 3);
    // Room again once one is acknowledged.
    assert_eq!(acked(&mut n, 8, &[hash(1)]), vec![hash(1)]);
    n.wait(hash(5), notice(key(3), 5), now).unwrap();
}

#[test]
fn overdue_notices_are_sent_again_on_their_connection() {
    let start = Instant::now();
    let mut n = Notices::new(10, 100);
    n.send(hash(1), notice(key(1), 1), 7, start).unwrap();
    n.wait(hash(2), notice(key(1), 2), start).unwrap();
    let after = Duration::from_secs(60);
    assert!(n.overdue(start + Duration::from_secs(59), after).is_empty());
    let again = n.overdue(start + after, after);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, 7);
    assert!(
        n.overdue(start + after, after).is_empty(),
        "the clock restarts"
    );
}

#[test]
fn notices_a_connection_never_acknowledges_are_taken_off_it_and_free_its_room() {
    let start = Instant::now();
    let mut n = Notices::new(10, 100).with_in_flight_limit(1);
    assert_eq!(n.send(hash(1), notice(key(1), 1), 7, start), Ok(true));
    let mut on_another_channel = notice(key(1), 2);
    on_another_channel.message.set_channel_id(5);
    assert_eq!(n.send(hash(2), on_another_channel, 7, start), Ok(false));
    let after = Duration::from_secs(120);
    // Sent again meanwhile: that does not restart the clock.
    let resend = Duration::from_secs(30);
    assert_eq!(n.overdue(start + Duration::from_secs(60), resend).len(), 1);
    let almost = start + after - Duration::from_secs(1);
    assert!(n.take_off_unacknowledged(almost, after).is_empty());
    assert_eq!(
        n.take_off_unacknowledged(start + after, after),
        vec![TakenOff {
            key: key(1),
            conn: 7,
            channel_id: 1
        }]
    );
    assert!(
        acked(&mut n, 7, &[hash(1)]).is_empty(),
        "off the connection"
    );
    assert!(n.overdue(start + after * 2, resend).is_empty());
    // Its room goes to the queued notice; it waits for the key's next channel.
    let released = n.release(7, start + after);
    assert_eq!(released.iter().map(sequence).collect::<Vec<_>>(), [2]);
    assert_eq!(n.waiting(), 1);
    let delivered = n.deliver_waiting(&key(1), 8, 4, start + after);
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (delivered[0].0, channel_and_sequence(&delivered[0].1)),
        (hash(1), (4, 1))
    );
}

/// The notices queued behind one taken off, for the same channel, go with
/// it: they would be sent there and wait out the same time, room by room.
#[test]
fn notices_queued_for_the_channel_of_one_taken_off_go_with_it() {
    let start = Instant::now();
    let mut n = Notices::new(10, 100).with_in_flight_limit(1);
    n.send(hash(1), notice(key(1), 1), 7, start).unwrap();
    n.send(hash(2), notice(key(1), 2), 7, start).unwrap();
    let mut other_channel = notice(key(2), 3);
    other_channel.message.set_channel_id(5);
    n.send(hash(3), other_channel, 7, start).unwrap();
    let after = Duration::from_secs(120);
    let mut taken: Vec<u32> = n
        .take_off_unacknowledged(start + after, after)
        .iter()
        .map(|t| t.channel_id)
        .collect();
    taken.sort_unstable();
    assert_eq!(taken, [1, 1]);
    assert_eq!(n.waiting(), 2);
    let released = n.release(7, start + after);
    assert_eq!(channel_and_sequence(&released[0]), (5, 3));
}

#[test]
fn beyond_the_in_flight_limit_notices_queue_for_their_connection_until_acknowledgements_make_room()
{
    let now = Instant::now();
    let mut n = Notices::new(100, 100).with_in_flight_limit(2);
    assert!(n.has_room(7));
    let in_flight: Vec<bool> = (1..=4)
        .map(|i| n.send(hash(i), notice(key(1), i), 7, now).unwrap())
        .collect();
    assert_eq!(in_flight, [true, true, false, false]);
    assert!(!n.has_room(7), "two in flight, two queued");
    assert!(n.has_room(8), "another connection's room is its own");
    assert!(n.release(7, now).is_empty(), "no room yet");
    // Only what is in flight is sent again, or can be acknowledged.
    assert_eq!(n.overdue(now + RESEND, RESEND).len(), 2);
    assert_eq!(acked(&mut n, 7, &[hash(3)]), Vec::<[u8; 32]>::new());

    assert_eq!(acked(&mut n, 7, &[hash(1)]), vec![hash(1)]);
    let released: Vec<u32> = n.release(7, now).iter().map(sequence).collect();
    assert_eq!(released, [3], "oldest first, as much as there is room for");
    assert_eq!(acked(&mut n, 7, &[hash(2), hash(3)]).len(), 2);
    let released: Vec<u32> = n.release(7, now).iter().map(sequence).collect();
    assert_eq!(released, [4]);
    assert_eq!(n.len(), 1);
}

#[test]
fn a_closed_connections_queued_notices_wait_and_a_new_channel_takes_as_many_as_fit() {
    let now = Instant::now();
    let mut n = Notices::new(100, 100).with_in_flight_limit(2);
    for i in 1..=3 {
        n.send(hash(i), notice(key(1), i), 7, now).unwrap();
    }
    assert_eq!(n.connection_closed(7, now), vec![key(1)]);
    assert_eq!(n.waiting(), 3);
    let sent = n.deliver_waiting(&key(1), 9, 5, now);
    assert_eq!(sent.len(), 2, "the limit holds on the new connection too");
    assert_eq!(n.waiting(), 0, "the third is queued for it");
    assert_eq!(acked(&mut n, 9, &[sent[0].0]).len(), 1);
    let released = n.release(9, now);
    assert_eq!(released.len(), 1);
    assert_eq!(
        channel_and_sequence(&released[0]),
        (5, 3),
        "addressed to the new channel"
    );
    assert!(n.connection_closed(7, now).is_empty());
}

const RESEND: Duration = Duration::from_secs(30);

fn channel_and_sequence(notice: &Notice) -> (u32, u32) {
    match &notice.message {
        EhashMessage::MintQuoteNotification(m) => (m.channel_id, m.sequence_number),
        other => panic!("{other:?}"),
    }
}

fn sequence(notice: &Notice) -> u32 {
    channel_and_sequence(notice).1
}

#[test]
fn notices_waiting_too_long_are_given_up_and_those_in_flight_are_not() {
    let start = Instant::now();
    let mut n = Notices::new(10, 100);
    n.wait(hash(1), notice(key(1), 1), start).unwrap();
    n.send(hash(2), notice(key(1), 2), 7, start).unwrap();
    let later = start + Duration::from_secs(10);
    n.wait(hash(3), notice(key(2), 3), later).unwrap();
    let after = Duration::from_secs(60);
    assert!(n.expired(start + Duration::from_secs(59), after).is_empty());
    let expired: Vec<[u8; 32]> = n
        .expired(start + after, after)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(expired, vec![hash(1)]);
    assert_eq!((n.len(), n.waiting()), (2, 1));
    assert!(n.deliver_waiting(&key(1), 9, 4, start + after).is_empty());
}

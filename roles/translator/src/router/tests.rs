use super::*;
use ehash_ext_sv2::{MintQuoteFailureOwned, MintQuoteNotificationOwned};
use stratum_core::binary_sv2::{B032Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned};
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned, SetTargetOwned,
    SubmitSharesExtendedOwned,
};

const WALLET_KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const MINER_KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

fn key(s: &str) -> LockingKey {
    s.parse().unwrap()
}

fn open(identity: &str) -> MiningOwned {
    MiningOwned::OpenExtendedMiningChannel(OpenExtendedMiningChannelOwned {
        request_id: 77,
        user_identity: str0255_truncated(identity),
        nominal_hash_rate: 10.0,
        max_target: U256Owned::from([0xff; 32]),
        min_extranonce_size: 8,
    })
}

fn success(request_id: u32, channel_id: u32) -> MiningOwned {
    MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
        request_id,
        channel_id,
        target: U256Owned::from([0xff; 32]),
        extranonce_size: 12,
        extranonce_prefix: B032Owned::new(vec![1, 2, 3, 4]).unwrap(),
        group_channel_id: 0,
    })
}

fn job(channel_id: u32, job_id: u32) -> MiningOwned {
    MiningOwned::NewExtendedMiningJob(NewExtendedMiningJobOwned {
        channel_id,
        job_id,
        min_ntime: Sv2OptionOwned::new(None),
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path: Seq0255Owned::new(vec![]).unwrap(),
        coinbase_tx_prefix: B064KOwned::new(vec![1]).unwrap(),
        coinbase_tx_suffix: B064KOwned::new(vec![2]).unwrap(),
    })
}

fn set_target(channel_id: u32) -> MiningOwned {
    MiningOwned::SetTarget(SetTargetOwned {
        channel_id,
        maximum_target: U256Owned::from([0x0f; 32]),
    })
}

fn notification(channel_id: u32) -> EhashMessage {
    EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
        channel_id,
        sequence_number: 3,
        share_hash: U256Owned::from([5; 32]),
        quote_id: str0255_truncated("q-1"),
        keyset_id: str0255_truncated("00aa"),
        amount: 8,
    })
}

/// The request id the router gave an open it forwarded.
fn forwarded_open(actions: &[Action]) -> u32 {
    match actions {
        [Action::Upstream(MiningOwned::OpenExtendedMiningChannel(o))] => o.request_id,
        other => panic!("expected one open for the pool, got {other:?}"),
    }
}

/// The miners each message went to, in order.
fn recipients(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToMiner(miner, _) => Some(*miner),
            _ => None,
        })
        .collect()
}

/// A per-miner router with miners 1 (wallet key) and 2 (own key) on
/// channels 10 and 20.
fn two_channels() -> Router {
    let mut r = Router::new(None);
    let first = forwarded_open(&r.on_miner_message(1, open(&format!("{WALLET_KEY}.rig"))));
    let second = forwarded_open(&r.on_miner_message(2, open(MINER_KEY)));
    assert_ne!(first, second, "each open has its own request id");
    assert_eq!(recipients(&r.on_upstream(success(second, 20))), vec![2]);
    assert_eq!(recipients(&r.on_upstream(success(first, 10))), vec![1]);
    r
}

#[test]
fn each_miner_opens_its_own_channel_and_gets_its_own_success() {
    let mut r = Router::new(None);
    let actions = r.on_miner_message(1, open(WALLET_KEY));
    let request_id = forwarded_open(&actions);
    assert_ne!(request_id, 77, "the router numbers the opens");
    match &r.on_upstream(success(request_id, 10))[..] {
        [Action::ToMiner(1, MiningOwned::OpenExtendedMiningChannelSuccess(s))] => {
            assert_eq!(s.channel_id, 10)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.key_of(10), Some(key(WALLET_KEY)));
}

#[test]
fn jobs_and_targets_go_to_the_channels_owner_only() {
    let mut r = two_channels();
    assert_eq!(recipients(&r.on_upstream(set_target(20))), vec![2]);
    assert_eq!(recipients(&r.on_upstream(job(10, 4))), vec![1]);
    assert!(
        r.on_upstream(job(99, 4)).is_empty(),
        "an unknown channel reaches nobody"
    );
}

fn submit(channel_id: u32) -> MiningOwned {
    MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
        channel_id,
        sequence_number: 40,
        job_id: 1,
        nonce: 0,
        ntime: 0,
        version: 0,
        extranonce: B032Owned::new(vec![0; 8]).unwrap(),
    })
}

/// A miner's message sent before the pool link was lost names a channel of
/// the old link; the new link may have given its id to another miner.
#[test]
fn a_miners_message_for_a_channel_it_does_not_hold_is_dropped() {
    let mut r = two_channels();
    assert!(matches!(&r.on_miner_message(1, submit(10))[..],
        [Action::Upstream(MiningOwned::SubmitSharesExtended(s))] if s.channel_id == 10));
    assert!(r.on_miner_message(1, submit(20)).is_empty(), "miner 2's");
    assert!(r.on_miner_message(1, submit(99)).is_empty(), "no channel");
    let update = |channel_id| {
        MiningOwned::UpdateChannel(stratum_core::mining_sv2::UpdateChannelOwned {
            channel_id,
            nominal_hash_rate: 5.0,
            maximum_target: U256Owned::from([0xff; 32]),
        })
    };
    assert!(r.on_miner_message(2, update(10)).is_empty());
    assert_eq!(r.on_miner_message(2, update(20)).len(), 1);
    // After a loss, nothing is held until the new link's channels open.
    r.on_upstream_lost();
    assert!(r.on_miner_message(1, submit(10)).is_empty());
}

#[test]
fn an_open_error_goes_to_the_miner_that_asked() {
    let mut r = Router::new(None);
    let request_id = forwarded_open(&r.on_miner_message(3, open(WALLET_KEY)));
    let error = MiningOwned::OpenMiningChannelError(OpenMiningChannelErrorOwned {
        request_id,
        error_code: str0255_truncated("max-channels"),
    });
    assert_eq!(recipients(&r.on_upstream(error)), vec![3]);
}

/// The one message `actions` send the pool: a CloseChannel, its channel.
fn closed(actions: &[Action]) -> u32 {
    match actions {
        [Action::Upstream(MiningOwned::CloseChannel(c))] => c.channel_id,
        other => panic!("{other:?}"),
    }
}

/// A channel the pool opens for a miner that left meanwhile is closed at
/// once: nobody would ever mine on it, and it would hold one of the pool's
/// channels for as long as the connection lasts.
#[test]
fn a_leaving_miner_closes_its_channels_and_the_one_still_opening() {
    let mut r = two_channels();
    let pending = forwarded_open(&r.on_miner_message(1, open(WALLET_KEY)));
    assert_eq!(closed(&r.on_miner_left(1)), 10);
    assert_eq!(closed(&r.on_upstream(success(pending, 11))), 11);
    assert!(r.on_upstream(job(11, 5)).is_empty());
    assert!(r.on_upstream(job(10, 5)).is_empty());
    assert_eq!(recipients(&r.on_upstream(job(20, 5))), vec![2]);
}

/// After a pool reconnect the pool gives a key's owed notices to the first
/// channel that opens with it, right after its success: the channel of a
/// miner that left before that success still carries the key.
#[test]
fn notices_on_a_channel_opened_for_a_miner_that_left_carry_its_key() {
    let mut r = two_channels();
    let pending = forwarded_open(&r.on_miner_message(1, open(WALLET_KEY)));
    r.on_miner_left(1);
    assert_eq!(closed(&r.on_upstream(success(pending, 11))), 11);
    assert!(matches!(&r.on_ehash(notification(11))[..],
        [Action::Quote(n)] if n.key == Some(key(WALLET_KEY))));
}

#[test]
fn an_upstream_loss_forgets_every_channel_but_keeps_their_keys() {
    let mut r = two_channels();
    let pending = forwarded_open(&r.on_miner_message(2, open(MINER_KEY)));
    r.on_upstream_lost();
    assert!(r.on_upstream(job(10, 1)).is_empty());
    assert_eq!(closed(&r.on_upstream(success(pending, 30))), 30);
    assert!(r.on_miner_left(1).is_empty(), "nothing left to close");
    assert_eq!(r.key_of(20), Some(key(MINER_KEY)));
}

#[test]
fn a_notification_for_a_closed_channel_carries_that_channels_key() {
    let mut r = two_channels();
    r.on_miner_left(2);
    match &r.on_ehash(notification(20))[..] {
        [Action::Quote(n)] => {
            assert_eq!(n.key, Some(key(MINER_KEY)));
            assert_eq!(n.message, notification(20));
        }
        other => panic!("{other:?}"),
    }
    let closed_by_pool = MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id: 10,
        reason_code: str0255_truncated("bye"),
    });
    assert_eq!(recipients(&r.on_upstream(closed_by_pool)), vec![1]);
    let failure = EhashMessage::MintQuoteFailure(MintQuoteFailureOwned {
        channel_id: 10,
        sequence_number: 1,
        share_hash: U256Owned::from([1; 32]),
        error_code: str0255_truncated("mint-down"),
        error_message: str0255_truncated(""),
    });
    assert!(matches!(&r.on_ehash(failure)[..],
        [Action::Quote(n)] if n.key == Some(key(WALLET_KEY))));
    assert!(matches!(&r.on_ehash(notification(555))[..],
        [Action::Quote(n)] if n.key.is_none()));
}

#[test]
fn aggregated_mode_opens_one_channel_and_fans_jobs_out_to_every_miner() {
    let mut r = Router::new(Some(key(WALLET_KEY)));
    let request_id = forwarded_open(&r.on_miner_message(1, open(WALLET_KEY)));
    assert!(
        r.on_miner_message(2, open(WALLET_KEY)).is_empty(),
        "one open upstream for all"
    );
    let mut answered = recipients(&r.on_upstream(success(request_id, 7)));
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2]);
    let mut got_job = recipients(&r.on_upstream(job(7, 1)));
    got_job.sort_unstable();
    assert_eq!(got_job, vec![1, 2]);
    let update = MiningOwned::UpdateChannel(stratum_core::mining_sv2::UpdateChannelOwned {
        channel_id: 7,
        nominal_hash_rate: 1e9,
        maximum_target: U256Owned::from([0xff; 32]),
    });
    assert!(
        r.on_miner_message(1, update).is_empty(),
        "the pool sets the shared target"
    );
    let close = MiningOwned::CloseChannel(CloseChannelOwned {
        channel_id: 7,
        reason_code: str0255_truncated("opened-twice"),
    });
    assert!(
        r.on_miner_message(1, close).is_empty(),
        "it closes with its last member, not at a miner's word"
    );
    assert!(matches!(&r.on_miner_message(2, submit(7))[..],
        [Action::Upstream(MiningOwned::SubmitSharesExtended(s))] if s.sequence_number == 1));
    assert!(r.on_miner_left(1).is_empty());
    assert!(matches!(&r.on_miner_left(2)[..],
        [Action::Upstream(MiningOwned::CloseChannel(c))] if c.channel_id == 7));
    assert_eq!(r.key_of(7), Some(key(WALLET_KEY)));
}

#[test]
fn recorded_notifications_are_acknowledged_on_the_channel_they_came_on() {
    match &Router::acknowledge(20, &[[1; 32], [2; 32]])[..] {
        [Action::Ack(EhashMessage::MintQuoteAck(ack))] => {
            assert_eq!(ack.channel_id, 20);
            let hashes: Vec<[u8; 32]> = ack.share_hashes.iter().map(|h| h.to_array()).collect();
            assert_eq!(hashes, vec![[1; 32], [2; 32]]);
        }
        other => panic!("{other:?}"),
    }
    let ack = Router::acknowledge(20, &[[1; 32]]).pop().unwrap();
    let Action::Ack(ack) = ack else { panic!() };
    assert!(
        Router::new(None).on_ehash(ack).is_empty(),
        "the pool sends no acks"
    );
}

#[test]
fn the_channels_closed_longest_ago_are_forgotten_first() {
    let mut r = Router::new(None);
    for channel_id in 1..=(MAX_CLOSED_CHANNELS as u32 + 1) {
        let request_id = forwarded_open(&r.on_miner_message(1, open(MINER_KEY)));
        r.on_upstream(success(request_id, channel_id));
        let closed = MiningOwned::CloseChannel(CloseChannelOwned {
            channel_id,
            reason_code: str0255_truncated("bye"),
        });
        r.on_upstream(closed);
    }
    assert_eq!(r.key_of(1), None, "the first closed is forgotten");
    assert_eq!(r.key_of(2), Some(key(MINER_KEY)));
    assert_eq!(
        r.key_of(MAX_CLOSED_CHANNELS as u32 + 1),
        Some(key(MINER_KEY))
    );
}

/// The pool renews a channel with a new prefix and a job active at once
/// (no SetNewPrevHash: the older jobs stay good for the miners mining them).
/// A miner joining afterwards gets the new prefix and only jobs sent on it,
/// the first started as its tip.
#[test]
fn a_miner_joining_a_renewed_aggregated_channel_gets_its_new_prefix_and_jobs() {
    let mut r = Router::new(Some(key(WALLET_KEY)));
    let request_id = forwarded_open(&r.on_miner_message(1, open(WALLET_KEY)));
    r.on_upstream(success(request_id, 7));
    r.on_upstream(job(7, 1));
    r.on_upstream(MiningOwned::SetNewPrevHash(
        stratum_core::mining_sv2::SetNewPrevHashOwned {
            channel_id: 7,
            job_id: 1,
            prev_hash: U256Owned::from([3; 32]),
            min_ntime: 1,
            nbits: 0x207f_ffff,
        },
    ));
    r.on_upstream(job(7, 2));
    let renewed =
        MiningOwned::SetExtranoncePrefix(stratum_core::mining_sv2::SetExtranoncePrefixOwned {
            channel_id: 7,
            extranonce_prefix: B032Owned::new(vec![9, 9, 9, 9]).unwrap(),
        });
    assert_eq!(recipients(&r.on_upstream(renewed)), vec![1]);
    let MiningOwned::NewExtendedMiningJob(mut new_job) = job(7, 3) else {
        unreachable!()
    };
    new_job.min_ntime = Sv2OptionOwned::new(Some(1));
    new_job.coinbase_tx_prefix = B064KOwned::new(vec![0x99]).unwrap();
    let sent = r.on_upstream(MiningOwned::NewExtendedMiningJob(new_job));
    assert_eq!(recipients(&sent), vec![1], "the member mines it at once");

    let joined = r.on_miner_message(2, open(WALLET_KEY));
    let to_miner: Vec<&MiningOwned> = joined
        .iter()
        .filter_map(|a| match a {
            Action::ToMiner(2, m) => Some(m),
            _ => None,
        })
        .collect();
    match &to_miner[..] {
        [MiningOwned::OpenExtendedMiningChannelSuccess(s), MiningOwned::NewExtendedMiningJob(j), MiningOwned::SetNewPrevHash(p)] =>
        {
            assert_eq!(s.extranonce_prefix.as_bytes(), [9, 9, 9, 9]);
            assert_eq!(j.job_id, 3);
            assert_eq!(j.coinbase_tx_prefix.as_bytes(), [0x99], "the new job");
            assert_eq!(j.min_ntime.clone().into_inner(), None, "started by");
            assert_eq!((p.job_id, p.prev_hash.to_array()), (3, [3; 32]));
        }
        other => panic!("{other:?}"),
    }
}

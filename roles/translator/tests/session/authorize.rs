//! Authorizing a miner: the channel it opens, its locking key, and what
//! waits for the pool.

use super::*;

#[test]
fn authorize_opens_a_channel_and_is_answered_only_when_it_exists() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig-1", "x"]}));
    assert!(
        h.sv1.iter().all(|v| v["id"] != 2),
        "answered before the channel exists"
    );
    assert_eq!(h.take_open(), format!("{WALLET_KEY}.rig-1"));
    h.open_success(&POOL_PREFIX);
    assert_eq!(h.response(2)["result"], true);
    assert_eq!(h.session.channel_id(), Some(CHANNEL));
}

#[test]
fn a_username_that_is_a_key_locks_that_miners_quotes_to_it() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(
        json!({"id": 2, "method": "mining.authorize", "params": [format!("{MINER_KEY}.bob"), "x"]}),
    );
    assert_eq!(h.take_open(), format!("{MINER_KEY}.bob"));
    assert_eq!(h.session.locking_key().unwrap().to_string(), MINER_KEY);
}

#[test]
fn a_refused_channel_refuses_the_authorize() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["x", "x"]}));
    h.take_open();
    h.pool_sends(MiningOwned::OpenMiningChannelError(
        OpenMiningChannelErrorOwned {
            request_id: 1,
            error_code: str0255("no-locking-key"),
        },
    ));
    h.refused(2, "no-locking-key");
}

#[test]
fn submit_before_authorize_is_refused() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(
        json!({"id": 3, "method": "mining.submit", "params": ["rig", "1", "00000000", "1", "1"]}),
    );
    assert_eq!(h.response(3)["error"][0], 24);
}

#[test]
fn authorizations_waiting_for_the_pool_are_bounded() {
    let mut h = Harness::new();
    h.subscribe();
    for id in 0..MAX_PENDING_AUTHORIZE as u64 {
        h.line(json!({"id": 100 + id, "method": "mining.authorize", "params": ["rig", "x"]}));
    }
    assert!(h.sv1.is_empty(), "all waiting for the channel: {:?}", h.sv1);
    h.line(json!({"id": 999, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.refused(999, "too many authorizations");
    // The channel opens: every waiting one is answered.
    h.take_open();
    h.open_success(&POOL_PREFIX);
    for id in 0..MAX_PENDING_AUTHORIZE as u64 {
        assert_eq!(h.response(100 + id)["result"], true);
    }
}

/// One connection's shares all go to its one channel: another locking key
/// authorized on it, before or after the channel opened, is refused (its
/// shares would pay the first's key); another worker of the same key is not.
#[test]
fn a_second_locking_key_on_a_connection_is_refused() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig-1", "x"]}));
    h.line(json!({"id": 3, "method": "mining.authorize", "params": [MINER_KEY, "x"]}));
    let refused = h.refused(3, &format!("this connection mines for {WALLET_KEY}"));
    assert_eq!(refused["error"][0], 24, "{refused}");
    assert_eq!(h.take_open(), format!("{WALLET_KEY}.rig-1"));
    h.open_success(&POOL_PREFIX);
    assert_eq!(h.response(2)["result"], true);
    h.line(
        json!({"id": 4, "method": "mining.authorize", "params": [format!("{MINER_KEY}.bob"), "x"]}),
    );
    assert_eq!(h.response(4)["error"][0], 24);
    h.line(json!({"id": 5, "method": "mining.authorize", "params": ["rig-2", "x"]}));
    assert_eq!(h.response(5)["result"], true);
    assert_eq!(h.session.locking_key().unwrap().to_string(), WALLET_KEY);
}

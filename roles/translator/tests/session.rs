//! The miner session (sans-IO): SV1 in, SV2 out, against hand-made SV2 jobs.
//! Headers are rebuilt from the SV1 messages with `sv1::client` (the miner's
//! code, independent of the translator's `sv1::server`), so a translation
//! mistake makes the channel refuse the share.

use std::sync::atomic::{AtomicU64, Ordering};

use ehash::LockingKey;
use serde_json::{json, Value};
use stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Str0255Owned, Sv2OptionOwned, U256Owned,
};
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned,
    SetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesExtendedOwned,
    SubmitSharesSuccessOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use sv1::client::{search, submit_params, Found, Job};
use translator::miner::{
    Action, MinerSession, MinerStat, SessionConfig, EXTRANONCE1_SIZE, MAX_PENDING_AUTHORIZE,
    MAX_PENDING_SUBMITS, VERSION_ROLLING_MASK,
};

const WALLET_KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const MINER_KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
const CHANNEL: u32 = 42;
const POOL_PREFIX: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
const ROLLABLE: u16 = 12;
const NTIME: u32 = 1_700_000_000;

fn config() -> SessionConfig {
    SessionConfig {
        extranonce2_size: 4,
        nominal_hashrate: 1000.0,
        shares_per_minute: 6.0,
        wallet_key: WALLET_KEY.parse::<LockingKey>().unwrap(),
        keepalive_secs: 60,
        vardiff_secs: 1,
        wait_for_pool: true,
    }
}

/// 1 in 16 hashes meets it.
fn easy_target_le() -> [u8; 32] {
    let mut t = [0xffu8; 32];
    t[31] = 0x0f;
    t
}

fn str0255(s: &str) -> Str0255Owned {
    s.to_string().try_into().unwrap()
}

/// A coinbase split around `prefix_len + rollable` extranonce bytes.
fn coinbase_parts(extranonce_len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = hex::decode("01000000").unwrap();
    prefix.push(1);
    prefix.extend([0u8; 32]);
    prefix.extend([0xff; 4]);
    prefix.push((4 + extranonce_len) as u8);
    prefix.extend([0x03, 0x01, 0x00, 0x00]);
    let mut suffix = vec![0xff; 4];
    suffix.push(1);
    suffix.extend(5_000_000_000u64.to_le_bytes());
    suffix.extend([0x01, 0x51]);
    suffix.extend([0, 0, 0, 0]);
    (prefix, suffix)
}

/// Numbers share searches, so that no two find the same share.
fn next_run() -> u64 {
    static RUN: AtomicU64 = AtomicU64::new(1);
    RUN.fetch_add(1, Ordering::Relaxed)
}

struct Harness {
    session: MinerSession,
    now: u64,
    sv1: Vec<Value>,
    upstream: Vec<MiningOwned>,
    closed: Option<String>,
    user: String,
    diff: Option<f64>,
    stats: Vec<MinerStat>,
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: SessionConfig) -> Self {
        Harness {
            session: MinerSession::new(std::sync::Arc::new(config), 7),
            now: NTIME as u64,
            sv1: vec![],
            upstream: vec![],
            closed: None,
            user: "rig".into(),
            diff: None,
            stats: vec![],
        }
    }

    fn apply(&mut self, outs: Vec<Action>) {
        for o in outs {
            match o {
                Action::Sv1(l) => {
                    assert!(l.ends_with('\n'));
                    let v: Value = serde_json::from_str(l.trim_end()).unwrap();
                    if v["method"] == "mining.set_difficulty" {
                        self.diff = v["params"][0].as_f64();
                    }
                    self.sv1.push(v)
                }
                Action::Upstream(m) => self.upstream.push(m),
                Action::Close(r) => self.closed = Some(r),
                Action::Stats(s) => self.stats.push(s),
            }
        }
    }

    fn line(&mut self, v: Value) {
        let outs = self.session.on_line(&v.to_string(), self.now);
        self.apply(outs);
    }

    fn pool_sends(&mut self, m: MiningOwned) {
        let outs = self.session.on_upstream(m, self.now);
        self.apply(outs);
    }

    fn response(&mut self, id: u64) -> Value {
        let pos = self
            .sv1
            .iter()
            .position(|v| v["id"] == json!(id) && v.get("method").is_none())
            .unwrap_or_else(|| panic!("no response to {id} in {:?}", self.sv1));
        self.sv1.remove(pos)
    }

    /// The response to `id`: an error whose message names `reason`.
    fn refused(&mut self, id: u64, reason: &str) -> Value {
        let r = self.response(id);
        assert!(r["error"][1].as_str().unwrap().contains(reason), "{r}");
        r
    }

    fn last_notify(&self) -> Job {
        let v = self
            .sv1
            .iter()
            .rev()
            .find(|v| v["method"] == "mining.notify")
            .expect("a notify");
        Job::from_params(&v["params"]).expect("a valid mining.notify")
    }

    fn difficulty(&self) -> f64 {
        self.diff.expect("a difficulty")
    }

    fn subscribe(&mut self) -> Vec<u8> {
        self.line(json!({"id": 1, "method": "mining.subscribe", "params": ["test"]}));
        let r = self.response(1);
        assert_eq!(r["result"][2], 4);
        hex::decode(r["result"][1].as_str().unwrap()).unwrap()
    }

    fn take_open(&mut self) -> String {
        let open = self.upstream.pop().expect("an OpenExtendedMiningChannel");
        match open {
            MiningOwned::OpenExtendedMiningChannel(o) => {
                assert_eq!(o.min_extranonce_size, (EXTRANONCE1_SIZE + 4) as u16);
                String::from_utf8(o.user_identity.as_bytes().to_vec()).unwrap()
            }
            other => panic!("expected an open, got {other:?}"),
        }
    }

    fn open_success(&mut self, prefix: &[u8]) {
        self.open_success_with(prefix, ROLLABLE)
    }

    fn open_success_with(&mut self, prefix: &[u8], rollable: u16) {
        self.pool_sends(MiningOwned::OpenExtendedMiningChannelSuccess(
            OpenExtendedMiningChannelSuccessOwned {
                request_id: 1,
                channel_id: CHANNEL,
                target: U256Owned::from(easy_target_le()),
                extranonce_size: rollable,
                extranonce_prefix: B032Owned::new(prefix.to_vec()).unwrap(),
                group_channel_id: 0,
            },
        ));
    }

    fn job(&mut self, job_id: u32, prefix_len: usize) {
        self.job_with(job_id, prefix_len, ROLLABLE)
    }

    fn job_with(&mut self, job_id: u32, prefix_len: usize, rollable: u16) {
        let (p, s) = coinbase_parts(prefix_len + rollable as usize);
        self.pool_sends(MiningOwned::NewExtendedMiningJob(
            NewExtendedMiningJobOwned {
                channel_id: CHANNEL,
                job_id,
                min_ntime: Sv2OptionOwned::new(None),
                version: 0x2000_0000,
                version_rolling_allowed: true,
                merkle_path: Seq0255Owned::new(vec![U256Owned::from([0x11u8; 32])]).unwrap(),
                coinbase_tx_prefix: B064KOwned::new(p).unwrap(),
                coinbase_tx_suffix: B064KOwned::new(s).unwrap(),
            },
        ));
        let mut prev = [0u8; 32];
        prev[0] = job_id as u8;
        prev[31] = 0x01;
        self.pool_sends(MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id: CHANNEL,
            job_id,
            prev_hash: U256Owned::from(prev),
            min_ntime: NTIME,
            nbits: 0x1d00_ffff,
        }));
    }

    /// subscribe, authorize, channel open, first job.
    fn ready(user: &str) -> (Harness, Vec<u8>) {
        let mut h = Harness::new();
        h.user = user.into();
        let en1 = h.subscribe();
        h.line(json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]}));
        h.take_open();
        h.open_success(&POOL_PREFIX);
        assert_eq!(h.response(2)["result"], true);
        h.job(1, POOL_PREFIX.len());
        (h, en1)
    }

    fn share(&self, en1: &[u8], meets: bool) -> Found {
        self.share_with(en1, 4, meets)
    }

    fn share_with(&self, en1: &[u8], extranonce2_size: usize, meets: bool) -> Found {
        let job = self.last_notify();
        search(
            &job,
            en1,
            extranonce2_size,
            self.difficulty(),
            None,
            next_run(),
            |hash, target| (hash <= target) == meets,
        )
    }

    fn submit(&mut self, id: u64, share: &Found) {
        let params = submit_params(&self.user, share);
        self.line(json!({"id": id, "method": "mining.submit", "params": params}));
    }

    fn forwarded(&mut self) -> SubmitSharesExtendedOwned {
        match self.upstream.pop() {
            Some(MiningOwned::SubmitSharesExtended(s)) => s,
            other => panic!(
                "expected a forwarded share, got {other:?} (sv1: {:?})",
                self.sv1
            ),
        }
    }
}

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
fn shares_become_sv2_shares_the_channel_validates_and_the_pool_answer_is_relayed() {
    let (mut h, en1) = Harness::ready("rig");
    assert_eq!(en1, 7u32.to_be_bytes());
    for i in 0..8u64 {
        let share = h.share(&en1, true);
        h.submit(100 + i, &share);
        let fwd = h.forwarded();
        // [zero padding][extranonce1][extranonce2]
        let mut expected = vec![0u8; ROLLABLE as usize - EXTRANONCE1_SIZE - 4];
        expected.extend(&en1);
        expected.extend(&share.extranonce2);
        assert_eq!(fwd.extranonce.as_bytes(), &expected[..]);
        assert_eq!(
            (fwd.channel_id, fwd.nonce, fwd.ntime),
            (CHANNEL, share.nonce, share.ntime)
        );
        assert!(
            h.sv1.iter().all(|v| v["id"] != json!(100 + i)),
            "answered before the pool"
        );
        h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id: CHANNEL,
            last_sequence_number: fwd.sequence_number,
            new_submits_accepted_count: 1,
            new_shares_sum: 1,
        }));
        assert_eq!(h.response(100 + i)["result"], true);
    }
    assert_eq!(h.session.share_counts(), (8, 0));
}

#[test]
fn one_success_acknowledges_every_earlier_share() {
    let (mut h, en1) = Harness::ready("rig");
    let mut last = 0;
    for i in 0..3u64 {
        let share = h.share(&en1, true);
        h.submit(10 + i, &share);
        last = h.forwarded().sequence_number;
    }
    h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
        channel_id: CHANNEL,
        last_sequence_number: last,
        new_submits_accepted_count: 3,
        new_shares_sum: 3,
    }));
    for i in 0..3u64 {
        assert_eq!(h.response(10 + i)["result"], true);
    }
}

#[test]
fn a_share_under_the_channel_target_is_answered_false_and_not_forwarded() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, false);
    h.submit(5, &share);
    assert!(h.upstream.is_empty());
    let r = h.response(5);
    assert_eq!(r["error"][0], 23, "{r}");
    assert_eq!(h.session.share_counts(), (0, 1));
}

#[test]
fn the_pools_refusal_reaches_the_miner_with_its_reason() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, true);
    h.submit(5, &share);
    let seq = h.forwarded().sequence_number;
    h.pool_sends(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
        channel_id: CHANNEL,
        sequence_number: seq,
        error_code: str0255("stale-share"),
    }));
    h.refused(5, "stale-share");
}

#[test]
fn unknown_jobs_bad_extranonce2_and_bad_params_get_errors_without_disconnecting() {
    let (mut h, en1) = Harness::ready("rig");
    let mut share = h.share(&en1, true);
    share.job_id = "ffff".into();
    h.submit(5, &share);
    assert_eq!(h.response(5)["error"][0], 21);
    let mut share = h.share(&en1, true);
    share.extranonce2 = vec![1, 2];
    h.submit(6, &share);
    assert_eq!(h.response(6)["error"][0], 20);
    h.line(json!({"id": 7, "method": "mining.submit", "params": ["rig", "1", "zz", "1", "1"]}));
    assert_eq!(h.response(7)["error"][0], -32602);
    h.line(json!({"id": 8, "method": "mining.nonsense", "params": []}));
    assert_eq!(h.response(8)["error"][0], -32601);
    assert!(h.upstream.is_empty());
    assert_eq!(h.closed, None);
}

#[test]
fn unparsable_json_disconnects_the_miner() {
    let mut h = Harness::new();
    let outs = h.session.on_line("{\"id\": 1, \"method\": ", 0);
    h.apply(outs);
    assert!(
        h.closed.as_deref().unwrap().contains("malformed"),
        "{:?}",
        h.closed
    );
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
fn version_rolling_bits_are_applied_within_the_negotiated_mask() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 9, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]}));
    let r = h.response(9);
    assert_eq!(
        r["result"]["version-rolling.mask"],
        format!("{VERSION_ROLLING_MASK:08x}")
    );
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());
    let job = h.last_notify();
    // search with rolled bits until a share with version bits comes up
    let share = loop {
        let s = search(
            &job,
            &en1,
            4,
            h.difficulty(),
            Some(VERSION_ROLLING_MASK),
            next_run(),
            |a, b| a <= b,
        );
        if s.version_bits.is_some() {
            break s;
        }
    };
    h.submit(20, &share);
    let fwd = h.forwarded();
    assert_eq!(
        fwd.version,
        (0x2000_0000 & !VERSION_ROLLING_MASK) | share.version_bits.unwrap()
    );
    let mut bad = share.clone();
    bad.version_bits = Some(0x0000_0001);
    h.submit(21, &bad);
    assert_eq!(h.response(21)["error"][0], 20);
}

#[test]
fn an_upstream_reconnect_keeps_the_miner_and_its_extranonce1() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, true);
    h.submit(30, &share);
    h.forwarded();
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    h.refused(30, "lost");
    // a share on the old job is refused while there is no channel
    h.submit(31, &share);
    assert_eq!(h.response(31)["error"][0], 24);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    h.take_open();
    h.open_success(&[9, 9, 9]);
    h.sv1.clear();
    h.job(5, 3);
    let job = h.last_notify();
    assert!(job.clean, "the first job after a reconnect is clean");
    assert!(
        job.coinb1.ends_with(&[9, 9, 9, 0, 0, 0, 0]),
        "pool prefix and padding in coinb1"
    );
    let share = h.share(&en1, true);
    h.submit(32, &share);
    assert_eq!(h.forwarded().channel_id, CHANNEL);
    assert_eq!(h.closed, None);
}

/// The pool's answer to an open asking for more extranonce than it has.
fn no_extranonce_room() -> MiningOwned {
    MiningOwned::OpenMiningChannelError(OpenMiningChannelErrorOwned {
        request_id: 1,
        error_code: str0255("min-extranonce-size-too-large"),
    })
}

/// After a failover, the first open the session sends: its min_extranonce_size.
fn reopen_after_failover(h: &mut Harness) -> u16 {
    let outs = h.session.on_upstream_lost();
    h.apply(outs);
    let outs = h.session.on_upstream_ready();
    h.apply(outs);
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => o.min_extranonce_size,
        other => panic!("expected an open, got {other:?}"),
    }
}

#[test]
fn a_subscribed_miner_is_moved_to_a_smaller_extranonce2_when_the_next_pool_has_less_room() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.extranonce.subscribe", "params": []}));
    assert_eq!(h.response(2)["result"], true);
    h.line(json!({"id": 3, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());

    // the next pool has 6 bytes to roll: 4 of extranonce1 and 2 of extranonce2
    assert_eq!(reopen_after_failover(&mut h), (EXTRANONCE1_SIZE + 4) as u16);
    h.pool_sends(no_extranonce_room());
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => {
            assert_eq!(o.min_extranonce_size, (EXTRANONCE1_SIZE + 2) as u16)
        }
        other => panic!("expected a second open asking for less, got {other:?}"),
    }
    assert_eq!(h.closed, None);
    h.sv1.clear();
    h.open_success_with(&[7; 10], 6);
    let set = h
        .sv1
        .iter()
        .find(|v| v["method"] == "mining.set_extranonce")
        .expect("a mining.set_extranonce");
    assert_eq!(set["params"], json!([hex::encode(&en1), 2]));
    h.job_with(2, 10, 6);
    let share = h.share_with(&en1, 2, true);
    h.submit(30, &share);
    assert_eq!(h.forwarded().extranonce.to_owned_bytes().len(), 6);
    // the old size is refused now
    let old = h.share_with(&en1, 4, true);
    h.submit(31, &old);
    h.refused(31, "extranonce2");
    assert_eq!(h.closed, None);
}

#[test]
fn a_miner_without_extranonce_subscription_is_closed_when_the_next_pool_has_no_room() {
    let (mut h, _) = Harness::ready("rig");
    reopen_after_failover(&mut h);
    h.pool_sends(no_extranonce_room());
    assert!(h.upstream.is_empty(), "no second open: {:?}", h.upstream);
    let reason = h
        .closed
        .expect("the miner is closed, so its firmware fails over");
    assert!(reason.contains("min-extranonce-size-too-large"), "{reason}");
}

#[test]
fn keepalive_resends_the_job_with_a_fresh_ntime() {
    let (mut h, _) = Harness::ready("rig");
    let first = h.last_notify();
    h.now += 61;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    let again = h.last_notify();
    assert_ne!(again.job_id, first.job_id);
    assert_eq!(again.ntime, NTIME + 61);
    assert!(!again.clean);
}

/// The SV1 jobs a miner may still submit on: the latest 64 sent.
#[test]
fn shares_on_the_latest_sv1_jobs_are_taken_and_older_ones_are_unknown() {
    let (mut h, en1) = Harness::ready("rig");
    let find = |h: &Harness, job: &Job| {
        search(
            job,
            &en1,
            4,
            h.difficulty(),
            None,
            next_run(),
            |hash, target| hash <= target,
        )
    };
    let first = h.last_notify();
    let mut second = None;
    // 64 keepalive jobs after the first.
    for _ in 0..64 {
        h.now += 61;
        let outs = h.session.on_tick(h.now);
        h.apply(outs);
        second.get_or_insert_with(|| h.last_notify());
    }
    let second = second.unwrap();
    let forgotten = find(&h, &first);
    h.submit(50, &forgotten);
    assert_eq!(h.refused(50, "job not found")["error"][0], 21);
    let kept = find(&h, &second);
    h.submit(51, &kept);
    assert_eq!(h.forwarded().ntime, second.ntime);
}

#[test]
fn vardiff_asks_the_pool_for_a_lower_rate_in_bounded_steps_when_shares_come_too_slowly() {
    let (mut h, en1) = Harness::ready("rig");
    let mut rates = Vec::new();
    let mut first_at = None;
    // 40 shares of 16 expected hashes a minute, two every three seconds:
    // ~11 h/s, far under the nominal 1000 h/s.
    for minute in 0..10u64 {
        for second in 0..60 {
            h.now += 1;
            if second % 3 != 2 {
                let share = h.share(&en1, true);
                h.submit(1000 * minute + second, &share);
                h.forwarded();
            }
            let outs = h.session.on_tick(h.now);
            h.apply(outs);
            while let Some(m) = h.upstream.pop() {
                match m {
                    MiningOwned::UpdateChannel(u) => {
                        assert_eq!(u.channel_id, CHANNEL);
                        first_at.get_or_insert(minute * 60 + second);
                        rates.push(u.nominal_hash_rate);
                    }
                    other => panic!("expected UpdateChannel, got {other:?}"),
                }
            }
        }
    }
    assert!(
        first_at.is_some_and(|t| t <= 180),
        "first UpdateChannel at {first_at:?} s"
    );
    // Shares credit the work of the job they were mined on (16 hashes each):
    // the estimate goes down towards ~11 h/s, by at most x4 a step, never under it.
    let measured = 40.0 * 16.0 / 60.0;
    let mut previous = 1000.0f32;
    for &rate in &rates {
        assert!(
            rate < previous && rate >= previous / 4.0 * 0.999 && rate >= measured / 2.0,
            "{rates:?}"
        );
        previous = rate;
    }
    assert!(previous < 250.0, "{rates:?}");
}

#[test]
fn a_new_target_reaches_the_miner_with_the_next_job_as_clean_work() {
    let (mut h, _) = Harness::ready("rig");
    let before = h.difficulty();
    let first = h.last_notify();
    // What the pool answers to UpdateChannel: SetTarget, then a job at it.
    let mut harder = easy_target_le();
    harder[31] = 0x00;
    h.pool_sends(MiningOwned::SetTarget(SetTargetOwned {
        channel_id: CHANNEL,
        maximum_target: U256Owned::from(harder),
    }));
    let (p, s) = coinbase_parts(POOL_PREFIX.len() + ROLLABLE as usize);
    h.pool_sends(MiningOwned::NewExtendedMiningJob(
        NewExtendedMiningJobOwned {
            channel_id: CHANNEL,
            job_id: 2,
            min_ntime: Sv2OptionOwned::new(Some(NTIME)),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![]).unwrap(),
            coinbase_tx_prefix: B064KOwned::new(p).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(s).unwrap(),
        },
    ));
    assert!(
        h.difficulty() > before * 10.0,
        "{} -> {}",
        before,
        h.difficulty()
    );
    let job = h.last_notify();
    assert_ne!(job.job_id, first.job_id);
    assert!(job.clean, "a new difficulty comes with clean work");
}

#[test]
fn a_channel_the_pool_closes_is_reopened_a_few_times_then_the_miner_is_dropped() {
    let (mut h, _) = Harness::ready("rig");
    for _ in 0..3 {
        h.pool_sends(MiningOwned::CloseChannel(
            stratum_core::mining_sv2::CloseChannelOwned {
                channel_id: CHANNEL,
                reason_code: str0255("seen-shares-budget-exhausted"),
            },
        ));
        assert_eq!(h.closed, None);
        assert_eq!(h.take_open(), format!("{WALLET_KEY}.rig"));
        h.open_success(&POOL_PREFIX);
    }
    h.pool_sends(MiningOwned::CloseChannel(
        stratum_core::mining_sv2::CloseChannelOwned {
            channel_id: CHANNEL,
            reason_code: str0255("go-away"),
        },
    ));
    assert!(h.closed.as_deref().unwrap().contains("go-away"));
}

#[test]
fn a_share_on_a_job_of_the_previous_chain_tip_is_answered_stale() {
    let (mut h, en1) = Harness::ready("rig");
    let old = h.share(&en1, true);
    h.job(2, POOL_PREFIX.len()); // new prevhash
    assert!(h.last_notify().clean);
    h.submit(40, &old);
    assert_eq!(h.refused(40, "stale")["error"][0], 21);
    assert!(h.upstream.is_empty());
}

#[test]
fn without_waiting_for_the_pool_a_valid_share_is_answered_at_once() {
    let mut h = Harness::with(SessionConfig {
        wait_for_pool: false,
        ..config()
    });
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());
    let share = h.share(&en1, true);
    h.submit(50, &share);
    assert_eq!(h.response(50)["result"], true);
    h.forwarded();
    // a low-difficulty share is still refused
    let weak = h.share(&en1, false);
    h.submit(51, &weak);
    assert_eq!(h.response(51)["error"][0], 23);
}

#[test]
fn the_stats_service_hears_the_authorized_miner_its_answered_shares_and_its_hashrate() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig-1", "x"]}));
    assert!(
        h.stats.is_empty(),
        "not authorized before the channel exists"
    );
    h.take_open();
    h.open_success(&POOL_PREFIX);
    assert!(h.session.announced());
    assert_eq!(
        std::mem::take(&mut h.stats),
        vec![
            MinerStat::Connected {
                name: "rig-1".into()
            },
            MinerStat::Hashrate(1000)
        ],
        "the SV1 username, and the starting estimate"
    );
    h.user = "rig-1".into();
    h.job(1, POOL_PREFIX.len());

    // Shares count once the pool answered: 1 in 16 hashes meets the target.
    let share = h.share(&en1, true);
    h.submit(10, &share);
    let fwd = h.forwarded();
    assert!(h.stats.is_empty(), "not answered yet");
    h.pool_sends(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
        channel_id: CHANNEL,
        last_sequence_number: fwd.sequence_number,
        new_submits_accepted_count: 1,
        new_shares_sum: 1,
    }));
    let refused = MinerStat::Share {
        accepted: false,
        work: 0,
        backlogged: false,
    };
    assert_eq!(
        std::mem::take(&mut h.stats),
        vec![MinerStat::Share {
            accepted: true,
            work: 16,
            backlogged: false,
        }]
    );
    let share = h.share(&en1, true);
    h.submit(11, &share);
    let fwd = h.forwarded();
    h.pool_sends(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
        channel_id: CHANNEL,
        sequence_number: fwd.sequence_number,
        error_code: str0255("stale-share"),
    }));
    let weak = h.share(&en1, false);
    h.submit(12, &weak);
    assert_eq!(std::mem::take(&mut h.stats), vec![refused.clone(), refused]);

    // The estimate at least every minute, not more often without a decision.
    h.now += 60;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    assert!(
        matches!(&h.stats[..], [MinerStat::Hashrate(_)]),
        "{:?}",
        h.stats
    );
    // (A minute without shares at the channel's easy target is a drought:
    // vardiff steps down for a few seconds, each step a decision.)
    let mut quiet = 0;
    for _ in 0..10 {
        h.stats.clear();
        h.upstream.clear();
        h.now += 1;
        let outs = h.session.on_tick(h.now);
        h.apply(outs);
        let decided = h
            .upstream
            .iter()
            .any(|m| matches!(m, MiningOwned::UpdateChannel(_)));
        assert!(h.stats.is_empty() || decided, "{:?}", h.stats);
        quiet += usize::from(h.stats.is_empty());
    }
    assert!(quiet > 0);
    h.stats.clear();

    // A re-opened channel is the same miner: announced once.
    h.pool_sends(MiningOwned::CloseChannel(
        stratum_core::mining_sv2::CloseChannelOwned {
            channel_id: CHANNEL,
            reason_code: str0255("seen-shares-budget-exhausted"),
        },
    ));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    assert!(!h
        .stats
        .iter()
        .any(|s| matches!(s, MinerStat::Connected { .. })));
}

#[test]
fn a_suggested_difficulty_opens_the_channel_at_it_and_later_updates_it() {
    // At 6 shares a minute, difficulty d means d * 2^32 hashes every 10 s.
    let hashrate_of = |d: f64| d * 65536.0 / 65535.0 * 2f64.powi(32) / 10.0;
    let close = |a: f32, b: f64| (a as f64 / b - 1.0).abs() < 1e-3;
    let mut h = Harness::new();
    h.subscribe();
    h.line(json!({"id": 5, "method": "mining.suggest_difficulty", "params": [16]}));
    assert_eq!(h.response(5)["result"], true);
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => {
            assert!(
                close(o.nominal_hash_rate, hashrate_of(16.0)),
                "{}",
                o.nominal_hash_rate
            )
        }
        other => panic!("expected an open, got {other:?}"),
    }
    h.open_success(&POOL_PREFIX);
    // Once open, a new suggestion asks the pool to update the channel.
    h.line(json!({"id": 6, "method": "mining.suggest_difficulty", "params": ["2.5"]}));
    assert_eq!(h.response(6)["result"], true);
    match h.upstream.pop() {
        Some(MiningOwned::UpdateChannel(u)) => {
            assert_eq!(u.channel_id, CHANNEL);
            assert!(
                close(u.nominal_hash_rate, hashrate_of(2.5)),
                "{}",
                u.nominal_hash_rate
            );
        }
        other => panic!("expected an UpdateChannel, got {other:?}"),
    }
    // Nonsense is an error, and changes nothing.
    h.line(json!({"id": 7, "method": "mining.suggest_difficulty", "params": [-1]}));
    h.refused(7, "positive number");
    assert!(h.upstream.is_empty());
}

#[test]
fn shares_beyond_the_backlog_are_refused_and_counted_apart_in_stats() {
    let (mut h, en1) = Harness::ready("rig");
    for id in 0..MAX_PENDING_SUBMITS as u64 {
        let share = h.share(&en1, true);
        h.submit(100 + id, &share);
    }
    assert_eq!(h.upstream.len(), MAX_PENDING_SUBMITS, "all forwarded");
    h.stats.clear();
    let share = h.share(&en1, true);
    h.submit(1, &share);
    h.refused(1, "too many shares awaiting the pool");
    assert_eq!(
        h.stats,
        vec![MinerStat::Share {
            accepted: false,
            work: 0,
            backlogged: true
        }]
    );
    assert_eq!(h.closed, None);
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

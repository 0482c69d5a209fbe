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
    MAX_PENDING_SUBMITS, SUGGESTION_INTERVAL_SECS, VERSION_ROLLING_MASK,
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

mod authorize;
mod jobs;
mod shares;
mod stats;
mod upstream;

//! The job declarator (JDS) embedded in the pool, without IO.
//!
//! A job declaration client (JDC) picks its own block template and
//! declares it here before mining it on the pool's channels:
//!
//! ```text
//!   JDC                                   JDS (this module)
//!    | AllocateMiningJobToken   ------->   token T (allocated, one use)
//!    | <------- .Success(T, coinbase_outputs = the pool's reward script)
//!    | DeclareMiningJob(T, coinbase, wtxids) -->  coinbase pays the pool?
//!    |                                            tip current? txs known?
//!    | <------- ProvideMissingTransactions(positions)   (some unknown)
//!    | ProvideMissingTransactions.Success(txs) -->      (each its wtxid?)
//!    | <------- DeclareMiningJob.Success(T')  or  .Error(code, details)
//!   then on the mining connection:
//!    | SetCustomMiningJob(T', ...) --> pool --> [`JobDeclarator::check_custom_job`]
//! ```
//!
//! A client set up without DECLARE_TX_DATA (coinbase-only mode) skips the
//! declaration: it sets its allocated token on its channels directly, and
//! only the tip and the coinbase are checked (`custom_job`).
//!
//! Transactions are known from the pool's template provider (the pool asks
//! it for every template's transactions); the client provides the others,
//! and each must hash to the wtxid it declared. Those are kept only for the
//! declaration they complete: what a client sends holds no memory after.
//! The chain tip is the pool's.
//! Tokens are 8-byte little-endian numbers, the declared job's token is a
//! new one, as SRI's JDS does, so SRI's JDC works against this one.
//!
//! The template provider's interface (SV2 template distribution) cannot
//! check a transaction against the chain's coins: a declared transaction
//! unknown to the pool's template provider is checked for form (it decodes,
//! it is what was declared, it is not a coinbase), not for validity. A
//! block on an invalid one is refused by the network and pays no one.

mod coinbase;
mod custom_job;
mod prepared;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use ehash::coinbase::bip34_height;
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq064KOwned};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::script::Instruction;
use stratum_core::bitcoin::{Amount, Script, ScriptBuf, Transaction, TxOut, Wtxid};
use stratum_core::common_messages_sv2::{
    has_declare_tx_data, Protocol, SetupConnectionErrorOwned, SetupConnectionOwned,
    SetupConnectionSuccessOwned,
};
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, AllocateMiningJobTokenSuccessOwned, DeclareMiningJobErrorOwned,
    DeclareMiningJobOwned, DeclareMiningJobSuccessOwned, ProvideMissingTransactionsOwned,
    PushSolutionOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, JobDeclarationOwned};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tracing::{debug, info};

use coinbase::{DeclaredCoinbase, Refusal};

pub use custom_job::CustomJobRefusal;
pub use prepared::{prepare, JdMessage};

use prepared::{Declaration, Provided};

/// Identifies one JDS connection (its own numbering, apart from mining connections).
pub type JdConnId = u64;

/// How long a declared job's token stays good for SetCustomMiningJob on a
/// first channel.
pub const DECLARED_JOB_TTL_MS: u64 = 60_000;
/// Transactions of a declared job, at most (a block's worth, and then some).
const MAX_DECLARED_TXS: usize = 20_000;
/// A block's weight limit.
const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Declared jobs one connection holds at once (its oldest go first), and
/// declarations it may leave waiting for transactions.
pub(super) const MAX_DECLARED_PER_CONNECTION: usize = 256;
const MAX_PENDING_PER_CONNECTION: usize = 16;
/// Declared jobs the pool holds at once, of every connection (a few
/// hundred bytes each); when full, the oldest one not set on a channel goes.
const MAX_DECLARED_JOBS: usize = 65_536;
/// Transactions listed by the declarations waiting for the rest of theirs,
/// of one connection and of all (32 bytes each); with the pool's most, the
/// connection listing the most has its largest dropped for a newcomer.
const MAX_PENDING_WTXIDS_PER_CONNECTION: usize = 2 * MAX_DECLARED_TXS;
const MAX_PENDING_WTXIDS: usize = 1_000_000;
/// Request ids of declarations the tip dropped kept per connection, at most.
const STALE_PENDING_KEPT: usize = 4 * MAX_PENDING_PER_CONNECTION;

/// The tip declared jobs build on, from the pool's template provider.
#[derive(Debug, Clone)]
struct Tip {
    prev_hash: [u8; 32],
    nbits: u32,
    min_ntime: u32,
    /// The BIP34 height push every coinbase on this tip starts with.
    height_push: Vec<u8>,
    /// That height.
    height: Option<u32>,
    /// The template's outputs (the template provider's, not the pool's).
    required_outputs: Vec<TxOut>,
    /// Counts tips, so a job declared on an older one is known stale.
    seq: u64,
}

/// A declared job, good for SetCustomMiningJob until it expires (one set
/// on a channel, until the tip moves: a renewed channel sets it again).
#[derive(Debug, Clone)]
struct DeclaredJob {
    /// The connection that declared it.
    owner: JdConnId,
    /// Its coinbase, with a zero extranonce.
    coinbase: DeclaredCoinbase,
    /// The coinbase's merkle path among the declared transactions.
    merkle_path: Vec<[u8; 32]>,
    version: u32,
    tip_seq: u64,
    expires_ms: u64,
    /// Channels it was set on already (once each, but for a renewal).
    set_on: HashSet<u32>,
    /// It was set on a channel: it no longer expires.
    used: bool,
}

/// A token of a coinbase-only client.
#[derive(Debug, Default)]
struct CoinbaseOnlyToken {
    owner: JdConnId,
    /// Channels it was set on already (once each).
    set_on: HashSet<u32>,
    /// Its place among the tokens first set on a channel (counted by
    /// [`JobDeclarator::tokens_set`]): from then on it no longer counts as
    /// allocated and unused, and its connection keeps the latest
    /// [`MAX_DECLARED_PER_CONNECTION`] such, as it does declared jobs.
    set_order: Option<u64>,
}

/// A declaration waiting for ProvideMissingTransactions.Success.
#[derive(Debug, Clone)]
struct Pending {
    request_id: u32,
    version: u32,
    wtxids: Vec<[u8; 32]>,
    coinbase: DeclaredCoinbase,
    coinbase_weight: u64,
    /// The coinbase commits to the transactions' witnesses; without, none
    /// may have one.
    witness_committed: bool,
    /// Positions in `wtxids` of the transactions the pool does not know.
    missing: Vec<u16>,
}

#[derive(Debug, Default)]
struct JdConnection {
    setup_done: bool,
    /// DECLARE_TX_DATA: the client declares its jobs (full-template mode);
    /// without it, it sets its tokens on channels directly (coinbase-only).
    full_template: bool,
    /// Tokens allocated to this connection and not declared yet.
    allocated: HashSet<u64>,
    pending: HashMap<u32, Pending>,
    /// Declarations dropped from `pending`, and why: their transactions,
    /// if they come, are answered with it (a large upload may come after
    /// several tips; the latest [`STALE_PENDING_KEPT`] are kept).
    stale_pending: VecDeque<(u32, Dropped)>,
}

/// Why a declaration waiting for its transactions was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// The tip moved.
    Tip,
    /// Other clients' declarations needed the room.
    Room,
}

impl JdConnection {
    /// Drops declaration `request_id` waiting for its transactions.
    fn drop_pending(&mut self, request_id: u32, why: Dropped) {
        if self.pending.remove(&request_id).is_none() {
            return;
        }
        if self.stale_pending.len() == STALE_PENDING_KEPT {
            self.stale_pending.pop_front();
        }
        self.stale_pending.push_back((request_id, why));
    }

    /// Transactions its waiting declarations list.
    fn listed(&self) -> usize {
        self.pending.values().map(|p| p.wtxids.len()).sum()
    }
}

/// What to send a JDS connection, and whether to close it after.
#[derive(Debug, Default)]
pub struct JdReply {
    pub messages: Vec<AnyMessageOwned>,
    pub close: Option<String>,
}

impl JdReply {
    fn send(message: JobDeclarationOwned) -> Self {
        JdReply {
            messages: vec![AnyMessageOwned::JobDeclaration(message)],
            close: None,
        }
    }

    fn close(reason: impl Into<String>) -> Self {
        JdReply {
            messages: vec![],
            close: Some(reason.into()),
        }
    }
}

/// The job declarator's state.
#[derive(Debug)]
pub struct JobDeclarator {
    reward_script: ScriptBuf,
    next_token: u64,
    connections: HashMap<JdConnId, JdConnection>,
    declared: HashMap<u64, DeclaredJob>,
    /// Transactions the template provider listed, and the tip they were last seen on.
    known: HashMap<Wtxid, (Listed, u64)>,
    tip: Option<Tip>,
    tip_seq: u64,
    /// Tokens of coinbase-only clients: each sets jobs directly, once per
    /// channel.
    coinbase_only: HashMap<u64, CoinbaseOnlyToken>,
    /// Coinbase-only tokens first set on a channel, ever.
    tokens_set: u64,
    /// Declarations for the block after the pool's next one: the client's
    /// template provider heard of a block before the pool's did. Answered
    /// when the pool's tip moves.
    parked: Vec<Parked>,
}

/// What the declarator keeps of a transaction its template provider
/// listed: what a declaration that lists it needs. Computed before the
/// pool's lock is taken (hashing a template's transactions takes a while).
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    wtxid: Wtxid,
    txid: [u8; 32],
    weight: u64,
}

impl Listed {
    pub fn of(tx: &Transaction) -> Self {
        Listed {
            wtxid: tx.compute_wtxid(),
            txid: tx.compute_txid().to_byte_array(),
            weight: tx.weight().to_wu(),
        }
    }

    /// Its ids differ only by a witness.
    fn has_witness(&self) -> bool {
        self.wtxid.to_byte_array() != self.txid
    }
}

#[derive(Debug)]
struct Parked {
    conn: JdConnId,
    declaration: Declaration,
    since_ms: u64,
}

/// Declarations parked at once, at most, and of one connection; a parked
/// one is refused as stale after `PARKED_MS` without the tip moving.
const MAX_PARKED: usize = 64;
const MAX_PARKED_PER_CONNECTION: usize = 4;
const PARKED_MS: u64 = 5_000;

/// A DeclareMiningJob.Error.
/// The declaration's transaction list: at most [`MAX_DECLARED_TXS`], none twice.
fn declared_wtxids(m: &DeclareMiningJobOwned) -> Result<Vec<[u8; 32]>, Refusal> {
    let wtxids: Vec<[u8; 32]> = m.wtxid_list.iter().map(|w| w.to_array()).collect();
    let refusal = |details: String| Refusal {
        code: "invalid-job",
        details,
    };
    if wtxids.len() > MAX_DECLARED_TXS {
        return Err(refusal(format!(
            "{} transactions, at most {MAX_DECLARED_TXS}",
            wtxids.len()
        )));
    }
    if wtxids.iter().collect::<HashSet<_>>().len() != wtxids.len() {
        return Err(refusal("a transaction is declared twice".into()));
    }
    Ok(wtxids)
}

fn declare_error(request_id: u32, code: &str, details: &str) -> JdReply {
    info!(request_id, code, details, "declared job refused");
    JdReply::send(JobDeclarationOwned::DeclareMiningJobError(
        DeclareMiningJobErrorOwned {
            request_id,
            error_code: ehash::wire::str0255_truncated(code),
            error_details: B064KOwned::new(truncated(details.as_bytes(), 65_535).to_vec())
                .expect("at most 65535 bytes"),
        },
    ))
}

/// Unix seconds of `now_ms`, as a header's time is.
fn secs(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)
}

fn truncated(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// A token on the wire: 8 bytes, little-endian.
fn token_bytes(token: u64) -> B0255Owned {
    B0255Owned::new(token.to_le_bytes().to_vec()).expect("8 bytes")
}

pub(crate) fn parse_token(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl JobDeclarator {
    pub fn new(reward_script: ScriptBuf) -> Self {
        Self {
            reward_script,
            // Tokens of an earlier run are never mistaken for this one's.
            next_token: rand::random::<u64>() >> 1,
            connections: HashMap::new(),
            declared: HashMap::new(),
            known: HashMap::new(),
            tip: None,
            tip_seq: 0,
            coinbase_only: HashMap::new(),
            tokens_set: 0,
            parked: Vec::new(),
        }
    }

    pub fn on_connect(&mut self, conn: JdConnId) {
        self.connections.insert(conn, JdConnection::default());
    }

    /// `conn` closed: its allocated tokens, pending declarations and the
    /// jobs it set go (channels keep the jobs set on them); jobs it declared
    /// and never set stay good until they expire (the mining connection may
    /// still set them). A client reconnecting leaves nothing behind.
    pub fn on_disconnect(&mut self, conn: JdConnId) {
        self.connections.remove(&conn);
        self.parked.retain(|p| p.conn != conn);
        self.coinbase_only.retain(|_, token| token.owner != conn);
        self.declared
            .retain(|_, job| job.owner != conn || !job.used);
    }

    /// Channel `channel_id` was renewed on a new extranonce prefix: the
    /// jobs set on it may be set on it again (their headers cannot repeat
    /// on the new prefix), as the client does to go on mining them.
    pub fn on_channel_renewed(&mut self, channel_id: u32) {
        let declared = self.declared.values_mut().map(|job| &mut job.set_on);
        let coinbase_only = self.coinbase_only.values_mut().map(|t| &mut t.set_on);
        for set_on in declared.chain(coinbase_only) {
            set_on.remove(&channel_id);
        }
    }

    /// The pool's tip moved to `prev`, activating `template`; the answers
    /// to the declarations parked for it, each for its connection.
    pub fn on_tip(
        &mut self,
        prev: &SetNewPrevHashOwned,
        template: &NewTemplateOwned,
        now_ms: u64,
    ) -> Vec<(JdConnId, AnyMessageOwned)> {
        self.set_tip(prev, template);
        let parked = std::mem::take(&mut self.parked);
        let mut answers = Vec::new();
        for p in parked {
            if self.connections.contains_key(&p.conn) {
                let reply = self.declare(p.conn, p.declaration, now_ms, false);
                answers.extend(reply.messages.into_iter().map(|m| (p.conn, m)));
            }
        }
        answers
    }

    fn set_tip(&mut self, prev: &SetNewPrevHashOwned, template: &NewTemplateOwned) {
        // The same tip again (every new template provider link starts with
        // it) keeps what was declared on it.
        let prev_hash = prev.prev_hash.to_array();
        if self
            .tip
            .as_ref()
            .is_none_or(|tip| tip.prev_hash != prev_hash)
        {
            self.tip_seq += 1;
            let seq = self.tip_seq;
            // Transactions not listed on the previous tip or this one are forgotten.
            self.known.retain(|_, (_, seen)| *seen + 1 >= seq);
            self.declared.retain(|_, job| job.tip_seq == seq - 1);
            // Declarations waiting for transactions are stale now: what
            // they hold (their transaction lists) goes.
            for state in self.connections.values_mut() {
                let ids: Vec<u32> = state.pending.keys().copied().collect();
                for id in ids {
                    state.drop_pending(id, Dropped::Tip);
                }
            }
        }
        let seq = self.tip_seq;
        let height_push = height_push(template);
        self.tip = Some(Tip {
            prev_hash,
            nbits: prev.n_bits,
            min_ntime: prev.header_timestamp,
            height: bip34_height(&height_push),
            height_push,
            required_outputs: template_outputs(template),
            seq,
        });
    }

    /// A later template on the same tip (its outputs may change).
    pub fn on_template(&mut self, template: &NewTemplateOwned) {
        if let Some(tip) = &mut self.tip {
            if !template.future_template && height_push(template) == tip.height_push {
                tip.required_outputs = template_outputs(template);
            }
        }
    }

    /// Transactions the template provider listed for a template.
    pub fn on_transactions(&mut self, listed: Vec<Listed>) {
        let seq = self.tip_seq;
        for tx in listed {
            self.known.insert(tx.wtxid, (tx, seq));
        }
    }

    /// Transactions known from the template provider.
    pub fn known_transactions(&self) -> usize {
        self.known.len()
    }

    /// One message of JDS connection `conn`.
    pub fn on_message(&mut self, conn: JdConnId, msg: AnyMessageOwned, now_ms: u64) -> JdReply {
        self.on_prepared(conn, prepare(msg), now_ms)
    }

    /// One message of JDS connection `conn`, with its own work done
    /// ([`prepare`]) before the declarator was locked.
    pub fn on_prepared(&mut self, conn: JdConnId, msg: JdMessage, now_ms: u64) -> JdReply {
        self.expire(now_ms);
        let stale = self.expire_parked(conn, now_ms);
        let mut reply = self.on_message_now(conn, msg, now_ms);
        reply.messages.splice(0..0, stale);
        reply
    }

    /// This connection's declarations parked too long: refused as stale,
    /// their tokens used up (as a declaration refused at once uses its own:
    /// the client takes a new one, and the old would count for ever).
    /// Asked with each message of the connection, and on its link's timer:
    /// a client that waits quietly for its answer gets it too.
    pub fn expire_parked(&mut self, conn: JdConnId, now_ms: u64) -> Vec<AnyMessageOwned> {
        let (old, kept): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.conn == conn && p.since_ms + PARKED_MS <= now_ms);
        self.parked = kept;
        if let Some(state) = self.connections.get_mut(&conn) {
            for p in &old {
                let token = p.declaration.message.mining_job_token.as_bytes();
                if let Some(token) = parse_token(token) {
                    state.allocated.remove(&token);
                }
            }
        }
        old.into_iter()
            .flat_map(|p| {
                declare_error(
                    p.declaration.message.request_id,
                    "stale-chain-tip",
                    "the coinbase is for a block after the pool's next one",
                )
                .messages
            })
            .collect()
    }

    fn on_message_now(&mut self, conn: JdConnId, msg: JdMessage, now_ms: u64) -> JdReply {
        let Some(state) = self.connections.get_mut(&conn) else {
            return JdReply::default();
        };
        let msg = match (state.setup_done, msg) {
            (true, JdMessage::Declare(d)) => return self.declare(conn, d, now_ms, true),
            (true, JdMessage::Provided(p)) => return self.provided(conn, p, now_ms),
            (false, JdMessage::Declare(_)) => {
                return JdReply::close("DeclareMiningJob before SetupConnection")
            }
            (false, JdMessage::Provided(_)) => {
                return JdReply::close("ProvideMissingTransactions.Success before SetupConnection")
            }
            (_, JdMessage::Other(msg)) => msg,
        };
        match (state.setup_done, msg) {
            (false, AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(m))) => {
                let reply = setup(&m);
                state.setup_done = reply.close.is_none();
                state.full_template = has_declare_tx_data(m.flags);
                reply
            }
            (false, other) => JdReply::close(format!(
                "{} before SetupConnection",
                roles_common::sv2::message_name(&other)
            )),
            (true, AnyMessageOwned::JobDeclaration(m)) => self.on_jd_message(conn, m),
            (true, other) => JdReply::close(format!(
                "{} is not a job declaration client's message",
                roles_common::sv2::message_name(&other)
            )),
        }
    }

    fn on_jd_message(&mut self, conn: JdConnId, m: JobDeclarationOwned) -> JdReply {
        match m {
            // Declarations and their transactions come prepared (`prepare`).
            JobDeclarationOwned::AllocateMiningJobToken(m) => self.allocate(conn, m),
            JobDeclarationOwned::PushSolution(m) => {
                push_solution(conn, &m);
                JdReply::default()
            }
            other => JdReply::close(format!(
                "{} is not a job declaration client's message",
                roles_common::sv2::message_name(&AnyMessageOwned::JobDeclaration(other))
            )),
        }
    }

    fn allocate(&mut self, conn: JdConnId, m: AllocateMiningJobTokenOwned) -> JdReply {
        let token = self.new_token();
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        // A client that allocates without declaring is bounded.
        if state.allocated.len() >= 64 {
            return JdReply::close("more than 64 job tokens allocated and not used");
        }
        state.allocated.insert(token);
        if !state.full_template {
            let token_state = CoinbaseOnlyToken {
                owner: conn,
                ..Default::default()
            };
            self.coinbase_only.insert(token, token_state);
        }
        debug!(conn, token, user = %m.user_identifier.as_utf8_or_hex(), "job token allocated");
        let outputs = vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: self.reward_script.clone(),
        }];
        JdReply::send(JobDeclarationOwned::AllocateMiningJobTokenSuccess(
            AllocateMiningJobTokenSuccessOwned {
                request_id: m.request_id,
                mining_job_token: token_bytes(token),
                coinbase_outputs: B064KOwned::new(serialize(&outputs)).expect("one output"),
            },
        ))
    }

    fn new_token(&mut self) -> u64 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    /// DeclareMiningJob; with `may_park`, one for the block after the
    /// pool's next is parked until the pool's tip moves.
    fn declare(&mut self, conn: JdConnId, d: Declaration, now_ms: u64, may_park: bool) -> JdReply {
        let request_id = d.message.request_id;
        let token = parse_token(d.message.mining_job_token.as_bytes());
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        if !state.full_template {
            return declare_error(
                request_id,
                "invalid-job",
                "a coinbase-only client (no DECLARE_TX_DATA) sets its tokens on channels directly",
            );
        }
        // A token declares one job, on the connection it was allocated to;
        // checked before parking, so only a client's real declarations wait.
        if !token.is_some_and(|t| state.allocated.contains(&t)) {
            return declare_error(
                request_id,
                "invalid-mining-job-token",
                "the token is unknown, another connection's, or used already",
            );
        }
        if may_park && self.one_block_ahead(d.coinbase.as_ref().ok()) && self.may_park(conn) {
            debug!(
                conn,
                request_id, "declaration one block ahead of the pool: parked"
            );
            self.parked.push(Parked {
                conn,
                declaration: d,
                since_ms: now_ms,
            });
            return JdReply::default();
        }
        if let (Some(state), Some(token)) = (self.connections.get_mut(&conn), token) {
            state.allocated.remove(&token);
        }
        let Some(tip) = &self.tip else {
            return declare_error(
                request_id,
                "stale-chain-tip",
                "the pool has no chain tip yet",
            );
        };
        let coinbase = match d
            .coinbase
            .and_then(|tx| self.for_next_block(tip, tx, secs(now_ms)))
        {
            Ok(tx) => tx,
            Err(refusal) => return declare_error(request_id, refusal.code, &refusal.details),
        };
        let (wtxids, witness_committed) = match d.transactions {
            Ok(transactions) => transactions,
            Err(refusal) => return declare_error(request_id, refusal.code, &refusal.details),
        };
        let missing: Vec<u16> = wtxids
            .iter()
            .enumerate()
            .filter(|(_, w)| !self.known.contains_key(&Wtxid::from_byte_array(**w)))
            .map(|(i, _)| i as u16)
            .collect();
        let declared = Pending {
            request_id,
            version: d.message.version,
            wtxids,
            coinbase: DeclaredCoinbase::of(&coinbase),
            coinbase_weight: coinbase.weight().to_wu(),
            witness_committed,
            missing,
        };
        if declared.missing.is_empty() {
            self.accept(conn, declared, &[], now_ms)
        } else {
            self.ask_for_missing(conn, declared)
        }
    }

    /// Keeps a declaration until its connection provides the transactions
    /// the pool does not know, and asks for them.
    fn ask_for_missing(&mut self, conn: JdConnId, declared: Pending) -> JdReply {
        let request_id = declared.request_id;
        debug!(
            conn,
            request_id,
            missing = declared.missing.len(),
            "asking for missing transactions"
        );
        let ask = ProvideMissingTransactionsOwned {
            request_id,
            unknown_tx_position_list: Seq064KOwned::new(declared.missing.clone())
                .expect("at most MAX_DECLARED_TXS"),
        };
        if let Err(details) = self.make_room_to_wait(conn, declared.wtxids.len()) {
            return declare_error(request_id, "invalid-job", &details);
        }
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        state.pending.insert(request_id, declared);
        JdReply::send(JobDeclarationOwned::ProvideMissingTransactions(ask))
    }

    /// Whether one more declaration of `conn`, listing `wtxids`
    /// transactions, may wait for the rest of its transactions: what waits
    /// is bounded per connection, and in all, where the connection listing
    /// the most gives way (so a few connections that never provide theirs
    /// cannot keep every other client's declarations out).
    fn make_room_to_wait(&mut self, conn: JdConnId, wtxids: usize) -> Result<(), String> {
        let own = &self.connections[&conn];
        if own.pending.len() >= MAX_PENDING_PER_CONNECTION {
            return Err(format!(
                "{MAX_PENDING_PER_CONNECTION} declarations of this connection wait for their transactions already"
            ));
        }
        if own.listed() + wtxids > MAX_PENDING_WTXIDS_PER_CONNECTION {
            return Err(format!(
                "the declarations of this connection waiting for their transactions would list more than {MAX_PENDING_WTXIDS_PER_CONNECTION}"
            ));
        }
        while self
            .connections
            .values()
            .map(JdConnection::listed)
            .sum::<usize>()
            + wtxids
            > MAX_PENDING_WTXIDS
        {
            let most = self
                .connections
                .values_mut()
                .max_by_key(|state| state.listed());
            let Some(most) = most else { break };
            let largest = most.pending.iter().max_by_key(|(_, p)| p.wtxids.len());
            let Some(id) = largest.map(|(id, _)| *id) else {
                break;
            };
            debug!(
                request_id = id,
                "a waiting declaration dropped to make room"
            );
            most.drop_pending(id, Dropped::Room);
        }
        Ok(())
    }

    /// `coinbase` if it is for the block after the pool's tip, final in it
    /// and pays the pool.
    fn for_next_block(
        &self,
        tip: &Tip,
        coinbase: Transaction,
        now_secs: u32,
    ) -> Result<Transaction, Refusal> {
        if !coinbase.input[0]
            .script_sig
            .as_bytes()
            .starts_with(&tip.height_push)
        {
            return Err(Refusal {
                code: "stale-chain-tip",
                details: "the coinbase is not for the height after the pool's tip".into(),
            });
        }
        coinbase::check_final(&coinbase, tip.height, now_secs)?;
        coinbase::check_pays_pool(&coinbase, &self.reward_script, &tip.required_outputs)?;
        Ok(coinbase)
    }

    /// Whether a declaration of `conn` finds a parking slot: one connection
    /// cannot take them all.
    fn may_park(&self, conn: JdConnId) -> bool {
        let own = self.parked.iter().filter(|p| p.conn == conn).count();
        self.parked.len() < MAX_PARKED && own < MAX_PARKED_PER_CONNECTION
    }

    /// Whether `coinbase` is for the block after the pool's next one.
    fn one_block_ahead(&self, coinbase: Option<&Transaction>) -> bool {
        let Some(after_next) = self.tip.as_ref().and_then(|t| t.height?.checked_add(1)) else {
            return false;
        };
        coinbase.and_then(|tx| bip34_height(tx.input[0].script_sig.as_bytes())) == Some(after_next)
    }

    fn provided(&mut self, conn: JdConnId, m: Provided, now_ms: u64) -> JdReply {
        let request_id = m.request_id;
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        let Some(pending) = state.pending.remove(&request_id) else {
            let dropped = state
                .stale_pending
                .iter()
                .position(|(id, _)| *id == request_id);
            if let Some((_, why)) = dropped.and_then(|at| state.stale_pending.remove(at)) {
                return match why {
                    Dropped::Tip => {
                        declare_error(request_id, "stale-chain-tip", "the tip moved meanwhile")
                    }
                    Dropped::Room => declare_error(
                        request_id,
                        "invalid-job",
                        "dropped while waiting: other clients' declarations needed the room",
                    ),
                };
            }
            return JdReply::close(format!(
                "ProvideMissingTransactions.Success for request {request_id}, which asked for none"
            ));
        };
        // Pending declarations are all on the current tip: a new tip drops them.
        let given = m.transactions;
        if given.len() != pending.missing.len() {
            return declare_error(
                request_id,
                "missing-txs",
                &format!(
                    "{} transactions asked for, {} provided",
                    pending.missing.len(),
                    given.len()
                ),
            );
        }
        let wtxids = &pending.wtxids;
        let mut provided = Vec::with_capacity(given.len());
        for (position, tx) in pending.missing.iter().zip(given) {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    return declare_error(
                        request_id,
                        "invalid-job",
                        &format!("transaction {position} does not decode: {e}"),
                    )
                }
            };
            let declared = wtxids[*position as usize];
            if tx.listed.wtxid.to_byte_array() != declared || tx.coinbase {
                return declare_error(
                    request_id,
                    "invalid-job",
                    &format!("transaction {position} is not the one declared"),
                );
            }
            provided.push(tx.listed);
        }
        self.accept(conn, pending, &provided, now_ms)
    }

    /// Every transaction of `declared` is known or `provided`: the job is
    /// declared, on the current tip (a new tip drops pending declarations).
    fn accept(
        &mut self,
        conn: JdConnId,
        declared: Pending,
        provided: &[Listed],
        now_ms: u64,
    ) -> JdReply {
        let tip_seq = self.tip_seq;
        let request_id = declared.request_id;
        let provided: HashMap<Wtxid, &Listed> = provided.iter().map(|tx| (tx.wtxid, tx)).collect();
        let mut weight = declared.coinbase_weight;
        let mut txids = Vec::with_capacity(declared.wtxids.len());
        for wtxid in &declared.wtxids {
            let wtxid = Wtxid::from_byte_array(*wtxid);
            let known = self.known.get(&wtxid).map(|(tx, _)| tx);
            let Some(tx) = known.or_else(|| provided.get(&wtxid).copied()) else {
                return declare_error(request_id, "missing-txs", "a transaction went missing");
            };
            if tx.has_witness() && !declared.witness_committed {
                return declare_error(
                    request_id,
                    "invalid-job",
                    "a transaction has a witness and the coinbase commits to none",
                );
            }
            weight += tx.weight;
            txids.push(tx.txid);
        }
        if weight > MAX_BLOCK_WEIGHT {
            return declare_error(
                request_id,
                "invalid-job",
                &format!("the block weighs {weight}, more than {MAX_BLOCK_WEIGHT}"),
            );
        }
        self.evict_oldest_beyond(conn, MAX_DECLARED_PER_CONNECTION - 1);
        if !self.room_for_a_job() {
            return declare_error(
                request_id,
                "invalid-job",
                &format!("the pool holds {MAX_DECLARED_JOBS} jobs set on channels on this tip, its most; declare again after the next block"),
            );
        }
        let token = self.new_token();
        info!(
            request_id,
            token,
            transactions = txids.len(),
            "job declared"
        );
        self.declared.insert(
            token,
            DeclaredJob {
                owner: conn,
                coinbase: declared.coinbase,
                merkle_path: ehash::coinbase::coinbase_merkle_path(&txids),
                version: declared.version,
                tip_seq,
                expires_ms: now_ms + DECLARED_JOB_TTL_MS,
                set_on: HashSet::new(),
                used: false,
            },
        );
        JdReply::send(JobDeclarationOwned::DeclareMiningJobSuccess(
            DeclareMiningJobSuccessOwned {
                request_id,
                new_mining_job_token: token_bytes(token),
            },
        ))
    }

    fn expire(&mut self, now_ms: u64) {
        self.declared
            .retain(|_, job| job.used || job.expires_ms > now_ms);
    }

    /// Whether one more declared job fits: when the pool holds its most,
    /// one of the previous tip goes (none can be set again), or else the
    /// oldest one not set on a channel.
    fn room_for_a_job(&mut self) -> bool {
        if self.declared.len() < MAX_DECLARED_JOBS {
            return true;
        }
        let seq = self.tip_seq;
        let goes_first = |job: &DeclaredJob| (job.tip_seq == seq, job.used, job.expires_ms);
        let first = self.declared.iter().min_by_key(|(_, job)| goes_first(job));
        match first {
            Some((token, job)) if job.tip_seq != seq || !job.used => {
                let token = *token;
                self.declared.remove(&token);
                true
            }
            _ => false,
        }
    }

    /// Keeps at most `keep` of `conn`'s declared jobs, the latest.
    fn evict_oldest_beyond(&mut self, conn: JdConnId, keep: usize) {
        let own = self.declared.iter().filter(|(_, job)| job.owner == conn);
        let own = own.map(|(token, job)| (job.expires_ms, *token));
        for token in oldest_beyond(own.collect(), keep) {
            self.declared.remove(&token);
        }
    }

    /// Keeps at most `keep` of the coinbase-only tokens `conn` has set, the
    /// latest set.
    pub(super) fn evict_oldest_set_tokens(&mut self, conn: JdConnId, keep: usize) {
        let own = self.coinbase_only.iter().filter(|(_, t)| t.owner == conn);
        let set = own.filter_map(|(token, t)| Some((t.set_order?, *token)));
        for token in oldest_beyond(set.collect(), keep) {
            self.coinbase_only.remove(&token);
        }
    }
}

/// Of `owned` (when each came, and its token), the tokens beyond the
/// `keep` latest.
fn oldest_beyond(mut owned: Vec<(u64, u64)>, keep: usize) -> Vec<u64> {
    let beyond = owned.len().saturating_sub(keep);
    owned.sort_unstable();
    owned
        .into_iter()
        .take(beyond)
        .map(|(_, token)| token)
        .collect()
}

/// SetupConnection of a job declaration client: protocol and version; the
/// DECLARE_TX_DATA flag picks full-template mode, its absence coinbase-only.
fn setup(m: &SetupConnectionOwned) -> JdReply {
    let refuse = |code: &str, reason: String| JdReply {
        messages: vec![AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionError(SetupConnectionErrorOwned {
                flags: 0,
                error_code: ehash::wire::str0255_truncated(code),
            }),
        )],
        close: Some(reason),
    };
    if m.protocol != Protocol::JobDeclarationProtocol {
        return refuse(
            "unsupported-protocol",
            format!("SetupConnection for protocol {:?}", m.protocol),
        );
    }
    if m.min_version > 2 || m.max_version < 2 {
        return refuse(
            "protocol-version-mismatch",
            format!(
                "SetupConnection for versions {}..={}",
                m.min_version, m.max_version
            ),
        );
    }
    JdReply {
        messages: vec![AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                used_version: 2,
                flags: 0,
            }),
        )],
        close: None,
    }
}

fn push_solution(conn: JdConnId, m: &PushSolutionOwned) {
    // The client publishes its block through its own template provider;
    // the pool's (template distribution) cannot take a whole block.
    info!(
        conn,
        nonce = m.nonce,
        ntime = m.ntime,
        "a declared job found a block (PushSolution); its client publishes it"
    );
}

/// The BIP34 height push `template`'s coinbases start with: the first
/// instruction of its coinbase prefix, as the template provider wrote it.
fn height_push(template: &NewTemplateOwned) -> Vec<u8> {
    let prefix = template.coinbase_prefix.as_bytes();
    let len = match Script::from_bytes(prefix).instructions().next() {
        Some(Ok(Instruction::PushBytes(data))) if data.len() <= 75 => 1 + data.len(),
        Some(Ok(Instruction::Op(_))) => 1,
        _ => prefix.len(),
    };
    prefix[..len.min(prefix.len())].to_vec()
}

/// The outputs a template carries (concatenated TxOuts, no count).
fn template_outputs(template: &NewTemplateOwned) -> Vec<TxOut> {
    let mut bytes = template.coinbase_tx_outputs.as_bytes();
    (0..template.coinbase_tx_outputs_count)
        .map_while(|_| {
            stratum_core::bitcoin::consensus::Decodable::consensus_decode(&mut bytes).ok()
        })
        .collect()
}

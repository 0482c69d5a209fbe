//! The job declarator (JDS) embedded in the pool, without IO.
//!
//! A job declaration client (JDC) picks its own block template and
//! declares it here before mining it on the pool's channels:
//!
//! ```text
//!   JDC                                   JDS (this module)
//!    | AllocateMiningJobToken   ------->   token T (allocated, one use)
//!    | <------- .Success(T, coinbase_outputs = the pool's reward script,
//!    |                   and a number of T's own)
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
//! The chain tip is the pool's. What waits for transactions is bounded in
//! `waiting`, what is held once declared in `held`.
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
mod held;
mod prepared;
#[cfg(test)]
mod tests;
mod waiting;

use std::collections::{HashMap, HashSet, VecDeque};

use ehash::coinbase::bip34_height;
use stratum_core::binary_sv2::{B0255Owned, B064KOwned};
use stratum_core::bitcoin::consensus::serialize;
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::script::Instruction;
use stratum_core::bitcoin::{Amount, Script, ScriptBuf, Transaction, TxOut, Wtxid};
use stratum_core::common_messages_sv2::{
    has_declare_tx_data, Protocol, SetupConnectionErrorOwned, SetupConnectionOwned,
    SetupConnectionSuccessOwned, ERROR_CODE_SETUP_CONNECTION_MISSING_DECLARE_TX_DATA_FLAG,
};
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, AllocateMiningJobTokenSuccessOwned, DeclareMiningJobErrorOwned,
    DeclareMiningJobOwned, PushSolutionOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, JobDeclarationOwned};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tracing::{debug, info};

use coinbase::{DeclaredCoinbase, Refusal};

pub use custom_job::CustomJobRefusal;
pub use prepared::{prepare, JdMessage};

pub use held::Accepted;
use held::{CoinbaseOnlyToken, DeclaredJob, MAX_DECLARED_PER_CONNECTION};
use prepared::Declaration;
use waiting::{Dropped, Pending};

/// Identifies one JDS connection (its own numbering, apart from mining connections).
pub type JdConnId = u64;

/// Transactions of a declared job, at most (a block's worth, and then some).
const MAX_DECLARED_TXS: usize = 20_000;

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
    /// several tips; the latest [`waiting::STALE_PENDING_KEPT`] are kept).
    stale_pending: VecDeque<(u32, Dropped)>,
}

/// What to send a JDS connection, and whether to close it after; and a
/// job to declare once its merkle path is built.
#[derive(Debug, Default)]
pub struct JdReply {
    pub messages: Vec<AnyMessageOwned>,
    pub close: Option<String>,
    pub accepted: Option<Accepted>,
}

/// What the declarator has for a connection at a new tip (its parked
/// declarations' answers), sent on by the core.
#[derive(Debug, Clone)]
pub enum JdLate {
    Message(AnyMessageOwned),
    Accepted(Accepted),
}

impl JdReply {
    fn send(message: JobDeclarationOwned) -> Self {
        JdReply {
            messages: vec![AnyMessageOwned::JobDeclaration(message)],
            ..JdReply::default()
        }
    }

    fn close(reason: impl Into<String>) -> Self {
        JdReply {
            close: Some(reason.into()),
            ..JdReply::default()
        }
    }

    /// The messages to send, the job to declare last.
    fn into_late(self) -> impl Iterator<Item = JdLate> {
        let messages = self.messages.into_iter().map(JdLate::Message);
        messages.chain(self.accepted.map(JdLate::Accepted))
    }
}

/// The job declarator's state.
#[derive(Debug)]
pub struct JobDeclarator {
    reward_script: ScriptBuf,
    /// Clients without DECLARE_TX_DATA are set up.
    allow_coinbase_only: bool,
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

/// A DeclareMiningJob.Error.
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
    /// A declarator for the pool paid to `reward_script`; with
    /// `allow_coinbase_only`, clients may also be coinbase-only.
    pub fn new(reward_script: ScriptBuf, allow_coinbase_only: bool) -> Self {
        Self {
            reward_script,
            allow_coinbase_only,
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
    ) -> Vec<(JdConnId, JdLate)> {
        self.set_tip(prev, template);
        let parked = std::mem::take(&mut self.parked);
        let mut answers = Vec::new();
        for p in parked {
            if self.connections.contains_key(&p.conn) {
                let reply = self.declare(p.conn, p.declaration, now_ms, false);
                answers.extend(reply.into_late().map(|late| (p.conn, late)));
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

    /// One message of JDS connection `conn`, its answer whole: a job it
    /// declares is declared now (the pool's link builds its merkle path
    /// outside the lock: [`Self::on_prepared`], [`Self::finish`]).
    pub fn on_message(&mut self, conn: JdConnId, msg: AnyMessageOwned, now_ms: u64) -> JdReply {
        let mut reply = self.on_prepared(conn, prepare(msg), now_ms);
        if let Some(accepted) = reply.accepted.take() {
            let merkle_path = accepted.merkle_path();
            let declared = self.finish(accepted, merkle_path, now_ms);
            reply.messages.extend(declared.messages);
        }
        reply
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
        let allow_coinbase_only = self.allow_coinbase_only;
        let Some(state) = self.connections.get_mut(&conn) else {
            return JdReply::default();
        };
        let msg = match (state.setup_done, msg) {
            (true, JdMessage::Declare(d)) => return self.declare(conn, d, now_ms, true),
            (true, JdMessage::Provided(p)) => return self.provided(conn, p),
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
                let reply = setup(&m, allow_coinbase_only);
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
        // A number of the token's own after the pool's output: a client
        // that puts the token's outputs in its coinbase, as the protocol
        // asks (SRI's JDC does, with a fresh token per template), never
        // declares one template's headers twice, so a custom job of the
        // same template at a new target is not refused as having another
        // job's headers.
        let outputs = vec![
            TxOut {
                value: Amount::ZERO,
                script_pubkey: self.reward_script.clone(),
            },
            ehash::coinbase::job_number_output(rand::random()),
        ];
        JdReply::send(JobDeclarationOwned::AllocateMiningJobTokenSuccess(
            AllocateMiningJobTokenSuccessOwned {
                request_id: m.request_id,
                mining_job_token: token_bytes(token),
                coinbase_outputs: B064KOwned::new(serialize(&outputs)).expect("two outputs"),
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
            self.accept(conn, declared, &[])
        } else {
            self.ask_for_missing(conn, declared)
        }
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
}

/// SetupConnection of a job declaration client: protocol and version; the
/// DECLARE_TX_DATA flag picks full-template mode, its absence coinbase-only
/// (refused unless `allow_coinbase_only`).
fn setup(m: &SetupConnectionOwned, allow_coinbase_only: bool) -> JdReply {
    let refuse = |code: &str, reason: String| JdReply {
        messages: vec![AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionError(SetupConnectionErrorOwned {
                flags: 0,
                error_code: ehash::wire::str0255_truncated(code),
            }),
        )],
        close: Some(reason),
        accepted: None,
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
    if !allow_coinbase_only && !has_declare_tx_data(m.flags) {
        return refuse(
            ERROR_CODE_SETUP_CONNECTION_MISSING_DECLARE_TX_DATA_FLAG,
            "SetupConnection without DECLARE_TX_DATA: this pool takes no coinbase-only clients"
                .into(),
        );
    }
    JdReply {
        messages: vec![AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                used_version: 2,
                flags: 0,
            }),
        )],
        ..JdReply::default()
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

//! Declared jobs: templates of this client's own template provider, their
//! transactions, declared at the pool's job declarator, then set on every
//! pool channel as a custom job committing to that channel's key; and
//! blocks found on them, published through the template provider (and
//! pushed to the declarator).
//!
//! This module keeps the templates, their transactions and the tip; the
//! rest is one file per step: `declare` (at the declarator), `custom`
//! (custom jobs on the pool's channels), `solution` (blocks found).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ehash::LockingKey;
use stratum_core::binary_sv2::B0255Owned;
use stratum_core::bitcoin::{ScriptBuf, Transaction};
use stratum_core::channels_sv2::server::jobs::extended::ExtendedJob;
use stratum_core::job_declaration_sv2::AllocateMiningJobTokenOwned;
use stratum_core::mining_sv2::SetCustomMiningJobOwned;
use stratum_core::parsers_sv2::{
    AnyMessageOwned, JobDeclarationOwned as Jd, TemplateDistributionOwned as Tdp,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataOwned, SetNewPrevHashOwned,
};
use tracing::{debug, warn};

use super::{Action, DownId, Mode};

mod custom;
mod declare;
mod solution;

/// The tag in the scriptSig of every coinbase this client declares.
pub const DECLARED_TAG: &str = "hashpool-jdc";
/// Job tokens kept allocated ahead.
const TOKENS_AHEAD: usize = 2;
/// Future templates kept for their SetNewPrevHash.
const KEPT_FUTURE: usize = 8;

/// What the job logic needs of a channel.
#[derive(Debug, Clone)]
pub(super) struct ChannelView {
    pub channel_id: u32,
    pub owner: DownId,
    pub key: Option<LockingKey>,
    pub extranonce_prefix: Vec<u8>,
    pub full_extranonce: usize,
    pub prev_hash: Option<[u8; 32]>,
}

/// A job the declarator accepted, good for SetCustomMiningJob.
#[derive(Debug, Clone)]
struct Declared {
    template: NewTemplateOwned,
    prev: SetNewPrevHashOwned,
    token: B0255Owned,
    full_extranonce: usize,
    /// Its number, in its coinbase.
    number: u64,
    /// The channels it is for: those whose target changed (the template
    /// declared again), or None for every channel (a new template).
    only_on: Option<BTreeSet<u32>>,
}

/// A job set on a channel: what a block on it is made of.
struct SetJob {
    template_id: u64,
    job: ExtendedJob,
    prev_hash: [u8; 32],
    nbits: u32,
}

pub(super) struct Jobs {
    user_identifier: String,
    prev: Option<SetNewPrevHashOwned>,
    future: VecDeque<NewTemplateOwned>,
    /// The template jobs are made of now (on the current tip).
    current: Option<NewTemplateOwned>,
    transactions: HashMap<u64, Vec<Transaction>>,
    jds_up: bool,
    tokens: VecDeque<B0255Owned>,
    pool_script: Option<ScriptBuf>,
    next_request_id: u32,
    /// DeclareMiningJob request id -> what it declares.
    declaring: HashMap<u32, Declared>,
    declared: Option<Declared>,
    /// The template the declarator last refused as on a stale tip: declared
    /// again only at [`retry_stale`](Self::retry_stale) (or the next
    /// template is), or the refusal would repeat round trip after round trip
    /// while the pool's template provider lags this client's.
    stale_template: Option<u64>,
    /// Declarations sent again after a stale-tip refusal since the
    /// declarator last accepted one.
    stale_retries: u32,
    /// (channel, request id) -> the custom job sent and its template.
    pending: HashMap<(u32, u32), (SetCustomMiningJobOwned, u64)>,
    set: HashMap<(u32, u32), SetJob>,
    /// The number of the last declaration: each is numbered in its
    /// coinbase. Random at start, so a restarted client never declares a
    /// coinbase again on a prefix the pool hands back to its key on the
    /// same tip (whose headers the mint has quoted); below 2^63, so it never
    /// wraps, since later declarations are told by their greater number.
    declarations: u64,
    /// Channels whose target changed, waiting for the current template
    /// declared again (for a token, after a stale-tip refusal).
    retargeted: BTreeSet<u32>,
}

impl Jobs {
    pub fn new(user_identifier: &str) -> Self {
        Self {
            user_identifier: user_identifier.to_string(),
            prev: None,
            future: VecDeque::new(),
            current: None,
            transactions: HashMap::new(),
            jds_up: false,
            tokens: VecDeque::new(),
            pool_script: None,
            next_request_id: 1,
            declaring: HashMap::new(),
            declared: None,
            stale_template: None,
            stale_retries: 0,
            pending: HashMap::new(),
            set: HashMap::new(),
            declarations: rand::random::<u64>() >> 1,
            retargeted: BTreeSet::new(),
        }
    }

    fn request_id(&mut self) -> u32 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    fn allocate(&mut self) -> Action {
        let request_id = self.request_id();
        Action::Jds(AnyMessageOwned::JobDeclaration(Jd::AllocateMiningJobToken(
            AllocateMiningJobTokenOwned {
                user_identifier: ehash::wire::str0255_truncated(&self.user_identifier),
                request_id,
            },
        )))
    }

    pub fn on_jds_connected(&mut self) -> Vec<Action> {
        self.jds_up = true;
        (0..TOKENS_AHEAD).map(|_| self.allocate()).collect()
    }

    /// A template provider message.
    pub fn on_tp(
        &mut self,
        msg: AnyMessageOwned,
        mode: Mode,
        channels: &[ChannelView],
    ) -> Vec<Action> {
        let AnyMessageOwned::TemplateDistribution(msg) = msg else {
            return vec![];
        };
        match msg {
            Tdp::NewTemplate(t) => self.on_new_template(t),
            Tdp::SetNewPrevHash(p) => self.on_new_prev_hash(p, mode, channels),
            Tdp::RequestTransactionDataSuccess(data) => {
                let txs = match roles_common::sv2::template_transactions(&data) {
                    Ok(txs) => txs,
                    Err(e) => {
                        warn!("the template provider sent a bad transaction list: {e}");
                        return vec![];
                    }
                };
                self.transactions.insert(data.template_id, txs);
                self.forget_transactions();
                let is_current = self
                    .current
                    .as_ref()
                    .is_some_and(|t| t.template_id == data.template_id);
                if is_current {
                    self.declare(mode, channels)
                } else {
                    vec![]
                }
            }
            Tdp::RequestTransactionDataError(e) => {
                debug!(
                    template_id = e.template_id,
                    "no transaction data: {}",
                    e.error_code.as_utf8_or_hex()
                );
                vec![]
            }
            other => {
                debug!(
                    "ignoring {} from the template provider",
                    roles_common::sv2::message_name(&AnyMessageOwned::TemplateDistribution(other))
                );
                vec![]
            }
        }
    }

    /// A template: kept (a future one until its prev hash comes, the
    /// current one once a tip is known), and its transactions asked for.
    fn on_new_template(&mut self, t: NewTemplateOwned) -> Vec<Action> {
        let template_id = t.template_id;
        if t.future_template {
            self.future.push_back(t);
            while self.future.len() > KEPT_FUTURE {
                self.future.pop_front();
            }
        } else if self.prev.is_some() {
            self.current = Some(t);
            self.forget_transactions();
        }
        let ask = Action::Tp(AnyMessageOwned::TemplateDistribution(
            Tdp::RequestTransactionData(RequestTransactionDataOwned { template_id }),
        ));
        vec![ask]
    }

    /// A new tip: its template becomes the current one, what belonged to
    /// the old tip is dropped, and the template is declared once it can be.
    fn on_new_prev_hash(
        &mut self,
        p: SetNewPrevHashOwned,
        mode: Mode,
        channels: &[ChannelView],
    ) -> Vec<Action> {
        let Some(mut template) = self
            .future
            .iter()
            .find(|t| t.template_id == p.template_id)
            .cloned()
        else {
            warn!(
                template_id = p.template_id,
                "SetNewPrevHash for an unknown template"
            );
            return vec![];
        };
        template.future_template = false;
        self.future.retain(|t| t.template_id > p.template_id);
        self.current = Some(template);
        self.prev = Some(p);
        self.declared = None;
        self.set.clear();
        self.forget_transactions();
        self.declare(mode, channels)
    }

    /// How many templates' transactions are kept.
    #[cfg(test)]
    pub(super) fn templates_with_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Keeps the transactions of the templates that may still need them:
    /// the current one, the future ones, and those being declared (the
    /// declarator may ask for them) or declared. A block's worth each, so
    /// not one per template of a long block.
    fn forget_transactions(&mut self) {
        let keep: HashSet<u64> = self
            .future
            .iter()
            .chain(&self.current)
            .chain(self.declaring.values().map(|d| &d.template))
            .chain(self.declared.as_ref().map(|d| &d.template))
            .map(|t| t.template_id)
            .collect();
        self.transactions.retain(|id, _| keep.contains(id));
    }
}

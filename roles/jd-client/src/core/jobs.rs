//! Declared jobs: templates of this client's own template provider, their
//! transactions, declared at the pool's job declarator, then set on every
//! pool channel as a custom job committing to that channel's key; and
//! blocks found on them, published through the template provider (and
//! pushed to the declarator).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ehash::LockingKey;
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq064KOwned, Sv2OptionOwned, U256Owned};
use stratum_core::bitcoin::consensus::{deserialize, serialize};
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::{Amount, BlockHash, ScriptBuf, Target, Transaction, TxOut};
use stratum_core::channels_sv2::chain_tip::ChainTip;
use stratum_core::channels_sv2::server::jobs::extended::ExtendedJob;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, DeclareMiningJobOwned, DeclareMiningJobSuccessOwned,
    ProvideMissingTransactionsOwned, ProvideMissingTransactionsSuccessOwned, PushSolutionOwned,
};
use stratum_core::mining_sv2::{
    SetCustomMiningJobErrorOwned, SetCustomMiningJobOwned, SetCustomMiningJobSuccess,
    SetNewPrevHashOwned as MiningSetNewPrevHash, SubmitSharesExtendedOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessageOwned, JobDeclarationOwned as Jd, MiningOwned, TemplateDistributionOwned as Tdp,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};
use tracing::{debug, info, warn};

use super::{Action, DownId, Mode, MAX_STALE_RETRIES, STALE_RETRY_SECS};

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

    /// Declares again the template last refused as on a stale tip: the
    /// pool's tip may have caught up meanwhile (it tells custom-work
    /// channels of no tip).
    /// Past [`MAX_STALE_RETRIES`] in a row, mining the pool's jobs: this
    /// client's template provider is behind the pool's (or on another
    /// chain), and its miners would hash on a tip the pool refuses.
    pub fn retry_stale(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
        if self.stale_template.take().is_none() {
            return vec![];
        }
        self.stale_retries += 1;
        if self.stale_retries > MAX_STALE_RETRIES {
            self.stale_retries = 0;
            return vec![Action::FallBack(format!(
                "every declaration refused as on a stale tip for {} s: this client's template \
                 provider is behind the pool's",
                MAX_STALE_RETRIES as u64 * STALE_RETRY_SECS
            ))];
        }
        self.declare_due(mode, channels)
    }

    /// Declares the current template for every channel.
    fn declare(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
        self.declare_for(mode, channels, false)
    }

    /// Declares what waits (for a token, or the retry after a stale tip):
    /// the current template for every channel, then again for the
    /// channels whose target changed.
    fn declare_due(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
        let mut actions = self.declare(mode, channels);
        actions.extend(self.declare_again(mode, channels));
        actions
    }

    /// Declares the current template again for the channels whose target
    /// changed, if any wait.
    fn declare_again(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
        self.retargeted
            .retain(|id| channels.iter().any(|c| c.channel_id == *id));
        if self.retargeted.is_empty() {
            return vec![];
        }
        self.declare_for(mode, channels, true)
    }

    /// Declares the current template if everything it needs is there: the
    /// declarator, a token, the pool's script, its transactions, a channel
    /// (whose extranonce size the coinbase is laid out for). For every
    /// channel, or (`again`) for those whose target changed: they stop
    /// waiting once a declaration for them is on its way.
    fn declare_for(&mut self, mode: Mode, channels: &[ChannelView], again: bool) -> Vec<Action> {
        if mode != Mode::Declared || !self.jds_up {
            return vec![];
        }
        let (Some(template), Some(prev), Some(script), Some(channel)) = (
            self.current.clone(),
            self.prev.clone(),
            self.pool_script.clone(),
            channels.first(),
        ) else {
            return vec![];
        };
        let Some(txs) = self.transactions.get(&template.template_id).cloned() else {
            return vec![];
        };
        let for_all =
            |d: &&Declared| d.template.template_id == template.template_id && d.only_on.is_none();
        let in_flight = self.declaring.values().find(for_all).is_some();
        let already = in_flight || self.declared.iter().any(|d| for_all(&d));
        if self.stale_template == Some(template.template_id) {
            return vec![];
        }
        if again {
            if in_flight {
                // Set on every channel at its target when it comes.
                self.retargeted.clear();
                return vec![];
            }
            // Another channel's declaration of the template again in
            // flight: it is for these too.
            let declaring_again = self
                .declaring
                .values_mut()
                .find(|d| d.template.template_id == template.template_id && d.only_on.is_some());
            if let Some(declaring_again) = declaring_again {
                let waiting = std::mem::take(&mut self.retargeted);
                declaring_again
                    .only_on
                    .get_or_insert_with(BTreeSet::new)
                    .extend(waiting);
                return vec![];
            }
        } else if already {
            return vec![];
        }
        if self.tokens.is_empty() {
            return vec![];
        }
        let full_extranonce = channel.full_extranonce;
        let to_pool = TxOut {
            value: Amount::from_sat(template.coinbase_tx_value_remaining),
            script_pubkey: script,
        };
        // Each declaration has a coinbase of its own, so a template declared
        // again for a new target has headers of its own: the jobs set
        // before keep theirs and their target (the pool refuses a job with
        // the headers of one at another target).
        let number = self.declarations.wrapping_add(1);
        let outputs = vec![to_pool, ehash::coinbase::job_number_output(number)];
        let built = JobFactory::new(true, Some(DECLARED_TAG.into()), None)
            .new_coinbase_tx_prefix_and_suffix(template.clone(), outputs, full_extranonce)
            .map_err(|e| format!("{e:?}"))
            .and_then(|(prefix, suffix)| {
                let fit = |part: Vec<u8>| B064KOwned::new(part).map_err(|e| format!("{e:?}"));
                Ok((fit(prefix)?, fit(suffix)?))
            });
        let (prefix, suffix) = match built {
            Ok(both) => both,
            Err(e) => {
                // The token stays for the next template.
                warn!(
                    template_id = template.template_id,
                    "cannot build a coinbase to declare: {e}"
                );
                return vec![];
            }
        };
        let token = self.tokens.pop_front().expect("checked above");
        self.declarations = number;
        let only_on = again.then(|| std::mem::take(&mut self.retargeted));
        let wtxids: Vec<U256Owned> = txs
            .iter()
            .map(|tx| U256Owned::from(tx.compute_wtxid().to_byte_array()))
            .collect();
        let request_id = self.request_id();
        let message = DeclareMiningJobOwned {
            request_id,
            mining_job_token: token.clone(),
            version: template.version,
            coinbase_tx_prefix: prefix,
            coinbase_tx_suffix: suffix,
            wtxid_list: Seq064KOwned::new(wtxids).expect("a block's transactions fit"),
            excess_data: B064KOwned::new(vec![0; 32]).expect("32 bytes"),
        };
        debug!(
            request_id,
            template_id = template.template_id,
            transactions = txs.len(),
            "declaring"
        );
        self.declaring.insert(
            request_id,
            Declared {
                template,
                prev,
                token,
                full_extranonce,
                number,
                only_on,
            },
        );
        let allocate = self.allocate();
        vec![
            Action::Jds(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(
                message,
            ))),
            allocate,
        ]
    }

    /// A job declarator message.
    pub fn on_jds(&mut self, msg: AnyMessageOwned, channels: &[ChannelView]) -> Vec<Action> {
        let AnyMessageOwned::JobDeclaration(msg) = msg else {
            return vec![];
        };
        match msg {
            Jd::AllocateMiningJobTokenSuccess(ok) => {
                match deserialize::<Vec<TxOut>>(ok.coinbase_outputs.as_bytes()) {
                    Ok(outputs) if !outputs.is_empty() => {
                        self.pool_script = Some(outputs[0].script_pubkey.clone());
                    }
                    _ => {
                        return vec![Action::FallBack(
                            "the job declarator named no coinbase output to pay".into(),
                        )]
                    }
                }
                self.tokens.push_back(ok.mining_job_token);
                self.declare_due(Mode::Declared, channels)
            }
            Jd::DeclareMiningJobSuccess(ok) => self.on_declared(ok, channels),
            Jd::DeclareMiningJobError(e) => {
                let refused = self.declaring.remove(&e.request_id);
                let code = e.error_code.as_utf8_or_hex();
                if code == "stale-chain-tip" {
                    debug!("declaration on a stale tip; the next template follows");
                    if let Some(only_on) = refused.as_ref().and_then(|d| d.only_on.clone()) {
                        self.retargeted.extend(only_on);
                    }
                    self.stale_template = refused.map(|d| d.template.template_id);
                    return vec![];
                }
                let details = String::from_utf8_lossy(e.error_details.as_bytes()).into_owned();
                vec![Action::FallBack(format!(
                    "the job declarator refused a job: {code} ({details})"
                ))]
            }
            Jd::ProvideMissingTransactions(ask) => self.provide_missing(ask),
            other => {
                debug!(
                    "ignoring {} from the job declarator",
                    roles_common::sv2::message_name(&AnyMessageOwned::JobDeclaration(other))
                );
                vec![]
            }
        }
    }

    /// The job declarator accepted a declaration: unless the tip moved
    /// since, the job goes on every channel.
    fn on_declared(
        &mut self,
        ok: DeclareMiningJobSuccessOwned,
        channels: &[ChannelView],
    ) -> Vec<Action> {
        self.stale_retries = 0;
        let Some(mut declared) = self.declaring.remove(&ok.request_id) else {
            return vec![];
        };
        if self.prev.as_ref().map(|p| &p.prev_hash) != Some(&declared.prev.prev_hash) {
            debug!(
                request_id = ok.request_id,
                "declared on a tip that moved since"
            );
            return vec![];
        }
        declared.token = ok.new_mining_job_token;
        // A job declared after this one went on every channel meanwhile
        // (the declarator may answer out of order).
        if self
            .declared
            .as_ref()
            .is_some_and(|d| d.number > declared.number)
        {
            debug!(
                request_id = ok.request_id,
                "a later declaration is set: not set"
            );
            return vec![];
        }
        let Some(only_on) = declared.only_on.clone() else {
            info!(
                template_id = declared.template.template_id,
                channels = channels.len(),
                "job declared; setting it on every channel"
            );
            self.declared = Some(declared.clone());
            // Each channel gets this job at its target now.
            self.retargeted.clear();
            return channels
                .iter()
                .flat_map(|c| self.set_declared_on(&declared, c))
                .collect();
        };
        debug!(
            template_id = declared.template.template_id,
            ?only_on,
            "job declared again; setting it on the channels whose target changed"
        );
        channels
            .iter()
            .filter(|c| only_on.contains(&c.channel_id))
            .flat_map(|c| self.set_declared_on(&declared, c))
            .collect()
    }

    /// The job declarator asks for transactions of a declaration it does
    /// not know.
    fn provide_missing(&self, ask: ProvideMissingTransactionsOwned) -> Vec<Action> {
        let Some(declared) = self.declaring.get(&ask.request_id) else {
            return vec![];
        };
        let txs = self
            .transactions
            .get(&declared.template.template_id)
            .cloned()
            .unwrap_or_default();
        let positions = ask.unknown_tx_position_list.into_inner();
        // Each at most once: the answer holds at most the template's
        // transactions, however the list was written.
        let mut asked = HashSet::new();
        if !positions.iter().all(|i| asked.insert(*i)) {
            return vec![Action::FallBack(
                "the job declarator asked for a transaction twice".into(),
            )];
        }
        let list: Option<Vec<_>> = positions
            .into_iter()
            .map(|i| {
                txs.get(i as usize)
                    .map(|tx| serialize(tx).try_into().expect("fits"))
            })
            .collect();
        let Some(list) = list else {
            return vec![Action::FallBack(
                "the job declarator asked for a transaction the job does not have".into(),
            )];
        };
        vec![Action::Jds(AnyMessageOwned::JobDeclaration(
            Jd::ProvideMissingTransactionsSuccess(ProvideMissingTransactionsSuccessOwned {
                request_id: ask.request_id,
                transaction_list: Seq064KOwned::new(list).expect("fits"),
            }),
        ))]
    }

    /// A channel opened: the declared job goes on it, or, with none yet (the
    /// first channel: a declaration needs its extranonce size), the current
    /// template is declared now.
    pub fn on_channel_opened(
        &mut self,
        mode: Mode,
        channel: Option<&ChannelView>,
        channels: &[ChannelView],
    ) -> Vec<Action> {
        if self.declared.is_some() {
            self.set_on_channel(channel)
        } else {
            self.declare(mode, channels)
        }
    }

    /// Channel `channel_id`'s target changed: a job keeps the target it
    /// was set at, so the current template is declared again and set on
    /// that channel (with no job declared yet, the declaration to come is
    /// set on it at its new target).
    pub fn on_target_changed(
        &mut self,
        mode: Mode,
        channels: &[ChannelView],
        channel_id: u32,
    ) -> Vec<Action> {
        if self.declared.is_none() {
            return vec![];
        }
        self.retargeted.insert(channel_id);
        self.declare_again(mode, channels)
    }

    /// SetCustomMiningJob of the declared job on `channel`.
    pub fn set_on_channel(&mut self, channel: Option<&ChannelView>) -> Vec<Action> {
        let (Some(declared), Some(channel)) = (self.declared.clone(), channel) else {
            return vec![];
        };
        self.set_declared_on(&declared, channel)
    }

    /// SetCustomMiningJob of `declared` on `channel`.
    fn set_declared_on(&mut self, declared: &Declared, channel: &ChannelView) -> Vec<Action> {
        if channel.full_extranonce != declared.full_extranonce {
            warn!(
                channel_id = channel.channel_id,
                "channel's extranonce size differs from the declared job's: not set"
            );
            return vec![];
        }
        let Some(script) = self.pool_script.clone() else {
            return vec![];
        };
        let mut outputs = vec![TxOut {
            value: Amount::from_sat(declared.template.coinbase_tx_value_remaining),
            script_pubkey: script,
        }];
        outputs.extend(
            channel
                .key
                .as_ref()
                .map(ehash::coinbase::key_commitment_output),
        );
        outputs.push(ehash::coinbase::job_number_output(declared.number));
        let request_id = self.request_id();
        let prev = &declared.prev;
        let job = JobFactory::new(true, Some(DECLARED_TAG.into()), None).new_custom_job(
            channel.channel_id,
            request_id,
            declared.token.clone(),
            ChainTip::new(prev.prev_hash.clone(), prev.n_bits, prev.header_timestamp),
            declared.template.clone(),
            outputs,
            declared.full_extranonce,
        );
        match job {
            Ok(job) => {
                self.pending.insert(
                    (channel.channel_id, request_id),
                    (job.clone(), declared.template.template_id),
                );
                vec![Action::Upstream(AnyMessageOwned::Mining(
                    MiningOwned::SetCustomMiningJob(job),
                ))]
            }
            Err(e) => {
                warn!(
                    channel_id = channel.channel_id,
                    "cannot build a custom job: {e:?}"
                );
                vec![]
            }
        }
    }

    /// The pool set a custom job: the job goes down to the channel's owner
    /// (after a SetNewPrevHash when the tip moved); the tip it is on.
    pub fn on_custom_job_set(
        &mut self,
        ok: SetCustomMiningJobSuccess,
        channel: Option<&ChannelView>,
    ) -> (Vec<Action>, Option<[u8; 32]>) {
        let Some((m, template_id)) = self.pending.remove(&(ok.channel_id, ok.request_id)) else {
            return (vec![], None);
        };
        let Some(channel) = channel else {
            return (vec![], None);
        };
        let built = JobFactory::new(true, None, None).new_extended_job_from_custom_job(
            m.clone(),
            channel.extranonce_prefix.clone(),
            channel.full_extranonce,
        );
        let job = match built {
            Ok(job) => job,
            Err(e) => {
                warn!(
                    channel_id = channel.channel_id,
                    "cannot build the job the pool set: {e:?}"
                );
                return (vec![], None);
            }
        };
        let prev_hash = m.prev_hash.to_array();
        let new_tip = channel.prev_hash != Some(prev_hash);
        let mut message = job.get_job_message().clone();
        message.job_id = ok.job_id;
        message.min_ntime = Sv2OptionOwned::new(if new_tip { None } else { Some(m.min_ntime) });
        let mut actions = vec![Action::Downstream(
            channel.owner,
            AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(message)),
        )];
        if new_tip {
            actions.push(Action::Downstream(
                channel.owner,
                AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(MiningSetNewPrevHash {
                    channel_id: channel.channel_id,
                    job_id: ok.job_id,
                    prev_hash: m.prev_hash.clone(),
                    min_ntime: m.min_ntime,
                    nbits: m.nbits,
                })),
            ));
        }
        debug!(
            channel_id = channel.channel_id,
            job_id = ok.job_id,
            "custom job set"
        );
        self.set.insert(
            (channel.channel_id, ok.job_id),
            SetJob {
                template_id,
                job,
                prev_hash,
                nbits: m.nbits,
            },
        );
        (actions, Some(prev_hash))
    }

    /// SetCustomMiningJob.Error, on a channel since `closed` or still open.
    pub fn on_custom_job_refused(
        &mut self,
        e: SetCustomMiningJobErrorOwned,
        closed: bool,
    ) -> Vec<Action> {
        let refused = self.pending.remove(&(e.channel_id, e.request_id));
        let code = e.error_code.as_utf8_or_hex();
        if closed {
            debug!(
                channel_id = e.channel_id,
                code, "custom job refused on a channel closed since"
            );
            return vec![];
        }
        // A job of a tip this client has left: its job on the new tip gets
        // an answer of its own.
        let current_tip = self.prev.as_ref().map(|p| p.prev_hash.to_array());
        if refused.is_some_and(|(m, _)| Some(m.prev_hash.to_array()) != current_tip) {
            debug!(
                channel_id = e.channel_id,
                code, "custom job refused on a tip left since"
            );
            return vec![];
        }
        if code == "stale-chain-tip" {
            debug!(channel_id = e.channel_id, "custom job on a stale tip");
            return vec![];
        }
        // The pool holds all the custom jobs it may (on this channel, from
        // this address, or in all): a channel with a job set on this tip
        // mines it until the tip moves; one without would mine stale work,
        // so the pool's jobs.
        let has_job_on_tip = self.set.keys().any(|(channel, _)| *channel == e.channel_id);
        if code == "too-many-jobs-on-this-tip" && has_job_on_tip {
            warn!(
                channel_id = e.channel_id,
                "the pool takes no more custom jobs with headers of their own on this \
                 channel until the tip moves: mining the one it has"
            );
            return vec![];
        }
        vec![Action::FallBack(format!(
            "the pool refused a custom job on channel {}: {code}",
            e.channel_id
        ))]
    }

    /// A share on a declared job that is also a block: SubmitSolution to
    /// the template provider, PushSolution to the declarator.
    pub fn block_found(&self, share: &SubmitSharesExtendedOwned) -> Vec<Action> {
        let Some(set) = self.set.get(&(share.channel_id, share.job_id)) else {
            return vec![];
        };
        let job = &set.job;
        let extranonce = share.extranonce.as_bytes();
        let without_witness = [
            job.get_coinbase_tx_prefix_without_bip141(),
            job.get_extranonce_prefix().to_vec(),
            extranonce.to_vec(),
            job.get_coinbase_tx_suffix_without_bip141(),
        ]
        .concat();
        let path: Vec<[u8; 32]> = job.get_merkle_path().iter().map(|h| h.to_array()).collect();
        let root = ehash::coinbase::merkle_root_of(&without_witness, &path);
        let header = ehash::share::header_bytes(
            share.version,
            set.prev_hash,
            root,
            share.ntime,
            set.nbits,
            share.nonce,
        );
        let hash = ehash::share::header_hash(&header);
        let target = Target::from_compact(stratum_core::bitcoin::CompactTarget::from_consensus(
            set.nbits,
        ));
        if !target.is_met_by(BlockHash::from_byte_array(hash)) {
            return vec![];
        }
        info!(
            channel_id = share.channel_id,
            hash = %BlockHash::from_byte_array(hash),
            "block found on a declared job: submitting it to the template provider"
        );
        let coinbase = [
            job.get_coinbase_tx_prefix_with_bip141(),
            job.get_extranonce_prefix().to_vec(),
            extranonce.to_vec(),
            job.get_coinbase_tx_suffix_with_bip141(),
        ]
        .concat();
        let full_extranonce = [job.get_extranonce_prefix(), extranonce].concat();
        let mut actions = vec![];
        match coinbase.try_into() {
            Ok(coinbase_tx) => actions.push(Action::Tp(AnyMessageOwned::TemplateDistribution(
                Tdp::SubmitSolution(SubmitSolutionOwned {
                    template_id: set.template_id,
                    version: share.version,
                    header_timestamp: share.ntime,
                    header_nonce: share.nonce,
                    coinbase_tx,
                }),
            ))),
            Err(e) => warn!("the block's coinbase does not fit SubmitSolution: {e:?}"),
        }
        if let Ok(extranonce) = full_extranonce.try_into() {
            actions.push(Action::Jds(AnyMessageOwned::JobDeclaration(
                Jd::PushSolution(PushSolutionOwned {
                    extranonce,
                    prev_hash: U256Owned::from(set.prev_hash),
                    nonce: share.nonce,
                    ntime: share.ntime,
                    nbits: set.nbits,
                    version: share.version,
                }),
            )));
        }
        actions
    }
}

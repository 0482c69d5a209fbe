//! Declaring templates at the pool's job declarator: for every channel
//! when a template comes, again for the channels whose target changed;
//! the declarator's answers, and the transactions it asks for.

use std::collections::{BTreeSet, HashSet};

use stratum_core::binary_sv2::{B064KOwned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::consensus::{deserialize, serialize};
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::{Amount, ScriptBuf, TxOut};
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::job_declaration_sv2::{
    DeclareMiningJobOwned, DeclareMiningJobSuccessOwned, ProvideMissingTransactionsOwned,
    ProvideMissingTransactionsSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, JobDeclarationOwned as Jd};
use stratum_core::template_distribution_sv2::NewTemplateOwned;
use tracing::{debug, info, warn};

use super::{ChannelView, Declared, Jobs, DECLARED_TAG};
use crate::core::{Action, Mode, MAX_STALE_RETRIES, STALE_RETRY_SECS};

impl Jobs {
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
    pub(super) fn declare(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
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
    pub(super) fn declare_again(&mut self, mode: Mode, channels: &[ChannelView]) -> Vec<Action> {
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
        let (Some(prev), Some(script), Some(channel)) = (
            self.prev.clone(),
            self.pool_script.clone(),
            channels.first(),
        ) else {
            return vec![];
        };
        let Some(template) = self.template_to_declare(again) else {
            return vec![];
        };
        if !self.declaration_due(template.template_id, again) || self.tokens.is_empty() {
            return vec![];
        }
        let full_extranonce = channel.full_extranonce;
        let number = self.declarations.wrapping_add(1);
        let (prefix, suffix) = match declared_coinbase(&template, script, full_extranonce, number) {
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
        let wtxids: Vec<U256Owned> = self.transactions[&template.template_id]
            .iter()
            .map(|tx| U256Owned::from(tx.compute_wtxid().to_byte_array()))
            .collect();
        let transactions = wtxids.len();
        let token = self.tokens.pop_front().expect("checked above");
        self.declarations = number;
        let only_on = again.then(|| std::mem::take(&mut self.retargeted));
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
            transactions,
            "declaring"
        );
        let declared = Declared {
            template,
            prev,
            token,
            full_extranonce,
            number,
            only_on,
        };
        self.declaring.insert(request_id, declared);
        let allocate = self.allocate();
        vec![
            Action::Jds(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(
                message,
            ))),
            allocate,
        ]
    }

    /// The template to declare, its transactions at hand: the current one;
    /// or, for the channels whose target changed (`again`), the declared
    /// one they mine, when the current one's transactions are not there
    /// (the template provider refused them, or they are on their way) and
    /// nothing else will set a job on them at their new target.
    fn template_to_declare(&mut self, again: bool) -> Option<NewTemplateOwned> {
        let with_transactions = |template: &NewTemplateOwned| {
            self.transactions
                .contains_key(&template.template_id)
                .then(|| template.clone())
        };
        if let Some(current) = with_transactions(self.current.as_ref()?) {
            return Some(current);
        }
        let declared = self.declared.as_ref().filter(|_| again)?;
        // A stale-tip refusal waits for its retry: so does this.
        if self.stale_template.is_some() {
            return None;
        }
        // A declaration for every channel, later than the one set, sets a
        // job on each at its target when it comes.
        let later_for_all = |d: &Declared| d.only_on.is_none() && d.number > declared.number;
        if self.declaring.values().any(later_for_all) {
            self.retargeted.clear();
            return None;
        }
        with_transactions(&declared.template)
    }

    /// Whether template `template_id` is to be declared now: not while it
    /// waits after a stale-tip refusal; for every channel, unless it is or
    /// was already; for the channels whose target changed (`again`), unless
    /// a declaration of it on its way is for them too (it then takes them).
    fn declaration_due(&mut self, template_id: u64, again: bool) -> bool {
        if self.stale_template == Some(template_id) {
            return false;
        }
        let for_all = |d: &Declared| d.template.template_id == template_id && d.only_on.is_none();
        let in_flight = self.declaring.values().any(for_all);
        if !again {
            return !in_flight && !self.declared.as_ref().is_some_and(for_all);
        }
        if in_flight {
            // Set on every channel at its target when it comes.
            self.retargeted.clear();
            return false;
        }
        let declaring_again = self
            .declaring
            .values_mut()
            .find(|d| d.template.template_id == template_id && d.only_on.is_some());
        if let Some(declaring_again) = declaring_again {
            let waiting = std::mem::take(&mut self.retargeted);
            declaring_again
                .only_on
                .get_or_insert_with(BTreeSet::new)
                .extend(waiting);
            return false;
        }
        true
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
            .map_or(&[][..], Vec::as_slice);
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
}

/// The coinbase (prefix and suffix around the extranonce) of declaration
/// `number` of `template`, paying the pool's `script`. Each declaration has
/// a coinbase of its own, so a template declared again for a new target
/// has headers of its own: the jobs set before keep theirs and their target
/// (the pool refuses a job with the headers of one at another target).
fn declared_coinbase(
    template: &NewTemplateOwned,
    script: ScriptBuf,
    full_extranonce: usize,
    number: u64,
) -> Result<(B064KOwned, B064KOwned), String> {
    let to_pool = TxOut {
        value: Amount::from_sat(template.coinbase_tx_value_remaining),
        script_pubkey: script,
    };
    let outputs = vec![to_pool, ehash::coinbase::job_number_output(number)];
    let (prefix, suffix) = JobFactory::new(true, Some(DECLARED_TAG.into()), None)
        .new_coinbase_tx_prefix_and_suffix(template.clone(), outputs, full_extranonce)
        .map_err(|e| format!("{e:?}"))?;
    let fit = |part: Vec<u8>| B064KOwned::new(part).map_err(|e| format!("{e:?}"));
    Ok((fit(prefix)?, fit(suffix)?))
}

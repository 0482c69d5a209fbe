//! Templates and the chain tip from the template provider: a job on every
//! channel for each NewTemplate, a new prevhash for each SetNewPrevHash, and
//! the jobs a new channel starts with.

use stratum_core::bitcoin::{consensus::serialize, hashes::Hash, Amount, BlockHash, TxOut};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};
use tracing::{debug, info, warn};

use super::channel::Channel;
use super::{Action, PoolCore};

/// Future templates kept for a SetNewPrevHash to activate.
const KEPT_FUTURE_TEMPLATES: usize = 16;

impl PoolCore {
    /// The template a job on the current tip is made from now: the latest
    /// non-future one, else the one the tip activated (as non-future).
    pub(super) fn current_template(&self) -> Option<NewTemplateOwned> {
        self.prev_hash.as_ref()?;
        self.latest_template.clone().or_else(|| {
            self.active_template.clone().map(|mut t| {
                t.future_template = false;
                t
            })
        })
    }

    pub(super) fn reward_outputs(&self, template: &NewTemplateOwned) -> Vec<TxOut> {
        vec![TxOut {
            value: Amount::from_sat(template.coinbase_tx_value_remaining),
            script_pubkey: self.config.reward_script.clone(),
        }]
    }

    /// What CoinbaseOutputConstraints should tell the template provider.
    pub fn coinbase_output_constraints(&self) -> (u32, u16) {
        let out = TxOut {
            value: Amount::ZERO,
            script_pubkey: self.config.reward_script.clone(),
        };
        // Each channel's jobs also carry its key commitment output and
        // their number.
        let size = serialize(&out).len()
            + ehash::coinbase::key_commitment_output_len()
            + ehash::coinbase::job_number_output_len();
        (size as u32, 4)
    }

    /// The job and prevhash a new channel starts with: the future template
    /// the current prevhash activated, then that prevhash, then a later
    /// non-future template if there is one.
    /// Future templates not activated yet are added too, so the next
    /// SetNewPrevHash finds them.
    ///
    /// A `renewed` channel gets the activated job as a job active at once
    /// (min_ntime set) instead: a SetNewPrevHash would tell its downstream
    /// to drop the jobs it has, whose shares still count until the chain
    /// tip moves.
    pub(super) fn initial_jobs(&self, channel: &mut Channel, renewed: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut activated = None;
        if let (Some(template), Some(prev)) = (self.active_template.clone(), &self.prev_hash) {
            activated = Some(prev.template_id);
            let outputs = self.reward_outputs(&template);
            let job = channel.on_new_template(template, outputs);
            let prev = channel.on_set_new_prev_hash(prev);
            match renewed {
                false => actions.extend(job.into_iter().chain(prev)),
                true => actions.extend(prev.and(channel.active_job())),
            }
            if let Some(latest) = self.latest_template.clone() {
                let outputs = self.reward_outputs(&latest);
                actions.extend(channel.on_new_template(latest, outputs));
            }
        }
        for pending in self
            .future_templates
            .iter()
            .filter(|t| activated.is_none_or(|id| t.template_id > id))
        {
            let outputs = self.reward_outputs(pending);
            actions.extend(channel.on_new_template(pending.clone(), outputs));
        }
        actions
    }

    /// A new link to the template provider: the future templates of the
    /// last one are forgotten, since template ids are only unique on one
    /// link (a restarted provider counts again from its start) and its
    /// next SetNewPrevHash must activate its own template.
    pub fn on_template_provider_connected(&mut self) {
        if !self.future_templates.is_empty() {
            debug!(
                forgotten = self.future_templates.len(),
                "future templates of the last template provider link forgotten"
            );
        }
        self.future_templates.clear();
    }

    /// A NewTemplate from the template provider: a job on every channel.
    pub fn on_new_template(&mut self, template: NewTemplateOwned) -> Vec<Action> {
        debug!(
            template_id = template.template_id,
            future = template.future_template,
            "NewTemplate"
        );
        if template.future_template {
            self.future_templates.push_back(template.clone());
            while self.future_templates.len() > KEPT_FUTURE_TEMPLATES {
                self.future_templates.pop_front();
            }
        } else {
            if self.prev_hash.is_none() {
                warn!("non-future template before any SetNewPrevHash: ignored");
                return vec![];
            }
            self.latest_template = Some(template.clone());
        }
        let outputs = self.reward_outputs(&template);
        self.channels
            .values_mut()
            .filter_map(|channel| channel.on_new_template(template.clone(), outputs.clone()))
            .collect()
    }

    /// A SetNewPrevHash from the template provider: the tip moved.
    pub fn on_set_new_prev_hash(&mut self, prev: SetNewPrevHashOwned) -> Vec<Action> {
        let Some(template) = self
            .future_templates
            .iter()
            .find(|t| t.template_id == prev.template_id)
            .cloned()
        else {
            warn!(
                template_id = prev.template_id,
                "SetNewPrevHash for an unknown template: ignored"
            );
            return vec![];
        };
        info!(
            template_id = prev.template_id,
            prev_hash = %BlockHash::from_byte_array(prev.prev_hash.to_array()),
            "new chain tip"
        );
        self.future_templates
            .retain(|t| t.template_id >= prev.template_id);
        self.custom_spaces.on_tip(prev.prev_hash.to_array());
        let mut answers = Vec::new();
        if let Some(mut jds) = self.jds() {
            let now_ms = roles_common::stats_publisher::now_ms();
            answers = jds.on_tip(&prev, &template, now_ms);
        }
        self.active_template = Some(template);
        self.latest_template = None;
        let mut actions: Vec<Action> = self
            .channels
            .values_mut()
            .filter_map(|channel| channel.on_set_new_prev_hash(&prev))
            .collect();
        actions.extend(
            answers
                .into_iter()
                .map(|(conn, m)| Action::JobDeclaration(conn, m)),
        );
        self.prev_hash = Some(prev);
        actions
    }
}

//! Setting declared jobs on the pool's channels as custom jobs, each
//! committing to its channel's key, and the pool's answers.

use stratum_core::binary_sv2::Sv2OptionOwned;
use stratum_core::bitcoin::{Amount, TxOut};
use stratum_core::channels_sv2::chain_tip::ChainTip;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::mining_sv2::{
    SetCustomMiningJobErrorOwned, SetCustomMiningJobSuccess,
    SetNewPrevHashOwned as MiningSetNewPrevHash,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tracing::{debug, warn};

use super::{ChannelView, Declared, Jobs, SetJob, DECLARED_TAG};
use crate::core::{Action, Mode};

impl Jobs {
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
    pub(super) fn set_declared_on(
        &mut self,
        declared: &Declared,
        channel: &ChannelView,
    ) -> Vec<Action> {
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
}

//! The channel and its jobs: the pool's answers to the channel open, jobs,
//! chain tips and targets, turned into `mining.notify` and
//! `mining.set_difficulty` for the miner, and keepalive jobs.

use serde_json::json;
use stratum_core::bitcoin::Target;
use stratum_core::channels_sv2::client::extended::{ExtendedChannel, ExtendedJob};
use stratum_core::channels_sv2::extranonce_manager::ExtranoncePrefix;
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, info, warn};

use super::{Action, MinerSession, MinerStat, Sv1Job, EXTRANONCE1_SIZE, MIN_EXTRANONCE2_SIZE};
use ::sv1::server::{self as sv1, code};

/// SV1 job ids remembered per miner (the most recent ones).
const MAX_SV1_JOBS: usize = 64;

/// A channel the pool closes is re-opened at most this often per window;
/// beyond that the miner is disconnected.
const MAX_REOPENS: usize = 3;
const REOPEN_WINDOW_SECS: u64 = 60;

impl MinerSession {
    /// A message from the pool about this miner's channel.
    pub fn on_upstream(&mut self, msg: MiningOwned, now: u64) -> Vec<Action> {
        let now = self.clock.at(now);
        match msg {
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => self.on_channel_opened(s, now),
            MiningOwned::OpenMiningChannelError(e) => self.on_channel_refused(e),
            MiningOwned::NewExtendedMiningJob(job) => self.on_new_job(job, now),
            MiningOwned::SetNewPrevHash(p) => {
                let Some(channel) = self.channel.as_mut() else {
                    return vec![];
                };
                if let Err(e) = channel.on_set_new_prev_hash(p) {
                    warn!(?e, "SetNewPrevHash refused");
                    return vec![];
                }
                self.notify_active(true, now)
            }
            MiningOwned::SetTarget(t) => {
                let Some(channel) = self.channel.as_mut() else {
                    return vec![];
                };
                let target = Target::from_le_bytes(t.maximum_target.to_array());
                if let Err(e) = channel.set_target(target) {
                    warn!(?e, "SetTarget refused");
                    return vec![];
                }
                // Per SV2, jobs already received keep their target: the new
                // difficulty reaches the miner with the next job.
                debug!(channel_id = t.channel_id, "new channel target");
                vec![]
            }
            MiningOwned::SubmitSharesSuccess(s) => self.on_shares_accepted(s),
            MiningOwned::SubmitSharesError(e) => self.on_share_refused(e),
            MiningOwned::CloseChannel(c) => self.on_channel_closed(c, now),
            MiningOwned::SetExtranoncePrefix(p) => {
                if let Some(c) = self.channel.as_mut() {
                    let ok = ExtranoncePrefix::from_wire(p.extranonce_prefix.to_owned_bytes())
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|prefix| {
                            c.set_extranonce_prefix(prefix)
                                .map_err(|e| format!("{e:?}"))
                        });
                    if let Err(e) = ok {
                        return vec![Action::Close(format!("bad SetExtranoncePrefix: {e}"))];
                    }
                }
                vec![]
            }
            MiningOwned::UpdateChannelError(e) => {
                debug!(code = %String::from_utf8_lossy(e.error_code.as_bytes()), "UpdateChannel refused");
                vec![]
            }
            other => {
                debug!(?other, "ignoring upstream message");
                vec![]
            }
        }
    }

    fn on_channel_opened(
        &mut self,
        s: OpenExtendedMiningChannelSuccessOwned,
        now: u64,
    ) -> Vec<Action> {
        if !self.opening {
            // An open sent just before the pool link was lost, answered on
            // the next link after this session opened again: the miner
            // mines on one channel, this one goes.
            debug!(channel_id = s.channel_id, "closing a channel opened twice");
            return vec![Action::Upstream(MiningOwned::CloseChannel(
                CloseChannelOwned {
                    channel_id: s.channel_id,
                    reason_code: ehash::wire::str0255_truncated("opened-twice"),
                },
            ))];
        }
        self.opening = false;
        let prefix = match ExtranoncePrefix::from_wire(s.extranonce_prefix.to_owned_bytes()) {
            Ok(p) => p,
            Err(e) => return vec![Action::Close(format!("bad extranonce prefix: {e:?}"))],
        };
        let mut out = Vec::new();
        match self.fit_extranonce2(s.extranonce_size as usize) {
            Ok(None) => {}
            Ok(Some(line)) => out.push(line),
            Err(reason) => return vec![Action::Close(reason)],
        }
        let target = Target::from_le_bytes(s.target.to_array());
        let channel = match ExtendedChannel::new(
            s.channel_id,
            self.identity.clone().unwrap_or_default(),
            prefix,
            target,
            self.nominal_hashrate,
            true,
            s.extranonce_size,
            None,
        ) {
            Ok(c) => c,
            Err(e) => return vec![Action::Close(format!("cannot track channel: {e:?}"))],
        };
        info!(
            channel_id = s.channel_id,
            identity = self.identity.as_deref().unwrap_or(""),
            "channel opened"
        );
        self.channel = Some(channel);
        self.channel_id = Some(s.channel_id);
        self.vardiff.reset(now * 1000, self.nominal_hashrate as f64);
        // Taken, not drained: an idle miner keeps no spare capacity.
        out.extend(
            std::mem::take(&mut self.pending_authorize)
                .into_iter()
                .map(|id| Action::Sv1(sv1::ok(&id, json!(true)))),
        );
        if !self.announced {
            self.announced = true;
            out.push(Action::Stats(MinerStat::Connected {
                name: self.username.clone().unwrap_or_default(),
            }));
        }
        out.push(self.hashrate_report(now));
        if let Some(mask) = self.version_mask {
            out.push(Action::Sv1(sv1::set_version_mask(mask)));
        }
        out.extend(self.difficulty_update(&target, now));
        out
    }

    /// The miner's extranonce2 within the `rollable` bytes the pool gave:
    /// unchanged if it fits, else (for a miner that subscribed to extranonce
    /// changes) the `mining.set_extranonce` that moves it down to what fits.
    /// Err: the miner cannot mine on this channel.
    fn fit_extranonce2(&mut self, rollable: usize) -> Result<Option<Action>, String> {
        let room = rollable.saturating_sub(EXTRANONCE1_SIZE);
        if room >= self.extranonce2_size {
            return Ok(None);
        }
        if !self.extranonce_subscribed || room < MIN_EXTRANONCE2_SIZE {
            return Err(format!(
                "pool gave {rollable} extranonce bytes, {} needed",
                EXTRANONCE1_SIZE + self.extranonce2_size
            ));
        }
        info!(
            from = self.extranonce2_size,
            to = room,
            "the pool has less extranonce room: moving the miner's extranonce2 down"
        );
        self.extranonce2_size = room;
        Ok(Some(Action::Sv1(sv1::set_extranonce(
            &self.extranonce1,
            room,
        ))))
    }

    fn on_channel_refused(&mut self, e: OpenMiningChannelErrorOwned) -> Vec<Action> {
        let reason = String::from_utf8_lossy(e.error_code.as_bytes()).to_string();
        if self.channel.is_some() {
            // The refusal of a second open (see `on_channel_opened`): the
            // miner mines on the channel it holds.
            debug!(reason, "a second open refused");
            return vec![];
        }
        self.opening = false;
        if reason == "min-extranonce-size-too-large"
            && self.extranonce_subscribed
            && !self.shrink_extranonce
            && self.extranonce2_size > MIN_EXTRANONCE2_SIZE
        {
            info!("the pool has no room for the miner's extranonce2: asking for less");
            self.shrink_extranonce = true;
            return self.open_channel().into_iter().collect();
        }
        warn!(reason, "pool refused the channel");
        if self.pending_authorize.is_empty() && self.identity.is_some() {
            // A re-open after a reconnect: without a channel the miner would
            // wait for work forever; closing lets its firmware fail over.
            return vec![Action::Close(format!("pool refused the channel: {reason}"))];
        }
        self.identity = None;
        self.locking_key = None;
        std::mem::take(&mut self.pending_authorize)
            .into_iter()
            .map(|id| {
                Action::Sv1(sv1::error(
                    &id,
                    code::UNAUTHORIZED,
                    &format!("pool refused: {reason}"),
                ))
            })
            .collect()
    }

    /// The pool closed the channel: re-open it, keeping the miner connected,
    /// unless the pool keeps closing it.
    fn on_channel_closed(&mut self, c: CloseChannelOwned, now: u64) -> Vec<Action> {
        let reason = String::from_utf8_lossy(c.reason_code.as_bytes()).to_string();
        let mut out = self.on_upstream_lost();
        // Re-open (e.g. after "seen-shares-budget-exhausted"), keeping
        // the miner connected, unless the pool keeps closing it.
        self.reopens
            .retain(|t| now.saturating_sub(*t) < REOPEN_WINDOW_SECS);
        if self.reopens.len() >= MAX_REOPENS {
            out.push(Action::Close(format!("pool closed the channel: {reason}")));
        } else {
            info!(reason, "pool closed the channel: re-opening it");
            self.reopens.push(now);
            out.extend(self.open_channel());
        }
        out
    }

    fn on_new_job(&mut self, job: NewExtendedMiningJobOwned, now: u64) -> Vec<Action> {
        let Some(channel) = self.channel.as_mut() else {
            return vec![];
        };
        let active = job.min_ntime.clone().into_inner().is_some();
        if let Err(e) = channel.on_new_extended_mining_job(job) {
            warn!(?e, "job refused");
            return vec![];
        }
        if active {
            self.notify_active(false, now)
        } else {
            vec![]
        }
    }

    /// `mining.set_difficulty` for `target`, unless the miner has it
    /// already. Either way the miner mines at `target` from `now` on: vardiff
    /// is told (the pool sets the target from the hash rate vardiff asked
    /// for, at its own share rate, so it need not be vardiff's).
    fn difficulty_update(&mut self, target: &Target, now: u64) -> Vec<Action> {
        let work = ehash::work_hashes(*target) as f64;
        self.vardiff.on_difficulty(now * 1000, work);
        let diff = sv1::difficulty_of_target(&target.to_le_bytes());
        if self.difficulty_sent == Some(diff) {
            return vec![];
        }
        self.difficulty_sent = Some(diff);
        vec![Action::Sv1(sv1::set_difficulty(diff))]
    }

    /// `mining.notify` for the active job (if there is one and a chain tip).
    pub(super) fn notify_active(&mut self, clean: bool, now: u64) -> Vec<Action> {
        let Some(channel) = self.channel.as_ref() else {
            return vec![];
        };
        let (Some(job), Some(tip)) = (channel.get_active_job(), channel.get_chain_tip()) else {
            return vec![];
        };
        let prev_hash: [u8; 32] = tip.prev_hash().to_array();
        let min_ntime = job
            .job_message
            .min_ntime
            .clone()
            .into_inner()
            .unwrap_or(tip.min_ntime());
        let job = job.clone();
        let nbits = tip.nbits();
        // The job's own target (SV2: a job keeps the target it came with).
        let mut out = self.difficulty_update(&job.target, now);
        // Work at the old difficulty is worth less (or is refused): the miner
        // drops it at once when its difficulty changes.
        let clean = clean || !out.is_empty() || self.last_prev_hash != Some(prev_hash);
        let notify = self.build_notify(
            &job,
            prev_hash,
            nbits,
            min_ntime.max(now as u32),
            clean,
            min_ntime,
        );
        self.last_prev_hash = Some(prev_hash);
        self.last_notify_at = now;
        out.push(Action::Sv1(notify));
        out
    }

    fn build_notify(
        &mut self,
        job: &ExtendedJob,
        prev_hash: [u8; 32],
        nbits: u32,
        ntime: u32,
        clean: bool,
        min_ntime: u32,
    ) -> String {
        // ntime may not exceed what the channel accepts: stay at min_ntime
        // unless the clock is ahead of it (keepalive refreshes).
        let ntime = ntime.clamp(min_ntime, min_ntime.saturating_add(3600));
        let sv1_id = self.next_sv1_job;
        self.next_sv1_job += 1;
        // Older SV1 ids stay mapped (bounded): a share on a job the new chain
        // tip made stale is then answered "stale share", not "job not found".
        if self.jobs.len() == MAX_SV1_JOBS {
            self.jobs.pop_front();
        }
        self.jobs.push_back(Sv1Job {
            sv1_id,
            sv2_job_id: job.job_message.job_id,
            ntime,
        });
        let rollable = self
            .channel
            .as_ref()
            .map(|c| c.get_rollable_extranonce_size() as usize)
            .unwrap_or(0);
        let pad = rollable.saturating_sub(EXTRANONCE1_SIZE + self.extranonce2_size);
        let mut coinb1 = job.job_message.coinbase_tx_prefix.to_owned_bytes();
        coinb1.extend_from_slice(&job.extranonce_prefix);
        coinb1.extend(std::iter::repeat_n(0u8, pad));
        sv1::Notify {
            job_id: format!("{sv1_id:x}"),
            prev_hash,
            coinb1,
            coinb2: job.job_message.coinbase_tx_suffix.to_owned_bytes(),
            merkle_branch: job
                .job_message
                .merkle_path
                .iter()
                .map(|h| h.to_array())
                .collect(),
            version: job.job_message.version,
            nbits,
            ntime,
            clean_jobs: clean,
        }
        .to_line()
    }
}

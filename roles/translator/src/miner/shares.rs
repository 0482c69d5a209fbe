//! Shares: a `mining.submit` checked against the channel and sent to the
//! pool as `SubmitSharesExtended`, and the pool's answers turned into the
//! SV1 answers the miner waits for.

use serde_json::{json, Value};
use stratum_core::binary_sv2::B032Owned;
use stratum_core::channels_sv2::client::share_accounting::ShareValidationError;
use stratum_core::mining_sv2::{
    SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesSuccessOwned,
};
use stratum_core::parsers_sv2::MiningOwned;
use tracing::{debug, warn};

use super::{Action, MinerSession, MinerStat, EXTRANONCE1_SIZE};
use ::sv1::server::{self as sv1, code, Submit};

/// SV1 shares waiting for the pool's answer; beyond this the miner is told no.
pub const MAX_PENDING_SUBMITS: usize = 4096;

/// An SV1 error code and message.
type Refusal = (i64, &'static str);

fn rejection_reason(e: &ShareValidationError) -> Refusal {
    match e {
        ShareValidationError::Stale(_) => (code::JOB_NOT_FOUND, "stale share"),
        ShareValidationError::InvalidJobId(_) => (code::JOB_NOT_FOUND, "job not found"),
        ShareValidationError::DoesNotMeetTarget(_) => {
            (code::LOW_DIFFICULTY, "low difficulty share")
        }
        ShareValidationError::DuplicateShare(_) => (code::DUPLICATE_SHARE, "duplicate share"),
        ShareValidationError::VersionRollingNotAllowed(_) => {
            (code::OTHER, "version rolling not allowed")
        }
        ShareValidationError::BadExtranonceSize(_) => (code::OTHER, "bad extranonce2 size"),
        ShareValidationError::Invalid(c) if c.contains("version") => {
            (code::OTHER, "invalid version bits")
        }
        ShareValidationError::Invalid(_) => (code::OTHER, "invalid share (ntime out of range?)"),
        ShareValidationError::NoChainTip => (code::JOB_NOT_FOUND, "no work yet"),
    }
}

/// The SV1 error code for the pool's `SubmitShares.Error` code.
fn pool_error_code(reason: &str) -> i64 {
    match reason {
        "stale-share" | "invalid-job-id" => code::JOB_NOT_FOUND,
        "difficulty-too-low" => code::LOW_DIFFICULTY,
        "duplicate-share" => code::DUPLICATE_SHARE,
        _ => code::OTHER,
    }
}

impl MinerSession {
    /// `mining.submit`: checked against the channel, then sent to the pool.
    pub(super) fn on_submit(&mut self, id: Value, submit: Submit, now: u64) -> Vec<Action> {
        // Before the channel's checks, which keep the share as seen: refused
        // here, it may come again.
        if self.pending_submits.len() >= MAX_PENDING_SUBMITS {
            // A last resort while the pool is slow: logged once per episode.
            if self.backlog_refusals == 0 {
                warn!(
                    pending = self.pending_submits.len(),
                    "the pool is not answering shares fast enough: refusing new ones"
                );
            }
            self.backlog_refusals += 1;
            return self.refuse_share(&id, code::OTHER, "too many shares awaiting the pool", true);
        }
        match self.share_for(&submit) {
            Ok((share, work)) => self.forward(id, share, work, now),
            Err((code, msg)) => self.refuse(&id, code, msg),
        }
    }

    /// The SV1 answer to a share refused here or by the pool.
    pub(super) fn refuse(&mut self, id: &Value, code: i64, msg: &str) -> Vec<Action> {
        self.refuse_share(id, code, msg, false)
    }

    /// `backlogged`: refused because the pool is behind (too many shares
    /// await its answer, or it does not read).
    fn refuse_share(&mut self, id: &Value, code: i64, msg: &str, backlogged: bool) -> Vec<Action> {
        self.rejected += 1;
        vec![
            Action::Sv1(sv1::error(id, code, msg)),
            Action::Stats(MinerStat::Share {
                accepted: false,
                work: 0,
                backlogged,
            }),
        ]
    }

    fn accept(&mut self, id: &Value, work: u64) -> Vec<Action> {
        self.accepted += 1;
        vec![
            Action::Sv1(sv1::ok(id, json!(true))),
            Action::Stats(MinerStat::Share {
                accepted: true,
                work,
                backlogged: false,
            }),
        ]
    }

    /// The share the pool gets for a submit, and the work of the target of
    /// the job it was mined on, once the channel's own checks pass.
    fn share_for(&mut self, submit: &Submit) -> Result<(SubmitSharesExtendedOwned, u64), Refusal> {
        let (Some(channel), Some(channel_id)) = (self.channel.as_mut(), self.channel_id) else {
            // An authorized miner whose channel reopens (a pool reconnect)
            // mined a job of the old one: stale, not a failed login.
            return Err(match self.identity {
                Some(_) => (code::JOB_NOT_FOUND, "stale share: the channel is reopening"),
                None => (code::UNAUTHORIZED, "not authorized (no channel yet)"),
            });
        };
        let sv2_job_id = u64::from_str_radix(&submit.job_id, 16)
            .ok()
            .and_then(|j| super::sv1_job(&self.jobs, j))
            .map(|j| j.sv2_job_id)
            .ok_or((code::JOB_NOT_FOUND, "job not found"))?;
        if submit.extranonce2.len() != self.extranonce2_size {
            return Err((code::OTHER, "bad extranonce2 size"));
        }
        let (job_version, work) = channel
            .get_active_job()
            .filter(|j| j.job_message.job_id == sv2_job_id)
            .or_else(|| channel.get_past_job(sv2_job_id))
            .or_else(|| channel.get_stale_job(sv2_job_id))
            .map(|j| (j.job_message.version, ehash::work_hashes(j.target)))
            .ok_or((code::JOB_NOT_FOUND, "job not found"))?;
        let version = match (submit.version_bits, self.version_mask) {
            (None, _) => job_version,
            (Some(bits), Some(mask)) if bits & !mask == 0 => (job_version & !mask) | (bits & mask),
            (Some(_), Some(_)) => {
                return Err((code::OTHER, "version bits outside the negotiated mask"))
            }
            (Some(_), None) => return Err((code::OTHER, "version rolling not negotiated")),
        };
        let rollable = channel.get_rollable_extranonce_size() as usize;
        let pad = rollable.saturating_sub(EXTRANONCE1_SIZE + submit.extranonce2.len());
        let mut extranonce = vec![0u8; pad];
        extranonce.extend_from_slice(&self.extranonce1);
        extranonce.extend_from_slice(&submit.extranonce2);
        let share = SubmitSharesExtendedOwned {
            channel_id,
            sequence_number: self.next_sequence,
            job_id: sv2_job_id,
            nonce: submit.nonce,
            ntime: submit.ntime,
            version,
            extranonce: B032Owned::new(extranonce)
                .map_err(|_| (code::OTHER, "extranonce too long"))?,
        };
        if let Err(e) = channel.validate_share(share.clone()) {
            debug!(channel_id, ?e, "share refused before forwarding");
            return Err(rejection_reason(&e));
        }
        Ok((share, work))
    }

    /// Sends a valid share to the pool; answers the miner now, or when the
    /// pool does (`wait_for_pool`).
    fn forward(
        &mut self,
        id: Value,
        share: SubmitSharesExtendedOwned,
        work: u64,
        now: u64,
    ) -> Vec<Action> {
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.vardiff.on_share(now * 1000, work as f64);
        let forward = Action::Upstream(MiningOwned::SubmitSharesExtended(share.clone()));
        if self.config.wait_for_pool {
            self.pending_submits
                .insert(share.sequence_number, (id, work));
            return vec![forward];
        }
        let mut out = vec![forward];
        out.extend(self.accept(&id, work));
        out
    }

    /// Ends a backlog episode once the pool caught up.
    fn backlog_drained(&mut self) {
        if self.backlog_refusals > 0 && self.pending_submits.len() < MAX_PENDING_SUBMITS / 2 {
            warn!(
                refused = self.backlog_refusals,
                "the pool caught up: shares are forwarded again"
            );
            self.backlog_refusals = 0;
        }
    }

    /// The pool accepted every share up to `last_sequence_number`.
    pub(super) fn on_shares_accepted(&mut self, s: SubmitSharesSuccessOwned) -> Vec<Action> {
        if let Some(c) = self.channel.as_mut() {
            c.on_share_acknowledgement(s.new_submits_accepted_count, s.new_shares_sum);
        }
        let last = s.last_sequence_number;
        let mut done: Vec<u32> = self
            .pending_submits
            .keys()
            .copied()
            .filter(|seq| seq.wrapping_sub(last) as i32 <= 0)
            .collect();
        done.sort_unstable();
        let mut out = Vec::new();
        for seq in done {
            if let Some((id, work)) = self.pending_submits.remove(&seq) {
                out.extend(self.accept(&id, work));
            }
        }
        self.backlog_drained();
        out
    }

    /// The pool refused one share.
    pub(super) fn on_share_refused(&mut self, e: SubmitSharesErrorOwned) -> Vec<Action> {
        let reason = String::from_utf8_lossy(e.error_code.as_bytes()).to_string();
        if let Some(c) = self.channel.as_mut() {
            c.on_share_rejection(&reason);
        }
        let pending = self.pending_submits.remove(&e.sequence_number);
        self.backlog_drained();
        match pending {
            // Turned away by the translator: the pool never saw it.
            Some((id, _)) if reason == crate::upstream::POOL_NOT_READING => {
                self.refuse_share(&id, code::OTHER, "not sent: the pool is not reading", true)
            }
            Some((id, _)) => self.refuse(
                &id,
                pool_error_code(&reason),
                &format!("rejected by the pool: {reason}"),
            ),
            // Answered when sent (wait_for_pool = false): the upstream
            // task logs its turning shares away once.
            None if reason == crate::upstream::POOL_NOT_READING => vec![],
            None => {
                warn!(
                    channel_id = e.channel_id,
                    sequence_number = e.sequence_number,
                    reason,
                    "the pool refused a share already answered"
                );
                vec![]
            }
        }
    }

    /// Shares the pool will never answer (its connection is gone) are answered false.
    pub(super) fn fail_pending_submits(&mut self) -> Vec<Action> {
        let pending: Vec<Value> = self
            .pending_submits
            .drain()
            .map(|(_, (id, _))| id)
            .collect();
        pending
            .iter()
            .flat_map(|id| self.refuse(id, code::OTHER, "pool connection lost"))
            .collect()
    }
}

//! SetCustomMiningJob against the job it names: the token of a declared
//! job, the pool's current tip, and the declared coinbase and transactions,
//! field by field (SRI's error codes, so SRI's JDC understands them).
//!
//! A coinbase-only client (no DECLARE_TX_DATA) declares nothing: it sets
//! its allocated tokens directly, and the pool checks the tip and the
//! coinbase, not the transactions it never sees. A token set on one channel
//! is used: it may go on the client's other channels while it is among the
//! latest its connection set.
//!
//! One declared job may be set on several channels (a client opens one per
//! miner key): their coinbases differ only in the key commitment output,
//! which must commit to each channel's own locking key.

use ehash::LockingKey;
use stratum_core::bitcoin::consensus::deserialize;
use stratum_core::bitcoin::{Transaction, TxOut};
use stratum_core::mining_sv2::SetCustomMiningJobOwned;

use super::coinbase::outputs_digest;
use super::{parse_token, DeclaredJob, JobDeclarator, Tip, MAX_DECLARED_PER_CONNECTION};

/// How far a custom job's min_ntime may be before the time the pool's
/// template provider gave its tip, or after the pool's clock: the client's
/// template provider stamps its templates from its own clock, at its own
/// moments. (Later still, its shares would be past the two hours ahead of
/// the clock a block, and the mint's quote, may be.)
pub(super) const MIN_NTIME_SLACK_SECS: u32 = 600;

/// Why SetCustomMiningJob is refused: its error code and the logged reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomJobRefusal {
    pub code: &'static str,
    pub reason: String,
}

fn refuse(code: &'static str, reason: impl Into<String>) -> CustomJobRefusal {
    CustomJobRefusal {
        code,
        reason: reason.into(),
    }
}

impl JobDeclarator {
    /// Checks `m` (on a channel locked to `key`) against the job its token
    /// declared. Once the channel has taken it, [`Self::custom_job_set`]
    /// spends the token for that channel.
    pub fn check_custom_job(
        &mut self,
        m: &SetCustomMiningJobOwned,
        key: Option<&LockingKey>,
        now_ms: u64,
    ) -> Result<(), CustomJobRefusal> {
        self.expire(now_ms);
        let now_secs = super::secs(now_ms);
        let token = parse_token(m.token.as_bytes());
        if let Some(state) = token.and_then(|t| self.coinbase_only.get(&t)) {
            if state.set_on.contains(&m.channel_id) {
                return Err(refuse(
                    "invalid-mining-job-token",
                    "this token was set on this channel already",
                ));
            }
            let tip = self
                .tip
                .as_ref()
                .ok_or_else(|| refuse("stale-chain-tip", "the pool has no chain tip"))?;
            return check_coinbase_only(m, tip, now_secs, &self.reward_script, key);
        }
        let job = token.and_then(|t| self.declared.get(&t)).ok_or_else(|| {
            refuse(
                "invalid-mining-job-token",
                "no declared job has this token (unknown, or expired)",
            )
        })?;
        if job.set_on.contains(&m.channel_id) {
            return Err(refuse(
                "invalid-mining-job-token",
                "this job was set on this channel already",
            ));
        }
        let tip = self
            .tip
            .as_ref()
            .ok_or_else(|| refuse("stale-chain-tip", "the pool has no chain tip"))?;
        check_against(m, job, tip, now_secs, key)
    }

    /// Channel `channel_id` took a custom job of `token` that
    /// [`Self::check_custom_job`] passed: the token is spent for it.
    pub fn custom_job_set(&mut self, token: &[u8], channel_id: u32) {
        let Some(token) = parse_token(token) else {
            return;
        };
        if let Some(job) = self.declared.get_mut(&token) {
            job.set_on.insert(channel_id);
            job.used = true;
            return;
        }
        let Some(state) = self.coinbase_only.get(&token) else {
            return;
        };
        let (owner, first_set) = (state.owner, state.set_order.is_none());
        if first_set {
            self.evict_oldest_set_tokens(owner, MAX_DECLARED_PER_CONNECTION - 1);
            if let Some(owner) = self.connections.get_mut(&owner) {
                owner.allocated.remove(&token);
            }
            self.tokens_set += 1;
        }
        let order = self.tokens_set;
        if let Some(state) = self.coinbase_only.get_mut(&token) {
            state.set_on.insert(channel_id);
            state.set_order.get_or_insert(order);
        }
    }
}

fn check_against(
    m: &SetCustomMiningJobOwned,
    job: &DeclaredJob,
    tip: &Tip,
    now_secs: u32,
    key: Option<&LockingKey>,
) -> Result<(), CustomJobRefusal> {
    if job.tip_seq != tip.seq {
        return Err(refuse(
            "stale-chain-tip",
            "the job was declared on an earlier tip",
        ));
    }
    check_tip(m, tip, now_secs)?;
    check_height(m, tip)?;
    check_version(m)?;
    if m.version != job.version {
        return Err(refuse("invalid-version", "not the declared version"));
    }
    let declared = &job.coinbase;
    if m.coinbase_tx_version != declared.version {
        return Err(refuse(
            "invalid-coinbase-tx-version",
            "not the declared coinbase version",
        ));
    }
    if !declared
        .script_sig
        .as_bytes()
        .starts_with(m.coinbase_prefix.as_bytes())
    {
        return Err(refuse(
            "invalid-coinbase-prefix",
            "not the start of the declared coinbase scriptSig",
        ));
    }
    if m.coinbase_tx_input_n_sequence != declared.sequence {
        return Err(refuse(
            "invalid-coinbase-tx-input-n-sequence",
            "not the declared coinbase input sequence",
        ));
    }
    check_outputs(m, declared.outputs, key)?;
    if m.coinbase_tx_locktime != declared.lock_time {
        return Err(refuse(
            "invalid-coinbase-tx-locktime",
            "not the declared coinbase locktime",
        ));
    }
    let path: Vec<[u8; 32]> = m.merkle_path.iter().map(|h| h.to_array()).collect();
    if path != job.merkle_path {
        return Err(refuse(
            "invalid-merkle-path",
            "not the merkle path of the declared transactions",
        ));
    }
    Ok(())
}

/// The job builds on the pool's tip: its prev hash and nBits, at a time
/// neither before the tip's nor after the pool's clock (with some slack).
fn check_tip(
    m: &SetCustomMiningJobOwned,
    tip: &Tip,
    now_secs: u32,
) -> Result<(), CustomJobRefusal> {
    if m.prev_hash.to_array() != tip.prev_hash {
        return Err(refuse(
            "stale-chain-tip",
            "the job builds on a tip that is not the pool's",
        ));
    }
    if m.nbits != tip.nbits {
        return Err(refuse(
            "invalid-nbits",
            format!("nbits {:08x}, the tip's {:08x}", m.nbits, tip.nbits),
        ));
    }
    if m.min_ntime < tip.min_ntime.saturating_sub(MIN_NTIME_SLACK_SECS) {
        return Err(refuse(
            "invalid-min-ntime",
            format!(
                "min_ntime {} more than {MIN_NTIME_SLACK_SECS} s before the tip's {}",
                m.min_ntime, tip.min_ntime
            ),
        ));
    }
    // A chain whose blocks come faster than a second each runs ahead of
    // the clock: its tip's time counts as now.
    let now = now_secs.max(tip.min_ntime);
    if m.min_ntime > now.saturating_add(MIN_NTIME_SLACK_SECS) {
        return Err(refuse(
            "invalid-min-ntime",
            format!(
                "min_ntime {} more than {MIN_NTIME_SLACK_SECS} s after the pool's clock ({now_secs}) and the tip's time",
                m.min_ntime
            ),
        ));
    }
    Ok(())
}

/// The coinbase is for the height after the pool's tip (BIP34: its
/// scriptSig starts with it, without which a block on it is invalid).
fn check_height(m: &SetCustomMiningJobOwned, tip: &Tip) -> Result<(), CustomJobRefusal> {
    if !m.coinbase_prefix.as_bytes().starts_with(&tip.height_push) {
        return Err(refuse(
            "invalid-coinbase-prefix",
            "the coinbase is not for the height after the pool's tip",
        ));
    }
    Ok(())
}

/// A block's version is at least 4 (BIP 65; a version with its top bit set
/// is negative): no other header can be a block, so no share on it is paid.
fn check_version(m: &SetCustomMiningJobOwned) -> Result<(), CustomJobRefusal> {
    if (m.version as i32) < 4 {
        return Err(refuse(
            "invalid-version",
            format!("version {:#010x}: a block's is at least 4", m.version),
        ));
    }
    Ok(())
}

/// A coinbase-only job: the pool never sees its transactions (the merkle
/// path is the client's), so what it checks is the tip and the coinbase:
/// for the height after the pool's tip, paying the pool all the reward its
/// template provider does not claim, committed to the channel's key.
fn check_coinbase_only(
    m: &SetCustomMiningJobOwned,
    tip: &Tip,
    now_secs: u32,
    reward_script: &stratum_core::bitcoin::Script,
    key: Option<&LockingKey>,
) -> Result<(), CustomJobRefusal> {
    check_tip(m, tip, now_secs)?;
    check_height(m, tip)?;
    check_version(m)?;
    let outputs: Vec<TxOut> = deserialize(m.coinbase_tx_outputs.as_bytes()).map_err(|e| {
        refuse(
            "invalid-coinbase-tx-outputs",
            format!("the outputs do not decode: {e}"),
        )
    })?;
    let coinbase = Transaction {
        version: stratum_core::bitcoin::transaction::Version::TWO,
        lock_time: stratum_core::bitcoin::absolute::LockTime::ZERO,
        input: vec![],
        output: outputs,
    };
    super::coinbase::check_pays_pool(&coinbase, reward_script, &tip.required_outputs)
        .map_err(|r| refuse("invalid-coinbase-tx-outputs", r.details))?;
    check_commitments(&coinbase.output, key)
}

/// The job's outputs are the declared ones (`declared`, their digest), but
/// for key commitments: the job has exactly the channel's (a channel
/// without a key, none).
fn check_outputs(
    m: &SetCustomMiningJobOwned,
    declared: [u8; 32],
    key: Option<&LockingKey>,
) -> Result<(), CustomJobRefusal> {
    let outputs: Vec<TxOut> = deserialize(m.coinbase_tx_outputs.as_bytes()).map_err(|e| {
        refuse(
            "invalid-coinbase-tx-outputs",
            format!("the outputs do not decode: {e}"),
        )
    })?;
    if outputs_digest(&outputs) != declared {
        return Err(refuse(
            "invalid-coinbase-tx-outputs",
            "not the declared coinbase outputs",
        ));
    }
    check_commitments(&outputs, key)
}

/// The outputs commit to the channel's key exactly once (none without a key).
fn check_commitments(outputs: &[TxOut], key: Option<&LockingKey>) -> Result<(), CustomJobRefusal> {
    let commitments: Vec<&TxOut> = outputs
        .iter()
        .filter(|o| ehash::coinbase::is_key_commitment(&o.script_pubkey))
        .collect();
    let expected: Vec<TxOut> = key
        .map(ehash::coinbase::key_commitment_output)
        .into_iter()
        .collect();
    if commitments.into_iter().cloned().collect::<Vec<_>>() != expected {
        return Err(refuse(
            "invalid-coinbase-tx-outputs",
            "the outputs must commit to the channel's locking key, once",
        ));
    }
    Ok(())
}

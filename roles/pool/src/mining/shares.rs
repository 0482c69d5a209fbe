//! Shares of both kinds, one path: the channel validates, then the share is
//! answered (or left to the ehash flow to answer), published as an
//! [`AcceptedShare`], and a block it solves goes to the template provider.

use ehash::wire::str0255_truncated;
use stratum_core::bitcoin::{
    hashes::{sha256d, Hash},
    BlockHash, CompactTarget, Target,
};
use stratum_core::channels_sv2::server::share_accounting::{
    ShareValidationError, ShareValidationResult,
};
use stratum_core::mining_sv2::{
    SubmitSharesErrorOwned, SubmitSharesSuccessOwned, ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
};
use stratum_core::parsers_sv2::MiningOwned;
use stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tracing::{debug, info, warn};

use mint_quote_sv2::CoinbaseProof;

use super::channel::{Batch, ShareId, Submission, Validation};
use super::channels::REASON_SEEN_SHARES_EXHAUSTED;
use super::stats::share_refused_event;
use super::{mining, AcceptedShare, Action, ConnId, PoolCore, StatsEvent};

/// An accepted share: its hash, its header, the block it solves if it does.
struct Accepted {
    share_hash: [u8; 32],
    header: Option<[u8; 80]>,
    proof: Option<CoinbaseProof>,
    job_target: Option<Target>,
    /// Of a job sent before the channel was last renewed.
    retired: bool,
    /// The template and coinbase of the block the share solves, if it does.
    solution: Option<(Option<u64>, Vec<u8>)>,
}

/// The target a share met: its job's; or, for a block found by a hash
/// above its job's target (channels_sv2 checks the network's target first,
/// so a channel harder than the network accepts it), the network's, from
/// the header's nbits: the share is credited and quoted for what it met.
fn target_met(job_target: Target, share_hash: &[u8; 32], header: Option<&[u8; 80]>) -> Target {
    let hash = Target::from_le_bytes(*share_hash);
    if hash <= job_target {
        return job_target;
    }
    header
        .map(|h| {
            let nbits = u32::from_le_bytes([h[72], h[73], h[74], h[75]]);
            Target::from_compact(CompactTarget::from_consensus(nbits))
        })
        .filter(|network| hash <= *network)
        .unwrap_or(job_target)
}

impl PoolCore {
    /// SubmitSharesStandard / SubmitSharesExtended.
    pub(super) fn submit_share(&mut self, conn: ConnId, share: Submission) -> Vec<Action> {
        let id = share.id();
        let Some(channel) = self
            .channels
            .get_mut(&id.channel_id)
            .filter(|c| c.conn == conn)
        else {
            debug!(
                conn,
                channel_id = id.channel_id,
                "share for an unknown channel"
            );
            return self.refuse_share(conn, id);
        };
        let Some(share) = channel.inward(share) else {
            let stale = ShareValidationError::Stale(ERROR_CODE_SUBMIT_SHARES_STALE_SHARE);
            return self.share_rejected(conn, id, stale);
        };
        // None: a share of the other kind than its channel names no channel
        // it can be for.
        let Some(Validation {
            result,
            header,
            proof,
            job_target,
            retired,
        }) = channel.validate_share(share, &self.config.pool_signature)
        else {
            return self.refuse_share(conn, id);
        };
        let (share_hash, solution) = match result {
            Ok(ShareValidationResult::Valid(hash)) => (hash, None),
            Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
                (hash, Some((template_id, coinbase)))
            }
            Err(e) => return self.share_rejected(conn, id, e),
        };
        let share_hash = share_hash.to_byte_array();
        let accepted = Accepted {
            share_hash,
            job_target: job_target.map(|t| target_met(t, &share_hash, header.as_ref())),
            header,
            proof,
            retired,
            solution,
        };
        self.share_accepted(conn, id, accepted)
    }

    /// Counts a share refused for naming a channel it cannot be for.
    fn refuse_share(&mut self, conn: ConnId, id: ShareId) -> Vec<Action> {
        self.stats.shares_rejected += 1;
        vec![
            share_error(conn, id, "invalid-channel-id"),
            share_refused_event(conn, id.channel_id),
        ]
    }

    fn share_rejected(
        &mut self,
        conn: ConnId,
        id: ShareId,
        e: ShareValidationError,
    ) -> Vec<Action> {
        self.stats.shares_rejected += 1;
        let channel_id = id.channel_id;
        let code = match e {
            ShareValidationError::Invalid(c)
            | ShareValidationError::Stale(c)
            | ShareValidationError::InvalidJobId(c)
            | ShareValidationError::DoesNotMeetTarget(c)
            | ShareValidationError::VersionRollingNotAllowed(c)
            | ShareValidationError::DuplicateShare(c)
            | ShareValidationError::BadExtranonceSize(c) => c,
            ShareValidationError::InvalidCoinbase => "invalid-share",
            ShareValidationError::NoChainTip => ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
            ShareValidationError::SeenSharesBudgetExhausted => {
                // channels_sv2 stops validating and the channel could not be
                // renewed in time (no extranonce prefix was free): it must go.
                warn!(
                    conn,
                    channel_id, "seen-shares budget exhausted: closing the channel"
                );
                let mut actions = vec![share_refused_event(conn, channel_id)];
                actions.extend(self.close_by_pool(conn, channel_id, REASON_SEEN_SHARES_EXHAUSTED));
                return actions;
            }
        };
        debug!(
            conn,
            channel_id,
            seq = id.sequence_number,
            code,
            "share rejected"
        );
        vec![
            share_error(conn, id, code),
            share_refused_event(conn, channel_id),
        ]
    }

    fn share_accepted(&mut self, conn: ConnId, id: ShareId, accepted: Accepted) -> Vec<Action> {
        let (channel_id, seq) = (id.channel_id, id.sequence_number);
        self.stats.shares_accepted += 1;
        debug!(conn, channel_id, seq, "share accepted");
        let channel = self.channels.get_mut(&channel_id).expect("validated above");
        // The target the share was accepted at: its job's.
        let job_target = accepted.job_target;
        let mined_at = job_target.unwrap_or(channel.target());
        let work = ehash::work_hashes(mined_at);
        let renew = channel.on_share_accepted(self.clock.now(), work, accepted.retired);
        let mut actions = Vec::new();
        let block_found = accepted.solution.is_some();
        let due = channel.batch_share(seq, mined_at, block_found);
        if let Some(batch) = due.filter(|_| self.config.acknowledge_shares) {
            actions.push(share_success(conn, channel_id, batch));
        }
        actions.push(Action::Stats(StatsEvent::ShareSubmitted {
            conn,
            channel_id,
            accepted: true,
            work,
        }));
        let share_hash = accepted.share_hash;
        match (accepted.header, job_target) {
            (Some(header), Some(target)) => {
                debug_assert_eq!(sha256d::Hash::hash(&header).to_byte_array(), share_hash);
                actions.push(Action::Accepted(AcceptedShare {
                    connection_id: conn,
                    channel_id,
                    sequence_number: seq,
                    share_hash,
                    header,
                    target: target.to_le_bytes(),
                    amount: ehash::ehash_amount(target, self.config.unit_bits),
                    locking_key: channel.locking_key,
                    ehash: self.connection_has_ehash(conn),
                    block_found,
                    proof: accepted.proof,
                }));
            }
            _ => warn!(
                conn,
                channel_id,
                job_id = id.job_id,
                "accepted share without a known job target"
            ),
        }
        if let Some(solution) = accepted.solution {
            let header = accepted.header.expect("a block has a header");
            actions.extend(self.block_found(conn, channel_id, share_hash, header, solution));
        }
        if renew {
            actions.extend(self.renew_channel(channel_id));
        }
        actions
    }

    /// A share that solves a block: its SubmitSolution for the template
    /// provider (but for a custom job's), and the stats' event.
    fn block_found(
        &mut self,
        conn: ConnId,
        channel_id: u32,
        share_hash: [u8; 32],
        header: [u8; 80],
        (template_id, coinbase): (Option<u64>, Vec<u8>),
    ) -> Vec<Action> {
        self.stats.blocks_found += 1;
        // The height its own coinbase says (BIP 34), whoever built it.
        let found = Action::Stats(StatsEvent::BlockFound {
            channel_id,
            height: ehash::coinbase::coinbase_height(&coinbase).unwrap_or(0),
            block_hash: share_hash,
        });
        let Some(template_id) = template_id else {
            // Its coinbase and transactions are its client's, which
            // publishes it (jd-client through its template provider, and
            // to the job declarator as PushSolution).
            info!(
                conn,
                channel_id,
                hash = %BlockHash::from_byte_array(share_hash),
                "block found on a custom job: its client publishes it"
            );
            return vec![found];
        };
        info!(
            conn,
            channel_id,
            template_id,
            hash = %BlockHash::from_byte_array(share_hash),
            "block found, submitting it to the template provider"
        );
        let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let coinbase_tx = match coinbase.try_into() {
            Ok(coinbase_tx) => coinbase_tx,
            Err(e) => {
                warn!("coinbase does not fit SubmitSolution: {e:?}");
                return vec![];
            }
        };
        vec![
            Action::SubmitSolution(SubmitSolutionOwned {
                template_id,
                version: field(0),
                header_timestamp: field(68),
                header_nonce: field(76),
                coinbase_tx,
            }),
            found,
        ]
    }
}

fn share_error(conn: ConnId, id: ShareId, code: &str) -> Action {
    Action::Send(
        conn,
        mining(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
            channel_id: id.channel_id,
            sequence_number: id.sequence_number,
            error_code: str0255_truncated(code),
        })),
    )
}

fn share_success(conn: ConnId, channel_id: u32, batch: Batch) -> Action {
    Action::Send(
        conn,
        mining(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id,
            last_sequence_number: batch.last_sequence_number,
            new_submits_accepted_count: batch.accepted,
            // Whole difficulties, as the field is an integer.
            new_shares_sum: batch.work_sum as u64,
        })),
    )
}

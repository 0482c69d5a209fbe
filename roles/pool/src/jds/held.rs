//! The declared jobs and coinbase-only tokens the declarator holds: how
//! many, for how long, and which go first when there is no room.

use std::collections::{HashMap, HashSet};

use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::Wtxid;
use stratum_core::job_declaration_sv2::DeclareMiningJobSuccessOwned;
use stratum_core::parsers_sv2::JobDeclarationOwned;
use tracing::info;

use super::coinbase::DeclaredCoinbase;
use super::waiting::Pending;
use super::{declare_error, token_bytes, JdConnId, JdReply, JobDeclarator, Listed};

/// How long a declared job's token stays good for SetCustomMiningJob on a
/// first channel.
pub(super) const DECLARED_JOB_TTL_MS: u64 = 60_000;
/// A block's weight limit.
const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Declared jobs one connection holds at once (its oldest go first).
pub(super) const MAX_DECLARED_PER_CONNECTION: usize = 256;
/// Declared jobs the pool holds at once, of every connection (a few
/// hundred bytes each); when full, the oldest one not set on a channel goes.
pub(super) const MAX_DECLARED_JOBS: usize = 65_536;

/// A declared job, good for SetCustomMiningJob until it expires (one set
/// on a channel, until the tip moves: a renewed channel sets it again).
#[derive(Debug, Clone)]
pub(super) struct DeclaredJob {
    /// The connection that declared it.
    pub(super) owner: JdConnId,
    /// Its coinbase, with a zero extranonce.
    pub(super) coinbase: DeclaredCoinbase,
    /// The coinbase's merkle path among the declared transactions.
    pub(super) merkle_path: Vec<[u8; 32]>,
    pub(super) version: u32,
    pub(super) tip_seq: u64,
    pub(super) expires_ms: u64,
    /// Channels it was set on already (once each, but for a renewal).
    pub(super) set_on: HashSet<u32>,
    /// It was set on a channel: it no longer expires.
    pub(super) used: bool,
}

/// A token of a coinbase-only client.
#[derive(Debug, Default)]
pub(super) struct CoinbaseOnlyToken {
    pub(super) owner: JdConnId,
    /// Channels it was set on already (once each).
    pub(super) set_on: HashSet<u32>,
    /// Its place among the tokens first set on a channel (counted by
    /// [`JobDeclarator::tokens_set`]): from then on it no longer counts as
    /// allocated and unused, and its connection keeps the latest
    /// [`MAX_DECLARED_PER_CONNECTION`] such, as it does declared jobs.
    pub(super) set_order: Option<u64>,
}

/// A declaration whose transactions are all there: its job is declared
/// once its coinbase's merkle path is built ([`Accepted::merkle_path`],
/// outside the declarator's lock: a block's transactions take milliseconds
/// to hash) and handed to [`JobDeclarator::finish`].
#[derive(Debug, Clone)]
pub struct Accepted {
    conn: JdConnId,
    request_id: u32,
    coinbase: DeclaredCoinbase,
    version: u32,
    tip_seq: u64,
    txids: Vec<[u8; 32]>,
}

impl Accepted {
    /// The coinbase's merkle path among the declared transactions.
    pub fn merkle_path(&self) -> Vec<[u8; 32]> {
        ehash::coinbase::coinbase_merkle_path(&self.txids)
    }
}

impl JobDeclarator {
    /// Every transaction of `declared` is known or `provided`, on the
    /// current tip (a new tip drops pending declarations): accepted, if
    /// the block is not too heavy, for [`Self::finish`] to declare.
    pub(super) fn accept(
        &mut self,
        conn: JdConnId,
        declared: Pending,
        provided: &[Listed],
    ) -> JdReply {
        let request_id = declared.request_id;
        let provided: HashMap<Wtxid, &Listed> = provided.iter().map(|tx| (tx.wtxid, tx)).collect();
        let mut weight = declared.coinbase_weight;
        let mut txids = Vec::with_capacity(declared.wtxids.len());
        for wtxid in &declared.wtxids {
            let wtxid = Wtxid::from_byte_array(*wtxid);
            let known = self.known.get(&wtxid).map(|(tx, _)| tx);
            let Some(tx) = known.or_else(|| provided.get(&wtxid).copied()) else {
                return declare_error(request_id, "missing-txs", "a transaction went missing");
            };
            if tx.has_witness() && !declared.witness_committed {
                return declare_error(
                    request_id,
                    "invalid-job",
                    "a transaction has a witness and the coinbase commits to none",
                );
            }
            weight += tx.weight;
            txids.push(tx.txid);
        }
        if weight > MAX_BLOCK_WEIGHT {
            return declare_error(
                request_id,
                "invalid-job",
                &format!("the block weighs {weight}, more than {MAX_BLOCK_WEIGHT}"),
            );
        }
        JdReply {
            accepted: Some(Accepted {
                conn,
                request_id,
                coinbase: declared.coinbase,
                version: declared.version,
                tip_seq: self.tip_seq,
                txids,
            }),
            ..JdReply::default()
        }
    }

    /// Declares `accepted`'s job, its coinbase's `merkle_path` built: if
    /// its connection is still up and the tip did not move meanwhile.
    pub fn finish(
        &mut self,
        accepted: Accepted,
        merkle_path: Vec<[u8; 32]>,
        now_ms: u64,
    ) -> JdReply {
        let Accepted {
            conn,
            request_id,
            coinbase,
            version,
            tip_seq,
            txids,
        } = accepted;
        if !self.connections.contains_key(&conn) {
            return JdReply::default();
        }
        if tip_seq != self.tip_seq {
            return declare_error(request_id, "stale-chain-tip", "the tip moved meanwhile");
        }
        self.evict_oldest_beyond(conn, MAX_DECLARED_PER_CONNECTION - 1);
        if !self.room_for_a_job() {
            return declare_error(
                request_id,
                "invalid-job",
                &format!("the pool holds {MAX_DECLARED_JOBS} jobs set on channels on this tip, its most; declare again after the next block"),
            );
        }
        let token = self.new_token();
        info!(
            request_id,
            token,
            transactions = txids.len(),
            "job declared"
        );
        self.declared.insert(
            token,
            DeclaredJob {
                owner: conn,
                coinbase,
                merkle_path,
                version,
                tip_seq,
                expires_ms: now_ms + DECLARED_JOB_TTL_MS,
                set_on: HashSet::new(),
                used: false,
            },
        );
        JdReply::send(JobDeclarationOwned::DeclareMiningJobSuccess(
            DeclareMiningJobSuccessOwned {
                request_id,
                new_mining_job_token: token_bytes(token),
            },
        ))
    }

    pub(super) fn expire(&mut self, now_ms: u64) {
        self.declared
            .retain(|_, job| job.used || job.expires_ms > now_ms);
    }

    /// Whether one more declared job fits: when the pool holds its most,
    /// one of the previous tip goes (none can be set again), or else the
    /// oldest one not set on a channel.
    pub(super) fn room_for_a_job(&mut self) -> bool {
        if self.declared.len() < MAX_DECLARED_JOBS {
            return true;
        }
        let seq = self.tip_seq;
        let goes_first = |job: &DeclaredJob| (job.tip_seq == seq, job.used, job.expires_ms);
        let first = self.declared.iter().min_by_key(|(_, job)| goes_first(job));
        match first {
            Some((token, job)) if job.tip_seq != seq || !job.used => {
                let token = *token;
                self.declared.remove(&token);
                true
            }
            _ => false,
        }
    }

    /// Keeps at most `keep` of `conn`'s declared jobs, the latest.
    pub(super) fn evict_oldest_beyond(&mut self, conn: JdConnId, keep: usize) {
        let own = self.declared.iter().filter(|(_, job)| job.owner == conn);
        let own = own.map(|(token, job)| (job.expires_ms, *token));
        for token in oldest_beyond(own.collect(), keep) {
            self.declared.remove(&token);
        }
    }

    /// Keeps at most `keep` of the coinbase-only tokens `conn` has set, the
    /// latest set.
    pub(super) fn evict_oldest_set_tokens(&mut self, conn: JdConnId, keep: usize) {
        let own = self.coinbase_only.iter().filter(|(_, t)| t.owner == conn);
        let set = own.filter_map(|(token, t)| Some((t.set_order?, *token)));
        for token in oldest_beyond(set.collect(), keep) {
            self.coinbase_only.remove(&token);
        }
    }
}

/// Of `owned` (when each came, and its token), the tokens beyond the
/// `keep` latest.
fn oldest_beyond(mut owned: Vec<(u64, u64)>, keep: usize) -> Vec<u64> {
    let beyond = owned.len().saturating_sub(keep);
    owned.sort_unstable();
    owned
        .into_iter()
        .take(beyond)
        .map(|(_, token)| token)
        .collect()
}

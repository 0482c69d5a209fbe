//! Declarations waiting for the transactions the pool does not know: what
//! is asked for, how much may wait (per connection and in all), and what
//! comes of the answer.

use stratum_core::binary_sv2::Seq064KOwned;
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::job_declaration_sv2::ProvideMissingTransactionsOwned;
use stratum_core::parsers_sv2::JobDeclarationOwned;
use tracing::debug;

use super::coinbase::DeclaredCoinbase;
use super::prepared::Provided;
use super::{declare_error, JdConnId, JdConnection, JdReply, JobDeclarator, MAX_DECLARED_TXS};

/// Declarations one connection may leave waiting for transactions.
pub(super) const MAX_PENDING_PER_CONNECTION: usize = 16;
/// Transactions listed by the declarations waiting for the rest of theirs,
/// of one connection and of all (32 bytes each); with the pool's most, the
/// connection listing the most has its largest dropped for a newcomer.
pub(super) const MAX_PENDING_WTXIDS_PER_CONNECTION: usize = 2 * MAX_DECLARED_TXS;
pub(super) const MAX_PENDING_WTXIDS: usize = 1_000_000;
/// Request ids of declarations the tip dropped kept per connection, at most.
pub(super) const STALE_PENDING_KEPT: usize = 4 * MAX_PENDING_PER_CONNECTION;

/// A declaration waiting for ProvideMissingTransactions.Success.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) request_id: u32,
    pub(super) version: u32,
    pub(super) wtxids: Vec<[u8; 32]>,
    pub(super) coinbase: DeclaredCoinbase,
    pub(super) coinbase_weight: u64,
    /// The coinbase commits to the transactions' witnesses; without, none
    /// may have one.
    pub(super) witness_committed: bool,
    /// Positions in `wtxids` of the transactions the pool does not know.
    pub(super) missing: Vec<u16>,
}

/// Why a declaration waiting for its transactions was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// The tip moved.
    Tip,
    /// Other clients' declarations needed the room.
    Room,
}

impl JdConnection {
    /// Drops declaration `request_id` waiting for its transactions.
    pub(super) fn drop_pending(&mut self, request_id: u32, why: Dropped) {
        if self.pending.remove(&request_id).is_none() {
            return;
        }
        if self.stale_pending.len() == STALE_PENDING_KEPT {
            self.stale_pending.pop_front();
        }
        self.stale_pending.push_back((request_id, why));
    }

    /// Transactions its waiting declarations list.
    pub(super) fn listed(&self) -> usize {
        self.pending.values().map(|p| p.wtxids.len()).sum()
    }
}

impl JobDeclarator {
    /// Keeps a declaration until its connection provides the transactions
    /// the pool does not know, and asks for them.
    pub(super) fn ask_for_missing(&mut self, conn: JdConnId, declared: Pending) -> JdReply {
        let request_id = declared.request_id;
        if let Err(details) = self.make_room_to_wait(conn, declared.wtxids.len()) {
            return declare_error(request_id, "invalid-job", &details);
        }
        debug!(
            conn,
            request_id,
            missing = declared.missing.len(),
            "asking for missing transactions"
        );
        let ask = ProvideMissingTransactionsOwned {
            request_id,
            unknown_tx_position_list: Seq064KOwned::new(declared.missing.clone())
                .expect("at most MAX_DECLARED_TXS"),
        };
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        state.pending.insert(request_id, declared);
        JdReply::send(JobDeclarationOwned::ProvideMissingTransactions(ask))
    }

    /// Whether one more declaration of `conn`, listing `wtxids`
    /// transactions, may wait for the rest of its transactions: what waits
    /// is bounded per connection, and in all, where the connection listing
    /// the most gives way (so a few connections that never provide theirs
    /// cannot keep every other client's declarations out).
    fn make_room_to_wait(&mut self, conn: JdConnId, wtxids: usize) -> Result<(), String> {
        let own = &self.connections[&conn];
        if own.pending.len() >= MAX_PENDING_PER_CONNECTION {
            return Err(format!(
                "{MAX_PENDING_PER_CONNECTION} declarations of this connection wait for their transactions already"
            ));
        }
        if own.listed() + wtxids > MAX_PENDING_WTXIDS_PER_CONNECTION {
            return Err(format!(
                "the declarations of this connection waiting for their transactions would list more than {MAX_PENDING_WTXIDS_PER_CONNECTION}"
            ));
        }
        while self
            .connections
            .values()
            .map(JdConnection::listed)
            .sum::<usize>()
            + wtxids
            > MAX_PENDING_WTXIDS
        {
            let most = self
                .connections
                .values_mut()
                .max_by_key(|state| state.listed());
            let Some(most) = most else { break };
            let largest = most.pending.iter().max_by_key(|(_, p)| p.wtxids.len());
            let Some(id) = largest.map(|(id, _)| *id) else {
                break;
            };
            debug!(
                request_id = id,
                "a waiting declaration dropped to make room"
            );
            most.drop_pending(id, Dropped::Room);
        }
        Ok(())
    }

    /// ProvideMissingTransactions.Success: each transaction must be the
    /// one declared at its position, and not a coinbase.
    pub(super) fn provided(&mut self, conn: JdConnId, m: Provided) -> JdReply {
        let request_id = m.request_id;
        let state = self
            .connections
            .get_mut(&conn)
            .expect("checked by on_message");
        let Some(pending) = state.pending.remove(&request_id) else {
            let dropped = state
                .stale_pending
                .iter()
                .position(|(id, _)| *id == request_id);
            if let Some((_, why)) = dropped.and_then(|at| state.stale_pending.remove(at)) {
                return match why {
                    Dropped::Tip => {
                        declare_error(request_id, "stale-chain-tip", "the tip moved meanwhile")
                    }
                    Dropped::Room => declare_error(
                        request_id,
                        "invalid-job",
                        "dropped while waiting: other clients' declarations needed the room",
                    ),
                };
            }
            return JdReply::close(format!(
                "ProvideMissingTransactions.Success for request {request_id}, which asked for none"
            ));
        };
        // Pending declarations are all on the current tip: a new tip drops them.
        let given = m.transactions;
        if given.len() != pending.missing.len() {
            return declare_error(
                request_id,
                "missing-txs",
                &format!(
                    "{} transactions asked for, {} provided",
                    pending.missing.len(),
                    given.len()
                ),
            );
        }
        let wtxids = &pending.wtxids;
        let mut provided = Vec::with_capacity(given.len());
        for (position, tx) in pending.missing.iter().zip(given) {
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    return declare_error(
                        request_id,
                        "invalid-job",
                        &format!("transaction {position} does not decode: {e}"),
                    )
                }
            };
            let declared = wtxids[*position as usize];
            if tx.listed.wtxid.to_byte_array() != declared || tx.coinbase {
                return declare_error(
                    request_id,
                    "invalid-job",
                    &format!("transaction {position} is not the one declared"),
                );
            }
            provided.push(tx.listed);
        }
        self.accept(conn, pending, &provided)
    }
}

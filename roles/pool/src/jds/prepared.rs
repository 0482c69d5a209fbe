//! What a client's message yields on its own, worked out before the
//! declarator is locked: a declaration's coinbase rebuilt, its transaction
//! list and witness commitment checked; provided transactions decoded and
//! hashed. Hashing a large one takes a while, and holds up no one here.

use stratum_core::binary_sv2::Seq064KOwned;
use stratum_core::bitcoin::consensus::deserialize;
use stratum_core::bitcoin::Transaction;
use stratum_core::job_declaration_sv2::{
    DeclareMiningJobOwned, ProvideMissingTransactionsSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, JobDeclarationOwned};

use super::coinbase::{self, Refusal};
use super::{declared_wtxids, Listed};

/// A client's message, with its own work done.
#[derive(Debug)]
pub enum JdMessage {
    Declare(Declaration),
    Provided(Provided),
    /// Any other message (never one of the two above: [`prepare`] takes them).
    Other(AnyMessageOwned),
}

/// `msg` with the work it needs on its own done.
pub fn prepare(msg: AnyMessageOwned) -> JdMessage {
    match msg {
        AnyMessageOwned::JobDeclaration(JobDeclarationOwned::DeclareMiningJob(m)) => {
            JdMessage::Declare(Declaration::new(m))
        }
        AnyMessageOwned::JobDeclaration(
            JobDeclarationOwned::ProvideMissingTransactionsSuccess(m),
        ) => JdMessage::Provided(Provided::new(m)),
        other => JdMessage::Other(other),
    }
}

/// A DeclareMiningJob: its coinbase (with a zero extranonce), and its
/// transactions' wtxids with whether the coinbase commits to their
/// witnesses (its list taken out of the message, kept once).
#[derive(Debug, Clone)]
pub struct Declaration {
    pub(super) message: DeclareMiningJobOwned,
    pub(super) coinbase: Result<Transaction, Refusal>,
    pub(super) transactions: Result<(Vec<[u8; 32]>, bool), Refusal>,
}

impl Declaration {
    pub fn new(mut message: DeclareMiningJobOwned) -> Self {
        let coinbase = coinbase::rebuild(
            message.coinbase_tx_prefix.as_bytes(),
            message.coinbase_tx_suffix.as_bytes(),
        );
        let transactions = declared_wtxids(&message).and_then(|wtxids| match &coinbase {
            Ok(tx) => coinbase::check_witness_commitment(tx, &wtxids).map(|c| (wtxids, c)),
            // Refused for its coinbase first.
            Err(_) => Ok((wtxids, false)),
        });
        message.wtxid_list = Seq064KOwned::new(Vec::new()).expect("empty");
        Declaration {
            message,
            coinbase,
            transactions,
        }
    }
}

/// ProvideMissingTransactions.Success: each transaction decoded and
/// hashed, or why it does not decode.
#[derive(Debug)]
pub struct Provided {
    pub(super) request_id: u32,
    pub(super) transactions: Vec<Result<ProvidedTx, String>>,
}

#[derive(Debug)]
pub(super) struct ProvidedTx {
    pub(super) listed: Listed,
    pub(super) coinbase: bool,
}

impl Provided {
    pub fn new(m: ProvideMissingTransactionsSuccessOwned) -> Self {
        let transactions = m
            .transaction_list
            .iter()
            .map(|bytes| {
                let tx: Transaction = deserialize(bytes.as_ref()).map_err(|e| e.to_string())?;
                Ok(ProvidedTx {
                    listed: Listed::of(&tx),
                    coinbase: tx.is_coinbase(),
                })
            })
            .collect();
        Provided {
            request_id: m.request_id,
            transactions,
        }
    }
}

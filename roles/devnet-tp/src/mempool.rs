//! Transactions waiting for a block, without IO.
//!
//! Every transaction is checked against the chain's coins and the mempool's
//! own earlier transactions before it is let in, and the whole mempool is
//! checked again on every new block: what the block confirmed (or made
//! invalid) leaves, the rest stays in order, parents before children.

use std::collections::HashSet;

use stratum_core::bitcoin::{secp256k1::Secp256k1, secp256k1::VerifyOnly, Transaction, Txid};

use crate::utxo::{TxError, UtxoSet};

/// Transactions a mempool holds at most.
pub const MAX_MEMPOOL_TXS: usize = 5_000;

#[derive(Debug, Clone)]
pub struct MempoolTx {
    pub tx: Transaction,
    pub txid: Txid,
    pub fee: u64,
}

#[derive(Debug, Default)]
pub struct Mempool {
    txs: Vec<MempoolTx>,
    ids: HashSet<Txid>,
    /// The chain's coins with every mempool transaction applied.
    view: UtxoSet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("already in the mempool")]
    Duplicate,
    #[error("the mempool is full ({MAX_MEMPOOL_TXS} transactions)")]
    Full,
    #[error(transparent)]
    Invalid(#[from] TxError),
}

impl Mempool {
    /// An empty mempool on top of `chain_coins`.
    pub fn new(chain_coins: &UtxoSet) -> Self {
        Self {
            view: chain_coins.clone(),
            ..Self::default()
        }
    }

    pub fn txs(&self) -> &[MempoolTx] {
        &self.txs
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The coins a new transaction may spend: the chain's and the mempool's.
    pub fn view(&self) -> &UtxoSet {
        &self.view
    }

    /// Lets `tx` in if it can be mined at `height` after the mempool's
    /// transactions. Returns its fee.
    pub fn add(
        &mut self,
        tx: Transaction,
        height: u32,
        coinbase_maturity: u32,
        secp: &Secp256k1<VerifyOnly>,
    ) -> Result<u64, AddError> {
        let txid = tx.compute_txid();
        if self.ids.contains(&txid) {
            return Err(AddError::Duplicate);
        }
        if self.txs.len() >= MAX_MEMPOOL_TXS {
            return Err(AddError::Full);
        }
        let fee = self.view.check(&tx, height, coinbase_maturity, secp)?;
        self.view.apply(&tx, height);
        self.ids.insert(txid);
        self.txs.push(MempoolTx { tx, txid, fee });
        Ok(fee)
    }

    /// Rebuilds the mempool on a chain that moved to `chain_coins`, keeping
    /// every transaction that can still be mined at `height`. Returns how
    /// many left (confirmed by the block, or conflicting with it).
    pub fn on_new_tip(
        &mut self,
        chain_coins: &UtxoSet,
        height: u32,
        coinbase_maturity: u32,
        secp: &Secp256k1<VerifyOnly>,
    ) -> usize {
        let before = self.txs.len();
        let txs = std::mem::take(&mut self.txs);
        *self = Self::new(chain_coins);
        for entry in txs {
            let _ = self.add(entry.tx, height, coinbase_maturity, secp);
        }
        before - self.txs.len()
    }
}

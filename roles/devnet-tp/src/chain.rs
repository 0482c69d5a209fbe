//! The devnet chain and its templates, without IO.
//!
//! A template carries the mempool's transactions (see [`crate::mempool`]);
//! with a wallet, its coinbase also pays the wallet a tenth of the subsidy
//! (the faucet output) that funds them. Every block's transactions are
//! checked against the chain's coins before it is appended. A template is
//! "future" (NewTemplate with `future_template = true`) and is activated by
//! the SetNewPrevHash that follows it, exactly as sv2-tp does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stratum_core::binary_sv2::{B016MOwned, B064KOwned, Seq0255Owned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    consensus::{deserialize, serialize},
    hashes::{sha256d, Hash},
    merkle_tree,
    pow::CompactTarget,
    script::Builder,
    secp256k1::{Secp256k1, VerifyOnly},
    transaction, Amount, BlockHash, ScriptBuf, Target, Transaction, TxMerkleNode, TxOut, Txid,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataErrorOwned, RequestTransactionDataSuccessOwned,
    SetNewPrevHashOwned, SubmitSolutionOwned,
};

use crate::mempool::{AddError, Mempool};
use crate::utxo::{TxError, UtxoSet};
use crate::wallet::Wallet;

/// Transactions a template carries at most (well inside a block's weight).
pub const MAX_TEMPLATE_TXS: usize = 1_000;
/// With a wallet, each coinbase pays it `subsidy / FAUCET_DIVISOR`.
const FAUCET_DIVISOR: u64 = 10;
/// Seconds a block's timestamp may be ahead of the clock (Bitcoin's
/// MAX_FUTURE_BLOCK_TIME): one far ahead would make every later block too old.
pub const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;

/// Consensus parameters of the devnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainParams {
    pub nbits: u32,
    pub initial_subsidy_sats: u64,
    pub halving_interval: u32,
    /// Blocks before a coinbase output can be spent.
    pub coinbase_maturity: u32,
}

impl ChainParams {
    /// Coinbase value of the block at `height` (halving every `halving_interval`).
    pub fn subsidy(&self, height: u32) -> u64 {
        let halvings = height / self.halving_interval.max(1);
        if halvings >= 64 {
            0
        } else {
            self.initial_subsidy_sats >> halvings
        }
    }

    pub fn target(&self) -> Target {
        Target::from_compact(CompactTarget::from_consensus(self.nbits))
    }
}

/// One block as persisted: header, coinbase and transactions, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlock {
    pub height: u32,
    /// Block hash, big-endian hex (as block explorers show it).
    pub hash: String,
    /// The 80-byte header, hex.
    pub header: String,
    /// The serialized coinbase transaction (with witness), hex; empty for genesis.
    pub coinbase: String,
    /// The block's other transactions (with witness), hex, in block order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transactions: Vec<String>,
}

impl StoredBlock {
    fn from_parts(
        height: u32,
        header: &Header,
        coinbase: &[u8],
        transactions: &[Transaction],
    ) -> Self {
        Self {
            height,
            hash: header.block_hash().to_string(),
            header: hex::encode(serialize(header)),
            coinbase: hex::encode(coinbase),
            transactions: transactions
                .iter()
                .map(|tx| hex::encode(serialize(tx)))
                .collect(),
        }
    }

    /// The coinbase and the other transactions (genesis has none).
    fn decode_transactions(&self) -> Result<(Transaction, Vec<Transaction>), ChainError> {
        let corrupt = |what: &str, e: String| {
            ChainError::Corrupt(format!("block {}: {what}: {e}", self.height))
        };
        let decode = |what: &str, text: &str| -> Result<Transaction, ChainError> {
            let bytes = hex::decode(text).map_err(|e| corrupt(what, e.to_string()))?;
            deserialize(&bytes).map_err(|e| corrupt(what, e.to_string()))
        };
        let coinbase = decode("coinbase", &self.coinbase)?;
        let transactions = self
            .transactions
            .iter()
            .map(|tx| decode("transaction", tx))
            .collect::<Result<_, _>>()?;
        Ok((coinbase, transactions))
    }

    pub fn decode_header(&self) -> Result<Header, ChainError> {
        let bytes = hex::decode(&self.header)
            .map_err(|e| ChainError::Corrupt(format!("block {}: header: {e}", self.height)))?;
        deserialize(&bytes)
            .map_err(|e| ChainError::Corrupt(format!("block {}: header: {e}", self.height)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("stored chain is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "stored block {height} is dated {time}, more than {MAX_FUTURE_BLOCK_TIME} s after the clock ({now})"
    )]
    TooNew { height: u32, time: u32, now: u32 },
}

/// Why a SubmitSolution was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolutionError {
    #[error("unknown template id {0}")]
    UnknownTemplate(u64),
    #[error("template {0} builds on an old tip")]
    Stale(u64),
    #[error("coinbase does not deserialize: {0}")]
    MalformedCoinbase(String),
    #[error("coinbase is not a coinbase transaction")]
    NotCoinbase,
    #[error("coinbase scriptSig does not start with the template's coinbase_prefix")]
    WrongCoinbasePrefix,
    #[error("coinbase lacks the template's output {0}")]
    MissingTemplateOutput(usize),
    #[error("coinbase pays {paid} sat, more than the {allowed} sat available")]
    Overpays { paid: u64, allowed: u64 },
    #[error("header timestamp {got} is not after the tip's {tip}")]
    TimeTooOld { got: u32, tip: u32 },
    #[error(
        "header timestamp {got} is more than {MAX_FUTURE_BLOCK_TIME} s after the clock ({now})"
    )]
    TimeTooNew { got: u32, now: u32 },
    #[error("block hash {hash} does not meet the target")]
    InsufficientWork { hash: String },
    #[error("transaction {txid}: {error}")]
    InvalidTransaction { txid: Txid, error: TxError },
}

/// A solution's block, checked on the tip but not appended yet.
#[derive(Debug)]
pub struct CheckedBlock {
    header: Header,
    stored: StoredBlock,
    /// The chain's coins with the block applied.
    coins: UtxoSet,
}

impl CheckedBlock {
    pub fn stored(&self) -> &StoredBlock {
        &self.stored
    }
}

/// A block the chain accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBlock {
    pub height: u32,
    pub hash: BlockHash,
    pub stored: StoredBlock,
}

#[derive(Debug, Clone)]
struct TemplateInfo {
    prev_hash: BlockHash,
    height: u32,
    nbits: u32,
    coinbase_prefix: Vec<u8>,
    outputs: Vec<TxOut>,
    value_remaining: u64,
    transactions: Vec<Transaction>,
}

/// How many templates stay answerable (RequestTransactionData, late solutions).
const KEPT_TEMPLATES: usize = 64;

impl TemplateInfo {
    /// A solution's coinbase: one input starting with the template's
    /// prefix, every template output, and no more than the template pays.
    fn check_coinbase(&self, coinbase: &Transaction) -> Result<(), SolutionError> {
        if !coinbase.is_coinbase() || coinbase.input.len() != 1 {
            return Err(SolutionError::NotCoinbase);
        }
        if !coinbase.input[0]
            .script_sig
            .as_bytes()
            .starts_with(&self.coinbase_prefix)
        {
            return Err(SolutionError::WrongCoinbasePrefix);
        }
        for (i, out) in self.outputs.iter().enumerate() {
            if !coinbase.output.contains(out) {
                return Err(SolutionError::MissingTemplateOutput(i));
            }
        }
        let paid: u64 = coinbase
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .fold(0u64, u64::saturating_add);
        let allowed =
            self.value_remaining + self.outputs.iter().map(|o| o.value.to_sat()).sum::<u64>();
        if paid > allowed {
            return Err(SolutionError::Overpays { paid, allowed });
        }
        Ok(())
    }
}

/// The chain: blocks from genesis to tip, and the templates built on it.
#[derive(Debug)]
pub struct Chain {
    params: ChainParams,
    blocks: Vec<StoredBlock>,
    tip_header: Header,
    templates: HashMap<u64, TemplateInfo>,
    template_order: Vec<u64>,
    next_template_id: u64,
    current: Option<(NewTemplateOwned, SetNewPrevHashOwned)>,
    /// The chain's unspent outputs.
    coins: UtxoSet,
    mempool: Mempool,
    wallet: Option<Wallet>,
    secp: Secp256k1<VerifyOnly>,
}

/// The fixed genesis header of the devnet (not mined; it is never validated).
pub fn genesis_header(nbits: u32) -> Header {
    Header {
        version: Version::from_consensus(1),
        prev_blockhash: BlockHash::all_zeros(),
        merkle_root: TxMerkleNode::from_byte_array(
            sha256d::Hash::hash(b"hashpool devnet genesis").to_byte_array(),
        ),
        time: 1_700_000_000,
        bits: CompactTarget::from_consensus(nbits),
        nonce: 0,
    }
}

impl Chain {
    /// A chain from stored blocks (checked: heights, linkage, proof of work
    /// and timestamp against `now`, the unix time, of every block after
    /// genesis), or a fresh chain holding only genesis.
    /// `first_template_id` keeps template ids unique across restarts.
    pub fn load(
        params: ChainParams,
        stored: Vec<StoredBlock>,
        first_template_id: u64,
        now: u32,
    ) -> Result<Self, ChainError> {
        let blocks = if stored.is_empty() {
            let genesis = genesis_header(params.nbits);
            vec![StoredBlock::from_parts(0, &genesis, &[], &[])]
        } else {
            stored
        };
        let mut prev: Option<Header> = None;
        let mut coins = UtxoSet::default();
        for (i, block) in blocks.iter().enumerate() {
            if block.height as usize != i {
                return Err(ChainError::Corrupt(format!(
                    "block at index {i} has height {}",
                    block.height
                )));
            }
            let header = block.decode_header()?;
            if header.block_hash().to_string() != block.hash {
                return Err(ChainError::Corrupt(format!("block {i}: hash mismatch")));
            }
            if let Some(p) = prev {
                if header.prev_blockhash != p.block_hash() {
                    return Err(ChainError::Corrupt(format!("block {i} does not link")));
                }
                if !header.target().is_met_by(header.block_hash()) {
                    return Err(ChainError::Corrupt(format!("block {i}: no proof of work")));
                }
                if header.time > now.saturating_add(MAX_FUTURE_BLOCK_TIME) {
                    return Err(ChainError::TooNew {
                        height: block.height,
                        time: header.time,
                        now,
                    });
                }
                let (coinbase, transactions) = block.decode_transactions()?;
                if merkle_root(&coinbase, &transactions) != header.merkle_root {
                    return Err(ChainError::Corrupt(format!(
                        "block {i}: transactions do not match the merkle root"
                    )));
                }
                coins.apply(&coinbase, block.height);
                for tx in &transactions {
                    coins.apply(tx, block.height);
                }
            }
            prev = Some(header);
        }
        let tip_header = prev.expect("at least genesis");
        Ok(Self {
            params,
            blocks,
            tip_header,
            templates: HashMap::new(),
            template_order: Vec::new(),
            next_template_id: first_template_id.max(1),
            current: None,
            mempool: Mempool::new(&coins),
            coins,
            wallet: None,
            secp: Secp256k1::verification_only(),
        })
    }

    /// Gives the chain a wallet: templates pay it the faucet output, and
    /// [`Chain::add_wallet_transaction`] spends what it has.
    pub fn with_wallet(mut self, wallet: Wallet) -> Self {
        self.wallet = Some(wallet);
        self.current = None;
        self
    }

    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    pub fn coins(&self) -> &UtxoSet {
        &self.coins
    }

    /// Puts `tx` in the mempool if it can be mined in the next block.
    /// Returns its fee.
    pub fn add_transaction(&mut self, tx: Transaction) -> Result<u64, AddError> {
        let height = self.height() + 1;
        self.mempool
            .add(tx, height, self.params.coinbase_maturity, &self.secp)
    }

    /// The wallet spends one of its coins (confirmed and mature, or in the
    /// mempool) into the mempool. None without a wallet or a spendable coin.
    pub fn add_wallet_transaction(&mut self) -> Option<Result<Txid, AddError>> {
        let wallet = self.wallet.as_ref()?;
        let height = self.height() + 1;
        let maturity = self.params.coinbase_maturity;
        let tx = self
            .mempool
            .view()
            .iter()
            .filter(|(_, coin)| coin.output.script_pubkey == *wallet.script_pubkey())
            .filter(|(_, coin)| !coin.coinbase || height >= coin.height.saturating_add(maturity))
            .find_map(|(outpoint, coin)| wallet.spend(*outpoint, coin.output.value))?;
        let txid = tx.compute_txid();
        Some(self.add_transaction(tx).map(|_| txid))
    }

    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// Height of the tip (genesis is 0).
    pub fn height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.tip_header.block_hash()
    }

    pub fn tip_header(&self) -> &Header {
        &self.tip_header
    }

    pub fn blocks(&self) -> &[StoredBlock] {
        &self.blocks
    }

    /// The template (future) and SetNewPrevHash a client that connects now
    /// is sent: the newest template on the tip, built if there is none yet;
    /// `now` is the current unix time.
    pub fn current_template(&mut self, now: u32) -> (NewTemplateOwned, SetNewPrevHashOwned) {
        if let Some(current) = &self.current {
            return current.clone();
        }
        let built = self.build_template(now);
        self.current = Some(built.clone());
        built
    }

    /// A fresh non-future template on the current tip (a new template id,
    /// hence new jobs downstream), as a template provider sends while the
    /// tip stays: miners get fresh work, and a new target can come with it.
    /// It becomes the current template: the newest is the last one
    /// forgotten, so a client that connects later gets one still known.
    pub fn refresh_template(&mut self, now: u32) -> NewTemplateOwned {
        let built = self.build_template(now);
        let mut template = built.0.clone();
        self.current = Some(built);
        template.future_template = false;
        template
    }

    fn build_template(&mut self, now: u32) -> (NewTemplateOwned, SetNewPrevHashOwned) {
        let height = self.height() + 1;
        let template_id = self.next_template_id;
        self.next_template_id += 1;
        let coinbase_prefix = Builder::new()
            .push_int(height as i64)
            .into_script()
            .into_bytes();
        let chosen = &self.mempool.txs()[..self.mempool.len().min(MAX_TEMPLATE_TXS)];
        let transactions: Vec<Transaction> = chosen.iter().map(|entry| entry.tx.clone()).collect();
        let fees: u64 = chosen.iter().map(|entry| entry.fee).sum();
        let subsidy = self.params.subsidy(height);
        let mut outputs = Vec::new();
        let mut faucet = 0;
        if let Some(wallet) = &self.wallet {
            faucet = subsidy / FAUCET_DIVISOR;
            if faucet > 0 {
                outputs.push(TxOut {
                    value: Amount::from_sat(faucet),
                    script_pubkey: wallet.script_pubkey().clone(),
                });
            }
        }
        outputs.push(witness_commitment_output(&transactions));
        let value_remaining = subsidy + fees - faucet;
        let txids: Vec<[u8; 32]> = transactions
            .iter()
            .map(|tx| tx.compute_txid().to_byte_array())
            .collect();
        let merkle_path = ehash::coinbase::coinbase_merkle_path(&txids)
            .into_iter()
            .map(U256Owned::from)
            .collect();
        let min_time = now.max(self.tip_header.time.saturating_add(1));
        let prev_hash = self.tip_hash();

        let template = NewTemplateOwned {
            template_id,
            future_template: true,
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_prefix: coinbase_prefix
                .clone()
                .try_into()
                .expect("a height push fits B0255"),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: value_remaining,
            coinbase_tx_outputs_count: outputs.len() as u32,
            coinbase_tx_outputs: B064KOwned::new(serialize_outputs(&outputs))
                .expect("two outputs fit B064K"),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255Owned::new(merkle_path)
                .expect("a path of at most log2(MAX_TEMPLATE_TXS + 1) hashes"),
        };
        let prev = SetNewPrevHashOwned {
            template_id,
            prev_hash: U256Owned::from(prev_hash.to_byte_array()),
            header_timestamp: min_time,
            n_bits: self.params.nbits,
            target: U256Owned::from(self.params.target().to_le_bytes()),
        };
        self.templates.insert(
            template_id,
            TemplateInfo {
                prev_hash,
                height,
                nbits: self.params.nbits,
                coinbase_prefix,
                outputs,
                value_remaining,
                transactions,
            },
        );
        self.template_order.push(template_id);
        while self.template_order.len() > KEPT_TEMPLATES {
            let old = self.template_order.remove(0);
            self.templates.remove(&old);
        }
        (template, prev)
    }

    /// Rebuilds the block of a solution, checks it and appends it; `now` is
    /// the current unix time.
    pub fn submit_solution(
        &mut self,
        solution: &SubmitSolutionOwned,
        now: u32,
    ) -> Result<AcceptedBlock, SolutionError> {
        let block = self.check_solution(solution, now)?;
        Ok(self.append(block))
    }

    /// Rebuilds the block of a solution and checks it, leaving the chain as
    /// it is; `now` is the current unix time.
    pub fn check_solution(
        &self,
        solution: &SubmitSolutionOwned,
        now: u32,
    ) -> Result<CheckedBlock, SolutionError> {
        let info = self
            .templates
            .get(&solution.template_id)
            .ok_or(SolutionError::UnknownTemplate(solution.template_id))?;
        if info.prev_hash != self.tip_hash() {
            return Err(SolutionError::Stale(solution.template_id));
        }
        let coinbase_bytes = solution.coinbase_tx.to_owned_bytes();
        let coinbase: Transaction = deserialize(&coinbase_bytes)
            .map_err(|e| SolutionError::MalformedCoinbase(e.to_string()))?;
        info.check_coinbase(&coinbase)?;
        if solution.header_timestamp <= self.tip_header.time {
            return Err(SolutionError::TimeTooOld {
                got: solution.header_timestamp,
                tip: self.tip_header.time,
            });
        }
        if solution.header_timestamp > now.saturating_add(MAX_FUTURE_BLOCK_TIME) {
            return Err(SolutionError::TimeTooNew {
                got: solution.header_timestamp,
                now,
            });
        }
        let header = Header {
            version: Version::from_consensus(solution.version as i32),
            prev_blockhash: info.prev_hash,
            merkle_root: merkle_root(&coinbase, &info.transactions),
            time: solution.header_timestamp,
            bits: CompactTarget::from_consensus(info.nbits),
            nonce: solution.header_nonce,
        };
        let hash = header.block_hash();
        if !header.target().is_met_by(hash) {
            return Err(SolutionError::InsufficientWork {
                hash: hash.to_string(),
            });
        }
        // The template's transactions were valid when it was built on this
        // tip; checked again, as a node checks every block it appends.
        let mut coins = self.coins.clone();
        coins.apply(&coinbase, info.height);
        for tx in &info.transactions {
            coins
                .check(tx, info.height, self.params.coinbase_maturity, &self.secp)
                .map_err(|error| SolutionError::InvalidTransaction {
                    txid: tx.compute_txid(),
                    error,
                })?;
            coins.apply(tx, info.height);
        }
        Ok(CheckedBlock {
            header,
            stored: StoredBlock::from_parts(
                info.height,
                &header,
                &coinbase_bytes,
                &info.transactions,
            ),
            coins,
        })
    }

    /// Appends a block [`Chain::check_solution`] checked on the current tip.
    pub fn append(&mut self, block: CheckedBlock) -> AcceptedBlock {
        let CheckedBlock {
            header,
            stored,
            coins,
        } = block;
        debug_assert_eq!(header.prev_blockhash, self.tip_hash());
        let hash = header.block_hash();
        let height = stored.height;
        self.blocks.push(stored.clone());
        self.tip_header = header;
        self.current = None;
        self.coins = coins;
        self.mempool.on_new_tip(
            &self.coins,
            height + 1,
            self.params.coinbase_maturity,
            &self.secp,
        );
        // Templates on the old tip can no longer win.
        self.templates.retain(|_, t| t.prev_hash == hash);
        self.template_order
            .retain(|id| self.templates.contains_key(id));
        AcceptedBlock {
            height,
            hash,
            stored,
        }
    }

    /// RequestTransactionData: the template's transactions, serialized with
    /// their witnesses, in block order.
    pub fn transaction_data(
        &self,
        template_id: u64,
    ) -> Result<RequestTransactionDataSuccessOwned, RequestTransactionDataErrorOwned> {
        match self.templates.get(&template_id) {
            Some(info) if info.prev_hash == self.tip_hash() => {
                let transactions = info
                    .transactions
                    .iter()
                    .map(|tx| B016MOwned::new(serialize(tx)).expect("a transaction fits B016M"))
                    .collect();
                Ok(RequestTransactionDataSuccessOwned {
                    template_id,
                    // The witness reserved value of the coinbase (32 zero bytes).
                    excess_data: B064KOwned::new(vec![0u8; 32]).expect("32 bytes fit"),
                    transaction_list: Seq064KOwned::new(transactions)
                        .expect("at most MAX_TEMPLATE_TXS transactions"),
                })
            }
            Some(_) => Err(RequestTransactionDataErrorOwned {
                template_id,
                error_code: "stale-template-id".to_string().try_into().expect("short"),
            }),
            None => Err(RequestTransactionDataErrorOwned {
                template_id,
                error_code: "template-id-not-found"
                    .to_string()
                    .try_into()
                    .expect("short"),
            }),
        }
    }

    /// The id the next template would get (persisted so restarts never reuse ids).
    pub fn next_template_id(&self) -> u64 {
        self.next_template_id
    }
}

/// The BIP141 witness commitment of a block with `transactions` after its
/// coinbase, whose witness reserved value is zero.
pub fn witness_commitment_output(transactions: &[Transaction]) -> TxOut {
    let wtxids: Vec<[u8; 32]> = transactions
        .iter()
        .map(|tx| tx.compute_wtxid().to_byte_array())
        .collect();
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ehash::coinbase::witness_commitment_script(&wtxids, &[0; 32]),
    }
}

/// The merkle root of a block: its coinbase's txid, then its transactions'.
fn merkle_root(coinbase: &Transaction, transactions: &[Transaction]) -> TxMerkleNode {
    let leaves = std::iter::once(coinbase)
        .chain(transactions)
        .map(|tx| TxMerkleNode::from_byte_array(tx.compute_txid().to_byte_array()));
    merkle_tree::calculate_root(leaves).expect("at least the coinbase")
}

fn serialize_outputs(outputs: &[TxOut]) -> Vec<u8> {
    // NewTemplate carries the outputs concatenated, without a count prefix.
    outputs.iter().flat_map(serialize).collect()
}

/// A coinbase for `template` paying `payout` (used by tests and the devnet tools).
pub fn build_coinbase(
    template: &NewTemplateOwned,
    extra_script_sig: &[u8],
    payout: TxOut,
) -> Transaction {
    use stratum_core::bitcoin::{OutPoint, Sequence, TxIn, Witness};
    let mut script_sig = template.coinbase_prefix.to_owned_bytes();
    script_sig.extend_from_slice(extra_script_sig);
    let mut outputs = vec![payout];
    let mut template_outputs: &[u8] = template.coinbase_tx_outputs.as_bytes();
    for _ in 0..template.coinbase_tx_outputs_count {
        let out: TxOut =
            stratum_core::bitcoin::consensus::Decodable::consensus_decode(&mut template_outputs)
                .expect("template outputs decode");
        outputs.push(out);
    }
    Transaction {
        version: transaction::Version(template.coinbase_tx_version as i32),
        lock_time: LockTime::from_consensus(template.coinbase_tx_locktime),
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(template.coinbase_tx_input_sequence),
            witness: Witness::from(vec![vec![0u8; 32]]),
        }],
        output: outputs,
    }
}

#[cfg(test)]
pub(crate) mod tests;

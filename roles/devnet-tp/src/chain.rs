//! The devnet chain and its templates, without IO.
//!
//! Every block is empty: the coinbase is the only transaction, so the merkle
//! root is the coinbase txid. A template is "future" (NewTemplate with
//! `future_template = true`) and is activated by the SetNewPrevHash that
//! follows it, exactly as sv2-tp does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stratum_core::binary_sv2::{B064KOwned, Seq0255Owned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    consensus::{deserialize, serialize},
    hashes::{sha256d, Hash},
    pow::CompactTarget,
    script::Builder,
    transaction, Amount, BlockHash, ScriptBuf, Target, Transaction, TxMerkleNode, TxOut,
};
use stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataErrorOwned, RequestTransactionDataSuccessOwned,
    SetNewPrevHashOwned, SubmitSolutionOwned,
};

/// Consensus parameters of the devnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainParams {
    pub nbits: u32,
    pub initial_subsidy_sats: u64,
    pub halving_interval: u32,
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

/// One block as persisted: header and coinbase, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlock {
    pub height: u32,
    /// Block hash, big-endian hex (as block explorers show it).
    pub hash: String,
    /// The 80-byte header, hex.
    pub header: String,
    /// The serialized coinbase transaction (with witness), hex; empty for genesis.
    pub coinbase: String,
}

impl StoredBlock {
    fn from_parts(height: u32, header: &Header, coinbase: &[u8]) -> Self {
        Self {
            height,
            hash: header.block_hash().to_string(),
            header: hex::encode(serialize(header)),
            coinbase: hex::encode(coinbase),
        }
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
    #[error("block hash {hash} does not meet the target")]
    InsufficientWork { hash: String },
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
}

/// How many templates stay answerable (RequestTransactionData, late solutions).
const KEPT_TEMPLATES: usize = 64;

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
    /// of every block after genesis), or a fresh chain holding only genesis.
    /// `first_template_id` keeps template ids unique across restarts.
    pub fn load(
        params: ChainParams,
        stored: Vec<StoredBlock>,
        first_template_id: u64,
    ) -> Result<Self, ChainError> {
        let blocks = if stored.is_empty() {
            let genesis = genesis_header(params.nbits);
            vec![StoredBlock::from_parts(0, &genesis, &[])]
        } else {
            stored
        };
        let mut prev: Option<Header> = None;
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
        })
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

    /// The template (future) and SetNewPrevHash for the next block, built
    /// once per tip; `now` is the current unix time.
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
    pub fn refresh_template(&mut self, now: u32) -> NewTemplateOwned {
        self.current_template(now);
        let (mut template, _) = self.build_template(now);
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
        let outputs = vec![witness_commitment_output()];
        let value_remaining = self.params.subsidy(height);
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
                .expect("one output fits B064K"),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255Owned::new(Vec::new()).expect("empty path"),
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
            },
        );
        self.template_order.push(template_id);
        while self.template_order.len() > KEPT_TEMPLATES {
            let old = self.template_order.remove(0);
            self.templates.remove(&old);
        }
        (template, prev)
    }

    /// Rebuilds the block of a solution, checks it and appends it.
    pub fn submit_solution(
        &mut self,
        solution: &SubmitSolutionOwned,
    ) -> Result<AcceptedBlock, SolutionError> {
        let info = self
            .templates
            .get(&solution.template_id)
            .ok_or(SolutionError::UnknownTemplate(solution.template_id))?
            .clone();
        if info.prev_hash != self.tip_hash() {
            return Err(SolutionError::Stale(solution.template_id));
        }
        let coinbase_bytes = solution.coinbase_tx.to_owned_bytes();
        let coinbase: Transaction = deserialize(&coinbase_bytes)
            .map_err(|e| SolutionError::MalformedCoinbase(e.to_string()))?;
        if !coinbase.is_coinbase() || coinbase.input.len() != 1 {
            return Err(SolutionError::NotCoinbase);
        }
        if !coinbase.input[0]
            .script_sig
            .as_bytes()
            .starts_with(&info.coinbase_prefix)
        {
            return Err(SolutionError::WrongCoinbasePrefix);
        }
        for (i, out) in info.outputs.iter().enumerate() {
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
            info.value_remaining + info.outputs.iter().map(|o| o.value.to_sat()).sum::<u64>();
        if paid > allowed {
            return Err(SolutionError::Overpays { paid, allowed });
        }
        if solution.header_timestamp <= self.tip_header.time {
            return Err(SolutionError::TimeTooOld {
                got: solution.header_timestamp,
                tip: self.tip_header.time,
            });
        }
        // Empty block: the merkle root is the coinbase txid.
        let merkle_root = TxMerkleNode::from_byte_array(coinbase.compute_txid().to_byte_array());
        let header = Header {
            version: Version::from_consensus(solution.version as i32),
            prev_blockhash: info.prev_hash,
            merkle_root,
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
        let stored = StoredBlock::from_parts(info.height, &header, &coinbase_bytes);
        self.blocks.push(stored.clone());
        self.tip_header = header;
        self.current = None;
        // Templates on the old tip can no longer win.
        self.templates.retain(|_, t| t.prev_hash == hash);
        self.template_order
            .retain(|id| self.templates.contains_key(id));
        Ok(AcceptedBlock {
            height: info.height,
            hash,
            stored,
        })
    }

    /// RequestTransactionData: the block is empty, so the list is empty.
    pub fn transaction_data(
        &self,
        template_id: u64,
    ) -> Result<RequestTransactionDataSuccessOwned, RequestTransactionDataErrorOwned> {
        match self.templates.get(&template_id) {
            Some(info) if info.prev_hash == self.tip_hash() => {
                Ok(RequestTransactionDataSuccessOwned {
                    template_id,
                    // The witness reserved value of the coinbase (32 zero bytes).
                    excess_data: B064KOwned::new(vec![0u8; 32]).expect("32 bytes fit"),
                    transaction_list: Seq064KOwned::new(Vec::new()).expect("empty list"),
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

/// The BIP141 witness commitment of a block whose only transaction is the
/// coinbase: OP_RETURN 0xaa21a9ed || sha256d(wtxid root (zero) || reserved (zero)).
pub fn witness_commitment_output() -> TxOut {
    let commitment = sha256d::Hash::hash(&[0u8; 64]).to_byte_array();
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(&commitment);
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(script),
    }
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
mod tests {
    use super::*;

    const EASY: u32 = 0x207f_ffff; // half of all hashes meet it
    const NEVER: u32 = 0x0300_0001; // target 1

    fn params(nbits: u32) -> ChainParams {
        ChainParams {
            nbits,
            initial_subsidy_sats: 5_000_000_000,
            halving_interval: 2,
        }
    }

    fn solve(
        chain: &mut Chain,
        template: &NewTemplateOwned,
        prev: &SetNewPrevHashOwned,
    ) -> SubmitSolutionOwned {
        let payout = TxOut {
            value: Amount::from_sat(template.coinbase_tx_value_remaining),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        };
        let coinbase = build_coinbase(template, b"test", payout);
        let txid = coinbase.compute_txid();
        for nonce in 0.. {
            let header = Header {
                version: Version::from_consensus(template.version as i32),
                prev_blockhash: chain.tip_hash(),
                merkle_root: TxMerkleNode::from_byte_array(txid.to_byte_array()),
                time: prev.header_timestamp,
                bits: CompactTarget::from_consensus(prev.n_bits),
                nonce,
            };
            if header.target().is_met_by(header.block_hash()) {
                return SubmitSolutionOwned {
                    template_id: template.template_id,
                    version: template.version,
                    header_timestamp: prev.header_timestamp,
                    header_nonce: nonce,
                    coinbase_tx: serialize(&coinbase).try_into().unwrap(),
                };
            }
        }
        unreachable!()
    }

    #[test]
    fn fresh_chain_has_genesis_and_a_future_template() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        assert_eq!(chain.height(), 0);
        let (t, p) = chain.current_template(1_800_000_000);
        assert!(t.future_template);
        assert_eq!(t.template_id, p.template_id);
        assert_eq!(p.prev_hash.to_array(), chain.tip_hash().to_byte_array());
        assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000);
        // Same template until the tip moves.
        let (t2, _) = chain.current_template(1_800_000_005);
        assert_eq!(t2.template_id, t.template_id);
    }

    #[test]
    fn a_refreshed_template_is_new_work_on_the_same_tip_and_can_be_solved() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (future, prev) = chain.current_template(1_800_000_000);
        let refreshed = chain.refresh_template(1_800_000_030);
        assert!(!refreshed.future_template);
        assert!(refreshed.template_id > future.template_id);
        assert_eq!(
            refreshed.coinbase_prefix.as_bytes(),
            future.coinbase_prefix.as_bytes()
        );
        let (again, _) = chain.current_template(1_800_000_031);
        assert_eq!(
            again.template_id, future.template_id,
            "the tip's template stays"
        );
        let solution = solve(&mut chain, &refreshed, &prev);
        assert_eq!(chain.submit_solution(&solution).unwrap().height, 1);
    }

    #[test]
    fn a_solved_block_moves_the_tip_and_halves_the_subsidy() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        for expected_height in 1..=3u32 {
            let (t, p) = chain.current_template(1_800_000_000);
            let sol = solve(&mut chain, &t, &p);
            let accepted = chain.submit_solution(&sol).unwrap();
            assert_eq!(accepted.height, expected_height);
            assert_eq!(chain.height(), expected_height);
            assert_eq!(chain.tip_hash(), accepted.hash);
        }
        let (t, _) = chain.current_template(1_800_000_000);
        // height 4 with halving every 2 blocks: two halvings
        assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000 / 4);
        // The stored chain reloads.
        let blocks = chain.blocks().to_vec();
        let reloaded = Chain::load(params(EASY), blocks, 100).unwrap();
        assert_eq!(reloaded.height(), 3);
        assert_eq!(reloaded.tip_hash(), chain.tip_hash());
    }

    #[test]
    fn bad_solutions_are_refused() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (t, p) = chain.current_template(1_800_000_000);
        let good = solve(&mut chain, &t, &p);

        let mut unknown = good.clone();
        unknown.template_id = 999;
        assert_eq!(
            chain.submit_solution(&unknown),
            Err(SolutionError::UnknownTemplate(999))
        );

        let mut garbage = good.clone();
        garbage.coinbase_tx = vec![1, 2, 3].try_into().unwrap();
        assert!(matches!(
            chain.submit_solution(&garbage),
            Err(SolutionError::MalformedCoinbase(_))
        ));

        // A nonce whose header misses the (easy) target.
        let coinbase: Transaction = deserialize(good.coinbase_tx.as_bytes()).unwrap();
        let txid = coinbase.compute_txid();
        let mut weak = good.clone();
        weak.header_nonce = (0u32..)
            .find(|&nonce| {
                let header = Header {
                    version: Version::from_consensus(good.version as i32),
                    prev_blockhash: chain.tip_hash(),
                    merkle_root: TxMerkleNode::from_byte_array(txid.to_byte_array()),
                    time: good.header_timestamp,
                    bits: CompactTarget::from_consensus(EASY),
                    nonce,
                };
                !header.target().is_met_by(header.block_hash())
            })
            .unwrap();
        assert!(matches!(
            chain.submit_solution(&weak),
            Err(SolutionError::InsufficientWork { .. })
        ));
        assert_eq!(chain.height(), 0);

        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (t, p) = chain.current_template(1_800_000_000);
        let good = solve(&mut chain, &t, &p);
        chain.submit_solution(&good).unwrap();
        // The same solution again builds on an old tip.
        assert_eq!(
            chain.submit_solution(&good),
            Err(SolutionError::UnknownTemplate(good.template_id))
        );
    }

    /// A solution for template `t` whose coinbase pays `sats` to an empty script.
    fn solution_paying(
        t: &NewTemplateOwned,
        p: &SetNewPrevHashOwned,
        sats: u64,
        nonce: u32,
    ) -> SubmitSolutionOwned {
        let payout = TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: ScriptBuf::new(),
        };
        let coinbase = build_coinbase(t, b"x", payout);
        SubmitSolutionOwned {
            template_id: t.template_id,
            version: t.version,
            header_timestamp: p.header_timestamp,
            header_nonce: nonce,
            coinbase_tx: serialize(&coinbase).try_into().unwrap(),
        }
    }

    #[test]
    fn an_impossible_target_is_never_met() {
        let mut chain = Chain::load(params(NEVER), vec![], 1).unwrap();
        let (t, p) = chain.current_template(1_800_000_000);
        let sol = solution_paying(&t, &p, 1, 7);
        assert!(matches!(
            chain.submit_solution(&sol),
            Err(SolutionError::InsufficientWork { .. })
        ));
    }

    #[test]
    fn overpaying_and_foreign_coinbases_are_refused() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (t, p) = chain.current_template(1_800_000_000);
        let sol = solution_paying(&t, &p, t.coinbase_tx_value_remaining + 1, 0);
        assert!(matches!(
            chain.submit_solution(&sol),
            Err(SolutionError::Overpays { .. })
        ));
    }

    #[test]
    fn transaction_data_is_answered() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (t, _) = chain.current_template(1_800_000_000);
        let ok = chain.transaction_data(t.template_id).unwrap();
        assert!(ok.transaction_list.is_empty());
        assert!(chain.transaction_data(12345).is_err());
    }

    #[test]
    fn corrupt_stored_chains_are_refused() {
        let mut chain = Chain::load(params(EASY), vec![], 1).unwrap();
        let (t, p) = chain.current_template(1_800_000_000);
        let sol = solve(&mut chain, &t, &p);
        chain.submit_solution(&sol).unwrap();
        let mut blocks = chain.blocks().to_vec();
        blocks[1].height = 5;
        assert!(Chain::load(params(EASY), blocks, 1).is_err());
        let mut blocks = chain.blocks().to_vec();
        blocks.swap(0, 1);
        assert!(Chain::load(params(EASY), blocks, 1).is_err());
    }
}

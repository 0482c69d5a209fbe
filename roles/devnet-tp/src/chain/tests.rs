use super::*;
use crate::mempool::AddError;
use crate::utxo::TxError;
use stratum_core::bitcoin::OutPoint;

pub(crate) const EASY: u32 = 0x207f_ffff; // half of all hashes meet it
const NEVER: u32 = 0x0300_0001; // target 1
/// The clock of these tests, unix seconds.
const NOW: u32 = 1_800_000_000;

pub(crate) fn params(nbits: u32) -> ChainParams {
    ChainParams {
        nbits,
        initial_subsidy_sats: 5_000_000_000,
        halving_interval: 2,
        coinbase_maturity: 2,
    }
}

/// The header merkle root of `coinbase` in `template`'s block.
fn template_merkle_root(template: &NewTemplateOwned, coinbase: &Transaction) -> TxMerkleNode {
    let path: Vec<[u8; 32]> = template
        .merkle_path
        .iter()
        .map(|hash| hash.to_array())
        .collect();
    TxMerkleNode::from_byte_array(ehash::coinbase::merkle_root(
        coinbase.compute_txid().to_byte_array(),
        &path,
    ))
}

pub(crate) fn solve(
    chain: &mut Chain,
    template: &NewTemplateOwned,
    prev: &SetNewPrevHashOwned,
) -> SubmitSolutionOwned {
    let payout = TxOut {
        value: Amount::from_sat(template.coinbase_tx_value_remaining),
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    };
    let coinbase = build_coinbase(template, b"test", payout);
    let merkle_root = template_merkle_root(template, &coinbase);
    for nonce in 0.. {
        let header = Header {
            version: Version::from_consensus(template.version as i32),
            prev_blockhash: chain.tip_hash(),
            merkle_root,
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
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
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
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (future, prev) = chain.current_template(1_800_000_000);
    let refreshed = chain.refresh_template(1_800_000_030);
    assert!(!refreshed.future_template);
    assert!(refreshed.template_id > future.template_id);
    assert_eq!(
        refreshed.coinbase_prefix.as_bytes(),
        future.coinbase_prefix.as_bytes()
    );
    let (again, again_prev) = chain.current_template(1_800_000_031);
    assert_eq!(
        again.template_id, refreshed.template_id,
        "a client connecting now gets the newest template"
    );
    assert!(again.future_template);
    assert_eq!(again_prev.template_id, refreshed.template_id);
    let solution = solve(&mut chain, &refreshed, &prev);
    assert_eq!(chain.submit_solution(&solution, NOW).unwrap().height, 1);
}

#[test]
fn the_current_template_outlives_many_refreshes_on_one_tip() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    chain.current_template(NOW);
    let refreshes = 2 * KEPT_TEMPLATES as u32;
    for i in 1..=refreshes {
        chain.refresh_template(NOW + 30 * i);
    }
    let later = NOW + 30 * refreshes;
    let (t, p) = chain.current_template(later);
    assert!(chain.transaction_data(t.template_id).is_ok());
    let solution = solve(&mut chain, &t, &p);
    assert_eq!(chain.submit_solution(&solution, later).unwrap().height, 1);
}

/// A solution of template `t` whose header is stamped `time`.
fn solve_at(
    chain: &mut Chain,
    t: &NewTemplateOwned,
    p: &SetNewPrevHashOwned,
    time: u32,
) -> SubmitSolutionOwned {
    let mut p = p.clone();
    p.header_timestamp = time;
    solve(chain, t, &p)
}

#[test]
fn a_header_time_more_than_two_hours_ahead_of_the_clock_is_refused() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(NOW);
    for time in [NOW + MAX_FUTURE_BLOCK_TIME + 1, u32::MAX] {
        let solution = solve_at(&mut chain, &t, &p, time);
        let err = chain.submit_solution(&solution, NOW).unwrap_err();
        assert_eq!(
            err,
            SolutionError::TimeTooNew {
                got: time,
                now: NOW
            }
        );
        assert_eq!(
            err.to_string(),
            format!("header timestamp {time} is more than 7200 s after the clock ({NOW})")
        );
    }
    assert_eq!(chain.height(), 0);
    // Two hours ahead is in time, and the blocks after it are too.
    let solution = solve_at(&mut chain, &t, &p, NOW + MAX_FUTURE_BLOCK_TIME);
    chain.submit_solution(&solution, NOW).unwrap();
    let (t, p) = chain.current_template(NOW + 1);
    let solution = solve(&mut chain, &t, &p);
    assert_eq!(chain.submit_solution(&solution, NOW + 1).unwrap().height, 2);
}

#[test]
fn a_stored_block_more_than_two_hours_ahead_of_the_clock_is_refused() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(NOW);
    let solution = solve(&mut chain, &t, &p);
    chain.submit_solution(&solution, NOW).unwrap();
    let blocks = chain.blocks().to_vec();
    let clock = NOW - MAX_FUTURE_BLOCK_TIME;
    assert!(Chain::load(params(EASY), blocks.clone(), 1, clock).is_ok());
    let err = Chain::load(params(EASY), blocks, 1, clock - 1).unwrap_err();
    assert_eq!(
        err,
        ChainError::TooNew {
            height: 1,
            time: NOW,
            now: clock - 1
        }
    );
    assert!(
        err.to_string().starts_with("stored block 1 is dated"),
        "{err}"
    );
}

#[test]
fn a_solved_block_moves_the_tip_and_halves_the_subsidy() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    for expected_height in 1..=3u32 {
        let (t, p) = chain.current_template(1_800_000_000);
        let sol = solve(&mut chain, &t, &p);
        let accepted = chain.submit_solution(&sol, NOW).unwrap();
        assert_eq!(accepted.height, expected_height);
        assert_eq!(chain.height(), expected_height);
        assert_eq!(chain.tip_hash(), accepted.hash);
    }
    let (t, _) = chain.current_template(1_800_000_000);
    // height 4 with halving every 2 blocks: two halvings
    assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_000 / 4);
    // The stored chain reloads.
    let blocks = chain.blocks().to_vec();
    let reloaded = Chain::load(params(EASY), blocks, 100, NOW).unwrap();
    assert_eq!(reloaded.height(), 3);
    assert_eq!(reloaded.tip_hash(), chain.tip_hash());
}

#[test]
fn bad_solutions_are_refused() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(1_800_000_000);
    let good = solve(&mut chain, &t, &p);

    let mut unknown = good.clone();
    unknown.template_id = 999;
    assert_eq!(
        chain.submit_solution(&unknown, NOW),
        Err(SolutionError::UnknownTemplate(999))
    );

    let mut garbage = good.clone();
    garbage.coinbase_tx = vec![1, 2, 3].try_into().unwrap();
    assert!(matches!(
        chain.submit_solution(&garbage, NOW),
        Err(SolutionError::MalformedCoinbase(_))
    ));

    // A nonce whose header misses the (easy) target.
    let coinbase: Transaction = deserialize(good.coinbase_tx.as_bytes()).unwrap();
    let merkle_root = template_merkle_root(&t, &coinbase);
    let mut weak = good.clone();
    weak.header_nonce = (0u32..)
        .find(|&nonce| {
            let header = Header {
                version: Version::from_consensus(good.version as i32),
                prev_blockhash: chain.tip_hash(),
                merkle_root,
                time: good.header_timestamp,
                bits: CompactTarget::from_consensus(EASY),
                nonce,
            };
            !header.target().is_met_by(header.block_hash())
        })
        .unwrap();
    assert!(matches!(
        chain.submit_solution(&weak, NOW),
        Err(SolutionError::InsufficientWork { .. })
    ));
    assert_eq!(chain.height(), 0);

    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(1_800_000_000);
    let good = solve(&mut chain, &t, &p);
    chain.submit_solution(&good, NOW).unwrap();
    // The same solution again builds on an old tip.
    assert_eq!(
        chain.submit_solution(&good, NOW),
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
    let mut chain = Chain::load(params(NEVER), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(1_800_000_000);
    let sol = solution_paying(&t, &p, 1, 7);
    assert!(matches!(
        chain.submit_solution(&sol, NOW),
        Err(SolutionError::InsufficientWork { .. })
    ));
}

#[test]
fn overpaying_and_foreign_coinbases_are_refused() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(1_800_000_000);
    let sol = solution_paying(&t, &p, t.coinbase_tx_value_remaining + 1, 0);
    assert!(matches!(
        chain.submit_solution(&sol, NOW),
        Err(SolutionError::Overpays { .. })
    ));
}

#[test]
fn transaction_data_is_answered() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, _) = chain.current_template(1_800_000_000);
    let ok = chain.transaction_data(t.template_id).unwrap();
    assert!(ok.transaction_list.is_empty());
    assert!(chain.transaction_data(12345).is_err());
}

#[test]
fn corrupt_stored_chains_are_refused() {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW).unwrap();
    let (t, p) = chain.current_template(1_800_000_000);
    let sol = solve(&mut chain, &t, &p);
    chain.submit_solution(&sol, NOW).unwrap();
    let mut blocks = chain.blocks().to_vec();
    blocks[1].height = 5;
    assert!(Chain::load(params(EASY), blocks, 1, NOW).is_err());
    let mut blocks = chain.blocks().to_vec();
    blocks.swap(0, 1);
    assert!(Chain::load(params(EASY), blocks, 1, NOW).is_err());
}

/// A chain with a wallet, mined until the wallet has a mature coin.
fn chain_with_spendable_wallet() -> Chain {
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW)
        .unwrap()
        .with_wallet(Wallet::from_seed(b"tp"));
    // Maturity 2: the faucet of block 1 can be spent in block 3.
    for _ in 0..2 {
        assert!(
            chain.add_wallet_transaction().is_none(),
            "nothing mature yet"
        );
        let (t, p) = chain.current_template(1_800_000_000);
        let sol = solve(&mut chain, &t, &p);
        chain.submit_solution(&sol, NOW).unwrap();
    }
    chain
}

#[test]
fn with_a_wallet_every_coinbase_pays_the_faucet_a_tenth_of_the_subsidy() {
    let wallet = Wallet::from_seed(b"tp");
    let script = wallet.script_pubkey().clone();
    let mut chain = Chain::load(params(EASY), vec![], 1, NOW)
        .unwrap()
        .with_wallet(wallet);
    let (t, _) = chain.current_template(1_800_000_000);
    assert_eq!(t.coinbase_tx_outputs_count, 2);
    let faucet: TxOut = stratum_core::bitcoin::consensus::Decodable::consensus_decode(
        &mut t.coinbase_tx_outputs.as_bytes(),
    )
    .unwrap();
    assert_eq!(faucet.script_pubkey, script);
    assert_eq!(faucet.value.to_sat(), 500_000_000);
    assert_eq!(t.coinbase_tx_value_remaining, 4_500_000_000);
    assert!(t.merkle_path.is_empty(), "no transactions yet");
}

#[test]
fn wallet_transactions_fill_the_template_and_the_block_confirms_them() {
    let mut chain = chain_with_spendable_wallet();
    let txids: Vec<Txid> = (0..3)
        .map(|_| chain.add_wallet_transaction().unwrap().unwrap())
        .collect();
    assert_eq!(chain.mempool().len(), 3);

    let (t, p) = chain.current_template(1_800_000_000);
    // Height 3, one halving: 25 BTC, a tenth to the faucet, plus 3 fees.
    assert_eq!(
        t.coinbase_tx_value_remaining,
        2_500_000_000 - 250_000_000 + 3 * crate::wallet::TX_FEE_SATS
    );
    assert_eq!(t.merkle_path.len(), 2, "4 leaves: 2 levels");
    let data = chain.transaction_data(t.template_id).unwrap();
    let listed: Vec<Txid> = data
        .transaction_list
        .iter()
        .map(|tx| {
            deserialize::<Transaction>(tx.as_ref())
                .unwrap()
                .compute_txid()
        })
        .collect();
    assert_eq!(listed, txids);

    let sol = solve(&mut chain, &t, &p);
    let accepted = chain.submit_solution(&sol, NOW).unwrap();
    assert_eq!(accepted.stored.transactions.len(), 3);
    assert!(chain.mempool().is_empty(), "the block confirmed them all");
    // Their outputs are coins now, except those a later one of them spent,
    // and what they spent is not.
    let block: Vec<Transaction> = accepted
        .stored
        .transactions
        .iter()
        .map(|entry| deserialize(&hex::decode(entry).unwrap()).unwrap())
        .collect();
    let spent: std::collections::HashSet<OutPoint> = block
        .iter()
        .flat_map(|tx| tx.input.iter().map(|input| input.previous_output))
        .collect();
    for tx in &block {
        for vout in 0..tx.output.len() as u32 {
            let outpoint = OutPoint::new(tx.compute_txid(), vout);
            assert_eq!(
                chain.coins().get(&outpoint).is_some(),
                !spent.contains(&outpoint),
                "{outpoint}"
            );
        }
        assert!(chain.coins().get(&tx.input[0].previous_output).is_none());
    }

    // The stored chain reloads to the same coins, and a tampered
    // transaction list no longer matches its merkle root.
    let reloaded = Chain::load(params(EASY), chain.blocks().to_vec(), 1, NOW).unwrap();
    assert_eq!(reloaded.coins().len(), chain.coins().len());
    let mut blocks = chain.blocks().to_vec();
    blocks[3].transactions.swap(0, 1);
    assert!(matches!(
        Chain::load(params(EASY), blocks, 1, NOW),
        Err(ChainError::Corrupt(reason)) if reason.contains("merkle root")
    ));
}

#[test]
fn the_mempool_refuses_a_double_spend_and_a_forgery() {
    let mut chain = chain_with_spendable_wallet();
    let txid = chain.add_wallet_transaction().unwrap().unwrap();
    let first = chain.mempool().txs()[0].tx.clone();
    assert_eq!(first.compute_txid(), txid);
    assert_eq!(
        chain.add_transaction(first.clone()),
        Err(AddError::Duplicate)
    );

    // The same coin spent again, to another split.
    let outpoint = first.input[0].previous_output;
    let value = chain.coins().get(&outpoint).unwrap().output.value;
    let mut again = Wallet::from_seed(b"tp").spend(outpoint, value).unwrap();
    again.lock_time = LockTime::from_consensus(1);
    assert_eq!(
        chain.add_transaction(again),
        Err(AddError::Invalid(TxError::MissingInput(outpoint)))
    );

    let mut forged = first;
    forged.input[0].previous_output = OutPoint::new(txid, 0);
    forged.output[0].value = Amount::from_sat(1);
    forged.output[1].value = Amount::from_sat(1);
    assert!(matches!(
        chain.add_transaction(forged),
        Err(AddError::Invalid(TxError::BadSignature(0, _)))
    ));
    assert_eq!(chain.mempool().len(), 1);
}

#[test]
fn a_template_s_merkle_path_rebuilds_the_root_of_its_block() {
    let mut chain = chain_with_spendable_wallet();
    for n in 1..=7 {
        chain.add_wallet_transaction().unwrap().unwrap();
        let template = chain.refresh_template(1_800_000_000);
        let info = chain.templates[&template.template_id].clone();
        let coinbase = build_coinbase(
            &template,
            b"x",
            TxOut {
                value: Amount::from_sat(template.coinbase_tx_value_remaining),
                script_pubkey: ScriptBuf::new(),
            },
        );
        assert_eq!(info.transactions.len(), n);
        assert_eq!(
            template_merkle_root(&template, &coinbase),
            merkle_root(&coinbase, &info.transactions),
            "{n} transactions"
        );
    }
}

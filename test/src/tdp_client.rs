//! A template distribution client of devnet-tp (what a pool does, by hand).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use stratum_core::bitcoin::{
    block::{Header, Version},
    hashes::Hash,
    pow::CompactTarget,
    Amount, BlockHash, ScriptBuf, Transaction, TxMerkleNode, TxOut,
};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned as T};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, RequestTransactionDataOwned,
    SetNewPrevHashOwned, SubmitSolutionOwned,
};

use crate::keys::{NBITS_EASY, TP_PUBLIC_KEY, WAIT};
use crate::stack::{start_tp_with, stop_role, tp_config};
use crate::sv2_client::{Incoming, Sv2Conn};

/// Connected, set up and subscribed (CoinbaseOutputConstraints sent).
pub struct TdpClient {
    pub conn: Sv2Conn,
}

impl TdpClient {
    pub async fn connect(addr: SocketAddr) -> TdpClient {
        let mut conn = Sv2Conn::connect(addr, TP_PUBLIC_KEY)
            .await
            .expect("connects");
        conn.setup(Protocol::TemplateDistributionProtocol, 0).await;
        conn.send(AnyMessageOwned::TemplateDistribution(
            T::CoinbaseOutputConstraints(CoinbaseOutputConstraintsOwned {
                coinbase_output_max_additional_size: 100,
                coinbase_output_max_additional_sigops: 4,
            }),
        ))
        .await;
        TdpClient { conn }
    }

    /// The next NewTemplate and SetNewPrevHash.
    pub async fn template(&mut self) -> (NewTemplateOwned, SetNewPrevHashOwned) {
        let template = loop {
            if let Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(T::NewTemplate(t)))) =
                self.conn.recv().await
            {
                break t;
            }
        };
        let prev = loop {
            if let Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(T::SetNewPrevHash(p)))) =
                self.conn.recv().await
            {
                break p;
            }
        };
        (template, prev)
    }

    /// The next NewTemplate (a refresh on the same tip, or a tip's future one).
    pub async fn next_new_template(&mut self) -> NewTemplateOwned {
        loop {
            if let Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(T::NewTemplate(t)))) =
                self.conn.recv().await
            {
                return t;
            }
        }
    }

    /// The next NewTemplate with at least two transactions after the coinbase.
    pub async fn template_with_transactions(&mut self) -> NewTemplateOwned {
        loop {
            let template = self.next_new_template().await;
            if template.merkle_path.len() >= 2 {
                return template;
            }
        }
    }

    /// Solves `template` on the CPU (the target must be easy) and submits it.
    pub async fn solve_and_submit(
        &mut self,
        template: &NewTemplateOwned,
        prev: &SetNewPrevHashOwned,
    ) -> BlockHash {
        let (solution, hash) = solve(template, prev);
        self.submit(solution).await;
        hash
    }

    /// RequestTransactionData for `template_id`: its transactions, or the error code.
    pub async fn transaction_data(&mut self, template_id: u64) -> Result<Vec<Transaction>, String> {
        self.conn
            .send(AnyMessageOwned::TemplateDistribution(
                T::RequestTransactionData(RequestTransactionDataOwned { template_id }),
            ))
            .await;
        loop {
            match self.conn.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                    T::RequestTransactionDataSuccess(ok),
                ))) if ok.template_id == template_id => {
                    return Ok(roles_common::sv2::template_transactions(&ok)
                        .expect("transactions that decode"))
                }
                Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                    T::RequestTransactionDataError(e),
                ))) if e.template_id == template_id => return Err(e.error_code.as_utf8_or_hex()),
                Ok(_) => continue,
                Err(e) => panic!("template provider connection: {e}"),
            }
        }
    }

    pub async fn submit(&mut self, solution: SubmitSolutionOwned) {
        self.conn
            .send(AnyMessageOwned::TemplateDistribution(T::SubmitSolution(
                solution,
            )))
            .await;
    }
}

/// Solves `template` on the CPU (the target must be easy): the solution
/// and the hash of the block it makes.
pub fn solve(
    template: &NewTemplateOwned,
    prev: &SetNewPrevHashOwned,
) -> (SubmitSolutionOwned, BlockHash) {
    let coinbase = devnet_tp::chain::build_coinbase(
        template,
        b"tdp-test",
        TxOut {
            value: Amount::from_sat(template.coinbase_tx_value_remaining),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        },
    );
    let path: Vec<[u8; 32]> = template.merkle_path.iter().map(|h| h.to_array()).collect();
    let merkle_root = ehash::coinbase::merkle_root(coinbase.compute_txid().to_byte_array(), &path);
    let mut header = Header {
        version: Version::from_consensus(template.version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
        merkle_root: TxMerkleNode::from_byte_array(merkle_root),
        time: prev.header_timestamp,
        bits: CompactTarget::from_consensus(prev.n_bits),
        nonce: 0,
    };
    while !header.target().is_met_by(header.block_hash()) {
        header.nonce += 1;
    }
    let solution = SubmitSolutionOwned {
        template_id: template.template_id,
        version: template.version,
        header_timestamp: header.time,
        header_nonce: header.nonce,
        coinbase_tx: stratum_core::bitcoin::consensus::serialize(&coinbase)
            .try_into()
            .expect("fits"),
    };
    (solution, header.block_hash())
}

/// devnet-tp's wallet funds its mempool from the faucet output of each
/// block after one confirmation; a fresh template every second.
pub fn with_mempool(config: &mut devnet_tp::TpConfig) {
    config.coinbase_maturity = 1;
    config.mempool_tx_per_minute = 6_000;
    config.template_refresh_secs = 1;
}

/// Mines two blocks over template distribution in `dir`: the first funds
/// devnet-tp's wallet, the second carries the wallet's transactions, which
/// land in the chain as RequestTransactionData listed them.
pub async fn premine_blocks_with_transactions(dir: &Path) {
    let mut config = tp_config(dir, NBITS_EASY);
    with_mempool(&mut config);
    let (tp, shutdown) = start_tp_with(config).await;
    let mut tdp = TdpClient::connect(tp.local_addr()).await;
    let (first, prev) = tdp.template().await;
    assert_eq!(
        first.merkle_path.len(),
        0,
        "nothing to spend before block 1"
    );
    tdp.solve_and_submit(&first, &prev).await;
    let (_, prev) = tdp.template().await;
    let template = tdp.template_with_transactions().await;
    let listed = tdp.transaction_data(template.template_id).await.unwrap();
    assert!(listed.len() >= 2);
    tdp.solve_and_submit(&template, &prev).await;
    let block = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(block) = tp.block(2) {
                break block;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("block 2 lands");
    let in_block: Vec<String> = listed
        .iter()
        .map(|tx| hex::encode(stratum_core::bitcoin::consensus::serialize(tx)))
        .collect();
    assert_eq!(block.transactions, in_block);
    stop_role("devnet-tp", WAIT, &shutdown, tp.wait()).await;
}

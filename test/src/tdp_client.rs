//! A template distribution client of devnet-tp (what a pool does, by hand).

use std::net::SocketAddr;

use stratum_core::bitcoin::{
    block::{Header, Version},
    hashes::Hash,
    pow::CompactTarget,
    Amount, BlockHash, ScriptBuf, TxMerkleNode, TxOut,
};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned as T};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};

use crate::keys::TP_PUBLIC_KEY;
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
    let txid = coinbase.compute_txid();
    let mut header = Header {
        version: Version::from_consensus(template.version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
        merkle_root: TxMerkleNode::from_byte_array(txid.to_byte_array()),
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

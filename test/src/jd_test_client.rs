//! A job declaration client by hand (what roles/jd-client does): declares
//! a template at the pool's job declarator, and builds the custom job that
//! sets it on a channel.

use std::net::SocketAddr;

use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq064KOwned, U256Owned};
use stratum_core::bitcoin::consensus::{deserialize, serialize};
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use stratum_core::channels_sv2::chain_tip::ChainTip;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, DeclareMiningJobOwned, ProvideMissingTransactionsSuccessOwned,
};
use stratum_core::mining_sv2::SetCustomMiningJobOwned;
use stratum_core::parsers_sv2::{AnyMessageOwned, JobDeclarationOwned as Jd};
use stratum_core::template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

use crate::keys::POOL_PUBLIC_KEY;
use crate::sv2_client::{str0255, Incoming, Sv2Conn};

/// Extranonce bytes after a custom job's coinbase prefix (what the JDC
/// declares; the pool's channel decides the real split).
pub const DECLARED_EXTRANONCE: usize = 16;
const TAG: &str = "jd-test";

pub struct JdTestClient {
    pub conn: Sv2Conn,
    next_request_id: u32,
}

impl JdTestClient {
    /// Connected and set up in full-template mode.
    pub async fn connect(addr: SocketAddr) -> JdTestClient {
        Self::connect_with(addr, 0b1).await
    }

    /// Connected and set up in coinbase-only mode (no DECLARE_TX_DATA).
    pub async fn connect_coinbase_only(addr: SocketAddr) -> JdTestClient {
        Self::connect_with(addr, 0).await
    }

    async fn connect_with(addr: SocketAddr, flags: u32) -> JdTestClient {
        let mut conn = Sv2Conn::connect(addr, POOL_PUBLIC_KEY)
            .await
            .expect("connects");
        conn.setup(Protocol::JobDeclarationProtocol, flags).await;
        JdTestClient {
            conn,
            next_request_id: 1,
        }
    }

    async fn next(&mut self) -> Jd {
        loop {
            match self.conn.recv().await {
                Ok(Incoming::Sv2(AnyMessageOwned::JobDeclaration(m))) => return m,
                Ok(_) => continue,
                Err(e) => panic!("job declarator connection: {e}"),
            }
        }
    }

    /// A job token, and the pool's reward script every declared coinbase pays.
    pub async fn allocate(&mut self) -> (B0255Owned, ScriptBuf) {
        let (token, outputs) = self.allocate_with_outputs().await;
        (token, outputs[0].script_pubkey.clone())
    }

    /// A job token and the coinbase outputs the pool asks for with it.
    pub async fn allocate_with_outputs(&mut self) -> (B0255Owned, Vec<TxOut>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.conn
            .send(AnyMessageOwned::JobDeclaration(Jd::AllocateMiningJobToken(
                AllocateMiningJobTokenOwned {
                    user_identifier: str0255("jd-test"),
                    request_id,
                },
            )))
            .await;
        match self.next().await {
            Jd::AllocateMiningJobTokenSuccess(ok) if ok.request_id == request_id => {
                let outputs: Vec<TxOut> =
                    deserialize(ok.coinbase_outputs.as_bytes()).expect("outputs");
                (ok.mining_job_token, outputs)
            }
            other => panic!("expected AllocateMiningJobToken.Success, got {other:?}"),
        }
    }

    /// Declares `m` (whose transactions are `txs`), providing those the
    /// declarator asks for: the declared job's token, or the error code.
    pub async fn declare(
        &mut self,
        m: DeclareMiningJobOwned,
        txs: &[Transaction],
    ) -> Result<B0255Owned, String> {
        let request_id = m.request_id;
        self.conn
            .send(AnyMessageOwned::JobDeclaration(Jd::DeclareMiningJob(m)))
            .await;
        loop {
            match self.next().await {
                Jd::DeclareMiningJobSuccess(ok) if ok.request_id == request_id => {
                    return Ok(ok.new_mining_job_token)
                }
                Jd::DeclareMiningJobError(e) if e.request_id == request_id => {
                    return Err(e.error_code.as_utf8_or_hex())
                }
                Jd::ProvideMissingTransactions(ask) if ask.request_id == request_id => {
                    let list = ask
                        .unknown_tx_position_list
                        .into_inner()
                        .into_iter()
                        .map(|i| serialize(&txs[i as usize]).try_into().expect("fits"))
                        .collect();
                    self.conn
                        .send(AnyMessageOwned::JobDeclaration(
                            Jd::ProvideMissingTransactionsSuccess(
                                ProvideMissingTransactionsSuccessOwned {
                                    request_id,
                                    transaction_list: Seq064KOwned::new(list).expect("fits"),
                                },
                            ),
                        ))
                        .await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// DeclareMiningJob of `template` with `outputs` before the template's own.
pub fn declaration(
    request_id: u32,
    token: B0255Owned,
    template: &NewTemplateOwned,
    outputs: Vec<TxOut>,
    txs: &[Transaction],
) -> DeclareMiningJobOwned {
    let (prefix, suffix) = JobFactory::new(true, Some(TAG.into()), None)
        .new_coinbase_tx_prefix_and_suffix(template.clone(), outputs, DECLARED_EXTRANONCE)
        .expect("a coinbase");
    DeclareMiningJobOwned {
        request_id,
        mining_job_token: token,
        version: template.version,
        coinbase_tx_prefix: prefix.try_into().expect("fits"),
        coinbase_tx_suffix: suffix.try_into().expect("fits"),
        wtxid_list: Seq064KOwned::new(
            txs.iter()
                .map(|tx| U256Owned::from(tx.compute_wtxid().to_byte_array()))
                .collect(),
        )
        .expect("fits"),
        excess_data: B064KOwned::new(vec![0; 32]).expect("fits"),
    }
}

/// The output paying the pool a template's whole remaining value.
pub fn pool_output(template: &NewTemplateOwned, script: &ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(template.coinbase_tx_value_remaining),
        script_pubkey: script.clone(),
    }
}

/// SetCustomMiningJob of the declared job `token` on `channel_id`.
pub fn custom_job(
    channel_id: u32,
    token: B0255Owned,
    template: &NewTemplateOwned,
    prev: &SetNewPrevHashOwned,
    outputs: Vec<TxOut>,
) -> SetCustomMiningJobOwned {
    JobFactory::new(true, Some(TAG.into()), None)
        .new_custom_job(
            channel_id,
            1,
            token,
            ChainTip::new(prev.prev_hash.clone(), prev.n_bits, prev.header_timestamp),
            template.clone(),
            outputs,
            DECLARED_EXTRANONCE,
        )
        .expect("a custom job")
}

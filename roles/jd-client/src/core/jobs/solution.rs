//! Blocks found on declared jobs: published through this client's template
//! provider, and pushed to the declarator.

use stratum_core::binary_sv2::U256Owned;
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::{BlockHash, Target};
use stratum_core::job_declaration_sv2::PushSolutionOwned;
use stratum_core::mining_sv2::SubmitSharesExtendedOwned;
use stratum_core::parsers_sv2::{
    AnyMessageOwned, JobDeclarationOwned as Jd, TemplateDistributionOwned as Tdp,
};
use stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tracing::{info, warn};

use super::Jobs;
use crate::core::Action;

impl Jobs {
    /// A share on a declared job that is also a block: SubmitSolution to
    /// the template provider, PushSolution to the declarator.
    pub fn block_found(&self, share: &SubmitSharesExtendedOwned) -> Vec<Action> {
        let Some(set) = self.set.get(&(share.channel_id, share.job_id)) else {
            return vec![];
        };
        let job = &set.job;
        let extranonce = share.extranonce.as_bytes();
        let without_witness = [
            job.get_coinbase_tx_prefix_without_bip141(),
            job.get_extranonce_prefix().to_vec(),
            extranonce.to_vec(),
            job.get_coinbase_tx_suffix_without_bip141(),
        ]
        .concat();
        let path: Vec<[u8; 32]> = job.get_merkle_path().iter().map(|h| h.to_array()).collect();
        let root = ehash::coinbase::merkle_root_of(&without_witness, &path);
        let header = ehash::share::header_bytes(
            share.version,
            set.prev_hash,
            root,
            share.ntime,
            set.nbits,
            share.nonce,
        );
        let hash = ehash::share::header_hash(&header);
        let target = Target::from_compact(stratum_core::bitcoin::CompactTarget::from_consensus(
            set.nbits,
        ));
        if !target.is_met_by(BlockHash::from_byte_array(hash)) {
            return vec![];
        }
        info!(
            channel_id = share.channel_id,
            hash = %BlockHash::from_byte_array(hash),
            "block found on a declared job: submitting it to the template provider"
        );
        let coinbase = [
            job.get_coinbase_tx_prefix_with_bip141(),
            job.get_extranonce_prefix().to_vec(),
            extranonce.to_vec(),
            job.get_coinbase_tx_suffix_with_bip141(),
        ]
        .concat();
        let full_extranonce = [job.get_extranonce_prefix(), extranonce].concat();
        let mut actions = vec![];
        match coinbase.try_into() {
            Ok(coinbase_tx) => actions.push(Action::Tp(AnyMessageOwned::TemplateDistribution(
                Tdp::SubmitSolution(SubmitSolutionOwned {
                    template_id: set.template_id,
                    version: share.version,
                    header_timestamp: share.ntime,
                    header_nonce: share.nonce,
                    coinbase_tx,
                }),
            ))),
            Err(e) => warn!("the block's coinbase does not fit SubmitSolution: {e:?}"),
        }
        if let Ok(extranonce) = full_extranonce.try_into() {
            actions.push(Action::Jds(AnyMessageOwned::JobDeclaration(
                Jd::PushSolution(PushSolutionOwned {
                    extranonce,
                    prev_hash: U256Owned::from(set.prev_hash),
                    nonce: share.nonce,
                    ntime: share.ntime,
                    nbits: set.nbits,
                    version: share.version,
                }),
            )));
        }
        actions
    }
}

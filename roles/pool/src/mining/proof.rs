//! The coinbase proof of an accepted share: its coinbase (without witness)
//! and the merkle path to the header's merkle root. With it the mint checks
//! that the work was done on this pool's job for the channel's locking key
//! ([`ehash::coinbase`]).

use ehash::coinbase::coinbase_without_witness;
use mint_quote_sv2::CoinbaseProof;
use stratum_core::channels_sv2::server::jobs::{
    extended::ExtendedJob, factory::JobFactory, standard::StandardJob,
};
use tracing::warn;

/// The proof of a share on an extended job, `extranonce` the miner's part
/// (after the job's prefix).
pub(super) fn extended(job: &ExtendedJob, extranonce: &[u8]) -> CoinbaseProof {
    let mut coinbase = job.get_coinbase_tx_prefix_without_bip141();
    coinbase.extend_from_slice(job.get_extranonce_prefix());
    coinbase.extend_from_slice(extranonce);
    coinbase.extend_from_slice(&job.get_coinbase_tx_suffix_without_bip141());
    CoinbaseProof {
        coinbase,
        merkle_path: job.get_merkle_path().iter().map(|h| h.to_array()).collect(),
    }
}

/// The proof of a share on a standard job. A standard job carries only its
/// merkle root, so its coinbase is rebuilt the way channels_sv2 built it:
/// the same factory tag, the pool's outputs, the full extranonce prefix.
pub(super) fn standard(job: &StandardJob, pool_tag: &str) -> Option<CoinbaseProof> {
    let template = job.get_template().clone();
    let outputs = job.get_coinbase_outputs();
    // channels_sv2 puts the pool's outputs first, the template's after them.
    let ours = outputs.len() - (template.coinbase_tx_outputs_count as usize).min(outputs.len());
    let extranonce = job.get_extranonce_prefix();
    let merkle_path = template.merkle_path.iter().map(|h| h.to_array()).collect();
    let factory = JobFactory::new(true, Some(pool_tag.to_string()), None);
    let (prefix, suffix) = factory
        .new_coinbase_tx_prefix_and_suffix(template, outputs[..ours].to_vec(), extranonce.len())
        .inspect_err(|e| warn!("cannot rebuild a standard job's coinbase: {e:?}"))
        .ok()?;
    let coinbase = coinbase_without_witness(&[prefix, extranonce.to_vec(), suffix].concat())
        .inspect_err(|e| warn!("a standard job's rebuilt coinbase: {e}"))
        .ok()?;
    Some(CoinbaseProof {
        coinbase,
        merkle_path,
    })
}

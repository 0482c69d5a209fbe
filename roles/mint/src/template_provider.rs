//! The mint's link to its template provider: it follows the chain tips
//! (`SetNewPrevHash`) into the [`Chain`], stores them so a restarted mint
//! still knows the recent ones, and reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use cdk_common::database::mint::DynMintDatabase;
use cdk_common::database::Error;
use roles_common::sv2::{self, Incoming};
use roles_common::CancellationToken;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::CoinbaseOutputConstraintsOwned;
use tracing::{info, warn};

use crate::chain::{Chain, Tip, TipHistory};
use crate::config::ChainSettings;
use crate::service::KV_NAMESPACE;

const TIPS: (&str, &str) = ("chain", "tips");

/// The tips a previous run stored (newest first); none if there are none
/// or they are unreadable (logged: the mint then learns the chain afresh).
pub async fn load_tips(db: &DynMintDatabase) -> Result<Vec<Tip>, Error> {
    let Some(bytes) = db.kv_read(KV_NAMESPACE, TIPS.0, TIPS.1).await? else {
        return Ok(vec![]);
    };
    Ok(TipHistory::tips_from_bytes(&bytes).unwrap_or_else(|| {
        warn!("the stored chain tips are unreadable: starting from the template provider's");
        vec![]
    }))
}

/// Without forced yields inside the transaction (see
/// `io::without_forced_yields`).
async fn store_tips(db: &DynMintDatabase, history: &TipHistory) -> Result<(), Error> {
    tokio::task::unconstrained(async {
        let mut tx = db.begin_transaction().await?;
        tx.kv_write(KV_NAMESPACE, TIPS.0, TIPS.1, &history.to_bytes())
            .await?;
        tx.commit().await
    })
    .await
}

/// Follows the template provider's tips until `shutdown`.
pub async fn follow(
    settings: ChainSettings,
    chain: Arc<Chain>,
    db: DynMintDatabase,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&settings, &chain, &db) => r,
        };
        chain.lost();
        warn!(
            address = %settings.tp_address,
            "chain view: template provider link down: {reason}; shares on tips not seen yet get chain-unavailable; retrying in {backoff:?}"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: records every tip; returns why it ended.
async fn session(settings: &ChainSettings, chain: &Chain, db: &DynMintDatabase) -> String {
    // The mint builds no blocks: it asks for no coinbase room.
    let constraints = CoinbaseOutputConstraintsOwned {
        coinbase_output_max_additional_size: 0,
        coinbase_output_max_additional_sigops: 0,
    };
    let mut conn = match sv2::connect_template_provider(
        &settings.tp_address,
        settings.tp_authority_public_key,
        "chain.tp_authority_public_key",
        "mint",
        constraints,
    )
    .await
    {
        Ok(conn) => conn,
        Err(e) => return e,
    };
    info!(address = %settings.tp_address, "chain view: following the template provider");
    loop {
        let prev = match conn.reader.recv().await {
            Err(e) => return e.to_string(),
            Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::SetNewPrevHash(p),
            ))) => p,
            Ok(_) => continue,
        };
        let tip = Tip {
            prev_hash: prev.prev_hash.to_array(),
            nbits: prev.n_bits,
            time: prev.header_timestamp,
        };
        let Some(history) = chain.record(tip) else {
            continue;
        };
        info!(
            prev_hash = %ehash::share::hex_be(&tip.prev_hash),
            nbits = format_args!("{:#010x}", tip.nbits),
            "chain view: new tip"
        );
        if let Err(e) = store_tips(db, &history).await {
            warn!("chain view: cannot store the tips: {e}");
        }
    }
}

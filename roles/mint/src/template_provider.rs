//! The mint's link to its template provider: it follows the chain tips
//! (`SetNewPrevHash`, with the height of the template each activates) into
//! the [`Chain`], stores them so a restarted mint still knows the recent
//! ones, and reconnects with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use cdk_common::database::mint::DynMintDatabase;
use cdk_common::database::Error;
use roles_common::backoff::Backoff;
use roles_common::sv2::{self, Incoming};
use roles_common::CancellationToken;
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;
use stratum_core::parsers_sv2::{AnyMessageOwned, TemplateDistributionOwned};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, SetNewPrevHashOwned,
};
use tracing::{info, warn};

use crate::chain::stored::{self, TipLayout};
use crate::chain::{Chain, KeptTip, Recorded, Tip, TipHistory};
use crate::config::ChainSettings;
use crate::service::KV_NAMESPACE;

/// Where the tips are stored, and where earlier mints stored them (read
/// until the first tip is stored here), newest layout first.
const TIPS: (&str, &str) = ("chain", "tips_with_pools");
const EARLIER_TIPS: [((&str, &str), TipLayout); 2] = [
    (("chain", "tips_with_heights"), TipLayout::WithoutPools),
    (("chain", "tips"), TipLayout::WithoutHeights),
];
/// Future templates whose height a SetNewPrevHash may ask for.
const KEPT_TEMPLATES: usize = 16;

/// The tips a previous run stored (newest first), with the bits of the
/// `pools` of `[[pools]]`; none if there are none or they are unreadable
/// (logged: the mint then learns the chain afresh).
pub async fn load_tips(
    db: &DynMintDatabase,
    pools: &[XOnlyPublicKey],
) -> Result<Vec<KeptTip>, Error> {
    let places = std::iter::once((TIPS, TipLayout::Current)).chain(EARLIER_TIPS);
    for ((namespace, key), layout) in places {
        if let Some(bytes) = db.kv_read(KV_NAMESPACE, namespace, key).await? {
            return Ok(
                stored::tips_from_bytes(&bytes, layout, pools).unwrap_or_else(|| {
                    warn!(
                    "the stored chain tips are unreadable: starting from the template provider's"
                );
                    vec![]
                }),
            );
        }
    }
    Ok(vec![])
}

/// Stores `history`, with the pools other mint processes of a cluster
/// (sharing the database) stored as quoted before the same tips; what
/// they stored. Without forced yields inside the transaction (see
/// `io::without_forced_yields`).
async fn store_tips(
    db: &DynMintDatabase,
    history: &TipHistory,
    pools: &[XOnlyPublicKey],
) -> Result<Vec<KeptTip>, Error> {
    tokio::task::unconstrained(async {
        let mut tx = db.begin_transaction().await?;
        let stored = tx.kv_read(KV_NAMESPACE, TIPS.0, TIPS.1).await?;
        let others = stored
            .and_then(|bytes| stored::tips_from_bytes(&bytes, TipLayout::Current, pools))
            .unwrap_or_default();
        let mut merged = history.clone();
        merged.absorb(&others);
        let bytes = stored::to_bytes(&merged, pools);
        tx.kv_write(KV_NAMESPACE, TIPS.0, TIPS.1, &bytes).await?;
        tx.commit().await?;
        Ok(others)
    })
    .await
}

/// Follows the template provider's tips until `shutdown`.
/// `pools` are the keys of `[[pools]]`, whose bits the tips carry.
pub async fn follow(
    settings: ChainSettings,
    pools: Vec<XOnlyPublicKey>,
    chain: Arc<Chain>,
    db: DynMintDatabase,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut up = None;
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&settings, &pools, &chain, &db, &mut up) => r,
        };
        chain.lost();
        let (retry_in, _) = backoff.after(up);
        warn!(
            address = %settings.tp_address,
            "chain view: template provider link down: {reason}; shares on tips not seen yet get chain-unavailable; retrying in {retry_in:?}"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// One connection: records every tip; returns why it ended. `up`: when
/// it came up, if it did.
async fn session(
    settings: &ChainSettings,
    pools: &[XOnlyPublicKey],
    chain: &Chain,
    db: &DynMintDatabase,
    up: &mut Option<Instant>,
) -> String {
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
    *up = Some(Instant::now());
    info!(address = %settings.tp_address, "chain view: following the template provider");
    let mut heights = TemplateHeights::default();
    loop {
        let prev = match conn.reader.recv().await {
            Err(e) => return e.to_string(),
            Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::NewTemplate(t),
            ))) => {
                heights.record(&t);
                continue;
            }
            Ok(Incoming::Sv2(AnyMessageOwned::TemplateDistribution(
                TemplateDistributionOwned::SetNewPrevHash(p),
            ))) => p,
            Ok(_) => continue,
        };
        let tip = heights.tip(&prev);
        let Some((recorded, history)) = chain.record(tip) else {
            continue;
        };
        if recorded == Recorded::New {
            let quoted_for = history.tips().next().map_or(0, |kept| kept.quoted_for.0);
            info!(
                prev_hash = %ehash::share::hex_be(&tip.prev_hash),
                nbits = format_args!("{:#010x}", tip.nbits),
                height = tip.height,
                quoted_for = format_args!("{quoted_for:#x}"),
                "chain view: new tip (quoted_for: the pools, by their bit in [[pools]], that had a share quoted since the tip before)"
            );
        }
        match store_tips(db, &history, pools).await {
            Ok(others) => chain.absorb(&others),
            Err(e) => warn!("chain view: cannot store the tips: {e}"),
        }
    }
}

/// The heights of the provider's latest templates, for the tip a
/// SetNewPrevHash makes of the (future) template it activates.
#[derive(Debug, Default)]
struct TemplateHeights {
    /// (future template id, its coinbase's BIP 34 height), oldest first.
    latest: VecDeque<(u64, Option<u32>)>,
}

impl TemplateHeights {
    /// Keeps a future template's height: only those can be activated.
    fn record(&mut self, template: &NewTemplateOwned) {
        if !template.future_template {
            return;
        }
        if self.latest.len() == KEPT_TEMPLATES {
            self.latest.pop_front();
        }
        let height = ehash::coinbase::bip34_height(template.coinbase_prefix.as_bytes());
        self.latest.push_back((template.template_id, height));
    }

    fn tip(&self, prev: &SetNewPrevHashOwned) -> Tip {
        let height = self
            .latest
            .iter()
            .rev()
            .find(|(id, _)| *id == prev.template_id)
            .and_then(|(_, height)| *height);
        Tip {
            prev_hash: prev.prev_hash.to_array(),
            nbits: prev.n_bits,
            time: prev.header_timestamp,
            height,
        }
    }
}

#[cfg(test)]
mod tests {
    use stratum_core::binary_sv2::{B064KOwned, Seq0255Owned};

    use super::*;
    use crate::chain::stored::test_pool_key as pool_key;
    use crate::chain::Pools;

    fn template(template_id: u64, coinbase_prefix: Vec<u8>) -> NewTemplateOwned {
        NewTemplateOwned {
            template_id,
            future_template: true,
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_prefix: coinbase_prefix.try_into().unwrap(),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: 5_000_000_000,
            coinbase_tx_outputs_count: 0,
            coinbase_tx_outputs: B064KOwned::new(Vec::new()).unwrap(),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255Owned::new(Vec::new()).unwrap(),
        }
    }

    fn prev(template_id: u64) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            template_id,
            prev_hash: [7; 32].into(),
            header_timestamp: 1_800_000_000,
            n_bits: 0x1d00_ffff,
            target: [0; 32].into(),
        }
    }

    /// A mint database in a file of a fresh directory (removed with it).
    async fn database() -> (tempfile::TempDir, DynMintDatabase) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mint.sqlite");
        let db = cdk_sqlite::MintSqliteDatabase::new(path.to_str().unwrap())
            .await
            .unwrap();
        (dir, Arc::new(db))
    }

    #[tokio::test]
    async fn tips_earlier_mints_stored_load_until_tips_are_stored_anew() {
        let (_dir, db) = database().await;
        assert_eq!(load_tips(&db, &[]).await.unwrap(), vec![]);
        let write = |(namespace, key): (&'static str, &'static str), bytes: Vec<u8>| {
            let db = db.clone();
            async move {
                let mut tx = db.begin_transaction().await.unwrap();
                tx.kv_write(KV_NAMESPACE, namespace, key, &bytes)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        };
        let tip = TemplateHeights::default().tip(&prev(1));
        let aging = |tip| KeptTip {
            tip,
            quoted_for: Pools::ALL,
        };
        // Prev hash, nbits, time: as mints stored a tip before heights.
        let mut stored = tip.prev_hash.to_vec();
        stored.extend_from_slice(&tip.nbits.to_le_bytes());
        stored.extend_from_slice(&tip.time.to_le_bytes());
        write(EARLIER_TIPS[1].0, stored.clone()).await;
        assert_eq!(load_tips(&db, &[]).await.unwrap(), vec![aging(tip)]);

        // Then with a height, before tips said which pools they aged for: all.
        let with_height = Tip {
            height: Some(840_000),
            ..tip
        };
        stored.extend_from_slice(&840_000u32.to_le_bytes());
        write(EARLIER_TIPS[0].0, stored).await;
        assert_eq!(load_tips(&db, &[]).await.unwrap(), vec![aging(with_height)]);

        // Stored with the first and third of three pools; read back where
        // they are listed now.
        let pools = [pool_key(1), pool_key(2), pool_key(3)];
        let for_two = KeptTip {
            tip: with_height,
            quoted_for: Pools(0b101),
        };
        store_tips(&db, &TipHistory::new(6, [for_two]), &pools)
            .await
            .unwrap();
        let loaded = |pools: Vec<XOnlyPublicKey>| {
            let db = db.clone();
            async move { load_tips(&db, &pools).await.unwrap()[0].quoted_for }
        };
        assert_eq!(loaded(pools.to_vec()).await, Pools(0b101));
        assert_eq!(loaded(vec![pool_key(3), pool_key(1)]).await, Pools(0b11));
        assert_eq!(loaded(vec![pool_key(2), pool_key(4)]).await, Pools::NONE);
    }

    #[tokio::test]
    async fn mint_processes_sharing_a_database_count_the_pools_each_other_quoted() {
        let (_dir, db) = database().await;
        let pools = [pool_key(1), pool_key(2)];
        let kept = |n: u8, bits| KeptTip {
            tip: Tip {
                prev_hash: [n; 32],
                nbits: 0x1d00_ffff,
                time: 1_800_000_000,
                height: Some(840_000 + u32::from(n)),
            },
            quoted_for: Pools(bits),
        };
        // Before tip 2, one process quoted the first pool's shares, the
        // other the second's.
        let one = TipHistory::new(6, [kept(2, 0b01), kept(1, 0b00)]);
        let other = TipHistory::new(6, [kept(2, 0b10), kept(1, 0b11)]);
        store_tips(&db, &one, &pools).await.unwrap();
        let by_the_first = store_tips(&db, &other, &pools).await.unwrap();
        assert_eq!(by_the_first, vec![kept(2, 0b01), kept(1, 0b00)]);
        let stored = TipHistory::new(6, load_tips(&db, &pools).await.unwrap());
        assert_eq!(stored.quoted_for_each(), [Pools(0b11), Pools(0b11)]);
        let chain = Chain::new(other, std::time::Duration::from_secs(1));
        chain.absorb(&by_the_first);
        let state = chain.state();
        assert_eq!(state.history.quoted_for_each(), [Pools(0b11), Pools(0b11)]);
    }

    #[test]
    fn a_tip_has_the_height_of_the_template_it_activates() {
        let mut heights = TemplateHeights::default();
        heights.record(&template(1, vec![0x03, 0x40, 0xd1, 0x0c]));
        heights.record(&template(2, vec![0x03, 0x41, 0xd1, 0x0c]));
        assert_eq!(heights.tip(&prev(1)).height, Some(840_000));
        let tip = heights.tip(&prev(2));
        assert_eq!(
            tip,
            Tip {
                prev_hash: [7; 32],
                nbits: 0x1d00_ffff,
                time: 1_800_000_000,
                height: Some(840_001),
            }
        );
        // A template never seen, one forgotten, and one with no height.
        assert_eq!(heights.tip(&prev(99)).height, None);
        for id in 3..3 + KEPT_TEMPLATES as u64 {
            heights.record(&template(id, vec![0x51]));
        }
        assert_eq!(heights.tip(&prev(2)).height, None);
        heights.record(&template(100, vec![0x6a]));
        assert_eq!(heights.tip(&prev(100)).height, None);
        // A template for the current tip is never activated: not kept.
        heights.record(&template(101, vec![0x51]));
        heights.record(&NewTemplateOwned {
            future_template: false,
            ..template(102, vec![0x52])
        });
        assert_eq!(heights.tip(&prev(102)).height, None);
        assert_eq!(heights.tip(&prev(101)).height, Some(1));
    }
}

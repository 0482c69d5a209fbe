//! The JSON the API serves, computed from the aggregate and the store. The
//! dashboard renders the same values.

use serde::Serialize;
use stats_common::series::{recent_window, timeline, Gap, Point, Range};
use stats_common::{Core, Publisher, StoreError};

use crate::aggregate::{series, LinkState, MintFigures, PoolAggregate, BLOCK};

/// Minutes the "current" hashrate figures average over.
pub const RECENT_MINUTES: i64 = 10;

#[derive(Serialize, Debug, Clone)]
pub struct Stats {
    pub now: i64,
    pub publisher: Publisher,
    /// Mean hashrate of the accepted shares over the last 10 complete
    /// minutes (H/s), or null before a whole minute of history.
    pub hashrate: Option<f64>,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub quotes_created: u64,
    pub ehash_created: u64,
    /// Quotes the wallets redeemed, as the mint counts them (null until the
    /// pool has relayed the mint's figures).
    pub quotes_redeemed: Option<u64>,
    pub mint: Option<MintFigures>,
    pub blocks_found: u64,
    pub links: Links,
    pub proxies: Vec<Proxy>,
    pub recent_blocks: Vec<Block>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Links {
    pub template_provider: Link,
    pub mint: Link,
}

#[derive(Serialize, Debug, Clone)]
pub struct Link {
    /// "up", "down", or "unknown" (not reported since the pool started).
    pub state: &'static str,
    pub since: Option<i64>,
}

impl From<Option<LinkState>> for Link {
    fn from(s: Option<LinkState>) -> Link {
        match s {
            Some(s) => Link {
                state: if s.up { "up" } else { "down" },
                since: Some(s.since),
            },
            None => Link {
                state: "unknown",
                since: None,
            },
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Proxy {
    pub downstream_id: u32,
    pub flags: u32,
    pub connected_since: i64,
    pub channels: usize,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub quotes: u64,
    pub ehash: u64,
    pub last_share: Option<i64>,
    pub hashrate: Option<f64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Block {
    pub height: u64,
    pub hash: String,
    pub channel_id: u64,
    pub timestamp: i64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Hashrate {
    pub hours: u32,
    pub from: i64,
    pub to: i64,
    pub step_secs: i64,
    pub points: Vec<Point>,
    /// When the stats service itself was down.
    pub gaps: Vec<Gap>,
}

#[derive(Serialize, Debug, Clone)]
pub struct DownstreamSeries {
    pub downstream_id: String,
    pub points: Vec<Point>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Miners {
    pub hours: u32,
    pub from: i64,
    pub to: i64,
    pub step_secs: i64,
    /// Hashrate per downstream id (ids restart from 1 when the pool does).
    pub downstreams: Vec<DownstreamSeries>,
    pub gaps: Vec<Gap>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Blocks {
    pub blocks: Vec<Block>,
}

/// Blocks shown on the dashboard and in `/api/stats`.
pub const RECENT_BLOCKS: usize = 10;

fn recent_hashrate(
    core: &Core<PoolAggregate>,
    key: Option<&str>,
    now: i64,
    since: i64,
) -> Result<Option<f64>, StoreError> {
    let Some((from, to)) = recent_window(now, RECENT_MINUTES, since) else {
        return Ok(None);
    };
    let work = core.store.total(series::WORK, key, from, to)?;
    Ok(stats_common::series::mean_hashrate(work, from, to))
}

pub fn stats(core: &Core<PoolAggregate>, now: i64) -> Result<Stats, StoreError> {
    let agg = &core.aggregate;
    let mut proxies = Vec::new();
    for (id, d) in &agg.downstreams {
        proxies.push(Proxy {
            downstream_id: *id,
            flags: d.flags,
            connected_since: d.connected_since,
            channels: d.channels.len(),
            shares_accepted: d.shares_accepted,
            shares_rejected: d.shares_rejected,
            quotes: d.quotes,
            ehash: d.ehash,
            last_share: d.last_share,
            hashrate: recent_hashrate(core, Some(&id.to_string()), now, d.connected_since)?,
        });
    }
    Ok(Stats {
        now,
        publisher: core.publisher.clone(),
        // Since the first share ever (or the service's start): a pool that
        // began mining 3 minutes ago averages over those 3 minutes.
        hashrate: recent_hashrate(
            core,
            Some(""),
            now,
            core.store
                .first_bucket(series::WORK, Some(""))?
                .unwrap_or(core.store.created_at()),
        )?,
        shares_accepted: agg.totals.shares_accepted,
        shares_rejected: agg.totals.shares_rejected,
        quotes_created: agg.totals.quotes_created,
        ehash_created: agg.totals.ehash_created,
        quotes_redeemed: agg.mint.as_ref().map(|m| m.quotes_issued),
        mint: agg.mint.clone(),
        blocks_found: agg.totals.blocks_found,
        links: Links {
            template_provider: agg.template_provider.into(),
            mint: agg.mint_link.into(),
        },
        proxies,
        recent_blocks: blocks(core, RECENT_BLOCKS)?.blocks,
    })
}

pub fn hashrate(core: &Core<PoolAggregate>, hours: u32, now: i64) -> Result<Hashrate, StoreError> {
    let range = Range::last_hours(hours, now);
    let work = core
        .store
        .sums(series::WORK, Some(""), range.from, range.to, range.step)?;
    // Gaps up to now: a restart within the current, incomplete step shows at once.
    let gaps = core.store.gaps(range.from, now)?;
    Ok(Hashrate {
        hours,
        from: range.from,
        to: range.to,
        step_secs: range.step_secs(),
        points: timeline(range, &work, &gaps, core.store.created_at()),
        gaps,
    })
}

pub fn miners(core: &Core<PoolAggregate>, hours: u32, now: i64) -> Result<Miners, StoreError> {
    let range = Range::last_hours(hours, now);
    // Gaps up to now: a restart within the current, incomplete step shows at once.
    let gaps = core.store.gaps(range.from, now)?;
    let mut by_key = core
        .store
        .sums_by_key(series::WORK, range.from, range.to, range.step)?;
    by_key.remove(""); // the whole pool, served by /api/hashrate
    let mut downstreams: Vec<DownstreamSeries> = by_key
        .into_iter()
        .map(|(key, work)| DownstreamSeries {
            points: timeline(range, &work, &gaps, core.store.created_at()),
            downstream_id: key,
        })
        .collect();
    downstreams.sort_by_key(|d| d.downstream_id.parse::<u64>().unwrap_or(u64::MAX));
    Ok(Miners {
        hours,
        from: range.from,
        to: range.to,
        step_secs: range.step_secs(),
        downstreams,
        gaps,
    })
}

pub fn blocks(core: &Core<PoolAggregate>, limit: usize) -> Result<Blocks, StoreError> {
    let blocks = core
        .store
        .records(BLOCK, limit)?
        .into_iter()
        .map(|r| Block {
            height: r.data["height"].as_u64().unwrap_or(0),
            hash: r.id,
            channel_id: r.data["channel_id"].as_u64().unwrap_or(0),
            timestamp: r.t,
        })
        .collect();
    Ok(Blocks { blocks })
}

/// The Prometheus text of `/metrics`.
pub fn metrics(s: &Stats) -> String {
    use stats_common::metrics::{Kind, Metrics};
    let mut m = Metrics::new();
    m.single(
        "hashpool_pool_hashrate",
        Kind::Gauge,
        "Hashrate of accepted shares over the last 10 complete minutes, in H/s.",
        s.hashrate.unwrap_or(0.0),
    )
    .single(
        "hashpool_pool_shares_accepted_total",
        Kind::Counter,
        "Shares the pool accepted.",
        s.shares_accepted as f64,
    )
    .single(
        "hashpool_pool_shares_rejected_total",
        Kind::Counter,
        "Shares the pool rejected.",
        s.shares_rejected as f64,
    )
    .single(
        "hashpool_pool_quotes_created_total",
        Kind::Counter,
        "Mint quotes created for accepted shares.",
        s.quotes_created as f64,
    )
    .single(
        "hashpool_pool_ehash_created_total",
        Kind::Counter,
        "ehash amount of the quotes created.",
        s.ehash_created as f64,
    )
    .single(
        "hashpool_pool_blocks_found_total",
        Kind::Counter,
        "Blocks found by the pool's miners.",
        s.blocks_found as f64,
    )
    .single(
        "hashpool_pool_downstreams_connected",
        Kind::Gauge,
        "Downstream connections (proxies, SV2 devices).",
        s.proxies.len() as f64,
    )
    .single(
        "hashpool_pool_publisher_connected",
        Kind::Gauge,
        "1 while the pool is connected to this service.",
        f64::from(u8::from(s.publisher.connected)),
    );
    m.family(
        "hashpool_pool_link_up",
        Kind::Gauge,
        "1 if the pool's link is up, 0 if down (absent while unknown).",
    );
    for (name, link) in [
        ("template_provider", &s.links.template_provider),
        ("mint", &s.links.mint),
    ] {
        if link.state != "unknown" {
            let up = f64::from(u8::from(link.state == "up"));
            m.sample("hashpool_pool_link_up", &[("link", name)], up);
        }
    }
    if let Some(mint) = &s.mint {
        m.family(
            "hashpool_mint_quotes",
            Kind::Gauge,
            "The mint's quotes by state, as last reported.",
        );
        for (state, n) in [
            ("unpaid", mint.quotes_unpaid),
            ("paid", mint.quotes_paid),
            ("issued", mint.quotes_issued),
        ] {
            m.sample("hashpool_mint_quotes", &[("state", state)], n as f64);
        }
        m.single(
            "hashpool_mint_ehash_issued",
            Kind::Gauge,
            "ehash the mint issued as ecash, as last reported.",
            mint.ehash_issued as f64,
        );
    }
    m.finish()
}

//! The JSON of pool-stats' own API, computed from the state and the store.
//! The dashboard renders the same values.

use serde::Serialize;
use stats_common::api::{by_key, keep_busiest, link_metrics, Link, Span, Summary};
use stats_common::metrics::{Kind, Metrics};
use stats_common::series::{Gap, Point};
use stats_common::store::History;
use stats_common::{Core, StoreError};

use crate::state::{series, MintFigures, PoolState, BLOCK};

#[derive(Serialize, Debug, Clone)]
pub struct Stats {
    #[serde(flatten)]
    pub summary: Summary,
    pub quotes_created: u64,
    pub ehash_created: u64,
    /// Quotes the wallets redeemed, as the mint counts them (null until the
    /// pool has relayed the mint's figures).
    pub quotes_redeemed: Option<u64>,
    pub mint: Option<MintFigures>,
    pub blocks_found: u64,
    pub links: Links,
    /// The connected downstreams, by id: the
    /// [`MAX_LISTED`](stats_common::api::MAX_LISTED) with the most hashrate.
    pub proxies: Vec<Proxy>,
    /// Connected downstreams not in `proxies`.
    pub proxies_left_out: u64,
    pub recent_blocks: Vec<Block>,
}

impl Stats {
    /// Downstreams connected, listed or not.
    pub fn proxies_connected(&self) -> u64 {
        self.proxies.len() as u64 + self.proxies_left_out
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Links {
    pub template_provider: Link,
    pub mint: Link,
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
pub struct DownstreamSeries {
    pub downstream_id: String,
    pub points: Vec<Point>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Miners {
    #[serde(flatten)]
    pub span: Span,
    /// Hashrate per downstream id (ids restart from 1 when the pool does).
    pub downstreams: Vec<DownstreamSeries>,
    /// Downstreams with work in the span beyond the [`MAX_KEYS`](stats_common::api::MAX_KEYS) with the
    /// most, not in `downstreams`.
    pub left_out: u64,
    pub gaps: Vec<Gap>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Blocks {
    pub blocks: Vec<Block>,
}

/// Blocks shown on the dashboard and in `/api/stats`.
pub const RECENT_BLOCKS: usize = 10;

pub fn stats(core: &Core<PoolState>, now: i64) -> Result<Stats, StoreError> {
    let state = &core.state;
    let totals = &state.totals;
    let mut proxies: Vec<Proxy> = state
        .downstreams
        .iter()
        .map(|(id, d)| Proxy {
            downstream_id: *id,
            flags: d.flags,
            connected_since: d.connected_since,
            channels: d.channels.len(),
            shares_accepted: d.shares_accepted,
            shares_rejected: d.shares_rejected,
            quotes: d.quotes,
            ehash: d.ehash,
            last_share: d.last_share,
            hashrate: d.recent.hashrate(now, d.connected_since),
        })
        .collect();
    let proxies_left_out = keep_busiest(
        &mut proxies,
        |p| p.hashrate,
        |a, b| a.downstream_id.cmp(&b.downstream_id),
    );
    Ok(Stats {
        summary: Summary::new(core, now, totals.shares_accepted, totals.shares_rejected)?,
        quotes_created: totals.quotes_created,
        ehash_created: totals.ehash_created,
        quotes_redeemed: state.mint.as_ref().map(|m| m.quotes_issued),
        mint: state.mint.clone(),
        blocks_found: totals.blocks_found,
        links: Links {
            template_provider: state.template_provider.into(),
            mint: state.mint_link.into(),
        },
        proxies,
        proxies_left_out,
        recent_blocks: blocks(core.store.history(), RECENT_BLOCKS)?.blocks,
    })
}

pub fn miners(history: &History, hours: u32, now: i64) -> Result<Miners, StoreError> {
    // Key "" is the whole pool, served by /api/hashrate.
    let by_key = by_key(history, series::WORK, Some(""), hours, now)?;
    let mut downstreams: Vec<DownstreamSeries> = by_key
        .series
        .into_iter()
        .map(|(downstream_id, points)| DownstreamSeries {
            downstream_id,
            points,
        })
        .collect();
    downstreams.sort_by_key(|d| d.downstream_id.parse::<u64>().unwrap_or(u64::MAX));
    Ok(Miners {
        span: by_key.span,
        downstreams,
        left_out: by_key.left_out,
        gaps: by_key.gaps,
    })
}

pub fn blocks(history: &History, limit: usize) -> Result<Blocks, StoreError> {
    let blocks = history
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
    let mut m = Metrics::new();
    totals(&mut m, s);
    connections(&mut m, s);
    link_metrics(
        &mut m,
        "hashpool_pool_link_up",
        "1 if the pool's link is up, 0 if down (absent while unknown).",
        &[
            ("template_provider", &s.links.template_provider),
            ("mint", &s.links.mint),
        ],
    );
    if let Some(mint) = &s.mint {
        mint_figures(&mut m, mint);
    }
    m.finish()
}

/// The pool's hashrate and its counters since it started reporting.
fn totals(m: &mut Metrics, s: &Stats) {
    s.summary.metrics(
        m,
        "hashpool_pool",
        [
            "Hashrate of accepted shares over the last 10 complete minutes, in H/s.",
            "Shares the pool accepted.",
            "Shares the pool rejected.",
        ],
    );
    m.single(
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
    );
}

/// What is connected now: downstreams, and the pool itself.
fn connections(m: &mut Metrics, s: &Stats) {
    m.single(
        "hashpool_pool_downstreams_connected",
        Kind::Gauge,
        "Downstream connections (proxies, SV2 devices).",
        s.proxies_connected() as f64,
    )
    .single(
        "hashpool_pool_publisher_connected",
        Kind::Gauge,
        "1 while the pool is connected to this service.",
        f64::from(u8::from(s.summary.publisher.connected)),
    );
}

/// The mint's own counters, as the pool last relayed them.
fn mint_figures(m: &mut Metrics, mint: &MintFigures) {
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

//! The JSON of proxy-stats' own API, computed from the state and the
//! store. The dashboard renders the same values.

use serde::Serialize;
use stats_common::api::{by_key, keep_busiest, link_metrics, Link, Span, Summary};
use stats_common::metrics::{Kind, Metrics};
use stats_common::series::{Gap, Point};
use stats_common::store::History;
use stats_common::{Core, StoreError};

use crate::state::{series, ProxyState, QUOTE};

/// Quotes shown on the dashboard and in `/api/stats`.
pub const RECENT_QUOTES: usize = 10;

#[derive(Serialize, Debug, Clone)]
pub struct Stats {
    #[serde(flatten)]
    pub summary: Summary,
    /// The wallet's spendable ehash, null until the translator reports it.
    pub wallet_balance: Option<u64>,
    pub wallet_updated_at: Option<i64>,
    /// Shares the translator refused while too many awaited the pool's
    /// answer (included in `shares_rejected`).
    pub shares_backlogged: u64,
    pub quotes_received: u64,
    pub ehash_received: u64,
    pub quotes_minted: u64,
    pub ehash_minted: u64,
    pub links: Links,
    /// The connected miners, by name: the
    /// [`MAX_LISTED`](stats_common::api::MAX_LISTED) with the most hashrate.
    pub miners: Vec<Miner>,
    /// Connected miners not in `miners`.
    pub miners_left_out: u64,
    pub recent_quotes: Vec<Quote>,
}

impl Stats {
    /// Miners connected, listed or not.
    pub fn miners_connected(&self) -> u64 {
        self.miners.len() as u64 + self.miners_left_out
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Links {
    pub pool: Link,
    pub mint: Link,
}

#[derive(Serialize, Debug, Clone)]
pub struct Miner {
    pub miner_id: u32,
    pub name: String,
    pub connected_since: i64,
    /// From the miner's accepted shares over the last 10 complete minutes
    /// (or since it connected).
    pub hashrate: Option<f64>,
    /// The translator's own (vardiff) estimate.
    pub estimate: Option<u64>,
    pub shares: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub last_share: Option<i64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Quote {
    pub quote_id: String,
    pub amount: u64,
    /// "minted" once the wallet holds its tokens, else "quoted".
    pub state: &'static str,
    pub received_at: Option<i64>,
    pub minted_at: Option<i64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct MinerSeries {
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Miners {
    #[serde(flatten)]
    pub span: Span,
    /// Hashrate per miner name, the [`MAX_KEYS`](stats_common::api::MAX_KEYS) names with the most work
    /// in the range.
    pub miners: Vec<MinerSeries>,
    /// Names with work in the range not in `miners`.
    pub left_out: u64,
    pub gaps: Vec<Gap>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Quotes {
    pub quotes: Vec<Quote>,
}

pub fn stats(core: &Core<ProxyState>, now: i64) -> Result<Stats, StoreError> {
    let state = &core.state;
    let totals = &state.totals;
    let mut miners: Vec<Miner> = state
        .miners
        .iter()
        .map(|(id, m)| Miner {
            miner_id: *id,
            name: m.name.clone(),
            connected_since: m.connected_since,
            hashrate: m.recent.hashrate(now, m.connected_since),
            estimate: m.estimate,
            shares: m.shares_accepted + m.shares_rejected,
            shares_accepted: m.shares_accepted,
            shares_rejected: m.shares_rejected,
            last_share: m.last_share,
        })
        .collect();
    let miners_left_out = keep_busiest(
        &mut miners,
        |m| m.hashrate,
        |a, b| a.name.cmp(&b.name).then(a.miner_id.cmp(&b.miner_id)),
    );
    Ok(Stats {
        summary: Summary::new(core, now, totals.shares_accepted, totals.shares_rejected)?,
        wallet_balance: state.wallet.map(|w| w.balance),
        wallet_updated_at: state.wallet.map(|w| w.updated_at),
        shares_backlogged: totals.shares_backlogged,
        quotes_received: totals.quotes_received,
        ehash_received: totals.ehash_received,
        quotes_minted: totals.quotes_minted,
        ehash_minted: totals.ehash_minted,
        links: Links {
            pool: state.pool_link.into(),
            mint: state.mint_link.into(),
        },
        miners,
        miners_left_out,
        recent_quotes: quotes(core.store.history(), RECENT_QUOTES)?.quotes,
    })
}

pub fn miners(history: &History, hours: u32, now: i64) -> Result<Miners, StoreError> {
    let by_key = by_key(history, series::MINER_WORK, None, hours, now)?;
    let mut miners: Vec<MinerSeries> = by_key
        .series
        .into_iter()
        .map(|(name, points)| MinerSeries { name, points })
        .collect();
    miners.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Miners {
        span: by_key.span,
        miners,
        left_out: by_key.left_out,
        gaps: by_key.gaps,
    })
}

pub fn quotes(history: &History, limit: usize) -> Result<Quotes, StoreError> {
    let quotes = history
        .records(QUOTE, limit)?
        .into_iter()
        .map(|r| {
            let minted_at = r.data["minted_at"].as_i64();
            Quote {
                amount: r.data["amount"].as_u64().unwrap_or(0),
                state: if minted_at.is_some() {
                    "minted"
                } else {
                    "quoted"
                },
                received_at: r.data["received_at"].as_i64(),
                minted_at,
                quote_id: r.id,
            }
        })
        .collect();
    Ok(Quotes { quotes })
}

/// The Prometheus text of `/metrics`.
pub fn metrics(s: &Stats) -> String {
    let mut m = Metrics::new();
    totals(&mut m, s);
    connections(&mut m, s);
    if let Some(balance) = s.wallet_balance {
        m.single(
            "hashpool_proxy_wallet_balance",
            Kind::Gauge,
            "The wallet's spendable ehash, as last reported.",
            balance as f64,
        );
    }
    link_metrics(
        &mut m,
        "hashpool_proxy_link_up",
        "1 if the translator's link is up, 0 if down (absent while unknown).",
        &[("pool", &s.links.pool), ("mint", &s.links.mint)],
    );
    miner_hashrates(&mut m, &s.miners);
    m.finish()
}

/// All miners' hashrate and the translator's counters since it started
/// reporting.
fn totals(m: &mut Metrics, s: &Stats) {
    s.summary.metrics(
        m,
        "hashpool_proxy",
        [
            "Hashrate of all miners' accepted shares over the last 10 complete minutes, in H/s.",
            "Miner shares the pool accepted.",
            "Miner shares rejected.",
        ],
    );
    m.single(
        "hashpool_proxy_shares_backlogged_total",
        Kind::Counter,
        "Miner shares the translator refused while too many awaited the pool's answer.",
        s.shares_backlogged as f64,
    )
    .single(
        "hashpool_proxy_quotes_received_total",
        Kind::Counter,
        "ehash quotes received from the pool.",
        s.quotes_received as f64,
    )
    .single(
        "hashpool_proxy_quotes_minted_total",
        Kind::Counter,
        "ehash quotes minted into the wallet.",
        s.quotes_minted as f64,
    );
}

/// What is connected now: miners, and the translator itself.
fn connections(m: &mut Metrics, s: &Stats) {
    m.single(
        "hashpool_proxy_miners_connected",
        Kind::Gauge,
        "SV1 miners connected to the translator.",
        s.miners_connected() as f64,
    )
    .single(
        "hashpool_proxy_publisher_connected",
        Kind::Gauge,
        "1 while the translator is connected to this service.",
        f64::from(u8::from(s.summary.publisher.connected)),
    );
}

fn miner_hashrates(m: &mut Metrics, miners: &[Miner]) {
    m.family(
        "hashpool_proxy_miner_hashrate",
        Kind::Gauge,
        "Per connected miner (those listed in /api/stats), from its accepted shares over the \
         last 10 minutes, in H/s.",
    );
    for miner in miners {
        // Names are not unique (rigs of a farm often share one).
        m.sample(
            "hashpool_proxy_miner_hashrate",
            &[
                ("miner", &miner.name),
                ("miner_id", &miner.miner_id.to_string()),
            ],
            miner.hashrate.unwrap_or(0.0),
        );
    }
}

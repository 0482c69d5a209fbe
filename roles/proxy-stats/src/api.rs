//! The JSON the API serves, computed from the aggregate and the store. The
//! dashboard renders the same values.

use serde::Serialize;
use stats_common::series::{mean_hashrate, recent_window, timeline, Gap, Point, Range};
use stats_common::{Core, Publisher, StoreError};

use crate::aggregate::{series, LinkState, ProxyAggregate, QUOTE};

/// Minutes the "current" hashrate figures average over.
pub const RECENT_MINUTES: i64 = 10;
/// Quotes shown on the dashboard and in `/api/stats`.
pub const RECENT_QUOTES: usize = 10;

#[derive(Serialize, Debug, Clone)]
pub struct Stats {
    pub now: i64,
    pub publisher: Publisher,
    /// Mean hashrate of the accepted shares of all miners over the last 10
    /// complete minutes (H/s), or null before a whole minute of history.
    pub hashrate: Option<f64>,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// The wallet's spendable ehash, null until the translator reports it.
    pub wallet_balance: Option<u64>,
    pub wallet_updated_at: Option<i64>,
    pub quotes_received: u64,
    pub ehash_received: u64,
    pub quotes_minted: u64,
    pub ehash_minted: u64,
    pub links: Links,
    pub miners: Vec<Miner>,
    pub recent_quotes: Vec<Quote>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Links {
    pub pool: Link,
    pub mint: Link,
}

#[derive(Serialize, Debug, Clone)]
pub struct Link {
    /// "up", "down", or "unknown" (not reported since the translator started).
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
pub struct MinerSeries {
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Miners {
    pub hours: u32,
    pub from: i64,
    pub to: i64,
    pub step_secs: i64,
    /// Hashrate per miner name, every miner with shares in the range.
    pub miners: Vec<MinerSeries>,
    pub gaps: Vec<Gap>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Quotes {
    pub quotes: Vec<Quote>,
}

fn recent_hashrate(
    core: &Core<ProxyAggregate>,
    series: &str,
    key: &str,
    now: i64,
    since: i64,
) -> Result<Option<f64>, StoreError> {
    let Some((from, to)) = recent_window(now, RECENT_MINUTES, since) else {
        return Ok(None);
    };
    let work = core.store.total(series, Some(key), from, to)?;
    Ok(mean_hashrate(work, from, to))
}

pub fn stats(core: &Core<ProxyAggregate>, now: i64) -> Result<Stats, StoreError> {
    let agg = &core.aggregate;
    let mut miners = Vec::new();
    for (id, m) in &agg.miners {
        miners.push(Miner {
            miner_id: *id,
            name: m.name.clone(),
            connected_since: m.connected_since,
            hashrate: recent_hashrate(core, series::MINER_WORK, &m.name, now, m.connected_since)?,
            estimate: m.estimate,
            shares: m.shares_accepted + m.shares_rejected,
            shares_accepted: m.shares_accepted,
            shares_rejected: m.shares_rejected,
            last_share: m.last_share,
        });
    }
    miners.sort_by(|a, b| a.name.cmp(&b.name).then(a.miner_id.cmp(&b.miner_id)));
    // Since the first share ever (or the service's start): mining that
    // began 3 minutes ago averages over those 3 minutes.
    let since = core
        .store
        .first_bucket(series::WORK, Some(""))?
        .unwrap_or(core.store.created_at());
    Ok(Stats {
        now,
        publisher: core.publisher.clone(),
        hashrate: recent_hashrate(core, series::WORK, "", now, since)?,
        shares_accepted: agg.totals.shares_accepted,
        shares_rejected: agg.totals.shares_rejected,
        wallet_balance: agg.wallet.map(|w| w.balance),
        wallet_updated_at: agg.wallet.map(|w| w.updated_at),
        quotes_received: agg.totals.quotes_received,
        ehash_received: agg.totals.ehash_received,
        quotes_minted: agg.totals.quotes_minted,
        ehash_minted: agg.totals.ehash_minted,
        links: Links {
            pool: agg.pool_link.into(),
            mint: agg.mint_link.into(),
        },
        miners,
        recent_quotes: quotes(core, RECENT_QUOTES)?.quotes,
    })
}

pub fn hashrate(core: &Core<ProxyAggregate>, hours: u32, now: i64) -> Result<Hashrate, StoreError> {
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

pub fn miners(core: &Core<ProxyAggregate>, hours: u32, now: i64) -> Result<Miners, StoreError> {
    let range = Range::last_hours(hours, now);
    let gaps = core.store.gaps(range.from, now)?;
    let by_name = core
        .store
        .sums_by_key(series::MINER_WORK, range.from, range.to, range.step)?;
    let mut miners: Vec<MinerSeries> = by_name
        .into_iter()
        .map(|(name, work)| MinerSeries {
            points: timeline(range, &work, &gaps, core.store.created_at()),
            name,
        })
        .collect();
    miners.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Miners {
        hours,
        from: range.from,
        to: range.to,
        step_secs: range.step_secs(),
        miners,
        gaps,
    })
}

pub fn quotes(core: &Core<ProxyAggregate>, limit: usize) -> Result<Quotes, StoreError> {
    let quotes = core
        .store
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
    use stats_common::metrics::{Kind, Metrics};
    let mut m = Metrics::new();
    m.single(
        "hashpool_proxy_hashrate",
        Kind::Gauge,
        "Hashrate of all miners' accepted shares over the last 10 complete minutes, in H/s.",
        s.hashrate.unwrap_or(0.0),
    )
    .single(
        "hashpool_proxy_shares_accepted_total",
        Kind::Counter,
        "Miner shares the pool accepted.",
        s.shares_accepted as f64,
    )
    .single(
        "hashpool_proxy_shares_rejected_total",
        Kind::Counter,
        "Miner shares rejected.",
        s.shares_rejected as f64,
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
    )
    .single(
        "hashpool_proxy_miners_connected",
        Kind::Gauge,
        "SV1 miners connected to the translator.",
        s.miners.len() as f64,
    )
    .single(
        "hashpool_proxy_publisher_connected",
        Kind::Gauge,
        "1 while the translator is connected to this service.",
        f64::from(u8::from(s.publisher.connected)),
    );
    if let Some(balance) = s.wallet_balance {
        m.single(
            "hashpool_proxy_wallet_balance",
            Kind::Gauge,
            "The wallet's spendable ehash, as last reported.",
            balance as f64,
        );
    }
    m.family(
        "hashpool_proxy_link_up",
        Kind::Gauge,
        "1 if the translator's link is up, 0 if down (absent while unknown).",
    );
    for (name, link) in [("pool", &s.links.pool), ("mint", &s.links.mint)] {
        if link.state != "unknown" {
            let up = f64::from(u8::from(link.state == "up"));
            m.sample("hashpool_proxy_link_up", &[("link", name)], up);
        }
    }
    m.family(
        "hashpool_proxy_miner_hashrate",
        Kind::Gauge,
        "Per connected miner, from its accepted shares over the last 10 minutes, in H/s.",
    );
    for miner in &s.miners {
        m.sample(
            "hashpool_proxy_miner_hashrate",
            &[("miner", &miner.name)],
            miner.hashrate.unwrap_or(0.0),
        );
    }
    m.finish()
}

//! The JSON both services' APIs compute the same way: the head of
//! `/api/stats`, hashrate charts, the current hashrate, and link states.

use std::cmp::Ordering;

use serde::Serialize;

use crate::core::{Core, LinkState, Losses, Publisher, ServiceState};
use crate::metrics::{Kind, Metrics};
use crate::series::{mean_hashrate, recent_window, timeline, Gap, Point, Range};
use crate::store::{History, StoreError};

/// The series of accepted work: key "" for all the publisher's miners
/// together, which `/api/hashrate` charts.
pub const WORK: &str = "work";

/// Minutes the "current" hashrate figures average over.
pub const RECENT_MINUTES: i64 = 10;

/// What every `/api/stats` starts with: the publisher, and the hashrate and
/// shares of all its miners.
#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub now: i64,
    pub publisher: Publisher,
    /// Mean hashrate of the accepted shares of all miners over the last 10
    /// complete minutes (H/s), or null before a whole minute of history.
    pub hashrate: Option<f64>,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// What the service refused or lost of the publisher's messages.
    pub losses: Losses,
}

impl Summary {
    pub fn new<A: ServiceState>(
        core: &Core<A>,
        now: i64,
        shares_accepted: u64,
        shares_rejected: u64,
    ) -> Result<Summary, StoreError> {
        // Since the first share ever (or the service's start): mining that
        // began 3 minutes ago averages over those 3 minutes.
        let history = core.store.history();
        let since = history
            .first_bucket(WORK, "")?
            .unwrap_or(history.created_at());
        Ok(Summary {
            now,
            publisher: core.publisher.clone(),
            hashrate: recent_hashrate(history, WORK, "", now, since)?,
            shares_accepted,
            shares_rejected,
            losses: core.losses(),
        })
    }
}

impl Summary {
    /// `<prefix>_hashrate`, `<prefix>_shares_accepted_total` and
    /// `<prefix>_shares_rejected_total`, each with the service's own `help`.
    pub fn metrics(&self, m: &mut Metrics, prefix: &str, help: [&str; 3]) {
        let [hashrate, accepted, rejected] = help;
        m.single(
            &format!("{prefix}_hashrate"),
            Kind::Gauge,
            hashrate,
            self.hashrate.unwrap_or(0.0),
        )
        .single(
            &format!("{prefix}_shares_accepted_total"),
            Kind::Counter,
            accepted,
            self.shares_accepted as f64,
        )
        .single(
            &format!("{prefix}_shares_rejected_total"),
            Kind::Counter,
            rejected,
            self.shares_rejected as f64,
        );
        let losses = self.losses;
        let refused = format!("{prefix}_stats_refused_total");
        m.family(
            &refused,
            Kind::Counter,
            "Publisher messages or entries this stats service refused, by reason: dated too far \
             ahead of its clock, before its retention, or a live entry beyond its limit.",
        );
        for (reason, n) in [
            ("future", losses.refused_future),
            ("past", losses.refused_past),
            ("live_limit", losses.live_refused),
        ] {
            m.sample(&refused, &[("reason", reason)], n as f64);
        }
        m.single(
            &format!("{prefix}_stats_writes_dropped_total"),
            Kind::Counter,
            "History writes this stats service dropped while its store kept failing.",
            losses.writes_dropped as f64,
        );
    }
}

/// The span of a chart.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Span {
    pub hours: u32,
    pub from: i64,
    pub to: i64,
    pub step_secs: i64,
}

/// `/api/hashrate`: the hashrate of all the publisher's miners.
#[derive(Serialize, Debug, Clone)]
pub struct Hashrate {
    #[serde(flatten)]
    pub span: Span,
    pub points: Vec<Point>,
    /// When the stats service itself was down.
    pub gaps: Vec<Gap>,
}

pub fn hashrate(store: &History, hours: u32, now: i64) -> Result<Hashrate, StoreError> {
    let range = Range::last_hours(hours, now);
    let work = store.sums(WORK, "", range.from, range.to, range.step)?;
    // Gaps up to now: a restart within the current, incomplete step shows at once.
    let gaps = store.gaps(range.from, now)?;
    Ok(Hashrate {
        span: span(hours, range),
        points: timeline(range, &work, &gaps, store.history_from()),
        gaps,
    })
}

/// The most keys of one series a chart API returns (the keys with the most
/// work): a timeline is a point per step for each, and a year of hourly
/// steps for every connection the service ever saw would not fit in memory.
pub const MAX_KEYS: usize = 50;

/// The hashrate of the keys of `series` over the last `hours` hours: one
/// timeline per key, in no particular order, for the [`MAX_KEYS`] keys
/// (other than `except`) with the most work.
pub struct ByKey {
    pub span: Span,
    pub series: Vec<(String, Vec<Point>)>,
    /// Keys with work in the span that are not in `series`.
    pub left_out: u64,
    pub gaps: Vec<Gap>,
}

pub fn by_key(
    store: &History,
    series: &str,
    except: Option<&str>,
    hours: u32,
    now: i64,
) -> Result<ByKey, StoreError> {
    let range = Range::last_hours(hours, now);
    // Gaps up to now: a restart within the current, incomplete step shows at once.
    let gaps = store.gaps(range.from, now)?;
    let (sums, keys) =
        store.sums_by_key(series, (range.from, range.to), range.step, except, MAX_KEYS)?;
    let series: Vec<_> = sums
        .into_iter()
        .map(|(key, work)| (key, timeline(range, &work, &gaps, store.history_from())))
        .collect();
    Ok(ByKey {
        span: span(hours, range),
        left_out: keys.saturating_sub(series.len() as u64),
        series,
        gaps,
    })
}

fn span(hours: u32, range: Range) -> Span {
    Span {
        hours,
        from: range.from,
        to: range.to,
        step_secs: range.step_secs(),
    }
}

/// Mean hashrate of `series` / `key` over the last [`RECENT_MINUTES`]
/// complete minutes, but not before `since`; `None` before a whole minute.
pub fn recent_hashrate(
    store: &History,
    series: &str,
    key: &str,
    now: i64,
    since: i64,
) -> Result<Option<f64>, StoreError> {
    let Some((from, to)) = recent_window(now, RECENT_MINUTES, since) else {
        return Ok(None);
    };
    let work = store.total(series, key, from, to)?;
    Ok(mean_hashrate(work, from, to))
}

/// The most live entries (proxies, miners) `/api/stats`, the dashboard and
/// `/metrics` list: a publisher may report up to
/// [`MAX_LIVE_ENTRIES`](crate::MAX_LIVE_ENTRIES), and a page or a scrape of
/// them all would run to megabytes. The rest are counted.
pub const MAX_LISTED: usize = 1_000;

/// Keeps the [`MAX_LISTED`] `entries` with the most `hashrate` (ties going
/// to the first in `order`), sorted by `order`; how many went.
pub fn keep_busiest<T>(
    entries: &mut Vec<T>,
    hashrate: impl Fn(&T) -> Option<f64>,
    order: impl Fn(&T, &T) -> Ordering,
) -> u64 {
    let left_out = entries.len().saturating_sub(MAX_LISTED);
    if left_out > 0 {
        let busiest = |a: &T, b: &T| {
            let h = |e: &T| hashrate(e).unwrap_or(0.0);
            h(b).total_cmp(&h(a)).then_with(|| order(a, b))
        };
        entries.select_nth_unstable_by(MAX_LISTED - 1, busiest);
        entries.truncate(MAX_LISTED);
    }
    entries.sort_by(order);
    left_out as u64
}

/// A link of the publisher, as the API shows it.
#[derive(Serialize, Debug, Clone)]
pub struct Link {
    /// "up", "down", or "unknown" (not reported since the publisher started).
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

/// The `<name>{link="..."}` family: 1 for a link that is up, 0 for one that
/// is down, no sample while unknown.
pub fn link_metrics(m: &mut Metrics, name: &str, help: &str, links: &[(&str, &Link)]) {
    m.family(name, Kind::Gauge, help);
    for (link, state) in links {
        if state.state != "unknown" {
            let up = f64::from(u8::from(state.state == "up"));
            m.sample(name, &[("link", link)], up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::MINUTE_MS;
    use crate::store::{Store, Write};

    #[test]
    fn keep_busiest_lists_those_with_the_most_hashrate_in_their_order() {
        // (id, hashrate): every other entry idle.
        let mut entries: Vec<(usize, Option<f64>)> = (0..MAX_LISTED + 10)
            .map(|i| (i, (i % 2 == 0).then_some(i as f64)))
            .collect();
        entries.reverse();
        let left_out = keep_busiest(&mut entries, |e| e.1, |a, b| a.0.cmp(&b.0));
        assert_eq!((entries.len(), left_out), (MAX_LISTED, 10));
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "in id order");
        // All (MAX_LISTED + 10) / 2 busy ones, then the idle ones with the lowest ids.
        let busy = entries.iter().filter(|e| e.1.is_some()).count();
        assert_eq!(busy, (MAX_LISTED + 10) / 2);
        let idle_max = entries.iter().filter(|e| e.1.is_none()).map(|e| e.0).max();
        assert_eq!(idle_max, Some(2 * (MAX_LISTED - busy) - 1));

        let mut few = vec![(2, None), (1, Some(1.0))];
        assert_eq!(keep_busiest(&mut few, |e| e.1, |a, b| a.0.cmp(&b.0)), 0);
        assert_eq!(few, [(1, Some(1.0)), (2, None)]);
    }

    #[test]
    fn by_key_charts_the_keys_with_the_most_work_and_counts_the_others() {
        let now = 1_795_000_000_000;
        let mut store = Store::open_in_memory(now - 3_600_000).unwrap();
        let minute = (now - 10 * MINUTE_MS) / MINUTE_MS * MINUTE_MS;
        let mut writes = vec![Write::add(WORK, "", minute, 1e9)];
        for k in 0..MAX_KEYS + 2 {
            writes.push(Write::add(WORK, format!("k{k}"), minute, k as f64 + 1.0));
        }
        store.apply(&writes, None, now).unwrap();
        let by = by_key(store.history(), WORK, Some(""), 1, now).unwrap();
        assert_eq!((by.series.len(), by.left_out), (MAX_KEYS, 2));
        let keys: Vec<&str> = by.series.iter().map(|(k, _)| k.as_str()).collect();
        for left_out in ["", "k0", "k1"] {
            assert!(!keys.contains(&left_out), "{left_out} in {keys:?}");
        }
    }
}

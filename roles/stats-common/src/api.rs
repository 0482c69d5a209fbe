//! The JSON both services' APIs compute the same way: the head of
//! `/api/stats`, hashrate charts, the current hashrate, and link states.

use serde::Serialize;

use crate::core::{Core, LinkState, Publisher};
use crate::metrics::{Kind, Metrics};
use crate::series::{mean_hashrate, recent_window, timeline, Gap, Point, Range};
use crate::store::{Store, StoreError};

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
}

impl Summary {
    pub fn new<A>(
        core: &Core<A>,
        now: i64,
        shares_accepted: u64,
        shares_rejected: u64,
    ) -> Result<Summary, StoreError> {
        // Since the first share ever (or the service's start): mining that
        // began 3 minutes ago averages over those 3 minutes.
        let since = core
            .store
            .first_bucket(WORK, Some(""))?
            .unwrap_or(core.store.created_at());
        Ok(Summary {
            now,
            publisher: core.publisher.clone(),
            hashrate: recent_hashrate(&core.store, WORK, "", now, since)?,
            shares_accepted,
            shares_rejected,
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

pub fn hashrate(store: &Store, hours: u32, now: i64) -> Result<Hashrate, StoreError> {
    let range = Range::last_hours(hours, now);
    let work = store.sums(WORK, Some(""), range.from, range.to, range.step)?;
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
    store: &Store,
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
    store: &Store,
    series: &str,
    key: &str,
    now: i64,
    since: i64,
) -> Result<Option<f64>, StoreError> {
    let Some((from, to)) = recent_window(now, RECENT_MINUTES, since) else {
        return Ok(None);
    };
    let work = store.total(series, Some(key), from, to)?;
    Ok(mean_hashrate(work, from, to))
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
    use crate::store::Write;

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
        let by = by_key(&store, WORK, Some(""), 1, now).unwrap();
        assert_eq!((by.series.len(), by.left_out), (MAX_KEYS, 2));
        let keys: Vec<&str> = by.series.iter().map(|(k, _)| k.as_str()).collect();
        for left_out in ["", "k0", "k1"] {
            assert!(!keys.contains(&left_out), "{left_out} in {keys:?}");
        }
    }
}

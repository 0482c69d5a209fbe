//! Time ranges, downsampling steps and hashrate timelines: pure functions
//! over what the store returns.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::api::RECENT_MINUTES;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

/// The longest range the API serves (a year of hourly points).
pub const MAX_HOURS: u32 = 24 * 366;

/// A span when the stats service itself was not running, so it knows
/// nothing about what happened then (unless a publisher replayed it).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
}

impl Gap {
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.from < to && self.to > from
    }
}

/// One point of a hashrate chart: the mean over `[t, t + step)`, or `None`
/// when the service was down then and holds no data for it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub t: i64,
    pub hashrate: Option<f64>,
}

/// The span of a chart: whole steps ending where the current, still
/// incomplete step begins (a partial step would read as a drop).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub step: i64,
}

impl Range {
    /// The last `hours` hours before `now`, with a step suited to the span:
    /// 1-minute points up to 2 h, 5-minute up to 2 days, hourly beyond
    /// (1 h: 60 points, 24 h: 288, 7 d: 168).
    pub fn last_hours(hours: u32, now: i64) -> Range {
        let step = step_for_hours(hours);
        let to = now.div_euclid(step) * step;
        Range {
            from: to - i64::from(hours) * HOUR_MS,
            to,
            step,
        }
    }

    pub fn step_secs(&self) -> i64 {
        self.step / 1000
    }
}

/// The downsampling step for a chart of `hours` hours.
pub fn step_for_hours(hours: u32) -> i64 {
    match hours {
        0..=2 => MINUTE_MS,
        3..=48 => 5 * MINUTE_MS,
        _ => HOUR_MS,
    }
}

/// The points of `range`: `work` holds the accepted work summed per step
/// (keyed by step start); a step with no work is 0 H/s, unless the service
/// was down during it, then it is unknown. Steps that ended before the
/// service first started (`not_before`) are left out, unless a publisher
/// replayed older events: then the timeline starts with its earliest data.
pub fn timeline(
    range: Range,
    work: &HashMap<i64, f64>,
    gaps: &[Gap],
    not_before: i64,
) -> Vec<Point> {
    let step_secs = range.step as f64 / 1000.0;
    let not_before = work.keys().copied().fold(not_before, i64::min);
    let mut points = Vec::new();
    let mut t = range.from;
    while t < range.to {
        if t + range.step > not_before {
            let hashrate = match work.get(&t) {
                Some(w) => Some(w / step_secs),
                None if gaps.iter().any(|g| g.overlaps(t, t + range.step)) => None,
                None => Some(0.0),
            };
            points.push(Point { t, hashrate });
        }
        t += range.step;
    }
    points
}

/// Mean hashrate of `work` hashes done over `[from, to)`, or `None` for an
/// empty span.
pub fn mean_hashrate(work: f64, from: i64, to: i64) -> Option<f64> {
    (to > from).then(|| work / ((to - from) as f64 / 1000.0))
}

/// The window a "current hashrate" covers: the last `minutes` complete
/// minutes before `now`, but not before `since` (rounded up to a whole
/// minute, as the minute it falls in is partial). `None` until one whole
/// minute has passed.
pub fn recent_window(now: i64, minutes: i64, since: i64) -> Option<(i64, i64)> {
    let to = now.div_euclid(MINUTE_MS) * MINUTE_MS;
    let since = (since + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS;
    let from = (to - minutes * MINUTE_MS).max(since);
    (from < to).then_some((from, to))
}

/// The accepted work of one live connection over its last minutes, kept in
/// memory: its hashrate without a query, and its own where the store's
/// series key is shared by several connections (miners of one name).
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct RecentWork {
    /// Work per minute (start ms), oldest first; the current minute and the
    /// [`RECENT_MINUTES`] before it at most.
    minutes: Vec<(i64, f64)>,
}

impl RecentWork {
    pub fn add(&mut self, t: i64, work: f64) {
        let minute = t.div_euclid(MINUTE_MS) * MINUTE_MS;
        match self.minutes.binary_search_by_key(&minute, |(m, _)| *m) {
            Ok(i) => self.minutes[i].1 += work,
            Err(i) => self.minutes.insert(i, (minute, work)),
        }
        let keep = RECENT_MINUTES as usize + 1;
        if self.minutes.len() > keep {
            self.minutes.drain(..self.minutes.len() - keep);
        }
    }

    /// Mean hashrate over the window of [`recent_window`].
    pub fn hashrate(&self, now: i64, since: i64) -> Option<f64> {
        let (from, to) = recent_window(now, RECENT_MINUTES, since)?;
        let work = self
            .minutes
            .iter()
            .filter(|(m, _)| (from..to).contains(m))
            .map(|(_, w)| w)
            .sum();
        mean_hashrate(work, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_123;

    #[test]
    fn ranges_end_at_the_last_complete_step_and_downsample_long_spans() {
        let hour = Range::last_hours(1, NOW);
        assert_eq!(hour.step, MINUTE_MS);
        assert_eq!(hour.to % MINUTE_MS, 0);
        assert!(hour.to <= NOW && NOW - hour.to < MINUTE_MS);
        assert_eq!(hour.to - hour.from, HOUR_MS);

        assert_eq!(Range::last_hours(24, NOW).step, 5 * MINUTE_MS);
        assert_eq!(Range::last_hours(24 * 7, NOW).step, HOUR_MS);
        let points = |hours| {
            let r = Range::last_hours(hours, NOW);
            (r.to - r.from) / r.step
        };
        assert_eq!((points(1), points(24), points(24 * 7)), (60, 288, 168));
    }

    #[test]
    fn timeline_fills_quiet_steps_with_zero_and_unknown_steps_with_none() {
        let range = Range {
            from: 0,
            to: 5 * MINUTE_MS,
            step: MINUTE_MS,
        };
        let work = HashMap::from([(0, 600.0), (3 * MINUTE_MS, 60.0)]);
        // Down from the middle of step 2 into step 3; step 3 got replayed data.
        let gaps = [Gap {
            from: 2 * MINUTE_MS + 30_000,
            to: 3 * MINUTE_MS + 10_000,
        }];
        let points = timeline(range, &work, &gaps, 0);
        let values: Vec<_> = points.iter().map(|p| p.hashrate).collect();
        assert_eq!(
            values,
            [Some(10.0), Some(0.0), None, Some(1.0), Some(0.0)],
            "{points:?}"
        );
        assert_eq!(points[4].t, 4 * MINUTE_MS);
    }

    #[test]
    fn timeline_starts_when_the_service_first_started() {
        let range = Range {
            from: 0,
            to: 5 * MINUTE_MS,
            step: MINUTE_MS,
        };
        let points = timeline(range, &HashMap::new(), &[], 2 * MINUTE_MS + 1);
        assert_eq!(points.first().map(|p| p.t), Some(2 * MINUTE_MS));
        assert_eq!(points.len(), 3);
        // Replayed data from before the first start is shown from its first step.
        let work = HashMap::from([(MINUTE_MS, 60.0)]);
        let points = timeline(range, &work, &[], 2 * MINUTE_MS + 1);
        assert_eq!(
            points.first().map(|p| (p.t, p.hashrate)),
            Some((MINUTE_MS, Some(1.0)))
        );
    }

    #[test]
    fn recent_window_covers_whole_minutes_since_start() {
        let now = 10 * MINUTE_MS + 5_000;
        assert_eq!(recent_window(now, 10, 0), Some((0, 10 * MINUTE_MS)));
        assert_eq!(
            recent_window(now, 3, 0),
            Some((7 * MINUTE_MS, 10 * MINUTE_MS))
        );
        // Started inside minute 8: minutes 9 only.
        assert_eq!(
            recent_window(now, 10, 8 * MINUTE_MS + 1),
            Some((9 * MINUTE_MS, 10 * MINUTE_MS))
        );
        assert_eq!(recent_window(now, 10, 9 * MINUTE_MS + 1), None);
        assert_eq!(mean_hashrate(600.0, 0, MINUTE_MS), Some(10.0));
        assert_eq!(mean_hashrate(600.0, 5, 5), None);
    }

    #[test]
    fn recent_work_gives_the_mean_over_whole_minutes_and_forgets_older_ones() {
        let mut recent = RecentWork::default();
        // Minute 0 is partial (connected inside it), minute 11 is current.
        for minute in 0..12 {
            recent.add(minute * MINUTE_MS + 30_000, 600.0);
        }
        recent.add(5 * MINUTE_MS, 600.0); // late: counts in its own minute
        let now = 11 * MINUTE_MS + 10;
        // Minutes 1 to 10: 11 × 600 hashes over 600 s.
        assert_eq!(recent.hashrate(now, 30_000), Some(11.0));
        assert_eq!(recent.minutes.len(), RECENT_MINUTES as usize + 1);
        assert_eq!(recent.hashrate(now, 10 * MINUTE_MS + 1), None);
        assert_eq!(RecentWork::default().hashrate(now, 0), Some(0.0));
    }
}

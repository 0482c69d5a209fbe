//! Server-side SVG line charts of hashrate over time: no script, no external
//! resource, readable units on both axes. Unknown points break the line;
//! the service's own downtime is drawn as shaded bands.

use std::fmt::Write as _;

use crate::format;
use crate::series::{Gap, Point, HOUR_MS, MINUTE_MS};

/// Line colours, chosen to read on a dark background.
pub const PALETTE: [&str; 8] = [
    "#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292",
];

/// One line of a chart.
pub struct Line {
    pub label: String,
    pub points: Vec<Point>,
}

/// A chart over `[from, to)`.
pub struct Chart<'a> {
    pub from: i64,
    pub to: i64,
    pub lines: &'a [Line],
    pub gaps: &'a [Gap],
    pub width: u32,
    pub height: u32,
}

const LEFT: f64 = 72.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;
const LEGEND: f64 = 20.0;

impl Chart<'_> {
    /// What the shading means, or that there is none, for under the chart.
    pub fn gap_note(&self) -> &'static str {
        if self.gaps.iter().any(|g| g.overlaps(self.from, self.to)) {
            "shaded: the stats service was down"
        } else {
            "the stats service ran throughout"
        }
    }

    pub fn render(&self) -> String {
        let legend = if self.lines.len() > 1 { LEGEND } else { 0.0 };
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let plot = Plot {
            x0: LEFT,
            x1: w - RIGHT,
            y0: TOP + legend,
            y1: h - BOTTOM,
            from: self.from,
            to: self.to.max(self.from + 1),
            top: y_scale(self.lines).1,
        };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" class="chart" role="img" aria-label="hashrate chart" font-family="system-ui, sans-serif" font-size="11">"##,
            self.width, self.height
        );
        self.gap_bands(&mut svg, &plot);
        self.axes(&mut svg, &plot);
        let mut any = false;
        for (i, line) in self.lines.iter().enumerate() {
            any |= line.points.iter().any(|p| p.hashrate.is_some());
            draw_line(&mut svg, &plot, line, PALETTE[i % PALETTE.len()]);
        }
        if !any {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#8a94a6">no data in this range</text>"##,
                (plot.x0 + plot.x1) / 2.0,
                (plot.y0 + plot.y1) / 2.0
            );
        }
        if legend > 0.0 {
            let mut x = LEFT;
            for (i, line) in self.lines.iter().enumerate() {
                let _ = write!(
                    svg,
                    r##"<rect x="{x:.1}" y="4" width="10" height="10" rx="2" fill="{}"/><text x="{:.1}" y="13" fill="#c9d1d9">{}</text>"##,
                    PALETTE[i % PALETTE.len()],
                    x + 14.0,
                    escape(&line.label)
                );
                x += 24.0 + 6.5 * line.label.chars().count() as f64;
            }
        }
        svg.push_str("</svg>");
        svg
    }

    fn gap_bands(&self, svg: &mut String, plot: &Plot) {
        for gap in self.gaps.iter().filter(|g| g.overlaps(plot.from, plot.to)) {
            let x0 = plot.x(gap.from.max(plot.from));
            let x1 = plot.x(gap.to.min(plot.to));
            // At least 2 px, so a short outage still shows.
            let width = (x1 - x0).max(2.0);
            let _ = write!(
                svg,
                r##"<rect class="gap" x="{x0:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="#f0883e" fill-opacity="0.18"><title>stats service down {} to {}</title></rect>"##,
                plot.y0,
                plot.y1 - plot.y0,
                format::datetime(gap.from),
                format::datetime(gap.to),
            );
            if width > 70.0 {
                let _ = write!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#f0883e">service down</text>"##,
                    x0 + width / 2.0,
                    plot.y0 + 14.0
                );
            }
        }
    }

    fn axes(&self, svg: &mut String, plot: &Plot) {
        let (step, top) = y_scale(self.lines);
        let mut v = 0.0;
        while v <= top + step / 2.0 {
            let y = plot.y(v);
            let _ = write!(
                svg,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#30363d"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#8a94a6">{}</text>"##,
                plot.x0,
                plot.x1,
                plot.x0 - 6.0,
                y + 4.0,
                format::hashrate(v)
            );
            v += step;
        }
        let span = plot.to - plot.from;
        let days = span > 2 * 24 * HOUR_MS;
        // Over several days, one label per day at most (labels are dates).
        let tick = if days {
            time_tick(span).max(24 * HOUR_MS)
        } else {
            time_tick(span)
        };
        let mut t = (plot.from + tick - 1).div_euclid(tick) * tick;
        while t <= plot.to {
            let x = plot.x(t);
            let label = if days {
                format::month_day(t)
            } else {
                format::clock(t)
            };
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#30363d"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#8a94a6">{label}</text>"##,
                plot.y1,
                plot.y1 + 4.0,
                plot.y1 + 16.0
            );
            t += tick;
        }
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#8a94a6"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#8a94a6">UTC</text>"##,
            plot.x0,
            plot.y1,
            plot.x1,
            plot.y1,
            // Left of the first time label, clear of the tick labels.
            plot.x0 - 6.0,
            plot.y1 + 16.0
        );
    }
}

struct Plot {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    from: i64,
    to: i64,
    top: f64,
}

impl Plot {
    fn x(&self, t: i64) -> f64 {
        self.x0 + (self.x1 - self.x0) * (t - self.from) as f64 / (self.to - self.from) as f64
    }
    fn y(&self, v: f64) -> f64 {
        self.y1 - (self.y1 - self.y0) * (v / self.top)
    }
}

/// One path per unbroken run of known points; a run of one point is a dot.
fn draw_line(svg: &mut String, plot: &Plot, line: &Line, colour: &str) {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut run = Vec::new();
    for p in &line.points {
        match p.hashrate {
            Some(v) => run.push((plot.x(p.t), plot.y(v))),
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    for run in runs {
        if let [(x, y)] = run[..] {
            let _ = write!(
                svg,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"##
            );
            continue;
        }
        let mut d = String::new();
        for (i, (x, y)) in run.iter().enumerate() {
            let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { " L" });
        }
        let _ = write!(
            svg,
            r##"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"/>"##
        );
    }
}

/// The y grid step and the axis top: a 1-2-5 step giving about four lines
/// above the highest value.
fn y_scale(lines: &[Line]) -> (f64, f64) {
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.hashrate))
        .fold(0.0_f64, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 4.0);
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

/// A time tick interval giving at most about seven labels over `span`.
fn time_tick(span: i64) -> i64 {
    const TICKS: [i64; 14] = [
        MINUTE_MS,
        2 * MINUTE_MS,
        5 * MINUTE_MS,
        10 * MINUTE_MS,
        15 * MINUTE_MS,
        30 * MINUTE_MS,
        HOUR_MS,
        2 * HOUR_MS,
        3 * HOUR_MS,
        6 * HOUR_MS,
        12 * HOUR_MS,
        24 * HOUR_MS,
        48 * HOUR_MS,
        7 * 24 * HOUR_MS,
    ];
    TICKS
        .into_iter()
        .find(|t| span / t <= 7)
        .unwrap_or(30 * 24 * HOUR_MS)
}

/// Escapes text for XML and HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `svg` is well-formed XML as far as this renderer can get
    /// it wrong: tags balanced and properly nested, attribute values quoted,
    /// no bare `&` or `<` in text. Returns the element names in order.
    fn well_formed(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().expect("tag name").to_string();
            check_attributes(&tag[name.len()..]);
            names.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        names
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
                "bare & in {text:?}"
            );
        }
    }

    fn check_attributes(mut attrs: &str) {
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return;
            }
            let eq = attrs.find('=').expect("attribute without value");
            assert!(!attrs[..eq].contains(char::is_whitespace), "{attrs}");
            let value = &attrs[eq + 1..];
            assert!(value.starts_with('"'), "unquoted attribute in {attrs}");
            let end = value[1..].find('"').expect("unterminated attribute") + 1;
            check_text(&value[1..end]);
            assert!(!value[1..end].contains('<'));
            attrs = &value[end + 1..];
        }
    }

    fn points(values: &[Option<f64>]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                t: i as i64 * MINUTE_MS,
                hashrate: *v,
            })
            .collect()
    }

    #[test]
    fn unknown_points_break_the_line_and_downtime_is_shaded() {
        let lines = [Line {
            label: "pool".into(),
            points: points(&[
                Some(1e9),
                Some(2e9),
                None,
                None,
                Some(1.5e9),
                Some(1.4e9),
                Some(1.6e9),
                None,
                Some(1e9),
            ]),
        }];
        let gaps = [Gap {
            from: 2 * MINUTE_MS,
            to: 4 * MINUTE_MS,
        }];
        let svg = Chart {
            from: 0,
            to: 9 * MINUTE_MS,
            lines: &lines,
            gaps: &gaps,
            width: 800,
            height: 240,
        }
        .render();
        let names = well_formed(&svg);
        assert_eq!(names[0], "svg");
        // Two runs drawn as paths, the lone last point as a dot.
        assert_eq!(names.iter().filter(|n| *n == "path").count(), 2, "{svg}");
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 1);
        assert_eq!(svg.matches("class=\"gap\"").count(), 1);
        assert!(svg.contains("stats service down 1970-01-01 00:02:00 UTC"));
        let chart = |gaps| Chart {
            from: 0,
            to: 9 * MINUTE_MS,
            lines: &[],
            gaps,
            width: 100,
            height: 100,
        };
        assert_eq!(
            chart(&gaps).gap_note(),
            "shaded: the stats service was down"
        );
        assert_eq!(chart(&[]).gap_note(), "the stats service ran throughout");
        // Readable units on the y axis, clock times on the x axis.
        assert!(svg.contains(">2.00 GH/s<"), "{svg}");
        assert!(svg.contains(">00:04<"));
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn several_lines_get_a_legend_with_escaped_names_and_empty_charts_say_so() {
        let lines = [
            Line {
                label: "alice <rig & co>".into(),
                points: points(&[Some(5e3), Some(6e3)]),
            },
            Line {
                label: "bob".into(),
                points: points(&[Some(1e3), None]),
            },
        ];
        let svg = Chart {
            from: 0,
            to: 3 * 24 * HOUR_MS,
            lines: &lines,
            gaps: &[],
            width: 600,
            height: 200,
        }
        .render();
        well_formed(&svg);
        assert!(svg.contains("alice &lt;rig &amp; co&gt;"));
        assert!(svg.contains(">Jan 2<"), "day labels over days: {svg}");

        let empty = Chart {
            from: 0,
            to: HOUR_MS,
            lines: &[],
            gaps: &[],
            width: 600,
            height: 200,
        }
        .render();
        well_formed(&empty);
        assert!(empty.contains("no data in this range"));
        assert!(empty.contains(">0 H/s<"));
    }

    #[test]
    fn y_scale_steps_are_round_and_cover_the_maximum() {
        let line = |v| {
            [Line {
                label: String::new(),
                points: points(&[Some(v)]),
            }]
        };
        assert_eq!(y_scale(&line(7.3e9)), (2e9, 8e9));
        assert_eq!(y_scale(&line(100.0)), (50.0, 100.0));
        assert_eq!(y_scale(&line(0.0)), (1.0, 4.0));
        assert_eq!(time_tick(HOUR_MS), 10 * MINUTE_MS);
        assert_eq!(time_tick(24 * HOUR_MS), 6 * HOUR_MS);
        assert_eq!(time_tick(7 * 24 * HOUR_MS), 24 * HOUR_MS);
    }
}

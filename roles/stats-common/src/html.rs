//! Server-side HTML of the dashboards: one self-contained page (inline CSS,
//! inline SVG, no script, no external URL), refreshed by the browser.
//!
//! Every figure that shows an API value is written by [`stat`] from the
//! same JSON the API serves, and carries `data-stat="<JSON pointer into
//! /api/stats>"` and `data-format="<kind>"`, so a test can check the page
//! against the API with [`format_value`].

use std::fmt::Write as _;

use serde_json::Value;

use crate::api::Hashrate;
pub use crate::chart::escape;
use crate::chart::{Chart, Line};
use crate::format;

/// Seconds between automatic reloads of a dashboard.
pub const REFRESH_SECS: u32 = 10;

/// Width of the dashboards' charts (the SVG scales to the page).
pub const CHART_WIDTH: u32 = 1200;

/// Chart ranges a dashboard offers: (label, hours).
pub const RANGES: [(&str, u32); 3] = [("1h", 1), ("24h", 24), ("7d", 24 * 7)];

/// The hours of the `range` query parameter of a dashboard (1h by default).
pub fn range_hours(range: Option<&str>) -> (&'static str, u32) {
    RANGES
        .into_iter()
        .find(|(label, _)| Some(*label) == range)
        .unwrap_or(RANGES[0])
}

/// How a JSON value is written on the page. `null` reads as a word, never
/// as "?".
pub fn format_value(kind: &str, value: &Value) -> String {
    match (kind, value) {
        ("count", Value::Number(n)) => format::count(n.as_u64().unwrap_or(0)),
        ("mint-count", Value::Null) => "waiting for the mint".into(),
        ("mint-count", Value::Number(n)) => format::count(n.as_u64().unwrap_or(0)),
        ("wallet", Value::Null) => "not reported yet".into(),
        ("wallet", Value::Number(n)) => format::count(n.as_u64().unwrap_or(0)),
        ("hashrate", Value::Number(n)) => format::hashrate(n.as_f64().unwrap_or(0.0)),
        ("hashrate", Value::Null) => "measuring".into(),
        ("datetime", Value::Number(n)) => format::datetime(n.as_i64().unwrap_or(0)),
        ("datetime", Value::Null) => "never".into(),
        ("bool", Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Null) => "none".into(),
        (_, other) => other.to_string(),
    }
}

/// A figure from the API JSON `api` at `pointer`, as a tagged `<span>`.
pub fn stat(api: &Value, pointer: &str, kind: &str) -> String {
    let value = api.pointer(pointer).unwrap_or(&Value::Null);
    format!(
        r#"<span data-stat="{}" data-format="{kind}">{}</span>"#,
        escape(pointer),
        escape(&format_value(kind, value))
    )
}

/// A status pill for a link state ("up", "down" or "unknown") at `pointer`.
pub fn pill(api: &Value, pointer: &str) -> String {
    let state = api
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let class = match state {
        "up" => "up",
        "down" => "down",
        _ => "unknown",
    };
    format!(
        r#"<span class="pill {class}" data-stat="{}" data-format="text">{}</span>"#,
        escape(pointer),
        escape(state)
    )
}

/// Whether the publisher (pool or translator) is connected to the
/// service, as a pill.
pub fn publisher_pill(api: &Value) -> String {
    let connected = api.pointer("/publisher/connected") == Some(&Value::Bool(true));
    let (class, text) = if connected {
        ("up", "yes")
    } else {
        ("down", "no")
    };
    format!(
        r#"<span class="pill {class}" data-stat="/publisher/connected" data-format="bool">{text}</span>"#
    )
}

/// A row of summary cards (each from [`card`]).
pub fn cards(cards: &[String]) -> String {
    format!(r#"<div class="cards">{}</div>"#, cards.concat())
}

/// One summary card: a label and a figure (already HTML).
pub fn card(label: &str, figure: &str, note: &str) -> String {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(r#"<div class="note">{}</div>"#, escape(note))
    };
    format!(
        r#"<div class="card"><div class="label">{}</div><div class="value">{figure}</div>{note}</div>"#,
        escape(label)
    )
}

/// A card whose figure is the API value at `pointer` (see [`stat`]).
pub fn stat_card(api: &Value, label: &str, pointer: &str, kind: &str, note: &str) -> String {
    card(label, &stat(api, pointer, kind), note)
}

/// The card of the hashrate every `/api/stats` starts with ([`Summary`](crate::api::Summary)).
pub fn hashrate_card(api: &Value) -> String {
    stat_card(
        api,
        "Hashrate",
        "/hashrate",
        "hashrate",
        "accepted shares, last 10 min",
    )
}

/// The cards of the shares accepted and rejected every `/api/stats` starts
/// with ([`Summary`](crate::api::Summary)).
pub fn share_cards(api: &Value) -> [String; 2] {
    [
        stat_card(api, "Shares accepted", "/shares_accepted", "count", ""),
        stat_card(api, "Shares rejected", "/shares_rejected", "count", ""),
    ]
}

/// A section of the publisher's links in a row: each a name and its pill
/// (already HTML).
pub fn links_section(title: &str, links: &[(&str, String)]) -> String {
    let mut out = String::from(r#"<div class="links">"#);
    for (name, pill) in links {
        let _ = write!(
            out,
            r#"<div><span class="name">{}</span>{pill}</div>"#,
            escape(name)
        );
    }
    out.push_str("</div>");
    section(title, "", &out)
}

/// A column of [`list_section`]: its header, the field of each item, the
/// field's format (as [`stat`] takes it) and the cell's class, if any.
pub struct Column {
    header: &'static str,
    field: &'static str,
    kind: &'static str,
    class: &'static str,
}

impl Column {
    pub const fn plain(header: &'static str, field: &'static str, kind: &'static str) -> Column {
        Column {
            header,
            field,
            kind,
            class: "",
        }
    }

    /// Right-aligned, for numbers.
    pub const fn num(header: &'static str, field: &'static str, kind: &'static str) -> Column {
        Column {
            class: "num",
            ..Column::plain(header, field, kind)
        }
    }

    /// Monospaced, for hashes and ids.
    pub const fn mono(header: &'static str, field: &'static str, kind: &'static str) -> Column {
        Column {
            class: "mono",
            ..Column::plain(header, field, kind)
        }
    }

    // The figures of a connection (a proxy at the pool, a miner at the
    // translator) that both services list under the same names.
    pub const CONNECTED_SINCE: Column =
        Column::plain("Connected since", "connected_since", "datetime");
    pub const HASHRATE: Column = Column::num("Hashrate", "hashrate", "hashrate");
    pub const ACCEPTED: Column = Column::num("Accepted", "shares_accepted", "count");
    pub const REJECTED: Column = Column::num("Rejected", "shares_rejected", "count");
    pub const LAST_SHARE: Column = Column::plain("Last share", "last_share", "datetime");
}

/// A section holding a table with a row per item of the array at `list` in
/// `api`, each cell a [`stat`] of the item.
pub fn list_section(
    title: &str,
    api: &Value,
    list: &str,
    columns: &[Column],
    empty: &str,
    note: &str,
) -> String {
    let items = api
        .pointer(list)
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let rows: Vec<String> = (0..items)
        .map(|i| {
            let mut row = String::new();
            for c in columns {
                let figure = stat(api, &format!("{list}/{i}/{}", c.field), c.kind);
                if c.class.is_empty() {
                    let _ = write!(row, "<td>{figure}</td>");
                } else {
                    let _ = write!(row, r#"<td class="{}">{figure}</td>"#, c.class);
                }
            }
            row
        })
        .collect();
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    section(title, "", &(table(&headers, &rows, empty) + note))
}

/// Under a list cut to [`MAX_LISTED`](crate::api::MAX_LISTED): how many
/// more there are (the count at `pointer`); nothing when none.
pub fn left_out_note(api: &Value, pointer: &str, what: &str) -> String {
    if api.pointer(pointer).and_then(Value::as_u64).unwrap_or(0) == 0 {
        return String::new();
    }
    format!(
        r#"<div class="legend-note">and {} more {what}: the {} with the most hashrate are listed</div>"#,
        stat(api, pointer, "count"),
        crate::api::MAX_LISTED
    )
}

/// A table with a header row; `rows` are already HTML `<td>` cells.
pub fn table(headers: &[&str], rows: &[String], empty: &str) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            r#"<tr><td class="empty" colspan="{}">{}</td></tr>"#,
            headers.len(),
            escape(empty)
        );
    }
    for row in rows {
        let _ = write!(out, "<tr>{row}</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The chart range links, the current one highlighted.
pub fn range_nav(current: &str) -> String {
    let mut out = String::from(r#"<nav class="ranges">"#);
    for (label, _) in RANGES {
        let class = if label == current {
            " class=\"on\""
        } else {
            ""
        };
        let _ = write!(out, r#"<a href="?range={label}"{class}>{label}</a>"#);
    }
    out.push_str("</nav>");
    out
}

/// A section with a heading.
pub fn section(title: &str, extra_heading: &str, body: &str) -> String {
    format!(
        r#"<section><div class="head"><h2>{}</h2>{extra_heading}</div>{body}</section>"#,
        escape(title)
    )
}

/// The section charting `chart` (from `/api/hashrate`) as one line.
pub fn hashrate_section(
    title: &str,
    line: &str,
    height: u32,
    chart: &Hashrate,
    range: &str,
) -> String {
    let spec = Chart {
        from: chart.span.from,
        to: chart.span.to,
        lines: &[Line {
            label: line.into(),
            points: chart.points.clone(),
        }],
        gaps: &chart.gaps,
        width: CHART_WIDTH,
        height,
    };
    let svg = spec.render();
    section(
        title,
        &range_nav(range),
        &format!(
            r#"{svg}<div class="legend-note">{} points of {} · {}</div>"#,
            chart.points.len(),
            format::duration(chart.span.step_secs * 1000),
            spec.gap_note()
        ),
    )
}

/// The whole page of `service` as of `now`; the footer links the JSON
/// endpoints `api` (each shown without its query).
pub fn page(title: &str, service: &str, now: i64, body: &str, api: &[&str]) -> String {
    let subtitle = format!("{service} · {}", format::datetime(now));
    let footer: Vec<String> = api
        .iter()
        .map(|href| {
            let path = href.split('?').next().unwrap_or(href);
            format!(r#"<a href="{href}">{path}</a>"#)
        })
        .collect();
    let footer = format!("JSON: {}", footer.join(" · "));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<title>{title}</title>
<style>{CSS}</style></head>
<body><header><h1>{title}</h1><div class="sub">{subtitle}</div></header>
<main>{body}</main>
<footer>{footer} · refreshes every {REFRESH_SECS} s · times in UTC</footer>
</body></html>
"#,
        title = escape(title),
    )
}

const CSS: &str = "
:root{color-scheme:dark}
*{box-sizing:border-box}
body{margin:0;background:#0d1117;color:#c9d1d9;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif}
header{padding:18px 28px 10px;border-bottom:1px solid #21262d;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
h1{font-size:20px;margin:0;color:#f0f6fc;font-weight:600}
h2{font-size:15px;margin:0;color:#f0f6fc;font-weight:600}
.sub{color:#8a94a6}
main{padding:18px 28px;display:grid;gap:18px;max-width:1280px}
section{background:#161b22;border:1px solid #21262d;border-radius:8px;padding:14px 16px}
.head{display:flex;align-items:center;justify-content:space-between;margin-bottom:10px;gap:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px}
.card{background:#161b22;border:1px solid #21262d;border-radius:8px;padding:12px 14px}
.card .label{color:#8a94a6;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;color:#f0f6fc;margin-top:4px;font-variant-numeric:tabular-nums}
.card .note{color:#8a94a6;font-size:12px;margin-top:2px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th{text-align:left;color:#8a94a6;font-weight:500;font-size:12px;text-transform:uppercase;letter-spacing:.04em;padding:6px 8px;border-bottom:1px solid #30363d}
td{padding:6px 8px;border-bottom:1px solid #21262d;white-space:nowrap}
td.num,th.num{text-align:right}
td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
td.empty{color:#8a94a6;text-align:center;padding:14px}
tbody tr:hover{background:#1c2330}
.pill{display:inline-block;padding:1px 10px;border-radius:999px;font-size:12px;font-weight:600}
.pill.up{background:#12361f;color:#56d364;border:1px solid #238636}
.pill.down{background:#3d1214;color:#f85149;border:1px solid #da3633}
.pill.unknown{background:#272b33;color:#8a94a6;border:1px solid #30363d}
.links{display:flex;gap:18px;flex-wrap:wrap;align-items:center}
.links span.name{color:#8a94a6;margin-right:6px}
.ranges a{color:#8a94a6;text-decoration:none;padding:2px 10px;border:1px solid #30363d;border-radius:6px;margin-left:6px}
.ranges a.on{color:#0d1117;background:#4fc3f7;border-color:#4fc3f7}
svg.chart{width:100%;height:auto;display:block}
.legend-note{color:#8a94a6;font-size:12px;margin-top:6px}
footer{padding:10px 28px 24px;color:#6e7681;font-size:12px}
footer a{color:#8a94a6}
";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_carry_their_pointer_and_never_a_question_mark() {
        let api = json!({"a": 1234, "m": null, "h": 1.5e9, "name": "<x>", "links": {"mint": "up"}});
        assert_eq!(
            stat(&api, "/a", "count"),
            r#"<span data-stat="/a" data-format="count">1,234</span>"#
        );
        assert!(stat(&api, "/m", "mint-count").contains(">waiting for the mint<"));
        assert!(stat(&api, "/h", "hashrate").contains(">1.50 GH/s<"));
        assert!(stat(&api, "/name", "text").contains(">&lt;x&gt;<"));
        assert!(stat(&api, "/missing", "hashrate").contains(">measuring<"));
        assert!(pill(&api, "/links/mint").contains(r#"class="pill up""#));
        assert!(pill(&api, "/links/tp").contains(">unknown<"));
        for kind in [
            "count",
            "mint-count",
            "wallet",
            "hashrate",
            "datetime",
            "text",
            "bool",
        ] {
            assert!(!format_value(kind, &Value::Null).contains('?'), "{kind}");
        }
    }

    #[test]
    fn list_sections_have_a_row_per_item() {
        let api = json!({"items": [{"n": 1, "h": "ab"}, {"n": 2, "h": "cd"}]});
        let columns = [
            Column::num("N", "n", "count"),
            Column::mono("Hash", "h", "text"),
        ];
        let html = list_section("Items", &api, "/items", &columns, "none yet", "");
        assert_eq!(html.matches("<tr>").count(), 3, "header and two rows");
        assert!(html.contains(
            r#"<td class="num"><span data-stat="/items/1/n" data-format="count">2</span></td><td class="mono">"#
        ));
        let empty = list_section("Items", &json!({}), "/items", &columns, "none yet", "");
        assert!(empty.contains(">none yet<"));
    }

    #[test]
    fn pages_are_self_contained() {
        let html = page(
            "Pool",
            "pool-stats",
            0,
            &table(&["a"], &[], "nothing yet"),
            &["/api/stats", "/api/hashrate?hours=24"],
        );
        assert!(html.contains("nothing yet"));
        assert!(html.contains("http-equiv=\"refresh\""));
        assert!(html.contains(
            r#"JSON: <a href="/api/stats">/api/stats</a> · <a href="/api/hashrate?hours=24">/api/hashrate</a> · refreshes"#
        ));
        // No external resource of any kind: no scheme-qualified URL at all.
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script"));
        assert_eq!(range_hours(Some("7d")), ("7d", 168));
        assert_eq!(range_hours(Some("bogus")), ("1h", 1));
    }
}

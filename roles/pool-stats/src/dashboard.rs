//! The pool dashboard: one server-rendered page from the same JSON as
//! `/api/stats` and `/api/hashrate`.

use stats_common::chart::{Chart, Line};
use stats_common::html::{self, card, pill, publisher_pill, section, stat, table};

use crate::api::{Hashrate, Stats};

pub fn render(stats: &Stats, chart: &Hashrate, range: &str) -> String {
    let api = serde_json::to_value(stats).expect("stats serialize");
    let mut body = String::new();

    let redeemed_note = if stats.mint.is_some() {
        "from the mint"
    } else {
        "the pool relays the mint's counts"
    };
    body.push_str(r#"<div class="cards">"#);
    for c in [
        card(
            "Hashrate",
            &stat(&api, "/hashrate", "hashrate"),
            "accepted shares, last 10 min",
        ),
        card(
            "Shares accepted",
            &stat(&api, "/shares_accepted", "count"),
            "",
        ),
        card(
            "Shares rejected",
            &stat(&api, "/shares_rejected", "count"),
            "",
        ),
        card(
            "Quotes created",
            &stat(&api, "/quotes_created", "count"),
            "",
        ),
        card(
            "Quotes redeemed",
            &stat(&api, "/quotes_redeemed", "mint-count"),
            redeemed_note,
        ),
        card("ehash created", &stat(&api, "/ehash_created", "count"), ""),
        card("Blocks found", &stat(&api, "/blocks_found", "count"), ""),
        card(
            "Proxies",
            &format!("{}", stats.proxies.len()),
            "connected now",
        ),
    ] {
        body.push_str(&c);
    }
    body.push_str("</div>");

    let links = format!(
        r#"<div class="links"><div><span class="name">Pool publisher</span>{}</div><div><span class="name">Template provider</span>{}</div><div><span class="name">Mint</span>{}</div></div>"#,
        publisher_pill(&api),
        pill(&api, "/links/template_provider/state"),
        pill(&api, "/links/mint/state"),
    );
    body.push_str(&section("Links", "", &links));

    let chart_spec = Chart {
        from: chart.from,
        to: chart.to,
        lines: &[Line {
            label: "pool".into(),
            points: chart.points.clone(),
        }],
        gaps: &chart.gaps,
        width: 1200,
        height: 260,
    };
    let svg = chart_spec.render();
    body.push_str(&section(
        "Pool hashrate",
        &html::range_nav(range),
        &format!(
            r#"{svg}<div class="legend-note">{} points of {} · {}</div>"#,
            chart.points.len(),
            stats_common::format::duration(chart.step_secs * 1000),
            chart_spec.gap_note()
        ),
    ));

    let rows: Vec<String> = (0..stats.proxies.len())
        .map(|i| {
            let p = |field: &str, kind: &str| stat(&api, &format!("/proxies/{i}/{field}"), kind);
            format!(
                r#"<td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td>"#,
                p("downstream_id", "text"),
                p("connected_since", "datetime"),
                p("channels", "count"),
                p("hashrate", "hashrate"),
                p("shares_accepted", "count"),
                p("shares_rejected", "count"),
                p("quotes", "count"),
                p("ehash", "count"),
                p("last_share", "datetime"),
            )
        })
        .collect();
    body.push_str(&section(
        "Connected proxies",
        "",
        &table(
            &[
                "Downstream",
                "Connected since",
                "Channels",
                "Hashrate",
                "Accepted",
                "Rejected",
                "Quotes",
                "ehash",
                "Last share",
            ],
            &rows,
            "no proxy connected",
        ),
    ));

    let mint = if stats.mint.is_some() {
        format!(
            r#"<div class="cards">{}{}{}{}{}</div><div class="legend-note">as last reported by the mint, {}</div>"#,
            card(
                "Quotes created",
                &stat(&api, "/quotes_created", "count"),
                "by this pool"
            ),
            card(
                "Quotes paid",
                &stat(&api, "/mint/quotes_paid", "count"),
                "not yet minted"
            ),
            card(
                "Quotes issued",
                &stat(&api, "/mint/quotes_issued", "count"),
                "redeemed as ecash"
            ),
            card(
                "ehash quoted",
                &stat(&api, "/mint/ehash_quoted", "count"),
                ""
            ),
            card(
                "ehash issued",
                &stat(&api, "/mint/ehash_issued", "count"),
                ""
            ),
            stat(&api, "/mint/updated_at", "datetime"),
        )
    } else {
        r#"<p class="legend-note">Waiting for the mint: the pool relays the mint's counters once its mint link answers a stats request.</p>"#.to_string()
    };
    body.push_str(&section("Mint", "", &mint));

    let rows: Vec<String> = (0..stats.recent_blocks.len())
        .map(|i| {
            let b = |field: &str, kind: &str| {
                stat(&api, &format!("/recent_blocks/{i}/{field}"), kind)
            };
            format!(
                r#"<td class="num">{}</td><td class="mono">{}</td><td class="num">{}</td><td>{}</td>"#,
                b("height", "text"),
                b("hash", "text"),
                b("channel_id", "text"),
                b("timestamp", "datetime"),
            )
        })
        .collect();
    body.push_str(&section(
        "Blocks found",
        "",
        &table(
            &["Height", "Hash", "Channel", "Found"],
            &rows,
            "no block found yet",
        ),
    ));

    html::page(
        "Hashpool · Pool",
        &format!("pool-stats · {}", stats_common::format::datetime(stats.now)),
        &body,
        r#"JSON: <a href="/api/stats">/api/stats</a> · <a href="/api/hashrate?hours=24">/api/hashrate</a> · <a href="/api/miners?hours=24">/api/miners</a> · <a href="/api/blocks">/api/blocks</a> · <a href="/metrics">/metrics</a>"#,
    )
}

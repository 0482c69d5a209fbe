//! The proxy dashboard: one server-rendered page from the same JSON as
//! `/api/stats`, `/api/hashrate` and `/api/miners`.

use stats_common::chart::{Chart, Line, PALETTE};
use stats_common::html::{self, card, pill, publisher_pill, section, stat, table};

use crate::api::{Hashrate, Miners, Stats};

pub fn render(stats: &Stats, total: &Hashrate, per_miner: &Miners, range: &str) -> String {
    let api = serde_json::to_value(stats).expect("stats serialize");
    let mut body = String::new();

    body.push_str(r#"<div class="cards">"#);
    for c in [
        card(
            "Hashrate",
            &stat(&api, "/hashrate", "hashrate"),
            "accepted shares, last 10 min",
        ),
        card(
            "Wallet balance",
            &stat(&api, "/wallet_balance", "wallet"),
            "spendable ehash",
        ),
        card(
            "Miners",
            &format!("{}", stats.miners.len()),
            "connected now",
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
            "Quotes received",
            &stat(&api, "/quotes_received", "count"),
            "",
        ),
        card(
            "Quotes minted",
            &stat(&api, "/quotes_minted", "count"),
            "tokens in the wallet",
        ),
        card(
            "ehash received",
            &stat(&api, "/ehash_received", "count"),
            "",
        ),
    ] {
        body.push_str(&c);
    }
    body.push_str("</div>");

    let links = format!(
        r#"<div class="links"><div><span class="name">Translator publisher</span>{}</div><div><span class="name">Upstream pool</span>{}</div><div><span class="name">Mint (wallet)</span>{}</div></div>"#,
        publisher_pill(&api),
        pill(&api, "/links/pool/state"),
        pill(&api, "/links/mint/state"),
    );
    body.push_str(&section("Upstream", "", &links));

    let chart_spec = Chart {
        from: total.from,
        to: total.to,
        lines: &[Line {
            label: "all miners".into(),
            points: total.points.clone(),
        }],
        gaps: &total.gaps,
        width: 1200,
        height: 240,
    };
    let svg = chart_spec.render();
    body.push_str(&section(
        "Hashrate",
        &html::range_nav(range),
        &format!(
            r#"{svg}<div class="legend-note">{} points of {} · {}</div>"#,
            total.points.len(),
            stats_common::format::duration(total.step_secs * 1000),
            chart_spec.gap_note()
        ),
    ));

    let rows: Vec<String> = (0..stats.miners.len())
        .map(|i| {
            let m = |field: &str, kind: &str| stat(&api, &format!("/miners/{i}/{field}"), kind);
            format!(
                r#"<td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td><td>{}</td>"#,
                m("name", "text"),
                m("hashrate", "hashrate"),
                m("estimate", "hashrate"),
                m("shares", "count"),
                m("shares_accepted", "count"),
                m("shares_rejected", "count"),
                m("connected_since", "datetime"),
                m("last_share", "datetime"),
            )
        })
        .collect();
    body.push_str(&section(
        "Miners",
        "",
        &table(
            &[
                "Name",
                "Hashrate",
                "Estimate",
                "Shares",
                "Accepted",
                "Rejected",
                "Connected since",
                "Last share",
            ],
            &rows,
            "no miner connected",
        ),
    ));

    // The busiest miners get a line each; the palette has 8 colours.
    let mut ranked: Vec<_> = per_miner.miners.iter().collect();
    ranked.sort_by(|a, b| {
        let sum = |p: &[stats_common::series::Point]| -> f64 {
            p.iter().filter_map(|p| p.hashrate).sum()
        };
        sum(&b.points).total_cmp(&sum(&a.points))
    });
    let lines: Vec<Line> = ranked
        .into_iter()
        .take(PALETTE.len())
        .map(|m| Line {
            label: m.name.clone(),
            points: m.points.clone(),
        })
        .collect();
    let per_miner_chart = Chart {
        from: per_miner.from,
        to: per_miner.to,
        lines: &lines,
        gaps: &per_miner.gaps,
        width: 1200,
        height: 240,
    };
    let svg = per_miner_chart.render();
    let note = if per_miner.miners.len() > PALETTE.len() {
        format!(
            "the {} busiest of {} miners",
            PALETTE.len(),
            per_miner.miners.len()
        )
    } else {
        "every miner with shares in this range".to_string()
    };
    let note = format!("{note} · {}", per_miner_chart.gap_note());
    body.push_str(&section(
        "Hashrate per miner",
        &html::range_nav(range),
        &format!(r#"{svg}<div class="legend-note">{note}</div>"#),
    ));

    let rows: Vec<String> = (0..stats.recent_quotes.len())
        .map(|i| {
            let q = |field: &str, kind: &str| {
                stat(&api, &format!("/recent_quotes/{i}/{field}"), kind)
            };
            format!(
                r#"<td class="mono">{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td>"#,
                q("quote_id", "text"),
                q("amount", "count"),
                q("state", "text"),
                q("received_at", "datetime"),
                q("minted_at", "datetime"),
            )
        })
        .collect();
    body.push_str(&section(
        "Recent quotes and tokens",
        "",
        &table(
            &["Quote", "ehash", "State", "Received", "Minted"],
            &rows,
            "no quote received yet",
        ),
    ));

    html::page(
        "Hashpool · Proxy",
        &format!(
            "proxy-stats · {}",
            stats_common::format::datetime(stats.now)
        ),
        &body,
        r#"JSON: <a href="/api/stats">/api/stats</a> · <a href="/api/hashrate?hours=24">/api/hashrate</a> · <a href="/api/miners?hours=24">/api/miners</a> · <a href="/api/quotes">/api/quotes</a> · <a href="/metrics">/metrics</a>"#,
    )
}

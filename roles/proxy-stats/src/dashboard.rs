//! The proxy dashboard: one server-rendered page from the same JSON as
//! `/api/stats`, `/api/hashrate` and `/api/miners`.

use serde_json::Value;
use stats_common::api::Hashrate;
use stats_common::chart::{Chart, Line, PALETTE};
use stats_common::html::{
    self, card, cards, hashrate_card, left_out_note, links_section, list_section, pill,
    publisher_pill, section, share_cards, stat_card, Column,
};
use stats_common::Service;

use crate::api::{Miners, Stats};
use crate::ProxyStats;

pub fn render(stats: &Stats, total: &Hashrate, per_miner: &Miners, range: &str) -> String {
    let api = serde_json::to_value(stats).expect("stats serialize");
    let body = [
        summary_cards(stats, &api),
        upstream(&api),
        html::hashrate_section("Hashrate", "all miners", 240, total, range),
        miners(&api),
        per_miner_chart(per_miner, range),
        recent_quotes(&api),
    ]
    .concat();
    html::page(
        "Hashpool · Proxy",
        ProxyStats::DEFAULTS.name,
        stats.summary.now,
        &body,
        &[
            "/api/stats",
            "/api/hashrate?hours=24",
            "/api/miners?hours=24",
            "/api/quotes",
            "/metrics",
        ],
    )
}

fn summary_cards(stats: &Stats, api: &Value) -> String {
    let [accepted, rejected] = share_cards(api);
    cards(&[
        hashrate_card(api),
        stat_card(
            api,
            "Wallet balance",
            "/wallet_balance",
            "wallet",
            "spendable ehash",
        ),
        card(
            "Miners",
            &stats.miners_connected().to_string(),
            "connected now",
        ),
        accepted,
        rejected,
        stat_card(api, "Quotes received", "/quotes_received", "count", ""),
        stat_card(
            api,
            "Quotes minted",
            "/quotes_minted",
            "count",
            "tokens in the wallet",
        ),
        stat_card(api, "ehash received", "/ehash_received", "count", ""),
    ])
}

fn upstream(api: &Value) -> String {
    links_section(
        "Upstream",
        &[
            ("Translator publisher", publisher_pill(api)),
            ("Upstream pool", pill(api, "/links/pool/state")),
            ("Mint (wallet)", pill(api, "/links/mint/state")),
        ],
    )
}

fn miners(api: &Value) -> String {
    list_section(
        "Miners",
        api,
        "/miners",
        &[
            Column::plain("Name", "name", "text"),
            Column::HASHRATE,
            Column::num("Estimate", "estimate", "hashrate"),
            Column::num("Shares", "shares", "count"),
            Column::ACCEPTED,
            Column::REJECTED,
            Column::CONNECTED_SINCE,
            Column::LAST_SHARE,
        ],
        "no miner connected",
        &left_out_note(api, "/miners_left_out", "miners"),
    )
}

fn per_miner_chart(per_miner: &Miners, range: &str) -> String {
    let lines = busiest_lines(per_miner);
    let chart = Chart {
        from: per_miner.span.from,
        to: per_miner.span.to,
        lines: &lines,
        gaps: &per_miner.gaps,
        width: html::CHART_WIDTH,
        height: 240,
    };
    let svg = chart.render();
    let miners = per_miner.miners.len() as u64 + per_miner.left_out;
    let note = if miners > PALETTE.len() as u64 {
        format!("the {} busiest of {miners} miners", PALETTE.len())
    } else {
        "every miner with shares in this range".to_string()
    };
    let note = format!("{note} · {}", chart.gap_note());
    section(
        "Hashrate per miner",
        &html::range_nav(range),
        &format!(r#"{svg}<div class="legend-note">{note}</div>"#),
    )
}

/// The busiest miners get a line each; the palette has 8 colours.
fn busiest_lines(per_miner: &Miners) -> Vec<Line> {
    let mut ranked: Vec<_> = per_miner.miners.iter().collect();
    ranked.sort_by(|a, b| {
        let sum = |p: &[stats_common::series::Point]| -> f64 {
            p.iter().filter_map(|p| p.hashrate).sum()
        };
        sum(&b.points).total_cmp(&sum(&a.points))
    });
    ranked
        .into_iter()
        .take(PALETTE.len())
        .map(|m| Line {
            label: m.name.clone(),
            points: m.points.clone(),
        })
        .collect()
}

fn recent_quotes(api: &Value) -> String {
    list_section(
        "Recent quotes and tokens",
        api,
        "/recent_quotes",
        &[
            Column::mono("Quote", "quote_id", "text"),
            Column::num("ehash", "amount", "count"),
            Column::plain("State", "state", "text"),
            Column::plain("Received", "received_at", "datetime"),
            Column::plain("Minted", "minted_at", "datetime"),
        ],
        "no quote received yet",
        "",
    )
}

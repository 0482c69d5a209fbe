//! The pool dashboard: one server-rendered page from the same JSON as
//! `/api/stats` and `/api/hashrate`.

use serde_json::Value;
use stats_common::api::Hashrate;
use stats_common::html::{
    self, card, cards, hashrate_card, left_out_note, links_section, list_section, pill,
    publisher_pill, section, share_cards, stat, stat_card, Column,
};
use stats_common::Service;

use crate::api::Stats;
use crate::PoolStats;

pub fn render(stats: &Stats, chart: &Hashrate, range: &str) -> String {
    let api = serde_json::to_value(stats).expect("stats serialize");
    let body = [
        summary_cards(stats, &api),
        links(&api),
        html::hashrate_section("Pool hashrate", "pool", 260, chart, range),
        proxies(&api),
        mint(stats, &api),
        blocks(&api),
    ]
    .concat();
    html::page(
        "Hashpool · Pool",
        PoolStats::DEFAULTS.name,
        stats.summary.now,
        &body,
        &[
            "/api/stats",
            "/api/hashrate?hours=24",
            "/api/miners?hours=24",
            "/api/blocks",
            "/metrics",
        ],
    )
}

fn summary_cards(stats: &Stats, api: &Value) -> String {
    let redeemed_note = if stats.mint.is_some() {
        "from the mint"
    } else {
        "the pool relays the mint's counts"
    };
    let [accepted, rejected] = share_cards(api);
    cards(&[
        hashrate_card(api),
        accepted,
        rejected,
        stat_card(api, "Quotes created", "/quotes_created", "count", ""),
        stat_card(
            api,
            "Quotes redeemed",
            "/quotes_redeemed",
            "mint-count",
            redeemed_note,
        ),
        stat_card(api, "ehash created", "/ehash_created", "count", ""),
        stat_card(api, "Blocks found", "/blocks_found", "count", ""),
        card(
            "Proxies",
            &stats.proxies_connected().to_string(),
            "connected now",
        ),
    ])
}

fn links(api: &Value) -> String {
    links_section(
        "Links",
        &[
            ("Pool publisher", publisher_pill(api)),
            (
                "Template provider",
                pill(api, "/links/template_provider/state"),
            ),
            ("Mint", pill(api, "/links/mint/state")),
        ],
    )
}

fn proxies(api: &Value) -> String {
    list_section(
        "Connected proxies",
        api,
        "/proxies",
        &[
            Column::plain("Downstream", "downstream_id", "text"),
            Column::CONNECTED_SINCE,
            Column::num("Channels", "channels", "count"),
            Column::HASHRATE,
            Column::ACCEPTED,
            Column::REJECTED,
            Column::num("Quotes", "quotes", "count"),
            Column::num("ehash", "ehash", "count"),
            Column::LAST_SHARE,
        ],
        "no proxy connected",
        &left_out_note(api, "/proxies_left_out", "proxies"),
    )
}

fn mint(stats: &Stats, api: &Value) -> String {
    let mint = if stats.mint.is_some() {
        format!(
            r#"{}<div class="legend-note">as last reported by the mint, {}</div>"#,
            mint_cards(api),
            stat(api, "/mint/updated_at", "datetime"),
        )
    } else {
        r#"<p class="legend-note">Waiting for the mint: the pool relays the mint's counters once its mint link answers a stats request.</p>"#.to_string()
    };
    section("Mint", "", &mint)
}

fn mint_cards(api: &Value) -> String {
    cards(&[
        stat_card(
            api,
            "Quotes created",
            "/quotes_created",
            "count",
            "by this pool",
        ),
        stat_card(
            api,
            "Quotes paid",
            "/mint/quotes_paid",
            "count",
            "not yet minted",
        ),
        stat_card(
            api,
            "Quotes issued",
            "/mint/quotes_issued",
            "count",
            "redeemed as ecash",
        ),
        stat_card(api, "ehash quoted", "/mint/ehash_quoted", "count", ""),
        stat_card(api, "ehash issued", "/mint/ehash_issued", "count", ""),
    ])
}

fn blocks(api: &Value) -> String {
    list_section(
        "Blocks found",
        api,
        "/recent_blocks",
        &[
            Column::num("Height", "height", "text"),
            Column::mono("Hash", "hash", "text"),
            Column::num("Channel", "channel_id", "text"),
            Column::plain("Found", "timestamp", "datetime"),
        ],
        "no block found yet",
        "",
    )
}

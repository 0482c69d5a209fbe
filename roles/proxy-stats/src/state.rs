//! What proxy-stats keeps of the translator's messages (no IO): totals, the
//! connected SV1 miners, link states and the wallet balance, plus the
//! time-series writes for the store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stats_common::series::RecentWork;
use stats_common::{
    LinkState, LiveKey, LiveRefusals, Sender, ServiceState, Write, MAX_LIVE_ENTRIES,
};
use stats_sv2::{
    live, EhashQuoteOwned, LinkStatus, LiveEntryOwned, MinerConnectedOwned, MinerShare,
    StatsMessage,
};

/// Series in the store (1-minute buckets).
pub mod series {
    /// Accepted work of all miners (key "").
    pub const WORK: &str = stats_common::api::WORK;
    /// Accepted work per miner (key = the miner's name): names, unlike
    /// connection ids, stay the same across reconnects and restarts.
    pub const MINER_WORK: &str = "miner_work";
    pub const ACCEPTED: &str = "accepted";
    pub const REJECTED: &str = "rejected";
    pub const QUOTES: &str = "quotes";
    pub const EHASH: &str = "ehash";
}

/// Record kind of ehash quotes.
pub const QUOTE: &str = "quote";

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct Totals {
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// Of those rejected, refused by the translator itself while the pool
    /// was slow to answer.
    #[serde(default)]
    pub shares_backlogged: u64,
    pub work_accepted: f64,
    pub quotes_received: u64,
    pub ehash_received: u64,
    pub quotes_minted: u64,
    pub ehash_minted: u64,
}

/// A connected SV1 miner.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct Miner {
    pub name: String,
    pub connected_since: i64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// The translator's own estimate (vardiff), H/s.
    pub estimate: Option<u64>,
    pub last_share: Option<i64>,
    /// Its own recent work: the store's series is per name, and miners
    /// often share one.
    #[serde(default)]
    pub recent: RecentWork,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    pub balance: u64,
    pub updated_at: i64,
}

/// Live miners are kept up to [`MAX_LIVE_ENTRIES`]; events of one beyond
/// that count in the totals only.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct ProxyState {
    pub totals: Totals,
    pub miners: BTreeMap<u32, Miner>,
    pub pool_link: Option<LinkState>,
    pub mint_link: Option<LinkState>,
    /// Kept across translator restarts: the wallet outlives the process.
    pub wallet: Option<Balance>,
    #[serde(skip)]
    refused: LiveRefusals,
}

impl ProxyState {
    /// The live miner `id`, added by `make` if there is room.
    fn miner_or(&mut self, id: u32, make: impl FnOnce() -> Miner) -> Option<&mut Miner> {
        if !self.miners.contains_key(&id) {
            if self.miners.len() >= MAX_LIVE_ENTRIES {
                self.refused.refused("miner");
                return None;
            }
            self.miners.insert(id, make());
        }
        self.miners.get_mut(&id)
    }

    fn miner(&mut self, id: u32, t: i64) -> Option<&mut Miner> {
        // A miner seen only through later events (its connect was dropped
        // from the publisher's queue) counts from its first event.
        self.miner_or(id, || Miner {
            name: format!("miner {id}"),
            connected_since: t,
            ..Default::default()
        })
    }

    fn miner_connected(&mut self, m: &MinerConnectedOwned, t: i64) {
        // A connect for a live id starts it over.
        self.miners.remove(&m.miner_id);
        self.miner_or(m.miner_id, || Miner {
            name: String::from_utf8_lossy(m.name.as_bytes()).into_owned(),
            connected_since: t,
            ..Default::default()
        });
    }

    fn share(&mut self, m: &MinerShare, t: i64, sender: Sender, out: &mut Vec<Write>) {
        let miner = match sender {
            Sender::Current => self.miner(m.miner_id, t),
            Sender::Restarted => None,
        };
        let name = miner.map(|miner| {
            miner.last_share = Some(miner.last_share.map_or(t, |l| l.max(t)));
            if m.accepted {
                miner.shares_accepted += 1;
                miner.recent.add(t, m.work as f64);
            } else {
                miner.shares_rejected += 1;
            }
            miner.name.clone()
        });
        if m.accepted {
            self.totals.shares_accepted += 1;
            self.totals.work_accepted += m.work as f64;
            out.push(Write::add(series::WORK, "", t, m.work as f64));
            // Per-miner history only for the miners kept live.
            if let Some(name) = name {
                out.push(Write::add(series::MINER_WORK, name, t, m.work as f64));
            }
            out.push(Write::add(series::ACCEPTED, "", t, 1.0));
        } else {
            self.totals.shares_rejected += 1;
            self.totals.shares_backlogged += u64::from(m.backlogged);
            out.push(Write::add(series::REJECTED, "", t, 1.0));
        }
    }

    fn link_status(&mut self, m: &LinkStatus, t: i64) {
        let state = match m.link {
            stats_sv2::link::POOL => &mut self.pool_link,
            stats_sv2::link::MINT => &mut self.mint_link,
            other => {
                tracing::debug!("ignoring translator link status of link {other}");
                return;
            }
        };
        LinkState::report(state, m.up, t);
    }

    fn quote(&mut self, m: &EhashQuoteOwned, t: i64, out: &mut Vec<Write>) {
        let quote_id = String::from_utf8_lossy(m.quote_id.as_bytes()).into_owned();
        let data = if m.minted {
            self.totals.quotes_minted += 1;
            self.totals.ehash_minted = self.totals.ehash_minted.saturating_add(m.amount);
            serde_json::json!({ "amount": m.amount, "minted_at": t })
        } else {
            self.totals.quotes_received += 1;
            self.totals.ehash_received = self.totals.ehash_received.saturating_add(m.amount);
            out.push(Write::add(series::QUOTES, "", t, 1.0));
            out.push(Write::add(series::EHASH, "", t, m.amount as f64));
            serde_json::json!({ "amount": m.amount, "received_at": t })
        };
        out.push(Write::Record {
            kind: QUOTE,
            id: quote_id,
            t,
            data,
        });
    }
}

impl ServiceState for ProxyState {
    const ROLE: u8 = stats_sv2::role::TRANSLATOR;

    fn publisher_restarted(&mut self) {
        self.miners.clear();
        self.pool_link = None;
        self.mint_link = None;
    }

    fn live_entry(&mut self, m: &LiveEntryOwned) {
        if m.kind != live::MINER {
            tracing::debug!("proxy-stats ignores live entries of kind {}", m.kind);
            return;
        }
        let name = String::from_utf8_lossy(m.name.as_bytes()).into_owned();
        let since = i64::try_from(m.since).unwrap_or(i64::MAX);
        if let Some(miner) = self.miner_or(m.id, Miner::default) {
            miner.name = name;
            miner.connected_since = since;
        }
    }

    fn live_sweep(&mut self, named: &BTreeSet<LiveKey>) {
        let before = self.miners.len();
        self.miners
            .retain(|&id, _| named.contains(&(live::MINER, id, 0)));
        let gone = before - self.miners.len();
        if gone > 0 {
            tracing::info!(
                gone,
                "miners the translator no longer has (their disconnect was lost) removed"
            );
        }
    }

    fn live_refused(&self) -> u64 {
        self.refused.count()
    }

    fn apply(&mut self, msg: &StatsMessage, sender: Sender, out: &mut Vec<Write>) {
        let t = msg.timestamp() as i64;
        let current = sender == Sender::Current;
        match msg {
            StatsMessage::MinerConnected(m) => self.miner_connected(m, t),
            StatsMessage::MinerDisconnected(m) => {
                self.miners.remove(&m.miner_id);
            }
            StatsMessage::MinerShare(m) => self.share(m, t, sender, out),
            StatsMessage::HashrateUpdate(m) if current => {
                if let Some(miner) = self.miner(m.miner_id, t) {
                    miner.estimate = Some(m.hashrate);
                }
            }
            StatsMessage::LinkStatus(m) if current => self.link_status(m, t),
            StatsMessage::WalletBalance(m) if current => {
                self.wallet = Some(Balance {
                    balance: m.balance,
                    updated_at: t,
                });
            }
            StatsMessage::EhashQuote(m) => self.quote(m, t, out),
            other => tracing::debug!("proxy-stats ignores {}", stats_sv2::MessageSet::name(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::wire::str0255;
    use stats_sv2::*;

    const T: u64 = 1_795_000_000_000;

    fn apply(state: &mut ProxyState, msg: impl Into<StatsMessage>) -> Vec<Write> {
        let mut out = Vec::new();
        state.apply(&msg.into(), Sender::Current, &mut out);
        out
    }

    fn connect(state: &mut ProxyState, id: u32, name: &str) {
        apply(
            state,
            MinerConnectedOwned {
                miner_id: id,
                name: str0255("name", name).unwrap(),
                timestamp: T,
            },
        );
    }

    fn share(miner_id: u32, accepted: bool, work: u64) -> MinerShare {
        MinerShare {
            miner_id,
            accepted,
            backlogged: false,
            work,
            timestamp: T + 1,
        }
    }

    #[test]
    fn late_news_of_a_restarted_translator_counts_in_the_totals_and_makes_nothing_live() {
        let mut state = ProxyState::default();
        let mut out = vec![];
        let estimate = HashrateUpdate {
            miner_id: 4,
            hashrate: 9,
            timestamp: T,
        };
        let balance = WalletBalance {
            balance: 5,
            timestamp: T,
        };
        for msg in [share(4, true, 500).into(), estimate.into(), balance.into()] {
            state.apply(&msg, Sender::Restarted, &mut out);
        }
        assert!(state.miners.is_empty());
        assert_eq!(state.totals.shares_accepted, 1);
        assert_eq!(state.wallet, None);
        assert_eq!(
            out.iter()
                .filter(|w| matches!(w, Write::Add { series, .. } if *series == series::MINER_WORK))
                .count(),
            0,
            "{out:?}"
        );
    }

    #[test]
    fn miners_count_their_shares_and_work_goes_to_their_name() {
        let mut state = ProxyState::default();
        connect(&mut state, 3, "alice.rig1");
        let writes = apply(&mut state, share(3, true, 500));
        assert!(writes.contains(&Write::Add {
            series: series::MINER_WORK,
            key: "alice.rig1".into(),
            t: (T + 1) as i64,
            value: 500.0
        }));
        assert!(writes.contains(&Write::Add {
            series: series::WORK,
            key: String::new(),
            t: (T + 1) as i64,
            value: 500.0
        }));
        apply(&mut state, share(3, false, 500));
        apply(
            &mut state,
            MinerShare {
                backlogged: true,
                ..share(3, false, 0)
            },
        );
        assert_eq!(
            (state.totals.shares_rejected, state.totals.shares_backlogged),
            (2, 1),
            "a backlogged share is a rejected one, counted apart too"
        );
        apply(
            &mut state,
            HashrateUpdate {
                miner_id: 3,
                hashrate: 1234,
                timestamp: T + 2,
            },
        );
        let m = &state.miners[&3];
        assert_eq!((m.shares_accepted, m.shares_rejected), (1, 2));
        assert_eq!(m.estimate, Some(1234));
        assert_eq!(m.last_share, Some((T + 1) as i64));
        apply(
            &mut state,
            MinerDisconnected {
                miner_id: 3,
                timestamp: T + 3,
            },
        );
        assert!(state.miners.is_empty());
        assert_eq!(state.totals.shares_accepted, 1);
    }

    #[test]
    fn live_miners_are_capped_and_the_rest_counts_in_the_totals_only() {
        let mut state = ProxyState::default();
        for id in 0..MAX_LIVE_ENTRIES as u32 {
            connect(&mut state, id, "rig");
        }
        let beyond = MAX_LIVE_ENTRIES as u32;
        connect(&mut state, beyond, "one too many");
        let writes = apply(&mut state, share(beyond + 1, true, 10));
        apply(
            &mut state,
            HashrateUpdate {
                miner_id: beyond + 2,
                hashrate: 1,
                timestamp: T,
            },
        );
        assert_eq!(state.miners.len(), MAX_LIVE_ENTRIES);
        assert!(!state.miners.contains_key(&beyond));
        assert_eq!(state.totals.shares_accepted, 1);
        assert!(
            !writes.iter().any(|w| matches!(
                w,
                Write::Add {
                    series: series::MINER_WORK,
                    ..
                }
            )),
            "no per-miner history for a miner not kept: {writes:?}"
        );
        assert_eq!(state.refused.count(), 3);
        // A miner already live is still updated, and leaving makes room.
        connect(&mut state, 7, "renamed");
        assert_eq!(state.miners[&7].name, "renamed");
        apply(
            &mut state,
            MinerDisconnected {
                miner_id: 0,
                timestamp: T,
            },
        );
        connect(&mut state, beyond, "next");
        assert_eq!(state.miners[&beyond].name, "next");
    }

    #[test]
    fn quotes_are_recorded_when_received_and_when_minted() {
        let mut state = ProxyState::default();
        let quote = |minted| EhashQuoteOwned {
            quote_id: str0255("quote_id", "q-1").unwrap(),
            amount: 8,
            minted,
            timestamp: T,
        };
        let writes = apply(&mut state, quote(false));
        assert!(
            matches!(&writes[..], [.., Write::Record { kind: QUOTE, id, data, .. }]
            if id == "q-1" && data["received_at"] == T)
        );
        let writes = apply(&mut state, quote(true));
        assert!(matches!(&writes[..], [Write::Record { data, .. }] if data["minted_at"] == T));
        assert_eq!(state.totals.quotes_received, 1);
        assert_eq!(state.totals.quotes_minted, 1);
        assert_eq!(state.totals.ehash_minted, 8);
    }

    #[test]
    fn a_translator_restart_forgets_miners_and_links_but_not_the_wallet() {
        let mut state = ProxyState::default();
        connect(&mut state, 1, "bob");
        apply(
            &mut state,
            LinkStatus {
                link: link::POOL,
                up: true,
                timestamp: T,
            },
        );
        apply(
            &mut state,
            WalletBalance {
                balance: 99,
                timestamp: T,
            },
        );
        apply(&mut state, share(1, true, 10));
        state.publisher_restarted();
        assert!(state.miners.is_empty());
        assert_eq!(state.pool_link, None);
        assert_eq!(state.wallet.map(|w| w.balance), Some(99));
        assert_eq!(state.totals.shares_accepted, 1);
    }
}

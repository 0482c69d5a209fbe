//! What pool-stats keeps of the pool's messages (no IO): totals, the
//! connected downstreams (proxies), link states and the mint's counters,
//! plus the time-series writes for the store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stats_common::series::RecentWork;
use stats_common::{
    LinkState, LiveKey, LiveRefusals, Sender, ServiceState, Write, MAX_LIVE_ENTRIES,
};
use stats_sv2::{
    live, BlockFoundOwned, ChannelClosed, ChannelOpened, DownstreamConnected, LinkStatus,
    LiveEntryOwned, MintStats, QuoteCreated, ShareSubmitted, StatsMessage,
};

/// Series in the store (1-minute buckets). `work` is kept for the whole
/// pool (key "") and per downstream (key = downstream id).
pub mod series {
    pub const WORK: &str = stats_common::api::WORK;
    pub const ACCEPTED: &str = "accepted";
    pub const REJECTED: &str = "rejected";
    pub const QUOTES: &str = "quotes";
    pub const EHASH: &str = "ehash";
}

/// Record kind of found blocks.
pub const BLOCK: &str = "block";

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct Totals {
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    /// Expected hashes of the accepted shares.
    pub work_accepted: f64,
    pub quotes_created: u64,
    pub ehash_created: u64,
    pub blocks_found: u64,
}

/// A connected downstream (a translator proxy or an SV2 device).
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct Downstream {
    pub flags: u32,
    pub connected_since: i64,
    pub channels: BTreeSet<u32>,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub quotes: u64,
    pub ehash: u64,
    pub last_share: Option<i64>,
    /// Its recent accepted work: its hashrate without a query per downstream.
    #[serde(default)]
    pub recent: RecentWork,
}

/// The mint's own counters, from the pool's latest `MintStatsResponse`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MintFigures {
    pub quotes_unpaid: u64,
    pub quotes_paid: u64,
    pub quotes_issued: u64,
    pub ehash_quoted: u64,
    pub ehash_issued: u64,
    pub updated_at: i64,
}

/// Live downstreams and, over all of them, channels are each kept up to
/// [`MAX_LIVE_ENTRIES`]; events of one beyond that count in the totals only.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct PoolState {
    pub totals: Totals,
    pub downstreams: BTreeMap<u32, Downstream>,
    pub template_provider: Option<LinkState>,
    pub mint_link: Option<LinkState>,
    /// Kept across pool restarts: these are the mint's figures, not the pool's.
    pub mint: Option<MintFigures>,
    /// Channels in `downstreams`; counted when first needed after a load.
    #[serde(skip)]
    channel_count: Option<usize>,
    #[serde(skip)]
    refused: LiveRefusals,
}

impl PoolState {
    /// The live downstream `id`, added if there is room.
    fn downstream(&mut self, id: u32, t: i64) -> Option<&mut Downstream> {
        if !self.downstreams.contains_key(&id) {
            if self.downstreams.len() >= MAX_LIVE_ENTRIES {
                self.refused.refused("downstream");
                return None;
            }
            // A downstream seen only through later events (its connect was
            // dropped from the publisher's queue) counts from its first event.
            let d = Downstream {
                connected_since: t,
                ..Default::default()
            };
            self.downstreams.insert(id, d);
        }
        self.downstreams.get_mut(&id)
    }

    fn channel_count(&mut self) -> usize {
        let downstreams = &self.downstreams;
        *self
            .channel_count
            .get_or_insert_with(|| downstreams.values().map(|d| d.channels.len()).sum())
    }

    fn remove_downstream(&mut self, id: u32) {
        if let Some(d) = self.downstreams.remove(&id) {
            if let Some(count) = &mut self.channel_count {
                *count -= d.channels.len();
            }
        }
    }

    fn downstream_connected(&mut self, m: &DownstreamConnected, t: i64) {
        // A connect for a live id starts it over.
        self.remove_downstream(m.downstream_id);
        if let Some(d) = self.downstream(m.downstream_id, t) {
            d.flags = m.flags;
        }
    }

    fn channel_opened(&mut self, m: &ChannelOpened, t: i64) {
        self.add_channel(m.downstream_id, m.channel_id, t);
    }

    fn add_channel(&mut self, downstream_id: u32, channel_id: u32, t: i64) {
        let full = self.channel_count() >= MAX_LIVE_ENTRIES;
        let Some(d) = self.downstream(downstream_id, t) else {
            return;
        };
        if d.channels.contains(&channel_id) {
            return;
        }
        if full {
            self.refused.refused("channel");
            return;
        }
        d.channels.insert(channel_id);
        self.channel_count = self.channel_count.map(|c| c + 1);
    }

    fn channel_closed(&mut self, m: &ChannelClosed) {
        if let Some(d) = self.downstreams.get_mut(&m.downstream_id) {
            if d.channels.remove(&m.channel_id) {
                self.channel_count = self.channel_count.map(|c| c - 1);
            }
        }
    }

    fn share(&mut self, m: &ShareSubmitted, t: i64, sender: Sender, out: &mut Vec<Write>) {
        let downstream = match sender {
            Sender::Current => self.downstream(m.downstream_id, t),
            Sender::Restarted => None,
        };
        let live = match downstream {
            Some(d) => {
                d.last_share = Some(d.last_share.map_or(t, |l| l.max(t)));
                if m.accepted {
                    d.shares_accepted += 1;
                    d.recent.add(t, m.work as f64);
                } else {
                    d.shares_rejected += 1;
                }
                true
            }
            None => false,
        };
        if m.accepted {
            self.totals.shares_accepted += 1;
            self.totals.work_accepted += m.work as f64;
            let work = m.work as f64;
            out.push(Write::add(series::WORK, "", t, work));
            // Per-downstream history only for the downstreams kept live.
            if live {
                let key = m.downstream_id.to_string();
                out.push(Write::add(series::WORK, key, t, work));
            }
            out.push(Write::add(series::ACCEPTED, "", t, 1.0));
        } else {
            self.totals.shares_rejected += 1;
            out.push(Write::add(series::REJECTED, "", t, 1.0));
        }
    }

    fn quote(&mut self, m: &QuoteCreated, t: i64, sender: Sender, out: &mut Vec<Write>) {
        // Quotes come from the pool's ehash task, unordered with the mining
        // task's disconnect: one of a downstream that has left must not
        // bring it back.
        let downstream = match sender {
            Sender::Current => self.downstreams.get_mut(&m.downstream_id),
            Sender::Restarted => None,
        };
        if let Some(d) = downstream {
            d.quotes += 1;
            d.ehash = d.ehash.saturating_add(m.amount);
        }
        self.totals.quotes_created += 1;
        self.totals.ehash_created = self.totals.ehash_created.saturating_add(m.amount);
        out.push(Write::add(series::QUOTES, "", t, 1.0));
        out.push(Write::add(series::EHASH, "", t, m.amount as f64));
    }

    fn block(&mut self, m: &BlockFoundOwned, t: i64, out: &mut Vec<Write>) {
        self.totals.blocks_found += 1;
        let mut hash = m.block_hash.as_bytes().to_vec();
        hash.reverse(); // little-endian on the wire, displayed big-endian
        let hash: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        out.push(Write::Record {
            kind: BLOCK,
            id: hash.clone(),
            t,
            data: serde_json::json!({
                "height": m.height,
                "hash": hash,
                "channel_id": m.channel_id,
            }),
        });
    }

    fn link_status(&mut self, m: &LinkStatus, t: i64) {
        let state = match m.link {
            stats_sv2::link::TEMPLATE_PROVIDER => &mut self.template_provider,
            stats_sv2::link::MINT => &mut self.mint_link,
            other => {
                tracing::debug!("ignoring pool link status of link {other}");
                return;
            }
        };
        LinkState::report(state, m.up, t);
    }

    fn mint_stats(&mut self, m: &MintStats, t: i64) {
        self.mint = Some(MintFigures {
            quotes_unpaid: m.quotes_unpaid,
            quotes_paid: m.quotes_paid,
            quotes_issued: m.quotes_issued,
            ehash_quoted: m.ehash_quoted,
            ehash_issued: m.ehash_issued,
            updated_at: t,
        });
    }
}

impl ServiceState for PoolState {
    const ROLE: u8 = stats_sv2::role::POOL;

    fn publisher_restarted(&mut self) {
        self.downstreams.clear();
        self.channel_count = Some(0);
        self.template_provider = None;
        self.mint_link = None;
    }

    fn live_entry(&mut self, m: &LiveEntryOwned) {
        let since = i64::try_from(m.since).unwrap_or(i64::MAX);
        match m.kind {
            live::DOWNSTREAM => {
                if let Some(d) = self.downstream(m.id, since) {
                    d.flags = m.flags;
                    d.connected_since = since;
                }
            }
            live::CHANNEL => self.add_channel(m.id, m.channel_id, since),
            other => tracing::debug!("pool-stats ignores live entries of kind {other}"),
        }
    }

    fn live_sweep(&mut self, named: &BTreeSet<LiveKey>) {
        let before = self.downstreams.len();
        self.downstreams.retain(|&id, d| {
            d.channels
                .retain(|&channel| named.contains(&(live::CHANNEL, id, channel)));
            named.contains(&(live::DOWNSTREAM, id, 0))
        });
        // Counted again when next needed.
        self.channel_count = None;
        let gone = before - self.downstreams.len();
        if gone > 0 {
            tracing::info!(
                gone,
                "downstreams the pool no longer has (their disconnect was lost) removed"
            );
        }
    }

    fn live_refused(&self) -> u64 {
        self.refused.count()
    }

    fn apply(&mut self, msg: &StatsMessage, sender: Sender, out: &mut Vec<Write>) {
        let t = msg.timestamp() as i64;
        match msg {
            StatsMessage::DownstreamConnected(m) => self.downstream_connected(m, t),
            StatsMessage::DownstreamDisconnected(m) => self.remove_downstream(m.downstream_id),
            StatsMessage::ChannelOpened(m) => self.channel_opened(m, t),
            StatsMessage::ChannelClosed(m) => self.channel_closed(m),
            StatsMessage::ShareSubmitted(m) => self.share(m, t, sender, out),
            StatsMessage::QuoteCreated(m) => self.quote(m, t, sender, out),
            StatsMessage::BlockFound(m) => self.block(m, t, out),
            StatsMessage::LinkStatus(m) if sender == Sender::Current => self.link_status(m, t),
            // The new process relays the mint's figures afresh: a late one
            // of the old would replace newer ones.
            StatsMessage::MintStats(m) if sender == Sender::Current => self.mint_stats(m, t),
            other => tracing::debug!("pool-stats ignores {}", stats_sv2::MessageSet::name(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats_sv2::*;

    const T: u64 = 1_795_000_000_000;

    fn apply(state: &mut PoolState, msg: impl Into<StatsMessage>) -> Vec<Write> {
        let mut out = Vec::new();
        state.apply(&msg.into(), Sender::Current, &mut out);
        out
    }

    fn quote(downstream_id: u32, amount: u64, t: u64) -> QuoteCreated {
        QuoteCreated {
            downstream_id,
            channel_id: 1,
            amount,
            timestamp: t,
        }
    }

    fn disconnected(downstream_id: u32, t: u64) -> DownstreamDisconnected {
        DownstreamDisconnected {
            downstream_id,
            timestamp: t,
        }
    }

    fn share(downstream_id: u32, accepted: bool, work: u64, t: u64) -> ShareSubmitted {
        ShareSubmitted {
            downstream_id,
            channel_id: 1,
            accepted,
            work,
            timestamp: t,
        }
    }

    #[test]
    fn downstreams_count_their_shares_quotes_and_channels() {
        let mut state = PoolState::default();
        apply(
            &mut state,
            DownstreamConnected {
                downstream_id: 7,
                flags: 6,
                timestamp: T,
            },
        );
        apply(
            &mut state,
            ChannelOpened {
                downstream_id: 7,
                channel_id: 1,
                timestamp: T,
            },
        );
        let writes = apply(&mut state, share(7, true, 1000, T + 5));
        assert_eq!(
            writes,
            [
                Write::Add {
                    series: series::WORK,
                    key: String::new(),
                    t: (T + 5) as i64,
                    value: 1000.0
                },
                Write::Add {
                    series: series::WORK,
                    key: "7".into(),
                    t: (T + 5) as i64,
                    value: 1000.0
                },
                Write::Add {
                    series: series::ACCEPTED,
                    key: String::new(),
                    t: (T + 5) as i64,
                    value: 1.0
                },
            ]
        );
        apply(&mut state, share(7, false, 0, T + 9));
        apply(&mut state, quote(7, 12, T + 10));
        let d = &state.downstreams[&7];
        assert_eq!((d.shares_accepted, d.shares_rejected), (1, 1));
        assert_eq!((d.quotes, d.ehash), (1, 12));
        assert_eq!(d.last_share, Some((T + 9) as i64));
        assert_eq!(d.channels.len(), 1);
        assert_eq!(state.totals.work_accepted, 1000.0);

        apply(&mut state, disconnected(7, T + 20));
        assert!(state.downstreams.is_empty());
        assert_eq!(
            state.totals.shares_accepted, 1,
            "totals outlive connections"
        );
    }

    #[test]
    fn a_quote_after_its_downstream_left_does_not_bring_it_back() {
        let mut state = PoolState::default();
        apply(&mut state, share(7, true, 1000, T));
        apply(&mut state, disconnected(7, T + 1));
        apply(&mut state, quote(7, 12, T + 2));
        assert!(state.downstreams.is_empty());
        assert_eq!(
            (state.totals.quotes_created, state.totals.ehash_created),
            (1, 12)
        );
    }

    #[test]
    fn a_pool_restart_forgets_connections_and_links_but_not_totals_or_mint_figures() {
        let mut state = PoolState::default();
        apply(&mut state, share(1, true, 5, T));
        apply(
            &mut state,
            LinkStatus {
                link: link::MINT,
                up: true,
                timestamp: T,
            },
        );
        apply(
            &mut state,
            MintStats {
                quotes_unpaid: 0,
                quotes_paid: 3,
                quotes_issued: 2,
                ehash_quoted: 30,
                ehash_issued: 20,
                timestamp: T,
            },
        );
        assert_eq!(
            state.mint_link,
            Some(LinkState {
                up: true,
                since: T as i64
            })
        );
        state.publisher_restarted();
        assert!(state.downstreams.is_empty());
        assert_eq!(state.mint_link, None);
        assert_eq!(state.totals.shares_accepted, 1);
        assert_eq!(state.mint.as_ref().map(|m| m.quotes_issued), Some(2));
    }

    #[test]
    fn live_downstreams_are_capped_and_the_rest_counts_in_the_totals_only() {
        let mut state = PoolState::default();
        for id in 0..MAX_LIVE_ENTRIES as u32 {
            apply(
                &mut state,
                DownstreamConnected {
                    downstream_id: id,
                    flags: 0,
                    timestamp: T,
                },
            );
        }
        let beyond = MAX_LIVE_ENTRIES as u32;
        apply(
            &mut state,
            DownstreamConnected {
                downstream_id: beyond,
                flags: 0,
                timestamp: T,
            },
        );
        let writes = apply(&mut state, share(beyond + 1, true, 10, T));
        assert_eq!(state.downstreams.len(), MAX_LIVE_ENTRIES);
        assert!(!state.downstreams.contains_key(&beyond));
        assert_eq!(state.totals.shares_accepted, 1);
        assert!(
            writes
                .iter()
                .all(|w| matches!(w, Write::Add { key, .. } if key.is_empty())),
            "no per-downstream history for one not kept: {writes:?}"
        );
        assert_eq!(state.refused.count(), 2);
        // Room again once one leaves.
        apply(&mut state, disconnected(0, T));
        apply(&mut state, share(beyond, true, 10, T));
        assert!(state.downstreams.contains_key(&beyond));
    }

    #[test]
    fn live_channels_are_capped_over_all_downstreams() {
        let mut state = PoolState::default();
        let open = |state: &mut PoolState, downstream_id, channel_id| {
            apply(
                state,
                ChannelOpened {
                    downstream_id,
                    channel_id,
                    timestamp: T,
                },
            );
        };
        for c in 0..MAX_LIVE_ENTRIES as u32 {
            open(&mut state, c % 2, c);
        }
        open(&mut state, 2, 0);
        open(&mut state, 0, u32::MAX);
        let channels: usize = state.downstreams.values().map(|d| d.channels.len()).sum();
        assert_eq!(channels, MAX_LIVE_ENTRIES);
        assert_eq!(state.refused.count(), 2);

        // The count holds across a save and load, and frees up on close.
        let mut state: PoolState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        open(&mut state, 3, 0);
        assert!(state.downstreams[&3].channels.is_empty());
        apply(
            &mut state,
            ChannelClosed {
                downstream_id: 0,
                channel_id: 0,
                timestamp: T,
            },
        );
        open(&mut state, 3, 0);
        assert_eq!(state.downstreams[&3].channels.len(), 1);
        apply(&mut state, disconnected(1, T));
        open(&mut state, 3, 1);
        assert_eq!(state.downstreams[&3].channels.len(), 2);
    }

    #[test]
    fn a_snapshot_keeps_the_downstreams_and_channels_it_names_with_their_counts() {
        let mut state = PoolState::default();
        apply(
            &mut state,
            DownstreamConnected {
                downstream_id: 1,
                flags: 6,
                timestamp: T,
            },
        );
        for channel_id in [5, 6] {
            apply(
                &mut state,
                ChannelOpened {
                    downstream_id: 1,
                    channel_id,
                    timestamp: T,
                },
            );
        }
        apply(&mut state, share(1, true, 60, T));
        let entry = |kind, id, channel_id| LiveEntryOwned {
            kind,
            id,
            channel_id,
            flags: 6,
            name: String::new().try_into().unwrap(),
            since: T - 5,
            timestamp: T + 1,
        };
        // Downstream 2 connected while the service was away.
        let entries = [
            entry(live::DOWNSTREAM, 1, 0),
            entry(live::CHANNEL, 1, 5),
            entry(live::DOWNSTREAM, 2, 0),
        ];
        for e in &entries {
            state.live_entry(e);
        }
        let named = entries
            .iter()
            .map(|e| (e.kind, e.id, e.channel_id))
            .collect();
        state.live_sweep(&named);
        let d = &state.downstreams[&1];
        assert_eq!(
            d.channels,
            BTreeSet::from([5]),
            "channel 6 closed meanwhile"
        );
        assert_eq!(
            d.connected_since,
            T as i64 - 5,
            "the publisher's connect time"
        );
        assert_eq!(d.shares_accepted, 1, "counts kept");
        assert!(state.downstreams.contains_key(&2));
        assert_eq!(state.channel_count(), 1);

        // Nothing named: nothing live.
        state.live_sweep(&BTreeSet::new());
        assert!(state.downstreams.is_empty());
        assert_eq!(state.channel_count(), 0);
    }

    #[test]
    fn late_news_of_a_restarted_pool_counts_in_the_totals_and_makes_nothing_live() {
        let mut state = PoolState::default();
        let mut out = vec![];
        let link = LinkStatus {
            link: stats_sv2::link::MINT,
            up: true,
            timestamp: T,
        };
        let mint = MintStats {
            quotes_unpaid: 0,
            quotes_paid: 0,
            quotes_issued: 1,
            ehash_quoted: 1,
            ehash_issued: 1,
            timestamp: T,
        };
        let news = [
            share(4, true, 60, T).into(),
            quote(4, 5, T).into(),
            link.into(),
            mint.into(),
        ];
        for msg in news {
            state.apply(&msg, Sender::Restarted, &mut out);
        }
        assert!(state.downstreams.is_empty());
        assert_eq!(
            (state.totals.shares_accepted, state.totals.quotes_created),
            (1, 1)
        );
        assert_eq!((state.mint_link, state.mint.clone()), (None, None));
        assert!(out.contains(&Write::add(series::WORK, "", T as i64, 60.0)));
        let per_downstream = out
            .iter()
            .any(|w| matches!(w, Write::Add { key, .. } if key == "4"));
        assert!(!per_downstream, "{out:?}");
    }

    #[test]
    fn a_downstream_saved_before_its_recent_work_was_kept_loads() {
        let saved = r#"{"totals":{"shares_accepted":1,"shares_rejected":0,"work_accepted":5.0,
            "quotes_created":0,"ehash_created":0,"blocks_found":0},
            "downstreams":{"3":{"flags":6,"connected_since":7,"channels":[1],"shares_accepted":1,
            "shares_rejected":0,"quotes":0,"ehash":0,"last_share":8}},
            "template_provider":null,"mint_link":null,"mint":null}"#;
        let mut state: PoolState = serde_json::from_str(saved).unwrap();
        assert_eq!(
            state.downstreams[&3].recent.hashrate(T as i64, 7),
            Some(0.0)
        );
        apply(&mut state, share(3, true, 60, T));
        let later = T as i64 + 120_000;
        // 60 hashes over the last 10 minutes.
        assert_eq!(state.downstreams[&3].recent.hashrate(later, 7), Some(0.1));
    }

    #[test]
    fn blocks_are_recorded_with_their_display_hash() {
        let mut state = PoolState::default();
        let mut hash = [0u8; 32];
        hash[31] = 0xAB; // most significant byte last on the wire
        let writes = apply(
            &mut state,
            BlockFoundOwned {
                height: 101,
                block_hash: hash.into(),
                channel_id: 3,
                timestamp: T,
            },
        );
        let Write::Record { kind, id, data, .. } = &writes[0] else {
            panic!("{writes:?}")
        };
        assert_eq!(*kind, BLOCK);
        assert!(id.starts_with("ab00"), "{id}");
        assert_eq!(data["height"], 101);
        assert_eq!(state.totals.blocks_found, 1);
    }
}

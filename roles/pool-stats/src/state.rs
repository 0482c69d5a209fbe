//! What pool-stats keeps of the pool's messages (no IO): totals, the
//! connected downstreams (proxies), link states and the mint's counters,
//! plus the time-series writes for the store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use stats_common::{LinkState, ServiceState, Write};
use stats_sv2::{
    BlockFoundOwned, ChannelClosed, DownstreamConnected, LinkStatus, MintStats, QuoteCreated,
    ShareSubmitted, StatsMessage,
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

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct PoolState {
    pub totals: Totals,
    pub downstreams: BTreeMap<u32, Downstream>,
    pub template_provider: Option<LinkState>,
    pub mint_link: Option<LinkState>,
    /// Kept across pool restarts: these are the mint's figures, not the pool's.
    pub mint: Option<MintFigures>,
}

impl PoolState {
    fn downstream(&mut self, id: u32, t: i64) -> &mut Downstream {
        // A downstream seen only through later events (its connect was
        // dropped from the publisher's queue) counts from its first event.
        self.downstreams.entry(id).or_insert_with(|| Downstream {
            connected_since: t,
            ..Default::default()
        })
    }

    fn downstream_connected(&mut self, m: &DownstreamConnected, t: i64) {
        self.downstreams.insert(
            m.downstream_id,
            Downstream {
                flags: m.flags,
                connected_since: t,
                ..Default::default()
            },
        );
    }

    fn channel_closed(&mut self, m: &ChannelClosed) {
        if let Some(d) = self.downstreams.get_mut(&m.downstream_id) {
            d.channels.remove(&m.channel_id);
        }
    }

    fn share(&mut self, m: &ShareSubmitted, t: i64, out: &mut Vec<Write>) {
        let d = self.downstream(m.downstream_id, t);
        d.last_share = Some(d.last_share.map_or(t, |l| l.max(t)));
        if m.accepted {
            d.shares_accepted += 1;
            self.totals.shares_accepted += 1;
            self.totals.work_accepted += m.work as f64;
            let work = m.work as f64;
            out.push(Write::add(series::WORK, "", t, work));
            out.push(Write::add(
                series::WORK,
                m.downstream_id.to_string(),
                t,
                work,
            ));
            out.push(Write::add(series::ACCEPTED, "", t, 1.0));
        } else {
            d.shares_rejected += 1;
            self.totals.shares_rejected += 1;
            out.push(Write::add(series::REJECTED, "", t, 1.0));
        }
    }

    fn quote(&mut self, m: &QuoteCreated, t: i64, out: &mut Vec<Write>) {
        let d = self.downstream(m.downstream_id, t);
        d.quotes += 1;
        d.ehash = d.ehash.saturating_add(m.amount);
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
        let state = Some(LinkState { up: m.up, since: t });
        match m.link {
            stats_sv2::link::TEMPLATE_PROVIDER => self.template_provider = state,
            stats_sv2::link::MINT => self.mint_link = state,
            other => tracing::debug!("ignoring pool link status of link {other}"),
        }
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
        self.template_provider = None;
        self.mint_link = None;
    }

    fn apply(&mut self, msg: &StatsMessage, out: &mut Vec<Write>) {
        let t = msg.timestamp() as i64;
        match msg {
            StatsMessage::DownstreamConnected(m) => self.downstream_connected(m, t),
            StatsMessage::DownstreamDisconnected(m) => {
                self.downstreams.remove(&m.downstream_id);
            }
            StatsMessage::ChannelOpened(m) => {
                self.downstream(m.downstream_id, t)
                    .channels
                    .insert(m.channel_id);
            }
            StatsMessage::ChannelClosed(m) => self.channel_closed(m),
            StatsMessage::ShareSubmitted(m) => self.share(m, t, out),
            StatsMessage::QuoteCreated(m) => self.quote(m, t, out),
            StatsMessage::BlockFound(m) => self.block(m, t, out),
            StatsMessage::LinkStatus(m) => self.link_status(m, t),
            StatsMessage::MintStats(m) => self.mint_stats(m, t),
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
        state.apply(&msg.into(), &mut out);
        out
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
        apply(
            &mut state,
            QuoteCreated {
                downstream_id: 7,
                channel_id: 1,
                amount: 12,
                timestamp: T + 10,
            },
        );
        let d = &state.downstreams[&7];
        assert_eq!((d.shares_accepted, d.shares_rejected), (1, 1));
        assert_eq!((d.quotes, d.ehash), (1, 12));
        assert_eq!(d.last_share, Some((T + 9) as i64));
        assert_eq!(d.channels.len(), 1);
        assert_eq!(state.totals.work_accepted, 1000.0);

        apply(
            &mut state,
            DownstreamDisconnected {
                downstream_id: 7,
                timestamp: T + 20,
            },
        );
        assert!(state.downstreams.is_empty());
        assert_eq!(
            state.totals.shares_accepted, 1,
            "totals outlive connections"
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

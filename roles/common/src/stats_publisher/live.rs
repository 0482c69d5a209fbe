//! What is live at a publisher (the pool's downstreams and their channels,
//! the translator's miners), kept from the connect and disconnect events it
//! publishes. Its snapshot goes to the stats service on every connection,
//! so a service that missed such an event (dropped from the full queue,
//! lost with a broken connection) learns what connected meanwhile and
//! forgets what left.

use std::collections::BTreeMap;

use stats_sv2::{live, LiveBegin, LiveEnd, LiveEntryOwned, MinerConnectedOwned, StatsMessage};

#[derive(Debug, Default, Clone)]
pub struct LiveSet {
    /// Downstream id: its flags and when it connected.
    downstreams: BTreeMap<u32, (u32, u64)>,
    /// (downstream id, channel id): when it opened.
    channels: BTreeMap<(u32, u32), u64>,
    /// Miner id: its connect event (name, time).
    miners: BTreeMap<u32, MinerConnectedOwned>,
}

impl LiveSet {
    /// Records what a connect or disconnect event changes (others change
    /// nothing). As the services do, a connect of a live downstream starts
    /// it over, and a downstream's channels go with it.
    pub fn record(&mut self, msg: &StatsMessage) {
        match msg {
            StatsMessage::DownstreamConnected(m) => {
                self.remove_downstream(m.downstream_id);
                self.downstreams
                    .insert(m.downstream_id, (m.flags, m.timestamp));
            }
            StatsMessage::DownstreamDisconnected(m) => self.remove_downstream(m.downstream_id),
            // Only of a live downstream: the snapshot names a channel with it.
            StatsMessage::ChannelOpened(m) if self.downstreams.contains_key(&m.downstream_id) => {
                let key = (m.downstream_id, m.channel_id);
                self.channels.entry(key).or_insert(m.timestamp);
            }
            StatsMessage::ChannelClosed(m) => {
                self.channels.remove(&(m.downstream_id, m.channel_id));
            }
            StatsMessage::MinerConnected(m) => {
                self.miners.insert(m.miner_id, m.clone());
            }
            StatsMessage::MinerDisconnected(m) => {
                self.miners.remove(&m.miner_id);
            }
            _ => {}
        }
    }

    fn remove_downstream(&mut self, id: u32) {
        self.downstreams.remove(&id);
        let channels: Vec<_> = self
            .channels
            .range((id, 0)..=(id, u32::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in channels {
            self.channels.remove(&key);
        }
    }

    /// `LiveBegin`, an entry for each live thing (a downstream before its
    /// channels), `LiveEnd`; dated `timestamp`.
    pub fn snapshot(&self, timestamp: u64) -> Vec<StatsMessage> {
        let entry = |kind, id, channel_id, flags, since| LiveEntryOwned {
            kind,
            id,
            channel_id,
            flags,
            name: ehash::wire::str0255_truncated(""),
            since,
            timestamp,
        };
        let mut entries = Vec::new();
        for (&id, &(flags, since)) in &self.downstreams {
            entries.push(entry(live::DOWNSTREAM, id, 0, flags, since));
            let channels = self.channels.range((id, 0)..=(id, u32::MAX));
            for (&(_, channel), &since) in channels {
                entries.push(entry(live::CHANNEL, id, channel, 0, since));
            }
        }
        for (&id, m) in &self.miners {
            entries.push(LiveEntryOwned {
                name: m.name.clone(),
                ..entry(live::MINER, id, 0, 0, m.timestamp)
            });
        }
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push(LiveBegin { timestamp }.into());
        out.extend(entries.into_iter().map(StatsMessage::from));
        out.push(
            LiveEnd {
                entries: count,
                timestamp,
            }
            .into(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::wire::str0255;
    use stats_sv2::{
        ChannelClosed, ChannelOpened, DownstreamConnected, DownstreamDisconnected,
        MinerDisconnected, MinerShare,
    };

    fn entries(set: &LiveSet) -> Vec<(u8, u32, u32, u64)> {
        let snapshot = set.snapshot(99);
        let (first, rest) = snapshot.split_first().unwrap();
        assert!(matches!(first, StatsMessage::LiveBegin(b) if b.timestamp == 99));
        let (last, entries) = rest.split_last().unwrap();
        match last {
            StatsMessage::LiveEnd(end) => assert_eq!(end.entries as usize, entries.len()),
            other => panic!("{other:?}"),
        }
        entries
            .iter()
            .map(|m| match m {
                StatsMessage::LiveEntry(e) => (e.kind, e.id, e.channel_id, e.since),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn downstreams_and_their_channels_come_and_go_together() {
        let mut set = LiveSet::default();
        for (id, t) in [(1, 10), (2, 20)] {
            set.record(
                &DownstreamConnected {
                    downstream_id: id,
                    flags: 6,
                    timestamp: t,
                }
                .into(),
            );
        }
        for (d, c, t) in [(1, 5, 11), (1, 6, 12), (2, 7, 21), (9, 8, 30)] {
            let opened = ChannelOpened {
                downstream_id: d,
                channel_id: c,
                timestamp: t,
            };
            set.record(&opened.into());
        }
        set.record(
            &ChannelClosed {
                downstream_id: 1,
                channel_id: 6,
                timestamp: 13,
            }
            .into(),
        );
        set.record(
            &DownstreamDisconnected {
                downstream_id: 2,
                timestamp: 22,
            }
            .into(),
        );
        // Shares and the like change nothing.
        let share = MinerShare {
            miner_id: 1,
            accepted: true,
            backlogged: false,
            work: 1,
            timestamp: 1,
        };
        set.record(&share.into());
        assert_eq!(
            entries(&set),
            [(live::DOWNSTREAM, 1, 0, 10), (live::CHANNEL, 1, 5, 11),]
        );
        // A connect of a live id starts it over, without its channels.
        set.record(
            &DownstreamConnected {
                downstream_id: 1,
                flags: 0,
                timestamp: 40,
            }
            .into(),
        );
        assert_eq!(entries(&set), [(live::DOWNSTREAM, 1, 0, 40)]);
    }

    #[test]
    fn miners_carry_their_names_and_connect_times() {
        let mut set = LiveSet::default();
        assert!(
            entries(&set).is_empty(),
            "an empty snapshot still begins and ends"
        );
        for (id, name) in [(1, "alice"), (2, "bob")] {
            let m = MinerConnectedOwned {
                miner_id: id,
                name: str0255("name", name).unwrap(),
                timestamp: 5,
            };
            assert!(StatsMessage::from(m.clone()).is_lifecycle());
            set.record(&m.into());
        }
        set.record(
            &MinerDisconnected {
                miner_id: 1,
                timestamp: 6,
            }
            .into(),
        );
        let snapshot = set.snapshot(7);
        match &snapshot[1] {
            StatsMessage::LiveEntry(e) => {
                assert_eq!((e.kind, e.id, e.since), (live::MINER, 2, 5));
                assert_eq!(e.name.as_utf8_or_hex(), "bob");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(snapshot.len(), 3);
    }
}

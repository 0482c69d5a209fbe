//! The state of a stats service without any IO: the publisher's session and
//! the service's own state, fed messages and a clock, writing to the store.
//! Both are saved with the flushes, at most once a second (and at a stop),
//! so a restarted service picks up where it stopped; after a crash, where
//! it was a few seconds before (an idle service flushes with each 5 s
//! heartbeat), history written meanwhile kept.

use std::collections::{BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stats_sv2::{LiveEntryOwned, MessageSet, PublisherHello, StatsMessage};

use crate::store::{Store, StoreError, Write};

/// What a stats service keeps of its publisher's messages: totals, what is
/// live now (connections, link states), and the writes for the store.
pub trait ServiceState: Default + Serialize + DeserializeOwned + Send + 'static {
    /// The `stats_sv2::role` of the publisher this service accepts.
    const ROLE: u8;

    /// The publisher restarted: forget what was live in the old process
    /// (connections, link states); keep totals and history.
    fn publisher_restarted(&mut self);

    /// Applies one message of `sender`; what the store must record goes to
    /// `out`.
    fn apply(&mut self, msg: &StatsMessage, sender: Sender, out: &mut Vec<Write>);

    /// An entry of the publisher's live snapshot: what it names is live,
    /// kept with its counts, or added if its connect was missed. (A state
    /// that keeps nothing live ignores it.)
    fn live_entry(&mut self, _entry: &LiveEntryOwned) {}

    /// The publisher's live snapshot ended whole: what the state holds as
    /// live and `named` does not hold has left, its disconnect lost.
    fn live_sweep(&mut self, _named: &BTreeSet<LiveKey>) {}

    /// New live entries refused at [`MAX_LIVE_ENTRIES`] since the service
    /// started (none, for a state that keeps no live entries).
    fn live_refused(&self) -> u64 {
        0
    }
}

/// Who sent a message: the publisher process now running, or one that has
/// restarted since (a late message on its old connection). A restarted
/// one's messages count in the totals and the history, but what is live
/// now (connections, links) is the new process's, whose ids they would
/// take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Current,
    Restarted,
}

/// What a live snapshot entry names: its kind, id and channel id.
pub type LiveKey = (u8, u32, u32);

fn live_key(e: &LiveEntryOwned) -> LiveKey {
    (e.kind, e.id, e.channel_id)
}

/// The publishing process as the service sees it.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    pub connected: bool,
    /// When the publishing process started (from its hello).
    pub started_at: Option<i64>,
    /// When the current connection was made, or the last one closed.
    pub since: Option<i64>,
    /// Events it dropped while the service was away (from its last hello).
    pub dropped: u64,
    /// Publisher restarts seen (a hello with a new `started_at`).
    pub restarts: u64,
}

/// A publisher's link (to the template provider, the pool or the mint) as
/// it last reported it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub since: i64,
}

impl LinkState {
    /// Records that the link was reported `up` at `t`. A report repeating
    /// the state keeps its `since`: publishers report every link's state
    /// again on each connection.
    pub fn report(state: &mut Option<LinkState>, up: bool, t: i64) {
        if !matches!(state, Some(s) if s.up == up) {
            *state = Some(LinkState { up, since: t });
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Saved<A> {
    publisher: Publisher,
    /// The key database files already hold the state under.
    #[serde(rename = "aggregate")]
    state: A,
}

/// How far ahead of the service's clock a message may be dated.
pub const MAX_AHEAD_MS: i64 = 10 * 60 * 1000;

/// Live entries of one kind (connected downstreams, their channels,
/// miners) a service keeps at most: above what the pool and the translator
/// allow by default (10000 connections or miners, 65536 channels). What the
/// publisher reports about connections (their names, ids) comes from
/// strangers, and a lost disconnect leaves an entry behind until the
/// publisher restarts.
pub const MAX_LIVE_ENTRIES: usize = 100_000;

/// Counts the new live entries a state refused at [`MAX_LIVE_ENTRIES`]; a
/// field of the state, not saved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LiveRefusals(u64);

impl LiveRefusals {
    /// One more refused entry, a `what` (e.g. "miner"). Logged at the 1st,
    /// 2nd, 4th, 8th... so a flood cannot flood the log.
    pub fn refused(&mut self, what: &str) {
        self.0 += 1;
        if self.0.is_power_of_two() {
            tracing::warn!(
                refused = self.0,
                "not keeping a new {what}: {MAX_LIVE_ENTRIES} are live, the most kept \
                 (its events still count in the totals)"
            );
        }
    }

    /// Entries refused since the service started.
    pub fn count(&self) -> u64 {
        self.0
    }
}

/// What a service refused or lost of its publisher's messages since it
/// started: none of it is in its figures.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Messages dated more than [`MAX_AHEAD_MS`] ahead of the service's clock.
    pub refused_future: u64,
    /// Messages dated before the retention.
    pub refused_past: u64,
    /// New connections (miners, downstreams, channels) beyond
    /// [`MAX_LIVE_ENTRIES`], counted in the totals only.
    pub live_refused: u64,
    /// History writes dropped while the store kept failing.
    pub writes_dropped: u64,
}

/// A publisher connection's snapshot of what is live, as it arrives: the
/// keys its entries named since its `LiveBegin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LiveSnapshot {
    named: Option<BTreeSet<LiveKey>>,
    /// Entries received since the begin.
    entries: u64,
}

impl LiveSnapshot {
    /// A snapshot begins; one begun before and never ended is forgotten
    /// (its connection broke).
    fn begin(&mut self) {
        self.named = Some(BTreeSet::new());
        self.entries = 0;
    }

    /// An entry of the snapshot named `key`. Entries past twice
    /// [`MAX_LIVE_ENTRIES`] (a pool's downstreams and their channels) are
    /// counted, not kept: such a snapshot sweeps nothing.
    fn named(&mut self, key: LiveKey) {
        self.entries += 1;
        if let Some(named) = &mut self.named {
            if named.len() < 2 * MAX_LIVE_ENTRIES {
                named.insert(key);
            }
        }
    }

    /// The snapshot ended, saying it had `entries`: the keys it named, when
    /// every entry since its begin arrived and was kept, so that what it
    /// did not name has left. `None` (sweep nothing) otherwise.
    fn end(&mut self, entries: u32) -> Option<BTreeSet<LiveKey>> {
        let named = self.named.take()?;
        let whole = self.entries == u64::from(entries) && named.len() as u64 == self.entries;
        if !whole {
            tracing::warn!(
                sent = entries,
                received = self.entries,
                "a live snapshot arrived incomplete: keeping every connection it did not name"
            );
        }
        whole.then_some(named)
    }
}

/// Writes kept while the store cannot take them (a full disk, say) at
/// most: beyond, the oldest are dropped (logged, counted), so a store that
/// stays broken costs a hole in the history, not all the memory.
pub const MAX_PENDING_WRITES: usize = 100_000;

pub struct Core<A> {
    pub state: A,
    pub publisher: Publisher,
    pub store: Store,
    /// The open publisher connections: the `started_at` of each one's hello.
    connections: HashMap<u64, u64>,
    /// Each connection's live snapshot, while one arrives.
    snapshots: HashMap<u64, LiveSnapshot>,
    pending: Vec<Write>,
    /// Messages refused for a timestamp far ahead.
    refused_future: u64,
    /// How far behind the service's clock a message may be dated: the
    /// retention, as anything older is deleted anyway.
    max_age_ms: i64,
    /// Messages refused for a timestamp beyond the retention.
    refused_past: u64,
    /// Writes dropped while the store failed.
    writes_dropped: u64,
    /// When the state was last saved.
    state_saved_at: Option<i64>,
}

/// The saved state is rewritten at most this often (milliseconds): it holds
/// every live connection, and rewritten with each batch of messages it
/// would cost a busy service megabytes of writes a share.
const SAVE_STATE_EVERY_MS: i64 = 1_000;

impl<A: ServiceState> Core<A> {
    /// Restores the state saved in `store`, if any. An unreadable saved
    /// state (from an incompatible version, say) is logged and started over;
    /// history in the store is kept.
    pub fn new(store: Store) -> Result<Core<A>, StoreError> {
        let saved = store.history().state()?.and_then(|json| {
            serde_json::from_str::<Saved<A>>(&json)
                .map_err(|e| tracing::warn!("saved stats state unreadable, starting over: {e}"))
                .ok()
        });
        let (mut publisher, state) = match saved {
            Some(s) => (s.publisher, s.state),
            None => Default::default(),
        };
        // Connections do not survive the service.
        publisher.connected = false;
        Ok(Core {
            state,
            publisher,
            store,
            connections: HashMap::new(),
            snapshots: HashMap::new(),
            pending: Vec::new(),
            refused_future: 0,
            max_age_ms: i64::MAX,
            refused_past: 0,
            writes_dropped: 0,
            state_saved_at: None,
        })
    }

    /// From now on, refuses messages dated more than `days` before the
    /// service's clock: the store deletes such data within the hour, and a
    /// publisher must not fill it with history older than that.
    pub fn set_retention_days(&mut self, days: u32) {
        self.max_age_ms = i64::from(days) * 86_400_000;
    }

    /// What was refused or lost since the service started.
    pub fn losses(&self) -> Losses {
        Losses {
            refused_future: self.refused_future,
            refused_past: self.refused_past,
            live_refused: self.state.live_refused(),
            writes_dropped: self.writes_dropped,
        }
    }

    /// Publisher connection `conn` opened with `hello`.
    pub fn hello(&mut self, conn: u64, hello: &PublisherHello, now: i64) {
        let started_at = hello.started_at as i64;
        if self.publisher.started_at.is_some_and(|s| s != started_at) {
            self.state.publisher_restarted();
            self.publisher.restarts += 1;
        }
        self.publisher.started_at = Some(started_at);
        self.publisher.dropped = hello.dropped;
        if self.connections.is_empty() {
            self.publisher.since = Some(now);
        }
        self.connections.insert(conn, hello.started_at);
        self.publisher.connected = true;
    }

    /// A message on publisher connection `conn` (after its hello), unless
    /// it is dated more than [`MAX_AHEAD_MS`] after `now` (a forged or
    /// broken clock must not write the charts' future) or before the
    /// retention (see [`Core::set_retention_days`]), or it tells what is
    /// live in a publisher process that has restarted since. Whether it was
    /// applied.
    pub fn message(&mut self, conn: u64, msg: &StatsMessage, now: i64) -> bool {
        let t = i64::try_from(msg.timestamp()).unwrap_or(i64::MAX);
        let ahead = t.saturating_sub(now);
        let behind = now.saturating_sub(t);
        let refused = if ahead > MAX_AHEAD_MS {
            self.refused_future += 1;
            Some((self.refused_future, format!("{ahead} ms ahead of")))
        } else if behind > self.max_age_ms {
            self.refused_past += 1;
            Some((
                self.refused_past,
                format!("{behind} ms, beyond the retention, before"),
            ))
        } else {
            None
        };
        if let Some((count, when)) = refused {
            // Logged at the 1st, 2nd, 4th, 8th... so a flood cannot flood the log.
            if count.is_power_of_two() {
                tracing::warn!(
                    refused = count,
                    "refusing a {} dated {when} this service's clock",
                    msg.name()
                );
            }
            return false;
        }
        let live_news = msg.is_lifecycle()
            || matches!(
                msg,
                StatsMessage::LiveBegin(_) | StatsMessage::LiveEntry(_) | StatsMessage::LiveEnd(_)
            );
        let current = self.connections.get(&conn).map(|&s| s as i64) == self.publisher.started_at;
        let sender = if current {
            Sender::Current
        } else {
            Sender::Restarted
        };
        if live_news && !current {
            // What connected or left in a process that has restarted since
            // is nothing live now (its ids are the new process's).
            tracing::debug!("ignoring a {} of a restarted publisher", msg.name());
            return false;
        }
        match msg {
            StatsMessage::LiveBegin(_) => self.snapshots.entry(conn).or_default().begin(),
            StatsMessage::LiveEntry(entry) => {
                self.snapshots
                    .entry(conn)
                    .or_default()
                    .named(live_key(entry));
                self.state.live_entry(entry);
            }
            StatsMessage::LiveEnd(end) => {
                let snapshot = self.snapshots.entry(conn).or_default();
                if let Some(named) = snapshot.end(end.entries) {
                    self.state.live_sweep(&named);
                }
            }
            other => self.state.apply(other, sender, &mut self.pending),
        }
        true
    }

    /// Publisher connection `conn`, which had said hello, closed.
    pub fn closed(&mut self, conn: u64, now: i64) {
        self.connections.remove(&conn);
        self.snapshots.remove(&conn);
        if self.connections.is_empty() {
            self.publisher.connected = false;
            self.publisher.since = Some(now);
        }
    }

    /// Writes what changed, and the state if it was saved a second ago or
    /// more, and stamps the heartbeat.
    pub fn flush(&mut self, now: i64) -> Result<(), StoreError> {
        let due = self
            .state_saved_at
            .is_none_or(|at| now.saturating_sub(at) >= SAVE_STATE_EVERY_MS);
        self.write(now, due)
    }

    /// Writes what changed and the state (at a stop), and stamps the
    /// heartbeat.
    pub fn flush_all(&mut self, now: i64) -> Result<(), StoreError> {
        self.write(now, true)
    }

    fn write(&mut self, now: i64, with_state: bool) -> Result<(), StoreError> {
        let state = with_state.then(|| {
            let saved = Saved {
                publisher: self.publisher.clone(),
                state: &self.state,
            };
            serde_json::to_string(&saved).expect("service state serializes")
        });
        if let Err(e) = self.store.apply(&self.pending, state.as_deref(), now) {
            let excess = self.pending.len().saturating_sub(MAX_PENDING_WRITES);
            if excess > 0 {
                self.pending.drain(..excess);
                let before = self.writes_dropped;
                self.writes_dropped += excess as u64;
                // Logged as the count passes 1, 2, 4, 8...
                if before.leading_zeros() != self.writes_dropped.leading_zeros() {
                    tracing::error!(
                        dropped = self.writes_dropped,
                        "the store keeps failing: dropping the oldest history writes"
                    );
                }
            }
            return Err(e);
        }
        self.pending.clear();
        if with_state {
            self.state_saved_at = Some(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats_sv2::{LinkStatus, ShareSubmitted};

    /// Counts shares (history) and remembers the last link state (live).
    #[derive(Default, Serialize, Deserialize)]
    struct Counter {
        shares: u64,
        link_up: Option<bool>,
    }

    impl ServiceState for Counter {
        const ROLE: u8 = stats_sv2::role::POOL;
        fn publisher_restarted(&mut self) {
            self.link_up = None;
        }
        fn apply(&mut self, msg: &StatsMessage, _: Sender, out: &mut Vec<Write>) {
            match msg {
                StatsMessage::ShareSubmitted(m) => {
                    self.shares += 1;
                    out.push(Write::add("work", "", m.timestamp as i64, m.work as f64));
                }
                StatsMessage::LinkStatus(m) => self.link_up = Some(m.up),
                _ => {}
            }
        }
    }

    fn hello(started_at: u64) -> PublisherHello {
        PublisherHello::new(stats_sv2::role::POOL, started_at, 3, b"", started_at).unwrap()
    }

    fn share(t: u64) -> StatsMessage {
        StatsMessage::ShareSubmitted(ShareSubmitted {
            downstream_id: 1,
            channel_id: 1,
            accepted: true,
            work: 100,
            timestamp: t,
        })
    }

    fn link(up: bool) -> StatsMessage {
        StatsMessage::LinkStatus(LinkStatus {
            link: stats_sv2::link::MINT,
            up,
            timestamp: 1,
        })
    }

    #[test]
    fn a_new_started_at_resets_live_state_and_keeps_history() {
        let mut core: Core<Counter> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        core.message(1, &share(60_000), 60_000);
        core.message(1, &link(true), 60_000);
        assert!(core.publisher.connected);
        assert_eq!(core.publisher.dropped, 3);

        // The same process reconnecting keeps everything.
        core.closed(1, 2_000);
        assert!(!core.publisher.connected);
        core.hello(1, &hello(1_000), 3_000);
        assert_eq!(core.state.link_up, Some(true));
        assert_eq!(core.publisher.restarts, 0);

        // A restarted process: live state goes, totals and history stay.
        core.closed(1, 4_000);
        core.hello(1, &hello(5_000), 5_000);
        assert_eq!(core.state.link_up, None);
        assert_eq!(core.state.shares, 1);
        assert_eq!(core.publisher.restarts, 1);
        core.flush(6_000).unwrap();
        assert_eq!(
            core.store.history().total("work", "", 0, i64::MAX).unwrap(),
            100.0
        );
    }

    #[test]
    fn writes_kept_while_the_store_fails_are_bounded() {
        let mut core: Core<Counter> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        core.store.fail_writes();
        for _ in 0..MAX_PENDING_WRITES + 10 {
            core.message(1, &share(60_000), 60_000);
        }
        assert!(core.flush(61_000).is_err());
        assert_eq!(core.pending.len(), MAX_PENDING_WRITES);
        assert_eq!(core.losses().writes_dropped, 10);
        core.message(1, &share(60_000), 60_000);
        assert!(core.flush(62_000).is_err());
        assert_eq!(
            (core.pending.len(), core.writes_dropped),
            (MAX_PENDING_WRITES, 11)
        );
    }

    #[test]
    fn the_state_is_saved_at_most_once_a_second_and_at_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), "t.sqlite", 0).unwrap();
        let mut core: Core<Counter> = Core::new(open()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        core.message(1, &share(60_000), 60_000);
        core.flush(2_000).unwrap();
        core.message(1, &share(60_000), 60_000);
        core.flush(2_500).unwrap();
        let saved = |core: &Core<Counter>| {
            let json = core.store.history().state().unwrap().unwrap();
            serde_json::from_str::<Saved<Counter>>(&json)
                .unwrap()
                .state
                .shares
        };
        assert_eq!(saved(&core), 1, "saved half a second ago");
        // Its history is written with each flush all the same.
        assert_eq!(
            core.store.history().total("work", "", 0, i64::MAX).unwrap(),
            200.0
        );
        core.flush(3_000).unwrap();
        assert_eq!(saved(&core), 2);
        core.message(1, &share(60_000), 60_000);
        core.flush_all(3_100).unwrap();
        assert_eq!(saved(&core), 3, "at a stop");
    }

    #[test]
    fn state_survives_a_service_restart_but_connections_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut core: Core<Counter> =
            Core::new(Store::open(dir.path(), "t.sqlite", 0).unwrap()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        core.message(1, &share(60_000), 60_000);
        core.message(1, &link(true), 60_000);
        core.flush(2_000).unwrap();
        drop(core);

        let mut core: Core<Counter> =
            Core::new(Store::open(dir.path(), "t.sqlite", 9_000).unwrap()).unwrap();
        assert_eq!(core.state.shares, 1);
        assert_eq!(core.state.link_up, Some(true));
        assert!(!core.publisher.connected);
        assert_eq!(core.publisher.started_at, Some(1_000));
        // The same publisher process comes back: its live state still holds.
        core.hello(1, &hello(1_000), 9_500);
        assert_eq!(core.state.link_up, Some(true));
        assert_eq!(core.store.history().gaps(0, i64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn the_saved_state_format_stays_readable() {
        let mut store = Store::open_in_memory(0).unwrap();
        let saved = r#"{"publisher":{"connected":true,"started_at":5,"since":6,"dropped":1,"restarts":2},
                        "aggregate":{"shares":7,"link_up":true}}"#;
        store.apply(&[], Some(saved), 10).unwrap();
        let core: Core<Counter> = Core::new(store).unwrap();
        assert_eq!(core.state.shares, 7);
        assert_eq!(core.publisher.restarts, 2);
    }

    #[test]
    fn a_message_dated_far_ahead_of_the_clock_is_refused() {
        let mut core: Core<Counter> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        let now = 1_000_000;
        assert!(core.message(1, &share(now as u64 + MAX_AHEAD_MS as u64), now));
        assert!(!core.message(1, &share(now as u64 + MAX_AHEAD_MS as u64 + 1), now));
        assert!(!core.message(1, &share(u64::MAX), now));
        assert_eq!(core.state.shares, 1);
        assert_eq!(core.losses().refused_future, 2);
    }

    #[test]
    fn a_message_dated_before_the_retention_is_refused() {
        let mut core: Core<Counter> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        core.hello(1, &hello(1_000), 1_000);
        let now = 40 * 86_400_000;
        // Without a retention set, any past is accepted.
        assert!(core.message(1, &share(0), now));
        core.set_retention_days(30);
        let oldest = (now - 30 * 86_400_000) as u64;
        assert!(core.message(1, &share(oldest), now));
        assert!(!core.message(1, &share(oldest - 1), now));
        assert_eq!(core.state.shares, 2);
        assert_eq!(core.losses().refused_past, 1);
    }

    #[test]
    fn a_whole_snapshot_gives_what_it_named_and_a_partial_one_nothing() {
        let key = |id| (stats_sv2::live::MINER, id, 0);
        let mut snapshot = LiveSnapshot::default();
        assert_eq!(snapshot.end(0), None, "no begin");
        snapshot.begin();
        snapshot.named(key(3));
        snapshot.named(key(1));
        assert_eq!(snapshot.end(2), Some(BTreeSet::from([key(1), key(3)])));
        assert_eq!(snapshot.end(2), None, "ended already");

        snapshot.begin();
        snapshot.named(key(1));
        assert_eq!(snapshot.end(2), None, "an entry lost");
        // A snapshot cut off by a broken connection is forgotten at the next.
        snapshot.begin();
        snapshot.named(key(1));
        snapshot.begin();
        assert_eq!(snapshot.end(0), Some(BTreeSet::new()));
        // The same key twice is not a whole snapshot of distinct entries.
        snapshot.begin();
        snapshot.named(key(1));
        snapshot.named(key(1));
        assert_eq!(snapshot.end(2), None);
    }

    /// The miner ids live.
    #[derive(Default, Serialize, Deserialize)]
    struct Miners(BTreeSet<u32>);

    impl ServiceState for Miners {
        const ROLE: u8 = stats_sv2::role::TRANSLATOR;
        fn publisher_restarted(&mut self) {
            self.0.clear();
        }
        fn apply(&mut self, msg: &StatsMessage, sender: Sender, _: &mut Vec<Write>) {
            match msg {
                StatsMessage::MinerConnected(m) => {
                    self.0.insert(m.miner_id);
                }
                // A share makes its miner live, unless a restarted process sent it.
                StatsMessage::MinerShare(m) if sender == Sender::Current => {
                    self.0.insert(m.miner_id);
                }
                StatsMessage::MinerDisconnected(m) => {
                    self.0.remove(&m.miner_id);
                }
                _ => {}
            }
        }
        fn live_entry(&mut self, entry: &LiveEntryOwned) {
            self.0.insert(entry.id);
        }
        fn live_sweep(&mut self, named: &BTreeSet<LiveKey>) {
            self.0
                .retain(|&id| named.contains(&(stats_sv2::live::MINER, id, 0)));
        }
    }

    fn connected(miner_id: u32) -> StatsMessage {
        stats_sv2::MinerConnectedOwned {
            miner_id,
            name: String::from("rig").try_into().unwrap(),
            timestamp: 1,
        }
        .into()
    }

    fn begin(core: &mut Core<Miners>, conn: u64) {
        core.message(conn, &stats_sv2::LiveBegin { timestamp: 1 }.into(), 1);
    }

    fn entry(core: &mut Core<Miners>, conn: u64, id: u32) {
        let entry = stats_sv2::LiveEntryOwned {
            kind: stats_sv2::live::MINER,
            id,
            channel_id: 0,
            flags: 0,
            name: String::new().try_into().unwrap(),
            since: 1,
            timestamp: 1,
        };
        core.message(conn, &entry.into(), 1);
    }

    fn end(core: &mut Core<Miners>, conn: u64, entries: u32) {
        let end = stats_sv2::LiveEnd {
            entries,
            timestamp: 1,
        };
        core.message(conn, &end.into(), 1);
    }

    /// `conn` sends a snapshot of `ids`.
    fn snapshot(core: &mut Core<Miners>, conn: u64, ids: &[u32]) {
        begin(core, conn);
        for &id in ids {
            entry(core, conn, id);
        }
        end(core, conn, ids.len() as u32);
    }

    #[test]
    fn each_connection_has_its_own_snapshot_and_a_restarted_process_none() {
        let mut core: Core<Miners> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        let live = |core: &Core<Miners>| core.state.0.iter().copied().collect::<Vec<_>>();
        core.hello(1, &hello(100), 1);
        for id in [1, 2] {
            core.message(1, &connected(id), 1);
        }
        snapshot(&mut core, 1, &[1]);
        assert_eq!(live(&core), [1], "miner 2 left");

        // Two connections of one process: their snapshots interleave, and
        // each is whole.
        core.hello(2, &hello(100), 1);
        core.message(1, &connected(6), 1);
        begin(&mut core, 1);
        begin(&mut core, 2);
        entry(&mut core, 2, 1);
        entry(&mut core, 1, 1);
        end(&mut core, 1, 1);
        assert_eq!(live(&core), [1], "miner 6 left");

        // The process restarts; its old connection's late news is ignored.
        core.hello(3, &hello(200), 1);
        core.message(3, &connected(5), 1);
        assert!(!core.message(1, &connected(7), 1));
        snapshot(&mut core, 1, &[1]);
        let share = |miner_id| stats_sv2::MinerShare {
            miner_id,
            accepted: true,
            backlogged: false,
            work: 1,
            timestamp: 1,
        };
        assert!(core.message(1, &share(8).into(), 1), "counted, as history");
        assert_eq!(live(&core), [5]);
        core.message(3, &share(9).into(), 1);
        assert_eq!(live(&core), [5, 9]);
        snapshot(&mut core, 3, &[5]);
        assert_eq!(live(&core), [5]);
        core.closed(1, 2);
        core.closed(2, 2);
        snapshot(&mut core, 3, &[]);
        assert!(live(&core).is_empty());
    }

    #[test]
    fn live_refusals_are_counted() {
        let mut refusals = LiveRefusals::default();
        for _ in 0..5 {
            refusals.refused("miner");
        }
        assert_eq!(refusals.count(), 5);
    }

    #[test]
    fn two_connections_count_as_connected_until_both_close() {
        let mut core: Core<Counter> = Core::new(Store::open_in_memory(0).unwrap()).unwrap();
        core.hello(1, &hello(1), 10);
        core.hello(2, &hello(1), 20);
        core.closed(1, 30);
        assert!(core.publisher.connected);
        assert_eq!(core.publisher.since, Some(10));
        core.closed(2, 40);
        assert!(!core.publisher.connected);
        assert_eq!(core.publisher.since, Some(40));
    }

    #[test]
    fn a_repeated_link_state_keeps_its_since_and_a_change_moves_it() {
        let mut state = None;
        LinkState::report(&mut state, true, 1_000);
        LinkState::report(&mut state, true, 2_000);
        assert_eq!(
            state,
            Some(LinkState {
                up: true,
                since: 1_000
            })
        );
        LinkState::report(&mut state, false, 3_000);
        LinkState::report(&mut state, false, 4_000);
        assert_eq!(
            state,
            Some(LinkState {
                up: false,
                since: 3_000
            })
        );
    }
}

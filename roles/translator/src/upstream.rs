//! The pool connection's task: connects to the first reachable pool of
//! `upstreams` (failover in order, reconnect with backoff), sets up the
//! connection and the ehash extension, then moves messages between the
//! miners' tasks, the pool and the quote recorder as the [`Router`] decides.
//! Miners stay connected while the pool is away.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use roles_common::backoff::Backoff;
use roles_common::stats_publisher::StatsPublisher;
use roles_common::sv2::{self, Incoming, Outgoing, ReadError, Sv2Connection, Sv2Reader, Sv2Writer};
use stats_sv2::link;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::mining_sv2::{SubmitSharesErrorOwned, SubmitSharesExtendedOwned};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UpstreamConfig;
use crate::router::{Action, Notification, Router};
use crate::TranslatorEvent;

/// Router -> miner task.
#[derive(Debug)]
pub(crate) enum ToMiner {
    /// Boxed: an idle miner's inbox holds one empty node of this size.
    Upstream(Box<MiningOwned>),
    /// The pool is (again) reachable: open a channel.
    Ready,
    /// The pool connection is gone, and the miner's channel with it.
    Lost,
}

/// Depth of a miner's inbox; a miner task that cannot keep up is dropped.
const MINER_QUEUE: usize = 1024;

/// Where the router puts a miner's messages. futures' channel rather than
/// tokio's: tokio's allocates cache-padded state and a block of 32 slots up
/// front (about 1 KB an idle miner holds), this one a node per message
/// waiting.
pub(crate) type MinerInbox = futures::channel::mpsc::Sender<ToMiner>;

pub(crate) fn miner_inbox() -> (MinerInbox, futures::channel::mpsc::Receiver<ToMiner>) {
    futures::channel::mpsc::channel(MINER_QUEUE)
}

/// Miner task (or the quote recorder) -> router.
pub(crate) enum ToRouter {
    Register(u32, MinerInbox),
    Unregister(u32),
    Send(u32, MiningOwned),
    /// The notifications of these shares, received on `channel_id`, are
    /// recorded durably: acknowledge them to the pool.
    Ack {
        channel_id: u32,
        share_hashes: Vec<[u8; 32]>,
    },
}

/// What the pool connection's task works with.
pub(crate) struct UpstreamLink {
    pub upstreams: Vec<UpstreamConfig>,
    /// Aggregated mode: one channel for every miner, with this wallet key.
    pub aggregate: Option<ehash::LockingKey>,
    pub events: broadcast::Sender<TranslatorEvent>,
    pub quotes: mpsc::UnboundedSender<Notification>,
    pub stats: StatsPublisher,
}

/// Messages to the pool that may wait unwritten (about 8 s of shares at
/// 1,000 shares/s); past that the pool is not reading and the session ends
/// (shares are turned away before, see [`KEPT_FROM_SHARES`]).
const UPSTREAM_QUEUE: usize = 8192;
/// Room in the queue to the pool kept for what is not a share (opens,
/// updates, acknowledgements): a pool that reads too slowly gets shares
/// turned away first, and the session ends only when even those fill it.
const KEPT_FROM_SHARES: usize = UPSTREAM_QUEUE / 8;
/// Once shares are turned away, they are until the queue is half empty
/// again: a pool reading just slower than shares come is one episode, not
/// one a write.
const SHARES_AGAIN_FROM: usize = UPSTREAM_QUEUE / 2;
/// The code of the refusal the translator answers a share it turned away
/// with, as if from the pool: it never reached the pool.
pub(crate) const POOL_NOT_READING: &str = "pool-not-reading";
/// How long a closing session may take to write what it queued.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// The miners' inboxes. A miner task that lets its inbox fill up is dropped
/// (its task ends when its inbox closes).
#[derive(Default)]
struct Miners(HashMap<u32, MinerInbox>);

impl Miners {
    fn send(&mut self, miner: u32, msg: ToMiner) {
        if let Some(tx) = self.0.get_mut(&miner) {
            if tx.try_send(msg).is_err() {
                warn!(miner, "miner task does not keep up: dropping it");
                self.0.remove(&miner);
            }
        }
    }

    fn broadcast(&mut self, make: impl Fn() -> ToMiner) {
        let ids: Vec<u32> = self.0.keys().copied().collect();
        for id in ids {
            self.send(id, make());
        }
    }
}

/// Why a session ended, and when it had come up (if it had).
struct SessionEnd {
    reason: String,
    up: Option<Instant>,
}

/// Runs until `shutdown`: one session after another, failing over to the
/// next pool when one cannot be reached.
pub(crate) async fn run(
    link: UpstreamLink,
    mut commands: mpsc::UnboundedReceiver<ToRouter>,
    shutdown: CancellationToken,
) {
    let mut router = Router::new(link.aggregate);
    let mut miners = Miners::default();
    let mut index = 0usize;
    let mut backoff = Backoff::new();
    loop {
        let upstream = &link.upstreams[index % link.upstreams.len()];
        let mut session = Session {
            link: &link,
            router: &mut router,
            miners: &mut miners,
            commands: &mut commands,
            turned_away: 0,
        };
        let end = session.run(upstream, &shutdown).await;
        router.on_upstream_lost();
        miners.broadcast(|| ToMiner::Lost);
        let Some(end) = end else { return };
        warn!(address = %upstream.address, "pool connection down: {}", end.reason);
        link.stats.link_status(link::POOL, false);
        let _ = link.events.send(TranslatorEvent::UpstreamLost(end.reason));
        // A pool not reached is passed over for the next; one that drops
        // the session soon after it came up is waited for longer each time.
        if end.up.is_none() {
            index += 1;
        }
        let (delay, _) = backoff.after(end.up);
        let waited = wait_offline(&mut router, &mut miners, &mut commands, delay, &shutdown);
        if !waited.await {
            return;
        }
    }
}

/// Serves the miners' commands while no pool is connected, for `delay`.
/// `false` when the translator is stopping.
async fn wait_offline(
    router: &mut Router,
    miners: &mut Miners,
    commands: &mut mpsc::UnboundedReceiver<ToRouter>,
    delay: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut sleep => return true,
            cmd = commands.recv() => match cmd {
                Some(ToRouter::Register(id, tx)) => {
                    miners.0.insert(id, tx);
                }
                Some(ToRouter::Unregister(id)) => {
                    miners.0.remove(&id);
                    // Its channels died with the connection: nothing to send.
                    router.on_miner_left(id);
                }
                Some(ToRouter::Send(id, _)) => {
                    // No pool: the message is dropped; the miner answers what it was
                    // waiting for and re-opens its channel on Ready.
                    miners.send(id, ToMiner::Lost);
                }
                // The pool sends unacknowledged notifications again.
                Some(ToRouter::Ack { .. }) => {}
                None => return false,
            },
        }
    }
}

/// One connection to one pool.
struct Session<'a> {
    link: &'a UpstreamLink,
    router: &'a mut Router,
    miners: &'a mut Miners,
    commands: &'a mut mpsc::UnboundedReceiver<ToRouter>,
    /// Shares turned away since the pool last read in time.
    turned_away: u64,
}

impl Session<'_> {
    /// Connects, sets up and serves; `None` when the translator is stopping.
    async fn run(
        &mut self,
        upstream: &UpstreamConfig,
        shutdown: &CancellationToken,
    ) -> Option<SessionEnd> {
        let down = |reason: String| SessionEnd { reason, up: None };
        let connecting = sv2::connect(
            &upstream.address,
            upstream.authority_public_key,
            "pool",
            1024,
        );
        let mut conn = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = connecting => match r {
                Ok(conn) => conn,
                Err(e) => return Some(down(e.explain("the pool's authority_public_key"))),
            },
        };
        let end = match handshake(&mut conn, upstream).await {
            Ok(ehash) => {
                let up = Instant::now();
                let _ = self.link.events.send(TranslatorEvent::UpstreamConnected {
                    address: upstream.address.clone(),
                    ehash,
                });
                self.link.stats.link_status(link::POOL, true);
                self.miners.broadcast(|| ToMiner::Ready);
                let Sv2Connection {
                    writer, mut reader, ..
                } = conn;
                let mut writer = Sv2Writer::spawn(writer, UPSTREAM_QUEUE);
                let end = self.serve(&mut reader, &mut writer, shutdown).await;
                drop(reader);
                writer.close(CLOSE_WITHIN).await;
                end.map(|reason| SessionEnd {
                    reason,
                    up: Some(up),
                })
            }
            Err(reason) => {
                drop(conn.reader);
                let _ = conn.writer.shutdown().await;
                Some(down(reason))
            }
        };
        if shutdown.is_cancelled() {
            return None;
        }
        end
    }

    /// Relays until the connection fails (the reason) or the translator
    /// stops (`None`).
    async fn serve(
        &mut self,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        loop {
            let actions = tokio::select! {
                _ = shutdown.cancelled() => return None,
                reason = writer.failed() => return Some(reason),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return None,
                },
                incoming = reader.recv() => match incoming {
                    Ok(Incoming::Sv2(AnyMessageOwned::Mining(m))) => self.router.on_upstream(m),
                    Ok(Incoming::Sv2(other)) => {
                        debug!("ignoring upstream {}", sv2::message_name(&other));
                        vec![]
                    }
                    Ok(Incoming::Ehash(m)) => self.router.on_ehash(m),
                    Err(ReadError::ClosedByPeer) => return Some("closed by the pool".into()),
                    Err(e) => return Some(e.to_string()),
                },
            };
            if let Err(e) = self.apply(writer, actions) {
                return Some(e);
            }
        }
    }

    fn on_command(&mut self, cmd: ToRouter) -> Vec<Action> {
        match cmd {
            ToRouter::Register(id, mut tx) => {
                let _ = tx.try_send(ToMiner::Ready);
                self.miners.0.insert(id, tx);
                vec![]
            }
            ToRouter::Unregister(id) => {
                self.miners.0.remove(&id);
                self.router.on_miner_left(id)
            }
            ToRouter::Send(id, msg) => self.router.on_miner_message(id, msg),
            ToRouter::Ack {
                channel_id,
                share_hashes,
            } => Router::acknowledge(channel_id, &share_hashes),
        }
    }

    /// Queues what goes to the pool: never waits on the pool, so its
    /// messages are read while it is slow to read ours. A share finding
    /// the queue nearly full is answered as if the pool refused it.
    fn apply(&mut self, writer: &Sv2Writer, actions: Vec<Action>) -> Result<(), String> {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::ToMiner(miner, m) => {
                    self.miners.send(miner, ToMiner::Upstream(Box::new(m)))
                }
                Action::Upstream(MiningOwned::SubmitSharesExtended(share))
                    if self.turns_shares_away(writer) =>
                {
                    if self.turned_away == 0 {
                        warn!(
                            unwritten = UPSTREAM_QUEUE - writer.room(),
                            "the pool reads too slowly: shares are turned away \
                             ({POOL_NOT_READING}) until it catches up"
                        );
                        let _ = self.link.events.send(TranslatorEvent::PoolNotReading);
                    }
                    self.turned_away += 1;
                    actions.extend(self.router.on_upstream(turned_away(&share)));
                }
                Action::Upstream(m) => {
                    if self.turned_away > 0 && matches!(m, MiningOwned::SubmitSharesExtended(_)) {
                        let turned_away = std::mem::take(&mut self.turned_away);
                        info!(turned_away, "the pool reads again: shares go to it");
                        let again = TranslatorEvent::PoolReadingAgain { turned_away };
                        let _ = self.link.events.send(again);
                    }
                    writer.send(Outgoing::Sv2(AnyMessageOwned::Mining(m)))?
                }
                Action::Quote(n) => {
                    let _ = self.link.quotes.send(n);
                }
                Action::Ack(ack) => writer.send(Outgoing::Ehash(ack))?,
            }
        }
        Ok(())
    }

    /// Whether a share is turned away now (see [`KEPT_FROM_SHARES`]).
    fn turns_shares_away(&self, writer: &Sv2Writer) -> bool {
        if self.turned_away > 0 {
            writer.room() < SHARES_AGAIN_FROM
        } else {
            writer.room() <= KEPT_FROM_SHARES
        }
    }
}

/// The refusal of `share` as the pool would send it, for a share the
/// translator turned away.
fn turned_away(share: &SubmitSharesExtendedOwned) -> MiningOwned {
    MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
        channel_id: share.channel_id,
        sequence_number: share.sequence_number,
        error_code: POOL_NOT_READING
            .to_string()
            .try_into()
            .expect("a short code"),
    })
}

/// SetupConnection and the ehash extension; whether the pool granted it.
async fn handshake(conn: &mut Sv2Connection, upstream: &UpstreamConfig) -> Result<bool, String> {
    let setup = sv2::setup_connection(
        Protocol::MiningProtocol,
        sv2::REQUIRES_VERSION_ROLLING,
        conn.peer,
        concat!("translator ", env!("CARGO_PKG_VERSION")),
        "translator",
    );
    conn.setup(setup).await?;
    let ehash = conn.negotiate_ehash().await.map_err(|e| e.to_string())?;
    if ehash {
        info!(address = %upstream.address, "connected to the pool, ehash extension granted");
    } else {
        warn!(
            address = %upstream.address,
            "connected to the pool WITHOUT the ehash extension: shares earn no ehash"
        );
    }
    Ok(ehash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miner_whose_inbox_fills_up_is_dropped_and_reads_what_was_queued() {
        let mut miners = Miners::default();
        let (tx, mut rx) = miner_inbox();
        miners.0.insert(7, tx);
        // The queue, plus the one slot the router's sender is guaranteed.
        for _ in 0..=MINER_QUEUE {
            miners.send(7, ToMiner::Ready);
        }
        assert!(miners.0.contains_key(&7), "a full queue's worth waits");
        miners.send(7, ToMiner::Lost);
        assert!(!miners.0.contains_key(&7), "one more: dropped");
        let mut queued = 0;
        let end = loop {
            match rx.try_recv() {
                Ok(ToMiner::Ready) => queued += 1,
                Ok(other) => panic!("not queued: {other:?}"),
                Err(end) => break end,
            }
        };
        assert_eq!(queued, MINER_QUEUE + 1);
        assert_eq!(end, futures::channel::mpsc::TryRecvError::Closed);
    }
}

//! The mint's side of the Redis Streams transport
//! (`mint_quote_sv2::stream`): every mint process of a deployment reads the
//! pools' requests as one consumer group, so each request is served by one
//! of them, and answers on the asking pool's stream.
//!
//! ```text
//!   pools --XADD--> requests --XREADGROUP--> this process --> quote written (durable)
//!                                                         --> XADD answers:<pool>
//!                                                         --> XACK + XDEL request
//! ```
//!
//! A request is acknowledged only once its answer is in Redis, and its
//! answer is sent only once its quote is durable. While a batch is being
//! served its entries are touched, so no other process takes them from a
//! live one; a process that dies holding requests leaves them pending in
//! the group, and after `claim_idle_ms` another process claims and serves
//! them (the quote writer answers a share quoted before with the same
//! quote). Entries that are not signed by an allowed pool for this mint are
//! acknowledged and dropped: they create nothing. While connected, the
//! process refreshes the prefix's alive key: pools write requests only
//! while some mint reads them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ehash::wire::MessageSet;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use mint_quote_sv2::stream::{
    keypair, SignedEntry, StreamKeys, FIELD_DATABASE, FIELD_KEYSET, FIELD_UNIT_BITS, MINTS_GROUP,
    MINT_ALIVE_EVERY, MINT_ALIVE_TTL,
};
use mint_quote_sv2::MintQuoteMessage;
use redis::aio::MultiplexedConnection;
use redis::Value;
use roles_common::backoff::Backoff;
use roles_common::log_limit::LogLimit;
use roles_common::redis_stream::{self, StreamEntry, BLOCK};
use roles_common::CancellationToken;
use stratum_core::bitcoin::secp256k1::{Keypair, SecretKey, XOnlyPublicKey};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::config::RedisSettings;
use crate::io::LinkContext;
use crate::service::KV_NAMESPACE;
use cdk_common::database::mint::DynMintDatabase;
use cdk_common::database::Error as DatabaseError;

/// Entries read at once; one group commit of the quote writer.
const BATCH: usize = crate::quote_writer::MAX_GROUP;
/// Batches served at once: the next is read, and its quotes queued for the
/// writer, while the last is written and answered.
const BATCHES_IN_FLIGHT: usize = 4;
/// Answers kept per pool stream at most (the pool trims what it has read).
const ANSWERS_MAX_LEN: usize = 100_000;
/// A consumer holding nothing and idle this long is gone: its name is
/// removed from the group.
const CONSUMER_GONE_AFTER: Duration = Duration::from_secs(3600);

struct Session {
    keys: StreamKeys,
    consumer: String,
    /// The id of this mint's database ([`database_id`]).
    database: String,
    claim_idle: Duration,
    ctx: Arc<LinkContext>,
    signer: Keypair,
    mint_key: XOnlyPublicKey,
    allowed: Vec<XOnlyPublicKey>,
    refusals: Mutex<LogLimit>,
}

/// Serves quote requests from Redis until `shutdown`, reconnecting with
/// backoff.
pub async fn serve(
    settings: RedisSettings,
    keyset: String,
    database: String,
    ctx: Arc<LinkContext>,
    shutdown: CancellationToken,
) {
    let secret = SecretKey::from_slice(&ctx.authority_secret_key.into_bytes())
        .expect("a key_utils secret key is a valid secret key");
    let session = Session {
        keys: StreamKeys::new(&settings.prefix),
        consumer: settings.consumer(),
        database,
        claim_idle: Duration::from_millis(settings.claim_idle_ms),
        mint_key: ctx.mint_key(),
        allowed: ctx.pools.iter().map(|(key, _)| *key).collect(),
        ctx,
        signer: keypair(&secret),
        refusals: Mutex::new(LogLimit::default()),
    };
    let shown_url = roles_common::redact_url(&settings.url);
    let mut backoff = Backoff::new();
    loop {
        let mut up = None;
        let reason = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = session.run(&settings.url, &keyset, &shown_url, &mut up) => r,
        };
        let (delay, attempt) = backoff.after(up);
        if attempt == 1 || attempt.is_power_of_two() {
            warn!("redis transport down ({shown_url}): {reason}; retrying in {delay:?} (attempt {attempt})");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    session.leave(&settings.url).await;
}

impl Session {
    /// One connection's life; returns why it ended. `up` is set once the
    /// group and the keyset are in place.
    async fn run(
        &self,
        url: &str,
        keyset: &str,
        shown_url: &str,
        up: &mut Option<Instant>,
    ) -> String {
        let mut c = match redis_stream::connect(url).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = self.set_up(&mut c.commands, keyset).await {
            return e;
        }
        *up = Some(Instant::now());
        info!(
            "redis transport up: {shown_url}, reading {} as `{}` in group `{MINTS_GROUP}`",
            self.keys.requests(),
            self.consumer
        );
        // Batches are read while earlier ones are served, by a reader never
        // cancelled mid-read (a reply lost that way would leave its entries
        // pending until claimed), and only when there is room to serve one
        // at once, so none waits untouched long enough to be claimed.
        let (batches, mut to_serve) = mpsc::channel(BATCHES_IN_FLIGHT);
        let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let reading = self.read_batches(&mut c.blocking, c.commands.clone(), slots, batches);
        let serving = async {
            let mut in_flight = FuturesUnordered::new();
            loop {
                tokio::select! {
                    Some((entries, slot)) = to_serve.recv() => {
                        let served = self.serve_entries(c.commands.clone(), entries);
                        in_flight.push(async move {
                            let served = served.await;
                            drop(slot);
                            served
                        });
                    }
                    Some(served) = in_flight.next(), if !in_flight.is_empty() => served?,
                    else => return Ok::<(), String>(()),
                }
            }
        };
        let ended = tokio::select! {
            r = reading => r,
            r = serving => r,
            r = self.keep_alive(c.commands.clone()) => r,
        };
        ended.err().unwrap_or_else(|| "stopped".into())
    }

    /// Refreshes the prefix's alive key until the connection fails; beside
    /// reading and serving, so a busy mint keeps it too.
    async fn keep_alive(&self, mut conn: MultiplexedConnection) -> Result<(), String> {
        let mut every = tokio::time::interval(MINT_ALIVE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.refresh_alive(&mut conn).await?;
        }
    }

    async fn refresh_alive(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        redis::cmd("SET")
            .arg(self.keys.mint_alive())
            .arg(&self.consumer)
            .arg("PX")
            .arg(MINT_ALIVE_TTL.as_millis() as u64)
            .query_async::<()>(conn)
            .await
            .map_err(|e| format!("refreshing {}: {e}", self.keys.mint_alive()))
    }

    /// Reads batches of requests until the connection fails or the prefix
    /// serves another database: those another consumer held too long every
    /// `claim_idle / 2` (checking the database first), otherwise those this
    /// consumer already holds (after a reconnect, or a restart under the
    /// same `consumer` name), then new ones.
    async fn read_batches(
        &self,
        blocking: &mut MultiplexedConnection,
        mut commands: MultiplexedConnection,
        slots: Arc<Semaphore>,
        batches: mpsc::Sender<(Vec<StreamEntry>, OwnedSemaphorePermit)>,
    ) -> Result<(), String> {
        let mut cursor = "0".to_string();
        let mut claim_from = "0-0".to_string();
        let mut next_claim = Instant::now();
        loop {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            let entries = if Instant::now() >= next_claim {
                next_claim = Instant::now() + self.claim_idle / 2;
                // The prefix's database may have been claimed anew meanwhile.
                self.check_database(&mut commands).await?;
                self.claim(&mut commands, &mut claim_from).await?
            } else {
                self.read(blocking, &mut cursor).await?
            };
            if !entries.is_empty() && batches.send((entries, slot)).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Checks that the mints of the prefix share this one's database,
    /// creates the consumer group (if new), publishes the active keyset and
    /// removes consumers long gone.
    async fn set_up(&self, conn: &mut MultiplexedConnection, keyset: &str) -> Result<(), String> {
        self.check_database(conn).await?;
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(format!("creating the consumer group: {e}"));
            }
        }
        let ours = self.ctx.service.unit_bits().get();
        let published: Option<u8> = redis::cmd("HGET")
            .arg(self.keys.mint_info())
            .arg(FIELD_UNIT_BITS)
            .query_async(conn)
            .await
            .map_err(|e| format!("reading the published unit_bits: {e}"))?;
        if let Some(theirs) = published.filter(|theirs| *theirs != ours) {
            warn!(
                "the mints of prefix {} published unit_bits {theirs}, this one has {ours}: \
                 its value replaces theirs, and pools with another stop sending until \
                 every mint and pool of the deployment agree",
                self.keys.prefix()
            );
        }
        // Alive before the keyset is there: a pool never finds the one
        // without the other.
        self.refresh_alive(conn).await?;
        redis::cmd("HSET")
            .arg(self.keys.mint_info())
            .arg(FIELD_KEYSET)
            .arg(keyset)
            .arg(FIELD_UNIT_BITS)
            .arg(ours)
            .query_async::<()>(conn)
            .await
            .map_err(|e| format!("publishing the keyset: {e}"))?;
        self.remove_gone_consumers(conn).await
    }

    /// Refuses to take requests when the mints of the prefix serve another
    /// database: a share could be quoted once in each, and a wallet finds
    /// a quote only in the database of the mint it asks.
    async fn check_database(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let theirs: String = redis::pipe()
            .cmd("HSETNX")
            .arg(self.keys.mint_info())
            .arg(FIELD_DATABASE)
            .arg(&self.database)
            .ignore()
            .cmd("HGET")
            .arg(self.keys.mint_info())
            .arg(FIELD_DATABASE)
            .query_async::<(String,)>(conn)
            .await
            .map_err(|e| format!("reading the mints' database: {e}"))?
            .0;
        if theirs == self.database {
            return Ok(());
        }
        Err(format!(
            "the mints of prefix {prefix} serve database {theirs}, this mint's `database` is \
             {ours}: it takes none of their requests (a share could be quoted in both). If every \
             mint of the prefix moved to this database, delete field `{FIELD_DATABASE}` of \
             Redis key {key}",
            prefix = self.keys.prefix(),
            ours = self.database,
            key = self.keys.mint_info(),
        ))
    }

    /// Requests for this consumer: those it already holds after `cursor`
    /// (from "0" on), then, once there are none, new ones (">").
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: &mut String,
    ) -> Result<Vec<StreamEntry>, String> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(MINTS_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.keys.requests())
            .arg(cursor.as_str())
            .query_async(conn)
            .await
            .map_err(|e| format!("reading requests: {e}"))?;
        let entries = redis_stream::read_reply(&reply);
        if *cursor != ">" {
            match entries.last() {
                None => *cursor = ">".to_string(),
                Some(last) => {
                    info!("serving {} requests this consumer held", entries.len());
                    *cursor = last.id.clone();
                }
            }
        }
        Ok(entries)
    }

    /// Requests another consumer has held unacknowledged for `claim_idle`;
    /// the scan goes on from `from` and wraps around.
    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
        from: &mut String,
    ) -> Result<Vec<StreamEntry>, String> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(from.as_str())
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await
            .map_err(|e| format!("claiming idle requests: {e}"))?;
        let (next, claimed) = redis_stream::autoclaim_reply(&reply);
        *from = next;
        if !claimed.is_empty() {
            info!(
                "claimed {} requests idle for over {:?} (a mint process stopped holding them)",
                claimed.len(),
                self.claim_idle
            );
        }
        Ok(claimed)
    }

    /// Serves entries concurrently (the quote writer groups their quotes)
    /// while keeping them claimed, then sends the answers, and only once
    /// they are in Redis acknowledges the entries.
    async fn serve_entries(
        &self,
        mut conn: MultiplexedConnection,
        entries: Vec<StreamEntry>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let answers = {
            let serving = join_all(entries.iter().map(|entry| self.serve_entry(entry)));
            tokio::pin!(serving);
            let mut touch = tokio::time::interval(self.claim_idle / 3);
            touch.tick().await;
            loop {
                tokio::select! {
                    answers = &mut serving => break answers,
                    _ = touch.tick() => self.touch(&mut conn, &ids).await?,
                }
            }
        };
        let mut pipe = redis::pipe();
        for (pool, answer) in answers.into_iter().flatten() {
            match SignedEntry::sign(answer, &self.signer, &pool) {
                Ok(signed) => redis_stream::add(
                    &mut pipe,
                    &self.keys.answers(&pool),
                    ANSWERS_MAX_LEN,
                    &signed,
                ),
                Err(e) => warn!("an answer to pool {pool} does not encode: {e}"),
            }
        }
        if !pipe.is_empty() {
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| format!("answering (requests stay pending): {e}"))?;
        }
        redis::pipe()
            .cmd("XACK")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.requests())
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("acknowledging requests: {e}"))
    }

    /// Resets the idle time of entries this consumer is serving, keeping
    /// them its own.
    async fn touch(&self, conn: &mut MultiplexedConnection, ids: &[&str]) -> Result<(), String> {
        redis::cmd("XCLAIM")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .query_async::<Value>(conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("keeping requests claimed: {e}"))
    }

    /// The answer to one entry and the pool it goes to; `None` for an entry
    /// that is not a signed request of an allowed pool.
    async fn serve_entry(&self, entry: &StreamEntry) -> Option<(XOnlyPublicKey, MintQuoteMessage)> {
        let opened = entry
            .signed
            .clone()
            .and_then(|signed| signed.open(&self.mint_key, &self.allowed));
        let (pool, message) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.refuse(&entry.id, &e.to_string());
                return None;
            }
        };
        let answer = match message {
            MintQuoteMessage::MintQuoteRequest(request) => {
                let asking = self.ctx.pool(&pool)?;
                self.ctx.service.handle_quote(request, &asking).await
            }
            MintQuoteMessage::MintStatsRequest(stats) => {
                match self.ctx.service.stats(stats.request_id).await {
                    Ok(stats) => MintQuoteMessage::MintStatsResponse(stats),
                    Err(e) => {
                        warn!("stats request from pool {pool} failed: {e}");
                        return None;
                    }
                }
            }
            other => {
                self.refuse(&entry.id, &format!("{} is not a request", other.name()));
                return None;
            }
        };
        Some((pool, answer))
    }

    fn refuse(&self, id: &str, why: &str) {
        if let Some(left_out) = roles_common::lock(&self.refusals).check(Instant::now()) {
            warn!(left_out, "dropped request entry {id}: {why}");
        }
    }

    /// Removes consumers of the group that hold nothing and have been idle
    /// for [`CONSUMER_GONE_AFTER`] (processes that stopped long ago).
    async fn remove_gone_consumers(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .query_async(conn)
            .await
            .map_err(|e| format!("listing consumers: {e}"))?;
        for (name, pending, idle_ms) in consumers(&reply) {
            if pending == 0
                && idle_ms >= CONSUMER_GONE_AFTER.as_millis() as i64
                && name != self.consumer
            {
                self.delete_consumer(conn, &name).await?;
            }
        }
        Ok(())
    }

    async fn delete_consumer(
        &self,
        conn: &mut MultiplexedConnection,
        name: &str,
    ) -> Result<(), String> {
        redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(name)
            .query_async::<Value>(conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("removing consumer {name}: {e}"))
    }

    /// At shutdown: leaves the group if this consumer holds nothing (what
    /// it holds stays for the next process to claim).
    async fn leave(&self, url: &str) {
        let Ok(mut c) = redis_stream::connect(url).await else {
            return;
        };
        let Ok(reply) = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .query_async::<Value>(&mut c.commands)
            .await
        else {
            return;
        };
        let holds = consumers(&reply)
            .into_iter()
            .any(|(name, pending, _)| name == self.consumer && pending > 0);
        if !holds {
            let _ = self.delete_consumer(&mut c.commands, &self.consumer).await;
        }
    }
}

/// (name, pending, idle ms) of each consumer in an `XINFO CONSUMERS` reply.
fn consumers(reply: &Value) -> Vec<(String, i64, i64)> {
    let Value::Array(consumers) = reply else {
        return vec![];
    };
    consumers
        .iter()
        .filter_map(|consumer| {
            let fields: Vec<(&Value, &Value)> = match consumer {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|p| Some((p.first()?, p.get(1)?)))
                    .collect(),
                Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
                _ => return None,
            };
            let field = |wanted: &str| {
                fields.iter().find_map(|(k, v)| match k {
                    Value::BulkString(k) if k.as_slice() == wanted.as_bytes() => Some(*v),
                    Value::SimpleString(k) if k == wanted => Some(*v),
                    _ => None,
                })
            };
            let name = match field("name")? {
                Value::BulkString(name) => String::from_utf8_lossy(name).into_owned(),
                Value::SimpleString(name) => name.clone(),
                _ => return None,
            };
            let int = |wanted| match field(wanted) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            Some((name, int("pending"), int("idle")))
        })
        .collect()
}

/// Where the database's id is kept (namespace `ehash`).
const KV_META: &str = "meta";
const KV_DATABASE_ID: &str = "database_id";

/// The id of the mint's database: made at random by the first mint that
/// asks, and kept in the database itself, so every mint on it reads the
/// same id whatever URL it reaches it by.
pub(crate) async fn database_id(db: &DynMintDatabase) -> Result<String, DatabaseError> {
    let read = || db.kv_read(KV_NAMESPACE, KV_META, KV_DATABASE_ID);
    if let Some(id) = read().await? {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    let mut tx = db.begin_transaction().await?;
    let ours = hex::encode(rand::random::<[u8; 16]>());
    tx.kv_write_if_absent(KV_NAMESPACE, KV_META, KV_DATABASE_ID, ours.as_bytes())
        .await?;
    tx.commit().await?;
    let id = read()
        .await?
        .ok_or_else(|| DatabaseError::Internal("the database id written is gone".into()))?;
    Ok(String::from_utf8_lossy(&id).into_owned())
}

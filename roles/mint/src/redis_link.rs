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
//! A request is acknowledged only after its answer is in Redis, and its
//! answer is sent only once its quote is durable. A process that dies
//! holding requests leaves them pending in the group; after `claim_idle_ms`
//! another process claims and serves them (the quote writer answers a share
//! quoted before with the same quote). Entries that are not signed by an
//! allowed pool for this mint are acknowledged and dropped: they create
//! nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ehash::wire::MessageSet;
use futures::future::join_all;
use mint_quote_sv2::stream::{
    keypair, SignedEntry, StreamKeys, FIELD_KEYSET, FIELD_UNIT_BITS, MINTS_GROUP,
};
use mint_quote_sv2::MintQuoteMessage;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use roles_common::log_limit::LogLimit;
use roles_common::redis_stream::{self, BLOCK};
use roles_common::CancellationToken;
use stratum_core::bitcoin::secp256k1::{Keypair, SecretKey, XOnlyPublicKey};
use tracing::{info, warn};

use crate::config::RedisSettings;
use crate::io::LinkContext;

/// Entries read at once; one group commit of the quote writer.
const BATCH: usize = crate::quote_writer::MAX_GROUP;
/// Answers kept per pool stream at most (the pool trims what it has read).
const ANSWERS_MAX_LEN: usize = 100_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

struct Session {
    keys: StreamKeys,
    consumer: String,
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
    ctx: Arc<LinkContext>,
    shutdown: CancellationToken,
) {
    let secret = SecretKey::from_slice(&ctx.authority_secret_key.into_bytes())
        .expect("a key_utils secret key is a valid secret key");
    let session = Session {
        keys: StreamKeys::new(&settings.prefix),
        consumer: settings.consumer(),
        claim_idle: Duration::from_millis(settings.claim_idle_ms),
        mint_key: ctx.mint_key(),
        allowed: ctx.pools.iter().map(|(key, _)| *key).collect(),
        ctx,
        signer: keypair(&secret),
        refusals: Mutex::new(LogLimit::default()),
    };
    let url = roles_common::redact_url(&settings.url);
    let mut backoff = BACKOFF_MIN;
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session.run(&settings.url, &keyset, &url, &mut backoff) => r,
        };
        warn!("redis transport down ({url}): {reason}; retrying in {backoff:?}");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Session {
    /// One connection's life; returns why it ended.
    async fn run(
        &self,
        url: &str,
        keyset: &str,
        shown_url: &str,
        backoff: &mut Duration,
    ) -> String {
        let mut c = match redis_stream::connect(url).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = self.set_up(&mut c.commands, keyset).await {
            return e;
        }
        *backoff = BACKOFF_MIN;
        info!(
            "redis transport up: {shown_url}, reading {} as `{}` in group `{MINTS_GROUP}`",
            self.keys.requests(),
            self.consumer
        );
        // Requests delivered to this consumer name before a restart first.
        let mut cursor = "0".to_string();
        let mut next_claim = Instant::now();
        loop {
            let result = if Instant::now() >= next_claim {
                next_claim = Instant::now() + self.claim_idle / 2;
                self.claim(&mut c.commands).await
            } else {
                self.read(&mut c.blocking, &mut cursor).await
            };
            let entries = match result {
                Ok(entries) => entries,
                Err(e) => return e,
            };
            if let Err(e) = self.serve_entries(&mut c.commands, entries).await {
                return e;
            }
        }
    }

    /// Creates the consumer group (if new) and publishes the active keyset.
    async fn set_up(&self, conn: &mut MultiplexedConnection, keyset: &str) -> Result<(), String> {
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
        redis::cmd("HSET")
            .arg(self.keys.mint_info())
            .arg(FIELD_KEYSET)
            .arg(keyset)
            .arg(FIELD_UNIT_BITS)
            .arg(self.ctx.service.unit_bits().get())
            .query_async::<()>(conn)
            .await
            .map_err(|e| format!("publishing the keyset: {e}"))
    }

    /// New requests for this consumer; first those it already holds
    /// (`cursor` "0"), then new ones (">").
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        cursor: &mut String,
    ) -> Result<Vec<StreamId>, String> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
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
        let entries: Vec<StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if *cursor != ">" && entries.is_empty() {
            *cursor = ">".to_string();
        } else if *cursor != ">" {
            info!(
                "serving {} requests this consumer held before",
                entries.len()
            );
        }
        Ok(entries)
    }

    /// Requests another consumer has held unacknowledged for `claim_idle`.
    async fn claim(&self, conn: &mut MultiplexedConnection) -> Result<Vec<StreamId>, String> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await
            .map_err(|e| format!("claiming idle requests: {e}"))?;
        if !reply.claimed.is_empty() {
            info!(
                "claimed {} requests idle for over {:?} (a mint process stopped holding them)",
                reply.claimed.len(),
                self.claim_idle
            );
        }
        Ok(reply.claimed)
    }

    /// Serves entries concurrently (the quote writer groups their quotes),
    /// then sends the answers and acknowledges the entries, in one round trip.
    async fn serve_entries(
        &self,
        conn: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let answers = join_all(entries.iter().map(|entry| self.serve_entry(entry))).await;
        let mut pipe = redis::pipe();
        for (pool, answer) in answers.into_iter().flatten() {
            let signed = SignedEntry::sign(answer, &self.signer, &pool)
                .map_err(|e| format!("encoding an answer: {e}"))?;
            redis_stream::add(
                &mut pipe,
                &self.keys.answers(&pool),
                ANSWERS_MAX_LEN,
                &signed,
            );
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        pipe.cmd("XACK")
            .arg(self.keys.requests())
            .arg(MINTS_GROUP)
            .arg(&ids)
            .ignore();
        pipe.cmd("XDEL")
            .arg(self.keys.requests())
            .arg(&ids)
            .ignore();
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| format!("answering: {e}"))
    }

    /// The answer to one entry and the pool it goes to; `None` for an entry
    /// that is not a signed request of an allowed pool.
    async fn serve_entry(&self, entry: &StreamId) -> Option<(XOnlyPublicKey, MintQuoteMessage)> {
        let opened = redis_stream::signed_entry(entry)
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
                let script = self.ctx.reward_script(&pool)?;
                self.ctx.service.handle_quote(request, &script).await
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
}

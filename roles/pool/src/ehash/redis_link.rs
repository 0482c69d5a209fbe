//! The pool's side of the Redis Streams transport
//! (`mint_quote_sv2::stream`): requests, signed with the pool's identity
//! key for the mint's authority key, go to the deployment's request stream,
//! which every process of the mint cluster reads; answers come back on this
//! pool's own stream and count only if the mint's authority key signed them
//! for this pool.
//!
//! Before `Up`, and with every stats request, the link checks that the
//! mints published their keyset with this pool's `unit_bits`, and that one
//! is running (the key mints refresh): with none, the link is down, so
//! requests are not written where no one reads them. Answers are read from the end of the stream as
//! it was then (the pool resends everything still owed on `Up`), and what
//! has been read is trimmed away.

use std::collections::HashMap;
use std::time::Instant;

use ehash::wire::MessageSet;
use mint_quote_sv2::stream::{
    keypair, SignedEntry, StreamKeys, FIELD_KEYSET, FIELD_UNIT_BITS, MINT_ALIVE_TTL,
};
use mint_quote_sv2::{MintQuoteMessage, MintStatsRequest};
use redis::aio::MultiplexedConnection;
use redis::Value;
use roles_common::backoff::Backoff;
use roles_common::log_limit::LogLimit;
use roles_common::redis_stream::{self, BLOCK};
use stratum_core::bitcoin::secp256k1::{Keypair, SecretKey, XOnlyPublicKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::mint_link::{Down, MintEvent, MintLinkConfig};
use super::request::RequestFrame;

/// Requests appended in one round trip at most.
const BATCH: usize = 512;
/// Entries the request stream keeps at most: a backstop for mints that are
/// all down (the pool resends what they never read).
const REQUESTS_MAX_LEN: usize = 1_000_000;

struct Link {
    url: String,
    shown_url: String,
    keys: StreamKeys,
    config: MintLinkConfig,
    signer: Keypair,
    pool_key: XOnlyPublicKey,
    mint_key: XOnlyPublicKey,
}

pub(super) async fn run(
    url: String,
    prefix: String,
    config: MintLinkConfig,
    mut queue: mpsc::Receiver<RequestFrame>,
    events: mpsc::UnboundedSender<MintEvent>,
    shutdown: CancellationToken,
) {
    let secret = SecretKey::from_slice(&config.identity_secret_key.into_bytes())
        .expect("a key_utils secret key is a valid secret key");
    let signer = keypair(&secret);
    let link = Link {
        shown_url: roles_common::redact_url(&url),
        url,
        keys: StreamKeys::new(&prefix),
        pool_key: signer.x_only_public_key().0,
        mint_key: XOnlyPublicKey::from_slice(&config.authority_public_key.into_bytes())
            .expect("a key_utils public key is a valid x-only key"),
        signer,
        config,
    };
    let mut backoff = Backoff::new();
    loop {
        let mut up = None;
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = link.session(&mut queue, &events, &mut up) => r,
        };
        let shown = format!("redis {}", link.shown_url);
        let down = Down {
            link: &shown,
            reason,
            up,
        };
        if !down
            .wait(&mut backoff, &mut queue, &events, &shutdown)
            .await
        {
            return;
        }
    }
}

impl Link {
    /// One connection's life; returns why it ended. `up` is set when the
    /// link comes up.
    async fn session(
        &self,
        queue: &mut mpsc::Receiver<RequestFrame>,
        events: &mpsc::UnboundedSender<MintEvent>,
        up: &mut Option<Instant>,
    ) -> String {
        let mut c = match redis_stream::connect(&self.url).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let cursor = match self.check_mint(&mut c.commands).await {
            Ok(cursor) => cursor,
            Err(e) => return e,
        };
        *up = Some(Instant::now());
        if events.send(MintEvent::Up).is_err() {
            return "the pool stopped".into();
        }
        let reader = AnswerReader {
            keys: self.keys.clone(),
            pool_key: self.pool_key,
            mint_key: self.mint_key,
            refusals: LogLimit::default(),
        };
        // Polled with the loop below, so it ends with this session.
        let reader = reader.run(c.blocking, c.commands.clone(), cursor, events.clone());
        tokio::pin!(reader);
        let mut stats_timer = tokio::time::interval(self.config.stats_interval);
        let mut request_id = 0u32;
        let mut batch = Vec::with_capacity(BATCH);
        let reason = loop {
            let sent = tokio::select! {
                reason = &mut reader => break reason,
                n = queue.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break "the pool stopped".into();
                    }
                    let frames = batch.drain(..).map(|request| request.as_bytes().to_vec());
                    self.send(&mut c.commands, frames).await
                }
                _ = stats_timer.tick() => {
                    // Mints restarted with other unit_bits would refuse every
                    // share's amount for good: the link goes down instead, and
                    // shares wait until the configs agree again.
                    request_id = request_id.wrapping_add(1);
                    let stats = MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id });
                    match (self.mint_info(&mut c.commands).await, stats.to_frame_bytes()) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Ok(frame)) => self.send(&mut c.commands, std::iter::once(frame)).await,
                        (Ok(_), Err(e)) => Err(format!("encoding a stats request: {e}")),
                    }
                }
            };
            if let Err(reason) = sent {
                break reason;
            }
        };
        reason
    }

    /// What the mints published, if their `unit_bits` is this pool's and
    /// one of them is running.
    async fn mint_info(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<HashMap<String, String>, String> {
        let (info, alive): (HashMap<String, String>, bool) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.mint_info())
            .cmd("EXISTS")
            .arg(self.keys.mint_alive())
            .query_async(conn)
            .await
            .map_err(|e| format!("reading the mint's keyset and alive key: {e}"))?;
        let ours = self.config.unit_bits.to_string();
        match info.get(FIELD_UNIT_BITS) {
            None => Err(format!(
                "no mint has published its keyset at {} yet (is a mint with [redis] prefix \"{}\" running?)",
                self.keys.mint_info(),
                self.keys.prefix()
            )),
            Some(theirs) if *theirs != ours => Err(format!(
                "the mint's unit_bits {theirs} is not this pool's {ours}"
            )),
            Some(_) if !alive => Err(format!(
                "no mint is running: none has refreshed {} in the last {} s (are mints of prefix \"{}\", of this build or later, running on this Redis?)",
                self.keys.mint_alive(),
                MINT_ALIVE_TTL.as_secs(),
                self.keys.prefix()
            )),
            Some(_) => Ok(info),
        }
    }

    /// Checks the mint's published `unit_bits` and returns where new
    /// answers start.
    async fn check_mint(&self, conn: &mut MultiplexedConnection) -> Result<String, String> {
        let info = self.mint_info(conn).await?;
        let ours = self.config.unit_bits;
        let last: Value = redis::cmd("XREVRANGE")
            .arg(self.keys.answers(&self.pool_key))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .map_err(|e| format!("reading the answer stream: {e}"))?;
        info!(
            "mint link up: redis {} (keyset {}, unit_bits {ours}); requests to {}, answers on {}",
            self.shown_url,
            info.get(FIELD_KEYSET).map_or("?", String::as_str),
            self.keys.requests(),
            self.keys.answers(&self.pool_key),
        );
        Ok(redis_stream::entries(&last)
            .first()
            .map_or_else(|| "0-0".to_string(), |e| e.id.clone()))
    }

    /// Signs `frames` and appends them to the request stream in one round trip.
    async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        frames: impl Iterator<Item = Vec<u8>>,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for frame in frames {
            let signed = SignedEntry::sign_frame(frame, &self.signer, &self.mint_key);
            redis_stream::add(&mut pipe, &self.keys.requests(), REQUESTS_MAX_LEN, &signed);
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| format!("sending requests: {e}"))
    }
}

struct AnswerReader {
    keys: StreamKeys,
    pool_key: XOnlyPublicKey,
    mint_key: XOnlyPublicKey,
    refusals: LogLimit,
}

impl AnswerReader {
    /// Reads this pool's answers from `cursor` on until the connection
    /// fails; returns why.
    async fn run(
        mut self,
        mut blocking: MultiplexedConnection,
        mut commands: MultiplexedConnection,
        mut cursor: String,
        events: mpsc::UnboundedSender<MintEvent>,
    ) -> String {
        let stream = self.keys.answers(&self.pool_key);
        loop {
            let reply: Result<Value, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&cursor)
                .query_async(&mut blocking)
                .await;
            let entries = match reply {
                Ok(reply) => redis_stream::read_reply(&reply),
                Err(e) => return format!("reading answers: {e}"),
            };
            let mut read = false;
            for entry in entries {
                read = true;
                cursor = entry.id.clone();
                let opened = entry
                    .signed
                    .and_then(|signed| signed.open(&self.pool_key, &[self.mint_key]));
                let event = match opened {
                    Ok((
                        _,
                        m @ (MintQuoteMessage::MintQuoteResponse(_)
                        | MintQuoteMessage::MintQuoteError(_)),
                    )) => MintEvent::Answer(m),
                    Ok((_, MintQuoteMessage::MintStatsResponse(stats))) => MintEvent::Stats(stats),
                    Ok((_, other)) => {
                        self.refuse(&entry.id, &format!("{} is not an answer", other.name()));
                        continue;
                    }
                    Err(e) => {
                        self.refuse(&entry.id, &e.to_string());
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return "the pool stopped".into();
                }
            }
            // What was read is done with: nobody else reads this stream.
            if read {
                let trimmed: Result<(), _> = redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg(&cursor)
                    .query_async(&mut commands)
                    .await;
                if let Err(e) = trimmed {
                    return format!("trimming answers: {e}");
                }
            }
        }
    }

    fn refuse(&mut self, id: &str, why: &str) {
        if let Some(left_out) = self.refusals.check(Instant::now()) {
            warn!(left_out, "dropped answer entry {id}: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use roles_common::services::{ProcessGroup, Redis};

    use super::*;
    use crate::ehash::mint_link::{MintLink, Transport};

    /// Mints of the cluster restarted with other `unit_bits` while the pool
    /// stays up: the link goes down rather than have every amount refused.
    /// So it does when no mint is running (none refreshes the alive key).
    #[tokio::test]
    async fn mints_publishing_other_unit_bits_or_none_running_take_the_link_down() {
        let redis = tokio::task::spawn_blocking(|| Redis::start(ProcessGroup::Parent))
            .await
            .unwrap()
            .unwrap();
        let keys = StreamKeys::new("hashpool-test");
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut publish = async |unit_bits: u8, alive: bool| {
            let mut pipe = redis::pipe();
            pipe.cmd("HSET")
                .arg(keys.mint_info())
                .arg(FIELD_KEYSET)
                .arg("00aa")
                .arg(FIELD_UNIT_BITS)
                .arg(unit_bits);
            match alive {
                true => pipe.cmd("SET").arg(keys.mint_alive()).arg("mint-1"),
                false => pipe.cmd("DEL").arg(keys.mint_alive()),
            };
            pipe.query_async::<()>(&mut conn).await.unwrap()
        };
        publish(4, true).await;
        let stats_interval = Duration::from_millis(100);
        let config = MintLinkConfig {
            transport: Transport::Redis {
                url: redis.url(),
                prefix: "hashpool-test".into(),
            },
            authority_public_key: "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd"
                .parse()
                .unwrap(),
            identity_secret_key: "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp"
                .parse()
                .unwrap(),
            unit_bits: 4,
            stats_interval,
            silence_limit: stats_interval * 3,
        };
        let shutdown = CancellationToken::new();
        let (_link, mut events) = MintLink::spawn(config, shutdown.clone());
        assert_eq!(events.recv().await, Some(MintEvent::Up));

        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("the link changed")
        };
        publish(5, true).await;
        let down = next().await;
        let Some(MintEvent::Down { reason }) = down else {
            panic!("{down:?}")
        };
        assert!(reason.contains("unit_bits 5"), "{reason}");

        publish(4, true).await;
        assert_eq!(next().await, Some(MintEvent::Up));
        publish(4, false).await;
        let down = next().await;
        let Some(MintEvent::Down { reason }) = down else {
            panic!("{down:?}")
        };
        assert!(reason.contains("no mint is running"), "{reason}");
        shutdown.cancel();
    }
}

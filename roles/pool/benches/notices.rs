//! The cost of one change to the store of notifications owed to translators
//! (`pool::ehash::notices`), with 1,000 and 100,000 notices kept across
//! 10,000 locking keys: each change should cost the same at both sizes.
//! Then what a restart relies on: 100,000 unacknowledged shares in the
//! outbox journal (what the notices are rebuilt from) all read back.
//!
//! `cargo bench -p pool --bench notices`

use std::time::{Duration, Instant};

use ehash::wire::str0255_truncated;
use ehash::LockingKey;
use ehash_ext_sv2::{EhashMessage, MintQuoteNotificationOwned};
use pool::ehash::notices::{Notice, Notices};
use stratum_core::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};

const KEYS: usize = 10_000;
const OPS: u32 = 200_000;

fn keys() -> Vec<LockingKey> {
    let secp = Secp256k1::new();
    (1..=KEYS as u32)
        .map(|n| {
            let mut secret = [0u8; 32];
            secret[28..].copy_from_slice(&n.to_be_bytes());
            PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&secret).unwrap()).into()
        })
        .collect()
}

fn hash(n: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(&n.to_le_bytes());
    h[4] = 1;
    h
}

fn notice(key: LockingKey, n: u32) -> Notice {
    Notice {
        key,
        message: EhashMessage::MintQuoteNotification(MintQuoteNotificationOwned {
            channel_id: 1,
            sequence_number: n,
            share_hash: hash(n).into(),
            quote_id: str0255_truncated("0b4f8a2e-5d1c-4c7a-9e3b-6f2d1a0c9b8e"),
            keyset_id: str0255_truncated("00aabbccddeeff00"),
            amount: 1,
        }),
    }
}

fn per_op(elapsed: Duration, ops: u32) -> f64 {
    elapsed.as_nanos() as f64 / f64::from(ops)
}

/// A store holding `kept` notices (half addressed to 100 connections, half
/// waiting), then timed: a notice sent and acknowledged; a notice waiting,
/// delivered on a new channel and acknowledged.
fn run(kept: u32, keys: &[LockingKey]) {
    let now = Instant::now();
    let mut store = Notices::new(1_000_000, 10_000_000);
    for n in 0..kept {
        let key = keys[n as usize % keys.len()];
        if n % 2 == 0 {
            store
                .send(hash(n), notice(key, n), u64::from(n % 100), now)
                .unwrap();
        } else {
            store.wait(hash(n), notice(key, n), now).unwrap();
        }
    }
    let base = kept;
    let start = Instant::now();
    for i in 0..OPS {
        let n = base + i;
        let key = keys[n as usize % keys.len()];
        store.send(hash(n), notice(key, n), 1_000, now).unwrap();
        store.ack(1_000, &[hash(n)], now);
    }
    let sent_acked = per_op(start.elapsed(), OPS);
    // A key with nothing else waiting: one notice waits, is delivered, acked.
    let lone = keys[0];
    let start = Instant::now();
    for i in 0..OPS {
        let n = base + OPS + i;
        store.wait(hash(n), notice(lone, n), now).unwrap();
        store.deliver_waiting(&lone, 2_000, 9, now);
        store.ack(2_000, &[hash(n)], now);
    }
    let waited = per_op(start.elapsed(), OPS);
    assert_eq!(store.len() as u32, kept, "every added notice left again");
    println!(
        "{kept:>7} notices over {} keys: sent + acknowledged {sent_acked:>6.0} ns; \
         waited + delivered + acknowledged {waited:>6.0} ns",
        keys.len().min(kept as usize)
    );
}

/// 100,000 shares journaled (as the pool does, concurrently), then the
/// journal reopened as after a crash: every one is still owed.
fn restart(runtime: &tokio::runtime::Runtime) {
    const SHARES: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.journal");
    let (outbox, _) = pool::ehash::outbox::Outbox::open(&path).unwrap();
    let start = Instant::now();
    runtime.block_on(async {
        let (synced, mut on_disk) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..SHARES {
            let synced = synced.clone();
            let callback = move |result| drop(synced.send(result));
            let callback = pool::ehash::outbox::Synced::new(callback);
            outbox.append(hash(n), vec![0xab; 300], callback);
        }
        for _ in 0..SHARES {
            on_disk.recv().await.unwrap().unwrap();
        }
    });
    let appended = start.elapsed();
    drop(outbox);
    let start = Instant::now();
    let (_outbox, owed) = pool::ehash::outbox::Outbox::open(&path).unwrap();
    let reopened = start.elapsed();
    assert_eq!(owed.len() as u32, SHARES, "a restart keeps them all");
    println!(
        "outbox: {SHARES} shares journaled in {:.2} s ({:.0} ns each, group-committed), \
         all {} read back after a restart in {:.2} s",
        appended.as_secs_f64(),
        per_op(appended, SHARES),
        owed.len(),
        reopened.as_secs_f64()
    );
}

fn main() {
    let keys = keys();
    println!("notices: nanoseconds per change ({OPS} changes each, release build)");
    for kept in [1_000, 100_000] {
        run(kept, &keys);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    restart(&runtime);
}

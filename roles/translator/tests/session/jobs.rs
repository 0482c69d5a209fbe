//! The work a miner gets: jobs, version rolling, targets and vardiff.

use super::*;

#[test]
fn version_rolling_bits_are_applied_within_the_negotiated_mask() {
    let mut h = Harness::new();
    let en1 = h.subscribe();
    h.line(json!({"id": 9, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]}));
    let r = h.response(9);
    assert_eq!(
        r["result"]["version-rolling.mask"],
        format!("{VERSION_ROLLING_MASK:08x}")
    );
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.job(1, POOL_PREFIX.len());
    let job = h.last_notify();
    // search with rolled bits until a share with version bits comes up
    let share = loop {
        let s = search(
            &job,
            &en1,
            4,
            h.difficulty(),
            Some(VERSION_ROLLING_MASK),
            next_run(),
            |a, b| a <= b,
        );
        if s.version_bits.is_some() {
            break s;
        }
    };
    h.submit(20, &share);
    let fwd = h.forwarded();
    assert_eq!(
        fwd.version,
        (0x2000_0000 & !VERSION_ROLLING_MASK) | share.version_bits.unwrap()
    );
    let mut bad = share.clone();
    bad.version_bits = Some(0x0000_0001);
    h.submit(21, &bad);
    assert_eq!(h.response(21)["error"][0], 20);
}

#[test]
fn keepalive_resends_the_job_with_a_fresh_ntime() {
    let (mut h, _) = Harness::ready("rig");
    let first = h.last_notify();
    h.now += 61;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    let again = h.last_notify();
    assert_ne!(again.job_id, first.job_id);
    assert_eq!(again.ntime, NTIME + 61);
    assert!(!again.clean);
}

/// The SV1 jobs a miner may still submit on: the latest 64 sent.
#[test]
fn shares_on_the_latest_sv1_jobs_are_taken_and_older_ones_are_unknown() {
    let (mut h, en1) = Harness::ready("rig");
    let find = |h: &Harness, job: &Job| {
        search(
            job,
            &en1,
            4,
            h.difficulty(),
            None,
            next_run(),
            |hash, target| hash <= target,
        )
    };
    let first = h.last_notify();
    let mut second = None;
    // 64 keepalive jobs after the first.
    for _ in 0..64 {
        h.now += 61;
        let outs = h.session.on_tick(h.now);
        h.apply(outs);
        second.get_or_insert_with(|| h.last_notify());
    }
    let second = second.unwrap();
    let forgotten = find(&h, &first);
    h.submit(50, &forgotten);
    assert_eq!(h.refused(50, "job not found")["error"][0], 21);
    let kept = find(&h, &second);
    h.submit(51, &kept);
    assert_eq!(h.forwarded().ntime, second.ntime);
}

#[test]
fn vardiff_asks_the_pool_for_a_lower_rate_in_bounded_steps_when_shares_come_too_slowly() {
    let (mut h, en1) = Harness::ready("rig");
    let mut rates = Vec::new();
    let mut first_at = None;
    // 40 shares of 16 expected hashes a minute, two every three seconds:
    // ~11 h/s, far under the nominal 1000 h/s.
    for minute in 0..10u64 {
        for second in 0..60 {
            h.now += 1;
            if second % 3 != 2 {
                let share = h.share(&en1, true);
                h.submit(1000 * minute + second, &share);
                h.forwarded();
            }
            let outs = h.session.on_tick(h.now);
            h.apply(outs);
            while let Some(m) = h.upstream.pop() {
                match m {
                    MiningOwned::UpdateChannel(u) => {
                        assert_eq!(u.channel_id, CHANNEL);
                        first_at.get_or_insert(minute * 60 + second);
                        rates.push(u.nominal_hash_rate);
                    }
                    other => panic!("expected UpdateChannel, got {other:?}"),
                }
            }
        }
    }
    assert!(
        first_at.is_some_and(|t| t <= 180),
        "first UpdateChannel at {first_at:?} s"
    );
    // Shares credit the work of the job they were mined on (16 hashes each):
    // the estimate goes down towards ~11 h/s, by at most x4 a step, never under it.
    let measured = 40.0 * 16.0 / 60.0;
    let mut previous = 1000.0f32;
    for &rate in &rates {
        assert!(
            rate < previous && rate >= previous / 4.0 * 0.999 && rate >= measured / 2.0,
            "{rates:?}"
        );
        previous = rate;
    }
    assert!(previous < 250.0, "{rates:?}");
}

#[test]
fn a_new_target_reaches_the_miner_with_the_next_job_as_clean_work() {
    let (mut h, _) = Harness::ready("rig");
    let before = h.difficulty();
    let first = h.last_notify();
    // What the pool answers to UpdateChannel: SetTarget, then a job at it.
    let mut harder = easy_target_le();
    harder[31] = 0x00;
    h.pool_sends(MiningOwned::SetTarget(SetTargetOwned {
        channel_id: CHANNEL,
        maximum_target: U256Owned::from(harder),
    }));
    let (p, s) = coinbase_parts(POOL_PREFIX.len() + ROLLABLE as usize);
    h.pool_sends(MiningOwned::NewExtendedMiningJob(
        NewExtendedMiningJobOwned {
            channel_id: CHANNEL,
            job_id: 2,
            min_ntime: Sv2OptionOwned::new(Some(NTIME)),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(vec![]).unwrap(),
            coinbase_tx_prefix: B064KOwned::new(p).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(s).unwrap(),
        },
    ));
    assert!(
        h.difficulty() > before * 10.0,
        "{} -> {}",
        before,
        h.difficulty()
    );
    let job = h.last_notify();
    assert_ne!(job.job_id, first.job_id);
    assert!(job.clean, "a new difficulty comes with clean work");
}

/// The hash rate a difficulty means at 6 shares a minute: d * 2^32 hashes
/// every 10 s.
fn hashrate_of(difficulty: f64) -> f64 {
    difficulty * 65536.0 / 65535.0 * 2f64.powi(32) / 10.0
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 / b - 1.0).abs() < 1e-3
}

/// The hash rates of the UpdateChannels sent to the pool since last asked.
fn updates(h: &mut Harness) -> Vec<f32> {
    std::mem::take(&mut h.upstream)
        .into_iter()
        .map(|m| match m {
            MiningOwned::UpdateChannel(u) => u.nominal_hash_rate,
            other => panic!("expected an UpdateChannel, got {other:?}"),
        })
        .collect()
}

#[test]
fn a_suggested_difficulty_opens_the_channel_at_it_and_later_updates_it() {
    let mut h = Harness::new();
    h.subscribe();
    h.line(json!({"id": 5, "method": "mining.suggest_difficulty", "params": [16]}));
    assert_eq!(h.response(5)["result"], true);
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    match h.upstream.pop() {
        Some(MiningOwned::OpenExtendedMiningChannel(o)) => {
            assert!(
                close(o.nominal_hash_rate, hashrate_of(16.0)),
                "{}",
                o.nominal_hash_rate
            )
        }
        other => panic!("expected an open, got {other:?}"),
    }
    h.open_success(&POOL_PREFIX);
    // Once open, a new suggestion asks the pool to update the channel.
    h.line(json!({"id": 6, "method": "mining.suggest_difficulty", "params": ["2.5"]}));
    assert_eq!(h.response(6)["result"], true);
    match h.upstream.pop() {
        Some(MiningOwned::UpdateChannel(u)) => {
            assert_eq!(u.channel_id, CHANNEL);
            assert!(
                close(u.nominal_hash_rate, hashrate_of(2.5)),
                "{}",
                u.nominal_hash_rate
            );
        }
        other => panic!("expected an UpdateChannel, got {other:?}"),
    }
    // Nonsense is an error, and changes nothing.
    h.line(json!({"id": 7, "method": "mining.suggest_difficulty", "params": [-1]}));
    h.refused(7, "positive number");
    assert!(h.upstream.is_empty());
}

/// After its first share a miner may raise its difficulty, never lower it:
/// a suggestion lower than the channel's would undo vardiff, and a miner
/// repeating it would flood the pool with shares at its floor.
#[test]
fn after_shares_a_suggestion_only_raises_the_difficulty() {
    let (mut h, en1) = Harness::ready("rig");
    let share = h.share(&en1, true);
    h.submit(100, &share);
    h.forwarded();
    h.upstream.clear();
    let difficulty = h.difficulty();
    h.line(json!({"id": 5, "method": "mining.suggest_difficulty", "params": [difficulty / 4.0]}));
    assert_eq!(h.response(5)["result"], true);
    assert!(updates(&mut h).is_empty(), "a lower one is not taken");
    h.line(json!({"id": 6, "method": "mining.suggest_difficulty", "params": [difficulty * 4.0]}));
    assert_eq!(h.response(6)["result"], true);
    let sent = updates(&mut h);
    assert!(
        matches!(sent[..], [u] if close(u, hashrate_of(difficulty * 4.0))),
        "{sent:?}"
    );
}

/// Each UpdateChannel costs the pool a new job: a miner repeating
/// mining.suggest_difficulty sends one per SUGGESTION_INTERVAL_SECS at
/// most, and the channel ends at the difficulty it suggested last.
#[test]
fn suggested_difficulties_reach_the_pool_once_per_interval_and_the_last_one_stays() {
    let mut h = Harness::with(SessionConfig {
        vardiff_secs: 0,
        ..config()
    });
    h.subscribe();
    h.line(json!({"id": 2, "method": "mining.authorize", "params": ["rig", "x"]}));
    h.take_open();
    h.open_success(&POOL_PREFIX);
    h.upstream.clear();
    for (id, difficulty) in [(10, 4), (11, 8), (12, 16), (13, 32)] {
        h.line(json!({"id": id, "method": "mining.suggest_difficulty", "params": [difficulty]}));
        assert_eq!(h.response(id)["result"], true);
    }
    let sent = updates(&mut h);
    assert!(
        matches!(sent[..], [u] if close(u, hashrate_of(4.0))),
        "{sent:?}"
    );

    h.now += SUGGESTION_INTERVAL_SECS - 1;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    assert!(updates(&mut h).is_empty(), "within the interval");
    h.now += 1;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    let sent = updates(&mut h);
    assert!(
        matches!(sent[..], [u] if close(u, hashrate_of(32.0))),
        "{sent:?}"
    );
    h.now += SUGGESTION_INTERVAL_SECS;
    let outs = h.session.on_tick(h.now);
    h.apply(outs);
    assert!(updates(&mut h).is_empty(), "nothing left to send");
    // A clock stepped back holds nothing back.
    h.now -= 60;
    h.line(json!({"id": 14, "method": "mining.suggest_difficulty", "params": [64]}));
    assert_eq!(h.response(14)["result"], true);
    let sent = updates(&mut h);
    assert!(
        matches!(sent[..], [u] if close(u, hashrate_of(64.0))),
        "{sent:?}"
    );
}

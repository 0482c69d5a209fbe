use super::*;

fn record(id: &str, amount: u64, state: QuoteState) -> QuoteRecord {
    QuoteRecord {
        quote_id: id.into(),
        share_hash: format!("{id}-hash"),
        amount,
        locking_key: "02aa".into(),
        keyset_id: "00ab".into(),
        channel_id: 1,
        sequence_number: 7,
        state,
        created_at: 1,
        last_error: None,
    }
}

fn pending_ids(s: &QuoteStore) -> Vec<String> {
    s.pending("02aa", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.quote_id)
        .collect()
}

#[test]
fn a_replayed_notification_does_not_duplicate_or_reset_a_record() {
    let s = QuoteStore::open_in_memory().unwrap();
    assert!(s.insert(&record("q1", 5, QuoteState::Pending)).unwrap());
    s.mark_minted(&["q1".into()]).unwrap();
    assert!(!s.insert(&record("q1", 5, QuoteState::Pending)).unwrap());
    assert_eq!(s.get("q1").unwrap().unwrap().state, QuoteState::Minted);
    assert!(s.pending("02aa", 10).unwrap().is_empty());
}

#[test]
fn a_notification_completes_a_record_found_at_the_mint_first() {
    let s = QuoteStore::open_in_memory().unwrap();
    let found = QuoteRecord {
        share_hash: String::new(),
        keyset_id: String::new(),
        ..record("q1", 5, QuoteState::Pending)
    };
    assert!(s.insert(&found).unwrap());
    s.mark_minted(&["q1".into()]).unwrap();
    assert!(s.insert(&record("q1", 5, QuoteState::Pending)).unwrap());
    let r = s.get("q1").unwrap().unwrap();
    assert_eq!(
        (r.state, r.share_hash),
        (QuoteState::Minted, "q1-hash".to_string())
    );
    assert!(
        !s.insert(&record("q1", 5, QuoteState::Pending)).unwrap(),
        "once"
    );
}

#[test]
fn a_look_up_keeps_where_it_stands_per_mint_and_key_with_what_it_found() {
    let s = QuoteStore::open_in_memory().unwrap();
    let (mint, key) = ("http://mint", "02aa");
    assert_eq!(s.lookup_cursor(mint, key).unwrap(), None);
    let at = Cursor {
        key_index: 0,
        position: 4_096,
    };
    s.record_looked_up(mint, key, &[record("q1", 5, QuoteState::Pending)], Some(at))
        .unwrap();
    assert_eq!(s.lookup_cursor(mint, key).unwrap(), Some(at));
    assert_eq!(pending_ids(&s), ["q1"]);
    assert_eq!(s.lookup_cursor("http://other-mint", key).unwrap(), None);
    assert_eq!(s.lookup_cursor(mint, "03bb").unwrap(), None);

    let further = Cursor {
        position: 8_192,
        ..at
    };
    s.record_looked_up(mint, key, &[], Some(further)).unwrap();
    assert_eq!(s.lookup_cursor(mint, key).unwrap(), Some(further));
    s.record_looked_up(mint, key, &[], None).unwrap();
    assert_eq!(s.lookup_cursor(mint, key).unwrap(), None);
}

#[test]
fn known_tells_which_quotes_are_recorded_in_any_number() {
    let s = QuoteStore::open_in_memory().unwrap();
    let ids: Vec<String> = (0..1_200).map(|i| format!("q{i}")).collect();
    let recorded: Vec<QuoteRecord> = ids
        .iter()
        .step_by(3)
        .map(|id| record(id, 1, QuoteState::Pending))
        .collect();
    s.record(&recorded, &[]).unwrap();
    let asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    let known = s.known(&asked).unwrap();
    assert_eq!(known.len(), 400);
    assert!(known.contains("q0") && known.contains("q1197") && !known.contains("q1"));
    assert!(s.known(&[]).unwrap().is_empty());
}

#[test]
fn pruning_deletes_old_records_of_quotes_done_with_and_never_a_pending_one() {
    let s = QuoteStore::open_in_memory().unwrap();
    let at = |id: &str, state, created_at| QuoteRecord {
        created_at,
        ..record(id, 1, state)
    };
    let failure = |hash: &str, created_at| FailureRecord {
        share_hash: hash.into(),
        channel_id: 1,
        sequence_number: 1,
        error_code: "stale-share".into(),
        error_message: String::new(),
        created_at,
    };
    let mut quotes = vec![
        at("old-pending", QuoteState::Pending, 10),
        at("old-foreign", QuoteState::Foreign, 10),
        at("new-minted", QuoteState::Minted, 100),
    ];
    quotes.extend((0..5).map(|i| at(&format!("old-minted-{i}"), QuoteState::Minted, 10)));
    s.record(&quotes, &[failure("old", 10), failure("new", 100)])
        .unwrap();

    assert_eq!(s.prune(50, 4).unwrap(), (4, 1), "at most the limit");
    assert_eq!(s.prune(50, 4).unwrap(), (2, 0));
    assert_eq!(s.prune(50, 4).unwrap(), (0, 0));
    let left: Vec<String> = s.all().unwrap().into_iter().map(|r| r.quote_id).collect();
    assert_eq!(left, ["old-pending", "new-minted"]);
    let failures = s.newest_failures(10).unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].share_hash, "new");
}

#[test]
fn pruning_all_goes_on_a_chunk_at_a_time_until_told_to_stop() {
    let s = QuoteStore::open_in_memory().unwrap();
    let old = 2 * PRUNE_CHUNK + 5;
    let quotes: Vec<QuoteRecord> = (0..old)
        .map(|i| QuoteRecord {
            created_at: 10,
            ..record(&format!("m{i}"), 1, QuoteState::Minted)
        })
        .chain([record("pending", 1, QuoteState::Pending)])
        .collect();
    s.record(&quotes, &[]).unwrap();

    assert_eq!(s.prune_all(50, || true).unwrap(), (0, 0), "stopped at once");
    let chunks = std::cell::Cell::new(0);
    let stop_after_one = || chunks.replace(chunks.get() + 1) == 1;
    assert_eq!(s.prune_all(50, stop_after_one).unwrap(), (PRUNE_CHUNK, 0));
    assert_eq!(s.prune_all(50, || false).unwrap(), (old - PRUNE_CHUNK, 0));
    let t = s.totals().unwrap();
    assert_eq!((t.minted.0, t.pending.0), (0, 1));
}

#[test]
fn the_newest_records_come_oldest_first() {
    let s = QuoteStore::open_in_memory().unwrap();
    let quotes: Vec<QuoteRecord> = [3, 1, 2, 5, 4]
        .into_iter()
        .map(|t| QuoteRecord {
            created_at: t,
            ..record(&format!("q{t}"), 1, QuoteState::Minted)
        })
        .collect();
    s.record(&quotes, &[]).unwrap();
    let ids = |records: Vec<QuoteRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.quote_id).collect()
    };
    assert_eq!(ids(s.newest(3).unwrap()), ["q3", "q4", "q5"]);
    assert_eq!(s.newest(10).unwrap().len(), 5);
}

#[test]
fn a_batch_holds_its_quotes_until_closed_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    let recorded_at;
    {
        let s = QuoteStore::open(&path).unwrap();
        for (id, amount) in [("a", 3), ("b", 4), ("c", 5)] {
            s.insert(&record(id, amount, QuoteState::Pending)).unwrap();
        }
        let mut batches = [MintBatch {
            id: 0,
            keyset_id: "00ab".into(),
            counter_start: 17,
            quotes: vec![("c".into(), 5), ("a".into(), 3)],
            unanswered_since: 0,
        }];
        s.open_batches(&mut batches).unwrap();
        assert!(batches[0].id > 0);
        recorded_at = batches[0].unanswered_since;
        assert!(recorded_at > 0, "a recorded batch may reach the mint");
        s.unanswered(batches[0].id, recorded_at + 30).unwrap();
        assert_eq!(pending_ids(&s), ["b"], "a batch's quotes are not pending");
    }
    let s = QuoteStore::open(&path).unwrap();
    let open = s.batches().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].counter_start, open[0].quotes.clone()),
        (17, vec![("c".to_string(), 5), ("a".to_string(), 3)]),
        "in request order"
    );
    assert_eq!(
        open[0].unanswered_since,
        recorded_at + 30,
        "when its last request got no answer"
    );
    s.close_batches(&[open[0].id], &["c".into()]).unwrap();
    assert!(s.batches().unwrap().is_empty());
    assert_eq!(s.get("c").unwrap().unwrap().state, QuoteState::Minted);
    assert_eq!(pending_ids(&s), ["a", "b"], "released");
}

#[test]
fn records_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    {
        let s = QuoteStore::open(&path).unwrap();
        s.insert(&record("a", 3, QuoteState::Pending)).unwrap();
        s.insert(&record("b", 4, QuoteState::Foreign)).unwrap();
        s.insert(&record("c", 5, QuoteState::Pending)).unwrap();
        s.mark_minted(&["c".into()]).unwrap();
        let failure = FailureRecord {
            share_hash: "h".into(),
            channel_id: 1,
            sequence_number: 2,
            error_code: "mint-timeout".into(),
            error_message: "".into(),
            created_at: 0,
        };
        let new = s
            .record(
                &[
                    record("d", 6, QuoteState::Pending),
                    record("a", 9, QuoteState::Pending),
                ],
                &[failure],
            )
            .unwrap();
        assert_eq!(
            new,
            vec![true, false],
            "a replay leaves the record as it was"
        );
        s.mark_minted(&["d".into()]).unwrap();
    }
    let s = QuoteStore::open(&path).unwrap();
    assert_eq!(pending_ids(&s), ["a"]);
    assert_eq!(
        s.totals().unwrap(),
        Totals {
            pending: (1, 3),
            minted: (2, 11),
            foreign: (1, 4),
            failures: 1
        }
    );
    s.set_error("a", "mint unreachable").unwrap();
    assert_eq!(
        s.get("a").unwrap().unwrap().last_error.as_deref(),
        Some("mint unreachable")
    );
}

/// A quote the mint refused waits RETRY_REFUSED_SECS, then comes after
/// every quote never refused, older ones included.
#[test]
fn a_refused_quote_waits_then_comes_after_the_others() {
    let s = QuoteStore::open_in_memory().unwrap();
    for (id, created_at) in [("old", 1), ("refused", 2), ("new", 3)] {
        s.insert(&QuoteRecord {
            created_at,
            ..record(id, 1, QuoteState::Pending)
        })
        .unwrap();
    }
    s.set_error("old", "mint unreachable").unwrap();
    s.set_refused("refused", "not paid").unwrap();
    assert_eq!(pending_ids(&s), ["old", "new"]);
    assert_eq!(s.pending("02aa", 1).unwrap()[0].quote_id, "old");

    let due = roles_common::unix_secs() - RETRY_REFUSED_SECS;
    s.conn()
        .execute(
            "UPDATE quotes SET failed_at = ?1 WHERE quote_id = 'refused'",
            [due as i64],
        )
        .unwrap();
    assert_eq!(pending_ids(&s), ["old", "new", "refused"]);
    assert_eq!(s.pending("02aa", 2).unwrap().len(), 2);
    assert!(
        s.pending("02bb", 2).unwrap().is_empty(),
        "another key's wait apart"
    );

    // Each refusal doubles the wait, up to the most.
    let refused_ago = |secs: u64| {
        let at = roles_common::unix_secs() - secs;
        s.conn()
            .execute(
                "UPDATE quotes SET failed_at = ?1 WHERE quote_id = 'refused'",
                [at as i64],
            )
            .unwrap();
    };
    s.set_refused("refused", "not paid").unwrap();
    refused_ago(RETRY_REFUSED_SECS);
    assert_eq!(
        pending_ids(&s),
        ["old", "new"],
        "twice: waits twice as long"
    );
    refused_ago(2 * RETRY_REFUSED_SECS);
    assert_eq!(pending_ids(&s), ["old", "new", "refused"]);
    for _ in 0..20 {
        s.set_refused("refused", "not paid").unwrap();
    }
    refused_ago(RETRY_REFUSED_MAX_SECS - 1);
    assert_eq!(pending_ids(&s), ["old", "new"]);
    refused_ago(RETRY_REFUSED_MAX_SECS);
    assert_eq!(pending_ids(&s), ["old", "new", "refused"]);
}

/// A file written before refused quotes were held back opens, and its
/// quotes can be refused and held back.
#[test]
fn a_file_of_an_earlier_version_gains_the_refusal_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotes.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&SCHEMA.replace(",\n    failed_at       INTEGER", ""))
            .unwrap();
        assert!(conn.prepare("SELECT failed_at FROM quotes").is_err());
    }
    let s = QuoteStore::open(&path).unwrap();
    s.insert(&record("a", 1, QuoteState::Pending)).unwrap();
    s.set_refused("a", "not paid").unwrap();
    assert!(pending_ids(&s).is_empty());
    drop(s);
    assert!(pending_ids(&QuoteStore::open(&path).unwrap()).is_empty());
}

#[test]
fn a_quote_notified_on_a_channel_of_no_known_key_is_the_wallets_once_a_look_up_finds_it() {
    let s = QuoteStore::open_in_memory().unwrap();
    let keyless = QuoteRecord {
        locking_key: UNKNOWN_KEY.into(),
        ..record("q1", 5, QuoteState::Foreign)
    };
    assert!(s.insert(&keyless).unwrap());
    assert!(s.known(&["q1"]).unwrap().is_empty(), "unknown to a look-up");
    assert!(pending_ids(&s).is_empty());

    let found = QuoteRecord {
        share_hash: String::new(),
        keyset_id: String::new(),
        last_error: Some("found at the mint".into()),
        ..record("q1", 5, QuoteState::Pending)
    };
    s.record_looked_up("http://mint", "02aa", &[found], None)
        .unwrap();
    assert_eq!(pending_ids(&s), ["q1"]);
    let r = s.get("q1").unwrap().unwrap();
    assert_eq!(
        r.share_hash, "q1-hash",
        "the notification's record, claimed"
    );
    assert_eq!(s.known(&["q1"]).unwrap().len(), 1);
    // A quote of another key keeps its record as it was.
    let other = QuoteRecord {
        locking_key: "02bb".into(),
        ..record("q2", 5, QuoteState::Foreign)
    };
    s.insert(&other).unwrap();
    let found = QuoteRecord {
        share_hash: String::new(),
        ..record("q2", 5, QuoteState::Pending)
    };
    s.record_looked_up("http://mint", "02aa", &[found], None)
        .unwrap();
    assert_eq!(s.get("q2").unwrap().unwrap().state, QuoteState::Foreign);
}

#[test]
fn one_holder_at_a_time_mints_from_a_file_and_none_is_kept_out_of_one_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotes.sqlite");
    let (first, second) = (
        QuoteStore::open(&path).unwrap(),
        QuoteStore::open(&path).unwrap(),
    );
    let held = first.take_minter().unwrap();
    let refused = second.take_minter().unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "{} is being minted from by another process (pid {}): a translator on the \
             same data_dir or a `wallet claim`; one at a time",
            path.display(),
            std::process::id()
        )
    );
    // Reading and recording go on beside the minter.
    second.insert(&record("a", 1, QuoteState::Pending)).unwrap();
    drop(held);
    let _taken = second.take_minter().unwrap();

    let memory = QuoteStore::open_in_memory().unwrap();
    let _one = memory.take_minter().unwrap();
    let _two = memory.take_minter().unwrap();
}

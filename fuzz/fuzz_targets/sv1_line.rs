#![no_main]
//! Hostile lines into both SV1 JSON-RPC parsers: `server::parse_request`
//! (what a miner sends the translator) and `client::Session::handle_line`
//! (what a pool or proxy sends a miner). Each returns Ok or Err, never
//! panics. What parses is rebuilt with the other side's builders and must
//! parse back to the same value, and every error answer the translator would
//! send stays one JSON line.

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sv1::client::{self, Event, Session, Share};
use sv1::jsonrpc;
use sv1::server::{self, Notify, Request};

fuzz_target!(|data: &[u8]| {
    // A session with answers pending for ids 1 to 4 (configure, subscribe,
    // authorize, submit), so responses reach the matching code and not
    // only notifications.
    let mut session = Session::new();
    session.configure_version_rolling();
    session.subscribe("fuzz");
    session.authorize("fuzz", "x");
    session.submit(
        "fuzz",
        &Share {
            job_id: "1".into(),
            extranonce2: vec![0; 4],
            ntime: 0,
            nonce: 0,
            version_bits: None,
        },
    );
    // Lines as a reader splits them; invalid UTF-8 as a lossy reader sees it.
    for line in String::from_utf8_lossy(data).split('\n') {
        server_side(line);
        client_side(&mut session, line);
    }
});

/// A line a peer could read: ends in one newline, none inside, valid JSON.
fn assert_one_json_line(s: &str) {
    let body = s.strip_suffix('\n').expect("ends with a newline");
    assert!(!body.contains('\n'), "{s:?}");
    serde_json::from_str::<Value>(body).expect("a JSON line");
}

fn reparse(line: &str) -> Result<Request, server::ParseError> {
    assert_one_json_line(line);
    server::parse_request(line.trim_end_matches('\n'))
}

fn server_side(line: &str) {
    let request = match server::parse_request(line) {
        Ok(r) => r,
        Err(e) => {
            if let Some(id) = e.id {
                assert_one_json_line(&server::error(&id, e.code, &e.message));
            }
            return;
        }
    };
    match request {
        Request::Submit { id, submit } => {
            assert_one_json_line(&server::ok(&id, json!(true)));
            // The miner's own submit line for these fields. Only the fields
            // are compared: a float id need not survive a print and re-parse.
            let line = jsonrpc::request(id, "mining.submit", client::submit_params("w", &submit));
            match reparse(&line) {
                Ok(Request::Submit { submit: again, .. }) => assert_eq!(again, submit),
                other => panic!("{line:?} -> {other:?}"),
            }
        }
        Request::Authorize { id, user } => {
            assert_one_json_line(&server::ok(&id, json!(true)));
            let line = Session::new().authorize(&user, "x");
            match reparse(&line) {
                Ok(Request::Authorize { user: again, .. }) => assert_eq!(again, user),
                other => panic!("{line:?} -> {other:?}"),
            }
        }
        Request::Configure {
            version_mask: Some(mask),
            ..
        } => {
            let line = jsonrpc::request(
                json!(1),
                "mining.configure",
                client::version_rolling_params(mask),
            );
            assert_eq!(
                reparse(&line),
                Ok(Request::Configure {
                    id: json!(1),
                    extensions: vec!["version-rolling".into()],
                    version_mask: Some(mask),
                })
            );
            // The mask the translator sends back reads as that mask.
            assert_eq!(
                Session::new().handle_line(&server::set_version_mask(mask)),
                Ok(Event::VersionMask(Some(mask)))
            );
        }
        Request::SuggestDifficulty { difficulty, .. } => {
            // The difficulty the translator would set reads back as (nearly)
            // that difficulty. serde_json's default float parsing may be off
            // in the last bits, and subnormals may not survive at all.
            let event = Session::new().handle_line(&server::set_difficulty(difficulty));
            if difficulty.is_normal() {
                match event {
                    Ok(Event::Difficulty(d)) => {
                        assert!(
                            (d - difficulty).abs() <= difficulty * 1e-15,
                            "{difficulty} -> {d}"
                        )
                    }
                    other => panic!("{difficulty} -> {other:?}"),
                }
            }
        }
        Request::Subscribe { id }
        | Request::ExtranonceSubscribe { id }
        | Request::Configure { id, .. }
        | Request::Unknown { id, .. } => {
            assert_one_json_line(&server::ok(&id, Value::Null));
        }
        Request::Response => {}
    }
}

fn client_side(session: &mut Session, line: &str) {
    match session.handle_line(line) {
        Ok(Event::NewJob(job)) => {
            // The translator's mining.notify of this job reads back as it.
            let mut prev_hash = job.prevhash;
            for word in prev_hash.chunks_mut(4) {
                word.reverse();
            }
            let notify = Notify {
                job_id: job.job_id.clone(),
                prev_hash,
                coinb1: job.coinb1.clone(),
                coinb2: job.coinb2.clone(),
                merkle_branch: job.merkle_branch.clone(),
                version: job.version,
                nbits: job.nbits,
                ntime: job.ntime,
                clean_jobs: job.clean,
            };
            let line = notify.to_line();
            assert_one_json_line(&line);
            let _ = job.header(&[1, 2, 3, 4], &[0; 4], job.ntime, 0, job.version);
            assert_eq!(Session::new().handle_line(&line), Ok(Event::NewJob(job)));
        }
        Ok(Event::Difficulty(d)) => {
            let _ = client::target_from_difficulty(d);
        }
        Ok(Event::Subscribed {
            extranonce1,
            extranonce2_size,
        })
        | Ok(Event::Extranonce {
            extranonce1,
            extranonce2_size,
        }) => {
            assert!((1..=32).contains(&extranonce2_size));
            // The translator's mining.set_extranonce of these reads back as them.
            let line = server::set_extranonce(&extranonce1, extranonce2_size);
            assert_one_json_line(&line);
            assert_eq!(
                Session::new().handle_line(&line),
                Ok(Event::Extranonce {
                    extranonce1,
                    extranonce2_size
                })
            );
        }
        _ => {}
    }
}

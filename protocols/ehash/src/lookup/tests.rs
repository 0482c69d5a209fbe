use super::*;
use proptest::prelude::*;

const NOW: u64 = 1_767_225_600;

fn secret(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).unwrap()
}

fn public(secret: &SecretKey) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::signing_only(), secret)
}

fn mint() -> PublicKey {
    public(&secret(0x4d))
}

fn fields() -> LookupFields<'static> {
    LookupFields {
        method: "ehash",
        timestamp: NOW,
        nonce: [7; NONCE_LEN],
        limit: Some(20),
        cursor: None,
    }
}

/// [`fields`] asking to resume at `key_index:position`.
fn fields_at(key_index: u32, position: u64) -> LookupFields<'static> {
    LookupFields {
        cursor: Some(Cursor {
            key_index,
            position,
        }),
        ..fields()
    }
}

fn signed(secrets: &[SecretKey]) -> LookupRequest {
    sign_request(secrets, &mint(), &fields())
}

fn verify(request: &LookupRequest) -> Result<VerifiedLookup, LookupError> {
    verify_request(request, &mint(), "ehash", NOW)
}

/// A change made to a signed request.
type Tamper = fn(&mut LookupRequest);

fn code(request: &LookupRequest) -> &'static str {
    verify(request).unwrap_err().code()
}

#[test]
fn a_signed_request_verifies_for_each_of_its_keys() {
    let secrets = [secret(1), secret(2), secret(3)];
    let verified = verify(&signed(&secrets)).unwrap();
    let keys: Vec<LockingKey> = secrets.iter().map(|s| public(s).into()).collect();
    assert_eq!(verified.keys, keys);
    assert_eq!(verified.limit, 20);
    assert_eq!(verified.cursor, Cursor::default());
    assert_eq!(verified.timestamp, NOW);
    assert_eq!(verified.digests.len(), 3);
    assert_eq!(
        verified.digests[1],
        lookup_digest(&mint(), &keys[1], &fields())
    );
}

#[test]
fn the_limit_defaults_to_and_is_capped_at_the_maximum() {
    let mut f = fields();
    f.limit = None;
    let v = verify(&sign_request(&[secret(1)], &mint(), &f)).unwrap();
    assert_eq!(v.limit, MAX_LIMIT);
    f.limit = Some(MAX_LIMIT + 1);
    let v = verify(&sign_request(&[secret(1)], &mint(), &f)).unwrap();
    assert_eq!(v.limit, MAX_LIMIT);
    f.limit = Some(0);
    let r = sign_request(&[secret(1)], &mint(), &f);
    assert_eq!(code(&r), "malformed-request");
}

#[test]
fn a_cursor_is_signed_and_served() {
    let f = fields_at(1, 42);
    let request = sign_request(&[secret(1), secret(2)], &mint(), &f);
    assert_eq!(request.cursor.as_deref(), Some("1:42"));
    assert_eq!(verify(&request).unwrap().cursor, f.cursor.unwrap());
}

#[test]
fn another_keys_signature_is_refused() {
    let mut request = signed(&[secret(1)]);
    request.pubkey_signatures = signed(&[secret(2)]).pubkey_signatures;
    match verify(&request) {
        Err(LookupError::InvalidSignature {
            index: 0, pubkey, ..
        }) => {
            assert_eq!(pubkey, request.pubkeys[0])
        }
        other => panic!("{other:?}"),
    }
    // Signatures swapped between two keys.
    let mut request = signed(&[secret(1), secret(2)]);
    request.pubkey_signatures.swap(0, 1);
    assert_eq!(code(&request), "invalid-signature");
}

#[test]
fn every_signed_field_is_bound() {
    let base = signed(&[secret(1)]);
    let tampered: Vec<Tamper> = vec![
        |r| r.timestamp += 1,
        |r| r.nonce = "08".repeat(NONCE_LEN),
        |r| r.limit = Some(21),
        |r| r.limit = None,
        |r| r.cursor = Some("0:0".into()),
        |r| r.pubkeys[0] = LockingKey::from(public(&secret(9))).to_string(),
    ];
    for (i, tamper) in tampered.into_iter().enumerate() {
        let mut request = base.clone();
        tamper(&mut request);
        assert_eq!(code(&request), "invalid-signature", "tampering {i}");
    }
}

#[test]
fn a_signature_for_another_mint_is_refused() {
    let request = signed(&[secret(1)]);
    let other_mint = public(&secret(0x4e));
    let err = verify_request(&request, &other_mint, "ehash", NOW).unwrap_err();
    assert_eq!(err.code(), "invalid-signature");
    assert!(err
        .to_string()
        .contains(&hex::encode(other_mint.serialize())));
}

#[test]
fn timestamps_outside_the_window_are_refused_either_way() {
    let request = signed(&[secret(1)]);
    let at = |now| verify_request(&request, &mint(), "ehash", now);
    assert!(at(NOW + TIMESTAMP_WINDOW_SECS).is_ok());
    assert!(at(NOW - TIMESTAMP_WINDOW_SECS).is_ok());
    for now in [
        NOW + TIMESTAMP_WINDOW_SECS + 1,
        NOW - TIMESTAMP_WINDOW_SECS - 1,
        0,
        u64::MAX,
    ] {
        let err = at(now).unwrap_err();
        assert_eq!(err.code(), "stale-timestamp", "now {now}");
    }
    assert_eq!(
        at(NOW + 75).unwrap_err().to_string(),
        format!(
            "timestamp {NOW} is 75 s from the mint's clock ({}); at most 60 s allowed",
            NOW + 75
        )
    );
}

#[test]
fn only_the_ehash_method_is_served() {
    let request = signed(&[secret(1)]);
    let err = verify_request(&request, &mint(), "bolt11", NOW).unwrap_err();
    assert_eq!(err.code(), "unknown-method");
    assert!(check_method("ehash").is_ok());
    let long = "x".repeat(10_000);
    assert_eq!(check_method(&long).unwrap_err().to_string().len(), 123);
}

#[test]
fn malformed_fields_are_refused_with_a_reason() {
    let base = signed(&[secret(1)]);
    let cases: Vec<(Tamper, &str)> = vec![
        (|r| r.pubkeys.clear(), "pubkeys is empty"),
        (
            |r| r.pubkeys[0] = "zz".into(),
            "pubkeys[0]: locking key is not hex",
        ),
        (
            |r| r.pubkeys[0].truncate(64),
            "pubkeys[0]: locking key must be 66",
        ),
        (
            |r| r.pubkey_signatures.clear(),
            "0 pubkey_signatures for 1 pubkeys",
        ),
        (
            |r| r.pubkey_signatures[0].truncate(126),
            "expected 128 hex characters, got 126",
        ),
        (
            |r| r.pubkey_signatures[0] = "g".repeat(128),
            "pubkey_signatures[0]: not hex",
        ),
        (
            |r| r.nonce = "00".repeat(15),
            "nonce: expected 32 hex characters, got 30",
        ),
        (|r| r.nonce = "é".repeat(16), "nonce: not hex"),
    ];
    for (break_it, reason) in cases {
        let mut request = base.clone();
        break_it(&mut request);
        let err = verify(&request).unwrap_err();
        assert_eq!(err.code(), "malformed-request", "{err}");
        assert!(err.to_string().contains(reason), "{err} lacks {reason:?}");
    }
    // 64 bytes of anything parse as a signature, which then fails.
    let mut request = base.clone();
    request.pubkey_signatures[0] = "ff".repeat(64);
    assert_eq!(code(&request), "invalid-signature");
}

#[test]
fn too_many_and_repeated_keys_are_refused() {
    let secrets: Vec<SecretKey> = (1..=MAX_PUBKEYS as u8 + 1).map(secret).collect();
    let request = signed(&secrets);
    assert_eq!(
        verify(&request).unwrap_err(),
        LookupError::TooManyPubkeys(MAX_PUBKEYS + 1)
    );
    assert!(verify(&signed(&secrets[..MAX_PUBKEYS])).is_ok());
    let err = verify(&signed(&[secret(1), secret(1)])).unwrap_err();
    assert!(err.to_string().contains("repeats an earlier key"), "{err}");
}

#[test]
fn bad_cursors_are_refused() {
    for cursor in [
        "",
        "1",
        ":",
        "0:",
        ":0",
        "a:b",
        "-1:0",
        "+1:0",
        "0:+1",
        "1:2:3",
        " 0:0",
        "4294967296:0",
        "0:18446744073709551616",
        "1:0",
    ] {
        let mut request = signed(&[secret(1)]);
        request.cursor = Some(cursor.into());
        assert_eq!(code(&request), "bad-cursor", "cursor {cursor:?}");
    }
    let c: Cursor = "4294967295:18446744073709551615".parse().unwrap();
    assert_eq!((c.key_index, c.position), (u32::MAX, u64::MAX));
}

#[test]
fn the_wire_format_is_as_documented() {
    let f = fields_at(0, 100);
    let request = sign_request(&[secret(1)], &mint(), &f);
    let json = serde_json::to_value(&request).unwrap();
    let fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "cursor",
            "limit",
            "nonce",
            "pubkey_signatures",
            "pubkeys",
            "timestamp"
        ]
    );
    assert_eq!(json["cursor"], "0:100");
    // Limit and cursor may be left out.
    let minimal = serde_json::json!({
        "pubkeys": request.pubkeys, "pubkey_signatures": request.pubkey_signatures,
        "timestamp": NOW, "nonce": request.nonce,
    });
    let parsed: LookupRequest = serde_json::from_value(minimal).unwrap();
    assert_eq!((parsed.limit, parsed.cursor), (None, None));

    let response = LookupResponse {
        quotes: vec![QuoteEntry {
            quote: "q".into(),
            pubkey: request.pubkeys[0].clone(),
            amount: 64,
            state: QuoteState::Issued,
            created_time: NOW,
        }],
        next_cursor: None,
    };
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["quotes"][0]["state"], "ISSUED");
    assert_eq!(json["next_cursor"], serde_json::Value::Null);
    assert_eq!(lookup_path("ehash"), "/v1/mint/quote/ehash/pubkey");
    assert_eq!(
        serde_json::to_value(LookupError::Replayed.body()).unwrap()["error"],
        "replayed-request"
    );
}

#[test]
fn our_signatures_are_not_the_nuts_and_the_nuts_are_not_ours() {
    let key = LockingKey::from(public(&secret(1)));
    let mut engine = sha256::Hash::engine();
    engine.input(b"Cashu_MintQuoteLookup_v1");
    engine.input(&mint().serialize());
    engine.input(&key.to_bytes());
    let nut_digest = sha256::Hash::from_engine(engine).to_byte_array();
    assert_ne!(nut_digest, lookup_digest(&mint(), &key, &fields()));

    // A NUT signature pasted into our request does not verify.
    let secp = Secp256k1::new();
    let keypair = Keypair::from_secret_key(&secp, &secret(1));
    let nut_sig = secp.sign_schnorr_no_aux_rand(&Message::from_digest(nut_digest), &keypair);
    let mut request = signed(&[secret(1)]);
    request.pubkey_signatures[0] = hex::encode(nut_sig.serialize());
    assert_eq!(code(&request), "invalid-signature");
}

#[test]
fn a_served_request_is_refused_when_replayed_until_it_is_stale() {
    let mut cache = ReplayCache::new(10);
    let v = verify(&signed(&[secret(1), secret(2)])).unwrap();
    assert_eq!(cache.check_and_insert(&v.digests, NOW, NOW), Ok(()));
    assert_eq!(
        cache.check_and_insert(&v.digests, NOW, NOW + 1),
        Err(LookupError::Replayed)
    );
    // Part of a served request is a replay too.
    assert_eq!(
        cache.check_and_insert(&v.digests[1..], NOW, NOW + 1),
        Err(LookupError::Replayed)
    );
    // A fresh nonce is a new request.
    let mut f = fields();
    f.nonce = [8; NONCE_LEN];
    let fresh = verify(&sign_request(&[secret(1)], &mint(), &f)).unwrap();
    assert_eq!(cache.check_and_insert(&fresh.digests, NOW, NOW + 1), Ok(()));
    assert_eq!(cache.len(), 3);
    // Kept while the timestamp is accepted, gone after.
    assert_eq!(
        cache.check_and_insert(&v.digests, NOW, NOW + TIMESTAMP_WINDOW_SECS),
        Err(LookupError::Replayed)
    );
    assert_eq!(
        cache.check_and_insert(&[], NOW, NOW + TIMESTAMP_WINDOW_SECS + 1),
        Ok(())
    );
    assert!(cache.is_empty());
}

#[test]
fn a_full_replay_cache_refuses_and_records_nothing() {
    let mut cache = ReplayCache::new(2);
    assert_eq!(
        cache.check_and_insert(&[[1; 32], [2; 32]], NOW, NOW),
        Ok(())
    );
    assert_eq!(
        cache.check_and_insert(&[[3; 32]], NOW, NOW),
        Err(LookupError::Busy)
    );
    // A replay mixed with a new digest records nothing.
    let mut cache = ReplayCache::new(10);
    cache.check_and_insert(&[[1; 32]], NOW, NOW).unwrap();
    assert_eq!(
        cache.check_and_insert(&[[2; 32], [1; 32]], NOW, NOW),
        Err(LookupError::Replayed)
    );
    assert_eq!(cache.len(), 1);
    // Room again once the old entries are stale.
    let mut cache = ReplayCache::new(1);
    cache.check_and_insert(&[[1; 32]], NOW, NOW).unwrap();
    let later = NOW + TIMESTAMP_WINDOW_SECS + 1;
    assert_eq!(cache.check_and_insert(&[[2; 32]], later, later), Ok(()));
}

proptest! {
    #[test]
    fn verification_never_panics_on_hostile_fields(
        pubkeys in proptest::collection::vec(".{0,80}", 0..12),
        sigs in proptest::collection::vec(".{0,140}", 0..12),
        nonce in ".{0,40}",
        cursor in proptest::option::of(".{0,30}"),
        limit in proptest::option::of(any::<u32>()),
        timestamp in any::<u64>(),
        now in any::<u64>(),
        method in ".{0,20}",
    ) {
        let request = LookupRequest { pubkeys, pubkey_signatures: sigs, timestamp, nonce, limit, cursor };
        let _ = verify_request(&request, &mint(), &method, now);
    }

    #[test]
    fn json_decoding_never_panics(s in ".{0,300}") {
        let _ = serde_json::from_str::<LookupRequest>(&s);
        let _ = serde_json::from_str::<LookupResponse>(&s);
    }

    #[test]
    fn cursors_round_trip(key_index in any::<u32>(), position in any::<u64>()) {
        let c = Cursor { key_index, position };
        prop_assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
    }
}

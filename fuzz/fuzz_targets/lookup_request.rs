#![no_main]
//! Hostile bodies into the quote lookup (`ehash::lookup`): the mint parses a
//! `LookupRequest` from anyone over HTTP and verifies it; the wallet parses
//! the mint's `LookupResponse` or `LookupErrorBody` and the cursor in it.
//! Parsing and verification return, never panic; requests and cursors
//! survive a print and re-parse.

use std::sync::LazyLock;

use ehash::lookup::{
    check_method, verify_request, Cursor, LookupErrorBody, LookupRequest, LookupResponse,
};
use ehash::LockingKey;
use libfuzzer_sys::fuzz_target;
use stratum_core::bitcoin::secp256k1::PublicKey;

/// The mint's key the signatures must commit to: the secp256k1 generator,
/// which the seed corpus signs for.
static MINT_KEY: LazyLock<PublicKey> = LazyLock::new(|| {
    "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        .parse::<LockingKey>()
        .expect("G is a key")
        .public_key()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<LookupRequest>(data) {
        let printed = serde_json::to_string(&request).expect("a request prints");
        assert_eq!(
            serde_json::from_str::<LookupRequest>(&printed).expect("a printed request parses"),
            request
        );
        // At the request's own time every check up to the signatures passes
        // when the fields are well formed; far from it, the clock refuses.
        if let Ok(v) = verify_request(&request, &MINT_KEY, "ehash", request.timestamp) {
            assert_eq!(v.keys.len(), request.pubkeys.len());
            assert_eq!(v.digests.len(), v.keys.len());
            assert!((1..=ehash::lookup::MAX_LIMIT).contains(&v.limit));
            assert!((v.cursor.key_index as usize) < v.keys.len());
        }
        let _ = verify_request(&request, &MINT_KEY, "ehash", request.timestamp ^ (1 << 40));
    }
    if let Ok(response) = serde_json::from_slice::<LookupResponse>(data) {
        if let Some(next) = response.next_cursor {
            let _ = next.parse::<Cursor>();
        }
    }
    let _ = serde_json::from_slice::<LookupErrorBody>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        // The method is a path segment of the request URL.
        let _ = check_method(s);
        if let Ok(cursor) = s.parse::<Cursor>() {
            assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
        }
    }
});

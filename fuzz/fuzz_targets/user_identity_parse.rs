#![no_main]
//! Hostile strings and bytes into the locking-key parsers. What parses prints
//! back to something that parses to the same value.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = ehash::parse_user_identity(s) {
            // A parsed key prints back as 66 lowercase hex characters.
            let key = id.locking_key.to_string();
            assert_eq!(key.len(), 66);
            let printed = match &id.worker {
                Some(w) => format!("{key}.{w}"),
                None => key,
            };
            assert_eq!(ehash::parse_user_identity(&printed), Ok(id));
        }
    }
    if let Ok(key) = ehash::LockingKey::from_bytes(data) {
        assert_eq!(key.to_bytes()[..], data[..]);
    }
});

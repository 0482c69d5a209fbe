#![no_main]
//! Hostile strings and bytes into the locking-key parsers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = ehash::parse_user_identity(s) {
            // A parsed key prints back as 66 lowercase hex characters.
            assert_eq!(id.locking_key.to_string().len(), 66);
        }
    }
    let _ = ehash::LockingKey::from_bytes(data);
});

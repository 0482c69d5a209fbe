#![no_main]
//! Hostile bytes into the StatsMessage decoders: every message type, both
//! channel bits, and whole frames. Decoding must return, never panic, and
//! whatever decodes must encode back to a frame of the same length that
//! decodes to the same message.

use ehash::wire::testing::decode_every_type;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode_every_type::<stats_sv2::StatsMessage>(data);
    hashpool_fuzz::frame_round_trip::<stats_sv2::StatsMessage>(data);
});

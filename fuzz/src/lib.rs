//! Checks shared by the fuzz targets of the SV2 message sets.

use ehash::wire::MessageSet;
use stratum_core::framing_sv2::header::Header;

/// If `data` is one whole frame of `M`, it must re-encode to a frame with the
/// same header (so the same length) that decodes to the same message.
///
/// Byte equality of the payloads is not required: binary_sv2 reads a bool
/// from its lowest bit only, so 0x02 and 0x00 are the same `false`.
pub fn frame_round_trip<M: MessageSet>(data: &[u8]) -> Option<M> {
    let msg = M::decode_frame(&mut data.to_vec()).ok()?;
    let mut again = msg
        .clone()
        .to_frame_bytes()
        .expect("a decoded message encodes");
    assert_eq!(again[..Header::SIZE], data[..Header::SIZE], "{msg:?}");
    assert_eq!(again.len(), data.len(), "{msg:?}");
    assert_eq!(
        M::decode_frame(&mut again).expect("a re-encoded message decodes"),
        msg
    );
    Some(msg)
}

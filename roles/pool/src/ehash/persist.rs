//! What the ehash flow keeps on disk besides the outbox's framing: a share's
//! outbox payload.

use std::path::Path;

use tracing::warn;

use super::flow::QuoteShare;
use super::request::RequestFrame;

/// The outbox payload of a share: channel id, sequence number, request
/// frame, and whether its connection is to be notified (1) or not (0).
pub(super) fn encode_owed(share: &QuoteShare) -> Vec<u8> {
    let frame = share.request.as_bytes();
    let mut out = Vec::with_capacity(9 + frame.len());
    out.extend_from_slice(&share.channel_id.to_le_bytes());
    out.extend_from_slice(&share.sequence_number.to_le_bytes());
    out.extend_from_slice(frame);
    out.push(u8::from(share.notify));
    out
}

/// `None` for a payload that is not a share's, or whose locking key is not
/// a key (the mint would refuse its quote). A payload without the last
/// byte (written before it existed) is notified.
pub(super) fn decode_owed(payload: &[u8]) -> Option<QuoteShare> {
    let channel_id = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let sequence_number = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    let rest = payload.get(8..)?;
    // The frame's header: extension type (2), message type (1), length (3).
    let length = rest.get(3..6)?;
    let frame_len = 6 + u32::from_le_bytes([length[0], length[1], length[2], 0]) as usize;
    let (frame, notify) = match rest.len().checked_sub(frame_len)? {
        0 => (rest, true),
        1 => (&rest[..frame_len], rest[frame_len] != 0),
        _ => return None,
    };
    let (request, locking_key) = RequestFrame::decode(frame)?;
    Some(QuoteShare {
        conn: None,
        channel_id,
        sequence_number,
        request,
        locking_key,
        notify,
    })
}

/// Removes the `undelivered.json` earlier versions kept notifications in:
/// those quotes exist at the mint, where their keys' owners list them.
pub(super) fn retire_undelivered_json(state_dir: &Path) {
    let path = state_dir.join("undelivered.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let kept = serde_json::from_str::<Vec<serde_json::Value>>(&text).map_or(0, |v| v.len());
    warn!(
        "{}: {kept} notifications of an earlier version are dropped; their quotes \
         stay at the mint, listed by locking key for their owners",
        path.display()
    );
    if let Err(e) = std::fs::remove_file(&path) {
        warn!("cannot remove {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::LockingKey;
    use mint_quote_sv2::{CoinbaseProof, MintQuoteRequestOwned};

    fn owed_share(key: LockingKey) -> QuoteShare {
        QuoteShare {
            conn: Some(3),
            channel_id: 7,
            sequence_number: 9,
            request: RequestFrame::new(
                MintQuoteRequestOwned::new(
                    &[5u8; 80],
                    [0xff; 32],
                    12,
                    key,
                    &CoinbaseProof {
                        coinbase: vec![1, 2, 3],
                        merkle_path: vec![[4; 32], [5; 32]],
                    },
                )
                .unwrap(),
            )
            .unwrap(),
            locking_key: key,
            notify: false,
        }
    }

    fn key() -> LockingKey {
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap()
    }

    #[test]
    fn owed_payload_round_trips() {
        let share = owed_share(key());
        let decoded = decode_owed(&encode_owed(&share)).unwrap();
        assert_eq!(
            decoded,
            QuoteShare {
                conn: None,
                ..share.clone()
            }
        );
        assert_eq!(decode_owed(&[1, 2, 3]), None);
        let mut longer = encode_owed(&share);
        longer.push(1);
        assert_eq!(decode_owed(&longer), None);
    }

    #[test]
    fn an_owed_payload_written_before_the_notify_byte_is_notified() {
        let mut payload = encode_owed(&owed_share(key()));
        payload.pop();
        assert!(decode_owed(&payload).unwrap().notify);
    }

    #[test]
    fn an_owed_payload_whose_locking_key_is_no_key_is_refused() {
        let mut payload = encode_owed(&owed_share(key()));
        let key_bytes = key().to_bytes();
        let at = payload
            .windows(key_bytes.len())
            .position(|window| window == key_bytes.as_slice())
            .expect("the payload holds the key");
        // 0x05 prefixes no compressed point.
        payload[at] = 0x05;
        assert_eq!(decode_owed(&payload), None);
    }
}

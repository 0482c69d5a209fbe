//! What the ehash flow keeps on disk besides the outbox's framing: a share's
//! outbox payload, and the notifications kept for a locking key whose
//! channel is gone (`<state_dir>/undelivered.json`).

use std::path::Path;

use ehash::wire::MessageSet;
use ehash::LockingKey;
use ehash_ext_sv2::EhashMessage;
use mint_quote_sv2::MintQuoteMessage;
use serde::{Deserialize, Serialize};
use tracing::error;

use super::flow::{QuoteFlow, QuoteShare, UndeliveredNotification};

/// The outbox payload of a share: channel id, sequence number, request frame.
pub(super) fn encode_owed(share: &QuoteShare) -> Vec<u8> {
    let mut out = share.channel_id.to_le_bytes().to_vec();
    out.extend_from_slice(&share.sequence_number.to_le_bytes());
    out.extend(
        MintQuoteMessage::MintQuoteRequest(share.request.clone())
            .to_frame_bytes()
            .expect("a quote request fits a frame"),
    );
    out
}

pub(super) fn decode_owed(payload: &[u8]) -> Option<QuoteShare> {
    let channel_id = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let sequence_number = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    match MintQuoteMessage::decode_frame(&mut payload.get(8..)?.to_vec()).ok()? {
        MintQuoteMessage::MintQuoteRequest(request) => Some(QuoteShare {
            conn: None,
            channel_id,
            sequence_number,
            request,
        }),
        _ => None,
    }
}

/// One kept notification as stored in `undelivered.json`.
#[derive(Serialize, Deserialize)]
struct StoredNotification {
    locking_key: String,
    sequence_number: u32,
    /// The ehash extension frame, hex.
    frame: String,
}

pub(super) fn load_undelivered(path: &Path) -> Vec<(LockingKey, UndeliveredNotification)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let stored: Vec<StoredNotification> = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            error!("{}: unreadable, keeping it aside: {e}", path.display());
            let _ = std::fs::rename(path, path.with_extension("json.unreadable"));
            return vec![];
        }
    };
    stored
        .into_iter()
        .filter_map(|s| {
            let key: LockingKey = s.locking_key.parse().ok()?;
            let mut frame = hex::decode(&s.frame).ok()?;
            let message = EhashMessage::decode_frame(&mut frame).ok()?;
            Some((
                key,
                UndeliveredNotification {
                    sequence_number: s.sequence_number,
                    message,
                },
            ))
        })
        .collect()
}

pub(super) fn save_undelivered(path: &Path, flow: &QuoteFlow) {
    let stored: Vec<StoredNotification> = flow
        .undelivered()
        .iter()
        .map(|(key, n)| StoredNotification {
            locking_key: key.to_string(),
            sequence_number: n.sequence_number,
            frame: hex::encode(n.message.clone().to_frame_bytes().expect("fits a frame")),
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec(&stored)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        error!(
            "cannot save undelivered notifications to {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mint_quote_sv2::MintQuoteRequestOwned;

    #[test]
    fn owed_payload_round_trips() {
        let key: LockingKey = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap();
        let share = QuoteShare {
            conn: Some(3),
            channel_id: 7,
            sequence_number: 9,
            request: MintQuoteRequestOwned::new(&[5u8; 80], [0xff; 32], 12, key),
        };
        let decoded = decode_owed(&encode_owed(&share)).unwrap();
        assert_eq!(
            decoded,
            QuoteShare {
                conn: None,
                ..share
            }
        );
        assert_eq!(decode_owed(&[1, 2, 3]), None);
    }
}

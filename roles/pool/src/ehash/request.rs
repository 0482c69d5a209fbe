//! A share's quote request, framed once. The outbox journals these bytes,
//! the Noise link encrypts them and the Redis link signs them, so a share
//! is encoded once however often it is sent; clones share one allocation.

use std::fmt;
use std::sync::Arc;

use ehash::wire::{EncodeError, MessageSet};
use ehash::LockingKey;
use mint_quote_sv2::{MintQuoteMessage, MintQuoteRequestOwned};
use stratum_core::codec_sv2::EncodableFrame;
use stratum_core::framing_sv2::Error as FramingError;

/// A `MintQuoteRequest` as a whole plaintext SV2 frame (header and
/// payload), with what the flow reads of it.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestFrame {
    bytes: Arc<[u8]>,
    share_hash: [u8; 32],
    amount: u64,
}

impl RequestFrame {
    pub fn new(request: MintQuoteRequestOwned) -> Result<Self, EncodeError> {
        let (share_hash, amount) = (request.share_hash(), request.amount);
        let bytes = MintQuoteMessage::MintQuoteRequest(request).to_frame_bytes()?;
        Ok(Self {
            bytes: bytes.into(),
            share_hash,
            amount,
        })
    }

    /// The request framed in `bytes`, and its locking key; `None` unless
    /// `bytes` are exactly one quote request whose locking key is a key
    /// (the mint would refuse any other).
    pub fn decode(bytes: &[u8]) -> Option<(Self, LockingKey)> {
        let MintQuoteMessage::MintQuoteRequest(request) =
            MintQuoteMessage::decode_frame(&mut bytes.to_vec()).ok()?
        else {
            return None;
        };
        let key = request.locking_key().ok()?;
        let frame = Self {
            bytes: bytes.into(),
            share_hash: request.share_hash(),
            amount: request.amount,
        };
        Some((frame, key))
    }

    pub fn share_hash(&self) -> [u8; 32] {
        self.share_hash
    }

    /// The ehash the share is worth.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for RequestFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFrame")
            .field("share_hash", &ehash::share::hex_be(&self.share_hash))
            .field("amount", &self.amount)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The Noise writer encrypts the frame as it is.
impl EncodableFrame for RequestFrame {
    fn encoded_length(&self) -> usize {
        self.bytes.len()
    }

    fn encode_into(self, dst: &mut [u8]) -> Result<(), FramingError> {
        if dst.len() != self.bytes.len() {
            return Err(FramingError::UnexpectedDestinationLength {
                expected: self.bytes.len(),
                actual: dst.len(),
            });
        }
        dst.copy_from_slice(&self.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mint_quote_sv2::{CoinbaseProof, MintStatsRequest};

    fn key() -> LockingKey {
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap()
    }

    fn request() -> MintQuoteRequestOwned {
        let proof = CoinbaseProof {
            coinbase: vec![1, 2, 3],
            merkle_path: vec![[4; 32]],
        };
        MintQuoteRequestOwned::new(&[5u8; 80], [0xff; 32], 12, key(), &proof).unwrap()
    }

    #[test]
    fn the_frame_is_the_request_it_was_made_from() {
        let frame = RequestFrame::new(request()).unwrap();
        assert_eq!(frame.share_hash(), request().share_hash());
        assert_eq!(frame.amount(), 12);
        let decoded = MintQuoteMessage::decode_frame(&mut frame.as_bytes().to_vec()).unwrap();
        assert_eq!(decoded, MintQuoteMessage::MintQuoteRequest(request()));
        assert_eq!(RequestFrame::decode(frame.as_bytes()), Some((frame, key())));
    }

    #[test]
    fn only_exactly_one_quote_request_decodes() {
        let bytes = RequestFrame::new(request()).unwrap().as_bytes().to_vec();
        let longer = [bytes.as_slice(), &[0]].concat();
        assert_eq!(RequestFrame::decode(&longer), None);
        assert_eq!(RequestFrame::decode(&bytes[..bytes.len() - 1]), None);
        let stats = MintQuoteMessage::MintStatsRequest(MintStatsRequest { request_id: 1 });
        assert_eq!(RequestFrame::decode(&stats.to_frame_bytes().unwrap()), None);
    }

    #[test]
    fn the_noise_writer_gets_the_bytes_as_they_are() {
        let frame = RequestFrame::new(request()).unwrap();
        let mut dst = vec![0u8; frame.encoded_length()];
        frame.clone().encode_into(&mut dst).unwrap();
        assert_eq!(dst, frame.as_bytes());
        let mut longer = vec![0u8; frame.encoded_length() + 1];
        assert!(frame.encode_into(&mut longer).is_err());
    }
}

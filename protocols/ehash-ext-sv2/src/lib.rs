//! The ehash extension of the SV2 mining protocol: quote notifications from
//! the pool to the translator, and the translator's acknowledgements.
//!
//! Extension type [`EHASH_EXTENSION_TYPE`], in the experimental range
//! 0x4000-0x7FFF. A client asks for it with Extensions Negotiation
//! (`RequestExtensions`, extension 0x0001) right after SetupConnection; only a
//! connection whose request was granted ever receives these messages.
//!
//! parsers_sv2 refuses frames of extensions it does not know, so a role
//! checks [`is_ehash_frame`] on the header first and decodes those frames
//! with [`EhashMessage::decode`](ehash::wire::MessageSet::decode).

use binary_sv2::{Deserialize, Seq064K, Seq064KOwned, Serialize, Str0255, U256Owned, U256};
use ehash::constants::ext as t;
use stratum_core::extensions_sv2::{RequestExtensions, RequestExtensionsSuccessOwned};
use stratum_core::framing_sv2::header::Header;

pub use ehash::constants::EHASH_EXTENSION_TYPE;
pub use ehash::wire::{DecodeError, EncodeError, MessageSet};

/// Pool -> translator, after the share was accepted: the mint created and
/// paid a quote for it, locked to the channel's key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteNotification<'decoder> {
    pub channel_id: u32,
    /// Sequence number of the `SubmitShares*` that carried the share.
    pub sequence_number: u32,
    /// sha256d of the share's header (little-endian, as in SV2 share messages).
    pub share_hash: U256<'decoder>,
    /// The mint's quote id, to mint with the locking secret key.
    pub quote_id: Str0255<'decoder>,
    /// The keyset (hex id) the quote is minted on.
    pub keyset_id: Str0255<'decoder>,
    /// ehash amount of the quote.
    pub amount: u64,
}

/// Pool -> translator: no quote could be created for an accepted share.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteFailure<'decoder> {
    pub channel_id: u32,
    pub sequence_number: u32,
    pub share_hash: U256<'decoder>,
    /// The mint's `MintQuoteError.error_code`, or the pool's own reason.
    pub error_code: Str0255<'decoder>,
    pub error_message: Str0255<'decoder>,
}

/// Most share hashes one acknowledgement carries.
pub const MAX_ACKED_PER_MESSAGE: usize = 1024;

/// Translator -> pool: the notifications (0xC0) and failures (0xC1) of these
/// shares are recorded durably at the translator. The pool keeps each
/// notification until it is acknowledged, and sends it again (after a
/// reconnect, or on the next channel with the same locking key) until then;
/// recording is idempotent at the translator.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintQuoteAck<'decoder> {
    /// The channel the acknowledged notifications arrived on.
    pub channel_id: u32,
    /// The share hash of each acknowledged notification (at most
    /// [`MAX_ACKED_PER_MESSAGE`]).
    pub share_hashes: Seq064K<'decoder, U256<'decoder>>,
}

ehash::message_enum! {
    /// Every message of the ehash extension, owned.
    pub enum EhashMessage {
        protocol: "ehash extension",
        extension_type: EHASH_EXTENSION_TYPE,
        channel_msg: true,
        common_fields: {
            /// The channel a message is about.
            channel_id: u32,
        },
        messages: {
            MintQuoteNotification(MintQuoteNotificationOwned) = t::MINT_QUOTE_NOTIFICATION,
                decoded as MintQuoteNotification<'_> => into_owned;
            MintQuoteFailure(MintQuoteFailureOwned) = t::MINT_QUOTE_FAILURE,
                decoded as MintQuoteFailure<'_> => into_owned;
            MintQuoteAck(MintQuoteAckOwned) = t::MINT_QUOTE_ACK,
                decoded as MintQuoteAck<'_> => into_owned;
        }
    }
}

impl EhashMessage {
    /// Addresses the message to another channel (a notification delivered
    /// on the next channel with the same locking key).
    pub fn set_channel_id(&mut self, channel_id: u32) {
        match self {
            EhashMessage::MintQuoteNotification(m) => m.channel_id = channel_id,
            EhashMessage::MintQuoteFailure(m) => m.channel_id = channel_id,
            EhashMessage::MintQuoteAck(m) => m.channel_id = channel_id,
        }
    }

    /// The share a notification or failure is about (`None` for an ack).
    pub fn share_hash(&self) -> Option<[u8; 32]> {
        match self {
            EhashMessage::MintQuoteNotification(m) => Some(m.share_hash.to_array()),
            EhashMessage::MintQuoteFailure(m) => Some(m.share_hash.to_array()),
            EhashMessage::MintQuoteAck(_) => None,
        }
    }
}

/// The acknowledgements of `share_hashes` received on `channel_id`, at
/// most [`MAX_ACKED_PER_MESSAGE`] hashes each.
pub fn acks(channel_id: u32, share_hashes: &[[u8; 32]]) -> Vec<EhashMessage> {
    share_hashes
        .chunks(MAX_ACKED_PER_MESSAGE)
        .map(|chunk| {
            let hashes = chunk.iter().map(|h| U256Owned::from(*h)).collect();
            EhashMessage::MintQuoteAck(MintQuoteAckOwned {
                channel_id,
                share_hashes: Seq064KOwned::new(hashes).expect("at most MAX_ACKED_PER_MESSAGE"),
            })
        })
        .collect()
}

/// Whether a frame belongs to the ehash extension (checked before handing
/// the frame to parsers_sv2).
pub fn is_ehash_frame(header: &Header) -> bool {
    header.ext_type_without_channel_msg() == EHASH_EXTENSION_TYPE
}

/// The `RequestExtensions` a client sends to ask for the ehash extension.
pub fn request_ehash_extension(request_id: u16) -> RequestExtensions<'static> {
    RequestExtensions {
        request_id,
        requested_extensions: Seq064K::new(vec![EHASH_EXTENSION_TYPE])
            .expect("one element fits a Seq064K"),
    }
}

/// Whether a `RequestExtensions.Success` grants the ehash extension.
pub fn grants_ehash_extension(success: &RequestExtensionsSuccessOwned) -> bool {
    success
        .supported_extensions
        .iter()
        .any(|e| *e == EHASH_EXTENSION_TYPE)
}

#[cfg(test)]
mod tests;

//! The ehash extension of the SV2 mining protocol (pool -> translator).
//!
//! Extension type [`EHASH_EXTENSION_TYPE`], in the experimental range
//! 0x4000-0x7FFF. A client asks for it with Extensions Negotiation
//! (`RequestExtensions`, extension 0x0001) right after SetupConnection; only a
//! connection whose request was granted ever receives these messages.
//!
//! parsers_sv2 refuses frames of extensions it does not know, so a role
//! checks [`is_ehash_frame`] on the header first and decodes those frames
//! with [`EhashMessage::decode`](ehash::wire::MessageSet::decode).

use binary_sv2::{Deserialize, Seq064K, Serialize, Str0255, U256};
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

ehash::message_enum! {
    /// Every message of the ehash extension, owned.
    pub enum EhashMessage {
        protocol: "ehash extension",
        extension_type: EHASH_EXTENSION_TYPE,
        channel_msg: true,
        messages: {
            MintQuoteNotification(MintQuoteNotificationOwned) = t::MINT_QUOTE_NOTIFICATION,
                decoded as MintQuoteNotification<'_> => into_owned;
            MintQuoteFailure(MintQuoteFailureOwned) = t::MINT_QUOTE_FAILURE,
                decoded as MintQuoteFailure<'_> => into_owned;
        }
    }
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

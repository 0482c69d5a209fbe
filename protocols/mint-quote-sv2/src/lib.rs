//! The `mint-quote` subprotocol between the pool and the mint.
//!
//! SV2 framing over a Noise connection the pool opens to the mint:
//!
//! 1. pool -> mint `SetupConnection` with `protocol` = [`PROTOCOL`]
//!    ([`ehash::constants::mint_quote::PROTOCOL`]); mint -> pool
//!    `SetupConnection.Success` or `.Error` (the common SV2 messages).
//! 2. mint -> pool [`PoolAuthChallenge`]; pool -> mint [`PoolAuthProof`], a
//!    Schnorr signature by a pool key over the challenge and the mint's
//!    authority key ([`auth`]); mint -> pool [`PoolAuthSuccess`] or
//!    [`PoolAuthError`] and close. Nothing else is served before success.
//! 3. pool -> mint [`MintQuoteRequest`]; mint -> pool [`MintQuoteResponse`]
//!    or [`MintQuoteError`], correlated by share hash. Since version 2 a
//!    request carries the share's coinbase and merkle path
//!    ([`CoinbaseProof`], checked by [`ehash::coinbase`]).
//! 4. pool -> mint [`MintStatsRequest`]; mint -> pool [`MintStatsResponse`].
//!
//! All frames use extension type 0 and are not channel messages.

pub mod auth;
pub mod client;
mod messages;
pub mod stream;

pub use ehash::constants::mint_quote::{PROTOCOL, PROTOCOL_VERSION};
pub use ehash::wire::{DecodeError, EncodeError};
pub use messages::*;

use ehash::constants::mint_quote as t;
use stratum_core::common_messages_sv2::{
    SetupConnectionError, SetupConnectionErrorOwned, SetupConnectionSuccess,
};

ehash::message_enum! {
    /// Every message of the mint-quote subprotocol, owned.
    pub enum MintQuoteMessage {
        protocol: "mint-quote",
        extension_type: 0,
        channel_msg: false,
        messages: {
            SetupConnection(SetupConnectionOwned) = t::SETUP_CONNECTION,
                decoded as SetupConnection<'_> => into_owned;
            SetupConnectionSuccess(SetupConnectionSuccess) = t::SETUP_CONNECTION_SUCCESS,
                decoded as SetupConnectionSuccess;
            SetupConnectionError(SetupConnectionErrorOwned) = t::SETUP_CONNECTION_ERROR,
                decoded as SetupConnectionError<'_> => into_owned;
            PoolAuthChallenge(PoolAuthChallengeOwned) = t::POOL_AUTH_CHALLENGE,
                decoded as PoolAuthChallenge<'_> => into_owned;
            PoolAuthProof(PoolAuthProofOwned) = t::POOL_AUTH_PROOF,
                decoded as PoolAuthProof<'_> => into_owned;
            PoolAuthSuccess(PoolAuthSuccess) = t::POOL_AUTH_SUCCESS,
                decoded as PoolAuthSuccess;
            PoolAuthError(PoolAuthErrorOwned) = t::POOL_AUTH_ERROR,
                decoded as PoolAuthError<'_> => into_owned;
            MintQuoteRequest(MintQuoteRequestOwned) = t::MINT_QUOTE_REQUEST,
                decoded as MintQuoteRequest<'_> => into_owned;
            MintQuoteResponse(MintQuoteResponseOwned) = t::MINT_QUOTE_RESPONSE,
                decoded as MintQuoteResponse<'_> => into_owned;
            MintQuoteError(MintQuoteErrorOwned) = t::MINT_QUOTE_ERROR,
                decoded as MintQuoteError<'_> => into_owned;
            MintStatsRequest(MintStatsRequest) = t::MINT_STATS_REQUEST,
                decoded as MintStatsRequest;
            MintStatsResponse(MintStatsResponse) = t::MINT_STATS_RESPONSE,
                decoded as MintStatsResponse;
        }
    }
}

#[cfg(test)]
mod tests;

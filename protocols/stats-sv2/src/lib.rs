//! Stats messages from the pool and the translator to their stats services
//! (pool-stats, proxy-stats): SV2 frames over plain TCP, extension type 0,
//! not channel messages.
//!
//! Integer fields only. Every message carries `timestamp`, Unix time in
//! milliseconds when the event happened at the sender, so a service that
//! receives a backlog late still files each event at the right time. Work
//! is in expected hashes (see `ehash::work`), saturating at `u64::MAX`.

use binary_sv2::{Deserialize, Serialize, Str0255, U256};
use ehash::constants::stats as t;

pub use ehash::wire::{DecodeError, EncodeError, MessageSet};

/// Pool: a share was submitted on a channel, accepted or not.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ShareSubmitted {
    pub downstream_id: u32,
    pub channel_id: u32,
    pub accepted: bool,
    /// Expected hashes the channel target proves (0 when rejected).
    pub work: u64,
    pub timestamp: u64,
}

/// Pool: the mint created a quote for a share.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QuoteCreated {
    pub downstream_id: u32,
    pub channel_id: u32,
    /// ehash amount of the quote.
    pub amount: u64,
    pub timestamp: u64,
}

/// Pool: a channel was opened on a downstream connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpened {
    pub downstream_id: u32,
    pub channel_id: u32,
    pub timestamp: u64,
}

/// Pool: a channel was closed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ChannelClosed {
    pub downstream_id: u32,
    pub channel_id: u32,
    pub timestamp: u64,
}

/// Pool: a downstream (a translator or an SV2 device) connected.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DownstreamConnected {
    pub downstream_id: u32,
    /// `SetupConnection.flags` of the downstream.
    pub flags: u32,
    pub timestamp: u64,
}

/// Pool: a downstream disconnected.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DownstreamDisconnected {
    pub downstream_id: u32,
    pub timestamp: u64,
}

/// Translator: an SV1 miner connected and authorized.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MinerConnected<'decoder> {
    pub miner_id: u32,
    /// The miner's SV1 username (worker name).
    pub name: Str0255<'decoder>,
    pub timestamp: u64,
}

/// Translator: an SV1 miner disconnected.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MinerDisconnected {
    pub miner_id: u32,
    pub timestamp: u64,
}

/// Translator: an SV1 miner submitted a share.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MinerShare {
    pub miner_id: u32,
    pub accepted: bool,
    /// Expected hashes the miner's target proves.
    pub work: u64,
    pub timestamp: u64,
}

/// Translator: the hashrate it estimates for a miner.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HashrateUpdate {
    pub miner_id: u32,
    /// Hashes per second.
    pub hashrate: u64,
    pub timestamp: u64,
}

/// Pool: a share solved a block and was sent to the template provider.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BlockFound<'decoder> {
    pub height: u32,
    /// Block hash, little-endian (reverse for display).
    pub block_hash: U256<'decoder>,
    pub channel_id: u32,
    pub timestamp: u64,
}

/// `PublisherHello.role`: who publishes.
pub mod role {
    pub const POOL: u8 = 0;
    pub const TRANSLATOR: u8 = 1;
}

/// `LinkStatus.link`: which upstream link the status is about.
pub mod link {
    /// Pool -> template provider (devnet-tp or sv2-tp).
    pub const TEMPLATE_PROVIDER: u8 = 0;
    /// Pool -> mint (mint-quote link), or translator wallet -> mint (HTTP).
    pub const MINT: u8 = 1;
    /// Translator -> pool (SV2 mining).
    pub const POOL: u8 = 2;
}

/// Pool or translator: first message on every stats connection. A new
/// `started_at` tells the service the publisher restarted, so its live state
/// (connected downstreams, miners, links) starts over; history is kept.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PublisherHello {
    /// [`role`]`::POOL` or [`role`]`::TRANSLATOR`.
    pub role: u8,
    /// When the publishing process started (Unix milliseconds).
    pub started_at: u64,
    /// Events dropped since the process started because the queue was full
    /// while the service was away.
    pub dropped: u64,
    pub timestamp: u64,
}

/// Pool or translator: an upstream link went up or down.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// One of [`link`].
    pub link: u8,
    pub up: bool,
    pub timestamp: u64,
}

/// Pool: the mint's own counters, from the latest `MintStatsResponse`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MintStats {
    pub quotes_unpaid: u64,
    pub quotes_paid: u64,
    /// Quotes the wallets redeemed (minted into ecash).
    pub quotes_issued: u64,
    pub ehash_quoted: u64,
    pub ehash_issued: u64,
    pub timestamp: u64,
}

/// Translator: the wallet's spendable ehash balance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WalletBalance {
    pub balance: u64,
    pub timestamp: u64,
}

/// Translator: a quote was received from the pool (`minted` false), or its
/// tokens were minted into the wallet (`minted` true).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EhashQuote<'decoder> {
    /// The mint's quote id.
    pub quote_id: Str0255<'decoder>,
    pub amount: u64,
    pub minted: bool,
    pub timestamp: u64,
}

ehash::message_enum! {
    /// Every stats message, owned.
    pub enum StatsMessage {
        protocol: "stats",
        extension_type: 0,
        channel_msg: false,
        common_fields: {
            /// When the event happened (Unix milliseconds).
            timestamp: u64,
        },
        messages: {
            ShareSubmitted(ShareSubmitted) = t::SHARE_SUBMITTED,
                decoded as ShareSubmitted;
            QuoteCreated(QuoteCreated) = t::QUOTE_CREATED,
                decoded as QuoteCreated;
            ChannelOpened(ChannelOpened) = t::CHANNEL_OPENED,
                decoded as ChannelOpened;
            ChannelClosed(ChannelClosed) = t::CHANNEL_CLOSED,
                decoded as ChannelClosed;
            DownstreamConnected(DownstreamConnected) = t::DOWNSTREAM_CONNECTED,
                decoded as DownstreamConnected;
            DownstreamDisconnected(DownstreamDisconnected) = t::DOWNSTREAM_DISCONNECTED,
                decoded as DownstreamDisconnected;
            MinerConnected(MinerConnectedOwned) = t::MINER_CONNECTED,
                decoded as MinerConnected<'_> => into_owned;
            MinerDisconnected(MinerDisconnected) = t::MINER_DISCONNECTED,
                decoded as MinerDisconnected;
            MinerShare(MinerShare) = t::MINER_SHARE,
                decoded as MinerShare;
            HashrateUpdate(HashrateUpdate) = t::HASHRATE_UPDATE,
                decoded as HashrateUpdate;
            BlockFound(BlockFoundOwned) = t::BLOCK_FOUND,
                decoded as BlockFound<'_> => into_owned;
            PublisherHello(PublisherHello) = t::PUBLISHER_HELLO,
                decoded as PublisherHello;
            LinkStatus(LinkStatus) = t::LINK_STATUS,
                decoded as LinkStatus;
            MintStats(MintStats) = t::MINT_STATS,
                decoded as MintStats;
            WalletBalance(WalletBalance) = t::WALLET_BALANCE,
                decoded as WalletBalance;
            EhashQuote(EhashQuoteOwned) = t::EHASH_QUOTE,
                decoded as EhashQuote<'_> => into_owned;
        }
    }
}

#[cfg(test)]
mod tests;

//! Stats messages from the pool and the translator to their stats services
//! (pool-stats, proxy-stats): SV2 frames over plain TCP, extension type 0,
//! not channel messages.
//!
//! Integer fields only. Every message carries `timestamp`, Unix time in
//! milliseconds when the event happened at the sender, so a service that
//! receives a backlog late still files each event at the right time. Work
//! is in expected hashes (see `ehash::work`), saturating at `u64::MAX`.
//!
//! Every connection starts with [`PublisherHello`], which carries the
//! [`PROTOCOL_VERSION`] and the service's publisher secret; a publisher with
//! nothing to send sends [`Keepalive`] every [`KEEPALIVE_INTERVAL`].

use binary_sv2::encodable::EncodableField;
use binary_sv2::{Deserialize, GetSize, Serialize, Str0255, Str0255Owned, U256};
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
    /// Refused by the translator itself because the pool was not answering
    /// its shares fast enough (a last resort; `accepted` is false).
    pub backlogged: bool,
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

/// The message type of the version 1 hello. It is not decoded; a service
/// recognises it to tell an outdated publisher what is wrong.
pub use ehash::constants::stats::PUBLISHER_HELLO_V1;
/// The version of this protocol, which [`PublisherHello`] carries, and the
/// oldest a service still takes.
pub use ehash::constants::stats::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// How long a secret [`PublisherHello`] can carry, in bytes.
pub const MAX_SECRET_LEN: usize = 255;

/// Pool or translator: first message on every stats connection. A new
/// `started_at` tells the service the publisher restarted, so its live state
/// (connected downstreams, miners, links) starts over; history is kept.
///
/// `secret` is the service's publisher secret, which proves the publisher
/// may publish there (empty when the publisher has none). It travels in
/// clear over the plain TCP link: the link must be one that strangers cannot
/// watch (loopback, a private network, a tunnel). `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublisherHello {
    /// [`PROTOCOL_VERSION`]; a service refuses any before
    /// [`MIN_PROTOCOL_VERSION`] or after its own.
    pub version: u16,
    /// [`role`]`::POOL` or [`role`]`::TRANSLATOR`.
    pub role: u8,
    /// When the publishing process started (Unix milliseconds).
    pub started_at: u64,
    /// Events dropped since the process started because the queue was full
    /// while the service was away.
    pub dropped: u64,
    /// At most [`MAX_SECRET_LEN`] bytes.
    pub secret: Str0255Owned,
    pub timestamp: u64,
}

impl std::fmt::Debug for PublisherHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret.as_bytes().is_empty() {
            "none"
        } else {
            "(hidden)"
        };
        f.debug_struct("PublisherHello")
            .field("version", &self.version)
            .field("role", &self.role)
            .field("started_at", &self.started_at)
            .field("dropped", &self.dropped)
            .field("secret", &secret)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// [`PublisherHello`] as binary_sv2 encodes it. Kept apart because the
/// owned struct binary_sv2 derives has a `Debug` that would show the secret.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct PublisherHelloWire<'decoder> {
    version: u16,
    role: u8,
    started_at: u64,
    dropped: u64,
    secret: Str0255<'decoder>,
    timestamp: u64,
}

impl PublisherHelloWire<'_> {
    fn into_hello(self) -> PublisherHello {
        let w = self.into_owned();
        PublisherHello {
            version: w.version,
            role: w.role,
            started_at: w.started_at,
            dropped: w.dropped,
            secret: w.secret,
            timestamp: w.timestamp,
        }
    }
}

impl PublisherHello {
    /// A hello of this [`PROTOCOL_VERSION`]; an error when `secret` is
    /// longer than [`MAX_SECRET_LEN`].
    pub fn new(
        role: u8,
        started_at: u64,
        dropped: u64,
        secret: &[u8],
        timestamp: u64,
    ) -> Result<PublisherHello, EncodeError> {
        let secret = Str0255Owned::new(secret.to_vec()).map_err(|_| EncodeError {
            message: "PublisherHello",
            reason: format!(
                "a secret of {} bytes, at most {MAX_SECRET_LEN} fit",
                secret.len()
            ),
        })?;
        Ok(PublisherHello {
            version: PROTOCOL_VERSION,
            role,
            started_at,
            dropped,
            secret,
            timestamp,
        })
    }

    fn wire(&self) -> PublisherHelloWireOwned {
        PublisherHelloWireOwned {
            version: self.version,
            role: self.role,
            started_at: self.started_at,
            dropped: self.dropped,
            secret: self.secret.clone(),
            timestamp: self.timestamp,
        }
    }
}

impl GetSize for PublisherHello {
    fn get_size(&self) -> usize {
        self.wire().get_size()
    }
}

impl<'a> From<PublisherHello> for EncodableField<'a> {
    fn from(hello: PublisherHello) -> Self {
        hello.wire().into()
    }
}

/// Pool or translator: sent when nothing else was for
/// [`KEEPALIVE_INTERVAL`], so the service can tell a quiet publisher from a
/// dead connection. Services do not store it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    pub timestamp: u64,
}

/// A publisher sends something at least this often ([`Keepalive`] when it
/// has nothing else); a service may close a connection silent for several
/// times as long.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

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

/// Pool or translator: a snapshot of what is live at the publisher follows,
/// as [`LiveEntry`]s closed by [`LiveEnd`]. Sent on every connection once
/// the queued events are through, and again after a connect or disconnect
/// event was dropped from the publisher's full queue: the service learns
/// what connected meanwhile, and forgets what left. A service takes each
/// connection's snapshot on its own, and none from a connection of a
/// publisher process that has restarted since.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LiveBegin {
    pub timestamp: u64,
}

/// `LiveEntry.kind`: what is live.
pub mod live {
    /// A downstream connection of the pool (`id`, `flags`).
    pub const DOWNSTREAM: u8 = 0;
    /// A channel of a pool downstream (`id`, `channel_id`).
    pub const CHANNEL: u8 = 1;
    /// An SV1 miner of the translator (`id`, `name`).
    pub const MINER: u8 = 2;
}

/// Pool or translator: one connection or channel live at the publisher, in
/// a snapshot ([`LiveBegin`]). Fields a kind has no use for are 0 or empty.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry<'decoder> {
    /// One of [`live`].
    pub kind: u8,
    /// The downstream id, or the miner id.
    pub id: u32,
    pub channel_id: u32,
    /// `SetupConnection.flags` of a downstream.
    pub flags: u32,
    /// A miner's SV1 username.
    pub name: Str0255<'decoder>,
    /// When it connected, or the channel opened (Unix milliseconds): the
    /// timestamp of its own event.
    pub since: u64,
    pub timestamp: u64,
}

/// Pool or translator: the end of a snapshot, `entries` [`LiveEntry`]s
/// after its [`LiveBegin`]. What the service holds as live and the snapshot
/// did not name has left.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LiveEnd {
    pub entries: u32,
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
                decoded as PublisherHelloWire<'_> => into_hello;
            LinkStatus(LinkStatus) = t::LINK_STATUS,
                decoded as LinkStatus;
            MintStats(MintStats) = t::MINT_STATS,
                decoded as MintStats;
            WalletBalance(WalletBalance) = t::WALLET_BALANCE,
                decoded as WalletBalance;
            EhashQuote(EhashQuoteOwned) = t::EHASH_QUOTE,
                decoded as EhashQuote<'_> => into_owned;
            Keepalive(Keepalive) = t::KEEPALIVE,
                decoded as Keepalive;
            LiveBegin(LiveBegin) = t::LIVE_BEGIN,
                decoded as LiveBegin;
            LiveEntry(LiveEntryOwned) = t::LIVE_ENTRY,
                decoded as LiveEntry<'_> => into_owned;
            LiveEnd(LiveEnd) = t::LIVE_END,
                decoded as LiveEnd;
        }
    }
}

impl StatsMessage {
    /// Whether this is a connect or disconnect event: what a live snapshot
    /// ([`LiveBegin`]) makes up for when one is lost.
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            StatsMessage::DownstreamConnected(_)
                | StatsMessage::DownstreamDisconnected(_)
                | StatsMessage::ChannelOpened(_)
                | StatsMessage::ChannelClosed(_)
                | StatsMessage::MinerConnected(_)
                | StatsMessage::MinerDisconnected(_)
        )
    }
}

#[cfg(test)]
mod tests;

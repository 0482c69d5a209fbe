//! Names and numbers shared by the pool, the mint, the translator and the
//! wallet. Each message-type constant lives here once; the protocol crates
//! use these rather than repeating the numbers.

/// The Cashu currency unit of ehash. cdk lowercases custom units, so build
/// cdk units only with `CurrencyUnit::custom(UNIT)`.
pub const UNIT: &str = "hash";

/// The Cashu payment method (NUT-04 custom method) of ehash quotes.
pub const PAYMENT_METHOD: &str = "ehash";

/// The SV2 extension type of the ehash extension (pool <-> translator).
///
/// It lies in the range the SV2 spec leaves for experimental extensions
/// (0x4000-0x7FFF) and is negotiated with Extensions Negotiation (0x0001).
pub const EHASH_EXTENSION_TYPE: u16 = 0x4EA5;

/// Messages of the ehash extension. All are channel messages.
pub mod ext {
    /// Pool -> translator: the mint created a quote for an accepted share.
    pub const MINT_QUOTE_NOTIFICATION: u8 = 0xC0;
    /// Pool -> translator: the mint could not create a quote for a share.
    pub const MINT_QUOTE_FAILURE: u8 = 0xC1;
    /// Translator -> pool: these notifications (or failures) are recorded
    /// durably; the pool may forget them.
    pub const MINT_QUOTE_ACK: u8 = 0xC2;
}

/// The pool <-> mint link (`mint-quote` subprotocol, SV2 framing over Noise).
pub mod mint_quote {
    /// `SetupConnection.protocol` of the mint-quote subprotocol.
    ///
    /// SV2 allocates 0 (mining), 1 (job declaration) and 2 (template
    /// distribution); 0x80 stays clear of future allocations.
    pub const PROTOCOL: u8 = 0x80;
    /// The version of the mint-quote subprotocol this build speaks. Version
    /// 1 quote requests carried no coinbase proof; they are refused at
    /// SetupConnection.
    pub const PROTOCOL_VERSION: u16 = 2;

    /// Common messages (same numbers as in every SV2 subprotocol).
    pub const SETUP_CONNECTION: u8 = 0x00;
    pub const SETUP_CONNECTION_SUCCESS: u8 = 0x01;
    pub const SETUP_CONNECTION_ERROR: u8 = 0x02;

    /// Pool -> mint: create a quote worth a share's work.
    pub const MINT_QUOTE_REQUEST: u8 = 0x80;
    /// Mint -> pool: the quote exists (also for a share quoted before).
    pub const MINT_QUOTE_RESPONSE: u8 = 0x81;
    /// Mint -> pool: no quote, with a code, a message and the share hash.
    pub const MINT_QUOTE_ERROR: u8 = 0x82;
    /// Pool -> mint: ask for the mint's quote totals.
    pub const MINT_STATS_REQUEST: u8 = 0x83;
    /// Mint -> pool: quote totals from the mint's database.
    pub const MINT_STATS_RESPONSE: u8 = 0x84;
    /// Mint -> pool: a fresh random challenge, sent after SetupConnection.Success.
    pub const POOL_AUTH_CHALLENGE: u8 = 0x85;
    /// Pool -> mint: the pool key and its Schnorr signature over the challenge.
    pub const POOL_AUTH_PROOF: u8 = 0x86;
    /// Mint -> pool: the proof is good; quote and stats requests are served.
    pub const POOL_AUTH_SUCCESS: u8 = 0x87;
    /// Mint -> pool: the proof is refused; the mint closes the connection.
    pub const POOL_AUTH_ERROR: u8 = 0x88;
}

/// The pool/translator -> stats service link (SV2 framing over plain TCP).
pub mod stats {
    /// The version `PublisherHello` carries. Version 1 had no version field
    /// and no secret, and its hello was [`PUBLISHER_HELLO_V1`]; version 2
    /// had no snapshot of what is live (`LiveBegin`, `LiveEntry`, `LiveEnd`).
    pub const PROTOCOL_VERSION: u16 = 3;
    /// The oldest version a service still takes: a version 2 publisher
    /// only sends no snapshots.
    pub const MIN_PROTOCOL_VERSION: u16 = 2;

    pub const SHARE_SUBMITTED: u8 = 0x01;
    pub const QUOTE_CREATED: u8 = 0x02;
    pub const CHANNEL_OPENED: u8 = 0x03;
    pub const CHANNEL_CLOSED: u8 = 0x04;
    pub const DOWNSTREAM_CONNECTED: u8 = 0x05;
    pub const DOWNSTREAM_DISCONNECTED: u8 = 0x06;
    pub const MINER_CONNECTED: u8 = 0x07;
    pub const MINER_DISCONNECTED: u8 = 0x08;
    pub const MINER_SHARE: u8 = 0x09;
    pub const HASHRATE_UPDATE: u8 = 0x0A;
    pub const BLOCK_FOUND: u8 = 0x0B;
    /// The version 1 hello (no secret): no longer decoded, only recognised
    /// so that an outdated publisher is told what is wrong.
    pub const PUBLISHER_HELLO_V1: u8 = 0x0C;
    pub const LINK_STATUS: u8 = 0x0D;
    pub const MINT_STATS: u8 = 0x0E;
    pub const WALLET_BALANCE: u8 = 0x0F;
    pub const EHASH_QUOTE: u8 = 0x10;
    pub const PUBLISHER_HELLO: u8 = 0x11;
    pub const KEEPALIVE: u8 = 0x12;
    pub const LIVE_BEGIN: u8 = 0x13;
    pub const LIVE_ENTRY: u8 = 0x14;
    pub const LIVE_END: u8 = 0x15;
}

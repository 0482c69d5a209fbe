//! The ehash flow: every accepted share becomes a quote at the mint, locked
//! to the channel's key, and every quote a notification to the miner.
//!
//! - `flow`: the sans-IO state machine ([`flow::QuoteFlow`]): pending
//!   shares, routing of notifications, defer-mode answers.
//! - `notices`: notifications owed to translators until acknowledged.
//! - `task`: the task that runs it, between the pool core, the outbox and
//!   the mint link.
//! - `outbox`: the durable journal of accepted shares whose ehash has not
//!   reached a translator's records yet.
//! - `request`: a share's quote request, framed once for the outbox and
//!   both links.
//! - `persist`: the outbox payload of a share.
//! - `mint_link`: the link to the mint, over Noise;
//! - `redis_link`: or over Redis Streams, to a mint cluster.

pub mod flow;
pub mod mint_link;
pub mod notices;
pub mod outbox;
mod persist;
mod redis_link;
pub mod request;
mod task;

pub(crate) use task::{prepare, PreparedFlow};

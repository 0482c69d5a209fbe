//! The ehash flow: every accepted share becomes a quote at the mint, locked
//! to the channel's key, and every quote a notification to the miner.
//!
//! - `flow`: the sans-IO state machine ([`flow::QuoteFlow`]): pending
//!   shares, routing of notifications, defer-mode answers.
//! - `task`: the task that runs it, between the pool core, the outbox and
//!   the mint link.
//! - `outbox`: the durable journal of quote requests the mint still owes.
//! - `persist`: the flow's on-disk formats (an outbox payload, the kept
//!   notifications).
//! - `mint_link`: the authenticated Noise link to the mint.

pub mod flow;
pub mod mint_link;
pub mod outbox;
mod persist;
mod task;

pub(crate) use task::{prepare, PreparedFlow};

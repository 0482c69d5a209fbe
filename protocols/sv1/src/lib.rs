//! Stratum V1 (JSON-RPC over newline-delimited TCP), sans-IO.
//!
//! - [`server`]: what a proxy does with miners: parse their requests, build
//!   responses, `mining.notify`, `mining.set_difficulty`, `mining.set_version_mask`.
//! - [`client`]: what a miner does: a session numbering requests and matching
//!   answers, jobs from `mining.notify`, 80-byte headers, nonce scanning.
//!
//! Both sides share only the JSON-RPC framing ([`jsonrpc`]), the meaning of
//! a difficulty ([`difficulty`]) and the [`Submit`] fields. The header byte
//! orders (prevhash words, merkle root, version rolling) are written once per
//! side on purpose: the translator uses the server side, and its tests mine
//! with the client side, so a translation mistake shows as a share the pool
//! refuses instead of cancelling out.

pub mod client;
pub mod difficulty;
pub mod jsonrpc;
pub mod server;

pub use difficulty::{difficulty_of_target, target_from_difficulty};

/// The parameters of `mining.submit` (the worker name aside): what a miner
/// found and a server checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// The rolled version bits (already masked); only with version rolling.
    pub version_bits: Option<u32>,
}

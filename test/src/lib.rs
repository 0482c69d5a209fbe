//! Shared helpers of the cross-role integration tests: configs on
//! 127.0.0.1 port 0, a running devnet-tp + pool stack (and one with the
//! mint), an SV2 mining test client (Noise, channels, CPU share finder), a
//! template distribution test client, an SV1 test miner, the real miner in
//! load mode, the SV2 load generator of the pool benchmarks, roles as child processes, the shipped
//! configs rewritten for a test, a stand-in for the stats services and a
//! TCP relay that can lose a write.
//!
//! Everything is re-exported at the crate root, so a test says
//! `use hashpool_tests::*;`.

mod cashu;
mod jd_test_client;
mod keys;
mod load_miner;
mod mining_client;
mod pool_load;
mod role_child;
pub mod scale_out;
mod shipped_configs;
mod stack;
mod stats_sink;
mod sv1_client;
mod sv2_client;
mod tcp_relay;
mod tdp_client;
mod translator_helpers;

pub use cashu::*;
pub use jd_test_client::*;
pub use keys::*;
pub use load_miner::*;
pub use mining_client::*;
pub use pool_load::*;
pub use role_child::*;
pub use roles_common::free_port::free_address;
pub use shipped_configs::*;
pub use stack::*;
pub use stats_sink::*;
pub use sv1_client::*;
pub use sv2_client::*;
pub use tcp_relay::Relay;
pub use tdp_client::*;
pub use translator_helpers::*;

//! The `hashpool` command: `hashpool devnet` runs the whole stack (template
//! provider, mint, pool, translator, CPU miner) in one process on a private
//! devnet chain; `hashpool wallet` reads the devnet translator's wallet;
//! `hashpool audit` verifies a mint's whole issuance.

pub mod audit;
pub mod devnet;
pub mod profile;
pub mod scale_out;
pub mod state_dir;
pub mod status;

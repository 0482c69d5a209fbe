//! The ehash domain: how much a share is worth, what the unit and payment
//! method are called, which locking key a miner's identity names, how a
//! miner looks up their quotes at the mint, and the wire constants every
//! ehash protocol crate shares.
//!
//! Pure logic, no IO: everything here is tested directly.

pub mod amount;
pub mod audit;
pub mod coinbase;
pub mod constants;
pub mod locking_key;
pub mod lookup;
pub mod pending;
pub mod share;
pub mod wire;

pub use amount::{
    easiest_target, ehash_amount, target_worth, whole_units_target, work, work_hashes, UnitBits,
    UnitBitsError,
};
pub use coinbase::{check_coinbase, key_commitment_output, CoinbaseError};
pub use locking_key::{parse_user_identity, LockingKey, LockingKeyError, MinerIdentity};
pub use share::{verify_share, ShareError};

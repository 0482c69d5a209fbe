//! Devnet/test keys, block targets and timeouts every test shares.

use std::time::Duration;

use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

/// DEVNET/TEST ONLY keys (the same as config/*.toml).
pub const POOL_PUBLIC_KEY: &str = "9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS";
pub const POOL_SECRET_KEY: &str = "68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm";
pub const TP_PUBLIC_KEY: &str = "9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg";
pub const TP_SECRET_KEY: &str = "Yjp4a7Gdp4rn14jbVLzcJQp3wtpBqLDLdoodFYn8xQSiWQCBz";
/// A valid key that belongs to nobody in the tests.
pub const WRONG_PUBLIC_KEY: &str = "9azwdG9sKYpNJJJjMv2L6dFhZ3VorymaC7eBAbKmKvSU6D5KPQS";

/// Devnet-only keys of the mint and of the pool's identity on the mint link
/// (as in config/mint.toml and config/pool.toml).
pub const MINT_PUBLIC_KEY: &str = "9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd";
pub const MINT_SECRET_KEY: &str = "kaEBavE3GDF58RVUYTmAv3cG8miPAZ2cucwLnYAZf6XHTp3Ba";
pub const POOL_IDENTITY_PUBLIC_KEY: &str = "9agtKxDCNZ7BwrfFkX7pNY7qRvDcXaCqoW928MhFP8LE4yen9Sm";
pub const POOL_IDENTITY_SECRET_KEY: &str = "26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp";
pub const MINT_MNEMONIC: &str =
    "order shock flip tribe strong rigid planet deputy question matter decide little";

/// DEVNET/TEST ONLY: the public BIP-39 test mnemonic.
pub const TRANSLATOR_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// A locking key (the secp256k1 generator, compressed).
pub const LOCKING_KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

/// Block target that no share ever meets (target 1).
pub const NBITS_NEVER: u32 = 0x0300_0001;
/// Block target that half of all hashes meet: every share is a block.
pub const NBITS_EASY: u32 = 0x207f_ffff;
/// About one block per 1.5 M hashes: a few per minute from a debug CPU miner.
pub const NBITS_FEW_SECONDS: u32 = 0x1e0b_504f;

/// How long a test waits for any one message before failing.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn public_key(s: &str) -> Secp256k1PublicKey {
    s.parse().expect("valid test public key")
}

pub fn secret_key(s: &str) -> Secp256k1SecretKey {
    s.parse().expect("valid test secret key")
}

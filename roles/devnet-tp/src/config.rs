//! The devnet-tp config file (`config/devnet-tp.toml`).

use std::path::PathBuf;

use roles_common::{
    check_authority_key_pair, check_listen_address, default, ConfigError, Validate,
};
use serde::Deserialize;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::{pow::CompactTarget, Target};

use crate::utxo::BITCOIN_COINBASE_MATURITY;

/// Default block target: about 2^27 expected hashes per block, so one CPU
/// core doing a few million sha256d per second finds a block every ~30 s.
pub const DEFAULT_NBITS: u32 = 0x1d20_0000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpConfig {
    /// Where the SV2 template distribution server listens.
    #[serde(default = "default::this_machine::<String, 8442>")]
    pub listen_address: String,
    /// Noise authority key pair (base58, as in SRI configs).
    pub authority_public_key: Secp256k1PublicKey,
    pub authority_secret_key: Secp256k1SecretKey,
    /// Validity of the Noise certificate handed to each client, seconds.
    #[serde(default = "default::u64::<3600>")]
    pub cert_validity_sec: u64,
    /// Directory holding the chain (`chain.json`); created if missing.
    pub state_dir: PathBuf,
    /// Compact block target (nBits) of every block.
    #[serde(default = "default::u32::<DEFAULT_NBITS>")]
    pub nbits: u32,
    /// Coinbase value of the first block, satoshis.
    #[serde(default = "default::u64::<{ 50 * 100_000_000 }>")]
    pub initial_subsidy_sats: u64,
    /// Blocks between subsidy halvings.
    #[serde(default = "default::u32::<150>")]
    pub halving_interval: u32,
    /// Seconds between fresh templates on an unchanged tip (0: only when
    /// the tip moves). Each one is new work downstream, which also carries
    /// a channel's new difficulty to its miners.
    #[serde(default = "default::u64::<30>")]
    pub template_refresh_secs: u64,
    /// Blocks before a coinbase output can be spent (Bitcoin: 100).
    #[serde(default = "default::u32::<BITCOIN_COINBASE_MATURITY>")]
    pub coinbase_maturity: u32,
    /// Transactions the provider's own wallet makes per minute for the
    /// mempool (0: none, and blocks stay empty). With a rate, every
    /// coinbase pays the wallet a tenth of the subsidy to fund them.
    #[serde(default)]
    pub mempool_tx_per_minute: u32,
}

impl Validate for TpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_listen_address("listen_address", &self.listen_address)?;
        if self.cert_validity_sec == 0 {
            return Err(ConfigError::new("cert_validity_sec", "must be at least 1"));
        }
        check_authority_key_pair(&self.authority_public_key, &self.authority_secret_key)?;
        nbits_target(self.nbits).map_err(|e| ConfigError::new("nbits", e))?;
        if self.coinbase_maturity == 0 {
            return Err(ConfigError::new("coinbase_maturity", "must be at least 1"));
        }
        if self.mempool_tx_per_minute > 60_000 {
            return Err(ConfigError::new(
                "mempool_tx_per_minute",
                "must be at most 60000 (1000 per second)",
            ));
        }
        if self.halving_interval == 0 {
            return Err(ConfigError::new("halving_interval", "must be at least 1"));
        }
        if self.initial_subsidy_sats > 21_000_000 * 100_000_000 {
            return Err(ConfigError::new(
                "initial_subsidy_sats",
                "must be at most 21 million BTC",
            ));
        }
        Ok(())
    }
}

/// The target an nBits value encodes, refusing zero, negative and overflowing encodings.
pub fn nbits_target(nbits: u32) -> Result<Target, String> {
    let mantissa = nbits & 0x007f_ffff;
    let negative = nbits & 0x0080_0000 != 0;
    let exponent = nbits >> 24;
    if negative {
        return Err(format!("0x{nbits:08x} has the sign bit set"));
    }
    if mantissa == 0 {
        return Err(format!("0x{nbits:08x} encodes target zero"));
    }
    let mantissa_bits = 32 - mantissa.leading_zeros();
    if exponent > 3 && mantissa_bits + 8 * (exponent - 3) > 256 {
        return Err(format!("0x{nbits:08x} overflows 256 bits"));
    }
    let target = Target::from_compact(CompactTarget::from_consensus(nbits));
    if target == Target::ZERO {
        return Err(format!("0x{nbits:08x} encodes target zero"));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbits_checks() {
        assert!(nbits_target(DEFAULT_NBITS).is_ok());
        assert!(nbits_target(0x207f_ffff).is_ok());
        assert!(nbits_target(0x0300_0001).is_ok());
        assert!(nbits_target(0x1d00_0000).is_err());
        assert!(nbits_target(0x1d80_0001).is_err());
        assert!(nbits_target(0x2201_0000).is_err());
        // 2^229: ~2^27 expected hashes.
        let t = nbits_target(DEFAULT_NBITS).unwrap();
        let mut be = [0u8; 32];
        be[3] = 0x20;
        assert_eq!(t, Target::from_be_bytes(be));
    }
}

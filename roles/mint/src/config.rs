//! `mint --config config/mint.toml`: every setting of the mint.

use std::net::SocketAddr;
use std::path::PathBuf;

use ehash::UnitBits;
use roles_common::network::{refuse_devnet_key, refuse_devnet_mnemonic, Network};
use roles_common::{check_authority_key_pair, default, ConfigError, Validate};
use serde::Deserialize;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::bip32::Xpriv;
use stratum_core::bitcoin::secp256k1::{PublicKey, Secp256k1, XOnlyPublicKey};
use stratum_core::bitcoin::ScriptBuf;

/// The database value that keeps everything in memory (tests only: nothing survives a restart).
pub const IN_MEMORY_DATABASE: &str = ":memory:";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintConfig {
    /// The network this role serves; the devnet's published keys and
    /// mnemonics are refused on any other (default mainnet).
    #[serde(default)]
    pub network: Network,
    /// Cashu HTTP API (cdk-axum).
    #[serde(default = "default::this_machine::<SocketAddr, 3338>")]
    pub http_listen: SocketAddr,
    /// The URL wallets use to reach the HTTP API, as advertised in the mint
    /// info. Defaults to `http://<http_listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The pool link (SV2 mint-quote subprotocol over Noise).
    #[serde(default = "default::this_machine::<SocketAddr, 34260>")]
    pub link_listen: SocketAddr,
    /// Noise authority key pair of the pool link (base58, as in SRI configs).
    /// The pool pins `authority_public_key`.
    pub authority_public_key: Secp256k1PublicKey,
    pub authority_secret_key: Secp256k1SecretKey,
    /// Validity of the Noise certificate the mint presents, in seconds.
    #[serde(default = "default::u64::<3600>")]
    pub cert_validity_secs: u64,
    /// The pools allowed to create quotes (`[[pools]]` tables).
    pub pools: Vec<AllowedPool>,
    /// SQLite file of the mint (quotes, keysets, proofs), or ":memory:".
    pub database: String,
    /// BIP-39 mnemonic the mint's keysets derive from. Keep it secret.
    pub mnemonic: String,
    /// One ehash is 2^unit_bits expected hashes; must equal the pool's.
    pub unit_bits: u32,
    /// Smallest and largest amount of one quote (NUT-04 limits).
    #[serde(default = "default::u64::<1>")]
    pub min_amount: u64,
    // i64::MAX: the largest integer TOML can write.
    #[serde(default = "default::u64::<{ i64::MAX as u64 }>")]
    pub max_amount: u64,
    /// Most quotes one NUT-29 batch mint may carry.
    #[serde(default = "default::u64::<1000>")]
    pub max_batch_size: u64,
    /// The template provider the mint follows the chain with (`[chain]`).
    /// Without it the mint cannot tell fresh work from old: allowed on the
    /// devnet only.
    #[serde(default)]
    pub chain: Option<ChainSettings>,
    /// Name and description in the mint info (NUT-06).
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A pool allowed to create quotes, and what its shares' coinbases must pay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedPool {
    /// The pool's identity key (base58 x-only public key): the public half
    /// of its `mint_identity_secret_key`.
    pub key: Secp256k1PublicKey,
    /// The pool's `coinbase_reward_script` (hex). A share is quoted only if
    /// its coinbase pays this script.
    pub reward_script: String,
}

impl AllowedPool {
    pub fn x_only_key(&self) -> XOnlyPublicKey {
        XOnlyPublicKey::from_slice(&self.key.into_bytes()).expect("a key_utils key is x-only")
    }

    pub fn reward_script(&self) -> ScriptBuf {
        ScriptBuf::from_bytes(hex::decode(&self.reward_script).expect("validated"))
    }
}

/// Largest `chain.max_tip_age`: a week of mainnet blocks.
pub const MAX_TIP_AGE: u64 = 1008;

/// The mint's own chain view: a share is quoted only if it builds on one
/// of the newest `max_tip_age` tips this template provider announced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// A template provider of the pool's network (devnet-tp, sv2-tp or
    /// Bitcoin Core with SV2), as host:port.
    pub tp_address: String,
    /// Its Noise authority key (base58).
    pub tp_authority_public_key: Secp256k1PublicKey,
    /// How many of the newest tips shares may build on: 1 is the current
    /// tip only. A share on an older tip gets `stale-prev-hash`; the pool
    /// must deliver its requests within that many blocks.
    #[serde(default = "default::u64::<6>")]
    pub max_tip_age: u64,
    /// How long a share on a tip the mint has not seen yet waits for the
    /// mint's template provider to announce it.
    #[serde(default = "default::u64::<10>")]
    pub unseen_tip_wait_secs: u64,
}

fn default_name() -> String {
    "Hashpool mint".to_string()
}

impl MintConfig {
    pub fn unit_bits(&self) -> UnitBits {
        UnitBits::new(self.unit_bits).expect("validated")
    }

    pub fn seed(&self) -> [u8; 64] {
        bip39::Mnemonic::parse(&self.mnemonic)
            .expect("validated")
            .to_seed("")
    }

    /// The mint's NUT-06 `pubkey`, the key quote lookups are signed for:
    /// the public key of the BIP-32 master key of the seed, the same key
    /// cdk's signatory reports (and would advertise by itself).
    pub fn info_pubkey(&self) -> PublicKey {
        let xpriv = Xpriv::new_master(stratum_core::bitcoin::Network::Bitcoin, &self.seed())
            .expect("a 64-byte seed makes a master key (p ~ 2^-127 otherwise)");
        xpriv.private_key.public_key(&Secp256k1::signing_only())
    }

    /// The path of the SQLite file, or None for an in-memory database.
    pub fn database_path(&self) -> Option<PathBuf> {
        (self.database != IN_MEMORY_DATABASE).then(|| PathBuf::from(&self.database))
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
    }
}

impl Validate for MintConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.chain {
            None if self.network != Network::Devnet => {
                return Err(ConfigError::new(
                    "chain",
                    "is required off the devnet: without a template provider the mint would quote work on any old block",
                ))
            }
            None => {}
            Some(chain) => {
                if !chain.tp_address.contains(':') {
                    return Err(ConfigError::new(
                        "chain.tp_address",
                        format!("`{}` is not host:port", chain.tp_address),
                    ));
                }
                if !(1..=MAX_TIP_AGE).contains(&chain.max_tip_age) {
                    return Err(ConfigError::new(
                        "chain.max_tip_age",
                        format!("must be 1 (the current tip only) to {MAX_TIP_AGE}"),
                    ));
                }
            }
        }
        UnitBits::new(self.unit_bits).map_err(|e| ConfigError::new("unit_bits", e.to_string()))?;
        refuse_devnet_key(
            self.network,
            "authority_secret_key",
            &self.authority_secret_key.into(),
        )?;
        refuse_devnet_mnemonic(self.network, "mnemonic", &self.mnemonic)?;
        for (i, pool) in self.pools.iter().enumerate() {
            refuse_devnet_key(self.network, &format!("pools[{i}].key"), &pool.key)?;
            match hex::decode(&pool.reward_script) {
                Ok(script) if !script.is_empty() => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("pools[{i}].reward_script"),
                        "must be the pool's coinbase_reward_script in hex",
                    ))
                }
            }
        }
        bip39::Mnemonic::parse(&self.mnemonic)
            .map_err(|e| ConfigError::new("mnemonic", format!("not a BIP-39 mnemonic: {e}")))?;
        if self.pools.is_empty() {
            return Err(ConfigError::new(
                "pools",
                "is empty: no pool could ever create a quote",
            ));
        }
        check_authority_key_pair(&self.authority_public_key, &self.authority_secret_key)?;
        if self.min_amount == 0 || self.min_amount > self.max_amount {
            return Err(ConfigError::new(
                "min_amount",
                format!(
                    "must be at least 1 and at most max_amount ({})",
                    self.max_amount
                ),
            ));
        }
        if self.max_batch_size == 0 {
            return Err(ConfigError::new("max_batch_size", "must be at least 1"));
        }
        if self.database.trim().is_empty() {
            return Err(ConfigError::new("database", "is empty"));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "public_url",
                    "must start with http:// or https://",
                ));
            }
        }
        Ok(())
    }
}

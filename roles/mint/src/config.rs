//! `mint --config config/mint.toml`: every setting of the mint.

use std::net::SocketAddr;
use std::path::PathBuf;

use ehash::UnitBits;
use roles_common::network::{refuse_devnet_key, refuse_devnet_mnemonic, Network};
use roles_common::redis_stream;
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
    /// info. Defaults to `http://<the address http_listen bound>`.
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
    /// Where the mint keeps quotes, keysets and proofs: a SQLite file, or
    /// ":memory:", or a PostgreSQL URL (`postgres://user:password@host:port/db`,
    /// `?sslmode=require` for TLS), which several mint processes can share.
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
    /// The Redis Streams transport (`[redis]`): quote requests from pools
    /// that set `transport = "redis"`, served next to the Noise link.
    #[serde(default)]
    pub redis: Option<RedisSettings>,
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
/// Largest `chain.unseen_tip_wait_secs`: a share waiting holds one of its
/// link's slots, and the pool asks again after its own timeout anyway.
pub const MAX_UNSEEN_TIP_WAIT_SECS: u64 = 60;

/// The mint's own chain view: a share is quoted only if it builds on a tip
/// fewer than `max_tip_age` blocks back (counted for its pool: see
/// [`crate::chain`]) that this template provider announced, or one it
/// missed between two it did.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// A template provider of the pool's network (devnet-tp, sv2-tp or
    /// Bitcoin Core with SV2), as host:port.
    pub tp_address: String,
    /// Its Noise authority key (base58).
    pub tp_authority_public_key: Secp256k1PublicKey,
    /// Shares may build on tips fewer blocks back than this, counting for
    /// each pool the blocks that came while its shares were being quoted:
    /// 1 is the current tip only, while they are. A share on an older tip
    /// gets `stale-prev-hash`.
    #[serde(default = "default::u64::<6>")]
    pub max_tip_age: u64,
    /// How long a share on a tip the mint has not seen yet waits for the
    /// mint's template provider to announce it.
    #[serde(default = "default::u64::<10>")]
    pub unseen_tip_wait_secs: u64,
}

/// Where this mint process reads quote requests in Redis. All mint
/// processes of one deployment use the same `url` and `prefix` and share
/// one database; each takes a share of the requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (no TLS: keep Redis on a
    /// private network).
    pub url: String,
    /// Prefix of the deployment's keys; the pools' `redis_prefix`.
    #[serde(default = "redis_stream::default_prefix")]
    pub prefix: String,
    /// This process's name in the consumer group; unique per process. Set
    /// it (e.g. "mint-a") to have a restarted process serve what it held at
    /// once; the default, `<hostname>-<pid>`, leaves that to a claim after
    /// `claim_idle_ms`.
    #[serde(default)]
    pub consumer: Option<String>,
    /// A request delivered to a mint process that has not acknowledged it
    /// for this long is taken over by another (the first one died; a live
    /// one keeps what it serves claimed).
    #[serde(default = "default::u64::<10_000>")]
    pub claim_idle_ms: u64,
}

impl RedisSettings {
    pub fn consumer(&self) -> String {
        self.consumer.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "mint".to_string());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// The database a [`MintConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation<'a> {
    Memory,
    Sqlite(PathBuf),
    /// The URL, password included: log [`MintConfig::database_for_logs`].
    Postgres(&'a str),
}

fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
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

    /// What `database` names.
    pub fn database_location(&self) -> DatabaseLocation<'_> {
        if is_postgres_url(&self.database) {
            DatabaseLocation::Postgres(&self.database)
        } else if self.database == IN_MEMORY_DATABASE {
            DatabaseLocation::Memory
        } else {
            DatabaseLocation::Sqlite(PathBuf::from(&self.database))
        }
    }

    /// `database` as it may be logged: without a password.
    pub fn database_for_logs(&self) -> String {
        match self.database_location() {
            DatabaseLocation::Postgres(url) => roles_common::redact_url(url),
            _ => self.database.clone(),
        }
    }

    /// The URL advertised in the mint info: `public_url`, else the HTTP API
    /// as bound (`http_listen` may ask for any port).
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

impl MintConfig {
    fn validate_pools(&self) -> Result<(), ConfigError> {
        if self.pools.is_empty() {
            return Err(ConfigError::new(
                "pools",
                "is empty: no pool could ever create a quote",
            ));
        }
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
        Ok(())
    }
}

impl ChainSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        roles_common::check_host_port("chain.tp_address", &self.tp_address)?;
        if !(1..=MAX_TIP_AGE).contains(&self.max_tip_age) {
            return Err(ConfigError::new(
                "chain.max_tip_age",
                format!("must be 1 (the current tip only) to {MAX_TIP_AGE}"),
            ));
        }
        if self.unseen_tip_wait_secs > MAX_UNSEEN_TIP_WAIT_SECS {
            return Err(ConfigError::new(
                "chain.unseen_tip_wait_secs",
                format!("must be at most {MAX_UNSEEN_TIP_WAIT_SECS}"),
            ));
        }
        Ok(())
    }
}

impl RedisSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        redis_stream::check_url(&self.url).map_err(|e| ConfigError::new("redis.url", e))?;
        redis_stream::check_prefix(&self.prefix)
            .map_err(|e| ConfigError::new("redis.prefix", e))?;
        if self.claim_idle_ms < 100 {
            return Err(ConfigError::new(
                "redis.claim_idle_ms",
                "must be at least 100",
            ));
        }
        Ok(())
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
            Some(chain) => chain.validate()?,
        }
        UnitBits::new(self.unit_bits).map_err(|e| ConfigError::new("unit_bits", e.to_string()))?;
        refuse_devnet_key(
            self.network,
            "authority_secret_key",
            &self.authority_secret_key.into(),
        )?;
        refuse_devnet_mnemonic(self.network, "mnemonic", &self.mnemonic)?;
        self.validate_pools()?;
        bip39::Mnemonic::parse(&self.mnemonic)
            .map_err(|e| ConfigError::new("mnemonic", format!("not a BIP-39 mnemonic: {e}")))?;
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
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        if self.database.trim().is_empty() {
            return Err(ConfigError::new("database", "is empty"));
        }
        if let DatabaseLocation::Postgres(url) = self.database_location() {
            cdk_postgres::PgConfig::from(url).validate().map_err(|e| {
                ConfigError::new(
                    "database",
                    format!(
                        "`{}` is not a usable PostgreSQL URL: {e}",
                        roles_common::redact_url(url)
                    ),
                )
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_database(database: &str) -> MintConfig {
        MintConfig {
            database: database.into(),
            ..roles_common::testing::load_shipped("mint.toml")
        }
    }

    #[test]
    fn a_postgres_url_opens_postgres_anything_else_sqlite() {
        let url = "postgres://mint:secret@db.internal:5432/mint";
        assert_eq!(
            with_database(url).database_location(),
            DatabaseLocation::Postgres(url)
        );
        assert!(matches!(
            with_database("postgresql://db/mint").database_location(),
            DatabaseLocation::Postgres(_)
        ));
        assert_eq!(
            with_database(":memory:").database_location(),
            DatabaseLocation::Memory
        );
        assert_eq!(
            with_database("state/mint/mint.sqlite").database_location(),
            DatabaseLocation::Sqlite(PathBuf::from("state/mint/mint.sqlite"))
        );
    }

    #[test]
    fn the_password_never_reaches_the_logs() {
        for (database, logged) in [
            (
                "postgres://mint:s3cr%40t@db:5432/mint",
                "postgres://mint:***@db:5432/mint",
            ),
            (
                "postgresql://mint:p/a?ss@db/mint?sslmode=require",
                "postgresql://mint:***@db/mint?sslmode=require",
            ),
            (
                "postgres://db/mint?user=mint&password=secret&sslmode=require",
                "postgres://db/mint?user=mint&password=***&sslmode=require",
            ),
            (
                "postgres://mint@127.0.0.1:5433/mint",
                "postgres://mint@127.0.0.1:5433/mint",
            ),
            ("state/mint/mint.sqlite", "state/mint/mint.sqlite"),
        ] {
            assert_eq!(with_database(database).database_for_logs(), logged);
        }
    }

    #[test]
    fn a_chain_view_waits_a_minute_at_most_for_an_unseen_tip() {
        let mut config = with_database(":memory:");
        let chain = config
            .chain
            .as_mut()
            .expect("the shipped config has [chain]");
        chain.unseen_tip_wait_secs = MAX_UNSEEN_TIP_WAIT_SECS + 1;
        let error = config.validate().unwrap_err();
        assert_eq!(error.field, "chain.unseen_tip_wait_secs");
        config.chain.as_mut().unwrap().unseen_tip_wait_secs = MAX_UNSEEN_TIP_WAIT_SECS;
        config.validate().unwrap();
    }

    #[test]
    fn a_malformed_postgres_url_is_refused_naming_database_without_the_password() {
        let error = with_database("postgres://mint:secret@db:notaport/mint")
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "database");
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(!error.to_string().contains('\n'), "{error}");
        with_database("postgres://mint:secret@db:5432/mint")
            .validate()
            .unwrap();
    }
}

//! The jd-client config file (`config/jd-client.toml`).

use roles_common::network::{refuse_devnet_key, Network};
use roles_common::{
    check_authority_key_pair, check_host_port, check_listen_address, default, ConfigError, Validate,
};
use serde::Deserialize;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JdClientConfig {
    /// The network this role serves; the devnet's published keys are
    /// refused on any other (default mainnet).
    #[serde(default)]
    pub network: Network,
    /// Where translators (and other SV2 mining clients) connect.
    #[serde(default = "default::this_machine::<String, 34265>")]
    pub listen_address: String,
    /// This role's Noise authority key pair, for its downstreams.
    pub authority_public_key: Secp256k1PublicKey,
    pub authority_secret_key: Secp256k1SecretKey,
    #[serde(default = "default::u64::<3600>")]
    pub cert_validity_sec: u64,
    /// Its own template provider (devnet-tp, or sv2-tp with a node of its own).
    #[serde(default = "default::this_machine::<String, 8442>")]
    pub tp_address: String,
    pub tp_authority_public_key: Secp256k1PublicKey,
    /// The pool's SV2 mining listener and its job declarator.
    #[serde(default = "default::this_machine::<String, 34254>")]
    pub pool_address: String,
    #[serde(default = "default::this_machine::<String, 34264>")]
    pub jds_address: String,
    /// The pool's Noise authority public key (both listeners), pinned.
    pub pool_authority_public_key: Secp256k1PublicKey,
    /// Who declares (AllocateMiningJobToken.user_identifier).
    #[serde(default = "default_user")]
    pub user_identifier: String,
    /// Seconds between attempts to reach the job declarator again while
    /// mining the pool's own jobs.
    #[serde(default = "default::u64::<30>")]
    pub jds_retry_secs: u64,
}

fn default_user() -> String {
    "hashpool-jd-client".into()
}

impl Validate for JdClientConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_listen_address("listen_address", &self.listen_address)?;
        check_authority_key_pair(&self.authority_public_key, &self.authority_secret_key)?;
        for (field, address) in [
            ("tp_address", &self.tp_address),
            ("pool_address", &self.pool_address),
            ("jds_address", &self.jds_address),
        ] {
            check_host_port(field, address)?;
        }
        if self.cert_validity_sec == 0 {
            return Err(ConfigError::new("cert_validity_sec", "must be at least 1"));
        }
        if self.jds_retry_secs == 0 {
            return Err(ConfigError::new("jds_retry_secs", "must be at least 1"));
        }
        if self.user_identifier.len() > 255 {
            return Err(ConfigError::new("user_identifier", "at most 255 bytes"));
        }
        let network = self.network;
        refuse_devnet_key(
            network,
            "authority_secret_key",
            &self.authority_secret_key.into(),
        )?;
        refuse_devnet_key(
            network,
            "tp_authority_public_key",
            &self.tp_authority_public_key,
        )?;
        refuse_devnet_key(
            network,
            "pool_authority_public_key",
            &self.pool_authority_public_key,
        )
    }
}

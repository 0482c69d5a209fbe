//! `translator --config config/translator.toml`: every setting of the translator.

use std::net::SocketAddr;
use std::path::PathBuf;

use roles_common::network::{refuse_devnet_key, refuse_devnet_mnemonic, Network};
use roles_common::stats_publisher::StatsSettings;
use roles_common::{default, ConfigError, Validate};
use serde::Deserialize;
use stratum_apps::key_utils::Secp256k1PublicKey;

/// Hours a quote done with stays on record unless configured otherwise.
pub const DEFAULT_KEEP_QUOTES_HOURS: u64 = 24;

/// One pool the translator can connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of the pool's SV2 mining listener.
    pub address: String,
    /// The pool's Noise authority public key (base58), pinned.
    pub authority_public_key: Secp256k1PublicKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslatorConfig {
    /// The network this role serves; the devnet's published keys and
    /// mnemonics are refused on any other (default mainnet).
    #[serde(default)]
    pub network: Network,
    /// Where SV1 miners connect.
    #[serde(default = "default::every_interface::<SocketAddr, 34255>")]
    pub listen_address: SocketAddr,
    /// Pools, tried in order; on loss the next one is tried (failover).
    pub upstreams: Vec<UpstreamConfig>,
    /// Cashu HTTP URL of the pool's mint.
    #[serde(default = "default_mint_url")]
    pub mint_url: String,
    /// Directory of the wallet database and the quote records (created if missing).
    pub data_dir: PathBuf,
    /// BIP-39 mnemonic of the wallet (proofs and the wallet's own locking key
    /// derive from it). Keep it secret.
    pub mnemonic: String,
    /// One SV2 channel for all miners (true), with the wallet's key, or one
    /// channel per miner (false, the default): per-miner locking keys and
    /// per-miner vardiff need per-miner channels.
    #[serde(default)]
    pub aggregate_channels: bool,
    /// Hash rate (hashes/s) a new miner's channel is opened with; vardiff
    /// corrects it from the shares the miner sends.
    #[serde(default = "default_nominal_hashrate")]
    pub nominal_hashrate: f32,
    /// Shares per minute vardiff aims at, per miner.
    #[serde(default = "default_shares_per_minute")]
    pub shares_per_minute: f32,
    /// Seconds between vardiff checks (0 = off: the pool's target only).
    /// The estimate follows every share; a check asks the pool for a new
    /// rate (UpdateChannel) when it left the band around the miner's
    /// difficulty, so a flood or a stall is acted on within seconds.
    #[serde(default = "default::u64::<1>")]
    pub vardiff_interval_secs: u64,
    /// Bytes of extranonce2 the SV1 miners roll (2..=8).
    #[serde(default = "default::u8::<4>")]
    pub extranonce2_size: u8,
    /// Longest SV1 line accepted; a longer one disconnects that miner.
    #[serde(default = "default::usize::<{ 16 * 1024 }>")]
    pub max_line_bytes: usize,
    /// Miners connected at once at most.
    #[serde(default = "default::usize::<10_000>")]
    pub max_miners: usize,
    /// Miners connected at once from one IP address at most (a farm behind
    /// one NAT is one address, as is an IPv6 /64).
    #[serde(default = "default::usize::<10_000>")]
    pub max_miners_per_ip: usize,
    /// Seconds a miner may send nothing (no share, no request) before it is
    /// closed, with its pool channel.
    #[serde(default = "default::u64::<900>")]
    pub miner_idle_timeout_secs: u64,
    /// Seconds a miner may take to take one line before it is closed.
    #[serde(default = "default::u64::<30>")]
    pub miner_write_timeout_secs: u64,
    /// Seconds without a new job after which the miner gets a fresh ntime (keepalive).
    #[serde(default = "default::u64::<60>")]
    pub keepalive_secs: u64,
    /// Answer a miner's share only once the pool answered it (true, the
    /// default: the truth, and what the pool's `defer` mode needs), or as
    /// soon as the channel target accepts it (false: for pools that batch
    /// their SubmitShares.Success; their refusals are then only logged).
    #[serde(default = "default::bool::<true>")]
    pub wait_for_pool: bool,
    /// Most quotes minted in one NUT-29 batch (the mint's own limit, if
    /// lower, wins).
    #[serde(default = "default::usize::<250>")]
    pub mint_batch_size: usize,
    /// Milliseconds the minter waits, once told of a new quote, for more to
    /// mint in the same batch (0: it mints at once). Fewer, fuller batches
    /// cost the mint less for the same quotes.
    #[serde(default = "default::u64::<200>")]
    pub mint_wait_ms: u64,
    /// Seconds between retries of quotes the mint did not answer.
    #[serde(default = "default::u64::<10>")]
    pub mint_retry_secs: u64,
    /// Seconds one request to the mint may take; then it counts as
    /// unanswered (a batch that may still be minted is sent again as it
    /// was, never with other outputs).
    #[serde(default = "default::u64::<30>")]
    pub mint_timeout_secs: u64,
    /// Hours the record of a quote done with (minted, or a miner's own) is
    /// kept in quotes.sqlite; then it is deleted (a pending quote never is).
    #[serde(default = "default::u64::<DEFAULT_KEEP_QUOTES_HOURS>")]
    pub keep_quotes_hours: u64,
    /// The proxy-stats service: without it the translator publishes no stats.
    #[serde(default)]
    pub stats: Option<StatsSettings>,
}

fn default_mint_url() -> String {
    "http://127.0.0.1:3338".into()
}
fn default_nominal_hashrate() -> f32 {
    1_000_000.0
}
fn default_shares_per_minute() -> f32 {
    6.0
}

impl Validate for TranslatorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::new("upstreams", "at least one pool is needed"));
        }
        refuse_devnet_mnemonic(self.network, "mnemonic", &self.mnemonic)?;
        for (i, u) in self.upstreams.iter().enumerate() {
            refuse_devnet_key(
                self.network,
                &format!("upstreams[{i}].authority_public_key"),
                &u.authority_public_key,
            )?;
            roles_common::check_host_port(&format!("upstreams[{i}].address"), &u.address)?;
        }
        if !(self.mint_url.starts_with("http://") || self.mint_url.starts_with("https://")) {
            return Err(ConfigError::new(
                "mint_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.mint_url.parse::<cdk::mint_url::MintUrl>().is_err() {
            return Err(ConfigError::new("mint_url", "not a valid URL"));
        }
        if bip39::Mnemonic::parse(&self.mnemonic).is_err() {
            return Err(ConfigError::new("mnemonic", "not a valid BIP-39 mnemonic"));
        }
        if !(self.nominal_hashrate.is_finite() && self.nominal_hashrate > 0.0) {
            return Err(ConfigError::new("nominal_hashrate", "must be > 0"));
        }
        if !(self.shares_per_minute.is_finite() && self.shares_per_minute > 0.0) {
            return Err(ConfigError::new("shares_per_minute", "must be > 0"));
        }
        if !(2..=8).contains(&self.extranonce2_size) {
            return Err(ConfigError::new("extranonce2_size", "must be 2..=8"));
        }
        if self.max_line_bytes < 512 {
            return Err(ConfigError::new("max_line_bytes", "must be at least 512"));
        }
        for (field, value) in [
            ("max_miners", self.max_miners as u64),
            ("max_miners_per_ip", self.max_miners_per_ip as u64),
            ("miner_idle_timeout_secs", self.miner_idle_timeout_secs),
            ("miner_write_timeout_secs", self.miner_write_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        if self.keepalive_secs == 0 {
            return Err(ConfigError::new("keepalive_secs", "must be > 0"));
        }
        if self.mint_batch_size == 0 {
            return Err(ConfigError::new("mint_batch_size", "must be > 0"));
        }
        if self.mint_retry_secs == 0 {
            return Err(ConfigError::new("mint_retry_secs", "must be > 0"));
        }
        if !(1..=3600).contains(&self.mint_timeout_secs) {
            return Err(ConfigError::new("mint_timeout_secs", "must be 1..=3600"));
        }
        if self.keep_quotes_hours == 0 {
            return Err(ConfigError::new("keep_quotes_hours", "must be at least 1"));
        }
        if let Some(stats) = &self.stats {
            stats.validate()?;
        }
        Ok(())
    }
}

/// The BIP-39 seed (empty passphrase) of a mnemonic.
pub fn seed_from_mnemonic(mnemonic: &str) -> Result<[u8; 64], String> {
    bip39::Mnemonic::parse(mnemonic)
        .map(|m| m.to_seed(""))
        .map_err(|e| e.to_string())
}

impl TranslatorConfig {
    /// The wallet's 64-byte seed.
    pub fn seed(&self) -> [u8; 64] {
        seed_from_mnemonic(&self.mnemonic).expect("validated")
    }

    /// How long one request to the mint may take.
    pub fn mint_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.mint_timeout_secs)
    }

    pub fn wallet_db_path(&self) -> PathBuf {
        self.data_dir.join("wallet.sqlite")
    }

    /// What every miner session is started with.
    pub fn session_config(&self, wallet_key: ehash::LockingKey) -> crate::miner::SessionConfig {
        crate::miner::SessionConfig {
            extranonce2_size: self.extranonce2_size as usize,
            nominal_hashrate: self.nominal_hashrate,
            shares_per_minute: self.shares_per_minute,
            wallet_key,
            keepalive_secs: self.keepalive_secs,
            // One shared channel: its target is the pool's (no per-miner vardiff).
            vardiff_secs: if self.aggregate_channels {
                0
            } else {
                self.vardiff_interval_secs
            },
            wait_for_pool: self.wait_for_pool,
        }
    }

    pub fn quotes_db_path(&self) -> PathBuf {
        self.data_dir.join("quotes.sqlite")
    }
}

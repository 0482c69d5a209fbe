//! The pool config file (`config/pool.toml`).

use std::path::PathBuf;

use ehash::pending::ShareResponseMode;

use ehash::UnitBits;
use roles_common::network::{refuse_devnet_key, Network};
use roles_common::redis_stream;
use roles_common::stats_publisher::StatsSettings;
use roles_common::{
    check_authority_key_pair, check_host_port, check_listen_address, default, ConfigError, Validate,
};
use serde::Deserialize;
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_core::bitcoin::{ScriptBuf, Target};
use stratum_core::channels_sv2::target::hash_rate_to_target;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The network this role serves; the devnet's published keys and
    /// mnemonics are refused on any other (default mainnet).
    #[serde(default)]
    pub network: Network,
    /// Where miners and translators connect (SV2 mining protocol over Noise).
    #[serde(default = "default::every_interface::<String, 34254>")]
    pub listen_address: String,
    /// The pool's Noise authority key pair (base58, as in SRI configs).
    pub authority_public_key: Secp256k1PublicKey,
    pub authority_secret_key: Secp256k1SecretKey,
    /// Validity of the Noise certificate handed to each downstream, seconds.
    #[serde(default = "default::u64::<3600>")]
    pub cert_validity_sec: u64,
    /// The template provider (devnet-tp or sv2-tp), `host:port`.
    #[serde(default = "default::this_machine::<String, 8442>")]
    pub tp_address: String,
    /// The template provider's Noise authority public key: the pool refuses
    /// any other (pinned).
    pub tp_authority_public_key: Secp256k1PublicKey,
    /// Tag written into every coinbase scriptSig (`Sv2/<tag>//`).
    #[serde(default = "default_pool_signature")]
    pub pool_signature: String,
    /// scriptPubKey (hex) that receives the block reward; the mint's
    /// `[[pools]] reward_script` for this pool must equal it.
    pub coinbase_reward_script: String,
    /// Shares per minute each channel's target aims for.
    #[serde(default = "default_shares_per_minute")]
    pub shares_per_minute: f32,
    /// Accepted shares acknowledged by one SubmitShares.Success.
    #[serde(default = "default::usize::<1>")]
    pub share_batch_size: usize,
    /// Seconds between vardiff checks of every channel; 0 turns vardiff
    /// off. A channel whose estimate left the band gets a new target and a
    /// job at it at once.
    #[serde(default = "default::u64::<1>")]
    pub vardiff_interval_secs: u64,
    /// No channel's target is easier than this difficulty (1 = 2^32
    /// expected hashes); 0 for no floor but the one a mint sets (a share
    /// worth one ehash).
    #[serde(default)]
    pub min_share_difficulty: f64,
    /// One ehash is worth 2^unit_bits expected hashes (shared with the mint).
    /// With a mint, every channel's target is worth a whole number of them.
    #[serde(default = "default::u32::<32>")]
    pub unit_bits: u32,
    /// Refuse channels whose `user_identity` does not start with a locking key.
    #[serde(default = "default::bool::<true>")]
    pub require_locking_key: bool,
    /// Most channels open at once (sizes the extranonce allocator).
    #[serde(default = "default::u32::<65_536>")]
    pub max_channels: u32,
    /// Most channels one connection may have open (a translator in
    /// aggregate mode needs one; otherwise one per miner behind it).
    #[serde(default = "default::u32::<10_000>")]
    pub max_channels_per_connection: u32,
    /// Most channels the connections from one IP address (an IPv6 /64
    /// counts as one) may have open together, so that one address cannot
    /// hold every place of `max_channels`.
    #[serde(default = "default::u32::<16_384>")]
    pub max_channels_per_ip: u32,
    /// Most downstream connections at once, and from one IP address (an
    /// IPv6 /64 counts as one).
    #[serde(default = "default::usize::<10_000>")]
    pub max_connections: usize,
    #[serde(default = "default::usize::<1_000>")]
    pub max_connections_per_ip: usize,
    /// Seconds a connection may go with no channel open and silent.
    #[serde(default = "default::u64::<600>")]
    pub idle_timeout_secs: u64,
    /// Seconds a channel may go without an accepted share before the pool
    /// closes it, freeing its place for another miner; 0 = never.
    #[serde(default = "default::u64::<600>")]
    pub idle_channel_timeout_secs: u64,
    /// Seconds a downstream may take to take one message before it is closed.
    #[serde(default = "default::u64::<30>")]
    pub write_timeout_secs: u64,
    /// Full extranonce length in bytes (prefix given by the pool + rollable part).
    #[serde(default = "default::u8::<16>")]
    pub extranonce_len: u8,
    /// Seconds between "pool stats" log lines (shares, blocks, channels); 0 = never.
    #[serde(default = "default::u64::<60>")]
    pub stats_log_interval_secs: u64,
    /// Where the pool keeps its outbox of quote requests and undelivered
    /// notifications across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The mint: with it, every accepted share becomes an ehash quote for the
    /// channel's locking key. Without it the pool mines and pays nothing.
    #[serde(default)]
    pub mint: Option<MintSettings>,
    /// The pool-stats service: without it the pool publishes no stats.
    #[serde(default)]
    pub stats: Option<StatsSettings>,
    /// The job declarator: with it, job declaration clients declare their
    /// own templates here and set them as custom jobs on their channels
    /// (REQUIRES_WORK_SELECTION). Without it such clients are refused.
    #[serde(default)]
    pub jds: Option<JdsSettings>,
}

/// The `[jds]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JdsSettings {
    /// Where job declaration clients connect (SV2 job declaration over
    /// Noise, the pool's authority key).
    pub listen_address: String,
    /// Whether clients set up without DECLARE_TX_DATA may mine: they set
    /// their tokens on channels directly, and the pool never sees their
    /// transactions.
    pub allow_coinbase_only: bool,
    /// Most job declaration clients at once, and from one IP address: each
    /// may send frames of megabytes (a block's transactions), so fewer than
    /// mining connections, and counted apart from them.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Custom jobs with headers of their own the pool keeps for its chain
    /// tip, over every work-selecting channel, closed ones too (under 100
    /// bytes each). Past it, new ones are refused
    /// `too-many-jobs-on-this-tip` until the tip moves, but for a
    /// channel's first on a tip (up to `max_channels` more). Those of the
    /// two tips before are kept too (a reorg can bring one back).
    pub max_custom_jobs: usize,
    /// Of those, the most the mining connections of one peer address may
    /// set on a tip, over their channels (closed ones too), so one client
    /// cannot take the room of the others; up to
    /// `max_channels_per_connection` more for channels' first jobs.
    pub max_custom_jobs_per_address: usize,
}

impl Default for JdsSettings {
    fn default() -> Self {
        Self {
            listen_address: default::every_interface::<String, 34264>(),
            allow_coinbase_only: true,
            max_connections: 256,
            max_connections_per_ip: 16,
            max_custom_jobs: 1_000_000,
            max_custom_jobs_per_address: 100_000,
        }
    }
}

/// The `[mint]` table: the link to the mint and how shares are answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintSettings {
    /// How quote requests reach the mint: `noise`, the mint's pool link at
    /// `address` (default); or `redis`, Redis Streams at `redis_url`, read
    /// by every process of a mint cluster.
    #[serde(default)]
    pub transport: MintTransport,
    /// With `transport = "redis"`: `redis://[user:password@]host:port[/db]`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// With `transport = "redis"`: the prefix of the deployment's keys, the
    /// mints' `redis.prefix`.
    #[serde(default = "redis_stream::default_prefix")]
    pub redis_prefix: String,
    /// host:port of the mint's pool link.
    #[serde(default = "default::this_machine::<String, 34260>")]
    pub address: String,
    /// The mint's Noise authority public key, pinned.
    pub authority_public_key: Secp256k1PublicKey,
    /// The pool's identity key; its public half must be in the mint's
    /// `allowed_pool_keys`.
    pub identity_secret_key: Secp256k1SecretKey,
    /// `annotate`: SubmitSharesSuccess as soon as the share is journaled,
    /// MintQuoteNotification (0xC0) when its quote exists. `defer`:
    /// SubmitSharesSuccess only once the quote exists, `mint-timeout` /
    /// `mint-quote-failed` errors otherwise.
    #[serde(default = "default_share_response_mode")]
    pub share_response_mode: String,
    /// Seconds without the mint's answer before a request is sent again
    /// (annotate) or the share fails with `mint-timeout` (defer).
    #[serde(default = "default::u64::<30>")]
    pub timeout_secs: u64,
    /// Shares waiting for the mint at most. When full: defer mode answers
    /// new shares `mint-queue-full`; annotate mode withholds their success
    /// until there is room (backpressure), and refuses past twice as many.
    #[serde(default = "default::usize::<100_000>")]
    pub pending_capacity: usize,
    /// Notifications kept per locking key / in total while no channel with
    /// that key is open.
    #[serde(default = "default::usize::<10_000>")]
    pub undelivered_per_key: usize,
    #[serde(default = "default::usize::<1_000_000>")]
    pub undelivered_total: usize,
    /// Seconds between MintStatsRequests.
    #[serde(default = "default::u64::<10>")]
    pub stats_interval_secs: u64,
}

/// Off the devnet, the block reward goes to a standard payment script only:
/// one like `51` (OP_TRUE) lets anyone take it, `6a…` (OP_RETURN) burns it.
fn refuse_unowned_script(network: Network, script: &ScriptBuf) -> Result<(), ConfigError> {
    let standard = script.is_p2pkh()
        || script.is_p2sh()
        || script.is_p2wpkh()
        || script.is_p2wsh()
        || script.is_p2tr();
    if standard || network == Network::Devnet {
        return Ok(());
    }
    Err(ConfigError::new(
        "coinbase_reward_script",
        format!(
            "`{}` is not a P2PKH, P2SH, P2WPKH, P2WSH or P2TR script, so the block reward \
             would not be yours; refused on network \"{network}\" (use your own address's \
             script, or set network = \"devnet\")",
            hex::encode(script.as_bytes())
        ),
    ))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MintTransport {
    #[default]
    Noise,
    Redis,
}

impl MintSettings {
    /// How the link reaches the mint.
    pub fn link_transport(&self) -> crate::ehash::mint_link::Transport {
        use crate::ehash::mint_link::Transport;
        match self.transport {
            MintTransport::Noise => Transport::Noise {
                address: self.address.clone(),
            },
            MintTransport::Redis => Transport::Redis {
                url: self.redis_url.clone().expect("validated"),
                prefix: self.redis_prefix.clone(),
            },
        }
    }

    pub fn mode(&self) -> ShareResponseMode {
        self.share_response_mode.parse().expect("validated")
    }
}

fn default_state_dir() -> PathBuf {
    "state/pool".into()
}
fn default_share_response_mode() -> String {
    "annotate".into()
}
fn default_pool_signature() -> String {
    "hashpool".into()
}
fn default_shares_per_minute() -> f32 {
    6.0
}

impl PoolConfig {
    /// The devnet's published keys start only on the devnet.
    fn refuse_devnet_keys(&self) -> Result<(), ConfigError> {
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
        if let Some(mint) = &self.mint {
            refuse_devnet_key(
                network,
                "mint.identity_secret_key",
                &mint.identity_secret_key.into(),
            )?;
            refuse_devnet_key(
                network,
                "mint.authority_public_key",
                &mint.authority_public_key,
            )?;
        }
        Ok(())
    }

    pub fn unit_bits(&self) -> UnitBits {
        UnitBits::new(self.unit_bits).expect("validated")
    }

    /// The easiest target any channel may get: the harder of
    /// `min_share_difficulty` and, with a mint, one ehash's worth.
    pub fn easiest_target(&self) -> Option<Target> {
        let by_difficulty = (self.min_share_difficulty > 0.0).then(|| {
            // At 60 shares a minute a share takes `hashrate` hashes.
            hash_rate_to_target(self.min_share_difficulty * 2f64.powi(32), 60.0)
                .expect("validated: finite and positive")
        });
        let by_mint = self
            .mint
            .as_ref()
            .map(|_| ehash::easiest_target(self.unit_bits()));
        by_difficulty.into_iter().chain(by_mint).min()
    }

    /// When channels nobody mines on are closed (`idle_channel_timeout_secs`).
    pub fn idle_channels(&self) -> Option<crate::mining::IdleChannels> {
        crate::mining::IdleChannels::for_timeout(self.idle_channel_timeout_secs)
    }

    pub fn reward_script(&self) -> ScriptBuf {
        ScriptBuf::from_bytes(hex::decode(&self.coinbase_reward_script).expect("validated"))
    }
}

impl PoolConfig {
    /// The addresses and the Noise keys.
    fn validate_links(&self) -> Result<(), ConfigError> {
        check_listen_address("listen_address", &self.listen_address)?;
        check_host_port("tp_address", &self.tp_address)?;
        check_authority_key_pair(&self.authority_public_key, &self.authority_secret_key)?;
        if let Some(jds) = &self.jds {
            check_listen_address("jds.listen_address", &jds.listen_address)?;
            for (field, value) in [
                ("jds.max_connections", jds.max_connections),
                ("jds.max_connections_per_ip", jds.max_connections_per_ip),
                ("jds.max_custom_jobs", jds.max_custom_jobs),
                (
                    "jds.max_custom_jobs_per_address",
                    jds.max_custom_jobs_per_address,
                ),
            ] {
                if value == 0 {
                    return Err(ConfigError::new(field, "must be at least 1"));
                }
            }
        }
        if self.cert_validity_sec == 0 {
            return Err(ConfigError::new("cert_validity_sec", "must be at least 1"));
        }
        Ok(())
    }

    /// Coinbase, channels and share accounting.
    fn validate_mining(&self) -> Result<(), ConfigError> {
        match hex::decode(&self.coinbase_reward_script) {
            Ok(s) if !s.is_empty() && s.len() <= 100 => {
                refuse_unowned_script(self.network, &ScriptBuf::from_bytes(s))?
            }
            Ok(_) => {
                return Err(ConfigError::new(
                    "coinbase_reward_script",
                    "must be 1 to 100 bytes",
                ))
            }
            Err(e) => {
                return Err(ConfigError::new(
                    "coinbase_reward_script",
                    format!("not hex: {e}"),
                ))
            }
        }
        if self.pool_signature.len() > 32 {
            return Err(ConfigError::new("pool_signature", "at most 32 bytes"));
        }
        if !(self.shares_per_minute.is_finite() && self.shares_per_minute > 0.0) {
            return Err(ConfigError::new(
                "shares_per_minute",
                "must be a positive number",
            ));
        }
        if !(self.min_share_difficulty.is_finite() && self.min_share_difficulty >= 0.0) {
            return Err(ConfigError::new(
                "min_share_difficulty",
                "must be a number of 0 or more",
            ));
        }
        if self.share_batch_size == 0 {
            return Err(ConfigError::new("share_batch_size", "must be at least 1"));
        }
        UnitBits::new(self.unit_bits).map_err(|e| ConfigError::new("unit_bits", e.to_string()))?;
        for (field, value) in [
            ("max_channels", self.max_channels as u64),
            (
                "max_channels_per_connection",
                self.max_channels_per_connection as u64,
            ),
            ("max_channels_per_ip", self.max_channels_per_ip as u64),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        // A miner mining at the aimed rate goes 20 share intervals without
        // a share about once in 500 million times.
        let shortest = (20.0 * 60.0 / self.shares_per_minute as f64).ceil() as u64;
        if (1..shortest).contains(&self.idle_channel_timeout_secs) {
            return Err(ConfigError::new(
                "idle_channel_timeout_secs",
                format!(
                    "must be 0 (never) or at least {shortest}: 20 share intervals at \
                     shares_per_minute {}, or channels that mine would be closed",
                    self.shares_per_minute
                ),
            ));
        }
        if !(8..=32).contains(&self.extranonce_len) {
            return Err(ConfigError::new("extranonce_len", "must be 8 to 32"));
        }
        Ok(())
    }
}

impl MintSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_host_port("mint.address", &self.address)?;
        if self.transport == MintTransport::Redis {
            match &self.redis_url {
                Some(url) => redis_stream::check_url(url)
                    .map_err(|e| ConfigError::new("mint.redis_url", e))?,
                None => {
                    return Err(ConfigError::new(
                        "mint.redis_url",
                        "is required with transport = \"redis\"",
                    ))
                }
            }
            if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    "mint.redis_prefix",
                    "must be non-empty, without spaces",
                ));
            }
        }
        self.share_response_mode
            .parse::<ShareResponseMode>()
            .map_err(|e| ConfigError::new("mint.share_response_mode", e))?;
        for (field, value) in [
            ("mint.timeout_secs", self.timeout_secs as usize),
            ("mint.pending_capacity", self.pending_capacity),
            ("mint.undelivered_per_key", self.undelivered_per_key),
            ("mint.undelivered_total", self.undelivered_total),
            (
                "mint.stats_interval_secs",
                self.stats_interval_secs as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl Validate for PoolConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.refuse_devnet_keys()?;
        self.validate_links()?;
        self.validate_mining()?;
        if let Some(mint) = &self.mint {
            mint.validate()?;
        }
        if let Some(stats) = &self.stats {
            stats.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_easiest_target_is_the_harder_of_the_difficulty_floor_and_one_ehash() {
        let mut c: PoolConfig = roles_common::testing::load_shipped("pool.toml");
        c.unit_bits = 20;
        let one_ehash = ehash::easiest_target(c.unit_bits());
        assert_eq!(c.easiest_target(), Some(one_ehash));
        // Difficulty 1: 2^32 hashes, harder than one ehash of 2^20.
        c.min_share_difficulty = 1.0;
        let floor = c.easiest_target().unwrap();
        assert!(floor < one_ehash);
        let work = ehash::work_hashes(floor);
        assert!(((1 << 32)..=(1 << 32) + 1).contains(&work), "{work}");
        // Without a mint only the difficulty floor; without either, none.
        c.mint = None;
        assert_eq!(c.easiest_target(), Some(floor));
        c.min_share_difficulty = 0.0;
        assert_eq!(c.easiest_target(), None);
        c.min_share_difficulty = f64::NAN;
        assert_eq!(
            c.validate_mining().unwrap_err().field,
            "min_share_difficulty"
        );
    }

    #[test]
    fn an_idle_channel_timeout_short_enough_to_close_mining_channels_is_refused() {
        let mut c: PoolConfig = roles_common::testing::load_shipped("pool.toml");
        assert_eq!(c.shares_per_minute, 6.0);
        for fine in [0, 200, 600] {
            c.idle_channel_timeout_secs = fine;
            assert!(c.validate_mining().is_ok(), "{fine}");
        }
        c.idle_channel_timeout_secs = 199;
        let err = c.validate_mining().unwrap_err();
        assert_eq!(err.field, "idle_channel_timeout_secs");
        assert!(err.reason.contains("at least 200"), "{err}");
    }

    #[test]
    fn mining_limits_of_zero_are_refused_by_name() {
        let c: PoolConfig = roles_common::testing::load_shipped("pool.toml");
        assert!(c.validate_mining().is_ok());
        for (field, set) in [
            (
                "max_channels_per_connection",
                (|c: &mut PoolConfig| c.max_channels_per_connection = 0) as fn(&mut PoolConfig),
            ),
            ("max_channels_per_ip", |c| c.max_channels_per_ip = 0),
            ("max_connections_per_ip", |c| c.max_connections_per_ip = 0),
        ] {
            let mut bad = c.clone();
            set(&mut bad);
            assert_eq!(bad.validate_mining().unwrap_err().field, field);
        }
    }

    #[test]
    fn job_declarator_limits_of_zero_are_refused_by_name() {
        let mut c: PoolConfig = roles_common::testing::load_shipped("pool.toml");
        c.jds = Some(JdsSettings::default());
        assert!(c.validate_links().is_ok());
        for (field, set) in [
            (
                "jds.max_connections",
                (|j: &mut JdsSettings| j.max_connections = 0) as fn(&mut JdsSettings),
            ),
            ("jds.max_connections_per_ip", |j| {
                j.max_connections_per_ip = 0
            }),
            ("jds.max_custom_jobs", |j| j.max_custom_jobs = 0),
            ("jds.max_custom_jobs_per_address", |j| {
                j.max_custom_jobs_per_address = 0
            }),
        ] {
            let mut bad = c.clone();
            set(bad.jds.as_mut().unwrap());
            assert_eq!(bad.validate_links().unwrap_err().field, field);
        }
    }

    #[test]
    fn a_reward_script_anyone_can_spend_is_refused_off_the_devnet() {
        let script = |hex: &str| ScriptBuf::from_bytes(hex::decode(hex).unwrap());
        // OP_TRUE, OP_RETURN, a bare push: not the operator's.
        for bad in ["51", "6a00", "0101"] {
            assert!(refuse_unowned_script(Network::Devnet, &script(bad)).is_ok());
            let err = refuse_unowned_script(Network::Mainnet, &script(bad)).unwrap_err();
            assert_eq!(err.field, "coinbase_reward_script");
            assert!(
                err.reason.contains(bad) && err.reason.contains("mainnet"),
                "{err}"
            );
        }
        // P2WPKH and P2TR pay their owner anywhere.
        let p2wpkh = format!("0014{}", "ab".repeat(20));
        let p2tr = format!("5120{}", "cd".repeat(32));
        for good in [p2wpkh, p2tr] {
            assert!(refuse_unowned_script(Network::Mainnet, &script(&good)).is_ok());
        }
    }
}

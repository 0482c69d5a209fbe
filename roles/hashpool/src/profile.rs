//! The devnet profile (`config/devnet.toml`): where `hashpool devnet` keeps
//! its state and which role files it reads. The role settings themselves
//! stay in the role files, so every role still runs alone from its own file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use roles_common::{load_config, ConfigError, Network, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevnetProfile {
    /// Every role's state lives under this directory (one sub-directory per
    /// role); a second run continues from it. Relative to the working directory.
    pub state_dir: PathBuf,
    /// Seconds between status lines.
    pub status_interval_secs: u64,
    /// The role files, relative to the profile's own directory.
    pub roles: RoleFiles,
}

impl Default for DevnetProfile {
    fn default() -> Self {
        Self {
            state_dir: "state/devnet".into(),
            status_interval_secs: 5,
            roles: RoleFiles::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleFiles {
    pub devnet_tp: PathBuf,
    pub mint: PathBuf,
    pub pool: PathBuf,
    pub translator: PathBuf,
    pub jd_client: PathBuf,
    pub miner: PathBuf,
    pub pool_stats: PathBuf,
    pub proxy_stats: PathBuf,
}

impl Default for RoleFiles {
    fn default() -> Self {
        Self {
            devnet_tp: "devnet-tp.toml".into(),
            mint: "mint.toml".into(),
            pool: "pool.toml".into(),
            translator: "translator.toml".into(),
            jd_client: "jd-client.toml".into(),
            miner: "miner.toml".into(),
            pool_stats: "pool-stats.toml".into(),
            proxy_stats: "proxy-stats.toml".into(),
        }
    }
}

impl Validate for DevnetProfile {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("state_dir", "is empty"));
        }
        if self.status_interval_secs == 0 {
            return Err(ConfigError::new(
                "status_interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Every role's config, loaded and placed under the devnet's state dir.
#[derive(Debug, Clone)]
pub struct DevnetConfigs {
    pub state_dir: PathBuf,
    pub status_interval_secs: u64,
    pub devnet_tp: devnet_tp::TpConfig,
    pub mint: mint::MintConfig,
    pub pool: pool::PoolConfig,
    pub translator: translator::TranslatorConfig,
    /// With `declared_jobs`, the translator mines through this jd-client.
    pub jd_client: jd_client::JdClientConfig,
    pub declared_jobs: bool,
    /// Mints on PostgreSQL fed by Redis Streams, two of each mint and pool.
    pub scale_out: bool,
    pub miner: miner::MinerConfig,
    pub pool_stats: pool_stats::PoolStatsConfig,
    pub proxy_stats: proxy_stats::ProxyStatsConfig,
}

/// Loads the profile and the role files it names (each with the same
/// environment overrides as when the role runs alone), refuses role files
/// meant for another network, and points every role's state into the
/// profile's state dir. Errors are one line naming the file and the field.
pub fn load(profile_path: &Path) -> Result<DevnetConfigs, String> {
    let profile: DevnetProfile = load_config(profile_path, "HASHPOOL_DEVNET")?;
    let dir = profile_path.parent().unwrap_or(Path::new("."));
    let file = |p: &Path| dir.join(p);

    let devnet_tp: devnet_tp::TpConfig = load_config(&file(&profile.roles.devnet_tp), "DEVNET_TP")?;
    let mint: mint::MintConfig = load_config(&file(&profile.roles.mint), "MINT")?;
    let pool: pool::PoolConfig = load_config(&file(&profile.roles.pool), "POOL")?;
    let translator: translator::TranslatorConfig =
        load_config(&file(&profile.roles.translator), "TRANSLATOR")?;
    let jd_client: jd_client::JdClientConfig =
        load_config(&file(&profile.roles.jd_client), "JD_CLIENT")?;
    let miner: miner::MinerConfig = load_config(&file(&profile.roles.miner), "MINER")?;
    let pool_stats: pool_stats::PoolStatsConfig =
        load_config(&file(&profile.roles.pool_stats), "POOL_STATS")?;
    let proxy_stats: proxy_stats::ProxyStatsConfig =
        load_config(&file(&profile.roles.proxy_stats), "PROXY_STATS")?;

    for (path, network) in [
        (&profile.roles.mint, mint.network),
        (&profile.roles.pool, pool.network),
        (&profile.roles.translator, translator.network),
        (&profile.roles.jd_client, jd_client.network),
    ] {
        if network != Network::Devnet {
            return Err(format!(
                "{}: `network`: is \"{network}\"; hashpool devnet runs only role files with network = \"devnet\"",
                file(path).display()
            ));
        }
    }

    let mut configs = DevnetConfigs {
        state_dir: PathBuf::new(),
        status_interval_secs: profile.status_interval_secs,
        devnet_tp,
        mint,
        pool,
        translator,
        jd_client,
        declared_jobs: false,
        scale_out: false,
        miner,
        pool_stats,
        proxy_stats,
    };
    configs.move_state_to(&profile.state_dir);
    Ok(configs)
}

impl DevnetConfigs {
    /// Puts every role's state in a sub-directory of `state_dir`.
    pub fn move_state_to(&mut self, state_dir: &Path) {
        self.state_dir = state_dir.to_path_buf();
        self.devnet_tp.state_dir = state_dir.join("devnet-tp");
        if matches!(
            self.mint.database_location(),
            mint::config::DatabaseLocation::Sqlite(_)
        ) {
            self.mint.database = state_dir
                .join("mint")
                .join("mint.sqlite")
                .display()
                .to_string();
        }
        self.pool.state_dir = state_dir.join("pool");
        self.translator.data_dir = state_dir.join("translator");
        self.pool_stats.data_dir = state_dir.join("pool-stats");
        self.proxy_stats.data_dir = state_dir.join("proxy-stats");
    }

    /// The declared-jobs devnet: the pool runs its job declarator (where
    /// jd-client's file says it listens) and the translator mines through
    /// jd-client.
    pub fn use_declared_jobs(&mut self) {
        self.declared_jobs = true;
        self.pool.jds = Some(pool::config::JdsSettings {
            listen_address: self.jd_client.jds_address.clone(),
            ..Default::default()
        });
    }

    /// The scale-out devnet. Its mint database is temporary, so it starts
    /// from nothing every run: its state (chain, outboxes, wallet, log) goes
    /// to `<state_dir>-scale-out`, never mixed with the state of the
    /// single-mint devnet, and emptied by [`crate::state_dir::take_state_dir`]
    /// once this process holds it.
    pub fn use_scale_out(&mut self) {
        self.scale_out = true;
        let mut dir = self.state_dir.clone().into_os_string();
        dir.push("-scale-out");
        self.move_state_to(&PathBuf::from(dir));
    }

    /// Every listener on 127.0.0.1 with a port the system picks: for tests,
    /// and for a devnet next to another one.
    pub fn use_ephemeral_ports(&mut self) {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid");
        self.devnet_tp.listen_address = any.to_string();
        self.mint.http_listen = any;
        self.mint.link_listen = any;
        self.pool.listen_address = any.to_string();
        if let Some(jds) = self.pool.jds.as_mut() {
            jds.listen_address = any.to_string();
        }
        self.jd_client.listen_address = any.to_string();
        self.translator.listen_address = any;
        for stats in [
            (
                &mut self.pool_stats.ingest_listen,
                &mut self.pool_stats.http_listen,
            ),
            (
                &mut self.proxy_stats.ingest_listen,
                &mut self.proxy_stats.http_listen,
            ),
        ] {
            *stats.0 = any;
            *stats.1 = any;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devnet.toml")
    }

    #[test]
    fn the_shipped_profile_loads_and_keeps_all_state_under_its_dir() {
        let c = load(&shipped()).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("state/devnet"));
        assert!(c.devnet_tp.state_dir.starts_with(&c.state_dir));
        assert!(Path::new(&c.mint.database).starts_with(&c.state_dir));
        assert!(c.pool.state_dir.starts_with(&c.state_dir));
        assert!(c.translator.data_dir.starts_with(&c.state_dir));
        assert!(c.pool_stats.data_dir.starts_with(&c.state_dir));
        assert!(c.proxy_stats.data_dir.starts_with(&c.state_dir));
        assert_eq!(c.pool.unit_bits, c.mint.unit_bits);
    }

    #[test]
    fn a_role_file_for_another_network_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        for f in [
            "devnet-tp.toml",
            "mint.toml",
            "translator.toml",
            "jd-client.toml",
            "miner.toml",
        ] {
            std::fs::copy(config.join(f), dir.path().join(f)).unwrap();
        }
        let pool = std::fs::read_to_string(config.join("pool.toml")).unwrap();
        let pool = pool.replace("network = \"devnet\"", "network = \"mainnet\"");
        std::fs::write(dir.path().join("pool.toml"), pool).unwrap();
        std::fs::write(dir.path().join("devnet.toml"), "").unwrap();
        let err = load(&dir.path().join("devnet.toml")).unwrap_err();
        // The pool itself refuses its devnet keys on mainnet.
        assert!(err.contains("pool.toml"), "{err}");
        assert!(err.contains("authority_secret_key"), "{err}");
        assert!(err.contains("mainnet"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

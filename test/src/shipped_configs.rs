//! The shipped config files (`config/*.toml`), rewritten for a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::free_address;
use crate::role_child::{until_listening, RoleChild};

/// The shipped config files of devnet-tp, mint, pool and translator,
/// rewritten for a test: fixed free ports on 127.0.0.1 (a killed role comes
/// back on the same address), state under one directory, ~20 k hashes per
/// share (vardiff off) worth ~19 ehash (2^10 hashes each), the translator's
/// stats to `translator_stats` if given, the pool's nowhere.
pub struct ShippedConfigs {
    pub tp: PathBuf,
    pub mint: PathBuf,
    pub pool: PathBuf,
    pub translator: PathBuf,
    pub tp_addr: SocketAddr,
    pub mint_http: SocketAddr,
    pub mint_link: SocketAddr,
    pub pool_addr: SocketAddr,
    pub translator_addr: SocketAddr,
}

impl ShippedConfigs {
    pub fn write(dir: &Path, nbits: u32, translator_stats: Option<&str>) -> Self {
        let [tp_addr, mint_http, mint_link, pool_addr, translator_addr] =
            [(); 5].map(|_| free_address());
        let state = |name: &str| dir.join(name).display().to_string();

        let mut c = shipped_config("devnet-tp.toml");
        set_config(&mut c, "listen_address", tp_addr.to_string());
        set_config(&mut c, "state_dir", state("tp"));
        set_config(&mut c, "nbits", nbits as i64);
        let tp = write_config(dir, "devnet-tp.toml", &c);

        let database = dir.join("mint/mint.sqlite");
        let mint = write_mint_config(dir, mint_http, mint_link, &database, 10, Some(tp_addr));

        let mut c = shipped_config("pool.toml");
        set_config(&mut c, "listen_address", pool_addr.to_string());
        set_config(&mut c, "tp_address", tp_addr.to_string());
        set_config(&mut c, "state_dir", state("pool"));
        set_config(&mut c, "unit_bits", 10);
        set_config(&mut c, "vardiff_interval_secs", 0);
        set_config(&mut c, "mint.address", mint_link.to_string());
        set_config(&mut c, "mint.timeout_secs", 2);
        set_config(&mut c, "mint.stats_interval_secs", 1);
        c.remove("stats");
        let pool = write_config(dir, "pool.toml", &c);

        let mut c = shipped_config("translator.toml");
        set_config(&mut c, "listen_address", translator_addr.to_string());
        set_config(&mut c, "mint_url", format!("http://{mint_http}"));
        set_config(&mut c, "data_dir", state("translator"));
        set_config(&mut c, "nominal_hashrate", 2000.0);
        set_config(&mut c, "vardiff_interval_secs", 0);
        set_config(&mut c, "mint_retry_secs", 1);
        c["upstreams"].as_array_mut().expect("upstreams")[0]
            .as_table_mut()
            .expect("an upstream")
            .insert("address".into(), pool_addr.to_string().into());
        match translator_stats {
            Some(addr) => set_config(&mut c, "stats.address", addr),
            None => {
                c.remove("stats");
            }
        }
        let translator = write_config(dir, "translator.toml", &c);
        Self {
            tp,
            mint,
            pool,
            translator,
            tp_addr,
            mint_http,
            mint_link,
            pool_addr,
            translator_addr,
        }
    }
}

/// jd-client between the translator and the pool of `ShippedConfigs`:
/// the pool runs its job declarator, jd-client declares templates of the
/// same devnet-tp, and the translator mines through it.
pub struct DeclaredJobs {
    pub jd_client: PathBuf,
    pub jd_client_addr: SocketAddr,
}

impl ShippedConfigs {
    /// Rewrites the files so that a new miner's share takes about `hashes`
    /// (the translator's nominal hash rate at the shipped 6 shares a
    /// minute, vardiff off) and is still worth 16 to 31 ehash (the pool's
    /// and the mint's unit_bits): cheaper shares let a load generator on
    /// the same cores send more of them.
    pub fn with_hashes_per_share(&self, hashes: f64) {
        let dir = self.translator.parent().expect("a config directory");
        let mut translator = read_config(&self.translator);
        let per_minute = translator["shares_per_minute"]
            .as_float()
            .expect("shares_per_minute");
        set_config(
            &mut translator,
            "nominal_hashrate",
            hashes * per_minute / 60.0,
        );
        write_config(dir, "translator.toml", &translator);

        let unit_bits = (hashes.max(1.0).log2().floor() as i64 - 4).max(0);
        for (path, name) in [(&self.pool, "pool.toml"), (&self.mint, "mint.toml")] {
            let mut c = read_config(path);
            set_config(&mut c, "unit_bits", unit_bits);
            write_config(dir, name, &c);
        }
    }

    /// Puts back the shipped pool's timings with the mint, which the tests
    /// shorten to see a lost answer or a new total within seconds: a
    /// benchmark measures what operators run.
    pub fn with_shipped_mint_timings(&self) {
        let shipped = shipped_config("pool.toml");
        let mut pool = read_config(&self.pool);
        for key in ["timeout_secs", "stats_interval_secs"] {
            let value = shipped["mint"][key].clone();
            set_config(&mut pool, &format!("mint.{key}"), value);
        }
        let dir = self.pool.parent().expect("a config directory");
        write_config(dir, "pool.toml", &pool);
    }

    /// Rewrites the pool's and the translator's files for declared jobs and
    /// writes jd-client's.
    pub fn with_declared_jobs(&self, dir: &Path) -> DeclaredJobs {
        let (jds_addr, jd_client_addr) = (free_address(), free_address());
        let mut pool = read_config(&self.pool);
        let mut jds = toml::Table::new();
        jds.insert("listen_address".into(), jds_addr.to_string().into());
        pool.insert("jds".into(), jds.into());
        write_config(dir, "pool.toml", &pool);

        let mut c = shipped_config("jd-client.toml");
        set_config(&mut c, "listen_address", jd_client_addr.to_string());
        set_config(&mut c, "tp_address", self.tp_addr.to_string());
        set_config(&mut c, "pool_address", self.pool_addr.to_string());
        set_config(&mut c, "jds_address", jds_addr.to_string());
        let key = c["authority_public_key"].clone();
        let jd_client = write_config(dir, "jd-client.toml", &c);

        let mut translator = read_config(&self.translator);
        let upstream = translator["upstreams"].as_array_mut().expect("upstreams")[0]
            .as_table_mut()
            .expect("an upstream");
        upstream.insert("address".into(), jd_client_addr.to_string().into());
        upstream.insert("authority_public_key".into(), key);
        write_config(dir, "translator.toml", &translator);
        DeclaredJobs {
            jd_client,
            jd_client_addr,
        }
    }
}

fn read_config(path: &Path) -> toml::Table {
    std::fs::read_to_string(path)
        .expect("config")
        .parse()
        .expect("valid TOML")
}

/// The shipped mint config alone (for a mint child process): free ports,
/// its database in `dir`, one ehash per hash (unit_bits 0, as the mint's
/// test shares are quoted), and no chain view (those shares are mined on
/// made-up tips).
pub struct MintFiles {
    pub config: PathBuf,
    pub http: SocketAddr,
    pub link: SocketAddr,
}

impl MintFiles {
    pub fn write(dir: &Path) -> Self {
        let (http, link) = (free_address(), free_address());
        let config = write_mint_config(dir, http, link, &dir.join("mint.sqlite"), 0, None);
        Self { config, http, link }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A mint process on these files, once both its listeners are up.
    pub async fn spawn(&self) -> RoleChild {
        let mint = RoleChild::spawn("mint", &self.config);
        until_listening(self.link, "mint link").await;
        until_listening(self.http, "mint http").await;
        mint
    }
}

/// The shipped mint config on these addresses, database and unit, following
/// the chain of the devnet-tp at `tp` (none without), written to
/// `dir/mint.toml`.
fn write_mint_config(
    dir: &Path,
    http: SocketAddr,
    link: SocketAddr,
    database: &Path,
    unit_bits: i64,
    tp: Option<SocketAddr>,
) -> PathBuf {
    let mut c = shipped_config("mint.toml");
    match tp {
        Some(tp) => set_config(&mut c, "chain.tp_address", tp.to_string()),
        None => {
            c.remove("chain");
        }
    }
    set_config(&mut c, "http_listen", http.to_string());
    set_config(&mut c, "link_listen", link.to_string());
    set_config(&mut c, "database", database.display().to_string());
    set_config(&mut c, "unit_bits", unit_bits);
    write_config(dir, "mint.toml", &c)
}

/// A shipped config file (`config/<name>`) as a TOML table to adjust.
pub fn shipped_config(name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    std::fs::read_to_string(path)
        .expect("shipped config")
        .parse()
        .expect("valid TOML")
}

/// Sets `key` ("a" or "table.a") in a config table.
pub fn set_config(table: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    match key.split_once('.') {
        Some((outer, inner)) => {
            let outer = table
                .get_mut(outer)
                .and_then(|v| v.as_table_mut())
                .unwrap_or_else(|| panic!("no table {outer}"));
            outer.insert(inner.to_string(), value.into());
        }
        None => {
            table.insert(key.to_string(), value.into());
        }
    }
}

pub fn write_config(dir: &Path, name: &str, table: &toml::Table) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(table).expect("TOML")).expect("config written");
    path
}

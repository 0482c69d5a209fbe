//! `hashpool devnet`: template provider, mint, pool, translator and a CPU
//! miner in one process, wired to each other's bound addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use roles_common::stats_publisher::{PublisherSecret, StatsSettings};
use roles_common::CancellationToken;
use tracing::info;

use crate::profile::DevnetConfigs;
use crate::scale_out;
use crate::status::{Snapshot, StatusLine};

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("state dir {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("devnet-tp: {0}")]
    Tp(#[from] devnet_tp::TpError),
    #[error("mint: {0}")]
    Mint(#[from] mint::MintError),
    #[error("pool: {0}")]
    Pool(#[from] pool::PoolError),
    #[error("translator: {0}")]
    Translator(#[from] translator::TranslatorError),
    #[error("jd-client: {0}")]
    JdClient(#[from] jd_client::JdcError),
    #[error("stats service: {0}")]
    Stats(#[from] pool_stats::PoolStatsError),
    #[error("{0}")]
    Services(String),
}

/// Where each role listens, as bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub template_provider: SocketAddr,
    pub mint_http: SocketAddr,
    pub mint_link: SocketAddr,
    pub pool: SocketAddr,
    /// The pool's job declarator and jd-client, with declared jobs.
    pub declared_jobs: Option<(SocketAddr, SocketAddr)>,
    pub translator: SocketAddr,
    pub pool_dashboard: SocketAddr,
    pub proxy_dashboard: SocketAddr,
    pub scale_out: Option<ScaleOutEndpoints>,
}

/// The second mint and pool, and the servers they share, with `--scale-out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOutEndpoints {
    pub postgres: SocketAddr,
    pub redis: String,
    pub second_mint_http: SocketAddr,
    pub second_pool: SocketAddr,
}

/// A listener bound to "every address" is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// One role: its own token, so the roles stop one by one, miners first.
struct Role<H> {
    handle: H,
    stop: CancellationToken,
}

/// Runs the devnet until `shutdown` is cancelled, printing the endpoints
/// and then a status line every `status_interval_secs` to stdout.
pub async fn run(mut c: DevnetConfigs, shutdown: CancellationToken) -> Result<(), DevnetError> {
    roles_common::private::create_dir(&c.state_dir).map_err(|source| DevnetError::StateDir {
        path: c.state_dir.display().to_string(),
        source,
    })?;
    let started = Instant::now();
    let roles = Roles::start(&mut c, &shutdown).await?;
    print!("{}", describe(&c, &roles.endpoints()));
    roles.report_status(&c, started, &shutdown).await;
    println!(
        "hashpool devnet: stopping (miner, translator, pool, mint, template provider, stats services)"
    );
    roles.stop().await;
    println!(
        "hashpool devnet: stopped; state kept in {} (the next run continues from it)",
        c.state_dir.display()
    );
    Ok(())
}

/// Every role of the devnet, running.
struct Roles {
    pool_stats: Role<pool_stats::RunningPoolStats>,
    proxy_stats: Role<proxy_stats::RunningProxyStats>,
    tp: Role<devnet_tp::TpHandle>,
    mint: Role<mint::RunningMint>,
    pool: Role<pool::PoolHandle>,
    jd_client: Option<Role<jd_client::JdcHandle>>,
    translator: Role<translator::TranslatorHandle>,
    miner: Role<miner::Miner>,
    scale_out: Option<ScaleOut>,
}

/// With `--scale-out`: a second mint instance and a second pool, and the
/// PostgreSQL and Redis the mints share.
struct ScaleOut {
    services: scale_out::Services,
    mint: Role<mint::RunningMint>,
    pool: Role<pool::PoolHandle>,
}

impl Roles {
    /// Starts the roles in dependency order, each wired to the addresses
    /// the ones before it bound.
    async fn start(
        c: &mut DevnetConfigs,
        shutdown: &CancellationToken,
    ) -> Result<Self, DevnetError> {
        let (pool_stats, proxy_stats) = start_stats_services(c).await?;
        let tp = start_role(|stop| devnet_tp::start(c.devnet_tp.clone(), stop)).await?;
        let tp_address = reachable(tp.handle.local_addr()).to_string();
        // The mint follows the devnet's chain, as the pool does.
        if let Some(chain) = c.mint.chain.as_mut() {
            chain.tp_address = tp_address.clone();
            chain.tp_authority_public_key = c.devnet_tp.authority_public_key;
        }
        let services = match c.scale_out {
            true => Some(
                scale_out::start_services(c)
                    .await
                    .map_err(DevnetError::Services)?,
            ),
            false => None,
        };
        let mint = start_role(|stop| mint::start(c.mint.clone(), stop)).await?;

        c.pool.tp_address = tp_address;
        if let Some(link) = c.pool.mint.as_mut() {
            link.address = reachable(mint.handle.link_addr).to_string();
        }
        let pool =
            start_role(|stop| pool::start(c.pool.clone(), stop, pool::Hooks::default())).await?;
        let scale_out = match services {
            Some(services) => Some(ScaleOut::start(c, services).await?),
            None => None,
        };

        // The devnet translator mines on this pool only, or through jd-client.
        let mut upstream = c.translator.upstreams[0].clone();
        upstream.address = reachable(pool.handle.local_addr()).to_string();
        let mut jd_client = None;
        if let (true, Some(jds)) = (c.declared_jobs, pool.handle.jds_addr()) {
            c.jd_client.tp_address = reachable(tp.handle.local_addr()).to_string();
            c.jd_client.tp_authority_public_key = c.devnet_tp.authority_public_key;
            c.jd_client.pool_address = upstream.address.clone();
            c.jd_client.jds_address = reachable(jds).to_string();
            c.jd_client.pool_authority_public_key = c.pool.authority_public_key;
            let jdc = start_role(|stop| jd_client::start(c.jd_client.clone(), stop)).await?;
            upstream.address = reachable(jdc.handle.local_addr()).to_string();
            upstream.authority_public_key = c.jd_client.authority_public_key;
            jd_client = Some(jdc);
        }
        c.translator.upstreams = vec![upstream];
        // The second pool is the translator's fallback.
        if let Some(second) = &scale_out {
            let mut fallback = c.translator.upstreams[0].clone();
            fallback.address = reachable(second.pool.handle.local_addr()).to_string();
            fallback.authority_public_key = c.pool.authority_public_key;
            c.translator.upstreams.push(fallback);
        }
        c.translator.mint_url = format!("http://{}", reachable(mint.handle.http_addr));
        let translator = start_role(|stop| translator::start(c.translator.clone(), stop)).await?;

        c.miner.url = reachable(translator.handle.local_addr()).to_string();
        let stop = shutdown.child_token();
        let miner = Role {
            handle: miner::start(c.miner.clone(), stop.clone()),
            stop,
        };
        Ok(Self {
            pool_stats,
            proxy_stats,
            tp,
            mint,
            pool,
            jd_client,
            translator,
            miner,
            scale_out,
        })
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints {
            template_provider: self.tp.handle.local_addr(),
            mint_http: self.mint.handle.http_addr,
            mint_link: self.mint.handle.link_addr,
            pool: self.pool.handle.local_addr(),
            declared_jobs: self
                .jd_client
                .as_ref()
                .zip(self.pool.handle.jds_addr())
                .map(|(jdc, jds)| (jds, jdc.handle.local_addr())),
            translator: self.translator.handle.local_addr(),
            pool_dashboard: self.pool_stats.handle.http_addr,
            proxy_dashboard: self.proxy_stats.handle.http_addr,
            scale_out: self.scale_out.as_ref().map(|s| ScaleOutEndpoints {
                postgres: s.services.postgres_addr,
                redis: s.services.redis_url.clone(),
                second_mint_http: s.mint.handle.http_addr,
                second_pool: s.pool.handle.local_addr(),
            }),
        }
    }

    /// A status line every `status_interval_secs` until `shutdown`.
    async fn report_status(
        &self,
        c: &DevnetConfigs,
        started: Instant,
        shutdown: &CancellationToken,
    ) {
        let start_height = self.tp.handle.height();
        let stats = self.miner.handle.stats();
        let mut status = StatusLine::default();
        let mut tick = tokio::time::interval(Duration::from_secs(c.status_interval_secs));
        tick.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let totals = self.translator.handle.quotes().totals().ok();
            let snapshot = Snapshot {
                uptime: started.elapsed(),
                hashes: stats.hashes(),
                accepted: stats.accepted(),
                rejected: stats.rejected(),
                ehash_quoted: totals
                    .as_ref()
                    .map_or(0, |t| t.pending.1 + t.minted.1 + t.foreign.1),
                ehash_minted: totals.as_ref().map_or(0, |t| t.minted.1),
                wallet_balance: self.translator.handle.wallet().balance().await.ok(),
                blocks_found: self.tp.handle.height().saturating_sub(start_height),
                height: self.tp.handle.height(),
            };
            println!("{}", status.render(snapshot));
        }
    }

    /// Stops the roles one by one, miners first.
    async fn stop(self) {
        self.miner.stop.cancel();
        if let Err(e) = self.miner.handle.wait().await {
            tracing::warn!("miner: {e}");
        }
        self.translator.stop.cancel();
        self.translator.handle.wait().await;
        if let Some(jdc) = self.jd_client {
            jdc.stop.cancel();
            jdc.handle.wait().await;
        }
        let mut pools = vec![self.pool];
        let mut mints = vec![self.mint];
        let mut services = None;
        if let Some(second) = self.scale_out {
            pools.push(second.pool);
            mints.push(second.mint);
            services = Some(second.services);
        }
        for pool in pools {
            pool.stop.cancel();
            pool.handle.wait().await;
        }
        for mint in mints {
            mint.stop.cancel();
            mint.handle.wait().await;
        }
        // PostgreSQL and Redis stop last.
        if let Some(services) = services {
            services.stop().await;
        }
        self.tp.stop.cancel();
        self.tp.handle.wait().await;
        for stats in [self.pool_stats, self.proxy_stats] {
            stats.stop.cancel();
            stats.handle.wait().await;
        }
    }
}

impl ScaleOut {
    /// The second mint and pool, once the first ones run.
    async fn start(c: &DevnetConfigs, services: scale_out::Services) -> Result<Self, DevnetError> {
        let mint_config = scale_out::second_mint(&c.mint);
        let mint = start_role(|stop| mint::start(mint_config, stop)).await?;
        let pool_config = scale_out::second_pool(&c.pool, &c.state_dir);
        let pool =
            start_role(|stop| pool::start(pool_config, stop, pool::Hooks::default())).await?;
        Ok(Self {
            services,
            mint,
            pool,
        })
    }
}

/// The stats services, started first so the pool and the translator publish
/// from their first event. A fresh secret per service and run: only this
/// devnet's pool and translator can publish to them.
async fn start_stats_services(
    c: &mut DevnetConfigs,
) -> Result<
    (
        Role<pool_stats::RunningPoolStats>,
        Role<proxy_stats::RunningProxyStats>,
    ),
    DevnetError,
> {
    let (pool_secret, proxy_secret) = (PublisherSecret::random(), PublisherSecret::random());
    c.pool_stats.publisher_secret = Some(pool_secret.clone());
    c.proxy_stats.publisher_secret = Some(proxy_secret.clone());
    let pool_stats = start_role(|stop| pool_stats::start(c.pool_stats.clone(), stop)).await?;
    let proxy_stats = start_role(|stop| proxy_stats::start(c.proxy_stats.clone(), stop)).await?;
    c.pool.stats = Some(publish_to(
        c.pool.stats.take(),
        pool_stats.handle.ingest_addr,
        pool_secret,
    ));
    c.translator.stats = Some(publish_to(
        c.translator.stats.take(),
        proxy_stats.handle.ingest_addr,
        proxy_secret,
    ));
    Ok((pool_stats, proxy_stats))
}

/// Publishing settings towards a stats service's bound ingest address,
/// with its secret, keeping the role file's queue capacity.
fn publish_to(
    settings: Option<StatsSettings>,
    ingest: SocketAddr,
    secret: PublisherSecret,
) -> StatsSettings {
    let mut settings = settings.unwrap_or_else(|| StatsSettings::new(""));
    settings.address = reachable(ingest).to_string();
    settings.with_secret(secret)
}

async fn start_role<H, E, F>(
    start: impl FnOnce(CancellationToken) -> F,
) -> Result<Role<H>, DevnetError>
where
    F: std::future::Future<Output = Result<H, E>>,
    DevnetError: From<E>,
{
    let stop = CancellationToken::new();
    let handle = start(stop.clone()).await?;
    Ok(Role { handle, stop })
}

/// What runs where, for the operator.
fn describe(c: &DevnetConfigs, e: &Endpoints) -> String {
    let state = c.state_dir.display();
    let miner_threads = if c.miner.threads == 0 {
        "all cores".to_string()
    } else {
        format!("{} threads", c.miner.threads)
    };
    let mut s = String::new();
    s += "hashpool devnet is running (Ctrl-C stops it)\n";
    s += &format!(
        "  template provider  {}  SV2 template distribution (devnet chain)\n",
        e.template_provider
    );
    s += &format!(
        "  mint               http://{}  Cashu HTTP API; pool link on {}\n",
        e.mint_http, e.mint_link
    );
    s += &format!(
        "  pool               {}  SV2 mining (Noise, key {})\n",
        e.pool, c.pool.authority_public_key
    );
    if let Some((jds, jdc)) = e.declared_jobs {
        s += &format!("  job declarator     {jds}  the pool's JDS (SV2 job declaration)\n");
        s += &format!(
            "  jd-client          {jdc}  declares the template provider's templates; the translator mines through it\n"
        );
    }
    if let Some(scale_out) = &e.scale_out {
        s += &format!(
            "  second mint        http://{}  the same database and quote stream\n",
            scale_out.second_mint_http
        );
        s += &format!(
            "  second pool        {}  its own identity and outbox; the translator's fallback\n",
            scale_out.second_pool
        );
        s += &format!(
            "  PostgreSQL         {}  the mints' database (temporary: fresh each run)\n",
            scale_out.postgres
        );
        s += &format!(
            "  Redis              {}  quote requests and answers (temporary)\n",
            scale_out.redis
        );
    }
    s += &format!(
        "  translator         stratum+tcp://{}  point SV1 miners here\n",
        e.translator
    );
    s += &format!(
        "  pool dashboard     http://{}  (JSON under /api, Prometheus /metrics)\n",
        reachable(e.pool_dashboard)
    );
    s += &format!(
        "  proxy dashboard    http://{}  (miners, wallet, quotes)\n",
        reachable(e.proxy_dashboard)
    );
    s += &format!(
        "  CPU miner          {}, username \"{}\"\n",
        miner_threads, c.miner.username
    );
    s += &format!("  state              {state}  (a second run continues from it)\n");
    s += &format!("  logs               {state}/devnet.log\n");
    s += "  wallet             hashpool wallet balance | send <amount> | quotes\n";
    s
}

/// Logs every role to `<state_dir>/devnet.log` (as [`roles_common::log_filter`] says)
/// and warnings to stderr, so the terminal keeps the status lines readable.
pub fn init_logging(state_dir: &std::path::Path) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};

    roles_common::private::create_dir(state_dir)
        .map_err(|e| format!("state dir {}: {e}", state_dir.display()))?;
    let path = state_dir.join("devnet.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("log file {}: {e}", path.display()))?;
    tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_filter(roles_common::log_filter()),
        )
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                // cdk's SQL layer warns of every statement over 20 ms: on a
                // synced PostgreSQL that is most commits, noise on a terminal.
                .with_filter(EnvFilter::new("warn,cdk_sql_common=error")),
        )
        .try_init()
        .map_err(|e| e.to_string())?;
    info!(state_dir = %state_dir.display(), "hashpool devnet logging");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_get_the_service_address_and_secret() {
        let secret = PublisherSecret::new("0123456789abcdef");
        let mut kept = StatsSettings::new("elsewhere:1");
        kept.queue_capacity = 7;
        let s = publish_to(Some(kept), "0.0.0.0:4000".parse().unwrap(), secret.clone());
        assert_eq!(
            (s.address.as_str(), s.queue_capacity, s.secret),
            ("127.0.0.1:4000", 7, Some(secret))
        );
    }

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:34254".parse().unwrap()),
            "127.0.0.1:34254".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.2:1".parse().unwrap()),
            "10.0.0.2:1".parse::<SocketAddr>().unwrap()
        );
    }
}

//! `hashpool devnet`: template provider, mint, pool, translator and a CPU
//! miner in one process, wired to each other's bound addresses.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use roles_common::stats_publisher::{PublisherSecret, StatsSettings};
use roles_common::CancellationToken;
use tokio::sync::broadcast;
use tokio::task::{JoinError, JoinHandle};
use tracing::info;
use translator::quotes::QuoteStore;
use translator::wallet::EhashWallet;

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
    #[error("{role} stopped on its own while the devnet ran: {why}")]
    RoleEnded { role: &'static str, why: String },
    #[error("stopping: {0}")]
    Stop(String),
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

impl<H> Role<H> {
    /// Runs `wait(handle)` on a task of its own from now on (see [`Watched`]).
    fn watch<F>(self, name: &'static str, wait: impl FnOnce(H) -> F) -> Watched
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        Watched {
            name,
            stop: self.stop,
            task: tokio::spawn(wait(self.handle)),
            ended: None,
        }
    }
}

/// A role whose `wait` runs on a task of its own from the start, so the
/// devnet notices a role that ends before it is told to stop.
struct Watched {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
    /// How it ended, once [`first_ended`] saw it end (its task is done).
    ended: Option<Result<(), String>>,
}

impl Watched {
    /// Tells it to stop and waits until it has: how it ended.
    async fn stop(self) -> Result<(), String> {
        self.stop.cancel();
        match self.ended {
            Some(ended) => ended,
            None => joined(self.task.await),
        }
    }
}

/// How a role's `wait` task ended; a panic is a failure with its message.
fn joined(result: Result<Result<(), String>, JoinError>) -> Result<(), String> {
    roles_common::tasks::joined(result)?
}

/// Waits until the first of `roles` ends: its name and how it ended (kept
/// for its stop). Never returns while they all run.
async fn first_ended(roles: &mut [Watched]) -> (&'static str, Result<(), String>) {
    std::future::poll_fn(|cx| {
        for role in roles.iter_mut().filter(|r| r.ended.is_none()) {
            if let Poll::Ready(result) = Pin::new(&mut role.task).poll(cx) {
                let ended = joined(result);
                role.ended = Some(ended.clone());
                return Poll::Ready((role.name, ended));
            }
        }
        Poll::Pending
    })
    .await
}

/// Stops `roles` one by one, in order: a line for each that failed.
async fn stop(roles: Vec<Watched>) -> Vec<String> {
    let mut failures = vec![];
    for role in roles {
        let name = role.name;
        if let Err(e) = role.stop().await {
            tracing::error!("{name}: {e}");
            failures.push(format!("{name}: {e}"));
        }
    }
    failures
}

/// Runs the devnet until `shutdown` is cancelled, or a role stops on its
/// own (an error), printing the endpoints and then a status line every
/// `status_interval_secs` to stdout.
pub async fn run(mut c: DevnetConfigs, shutdown: CancellationToken) -> Result<(), DevnetError> {
    roles_common::private::create_dir(&c.state_dir).map_err(|source| DevnetError::StateDir {
        path: c.state_dir.display().to_string(),
        source,
    })?;
    let started = Instant::now();
    let roles = Roles::start(&mut c, &shutdown).await?;
    print!("{}", describe(&c, &roles.endpoints()));
    let (status, mut running) = roles.watch();
    let ended = report_status(&c, started, status, &mut running, &shutdown)
        .await
        // The miner stops with `shutdown` itself: that is no crash.
        .filter(|_| !shutdown.is_cancelled())
        .map(|(role, how)| DevnetError::RoleEnded {
            role,
            why: match how {
                Err(e) => e,
                Ok(()) => format!("see {}", c.state_dir.join("devnet.log").display()),
            },
        });
    if let Some(e) = &ended {
        tracing::error!("{e}; stopping the devnet");
    }
    println!(
        "hashpool devnet: stopping (miner, translator, pool, mint, template provider, stats services)"
    );
    let failures = stop(running).await;
    let next_run = match c.scale_out {
        true => "the next --scale-out run empties it",
        false => "the next run continues from it",
    };
    println!(
        "hashpool devnet: stopped; state kept in {} ({next_run})",
        c.state_dir.display()
    );
    match ended {
        Some(e) => Err(e),
        None if failures.is_empty() => Ok(()),
        None => Err(DevnetError::Stop(failures.join("; "))),
    }
}

/// What the status line reads, shared with the roles: it outlives their
/// handles, which their watching tasks own.
struct StatusSources {
    tip: TipHeight,
    miner: Arc<miner::Stats>,
    quotes: Arc<QuoteStore>,
    wallet: Arc<EhashWallet>,
}

/// The template provider's tip height, followed through the blocks it
/// announces.
struct TipHeight {
    height: u32,
    blocks: broadcast::Receiver<devnet_tp::BlockEvent>,
}

impl TipHeight {
    fn follow(tp: &devnet_tp::TpHandle) -> Self {
        // Subscribed first: a block found in between is still seen.
        let blocks = tp.subscribe_blocks();
        Self {
            height: tp.height(),
            blocks,
        }
    }

    fn height(&mut self) -> u32 {
        use broadcast::error::TryRecvError;
        loop {
            match self.blocks.try_recv() {
                Ok(block) => self.height = self.height.max(block.height),
                // Missed blocks are below the ones still queued.
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return self.height,
            }
        }
    }
}

/// A status line every `status_interval_secs` until `shutdown`, or until
/// one of `roles` ends: then its name and how it ended.
async fn report_status(
    c: &DevnetConfigs,
    started: Instant,
    mut s: StatusSources,
    roles: &mut [Watched],
    shutdown: &CancellationToken,
) -> Option<(&'static str, Result<(), String>)> {
    let start_height = s.tip.height();
    let mut status = StatusLine::default();
    let mut tick = tokio::time::interval(Duration::from_secs(c.status_interval_secs));
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            ended = first_ended(roles) => return Some(ended),
            _ = tick.tick() => {}
        }
        let totals = s.quotes.totals().ok();
        let height = s.tip.height();
        let snapshot = Snapshot {
            uptime: started.elapsed(),
            hashes: s.miner.hashes(),
            accepted: s.miner.accepted(),
            rejected: s.miner.rejected(),
            ehash_quoted: totals
                .as_ref()
                .map_or(0, |t| t.pending.1 + t.minted.1 + t.foreign.1),
            ehash_minted: totals.as_ref().map_or(0, |t| t.minted.1),
            wallet_balance: s.wallet.balance().await.ok(),
            blocks_found: height.saturating_sub(start_height),
            height,
        };
        println!("{}", status.render(snapshot));
    }
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

        // Every link pins the key of the role it reaches: a key pair
        // changed in one role's file follows into the others'.
        c.pool.tp_address = tp_address;
        c.pool.tp_authority_public_key = c.devnet_tp.authority_public_key;
        if let Some(link) = c.pool.mint.as_mut() {
            link.address = reachable(mint.handle.link_addr).to_string();
            link.authority_public_key = c.mint.authority_public_key;
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
        upstream.authority_public_key = c.pool.authority_public_key;
        let jd_client = Self::start_jd_client(c, &tp, &pool, &mut upstream).await?;
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

    /// With `--jd`: jd-client between the translator and the pool, on the
    /// devnet's template provider; the translator's `upstream` then
    /// reaches jd-client.
    async fn start_jd_client(
        c: &mut DevnetConfigs,
        tp: &Role<devnet_tp::TpHandle>,
        pool: &Role<pool::PoolHandle>,
        upstream: &mut translator::UpstreamConfig,
    ) -> Result<Option<Role<jd_client::JdcHandle>>, DevnetError> {
        let (true, Some(jds)) = (c.declared_jobs, pool.handle.jds_addr()) else {
            return Ok(None);
        };
        c.jd_client.tp_address = reachable(tp.handle.local_addr()).to_string();
        c.jd_client.tp_authority_public_key = c.devnet_tp.authority_public_key;
        c.jd_client.pool_address = upstream.address.clone();
        c.jd_client.jds_address = reachable(jds).to_string();
        c.jd_client.pool_authority_public_key = c.pool.authority_public_key;
        let jdc = start_role(|stop| jd_client::start(c.jd_client.clone(), stop)).await?;
        upstream.address = reachable(jdc.handle.local_addr()).to_string();
        upstream.authority_public_key = c.jd_client.authority_public_key;
        Ok(Some(jdc))
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

    /// Hands every role to a task that waits on it (see [`Watched`]): the
    /// roles in stop order, miners first, and what the status line reads.
    fn watch(self) -> (StatusSources, Vec<Watched>) {
        let status = StatusSources {
            tip: TipHeight::follow(&self.tp.handle),
            miner: self.miner.handle.stats(),
            quotes: self.translator.handle.quotes().clone(),
            wallet: self.translator.handle.wallet().clone(),
        };
        let mut roles = vec![
            self.miner.watch("miner", |h| async move {
                h.wait().await.map_err(|e| e.to_string())
            }),
            self.translator.watch("translator", |h| h.wait()),
        ];
        if let Some(jdc) = self.jd_client {
            roles.push(jdc.watch("jd-client", |h| h.wait()));
        }
        let pool = |h: pool::PoolHandle| h.wait();
        let mint = |h: mint::RunningMint| h.wait();
        roles.push(self.pool.watch("pool", pool));
        match self.scale_out {
            None => roles.push(self.mint.watch("mint", mint)),
            Some(second) => {
                roles.push(second.pool.watch("second pool", pool));
                roles.push(self.mint.watch("mint", mint));
                roles.push(second.mint.watch("second mint", mint));
                // PostgreSQL and Redis stop once the mints have written
                // their last quotes.
                let services = Role {
                    handle: second.services,
                    stop: CancellationToken::new(),
                };
                let told = services.stop.clone();
                roles.push(services.watch("PostgreSQL and Redis", |h| async move {
                    told.cancelled().await;
                    h.stop().await;
                    Ok(())
                }));
            }
        }
        roles.push(self.tp.watch("template provider", |h| async move {
            h.wait().await;
            Ok(())
        }));
        let stats = |h: pool_stats::RunningPoolStats| async move {
            h.wait().await;
            Ok(())
        };
        roles.push(self.pool_stats.watch("pool-stats", stats));
        roles.push(self.proxy_stats.watch("proxy-stats", stats));
        (status, roles)
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
    let next_run = match c.scale_out {
        true => "emptied by the next --scale-out run",
        false => "a second run continues from it",
    };
    s += &format!("  state              {state}  ({next_run})\n");
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
    // The panic hook every role's `main` installs: a role's panic reaches
    // devnet.log. The subscriber it also tries to set is refused: ours is.
    roles_common::init_logging();
    info!(state_dir = %state_dir.display(), "hashpool devnet logging");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> DevnetConfigs {
        crate::profile::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devnet.toml"),
        )
        .unwrap()
    }

    /// A role that runs until told to stop, then ends as `on_stop` says.
    fn role(name: &'static str, on_stop: fn() -> Result<(), String>) -> Watched {
        let stop = CancellationToken::new();
        Role {
            handle: stop.clone(),
            stop,
        }
        .watch(name, move |told| async move {
            told.cancelled().await;
            on_stop()
        })
    }

    /// A role that ends at once, as `end` says.
    fn ending(name: &'static str, end: fn() -> Result<(), String>) -> Watched {
        Role {
            handle: (),
            stop: CancellationToken::new(),
        }
        .watch(name, move |()| async move { end() })
    }

    #[tokio::test]
    async fn the_first_role_to_end_is_named_with_its_panic() {
        let mut roles = vec![
            role("miner", || Ok(())),
            ending("pool", || panic!("the outbox is gone")),
            role("mint", || Ok(())),
        ];
        let ended = tokio::time::timeout(Duration::from_secs(10), first_ended(&mut roles))
            .await
            .expect("the pool's end is noticed");
        assert_eq!(ended, ("pool", Err("panicked: the outbox is gone".into())));
        // The rest stop as told; the pool's end is reported, not awaited again.
        assert_eq!(stop(roles).await, ["pool: panicked: the outbox is gone"]);
    }

    #[tokio::test]
    async fn a_role_that_ends_without_a_word_is_noticed_too() {
        let mut roles = vec![role("miner", || Ok(())), ending("translator", || Ok(()))];
        let ended = tokio::time::timeout(Duration::from_secs(10), first_ended(&mut roles))
            .await
            .expect("the translator's end is noticed");
        assert_eq!(ended, ("translator", Ok(())));
        assert!(stop(roles).await.is_empty());
    }

    #[tokio::test]
    async fn a_role_that_fails_or_panics_as_it_stops_is_a_failure() {
        let roles = vec![
            role("miner", || Err("miner task failed: cancelled".into())),
            role("pool", || Ok(())),
            role("mint", || panic!("writer lost")),
        ];
        assert_eq!(
            stop(roles).await,
            [
                "miner: miner task failed: cancelled",
                "mint: panicked: writer lost"
            ]
        );
    }

    #[test]
    fn the_tip_height_follows_the_announced_blocks_past_a_lag() {
        let (blocks, receiver) = broadcast::channel(2);
        let mut tip = TipHeight {
            height: 5,
            blocks: receiver,
        };
        assert_eq!(tip.height(), 5);
        use stratum_core::bitcoin::hashes::Hash;
        let hash = stratum_core::bitcoin::BlockHash::all_zeros();
        for height in 6..=9 {
            blocks.send(devnet_tp::BlockEvent { height, hash }).unwrap();
        }
        assert_eq!(tip.height(), 9);
        drop(blocks);
        assert_eq!(tip.height(), 9);
    }

    #[test]
    fn only_a_devnet_that_continues_says_so() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let endpoints = Endpoints {
            template_provider: addr,
            mint_http: addr,
            mint_link: addr,
            pool: addr,
            declared_jobs: None,
            translator: addr,
            pool_dashboard: addr,
            proxy_dashboard: addr,
            scale_out: None,
        };
        let mut c = shipped();
        assert!(describe(&c, &endpoints).contains("(a second run continues from it)"));
        c.use_scale_out();
        let described = describe(&c, &endpoints);
        assert!(!described.contains("continues"), "{described}");
        assert!(described.contains("(emptied by the next --scale-out run)"));
    }

    /// The only test here that sets up logging (it is the process's).
    #[test]
    fn a_panic_is_logged_to_devnet_log() {
        let dir = tempfile::tempdir().unwrap();
        init_logging(dir.path()).unwrap();
        let _ = std::thread::spawn(|| panic!("a role's task panics")).join();
        let log = std::fs::read_to_string(dir.path().join("devnet.log")).unwrap();
        let panic = log
            .find("ERROR roles_common: panic: ")
            .expect("the panic is logged");
        assert!(log[panic..].contains("a role's task panics"), "{log}");
    }

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

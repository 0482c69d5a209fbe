//! Hashpool mint: a CDK Cashu mint with the custom unit `hash` and payment
//! method `ehash`, whose quotes only the authenticated pool can create.
//!
//! - `quote`: what a share must prove before it is quoted (no IO)
//! - `chain`: the mint's chain view, which shares must be fresh in (no IO)
//! - `link`: the pool link session state machine (no IO)
//! - `backend`: the cdk payment backend, which refuses quotes over HTTP
//! - `service`: what the link asks of the mint: quotes and stats
//! - `quote_writer`: the one writer of quotes, a group per transaction
//! - `sqlite`: the SQLite database, its writers taking turns in the process
//! - `kv_log`: append-only lists in the mint's KV store
//! - `key_index`: the locking key -> quote ids index
//! - `audit`: the public issuance audit (HTTP)
//! - `batch_mint`: the ehash batch mint (HTTP), without a second read of each quote
//! - `lookup`: the signed quote lookup by locking key (HTTP)
//! - `template_provider`: follows the chain tips into the chain view
//! - `io`: the Noise listener of the pool link and the HTTP API
//! - `redis_link`: quote requests from pools over Redis Streams

pub mod audit;
pub mod backend;
mod batch_mint;
pub mod chain;
pub mod config;
mod io;
mod key_index;
mod kv_log;
pub mod link;
pub mod lookup;
pub mod quote;
mod quote_totals;
mod quote_writer;
mod quoting;
mod redis_link;
pub mod service;
mod sqlite;
mod template_provider;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cdk::mint::{MintBuilder, MintMeltLimits, UnitConfig};
use cdk::nuts::{CurrencyUnit, PaymentMethod};
use cdk::Mint;
use cdk_common::database::{DynMintDatabase, MintDatabase, MintKeysDatabase};
use cdk_sql_common::pool::Pool;
use roles_common::tasks::RoleTasks;
use roles_common::{private, CancellationToken};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

pub use config::{AllowedPool, ChainSettings, DatabaseLocation, MintConfig, RedisSettings};

use crate::audit::Audit;
use crate::backend::EhashBackend;
use crate::chain::{Chain, TipHistory};
use crate::io::LinkContext;
use crate::lookup::QuoteLookup;
use crate::quote_totals::TotalsReader;
use crate::quote_writer::WriterStopped;
use crate::service::QuoteService;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("database {path}: {source}")]
    Database {
        /// The configured database, without its password.
        path: String,
        source: cdk_common::database::Error,
    },
    #[error("cdk: {0}")]
    Cdk(#[from] cdk::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP API: {0}")]
    Http(String),
    #[error("{0}")]
    TaskEnded(String),
}

impl MintError {
    /// A database error of the database `config` names.
    fn database(
        config: &MintConfig,
    ) -> impl Fn(cdk_common::database::Error) -> MintError + Copy + '_ {
        |source| MintError::Database {
            path: config.database_for_logs(),
            source,
        }
    }

    /// An error listening on `addr`.
    fn listen(addr: SocketAddr) -> impl Fn(std::io::Error) -> MintError + Copy {
        move |source| MintError::Listen { addr, source }
    }
}

/// A mint that is serving; dropping it does not stop it, cancel the token.
pub struct RunningMint {
    pub http_addr: SocketAddr,
    pub link_addr: SocketAddr,
    pub mint: Arc<Mint>,
    tasks: RoleTasks,
    writer_stopped: WriterStopped,
}

/// How long a stopping mint waits for its quote writer to finish the
/// quotes in flight: past the HTTP connections' grace, which hold it too.
const WRITER_DRAIN: Duration = Duration::from_secs(10);

impl RunningMint {
    /// The base URL of the Cashu HTTP API as bound (useful with port 0).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Waits until the mint has stopped: its shutdown token was cancelled,
    /// or one of its tasks ended on its own (`Err` naming it).
    pub async fn wait(self) -> Result<(), String> {
        let ended = self.tasks.wait().await;
        // Quotes being written are committed before the database may go.
        if tokio::time::timeout(WRITER_DRAIN, self.writer_stopped.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "the quote writer has not stopped {WRITER_DRAIN:?} after the mint (a connection \
                 still holds it); what it has not committed rolls back, and its pools ask again"
            );
        }
        if let Err(e) = self.mint.stop().await {
            tracing::warn!("mint stop: {e}");
        }
        info!("mint stopped");
        ended
    }
}

/// Opens the database, builds the cdk mint and starts serving the HTTP API
/// and the pool link.
pub async fn start(
    config: MintConfig,
    shutdown: CancellationToken,
) -> Result<RunningMint, MintError> {
    // Its own: a task ending early stops the mint, nothing else.
    let shutdown = shutdown.child_token();
    let db = open_database(&config).await?;
    let (http, link) = (
        Bound::to(config.http_listen)?,
        Bound::to(config.link_listen)?,
    );
    let (http_addr, link_addr) = (http.addr, link.addr);
    let public_url = config.public_url(http_addr);
    if config.public_url.is_none() && http_addr.ip().is_unspecified() {
        warn!(
            "public_url is not set: the mint info advertises {public_url}, which wallets on \
             other machines cannot reach; set public_url to the URL wallets use"
        );
    }
    let mint = Arc::new(build_mint(&config, &db, &public_url).await?);
    mint.start().await?;
    let (http_listener, link_listener) = (http.listen()?, link.listen()?);

    let unit = CurrencyUnit::custom(ehash::constants::UNIT);
    let keyset = mint
        .get_active_keysets()
        .get(&unit)
        .map(|id| id.to_string())
        .unwrap_or_default();

    index_earlier_quotes(&config, &mint).await?;
    let redis_database = redis_database(&config, &mint).await?;
    let chain = chain_view(&config, &mint).await?.map(Arc::new);
    let (service, writer_stopped) = QuoteService::new(
        mint.clone(),
        config.unit_bits(),
        config.min_amount..=config.max_amount,
        chain.clone(),
        db.totals,
    );
    let service = Arc::new(service);
    let lookup = Arc::new(QuoteLookup::new(mint.clone(), config.info_pubkey()));
    let router = http_api(&config, &mint, &service, lookup.clone()).await?;
    let served = Served {
        ctx: Arc::new(LinkContext::new(&config, service.clone())),
        service,
        lookup,
        chain,
        router,
        redis_database,
        keyset: keyset.clone(),
    };
    let tasks = spawn_tasks(
        &config,
        &mint,
        served,
        (http_listener, link_listener),
        shutdown,
    );
    info!(
        "mint serving: Cashu HTTP API on http://{http_addr} (advertised as {public_url}), pool link on {link_addr}, unit {} ({} ehash = 2^{} expected hashes each), keyset {keyset}, database {}",
        ehash::constants::UNIT,
        ehash::constants::PAYMENT_METHOD,
        config.unit_bits,
        config.database_for_logs(),
    );
    Ok(RunningMint {
        http_addr,
        link_addr,
        mint,
        tasks,
        writer_stopped,
    })
}

/// What the mint's tasks serve, built before the first of them starts.
struct Served {
    service: Arc<QuoteService>,
    lookup: Arc<QuoteLookup>,
    ctx: Arc<LinkContext>,
    chain: Option<Arc<Chain>>,
    router: axum::Router,
    /// With `[redis]`: the database the mints sharing its prefix check
    /// they share.
    redis_database: Option<String>,
    keyset: String,
}

/// Starts serving: the HTTP API, the pool link (and its Redis transport),
/// the chain follower and the upkeep tasks.
fn spawn_tasks(
    config: &MintConfig,
    mint: &Mint,
    served: Served,
    (http_listener, link_listener): (TcpListener, TcpListener),
    shutdown: CancellationToken,
) -> RoleTasks {
    let mut tasks = RoleTasks::new(shutdown.clone());
    let (stopping, service) = (shutdown.clone(), served.service);
    tasks.spawn("the totals checkpoint", async move {
        stopping.cancelled().await;
        service.checkpoint_totals().await;
    });
    tasks.spawn(
        "the HTTP API",
        io::serve_http(http_listener, served.router, shutdown.clone()),
    );
    tasks.spawn(
        "the lookup digest pruner",
        lookup::forget_expired_periodically(served.lookup, shutdown.clone()),
    );
    if let (Some(redis), Some(database)) = (&config.redis, served.redis_database) {
        tasks.spawn(
            "the Redis transport",
            redis_link::serve(
                redis.clone(),
                served.keyset,
                database,
                served.ctx.clone(),
                shutdown.clone(),
            ),
        );
    }
    tasks.spawn(
        "the pool link listener",
        io::serve_link(link_listener, served.ctx, shutdown.clone()),
    );
    if let (Some(settings), Some(chain)) = (&config.chain, served.chain) {
        tasks.spawn(
            "the chain follower",
            template_provider::follow(
                settings.clone(),
                config.pools.iter().map(|p| p.x_only_key()).collect(),
                chain,
                mint.localstore(),
                shutdown,
            ),
        );
    }
    tasks
}

/// With `[redis]`, the id of the mint's database (see [`Served`]).
async fn redis_database(config: &MintConfig, mint: &Mint) -> Result<Option<String>, MintError> {
    match config.redis {
        Some(_) => Ok(Some(
            redis_link::database_id(&mint.localstore())
                .await
                .map_err(MintError::database(config))?,
        )),
        None => Ok(None),
    }
}

/// The chain view, with the tips a previous run stored; none without `[chain]`.
async fn chain_view(config: &MintConfig, mint: &Mint) -> Result<Option<Chain>, MintError> {
    let Some(settings) = &config.chain else {
        warn!("no [chain]: the mint follows no chain and quotes work on any block (devnet only)");
        return Ok(None);
    };
    let pools: Vec<_> = config.pools.iter().map(|p| p.x_only_key()).collect();
    let tips = template_provider::load_tips(&mint.localstore(), &pools)
        .await
        .map_err(MintError::database(config))?;
    let max_tip_age = usize::try_from(settings.max_tip_age).unwrap_or(usize::MAX);
    Ok(Some(Chain::new(
        TipHistory::new(max_tip_age, tips),
        Duration::from_secs(settings.unseen_tip_wait_secs),
    )))
}

/// Runs the mint until `shutdown` is cancelled.
pub async fn run(config: MintConfig, shutdown: CancellationToken) -> Result<(), MintError> {
    let mint = start(config, shutdown).await?;
    mint.wait().await.map_err(MintError::TaskEnded)
}

/// A socket bound to `addr`, not listening yet, and the address it got
/// (`addr` may say port 0): the mint info names the port before the mint
/// is built, and no pool connects before it is.
struct Bound {
    socket: TcpSocket,
    addr: SocketAddr,
    asked: SocketAddr,
}

impl Bound {
    fn to(asked: SocketAddr) -> Result<Self, MintError> {
        let error = MintError::listen(asked);
        let socket = match asked {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(error)?;
        // As TcpListener::bind: a restarted mint gets its port back at once.
        socket.set_reuseaddr(true).map_err(error)?;
        socket.bind(asked).map_err(error)?;
        let addr = socket.local_addr().map_err(error)?;
        Ok(Self {
            socket,
            addr,
            asked,
        })
    }

    fn listen(self) -> Result<TcpListener, MintError> {
        self.socket
            .listen(1024)
            .map_err(MintError::listen(self.asked))
    }
}

/// Lists the quotes created before the key index and the totals' list
/// existed (nothing once they do).
async fn index_earlier_quotes(config: &MintConfig, mint: &Mint) -> Result<(), MintError> {
    let database_error = MintError::database(config);
    let backfilled = key_index::backfill(mint).await.map_err(database_error)?;
    if backfilled > 0 {
        info!("indexed {backfilled} earlier quotes by locking key");
    }
    let listed = quote_totals::backfill(mint).await.map_err(database_error)?;
    if listed > 0 {
        info!("listed {listed} earlier quotes for the quote totals");
    }
    Ok(())
}

/// The HTTP API: cdk-axum's routes, with the mint's own batch mint, quote
/// lookup and audit.
async fn http_api(
    config: &MintConfig,
    mint: &Arc<Mint>,
    service: &Arc<QuoteService>,
    lookup: Arc<QuoteLookup>,
) -> Result<axum::Router, MintError> {
    let audit = Arc::new(Audit::new(
        mint.clone(),
        service.clone(),
        config
            .pools
            .iter()
            .map(|p| p.reward_script.clone())
            .collect(),
    ));
    let batch_mint = batch_mint::router(mint.clone())
        .await
        .map_err(MintError::Http)?;
    Ok(cdk_axum::create_mint_router(
        mint.clone(),
        vec![ehash::constants::PAYMENT_METHOD.to_string()],
    )
    .await
    .map_err(|e| MintError::Http(e.to_string()))?
    .merge(batch_mint)
    .merge(lookup::router(lookup))
    .merge(audit::router(audit)))
}

/// The mint's database, as cdk uses it: one store serves as the mint's
/// database and as its signatory's keyset store; the quote totals read it
/// on their own.
struct Database {
    store: DynMintDatabase,
    keys: Arc<dyn MintKeysDatabase<Err = cdk_common::database::Error> + Send + Sync>,
    totals: TotalsReader,
}

impl Database {
    /// `totals` reads `db` through cdk unless given a reader of its own.
    fn new<D>(db: D, totals: Option<TotalsReader>) -> Self
    where
        D: MintDatabase<cdk_common::database::Error>
            + MintKeysDatabase<Err = cdk_common::database::Error>
            + Send
            + Sync
            + 'static,
    {
        let db = Arc::new(db);
        Self {
            totals: totals.unwrap_or_else(|| TotalsReader::Cdk(db.clone())),
            store: db.clone(),
            keys: db,
        }
    }
}

/// Opens (and migrates) the database `config` names: SQLite, or PostgreSQL,
/// which several mint processes can share.
async fn open_database(config: &MintConfig) -> Result<Database, MintError> {
    let db_error = MintError::database(config);
    Ok(match config.database_location() {
        DatabaseLocation::Memory => {
            Database::new(sqlite::open(":memory:").await.map_err(db_error)?, None)
        }
        DatabaseLocation::Sqlite(path) => {
            let io_error = |e| db_error(cdk_common::database::Error::Database(Box::new(e)));
            if let Some(dir) = path.parent() {
                private::create_dir(dir).map_err(io_error)?;
            }
            private::create_file(&path).map_err(io_error)?;
            let path = path.to_str().ok_or_else(|| {
                db_error(cdk_common::database::Error::Internal(
                    "the database path is not UTF-8".into(),
                ))
            })?;
            Database::new(
                sqlite::open(path).await.map_err(db_error)?,
                Some(TotalsReader::Sqlite(Pool::new(path.into()))),
            )
        }
        DatabaseLocation::Postgres(url) => Database::new(
            open_postgres(url).await.map_err(db_error)?,
            Some(TotalsReader::Postgres(Pool::new(url.into()))),
        ),
    })
}

/// Opens (and migrates) a PostgreSQL database, trying again where
/// cdk-postgres 0.18.3 reports a timeout: it can miss the wake-up of a
/// connection made just as it starts waiting for it (a `Notify` that keeps
/// no permit), and then waits out its 10 s though the server answered.
async fn open_postgres(
    url: &str,
) -> Result<cdk_postgres::MintPgDatabase, cdk_common::database::Error> {
    const TRIES: u32 = 3;
    let mut attempt = 1;
    loop {
        match cdk_postgres::MintPgDatabase::new(url).await {
            Err(cdk_common::database::Error::Internal(e)) if e == "Timeout" && attempt < TRIES => {
                warn!("no connection to the database within cdk's timeout ({attempt}/{TRIES})");
                attempt += 1;
            }
            opened => return opened,
        }
    }
}

async fn build_mint(
    config: &MintConfig,
    db: &Database,
    public_url: &str,
) -> Result<Mint, MintError> {
    let unit = CurrencyUnit::custom(ehash::constants::UNIT);
    let method = PaymentMethod::Custom(ehash::constants::PAYMENT_METHOD.to_string());
    let mut builder = MintBuilder::new(db.store.clone());
    // Denominations 2^0..2^63, no input fee: any u64 amount, free to spend.
    builder.configure_unit(
        unit.clone(),
        UnitConfig {
            amounts: (0..64).map(|i| 1u64 << i).collect(),
            input_fee_ppk: 0,
        },
    )?;
    builder
        .add_payment_processor(
            unit,
            method.clone(),
            MintMeltLimits {
                mint_min: config.min_amount.into(),
                mint_max: config.max_amount.into(),
                melt_min: config.min_amount.into(),
                melt_max: config.max_amount.into(),
            },
            Arc::new(EhashBackend::default()),
        )
        .await?;
    let mut builder = builder
        .with_batch_minting(Some(config.max_batch_size), Some(vec![method.to_string()]))
        .with_name(config.name.clone())
        .with_urls(vec![public_url.to_string()])
        .with_pubkey(config.info_pubkey().into());
    if let Some(description) = &config.description {
        builder = builder.with_description(description.clone());
    }
    // cdk keeps the MintInfo it stored on first start; the config must win.
    let info = builder.current_mint_info();
    let mint = builder
        .build_with_seed(db.keys.clone(), &config.seed())
        .await?;
    mint.set_mint_info(info).await?;
    Ok(mint)
}

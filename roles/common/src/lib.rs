//! What every Hashpool role's `main` does the same way: read `--config`,
//! load and validate the TOML file (environment overrides as in SRI roles:
//! `<PREFIX>__FIELD=value`), set up logging, run until SIGINT/SIGTERM/SIGHUP.
//!
//! A bad config stops the process with one line naming the field.
//!
//! [`noise`]: SV2 frames over Noise on TCP, as many per system call as are waiting.
//! [`sv2`]: SV2 over Noise (framing, the reader task, connecting).
//! [`http`]: an axum router served with bounds on slow and idle clients.
//! [`limits`]: bounds on a listener's connections.
//! [`log_limit`]: warnings a peer can repeat, logged at most once per interval.
//! [`pid_lock`]: a lock file held while a process lives, naming its holder.
//! [`private`]: state directories and files for their owner only.
//! [`solutions`]: block solutions sent again on a new template provider link.
//! [`tasks`]: a role's tasks, stopped together when one ends early.
//! [`stats_publisher`]: the pool's and the translator's events to their
//! stats service, never slowing mining down.

pub mod backoff;
pub mod default;
pub mod free_port;
pub mod http;
pub mod limits;
pub mod log_limit;
pub mod noise;
pub mod pid_lock;
pub mod private;
pub mod redis_stream;
pub mod services;
pub mod solutions;
pub mod stats_publisher;
pub mod sv2;
pub mod tasks;
#[doc(hidden)]
pub mod testing;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

pub mod network;

pub use network::Network;
pub use tokio_util::sync::CancellationToken;

/// Now as Unix seconds (0 on a clock before 1970).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks `mutex`, going on after a panic of another holder: one task that
/// panics must not take every other task down with it.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A config value that parsed but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that `authority_public_key` is the public half of
/// `authority_secret_key`, the Noise key pair of a role that listens.
pub fn check_authority_key_pair(
    public: &Secp256k1PublicKey,
    secret: &Secp256k1SecretKey,
) -> Result<(), ConfigError> {
    let derived: Secp256k1PublicKey = (*secret).into();
    if derived.into_bytes() != public.into_bytes() {
        return Err(ConfigError::new(
            "authority_public_key",
            "does not belong to authority_secret_key",
        ));
    }
    Ok(())
}

/// Checks a listener address kept as text (`field`) is an ip:port address.
pub fn check_listen_address(field: &str, address: &str) -> Result<(), ConfigError> {
    match address.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::new(
            field,
            format!("`{address}` is not an ip:port address"),
        )),
    }
}

/// `Err` naming `field` unless `address` is host:port with a valid port
/// (the host is resolved when connecting).
pub fn check_host_port(field: &str, address: &str) -> Result<(), ConfigError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.trim().is_empty() && port.parse::<u16>().is_ok());
    match valid {
        true => Ok(()),
        false => Err(ConfigError::new(
            field,
            format!("`{address}` is not host:port"),
        )),
    }
}

/// Checks a parsed config beyond what its types say.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

#[derive(clap::Parser, Debug)]
struct RoleArgs {
    /// Path of the role's TOML config file.
    #[arg(short, long)]
    config: PathBuf,
}

/// Loads and validates a role config. The error is one line naming the file
/// and the field.
pub fn load_config<C>(path: &Path, env_prefix: &str) -> Result<C, String>
where
    C: serde::de::DeserializeOwned + Validate,
{
    let config: C =
        stratum_apps::config_helpers::load_config(path, env_prefix, &[], &[]).map_err(|e| {
            let reason = precise_file_error::<C>(path).unwrap_or_else(|| e.to_string());
            one_line(&format!("{}: {reason}", path.display()))
        })?;
    config
        .validate()
        .map_err(|e| one_line(&format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// The `config` crate drops the field name from errors raised while parsing
/// a value (an unparsable address, say); parsing the file alone again with
/// `serde_path_to_error` finds which field it was.
fn precise_file_error<C: serde::de::DeserializeOwned>(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let error = serde_path_to_error::deserialize::<_, C>(toml::Deserializer::new(&text)).err()?;
    let field = error.path().to_string();
    let message = error.inner().message().to_string();
    // At the root (".") the message names the field itself: "missing field `x`".
    Some(if field == "." {
        message
    } else {
        format!("`{field}`: {message}")
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Pause before accepting again after an accept error.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Accepts TCP connections until `shutdown` and hands each, numbered from 1,
/// to `serve` on its own task, while `limits` allow; a connection over them
/// is closed at once. An accept error (out of file descriptors, say) is
/// logged and retried after a pause rather than spun on.
pub async fn accept_loop<F, Fut>(
    what: &str,
    listener: tokio::net::TcpListener,
    limits: limits::ConnectionLimits,
    shutdown: CancellationToken,
    mut serve: F,
) where
    F: FnMut(u64, tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let permit = match limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                drop(stream);
                tracing::debug!(%peer, "{what}: refusing a connection: {refusal}");
                if let Some(n) = limits.refusals_to_report(std::time::Instant::now()) {
                    tracing::warn!(
                        "{what}: refused {n} connections, the latest from {peer}: {refusal}"
                    );
                }
                continue;
            }
        };
        next_id += 1;
        let served = serve(next_id, stream, peer);
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
    tracing::info!("{what}: stopped accepting");
}

/// A token cancelled on the first SIGINT, SIGTERM or SIGHUP (a closed
/// terminal stops a role as cleanly as Ctrl-C, unless it runs under
/// `nohup`). A second one exits the process at once, without a clean stop:
/// what a second Ctrl-C means to someone waiting on a stop that hangs
/// (every role is safe to kill). The signals are caught from the moment
/// this returns.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut signals = StopSignals::catch();
    tokio::spawn(async move {
        signals.next().await;
        let first = std::time::Instant::now();
        tracing::info!("shutdown requested (a second stop signal exits at once)");
        cancel.cancel();
        loop {
            let signal = signals.next().await;
            // One stop sent twice at once (`timeout` signals the process,
            // then its group) is not a second one.
            if first.elapsed() >= SAME_STOP {
                tracing::warn!("a second stop signal: exiting at once, without a clean stop");
                eprintln!("a second stop signal: exiting at once, without a clean stop");
                // As a shell reports a process the signal ended.
                std::process::exit(128 + signal);
            }
        }
    });
    token
}

/// Stop signals this close to the first are the same stop.
const SAME_STOP: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(unix)]
const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
#[cfg(unix)]
const SIGTERM: i32 = 15;

/// The stop signals, caught from the moment they are made.
#[cfg(unix)]
struct StopSignals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl StopSignals {
    fn catch() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            // Under nohup a hangup is ignored, and stays so.
            hangup: if hangup_ignored() {
                None
            } else {
                signal(SignalKind::hangup()).ok()
            },
        }
    }

    /// Resolves on the next of them, with its number.
    async fn next(&mut self) -> i32 {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.interrupt) => SIGINT,
            _ = recv(&mut self.terminate) => SIGTERM,
            _ = recv(&mut self.hangup) => SIGHUP,
        }
    }
}

/// Whether this process ignores SIGHUP (as `nohup` starts it), from the
/// ignored-signals mask in /proc (bit 0 is signal 1); false where there is
/// no /proc.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    ignores_hangup(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// Whether a /proc status names SIGHUP among the ignored signals.
#[cfg(unix)]
fn ignores_hangup(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 != 0)
}

#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn catch() -> Self {
        StopSignals
    }

    async fn next(&mut self) -> i32 {
        let _ = tokio::signal::ctrl_c().await;
        SIGINT
    }
}

/// The whole `main` of a role: `--config <path>`, config loaded with
/// environment overrides under `env_prefix`, logging, then `run` until it
/// returns or a signal cancels its token. Exit code 2 for bad config, 1 for
/// a run that failed.
pub fn role_main<C, F, E>(
    role: &str,
    env_prefix: &str,
    run: impl FnOnce(C, CancellationToken) -> F,
) -> ExitCode
where
    C: serde::de::DeserializeOwned + Validate,
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let args = <RoleArgs as clap::Parser>::parse();
    let (config, runtime) = match config_and_runtime::<C>(role, &args.config, env_prefix) {
        Ok(both) => both,
        Err(code) => return code,
    };
    init_logging();
    if let Some(warning) = private::exposed_secret_warning(&args.config) {
        tracing::warn!("{warning}");
    }
    run_until_signal(&runtime, role, role, |shutdown| run(config, shutdown))
}

/// What the roles log when `RUST_LOG` does not say: info, except cdk's line
/// for every quote it issues (a thousand lines a second under a busy pool),
/// the spans cdk opens for every payment and issue it records on a quote
/// (they log nothing, yet cost the mint's one writer ~5% of its time), and
/// cdk's `[SLOW QUERY]` warning for any statement over 20 ms, which under
/// load is every WAL checkpoint, a few a second (failed queries still log).
const DEFAULT_LOG: &str =
    "info,cdk::mint::issue=warn,cdk_common::mint=warn,cdk_sql_common::common=error";

/// The log filter: `RUST_LOG`'s directives (e.g. `debug` or
/// `info,translator=debug`), or [`DEFAULT_LOG`].
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG))
}

/// A role's log on stdout, as [`log_filter`] says; a panic is logged there
/// too, with its backtrace, before the default report on stderr.
pub fn init_logging() {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("panic: {panic}\nbacktrace:\n{backtrace}");
        report(panic);
    }));
}

/// What a role's `main` needs before anything runs: its config, loaded as
/// [`load_config`] does, and the async runtime. The exit code if either
/// fails (see [`bad_config`] and [`new_runtime`]).
pub fn config_and_runtime<C>(
    role: &str,
    path: &Path,
    env_prefix: &str,
) -> Result<(C, tokio::runtime::Runtime), ExitCode>
where
    C: serde::de::DeserializeOwned + Validate,
{
    let config = load_config(path, env_prefix).map_err(|e| bad_config(role, &e))?;
    Ok((config, new_runtime(role)?))
}

/// See [`new_runtime`].
pub const MIN_WORKER_THREADS: usize = 8;

/// Says on stderr that `role`'s config is bad: exit code 2.
pub fn bad_config(role: &str, error: &str) -> ExitCode {
    eprintln!("{role}: bad config: {error}");
    ExitCode::from(2)
}

/// The async runtime, or, if it cannot start, the reason on stderr and exit code 1.
///
/// One worker thread per core, and at least [`MIN_WORKER_THREADS`]:
/// cdk-sqlite (the mint's and the wallet's database) blocks the worker it
/// runs on while it waits for SQLite's write lock, so on a small machine a
/// few waiting writers could leave none to run the transaction they wait for.
pub fn new_runtime(role: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(MIN_WORKER_THREADS))
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{role}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs `run` on `runtime` until it returns or a signal cancels its token.
/// A failure is logged as "`what` stopped: ..." and printed after `prefix`
/// on stderr: exit code 1.
pub fn run_until_signal<F, E>(
    runtime: &tokio::runtime::Runtime,
    what: &str,
    prefix: &str,
    run: impl FnOnce(CancellationToken) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = runtime.block_on(async move { run(shutdown_on_signal()).await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{what} stopped: {e}");
            eprintln!("{prefix}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A URL (PostgreSQL, Redis) for logs: its password (`user:password@`, or
/// a `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The credentials end where the URL's parser ends them: tokio-postgres
    // at the first '@'; the url crate (which redis uses) at the last '@'
    // before the path, query or fragment.
    let at = if matches!(scheme, "postgres" | "postgresql") {
        rest.find('@')
    } else {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        rest[..authority_end].rfind('@')
    };
    let (mut redacted, mut tail) = match at.map(|at| (&rest[..at], &rest[at + 1..])) {
        Some((credentials, after)) => match credentials.split_once(':') {
            Some((user, _password)) => (format!("{scheme}://{user}:***@"), after),
            None => (format!("{scheme}://{credentials}@"), after),
        },
        None => (format!("{scheme}://"), rest),
    };
    while let Some(at) = tail.to_ascii_lowercase().find("password=") {
        let value = at + "password=".len();
        redacted.push_str(&tail[..value]);
        redacted.push_str("***");
        let value_end = tail[value..]
            .find(['&', ' '])
            .map_or(tail.len(), |i| value + i);
        tail = &tail[value_end..];
    }
    redacted.push_str(tail);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_hangup_is_ignored_as_nohup_leaves_it() {
        let status =
            |ignored: &str| format!("Name:\tpool\nSigBlk:\t0000000000000000\nSigIgn:\t{ignored}\n");
        assert!(ignores_hangup(&status("0000000000000001")));
        assert!(ignores_hangup(&status("0000000000001001")));
        assert!(!ignores_hangup(&status("0000000000001000")), "SIGPIPE only");
        assert!(!ignores_hangup(""));
    }

    /// A closed terminal sends SIGHUP: the role stops as on Ctrl-C, unless
    /// it runs under nohup (as this test may: then it must not stop).
    #[cfg(unix)]
    #[tokio::test]
    async fn a_hangup_requests_the_shutdown_unless_ignored() {
        let ignored = hangup_ignored();
        let shutdown = shutdown_on_signal();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let wait = std::time::Duration::from_secs(if ignored { 1 } else { 10 });
        let cancelled = tokio::time::timeout(wait, shutdown.cancelled())
            .await
            .is_ok();
        assert_eq!(cancelled, !ignored, "SIGHUP ignored: {ignored}");
    }

    /// Set for the child process of `a_second_stop_signal_exits_at_once`.
    #[cfg(unix)]
    const HANGING_CHILD: &str = "HASHPOOL_TEST_HANGING_CHILD";

    /// A role whose stop never ends, run in a process of its own by the
    /// next test (it does nothing in a test run).
    #[cfg(unix)]
    #[tokio::test]
    #[ignore = "the child process of a_second_stop_signal_exits_at_once"]
    async fn a_role_whose_stop_hangs() {
        if std::env::var_os(HANGING_CHILD).is_none() {
            return;
        }
        let shutdown = shutdown_on_signal();
        println!("running");
        shutdown.cancelled().await;
        println!("stopping");
        std::future::pending::<()>().await;
    }

    #[cfg(unix)]
    #[test]
    fn a_second_stop_signal_exits_at_once() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        /// Killed if the test fails: it would hang for ever.
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let Child(child) = &mut Child(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "tests::a_role_whose_stop_hangs"])
                .args(["--ignored", "--nocapture", "--test-threads=1"])
                .env(HANGING_CHILD, "1")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let pid = child.id().to_string();
        let interrupt = || {
            let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
            assert!(sent.success());
        };
        // The test harness prints the test's name before its first line.
        let wait_for = |wanted: &str| loop {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.ends_with(wanted) => return,
                Ok(_) => {}
                Err(e) => panic!("no line {wanted:?} from the child: {e}"),
            }
        };
        wait_for("running");
        interrupt();
        wait_for("stopping");
        // A second Ctrl-C, not the first sent twice.
        std::thread::sleep(SAME_STOP);
        interrupt();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after a second SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(128 + SIGINT));
    }

    #[test]
    fn url_passwords_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url("redis://user:secret@10.0.0.1:6379/0"),
            "redis://user:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://:secret@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn an_address_to_connect_to_is_host_and_a_port() {
        for good in ["127.0.0.1:8442", "tp.internal:8442", "[::1]:8442"] {
            check_host_port("tp_address", good).unwrap();
        }
        for bad in ["127.0.0.1", "tp:notaport", ":8442", "tp:70000", ""] {
            let error = check_host_port("tp_address", bad).unwrap_err();
            assert_eq!(error.field, "tp_address", "{bad}");
        }
    }

    #[test]
    fn url_credentials_end_where_the_url_parser_ends_them() {
        // The url crate (redis): at the last '@' before the path, query or fragment.
        assert_eq!(
            redact_url("redis://:p@ss@10.0.0.5:6379"),
            "redis://:***@10.0.0.5:6379"
        );
        assert_eq!(
            redact_url("rediss://user:a@b@c@host:6380/0?name=x@y#z@w"),
            "rediss://user:***@host:6380/0?name=x@y#z@w"
        );
        assert_eq!(
            redact_url("redis://host:6379/0?name=x@y"),
            "redis://host:6379/0?name=x@y"
        );
        // tokio-postgres: at the first '@', so "ss" is part of the host.
        assert_eq!(
            redact_url("postgres://user:p@ss@db.example/mint"),
            "postgres://user:***@ss@db.example/mint"
        );
        assert_eq!(
            redact_url("postgresql://user:secret@db.example/mint?sslmode=require"),
            "postgresql://user:***@db.example/mint?sslmode=require"
        );
    }

    #[test]
    fn a_mutex_whose_holder_panicked_is_still_usable() {
        let m = std::sync::Arc::new(std::sync::Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("the holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Example {
        port: u16,
        #[serde(default)]
        unit_bits: u32,
        #[serde(default)]
        listen: Option<std::net::SocketAddr>,
    }

    impl Validate for Example {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.unit_bits > 64 {
                return Err(ConfigError::new("unit_bits", "must be at most 64"));
            }
            Ok(())
        }
    }

    fn load(text: &str) -> Result<Example, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, text).unwrap();
        load_config(&path, "HASHPOOL_TEST_EXAMPLE")
            .map_err(|e| e.replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn good_config_loads() {
        let c = load("port = 3338\nunit_bits = 8\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!((c.port, c.unit_bits), (3338, 8));
        assert_eq!(c.listen, Some("127.0.0.1:1".parse().unwrap()));
    }

    #[test]
    fn errors_are_one_line_and_name_the_field() {
        for (text, field) in [
            ("port = \"x\"\n", "port"),
            ("port = 70000\n", "port"),
            ("port = 1\nunit_bits = 65\n", "unit_bits"),
            ("port = 1\nportt = 2\n", "portt"),
            ("unit_bits = 1\n", "port"),
            ("port = 1\nlisten = \"nonsense\"\n", "listen"),
        ] {
            let err = load(text).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains(field), "{text:?} gave {err}");
            assert!(err.starts_with("FILE: "), "{err}");
        }
    }

    /// A required field next to one with a literal default, as in the role configs.
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct WithDefault {
        state_dir: String,
        #[serde(default = "default::u64::<3600>")]
        cert_validity_secs: u64,
    }

    impl Validate for WithDefault {
        fn validate(&self) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    #[test]
    fn literal_defaults_fill_in_and_required_fields_stay_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("with_default.toml");
        std::fs::write(&path, "state_dir = \"x\"\n").unwrap();
        let c: WithDefault = load_config(&path, "HASHPOOL_TEST_WITH_DEFAULT").unwrap();
        assert_eq!((c.state_dir.as_str(), c.cert_validity_secs), ("x", 3600));
        std::fs::write(&path, "cert_validity_secs = 1\n").unwrap();
        let err = load_config::<WithDefault>(&path, "HASHPOOL_TEST_WITH_DEFAULT").unwrap_err();
        assert!(err.contains("missing field `state_dir`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = load_config::<Example>(Path::new("/nonexistent/x.toml"), "HASHPOOL_TEST_MISSING")
            .unwrap_err();
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }
}

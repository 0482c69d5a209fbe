//! Roles as child processes of the test.
//!
//! A test binary re-executes itself to run one role as a child process the
//! test can kill with SIGKILL: a real crash, no shutdown step runs. Each test
//! file that does so declares `role_child_entry!();`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

/// The role the re-executed test binary runs ("devnet-tp", "mint", "pool",
/// "translator", "pool-stats").
pub const ROLE_CHILD_ROLE: &str = "HASHPOOL_TEST_ROLE";
/// Its config file (TOML, loaded like `<role> --config`).
pub const ROLE_CHILD_CONFIG: &str = "HASHPOOL_TEST_ROLE_CONFIG";

/// Declares the `role_child` test a re-executed test binary runs.
#[macro_export]
macro_rules! role_child_entry {
    () => {
        #[test]
        fn role_child() {
            $crate::run_role_child_if_asked();
        }
    };
}

/// A benchmark binary's start: `None` when it was re-executed as a role
/// child (the role ran); otherwise its positional numeric arguments, each
/// missing one from `defaults`.
pub fn bench_args<const N: usize>(defaults: [f64; N]) -> Option<[f64; N]> {
    run_role_child_if_asked();
    if std::env::var_os(ROLE_CHILD_ROLE).is_some() {
        return None;
    }
    let given: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut args = defaults;
    for (arg, value) in args.iter_mut().zip(given) {
        *arg = value;
    }
    Some(args)
}

/// In a re-executed test binary: runs the role named by the environment
/// until SIGINT/SIGTERM/SIGHUP (or SIGKILL). Otherwise returns at once.
pub fn run_role_child_if_asked() {
    let (Ok(role), Some(path)) = (
        std::env::var(ROLE_CHILD_ROLE),
        std::env::var_os(ROLE_CHILD_CONFIG),
    ) else {
        return;
    };
    let path = Path::new(&path);
    roles_common::init_logging();
    // The runtime the role's own binary runs on.
    let runtime = roles_common::new_runtime(&role).expect("runtime");
    let result = runtime.block_on(async {
        let shutdown = roles_common::shutdown_on_signal();
        match role.as_str() {
            "devnet-tp" => run_role(path, shutdown, devnet_tp::run).await,
            "mint" => run_role(path, shutdown, mint::run).await,
            "pool" => run_role(path, shutdown, pool::run).await,
            "translator" => run_role(path, shutdown, translator::run).await,
            "jd-client" => run_role(path, shutdown, jd_client::run).await,
            "pool-stats" => {
                run_role(path, shutdown, stats_common::run::<pool_stats::PoolStats>).await
            }
            other => Err(format!("no role {other}")),
        }
    });
    result.expect("the role ran");
}

/// Runs a role's `run` on its config file `path` (loaded like `<role> --config`).
async fn run_role<C, F, E>(
    path: &Path,
    shutdown: roles_common::CancellationToken,
    run: impl FnOnce(C, roles_common::CancellationToken) -> F,
) -> Result<(), String>
where
    C: serde::de::DeserializeOwned + roles_common::Validate,
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config = roles_common::load_config(path, "HASHPOOL_TEST_ROLE_CHILD").expect("config");
    run(config, shutdown).await.map_err(|e| e.to_string())
}

/// A role running as a child process of the test.
pub struct RoleChild {
    role: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

impl RoleChild {
    /// Starts `role` from `config`; its output goes to `<config>.log`.
    pub fn spawn(role: &str, config: &Path) -> Self {
        let mut this = Self {
            role: role.to_string(),
            config: config.to_path_buf(),
            log: config.with_extension("log"),
            child: None,
        };
        this.start();
        this
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("child log");
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["role_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_CHILD_ROLE, &self.role)
            .env(ROLE_CHILD_CONFIG, &self.config)
            .stdout(log.try_clone().expect("child log"))
            .stderr(log)
            .spawn()
            .expect("role child starts");
        self.child = Some(child);
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the role again from the same config (and state).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGINT (a graceful stop); returns whether it exited successfully.
    pub fn interrupt(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        sent && child.wait().is_ok_and(|s| s.success())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The child's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for RoleChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A role config from a TOML file, as `<role> --config` loads it.
pub fn load_config<C: serde::de::DeserializeOwned + roles_common::Validate>(path: &Path) -> C {
    roles_common::load_config(path, "HASHPOOL_TEST_CONFIG").expect("config loads")
}

/// Waits until something accepts connections on `addr`.
pub async fn until_listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! `hashpool devnet` as a process, as a newcomer runs it: it mines and the
//! wallet grows, SIGINT stops it with exit 0, and a second run continues
//! from the state dir (while one runs, another on it is refused). Bad
//! config stops it with one line naming the field.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hashpool::status::parse_wallet_balance;
use roles_common::free_port::free_address;
use roles_common::testing::{refused_config, stdout_of};

fn profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devnet.toml")
}

/// Free ports for every listener, kept across both runs: the wallet's
/// ecash belongs to the mint's URL, so a devnet that continues keeps it.
fn ports() -> [(&'static str, String); 10] {
    let free = || free_address().to_string();
    let http = free();
    [
        ("DEVNET_TP__LISTEN_ADDRESS", free()),
        ("MINT__LINK_LISTEN", free()),
        ("POOL__LISTEN_ADDRESS", free()),
        ("TRANSLATOR__LISTEN_ADDRESS", free()),
        ("TRANSLATOR__MINT_URL", format!("http://{http}")),
        ("MINT__HTTP_LISTEN", http),
        ("POOL_STATS__INGEST_LISTEN", free()),
        ("POOL_STATS__HTTP_LISTEN", free()),
        ("PROXY_STATS__INGEST_LISTEN", free()),
        ("PROXY_STATS__HTTP_LISTEN", free()),
    ]
}

/// The shipped profile on the given ports, tuned for a debug build on a
/// shared CI machine: one hashing thread, ~20 k hashes per share worth 19
/// ehash, a status line a second.
fn hashpool(state: &Path, ports: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashpool"));
    cmd.envs(ports.iter().map(|(k, v)| (k, v)));
    let (command, rest) = args.split_first().expect("a command");
    cmd.arg(command)
        .arg("--profile")
        .arg(profile())
        .arg("--state-dir")
        .arg(state)
        .args(rest)
        .env("HASHPOOL_DEVNET__STATUS_INTERVAL_SECS", "1")
        .env("MINER__THREADS", "1")
        .env("TRANSLATOR__NOMINAL_HASHRATE", "2000")
        .env("POOL__UNIT_BITS", "10")
        .env("MINT__UNIT_BITS", "10");
    cmd
}

struct Devnet {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Devnet {
    fn start(state: &Path, ports: &[(&str, String)]) -> Self {
        Self::start_with(state, ports, &["devnet"])
    }

    /// In a process group of its own, as a shell runs a command.
    fn start_with(state: &Path, ports: &[(&str, String)], args: &[&str]) -> Self {
        let mut child = hashpool(state, ports, args)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hashpool starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("devnet| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line that satisfies `f`, within `secs`.
    fn line(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if f(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("hashpool devnet: never printed {what}"),
            }
        }
    }

    fn balance_above(&self, floor: u64) -> u64 {
        let line = self.line(120, &format!("a wallet balance above {floor}"), |l| {
            parse_wallet_balance(l).is_some_and(|b| b > floor)
        });
        parse_wallet_balance(&line).unwrap()
    }

    /// SIGINT to its whole process group, as Ctrl-C in a terminal.
    fn interrupt(mut self) -> (ExitStatus, Vec<String>) {
        let group = format!("-{}", self.child.id());
        assert!(Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit 60 s after SIGINT");
            std::thread::sleep(Duration::from_millis(100));
        };
        let rest = self.lines.try_iter().collect();
        (status, rest)
    }
}

/// A test that fails before `interrupt` leaves nothing running: the
/// devnet is stopped as Ctrl-C stops it (and so stops the servers of
/// `--scale-out`, which have process groups of their own), or killed if it
/// does not stop (and they stop with it).
impl Drop for Devnet {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        for signal in ["-INT", "-KILL"] {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            let _ = Command::new("kill").args([signal, "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.wait();
    }
}

#[test]
fn hashpool_devnet_mines_pays_stops_on_sigint_and_continues() {
    let state = tempfile::tempdir().unwrap();
    let ports = ports();
    let devnet = Devnet::start(state.path(), &ports);
    let dashboard = |line: String| -> std::net::SocketAddr {
        let url = line.split_whitespace().nth(2).expect("a URL");
        url.trim_start_matches("http://")
            .parse()
            .expect("an address")
    };
    let pool_dashboard =
        dashboard(devnet.line(120, "the pool dashboard", |l| l.contains("pool dashboard")));
    let proxy_dashboard =
        dashboard(devnet.line(5, "the proxy dashboard", |l| l.contains("proxy dashboard")));
    let first = devnet.balance_above(0);
    let grown = devnet.balance_above(first);
    assert!(grown > first);
    // Both stats services hear their role and serve their dashboard.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (addr, what) in [(pool_dashboard, "pool"), (proxy_dashboard, "proxy")] {
        runtime.block_on(stats_common::testing::eventually(
            &format!("the {what} dashboard counting shares"),
            || async move {
                let stats = stats_common::testing::get_json(addr, "/api/stats").await;
                (stats["shares_accepted"].as_u64() > Some(0)).then_some(())
            },
        ));
        let (status, page) = runtime.block_on(stats_common::testing::http(addr, "GET", "/", None));
        assert_eq!(status, 200, "{what} dashboard");
        assert!(page.contains("<svg"), "{what} dashboard has its charts");
    }
    let (status, rest) = devnet.interrupt();
    assert!(status.success(), "exit status {status}");
    assert!(
        rest.iter().any(|l| l.contains("stopped; state kept")),
        "{rest:?}"
    );

    // The wallet outlives the process, with at least what the status showed.
    let stdout = stdout_of(&mut hashpool(state.path(), &ports, &["wallet", "balance"]));
    let saved: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("balance: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no balance in {stdout}"));
    assert!(saved >= grown, "{saved} < {grown}");

    // A second run continues from the state dir: the balance starts from
    // where the first left it and grows on.
    let devnet = Devnet::start(state.path(), &ports);
    let line = devnet.line(120, "a status line", |l| parse_wallet_balance(l).is_some());
    assert!(parse_wallet_balance(&line).unwrap() >= saved, "{line}");
    devnet.balance_above(saved);

    // While it runs, anyone can verify the mint's whole issuance.
    let mint_url = ports
        .iter()
        .find(|(k, _)| *k == "TRANSLATOR__MINT_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let report = stdout_of(
        Command::new(env!("CARGO_BIN_EXE_hashpool")).args(["audit", "--mint", &mint_url]),
    );
    assert!(report.starts_with("audit passed: "), "{report}");

    // A second devnet on the same state dir is refused with one line.
    let refused = hashpool(state.path(), &ports, &["devnet"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let in_use = format!(
        "state dir {} is in use by another hashpool devnet (pid {})",
        state.path().display(),
        devnet.child.id()
    );
    assert!(stderr.contains(&in_use), "{stderr}");
    let (status, _) = devnet.interrupt();
    assert!(status.success(), "exit status {status}");
}

/// `hashpool devnet --jd`: the translator mines through jd-client, which
/// declares the template provider's templates at the pool's job declarator;
/// the wallet grows as before.
#[test]
fn hashpool_devnet_jd_mines_declared_jobs_and_pays() {
    let state = tempfile::tempdir().unwrap();
    let mut ports = ports().to_vec();
    for key in ["JD_CLIENT__LISTEN_ADDRESS", "JD_CLIENT__JDS_ADDRESS"] {
        ports.push((key, free_address().to_string()));
    }
    let devnet = Devnet::start_with(state.path(), &ports, &["devnet", "--jd"]);
    devnet.line(120, "the jd-client line", |l| l.contains("jd-client"));
    devnet.balance_above(0);
    let log = std::fs::read_to_string(state.path().join("devnet.log")).unwrap();
    assert!(
        log.contains("job declared"),
        "the pool's job declarator declared jobs"
    );
    assert!(
        log.contains("custom job set"),
        "the pool set them on the channel"
    );
    assert!(
        !log.contains("mining the pool's jobs"),
        "jd-client never fell back"
    );
    let (status, _) = devnet.interrupt();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn devnet_keys_on_another_network_stop_it_with_one_line() {
    let state = tempfile::tempdir().unwrap();
    refused_config(
        hashpool(state.path(), &[], &["devnet", "--ephemeral-ports"])
            .env("POOL__NETWORK", "mainnet"),
        &["pool.toml", "authority_secret_key", "mainnet"],
    );
}

/// `hashpool devnet --scale-out`: two mint instances on one PostgreSQL read
/// the quote requests of two pools from Redis Streams; the miner's shares
/// go through the first pool and the wallet grows as before.
#[test]
fn hashpool_devnet_scale_out_quotes_over_redis_and_pays() {
    let state = tempfile::tempdir().unwrap();
    let devnet = Devnet::start_with(state.path(), &ports(), &["devnet", "--scale-out"]);
    devnet.line(120, "the Redis line", |l| l.contains("Redis"));
    devnet.balance_above(0);
    // Its own state, next to the given state dir.
    let mut scale_out = state.path().as_os_str().to_owned();
    scale_out.push("-scale-out");
    let scale_out = std::path::PathBuf::from(scale_out);
    let log = std::fs::read_to_string(scale_out.join("devnet.log")).unwrap();
    for consumer in ["devnet-mint-a", "devnet-mint-b"] {
        assert!(
            log.contains(&format!(
                "reading hashpool:mint-quote:requests as `{consumer}`"
            )),
            "mint instance {consumer} reads the request stream"
        );
    }
    assert_eq!(
        log.matches("mint link up: redis").count(),
        2,
        "both pools reach the mints over Redis"
    );
    assert!(
        log.contains("database postgres://"),
        "the mints are on PostgreSQL"
    );
    let (status, _) = devnet.interrupt();
    assert!(status.success(), "exit status {status}");
    // Ctrl-C stops the devnet, which stops PostgreSQL and Redis after the
    // mints have written their last quotes: no role lost its database or
    // stream while stopping.
    let log = std::fs::read_to_string(scale_out.join("devnet.log")).unwrap();
    let stopping = log.find("shutdown requested").expect("a shutdown");
    let lost = [
        " ERROR ",
        "cannot checkpoint",
        "transport down",
        "link down",
        "rolling back",
        "writer has not stopped",
    ];
    let complaints: Vec<&str> = log[stopping..]
        .lines()
        .filter(|l| lost.iter().any(|c| l.contains(c)))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
    std::fs::remove_dir_all(&scale_out).unwrap();
}

/// A devnet killed outright (SIGKILL) cannot stop the servers of
/// `--scale-out`: they stop by themselves, with the thread that started them.
#[test]
fn a_killed_scale_out_devnet_leaves_no_server_running() {
    let state = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start_with(state.path(), &ports(), &["devnet", "--scale-out"]);
    let address = |line: String| -> SocketAddr {
        let field = line.split_whitespace().nth(1).unwrap();
        field.trim_start_matches("redis://").parse().unwrap()
    };
    let postgres = address(devnet.line(120, "the PostgreSQL line", |l| {
        l.trim_start().starts_with("PostgreSQL ")
    }));
    let redis = address(devnet.line(10, "the Redis line", |l| {
        l.trim_start().starts_with("Redis ")
    }));
    for server in [postgres, redis] {
        assert!(TcpStream::connect(server).is_ok(), "{server} serves");
    }
    devnet.child.kill().unwrap();
    devnet.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while [postgres, redis]
        .iter()
        .any(|server| TcpStream::connect(server).is_ok())
    {
        assert!(Instant::now() < deadline, "a server outlived the devnet");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut scale_out = state.path().as_os_str().to_owned();
    scale_out.push("-scale-out");
    std::fs::remove_dir_all(scale_out).unwrap();
}

//! Real PostgreSQL and Redis servers for tests and the devnet: each a
//! throwaway instance on 127.0.0.1, on a free port, with its data in a
//! temporary directory it removes when dropped. They run the Debian
//! packages' binaries (`bash scripts/setup.sh` installs them), durably as
//! configured in production (fsync on; Redis's append-only file synced on
//! every write), since what the tests check is what survives.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::free_port::free_port;

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// The user PostgreSQL runs as when started by root (it refuses root);
/// the Debian package creates it.
const POSTGRES_SYSTEM_USER: &str = "postgres";
/// The database user and the database `url()` names.
const POSTGRES_USER: &str = "hashpool";
const POSTGRES_DATABASE: &str = "hashpool";

/// Who a server's process group is, and so who a terminal's Ctrl-C
/// reaches (it signals the whole foreground group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessGroup {
    /// Its parent's: it stops with an interrupted test run.
    Parent,
    /// Its own: only its owner stops it, after what uses it (the devnet's
    /// mints write to PostgreSQL as they stop). It also gets a stop signal
    /// when the thread that started it ends, however its process ends
    /// (SIGKILL too): start it on a thread that lives as long as it is used.
    Own,
}

impl ProcessGroup {
    /// A server `program` (run as `user`, if given) in this group. In a
    /// group of its own it gets `stop` when the thread that started it
    /// ends; in its parent's none (a test's Ctrl-C reaches it there, and
    /// tests start servers on threads that come and go).
    fn server(self, program: &Path, user: Option<&str>, stop: &str) -> Command {
        let own = self == ProcessGroup::Own;
        let mut command = command(program, user, own.then_some(stop));
        if own {
            command.process_group(0);
        }
        command
    }
}

/// A throwaway PostgreSQL server: `initdb` in a temporary directory,
/// `postgres` as a child process listening on 127.0.0.1 only (trust
/// authentication), one database. Dropping it stops the server and removes
/// its directory.
pub struct Postgres {
    port: u16,
    child: Child,
    dir: TempDir,
}

impl Postgres {
    /// Initialises, starts and waits for a fresh server with one database.
    pub fn start(group: ProcessGroup) -> Result<Postgres, String> {
        let bin = postgres_bindir()?;
        let as_root = running_as_root()?;
        let dir = TempDir::new("postgres")?;
        if as_root {
            let owner = format!("{POSTGRES_SYSTEM_USER}:");
            run(Command::new("chown").arg(&owner).arg(dir.path())).map_err(|e| {
                format!(
                    "PostgreSQL refuses to run as root and there is no usable `{POSTGRES_SYSTEM_USER}` \
                     user ({e}); install the Debian package postgresql (bash scripts/setup.sh)"
                )
            })?;
        }
        let data = dir.path().join("data");
        let user = as_root.then_some(POSTGRES_SYSTEM_USER);
        run(command(&bin.join("initdb"), user, None)
            .current_dir(dir.path())
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", POSTGRES_USER])
            .args(["--auth", "trust", "--encoding", "UTF8", "--no-locale"]))
        .map_err(|e| format!("initdb: {e}"))?;

        let port = free_port()?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        writeln!(
            conf,
            "\n# A throwaway server of the hashpool tests.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             fsync = on\n\
             synchronous_commit = on\n\
             max_connections = 200",
            dir.path().display()
        )
        .map_err(|e| format!("postgresql.conf: {e}"))?;
        drop(conf);

        let log_path = dir.path().join("postgres.log");
        let log = File::create(&log_path).map_err(|e| format!("postgres.log: {e}"))?;
        // SIGINT: a fast shutdown, the server's children end with it.
        let child = group
            .server(&bin.join("postgres"), user, "INT")
            .current_dir(dir.path())
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.join("postgres").display()))?;
        let mut postgres = Postgres { port, child, dir };
        let addr = postgres.addr();
        let pg_isready = bin.join("pg_isready");
        wait_until("PostgreSQL", &mut postgres.child, &log_path, || {
            TcpStream::connect_timeout(&addr, POLL).is_ok()
                && (!pg_isready.exists()
                    || Command::new(&pg_isready)
                        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                        .args(["-U", POSTGRES_USER, "-d", "postgres"])
                        .status()
                        .is_ok_and(|s| s.success()))
        })?;
        run(Command::new(bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", POSTGRES_USER, POSTGRES_DATABASE]))
        .map_err(|e| format!("createdb: {e}"))?;
        Ok(postgres)
    }

    /// `postgres://hashpool@127.0.0.1:<port>/hashpool`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{POSTGRES_USER}@127.0.0.1:{}/{POSTGRES_DATABASE}",
            self.port
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the server's children end with it.
        stop(&mut self.child, "QUIT");
    }
}

/// A throwaway Redis server: `redis-server` as a child process on
/// 127.0.0.1, its append-only file synced on every write and no snapshots,
/// so whatever it acknowledged survives a restart or a SIGKILL. Dropping it
/// kills the server and removes its directory.
pub struct Redis {
    port: u16,
    group: ProcessGroup,
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    /// Starts a fresh server and waits until it answers PING.
    pub fn start(group: ProcessGroup) -> Result<Redis, String> {
        let mut redis = Redis {
            port: free_port()?,
            group,
            child: None,
            dir: TempDir::new("redis")?,
        };
        redis.start_again()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops the server (SIGTERM) and starts it again on the same port and
    /// data; waits until it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.start_again()
    }

    /// SIGTERM, then waits for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "TERM");
        }
    }

    /// SIGKILL (a crash), then waits for the server to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again, after `stop` or `kill`) on the same port
    /// and data; waits until it answers PING.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.path().join("redis.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("redis.log: {e}"))?;
        if !on_path("redis-server") {
            return Err(
                "redis-server not found: install the Debian package redis-server \
                 (bash scripts/setup.sh)"
                    .to_string(),
            );
        }
        let mut child = self
            .group
            .server(Path::new("redis-server"), None, "TERM")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--logfile", ""])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        let addr = self.addr();
        if let Err(e) = wait_until("Redis", &mut child, &log_path, || ping(addr)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    /// The server's log so far (every run of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether Redis at `addr` answers PING with PONG.
fn ping(addr: SocketAddr) -> bool {
    let answer = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    };
    answer().is_ok_and(|line| line.starts_with("+PONG"))
}

/// Polls `ready` until it holds; an error with the log's tail if the
/// process exits first or it takes longer than [`START_TIMEOUT`].
fn wait_until(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        let failure = match child.try_wait() {
            Ok(Some(status)) => format!("{what} exited ({status}) before it accepted connections"),
            Err(e) => format!("{what}: {e}"),
            Ok(None) if Instant::now() > deadline => {
                format!("{what} accepted no connection within {START_TIMEOUT:?}")
            }
            Ok(None) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        return Err(format!("{failure}; its log ends:\n{}", log_tail(log, 20)));
    }
}

/// Signals `child` (`kill -<signal>`) and waits for it to exit; SIGKILL
/// after [`STOP_TIMEOUT`].
fn stop(child: &mut Child, signal: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `program` is a file in a directory of `PATH` (it may be run
/// through `setpriv`, whose failure to find it would say less).
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs `command` to completion; its output in the error if it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{:?} not found", command.get_program()),
        _ => format!("{:?}: {e}", command.get_program()),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let said: Vec<String> = [&output.stderr, &output.stdout]
        .iter()
        .map(|out| String::from_utf8_lossy(out).trim().to_string())
        .filter(|out| !out.is_empty())
        .collect();
    Err(format!("{}: {}", output.status, said.join("; ")))
}

/// `program`, through `setpriv` when it must run as `user` (PostgreSQL
/// refuses root) or get `death_signal` when the thread that starts it
/// ends; setpriv execs the program, so a child process is the program
/// itself.
fn command(program: &Path, user: Option<&str>, death_signal: Option<&str>) -> Command {
    if user.is_none() && death_signal.is_none() {
        return Command::new(program);
    }
    let mut setpriv = Command::new("setpriv");
    if let Some(user) = user {
        setpriv
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .arg("--init-groups");
    }
    if let Some(signal) = death_signal {
        setpriv.arg(format!("--pdeathsig={signal}"));
    }
    setpriv.arg("--").arg(program);
    setpriv
}

fn running_as_root() -> Result<bool, String> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The directory of the newest PostgreSQL server binaries: Debian's
/// /usr/lib/postgresql/<version>/bin, else what `pg_config --bindir` says.
fn postgres_bindir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let pg_config = Command::new("pg_config").arg("--bindir").output();
    if let Ok(output) = pg_config {
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&bin) {
            return Ok(bin);
        }
    }
    Err(
        "no PostgreSQL server (initdb, postgres) found: install the Debian package \
         postgresql (bash scripts/setup.sh)"
            .to_string(),
    )
}

/// A fresh directory in the system's temporary directory, removed on drop.
/// Its process holds a lock on a file in it while it lives, so that a
/// directory whose owner is gone (a killed devnet's) is told from one in
/// use, by any process on the machine.
struct TempDir {
    path: PathBuf,
    _owner: File,
}

/// The file in a [`TempDir`] its owner keeps locked.
const OWNER_LOCK: &str = "owner.lock";

impl TempDir {
    /// Also removes the directories of this kind whose owner is gone.
    fn new(what: &str) -> Result<Self, String> {
        remove_left_behind(&std::env::temp_dir(), what);
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "hashpool-{what}-{}-{nanos}-{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        // Made under another name and renamed once locked: a directory is
        // never seen unlocked while its owner lives.
        let making = std::env::temp_dir().join(format!(".{name}"));
        let path = std::env::temp_dir().join(name);
        let failed = |e: std::io::Error| format!("{}: {e}", making.display());
        std::fs::create_dir(&making).map_err(failed)?;
        let owner = File::create(making.join(OWNER_LOCK))
            .and_then(|f| f.lock().map(|()| f))
            .map_err(failed)?;
        std::fs::rename(&making, &path).map_err(failed)?;
        Ok(Self {
            path,
            _owner: owner,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the `hashpool-<what>-...` directories in `parent` whose owner
/// lock nobody holds: their process is gone (and with it, if it ran them in
/// a process group of their own, their servers).
fn remove_left_behind(parent: &Path, what: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("hashpool-{what}-");
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        // No lock file: not one of ours.
        let Ok(lock) = File::options()
            .write(true)
            .open(entry.path().join(OWNER_LOCK))
        else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::info!(dir = %entry.path().display(), "removing what a {what} server whose owner is gone left behind");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// One RESP command's reply, raw (`+OK\r\n`, `$5\r\nvalue\r\n`, ...).
    fn redis_command(addr: SocketAddr, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 512];
        // Replies here are one line, or a bulk string's two.
        while !is_complete(&reply) {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "Redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(reply).unwrap()
    }

    fn is_complete(reply: &[u8]) -> bool {
        let lines = reply.windows(2).filter(|w| w == b"\r\n").count();
        match reply.first() {
            Some(b'$') if !reply.starts_with(b"$-1") => lines >= 2,
            Some(_) => lines >= 1,
            None => false,
        }
    }

    #[test]
    fn postgres_starts_accepts_connections_and_is_gone_when_dropped() {
        let postgres = Postgres::start(ProcessGroup::Parent).unwrap();
        let url = postgres.url();
        assert!(url.starts_with("postgres://hashpool@127.0.0.1:"), "{url}");
        let port = postgres.addr().port().to_string();
        let bin = postgres_bindir().unwrap();
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port, "-d", "hashpool"])
            .args(["-U", "hashpool"])
            .status()
            .unwrap();
        assert!(ready.success(), "{}", postgres.log());
        let (addr, dir) = (postgres.addr(), postgres.dir.path().to_path_buf());
        drop(postgres);
        assert!(TcpStream::connect(addr).is_err(), "still listening");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn redis_keeps_what_it_acknowledged_across_a_restart_and_a_kill() {
        let mut redis = Redis::start(ProcessGroup::Parent).unwrap();
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        let addr = redis.addr();
        assert_eq!(redis_command(addr, &["SET", "share", "quoted"]), "+OK\r\n");

        redis.restart().unwrap();
        assert_eq!(redis.addr(), addr);
        assert_eq!(redis_command(addr, &["GET", "share"]), "$6\r\nquoted\r\n");

        assert_eq!(redis_command(addr, &["SET", "share", "paid"]), "+OK\r\n");
        redis.kill();
        assert!(!ping(addr), "still answering after SIGKILL");
        redis.start_again().unwrap();
        assert_eq!(redis_command(addr, &["GET", "share"]), "$4\r\npaid\r\n");

        let dir = redis.dir.path().to_path_buf();
        drop(redis);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn servers_of_their_own_group_stop_when_the_thread_that_started_them_ends() {
        // The thread ends without dropping them, as a killed process would.
        let started = std::thread::spawn(|| {
            let postgres = Postgres::start(ProcessGroup::Own).unwrap();
            let redis = Redis::start(ProcessGroup::Own).unwrap();
            let addrs = (postgres.addr(), redis.addr());
            let dirs = [postgres.dir.path(), redis.dir.path()].map(Path::to_path_buf);
            std::mem::forget((postgres, redis));
            (addrs, dirs)
        });
        let ((postgres, redis), dirs) = started.join().unwrap();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while TcpStream::connect(postgres).is_ok() || ping(redis) {
            assert!(
                Instant::now() < deadline,
                "still serving after their thread ended"
            );
            std::thread::sleep(POLL);
        }
        for dir in dirs {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn directories_whose_owner_is_gone_are_removed_and_others_kept() {
        let parent = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        let with_lock = |name: &str| {
            let dir = dir(name);
            let lock = File::create(dir.join(OWNER_LOCK)).unwrap();
            (dir, lock)
        };
        let (left, _unlocked) = with_lock("hashpool-redis-1-2-0");
        let (in_use, owner) = with_lock("hashpool-redis-1-2-1");
        owner.lock().unwrap();
        let not_ours = dir("hashpool-redis-1-2-2");
        let (other_kind, _) = with_lock("hashpool-postgres-1-2-3");
        remove_left_behind(parent.path(), "redis");
        assert!(!left.exists());
        assert!(in_use.exists() && not_ours.exists() && other_kind.exists());
    }
}

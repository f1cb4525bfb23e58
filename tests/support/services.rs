//! Private servers for fault tests: a Redis, a MariaDB and an `fcfs-runner` that are real OS
//! processes of one test alone, so the test may SIGKILL, restart, pause or roll them back without
//! disturbing the shared services the other tests use at the same time. No mocks: the binaries
//! installed on the machine (`redis-server`, `mariadbd`, `mariadb-install-db`) and the workspace's
//! `fcfs-runner`.
//!
//! Every server listens on 127.0.0.1 on a port that was free a moment before, keeps its files in a
//! fresh directory under the temp dir, and writes its stdout and stderr to a log file there. Every
//! wait has a deadline and panics with the tail of that log. `Drop` kills the process and removes
//! the directory; a panicking test unwinds through it, but a test process that is itself SIGKILLed
//! leaves its servers running.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use std::{fs, io};

use redis::aio::MultiplexedConnection;

use crate::repo_root;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// Lines of a server's log a failed wait shows.
const PANIC_LOG_LINES: usize = 40;

/// A port nothing listens on right now. Another process may take it before the server binds it;
/// the server then exits and the wait for it panics with its log, which says so.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("an ephemeral port on 127.0.0.1")
        .port()
}

fn fresh_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fcfs-{kind}-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// stdout and stderr of a server, appended to `path` so a restart keeps the earlier runs' lines.
fn log_to(path: &Path) -> (Stdio, Stdio) {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let copy = file.try_clone().expect("a second handle on the log file");
    (file.into(), copy.into())
}

/// The last `lines` lines of a log file (or why there are none).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Polls `ready` until it holds, for at most `deadline`. Panics with the tail of the server's log
/// if the deadline passes or the server exits first (a port taken meanwhile, a refused flag).
async fn wait_for<F, Fut>(what: &str, deadline: Duration, child: &mut Child, log: &Path, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if ready().await {
            return;
        }
        if let Some(status) = child.try_wait().expect("the server's status") {
            panic!(
                "{what}: no, the server exited ({status}) after {:?}; the end of {}:\n{}",
                started.elapsed(),
                log.display(),
                tail(log, PANIC_LOG_LINES)
            );
        }
        if started.elapsed() > deadline {
            panic!(
                "{what}: not within {deadline:?}; the end of {}:\n{}",
                log.display(),
                tail(log, PANIC_LOG_LINES)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILL (what `Child::kill` sends) and reap, so the port and the files are free on return.
fn kill_and_reap(child: &mut Child) {
    // A child that already exited makes `kill` fail; `wait` reaps it all the same.
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// A server process a test may pause (SIGSTOP), resume and kill, remembering whether it is
/// stopped so a kill never leaves a stopped process behind.
#[derive(Default)]
struct Pausable {
    child: Option<Child>,
    paused: bool,
}

impl Pausable {
    /// The process just spawned; it runs.
    fn set(&mut self, child: Child) -> &mut Child {
        self.paused = false;
        self.child.insert(child)
    }

    fn pid(&self, what: &str) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{what} is not running"))
            .id()
    }

    fn pause(&mut self, what: &str) {
        signal(self.pid(what), "STOP");
        self.paused = true;
    }

    fn resume(&mut self, what: &str) {
        signal(self.pid(what), "CONT");
        self.paused = false;
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                // SIGKILL ends a stopped process too; continuing it first means it is never left
                // stopped should the kill fail.
                let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            }
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }
}

/// A command's output, run on the blocking pool so the test's runtime keeps polling meanwhile.
async fn output(mut command: Command) -> io::Result<std::process::Output> {
    tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output())
        .await
        .expect("the blocking pool runs the command")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// What a private Redis keeps on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (as the shared stack runs it): a restart comes back empty.
    None,
    /// An append-only file fsynced before each write is acknowledged (`appendfsync always`), so a
    /// restart after SIGKILL has every acknowledged write.
    AppendOnlyAlways,
}

/// The data of a private Redis at one moment (an RDB file), to restart it from later with
/// [`PrivateRedis::restart_from`]. The file lives in the instance's directory, so it is valid while
/// that instance is.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A `redis-server` of one test. `start` and `restart` take about 50 ms (measured), `restart_from`
/// with AppendOnlyAlways about 160 ms (mostly the AOF rewrite, which Redis notices ending on its
/// 100 ms cron).
pub struct PrivateRedis {
    persistence: Persistence,
    port: u16,
    dir: PathBuf,
    process: Pausable,
}

impl PrivateRedis {
    /// Starts a server on a free port with a fresh directory and waits until it answers PING.
    pub async fn start(persistence: Persistence) -> PrivateRedis {
        let mut redis = PrivateRedis {
            persistence,
            port: free_port(),
            dir: fresh_dir("redis"),
            process: Pausable::default(),
        };
        redis.launch(persistence == Persistence::AppendOnlyAlways).await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.process.pid("the private Redis")
    }

    /// The last `lines` lines the server wrote (over all its runs).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// A new connection whose commands fail with a timeout error after `response_timeout`.
    pub async fn connection(&self, response_timeout: Duration) -> MultiplexedConnection {
        connect(&self.url(), response_timeout)
            .await
            .unwrap_or_else(|e| panic!("no connection to the private Redis at {}: {e}", self.url()))
    }

    /// `SAVE`s the data and keeps the file aside as the snapshot.
    pub async fn snapshot(&self) -> Snapshot {
        let mut conn = self.connection(Duration::from_secs(10)).await;
        let () = redis::cmd("SAVE")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("SAVE failed: {e}; the end of the log:\n{}", self.log_tail(20)));
        let path = self.dir.join(format!("snapshot-{}.rdb", uuid::Uuid::new_v4().simple()));
        // Moved, not copied: a dump.rdb left behind would bring this data back on a restart of a
        // Persistence::None server, which must come back empty (with AOF on, Redis ignores it).
        fs::rename(self.dump(), &path).expect("SAVE wrote dump.rdb");
        Snapshot { path }
    }

    /// SIGKILL and reap. Nothing is saved on the way out (SIGKILL cannot be caught).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again (killing it first if it runs) on the same port and directory, so it
    /// loads what it persisted: everything with AppendOnlyAlways, nothing with None.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch(self.persistence == Persistence::AppendOnlyAlways).await;
    }

    /// Restarts the server (killing it first if it runs) with exactly the data of `snapshot`, as
    /// if it had been restored from an older backup: later writes are gone. It keeps its
    /// persistence: with AppendOnlyAlways, writes after this return survive a kill and restart.
    ///
    /// Redis 7 started with `appendonly yes` loads its AOF (`appendonlydir/`) and ignores
    /// `dump.rdb`; with no AOF there, it creates an empty one, still ignoring `dump.rdb`. So the
    /// snapshot is loaded by a server started with `appendonly no`, and AOF is then switched on
    /// with `CONFIG SET appendonly yes`, which rewrites the AOF from memory (a forked child); this
    /// waits until that rewrite is done, since a write acknowledged during it is not yet in the
    /// AOF's manifest and would not survive a kill.
    pub async fn restart_from(&mut self, snapshot: &Snapshot) {
        self.kill();
        let aof = self.dir.join("appendonlydir");
        if aof.exists() {
            fs::remove_dir_all(&aof).unwrap_or_else(|e| panic!("cannot remove {}: {e}", aof.display()));
        }
        fs::copy(&snapshot.path, self.dump())
            .unwrap_or_else(|e| panic!("cannot copy {} to dump.rdb: {e}", snapshot.path.display()));
        self.launch(false).await;
        // Loaded (PING answers only after loading): without the file, a later restart of a
        // Persistence::None server comes back empty as it should.
        fs::remove_file(self.dump()).expect("remove dump.rdb");
        if self.persistence == Persistence::AppendOnlyAlways {
            self.switch_aof_on().await;
        }
    }

    /// SIGSTOP: the server hangs. The kernel still accepts connections and buffers requests, but
    /// nothing answers until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        self.process.pause("the private Redis");
    }

    /// SIGCONT: the server answers again, the requests it was sent while paused first.
    pub fn resume(&mut self) {
        self.process.resume("the private Redis");
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn dump(&self) -> PathBuf {
        self.dir.join("dump.rdb")
    }

    async fn launch(&mut self, append_only: bool) {
        let (stdout, stderr) = log_to(&self.log());
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            // No RDB saves of its own: the data on disk is the AOF, or what snapshot() saved.
            .args(["--save", ""])
            .args(["--appendonly", if append_only { "yes" } else { "no" }]);
        if self.persistence == Persistence::AppendOnlyAlways {
            // Also when started without AOF (restart_from), so switching it on gives this setting.
            command.args(["--appendfsync", "always"]);
        }
        command
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server (is Redis installed?): {e}"));
        let url = self.url();
        let log = self.log();
        let child = self.process.set(child);
        wait_for(
            &format!("Redis at {url} answers PING"),
            Duration::from_secs(10),
            child,
            &log,
            || ping(&url),
        )
        .await;
    }

    async fn switch_aof_on(&mut self) {
        let mut conn = self.connection(Duration::from_secs(10)).await;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CONFIG SET appendonly yes failed: {e}"));
        let deadline = Duration::from_secs(10);
        let started = Instant::now();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query_async(&mut conn)
                .await
                .expect("INFO persistence");
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_owned()
            };
            // CONFIG SET starts (or schedules) the rewrite before it answers, so "none in
            // progress, none scheduled" after it means this rewrite has finished.
            if field("aof_enabled") == "1"
                && field("aof_rewrite_in_progress") == "0"
                && field("aof_rewrite_scheduled") == "0"
            {
                assert_eq!(
                    field("aof_last_bgrewrite_status"),
                    "ok",
                    "the AOF rewrite failed; the end of the log:\n{}",
                    self.log_tail(PANIC_LOG_LINES)
                );
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "the AOF rewrite after CONFIG SET appendonly yes did not finish within {deadline:?}; the end of the log:\n{}",
                self.log_tail(PANIC_LOG_LINES)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

async fn connect(url: &str, response_timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// PONG, not an error: while loading its data Redis accepts connections but answers -LOADING.
async fn ping(url: &str) -> bool {
    let Ok(mut conn) = connect(url, Duration::from_millis(500)).await else {
        return false;
    };
    matches!(redis::cmd("PING").query_async::<String>(&mut conn).await, Ok(pong) if pong == "PONG")
}

// ---------------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------------

/// InnoDB's redo log size, for the template and every server: the default (96 MB) made each
/// datadir copy take 0.65 s instead of 0.2 s; a server started with another size than its datadir
/// has resizes the log first.
const INNODB_LOG_FILE_SIZE: &str = "16M";

/// A `mariadbd` of one test, with database `fcfs` migrated as the project's, and user `fcfs`
/// (password `fcfs`). `start` takes 0.5 to 0.8 s (measured on 2 busy cores: copying the template
/// datadir 0.2 s, the server ready 0.3 s, database, user and migrations 0.03 s); the first start on
/// a machine also runs `mariadb-install-db` (about 1 s) to make that template. A restart after
/// SIGKILL, InnoDB's crash recovery included, takes about 0.2 s.
pub struct PrivateMariaDb {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// A fresh server: its own copy of the template datadir, a free port, the database and user
    /// created over the root socket, the migrations run.
    pub async fn start() -> PrivateMariaDb {
        let template = tokio::task::spawn_blocking(|| TEMPLATE.get_or_init(prepare_template).as_path())
            .await
            .expect("the template datadir is prepared");
        let dir = fresh_dir("mariadb");
        let data = dir.join("data");
        tokio::task::spawn_blocking(move || copy_dir(template, &data))
            .await
            .expect("the template datadir is copied");
        let mut db = PrivateMariaDb {
            port: free_port(),
            dir,
            child: None,
        };
        db.launch().await;
        db.root_sql(
            "CREATE DATABASE fcfs CHARACTER SET utf8mb4;
             CREATE USER 'fcfs'@'127.0.0.1' IDENTIFIED BY 'fcfs';
             CREATE USER 'fcfs'@'localhost' IDENTIFIED BY 'fcfs';
             GRANT ALL PRIVILEGES ON fcfs.* TO 'fcfs'@'127.0.0.1';
             GRANT ALL PRIVILEGES ON fcfs.* TO 'fcfs'@'localhost';",
        )
        .await;
        let pool = fcfs_shared::adapters::mysql::connect(&db.url(), 2)
            .await
            .unwrap_or_else(|e| panic!("no connection to the private MariaDB at {}: {e}", db.url()));
        fcfs_shared::adapters::mysql::MIGRATOR
            .run(&pool)
            .await
            .expect("the migrations run on the private MariaDB");
        pool.close().await;
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://fcfs:fcfs@127.0.0.1:{}/fcfs", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the private MariaDB is running").id()
    }

    /// The last `lines` lines the server wrote (over all its runs).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// SIGKILL and reap: uncommitted transactions die with it; committed ones are in the redo log.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts the server again (killing it first if it runs) on the same datadir and port, and
    /// waits until it answers; after a kill, InnoDB's crash recovery runs first.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    fn log(&self) -> PathBuf {
        self.dir.join("mariadbd.log")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    async fn launch(&mut self) {
        let (stdout, stderr) = log_to(&self.log());
        let child = Command::new("mariadbd")
            // First, as mariadbd requires: no my.cnf of the machine applies.
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("mariadbd.pid").display()))
            // Required when the tests run as root, harmless otherwise.
            .arg(format!("--user={}", user()))
            .args(["--bind-address=127.0.0.1", &format!("--port={}", self.port)])
            .arg("--skip-name-resolve")
            // As the shared server (scripts/stack.sh), so tables behave the same.
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ])
            .arg("--innodb-buffer-pool-size=64M")
            .arg(format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}"))
            .arg("--skip-log-bin")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mariadbd (is MariaDB installed?): {e}"));
        self.child = Some(child);
        let socket = self.socket();
        let log = self.log();
        let child = self.child.as_mut().expect("just spawned");
        wait_for(
            &format!("MariaDB at 127.0.0.1:{} answers mariadb-admin ping", self.port),
            Duration::from_secs(60),
            child,
            &log,
            || admin_ping(&socket),
        )
        .await;
    }

    /// Runs SQL as root over the socket (root authenticates by socket, as Debian sets it up).
    async fn root_sql(&self, sql: &str) {
        let mut command = Command::new("mariadb");
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-e", sql]);
        let out = output(command).await.expect("the mariadb client runs");
        assert!(
            out.status.success(),
            "mariadb -u root failed ({}): {}\nSQL: {sql}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

async fn admin_ping(socket: &Path) -> bool {
    let mut command = Command::new("mariadb-admin");
    command
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["--connect-timeout=2", "-u", "root", "ping"]);
    output(command).await.is_ok_and(|out| out.status.success())
}

fn user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("id -un runs");
        assert!(out.status.success(), "id -un failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// The datadir `mariadb-install-db` makes, prepared once and copied for each server: install-db
/// takes about 1 s, a copy 0.2 s. Kept across test processes in the project's cache directory
/// (as scripts/lib.sh names it), one per MariaDB version; made in a scratch directory and renamed
/// into place, so a directory under that name is always complete, even with processes racing.
static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();

fn prepare_template() -> PathBuf {
    let version = Command::new("mariadbd")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run mariadbd (is MariaDB installed?): {e}"));
    let version = String::from_utf8_lossy(&version.stdout);
    // "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
    let version = version
        .split_whitespace()
        .skip_while(|word| *word != "Ver")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in `mariadbd --version`: {version}"))
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "_");
    let root = cache_dir().join("mariadb-template");
    let dir = root.join(format!("{version}-log{INNODB_LOG_FILE_SIZE}"));
    if dir.is_dir() {
        return dir;
    }
    let scratch = root.join(format!("scratch-{}", uuid::Uuid::new_v4().simple()));
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", scratch.display()))
        .arg(format!("--user={}", user()))
        .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
        .arg(format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run mariadb-install-db: {e}"));
    if !out.status.success() {
        let _ = fs::remove_dir_all(&scratch);
        panic!(
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Err(e) = fs::rename(&scratch, &dir) {
        let _ = fs::remove_dir_all(&scratch);
        // Another test process renamed its template into place first: as good as ours.
        assert!(
            dir.is_dir(),
            "cannot move the template datadir to {}: {e}",
            dir.display()
        );
    }
    dir
}

fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FCFS_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var("HOME") {
        Ok(home) => PathBuf::from(home).join(".cache/fcfs-coupons"),
        Err(_) => std::env::temp_dir().join("fcfs-coupons-cache"),
    }
}

/// A copy of a directory tree of plain files (a stopped server's datadir).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display())) {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", entry.path().display(), target.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DynamoDB Local
// ---------------------------------------------------------------------------------------------

/// A DynamoDB Local (the jar `scripts/install.sh` prepares for LocalStack, named by
/// `DYNAMODB_LOCAL_JAR` in `.local/env`) of one test, with its data on disk so a restart keeps
/// the tables. `start` takes 1–3 s (a JVM); the first request another ~2 s.
pub struct PrivateDynamoDb {
    port: u16,
    dir: PathBuf,
    process: Pausable,
}

impl PrivateDynamoDb {
    pub async fn start() -> PrivateDynamoDb {
        let mut db = PrivateDynamoDb {
            port: free_port(),
            dir: fresh_dir("dynamodb"),
            process: Pausable::default(),
        };
        db.launch().await;
        db
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("dynamodb.log"), lines)
    }

    /// A client of this server (the shared services' region and dummy credentials).
    pub async fn client(&self) -> aws_sdk_dynamodb::Client {
        let sdk = fcfs_shared::config::aws_sdk_config().await;
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .endpoint_url(self.endpoint())
                .build(),
        )
    }

    /// SIGSTOP: connections are accepted, nothing answers until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        self.process.pause("the private DynamoDB Local");
    }

    pub fn resume(&mut self) {
        self.process.resume("the private DynamoDB Local");
    }

    /// SIGKILL and reap: the port refuses connections until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn launch(&mut self) {
        let jar = PathBuf::from(crate::env("DYNAMODB_LOCAL_JAR"));
        let home = jar.parent().expect("the jar's folder").to_owned();
        let log = self.dir.join("dynamodb.log");
        let (stdout, stderr) = log_to(&log);
        let data = self.dir.join("data");
        fs::create_dir_all(&data).expect("a data directory");
        let child = Command::new("java")
            .arg(format!(
                "-Djava.library.path={}",
                home.join("DynamoDBLocal_lib").display()
            ))
            .arg("-jar")
            .arg(&jar)
            .args(["-port", &self.port.to_string(), "-disableTelemetry", "-dbPath"])
            .arg(&data)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java for DynamoDB Local: {e}"));
        let port = self.port;
        let child = self.process.set(child);
        wait_for(
            &format!("DynamoDB Local accepts connections on 127.0.0.1:{port}"),
            Duration::from_secs(60),
            child,
            &log,
            || std::future::ready(port_open(port)),
        )
        .await;
    }
}

impl Drop for PrivateDynamoDb {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// A real Lambda binary under a Runtime API emulator
// ---------------------------------------------------------------------------------------------

/// A function's Lambda binary (`$CARGO_TARGET_DIR/debug/<name>`, built by `make test`) running as
/// on Lambda: it polls the Lambda Runtime API that `cargo lambda watch --only-lambda-apis` (from
/// `CARGO_LAMBDA`, which `.local/env` sets) emulates, and each [`invoke`](Self::invoke) is one
/// event through it. The binary gets exactly the variables given (plus the runtime's own and
/// PATH): no test environment leaks into it.
pub struct LambdaBinary {
    port: u16,
    dir: PathBuf,
    emulator: Option<Child>,
    function: Option<Child>,
}

impl LambdaBinary {
    pub async fn start(name: &str, envs: &[(String, String)]) -> LambdaBinary {
        let mut lambda = LambdaBinary {
            port: free_port(),
            dir: fresh_dir("lambda"),
            emulator: None,
            function: None,
        };
        let emulator_log = lambda.dir.join("emulator.log");
        let (stdout, stderr) = log_to(&emulator_log);
        let emulator = Command::new(crate::env("CARGO_LAMBDA"))
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P"])
            .arg(lambda.port.to_string())
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run cargo-lambda: {e}"));
        lambda.emulator = Some(emulator);
        let port = lambda.port;
        wait_for(
            &format!("the Lambda Runtime API emulator on 127.0.0.1:{port}"),
            Duration::from_secs(60),
            lambda.emulator.as_mut().expect("just spawned"),
            &emulator_log,
            || std::future::ready(port_open(port)),
        )
        .await;

        let binary = function_binary(name);
        let (stdout, stderr) = log_to(&lambda.log());
        let function = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // As the emulator asks (`_` is the function it serves when it starts none itself).
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        lambda.function = Some(function);
        lambda
    }

    /// One invocation, as API Gateway or an event source would make it; the function's answer.
    pub async fn invoke(&mut self, event: &serde_json::Value) -> serde_json::Value {
        self.assert_running();
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/_/invocations", self.port);
        let response = reqwest::Client::new()
            .post(&url)
            .json(event)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke failed: {e}\n{}", self.log_tail(PANIC_LOG_LINES)));
        let text = response.text().await.expect("an answer body");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\n{}", self.log_tail(PANIC_LOG_LINES)))
    }

    /// Panics if the function process has exited (it must survive any outage).
    pub fn assert_running(&mut self) {
        let function = self.function.as_mut().expect("started");
        if let Ok(Some(status)) = function.try_wait() {
            panic!(
                "the function exited ({status}); its log:\n{}",
                tail(&self.dir.join("function.log"), PANIC_LOG_LINES)
            );
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("function.log")
    }
}

impl Drop for LambdaBinary {
    fn drop(&mut self) {
        for child in [self.function.as_mut(), self.emulator.as_mut()].into_iter().flatten() {
            kill_and_reap(child);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `$CARGO_TARGET_DIR/debug/<name>`, else beside this test binary's folder.
fn function_binary(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile.join(name));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {name} binary: build it first (`cargo build -p {name}`; `make test` does)"))
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

/// The workspace's `fcfs-runner` as a process of its own, so a test can SIGKILL the API mid-work.
/// It serves template.yaml with the test process's environment (`make test` fills it from
/// `.local/env`), so it uses the shared services unless overridden. It is the binary last built
/// (`make test` builds it first, through `scripts/stack.sh services`), not necessarily the code
/// of this test build. Ready about 0.2 s after the spawn (it finds its queues on LocalStack first).
pub struct RunnerProcess {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RunnerProcess {
    /// Spawns the runner on a free port with the test's environment plus `envs` (which win), and
    /// waits until the port accepts connections.
    pub async fn spawn(envs: &[(String, String)]) -> RunnerProcess {
        let binary = runner_binary();
        let mut runner = RunnerProcess {
            port: free_port(),
            dir: fresh_dir("runner"),
            child: None,
        };
        let (stdout, stderr) = log_to(&runner.log());
        let child = Command::new(&binary)
            .arg("--template")
            .arg(repo_root().join("template.yaml"))
            .args(["--host", "127.0.0.1", "--port", &runner.port.to_string()])
            // The fault tests measure recovery, not the partner's rate.
            .arg("--no-throttle")
            .envs(envs.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        runner.child = Some(child);
        let port = runner.port;
        let log = runner.log();
        let child = runner.child.as_mut().expect("just spawned");
        wait_for(
            &format!("fcfs-runner accepts connections on 127.0.0.1:{port}"),
            Duration::from_secs(60),
            child,
            &log,
            || std::future::ready(port_open(port)),
        )
        .await;
        runner
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The runner's process id; panics if it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the runner is running").id()
    }

    /// SIGKILL and reap: in-flight requests and SQS batches die unfinished.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// The last `lines` lines the runner wrote.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("runner.log")
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn runner_binary() -> PathBuf {
    workspace_binary("fcfs-runner")
}

/// A binary of the workspace (`fcfs-runner`, `fcfs-admin`): `$CARGO_TARGET_DIR/debug/<name>`, else
/// the one beside this test binary (in `<target>/debug/deps`), else `<repo>/target/debug/<name>`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile.join(name));
    }
    candidates.push(repo_root().join("target/debug").join(name));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no {name} binary at {candidates:?}: run the tests through `make test`, which builds it first \
             (scripts/stack.sh services)"
            )
        })
}

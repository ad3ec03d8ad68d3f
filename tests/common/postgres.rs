//! A real PostgreSQL server for tests (see `docs/POSTGRES.md` in the shared notes): each
//! [`PgServer`] is its own cluster in a fresh temporary directory, listening on a free
//! loopback port, with the postmaster a foreground child of the test process so that
//! fast, immediate and crash (`SIGKILL`) stops and restarts are deterministic.
//!
//! - `initdb` runs once per test binary into a template directory (about 1 s); every
//!   server starts from a `cp -a` of it (28 MB, about 0.1 s) and accepts connections
//!   about 0.1 s later (more on a busy machine).
//! - As root, `initdb` and `postgres` run as the `postgres` user (they refuse root); the
//!   temporary directories belong to that user. Otherwise they run as the current user.
//! - The server's output goes to `<dir>/postgres.log` (never a pipe that could fill up);
//!   failures quote its tail.
//! - Nothing is left behind: `Drop` kills the postmaster and every process of the cluster
//!   (PostgreSQL's children are session leaders, so they are found by their title, which
//!   carries the cluster's unique name), removes a crashed cluster's System V shared
//!   memory segment and the directory, also when the test panics. Servers that are never
//!   dropped (such as [`PgServer::shared`]) are removed when the test binary exits, and
//!   if the test process itself is killed, the postmaster gets `SIGKILL` too (its
//!   parent-death signal) and its children exit on their own.
//! - No `pg_ctl` (it daemonizes) and never the packaged cluster on port 5432.

use std::ffi::{c_int, c_ulong, c_void};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

/// What a test says when PostgreSQL is not installed: these tests never skip.
pub const MISSING: &str =
    "PostgreSQL tests need a real PostgreSQL server: apt-get install postgresql";

/// Where Debian installs the server binaries: `<root>/<version>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// How long a server may take to accept connections, or to stop.
const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(60);
/// How long one `psql` may take.
const PSQL_WITHIN: Duration = Duration::from_secs(60);

const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGKILL: c_int = 9;
const PR_SET_PDEATHSIG: c_int = 1;
const IPC_RMID: c_int = 0;

unsafe extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
    fn atexit(callback: extern "C" fn()) -> c_int;
    fn shmctl(shmid: c_int, cmd: c_int, buf: *mut c_void) -> c_int;
}

/// One PostgreSQL cluster of a test, running or stopped.
pub struct PgServer {
    install: &'static Install,
    /// The temporary directory: `data/`, the Unix socket and `postgres.log`.
    dir: PathBuf,
    /// The cluster's unique name (`cluster_name`, in every process title).
    token: String,
    port: u16,
    postmaster: Mutex<Option<Child>>,
}

impl PgServer {
    /// A new cluster (a copy of the template) on a free loopback port, accepting
    /// connections. Panics with the server log's tail if it does not come up.
    pub async fn start() -> PgServer {
        let install = install();
        let dir = new_dir("pgtest.", install.user);
        let token = token_of(&dir);
        register(&dir);
        copy_template(install, &dir).await;
        let mut server = PgServer {
            install,
            dir,
            token,
            port: 0,
            postmaster: Mutex::new(None),
        };
        // A free port is found by binding and releasing it, so another process may take
        // it in between: then try another one.
        for attempt in 1.. {
            server.port = free_port();
            server.spawn();
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(_) if attempt < 5 && server.log().contains("Address already in use") => {
                    server.reap_after_failed_start().await;
                }
                Err(why) => server.fail(&why),
            }
        }
        unreachable!()
    }

    /// One server for the whole test binary, started by the first caller. Never drop or
    /// stop it: tests that stop, kill or restart a server start their own. It is removed
    /// when the test binary exits. Give each test its own [`create_database`].
    ///
    /// [`create_database`]: PgServer::create_database
    pub async fn shared() -> &'static PgServer {
        static SHARED: tokio::sync::OnceCell<PgServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(PgServer::start).await
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE?sslmode=disable` (trust, no password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Creates database `name` (letters, digits, `_` and `-`) and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "database names here are letters, digits, `_` and `-`: {name:?}"
        );
        self.admin_sql(&format!("CREATE DATABASE \"{name}\";"))
            .await;
        self.url(name)
    }

    /// Runs `sql` (one or more statements, as a `psql` script) in database `postgres`
    /// and returns the rows: unaligned, fields separated by `|`, one row a line, without
    /// the final newline. Panics if a statement fails.
    pub async fn admin_sql(&self, sql: &str) -> String {
        self.sql("postgres", sql).await
    }

    /// The same in `database`.
    pub async fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql)
            .await
            .unwrap_or_else(|why| panic!("psql in {database}: {sql}\n{why}"))
    }

    /// The same, returning psql's error (such as "connection refused") instead.
    pub async fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut child = tokio::process::Command::new(self.install.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                "-",
                "-d",
            ])
            .arg(format!("{}&connect_timeout=10", self.url(database)))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PGCLIENTENCODING", "UTF8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("psql does not start: {e}"))?;
        let mut stdin = child.stdin.take().expect("stdin piped");
        let script = sql.to_owned();
        let write = async move {
            // psql may exit before reading everything (no server): ignore broken pipes.
            let _ = stdin.write_all(script.as_bytes()).await;
        };
        let (_, output) = tokio::time::timeout(PSQL_WITHIN, async {
            tokio::join!(write, child.wait_with_output())
        })
        .await
        .map_err(|_| format!("psql did not finish within {PSQL_WITHIN:?}"))?;
        let output = output.map_err(|e| format!("psql: {e}"))?;
        if output.status.success() {
            let out = String::from_utf8_lossy(&output.stdout);
            Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
        } else {
            Err(format!(
                "psql exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ))
        }
    }

    /// The port it listens on (on 127.0.0.1), kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut postmaster = self.postmaster();
        let running = match postmaster.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        };
        if !running {
            *postmaster = None;
        }
        postmaster.as_ref().map(Child::id)
    }

    /// The processes of this cluster now: the postmaster and its children (also children
    /// left behind by a killed postmaster).
    pub fn processes(&self) -> Vec<u32> {
        Watch::new(&self.token).left()
    }

    /// The temporary directory (data directory `data/`, socket, `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("postgres.log")).unwrap_or_default())
            .into_owned()
    }

    /// Fast shutdown (`SIGINT`: clients are disconnected, a checkpoint is written); waits
    /// until every process of the cluster has exited.
    pub async fn stop_fast(&self) -> ExitStatus {
        self.stop_with(SIGINT, "fast shutdown").await
    }

    /// Immediate shutdown (`SIGQUIT`: no checkpoint, the next start recovers from WAL);
    /// waits until every process of the cluster has exited.
    pub async fn stop_immediate(&self) -> ExitStatus {
        self.stop_with(SIGQUIT, "immediate shutdown").await
    }

    /// A crash: `SIGKILL` to the postmaster. Waits for it, then for its orphaned children,
    /// which exit when they notice (killed after 2 s if they do not). `postmaster.pid`
    /// and the shared memory segment stay, as after a real crash; [`start_again`] copes.
    ///
    /// [`start_again`]: PgServer::start_again
    pub async fn kill(&self) -> ExitStatus {
        self.stop_with(SIGKILL, "SIGKILL").await
    }

    /// Starts the server again on the same data directory and port after a stop or a
    /// kill, and waits until it accepts connections (after crash recovery if needed).
    pub async fn start_again(&self) {
        assert!(
            self.pid().is_none(),
            "start_again: the server is still running"
        );
        self.wait_for_no_processes(Watch::new(&self.token), Duration::ZERO)
            .await;
        self.clear_reused_locks();
        self.spawn();
        if let Err(why) = self.wait_ready().await {
            self.fail(&why);
        }
    }

    /// After a crash, PostgreSQL itself ignores lock files (`postmaster.pid` and the
    /// socket's) that name a dead process. If the dead postmaster's pid was reused by a
    /// process of the `postgres` user (pids go up to 32768 here, and other tests run
    /// servers), it would refuse to start; the harness knows its postmaster is gone (it
    /// reaped it, and no process of the cluster is left), so it removes such a file.
    fn clear_reused_locks(&self) {
        let socket_lock = self.dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for lock in [self.data_dir().join("postmaster.pid"), socket_lock] {
            let Ok(content) = std::fs::read_to_string(&lock) else {
                continue;
            };
            let pid = content.lines().next().and_then(|l| l.trim().parse().ok());
            let alive = |pid| stat(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"));
            if let Some(pid) = pid
                && alive(pid)
            {
                let _ = std::fs::remove_file(&lock);
                let note = format!(
                    "harness: removed {} naming pid {pid}, which is not this cluster's\n",
                    lock.display()
                );
                let _ = std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.dir.join("postgres.log"))
                    .and_then(|mut log| std::io::Write::write_all(&mut log, note.as_bytes()));
            }
        }
    }

    /// Starts the postmaster in the background.
    fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("server log opens");
        let mut command = Command::new(self.install.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("cluster_name={}", self.token)])
            .args(["-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=100"])
            // Durability is what the tests check: commits reach the disk.
            .args(["-c", "fsync=on"])
            .args(["-c", "synchronous_commit=on"])
            // Crash recovery first flushes the data directory: one syncfs(2) instead of an
            // fsync(2) per file (about 1000: 1.5 to 3 s here, even with nothing to write).
            .args(["-c", "recovery_init_sync_method=syncfs"])
            .args(["-c", "jit=off"])
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .process_group(0);
        if let Some((uid, gid)) = self.install.user {
            command.uid(uid).gid(gid);
        }
        // SAFETY: between fork and exec only prctl(2), async-signal-safe, is called.
        unsafe {
            command.pre_exec(|| {
                // If the test process dies without dropping the server, so does the
                // postmaster (std sets the uid before this, so the setting survives).
                if prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_keeper(command).unwrap_or_else(|e| {
            panic!(
                "postgres does not start ({}): {e}",
                self.install.bin.display()
            )
        });
        *self.postmaster() = Some(child);
    }

    /// Waits until the server accepts TCP connections and answers a query.
    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if self.pid().is_none() {
                return Err("postgres exited before accepting connections".into());
            }
            let connected = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(address),
            )
            .await;
            if matches!(connected, Ok(Ok(_))) {
                match self.try_sql("postgres", "SELECT 1").await {
                    Ok(answer) if answer == "1" => return Ok(()),
                    Ok(answer) => return Err(format!("SELECT 1 answered {answer:?}")),
                    Err(_) => {} // e.g. "the database system is starting up"
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not accept connections within {READY_WITHIN:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// After a start that failed (the postmaster is gone or going): clean up for a retry.
    async fn reap_after_failed_start(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, SIGKILL);
        }
        let _ = self.wait_exit().await;
        self.wait_for_no_processes(Watch::new(&self.token), Duration::ZERO)
            .await;
    }

    async fn stop_with(&self, sig: c_int, what: &str) -> ExitStatus {
        let Some(pid) = self.pid() else {
            panic!("{what}: the server is not running")
        };
        let processes = Watch::new(&self.token);
        signal(pid, sig);
        let status = self
            .wait_exit()
            .await
            .unwrap_or_else(|| self.fail(&format!("{what}: the postmaster did not exit")));
        self.wait_for_no_processes(processes, Duration::from_secs(2))
            .await;
        status
    }

    /// Waits until the postmaster has exited and reaps it; `None` if it does not.
    async fn wait_exit(&self) -> Option<ExitStatus> {
        let deadline = Instant::now() + STOP_WITHIN;
        loop {
            {
                let mut postmaster = self.postmaster();
                let child = postmaster.as_mut()?;
                if let Ok(Some(status)) = child.try_wait() {
                    *postmaster = None;
                    return Some(status);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until no process of the cluster is left, sending `SIGKILL` to those still
    /// there after `grace`.
    async fn wait_for_no_processes(&self, mut processes: Watch, grace: Duration) {
        let started = Instant::now();
        loop {
            let left = processes.left();
            if left.is_empty() {
                return;
            }
            if started.elapsed() >= grace {
                for pid in &left {
                    signal(*pid, SIGKILL);
                }
            }
            if started.elapsed() > grace + STOP_WITHIN {
                self.fail(&format!("processes {left:?} of the cluster do not exit"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        self.postmaster
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Panics with `why` and the tail of the server log.
    fn fail(&self, why: &str) -> ! {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "PostgreSQL test server on 127.0.0.1:{} ({}): {why}\n--- last lines of {}:\n{tail}",
            self.port,
            self.dir.display(),
            self.dir.join("postgres.log").display()
        )
    }
}

impl Drop for PgServer {
    /// Kills the postmaster (its process group), waits for it, and removes everything.
    fn drop(&mut self) {
        let processes = Watch::new(&self.token);
        let postmaster = self
            .postmaster
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut child) = postmaster {
            if let Ok(pid) = c_int::try_from(child.id()) {
                signal_group(pid, SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_watched_cluster(&self.dir, processes);
    }
}

/// The processes of the cluster in `dir` (a [`PgServer::dir`]), found by their titles.
pub fn cluster_processes(dir: &Path) -> Vec<u32> {
    Watch::new(&token_of(dir)).left()
}

/// Kills every process of the cluster in `dir` and waits for them, removes its shared
/// memory segment if a crash left one, and removes `dir`. Never panics.
pub fn remove_cluster(dir: &Path) {
    remove_watched_cluster(dir, Watch::new(&token_of(dir)));
}

fn remove_watched_cluster(dir: &Path, mut processes: Watch) {
    let deadline = Instant::now() + STOP_WITHIN;
    loop {
        let left = processes.left();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "PostgreSQL test cluster {}: processes {left:?} do not exit",
                dir.display()
            );
            return;
        }
        for pid in left {
            signal(pid, SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    remove_stale_shared_memory(&dir.join("data"));
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!("PostgreSQL test cluster {}: {e}", dir.display());
    }
    live_dirs().retain(|live| live != dir);
}

/// The server binaries in `<root>/<version>/bin` with the highest version; panics with
/// [`MISSING`] if there are none.
pub fn bin_dir_in(root: &Path) -> PathBuf {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!("{MISSING} (no {}/<version>/bin/initdb)", root.display()),
    }
}

/// The template cluster's directory (made by the first call): `initdb` output in
/// `data/`, removed when the test binary exits.
pub fn template_dir() -> &'static Path {
    &install().template
}

/// The installation, the user the server runs as and the template cluster, found and
/// made once per test binary.
struct Install {
    bin: PathBuf,
    /// uid and gid of `postgres` when the tests run as root.
    user: Option<(u32, u32)>,
    /// Holds `data/`, the cluster every server copies.
    template: PathBuf,
}

fn install() -> &'static Install {
    static INSTALL: OnceLock<Install> = OnceLock::new();
    INSTALL.get_or_init(|| {
        let bin = bin_dir_in(Path::new(DEBIAN_ROOT));
        let root = std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
        let user = root.then(|| {
            postgres_user().unwrap_or_else(|| {
                panic!("{MISSING} (no `postgres` user in /etc/passwd; initdb refuses root)")
            })
        });
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function, once; it runs at exit.
        AT_EXIT.call_once(|| unsafe {
            atexit(remove_all_at_exit);
        });
        let template = new_dir("pgtemplate.", user);
        *TEMPLATE.lock().unwrap_or_else(PoisonError::into_inner) = Some(template.clone());
        init_template(&bin, user, &template);
        Install {
            bin,
            user,
            template,
        }
    })
}

static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

fn live_dirs() -> MutexGuard<'static, Vec<PathBuf>> {
    static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(dir: &Path) {
    live_dirs().push(dir.to_owned());
}

/// At exit: removes the clusters nobody dropped (such as [`PgServer::shared`]) and the
/// template.
extern "C" fn remove_all_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let dirs = std::mem::take(&mut *live_dirs());
        for dir in dirs {
            remove_cluster(&dir);
        }
        if let Some(template) = TEMPLATE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = std::fs::remove_dir_all(template);
        }
    });
}

/// `initdb` into `<dir>/data`: trust authentication for `postgres`, UTF-8, 1 MB WAL
/// segments (half the size to copy), no fsync (a template; the servers do fsync).
fn init_template(bin: &Path, user: Option<(u32, u32)>, dir: &Path) {
    let data = dir.join("data");
    let mut failures = Vec::new();
    for locale in [["--locale=C.UTF-8"].as_slice(), &["--locale=C"]] {
        let _ = std::fs::remove_dir_all(&data);
        let mut command = Command::new(bin.join("initdb"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--wal-segsize=1", "--no-instructions"])
            .args(locale)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        match command.output() {
            Ok(output) if output.status.success() => return,
            Ok(output) => failures.push(format!(
                "initdb {locale:?}: {}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
            Err(e) => failures.push(format!("initdb {locale:?}: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    panic!(
        "initdb fails in {}:\n{}",
        dir.display(),
        failures.join("\n")
    );
}

async fn copy_template(install: &Install, dir: &Path) {
    let output = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(install.template.join("data"))
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("cp runs");
    assert!(
        output.status.success(),
        "cp -a of the template cluster fails: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh directory under the temporary directory, owned by `user`; canonical, so its
/// name is the cluster's unique token.
fn new_dir(prefix: &str, user: Option<(u32, u32)>) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
        .keep();
    let dir = dir.canonicalize().expect("canonical temporary directory");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to postgres");
    }
    dir
}

fn token_of(dir: &Path) -> String {
    dir.file_name()
        .and_then(|name| name.to_str())
        .expect("a temporary directory name")
        .to_owned()
}

/// uid and gid of `postgres` in /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == "postgres").then_some(())?;
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The processes of one cluster, including those exiting: an exiting process loses its
/// title (its memory) a moment before it is gone, so each one is remembered by pid and
/// start time from when it was seen with its title.
struct Watch {
    token: String,
    seen: Vec<(u32, u64)>,
}

impl Watch {
    fn new(token: &str) -> Watch {
        let mut watch = Watch {
            token: token.to_owned(),
            seen: Vec::new(),
        };
        watch.left();
        watch
    }

    /// The pids still alive (not exited, not zombies), after adding those titled now.
    fn left(&mut self) -> Vec<u32> {
        for pid in processes_of(&self.token) {
            if let Some(identity) = identity(pid)
                && !self.seen.contains(&identity)
            {
                self.seen.push(identity);
            }
        }
        self.seen.retain(|&(pid, started)| {
            stat(pid).is_some_and(|fields| {
                fields
                    .first()
                    .is_some_and(|state| state != "Z" && state != "X")
                    && fields.get(19) == Some(&started.to_string())
            })
        });
        self.seen.iter().map(|&(pid, _)| pid).collect()
    }
}

/// The fields of /proc/<pid>/stat after the command (`state ppid pgrp ...`).
fn stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    Some(fields.split_whitespace().map(str::to_owned).collect())
}

/// Pid and start time (field 22 of stat), which tell a reused pid apart.
fn identity(pid: u32) -> Option<(u32, u64)> {
    Some((pid, stat(pid)?.get(19)?.parse().ok()?))
}

/// Processes whose title names cluster `token`: the postmaster has
/// `cluster_name=<token>` among its arguments, its children are titled
/// `postgres: <token>: ...` (zombies have no title and do not count).
fn processes_of(token: &str) -> Vec<u32> {
    let child_title = format!("postgres: {token}:");
    let postmaster_arg = format!("\0cluster_name={token}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with(&child_title) || cmdline.contains(&postmaster_arg)).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// After a crash, `postmaster.pid` names the System V segment the dead server created
/// (line 7: key and id). Nothing is attached to it any more once the cluster's processes
/// are gone; a restart would reuse it, a removed cluster would leak it (`shmmni` is 4096).
fn remove_stale_shared_memory(data: &Path) {
    let Ok(pidfile) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(ids) = pidfile.lines().nth(6) else {
        return;
    };
    let ids: Vec<i64> = ids
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    let [key, id] = ids[..] else {
        return;
    };
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    // key shmid perms size cpid lpid nattch ...
    let unattached = table.lines().skip(1).any(|row| {
        let fields: Vec<i64> = row
            .split_whitespace()
            .take(7)
            .filter_map(|field| field.parse().ok())
            .collect();
        fields.len() == 7 && fields[0] == key && fields[1] == id && fields[6] == 0
    });
    if let (true, Ok(id)) = (unattached, c_int::try_from(id)) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe {
            shmctl(id, IPC_RMID, std::ptr::null_mut());
        }
    }
}

fn signal(pid: u32, sig: c_int) {
    if let Ok(pid) = c_int::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) with a positive pid signals that one process.
        unsafe {
            kill(pid, sig);
        }
    }
}

fn signal_group(pgid: c_int, sig: c_int) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe {
            kill(-pgid, sig);
        }
    }
}

/// Spawns `command` from one thread that lives as long as the test binary: the
/// parent-death signal fires when the thread that forked exits, and test threads (or
/// runtime worker threads) end before a server in a static does.
fn spawn_from_keeper(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static KEEPER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("keeper thread starts");
        requests
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .send((command, reply))
        .map_err(|_| io::Error::other("the keeper thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the keeper thread is gone"))?
}

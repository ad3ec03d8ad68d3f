//! Helpers shared by the integration tests: an in-process server on 127.0.0.1:0, the
//! real binary as a child process, a small HTTP client, and payload builders.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod chromium;
pub mod dashboards;
pub mod e2e;
pub mod fake_cloud66;
pub mod fleet;
pub mod postgres;
pub mod sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use cloud66_ssl_exporter::config::{AppConfig, PostgresConfig, WebhookAuth};
use cloud66_ssl_exporter::{App, run};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A token valid for tests that need authentication.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The documented payloads, exactly as Cloud66 documents them.
pub const EXPIRE_SOON: &str = include_str!("../fixtures/cloud66/expire-soon.json");
pub const INSTALL_OK: &str = include_str!("../fixtures/cloud66/install-ok.json");
pub const INSTALL_FAIL: &str = include_str!("../fixtures/cloud66/install-fail.json");

/// Where a [`TestServer`] keeps its state: the tests of the webhook contract run on both
/// (see [`both_backends!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded database in the storage directory.
    Sqlite,
    /// A fresh database of its own on the test binary's shared PostgreSQL server
    /// ([`postgres::PgServer::shared`]).
    Postgres,
}

impl Backend {
    /// Its name in metrics: the `backend` label of `cloud66_ssl_exporter_storage_info`.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A PostgreSQL database of one [`TestServer`] (see [`TestServer::start_on`]).
#[derive(Clone, Debug)]
pub struct Database {
    /// Its name on [`postgres::PgServer::shared`], for `PgServer::sql`.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl Database {
    /// A new database on the shared server, named after the running test (its thread)
    /// and unique in this test binary (process id and a counter).
    pub async fn create() -> Database {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("test");
        let test = test.rsplit_once("::").map_or(test, |(test, _backend)| test);
        // PostgreSQL truncates names at 63 bytes: keep the unique tail whole.
        let test: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let name = format!("{test}_{}_{serial}", std::process::id());
        let url = postgres::PgServer::shared()
            .await
            .create_database(&name)
            .await;
        Database { name, url }
    }
}

/// The exporter running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub storage: PathBuf,
    pub app: App,
    /// Which storage it uses.
    pub backend: Backend,
    /// With [`Backend::Postgres`] from [`TestServer::start_on`], its database.
    pub database: Option<Database>,
    /// The configuration it was opened with, for [`TestServer::restart`].
    config: AppConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts on 127.0.0.1:0 with storage in `storage` and authentication by [`TOKEN`].
    pub async fn start(storage: &Path) -> TestServer {
        Self::start_on(Backend::Sqlite, storage).await
    }

    /// Starts with the configuration adjusted by `adjust`.
    pub async fn start_with(storage: &Path, adjust: impl FnOnce(&mut AppConfig)) -> TestServer {
        Self::start_on_with(Backend::Sqlite, storage, adjust).await
    }

    /// [`TestServer::start`] on `backend`: with [`Backend::Postgres`], on a new database
    /// of its own (`storage` is then only the unused storage path).
    pub async fn start_on(backend: Backend, storage: &Path) -> TestServer {
        Self::start_on_with(backend, storage, |config| {
            config.auth = WebhookAuth::Token(TOKEN.into())
        })
        .await
    }

    /// [`TestServer::start_with`] on `backend`; `adjust` sees `postgres` already set.
    pub async fn start_on_with(
        backend: Backend,
        storage: &Path,
        adjust: impl FnOnce(&mut AppConfig),
    ) -> TestServer {
        let mut config = AppConfig::new(storage);
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let database = Database::create().await;
                config.postgres = Some(PostgresConfig::from_url(&database.url).expect("valid URL"));
                Some(database)
            }
        };
        adjust(&mut config);
        let mut server = Self::open(config).await;
        server.database = database;
        server
    }

    /// Stops gracefully and starts again on the same storage (the same directory or
    /// PostgreSQL database) with the same configuration, on a new port.
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// [`TestServer::restart`] with the configuration adjusted by `adjust`.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut AppConfig)) -> TestServer {
        let mut config = self.config.clone();
        let database = self.database.take();
        self.stop().await;
        adjust(&mut config);
        let mut server = Self::open(config).await;
        server.database = database;
        server
    }

    /// Opens the app with `config` and serves it on 127.0.0.1:0.
    async fn open(config: AppConfig) -> TestServer {
        let storage = config.storage_path.clone();
        let backend = match config.postgres {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        };
        let app = App::open(config.clone()).await.expect("app opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, app.clone(), async {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            storage,
            app,
            backend,
            database: None,
            config,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Shuts down gracefully and waits until storage is closed.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
    }

    /// POSTs `body` to `/webhook` with the test token in the path.
    pub async fn post_event(&self, body: &str) -> Reply {
        request(self.addr, "POST", &format!("/webhook/{TOKEN}"), &[], body).await
    }

    /// The `/metrics` body.
    pub async fn metrics(&self) -> String {
        let reply = request(self.addr, "GET", "/metrics", &[], "").await;
        assert_eq!(reply.status, 200);
        reply.body
    }
}

/// Runs each named test on both backends: for `async fn name(backend: Backend)`,
/// `both_backends!(name);` adds module `name` with the tests `name::sqlite` and
/// `name::postgres` (`cargo test name` runs both, `cargo test ::postgres` every
/// PostgreSQL variant). The body stays an ordinary function, formatted and checked as
/// such; one that is never registered is dead code, which the lints refuse.
/// `both_backends! { async fn name(backend: Backend) { ... } }` does both at once.
#[allow(unused_macros)] // not every crate that includes this module uses it
macro_rules! both_backends {
    ($(#[$attr:meta])* async fn $test:ident($backend:ident: Backend) $body:block) => {
        $(#[$attr])*
        async fn $test($backend: $crate::common::Backend) $body
        $crate::common::both_backends!($test);
    };
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test($crate::common::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$test($crate::common::Backend::Postgres).await
            }
        }
    )+};
}
#[allow(unused_imports)] // not every crate that includes this module uses it
pub(crate) use both_backends;

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// All values of a header, joined with ", ".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii header"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    try_request(addr, method, path, headers, body.as_bytes().to_vec())
        .await
        .expect("request succeeds")
}

/// One request on a fresh connection, reporting transport errors instead of panicking.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A payload of `event_type` for certificate (`stack`, `name`) sent at `timestamp`, with
/// `extra` fields merged into `ssl_certificate`.
pub fn payload(
    event_type: &str,
    timestamp: i64,
    stack: u64,
    name: &str,
    extra: serde_json::Value,
) -> String {
    let mut cert = serde_json::json!({
        "stack_id": stack,
        "name": name,
        "server_names": "example.com,www.example.com",
        "lets_encrypt": true,
        "has_intermediate_cert": true,
        "ssl_termination": true,
    });
    if let (Some(cert), Some(extra)) = (cert.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            cert.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({ "timestamp": timestamp, "event_type": event_type, "ssl_certificate": cert })
        .to_string()
}

/// The value of the sample whose line starts with `series` (name and labels exactly).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The per-certificate sample lines (`ssl_*`) of a scrape, sorted, without
/// `ssl_cert_days_until_expiry` (computed at scrape time): what two exporters holding
/// the same state serve alike.
pub fn certificate_series(metrics: &str) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .lines()
        .filter(|line| line.starts_with("ssl_"))
        .filter(|line| !line.starts_with("ssl_cert_days_until_expiry"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// `name{stack="..",name=".."}` for a per-certificate series.
pub fn cert_series(metric: &str, stack: &str, name: &str) -> String {
    format!("{metric}{{stack=\"{stack}\",name=\"{name}\"}}")
}

/// The real binary, started as a child process on 127.0.0.1:0.
pub struct Exporter {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Exporter {
    /// Starts the binary with `--storage.path storage` and `args`, and waits until it
    /// logs the address it listens on; the rest of its log is drained.
    pub async fn spawn(storage: &Path, args: &[&str]) -> Exporter {
        Self::drained(Self::spawn_logged(storage, args).await)
    }

    /// The same without `--storage.path`: `args` say where storage is, such as
    /// `--storage.postgres.url`, which refuses `--storage.path` (exit 64).
    pub async fn spawn_with_storage_args(args: &[&str]) -> Exporter {
        Self::drained(Self::spawn_child(None, args).await)
    }

    /// Keeps draining stderr so the child never blocks on a full pipe.
    fn drained((exporter, mut log, _): (Exporter, Log, Vec<String>)) -> Exporter {
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        exporter
    }

    /// The same, keeping the log (logfmt) for the caller: the lines up to the listening
    /// one, and the rest to read. The developer's Cloud66 API token variables are not
    /// passed on: a test's exporter never reaches the real API with them.
    pub async fn spawn_logged(storage: &Path, args: &[&str]) -> (Exporter, Log, Vec<String>) {
        Self::spawn_child(Some(storage), args).await
    }

    /// [`Exporter::spawn_logged`], with `--storage.path` only when `storage` is given.
    async fn spawn_child(storage: Option<&Path>, args: &[&str]) -> (Exporter, Log, Vec<String>) {
        let mut command = tokio::process::Command::new(exporter_binary());
        command.arg("--web.listen-address=127.0.0.1:0");
        if let Some(storage) = storage {
            command.arg(format!("--storage.path={}", storage.display()));
        }
        let mut child = command
            .arg("--log.format=logfmt")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("CLOUD66_API_TOKEN")
            .env_remove("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN")
            .env_remove("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE")
            .kill_on_drop(true)
            .spawn()
            .expect("exporter starts");
        let mut log = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = log.next_line().await.expect("read stderr") {
                let listening = line.contains("message=listening");
                seen.push(line);
                if listening {
                    return seen.last().map(|line| listening_address(line));
                }
            }
            panic!("exporter exited before listening: {seen:#?}");
        })
        .await
        .expect("exporter listens within 30 s")
        .expect("a listening line was read");
        (Exporter { child, addr }, log, seen)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }
}

/// The log lines of a child exporter, read as they come.
pub type Log = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// The `address=` field of a logfmt line.
fn listening_address(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .map(|value| value.trim_matches('"'))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Concurrent clients sending unique `install.ok` events (each its own certificate
/// `<prefix>-c<client>-s<seq>` on `stack`) to the real binary, recording which were
/// acknowledged. Bounded: at most 1000 requests per client; a client stops at the first
/// request the exporter no longer takes, or when told to.
pub struct Load {
    acknowledged: std::sync::Arc<tokio::sync::Mutex<std::collections::BTreeSet<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    clients: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    /// Starts `clients` clients against `addr`.
    pub fn start(addr: SocketAddr, clients: usize, stack: u64, prefix: &str) -> Load {
        let acknowledged =
            std::sync::Arc::new(tokio::sync::Mutex::new(std::collections::BTreeSet::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let clients = (0..clients)
            .map(|client| {
                let acknowledged = std::sync::Arc::clone(&acknowledged);
                let stopped = stopped.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut refused = Vec::new();
                    for seq in 0..1000 {
                        if *stopped.borrow() {
                            break;
                        }
                        let name = format!("{prefix}-c{client}-s{seq}");
                        let body = payload(
                            "ssl_certificate.install.ok",
                            1_700_000_000,
                            stack,
                            &name,
                            serde_json::json!({}),
                        );
                        match try_request(addr, "POST", "/webhook", &[], body.into_bytes()).await {
                            Ok(reply) if reply.status == 200 => {
                                acknowledged.lock().await.insert(name);
                            }
                            Ok(reply) => {
                                refused.push(format!("{name}: {} {}", reply.status, reply.body))
                            }
                            Err(_) => break, // the exporter is gone or stopping
                        }
                    }
                    refused
                })
            })
            .collect();
        Load {
            acknowledged,
            stop,
            clients,
        }
    }

    /// Waits (at most 60 s) until `count` events have been acknowledged.
    pub async fn wait_for_acknowledged(&self, count: usize) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while self.acknowledged.lock().await.len() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the load reaches its mark within 60 s");
    }

    /// Stops the clients; returns the acknowledged names and every non-2xx answer.
    pub async fn finish(self) -> (std::collections::BTreeSet<String>, Vec<String>) {
        let _ = self.stop.send(true);
        let mut refused = Vec::new();
        for client in self.clients {
            refused.extend(client.await.expect("client task"));
        }
        let acknowledged = self.acknowledged.lock().await.clone();
        (acknowledged, refused)
    }
}

/// The acknowledged certificates on `stack` that `metrics` does not count exactly once.
pub fn missing<'a>(
    metrics: &str,
    stack: &str,
    acknowledged: impl IntoIterator<Item = &'a String>,
) -> Vec<&'a String> {
    acknowledged
        .into_iter()
        .filter(|name| {
            sample(
                metrics,
                &cert_series("ssl_install_successes_total", stack, name),
            ) != Some(1.0)
        })
        .collect()
}

/// The exporter binary. Cargo names it to integration tests only; examples that include
/// this module (`examples/screenshot.rs`) run the exporter in process instead.
#[cfg(test)]
fn exporter_binary() -> &'static str {
    env!("CARGO_BIN_EXE_cloud66-ssl-exporter")
}

#[cfg(not(test))]
fn exporter_binary() -> &'static str {
    panic!("only integration tests start the exporter binary")
}

/// Finds a tool on PATH, or fails the test saying how to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` not found on PATH. These tests need the real Prometheus and Alertmanager \
         tools: apt-get install prometheus prometheus-alertmanager"
    );
}

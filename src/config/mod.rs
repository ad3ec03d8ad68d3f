//! Configuration: command-line flags (each with an environment variable), validated into
//! the ready-to-use settings the rest of the program sees.
//!
//! Every flag `--a.b-c` can also be set by `CLOUD66_SSL_EXPORTER_A_B_C`; the flag wins.
//! All environment reads go through one lookup function, so tests never depend on the
//! machine's environment: clap parses the arguments with its own `env` support switched
//! off, then the variables of the flags not given are added as `--flag=value` and the
//! arguments are parsed again. The `env` attributes stay on the command that renders
//! `--help`, which therefore documents every variable.

mod cloud66;
mod copy;
mod flags;
mod postgres;

use std::env::VarError;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use flags::{PROGRAM, Parsed, env_vars, parse, usage_error};

pub use copy::CopySettings;
pub use postgres::{
    DEFAULT_POSTGRES_MAX_CONNECTIONS, PostgresConfig, PostgresTlsMode, redact_postgres_url,
};

/// Generic variable the webhook token is read from when no other token source is set.
const FALLBACK_TOKEN_ENV: &str = "CLOUD66_WEBHOOK_TOKEN";

/// Generic variable the Cloud66 API token is read from when no other token source is set.
const FALLBACK_API_TOKEN_ENV: &str = "CLOUD66_API_TOKEN";

/// Largest accepted `--webhook.max-body-bytes` (16 MiB).
const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Shortest accepted webhook token: shorter ones are guessable.
const MIN_TOKEN_CHARS: usize = 16;

/// Everything the program needs to run, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address the HTTP server binds (port 0 picks a free port).
    pub listen: SocketAddr,
    /// How and how much to log.
    pub log: LogSettings,
    /// What the application itself needs.
    pub app: AppConfig,
}

/// How and how much to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Least severe level that is still logged.
    pub level: tracing::Level,
    /// Line format of the log on stderr.
    pub format: LogFormat,
}

/// Line format of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Pairs of key=value, one event per line (the Prometheus exporters' default).
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// What the command line asks for: run with these settings, or print something and exit.
// Built once per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CliOutcome {
    /// Configuration is valid: start the exporter.
    Run(Settings),
    /// `storage copy`: copy an embedded store into PostgreSQL, then exit.
    Copy(CopySettings),
    /// Help, version or an error: print `output` (to stderr if `to_stderr`) and exit with `code`.
    Exit {
        /// Process exit code: 0 for help and version, 64 for bad configuration.
        code: u8,
        /// Text to print, without a trailing newline.
        output: String,
        /// Whether `output` goes to stderr (errors) rather than stdout.
        to_stderr: bool,
    },
}

/// How webhook calls are authenticated. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// A token given by the operator (flag, environment or file).
    Token(String),
    /// No token configured: load the one stored in the database, or generate and store one.
    Stored,
    /// `--webhook.insecure-no-auth`: every webhook call is accepted.
    Disabled,
}

impl fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookAuth::Token(_) => f.write_str("Token(<redacted>)"),
            WebhookAuth::Stored => f.write_str("Stored"),
            WebhookAuth::Disabled => f.write_str("Disabled"),
        }
    }
}

/// The settings the application itself needs (everything but listening and logging).
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Directory of the embedded database (created if missing); unused with `postgres`.
    pub storage_path: PathBuf,
    /// PostgreSQL shared by replicas instead of the embedded database; `None` (no
    /// `--storage.postgres.url`) keeps the embedded one.
    pub postgres: Option<PostgresConfig>,
    /// Path that serves metrics, starting with `/`.
    pub telemetry_path: String,
    /// How webhook calls are authenticated.
    pub auth: WebhookAuth,
    /// Largest accepted webhook body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most certificates tracked; events for further new ones are refused.
    pub max_certificates: usize,
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// HTTPS instead of HTTP, when certificate and key files are given.
    pub tls: Option<TlsConfig>,
    /// Limits on slow clients.
    pub timeouts: Timeouts,
    /// Cloud66 API reconciliation; `None` (no API token) leaves it off.
    pub cloud66: Option<Cloud66Config>,
}

/// Default of `--cloud66.api-url`.
pub const DEFAULT_CLOUD66_API_URL: &str = "https://app.cloud66.com/api/3";

/// A Cloud66 personal access token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token read from a flag, variable or file.
    pub fn new(token: impl Into<String>) -> Self {
        ApiToken(token.into())
    }

    /// The token itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Cloud66 API reconciliation settings (the `--cloud66.*` flags), validated.
#[derive(Clone, Debug)]
pub struct Cloud66Config {
    /// `--cloud66.api-token` (or `CLOUD66_API_TOKEN`, or `--cloud66.api-token-file`).
    pub token: ApiToken,
    /// `--cloud66.api-url`: base URL without a trailing `/`, e.g. `https://app.cloud66.com/api/3`.
    pub api_url: String,
    /// `--cloud66.api-ca-file`: extra trusted CA certificates (DER), beside the system's.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `--cloud66.stacks`: the stack uids to reconcile; `None` for every stack listed.
    pub stacks: Option<Vec<String>>,
    /// `--cloud66.stack-ids`: stack uid to webhook stack id, as configured.
    pub stack_ids: Vec<(String, String)>,
    /// `--cloud66.sync-interval`: time between syncs (at least a minute).
    pub sync_interval: Duration,
    /// `--cloud66.max-requests-per-hour`: most API requests in any hour.
    pub max_requests_per_hour: u32,
    /// `--cloud66.forget-missing-after`: complete listings without a certificate before
    /// it is forgotten; 0 never forgets.
    pub forget_missing_after: u32,
    /// How long one API request may take (fixed; shortened only by tests).
    pub request_timeout: Duration,
    /// First retry delay after a 5xx, timeout or malformed page; doubles per retry
    /// (fixed; shortened only by tests).
    pub retry_delay: Duration,
    /// The window `max_requests_per_hour` counts over: an hour (shortened only by tests).
    pub budget_window: Duration,
}

impl Cloud66Config {
    /// Defaults for everything but the token and URL (what tests start from).
    pub fn new(token: impl Into<String>, api_url: impl Into<String>) -> Self {
        Cloud66Config {
            token: ApiToken::new(token),
            api_url: api_url.into(),
            extra_roots: Vec::new(),
            stacks: None,
            stack_ids: Vec::new(),
            sync_interval: Duration::from_secs(3600),
            max_requests_per_hour: 600,
            forget_missing_after: 2,
            request_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            budget_window: Duration::from_secs(3600),
        }
    }
}

/// How long clients may take; fixed defaults, shortened only by tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To send a request's headers, and to send the next one on a kept-alive connection.
    pub header_read: Duration,
    /// To send a request's body once the headers are in.
    pub body_read: Duration,
    /// To complete a TLS handshake.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// A loaded TLS server configuration and the files it came from.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate chain file (PEM).
    pub cert_file: PathBuf,
    /// The private key file (PEM).
    pub key_file: PathBuf,
    /// The rustls configuration built from them.
    pub server: Arc<rustls::ServerConfig>,
}

impl TlsConfig {
    /// Loads the PEM certificate chain and private key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, crate::tls::TlsError> {
        Ok(TlsConfig {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            server: crate::tls::server_config(cert_file, key_file)?,
        })
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Default of `--storage.max-certificates`.
pub const DEFAULT_MAX_CERTIFICATES: usize = 10_000;
/// Default of `--web.max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl AppConfig {
    /// Defaults for everything but the storage directory (what tests start from).
    pub fn new(storage_path: impl Into<PathBuf>) -> Self {
        AppConfig {
            storage_path: storage_path.into(),
            postgres: None,
            telemetry_path: "/metrics".to_owned(),
            auth: WebhookAuth::Stored,
            max_body_bytes: 65_536,
            max_certificates: DEFAULT_MAX_CERTIFICATES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            timeouts: Timeouts::default(),
            cloud66: None,
        }
    }
}

/// A configuration value that parses but is not acceptable.
#[derive(Debug, PartialEq, Eq)]
struct ConfigError {
    /// The setting at fault, as the operator wrote it (see `Parsed::name`).
    setting: String,
    /// Why it is rejected, one line.
    reason: String,
}

impl ConfigError {
    /// An error about `setting`.
    fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates the process arguments and environment.
pub fn from_args() -> CliOutcome {
    // The lookup below cannot tell "unset" from "not UTF-8"; refuse the latter loudly.
    for var in env_vars() {
        if let Err(VarError::NotUnicode(_)) = std::env::var(&var) {
            return usage_error(&format!("error: {var}: value is not valid UTF-8"));
        }
    }
    from_iter(std::env::args_os(), |var| std::env::var(var).ok())
}

/// Same from explicit arguments (the first is the program name) and an environment lookup.
pub fn from_iter<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> CliOutcome
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if args.is_empty() {
        args.push(PROGRAM.into());
    }
    if copy::is_storage_command(&args) {
        return copy::parse(&args);
    }
    let parsed = match parse(&args, &env) {
        Ok(parsed) => parsed,
        Err(exit) => return *exit,
    };
    match validate(parsed, &env) {
        Ok(settings) => CliOutcome::Run(settings),
        Err(e) => usage_error(&format!("error: {e}")),
    }
}

/// Turns parsed flags into settings, or the first reason they are unacceptable.
fn validate(parsed: Parsed, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let cli = &parsed.cli;
    let listen = listen_address(&cli.listen_address)
        .map_err(|reason| ConfigError::new(parsed.name("web.listen-address"), reason))?;
    telemetry_path(&cli.telemetry_path)
        .map_err(|reason| ConfigError::new(parsed.name("web.telemetry-path"), reason))?;
    let max_body_bytes = count(cli.webhook_max_body_bytes, 1, MAX_BODY_LIMIT)
        .map_err(|reason| ConfigError::new(parsed.name("webhook.max-body-bytes"), reason))?;
    let auth = webhook_auth(&parsed, env)?;
    let max_certificates = count(cli.max_certificates, 1, 10_000_000)
        .map_err(|reason| ConfigError::new(parsed.name("storage.max-certificates"), reason))?;
    let max_connections = count(cli.max_connections, 1, 1_000_000)
        .map_err(|reason| ConfigError::new(parsed.name("web.max-connections"), reason))?;
    let tls = tls(&parsed)?;
    let cloud66 = cloud66::config(&parsed, env)?;
    let postgres = postgres::config(&parsed)?;
    Ok(Settings {
        listen,
        log: LogSettings {
            level: cli.log_level.into(),
            format: cli.log_format,
        },
        app: AppConfig {
            storage_path: cli.storage_path.clone(),
            postgres,
            telemetry_path: cli.telemetry_path.clone(),
            auth,
            max_body_bytes,
            max_certificates,
            max_connections,
            tls,
            timeouts: Timeouts::default(),
            cloud66,
        },
    })
}

/// Checks a count against its range.
fn count(value: u64, min: u64, max: u64) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(count) if (min..=max).contains(&value) => Ok(count),
        _ => Err(format!("must be from {min} to {max}, got {value}")),
    }
}

/// Loads the TLS certificate and key when both are given; one without the other is an
/// error, and so is a file that does not hold what it should.
fn tls(parsed: &Parsed) -> Result<Option<TlsConfig>, ConfigError> {
    let cli = &parsed.cli;
    match (&cli.tls_cert_file, &cli.tls_key_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            parsed.name("web.tls-cert-file"),
            "needs --web.tls-key-file too",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            parsed.name("web.tls-key-file"),
            "needs --web.tls-cert-file too",
        )),
        (Some(cert_file), Some(key_file)) => {
            let server = crate::tls::server_config(cert_file, key_file)
                .map_err(|e| ConfigError::new(parsed.name(e.flag()), one_line(&e.to_string())))?;
            Ok(Some(TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                server,
            }))
        }
    }
}

/// Parses `:PORT`, `HOST:PORT` or `[IPv6]:PORT`; host names resolve to their first address.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let shape = || format!("{text:?} is not :PORT, HOST:PORT or [IPv6]:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
    let port: u16 = port.parse().map_err(|_| shape())?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    if host.contains([':', '[', ']']) {
        return Err(shape());
    }
    let mut addresses = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {}", one_line(&e.to_string())))?;
    addresses
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Checks that the metrics path is a plain path no other endpoint uses.
fn telemetry_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with \"/\""));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(format!("{path:?} must not contain spaces, \"?\" or \"#\""));
    }
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let user = match path {
        "/" => Some("the landing page"),
        "/healthz" | "/readyz" => Some("the health checks"),
        _ if under("/webhook") => Some("webhook calls"),
        _ if under("/api") => Some("the API"),
        _ => None,
    };
    match user {
        Some(user) => Err(format!("{path:?} is reserved for {user}")),
        None => Ok(()),
    }
}

/// Chooses the webhook authentication from the token sources; at most one may be set.
fn webhook_auth(
    parsed: &Parsed,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebhookAuth, ConfigError> {
    let cli = &parsed.cli;
    let given = match &cli.webhook_token {
        Some(token) => Some((parsed.name("webhook.token"), token.clone())),
        None => env(FALLBACK_TOKEN_ENV)
            .filter(|token| !token.is_empty())
            .map(|token| {
                (
                    format!("--webhook.token (from {FALLBACK_TOKEN_ENV})"),
                    token,
                )
            }),
    };
    let file = cli.webhook_token_file.as_deref();
    let file_name = parsed.name("webhook.token-file");
    if let (Some((token_name, _)), Some(_)) = (&given, file) {
        let reason = format!("cannot be combined with {token_name}; give at most one");
        return Err(ConfigError::new(file_name, reason));
    }
    let any_token = given.as_ref().map(|(name, _)| name.clone());
    if let Some(token_name) = any_token.or(file.map(|_| file_name.clone()))
        && cli.webhook_insecure_no_auth
    {
        let reason = format!("cannot be combined with {token_name}");
        return Err(ConfigError::new(
            parsed.name("webhook.insecure-no-auth"),
            reason,
        ));
    }
    if let Some((name, token)) = given {
        check_token(&token).map_err(|reason| ConfigError::new(name, reason))?;
        return Ok(WebhookAuth::Token(token));
    }
    if let Some(path) = file {
        let token = read_token_file(path, check_token)
            .map_err(|reason| ConfigError::new(file_name, reason))?;
        return Ok(WebhookAuth::Token(token));
    }
    match cli.webhook_insecure_no_auth {
        true => Ok(WebhookAuth::Disabled),
        false => Ok(WebhookAuth::Stored),
    }
}

/// Reads the token in `path`, without trailing whitespace, and checks it with `check`.
fn read_token_file(path: &Path, check: fn(&str) -> Result<(), String>) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {path:?}: {}", one_line(&e.to_string())))?;
    let token = text.trim_end();
    check(token).map_err(|reason| format!("the token in {path:?} {reason}"))?;
    Ok(token.to_owned())
}

/// A token travels in the URL path, so it must be long and use only unreserved characters.
/// Reasons never quote the token: it is a secret.
fn check_token(token: &str) -> Result<(), String> {
    let length = token.chars().count();
    if length < MIN_TOKEN_CHARS {
        return Err(format!(
            "must be at least {MIN_TOKEN_CHARS} characters long, got {length}"
        ));
    }
    let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
    match token.chars().position(|c| !unreserved(c)) {
        Some(index) => Err(format!(
            "must contain only A-Z a-z 0-9 . _ ~ - (character {} does not)",
            index + 1
        )),
        None => Ok(()),
    }
}

/// `text` on one line, as every error message must be.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;

//! The `--storage.postgres.*` flags, validated into a `PostgresConfig`.
//!
//! The URL is libpq's `postgres://USER:PASSWORD@HOST[:PORT]/DBNAME?PARAMS`. `tokio-postgres`
//! parses it, except for the two TLS parameters it does not know the way libpq does:
//! `sslmode` (only `disable`, `require` and `verify-full` are accepted) and `sslrootcert`
//! (a PEM file, or `system`), which are taken out here. The password is a secret: no
//! error quotes the URL, and the only printable form of an accepted one is `redacted`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use rustls_pki_types::CertificateDer;
use tokio_postgres::config::Host;

use super::flags::Parsed;
use super::{ConfigError, one_line};

/// Default of `--storage.postgres.max-connections`.
pub const DEFAULT_POSTGRES_MAX_CONNECTIONS: usize = 8;

/// Largest accepted `--storage.postgres.max-connections` (PostgreSQL's default
/// `max_connections` is 100 for the whole server).
const MAX_POSTGRES_CONNECTIONS: u64 = 256;

/// How long one connection attempt may take, unless the URL sets `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the writer retries a batch while the database is unreachable, by default:
/// well inside Cloud66's 30 s webhook timeout.
pub const DEFAULT_POSTGRES_RETRY_WINDOW: Duration = Duration::from_secs(20);

/// What `pg_stat_activity` shows for our connections, unless the URL sets
/// `application_name`.
const APPLICATION_NAME: &str = "cloud66-ssl-exporter";

/// The URL schemes accepted (libpq's two; it matches them case-sensitively too).
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// The `--storage.postgres.*` flags that only make sense with a URL.
const NEED_URL: &[&str] = &["storage.postgres.max-connections"];

/// What replaces the password in `redacted`.
const MASK: &str = "***";

/// How the connection to PostgreSQL is protected (libpq's `sslmode`, three of its six
/// values: `allow` and `prefer` silently fall back to plain text, and `verify-ca` checks
/// the chain but not the host name, which is rarely what anyone means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostgresTlsMode {
    /// `sslmode=disable` (the default): plain TCP or a Unix socket.
    Disable,
    /// `sslmode=require`: encrypted, but the server certificate is not checked.
    Require,
    /// `sslmode=verify-full`: encrypted, the chain checked against `sslrootcert` (or the
    /// system's roots) and the certificate against the host name.
    VerifyFull,
}

impl PostgresTlsMode {
    /// The `sslmode` value, as written in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresTlsMode::Disable => "disable",
            PostgresTlsMode::Require => "require",
            PostgresTlsMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for PostgresTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// PostgreSQL storage settings (the `--storage.postgres.*` flags), validated. `Debug` and
/// `Display` show the URL with its password replaced by `***`.
#[derive(Clone)]
pub struct PostgresConfig {
    /// Where and as whom to connect, with the password; `ssl_mode` is `Disable` or
    /// `Require` (the TLS connector does any verification), and `connect_timeout` and
    /// `application_name` are set.
    pub connect: tokio_postgres::Config,
    /// How the connection is protected.
    pub tls: PostgresTlsMode,
    /// The `sslrootcert` file, when `verify-full` trusts only its certificates rather
    /// than the system's.
    pub root_cert_file: Option<PathBuf>,
    /// The certificates of `root_cert_file` (DER); empty without one.
    pub root_certs: Vec<CertificateDer<'static>>,
    /// `--storage.postgres.max-connections`: the pool size of this replica.
    pub max_connections: usize,
    /// The URL as given with the password replaced by `***`: the form logs and pages show.
    pub redacted: String,
    /// How long the writer retries a batch on fresh connections while the database is
    /// unreachable before answering 503 (fixed at [`DEFAULT_POSTGRES_RETRY_WINDOW`];
    /// shortened only by tests).
    pub retry_window: Duration,
    /// How often a replica writes the certificates it changed into the snapshot (10 s;
    /// shortened only by tests).
    pub snapshot_interval: Duration,
}

impl PostgresConfig {
    /// Validates a `postgres://` or `postgresql://` URL, with the default pool size (what
    /// tests start from). Sets a 5 s connect timeout and the application name unless the
    /// URL sets them, and reads the `sslrootcert` file. The error never quotes the URL.
    pub fn from_url(url: &str) -> Result<PostgresConfig, String> {
        let split = split_url(url)?;
        let mut connect = tokio_postgres::Config::from_str(&split.rest)
            .map_err(|e| format!("is not a valid PostgreSQL URL: {}", error_chain(&e)))?;
        if connect.get_user().is_none_or(str::is_empty) {
            return Err("names no user (postgres://USER@HOST/DBNAME)".to_owned());
        }
        if connect.get_hosts().is_empty() && connect.get_hostaddrs().is_empty() {
            return Err("names no host (postgres://USER@HOST/DBNAME)".to_owned());
        }
        check_counts(&connect)?;
        let tls = tls_mode(split.sslmode.as_deref())?;
        if tls != PostgresTlsMode::Disable
            && connect
                .get_hosts()
                .iter()
                .any(|h| matches!(h, Host::Unix(_)))
        {
            return Err(format!(
                "sslmode={tls} needs TCP hosts: PostgreSQL does not encrypt Unix-socket \
                 connections (use sslmode=disable with a socket directory)"
            ));
        }
        if tls != PostgresTlsMode::Disable
            && connect.get_hosts().len() < connect.get_hostaddrs().len()
        {
            return Err(format!(
                "sslmode={tls} needs a host name for every hostaddr: TLS checks and sends it"
            ));
        }
        let (root_cert_file, root_certs) = match split.sslrootcert.as_deref() {
            None | Some("system") if tls == PostgresTlsMode::VerifyFull => (None, Vec::new()),
            None => (None, Vec::new()),
            Some(_) if tls != PostgresTlsMode::VerifyFull => {
                return Err(format!(
                    "sslrootcert needs sslmode=verify-full (sslmode is {tls})"
                ));
            }
            Some(file) => {
                let path = PathBuf::from(file);
                let certs = root_cert_file(&path)?;
                (Some(path), certs)
            }
        };
        connect.ssl_mode(match tls {
            PostgresTlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if !split.keys.iter().any(|key| key == "connect_timeout") {
            connect.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if connect.get_application_name().is_none() {
            connect.application_name(APPLICATION_NAME);
        }
        Ok(PostgresConfig {
            connect,
            tls,
            root_cert_file,
            root_certs,
            max_connections: DEFAULT_POSTGRES_MAX_CONNECTIONS,
            redacted: redact_postgres_url(url),
            retry_window: DEFAULT_POSTGRES_RETRY_WINDOW,
            snapshot_interval: Duration::from_secs(10),
        })
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted)
            .field("tls", &self.tls)
            .field("root_cert_file", &self.root_cert_file)
            .field("root_certs", &self.root_certs.len())
            .field("max_connections", &self.max_connections)
            .field("retry_window", &self.retry_window)
            .field("snapshot_interval", &self.snapshot_interval)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The PostgreSQL settings, or `None` without a URL (the embedded database is used).
/// Another `--storage.postgres.*` flag without a URL is an error, and so is an explicit
/// `--storage.path` with one, so that a mistyped setup fails loudly.
pub(super) fn config(parsed: &Parsed) -> Result<Option<PostgresConfig>, ConfigError> {
    let cli = &parsed.cli;
    let url_name = parsed.name("storage.postgres.url");
    let file_name = parsed.name("storage.postgres.url-file");
    let (setting, url) = match (&cli.postgres_url, &cli.postgres_url_file) {
        (Some(_), Some(_)) => {
            let reason = format!("cannot be combined with {url_name}; give at most one");
            return Err(ConfigError::new(file_name, reason));
        }
        (Some(url), None) => (url_name, url.clone()),
        (None, Some(path)) => match read_url_file(path) {
            Ok(url) => (file_name, url),
            Err(reason) => return Err(ConfigError::new(file_name, reason)),
        },
        (None, None) => {
            return match NEED_URL.iter().find(|flag| parsed.given(flag)) {
                Some(flag) => Err(ConfigError::new(
                    parsed.name(flag),
                    "needs --storage.postgres.url or --storage.postgres.url-file",
                )),
                None => Ok(None),
            };
        }
    };
    if parsed.given("storage.path") {
        // The Debian unit sets the variable; an empty value in its defaults file wins.
        let hint = match parsed.from_env.iter().find(|e| e.flag == "storage.path") {
            Some(e) => format!(" (an empty {}= counts as unset)", e.var),
            None => String::new(),
        };
        return Err(ConfigError::new(
            parsed.name("storage.path"),
            format!("is not used with PostgreSQL storage ({setting}); remove one of them{hint}"),
        ));
    }
    let mut config = PostgresConfig::from_url(&url).map_err(|e| ConfigError::new(setting, e))?;
    config.max_connections = max_connections(cli.postgres_max_connections)
        .map_err(|e| ConfigError::new(parsed.name("storage.postgres.max-connections"), e))?;
    Ok(Some(config))
}

/// `--storage.postgres.max-connections`: 1 to 256.
fn max_connections(value: u64) -> Result<usize, String> {
    match usize::try_from(value) {
        Ok(count) if (1..=MAX_POSTGRES_CONNECTIONS).contains(&value) => Ok(count),
        _ => Err(format!(
            "must be from 1 to {MAX_POSTGRES_CONNECTIONS}, got {value}"
        )),
    }
}

/// The URL in `path`, without trailing whitespace.
pub(super) fn read_url_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {path:?}: {}", one_line(&e.to_string())))?;
    let url = text.trim_end();
    if url.is_empty() {
        return Err(format!("{path:?} is empty"));
    }
    Ok(url.to_owned())
}

/// A URL with the parameters `tokio-postgres` does not take out.
struct SplitUrl {
    /// The URL without `sslmode` and `sslrootcert`, for `tokio_postgres::Config`.
    rest: String,
    /// The decoded `sslmode`, if given.
    sslmode: Option<String>,
    /// The decoded `sslrootcert`, if given.
    sslrootcert: Option<String>,
    /// The decoded names of every parameter given.
    keys: Vec<String>,
}

/// Checks the shape of the URL and takes `sslmode` and `sslrootcert` out of it. Stricter
/// than `tokio-postgres` where its leniency would misread a password: user info ends at
/// the first `@`, so an unencoded `@`, `/` or `?` in a password is refused here.
fn split_url(url: &str) -> Result<SplitUrl, String> {
    if url.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let Some(rest) = SCHEMES.iter().find_map(|scheme| url.strip_prefix(scheme)) else {
        return Err(
            "must be a postgres:// or postgresql:// URL (key=value connection strings are \
             not accepted)"
                .to_owned(),
        );
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters (percent-encode them)".into());
    }
    let unencoded = "percent-encode \"@\", \"/\" and \"?\" in the user name and password \
                     (%40, %2F, %3F)";
    if rest.matches('@').count() > 1 {
        return Err(format!("has more than one \"@\": {unencoded}"));
    }
    if let Some((user_info, _)) = rest.split_once('@')
        && user_info.contains(['/', '?'])
    {
        return Err(format!("has \"/\" or \"?\" before \"@\": {unencoded}"));
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut split = SplitUrl {
        rest: base.to_owned(),
        sslmode: None,
        sslrootcert: None,
        keys: Vec::new(),
    };
    let mut kept = Vec::new();
    for param in query.split('&').filter(|_| !query.is_empty()) {
        // Never quoted: a misplaced password could be a "parameter" here.
        let Some((raw_key, raw_value)) = param.split_once('=') else {
            return Err("has a parameter without \"=\" (NAME=VALUE)".to_owned());
        };
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "has a parameter that is not UTF-8 once decoded".to_owned())
        };
        let key = decode(raw_key)?;
        let slot = match key.as_str() {
            "sslmode" => &mut split.sslmode,
            "sslrootcert" => &mut split.sslrootcert,
            _ => {
                kept.push(param);
                split.keys.push(key);
                continue;
            }
        };
        if slot.is_some() {
            return Err(format!("gives {key} twice"));
        }
        *slot = Some(decode(raw_value)?);
        split.keys.push(key);
    }
    if !kept.is_empty() {
        split.rest.push('?');
        split.rest.push_str(&kept.join("&"));
    }
    Ok(split)
}

/// The checks `tokio-postgres` makes only when connecting, made at start instead: as
/// many `hostaddr` as hosts (when both are given), and one port or one per host.
fn check_counts(connect: &tokio_postgres::Config) -> Result<(), String> {
    let hosts = connect.get_hosts().len();
    let addresses = connect.get_hostaddrs().len();
    if hosts > 0 && addresses > 0 && hosts != addresses {
        return Err(format!(
            "gives {hosts} hosts but {addresses} hostaddrs: give as many of each"
        ));
    }
    let count = hosts.max(addresses);
    let ports = connect.get_ports().len();
    if ports > 1 && ports != count {
        return Err(format!(
            "gives {ports} ports for {count} hosts: give one port, or one per host (every \
             host of a URL has a port, 5432 when none is written: write HOST:PORT rather \
             than a port parameter)"
        ));
    }
    Ok(())
}

/// The `sslmode` value as a mode; `disable` when not given.
fn tls_mode(sslmode: Option<&str>) -> Result<PostgresTlsMode, String> {
    let supported = "use disable, require or verify-full";
    match sslmode {
        None | Some("disable") => Ok(PostgresTlsMode::Disable),
        Some("require") => Ok(PostgresTlsMode::Require),
        Some("verify-full") => Ok(PostgresTlsMode::VerifyFull),
        Some(mode @ ("allow" | "prefer" | "verify-ca")) => {
            Err(format!("sslmode={mode} is not supported: {supported}"))
        }
        Some(mode) => Err(format!(
            "sslmode={:?} is not a TLS mode: {supported}",
            mode.chars().take(32).collect::<String>()
        )),
    }
}

/// The certificates of the `sslrootcert` PEM file; at least one is required, and each
/// must be usable as a trust anchor.
fn root_cert_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    super::cloud66::pem_roots(path).map_err(|reason| format!("sslrootcert: {reason}"))
}

/// An error and its causes on one line: `tokio_postgres::Error`'s own `Display` only
/// names the kind ("invalid connection string").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    one_line(&text)
}

/// A PostgreSQL connection string with its password replaced by `***`: a URL's
/// `user:password@` and `password=` parameter, or a `key=value` string's `password`.
/// Errs on the side of hiding more: the user info ends at the last `@`, and a malformed
/// `key=value` string is hidden from the first thing it cannot read.
pub fn redact_postgres_url(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_url_rest(rest)),
        None => redact_keywords(text),
    }
}

/// Everything after `scheme://`, redacted.
fn redact_url_rest(rest: &str) -> String {
    let mut out = String::new();
    let after = match rest.rfind('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{MASK}@")),
                None => out.push_str(&rest[..=at]),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let Some((base, query)) = after.split_once('?') else {
        out.push_str(after);
        return out;
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}={MASK}"),
            _ => param.to_owned(),
        })
        .collect();
    out.push_str(base);
    out.push('?');
    out.push_str(&params.join("&"));
    out
}

/// Whether a (possibly percent-encoded) parameter name is `password`.
fn is_password_key(key: &str) -> bool {
    percent_decode_str(key)
        .decode_utf8_lossy()
        .trim()
        .eq_ignore_ascii_case("password")
}

/// A `key=value` connection string (values quoted with `'` or not, `\` escaping), with
/// the value of `password` replaced.
fn redact_keywords(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let key_end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let (key, after_key) = rest.split_at(key_end);
        let Some(value) = after_key.trim_start().strip_prefix('=') else {
            out.push_str(MASK);
            return out;
        };
        let value = value.trim_start();
        let value_end = value_length(value);
        out.push_str(key);
        out.push('=');
        match is_password_key(key) {
            true => out.push_str(MASK),
            false => out.push_str(&value[..value_end]),
        }
        rest = &value[value_end..];
    }
}

/// The length in bytes of the `key=value` value at the start of `text`: up to the closing
/// quote if it starts with one (or the end), else up to whitespace; `\` escapes.
fn value_length(text: &str) -> usize {
    let quoted = text.starts_with('\'');
    let mut chars = text.char_indices().skip(usize::from(quoted));
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return index + 1,
            c if c.is_whitespace() && !quoted => return index,
            _ => {}
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{outcome, settings};
    use super::super::{AppConfig, CliOutcome};
    use super::*;

    /// The password every test URL carries; it must never show.
    const SECRET: &str = "s3cr3t-P4ss";

    /// A valid URL with `SECRET` as password.
    fn url() -> String {
        format!("postgres://exporter:{SECRET}@db.example.com:5433/cloud66")
    }

    /// The PostgreSQL settings for `args` and `vars`; fails the test without them.
    fn postgres(args: &[&str], vars: &[(&str, &str)]) -> PostgresConfig {
        match settings(args, vars).app.postgres {
            Some(config) => config,
            None => panic!("expected PostgreSQL settings for {args:?}"),
        }
    }

    /// The error line for `args` and `vars` (an exit 64); checks that it never shows
    /// the password and is one line.
    fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
        let output = super::super::tests::error(args, vars);
        assert!(!output.contains(SECRET), "password in {output}");
        assert_eq!(output.lines().count(), 1, "{output}");
        output
    }

    /// The reason `from_url` refuses `url`; checks that it never shows the password.
    fn refused(url: &str) -> String {
        match PostgresConfig::from_url(url) {
            Ok(config) => panic!("{url} accepted: {config:?}"),
            Err(reason) => {
                assert!(!reason.contains(SECRET), "password in {reason}");
                reason
            }
        }
    }

    /// Writes one self-signed CA certificate (PEM) to `path`.
    fn write_ca(path: &Path) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(path, params.self_signed(&key).unwrap().pem()).unwrap();
    }

    #[test]
    fn off_by_default() {
        let s = settings(&[], &[]);
        assert!(s.app.postgres.is_none());
        assert!(AppConfig::new("/tmp/x").postgres.is_none());
    }

    #[test]
    fn url_from_flag_with_defaults() {
        let url = url();
        let c = postgres(&["--storage.postgres.url", &url], &[]);
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.tls, PostgresTlsMode::Disable);
        assert_eq!(c.connect.get_user(), Some("exporter"));
        assert_eq!(c.connect.get_password(), Some(SECRET.as_bytes()));
        assert_eq!(c.connect.get_dbname(), Some("cloud66"));
        assert_eq!(
            c.connect.get_hosts(),
            [Host::Tcp("db.example.com".to_owned())]
        );
        assert_eq!(c.connect.get_ports(), [5433]);
        assert_eq!(
            c.connect.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(
            c.connect.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        assert_eq!(c.connect.get_application_name(), Some(APPLICATION_NAME));
        assert_eq!(
            c.redacted,
            "postgres://exporter:***@db.example.com:5433/cloud66"
        );
        assert!(c.root_cert_file.is_none() && c.root_certs.is_empty());
    }

    #[test]
    fn url_and_max_connections_from_variables() {
        let url = url();
        let vars = [
            ("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL", url.as_str()),
            ("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_MAX_CONNECTIONS", "3"),
        ];
        let c = postgres(&[], &vars);
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.connect.get_password(), Some(SECRET.as_bytes()));
        // The flag wins over the variable.
        let other = "postgresql://other@db2/x";
        let c = postgres(&["--storage.postgres.url", other], &vars);
        assert_eq!(c.connect.get_user(), Some("other"));
        assert_eq!(c.redacted, other);
        // An empty variable counts as unset.
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL", "")];
        assert!(settings(&[], &vars).app.postgres.is_none());
    }

    #[test]
    fn url_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, format!("{}\n\n", url())).unwrap();
        let path = path.to_str().unwrap();
        let c = postgres(&["--storage.postgres.url-file", path], &[]);
        assert_eq!(c.connect.get_password(), Some(SECRET.as_bytes()));
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL_FILE", path)];
        let c = postgres(&["--storage.postgres.max-connections=256"], &vars);
        assert_eq!(
            (c.max_connections, c.connect.get_dbname()),
            (256, Some("cloud66"))
        );
    }

    #[test]
    fn url_file_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n  \n").unwrap();
        let empty = empty.to_str().unwrap();
        let e = error(&["--storage.postgres.url-file", empty], &[]);
        assert!(
            e.contains("--storage.postgres.url-file: ") && e.contains("is empty"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = error(
            &["--storage.postgres.url-file", missing.to_str().unwrap()],
            &[],
        );
        assert!(e.contains("cannot read") && e.contains("missing"), "{e}");
        // A bad URL in a file is blamed on the file flag, without quoting it.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, format!("mysql://u:{SECRET}@h/db\n")).unwrap();
        let e = error(&["--storage.postgres.url-file", bad.to_str().unwrap()], &[]);
        assert!(
            e.contains("--storage.postgres.url-file: must be a postgres://"),
            "{e}"
        );
    }

    #[test]
    fn url_and_file_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, url()).unwrap();
        let path = path.to_str().unwrap();
        let url = url();
        let e = error(
            &[
                "--storage.postgres.url",
                &url,
                "--storage.postgres.url-file",
                path,
            ],
            &[],
        );
        assert!(
            e.ends_with(
                "--storage.postgres.url-file: cannot be combined with --storage.postgres.url; \
                 give at most one"
            ),
            "{e}"
        );
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL", url.as_str())];
        let e = error(&["--storage.postgres.url-file", path], &vars);
        assert!(
            e.contains(
                "cannot be combined with --storage.postgres.url (from \
                 CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL)"
            ),
            "{e}"
        );
    }

    #[test]
    fn storage_path_given_with_a_url_is_refused() {
        let url = url();
        let e = error(&["--storage.postgres.url", &url, "--storage.path=/d"], &[]);
        assert!(
            e.ends_with(
                "--storage.path: is not used with PostgreSQL storage (--storage.postgres.url); \
                 remove one of them"
            ),
            "{e}"
        );
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_PATH", "/d")];
        let e = error(&["--storage.postgres.url", &url], &vars);
        assert!(
            e.contains("--storage.path (from CLOUD66_SSL_EXPORTER_STORAGE_PATH): is not used"),
            "{e}"
        );
        assert!(
            e.ends_with("(an empty CLOUD66_SSL_EXPORTER_STORAGE_PATH= counts as unset)"),
            "{e}"
        );
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_PATH", "")];
        assert!(
            settings(&["--storage.postgres.url", &url], &vars)
                .app
                .postgres
                .is_some()
        );
        // The default storage path does not count.
        assert!(
            settings(&["--storage.postgres.url", &url], &[])
                .app
                .postgres
                .is_some()
        );
    }

    #[test]
    fn the_cloud66_api_reconciliation_runs_with_a_url() {
        let url = url();
        let s = settings(
            &["--storage.postgres.url", &url, "--cloud66.api-token=abc"],
            &[],
        );
        assert!(s.app.postgres.is_some() && s.app.cloud66.is_some());
    }

    #[test]
    fn max_connections_bounds_and_needs_a_url() {
        let url = url();
        for bad in ["0", "257", "100000000000000000000"] {
            let flag = format!("--storage.postgres.max-connections={bad}");
            let outcome = outcome(&["--storage.postgres.url", &url, &flag], &[]);
            let CliOutcome::Exit {
                code: 64, output, ..
            } = outcome
            else {
                panic!("{bad} accepted");
            };
            assert!(
                output.contains("--storage.postgres.max-connections"),
                "{output}"
            );
        }
        let e = error(
            &[
                "--storage.postgres.url",
                &url,
                "--storage.postgres.max-connections=0",
            ],
            &[],
        );
        assert!(e.ends_with("must be from 1 to 256, got 0"), "{e}");
        let c = postgres(
            &[
                "--storage.postgres.url",
                &url,
                "--storage.postgres.max-connections=1",
            ],
            &[],
        );
        assert_eq!(c.max_connections, 1);
        let e = error(&["--storage.postgres.max-connections=4"], &[]);
        assert!(
            e.ends_with(
                "--storage.postgres.max-connections: needs --storage.postgres.url or \
                 --storage.postgres.url-file"
            ),
            "{e}"
        );
    }

    #[test]
    fn schemes() {
        for url in [
            format!("postgres://u:{SECRET}@h/db"),
            format!("postgresql://u:{SECRET}@h/db"),
        ] {
            assert!(PostgresConfig::from_url(&url).is_ok(), "{url}");
        }
        for url in [
            format!("mysql://u:{SECRET}@h/db"),
            format!("POSTGRES://u:{SECRET}@h/db"),
            format!("host=h user=u password={SECRET}"),
            format!("u:{SECRET}@h/db"),
            format!("postgres:/u:{SECRET}@h/db"),
        ] {
            let reason = refused(&url);
            assert!(
                reason.starts_with("must be a postgres:// or postgresql:// URL"),
                "{reason}"
            );
        }
        assert_eq!(refused(""), "must not be empty");
    }

    #[test]
    fn malformed_urls_are_refused_without_quoting_them() {
        let cases = [
            (format!("postgres://u:{SECRET}@h/db x"), "spaces"),
            (format!("postgres://u:{SECRET}\n@h/db"), "spaces or control"),
            (
                format!("postgres://u:p@{SECRET}@h/db"),
                "more than one \"@\"",
            ),
            (
                format!("postgres://u:p/{SECRET}@h/db"),
                "\"/\" or \"?\" before",
            ),
            (
                format!("postgres://u:p?{SECRET}@h/db"),
                "\"/\" or \"?\" before",
            ),
            (
                format!("postgres://u:{SECRET}@h/db?{SECRET}"),
                "without \"=\"",
            ),
            (
                format!("postgres://u:{SECRET}@h/db?a=1&&b=2"),
                "without \"=\"",
            ),
            (format!("postgres://u:{SECRET}@h:99999/db"), "port"),
            (format!("postgres://u:{SECRET}@h:x/db"), "port"),
            (
                format!("postgres://u:{SECRET}@h/db?sslcert=/c.pem"),
                "unknown option `sslcert`",
            ),
            (format!("postgres://u:{SECRET}@h/db?%ff=1"), "not UTF-8"),
            (format!("postgres://:{SECRET}@h/db"), "names no user"),
            ("postgres://h/db".to_owned(), "names no user"),
            (format!("postgres://u:{SECRET}@/db"), "names no host"),
            (
                format!("postgres://u:{SECRET}@h:1/db?port=2"),
                "gives 2 ports for 1 hosts",
            ),
            (
                format!("postgres://u:{SECRET}@a,b,c:1/db?port=2"),
                "gives 4 ports for 3 hosts",
            ),
            (
                format!("postgres://u:{SECRET}@a,b/db?hostaddr=127.0.0.1"),
                "gives 2 hosts but 1 hostaddrs",
            ),
        ];
        for (url, expected) in cases {
            let reason = refused(&url);
            assert!(reason.contains(expected), "{url}: {reason}");
        }
        // And through the flag: the setting is named.
        let e = error(
            &[
                "--storage.postgres.url",
                &format!("postgres://u:{SECRET}@h:x/db"),
            ],
            &[],
        );
        assert!(
            e.contains("--storage.postgres.url: is not a valid PostgreSQL URL: invalid connection string: invalid value for option `port`"),
            "{e}"
        );
    }

    #[test]
    fn sslmodes() {
        let with = |params: &str| format!("postgres://u:{SECRET}@db.example.com/db?{params}");
        let mode = |params: &str| {
            PostgresConfig::from_url(&with(params)).map(|c| (c.tls, c.connect.get_ssl_mode()))
        };
        use tokio_postgres::config::SslMode;
        assert_eq!(
            mode("sslmode=disable"),
            Ok((PostgresTlsMode::Disable, SslMode::Disable))
        );
        assert_eq!(
            mode("sslmode=require"),
            Ok((PostgresTlsMode::Require, SslMode::Require))
        );
        assert_eq!(
            mode("sslmode=verify-full"),
            Ok((PostgresTlsMode::VerifyFull, SslMode::Require))
        );
        assert_eq!(
            mode("connect_timeout=9&sslmode=verify%2Dfull&application_name=x"),
            Ok((PostgresTlsMode::VerifyFull, SslMode::Require))
        );
        for unsupported in ["prefer", "allow", "verify-ca"] {
            let reason = refused(&with(&format!("sslmode={unsupported}")));
            assert_eq!(
                reason,
                format!(
                    "sslmode={unsupported} is not supported: use disable, require or verify-full"
                )
            );
        }
        let reason = refused(&with("sslmode=strict"));
        assert_eq!(
            reason,
            "sslmode=\"strict\" is not a TLS mode: use disable, require or verify-full"
        );
        let reason = refused(&with("sslmode=require&sslmode=disable"));
        assert_eq!(reason, "gives sslmode twice");
        // PostgreSQL never encrypts Unix-socket connections.
        let socket = format!("postgres://u:{SECRET}@%2Fvar%2Frun%2Fpostgresql/db");
        assert!(PostgresConfig::from_url(&socket).is_ok());
        let reason = refused(&format!("{socket}?sslmode=require"));
        assert!(
            reason.starts_with("sslmode=require needs TCP hosts"),
            "{reason}"
        );
        // TLS needs a name: hostaddr alone has none.
        let by_address = format!("postgres://u:{SECRET}@/db?hostaddr=127.0.0.1");
        assert!(PostgresConfig::from_url(&by_address).is_ok());
        let reason = refused(&format!("{by_address}&sslmode=require"));
        assert!(
            reason.starts_with("sslmode=require needs a host name"),
            "{reason}"
        );
        let named = format!("{by_address}&host=db.example.com&sslmode=verify-full");
        assert!(PostgresConfig::from_url(&named).is_ok());
    }

    #[test]
    fn several_hosts() {
        let url = format!("postgres://u:{SECRET}@a:1,b:2,[::1]/db?target_session_attrs=read-write");
        let c = PostgresConfig::from_url(&url).unwrap();
        assert_eq!(c.connect.get_ports(), [1, 2, 5432]);
        assert_eq!(c.connect.get_hosts().len(), 3);
        let socket = format!("postgres://u:{SECRET}@%2Frun%2Fpostgresql/db?port=5433");
        let reason = refused(&socket);
        assert!(
            reason.contains("write HOST:PORT rather than a port parameter"),
            "{reason}"
        );
        let socket = format!("postgres://u:{SECRET}@%2Frun%2Fpostgresql:5433/db");
        assert_eq!(
            PostgresConfig::from_url(&socket)
                .unwrap()
                .connect
                .get_ports(),
            [5433]
        );
    }

    #[test]
    fn url_parameters_win_over_our_defaults() {
        let url = format!(
            "postgres://u:{SECRET}@h/db?connect_timeout=9&application_name=mine&sslmode=disable"
        );
        let c = PostgresConfig::from_url(&url).unwrap();
        assert_eq!(
            c.connect.get_connect_timeout(),
            Some(&Duration::from_secs(9))
        );
        assert_eq!(c.connect.get_application_name(), Some("mine"));
        assert_eq!(c.redacted, url.replace(SECRET, "***"));
    }

    #[test]
    fn sslrootcert() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("root ca.pem");
        write_ca(&ca);
        let encoded = ca.to_str().unwrap().replace(' ', "%20");
        let base = format!("postgres://u:{SECRET}@db.example.com/db");
        let url = format!("{base}?sslmode=verify-full&sslrootcert={encoded}");
        let c = PostgresConfig::from_url(&url).unwrap();
        assert_eq!(c.root_cert_file.as_deref(), Some(ca.as_path()));
        assert_eq!(c.root_certs.len(), 1);
        // `system` (or nothing) trusts the system's roots.
        for url in [
            format!("{base}?sslmode=verify-full&sslrootcert=system"),
            format!("{base}?sslmode=verify-full"),
        ] {
            let c = PostgresConfig::from_url(&url).unwrap();
            assert!(c.root_cert_file.is_none() && c.root_certs.is_empty());
        }
        // Only verify-full uses it.
        for mode in ["disable", "require"] {
            let reason = refused(&format!("{base}?sslmode={mode}&sslrootcert={encoded}"));
            assert_eq!(
                reason,
                format!("sslrootcert needs sslmode=verify-full (sslmode is {mode})")
            );
        }
        let reason = refused(&format!("{base}?sslrootcert={encoded}"));
        assert!(
            reason.starts_with("sslrootcert needs sslmode=verify-full"),
            "{reason}"
        );
        // A file that cannot serve is named, and the error goes to the URL flag.
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        for (path, expected) in [
            (&missing, "sslrootcert: cannot read"),
            (&not_pem, "holds no PEM certificate"),
        ] {
            let url = format!("{base}?sslmode=verify-full&sslrootcert={}", path.display());
            let reason = refused(&url);
            assert!(reason.contains(expected), "{reason}");
            assert!(reason.contains(&format!("{path:?}")), "{reason}");
            let e = error(&["--storage.postgres.url", &url], &[]);
            assert!(e.contains("--storage.postgres.url: "), "{e}");
        }
    }

    #[test]
    fn redaction() {
        let cases = [
            (
                format!("postgres://u:{SECRET}@h:5432/db"),
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db".to_owned(), "postgres://u@h/db"),
            (
                "postgresql://h/db?sslmode=require".to_owned(),
                "postgresql://h/db?sslmode=require",
            ),
            (format!("postgres://:{SECRET}@h/db"), "postgres://:***@h/db"),
            (
                format!("postgres://u:a@{SECRET}@h/db"),
                "postgres://u:***@h/db",
            ),
            (
                format!("postgres://u@h/db?sslmode=disable&password={SECRET}&dbname=x"),
                "postgres://u@h/db?sslmode=disable&password=***&dbname=x",
            ),
            (
                format!("postgres://u@h/db?pass%77ord={SECRET}"),
                "postgres://u@h/db?pass%77ord=***",
            ),
            (
                format!("host=h password={SECRET} user=u"),
                "host=h password=*** user=u",
            ),
            (
                format!("host=h  password = '{SECRET} x\\' y' user=u"),
                "host=h  password=*** user=u",
            ),
            (format!("password={SECRET}"), "password=***"),
            ("host=h password".to_owned(), "host=h ***"),
            (format!("host=h oops {SECRET}"), "host=h ***"),
            (
                format!("user='a b' password='{SECRET}"),
                "user='a b' password=***",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_postgres_url(&text), expected, "{text}");
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let url = format!("{}?sslmode=require&password={SECRET}x", url());
        let s = settings(&["--storage.postgres.url", &url], &[]);
        let Some(c) = &s.app.postgres else {
            panic!("no PostgreSQL settings");
        };
        // The query parameter is the one tokio-postgres keeps (it comes last).
        assert_eq!(
            c.connect.get_password(),
            Some(format!("{SECRET}x").as_bytes())
        );
        for text in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{c}"),
            format!("{c:?}"),
        ] {
            assert!(!text.contains(SECRET), "password in {text}");
        }
        assert_eq!(
            c.to_string(),
            "postgres://exporter:***@db.example.com:5433/cloud66?sslmode=require&password=***"
        );
        assert!(format!("{c:?}").contains("tls: Require"));
    }

    #[test]
    fn help_hides_the_url_from_the_environment() {
        let url = url();
        let vars = [("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL", url.as_str())];
        let CliOutcome::Exit {
            code: 0, output, ..
        } = outcome(&["--help"], &vars)
        else {
            panic!("--help did not print help");
        };
        assert!(output.contains("--storage.postgres.url"), "{output}");
        assert!(output.contains("CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_MAX_CONNECTIONS"));
        assert!(!output.contains(SECRET), "{output}");
    }
}

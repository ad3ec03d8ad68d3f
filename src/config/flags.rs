//! The command line as clap sees it: the flags, each with its environment variable, and
//! the two-pass parse that reads every variable through one lookup function.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, Command, CommandFactory, FromArgMatches, Parser, ValueEnum};

use super::{
    CliOutcome, DEFAULT_CLOUD66_API_URL, FALLBACK_API_TOKEN_ENV, FALLBACK_TOKEN_ENV, LogFormat,
};

/// Program name, used in `--help`, `--version` and at the start of every error line.
pub(super) const PROGRAM: &str = "cloud66-ssl-exporter";

/// `--version` text after the program name: crate version and git revision (see `build.rs`).
pub(super) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("GIT_REVISION"),
    ")"
);

/// Exit code for bad configuration: `EX_USAGE` from BSD `sysexits.h`.
pub(super) const EXIT_USAGE: u8 = 64;

/// The raw flags, as clap parses them; `validate` turns them into `Settings`.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, bin_name = PROGRAM, version = VERSION)]
#[command(about = "Turns Cloud66 SSL-certificate webhooks into durable Prometheus metrics.")]
pub(super) struct Cli {
    /// Address to listen on: :PORT (all IPv4 interfaces), HOST:PORT or [IPv6]:PORT
    #[arg(
        long = "web.listen-address",
        env = "CLOUD66_SSL_EXPORTER_WEB_LISTEN_ADDRESS",
        value_name = "ADDRESS",
        default_value = ":10066"
    )]
    pub(super) listen_address: String,

    /// Path under which metrics are served
    #[arg(
        long = "web.telemetry-path",
        env = "CLOUD66_SSL_EXPORTER_WEB_TELEMETRY_PATH",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub(super) telemetry_path: String,

    /// Most connections served at once; further ones wait until one closes
    #[arg(
        long = "web.max-connections",
        env = "CLOUD66_SSL_EXPORTER_WEB_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value = "1024"
    )]
    pub(super) max_connections: u64,

    /// Certificate chain (PEM) to serve HTTPS with; needs --web.tls-key-file
    #[arg(
        long = "web.tls-cert-file",
        env = "CLOUD66_SSL_EXPORTER_WEB_TLS_CERT_FILE",
        value_name = "FILE"
    )]
    pub(super) tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --web.tls-cert-file
    #[arg(
        long = "web.tls-key-file",
        env = "CLOUD66_SSL_EXPORTER_WEB_TLS_KEY_FILE",
        value_name = "FILE"
    )]
    pub(super) tls_key_file: Option<PathBuf>,

    /// Directory of the embedded database (created if missing); not used with --storage.postgres.url
    #[arg(
        long = "storage.path",
        env = "CLOUD66_SSL_EXPORTER_STORAGE_PATH",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub(super) storage_path: PathBuf,

    /// PostgreSQL to store in instead of the embedded database, shared by replicas: postgres://USER:PASSWORD@HOST[:PORT]/DBNAME[?sslmode=disable|require|verify-full&sslrootcert=FILE] (default sslmode=disable). Prefer the variable or --storage.postgres.url-file: arguments are visible to other users
    #[arg(
        long = "storage.postgres.url",
        env = "CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL",
        value_name = "URL"
    )]
    pub(super) postgres_url: Option<String>,

    /// File holding the PostgreSQL URL (trailing whitespace is ignored)
    #[arg(
        long = "storage.postgres.url-file",
        env = "CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_URL_FILE",
        value_name = "FILE"
    )]
    pub(super) postgres_url_file: Option<PathBuf>,

    /// Most PostgreSQL connections each replica opens, 1 to 256
    #[arg(
        long = "storage.postgres.max-connections",
        env = "CLOUD66_SSL_EXPORTER_STORAGE_POSTGRES_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value = "8"
    )]
    pub(super) postgres_max_connections: u64,

    /// Most certificates tracked; events for further new certificates are refused (422)
    #[arg(
        long = "storage.max-certificates",
        env = "CLOUD66_SSL_EXPORTER_STORAGE_MAX_CERTIFICATES",
        value_name = "COUNT",
        default_value = "10000"
    )]
    pub(super) max_certificates: u64,

    /// Secret that webhook URLs must carry: at least 16 of A-Z a-z 0-9 . _ ~ - (also read from CLOUD66_WEBHOOK_TOKEN). Without any token, one is generated and stored
    #[arg(
        long = "webhook.token",
        env = "CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN",
        value_name = "TOKEN"
    )]
    pub(super) webhook_token: Option<String>,

    /// File holding the webhook token (trailing whitespace is ignored)
    #[arg(
        long = "webhook.token-file",
        env = "CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub(super) webhook_token_file: Option<PathBuf>,

    /// Accept webhook calls without any token
    #[arg(
        long = "webhook.insecure-no-auth",
        env = "CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH",
        value_name = "BOOL",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub(super) webhook_insecure_no_auth: bool,

    /// Largest accepted webhook body in bytes, 1 to 16777216; larger bodies get 413
    #[arg(
        long = "webhook.max-body-bytes",
        env = "CLOUD66_SSL_EXPORTER_WEBHOOK_MAX_BODY_BYTES",
        value_name = "BYTES",
        default_value = "65536"
    )]
    pub(super) webhook_max_body_bytes: u64,

    /// Cloud66 personal access token for reconciling with the API (also read from CLOUD66_API_TOKEN). Without one, reconciliation is off
    #[arg(
        long = "cloud66.api-token",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN",
        value_name = "TOKEN"
    )]
    pub(super) cloud66_api_token: Option<String>,

    /// File holding the Cloud66 API token (trailing whitespace is ignored)
    #[arg(
        long = "cloud66.api-token-file",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub(super) cloud66_api_token_file: Option<PathBuf>,

    /// Base URL of the Cloud66 API (http:// or https://)
    #[arg(
        long = "cloud66.api-url",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_API_URL",
        value_name = "URL",
        default_value = DEFAULT_CLOUD66_API_URL
    )]
    pub(super) cloud66_api_url: String,

    /// CA certificates (PEM) trusted for the Cloud66 API besides the system's
    #[arg(
        long = "cloud66.api-ca-file",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_API_CA_FILE",
        value_name = "FILE"
    )]
    pub(super) cloud66_api_ca_file: Option<PathBuf>,

    /// Comma-separated uids of the stacks to reconcile (default: every stack the token can list)
    #[arg(
        long = "cloud66.stacks",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_STACKS",
        value_name = "UIDS"
    )]
    pub(super) cloud66_stacks: Option<String>,

    /// Comma-separated UID=ID pairs: the webhook stack id of each stack uid
    #[arg(
        long = "cloud66.stack-ids",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_STACK_IDS",
        value_name = "PAIRS"
    )]
    pub(super) cloud66_stack_ids: Option<String>,

    /// Time between reconciliations with the API, e.g. 90s or 1h30m; 1m to 7d
    #[arg(
        long = "cloud66.sync-interval",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_SYNC_INTERVAL",
        value_name = "DURATION",
        default_value = "1h"
    )]
    pub(super) cloud66_sync_interval: String,

    /// Most Cloud66 API requests in any hour, 1 to 3000
    #[arg(
        long = "cloud66.max-requests-per-hour",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_MAX_REQUESTS_PER_HOUR",
        value_name = "COUNT",
        default_value = "600"
    )]
    pub(super) cloud66_max_requests_per_hour: u64,

    /// Complete API listings a certificate may be missing from before it is forgotten, 0 to 1000; 0 never forgets
    #[arg(
        long = "cloud66.forget-missing-after",
        env = "CLOUD66_SSL_EXPORTER_CLOUD66_FORGET_MISSING_AFTER",
        value_name = "COUNT",
        default_value = "2"
    )]
    pub(super) cloud66_forget_missing_after: u64,

    /// Least severe level that is logged
    #[arg(
        long = "log.level",
        env = "CLOUD66_SSL_EXPORTER_LOG_LEVEL",
        value_name = "LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub(super) log_level: LevelArg,

    /// Format of log lines on stderr
    #[arg(
        long = "log.format",
        env = "CLOUD66_SSL_EXPORTER_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "logfmt"
    )]
    pub(super) log_format: LogFormat,
}

/// `--log.level` values (a subset of `tracing::Level`, which is not a `ValueEnum`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum LevelArg {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal operation: startup, shutdown, accepted and rejected webhooks.
    Info,
    /// Everything, for troubleshooting.
    Debug,
}

impl From<LevelArg> for tracing::Level {
    fn from(level: LevelArg) -> Self {
        match level {
            LevelArg::Error => tracing::Level::ERROR,
            LevelArg::Warn => tracing::Level::WARN,
            LevelArg::Info => tracing::Level::INFO,
            LevelArg::Debug => tracing::Level::DEBUG,
        }
    }
}

/// A flag whose value came from its environment variable rather than the command line.
#[derive(Debug)]
pub(super) struct EnvValue {
    /// Long flag name without the leading dashes, e.g. `web.listen-address`.
    pub(super) flag: String,
    /// Variable the value was read from.
    pub(super) var: String,
    /// The value itself.
    pub(super) value: String,
}

impl EnvValue {
    /// The value as a command-line argument, so clap parses it like a flag.
    pub(super) fn as_arg(&self) -> OsString {
        format!("--{}={}", self.flag, self.value).into()
    }
}

/// Parsed flags plus where they came from (to name the right source in errors).
pub(super) struct Parsed {
    /// The flags.
    pub(super) cli: Cli,
    /// Flags that were filled from the environment.
    pub(super) from_env: Vec<EnvValue>,
    /// Long names of the flags given on the command line or by their variable.
    pub(super) given: Vec<String>,
}

impl Parsed {
    /// How errors name a flag: `--flag`, or `--flag (from VAR)` when the environment set it.
    pub(super) fn name(&self, flag: &str) -> String {
        match self.from_env.iter().find(|e| e.flag == flag) {
            Some(e) => format!("--{flag} (from {})", e.var),
            None => format!("--{flag}"),
        }
    }

    /// Whether `flag` (long name without dashes) was set, on the command line or by its
    /// variable, rather than left at its default.
    pub(super) fn given(&self, flag: &str) -> bool {
        self.given.iter().any(|given| given == flag)
    }
}

/// The command with its `env` attributes, used to render `--help`. Values are hidden so
/// that help never prints a token and does not depend on the environment.
pub(super) fn documented_command() -> Command {
    Cli::command().mut_args(|arg| arg.hide_env_values(true))
}

/// The command without `env` attributes, so that clap never reads the process environment.
pub(super) fn bare_command() -> Command {
    Cli::command().mut_args(|arg| arg.env(None::<&'static str>))
}

/// Every environment variable the configuration reads.
pub(super) fn env_vars() -> Vec<String> {
    let command = documented_command();
    let flags = command.get_arguments().filter_map(|arg| arg.get_env());
    let mut vars: Vec<String> = flags.map(|v| v.to_string_lossy().into_owned()).collect();
    vars.push(FALLBACK_TOKEN_ENV.to_owned());
    vars.push(FALLBACK_API_TOKEN_ENV.to_owned());
    vars
}

/// Parses the arguments, then adds the variables of the flags not given and parses again.
/// The error is the exit to take (boxed: it is much larger than `Parsed`).
pub(super) fn parse(
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, Box<CliOutcome>> {
    let given = bare_command()
        .try_get_matches_from(args)
        .map_err(|e| Box::new(clap_exit(&e, args)))?;
    let mut from_env = Vec::new();
    for arg in documented_command().get_arguments() {
        let (Some(flag), Some(var)) = (arg.get_long(), arg.get_env().and_then(OsStr::to_str))
        else {
            continue;
        };
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        // An empty variable counts as unset, as container tooling often passes `VAR=`.
        if let Some(value) = env(var).filter(|v| !v.is_empty()) {
            let (flag, var) = (flag.to_owned(), var.to_owned());
            from_env.push(EnvValue { flag, var, value });
        }
    }
    let matches = bare_command()
        .try_get_matches_from(with_env_args(args, &from_env))
        .map_err(|e| Box::new(env_error(&e, args, &from_env)))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Box::new(clap_exit(&e, args)))?;
    // The environment's values were passed as arguments, so they count as given too.
    let given = bare_command()
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect();
    Ok(Parsed {
        cli,
        from_env,
        given,
    })
}

/// `args` with the environment's values inserted after the program name (before any `--`).
pub(super) fn with_env_args(args: &[OsString], from_env: &[EnvValue]) -> Vec<OsString> {
    let (program, rest) = args.split_at(1);
    let env_args = from_env.iter().map(EnvValue::as_arg);
    program
        .iter()
        .cloned()
        .chain(env_args)
        .chain(rest.iter().cloned())
        .collect()
}

/// A parse error caused by an environment value, naming the variable at fault.
pub(super) fn env_error(
    error: &clap::Error,
    args: &[OsString],
    from_env: &[EnvValue],
) -> CliOutcome {
    let culprit = from_env.iter().find(|value| {
        let one = with_env_args(args, std::slice::from_ref(value));
        bare_command().try_get_matches_from(one).is_err()
    });
    match culprit {
        Some(value) => usage_error(&format!("{} (from {})", first_line(error), value.var)),
        None => clap_exit(error, args),
    }
}

/// What to do on a clap "error": print help or version, or report a usage error.
pub(super) fn clap_exit(error: &clap::Error, args: &[OsString]) -> CliOutcome {
    let output = match error.kind() {
        // Render help again from the command that still documents the variables.
        ErrorKind::DisplayHelp => match documented_command().try_get_matches_from(args) {
            Err(documented) if documented.kind() == ErrorKind::DisplayHelp => {
                documented.to_string()
            }
            _ => error.to_string(),
        },
        ErrorKind::DisplayVersion => error.to_string(),
        _ => return usage_error(&first_line(error)),
    };
    CliOutcome::Exit {
        code: 0,
        output: output.trim_end().to_owned(),
        to_stderr: false,
    }
}

/// The first line of a clap error, e.g. `error: unexpected argument '--foo' found`.
pub(super) fn first_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    match rendered.lines().next() {
        Some(line) if !line.is_empty() => line.to_owned(),
        _ => "error: invalid arguments".to_owned(),
    }
}

/// Exit 64 with `line` (prefixed with the program name) on stderr.
pub(super) fn usage_error(line: &str) -> CliOutcome {
    CliOutcome::Exit {
        code: EXIT_USAGE,
        output: format!("{PROGRAM}: {line}"),
        to_stderr: true,
    }
}

//! Unit tests of `config`.

use super::flags::{bare_command, documented_command};
use super::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::Ipv6Addr;

/// A token that passes every check.
const TOKEN: &str = "abcdefghijklmnop-._~0123";

/// Parses `args` (without the program name) with the variables in `vars` only.
fn outcome(args: &[&str], vars: &[(&str, &str)]) -> CliOutcome {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let argv = std::iter::once(PROGRAM).chain(args.iter().copied());
    from_iter(argv, move |var| vars.get(var).cloned())
}

/// The settings for `args` and `vars`; fails the test on any exit.
fn settings(args: &[&str], vars: &[(&str, &str)]) -> Settings {
    match outcome(args, vars) {
        CliOutcome::Run(settings) => settings,
        exit => panic!("expected settings, got {exit:?}"),
    }
}

/// The error line for `args` and `vars`; fails the test unless it is an exit 64.
fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
    match outcome(args, vars) {
        CliOutcome::Exit {
            code: 64,
            output,
            to_stderr: true,
        } => output,
        other => panic!("expected exit 64 on stderr, got {other:?}"),
    }
}

/// The stdout text for `args`; fails the test unless it is an exit 0.
fn printed(args: &[&str]) -> String {
    match outcome(args, &[]) {
        CliOutcome::Exit {
            code: 0,
            output,
            to_stderr: false,
        } => output,
        other => panic!("expected exit 0 on stdout, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let s = settings(&[], &[]);
    assert_eq!(s.listen, "0.0.0.0:10066".parse().unwrap());
    assert_eq!(s.app.telemetry_path, "/metrics");
    assert_eq!(s.app.storage_path, PathBuf::from("./data"));
    assert_eq!(s.app.auth, WebhookAuth::Stored);
    assert_eq!(s.app.max_body_bytes, 65_536);
    assert_eq!(s.log.level, tracing::Level::INFO);
    assert_eq!(s.log.format, LogFormat::Logfmt);
}

/// Every flag set to a non-default value, as arguments.
const FLAGS: &[&str] = &[
    "--web.listen-address=127.0.0.1:9",
    "--web.telemetry-path=/prom",
    "--storage.path=/var/lib/c66",
    "--webhook.max-body-bytes=1024",
    "--log.level=debug",
    "--log.format=json",
];

/// The same values as `FLAGS`, as environment variables.
const VARS: &[(&str, &str)] = &[
    ("CLOUD66_SSL_EXPORTER_WEB_LISTEN_ADDRESS", "127.0.0.1:9"),
    ("CLOUD66_SSL_EXPORTER_WEB_TELEMETRY_PATH", "/prom"),
    ("CLOUD66_SSL_EXPORTER_STORAGE_PATH", "/var/lib/c66"),
    ("CLOUD66_SSL_EXPORTER_WEBHOOK_MAX_BODY_BYTES", "1024"),
    ("CLOUD66_SSL_EXPORTER_LOG_LEVEL", "debug"),
    ("CLOUD66_SSL_EXPORTER_LOG_FORMAT", "json"),
];

/// Checks that `s` holds the values of `FLAGS` and `VARS`.
fn assert_non_defaults(s: &Settings) {
    assert_eq!(s.listen, "127.0.0.1:9".parse().unwrap());
    assert_eq!(s.app.telemetry_path, "/prom");
    assert_eq!(s.app.storage_path, PathBuf::from("/var/lib/c66"));
    assert_eq!(s.app.max_body_bytes, 1024);
    assert_eq!(s.log.level, tracing::Level::DEBUG);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn every_flag_from_arguments() {
    assert_non_defaults(&settings(FLAGS, &[]));
    // The space-separated form works too.
    let s = settings(&["--web.telemetry-path", "/x", "--log.level", "error"], &[]);
    assert_eq!(
        (s.app.telemetry_path.as_str(), s.log.level),
        ("/x", tracing::Level::ERROR)
    );
}

#[test]
fn every_flag_from_its_variable() {
    assert_non_defaults(&settings(&[], VARS));
}

#[test]
fn flags_win_over_variables() {
    let vars: Vec<(&str, &str)> = VARS.iter().map(|(k, _)| (*k, "/junk")).collect();
    assert_non_defaults(&settings(FLAGS, &vars));
    let vars = [("CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH", "true")];
    let s = settings(&["--webhook.insecure-no-auth=false"], &vars);
    assert_eq!(s.app.auth, WebhookAuth::Stored);
}

#[test]
fn empty_variables_count_as_unset() {
    let s = settings(&[], &[("CLOUD66_SSL_EXPORTER_WEB_TELEMETRY_PATH", "")]);
    assert_eq!(s.app.telemetry_path, "/metrics");
}

#[test]
fn variables_are_named_after_their_flags() {
    let command = documented_command();
    for arg in command.get_arguments() {
        let Some(flag) = arg.get_long().filter(|f| !matches!(*f, "help" | "version")) else {
            continue;
        };
        let expected =
            format!("CLOUD66_SSL_EXPORTER_{}", flag.to_uppercase()).replace(['.', '-'], "_");
        assert_eq!(arg.get_env(), Some(OsStr::new(&expected)), "--{flag}");
    }
    // And clap itself never reads the process environment.
    assert!(
        bare_command()
            .get_arguments()
            .all(|a| a.get_env().is_none())
    );
}

#[test]
fn token_sources() {
    let auth = |args: &[&str], vars: &[(&str, &str)]| settings(args, vars).app.auth;
    let expected = WebhookAuth::Token(TOKEN.to_owned());
    assert_eq!(auth(&["--webhook.token", TOKEN], &[]), expected);
    assert_eq!(
        auth(&[], &[("CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN", TOKEN)]),
        expected
    );
    assert_eq!(auth(&[], &[("CLOUD66_WEBHOOK_TOKEN", TOKEN)]), expected);
    let other = "zzzzzzzzzzzzzzzzzzzz";
    let both = [
        ("CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN", TOKEN),
        ("CLOUD66_WEBHOOK_TOKEN", other),
    ];
    assert_eq!(
        auth(&[], &both),
        expected,
        "first variable wins over the fallback"
    );
    let vars = [("CLOUD66_WEBHOOK_TOKEN", other)];
    assert_eq!(
        auth(&["--webhook.token", TOKEN], &vars),
        expected,
        "flag wins"
    );
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n\n")).unwrap();
    let path = path.to_str().unwrap();
    let expected = WebhookAuth::Token(TOKEN.to_owned());
    assert_eq!(
        settings(&["--webhook.token-file", path], &[]).app.auth,
        expected
    );
    let vars = [("CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN_FILE", path)];
    assert_eq!(settings(&[], &vars).app.auth, expected);
}

#[test]
fn insecure_no_auth() {
    let auth = |args: &[&str], vars: &[(&str, &str)]| settings(args, vars).app.auth;
    assert_eq!(
        auth(&["--webhook.insecure-no-auth"], &[]),
        WebhookAuth::Disabled
    );
    assert_eq!(
        auth(&["--webhook.insecure-no-auth=true"], &[]),
        WebhookAuth::Disabled
    );
    assert_eq!(
        auth(&["--webhook.insecure-no-auth=false"], &[]),
        WebhookAuth::Stored
    );
    let var = "CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH";
    assert_eq!(auth(&[], &[(var, "true")]), WebhookAuth::Disabled);
    assert_eq!(auth(&[], &[(var, "false")]), WebhookAuth::Stored);
}

#[test]
fn listen_address_forms() {
    let listen = |text: &str| settings(&["--web.listen-address", text], &[]).listen;
    assert_eq!(
        listen(":10066"),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 10066))
    );
    assert_eq!(
        listen("[::1]:9"),
        SocketAddr::from((Ipv6Addr::LOCALHOST, 9))
    );
    assert_eq!(
        listen("127.0.0.1:0"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    );
    let local = listen("localhost:8080");
    assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
}

/// One invalid case a line: arguments | variables (NAME=value) | the expected error,
/// after "cloud66-ssl-exporter: ". {T} stands for a valid token.
const INVALID: &str = r##"
--foo                                          |                                                    | error: unexpected argument '--foo' found
--log.level=trace                              |                                                    | error: invalid value 'trace' for '--log.level <LEVEL>'
--storage.path=                                |                                                    | error: a value is required for '--storage.path <DIR>' but none was supplied
                                           | CLOUD66_SSL_EXPORTER_LOG_FORMAT=xml                | error: invalid value 'xml' for '--log.format <FORMAT>' (from CLOUD66_SSL_EXPORTER_LOG_FORMAT)
                                           | CLOUD66_SSL_EXPORTER_WEBHOOK_MAX_BODY_BYTES=abc    | error: invalid value 'abc' for '--webhook.max-body-bytes <BYTES>': invalid digit found in string (from CLOUD66_SSL_EXPORTER_WEBHOOK_MAX_BODY_BYTES)
--web.listen-address=10066                     |                                                    | error: --web.listen-address: "10066" is not :PORT, HOST:PORT or [IPv6]:PORT
--web.listen-address=:70000                    |                                                    | error: --web.listen-address: ":70000" is not :PORT, HOST:PORT or [IPv6]:PORT
--web.listen-address=::1:9                     |                                                    | error: --web.listen-address: "::1:9" is not :PORT, HOST:PORT or [IPv6]:PORT
                                           | CLOUD66_SSL_EXPORTER_WEB_TELEMETRY_PATH=metrics    | error: --web.telemetry-path (from CLOUD66_SSL_EXPORTER_WEB_TELEMETRY_PATH): "metrics" must start with "/"
--web.telemetry-path=/                         |                                                    | error: --web.telemetry-path: "/" is reserved for the landing page
--web.telemetry-path=/webhook                  |                                                    | error: --web.telemetry-path: "/webhook" is reserved for webhook calls
--web.telemetry-path=/webhook/x                |                                                    | error: --web.telemetry-path: "/webhook/x" is reserved for webhook calls
--web.telemetry-path=/healthz                  |                                                    | error: --web.telemetry-path: "/healthz" is reserved for the health checks
--web.telemetry-path=/readyz                   |                                                    | error: --web.telemetry-path: "/readyz" is reserved for the health checks
--web.telemetry-path=/api/v1                   |                                                    | error: --web.telemetry-path: "/api/v1" is reserved for the API
--web.telemetry-path=/m?x=1                    |                                                    | error: --web.telemetry-path: "/m?x=1" must not contain spaces, "?" or "#"
--webhook.max-body-bytes=0                     |                                                    | error: --webhook.max-body-bytes: must be from 1 to 16777216, got 0
--webhook.max-body-bytes=16777217              |                                                    | error: --webhook.max-body-bytes: must be from 1 to 16777216, got 16777217
--webhook.token=short                          |                                                    | error: --webhook.token: must be at least 16 characters long, got 5
--webhook.token=abcdefghijklmnop/q             |                                                    | error: --webhook.token: must contain only A-Z a-z 0-9 . _ ~ - (character 17 does not)
                                           | CLOUD66_WEBHOOK_TOKEN=short                        | error: --webhook.token (from CLOUD66_WEBHOOK_TOKEN): must be at least 16 characters long, got 5
--webhook.token={T} --webhook.token-file=/t    |                                                    | error: --webhook.token-file: cannot be combined with --webhook.token; give at most one
--webhook.token-file=/t                        | CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN={T}             | error: --webhook.token-file: cannot be combined with --webhook.token (from CLOUD66_SSL_EXPORTER_WEBHOOK_TOKEN); give at most one
--webhook.token-file=/t                        | CLOUD66_WEBHOOK_TOKEN={T}                          | error: --webhook.token-file: cannot be combined with --webhook.token (from CLOUD66_WEBHOOK_TOKEN); give at most one
--webhook.token={T} --webhook.insecure-no-auth |                                                    | error: --webhook.insecure-no-auth: cannot be combined with --webhook.token
--webhook.insecure-no-auth                     | CLOUD66_WEBHOOK_TOKEN={T}                          | error: --webhook.insecure-no-auth: cannot be combined with --webhook.token (from CLOUD66_WEBHOOK_TOKEN)
--webhook.token-file=/t                        | CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH=true | error: --webhook.insecure-no-auth (from CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH): cannot be combined with --webhook.token-file
                                           | CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH=yes  | error: invalid value 'yes' for '--webhook.insecure-no-auth[=<BOOL>]' (from CLOUD66_SSL_EXPORTER_WEBHOOK_INSECURE_NO_AUTH)
--webhook.token-file=/nonexistent/t            |                                                    | error: --webhook.token-file: cannot read "/nonexistent/t": No such file or directory (os error 2)
"##;

#[test]
fn invalid_configurations_name_the_setting_and_reason() {
    let cases = INVALID.lines().filter(|line| !line.trim().is_empty());
    for case in cases.map(|line| line.replace("{T}", TOKEN)) {
        let [args, vars, expected] = *case.splitn(3, '|').collect::<Vec<_>>() else {
            panic!("malformed case {case:?}");
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let vars: Vec<(&str, &str)> = vars
            .split_whitespace()
            .filter_map(|v| v.split_once('='))
            .collect();
        let line = error(&args, &vars);
        let expected = format!("cloud66-ssl-exporter: {}", expected.trim());
        assert_eq!(line, expected, "{args:?} {vars:?}");
        assert!(!line.contains('\n'), "one line: {line:?}");
    }
}

#[test]
fn unresolvable_host() {
    let line = error(&["--web.listen-address=nohost.invalid:9"], &[]);
    let expected =
        "cloud66-ssl-exporter: error: --web.listen-address: cannot resolve \"nohost.invalid\": ";
    assert!(line.starts_with(expected), "{line}");
}

#[test]
fn token_file_with_bad_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "secret\n").unwrap();
    let line = error(&["--webhook.token-file", path.to_str().unwrap()], &[]);
    let expected = format!(
        "cloud66-ssl-exporter: error: --webhook.token-file: the token in {path:?} \
         must be at least 16 characters long, got 6"
    );
    assert_eq!(line, expected);
}

#[test]
fn version_names_the_revision() {
    let expected = format!(
        "cloud66-ssl-exporter {} (revision {})",
        env!("CARGO_PKG_VERSION"),
        env!("GIT_REVISION")
    );
    assert_eq!(printed(&["--version"]), expected);
    assert_eq!(printed(&["-V"]), expected);
}

#[test]
fn help_documents_every_flag_variable_and_default() {
    for help in [printed(&["--help"]), printed(&["-h"])] {
        let help = one_line(&help); // `-h` wraps inside the brackets
        for arg in documented_command().get_arguments() {
            let Some(flag) = arg.get_long() else { continue };
            assert!(help.contains(&format!("--{flag}")), "--{flag} in {help}");
            if let Some(var) = arg.get_env().and_then(OsStr::to_str) {
                assert!(help.contains(&format!("[env: {var}]")), "{var} in {help}");
            }
            for default in arg.get_default_values() {
                let default = format!("[default: {}]", default.to_string_lossy());
                assert!(help.contains(&default), "{default} in {help}");
            }
        }
        assert!(
            help.contains("CLOUD66_WEBHOOK_TOKEN"),
            "fallback variable in {help}"
        );
    }
}

#[test]
fn debug_output_never_shows_the_token() {
    let auth = WebhookAuth::Token("super-secret-token-value".into());
    assert_eq!(format!("{auth:?}"), "Token(<redacted>)");
}

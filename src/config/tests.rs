//! Unit tests of `config`.

use super::cloud66::parse_duration;
use super::flags::{bare_command, documented_command};
use super::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::Ipv6Addr;

/// A token that passes every check.
const TOKEN: &str = "abcdefghijklmnop-._~0123";

/// Parses `args` (without the program name) with the variables in `vars` only.
pub(super) fn outcome(args: &[&str], vars: &[(&str, &str)]) -> CliOutcome {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let argv = std::iter::once(PROGRAM).chain(args.iter().copied());
    from_iter(argv, move |var| vars.get(var).cloned())
}

/// The settings for `args` and `vars`; fails the test on any exit.
pub(super) fn settings(args: &[&str], vars: &[(&str, &str)]) -> Settings {
    match outcome(args, vars) {
        CliOutcome::Run(settings) => settings,
        exit => panic!("expected settings, got {exit:?}"),
    }
}

/// The error line for `args` and `vars`; fails the test unless it is an exit 64.
pub(super) fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
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
--cloud66.api-token={T} --cloud66.api-token-file=/t |                                               | error: --cloud66.api-token-file: cannot be combined with --cloud66.api-token; give at most one
--cloud66.api-token-file=/t                    | CLOUD66_API_TOKEN={T}                              | error: --cloud66.api-token-file: cannot be combined with --cloud66.api-token (from CLOUD66_API_TOKEN); give at most one
                                           | CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN={T} CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE=/t | error: --cloud66.api-token-file (from CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE): cannot be combined with --cloud66.api-token (from CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN); give at most one
--cloud66.api-token-file=/nonexistent/t        |                                                    | error: --cloud66.api-token-file: cannot read "/nonexistent/t": No such file or directory (os error 2)
--cloud66.api-token=                           |                                                    | error: --cloud66.api-token: must not be empty
--cloud66.api-token={T} --cloud66.api-url=ftp://h/api |                                             | error: --cloud66.api-url: "ftp://h/api" is not an http:// or https:// URL
--cloud66.api-token={T} --cloud66.api-url=app.cloud66.com/api/3 |                                   | error: --cloud66.api-url: "app.cloud66.com/api/3" is not an http:// or https:// URL
--cloud66.api-token={T} --cloud66.api-url=/api/3 |                                                  | error: --cloud66.api-url: "/api/3" is not an http:// or https:// URL
--cloud66.api-token={T} --cloud66.api-url=https://h/api?x=1 |                                       | error: --cloud66.api-url: "https://h/api?x=1" must not have a query or fragment
--cloud66.api-token={T} --cloud66.api-url=https://h/api? |                                          | error: --cloud66.api-url: "https://h/api?" must not have a query or fragment
--cloud66.api-token={T} --cloud66.api-url=https://h/api#x |                                         | error: --cloud66.api-url: "https://h/api#x" must not have a query or fragment
--cloud66.api-token={T} --cloud66.api-url=https://:443/api |                                        | error: --cloud66.api-url: "https://:443/api" has no host
--cloud66.api-token={T} --cloud66.api-url=https://h:99999/api |                                     | error: --cloud66.api-url: "https://h:99999/api" has an invalid port
--cloud66.api-token={T} --cloud66.api-url=https://me:secret@h/api |                                 | error: --cloud66.api-url: must not contain user info (user:password@)
--cloud66.api-token={T}                        | CLOUD66_SSL_EXPORTER_CLOUD66_API_URL=mailto:me     | error: --cloud66.api-url (from CLOUD66_SSL_EXPORTER_CLOUD66_API_URL): "mailto:me" is not an http:// or https:// URL
--cloud66.api-token={T} --cloud66.api-ca-file=/nonexistent/ca.pem |                                 | error: --cloud66.api-ca-file: cannot read "/nonexistent/ca.pem": No such file or directory (os error 2)
--cloud66.api-token={T} --cloud66.stacks=,,    |                                                    | error: --cloud66.stacks: lists no stack uid
--cloud66.api-token={T} --cloud66.stacks=abc,a/b |                                                  | error: --cloud66.stacks: "a/b" is not a stack uid (1 to 64 of A-Z a-z 0-9 _ -)
--cloud66.api-token={T} --cloud66.stacks=abc,é |                                                    | error: --cloud66.stacks: "é" is not a stack uid (1 to 64 of A-Z a-z 0-9 _ -)
--cloud66.api-token={T} --cloud66.stacks=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | | error: --cloud66.stacks: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" is not a stack uid (1 to 64 of A-Z a-z 0-9 _ -)
--cloud66.api-token={T} --cloud66.stack-ids=abc |                                                   | error: --cloud66.stack-ids: "abc" is not UID=ID
--cloud66.api-token={T} --cloud66.stack-ids==12 |                                                   | error: --cloud66.stack-ids: "" is not a stack uid (1 to 64 of A-Z a-z 0-9 _ -)
--cloud66.api-token={T} --cloud66.stack-ids=a.b=12 |                                                | error: --cloud66.stack-ids: "a.b" is not a stack uid (1 to 64 of A-Z a-z 0-9 _ -)
--cloud66.api-token={T} --cloud66.stack-ids=abc=x1 |                                                | error: --cloud66.stack-ids: "x1" in "abc=x1" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc=-1 |                                                | error: --cloud66.stack-ids: "-1" in "abc=-1" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc=+1 |                                                | error: --cloud66.stack-ids: "+1" in "abc=+1" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc= |                                                  | error: --cloud66.stack-ids: "" in "abc=" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc=1=2 |                                               | error: --cloud66.stack-ids: "1=2" in "abc=1=2" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc=99999999999999999999 |                             | error: --cloud66.stack-ids: "99999999999999999999" in "abc=99999999999999999999" is not a stack id (a non-negative integer)
--cloud66.api-token={T} --cloud66.stack-ids=abc=1,abc=2 |                                           | error: --cloud66.stack-ids: "abc" is given two ids, 1 and 2
--cloud66.api-token={T} --cloud66.stack-ids=abc=1,def=01 |                                          | error: --cloud66.stack-ids: "abc" and "def" both have id 1
--cloud66.api-token={T} --cloud66.stack-ids=,  |                                                    | error: --cloud66.stack-ids: lists no UID=ID pair
--cloud66.api-token={T} --cloud66.sync-interval=59s |                                               | error: --cloud66.sync-interval: must be from 1m to 7d, got 59s
--cloud66.api-token={T} --cloud66.sync-interval=0 |                                                 | error: --cloud66.sync-interval: must be from 1m to 7d, got 0
--cloud66.api-token={T} --cloud66.sync-interval=7d1ms |                                             | error: --cloud66.sync-interval: must be from 1m to 7d, got 7d1ms
--cloud66.api-token={T} --cloud66.sync-interval=2w |                                                | error: --cloud66.sync-interval: must be from 1m to 7d, got 2w
--cloud66.api-token={T} --cloud66.sync-interval=soon |                                              | error: --cloud66.sync-interval: "soon" is not a duration such as 90s, 15m or 1h30m
--cloud66.api-token={T} --cloud66.sync-interval=60 |                                                | error: --cloud66.sync-interval: "60" is not a duration such as 90s, 15m or 1h30m
--cloud66.api-token={T}                        | CLOUD66_SSL_EXPORTER_CLOUD66_SYNC_INTERVAL=1x      | error: --cloud66.sync-interval (from CLOUD66_SSL_EXPORTER_CLOUD66_SYNC_INTERVAL): "1x" is not a duration such as 90s, 15m or 1h30m
--cloud66.api-token={T} --cloud66.max-requests-per-hour=0 |                                         | error: --cloud66.max-requests-per-hour: must be from 1 to 3000, got 0
--cloud66.api-token={T} --cloud66.max-requests-per-hour=3001 |                                      | error: --cloud66.max-requests-per-hour: must be from 1 to 3000, got 3001
--cloud66.api-token={T} --cloud66.max-requests-per-hour=-1 |                                        | error: invalid value '-1' for '--cloud66.max-requests-per-hour <COUNT>': invalid digit found in string
--cloud66.api-token={T} --cloud66.forget-missing-after=1001 |                                       | error: --cloud66.forget-missing-after: must be from 0 to 1000, got 1001
--cloud66.api-token={T}                        | CLOUD66_SSL_EXPORTER_CLOUD66_FORGET_MISSING_AFTER=x | error: invalid value 'x' for '--cloud66.forget-missing-after <COUNT>': invalid digit found in string (from CLOUD66_SSL_EXPORTER_CLOUD66_FORGET_MISSING_AFTER)
--cloud66.sync-interval=1h                     |                                                    | error: --cloud66.sync-interval: needs --cloud66.api-token or --cloud66.api-token-file
--cloud66.sync-interval=1h                     | CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE=       | error: --cloud66.sync-interval: needs --cloud66.api-token or --cloud66.api-token-file
                                           | CLOUD66_SSL_EXPORTER_CLOUD66_STACKS=abc            | error: --cloud66.stacks (from CLOUD66_SSL_EXPORTER_CLOUD66_STACKS): needs --cloud66.api-token or --cloud66.api-token-file
--cloud66.stacks=abc                           | CLOUD66_WEBHOOK_TOKEN={T}                          | error: --cloud66.stacks: needs --cloud66.api-token or --cloud66.api-token-file
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
        assert!(
            help.contains("CLOUD66_API_TOKEN"),
            "fallback API token variable in {help}"
        );
    }
}

#[test]
fn debug_output_never_shows_the_token() {
    let auth = WebhookAuth::Token("super-secret-token-value".into());
    assert_eq!(format!("{auth:?}"), "Token(<redacted>)");
}

/// The Cloud66 settings for `args` and `vars`; fails the test if reconciliation is off.
fn cloud66(args: &[&str], vars: &[(&str, &str)]) -> Cloud66Config {
    match settings(args, vars).app.cloud66 {
        Some(config) => config,
        None => panic!("expected Cloud66 settings for {args:?} {vars:?}"),
    }
}

/// Writes `count` self-signed CA certificates (PEM) to `path`; returns them as DER.
fn write_ca_file(path: &Path, count: usize) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let mut pem = String::new();
    let mut ders = Vec::new();
    for index in 0..count {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Test CA {index}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        pem.push_str(&cert.pem());
        ders.push(cert.der().clone());
    }
    std::fs::write(path, pem).unwrap();
    ders
}

#[test]
fn cloud66_is_off_without_a_token() {
    assert!(settings(&[], &[]).app.cloud66.is_none());
    // The webhook token is not an API token.
    let vars = [("CLOUD66_WEBHOOK_TOKEN", TOKEN)];
    assert!(
        settings(&["--webhook.token", TOKEN], &vars)
            .app
            .cloud66
            .is_none()
    );
    // Empty variables count as unset.
    let vars = [
        ("CLOUD66_API_TOKEN", ""),
        ("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN", ""),
        ("CLOUD66_SSL_EXPORTER_CLOUD66_SYNC_INTERVAL", ""),
    ];
    assert!(settings(&[], &vars).app.cloud66.is_none());
}

#[test]
fn cloud66_defaults_with_a_token() {
    let c = cloud66(&["--cloud66.api-token", "c66-token"], &[]);
    let defaults = Cloud66Config::new("c66-token", DEFAULT_CLOUD66_API_URL);
    assert_eq!(c.token, defaults.token);
    assert_eq!(c.token.expose(), "c66-token");
    assert_eq!(c.api_url, "https://app.cloud66.com/api/3");
    assert!(c.extra_roots.is_empty());
    assert_eq!(c.stacks, None);
    assert!(c.stack_ids.is_empty());
    assert_eq!(c.sync_interval, Duration::from_secs(3600));
    assert_eq!(c.max_requests_per_hour, 600);
    assert_eq!(c.forget_missing_after, 2);
    assert_eq!(c.request_timeout, defaults.request_timeout);
    assert_eq!(c.retry_delay, defaults.retry_delay);
}

/// Checks that `c` holds the values that `cloud66_every_flag_*` set.
fn assert_cloud66_non_defaults(c: &Cloud66Config, roots: &[rustls_pki_types::CertificateDer<'_>]) {
    assert_eq!(c.token.expose(), "Bearer-ish_token/with+symbols=~!");
    assert_eq!(c.api_url, "http://c66.internal:8080/api/3");
    assert_eq!(c.extra_roots, roots);
    let stacks = ["abc-123", "DEF_456"].map(String::from).to_vec();
    assert_eq!(c.stacks, Some(stacks));
    let pairs = [("abc-123", "42"), ("DEF_456", "0"), ("ghi", "7")];
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(uid, id)| (uid.to_string(), id.to_string()))
        .collect();
    assert_eq!(c.stack_ids, pairs);
    assert_eq!(c.sync_interval, Duration::from_secs(5400));
    assert_eq!(c.max_requests_per_hour, 3000);
    assert_eq!(c.forget_missing_after, 0);
}

/// Values of every `--cloud66.*` flag but the CA file, as (flag, value).
const CLOUD66_VALUES: &[(&str, &str)] = &[
    ("cloud66.api-token", "Bearer-ish_token/with+symbols=~!"),
    ("cloud66.api-url", "http://c66.internal:8080/api/3/"),
    ("cloud66.stacks", " abc-123, ,DEF_456,abc-123 ,"),
    (
        "cloud66.stack-ids",
        "abc-123=0042, DEF_456 = 0 ,ghi=7,abc-123=42",
    ),
    ("cloud66.sync-interval", "1h30m"),
    ("cloud66.max-requests-per-hour", "3000"),
    ("cloud66.forget-missing-after", "0"),
];

/// The variable of `--flag`.
fn var_of(flag: &str) -> String {
    format!("CLOUD66_SSL_EXPORTER_{}", flag.to_uppercase()).replace(['.', '-'], "_")
}

#[test]
fn cloud66_every_flag_from_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let roots = write_ca_file(&ca, 2);
    let mut args: Vec<String> = CLOUD66_VALUES
        .iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect();
    args.push(format!("--cloud66.api-ca-file={}", ca.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_cloud66_non_defaults(&cloud66(&args, &[]), &roots);
}

#[test]
fn cloud66_every_flag_from_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let roots = write_ca_file(&ca, 1);
    let mut vars: Vec<(String, String)> = CLOUD66_VALUES
        .iter()
        .map(|(flag, value)| (var_of(flag), value.to_string()))
        .collect();
    vars.push((var_of("cloud66.api-ca-file"), ca.display().to_string()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_cloud66_non_defaults(&cloud66(&[], &vars), &roots);
}

#[test]
fn cloud66_api_url_forms() {
    let url =
        |text: &str| cloud66(&["--cloud66.api-token=t", "--cloud66.api-url", text], &[]).api_url;
    assert_eq!(
        url("https://app.cloud66.com/api/3"),
        "https://app.cloud66.com/api/3"
    );
    assert_eq!(
        url("https://app.cloud66.com/api/3//"),
        "https://app.cloud66.com/api/3"
    );
    assert_eq!(url("http://127.0.0.1:9/"), "http://127.0.0.1:9");
    assert_eq!(url("http://127.0.0.1:9"), "http://127.0.0.1:9");
    assert_eq!(url("HTTPS://[::1]:8443/x"), "https://[::1]:8443/x");
    assert_eq!(url("https://h/a@b"), "https://h/a@b");
}

#[test]
fn cloud66_api_token_sources_and_precedence() {
    let token =
        |args: &[&str], vars: &[(&str, &str)]| cloud66(args, vars).token.expose().to_owned();
    let own = "CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN";
    assert_eq!(token(&["--cloud66.api-token=flag"], &[]), "flag");
    assert_eq!(token(&[], &[(own, "own")]), "own");
    assert_eq!(token(&[], &[("CLOUD66_API_TOKEN", "generic")]), "generic");
    let both = [(own, "own"), ("CLOUD66_API_TOKEN", "generic")];
    assert_eq!(
        token(&[], &both),
        "own",
        "own variable wins over the fallback"
    );
    assert_eq!(
        token(&["--cloud66.api-token=flag"], &both),
        "flag",
        "flag wins"
    );
    // A fallback token enables the other flags too.
    let vars = [("CLOUD66_API_TOKEN", "generic")];
    let c = cloud66(&["--cloud66.sync-interval=5m"], &vars);
    assert_eq!(c.sync_interval, Duration::from_secs(300));
    // Errors name where the token came from, never the token.
    let line = error(&[], &[("CLOUD66_API_TOKEN", "a b")]);
    assert_eq!(
        line,
        "cloud66-ssl-exporter: error: --cloud66.api-token (from CLOUD66_API_TOKEN): \
         must contain only visible ASCII characters, without spaces (character 2 is not)"
    );
    assert_eq!(CLOUD66_VALUES[0].0, "cloud66.api-token");
    assert!(env_vars().contains(&"CLOUD66_API_TOKEN".to_owned()));
}

#[test]
fn cloud66_api_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-token");
    std::fs::write(&path, "c66-secret\r\n\t \n").unwrap();
    let path = path.to_str().unwrap();
    let c = cloud66(&["--cloud66.api-token-file", path], &[]);
    assert_eq!(c.token.expose(), "c66-secret");
    let vars = [("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE", path)];
    assert_eq!(cloud66(&[], &vars).token.expose(), "c66-secret");
    // Empty variables of the token do not conflict with the file.
    let vars = [
        ("CLOUD66_API_TOKEN", ""),
        ("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN", ""),
    ];
    let c = cloud66(&["--cloud66.api-token-file", path], &vars);
    assert_eq!(c.token.expose(), "c66-secret");
}

#[test]
fn cloud66_invalid_tokens_are_never_quoted() {
    let reason = "must contain only visible ASCII characters, without spaces";
    for (token, position) in [
        ("secret token", 7),
        ("secrétvalue", 5),
        ("secret\u{7f}value", 7),
        ("\tsecretvalue", 1),
    ] {
        let line = error(&["--cloud66.api-token", token], &[]);
        let expected = format!(
            "cloud66-ssl-exporter: error: --cloud66.api-token: {reason} (character {position} is not)"
        );
        assert_eq!(line, expected);
        let var = "CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN";
        let line = error(&[], &[(var, token)]);
        assert!(line.contains(&format!("(from {var})")), "{line}");
        assert!(!line.contains("secret"), "{line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-token");
    for (content, reason) in [
        ("inner secret\n", format!("{reason} (character 6 is not)")),
        ("\n\n", "must not be empty".to_owned()),
    ] {
        std::fs::write(&path, content).unwrap();
        let line = error(&["--cloud66.api-token-file", path.to_str().unwrap()], &[]);
        let expected = format!(
            "cloud66-ssl-exporter: error: --cloud66.api-token-file: the token in {path:?} {reason}"
        );
        assert_eq!(line, expected);
        assert!(!line.contains("secret"), "{line}");
    }
}

#[test]
fn cloud66_ca_file_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    for content in [
        key.serialize_pem(),
        "not PEM at all\n".to_owned(),
        String::new(),
    ] {
        std::fs::write(&path, content).unwrap();
        let args = [
            "--cloud66.api-token=t",
            "--cloud66.api-ca-file",
            path.to_str().unwrap(),
        ];
        let expected = format!(
            "cloud66-ssl-exporter: error: --cloud66.api-ca-file: {path:?} holds no PEM certificate"
        );
        assert_eq!(error(&args, &[]), expected);
    }
    // A certificate section that does not decode.
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    std::fs::write(&path, broken).unwrap();
    let args = [
        "--cloud66.api-token=t",
        "--cloud66.api-ca-file",
        path.to_str().unwrap(),
    ];
    let line = error(&args, &[]);
    let expected =
        format!("cloud66-ssl-exporter: error: --cloud66.api-ca-file: {path:?} is not valid PEM: ");
    assert!(line.starts_with(&expected), "{line}");
    // Base64 that is no certificate.
    let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
    std::fs::write(&path, junk).unwrap();
    let line = error(&args, &[]);
    let expected = format!(
        "cloud66-ssl-exporter: error: --cloud66.api-ca-file: certificate 1 in {path:?} is not usable: "
    );
    assert!(line.starts_with(&expected), "{line}");
}

#[test]
fn cloud66_flags_need_a_token() {
    let reason = "needs --cloud66.api-token or --cloud66.api-token-file";
    for (flag, value) in CLOUD66_VALUES
        .iter()
        .skip(1)
        .chain([&("cloud66.api-ca-file", "/ca.pem")])
    {
        let line = error(&[&format!("--{flag}={value}")], &[]);
        assert_eq!(
            line,
            format!("cloud66-ssl-exporter: error: --{flag}: {reason}")
        );
        let var = var_of(flag);
        let line = error(&[], &[(&var, value)]);
        assert_eq!(
            line,
            format!("cloud66-ssl-exporter: error: --{flag} (from {var}): {reason}")
        );
    }
    // Even the default value counts, when given explicitly.
    let line = error(&["--cloud66.max-requests-per-hour=600"], &[]);
    assert!(line.ends_with(reason), "{line}");
}

#[test]
fn cloud66_debug_output_never_shows_the_token() {
    let c = cloud66(&["--cloud66.api-token=very-secret-api-token"], &[]);
    let debug = format!(
        "{:?}",
        settings(&["--cloud66.api-token=very-secret-api-token"], &[])
    );
    assert!(!debug.contains("very-secret"), "{debug}");
    assert!(format!("{c:?}").contains("ApiToken(<redacted>)"));
}

#[test]
fn durations_parse() {
    let ms = Duration::from_millis;
    for (text, expected) in [
        ("0", Duration::ZERO),
        ("90s", ms(90_000)),
        ("1m", ms(60_000)),
        ("1h30m", ms(5_400_000)),
        ("1d", ms(86_400_000)),
        ("2w", ms(14 * 86_400_000)),
        ("1w1d1h1m1s1ms", ms(694_861_001)),
        ("250ms", ms(250)),
        ("1m500ms", ms(60_500)),
        ("0h5m", ms(300_000)),
        ("007s", ms(7_000)),
    ] {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn durations_reject_garbage() {
    for text in [
        "", "1", "60", "s", "1x", "1H", "1.5h", "-1m", "+1m", "1 m", " 1m", "1m ", "1m1h", "1m1m",
        "1ms1s", "1h 30m", "1hh", "1y", "m1", "1mss", "1µs",
    ] {
        let expected = format!("{text:?} is not a duration such as 90s, 15m or 1h30m");
        assert_eq!(parse_duration(text), Err(expected), "{text}");
    }
    let huge = "99999999999999999999s";
    assert_eq!(parse_duration(huge), Err(format!("{huge:?} is too long")));
    let huge = "99999999999999w";
    assert_eq!(parse_duration(huge), Err(format!("{huge:?} is too long")));
}

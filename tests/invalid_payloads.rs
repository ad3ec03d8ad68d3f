//! The catalogue of odd payloads, one fixture per case named after it: every body in
//! `tests/fixtures/invalid/` is refused with the status and message its table row
//! names, and every body in `tests/fixtures/tolerated/` is accepted or ignored despite
//! looking odd. Each folder must match its table exactly, so a new fixture cannot be
//! forgotten and a removed one cannot leave a stale row.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cloud66_ssl_exporter::webhook;
use common::*;
use serde_json::json;

/// A refused body: fixture name (without `.json`), status, and the start of the error.
struct Refused {
    file: &'static str,
    status: u16,
    error_starts_with: &'static str,
}

const fn refused(file: &'static str, status: u16, error_starts_with: &'static str) -> Refused {
    Refused {
        file,
        status,
        error_starts_with,
    }
}

const STACK_ID_EXPECTED: &str = "invalid field `ssl_certificate.stack_id`: expected a non-negative integer or a numeric string, got ";
const TIMESTAMP_EXPECTED: &str =
    "invalid field `timestamp`: expected Unix seconds (a number or numeric string) or a date, got ";

const INVALID: &[Refused] = &[
    refused("missing-name", 400, "missing field `ssl_certificate.name`"),
    refused("empty-name", 400, "missing field `ssl_certificate.name`"),
    refused("blank-name", 400, "missing field `ssl_certificate.name`"),
    refused(
        "name-not-a-string",
        400,
        "invalid field `ssl_certificate.name`: expected a string, got 42",
    ),
    refused(
        "missing-stack-id",
        400,
        "missing field `ssl_certificate.stack_id`",
    ),
    refused(
        "stack-id-null",
        400,
        "missing field `ssl_certificate.stack_id`",
    ),
    refused("stack-id-not-numeric", 400, STACK_ID_EXPECTED),
    refused("stack-id-negative", 400, STACK_ID_EXPECTED),
    refused("stack-id-float", 400, STACK_ID_EXPECTED),
    refused("stack-id-plus-sign", 400, STACK_ID_EXPECTED),
    refused("stack-id-too-large", 400, STACK_ID_EXPECTED),
    refused("stack-id-boolean", 400, STACK_ID_EXPECTED),
    refused(
        "cert-expiry-unparseable",
        400,
        "invalid field `ssl_certificate.cert_expiry`: expected an RFC 3339 date",
    ),
    refused(
        "cert-expiry-not-a-string",
        400,
        "invalid field `ssl_certificate.cert_expiry`: expected an RFC 3339 date",
    ),
    refused(
        "expires-at-unparseable",
        400,
        "invalid field `ssl_certificate.expires_at`: expected an RFC 3339 date",
    ),
    refused(
        "created-at-unparseable",
        400,
        "invalid field `ssl_certificate.created_at`: expected an RFC 3339 date",
    ),
    refused(
        "updated-at-unparseable",
        400,
        "invalid field `ssl_certificate.updated_at`: expected an RFC 3339 date",
    ),
    refused("timestamp-missing", 400, "missing field `timestamp`"),
    refused("timestamp-not-a-number", 400, TIMESTAMP_EXPECTED),
    refused(
        "timestamp-negative",
        400,
        "invalid field `timestamp`: expected a time after 1970, got -1",
    ),
    refused("timestamp-boolean", 400, TIMESTAMP_EXPECTED),
    refused("timestamp-infinite", 400, TIMESTAMP_EXPECTED),
    refused(
        "ssl-certificate-missing",
        400,
        "missing field `ssl_certificate`",
    ),
    refused(
        "ssl-certificate-not-an-object",
        400,
        "invalid field `ssl_certificate`: expected an object, got ",
    ),
    refused("event-type-missing", 400, "missing field `event_type`"),
    // A certificate claims an SSL event even without an event type: never ignored.
    refused(
        "certificate-without-event-type",
        400,
        "missing field `event_type`",
    ),
    refused("event-type-empty", 400, "missing field `event_type`"),
    refused(
        "event-type-not-a-string",
        400,
        "invalid field `event_type`: expected a string, got 5",
    ),
    refused(
        "days-until-expiry-wrong-type",
        400,
        "invalid field `ssl_certificate.days_until_expiry`: expected a number or a numeric string, got {",
    ),
    refused(
        "days-until-expiry-out-of-range",
        400,
        "invalid field `ssl_certificate.days_until_expiry`: expected a number of days within a century (±36525), got 40000",
    ),
    refused(
        "error-message-object",
        400,
        "invalid field `ssl_certificate.error_message`: expected a string, got {",
    ),
    refused(
        "error-message-array",
        400,
        "invalid field `ssl_certificate.error_message`: expected a string, got [",
    ),
    refused("truncated-json", 400, "malformed JSON: EOF while parsing"),
    refused(
        "trailing-garbage",
        400,
        "malformed JSON: trailing characters",
    ),
    refused(
        "top-level-array",
        400,
        "malformed JSON: expected a JSON object at the top level, got an array",
    ),
    refused(
        "top-level-string",
        400,
        "malformed JSON: expected a JSON object at the top level, got a string",
    ),
    refused(
        "not-utf-8",
        400,
        "malformed JSON: invalid unicode code point",
    ),
    refused(
        "nesting-too-deep",
        400,
        "malformed JSON: recursion limit exceeded",
    ),
];

/// A body that must get 200: fixture name, the `status` answered, and a line the
/// scrape must then contain (for accepted events), proving the odd field was read.
struct Tolerated {
    file: &'static str,
    status: &'static str,
    metrics_contain: Option<&'static str>,
}

const fn tolerated(
    file: &'static str,
    status: &'static str,
    metrics_contain: Option<&'static str>,
) -> Tolerated {
    Tolerated {
        file,
        status,
        metrics_contain,
    }
}

/// What the scrape shows after one ignored delivery.
const IGNORED_ONCE: Option<&str> =
    Some(r#"cloud66_ssl_exporter_webhooks_received_total{event_type="other",result="ignored"} 1"#);

const TOLERATED: &[Tolerated] = &[
    tolerated("unknown-event-type-with-garbage", "ignored", IGNORED_ONCE),
    tolerated("unknown-event-type-only", "ignored", IGNORED_ONCE),
    // What Cloud66's (undocumented) test button may send: no SSL event, so ignored.
    tolerated("empty-body", "ignored", IGNORED_ONCE),
    tolerated("white-space-body", "ignored", IGNORED_ONCE),
    tolerated("empty-object", "ignored", IGNORED_ONCE),
    tolerated("unknown-fields-only", "ignored", IGNORED_ONCE),
    tolerated(
        "event-type-number-without-certificate",
        "ignored",
        IGNORED_ONCE,
    ),
    tolerated("ssl-certificate-null", "ignored", IGNORED_ONCE),
    tolerated(
        "unknown-extra-fields",
        "accepted",
        Some(r#"ssl_install_successes_total{stack="123",name="Awesome SSL Certificate"} 1"#),
    ),
    tolerated(
        "stack-id-numeric-string",
        "accepted",
        Some(r#"ssl_install_successes_total{stack="123",name="Awesome SSL Certificate"} 1"#),
    ),
    tolerated(
        "timestamp-numeric-string",
        "accepted",
        Some(
            r#"ssl_cert_last_event_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1640995201.5"#,
        ),
    ),
    tolerated(
        "timestamp-rfc3339",
        "accepted",
        Some(
            r#"ssl_cert_last_event_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1640991602"#,
        ),
    ),
    tolerated(
        "cloud66-utc-dates",
        "accepted",
        Some(
            r#"ssl_cert_expiry_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1719792000"#,
        ),
    ),
    tolerated(
        "expires-at-instead-of-cert-expiry",
        "accepted",
        Some(
            r#"ssl_cert_expiry_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1719792000.123"#,
        ),
    ),
    tolerated(
        "status-integer",
        "accepted",
        Some(r#",status="installed"} 1"#),
    ),
    tolerated(
        "status-unknown-integer",
        "accepted",
        Some(r#",status="99"} 1"#),
    ),
    tolerated(
        "flags-as-strings-and-null",
        "accepted",
        Some(
            r#"lets_encrypt="true",has_intermediate_cert="",ssl_termination="passthrough",status="installed"} 1"#,
        ),
    ),
    tolerated(
        "server-names-array",
        "accepted",
        Some(r#"server_names="example.com,www.example.com""#),
    ),
    tolerated(
        "error-message-number",
        "accepted",
        Some(
            r#"ssl_cert_install_error_info{stack="123",name="Awesome SSL Certificate",error="500"} 1"#,
        ),
    ),
    tolerated(
        "null-optional-fields",
        "accepted",
        Some(
            r#"ssl_cert_install_error_info{stack="123",name="Awesome SSL Certificate",error=""} 1"#,
        ),
    ),
    tolerated(
        "name-with-quotes-and-unicode",
        "accepted",
        Some(r#"ssl_install_successes_total{stack="123",name="\"Prod\" \\ cert ✓ — ü\n2"} 1"#),
    ),
    tolerated(
        "expire-soon-days-only",
        "accepted",
        // 1640995200 + 30 days.
        Some(
            r#"ssl_cert_expiry_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1643587200"#,
        ),
    ),
    tolerated(
        "expire-soon-days-negative",
        "accepted",
        // 1640995200 - 2.5 days: an already expired certificate.
        Some(
            r#"ssl_cert_expiry_timestamp_seconds{stack="123",name="Awesome SSL Certificate"} 1640779200"#,
        ),
    ),
    tolerated(
        "minimal-install-fail",
        "accepted",
        Some(
            r#"ssl_cert_info{stack="9",name="bare",server_names="",lets_encrypt="",has_intermediate_cert="",ssl_termination="",status=""} 1"#,
        ),
    ),
];

fn folder(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture names (without `.json`) in a folder; anything else there is an error.
fn fixture_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_str().expect("UTF-8 file name");
            name.strip_suffix(".json")
                .unwrap_or_else(|| panic!("{name}: fixtures end in .json"))
                .to_owned()
        })
        .collect()
}

/// Fails unless the folder's fixtures and the table's rows are the same set.
fn assert_folder_matches_table(dir: &Path, table: impl Iterator<Item = &'static str>) {
    let table: Vec<_> = table.collect();
    let rows: BTreeSet<String> = table.iter().map(|&f| f.to_owned()).collect();
    assert_eq!(rows.len(), table.len(), "a file appears twice in the table");
    let files = fixture_names(dir);
    let untested: Vec<_> = files.difference(&rows).collect();
    let missing: Vec<_> = rows.difference(&files).collect();
    assert!(
        untested.is_empty() && missing.is_empty(),
        "{}: fixtures without a table row: {untested:?}; rows without a fixture: {missing:?}",
        dir.display()
    );
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    let path = dir.join(format!("{file}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_invalid_fixture_is_in_the_table() {
    assert_folder_matches_table(&folder("invalid"), INVALID.iter().map(|c| c.file));
}

#[test]
fn every_tolerated_fixture_is_in_the_table() {
    assert_folder_matches_table(&folder("tolerated"), TOLERATED.iter().map(|c| c.file));
}

#[tokio::test]
async fn invalid_payloads_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let fixtures = folder("invalid");
    let mut wrong = Vec::new();
    for case in INVALID {
        let body = read(&fixtures, case.file);
        let parsed = webhook::parse(&body).map(|_| ()).map_err(|e| e.to_string());
        let path = format!("/webhook/{TOKEN}");
        let reply = try_request(server.addr, "POST", &path, &[], body)
            .await
            .expect("request succeeds");
        let error = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        // The HTTP answer must carry exactly the parser's reason, on one line.
        let consistent = parsed.as_ref().err() == Some(&error) && !error.contains('\n');
        if reply.status != case.status || !error.starts_with(case.error_starts_with) || !consistent
        {
            wrong.push(format!(
                "{}: got {} {} (parser: {parsed:?}); expected {} starting with {:?}",
                case.file, reply.status, reply.body, case.status, case.error_starts_with
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let metrics = server.metrics().await;
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_certificates"),
        Some(0.0),
        "no refused body may create a certificate"
    );
    let counted_invalid: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("cloud66_ssl_exporter_webhooks_received_total{"))
        .filter(|l| l.contains(r#"result="invalid""#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(counted_invalid, INVALID.len() as f64);
    server.stop().await;
}

#[tokio::test]
async fn tolerated_payloads_are_accepted_or_ignored() {
    let fixtures = folder("tolerated");
    let mut wrong = Vec::new();
    for case in TOLERATED {
        // A fresh server per case, so each metrics check sees that case alone.
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestServer::start(dir.path()).await;
        let body = read(&fixtures, case.file);
        let path = format!("/webhook/{TOKEN}");
        let reply = try_request(server.addr, "POST", &path, &[], body)
            .await
            .expect("request succeeds");
        let metrics = server.metrics().await;
        let status_ok = reply.status == 200
            && serde_json::from_str::<serde_json::Value>(&reply.body).ok()
                == Some(json!({ "status": case.status }));
        let metrics_ok = case
            .metrics_contain
            .is_none_or(|line| metrics.contains(line));
        let certificates = sample(&metrics, "cloud66_ssl_exporter_certificates");
        let expected_certificates = if case.status == "accepted" { 1.0 } else { 0.0 };
        if !status_ok || !metrics_ok || certificates != Some(expected_certificates) {
            let ours: Vec<_> = metrics.lines().filter(|l| l.starts_with("ssl_")).collect();
            wrong.push(format!(
                "{}: got {} {}; expected {:?} and {:?} in\n{}",
                case.file,
                reply.status,
                reply.body,
                case.status,
                case.metrics_contain,
                ours.join("\n")
            ));
        }
        server.stop().await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

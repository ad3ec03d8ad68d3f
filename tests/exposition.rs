//! The `/metrics` body: a golden file (volatile values masked), `promtool check
//! metrics`, and label values that must survive the text format unchanged.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// Metric-name prefixes whose sample values change from scrape to scrape.
const VOLATILE: [&str; 4] = [
    "process_",
    "ssl_cert_days_until_expiry{",
    "cloud66_ssl_exporter_storage_commit_duration_seconds",
    "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
];

/// `metrics` with volatile sample values (and the build revision) replaced by `<masked>`.
fn masked(metrics: &str) -> String {
    let mut out = String::new();
    for line in metrics.lines() {
        let line = if !line.starts_with('#') && VOLATILE.iter().any(|p| line.starts_with(p)) {
            let (series, _) = line.rsplit_once(' ').expect("sample line");
            format!("{series} <masked>")
        } else if line.starts_with("cloud66_ssl_exporter_build_info{") {
            "cloud66_ssl_exporter_build_info{<masked>} 1".to_owned()
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

async fn populated_server(dir: &std::path::Path) -> TestServer {
    let server = TestServer::start(dir).await;
    let events = [
        INSTALL_OK.to_owned(),
        EXPIRE_SOON.to_owned(),
        payload(
            "ssl_certificate.install.ok",
            1_700_000_000,
            456,
            "api",
            json!({
            "cert_expiry": "2030-01-01T00:00:00Z", "status": "installed", "lets_encrypt": false}),
        ),
        payload(
            "ssl_certificate.install.fail",
            1_700_000_100,
            456,
            "first-failing",
            json!({
            "status": 2, "error_message": "DNS \"challenge\" failed\nretry later"}),
        ),
        json!({"timestamp": 1, "event_type": "application.deploy.ok"}).to_string(),
    ];
    for body in &events {
        let reply = server.post_event(body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    server
}

#[tokio::test]
async fn metrics_match_the_golden_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = populated_server(dir.path()).await;
    let actual = masked(&server.metrics().await);
    server.stop().await;
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/metrics.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, &actual).expect("write golden");
    }
    let golden = std::fs::read_to_string(golden_path)
        .expect("tests/golden/metrics.txt exists (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        actual, golden,
        "run with UPDATE_GOLDEN=1 to accept a deliberate change"
    );
}

/// Runs `promtool check metrics` on `text`; returns its exit code and its findings.
fn promtool_check_metrics(text: &str) -> (i32, Vec<String>) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is on PATH (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let findings = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (output.status.code().unwrap_or(-1), findings)
}

#[tokio::test]
async fn promtool_finds_only_the_documented_days_exception() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = populated_server(dir.path()).await;
    let text = server.metrics().await;
    server.stop().await;
    let (_code, findings) = promtool_check_metrics(&text);
    assert_eq!(
        findings,
        vec![r#"ssl_cert_days_until_expiry use base unit "seconds" instead of "days""#.to_owned()],
        "the only accepted finding is the user-named days gauge"
    );
    // And the check itself works: a broken exposition is reported.
    let (code, findings) = promtool_check_metrics("# TYPE broken_total gauge\nbroken_total 1\n");
    assert_ne!(code, 0);
    assert!(!findings.is_empty());
}

/// Undoes the text format's label-value escaping.
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn awkward_label_values_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let name = "quote\" backslash\\ newline\n ünïcødé ✓ 証明書";
    let error = "error with \\\"both\\\" and\na second line";
    let body = payload(
        "ssl_certificate.install.fail",
        5,
        77,
        name,
        json!({
        "error_message": error, "server_names": "ü.example,\"q\".example"}),
    );
    assert_eq!(server.post_event(&body).await.status, 200);
    let text = server.metrics().await;
    server.stop().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("ssl_cert_install_error_info{"))
        .expect("error info line");
    // Each label is `key="value"`; split on the unescaped `",` boundaries.
    let labels = &line[line.find('{').expect("{") + 1..line.rfind('}').expect("}")];
    let mut values = Vec::new();
    let mut rest = labels;
    while let Some(start) = rest.find("=\"") {
        let after = &rest[start + 2..];
        let mut end = 0;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        values.push(unescape(&after[..end]));
        rest = &after[end + 1..];
    }
    assert_eq!(
        values,
        vec!["77".to_owned(), name.to_owned(), error.to_owned()]
    );
    assert!(text.contains(r#"server_names="ü.example,\"q\".example""#));
    // No expiry is known, so not even the days gauge has a sample to lint.
    let (code, findings) = promtool_check_metrics(&text);
    assert_eq!((code, findings), (0, vec![]), "promtool parses it cleanly");
}

#[tokio::test]
async fn scrapes_are_gzipped_when_asked() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = populated_server(dir.path()).await;
    let plain = request(server.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.header("vary"), "Accept-Encoding");
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let scrape = http::Request::get("/metrics")
        .header("host", "x")
        .header("accept-encoding", "gzip")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(scrape).await.expect("response");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    server.stop().await;
    assert!(
        compressed.len() < text.len() / 3,
        "{} vs {}",
        compressed.len(),
        text.len()
    );
    let stable = |t: &str| {
        masked(t)
            .lines()
            .filter(|l| !l.starts_with("process_"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&text), stable(&plain.body));
}

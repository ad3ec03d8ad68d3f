//! The binary's command line: help, version, exit code 64 for bad configuration, and
//! the token shown once and never logged otherwise.

mod common;

use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_cloud66-ssl-exporter");

#[test]
fn help_documents_every_flag_with_its_variable() {
    let output = Command::new(BIN).arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--web.listen-address",
        "--web.telemetry-path",
        "--storage.path",
        "--webhook.token",
        "--webhook.token-file",
        "--webhook.insecure-no-auth",
        "--webhook.max-body-bytes",
        "--log.level",
        "--log.format",
        "--cloud66.api-token",
        "--cloud66.api-token-file",
        "--cloud66.api-url",
        "--cloud66.api-ca-file",
        "--cloud66.stacks",
        "--cloud66.stack-ids",
        "--cloud66.sync-interval",
        "--cloud66.max-requests-per-hour",
        "--cloud66.forget-missing-after",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        let variable = format!(
            "CLOUD66_SSL_EXPORTER_{}",
            flag.trim_start_matches("--")
                .replace(['.', '-'], "_")
                .to_uppercase()
        );
        assert!(help.contains(&variable), "{variable} missing from --help");
    }
    for fallback in ["CLOUD66_WEBHOOK_TOKEN", "CLOUD66_API_TOKEN"] {
        assert!(help.contains(fallback), "{fallback} missing from --help");
    }
}

#[test]
fn version_names_the_revision() {
    let output = Command::new(BIN).arg("--version").output().expect("runs");
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(version.starts_with(&format!(
        "cloud66-ssl-exporter {} (revision ",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn invalid_configuration_exits_64_with_one_line_before_binding() {
    // Validation comes first: had the exporter gone on to open storage and bind, the
    // storage directory would exist.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("never-created");
    for args in [
        vec!["--bogus"],
        vec!["--web.listen-address=not-an-address"],
        vec!["--webhook.token=short"],
        vec!["--webhook.max-body-bytes=0"],
        vec!["--web.telemetry-path=/healthz"],
        vec!["--log.level=loud"],
        vec!["--cloud66.sync-interval=5m"],
        vec!["--cloud66.api-token=t", "--cloud66.sync-interval=30s"],
        vec!["--cloud66.api-token=t", "--cloud66.api-url=ftp://h"],
    ] {
        let output = Command::new(BIN)
            .args(&args)
            .arg(format!("--storage.path={}", storage.display()))
            .env_remove("CLOUD66_WEBHOOK_TOKEN")
            .env_remove("CLOUD66_API_TOKEN")
            .env_remove("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN")
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("cloud66-ssl-exporter: "), "{stderr}");
        assert!(!storage.exists(), "nothing was started for {args:?}");
    }
}

/// Everything the exporter logs from start to a SIGTERM stop; with `token_path`, one
/// authenticated and one rejected webhook are sent in between.
async fn logs_of(storage: &std::path::Path, args: &[&str], token_path: Option<&str>) -> String {
    let mut args = args.to_vec();
    args.push("--log.level=debug");
    let (exporter, mut lines, seen) = Exporter::spawn_logged(storage, &args).await;
    let (mut child, addr) = (exporter.child, exporter.addr);
    let mut log: String = seen.iter().map(|line| format!("{line}\n")).collect();
    if let Some(path) = token_path {
        let reply = request(addr, "POST", path, &[], INSTALL_OK).await;
        assert_eq!(reply.status, 200);
        let reply = request(
            addr,
            "POST",
            "/webhook?token=wrong-token-0123456789",
            &[],
            INSTALL_OK,
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    let pid = child.id().expect("pid");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    while let Some(line) = lines.next_line().await.expect("reads") {
        log.push_str(&line);
        log.push('\n');
    }
    let exit = child.wait().await.expect("exits");
    assert_eq!(exit.code(), Some(0), "SIGTERM is a clean stop: {log}");
    log
}

#[tokio::test]
async fn generated_token_is_logged_once_and_never_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = logs_of(dir.path(), &[], None).await;
    let url_line = first
        .lines()
        .find(|l| l.contains("/webhook/"))
        .expect("URL logged");
    let token = url_line
        .split("/webhook/")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .expect("token in URL")
        .to_owned();
    assert_eq!(token.len(), 64);
    let second = logs_of(dir.path(), &[], Some(&format!("/webhook/{token}"))).await;
    assert!(!second.contains(&token), "token logged again: {second}");
    assert!(
        second.contains("/webhook/REDACTED"),
        "requests are logged redacted: {second}"
    );
}

#[tokio::test]
async fn configured_token_never_appears_in_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = format!("--webhook.token={TOKEN}");
    let log = logs_of(
        dir.path(),
        &[&flag],
        Some(&format!("/webhook?token={TOKEN}")),
    )
    .await;
    assert!(!log.contains(TOKEN), "{log}");
    assert!(log.contains("token=REDACTED"), "{log}");
}

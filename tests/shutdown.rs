//! Graceful shutdown of the real binary: SIGTERM or SIGINT while concurrent clients
//! are sending events makes it exit 0 promptly, and every event it answered 2xx is
//! there after a restart.

mod common;

use std::time::Duration;

use common::*;

/// Concurrent clients sending events.
const CLIENTS: usize = 16;
/// Acknowledged events to wait for before the signal, so requests are in flight.
const SIGNAL_AFTER_ACKS: usize = 100;
/// Guards against a hang; the grace period for in-flight requests is 8 s.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `signal` (`TERM` or `INT`) to the process `pid` with the `kill` command.
fn send_signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Runs the load, sends `signal` mid-way, and checks the exit and what was kept.
async fn signal_under_load_exits_0_and_keeps_every_acknowledged_event(signal: &'static str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut exporter = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    let pid = exporter.child.id().expect("the exporter is running");
    let load = Load::start(exporter.addr, CLIENTS, 2, signal);
    load.wait_for_acknowledged(SIGNAL_AFTER_ACKS).await;
    send_signal(signal, pid);

    let status = tokio::time::timeout(EXIT_TIMEOUT, exporter.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the exporter did not exit within 30 s of SIG{signal}"))
        .expect("wait for the exporter");
    let (acknowledged, refused) = load.finish().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );
    // A request the exporter took before stopping is finished, not failed.
    assert!(refused.is_empty(), "answered with an error: {refused:?}");

    let restarted = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    let metrics = request(restarted.addr, "GET", "/metrics", &[], "")
        .await
        .body;
    let missing = missing(&metrics, "2", &acknowledged);
    assert!(acknowledged.len() >= SIGNAL_AFTER_ACKS);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost after SIG{signal}: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    restarted.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_event() {
    signal_under_load_exits_0_and_keeps_every_acknowledged_event("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigint_under_load_exits_0_and_keeps_every_acknowledged_event() {
    signal_under_load_exits_0_and_keeps_every_acknowledged_event("INT").await;
}

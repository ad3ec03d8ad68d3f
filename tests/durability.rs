//! Durability: a restart restores state and counters exactly, the generated token
//! survives restarts, and `kill -9` under concurrent load loses no acknowledged event.

mod common;

use std::collections::BTreeSet;

use cloud66_ssl_exporter::config::WebhookAuth;
use common::*;
use serde_json::json;

/// Lines whose values legitimately change between two scrapes of the same state.
fn stable_lines(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| {
            !l.starts_with("process_")
                && !l.starts_with("ssl_cert_days_until_expiry{")
                && !l.starts_with("cloud66_ssl_exporter_storage_commit_duration_seconds")
                && !l.starts_with("cloud66_ssl_exporter_webhooks_received_total")
                && !l.starts_with("cloud66_ssl_exporter_last_webhook_timestamp_seconds")
                // Measured at most every half second, and so a little behind just after
                // a burst.
                && !l.starts_with("cloud66_ssl_exporter_storage_tail_lag_seconds ")
                // A restarted replica leads once the old session's lock is gone, which
                // PostgreSQL notices a moment after the old process stops.
                && !l.starts_with("cloud66_ssl_exporter_leader ")
        })
        .map(str::to_owned)
        .collect()
}

both_backends!(restart_restores_state_and_counters_exactly);
async fn restart_restores_state_and_counters_exactly(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on(backend, dir.path()).await;
    for body in [INSTALL_OK, EXPIRE_SOON, INSTALL_FAIL] {
        assert_eq!(server.post_event(body).await.status, 200);
    }
    for i in 0..20 {
        let body = payload(
            "ssl_certificate.install.ok",
            1_700_000_000 + i,
            900 + (i as u64 % 3),
            &format!("cert-{i}"),
            json!({"cert_expiry": "2030-06-01T00:00:00Z", "status": "installed"}),
        );
        assert_eq!(server.post_event(&body).await.status, 200);
    }
    let before = server.metrics().await;
    let last_webhook = sample(
        &before,
        "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
    );
    let server = server.restart().await;
    let after = server.metrics().await;
    let backend = format!(
        "cloud66_ssl_exporter_storage_info{{backend=\"{}\"}}",
        backend.label()
    );
    assert_eq!(sample(&after, &backend), Some(1.0), "{after}");
    assert_eq!(stable_lines(&before), stable_lines(&after));
    assert_eq!(
        sample(&after, "cloud66_ssl_exporter_certificates"),
        Some(21.0)
    );
    let restored = sample(
        &after,
        "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
    );
    assert!(restored.is_some() && restored <= last_webhook && restored > Some(0.0));
    // A duplicate of an event from before the restart is still recognised.
    let again = server.post_event(INSTALL_OK).await;
    assert_eq!(again.json(), json!({"status": "duplicate"}));
    server.stop().await;
}

#[tokio::test]
async fn generated_token_is_stored_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = |c: &mut cloud66_ssl_exporter::config::AppConfig| c.auth = WebhookAuth::Stored;
    let server = TestServer::start_with(dir.path(), stored).await;
    let token = read_stored_token(dir.path());
    assert_eq!(token.len(), 64, "256 random bits, hex");
    server.stop().await;

    let server = TestServer::start_with(dir.path(), stored).await;
    assert_eq!(read_stored_token(dir.path()), token);
    let path = format!("/webhook/{token}");
    let reply = request(server.addr, "POST", &path, &[], INSTALL_OK).await;
    assert_eq!(reply.status, 200);
    let reply = request(server.addr, "POST", "/webhook", &[], INSTALL_OK).await;
    assert_eq!(reply.status, 401);
    server.stop().await;
}

fn read_stored_token(dir: &std::path::Path) -> String {
    let db = rusqlite::Connection::open(dir.join(cloud66_ssl_exporter::DB_FILE)).expect("open db");
    db.query_row(
        "SELECT value FROM meta WHERE key = 'webhook_token'",
        [],
        |r| r.get(0),
    )
    .expect("token stored")
}

#[tokio::test]
async fn raw_payloads_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.post_event(INSTALL_FAIL).await.status, 200);
    server.stop().await;
    let db =
        rusqlite::Connection::open(dir.path().join(cloud66_ssl_exporter::DB_FILE)).expect("db");
    let (event_type, payload): (String, String) = db
        .query_row("SELECT event_type, payload FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("one event");
    assert_eq!(event_type, "ssl_certificate.install.fail");
    assert_eq!(payload, INSTALL_FAIL, "stored byte for byte");
}

/// Rounds of: concurrent clients send unique events; the exporter is SIGKILLed in the
/// middle; after a restart every acknowledged event must be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_concurrent_load_loses_no_acknowledged_event() {
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 16;
    const KILL_AFTER_ACKS: usize = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acknowledged = BTreeSet::new();
    for round in 0..ROUNDS {
        let exporter = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
        let load = Load::start(exporter.addr, CLIENTS, 1, &format!("r{round}"));
        load.wait_for_acknowledged(KILL_AFTER_ACKS).await;
        exporter.kill().await;
        let (acked, refused) = load.finish().await;
        assert!(refused.is_empty(), "error answers: {refused:?}");
        acknowledged.extend(acked);
    }
    let (exporter, metrics) = restart_and_scrape(dir.path()).await;
    let missing = missing(&metrics, "1", &acknowledged);
    assert!(acknowledged.len() >= ROUNDS * KILL_AFTER_ACKS);
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost: {:?}",
        missing.len(),
        missing
    );
    exporter.kill().await;
}

/// The id of the newest event the stored certificate rows include, and of the newest
/// event stored.
fn checkpoint_and_newest(dir: &std::path::Path) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.join(cloud66_ssl_exporter::DB_FILE)).expect("db");
    let checkpoint: Option<String> = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'state_checkpoint'",
            [],
            |r| r.get(0),
        )
        .ok();
    let newest: i64 = db
        .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
        .expect("max id");
    (checkpoint.and_then(|c| c.parse().ok()).unwrap_or(0), newest)
}

/// Starts the binary on `dir` (again) and scrapes it once.
async fn restart_and_scrape(dir: &std::path::Path) -> (Exporter, String) {
    let exporter = Exporter::spawn(dir, &["--webhook.insecure-no-auth"]).await;
    let metrics = request(exporter.addr, "GET", "/metrics", &[], "")
        .await
        .body;
    (exporter, metrics)
}

/// Waits (20 s at most) until the checkpoint reaches the newest event, which must be
/// `newest`: every stored event is then in a row, and a start replays nothing.
async fn wait_until_rows_hold_every_event(dir: &std::path::Path, newest: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (checkpoint, stored) = checkpoint_and_newest(dir);
        assert_eq!(stored, newest);
        if checkpoint == newest {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows still lack events after 20 quiet seconds (checkpoint {checkpoint})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_after_the_last_checkpoint_are_replayed_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    for i in 0..30 {
        let body = payload(
            "ssl_certificate.install.fail",
            100 + i,
            4,
            "replayed",
            json!({"error_message": format!("try {i}")}),
        );
        let reply = request(exporter.addr, "POST", "/webhook", &[], &body).await;
        assert_eq!(reply.status, 200);
    }
    exporter.kill().await;
    let (checkpoint, newest) = checkpoint_and_newest(dir.path());
    assert_eq!(newest, 30);
    assert!(
        checkpoint < newest,
        "some events must need a replay (checkpoint {checkpoint})"
    );

    let (exporter, m) = restart_and_scrape(dir.path()).await;
    assert_eq!(
        sample(
            &m,
            &cert_series("ssl_install_failures_total", "4", "replayed")
        ),
        Some(30.0)
    );
    assert!(
        m.contains(r#"error="try 29""#),
        "state follows the newest replayed event"
    );
    // The replayed rows are saved like changed ones (a few seconds later, while it is
    // quiet), so the replay is paid once, not at every start until the next change.
    wait_until_rows_hold_every_event(dir.path(), 30).await;
    exporter.kill().await;

    let (exporter, again) = restart_and_scrape(dir.path()).await;
    assert_eq!(
        sample(
            &again,
            &cert_series("ssl_install_failures_total", "4", "replayed")
        ),
        Some(30.0),
        "nothing counted twice"
    );
    exporter.kill().await;
}

#[tokio::test]
async fn rows_are_saved_once_webhooks_stop_coming() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    for i in 0..40 {
        let name = format!("quiet-{}", i % 20);
        let body = payload("ssl_certificate.install.ok", 100 + i, 6, &name, json!({}));
        let reply = request(exporter.addr, "POST", "/webhook", &[], &body).await;
        assert_eq!(reply.status, 200);
    }
    // No more webhooks: the rows become due 2 s after their change and are saved
    // while it is quiet, so that every stored event is in a row.
    wait_until_rows_hold_every_event(dir.path(), 40).await;
    exporter.kill().await;

    // Nothing left to replay, and nothing counted twice.
    let (exporter, m) = restart_and_scrape(dir.path()).await;
    for i in 0..20 {
        let series = cert_series("ssl_install_successes_total", "6", &format!("quiet-{i}"));
        assert_eq!(sample(&m, &series), Some(2.0), "{series}");
    }
    exporter.kill().await;
}

#[tokio::test]
async fn a_deleted_certificate_stays_deleted_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = Exporter::spawn(dir.path(), &["--webhook.insecure-no-auth"]).await;
    let post = |ts: i64, name: &'static str| {
        let body = payload("ssl_certificate.install.ok", ts, 8, name, json!({}));
        async move {
            request(exporter.addr, "POST", "/webhook", &[], &body)
                .await
                .status
        }
    };
    assert_eq!(post(1, "gone").await, 200);
    assert_eq!(post(2, "gone").await, 200);
    assert_eq!(post(1, "kept").await, 200);
    let deleted = request(
        exporter.addr,
        "DELETE",
        "/api/v1/certificates/8/gone",
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(post(2, "kept").await, 200);
    exporter.kill().await;

    let (exporter, m) = restart_and_scrape(dir.path()).await;
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "8", "gone")),
        None
    );
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "8", "kept")),
        Some(2.0)
    );
    exporter.kill().await;
}

#[tokio::test]
async fn the_log_is_copied_into_the_database_while_webhooks_keep_coming() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_file = dir.path().join(cloud66_ssl_exporter::DB_FILE);
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let server = TestServer::start(dir.path()).await;
    // 40 commits of one 1.3 KiB event each: about 150 log pages, past the checkpoint
    // thread's 64 but short of the 256 after which the writer used to copy them itself.
    let padding = "x".repeat(1000);
    for i in 0..40 {
        let extra = json!({ "error_message": padding });
        let body = payload("ssl_certificate.install.fail", 100 + i, 7, "busy", extra);
        assert_eq!(server.post_event(&body).await.status, 200);
    }
    // The pages reach the database file (not only the log) while the exporter runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size(&db_file) < 40 * 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "database file still {} bytes, log {} bytes",
            size(&db_file),
            size(
                &dir.path()
                    .join(format!("{}-wal", cloud66_ssl_exporter::DB_FILE))
            )
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;
    // Nothing was lost on the way.
    let server = TestServer::start(dir.path()).await;
    let m = server.metrics().await;
    let series = cert_series("ssl_install_failures_total", "7", "busy");
    assert_eq!(sample(&m, &series), Some(40.0), "{series}");
    server.stop().await;
}

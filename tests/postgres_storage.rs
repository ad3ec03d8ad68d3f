//! PostgreSQL storage against a real PostgreSQL server (tests/common/postgres.rs): the
//! webhook promise (2xx only once committed, duplicates once), restarts from the
//! snapshot and the log, and replicas on one database converging on the same state.

mod common;

use std::time::Duration;

use cloud66_ssl_exporter::config::{PostgresConfig, WebhookAuth};
use common::postgres::PgServer;
use common::{TOKEN, TestServer, cert_series, certificate_series, payload, request, sample};
use serde_json::json;

const OK: &str = "ssl_certificate.install.ok";

/// An exporter on database `url`, with the test token.
async fn replica(url: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = PostgresConfig::from_url(url).expect("valid URL");
    let server = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.postgres = Some(config);
    })
    .await;
    (dir, server)
}

/// Waits (at most 10 s) until `server` counts `successes` install.ok for `name`.
async fn wait_for_successes(server: &TestServer, stack: &str, name: &str, successes: f64) {
    let series = cert_series("ssl_install_successes_total", stack, name);
    for _ in 0..200 {
        if sample(&server.metrics().await, &series) == Some(successes) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{series} did not reach {successes}: {:?}",
        sample(&server.metrics().await, &series)
    );
}

#[tokio::test]
async fn webhooks_are_stored_counted_once_and_survive_a_restart() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("restart").await;
    let (_dir, server) = replica(&url).await;
    let body = payload(OK, 1_700_000_000, 7, "web", json!({}));
    let reply = server.post_event(&body).await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, json!("accepted"))
    );
    // Answered after the commit and applied before the answer: visible at once.
    let series = cert_series("ssl_install_successes_total", "7", "web");
    assert_eq!(sample(&server.metrics().await, &series), Some(1.0));
    let again = server.post_event(&body).await;
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(
        pg.sql(
            "restart",
            "SELECT count(*) FROM cloud66_ssl_exporter_events"
        )
        .await,
        "1"
    );
    let later = payload(OK, 1_700_000_100, 7, "web", json!({}));
    assert_eq!(server.post_event(&later).await.status, 200);
    let before = certificate_series(&server.metrics().await);
    server.stop().await;

    let (_dir2, restarted) = replica(&url).await;
    assert_eq!(certificate_series(&restarted.metrics().await), before);
    assert_eq!(sample(&restarted.metrics().await, &series), Some(2.0));
    restarted.stop().await;
}

#[tokio::test]
async fn two_replicas_see_every_event_and_count_a_shared_delivery_once() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("replicas").await;
    let (_a_dir, a) = replica(&url).await;
    let (_b_dir, b) = replica(&url).await;
    // Alternated between the replicas.
    for i in 0..20 {
        let body = payload(
            OK,
            1_700_000_000 + i,
            9,
            &format!("cert-{}", i % 5),
            json!({}),
        );
        let target = if i % 2 == 0 { &a } else { &b };
        assert_eq!(target.post_event(&body).await.status, 200);
    }
    for i in 0..5 {
        wait_for_successes(&a, "9", &format!("cert-{i}"), 4.0).await;
        wait_for_successes(&b, "9", &format!("cert-{i}"), 4.0).await;
    }
    assert_eq!(
        certificate_series(&a.metrics().await),
        certificate_series(&b.metrics().await)
    );

    // The same delivery to both at once: stored once, one of them says duplicate.
    let body = payload(OK, 1_700_001_000, 9, "shared", json!({}));
    let (first, second) = tokio::join!(a.post_event(&body), b.post_event(&body));
    let mut answers = [
        first.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        second.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    answers.sort();
    assert_eq!(answers, ["accepted", "duplicate"]);
    wait_for_successes(&a, "9", "shared", 1.0).await;
    wait_for_successes(&b, "9", "shared", 1.0).await;

    // Forgetting on one replica forgets on both.
    let auth = format!("Bearer {TOKEN}");
    let deleted = request(
        b.addr,
        "DELETE",
        "/api/v1/certificates/9/shared",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let gone = cert_series("ssl_install_successes_total", "9", "shared");
    for _ in 0..200 {
        if sample(&a.metrics().await, &gone).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&a.metrics().await, &gone), None);
    assert_eq!(sample(&b.metrics().await, &gone), None);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("late").await;
    let (_dir, server) = replica(&url).await;
    // A writer that took its id first and commits last, as a slow replica would.
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let held = client.transaction().await.expect("begin");
    let late = payload(OK, 1_700_000_000, 11, "late", json!({}));
    held.execute(
        "INSERT INTO cloud66_ssl_exporter_events \
         (event_ts, digest, received_at, event_type, stack, name, payload) \
         VALUES (1700000000, '\\x01', 1700000000, $1, '11', 'late', $2)",
        &[&OK, &late],
    )
    .await
    .expect("insert");
    // Later events commit while it is open.
    for i in 0..3 {
        let body = payload(OK, 1_700_000_100 + i, 11, "early", json!({}));
        assert_eq!(server.post_event(&body).await.status, 200);
    }
    held.commit().await.expect("commit");
    wait_for_successes(&server, "11", "early", 3.0).await;
    wait_for_successes(&server, "11", "late", 1.0).await;
    server.stop().await;
}

#[tokio::test]
async fn every_replica_uses_the_token_one_of_them_generated() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("token").await;
    let config = PostgresConfig::from_url(&url).expect("valid URL");
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut servers = Vec::new();
    for dir in &dirs {
        let config = config.clone();
        servers.push(
            TestServer::start_with(dir.path(), |c| {
                c.auth = WebhookAuth::Stored;
                c.postgres = Some(config);
            })
            .await,
        );
    }
    let token = pg
        .sql(
            "token",
            "SELECT value FROM cloud66_ssl_exporter_meta WHERE key = 'webhook_token'",
        )
        .await;
    assert_eq!(token.len(), 64, "{token}");
    for server in &servers {
        let body = payload(OK, 1_700_000_000, 3, "web", json!({}));
        let reply = request(
            server.addr,
            "POST",
            &format!("/webhook/{token}"),
            &[],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test]
async fn a_replica_reports_its_backend_its_lag_and_webhooks_another_one_took() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("observed").await;
    let (_a_dir, a) = replica(&url).await;
    let (_b_dir, b) = replica(&url).await;
    let metrics = b.metrics().await;
    assert!(metrics.contains("cloud66_ssl_exporter_storage_info{backend=\"postgres\"} 1"));
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_storage_tail_lag_seconds"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "cloud66_ssl_exporter_last_webhook_timestamp_seconds"
        ),
        Some(0.0)
    );
    let body = payload(OK, 1_700_000_000, 4, "web", json!({}));
    assert_eq!(a.post_event(&body).await.status, 200);
    wait_for_successes(&b, "4", "web", 1.0).await;
    // b never received a webhook itself, but the cluster did: no "no webhooks" alert,
    // and its page names what arrived.
    let metrics = b.metrics().await;
    let last = sample(
        &metrics,
        "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
    );
    assert!(last.is_some_and(|at| at > 1_700_000_000.0), "{last:?}");
    let page = request(b.addr, "GET", "/", &[], "").await.body;
    assert!(
        page.contains("<code>ssl_certificate.install.ok</code>, accepted"),
        "{page}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_started_before_its_database_waits_and_says_it_is_not_ready() {
    let pg = PgServer::start().await;
    let url = pg.create_database("later").await;
    pg.stop_fast().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("--web.listen-address=127.0.0.1:{port}");
    let storage = format!("--storage.postgres.url={url}");
    let token = format!("--webhook.token={TOKEN}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"))
        .args([&listen, &storage, &token, "--log.level=warn"])
        .env_remove("CLOUD66_SSL_EXPORTER_STORAGE_PATH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // Alive but not ready, and webhooks are refused, not acknowledged, meanwhile.
    let mut alive = None;
    for _ in 0..200 {
        if let Ok(reply) = common::try_request(addr, "GET", "/healthz", &[], Vec::new()).await {
            alive = Some(reply.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alive, Some(200));
    assert_eq!(request(addr, "GET", "/readyz", &[], "").await.status, 503);
    let body = payload(OK, 1_700_000_000, 8, "web", json!({}));
    let early = request(addr, "POST", &format!("/webhook/{TOKEN}"), &[], &body).await;
    assert_eq!(early.status, 503, "{}", early.body);

    pg.start_again().await;
    let mut ready = false;
    for _ in 0..400 {
        if request(addr, "GET", "/readyz", &[], "").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never ready after the database came up");
    let reply = request(addr, "POST", &format!("/webhook/{TOKEN}"), &[], &body).await;
    assert_eq!(reply.json()["status"], "accepted", "{}", reply.body);
    child.kill().await.expect("kill");
}

#[tokio::test]
async fn a_database_written_by_a_newer_version_is_refused() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("newer").await;
    let (_dir, server) = replica(&url).await;
    server.stop().await;
    pg.sql(
        "newer",
        "UPDATE cloud66_ssl_exporter_meta SET value = '99' WHERE key = 'schema_version'",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = cloud66_ssl_exporter::config::AppConfig::new(dir.path());
    config.postgres = Some(PostgresConfig::from_url(&url).expect("valid URL"));
    let refused = cloud66_ssl_exporter::App::open(config).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("schema version 99") && message.contains("use a newer exporter"),
        "{message}"
    );
}

/// Waits (at most 10 s) until `sql` answers `expected` in database `db`.
async fn wait_for_sql(pg: &PgServer, db: &str, sql: &str, expected: &str) {
    for _ in 0..200 {
        if pg.sql(db, sql).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{sql} did not answer {expected:?}: {:?}",
        pg.sql(db, sql).await
    );
}

#[tokio::test]
async fn restarts_from_the_snapshot_count_every_event_once_even_after_a_write_cut_short() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("snapshot").await;
    let mut config = PostgresConfig::from_url(&url).expect("valid URL");
    config.snapshot_interval = Duration::from_millis(100);
    let start = |config: PostgresConfig| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestServer::start_with(dir.path(), |c| {
            c.auth = WebhookAuth::Token(TOKEN.into());
            c.postgres = Some(config);
        })
        .await;
        (dir, server)
    };
    let (_dir, server) = start(config.clone()).await;
    let mut ts = 1_700_000_000;
    let mut post = async |count: usize, certs: usize| {
        for i in 0..count {
            ts += 1;
            let body = payload(OK, ts, 12, &format!("cert-{}", i % certs), json!({}));
            assert_eq!(server.post_event(&body).await.status, 200);
        }
    };
    post(20, 5).await;
    // Rows and the stored position catch up with the log.
    let caught_up = "SELECT (SELECT value FROM cloud66_ssl_exporter_meta WHERE key = 'snapshot_id') \
         = (SELECT max(id)::text FROM cloud66_ssl_exporter_events)";
    wait_for_sql(pg, "snapshot", caught_up, "t").await;
    post(9, 3).await;
    wait_for_sql(pg, "snapshot", caught_up, "t").await;
    let before = certificate_series(&server.metrics().await);
    assert_eq!(
        sample(
            &server.metrics().await,
            &cert_series("ssl_install_successes_total", "12", "cert-0")
        ),
        Some(7.0)
    );
    server.stop().await;

    // From the snapshot alone: nothing replayed twice.
    let (_dir, again) = start(config.clone()).await;
    assert_eq!(certificate_series(&again.metrics().await), before);
    again.stop().await;

    // As if the last write had stopped before its position was stored: every row is
    // ahead of it, and the whole log is read again, but not applied to them again.
    pg.sql(
        "snapshot",
        "UPDATE cloud66_ssl_exporter_meta SET value = '0' \
         WHERE key IN ('snapshot_xid', 'snapshot_id')",
    )
    .await;
    let (_dir, cut) = start(config).await;
    assert_eq!(certificate_series(&cut.metrics().await), before);
    cut.stop().await;
}

/// Waits (at most 20 s) until the `cloud66_ssl_exporter_leader` of `servers` are
/// `expected`, in order.
async fn wait_for_leaders(servers: &[&TestServer], expected: &[f64]) {
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen.clear();
        for server in servers {
            seen.push(sample(
                &server.metrics().await,
                "cloud66_ssl_exporter_leader",
            ));
        }
        if seen.iter().copied().eq(expected.iter().map(|v| Some(*v))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("leaders {seen:?}, expected {expected:?}");
}

#[tokio::test]
async fn exactly_one_replica_leads_and_another_takes_over_when_it_stops() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("leaders").await;
    let (_a_dir, a) = replica(&url).await;
    // The first replica of a database leads (nobody holds the lock); the second follows.
    wait_for_leaders(&[&a], &[1.0]).await;
    let (_b_dir, b) = replica(&url).await;
    wait_for_leaders(&[&a, &b], &[1.0, 0.0]).await;
    // A graceful stop hands the lock over at once; the follower takes it at its next
    // try (every second).
    a.stop().await;
    wait_for_leaders(&[&b], &[1.0]).await;
    let (_c_dir, c) = replica(&url).await;
    wait_for_leaders(&[&b, &c], &[1.0, 0.0]).await;
    // The leader's session is the one holding the lock, named after the exporter.
    let holders = pg
        .admin_sql(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1664497267 \
               AND l.objid = 3 AND a.application_name = 'cloud66-ssl-exporter' \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = 'leaders')",
        )
        .await;
    assert_eq!(holders.trim(), "1", "advisory lock holders");
    b.stop().await;
    wait_for_leaders(&[&c], &[1.0]).await;
    c.stop().await;
}

//! `storage copy`: an embedded store moved into PostgreSQL with the real binary, then
//! served by a replica on that database with the same certificate metrics.

mod common;

use std::path::Path;
use std::process::Output;

use cloud66_ssl_exporter::config::{PostgresConfig, WebhookAuth};
use common::postgres::PgServer;
use common::sync::stack_info;
use common::{TOKEN, TestServer, certificate_series, payload, request};
use serde_json::json;

const OK: &str = "ssl_certificate.install.ok";
const FAIL: &str = "ssl_certificate.install.fail";
const SOON: &str = "ssl_certificate.expire.soon";

fn copy(from: &Path, url: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"))
        .args(["storage", "copy", "--from"])
        .arg(from)
        .args(["--to", url])
        .output()
        .expect("runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn an_embedded_store_is_copied_with_its_history_counters_and_token() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("copy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = TestServer::start_with(dir.path(), |c| c.auth = WebhookAuth::Stored).await;
    let token: String = rusqlite::Connection::open(dir.path().join(cloud66_ssl_exporter::DB_FILE))
        .expect("open")
        .query_row(
            "SELECT value FROM meta WHERE key = 'webhook_token'",
            [],
            |row| row.get(0),
        )
        .expect("stored token");
    let post = |body: String| {
        let path = format!("/webhook/{token}");
        async move {
            let reply = request(embedded.addr, "POST", &path, &[], &body).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    let expiry = json!({ "cert_expiry": "2030-01-01T00:00:00Z" });
    for i in 0..3 {
        post(payload(OK, 1_700_000_000 + i, 5, "web", expiry.clone())).await;
    }
    post(payload(SOON, 1_700_000_100, 5, "web", expiry.clone())).await;
    post(payload(
        FAIL,
        1_700_000_200,
        5,
        "api",
        json!({ "error_message": "boom" }),
    ))
    .await;
    post(payload(OK, 1_700_000_000, 6, "gone", json!({}))).await;
    let auth = format!("Bearer {token}");
    let deleted = request(
        embedded.addr,
        "DELETE",
        "/api/v1/certificates/6/gone",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200);
    let before = certificate_series(&embedded.metrics().await);
    assert!(before.iter().any(|l| l.contains("name=\"api\"")));
    assert!(!before.iter().any(|l| l.contains("name=\"gone\"")));
    embedded.stop().await;

    let output = copy(dir.path(), &url);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("events=6"), "{}", stderr(&output));
    assert_eq!(
        pg.sql("copy", "SELECT count(*) FROM cloud66_ssl_exporter_events")
            .await,
        "6"
    );

    let replica_dir = tempfile::tempdir().expect("tempdir");
    let config = PostgresConfig::from_url(&url).expect("valid URL");
    let replica = TestServer::start_with(replica_dir.path(), |c| {
        c.auth = WebhookAuth::Stored;
        c.postgres = Some(config);
    })
    .await;
    // The same series: the deleted certificate stays deleted, though its event is copied.
    assert_eq!(certificate_series(&replica.metrics().await), before);
    // The same URL keeps working.
    let body = payload(OK, 1_700_001_000, 5, "web", json!({}));
    let reply = request(
        replica.addr,
        "POST",
        &format!("/webhook/{token}"),
        &[],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_ne!(token, TOKEN);

    // Again after success: nothing to do. After the replica took a webhook: refused.
    replica.stop().await;
    let again = copy(dir.path(), &url);
    assert!(!again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("copy into an empty database"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn a_second_copy_changes_nothing_and_a_bad_source_fails() {
    let pg = PgServer::shared().await;
    let url = pg.create_database("copy_twice").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = TestServer::start(dir.path()).await;
    let body = payload(OK, 1_700_000_000, 5, "web", json!({}));
    assert_eq!(embedded.post_event(&body).await.status, 200);
    embedded.stop().await;
    let first = copy(dir.path(), &url);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = copy(dir.path(), &url);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("nothing to do"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        pg.sql(
            "copy_twice",
            "SELECT count(*) FROM cloud66_ssl_exporter_events"
        )
        .await,
        "1"
    );
    let bad = copy(dir.path(), "mysql://nowhere/db");
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    assert!(!stderr(&bad).contains("password"));
}

#[tokio::test]
async fn a_reconciling_store_is_copied_with_its_stacks() {
    use common::fake_cloud66::FakeCloud66;
    let pg = PgServer::shared().await;
    let url = pg.create_database("copy_stacks").await;
    let fake = FakeCloud66::start().await;
    // Stack A's webhook id comes from its actions; stack B's stays unknown, so its
    // certificate is labelled with its uid.
    let (uid_a, uid_b) = (
        "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
        "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
    );
    fake.add_stack(uid_a, "Awesome App", "production");
    fake.set_actions(uid_a, vec![FakeCloud66::stack_action(json!("777"))]);
    fake.add_stack(uid_b, "Other App", "staging");
    let expiry = "2030-01-01T00:00:00Z";
    let cert = |uuid: &str, name: &str| {
        FakeCloud66::certificate(uuid, name, name, json!(3), Some(expiry), true)
    };
    fake.set_certificates(uid_a, vec![cert("u1", "a.example.com")]);
    fake.set_certificates(uid_b, vec![cert("u2", "b.example.com")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.cloud66 = Some(common::sync::config(&fake));
    })
    .await;
    common::sync::first_sync(&embedded).await;
    let metrics = embedded.metrics().await;
    let (series, stacks) = (certificate_series(&metrics), stack_info(&metrics));
    assert_eq!(stacks.len(), 2, "{stacks:?}");
    assert!(
        series.iter().any(|l| l.contains("stack=\"777\""))
            && series.iter().any(|l| l.contains(uid_b)),
        "{series:?}"
    );
    embedded.stop().await;

    let output = copy(dir.path(), &url);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("stacks=2"), "{}", stderr(&output));

    // With the API gone, what the replica knows of the stacks comes from the copy only.
    fake.stop().await;
    let replica_dir = tempfile::tempdir().expect("tempdir");
    let config = PostgresConfig::from_url(&url).expect("valid URL");
    let replica = TestServer::start_with(replica_dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.postgres = Some(config);
        c.cloud66 = Some(common::sync::config(&fake));
    })
    .await;
    let metrics = replica.metrics().await;
    assert_eq!(stack_info(&metrics), stacks);
    assert_eq!(certificate_series(&metrics), series);
    replica.stop().await;
}

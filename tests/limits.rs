//! Cardinality and forgetting: `--storage.max-certificates` and
//! `DELETE /api/v1/certificates/<stack>/<name>`; the slow-body timeout.

mod common;

use std::time::Duration;

use cloud66_ssl_exporter::config::WebhookAuth;
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const OK: &str = "ssl_certificate.install.ok";

fn event(ts: i64, name: &str) -> String {
    payload(
        OK,
        ts,
        9,
        name,
        json!({"cert_expiry": "2030-01-01T00:00:00Z"}),
    )
}

both_backends!(new_certificates_beyond_the_limit_are_refused_but_known_ones_update);
async fn new_certificates_beyond_the_limit_are_refused_but_known_ones_update(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_with(backend, dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.max_certificates = 2;
    })
    .await;
    assert_eq!(server.post_event(&event(1, "a")).await.status, 200);
    assert_eq!(server.post_event(&event(1, "b")).await.status, 200);
    let refused = server.post_event(&event(1, "c")).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.json()["error"]
            .as_str()
            .expect("error")
            .starts_with("certificate limit reached: 2 certificates are tracked")
    );
    assert_eq!(
        server.post_event(&event(2, "a")).await.status,
        200,
        "known ones update"
    );
    let m = server.metrics().await;
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(2.0));
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "9", "a")),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "9", "c")),
        None
    );
    let over = "cloud66_ssl_exporter_webhooks_received_total{event_type=\"ssl_certificate.install.ok\",result=\"over_limit\"}";
    assert_eq!(sample(&m, over), Some(1.0));

    // Forgetting one makes room; the refused event was not stored, so it is not a duplicate.
    let path = format!("/api/v1/certificates/9/b?token={TOKEN}");
    let deleted = request(server.addr, "DELETE", &path, &[], "").await;
    assert_eq!(
        (deleted.status, deleted.json()),
        (200, json!({"status": "deleted"}))
    );
    let accepted = server.post_event(&event(1, "c")).await;
    assert_eq!(accepted.json(), json!({"status": "accepted"}));
    server.stop().await;
}

both_backends!(delete_forgets_a_certificate_durably_and_needs_the_token);
async fn delete_forgets_a_certificate_durably_and_needs_the_token(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on(backend, dir.path()).await;
    let name = "old cert/ü";
    assert_eq!(server.post_event(&event(1, name)).await.status, 200);
    assert_eq!(server.post_event(&event(1, "kept")).await.status, 200);
    let encoded = "old%20cert%2F%C3%BC";

    let path = format!("/api/v1/certificates/9/{encoded}");
    let unauthorized = request(server.addr, "DELETE", &path, &[], "").await;
    assert_eq!(unauthorized.status, 401);
    let wrong_method = request(server.addr, "PUT", &path, &[], "").await;
    assert_eq!(
        (wrong_method.status, wrong_method.header("allow")),
        (405, "GET, HEAD, DELETE".to_owned())
    );

    let bearer = format!("Bearer {TOKEN}");
    let headers = [("authorization", bearer.as_str())];
    let deleted = request(server.addr, "DELETE", &path, &headers, "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = request(server.addr, "DELETE", &path, &headers, "").await;
    assert_eq!(
        (again.status, again.json()),
        (404, json!({"error": "not found"}))
    );
    let series = cert_series("ssl_install_successes_total", "9", name);
    assert_eq!(sample(&server.metrics().await, &series), None);

    // Gone after a restart too, while the other certificate stays.
    let server = server.restart().await;
    let m = server.metrics().await;
    assert_eq!(sample(&m, &series), None);
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "9", "kept")),
        Some(1.0)
    );
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Disabled;
        c.timeouts.body_read = Duration::from_millis(300);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"timestamp\":";
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let _ = stream.read_to_end(&mut answer).await;
    })
    .await
    .expect("answered before the outer guard");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the body did not arrive in time"));
    server.stop().await;
}

#[tokio::test]
async fn a_large_valid_body_within_the_limit_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let domains: Vec<String> = (0..2500).map(|i| format!("d{i}.example.com")).collect();
    let body = payload(
        OK,
        1,
        1,
        "many-domains",
        json!({"server_names": domains.join(",")}),
    );
    assert!(body.len() > 40_000 && body.len() < 65_536);
    let reply = server.post_event(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Disabled;
        c.timeouts.header_read = Duration::from_millis(300);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    // Read the answer, then wait: the server must close the idle connection itself.
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
        "answered first"
    );
    assert!(closed.is_ok(), "an idle kept-alive connection stays open");
    server.stop().await;
}

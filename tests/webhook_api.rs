//! The webhook contract over real HTTP: documented payloads, tolerated drift, every
//! rejection with its status and message, ordering, duplicates, and authentication.

mod common;

use common::*;
use serde_json::json;

const OK: &str = "ssl_certificate.install.ok";
const FAIL: &str = "ssl_certificate.install.fail";
const SOON: &str = "ssl_certificate.expire.soon";

async fn server(backend: Backend) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on(backend, dir.path()).await;
    (dir, server)
}

/// `ssl_install_successes_total` of the certificate of the documented payloads.
fn installs_of_the_documented_certificate(metrics: &str) -> Option<f64> {
    let series = cert_series(
        "ssl_install_successes_total",
        "123",
        "Awesome SSL Certificate",
    );
    sample(metrics, &series)
}

fn received(metrics: &str, event_type: &str, result: &str) -> f64 {
    let series = format!(
        "cloud66_ssl_exporter_webhooks_received_total{{event_type=\"{event_type}\",result=\"{result}\"}}"
    );
    sample(metrics, &series).unwrap_or(0.0)
}

both_backends!(documented_payloads_update_the_certificate);
async fn documented_payloads_update_the_certificate(backend: Backend) {
    let (_dir, server) = server(backend).await;
    for fixture in [INSTALL_OK, EXPIRE_SOON, INSTALL_FAIL] {
        let reply = server.post_event(fixture).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json(), json!({"status": "accepted"}));
        assert_eq!(reply.header("content-type"), "application/json");
    }
    let m = server.metrics().await;
    let s = |metric| sample(&m, &cert_series(metric, "123", "Awesome SSL Certificate"));
    // All three share timestamp 1640995200, so arrival order decides: install.fail came
    // last, and it keeps expire.soon's expiry (2024-02-01).
    assert_eq!(
        s("ssl_cert_expiry_timestamp_seconds"),
        Some(1_706_745_600.0)
    );
    assert_eq!(s("ssl_install_successes_total"), Some(1.0));
    assert_eq!(s("ssl_install_failures_total"), Some(1.0));
    assert_eq!(s("ssl_expire_soon_notifications_total"), Some(1.0));
    assert_eq!(s("ssl_cert_install_failing"), Some(1.0));
    assert_eq!(
        s("ssl_cert_last_event_timestamp_seconds"),
        Some(1_640_995_200.0)
    );
    assert!(
        s("ssl_cert_days_until_expiry").expect("days") < 0.0,
        "2024 is past"
    );
    assert!(m.contains(
        r#"ssl_cert_install_error_info{stack="123",name="Awesome SSL Certificate",error="Certificate validation failed"} 1"#
    ));
    assert!(m.contains(
        r#"ssl_cert_info{stack="123",name="Awesome SSL Certificate",server_names="example.com,awesome-example.com",lets_encrypt="true",has_intermediate_cert="false",ssl_termination="false",status="failed"} 1"#
    ));
    assert_eq!(received(&m, OK, "accepted"), 1.0);
    assert_eq!(received(&m, FAIL, "accepted"), 1.0);
    assert_eq!(received(&m, SOON, "accepted"), 1.0);
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(1.0));
    server.stop().await;
}

both_backends!(first_seen_failing_has_counters_at_zero_and_no_expiry);
async fn first_seen_failing_has_counters_at_zero_and_no_expiry(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let body = payload(
        FAIL,
        100,
        7,
        "new",
        json!({"status": "failed", "error_message": "boom"}),
    );
    assert_eq!(server.post_event(&body).await.status, 200);
    let m = server.metrics().await;
    let s = |metric| sample(&m, &cert_series(metric, "7", "new"));
    assert_eq!(s("ssl_install_failures_total"), Some(1.0));
    assert_eq!(s("ssl_install_successes_total"), Some(0.0));
    assert_eq!(s("ssl_expire_soon_notifications_total"), Some(0.0));
    assert_eq!(s("ssl_cert_install_failing"), Some(1.0));
    assert_eq!(
        s("ssl_cert_expiry_timestamp_seconds"),
        None,
        "unknown expiry is absent"
    );
    assert_eq!(s("ssl_cert_days_until_expiry"), None);
    server.stop().await;
}

both_backends!(tolerated_variants_are_accepted_and_normalised);
async fn tolerated_variants_are_accepted_and_normalised(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let variants = [
        // stack_id as a numeric string, status as an integer, ssl_termination as a string.
        json!({"timestamp": 10, "event_type": OK, "ssl_certificate": {
            "stack_id": "42", "name": "v1", "status": 3, "ssl_termination": "true",
            "lets_encrypt": null, "has_intermediate_cert": null,
            "cert_expiry": "2030-01-01T02:00:00+02:00", "unknown_field": {"x": 1}}}),
        // Cloud66's other date format and fractional RFC 3339 seconds.
        json!({"timestamp": "11", "event_type": OK, "ssl_certificate": {
            "stack_id": 42, "name": "v2", "cert_expiry": "2030-01-01 00:00:00 UTC",
            "created_at": "2024-01-01T12:30:45.123Z"}}),
        // expire.soon without cert_expiry: timestamp + days_until_expiry.
        json!({"timestamp": 1_000_000, "event_type": SOON, "ssl_certificate": {
            "stack_id": 42, "name": "v3", "days_until_expiry": 30}}),
    ];
    for body in &variants {
        let reply = server.post_event(&body.to_string()).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.body);
    }
    let m = server.metrics().await;
    let expiry = |name| {
        sample(
            &m,
            &cert_series("ssl_cert_expiry_timestamp_seconds", "42", name),
        )
    };
    assert_eq!(expiry("v1"), Some(1_893_456_000.0));
    assert_eq!(expiry("v2"), Some(1_893_456_000.0));
    assert_eq!(expiry("v3"), Some(1_000_000.0 + 30.0 * 86_400.0));
    assert!(m.contains(
        r#"ssl_cert_info{stack="42",name="v1",server_names="",lets_encrypt="",has_intermediate_cert="",ssl_termination="true",status="installed"} 1"#
    ), "{m}");
    server.stop().await;
}

both_backends!(other_event_types_are_acknowledged_and_ignored);
async fn other_event_types_are_acknowledged_and_ignored(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let body = json!({"timestamp": 1, "event_type": "stack.redeploy.ok", "stack": {"name": "x"}});
    let reply = server.post_event(&body.to_string()).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"status": "ignored"}))
    );
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "ignored"), 1.0);
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(0.0));
    assert!(sample(&m, "cloud66_ssl_exporter_last_webhook_timestamp_seconds").expect("set") > 0.0);
    server.stop().await;
}

both_backends!(invalid_payloads_get_400_naming_the_field);
async fn invalid_payloads_get_400_naming_the_field(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let cases = [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "malformed JSON"),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok", "ssl_certificate": {"stack_id": 1}}"#,
            "missing field `ssl_certificate.name`",
        ),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok", "ssl_certificate": {"stack_id": 1, "name": ""}}"#,
            "missing field `ssl_certificate.name`",
        ),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok", "ssl_certificate": {"name": "a"}}"#,
            "missing field `ssl_certificate.stack_id`",
        ),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok", "ssl_certificate": {"stack_id": "abc", "name": "a"}}"#,
            "invalid field `ssl_certificate.stack_id`",
        ),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok", "ssl_certificate": {"stack_id": 1, "name": "a", "cert_expiry": "next tuesday"}}"#,
            "invalid field `ssl_certificate.cert_expiry`",
        ),
        (
            r#"{"timestamp": 1, "event_type": "ssl_certificate.expire.soon", "ssl_certificate": {"stack_id": 1, "name": "a", "days_until_expiry": [30]}}"#,
            "invalid field `ssl_certificate.days_until_expiry`",
        ),
        (
            r#"{"event_type": "ssl_certificate.install.ok", "ssl_certificate": {"stack_id": 1, "name": "a"}}"#,
            "missing field `timestamp`",
        ),
    ];
    for (body, message) in cases {
        let reply = server.post_event(body).await;
        assert_eq!(reply.status, 400, "{body}");
        let error = reply.json()["error"]
            .as_str()
            .expect("error string")
            .to_owned();
        assert!(error.starts_with(message), "{body}: {error}");
    }
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "invalid"), 2.0);
    assert_eq!(received(&m, OK, "invalid"), 6.0);
    assert_eq!(received(&m, SOON, "invalid"), 1.0);
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(0.0));
    server.stop().await;
}

both_backends!(too_large_bodies_get_413);
async fn too_large_bodies_get_413(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_with(backend, dir.path(), |c| {
        c.auth = cloud66_ssl_exporter::config::WebhookAuth::Disabled;
        c.max_body_bytes = 64;
    })
    .await;
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(100));
    let reply = request(server.addr, "POST", "/webhook", &[], &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json(), json!({"error": "body exceeds 64 bytes"}));
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "too_large"), 1.0);
    server.stop().await;
}

both_backends!(newest_event_wins_and_late_events_are_counted_without_rollback);
async fn newest_event_wins_and_late_events_are_counted_without_rollback(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let ok = payload(
        OK,
        2_000,
        1,
        "c",
        json!({"status": "installed", "cert_expiry": "2031-01-01T00:00:00Z"}),
    );
    let late_fail = payload(
        FAIL,
        1_000,
        1,
        "c",
        json!({"status": "failed", "error_message": "old"}),
    );
    assert_eq!(server.post_event(&ok).await.status, 200);
    assert_eq!(server.post_event(&late_fail).await.status, 200);
    let m = server.metrics().await;
    let s = |metric| sample(&m, &cert_series(metric, "1", "c"));
    assert_eq!(
        s("ssl_install_failures_total"),
        Some(1.0),
        "late event still counted"
    );
    assert_eq!(
        s("ssl_cert_install_failing"),
        Some(0.0),
        "but does not roll back"
    );
    assert_eq!(s("ssl_cert_last_event_timestamp_seconds"), Some(2_000.0));
    assert!(!m.contains("ssl_cert_install_error_info{stack=\"1\""));
    assert!(m.contains(r#"ssl_cert_info{stack="1",name="c",server_names="example.com,www.example.com",lets_encrypt="true",has_intermediate_cert="true",ssl_termination="true",status="installed"} 1"#));
    server.stop().await;
}

both_backends!(the_same_delivery_twice_is_counted_once);
async fn the_same_delivery_twice_is_counted_once(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let first = server.post_event(INSTALL_OK).await;
    // Same fields and values, other key order and white space: the same delivery.
    let value: serde_json::Value = serde_json::from_str(INSTALL_OK).expect("json");
    let again = server
        .post_event(&serde_json::to_string_pretty(&value).expect("json"))
        .await;
    assert_eq!(first.json(), json!({"status": "accepted"}));
    assert_eq!(
        (again.status, again.json()),
        (200, json!({"status": "duplicate"}))
    );
    let m = server.metrics().await;
    assert_eq!(installs_of_the_documented_certificate(&m), Some(1.0));
    assert_eq!(received(&m, OK, "duplicate"), 1.0);
    server.stop().await;
}

both_backends!(copies_of_one_delivery_arriving_together_are_counted_once);
async fn copies_of_one_delivery_arriving_together_are_counted_once(backend: Backend) {
    let (_dir, server) = server(backend).await;
    // Sent at once, they share the writer's batches (one statement on PostgreSQL), the
    // copies with other deliveries between them.
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..30_i64 {
        let body = if i % 3 == 0 {
            INSTALL_OK.to_owned()
        } else {
            payload(
                OK,
                1_700_000_000 + i,
                77,
                &format!("cert-{i}"),
                json!({"cert_expiry": "2030-06-01T00:00:00Z"}),
            )
        };
        let addr = server.addr;
        sent.spawn(async move {
            let reply = request(addr, "POST", &format!("/webhook/{TOKEN}"), &[], &body).await;
            (i % 3 == 0, reply.status, reply.json()["status"].clone())
        });
    }
    let mut copies = Vec::new();
    while let Some(answer) = sent.join_next().await {
        let (copy, status, result) = answer.expect("request task");
        assert_eq!(status, 200);
        if copy {
            copies.push(result);
        } else {
            assert_eq!(result, "accepted");
        }
    }
    copies.sort_by_key(|result| result.to_string());
    let mut expected = vec![json!("duplicate"); 9];
    expected.insert(0, json!("accepted"));
    assert_eq!(copies, expected);
    let m = server.metrics().await;
    assert_eq!(installs_of_the_documented_certificate(&m), Some(1.0));
    assert_eq!(received(&m, OK, "duplicate"), 9.0);
    assert_eq!(received(&m, OK, "accepted"), 21.0);
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(21.0));
    server.stop().await;
}

both_backends!(every_token_form_is_accepted_and_anything_else_is_401);
async fn every_token_form_is_accepted_and_anything_else_is_401(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let body = |ts| payload(OK, ts, 5, "auth", json!({}));
    let basic = format!("Basic {}", base64_encode(&format!("cloud66:{TOKEN}")));
    let bearer = format!("Bearer {TOKEN}");
    let accepted = [
        request(
            server.addr,
            "POST",
            &format!("/webhook/{TOKEN}"),
            &[],
            &body(1),
        )
        .await,
        request(
            server.addr,
            "POST",
            &format!("/webhook?token={TOKEN}"),
            &[],
            &body(2),
        )
        .await,
        request(
            server.addr,
            "POST",
            "/webhook",
            &[("authorization", &bearer)],
            &body(3),
        )
        .await,
        request(
            server.addr,
            "POST",
            "/webhook",
            &[("authorization", &basic)],
            &body(4),
        )
        .await,
    ];
    for reply in &accepted {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let rejected = [
        request(server.addr, "POST", "/webhook", &[], &body(5)).await,
        request(
            server.addr,
            "POST",
            "/webhook/wrong-token-0123456789",
            &[],
            &body(6),
        )
        .await,
        request(server.addr, "POST", "/webhook?token=nope", &[], &body(7)).await,
    ];
    for reply in &rejected {
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.json(),
            json!({"error": "missing or invalid webhook token"})
        );
        assert!(reply.header("www-authenticate").contains("Bearer realm="));
    }
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "unauthorized"), 3.0);
    assert_eq!(
        sample(&m, &cert_series("ssl_install_successes_total", "5", "auth")),
        Some(4.0)
    );
    server.stop().await;
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

both_backends!(unknown_paths_and_methods);
async fn unknown_paths_and_methods(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let reply = request(server.addr, "GET", "/nope", &[], "").await;
    assert_eq!(
        (reply.status, reply.json()),
        (404, json!({"error": "not found"}))
    );
    let reply = request(server.addr, "GET", "/webhook", &[], "").await;
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, "POST".to_owned())
    );
    let reply = request(server.addr, "POST", "/metrics", &[], "{}").await;
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, "GET, HEAD".to_owned())
    );
    server.stop().await;
}

both_backends!(health_readiness_and_landing_page);
async fn health_readiness_and_landing_page(backend: Backend) {
    let (_dir, server) = server(backend).await;
    assert_eq!(
        request(server.addr, "GET", "/healthz", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        request(server.addr, "GET", "/readyz", &[], "").await.status,
        200
    );
    let page = request(server.addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("/webhook/&lt;token&gt;"));
    assert!(!page.body.contains(TOKEN), "the page never shows the token");
    let metrics = request(server.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(
        metrics.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    server.stop().await;
}

both_backends!(events_that_cannot_be_stored_get_503_and_are_not_counted);
async fn events_that_cannot_be_stored_get_503_and_are_not_counted(backend: Backend) {
    let (_dir, server) = server(backend).await;
    assert_eq!(server.post_event(INSTALL_OK).await.status, 200);
    // Closing storage is what shutdown does; afterwards nothing can be made durable.
    server.app.close().await;
    let reply = server.post_event(INSTALL_FAIL).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.json()["error"]
            .as_str()
            .expect("error")
            .starts_with("event not stored")
    );
    assert_eq!(
        request(server.addr, "GET", "/readyz", &[], "").await.status,
        503
    );
    let m = server.metrics().await;
    let series = cert_series(
        "ssl_install_failures_total",
        "123",
        "Awesome SSL Certificate",
    );
    assert_eq!(
        sample(&m, &series),
        Some(0.0),
        "nothing about the event is counted"
    );
    assert_eq!(received(&m, FAIL, "unavailable"), 1.0);
    server.stop().await;
}

// ---------------------------------------------------------------------------------
// First contact: Cloud66's test button and the webhook URL opened in a browser.

/// `last_webhook_timestamp_seconds` in a scrape (0 until a delivery arrives).
fn last_webhook(metrics: &str) -> f64 {
    sample(
        metrics,
        "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
    )
    .expect("present")
}

/// The current Unix time in whole seconds, rounded down.
fn unix_now() -> f64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    elapsed.as_secs() as f64
}

both_backends!(bodies_that_are_not_ssl_events_are_ignored_and_counted);
async fn bodies_that_are_not_ssl_events_are_ignored_and_counted(backend: Backend) {
    let (_dir, server) = server(backend).await;
    assert_eq!(last_webhook(&server.metrics().await), 0.0);
    let sent_after = unix_now();
    // Cloud66 does not document its test button's body: anything that is not an SSL
    // event must get a green result.
    let bodies = [
        "{}",
        "",
        r#"{"event_type":"test"}"#,
        r#"{"foo":1}"#,
        r#"{"event_type":3}"#,
    ];
    for body in bodies {
        let reply = server.post_event(body).await;
        assert_eq!(
            (reply.status, reply.json()),
            (200, json!({"status": "ignored"})),
            "{body:?}"
        );
    }
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "ignored"), bodies.len() as f64);
    assert_eq!(received(&m, "other", "invalid"), 0.0);
    assert_eq!(sample(&m, "cloud66_ssl_exporter_certificates"), Some(0.0));
    assert!(last_webhook(&m) >= sent_after, "{}", last_webhook(&m));
    server.stop().await;
}

both_backends!(what_is_or_claims_to_be_an_ssl_event_stays_strict);
async fn what_is_or_claims_to_be_an_ssl_event_stays_strict(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let cases = [
        (
            r#"{"ssl_certificate":{"stack_id":1,"name":"x"}}"#,
            "missing field `event_type`",
        ),
        (
            r#"{"event_type":"ssl_certificate.install.ok"}"#,
            "missing field `timestamp`",
        ),
        (
            "[1]",
            "malformed JSON: expected a JSON object at the top level, got an array",
        ),
        (
            r#""x""#,
            "malformed JSON: expected a JSON object at the top level, got a string",
        ),
        ("{not json", "malformed JSON: "),
    ];
    for (body, message) in cases {
        let reply = server.post_event(body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let error = reply.json()["error"].as_str().expect("error").to_owned();
        assert!(error.starts_with(message), "{body}: {error}");
    }
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "invalid"), 4.0);
    assert_eq!(received(&m, OK, "invalid"), 1.0);
    assert_eq!(received(&m, "other", "ignored"), 0.0);
    assert_eq!(last_webhook(&m), 0.0, "refused bodies are not deliveries");
    server.stop().await;
}

both_backends!(unauthenticated_test_bodies_are_still_401);
async fn unauthenticated_test_bodies_are_still_401(backend: Backend) {
    let (_dir, server) = server(backend).await;
    for path in ["/webhook", "/webhook/wrong-token-0123456789"] {
        for body in ["{}", ""] {
            let reply = request(server.addr, "POST", path, &[], body).await;
            assert_eq!(reply.status, 401, "{path} {body:?}");
        }
    }
    let m = server.metrics().await;
    assert_eq!(received(&m, "other", "unauthorized"), 4.0);
    assert_eq!(received(&m, "other", "ignored"), 0.0);
    assert_eq!(last_webhook(&m), 0.0);
    server.stop().await;
}

/// Checks a reply is the webhook URL's ready page, without the token.
fn assert_ready_page(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.body);
    assert!(
        reply.header("content-type").starts_with("text/html"),
        "{what}"
    );
    assert!(
        reply
            .body
            .contains("This URL is ready: Cloud66 POSTs deliveries here"),
        "{what}: {}",
        reply.body
    );
    assert!(reply.body.contains(r#"<a href="/">"#), "{what}");
    assert!(
        !reply.body.contains(TOKEN),
        "{what}: the page shows the token"
    );
    assert_eq!(reply.header("cache-control"), "no-store", "{what}");
    assert_eq!(reply.header("referrer-policy"), "no-referrer", "{what}");
}

both_backends!(the_webhook_url_opened_with_its_token_says_it_is_ready);
async fn the_webhook_url_opened_with_its_token_says_it_is_ready(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let bearer = format!("Bearer {TOKEN}");
    let path = format!("/webhook/{TOKEN}");
    let query = format!("/webhook?token={TOKEN}");
    let page = request(server.addr, "GET", &path, &[], "").await;
    assert_ready_page(&page, "path token");
    assert!(
        page.body.contains("No delivery received yet."),
        "{}",
        page.body
    );
    assert_ready_page(
        &request(server.addr, "GET", &query, &[], "").await,
        "query token",
    );
    let header = [("authorization", bearer.as_str())];
    assert_ready_page(
        &request(server.addr, "GET", "/webhook", &header, "").await,
        "bearer token",
    );

    let head = request(server.addr, "HEAD", &path, &[], "").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert!(head.header("content-type").starts_with("text/html"));

    // After the test button's delivery, the page names it.
    assert_eq!(server.post_event("").await.status, 200);
    let page = request(server.addr, "GET", &path, &[], "").await;
    assert!(
        page.body.contains("no event type, ignored"),
        "{}",
        page.body
    );
    server
        .post_event(r#"{"event_type":"stack.redeploy.ok"}"#)
        .await;
    let page = request(server.addr, "GET", &path, &[], "").await;
    assert!(
        page.body
            .contains("<code>stack.redeploy.ok</code>, ignored (not an SSL event)"),
        "{}",
        page.body
    );
    let m = server.metrics().await;
    assert_eq!(
        received(&m, "other", "ignored"),
        2.0,
        "GETs are not deliveries"
    );
    server.stop().await;
}

both_backends!(the_webhook_url_without_the_right_token_is_refused);
async fn the_webhook_url_without_the_right_token_is_refused(backend: Backend) {
    let (_dir, server) = server(backend).await;
    for (method, path, headers) in [
        ("GET", "/webhook/wrong-token-0123456789", &[][..]),
        ("HEAD", "/webhook/wrong-token-0123456789", &[][..]),
        ("GET", "/webhook/", &[][..]),
        ("GET", "/webhook?token=wrong", &[][..]),
        ("GET", "/webhook", &[("authorization", "Bearer wrong")][..]),
    ] {
        let reply = request(server.addr, method, path, headers, "").await;
        assert_eq!(reply.status, 401, "{method} {path} {headers:?}");
        assert!(reply.header("www-authenticate").contains("Bearer realm="));
        assert!(!reply.body.contains("This URL is ready"));
    }
    // Offering no token at all is not a check of the URL: that form takes only POSTs.
    let reply = request(server.addr, "GET", "/webhook", &[], "").await;
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, "POST".to_owned())
    );
    let reply = request(server.addr, "PUT", &format!("/webhook/{TOKEN}"), &[], "{}").await;
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, "GET, HEAD, POST".to_owned())
    );
    let m = server.metrics().await;
    assert_eq!(
        received(&m, "other", "unauthorized"),
        0.0,
        "opening the URL is not a webhook call"
    );
    server.stop().await;
}

both_backends!(without_authentication_the_plain_webhook_url_says_it_is_ready);
async fn without_authentication_the_plain_webhook_url_says_it_is_ready(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_with(backend, dir.path(), |c| {
        c.auth = cloud66_ssl_exporter::config::WebhookAuth::Disabled;
    })
    .await;
    assert_ready_page(
        &request(server.addr, "GET", "/webhook", &[], "").await,
        "no auth",
    );
    server.stop().await;
}

both_backends!(the_landing_page_shows_the_last_delivery);
async fn the_landing_page_shows_the_last_delivery(backend: Backend) {
    let (_dir, server) = server(backend).await;
    let page = request(server.addr, "GET", "/", &[], "").await.body;
    assert!(page.contains("<dt>Last webhook</dt>"), "{page}");
    assert!(page.contains("id=\"no-webhook\""), "{page}");
    assert!(page.contains("<dd>No webhook received yet</dd>"), "{page}");

    server.post_event(r#"{"event_type":"test"}"#).await;
    let page = request(server.addr, "GET", "/", &[], "").await.body;
    assert!(
        page.contains("<code>test</code>, ignored (not an SSL event)"),
        "{page}"
    );
    assert!(!page.contains("No webhook received yet"), "{page}");
    assert!(
        page.contains("Z</time> <span class=\"age\">("),
        "UTC ISO 8601 time and age: {page}"
    );

    assert_eq!(server.post_event(INSTALL_OK).await.status, 200);
    let page = request(server.addr, "GET", "/", &[], "").await.body;
    assert!(
        page.contains("<code>ssl_certificate.install.ok</code>, accepted"),
        "{page}"
    );

    // Storage keeps when the newest event arrived, not what the last delivery was.
    let server = server.restart().await;
    let page = request(server.addr, "GET", "/", &[], "").await.body;
    assert!(page.contains("What it was is not known"), "{page}");
    assert!(last_webhook(&server.metrics().await) > 0.0);
    server.stop().await;
}

#[tokio::test]
async fn ignored_deliveries_are_logged_at_info_with_their_sender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("--webhook.token={TOKEN}");
    let (exporter, mut lines, _) =
        Exporter::spawn_logged(dir.path(), &[&token, "--log.level=info"]).await;
    let mut next_line = async || {
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("logs within 30 s")
            .expect("reads")
            .expect("still running")
    };
    let addr = exporter.addr;
    let path = format!("/webhook/{TOKEN}");
    let reply = request(addr, "POST", &path, &[], "{}").await;
    assert_eq!(reply.status, 200);
    let line = loop {
        let line = next_line().await;
        if line.contains("webhook ignored") {
            break line;
        }
    };
    assert!(line.contains("level=info"), "{line}");
    assert!(line.contains("event_type=none"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(!line.contains(TOKEN), "{line}");
    exporter.kill().await;
}

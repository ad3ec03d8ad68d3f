//! Cloud66 API reconciliation against the fake API (`common::fake_cloud66`), over real
//! HTTP(S) on 127.0.0.1: backfill, ordering against webhooks, healing, forgetting, stack
//! ids, faults, the request budget, restarts, the sync endpoint and the token's secrecy.

mod common;

use std::time::Duration;

use cloud66_ssl_exporter::config::Cloud66Config;
use common::fake_cloud66::{FAKE_TOKEN, FakeCloud66, Fault, Route};
use common::sync::{
    UID_A, UID_B, cert, certificates, first_sync, in_days, pairs, start, start_on, status,
    sync_after_restart, sync_now, sync_started_since,
};
use common::{
    Backend, Exporter, Log, TOKEN, TestServer, both_backends, cert_series, payload, request, sample,
};
use serde_json::{Value, json};

/// Days left of a certificate, or `None` if it has no such series.
fn days_left(metrics: &str, stack: &str, name: &str) -> Option<f64> {
    sample(
        metrics,
        &cert_series("ssl_cert_days_until_expiry", stack, name),
    )
}

fn failing(metrics: &str, stack: &str, name: &str) -> Option<f64> {
    sample(
        metrics,
        &cert_series("ssl_cert_install_failing", stack, name),
    )
}

/// The webhook `install.ok`/`fail` etc. for certificate `name` on stack `stack`.
fn webhook(event_type: &str, timestamp: i64, stack: u64, name: &str, extra: Value) -> String {
    payload(event_type, timestamp, stack, name, extra)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

both_backends!(backfill_on_an_empty_store_shows_every_certificate_with_zero_counters);
async fn backfill_on_an_empty_store_shows_every_certificate_with_zero_counters(backend: Backend) {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_actions(UID_A, vec![FakeCloud66::stack_action(json!("283"))]);
    let mut api_fixtures = FakeCloud66::fixture_items("ssl_certificates.page1.json");
    // Drift: a status string, `ssl_termination` as a string, Cloud66's UTC date form.
    api_fixtures[1]["status"] = json!("active");
    api_fixtures[1]["ssl_termination"] = json!("true");
    api_fixtures[1]["expires_at"] = json!("2031-08-14 00:38:14 UTC");
    fake.set_certificates(UID_A, api_fixtures);
    fake.set_certificates(UID_B, vec![cert("b1", "billing.example.com", 40.0)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_on(backend, dir.path(), &fake, |_| {}).await;

    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "ok", "{status}");
    assert_eq!(status["certificates"], 4);
    let metrics = server.metrics().await;
    assert_eq!(
        certificates(&metrics),
        pairs(&[
            ("283", "app.example.com"),
            ("283", "legacy.example.com"),
            ("283", "new.example.com"),
            (UID_B, "billing.example.com"),
        ]),
        "stack A's id came from its actions; B's certificates carry its uid"
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series(
                "ssl_cert_expiry_timestamp_seconds",
                "283",
                "app.example.com"
            )
        ),
        Some(1_748_864_884.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series(
                "ssl_cert_expiry_timestamp_seconds",
                "283",
                "legacy.example.com"
            )
        ),
        Some(1_944_434_294.0),
        "`2031-08-14 00:38:14 UTC`"
    );
    assert_eq!(failing(&metrics, "283", "new.example.com"), Some(1.0));
    assert_eq!(failing(&metrics, "283", "app.example.com"), Some(0.0));
    let left = days_left(&metrics, UID_B, "billing.example.com").expect("expiry");
    assert!((39.9..40.1).contains(&left), "{left}");
    for counter in [
        "ssl_install_failures_total",
        "ssl_install_successes_total",
        "ssl_expire_soon_notifications_total",
    ] {
        assert_eq!(
            sample(
                &metrics,
                &cert_series(counter, UID_B, "billing.example.com")
            ),
            Some(0.0),
            "{counter}: observations are not events"
        );
    }
    assert!(metrics.contains(
        r#"ssl_cert_info{stack="283",name="app.example.com",server_names="app.example.com,www.example.com",lets_encrypt="true",has_intermediate_cert="true",ssl_termination="true",status="installed"} 1"#
    ), "{metrics}");
    assert!(metrics.contains(&format!(
        r#"cloud66_ssl_exporter_stack_info{{environment="production",id_source="actions",stack="283",stack_name="Awesome App",stack_uid="{UID_A}"}} 1"#
    )));
    assert!(metrics.contains(&format!(
        r#"cloud66_ssl_exporter_stack_info{{environment="staging",id_source="unresolved",stack="{UID_B}",stack_name="Billing API",stack_uid="{UID_B}"}} 1"#
    )));
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_sync_certificates"),
        Some(4.0)
    );
    assert!(
        sample(
            &metrics,
            "cloud66_ssl_exporter_sync_last_success_timestamp_seconds"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"cloud66_ssl_exporter_sync_api_requests_total{code="200",endpoint="/stacks/{uid}/ssl_certificates.json"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"cloud66_ssl_exporter_sync_errors_total{reason="server_error"}"#
        ),
        Some(0.0)
    );
    // One request at a time, each with the token, gzip asked for and used.
    assert_eq!(fake.max_concurrent(), 1);
    for seen in fake.requests() {
        assert_eq!(
            seen.authorization.as_deref(),
            Some(&*format!("Bearer {FAKE_TOKEN}"))
        );
        assert!(seen.gzip, "{seen:?}");
    }
    // A second sync changes nothing and stores nothing.
    let events = stored_events(&server).await;
    let log = log_rows(&server).await;
    let status = sync_now(&server).await;
    assert_eq!(
        (status["last_result"].as_str(), status["changed"].as_u64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(
        stored_events(&server).await,
        events,
        "unchanged certificates write nothing"
    );
    assert_eq!(
        log_rows(&server).await,
        log,
        "nor do unchanged stacks (PostgreSQL logs a stack when it is saved)"
    );
    server.stop().await;
}

/// Rows in the event log (read beside the running exporter: WAL allows readers). On
/// PostgreSQL, without the stack and forget rows: SQLite keeps stacks and forgets
/// outside its log, so only the rows both backends log (webhooks and API observations)
/// are comparable.
async fn stored_events(server: &TestServer) -> i64 {
    match server.backend {
        Backend::Sqlite => {
            let path = server.storage.join(cloud66_ssl_exporter::DB_FILE);
            let db = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open the database");
            db.query_row("SELECT count(*) FROM events", [], |row| row.get(0))
                .expect("count events")
        }
        Backend::Postgres => {
            pg_count(
                server,
                "SELECT count(*) FROM cloud66_ssl_exporter_events \
                 WHERE event_type NOT IN \
                 ('cloud66-ssl-exporter.stack', 'cloud66-ssl-exporter.forget')",
            )
            .await
        }
    }
}

/// On PostgreSQL, every row of the shared log, stack and forget rows included; `None`
/// on SQLite, which keeps those outside its log.
async fn log_rows(server: &TestServer) -> Option<i64> {
    match server.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            Some(pg_count(server, "SELECT count(*) FROM cloud66_ssl_exporter_events").await)
        }
    }
}

/// The count that `query` reads from the server's PostgreSQL database.
async fn pg_count(server: &TestServer, query: &str) -> i64 {
    let db = server
        .database
        .as_ref()
        .expect("a PostgreSQL server has a database");
    let count = common::postgres::PgServer::shared()
        .await
        .sql(&db.name, query)
        .await;
    count.parse().unwrap_or_else(|e| panic!("{e}: {count:?}"))
}

/// A webhook body of `event_type` sent at `timestamp` (fractional seconds allowed).
fn webhook_at(event_type: &str, timestamp: f64, stack: u64, name: &str, extra: Value) -> String {
    let mut body: Value =
        serde_json::from_str(&webhook(event_type, 0, stack, name, extra)).expect("payload is JSON");
    body["timestamp"] = json!(timestamp);
    body.to_string()
}

fn now_f64() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0
}

fn expiry(metrics: &str, stack: &str, name: &str) -> Option<f64> {
    sample(
        metrics,
        &cert_series("ssl_cert_expiry_timestamp_seconds", stack, name),
    )
}

/// Unix seconds of an RFC 3339 date.
fn unix(date: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(date)
        .expect("RFC 3339")
        .timestamp() as f64
}

/// Stack A with id 123 configured and the certificates `certs`.
async fn one_stack(fake: &FakeCloud66, certs: Vec<Value>) {
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.set_certificates(UID_A, certs);
}

fn configured_a(config: &mut Cloud66Config) {
    config.stack_ids = vec![(UID_A.to_owned(), "123".to_owned())];
}

/// A fake API with stack A holding `web`, installed and expiring in 60 days (returned),
/// and a store for the exporter.
async fn web_on_stack_123() -> (FakeCloud66, tempfile::TempDir, String) {
    let fake = FakeCloud66::start().await;
    let in_60 = in_days(60.0);
    let web = FakeCloud66::certificate("w", "web", "web.example.com", json!(3), Some(&in_60), true);
    one_stack(&fake, vec![web]).await;
    (fake, tempfile::tempdir().expect("tempdir"), in_60)
}

both_backends!(the_newest_word_wins_between_webhooks_and_the_api_both_ways);
async fn the_newest_word_wins_between_webhooks_and_the_api_both_ways(backend: Backend) {
    let (fake, dir, in_60) = web_on_stack_123().await;
    let server = start_on(backend, dir.path(), &fake, configured_a).await;
    first_sync(&server).await;
    assert_eq!(
        expiry(&server.metrics().await, "123", "web"),
        Some(unix(&in_60))
    );

    // A webhook newer than the fetch wins, and a later fetch of the same (older) data
    // does not undo it.
    let in_90 = in_days(90.0);
    let reply = server
        .post_event(&webhook_at(
            "ssl_certificate.install.ok",
            now_f64() + 100.0,
            123,
            "web",
            json!({"cert_expiry": in_90}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    sync_now(&server).await;
    let metrics = server.metrics().await;
    assert_eq!(expiry(&metrics, "123", "web"), Some(unix(&in_90)));
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_successes_total", "123", "web")
        ),
        Some(1.0)
    );

    // A stale webhook (older than the fetches) is counted but changes nothing.
    let reply = server
        .post_event(&webhook_at(
            "ssl_certificate.install.fail",
            now_f64() - 3600.0,
            123,
            "web",
            json!({"error_message": "stale"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let metrics = server.metrics().await;
    assert_eq!(
        failing(&metrics, "123", "web"),
        Some(0.0),
        "the newer fetch said installed"
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_failures_total", "123", "web")
        ),
        Some(1.0)
    );
    server.stop().await;
}

both_backends!(a_missed_install_ok_is_healed_by_a_sync);
async fn a_missed_install_ok_is_healed_by_a_sync(backend: Backend) {
    let (fake, dir, _) = web_on_stack_123().await;
    let server = start_on(backend, dir.path(), &fake, configured_a).await;
    first_sync(&server).await;
    // A renewal fails, then succeeds, but the install.ok delivery is lost.
    let reply = server
        .post_event(&webhook_at(
            "ssl_certificate.install.fail",
            now_f64(),
            123,
            "web",
            json!({"error_message": "DNS check failed"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let metrics = server.metrics().await;
    assert_eq!(failing(&metrics, "123", "web"), Some(1.0));
    let in_90 = in_days(90.0);
    fake.set_certificates(
        UID_A,
        vec![FakeCloud66::certificate(
            "w",
            "web",
            "web.example.com",
            json!(3),
            Some(&in_90),
            true,
        )],
    );
    let status = sync_now(&server).await;
    assert_eq!(status["changed"], 1, "{status}");
    let metrics = server.metrics().await;
    assert_eq!(failing(&metrics, "123", "web"), Some(0.0), "{metrics}");
    assert_eq!(expiry(&metrics, "123", "web"), Some(unix(&in_90)));
    assert!(
        !metrics.contains("ssl_cert_install_error_info{stack=\"123\""),
        "the error is gone"
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_failures_total", "123", "web")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_successes_total", "123", "web")
        ),
        Some(0.0),
        "observations are not deliveries"
    );
    server.stop().await;
}

both_backends!(certificates_are_forgotten_only_after_complete_listings);
async fn certificates_are_forgotten_only_after_complete_listings(backend: Backend) {
    let fake = FakeCloud66::start().await;
    fake.set_per_page(1);
    one_stack(
        &fake,
        vec![
            cert("w", "web", 60.0),
            cert("o", "old", 60.0),
            cert("z", "zeta", 60.0),
        ],
    )
    .await;
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_certificates(UID_B, vec![cert("b", "billing", 60.0)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_on(backend, dir.path(), &fake, |c| {
        c.stack_ids = vec![
            (UID_A.to_owned(), "123".to_owned()),
            (UID_B.to_owned(), "456".to_owned()),
        ];
    })
    .await;
    first_sync(&server).await;
    // Known only from webhooks, on a stack the API does not list: never forgotten.
    let reply = server
        .post_event(&webhook(
            "ssl_certificate.install.ok",
            now(),
            999,
            "elsewhere",
            json!({}),
        ))
        .await;
    assert_eq!(reply.status, 200);
    // A webhook certificate on a listed stack is the API's to forget like any other.
    let reply = server
        .post_event(&webhook(
            "ssl_certificate.install.ok",
            now(),
            123,
            "hook-only",
            json!({}),
        ))
        .await;
    assert_eq!(reply.status, 200);
    fake.remove_certificate(UID_A, "o");
    let all = pairs(&[
        ("123", "web"),
        ("123", "old"),
        ("123", "zeta"),
        ("123", "hook-only"),
        ("456", "billing"),
        ("999", "elsewhere"),
    ]);
    assert_eq!(certificates(&server.metrics().await), all);

    // Listings that fail on a page, or are throttled, count no miss.
    fake.fail(
        Route::Certificates(UID_A.into()),
        Some(2),
        Fault::Status(500),
        None,
    );
    for _ in 0..3 {
        let status = sync_now(&server).await;
        assert_eq!(status["last_result"], "failed", "{status}");
    }
    fake.clear_faults();
    fake.fail(
        Route::Certificates(UID_A.into()),
        Some(1),
        Fault::Throttled {
            retry_after: Some(0),
        },
        Some(2),
    );
    for _ in 0..2 {
        let status = sync_now(&server).await;
        assert_eq!(status["last_result"], "partial", "{status}");
    }
    // The stack gone from the stack list: its certificates stay.
    fake.remove_stack(UID_B);
    assert_eq!(
        certificates(&server.metrics().await),
        all,
        "nothing forgotten yet"
    );

    // Two complete listings without them.
    let status = sync_now(&server).await;
    assert_eq!(status["last_result"], "ok", "{status}");
    assert_eq!(
        certificates(&server.metrics().await),
        all,
        "one miss is not enough"
    );
    let status = sync_now(&server).await;
    assert_eq!(status["changed"], 2, "{status}");
    assert_eq!(
        certificates(&server.metrics().await),
        pairs(&[
            ("123", "web"),
            ("123", "zeta"),
            ("456", "billing"),
            ("999", "elsewhere")
        ])
    );
    server.stop().await;
}

both_backends!(stack_ids_come_from_configuration_actions_or_a_content_match_and_uid_series_merge);
async fn stack_ids_come_from_configuration_actions_or_a_content_match_and_uid_series_merge(
    backend: Backend,
) {
    let fake = FakeCloud66::start().await;
    let c1 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
    let c2 = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
    let c3 = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    fake.add_stack(c1, "Configured", "production");
    fake.add_stack(c2, "By actions", "production");
    fake.add_stack(c3, "By match", "production");
    fake.set_actions(c1, vec![FakeCloud66::stack_action(json!("1"))]);
    fake.set_actions(c2, vec![FakeCloud66::stack_action(json!(222))]);
    fake.set_certificates(c1, vec![cert("1", "one.example.com", 50.0)]);
    fake.set_certificates(c2, vec![cert("2", "two.example.com", 50.0)]);
    let shop_expiry = in_days(50.0);
    fake.set_certificates(
        c3,
        vec![FakeCloud66::certificate(
            "3",
            "shop",
            "shop.example.com,www.shop.example.com",
            json!(3),
            Some(&shop_expiry),
            true,
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_on(backend, dir.path(), &fake, |c| {
        c.stack_ids = vec![(c1.to_owned(), "111".to_owned())]
    })
    .await;
    first_sync(&server).await;
    assert_eq!(
        certificates(&server.metrics().await),
        pairs(&[
            ("111", "one.example.com"),
            ("222", "two.example.com"),
            (c3, "shop")
        ])
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path.contains(c1) && r.path.ends_with("actions.json")),
        "a configured stack's actions are not looked up"
    );

    // A webhook for stack 333 whose certificate matches c3's only one.
    let reply = server
        .post_event(&webhook(
            "ssl_certificate.install.ok",
            now() - 60,
            333,
            "shop",
            json!({"server_names": "www.shop.example.com, shop.example.com"}),
        ))
        .await;
    assert_eq!(reply.status, 200);
    sync_now(&server).await;
    let metrics = server.metrics().await;
    assert_eq!(
        certificates(&metrics),
        pairs(&[
            ("111", "one.example.com"),
            ("222", "two.example.com"),
            ("333", "shop")
        ]),
        "one series per certificate after the merge"
    );
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_successes_total", "333", "shop")
        ),
        Some(1.0),
        "nothing counted twice"
    );
    assert_eq!(
        expiry(&metrics, "333", "shop"),
        Some(unix(&shop_expiry)),
        "the API's newer expiry survives the merge"
    );
    for (stack, uid, source) in [
        ("111", c1, "configured"),
        ("222", c2, "actions"),
        ("333", c3, "matched"),
    ] {
        assert!(
            metrics.contains(&format!(
                r#"id_source="{source}",stack="{stack}",stack_name="#
            )) && metrics.contains(&format!(r#"stack_uid="{uid}"}} 1"#)),
            "{source}: {metrics}"
        );
    }
    // Actions are looked up once per stack, ever.
    let actions = |fake: &FakeCloud66| {
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("actions.json"))
            .count()
    };
    assert_eq!(actions(&fake), 2);
    sync_now(&server).await;
    assert_eq!(actions(&fake), 2);

    // All of it survives a restart, and later observations land on the id.
    let restarted = now_f64();
    let server = common::sync::restart(server, &fake, |c| {
        c.stack_ids = vec![(c1.to_owned(), "111".to_owned())]
    })
    .await;
    let metrics = server.metrics().await;
    assert_eq!(
        certificates(&metrics),
        pairs(&[
            ("111", "one.example.com"),
            ("222", "two.example.com"),
            ("333", "shop")
        ])
    );
    assert!(
        metrics.contains(r#"id_source="matched",stack="333""#),
        "{metrics}"
    );
    sync_after_restart(&server, restarted).await;
    assert_eq!(actions(&fake), 2, "not even after a restart");
    assert_eq!(certificates(&server.metrics().await).len(), 3);
    server.stop().await;
}

/// Requests the fake answered on a path ending with `suffix`.
fn requests_to(fake: &FakeCloud66, suffix: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .count()
}

fn errors(metrics: &str, reason: &str) -> Option<f64> {
    sample(
        metrics,
        &format!(r#"cloud66_ssl_exporter_sync_errors_total{{reason="{reason}"}}"#),
    )
}

#[tokio::test]
async fn transient_failures_are_retried_a_bounded_number_of_times() {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, |c| {
        configured_a(c);
        c.request_timeout = Duration::from_millis(300);
    })
    .await;
    first_sync(&server).await;
    let route = || Route::Certificates(UID_A.into());
    let certs = "ssl_certificates.json";

    // Each kind of transient failure, twice, then an answer: the sync succeeds.
    for fault in [
        Fault::Status(500),
        Fault::Status(502),
        Fault::Delay(Duration::from_secs(2)),
        Fault::NotJson,
        Fault::Truncated,
    ] {
        fake.clear_requests();
        fake.fail(route(), None, fault.clone(), Some(2));
        let status = sync_now(&server).await;
        assert_eq!(status["last_result"], "ok", "{fault:?}: {status}");
        assert_eq!(
            requests_to(&fake, certs),
            3,
            "{fault:?}: two failures, one answer"
        );
    }
    // Failing for good: four attempts (one and three retries), then the stack fails.
    for (fault, reason) in [
        (Fault::Status(503), "server_error"),
        (Fault::Delay(Duration::from_secs(2)), "timeout"),
        (Fault::Truncated, "malformed"),
    ] {
        fake.clear_faults();
        fake.clear_requests();
        fake.fail(route(), None, fault.clone(), None);
        let before = errors(&server.metrics().await, reason).expect("reason counted");
        let status = sync_now(&server).await;
        assert_eq!(status["last_result"], "failed", "{fault:?}: {status}");
        assert_eq!(requests_to(&fake, certs), 4, "{fault:?}");
        let after = errors(&server.metrics().await, reason).expect("reason counted");
        assert_eq!(
            after - before,
            1.0,
            "{fault:?}: one failure of the sync, counted as {reason}"
        );
    }
    let metrics = server.metrics().await;
    assert_eq!(
        failing(&metrics, "123", "web"),
        Some(0.0),
        "nothing half-applied"
    );
    assert!(
        sample(
            &metrics,
            r#"cloud66_ssl_exporter_sync_api_requests_total{code="503",endpoint="/stacks/{uid}/ssl_certificates.json"}"#
        ) >= Some(4.0)
    );
    assert!(
        sample(
            &metrics,
            r#"cloud66_ssl_exporter_sync_api_requests_total{code="error",endpoint="/stacks/{uid}/ssl_certificates.json"}"#
        ) >= Some(4.0),
        "timeouts count as code=\"error\""
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rejected_token_fails_the_sync_with_one_request_and_a_clear_reason() {
    for (fault, code) in [(Fault::Unauthorized, 401), (Fault::Forbidden, 403)] {
        let fake = FakeCloud66::start().await;
        one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
        fake.fail(Route::Any, None, fault, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start(dir.path(), &fake, |_| {}).await;
        let status = first_sync(&server).await;
        assert_eq!(status["last_result"], "failed");
        let error = status["last_error"].as_str().expect("an error");
        assert!(
            error.contains(&format!("HTTP {code}")) && error.contains("`public` scope"),
            "{error}"
        );
        assert_eq!(fake.request_count(), 1, "no retry storm");
        let metrics = server.metrics().await;
        assert_eq!(errors(&metrics, "unauthorized"), Some(1.0));
        assert_eq!(
            sample(
                &metrics,
                "cloud66_ssl_exporter_sync_last_success_timestamp_seconds"
            ),
            Some(0.0)
        );
        // Webhooks and scrapes go on.
        let reply = server
            .post_event(&webhook(
                "ssl_certificate.install.ok",
                now(),
                5,
                "web",
                json!({}),
            ))
            .await;
        assert_eq!(reply.status, 200);
        server.stop().await;
    }
}

#[tokio::test]
async fn throttling_stops_the_sync_and_waits_before_the_next_request() {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_certificates(UID_B, vec![cert("b", "billing", 60.0)]);
    fake.fail(
        Route::Certificates(UID_B.into()),
        None,
        Fault::Throttled {
            retry_after: Some(3600),
        },
        None,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, |c| {
        c.stack_ids = vec![
            (UID_A.to_owned(), "123".to_owned()),
            (UID_B.to_owned(), "456".to_owned()),
        ];
    })
    .await;
    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "partial", "{status}");
    assert_eq!(
        requests_to(&fake, "ssl_certificates.json"),
        2,
        "throttled once, not retried"
    );
    let metrics = server.metrics().await;
    assert_eq!(errors(&metrics, "throttled"), Some(1.0));
    assert!(
        days_left(&metrics, "123", "web").is_some(),
        "what was complete is kept"
    );
    // Until Retry-After has passed, a sync asks nothing.
    let asked = fake.request_count();
    let status = sync_now(&server).await;
    assert_eq!(fake.request_count(), asked);
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("throttled")),
        "{status}"
    );
    assert!(
        status["next_sync"].as_f64().expect("next sync") > now_f64() + 3000.0,
        "{status}"
    );
    server.stop().await;

    // 429 works the same way.
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    fake.fail(
        Route::Stacks,
        None,
        Fault::TooManyRequests { retry_after: None },
        None,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, configured_a).await;
    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "failed", "{status}");
    assert_eq!(fake.request_count(), 1);
    assert_eq!(errors(&server.metrics().await, "throttled"), Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn the_request_budget_holds_and_a_cut_round_goes_on_in_the_next_window() {
    let fake = FakeCloud66::start().await;
    let uids = ["d1d1d1d1", "d2d2d2d2", "d3d3d3d3"];
    for (i, uid) in uids.iter().enumerate() {
        fake.add_stack(uid, &format!("Stack {i}"), "production");
        fake.set_certificates(uid, vec![cert(uid, &format!("c{i}.example.com"), 30.0)]);
    }
    let window = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, |c| {
        c.stack_ids = uids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.to_string(), format!("{}", 10 + i)))
            .collect();
        c.max_requests_per_hour = 3;
        c.budget_window = window;
    })
    .await;
    // Stack list, then two stacks: the third waits.
    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "partial", "{status}");
    assert_eq!(fake.request_count(), 3);
    assert_eq!(certificates(&server.metrics().await).len(), 2);
    let status = sync_now(&server).await;
    assert_eq!(status["last_result"], "failed", "{status}");
    assert_eq!(fake.request_count(), 3, "nothing past the budget");
    assert!(errors(&server.metrics().await, "budget") >= Some(2.0));
    // In the next window the round goes on where it stopped: the stack list and the
    // third stack complete it.
    tokio::time::sleep(window).await;
    let status = sync_now(&server).await;
    assert_eq!(status["last_result"], "ok", "{status}");
    assert_eq!(
        status["certificates"], 3,
        "the round's certificates, over both windows"
    );
    assert_eq!(fake.request_count(), 5);
    let listed: Vec<_> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(listed[4].contains(uids[2]), "{listed:?}");
    assert_eq!(certificates(&server.metrics().await).len(), 3);
    server.stop().await;
}

both_backends!(a_restart_in_the_middle_of_a_sync_loses_nothing);
async fn a_restart_in_the_middle_of_a_sync_loses_nothing(backend: Backend) {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_certificates(UID_B, vec![cert("b", "billing", 60.0)]);
    // Stack B's listing hangs; A's is committed meanwhile.
    fake.fail(
        Route::Certificates(UID_B.into()),
        None,
        Fault::Delay(Duration::from_secs(30)),
        None,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = |c: &mut Cloud66Config| {
        c.stack_ids = vec![
            (UID_A.to_owned(), "123".to_owned()),
            (UID_B.to_owned(), "456".to_owned()),
        ];
        c.request_timeout = Duration::from_secs(60);
    };
    let server = start_on(backend, dir.path(), &fake, ids).await;
    for _ in 0..200 {
        if days_left(&server.metrics().await, "123", "web").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        status(&server).await["running"] == true,
        "the sync is still waiting for B"
    );

    // After the restart, A's certificate is there before any sync: it was stored.
    let unreachable = FakeCloud66::start().await;
    unreachable.stop().await;
    let restarted = now_f64();
    let server = common::sync::restart(server, &unreachable, ids).await;
    let metrics = server.metrics().await;
    assert!(days_left(&metrics, "123", "web").is_some(), "{metrics}");
    let status = sync_started_since(&server, restarted).await;
    assert_eq!(status["last_result"], "failed");
    assert_eq!(errors(&server.metrics().await, "transport"), Some(1.0));

    // And the next sync completes the rest.
    fake.clear_faults();
    let restarted = now_f64();
    let server = common::sync::restart(server, &fake, ids).await;
    let status = sync_after_restart(&server, restarted).await;
    assert_eq!(status["last_result"], "ok", "{status}");
    assert_eq!(
        certificates(&server.metrics().await),
        pairs(&[("123", "web"), ("456", "billing")])
    );
    server.stop().await;
}

#[tokio::test]
async fn https_is_verified_and_the_token_never_follows_a_redirect_to_another_host() {
    let fake = FakeCloud66::start_https().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    let ca = fake.ca_pem().expect("an HTTPS fake has a CA");
    let roots: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes())
        .collect::<Result<_, _>>()
        .expect("CA PEM");
    // Trusted through --cloud66.api-ca-file's certificates.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, |c| {
        configured_a(c);
        c.extra_roots = roots;
    })
    .await;
    assert_eq!(first_sync(&server).await["last_result"], "ok");
    server.stop().await;
    // Not trusted by the system's roots alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, configured_a).await;
    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "failed", "{status}");
    assert_eq!(errors(&server.metrics().await, "transport"), Some(1.0));
    server.stop().await;

    // A redirect to another host (another port counts) is not followed.
    let plain = FakeCloud66::start().await;
    let elsewhere = FakeCloud66::start().await;
    one_stack(&plain, vec![]).await;
    plain.fail(
        Route::Stacks,
        None,
        Fault::Redirect(format!("{}/stacks.json", elsewhere.url())),
        None,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &plain, configured_a).await;
    let status = first_sync(&server).await;
    assert_eq!(status["last_result"], "failed", "{status}");
    assert_eq!(
        elsewhere.request_count(),
        0,
        "the other host saw nothing, token or not"
    );
    assert_eq!(plain.request_count(), 1, "a redirect is not retried");
    server.stop().await;
}

both_backends!(the_sync_endpoint_starts_a_sync_and_shows_its_status);
async fn the_sync_endpoint_starts_a_sync_and_shows_its_status(backend: Backend) {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_on(backend, dir.path(), &fake, configured_a).await;
    first_sync(&server).await;
    let post = |headers: &'static [(&'static str, &'static str)]| {
        request(server.addr, "POST", "/api/v1/sync", headers, "")
    };
    assert_eq!(post(&[]).await.status, 401);
    assert_eq!(
        post(&[("authorization", "Bearer wrong-token-0123456789")])
            .await
            .status,
        401
    );
    // A sync held up by a slow page: a second request is refused while it runs.
    fake.fail(
        Route::Certificates(UID_A.into()),
        None,
        Fault::Delay(Duration::from_millis(1500)),
        Some(1),
    );
    let query = format!("/api/v1/sync?token={TOKEN}");
    let started = request(server.addr, "POST", &query, &[], "").await;
    assert_eq!(
        (started.status, started.json()["status"].clone()),
        (202, json!("started"))
    );
    let again = common::sync::post_sync(server.addr).await;
    assert_eq!(again.status, 409, "{}", again.body);
    let running = status(&server).await;
    assert_eq!(running["running"], true);
    let done = common::sync::wait_until(&server, |s| {
        s["changed"] == 0 && s["last_started"] != running["last_finished"]
    })
    .await;
    assert_eq!(done["last_result"], "ok");
    assert_eq!(done["leader"], true, "a lone exporter runs its own syncs");
    assert_eq!(done["stacks"], 1);
    assert!(done["next_sync"].as_f64() > done["last_finished"].as_f64());
    assert_eq!(done["stacks_known"][0]["stack"], "123");
    assert_eq!(done["stacks_known"][0]["name"], "Awesome App");
    assert!(
        !done.to_string().contains(FAKE_TOKEN),
        "the API token is never shown"
    );
    let put = request(server.addr, "PUT", "/api/v1/sync", &[], "").await;
    assert_eq!(
        (put.status, put.header("allow")),
        (405, "GET, HEAD, POST".to_owned())
    );
    server.stop().await;

    // Without an API token there is no sync, and no sync metric.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on(backend, dir.path()).await;
    let reply = common::sync::post_sync(server.addr).await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("--cloud66.api-token"), "{}", reply.body);
    assert_eq!(
        request(server.addr, "GET", "/api/v1/sync", &[], "")
            .await
            .status,
        404
    );
    let metrics = server.metrics().await;
    for name in common::sync::SYNC_METRICS {
        assert!(!metrics.contains(name), "{name} without a token");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_sync_metric_is_emitted_with_a_token() {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &fake, |c| {
        c.sync_interval = Duration::from_secs(600)
    })
    .await;
    first_sync(&server).await;
    let metrics = server.metrics().await;
    for name in common::sync::SYNC_METRICS {
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with(&format!("{name}{{"))
                    || line.starts_with(&format!("{name} "))),
            "{name} missing:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_sync_interval_seconds"),
        Some(600.0)
    );
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_sync_duration_seconds_count"),
        Some(1.0)
    );
    server.stop().await;
}

both_backends!(changes_between_syncs_renewed_deleted_and_new_stacks_are_followed);
async fn changes_between_syncs_renewed_deleted_and_new_stacks_are_followed(backend: Backend) {
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 10.0), cert("o", "old", 10.0)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_on(backend, dir.path(), &fake, |c| {
        configured_a(c);
        c.forget_missing_after = 1;
    })
    .await;
    first_sync(&server).await;
    let renewed = in_days(90.0);
    fake.set_certificates(
        UID_A,
        vec![FakeCloud66::certificate(
            "w",
            "web",
            "web",
            json!(3),
            Some(&renewed),
            true,
        )],
    );
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_certificates(UID_B, vec![cert("b", "billing", 20.0)]);
    let status = sync_now(&server).await;
    assert_eq!(status["last_result"], "ok", "{status}");
    let metrics = server.metrics().await;
    assert_eq!(expiry(&metrics, "123", "web"), Some(unix(&renewed)));
    assert_eq!(
        certificates(&metrics),
        pairs(&[("123", "web"), (UID_B, "billing")])
    );
    server.stop().await;
}

/// Reads log lines into `seen` until one contains `until`, for at most 60 s.
async fn log_until(log: &mut Log, seen: &mut Vec<String>, until: &str) {
    let read = async {
        while let Some(line) = log.next_line().await.expect("read stderr") {
            let done = line.contains(until);
            seen.push(line);
            if done {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .is_err()
    {
        panic!("no {until:?} in 60 s: {seen:#?}");
    }
}

#[tokio::test]
async fn the_api_token_is_in_no_log_line() {
    const SECRET: &str = "c66-secret-api-token-never-logged-0123";
    let fake = FakeCloud66::start().await;
    one_stack(&fake, vec![cert("w", "web", 60.0)]).await;
    fake.set_token(SECRET);
    let other = FakeCloud66::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{SECRET}\n")).expect("token file");
    for args in [
        format!("--cloud66.api-token={SECRET}"),
        format!("--cloud66.api-token-file={}", token_file.display()),
    ] {
        // Everything that could carry it into a log, one sync each: a redirect to
        // another host, 5xx until the retries give up, a rejected token, and success.
        fake.clear_faults();
        fake.fail(
            Route::Stacks,
            None,
            Fault::Redirect(format!("{}/stacks.json", other.url())),
            Some(1),
        );
        fake.fail(Route::Stacks, None, Fault::Status(500), Some(4));
        fake.fail(Route::Stacks, None, Fault::Unauthorized, Some(1));
        let storage = tempfile::tempdir().expect("tempdir");
        let (webhook, api_url) = (
            format!("--webhook.token={TOKEN}"),
            format!("--cloud66.api-url={}", fake.url()),
        );
        let flags = [
            webhook.as_str(),
            api_url.as_str(),
            "--log.level=debug",
            args.as_str(),
        ];
        let (exporter, mut log, mut seen) = Exporter::spawn_logged(storage.path(), &flags).await;
        let addr = exporter.addr;
        for until in [
            "unexpected HTTP status 302",
            "unexpected HTTP status 500",
            "`public` scope",
            "Cloud66 API sync finished",
        ] {
            if until != "unexpected HTTP status 302" {
                let reply = loop {
                    let reply = common::sync::post_sync(addr).await;
                    if reply.status != 409 {
                        break reply;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                assert_eq!(reply.status, 202, "{}", reply.body);
            }
            log_until(&mut log, &mut seen, until).await;
        }
        exporter.kill().await;
        assert!(seen.iter().all(|line| !line.contains(SECRET)), "{seen:#?}");
        assert_eq!(other.request_count(), 0);
    }
}

#[tokio::test]
async fn observations_survive_kill_9_and_are_replayed() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.set_actions(UID_A, vec![FakeCloud66::stack_action(json!("283"))]);
    fake.set_certificates(UID_A, vec![cert("w", "web", 60.0), cert("x", "www", 20.0)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = [
        format!("--cloud66.api-token={FAKE_TOKEN}"),
        format!("--cloud66.api-url={}", fake.url()),
        format!("--webhook.token={TOKEN}"),
    ];
    let args: Vec<&str> = api.iter().map(String::as_str).collect();
    let exporter = Exporter::spawn(dir.path(), &args).await;
    // The moment the sync's observations are visible, they are committed; kill before
    // the rows are saved (two seconds after a change).
    let metrics = loop {
        let reply = request(exporter.addr, "GET", "/metrics", &[], "").await;
        if certificates(&reply.body).len() == 2 {
            break reply.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    exporter.kill().await;
    // Restarted without reaching the API: everything comes from the event log.
    let offline = [
        "--cloud66.api-token=whatever",
        "--cloud66.api-url=http://127.0.0.1:9/api/3",
    ];
    let exporter = Exporter::spawn(dir.path(), &offline).await;
    let after = request(exporter.addr, "GET", "/metrics", &[], "")
        .await
        .body;
    assert_eq!(
        certificates(&after),
        pairs(&[("283", "web"), ("283", "www")])
    );
    for name in ["web", "www"] {
        assert_eq!(
            expiry(&after, "283", name),
            expiry(&metrics, "283", name),
            "{name}"
        );
    }
    assert!(
        after.contains(r#"id_source="actions",stack="283""#),
        "the stack id too"
    );
    exporter.kill().await;
}

//! The read-only JSON API against the real server: `GET /api/v1/certificates` (fields,
//! sort, filters, paging), `GET /api/v1/certificates/<stack>/<name>` (detail and event
//! history), `GET /api/v1/status`, and every refusal.

mod common;

use common::{Backend, TOKEN, TestServer, both_backends, payload, request};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

const DAY: i64 = 86_400;
const OK: &str = "ssl_certificate.install.ok";
const FAIL: &str = "ssl_certificate.install.fail";

/// A name that must come back as data: markup, quotes, a slash, spaces, non-ASCII.
const HOSTILE: &str = "<script>alert(\"x\")</script> a/b ü";

fn date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An install event sent an hour ago, at `sent` seconds after that.
fn install(now: i64, sent: i64, stack: u64, name: &str, extra: Value) -> String {
    let kind = if extra.get("error_message").is_some() {
        FAIL
    } else {
        OK
    };
    payload(kind, now - 3600 + sent, stack, name, extra)
}

/// A server with one certificate in every state (stack 7), and the hostile name on
/// stack 8; returns the Unix time the expiries were computed from.
async fn seeded(backend: Backend) -> (tempfile::TempDir, TestServer, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on(backend, dir.path()).await;
    let now = chrono::Utc::now().timestamp();
    // Half a day on top, so whole days left do not change while the test runs.
    let expiring = |days: i64| json!({ "cert_expiry": date(now + days * DAY + DAY / 2) });
    let mut bodies = vec![
        install(now, 0, 7, "ok", expiring(60)),
        install(now, 0, 7, "warning", expiring(10)),
        install(now, 0, 7, "expired", expiring(-3)),
        install(
            now,
            0,
            7,
            "unknown",
            json!({ "server_names": "nothing.example.net" }),
        ),
        install(
            now,
            0,
            7,
            "critical",
            json!({ "cert_expiry": date(now + 3 * DAY + DAY / 2), "server_names": "crit.example.org" }),
        ),
        install(now, 0, 7, "failing", expiring(90)),
        install(
            now,
            10,
            7,
            "failing",
            json!({ "error_message": "DNS challenge timed out", "status": "failed" }),
        ),
        // Late: older than the failure, which keeps the install state.
        install(now, 5, 7, "failing", expiring(90)),
        install(now, 0, 8, HOSTILE, expiring(120)),
    ];
    for body in bodies.drain(..) {
        let reply = server.post_event(&body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    (dir, server, now)
}

/// `GET path`, which must answer `status`; the body as JSON, checked for the token.
async fn get(server: &TestServer, path: &str, status: u16) -> Value {
    let reply = request(server.addr, "GET", path, &[], "").await;
    assert_eq!(reply.status, status, "{path}: {}", reply.body);
    assert_eq!(reply.header("content-type"), "application/json", "{path}");
    assert!(!reply.body.contains(TOKEN), "{path} shows the token");
    reply.json()
}

fn names(list: &Value) -> Vec<String> {
    list["certificates"]
        .as_array()
        .expect("certificates array")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

fn encoded(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

both_backends!(the_list_sorts_by_time_left_and_shows_every_field);
async fn the_list_sorts_by_time_left_and_shows_every_field(backend: Backend) {
    let (_dir, server, now) = seeded(backend).await;
    let list = get(&server, "/api/v1/certificates", 200).await;
    assert_eq!(
        (list["total"].clone(), list["offset"].clone()),
        (json!(7), json!(0))
    );
    assert_eq!(list["limit"], Value::Null);
    assert_eq!(
        names(&list),
        [
            "expired", "critical", "warning", "ok", "failing", HOSTILE, "unknown"
        ]
    );
    let states: Vec<_> = list["certificates"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["state"].as_str().expect("state").to_owned())
        .collect();
    assert_eq!(
        states,
        [
            "expired", "critical", "warning", "ok", "failing", "ok", "unknown"
        ]
    );
    let critical = &list["certificates"][1];
    let expiry = now + 3 * DAY + DAY / 2;
    assert_eq!(critical["stack"], "7");
    assert_eq!(critical["stack_name"], Value::Null);
    assert_eq!(critical["domains"], json!(["crit.example.org"]));
    assert_eq!(critical["expiry"], date(expiry));
    assert_eq!(critical["expiry_unix"], expiry);
    assert_eq!(critical["days_left"], 3);
    assert_eq!(critical["lets_encrypt"], true);
    assert_eq!(critical["expiry_state"], "critical");
    assert_eq!(critical["last_event_at"], date(now - 3600));
    assert!(critical["last_event_age_seconds"].as_i64().expect("age") >= 3600);
    assert_eq!(
        critical["counters"],
        json!({"install_failures": 0, "install_successes": 1, "expire_soon_notifications": 0})
    );
    assert_eq!(list["certificates"][0]["days_left"], -3, "rounded down");
    let failing = &list["certificates"][4];
    assert_eq!(
        failing["expiry_state"], "ok",
        "the expiry class stays visible"
    );
    assert_eq!(failing["install_failing"], true);
    assert_eq!(failing["error_message"], "DNS challenge timed out");
    assert_eq!(failing["counters"]["install_successes"], 2);
    assert_eq!(list["certificates"][6]["expiry"], Value::Null);
    assert_eq!(list["certificates"][6]["days_left"], Value::Null);
    server.stop().await;
}

both_backends!(filters_and_paging_select_from_the_sorted_list);
async fn filters_and_paging_select_from_the_sorted_list(backend: Backend) {
    let (_dir, server, _) = seeded(backend).await;
    let list = |query: &str| {
        let path = format!("/api/v1/certificates?{query}");
        let server = &server;
        async move { get(server, &path, 200).await }
    };
    for state in ["expired", "critical", "warning", "failing", "unknown"] {
        assert_eq!(names(&list(&format!("state={state}")).await), [state]);
    }
    assert_eq!(names(&list("state=ok").await), ["ok", HOSTILE]);
    assert_eq!(names(&list("stack=8").await), [HOSTILE]);
    assert!(
        names(&list("stack=70").await).is_empty(),
        "exact stack only"
    );
    assert_eq!(names(&list("q=CRIT.example").await), ["critical"]);
    assert_eq!(names(&list("q=%3Cscript").await), [HOSTILE]);
    assert_eq!(
        names(&list("q=a%2Fb+%C3%BC").await),
        [HOSTILE],
        "+ is a space"
    );
    assert_eq!(
        names(&list("stack=7&state=ok&q=o").await),
        ["ok"],
        "filters combine"
    );
    let page = list("limit=2&offset=1").await;
    assert_eq!(names(&page), ["critical", "warning"]);
    assert_eq!(
        (page["total"].clone(), page["limit"].clone()),
        (json!(7), json!(2))
    );
    let past_the_end = list("offset=50").await;
    assert_eq!(
        (past_the_end["total"].clone(), names(&past_the_end).len()),
        (json!(7), 0)
    );
    assert!(names(&list("limit=0").await).is_empty());
    server.stop().await;
}

both_backends!(bad_parameters_are_400_and_methods_405);
async fn bad_parameters_are_400_and_methods_405(backend: Backend) {
    let (_dir, server, _) = seeded(backend).await;
    for query in [
        "state=bogus",
        "state=Expired",
        "limit=-1",
        "limit=ten",
        "limit=1.5",
        "offset=-3",
        "limit=1&limit=2",
        "nope=1",
    ] {
        let body = get(&server, &format!("/api/v1/certificates?{query}"), 400).await;
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    let body = get(&server, "/api/v1/certificates?state=bogus", 400).await;
    assert_eq!(
        body["error"],
        "state must be one of: expired, failing, critical, warning, ok, unknown"
    );
    // A token passed by habit is refused and not echoed (`get` checks every body).
    get(&server, &format!("/api/v1/certificates?token={TOKEN}"), 400).await;
    for query in ["history=-1", "history=x", "history=1001", "limit=1"] {
        get(&server, &format!("/api/v1/certificates/7/ok?{query}"), 400).await;
    }
    for (method, path, allow) in [
        ("POST", "/api/v1/certificates", "GET, HEAD"),
        ("PUT", "/api/v1/certificates/7/ok", "GET, HEAD, DELETE"),
        ("POST", "/api/v1/status", "GET, HEAD"),
    ] {
        let reply = request(server.addr, method, path, &[], "").await;
        assert_eq!(
            (reply.status, reply.header("allow")),
            (405, allow.to_owned())
        );
    }
    server.stop().await;
}

both_backends!(unknown_certificates_are_404_and_names_round_trip_as_data);
async fn unknown_certificates_are_404_and_names_round_trip_as_data(backend: Backend) {
    let (_dir, server, _) = seeded(backend).await;
    for path in [
        "/api/v1/certificates/7/nope",
        "/api/v1/certificates/9/ok",
        "/api/v1/certificates/7/no%20such%2Fcert",
        "/api/v1/certificates/7/",
        "/api/v1/certificates/7",
    ] {
        let body = get(&server, path, 404).await;
        assert_eq!(body, json!({"error": "not found"}), "{path}");
    }
    let path = format!("/api/v1/certificates/8/{}", encoded(HOSTILE));
    let detail = get(&server, &path, 200).await;
    assert_eq!(detail["certificate"]["name"], HOSTILE);
    assert_eq!(detail["history"]["events"][0]["event_type"], OK);
    // A bare slash after the stack belongs to the name, as for DELETE.
    let bare = get(
        &server,
        "/api/v1/certificates/8/%3Cscript%3Ealert(%22x%22)%3C/script%3E%20a/b%20%C3%BC",
        200,
    )
    .await;
    assert_eq!(bare["certificate"]["name"], HOSTILE);
    server.stop().await;
}

both_backends!(the_detail_shows_the_history_newest_first_with_late_events_flagged);
async fn the_detail_shows_the_history_newest_first_with_late_events_flagged(backend: Backend) {
    let (_dir, server, now) = seeded(backend).await;
    let detail = get(&server, "/api/v1/certificates/7/failing", 200).await;
    let cert = &detail["certificate"];
    assert_eq!(cert["state"], "failing");
    assert_eq!(cert["install_set_at"], date(now - 3600 + 10));
    assert_eq!(cert["expiry_set_at"], date(now - 3600 + 5));
    assert_eq!(cert["info_set_at"], date(now - 3600 + 10));
    let history = &detail["history"];
    assert_eq!(
        (history["limit"].clone(), history["total"].clone()),
        (json!(50), json!(3))
    );
    let summary: Vec<_> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().expect("type").to_owned(),
                e["event_unix"].as_f64().expect("time") as i64 - (now - 3600),
                e["changed_state"].as_bool().expect("changed"),
                e["out_of_order"].as_bool().expect("late"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (OK.to_owned(), 5, false, true),
            (FAIL.to_owned(), 10, true, false),
            (OK.to_owned(), 0, true, false),
        ],
        "newest (by arrival) first"
    );
    let failure = &history["events"][1];
    assert_eq!(failure["error_message"], "DNS challenge timed out");
    assert_eq!(failure["install_failing"], true);
    assert_eq!(failure["status"], "failed");
    assert_eq!(failure["source"], "webhook");
    assert!(failure["received_unix"].as_f64().expect("arrival") >= (now - 1) as f64);
    assert_eq!(
        history["events"][2]["expiry"],
        date(now + 90 * DAY + DAY / 2)
    );
    assert_eq!(
        history["events"][2]["domains"],
        json!(["example.com", "www.example.com"])
    );
    let newest = get(&server, "/api/v1/certificates/7/failing?history=1", 200).await;
    assert_eq!(newest["history"]["total"], 3);
    assert_eq!(
        newest["history"]["events"].as_array().map(Vec::len),
        Some(1)
    );
    let none = get(&server, "/api/v1/certificates/7/failing?history=0", 200).await;
    assert_eq!(none["history"]["events"], json!([]));
    server.stop().await;
}

both_backends!(status_says_what_runs_and_whether_storage_is_ready);
async fn status_says_what_runs_and_whether_storage_is_ready(backend: Backend) {
    let (_dir, server, now) = seeded(backend).await;
    let status = get(&server, "/api/v1/status", 200).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["revision"].is_string());
    assert_eq!(status["certificates"], 7);
    assert!(status["started_unix"].as_f64().expect("start") <= now as f64 + 1.0);
    assert!(status["started_at"].is_string());
    assert!(status["last_webhook_unix"].as_f64().expect("last webhook") >= (now - 1) as f64);
    assert!(status["last_webhook_at"].is_string());
    assert_eq!(status["storage"], json!({"ready": true, "error": null}));
    assert_eq!(status["sync"], Value::Null, "no API token configured");
    server.stop().await;
}

both_backends!(delete_still_needs_the_token_and_the_api_then_forgets);
async fn delete_still_needs_the_token_and_the_api_then_forgets(backend: Backend) {
    let (_dir, server, _) = seeded(backend).await;
    let path = format!("/api/v1/certificates/8/{}", encoded(HOSTILE));
    let refused = request(server.addr, "DELETE", &path, &[], "").await;
    assert_eq!(refused.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let deleted = request(
        server.addr,
        "DELETE",
        &path,
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    get(&server, &path, 404).await;
    let list = get(&server, "/api/v1/certificates", 200).await;
    assert_eq!(list["total"], 6);
    server.stop().await;
}

async fn a_certificate_known_only_from_the_api_is_listed_with_its_stack_name(backend: Backend) {
    use common::fake_cloud66::FakeCloud66;
    let fake = FakeCloud66::start().await;
    let uid = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    fake.add_stack(uid, "Awesome App", "production");
    fake.set_actions(uid, vec![FakeCloud66::stack_action(json!("777"))]);
    let expires = date(chrono::Utc::now().timestamp() + 5 * DAY + DAY / 2);
    fake.set_certificates(
        uid,
        vec![FakeCloud66::certificate(
            "u1",
            "api-only.example.com",
            "api-only.example.com,www.api-only.example.com",
            json!(3),
            Some(&expires),
            true,
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::sync::start_on(backend, dir.path(), &fake, |_| {}).await;
    common::sync::first_sync(&server).await;
    let reply = request(
        server.addr,
        "GET",
        "/api/v1/certificates?stack=awesome%20app",
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let list = reply.json();
    assert_eq!(list["total"], 1, "{list}");
    let cert = &list["certificates"][0];
    assert_eq!(
        (
            cert["stack"].clone(),
            cert["stack_name"].clone(),
            cert["name"].clone(),
            cert["state"].clone(),
            cert["days_left"].clone(),
            cert["expiry"].clone(),
        ),
        (
            json!("777"),
            json!("Awesome App"),
            json!("api-only.example.com"),
            json!("critical"),
            json!(5),
            json!(expires),
        )
    );
    assert_eq!(
        cert["domains"],
        json!(["api-only.example.com", "www.api-only.example.com"])
    );
    assert!(cert["observed_at"].is_string(), "{cert}");
    assert!(cert["last_event_at"].is_null(), "no webhook ever: {cert}");
    assert_eq!(cert["counters"]["install_successes"], 0);
    let detail = request(
        server.addr,
        "GET",
        "/api/v1/certificates/777/api-only.example.com",
        &[],
        "",
    )
    .await
    .json();
    let history = detail["history"]["events"]
        .as_array()
        .expect("history events");
    assert_eq!(history.len(), 1, "{detail}");
    assert_eq!(history[0]["source"], "api");
    assert_eq!(history[0]["changed_state"], true);
    server.stop().await;
}
both_backends!(a_certificate_known_only_from_the_api_is_listed_with_its_stack_name);

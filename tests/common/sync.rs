//! Driving Cloud66 API syncs of an in-process exporter against the fake API.

use std::collections::BTreeSet;
use std::time::Duration;

use cloud66_ssl_exporter::config::Cloud66Config;
use serde_json::Value;

use super::fake_cloud66::{FAKE_TOKEN, FakeCloud66};
use super::{Backend, Reply, TOKEN, TestServer, request};
use std::net::SocketAddr;

/// The Cloud66 API sync metrics, emitted only when an API token is configured
/// (`--cloud66.api-token`), so they are not in the golden exposition, which comes from an
/// exporter without one; a histogram is listed by its `_bucket`, `_sum` and `_count`.
/// Alerts and dashboards may use them too. tests/cloud66_sync.rs checks that an exporter
/// with a token emits every one of them and one without emits none.
pub const SYNC_METRICS: &[&str] = &[
    "cloud66_ssl_exporter_sync_last_success_timestamp_seconds",
    "cloud66_ssl_exporter_sync_interval_seconds",
    "cloud66_ssl_exporter_sync_duration_seconds_bucket",
    "cloud66_ssl_exporter_sync_duration_seconds_sum",
    "cloud66_ssl_exporter_sync_duration_seconds_count",
    "cloud66_ssl_exporter_sync_api_requests_total",
    "cloud66_ssl_exporter_sync_errors_total",
    "cloud66_ssl_exporter_sync_certificates",
    "cloud66_ssl_exporter_stack_info",
];

/// Reconciliation with `fake`, with short retries so that fault tests stay quick.
pub fn config(fake: &FakeCloud66) -> Cloud66Config {
    let mut config = Cloud66Config::new(FAKE_TOKEN, fake.url());
    config.retry_delay = Duration::from_millis(10);
    config.request_timeout = Duration::from_secs(5);
    config
}

/// Starts the exporter (with [`TOKEN`]) reconciling with `fake`, adjusted by `adjust`.
pub async fn start(
    dir: &std::path::Path,
    fake: &FakeCloud66,
    adjust: impl FnOnce(&mut Cloud66Config),
) -> TestServer {
    start_on(Backend::Sqlite, dir, fake, adjust).await
}

/// [`start`] on `backend`: with [`Backend::Postgres`], on a new database of its own
/// (`dir` is then only the unused storage path).
pub async fn start_on(
    backend: Backend,
    dir: &std::path::Path,
    fake: &FakeCloud66,
    adjust: impl FnOnce(&mut Cloud66Config),
) -> TestServer {
    let mut cloud66 = config(fake);
    adjust(&mut cloud66);
    TestServer::start_on_with(backend, dir, |config| {
        config.auth = cloud66_ssl_exporter::config::WebhookAuth::Token(TOKEN.into());
        config.cloud66 = Some(cloud66);
    })
    .await
}

/// Stops `server` and starts it again on the same storage (directory or PostgreSQL
/// database), now reconciling with `fake` adjusted by `adjust`.
pub async fn restart(
    server: TestServer,
    fake: &FakeCloud66,
    adjust: impl FnOnce(&mut Cloud66Config),
) -> TestServer {
    let mut cloud66 = config(fake);
    adjust(&mut cloud66);
    server
        .restart_with(|config| config.cloud66 = Some(cloud66))
        .await
}

/// `GET /api/v1/sync`.
pub async fn status(server: &TestServer) -> Value {
    let reply = request(server.addr, "GET", "/api/v1/sync", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// Waits (at most 60 s) until no sync runs and `done` holds for the status.
pub async fn wait_until(server: &TestServer, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1200 {
        let status = status(server).await;
        if status["running"] == false && done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no sync ended as expected within 60 s: {}",
        status(server).await
    );
}

/// Waits for the first sync (the one that starts with the server) to end.
pub async fn first_sync(server: &TestServer) -> Value {
    wait_until(server, |s| !s["last_finished"].is_null()).await
}

/// Waits for a sync that started at `since` (Unix seconds) or later to end: after a
/// restart, the new server's sync at start. [`first_sync`] would not do on PostgreSQL,
/// where the status shows the last sync the database shared (the previous server's)
/// until the new server has run one itself.
pub async fn sync_started_since(server: &TestServer, since: f64) -> Value {
    wait_until(server, |s| {
        s["last_started"].as_f64().is_some_and(|at| at >= since)
            && s["last_finished"].as_f64() >= s["last_started"].as_f64()
    })
    .await
}

/// Waits for the first sync of a server restarted at `since` (Unix seconds) to end. On
/// SQLite that is its sync at start. On PostgreSQL a restarted server keeps the schedule
/// the previous leader shared through the database (README, High availability: "taken
/// up by the next leader at the leader's schedule"), so it may not sync at start: once
/// it leads, it is asked for one.
pub async fn sync_after_restart(server: &TestServer, since: f64) -> Value {
    if server.backend == Backend::Postgres {
        leading(server).await;
        let reply = post_sync(server.addr).await;
        assert!(
            reply.status == 202 || reply.status == 409,
            "started, or its sync at start is running: {} {}",
            reply.status,
            reply.body
        );
    }
    sync_started_since(server, since).await
}

/// Waits (at most 60 s) until the server leads: until then, on PostgreSQL, a sync asked
/// for is passed on to a leader that may not exist yet.
pub async fn leading(server: &TestServer) {
    for _ in 0..1200 {
        if status(server).await["leader"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not the leader within 60 s: {}", status(server).await);
}

/// `POST /api/v1/sync` with the webhook token.
pub async fn post_sync(addr: SocketAddr) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    request(
        addr,
        "POST",
        "/api/v1/sync",
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// Starts a sync with `POST /api/v1/sync` once none runs, and waits until it ends.
pub async fn sync_now(server: &TestServer) -> Value {
    let before = first_sync(server).await["last_finished"].clone();
    let reply = post_sync(server.addr).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until(server, |s| s["last_finished"] != before).await
}

/// Stack uids the reconciliation tests use.
pub const UID_A: &str = "5999b763474b0eafa5fafb64bff0ba80";
pub const UID_B: &str = "a6b583684833a2cf4845079c9d9350a8";

/// An RFC 3339 date `days` from now.
pub fn in_days(days: f64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds((days * 86_400.0) as i64);
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A certificate object: installed (status 3) Let's Encrypt, expiring in `days`.
pub fn cert(uuid: &str, name: &str, days: f64) -> Value {
    FakeCloud66::certificate(
        uuid,
        name,
        name,
        serde_json::json!(3),
        Some(&in_days(days)),
        true,
    )
}

/// The (stack, name) of every certificate with an `ssl_cert_info` series.
pub fn certificates(metrics: &str) -> BTreeSet<(String, String)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("ssl_cert_info{stack=\""))
        .filter_map(|rest| {
            let (stack, rest) = rest.split_once("\",name=\"")?;
            let (name, _) = rest.split_once('"')?;
            Some((stack.to_owned(), name.to_owned()))
        })
        .collect()
}

/// `list` as a set of owned (stack, name).
pub fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect()
}

/// The `cloud66_ssl_exporter_stack_info` sample lines, sorted.
pub fn stack_info(metrics: &str) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .lines()
        .filter(|line| line.starts_with("cloud66_ssl_exporter_stack_info{"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

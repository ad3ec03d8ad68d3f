//! Driving Cloud66 API syncs of an in-process exporter against the fake API.

use std::time::Duration;

use cloud66_ssl_exporter::config::Cloud66Config;
use serde_json::Value;

use super::fake_cloud66::{FAKE_TOKEN, FakeCloud66};
use super::{Reply, TOKEN, TestServer, request};
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
    let mut cloud66 = config(fake);
    adjust(&mut cloud66);
    TestServer::start_with(dir, |config| {
        config.auth = cloud66_ssl_exporter::config::WebhookAuth::Token(TOKEN.into());
        config.cloud66 = Some(cloud66);
    })
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

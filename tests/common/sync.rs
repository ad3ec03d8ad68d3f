//! Driving Cloud66 API syncs of an in-process exporter against the fake API.

use std::time::Duration;

use cloud66_ssl_exporter::config::Cloud66Config;
use serde_json::Value;

use super::fake_cloud66::{FAKE_TOKEN, FakeCloud66};
use super::{TOKEN, TestServer, request};

/// Reconciliation with `fake`, with short retries so that fault tests stay quick.
pub fn config(fake: &FakeCloud66) -> Cloud66Config {
    let mut config = Cloud66Config::new(FAKE_TOKEN, fake.url());
    config.retry_delay = Duration::from_millis(10);
    config.request_timeout = Duration::from_secs(5);
    config
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

/// Starts a sync with `POST /api/v1/sync` once none runs, and waits until it ends.
pub async fn sync_now(server: &TestServer) -> Value {
    let before = first_sync(server).await["last_finished"].clone();
    let auth = format!("Bearer {TOKEN}");
    let reply = request(
        server.addr,
        "POST",
        "/api/v1/sync",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until(server, |s| s["last_finished"] != before).await
}

//! The Cloud66 API sync with replicas on one PostgreSQL database (tests/common/postgres.rs)
//! and the fake API (tests/common/fake_cloud66.rs): one replica, elected through
//! PostgreSQL, calls the API; every replica shows what it found, the leader's sync
//! status, and the stacks it resolved; a sync asked of a follower runs on the leader;
//! when the leader stops or is killed, a follower takes over.
//!
//! Every wait polls with a deadline; nothing here measures speed.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloud66_ssl_exporter::config::{PostgresConfig, WebhookAuth};
use common::fake_cloud66::{FAKE_TOKEN, FakeCloud66, Fault, Route};
use common::sync::{UID_A, UID_B, cert, certificates, in_days, pairs, post_sync, stack_info};
use common::{
    Database, Exporter, TOKEN, TestServer, cert_series, certificate_series, payload, request,
    sample,
};
use serde_json::{Value, json};

/// How long replicas may take to agree on what the database holds (the tail reads every
/// 500 ms, the followers read the leader's status every 500 ms).
const CONVERGE: Duration = Duration::from_secs(20);

/// How long a follower may take to lead once the leader is gone (it tries every second).
const TAKEOVER: Duration = Duration::from_secs(20);

/// An exporter on database `url`, with the test token, reconciling with `fake` (the
/// settings of `common::sync::config`: syncs every hour, so only the first one and those
/// asked for run during a test).
async fn replica(url: &str, fake: &FakeCloud66) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = PostgresConfig::from_url(url).expect("valid URL");
    let cloud66 = common::sync::config(fake);
    let server = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.postgres = Some(postgres);
        c.cloud66 = Some(cloud66);
    })
    .await;
    (dir, server)
}

/// Polls `probe` every 50 ms until it gives a value; after `within`, fails saying what
/// was awaited and what the last probe saw.
async fn eventually<T, F>(what: &str, within: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `GET /api/v1/sync` of the exporter at `addr`: the parsed body, and the body as sent
/// (see [`raw_field`]).
async fn sync_status(addr: SocketAddr) -> (Value, String) {
    let reply = request(addr, "GET", "/api/v1/sync", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    (reply.json(), reply.body)
}

/// The value of top-level field `key` in a JSON object as the exporter wrote it. Times
/// are compared as written: two replicas showing the same time write the same digits,
/// and the comparison does not depend on how this test parses floating point.
fn raw_field(body: &str, key: &str) -> String {
    let start = body
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        + key.len()
        + 3;
    let rest = &body[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// A hint for failure messages: when field `key` differs between two status bodies
/// only in digits below a microsecond (a time that did not survive a JSON round trip
/// exactly), says so.
fn digits_only(a: &str, b: &str, key: &str) -> String {
    let (x, y) = (raw_field(a, key), raw_field(b, key));
    match (x.parse::<f64>(), y.parse::<f64>()) {
        (Ok(p), Ok(q)) if x != y && (p - q).abs() < 1e-6 => format!(
            "\n({key} differs only below a microsecond, {x} against {y}: the time did not \
             survive the JSON round trip through the database exactly)"
        ),
        _ => String::new(),
    }
}

/// The `/metrics` body of the exporter at `addr`.
async fn metrics_at(addr: SocketAddr) -> String {
    let reply = request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// Cloud66 API requests the exporter made: `sync_api_requests_total` summed over labels.
fn api_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("cloud66_ssl_exporter_sync_api_requests_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The sample line of `name` (a metric without labels), as written.
fn line_of(metrics: &str, name: &str) -> Option<String> {
    metrics
        .lines()
        .find(|line| line.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .map(str::to_owned)
}

/// Waits until exactly one of `replicas` says it leads and has finished a sync; returns
/// its index. Two replicas never say they lead at once.
async fn leader_among(replicas: &[SocketAddr]) -> usize {
    eventually("one leader that finished a sync", CONVERGE, || async {
        let mut statuses = Vec::new();
        for addr in replicas {
            statuses.push(sync_status(*addr).await);
        }
        let leaders: Vec<usize> = (0..statuses.len())
            .filter(|&index| statuses[index].0["leader"] == true)
            .collect();
        let bodies: Vec<&str> = statuses.iter().map(|(_, body)| body.as_str()).collect();
        assert!(leaders.len() <= 1, "two leaders at once: {bodies:#?}");
        match leaders[..] {
            [leader]
                if statuses[leader].0["running"] == false
                    && !statuses[leader].0["last_finished"].is_null() =>
            {
                Ok(leader)
            }
            _ => Err(format!("{bodies:#?}")),
        }
    })
    .await
}

/// Waits until `follower` shows the last sync of `leader` (the same `last_finished`,
/// as written) and says it does not lead; returns the follower's status body.
async fn mirrors(follower: SocketAddr, leader: SocketAddr) -> String {
    eventually("the follower shows the leader's sync", CONVERGE, || async {
        let (leading, leader_body) = sync_status(leader).await;
        let (following, follower_body) = sync_status(follower).await;
        let same =
            raw_field(&leader_body, "last_finished") == raw_field(&follower_body, "last_finished");
        if same
            && leading["leader"] == true
            && leading["running"] == false
            && following["leader"] == false
            && following["running"] == false
        {
            Ok(follower_body)
        } else {
            Err(format!(
                "leader {leader_body}\nfollower {follower_body}{}",
                digits_only(&leader_body, &follower_body, "last_finished")
            ))
        }
    })
    .await
}

/// Waits until both exporters serve the same per-certificate series (without days left)
/// and the certificates are `expected`.
async fn same_certificates(a: SocketAddr, b: SocketAddr, expected: &BTreeSet<(String, String)>) {
    eventually(
        "both replicas show the same certificates",
        CONVERGE,
        || async {
            let (ma, mb) = (metrics_at(a).await, metrics_at(b).await);
            let (sa, sb) = (certificate_series(&ma), certificate_series(&mb));
            if &certificates(&ma) == expected && sa == sb {
                Ok(())
            } else {
                Err(format!(
                    "expected {expected:?}\n{a}: {:?}\n{b}: {:?}\nseries differ: {:?}",
                    certificates(&ma),
                    certificates(&mb),
                    sa.iter()
                        .filter(|line| !sb.contains(line))
                        .chain(sb.iter().filter(|line| !sa.contains(line)))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Waits until the exporter at `addr` has finished a sync other than the one that
/// finished at `before` (as written); returns its status.
async fn synced_after(addr: SocketAddr, before: &str) -> Value {
    eventually("a new sync finished", CONVERGE, || async {
        let (status, body) = sync_status(addr).await;
        if status["running"] == false && raw_field(&body, "last_finished") != before {
            Ok(status)
        } else {
            Err(body)
        }
    })
    .await
}

/// Two replicas reconciling with `fake` on a new database, once one of them leads:
/// the database, and (leader, follower), each with its storage directory.
async fn two_replicas(fake: &FakeCloud66) -> (Database, [(tempfile::TempDir, TestServer); 2]) {
    let database = Database::create().await;
    let a = replica(&database.url, fake).await;
    let b = replica(&database.url, fake).await;
    let pair = if leader_among(&[a.1.addr, b.1.addr]).await == 0 {
        [a, b]
    } else {
        [b, a]
    };
    (database, pair)
}

/// Stack A (webhook id 283 from its actions) with one certificate, app.example.com.
fn stack_a_with_one_certificate(fake: &FakeCloud66) {
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.set_actions(UID_A, vec![FakeCloud66::stack_action(json!("283"))]);
    fake.set_certificates(UID_A, vec![cert("a1", "app.example.com", 30.0)]);
}

/// Waits until `successor` leads after the leader went away, then checks that it runs
/// the syncs itself: asked, with its own requests, learning a certificate added to
/// stack A (283) since the last sync, which ended at `before`.
async fn takes_over_and_syncs(successor: &TestServer, fake: &FakeCloud66, before: &str) {
    eventually("the follower leads", TAKEOVER, || async {
        let (status, body) = sync_status(successor.addr).await;
        (status["leader"] == true).then_some(()).ok_or(body)
    })
    .await;
    fake.add_certificate(UID_A, cert("n1", "new.example.com", 90.0));
    let requests_before = fake.request_count();
    let reply = post_sync(successor.addr).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let after = synced_after(successor.addr, before).await;
    assert_eq!(after["leader"], true, "{after}");
    assert_eq!(after["last_result"], "ok", "{after}");
    assert!(fake.request_count() > requests_before);
    let metrics = successor.metrics().await;
    assert_eq!(
        api_requests(&metrics),
        fake.request_count() as f64 - requests_before as f64
    );
    assert_eq!(
        certificates(&metrics),
        pairs(&[("283", "app.example.com"), ("283", "new.example.com")])
    );
}

#[tokio::test]
async fn one_elected_replica_calls_the_api_and_every_replica_shows_its_sync() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.set_actions(UID_A, vec![FakeCloud66::stack_action(json!("283"))]);
    fake.set_certificates(
        UID_A,
        vec![
            cert("a1", "app.example.com", 30.0),
            cert("a2", "api.example.com", 60.0),
        ],
    );
    fake.add_stack(UID_B, "Billing API", "staging");
    fake.set_certificates(UID_B, vec![cert("b1", "billing.example.com", 40.0)]);
    let (_database, [(_a_dir, a), (_b_dir, b)]) = two_replicas(&fake).await;
    let (leader, follower) = (&a, &b);
    let expected = pairs(&[
        ("283", "app.example.com"),
        ("283", "api.example.com"),
        (UID_B, "billing.example.com"),
    ]);
    same_certificates(leader.addr, follower.addr, &expected).await;
    let follower_body = mirrors(follower.addr, leader.addr).await;
    let (leader_status, leader_body) = sync_status(leader.addr).await;
    let follower_status: Value = serde_json::from_str(&follower_body).expect("JSON");
    assert_eq!(leader_status["last_result"], "ok", "{leader_body}");
    assert_eq!(follower_status["last_result"], "ok", "{follower_body}");
    assert_eq!(
        raw_field(&follower_body, "last_success"),
        raw_field(&leader_body, "last_success"),
        "the follower shows the leader's last success\nleader {leader_body}\nfollower {follower_body}"
    );
    assert_eq!(follower_status["certificates"], 3);
    assert_eq!(
        follower_status["stacks_known"], leader_status["stacks_known"],
        "both know the same stacks"
    );

    let leader_metrics = leader.metrics().await;
    let follower_metrics = follower.metrics().await;
    assert!(api_requests(&leader_metrics) > 0.0, "{leader_metrics}");
    assert_eq!(
        api_requests(&leader_metrics),
        fake.request_count() as f64,
        "the leader made every request the API saw"
    );
    assert_eq!(
        api_requests(&follower_metrics),
        0.0,
        "the follower never calls the API"
    );
    let stacks = stack_info(&leader_metrics);
    assert_eq!(stacks.len(), 2, "{stacks:#?}");
    assert_eq!(stack_info(&follower_metrics), stacks);
    for name in [
        "cloud66_ssl_exporter_sync_certificates",
        "cloud66_ssl_exporter_sync_last_success_timestamp_seconds",
    ] {
        let line = line_of(&leader_metrics, name);
        assert!(line.is_some(), "{name} on the leader");
        assert_eq!(
            line_of(&follower_metrics, name),
            line,
            "the follower mirrors {name} (the leader's sync status says last_success {})",
            raw_field(&leader_body, "last_success")
        );
    }
    assert_eq!(
        sample(&follower_metrics, "cloud66_ssl_exporter_sync_certificates"),
        Some(3.0)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_sync_asked_of_a_follower_runs_on_the_leader() {
    let fake = FakeCloud66::start().await;
    stack_a_with_one_certificate(&fake);
    let (_database, [(_a_dir, a), (_b_dir, b)]) = two_replicas(&fake).await;
    let (leader, follower) = (&a, &b);
    mirrors(follower.addr, leader.addr).await;
    let (_, leader_body) = sync_status(leader.addr).await;
    let before = raw_field(&leader_body, "last_finished");
    let requests_before = fake.request_count();

    fake.add_certificate(UID_A, cert("n1", "new.example.com", 90.0));
    let reply = post_sync(follower.addr).await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (202, json!("started")),
        "{}",
        reply.body
    );
    let after = synced_after(leader.addr, &before).await;
    assert_eq!(after["last_result"], "ok", "{after}");
    assert!(
        fake.request_count() > requests_before,
        "the leader called the API again"
    );
    let expected = pairs(&[("283", "app.example.com"), ("283", "new.example.com")]);
    same_certificates(leader.addr, follower.addr, &expected).await;
    mirrors(follower.addr, leader.addr).await;
    let (_, follower_body) = sync_status(follower.addr).await;
    assert_ne!(raw_field(&follower_body, "last_finished"), before);
    assert_eq!(api_requests(&follower.metrics().await), 0.0);
    assert_eq!(
        api_requests(&leader.metrics().await),
        fake.request_count() as f64
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn when_the_leader_stops_a_follower_takes_over_and_the_restarted_one_follows() {
    let fake = FakeCloud66::start().await;
    stack_a_with_one_certificate(&fake);
    let (database, [(_a_dir, leader), (_b_dir, follower)]) = two_replicas(&fake).await;
    mirrors(follower.addr, leader.addr).await;
    let (_, body) = sync_status(follower.addr).await;
    let before = raw_field(&body, "last_finished");

    leader.stop().await;
    let successor = follower;
    takes_over_and_syncs(&successor, &fake, &before).await;

    // Started again on the database, the old leader follows.
    let (_c_dir, restarted) = replica(&database.url, &fake).await;
    mirrors(restarted.addr, successor.addr).await;
    assert_eq!(leader_among(&[successor.addr, restarted.addr]).await, 0);
    assert_eq!(api_requests(&restarted.metrics().await), 0.0);
    same_certificates(
        successor.addr,
        restarted.addr,
        &pairs(&[("283", "app.example.com"), ("283", "new.example.com")]),
    )
    .await;
    successor.stop().await;
    restarted.stop().await;
}

#[tokio::test]
async fn when_the_leader_is_killed_a_follower_takes_over() {
    let fake = FakeCloud66::start().await;
    stack_a_with_one_certificate(&fake);
    let database = Database::create().await;
    // The leader is the binary, started first and killed with SIGKILL: no graceful
    // stop releases the lock, only the end of its connection.
    let api_url = format!("--cloud66.api-url={}", fake.url());
    let api_token = format!("--cloud66.api-token={FAKE_TOKEN}");
    let webhook_token = format!("--webhook.token={TOKEN}");
    let args = [
        "--storage.postgres.url",
        database.url.as_str(),
        webhook_token.as_str(),
        api_token.as_str(),
        api_url.as_str(),
    ];
    let killed = Exporter::spawn_with_storage_args(&args).await;
    assert_eq!(leader_among(&[killed.addr]).await, 0);
    let (_dir, survivor) = replica(&database.url, &fake).await;
    mirrors(survivor.addr, killed.addr).await;
    let (_, body) = sync_status(survivor.addr).await;
    let before = raw_field(&body, "last_finished");
    assert_eq!(api_requests(&survivor.metrics().await), 0.0);

    killed.kill().await;
    takes_over_and_syncs(&survivor, &fake, &before).await;
    survivor.stop().await;
}

#[tokio::test]
async fn a_resolved_stack_id_moves_its_certificates_on_every_replica() {
    let fake = FakeCloud66::start().await;
    let by_actions = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
    let by_match = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    fake.add_stack(by_actions, "By actions", "production");
    fake.add_stack(by_match, "By match", "production");
    fake.set_certificates(by_actions, vec![cert("w", "web", 50.0)]);
    fake.set_certificates(
        by_match,
        vec![FakeCloud66::certificate(
            "s",
            "shop",
            "shop.example.com,www.shop.example.com",
            json!(3),
            Some(&in_days(50.0)),
            true,
        )],
    );
    // Its actions cannot be read at first: its id stays unknown, and is looked up again
    // at the next sync.
    fake.fail(
        Route::Actions(by_actions.into()),
        None,
        Fault::Status(500),
        None,
    );
    let (_database, [(_a_dir, a), (_b_dir, b)]) = two_replicas(&fake).await;
    let (leader, follower) = (&a, &b);
    same_certificates(
        leader.addr,
        follower.addr,
        &pairs(&[(by_actions, "web"), (by_match, "shop")]),
    )
    .await;
    mirrors(follower.addr, leader.addr).await;

    // Webhooks, to the follower, for the stacks' ids: 444 (the id the actions will
    // give) and 333 (whose certificate matches the API's `shop` only).
    let now = chrono::Utc::now().timestamp();
    for (stack, name, extra) in [
        (444, "web", json!({})),
        (
            333,
            "shop",
            json!({"server_names": "www.shop.example.com, shop.example.com"}),
        ),
    ] {
        let body = payload("ssl_certificate.install.ok", now - 60, stack, name, extra);
        assert_eq!(follower.post_event(&body).await.status, 200);
    }
    let successes =
        |stack: &str, name: &str| cert_series("ssl_install_successes_total", stack, name);
    eventually("the leader has the webhooks", CONVERGE, || async {
        let metrics = leader.metrics().await;
        let seen = (
            sample(&metrics, &successes("444", "web")),
            sample(&metrics, &successes("333", "shop")),
        );
        (seen == (Some(1.0), Some(1.0)))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;

    fake.clear_faults();
    fake.set_actions(by_actions, vec![FakeCloud66::stack_action(json!(444))]);
    let (_, body) = sync_status(leader.addr).await;
    let before = raw_field(&body, "last_finished");
    let reply = post_sync(follower.addr).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let after = synced_after(leader.addr, &before).await;
    assert_eq!(after["last_result"], "ok", "{after}");

    // On both: one series per certificate, under the id; counted once.
    same_certificates(
        leader.addr,
        follower.addr,
        &pairs(&[("444", "web"), ("333", "shop")]),
    )
    .await;
    eventually("both show the same stacks", CONVERGE, || async {
        let (ma, mb) = (leader.metrics().await, follower.metrics().await);
        let (sa, sb) = (
            sync_status(leader.addr).await.0,
            sync_status(follower.addr).await.0,
        );
        if stack_info(&ma) == stack_info(&mb) && sa["stacks_known"] == sb["stacks_known"] {
            Ok(())
        } else {
            Err(format!(
                "{:#?}\n{:#?}\n{}\n{}",
                stack_info(&ma),
                stack_info(&mb),
                sa["stacks_known"],
                sb["stacks_known"]
            ))
        }
    })
    .await;
    for replica in [leader, follower] {
        let metrics = replica.metrics().await;
        for uid in [by_actions, by_match] {
            let label = format!("stack=\"{uid}\"");
            let left: Vec<&str> = metrics
                .lines()
                .filter(|line| line.starts_with("ssl_") && line.contains(&label))
                .collect();
            assert!(left.is_empty(), "series left under the uid: {left:#?}");
        }
        for (stack, name) in [("444", "web"), ("333", "shop")] {
            assert_eq!(
                sample(&metrics, &successes(stack, name)),
                Some(1.0),
                "{stack}/{name} counted once on {}",
                replica.addr
            );
            assert!(
                sample(
                    &metrics,
                    &cert_series("ssl_cert_expiry_timestamp_seconds", stack, name)
                )
                .is_some(),
                "the API's expiry kept for {stack}/{name}"
            );
        }
        for (stack, uid, source) in [("444", by_actions, "actions"), ("333", by_match, "matched")] {
            assert!(
                stack_info(&metrics).iter().any(|line| line
                    .contains(&format!(r#"id_source="{source}",stack="{stack}","#))
                    && line.contains(&format!(r#"stack_uid="{uid}""#))),
                "{source}: {:#?}",
                stack_info(&metrics)
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

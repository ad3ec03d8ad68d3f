//! PostgreSQL storage when PostgreSQL or a replica fails under load, each test on a
//! server of its own (tests/common/postgres.rs): the promise is that a webhook answered
//! 2xx is committed, whatever happens after; that a webhook the database could not take
//! within the retry window is answered 503, never anything else; and that the exporter
//! recovers by itself once the database is back.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloud66_ssl_exporter::config::{PostgresConfig, WebhookAuth};
use common::postgres::PgServer;
use common::{Exporter, Load, TOKEN, TestServer, cert_series, payload, request, sample};
use common::{missing, try_request};
use serde_json::json;

const OK: &str = "ssl_certificate.install.ok";

/// The database every test here uses (on its own server).
const DATABASE: &str = "faults";

/// The stack the load's certificates are on.
const STACK: u64 = 21;

/// The longest any single wait of these tests may take.
const WAIT: Duration = Duration::from_secs(30);

/// An in-process exporter on database `url` with the test token, retrying writes for
/// `retry_window` (the default without one).
async fn replica(url: &str, retry_window: Option<Duration>) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = PostgresConfig::from_url(url).expect("valid URL");
    if let Some(window) = retry_window {
        config.retry_window = window;
    }
    let server = TestServer::start_with(dir.path(), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.postgres = Some(config);
    })
    .await;
    (dir, server)
}

/// One webhook of the load and how it was answered.
#[derive(Clone, Debug)]
struct Answer {
    /// The certificate, unique to this webhook.
    name: String,
    /// The status, or `None` if the request failed (connection reset, ...).
    status: Option<u16>,
    /// The `status` field of the body (`accepted`, `duplicate`), if any.
    outcome: String,
    /// When it was sent.
    sent: Instant,
    /// How long the answer took.
    took: Duration,
}

/// Concurrent clients posting unique `install.ok` webhooks (certificate
/// `<prefix>-c<client>-s<seq>` on [`STACK`]) to an in-process exporter until stopped,
/// whatever the answers; every answer is kept. Unlike [`Load`], a client goes on after
/// a 503 or a transport error.
struct Posts {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: tokio::sync::watch::Sender<bool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Posts {
    fn start(addr: SocketAddr, clients: usize, prefix: &str) -> Posts {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let clients = (0..clients)
            .map(|client| {
                let answers = Arc::clone(&answers);
                let stopped = stopped.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    for seq in 0..100_000 {
                        if *stopped.borrow() {
                            break;
                        }
                        let name = format!("{prefix}-c{client}-s{seq}");
                        let body = payload(OK, 1_700_000_000, STACK, &name, json!({}));
                        let sent = Instant::now();
                        let path = format!("/webhook/{TOKEN}");
                        let reply = try_request(addr, "POST", &path, &[], body.into_bytes()).await;
                        let took = sent.elapsed();
                        let (status, outcome) = match reply {
                            Ok(reply) => {
                                let outcome =
                                    serde_json::from_str::<serde_json::Value>(&reply.body)
                                        .ok()
                                        .and_then(|v| v["status"].as_str().map(str::to_owned))
                                        .unwrap_or_default();
                                (Some(reply.status), outcome)
                            }
                            Err(e) => (None, e.to_string()),
                        };
                        answers.lock().unwrap().push(Answer {
                            name,
                            status,
                            outcome,
                            sent,
                            took,
                        });
                        if status != Some(200) {
                            // Do not spin while the database is down.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Posts {
            answers,
            stop,
            clients,
        }
    }

    /// How many webhooks sent at or after `since` were answered 200.
    fn acknowledged_since(&self, since: Instant) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.status == Some(200) && a.sent >= since)
            .count()
    }

    /// Waits (at most [`WAIT`]) until `count` webhooks sent at or after `since` were
    /// answered 200.
    async fn wait_for_acknowledged(&self, since: Instant, count: usize) {
        let reached = tokio::time::timeout(WAIT, async {
            while self.acknowledged_since(since) < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "fewer than {count} webhooks acknowledged within {WAIT:?}: {}",
            self.acknowledged_since(since)
        );
    }

    /// Stops the clients and waits (at most [`WAIT`]) for the answers in flight.
    async fn finish(self) -> Vec<Answer> {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, async {
            for client in self.clients {
                client.await.expect("client task");
            }
        })
        .await
        .expect("every webhook in flight is answered");
        self.answers.lock().unwrap().clone()
    }
}

/// The names of the certificates stored on [`STACK`], from the database itself.
async fn stored_names(pg: &PgServer) -> BTreeSet<String> {
    pg.sql(
        DATABASE,
        &format!("SELECT name FROM cloud66_ssl_exporter_events WHERE stack = '{STACK}'"),
    )
    .await
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The `/metrics` body of the exporter at `addr`.
async fn metrics(addr: SocketAddr) -> String {
    let reply = request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// Waits (at most [`WAIT`]) until the exporter at `addr` counts exactly the certificates
/// in `stored` once each, and none of the others in `sent`; panics naming those that
/// differ.
async fn wait_until_counted(addr: SocketAddr, stored: &BTreeSet<String>, sent: &[Answer]) {
    let stack = STACK.to_string();
    let wrong = |metrics: &str| -> Vec<String> {
        sent.iter()
            .filter_map(|a| {
                let series = cert_series("ssl_install_successes_total", &stack, &a.name);
                let counted = sample(metrics, &series);
                let expected = stored.contains(&a.name).then_some(1.0);
                (counted != expected).then(|| format!("{}: {counted:?}", a.name))
            })
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let wrong = wrong(&metrics(addr).await);
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} certificates not counted as stored: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /readyz`: its status.
async fn readyz(addr: SocketAddr) -> u16 {
    request(addr, "GET", "/readyz", &[], "").await.status
}

/// Waits (at most [`WAIT`]) until `/readyz` answers 200.
async fn wait_until_ready(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while readyz(addr).await != 200 {
        assert!(Instant::now() < deadline, "/readyz not 200 within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new webhook is accepted and counted at once.
async fn accepts_a_new_webhook(server: &TestServer, name: &str) {
    let body = payload(OK, 1_700_000_500, STACK, name, json!({}));
    let reply = server.post_event(&body).await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, json!("accepted")),
        "{}",
        reply.body
    );
    let series = cert_series("ssl_install_successes_total", &STACK.to_string(), name);
    assert_eq!(sample(&server.metrics().await, &series), Some(1.0));
}

/// How PostgreSQL goes away.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `pg_ctl stop -m fast`: sessions terminated (57P01), a checkpoint.
    Fast,
    /// `pg_ctl stop -m immediate`: no checkpoint; the next start recovers from WAL.
    Immediate,
    /// SIGKILL to the postmaster: a crash.
    Kill,
}

/// PostgreSQL goes away by `fault` and is started again while 8 clients post webhooks
/// to an exporter with the default retry window: every webhook is answered 200 or 503,
/// every one answered 200 is in the database and counted, and the exporter takes
/// webhooks again without a restart.
async fn restart_under_load(fault: Fault) {
    let pg = PgServer::start().await;
    let url = pg.create_database(DATABASE).await;
    let (_dir, server) = replica(&url, None).await;
    let start = Instant::now();
    let posts = Posts::start(server.addr, 8, "load");
    posts.wait_for_acknowledged(start, 100).await;

    let down = Instant::now();
    let status = match fault {
        Fault::Fast => pg.stop_fast().await,
        Fault::Immediate => pg.stop_immediate().await,
        Fault::Kill => pg.kill().await,
    };
    let stopped_after = down.elapsed();
    pg.start_again().await;
    let up = Instant::now();
    posts.wait_for_acknowledged(up, 100).await;
    let answers = posts.finish().await;

    let unexpected: Vec<&Answer> = answers
        .iter()
        .filter(|a| !matches!(a.status, Some(200 | 503)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{fault:?}: answers other than 200 and 503: {unexpected:#?}"
    );
    let acknowledged: BTreeSet<String> = answers
        .iter()
        .filter(|a| a.status == Some(200))
        .map(|a| a.name.clone())
        .collect();
    let stored = stored_names(&pg).await;
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{fault:?}: {} webhooks answered 200 are not in the database: {lost:?}",
        lost.len()
    );
    wait_until_counted(server.addr, &stored, &answers).await;

    // What the outage looked like (`--nocapture` shows it).
    let refused = answers.iter().filter(|a| a.status == Some(503)).count();
    let in_doubt = answers
        .iter()
        .filter(|a| a.status == Some(200) && a.outcome == "duplicate")
        .count();
    let slowest = answers
        .iter()
        .filter(|a| a.status == Some(200))
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    let stored_refused = answers
        .iter()
        .filter(|a| a.status == Some(503) && stored.contains(&a.name))
        .count();
    eprintln!(
        "{fault:?}: server exit {status}, stopped in {stopped_after:?}, back after {:?}; \
         {} webhooks: {} answered 200 ({in_doubt} of them `duplicate`: committed by a try \
         whose answer was lost), {refused} answered 503 ({stored_refused} of those stored); \
         slowest 200 took {slowest:?}",
        up - down,
        answers.len(),
        acknowledged.len(),
    );

    accepts_a_new_webhook(&server, &format!("after-{fault:?}")).await;
    assert_eq!(readyz(server.addr).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_fast_restart_under_load_loses_no_acknowledged_webhook() {
    restart_under_load(Fault::Fast).await;
}

#[tokio::test]
async fn an_immediate_restart_under_load_loses_no_acknowledged_webhook() {
    restart_under_load(Fault::Immediate).await;
}

#[tokio::test]
async fn a_crash_under_load_loses_no_acknowledged_webhook() {
    restart_under_load(Fault::Kill).await;
}

/// PostgreSQL stays down longer than the retry window (shortened to 2 s): webhooks and
/// `/readyz` are answered 503, none of those webhooks is stored or counted; once
/// PostgreSQL is back, `/readyz` and webhooks are 200 again without a restart.
#[tokio::test]
async fn an_outage_longer_than_the_retry_window_is_answered_503() {
    const WINDOW: Duration = Duration::from_secs(2);
    let pg = PgServer::start().await;
    let url = pg.create_database(DATABASE).await;
    let (_dir, server) = replica(&url, Some(WINDOW)).await;
    for i in 0..5 {
        accepts_a_new_webhook(&server, &format!("before-{i}")).await;
    }
    assert_eq!(readyz(server.addr).await, 200);

    pg.stop_fast().await;
    let down = Instant::now();
    let posts = Posts::start(server.addr, 8, "down");
    // /readyz while the webhooks wait, then webhooks for over two windows.
    assert_eq!(readyz(server.addr).await, 503);
    tokio::time::sleep(WINDOW * 2 + Duration::from_millis(500)).await;
    let answers = posts.finish().await;
    assert_eq!(readyz(server.addr).await, 503);
    let down_for = down.elapsed();

    assert!(!answers.is_empty());
    let not_503: Vec<&Answer> = answers.iter().filter(|a| a.status != Some(503)).collect();
    assert!(
        not_503.is_empty(),
        "webhooks answered other than 503 while PostgreSQL was down: {not_503:#?}"
    );
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "outage of {down_for:?}: {} webhooks answered 503, the slowest after {slowest:?}",
        answers.len()
    );

    pg.start_again().await;
    wait_until_ready(server.addr).await;
    accepts_a_new_webhook(&server, "after").await;
    // Nothing answered 503 was stored (PostgreSQL was down from before the first of
    // them to after the last answer), and nothing is counted but what is stored.
    let stored = stored_names(&pg).await;
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain(["after".to_owned()])
        .collect();
    assert_eq!(stored, expected);
    wait_until_counted(server.addr, &stored, &answers).await;
    server.stop().await;
}

/// Two replicas as child processes on one database, each under load; one is killed
/// (SIGKILL) mid-load. The survivor counts every webhook either acknowledged, and so
/// does the killed one once started again on the same database.
#[tokio::test]
async fn a_replica_killed_mid_load_loses_nothing_it_acknowledged() {
    let pg = PgServer::start().await;
    let url = pg.create_database(DATABASE).await;
    let args = [
        "--storage.postgres.url",
        url.as_str(),
        "--webhook.insecure-no-auth",
    ];
    let killed = Exporter::spawn_with_storage_args(&args).await;
    let survivor = Exporter::spawn_with_storage_args(&args).await;
    let killed_load = Load::start(killed.addr, 8, STACK, "killed");
    let survivor_load = Load::start(survivor.addr, 8, STACK, "survivor");
    killed_load.wait_for_acknowledged(150).await;
    killed.kill().await;
    // The survivor goes on taking webhooks, old clients and new.
    let after_load = Load::start(survivor.addr, 4, STACK, "after");
    after_load.wait_for_acknowledged(100).await;
    let (killed_acknowledged, killed_refused) = killed_load.finish().await;
    let (mut survivor_acknowledged, mut survivor_refused) = survivor_load.finish().await;
    let (after_acknowledged, after_refused) = after_load.finish().await;
    survivor_acknowledged.extend(after_acknowledged);
    survivor_refused.extend(after_refused);
    assert!(
        killed_refused.is_empty() && survivor_refused.is_empty(),
        "error answers: {killed_refused:?} {survivor_refused:?}"
    );
    let acknowledged: BTreeSet<String> = killed_acknowledged
        .iter()
        .chain(&survivor_acknowledged)
        .cloned()
        .collect();
    let stored = stored_names(&pg).await;
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    eprintln!(
        "replica killed after acknowledging {}; the survivor acknowledged {}; {} stored \
         ({} stored but unacknowledged: in flight at the kill)",
        killed_acknowledged.len(),
        survivor_acknowledged.len(),
        stored.len(),
        stored.len() - acknowledged.len()
    );

    let stack = STACK.to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let lost = missing(&metrics(survivor.addr).await, &stack, &stored);
        if lost.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor does not count {} stored webhooks: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Started again, it reads them all before it listens.
    let restarted = Exporter::spawn_with_storage_args(&args).await;
    let lost = missing(&metrics(restarted.addr).await, &stack, &stored);
    assert!(
        lost.is_empty(),
        "the restarted replica does not count {} stored webhooks: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    restarted.kill().await;
    survivor.kill().await;
}

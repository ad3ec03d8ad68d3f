//! End to end with replicas: two exporter processes sharing one PostgreSQL database, both
//! scraped by a real Prometheus that evaluates the shipped alert rules.
//!
//! The test starts a real PostgreSQL (`common::postgres`), two exporter binaries on the
//! same database (`--storage.postgres.url`, webhook token authentication), and Prometheus
//! 2.42 scraping both every second as two targets of the job `cloud66-ssl-exporter`, with
//! the rules of `alerts/cloud66-ssl-exporter.rules.yml` evaluated every second. As in
//! `e2e_alerting.rs`, Prometheus loads a copy of the rules file in which every `for:` is
//! rewritten to `1s`; everything else is the shipped file, byte for byte.
//!
//! The webhooks are split across the two replicas, some certificates getting their events
//! from both: one certificate in every situation (10 days left, 3 days left, expired, a
//! failing install of a certificate whose expiry is fine, healthy). The test waits until
//! both targets are up and Prometheus has scraped the same certificate series (expiry and
//! install state) from both instances, then until the alerts fire, and asserts through
//! Prometheus' `/api/v1/alerts` that every situation gives exactly one firing alert per
//! (alertname, stack, name), never one per instance, with no `instance` label, none for
//! the healthy certificate and no other alert at all, also a few evaluations later. It
//! also asserts that `cloud66_ssl_exporter_storage_info{backend="postgres"}` is scraped
//! from both instances, that `Cloud66SSLExporterStorageTailLagging` is inactive, and that
//! every rule evaluates without error.
//!
//! Needs the Debian packages `prometheus` and `postgresql`; without them the test fails
//! saying so (it never skips). Prometheus is killed by its PID when the test ends, also on
//! failure (see `Prometheus`), the exporters too (`kill_on_drop`), PostgreSQL by its
//! harness; every wait has a deadline within `TOTAL_BUDGET`.

mod common;

use common::e2e::{fast_rules, free_port, now, percent_encode, rfc3339};
use common::postgres::PgServer;
use common::{Exporter, TOKEN, payload, tool, try_request};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const JOB: &str = "cloud66-ssl-exporter";
/// Number of alerting rules (and so of `for:` lines) in the rules file.
const ALERT_RULES: usize = 13;
/// Upper bound for the whole test.
const TOTAL_BUDGET: Duration = Duration::from_secs(150);
const DAY: i64 = 86_400;

const SOON: &str = "Cloud66SSLCertificateExpiringSoon";
const VERY_SOON: &str = "Cloud66SSLCertificateExpiringVerySoon";
const EXPIRED: &str = "Cloud66SSLCertificateExpired";
const INSTALL_FAILING: &str = "Cloud66SSLCertificateInstallFailing";
const TAIL_LAGGING: &str = "Cloud66SSLExporterStorageTailLagging";

// ---------------------------------------------------------------------------------------
// Prometheus, a child process killed by PID
// ---------------------------------------------------------------------------------------

/// The Prometheus process of the test: killed (SIGKILL, by its PID) and reaped when this
/// is dropped, so also when an assertion fails. Its output goes to a log file, quoted in
/// failure messages.
struct Prometheus {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Prometheus {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(25)..];
        format!(
            "\n--- prometheus log (last {} lines) ---\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Fails if Prometheus has exited (it should run for the whole test).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited with {status}{}", self.log_tail());
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus scraping `targets` (one job, every second) with the fast rules.
fn start_prometheus(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
    let binary = tool("prometheus");
    std::fs::write(dir.join("rules.yml"), fast_rules(ALERT_RULES)).unwrap();
    let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{targets}]\n",
            rules = dir.join("rules.yml").display(),
            targets = targets.join(", ")
        ),
    )
    .unwrap();
    let log = dir.join("prometheus.log");
    let out = File::create(&log).unwrap();
    let child = Command::new(&binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Prometheus { child, log, port }
}

// ---------------------------------------------------------------------------------------
// Waiting and asking Prometheus
// ---------------------------------------------------------------------------------------

/// Polls `check` every 250 ms until it returns `Ok`, or fails with its last error (and
/// Prometheus' log) once `deadline` has passed.
async fn wait_for<T, F, Fut>(
    prom: &mut Prometheus,
    deadline: Instant,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(e) => e,
        };
        prom.assert_running();
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}: {last}{}", prom.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn deadline_in(start: Instant, secs: u64) -> Instant {
    (Instant::now() + Duration::from_secs(secs)).min(start + TOTAL_BUDGET)
}

/// GET `path` from `addr`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        try_request(addr, "GET", path, &[], Vec::new()),
    )
    .await
    .map_err(|_| format!("GET {path}: no answer within 10 s"))?
    .map_err(|e| format!("GET {path}: {e}"))?;
    Ok((reply.status, reply.body))
}

/// The `data` of a successful Prometheus API answer; a failed one (such as a parse
/// error) is final: it fails at once with the answer.
async fn api(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let (status, body) = get(addr, path).await?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    assert!(
        v["status"] == "success",
        "Prometheus answered {status} to {path}: {body}"
    );
    Ok(v["data"].clone())
}

/// An instant query's result (possibly empty).
async fn query(addr: SocketAddr, expr: &str) -> Result<Vec<Value>, String> {
    let data = api(
        addr,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// The value of an instant vector sample as f64.
fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn label<'a>(object: &'a Value, name: &str) -> &'a str {
    object["labels"][name]
        .as_str()
        .or_else(|| object["metric"][name].as_str())
        .unwrap_or_default()
}

/// Every sample of `expr` as instance -> (stack, name) -> value.
async fn per_instance(
    addr: SocketAddr,
    expr: &str,
) -> Result<BTreeMap<String, BTreeMap<(String, String), f64>>, String> {
    let mut out: BTreeMap<String, BTreeMap<(String, String), f64>> = BTreeMap::new();
    for sample in query(addr, expr).await? {
        out.entry(label(&sample, "instance").to_owned())
            .or_default()
            .insert(
                (
                    label(&sample, "stack").to_owned(),
                    label(&sample, "name").to_owned(),
                ),
                value_of(&sample),
            );
    }
    Ok(out)
}

/// (alertname, stack, name, state) of every alert Prometheus has, pending or firing,
/// sorted, with the raw answer for failure messages.
async fn alerts(addr: SocketAddr) -> Result<(Vec<Value>, String), String> {
    let data = api(addr, "/api/v1/alerts").await?;
    let list = data["alerts"].as_array().cloned().unwrap_or_default();
    let text = serde_json::to_string_pretty(&list).unwrap();
    Ok((list, text))
}

type AlertKey = (String, String, String);

/// How many alerts in `state` Prometheus has per (alertname, stack, name).
fn count_by_key(alerts: &[Value], state: &str) -> BTreeMap<AlertKey, usize> {
    let mut counts = BTreeMap::new();
    for alert in alerts.iter().filter(|a| a["state"] == state) {
        let key = (
            label(alert, "alertname").to_owned(),
            label(alert, "stack").to_owned(),
            label(alert, "name").to_owned(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------

struct Cert {
    stack: u64,
    name: &'static str,
}

/// An install.ok or expire.soon of `cert` sent at `timestamp`, expiring at `expiry`.
fn installed(event_type: &str, timestamp: i64, cert: &Cert, expiry: i64) -> String {
    let mut extra = json!({
        "status": "installed",
        "cert_expiry": rfc3339(expiry),
        "created_at": rfc3339(timestamp - 100 * DAY),
        "updated_at": rfc3339(timestamp),
    });
    if event_type.ends_with("expire.soon") {
        extra["days_until_expiry"] = json!((expiry - timestamp) / DAY);
    }
    payload(event_type, timestamp, cert.stack, cert.name, extra)
}

/// An install.fail of `cert` sent at `timestamp`.
fn install_failed(timestamp: i64, cert: &Cert, error: &str) -> String {
    payload(
        "ssl_certificate.install.fail",
        timestamp,
        cert.stack,
        cert.name,
        json!({
            "status": "failed",
            "error_message": error,
            "created_at": rfc3339(timestamp - 100 * DAY),
            "updated_at": rfc3339(timestamp),
        }),
    )
}

async fn post_webhook(replica: &Exporter, body: &str) {
    let path = format!("/webhook/{TOKEN}");
    let reply = try_request(replica.addr, "POST", &path, &[], body.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("POST /webhook to {}: {e}", replica.addr));
    assert_eq!(
        reply.status, 200,
        "POST /webhook {body} to {} answered {}: {}",
        replica.addr, reply.status, reply.body
    );
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_give_one_alert_per_situation() {
    let start = Instant::now();
    // Before anything starts: a missing Prometheus fails at once with the install hint.
    tool("prometheus");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();

    // --- PostgreSQL and two replicas on one database ---------------------------------
    let pg = PgServer::start().await;
    let url = pg.create_database("e2e_replicas").await;
    let storage = format!("--storage.postgres.url={url}");
    let token = format!("--webhook.token={TOKEN}");
    let args = [storage.as_str(), token.as_str()];
    let a = Exporter::spawn_with_storage_args(&args).await;
    let b = Exporter::spawn_with_storage_args(&args).await;
    let instances: BTreeSet<String> = [a.addr.to_string(), b.addr.to_string()].into();

    // --- Prometheus scraping both ------------------------------------------------------
    let mut prom = start_prometheus(&dir, &[a.addr, b.addr]);
    let p = prom.addr();
    wait_for(
        &mut prom,
        deadline_in(start, 60),
        "Prometheus to be ready",
        || async move {
            match get(p, "/-/ready").await? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("status {status}: {body}")),
            }
        },
    )
    .await;
    let up = format!("up{{job=\"{JOB}\"}} == 1");
    let expected_instances = instances.clone();
    wait_for(&mut prom, deadline_in(start, 30), "both targets up", || {
        let (up, expected) = (up.clone(), expected_instances.clone());
        async move {
            let result = query(p, &up).await?;
            let got: BTreeSet<String> = result
                .iter()
                .map(|s| label(s, "instance").to_owned())
                .collect();
            if got == expected {
                Ok(())
            } else {
                Err(format!(
                    "up == 1 for {got:?}, expected {expected:?}: {result:?}"
                ))
            }
        }
    })
    .await;

    // --- Webhooks, split across the replicas: one certificate per situation -----------
    let t = now();
    let healthy = Cert {
        stack: 2001,
        name: "healthy",
    };
    let warning = Cert {
        stack: 2001,
        name: "warning-10d",
    };
    let critical = Cert {
        stack: 2002,
        name: "critical-3d",
    };
    let expired = Cert {
        stack: 2002,
        name: "expired-1d",
    };
    let failing = Cert {
        stack: 2002,
        name: "failing",
    };
    let ok = "ssl_certificate.install.ok";
    let soon = "ssl_certificate.expire.soon";
    let error = "Let's Encrypt validation failed for failing.example.com: DNS problem: NXDOMAIN";
    // (replica, webhook). Both instances must serve every certificate with its last
    // expiry; the failing one keeps the expiry of its earlier install (60 days).
    let sends: Vec<(&Exporter, String)> = vec![
        (&a, installed(ok, t - 10, &healthy, t + 80 * DAY)),
        (&a, installed(ok, t - 80 * DAY, &warning, t + 10 * DAY)),
        (&b, installed(soon, t - 10, &warning, t + 10 * DAY)),
        (&b, installed(ok, t - 87 * DAY, &critical, t + 3 * DAY)),
        (&a, installed(ok, t - 91 * DAY, &expired, t - DAY)),
        (&a, installed(ok, t - 20, &failing, t + 60 * DAY)),
        (&b, install_failed(t - 10, &failing, error)),
    ];
    for (replica, body) in &sends {
        post_webhook(replica, body).await;
    }
    let expiry_of = [
        (&healthy, t + 80 * DAY),
        (&warning, t + 10 * DAY),
        (&critical, t + 3 * DAY),
        (&expired, t - DAY),
        (&failing, t + 60 * DAY),
    ];
    let expected_expiry: BTreeMap<(String, String), f64> = expiry_of
        .iter()
        .map(|(c, e)| ((c.stack.to_string(), c.name.to_owned()), *e as f64))
        .collect();
    let expected_failing: BTreeMap<(String, String), f64> = expiry_of
        .iter()
        .map(|(c, _)| {
            let value = if c.name == failing.name { 1.0 } else { 0.0 };
            ((c.stack.to_string(), c.name.to_owned()), value)
        })
        .collect();

    // --- Prometheus has the converged series from both instances ----------------------
    let series = [
        (
            format!("ssl_cert_expiry_timestamp_seconds{{job=\"{JOB}\"}}"),
            expected_expiry,
        ),
        (
            format!("ssl_cert_install_failing{{job=\"{JOB}\"}}"),
            expected_failing,
        ),
    ];
    for (expr, expected) in &series {
        let expected_instances = instances.clone();
        wait_for(
            &mut prom,
            deadline_in(start, 30),
            &format!("{expr} converged on both instances"),
            || {
                let expected_instances = expected_instances.clone();
                async move {
                    let got = per_instance(p, expr).await?;
                    let complete = got.keys().cloned().collect::<BTreeSet<_>>()
                        == expected_instances
                        && got.values().all(|per_cert| per_cert == expected);
                    if complete {
                        Ok(())
                    } else {
                        Err(format!(
                            "\nexpected on each of {expected_instances:?}:\n  {expected:?}\ngot:\n  {got:#?}"
                        ))
                    }
                }
            },
        )
        .await;
    }

    // --- Exactly one firing alert per (alertname, stack, name) -------------------------
    let key = |alertname: &str, cert: &Cert| -> AlertKey {
        (
            alertname.to_owned(),
            cert.stack.to_string(),
            cert.name.to_owned(),
        )
    };
    // Prometheus alone (no Alertmanager inhibition): a certificate under 7 days also
    // matches the 21-day warning, an expired one all three expiry alerts.
    let expected: BTreeMap<AlertKey, usize> = [
        key(SOON, &warning),
        key(SOON, &critical),
        key(VERY_SOON, &critical),
        key(SOON, &expired),
        key(VERY_SOON, &expired),
        key(EXPIRED, &expired),
        key(INSTALL_FAILING, &failing),
    ]
    .into_iter()
    .map(|k| (k, 1))
    .collect();
    let expected_ref = &expected;
    // Every alert Prometheus has (pending included) is an expected one, firing, once.
    let check = || async move {
        let (list, text) = alerts(p).await?;
        let firing = count_by_key(&list, "firing");
        let pending = count_by_key(&list, "pending");
        if &firing == expected_ref && pending.is_empty() {
            Ok((list, text))
        } else {
            Err(format!(
                "\nexpected firing (alertname, stack, name) -> count:\n  {expected_ref:?}\n\
                 got firing:\n  {firing:?}\ngot pending:\n  {pending:?}\n\
                 Prometheus /api/v1/alerts:\n{text}"
            ))
        }
    };
    wait_for(
        &mut prom,
        deadline_in(start, 60),
        "exactly one firing alert per situation",
        check,
    )
    .await;
    // Still exactly these a few evaluations later (nothing else shows up, nothing flaps).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (list, text) = match check().await {
        Ok(answer) => answer,
        Err(e) => panic!("the alerts changed: {e}{}", prom.log_tail()),
    };
    for alert in &list {
        let labels = alert["labels"].as_object().unwrap();
        assert!(
            !labels.contains_key("instance"),
            "a per-certificate alert carries an instance label: {alert}\n{text}"
        );
        assert_eq!(labels["job"], JOB, "{alert}");
        assert_ne!(
            labels.get("name").and_then(Value::as_str),
            Some(healthy.name),
            "an alert for the healthy certificate: {alert}\n{text}"
        );
    }
    // The ALERTS series agrees: one per (alertname, stack, name).
    let firing_series = query(p, "ALERTS{alertstate=\"firing\"}").await.unwrap();
    let mut from_series: BTreeMap<AlertKey, usize> = BTreeMap::new();
    for s in &firing_series {
        let k = (
            label(s, "alertname").to_owned(),
            label(s, "stack").to_owned(),
            label(s, "name").to_owned(),
        );
        *from_series.entry(k).or_insert(0) += 1;
    }
    assert_eq!(
        from_series,
        expected,
        "ALERTS{{alertstate=\"firing\"}}: {}",
        serde_json::to_string_pretty(&firing_series).unwrap()
    );

    // --- Storage metrics from both instances, no tail lag alert -----------------------
    let storage_info =
        format!("cloud66_ssl_exporter_storage_info{{job=\"{JOB}\",backend=\"postgres\"}} == 1");
    let result = query(p, &storage_info).await.unwrap();
    let got: BTreeSet<String> = result
        .iter()
        .map(|s| label(s, "instance").to_owned())
        .collect();
    assert_eq!(got, instances, "{storage_info}: {result:?}");
    let sqlite = query(
        p,
        &format!("cloud66_ssl_exporter_storage_info{{job=\"{JOB}\",backend=\"sqlite\"}} == 1"),
    )
    .await
    .unwrap();
    assert!(sqlite.is_empty(), "a replica says sqlite: {sqlite:?}");
    let lag_expr = format!("cloud66_ssl_exporter_storage_tail_lag_seconds{{job=\"{JOB}\"}}");
    let lag = query(p, &lag_expr).await.unwrap();
    let got: BTreeSet<String> = lag
        .iter()
        .map(|s| label(s, "instance").to_owned())
        .collect();
    assert_eq!(got, instances, "{lag_expr}: {lag:?}");

    let rules = api(p, "/api/v1/rules").await.unwrap();
    let mut rule_count = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_count += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} failed: {}",
                rule["name"], rule["lastError"]
            );
            if rule["name"] == TAIL_LAGGING {
                assert_eq!(rule["state"], "inactive", "{rule}");
            }
        }
    }
    assert_eq!(rule_count, ALERT_RULES, "rules loaded: {rules}");

    // --- Stop everything: Prometheus and the replicas by PID, then PostgreSQL ----------
    prom.assert_running();
    drop(prom);
    a.kill().await;
    b.kill().await;
    drop(pg);
    eprintln!(
        "replicated end-to-end test: {} firing alerts, one per (alertname, stack, name), \
         from 2 replicas; finished in {:.1?}",
        expected.len(),
        start.elapsed()
    );
}

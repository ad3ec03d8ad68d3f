//! End to end: the exporter, a real Prometheus and a real Alertmanager.
//!
//! The test starts the exporter binary (authentication disabled) reconciling with a fake
//! Cloud66 API (`common::fake_cloud66`, served by a tokio runtime of the test),
//! Alertmanager 0.25 with `examples/alertmanager.yml` as it is (routes and inhibit
//! rules), and Prometheus 2.42 scraping the exporter every second with the alert rules of
//! `alerts/cloud66-ssl-exporter.rules.yml` loaded and evaluated every second.
//!
//! The fake API serves one stack ("Awesome App", production), whose async actions give
//! its webhook stack id (777), with one certificate that expires in 5 days and that no
//! webhook ever mentions. The test waits until the exporter's first sync has completed
//! and exports that certificate. It then feeds Cloud66 webhooks for certificates in every
//! situation (healthy, routine 30 days, under 21 days, under 7 days, expired, failing,
//! first seen failing) on other stacks. The exporter runs with
//! `--storage.max-certificates` equal to the number of all those certificates (the API
//! one included), so a webhook for one more (which would expire in 5 days) is refused
//! with 422. It then asserts:
//!
//! - through Alertmanager's `/api/v2/alerts`, that exactly the expected alerts arrived,
//!   with exactly the expected labels, their annotations rendered (domains, error
//!   message, runbook URL, certificate counts, the stack's name from
//!   `cloud66_ssl_exporter_stack_info` for the API's stack and none for the others), the
//!   warnings of critical certificates inhibited, the certificate known only from the API
//!   raising `Cloud66SSLCertificateExpiringVerySoon`, the refused certificate raising only
//!   `Cloud66SSLExporterCertificateLimitReached`, which inhibits
//!   `Cloud66SSLExporterCertificateLimitNear`, and `Cloud66SSLExporterSyncFailing` not
//!   firing (the sync succeeded);
//! - through Prometheus' `/api/v1/query`, that every query of `dashboards/*.json` (with
//!   Grafana's variables replaced) parses and returns data, the Cloud66 API sync row
//!   included (its metrics exist because a token is configured);
//! - through `/api/v1/rules`, that every rule evaluates without error.
//!
//! To finish in seconds instead of hours, Prometheus loads a copy of the rules file in
//! which every `for:` is rewritten to `1s`; everything else (expressions, labels,
//! annotations) is the shipped file, byte for byte.
//!
//! Needs the Debian packages `prometheus` and `prometheus-alertmanager`; without them the
//! test fails with a message saying so. Every process it starts is killed by PID when the
//! test ends, also on failure (see `Processes`), every wait has a deadline, and the fake
//! API stops with its runtime when the test ends.

mod common;

use common::e2e::{fast_rules, free_port, now, percent_encode, rfc3339, root};
use common::fake_cloud66::{FAKE_TOKEN, FakeCloud66};
use common::{dashboards, tool};

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ALERTMANAGER_EXAMPLE: &str = "examples/alertmanager.yml";
const JOB: &str = "cloud66-ssl-exporter";
const RUNBOOK_URL_PREFIX: &str =
    "https://github.com/cloud66-ssl-exporter/cloud66-ssl-exporter/blob/main/docs/runbooks.md#";
/// Upper bound for the whole test.
const TOTAL_BUDGET: Duration = Duration::from_secs(180);
const DAY: i64 = 86_400;
/// `--storage.max-certificates`: exactly the certificates of the scenario, the 7 of the
/// webhooks and the one known only from the API.
const MAX_CERTIFICATES: u32 = 8;
/// Number of alerting rules in the rules file.
const ALERT_RULES: usize = 13;
/// The stack the fake Cloud66 API serves: its uid, name and environment, and the webhook
/// stack id its async actions give.
const API_STACK_UID: &str = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0";
const API_STACK_NAME: &str = "Awesome App";
const API_STACK_ENVIRONMENT: &str = "production";
const API_STACK_ID: i64 = 777;

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// The processes this test started; each is killed by its PID when this is dropped, so
/// also when an assertion fails. Their output goes to log files in the temp directory,
/// shown on failure.
struct Processes {
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Processes {
    fn spawn(&mut self, name: &'static str, mut cmd: Command) {
        let log = File::create(self.log_path(name)).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        self.children.push((name, child));
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The last lines of every log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "\n--- {name} log (last {} lines) ---\n",
                tail.len()
            ));
            out.push_str(&tail.join("\n"));
        }
        out
    }

    /// Fails if a process has exited (it should run for the whole test).
    fn assert_running(&mut self) {
        let mut dead = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                dead.push(format!("{name} exited with {status}"));
            }
        }
        assert!(dead.is_empty(), "{}{}", dead.join(", "), self.logs());
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (one request per connection, `Connection: close`).
// ---------------------------------------------------------------------------------------

struct Response {
    status: u16,
    body: String,
}

fn http(
    method: &str,
    port: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: */*\r\n"
    );
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        payload = dechunk(&payload)?;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&payload).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .map_err(|e| std::io::Error::other(format!("bad chunk size: {e}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(std::io::Error::other("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn get(port: u16, path: &str) -> std::io::Result<Response> {
    http("GET", port, path, "", b"")
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// Polls `check` every 250 ms until it returns `Ok`, or fails with its last error once
/// `deadline` has passed.
fn wait_for<T>(
    procs: &mut Processes,
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(e) => e,
        };
        procs.assert_running();
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}: {last}{}", procs.logs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn deadline_in(start: Instant, secs: u64) -> Instant {
    (Instant::now() + Duration::from_secs(secs)).min(start + TOTAL_BUDGET)
}

// ---------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------

struct Cert {
    stack: i64,
    name: &'static str,
    domains: &'static str,
}

fn payload(
    event_type: &str,
    timestamp: i64,
    cert: &Cert,
    expiry: Option<i64>,
    error: Option<&str>,
) -> Value {
    let failed = event_type.ends_with("install.fail");
    let mut c = json!({
        "stack_id": cert.stack,
        "name": cert.name,
        "server_names": cert.domains,
        "lets_encrypt": true,
        "has_intermediate_cert": true,
        "ssl_termination": true,
        "status": if failed { "failed" } else { "installed" },
        "created_at": rfc3339(timestamp - 100 * DAY),
        "updated_at": rfc3339(timestamp),
    });
    if let Some(expiry) = expiry {
        c["cert_expiry"] = json!(rfc3339(expiry));
        if event_type.ends_with("expire.soon") {
            c["days_until_expiry"] = json!((expiry - timestamp) / DAY);
        }
    }
    if let Some(error) = error {
        c["error_message"] = json!(error);
    }
    json!({"timestamp": timestamp, "event_type": event_type, "ssl_certificate": c})
}

fn post_webhook(procs: &mut Processes, port: u16, body: &Value) {
    post_webhook_expecting(procs, port, body, 200);
}

fn post_webhook_expecting(procs: &mut Processes, port: u16, body: &Value, status: u16) -> Response {
    let text = body.to_string();
    let response = http(
        "POST",
        port,
        "/webhook",
        "application/json",
        text.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("POST /webhook failed: {e}{}", procs.logs()));
    assert!(
        response.status == status,
        "POST /webhook {text} answered {} (expected {status}): {}{}",
        response.status,
        response.body,
        procs.logs()
    );
    response
}

/// Runs an instant query; `Ok` with the result once it is not empty.
fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let path = format!("/api/v1/query?query={}", percent_encode(expr));
    let r = get(port, &path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    if v["status"] != "success" {
        // A parse error is final: fail at once.
        panic!("query failed: {expr}\n{}", r.body);
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    if result.is_empty() {
        Err(format!("no data yet for {expr}"))
    } else {
        Ok(result)
    }
}

// ---------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

/// (alert name, certificate name, Alertmanager state) of every alert expected.
type Expected = Vec<(&'static str, &'static str, &'static str)>;

fn alert_summary(alerts: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                a["labels"]["name"].as_str().unwrap_or_default().to_owned(),
                a["status"]["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn lines(alerts: &[(String, String, String)]) -> String {
    let v: Vec<String> = alerts.iter().map(|a| format!("{a:?}")).collect();
    v.join("\n  ")
}

/// Labels and annotations of the certificate-limit alerts (exporter level: no `stack`
/// or `name`).
fn check_limit_alert(alert: &Value, instance: &str) {
    let alertname = alert["labels"]["alertname"].as_str().unwrap();
    let severity = if alertname == "Cloud66SSLExporterCertificateLimitReached" {
        "critical"
    } else {
        "warning"
    };
    assert_eq!(
        alert["labels"],
        json!({"alertname": alertname, "severity": severity, "job": JOB, "instance": instance}),
        "labels of {alertname}"
    );
    let annotations = &alert["annotations"];
    assert_eq!(
        annotations["runbook_url"].as_str().unwrap(),
        format!("{RUNBOOK_URL_PREFIX}{}", alertname.to_lowercase())
    );
    let summary = annotations["summary"].as_str().unwrap();
    assert!(
        summary.ends_with('.') && !summary.contains("{{"),
        "{alertname}: summary {summary:?}"
    );
    let description = annotations["description"].as_str().unwrap();
    let prefix = format!("{instance} (job {JOB}) ");
    let rest = description
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{alertname}: {description:?} starts with {prefix:?}"));
    if severity == "critical" {
        // "refused about N webhook(s)": N is increase()'s extrapolation of the single
        // refusal, 1 or a little more; the unit tests pin exact counts.
        let count: u32 = rest
            .strip_prefix("refused about ")
            .and_then(|r| r.split_once(' '))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("{alertname}: refused count in {description:?}"));
        assert!((1..=2).contains(&count), "{description:?}");
        let counts = format!(
            "it tracks {MAX_CERTIFICATES} certificate(s) and its limit \
             (--storage.max-certificates) is {MAX_CERTIFICATES}."
        );
        assert!(
            description.contains(&counts),
            "{counts:?} in {description:?}"
        );
    } else {
        let counts = format!(
            "tracks {MAX_CERTIFICATES} certificate(s), 100% of its limit of \
             {MAX_CERTIFICATES} (--storage.max-certificates)."
        );
        assert!(rest.starts_with(&counts), "{counts:?} in {description:?}");
    }
    let state = alert["status"]["state"].as_str().unwrap();
    eprintln!("{alertname} [{state}]: {description}");
    let inhibited_by = alert["status"]["inhibitedBy"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(
        state == "suppressed",
        inhibited_by > 0,
        "{alertname}: {}",
        alert["status"]
    );
}

#[test]
fn alerts_and_dashboards_work_end_to_end() {
    let start = Instant::now();
    let prometheus = tool("prometheus");
    let alertmanager = tool("prometheus-alertmanager");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();

    // --- The fake Cloud66 API ---------------------------------------------------------
    // It serves on the worker threads of this runtime, which lives until the test ends
    // (declared before `procs`, so dropped after the processes are killed).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeCloud66::start());
    // A certificate known only from the API: no webhook mentions it.
    let api_only = Cert {
        stack: API_STACK_ID,
        name: "api-only.example.com",
        domains: "api-only.example.com",
    };
    fake.add_stack(API_STACK_UID, API_STACK_NAME, API_STACK_ENVIRONMENT);
    fake.set_actions(
        API_STACK_UID,
        vec![FakeCloud66::stack_action(json!(API_STACK_ID.to_string()))],
    );
    fake.set_certificates(
        API_STACK_UID,
        vec![FakeCloud66::certificate(
            "0e2e0e2e-api0-4e2e-8e2e-0e2e0e2e0e2e",
            api_only.name,
            api_only.domains,
            json!(3),
            Some(&rfc3339(now() + 5 * DAY)),
            true,
        )],
    );

    let mut procs = Processes {
        dir: dir.clone(),
        children: Vec::new(),
    };

    // --- The exporter, reconciling with the fake API ----------------------------------
    let mut exporter = Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"));
    exporter.args([
        "--web.listen-address",
        "127.0.0.1:0",
        "--storage.path",
        dir.join("exporter").to_str().unwrap(),
        "--webhook.insecure-no-auth",
        "--log.format",
        "logfmt",
        "--storage.max-certificates",
        &MAX_CERTIFICATES.to_string(),
        &format!("--cloud66.api-token={FAKE_TOKEN}"),
        &format!("--cloud66.api-url={}", fake.url()),
    ]);
    procs.spawn("exporter", exporter);
    let exporter_port: u16 = wait_for(
        &mut procs,
        deadline_in(start, 30),
        "the exporter's listening line",
        || {
            let log = std::fs::read_to_string(dir.join("exporter.log")).unwrap_or_default();
            log.lines()
                .filter(|l| l.contains("listening"))
                .find_map(|l| {
                    l.split_whitespace()
                        .find_map(|field| field.strip_prefix("address="))
                        .and_then(|a| a.trim_matches('"').rsplit_once(':'))
                        .and_then(|(_, port)| port.parse().ok())
                })
                .ok_or_else(|| "no `listening ... address=` line yet".to_owned())
        },
    );
    let instance = format!("127.0.0.1:{exporter_port}");

    // The first sync (it starts with the exporter) has completed and committed the
    // API's certificate, before any webhook: it counts towards the certificate limit,
    // which the refused webhook below must find reached.
    let sync = wait_for(
        &mut procs,
        deadline_in(start, 30),
        "the first Cloud66 API sync to complete",
        || {
            let r = get(exporter_port, "/api/v1/sync").map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
            if r.status == 200 && v["running"] == false && v["last_result"] == "ok" {
                Ok(v)
            } else {
                Err(format!("status {}: {}", r.status, r.body))
            }
        },
    );
    assert_eq!(sync["certificates"], 1, "{sync}");
    // The webhook stack id was learnt from the stack's async actions.
    assert_eq!(
        sync["stacks_known"],
        json!([{
            "stack": API_STACK_ID.to_string(),
            "uid": API_STACK_UID,
            "name": API_STACK_NAME,
            "environment": API_STACK_ENVIRONMENT,
            "id_source": "actions",
        }]),
        "{sync}"
    );
    let api_series = format!(
        "ssl_cert_expiry_timestamp_seconds{{stack=\"{}\",name=\"{}\"}} ",
        api_only.stack, api_only.name
    );
    wait_for(
        &mut procs,
        deadline_in(start, 30),
        "the API's certificate in the exporter's /metrics",
        || {
            let r = get(exporter_port, "/metrics").map_err(|e| e.to_string())?;
            if r.status == 200 && r.body.lines().any(|l| l.starts_with(&api_series)) {
                Ok(())
            } else {
                Err(format!("no {api_series:?} (status {})", r.status))
            }
        },
    );

    // --- Alertmanager, with the shipped example configuration -------------------------
    let am_port = free_port();
    let mut am = Command::new(alertmanager);
    am.arg(format!(
        "--config.file={}",
        root().join(ALERTMANAGER_EXAMPLE).display()
    ))
    .arg(format!(
        "--storage.path={}",
        dir.join("alertmanager").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
    .arg("--cluster.listen-address=");
    procs.spawn("alertmanager", am);

    // --- Prometheus, with the shipped rules (for: shortened) --------------------------
    let fast_rules = fast_rules(ALERT_RULES);
    std::fs::write(dir.join("rules.yml"), fast_rules).unwrap();
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{instance}']\n",
            rules = dir.join("rules.yml").display()
        ),
    )
    .unwrap();
    let mut prom = Command::new(prometheus);
    prom.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("prometheus").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    procs.spawn("prometheus", prom);

    for (what, port) in [("Alertmanager", am_port), ("Prometheus", prom_port)] {
        wait_for(
            &mut procs,
            deadline_in(start, 60),
            &format!("{what} to be ready"),
            || match get(port, "/-/ready") {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e.to_string()),
            },
        );
    }

    // --- Webhooks: one certificate per situation --------------------------------------
    let t = now();
    let healthy = Cert {
        stack: 1001,
        name: "healthy",
        domains: "healthy.example.com",
    };
    let routine = Cert {
        stack: 1001,
        name: "routine-30d",
        domains: "routine.example.com,www.routine.example.com",
    };
    let warning = Cert {
        stack: 1001,
        name: "warning-14d",
        domains: "warning.example.com",
    };
    let critical = Cert {
        stack: 1002,
        name: "critical-3d",
        domains: "critical.example.com",
    };
    let expired = Cert {
        stack: 1002,
        name: "expired-2d",
        domains: "expired.example.com",
    };
    let failing = Cert {
        stack: 1002,
        name: "failing",
        domains: "failing.example.com,www.failing.example.com",
    };
    let first = Cert {
        stack: 1003,
        name: "first-seen-failing",
        domains: "new.example.com",
    };
    // One certificate more than --storage.max-certificates: refused, so it raises no
    // certificate alert although it expires in 5 days.
    let refused = Cert {
        stack: 1004,
        name: "over-the-limit",
        domains: "refused.example.com",
    };
    let ok = "ssl_certificate.install.ok";
    let fail = "ssl_certificate.install.fail";
    let soon = "ssl_certificate.expire.soon";
    let error = "Let's Encrypt validation failed for failing.example.com: DNS problem: NXDOMAIN";
    let first_error = "Certificate validation failed";
    for body in [
        payload(ok, t - 10, &healthy, Some(t + 80 * DAY), None),
        payload(soon, t - 10, &routine, Some(t + 30 * DAY), None),
        payload(ok, t - 40 * DAY, &warning, Some(t + 14 * DAY), None),
        payload(soon, t - 10, &warning, Some(t + 14 * DAY), None),
        payload(ok, t - 80 * DAY, &critical, Some(t + 3 * DAY), None),
        payload(ok, t - 90 * DAY, &expired, Some(t - 2 * DAY), None),
        payload(ok, t - 20, &failing, Some(t + 60 * DAY), None),
        payload(fail, t - 10, &failing, None, Some(error)),
        payload(fail, t - 10, &first, None, Some(first_error)),
    ] {
        post_webhook(&mut procs, exporter_port, &body);
    }
    // The refusal must come after Prometheus has a sample of the over_limit counter at
    // 0, or increase() would see a series that starts at 1 and no increase at all.
    let over_limit = format!(
        "cloud66_ssl_exporter_webhooks_received_total{{job=\"{JOB}\",event_type=\"{ok}\",result=\"over_limit\"}} == 0"
    );
    wait_for(
        &mut procs,
        deadline_in(start, 30),
        "a scrape of the over_limit counter at 0",
        || query(prom_port, &over_limit),
    );
    let response = post_webhook_expecting(
        &mut procs,
        exporter_port,
        &payload(ok, t - 10, &refused, Some(t + 5 * DAY), None),
        422,
    );
    assert!(
        response.body.contains(&format!(
            "certificate limit reached: {MAX_CERTIFICATES} certificates are tracked"
        )),
        "{}",
        response.body
    );

    // --- Alertmanager receives exactly the expected alerts ----------------------------
    let soon_alert = "Cloud66SSLCertificateExpiringSoon";
    let very_soon = "Cloud66SSLCertificateExpiringVerySoon";
    let expired_alert = "Cloud66SSLCertificateExpired";
    let install_failing = "Cloud66SSLCertificateInstallFailing";
    let mut expected: Expected = vec![
        (soon_alert, "warning-14d", "active"),
        // Under 7 days: the warning is inhibited by the critical alert.
        (very_soon, "critical-3d", "active"),
        (soon_alert, "critical-3d", "suppressed"),
        // Expired: only Cloud66SSLCertificateExpired stays active.
        (expired_alert, "expired-2d", "active"),
        (very_soon, "expired-2d", "suppressed"),
        (soon_alert, "expired-2d", "suppressed"),
        // Failing installs, with and without a known expiry, are never inhibited.
        (install_failing, "failing", "active"),
        (install_failing, "first-seen-failing", "active"),
        // The refused certificate: only the exporter-level alert, which hides the
        // "limit near" warning of the same exporter. No `name` label.
        ("Cloud66SSLExporterCertificateLimitReached", "", "active"),
        ("Cloud66SSLExporterCertificateLimitNear", "", "suppressed"),
        // Known only from the API, 5 days left: the critical alert, the warning
        // inhibited. No Cloud66SSLExporterSyncFailing (the sync succeeded): the list
        // must match exactly, and its rule is checked inactive below.
        (very_soon, "api-only.example.com", "active"),
        (soon_alert, "api-only.example.com", "suppressed"),
    ];
    expected.sort();
    let expected_summary: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, n, s)| (a.to_string(), n.to_string(), s.to_string()))
        .collect();
    let fetch_alerts = || -> Result<Vec<Value>, String> {
        let r = get(am_port, "/api/v2/alerts").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.body));
        }
        let v: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
        Ok(v.as_array().cloned().unwrap_or_default())
    };
    let alerts = wait_for(
        &mut procs,
        deadline_in(start, 90),
        "the expected alerts in Alertmanager",
        || {
            let alerts = fetch_alerts()?;
            let got = alert_summary(&alerts);
            if got == expected_summary {
                Ok(alerts)
            } else {
                Err(format!(
                    "\nexpected (alertname, name, state):\n  {}\ngot:\n  {}",
                    lines(&expected_summary),
                    lines(&got)
                ))
            }
        },
    );
    // Still exactly these a few evaluations later (nothing else shows up, nothing flaps).
    std::thread::sleep(Duration::from_secs(3));
    let again = fetch_alerts().unwrap();
    assert_eq!(
        alert_summary(&again),
        expected_summary,
        "alerts changed{}",
        procs.logs()
    );

    let domains_of = |name: &str| -> &str {
        [
            &healthy, &routine, &warning, &critical, &expired, &failing, &first, &api_only,
        ]
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.domains)
        .unwrap()
    };
    let stack_of = |name: &str| -> i64 {
        [&warning, &critical, &expired, &failing, &first, &api_only]
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.stack)
            .unwrap()
    };
    for alert in &alerts {
        let labels = alert["labels"].as_object().unwrap();
        let alertname = labels["alertname"].as_str().unwrap();
        if alertname.starts_with("Cloud66SSLExporter") {
            check_limit_alert(alert, &instance);
            continue;
        }
        let name = labels["name"].as_str().unwrap();
        let severity = match alertname {
            "Cloud66SSLCertificateExpiringSoon" | "Cloud66SSLCertificateInstallFailing" => {
                "warning"
            }
            _ => "critical",
        };
        let expected_labels = json!({
            "alertname": alertname,
            "severity": severity,
            "job": JOB,
            "stack": stack_of(name).to_string(),
            "name": name,
        });
        assert_eq!(
            Value::Object(labels.clone()),
            expected_labels,
            "labels of {alertname} {name}"
        );

        let annotations = &alert["annotations"];
        let summary = annotations["summary"].as_str().unwrap();
        assert!(
            summary.ends_with('.') && !summary.contains("{{"),
            "{alertname}: summary {summary:?}"
        );
        assert_eq!(
            annotations["runbook_url"].as_str().unwrap(),
            format!("{RUNBOOK_URL_PREFIX}{}", alertname.to_lowercase())
        );
        let description = annotations["description"].as_str().unwrap();
        assert!(
            !description.contains("error expanding template"),
            "{alertname} {name}: {description}"
        );
        assert!(
            description.contains(&format!("\"{name}\"")),
            "{alertname}: certificate in {description:?}"
        );
        // The stack's name comes from cloud66_ssl_exporter_stack_info, which only the
        // API's stack has; the webhooks' stacks are shown by id alone.
        let stack = if stack_of(name) == API_STACK_ID {
            format!("stack {API_STACK_ID} ({API_STACK_NAME}) (domains: ")
        } else {
            format!("stack {} (domains: ", stack_of(name))
        };
        assert!(
            description.contains(&stack),
            "{alertname}: {stack:?} in {description:?}"
        );
        let domains = domains_of(name).replace(',', ", ");
        assert!(
            description.contains(&domains),
            "{alertname}: domains {domains:?} in {description:?}"
        );
        match (alertname, name) {
            ("Cloud66SSLCertificateInstallFailing", "failing") => {
                assert!(
                    description.contains(error),
                    "error message in {description:?}"
                );
                assert!(
                    description.contains("The certificate in place expires"),
                    "{description:?}"
                );
            }
            ("Cloud66SSLCertificateInstallFailing", _) => {
                assert!(
                    description.contains(first_error),
                    "error message in {description:?}"
                );
                assert!(
                    description.contains("No expiry is known yet"),
                    "{description:?}"
                );
            }
            ("Cloud66SSLCertificateExpired", _) => {
                assert!(description.contains("expired 2d"), "{description:?}")
            }
            (_, "warning-14d") => assert!(
                description.contains("expires in 13d 23h"),
                "{description:?}"
            ),
            (_, "critical-3d") => {
                assert!(description.contains("expires in 2d 23h"), "{description:?}")
            }
            (_, "api-only.example.com") => {
                assert!(description.contains("expires in 4d 23h"), "{description:?}")
            }
            _ => {}
        }
        let state = alert["status"]["state"].as_str().unwrap();
        eprintln!("{alertname} {{name={name:?}}} [{state}]: {description}");
        let inhibited_by = alert["status"]["inhibitedBy"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        assert_eq!(
            state == "suppressed",
            inhibited_by > 0,
            "{alertname} {name}: {}",
            alert["status"]
        );
    }

    // --- Prometheus: every rule healthy, every dashboard query returns data -----------
    let rules = get(prom_port, "/api/v1/rules").unwrap();
    let rules: Value = serde_json::from_str(&rules.body).unwrap();
    let mut rule_count = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_count += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} failed: {}",
                rule["name"], rule["lastError"]
            );
            if rule["name"] == "Cloud66SSLExporterSyncFailing" {
                assert_eq!(rule["state"], "inactive", "{rule}");
            }
        }
    }
    assert_eq!(
        rule_count, ALERT_RULES,
        "expected the alert rules to be loaded, got {rule_count}"
    );

    let queries: Vec<_> = dashboards::dashboard_queries()
        .into_iter()
        .map(|(what, expr)| (what, dashboards::substitute_grafana_variables(&expr)))
        .collect();
    assert!(
        queries.len() > 10,
        "expected the dashboards' queries, got {}",
        queries.len()
    );
    for (what, expr) in &queries {
        let series = wait_for(
            &mut procs,
            deadline_in(start, 60),
            &format!("data for {what}"),
            || query(prom_port, expr).map_err(|e| format!("{what}: {e}")),
        );
        assert!(!series.is_empty());
    }

    procs.assert_running();
    // The exporter first, then the fake API and the runtime serving it.
    drop(procs);
    drop(fake);
    drop(rt);
    eprintln!(
        "end-to-end test: {} alerts checked in Alertmanager, {} dashboard queries returned data, \
         finished in {:.1?}",
        alerts.len(),
        queries.len(),
        start.elapsed()
    );
}

//! Static checks of the observability artifacts shipped with the exporter:
//!
//! - `alerts/cloud66-ssl-exporter.rules.yml`: `promtool check rules --lint-fatal`, the
//!   `promtool test rules` unit tests in `alerts/tests/`, coverage of every alert by
//!   firing and not-firing unit tests, and the alert conventions (for, severity,
//!   summary, description, runbook URL with a matching section in `docs/runbooks.md`);
//! - `examples/prometheus.yml` (`promtool check config`) and `examples/alertmanager.yml`
//!   (`amtool check-config`, `amtool config routes test --verify.receivers` for every
//!   alert);
//! - `dashboards/*.json`: the Grafana conventions (stable uid, schemaVersion 39,
//!   `__inputs: []`, `__requires`, `${datasource}` everywhere, units, descriptions,
//!   variables), and every query parses as PromQL (written as recording rules and
//!   checked by `promtool check rules`);
//! - alerts and dashboards only use metrics, and `result` label values, the exporter
//!   emits (checked against the golden exposition `tests/golden/metrics.txt`, or, for
//!   the Cloud66 API sync metrics that exporter lacks, listed in `SYNC_METRICS`).
//!
//! The tools come from the Debian packages `prometheus` and `prometheus-alertmanager`
//! (Prometheus 2.42, Alertmanager 0.25). A missing tool fails the test: it never passes
//! silently.

mod common;

use common::sync::SYNC_METRICS;
use common::{dashboards, tool};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const RULES: &str = "alerts/cloud66-ssl-exporter.rules.yml";
const RULE_TESTS_DIR: &str = "alerts/tests";
const RUNBOOKS: &str = "docs/runbooks.md";
const PROMETHEUS_EXAMPLE: &str = "examples/prometheus.yml";
const ALERTMANAGER_EXAMPLE: &str = "examples/alertmanager.yml";
/// The exporter's `/metrics`, kept in sync with the code by tests/exposition.rs.
const GOLDEN_METRICS: &str = "tests/golden/metrics.txt";
const RUNBOOK_URL_PREFIX: &str =
    "https://github.com/cloud66-ssl-exporter/cloud66-ssl-exporter/blob/main/docs/runbooks.md#";
const JOB_SELECTOR: &str = r#"job="cloud66-ssl-exporter""#;

/// The dashboards, with their stable uids and the variables each must have.
const DASHBOARDS: &[(&str, &str, &[&str])] = &[
    (
        "dashboards/cloud66-ssl-certificates.json",
        "cloud66-ssl-certificates",
        &["datasource", "job", "stack", "name"],
    ),
    (
        "dashboards/cloud66-ssl-exporter.json",
        "cloud66-ssl-exporter",
        &["datasource", "job", "instance"],
    ),
];

/// Every metric the exporter emits without a Cloud66 API token (plus Prometheus' own
/// `up`), all in the golden exposition. Alerts and dashboards may use nothing else but
/// these and `SYNC_METRICS`.
const KNOWN_METRICS: &[&str] = &[
    "up",
    "ssl_cert_days_until_expiry",
    "ssl_cert_expiry_timestamp_seconds",
    "ssl_install_failures_total",
    "ssl_install_successes_total",
    "ssl_expire_soon_notifications_total",
    "ssl_cert_install_failing",
    "ssl_cert_last_event_timestamp_seconds",
    "ssl_cert_info",
    "ssl_cert_install_error_info",
    "cloud66_ssl_exporter_webhooks_received_total",
    "cloud66_ssl_exporter_storage_commit_failures_total",
    "cloud66_ssl_exporter_last_webhook_timestamp_seconds",
    "cloud66_ssl_exporter_certificates",
    "cloud66_ssl_exporter_certificates_limit",
    "cloud66_ssl_exporter_storage_commit_duration_seconds_bucket",
    "cloud66_ssl_exporter_storage_commit_duration_seconds_sum",
    "cloud66_ssl_exporter_storage_commit_duration_seconds_count",
    "cloud66_ssl_exporter_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
];

/// Metrics only PostgreSQL storage emits (`--storage.postgres.url`), so they are not in
/// the golden exposition, which comes from an exporter with embedded storage. Alerts and
/// dashboards may use them too.
const POSTGRES_METRICS: &[&str] = &[
    "cloud66_ssl_exporter_storage_tail_lag_seconds",
    "cloud66_ssl_exporter_leader",
];

/// Receiver of each severity in `examples/alertmanager.yml`.
const RECEIVERS: &[(&str, &str)] = &[
    ("critical", "pager"),
    ("warning", "tickets"),
    ("info", "null"),
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn output_text(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command in the crate root and returns its output, whatever the exit status.
fn run(mut cmd: Command) -> (String, Output) {
    cmd.current_dir(root());
    let what = describe(&cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    (what, out)
}

/// Runs a command in the crate root and fails the test unless it succeeds; returns
/// stdout and stderr together.
fn run_ok(cmd: Command) -> String {
    let (what, out) = run(cmd);
    assert!(
        out.status.success(),
        "`{what}` failed\n{}",
        output_text(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn promtool() -> Command {
    Command::new(tool("promtool"))
}

fn amtool() -> Command {
    Command::new(tool("amtool"))
}

// ---------------------------------------------------------------------------------------
// A small reader for the rules file. The file is plain YAML written by us in a fixed
// layout (`- alert:` items with `expr`, `for`, `labels`, `annotations`); no YAML crate is
// available, so this reads that layout and fails loudly on anything unexpected.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    for_: Option<String>,
    severity: Option<String>,
    summary: Option<String>,
    description: Option<String>,
    runbook_url: Option<String>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Reads a scalar value starting at `lines[i]` (after `key:`); handles plain, quoted and
/// block (`|`, `>-`) scalars. Block scalars are returned with their lines joined by
/// `\n` (literal) or a space (folded), which is enough for the checks below.
fn scalar(lines: &[&str], i: usize, rest: &str) -> String {
    let rest = rest.trim();
    if rest == "|" || rest == "|-" || rest == ">" || rest == ">-" {
        let key_indent = indent_of(lines[i]);
        let sep = if rest.starts_with('|') { "\n" } else { " " };
        let mut parts = Vec::new();
        for line in &lines[i + 1..] {
            if !line.trim().is_empty() && indent_of(line) <= key_indent {
                break;
            }
            parts.push(line.trim());
        }
        return parts.join(sep).trim().to_owned();
    }
    if rest.len() >= 2
        && ((rest.starts_with('\'') && rest.ends_with('\''))
            || (rest.starts_with('"') && rest.ends_with('"')))
    {
        return rest[1..rest.len() - 1].to_owned();
    }
    rest.to_owned()
}

fn parse_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<Rule> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: name.trim().to_owned(),
                ..Rule::default()
            });
            continue;
        }
        if trimmed.starts_with("- record:") {
            panic!("{RULES} should only hold alerting rules, found: {trimmed}");
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let value = || scalar(&lines, i, rest);
        match key {
            "expr" => rule.expr = value(),
            "for" => rule.for_ = Some(value()),
            "severity" => rule.severity = Some(value()),
            "summary" => rule.summary = Some(value()),
            "description" => rule.description = Some(value()),
            "runbook_url" => rule.runbook_url = Some(value()),
            _ => {}
        }
    }
    assert!(!rules.is_empty(), "no alert found in {RULES}");
    rules
}

fn rules() -> Vec<Rule> {
    parse_rules(&read(RULES))
}

/// The unit test files in `alerts/tests/`, sorted.
fn rule_test_files() -> Vec<String> {
    let dir = root().join(RULE_TESTS_DIR);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml") || name.ends_with(".yaml"))
        .map(|name| format!("{RULE_TESTS_DIR}/{name}"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no promtool unit test file in {RULE_TESTS_DIR}/"
    );
    files
}

/// Identifiers in a PromQL expression (or template) that look like metric names of the
/// exporter, Prometheus' `up` or the process collector.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        if current.starts_with("ssl_")
            || current.starts_with("cloud66_")
            || current.starts_with("process_")
            || current == "up"
        {
            names.insert(current.clone());
        }
        current.clear();
    };
    let mut previous = ' ';
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            // Skip identifiers glued to other text, e.g. `$__rate_interval`.
            if current.is_empty() && (previous == '$' || previous == '.') {
                current.push('\u{0}');
            }
            current.push(c);
        } else {
            flush(&mut current);
        }
        previous = c;
    }
    flush(&mut current);
    names
}

/// Values of the `result` label in matchers and samples (`result="x"`,
/// `result=~"x|y"`), also inside templates where the quotes are escaped.
fn result_values(text: &str) -> Vec<String> {
    let text = text.replace("\\\"", "\"");
    let mut values = Vec::new();
    for (i, _) in text.match_indices("result=") {
        // Not a label name merely ending in `result`.
        if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = text[i + "result=".len()..].trim_start_matches('~');
        let Some((value, _)) = rest.strip_prefix('"').and_then(|r| r.split_once('"')) else {
            continue;
        };
        values.extend(value.split('|').map(str::to_owned));
    }
    values
}

/// The metric names and the `result` values of
/// `cloud66_ssl_exporter_webhooks_received_total` in the golden exposition.
fn golden_exposition() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read(GOLDEN_METRICS);
    let mut names = BTreeSet::new();
    let mut results = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if name == "cloud66_ssl_exporter_webhooks_received_total" {
            results.extend(result_values(line));
        }
        names.insert(name.to_owned());
    }
    (names, results)
}

fn assert_known_metrics(what: &str, text: &str) {
    for name in metric_names(text) {
        assert!(
            KNOWN_METRICS.contains(&name.as_str())
                || SYNC_METRICS.contains(&name.as_str())
                || POSTGRES_METRICS.contains(&name.as_str()),
            "{what} uses `{name}`, which the exporter does not emit"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------------------

/// `promtool check rules --lint-fatal`: valid rules, valid PromQL and templates, no
/// duplicate rules (the lint available in 2.42).
#[test]
fn rules_pass_promtool_check_rules() {
    let mut cmd = promtool();
    cmd.args(["check", "rules", "--lint-fatal", RULES]);
    let out = run_ok(cmd);
    let expected = format!("SUCCESS: {} rules found", rules().len());
    assert!(out.contains(&expected), "expected `{expected}` in:\n{out}");
}

/// `promtool test rules alerts/tests/*.yml`: the unit tests pass.
#[test]
fn rule_unit_tests_pass() {
    let files = rule_test_files();
    let mut cmd = promtool();
    cmd.args(["test", "rules"]).args(&files);
    let out = run_ok(cmd);
    assert!(
        !out.contains("FAILED"),
        "promtool reported a failure:\n{out}"
    );
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "every test file must report SUCCESS:\n{out}"
    );
}

/// Each item of the top-level `tests:` list (a test group) must set `interval:`.
fn check_intervals(file: &str, lines: &[&str]) {
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "tests:")
        .unwrap_or_else(|| panic!("{file}: no top-level `tests:`"));
    let mut groups: Vec<Vec<&str>> = Vec::new();
    for line in &lines[start + 1..] {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = indent_of(line);
        if indent == 0 {
            break;
        }
        if line.trim_start().starts_with("- ")
            && groups.last().is_none_or(|g| indent <= indent_of(g[0]))
        {
            groups.push(vec![line]);
        } else if let Some(group) = groups.last_mut() {
            group.push(line);
        }
    }
    assert!(!groups.is_empty(), "{file}: no test group");
    for group in groups {
        let group_indent = indent_of(group[0]);
        let has_interval = group.iter().enumerate().any(|(i, l)| {
            let t = l.trim_start();
            (i == 0 && t.starts_with("- interval:"))
                || (indent_of(l) == group_indent + 2 && t.starts_with("interval:"))
        });
        assert!(
            has_interval,
            "{file}: test group {:?} has no `interval:` (required by promtool 2.42)",
            group[0].trim()
        );
    }
}

/// Every test group sets `interval` (Prometheus 2.42 has no default from
/// `evaluation_interval`), and every alert has at least one firing and one not-firing
/// case with exact labels and annotations.
#[test]
fn every_alert_has_firing_and_not_firing_unit_tests() {
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_firing: BTreeMap<String, usize> = BTreeMap::new();
    for file in rule_test_files() {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        check_intervals(&file, &lines);
        let mut current: Option<String> = None;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("alertname:") {
                current = Some(name.trim().to_owned());
            } else if let Some(rest) = t.strip_prefix("exp_alerts:") {
                let alert = current
                    .take()
                    .unwrap_or_else(|| panic!("{file}:{}: exp_alerts without alertname", i + 1));
                if rest.trim() == "[]" {
                    *not_firing.entry(alert).or_default() += 1;
                } else {
                    // A firing case must pin labels and annotations exactly.
                    let case: Vec<&str> = lines[i + 1..]
                        .iter()
                        .take_while(|l| !l.trim_start().starts_with("- eval_time:"))
                        .copied()
                        .collect();
                    let case = case.join("\n");
                    for needle in [
                        "exp_labels:",
                        "severity:",
                        "exp_annotations:",
                        "summary:",
                        "description:",
                        "runbook_url:",
                    ] {
                        assert!(
                            case.contains(needle),
                            "{file}:{}: firing case of {alert} lacks `{needle}`",
                            i + 1
                        );
                    }
                    *firing.entry(alert).or_default() += 1;
                }
            }
        }
    }
    for rule in rules() {
        assert!(
            firing.contains_key(&rule.alert),
            "no unit test where {} fires",
            rule.alert
        );
        assert!(
            not_firing.contains_key(&rule.alert),
            "no unit test where {} does not fire",
            rule.alert
        );
    }
    let names: BTreeSet<String> = rules().into_iter().map(|r| r.alert).collect();
    for tested in firing.keys().chain(not_firing.keys()) {
        assert!(
            names.contains(tested),
            "unit tests name an unknown alert {tested}"
        );
    }
}

/// Alert conventions: CamelCase names with the common prefix, `for`, a severity,
/// static summary ending with a period, templated description naming stack (and its
/// name from `cloud66_ssl_exporter_stack_info` when known), certificate and domains for
/// certificate alerts, the job selector, and a runbook URL
/// whose section exists in docs/runbooks.md.
#[test]
fn alerts_follow_conventions() {
    let runbooks = read(RUNBOOKS);
    let headings: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut seen = BTreeSet::new();
    for rule in rules() {
        let name = &rule.alert;
        assert!(seen.insert(name.clone()), "duplicate alert {name}");
        assert!(
            name.starts_with("Cloud66SSL"),
            "{name}: names share the Cloud66SSL prefix"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric())
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && !name.ends_with(|c: char| c.is_ascii_uppercase()),
            "{name}: CamelCase (mixtool's ^([A-Z]+[a-z0-9]+)+$)"
        );
        let for_ = rule
            .for_
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no `for`"));
        assert!(
            !for_.is_empty() && for_ != "0s" && for_ != "0m",
            "{name}: empty `for`"
        );
        let severity = rule
            .severity
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no severity"));
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?} is not critical, warning or info"
        );
        let summary = rule
            .summary
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no summary"));
        assert!(
            summary.starts_with(|c: char| c.is_ascii_uppercase()) && summary.ends_with('.'),
            "{name}: summary must be a sentence ending with a period: {summary:?}"
        );
        assert!(!summary.contains("{{"), "{name}: summary must be static");
        let description = rule
            .description
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no description"));
        assert!(
            description.contains("{{"),
            "{name}: description must be templated"
        );
        if name.starts_with("Cloud66SSLCertificate") {
            for needle in [
                "$labels.stack",
                "cloud66_ssl_exporter_stack_info",
                "$labels.name",
                "server_names",
            ] {
                assert!(
                    description.contains(needle),
                    "{name}: description must name stack (with its name when known), \
                     certificate and domains (missing {needle})"
                );
            }
        }
        assert!(
            rule.expr.contains(JOB_SELECTOR),
            "{name}: expr must use the job selector {JOB_SELECTOR}"
        );
        let url = rule
            .runbook_url
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        assert_eq!(
            url,
            format!("{RUNBOOK_URL_PREFIX}{}", name.to_lowercase()),
            "{name}: runbook_url"
        );
        assert!(
            headings.contains(&name.to_lowercase()),
            "{name}: {RUNBOOKS} has no `## {name}` section"
        );
        let section = runbooks
            .split(&format!("## {name}\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        for part in ["### What it means", "### How to check", "### How to fix"] {
            assert!(
                section.contains(part),
                "{RUNBOOKS}, section {name}: missing `{part}`"
            );
        }
        assert_known_metrics(&format!("alert {name}"), &rule.expr);
        assert_known_metrics(&format!("alert {name} (description)"), description);
    }
}

/// The install-failing alert must not depend on an expiry series (certificates first
/// seen failing have none) and must not carry the changing error text as a label.
#[test]
fn install_failing_alert_works_without_expiry_and_keeps_error_out_of_labels() {
    let rule = rules()
        .into_iter()
        .find(|r| r.alert == "Cloud66SSLCertificateInstallFailing")
        .expect("Cloud66SSLCertificateInstallFailing exists");
    assert!(
        rule.expr.contains("ssl_cert_install_failing"),
        "{}",
        rule.expr
    );
    assert!(
        !rule.expr.contains("expiry"),
        "must not need an expiry: {}",
        rule.expr
    );
    assert!(
        !rule.expr.contains("error"),
        "error text must not become a label: {}",
        rule.expr
    );
    let description = rule.description.unwrap();
    assert!(
        description.contains("ssl_cert_install_error_info"),
        "{description}"
    );
}

/// The certificate-limit alerts follow the limit the exporter reports
/// (`--storage.max-certificates`) instead of a number written into the rules, and a
/// refused certificate pages: nothing else can ever alert on it.
#[test]
fn certificate_limit_alerts_follow_the_configured_limit() {
    let rules = rules();
    let find = |name: &str| {
        rules
            .iter()
            .find(|r| r.alert == name)
            .unwrap_or_else(|| panic!("{name} exists"))
    };
    let near = find("Cloud66SSLExporterCertificateLimitNear");
    for metric in [
        "cloud66_ssl_exporter_certificates{",
        "cloud66_ssl_exporter_certificates_limit{",
    ] {
        assert!(near.expr.contains(metric), "{metric} in {}", near.expr);
    }
    assert!(
        !near.expr.contains("10000"),
        "the limit must come from cloud66_ssl_exporter_certificates_limit: {}",
        near.expr
    );
    assert_eq!(near.severity.as_deref(), Some("warning"));
    let reached = find("Cloud66SSLExporterCertificateLimitReached");
    assert!(
        reached.expr.contains(r#"result="over_limit""#),
        "{}",
        reached.expr
    );
    assert_eq!(reached.severity.as_deref(), Some("critical"));
}

/// The sync alert reads the interval from the exporter (`--cloud66.sync-interval`)
/// instead of a number written into the rules, never fires merely because the exporter
/// just started, relies only on metrics that exist with an API token (so an exporter
/// without one stays quiet), and points at the errors by reason.
#[test]
fn sync_failing_alert_follows_the_configured_interval() {
    let rule = rules()
        .into_iter()
        .find(|r| r.alert == "Cloud66SSLExporterSyncFailing")
        .expect("Cloud66SSLExporterSyncFailing exists");
    for needle in [
        "cloud66_ssl_exporter_sync_last_success_timestamp_seconds{",
        "3 * cloud66_ssl_exporter_sync_interval_seconds{",
        "process_start_time_seconds{",
        "and on (job, instance)",
    ] {
        assert!(rule.expr.contains(needle), "{needle} in {}", rule.expr);
    }
    assert!(
        !rule.expr.contains("3600") && !rule.expr.contains("10800"),
        "the interval must come from cloud66_ssl_exporter_sync_interval_seconds: {}",
        rule.expr
    );
    assert_eq!(rule.severity.as_deref(), Some("warning"));
    let description = rule.description.unwrap();
    assert!(
        description.contains("cloud66_ssl_exporter_sync_errors_total"),
        "{description}"
    );
    let rules_text = read(RULES);
    let header = rules_text.split("\ngroups:").next().unwrap();
    assert!(
        header.contains("Cloud66SSLExporterSyncFailing"),
        "the settings header of {RULES} must list the sync alert's threshold"
    );
}

/// Alerts and dashboards use only metric names and `result` values the exporter really
/// emits, taken from the golden exposition. A misspelt selector (`result="overlimit"`)
/// would still pass the promtool unit tests, whose input series are written by hand,
/// and the alert would never fire. The sync metrics (`SYNC_METRICS`) are accepted
/// without being in the golden exposition: that exporter has no API token, and they must
/// stay absent without one (Cloud66SSLExporterSyncFailing relies on that to stay quiet).
/// tests/cloud66_sync.rs checks them against an exporter with a token.
#[test]
fn alerts_and_dashboards_match_the_golden_exposition() {
    let (names, results) = golden_exposition();
    for metric in KNOWN_METRICS.iter().filter(|m| **m != "up") {
        assert!(
            names.contains(*metric),
            "{metric} is not in {GOLDEN_METRICS}: the exporter does not emit it"
        );
    }
    for metric in SYNC_METRICS {
        assert!(
            !KNOWN_METRICS.contains(metric),
            "{metric} is in both KNOWN_METRICS and SYNC_METRICS"
        );
        assert!(
            !names.contains(*metric),
            "{metric} is in {GOLDEN_METRICS}, an exporter without an API token: sync \
             metrics must exist only when a token is configured"
        );
    }
    for metric in POSTGRES_METRICS {
        assert!(
            !KNOWN_METRICS.contains(metric) && !SYNC_METRICS.contains(metric),
            "{metric} is in POSTGRES_METRICS and another list"
        );
        assert!(
            !names.contains(*metric),
            "{metric} is in {GOLDEN_METRICS}, an exporter with embedded storage: it must \
             exist only with PostgreSQL storage"
        );
    }
    let mut sync_used: BTreeSet<String> = metric_names(&read(RULES));
    for (_, expr) in dashboards::dashboard_queries() {
        sync_used.extend(metric_names(&expr));
    }
    sync_used.retain(|name| SYNC_METRICS.contains(&name.as_str()));
    for expected in [
        "cloud66_ssl_exporter_sync_last_success_timestamp_seconds",
        "cloud66_ssl_exporter_sync_interval_seconds",
        "cloud66_ssl_exporter_stack_info",
    ] {
        assert!(
            sync_used.contains(expected),
            "no rule or dashboard uses {expected} (parser broken?)"
        );
    }
    let mut used: Vec<(String, String)> = result_values(&read(RULES))
        .into_iter()
        .map(|value| (RULES.to_owned(), value))
        .collect();
    for (what, expr) in dashboards::dashboard_queries() {
        used.extend(result_values(&expr).into_iter().map(|v| (what.clone(), v)));
    }
    for expected in ["unauthorized", "unavailable", "over_limit"] {
        assert!(
            used.iter().any(|(_, value)| value == expected),
            "no rule or dashboard selects result=\"{expected}\" (parser broken?)"
        );
    }
    for (what, value) in used {
        assert!(
            results.contains(&value),
            "{what} selects result=\"{value}\", which the exporter never emits \
             (known: {results:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------

/// `promtool check config examples/prometheus.yml`, which also loads the rules through
/// the relative `rule_files` path.
#[test]
fn example_prometheus_config_is_valid() {
    let mut cmd = promtool();
    cmd.args(["check", "config", PROMETHEUS_EXAMPLE]);
    let out = run_ok(cmd);
    assert!(
        out.contains("SUCCESS: 1 rule files found"),
        "rule file not loaded:\n{out}"
    );
    let expected = format!("SUCCESS: {} rules found", rules().len());
    assert!(out.contains(&expected), "expected `{expected}` in:\n{out}");
    let config = read(PROMETHEUS_EXAMPLE);
    assert!(
        config.contains("job_name: cloud66-ssl-exporter"),
        "scrape job name"
    );
    assert!(config.contains(":10066"), "default exporter port");
}

#[test]
fn example_alertmanager_config_is_valid() {
    let mut cmd = amtool();
    cmd.args(["check-config", ALERTMANAGER_EXAMPLE]);
    let out = run_ok(cmd);
    assert!(out.contains("SUCCESS"), "{out}");
}

fn route_test(receiver: &str, labels: &[String]) -> (String, Output) {
    let mut cmd = amtool();
    cmd.args([
        "config",
        "routes",
        "test",
        &format!("--config.file={ALERTMANAGER_EXAMPLE}"),
        &format!("--verify.receivers={receiver}"),
    ]);
    cmd.args(labels);
    run(cmd)
}

/// `amtool config routes test --verify.receivers`: every alert reaches the receiver of
/// its severity; a wrong expectation is detected (so the check can fail at all).
#[test]
fn example_alertmanager_routes_every_alert_by_severity() {
    for rule in rules() {
        let severity = rule.severity.clone().unwrap();
        let receiver = RECEIVERS
            .iter()
            .find(|(s, _)| *s == severity)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("no receiver for severity {severity}"));
        let mut labels = vec![
            format!("alertname={}", rule.alert),
            format!("severity={severity}"),
            "job=cloud66-ssl-exporter".to_owned(),
            "instance=exporter:10066".to_owned(),
        ];
        if rule.alert.starts_with("Cloud66SSLCertificate") {
            labels.push("stack=123".to_owned());
            labels.push("name=Awesome SSL Certificate".to_owned());
        }
        let (what, out) = route_test(receiver, &labels);
        assert!(
            out.status.success(),
            "`{what}` failed\n{}",
            output_text(&out)
        );

        let wrong = if receiver == "pager" {
            "tickets"
        } else {
            "pager"
        };
        let (what, out) = route_test(wrong, &labels);
        assert!(
            !out.status.success(),
            "`{what}` should fail: {} must not reach {wrong}\n{}",
            rule.alert,
            output_text(&out)
        );
    }
}

/// The inhibit rules of the example: critical hides the expiry warning of the same
/// certificate only, and the install-failure warning stays visible.
#[test]
fn example_alertmanager_inhibits_warning_for_same_certificate() {
    let config = read(ALERTMANAGER_EXAMPLE);
    assert!(config.contains("inhibit_rules:"));
    assert!(config.contains(r#"- severity="critical""#));
    assert!(config.contains(r#"- alertname=~"Cloud66SSLCertificateExpiring.*""#));
    assert!(config.contains("equal: [job, stack, name]"));
}

/// While an exporter refuses new certificates (critical), the warning that its limit is
/// nearly full is inhibited for the same job and instance.
#[test]
fn example_alertmanager_inhibits_limit_near_while_refusing() {
    let config = read(ALERTMANAGER_EXAMPLE);
    let rule = config
        .split("- source_matchers:")
        .find(|rule| rule.contains(r#"- alertname="Cloud66SSLExporterCertificateLimitReached""#))
        .expect("an inhibit rule with Cloud66SSLExporterCertificateLimitReached as source");
    assert!(
        rule.contains("target_matchers:")
            && rule.contains(r#"- alertname="Cloud66SSLExporterCertificateLimitNear""#),
        "{rule}"
    );
    assert!(rule.contains("equal: [job, instance]"), "{rule}");
}

// ---------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------

fn load_dashboard(path: &str) -> Value {
    let text = read(path);
    assert!(
        !text.contains("${DS_"),
        "{path}: uses a ${{DS_...}} import input"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}"))
}

/// Panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels array") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

fn datasource_is_variable(value: &Value) -> bool {
    value["uid"] == "${datasource}" && value["type"] == "prometheus"
}

#[test]
fn dashboards_follow_grafana_conventions() {
    for (path, uid, variables) in DASHBOARDS {
        let d = load_dashboard(path);
        assert_eq!(d["uid"], *uid, "{path}: stable uid");
        assert_eq!(d["schemaVersion"], 39, "{path}: schemaVersion");
        assert_eq!(
            d["__inputs"],
            Value::Array(vec![]),
            "{path}: __inputs must be []"
        );
        assert!(d["id"].is_null(), "{path}: id must be null");
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Cloud66 / ")),
            "{path}: title"
        );
        assert!(
            d["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{path}: dashboard description"
        );
        let tags = d["tags"].as_array().expect("tags");
        assert!(tags.iter().any(|t| t == "cloud66"), "{path}: tags");

        // __requires: Grafana, the Prometheus data source and every panel type used.
        let requires = d["__requires"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: __requires"));
        let required: BTreeSet<(String, String)> = requires
            .iter()
            .map(|r| {
                (
                    r["type"].as_str().unwrap_or_default().to_owned(),
                    r["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert!(
            required.contains(&("grafana".into(), "grafana".into())),
            "{path}: requires grafana"
        );
        assert!(
            required.contains(&("datasource".into(), "prometheus".into())),
            "{path}: requires prometheus"
        );

        // Variables.
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        for name in *variables {
            assert!(
                vars.iter().any(|v| v["name"] == *name),
                "{path}: variable {name} missing"
            );
        }
        for var in vars {
            let name = var["name"].as_str().unwrap_or_default();
            if name == "datasource" {
                assert_eq!(var["type"], "datasource", "{path}: $datasource type");
                assert_eq!(var["query"], "prometheus", "{path}: $datasource query");
            } else if var["type"] == "query" {
                assert!(
                    datasource_is_variable(&var["datasource"]),
                    "{path}: variable {name} datasource"
                );
                assert_eq!(
                    var["refresh"], 2,
                    "{path}: variable {name} refreshes on time range change"
                );
            }
        }

        // Panels.
        let mut ids = BTreeSet::new();
        let mut cells: BTreeSet<(i64, i64)> = BTreeSet::new();
        for panel in panels(&d) {
            let title = panel["title"].as_str().unwrap_or("<untitled>");
            let kind = panel["type"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{path}: duplicate id ({title})"
            );
            if kind == "row" {
                continue;
            }
            assert!(
                required.contains(&("panel".into(), kind.to_owned())),
                "{path}: __requires lacks panel type {kind}"
            );
            assert!(
                panel["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{path}: panel {title:?} has no description"
            );
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{path}: panel {title:?} has no unit"
            );
            assert!(
                datasource_is_variable(&panel["datasource"]),
                "{path}: panel {title:?} datasource"
            );
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: {title:?} targets"));
            assert!(!targets.is_empty(), "{path}: panel {title:?} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    datasource_is_variable(&t["datasource"]),
                    "{path}: {title:?} target datasource"
                );
                assert!(
                    refs.insert(t["refId"].as_str().unwrap_or_default()),
                    "{path}: {title:?} refId"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{path}: {title:?} empty expr"
                );
            }
            // The layout: inside 24 columns, no two panels on the same cell.
            let g = &panel["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap(),
                g["y"].as_i64().unwrap(),
                g["w"].as_i64().unwrap(),
                g["h"].as_i64().unwrap(),
            );
            assert!(
                x >= 0 && w > 0 && x + w <= 24 && h > 0,
                "{path}: {title:?} gridPos"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{path}: {title:?} overlaps another panel"
                    );
                }
            }
        }
    }
}

/// Every dashboard query parses: written as recording rules and checked with
/// `promtool check rules`. Also checks they only use metrics the exporter emits.
#[test]
fn dashboard_queries_parse_as_promql() {
    let queries = dashboards::dashboard_queries();
    assert!(
        queries.len() > 10,
        "expected the dashboards' queries, got {}",
        queries.len()
    );
    let mut yaml = String::from(
        "# Generated by tests/observability.rs from dashboards/*.json\ngroups:\n  - name: dashboard-queries\n    rules:\n",
    );
    for (i, (what, expr)) in queries.iter().enumerate() {
        assert_known_metrics(what, expr);
        let expr = dashboards::substitute_grafana_variables(expr);
        yaml.push_str(&format!("      # {what}\n"));
        yaml.push_str(&format!("      - record: dashboard_query:{i}\n"));
        // A JSON string is a valid YAML double-quoted scalar.
        yaml.push_str(&format!(
            "        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.rules.yml");
    std::fs::write(&file, &yaml).unwrap();
    let mut cmd = promtool();
    cmd.args(["check", "rules"]).arg(&file);
    let (what, out) = run(cmd);
    assert!(
        out.status.success(),
        "`{what}` failed: a dashboard query does not parse\n{}\n--- rules ---\n{yaml}",
        output_text(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{text}"
    );
}

#[test]
fn provisioning_examples_exist() {
    let dashboards = read("dashboards/provisioning/dashboards.yaml");
    assert!(dashboards.contains("apiVersion: 1") && dashboards.contains("type: file"));
    let datasources = read("dashboards/provisioning/datasources.yaml");
    assert!(datasources.contains("apiVersion: 1") && datasources.contains("type: prometheus"));
}

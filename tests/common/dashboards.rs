//! The queries of the shipped Grafana dashboards, for the tests that parse them with
//! promtool and run them against a real Prometheus.

use serde_json::Value;

/// Every query of `dashboards/*.json`: each panel target's `expr` and each query
/// variable's selector, labelled for messages, as written (Grafana variables and all).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("dashboard readable");
        let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
        let uid = dashboard["uid"].as_str().unwrap_or("?").to_owned();
        let top = dashboard["panels"].as_array().into_iter().flatten();
        // Rows carry their collapsed panels inside them.
        let panels = top
            .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()));
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let what = format!(
                    "{uid} panel {} ({}) {}",
                    panel["id"], panel["title"], target["refId"]
                );
                queries.push((what, target["expr"].as_str().unwrap_or_default().to_owned()));
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or_default();
            // label_values(<selector>, <label>) -> <selector>
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(selector, _)| selector.trim().to_owned())
                .unwrap_or_else(|| panic!("{uid}: unexpected variable query {query}"));
            queries.push((format!("{uid} variable {}", var["name"]), selector));
        }
    }
    queries
}

/// Replaces Grafana's variables by values Prometheus accepts.
pub fn substitute_grafana_variables(expr: &str) -> String {
    let mut s = expr.to_owned();
    for (from, to) in [
        ("$__rate_interval", "5m"),
        ("${__rate_interval}", "5m"),
        ("$__interval", "1m"),
        ("${__interval}", "1m"),
        ("$__range", "1h"),
        ("${__range}", "1h"),
        ("${job}", ".*"),
        ("${stack}", ".*"),
        ("${name}", ".*"),
        ("${instance}", ".*"),
        ("$job", ".*"),
        ("$stack", ".*"),
        ("$name", ".*"),
        ("$instance", ".*"),
    ] {
        s = s.replace(from, to);
    }
    assert!(!s.contains('$'), "unknown Grafana variable left in {expr}");
    s
}

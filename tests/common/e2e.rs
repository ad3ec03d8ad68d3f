//! What the end-to-end tests with a real Prometheus share: the repository root, free
//! ports, times as the payloads and Prometheus write them, and the shipped rules with
//! every `for:` shortened so alerts fire within the test.

use std::net::TcpListener;
use std::path::Path;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// The shipped alert rules, relative to the repository root.
pub const RULES: &str = "alerts/cloud66-ssl-exporter.rules.yml";

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago (the small race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Now, in whole Unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Unix seconds as RFC 3339 UTC (`2024-02-01T00:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `text` percent-encoded for a query value.
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// The shipped rules with every `for:` rewritten to `1s`; there must be `alerts` of them.
pub fn fast_rules(alerts: usize) -> String {
    let rules = std::fs::read_to_string(root().join(RULES)).expect("the shipped rules");
    let mut shortened = 0;
    let fast: String = rules
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for: ") {
                shortened += 1;
                format!("{}for: 1s\n", &line[..line.len() - trimmed.len()])
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(
        shortened, alerts,
        "expected a `for:` per alert, rewrote {shortened}"
    );
    fast
}

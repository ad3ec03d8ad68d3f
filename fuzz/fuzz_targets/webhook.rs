//! Fuzzes webhook parsing, state updates and the scrape body with arbitrary bytes.
//!
//! Every body `webhook::parse` accepts as an SSL event is applied to a `Certificate`,
//! which is then rendered; the target checks that a rejection's message is one
//! non-empty line, that accepted events hold the invariants the rest of the exporter
//! relies on, and that the scrape body is UTF-8 with well-formed, balanced label quoting.
//!
//! Run from the repository root (cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1`
//! lets a stable toolchain accept them):
//!
//! ```sh
//! cargo install cargo-fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run webhook -- -max_total_time=600
//! RUSTC_BOOTSTRAP=1 cargo fuzz coverage webhook   # coverage of the corpus
//! ```
//!
//! The corpus in `fuzz/corpus/webhook/` starts from `tests/fixtures/cloud66/*.json`;
//! crashes land in `fuzz/artifacts/webhook/` and are replayed with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run webhook fuzz/artifacts/webhook/<file>`.
#![no_main]

use std::sync::{Arc, OnceLock};

use cloud66_ssl_exporter::event::{Delivery, EventKind};
use cloud66_ssl_exporter::metrics::Metrics;
use cloud66_ssl_exporter::state::Certificate;
use cloud66_ssl_exporter::webhook;
use libfuzzer_sys::fuzz_target;

/// One registry for the whole run: creating one per input would dominate the time.
fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new().expect("the self-metrics register"))
}

fuzz_target!(|body: &[u8]| {
    let event = match webhook::parse(body) {
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "empty error message");
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
            return;
        }
        Ok(Delivery::Other { event_type }) => {
            assert!(EventKind::from_event_type(&event_type).is_none());
            return;
        }
        Ok(Delivery::Ssl { event, .. }) => event,
    };
    assert!(event.timestamp.is_finite() && event.timestamp >= 0.0);
    assert!(event.expiry.is_none_or(f64::is_finite));
    assert!(!event.stack.is_empty() && event.stack.bytes().all(|b| b.is_ascii_digit()));
    assert!(!event.name.is_empty() && event.name.trim() == event.name);

    let mut cert = Certificate::new(&event.stack, &event.name);
    cert.apply(&event);
    // A second, identical application: counters add up and the state is stable.
    cert.apply(&event);
    let counts = [
        cert.expire_soon_notifications,
        cert.install_successes,
        cert.install_failures,
    ];
    assert_eq!(counts.iter().sum::<u64>(), 2);
    assert_eq!(cert.last_event_ts, Some(event.timestamp));
    assert_eq!(cert.install_failing, event.kind == EventKind::InstallFail);

    let now = 1_700_000_000.0;
    let text = metrics().render(&[Arc::new(cert)], now);
    let text = std::str::from_utf8(&text).expect("the scrape body is UTF-8");
    for line in text
        .split('\n')
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Err(why) = check_sample(line) {
            panic!("malformed sample line ({why}): {line:?}");
        }
    }
});

/// Checks one sample line of the text format: `name{label="value",...} number`, with
/// label values escaped (`\\`, `\"`, `\n` only) and quotes balanced.
fn check_sample(line: &str) -> Result<(), &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    if !is_identifier(&line[..name_end], true) {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        rest = check_labels(labels)?;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    match value {
        "+Inf" | "-Inf" | "NaN" => Ok(()),
        v if v.parse::<f64>().is_ok() => Ok(()),
        _ => Err("unparseable value"),
    }
}

/// Checks `label="value",...}` and returns what follows the closing brace.
fn check_labels(mut rest: &str) -> Result<&str, &'static str> {
    loop {
        let eq = rest.find('=').ok_or("label without `=`")?;
        if !is_identifier(&rest[..eq], false) {
            return Err("bad label name");
        }
        let mut chars = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("unquoted value")?
            .char_indices();
        let close = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err("bad escape"),
                },
                (i, '"') => break i,
                (_, '\n') => return Err("raw new line"),
                _ => {}
            }
        };
        rest = &rest[eq + 2 + close + 1..];
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("no `,` or `}` after a label")?;
    }
}

/// Whether `text` is a metric name (`colon` allowed) or label name.
fn is_identifier(text: &str, colon: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    text.chars()
        .next()
        .is_some_and(|c| !c.is_ascii_digit() && ok(c))
        && text.chars().all(ok)
}

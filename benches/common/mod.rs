//! Inputs shared by the benchmarks: the documented Cloud66 payloads, and fleets of
//! certificates built the way the exporter builds them (payload → `webhook::parse` →
//! `Certificate::apply`), so their labels and sizes are what a real fleet has.
#![allow(dead_code)] // each bench uses a different part of this module

use std::sync::Arc;

use cloud66_ssl_exporter::event::{Delivery, SslEvent};
use cloud66_ssl_exporter::state::{Certificate, State};
use cloud66_ssl_exporter::webhook;

/// The three payloads exactly as Cloud66 documents them, by file name.
pub const FIXTURES: [(&str, &str); 3] = [
    (
        "expire-soon",
        include_str!("../../tests/fixtures/cloud66/expire-soon.json"),
    ),
    (
        "install-ok",
        include_str!("../../tests/fixtures/cloud66/install-ok.json"),
    ),
    (
        "install-fail",
        include_str!("../../tests/fixtures/cloud66/install-fail.json"),
    ),
];

/// Unix time the fleet's events were sent around (2024-01-01).
pub const EPOCH: i64 = 1_704_067_200;

/// The validated event in `body`, which must be one of the three SSL events.
pub fn ssl_event(body: &str) -> SslEvent {
    match webhook::parse(body.as_bytes()) {
        Ok(Delivery::Ssl { event, .. }) => event,
        other => panic!("not an SSL event: {other:?}"),
    }
}

/// An `install.ok` (or `install.fail`) payload for certificate `i` of a fleet, shaped
/// like the documented one: 500 stacks, names and server names of typical length.
pub fn payload(i: usize, fail: bool) -> String {
    let stack = 1000 + i % 500;
    let name = format!("shop-{i:06}.example.com");
    let timestamp = EPOCH + i64::try_from(i).expect("fleet index fits i64");
    let (event_type, tail) = if fail {
        (
            "ssl_certificate.install.fail",
            format!(
                r#""status": "failed", "error_message": "Certificate validation failed: DNS challenge for {name} timed out""#
            ),
        )
    } else {
        (
            "ssl_certificate.install.ok",
            format!(
                r#""status": "installed", "cert_expiry": "2024-{:02}-{:02}T00:00:00Z""#,
                3 + i % 10,
                1 + i % 28
            ),
        )
    };
    format!(
        r#"{{
  "timestamp": {timestamp},
  "event_type": "{event_type}",
  "ssl_certificate": {{
    "stack_id": {stack},
    "name": "{name}",
    "server_names": "{name},www.{name}",
    "lets_encrypt": {lets_encrypt},
    "has_intermediate_cert": true,
    "ssl_termination": true,
    {tail},
    "created_at": "2023-10-01T12:30:45Z",
    "updated_at": "2024-01-01T12:35:30Z"
  }}
}}"#,
        lets_encrypt = !i.is_multiple_of(3),
    )
}

/// Certificate `i` of a fleet: installed once, one in fifty failing its newest install.
pub fn certificate(i: usize) -> Certificate {
    let ok = ssl_event(&payload(i, false));
    let mut cert = Certificate::new(&ok.stack, &ok.name);
    cert.apply(&ok);
    if i.is_multiple_of(50) {
        let mut fail = ssl_event(&payload(i, true));
        fail.timestamp += 60.0;
        cert.apply(&fail);
    }
    cert
}

/// A fleet of `n` certificates as a scrape sees it: a snapshot of the state, in
/// (stack, name) order.
pub fn fleet(n: usize) -> Vec<Arc<Certificate>> {
    State::new((0..n).map(certificate)).snapshot()
}

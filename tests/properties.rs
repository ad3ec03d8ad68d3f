//! Property tests: `webhook::parse` never panics and always explains a rejection on
//! one line; any sequence of events leaves a certificate with exact counters and the
//! install status of its newest install event; and over HTTP every body gets 200 or a
//! 4xx with a JSON reason, never a 5xx.

mod common;

use std::sync::Arc;

use cloud66_ssl_exporter::event::{Delivery, EventKind, SslEvent};
use cloud66_ssl_exporter::metrics::Metrics;
use cloud66_ssl_exporter::state::Certificate;
use cloud66_ssl_exporter::webhook;
use common::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value, json};

/// Cases per property; a failure prints the shrunk input, so nothing is persisted.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------
// Generators

/// The top-level keys the parser looks at.
const TOP_KEYS: &[&str] = &["event_type", "timestamp", "ssl_certificate"];

/// The `ssl_certificate` keys the parser looks at.
const CERT_KEYS: &[&str] = &[
    "stack_id",
    "name",
    "cert_expiry",
    "expires_at",
    "days_until_expiry",
    "created_at",
    "updated_at",
    "error_message",
    "server_names",
    "lets_encrypt",
    "has_intermediate_cert",
    "ssl_termination",
    "status",
];

/// Every key the parser looks at, so generated objects reach its deeper checks.
fn known_keys() -> Vec<&'static str> {
    [TOP_KEYS, CERT_KEYS].concat()
}

const SSL_EVENT_TYPES: &[&str] = &[
    "ssl_certificate.expire.soon",
    "ssl_certificate.install.ok",
    "ssl_certificate.install.fail",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(known_keys()).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
}

/// Strings a careless or hostile sender might put anywhere.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[0-9]{1,30}",
        2 => "[ \t]{0,3}[-+]?[0-9]{0,5}(\\.[0-9]{0,3})?([eE][-+]?[0-9]{1,4})?[ \t]{0,3}",
        3 => prop::sample::select(vec![
            "",
            "   ",
            "\u{0}",
            "\u{202e}evil",
            "\u{feff}1640995200",
            "NaN",
            "inf",
            "-inf",
            "-0",
            "1e400",
            "18446744073709551616",
            "٣",
            "2024-02-30T00:00:00Z",
            "2024-07-01T00:00:00.123456789+14:00",
            "+262143-12-31T23:59:59Z",
            "9999-12-31 23:59:59 UTC",
            "1969-12-31T23:59:59Z",
            "\"}\n# HELP x",
            "a\\\"b\nc",
            "ssl_certificate.install.ok",
        ])
        .prop_map(str::to_owned),
        // Very long strings, some over the default 64 KiB body limit once wrapped.
        1 => (
            1usize..70_000,
            prop::sample::select(vec!["9", "é", "\"", "\\", "\n", "😀"])
        )
            .prop_map(|(n, unit)| unit.repeat(n)),
    ]
}

/// Numbers at and beyond the edges of what the fields accept.
fn odd_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(vec![
            1e308,
            -1e308,
            1e305,
            -0.0,
            5e-324,
            0.5,
            123.0,
            -1.0,
            1_640_995_200.5,
        ])
        .prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        odd_number(),
        odd_string().prop_map(Value::String),
    ]
}

/// Arbitrary nested JSON whose object keys are often ones the parser reads.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Dates in every form the parser reads, from before 1970 to far ahead.
fn date() -> impl Strategy<Value = String> {
    let parts = (
        1900i32..2200,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
    );
    let fraction = prop::option::of(0u32..1_000_000_000);
    (parts, fraction, -14i32..15, 0u8..3).prop_map(|((y, mo, d, h, mi, s), frac, off, form)| {
        let frac = frac.map(|f| format!(".{f:09}")).unwrap_or_default();
        let off = if off == 0 {
            "Z".to_owned()
        } else {
            format!("{off:+03}:00")
        };
        match form {
            0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}"),
            1 => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac} UTC"),
            _ => format!(" {y:04}-{mo:02}-{d:02}t{h:02}:{mi:02}:{s:02}{off} "),
        }
    })
}

/// A value of the kind the parser expects for `key` (which may still be out of range).
fn plausible(key: &'static str) -> BoxedStrategy<Value> {
    match key {
        "timestamp" => prop_oneof![
            (0u64..4_000_000_000).prop_map(Value::from),
            (0.0f64..4e9).prop_map(|f| json!(f)),
            (0u64..4_000_000_000).prop_map(|n| json!(format!(" {n} "))),
            date().prop_map(Value::String),
        ]
        .boxed(),
        "stack_id" => prop_oneof![
            any::<u64>().prop_map(Value::from),
            "[ ]?0*[0-9]{1,20}[ ]?".prop_map(Value::String),
        ]
        .boxed(),
        "name" => any::<String>().prop_map(Value::String).boxed(),
        "cert_expiry" | "expires_at" | "created_at" | "updated_at" => {
            date().prop_map(Value::String).boxed()
        }
        "days_until_expiry" => prop_oneof![
            (-1e4f64..1e4).prop_map(|f| json!(f)),
            (-400i64..400).prop_map(|n| json!(n.to_string())),
        ]
        .boxed(),
        "server_names" => prop_oneof![
            any::<String>().prop_map(Value::String),
            vec(any::<String>(), 0..4).prop_map(|v| json!(v)),
        ]
        .boxed(),
        "status" => prop_oneof![
            (-3i64..8).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ]
        .boxed(),
        // error_message and the flags
        _ => prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<String>().prop_map(Value::String),
            prop::sample::select(vec!["true", "No", "1", " yes ", "passthrough"])
                .prop_map(|s| json!(s)),
            Just(Value::Null),
        ]
        .boxed(),
    }
}

/// `key`, usually with a plausible value, sometimes absent or of any type.
fn field(key: &'static str) -> impl Strategy<Value = Option<(String, Value)>> {
    prop_oneof![
        8 => plausible(key).prop_map(move |v| Some((key.to_owned(), v))),
        1 => Just(None),
        1 => leaf().prop_map(move |v| Some((key.to_owned(), v))),
    ]
}

/// An object shaped like an SSL event: each field usually plausible, sometimes absent
/// or odd, so that many bodies get past the first checks and some are accepted.
fn event_shaped() -> impl Strategy<Value = Value> {
    let cert_fields: Vec<_> = CERT_KEYS.iter().map(|&key| field(key)).collect();
    (
        prop::sample::select(SSL_EVENT_TYPES),
        field("timestamp"),
        prop::option::weighted(0.95, cert_fields),
        btree_map("[a-z_]{1,8}", leaf(), 0..3),
    )
        .prop_map(|(event_type, timestamp, cert, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            object.insert("event_type".into(), json!(event_type));
            object.extend(timestamp);
            if let Some(cert) = cert {
                let cert = cert.into_iter().flatten().collect();
                object.insert("ssl_certificate".into(), Value::Object(cert));
            }
            Value::Object(object)
        })
}

/// One change to a fixture.
#[derive(Debug, Clone)]
enum Mutation {
    /// Removes a top-level field or a field of `ssl_certificate`.
    Remove { in_cert: bool, key: &'static str },
    /// Sets a field to a value of any (often the wrong) type.
    Set {
        in_cert: bool,
        key: &'static str,
        value: Value,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let target = (any::<bool>(), prop::sample::select(known_keys()));
    let value = prop_oneof![
        leaf(),
        odd_string().prop_map(Value::String),
        odd_number(),
        json_value(),
    ];
    prop_oneof![
        target
            .clone()
            .prop_map(|(in_cert, key)| Mutation::Remove { in_cert, key }),
        (target, value).prop_map(|((in_cert, key), value)| Mutation::Set {
            in_cert,
            key,
            value
        }),
    ]
}

/// One of the three documented payloads with a few fields removed or changed.
fn mutated_fixture() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![EXPIRE_SOON, INSTALL_OK, INSTALL_FAIL]),
        vec(mutation(), 1..5),
    )
        .prop_map(|(fixture, mutations)| {
            let mut body: Value = serde_json::from_str(fixture).expect("fixtures are JSON");
            for mutation in mutations {
                let (in_cert, key) = match &mutation {
                    Mutation::Remove { in_cert, key } | Mutation::Set { in_cert, key, .. } => {
                        (*in_cert, *key)
                    }
                };
                let object = if in_cert {
                    body.get_mut("ssl_certificate")
                        .and_then(Value::as_object_mut)
                } else {
                    body.as_object_mut()
                };
                let Some(object) = object else { continue };
                match mutation {
                    Mutation::Remove { .. } => {
                        object.remove(key);
                    }
                    Mutation::Set { value, .. } => {
                        object.insert(key.to_owned(), value);
                    }
                }
            }
            body
        })
}

/// Bodies of every kind: raw bytes, JSON text of any value, and near-valid events.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        event_shaped().prop_map(|v| v.to_string().into_bytes()),
        mutated_fixture().prop_map(|v| v.to_string().into_bytes()),
    ]
}

// ---------------------------------------------------------------------------------
// (a) parse never panics, and explains every rejection on one line

/// Parses `body` and checks what holds for every outcome.
fn check_parse(body: &[u8]) -> Result<(), TestCaseError> {
    match webhook::parse(body) {
        Err(error) => {
            let message = error.to_string();
            prop_assert!(!message.trim().is_empty(), "empty message for {error:?}");
            prop_assert!(!message.contains('\n'), "multi-line message: {message:?}");
        }
        Ok(Delivery::Other { event_type }) => {
            prop_assert!(EventKind::from_event_type(&event_type).is_none());
        }
        Ok(Delivery::Ssl { event, .. }) => {
            prop_assert!(event.timestamp.is_finite() && event.timestamp >= 0.0);
            prop_assert!(event.expiry.is_none_or(f64::is_finite));
            prop_assert!(!event.stack.is_empty());
            prop_assert!(event.stack.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(!event.name.is_empty());
            // The event must also render into a valid scrape.
            let mut cert = Certificate::new(&event.stack, &event.name);
            cert.apply(&event);
            let text = Metrics::new()
                .expect("metrics")
                .render(&[Arc::new(cert)], 1_700_000_000.0);
            prop_assert!(String::from_utf8(text).is_ok());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn parse_handles_arbitrary_bytes(body in vec(any::<u8>(), 0..512)) {
        check_parse(&body)?;
    }

    #[test]
    fn parse_handles_arbitrary_json(value in json_value()) {
        check_parse(value.to_string().as_bytes())?;
    }

    #[test]
    fn parse_handles_event_shaped_json(value in event_shaped()) {
        check_parse(value.to_string().as_bytes())?;
    }

    #[test]
    fn parse_handles_mutated_fixtures(value in mutated_fixture()) {
        check_parse(value.to_string().as_bytes())?;
        // Pretty-printed, the same body must get the same answer.
        let pretty = serde_json::to_vec_pretty(&value).expect("serialisable");
        prop_assert_eq!(
            webhook::parse(&pretty).map(|_| ()),
            webhook::parse(value.to_string().as_bytes()).map(|_| ())
        );
    }
}

// ---------------------------------------------------------------------------------
// (b) any sequence of valid events: exact counters, newest install event wins

/// A generated event: kind, timestamp (from a small range, so ties are common) and
/// whether it carries an expiry.
#[derive(Debug, Clone)]
struct Step {
    kind: EventKind,
    timestamp: u8,
    with_expiry: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::sample::select(EventKind::ALL.to_vec()),
        0u8..8,
        any::<bool>(),
    )
        .prop_map(|(kind, timestamp, with_expiry)| Step {
            kind,
            timestamp,
            with_expiry,
        })
}

/// The `index`-th event of a sequence as a webhook body, parsed. Its error message
/// and expiry name it, so the test can tell which event the state follows.
fn parsed_event(index: usize, step: &Step) -> SslEvent {
    let mut cert = json!({
        "stack_id": 7,
        "name": "web",
        "status": format!("status-{index}"),
    });
    if step.with_expiry {
        cert["cert_expiry"] = json!(format!("2030-01-01T00:00:{:02}Z", index % 60));
    }
    if step.kind == EventKind::InstallFail {
        cert["error_message"] = json!(format!("error-{index}"));
    }
    let body = json!({
        "event_type": step.kind.event_type(),
        "timestamp": 1_700_000_000 + u64::from(step.timestamp),
        "ssl_certificate": cert,
    });
    match webhook::parse(body.to_string().as_bytes()) {
        Ok(Delivery::Ssl { event, .. }) => event,
        other => panic!("a valid event was not parsed as one: {other:?}"),
    }
}

/// The index of the newest step matching `filter`: greatest timestamp, the later
/// one among equals.
fn newest(steps: &[Step], filter: impl Fn(&Step) -> bool) -> Option<usize> {
    steps
        .iter()
        .enumerate()
        .filter(|(_, step)| filter(step))
        .max_by_key(|(index, step)| (step.timestamp, *index))
        .map(|(index, _)| index)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_event_sequence_gives_exact_counters_and_newest_install_status(
        steps in vec(step(), 0..40)
    ) {
        let events: Vec<_> = steps.iter().enumerate().map(|(i, s)| parsed_event(i, s)).collect();
        let mut cert = Certificate::new("7", "web");
        for event in &events {
            cert.apply(event);
        }
        let count = |kind| steps.iter().filter(|s| s.kind == kind).count() as u64;
        prop_assert_eq!(cert.expire_soon_notifications, count(EventKind::ExpireSoon));
        prop_assert_eq!(cert.install_successes, count(EventKind::InstallOk));
        prop_assert_eq!(cert.install_failures, count(EventKind::InstallFail));

        let install = newest(&steps, |s| s.kind.is_install());
        let failing = install.is_some_and(|i| steps[i].kind == EventKind::InstallFail);
        prop_assert_eq!(cert.install_failing, failing);
        let error = install.filter(|_| failing).and_then(|i| events[i].error_message.clone());
        prop_assert_eq!(&cert.error_message, &error);
        prop_assert_eq!(cert.install_event_ts, install.map(|i| events[i].timestamp));

        let newest_any = newest(&steps, |_| true);
        prop_assert_eq!(cert.last_event_ts, newest_any.map(|i| events[i].timestamp));
        prop_assert_eq!(&cert.info.status, &newest_any.and_then(|i| events[i].info.status.clone()));
        let with_expiry = newest(&steps, |s| s.with_expiry);
        prop_assert_eq!(cert.expiry, with_expiry.and_then(|i| events[i].expiry));
    }
}

// ---------------------------------------------------------------------------------
// (c) over HTTP: 200, or a 4xx with a JSON reason; never a 5xx

/// What one answer must look like, given what the parser says about the body.
fn check_reply(body: &[u8], reply: &Reply) -> Result<(), TestCaseError> {
    let status = reply.status;
    prop_assert!(
        status == 200 || (400..500).contains(&status),
        "status {} for {:?}: {}",
        status,
        String::from_utf8_lossy(body),
        reply.body
    );
    let answer: Value = serde_json::from_str(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", reply.body)))?;
    if status == 200 {
        let expected: &[&str] = match webhook::parse(body) {
            Ok(Delivery::Other { .. }) => &["ignored"],
            Ok(Delivery::Ssl { .. }) => &["accepted", "duplicate"],
            Err(error) => return Err(TestCaseError::fail(format!("200 despite {error}"))),
        };
        let result = answer["status"].as_str().unwrap_or_default();
        prop_assert!(expected.contains(&result), "{}", reply.body);
    } else {
        let error = answer["error"].as_str().unwrap_or_default();
        prop_assert!(
            !error.trim().is_empty() && !error.contains('\n'),
            "{}",
            reply.body
        );
        if body.len() <= 65_536 {
            prop_assert_eq!(status, 400);
            let parsed = webhook::parse(body).map(|_| ()).map_err(|e| e.to_string());
            prop_assert_eq!(parsed, Err(error.to_owned()));
        } else {
            prop_assert_eq!(status, 413);
        }
    }
    Ok(())
}

#[test]
fn any_body_over_http_gets_200_or_a_4xx_with_a_reason() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = runtime.block_on(TestServer::start(dir.path()));
    let path = format!("/webhook/{TOKEN}");
    let mut runner = TestRunner::new(config(200));
    let outcome = runner.run(&any_body(), |body| {
        let reply = runtime
            .block_on(try_request(server.addr, "POST", &path, &[], body.clone()))
            .map_err(|e| TestCaseError::fail(format!("transport error: {e}")))?;
        check_reply(&body, &reply)
    });
    // Whatever it was sent, the server still serves.
    let health = runtime.block_on(request(server.addr, "GET", "/healthz", &[], ""));
    runtime.block_on(server.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert_eq!(health.status, 200);
}

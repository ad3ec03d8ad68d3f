//! Unit tests of `webhook`.

use super::*;
use serde_json::json;

const EXPIRE_SOON: &str = include_str!("../../tests/fixtures/cloud66/expire-soon.json");
const INSTALL_OK: &str = include_str!("../../tests/fixtures/cloud66/install-ok.json");
const INSTALL_FAIL: &str = include_str!("../../tests/fixtures/cloud66/install-fail.json");

/// The fixtures' `timestamp`: 2022-01-01T00:00:00Z.
const SENT: f64 = 1_640_995_200.0;

/// The info labels the fixtures share, with the given intermediate/termination flag.
fn info(flags: &str, status: &str) -> CertInfo {
    CertInfo {
        server_names: Some("example.com,awesome-example.com".to_owned()),
        lets_encrypt: Some("true".to_owned()),
        has_intermediate_cert: Some(flags.to_owned()),
        ssl_termination: Some(flags.to_owned()),
        status: Some(status.to_owned()),
    }
}

/// A fixture after `change` is applied to its parsed form.
fn edit(fixture: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut body: Value = serde_json::from_str(fixture).unwrap();
    change(&mut body);
    body.to_string()
}

/// A fixture with one `ssl_certificate` field set to `value`.
fn with_cert(fixture: &str, key: &str, value: Value) -> String {
    edit(fixture, |body| body["ssl_certificate"][key] = value)
}

/// A fixture without one `ssl_certificate` field.
fn without_cert(fixture: &str, key: &str) -> String {
    edit(fixture, |body| {
        body["ssl_certificate"].as_object_mut().unwrap().remove(key);
    })
}

/// A fixture without one top-level field.
fn without_top(fixture: &str, key: &str) -> String {
    edit(fixture, |body| {
        body.as_object_mut().unwrap().remove(key);
    })
}

/// The SSL event a body parses to; panics on anything else.
fn event(body: &str) -> SslEvent {
    match parse(body.as_bytes()) {
        Ok(Delivery::Ssl { event, .. }) => event,
        other => panic!("expected an SSL event, got {other:?}"),
    }
}

/// The digest of a body that parses to an SSL event.
fn digest_of(body: &str) -> [u8; 32] {
    match parse(body.as_bytes()) {
        Ok(Delivery::Ssl { digest, .. }) => digest,
        other => panic!("expected an SSL event, got {other:?}"),
    }
}

/// The message of the error a body is rejected with; panics if it is accepted.
fn rejection(body: &str) -> String {
    match parse(body.as_bytes()) {
        Err(err) => err.to_string(),
        Ok(delivery) => panic!("expected a rejection, got {delivery:?}"),
    }
}

#[test]
fn expire_soon_fixture() {
    let expected = SslEvent {
        kind: EventKind::ExpireSoon,
        timestamp: SENT,
        stack: "123".to_owned(),
        name: "Awesome SSL Certificate".to_owned(),
        expiry: Some(1_706_745_600.0), // 2024-02-01T00:00:00Z
        error_message: None,
        info: info("true", "installed"),
    };
    assert_eq!(event(EXPIRE_SOON), expected);
}

#[test]
fn install_ok_fixture() {
    let expected = SslEvent {
        kind: EventKind::InstallOk,
        timestamp: SENT,
        stack: "123".to_owned(),
        name: "Awesome SSL Certificate".to_owned(),
        expiry: Some(1_719_792_000.0), // 2024-07-01T00:00:00Z
        error_message: None,
        info: info("true", "installed"),
    };
    assert_eq!(event(INSTALL_OK), expected);
}

#[test]
fn install_fail_fixture() {
    let expected = SslEvent {
        kind: EventKind::InstallFail,
        timestamp: SENT,
        stack: "123".to_owned(),
        name: "Awesome SSL Certificate".to_owned(),
        expiry: None,
        error_message: Some("Certificate validation failed".to_owned()),
        info: info("false", "failed"),
    };
    assert_eq!(event(INSTALL_FAIL), expected);
}

#[test]
fn stack_id_as_string_is_canonicalised() {
    assert_eq!(
        event(&with_cert(INSTALL_OK, "stack_id", json!("0123"))).stack,
        "123"
    );
    assert_eq!(
        event(&with_cert(INSTALL_OK, "stack_id", json!(" 42 "))).stack,
        "42"
    );
    assert_eq!(
        event(&with_cert(INSTALL_OK, "stack_id", json!(0))).stack,
        "0"
    );
}

#[test]
fn name_is_trimmed() {
    let body = with_cert(INSTALL_OK, "name", json!("  spaced  "));
    assert_eq!(event(&body).name, "spaced");
}

#[test]
fn status_as_integer_is_named() {
    let cases = [
        (-1, "not_applicable"),
        (0, "not_installed"),
        (1, "installing"),
        (2, "failed"),
        (3, "installed"),
        (4, "removing"),
        (7, "7"),
    ];
    for (code, name) in cases {
        let body = with_cert(INSTALL_OK, "status", json!(code));
        assert_eq!(
            event(&body).info.status.as_deref(),
            Some(name),
            "code {code}"
        );
    }
    let body = with_cert(INSTALL_OK, "status", json!(" active "));
    assert_eq!(event(&body).info.status.as_deref(), Some("active"));
}

#[test]
fn ssl_termination_as_string() {
    let cases = [
        ("TRUE", "true"),
        ("1", "true"),
        ("No", "false"),
        (" Edge ", "edge"),
    ];
    for (sent, label) in cases {
        let body = with_cert(INSTALL_OK, "ssl_termination", json!(sent));
        assert_eq!(event(&body).info.ssl_termination.as_deref(), Some(label));
    }
}

#[test]
fn null_and_odd_info_fields_are_none() {
    let body = edit(INSTALL_OK, |body| {
        let cert = &mut body["ssl_certificate"];
        cert["lets_encrypt"] = Value::Null;
        cert["has_intermediate_cert"] = json!(1);
        cert["ssl_termination"] = json!({"on": true});
        cert["status"] = Value::Null;
        cert["server_names"] = json!(["a.example", 5]);
    });
    assert_eq!(event(&body).info, CertInfo::default());
}

#[test]
fn server_names_as_array_are_joined() {
    let body = with_cert(
        INSTALL_OK,
        "server_names",
        json!(["a.example", "b.example"]),
    );
    let names = event(&body).info.server_names;
    assert_eq!(names.as_deref(), Some("a.example,b.example"));
}

#[test]
fn rfc3339_with_offset_and_fraction() {
    let body = with_cert(
        INSTALL_OK,
        "cert_expiry",
        json!("2024-02-01T00:00:00.123+02:00"),
    );
    let expiry = event(&body).expiry.unwrap();
    assert!((expiry - 1_706_738_400.123).abs() < 1e-6, "got {expiry}");
}

#[test]
fn cloud66_utc_date_format() {
    let body = with_cert(INSTALL_OK, "cert_expiry", json!("2014-08-14 00:38:14 UTC"));
    assert_eq!(event(&body).expiry, Some(1_407_976_694.0));
    let body = with_cert(INSTALL_OK, "created_at", json!("2014-08-14 00:38:14 UTC"));
    assert_eq!(event(&body).expiry, Some(1_719_792_000.0));
}

#[test]
fn expires_at_is_used_without_cert_expiry() {
    let body = edit(INSTALL_OK, |body| {
        let cert = body["ssl_certificate"].as_object_mut().unwrap();
        cert.remove("cert_expiry");
        cert.insert("expires_at".to_owned(), json!("2024-02-01T00:00:00Z"));
    });
    assert_eq!(event(&body).expiry, Some(1_706_745_600.0));
    let null_cert_expiry = with_cert(&body, "cert_expiry", Value::Null);
    assert_eq!(event(&null_cert_expiry).expiry, Some(1_706_745_600.0));
}

#[test]
fn cert_expiry_wins_over_expires_at_but_both_are_validated() {
    let body = with_cert(INSTALL_OK, "expires_at", json!("2024-02-01T00:00:00Z"));
    assert_eq!(event(&body).expiry, Some(1_719_792_000.0));
    let body = with_cert(INSTALL_OK, "expires_at", json!("soon"));
    assert_eq!(
        rejection(&body),
        "invalid field `ssl_certificate.expires_at`: expected an RFC 3339 date or \
         `YYYY-MM-DD HH:MM:SS UTC`, got \"soon\""
    );
}

#[test]
fn expire_soon_without_date_derives_expiry_from_days() {
    let body = without_cert(EXPIRE_SOON, "cert_expiry");
    assert_eq!(event(&body).expiry, Some(SENT + 30.0 * 86_400.0));
    let body = with_cert(&body, "days_until_expiry", json!("2.5"));
    assert_eq!(event(&body).expiry, Some(SENT + 2.5 * 86_400.0));
    let body = without_cert(&body, "days_until_expiry");
    assert_eq!(event(&body).expiry, None);
}

#[test]
fn install_events_do_not_derive_expiry_from_days() {
    let body = with_cert(INSTALL_FAIL, "days_until_expiry", json!(30));
    assert_eq!(event(&body).expiry, None);
}

#[test]
fn timestamp_as_numeric_string_float_or_date() {
    let body = edit(INSTALL_OK, |body| body["timestamp"] = json!("1640995200"));
    assert_eq!(event(&body).timestamp, SENT);
    let body = edit(INSTALL_OK, |body| {
        body["timestamp"] = json!(1_640_995_200.5)
    });
    assert_eq!(event(&body).timestamp, SENT + 0.5);
    let body = edit(INSTALL_OK, |body| {
        body["timestamp"] = json!("2022-01-01T00:00:00Z")
    });
    assert_eq!(event(&body).timestamp, SENT);
}

#[test]
fn unknown_fields_are_ignored() {
    let body = edit(INSTALL_OK, |body| {
        body["delivery"] = json!({"attempt": [1, 2]});
        body["ssl_certificate"]["uuid"] = json!("ssl-1");
        body["ssl_certificate"]["type"] = Value::Null;
    });
    assert_eq!(event(&body), event(INSTALL_OK));
}

#[test]
fn error_message_scalars_become_text() {
    let body = with_cert(INSTALL_FAIL, "error_message", json!(42));
    assert_eq!(event(&body).error_message.as_deref(), Some("42"));
    let body = with_cert(INSTALL_FAIL, "error_message", Value::Null);
    assert_eq!(event(&body).error_message, None);
    let body = with_cert(INSTALL_FAIL, "error_message", json!({"code": 1}));
    assert_eq!(
        rejection(&body),
        "invalid field `ssl_certificate.error_message`: expected a string, got {\"code\":1}"
    );
}

#[test]
fn unknown_event_type_is_other_without_validation() {
    let body = br#"{"event_type": "stack.redeploy.ok", "timestamp": "garbage"}"#;
    let expected = Delivery::Other {
        event_type: "stack.redeploy.ok".to_owned(),
    };
    assert_eq!(parse(body), Ok(expected));
}

/// The `Other` delivery naming `event_type` (`""` for none).
fn other(event_type: &str) -> Result<Delivery, WebhookError> {
    Ok(Delivery::Other {
        event_type: event_type.to_owned(),
    })
}

#[test]
fn empty_and_white_space_bodies_are_other_without_an_event_type() {
    for body in ["", " ", "\n", " \t\r\n "] {
        assert_eq!(parse(body.as_bytes()), other(""), "{body:?}");
    }
}

#[test]
fn objects_that_are_not_ssl_events_are_other() {
    let cases = [
        ("{}", ""),
        (r#"{"foo": 1}"#, ""),
        (r#"{"event_type": null}"#, ""),
        (r#"{"event_type": "  "}"#, ""),
        (r#"{"event_type": 3}"#, ""),
        (r#"{"event_type": ["ssl_certificate.install.ok"]}"#, ""),
        (r#"{"event_type": "test"}"#, "test"),
        (r#"{"ssl_certificate": null, "timestamp": "garbage"}"#, ""),
        // The prefix is case-sensitive, as Cloud66's event types are.
        (
            r#"{"event_type": "SSL_CERTIFICATE.install.ok"}"#,
            "SSL_CERTIFICATE.install.ok",
        ),
    ];
    for (body, event_type) in cases {
        assert_eq!(parse(body.as_bytes()), other(event_type), "{body}");
    }
}

#[test]
fn a_certificate_without_an_event_type_is_still_an_ssl_event() {
    for (body, message) in [
        (
            r#"{"ssl_certificate": {"stack_id": 1, "name": "x"}}"#,
            "missing field `event_type`",
        ),
        (r#"{"ssl_certificate": 5}"#, "missing field `event_type`"),
        (
            r#"{"ssl_certificate": {}, "event_type": 3}"#,
            "invalid field `event_type`: expected a string, got 3",
        ),
        (
            r#"{"ssl_certificate": {}, "event_type": ""}"#,
            "missing field `event_type`",
        ),
    ] {
        assert_eq!(rejection(body), message, "{body}");
    }
}

#[test]
fn a_tracked_ssl_event_type_alone_is_still_strict() {
    assert_eq!(
        rejection(r#"{"event_type": "ssl_certificate.install.ok"}"#),
        "missing field `timestamp`"
    );
    assert_eq!(
        rejection(r#"{"event_type": "ssl_certificate.expire.soon", "timestamp": 1}"#),
        "missing field `ssl_certificate`"
    );
}

#[test]
fn untracked_ssl_event_types_stay_other() {
    // As before: an `ssl_certificate.*` type we do not track is acknowledged, with or
    // without a certificate, because the exporter has nothing to update from it.
    for body in [
        r#"{"event_type": "ssl_certificate.renewed"}"#,
        r#"{"event_type": "ssl_certificate.renewed", "ssl_certificate": {"name": 5}}"#,
    ] {
        assert_eq!(parse(body.as_bytes()), other("ssl_certificate.renewed"));
    }
}

#[test]
fn rejects_malformed_json() {
    assert_eq!(
        rejection("{\"event_type\": "),
        "malformed JSON: EOF while parsing a value at line 1 column 15"
    );
    assert_eq!(
        rejection("[1, 2]"),
        "malformed JSON: expected a JSON object at the top level, got an array"
    );
    assert_eq!(
        rejection(r#""x""#),
        "malformed JSON: expected a JSON object at the top level, got a string"
    );
    assert_eq!(
        rejection("null"),
        "malformed JSON: expected a JSON object at the top level, got null"
    );
    assert!(rejection("{not json").starts_with("malformed JSON: key must be a string"));
    // White space around anything else is not an empty body.
    assert!(rejection(" x ").starts_with("malformed JSON: expected value"));
}

#[test]
fn rejects_missing_or_blank_name() {
    let message = "missing field `ssl_certificate.name`";
    assert_eq!(rejection(&without_cert(INSTALL_OK, "name")), message);
    assert_eq!(
        rejection(&with_cert(INSTALL_OK, "name", json!(""))),
        message
    );
    assert_eq!(
        rejection(&with_cert(INSTALL_OK, "name", json!(" \t"))),
        message
    );
    assert_eq!(
        rejection(&with_cert(INSTALL_OK, "name", json!(7))),
        "invalid field `ssl_certificate.name`: expected a string, got 7"
    );
}

#[test]
fn rejects_bad_stack_id() {
    assert_eq!(
        rejection(&without_cert(INSTALL_OK, "stack_id")),
        "missing field `ssl_certificate.stack_id`"
    );
    let prefix = "invalid field `ssl_certificate.stack_id`: \
                  expected a non-negative integer or a numeric string, got ";
    let cases = [
        (json!("abc"), "\"abc\""),
        (json!(-5), "-5"),
        (json!(123.0), "123.0"),
        (json!("+5"), "\"+5\""),
        (json!("-5"), "\"-5\""),
    ];
    for (value, quoted) in cases {
        let body = with_cert(INSTALL_OK, "stack_id", value);
        assert_eq!(rejection(&body), format!("{prefix}{quoted}"));
    }
}

#[test]
fn rejects_unparseable_dates() {
    assert_eq!(
        rejection(&with_cert(
            INSTALL_OK,
            "cert_expiry",
            json!("2024-02-30T00:00:00Z")
        )),
        "invalid field `ssl_certificate.cert_expiry`: expected an RFC 3339 date or \
         `YYYY-MM-DD HH:MM:SS UTC`, got \"2024-02-30T00:00:00Z\""
    );
    assert_eq!(
        rejection(&with_cert(INSTALL_OK, "created_at", json!(1_700_000_000))),
        "invalid field `ssl_certificate.created_at`: expected an RFC 3339 date or \
         `YYYY-MM-DD HH:MM:SS UTC`, got 1700000000"
    );
}

#[test]
fn rejects_wrong_type_days_until_expiry() {
    assert_eq!(
        rejection(&with_cert(EXPIRE_SOON, "days_until_expiry", json!(true))),
        "invalid field `ssl_certificate.days_until_expiry`: \
         expected a number or a numeric string, got true"
    );
    assert_eq!(
        rejection(&with_cert(EXPIRE_SOON, "days_until_expiry", json!("NaN"))),
        "invalid field `ssl_certificate.days_until_expiry`: \
         expected a number or a numeric string, got \"NaN\""
    );
}

#[test]
fn rejects_bad_timestamp() {
    assert_eq!(
        rejection(&without_top(INSTALL_OK, "timestamp")),
        "missing field `timestamp`"
    );
    assert_eq!(
        rejection(&edit(INSTALL_OK, |body| body["timestamp"] = json!("yesterday"))),
        "invalid field `timestamp`: expected Unix seconds (a number or numeric string) \
         or a date, got \"yesterday\""
    );
    assert_eq!(
        rejection(&edit(INSTALL_OK, |body| body["timestamp"] = json!(-1))),
        "invalid field `timestamp`: expected a time after 1970, got -1"
    );
}

#[test]
fn rejects_missing_or_non_object_ssl_certificate() {
    assert_eq!(
        rejection(&without_top(INSTALL_OK, "ssl_certificate")),
        "missing field `ssl_certificate`"
    );
    assert_eq!(
        rejection(&edit(INSTALL_OK, |body| body["ssl_certificate"] = json!([1]))),
        "invalid field `ssl_certificate`: expected an object, got [1]"
    );
}

#[test]
fn rejects_missing_or_non_string_event_type() {
    assert_eq!(
        rejection(&without_top(INSTALL_OK, "event_type")),
        "missing field `event_type`"
    );
    assert_eq!(
        rejection(&edit(INSTALL_OK, |body| body["event_type"] = json!(""))),
        "missing field `event_type`"
    );
    assert_eq!(
        rejection(&edit(INSTALL_OK, |body| body["event_type"] = json!(3))),
        "invalid field `event_type`: expected a string, got 3"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "x".repeat(200);
    let body = with_cert(INSTALL_OK, "stack_id", json!(long));
    let quoted = format!("\"{}…", "x".repeat(63));
    assert_eq!(
        rejection(&body),
        format!(
            "invalid field `ssl_certificate.stack_id`: \
             expected a non-negative integer or a numeric string, got {quoted}"
        )
    );
}

#[test]
fn digest_ignores_key_order_and_white_space() {
    let compact = r#"{"event_type":"ssl_certificate.install.ok","timestamp":1640995200,"ssl_certificate":{"stack_id":123,"name":"n","status":"installed"}}"#;
    let shuffled = "{ \"ssl_certificate\" : {\"status\":\"installed\",\n \"name\": \"n\", \
                    \"stack_id\": 123},\n\t\"timestamp\": 1640995200, \
                    \"event_type\": \"ssl_certificate.install.ok\" }";
    assert_eq!(digest_of(compact), digest_of(shuffled));

    let changed = [
        compact.replace("1640995200", "1640995201"),
        compact.replace("123", "124"),
        compact.replace("\"n\"", "\"m\""),
        compact.replace("installed", "failed"),
    ];
    for body in changed {
        assert_ne!(digest_of(&body), digest_of(compact), "{body}");
    }
}

#[test]
fn digest_is_sha256_of_canonical_json() {
    // Pins the exact canonical form so a change in serialisation is noticed.
    let body = r#"{"timestamp":1,"event_type":"ssl_certificate.install.fail","ssl_certificate":{"stack_id":1,"name":"n"}}"#;
    let canonical = r#"{"event_type":"ssl_certificate.install.fail","ssl_certificate":{"name":"n","stack_id":1},"timestamp":1}"#;
    let expected: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
    assert_eq!(digest_of(body), expected);
}

#[test]
fn rejects_implausible_days_until_expiry() {
    assert_eq!(
        rejection(&with_cert(EXPIRE_SOON, "days_until_expiry", json!(-36526))),
        "invalid field `ssl_certificate.days_until_expiry`: \
         expected a number of days within a century (±36525), got -36526"
    );
    let body = without_cert(
        &with_cert(EXPIRE_SOON, "days_until_expiry", json!(36525)),
        "cert_expiry",
    );
    assert!(parse(body.as_bytes()).is_ok());
}

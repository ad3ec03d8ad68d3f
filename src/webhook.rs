//! Parsing and validation of Cloud66 webhook bodies (pure: no I/O).
//!
//! Cloud66 posts every notification type to the same URL, so [`parse`] first reads
//! `event_type` and acknowledges anything that is not one of the three SSL events
//! without looking further. For SSL events it is strict about the fields the
//! exporter relies on (`timestamp`, `stack_id`, `name`, the dates) and tolerant of
//! everything else: unknown fields are ignored, and the known drift between
//! Cloud66's webhook docs, its API model and its Go client (see
//! Cloud66 documentation) is accepted and normalised.
//!
//! Every rejection names the field at fault, so the HTTP layer can tell the sender
//! exactly why a delivery was refused.

use std::fmt;

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{CertInfo, Delivery, EventKind, SslEvent};

// Field paths named in errors; the part after the last `.` is the JSON key.
/// Path of the event type, which decides whether the body is looked at at all.
const EVENT_TYPE: &str = "event_type";
/// Path of the send time (Unix seconds), which orders events.
const TIMESTAMP: &str = "timestamp";
/// Path of the object that carries the certificate.
const SSL_CERTIFICATE: &str = "ssl_certificate";
/// Path of the stack id (the `stack` label).
const STACK_ID: &str = "ssl_certificate.stack_id";
/// Path of the certificate name (the `name` label).
const NAME: &str = "ssl_certificate.name";
/// Path of the expiry date as webhooks name it.
const CERT_EXPIRY: &str = "ssl_certificate.cert_expiry";
/// Path of the expiry date as the API model names it.
const EXPIRES_AT: &str = "ssl_certificate.expires_at";
/// Path of the day count sent with `expire.soon`.
const DAYS_UNTIL_EXPIRY: &str = "ssl_certificate.days_until_expiry";
/// Path of the creation date (validated only).
const CREATED_AT: &str = "ssl_certificate.created_at";
/// Path of the update date (validated only).
const UPDATED_AT: &str = "ssl_certificate.updated_at";
/// Path of the failure reason sent with `install.fail`.
const ERROR_MESSAGE: &str = "ssl_certificate.error_message";

/// Seconds in a day, to turn `days_until_expiry` into an expiry time.
const SECONDS_PER_DAY: f64 = 86_400.0;

/// Longest quoted value (in characters) in an error message: enough to recognise
/// the value, short enough to keep a hostile body out of logs and responses.
const QUOTE_LIMIT: usize = 64;

/// The format Cloud66 uses for dates in some payloads: `2014-08-14 00:38:14 UTC`.
/// `%.f` also accepts an absent fraction.
const CLOUD66_UTC_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f UTC";

/// The ways a webhook body can be rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The body is not a JSON object (syntax error, or a non-object top level).
    Malformed(String),
    /// A field we rely on is absent, null, or (for strings) empty. Holds the field path.
    Missing(&'static str),
    /// A field we rely on has the wrong type or an unparseable value.
    Invalid {
        /// The path of the offending field, e.g. `ssl_certificate.stack_id`.
        field: &'static str,
        /// What was expected and what was sent, e.g. `expected a string, got 5`.
        reason: String,
    },
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Malformed(detail) => write!(f, "malformed JSON: {detail}"),
            WebhookError::Missing(field) => write!(f, "missing field `{field}`"),
            WebhookError::Invalid { field, reason } => {
                write!(f, "invalid field `{field}`: {reason}")
            }
        }
    }
}

impl std::error::Error for WebhookError {}

/// Parses and validates one webhook body.
///
/// Returns [`Delivery::Other`] for any `event_type` that is not an SSL event, without
/// validating the rest of the body, and [`Delivery::Ssl`] with the validated event
/// and the digest of the body's canonical JSON otherwise.
pub fn parse(body: &[u8]) -> Result<Delivery, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| WebhookError::Malformed(err.to_string()))?;
    let Value::Object(top) = &value else {
        return Err(WebhookError::Malformed(format!(
            "expected a JSON object at the top level, got {}",
            type_name(&value)
        )));
    };
    let event_type = match require(top, EVENT_TYPE)? {
        Value::String(event_type) => event_type,
        other => return Err(invalid(EVENT_TYPE, "expected a string", other)),
    };
    let Some(kind) = EventKind::from_event_type(event_type) else {
        return Ok(Delivery::Other {
            event_type: event_type.clone(),
        });
    };
    let event = ssl_event(kind, top)?;
    Ok(Delivery::Ssl {
        event,
        digest: digest(&value),
    })
}

/// Validates the body of one of the three SSL events.
fn ssl_event(kind: EventKind, top: &Map<String, Value>) -> Result<SslEvent, WebhookError> {
    let timestamp = timestamp(top)?;
    let cert = match require(top, SSL_CERTIFICATE)? {
        Value::Object(cert) => cert,
        other => return Err(invalid(SSL_CERTIFICATE, "expected an object", other)),
    };
    let stack = stack_id(cert)?;
    let name = name(cert)?;
    let expiry = expiry(kind, timestamp, cert)?;
    // Not used, but a date we cannot read suggests a payload we do not understand.
    optional_date(cert, CREATED_AT)?;
    optional_date(cert, UPDATED_AT)?;
    Ok(SslEvent {
        kind,
        timestamp,
        stack,
        name,
        expiry,
        error_message: error_message(cert)?,
        info: cert_info(cert),
    })
}

/// The JSON key of a field path: the part after the last `.`.
fn key(path: &'static str) -> &'static str {
    path.rsplit_once('.').map_or(path, |(_, key)| key)
}

/// The value at `path` in `object`, with `null` treated as absent.
fn optional<'a>(object: &'a Map<String, Value>, path: &'static str) -> Option<&'a Value> {
    object.get(key(path)).filter(|value| !value.is_null())
}

/// The value at `path` in `object`; absent, `null` or blank strings are `Missing`.
fn require<'a>(
    object: &'a Map<String, Value>,
    path: &'static str,
) -> Result<&'a Value, WebhookError> {
    match optional(object, path) {
        None => Err(WebhookError::Missing(path)),
        Some(Value::String(text)) if text.trim().is_empty() => Err(WebhookError::Missing(path)),
        Some(value) => Ok(value),
    }
}

/// An `Invalid` error for `field` saying what was `expected` and quoting what came.
fn invalid(field: &'static str, expected: &str, got: &Value) -> WebhookError {
    WebhookError::Invalid {
        field,
        reason: format!("{expected}, got {}", quote(got)),
    }
}

/// The value as compact JSON, cut to [`QUOTE_LIMIT`] characters. JSON escaping keeps
/// control characters (new lines included) out of the one-line message.
fn quote(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A short description of a value's JSON type, for messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `timestamp`: Unix seconds as a number or numeric string, or a date string.
fn timestamp(top: &Map<String, Value>) -> Result<f64, WebhookError> {
    let value = require(top, TIMESTAMP)?;
    let seconds = number(value)
        .or_else(|| value.as_str().and_then(date_seconds))
        .ok_or_else(|| {
            invalid(
                TIMESTAMP,
                "expected Unix seconds (a number or numeric string) or a date",
                value,
            )
        })?;
    if seconds < 0.0 {
        return Err(invalid(TIMESTAMP, "expected a time after 1970", value));
    }
    Ok(seconds)
}

/// A finite number from a JSON number or a numeric string (surrounding white space
/// allowed); `None` for anything else.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        // `f64::from_str` also reads "inf" and "NaN"; the filter drops them.
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|seconds| seconds.is_finite())
}

/// Unix seconds of an RFC 3339 date (any offset, optional fraction) or of Cloud66's
/// `YYYY-MM-DD HH:MM:SS UTC`; `None` when the text is neither.
fn date_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let utc = match DateTime::parse_from_rfc3339(text) {
        Ok(date) => date.to_utc(),
        Err(_) => NaiveDateTime::parse_from_str(text, CLOUD66_UTC_FORMAT)
            .ok()?
            .and_utc(),
    };
    // `timestamp()` rounds down and the nanoseconds count up, also before 1970.
    Some(utc.timestamp() as f64 + f64::from(utc.timestamp_subsec_nanos()) / 1e9)
}

/// An optional date field: absent or `null` is `None`, anything unreadable `Invalid`.
fn optional_date(
    cert: &Map<String, Value>,
    path: &'static str,
) -> Result<Option<f64>, WebhookError> {
    let Some(value) = optional(cert, path) else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(date_seconds)
        .map(Some)
        .ok_or_else(|| {
            invalid(
                path,
                "expected an RFC 3339 date or `YYYY-MM-DD HH:MM:SS UTC`",
                value,
            )
        })
}

/// `stack_id` as a canonical decimal string: a non-negative JSON integer or a
/// string of ASCII digits, so `123`, `"123"` and `" 0123 "` all give `"123"`.
fn stack_id(cert: &Map<String, Value>) -> Result<String, WebhookError> {
    let value = require(cert, STACK_ID)?;
    let id = match value {
        // `as_u64` is `None` for negative numbers and for floats such as `123.0`.
        Value::Number(number) => number.as_u64(),
        Value::String(text) => {
            let digits = text.trim();
            // `u64::from_str` would also take a leading `+`; only digits are an id.
            digits
                .bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        }
        _ => None,
    };
    id.map(|id| id.to_string()).ok_or_else(|| {
        invalid(
            STACK_ID,
            "expected a non-negative integer or a numeric string",
            value,
        )
    })
}

/// `name`, trimmed; blank names are `Missing` because the name is a metric label.
fn name(cert: &Map<String, Value>) -> Result<String, WebhookError> {
    match require(cert, NAME)? {
        Value::String(name) => Ok(name.trim().to_owned()),
        other => Err(invalid(NAME, "expected a string", other)),
    }
}

/// The expiry in Unix seconds: `cert_expiry`, else `expires_at` (the API model's
/// name), else for `expire.soon` the send time plus `days_until_expiry` days.
fn expiry(
    kind: EventKind,
    timestamp: f64,
    cert: &Map<String, Value>,
) -> Result<Option<f64>, WebhookError> {
    // All three are validated even when an earlier one decides the result, so a
    // bad value is reported rather than silently ignored.
    let cert_expiry = optional_date(cert, CERT_EXPIRY)?;
    let expires_at = optional_date(cert, EXPIRES_AT)?;
    let days = days_until_expiry(cert)?;
    if let Some(date) = cert_expiry.or(expires_at) {
        return Ok(Some(date));
    }
    let (EventKind::ExpireSoon, Some(days)) = (kind, days) else {
        return Ok(None);
    };
    let derived = timestamp + days * SECONDS_PER_DAY;
    if !derived.is_finite() {
        let value = optional(cert, DAYS_UNTIL_EXPIRY).unwrap_or(&Value::Null);
        return Err(invalid(
            DAYS_UNTIL_EXPIRY,
            "expected a number of days in range",
            value,
        ));
    }
    Ok(Some(derived))
}

/// `days_until_expiry`: optional; a JSON number or a numeric string. It may be
/// negative (a certificate that has already expired).
fn days_until_expiry(cert: &Map<String, Value>) -> Result<Option<f64>, WebhookError> {
    let Some(value) = optional(cert, DAYS_UNTIL_EXPIRY) else {
        return Ok(None);
    };
    number(value).map(Some).ok_or_else(|| {
        invalid(
            DAYS_UNTIL_EXPIRY,
            "expected a number or a numeric string",
            value,
        )
    })
}

/// `error_message`: a string as is, a number or boolean as its JSON text.
fn error_message(cert: &Map<String, Value>) -> Result<Option<String>, WebhookError> {
    match optional(cert, ERROR_MESSAGE) {
        None => Ok(None),
        Some(Value::String(message)) => Ok(Some(message.clone())),
        Some(scalar @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(scalar.to_string())),
        Some(other) => Err(invalid(ERROR_MESSAGE, "expected a string", other)),
    }
}

/// The descriptive labels. These are informational, so a value of an unexpected
/// type is dropped (`None`: the last known value is kept) rather than rejected.
fn cert_info(cert: &Map<String, Value>) -> CertInfo {
    let field = |key: &str| cert.get(key).unwrap_or(&Value::Null);
    CertInfo {
        server_names: server_names(field("server_names")),
        lets_encrypt: flag(field("lets_encrypt")),
        has_intermediate_cert: flag(field("has_intermediate_cert")),
        ssl_termination: flag(field("ssl_termination")),
        status: status(field("status")),
    }
}

/// `server_names`: a string as is, or an array of strings joined with `,`.
fn server_names(value: &Value) -> Option<String> {
    match value {
        Value::String(names) => Some(names.clone()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str())
            .collect::<Option<Vec<_>>>()
            .map(|names| names.join(",")),
        _ => None,
    }
}

/// A boolean label: `"true"` or `"false"` from a boolean or a common spelling of
/// one; any other string (the API model documents `ssl_termination` as a string)
/// is kept, trimmed and lower-cased.
fn flag(value: &Value) -> Option<String> {
    match value {
        Value::Bool(flag) => Some(flag.to_string()),
        Value::String(text) => {
            let text = text.trim().to_lowercase();
            Some(match text.as_str() {
                "true" | "1" | "yes" => "true".to_owned(),
                "false" | "0" | "no" => "false".to_owned(),
                _ => text,
            })
        }
        _ => None,
    }
}

/// `status`: a string trimmed, or an integer named as in Cloud66's Go client.
fn status(value: &Value) -> Option<String> {
    match value {
        Value::String(status) => Some(status.trim().to_owned()),
        Value::Number(number) => number
            .as_i64()
            .map(status_name)
            .or_else(|| number.as_u64().map(|code| code.to_string())),
        _ => None,
    }
}

/// The name of an integer status code from Cloud66's Go client; unknown codes keep
/// their decimal text so a new code is visible rather than lost.
fn status_name(code: i64) -> String {
    let name = match code {
        -1 => "not_applicable",
        0 => "not_installed",
        1 => "installing",
        2 => "failed",
        3 => "installed",
        4 => "removing",
        _ => return code.to_string(),
    };
    name.to_owned()
}

/// SHA-256 of the body's canonical JSON. serde_json's default `Map` is sorted by key
/// and serialises compactly, so key order and white space do not change the digest;
/// the `digest_ignores_key_order_and_white_space` test fails if a dependency turns
/// on serde_json's `preserve_order` feature.
fn digest(value: &Value) -> [u8; 32] {
    Sha256::digest(value.to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXPIRE_SOON: &str = include_str!("../tests/fixtures/cloud66/expire-soon.json");
    const INSTALL_OK: &str = include_str!("../tests/fixtures/cloud66/install-ok.json");
    const INSTALL_FAIL: &str = include_str!("../tests/fixtures/cloud66/install-fail.json");

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
}

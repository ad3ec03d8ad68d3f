//! Parsing and validation of Cloud66 webhook bodies (pure: no I/O).
//!
//! Cloud66 posts every notification type to the same URL, and its test button posts a
//! body it does not document, so [`parse`] first decides whether a body is, or claims
//! to be, an SSL event, and acknowledges anything else (an empty body included)
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

/// Feeds whatever is written to it into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Field paths named in errors; the part after the last `.` is the JSON key.
/// Path of the event type, which decides whether the body is looked at at all.
const EVENT_TYPE: &str = "event_type";
/// Path of the send time (Unix seconds), which orders events.
const TIMESTAMP: &str = "timestamp";
/// Path of the object that carries the certificate.
const SSL_CERTIFICATE: &str = "ssl_certificate";
/// How every SSL event type starts, tracked or not.
const SSL_EVENT_TYPE_PREFIX: &str = "ssl_certificate.";
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
/// A body claims to be an SSL event when its `event_type` is a string starting with
/// `ssl_certificate.` or it has an `ssl_certificate` that is not `null`. Such a body
/// gets every check: it must name its `event_type`, and one of the three tracked
/// types gives [`Delivery::Ssl`] with the validated event and the digest of the body's
/// canonical JSON (any other type, `ssl_certificate.*` included, is
/// [`Delivery::Other`]). Any other JSON object, and an empty or white-space body, is
/// [`Delivery::Other`] without further validation: that is what Cloud66's test button
/// and its other notifications send. Invalid JSON and non-object JSON are refused.
///
/// ```
/// use cloud66_ssl_exporter::event::{Delivery, EventKind};
/// use cloud66_ssl_exporter::webhook::{WebhookError, parse};
///
/// let body = br#"{"timestamp": 1640995200, "event_type": "ssl_certificate.install.ok",
///   "ssl_certificate": {"stack_id": "123", "name": "web", "status": 3,
///                       "cert_expiry": "2024-07-01 00:00:00 UTC"}}"#;
/// let Ok(Delivery::Ssl { event, .. }) = parse(body) else { panic!("accepted") };
/// assert_eq!(event.kind, EventKind::InstallOk);
/// assert_eq!((event.stack.as_str(), event.name.as_str()), ("123", "web"));
/// assert_eq!(event.expiry, Some(1_719_792_000.0));
/// assert_eq!(event.info.status.as_deref(), Some("installed"));
///
/// let other = br#"{"event_type": "stack.redeploy.ok"}"#;
/// assert!(matches!(parse(other), Ok(Delivery::Other { .. })));
///
/// // What the (undocumented) test button may send: no event type; "" stands for none.
/// for test in [&b""[..], b" \n", b"{}", br#"{"foo": 1}"#] {
///     let none = Delivery::Other { event_type: String::new() };
///     assert_eq!(parse(test), Ok(none));
/// }
///
/// let missing = br#"{"timestamp": 1, "event_type": "ssl_certificate.install.ok",
///   "ssl_certificate": {"stack_id": 1}}"#;
/// assert_eq!(parse(missing), Err(WebhookError::Missing("ssl_certificate.name")));
///
/// // A certificate without an event type still claims to be an SSL event.
/// let untyped = br#"{"ssl_certificate": {"stack_id": 1, "name": "x"}}"#;
/// assert_eq!(parse(untyped), Err(WebhookError::Missing("event_type")));
/// assert!(matches!(parse(b"[1]"), Err(WebhookError::Malformed(_))));
/// ```
pub fn parse(body: &[u8]) -> Result<Delivery, WebhookError> {
    // Cloud66 does not document its test delivery; it may have no body at all.
    if body.iter().all(|byte| JSON_WHITE_SPACE.contains(byte)) {
        return Ok(Delivery::Other {
            event_type: String::new(),
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|err| WebhookError::Malformed(err.to_string()))?;
    let Value::Object(top) = &value else {
        return Err(WebhookError::Malformed(format!(
            "expected a JSON object at the top level, got {}",
            type_name(&value)
        )));
    };
    if !claims_ssl(top) {
        return Ok(Delivery::Other {
            event_type: named_event_type(top),
        });
    }
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

/// The bytes JSON allows between tokens (RFC 8259): a body of only these is empty.
const JSON_WHITE_SPACE: &[u8] = b" \t\n\r";

/// Whether a body is, or says it is, an SSL event, and so gets every strict check: its
/// `event_type` names one, or it carries an `ssl_certificate` (a certificate payload
/// that lost its event type is a broken SSL event, to be refused, not a test to ignore).
fn claims_ssl(top: &Map<String, Value>) -> bool {
    let ssl_type = matches!(
        top.get(key(EVENT_TYPE)),
        Some(Value::String(event_type)) if event_type.starts_with(SSL_EVENT_TYPE_PREFIX)
    );
    ssl_type || optional(top, SSL_CERTIFICATE).is_some()
}

/// The `event_type` of a body that is not an SSL event, as sent; `""` when it names
/// none (absent, `null`, blank, or not a string).
fn named_event_type(top: &Map<String, Value>) -> String {
    match top.get(key(EVENT_TYPE)) {
        Some(Value::String(event_type)) if !event_type.trim().is_empty() => event_type.clone(),
        _ => String::new(),
    }
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
pub(crate) fn quote(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A short description of a value's JSON type, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
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
pub(crate) fn date_seconds(text: &str) -> Option<f64> {
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
    Ok(Some(timestamp + days * SECONDS_PER_DAY))
}

/// Largest plausible `days_until_expiry` either way: a century. Larger values would
/// put absurd expiry timestamps into the metrics.
const MAX_DAYS_UNTIL_EXPIRY: f64 = 36_525.0;

/// `days_until_expiry`: optional; a JSON number or a numeric string, within a century
/// either way. It may be negative (a certificate that has already expired).
fn days_until_expiry(cert: &Map<String, Value>) -> Result<Option<f64>, WebhookError> {
    let Some(value) = optional(cert, DAYS_UNTIL_EXPIRY) else {
        return Ok(None);
    };
    let days = number(value).ok_or_else(|| {
        invalid(
            DAYS_UNTIL_EXPIRY,
            "expected a number or a numeric string",
            value,
        )
    })?;
    if days.abs() > MAX_DAYS_UNTIL_EXPIRY {
        return Err(invalid(
            DAYS_UNTIL_EXPIRY,
            "expected a number of days within a century (±36525)",
            value,
        ));
    }
    Ok(Some(days))
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
pub(crate) fn server_names(value: &Value) -> Option<String> {
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
pub(crate) fn flag(value: &Value) -> Option<String> {
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
pub(crate) fn status(value: &Value) -> Option<String> {
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
    // Serialise straight into the hash: no intermediate string.
    let mut hasher = HashWriter(Sha256::new());
    // Writing a `Value` fails only when the writer does, and this one never does.
    let _ = serde_json::to_writer(&mut hasher, value);
    hasher.0.finalize().into()
}

#[cfg(test)]
mod tests;

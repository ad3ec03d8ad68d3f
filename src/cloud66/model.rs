//! Cloud66 API responses, parsed (pure: no I/O).
//!
//! Strict about what reconciliation relies on: the paging envelope, a stack's `uid`, a
//! certificate's `uuid` and `name`, and any date it gives. Tolerant of the rest and of
//! the drift between Cloud66's docs, API model and Go client (see `API.md` in the
//! project's notes): `status` as an integer or a string, `ssl_termination` as a boolean
//! or a string, `expires_at` null, dates as RFC 3339 or `2014-08-14 00:38:14 UTC`,
//! unknown fields. A page that fails anywhere is an error as a whole, so a sync never
//! applies half a page.

use std::fmt;

use serde_json::{Map, Value};

use crate::event::{CertInfo, Observation};
use crate::webhook::{date_seconds, flag, quote, server_names, status, type_name};

/// Why a page could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

/// One page of a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items of this page, in order.
    pub items: Vec<T>,
    /// The next page's number, `None` on the last page.
    pub next: Option<u32>,
}

/// A stack from `GET /stacks.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// The stack's uid.
    pub uid: String,
    /// Its name (empty if not given).
    pub name: String,
    /// Its environment (empty if not given).
    pub environment: String,
}

/// An SSL certificate from `GET /stacks/{uid}/ssl_certificates.json`, as an observation
/// still missing where and when it was seen.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiCertificate {
    /// The certificate's `uuid`.
    pub uuid: String,
    /// Its name, trimmed (the `name` label).
    pub name: String,
    /// `expires_at` as Unix seconds; `None` when null or absent.
    pub expiry: Option<f64>,
    /// From `status`: 2 failing, 3 installed, anything else unknown.
    pub install_failing: Option<bool>,
    /// The descriptive fields.
    pub info: CertInfo,
}

impl ApiCertificate {
    /// The observation of this certificate, fetched at `fetched_at` from the stack
    /// `stack_uid`, whose certificates carry the label `stack`.
    pub fn observed(self, stack: &str, stack_uid: &str, fetched_at: f64) -> Observation {
        Observation {
            fetched_at,
            stack: stack.to_owned(),
            stack_uid: stack_uid.to_owned(),
            uuid: self.uuid,
            name: self.name,
            expiry: self.expiry,
            install_failing: self.install_failing,
            info: self.info,
        }
    }
}

/// A paged list: `{"response": [...], "pagination": {"next": null|N, ...}, ...}`, each item
/// read by `item`.
pub fn page<T>(
    body: &[u8],
    item: impl Fn(&Map<String, Value>) -> Result<T, ModelError>,
) -> Result<Page<T>, ModelError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ModelError(format!("the body is not JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(ModelError(format!(
            "expected a JSON object, got {}",
            type_name(&value)
        )));
    };
    let items = match top.get("response") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ModelError(format!(
                "`response`: expected an array, got {}",
                quote(other)
            )));
        }
        None => return Err(ModelError("`response` is missing".into())),
    };
    let items = items
        .iter()
        .enumerate()
        .map(|(i, value)| {
            match value {
                Value::Object(object) => item(object),
                other => Err(ModelError(format!(
                    "expected an object, got {}",
                    type_name(other)
                ))),
            }
            .map_err(|ModelError(why)| ModelError(format!("`response[{i}]`: {why}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Page {
        items,
        next: next_page(&top)?,
    })
}

/// `pagination.next`: a page number (integer or numeric string) or null; a list without
/// `pagination` is one page.
fn next_page(top: &Map<String, Value>) -> Result<Option<u32>, ModelError> {
    let Some(pagination) = top.get("pagination").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let next = match pagination {
        Value::Object(p) => p.get("next").unwrap_or(&Value::Null),
        other => {
            return Err(ModelError(format!(
                "`pagination`: expected an object, got {}",
                quote(other)
            )));
        }
    };
    let number = match next {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    number
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n >= 1)
        .map(Some)
        .ok_or_else(|| {
            ModelError(format!(
                "`pagination.next`: expected a page number or null, got {}",
                quote(next)
            ))
        })
}

/// A required, non-blank string field, trimmed.
fn text(object: &Map<String, Value>, key: &str) -> Result<String, ModelError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::Null) | None => Err(ModelError(format!("`{key}` is missing"))),
        Some(other) => Err(ModelError(format!(
            "`{key}`: expected a non-empty string, got {}",
            quote(other)
        ))),
    }
}

/// An optional string field; anything but a string counts as absent.
fn optional_text(object: &Map<String, Value>, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A stack list item.
pub fn stack(object: &Map<String, Value>) -> Result<Stack, ModelError> {
    Ok(Stack {
        uid: text(object, "uid")?,
        name: optional_text(object, "name"),
        environment: optional_text(object, "environment"),
    })
}

/// A certificate list item.
pub fn certificate(object: &Map<String, Value>) -> Result<ApiCertificate, ModelError> {
    let field = |key: &str| object.get(key).unwrap_or(&Value::Null);
    let expiry = match field("expires_at") {
        Value::Null => None,
        value => Some(value.as_str().and_then(date_seconds).ok_or_else(|| {
            ModelError(format!(
                "`expires_at`: expected an RFC 3339 date, `YYYY-MM-DD HH:MM:SS UTC` or null, got {}",
                quote(value)
            ))
        })?),
    };
    let status_label = status(field("status"));
    let lets_encrypt = match field("type") {
        Value::String(kind) => Some((kind.trim() == "lets_encrypt").to_string()),
        _ => flag(field("lets_encrypt")),
    };
    Ok(ApiCertificate {
        uuid: text(object, "uuid")?,
        name: text(object, "name")?,
        expiry,
        install_failing: status_label.as_deref().and_then(failing),
        info: CertInfo {
            server_names: server_names(field("server_names")),
            lets_encrypt,
            has_intermediate_cert: flag(field("has_intermediate_cert")),
            ssl_termination: flag(field("ssl_termination")),
            status: status_label,
        },
    })
}

/// What a status says about the installation: `failed` (2) is failing, `installed` (3)
/// or the model docs' `active` is not; anything else says nothing.
fn failing(status: &str) -> Option<bool> {
    match status {
        "failed" => Some(true),
        "installed" | "active" => Some(false),
        _ => None,
    }
}

/// The webhook stack id named by an async action list item: the `resource_id` (digits,
/// as a string or an integer) of an entry whose `resource_type` is `stack` in any case.
/// Other entries, and entries we cannot read, name nothing: actions are only a hint.
pub fn action_stack_id(object: &Map<String, Value>) -> Result<Option<String>, ModelError> {
    let is_stack = object
        .get("resource_type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("stack"));
    if !is_stack {
        return Ok(None);
    }
    let id = match object.get("resource_id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => {
            let digits = s.trim();
            match !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                true => digits.parse().ok(),
                false => None,
            }
        }
        _ => None,
    };
    Ok(id.map(|id| id.to_string()))
}

/// The `error` field of an error body, if it is JSON with one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("error")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACKS: &str = include_str!("../../tests/fixtures/cloud66/api/stacks.page1.json");
    const CERTIFICATES: &str =
        include_str!("../../tests/fixtures/cloud66/api/ssl_certificates.page1.json");
    const ACTIONS: &str = include_str!("../../tests/fixtures/cloud66/api/actions.page1.json");
    const THROTTLED: &str = include_str!("../../tests/fixtures/cloud66/api/error.503.json");

    fn one(json: &str) -> Result<ApiCertificate, ModelError> {
        let body = format!(r#"{{"response": [{json}]}}"#);
        page(body.as_bytes(), certificate).map(|mut p| p.items.remove(0))
    }

    #[test]
    fn the_documented_examples_parse() {
        let stacks = page(STACKS.as_bytes(), stack).expect("stacks");
        assert_eq!(stacks.next, None);
        assert_eq!(
            stacks.items[0],
            Stack {
                uid: "5999b763474b0eafa5fafb64bff0ba80".into(),
                name: "Awesome App".into(),
                environment: "production".into(),
            }
        );
        let certs = page(CERTIFICATES.as_bytes(), certificate).expect("certificates");
        let [installed, manual, failed] = &certs.items[..] else {
            panic!("three certificates: {certs:?}")
        };
        assert_eq!(installed.name, "app.example.com");
        assert_eq!(installed.expiry, Some(1_748_864_884.0));
        assert_eq!(installed.install_failing, Some(false));
        assert_eq!(
            installed.info,
            CertInfo {
                server_names: Some("app.example.com,www.example.com".into()),
                lets_encrypt: Some("true".into()),
                has_intermediate_cert: Some("true".into()),
                ssl_termination: Some("true".into()),
                status: Some("installed".into()),
            }
        );
        assert_eq!(manual.expiry, None, "expires_at null keeps the last known");
        assert_eq!(manual.info.lets_encrypt.as_deref(), Some("false"));
        assert_eq!(failed.install_failing, Some(true));
        let actions = page(ACTIONS.as_bytes(), action_stack_id).expect("actions");
        assert_eq!(actions.items, vec![Some("283".to_owned())]);
        assert_eq!(
            error_code(THROTTLED.as_bytes()).as_deref(),
            Some("throttled")
        );
    }

    #[test]
    fn drift_is_tolerated() {
        let cert = one(
            r#"{"uuid": "u", "name": " web ", "status": "active", "ssl_termination": "yes",
                "expires_at": "2014-08-14 00:38:14 UTC", "server_names": ["a.com", "b.com"],
                "has_intermediate_cert": null, "new_field": {"x": 1}}"#,
        )
        .expect("drifted certificate");
        assert_eq!(cert.name, "web");
        assert_eq!(cert.expiry, Some(1_407_976_694.0));
        assert_eq!(cert.install_failing, Some(false));
        assert_eq!(cert.info.ssl_termination.as_deref(), Some("true"));
        assert_eq!(cert.info.server_names.as_deref(), Some("a.com,b.com"));
        assert_eq!(cert.info.has_intermediate_cert, None);
        for (status, failing) in [
            ("2", Some(true)),
            ("3", Some(false)),
            ("1", None),
            ("\"pending\"", None),
        ] {
            let cert = one(&format!(
                r#"{{"uuid": "u", "name": "n", "status": {status}}}"#
            ));
            assert_eq!(
                cert.expect("status").install_failing,
                failing,
                "status {status}"
            );
        }
    }

    #[test]
    fn what_we_rely_on_is_strict() {
        for (json, why) in [
            (r#"{"name": "n"}"#, "`response[0]`: `uuid` is missing"),
            (
                r#"{"uuid": "u", "name": " "}"#,
                "`response[0]`: `name`: expected a non-empty string, got \" \"",
            ),
            (
                r#"{"uuid": "u", "name": "n", "expires_at": "soon"}"#,
                "`response[0]`: `expires_at`: expected an RFC 3339 date, `YYYY-MM-DD HH:MM:SS UTC` or null, got \"soon\"",
            ),
            (
                r#"{"uuid": 5, "name": "n"}"#,
                "`response[0]`: `uuid`: expected a non-empty string, got 5",
            ),
        ] {
            assert_eq!(one(json), Err(ModelError(why.into())), "{json}");
        }
        for body in [
            "",
            "<html>oops</html>",
            "[]",
            r#"{"response": {}}"#,
            r#"{"count": 0}"#,
            r#"{"response": [], "pagination": {"next": "two"}}"#,
            r#"{"response": [], "pagination": {"next": 0}}"#,
            r#"{"response": [1]}"#,
            &CERTIFICATES[..CERTIFICATES.len() / 2],
        ] {
            assert!(page(body.as_bytes(), certificate).is_err(), "{body:?}");
        }
    }

    #[test]
    fn paging_follows_next() {
        let body = r#"{"response": [], "pagination": {"previous": 1, "next": 3, "current": 2}}"#;
        assert_eq!(page(body.as_bytes(), stack).expect("page").next, Some(3));
        let body = r#"{"response": [], "pagination": {"next": "4"}}"#;
        assert_eq!(page(body.as_bytes(), stack).expect("page").next, Some(4));
        let body = r#"{"response": [], "pagination": null}"#;
        assert_eq!(page(body.as_bytes(), stack).expect("page").next, None);
    }

    #[test]
    fn only_stack_actions_name_an_id() {
        let read = |json: &str| {
            let body = format!(r#"{{"response": [{json}]}}"#);
            page(body.as_bytes(), action_stack_id)
                .expect("actions")
                .items
                .remove(0)
        };
        assert_eq!(
            read(r#"{"resource_type": "Stack", "resource_id": 283}"#),
            Some("283".into())
        );
        assert_eq!(
            read(r#"{"resource_type": "stack", "resource_id": " 0283 "}"#),
            Some("283".into())
        );
        assert_eq!(
            read(r#"{"resource_type": "server", "resource_id": "9"}"#),
            None
        );
        assert_eq!(
            read(r#"{"resource_type": "stack", "resource_id": "abc"}"#),
            None
        );
        assert_eq!(read(r#"{"resource_type": "stack"}"#), None);
    }
}

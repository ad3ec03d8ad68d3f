//! The read-only JSON API: the certificate list, one certificate with its event
//! history, and the exporter's status. No token needed (like `/metrics`); nothing here
//! ever shows the webhook token, and bad parameters are refused without echoing them.

use std::collections::HashMap;

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::api::{certificate_path, percent_decode};
use super::{HttpError, HttpResponse, now, response};
use crate::app::App;
use crate::state::CertKey;
use crate::store::History;
use crate::view::{CertState, CertificateDetail, Filter, StackNames, Summary, rfc3339};

/// Path of the certificate list.
pub(super) const LIST: &str = "/api/v1/certificates";

/// Path of the status.
pub(super) const STATUS: &str = "/api/v1/status";

/// Events of the history shown when `?history=` is not given.
pub(super) const DEFAULT_HISTORY: usize = 50;

/// The most events of history one answer shows.
pub(super) const MAX_HISTORY: usize = 1000;

/// The parameters of the list.
const LIST_PARAMETERS: &[&str] = &["stack", "state", "q", "limit", "offset"];

/// `GET /api/v1/certificates`: every certificate matching the filter, sorted, paged.
pub(super) fn list(app: &App, query: Option<&str>) -> Result<HttpResponse, HttpError> {
    let mut params = parameters(query, LIST_PARAMETERS)?;
    let filter = Filter {
        stack: params.remove("stack"),
        state: state(params.remove("state"))?,
        q: params.remove("q"),
        limit: number(&params, "limit")?,
        offset: number(&params, "offset")?.unwrap_or(0),
    };
    let certs = app.state().snapshot();
    json_ok(&filter.apply(&certs, now(), &stack_names(app)))
}

/// The `state` parameter, if given.
pub(super) fn state(name: Option<String>) -> Result<Option<CertState>, HttpError> {
    name.map(|name| {
        CertState::parse(&name).ok_or_else(|| {
            let names: Vec<_> = CertState::ALL.iter().map(|s| s.as_str()).collect();
            HttpError::BadRequest(format!("state must be one of: {}", names.join(", ")))
        })
    })
    .transpose()
}

/// `GET /api/v1/certificates/<stack>/<name>`: one certificate, every known field, and
/// the newest `?history=N` events of it (default [`DEFAULT_HISTORY`]).
pub(super) async fn detail(
    app: &App,
    rest: &str,
    query: Option<&str>,
) -> Result<HttpResponse, HttpError> {
    let Lookup::Found {
        detail,
        history,
        limit,
    } = lookup(app, rest, query, now()).await?
    else {
        return Err(HttpError::NotFound);
    };
    json_ok(&json!({
        "certificate": detail,
        "history": { "limit": limit, "total": history.total, "events": history.events },
    }))
}

/// What a certificate's address (`<stack>/<name>` and `?history=N`) found.
pub(super) enum Lookup {
    /// The certificate as of the request, its newest events, and how many were asked.
    Found {
        detail: Box<CertificateDetail>,
        history: History,
        limit: usize,
    },
    /// No such certificate is tracked.
    Unknown { stack: String, name: String },
}

/// The certificate at `rest` (the path after the prefix, percent-encoded) and its newest
/// events as `query` asks, as of Unix time `now`: shared by the JSON detail and the page.
pub(super) async fn lookup(
    app: &App,
    rest: &str,
    query: Option<&str>,
    now: f64,
) -> Result<Lookup, HttpError> {
    let (stack, name) = certificate_path(rest)?;
    let params = parameters(query, &["history"])?;
    let limit = number(&params, "history")?.unwrap_or(DEFAULT_HISTORY);
    if limit > MAX_HISTORY {
        return Err(HttpError::BadRequest(format!(
            "history must be at most {MAX_HISTORY}"
        )));
    }
    let Some(cert) = app.state().get_key(&CertKey::new(&stack, &name)) else {
        return Ok(Lookup::Unknown { stack, name });
    };
    let names = stack_names(app);
    let detail = Box::new(CertificateDetail::new(
        &cert,
        now,
        names.get(&stack).map(String::as_str),
    ));
    let history = app
        .store()
        .history(stack, name, limit)
        .await
        .map_err(|e| HttpError::Unavailable(format!("cannot read the event history: {e}")))?;
    Ok(Lookup::Found {
        detail,
        history,
        limit,
    })
}

/// `GET /api/v1/status`: what is running, since when, with how many certificates, and
/// whether storage takes writes.
pub(super) async fn status(app: &App) -> Result<HttpResponse, HttpError> {
    let storage = match app.store().probe(app.config().max_body_bytes).await {
        Ok(()) => json!({ "ready": true, "error": null }),
        Err(e) => json!({ "ready": false, "error": e.to_string() }),
    };
    let started = app.started_at();
    let last_webhook = app.metrics().last_delivery().map(|last| last.at);
    let sync = match app.syncer() {
        Some(syncer) => serde_json::to_value(syncer.status())
            .map_err(|e| HttpError::Unavailable(format!("cannot show the sync status: {e}")))?,
        None => serde_json::Value::Null,
    };
    let summary = Summary::of(&app.state().snapshot(), now(), &stack_names(app));
    json_ok(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": crate::GIT_REVISION,
        "started_at": rfc3339(started),
        "started_unix": started,
        "certificates": summary.certificates,
        "states": summary.states,
        "soonest": summary.soonest,
        "certificates_limit": app.config().max_certificates,
        "last_webhook_at": last_webhook.and_then(rfc3339),
        "last_webhook_unix": last_webhook,
        "storage": storage,
        "sync": sync,
    }))
}

/// Stack names by `stack` label, when the Cloud66 API reconciliation knows them.
pub(super) fn stack_names(app: &App) -> StackNames {
    app.syncer().map_or_else(StackNames::new, |syncer| {
        syncer
            .directory()
            .records()
            .map(|stack| (stack.label().to_owned(), stack.name.clone()))
            .collect()
    })
}

/// `value` as a 200 JSON answer.
fn json_ok(value: &impl Serialize) -> Result<HttpResponse, HttpError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| HttpError::Unavailable(format!("cannot encode the answer: {e}")))?;
    Ok(response(StatusCode::OK, "application/json", body))
}

/// The parameters of `query`, decoded (`+` is a space): only names in `allowed`, each
/// at most once.
pub(super) fn parameters(
    query: Option<&str>,
    allowed: &[&'static str],
) -> Result<HashMap<&'static str, String>, HttpError> {
    let mut found = HashMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(&key.replace('+', " "))?;
        let known = allowed.iter().find(|name| **name == key).ok_or_else(|| {
            HttpError::BadRequest(format!(
                "unknown parameter; this endpoint takes: {}",
                allowed.join(", ")
            ))
        })?;
        let value = percent_decode(&value.replace('+', " "))?;
        if found.insert(*known, value).is_some() {
            return Err(HttpError::BadRequest(format!("{known} is given twice")));
        }
    }
    Ok(found)
}

/// Parameter `name` as a whole number of 0 or more, if given.
pub(super) fn number(
    params: &HashMap<&'static str, String>,
    name: &str,
) -> Result<Option<usize>, HttpError> {
    params
        .get(name)
        .map(|value| {
            value.parse().map_err(|_| {
                HttpError::BadRequest(format!("{name} must be a whole number, 0 or more"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_known_and_single() {
        let params = parameters(Some("q=a+b%2Fc&limit=5&&state="), LIST_PARAMETERS).expect("valid");
        assert_eq!(params["q"], "a b/c");
        assert_eq!(params["limit"], "5");
        assert_eq!(params["state"], "");
        assert!(parameters(None, LIST_PARAMETERS).expect("valid").is_empty());
        let refused = |query| {
            parameters(Some(query), LIST_PARAMETERS)
                .map(|_| ())
                .unwrap_err()
        };
        assert!(
            matches!(refused("token=secret"), HttpError::BadRequest(m) if !m.contains("secret"))
        );
        assert!(matches!(refused("q=a&q=b"), HttpError::BadRequest(_)));
        assert!(matches!(refused("q=%FF"), HttpError::BadRequest(_)));
    }

    #[test]
    fn numbers_are_whole_and_not_negative() {
        let params = |value: &str| HashMap::from([("limit", value.to_owned())]);
        assert_eq!(number(&params("0"), "limit").ok(), Some(Some(0)));
        assert_eq!(number(&params("12"), "limit").ok(), Some(Some(12)));
        for bad in ["-1", "1.5", "ten", "", " 1"] {
            assert!(number(&params(bad), "limit").is_err(), "{bad:?}");
        }
        assert_eq!(number(&HashMap::new(), "limit").ok(), Some(None));
    }
}

//! The operational endpoints: readiness, forgetting a certificate, and the Cloud66 API
//! sync.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::{HttpError, HttpResponse, json_response, response};
use crate::app::App;
use crate::cloud66::Trigger;
use crate::store::Forgotten;

/// Prefix of the certificate API; the rest of the path is `<stack>/<name>`.
pub(super) const CERTIFICATES_API: &str = "/api/v1/certificates/";

/// Path of the sync API.
pub(super) const SYNC_API: &str = "/api/v1/sync";

/// What the sync API says without an API token.
const SYNC_OFF: &str =
    "Cloud66 API reconciliation is off: start the exporter with --cloud66.api-token";

/// Checks the webhook token of an API call (query or headers); `action` names the call
/// in the log line of a refusal.
fn authorize(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
    action: &str,
) -> Result<(), HttpError> {
    if app
        .auth()
        .allows(None, request.uri().query(), request.headers())
    {
        return Ok(());
    }
    tracing::warn!(%peer, "{action} rejected: missing or invalid token");
    Err(HttpError::Unauthorized)
}

/// `POST /api/v1/sync`: starts a Cloud66 API sync now; on a replica that does not lead,
/// on the leader.
pub(super) async fn sync_now(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Result<HttpResponse, HttpError> {
    authorize(app, peer, request, "sync request")?;
    let syncer = app.syncer().ok_or(HttpError::Off(SYNC_OFF))?;
    let role = app.store().role();
    if !role.leads() {
        return match role.ask_leader().await {
            Ok(true) => {
                tracing::info!(%peer, "Cloud66 API sync requested; passed on to the leader");
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "status": "started", "on": "leader" }),
                ))
            }
            Ok(false) => Err(HttpError::Unavailable(
                "no replica leads right now (a handover takes a few seconds); try again".into(),
            )),
            Err(e) => Err(HttpError::Unavailable(format!(
                "cannot ask the leader for a sync: {e}"
            ))),
        };
    }
    match syncer.trigger() {
        Trigger::Started => {
            tracing::info!(%peer, "Cloud66 API sync requested");
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({ "status": "started" }),
            ))
        }
        Trigger::Running => Err(HttpError::Conflict("a Cloud66 API sync is running already")),
    }
}

/// `GET /api/v1/sync`: what the last syncs did, and what is known of each stack.
pub(super) fn sync_status(app: &App) -> Result<HttpResponse, HttpError> {
    let syncer = app.syncer().ok_or(HttpError::Off(SYNC_OFF))?;
    let stacks: Vec<_> = syncer
        .directory()
        .records()
        .map(|stack| {
            json!({
                "stack": stack.label(),
                "uid": stack.uid,
                "name": stack.name,
                "environment": stack.environment,
                "id_source": stack.id_source.as_str(),
            })
        })
        .collect();
    let mut body = serde_json::to_value(syncer.status())
        .map_err(|e| HttpError::Unavailable(format!("cannot show the sync status: {e}")))?;
    body["stacks_known"] = serde_json::Value::Array(stacks);
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE /api/v1/certificates/<stack>/<name>`: forgets a certificate and its series.
pub(super) async fn forget(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
    rest: &str,
) -> Result<HttpResponse, HttpError> {
    authorize(app, peer, request, "certificate deletion")?;
    let (stack, name) = certificate_path(rest)?;
    let forgotten = app
        .store()
        .forget(stack.clone(), name.clone())
        .await
        .map_err(|e| HttpError::Unavailable(format!("certificate not deleted: {e}")))?;
    match forgotten {
        Forgotten::Removed => {
            tracing::info!(%peer, stack, name, "certificate deleted");
            Ok(json_response(
                StatusCode::OK,
                &json!({ "status": "deleted" }),
            ))
        }
        Forgotten::Unknown => Err(HttpError::NotFound),
    }
}

/// The (stack, name) of `rest`, the path after [`CERTIFICATES_API`]: `<stack>/<name>`,
/// each percent-encoded (the name may hold `%2F`, or a bare `/` after the first).
pub(super) fn certificate_path(rest: &str) -> Result<(String, String), HttpError> {
    let (stack, name) = rest.split_once('/').ok_or(HttpError::NotFound)?;
    let (stack, name) = (percent_decode(stack)?, percent_decode(name)?);
    if stack.is_empty() || name.is_empty() {
        return Err(HttpError::NotFound);
    }
    Ok((stack, name))
}

/// `part` percent-decoded, which must give UTF-8.
pub(super) fn percent_decode(part: &str) -> Result<String, HttpError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| HttpError::BadRequest(format!("{part:?} is not percent-encoded UTF-8")))
}

pub(super) async fn readyz(app: &App) -> Result<HttpResponse, HttpError> {
    app.store()
        .probe(app.config().max_body_bytes)
        .await
        .map_err(|e| HttpError::Unavailable(format!("storage is not writable: {e}")))?;
    Ok(response(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        b"ready\n".to_vec(),
    ))
}

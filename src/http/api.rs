//! The operational endpoints: readiness and forgetting a certificate.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::{HttpError, HttpResponse, json_response, response};
use crate::app::App;
use crate::store::Forgotten;

/// Prefix of the certificate API; the rest of the path is `<stack>/<name>`.
pub(super) const CERTIFICATES_API: &str = "/api/v1/certificates/";

/// `DELETE /api/v1/certificates/<stack>/<name>`: forgets a certificate and its series.
pub(super) async fn forget(
    app: &App,
    peer: SocketAddr,
    request: &Request<Incoming>,
    rest: &str,
) -> Result<HttpResponse, HttpError> {
    if !app
        .auth()
        .allows(None, request.uri().query(), request.headers())
    {
        tracing::warn!(%peer, "certificate deletion rejected: missing or invalid token");
        return Err(HttpError::Unauthorized);
    }
    let (stack, name) = rest.split_once('/').ok_or(HttpError::NotFound)?;
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| HttpError::BadRequest(format!("{part:?} is not percent-encoded UTF-8")))
    };
    let (stack, name) = (decode(stack)?, decode(name)?);
    if stack.is_empty() || name.is_empty() {
        return Err(HttpError::NotFound);
    }
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

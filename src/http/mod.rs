//! HTTP routing and handlers.
//!
//! Endpoints:
//! - `POST /webhook`, `POST /webhook/<token>`: Cloud66 deliveries (JSON answers).
//! - `GET /webhook/<token>`, and `GET /webhook` with the token in the query or an
//!   `Authorization` header: a page saying the URL is ready (401 with a wrong token).
//!   `GET /webhook` offering no token is 405 (`Allow: POST`), unless authentication is
//!   disabled.
//! - `GET /metrics` (or `--web.telemetry-path`): Prometheus text exposition.
//! - `GET /healthz`: the process is alive.
//! - `GET /readyz`: the database commits a write the size of the largest event, and
//!   the disk has room for more.
//! - `GET /`: the status page: summary, certificates (filters `q`, `stack`, `state`;
//!   `limit`, `offset`), and how to configure Cloud66. `GET /certificates/<stack>/<name>`:
//!   one certificate and its event history. `GET /static/style.css`: their stylesheet.
//! - `GET /api/v1/certificates`: the certificates as JSON, filtered (`stack`, `state`,
//!   `q`), sorted by time left, paged (`limit`, `offset`); no token needed.
//! - `GET /api/v1/certificates/<stack>/<name>`: one certificate and its newest events
//!   (`history`, default 50); no token needed.
//! - `DELETE /api/v1/certificates/<stack>/<name>`: forget a decommissioned certificate
//!   and its series (token required; `<name>` percent-encoded).
//! - `GET /api/v1/status`: version, revision, start time, certificates, last webhook,
//!   storage readiness and the sync status.
//! - `POST /api/v1/sync`: start a Cloud66 API sync now (token required; 202, or 409
//!   while one runs); `GET /api/v1/sync`: the sync status as JSON. Both 404 without an
//!   API token.
//!
//! Every failure is an [`HttpError`], turned into a status and a JSON body in one place
//! ([`HttpError::into_response`]); for the pages, into the same status and a page
//! (`pages::error_page`).

mod api;
mod certificates;
mod pages;
mod scrape;
mod webhook;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::auth::redact;
use crate::metrics::WebhookResult;

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// Every way a request can fail, each with its status.
#[derive(Debug)]
pub enum HttpError {
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint exists but not for this method; holds the `Allow` value.
    MethodNotAllowed(&'static str),
    /// 401: missing or wrong webhook token.
    Unauthorized,
    /// 413: the body is larger than the limit (bytes).
    PayloadTooLarge(usize),
    /// 400: the body could not be read or is not an acceptable event.
    BadRequest(String),
    /// 408: the body did not arrive in time.
    BodyTimeout,
    /// 422: a new certificate while `--storage.max-certificates` are tracked.
    OverLimit(usize),
    /// 503: the event could not be made durable, or storage is not ready.
    Unavailable(String),
    /// 409: the request conflicts with work in progress.
    Conflict(&'static str),
    /// 404: a feature that is not configured; says how to turn it on.
    Off(&'static str),
}

impl HttpError {
    /// The status this error is answered with.
    fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::OverLimit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::Off(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The one place errors become statuses and JSON bodies.
    pub fn into_response(self) -> HttpResponse {
        let mut response = json_response(self.status(), &json!({ "error": self.to_string() }));
        let headers = response.headers_mut();
        match self {
            HttpError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::Unauthorized => {
                headers.append(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"cloud66-ssl-exporter\""),
                );
                headers.append(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Basic realm=\"cloud66-ssl-exporter\", charset=\"UTF-8\"",
                    ),
                );
            }
            _ => {}
        }
        response
    }

    /// The `result` label a webhook call failing this way is counted under.
    pub(super) fn webhook_result(&self) -> WebhookResult {
        match self {
            HttpError::Unauthorized => WebhookResult::Unauthorized,
            HttpError::PayloadTooLarge(_) => WebhookResult::TooLarge,
            HttpError::Unavailable(_) => WebhookResult::Unavailable,
            HttpError::OverLimit(_) => WebhookResult::OverLimit,
            HttpError::NotFound
            | HttpError::Conflict(_)
            | HttpError::Off(_)
            | HttpError::MethodNotAllowed(_)
            | HttpError::BadRequest(_)
            | HttpError::BodyTimeout => WebhookResult::Invalid,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::NotFound => f.write_str("not found"),
            HttpError::MethodNotAllowed(allow) => write!(f, "method not allowed; allowed: {allow}"),
            HttpError::Unauthorized => f.write_str("missing or invalid webhook token"),
            HttpError::PayloadTooLarge(limit) => write!(f, "body exceeds {limit} bytes"),
            HttpError::BodyTimeout => f.write_str("the body did not arrive in time"),
            HttpError::OverLimit(max) => write!(
                f,
                "certificate limit reached: {max} certificates are tracked \
                 (--storage.max-certificates); delete decommissioned ones with \
                 DELETE /api/v1/certificates/<stack>/<name>"
            ),
            HttpError::BadRequest(reason) | HttpError::Unavailable(reason) => f.write_str(reason),
            HttpError::Conflict(reason) | HttpError::Off(reason) => f.write_str(reason),
        }
    }
}

pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    response(status, "application/json", body.to_string().into_bytes())
}

pub(super) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer to any request while the exporter is still opening its storage:
/// `/healthz` is alive, everything else is not ready yet (503, as JSON like every error).
pub(crate) fn starting(path: &str) -> HttpResponse {
    if path == "/healthz" {
        return response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok\n".to_vec(),
        );
    }
    HttpError::Unavailable(
        "starting: storage is not open yet (waiting for the database)".to_owned(),
    )
    .into_response()
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    app: App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    // Redacting allocates; do it only when the request log is on.
    let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let uri = request.uri();
        (request.method().clone(), redact(uri.path(), uri.query()))
    });
    let response = route(&app, peer, request)
        .await
        .unwrap_or_else(HttpError::into_response);
    if let Some((method, path)) = logged {
        let status = response.status().as_u16();
        tracing::debug!(%peer, %method, %path, status, "request");
    }
    Ok(response)
}

/// Routing: one match on method and path.
async fn route(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, HttpError> {
    let path = request.uri().path().to_owned();
    let get = matches!(*request.method(), Method::GET | Method::HEAD);
    let post = *request.method() == Method::POST;
    match path.as_str() {
        "/webhook" if post => Ok(webhook::webhook(app, peer, request, None).await),
        p if post && p.starts_with("/webhook/") => {
            let token = p["/webhook/".len()..].to_owned();
            Ok(webhook::webhook(app, peer, request, Some(&token)).await)
        }
        // Without authentication there is no token to offer: the pasted URL is `/webhook`.
        "/webhook" if get && (webhook::offers_token(&request) || !app.auth().is_enabled()) => {
            webhook::ready_page(app, peer, &request, None)
        }
        p if get && p.starts_with("/webhook/") => {
            webhook::ready_page(app, peer, &request, Some(&p["/webhook/".len()..]))
        }
        // A `GET` offering no token is not a URL check; that form only takes POSTs.
        "/webhook" => Err(HttpError::MethodNotAllowed("POST")),
        p if p.starts_with("/webhook/") => Err(HttpError::MethodNotAllowed("GET, HEAD, POST")),
        api::SYNC_API if post => api::sync_now(app, peer, &request).await,
        api::SYNC_API if get => api::sync_status(app),
        api::SYNC_API => Err(HttpError::MethodNotAllowed("GET, HEAD, POST")),
        certificates::LIST if get => certificates::list(app, request.uri().query()),
        certificates::LIST => Err(HttpError::MethodNotAllowed("GET, HEAD")),
        p if p.starts_with(api::CERTIFICATES_API) => {
            let rest = &p[api::CERTIFICATES_API.len()..];
            if get {
                certificates::detail(app, rest, request.uri().query()).await
            } else if *request.method() == Method::DELETE {
                api::forget(app, peer, &request, rest).await
            } else {
                Err(HttpError::MethodNotAllowed("GET, HEAD, DELETE"))
            }
        }
        certificates::STATUS if get => certificates::status(app).await,
        certificates::STATUS => Err(HttpError::MethodNotAllowed("GET, HEAD")),
        p if p == app.config().telemetry_path && get => {
            scrape::metrics(app, scrape::accepts_gzip(request.headers())).await
        }
        "/healthz" if get => Ok(response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok\n".to_vec(),
        )),
        "/readyz" if get => api::readyz(app).await,
        "/" if get => Ok(pages::status(app, request.uri().query())
            .await
            .unwrap_or_else(|e| pages::error_page(app, e))),
        p if get && p.starts_with(pages::DETAIL) => {
            let rest = &p[pages::DETAIL.len()..];
            Ok(
                pages::detail(app, rest, request.uri().query(), request.headers())
                    .await
                    .unwrap_or_else(|e| pages::error_page(app, e)),
            )
        }
        p if p.starts_with(pages::DETAIL) => Err(HttpError::MethodNotAllowed("GET, HEAD")),
        crate::ui::STYLESHEET_PATH if get => Ok(pages::stylesheet()),
        p if p == app.config().telemetry_path
            || matches!(p, "/healthz" | "/readyz" | "/" | crate::ui::STYLESHEET_PATH) =>
        {
            Err(HttpError::MethodNotAllowed("GET, HEAD"))
        }
        _ => Err(HttpError::NotFound),
    }
}

pub(super) use crate::now;

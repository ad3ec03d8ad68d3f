//! HTTP routing and handlers.
//!
//! Endpoints:
//! - `POST /webhook`, `POST /webhook/<token>`: Cloud66 deliveries (JSON answers).
//! - `GET /metrics` (or `--web.telemetry-path`): Prometheus text exposition.
//! - `GET /healthz`: the process is alive.
//! - `GET /readyz`: the database is open and accepts a committed write.
//! - `GET /`: a small page saying what this is and how to configure Cloud66.
//! - `DELETE /api/v1/certificates/<stack>/<name>`: forget a decommissioned certificate
//!   and its series (token required; `<name>` percent-encoded).
//!
//! Every failure is an [`HttpError`], turned into a status and a JSON body in one place
//! ([`HttpError::into_response`]).

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::app::App;
use crate::auth::redact;
use crate::event::{Delivery, EventKind};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, OTHER_EVENT_TYPE, WebhookResult};
use crate::store::{Forgotten, Recorded};
use crate::webhook;

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
    fn webhook_result(&self) -> WebhookResult {
        match self {
            HttpError::Unauthorized => WebhookResult::Unauthorized,
            HttpError::PayloadTooLarge(_) => WebhookResult::TooLarge,
            HttpError::Unavailable(_) => WebhookResult::Unavailable,
            HttpError::OverLimit(_) => WebhookResult::OverLimit,
            HttpError::NotFound
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
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    response(status, "application/json", body.to_string().into_bytes())
}

fn response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    app: App,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let method = request.method().clone();
    let logged_path = redact(request.uri().path(), request.uri().query());
    let response = route(&app, peer, request)
        .await
        .unwrap_or_else(HttpError::into_response);
    tracing::debug!(%peer, %method, path = %logged_path, status = response.status().as_u16(), "request");
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
        "/webhook" if post => Ok(webhook(app, peer, request, None).await),
        p if post && p.starts_with("/webhook/") => {
            let token = p["/webhook/".len()..].to_owned();
            Ok(webhook(app, peer, request, Some(&token)).await)
        }
        p if p == "/webhook" || p.starts_with("/webhook/") => {
            Err(HttpError::MethodNotAllowed("POST"))
        }
        p if p.starts_with(CERTIFICATES_API) => {
            if *request.method() != Method::DELETE {
                return Err(HttpError::MethodNotAllowed("DELETE"));
            }
            let rest = p[CERTIFICATES_API.len()..].to_owned();
            forget(app, peer, &request, &rest).await
        }
        p if p == app.config().telemetry_path && get => {
            metrics(app, accepts_gzip(request.headers())).await
        }
        "/healthz" if get => Ok(response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok\n".to_vec(),
        )),
        "/readyz" if get => readyz(app).await,
        "/" if get => Ok(response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            app.index_page().as_bytes().to_vec(),
        )),
        p if p == app.config().telemetry_path || matches!(p, "/healthz" | "/readyz" | "/") => {
            Err(HttpError::MethodNotAllowed("GET, HEAD"))
        }
        _ => Err(HttpError::NotFound),
    }
}

/// Prefix of the certificate API; the rest of the path is `<stack>/<name>`.
const CERTIFICATES_API: &str = "/api/v1/certificates/";

/// `DELETE /api/v1/certificates/<stack>/<name>`: forgets a certificate and its series.
async fn forget(
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

/// `GET /metrics`: rendered (and gzipped when the scraper accepts it, as Prometheus
/// does) on a blocking thread, so a large scrape never stalls webhooks on the async
/// workers; the state's lock is held only to copy pointers.
async fn metrics(app: &App, gzip: bool) -> Result<HttpResponse, HttpError> {
    let certs = app.state().snapshot();
    let app = app.clone();
    let body = tokio::task::spawn_blocking(move || {
        let text = app.metrics().render(&certs, now());
        if gzip { gzipped(&text) } else { Ok(text) }
    })
    .await
    .map_err(|e| HttpError::Unavailable(format!("rendering metrics failed: {e}")))?
    .map_err(|e| HttpError::Unavailable(format!("compressing metrics failed: {e}")))?;
    let mut response = response(StatusCode::OK, METRICS_CONTENT_TYPE, body);
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// `text` compressed with gzip at a fast level: exposition text compresses about
/// tenfold even so, and the scrape stays quick.
fn gzipped(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::fast());
    encoder.write_all(text)?;
    encoder.finish()
}

/// Whether `Accept-Encoding` accepts gzip (listed, and not with `q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn readyz(app: &App) -> Result<HttpResponse, HttpError> {
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

/// Handles a webhook call and counts it under its event type and result.
async fn webhook(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
    path_token: Option<&str>,
) -> HttpResponse {
    let mut event_type = OTHER_EVENT_TYPE;
    let outcome = receive(app, request, path_token, &mut event_type).await;
    let result = match &outcome {
        Ok(result) => *result,
        Err(error) => error.webhook_result(),
    };
    app.metrics().count_webhook(event_type, result);
    if matches!(
        result,
        WebhookResult::Accepted | WebhookResult::Duplicate | WebhookResult::Ignored
    ) {
        app.metrics().set_last_webhook(now());
    }
    match outcome {
        Ok(result) => json_response(StatusCode::OK, &json!({ "status": result.as_str() })),
        Err(error) => {
            match &error {
                HttpError::Unavailable(_) => {
                    tracing::error!(%peer, %error, event_type, "webhook not stored")
                }
                _ => tracing::warn!(%peer, %error, event_type, "webhook rejected"),
            }
            error.into_response()
        }
    }
}

/// Authenticates, reads, validates and stores one delivery. Sets `event_type` to the
/// label value as soon as it is known.
async fn receive(
    app: &App,
    request: Request<Incoming>,
    path_token: Option<&str>,
    event_type: &mut &'static str,
) -> Result<WebhookResult, HttpError> {
    if !app
        .auth()
        .allows(path_token, request.uri().query(), request.headers())
    {
        return Err(HttpError::Unauthorized);
    }
    let received_at = now();
    let limits = app.config();
    let body = tokio::time::timeout(
        limits.timeouts.body_read,
        read_body(request, limits.max_body_bytes),
    )
    .await
    .map_err(|_| HttpError::BodyTimeout)??;
    let delivery = webhook::parse(&body).map_err(|error| {
        *event_type = known_event_type(&body);
        HttpError::BadRequest(error.to_string())
    })?;
    match delivery {
        Delivery::Other { event_type } => {
            tracing::debug!(event_type, "webhook ignored: not an SSL event");
            Ok(WebhookResult::Ignored)
        }
        Delivery::Ssl { event, digest } => {
            *event_type = event.kind.event_type();
            let (stack, name) = (event.stack.clone(), event.name.clone());
            let recorded = app
                .store()
                .record(event, digest, body, received_at)
                .await
                .map_err(|e| HttpError::Unavailable(format!("event not stored: {e}")))?;
            let result = match recorded {
                Recorded::Accepted => WebhookResult::Accepted,
                Recorded::Duplicate => WebhookResult::Duplicate,
                Recorded::OverLimit => {
                    return Err(HttpError::OverLimit(app.config().max_certificates));
                }
            };
            tracing::info!(
                event_type,
                stack,
                name,
                result = result.as_str(),
                "webhook received"
            );
            Ok(result)
        }
    }
}

/// Reads the whole body, refusing (413) anything over `limit` bytes, announced or not.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, HttpError> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(HttpError::PayloadTooLarge(limit));
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(HttpError::PayloadTooLarge(limit))
        }
        Err(error) => Err(HttpError::BadRequest(format!("cannot read body: {error}"))),
    }
}

/// The SSL event type named by an invalid body, for counting; `other` if none.
fn known_event_type(body: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct EventTypeOnly {
        event_type: Option<String>,
    }
    serde_json::from_slice::<EventTypeOnly>(body)
        .ok()
        .and_then(|b| b.event_type)
        .and_then(|t| EventKind::from_event_type(&t))
        .map_or(OTHER_EVENT_TYPE, EventKind::event_type)
}

/// The current Unix time in seconds.
fn now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept_encoding: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).expect("value"),
        );
        headers
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity, br")));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }
}

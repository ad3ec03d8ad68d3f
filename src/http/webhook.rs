//! `POST /webhook`: authenticate, read, validate, store, answer, count. And `GET` of
//! the webhook URL: a page telling a person with the right token that it is ready.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::{HttpError, HttpResponse, now, response};
use crate::app::App;
use crate::event::{Delivery, EventKind};
use crate::metrics::{OTHER_EVENT_TYPE, WebhookResult};
use crate::store::Recorded;

/// Longest event type, in characters, that is logged or shown on the pages: Cloud66's
/// are about 30, and a sender must not be able to fill the log or the pages.
const SHOWN_EVENT_TYPE_CHARS: usize = 100;

/// A delivery that was taken (authenticated and well-formed).
struct Taken {
    /// How it ended.
    result: WebhookResult,
    /// The event type it named, cut to [`SHOWN_EVENT_TYPE_CHARS`]; `None` if none.
    event_type: Option<String>,
}

/// Handles a webhook call and counts it under its event type and result.
pub(super) async fn webhook(
    app: &App,
    peer: SocketAddr,
    request: Request<Incoming>,
    path_token: Option<&str>,
) -> HttpResponse {
    let mut event_type = OTHER_EVENT_TYPE;
    let outcome = receive(app, peer, request, path_token, &mut event_type).await;
    let result = match &outcome {
        Ok(taken) => taken.result,
        Err(error) => error.webhook_result(),
    };
    app.metrics().count_webhook(event_type, result);
    // What the pages show as the last delivery: everything that got through
    // authentication and validation, the test button's delivery included.
    let named = match &outcome {
        Ok(taken) => Some(taken.event_type.as_deref()),
        Err(HttpError::OverLimit(_)) => Some(Some(event_type)),
        Err(_) => None,
    };
    if let Some(named) = named {
        app.metrics().record_delivery(now(), named, result);
    }
    match outcome {
        Ok(Taken { result, .. }) => {
            let body = match result {
                WebhookResult::Duplicate => r#"{"status":"duplicate"}"#,
                WebhookResult::Ignored => r#"{"status":"ignored"}"#,
                _ => r#"{"status":"accepted"}"#,
            };
            response(StatusCode::OK, "application/json", body.as_bytes().to_vec())
        }
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
    peer: SocketAddr,
    request: Request<Incoming>,
    path_token: Option<&str>,
    event_type: &mut &'static str,
) -> Result<Taken, HttpError> {
    if !app
        .auth()
        .allows(path_token, request.uri().query(), request.headers())
    {
        return Err(HttpError::Unauthorized);
    }
    let received_at = now();
    let limits = app.config();
    let body = read_body_in_time(request, limits.max_body_bytes, limits.timeouts.body_read).await?;
    let delivery = crate::webhook::parse(&body).map_err(|error| {
        *event_type = known_event_type(&body);
        HttpError::BadRequest(error.to_string())
    })?;
    match delivery {
        Delivery::Other { event_type } => {
            let event_type = shown(&event_type);
            // At info, unlike the debug request log: this is how an operator sees
            // Cloud66's test button reach the exporter.
            tracing::info!(
                %peer,
                event_type = event_type.as_deref().unwrap_or("none"),
                "webhook ignored: not an SSL event"
            );
            Ok(Taken {
                result: WebhookResult::Ignored,
                event_type,
            })
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
                    // Refused events are not stored: the log is the only place naming them.
                    tracing::warn!(
                        stack,
                        name,
                        "new certificate refused: certificate limit reached"
                    );
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
            Ok(Taken {
                result,
                event_type: Some(event_type.to_owned()),
            })
        }
    }
}

/// An event type as logged and shown: `None` for the `""` that stands for none, and
/// cut to [`SHOWN_EVENT_TYPE_CHARS`] otherwise.
fn shown(event_type: &str) -> Option<String> {
    if event_type.is_empty() {
        return None;
    }
    Some(
        match event_type.char_indices().nth(SHOWN_EVENT_TYPE_CHARS) {
            Some((cut, _)) => format!("{}…", &event_type[..cut]),
            None => event_type.to_owned(),
        },
    )
}

/// Whether a request to `/webhook` offers a token (right or wrong) in its query or an
/// `Authorization` header: only then is a `GET` of it a check of the URL.
pub(super) fn offers_token<B>(request: &Request<B>) -> bool {
    let in_query = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("token=")));
    in_query || request.headers().contains_key(AUTHORIZATION)
}

/// `GET` or `HEAD` of the webhook URL, as a person checking it in a browser: 200 with a
/// page saying it is ready and what arrived last, or 401 without the right token. Not
/// a delivery, so neither counted nor recorded.
pub(super) fn ready_page<B>(
    app: &App,
    peer: SocketAddr,
    request: &Request<B>,
    path_token: Option<&str>,
) -> Result<HttpResponse, HttpError> {
    if !app
        .auth()
        .allows(path_token, request.uri().query(), request.headers())
    {
        tracing::warn!(%peer, "webhook URL opened without a valid token");
        return Err(HttpError::Unauthorized);
    }
    // The URL holds the token: the page goes out uncached and sends no `Referer`.
    Ok(super::pages::webhook_ready(app))
}

/// Reads the whole body within `timeout`. A body that came with the request head (as a
/// webhook's few hundred bytes do) is complete at the first poll, and then no timer is
/// set: arming and clearing one cost about 1 µs of the ~30 µs a webhook takes (perf).
async fn read_body_in_time(
    request: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let mut read = std::pin::pin!(read_body(request, limit));
    if let Poll::Ready(body) = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        return body;
    }
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HttpError::BodyTimeout)?
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

//! The pages for people: `GET /` (status), `GET /certificates/<stack>/<name>`
//! (detail), the stylesheet, and the page at the webhook URL. Handlers gather what a
//! page shows from the app and the read model, and `crate::ui` renders it. Every page
//! goes out with the same security headers ([`html`]); refusals of a page become pages
//! too ([`error_page`]), with the status [`HttpError`] gives them.

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, HOST, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::certificates::{Lookup, MAX_HISTORY, lookup, number, parameters, stack_names, state};
use super::{HttpError, HttpResponse, now, response};
use crate::app::App;
use crate::metrics::LastDelivery;
use crate::ui::{self, Links};
use crate::view::{Filter, Overview};

/// Path prefix of the detail pages.
pub(super) const DETAIL: &str = "/certificates/";

/// The parameters of the status page.
const STATUS_PARAMETERS: &[&str] = &["q", "stack", "state", "limit", "offset"];

/// `body` as an HTML page with `status` and the pages' security headers.
pub(super) fn html(status: StatusCode, body: String) -> HttpResponse {
    let mut response = response(status, "text/html; charset=utf-8", body.into_bytes());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ui::CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn links(app: &App) -> Links<'_> {
    Links {
        metrics: &app.config().telemetry_path,
    }
}

/// A refusal of a page, as a page.
pub(super) fn error_page(app: &App, error: HttpError) -> HttpResponse {
    let status = error.status();
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    let mut page = html(status, ui::error(&title, &error.to_string(), &links(app)));
    // Keep what the JSON answer would carry (`Allow`, `WWW-Authenticate`).
    let json = error.into_response();
    for (name, value) in json.headers() {
        if name != http::header::CONTENT_TYPE {
            page.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    page
}

/// `GET /`: the summary and the certificates, filtered by `q`, `stack` and `state`,
/// [`ui::status::DEFAULT_ROWS`] at a time unless `limit` says otherwise (`all`: every
/// one). An empty parameter (as an empty form field sends) is no filter.
pub(super) async fn status(app: &App, query: Option<&str>) -> Result<HttpResponse, HttpError> {
    let mut params = parameters(query, STATUS_PARAMETERS)?;
    params.retain(|_, value| !value.is_empty());
    let limit = match params.get("limit").map(String::as_str) {
        Some("all") => None,
        Some(_) => Some(number(&params, "limit")?.unwrap_or_default()),
        None => Some(ui::status::DEFAULT_ROWS),
    };
    let filter = Filter {
        stack: params.remove("stack"),
        state: state(params.remove("state"))?,
        q: params.remove("q"),
        limit,
        offset: number(&params, "offset")?.unwrap_or(0),
    };
    let storage = app
        .store()
        .probe(app.config().max_body_bytes)
        .await
        .map_err(|e| e.to_string());
    let now = now();
    let certs = app.state().snapshot();
    let names = stack_names(app);
    let overview = Overview::of(&certs, &filter, now, &names);
    let last: Option<LastDelivery> = app.metrics().last_delivery();
    let sync = app.syncer().map(|syncer| syncer.status());
    let page = ui::status::StatusPage {
        links: links(app),
        now,
        filter: &filter,
        overview: &overview,
        last_delivery: last.as_ref(),
        storage,
        started_at: app.started_at(),
        sync: sync.as_ref(),
        auth_enabled: app.auth().is_enabled(),
    };
    Ok(html(StatusCode::OK, ui::status::render(&page)))
}

/// `GET /certificates/<stack>/<name>`: one certificate, its counters, its newest
/// `?history=N` events, and how to forget it; a 404 page when it is not tracked.
pub(super) async fn detail(
    app: &App,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<HttpResponse, HttpError> {
    let now = now();
    match lookup(app, rest, query, now).await? {
        Lookup::Unknown { stack, name } => Ok(html(
            StatusCode::NOT_FOUND,
            ui::detail::not_found(&stack, &name, &links(app)),
        )),
        Lookup::Found {
            detail,
            history,
            limit,
        } => {
            let view = &detail.view;
            let forget_url = format!(
                "{}{}{}/{}",
                origin(app, headers),
                super::api::CERTIFICATES_API,
                ui::encode(&view.stack),
                ui::encode(&view.name),
            );
            let page = ui::detail::DetailPage {
                links: links(app),
                now,
                detail: &detail,
                history: &history,
                history_limit: limit,
                history_max: MAX_HISTORY,
                forget_url: &forget_url,
                auth_enabled: app.auth().is_enabled(),
            };
            Ok(html(StatusCode::OK, ui::detail::render(&page)))
        }
    }
}

/// `scheme://host[:port]` as the browser reached this exporter, for commands to copy;
/// a placeholder when the `Host` header is missing or holds more than a host and port.
fn origin(app: &App, headers: &HeaderMap) -> String {
    let scheme = if app.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("<exporter-host>");
    format!("{scheme}://{host}")
}

/// `GET /static/style.css`: the pages' stylesheet.
pub(super) fn stylesheet() -> HttpResponse {
    let mut response = response(
        StatusCode::OK,
        "text/css; charset=utf-8",
        ui::STYLESHEET.as_bytes().to_vec(),
    );
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // It changes only with the binary.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

/// The page at the webhook URL, with the last delivery.
pub(super) fn webhook_ready(app: &App) -> HttpResponse {
    let last = app.metrics().last_delivery();
    html(
        StatusCode::OK,
        ui::ready::render(last.as_ref(), now(), &links(app)),
    )
}

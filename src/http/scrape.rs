//! `GET /metrics`: the scrape.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
use http::{HeaderValue, StatusCode};

use super::{HttpError, HttpResponse, now, response};
use crate::app::App;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// `GET /metrics`: rendered (and gzipped when the scraper accepts it, as Prometheus
/// does) on a blocking thread, so a large scrape never stalls webhooks on the async
/// workers; the state's lock is held only to copy pointers.
pub(super) async fn metrics(app: &App, gzip: bool) -> Result<HttpResponse, HttpError> {
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
pub(super) fn accepts_gzip(headers: &http::HeaderMap) -> bool {
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

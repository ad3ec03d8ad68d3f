//! The pages for people, rendered on the server with [maud]: templates are Rust code,
//! checked when the crate compiles, and every value spliced into them is HTML-escaped
//! unless wrapped in `PreEscaped` (which this module never does with data). Pure: each
//! page is a function of what it shows, so tests render it without a server.
//!
//! - [`status::render`]: `GET /`, the summary and the certificate table.
//! - [`detail::render`]: `GET /certificates/<stack>/<name>`, one certificate and its
//!   event history; [`detail::not_found`] when there is no such certificate.
//! - [`ready::render`]: `GET` of the webhook URL, for someone checking it in a browser.
//! - [`error`]: any other refusal of a page, as a page.
//!
//! No script, no inline style, no external asset: one stylesheet, [`STYLESHEET`],
//! served by the binary at [`STYLESHEET_PATH`], so the pages work with JavaScript off
//! and under a Content-Security-Policy of `default-src 'self'` ([`CONTENT_SECURITY_POLICY`]).
//! Names, domains and messages come from the network: they only ever reach a page as
//! escaped text or attribute values, and links carry them percent-encoded.

pub mod detail;
pub mod ready;
pub mod status;

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Where the stylesheet is served.
pub const STYLESHEET_PATH: &str = "/static/style.css";

/// The one stylesheet of every page.
pub const STYLESHEET: &str = include_str!("style.css");

/// The policy every page is sent with: only this origin's stylesheet; no script, no
/// plugin, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Where the alert runbooks are published (the alert rules' `runbook_url`s point there).
pub const RUNBOOKS_URL: &str =
    "https://github.com/cloud66-ssl-exporter/cloud66-ssl-exporter/blob/main/docs/runbooks.md";

/// What every page links to.
pub struct Links<'a> {
    /// The metrics path (`--web.telemetry-path`).
    pub metrics: &'a str,
}

/// A whole page: `title`, the common head and navigation, then `body`.
fn page(title: &str, links: &Links<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta name="robots" content="noindex";
                title { (title) }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                header.top {
                    a.home href="/" { "Cloud66 SSL exporter" }
                    nav #links aria-label="Endpoints" {
                        a href=(links.metrics) { "Metrics" }
                        a href="/healthz" { "Health" }
                        a href="/readyz" { "Readiness" }
                        a href="/api/v1/certificates" { "JSON: certificates" }
                        a href="/api/v1/status" { "JSON: status" }
                        a href=(RUNBOOKS_URL) { "Runbooks" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A refusal as a page: `status` (e.g. "400 Bad Request") and why.
pub fn error(status: &str, message: &str, links: &Links<'_>) -> String {
    page(
        &format!("{status}: Cloud66 SSL exporter"),
        links,
        html! {
            h1 { (status) }
            p #error { (message) }
            p { a href="/" { "All certificates" } }
        },
    )
    .into_string()
}

/// Characters percent-encoded in one path segment or query value: all but the
/// unreserved ones of RFC 3986.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a path segment or a query value.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// The path of a certificate's detail page.
pub fn detail_path(stack: &str, name: &str) -> String {
    format!("/certificates/{}/{}", encode(stack), encode(name))
}

/// Unix seconds as RFC 3339 in UTC, to the second; the number when out of range.
fn utc(at: f64) -> String {
    crate::view::rfc3339(at).unwrap_or_else(|| format!("{at} (Unix time)"))
}

/// A `<time>` element for Unix time `at`.
fn time(at: f64) -> Markup {
    let text = utc(at);
    html! { time datetime=(text) { (text) } }
}

/// A span of `seconds` in its largest whole unit: "1 minute", "3 hours", "2 days".
fn span(seconds: f64) -> String {
    let whole = seconds.max(0.0).floor() as u64;
    let (count, unit) = match whole {
        0..60 => (whole, "second"),
        60..3_600 => (whole / 60, "minute"),
        3_600..172_800 => (whole / 3_600, "hour"),
        _ => (whole / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// How long ago something `seconds` old happened.
fn ago(seconds: f64) -> String {
    if seconds < -1.0 {
        // The clock went back since (or storage came from a machine ahead of this one).
        return "in the future by this server's clock".to_owned();
    }
    if seconds < 1.0 {
        return "just now".to_owned();
    }
    format!("{} ago", span(seconds))
}

/// When something `seconds` from now happens.
fn from_now(seconds: f64) -> String {
    if seconds < 1.0 {
        return "now".to_owned();
    }
    format!("in {}", span(seconds))
}

/// The time of `at` and how long before `now` it was.
fn when(at: f64, now: f64) -> Markup {
    html! { (time(at)) " " span.age { "(" (ago(now - at)) ")" } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_reserved_character() {
        assert_eq!(
            encode("a b/c?d#e&f=g'h\"i<j>"),
            "a%20b%2Fc%3Fd%23e%26f%3Dg%27h%22i%3Cj%3E"
        );
        assert_eq!(encode("ok-1.2_3~"), "ok-1.2_3~");
        assert_eq!(encode("ü"), "%C3%BC");
        assert_eq!(detail_path("7", "x/y"), "/certificates/7/x%2Fy");
    }

    #[test]
    fn spans_use_the_largest_whole_unit() {
        let cases = [
            (-30.0, "in the future by this server's clock"),
            (0.4, "just now"),
            (1.0, "1 second ago"),
            (59.9, "59 seconds ago"),
            (60.0, "1 minute ago"),
            (3_599.0, "59 minutes ago"),
            (3_600.0, "1 hour ago"),
            (172_799.0, "47 hours ago"),
            (172_800.0, "2 days ago"),
        ];
        for (seconds, text) in cases {
            assert_eq!(ago(seconds), text, "{seconds}");
        }
        assert_eq!(from_now(0.0), "now");
        assert_eq!(from_now(7_200.0), "in 2 hours");
        assert_eq!(utc(1_719_792_000.9), "2024-07-01T00:00:00Z");
        assert!(utc(1e300).ends_with(" (Unix time)"));
    }

    #[test]
    fn error_pages_escape_the_message() {
        let links = Links {
            metrics: "/metrics",
        };
        let page = error("400 Bad Request", "<b>\"x\"</b>", &links);
        assert!(
            page.contains("<p id=\"error\">&lt;b&gt;&quot;x&quot;&lt;/b&gt;</p>"),
            "{page}"
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
    }
}

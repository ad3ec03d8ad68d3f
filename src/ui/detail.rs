//! The detail page, `GET /certificates/<stack>/<name>`: every known field, the
//! counters, the stored event history, and how to forget the certificate.

use maud::{Markup, html};

use super::status::{badge, head, issuer, label, short_type, time_left};
use super::{Links, encode, page, time, when};
use crate::store::{History, HistoryEvent};
use crate::view::CertificateDetail;

/// Everything the detail page shows.
pub struct DetailPage<'a> {
    /// The common links.
    pub links: Links<'a>,
    /// The time of the request (Unix seconds).
    pub now: f64,
    /// The certificate.
    pub detail: &'a CertificateDetail,
    /// Its newest events.
    pub history: &'a History,
    /// The most events asked for.
    pub history_limit: usize,
    /// The most events one page may ask for.
    pub history_max: usize,
    /// The URL to send `DELETE` to, as this request reached the exporter.
    pub forget_url: &'a str,
    /// Whether the `DELETE` needs the token.
    pub auth_enabled: bool,
}

/// The whole page.
pub fn render(p: &DetailPage<'_>) -> String {
    let cert = &p.detail.view;
    page(
        &format!("{}: Cloud66 SSL exporter", cert.name),
        &p.links,
        html! {
            p.crumbs { a href="/" { "All certificates" } " › stack " (cert.stack) }
            h1 { (badge(cert.state)) " " span.cert-name { (cert.name) } }
            (fields(p))
            section #counts {
                h2 { "Counters" }
                table #counters {
                    tbody {
                        tr { th scope="row" { code { "install.fail" } " events" } td { (cert.counters.install_failures) } }
                        tr { th scope="row" { code { "install.ok" } " events" } td { (cert.counters.install_successes) } }
                        tr { th scope="row" { code { "expire.soon" } " notifications" } td { (cert.counters.expire_soon_notifications) } }
                    }
                }
            }
            (history(p))
            (forget(p))
        },
    )
    .into_string()
}

/// A `<time>` for an RFC 3339 string, or "unknown".
fn at(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(text) => time datetime=(text) { (text) },
            None => span.none { "unknown" },
        }
    }
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn fields(p: &DetailPage<'_>) -> Markup {
    let d = p.detail;
    let cert = &d.view;
    let field = |key: &str, title: &str, value: Markup| {
        html! { div id={ "field-" (key) } { dt { (title) } dd { (value) } } }
    };
    html! {
        dl #fields {
            (field("stack", "Stack", html! {
                a href={ "/?stack=" (encode(&cert.stack)) } { (cert.stack) }
                @if let Some(name) = &cert.stack_name { " " span.stack-name { "(" (name) ")" } }
            }))
            (field("name", "Name", html! { (cert.name) }))
            (field("state", "State", html! {
                (label(cert.state))
                @if cert.expiry_state != cert.state { "; expiry: " (label(cert.expiry_state)) }
            }))
            (field("expiry", "Expiry (UTC)", html! { (at(cert.expiry.as_deref())) }))
            (field("days-left", "Time left", time_left(cert, p.now)))
            (field("domains", "Domains", html! {
                @if cert.domains.is_empty() { span.none { "unknown" } }
                @else { ul { @for domain in &cert.domains { li { (domain) } } } }
            }))
            (field("lets-encrypt", "Issuer", html! {
                @match issuer(cert.lets_encrypt) { "" => span.none { "unknown" }, text => (text) }
            }))
            (field("intermediate", "Intermediate certificate included", html! { (yes_no(cert.has_intermediate_cert)) }))
            (field("termination", "SSL termination", html! {
                @match &cert.ssl_termination { Some(value) => code { (value) }, None => span.none { "unknown" } }
            }))
            (field("status", "Cloud66 status", html! {
                @match &cert.status { Some(value) => code { (value) }, None => span.none { "unknown" } }
            }))
            (field("install", "Install", html! {
                @if cert.install_failing { span.bad { "failing" } } @else { "not failing" }
            }))
            (field("error", "Install error", html! {
                @match (&cert.error_message, cert.install_failing) {
                    (Some(message), true) => span.bad { (message) },
                    _ => span.none { "none" },
                }
            }))
            (field("last-event", "Last webhook event", html! {
                @match cert.last_event_unix {
                    Some(ts) => {
                        @if let Some(kind) = &cert.last_event_type { code { (kind) } " " }
                        (when(ts, p.now))
                    }
                    None => span.none { "none: known from the Cloud66 API only" },
                }
            }))
            (field("observed", "Last seen by the Cloud66 API", html! { (at(cert.observed_at.as_deref())) }))
            (field("expiry-set", "Expiry set by the event of", html! { (at(d.expiry_set_at.as_deref())) }))
            (field("install-set", "Install outcome set by the event of", html! { (at(d.install_set_at.as_deref())) }))
            (field("info-set", "Domains and status set by the event of", html! { (at(d.info_set_at.as_deref())) }))
        }
    }
}

fn history(p: &DetailPage<'_>) -> Markup {
    let history = p.history;
    let shown = history.events.len();
    html! {
        section #events {
            h2 { "Event history" }
            p #history-total {
                @if history.total == 0 {
                    "No stored event."
                } @else {
                    "Newest " (shown) " of " (history.total) " stored events, newest first. "
                    @if shown < history.total && p.history_limit < p.history_max {
                        a href={ "?history=" (p.history_max.min(history.total)) } {
                            "Show " (p.history_max.min(history.total))
                        }
                    }
                }
            }
            @if shown > 0 {
                table #history {
                    (head(&[
                        "Event time", "Received", "Type", "Source", "Expiry", "Install", "Status",
                        "Error", "Domains", "Notes",
                    ]))
                    tbody { @for event in &history.events { (event_row(event, p.now)) } }
                }
                p.legend {
                    "Event time is the payload's " code { "timestamp" } " (for the Cloud66 API, when it "
                    "was read). " em { "Changed state" } ": it changed what is shown above. "
                    em { "Out of order" } ": it arrived after a newer event, which kept what both spoke "
                    "about. Re-deliveries of the same body are not stored, so no duplicate appears here."
                }
            }
        }
    }
}

fn event_row(event: &HistoryEvent, now: f64) -> Markup {
    html! {
        tr.event data-event-id=(event.id) data-event-type=(event.event_type)
            data-changed=(event.changed_state) data-out-of-order=(event.out_of_order) {
            td { (when(event.event_unix, now)) }
            td { (time(event.received_unix)) }
            td { code { (short_type(&event.event_type)) } }
            td { (event.source) }
            td { @if let Some(expiry) = &event.expiry { time datetime=(expiry) { (expiry) } } }
            td {
                @match event.install_failing {
                    Some(true) => span.bad { "failed" },
                    Some(false) => "ok",
                    None => "",
                }
            }
            td { @if let Some(status) = &event.status { code { (status) } } }
            td { @if let Some(message) = &event.error_message { (message) } }
            td {
                @if let Some(domains) = &event.domains {
                    ul { @for domain in domains { li { (domain) } } }
                }
            }
            td.notes {
                @if event.changed_state { span.flag.changed { "changed state" } " " }
                @if event.out_of_order { span.flag.out-of-order { "out of order" } " " }
                @if !event.readable { span.flag.unreadable { "unreadable payload" } }
            }
        }
    }
}

fn forget(p: &DetailPage<'_>) -> Markup {
    let header = if p.auth_enabled {
        "-H 'Authorization: Bearer <token>' "
    } else {
        ""
    };
    html! {
        section #forget {
            h2 { "Forget this certificate" }
            p {
                "When a certificate is decommissioned, delete it so its series and alerts go away "
                "(its stored events stay, and a new event brings it back). With the webhook token:"
            }
            pre { code #forget-command { "curl -X DELETE " (header) "'" (p.forget_url) "'" } }
            p {
                "There is no button: a page that changes state needs protection against requests "
                "forged by other sites, and this one stays read-only. The answer is "
                code { "{\"status\":\"deleted\"}" } "."
                @if p.detail.view.observed_at.is_some() {
                    " While the Cloud66 API still lists it, the next sync adds it again."
                }
            }
        }
    }
}

/// The page for a certificate that is not tracked.
pub fn not_found(stack: &str, name: &str, links: &Links<'_>) -> String {
    page(
        "Unknown certificate: Cloud66 SSL exporter",
        links,
        html! {
            h1 { "404 Not Found" }
            p #error {
                "No certificate " q { (name) } " is tracked on stack " (stack)
                ": it was never reported, or it was deleted."
            }
            p { a href={ "/?q=" (encode(name)) } { "Search for it" } " · " a href="/" { "All certificates" } }
        },
    )
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Certificate;

    const NOW: f64 = 1_700_000_000.0;
    const HOSTILE: &str = "<img src=x onerror=alert(1)>'\"";

    fn event(id: i64, out_of_order: bool) -> HistoryEvent {
        HistoryEvent {
            id,
            event_type: "ssl_certificate.install.fail".into(),
            source: "webhook",
            event_at: None,
            event_unix: NOW - 100.0 * id as f64,
            received_at: None,
            received_unix: NOW - 10.0,
            expiry: Some("2024-01-01T00:00:00Z".into()),
            install_failing: Some(true),
            status: Some("<failed>".into()),
            error_message: Some("<script>alert(5)</script>".into()),
            domains: Some(vec!["<u>a</u>.example.com".into()]),
            changed_state: !out_of_order,
            out_of_order,
            readable: true,
        }
    }

    fn render_for(auth_enabled: bool, total: usize) -> String {
        let mut cert = Certificate::new("7", HOSTILE);
        cert.install_failing = true;
        cert.error_message = Some("<script>alert(6)</script>".into());
        let detail = CertificateDetail::new(&cert, NOW, Some("Shop"));
        let history = History {
            total,
            events: vec![event(2, false), event(1, true)],
        };
        render(&DetailPage {
            links: Links {
                metrics: "/metrics",
            },
            now: NOW,
            detail: &detail,
            history: &history,
            history_limit: 2,
            history_max: 1000,
            forget_url: "http://h:1/api/v1/certificates/7/%3Cimg",
            auth_enabled,
        })
    }

    #[test]
    fn everything_from_the_network_is_text() {
        let page = render_for(true, 2);
        for markup in ["<img", "<script", "<u>", "<failed>"] {
            assert!(!page.contains(markup), "{markup} became markup");
        }
        assert!(page.contains(
            "<title>&lt;img src=x onerror=alert(1)&gt;'&quot;: Cloud66 SSL exporter</title>"
        ));
        assert!(page.contains("<span class=\"bad\">&lt;script&gt;alert(6)&lt;/script&gt;</span>"));
        assert!(page.contains("<li>&lt;u&gt;a&lt;/u&gt;.example.com</li>"));
    }

    #[test]
    fn history_rows_carry_their_flags_newest_first() {
        let page = render_for(true, 2);
        let newer = page.find("data-event-id=\"2\"").expect("row 2");
        let older = page.find("data-event-id=\"1\"").expect("row 1");
        assert!(newer < older);
        assert!(page.contains(
            "data-event-id=\"1\" data-event-type=\"ssl_certificate.install.fail\" \
             data-changed=\"false\" data-out-of-order=\"true\""
        ));
        assert!(page.contains("<span class=\"flag out-of-order\">out of order</span>"));
        assert!(page.contains("<span class=\"flag changed\">changed state</span>"));
        assert!(page.contains("Newest 2 of 2 stored events"));
        assert!(!page.contains("?history="));
        assert!(render_for(true, 70).contains("<a href=\"?history=70\">Show 70</a>"));
    }

    #[test]
    fn the_forget_command_shows_a_placeholder_token_only_when_one_is_needed() {
        let with_token = render_for(true, 2);
        assert!(with_token.contains(
            "<code id=\"forget-command\">curl -X DELETE -H 'Authorization: Bearer &lt;token&gt;' \
             'http://h:1/api/v1/certificates/7/%3Cimg'</code>"
        ));
        let open = render_for(false, 2);
        assert!(open.contains("curl -X DELETE 'http://h:1/api/v1/certificates/7/%3Cimg'"));
    }

    #[test]
    fn the_not_found_page_escapes_what_was_asked() {
        let page = not_found(
            "7",
            "<script>x</script>",
            &Links {
                metrics: "/metrics",
            },
        );
        assert!(!page.contains("<script>x"));
        assert!(page.contains("<a href=\"/?q=%3Cscript%3Ex%3C%2Fscript%3E\">Search for it</a>"));
    }
}

//! The status page, `GET /`: the summary, the state filters, and one row per
//! certificate, most urgent first.

use maud::{Markup, html};

use super::{Links, ago, detail_path, encode, from_now, page, span, time, when};
use crate::cloud66::SyncStatus;
use crate::metrics::{LastDelivery, WebhookResult};
use crate::view::{CertState, CertificateView, Filter, Overview};

/// Rows shown when the request names no `limit`: enough for any fleet to read, few
/// enough for a browser to lay out at once. `limit=all` shows every row.
pub const DEFAULT_ROWS: usize = 500;

/// Everything the status page shows.
pub struct StatusPage<'a> {
    /// The common links.
    pub links: Links<'a>,
    /// The time of the request (Unix seconds): ages and days left are as of this.
    pub now: f64,
    /// The filter of this request (its `limit` is the page size; `None` shows all).
    pub filter: &'a Filter,
    /// The summary, the counts per state and the rows, for `filter`.
    pub overview: &'a Overview,
    /// The newest delivery, if any arrived.
    pub last_delivery: Option<&'a LastDelivery>,
    /// Whether storage takes writes; the error when not.
    pub storage: Result<(), String>,
    /// When this process started (Unix seconds).
    pub started_at: f64,
    /// The Cloud66 API reconciliation's status, when configured.
    pub sync: Option<&'a SyncStatus>,
    /// Whether webhooks need a token (the configuration help depends on it).
    pub auth_enabled: bool,
}

/// The label of a state's badge and link: words, so it reads without colour.
pub fn label(state: CertState) -> &'static str {
    match state {
        CertState::Expired => "Expired",
        CertState::Failing => "Install failing",
        CertState::Critical => "Critical",
        CertState::Warning => "Warning",
        CertState::Ok => "OK",
        CertState::Unknown => "Unknown expiry",
    }
}

/// A state's badge.
pub fn badge(state: CertState) -> Markup {
    html! { span class={ "badge badge-" (state.as_str()) } { (label(state)) } }
}

/// The page's own URL with the filter's `q` and `stack`, this `state`, and `extra`
/// parameters (already encoded).
fn href(filter: &Filter, state: Option<CertState>, extra: &[(&str, String)]) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(q) = &filter.q {
        params.push(("q", encode(q)));
    }
    if let Some(stack) = &filter.stack {
        params.push(("stack", encode(stack)));
    }
    if let Some(state) = state {
        params.push(("state", state.as_str().to_owned()));
    }
    params.extend(extra.iter().cloned());
    if params.is_empty() {
        return "/".to_owned();
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("/?{}", query.join("&"))
}

/// The whole page.
pub fn render(page_data: &StatusPage<'_>) -> String {
    let p = page_data;
    page(
        "Cloud66 SSL exporter",
        &p.links,
        html! {
            h1 { "Cloud66 SSL certificates" }
            (summary(p))
            @if p.last_delivery.is_none() {
                p #no-webhook .notice {
                    "No webhook received yet. Until Cloud66 sends one, only what the Cloud66 API "
                    "shows (when configured) is known: configure the webhook as described "
                    a href="#configure" { "below" } "."
                }
            }
            section #list {
                h2 { "Certificates" }
                (states(p))
                (filter_form(p.filter))
                (table(p))
            }
            (configure(p.auth_enabled))
        },
    )
    .into_string()
}

fn summary(p: &StatusPage<'_>) -> Markup {
    let s = &p.overview.summary;
    let count = |state: CertState| {
        html! { a href=(href(&Filter::default(), Some(state), &[])) { (s.states.get(state)) } }
    };
    html! {
        section #summary {
            h2 .visually-hidden { "Summary" }
            dl {
                div.stat #stat-tracked { dt { "Certificates" } dd { a href="/" { (s.certificates) } } }
                div.stat.stat-expired #stat-expired { dt { "Expired" } dd { (count(CertState::Expired)) } }
                div.stat.stat-failing #stat-failing { dt { "Installs failing" } dd { (count(CertState::Failing)) } }
                div.stat.stat-critical #stat-critical { dt { "Under 7 days" } dd { (count(CertState::Critical)) } }
                div.stat.stat-warning #stat-warning { dt { "Under 21 days" } dd { (count(CertState::Warning)) } }
                div.stat #stat-unknown { dt { "Expiry unknown" } dd { (count(CertState::Unknown)) } }
                div.stat.wide #stat-soonest {
                    dt { "Soonest expiry" }
                    dd {
                        @match &s.soonest {
                            Some(next) => {
                                a href=(detail_path(&next.stack, &next.name)) { (next.name) }
                                " on " (stack_label(&next.stack, next.stack_name.as_deref()))
                                br;
                                (time(next.expiry_unix as f64)) " "
                                span.age { "(" (from_now(next.expiry_unix as f64 - p.now)) ")" }
                            }
                            None => "none",
                        }
                    }
                }
                div.stat.wide #stat-last-webhook {
                    dt { "Last webhook" }
                    dd {
                        @match p.last_delivery {
                            Some(last) => (last_delivery(last, p.now)),
                            None => "No webhook received yet",
                        }
                    }
                }
                div.stat #stat-storage {
                    dt { "Storage" }
                    dd {
                        @match &p.storage {
                            Ok(()) => "ready",
                            Err(error) => span.bad { "not ready: " (error) },
                        }
                    }
                }
                div.stat #stat-version {
                    dt { "Version" }
                    dd { (env!("CARGO_PKG_VERSION")) " " span.age { "(" (crate::GIT_REVISION) ")" } }
                }
                div.stat #stat-uptime {
                    dt { "Up" }
                    dd { (span(p.now - p.started_at)) }
                }
                @if let Some(sync) = p.sync {
                    div.stat.wide #stat-sync { dt { "Cloud66 API sync" } dd { (sync_line(sync, p.now)) } }
                }
            }
        }
    }
}

/// A stack id and, when known, its Cloud66 name.
fn stack_label(stack: &str, name: Option<&str>) -> Markup {
    html! {
        "stack " (stack)
        @if let Some(name) = name { " " span.stack-name { "(" (name) ")" } }
    }
}

/// When the last delivery came, what it was and how it ended.
pub fn last_delivery(last: &LastDelivery, now: f64) -> Markup {
    html! {
        (when(last.at, now))
        @match &last.seen {
            None => { br; "What it was is not known: the exporter restarted since." }
            Some(seen) => {
                br;
                @match &seen.event_type {
                    Some(event_type) => code { (event_type) },
                    None => "no event type",
                }
                ", " (result(seen.result))
            }
        }
    }
}

/// How a delivery ended, in words.
fn result(result: WebhookResult) -> &'static str {
    match result {
        WebhookResult::Accepted => "accepted",
        WebhookResult::Duplicate => "a duplicate (already stored)",
        WebhookResult::Ignored => "ignored (not an SSL event)",
        WebhookResult::OverLimit => "refused: over --storage.max-certificates",
        // Only the four above are recorded as the last delivery.
        other => other.as_str(),
    }
}

/// The last sync: when, how it ended, what it saw, and when the next one is.
fn sync_line(sync: &SyncStatus, now: f64) -> Markup {
    html! {
        @if sync.running { "running now" br; }
        @match (sync.last_finished, sync.last_result.as_deref()) {
            (Some(finished), Some(result)) => {
                span class={ "sync-" (result) } { (result) } " " (ago(now - finished))
                @if let Some(certificates) = sync.certificates {
                    ", " (certificates) " certificates seen"
                }
                @if let Some(error) = &sync.last_error { br; span.bad { (error) } }
            }
            _ => @if !sync.running { "no sync yet" },
        }
        @if let Some(next) = sync.next_sync {
            br; "next " (from_now(next - now))
        }
        @if !sync.leader { br; "run by the leader replica" }
    }
}

fn states(p: &StatusPage<'_>) -> Markup {
    let current = p.filter.state;
    html! {
        nav #states aria-label="States" {
            a.state-link data-state="all" href=(href(p.filter, None, &[]))
                aria-current=[current.is_none().then_some("page")] {
                "All (" (p.overview.counts.total()) ")"
            }
            @for state in CertState::ALL {
                a class={ "state-link state-" (state.as_str()) } data-state=(state.as_str())
                    href=(href(p.filter, Some(state), &[]))
                    aria-current=[(current == Some(state)).then_some("page")] {
                    (label(state)) " (" (p.overview.counts.get(state)) ")"
                }
            }
        }
    }
}

fn filter_form(filter: &Filter) -> Markup {
    html! {
        form #filter method="get" action="/" {
            label {
                "Name or domain "
                input type="search" name="q" value=[filter.q.as_deref()] placeholder="example.com";
            }
            label {
                "Stack "
                input type="text" name="stack" value=[filter.stack.as_deref()] placeholder="id or name" size="12";
            }
            label {
                "State "
                select name="state" {
                    option value="" selected[filter.state.is_none()] { "all" }
                    @for state in CertState::ALL {
                        option value=(state.as_str()) selected[filter.state == Some(state)] { (label(state)) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filter.q.is_some() || filter.stack.is_some() || filter.state.is_some() {
                " " a href="/" { "Clear" }
            }
        }
    }
}

fn table(p: &StatusPage<'_>) -> Markup {
    let listing = &p.overview.listing;
    let shown = listing.certificates.len();
    let first = listing.offset + 1;
    let last = listing.offset + shown;
    html! {
        @if shown == 0 {
            p #empty {
                @if p.overview.summary.certificates == 0 { "No certificate is known yet." }
                @else { "No certificate matches." }
            }
        } @else {
            table #certificates {
                (head(&[
                    "State", "Stack", "Name", "Domains", "Expiry (UTC)", "Issuer", "Last event",
                    "Install error",
                ]))
                tbody {
                    @for cert in &listing.certificates { (row(cert, p.now)) }
                }
            }
        }
        @if shown < listing.total {
            p #paging {
                "Showing " (first) "–" (last) " of " (listing.total) ". "
                @if let Some(limit) = listing.limit && last < listing.total {
                    a #next-page href=(href(p.filter, p.filter.state, &[
                        ("limit", limit.to_string()),
                        ("offset", last.to_string()),
                    ])) { "Next " (limit) }
                    " · "
                }
                a #show-all href=(href(p.filter, p.filter.state, &[("limit", "all".to_owned())])) {
                    "Show all " (listing.total)
                }
            }
        }
    }
}

/// A table's head row with these column titles.
pub fn head(titles: &[&str]) -> Markup {
    html! { thead { tr { @for title in titles { th scope="col" { (title) } } } } }
}

fn row(cert: &CertificateView, now: f64) -> Markup {
    html! {
        tr.cert data-state=(cert.state.as_str()) data-stack=(cert.stack) data-name=(cert.name) {
            td.state { (badge(cert.state)) }
            td.stack {
                a href={ "/?stack=" (encode(&cert.stack)) } { (cert.stack) }
                @if let Some(name) = &cert.stack_name { br; span.stack-name { (name) } }
            }
            td.name { a.detail href=(detail_path(&cert.stack, &cert.name)) { (cert.name) } }
            td.domains {
                @if !cert.domains.is_empty() {
                    ul { @for domain in &cert.domains { li { (domain) } } }
                }
            }
            td.expiry { (expiry(cert, now)) }
            td.issuer { (issuer(cert.lets_encrypt)) }
            td.last-event {
                @if let Some(at) = cert.last_event_unix {
                    @if let Some(event_type) = &cert.last_event_type { code { (short_type(event_type)) } " " }
                    span.age { (ago(now - at)) }
                } @else if cert.observed_at.is_some() {
                    "Cloud66 API only"
                }
            }
            td.error { @if cert.install_failing { (cert.error_message.as_deref().unwrap_or("")) } }
        }
    }
}

/// Time left (or since expiry) and the expiry date.
fn expiry(cert: &CertificateView, now: f64) -> Markup {
    html! {
        (time_left(cert, now))
        @if let Some(expiry) = cert.expiry_unix { br; (time(expiry as f64)) }
    }
}

/// Time left, or since expiry: "5 days left", "expired 3 hours ago", "unknown".
pub fn time_left(cert: &CertificateView, now: f64) -> Markup {
    html! {
        span.days-left {
            @match cert.expiry_unix {
                Some(expiry) if expiry as f64 > now => { (span(expiry as f64 - now)) " left" }
                Some(expiry) => { "expired " (ago(now - expiry as f64)) }
                None => "unknown",
            }
        }
    }
}

/// Let's Encrypt, manual, or nothing when not known.
pub fn issuer(lets_encrypt: Option<bool>) -> &'static str {
    match lets_encrypt {
        Some(true) => "Let's Encrypt",
        Some(false) => "manual",
        None => "",
    }
}

/// An event type without the common `ssl_certificate.` prefix.
pub fn short_type(event_type: &str) -> &str {
    event_type
        .strip_prefix("ssl_certificate.")
        .unwrap_or(event_type)
}

fn configure(auth_enabled: bool) -> Markup {
    html! {
        section #configure {
            h2 { "Configure Cloud66" }
            p {
                "In Cloud66, open Account settings, Notifications, Webhook, and enter the URL "
                @if auth_enabled {
                    code { "https://<this-host>/webhook/<token>" } " (or "
                    code { "?token=<token>" } "). The token is the one you configured with "
                    code { "--webhook.token" } ", or the one this exporter generated and logged at its first start."
                } @else {
                    code { "https://<this-host>/webhook" } ". "
                    strong { "Authentication is disabled" } " (" code { "--webhook.insecure-no-auth" }
                    "): anyone who can reach this port can send events."
                }
            }
            p {
                "Use the test button to check the connection: other event types are accepted and "
                "ignored, and the test shows up above as the last webhook. Opening the webhook URL "
                "in a browser shows whether it is ready."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::Certificate;
    use crate::view::StackNames;

    const NOW: f64 = 1_700_000_000.0;
    const DAY: f64 = 86_400.0;
    const HOSTILE: &str = "\"><script>alert(1)</script><img src=x onerror=alert(2)>";

    fn cert(stack: &str, name: &str, days: Option<f64>) -> Certificate {
        let mut cert = Certificate::new(stack, name);
        cert.expiry = days.map(|days| NOW + days * DAY);
        cert.last_event_ts = Some(NOW - 3_600.0);
        cert.last_event_type = Some(crate::event::EventKind::InstallOk);
        cert.info.server_names = Some("a.example.com, b.example.com".into());
        cert.info.lets_encrypt = Some("true".into());
        cert
    }

    #[test]
    fn a_follower_shows_the_leaders_sync_read_back_from_its_shared_form() {
        let leader = SyncStatus {
            leader: true,
            last_finished: Some(NOW - 120.0),
            last_result: Some("partial".into()),
            last_error: Some("<b>throttled</b>".into()),
            next_sync: Some(NOW + 600.0),
            ..SyncStatus::default()
        };
        let shared = serde_json::to_string(&leader).expect("serialises");
        let follower = SyncStatus {
            leader: false,
            ..serde_json::from_str::<SyncStatus>(&shared).expect("reads back")
        };
        let own = sync_line(&leader, NOW).into_string();
        let mirrored = sync_line(&follower, NOW).into_string();
        assert!(
            own.contains("sync-partial") && own.contains("&lt;b&gt;throttled"),
            "{own}"
        );
        assert!(!own.contains("leader replica"), "{own}");
        assert_eq!(mirrored, format!("{own}<br>run by the leader replica"));
    }

    fn fleet() -> Vec<Arc<Certificate>> {
        let mut hostile = cert("7", HOSTILE, Some(30.5));
        hostile.install_failing = true;
        hostile.error_message = Some("<b onmouseover=alert(3)>boom</b> & more".into());
        hostile.info.server_names = Some("<svg onload=alert(4)>.example.com,x.example.com".into());
        vec![
            Arc::new(hostile),
            Arc::new(cert("7", "web", Some(3.5))),
            Arc::new(cert("8", "old", Some(-1.5))),
            Arc::new(cert("8", "new", None)),
        ]
    }

    fn render_with(filter: &Filter, names: &StackNames) -> String {
        let overview = Overview::of(&fleet(), filter, NOW, names);
        let last = LastDelivery {
            at: NOW - 60.0,
            seen: None,
        };
        render(&StatusPage {
            links: Links {
                metrics: "/metrics",
            },
            now: NOW,
            filter,
            overview: &overview,
            last_delivery: Some(&last),
            storage: Err("disk <full>".into()),
            started_at: NOW - 7_200.0,
            sync: None,
            auth_enabled: true,
        })
    }

    #[test]
    fn what_came_from_the_network_is_text_and_links_are_encoded() {
        let names = StackNames::from([("7".to_owned(), "<i>Shop</i>".to_owned())]);
        let page = render_with(&Filter::default(), &names);
        for markup in ["<script", "<img", "<b ", "<svg", "<i>"] {
            assert!(!page.contains(markup), "{markup} became markup");
        }
        assert!(page.contains(
            "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
        ));
        assert!(page.contains("&lt;b onmouseover=alert(3)&gt;boom&lt;/b&gt; &amp; more"));
        assert!(
            page.contains("<li>&lt;svg onload=alert(4)&gt;.example.com</li><li>x.example.com</li>")
        );
        assert!(page.contains("<span class=\"stack-name\">&lt;i&gt;Shop&lt;/i&gt;</span>"));
        // In a link, the name is percent-encoded, so no quote closes the attribute.
        assert!(page.contains(
            "href=\"/certificates/7/%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E%3Cimg%20src%3Dx%20onerror%3Dalert%282%29%3E\""
        ));
        assert!(page.contains("data-name=\"&quot;&gt;&lt;script&gt;"));
        assert!(page.contains("not ready: disk &lt;full&gt;"));
    }

    #[test]
    fn filter_values_come_back_escaped_in_the_form_and_links() {
        let filter = Filter {
            q: Some("\"><script>x</script>".into()),
            stack: Some("7 & 8".into()),
            ..Filter::default()
        };
        let page = render_with(&filter, &StackNames::new());
        assert!(!page.contains("<script>x"));
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""));
        assert!(page.contains(
            "href=\"/?q=%22%3E%3Cscript%3Ex%3C%2Fscript%3E&amp;stack=7%20%26%208&amp;state=failing\""
        ));
        assert!(page.contains("<p id=\"empty\">No certificate matches.</p>"));
    }

    #[test]
    fn rows_are_sorted_badged_and_paged() {
        let filter = Filter {
            limit: Some(2),
            ..Filter::default()
        };
        let page = render_with(&filter, &StackNames::new());
        let order: Vec<usize> = ["data-name=\"old\"", "data-name=\"web\""]
            .iter()
            .map(|needle| page.find(needle).expect("row shown"))
            .collect();
        assert!(order[0] < order[1], "expired first");
        assert!(
            !page.contains("data-name=\"new\""),
            "the unknown one is on the next page"
        );
        assert!(page.contains("<span class=\"badge badge-expired\">Expired</span>"));
        assert!(page.contains("<span class=\"badge badge-critical\">Critical</span>"));
        assert!(page.contains("Showing 1–2 of 4. "));
        assert!(page.contains("id=\"next-page\" href=\"/?limit=2&amp;offset=2\""));
        assert!(page.contains("id=\"show-all\" href=\"/?limit=all\""));
        // Summary counts are over every certificate; the state links too, here.
        assert!(page.contains("All (4)"));
        assert!(page.contains("Install failing (1)"));
        assert!(page.contains("<span class=\"days-left\">expired 36 hours ago</span>"));
        assert!(page.contains("<span class=\"days-left\">3 days left</span>"));
        assert!(page.contains("<code>install.ok</code>"));
        assert!(page.contains("id=\"stat-uptime\"><dt>Up</dt><dd>2 hours</dd>"));
        assert!(page.contains("What it was is not known"));
    }
}

//! The HTML status pages (issue 15), `GET /` and `GET /certificates/<stack>/<name>`,
//! rendered by a real headless Chromium against an in-process exporter seeded through
//! webhooks with a realistic fleet (`common::fleet`), and checked against the DOM
//! contract: rows, badges, order, links, filters (with JavaScript off too), paging, the
//! detail page's history, hostile names rendered as text, the token shown nowhere, the
//! security headers, and stack names from the Cloud66 API.
//!
//! Needs Chromium on PATH (`apt-get install chromium`); the tests fail without it.

mod common;

use common::chromium::{self, Dom, one_within, raw_text, text, within};
use common::fleet::{self, Fleet, HISTORY_NAME, HISTORY_STACK, STATES, Seeded};
use common::{TOKEN, TestServer, request};
use percent_encoding::percent_decode_str;
use scraper::ElementRef;

/// The badge label of each state.
fn label(state: &str) -> &'static str {
    match state {
        "expired" => "Expired",
        "failing" => "Install failing",
        "critical" => "Critical",
        "warning" => "Warning",
        "ok" => "OK",
        "unknown" => "Unknown expiry",
        other => panic!("no state {other:?}"),
    }
}

/// An exporter seeded with the fleet.
struct Site {
    _dir: tempfile::TempDir,
    server: TestServer,
    fleet: Fleet,
}

impl Site {
    async fn start(hostile: bool) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestServer::start(dir.path()).await;
        let fleet = fleet::seed(server.addr, hostile).await;
        Site {
            _dir: dir,
            server,
            fleet,
        }
    }

    async fn page(&self, path: &str) -> Dom {
        page(&self.server, path).await
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// The absolute URL of `path` (a path, or a query as a link may carry it) on `server`.
fn url(server: &TestServer, path: &str) -> String {
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("http://{}{slash}{path}", server.addr)
}

/// `path` rendered by Chromium (JavaScript on), checked for the token.
async fn page(server: &TestServer, path: &str) -> Dom {
    let dom = Dom::load(&url(server, path)).await;
    assert!(
        !dom.source.contains(TOKEN),
        "{path} shows the webhook token"
    );
    dom
}

/// `path` rendered by Chromium with JavaScript off, checked for the token.
async fn page_without_javascript(server: &TestServer, path: &str) -> Dom {
    let dom = Dom::load_without_javascript(&url(server, path)).await;
    assert!(
        !dom.source.contains(TOKEN),
        "{path} shows the webhook token"
    );
    dom
}

/// One `tr.cert` of `table#certificates`, as rendered.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    state: String,
    stack: String,
    name: String,
    badge_class: String,
    badge: String,
    stack_href: String,
    stack_text: String,
    stack_name: Option<String>,
    link: String,
    link_text: String,
    domains: Vec<String>,
    days_left: String,
    expiry: Option<String>,
    issuer: String,
    event: Option<String>,
    age: Option<String>,
    error: String,
}

/// The one cell `td.<class>` of `row`.
fn cell<'a>(row: ElementRef<'a>, class: &str) -> ElementRef<'a> {
    one_within(row, &format!("td.{class}"))
}

fn rows(dom: &Dom) -> Vec<Row> {
    if dom.count("table#certificates") == 0 && dom.count("p#empty") == 1 {
        return Vec::new(); // nothing matches: no table needed
    }
    assert_eq!(dom.count("table#certificates"), 1, "{}", dom.source);
    assert_eq!(dom.count("table#certificates > thead"), 1);
    dom.select("table#certificates > tbody > tr")
        .into_iter()
        .map(|tr| {
            assert!(
                tr.value().classes().any(|c| c == "cert"),
                "a body row without class cert: {}",
                tr.html()
            );
            let attr = |name| {
                tr.attr(name)
                    .unwrap_or_else(|| panic!("row without {name}: {}", tr.html()))
                    .to_owned()
            };
            let badges = within(cell(tr, "state"), "span.badge");
            assert_eq!(badges.len(), 1, "one badge per row: {}", tr.html());
            let stack = cell(tr, "stack");
            let stack_link = one_within(stack, "a");
            let stack_names = within(stack, "span.stack-name");
            assert!(stack_names.len() <= 1, "{}", tr.html());
            let name_link = one_within(cell(tr, "name"), "a");
            assert!(
                name_link.value().classes().any(|c| c == "detail"),
                "the name link has class detail: {}",
                tr.html()
            );
            let expiry = cell(tr, "expiry");
            let times = within(expiry, "time");
            assert!(times.len() <= 1, "{}", tr.html());
            let event = cell(tr, "last-event");
            Row {
                state: attr("data-state"),
                stack: attr("data-stack"),
                name: attr("data-name"),
                badge_class: badges[0].attr("class").unwrap_or_default().to_owned(),
                badge: text(badges[0]),
                stack_href: stack_link.attr("href").unwrap_or_default().to_owned(),
                stack_text: text(stack_link),
                stack_name: stack_names.first().map(|e| text(*e)),
                link: name_link.attr("href").unwrap_or_default().to_owned(),
                link_text: raw_text(name_link),
                domains: within(cell(tr, "domains"), "ul > li")
                    .into_iter()
                    .map(raw_text)
                    .collect(),
                days_left: text(one_within(expiry, "span.days-left")),
                expiry: times
                    .first()
                    .map(|t| t.attr("datetime").unwrap_or_default().to_owned()),
                issuer: text(cell(tr, "issuer")),
                event: within(event, "code").first().map(|c| text(*c)),
                age: within(event, "span.age").first().map(|a| text(*a)),
                error: raw_text(cell(tr, "error")).trim().to_owned(),
            }
        })
        .collect()
}

fn names(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.name.clone()).collect()
}

fn expected_names(certs: &[&Seeded]) -> Vec<String> {
    certs.iter().map(|c| c.name.clone()).collect()
}

/// The detail path of a certificate checked against the contract: the name as one
/// percent-encoded segment that decodes to it.
fn check_detail_link(href: &str, stack: &str, name: &str) {
    let prefix = format!("/certificates/{stack}/");
    let segment = href
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("detail link {href:?} does not start with {prefix:?}"));
    assert!(
        !segment.contains(['/', '<', '>', '"', '\'', ' ', '?', '#']),
        "the name in {href:?} is not percent-encoded"
    );
    assert_eq!(
        percent_decode_str(segment)
            .decode_utf8()
            .expect("UTF-8 name"),
        name,
        "{href:?} does not name {name:?}"
    );
}

/// `span.days-left` says how long until (or since) the expiry: "N days" (whole days,
/// the half-day margin keeps them stable), "N hours" under two days (give or take the
/// seconds the test took), "left" or "expired", and "unknown" without an expiry.
fn check_time_left(shown: &str, cert: &Seeded, now: i64) {
    let name = &cert.name;
    let Some(expiry) = cert.expiry else {
        assert!(
            shown.is_empty() || shown.to_lowercase().contains("unknown"),
            "{name}: {shown:?} for an unknown expiry"
        );
        return;
    };
    let left = (expiry - now) as f64;
    if left > 0.0 {
        assert!(shown.contains("left"), "{name}: {shown:?}");
    } else {
        assert!(shown.contains("expired"), "{name}: {shown:?}");
    }
    let words: Vec<&str> = shown.split_whitespace().collect();
    let (count, unit) = words
        .windows(2)
        .find_map(|w| Some((w[0].parse::<i64>().ok()?, w[1])))
        .unwrap_or_else(|| panic!("{name}: no amount in {shown:?}"));
    let exact = left.abs()
        / if unit.starts_with("day") {
            fleet::DAY as f64
        } else if unit.starts_with("hour") {
            3600.0
        } else {
            panic!("{name}: {shown:?} for {left} s")
        };
    assert!(
        (count as f64 - exact).abs() <= 1.0,
        "{name}: {shown:?}, expected about {exact:.1} {unit}"
    );
    if unit.starts_with("day") {
        assert_eq!(count, exact.trunc() as i64, "{name}: {shown:?}, whole days");
    }
}

/// The counts of the summary (`ok` has none: it is the rest).
const SUMMARY_COUNTS: [&str; 6] = [
    "tracked", "expired", "critical", "warning", "failing", "unknown",
];

/// The counts of the summary, by key.
fn summary(dom: &Dom) -> Vec<(String, usize)> {
    SUMMARY_COUNTS
        .into_iter()
        .map(|key| {
            let css = format!("section#summary dl div.stat#stat-{key} > dd");
            let value = dom.text(&css);
            let count = value
                .parse()
                .unwrap_or_else(|_| panic!("{css} is {value:?}, not a count"));
            (key.to_owned(), count)
        })
        .collect()
}

fn expected_summary(fleet: &Fleet) -> Vec<(String, usize)> {
    SUMMARY_COUNTS
        .into_iter()
        .map(|key| match key {
            "tracked" => (key.to_owned(), fleet.certificates.len()),
            state => (key.to_owned(), fleet.count(state)),
        })
        .collect()
}

/// The `nav#states` links: (data-state, href, text, aria-current).
fn state_links(dom: &Dom) -> Vec<(String, String, String, Option<String>)> {
    dom.select("nav#states a.state-link")
        .into_iter()
        .map(|a| {
            (
                a.attr("data-state").unwrap_or_default().to_owned(),
                a.attr("href").unwrap_or_default().to_owned(),
                text(a),
                a.attr("aria-current").map(str::to_owned),
            )
        })
        .collect()
}

/// What no page may contain: elements markup in data could have made, inline script,
/// and the mark the hostile payloads leave when they run.
fn check_nothing_injected(dom: &Dom, page: &str) {
    for tag in ["img", "svg", "iframe", "object", "embed"] {
        assert_eq!(
            dom.count(tag),
            0,
            "{page}: a <{tag}> element was injected: {:?}",
            dom.select(tag).iter().map(|e| e.html()).collect::<Vec<_>>()
        );
    }
    for script in dom.select("script") {
        assert!(
            script.attr("src").is_some() && raw_text(script).trim().is_empty(),
            "{page}: an inline script: {}",
            script.html()
        );
    }
    let body = dom.one("body");
    assert_eq!(
        body.attr("data-pwned"),
        None,
        "{page}: a hostile payload ran"
    );
    assert_eq!(
        dom.count("[onerror], [onload]"),
        0,
        "{page}: event handlers"
    );
}

/// Elements and attributes the contract rules out everywhere.
fn check_common(dom: &Dom, page: &str) {
    assert_eq!(
        dom.attrs("link[rel=stylesheet]", "href"),
        ["/static/style.css"],
        "{page}: one stylesheet"
    );
    assert_eq!(dom.count("style"), 0, "{page}: an inline <style>");
    assert_eq!(dom.count("[style]"), 0, "{page}: an inline style attribute");
    let links = dom.attrs("nav#links a", "href");
    for wanted in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/certificates",
        "/api/v1/status",
        "https://github.com/cloud66-ssl-exporter/cloud66-ssl-exporter/blob/main/docs/runbooks.md",
    ] {
        assert!(
            links.iter().any(|l| l == wanted),
            "{page}: nav#links has no link to {wanted}: {links:?}"
        );
    }
    check_nothing_injected(dom, page);
}

#[tokio::test]
async fn chromium_renders_the_served_page_with_and_without_javascript() {
    // The harness itself: JavaScript runs by default and is off when asked, and pages of
    // the exporter render either way.
    let script = "data:text/html,<body><p>static</p>\
                  <script>document.body.setAttribute('data-js','1')</script></body>";
    let with = Dom::load(script).await;
    assert_eq!(with.attr("body", "data-js").as_deref(), Some("1"));
    let without = Dom::load_without_javascript(script).await;
    assert_eq!(without.attr("body", "data-js"), None, "JavaScript ran");
    assert_eq!(without.text("p"), "static");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    for dom in [
        page(&server, "/").await,
        page_without_javascript(&server, "/").await,
    ] {
        assert_eq!(dom.text("title"), "Cloud66 SSL exporter");
        assert_eq!(dom.count("h1"), 1);
    }
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    chromium::screenshot(&url(&server, "/"), &shots.join("harness.png"), 800, 600).await;
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_page_is_killed_and_fails_the_run_loudly() {
    // A server that takes connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let url = format!("http://{addr}/");
    let run = tokio::spawn(async move {
        chromium::dump_dom_within(&url, std::time::Duration::from_secs(5)).await
    });
    let failure = run.await.expect_err("a run on a hanging page fails");
    let message = failure
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .expect("a panic message");
    assert!(message.contains("did not finish"), "{message}");
    let pid: u32 = message
        .split_once("(PID ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {message}"));
    let mut left = chromium::live_group_members(pid);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = chromium::live_group_members(pid);
    }
    assert!(left.is_empty(), "Chromium processes left behind: {left:#?}");
    hold.abort();
}

#[tokio::test]
async fn the_list_shows_every_certificate_sorted_with_badge_domains_and_link() {
    let site = Site::start(false).await;
    let fleet = &site.fleet;
    let dom = site.page("/").await;
    check_common(&dom, "/");
    assert_eq!(dom.text("title"), "Cloud66 SSL exporter");
    assert_eq!(dom.count("h1"), 1);

    let rows = rows(&dom);
    let sorted = fleet.sorted();
    assert_eq!(
        names(&rows),
        expected_names(&sorted),
        "by time left, unknown last"
    );
    for (row, cert) in rows.iter().zip(&sorted) {
        let name = &cert.name;
        assert_eq!(row.state, cert.state, "{name}");
        let classes: Vec<&str> = row.badge_class.split_whitespace().collect();
        assert!(
            classes.contains(&"badge")
                && classes.contains(&format!("badge-{}", row.state).as_str()),
            "{name}: badge class {:?} does not match data-state {}",
            row.badge_class,
            row.state
        );
        assert_eq!(
            classes.iter().filter(|c| c.starts_with("badge-")).count(),
            1,
            "{name}: {:?}",
            row.badge_class
        );
        assert_eq!(row.badge, label(cert.state), "{name}");
        let stack = cert.stack.to_string();
        assert_eq!(row.stack, stack, "{name}");
        assert_eq!(row.stack_href, format!("/?stack={stack}"), "{name}");
        assert_eq!(row.stack_text, stack, "{name}");
        assert_eq!(
            row.stack_name, None,
            "{name}: no Cloud66 API, no stack name"
        );
        check_detail_link(&row.link, &stack, name);
        assert_eq!(&row.link_text, name);
        assert_eq!(row.domains, cert.domains, "{name}: one li per domain");
        assert_eq!(row.expiry, cert.expiry_rfc3339(), "{name}: <time datetime>");
        check_time_left(&row.days_left, cert, fleet.now);
        assert_eq!(row.issuer, cert.issuer, "{name}");
        assert_eq!(
            row.error,
            cert.error.clone().unwrap_or_default(),
            "{name}: the error while failing, else nothing"
        );
        // The newest event by arrival is also the newest by time, except for the one
        // with the late delivery.
        // The type as Cloud66 sends it, or without its `ssl_certificate.` prefix.
        let short = |t: &str| t.trim_start_matches("ssl_certificate.").to_owned();
        let event = short(row.event.as_deref().unwrap_or_default());
        if cert.name != HISTORY_NAME {
            assert_eq!(event, short(cert.history[0].event_type), "{name}");
        } else {
            assert!(
                [short(fleet::INSTALL_OK), short(fleet::EXPIRE_SOON)].contains(&event),
                "{name}: {event}"
            );
        }
        let age = row.age.as_deref().unwrap_or_default();
        assert!(age.ends_with("ago"), "{name}: age {age:?}");
    }
    let states: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(
        states.len(),
        STATES.len(),
        "every state present: {states:?}"
    );

    assert_eq!(summary(&dom), expected_summary(fleet));
    let soonest = dom.text("#stat-soonest > dd");
    assert!(
        soonest.contains("sandbox.example-pay.com") && soonest.contains("21033"),
        "soonest non-expired expiry: {soonest:?}"
    );
    assert!(
        dom.text("#stat-storage > dd").starts_with("ready"),
        "{}",
        dom.text("#stat-storage > dd")
    );
    assert!(
        dom.text("#stat-version > dd")
            .contains(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(dom.count("#stat-uptime > dd"), 1);
    // The seeding just ended: "just now" is an age as well as "2 seconds ago".
    let last = dom.text("#stat-last-webhook > dd");
    assert!(
        last.contains("ago") || last.contains("just now"),
        "{last:?}"
    );
    assert_eq!(
        dom.count("#stat-last-webhook > dd time[datetime]"),
        1,
        "{last:?}"
    );
    assert_eq!(dom.count("#stat-sync"), 0, "no Cloud66 API configured");
    assert_eq!(dom.count("p#no-webhook"), 0);
    assert_eq!(dom.count("p#empty"), 0);
    assert!(dom.text("section#configure").contains("/webhook/"));
    // All shown: the paging line may be left out; if there, it says so.
    for paging in dom.texts("p#paging") {
        assert!(
            paging.contains(&format!("1–{0} of {0}", fleet.certificates.len())),
            "{paging:?}"
        );
    }
    assert_eq!(dom.count("a#show-all"), 0, "all are shown");
    assert_eq!(dom.count("a#next-page"), 0);
    site.stop().await;
}

#[tokio::test]
async fn state_links_and_filters_select_rows_and_mark_the_current_state() {
    let site = Site::start(false).await;
    let fleet = &site.fleet;
    let total = fleet.certificates.len();

    let dom = site.page("/").await;
    let mut expected = vec![(
        "all".to_owned(),
        "/".to_owned(),
        format!("All ({total})"),
        Some("page".to_owned()),
    )];
    for state in STATES {
        expected.push((
            state.to_owned(),
            format!("/?state={state}"),
            format!("{} ({})", label(state), fleet.count(state)),
            None,
        ));
    }
    assert_eq!(state_links(&dom), expected);

    for state in STATES {
        let path = format!("/?state={state}");
        let dom = site.page(&path).await;
        assert_eq!(
            names(&rows(&dom)),
            expected_names(&fleet.sorted_where(|c| c.state == state)),
            "{path}"
        );
        let current: Vec<String> = state_links(&dom)
            .into_iter()
            .filter(|l| l.3.is_some())
            .map(|l| {
                assert_eq!(l.3.as_deref(), Some("page"));
                l.0
            })
            .collect();
        assert_eq!(current, [state], "{path}: aria-current");
        assert_eq!(
            summary(&dom),
            expected_summary(fleet),
            "{path}: the summary ignores filters"
        );
    }

    // A stack: the rows of that stack, state counts of that stack, links keeping it.
    let dom = site.page("/?stack=21033").await;
    assert_eq!(
        names(&rows(&dom)),
        expected_names(&fleet.sorted_where(|c| c.stack == 21033))
    );
    for (state, href, text, _) in state_links(&dom) {
        assert!(href.contains("stack=21033"), "{state}: {href}");
        let count = match state.as_str() {
            "all" => fleet.sorted_where(|c| c.stack == 21033).len(),
            s => fleet
                .sorted_where(|c| c.stack == 21033 && c.state == s)
                .len(),
        };
        assert!(text.ends_with(&format!("({count})")), "{state}: {text}");
    }
    let dom = site.page("/?stack=21033&state=failing").await;
    assert_eq!(names(&rows(&dom)), ["webhooks.example-pay.com"]);

    // A domain substring, any case; the name too.
    for (q, expected) in [
        ("static.shopfront", vec!["cdn.shopfront.io"]),
        ("API-EU.example", vec!["api.example-pay.com"]),
        ("hooks.example-pay", vec!["webhooks.example-pay.com"]),
        ("landing", vec!["landing-2024"]),
    ] {
        let dom = site.page(&format!("/?q={q}")).await;
        assert_eq!(names(&rows(&dom)), expected, "q={q}");
        for (state, href, _, _) in state_links(&dom) {
            assert!(
                href.to_lowercase()
                    .contains(&format!("q={}", q.to_lowercase())),
                "{state} link drops q={q}: {href}"
            );
        }
    }
    let dom = site.page("/?q=example-marketing&state=critical").await;
    assert_eq!(
        names(&rows(&dom)),
        ["newsletter.example-marketing.com"],
        "filters combine"
    );
    let dom = site.page("/?q=no-such-domain.example&state=").await;
    assert!(rows(&dom).is_empty());
    assert_eq!(dom.count("p#empty"), 1, "says nothing matches");
    assert_eq!(
        summary(&dom),
        expected_summary(fleet),
        "empty values are absent"
    );
    site.stop().await;
}

#[tokio::test]
async fn the_filter_form_works_without_javascript() {
    let site = Site::start(false).await;
    let server = &site.server;
    let with = site.page("/").await;
    let without = page_without_javascript(server, "/").await;
    assert_eq!(
        rows(&without),
        rows(&with),
        "the same page without JavaScript"
    );
    check_nothing_injected(&without, "/ without JavaScript");

    let form = without.one("form#filter");
    assert_eq!(
        form.attr("method").map(str::to_lowercase).as_deref(),
        Some("get")
    );
    assert_eq!(form.attr("action"), Some("/"));
    assert_eq!(without.count("form#filter input[type=search][name=q]"), 1);
    assert_eq!(without.count("form#filter input[name=stack]"), 1);
    assert_eq!(without.count("form#filter button[type=submit]"), 1);
    let options = without.attrs("form#filter select[name=state] option", "value");
    assert_eq!(
        options.first().map(String::as_str),
        Some(""),
        "all states first"
    );
    for state in STATES {
        assert!(options.iter().any(|o| o == state), "no option {state}");
    }

    // What a browser submits: every named control, in order, form-urlencoded.
    let submit = |values: &[(&str, &str)]| {
        let controls = within(form, "input[name], select[name]");
        let query: Vec<String> = controls
            .iter()
            .map(|control| {
                let name = control.attr("name").expect("named control");
                let value = values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, v)| v);
                format!("{}={}", form_encode(name), form_encode(value))
            })
            .collect();
        format!("/?{}", query.join("&"))
    };
    for (values, expected) in [
        (vec![("q", "static.shopfront")], vec!["cdn.shopfront.io"]),
        (
            vec![("stack", "20517"), ("state", "warning")],
            vec!["staging.shopfront.io"],
        ),
        (vec![("q", "shopfront io"), ("state", "expired")], vec![]),
        (
            vec![("q", ".example-pay.com"), ("state", "failing")],
            vec!["webhooks.example-pay.com"],
        ),
    ] {
        let path = submit(&values);
        let dom = page_without_javascript(server, &path).await;
        assert_eq!(names(&rows(&dom)), expected, "{path}");
        let with = site.page(&path).await;
        assert_eq!(rows(&dom), rows(&with), "{path}: the same with JavaScript");
    }
    site.stop().await;
}

/// `application/x-www-form-urlencoded` as a browser writes it.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn paging_shows_a_window_and_links_to_the_rest() {
    let site = Site::start(false).await;
    let sorted = expected_names(&site.fleet.sorted());
    let total = sorted.len();

    let dom = site.page("/?limit=5").await;
    assert_eq!(names(&rows(&dom)), sorted[..5]);
    let paging = dom.text("p#paging");
    assert!(paging.contains(&format!("1–5 of {total}")), "{paging:?}");
    let show_all = dom.attr("p#paging a#show-all", "href").expect("href");
    assert!(show_all.contains("limit=all"), "{show_all}");
    let next = dom.attr("p#paging a#next-page", "href").expect("href");
    let dom = site.page(&next).await;
    assert_eq!(names(&rows(&dom)), sorted[5..10], "{next}");
    let dom = site.page(&show_all).await;
    assert_eq!(names(&rows(&dom)), sorted, "{show_all}");
    assert_eq!(dom.count("a#show-all"), 0);

    let last = total - 4;
    let dom = site.page(&format!("/?limit=5&offset={last}")).await;
    assert_eq!(names(&rows(&dom)), sorted[last..]);
    let paging = dom.text("p#paging");
    assert!(
        paging.contains(&format!("{}–{total} of {total}", last + 1)),
        "{paging:?}"
    );
    assert_eq!(dom.count("a#next-page"), 0, "nothing after the last page");

    let dom = site.page("/?state=ok&limit=2").await;
    let ok = expected_names(&site.fleet.sorted_where(|c| c.state == "ok"));
    assert_eq!(names(&rows(&dom)), ok[..2]);
    assert!(
        dom.text("p#paging")
            .contains(&format!("1–2 of {}", ok.len())),
        "{}",
        dom.text("p#paging")
    );
    site.stop().await;
}

/// One `tr.event` of `table#history`: (id, type, changed, out of order, flags).
fn history(dom: &Dom) -> Vec<(i64, String, bool, bool, Vec<String>)> {
    dom.select("table#history > tbody > tr")
        .into_iter()
        .map(|tr| {
            assert!(tr.value().classes().any(|c| c == "event"), "{}", tr.html());
            let attr = |name| {
                tr.attr(name)
                    .unwrap_or_else(|| panic!("event row without {name}: {}", tr.html()))
            };
            let flag = |name| match attr(name) {
                "true" => true,
                "false" => false,
                other => panic!("{name}={other:?}"),
            };
            (
                attr("data-event-id").parse().expect("numeric event id"),
                attr("data-event-type").to_owned(),
                flag("data-changed"),
                flag("data-out-of-order"),
                within(tr, "span.flag")
                    .into_iter()
                    .map(|f| {
                        let kind = f
                            .value()
                            .classes()
                            .find(|c| *c != "flag")
                            .unwrap_or_default()
                            .to_owned();
                        format!("{kind}: {}", text(f))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The history rows of `dom` against what the fleet expects of `cert`: types, order,
/// `data-changed` / `data-out-of-order`, and the flags that say them in words.
fn check_history(dom: &Dom, cert: &Seeded) -> Vec<(i64, String, bool, bool, Vec<String>)> {
    let shown = history(dom);
    let summary: Vec<(String, bool, bool)> = shown
        .iter()
        .map(|(_, t, changed, late, _)| (t.clone(), *changed, *late))
        .collect();
    let expected: Vec<(String, bool, bool)> = cert
        .history
        .iter()
        .map(|e| (e.event_type.to_owned(), e.changed, e.out_of_order))
        .collect();
    assert_eq!(
        summary, expected,
        "{}: (type, changed, out of order), newest first",
        cert.name
    );
    for (id, event_type, changed, late, flags) in &shown {
        let wanted: Vec<String> = [
            changed.then(|| "changed: changed state".to_owned()),
            late.then(|| "out-of-order: out of order".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut got = flags.clone();
        got.retain(|f| !f.starts_with("unreadable"));
        got.sort();
        assert_eq!(
            got, wanted,
            "{}: event {id} ({event_type}) flags",
            cert.name
        );
    }
    shown
}

/// The detail path the list links to for `name`.
fn detail_link(list: &Dom, name: &str) -> String {
    rows(list)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name:?}"))
        .link
}

#[tokio::test]
async fn the_detail_page_shows_fields_counters_and_the_history_newest_first() {
    let site = Site::start(false).await;
    let cert = site.fleet.get(HISTORY_NAME);
    let list = site.page("/").await;
    let path = detail_link(&list, HISTORY_NAME);
    let dom = site.page(&path).await;
    check_common(&dom, &path);
    assert!(dom.text("h1").contains(HISTORY_NAME), "{}", dom.text("h1"));
    assert_eq!(
        dom.count(&format!("span.badge.badge-{}", cert.state)),
        1,
        "one badge for its state"
    );
    for key in [
        "stack",
        "name",
        "state",
        "expiry",
        "days-left",
        "domains",
        "lets-encrypt",
        "intermediate",
        "termination",
        "status",
        "install",
        "error",
        "last-event",
        "observed",
        "expiry-set",
        "install-set",
        "info-set",
    ] {
        let css = format!("dl#fields > div#field-{key}");
        assert_eq!(dom.count(&css), 1, "{css}");
        assert_eq!(dom.count(&format!("{css} > dt")), 1, "{css} dt");
        assert_eq!(dom.count(&format!("{css} > dd")), 1, "{css} dd");
    }
    assert!(
        dom.text("#field-stack > dd")
            .contains(&HISTORY_STACK.to_string())
    );
    assert_eq!(raw_text(dom.one("#field-name > dd")).trim(), HISTORY_NAME);
    let domains = dom.text("#field-domains > dd");
    for domain in &cert.domains {
        assert!(
            domains.contains(domain.as_str()),
            "{domains:?} lacks {domain}"
        );
    }
    let expiry = cert.expiry_rfc3339().expect("an expiry");
    assert!(
        dom.select("#field-expiry > dd")[0].html().contains(&expiry),
        "{}",
        dom.select("#field-expiry > dd")[0].html()
    );
    assert!(
        dom.text("#field-days-left > dd")
            .contains(&cert.days_left.expect("days").to_string())
    );
    assert!(
        !dom.text("#field-error > dd")
            .contains("Timeout during connect"),
        "not failing any more: {}",
        dom.text("#field-error > dd")
    );

    // Counters: a row each, the count in its last cell.
    let counters: Vec<(String, String)> = dom
        .select("table#counters tr")
        .into_iter()
        .filter_map(|tr| {
            let cells: Vec<String> = within(tr, "th, td").into_iter().map(text).collect();
            Some((cells.first()?.to_lowercase(), cells.last()?.clone()))
        })
        .collect();
    let (failures, successes, soon) = cert.counters();
    for (labels, count) in [
        (["fail", "fail"], failures),
        (["success", "install.ok"], successes),
        (["expire", "expire"], soon),
    ] {
        assert!(
            counters.iter().any(|(name, value)| {
                labels.iter().any(|l| name.contains(l)) && *value == count.to_string()
            }),
            "no counter row {labels:?} = {count}: {counters:?}"
        );
    }

    // History: newest (by arrival) first, flags as the fleet expects, the ids the API
    // gives.
    let shown = check_history(&dom, cert);
    let api = request(
        site.server.addr,
        "GET",
        &format!("/api/v1/certificates/{HISTORY_STACK}/{HISTORY_NAME}"),
        &[],
        "",
    )
    .await
    .json();
    let api_ids: Vec<i64> = api["history"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    let ids: Vec<i64> = shown.iter().map(|e| e.0).collect();
    assert_eq!(ids, api_ids, "the API's events, newest first");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    for tr in dom.select("table#history > tbody > tr") {
        let cells = within(tr, "td");
        assert!(cells.len() >= 10, "{}", tr.html());
        assert!(
            cells.iter().any(|c| text(*c) == "webhook"),
            "source cell: {}",
            tr.html()
        );
    }
    let failure = dom
        .select("table#history > tbody > tr[data-event-type=\"ssl_certificate.install.fail\"]")
        .into_iter()
        .next()
        .expect("the failed renewal");
    assert!(
        text(failure).contains("Timeout during connect"),
        "{}",
        failure.html()
    );
    let total = dom.text("p#history-total");
    assert!(total.contains(&cert.history.len().to_string()), "{total:?}");

    // The forget command: the placeholder, never the token.
    let command = raw_text(dom.one("section#forget pre > code#forget-command"));
    assert!(command.starts_with("curl -X DELETE"), "{command}");
    assert!(
        command.contains("-H 'Authorization: Bearer <token>'"),
        "{command}"
    );
    assert!(
        command.ends_with(&format!(
            "/api/v1/certificates/{HISTORY_STACK}/{HISTORY_NAME}'"
        )),
        "{command}"
    );

    // Fewer events than there are: the newest, and a link to more.
    let dom = site.page(&format!("{path}?history=2")).await;
    let ids_2: Vec<i64> = history(&dom).iter().map(|e| e.0).collect();
    assert_eq!(ids_2, ids[..2]);
    let total = dom.text("p#history-total");
    assert!(
        total.contains('2') && total.contains(&cert.history.len().to_string()),
        "{total:?}"
    );
    assert_eq!(dom.count("p#history-total a[href]"), 1, "a link to more");

    // A failing install (its error, its badge), one failed and fixed, and one whose
    // expire.soon repeated what was known.
    let failing = site.fleet.get("admin.shopfront.io");
    let path = detail_link(&list, &failing.name);
    let dom = site.page(&path).await;
    assert_eq!(dom.count("span.badge.badge-failing"), 1);
    assert_eq!(
        raw_text(dom.one("#field-error > dd")).trim(),
        failing.error.as_deref().expect("error")
    );
    check_history(&dom, failing);
    for name in ["invoices.example-pay.com", "checkout.shopfront.io"] {
        let cert = site.fleet.get(name);
        let dom = site.page(&detail_link(&list, name)).await;
        assert_eq!(
            dom.count(&format!("span.badge.badge-{}", cert.state)),
            1,
            "{name}"
        );
        check_history(&dom, cert);
    }
    site.stop().await;
}

#[tokio::test]
async fn hostile_names_domains_and_errors_are_text_everywhere() {
    let site = Site::start(true).await;
    let fleet = &site.fleet;
    for javascript in [true, false] {
        let dom = match javascript {
            true => site.page("/").await,
            false => page_without_javascript(&site.server, "/").await,
        };
        check_nothing_injected(&dom, "/");
        let rows = rows(&dom);
        assert_eq!(names(&rows), expected_names(&fleet.sorted()));
        for cert in fleet.certificates.iter().filter(|c| c.hostile) {
            let row = rows
                .iter()
                .find(|r| r.name == cert.name)
                .unwrap_or_else(|| panic!("no row for {:?}", cert.name));
            assert_eq!(row.link_text, cert.name, "td.name a is the name as text");
            assert_eq!(row.domains, cert.domains);
            assert_eq!(row.error, cert.error.clone().unwrap_or_default());
            assert_eq!(row.state, cert.state);
            check_detail_link(&row.link, &cert.stack.to_string(), &cert.name);
        }
    }
    let dom = site.page("/?q=%3Cscript").await;
    assert_eq!(names(&rows(&dom)), [fleet::HOSTILE_SCRIPT]);
    check_nothing_injected(&dom, "/?q=<script");

    let list = site.page("/").await;
    for cert in fleet.certificates.iter().filter(|c| c.hostile) {
        let path = detail_link(&list, &cert.name);
        for dom in [
            site.page(&path).await,
            page_without_javascript(&site.server, &path).await,
        ] {
            check_nothing_injected(&dom, &path);
            assert!(
                raw_text(dom.one("h1")).contains(&cert.name),
                "{path}: h1 {:?}",
                raw_text(dom.one("h1"))
            );
            assert_eq!(raw_text(dom.one("#field-name > dd")).trim(), cert.name);
            let command = raw_text(dom.one("code#forget-command"));
            let quoted = command
                .rsplit('\'')
                .nth(1)
                .unwrap_or_else(|| panic!("no quoted URL in {command}"));
            let (_, tail) = quoted
                .split_once("/api/v1/certificates/")
                .unwrap_or_else(|| panic!("no API path in {command}"));
            let (stack, segment) = tail.split_once('/').expect("stack/name");
            assert_eq!(stack, cert.stack.to_string());
            assert!(
                !segment.contains(['\'', '"', '<', '>', ' ', '/']),
                "{command}: the name is not percent-encoded"
            );
            assert_eq!(
                percent_decode_str(segment).decode_utf8().expect("UTF-8"),
                cert.name,
                "{command}"
            );
            if let Some(error) = &cert.error {
                let dd = dom.one("#field-error > dd");
                assert_eq!(raw_text(dd).trim(), error, "{path}: {}", dd.html());
            }
        }
    }
    site.stop().await;
}

#[tokio::test]
async fn an_unknown_certificate_is_a_404_page() {
    let site = Site::start(false).await;
    for path in [
        "/certificates/20481/nope.shopfront.io",
        "/certificates/99999/shopfront.io",
        "/certificates/20481/shopfront.io%2Fx",
    ] {
        let reply = request(site.server.addr, "GET", path, &[], "").await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type"), "text/html; charset=utf-8");
        assert!(!reply.body.contains(TOKEN));
        let dom = Dom::parse(reply.body.clone());
        assert_eq!(dom.count("p#error"), 1, "{path}: {}", reply.body);
    }
    let dom = site.page("/certificates/20481/nope.shopfront.io").await;
    assert_eq!(dom.count("p#error"), 1);
    check_common(&dom, "404");
    site.stop().await;
}

#[tokio::test]
async fn a_fresh_exporter_says_no_webhook_arrived_and_how_to_configure_cloud66() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let dom = page(&server, "/").await;
    check_common(&dom, "/ (fresh)");
    let notice = dom.one("p#no-webhook");
    assert_eq!(
        within(notice, "a[href=\"#configure\"]").len(),
        1,
        "points to #configure: {}",
        notice.html()
    );
    assert!(
        dom.text("#stat-last-webhook > dd")
            .contains("No webhook received yet")
    );
    assert_eq!(dom.text("#stat-soonest > dd"), "none");
    for (key, count) in summary(&dom) {
        assert_eq!(count, 0, "{key}");
    }
    let configure = dom.text("section#configure");
    assert!(configure.contains("/webhook/"), "{configure}");
    assert!(rows(&dom).is_empty());
    assert_eq!(dom.count("p#empty"), 1);
    server.stop().await;
}

#[tokio::test]
async fn every_page_sends_the_security_headers() {
    let site = Site::start(false).await;
    let detail = format!("/certificates/{HISTORY_STACK}/{HISTORY_NAME}");
    for (path, status) in [
        ("/", 200),
        ("/?state=failing&q=shop", 200),
        (detail.as_str(), 200),
        ("/certificates/20481/nope.shopfront.io", 404),
    ] {
        let reply = request(site.server.addr, "GET", path, &[], "").await;
        assert_eq!(reply.status, status, "{path}");
        for (name, value) in [
            ("content-type", "text/html; charset=utf-8"),
            (
                "content-security-policy",
                "default-src 'self'; base-uri 'none'; form-action 'self'; \
                 frame-ancestors 'none'; object-src 'none'",
            ),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(reply.header(name), value, "{path}: {name}");
        }
        assert!(!reply.body.contains(TOKEN), "{path}");
    }
    let css = request(site.server.addr, "GET", "/static/style.css", &[], "").await;
    assert_eq!(css.status, 200);
    assert!(
        css.header("content-type").starts_with("text/css"),
        "{}",
        css.header("content-type")
    );
    site.stop().await;
}

#[tokio::test]
async fn screenshots_of_the_list_and_the_detail_page() {
    let site = Site::start(true).await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let detail = format!("/certificates/{HISTORY_STACK}/{HISTORY_NAME}");
    for (path, file, width, height) in [
        ("/", "list-desktop.png", 1280, 1600),
        ("/", "list-phone.png", 390, 844),
        (detail.as_str(), "detail-desktop.png", 1280, 1200),
    ] {
        chromium::screenshot(&url(&site.server, path), &shots.join(file), width, height).await;
    }
    site.stop().await;
}

#[tokio::test]
async fn stack_names_from_the_cloud66_api_are_shown_next_to_the_stack_id() {
    use common::fake_cloud66::FakeCloud66;
    let fake = FakeCloud66::start().await;
    let uid = "5999b763474b0eafa5fafb64bff0ba80";
    fake.add_stack(uid, "Shopfront Production", "production");
    fake.set_actions(
        uid,
        vec![FakeCloud66::stack_action(serde_json::json!("20481"))],
    );
    let expires = fleet::rfc3339(chrono::Utc::now().timestamp() + 70 * fleet::DAY);
    fake.set_certificates(
        uid,
        vec![FakeCloud66::certificate(
            "u1",
            "api-only.shopfront.io",
            "api-only.shopfront.io",
            serde_json::json!(3),
            Some(&expires),
            true,
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::sync::start(dir.path(), &fake, |_| {}).await;
    common::sync::first_sync(&server).await;
    let fleet = fleet::seed(server.addr, false).await;

    let dom = page(&server, "/").await;
    let rows = rows(&dom);
    assert_eq!(rows.len(), fleet.certificates.len() + 1);
    for row in &rows {
        let expected = (row.stack == "20481").then(|| "Shopfront Production".to_owned());
        assert_eq!(row.stack_name, expected, "{} on {}", row.name, row.stack);
        assert_eq!(row.stack_text, row.stack, "the id stays shown");
    }
    assert!(
        rows.iter()
            .any(|r| r.name == "api-only.shopfront.io" && r.stack == "20481"),
        "the certificate known only from the API"
    );
    assert_eq!(dom.count("#stat-sync > dd"), 1, "the sync is summarized");
    server.stop().await;
}

//! A realistic fleet of certificates, seeded into a running exporter through real
//! webhook POSTs (`/webhook/<token>` with [`TOKEN`]), for the status page tests and for
//! looking at the pages by hand.
//!
//! 24 certificates on 5 stacks, every state present: expired, install failing (with
//! Cloud66-like error messages, one with no expiry known at all), critical (< 7 days),
//! warning (< 21 days), ok, and unknown expiry (an `install.ok` without `cert_expiry`);
//! Let's Encrypt and manual ones, several with more than one domain. Some have a history:
//! `shopfront.io` (stack 20481) went through expire.soon, a failed renewal, the renewal,
//! and a late, older expire.soon; `invoices.example-pay.com` (stack 21033) failed once
//! and was fixed. With `hostile`, two more whose name, domains and error message are
//! markup that would run script if it were not escaped.
//!
//! Expiries are relative to the seeding time, plus half a day, so the whole days left
//! do not change while a test runs. [`Fleet`] says what was seeded and what each
//! certificate's state, expiry and history must be.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::{TOKEN, payload, request};

/// Seconds per day.
pub const DAY: i64 = 86_400;

/// Event types.
pub const EXPIRE_SOON: &str = "ssl_certificate.expire.soon";
pub const INSTALL_OK: &str = "ssl_certificate.install.ok";
pub const INSTALL_FAIL: &str = "ssl_certificate.install.fail";

/// The hostile names seeded with `hostile`.
pub const HOSTILE_IMG: &str =
    r#"<img src=x onerror="document.body.setAttribute('data-pwned','1')">"#;
pub const HOSTILE_SCRIPT: &str =
    r#""><script>document.body.setAttribute('data-pwned','2')</script>"#;

/// A hostile domain (of [`HOSTILE_IMG`]); no comma, so it stays one domain.
pub const HOSTILE_DOMAIN: &str = r#""><svg onload="document.body.dataset.pwned=3">"#;

/// A hostile install error (of [`HOSTILE_SCRIPT`]).
pub const HOSTILE_ERROR: &str = r#"</td><iframe src="javascript:document.body.setAttribute('data-pwned','4')"></iframe><script>document.body.setAttribute('data-pwned','5')</script> & more"#;

/// The certificate with the richest history (on stack 20481).
pub const HISTORY_NAME: &str = "shopfront.io";

/// Its stack.
pub const HISTORY_STACK: u64 = 20481;

/// The states in the order of the contract.
pub const STATES: [&str; 6] = ["expired", "failing", "critical", "warning", "ok", "unknown"];

/// One event of a certificate's history as the detail page must show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEvent {
    /// The Cloud66 event type.
    pub event_type: &'static str,
    /// Whether it changed what is shown about the certificate.
    pub changed: bool,
    /// Whether something newer had arrived before it.
    pub out_of_order: bool,
}

/// One seeded certificate.
#[derive(Clone, Debug)]
pub struct Seeded {
    /// The webhook `stack_id`.
    pub stack: u64,
    /// The certificate name.
    pub name: String,
    /// The domains, in the order of `server_names`.
    pub domains: Vec<String>,
    /// Its one state (`expired`, `failing`, `critical`, `warning`, `ok`, `unknown`).
    pub state: &'static str,
    /// Its expiry (Unix seconds), if any event gave one.
    pub expiry: Option<i64>,
    /// Whole days left, rounded down (negative once expired).
    pub days_left: Option<i64>,
    /// `Let's Encrypt` or `manual`.
    pub issuer: &'static str,
    /// The install error while failing.
    pub error: Option<String>,
    /// Its events, newest (by arrival) first.
    pub history: Vec<ExpectedEvent>,
    /// Whether it is one of the hostile ones.
    pub hostile: bool,
}

impl Seeded {
    /// The expiry as RFC 3339 UTC to the second, as `<time datetime>` carries it.
    pub fn expiry_rfc3339(&self) -> Option<String> {
        self.expiry.map(rfc3339)
    }

    /// Counters: (install failures, install successes, expire.soon notifications).
    pub fn counters(&self) -> (usize, usize, usize) {
        let count = |kind| self.history.iter().filter(|e| e.event_type == kind).count();
        (count(INSTALL_FAIL), count(INSTALL_OK), count(EXPIRE_SOON))
    }
}

/// What [`seed`] sent.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The Unix time expiries and event times were computed from.
    pub now: i64,
    /// Every certificate, in the order they were seeded.
    pub certificates: Vec<Seeded>,
    /// Webhook deliveries sent (all acknowledged with 200).
    pub deliveries: usize,
}

impl Fleet {
    /// The certificate named `name` (names are unique in the fleet).
    pub fn get(&self, name: &str) -> &Seeded {
        self.certificates
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no seeded certificate {name:?}"))
    }

    /// How many are in `state`.
    pub fn count(&self, state: &str) -> usize {
        self.certificates
            .iter()
            .filter(|c| c.state == state)
            .count()
    }

    /// The stack ids, ascending.
    pub fn stacks(&self) -> Vec<u64> {
        let mut stacks: Vec<u64> = self.certificates.iter().map(|c| c.stack).collect();
        stacks.sort_unstable();
        stacks.dedup();
        stacks
    }

    /// The certificates in list order: by time left (the longest expired first), unknown
    /// expiry last, ties in (stack, name) order (byte order of the strings).
    pub fn sorted(&self) -> Vec<&Seeded> {
        let mut sorted: Vec<&Seeded> = self.certificates.iter().collect();
        sorted.sort_by(|a, b| {
            let key = |c: &Seeded| (c.expiry.is_none(), c.expiry);
            key(a)
                .cmp(&key(b))
                .then_with(|| a.stack.to_string().cmp(&b.stack.to_string()))
                .then_with(|| a.name.cmp(&b.name))
        });
        sorted
    }

    /// The certificates in list order that `keep` selects.
    pub fn sorted_where(&self, keep: impl Fn(&Seeded) -> bool) -> Vec<&Seeded> {
        self.sorted().into_iter().filter(|c| keep(c)).collect()
    }
}

/// `ts` as RFC 3339 UTC to the second (`2024-03-01T00:00:00Z`).
pub fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How one certificate is described to Cloud66's webhooks.
struct Spec {
    stack: u64,
    name: &'static str,
    server_names: String,
    lets_encrypt: bool,
    events: Vec<Sent>,
    state: &'static str,
    history: Vec<(bool, bool)>,
}

/// One delivery: event type, days before now it was sent, the expiry it carries (in days
/// from now, plus half a day), the install error.
type Sent = (&'static str, f64, Option<i64>, Option<&'static str>);

fn ok(days_ago: f64, expires_in: Option<i64>) -> Sent {
    (INSTALL_OK, days_ago, expires_in, None)
}

fn soon(days_ago: f64, expires_in: i64) -> Sent {
    (EXPIRE_SOON, days_ago, Some(expires_in), None)
}

fn fail(days_ago: f64, error: &'static str) -> Sent {
    (INSTALL_FAIL, days_ago, None, Some(error))
}

/// Every event of a certificate seen as changing it, in order, none late.
fn plain(events: usize) -> Vec<(bool, bool)> {
    vec![(true, false); events]
}

const NXDOMAIN: &str = "Let's Encrypt challenge failed: DNS problem: NXDOMAIN looking up A for \
                        admin.shopfront.io - check that a DNS record exists for this domain";
const RATE_LIMIT: &str = "Let's Encrypt rate limit: too many certificates (5) already issued for \
                          this exact set of domains in the last 168 hours: \
                          hooks.example-pay.com,webhooks.example-pay.com; see \
                          https://letsencrypt.org/docs/rate-limits/";
const CHAIN: &str = "Certificate validation failed: the certificate chain is incomplete \
                     (intermediate certificate missing)";
const TIMEOUT: &str = "Certificate installation failed: timed out after 120 s connecting to \
                       server web-2 (10.0.3.17) to deploy the certificate";
const SHOPFRONT_RENEWAL: &str = "Let's Encrypt challenge failed: Timeout during connect (likely firewall problem) for \
     www.shopfront.io";

fn specs(hostile: bool) -> Vec<Spec> {
    let mut specs = vec![
        // Stack 20481: Shopfront production.
        Spec {
            stack: 20481,
            name: HISTORY_NAME,
            server_names: "shopfront.io,www.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![
                ok(80.0, Some(10)),
                soon(19.0, 10),
                fail(3.0, SHOPFRONT_RENEWAL),
                ok(2.0, Some(88)),
                // Late: sent before the renewal, delivered after it.
                soon(10.0, 10),
            ],
            state: "ok",
            // Oldest first: the first install, an expire.soon that repeats what is
            // known, the failure, the renewal, the late one that changes nothing.
            history: vec![
                (true, false),
                (false, false),
                (true, false),
                (true, false),
                (false, true),
            ],
        },
        Spec {
            stack: 20481,
            name: "checkout.shopfront.io",
            server_names: "checkout.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(86.0, Some(4)), soon(1.0, 4)],
            state: "critical",
            history: vec![(true, false), (false, false)],
        },
        Spec {
            stack: 20481,
            name: "cdn.shopfront.io",
            server_names: "cdn.shopfront.io,static.shopfront.io,assets.shopfront.io".to_owned(),
            lets_encrypt: false,
            events: vec![ok(165.0, Some(200))],
            state: "ok",
            history: plain(1),
        },
        Spec {
            stack: 20481,
            name: "admin.shopfront.io",
            server_names: "admin.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(30.0, Some(60)), fail(0.25, NXDOMAIN)],
            state: "failing",
            history: plain(2),
        },
        Spec {
            stack: 20481,
            name: "status.shopfront.io",
            server_names: "status.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(45.0, Some(45))],
            state: "ok",
            history: plain(1),
        },
        // Stack 20517: Shopfront staging.
        Spec {
            stack: 20517,
            name: "staging.shopfront.io",
            server_names: "staging.shopfront.io,*.staging.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(78.0, Some(12)), soon(1.0, 12)],
            state: "warning",
            history: vec![(true, false), (false, false)],
        },
        Spec {
            stack: 20517,
            name: "preview.shopfront.io",
            server_names: "preview.shopfront.io,pr.preview.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(92.0, Some(-2)), soon(10.0, -2)],
            state: "expired",
            history: vec![(true, false), (false, false)],
        },
        Spec {
            stack: 20517,
            name: "qa.shopfront.io",
            server_names: "qa.shopfront.io".to_owned(),
            lets_encrypt: true,
            events: vec![ok(1.0, None)],
            state: "unknown",
            history: plain(1),
        },
        Spec {
            stack: 20517,
            name: "legacy-staging",
            server_names: "old-staging.shopfront.io,legacy.shopfront.io".to_owned(),
            lets_encrypt: false,
            events: vec![ok(400.0, Some(-40))],
            state: "expired",
            history: plain(1),
        },
        // Stack 21033: Billing API.
        Spec {
            stack: 21033,
            name: "billing.example-pay.com",
            server_names: "billing.example-pay.com".to_owned(),
            lets_encrypt: false,
            events: vec![ok(55.0, Some(310))],
            state: "ok",
            history: plain(1),
        },
        Spec {
            stack: 21033,
            name: "api.example-pay.com",
            server_names: "api.example-pay.com,api-eu.example-pay.com,api-us.example-pay.com"
                .to_owned(),
            lets_encrypt: false,
            events: vec![ok(346.0, Some(19))],
            state: "warning",
            history: plain(1),
        },
        Spec {
            stack: 21033,
            name: "webhooks.example-pay.com",
            server_names: "webhooks.example-pay.com,hooks.example-pay.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(65.0, Some(25)), fail(1.0, RATE_LIMIT)],
            state: "failing",
            history: plain(2),
        },
        Spec {
            stack: 21033,
            name: "invoices.example-pay.com",
            server_names: "invoices.example-pay.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(85.0, Some(5)), fail(4.0, CHAIN), ok(3.0, Some(87))],
            state: "ok",
            history: plain(3),
        },
        Spec {
            stack: 21033,
            name: "sandbox.example-pay.com",
            server_names: "sandbox.example-pay.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(89.0, Some(1))],
            state: "critical",
            history: plain(1),
        },
        // Stack 22760: marketing sites.
        Spec {
            stack: 22760,
            name: "www.example-marketing.com",
            server_names: "example-marketing.com,www.example-marketing.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(29.0, Some(61))],
            state: "ok",
            history: plain(1),
        },
        Spec {
            stack: 22760,
            name: "blog.example-marketing.com",
            server_names: "blog.example-marketing.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(82.0, Some(8))],
            state: "warning",
            history: plain(1),
        },
        Spec {
            stack: 22760,
            name: "landing-2024",
            server_names: "spring-sale.example-marketing.com".to_owned(),
            lets_encrypt: false,
            events: vec![ok(365.0, Some(-1))],
            state: "expired",
            history: plain(1),
        },
        Spec {
            stack: 22760,
            name: "events.example-marketing.com",
            server_names: "events.example-marketing.com".to_owned(),
            lets_encrypt: true,
            // Never installed: no expiry known, and failing.
            events: vec![fail(0.1, TIMEOUT)],
            state: "failing",
            history: plain(1),
        },
        Spec {
            stack: 22760,
            name: "newsletter.example-marketing.com",
            server_names: "newsletter.example-marketing.com,news.example-marketing.com".to_owned(),
            lets_encrypt: true,
            events: vec![ok(84.0, Some(6))],
            state: "critical",
            history: plain(1),
        },
        // Stack 23901: internal tools.
        Spec {
            stack: 23901,
            name: "grafana.internal-tools.net",
            server_names: "grafana.internal-tools.net".to_owned(),
            lets_encrypt: true,
            events: vec![ok(57.0, Some(33))],
            state: "ok",
            history: plain(1),
        },
        Spec {
            stack: 23901,
            name: "vault.internal-tools.net",
            server_names: "vault.internal-tools.net,vault-standby.internal-tools.net".to_owned(),
            lets_encrypt: false,
            events: vec![ok(350.0, Some(15))],
            state: "warning",
            history: plain(1),
        },
        Spec {
            stack: 23901,
            name: "ci.internal-tools.net",
            server_names: "ci.internal-tools.net,runners.ci.internal-tools.net".to_owned(),
            lets_encrypt: true,
            events: vec![ok(32.0, Some(58))],
            state: "ok",
            history: plain(1),
        },
        Spec {
            stack: 23901,
            name: "sentry.internal-tools.net",
            server_names: "sentry.internal-tools.net".to_owned(),
            lets_encrypt: true,
            events: vec![ok(0.5, None)],
            state: "unknown",
            history: plain(1),
        },
        Spec {
            stack: 23901,
            name: "wiki.internal-tools.net",
            server_names: "wiki.internal-tools.net".to_owned(),
            lets_encrypt: true,
            // 21.5 days left: just `ok`.
            events: vec![ok(69.0, Some(21))],
            state: "ok",
            history: plain(1),
        },
    ];
    if hostile {
        specs.push(Spec {
            stack: 22760,
            name: HOSTILE_IMG,
            server_names: format!("{HOSTILE_DOMAIN},promo.example-marketing.com"),
            lets_encrypt: true,
            events: vec![ok(10.0, Some(100))],
            state: "ok",
            history: plain(1),
        });
        specs.push(Spec {
            stack: 23901,
            name: HOSTILE_SCRIPT,
            server_names: "tools.internal-tools.net".to_owned(),
            lets_encrypt: false,
            events: vec![ok(20.0, Some(70)), fail(0.2, HOSTILE_ERROR)],
            state: "failing",
            history: plain(2),
        });
    }
    specs
}

/// Seeds the exporter listening on `addr` (the in-process `TestServer` or the child
/// `Exporter`) with the fleet, plus the two hostile certificates when `hostile`. Every
/// delivery must be acknowledged with 200.
pub async fn seed(addr: SocketAddr, hostile: bool) -> Fleet {
    let now = chrono::Utc::now().timestamp();
    let path = format!("/webhook/{TOKEN}");
    let mut certificates = Vec::new();
    let mut deliveries = 0;
    for spec in specs(hostile) {
        let mut expiry = None;
        let mut expiry_ts = i64::MIN;
        let mut error = None;
        let mut install_ts = i64::MIN;
        for &(kind, days_ago, expires_in, message) in &spec.events {
            let ts = now - (days_ago * DAY as f64) as i64;
            let mut extra = json!({
                "server_names": spec.server_names,
                "lets_encrypt": spec.lets_encrypt,
                "status": if kind == INSTALL_FAIL { "failed" } else { "installed" },
                "created_at": rfc3339(now - 400 * DAY),
                "updated_at": rfc3339(ts),
            });
            if let Some(message) = message {
                extra["error_message"] = Value::from(message);
            }
            if let Some(days) = expires_in {
                let at = now + days * DAY + DAY / 2;
                extra["cert_expiry"] = Value::from(rfc3339(at));
                if kind == EXPIRE_SOON {
                    extra["days_until_expiry"] = Value::from((at - ts) / DAY);
                }
                if ts > expiry_ts {
                    (expiry, expiry_ts) = (Some(at), ts);
                }
            }
            if kind != EXPIRE_SOON && ts > install_ts {
                install_ts = ts;
                error = message.map(str::to_owned);
            }
            let body = payload(kind, ts, spec.stack, spec.name, extra);
            let reply = request(addr, "POST", &path, &[], &body).await;
            assert_eq!(
                reply.status, 200,
                "seeding {} on {}: {}",
                spec.name, spec.stack, reply.body
            );
            deliveries += 1;
        }
        assert_eq!(spec.history.len(), spec.events.len(), "{}", spec.name);
        assert_eq!(
            derived_state(expiry, error.is_some(), now),
            spec.state,
            "the fleet's own expectation for {}",
            spec.name
        );
        let history = spec
            .events
            .iter()
            .zip(&spec.history)
            .rev()
            .map(
                |(&(event_type, ..), &(changed, out_of_order))| ExpectedEvent {
                    event_type,
                    changed,
                    out_of_order,
                },
            )
            .collect();
        certificates.push(Seeded {
            stack: spec.stack,
            name: spec.name.to_owned(),
            domains: spec
                .server_names
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            state: spec.state,
            expiry,
            days_left: expiry.map(|at| (at - now).div_euclid(DAY)),
            issuer: if spec.lets_encrypt {
                "Let's Encrypt"
            } else {
                "manual"
            },
            error,
            history,
            hostile: spec.hostile_name(),
        });
    }
    Fleet {
        now,
        certificates,
        deliveries,
    }
}

impl Spec {
    fn hostile_name(&self) -> bool {
        self.name == HOSTILE_IMG || self.name == HOSTILE_SCRIPT
    }
}

/// The state the view must compute from what was sent (checks the hand-written ones).
fn derived_state(expiry: Option<i64>, failing: bool, now: i64) -> &'static str {
    match expiry.map(|at| at - now) {
        Some(left) if left <= 0 => "expired",
        _ if failing => "failing",
        None => "unknown",
        Some(left) if left < 7 * DAY => "critical",
        Some(left) if left < 21 * DAY => "warning",
        Some(_) => "ok",
    }
}

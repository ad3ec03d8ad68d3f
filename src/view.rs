//! The read model: what the JSON API (and, later, the certificates page) shows about
//! each certificate, computed from the state at request time. Pure: no I/O, no HTTP.
//!
//! One state per certificate, for filtering and badges, by this precedence:
//! `expired` > `failing` > `critical` > `warning` > `ok` > `unknown`. An expired
//! certificate is an outage whatever its install says; a failing install is next,
//! because it is why a certificate that still has days left will not be renewed (the
//! expiry class stays visible beside it, as `expiry_state`). The thresholds are the
//! alerts': expired at 0 seconds left or fewer, critical under 7 days, warning under 21
//! days (exactly 7 days left is `warning`, exactly 21 is `ok`).
//!
//! Lists sort by time left, the soonest (the longest expired) first, certificates of
//! unknown expiry last; ties keep the state's (stack, name) order.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use crate::state::Certificate;

pub(crate) const SECONDS_PER_DAY: f64 = 86_400.0;

/// Fewer days left than this is `critical`.
pub const CRITICAL_DAYS: f64 = 7.0;

/// Fewer days left than this is `warning`.
pub const WARNING_DAYS: f64 = 21.0;

/// The one state of a certificate, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    /// The expiry time has been reached.
    Expired,
    /// The newest install event (or API observation) says the install failed.
    Failing,
    /// Fewer than 7 days left.
    Critical,
    /// Fewer than 21 days left.
    Warning,
    /// 21 days or more left.
    Ok,
    /// No event or observation has given an expiry yet.
    Unknown,
}

impl CertState {
    /// Every state, in precedence order.
    pub const ALL: [CertState; 6] = [
        CertState::Expired,
        CertState::Failing,
        CertState::Critical,
        CertState::Warning,
        CertState::Ok,
        CertState::Unknown,
    ];

    /// The name used in the API (`state` field and parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Expired => "expired",
            CertState::Failing => "failing",
            CertState::Critical => "critical",
            CertState::Warning => "warning",
            CertState::Ok => "ok",
            CertState::Unknown => "unknown",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<CertState> {
        CertState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// What the expiry alone says, at Unix time `now`: never `Failing`.
    pub fn of_expiry(expiry: Option<f64>, now: f64) -> CertState {
        let Some(expiry) = expiry else {
            return CertState::Unknown;
        };
        let left = expiry - now;
        if left <= 0.0 {
            CertState::Expired
        } else if left < CRITICAL_DAYS * SECONDS_PER_DAY {
            CertState::Critical
        } else if left < WARNING_DAYS * SECONDS_PER_DAY {
            CertState::Warning
        } else {
            CertState::Ok
        }
    }

    /// The state of `cert` at Unix time `now`, by the precedence rule.
    pub fn of(cert: &Certificate, now: f64) -> CertState {
        let expiry = CertState::of_expiry(cert.expiry, now);
        if cert.install_failing && expiry != CertState::Expired {
            CertState::Failing
        } else {
            expiry
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unix time `ts` as RFC 3339 in UTC, to the second (`2024-03-01T00:00:00Z`); `None`
/// when out of chrono's range.
pub fn rfc3339(ts: f64) -> Option<String> {
    if !ts.is_finite() {
        return None;
    }
    DateTime::from_timestamp(ts.floor() as i64, 0)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The domains of a comma-separated `server_names`, trimmed, empty ones dropped.
pub fn domains(server_names: Option<&str>) -> Vec<String> {
    server_names
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `"true"` / `"false"` as a boolean; anything else (or nothing) is unknown.
fn flag(value: Option<&str>) -> Option<bool> {
    match value {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

/// The event counters of a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// `install.fail` events received.
    pub install_failures: u64,
    /// `install.ok` events received.
    pub install_successes: u64,
    /// `expire.soon` events received.
    pub expire_soon_notifications: u64,
}

/// One certificate as the API and the page show it, as of the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CertificateView {
    /// The `stack` label: the webhook stack id (or the API uid until it is known).
    pub stack: String,
    /// The stack's name in Cloud66, when reconciliation knows it.
    pub stack_name: Option<String>,
    /// The certificate name.
    pub name: String,
    /// The domains it covers.
    pub domains: Vec<String>,
    /// The one state, by the precedence rule (see the module docs).
    pub state: CertState,
    /// What the expiry alone says (`expired`, `critical`, `warning`, `ok`, `unknown`).
    pub expiry_state: CertState,
    /// Expiry as RFC 3339 UTC.
    pub expiry: Option<String>,
    /// Expiry as Unix seconds.
    pub expiry_unix: Option<i64>,
    /// Whole days left at the request, rounded down: negative once expired a day.
    pub days_left: Option<i64>,
    /// Let's Encrypt (`true`) or uploaded by hand (`false`).
    pub lets_encrypt: Option<bool>,
    /// Whether the intermediate certificate is included.
    pub has_intermediate_cert: Option<bool>,
    /// SSL termination as Cloud66 sent it (`true`, `false`, or its own string).
    pub ssl_termination: Option<String>,
    /// Cloud66's status string (`installed`, `failed`, ...).
    pub status: Option<String>,
    /// Whether the newest install event (or observation) was a failure.
    pub install_failing: bool,
    /// The failure's message while failing, when a webhook gave one.
    pub error_message: Option<String>,
    /// The Cloud66 event type of the newest webhook event.
    pub last_event_type: Option<String>,
    /// Payload time of the newest webhook event, RFC 3339 UTC.
    pub last_event_at: Option<String>,
    /// The same as Unix seconds.
    pub last_event_unix: Option<f64>,
    /// Seconds from the newest webhook event to the request.
    pub last_event_age_seconds: Option<i64>,
    /// When the Cloud66 API last showed this certificate, RFC 3339 UTC.
    pub observed_at: Option<String>,
    /// Event counters.
    pub counters: Counters,
}

impl CertificateView {
    /// The view of `cert` at Unix time `now`, on the stack named `stack_name`.
    pub fn new(cert: &Certificate, now: f64, stack_name: Option<&str>) -> Self {
        let info = &cert.info;
        CertificateView {
            stack: cert.stack.clone(),
            stack_name: stack_name.map(str::to_owned),
            name: cert.name.clone(),
            domains: domains(info.server_names.as_deref()),
            state: CertState::of(cert, now),
            expiry_state: CertState::of_expiry(cert.expiry, now),
            expiry: cert.expiry.and_then(rfc3339),
            expiry_unix: cert.expiry.map(|e| e.floor() as i64),
            days_left: cert
                .expiry
                .map(|e| ((e - now) / SECONDS_PER_DAY).floor() as i64),
            lets_encrypt: flag(info.lets_encrypt.as_deref()),
            has_intermediate_cert: flag(info.has_intermediate_cert.as_deref()),
            ssl_termination: info.ssl_termination.clone(),
            status: info.status.clone(),
            install_failing: cert.install_failing,
            error_message: cert.error_message.clone(),
            last_event_type: cert
                .last_event_type
                .map(|kind| kind.event_type().to_owned()),
            last_event_at: cert.last_event_ts.and_then(rfc3339),
            last_event_unix: cert.last_event_ts,
            last_event_age_seconds: cert.last_event_ts.map(|ts| (now - ts).floor() as i64),
            observed_at: cert.observed_ts.and_then(rfc3339),
            counters: Counters {
                install_failures: cert.install_failures,
                install_successes: cert.install_successes,
                expire_soon_notifications: cert.expire_soon_notifications,
            },
        }
    }
}

/// Everything known about one certificate: its view, and when each aspect was last
/// set (payload timestamp, or fetch time of an API observation).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CertificateDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub view: CertificateView,
    /// When the expiry was last set, RFC 3339 UTC.
    pub expiry_set_at: Option<String>,
    /// When the install outcome was last set, RFC 3339 UTC.
    pub install_set_at: Option<String>,
    /// When the descriptive fields (domains, status, ...) were last set, RFC 3339 UTC.
    pub info_set_at: Option<String>,
}

impl CertificateDetail {
    /// The detail of `cert` at Unix time `now`, on the stack named `stack_name`.
    pub fn new(cert: &Certificate, now: f64, stack_name: Option<&str>) -> Self {
        CertificateDetail {
            view: CertificateView::new(cert, now, stack_name),
            expiry_set_at: cert.expiry_event_ts.and_then(rfc3339),
            install_set_at: cert.install_event_ts.and_then(rfc3339),
            info_set_at: cert.info_ts.and_then(rfc3339),
        }
    }
}

/// Stack names by `stack` label, from the Cloud66 API reconciliation's directory.
pub type StackNames = HashMap<String, String>;

/// Which certificates a list shows, and which page of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this stack: its label exactly, or its Cloud66 name (ASCII case ignored).
    pub stack: Option<String>,
    /// Only certificates in this state.
    pub state: Option<CertState>,
    /// Only certificates whose name or one of whose domains contains this, case
    /// ignored.
    pub q: Option<String>,
    /// At most this many (all when `None`).
    pub limit: Option<usize>,
    /// After skipping this many.
    pub offset: usize,
}

/// One page of a filtered, sorted list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listing {
    /// Certificates matching the filter, before paging.
    pub total: usize,
    /// The offset applied.
    pub offset: usize,
    /// The limit applied, if any.
    pub limit: Option<usize>,
    /// The page, sorted.
    pub certificates: Vec<CertificateView>,
}

impl Filter {
    /// Whether `cert`, in state `state`, passes the filter (paging aside). `q` must be
    /// lowercase already.
    fn matches(&self, cert: &Certificate, state: CertState, names: &StackNames) -> bool {
        if self.state.is_some_and(|wanted| wanted != state) {
            return false;
        }
        if let Some(stack) = &self.stack
            && cert.stack != *stack
            && !names
                .get(&cert.stack)
                .is_some_and(|name| name.eq_ignore_ascii_case(stack))
        {
            return false;
        }
        match &self.q {
            None => true,
            Some(q) => {
                let contains = |text: &str| text.to_lowercase().contains(q.as_str());
                contains(&cert.name)
                    || (cert.info.server_names.as_deref())
                        .is_some_and(|names| names.split(',').any(|d| contains(d.trim())))
            }
        }
    }

    /// The page of `certs` (in (stack, name) order) this filter selects, sorted, as of
    /// Unix time `now`. Views are built only for the page.
    pub fn apply(&self, certs: &[Arc<Certificate>], now: f64, names: &StackNames) -> Listing {
        let lowered = Filter {
            q: self.q.as_ref().map(|q| q.to_lowercase()),
            ..self.clone()
        };
        let mut selected: Vec<&Arc<Certificate>> = certs
            .iter()
            .filter(|cert| lowered.matches(cert, CertState::of(cert, now), names))
            .collect();
        // Stable: equal expiries keep (stack, name) order.
        selected.sort_by(|a, b| match (a.expiry, b.expiry) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let total = selected.len();
        let certificates = selected
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|cert| CertificateView::new(cert, now, names.get(&cert.stack).map(String::as_str)))
            .collect();
        Listing {
            total,
            offset: self.offset,
            limit: self.limit,
            certificates,
        }
    }
}

mod summary;

pub use summary::{Overview, Soonest, StateCounts, Summary};

#[cfg(test)]
mod tests;

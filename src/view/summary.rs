//! The fleet at a glance: how many certificates are in each state, and which expires
//! next. Shared by the status page's summary and `GET /api/v1/status`.

use std::sync::Arc;

use serde::Serialize;

use super::{CertState, Filter, Listing, SECONDS_PER_DAY, StackNames, rfc3339};
use crate::state::Certificate;

/// Certificates per state, each counted once, in its most urgent state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Expired.
    pub expired: usize,
    /// Install failing (and not expired).
    pub failing: usize,
    /// Under 7 days left.
    pub critical: usize,
    /// Under 21 days left.
    pub warning: usize,
    /// 21 days or more left.
    pub ok: usize,
    /// Expiry not known yet.
    pub unknown: usize,
}

impl StateCounts {
    /// The count of `state`.
    pub fn get(&self, state: CertState) -> usize {
        match state {
            CertState::Expired => self.expired,
            CertState::Failing => self.failing,
            CertState::Critical => self.critical,
            CertState::Warning => self.warning,
            CertState::Ok => self.ok,
            CertState::Unknown => self.unknown,
        }
    }

    fn add(&mut self, state: CertState) {
        let slot = match state {
            CertState::Expired => &mut self.expired,
            CertState::Failing => &mut self.failing,
            CertState::Critical => &mut self.critical,
            CertState::Warning => &mut self.warning,
            CertState::Ok => &mut self.ok,
            CertState::Unknown => &mut self.unknown,
        };
        *slot += 1;
    }

    /// All certificates counted.
    pub fn total(&self) -> usize {
        CertState::ALL.iter().map(|&state| self.get(state)).sum()
    }
}

/// The certificate that expires next (of those not expired yet).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Soonest {
    /// Its `stack` label.
    pub stack: String,
    /// The stack's Cloud66 name, when known.
    pub stack_name: Option<String>,
    /// Its name.
    pub name: String,
    /// Its expiry, RFC 3339 UTC.
    pub expiry: Option<String>,
    /// The same as Unix seconds.
    pub expiry_unix: i64,
    /// Whole days left, rounded down.
    pub days_left: i64,
}

/// Every certificate's state, counted, and the next expiry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Certificates tracked.
    pub certificates: usize,
    /// Per state.
    pub states: StateCounts,
    /// The next to expire, if any is not expired yet.
    pub soonest: Option<Soonest>,
}

impl Summary {
    /// The summary of `certs` at Unix time `now`.
    pub fn of(certs: &[Arc<Certificate>], now: f64, names: &StackNames) -> Summary {
        let mut states = StateCounts::default();
        let mut soonest: Option<(&Certificate, f64)> = None;
        for cert in certs {
            states.add(CertState::of(cert, now));
            if let Some(expiry) = cert.expiry
                && expiry > now
                && soonest.is_none_or(|(_, best)| expiry < best)
            {
                soonest = Some((cert, expiry));
            }
        }
        Summary {
            certificates: certs.len(),
            states,
            soonest: soonest.map(|(cert, expiry)| Soonest {
                stack: cert.stack.clone(),
                stack_name: names.get(&cert.stack).cloned(),
                name: cert.name.clone(),
                expiry: rfc3339(expiry),
                expiry_unix: expiry.floor() as i64,
                days_left: ((expiry - now) / SECONDS_PER_DAY).floor() as i64,
            }),
        }
    }
}

/// What the status page shows of the fleet for one filter: the summary of every
/// certificate, the counts per state under the filter's `q` and `stack`, and the page
/// of rows the filter selects.
#[derive(Clone, Debug, PartialEq)]
pub struct Overview {
    /// Every certificate, counted.
    pub summary: Summary,
    /// Per state, under the filter's `q` and `stack`.
    pub counts: StateCounts,
    /// The rows.
    pub listing: Listing,
}

impl Overview {
    /// The overview of `certs` for `filter` at Unix time `now`.
    pub fn of(certs: &[Arc<Certificate>], filter: &Filter, now: f64, names: &StackNames) -> Self {
        Overview {
            summary: Summary::of(certs, now, names),
            counts: filter.state_counts(certs, now, names),
            listing: filter.apply(certs, now, names),
        }
    }
}

impl Filter {
    /// How many of `certs` pass this filter in each state, ignoring its own `state` and
    /// paging: the counts beside the state links of a filtered list.
    pub fn state_counts(
        &self,
        certs: &[Arc<Certificate>],
        now: f64,
        names: &StackNames,
    ) -> StateCounts {
        let any_state = Filter {
            state: None,
            q: self.q.as_ref().map(|q| q.to_lowercase()),
            ..self.clone()
        };
        let mut counts = StateCounts::default();
        for cert in certs {
            let state = CertState::of(cert, now);
            if any_state.matches(cert, state, names) {
                counts.add(state);
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_700_000_000.0;
    const DAY: f64 = SECONDS_PER_DAY;

    fn cert(stack: &str, name: &str, expiry: Option<f64>, failing: bool) -> Arc<Certificate> {
        let mut cert = Certificate::new(stack, name);
        cert.expiry = expiry;
        cert.install_failing = failing;
        cert.info.server_names = Some(format!("{name}.example.com"));
        Arc::new(cert)
    }

    fn fleet() -> Vec<Arc<Certificate>> {
        vec![
            cert("1", "gone", Some(NOW - DAY), true),
            cert("1", "broken", Some(NOW + 40.0 * DAY), true),
            cert("1", "soon", Some(NOW + 2.5 * DAY), false),
            cert("2", "later", Some(NOW + 10.0 * DAY), false),
            cert("2", "fine", Some(NOW + 50.0 * DAY), false),
            cert("2", "blind", None, false),
            cert("2", "fine-too", Some(NOW + 80.0 * DAY), false),
        ]
    }

    #[test]
    fn counts_each_certificate_once_in_its_most_urgent_state() {
        let names = StackNames::from([("1".to_owned(), "Shop".to_owned())]);
        let summary = Summary::of(&fleet(), NOW, &names);
        assert_eq!(summary.certificates, 7);
        let expected = StateCounts {
            expired: 1,
            failing: 1,
            critical: 1,
            warning: 1,
            ok: 2,
            unknown: 1,
        };
        assert_eq!(summary.states, expected);
        assert_eq!(summary.states.total(), 7);
        let soonest = summary.soonest.expect("one is not expired");
        // The expired one is not "next"; the failing one is not sooner.
        assert_eq!(
            (soonest.stack.as_str(), soonest.name.as_str()),
            ("1", "soon")
        );
        assert_eq!(soonest.stack_name.as_deref(), Some("Shop"));
        assert_eq!(soonest.days_left, 2);
        assert_eq!(soonest.expiry_unix, (NOW + 2.5 * DAY) as i64);
        let empty = Summary::of(&[], NOW, &names);
        assert_eq!((empty.certificates, empty.soonest), (0, None));
        assert_eq!(empty.states, StateCounts::default());
    }

    #[test]
    fn state_counts_follow_the_filter_but_not_its_state_or_paging() {
        let names = StackNames::new();
        let filter = Filter {
            stack: Some("2".into()),
            state: Some(CertState::Ok),
            limit: Some(1),
            offset: 3,
            ..Filter::default()
        };
        let counts = filter.state_counts(&fleet(), NOW, &names);
        assert_eq!((counts.ok, counts.warning, counts.unknown), (2, 1, 1));
        assert_eq!(counts.total(), 4);
        let by_domain = Filter {
            q: Some("FINE".into()),
            ..Filter::default()
        };
        assert_eq!(by_domain.state_counts(&fleet(), NOW, &names).total(), 2);
    }
}

use super::*;

const NOW: f64 = 1_700_000_000.0;
const DAY: f64 = 86_400.0;

fn cert(stack: &str, name: &str, days: Option<f64>) -> Certificate {
    let mut cert = Certificate::new(stack, name);
    cert.expiry = days.map(|d| NOW + d * DAY);
    cert.info.server_names = Some(format!("{name}.example.com, www.{name}.example.com"));
    cert
}

fn names(listing: &Listing) -> Vec<&str> {
    listing
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn expiry_states_at_every_boundary() {
    let at = |days: f64| CertState::of_expiry(Some(NOW + days * DAY), NOW);
    assert_eq!(at(-1.0), CertState::Expired);
    assert_eq!(at(0.0), CertState::Expired, "0 seconds left is expired");
    assert_eq!(at(1.0 / DAY), CertState::Critical, "one second left");
    assert_eq!(at(7.0 - 1.0 / DAY), CertState::Critical);
    assert_eq!(
        at(7.0),
        CertState::Warning,
        "exactly 7 days is not critical"
    );
    assert_eq!(at(21.0 - 1.0 / DAY), CertState::Warning);
    assert_eq!(at(21.0), CertState::Ok, "exactly 21 days is ok");
    assert_eq!(at(400.0), CertState::Ok);
    assert_eq!(CertState::of_expiry(None, NOW), CertState::Unknown);
}

#[test]
fn failing_wins_over_everything_but_expired() {
    for (days, expected) in [
        (Some(-1.0), CertState::Expired),
        (Some(3.0), CertState::Failing),
        (Some(10.0), CertState::Failing),
        (Some(90.0), CertState::Failing),
        (None, CertState::Failing),
    ] {
        let mut c = cert("1", "a", days);
        c.install_failing = true;
        assert_eq!(CertState::of(&c, NOW), expected, "{days:?}");
        let view = CertificateView::new(&c, NOW, None);
        assert_eq!(view.expiry_state, CertState::of_expiry(c.expiry, NOW));
    }
}

#[test]
fn states_parse_from_their_names_only() {
    for state in CertState::ALL {
        assert_eq!(CertState::parse(state.as_str()), Some(state));
        assert_eq!(
            serde_json::to_value(state).expect("serialises"),
            serde_json::json!(state.as_str())
        );
    }
    assert_eq!(CertState::parse("Expired"), None);
    assert_eq!(CertState::parse(""), None);
}

#[test]
fn a_view_has_every_field_computed_at_the_request() {
    let mut c = cert("42", "shop", Some(10.5));
    c.info.lets_encrypt = Some("false".into());
    c.info.has_intermediate_cert = Some("true".into());
    c.info.ssl_termination = Some("weird".into());
    c.info.status = Some("installed".into());
    c.last_event_ts = Some(NOW - 90.5);
    c.last_event_type = Some(crate::event::EventKind::ExpireSoon);
    c.expire_soon_notifications = 2;
    let view = CertificateView::new(&c, NOW, Some("Shop production"));
    let json = serde_json::to_value(&view).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({
            "stack": "42",
            "stack_name": "Shop production",
            "name": "shop",
            "domains": ["shop.example.com", "www.shop.example.com"],
            "state": "warning",
            "expiry_state": "warning",
            "expiry": "2023-11-25T10:13:20Z",
            "expiry_unix": 1_700_907_200_i64,
            "days_left": 10,
            "lets_encrypt": false,
            "has_intermediate_cert": true,
            "ssl_termination": "weird",
            "status": "installed",
            "install_failing": false,
            "error_message": null,
            "last_event_type": "ssl_certificate.expire.soon",
            "last_event_at": "2023-11-14T22:11:49Z",
            "last_event_unix": NOW - 90.5,
            "last_event_age_seconds": 90,
            "observed_at": null,
            "counters": {
                "install_failures": 0,
                "install_successes": 0,
                "expire_soon_notifications": 2
            }
        })
    );
    // Days left round down, also past expiry.
    let expired = CertificateView::new(&cert("1", "x", Some(-0.5)), NOW, None);
    assert_eq!(expired.days_left, Some(-1));
    let unknown = CertificateView::new(&cert("1", "y", None), NOW, None);
    assert_eq!((unknown.expiry, unknown.days_left), (None, None));
    assert_eq!(unknown.last_event_type, None, "no webhook event yet");
}

#[test]
fn domains_are_trimmed_and_empty_ones_dropped() {
    assert_eq!(domains(Some(" a.com,,b.com ,")), ["a.com", "b.com"]);
    assert!(domains(None).is_empty());
}

fn fleet() -> Vec<Arc<Certificate>> {
    // In (stack, name) order, as the state's snapshot gives them.
    let mut failing = cert("2", "failing", Some(60.0));
    failing.install_failing = true;
    failing.error_message = Some("DNS challenge timed out".into());
    vec![
        Arc::new(cert("1", "ok-later", Some(90.0))),
        Arc::new(cert("1", "unknown-b", None)),
        Arc::new(cert("1", "warning", Some(10.0))),
        Arc::new(cert("2", "critical", Some(3.0))),
        Arc::new(cert("2", "expired", Some(-2.0))),
        Arc::new(failing),
        Arc::new(cert("2", "ok-tie-a", Some(30.0))),
        Arc::new(cert("3", "ok-tie-b", Some(30.0))),
        Arc::new(cert("3", "unknown-a", None)),
    ]
}

#[test]
fn lists_sort_by_time_left_expired_first_unknown_last_ties_by_key() {
    let listing = Filter::default().apply(&fleet(), NOW, &StackNames::new());
    assert_eq!(listing.total, 9);
    assert_eq!(
        names(&listing),
        [
            "expired",
            "critical",
            "warning",
            "ok-tie-a",
            "ok-tie-b",
            "failing",
            "ok-later",
            "unknown-b",
            "unknown-a"
        ]
    );
}

#[test]
fn filters_by_state_stack_label_or_name_and_text() {
    let certs = fleet();
    let stack_names = StackNames::from([("2".to_owned(), "Shop Production".to_owned())]);
    let list = |filter: Filter| {
        let listing = filter.apply(&certs, NOW, &stack_names);
        names(&listing)
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    let by_state = |state| Filter {
        state: Some(state),
        ..Filter::default()
    };
    assert_eq!(list(by_state(CertState::Failing)), ["failing"]);
    assert_eq!(list(by_state(CertState::Expired)), ["expired"]);
    assert_eq!(
        list(by_state(CertState::Ok)),
        ["ok-tie-a", "ok-tie-b", "ok-later"]
    );
    assert_eq!(
        list(by_state(CertState::Unknown)),
        ["unknown-b", "unknown-a"]
    );
    let by_stack = |stack: &str| Filter {
        stack: Some(stack.into()),
        ..Filter::default()
    };
    assert_eq!(list(by_stack("3")), ["ok-tie-b", "unknown-a"]);
    assert_eq!(
        list(by_stack("shop production")),
        list(by_stack("2")),
        "the Cloud66 name, case ignored, is the same stack"
    );
    assert!(list(by_stack("Shop")).is_empty(), "no partial stack names");
    let by_text = |q: &str| Filter {
        q: Some(q.into()),
        ..Filter::default()
    };
    assert_eq!(list(by_text("TIE")), ["ok-tie-a", "ok-tie-b"]);
    assert_eq!(list(by_text("www.CRITICAL.example")), ["critical"]);
    assert!(
        list(by_text("critical.example.com,")).is_empty(),
        "a domain match stays within one domain"
    );
    let combined = Filter {
        stack: Some("2".into()),
        state: Some(CertState::Ok),
        q: Some("tie".into()),
        ..Filter::default()
    };
    assert_eq!(list(combined), ["ok-tie-a"]);
}

#[test]
fn pages_after_sorting_and_count_the_whole_match() {
    let certs = fleet();
    let page = |offset, limit| {
        Filter {
            offset,
            limit,
            ..Filter::default()
        }
        .apply(&certs, NOW, &StackNames::new())
    };
    let second = page(2, Some(3));
    assert_eq!((second.total, second.offset, second.limit), (9, 2, Some(3)));
    assert_eq!(names(&second), ["warning", "ok-tie-a", "ok-tie-b"]);
    assert!(page(9, None).certificates.is_empty());
    assert!(page(100, Some(5)).certificates.is_empty());
    assert!(page(0, Some(0)).certificates.is_empty());
    assert_eq!(page(0, Some(0)).total, 9);
    assert_eq!(names(&page(7, Some(10))), ["unknown-b", "unknown-a"]);
}

#[test]
fn times_out_of_range_have_no_date() {
    assert_eq!(rfc3339(f64::NAN), None);
    assert_eq!(rfc3339(1e20), None);
    assert_eq!(rfc3339(0.9).as_deref(), Some("1970-01-01T00:00:00Z"));
}

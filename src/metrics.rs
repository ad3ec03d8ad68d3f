//! The exporter's metrics: its own registry for self-observation, and the text that a
//! scrape returns (per-certificate families from `exposition`, then the registry).

use std::sync::{Arc, Mutex, PoisonError};

use once_cell::sync::OnceCell;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::event::EventKind;
use crate::exposition;
use crate::state::Certificate;

/// The `event_type` label for anything that is not one of the three SSL events,
/// including requests whose body was never read (unauthorized, too large).
pub const OTHER_EVENT_TYPE: &str = "other";

/// Values of the `event_type` label: the three SSL event types and `other`.
const EVENT_TYPES: usize = EventKind::ALL.len() + 1;

/// Values of the `result` label (`OverLimit` is the last variant).
const RESULTS: usize = WebhookResult::OverLimit as usize + 1;

/// How a webhook call ended: the `result` label of `webhooks_received_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookResult {
    /// Committed to storage and applied.
    Accepted,
    /// The exact same delivery was already stored; nothing counted again.
    Duplicate,
    /// A Cloud66 event this exporter does not track.
    Ignored,
    /// Missing or wrong token.
    Unauthorized,
    /// The body was malformed or a field we rely on was wrong.
    Invalid,
    /// The body exceeded `--webhook.max-body-bytes`.
    TooLarge,
    /// The event could not be committed to storage.
    Unavailable,
    /// A new certificate beyond `--storage.max-certificates`.
    OverLimit,
}

impl WebhookResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::Invalid => "invalid",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::Unavailable => "unavailable",
            WebhookResult::OverLimit => "over_limit",
        }
    }
}

/// The last authenticated, well-formed delivery (accepted, duplicate, ignored or over
/// the limit), as the landing page and the webhook URL's page show it.
#[derive(Clone, Debug, PartialEq)]
pub struct LastDelivery {
    /// Unix time it arrived: the value of `last_webhook_timestamp_seconds`.
    pub at: f64,
    /// What it was; `None` when only its time is known, after a restart: storage keeps
    /// when the newest event arrived, not what the last delivery was.
    pub seen: Option<SeenDelivery>,
}

/// What a delivery was, for people checking the connection.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenDelivery {
    /// The `event_type` it named (cut short by the caller); `None` when it named none.
    pub event_type: Option<String>,
    /// How it ended.
    pub result: WebhookResult,
}

/// The storage writer's instruments (cheap to clone: they share their values).
#[derive(Clone)]
pub struct StorageMetrics {
    /// Time from the start of a batch's transaction to its durable commit.
    pub commit_duration: Histogram,
    /// Commits that failed (disk full, unwritable database, ...).
    pub commit_failures: IntCounter,
}

/// The last delivery, shared: `last_webhook_timestamp_seconds` and what the pages show.
#[derive(Clone)]
pub struct Deliveries {
    gauge: Gauge,
    last: Arc<Mutex<Option<LastDelivery>>>,
}

impl Deliveries {
    /// Keeps `delivery` unless a later one is already known.
    pub fn note(&self, delivery: LastDelivery) {
        // A panic elsewhere while holding the lock leaves a whole value: keep using it.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_some_and(|last| last.at > delivery.at) {
            return;
        }
        self.gauge.set(delivery.at);
        *last = Some(delivery);
    }
}

/// The instruments of the PostgreSQL log tail, registered only with PostgreSQL storage
/// (cheap to clone: they share their values).
#[derive(Clone)]
pub struct TailMetrics {
    /// `storage_tail_lag_seconds`: how far this replica's state is behind the shared
    /// event log, as the time between the arrival (`received_at`) of the newest event in
    /// the log and that of the newest event this replica has applied; 0 when caught up.
    lag: Gauge,
    /// `leader`: 1 while this replica leads the ones sharing its database.
    leader: IntGauge,
}

impl TailMetrics {
    /// Creates the instruments (at 0: caught up) and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lag = Gauge::with_opts(opts(
            "storage_tail_lag_seconds",
            "How far this replica's state is behind the shared event log: seconds between the arrival of the newest event in the log and that of the newest event applied here (0 when caught up). PostgreSQL storage only.",
        ))?;
        let leader = IntGauge::with_opts(opts(
            "leader",
            "1 on the replica that does the work done once per cluster (writing the snapshot, the Cloud66 API sync), 0 on the others. PostgreSQL storage only.",
        ))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(TailMetrics { lag, leader })
    }

    /// Shows whether this replica leads.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Sets the lag in seconds; negative or not-a-number values (clock steps between
    /// writers) are shown as 0.
    pub fn set_lag(&self, seconds: f64) {
        self.lag.set(if seconds > 0.0 { seconds } else { 0.0 });
    }
}

/// Every self-metric, registered in a registry owned by the app (not a global).
pub struct Metrics {
    /// The registry behind the self-metrics and the process metrics.
    registry: Registry,
    /// Webhook calls by event type and result.
    webhooks: IntCounterVec,
    /// The children of `webhooks`, resolved once each: looking a child up by its label
    /// values hashes them, on every request.
    webhook_children: [OnceCell<IntCounter>; EVENT_TYPES * RESULTS],
    /// Unix time of the last authenticated, well-formed webhook.
    last_webhook: Gauge,
    /// The same delivery with what it was, for the pages; moves with `last_webhook`.
    /// A plain mutex: held for a copy, never across `.await`.
    last_delivery: Arc<Mutex<Option<LastDelivery>>>,
    /// Number of tracked certificates, set at scrape time.
    certificates: IntGauge,
    /// `--storage.max-certificates`, so alerts can warn before the limit bites.
    certificates_limit: IntGauge,
    /// The storage backend in use, as its `backend` label; always 1.
    storage_info: GaugeVec,
    /// The storage writer's instruments.
    pub storage: StorageMetrics,
}

const NAMESPACE: &str = "cloud66_ssl_exporter";

/// Options of a self-metric: its name in the exporter's namespace.
pub(crate) fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

impl Metrics {
    /// Creates and registers every self-metric, with the label combinations that can
    /// occur created at zero so that `increase()` sees their first change.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let webhooks = IntCounterVec::new(
            opts(
                "webhooks_received_total",
                "Webhook calls received, by event type (the three SSL events or other) and result.",
            ),
            &["event_type", "result"],
        )?;
        let last_webhook = Gauge::with_opts(opts(
            "last_webhook_timestamp_seconds",
            "Unix time the last authenticated, well-formed webhook was received (0 if never).",
        ))?;
        let certificates =
            IntGauge::with_opts(opts("certificates", "Number of certificates tracked."))?;
        let certificates_limit = IntGauge::with_opts(opts(
            "certificates_limit",
            "Most certificates tracked (--storage.max-certificates); events for new ones beyond it are refused.",
        ))?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "storage_commit_duration_seconds",
                "Time to commit a batch of webhook events durably to storage.",
            )
            .namespace(NAMESPACE)
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let commit_failures = IntCounter::with_opts(opts(
            "storage_commit_failures_total",
            "Storage commits that failed; their webhooks were answered 503.",
        ))?;
        let build_info = GaugeVec::new(
            opts("build_info", "Build of the running exporter; always 1."),
            &["version", "revision"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::GIT_REVISION])
            .set(1.0);
        registry.register(Box::new(webhooks.clone()))?;
        registry.register(Box::new(last_webhook.clone()))?;
        registry.register(Box::new(certificates.clone()))?;
        registry.register(Box::new(certificates_limit.clone()))?;
        registry.register(Box::new(commit_duration.clone()))?;
        registry.register(Box::new(commit_failures.clone()))?;
        let storage_info = GaugeVec::new(
            opts(
                "storage_info",
                "Storage backend of this replica (sqlite or postgres); always 1.",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(build_info))?;
        // The default backend until `set_storage_backend` says otherwise, so that the
        // family is never missing.
        storage_info.with_label_values(&["sqlite"]).set(1.0);
        registry.register(Box::new(storage_info.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let metrics = Metrics {
            registry,
            webhooks,
            webhook_children: std::array::from_fn(|_| OnceCell::new()),
            last_webhook,
            last_delivery: Arc::new(Mutex::new(None)),
            certificates,
            certificates_limit,
            storage_info,
            storage: StorageMetrics {
                commit_duration,
                commit_failures,
            },
        };
        metrics.create_expected_series();
        Ok(metrics)
    }

    fn create_expected_series(&self) {
        use WebhookResult::*;
        for kind in EventKind::ALL {
            for result in [Accepted, Duplicate, Invalid, Unavailable, OverLimit] {
                self.webhooks
                    .with_label_values(&[kind.event_type(), result.as_str()]);
            }
        }
        for result in [Ignored, Unauthorized, Invalid, TooLarge, Unavailable] {
            self.webhooks
                .with_label_values(&[OTHER_EVENT_TYPE, result.as_str()]);
        }
    }

    /// Counts one webhook call. `event_type` is the label value: an SSL event type or
    /// [`OTHER_EVENT_TYPE`].
    pub fn count_webhook(&self, event_type: &str, result: WebhookResult) {
        let event = EventKind::from_event_type(event_type)
            .and_then(|kind| EventKind::ALL.iter().position(|k| *k == kind))
            .unwrap_or(EVENT_TYPES - 1);
        let label = if event == EVENT_TYPES - 1 {
            OTHER_EVENT_TYPE
        } else {
            event_type
        };
        self.webhook_children[event * RESULTS + result as usize]
            .get_or_init(|| self.webhooks.with_label_values(&[label, result.as_str()]))
            .inc();
    }

    /// The registry, for instruments registered later (the sync's, when configured).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records the configured certificate limit.
    pub fn set_certificates_limit(&self, limit: usize) {
        self.certificates_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Records the storage backend in use (`"sqlite"` or `"postgres"`): the `backend`
    /// label of `storage_info`, `sqlite` until this is called. Meant to be called once at
    /// start; a later call replaces the backend, so the family never shows two.
    pub fn set_storage_backend(&self, backend: &'static str) {
        self.storage_info.reset();
        self.storage_info.with_label_values(&[backend]).set(1.0);
    }

    /// Registers `storage_tail_lag_seconds`, which only PostgreSQL storage has (it
    /// tails the shared event log); with SQLite the family is absent. Call once.
    pub fn register_tail(&self) -> Result<TailMetrics, prometheus::Error> {
        TailMetrics::register(&self.registry)
    }

    /// Restores the time of the last delivery (read from storage at start), without
    /// knowing what it was.
    pub fn set_last_webhook(&self, at: f64) {
        self.note_delivery(LastDelivery { at, seen: None });
    }

    /// Records that an authenticated, well-formed delivery arrived at Unix time `at`,
    /// naming `event_type` (`None`: it named none) and ending with `result`.
    pub fn record_delivery(&self, at: f64, event_type: Option<&str>, result: WebhookResult) {
        let seen = SeenDelivery {
            event_type: event_type.map(str::to_owned),
            result,
        };
        self.note_delivery(LastDelivery {
            at,
            seen: Some(seen),
        });
    }

    /// Keeps `delivery` unless a later one is already known: concurrent requests may
    /// finish out of order, and the restored time must not hide a newer delivery.
    fn note_delivery(&self, delivery: LastDelivery) {
        self.deliveries().note(delivery);
    }

    /// Where deliveries other replicas accepted are noted (PostgreSQL storage): the
    /// newest of them all is this replica's last webhook too.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries {
            gauge: self.last_webhook.clone(),
            last: Arc::clone(&self.last_delivery),
        }
    }

    /// The last authenticated, well-formed delivery, if any arrived (or was restored).
    pub fn last_delivery(&self) -> Option<LastDelivery> {
        self.last_delivery
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The body of a scrape: per-certificate families as of Unix time `now`, then the
    /// self-metrics, in the text exposition format 0.0.4.
    pub fn render(&self, certs: &[Arc<Certificate>], now: f64) -> Vec<u8> {
        join(&self.render_parts(certs, now))
    }

    /// [`Metrics::render`] in the pieces it was written in (two halves, on two threads):
    /// joining them is left to the caller, which may compress the halves separately
    /// instead.
    pub fn render_parts(&self, certs: &[Arc<Certificate>], now: f64) -> Parts {
        self.certificates
            .set(i64::try_from(certs.len()).unwrap_or(i64::MAX));
        let [first, mut second] = exposition::write_certificates(certs, now)
            .map(|half| half.into_iter().map(String::into_bytes).collect::<Vec<_>>());
        let mut own = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut own) {
            tracing::error!(%error, "cannot encode self-metrics");
        }
        second.push(own);
        [first, second]
    }
}

/// A scrape body as pieces that follow each other, in two halves.
pub type Parts = [Vec<Vec<u8>>; 2];

/// The pieces of `parts` joined into one body.
pub fn join(parts: &Parts) -> Vec<u8> {
    parts
        .iter()
        .flatten()
        .map(Vec::as_slice)
        .collect::<Vec<_>>()
        .concat()
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render(&[], 0.0)).expect("utf-8")
    }

    #[test]
    fn expected_series_exist_at_zero() {
        let metrics = Metrics::new().expect("metrics");
        let text = text(&metrics);
        assert!(text.contains(
            "cloud66_ssl_exporter_webhooks_received_total{event_type=\"ssl_certificate.install.fail\",result=\"accepted\"} 0"
        ));
        assert!(text.contains(
            "cloud66_ssl_exporter_webhooks_received_total{event_type=\"other\",result=\"unauthorized\"} 0"
        ));
        assert!(text.contains("cloud66_ssl_exporter_certificates 0"));
        assert!(text.contains("cloud66_ssl_exporter_build_info{"));
    }

    #[test]
    fn counts_and_last_webhook_only_move_forward() {
        let metrics = Metrics::new().expect("metrics");
        metrics.count_webhook("other", WebhookResult::Ignored);
        metrics.count_webhook("other", WebhookResult::Ignored);
        metrics.set_last_webhook(200.0);
        metrics.set_last_webhook(100.0);
        let text = text(&metrics);
        assert!(text.contains(
            "cloud66_ssl_exporter_webhooks_received_total{event_type=\"other\",result=\"ignored\"} 2"
        ));
        assert!(text.contains("cloud66_ssl_exporter_last_webhook_timestamp_seconds 200"));
    }

    #[test]
    fn last_delivery_keeps_the_newest_with_what_it_was() {
        let metrics = Metrics::new().expect("metrics");
        assert_eq!(metrics.last_delivery(), None);
        metrics.set_last_webhook(100.0);
        assert_eq!(
            metrics.last_delivery(),
            Some(LastDelivery {
                at: 100.0,
                seen: None
            })
        );
        metrics.record_delivery(300.0, None, WebhookResult::Ignored);
        metrics.record_delivery(200.0, Some("stack.redeploy.ok"), WebhookResult::Ignored);
        let expected = LastDelivery {
            at: 300.0,
            seen: Some(SeenDelivery {
                event_type: None,
                result: WebhookResult::Ignored,
            }),
        };
        assert_eq!(metrics.last_delivery(), Some(expected));
        assert!(text(&metrics).contains("cloud66_ssl_exporter_last_webhook_timestamp_seconds 300"));
    }

    #[test]
    fn every_event_type_and_result_is_counted_under_its_labels() {
        use WebhookResult::*;
        let metrics = Metrics::new().expect("metrics");
        let results = [
            Accepted,
            Duplicate,
            Ignored,
            Unauthorized,
            Invalid,
            TooLarge,
            Unavailable,
            OverLimit,
        ];
        assert_eq!(results.len(), RESULTS, "a new result needs a slot");
        for event_type in ["ssl_certificate.install.fail", "stack.redeploy.ok"] {
            for result in results {
                metrics.count_webhook(event_type, result);
            }
        }
        let text = text(&metrics);
        for result in results {
            for label in ["ssl_certificate.install.fail", "other"] {
                let line = format!(
                    "cloud66_ssl_exporter_webhooks_received_total{{event_type=\"{label}\",result=\"{}\"}} 1",
                    result.as_str()
                );
                assert!(text.contains(&line), "{line}");
            }
        }
    }

    #[test]
    fn storage_backend_is_shown_once() {
        let metrics = Metrics::new().expect("metrics");
        assert!(text(&metrics).contains("cloud66_ssl_exporter_storage_info{backend=\"sqlite\"} 1"));
        metrics.set_storage_backend("postgres");
        let text = text(&metrics);
        assert!(text.contains("cloud66_ssl_exporter_storage_info{backend=\"postgres\"} 1"));
        assert!(!text.contains("backend=\"sqlite\""), "{text}");
    }

    #[test]
    fn tail_lag_exists_only_once_registered() {
        let metrics = Metrics::new().expect("metrics");
        assert!(!text(&metrics).contains("storage_tail_lag_seconds"));
        assert!(!text(&metrics).contains("cloud66_ssl_exporter_leader"));
        let tail = metrics.register_tail().expect("tail metrics");
        assert!(text(&metrics).contains("cloud66_ssl_exporter_storage_tail_lag_seconds 0"));
        tail.set_lag(12.5);
        assert!(text(&metrics).contains("cloud66_ssl_exporter_storage_tail_lag_seconds 12.5"));
        tail.set_lag(-3.0);
        assert!(text(&metrics).contains("cloud66_ssl_exporter_storage_tail_lag_seconds 0"));
        tail.set_lag(f64::NAN);
        assert!(text(&metrics).contains("cloud66_ssl_exporter_storage_tail_lag_seconds 0"));
        assert!(text(&metrics).contains("cloud66_ssl_exporter_leader 0"));
        tail.set_leader(true);
        assert!(text(&metrics).contains("cloud66_ssl_exporter_leader 1"));
        assert!(metrics.register_tail().is_err(), "registered twice");
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new().expect("a");
        let b = Metrics::new().expect("b");
        a.count_webhook("other", WebhookResult::TooLarge);
        assert!(text(&b).contains(
            "cloud66_ssl_exporter_webhooks_received_total{event_type=\"other\",result=\"too_large\"} 0"
        ));
    }
}

//! The sync's self-metrics, registered in the app's registry only when an API token is
//! configured (absent otherwise, so the sync alert cannot fire without one).

use std::time::Duration;

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Registry};

use super::client::Endpoint;
use super::stacks::Directory;
use crate::metrics::opts;

/// Why a sync (or part of one) failed: the `reason` label of `sync_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// 401 or 403: a bad token or one without the `public` scope.
    Unauthorized,
    /// Cloud66's `503 throttled`, or 429.
    Throttled,
    /// `--cloud66.max-requests-per-hour` reached; the sync goes on next interval.
    Budget,
    /// 5xx (or another unexpected status) after the retries.
    ServerError,
    /// No answer within the request timeout, after the retries.
    Timeout,
    /// Connection, TLS or redirect failure.
    Transport,
    /// A page that does not parse, after the retries.
    Malformed,
    /// Observations could not be committed.
    Storage,
}

impl SyncError {
    /// Every reason, so each exists at 0 from the start.
    pub const ALL: [SyncError; 8] = [
        SyncError::Unauthorized,
        SyncError::Throttled,
        SyncError::Budget,
        SyncError::ServerError,
        SyncError::Timeout,
        SyncError::Transport,
        SyncError::Malformed,
        SyncError::Storage,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncError::Unauthorized => "unauthorized",
            SyncError::Throttled => "throttled",
            SyncError::Budget => "budget",
            SyncError::ServerError => "server_error",
            SyncError::Timeout => "timeout",
            SyncError::Transport => "transport",
            SyncError::Malformed => "malformed",
            SyncError::Storage => "storage",
        }
    }
}

/// The sync's instruments (cheap to clone: they share their values).
#[derive(Clone)]
pub struct SyncMetrics {
    /// Unix time the last complete sync finished.
    pub last_success: Gauge,
    /// Wall time of each sync.
    pub duration: Histogram,
    /// API requests by endpoint pattern and status code.
    pub requests: IntCounterVec,
    /// Failures by reason.
    pub errors: IntCounterVec,
    /// Certificates seen in the last complete sync.
    pub certificates: IntGauge,
    /// One series per known stack.
    stack_info: GaugeVec,
}

impl SyncMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn register(registry: &Registry, interval: Duration) -> Result<Self, prometheus::Error> {
        let last_success = Gauge::with_opts(opts(
            "sync_last_success_timestamp_seconds",
            "Unix time the last complete Cloud66 API sync finished (0 until one has).",
        ))?;
        let interval_seconds = Gauge::with_opts(opts(
            "sync_interval_seconds",
            "Time between Cloud66 API syncs (--cloud66.sync-interval).",
        ))?;
        interval_seconds.set(interval.as_secs_f64());
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "sync_duration_seconds",
                "Wall time of each Cloud66 API sync.",
            )
            .namespace("cloud66_ssl_exporter")
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )?;
        let requests = IntCounterVec::new(
            opts(
                "sync_api_requests_total",
                "Cloud66 API requests by endpoint (route pattern) and HTTP status (`error`: no answer).",
            ),
            &["endpoint", "code"],
        )?;
        let errors = IntCounterVec::new(
            opts("sync_errors_total", "Cloud66 API sync failures by reason."),
            &["reason"],
        )?;
        let certificates = IntGauge::with_opts(opts(
            "sync_certificates",
            "Certificates seen in the last complete Cloud66 API sync.",
        ))?;
        let stack_info = GaugeVec::new(
            opts(
                "stack_info",
                "One per Cloud66 stack; always 1. `stack` is the label its certificates carry: the webhook stack id when known, else the uid.",
            ),
            &[
                "stack",
                "stack_uid",
                "stack_name",
                "environment",
                "id_source",
            ],
        )?;
        for endpoint in Endpoint::ALL {
            requests.with_label_values(&[endpoint.pattern(), "200"]);
        }
        for reason in SyncError::ALL {
            errors.with_label_values(&[reason.as_str()]);
        }
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(interval_seconds))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(certificates.clone()))?;
        registry.register(Box::new(stack_info.clone()))?;
        Ok(SyncMetrics {
            last_success,
            duration,
            requests,
            errors,
            certificates,
            stack_info,
        })
    }

    /// Counts a failure.
    pub fn error(&self, reason: SyncError) {
        self.errors.with_label_values(&[reason.as_str()]).inc();
    }

    /// Shows every stack of `directory` as `stack_info`.
    pub fn show_stacks(&self, directory: &Directory) {
        self.stack_info.reset();
        for stack in directory.records() {
            self.stack_info
                .with_label_values(&[
                    stack.label(),
                    &stack.uid,
                    &stack.name,
                    &stack.environment,
                    stack.id_source.as_str(),
                ])
                .set(1.0);
        }
    }
}

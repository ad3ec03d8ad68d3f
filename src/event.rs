//! The validated form of a webhook delivery: what the rest of the exporter relies on.
//!
//! `webhook` turns request bodies into these types; `state` and `store` consume them.
//! Nothing here does I/O.

/// The three Cloud66 SSL event types this exporter tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `ssl_certificate.expire.soon`: sent about 30 days before expiry.
    ExpireSoon,
    /// `ssl_certificate.install.ok`: a certificate was installed.
    InstallOk,
    /// `ssl_certificate.install.fail`: an installation failed.
    InstallFail,
}

impl EventKind {
    /// Every kind, in a fixed order (used to pre-create metric series).
    pub const ALL: [EventKind; 3] = [
        EventKind::ExpireSoon,
        EventKind::InstallOk,
        EventKind::InstallFail,
    ];

    /// The `event_type` string Cloud66 sends for this kind.
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::ExpireSoon => "ssl_certificate.expire.soon",
            EventKind::InstallOk => "ssl_certificate.install.ok",
            EventKind::InstallFail => "ssl_certificate.install.fail",
        }
    }

    /// The kind for a Cloud66 `event_type`, or `None` for any event we do not track.
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.event_type() == event_type)
    }

    /// Whether this is one of the two install events (which define `install_failing`).
    pub fn is_install(self) -> bool {
        matches!(self, EventKind::InstallOk | EventKind::InstallFail)
    }
}

/// The descriptive fields exposed as labels of `ssl_cert_info`, already normalised to
/// label values. `None` means the payload did not carry the field (or carried `null`),
/// so the last known value is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertInfo {
    /// Comma-separated domains, as Cloud66 sends them.
    pub server_names: Option<String>,
    /// `"true"` or `"false"`.
    pub lets_encrypt: Option<String>,
    /// `"true"` or `"false"`.
    pub has_intermediate_cert: Option<String>,
    /// `"true"`, `"false"`, or the string Cloud66 sent when it was not a boolean.
    pub ssl_termination: Option<String>,
    /// The status string (`"installed"`, `"failed"`, ...); integers are mapped to names.
    pub status: Option<String>,
}

/// One validated SSL certificate event.
#[derive(Clone, Debug, PartialEq)]
pub struct SslEvent {
    /// Which of the three SSL events this is.
    pub kind: EventKind,
    /// The payload's `timestamp` (Unix seconds when Cloud66 sent it); orders events.
    pub timestamp: f64,
    /// The stack id as a canonical decimal string (the `stack` label).
    pub stack: String,
    /// The certificate name (the `name` label); never empty.
    pub name: String,
    /// Expiry as Unix seconds: `cert_expiry` (or `expires_at`), or for `expire.soon`
    /// without one, `timestamp + days_until_expiry` days. `None` when unknown.
    pub expiry: Option<f64>,
    /// `error_message` of an `install.fail`, untruncated.
    pub error_message: Option<String>,
    /// Descriptive fields for `ssl_cert_info`.
    pub info: CertInfo,
}

/// A parsed and validated delivery.
// One exists per request and none is kept, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// An SSL event that updates a certificate.
    Ssl {
        /// The validated event.
        event: SslEvent,
        /// SHA-256 of the canonical JSON form of the body: identical deliveries (same
        /// fields and values, whatever the key order or white space) share it.
        digest: [u8; 32],
    },
    /// Anything that is not an SSL event (another Cloud66 notification, the test
    /// button's delivery, an empty body): acknowledged and ignored.
    Other {
        /// The `event_type` as sent, or `""` when the body named none (no body, no
        /// `event_type`, or one that is blank or not a string). A `String` rather than
        /// an `Option` because callers compare it with event type names directly.
        event_type: String,
    },
}

/// The `event_type` under which observations are stored beside webhook events.
pub const OBSERVATION_EVENT_TYPE: &str = "cloud66.api.ssl_certificate";

/// What Cloud66's API said about one certificate when it was fetched: applied with the
/// same "newest wins, per aspect" rule as webhooks, ordered by `fetched_at`, and never
/// counted as an event.
///
/// Stored (as JSON) in the event log, so its serialised form is a storage format: fields
/// may be added with `#[serde(default)]`, never renamed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// When the page holding it was fetched (Unix seconds): orders it against webhooks.
    pub fetched_at: f64,
    /// The `stack` label it applies to: the webhook stack id when known, else the uid.
    pub stack: String,
    /// The stack's uid in the API.
    pub stack_uid: String,
    /// The certificate's `uuid` in the API.
    pub uuid: String,
    /// The certificate name (the `name` label); never empty.
    pub name: String,
    /// `expires_at` as Unix seconds; `None` (null or absent) keeps the last known expiry.
    pub expiry: Option<f64>,
    /// `Some(true)` for status 2 (failed), `Some(false)` for 3 (installed); any other
    /// status leaves the install state as it is.
    pub install_failing: Option<bool>,
    /// Descriptive fields, normalised like a webhook's.
    pub info: CertInfo,
}

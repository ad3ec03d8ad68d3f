//! cloud66-ssl-exporter: turns Cloud66 SSL certificate webhooks into durable Prometheus
//! metrics.
//!
//! Modules, one concern each:
//! - [`config`]: flags and environment, validated into settings.
//! - [`webhook`]: parsing and validation of delivery bodies into [`event`] types (pure).
//! - [`state`]: what the newest events say about each certificate; [`view`]: what the
//!   JSON API and the pages show of it (state, days left, filters, sort, summary),
//!   computed at request time.
//! - `store`: the embedded database and its group-committing writer thread.
//! - [`metrics`]: the self-metrics registry and the scrape body; `exposition` writes
//!   the per-certificate families, `parallel` splits that work over two cores.
//! - [`tls`]: HTTPS certificate loading; `auth`: webhook token checks and redaction;
//!   `http`: routing and handlers; [`ui`]: the HTML pages (templates, stylesheet).
//! - `server`: the accept loop and graceful shutdown ([`run`]); [`signal`]: the
//!   shutdown signals; [`logging`]: log output.
//!
//! The binary parses configuration, opens the [`App`], binds a listener and calls
//! [`run`]; tests do the same on `127.0.0.1:0`.

pub mod cloud66;
pub mod config;
pub mod event;
pub mod logging;
pub mod metrics;
pub mod signal;
pub mod state;
pub mod tls;
pub mod ui;
pub mod view;
pub mod webhook;

mod app;
mod auth;
mod exposition;
mod http;
mod parallel;
mod server;
mod store;

pub use app::{App, StartError};
pub use server::{run, while_starting};
pub use store::postgres::{CopyReport, copy as copy_storage};
pub use store::{DB_FILE, History, HistoryEvent, LOCK_FILE};

/// The git revision this binary was built from (`unknown` outside a git checkout).
pub const GIT_REVISION: &str = match option_env!("GIT_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// The current Unix time in seconds: webhook arrivals, API fetches, scrapes.
pub(crate) fn now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9
}

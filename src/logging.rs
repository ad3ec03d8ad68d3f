//! Logging: one global `tracing` subscriber writing to stderr in logfmt or JSON.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber: events at `settings.level` or above, to stderr.
///
/// A subscriber that is already installed (by a test harness, say) is kept.
pub fn init(settings: &LogSettings) {
    let registry = tracing_subscriber::registry().with(LevelFilter::from_level(settings.level));
    let installed = match settings.format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_err() {
        // Goes to the subscriber that is already installed.
        tracing::debug!("a tracing subscriber is already installed; keeping it");
    }
}

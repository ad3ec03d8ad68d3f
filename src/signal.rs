//! Shutdown signals: the future `run` is given to know when to stop.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Installs the SIGINT (Ctrl-C) and SIGTERM (what `docker stop` and Kubernetes send)
/// handlers now, and returns a future that resolves on the first of them, logging which
/// one arrived. Installing eagerly matters: until a handler exists, SIGTERM kills the
/// process outright, so it must be in place before the exporter says it is listening.
///
/// A signal whose handler cannot be installed is logged and never fires, rather than
/// stopping the server at once. Must be called inside the Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        let name = tokio::select! {
            name = interrupt => name,
            name = terminate => name,
        };
        info!(signal = name, "shutting down");
    }
}

/// Registers for `kind` at once; the future resolves with `name` when it arrives.
fn listen(kind: SignalKind, name: &'static str) -> impl Future<Output = &'static str> {
    let stream = signal(kind);
    async move {
        match stream {
            Ok(mut stream) => {
                stream.recv().await;
                name
            }
            Err(e) => {
                warn!(error = %e, signal = name, "cannot listen for the signal");
                std::future::pending().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_resolves_the_future() {
        // The handlers are installed by the call itself, before any poll: without them,
        // SIGTERM would end the test process.
        let shutdown = shutdown_signal();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("SIGTERM resolves the shutdown future");
    }
}

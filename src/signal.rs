//! Shutdown signals: the future `run` is given to know when to stop.

use tracing::{info, warn};

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (what `docker stop` and Kubernetes
/// send), logging which one arrived.
///
/// A signal whose handler cannot be installed is logged and never fires, rather than
/// stopping the server at once.
pub async fn shutdown_signal() {
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        name = interrupt => info!(signal = name, "shutting down"),
        name = terminate() => info!(signal = name, "shutting down"),
    }
}

/// Resolves on SIGTERM.
#[cfg(unix)]
async fn terminate() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut stream) => {
            stream.recv().await;
            "SIGTERM"
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending().await
        }
    }
}

/// Never resolves: there is no SIGTERM outside Unix.
#[cfg(not(unix))]
async fn terminate() -> &'static str {
    std::future::pending().await
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_resolves_the_future() {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // Poll once so both handlers are installed before the signal is sent: without a
        // handler, SIGTERM would end the test process.
        tokio::select! {
            biased;
            () = &mut shutdown => panic!("resolved before any signal"),
            () = std::future::ready(()) => {}
        }
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

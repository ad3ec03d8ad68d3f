//! The `cloud66-ssl-exporter` binary: configuration, logging, storage, listener, `run`.
//! Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use cloud66_ssl_exporter::config::{
    self, CliOutcome, CopySettings, LogFormat, LogSettings, Settings,
};
use cloud66_ssl_exporter::signal::shutdown_signal;
use cloud66_ssl_exporter::{App, logging, run, while_starting};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

/// jemalloc: webhook handlers allocate what the storage writer thread frees, a pattern
/// glibc's malloc serves poorly (arena locks, fastbin consolidation); jemalloc is faster
/// there and also holds less memory per certificate (see README, Performance).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exits 0 after a clean shutdown, 64 on bad configuration and 1 when starting fails.
fn main() -> ExitCode {
    let settings = match config::from_args() {
        CliOutcome::Run(settings) => settings,
        CliOutcome::Copy(copy) => return copy_storage(copy),
        CliOutcome::Exit {
            code,
            output,
            to_stderr,
        } => {
            // Ignore write errors: with `--help | head` stdout may be closed already.
            let _ = match to_stderr {
                true => writeln!(std::io::stderr(), "{output}"),
                false => writeln!(std::io::stdout(), "{output}"),
            };
            return ExitCode::from(code);
        }
    };
    logging::init(&settings.log);
    match runtime() {
        Some(runtime) => runtime.block_on(serve(settings)),
        None => ExitCode::FAILURE,
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .inspect_err(|e| error!(error = %e, "cannot start the async runtime"))
        .ok()
}

/// `storage copy`: copies, prints what it did, exits 0 (or 1 with the reason).
fn copy_storage(copy: CopySettings) -> ExitCode {
    logging::init(&LogSettings {
        level: tracing::Level::INFO,
        format: LogFormat::Logfmt,
    });
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(cloud66_ssl_exporter::copy_storage(&copy.from, &copy.to)) {
        Ok(report) if report.already_copied => {
            info!(database = %copy.to.redacted, "the database already holds this store; nothing to do");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            info!(
                database = %copy.to.redacted,
                events = report.events,
                certificates = report.certificates,
                stacks = report.stacks,
                token = report.token,
                "copied"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "storage copy failed");
            ExitCode::FAILURE
        }
    }
}

/// Binds the listener, opens the store (answering 503 meanwhile, `/healthz` 200: with
/// PostgreSQL a replica may start before its database and waits for it) and serves
/// until a shutdown signal.
async fn serve(settings: Settings) -> ExitCode {
    // Before binding: a SIGTERM from then on must be a clean stop.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let listener = match TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            error!(error = %e, address = %settings.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let tls = settings
        .app
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(Arc::clone(&tls.server)));
    let opening = App::open(settings.app);
    let app = match while_starting(&listener, tls, opening, shutdown.as_mut()).await {
        Some(Ok(app)) => app,
        Some(Err(e)) => {
            error!(error = %e, "cannot open storage");
            return ExitCode::FAILURE;
        }
        None => {
            info!("stopped before storage was open");
            return ExitCode::SUCCESS;
        }
    };
    match listener.local_addr() {
        Ok(address) => info!(address = %address, "listening"),
        Err(e) => {
            error!(error = %e, "cannot read the listening address");
            return ExitCode::FAILURE;
        }
    }
    match run(listener, app, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

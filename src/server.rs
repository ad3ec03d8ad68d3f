//! The accept loop, connection limits, TLS, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::http::handle;

/// How long shutdown waits for in-flight requests before giving up on them (a request
/// given up is never acknowledged); under the 10 s most supervisors wait before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Largest request head (request line and headers); larger ones get 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to a grace period), and commits and closes storage.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    announce_generated_token(&app, local);
    let tls = app
        .config()
        .tls
        .as_ref()
        .map(|tls| TlsAcceptor::from(Arc::clone(&tls.server)));
    let slots = Arc::new(Semaphore::new(app.config().max_connections));
    // The first sync starts now that webhooks can be received; it stops with the server.
    let sync = app
        .syncer()
        .map(|syncer| tokio::spawn(Arc::clone(syncer).run(app.clone())));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot first: past the limit, clients wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Answers are small and final: send them without waiting (Nagle).
                    let _ = stream.set_nodelay(true);
                    let connection = Connection { app: app.clone(), peer, slot, watcher: graceful.watcher() };
                    tokio::spawn(connection.serve(stream, tls.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    // A sync cut short loses nothing: what it stored is committed, the rest is fetched
    // again by the next start's sync.
    if let Some(sync) = sync {
        sync.abort();
        let _ = sync.await;
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("in-flight requests did not finish in time");
        }
    }
    app.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for `opening` (the app opening its storage, which with PostgreSQL waits for the
/// database) while answering on `listener`: `/healthz` 200 (the process is alive) and
/// everything else 503, each answer closing its connection so that none outlives the
/// start. Returns what `opening` gave, or `None` when `shutdown` came first.
pub async fn while_starting<T>(
    listener: &TcpListener,
    tls: Option<TlsAcceptor>,
    opening: impl Future<Output = T>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<T> {
    tokio::pin!(opening);
    // Few clients probe a starting exporter; keep their connections few too.
    let slots = Arc::new(Semaphore::new(16));
    loop {
        tokio::select! {
            opened = &mut opening => return Some(opened),
            () = &mut shutdown => return None,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // dropped: the client retries
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_starting(stream).await,
                        Some(tls) => {
                            let handshake = tls.accept(stream);
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(Duration::from_secs(10), handshake).await
                            {
                                serve_starting(stream).await;
                            }
                        }
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// One connection while starting: one answer, then close.
async fn serve_starting<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        Ok::<_, std::convert::Infallible>(crate::http::starting(request.uri().path()))
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false);
    let _ = http.serve_connection(TokioIo::new(stream), service).await;
}

/// One accepted connection and what it holds until it closes.
struct Connection {
    /// The application serving its requests.
    app: App,
    /// The client, for logs.
    peer: SocketAddr,
    /// Its place under `--web.max-connections`, released on drop.
    slot: OwnedSemaphorePermit,
    /// Lets shutdown wait for the requests in flight.
    watcher: Watcher,
}

impl Connection {
    /// Completes the TLS handshake if configured, then serves HTTP/1.1 requests.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(tls) = tls else {
            return self.serve_http(stream).await;
        };
        let timeout = self.app.config().timeouts.tls_handshake;
        match tokio::time::timeout(timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => self.serve_http(stream).await,
            Ok(Err(error)) => tracing::debug!(peer = %self.peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve_http<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            peer,
            slot,
            watcher,
        } = self;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(app.config().timeouts.header_read)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let service = service_fn(move |request| handle(app.clone(), peer, request));
        let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        drop(slot);
    }
}

/// Logs the ready-to-paste webhook URL once, when this start generated the token. This
/// is the only time a token is ever logged.
fn announce_generated_token(app: &App, local: SocketAddr) {
    if let Some(token) = app.generated_token() {
        let host = if local.ip().is_unspecified() {
            "<this-host>".to_owned()
        } else {
            local.ip().to_string()
        };
        let scheme = if app.config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            url = %format!("{scheme}://{host}:{}/webhook/{token}", local.port()),
            "generated a webhook token (stored in the database); paste this URL into the Cloud66 webhook settings"
        );
    }
}

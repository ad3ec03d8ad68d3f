//! Connections to PostgreSQL: the pool the writer, the tail and the readers share, and
//! the one dedicated connection that `LISTEN`s, both over TLS as `sslmode` says.
//!
//! TLS is rustls with ring, as everywhere else in the exporter:
//! - `disable`: plain TCP (or a Unix socket).
//! - `require`: encrypted, the certificate not checked (libpq's `require`). The
//!   handshake signatures are still verified, so the session is bound to whatever key the
//!   server presented; what is not checked is whose key that is.
//! - `verify-full`: the chain checked against the `sslrootcert` file, or the system's
//!   roots without one (or with `sslrootcert=system`), and the certificate against the
//!   host name of the URL.
//!
//! Errors never show the password: `tokio_postgres` errors do not carry the connection
//! string, and nothing here formats it.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::mpsc;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;
use crate::config::{PostgresConfig, PostgresTlsMode};

/// How long the pool may take to open a connection (TCP, TLS, authentication), beyond
/// which `Pool::get` fails rather than hangs. Each TCP attempt alone has the URL's
/// `connect_timeout`, 5 s by default.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the check of an idle connection may take before it is dropped.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `Pool::get` waits for a connection when all `max_connections` are in use.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol PostgreSQL 17 and later check (and earlier versions ignore); it also
/// makes `sslnegotiation=direct` work.
const ALPN: &[u8] = b"postgresql";

/// The pool of this replica: at most `max_connections` connections, opened on demand.
///
/// Connections are recycled `Verified`: before a connection that sat idle is handed out,
/// an empty query makes one round trip. `Fast` only asks whether the client noticed the
/// socket closing, which misses a server that restarted or failed over while the
/// connection was idle until the first real statement fails on it; the writer would
/// then spend a retry on it. One round trip per checkout is nothing at a few webhooks a
/// day and a poll every half second; under load the writer and the tail keep theirs
/// across back-to-back uses ([`Held`]) and skip it.
pub(crate) fn pool(config: &PostgresConfig) -> Result<Pool, String> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = match tls(config)? {
        None => Manager::from_config(config.connect.clone(), NoTls, manager_config),
        Some(tls) => Manager::from_config(config.connect.clone(), tls, manager_config),
    };
    Pool::builder(manager)
        .max_size(config.max_connections)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CREATE_TIMEOUT))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .build()
        .map_err(|e| format!("cannot set up the PostgreSQL pool: {e}"))
}

/// How long a [`Held`] connection may sit unused before it goes back to the pool.
const HELD_IDLE: Duration = Duration::from_millis(250);

/// A pooled connection kept across back-to-back uses (the writer's batches, the tail's
/// reads), so that a busy replica does not spend a round trip verifying it before each
/// one, and its prepared statements stay cached. Unused for [`HELD_IDLE`], it goes back
/// to the pool, whose checkout verifies it: a server that restarted while the replica
/// was quiet is noticed there, not by a failed statement. A statement that fails on it
/// while busy gives it up ([`Held::with`]), and the caller's retry checks out another.
pub(crate) struct Held {
    pool: Pool,
    client: Option<(Object, Instant)>,
}

impl Held {
    /// Nothing held yet.
    pub(crate) fn new(pool: Pool) -> Self {
        Held { pool, client: None }
    }

    /// Runs `work` on the connection held, or on a fresh checkout within `timeouts`;
    /// after an error (the checkout's too) the connection is given up, so that the
    /// caller's retry checks out another.
    pub(crate) async fn with<T>(
        &mut self,
        timeouts: &Timeouts,
        work: impl AsyncFnOnce(&mut Object) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let result = match self.get(timeouts).await {
            Ok(client) => work(client).await,
            Err(e) => Err(e.into()),
        };
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// The connection held, or a fresh checkout within `timeouts`.
    async fn get(
        &mut self,
        timeouts: &Timeouts,
    ) -> Result<&mut Object, deadpool_postgres::PoolError> {
        // One that is closed or was idle goes back (or away) before the checkout.
        let held = self
            .client
            .take()
            .filter(|(client, used)| !client.is_closed() && used.elapsed() < HELD_IDLE);
        let client = match held {
            Some((client, _)) => client,
            None => self.pool.timeout_get(timeouts).await?,
        };
        let (client, _) = self.client.insert((client, Instant::now()));
        Ok(client)
    }

    /// The pool it checks out of.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// One connection outside the pool, driven by a task of its own, with the
/// notifications (`NOTIFY`) it receives. The receiver ends when the connection does
/// (server gone, network error, or every `Client` clone dropped): then reconnect, and
/// read what a lost notification may have announced.
pub(crate) async fn connect_one(
    config: &PostgresConfig,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), String> {
    let (client, notifications) = match tls(config)? {
        None => connect_driven(config, NoTls).await?,
        Some(tls) => connect_driven(config, tls).await?,
    };
    Ok((client, notifications))
}

/// The notifications of one channel, on a dedicated connection: what the tail waits on.
/// Dropping it closes the connection.
pub(crate) struct Notifications {
    /// Keeps the connection open: it closes when its last `Client` is dropped.
    _client: Client,
    /// What the connection's task forwards.
    receiver: mpsc::UnboundedReceiver<Notification>,
}

impl Notifications {
    /// The next notification, or `None` once the connection has ended.
    pub(crate) async fn recv(&mut self) -> Option<Notification> {
        self.receiver.recv().await
    }
}

/// Connects with [`connect_one`] and runs `LISTEN channel` on that connection.
pub(crate) async fn listen(
    config: &PostgresConfig,
    channel: &str,
) -> Result<Notifications, String> {
    let (client, receiver) = connect_one(config).await?;
    client
        .batch_execute(&format!("LISTEN {}", quote_identifier(channel)))
        .await
        .map_err(|e| format!("cannot LISTEN on {channel:?}: {}", describe(&e)))?;
    Ok(Notifications {
        _client: client,
        receiver,
    })
}

/// A `tokio_postgres` error with its causes, on one line. Its own `Display` names only
/// the kind ("error connecting to server", "db error"), not what happened.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Connects with `tls` and spawns the task that drives the connection, forwarding its
/// notifications and logging its notices.
async fn connect_driven<T>(
    config: &PostgresConfig,
    tls: T,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .connect
        .connect(tls)
        .await
        .map_err(|e| describe(&e))?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(drive(connection, sender));
    Ok((client, receiver))
}

/// Polls `connection` until it ends. Keeps polling when nobody listens any more, since
/// the client may still be in use.
async fn drive<S, T>(mut connection: Connection<S, T>, sender: mpsc::UnboundedSender<Notification>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                // The receiver may be gone while the client is still used: not an error.
                let _ = sender.send(notification);
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(notice = %notice, "PostgreSQL notice");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %describe(&e), "PostgreSQL connection ended");
                return;
            }
            None => return,
        }
    }
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rustls connector for the TLS mode, `None` for `disable`.
fn tls(config: &PostgresConfig) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let failed = |e: rustls::Error| format!("cannot set up TLS for PostgreSQL: {e}");
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(failed)?;
    let mut client = match config.tls {
        PostgresTlsMode::Disable => return Ok(None),
        PostgresTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider })),
        PostgresTlsMode::VerifyFull if !config.root_certs.is_empty() => {
            let mut roots = RootCertStore::empty();
            for cert in &config.root_certs {
                roots.add(cert.clone()).map_err(failed)?;
            }
            builder.with_root_certificates(roots)
        }
        PostgresTlsMode::VerifyFull => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(failed)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    }
    .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Some(MakeRustlsConnect::new(client)))
}

/// `sslmode=require`: any certificate is accepted, but the handshake must be signed by
/// its key, as in any TLS session.
#[derive(Debug)]
struct AnyCertificate {
    /// Whose signature algorithms check the handshake.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

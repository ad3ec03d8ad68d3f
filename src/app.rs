//! The application: configuration, storage, state and metrics, shared by every
//! connection. Cloning an `App` is cheap.

use std::fmt;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::cloud66::{StackRecord, SyncMetrics, Syncer};
use crate::config::{AppConfig, PostgresConfig, WebhookAuth};
use crate::metrics::Metrics;
use crate::state::State;
use crate::store::{Database, Store, StoreError};

/// Why the application could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database could not be opened or restored.
    Storage(StoreError),
    /// The metrics registry could not be set up.
    Metrics(prometheus::Error),
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Storage(e) => e.fmt(f),
            StartError::Metrics(e) => write!(f, "cannot set up metrics: {e}"),
            StartError::Thread(e) => write!(f, "cannot start the storage writer: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    /// The validated configuration.
    config: AppConfig,
    /// Checks webhook tokens.
    auth: Authenticator,
    /// A token generated at this start, to be shown once as a ready-to-paste URL.
    generated_token: Option<String>,
    /// Durable storage (the writer thread).
    store: Store,
    /// Current certificate state (restored at start, updated after each commit).
    state: Arc<State>,
    /// Self-metrics and the scrape encoder.
    metrics: Metrics,
    /// Cloud66 API reconciliation, when an API token is configured.
    syncer: Option<Arc<Syncer>>,
    /// Unix time the application was opened: the start time the status API shows.
    started_at: f64,
}

impl App {
    /// Opens storage, restores state and counters, and starts the storage writer.
    pub async fn open(config: AppConfig) -> Result<App, StartError> {
        let started_at = crate::now();
        let metrics = Metrics::new().map_err(StartError::Metrics)?;
        let opened = match &config.postgres {
            Some(postgres) => open_postgres(&config, postgres, &metrics).await?,
            None => open_sqlite(&config, &metrics).await?,
        };
        let Opened {
            store,
            state,
            last_received,
            token,
            syncer,
        } = opened;
        if token.is_none() {
            tracing::warn!("webhook authentication is disabled (--webhook.insecure-no-auth)");
        }
        let auth = Authenticator::new(token.as_ref().map(|(token, _)| token.as_str()));
        let generated_token = token.and_then(|(token, generated)| generated.then_some(token));

        metrics.set_certificates_limit(config.max_certificates);
        // Storage keeps when the newest event arrived, not what the last delivery was:
        // the pages say so until the next one.
        if let Some(at) = last_received {
            metrics.set_last_webhook(at);
        }
        Ok(App {
            inner: Arc::new(Inner {
                config,
                auth,
                generated_token,
                store,
                state,
                metrics,
                syncer,
                started_at,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.inner.config
    }

    /// The webhook token checker.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The token generated at this start, if any (shown once, at start-up).
    pub(crate) fn generated_token(&self) -> Option<&str> {
        self.inner.generated_token.as_deref()
    }

    /// Durable storage.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Current certificate state.
    pub(crate) fn state(&self) -> &State {
        &self.inner.state
    }

    /// Self-metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Cloud66 API reconciliation, when configured.
    pub(crate) fn syncer(&self) -> Option<&Arc<Syncer>> {
        self.inner.syncer.as_ref()
    }

    /// Unix time the application was opened.
    pub(crate) fn started_at(&self) -> f64 {
        self.inner.started_at
    }

    /// Commits everything queued and stops the storage writer. Webhooks arriving after
    /// this are answered 503.
    pub async fn close(&self) {
        self.inner.store.close().await;
    }
}

/// Storage opened and its writer started: what the rest of the start needs.
struct Opened {
    store: Store,
    state: Arc<State>,
    /// Arrival of the newest stored event.
    last_received: Option<f64>,
    /// The token in force, and whether it was generated just now.
    token: Option<(String, bool)>,
    /// The Cloud66 API reconciliation, when configured, knowing the stored stacks.
    syncer: Option<Arc<Syncer>>,
}

/// The Cloud66 API reconciliation, when configured, starting from the stored `stacks`.
fn syncer(
    config: &AppConfig,
    metrics: &Metrics,
    stacks: Vec<StackRecord>,
) -> Result<Option<Arc<Syncer>>, StartError> {
    let Some(cloud66) = &config.cloud66 else {
        return Ok(None);
    };
    let sync_metrics = SyncMetrics::register(metrics.registry(), cloud66.sync_interval)
        .map_err(StartError::Metrics)?;
    Ok(Some(Arc::new(Syncer::new(
        cloud66.clone(),
        sync_metrics,
        stacks,
    ))))
}

/// Opens the embedded database in `--storage.path`, restores the state from it, and
/// starts its writer thread.
async fn open_sqlite(config: &AppConfig, metrics: &Metrics) -> Result<Opened, StartError> {
    let storage_path = config.storage_path.clone();
    let auth = config.auth.clone();
    let restored = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let db = Database::open(&storage_path)?;
        let restored = db.restore()?;
        let last_received = db.last_received_at()?;
        let token = match auth {
            WebhookAuth::Token(token) => Some((token, false)),
            WebhookAuth::Stored => Some(db.webhook_token()?),
            WebhookAuth::Disabled => None,
        };
        let stacks = db.stacks()?;
        Ok((db, restored, last_received, token, stacks))
    })
    .await
    .map_err(|e| StartError::Thread(std::io::Error::other(e)))?;
    let (db, restored, last_received, token, stacks) = restored.map_err(StartError::Storage)?;
    tracing::info!(
        database = %db.path().display(),
        certificates = restored.certificates.len(),
        replayed_events = restored.replayed,
        "storage opened"
    );
    let state = Arc::new(State::new(restored.certificates));
    let store = Store::start(
        db,
        Arc::clone(&state),
        metrics.storage.clone(),
        config.max_certificates,
        restored.last_event_id,
        restored.unsaved,
    )
    .map_err(StartError::Thread)?;
    Ok(Opened {
        store,
        state,
        last_received,
        token,
        syncer: syncer(config, metrics, stacks)?,
    })
}

/// Connects to the PostgreSQL database (waiting for it), migrates it, restores the
/// state from its snapshot and log, and starts the writer and the tail.
async fn open_postgres(
    config: &AppConfig,
    postgres: &PostgresConfig,
    metrics: &Metrics,
) -> Result<Opened, StartError> {
    let storage = |e: crate::store::postgres::PgError| {
        StartError::Storage(StoreError::Postgres(e.to_string()))
    };
    let opened = crate::store::postgres::open(postgres)
        .await
        .map_err(storage)?;
    let token = match &config.auth {
        WebhookAuth::Token(token) => Some((token.clone(), false)),
        WebhookAuth::Stored => Some(
            crate::store::postgres::webhook_token(&opened.pool)
                .await
                .map_err(storage)?,
        ),
        WebhookAuth::Disabled => None,
    };
    tracing::info!(
        database = %postgres.redacted,
        certificates = opened.state.len(),
        replayed_events = opened.replayed,
        "storage opened"
    );
    metrics.set_storage_backend("postgres");
    let syncer = syncer(config, metrics, opened.stacks.clone())?;
    // Stacks the leader saves reach every replica's directory through the log.
    let stacks = syncer.as_ref().map(|syncer| {
        let syncer = Arc::clone(syncer);
        let sink: crate::store::postgres::StackSink = Arc::new(move |record| syncer.learn(record));
        sink
    });
    let observers = crate::store::postgres::Observers {
        metrics: metrics.register_tail().map_err(StartError::Metrics)?,
        deliveries: metrics.deliveries(),
        stacks,
    };
    let store = Store::start_postgres(postgres, &opened, config.max_certificates, observers);
    Ok(Opened {
        store,
        state: Arc::clone(&opened.state),
        last_received: opened.last_received,
        token,
        syncer,
    })
}

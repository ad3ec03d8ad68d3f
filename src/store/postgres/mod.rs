//! Storage in a shared PostgreSQL database, for replicas (`--storage.postgres.url`).
//!
//! The same promise as the embedded store: a webhook is answered 2xx only after the
//! transaction holding it committed. Differences, each in its own file:
//! - `schema`: the tables, and migrations every replica runs at start under a lock.
//! - `writer`: group commit of the queued jobs in one transaction, retried on a fresh
//!   connection for a bounded time when the database is briefly gone (restart,
//!   failover), then 503; a delivery two replicas receive at once is stored once (the
//!   unique key decides which one answers `duplicate`).
//! - `tail`: every replica, the one that wrote an event included, applies the shared
//!   log to its in-memory state in the same order, by a cursor that cannot skip a
//!   transaction that commits late; woken by `NOTIFY` and by its own writer, and
//!   polling as a safety net. On the leader it also writes the snapshot replicas start
//!   from.
//! - `leader`: the election of the one replica that does what must happen once per
//!   cluster (the snapshot, the Cloud66 API sync), through a session advisory lock.
//! - `stacks`: the Cloud66 API reconciliation's stacks, in a table and in the log.
//!
//! Forgetting a certificate, an API observation and a stack save are events in the log
//! (`FORGET_EVENT_TYPE`, `OBSERVATION_EVENT_TYPE`, `STACK_EVENT_TYPE`), so every replica
//! applies them at the same place. The webhook token, when generated, is stored in the
//! database so that every replica accepts the same URL; the leader shares the sync's
//! status there too.

pub(crate) mod connect;
mod copy;
mod leader;
mod schema;
mod stacks;
mod tail;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::Job;
use super::history::{History, Replay};
use crate::config::PostgresConfig;
use crate::event::EventKind;
use crate::state::State;
use tail::Tail;

pub use copy::{CopyReport, copy};
pub(crate) use leader::Leadership;
pub(crate) use tail::{Observers, Position, StackSink};

/// `event_type` of the log entry that forgets a certificate (`DELETE` of the API).
pub(crate) const FORGET_EVENT_TYPE: &str = "cloud66-ssl-exporter.forget";

/// How long the start waits for the database between attempts, at most.
const MAX_START_BACKOFF: Duration = Duration::from_secs(10);

/// What can go wrong talking to PostgreSQL. Never holds the password: errors from
/// `tokio_postgres` do not carry the connection string.
#[derive(Debug)]
pub(crate) enum PgError {
    /// A statement or the connection failed.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(String),
    /// The database holds a schema this build does not know.
    Incompatible(i32),
    /// An operation refused as it stands (why).
    Refused(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {} ({})", db.message(), db.code().code()),
                None => write!(f, "PostgreSQL: {}", connect::describe(e)),
            },
            PgError::Pool(reason) => write!(f, "PostgreSQL connection: {reason}"),
            PgError::Refused(reason) => f.write_str(reason),
            PgError::Incompatible(found) => write!(
                f,
                "the PostgreSQL database has schema version {found}, this build supports up to {}; \
                 use a newer exporter",
                schema::SCHEMA_VERSION
            ),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

impl PgError {
    /// Whether retrying on a fresh connection may succeed: the connection or the server
    /// went away, or the server is starting, stopping or recovering. Errors in what was
    /// asked (constraints, types, permissions, the schema) are not.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            PgError::Pool(_) => true,
            PgError::Incompatible(_) | PgError::Refused(_) => false,
            PgError::Db(e) => match e.code() {
                None => true,
                Some(code) => {
                    let code = code.code();
                    // 08: connection exception; 57P01-03: shutdown, crash, starting;
                    // 40001/40P01: serialization failure, deadlock; 53: out of resources.
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code.starts_with("53")
                        || code == "40001"
                        || code == "40P01"
                }
            },
        }
    }
}

/// A database opened, migrated and read: what the exporter starts from.
pub(crate) struct Opened {
    /// The connections.
    pub pool: Pool,
    /// Every certificate, as of `position`.
    pub state: Arc<State>,
    /// The log position the certificates include.
    pub position: Position,
    /// How many log events were applied on top of the snapshot.
    pub replayed: usize,
    /// Arrival time of the newest webhook event, if any.
    pub last_received: Option<f64>,
    /// The stacks the Cloud66 API reconciliation saved.
    pub stacks: Vec<crate::cloud66::StackRecord>,
}

/// Connects (retrying with backoff until the database answers: a replica may start
/// before its database), migrates, and restores the state from the snapshot and the
/// log after it.
pub(crate) async fn open(config: &PostgresConfig) -> Result<Opened, PgError> {
    let pool = connect::pool(config).map_err(PgError::Pool)?;
    let mut backoff = Duration::from_millis(200);
    loop {
        match prepare(&pool).await {
            Ok(opened) => return Ok(opened),
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    database = %config.redacted,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "PostgreSQL is not reachable yet; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_START_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn prepare(pool: &Pool) -> Result<Opened, PgError> {
    let mut client = pool.get().await?;
    schema::migrate(&mut client).await?;
    let snapshot = tail::load_snapshot(&mut client).await?;
    let webhooks: Vec<&str> = EventKind::ALL.iter().map(|k| k.event_type()).collect();
    let last_received = client
        .query_opt(
            "SELECT max(received_at) FROM cloud66_ssl_exporter_events \
             WHERE event_type = ANY($1)",
            &[&webhooks],
        )
        .await?
        .and_then(|row| row.get::<_, Option<f64>>(0));
    drop(client);
    let state = Arc::new(State::new(snapshot.certificates));
    // Every event up to the rows' own positions is committed, so this catch-up passes
    // them all: the tail that runs afterwards needs no floors.
    let mut tail =
        Tail::new(pool.clone(), Arc::clone(&state), snapshot.position).with_floors(snapshot.floors);
    let replayed = tail.catch_up().await?;
    let position = tail.position();
    // Read after the catch-up: the table holds at least what the events applied say,
    // and the events after `position` say it again, in order.
    let client = pool.get().await?;
    let stacks = stacks::load(&client).await?;
    Ok(Opened {
        pool: pool.clone(),
        state,
        position,
        replayed,
        last_received,
        stacks,
    })
}

/// The webhook token every replica uses: the one stored in the database, or a new one
/// stored now (`true`) when there is none yet.
pub(crate) async fn webhook_token(pool: &Pool) -> Result<(String, bool), PgError> {
    let client = pool.get().await?;
    let candidate = super::database::generate_token()
        .map_err(|e| PgError::Pool(format!("cannot generate a token: {e}")))?;
    let inserted = client
        .query_opt(
            "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES ('webhook_token', $1) \
             ON CONFLICT (key) DO NOTHING RETURNING value",
            &[&candidate],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok((row.get(0), true));
    }
    let row = client
        .query_one(
            "SELECT value FROM cloud66_ssl_exporter_meta WHERE key = 'webhook_token'",
            &[],
        )
        .await?;
    Ok((row.get(0), false))
}

/// The tasks of a running PostgreSQL store.
pub(crate) struct Running {
    /// The writer: ends once the queue is closed and drained.
    pub writer: tokio::task::JoinHandle<()>,
    /// The tail: runs until aborted.
    pub tail: tokio::task::JoinHandle<()>,
    /// The election: runs until aborted (which hands leadership over at once).
    pub election: tokio::task::JoinHandle<()>,
    /// What the election decided, and the way to the leader.
    pub leadership: Leadership,
}

/// Starts the writer on `jobs` and the tail, from `position`, on `state`.
pub(crate) fn start(
    config: &PostgresConfig,
    pool: Pool,
    state: Arc<State>,
    position: Position,
    max_certificates: usize,
    jobs: mpsc::Receiver<Job>,
    observers: Observers,
) -> Running {
    let (leadership, election) = leader::start(config, pool.clone(), observers.metrics.clone());
    let tail = Tail::new(pool.clone(), Arc::clone(&state), position)
        .observed_by(observers)
        .led_by(leadership.clone());
    let handle = tail.handle();
    let tail = tokio::spawn(tail.run(config.clone()));
    let writer = tokio::spawn(writer::run(
        pool,
        config.retry_window,
        state,
        handle,
        max_certificates,
        jobs,
    ));
    Running {
        writer,
        tail,
        election,
        leadership,
    }
}

/// Shares the Cloud66 API sync's status (JSON) with the other replicas.
pub(crate) async fn share_sync_status(pool: &Pool, status: &str) -> Result<(), PgError> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES ('sync_status', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&status],
        )
        .await?;
    Ok(())
}

/// The Cloud66 API sync's status as the leader last shared it.
pub(crate) async fn shared_sync_status(pool: &Pool) -> Result<Option<String>, PgError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "SELECT value FROM cloud66_ssl_exporter_meta WHERE key = 'sync_status'",
            &[],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// The newest `limit` events of a certificate, read on a pooled connection (the writer
/// has its own transaction; readers never wait on it).
pub(crate) async fn history(
    pool: &Pool,
    stack: &str,
    name: &str,
    limit: usize,
) -> Result<History, PgError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, event_ts, received_at, event_type, payload FROM cloud66_ssl_exporter_events \
             WHERE stack = $1 AND name = $2 AND event_type <> $3 ORDER BY id",
            &[&stack, &name, &FORGET_EVENT_TYPE],
        )
        .await?;
    let mut replay = Replay::new(stack, name, limit);
    for row in rows {
        replay.push(
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get::<_, &str>(4),
        );
    }
    Ok(replay.finish())
}

//! Durable storage in an embedded SQLite database (WAL, `synchronous = FULL`).
//!
//! One writer thread owns the connection. Webhook handlers hand it events through a
//! channel; it takes everything queued, writes it in one transaction and commits once
//! (group commit), so concurrent deliveries share one fsync. Only after the commit does
//! it publish the new certificate states and answer the handlers: a 2xx always means
//! "on disk". The raw payload of every accepted event is kept in `events`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::event::{CertInfo, SslEvent};
use crate::metrics::StorageMetrics;
use crate::state::{CertKey, Certificate, State};

/// File name of the database inside `--storage.path`.
pub const DB_FILE: &str = "cloud66-ssl-exporter.db";

/// The schema version this build writes (SQLite `user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Most events committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Events waiting for the writer before handlers wait for room (back-pressure).
const QUEUE_CAPACITY: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    digest      BLOB NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    event_type  TEXT NOT NULL,
    stack       TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE certificates (
    stack                     TEXT NOT NULL,
    name                      TEXT NOT NULL,
    expiry                    REAL,
    expiry_event_ts           REAL,
    last_event_ts             REAL,
    install_failing           INTEGER NOT NULL,
    install_event_ts          REAL,
    error_message             TEXT,
    server_names              TEXT,
    lets_encrypt              TEXT,
    has_intermediate_cert     TEXT,
    ssl_termination           TEXT,
    status                    TEXT,
    install_failures          INTEGER NOT NULL,
    install_successes         INTEGER NOT NULL,
    expire_soon_notifications INTEGER NOT NULL,
    PRIMARY KEY (stack, name)
) WITHOUT ROWID;
";

/// The columns of `certificates`, in the order `cert_from_row` and `save_certificate` use.
macro_rules! cert_columns {
    () => {
        "stack, name, expiry, expiry_event_ts, last_event_ts, install_failing, \
         install_event_ts, error_message, server_names, lets_encrypt, has_intermediate_cert, \
         ssl_termination, status, install_failures, install_successes, expire_soon_notifications"
    };
}

/// What went wrong with storage.
#[derive(Debug)]
pub enum StoreError {
    /// The storage directory could not be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened, read or initialised (corrupt, unreadable...).
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer, incompatible version.
    Incompatible {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// A write could not be committed.
    Write(String),
    /// The writer has stopped (the exporter is shutting down).
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CreateDir { path, source } => {
                write!(
                    f,
                    "cannot create storage directory {}: {source}",
                    path.display()
                )
            }
            StoreError::Open { path, source } => {
                write!(f, "cannot open database {}: {source}", path.display())
            }
            StoreError::Incompatible { path, found } => write!(
                f,
                "database {} has schema version {found}, this build supports up to {SCHEMA_VERSION}; use a newer exporter",
                path.display()
            ),
            StoreError::Write(reason) => write!(f, "cannot commit to storage: {reason}"),
            StoreError::Closed => f.write_str("storage is closed"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The outcome of recording an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored and applied.
    Accepted,
    /// The exact same delivery was stored before; nothing changed.
    Duplicate,
    /// The event is for a new certificate and the certificate limit is reached; nothing
    /// was stored.
    OverLimit,
}

/// The outcome of forgetting a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// The certificate and its series are gone (its raw events stay, for audits).
    Removed,
    /// No such certificate was tracked.
    Unknown,
}

/// The database as opened, before the writer starts: restored state and settings.
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

impl Database {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "database did not switch to WAL mode");
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(open_err)?;
        migrate(&mut conn, &path)?;
        Ok(Database { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored certificate.
    pub fn certificates(&self) -> Result<Vec<Certificate>, StoreError> {
        let sql = concat!("SELECT ", cert_columns!(), " FROM certificates");
        let read = || -> rusqlite::Result<Vec<Certificate>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], cert_from_row)?;
            rows.collect()
        };
        read().map_err(|source| self.open_error(source))
    }

    /// When the newest stored event was received (Unix seconds).
    pub fn last_received_at(&self) -> Result<Option<f64>, StoreError> {
        self.conn
            .query_row(
                "SELECT received_at FROM events ORDER BY id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.open_error(source))
    }

    /// The stored webhook token, generating and storing one first if there is none.
    /// Returns the token and whether it was generated now.
    pub fn webhook_token(&self) -> Result<(String, bool), StoreError> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'webhook_token'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.open_error(source))?;
        if let Some(token) = stored {
            return Ok((token, false));
        }
        let token = generate_token().map_err(|e| StoreError::Write(e.to_string()))?;
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('webhook_token', ?1)",
                [&token],
            )
            .map_err(|source| self.open_error(source))?;
        Ok((token, true))
    }

    fn open_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Open {
            path: self.path.clone(),
            source,
        }
    }
}

/// 32 random bytes from the operating system, hex encoded (URL safe).
fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(open_err)?;
    match version {
        0 => {
            let tx = conn.transaction().map_err(open_err)?;
            tx.execute_batch(SCHEMA).map_err(open_err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(open_err)?;
            tx.commit().map_err(open_err)
        }
        SCHEMA_VERSION => Ok(()),
        found => Err(StoreError::Incompatible {
            path: path.to_owned(),
            found,
        }),
    }
}

fn cert_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Certificate> {
    let count = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok(Certificate {
        stack: row.get(0)?,
        name: row.get(1)?,
        expiry: row.get(2)?,
        expiry_event_ts: row.get(3)?,
        last_event_ts: row.get(4)?,
        install_failing: row.get(5)?,
        install_event_ts: row.get(6)?,
        error_message: row.get(7)?,
        info: CertInfo {
            server_names: row.get(8)?,
            lets_encrypt: row.get(9)?,
            has_intermediate_cert: row.get(10)?,
            ssl_termination: row.get(11)?,
            status: row.get(12)?,
        },
        install_failures: count(13)?,
        install_successes: count(14)?,
        expire_soon_notifications: count(15)?,
    })
}

const SAVE_CERTIFICATE: &str = concat!(
    "INSERT OR REPLACE INTO certificates (",
    cert_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
);

fn save_certificate(tx: &Transaction<'_>, cert: &Certificate) -> rusqlite::Result<()> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let info = &cert.info;
    tx.prepare_cached(SAVE_CERTIFICATE)?.execute(params![
        cert.stack,
        cert.name,
        cert.expiry,
        cert.expiry_event_ts,
        cert.last_event_ts,
        cert.install_failing,
        cert.install_event_ts,
        cert.error_message,
        info.server_names,
        info.lets_encrypt,
        info.has_intermediate_cert,
        info.ssl_termination,
        info.status,
        count(cert.install_failures),
        count(cert.install_successes),
        count(cert.expire_soon_notifications),
    ])?;
    Ok(())
}

/// Where the writer sends a job's answer.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer thread.
// Almost every job is a `Record`, so the small variants waste nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// Store an accepted event and apply it.
    Record {
        event: SslEvent,
        digest: [u8; 32],
        payload: Bytes,
        received_at: f64,
        reply: Reply<Recorded>,
    },
    /// Remove a certificate and its series.
    Forget {
        stack: String,
        name: String,
        reply: Reply<Forgotten>,
    },
    /// Prove the database can take an event of `bytes` now, by committing a write of
    /// that size.
    Probe { bytes: usize, reply: Reply<()> },
}

/// What a job did inside a batch that committed.
enum Outcome {
    Recorded(Recorded),
    Forgotten(Forgotten),
    /// The probe write committed; `Err` says the filesystem is nearly full.
    Probed(Result<(), String>),
}

impl Job {
    /// Sends the job's answer: its outcome once the batch committed, or the error.
    fn answer(self, outcome: Result<Outcome, StoreError>) {
        // A handler that gave up waiting has dropped its receiver; nothing to tell it.
        let _ = match (self, outcome) {
            (Job::Record { reply, .. }, Ok(Outcome::Recorded(r))) => reply.send(Ok(r)).is_ok(),
            (Job::Forget { reply, .. }, Ok(Outcome::Forgotten(f))) => reply.send(Ok(f)).is_ok(),
            (Job::Probe { reply, .. }, Ok(Outcome::Probed(space))) => {
                reply.send(space.map_err(StoreError::Write)).is_ok()
            }
            (Job::Record { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Forget { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Probe { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (job, Ok(_)) => {
                tracing::error!("storage writer produced a mismatched outcome");
                job.answer(Err(StoreError::Write("internal error".into())));
                false
            }
        };
    }
}

/// The handle through which the rest of the exporter writes to storage.
pub struct Store {
    /// Queue to the writer thread; `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Starts the writer thread on `db`; committed changes are published to `state`.
    /// Events for new certificates are refused once `max_certificates` are tracked.
    pub fn start(
        db: Database,
        state: Arc<State>,
        metrics: StorageMetrics,
        max_certificates: usize,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            db,
            state,
            metrics,
            max_certificates,
        };
        let writer = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run(jobs))?;
        Ok(Store {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Durably stores `event` (unless it is a duplicate or over the certificate limit)
    /// and applies it to the state.
    pub async fn record(
        &self,
        event: SslEvent,
        digest: [u8; 32],
        payload: Bytes,
        received_at: f64,
    ) -> Result<Recorded, StoreError> {
        self.submit(|reply| Job::Record {
            event,
            digest,
            payload,
            received_at,
            reply,
        })
        .await?
    }

    /// Durably removes a certificate and its series.
    pub async fn forget(&self, stack: String, name: String) -> Result<Forgotten, StoreError> {
        self.submit(|reply| Job::Forget { stack, name, reply })
            .await?
    }

    /// Checks that the database accepts a committed write of `bytes` (the largest
    /// event): a nearly full disk that still takes a tiny write is not ready.
    pub async fn probe(&self, bytes: usize) -> Result<(), StoreError> {
        self.submit(|reply| Job::Probe { bytes, reply }).await?
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T, StoreError> {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(job(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }

    /// Stops taking new work, lets the writer commit everything already queued, and
    /// waits for it to finish.
    pub async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("storage writer did not stop cleanly");
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    db: Database,
    state: Arc<State>,
    metrics: StorageMetrics,
    max_certificates: usize,
}

impl Writer {
    /// Commits batches until every sender is gone and the queue is drained.
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// Writes and commits one batch, then publishes the changes and answers every job.
    fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        match self.write(&batch) {
            Ok((outcomes, changes)) => {
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
                self.state.apply(changes);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(error) => {
                self.metrics.commit_failures.inc();
                tracing::error!(%error, jobs = batch.len(), "storage commit failed");
                let reason = error.to_string();
                for job in batch {
                    job.answer(Err(StoreError::Write(reason.clone())));
                }
            }
        }
    }

    /// Writes a batch in one transaction. Returns each job's outcome and the change of
    /// every certificate it touched (`None`: removed); nothing is published unless the
    /// commit succeeds.
    #[allow(clippy::type_complexity)]
    fn write(
        &mut self,
        batch: &[Job],
    ) -> rusqlite::Result<(Vec<Outcome>, HashMap<CertKey, Option<Certificate>>)> {
        let tx = self
            .db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changes = Changes {
            state: &self.state,
            changed: HashMap::new(),
            tracked: self.state.len(),
            max: self.max_certificates,
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            outcomes.push(match job {
                Job::Record {
                    event,
                    digest,
                    payload,
                    received_at,
                    ..
                } => Outcome::Recorded(changes.record(&tx, event, digest, payload, *received_at)?),
                Job::Forget { stack, name, .. } => {
                    Outcome::Forgotten(changes.forget(&tx, stack, name)?)
                }
                Job::Probe { bytes, .. } => {
                    let space = check_free_space(&self.db.path, *bytes);
                    let bytes = i64::try_from(*bytes).unwrap_or(i64::MAX);
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', randomblob(?1))",
                        [bytes],
                    )?;
                    Outcome::Probed(space)
                }
            });
        }
        for cert in changes.changed.values().flatten() {
            save_certificate(&tx, cert)?;
        }
        let changed = changes.changed;
        tx.commit()?;
        Ok((outcomes, changed))
    }
}

/// How many of the largest events must fit on the storage filesystem for it to count
/// as ready: room for the event, its WAL copy and the checkpoint, with margin.
const FREE_SPACE_EVENTS: u64 = 4;

/// Fails when the filesystem holding `path` has room for fewer than
/// `FREE_SPACE_EVENTS` events of `bytes`: a nearly full disk still takes a tiny probe
/// write (SQLite reuses freed pages), but not the next event.
fn check_free_space(path: &Path, bytes: usize) -> Result<(), String> {
    let needed = FREE_SPACE_EVENTS.saturating_mul(bytes as u64);
    let available = rustix::fs::statvfs(path)
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
        .map_err(|e| format!("cannot measure free space: {e}"))?;
    if available < needed {
        return Err(format!(
            "only {available} bytes free on the storage filesystem, {needed} needed"
        ));
    }
    Ok(())
}

/// The certificates a batch changes, on top of the published state.
struct Changes<'a> {
    /// The published (committed) state.
    state: &'a State,
    /// New state of each certificate the batch touched; `None` once removed.
    changed: HashMap<CertKey, Option<Certificate>>,
    /// Certificates tracked, counting the batch's additions and removals.
    tracked: usize,
    /// `--storage.max-certificates`.
    max: usize,
}

impl Changes<'_> {
    /// The batch's view of a certificate.
    fn current(&mut self, stack: &str, name: &str) -> &mut Option<Certificate> {
        let state = self.state;
        self.changed
            .entry((stack.to_owned(), name.to_owned()))
            .or_insert_with(|| state.get(stack, name).map(|c| (*c).clone()))
    }

    /// Stores one event unless its digest is known (or it would exceed the limit), and
    /// applies it to the batch's copy of its certificate.
    fn record(
        &mut self,
        tx: &Transaction<'_>,
        event: &SslEvent,
        digest: &[u8; 32],
        payload: &Bytes,
        received_at: f64,
    ) -> rusqlite::Result<Recorded> {
        let (max, tracked) = (self.max, self.tracked);
        let is_new = self.current(&event.stack, &event.name).is_none();
        if is_new && tracked >= max {
            return Ok(Recorded::OverLimit);
        }
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events (digest, received_at, event_type, stack, name, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &digest[..],
                received_at,
                event.kind.event_type(),
                event.stack,
                event.name,
                String::from_utf8_lossy(payload),
            ])?;
        if inserted == 0 {
            return Ok(Recorded::Duplicate);
        }
        if is_new {
            self.tracked += 1;
        }
        self.current(&event.stack, &event.name)
            .get_or_insert_with(|| Certificate::new(&event.stack, &event.name))
            .apply(event);
        Ok(Recorded::Accepted)
    }

    /// Removes a certificate's row; its events stay.
    fn forget(
        &mut self,
        tx: &Transaction<'_>,
        stack: &str,
        name: &str,
    ) -> rusqlite::Result<Forgotten> {
        let slot = self.current(stack, name);
        if slot.take().is_none() {
            return Ok(Forgotten::Unknown);
        }
        self.tracked -= 1;
        tx.prepare_cached("DELETE FROM certificates WHERE stack = ?1 AND name = ?2")?
            .execute(params![stack, name])?;
        Ok(Forgotten::Removed)
    }
}

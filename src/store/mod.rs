//! Durable storage in an embedded SQLite database (WAL, `synchronous = FULL`).
//!
//! One writer thread (`writer`) owns the connection. Webhook handlers hand it events
//! through a channel; it takes everything queued, writes it in one transaction and
//! commits once (group commit), so concurrent deliveries share one fsync. Only after the
//! commit does it publish the new certificate states and answer the handlers: a 2xx
//! always means "on disk". A second thread (`checkpointer`) copies the committed log
//! pages into the database file between commits, on its own connection, so that no
//! commit waits for that copy. The raw payload of every accepted event is kept in
//! `events`; `database` describes the schema and how the state is restored at start-up,
//! `history` how one certificate's events are read back, beside the writer.
//!
//! With `--storage.postgres.url`, `postgres` takes the same jobs instead: the [`Store`]
//! handle is the seam, and nothing above it knows which backend runs.

mod checkpointer;
mod database;
mod history;
mod lock;
pub(crate) mod postgres;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use database::{DB_FILE, Database};
pub use history::{History, HistoryEvent};
pub use lock::LOCK_FILE;

use crate::cloud66::StackRecord;
use crate::event::{Observation, SslEvent};
use crate::metrics::StorageMetrics;
use crate::state::{CertKey, State};
use checkpointer::Checkpointer;
use writer::Writer;

/// Jobs waiting for the writer before handlers wait for room (back-pressure).
const QUEUE_CAPACITY: usize = 4096;

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
    /// Another exporter holds the storage directory.
    Lock {
        /// The storage directory.
        dir: PathBuf,
        /// Who holds it, or why it could not be locked.
        reason: String,
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
    /// A read beside the writer (the event history) failed.
    Read(String),
    /// The PostgreSQL database could not be opened, migrated or read (no password in
    /// the message).
    Postgres(String),
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
            StoreError::Lock { dir, reason } => {
                write!(
                    f,
                    "cannot lock storage directory {}: {reason}",
                    dir.display()
                )
            }
            StoreError::Incompatible { path, found } => write!(
                f,
                "database {} has schema version {found}, this build supports up to {}; use a newer exporter",
                path.display(),
                database::SCHEMA_VERSION
            ),
            StoreError::Write(reason) => write!(f, "cannot commit to storage: {reason}"),
            StoreError::Read(reason) => write!(f, "cannot read storage: {reason}"),
            StoreError::Postgres(reason) => f.write_str(reason),
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

/// What storing a page of API observations did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Observations that changed a certificate (or added one): stored and applied.
    pub applied: usize,
    /// Observations that would change nothing: not stored.
    pub unchanged: usize,
    /// Observations of new certificates past `--storage.max-certificates`: dropped.
    pub over_limit: usize,
}

/// Where the writer sends a job's answer.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer thread.
// Almost every job is a `Record`, so the small variants waste nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
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
    /// Store and apply a page of API observations, all or none.
    Observe {
        observations: Vec<Observation>,
        reply: Reply<Observed>,
    },
    /// Save what is known about a stack; when its label changed from `previous_label`
    /// (the uid, before its id was known), move that label's certificates to the new one.
    Stack {
        record: StackRecord,
        previous_label: Option<String>,
        reply: Reply<usize>,
    },
}

/// What a job did inside a batch that committed.
pub(super) enum Outcome {
    Recorded(Recorded),
    Forgotten(Forgotten),
    /// The probe write committed; `Err` says the filesystem is nearly full.
    Probed(Result<(), String>),
    Observed(Observed),
    /// How many certificates moved to the stack's new label.
    Stacked(usize),
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
            (Job::Observe { reply, .. }, Ok(Outcome::Observed(o))) => reply.send(Ok(o)).is_ok(),
            (Job::Stack { reply, .. }, Ok(Outcome::Stacked(moved))) => {
                reply.send(Ok(moved)).is_ok()
            }
            (Job::Record { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Forget { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Probe { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Observe { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
            (Job::Stack { reply, .. }, Err(e)) => reply.send(Err(e)).is_ok(),
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
    /// Queue to the writer; `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer, waited for on close.
    writer: Mutex<Option<Worker>>,
    /// Where readers beside the writer read.
    reader: Reader,
    /// Whether this exporter does the cluster's once-only work.
    role: Role,
}

/// Whether this exporter does the work that must happen once per cluster (the Cloud66
/// API sync): always with embedded storage; with PostgreSQL, while it leads the
/// replicas sharing the database (see `postgres::leader`).
#[derive(Clone)]
pub struct Role(Option<postgres::Leadership>);

impl Role {
    /// Whether this exporter leads now.
    pub fn leads(&self) -> bool {
        self.0.as_ref().is_none_or(postgres::Leadership::is_leader)
    }

    /// Waits until leadership changes; never, with embedded storage.
    pub async fn changed(&mut self) {
        match &mut self.0 {
            Some(leadership) => leadership.changed().await,
            None => std::future::pending().await,
        }
    }

    /// Waits until another replica asks this one, as leader, for a sync; never, with
    /// embedded storage.
    pub async fn asked(&self) {
        match &self.0 {
            Some(leadership) => leadership.asked().await,
            None => std::future::pending().await,
        }
    }

    /// Asks the leader for a sync; `false` when no replica leads right now (with
    /// embedded storage this exporter leads itself, and nothing is sent).
    pub async fn ask_leader(&self) -> Result<bool, StoreError> {
        match &self.0 {
            Some(leadership) => leadership
                .ask_leader()
                .await
                .map_err(|e| StoreError::Write(e.to_string())),
            None => Ok(true),
        }
    }
}

/// The writer of a backend.
enum Worker {
    /// The SQLite writer thread.
    Thread(JoinHandle<()>),
    /// The PostgreSQL writer and tail tasks.
    Tasks(postgres::Running),
}

/// Where the event history is read.
enum Reader {
    /// The SQLite database file, opened read-only per request.
    Sqlite(PathBuf),
    /// The PostgreSQL pool.
    Postgres(deadpool_postgres::Pool),
}

impl Store {
    /// Starts the writer thread on `db`, whose newest event is `last_event_id` and whose
    /// rows lack the events replayed at start-up (`replayed`: each certificate with the
    /// first event its row lacks, oldest first); committed changes are published to
    /// `state`. Events for new certificates are refused once `max_certificates` are
    /// tracked.
    pub fn start(
        mut db: Database,
        state: Arc<State>,
        metrics: StorageMetrics,
        max_certificates: usize,
        last_event_id: i64,
        replayed: Vec<(CertKey, i64)>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let path = db.path().to_owned();
        let checkpointer = Checkpointer::start(&mut db)?;
        let writer = Writer::new(
            db,
            checkpointer,
            state,
            metrics,
            max_certificates,
            last_event_id,
            replayed,
        );
        let writer = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run(jobs))?;
        Ok(Store {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(Worker::Thread(writer))),
            reader: Reader::Sqlite(path),
            role: Role(None),
        })
    }

    /// Starts the PostgreSQL writer and tail on an opened database (see
    /// [`postgres::open`]), publishing the log to `opened.state`.
    pub(crate) fn start_postgres(
        config: &crate::config::PostgresConfig,
        opened: &postgres::Opened,
        max_certificates: usize,
        observers: postgres::Observers,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let running = postgres::start(
            config,
            opened.pool.clone(),
            Arc::clone(&opened.state),
            opened.position,
            max_certificates,
            jobs,
            observers,
        );
        Store {
            queue: Mutex::new(Some(queue)),
            role: Role(Some(running.leadership.clone())),
            writer: Mutex::new(Some(Worker::Tasks(running))),
            reader: Reader::Postgres(opened.pool.clone()),
        }
    }

    /// Whether this exporter does the cluster's once-only work.
    pub fn role(&self) -> Role {
        self.role.clone()
    }

    /// Shares the Cloud66 API sync's status with the other replicas (nothing to do with
    /// embedded storage: there are none).
    pub async fn share_sync_status(&self, status: &str) -> Result<(), StoreError> {
        match &self.reader {
            Reader::Sqlite(_) => Ok(()),
            Reader::Postgres(pool) => postgres::share_sync_status(pool, status)
                .await
                .map_err(|e| StoreError::Write(e.to_string())),
        }
    }

    /// The Cloud66 API sync's status as the leader last shared it (`None` with embedded
    /// storage, or before any).
    pub async fn shared_sync_status(&self) -> Result<Option<String>, StoreError> {
        match &self.reader {
            Reader::Sqlite(_) => Ok(None),
            Reader::Postgres(pool) => postgres::shared_sync_status(pool)
                .await
                .map_err(|e| StoreError::Read(e.to_string())),
        }
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

    /// Durably stores the observations of one API page that change a certificate, and
    /// applies them; all or none.
    pub async fn observe(&self, observations: Vec<Observation>) -> Result<Observed, StoreError> {
        self.submit(|reply| Job::Observe {
            observations,
            reply,
        })
        .await?
    }

    /// Durably saves what is known about a stack and, when its `stack` label changed
    /// from `previous_label`, moves the certificates under the old label to the new one
    /// (merging with any already there). Returns how many moved.
    pub async fn save_stack(
        &self,
        record: StackRecord,
        previous_label: Option<String>,
    ) -> Result<usize, StoreError> {
        self.submit(|reply| Job::Stack {
            record,
            previous_label,
            reply,
        })
        .await?
    }

    /// The newest `limit` stored events of a certificate, newest first, read on a
    /// read-only connection of their own: the writer never waits for this.
    pub async fn history(
        &self,
        stack: String,
        name: String,
        limit: usize,
    ) -> Result<History, StoreError> {
        match &self.reader {
            Reader::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || history::read(&path, &stack, &name, limit))
                    .await
                    .map_err(|e| StoreError::Read(e.to_string()))?
                    .map_err(|e| StoreError::Read(e.to_string()))
            }
            Reader::Postgres(pool) => postgres::history(pool, &stack, &name, limit)
                .await
                .map_err(|e| StoreError::Read(e.to_string())),
        }
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
        let clean = match writer {
            None => true,
            Some(Worker::Thread(writer)) => matches!(
                tokio::task::spawn_blocking(move || writer.join()).await,
                Ok(Ok(()))
            ),
            Some(Worker::Tasks(running)) => {
                let written = running.writer.await;
                // The tail only reads; what it has not applied is in the log.
                running.tail.abort();
                // Its connection closes, and another replica takes over at once.
                running.election.abort();
                written.is_ok()
            }
        };
        if !clean {
            tracing::error!("storage writer did not stop cleanly");
        }
    }
}

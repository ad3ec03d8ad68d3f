//! The writer thread: group commits, the certificate limit, and checkpoints of the
//! certificate rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Transaction, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::database::{Database, delete_certificate, save_certificate, save_checkpoint};
use super::{Forgotten, Job, Outcome, Recorded, StoreError};
use crate::event::SslEvent;
use crate::metrics::StorageMetrics;
use crate::state::{CertKey, Certificate, State};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

/// How often changed certificate rows are saved (events after the last save are
/// replayed at start-up, so this only bounds that replay).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Changed certificates that trigger a save before the interval is up.
const CHECKPOINT_DIRTY: usize = 8192;

/// The writer thread's state.
pub(super) struct Writer {
    db: Database,
    /// The published state; only this thread changes it.
    state: Arc<State>,
    metrics: StorageMetrics,
    /// `--storage.max-certificates`.
    max_certificates: usize,
    /// Certificates whose published state is newer than their row.
    dirty: HashSet<CertKey>,
    /// Id of the newest committed event.
    last_event_id: i64,
    /// When the rows were last brought up to date.
    last_checkpoint: Instant,
}

impl Writer {
    pub(super) fn new(
        db: Database,
        state: Arc<State>,
        metrics: StorageMetrics,
        max_certificates: usize,
        last_event_id: i64,
    ) -> Self {
        Writer {
            db,
            state,
            metrics,
            max_certificates,
            dirty: HashSet::new(),
            last_event_id,
            last_checkpoint: Instant::now(),
        }
    }

    /// Commits batches until every sender is gone and the queue is drained, then saves
    /// the certificate rows one last time.
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
            let due = self.dirty.len() >= CHECKPOINT_DIRTY
                || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL;
            if due && !self.dirty.is_empty() {
                self.checkpoint();
            }
        }
        if !self.dirty.is_empty() {
            self.checkpoint();
        }
    }

    /// Writes and commits one batch, then publishes the changes and answers every job.
    fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        match self.write(&batch) {
            Ok(written) => {
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
                self.last_event_id = written.last_event_id;
                if written.checkpointed {
                    self.dirty.clear();
                    self.last_checkpoint = Instant::now();
                } else {
                    for (key, cert) in &written.changed {
                        match cert {
                            Some(_) => self.dirty.insert(key.clone()),
                            None => self.dirty.remove(key),
                        };
                    }
                }
                self.state.apply(written.changed);
                for (job, outcome) in batch.into_iter().zip(written.outcomes) {
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

    /// Writes a batch in one transaction; nothing is published unless it commits.
    fn write(&mut self, batch: &[Job]) -> rusqlite::Result<Written> {
        let tx = self
            .db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changes = Changes {
            state: &self.state,
            changed: HashMap::new(),
            tracked: self.state.len(),
            max: self.max_certificates,
            last_event_id: self.last_event_id,
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut forgot = false;
        for job in batch {
            outcomes.push(match job {
                Job::Record {
                    event,
                    digest,
                    payload,
                    received_at,
                    ..
                } => {
                    Outcome::Recorded(changes.record(&tx, event, digest, payload, *received_at)?)
                }
                Job::Forget { stack, name, .. } => {
                    forgot = true;
                    Outcome::Forgotten(changes.forget(&tx, stack, name)?)
                }
                Job::Probe { bytes, .. } => Outcome::Probed(probe(&tx, *bytes)?),
            });
        }
        // A removal must be checkpointed with it: replaying the removed certificate's
        // older events at the next start would bring it back.
        if forgot {
            for key in self.dirty.iter().chain(changes.changed.keys()) {
                let cert = match changes.changed.get(key) {
                    Some(cert) => cert.clone(),
                    None => self.state.get(&key.0, &key.1).map(|c| (*c).clone()),
                };
                if let Some(cert) = cert {
                    save_certificate(&tx, &cert)?;
                }
            }
            save_checkpoint(&tx, changes.last_event_id)?;
        }
        let Changes {
            changed,
            last_event_id,
            ..
        } = changes;
        tx.commit()?;
        Ok(Written {
            outcomes,
            changed,
            last_event_id,
            checkpointed: forgot,
        })
    }

    /// Saves every changed certificate row and the id of the newest event they include.
    fn checkpoint(&mut self) {
        let started = Instant::now();
        let saved = (|| -> rusqlite::Result<()> {
            let tx = self.db.conn.transaction()?;
            for (stack, name) in &self.dirty {
                match self.state.get(stack, name) {
                    Some(cert) => save_certificate(&tx, &cert)?,
                    None => delete_certificate(&tx, stack, name)?,
                }
            }
            save_checkpoint(&tx, self.last_event_id)?;
            tx.commit()
        })();
        match saved {
            Ok(()) => {
                tracing::debug!(
                    certificates = self.dirty.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "certificate rows checkpointed"
                );
                self.dirty.clear();
                self.last_checkpoint = Instant::now();
            }
            Err(error) => {
                // Nothing is lost: the events are committed and will be replayed.
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "certificate checkpoint failed; will retry");
            }
        }
    }
}

/// What a committed batch did.
struct Written {
    /// Each job's outcome, in order.
    outcomes: Vec<Outcome>,
    /// The new state of every certificate the batch touched (`None`: removed).
    changed: HashMap<CertKey, Option<Certificate>>,
    /// Id of the newest committed event.
    last_event_id: i64,
    /// Whether the batch also saved every changed row (it removed a certificate).
    checkpointed: bool,
}

/// How many of the largest events must fit on the storage filesystem for it to count
/// as ready: room for the event, its WAL copy and the checkpoint, with margin.
const FREE_SPACE_EVENTS: u64 = 4;

/// Commits a write of `bytes` and checks the free space: a nearly full disk still takes
/// a tiny write (SQLite reuses freed pages), but not the next event. The inner result
/// says whether there is room.
fn probe(tx: &Transaction<'_>, bytes: usize) -> rusqlite::Result<Result<(), String>> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', randomblob(?1))",
    )?
    .execute([i64::try_from(bytes).unwrap_or(i64::MAX)])?;
    let needed = FREE_SPACE_EVENTS.saturating_mul(bytes as u64);
    let path = tx.path().unwrap_or(".");
    let available = rustix::fs::statvfs(path)
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
        .map_err(|e| format!("cannot measure free space: {e}"));
    Ok(available.and_then(|available| {
        if available < needed {
            Err(format!(
                "only {available} bytes free on the storage filesystem, {needed} needed"
            ))
        } else {
            Ok(())
        }
    }))
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
    /// Id of the newest event, counting the batch's.
    last_event_id: i64,
}

impl Changes<'_> {
    /// The batch's view of a certificate.
    fn current(&mut self, stack: &str, name: &str) -> &mut Option<Certificate> {
        let state = self.state;
        self.changed
            .entry((stack.to_owned(), name.to_owned()))
            .or_insert_with(|| state.get(stack, name).map(|c| (*c).clone()))
    }

    /// Stores one event unless it is a duplicate (or would exceed the limit), and
    /// applies it to the batch's copy of its certificate.
    fn record(
        &mut self,
        tx: &Transaction<'_>,
        event: &SslEvent,
        digest: &[u8; 32],
        payload: &Bytes,
        received_at: f64,
    ) -> rusqlite::Result<Recorded> {
        // Looked up without copying into `changed`: a duplicate or a refused event
        // changes no certificate, so it must not republish or dirty one.
        let key = (event.stack.clone(), event.name.clone());
        let is_new = match self.changed.get(&key) {
            Some(cert) => cert.is_none(),
            None => self.state.get(&event.stack, &event.name).is_none(),
        };
        if is_new && self.tracked >= self.max {
            return Ok(Recorded::OverLimit);
        }
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events \
                 (event_ts, digest, received_at, event_type, stack, name, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                event.timestamp,
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
        self.last_event_id = tx.last_insert_rowid();
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
        if self.current(stack, name).take().is_none() {
            return Ok(Forgotten::Unknown);
        }
        self.tracked -= 1;
        delete_certificate(tx, stack, name)?;
        Ok(Forgotten::Removed)
    }
}

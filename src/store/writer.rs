//! The writer thread: group commits, the certificate limit, and saving the certificate
//! rows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::checkpointer::Checkpointer;
use super::database::{
    Database, delete_certificate, save_certificate, save_checkpoint, save_stack,
};
use super::{Forgotten, Job, Observed, Outcome, Recorded, StoreError};
use crate::event::{OBSERVATION_EVENT_TYPE, Observation, SslEvent};
use crate::metrics::StorageMetrics;
use crate::state::{CertKey, Certificate, State};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

/// How long a changed certificate waits before its row is saved, so that a certificate
/// changed many times in a burst is saved once (events after the oldest unsaved change
/// are replayed at start-up, so this also bounds that replay). In a large fleet each
/// saved row rewrites a page of its own, so this also sets how many pages a burst
/// writes. With 100,000 certificates and a burst over 1,000 of them (`wrk -c64`,
/// alternated pairs): 2 s instead of 1 s, 22,200-24,600 against 20,800-23,200 webhooks a
/// second, p99 5.5-6.5 against 6.3-7.4 ms; a start after `kill -9` in that burst
/// replays about 40,000 events instead of 8,000 and is ready in 0.85-0.89 s instead of
/// 0.66-0.69 s. 3 s gained no more and took up to 1.02 s.
const SAVE_AFTER: Duration = Duration::from_secs(2);

/// Unsaved certificates past which all of them are saved with the next batch. A burst
/// of new certificates is saved in few large transactions: many rows share a page.
const MAX_UNSAVED: usize = 8192;

/// Rows saved with one batch otherwise: saving is spread over the batches, so that no
/// commit waits behind a thousand row writes.
const SAVES_PER_BATCH: usize = 16;

/// Stores an event unless the same delivery is stored already.
const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events \
     (event_ts, digest, received_at, event_type, stack, name, payload) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// The writer thread's state.
pub(super) struct Writer {
    db: Database,
    /// Copies committed pages into the database file between commits.
    checkpointer: Checkpointer,
    /// The published state; only this thread changes it.
    state: Arc<State>,
    metrics: StorageMetrics,
    /// `--storage.max-certificates`.
    max_certificates: usize,
    /// Certificates whose published state is newer than their row.
    unsaved: Unsaved,
    /// Id of the newest committed event.
    last_event_id: i64,
}

impl Writer {
    pub(super) fn new(
        db: Database,
        checkpointer: Checkpointer,
        state: Arc<State>,
        metrics: StorageMetrics,
        max_certificates: usize,
        last_event_id: i64,
        replayed: Vec<(CertKey, i64)>,
    ) -> Self {
        // The rows a replay brought up to date are saved like any changed row, so that
        // the next start does not replay the same events again.
        let mut unsaved = Unsaved::default();
        let now = Instant::now();
        for (key, first_event) in &replayed {
            unsaved.add(key, *first_event, now);
        }
        Writer {
            db,
            checkpointer,
            state,
            metrics,
            max_certificates,
            unsaved,
            last_event_id,
        }
    }

    /// Commits batches until every sender is gone and the queue is drained, then saves
    /// every unsaved certificate row, so that the next start replays nothing.
    ///
    /// Rows are saved with the batches, and also once no webhook has come for
    /// [`IDLE_AFTER`] while some are due: after a burst, the rows are saved while it is
    /// quiet instead of waiting for the next webhooks to carry them (and the replay at
    /// the next start stays short).
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let idle = IdleWait::new();
        // Set when saving on its own failed: the next batch tries again, not a timer.
        let mut idle_failed = false;
        loop {
            let first = match self.unsaved.oldest_change() {
                Some(changed) if !idle_failed => {
                    let due_in = SAVE_AFTER.saturating_sub(changed.elapsed());
                    match idle.recv(&mut jobs, due_in.max(IDLE_AFTER)) {
                        Received::Job(job) => Some(job),
                        Received::Closed => None,
                        Received::Nothing => {
                            // An empty batch: it saves the rows that are due.
                            idle_failed = !self.commit(Vec::new());
                            continue;
                        }
                    }
                }
                _ => jobs.blocking_recv(),
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            idle_failed = !self.commit(batch);
        }
        if !self.unsaved.is_empty() {
            self.save_all();
        }
        self.checkpointer.stop(&mut self.db.conn);
    }

    /// Writes and commits one batch, then publishes the changes and answers every job.
    /// Returns whether it committed.
    fn commit(&mut self, batch: Vec<Job>) -> bool {
        let started = Instant::now();
        match self.write(&batch) {
            Ok(written) => {
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
                if written.saved_all {
                    self.unsaved.clear();
                } else {
                    self.unsaved.saved(written.saved_keys.len());
                    let now = Instant::now();
                    for (key, cert) in &written.changed {
                        if cert.is_some() && !written.saved_keys.contains(key) {
                            self.unsaved.add(key, self.last_event_id + 1, now);
                        }
                    }
                }
                self.last_event_id = written.last_event_id;
                self.state.apply(written.changed);
                for (job, outcome) in batch.into_iter().zip(written.outcomes) {
                    job.answer(Ok(outcome));
                }
                true
            }
            Err(error) => {
                self.metrics.commit_failures.inc();
                tracing::error!(%error, jobs = batch.len(), "storage commit failed");
                let reason = error.to_string();
                for job in batch {
                    job.answer(Err(StoreError::Write(reason.clone())));
                }
                false
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
            // At most one entry per job: sized once instead of grown while the batch runs.
            changed: HashMap::with_capacity(batch.len()),
            tracked: self.state.len(),
            max: self.max_certificates,
            last_event_id: self.last_event_id,
        };
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        // Set when a certificate was removed or moved to another key.
        let mut forgot = false;
        for job in batch {
            outcomes.push(match job {
                Job::Record {
                    event,
                    digest,
                    payload,
                    received_at,
                    ..
                } => Outcome::Recorded(changes.record(
                    &tx,
                    &mut insert,
                    event,
                    digest,
                    payload,
                    *received_at,
                )?),
                Job::Forget { stack, name, .. } => {
                    forgot = true;
                    Outcome::Forgotten(changes.forget(&tx, stack, name)?)
                }
                Job::Probe { bytes, .. } => Outcome::Probed(probe(&tx, *bytes)?),
                Job::Observe { observations, .. } => {
                    let mut observed = Observed::default();
                    for observation in observations {
                        let count = match changes.observe(&tx, &mut insert, observation)? {
                            Seen::Applied => &mut observed.applied,
                            Seen::Unchanged => &mut observed.unchanged,
                            Seen::OverLimit => &mut observed.over_limit,
                        };
                        *count += 1;
                    }
                    Outcome::Observed(observed)
                }
                Job::Stack {
                    record,
                    previous_label,
                    ..
                } => {
                    save_stack(&tx, record)?;
                    let moved = match previous_label {
                        Some(from) if from != record.label() => {
                            changes.relabel(&tx, from, record.label())?
                        }
                        _ => 0,
                    };
                    forgot |= moved > 0;
                    Outcome::Stacked(moved)
                }
            });
        }
        drop(insert);
        let last_event_id = changes.last_event_id;
        let mut saved_keys = HashSet::new();
        let saved_all = if forgot {
            // A removal (or a move) is saved with every other row: replaying the removed
            // certificate's older events at the next start would bring it back.
            let keys = self.unsaved.keys().chain(changes.changed.keys());
            save_rows(&tx, keys, &changes.changed, &self.state, last_event_id)?;
            save_checkpoint(&tx, last_event_id)?;
            true
        } else {
            let due = match self.unsaved.len() > MAX_UNSAVED {
                true => self.unsaved.len(),
                false => self.unsaved.due(SAVES_PER_BATCH, Instant::now()),
            };
            if due > 0 {
                saved_keys.extend(self.unsaved.keys().take(due).cloned());
                // In key order: neighbouring rows share pages.
                let mut keys: Vec<&CertKey> = saved_keys.iter().collect();
                keys.sort_unstable();
                let keys = keys.into_iter();
                save_rows(&tx, keys, &changes.changed, &self.state, last_event_id)?;
                // The rows hold every event before the oldest change left unsaved; the
                // batch's own changes count as unsaved unless just saved.
                let batch_unsaved = changes
                    .changed
                    .iter()
                    .any(|(key, cert)| cert.is_some() && !saved_keys.contains(key));
                let oldest = self
                    .unsaved
                    .first_event_after(due)
                    .or(batch_unsaved.then_some(self.last_event_id + 1));
                save_checkpoint(&tx, oldest.map_or(last_event_id, |first| first - 1))?;
            }
            false
        };
        tx.commit()?;
        Ok(Written {
            outcomes,
            changed: changes.changed,
            last_event_id,
            saved_keys,
            saved_all,
        })
    }

    /// Saves every unsaved certificate row, in its own transaction.
    fn save_all(&mut self) {
        let started = Instant::now();
        let saved = (|| -> rusqlite::Result<()> {
            let tx = self.db.conn.transaction()?;
            let keys = self.unsaved.keys();
            save_rows(&tx, keys, &HashMap::new(), &self.state, self.last_event_id)?;
            save_checkpoint(&tx, self.last_event_id)?;
            tx.commit()
        })();
        match saved {
            Ok(()) => {
                tracing::debug!(
                    certificates = self.unsaved.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "certificate rows saved"
                );
                self.unsaved.clear();
            }
            Err(error) => {
                // Nothing is lost: the events are committed and will be replayed.
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "cannot save the certificate rows; the next start replays their events");
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
    /// The oldest unsaved rows the batch saved.
    saved_keys: HashSet<CertKey>,
    /// Whether it saved every row (it removed a certificate).
    saved_all: bool,
}

/// Saves the rows of `keys` as of the end of a batch whose newest event is
/// `last_event_id`: the batch's version of a certificate if it changed one, else the
/// published one; a certificate that is gone loses its row.
fn save_rows<'k>(
    tx: &Transaction<'_>,
    keys: impl Iterator<Item = &'k CertKey>,
    changed: &HashMap<CertKey, Option<Certificate>>,
    state: &State,
    last_event_id: i64,
) -> rusqlite::Result<()> {
    for key in keys {
        let saved = match changed.get(key) {
            Some(Some(cert)) => save_certificate(tx, cert, last_event_id),
            Some(None) => delete_certificate(tx, key.stack(), key.name()),
            None => match state.get_key(key) {
                Some(cert) => save_certificate(tx, &cert, last_event_id),
                None => delete_certificate(tx, key.stack(), key.name()),
            },
        };
        saved?;
    }
    Ok(())
}

/// How long the queue must stay empty before due rows are saved on their own.
const IDLE_AFTER: Duration = Duration::from_millis(5);

/// What waiting for a job gave.
// Moved once per batch, straight out of the match: a box would cost more than the bytes.
#[allow(clippy::large_enum_variant)]
enum Received {
    Job(Job),
    /// Every sender is gone and the queue is empty.
    Closed,
    /// No job within the time given.
    Nothing,
}

/// Waits for a job with a time limit, which the queue's blocking receive lacks: the
/// receive is polled with a waker that unparks this thread, which parks in between.
struct IdleWait {
    waker: Waker,
}

/// Wakes the writer thread parked in [`IdleWait::recv`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl IdleWait {
    /// For the calling thread.
    fn new() -> Self {
        IdleWait {
            waker: Waker::from(Arc::new(Unpark(std::thread::current()))),
        }
    }

    /// The next job, waiting at most `timeout` for one.
    fn recv(&self, jobs: &mut mpsc::Receiver<Job>, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        let mut cx = Context::from_waker(&self.waker);
        loop {
            match jobs.poll_recv(&mut cx) {
                Poll::Ready(Some(job)) => return Received::Job(job),
                Poll::Ready(None) => return Received::Closed,
                Poll::Pending => {}
            }
            // Parking returns on an unpark, at the deadline, or spuriously: poll again.
            match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return Received::Nothing,
            }
        }
    }
}

/// Certificates whose row is older than their published state, oldest change first.
#[derive(Default)]
struct Unsaved {
    /// Each with the id of an event its row lacks (all later ones too), and since when.
    queue: VecDeque<(CertKey, i64, Instant)>,
    /// The certificates in `queue`.
    members: HashSet<CertKey>,
}

impl Unsaved {
    /// Notes that `key`'s row lacks the events from `first_event` on, unless it already
    /// lacks older ones.
    fn add(&mut self, key: &CertKey, first_event: i64, now: Instant) {
        if self.members.insert(key.clone()) {
            self.queue.push_back((key.clone(), first_event, now));
        }
    }

    /// How many of the oldest entries waited `SAVE_AFTER`, at most `limit`.
    fn due(&self, limit: usize, now: Instant) -> usize {
        self.queue
            .iter()
            .take(limit)
            .take_while(|(_, _, since)| now.duration_since(*since) >= SAVE_AFTER)
            .count()
    }

    /// When the oldest unsaved change was made, if any row is unsaved.
    fn oldest_change(&self) -> Option<Instant> {
        self.queue.front().map(|(_, _, since)| *since)
    }

    /// The unsaved certificates, oldest change first.
    fn keys(&self) -> impl Iterator<Item = &CertKey> {
        self.queue.iter().map(|(key, _, _)| key)
    }

    /// The oldest event a row lacks once the first `saved` entries are saved.
    fn first_event_after(&self, saved: usize) -> Option<i64> {
        self.queue.get(saved).map(|(_, first, _)| *first)
    }

    /// Forgets the first `saved` entries, whose rows were committed.
    fn saved(&mut self, saved: usize) {
        for (key, _, _) in self.queue.drain(..saved.min(self.queue.len())) {
            self.members.remove(&key);
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.members.clear();
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
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

/// What became of one observation.
enum Seen {
    Applied,
    Unchanged,
    OverLimit,
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
            .entry(CertKey::new(stack, name))
            .or_insert_with_key(|key| state.get_key(key).map(|c| (*c).clone()))
    }

    /// Stores one event unless it is a duplicate (or would exceed the limit), and
    /// applies it to the batch's copy of its certificate.
    fn record(
        &mut self,
        tx: &Transaction<'_>,
        insert: &mut CachedStatement<'_>,
        event: &SslEvent,
        digest: &[u8; 32],
        payload: &Bytes,
        received_at: f64,
    ) -> rusqlite::Result<Recorded> {
        // Looked up without copying into `changed`: a duplicate or a refused event
        // changes no certificate, so it must not republish or dirty one.
        let key = CertKey::new(&event.stack, &event.name);
        let (is_new, published) = match self.changed.get(&key) {
            Some(cert) => (cert.is_none(), None),
            None => {
                let published = self.state.get_key(&key);
                (published.is_none(), published)
            }
        };
        if is_new && self.tracked >= self.max {
            return Ok(Recorded::OverLimit);
        }
        let inserted = insert.execute(params![
            event.timestamp,
            &digest[..],
            received_at,
            event.kind.event_type(),
            event.stack,
            event.name,
            // The body parsed as JSON, so it is UTF-8: stored as text without a
            // second check.
            ToSqlOutput::Borrowed(ValueRef::Text(payload)),
        ])?;
        if inserted == 0 {
            return Ok(Recorded::Duplicate);
        }
        self.last_event_id = tx.last_insert_rowid();
        if is_new {
            self.tracked += 1;
        }
        self.changed
            .entry(key)
            .or_insert_with(|| published.map(|c| (*c).clone()))
            .get_or_insert_with(|| Certificate::new(&event.stack, &event.name))
            .apply(event);
        Ok(Recorded::Accepted)
    }

    /// Stores and applies one API observation unless it would change nothing (or would
    /// add a certificate past the limit).
    fn observe(
        &mut self,
        tx: &Transaction<'_>,
        insert: &mut CachedStatement<'_>,
        observation: &Observation,
    ) -> rusqlite::Result<Seen> {
        let current = self.current(&observation.stack, &observation.name).clone();
        let is_new = current.is_none();
        if is_new && self.tracked >= self.max {
            return Ok(Seen::OverLimit);
        }
        let mut cert = current
            .clone()
            .unwrap_or_else(|| Certificate::new(&observation.stack, &observation.name));
        cert.observe(observation);
        if current.is_some_and(|before| before.same_facts(&cert)) {
            return Ok(Seen::Unchanged);
        }
        let payload = serde_json::to_string(observation)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let digest: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
        let inserted = insert.execute(params![
            observation.fetched_at,
            &digest[..],
            observation.fetched_at,
            OBSERVATION_EVENT_TYPE,
            observation.stack,
            observation.name,
            payload,
        ])?;
        if inserted == 0 {
            return Ok(Seen::Unchanged);
        }
        self.last_event_id = tx.last_insert_rowid();
        if is_new {
            self.tracked += 1;
        }
        *self.current(&observation.stack, &observation.name) = Some(cert);
        Ok(Seen::Applied)
    }

    /// Moves every certificate labelled `from` to the label `to`, merging each into the
    /// certificate of the same name already there. Returns how many moved.
    fn relabel(&mut self, tx: &Transaction<'_>, from: &str, to: &str) -> rusqlite::Result<usize> {
        let mut keys: Vec<CertKey> = self.state.keys_of_stack(from);
        keys.extend(self.changed.keys().filter(|k| k.stack() == from).cloned());
        keys.sort_unstable();
        keys.dedup();
        let mut moved = 0;
        for key in keys {
            let Some(mut cert) = self.current(from, key.name()).take() else {
                continue;
            };
            delete_certificate(tx, from, key.name())?;
            match self.current(to, key.name()) {
                Some(there) => {
                    there.absorb(cert);
                    self.tracked -= 1;
                }
                empty => {
                    cert.stack = to.to_owned();
                    *empty = Some(cert);
                }
            }
            moved += 1;
        }
        Ok(moved)
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

//! The writer of a PostgreSQL store: takes every queued job, writes them in one
//! transaction and commits once (group commit), then wakes the tail and, from a task of
//! its own once the tail applied the batch, answers; the next batch starts meanwhile. An
//! event is answered only after its transaction committed; while the database is
//! briefly gone the batch is retried on fresh connections, each job for the retry
//! window (`PostgresConfig::retry_window`: 20 s, well inside Cloud66's 30 s timeout)
//! from when the writer took it, and then answered with an error (503). Jobs queued
//! during the retries join the batch with windows of their own, so none waits for
//! another's window before its own starts. Retrying a batch whose commit may have
//! happened is safe: events are inserted with `ON CONFLICT DO NOTHING` on their dedup
//! key, so a second try finds them stored.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use sha2::{Digest, Sha256};

use super::connect::Held;
use super::stacks::{STACK_EVENT_TYPE, StackEvent};
use super::tail::{CHANNEL, Position, TailHandle};
use super::{FORGET_EVENT_TYPE, PgError, stacks};
use crate::event::OBSERVATION_EVENT_TYPE;
use crate::state::{CertKey, Certificate, State};
use crate::store::{Forgotten, Job, Observed, Outcome, Recorded, StoreError};

/// Jobs written in one transaction at most.
const MAX_BATCH: usize = 512;

/// How long an answer waits for the tail to apply the batch (so the answering replica
/// shows the event at once); the event is committed either way.
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// Inserts a batch's events in the order given, each unless its dedup key is stored
/// (by an earlier row of the same statement too); returns the digest and log position
/// of each inserted.
const INSERT_EVENTS: &str = "INSERT INTO cloud66_ssl_exporter_events \
     (event_ts, digest, received_at, event_type, stack, name, payload) \
     SELECT * FROM unnest($1::float8[], $2::bytea[], $3::float8[], $4::text[], $5::text[], \
     $6::text[], $7::text[]) \
     ON CONFLICT (event_ts, digest) DO NOTHING \
     RETURNING digest, xid::text::bigint, id";

/// Runs until the queue is closed and drained. While the database is unreachable, a
/// job is retried for `retry_window` at most (plus the try under way).
pub(super) async fn run(
    pool: Pool,
    retry_window: Duration,
    state: Arc<State>,
    tail: TailHandle,
    max_certificates: usize,
    mut jobs: mpsc::Receiver<Job>,
) {
    let mut held = Held::new(pool);
    while let Some(first) = jobs.recv().await {
        let mut batch = Batch::default();
        batch.admit(first, retry_window);
        batch.take_queued(&mut jobs, retry_window);
        if batch.jobs.is_empty() {
            continue;
        }
        let mut backoff = Duration::from_millis(50);
        let written = loop {
            let within = batch.time_left();
            match write(&mut held, within, &state, max_certificates, &batch.jobs).await {
                Ok(written) => break Ok(written),
                Err(e) if e.is_transient() => {
                    // Each job has its own window, from when the writer took it: answer
                    // those whose window ends before the next try, retry the others
                    // with what was queued meanwhile (which would otherwise wait for
                    // this batch's window before starting its own).
                    batch.expire(Instant::now() + backoff, &e);
                    if batch.jobs.is_empty() {
                        break Err(None);
                    }
                    tracing::warn!(error = %e, jobs = batch.jobs.len(), "storage write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    batch.take_queued(&mut jobs, retry_window);
                }
                Err(e) => break Err(Some(e)),
            }
        };
        match written {
            Ok((outcomes, newest)) => {
                let answer = |jobs: Vec<Job>| {
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        job.answer(Ok(outcome));
                    }
                };
                match newest {
                    Some(newest) => {
                        // Answered once this replica shows the batch, by a task of its
                        // own: the next batch need not wait for the tail.
                        tail.wake_for(newest);
                        let mut tail = tail.clone();
                        tokio::spawn(async move {
                            tail.wait_for(newest, APPLY_WAIT).await;
                            answer(batch.jobs);
                        });
                    }
                    None => answer(batch.jobs),
                }
            }
            Err(None) => {}
            Err(Some(e)) => {
                tracing::error!(error = %e, jobs = batch.jobs.len(), "storage write failed");
                for job in batch.jobs {
                    job.answer(Err(StoreError::Write(e.to_string())));
                }
            }
        }
    }
}

/// The jobs of one transaction, each with the end of its retry window.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    deadlines: Vec<Instant>,
}

impl Batch {
    /// Adds `job`, retried for `retry_window` from now.
    fn admit(&mut self, job: Job, retry_window: Duration) {
        self.jobs.push(job);
        self.deadlines.push(Instant::now() + retry_window);
    }

    /// Until the first of the jobs' windows ends.
    fn time_left(&self) -> Duration {
        let now = Instant::now();
        self.deadlines
            .iter()
            .map(|deadline| deadline.saturating_duration_since(now))
            .min()
            .unwrap_or_default()
    }

    /// Adds the queued jobs, up to [`MAX_BATCH`].
    fn take_queued(&mut self, jobs: &mut mpsc::Receiver<Job>, retry_window: Duration) {
        while self.jobs.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => self.admit(job, retry_window),
                Err(_) => break,
            }
        }
    }

    /// Answers `error` to the jobs whose window ends before `next_try`, and drops them.
    fn expire(&mut self, next_try: Instant, error: &PgError) {
        if self.deadlines.iter().all(|deadline| *deadline > next_try) {
            return;
        }
        tracing::error!(error = %error, "storage write failed for the whole retry window");
        let jobs = std::mem::take(&mut self.jobs);
        let deadlines = std::mem::take(&mut self.deadlines);
        for (job, deadline) in jobs.into_iter().zip(deadlines) {
            if deadline > next_try {
                self.jobs.push(job);
                self.deadlines.push(deadline);
            } else {
                job.answer(Err(StoreError::Write(error.to_string())));
            }
        }
    }
}

/// Writes `batch` in one transaction on the connection `held` keeps; the outcome of
/// each job, and the newest log position written, if any. Getting a connection (opening
/// one, while the database is away) takes `within` at most, so that no job is answered
/// long after its window.
async fn write(
    held: &mut Held,
    within: Duration,
    state: &State,
    max_certificates: usize,
    batch: &[Job],
) -> Result<(Vec<Outcome>, Option<Position>), PgError> {
    let mut timeouts = held.pool().timeouts();
    for timeout in [
        &mut timeouts.wait,
        &mut timeouts.create,
        &mut timeouts.recycle,
    ] {
        *timeout = Some(timeout.map_or(within, |t| t.min(within)));
    }
    held.with(&timeouts, async |client| {
        let written = write_on(client, state, max_certificates, batch).await?;
        if written.1.is_some() {
            // Outside the transaction: PostgreSQL serialises the commits of transactions
            // that notify, which would keep two replicas' writers from committing
            // together. Only a wake-up (the other replicas also poll), so its failure
            // is not the batch's: the events are committed.
            if let Err(e) = client.batch_execute(&format!("NOTIFY {CHANNEL}")).await {
                tracing::debug!(error = %PgError::from(e), "cannot notify the other replicas");
            }
        }
        Ok(written)
    })
    .await
}

/// Writes `batch` in one transaction on `client`: all its events in one statement, in
/// the order of the jobs (a forget after a delivery in the same batch stays after it).
async fn write_on(
    client: &mut deadpool_postgres::Object,
    state: &State,
    max_certificates: usize,
    batch: &[Job],
) -> Result<(Vec<Outcome>, Option<Position>), PgError> {
    let tx = client.transaction().await?;
    let mut limit = Limit {
        state,
        max_certificates,
        added: HashSet::new(),
    };
    let mut rows = Rows::default();
    let mut pending = Vec::with_capacity(batch.len());
    for job in batch {
        pending.push(match job {
            Job::Record {
                event,
                digest,
                payload,
                received_at,
                ..
            } => {
                if limit.admits(&CertKey::new(&event.stack, &event.name)) {
                    rows.push(Row {
                        event_ts: event.timestamp,
                        digest: Cow::Borrowed(digest),
                        received_at: *received_at,
                        event_type: event.kind.event_type(),
                        stack: &event.stack,
                        name: &event.name,
                        payload: String::from_utf8_lossy(payload),
                    });
                    Pending::Record(*digest)
                } else {
                    Pending::Done(Outcome::Recorded(Recorded::OverLimit))
                }
            }
            Job::Forget { stack, name, .. } => {
                if state.get_key(&CertKey::new(stack, name)).is_none() {
                    Pending::Done(Outcome::Forgotten(Forgotten::Unknown))
                } else {
                    // A key of its own: forgetting twice is two events.
                    let digest = super::super::database::generate_token()
                        .map_err(|e| PgError::Pool(format!("no randomness: {e}")))?;
                    rows.push(Row::now(
                        FORGET_EVENT_TYPE,
                        stack,
                        name,
                        digest.into_bytes(),
                        Cow::Borrowed("{}"),
                    ));
                    Pending::Done(Outcome::Forgotten(Forgotten::Removed))
                }
            }
            Job::Probe { bytes, .. } => {
                let filler = "x".repeat(*bytes);
                tx.execute(
                    "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES ('probe', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&filler],
                )
                .await?;
                Pending::Done(Outcome::Probed(Ok(())))
            }
            Job::Observe { observations, .. } => {
                let mut observed = Observed::default();
                let mut digests = Vec::new();
                for observation in observations {
                    let key = CertKey::new(&observation.stack, &observation.name);
                    if !limit.admits(&key) {
                        observed.over_limit += 1;
                        continue;
                    }
                    let current = state.get_key(&key);
                    let mut cert = current
                        .as_deref()
                        .cloned()
                        .unwrap_or_else(|| Certificate::new(&observation.stack, &observation.name));
                    cert.observe(observation);
                    if current
                        .as_deref()
                        .is_some_and(|before| before.same_facts(&cert))
                    {
                        observed.unchanged += 1;
                        continue;
                    }
                    let payload = serde_json::to_string(observation).map_err(|e| {
                        PgError::Refused(format!("cannot store an observation: {e}"))
                    })?;
                    let digest: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
                    rows.push(Row {
                        event_ts: observation.fetched_at,
                        digest: Cow::Owned(digest.to_vec()),
                        received_at: observation.fetched_at,
                        event_type: OBSERVATION_EVENT_TYPE,
                        stack: &observation.stack,
                        name: &observation.name,
                        payload: Cow::Owned(payload),
                    });
                    digests.push(digest);
                }
                Pending::Observe(observed, digests)
            }
            Job::Stack {
                record,
                previous_label,
                ..
            } => {
                stacks::save(&tx, record).await?;
                let moved_from = previous_label
                    .as_deref()
                    .filter(|from| *from != record.label());
                let moved = moved_from.map_or(0, |from| state.keys_of_stack(from).len());
                let (payload, digest) =
                    StackEvent::new(record, moved_from.map(str::to_owned)).payload()?;
                rows.push(Row::now(
                    STACK_EVENT_TYPE,
                    record.label(),
                    "",
                    digest.to_vec(),
                    Cow::Owned(payload),
                ));
                Pending::Done(Outcome::Stacked(moved))
            }
        });
    }
    let mut inserted = rows.insert(&tx).await?;
    tx.commit().await?;
    let newest = inserted.values().max().copied();
    let mut stored = |digest: &[u8]| inserted.remove(digest).is_some();
    let outcomes = pending
        .into_iter()
        .map(|pending| match pending {
            Pending::Done(outcome) => outcome,
            Pending::Record(digest) => Outcome::Recorded(if stored(&digest) {
                Recorded::Accepted
            } else {
                Recorded::Duplicate
            }),
            Pending::Observe(mut observed, digests) => {
                for digest in digests {
                    if stored(&digest) {
                        observed.applied += 1;
                    } else {
                        observed.unchanged += 1;
                    }
                }
                Outcome::Observed(observed)
            }
        })
        .collect();
    Ok((outcomes, newest))
}

/// A job's outcome once its events are inserted.
enum Pending {
    /// Known before.
    Done(Outcome),
    /// A delivery: accepted if its digest was inserted, a duplicate if not.
    Record([u8; 32]),
    /// Observations: those whose digests were inserted are applied, the others were
    /// already stored.
    Observe(Observed, Vec<[u8; 32]>),
}

/// The certificate limit over one batch: a certificate the state lacks counts from the
/// first job of the batch that adds it, stored yet or not (a delivery another replica
/// stored first adds it all the same).
struct Limit<'a> {
    state: &'a State,
    max_certificates: usize,
    added: HashSet<CertKey>,
}

impl Limit<'_> {
    /// Whether an event for `key` may be stored.
    fn admits(&mut self, key: &CertKey) -> bool {
        if self.state.get_key(key).is_some() || self.added.contains(key) {
            return true;
        }
        if self.state.len() + self.added.len() >= self.max_certificates {
            return false;
        }
        self.added.insert(key.clone());
        true
    }
}

/// One event to insert.
struct Row<'a> {
    event_ts: f64,
    digest: Cow<'a, [u8]>,
    received_at: f64,
    event_type: &'a str,
    stack: &'a str,
    name: &'a str,
    payload: Cow<'a, str>,
}

impl<'a> Row<'a> {
    /// An event of the exporter's own (a forget, a stack), at and received now.
    fn now(
        event_type: &'a str,
        stack: &'a str,
        name: &'a str,
        digest: Vec<u8>,
        payload: Cow<'a, str>,
    ) -> Self {
        let now = crate::now();
        Row {
            event_ts: now,
            digest: Cow::Owned(digest),
            received_at: now,
            event_type,
            stack,
            name,
            payload,
        }
    }
}

/// The events of a batch, column by column.
#[derive(Default)]
struct Rows<'a> {
    event_ts: Vec<f64>,
    digests: Vec<Cow<'a, [u8]>>,
    received_at: Vec<f64>,
    event_types: Vec<&'a str>,
    stacks: Vec<&'a str>,
    names: Vec<&'a str>,
    payloads: Vec<Cow<'a, str>>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, row: Row<'a>) {
        self.event_ts.push(row.event_ts);
        self.digests.push(row.digest);
        self.received_at.push(row.received_at);
        self.event_types.push(row.event_type);
        self.stacks.push(row.stack);
        self.names.push(row.name);
        self.payloads.push(row.payload);
    }

    /// Inserts them in one statement; the digest and log position of each inserted
    /// (those whose dedup key was stored, by an earlier row too, are not).
    async fn insert(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<HashMap<Vec<u8>, Position>, PgError> {
        if self.event_ts.is_empty() {
            return Ok(HashMap::new());
        }
        let insert = tx.prepare_cached(INSERT_EVENTS).await?;
        let rows = tx
            .query(
                &insert,
                &[
                    &self.event_ts,
                    &self.digests,
                    &self.received_at,
                    &self.event_types,
                    &self.stacks,
                    &self.names,
                    &self.payloads,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let position = Position {
                    xid: row.get(1),
                    id: row.get(2),
                };
                (row.get(0), position)
            })
            .collect())
    }
}

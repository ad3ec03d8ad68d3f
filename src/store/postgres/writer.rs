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

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use sha2::{Digest, Sha256};

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

/// Inserts one event unless its dedup key is stored; returns its position if inserted.
const INSERT_EVENT: &str = "INSERT INTO cloud66_ssl_exporter_events \
     (event_ts, digest, received_at, event_type, stack, name, payload) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_ts, digest) DO NOTHING \
     RETURNING xid::text::bigint, id";

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
            match write(&pool, within, &state, max_certificates, &batch.jobs).await {
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

/// Writes `batch` in one transaction; the outcome of each job, and the newest log
/// position written, if any. Getting a connection (opening one, while the database is
/// away) takes `within` at most, so that no job is answered long after its window.
async fn write(
    pool: &Pool,
    within: Duration,
    state: &State,
    max_certificates: usize,
    batch: &[Job],
) -> Result<(Vec<Outcome>, Option<Position>), PgError> {
    let mut timeouts = pool.timeouts();
    for timeout in [
        &mut timeouts.wait,
        &mut timeouts.create,
        &mut timeouts.recycle,
    ] {
        *timeout = Some(timeout.map_or(within, |t| t.min(within)));
    }
    let mut client = pool.timeout_get(&timeouts).await?;
    let tx = client.transaction().await?;
    let insert = tx.prepare(INSERT_EVENT).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut newest: Option<Position> = None;
    // Certificates this batch adds, so that the limit counts them before the tail does.
    let mut added = 0;
    for job in batch {
        let outcome = match job {
            Job::Record {
                event,
                digest,
                payload,
                received_at,
                ..
            } => {
                let key = CertKey::new(&event.stack, &event.name);
                if state.get_key(&key).is_none() && state.len() + added >= max_certificates {
                    Outcome::Recorded(Recorded::OverLimit)
                } else {
                    let payload = String::from_utf8_lossy(payload);
                    let row = tx
                        .query_opt(
                            &insert,
                            &[
                                &event.timestamp,
                                &digest.as_slice(),
                                received_at,
                                &event.kind.event_type(),
                                &event.stack,
                                &event.name,
                                &payload.as_ref(),
                            ],
                        )
                        .await?;
                    match row {
                        Some(row) => {
                            if state.get_key(&key).is_none() {
                                added += 1;
                            }
                            newest = newest.max(Some(position(&row)));
                            Outcome::Recorded(Recorded::Accepted)
                        }
                        None => Outcome::Recorded(Recorded::Duplicate),
                    }
                }
            }
            Job::Forget { stack, name, .. } => {
                if state.get_key(&CertKey::new(stack, name)).is_none() {
                    Outcome::Forgotten(Forgotten::Unknown)
                } else {
                    let digest = super::super::database::generate_token()
                        .map_err(|e| PgError::Pool(format!("no randomness: {e}")))?;
                    let row = tx
                        .query_one(
                            &insert,
                            &[
                                &crate::now(),
                                &digest.as_bytes(),
                                &crate::now(),
                                &FORGET_EVENT_TYPE,
                                stack,
                                name,
                                &"{}",
                            ],
                        )
                        .await?;
                    newest = newest.max(Some(position(&row)));
                    Outcome::Forgotten(Forgotten::Removed)
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
                Outcome::Probed(Ok(()))
            }
            Job::Observe { observations, .. } => {
                let mut observed = Observed::default();
                for observation in observations {
                    let key = CertKey::new(&observation.stack, &observation.name);
                    let current = state.get_key(&key);
                    if current.is_none() && state.len() + added >= max_certificates {
                        observed.over_limit += 1;
                        continue;
                    }
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
                    let row = tx
                        .query_opt(
                            &insert,
                            &[
                                &observation.fetched_at,
                                &digest.as_slice(),
                                &observation.fetched_at,
                                &OBSERVATION_EVENT_TYPE,
                                &observation.stack,
                                &observation.name,
                                &payload,
                            ],
                        )
                        .await?;
                    match row {
                        Some(row) => {
                            observed.applied += 1;
                            if current.is_none() {
                                added += 1;
                            }
                            newest = newest.max(Some(position(&row)));
                        }
                        None => observed.unchanged += 1,
                    }
                }
                Outcome::Observed(observed)
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
                let now = crate::now();
                let row = tx
                    .query_one(
                        &insert,
                        &[
                            &now,
                            &digest.as_slice(),
                            &now,
                            &STACK_EVENT_TYPE,
                            &record.label(),
                            &"",
                            &payload,
                        ],
                    )
                    .await?;
                newest = newest.max(Some(position(&row)));
                Outcome::Stacked(moved)
            }
        };
        outcomes.push(outcome);
    }
    if newest.is_some() {
        tx.execute(&format!("NOTIFY {CHANNEL}"), &[]).await?;
    }
    tx.commit().await?;
    Ok((outcomes, newest))
}

/// The log position `INSERT_EVENT` returned.
fn position(row: &tokio_postgres::Row) -> Position {
    Position {
        xid: row.get(0),
        id: row.get(1),
    }
}

//! The tail: applies the shared event log to this replica's in-memory state, in log
//! order, whichever replica wrote the events; and, on the leader, writes the snapshot
//! replicas start from.
//!
//! The position is `(xid, id)`: the writing transaction's id, then the row's. A row is
//! read only once its transaction is older than every transaction still running
//! (`xid < pg_snapshot_xmin(pg_current_snapshot())`), so a transaction that took its
//! ids early and commits late is read when it commits, before anything after it: no
//! row is ever skipped, which reading `id > last` would do (see POSTGRES.md). The tail
//! wakes on its own writer's commit, on `NOTIFY` from any replica's, and every
//! [`POLL`] in case a notification was lost (they are, across reconnects). When its
//! writer waits for events that a transaction still running holds back, it reads again
//! after a few milliseconds instead: that transaction's commit wakes nobody.
//!
//! Only the tail changes the state, so applying in the same order gives every replica
//! the same state, and the snapshot it writes is consistent with its position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};
use tokio_postgres::Client;

use super::connect::{self, Held};
use super::leader::Leadership;
use super::schema::LOCK_KEY;
use super::stacks::{STACK_EVENT_TYPE, StackEvent};
use super::{FORGET_EVENT_TYPE, PgError};
use crate::cloud66::StackRecord;
use crate::config::PostgresConfig;
use crate::event::{CertInfo, EventKind};
use crate::metrics::{Deliveries, LastDelivery, SeenDelivery, TailMetrics, WebhookResult};
use crate::state::{CertKey, Certificate, State};
use crate::store::database::Stored;

/// A place in the log: every event at or before it is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    /// The writing transaction (`xid8`, below 2^63).
    pub xid: i64,
    /// The row.
    pub id: i64,
}

/// Events read and applied in one step at most.
const BATCH: i64 = 5_000;

/// The longest the tail sleeps without a wake-up.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// The lock class of snapshot writing (with [`LOCK_KEY`]).
const SNAPSHOT_LOCK: i32 = 2;

/// The channel writers notify on commit.
pub(super) const CHANNEL: &str = "cloud66_ssl_exporter_events";

/// Rows per statement when writing the snapshot.
const SNAPSHOT_CHUNK: usize = 1_000;

/// The columns of the snapshot table, in the order rows are read and written.
const COLUMNS: &str = "stack, name, expiry, expiry_event_ts, last_event_ts, install_failing, \
     install_event_ts, error_message, server_names, lets_encrypt, has_intermediate_cert, \
     ssl_termination, status, install_failures, install_successes, expire_soon_notifications, \
     info_ts, observed_ts, last_event_type";

/// The events after a position that no running transaction can still add to.
const NEXT_EVENTS: &str = "SELECT xid::text::bigint, id, event_type, stack, name, payload, received_at \
     FROM cloud66_ssl_exporter_events \
     WHERE (xid, id) > ($1::bigint::text::xid8, $2) \
       AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY xid, id LIMIT $3";

/// The first pause before the tail reads again when a writer waits for events it could
/// not read yet (an older transaction still running held them back); it doubles up to
/// [`POLL`].
const RETRY_FIRST: Duration = Duration::from_millis(2);

/// What the writer holds of the tail: a way to wake it, and how far it got.
#[derive(Clone)]
pub(super) struct TailHandle {
    wake: Arc<Notify>,
    applied: watch::Receiver<Position>,
    /// The newest position a writer waits for.
    wanted: Arc<watch::Sender<Position>>,
}

impl TailHandle {
    /// Asks the tail to read the log now, up to `position` at least.
    pub(super) fn wake_for(&self, position: Position) {
        self.wanted.send_if_modified(|wanted| {
            let newer = position > *wanted;
            if newer {
                *wanted = position;
            }
            newer
        });
        self.wake.notify_one();
    }

    /// Waits until the tail has applied `position`, for at most `timeout`; whether it did.
    pub(super) async fn wait_for(&mut self, position: Position, timeout: Duration) -> bool {
        let reached = self.applied.wait_for(|applied| *applied >= position);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }
}

/// Who learns of each stack the log saves (the Cloud66 API reconciliation's directory).
pub(crate) type StackSink = Arc<dyn Fn(StackRecord) + Send + Sync>;

/// Where the tail reports: how far behind it is, the newest delivery it applied (which
/// may have reached another replica), and the stacks the leader saved.
#[derive(Clone)]
pub(crate) struct Observers {
    /// `storage_tail_lag_seconds`.
    pub metrics: TailMetrics,
    /// The last webhook, shared with the pages and `last_webhook_timestamp_seconds`.
    pub deliveries: Deliveries,
    /// The reconciliation's directory, when it is configured.
    pub stacks: Option<StackSink>,
}

/// A snapshot write in progress: how many rows it wrote, or why not and which keys to
/// write again.
type SnapshotTask = tokio::task::JoinHandle<Result<usize, (PgError, Vec<CertKey>)>>;

/// The tail of one replica.
pub(super) struct Tail {
    pool: Pool,
    /// The connection it reads the log on while events keep coming.
    reader: Held,
    state: Arc<State>,
    position: Position,
    /// Certificates changed (or removed) since this replica last wrote the snapshot.
    dirty: HashSet<CertKey>,
    wake: Arc<Notify>,
    applied: watch::Sender<Position>,
    /// What the writers wait for (see [`TailHandle::wake_for`]).
    wanted: Arc<watch::Sender<Position>>,
    last_snapshot: Instant,
    /// Arrival of the newest event applied.
    newest_applied: f64,
    observers: Option<Observers>,
    /// Snapshot rows ahead of the start position: their events up to there are in them.
    floors: HashMap<CertKey, Position>,
    /// Whether this replica leads, and so writes the snapshot.
    leadership: Option<Leadership>,
}

impl Tail {
    /// A tail applying the log after `position` to `state`.
    pub(super) fn new(pool: Pool, state: Arc<State>, position: Position) -> Self {
        Tail {
            reader: Held::new(pool.clone()),
            pool,
            state,
            position,
            dirty: HashSet::new(),
            wake: Arc::new(Notify::new()),
            applied: watch::Sender::new(position),
            wanted: Arc::new(watch::Sender::new(position)),
            last_snapshot: Instant::now(),
            newest_applied: f64::NEG_INFINITY,
            observers: None,
            floors: HashMap::new(),
            leadership: None,
        }
    }

    /// The same, not applying again to a row the events up to its own position.
    pub(super) fn with_floors(mut self, floors: HashMap<CertKey, Position>) -> Self {
        self.floors = floors;
        self
    }

    /// The same, reporting to `observers`.
    pub(super) fn observed_by(mut self, observers: Observers) -> Self {
        self.observers = Some(observers);
        self
    }

    /// The same, writing the snapshot while this replica leads.
    pub(super) fn led_by(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// The handle the writer keeps.
    pub(super) fn handle(&self) -> TailHandle {
        TailHandle {
            wake: Arc::clone(&self.wake),
            applied: self.applied.subscribe(),
            wanted: Arc::clone(&self.wanted),
        }
    }

    /// How far it has applied.
    pub(super) fn position(&self) -> Position {
        self.position
    }

    /// Applies everything readable now; returns how many events it applied.
    pub(super) async fn catch_up(&mut self) -> Result<usize, PgError> {
        let mut total = 0;
        loop {
            let read = self.step().await?;
            total += read;
            if read < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Reads and applies at most [`BATCH`] events.
    async fn step(&mut self) -> Result<usize, PgError> {
        let (timeouts, after) = (self.pool.timeouts(), self.position);
        let rows = self
            .reader
            .with(&timeouts, async |client| {
                let next = client.prepare_cached(NEXT_EVENTS).await?;
                Ok(client
                    .query(&next, &[&after.xid, &after.id, &BATCH])
                    .await?)
            })
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut changes: HashMap<CertKey, Option<Certificate>> = HashMap::new();
        let mut newest_delivery: Option<(f64, &str)> = None;
        let mut stacks = Vec::new();
        for row in &rows {
            let (event_type, stack, name): (&str, &str, &str) =
                (row.get(2), row.get(3), row.get(4));
            let key = CertKey::new(stack, name);
            let at = Position {
                xid: row.get(0),
                id: row.get(1),
            };
            if self.floors.get(&key).is_some_and(|floor| at <= *floor) {
                // Already in the snapshot row this replica started from.
            } else if event_type == FORGET_EVENT_TYPE {
                changes.insert(key, None);
            } else if event_type == STACK_EVENT_TYPE {
                match StackEvent::parse(row.get(5)) {
                    Some(stack) => {
                        let record = stack.record();
                        if let Some(from) = stack.moved_from() {
                            self.relabel(&mut changes, from, record.label(), at);
                        }
                        stacks.push(record);
                    }
                    None => tracing::warn!(id = at.id, "a stored stack no longer parses; skipped"),
                }
            } else if let Some(stored) = Stored::parse(event_type, row.get(5)) {
                let state = &self.state;
                let slot = changes
                    .entry(key.clone())
                    .or_insert_with(|| state.get_key(&key).map(|cert| (*cert).clone()));
                stored.apply_to(slot.get_or_insert_with(|| Certificate::new(stack, name)));
            } else {
                let id: i64 = row.get(1);
                tracing::warn!(id, event_type, "a stored event no longer parses; skipped");
            }
            self.position = at;
            let received_at: f64 = row.get(6);
            if EventKind::from_event_type(event_type).is_some() && received_at > self.newest_applied
            {
                self.newest_applied = received_at;
                newest_delivery = Some((received_at, event_type));
            }
        }
        self.dirty.extend(changes.keys().cloned());
        self.state.apply(changes);
        self.applied.send_replace(self.position);
        if let Some(sink) = self.observers.as_ref().and_then(|o| o.stacks.as_ref()) {
            for record in stacks {
                sink(record);
            }
        }
        if let (Some(observers), Some((at, event_type))) = (&self.observers, newest_delivery) {
            observers.deliveries.note(LastDelivery {
                at,
                seen: Some(SeenDelivery {
                    event_type: Some(event_type.to_owned()),
                    result: WebhookResult::Accepted,
                }),
            });
        }
        Ok(rows.len())
    }

    /// Moves the certificates labelled `from` to `to`, as the log event at `at` says
    /// (a stack's uid label replaced by its webhook id), merging each into the
    /// certificate of the same name already there. A snapshot row that includes the
    /// event already (its floor is at or past it) is not moved or merged again.
    fn relabel(
        &self,
        changes: &mut HashMap<CertKey, Option<Certificate>>,
        from: &str,
        to: &str,
        at: Position,
    ) {
        let includes = |key: &CertKey| self.floors.get(key).is_some_and(|floor| at <= *floor);
        let mut keys = self.state.keys_of_stack(from);
        keys.extend(changes.keys().filter(|key| key.stack() == from).cloned());
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            if includes(&key) {
                // Labelled `from` again after the move, and saved so.
                continue;
            }
            let state = &self.state;
            let source = changes
                .entry(key.clone())
                .or_insert_with(|| state.get_key(&key).map(|cert| (*cert).clone()))
                .take();
            let Some(mut cert) = source else { continue };
            let target = CertKey::new(to, key.name());
            if includes(&target) {
                // The target row was saved with this certificate merged into it.
                continue;
            }
            match changes
                .entry(target.clone())
                .or_insert_with(|| state.get_key(&target).map(|cert| (*cert).clone()))
            {
                Some(there) => there.absorb(cert),
                empty => {
                    cert.stack = to.to_owned();
                    *empty = Some(cert);
                }
            }
        }
    }

    /// Sets the lag: from the newest applied event's arrival to the newest committed
    /// event's (0 when that one is applied).
    async fn measure_lag(&self) -> Result<(), PgError> {
        let Some(observers) = &self.observers else {
            return Ok(());
        };
        let client = self.pool.get().await?;
        let newest: Option<f64> = client
            .query_opt(
                "SELECT received_at FROM cloud66_ssl_exporter_events ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|row| row.get(0));
        // Before this replica applied anything it started from the snapshot, caught up.
        let lag = match newest {
            Some(newest) if self.newest_applied.is_finite() => newest - self.newest_applied,
            _ => 0.0,
        };
        observers.metrics.set_lag(lag);
        Ok(())
    }

    /// Runs until aborted: reads the log whenever woken, at least every [`POLL`], and
    /// every `snapshot_interval` (10 s) hands the certificates it changed to a task that
    /// writes them into the snapshot.
    pub(super) async fn run(mut self, config: PostgresConfig) {
        let mut notifications = None;
        let mut snapshot: Option<SnapshotTask> = None;
        let mut lag_measured: Option<Instant> = None;
        let mut next_listen = Instant::now();
        let mut retry = RETRY_FIRST;
        loop {
            if notifications.is_none() && Instant::now() >= next_listen {
                match connect::listen(&config, CHANNEL).await {
                    Ok(receiver) => notifications = Some(receiver),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for new events; polling");
                        next_listen = Instant::now() + Duration::from_secs(2);
                    }
                }
            }
            // A writer waits for events a transaction still running holds back (another
            // replica's batch, a snapshot chunk): read again soon rather than at the
            // next poll, since that transaction's commit wakes nobody here.
            let pause = if *self.wanted.borrow() > self.position {
                let pause = retry;
                retry = (retry * 2).min(POLL);
                pause
            } else {
                retry = RETRY_FIRST;
                POLL
            };
            let notified = async {
                match notifications.as_mut() {
                    Some(receiver) => receiver.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                open = notified => {
                    if !open {
                        // The LISTEN connection is gone: reconnect, and read in case a
                        // notification was lost with it.
                        notifications = None;
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "cannot read the event log; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
            // A query of its own: at most once a poll, not after every commit.
            if lag_measured.is_none_or(|at| at.elapsed() >= POLL) {
                lag_measured = Some(Instant::now());
                if let Err(e) = self.measure_lag().await {
                    tracing::debug!(error = %e, "cannot measure the tail's lag");
                }
            }
            if snapshot
                .as_ref()
                .is_some_and(tokio::task::JoinHandle::is_finished)
                && let Some(task) = snapshot.take()
            {
                match task.await {
                    Ok(Ok(written)) => tracing::debug!(written, "snapshot"),
                    Ok(Err((e, keys))) => {
                        tracing::warn!(error = %e, "cannot write the snapshot");
                        self.dirty.extend(keys);
                    }
                    Err(e) => tracing::warn!(error = %e, "the snapshot task failed"),
                }
            }
            if snapshot.is_none()
                && self.leadership.as_ref().is_none_or(Leadership::is_leader)
                && self.last_snapshot.elapsed() >= config.snapshot_interval
                && !self.dirty.is_empty()
            {
                self.last_snapshot = Instant::now();
                snapshot = Some(tokio::spawn(self.snapshot_job()));
            }
        }
    }

    /// The certificates changed since this replica last wrote the snapshot, copied as
    /// of its position, and the job that writes them; the tail goes on meanwhile. A job
    /// that fails hands its keys back, to be written next time.
    fn snapshot_job(
        &mut self,
    ) -> impl std::future::Future<Output = Result<usize, (PgError, Vec<CertKey>)>> + use<> {
        let keys: Vec<CertKey> = self.dirty.drain().collect();
        let mut present = Vec::new();
        let mut gone = Vec::new();
        for key in &keys {
            match self.state.get_key(key) {
                Some(cert) => present.push(cert),
                None => gone.push(key.clone()),
            }
        }
        let (pool, position) = (self.pool.clone(), self.position);
        async move {
            write_snapshot(&pool, &present, &gone, position)
                .await
                .map_err(|e| (e, keys))
        }
    }
}

/// Writes `present` and deletes `gone` in the snapshot as of `position`, in short
/// transactions (a long one would hold back every replica's tail: its id bounds what
/// they may read), then moves the snapshot's position forward to `position`. Each row
/// carries the position it includes and is only replaced by a newer one, so replicas
/// may write at once and a write cut short leaves rows ahead of the stored position,
/// which a restore does not apply again (see [`load_snapshot`]). Returns the rows
/// written.
async fn write_snapshot(
    pool: &Pool,
    present: &[Arc<Certificate>],
    gone: &[CertKey],
    position: Position,
) -> Result<usize, PgError> {
    let mut client = pool.get().await?;
    for chunk in present.chunks(SNAPSHOT_CHUNK) {
        let tx = client.transaction().await?;
        let certs: Vec<&Certificate> = chunk.iter().map(|cert| &**cert).collect();
        upsert(&tx, &certs, position).await?;
        tx.commit().await?;
    }
    for chunk in gone.chunks(SNAPSHOT_CHUNK) {
        let stacks: Vec<&str> = chunk.iter().map(CertKey::stack).collect();
        let names: Vec<&str> = chunk.iter().map(CertKey::name).collect();
        client
            .execute(
                "DELETE FROM cloud66_ssl_exporter_certificates c USING \
                 unnest($1::text[], $2::text[]) AS gone(stack, name) \
                 WHERE c.stack = gone.stack AND c.name = gone.name \
                   AND (c.position_xid, c.position_id) < ($3, $4)",
                &[&stacks, &names, &position.xid, &position.id],
            )
            .await?;
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_KEY, &SNAPSHOT_LOCK],
    )
    .await?;
    if snapshot_position(&tx).await? < position {
        store_snapshot_position(&tx, position).await?;
    }
    tx.commit().await?;
    Ok(present.len() + gone.len())
}

/// Stores `position` as the one every snapshot row includes.
pub(super) async fn store_snapshot_position(
    tx: &tokio_postgres::Transaction<'_>,
    position: Position,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES \
         ('snapshot_xid', $1), ('snapshot_id', $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&position.xid.to_string(), &position.id.to_string()],
    )
    .await?;
    Ok(())
}

/// The position the snapshot rows include.
async fn snapshot_position(client: &tokio_postgres::Transaction<'_>) -> Result<Position, PgError> {
    let rows = client
        .query(
            "SELECT key, value FROM cloud66_ssl_exporter_meta \
             WHERE key IN ('snapshot_xid', 'snapshot_id')",
            &[],
        )
        .await?;
    let mut position = Position::default();
    for row in rows {
        let value: i64 = row.get::<_, &str>(1).parse().unwrap_or(0);
        match row.get::<_, &str>(0) {
            "snapshot_xid" => position.xid = value,
            _ => position.id = value,
        }
    }
    Ok(position)
}

/// Writes `certs` into the snapshot table in one statement.
pub(super) async fn upsert(
    tx: &tokio_postgres::Transaction<'_>,
    certs: &[&Certificate],
    position: Position,
) -> Result<(), PgError> {
    let text = |f: fn(&Certificate) -> Option<&str>| -> Vec<Option<&str>> {
        certs.iter().map(|c| f(c)).collect()
    };
    let real = |f: fn(&Certificate) -> Option<f64>| -> Vec<Option<f64>> {
        certs.iter().map(|c| f(c)).collect()
    };
    let count = |f: fn(&Certificate) -> u64| -> Vec<i64> {
        certs
            .iter()
            .map(|c| i64::try_from(f(c)).unwrap_or(i64::MAX))
            .collect()
    };
    let stacks: Vec<&str> = certs.iter().map(|c| c.stack.as_str()).collect();
    let names: Vec<&str> = certs.iter().map(|c| c.name.as_str()).collect();
    let failing: Vec<bool> = certs.iter().map(|c| c.install_failing).collect();
    let sql = format!(
        "INSERT INTO cloud66_ssl_exporter_certificates AS c ({COLUMNS}, position_xid, position_id) \
         SELECT *, $20::int8, $21::int8 FROM unnest($1::text[], $2::text[], $3::float8[], \
           $4::float8[], $5::float8[], $6::bool[], $7::float8[], $8::text[], $9::text[], \
           $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[], \
           $16::int8[], $17::float8[], $18::float8[], $19::text[]) \
         ON CONFLICT (stack, name) DO UPDATE SET ({COLUMNS}, position_xid, position_id) = \
           ROW(excluded.*) \
         WHERE (c.position_xid, c.position_id) < (excluded.position_xid, excluded.position_id)"
    );
    tx.execute(
        &sql,
        &[
            &stacks,
            &names,
            &real(|c| c.expiry),
            &real(|c| c.expiry_event_ts),
            &real(|c| c.last_event_ts),
            &failing,
            &real(|c| c.install_event_ts),
            &text(|c| c.error_message.as_deref()),
            &text(|c| c.info.server_names.as_deref()),
            &text(|c| c.info.lets_encrypt.as_deref()),
            &text(|c| c.info.has_intermediate_cert.as_deref()),
            &text(|c| c.info.ssl_termination.as_deref()),
            &text(|c| c.info.status.as_deref()),
            &count(|c| c.install_failures),
            &count(|c| c.install_successes),
            &count(|c| c.expire_soon_notifications),
            &real(|c| c.info_ts),
            &real(|c| c.observed_ts),
            &text(|c| c.last_event_type.map(EventKind::event_type)),
            &position.xid,
            &position.id,
        ],
    )
    .await?;
    Ok(())
}

/// The snapshot: every certificate row, the position they all include, and the rows
/// ahead of it, read in one consistent transaction.
pub(super) async fn load_snapshot(client: &mut Client) -> Result<Snapshot, PgError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let position = snapshot_position(&tx).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS}, position_xid, position_id FROM cloud66_ssl_exporter_certificates"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    let count =
        |row: &tokio_postgres::Row, i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    let certificates = rows
        .iter()
        .map(|row| Certificate {
            stack: row.get(0),
            name: row.get(1),
            expiry: row.get(2),
            expiry_event_ts: row.get(3),
            last_event_ts: row.get(4),
            install_failing: row.get(5),
            install_event_ts: row.get(6),
            error_message: row.get(7),
            info: CertInfo {
                server_names: row.get(8),
                lets_encrypt: row.get(9),
                has_intermediate_cert: row.get(10),
                ssl_termination: row.get(11),
                status: row.get(12),
            },
            install_failures: count(row, 13),
            install_successes: count(row, 14),
            expire_soon_notifications: count(row, 15),
            info_ts: row.get(16),
            observed_ts: row.get(17),
            last_event_type: row
                .get::<_, Option<&str>>(18)
                .and_then(EventKind::from_event_type),
        })
        .collect();
    // Rows a write cut short (or a replica ahead) left beyond the stored position.
    let floors = rows
        .iter()
        .map(|row| {
            let floor = Position {
                xid: row.get(19),
                id: row.get(20),
            };
            (CertKey::new(row.get(0), row.get(1)), floor)
        })
        .filter(|(_, floor)| *floor > position)
        .collect();
    Ok(Snapshot {
        certificates,
        position,
        floors,
    })
}

/// The snapshot a replica starts from.
pub(super) struct Snapshot {
    /// Every certificate row.
    pub certificates: Vec<Certificate>,
    /// Every row includes every event up to here.
    pub position: Position,
    /// Rows that include events beyond `position`, up to their own position: those
    /// events are not applied to them again.
    pub floors: HashMap<CertKey, Position>,
}

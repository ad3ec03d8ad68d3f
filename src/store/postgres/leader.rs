//! Leadership: the one replica of a cluster that does the work that must happen once,
//! not once per replica: writing the snapshot replicas start from, and the Cloud66 API
//! sync when it is configured.
//!
//! Every replica runs [`run`]: it opens a dedicated connection and tries
//! `pg_try_advisory_lock` (session level) on it every [`ELECT_EVERY`]. The replica that
//! gets the lock leads for as long as that connection lives; PostgreSQL releases the lock
//! when the session ends, so when the leader dies (its connection closes, or TCP
//! keepalives find its host gone) another replica takes it within a second or two, with
//! no operator action. The leader checks its connection every [`CHECK_EVERY`] and steps
//! down at the first failed check, before the server can have released the lock to
//! another replica (the server waits for keepalives, longer than a failed check takes).
//!
//! On the same connection the leader `LISTEN`s for sync requests: a follower asked for a
//! sync (`POST /api/v1/sync` reaching it behind the load balancer) sends `NOTIFY` on
//! [`SYNC_CHANNEL`], and the leader's sync runs.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};

use super::PgError;
use super::connect;
use super::schema::LOCK_KEY;
use crate::config::PostgresConfig;
use crate::metrics::TailMetrics;

/// The lock class of leadership (with [`LOCK_KEY`]).
const LEADER_LOCK: i32 = 3;

/// How often a follower tries to take the lock.
const ELECT_EVERY: Duration = Duration::from_secs(1);

/// How often the leader checks its connection.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a check may take before the leader steps down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel followers notify to ask the leader for a sync.
const SYNC_CHANNEL: &str = "cloud66_ssl_exporter_sync";

/// Keepalives on the leader's session, so that the server releases the lock within
/// about half a minute when the leader's host vanishes without closing its connection.
const KEEPALIVES: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
     SET tcp_keepalives_count = 3";

/// What the rest of the replica sees of the election.
#[derive(Clone)]
pub(crate) struct Leadership {
    leading: watch::Receiver<bool>,
    /// A follower asked for a sync (delivered to the leader).
    asked: Arc<Notify>,
    /// To ask the leader, from a follower.
    pool: Pool,
}

impl Leadership {
    /// Whether this replica leads now.
    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until leadership changes (either way).
    pub(crate) async fn changed(&mut self) {
        if self.leading.changed().await.is_err() {
            // The election stopped (shutting down): nothing changes any more.
            std::future::pending::<()>().await;
        }
    }

    /// Waits until a follower asks this replica, as leader, for a sync.
    pub(crate) async fn asked(&self) {
        self.asked.notified().await;
    }

    /// Asks the leader, whichever replica it is, for a sync; `false` when no replica
    /// leads right now (a handover, or every replica starting), so nobody would hear.
    pub(crate) async fn ask_leader(&self) -> Result<bool, PgError> {
        let client = self.pool.get().await?;
        // Notifies once per holder of the lock in this database: at most one.
        let sent = client
            .query(
                "SELECT pg_notify($1, '') FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
                   AND classid = $2::int4::oid AND objid = $3::int4::oid \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&SYNC_CHANNEL, &LOCK_KEY, &LEADER_LOCK],
            )
            .await?;
        Ok(!sent.is_empty())
    }
}

/// Starts the election of this replica; it runs until the task is aborted.
pub(crate) fn start(
    config: &PostgresConfig,
    pool: Pool,
    metrics: TailMetrics,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (leading, receiver) = watch::channel(false);
    let asked = Arc::new(Notify::new());
    let mut shown = receiver.clone();
    // `leader`, kept in step with the election.
    tokio::spawn(async move {
        while shown.changed().await.is_ok() {
            let leads = *shown.borrow_and_update();
            metrics.set_leader(leads);
        }
    });
    let task = tokio::spawn(run(config.clone(), leading, Arc::clone(&asked)));
    (
        Leadership {
            leading: receiver,
            asked,
            pool,
        },
        task,
    )
}

/// Tries for the lock, and holds it while the connection lives.
async fn run(config: PostgresConfig, leading: watch::Sender<bool>, asked: Arc<Notify>) {
    loop {
        match hold(&config, &leading, &asked).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "leader election: connection failed"),
        }
        if *leading.borrow() {
            tracing::warn!("this replica is no longer the leader");
            leading.send_replace(false);
        }
        tokio::time::sleep(ELECT_EVERY).await;
    }
}

/// One connection: tries for the lock until it gets it, then leads until a check fails.
async fn hold(
    config: &PostgresConfig,
    leading: &watch::Sender<bool>,
    asked: &Notify,
) -> Result<(), String> {
    let (client, mut notifications) = connect::connect_one(config).await?;
    let failed = |e: tokio_postgres::Error| connect::describe(&e);
    client.batch_execute(KEEPALIVES).await.map_err(failed)?;
    loop {
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_KEY, &LEADER_LOCK],
            )
            .await
            .map_err(failed)?;
        if row.get::<_, bool>(0) {
            break;
        }
        tokio::time::sleep(ELECT_EVERY).await;
    }
    client
        .batch_execute(&format!("LISTEN {SYNC_CHANNEL}"))
        .await
        .map_err(failed)?;
    tracing::info!(
        "this replica is the leader: it writes the snapshot and runs the Cloud66 API sync"
    );
    leading.send_replace(true);
    loop {
        tokio::select! {
            notification = notifications.recv() => match notification {
                Some(_) => asked.notify_one(),
                None => return Err("the connection ended".into()),
            },
            () = tokio::time::sleep(CHECK_EVERY) => {
                match tokio::time::timeout(CHECK_TIMEOUT, client.batch_execute("")).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(failed(e)),
                    Err(_) => return Err("the connection check timed out".into()),
                }
            }
        }
    }
}

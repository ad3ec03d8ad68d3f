//! The PostgreSQL schema, and the migrations that bring a database to it. Every replica
//! runs them at start, one at a time under a transaction-scoped advisory lock, so the
//! first replica creates the schema and the others find it done; a database written by
//! a newer build is refused.
//!
//! `events` is the shared log. `xid` (the writing transaction's id) is what replicas
//! tail by: an identity id is allocated at `INSERT` but visible at `COMMIT`, so reading
//! `id > last` can skip a row whose transaction commits late; `(xid, id)` below the
//! oldest transaction still running cannot (see `tail`). The dedup key is the one the
//! embedded store uses: the payload timestamp and the digest of the delivery.
//!
//! `certificates` is the snapshot replicas write: every row includes every event up to
//! the position in `meta` (`snapshot_xid`, `snapshot_id`), and up to its own position
//! (`position_xid`, `position_id`, never behind it), so a replica starts from it and
//! tails the log after it, skipping for a row the events its position includes.

use tokio_postgres::Client;

use super::PgError;

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i32 = 3;

/// Key of the advisory locks this exporter takes (`pg_advisory_xact_lock(KEY, n)`):
/// ASCII "c66s".
pub(crate) const LOCK_KEY: i32 = 0x6336_3673;

/// The lock class of the migrations.
const MIGRATION_LOCK: i32 = 1;

/// From nothing to version 1.
const VERSION_1: &str = "
CREATE TABLE cloud66_ssl_exporter_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE cloud66_ssl_exporter_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_ts    double precision NOT NULL,
    digest      bytea NOT NULL,
    received_at double precision NOT NULL,
    event_type  text NOT NULL,
    stack       text NOT NULL,
    name        text NOT NULL,
    payload     text NOT NULL,
    UNIQUE (event_ts, digest)
);
CREATE INDEX cloud66_ssl_exporter_events_by_position
    ON cloud66_ssl_exporter_events (xid, id);
CREATE INDEX cloud66_ssl_exporter_events_by_certificate
    ON cloud66_ssl_exporter_events (stack, name, id);
CREATE TABLE cloud66_ssl_exporter_certificates (
    stack                     text NOT NULL,
    name                      text NOT NULL,
    expiry                    double precision,
    expiry_event_ts           double precision,
    last_event_ts             double precision,
    install_failing           boolean NOT NULL,
    install_event_ts          double precision,
    error_message             text,
    server_names              text,
    lets_encrypt              text,
    has_intermediate_cert     text,
    ssl_termination           text,
    status                    text,
    install_failures          bigint NOT NULL,
    install_successes         bigint NOT NULL,
    expire_soon_notifications bigint NOT NULL,
    info_ts                   double precision,
    observed_ts               double precision,
    last_event_type           text,
    PRIMARY KEY (stack, name)
);
";

/// From version 1: each snapshot row carries the log position it includes, so the
/// snapshot can be written in short transactions, by several replicas at once.
const VERSION_2: &str = "
ALTER TABLE cloud66_ssl_exporter_certificates
    ADD COLUMN position_xid bigint NOT NULL DEFAULT 0,
    ADD COLUMN position_id  bigint NOT NULL DEFAULT 0;
";

/// From version 2: what the Cloud66 API reconciliation knows about each stack (as the
/// embedded store's `stacks`), written by the leader with the log event that tells the
/// other replicas (`STACK_EVENT_TYPE`).
const VERSION_3: &str = "
CREATE TABLE cloud66_ssl_exporter_stacks (
    uid             text PRIMARY KEY,
    id              text,
    id_source       text NOT NULL,
    name            text NOT NULL,
    environment     text NOT NULL,
    actions_checked boolean NOT NULL
);
";

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_KEY, &MIGRATION_LOCK],
    )
    .await?;
    let exists = tx
        .query_one(
            "SELECT to_regclass('cloud66_ssl_exporter_meta') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    let version: i32 = if exists {
        tx.query_opt(
            "SELECT value FROM cloud66_ssl_exporter_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
        .and_then(|row| row.get::<_, String>(0).parse().ok())
        .unwrap_or(0)
    } else {
        0
    };
    match version {
        SCHEMA_VERSION => return Ok(()),
        0..=2 => {
            let steps = [VERSION_1, VERSION_2, VERSION_3];
            for step in &steps[usize::try_from(version).unwrap_or(0)..] {
                tx.batch_execute(step).await?;
            }
        }
        found => return Err(PgError::Incompatible(found)),
    }
    tx.execute(
        "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES ('schema_version', $1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

//! `storage copy`: moves an embedded store into an empty PostgreSQL database, so an
//! existing exporter can switch to replicas without losing history or counters.
//!
//! Everything goes in one transaction: every stored event (raw, with its dedup key and
//! times), the certificates as the embedded store restores them (its checkpoint with
//! the later events applied, so deletions and stack merges that no event records are
//! kept), the snapshot position after the copied events, the stacks the Cloud66 API
//! reconciliation knew (so it keeps each stack's webhook id), and the webhook token. A
//! replica then starts from that snapshot and never replays the copied events. A copy
//! that fails leaves nothing; a second copy after a successful one finds the same
//! events there and changes nothing; a database with other events is refused.

use std::path::Path;

use rusqlite::params;

use super::tail::{Position, store_snapshot_position, upsert};
use super::{PgError, connect, schema};
use crate::cloud66::StackRecord;
use crate::config::PostgresConfig;
use crate::store::{Database, StoreError};

/// Events inserted per statement.
const CHUNK: usize = 1_000;

/// What a copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Events copied (0 when the database already held exactly these).
    pub events: usize,
    /// Certificates written to the snapshot.
    pub certificates: usize,
    /// Stacks the Cloud66 API reconciliation knew, copied.
    pub stacks: usize,
    /// Whether the webhook token was copied.
    pub token: bool,
    /// Whether the database already held this store's events: nothing was done.
    pub already_copied: bool,
}

/// One stored event, as both databases keep it.
struct Row {
    event_ts: f64,
    digest: Vec<u8>,
    received_at: f64,
    event_type: String,
    stack: String,
    name: String,
    payload: String,
}

/// Copies the embedded store in `from` into the database of `to`.
pub async fn copy(from: &Path, to: &PostgresConfig) -> Result<CopyReport, StoreError> {
    let from = from.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let db = Database::open(&from)?;
        let restored = db.restore()?;
        let read_events = || -> rusqlite::Result<Vec<Row>> {
            let mut stmt = db.conn.prepare(
                "SELECT event_ts, digest, received_at, event_type, stack, name, payload \
                 FROM events ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![], |row| {
                    Ok(Row {
                        event_ts: row.get(0)?,
                        digest: row.get(1)?,
                        received_at: row.get(2)?,
                        event_type: row.get(3)?,
                        stack: row.get(4)?,
                        name: row.get(5)?,
                        payload: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        };
        let rows = read_events().map_err(|e| StoreError::Read(e.to_string()))?;
        let token = db.stored_token()?;
        let stacks = db.stacks()?;
        Ok((restored.certificates, rows, token, stacks))
    })
    .await
    .map_err(|e| StoreError::Read(e.to_string()))??;
    let (certificates, rows, token, stacks) = read;
    write(to, &certificates, &rows, token.as_deref(), &stacks)
        .await
        .map_err(|e| StoreError::Postgres(e.to_string()))
}

async fn write(
    to: &PostgresConfig,
    certificates: &[crate::state::Certificate],
    rows: &[Row],
    token: Option<&str>,
    stacks: &[StackRecord],
) -> Result<CopyReport, PgError> {
    let pool = connect::pool(to).map_err(PgError::Pool)?;
    let mut client = pool.get().await?;
    schema::migrate(&mut client).await?;
    let tx = client.transaction().await?;
    // One copy at a time; replicas write events without this lock, which is why the
    // database must have none of its own.
    tx.execute(
        "LOCK TABLE cloud66_ssl_exporter_events IN EXCLUSIVE MODE",
        &[],
    )
    .await?;
    let present: i64 = tx
        .query_one("SELECT count(*) FROM cloud66_ssl_exporter_events", &[])
        .await?
        .get(0);
    if present > 0 {
        let ours: i64 = tx
            .query_one(
                "SELECT count(*) FROM cloud66_ssl_exporter_events e \
                 JOIN unnest($1::float8[], $2::bytea[]) AS c(event_ts, digest) \
                 ON e.event_ts = c.event_ts AND e.digest = c.digest",
                &[
                    &rows.iter().map(|r| r.event_ts).collect::<Vec<_>>(),
                    &rows.iter().map(|r| r.digest.as_slice()).collect::<Vec<_>>(),
                ],
            )
            .await?
            .get(0);
        if present == ours && ours == rows.len() as i64 {
            return Ok(CopyReport {
                events: 0,
                certificates: 0,
                stacks: 0,
                token: false,
                already_copied: true,
            });
        }
        return Err(PgError::Refused(format!(
            "the database already holds {present} events, {ours} of them from this store: \
             copy into an empty database (before any replica has taken webhooks)"
        )));
    }
    for chunk in rows.chunks(CHUNK) {
        tx.execute(
            "INSERT INTO cloud66_ssl_exporter_events \
             (event_ts, digest, received_at, event_type, stack, name, payload) \
             SELECT * FROM unnest($1::float8[], $2::bytea[], $3::float8[], $4::text[], \
               $5::text[], $6::text[], $7::text[]) ORDER BY 1",
            &[
                &chunk.iter().map(|r| r.event_ts).collect::<Vec<_>>(),
                &chunk
                    .iter()
                    .map(|r| r.digest.as_slice())
                    .collect::<Vec<_>>(),
                &chunk.iter().map(|r| r.received_at).collect::<Vec<_>>(),
                &chunk
                    .iter()
                    .map(|r| r.event_type.as_str())
                    .collect::<Vec<_>>(),
                &chunk.iter().map(|r| r.stack.as_str()).collect::<Vec<_>>(),
                &chunk.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                &chunk.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>(),
            ],
        )
        .await?;
    }
    // Every copied row carries this transaction's id: the snapshot includes them all.
    let row = tx
        .query_one(
            "SELECT pg_current_xact_id()::text::bigint, \
             coalesce(max(id), 0) FROM cloud66_ssl_exporter_events",
            &[],
        )
        .await?;
    let position = Position {
        xid: row.get(0),
        id: row.get(1),
    };
    tx.execute("DELETE FROM cloud66_ssl_exporter_certificates", &[])
        .await?;
    let certs: Vec<&crate::state::Certificate> = certificates.iter().collect();
    for chunk in certs.chunks(CHUNK) {
        upsert(&tx, chunk, position).await?;
    }
    store_snapshot_position(&tx, position).await?;
    for stack in stacks {
        super::stacks::save(&tx, stack).await?;
    }
    let token_copied = match token {
        Some(token) => {
            tx.execute(
                "INSERT INTO cloud66_ssl_exporter_meta (key, value) VALUES ('webhook_token', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&token],
            )
            .await?
                == 1
        }
        None => false,
    };
    tx.commit().await?;
    Ok(CopyReport {
        events: rows.len(),
        certificates: certificates.len(),
        stacks: stacks.len(),
        token: token_copied,
        already_copied: false,
    })
}

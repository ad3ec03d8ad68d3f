//! The database file: opening, the schema, and restoring the state at start-up.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;
use super::lock::StoreLock;
use crate::cloud66::{IdSource, StackRecord};
use crate::event::{CertInfo, Delivery, EventKind, OBSERVATION_EVENT_TYPE, Observation, SslEvent};
use crate::state::{CertKey, Certificate};
use crate::webhook;

/// File name of the database inside `--storage.path`.
pub const DB_FILE: &str = "cloud66-ssl-exporter.db";

/// The schema version this build writes (SQLite `user_version`).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Pages SQLite may cache (negative: KiB): the hot right edge of `events` and its index,
/// and the upper levels of `certificates`. No larger: a B-tree rebalance parks a page
/// at a temporary page number past the end of the file, and the commit after it then
/// walks the whole cache to drop pages past the end, so this walk costs every commit
/// time in proportion to the cache (16 MiB: about 9% of the writer's CPU under load).
const CACHE_KIB: i64 = 4 * 1024;

/// `stacks`: what the Cloud66 API reconciliation knows about each stack, above all the
/// webhook stack id of its uid once resolved (see `cloud66`).
macro_rules! stacks_table {
    () => {
        "
CREATE TABLE stacks (
    uid             TEXT PRIMARY KEY,
    id              TEXT,
    id_source       TEXT NOT NULL,
    name            TEXT NOT NULL,
    environment     TEXT NOT NULL,
    actions_checked INTEGER NOT NULL
) WITHOUT ROWID;
"
    };
}

/// `events_by_certificate`: one certificate's events, in arrival order.
macro_rules! events_by_certificate {
    () => {
        "
CREATE INDEX events_by_certificate ON events (stack, name, id);
"
    };
}

/// `events` keeps every accepted delivery, and every Cloud66 API observation that changed
/// a certificate (`event_type` [`OBSERVATION_EVENT_TYPE`], the observation as JSON). Its dedup key starts with the payload
/// timestamp, so live traffic (timestamps close to now) appends to the same few index
/// pages instead of touching a random page per event, as a bare digest would.
/// `events_by_certificate` finds one certificate's events in arrival order (its
/// history, see `history`).
///
/// `certificates` is a checkpoint of the state: the writer saves a changed row two
/// seconds after the change, a few rows with each batch. A row includes every event of
/// its certificate up to its `saved_event_id`, and every row includes every event up to
/// `meta.state_checkpoint`. At start-up the events after it are replayed, each onto a row
/// that does not include it yet, so every committed event counts once; the rows the
/// replay changed are then saved like any changed row.
const SCHEMA: &str = concat!(
    "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    event_ts    REAL NOT NULL,
    digest      BLOB NOT NULL,
    received_at REAL NOT NULL,
    event_type  TEXT NOT NULL,
    stack       TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    UNIQUE (event_ts, digest)
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
    saved_event_id            INTEGER NOT NULL DEFAULT 0,
    info_ts                   REAL,
    observed_ts               REAL,
    last_event_type           TEXT,
    PRIMARY KEY (stack, name)
) WITHOUT ROWID;
",
    events_by_certificate!(),
    stacks_table!()
);

/// From schema 1, whose rows were all saved together at `state_checkpoint` (so 0, "no
/// later event", is right for them).
const MIGRATE_1_TO_2: &str =
    "ALTER TABLE certificates ADD COLUMN saved_event_id INTEGER NOT NULL DEFAULT 0;";

/// From schema 2: the descriptive fields get their own time (until now they followed
/// the newest event), certificates the time the API last showed them, and the stacks
/// table appears.
const MIGRATE_2_TO_3: &str = concat!(
    "
ALTER TABLE certificates ADD COLUMN info_ts REAL;
ALTER TABLE certificates ADD COLUMN observed_ts REAL;
UPDATE certificates SET info_ts = last_event_ts;
",
    stacks_table!()
);

/// From schema 3: certificates remember the type of their newest webhook event, and the
/// event log gets an index by certificate. Existing rows take the type of their
/// certificate's newest webhook event (greatest payload timestamp, the later arrival
/// among equals: the rule `Certificate::apply` follows); API observations
/// ([`OBSERVATION_EVENT_TYPE`], spelled out here) are not events.
const MIGRATE_3_TO_4: &str = concat!(
    "
ALTER TABLE certificates ADD COLUMN last_event_type TEXT;
",
    events_by_certificate!(),
    "
UPDATE certificates SET last_event_type = (
    SELECT event_type FROM events
    WHERE events.stack = certificates.stack AND events.name = certificates.name
      AND events.event_type != 'cloud66.api.ssl_certificate'
    ORDER BY events.event_ts DESC, events.id DESC
    LIMIT 1
);
"
);

/// The columns of `certificates`, in the order `cert_from_row` and `save_certificate` use.
macro_rules! cert_columns {
    () => {
        "stack, name, expiry, expiry_event_ts, last_event_ts, install_failing, \
         install_event_ts, error_message, server_names, lets_encrypt, has_intermediate_cert, \
         ssl_termination, status, install_failures, install_successes, expire_soon_notifications, \
         info_ts, observed_ts, last_event_type"
    };
}

/// Index of `saved_event_id` after the [`cert_columns`] in a restore's rows.
const SAVED_EVENT_ID: usize = 19;

/// A stored event, parsed again for a replay.
pub(super) enum Stored {
    /// A webhook delivery.
    Webhook(SslEvent),
    /// An API observation.
    Observation(Observation),
}

impl Stored {
    /// The stored `payload` of an event of `event_type`; `None` if it no longer parses.
    pub(super) fn parse(event_type: &str, payload: &str) -> Option<Stored> {
        if event_type == OBSERVATION_EVENT_TYPE {
            return serde_json::from_str(payload).ok().map(Stored::Observation);
        }
        match webhook::parse(payload.as_bytes()) {
            Ok(Delivery::Ssl { event, .. }) => Some(Stored::Webhook(event)),
            Ok(Delivery::Other { .. }) | Err(_) => None,
        }
    }

    /// The certificate it is about: (stack, name).
    fn key(&self) -> (&str, &str) {
        match self {
            Stored::Webhook(event) => (&event.stack, &event.name),
            Stored::Observation(seen) => (&seen.stack, &seen.name),
        }
    }

    /// Applies it, as the writer did when it stored it.
    pub(super) fn apply_to(&self, cert: &mut Certificate) {
        match self {
            Stored::Webhook(event) => cert.apply(event),
            Stored::Observation(seen) => cert.observe(seen),
        }
    }
}

/// The state restored at start-up.
pub struct Restored {
    /// Every certificate, with the events after the checkpoint applied.
    pub certificates: Vec<Certificate>,
    /// How many events were replayed on top of the checkpoint.
    pub replayed: usize,
    /// The certificates the replay changed, each with the first event its row lacks, in
    /// event order: their rows stay behind the state until the writer saves them.
    pub unsaved: Vec<(CertKey, i64)>,
    /// Id of the newest stored event (0 if none).
    pub last_event_id: i64,
}

/// The open database, owned by one thread at a time.
pub struct Database {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// The storage directory's lock, held while the database is open.
    _lock: StoreLock,
}

impl Database {
    /// Opens (creating if needed) the database in `dir`, after taking the directory's
    /// lock: one exporter per store.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let lock = StoreLock::take(dir)?;
        let path = dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = connect(&path).map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "database did not switch to WAL mode");
        }
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(open_err)?;
        migrate(&mut conn, &path)?;
        Ok(Database {
            conn,
            path,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpointed certificates with every later event applied.
    pub fn restore(&self) -> Result<Restored, StoreError> {
        self.read_restored()
            .map_err(|source| self.open_error(source))
    }

    fn read_restored(&self) -> rusqlite::Result<Restored> {
        let mut stmt = self.conn.prepare(concat!(
            "SELECT ",
            cert_columns!(),
            ", saved_event_id FROM certificates"
        ))?;
        // Each certificate with the id of the newest event its row includes, and of the
        // first event replayed onto it.
        let mut map: std::collections::HashMap<CertKey, (Certificate, i64, Option<i64>)> = stmt
            .query_map([], |row| {
                Ok((cert_from_row(row)?, row.get(SAVED_EVENT_ID)?))
            })?
            .map(|row| row.map(|(c, saved)| (CertKey::new(&c.stack, &c.name), (c, saved, None))))
            .collect::<rusqlite::Result<_>>()?;
        let checkpoint = self.checkpoint()?;
        let mut replay = self
            .conn
            .prepare("SELECT id, event_type, payload FROM events WHERE id > ?1 ORDER BY id")?;
        let mut rows = replay.query([checkpoint])?;
        let (mut replayed, mut last_event_id) = (0, checkpoint);
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            last_event_id = id;
            let event_type: String = row.get(1)?;
            let payload: String = row.get(2)?;
            let Some(stored) = Stored::parse(&event_type, &payload) else {
                tracing::warn!(id, event_type, "a stored event no longer parses; skipped");
                continue;
            };
            let (stack, name) = stored.key();
            let (cert, saved, first_replayed) = map
                .entry(CertKey::new(stack, name))
                .or_insert_with(|| (Certificate::new(stack, name), 0, None));
            if id > *saved {
                first_replayed.get_or_insert(id);
                stored.apply_to(cert);
                replayed += 1;
            }
        }
        let newest: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM events", [], |row| row.get(0))?;
        let mut unsaved: Vec<(CertKey, i64)> = map
            .iter()
            .filter_map(|(key, (_, _, first))| first.map(|first| (key.clone(), first)))
            .collect();
        unsaved.sort_unstable_by_key(|&(_, first)| first);
        Ok(Restored {
            certificates: map.into_values().map(|(cert, _, _)| cert).collect(),
            replayed,
            unsaved,
            last_event_id: newest.unwrap_or(0).max(last_event_id),
        })
    }

    /// Id of the newest event the `certificates` rows include.
    fn checkpoint(&self) -> rusqlite::Result<i64> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'state_checkpoint'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Every stack the Cloud66 API reconciliation remembers.
    pub fn stacks(&self) -> Result<Vec<StackRecord>, StoreError> {
        let read = || -> rusqlite::Result<Vec<StackRecord>> {
            let mut stmt = self.conn.prepare(
                "SELECT uid, id, id_source, name, environment, actions_checked FROM stacks",
            )?;
            stmt.query_map([], |row| {
                Ok(StackRecord {
                    uid: row.get(0)?,
                    id: row.get(1)?,
                    id_source: IdSource::parse(&row.get::<_, String>(2)?),
                    name: row.get(3)?,
                    environment: row.get(4)?,
                    actions_checked: row.get(5)?,
                })
            })?
            .collect()
        };
        read().map_err(|source| self.open_error(source))
    }

    /// When the newest stored webhook was received (Unix seconds); API observations in
    /// the same log are not deliveries.
    pub fn last_received_at(&self) -> Result<Option<f64>, StoreError> {
        self.conn
            .query_row(
                "SELECT received_at FROM events WHERE event_type != ?1 ORDER BY id DESC LIMIT 1",
                [OBSERVATION_EVENT_TYPE],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.open_error(source))
    }

    /// The stored webhook token, generating and storing one first if there is none.
    /// Returns the token and whether it was generated now.
    pub fn webhook_token(&self) -> Result<(String, bool), StoreError> {
        if let Some(token) = self.stored_token()? {
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

    /// The webhook token stored in the database, if one was ever generated.
    pub fn stored_token(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'webhook_token'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.open_error(source))
    }

    fn open_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Open {
            path: self.path.clone(),
            source,
        }
    }
}

/// A connection to the database file at `path` as every one of ours is set up: commits
/// and checkpoints synced (`synchronous = FULL`), and a wait of up to 5 s for a lock.
pub(super) fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

/// Records that the `certificates` rows include every event up to `event_id`.
pub(super) fn save_checkpoint(tx: &Transaction<'_>, event_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('state_checkpoint', ?1)")?
        .execute([event_id.to_string()])?;
    Ok(())
}

/// 32 random bytes from the operating system, hex encoded (URL safe).
pub(super) fn generate_token() -> Result<String, getrandom::Error> {
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
    let upgrade: &[&str] = match version {
        0 => &[SCHEMA],
        1 => &[MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4],
        2 => &[MIGRATE_2_TO_3, MIGRATE_3_TO_4],
        3 => &[MIGRATE_3_TO_4],
        SCHEMA_VERSION => return Ok(()),
        found => {
            return Err(StoreError::Incompatible {
                path: path.to_owned(),
                found,
            });
        }
    };
    let tx = conn.transaction().map_err(open_err)?;
    for step in upgrade {
        tx.execute_batch(step).map_err(open_err)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_err)?;
    tx.commit().map_err(open_err)
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
        info_ts: row.get(16)?,
        observed_ts: row.get(17)?,
        // A type this build does not know (none is ever stored) reads as unknown.
        last_event_type: row
            .get::<_, Option<String>>(18)?
            .as_deref()
            .and_then(EventKind::from_event_type),
    })
}

const SAVE_CERTIFICATE: &str = concat!(
    "INSERT OR REPLACE INTO certificates (",
    cert_columns!(),
    ", saved_event_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
);

/// Saves a certificate's row, which includes every event of it up to `saved_event_id`.
pub(super) fn save_certificate(
    tx: &Transaction<'_>,
    cert: &Certificate,
    saved_event_id: i64,
) -> rusqlite::Result<()> {
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
        cert.info_ts,
        cert.observed_ts,
        cert.last_event_type.map(EventKind::event_type),
        saved_event_id,
    ])?;
    Ok(())
}

/// Saves what is known about a stack.
pub(super) fn save_stack(tx: &Transaction<'_>, stack: &StackRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO stacks (uid, id, id_source, name, environment, actions_checked) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        stack.uid,
        stack.id,
        stack.id_source.as_str(),
        stack.name,
        stack.environment,
        stack.actions_checked,
    ])?;
    Ok(())
}

/// Deletes a certificate's row.
pub(super) fn delete_certificate(
    tx: &Transaction<'_>,
    stack: &str,
    name: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM certificates WHERE stack = ?1 AND name = ?2")?
        .execute(params![stack, name])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An install.fail event for certificate `name` on stack 1.
    fn failure(ts: i64, name: &str) -> String {
        format!(
            r#"{{"timestamp":{ts},"event_type":"ssl_certificate.install.fail","ssl_certificate":{{"stack_id":1,"name":"{name}","error_message":"e{ts}"}}}}"#
        )
    }

    fn store_event(db: &Database, id: i64, payload: &str) {
        db.conn
            .execute(
                "INSERT INTO events (id, event_ts, digest, received_at, event_type, stack, name, payload) \
                 VALUES (?1, ?1, randomblob(32), 0, 'x', '1', 'x', ?2)",
                params![id, payload],
            )
            .expect("insert event");
    }

    /// Stores an event of certificate (`1`, `name`) on a connection of any schema.
    fn insert_event(
        conn: &Connection,
        id: i64,
        ts: f64,
        event_type: &str,
        name: &str,
        payload: &str,
    ) {
        conn.execute(
            "INSERT INTO events (id, event_ts, digest, received_at, event_type, stack, name, payload) \
             VALUES (?1, ?2, randomblob(32), ?2, ?3, '1', ?4, ?5)",
            params![id, ts, event_type, name, payload],
        )
        .expect("insert event");
    }

    /// The schema `version` wrote: the current one without what was added since.
    fn old_schema(version: i64) -> String {
        let mut added = vec![
            "    last_event_type           TEXT,\n",
            events_by_certificate!(),
        ];
        if version < 3 {
            added.extend([
                "    info_ts                   REAL,\n",
                "    observed_ts               REAL,\n",
                stacks_table!(),
            ]);
        }
        if version < 2 {
            added.push("    saved_event_id            INTEGER NOT NULL DEFAULT 0,\n");
        }
        let mut schema = SCHEMA.to_owned();
        for added in added {
            assert!(schema.contains(added), "the current schema has {added:?}");
            schema = schema.replace(added, "");
        }
        schema
    }

    /// `last_event_type` of every row as stored, by name.
    fn stored_types(db: &Database) -> Vec<(String, Option<String>)> {
        let mut stmt = db
            .conn
            .prepare("SELECT name, last_event_type FROM certificates ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    fn has_certificate_index(db: &Database) -> bool {
        let sql: Option<String> = db
            .conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'events_by_certificate'",
                [],
                |row| row.get(0),
            )
            .optional()
            .expect("sqlite_master");
        sql.is_some_and(|sql| sql.contains("events (stack, name, id)"))
    }

    /// The certificate `name` as the events `timestamps` leave it.
    fn after(name: &str, timestamps: &[i64]) -> Certificate {
        let mut cert = Certificate::new("1", name);
        for &ts in timestamps {
            match webhook::parse(failure(ts, name).as_bytes()) {
                Ok(Delivery::Ssl { event, .. }) => cert.apply(&event),
                other => panic!("fixture does not parse: {other:?}"),
            }
        }
        cert
    }

    fn failures(restored: &Restored, name: &str) -> Option<u64> {
        restored
            .certificates
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.install_failures)
    }

    #[test]
    fn replay_applies_each_event_once_onto_rows_saved_at_different_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Database::open(dir.path()).expect("open");
        // Events 1-6 alternate between a and b.
        for id in 1..=6 {
            let name = if id % 2 == 1 { "a" } else { "b" };
            store_event(&db, id, &failure(id, name));
        }
        let tx = db.conn.transaction().expect("tx");
        // a's row was saved after event 5 (a: 1, 3, 5), b's after event 2 (b: 2),
        // and every row holds everything up to event 2.
        save_certificate(&tx, &after("a", &[1, 3, 5]), 5).expect("save a");
        save_certificate(&tx, &after("b", &[2]), 2).expect("save b");
        save_checkpoint(&tx, 2).expect("checkpoint");
        tx.commit().expect("commit");

        let restored = db.restore().expect("restore");
        assert_eq!(
            failures(&restored, "a"),
            Some(3),
            "a's events 3 and 5 not again"
        );
        assert_eq!(
            failures(&restored, "b"),
            Some(3),
            "b's events 4 and 6 replayed"
        );
        assert_eq!(restored.replayed, 2);
        assert_eq!(restored.last_event_id, 6);
        let b = restored.certificates.iter().find(|c| c.name == "b");
        assert_eq!(b.and_then(|c| c.error_message.clone()), Some("e6".into()));
        assert_eq!(
            restored.unsaved,
            vec![(CertKey::new("1", "b"), 4)],
            "only b's row is behind, from event 4 on"
        );
    }

    #[test]
    fn replayed_certificates_are_listed_by_their_first_replayed_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).expect("open");
        // c gets event 1, then a and b alternate; c's row includes its event.
        store_event(&db, 1, &failure(1, "c"));
        for id in 2..=7 {
            let name = if id % 2 == 1 { "a" } else { "b" };
            store_event(&db, id, &failure(id, name));
        }
        let tx = db.conn.unchecked_transaction().expect("tx");
        save_certificate(&tx, &after("c", &[1]), 1).expect("save c");
        tx.commit().expect("commit");

        let restored = db.restore().expect("restore");
        assert_eq!(restored.replayed, 6);
        assert_eq!(
            restored.unsaved,
            vec![(CertKey::new("1", "b"), 2), (CertKey::new("1", "a"), 3)],
            "oldest first; c is not behind"
        );
    }

    #[test]
    fn observations_are_replayed_like_webhooks_and_unknown_kinds_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).expect("open");
        let observation = Observation {
            fetched_at: 5.0,
            stack: "1".into(),
            stack_uid: "uid".into(),
            uuid: "u".into(),
            name: "a".into(),
            expiry: Some(500.0),
            install_failing: Some(false),
            info: CertInfo::default(),
        };
        let store = |id: i64, event_type: &str, payload: &str| {
            db.conn
                .execute(
                    "INSERT INTO events (id, event_ts, digest, received_at, event_type, stack, name, payload) \
                     VALUES (?1, ?1, randomblob(32), ?1, ?2, '1', 'a', ?3)",
                    params![id, event_type, payload],
                )
                .expect("insert event");
        };
        // A failure at 1, the API saying installed at 5, a failure at 3 arriving late.
        store(1, "ssl_certificate.install.fail", &failure(1, "a"));
        let json = serde_json::to_string(&observation).expect("serialise");
        store(2, OBSERVATION_EVENT_TYPE, &json);
        store(3, "ssl_certificate.install.fail", &failure(3, "a"));
        store(4, OBSERVATION_EVENT_TYPE, "{\"not\": \"an observation\"}");
        let restored = db.restore().expect("restore");
        let a = restored
            .certificates
            .iter()
            .find(|c| c.name == "a")
            .expect("a");
        assert_eq!(a.install_failures, 2, "observations are not counted");
        assert!(
            !a.install_failing,
            "the observation at 5 is newer than both failures"
        );
        assert_eq!((a.expiry, a.observed_ts), (Some(500.0), Some(5.0)));
        assert_eq!(restored.replayed, 3, "the unreadable row is skipped");
        assert_eq!(restored.last_event_id, 4);
        assert_eq!(
            db.last_received_at().expect("last received"),
            Some(3.0),
            "the newest webhook's arrival (event 3), not an observation's (4)"
        );
    }

    #[test]
    fn stacks_are_saved_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Database::open(dir.path()).expect("open");
        let record = StackRecord {
            uid: "u1".into(),
            id: Some("7".into()),
            id_source: IdSource::Matched,
            name: "App".into(),
            environment: "production".into(),
            actions_checked: true,
        };
        let tx = db.conn.transaction().expect("tx");
        save_stack(&tx, &record).expect("save");
        save_stack(
            &tx,
            &StackRecord {
                id: None,
                id_source: IdSource::Unresolved,
                uid: "u2".into(),
                ..record.clone()
            },
        )
        .expect("save");
        tx.commit().expect("commit");
        let mut stacks = db.stacks().expect("stacks");
        stacks.sort_by(|a, b| a.uid.cmp(&b.uid));
        assert_eq!(stacks[0], record);
        assert_eq!(
            (stacks[1].id.as_deref(), stacks[1].id_source),
            (None, IdSource::Unresolved)
        );
    }

    #[test]
    fn a_schema_1_database_is_migrated_and_its_rows_count_as_of_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).expect("create");
            conn.execute_batch(&old_schema(1)).expect("schema 1");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
            // The event the row includes, and an observation after it (not an event).
            insert_event(
                &conn,
                1,
                1.0,
                "ssl_certificate.install.fail",
                "a",
                &failure(1, "a"),
            );
            insert_event(&conn, 2, 9.0, OBSERVATION_EVENT_TYPE, "a", "{}");
            conn.execute(
                "INSERT INTO certificates (stack, name, expiry, expiry_event_ts, last_event_ts, \
                 install_failing, install_event_ts, error_message, server_names, lets_encrypt, \
                 has_intermediate_cert, ssl_termination, status, install_failures, \
                 install_successes, expire_soon_notifications) \
                 VALUES ('1', 'a', NULL, NULL, 1, 1, 1, 'e1', 'a.example', NULL, NULL, NULL, NULL, 1, 0, 0)",
                [],
            )
            .expect("row");
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('state_checkpoint', '1')",
                [],
            )
            .expect("checkpoint");
        }
        let db = Database::open(dir.path()).expect("migrates");
        assert_eq!(
            stored_types(&db),
            [(
                "a".to_owned(),
                Some("ssl_certificate.install.fail".to_owned())
            )],
            "backfilled from the newest webhook event, not the observation"
        );
        assert!(has_certificate_index(&db));
        store_event(&db, 3, &failure(3, "a"));
        let restored = db.restore().expect("restore");
        assert_eq!(failures(&restored, "a"), Some(2));
        let a = restored.certificates.iter().find(|c| c.name == "a");
        assert_eq!(
            a.map(|c| (c.info_ts, c.info.server_names.clone())),
            Some((Some(3.0), Some("a.example".to_owned()))),
            "the descriptive fields' time starts as the newest event's"
        );
        assert_eq!(
            a.and_then(|c| c.last_event_type),
            Some(EventKind::InstallFail)
        );
        assert!(db.stacks().expect("the stacks table exists").is_empty());
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_schema_3_database_gets_each_certificate_s_newest_webhook_event_type() {
        assert!(
            MIGRATE_3_TO_4.contains(&format!("!= '{OBSERVATION_EVENT_TYPE}'")),
            "the migration spells the observation type as the code does"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).expect("create");
            conn.execute_batch(&old_schema(3)).expect("schema 3");
            conn.pragma_update(None, "user_version", 3)
                .expect("version");
            let (ok, fail, soon) = (
                "ssl_certificate.install.ok",
                "ssl_certificate.install.fail",
                "ssl_certificate.expire.soon",
            );
            // a: the failure at 30 is newest; expire.soon at 20 came late, the
            // observation at 50 is not an event.
            insert_event(&conn, 1, 10.0, ok, "a", "{}");
            insert_event(&conn, 2, 30.0, fail, "a", "{}");
            insert_event(&conn, 3, 20.0, soon, "a", "{}");
            insert_event(&conn, 4, 50.0, OBSERVATION_EVENT_TYPE, "a", "{}");
            // b: two events at 40, the later arrival wins.
            insert_event(&conn, 5, 40.0, ok, "b", "{}");
            insert_event(&conn, 6, 40.0, soon, "b", "{}");
            // c: known from the API only.
            insert_event(&conn, 7, 60.0, OBSERVATION_EVENT_TYPE, "c", "{}");
            // Another stack's certificate of the same name.
            conn.execute(
                "INSERT INTO events (id, event_ts, digest, received_at, event_type, stack, name, payload) \
                 VALUES (8, 99, randomblob(32), 99, ?1, '2', 'a', '{}')",
                [ok],
            )
            .expect("insert event");
            for (name, last_event_ts) in [("a", Some(30.0)), ("b", Some(40.0)), ("c", None)] {
                conn.execute(
                    "INSERT INTO certificates (stack, name, last_event_ts, install_failing, \
                     install_failures, install_successes, expire_soon_notifications, saved_event_id) \
                     VALUES ('1', ?1, ?2, 0, 0, 0, 0, 8)",
                    params![name, last_event_ts],
                )
                .expect("row");
            }
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('state_checkpoint', '8')",
                [],
            )
            .expect("checkpoint");
        }
        let db = Database::open(dir.path()).expect("migrates");
        assert_eq!(
            stored_types(&db),
            [
                (
                    "a".to_owned(),
                    Some("ssl_certificate.install.fail".to_owned())
                ),
                (
                    "b".to_owned(),
                    Some("ssl_certificate.expire.soon".to_owned())
                ),
                ("c".to_owned(), None),
            ]
        );
        assert!(has_certificate_index(&db));
        let restored = db.restore().expect("restore");
        assert_eq!(restored.replayed, 0);
        let mut types: Vec<_> = restored
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c.last_event_type))
            .collect();
        types.sort_unstable_by_key(|&(name, _)| name);
        assert_eq!(
            types,
            [
                ("a", Some(EventKind::InstallFail)),
                ("b", Some(EventKind::ExpireSoon)),
                ("c", None),
            ]
        );
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn the_newest_event_s_type_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut db = Database::open(dir.path()).expect("open");
            assert!(has_certificate_index(&db), "a fresh database has the index");
            store_event(&db, 1, &failure(1, "a"));
            store_event(&db, 2, &failure(2, "b"));
            let tx = db.conn.transaction().expect("tx");
            save_certificate(&tx, &after("a", &[1]), 1).expect("save a");
            save_certificate(&tx, &after("b", &[2]), 2).expect("save b");
            save_checkpoint(&tx, 2).expect("checkpoint");
            tx.commit().expect("commit");
            // After the checkpoint: a newer install.ok for b, replayed at the restart.
            store_event(
                &db,
                3,
                r#"{"timestamp":3,"event_type":"ssl_certificate.install.ok","ssl_certificate":{"stack_id":1,"name":"b"}}"#,
            );
        }
        let db = Database::open(dir.path()).expect("reopen");
        assert_eq!(
            stored_types(&db),
            [
                (
                    "a".to_owned(),
                    Some("ssl_certificate.install.fail".to_owned())
                ),
                (
                    "b".to_owned(),
                    Some("ssl_certificate.install.fail".to_owned())
                ),
            ],
            "saved as Cloud66 names the type"
        );
        let restored = db.restore().expect("restore");
        assert_eq!(restored.replayed, 1);
        let get = |name: &str| {
            restored
                .certificates
                .iter()
                .find(|c| c.name == name)
                .map(|c| (c.last_event_ts, c.last_event_type))
        };
        assert_eq!(get("a"), Some((Some(1.0), Some(EventKind::InstallFail))));
        assert_eq!(
            get("b"),
            Some((Some(3.0), Some(EventKind::InstallOk))),
            "the replay sets it like the writer did"
        );
    }
}

//! The event history of one certificate, read from the `events` log on a connection of
//! its own, opened read-only per request: in WAL mode a reader sees the last commit and
//! never blocks the writer (nor waits for it), so the history costs webhooks nothing.
//!
//! The history replays the certificate's stored events (webhooks and API observations)
//! oldest first, in arrival order, with the same [`Certificate::apply`] and
//! [`Certificate::observe`] the writer used, from a certificate about which nothing is
//! known. For each event it then says:
//! - `changed_state`: whether it changed a fact shown about the certificate (expiry,
//!   install failing, error message, descriptive fields); counting it is not a change.
//! - `out_of_order`: whether it arrived after an event or observation of the same
//!   certificate with a newer timestamp (payload `timestamp`, or fetch time), so the
//!   newer word kept every aspect both spoke about.
//!
//! Duplicates never appear: a re-delivery of the same body is answered `duplicate` and
//! not stored. After a `DELETE` the events stay, so a certificate created again under
//! the same stack and name shows its earlier events too. Events stored under another
//! `stack` label (the stack's API uid, before its webhook id was known) are not shown.
//!
//! The log's index `events_by_certificate` on (stack, name, id) (schema 4) finds the
//! certificate's events already in arrival order: the query reads only those rows and
//! sorts nothing, however long the log of the other certificates.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::database::Stored;
use crate::event::{CertInfo, EventKind, OBSERVATION_EVENT_TYPE};
use crate::state::Certificate;
use crate::view::{domains, rfc3339};

/// One stored event as the history shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEvent {
    /// Its id in the log: arrival order.
    pub id: i64,
    /// The Cloud66 `event_type`, or `cloud66.api.ssl_certificate` for an observation.
    pub event_type: String,
    /// `webhook` or `api`.
    pub source: &'static str,
    /// Payload timestamp (or fetch time), RFC 3339 UTC.
    pub event_at: Option<String>,
    /// The same as Unix seconds.
    pub event_unix: f64,
    /// When it arrived, RFC 3339 UTC.
    pub received_at: Option<String>,
    /// The same as Unix seconds.
    pub received_unix: f64,
    /// The expiry it gave, RFC 3339 UTC.
    pub expiry: Option<String>,
    /// Whether it said the install failed (`None`: it did not speak about installs).
    pub install_failing: Option<bool>,
    /// The status it gave.
    pub status: Option<String>,
    /// The error message it gave.
    pub error_message: Option<String>,
    /// The domains it gave.
    pub domains: Option<Vec<String>>,
    /// Whether it changed what is shown about the certificate.
    pub changed_state: bool,
    /// Whether something newer had arrived before it.
    pub out_of_order: bool,
    /// Whether its payload still parses; when not, it is shown but not replayed.
    pub readable: bool,
}

/// The newest events of a certificate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct History {
    /// Events stored for it in all.
    pub total: usize,
    /// The newest ones, newest first.
    pub events: Vec<HistoryEvent>,
}

/// What an event says about the facts shown; counters left out.
fn facts(cert: &Certificate) -> (Option<f64>, bool, Option<&str>, &CertInfo) {
    (
        cert.expiry,
        cert.install_failing,
        cert.error_message.as_deref(),
        &cert.info,
    )
}

/// Every stored event of one certificate, oldest first: a search of
/// `events_by_certificate`, which also gives the order.
const EVENTS_OF_CERTIFICATE: &str = "SELECT id, event_ts, received_at, event_type, payload \
     FROM events WHERE stack = ?1 AND name = ?2 ORDER BY id";

/// The newest `limit` events of (`stack`, `name`) in the database at `path`.
pub(super) fn read(
    path: &Path,
    stack: &str,
    name: &str,
    limit: usize,
) -> rusqlite::Result<History> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare(EVENTS_OF_CERTIFICATE)?;
    let mut rows = stmt.query([stack, name])?;
    let mut replay = Replay::new(stack, name, limit);
    while let Some(row) = rows.next()? {
        replay.push(
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            &row.get::<_, String>(4)?,
        );
    }
    Ok(replay.finish())
}

/// A certificate's history built from its stored events, pushed oldest first (in
/// arrival order), whichever database they come from.
pub(super) struct Replay {
    /// What the events so far say about the certificate.
    cert: Certificate,
    /// The newest timestamp seen so far.
    newest_ts: f64,
    /// The newest `limit` events, oldest first.
    kept: VecDeque<HistoryEvent>,
    limit: usize,
    total: usize,
}

impl Replay {
    /// A replay of (`stack`, `name`) that keeps the newest `limit` events.
    pub(super) fn new(stack: &str, name: &str, limit: usize) -> Self {
        Replay {
            cert: Certificate::new(stack, name),
            newest_ts: f64::NEG_INFINITY,
            kept: VecDeque::with_capacity(limit.min(1024)),
            limit,
            total: 0,
        }
    }

    /// The next stored event: its id, payload time, arrival, type and payload.
    pub(super) fn push(
        &mut self,
        id: i64,
        event_ts: f64,
        received_unix: f64,
        event_type: String,
        payload: &str,
    ) {
        let mut shown = HistoryEvent {
            id,
            source: match event_type == OBSERVATION_EVENT_TYPE {
                true => "api",
                false => "webhook",
            },
            event_type,
            event_at: rfc3339(event_ts),
            event_unix: event_ts,
            received_at: rfc3339(received_unix),
            received_unix,
            expiry: None,
            install_failing: None,
            status: None,
            error_message: None,
            domains: None,
            changed_state: false,
            out_of_order: event_ts < self.newest_ts,
            readable: false,
        };
        if let Some(stored) = Stored::parse(&shown.event_type, payload) {
            describe(&mut shown, &stored);
            let before = self.cert.clone();
            stored.apply_to(&mut self.cert);
            shown.changed_state = facts(&before) != facts(&self.cert);
        }
        self.newest_ts = self.newest_ts.max(event_ts);
        self.total += 1;
        if self.limit > 0 {
            if self.kept.len() == self.limit {
                self.kept.pop_front();
            }
            self.kept.push_back(shown);
        }
    }

    /// The history: every event counted, the newest kept ones newest first.
    pub(super) fn finish(self) -> History {
        History {
            total: self.total,
            events: self.kept.into_iter().rev().collect(),
        }
    }
}

/// Fills in the key fields `stored` gave.
fn describe(shown: &mut HistoryEvent, stored: &Stored) {
    let (expiry, info) = match stored {
        Stored::Webhook(event) => {
            shown.install_failing = event
                .kind
                .is_install()
                .then_some(event.kind == EventKind::InstallFail);
            shown.error_message.clone_from(&event.error_message);
            (event.expiry, &event.info)
        }
        Stored::Observation(seen) => {
            shown.install_failing = seen.install_failing;
            (seen.expiry, &seen.info)
        }
    };
    shown.readable = true;
    shown.expiry = expiry.and_then(rfc3339);
    shown.status.clone_from(&info.status);
    shown.domains = info.server_names.as_deref().map(|n| domains(Some(n)));
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::event::Observation;
    use crate::store::Database;

    fn webhook(event_type: &str, ts: i64, name: &str, extra: &str) -> String {
        format!(
            r#"{{"timestamp":{ts},"event_type":"{event_type}","ssl_certificate":{{"stack_id":1,"name":"{name}"{extra}}}}}"#
        )
    }

    fn store(db: &Database, id: i64, ts: f64, event_type: &str, name: &str, payload: &str) {
        db.conn
            .execute(
                "INSERT INTO events (id, event_ts, digest, received_at, event_type, stack, name, payload) \
                 VALUES (?1, ?2, randomblob(32), ?2 + 1, ?3, '1', ?4, ?5)",
                params![id, ts, event_type, name, payload],
            )
            .expect("insert event");
    }

    #[test]
    fn replays_oldest_first_and_shows_newest_first_with_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).expect("open");
        let ok = "ssl_certificate.install.ok";
        let fail = "ssl_certificate.install.fail";
        let expiry = r#","cert_expiry":"2024-03-01T00:00:00Z","server_names":"a.com,b.com""#;
        store(&db, 1, 100.0, ok, "web", &webhook(ok, 100, "web", expiry));
        store(
            &db,
            2,
            300.0,
            fail,
            "web",
            &webhook(fail, 300, "web", r#","error_message":"boom""#),
        );
        // Arrives late: older than the failure, which keeps the install state.
        store(&db, 3, 200.0, ok, "web", &webhook(ok, 200, "web", expiry));
        store(&db, 4, 150.0, ok, "other", &webhook(ok, 150, "other", ""));
        let seen = Observation {
            fetched_at: 400.0,
            stack: "1".into(),
            stack_uid: "uid".into(),
            uuid: "u".into(),
            name: "web".into(),
            expiry: None,
            install_failing: Some(false),
            info: CertInfo::default(),
        };
        let json = serde_json::to_string(&seen).expect("serialises");
        store(&db, 5, 400.0, OBSERVATION_EVENT_TYPE, "web", &json);
        store(&db, 6, 500.0, ok, "web", "{not json");

        let history = read(&db.path, "1", "web", 50).expect("history");
        assert_eq!(history.total, 5);
        let ids: Vec<_> = history.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [6, 5, 3, 2, 1], "newest first, only this certificate");
        let flags: Vec<_> = history
            .events
            .iter()
            .map(|e| (e.changed_state, e.out_of_order, e.readable))
            .collect();
        assert_eq!(
            flags,
            [
                (false, false, false),
                (true, false, true),
                (false, true, true),
                (true, false, true),
                (true, false, true),
            ]
        );
        let first = &history.events[4];
        assert_eq!(first.source, "webhook");
        assert_eq!(first.expiry.as_deref(), Some("2024-03-01T00:00:00Z"));
        assert_eq!(first.install_failing, Some(false));
        assert_eq!(first.domains, Some(vec!["a.com".into(), "b.com".into()]));
        assert_eq!(first.received_unix, 101.0);
        let failure = &history.events[3];
        assert_eq!(
            (failure.install_failing, failure.error_message.as_deref()),
            (Some(true), Some("boom"))
        );
        assert_eq!(history.events[1].source, "api");

        let newest = read(&db.path, "1", "web", 2).expect("history");
        assert_eq!((newest.total, newest.events.len()), (5, 2));
        assert_eq!(newest.events[0].id, 6);
        let none = read(&db.path, "1", "web", 0).expect("history");
        assert_eq!((none.total, none.events.len()), (5, 0));
        let unknown = read(&db.path, "1", "nope", 5).expect("history");
        assert_eq!((unknown.total, unknown.events.len()), (0, 0));
    }

    #[test]
    fn the_query_searches_the_certificate_index_and_sorts_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).expect("open");
        let mut stmt = db
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {EVENTS_OF_CERTIFICATE}"))
            .expect("explain");
        let plan: Vec<String> = stmt
            .query_map(["1", "web"], |row| row.get(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("plan rows");
        assert_eq!(
            plan,
            ["SEARCH events USING INDEX events_by_certificate (stack=? AND name=?)"],
            "no scan of the log, no temporary B-tree for the order"
        );
    }
}

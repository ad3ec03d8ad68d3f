//! What the Cloud66 API reconciliation knows about each stack, shared by the replicas.
//!
//! The leader saves a stack in `cloud66_ssl_exporter_stacks` and, in the same
//! transaction, appends a log event of type [`STACK_EVENT_TYPE`] with the record: every
//! replica's tail applies it, so each learns the stack's name and webhook id (its status
//! page and `stack_info` follow) and, when the stack's label changed from its uid to its
//! id, moves the certificates under the uid to the id, at the same place in the log as
//! the leader did. A replica starts from the table and applies the events after its
//! snapshot; applying an event twice changes nothing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Transaction};

use super::PgError;
use crate::cloud66::{IdSource, StackRecord};

/// `event_type` of the log entry that saves a stack.
pub(crate) const STACK_EVENT_TYPE: &str = "cloud66-ssl-exporter.stack";

/// The payload of a stack event.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct StackEvent {
    uid: String,
    id: Option<String>,
    id_source: String,
    name: String,
    environment: String,
    actions_checked: bool,
    /// The label the stack's certificates move from, when it changed.
    moved_from: Option<String>,
}

impl StackEvent {
    /// The event for `record`, moving certificates from `moved_from` if set.
    pub(super) fn new(record: &StackRecord, moved_from: Option<String>) -> Self {
        StackEvent {
            uid: record.uid.clone(),
            id: record.id.clone(),
            id_source: record.id_source.as_str().to_owned(),
            name: record.name.clone(),
            environment: record.environment.clone(),
            actions_checked: record.actions_checked,
            moved_from,
        }
    }

    /// The stored payload, and its digest (the event's dedup key with its time).
    pub(super) fn payload(&self) -> Result<(String, [u8; 32]), PgError> {
        let payload = serde_json::to_string(self)
            .map_err(|e| PgError::Refused(format!("cannot store a stack: {e}")))?;
        let digest = Sha256::digest(payload.as_bytes()).into();
        Ok((payload, digest))
    }

    /// A stored payload; `None` if it does not parse.
    pub(super) fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }

    /// The label the stack's certificates move from, if they move.
    pub(super) fn moved_from(&self) -> Option<&str> {
        self.moved_from.as_deref()
    }

    /// The stack as the directory keeps it.
    pub(super) fn record(&self) -> StackRecord {
        StackRecord {
            uid: self.uid.clone(),
            id: self.id.clone(),
            id_source: IdSource::parse(&self.id_source),
            name: self.name.clone(),
            environment: self.environment.clone(),
            actions_checked: self.actions_checked,
        }
    }
}

/// Saves `record` in the stacks table.
pub(super) async fn save(tx: &Transaction<'_>, record: &StackRecord) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO cloud66_ssl_exporter_stacks \
         (uid, id, id_source, name, environment, actions_checked) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (uid) DO UPDATE SET (id, id_source, name, environment, actions_checked) = \
         (excluded.id, excluded.id_source, excluded.name, excluded.environment, excluded.actions_checked)",
        &[
            &record.uid,
            &record.id,
            &record.id_source.as_str(),
            &record.name,
            &record.environment,
            &record.actions_checked,
        ],
    )
    .await?;
    Ok(())
}

/// Every stack in the table.
pub(crate) async fn load(client: &Client) -> Result<Vec<StackRecord>, PgError> {
    let rows = client
        .query(
            "SELECT uid, id, id_source, name, environment, actions_checked \
             FROM cloud66_ssl_exporter_stacks ORDER BY uid",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| StackRecord {
            uid: row.get(0),
            id: row.get(1),
            id_source: IdSource::parse(row.get(2)),
            name: row.get(3),
            environment: row.get(4),
            actions_checked: row.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_event_reads_back_as_written() {
        let record = StackRecord {
            uid: "5999b763".into(),
            id: Some("123".into()),
            id_source: IdSource::Actions,
            name: "Awesome \"App\"".into(),
            environment: "production".into(),
            actions_checked: true,
        };
        let event = StackEvent::new(&record, Some("5999b763".into()));
        let (payload, digest) = event.payload().expect("serialises");
        let read = StackEvent::parse(&payload).expect("parses");
        assert_eq!(read, event);
        assert_eq!(read.record(), record);
        assert_eq!(read.moved_from(), Some("5999b763"));
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(payload.as_bytes())));
        assert!(StackEvent::parse("{\"uid\": 1}").is_none());
    }
}

//! The checkpoint thread: copies committed log pages into the database file between the
//! writer's commits, on its own connection.
//!
//! A checkpoint writes the pages the log holds into the database file and syncs that file
//! before the log may be reused. When the writer did it inside a commit (SQLite's
//! automatic checkpoint, every 256 log pages), every webhook in that commit and every one
//! queued behind it waited for it: with 100,000 certificates that was a 3.5-4.6 ms stall
//! every 20 commits or so, and it set the 99th percentile (with no checkpoint at all, p99
//! fell from 10.5-12.4 to 5.9-6.3 ms). Here the writer's connection asks this thread for a
//! PASSIVE checkpoint every [`BACKGROUND_PAGES`] log pages, so each copy is short and runs
//! beside the writer, which keeps committing: PASSIVE takes no lock the writer needs. Once
//! the log is fully copied, SQLite starts it over at the writer's next transaction, as
//! after its automatic checkpoints.
//!
//! The checkpoint's connection runs with `synchronous = FULL`: SQLite syncs the log before
//! the copy and the database after it, before it counts the pages as copied. Should this
//! thread fall behind or fail, the writer checkpoints inside its commit past
//! [`INLINE_PAGES`], which bounds the log.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::StoreError;
use super::database::{Database, connect};

/// Log pages after which the checkpoint thread is asked to copy them (about five commits
/// of a burst): pages that several commits change (the newest rows and index entries,
/// the first page, which holds the file size) are copied once, and each copy is short.
/// With 100,000 certificates under `wrk -c64`, p99 with 32 / 64 / 128 / 256 pages: 8.6 /
/// 9.3-10.0 / 10.2-11.3 / 12.4-12.6 ms, against 12.6-14.2 ms with SQLite's automatic
/// checkpoint every 256 pages in the writer; the thread's CPU per event rises as the
/// copies get smaller (5.5 / 4.0 / 2.8 / 1.7 µs).
const BACKGROUND_PAGES: i32 = 64;

/// Log pages after which the writer copies them itself, inside a commit, as SQLite's
/// automatic checkpoint would: only when the checkpoint thread falls behind.
const INLINE_PAGES: i32 = 1024;

/// The checkpoint thread, as the writer sees it.
pub(super) struct Checkpointer {
    /// Asks for a checkpoint; `None` once stopped.
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `db`'s file, starts the thread, and makes `db` (the
    /// writer's connection) ask it for a checkpoint every [`BACKGROUND_PAGES`] log pages
    /// and checkpoint itself past [`INLINE_PAGES`].
    pub(super) fn start(db: &mut Database) -> std::io::Result<Self> {
        let open_err = |source| {
            std::io::Error::other(StoreError::Open {
                path: db.path.clone(),
                source,
            })
        };
        let conn = connect(&db.path).map_err(open_err)?;
        // One request pending at most: requests made while a checkpoint runs are served
        // by the next one, which copies everything committed by then.
        let (wake, requests) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("storage-checkpoint".into())
            .spawn(move || run(&conn, &requests))?;
        watch(&mut db.conn, wake.clone()).map_err(open_err)?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Stops watching `conn` (the writer's connection) and stops the thread once its
    /// current checkpoint is done, closing its connection.
    pub(super) fn stop(&mut self, conn: &mut Connection) {
        // The hook holds a sender: the thread stops when the last one is gone.
        if let Err(error) = conn.wal_hook(None::<fn(&mut Wal, i32) -> rusqlite::Result<()>>) {
            tracing::warn!(%error, "cannot remove the storage checkpoint hook");
        }
        drop(self.wake.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("storage checkpoint thread panicked");
        }
    }
}

/// Makes the writer's connection `conn` ask for a checkpoint through `wake` every
/// [`BACKGROUND_PAGES`] log pages, and checkpoint itself past [`INLINE_PAGES`].
fn watch(conn: &mut Connection, wake: SyncSender<()>) -> rusqlite::Result<()> {
    // Log pages when a checkpoint was last asked for.
    let mut asked_at = 0;
    conn.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
        if pages < asked_at {
            // The log was started over.
            asked_at = 0;
        }
        if pages >= INLINE_PAGES {
            // An error here would fail the commit that has happened: the next
            // commit tries again.
            if let Err(error) = wal.checkpoint() {
                tracing::debug!(%error, "storage checkpoint in the writer skipped");
            }
        } else if pages - asked_at >= BACKGROUND_PAGES {
            asked_at = pages;
            match wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("storage checkpoint thread has stopped");
                }
            }
        }
        Ok(())
    }))
}

/// Checkpoints once per request until the writer is gone.
fn run(conn: &Connection, requests: &Receiver<()>) {
    while requests.recv().is_ok() {
        let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(0)
        });
        if let Err(error) = checkpoint {
            // The writer's own automatic checkpoint still bounds the log.
            tracing::warn!(%error, "storage checkpoint failed");
        }
    }
}

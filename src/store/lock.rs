//! One writer per store: an exclusive `flock` on a lock file in the storage directory,
//! held as long as the database is open. A second exporter on the same directory (two
//! pods on one volume, a unit and a container sharing it, a Recreate mistake) would
//! otherwise write beside the first, each with its own view of the state.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use super::StoreError;

/// File name of the lock inside `--storage.path`; it holds the owner's PID.
pub const LOCK_FILE: &str = "cloud66-ssl-exporter.lock";

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct StoreLock {
    /// Kept open: closing it releases the lock.
    _file: File,
}

impl StoreLock {
    /// Takes the lock of `dir` without waiting, or says who holds it.
    pub fn take(dir: &Path) -> Result<StoreLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let failed = |source: std::io::Error| StoreError::Lock {
            dir: dir.to_owned(),
            reason: format!("cannot use {}: {source}", path.display()),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        if let Err(errno) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if errno != rustix::io::Errno::WOULDBLOCK {
                return Err(failed(errno.into()));
            }
            return Err(StoreError::Lock {
                dir: dir.to_owned(),
                reason: match holder(&mut file) {
                    Some(pid) => format!("another exporter (PID {pid}) is using it"),
                    None => "another exporter is using it".to_owned(),
                },
            });
        }
        // The PID is only a hint for the message above; the lock is what counts.
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the PID into the lock file");
        }
        Ok(StoreLock { _file: file })
    }
}

/// The PID written by the lock's holder, if readable.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holder_s_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StoreLock::take(dir.path()).expect("first");
        let error = StoreLock::take(dir.path()).expect_err("second");
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("PID {}", std::process::id())),
            "{message}"
        );
        drop(first);
        StoreLock::take(dir.path()).expect("free again once the first is dropped");
    }
}

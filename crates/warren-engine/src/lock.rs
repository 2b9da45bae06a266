//! Per-workspace operation locks (flock on a file), so that two `warren` processes never run
//! operations on the same workspace at once, and the reconciler can tell an operation in progress
//! (lock held) from one whose process died (lock free, state still transitional).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::EngineError;

/// A held operation lock; released on drop (and by the kernel if the process dies).
pub struct OpLock {
    _lock: Flock<File>,
}

fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.lock"))
}

fn open(dir: &Path, id: &str) -> Result<File, EngineError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| EngineError::Internal(format!("create {}: {e}", dir.display())))?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path(dir, id))
        .map_err(|e| EngineError::Internal(format!("open lock: {e}")))
}

impl OpLock {
    /// Waits for and takes the lock of workspace `id`.
    pub async fn acquire(dir: &Path, id: &str) -> Result<OpLock, EngineError> {
        let f = open(dir, id)?;
        tokio::task::spawn_blocking(move || {
            Flock::lock(f, FlockArg::LockExclusive)
                .map(|l| OpLock { _lock: l })
                .map_err(|(_, e)| EngineError::Internal(format!("lock workspace: {e}")))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?
    }

    /// Takes the lock if nobody holds it.
    pub fn try_acquire(dir: &Path, id: &str) -> Result<Option<OpLock>, EngineError> {
        let f = open(dir, id)?;
        Ok(Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .ok()
            .map(|l| OpLock { _lock: l }))
    }
}

/// Removes the lock file of a deleted workspace.
pub fn remove(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(path(dir, id));
}

//! One mesh per state directory. `warden up` holds an exclusive lock on `<state>/up.lock` for
//! its whole life, with its PID written inside: a second `up` on the same directory is refused
//! with the PID that holds it, and `status`, `verify` and `down` can tell a running mesh from
//! files a stopped one left behind. The kernel drops the lock when the holder exits, however it
//! exits (SIGKILL included), so a stale lock never needs cleaning up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "up.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another `warden up` runs on this state directory.
    #[error("{} is in use by `warden up` (pid {pid})", dir.display())]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it (`unknown` while it is writing it).
        pid: String,
    },
    /// The lock file cannot be opened or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

fn open(dir: &Path) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|source| LockError::Io { path, source })
}

fn read_pid(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match text.trim() {
        "" => "unknown".to_owned(),
        pid => pid.to_owned(),
    }
}

impl StateLock {
    /// Takes the lock on `dir` (which must exist) and writes this process's PID into it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let mut file = open(dir)?;
        let io = |source| LockError::Io {
            path: dir.join(LOCK_FILE),
            source,
        };
        // `holder` takes the lock for an instant to test it: retry briefly before refusing.
        for attempt in 0..3 {
            match file.try_lock() {
                Ok(()) => {
                    file.set_len(0).map_err(io)?;
                    file.rewind().map_err(io)?;
                    write!(file, "{}", std::process::id()).map_err(io)?;
                    file.flush().map_err(io)?;
                    return Ok(Self { _file: file });
                }
                Err(TryLockError::WouldBlock) if attempt < 2 => {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::InUse {
                        dir: dir.to_owned(),
                        pid: read_pid(&mut file),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// The PID of the `warden up` running on `dir`, or `None` when no mesh runs there.
pub fn holder(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => Some(read_pid(&mut file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// `warden down`: sends SIGTERM to the `warden up` holding `dir` and waits (up to `limit`)
/// until it has stopped its children and released the lock. Returns the PID it stopped.
pub async fn stop_holder(dir: &Path, limit: std::time::Duration) -> Result<u32, String> {
    let pid = holder(dir).ok_or_else(|| {
        format!(
            "the mesh in {} is not running (no `warden up` holds its lock)",
            dir.display()
        )
    })?;
    let raw: u32 = pid.parse().map_err(|_| {
        format!(
            "{}: no PID in it yet; try again",
            dir.join(LOCK_FILE).display()
        )
    })?;
    let target = i32::try_from(raw)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{}: bad PID {raw}", dir.join(LOCK_FILE).display()))?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM)
        .map_err(|e| format!("cannot signal `warden up` (pid {raw}): {e}"))?;
    let start = std::time::Instant::now();
    while holder(dir).is_some() {
        if start.elapsed() > limit {
            return Err(format!(
                "`warden up` (pid {raw}) still holds {} after {limit:?}",
                dir.display()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None);
        let lock = StateLock::acquire(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(holder(dir.path()), Some(pid.clone()));
        match StateLock::acquire(dir.path()) {
            Err(LockError::InUse { pid: p, .. }) => assert_eq!(p, pid),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(lock);
        assert_eq!(holder(dir.path()), None);
        StateLock::acquire(dir.path()).unwrap();
    }
}

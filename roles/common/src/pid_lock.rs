//! A lock file naming the process that holds it. The lock is the kernel's
//! (`flock`): it goes with the process, however the process ends, so a
//! crash never leaves it taken. The pid written in the file only tells the
//! one refused who holds it.

use std::fs::{File, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A lock held by this process until dropped.
#[derive(Debug)]
pub struct PidLock {
    path: PathBuf,
    _file: File,
}

/// " (pid N)" when the holder's pid is known, for a refusal naming it.
pub fn pid_note(pid: Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// Why [`PidLock::take`] did not take the lock.
#[derive(Debug, thiserror::Error)]
pub enum PidLockError {
    /// Another holder has it: another process, or another holder in this one.
    #[error("{} is held{}", path.display(), pid.map(|pid| format!(" by pid {pid}")).unwrap_or_default())]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("locking {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl PidLock {
    /// Takes the lock of the file at `path` (created, owner-only, if need
    /// be) without waiting, and writes this process's pid into it.
    pub fn take(path: &Path) -> Result<Self, PidLockError> {
        let io = |source| PidLockError::Io {
            path: path.to_path_buf(),
            source,
        };
        crate::private::create_file(path).map_err(io)?;
        let mut file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(PidLockError::Held {
                    path: path.to_path_buf(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_naming_its_holder_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = PidLock::take(&path).unwrap();
        match PidLock::take(&path) {
            Err(PidLockError::Held { path: p, pid }) => {
                assert_eq!(p, path);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected held, got {other:?}"),
        }
        drop(held);
        let again = PidLock::take(&path).unwrap();
        assert_eq!(again.path(), path);
    }

    #[test]
    fn a_lock_file_in_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/x.lock");
        let e = PidLock::take(&path).unwrap_err();
        assert!(matches!(e, PidLockError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("missing/x.lock"), "{e}");
    }
}

//! The devnet's state dir, held by one `hashpool devnet` at a time: two
//! on one state dir would write over each other's chain, database and
//! wallet.

use std::path::{Path, PathBuf};

use roles_common::pid_lock::{pid_note, PidLock, PidLockError};

use crate::profile::DevnetConfigs;

/// The lock file in a state dir; it holds the pid of the devnet holding it.
const LOCK_FILE: &str = ".lock";

/// A state dir held by this process, until dropped.
pub struct StateDirLock {
    dir: PathBuf,
    _lock: PidLock,
}

impl StateDirLock {
    /// Creates `dir` if need be and locks it; refuses, with the holder's
    /// pid, a dir another devnet holds.
    pub fn take(dir: &Path) -> Result<Self, String> {
        roles_common::private::create_dir(dir)
            .map_err(|e| format!("state dir {}: {e}", dir.display()))?;
        let lock = PidLock::take(&dir.join(LOCK_FILE)).map_err(|e| match e {
            PidLockError::Held { pid, .. } => format!(
                "state dir {} is in use by another hashpool devnet{}",
                dir.display(),
                pid_note(pid)
            ),
            e => e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Removes everything in the dir but the lock, which stays held.
    pub fn empty(&self) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("emptying {}: {e}", self.dir.display());
        for entry in std::fs::read_dir(&self.dir).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            if entry.file_name() == LOCK_FILE {
                continue;
            }
            let removed = match entry.file_type().map_err(failed)?.is_dir() {
                true => std::fs::remove_dir_all(entry.path()),
                false => std::fs::remove_file(entry.path()),
            };
            removed.map_err(failed)?;
        }
        Ok(())
    }
}

/// Takes the devnet's state dir before anything touches it; a scale-out
/// devnet's is emptied then (see [`DevnetConfigs::use_scale_out`]).
pub fn take_state_dir(c: &DevnetConfigs) -> Result<StateDirLock, String> {
    let lock = StateDirLock::take(&c.state_dir)?;
    if c.scale_out {
        lock.empty()?;
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> DevnetConfigs {
        crate::profile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/devnet.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_second_devnet_on_a_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("devnet");
        let held = StateDirLock::take(&state).unwrap();
        let refused = StateDirLock::take(&state).err().expect("refused");
        assert_eq!(
            refused,
            format!(
                "state dir {} is in use by another hashpool devnet (pid {})",
                state.display(),
                std::process::id()
            )
        );
        drop(held);
        assert!(StateDirLock::take(&state).is_ok(), "free once let go");
    }

    #[test]
    fn a_scale_out_state_dir_is_emptied_only_by_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = shipped();
        c.move_state_to(&dir.path().join("devnet"));
        c.use_scale_out();
        let state = c.state_dir.clone();
        assert_eq!(state, dir.path().join("devnet-scale-out"));
        let held = take_state_dir(&c).unwrap();
        std::fs::create_dir_all(state.join("pool")).unwrap();
        std::fs::write(state.join("pool/outbox"), "quotes").unwrap();
        std::fs::write(state.join("devnet.log"), "log").unwrap();
        // A second scale-out devnet on it leaves the running one's state.
        assert!(take_state_dir(&c).is_err());
        assert!(state.join("pool/outbox").exists());
        // Once the first is gone, the next run starts from nothing.
        drop(held);
        let _held = take_state_dir(&c).unwrap();
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [LOCK_FILE]);
        assert!(take_state_dir(&c).is_err(), "still held after emptying");
    }

    #[test]
    fn a_devnet_that_is_not_scale_out_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = shipped();
        c.move_state_to(dir.path());
        std::fs::write(dir.path().join("devnet.log"), "log").unwrap();
        let _held = take_state_dir(&c).unwrap();
        assert!(dir.path().join("devnet.log").exists());
    }
}

//! The chain on disk: `<state_dir>/chain.json`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the dir).

use std::fs;
use std::path::{Path, PathBuf};

use roles_common::private;

use serde::{Deserialize, Serialize};

use crate::chain::StoredBlock;

const FILE: &str = "chain.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredChain {
    /// Template ids start here after a restart, so a pool never sees one reused.
    pub next_template_id: u64,
    pub blocks: Vec<StoredBlock>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a devnet chain file: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the chain of `state_dir`, or an empty one if there is none yet.
pub fn load(state_dir: &Path) -> Result<StoredChain, StoreError> {
    fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
    let path = state_dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Format {
            path: path.clone(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredChain::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Replaces the chain of `state_dir` atomically; Ok only once it is durable.
pub fn save(state_dir: &Path, chain: &StoredChain) -> Result<(), StoreError> {
    let path = state_dir.join(FILE);
    let bytes = serde_json::to_vec_pretty(chain).expect("a chain always serializes");
    private::replace_file(&path, &bytes).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = load(dir.path()).unwrap();
        assert!(empty.blocks.is_empty());
        let chain = StoredChain {
            next_template_id: 42,
            blocks: vec![StoredBlock {
                height: 0,
                hash: "00".into(),
                header: "11".into(),
                coinbase: String::new(),
                transactions: vec![],
            }],
        };
        save(dir.path(), &chain).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.next_template_id, 42);
        assert_eq!(back.blocks, chain.blocks);
        assert!(!dir.path().join("chain.tmp").exists());
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{nope").unwrap();
        assert!(matches!(load(dir.path()), Err(StoreError::Format { .. })));
    }
}

//! A miner's own ehash wallet in a directory of its own: the mnemonic its
//! locking key derives from, the cdk wallet and the quote records. A miner
//! whose SV1 username is that key collects their ehash with it from the
//! mint directly, trusting no proxy.

use std::fs;
use std::path::Path;

use roles_common::private;

use cdk::nuts::SecretKey;

use super::{EhashWallet, WalletError, DEFAULT_MINT_TIMEOUT};
use crate::quotes::QuoteStore;

/// The mnemonic's file in a wallet directory (BIP-39 words, mode 0600).
pub const MNEMONIC_FILE: &str = "mnemonic";

/// A wallet directory opened: its mnemonic, wallet and quote records.
pub struct OwnWallet {
    pub mnemonic: String,
    pub wallet: EhashWallet,
    pub store: QuoteStore,
}

impl OwnWallet {
    /// Opens the wallet in `dir` for the mint at `mint_url`, creating the
    /// directory and a fresh mnemonic the first time.
    pub async fn open(dir: &Path, mint_url: &str) -> Result<Self, WalletError> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            WalletError::Other(format!("{what} {}: {e}", path.display()))
        };
        private::create_dir(dir).map_err(|e| io("wallet directory", dir, e))?;
        let path = dir.join(MNEMONIC_FILE);
        let mnemonic = match fs::read_to_string(&path) {
            Ok(words) => words.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let words = new_mnemonic();
                private::replace_file(&path, format!("{words}\n").as_bytes())
                    .map_err(|e| io("mnemonic", &path, e))?;
                words
            }
            Err(e) => return Err(io("mnemonic", &path, e)),
        };
        let seed = crate::config::seed_from_mnemonic(&mnemonic)
            .map_err(|e| WalletError::Other(format!("mnemonic {}: {e}", path.display())))?;
        let wallet = EhashWallet::open(
            mint_url,
            DEFAULT_MINT_TIMEOUT,
            &dir.join("wallet.sqlite"),
            seed,
        )
        .await?;
        let store = QuoteStore::open(&dir.join("quotes.sqlite"))?;
        Ok(Self {
            mnemonic,
            wallet,
            store,
        })
    }

    /// The SV1 username that locks a miner's ehash to this wallet's key.
    pub fn username(&self, worker: Option<&str>) -> String {
        match worker {
            Some(w) => format!("{}.{w}", self.wallet.locking_key()),
            None => self.wallet.locking_key().to_string(),
        }
    }
}

/// A 12-word BIP-39 mnemonic from 128 bits of cdk's CSPRNG.
fn new_mnemonic() -> String {
    let random = SecretKey::generate().to_secret_bytes();
    bip39::Mnemonic::from_entropy(&random[..16])
        .expect("16 bytes is valid BIP-39 entropy")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_directory_gets_a_mnemonic_once_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let first = OwnWallet::open(&path, "http://127.0.0.1:9").await.unwrap();
        assert_eq!(first.mnemonic.split_whitespace().count(), 12);
        let again = OwnWallet::open(&path, "http://127.0.0.1:9").await.unwrap();
        assert_eq!(again.mnemonic, first.mnemonic);
        assert_eq!(again.wallet.locking_key(), first.wallet.locking_key());
        let username = first.username(Some("rig1"));
        assert_eq!(
            ehash::parse_user_identity(&username).unwrap().locking_key,
            first.wallet.locking_key()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for file in [MNEMONIC_FILE, "wallet.sqlite", "quotes.sqlite"] {
            assert_eq!(mode(&path.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&path), 0o700);
        let other = OwnWallet::open(&dir.path().join("v"), "http://127.0.0.1:9")
            .await
            .unwrap();
        assert_ne!(other.mnemonic, first.mnemonic);
    }
}

//! Restoring a wallet from its seed alone (NUT-09 restore of its NUT-13
//! outputs): for a `wallet.sqlite` lost, or brought back from an old backup.
//!
//! cdk's restore scans each keyset of the mint from its first counter and
//! writes what it finds into the wallet's database as the mint reports it,
//! and adds the last counter it found to the wallet's counter. Run on a
//! wallet that holds proofs already, that would make spendable again the
//! proofs of a token sent and not yet claimed (the mint still reports them
//! unspent) or reserved by an interrupted operation, and push the counter
//! far past what was used. So the scan runs on a scratch wallet in memory
//! on the same seed, and this wallet takes from it only the proofs it does
//! not hold, and its counters only where they are further on.

use cdk::nuts::State;
use cdk::wallet::NUT13Options;

use super::{database, EhashWallet, WalletError};

/// Outputs asked about in one restore request.
pub const RESTORE_BATCH: u32 = 100;

/// What a restore found, in ehash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Unspent at the mint and new to the wallet: now spendable.
    pub added: u64,
    /// In a spend the mint has not settled, new to the wallet: added as such.
    pub pending: u64,
    /// Unspent or pending at the mint, and held by the wallet already.
    pub held: u64,
    /// Spent (sent and claimed, swapped): not added.
    pub spent: u64,
}

impl EhashWallet {
    /// Adds the wallet's ecash the mint signed and nobody spent, found from
    /// the seed alone: each keyset from its first counter, in batches of
    /// [`RESTORE_BATCH`], until `gap` batches in a row hold nothing signed.
    /// What the wallet holds keeps its state; its counters move on to past
    /// the last output found where they are behind it.
    pub async fn restore(&self, gap: u32) -> Result<Restored, WalletError> {
        let opts = NUT13Options::new(RESTORE_BATCH, gap)?;
        let memory = cdk_sqlite::wallet::memory::empty()
            .await
            .map_err(|e| WalletError::Database(e.to_string()))?;
        let url = self.wallet.mint_url.to_string();
        let scratch = EhashWallet::with_db(&url, self.timeout, memory, self.seed)?;
        let scan = scratch.wallet.restore_with_opts(opts).await?;
        let found = scratch
            .wallet
            .localstore
            .get_proofs(None, None, None, None)
            .await
            .map_err(database)?;
        let new = self.not_held(found).await?;
        let sum = |state: State| -> u64 {
            new.iter()
                .filter(|p| p.state == state)
                .map(|p| u64::from(p.proof.amount))
                .sum()
        };
        let (added, pending) = (sum(State::Unspent), sum(State::Pending));
        let found_total = u64::from(scan.unspent) + u64::from(scan.pending);
        self.wallet
            .localstore
            .update_proofs(new, vec![])
            .await
            .map_err(database)?;
        for keyset in scratch.wallet.keysets(Default::default()).await? {
            let past_found = scratch.keyset_counter(keyset.id, 0).await?;
            let ours = self.keyset_counter(keyset.id, 0).await?;
            if past_found > ours {
                self.keyset_counter(keyset.id, past_found - ours).await?;
            }
        }
        Ok(Restored {
            added,
            pending,
            held: found_total.saturating_sub(added + pending),
            spent: u64::from(scan.spent),
        })
    }
}

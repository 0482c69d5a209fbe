//! Keeping the wallet's proofs few.
//!
//! Every minting round adds the proofs of its batches (one per set bit of
//! a batch's total), and nothing takes them away: a miner's wallet that
//! mints for weeks would hold millions, and every read of it (the balance,
//! the choice of proofs for a send) and a sent token would grow with them.
//! So once the wallet holds more than a bound, its proofs are swapped at
//! the mint (NUT-03), smallest first, into the fewest proofs of their
//! total, and the rows of spent proofs are deleted: cdk's swap keeps them,
//! marked spent, and its proof table has no index on state.
//!
//! Before each swap the mint is asked the state of its inputs (NUT-07):
//! proofs spent elsewhere (the seed restored in another wallet) are
//! dropped, and never block the others. A swap left without an answer (the
//! mint unreachable) keeps its inputs reserved until cdk recovers it, which
//! the next consolidation does first.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use cdk::nuts::{Proofs, ProofsMethods, State};
use tracing::{debug, info, warn};

use super::{database, fewest_proofs, EhashWallet, WalletError};

/// The wallet swaps its proofs into the fewest of their total once it holds
/// more than this many: a balance takes at most 64, and a swap this large
/// is one small request to the mint (a home miner's every few minutes).
pub const CONSOLIDATE_ABOVE: usize = 256;

/// The most proofs one swap spends, well below cdk's default `max_inputs`
/// (1,000): a swap holds the mint's database while it records its inputs
/// and signs its outputs, and quotes and batch mints wait for it. Swaps of
/// a thousand at 4,600 shares/s doubled the p99 of share to ehash.
const MAX_SWAP_INPUTS: usize = 100;

/// What the wallet holds after [`EhashWallet::consolidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdings {
    /// The sum of the unspent proofs.
    pub balance: u64,
    /// How many unspent proofs carry it.
    pub proofs: usize,
    /// Proofs swapped (spent at the mint) into fewer this time.
    pub swapped: usize,
}

impl Holdings {
    fn of(proofs: &Proofs) -> Result<Self, WalletError> {
        Ok(Self {
            balance: u64::from(proofs.total_amount()?),
            proofs: proofs.len(),
            swapped: 0,
        })
    }
}

impl EhashWallet {
    /// The wallet's balance and proofs; when it holds more than `above`
    /// proofs (and more than its balance takes at the fewest), first swaps
    /// them into the fewest proofs of their total, in passes of swaps of at
    /// most [`MAX_SWAP_INPUTS`] until they are few enough. A swap that
    /// fails (the mint unreachable) is logged and left for the next call:
    /// the balance is still read.
    pub async fn consolidate(&self, above: usize) -> Result<Holdings, WalletError> {
        let too_many =
            |held: &Holdings| held.proofs > above.max(held.balance.count_ones() as usize);
        let settled = self.settle_last_swap().await;
        let mut proofs = self.wallet.get_unspent_proofs().await?;
        let before = Holdings::of(&proofs)?;
        let mut held = before;
        while settled && too_many(&held) {
            let swapped = self.swap_pass(proofs).await;
            proofs = self.wallet.get_unspent_proofs().await?;
            held = Holdings {
                swapped: held.swapped + swapped,
                ..Holdings::of(&proofs)?
            };
            if swapped == 0 {
                break;
            }
        }
        if held.swapped > 0 {
            let deleted = self.delete_spent().await?;
            debug!(
                before = before.proofs,
                after = held.proofs,
                spent_rows_deleted = deleted,
                balance = held.balance,
                "consolidated the wallet's proofs"
            );
        }
        Ok(held)
    }

    /// Swaps `proofs`, smallest first, in swaps of at most
    /// [`MAX_SWAP_INPUTS`]; how many were swapped. Stops at a failed swap.
    async fn swap_pass(&self, mut proofs: Proofs) -> usize {
        proofs.sort_by_key(|proof| proof.amount);
        let swaps = proofs.len().div_ceil(MAX_SWAP_INPUTS);
        let size = proofs.len().div_ceil(swaps);
        let mut swapped = 0;
        for (done, inputs) in proofs.chunks(size).enumerate() {
            match self.swap_into_fewest(inputs.to_vec()).await {
                Ok(n) => swapped += n,
                Err(e) => {
                    warn!("cannot consolidate the wallet's proofs, trying again later: {e}");
                    break;
                }
            }
            if swaps > 1 {
                info!(
                    swapped,
                    of = proofs.len(),
                    "consolidating the wallet's proofs: swap {} of {swaps}",
                    done + 1
                );
            }
        }
        swapped
    }

    /// Recovers the last consolidating swap if it got no answer; whether
    /// none is left unsettled.
    async fn settle_last_swap(&self) -> bool {
        if !self.swap_unsettled.load(Ordering::Relaxed) {
            return true;
        }
        match self.recover_sagas().await {
            Ok(()) if !self.swap_unsettled.load(Ordering::Relaxed) => true,
            Ok(()) => {
                warn!("interrupted wallet operations still pending, trying again later");
                false
            }
            Err(e) => {
                warn!("cannot settle the last consolidating swap, trying again later: {e}");
                false
            }
        }
    }

    /// Swaps `inputs` into the fewest proofs of their total; how many were
    /// swapped. Those the mint reports spent are dropped first: cdk counts
    /// a refused swap as of unknown outcome, and its recovery would then
    /// take every input for spent.
    async fn swap_into_fewest(&self, inputs: Proofs) -> Result<usize, WalletError> {
        // cdk deletes the rows of the proofs it finds spent.
        let states = self.wallet.check_proofs_spent(inputs.clone()).await?;
        let unspent: HashSet<_> = states
            .into_iter()
            .filter(|state| state.state == State::Unspent)
            .map(|state| state.y)
            .collect();
        if unspent.len() < inputs.len() {
            warn!(
                proofs = inputs.len() - unspent.len(),
                "proofs spent elsewhere (the seed used by another wallet?) or pending: left out"
            );
        }
        let ys = inputs.ys()?;
        let inputs: Proofs = inputs
            .into_iter()
            .zip(ys)
            .filter(|(_, y)| unspent.contains(y))
            .map(|(proof, _)| proof)
            .collect();
        if inputs.len() < 2 {
            return Ok(0);
        }
        let swapped = self
            .wallet
            .swap(None, fewest_proofs(), inputs.clone(), None, false, false)
            .await;
        if let Err(e) = swapped {
            // Without an answer cdk keeps the inputs reserved until its
            // recovery; after a refusal that recovery finds nothing to do.
            self.swap_unsettled.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
        Ok(inputs.len())
    }

    /// Deletes the rows of the wallet's spent proofs; how many.
    async fn delete_spent(&self) -> Result<usize, WalletError> {
        let spent = self
            .wallet
            .get_proofs_with(Some(vec![State::Spent]), None)
            .await?;
        let ys = spent.ys()?;
        let deleted = ys.len();
        if deleted > 0 {
            self.wallet
                .localstore
                .update_proofs(vec![], ys)
                .await
                .map_err(database)?;
        }
        Ok(deleted)
    }
}

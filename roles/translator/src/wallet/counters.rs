//! The keyset counters (NUT-13) live in the wallet's own database, not at
//! the mint: a second wallet on the same seed, or a wallet database lost or
//! restored from a backup, derives outputs the mint has signed already. The
//! mint refuses those, and asked what it signed (NUT-09) it shows another
//! use's signatures, which must never pass for a batch's.
//!
//! So the wallet checks, at start-up and whenever a batch's outputs turn
//! out signed before, which counters from its own on the mint signed: one
//! restore request of probes at the counter plus 0, 1, 3, 7, ... 2^31 - 1
//! spans them all, and the counter moves to the first probe past the last
//! signed one (at most twice as far as needed; counters are plenty).

use cdk::nuts::{Id, PreMintSecrets};
use tracing::warn;

use super::issue::off_runtime;
use super::{database, EhashWallet, MintRound, WalletError};

/// Probes per check: counter + 2^i - 1 for i below this.
const PROBES: u32 = 32;

/// The probe offsets from a counter: 0, 1, 3, 7, ..., within `u32`.
fn probe_offsets(counter: u32) -> Vec<u32> {
    (0..PROBES)
        .map(|i| (1u32 << i) - 1)
        .take_while(|offset| counter.checked_add(*offset).is_some_and(|c| c < u32::MAX))
        .collect()
}

/// How far to move a counter whose probes at `offsets` came back signed
/// where `signed` says: to the first probe past the last signed one.
fn skip_for(offsets: &[u32], signed: &[bool]) -> u32 {
    match signed.iter().rposition(|s| *s) {
        None => 0,
        Some(last) => offsets
            .get(last + 1)
            .copied()
            .unwrap_or_else(|| offsets[last].saturating_add(1)),
    }
}

impl EhashWallet {
    /// The counter of `keyset`, moved on by `by` first (0: as it is).
    pub(super) async fn keyset_counter(&self, keyset: Id, by: u32) -> Result<u32, WalletError> {
        self.wallet
            .localstore
            .increment_keyset_counter(&keyset, by)
            .await
            .map_err(database)
    }

    /// Moves the counter of `keyset_id` past the outputs the mint signed
    /// from it on (see the module doc); how many counters it skipped.
    pub(super) async fn skip_counters_signed_before(
        &self,
        keyset_id: Id,
        round: &mut MintRound,
    ) -> Result<u32, WalletError> {
        let counter = self.keyset_counter(keyset_id, 0).await?;
        let offsets = probe_offsets(counter);
        let probes = {
            let (seed, offsets) = (self.seed, offsets.clone());
            off_runtime(move || {
                let mut probes = PreMintSecrets::new(keyset_id);
                for offset in offsets {
                    let at = counter + offset;
                    let one = PreMintSecrets::restore_batch(keyset_id, &seed, at, at + 1)
                        .map_err(|e| WalletError::Other(format!("deriving a probe: {e}")))?;
                    probes.secrets.extend(one.secrets);
                }
                Ok(probes)
            })
            .await?
        };
        let by_blinded = self.signed_at_mint(&probes, round).await?;
        let signed: Vec<bool> = probes
            .secrets
            .iter()
            .map(|p| by_blinded.contains_key(&p.blinded_message.blinded_secret))
            .collect();
        let skip = skip_for(&offsets, &signed);
        if skip > 0 {
            self.keyset_counter(keyset_id, skip).await?;
            warn!(
                keyset = %keyset_id,
                from = counter,
                skipped = skip,
                "the mint signed outputs at this wallet's next counters already: another wallet \
                 on this seed (a second translator on this mnemonic?), or a wallet database \
                 lost or restored from a backup; the counter moves past them"
            );
        }
        Ok(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_double_their_reach_and_stay_within_u32() {
        assert_eq!(&probe_offsets(0)[..5], &[0, 1, 3, 7, 15]);
        assert_eq!(probe_offsets(0).len(), PROBES as usize);
        assert_eq!(*probe_offsets(0).last().unwrap(), (1 << 31) - 1);
        assert_eq!(probe_offsets(u32::MAX - 4), vec![0, 1, 3]);
        assert!(probe_offsets(u32::MAX).is_empty());
    }

    #[test]
    fn the_counter_moves_to_the_first_probe_past_the_last_signed_one() {
        let offsets = [0, 1, 3, 7, 15];
        assert_eq!(skip_for(&offsets, &[false; 5]), 0);
        assert_eq!(skip_for(&offsets, &[true, false, false, false, false]), 1);
        // Counters 0 to 5 signed (a gap at one probe changes nothing).
        assert_eq!(skip_for(&offsets, &[true, true, true, false, false]), 7);
        assert_eq!(skip_for(&offsets, &[true, false, true, false, false]), 7);
        // The last probe signed: just past it.
        assert_eq!(skip_for(&offsets, &[true; 5]), 16);
    }
}

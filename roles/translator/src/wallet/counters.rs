//! The keyset counters (NUT-13) live in the wallet's own database, not at
//! the mint: a second wallet on the same seed, or a wallet database lost or
//! restored from a backup, derives outputs the mint has signed already. The
//! mint refuses those, and asked what it signed (NUT-09) it shows another
//! use's signatures, which must never pass for a batch's.
//!
//! So the wallet checks, at start-up and whenever a batch's outputs turn
//! out signed before, which counters from its own on the mint signed, and
//! moves its counter just past the last of them ([`SignedEnd`]): a request
//! of probes at the counter plus 0, 1, 3, 7, ... 2^31 - 1 spans them all,
//! and requests of probes spread between the last signed probe and the one
//! after it narrow that down to the output, about 32 times a request. Just
//! past, not merely somewhere past: `wallet restore` stops at a run of
//! outputs never signed, so a jump past outputs left unused would hide
//! what the wallet mints after it from a restore.

use cdk::nuts::{Id, PreMintSecrets};
use tracing::warn;

use super::issue::off_runtime;
use super::{database, EhashWallet, MintRound, WalletError};

/// Probes per request.
const PROBES: u32 = 32;

/// The search for the end of the outputs the mint signed from a counter
/// on, without IO: offsets from the counter to probe, one request at a
/// time, until it knows the offset just past the last signed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SignedEnd {
    /// Nothing probed yet.
    Start { counter: u32 },
    /// `signed` is signed, `unsigned` (further on) is not, nor any probe
    /// past it.
    Between { signed: u32, unsigned: u32 },
    /// The offset just past the last signed output found (0: none).
    Found(u32),
}

impl SignedEnd {
    pub fn new(counter: u32) -> SignedEnd {
        SignedEnd::Start { counter }
    }

    /// The offsets to probe next, ascending; none once found.
    pub fn probes(&self) -> Vec<u32> {
        match *self {
            SignedEnd::Start { counter } => (0..PROBES)
                .map(|i| (1u32 << i) - 1)
                .take_while(|offset| counter.checked_add(*offset).is_some_and(|c| c < u32::MAX))
                .collect(),
            SignedEnd::Between { signed, unsigned } => {
                let inside = unsigned - signed - 1;
                if inside <= PROBES {
                    (signed + 1..unsigned).collect()
                } else {
                    (0..PROBES)
                        .map(|i| {
                            signed
                                + 1
                                + (u64::from(inside) * u64::from(i) / u64::from(PROBES)) as u32
                        })
                        .collect()
                }
            }
            SignedEnd::Found(_) => vec![],
        }
    }

    /// The mint's answer for `probes` (as [`SignedEnd::probes`] gave
    /// them): whether each is signed.
    pub fn saw(&mut self, probes: &[u32], signed: &[bool]) {
        let last_signed = signed.iter().rposition(|s| *s);
        *self = match (&*self, last_signed) {
            (SignedEnd::Found(_), _) => return,
            (SignedEnd::Start { .. }, None) => SignedEnd::Found(0),
            (SignedEnd::Start { .. }, Some(last)) => match probes.get(last + 1) {
                Some(&unsigned) => SignedEnd::between(probes[last], unsigned),
                // The last probe possible is signed: past it.
                None => SignedEnd::Found(probes[last].saturating_add(1)),
            },
            (&SignedEnd::Between { signed, unsigned }, None) => {
                SignedEnd::between(signed, probes.first().copied().unwrap_or(unsigned))
            }
            (&SignedEnd::Between { unsigned, .. }, Some(last)) => SignedEnd::between(
                probes[last],
                probes.get(last + 1).copied().unwrap_or(unsigned),
            ),
        };
    }

    /// `signed` is signed and `unsigned` is not: found when nothing lies
    /// between them.
    fn between(signed: u32, unsigned: u32) -> SignedEnd {
        if unsigned == signed + 1 {
            SignedEnd::Found(unsigned)
        } else {
            SignedEnd::Between { signed, unsigned }
        }
    }

    /// The offset just past the last signed output, once found.
    pub fn found(&self) -> Option<u32> {
        match *self {
            SignedEnd::Found(skip) => Some(skip),
            _ => None,
        }
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
        let mut search = SignedEnd::new(counter);
        let skip = loop {
            if let Some(skip) = search.found() {
                break skip;
            }
            let offsets = search.probes();
            if offsets.is_empty() {
                // At the last counter there is: nothing to ask.
                search.saw(&[], &[]);
                continue;
            }
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
            search.saw(&offsets, &signed);
        };
        if skip > 0 {
            // To the counter found, wherever another use (a swap) has
            // moved it meanwhile: past it would leave outputs unused.
            let now = self.keyset_counter(keyset_id, 0).await?;
            self.keyset_counter(keyset_id, (counter + skip).saturating_sub(now))
                .await?;
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

    /// Runs the search from `counter` against a mint that signed the
    /// offsets `signed` says; the offset found and the requests it took.
    fn search(counter: u32, signed: impl Fn(u32) -> bool) -> (u32, usize) {
        let mut s = SignedEnd::new(counter);
        let mut requests = 0;
        while s.found().is_none() {
            let probes = s.probes();
            assert!(
                !probes.is_empty() && probes.len() <= PROBES as usize,
                "{s:?}"
            );
            assert!(probes.windows(2).all(|w| w[0] < w[1]), "{probes:?}");
            let answers: Vec<bool> = probes.iter().map(|&o| signed(o)).collect();
            s.saw(&probes, &answers);
            requests += 1;
            assert!(requests <= 8, "{s:?}");
        }
        (s.found().unwrap(), requests)
    }

    #[test]
    fn the_first_probes_double_their_reach_and_stay_within_u32() {
        let probes = SignedEnd::new(0).probes();
        assert_eq!(&probes[..5], &[0, 1, 3, 7, 15]);
        assert_eq!(probes.len(), PROBES as usize);
        assert_eq!(*probes.last().unwrap(), (1 << 31) - 1);
        assert_eq!(SignedEnd::new(u32::MAX - 4).probes(), vec![0, 1, 3]);
        assert!(SignedEnd::new(u32::MAX).probes().is_empty());
    }

    #[test]
    fn the_counter_moves_just_past_the_last_signed_output() {
        assert_eq!(search(0, |_| false), (0, 1), "nothing signed: one request");
        assert_eq!(search(0, |o| o < 1), (1, 1));
        assert_eq!(search(0, |o| o < 2), (2, 2));
        assert_eq!(search(0, |o| o < 5).0, 5);
        // Ends at a probe, just before one, just after one.
        for end in [8, 7, 9, 255, 256, 1000, 65_536, 1_000_003] {
            let (found, requests) = search(40, |o| o < end);
            assert_eq!(found, end);
            assert!(requests <= 6, "{end}: {requests} requests");
        }
        // Everything signed: past the last probe there is.
        assert_eq!(search(0, |_| true).0, 1 << 31);
        assert_eq!(search(u32::MAX - 4, |_| true).0, 4);
    }

    #[test]
    fn a_hole_in_what_was_signed_is_passed_when_a_probe_lands_past_it() {
        // Signed 0..5 and 200..300 (a refused batch's outputs between):
        // the probe at 255 is signed, so the end found is 300, not 5.
        assert_eq!(search(0, |o| o < 5 || (200..300).contains(&o)).0, 300);
    }
}

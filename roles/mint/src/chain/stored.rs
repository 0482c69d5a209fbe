//! The tips as the mint stores them, so a restarted mint still knows the
//! recent ones: newest first, a fixed number of bytes each, in one of the
//! layouts mints have stored.
//!
//! A tip's pools are bits by position in `[[pools]]`, which an operator
//! may change between runs: the stored tips come after the keys of the
//! pools they were recorded with, and are read back with each bit moved to
//! where its pool is listed now.

use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;

use super::{KeptTip, Pools, Tip, TipHistory};

/// A stored height that is unknown.
const NO_HEIGHT: u32 = u32::MAX;
/// Bytes of a stored pool key (x-only).
const KEY_LEN: usize = 32;

/// How a mint stored its tips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipLayout {
    /// The number of pools (u16), their keys, then each tip: prev hash
    /// (32), nbits, time, height (4 each) and its pools (8), all
    /// little-endian: [`to_bytes`].
    Current,
    /// Before tips said which pools they were quoted for (they aged the
    /// others for every pool).
    WithoutPools,
    /// Before tips had heights.
    WithoutHeights,
}

impl TipLayout {
    fn tip_len(self) -> usize {
        match self {
            TipLayout::Current => 52,
            TipLayout::WithoutPools => 44,
            TipLayout::WithoutHeights => 40,
        }
    }
}

/// The tips of `history`, whose bits are those of `pools`, as stored.
pub fn to_bytes(history: &TipHistory, pools: &[XOnlyPublicKey]) -> Vec<u8> {
    let pools = &pools[..pools.len().min(usize::from(u16::MAX))];
    let tip_len = TipLayout::Current.tip_len();
    let mut out = Vec::with_capacity(2 + pools.len() * KEY_LEN + history.tips().len() * tip_len);
    out.extend_from_slice(&(pools.len() as u16).to_le_bytes());
    for key in pools {
        out.extend_from_slice(&key.serialize());
    }
    for KeptTip { tip, quoted_for } in history.tips() {
        out.extend_from_slice(&tip.prev_hash);
        out.extend_from_slice(&tip.nbits.to_le_bytes());
        out.extend_from_slice(&tip.time.to_le_bytes());
        out.extend_from_slice(&tip.height.unwrap_or(NO_HEIGHT).to_le_bytes());
        out.extend_from_slice(&quoted_for.0.to_le_bytes());
    }
    out
}

/// The tips of `bytes` stored as `layout`, their bits moved to where
/// `pools` lists each pool now; `None` if they are not such a list.
pub fn tips_from_bytes(
    bytes: &[u8],
    layout: TipLayout,
    pools: &[XOnlyPublicKey],
) -> Option<Vec<KeptTip>> {
    let (stored_pools, bytes) = match layout {
        TipLayout::Current => stored_pools(bytes)?,
        TipLayout::WithoutPools | TipLayout::WithoutHeights => (vec![], bytes),
    };
    let tip_len = layout.tip_len();
    if !bytes.len().is_multiple_of(tip_len) {
        return None;
    }
    let u32_at = |c: &[u8], at: usize| u32::from_le_bytes(c[at..at + 4].try_into().expect("4"));
    let kept = bytes.chunks_exact(tip_len).map(|c| KeptTip {
        tip: Tip {
            prev_hash: c[..32].try_into().expect("32 bytes"),
            nbits: u32_at(c, 32),
            time: u32_at(c, 36),
            height: (layout != TipLayout::WithoutHeights)
                .then(|| u32_at(c, 40))
                .filter(|h| *h != NO_HEIGHT),
        },
        quoted_for: match layout {
            TipLayout::Current => {
                let bits = Pools(u64::from_le_bytes(c[44..52].try_into().expect("8")));
                moved(bits, &stored_pools, pools)
            }
            TipLayout::WithoutPools | TipLayout::WithoutHeights => Pools::ALL,
        },
    });
    Some(kept.collect())
}

/// The pool keys at the start of `bytes`, and the rest.
fn stored_pools(bytes: &[u8]) -> Option<(Vec<XOnlyPublicKey>, &[u8])> {
    let count = usize::from(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?));
    let keys = bytes.get(2..2 + count * KEY_LEN)?;
    let keys = keys
        .chunks_exact(KEY_LEN)
        .map(|key| XOnlyPublicKey::from_slice(key).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((keys, &bytes[2 + count * KEY_LEN..]))
}

/// `bits` of the pools `stored` listed, as bits of the same pools where
/// `now` lists them; pools no longer listed drop out.
fn moved(bits: Pools, stored: &[XOnlyPublicKey], now: &[XOnlyPublicKey]) -> Pools {
    let mut moved = Pools::NONE;
    for (i, key) in stored.iter().enumerate() {
        if bits.contains(Pools::nth(i)) {
            if let Some(j) = now.iter().position(|k| k == key) {
                moved.0 |= Pools::nth(j).0;
            }
        }
    }
    moved
}

/// The key of a made-up pool `n`, for tests.
#[cfg(test)]
pub fn test_pool_key(n: u8) -> XOnlyPublicKey {
    use stratum_core::bitcoin::secp256k1::{Keypair, Secp256k1};
    let pair = Keypair::from_seckey_slice(&Secp256k1::new(), &[n; 32]).expect("a valid key");
    pair.x_only_public_key().0
}

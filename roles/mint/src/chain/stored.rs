//! The tips as the mint stores them, so a restarted mint still knows the
//! recent ones: newest first, a fixed number of bytes each, in one of the
//! layouts mints have stored.

use super::{KeptTip, Pools, Tip, TipHistory};

/// A stored height that is unknown.
const NO_HEIGHT: u32 = u32::MAX;

/// How a mint stored its tips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipLayout {
    /// Prev hash (32), nbits, time, height (4 each, little-endian), and
    /// the pools the tip was quoted for (8, little-endian): [`to_bytes`].
    Current,
    /// Before tips said which pools they were quoted for (they aged the
    /// others for every pool).
    WithoutPools,
    /// Before tips had heights.
    WithoutHeights,
}

impl TipLayout {
    fn len(self) -> usize {
        match self {
            TipLayout::Current => 52,
            TipLayout::WithoutPools => 44,
            TipLayout::WithoutHeights => 40,
        }
    }
}

/// The tips of `history` as stored.
pub fn to_bytes(history: &TipHistory) -> Vec<u8> {
    let mut out = Vec::with_capacity(history.tips().len() * TipLayout::Current.len());
    for KeptTip { tip, quoted_for } in history.tips() {
        out.extend_from_slice(&tip.prev_hash);
        out.extend_from_slice(&tip.nbits.to_le_bytes());
        out.extend_from_slice(&tip.time.to_le_bytes());
        out.extend_from_slice(&tip.height.unwrap_or(NO_HEIGHT).to_le_bytes());
        out.extend_from_slice(&quoted_for.0.to_le_bytes());
    }
    out
}

/// The tips of `bytes` stored as `layout`; `None` if they are not such a
/// list.
pub fn tips_from_bytes(bytes: &[u8], layout: TipLayout) -> Option<Vec<KeptTip>> {
    let tip_len = layout.len();
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
            TipLayout::Current => Pools(u64::from_le_bytes(c[44..52].try_into().expect("8"))),
            TipLayout::WithoutPools | TipLayout::WithoutHeights => Pools::ALL,
        },
    });
    Some(kept.collect())
}

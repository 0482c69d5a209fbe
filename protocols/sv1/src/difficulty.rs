//! What an SV1 difficulty means: difficulty 1 is the target
//! `0xffff * 2^208` (0x00000000FFFF0000...), difficulty `d` is that target / `d`.
//!
//! The two directions are computed independently (the server's with
//! rust-bitcoin's `Target`, the client's by hand) and each is pinned by known
//! values below, so a miner reading `mining.set_difficulty` gets the target
//! the server meant.

/// The big-endian 256-bit target of a difficulty (below 1 the target is
/// larger; saturates at 2^256 - 1).
pub fn target_from_difficulty(difficulty: f64) -> [u8; 32] {
    if difficulty.is_nan() || difficulty <= 0.0 {
        return [0xff; 32];
    }
    // target = m * 2^208 with m = 0xffff / difficulty
    let m = 65535.0 / difficulty;
    if m >= 2f64.powi(48) {
        return [0xff; 32];
    }
    // v = m * 2^64 (< 2^112), target = v << 144
    let v = (m * 2f64.powi(64)) as u128;
    let mut out = [0u8; 32];
    out[..14].copy_from_slice(&v.to_be_bytes()[2..16]);
    out
}

/// The difficulty of a target given in SV2 order (little-endian), rounded up
/// a little so that a miner's `diff1 / difficulty` target never exceeds it.
pub fn difficulty_of_target(target_le: &[u8; 32]) -> f64 {
    let target = stratum_core::bitcoin::Target::from_le_bytes(*target_le);
    let d = target.difficulty_float();
    if d.is_finite() && d > 0.0 {
        d * (1.0 + 1e-12)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_one_is_the_classic_target() {
        let t = target_from_difficulty(1.0);
        assert_eq!(
            hex::encode(t),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(
            hex::encode(target_from_difficulty(2.0)),
            "000000007fff8000000000000000000000000000000000000000000000000000"
        );
        // below 1 (devnet): a larger target
        assert_eq!(
            hex::encode(target_from_difficulty(1.0 / 256.0)),
            "000000ffff000000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(target_from_difficulty(1e-30), [0xff; 32]);
        assert!(target_from_difficulty(1e6) < target_from_difficulty(1e5));
    }

    #[test]
    fn difficulty_target_never_exceeds_the_channel_target() {
        // difficulty 1 target, little-endian
        let mut t = [0u8; 32];
        t[26] = 0xff;
        t[27] = 0xff;
        let d = difficulty_of_target(&t);
        assert!((1.0..1.000_001).contains(&d), "{d}");
    }

    /// The server's difficulty for a channel target, read back by a client,
    /// is that target or a hair below it: never above (shares the pool refuses).
    #[test]
    fn both_directions_agree() {
        for d in [1e-3, 1.0 / 256.0, 1.0, 2.0, 1000.0, 244_112.49] {
            let mut le = target_from_difficulty(d);
            le.reverse();
            let back = difficulty_of_target(&le);
            assert!(back >= d && back < d * (1.0 + 1e-9), "{d} -> {back}");
        }
        let mut easy = [0xffu8; 32];
        easy[31] = 0x0f;
        for le in [easy, [0x11; 32]] {
            let mut be = le;
            be.reverse();
            assert!(target_from_difficulty(difficulty_of_target(&le)) <= be);
        }
    }
}

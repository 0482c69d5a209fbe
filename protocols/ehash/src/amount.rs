//! The ehash amount of a share: the work its target proves, in units of
//! `2^unit_bits` expected hashes.
//!
//! work(target) = 2^256 / (target + 1) is the expected number of hashes to
//! find a hash at or below `target`, the standard weighting of every pool.
//! All arithmetic is exact integer arithmetic.

use stratum_core::bitcoin::pow::{Target, Work};

/// The largest accepted `unit_bits`: one ehash is at most 2^64 expected hashes.
pub const MAX_UNIT_BITS: u8 = 64;

/// How many expected hashes one ehash is worth, as a power of two.
///
/// Shared configuration of the pool and the mint: both must agree, or the
/// mint refuses the pool's amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnitBits(u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit_bits must be between 0 and {MAX_UNIT_BITS}, got {0}")]
pub struct UnitBitsError(pub u32);

impl UnitBits {
    pub fn new(bits: u32) -> Result<Self, UnitBitsError> {
        if bits > MAX_UNIT_BITS as u32 {
            return Err(UnitBitsError(bits));
        }
        Ok(Self(bits as u8))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// Expected hashes to find a hash at or below `target`: 2^256 / (target + 1).
///
/// For target 0 the true value 2^256 does not fit; it is given as 2^256 - 1,
/// and the same rounding applies to target 1. Both saturate every amount.
pub fn work(target: Target) -> Work {
    target.to_work()
}

/// The ehash amount of a share found against `target`:
/// floor(work(target) / 2^unit_bits), saturating at `u64::MAX`.
pub fn ehash_amount(target: Target, unit_bits: UnitBits) -> u64 {
    let le = work(target).to_le_bytes();
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        *limb = u64::from_le_bytes(le[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    }
    shift_right_saturating(limbs, unit_bits.get() as u32)
}

/// The easiest target whose shares are still worth one ehash:
/// 2^(256 - unit_bits) - 1, so that work(target) = 2^unit_bits exactly.
/// A pool that pays every accepted share gives no channel an easier one.
pub fn easiest_target(unit_bits: UnitBits) -> Target {
    let bits = 256 - unit_bits.get() as usize;
    let mut le = [0u8; 32];
    for (i, byte) in le.iter_mut().enumerate() {
        let low_bit = i * 8;
        if low_bit + 8 <= bits {
            *byte = 0xff;
        } else if low_bit < bits {
            *byte = (1u8 << (bits - low_bit)) - 1;
        }
    }
    Target::from_le_bytes(le)
}

/// The easiest target whose shares are worth `units` ehash:
/// floor(2^256 / (units · 2^unit_bits)) - 1. At `units` 1 it is
/// [`easiest_target`]; `units` 0 is taken as 1.
pub fn target_worth(units: u64, unit_bits: UnitBits) -> Target {
    let units = units.max(1) as u128;
    // 2^(256 - unit_bits) in five little-endian limbs, divided by `units`.
    let bit = 256 - unit_bits.get() as usize;
    let mut limbs = [0u64; 5];
    limbs[bit / 64] = 1 << (bit % 64);
    let mut remainder = 0u128;
    for limb in limbs.iter_mut().rev() {
        let current = (remainder << 64) | *limb as u128;
        *limb = (current / units) as u64;
        remainder = current % units;
    }
    // Minus one: the quotient is at least 2^128, and at most 2^256.
    for limb in limbs.iter_mut() {
        let (less, borrow) = limb.overflowing_sub(1);
        *limb = less;
        if !borrow {
            break;
        }
    }
    let mut le = [0u8; 32];
    for (i, limb) in limbs[..4].iter().enumerate() {
        le[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
    }
    Target::from_le_bytes(le)
}

/// `target` moved to the nearer target worth a whole number of ehash, so a
/// share is paid the work it proves rather than that work rounded down
/// (worth 1.99 ehash, a share would be paid 1). Never easier than `bound`
/// (the channel's maximum target): then the harder of the two. Targets
/// worth 2^32 ehash or more, which lose under one part in 2^32, and every
/// target at `unit_bits` 0 (work is a whole number of hashes) are only
/// kept within `bound`.
pub fn whole_units_target(target: Target, bound: Target, unit_bits: UnitBits) -> Target {
    let target = target.min(bound);
    let units = ehash_amount(target, unit_bits);
    if unit_bits.get() == 0 || units >= 1 << 32 {
        return target;
    }
    // Half units: past 2 · units, the target is worth half a unit more.
    let half_units = ehash_amount(target, UnitBits(unit_bits.get() - 1));
    let nearer = match half_units > 2 * units {
        true => units + 1,
        false => units,
    };
    let snapped = target_worth(nearer, unit_bits);
    match snapped <= bound {
        true => snapped,
        false => target_worth(units + 1, unit_bits),
    }
}

/// [`work`] as a count of expected hashes, saturating at `u64::MAX` (the
/// unit of the stats messages).
pub fn work_hashes(target: Target) -> u64 {
    ehash_amount(target, UnitBits(0))
}

/// `value >> shift` as a u64, or `u64::MAX` when it does not fit.
fn shift_right_saturating(limbs: [u64; 4], shift: u32) -> u64 {
    let word = (shift / 64) as usize;
    let bit = shift % 64;
    let limb = |i: usize| limbs.get(i).copied().unwrap_or(0);
    let mut shifted = [0u64; 4];
    for (i, out) in shifted.iter_mut().enumerate() {
        let low = limb(i + word) >> bit;
        let high = if bit == 0 {
            0
        } else {
            limb(i + word + 1) << (64 - bit)
        };
        *out = low | high;
    }
    if shifted[1..].iter().any(|&l| l != 0) {
        u64::MAX
    } else {
        shifted[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target_from_be_hex(hex: &str) -> Target {
        let bytes: [u8; 32] = hex::decode(hex).unwrap().try_into().unwrap();
        Target::from_be_bytes(bytes)
    }

    fn bits(n: u32) -> UnitBits {
        UnitBits::new(n).unwrap()
    }

    #[test]
    fn difficulty_one_target() {
        // 0x00000000ffff0000...: the expected work of a difficulty-1 share is
        // 2^256 / (0xffff * 2^208 + 1) = 4_295_032_833 (0x1_0001_0001).
        let diff1 =
            target_from_be_hex("00000000ffff0000000000000000000000000000000000000000000000000000");
        assert_eq!(ehash_amount(diff1, bits(0)), 4_295_032_833);
        assert_eq!(ehash_amount(diff1, bits(32)), 1);
        assert_eq!(ehash_amount(diff1, bits(16)), 65_537);
        assert_eq!(ehash_amount(Target::MAX, bits(0)), 4_295_032_833);
    }

    #[test]
    fn work_hashes_is_the_work_at_unit_bits_zero() {
        let diff1 =
            target_from_be_hex("00000000ffff0000000000000000000000000000000000000000000000000000");
        assert_eq!(work_hashes(diff1), 4_295_032_833);
        assert_eq!(work_hashes(Target::ZERO), u64::MAX);
    }

    #[test]
    fn regtest_maximum_target() {
        // 0x7fffff << 232: just over 2 expected hashes, floored to 2.
        let regtest =
            target_from_be_hex("7fffff0000000000000000000000000000000000000000000000000000000000");
        assert_eq!(regtest, Target::MAX_ATTAINABLE_REGTEST);
        assert_eq!(ehash_amount(regtest, bits(0)), 2);
        assert_eq!(ehash_amount(regtest, bits(1)), 1);
        assert_eq!(ehash_amount(regtest, bits(2)), 0);
    }

    #[test]
    fn two_to_the_forty_hash_target() {
        // target + 1 = 2^216 gives exactly 2^40 expected hashes.
        let t =
            target_from_be_hex("0000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffff");
        assert_eq!(ehash_amount(t, bits(0)), 1 << 40);
        assert_eq!(ehash_amount(t, bits(10)), 1 << 30);
        assert_eq!(ehash_amount(t, bits(40)), 1);
        assert_eq!(ehash_amount(t, bits(41)), 0);
    }

    #[test]
    fn extremes_saturate_or_floor() {
        // Target 2^256 - 1 (every hash meets it): exactly one expected hash.
        let max = Target::from_be_bytes([0xff; 32]);
        assert_eq!(ehash_amount(max, bits(0)), 1);
        assert_eq!(ehash_amount(max, bits(1)), 0);
        // Target 0 and 1: astronomically many hashes, saturated.
        assert_eq!(ehash_amount(Target::ZERO, bits(0)), u64::MAX);
        assert_eq!(ehash_amount(Target::ZERO, bits(64)), u64::MAX);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(ehash_amount(Target::from_be_bytes(one), bits(64)), u64::MAX);
        // 2^44 hashes fit; 2^64 hashes are one too many for u64 at unit_bits 0.
        let t =
            target_from_be_hex("00000000000fffffffffffffffffffffffffffffffffffffffffffffffffffff");
        assert_eq!(ehash_amount(t, bits(0)), 1 << 44);
        let t64 =
            target_from_be_hex("0000000000000000ffffffffffffffffffffffffffffffffffffffffffffffff");
        assert_eq!(ehash_amount(t64, bits(0)), u64::MAX);
        assert_eq!(ehash_amount(t64, bits(1)), 1 << 63);
        assert_eq!(ehash_amount(t64, bits(64)), 1);
    }

    #[test]
    fn the_easiest_target_is_worth_exactly_one_ehash() {
        assert_eq!(easiest_target(bits(0)), Target::from_be_bytes([0xff; 32]));
        assert_eq!(
            easiest_target(bits(40)),
            target_from_be_hex("0000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffff")
        );
        for n in 0..=64 {
            let t = easiest_target(bits(n));
            assert_eq!(ehash_amount(t, bits(n)), 1, "unit_bits {n}");
            if n > 0 {
                // Twice as easy: worth nothing.
                let mut le = t.to_le_bytes();
                le[(256 - n as usize) / 8] |= 1 << ((256 - n) % 8);
                assert_eq!(
                    ehash_amount(Target::from_le_bytes(le), bits(n)),
                    0,
                    "unit_bits {n}"
                );
            }
        }
    }

    #[test]
    fn unit_bits_bounds() {
        assert!(UnitBits::new(64).is_ok());
        assert_eq!(UnitBits::new(65), Err(UnitBitsError(65)));
        assert_eq!(
            UnitBits::new(65).unwrap_err().to_string(),
            "unit_bits must be between 0 and 64, got 65"
        );
    }

    #[test]
    fn a_target_worth_whole_units() {
        for n in 0..=64 {
            assert_eq!(
                target_worth(1, bits(n)),
                easiest_target(bits(n)),
                "unit_bits {n}"
            );
        }
        // 3 units of 2^20: 2^256 / (3 · 2^20) rounded down, minus one.
        let t = target_worth(3, bits(20));
        assert_eq!(ehash_amount(t, bits(20)), 3);
        assert_eq!(
            t,
            target_from_be_hex("0000055555555555555555555555555555555555555555555555555555555554")
        );
        // unit_bits 0 and one unit: every hash.
        assert_eq!(target_worth(1, bits(0)), Target::from_be_bytes([0xff; 32]));
    }

    #[test]
    fn targets_move_to_the_nearer_whole_amount_within_their_bound() {
        let u = bits(20);
        let easiest = easiest_target(u);
        // Worth 1.99 units: 2; worth 1.4: 1; exactly 5: unchanged.
        let at = |units: f64| {
            let t = target_worth(1, u);
            let le = t.to_le_bytes();
            // easiest / units, well within f64's precision at this scale.
            let top = u64::from_le_bytes(le[24..32].try_into().unwrap());
            let mut out = [0u8; 32];
            out[24..32].copy_from_slice(&((top as f64 / units) as u64).to_le_bytes());
            Target::from_le_bytes(out)
        };
        assert_eq!(whole_units_target(at(1.99), easiest, u), target_worth(2, u));
        assert_eq!(whole_units_target(at(1.4), easiest, u), target_worth(1, u));
        assert_eq!(whole_units_target(at(2.6), easiest, u), target_worth(3, u));
        let five = target_worth(5, u);
        assert_eq!(whole_units_target(five, easiest, u), five);
        // The nearer is easier than the bound: the harder one.
        let bound = at(1.3);
        assert_eq!(whole_units_target(at(1.4), bound, u), target_worth(2, u));
        // unit_bits 0: unchanged.
        let any = Target::from_le_bytes([0xff; 32]);
        assert_eq!(whole_units_target(at(1.4), any, bits(0)), at(1.4));
    }

    fn arb_target() -> impl Strategy<Value = Target> {
        any::<[u8; 32]>().prop_map(Target::from_le_bytes)
    }

    /// The target at twice the difficulty: (target + 1) / 2 - 1, exact for odd targets.
    fn halve(t: Target) -> Target {
        let be = t.to_be_bytes();
        let mut out = [0u8; 32];
        let mut carry = 0u8;
        for (i, b) in be.iter().enumerate() {
            out[i] = (b >> 1) | (carry << 7);
            carry = b & 1;
        }
        Target::from_be_bytes(out)
    }

    proptest! {
        #[test]
        fn monotone_in_difficulty(a in arb_target(), b in arb_target(), u in 0u32..=64) {
            let (easy, hard) = if a >= b { (a, b) } else { (b, a) };
            prop_assert!(ehash_amount(hard, bits(u)) >= ehash_amount(easy, bits(u)));
        }

        #[test]
        fn two_shares_at_d_equal_one_at_2d(t in arb_target(), u in 0u32..=64) {
            // Make target + 1 even so that halving it doubles the difficulty exactly.
            let mut be = t.to_be_bytes();
            be[31] |= 1;
            let easy = Target::from_be_bytes(be);
            prop_assume!(easy != Target::from_be_bytes([0xff; 32]));
            let hard = halve(easy);
            // work() rounds only for targets 0 and 1.
            prop_assume!(hard.to_le_bytes()[1..].iter().any(|&b| b != 0));
            let one_at_2d = ehash_amount(hard, bits(u)) as u128;
            let two_at_d = 2 * ehash_amount(easy, bits(u)) as u128;
            if one_at_2d < u64::MAX as u128 {
                // Flooring each share can lose at most one unit per share.
                prop_assert!(one_at_2d >= two_at_d && one_at_2d - two_at_d <= 1,
                    "2D: {one_at_2d}, 2 x D: {two_at_d}");
            }
        }

        #[test]
        fn a_target_worth_n_units_is_the_easiest_worth_n(n in 1u64..(1 << 40), u in 0u32..=64) {
            let t = target_worth(n, bits(u));
            prop_assert_eq!(ehash_amount(t, bits(u)), n);
            if t != Target::from_be_bytes([0xff; 32]) {
                let mut le = t.to_le_bytes();
                for b in le.iter_mut() {
                    if *b == 0xff { *b = 0; } else { *b += 1; break; }
                }
                prop_assert!(ehash_amount(Target::from_le_bytes(le), bits(u)) < n);
            }
        }

        #[test]
        fn a_whole_units_target_is_worth_the_nearer_amount(
            t in arb_target(), u in 1u32..=30, shift in 0u32..=30,
        ) {
            // Its highest bit 255 - u - shift: worth 2^shift to 2^(shift + 1)
            // units of 2^u hashes. The work, exact in a u64, rounded to the
            // nearer whole unit (half up).
            let mut le = t.to_le_bytes();
            let top = 255 - (u + shift) as usize;
            le[top / 8] &= (1u8 << (top % 8)) - 1;
            le[top / 8] |= 1u8 << (top % 8);
            for b in &mut le[top / 8 + 1..] {
                *b = 0;
            }
            let target = Target::from_le_bytes(le);
            let work = work_hashes(target);
            let nearer = ((work + (1 << (u - 1))) >> u).max(1);
            let snapped = whole_units_target(target, easiest_target(bits(u)), bits(u));
            prop_assert_eq!(snapped, target_worth(nearer, bits(u)));
        }

        #[test]
        fn a_whole_units_target_is_never_easier_than_its_bound(
            t in arb_target(), b in arb_target(), u in 1u32..=64,
        ) {
            let bound = b.min(easiest_target(bits(u)));
            let units = ehash_amount(t.min(bound), bits(u));
            prop_assume!(units < 1 << 32);
            let snapped = whole_units_target(t, bound, bits(u));
            let paid = ehash_amount(snapped, bits(u));
            prop_assert!(snapped <= bound);
            prop_assert!(paid == units || paid == units + 1, "{units} -> {paid}");
            prop_assert_eq!(snapped, target_worth(paid, bits(u)));
        }

        #[test]
        fn matches_exact_division(m in 1u64..1_000_000, a in 0u32..=236, u in 0u32..=64) {
            // target + 1 = m * 2^a, so amount = floor(2^(256 - a - u) / m),
            // computable in u128 when the exponent is small enough.
            let e = 256 - a as i64 - u as i64;
            prop_assume!((0..=127).contains(&e));
            let mut le = [0u8; 32];
            for j in 0..64 {
                if m >> j & 1 == 1 {
                    let bit = (a + j) as usize;
                    le[bit / 8] |= 1 << (bit % 8);
                }
            }
            // Subtract 1, borrowing through zero bytes.
            for b in le.iter_mut() {
                if *b == 0 { *b = 0xff; } else { *b -= 1; break; }
            }
            let expected = ((1u128 << e) / m as u128).min(u64::MAX as u128) as u64;
            prop_assert_eq!(ehash_amount(Target::from_le_bytes(le), bits(u)), expected);
        }
    }
}

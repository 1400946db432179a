//! What the page table needs from an entry format beyond encode/decode: root levels,
//! address canonicality, fast paths and break-before-make.

use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, Level, Pfn, PteFormat};

use crate::bbm;

/// An entry format the page table can walk. Implemented for
/// [`X86_64`] and [`Aarch64`].
pub trait PagingFormat: PteFormat {
    /// Whether a table walk may start at `level` (x86_64: 4 or 5; aarch64: 2, 3 or 4).
    fn is_root_level(level: Level) -> bool;

    /// Whether `va` is an address a table with `va_bits` bits of reach translates:
    /// canonical (sign-extended) on x86_64; all-zero (TTBR0) or all-one (TTBR1) upper
    /// bits on aarch64.
    fn is_translatable(va: u64, va_bits: u32) -> bool;

    /// Whether every address from `start` to `last` (inclusive, `start <= last`) is
    /// translatable: both ends are, and they lie in the same half.
    fn is_translatable_range(start: u64, last: u64, va_bits: u32) -> bool;

    /// The value a live entry holds while break-before-make replaces it: invalid to
    /// the hardware, and never an entry devpriv writes or decodes (must-be-zero bits
    /// set), so that a walker can tell "being changed" from "absent" (as Linux's
    /// invalidated PMDs still say what they are). Walkers that meet it wait for the new
    /// value instead of taking the slot for empty.
    const BREAK_MARKER: u64;

    /// The bits an absent entry may have set: a raw value is [`Entry::Absent`] at every
    /// level the format has exactly when it has no other bit set (x86_64: the A and D
    /// bits some CPUs write into a non-present entry; aarch64: none). Telling absent
    /// from live is then one mask, with no decode and no branch, which is what lets a
    /// table be checked for emptiness a cache line at a time.
    const ABSENT_BITS: u64;

    /// The next table if `raw` at `level` is a present table entry (no reserved-bit check).
    fn table_pfn(raw: u64, level: Level) -> Option<Pfn>;

    /// The frame and attributes if `raw` at `level` is a present leaf that decodes.
    fn leaf(raw: u64, level: Level) -> Option<(Pfn, Self::LeafAttributes)>;

    /// Whether replacing `old` by `new` in a live table needs break-before-make (write an
    /// invalid entry, invalidate, then write `new`). See [`crate::bbm`].
    fn needs_break_before_make(old: &Entry<Self>, new: &Entry<Self>) -> bool;

    /// The address a table with `va_bits` bits of reach means by `va`, whose bits at
    /// and above `va_bits` are zero: sign-extended on x86_64; unchanged (the TTBR0
    /// half) on aarch64.
    fn canonical(va: u64, va_bits: u32) -> u64 {
        let _ = va_bits;
        va
    }
}

impl PagingFormat for X86_64 {
    /// Present clear and bit 4, which every non-present entry leaves clear. (Not bit 7:
    /// P clear with PS set at level 2 or 3 is a huge mapping Linux is invalidating, which
    /// decodes as `Entry::ProtNone`.)
    const BREAK_MARKER: u64 = 1 << 4;

    const ABSENT_BITS: u64 = devpriv_pte::arch::x86_64::software::ERRATUM_BITS;

    fn is_root_level(level: Level) -> bool {
        matches!(level, Level::L4 | Level::L5)
    }

    #[inline]
    fn is_translatable(va: u64, va_bits: u32) -> bool {
        let shift = 64 - va_bits;
        ((va << shift) as i64 >> shift) as u64 == va
    }

    #[inline]
    fn is_translatable_range(start: u64, last: u64, va_bits: u32) -> bool {
        Self::is_translatable(start, va_bits)
            && Self::is_translatable(last, va_bits)
            && (start ^ last) >> (va_bits - 1) == 0
    }

    #[inline]
    fn table_pfn(raw: u64, level: Level) -> Option<Pfn> {
        X86_64::table_pfn(raw, level)
    }

    #[inline]
    fn leaf(raw: u64, level: Level) -> Option<(Pfn, Self::LeafAttributes)> {
        X86_64::leaf(raw, level)
    }

    fn needs_break_before_make(_old: &Entry<Self>, _new: &Entry<Self>) -> bool {
        false
    }

    #[inline]
    fn canonical(va: u64, va_bits: u32) -> u64 {
        let shift = 64 - va_bits;
        ((va << shift) as i64 >> shift) as u64
    }
}

impl PagingFormat for Aarch64 {
    /// Valid clear; bits 1 and 4, which every invalid devpriv entry leaves clear.
    const BREAK_MARKER: u64 = 1 << 1 | 1 << 4;

    const ABSENT_BITS: u64 = 0;

    fn is_root_level(level: Level) -> bool {
        matches!(level, Level::L2 | Level::L3 | Level::L4)
    }

    #[inline]
    fn is_translatable(va: u64, va_bits: u32) -> bool {
        let upper = va >> va_bits;
        upper == 0 || upper == u64::MAX >> va_bits
    }

    #[inline]
    fn is_translatable_range(start: u64, last: u64, va_bits: u32) -> bool {
        Self::is_translatable(start, va_bits)
            && Self::is_translatable(last, va_bits)
            && (start ^ last) >> va_bits == 0
    }

    #[inline]
    fn table_pfn(raw: u64, level: Level) -> Option<Pfn> {
        Aarch64::table_pfn(raw, level)
    }

    #[inline]
    fn leaf(raw: u64, level: Level) -> Option<(Pfn, Self::LeafAttributes)> {
        Aarch64::leaf(raw, level)
    }

    fn needs_break_before_make(old: &Entry<Self>, new: &Entry<Self>) -> bool {
        bbm::aarch64_needs_break_before_make(old, new)
    }
}

/// The aarch64 root level for a `va_bits`-bit address space with the 4 KiB granule
/// (T0SZ = 64 - `va_bits`): 4 for 40..=48 bits, 3 for 31..=39, 2 for 25..=30; `None`
/// outside 25..=48.
pub const fn aarch64_root_level(va_bits: u32) -> Option<Level> {
    match va_bits {
        25..=30 => Some(Level::L2),
        31..=39 => Some(Level::L3),
        40..=48 => Some(Level::L4),
        _ => None,
    }
}

/// The x86_64 root level for `va_bits`: 4 for 48 bits, 5 for 57 (LA57); `None` otherwise.
pub const fn x86_64_root_level(va_bits: u32) -> Option<Level> {
    match va_bits {
        48 => Some(Level::L4),
        57 => Some(Level::L5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_decodes<F: PagingFormat>() {
        for level in [Level::L1, Level::L2, Level::L3, Level::L4, Level::L5] {
            assert!(
                F::decode(F::BREAK_MARKER, level).is_err(),
                "{:?} marker decodes at {level:?}",
                F::ARCH
            );
            assert!(!F::is_valid(F::BREAK_MARKER, level));
        }
    }

    #[test]
    fn the_break_marker_is_no_entry_at_any_level() {
        never_decodes::<X86_64>();
        never_decodes::<Aarch64>();
    }

    /// `raw & !ABSENT_BITS == 0` exactly when `decode` says absent, at every level the
    /// format has (level 5 only on x86_64, with LA57).
    fn absent_bits_agree_with_decode<F: PagingFormat>(raw: u64) {
        let levels: &[Level] = if F::is_root_level(Level::L5) {
            &[Level::L1, Level::L2, Level::L3, Level::L4, Level::L5]
        } else {
            &[Level::L1, Level::L2, Level::L3, Level::L4]
        };
        for &level in levels {
            assert_eq!(
                raw & !F::ABSENT_BITS == 0,
                matches!(F::decode(raw, level), Ok(Entry::Absent)),
                "{:?} {raw:#x} at {level:?}",
                F::ARCH
            );
        }
    }

    #[test]
    fn absent_bits_are_what_decode_calls_absent() {
        // Every value made of absent bits and one more bit (the neighbours of the set),
        // then a spread of other values.
        for base in [0, X86_64::ABSENT_BITS, 0x20, 0x40] {
            absent_bits_agree_with_decode::<X86_64>(base);
            absent_bits_agree_with_decode::<Aarch64>(base);
            for bit in 0..64 {
                absent_bits_agree_with_decode::<X86_64>(base | 1 << bit);
                absent_bits_agree_with_decode::<Aarch64>(base | 1 << bit);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..if cfg!(miri) { 64 } else { 20_000 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for raw in [x, x & !1, x & 0x7f, x & !3] {
                absent_bits_agree_with_decode::<X86_64>(raw);
                absent_bits_agree_with_decode::<Aarch64>(raw);
            }
        }
    }
}

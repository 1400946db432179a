//! Raw values that must not decode, each with the typed error it gets.

use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    DecodeError, EncodeError, Entry, Level, PteFormat, SoftwareEntry, SoftwareKind, SwapType,
};

const L1: Level = Level::L1;
const L2: Level = Level::L2;

/// x86_64 `__swp_entry(type, offset)`.
fn x86(type_number: u64, offset: u64) -> u64 {
    ((!offset) << 14 >> 5) | (type_number << 59)
}

/// arm64 `__swp_entry(type, offset)`.
fn arm(type_number: u64, offset: u64) -> u64 {
    (offset << 12) | (type_number << 6)
}

#[test]
fn x86_64_software_must_be_zero_bits() {
    let base = x86(0, 5);
    assert!(X86_64::decode(base, L1).is_ok());
    assert_eq!(
        X86_64::decode(base | 1 << 4, L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 4 })
    );
    assert_eq!(
        X86_64::decode(base | 1 << 7, L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 7 })
    );
    // At level 2, P clear with PS set is a huge mapping being invalidated (Linux's
    // pmd_present says present), never a software entry: this one's address bits
    // 13..20 (the inverted swap offset) are reserved there.
    assert_eq!(
        X86_64::decode(base | 1 << 7, Level::L2),
        Err(DecodeError::ReservedBitsSet { bits: 0x001f_e000 })
    );
    // Bit 8 with P clear is PROT_NONE: a mapping, not a software entry.
    assert!(matches!(
        X86_64::decode(base | 1 << 8, L1),
        Ok(Entry::ProtNone { .. })
    ));
}

#[test]
fn x86_64_young_dirty_only_on_migration() {
    // Offset bit 40 is raw bit 49 (stored inverted, so the raw bit is clear).
    for t in [24, 28, 29, 30] {
        assert_eq!(
            X86_64::decode(x86(t, 1 << 40 | 7), L1),
            Err(DecodeError::ReservedBitsSet { bits: 1 << 49 }),
            "type {t}"
        );
    }
    for t in [21, 22, 23, 25, 26, 27, 0, 20] {
        assert!(X86_64::decode(x86(t, 3 << 40 | 7), L1).is_ok(), "type {t}");
    }
    // Marker payloads only have bits 0..2.
    assert_eq!(
        X86_64::decode(x86(31, 8), L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 12 })
    );
}

#[test]
fn x86_64_reserved_address_bits_of_huge_leaves() {
    // 1 GiB leaf at 1 GiB with bit 29 set (a reserved bit for 1 GiB, an address bit for
    // 2 MiB).
    let raw = 0x4000_0083 | 1 << 29;
    assert_eq!(
        X86_64::decode(raw, Level::L3),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 29 })
    );
    assert!(X86_64::decode(raw, Level::L2).is_ok());
}

#[test]
fn aarch64_software_must_be_zero_bits() {
    let base = arm(0, 5);
    assert!(Aarch64::decode(base, L1).is_ok());
    for bit in [1, 4, 5, 62, 63] {
        assert_eq!(
            Aarch64::decode(base | 1 << bit, L1),
            Err(DecodeError::ReservedBitsSet { bits: 1 << bit }),
            "bit {bit}"
        );
    }
    // Bit 11 is PROT_NONE: a block there must have bits [1:0] = 0b00 and a clear
    // reserved field, which this swap entry's offset is not.
    assert_eq!(
        Aarch64::decode(base | 1 << 11, L2),
        Err(DecodeError::ReservedBitsSet { bits: 0x5000 })
    );
    // 0b10 alone: not zero, so not absent, and bit 1 is reserved.
    assert_eq!(
        Aarch64::decode(0b10, L1),
        Err(DecodeError::ReservedBitsSet { bits: 0b10 })
    );
}

#[test]
fn aarch64_young_dirty_only_on_migration() {
    assert_eq!(
        Aarch64::decode(arm(29, 1 << 41), L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 53 })
    );
    assert!(Aarch64::decode(arm(23, 1 << 41), L1).is_ok());
    assert_eq!(
        Aarch64::decode(arm(31, 1 << 3), L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 15 })
    );
    assert_eq!(
        Aarch64::decode(arm(0, 1 << 42), L1),
        Err(DecodeError::OffsetTooWide { bits: 1 << 54 })
    );
}

#[test]
fn aarch64_reserved_descriptor_bits() {
    // Page with RES0 bit 48, bits 59..63.
    assert_eq!(
        Aarch64::decode(0x8000_0403 | 1 << 48, L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 48 })
    );
    assert_eq!(
        Aarch64::decode(0x8000_0403 | 1 << 63, L1),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 63 })
    );
    // 2 MiB block with address bit 12 set.
    assert_eq!(
        Aarch64::decode(0x8000_1401, L2),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 12 })
    );
    // Table with an ignored bit this crate does not keep (bit 5) or RES0 bit 50.
    assert_eq!(
        Aarch64::decode(0x8000_0023, L2),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 5 })
    );
    assert_eq!(
        Aarch64::decode(0x8000_0003 | 1 << 50, Level::L3),
        Err(DecodeError::ReservedBitsSet { bits: 1 << 50 })
    );
}

/// arm64 swap type 0 at offset 0 would be all zero bits, an empty slot: refused.
/// (x86_64 stores the offset inverted, so the same entry is not zero there.)
#[test]
fn aarch64_swap_type_0_offset_0_is_refused() {
    let sw = SoftwareEntry::new(SoftwareKind::Swap {
        swap_type: SwapType::new(0).unwrap(),
        offset: 0,
    });
    for level in [L1, L2] {
        assert_eq!(
            Aarch64::encode(&Entry::Software(sw), level),
            Err(EncodeError::EncodesAsAbsent)
        );
        let raw = X86_64::encode(&Entry::Software(sw), level).unwrap();
        assert_ne!(raw, 0);
        assert_eq!(X86_64::decode(raw, level), Ok(Entry::Software(sw)));
    }
}

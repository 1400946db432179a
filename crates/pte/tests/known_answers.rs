//! Known-answer tests: raw values computed by hand from Linux's formulas.
//!
//! x86_64 (`arch/x86/include/asm/pgtable_64.h`):
//!   `__swp_entry(type, offset) = (~offset << 14 >> 5) | type << 59`
//!   (SWP_TYPE_BITS = 5, SWP_OFFSET_FIRST_BIT = 9, SWP_OFFSET_SHIFT = 9 + 5 = 14);
//!   side bits: soft-dirty bit 1, uffd-wp bit 2, exclusive bit 3.
//! arm64 (`arch/arm64/include/asm/pgtable.h`):
//!   `__swp_entry(type, offset) = type << 6 | offset << 12`;
//!   side bits: exclusive bit 2, uffd-wp bit 3.
//! Migration young/dirty: offset bits 40 and 41 (SWP_MIG_YOUNG_BIT = SWP_PFN_BITS = 40).

use devpriv_pte::arch::aarch64::{self, Aarch64};
use devpriv_pte::arch::x86_64::{self, X86_64};
use devpriv_pte::{
    DecodeError, DeviceAccess, DeviceIndex, Entry, Level, Marker, MigrationAccess, PageSize, Pfn,
    PteFormat, SideBits, SoftwareEntry, SoftwareKind, SwapType,
};

fn sw(kind: SoftwareKind) -> SoftwareEntry {
    SoftwareEntry::new(kind)
}

fn check<F: PteFormat>(entry: Entry<F>, level: Level, raw: u64) {
    assert_eq!(F::encode(&entry, level), Ok(raw), "encode {entry:?}");
    assert_eq!(F::decode(raw, level), Ok(entry), "decode {raw:#x}");
    assert!(!F::is_valid(raw, level));
}

#[test]
fn x86_64_device_private_write() {
    // type 28 (SWP_DEVICE_WRITE), offset 0x1234:
    //   ~0x1234 truncated to the 50-bit field = 0x3_ffff_ffff_edcb
    //   << 9                                  = 0x07ff_ffff_ffdb_9600
    //   28 << 59                              = 0xe000_0000_0000_0000
    //   sum                                   = 0xe7ff_ffff_ffdb_9600
    let kind = SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(0x1234),
    };
    check::<X86_64>(Entry::Software(sw(kind)), Level::L1, 0xe7ff_ffff_ffdb_9600);
}

#[test]
fn x86_64_swap_type_0_offset_0() {
    // ~0 in the field: all of bits 9..58 set = 0x07ff_ffff_ffff_fe00; type 0.
    let kind = SoftwareKind::Swap {
        swap_type: SwapType::new(0).unwrap(),
        offset: 0,
    };
    check::<X86_64>(Entry::Software(sw(kind)), Level::L1, 0x07ff_ffff_ffff_fe00);
}

#[test]
fn x86_64_swap_type_3_large_offset_at_pmd() {
    // offset 0x2_0000_0000 (bit 33): field = 0x3_ffff_ffff_ffff & !(1 << 33)
    //   << 9 = 0x07ff_ffff_ffff_fe00 & !(1 << 42) = 0x07ff_fbff_ffff_fe00
    //   3 << 59 = 0x1800_0000_0000_0000 -> 0x1fff_fbff_ffff_fe00
    let kind = SoftwareKind::Swap {
        swap_type: SwapType::new(3).unwrap(),
        offset: 0x2_0000_0000,
    };
    check::<X86_64>(Entry::Software(sw(kind)), Level::L2, 0x1fff_fbff_ffff_fe00);
}

#[test]
fn x86_64_migration_write_young_dirty_exclusive() {
    // type 27, offset = 0x5678 | 1 << 40 | 1 << 41 = 0x300_0000_5678
    //   field = 0x3_ffff_ffff_ffff ^ 0x300_0000_5678 = 0x3_fcff_ffff_a987
    //   << 9 = 0x07f9_ffff_ff53_0e00; 27 << 59 = 0xd800_0000_0000_0000
    //   exclusive bit 3 = 0x8 -> 0xdff9_ffff_ff53_0e08
    let kind = SoftwareKind::Migration {
        access: MigrationAccess::Write,
        pfn: Pfn::new(0x5678),
        young: true,
        dirty: true,
    };
    let entry = SoftwareEntry {
        kind,
        side: SideBits {
            exclusive: true,
            ..SideBits::default()
        },
    };
    check::<X86_64>(Entry::Software(entry), Level::L1, 0xdff9_ffff_ff53_0e08);
}

#[test]
fn x86_64_guard_marker() {
    // type 31, offset 4 (PTE_MARKER_GUARD): field = 0x3_ffff_ffff_fffb
    //   << 9 = 0x07ff_ffff_ffff_f600; 31 << 59 = 0xf800_0000_0000_0000
    //   -> 0xffff_ffff_ffff_f600
    let kind = SoftwareKind::Marker(Marker {
        guard: true,
        ..Marker::default()
    });
    check::<X86_64>(Entry::Software(sw(kind)), Level::L1, 0xffff_ffff_ffff_f600);
}

#[test]
fn aarch64_device_private_write() {
    // 28 << 6 = 0x700; 0x1234 << 12 = 0x123_4000 -> 0x123_4700
    let kind = SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(0x1234),
    };
    check::<Aarch64>(Entry::Software(sw(kind)), Level::L1, 0x0123_4700);
}

#[test]
fn aarch64_migration_read_young_exclusive() {
    // type 25: 25 << 6 = 0x640; offset 0xabcde | 1 << 40 -> << 12 = 0x10_0000_abcd_e000;
    // exclusive bit 2 = 0x4 -> 0x0010_0000_abcd_e644
    let kind = SoftwareKind::Migration {
        access: MigrationAccess::Read,
        pfn: Pfn::new(0xabcde),
        young: true,
        dirty: false,
    };
    let entry = SoftwareEntry {
        kind,
        side: SideBits {
            exclusive: true,
            ..SideBits::default()
        },
    };
    check::<Aarch64>(Entry::Software(entry), Level::L2, 0x0010_0000_abcd_e644);
}

#[test]
fn aarch64_uffd_wp_marker() {
    // type 31: 31 << 6 = 0x7c0; payload 1 (uffd-wp) << 12 = 0x1000; side uffd-wp bit 3
    // = 0x8 -> 0x17c8
    let kind = SoftwareKind::Marker(Marker {
        uffd_wp: true,
        ..Marker::default()
    });
    let entry = SoftwareEntry {
        kind,
        side: SideBits {
            uffd_wp: true,
            ..SideBits::default()
        },
    };
    check::<Aarch64>(Entry::Software(entry), Level::L1, 0x17c8);
}

#[test]
fn x86_64_present_entries() {
    // A Linux kernel table entry: P | RW | A | D (_KERNPG_TABLE = 0x63) at 0x1234_5000.
    let raw = 0x1234_5063;
    let Ok(Entry::Table { next, attrs }) = X86_64::decode(raw, Level::L4) else {
        panic!()
    };
    assert_eq!(next, Pfn::new(0x12345));
    assert!(attrs.writable() && attrs.accessed() && attrs.dirty_ignored() && !attrs.user());
    assert_eq!(
        X86_64::encode(&Entry::Table { next, attrs }, Level::L4),
        Ok(raw)
    );

    // 4 KiB leaf with PAT (bit 7) set: PAT index 4 (WB), not a PS bit at level 1.
    let raw = 0x8000_0000_dead_b083;
    let Ok(Entry::Leaf { pfn, size, attrs }) = X86_64::decode(raw, Level::L1) else {
        panic!()
    };
    assert_eq!((pfn, size), (Pfn::new(0xdeadb), PageSize::Size4KiB));
    assert!(attrs.pat() && attrs.writable() && attrs.no_execute());
    assert_eq!(attrs.pat_index(), 4);

    // 2 MiB leaf with PAT at bit 12 and PS at bit 7; address 0x4020_0000.
    let raw = 0x4020_1083;
    let Ok(Entry::Leaf { pfn, size, attrs }) = X86_64::decode(raw, Level::L2) else {
        panic!()
    };
    assert_eq!((pfn, size), (Pfn::new(0x40200), PageSize::Size2MiB));
    assert!(attrs.pat());
    assert_eq!(
        X86_64::encode(&Entry::Leaf { pfn, size, attrs }, Level::L2),
        Ok(raw)
    );

    // Bit 13 in a 2 MiB leaf is a reserved address bit.
    assert_eq!(
        X86_64::decode(0x4020_2083, Level::L2),
        Err(DecodeError::ReservedBitsSet { bits: 0x2000 })
    );
    // 1 GiB leaf, PS at level 4 is invalid.
    assert!(matches!(
        X86_64::decode(0x4000_0083, Level::L3),
        Ok(Entry::Leaf {
            size: PageSize::Size1GiB,
            ..
        })
    ));
    assert_eq!(
        X86_64::decode(0x4000_0083, Level::L4),
        Err(DecodeError::InvalidDescriptor)
    );
    assert_eq!(
        X86_64::decode(0x4000_0083, Level::L5),
        Err(DecodeError::InvalidDescriptor)
    );
}

#[test]
fn x86_64_non_present_special_cases() {
    // Only A/D set (hardware erratum): absent.
    assert_eq!(X86_64::decode(0x60, Level::L1), Ok(Entry::Absent));
    assert_eq!(X86_64::decode(0, Level::L3), Ok(Entry::Absent));
    // PROT_NONE as Linux writes it for pfn 0x12345: PAGE_NONE (A | PROTNONE) and the
    // frame number inverted.
    let Ok(Entry::ProtNone { pfn, size, attrs }) = X86_64::decode(0x000f_ffff_edcb_a120, Level::L1)
    else {
        panic!("not PROT_NONE")
    };
    assert_eq!((pfn, size), (Pfn::new(0x12345), PageSize::Size4KiB));
    assert!(attrs.accessed() && !attrs.global() && !attrs.writable());
    // Software entries above level 2.
    assert_eq!(
        X86_64::decode(0x07ff_ffff_ffff_fe00, Level::L3),
        Err(DecodeError::SoftwareAtLevel(Level::L3))
    );
    // Offset wider than 42 bits: raw bit 58 clear means offset bit 49 set.
    assert_eq!(
        X86_64::decode(0x03ff_ffff_ffff_fe00, Level::L1),
        Err(DecodeError::OffsetTooWide { bits: 1 << 58 })
    );
}

#[test]
fn aarch64_present_entries() {
    // Level-1 (Arm level 3) page: 0b11, AttrIndx 1, AF, SH inner, UXN|PXN.
    let raw = 0x0060_0000_8000_0707;
    let Ok(Entry::Leaf { pfn, size, attrs }) = Aarch64::decode(raw, Level::L1) else {
        panic!()
    };
    assert_eq!((pfn, size), (Pfn::new(0x80000), PageSize::Size4KiB));
    assert_eq!(attrs.attr_indx(), 1);
    assert!(attrs.accessed() && attrs.pxn() && attrs.uxn());
    assert_eq!(
        Aarch64::encode(&Entry::Leaf { pfn, size, attrs }, Level::L1),
        Ok(raw)
    );
    // The same bits as a block at level 2 and 3, and a table at level 4.
    assert!(matches!(
        Aarch64::decode(raw & !2, Level::L2),
        Ok(Entry::Leaf {
            size: PageSize::Size2MiB,
            ..
        })
    ));
    assert!(matches!(
        Aarch64::decode(0x8000_0003, Level::L4),
        Ok(Entry::Table { .. })
    ));
    // Block descriptors at levels 1 and 4 are reserved.
    assert_eq!(
        Aarch64::decode(0x8000_0401, Level::L1),
        Err(DecodeError::InvalidDescriptor)
    );
    assert_eq!(
        Aarch64::decode(0x8000_0401, Level::L4),
        Err(DecodeError::InvalidDescriptor)
    );
    assert!(!Aarch64::is_valid(0x8000_0401, Level::L1));
    assert!(Aarch64::is_valid(0x8000_0401, Level::L2));
    // No level 5.
    assert_eq!(
        Aarch64::decode(0, Level::L5),
        Err(DecodeError::NoSuchLevel(Level::L5))
    );
    // PROT_NONE (bit 11 with bits[1:0] = 0b10, as Linux leaves it).
    let Ok(Entry::ProtNone { pfn, size, .. }) = Aarch64::decode(0x8000_0f02, Level::L1) else {
        panic!("not PROT_NONE")
    };
    assert_eq!((pfn, size), (Pfn::new(0x80000), PageSize::Size4KiB));
}

#[test]
fn register_values() {
    // IA32_PAT: WB(06) WC(01) UC-(07) UC(00) WB(06) WP(05) UC-(07) WT(04), byte 0 first.
    assert_eq!(x86_64::PAT_MSR_VALUE, 0x0407_0506_0007_0106);
    // MAIR: attr0 0x00, attr1 0xff, attr2 0x44, attr3 0x04, attr4 0xbb.
    assert_eq!(aarch64::MAIR_VALUE, 0xbb_0444_ff00);
}

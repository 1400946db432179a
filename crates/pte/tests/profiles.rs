//! Profiles: known answers computed from Linux's formulas for every preset (both
//! architectures, PTE and PMD levels), Linux guests' entries read bit for bit, the
//! lenient decode, and round trips under every profile.

mod common;

use common::*;
use devpriv_pte::arch::aarch64::{self, Aarch64};
use devpriv_pte::arch::x86_64::{self, X86_64};
use devpriv_pte::{
    DecodeError, DeviceAccess, DeviceIndex, EncodeError, Entry, LeafAttributes, Level,
    MainlineOptions, MemoryType, MigrationAccess, PageSize, Pfn, Profile, PteFormat, SideBits,
    SoftwareEntry, SoftwareKind, SwapType, TypeMeaning, TypeNumbering,
};
use proptest::prelude::*;

/// Linux's type numbers, from `include/linux/swap.h`: with `device` special device types
/// (3 mainline, 6 with the series) and every other option on.
struct LinuxTypes {
    max_swapfiles: u8,
    hwpoison: u8,
    migration_read: u8,
    device_write: u8,
    device_exclusive: u8,
    migration_device_write: Option<u8>,
    marker: u8,
}

fn linux_types(device: u8) -> LinuxTypes {
    let (hwpoison_num, migration_num, marker_num) = (1, 3, 1);
    let max_swapfiles = 32 - device - migration_num - hwpoison_num - marker_num;
    LinuxTypes {
        max_swapfiles,
        hwpoison: max_swapfiles,
        migration_read: max_swapfiles + hwpoison_num,
        device_write: max_swapfiles + hwpoison_num + migration_num,
        device_exclusive: max_swapfiles + hwpoison_num + migration_num + 2,
        migration_device_write: (device == 6).then_some(max_swapfiles + 1 + 3 + 5),
        marker: max_swapfiles + hwpoison_num + migration_num + device,
    }
}

/// x86_64 `__swp_entry(type, offset)`: offset inverted and shifted to bit 9 (by way of
/// bit 14 and an arithmetic-free right shift of the type width), type at bit 59.
fn linux_x86_swp_entry(swap_type: u8, offset: u64) -> u64 {
    const SWP_TYPE_BITS: u32 = 5;
    const SWP_OFFSET_FIRST_BIT: u32 = 9;
    const SWP_OFFSET_SHIFT: u32 = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS;
    const SWP_TYPE_FIRST_BIT: u32 = 64 - SWP_TYPE_BITS;
    ((!offset) << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | (swap_type as u64) << SWP_TYPE_FIRST_BIT
}

/// arm64 `__swp_entry(type, offset)`: type at bit 6, offset at bit 12.
fn linux_arm64_swp_entry(swap_type: u8, offset: u64) -> u64 {
    const SWP_TYPE_SHIFT: u32 = 6;
    const SWP_OFFSET_SHIFT: u32 = 12;
    (swap_type as u64) << SWP_TYPE_SHIFT | offset << SWP_OFFSET_SHIFT
}

/// A migration entry's offset: `pfn | young << SWP_MIG_YOUNG_BIT | dirty << ..._DIRTY_BIT`
/// with `SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT`.
fn linux_migration_offset(max_physmem_bits: u32, pfn: u64, young: bool, dirty: bool) -> u64 {
    let swp_pfn_bits = max_physmem_bits - 12;
    pfn | (young as u64) << swp_pfn_bits | (dirty as u64) << (swp_pfn_bits + 1)
}

fn migration(access: MigrationAccess, pfn: u64, young: bool, dirty: bool) -> Entry<X86_64> {
    Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
        access,
        pfn: Pfn::new(pfn),
        young,
        dirty,
    }))
}

fn same_on_arm<F: PteFormat>(entry: Entry<X86_64>) -> Entry<F> {
    match entry {
        Entry::Software(sw) => Entry::Software(sw),
        _ => unreachable!(),
    }
}

/// The Linux presets with their `MAX_PHYSMEM_BITS` and special device-type count.
const LINUX_PRESETS: [(Profile, u32, u8); 6] = [
    (Profile::LINUX_X86_64_4LEVEL, 46, 3),
    (Profile::LINUX_X86_64_5LEVEL, 52, 3),
    (Profile::LINUX_ARM64_48BIT, 48, 3),
    (Profile::LINUX_ARM64_52BIT, 52, 3),
    (Profile::SERIES_X86_64_4LEVEL, 46, 6),
    (Profile::SERIES_ARM64_48BIT, 48, 6),
];

#[test]
fn known_answers_from_linux_formulas_for_every_preset() {
    let pfn = 0x12345;
    for (profile, physmem_bits, device) in LINUX_PRESETS {
        let t = linux_types(device);
        assert_eq!(profile.types().swap_types(), t.max_swapfiles, "{profile:?}");
        let cases: [(Entry<X86_64>, u8, u64); 7] = [
            (
                migration(MigrationAccess::Write, pfn, true, true),
                t.migration_read + 2,
                linux_migration_offset(physmem_bits, pfn, true, true),
            ),
            (
                migration(MigrationAccess::Read, pfn, true, false),
                t.migration_read,
                linux_migration_offset(physmem_bits, pfn, true, false),
            ),
            (
                Entry::Software(SoftwareEntry::new(SoftwareKind::HwPoison {
                    pfn: Pfn::new(pfn),
                })),
                t.hwpoison,
                pfn,
            ),
            (
                Entry::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
                    access: DeviceAccess::Write,
                    index: DeviceIndex::new(pfn),
                })),
                t.device_write,
                pfn,
            ),
            (
                Entry::Software(SoftwareEntry::new(SoftwareKind::DeviceExclusive {
                    pfn: Pfn::new(pfn),
                })),
                t.device_exclusive,
                pfn,
            ),
            (
                Entry::Software(SoftwareEntry::new(SoftwareKind::Swap {
                    swap_type: SwapType::new(t.max_swapfiles - 1).unwrap(),
                    offset: 0x1234,
                })),
                t.max_swapfiles - 1,
                0x1234,
            ),
            (
                Entry::Software(SoftwareEntry::new(SoftwareKind::Marker(
                    devpriv_pte::Marker {
                        guard: true,
                        ..Default::default()
                    },
                ))),
                t.marker,
                4,
            ),
        ];
        for (entry, swap_type, offset) in cases {
            // Software entries look the same at PTE and PMD level on both architectures.
            for level in [Level::L1, Level::L2] {
                let x86 = linux_x86_swp_entry(swap_type, offset);
                assert_eq!(
                    X86_64::encode_in(&entry, level, &profile),
                    Ok(x86),
                    "{profile:?} {entry:?}"
                );
                assert_eq!(X86_64::decode_in(x86, level, &profile), Ok(entry));
                let arm = linux_arm64_swp_entry(swap_type, offset);
                let arm_entry = same_on_arm::<Aarch64>(entry);
                assert_eq!(Aarch64::encode_in(&arm_entry, level, &profile), Ok(arm));
                assert_eq!(Aarch64::decode_in(arm, level, &profile), Ok(arm_entry));
            }
        }
        if let Some(migration_device_write) = t.migration_device_write {
            let entry =
                Entry::<X86_64>::Software(SoftwareEntry::new(SoftwareKind::DeviceMigration {
                    access: MigrationAccess::Write,
                    index: DeviceIndex::new(7),
                    young: false,
                    dirty: true,
                }));
            let raw = linux_x86_swp_entry(
                migration_device_write,
                linux_migration_offset(physmem_bits, 7, false, true),
            );
            assert_eq!(X86_64::encode_in(&entry, Level::L1, &profile), Ok(raw));
        }
    }
}

#[test]
fn the_issues_examples_read_as_linux_means_them() {
    // arm64, 48-bit PA: a young read migration entry for pfn 0x40e00.
    let arm = linux_arm64_swp_entry(25, 0x40e00 | 1 << 36);
    assert_eq!(
        Aarch64::decode_in(arm, Level::L1, &Profile::LINUX_ARM64_48BIT),
        Ok(same_on_arm(migration(
            MigrationAccess::Read,
            0x40e00,
            true,
            false
        )))
    );
    // devpriv's own 52-bit layout reads the young bit as part of the frame number.
    assert_eq!(
        Aarch64::decode(arm, Level::L1),
        Ok(same_on_arm(migration(
            MigrationAccess::Read,
            0x10_0004_0e00,
            false,
            false
        )))
    );
    // x86_64 4-level: young+dirty write migration entry for pfn 0x12345.
    let x86 = linux_x86_swp_entry(27, 0x12345 | 3 << 34);
    assert_eq!(
        X86_64::decode_in(x86, Level::L1, &Profile::LINUX_X86_64_4LEVEL),
        Ok(migration(MigrationAccess::Write, 0x12345, true, true))
    );
    // Mainline swap types 21..=23 are swap devices.
    let swap = Entry::<X86_64>::Software(SoftwareEntry::new(SoftwareKind::Swap {
        swap_type: SwapType::new(21).unwrap(),
        offset: 9,
    }));
    let raw = X86_64::encode_in(&swap, Level::L1, &Profile::LINUX_X86_64_4LEVEL).unwrap();
    assert_eq!(
        X86_64::decode_in(raw, Level::L1, &Profile::LINUX_X86_64_4LEVEL),
        Ok(swap)
    );
    assert_eq!(
        X86_64::encode(&swap, Level::L1),
        Err(EncodeError::TypeNotInProfile)
    );
    // A Linux arm64 user page: AttrIndx 0 is normal write-back under Linux's MAIR.
    let Ok(Entry::Leaf { attrs, .. }) = Aarch64::decode_in(
        0x00e8_0000_4000_0f43,
        Level::L1,
        &Profile::LINUX_ARM64_48BIT,
    ) else {
        panic!("not a leaf")
    };
    assert_eq!(
        attrs.property_in(&Profile::LINUX_ARM64_48BIT).memory,
        MemoryType::WriteBack
    );
    assert_eq!(attrs.property().memory, MemoryType::Uncached);
    // That page is writable and dirty (DBM with AP[2] clear); Linux's writable clean
    // page is AP[2] set with DBM (0x0068...fc3: pte_write reads DBM), writable, clean.
    let property = attrs.property_in(&Profile::LINUX_ARM64_48BIT);
    assert!(property.writable && property.dirty);
    let Ok(Entry::Leaf { attrs, .. }) = Aarch64::decode_in(
        0x0068_0000_4000_0fc3,
        Level::L1,
        &Profile::LINUX_ARM64_48BIT,
    ) else {
        panic!("not a leaf")
    };
    let property = attrs.property();
    assert!(property.writable && !property.dirty);
    // x86 PAT indices 5 and 7.
    let wp = x86_64::PageAttributes::new().with_pat_index(5);
    let wt = x86_64::PageAttributes::new().with_pat_index(7);
    assert_eq!(
        wp.property_in(&Profile::LINUX_X86_64_4LEVEL).memory,
        MemoryType::WriteProtect
    );
    assert_eq!(wt.property().memory, MemoryType::WriteThrough);
}

#[test]
fn kernels_without_an_option_renumber() {
    let no_device =
        Profile::LINUX_X86_64_4LEVEL.with_types(TypeNumbering::mainline(MainlineOptions {
            device_private: false,
            ..MainlineOptions::ALL
        }));
    let device = Entry::<X86_64>::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
        access: DeviceAccess::Read,
        index: DeviceIndex::new(1),
    }));
    assert_eq!(
        X86_64::encode_in(&device, Level::L1, &no_device),
        Err(EncodeError::TypeNotInProfile)
    );
    // 27 swap devices, then hw-poison 27, migration 28..=30, marker 31.
    assert_eq!(no_device.types().swap_types(), 27);
    assert_eq!(
        no_device
            .types()
            .number(TypeMeaning::Migration(MigrationAccess::Read)),
        Some(28)
    );
    let raw = linux_x86_swp_entry(28, 0x55);
    assert_eq!(
        X86_64::decode_in(raw, Level::L1, &no_device),
        Ok(migration(MigrationAccess::Read, 0x55, false, false))
    );
}

#[test]
fn prot_none_entries_as_linux_writes_them() {
    // x86_64 PAGE_NONE is _PAGE_PROTNONE | _PAGE_ACCESSED; the frame is stored inverted
    // (pte: bits 12..51; pmd: bits 21..51 with PSE).
    const PAGE_NONE: u64 = 1 << 8 | 1 << 5;
    const PTE_PFN_MASK: u64 = 0x000f_ffff_ffff_f000;
    const PMD_PFN_MASK: u64 = PTE_PFN_MASK & !0x1f_ffff;
    let pte = ((0x12345u64 << 12) ^ !0) & PTE_PFN_MASK | PAGE_NONE;
    let pmd = ((0x400u64 << 12) ^ !0) & PMD_PFN_MASK | PAGE_NONE | 1 << 7;
    for profile in Profile::PRESETS {
        let Ok(Entry::ProtNone { pfn, size, attrs }) = X86_64::decode_in(pte, Level::L1, &profile)
        else {
            panic!("pte")
        };
        assert_eq!((pfn, size), (Pfn::new(0x12345), PageSize::Size4KiB));
        assert_eq!(
            X86_64::encode_in(&Entry::ProtNone { pfn, size, attrs }, Level::L1, &profile),
            Ok(pte)
        );
        let Ok(Entry::ProtNone { pfn, size, .. }) = X86_64::decode_in(pmd, Level::L2, &profile)
        else {
            panic!("pmd")
        };
        assert_eq!((pfn, size), (Pfn::new(0x400), PageSize::Size2MiB));
    }
    // x86_64 pmd_mkinvalid of a present 2 MiB mapping: P cleared, PSE kept, the frame
    // inverted (bit 8 clear): still a mapping to Linux's pmd_present.
    let present_pmd = (0x200u64 << 12) | 0xe7;
    let invalidated = ((present_pmd & PMD_PFN_MASK) ^ PMD_PFN_MASK) | (present_pmd & 0xfe);
    assert!(matches!(
        X86_64::decode_in(invalidated, Level::L2, &Profile::LINUX_X86_64_4LEVEL),
        Ok(Entry::ProtNone { pfn, size: PageSize::Size2MiB, .. }) if pfn == Pfn::new(0x200)
    ));
    // arm64 PAGE_NONE: valid clear, PTE_PRESENT_INVALID (bit 11), page bit kept at PTE
    // level, AF, inner shareable, read-only, PXN/UXN, normal memory; PMD level clears
    // the table bit.
    let arm_pte = 0x0060_0000_1234_5f82u64;
    let Ok(Entry::ProtNone { pfn, attrs, .. }) = Aarch64::decode(arm_pte, Level::L1) else {
        panic!("arm pte")
    };
    assert_eq!(pfn, Pfn::new(0x12345));
    assert!(attrs.read_only() && attrs.accessed() && attrs.not_global());
    assert_eq!(
        Aarch64::encode(
            &Entry::ProtNone {
                pfn,
                size: PageSize::Size4KiB,
                attrs
            },
            Level::L1
        ),
        Ok(arm_pte)
    );
    let arm_pmd = 0x0060_0000_4000_0f80u64;
    assert!(matches!(
        Aarch64::decode(arm_pmd, Level::L2),
        Ok(Entry::ProtNone {
            size: PageSize::Size2MiB,
            ..
        })
    ));
    // A global PROT_NONE has no encoding: the marker bit is the global bit.
    assert_eq!(
        X86_64::encode(
            &Entry::ProtNone {
                pfn: Pfn::new(1),
                size: PageSize::Size4KiB,
                attrs: x86_64::PageAttributes::new().with_global(true),
            },
            Level::L1
        ),
        Err(EncodeError::UnsupportedAttribute)
    );
}

#[test]
fn lenient_decode_reports_what_strict_decode_refuses() {
    let profile = Profile::LINUX_X86_64_4LEVEL;
    // A hw-poison entry with offset bit 36 (above the 34-bit frame number) set.
    let raw = linux_x86_swp_entry(24, 0x77 | 1 << 36);
    let strict = X86_64::decode_in(raw, Level::L1, &profile);
    assert_eq!(strict, Err(DecodeError::ReservedBitsSet { bits: 1 << 45 }));
    let lenient = X86_64::decode_lenient(raw, Level::L1, &profile);
    assert_eq!(lenient.unexpected_bits, 1 << 45);
    assert_eq!(lenient.strict_error, strict.err());
    assert_eq!(
        lenient.entry,
        Entry::Software(SoftwareEntry::new(SoftwareKind::HwPoison {
            pfn: Pfn::new(0x77)
        }))
    );
    // Reserved bits of a 2 MiB leaf and an aarch64 RES0 bit.
    let lenient = X86_64::decode_lenient(0x4020_0083 | 1 << 14, Level::L2, &profile);
    assert_eq!(lenient.unexpected_bits, 1 << 14);
    assert!(matches!(lenient.entry, Entry::Leaf { pfn, .. } if pfn == Pfn::new(0x40200)));
    let lenient = Aarch64::decode_lenient(0x8000_0403 | 1 << 48, Level::L1, &profile);
    assert_eq!(lenient.unexpected_bits, 1 << 48);
    assert!(matches!(lenient.entry, Entry::Leaf { .. }));
    // A software entry at level 3 reads as a level-1 one.
    let raw = linux_x86_swp_entry(3, 5);
    let lenient = X86_64::decode_lenient(raw, Level::L3, &profile);
    assert_eq!(
        lenient.strict_error,
        Some(DecodeError::SoftwareAtLevel(Level::L3))
    );
    assert_eq!(lenient.unexpected_bits, 0);
    assert!(matches!(lenient.entry, Entry::Software(_)));
    // A reserved descriptor type: absent, every bit unexpected.
    let lenient = Aarch64::decode_lenient(0x8000_0401, Level::L1, &profile);
    assert_eq!(lenient.entry, Entry::Absent);
    assert_eq!(lenient.unexpected_bits, 0x8000_0401);
    // A well-formed entry: nothing unexpected.
    let lenient = Aarch64::decode_lenient(0x8000_0403, Level::L1, &profile);
    assert_eq!((lenient.unexpected_bits, lenient.strict_error), (0, None));
}

#[test]
fn register_values_of_linux() {
    assert_eq!(devpriv_pte::profile::LINUX_MAIR_VALUE, 0x04_00_44_f0_ff);
    assert_eq!(
        Profile::DEVPRIV.mair(),
        &devpriv_pte::AttributeTable::from_mair(aarch64::MAIR_VALUE)
    );
    assert_eq!(
        Profile::preset("linux-arm64-48bit"),
        Some(Profile::LINUX_ARM64_48BIT)
    );
    assert_eq!(Profile::preset("nonsense"), None);
}

/// Any profile: a preset, or a physical-address width, a numbering and its options.
fn profile() -> impl Strategy<Value = Profile> {
    let options = any::<[bool; 4]>().prop_map(|b| MainlineOptions {
        device_private: b[0],
        migration: b[1],
        memory_failure: b[2],
        pte_marker: b[3],
    });
    prop_oneof![
        (0..Profile::PRESETS.len()).prop_map(|i| Profile::PRESETS[i]),
        (32..=52u32, options, 0..3u8).prop_map(|(bits, options, numbering)| {
            let types = match numbering {
                0 => TypeNumbering::DEVPRIV,
                1 => TypeNumbering::mainline(options),
                _ => TypeNumbering::device_private_series(options),
            };
            Profile::DEVPRIV
                .with_physical_address_bits(bits)
                .unwrap()
                .with_types(types)
        }),
    ]
}

/// Whether `kind` can be written under `profile`: its type exists and its number fits.
fn fits(kind: &SoftwareKind, profile: &Profile) -> bool {
    let limit = 1u64 << profile.number_bits();
    let number_fits = match *kind {
        SoftwareKind::Migration { pfn, .. }
        | SoftwareKind::DeviceExclusive { pfn }
        | SoftwareKind::HwPoison { pfn } => pfn.number() < limit,
        SoftwareKind::DeviceMigration { index, .. } | SoftwareKind::DevicePrivate { index, .. } => {
            index.number() < limit
        }
        SoftwareKind::Swap { .. } | SoftwareKind::Marker(_) => true,
    };
    number_fits && kind.type_number_in(profile.types()).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn every_profile_round_trips(
        profile in profile(),
        kind in software_kind(),
        swap_type in 0..32u8,
        exclusive in any::<bool>(),
        uffd_wp in any::<bool>(),
        level in prop_oneof![Just(Level::L1), Just(Level::L2)],
    ) {
        let kind = match kind {
            SoftwareKind::Swap { offset, .. } => SoftwareKind::Swap {
                swap_type: SwapType::new(swap_type).unwrap(),
                offset,
            },
            other => other,
        };
        let side = SideBits { exclusive, uffd_wp, soft_dirty: false };
        let entry = SoftwareEntry { kind, side };
        let x86 = X86_64::encode_in(&Entry::Software(entry), level, &profile);
        let arm = Aarch64::encode_in(&Entry::Software(entry), level, &profile);
        if fits(&kind, &profile) {
            let raw = x86.unwrap();
            prop_assert_eq!(X86_64::decode_in(raw, level, &profile), Ok(Entry::Software(entry)));
            match arm {
                Ok(raw) => prop_assert_eq!(
                    Aarch64::decode_in(raw, level, &profile),
                    Ok(Entry::Software(entry))
                ),
                // Swap type 0 at offset 0 would be 0 on arm64.
                Err(e) => prop_assert_eq!(e, EncodeError::EncodesAsAbsent),
            }
        } else {
            prop_assert!(x86.is_err() && arm.is_err());
        }
    }

    #[test]
    fn lenient_decode_is_total_and_consistent(
        profile in profile(),
        raw in raw_value(),
        level in prop_oneof![Just(Level::L1), Just(Level::L2), Just(Level::L3)],
    ) {
        fn check<F: PteFormat>(raw: u64, level: Level, profile: &Profile) -> Result<(), TestCaseError> {
            let lenient = F::decode_lenient(raw, level, profile);
            match F::decode_in(raw, level, profile) {
                Ok(entry) => {
                    prop_assert_eq!(lenient.entry, entry);
                    prop_assert_eq!((lenient.unexpected_bits, lenient.strict_error), (0, None));
                }
                Err(e) => {
                    prop_assert_eq!(lenient.strict_error, Some(e));
                    if lenient.unexpected_bits != raw || lenient.entry != Entry::Absent {
                        // The entry is what the bits say once the unexpected ones are
                        // taken out (read at level 1 for a software entry above it).
                        let fixed = raw ^ lenient.unexpected_bits;
                        let at_level = F::decode_in(fixed, level, profile);
                        let at_l1 = F::decode_in(fixed, Level::L1, profile);
                        prop_assert!(
                            at_level == Ok(lenient.entry) || at_l1 == Ok(lenient.entry),
                            "{:?}", lenient
                        );
                    }
                }
            }
            Ok(())
        }
        check::<X86_64>(raw, level, &profile)?;
        check::<Aarch64>(raw, level, &profile)?;
    }
}

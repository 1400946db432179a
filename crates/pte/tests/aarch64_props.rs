//! Property tests of the aarch64 format.

mod common;

use common::*;
use devpriv_pte::arch::aarch64::{
    Aarch64, OUTPUT_ADDRESS_MASK, PageAttributes, Shareability, TableAttributes,
    software::SwapEntryBits,
};
use devpriv_pte::{
    DecodeError, EncodeError, Entry, LeafAttributes, Level, MemoryType, PageProperty, PageSize,
    Pfn, PteFormat, SideBits, SoftwareEntry,
};
use proptest::prelude::*;

fn shareability() -> impl Strategy<Value = Shareability> {
    (0..4u8).prop_map(Shareability::from_bits)
}

fn page_attributes() -> impl Strategy<Value = PageAttributes> {
    (any::<[bool; 11]>(), 0..8u8, shareability(), 0..16u8).prop_map(|(b, indx, sh, sw)| {
        PageAttributes::new()
            .with_attr_indx(indx)
            .with_ns(b[0])
            .with_el0_access(b[1])
            .with_read_only(b[2])
            .with_shareability(sh)
            .with_accessed(b[3])
            .with_not_global(b[4])
            .with_guarded(b[5])
            .with_dbm(b[6])
            .with_contiguous(b[7])
            .with_pxn(b[8])
            .with_uxn(b[9])
            .with_software(sw)
    })
}

fn table_attributes() -> impl Strategy<Value = TableAttributes> {
    (any::<[bool; 6]>(), 0..16u8).prop_map(|(b, sw)| {
        TableAttributes::new()
            .with_accessed(b[0])
            .with_pxn_table(b[1])
            .with_uxn_table(b[2])
            .with_no_el0_table(b[3])
            .with_read_only_table(b[4])
            .with_ns_table(b[5])
            .with_software(sw)
    })
}

fn memory_type() -> impl Strategy<Value = MemoryType> {
    prop_oneof![
        Just(MemoryType::WriteBack),
        Just(MemoryType::WriteCombining),
        Just(MemoryType::Uncached),
        Just(MemoryType::Device),
        Just(MemoryType::WriteThrough),
    ]
}

fn property() -> impl Strategy<Value = PageProperty> {
    (any::<[bool; 6]>(), memory_type()).prop_map(|(b, memory)| PageProperty {
        writable: b[0],
        user: b[1],
        executable: b[2],
        global: b[3],
        accessed: b[4],
        dirty: b[5],
        memory,
    })
}

fn leaf_level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::L1), Just(Level::L2), Just(Level::L3)]
}

fn table_level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::L2), Just(Level::L3), Just(Level::L4)]
}

fn any_level() -> impl Strategy<Value = Level> {
    proptest::sample::select(LEVELS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    #[test]
    fn software_round_trip(entry in software_entry(false), level in prop_oneof![Just(Level::L1), Just(Level::L2)]) {
        let encoded = Aarch64::encode(&Entry::Software(entry), level);
        if entry.kind.type_number() == 0
            && entry.kind.offset() == Ok(0)
            && !entry.side.exclusive
            && !entry.side.uffd_wp
        {
            // All zero bits would read back as an empty slot.
            prop_assert_eq!(encoded, Err(EncodeError::EncodesAsAbsent));
            return Ok(());
        }
        let raw = encoded.unwrap();
        prop_assert_eq!(Aarch64::decode(raw, level), Ok(Entry::Software(entry)));
        // Never valid to the hardware, never PROT_NONE: bits 0, 1 and 11 clear.
        prop_assert_eq!(raw & (1 | 1 << 1 | 1 << 11), 0);
        prop_assert!(!Aarch64::is_valid(raw, level));
        let bits = SwapEntryBits::from_bits(raw);
        prop_assert_eq!(bits.swap_type(), entry.kind.type_number());
        prop_assert_eq!(bits.offset(), entry.kind.offset().unwrap());
        prop_assert_eq!(bits.exclusive(), entry.side.exclusive);
        prop_assert_eq!(bits.uffd_wp(), entry.side.uffd_wp);
    }

    #[test]
    fn soft_dirty_is_unsupported(entry in software_entry(false), level in prop_oneof![Just(Level::L1), Just(Level::L2)]) {
        let entry = SoftwareEntry { side: SideBits { soft_dirty: true, ..entry.side }, ..entry };
        prop_assert_eq!(Aarch64::encode(&Entry::Software(entry), level), Err(EncodeError::UnsupportedAttribute));
    }

    #[test]
    fn software_above_level_2_is_refused(entry in software_entry(false), level in prop_oneof![Just(Level::L3), Just(Level::L4)]) {
        prop_assert_eq!(Aarch64::encode(&Entry::Software(entry), level), Err(EncodeError::KindNotAllowedAtLevel(level)));
        let raw = Aarch64::encode(&Entry::Software(entry), Level::L1).unwrap();
        if raw != 0 {
            prop_assert_eq!(Aarch64::decode(raw, level), Err(DecodeError::SoftwareAtLevel(level)));
        }
    }

    #[test]
    fn oversized_numbers_are_typed_errors((kind, error) in oversized_kind(), level in prop_oneof![Just(Level::L1), Just(Level::L2)]) {
        let entry = Entry::<Aarch64>::Software(SoftwareEntry::new(kind));
        prop_assert_eq!(Aarch64::encode(&entry, level), Err(error));
    }

    #[test]
    fn leaf_round_trip(level in leaf_level(), frame in 0..(1u64 << 36), attrs in page_attributes()) {
        let size = level.leaf_size().unwrap();
        let pfn = Pfn::new(frame & !(size.frames() - 1));
        let entry = Entry::<Aarch64>::Leaf { pfn, size, attrs };
        let raw = Aarch64::encode(&entry, level).unwrap();
        prop_assert!(Aarch64::is_valid(raw, level));
        prop_assert!(Aarch64::is_leaf(raw, level));
        prop_assert_eq!(Aarch64::table_pfn(raw, level), None);
        prop_assert_eq!(raw & 3, if size == PageSize::Size4KiB { 0b11 } else { 0b01 });
        prop_assert_eq!((raw & OUTPUT_ADDRESS_MASK) >> 12, pfn.number());
        prop_assert_eq!(Aarch64::decode(raw, level), Ok(entry));
        if size != PageSize::Size4KiB {
            let e = Entry::<Aarch64>::Leaf { pfn: Pfn::new(pfn.number() | 1), size, attrs };
            prop_assert_eq!(Aarch64::encode(&e, level), Err(EncodeError::UnalignedFrame));
        }
        let e = Entry::<Aarch64>::Leaf { pfn: Pfn::new(pfn.number() | 1 << 36), size, attrs };
        prop_assert_eq!(Aarch64::encode(&e, level), Err(EncodeError::FrameTooLarge));
        let e = Entry::<Aarch64>::Leaf { pfn, size, attrs };
        prop_assert_eq!(Aarch64::encode(&e, Level::L4), Err(EncodeError::KindNotAllowedAtLevel(Level::L4)));
        prop_assert_eq!(Aarch64::encode(&e, Level::L5), Err(EncodeError::NoSuchLevel(Level::L5)));
    }

    #[test]
    fn table_round_trip(level in table_level(), frame in 0..(1u64 << 36), attrs in table_attributes()) {
        let entry = Entry::<Aarch64>::Table { next: Pfn::new(frame), attrs };
        let raw = Aarch64::encode(&entry, level).unwrap();
        prop_assert_eq!(raw & 3, 0b11);
        prop_assert_eq!(Aarch64::table_pfn(raw, level), Some(Pfn::new(frame)));
        prop_assert_eq!(Aarch64::decode(raw, level), Ok(entry));
        prop_assert_eq!(Aarch64::encode(&entry, Level::L1), Err(EncodeError::KindNotAllowedAtLevel(Level::L1)));
    }

    #[test]
    fn property_round_trip(p in property()) {
        let attrs = PageAttributes::from_property(p);
        // A dirty read-only page has no encoding (dirty = DBM with AP[2] clear).
        let expected = PageProperty { dirty: p.dirty && p.writable, ..p };
        prop_assert_eq!(attrs.property(), expected);
        // User pages are never privileged-executable; kernel pages never user-executable.
        let other_xn = if p.user { attrs.pxn() } else { attrs.uxn() };
        prop_assert!(other_xn);
    }

    #[test]
    fn decode_is_total_and_exact(raw in raw_value(), level in any_level()) {
        let decoded = Aarch64::decode(raw, level);
        let leaf = match decoded { Ok(Entry::Leaf { pfn, attrs, .. }) => Some((pfn, attrs)), _ => None };
        prop_assert_eq!(Aarch64::leaf(raw, level), leaf);
        if let Ok(Entry::Table { next, .. }) = decoded {
            prop_assert_eq!(Aarch64::table_pfn(raw, level), Some(next));
        }
        if let Ok(entry) = decoded {
            prop_assert_eq!(Aarch64::encode(&entry, level), Ok(raw), "{:?}", entry);
            prop_assert_eq!(entry.is_present(), Aarch64::is_valid(raw, level));
        }
    }
}

#[test]
fn default_attributes() {
    assert_eq!(
        PageAttributes::default(),
        PageAttributes::from_property(PageProperty::default())
    );
    assert_eq!(PageAttributes::default(), PageAttributes::new());
    assert_eq!(TableAttributes::default().into_bits(), 0);
}

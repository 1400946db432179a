//! Property tests of the x86_64 format.

mod common;

use common::*;
use devpriv_pte::arch::x86_64::{
    ADDRESS_MASK, PageAttributes, TableAttributes, X86_64, software::SwapEntryBits,
};
use devpriv_pte::{
    DecodeError, EncodeError, Entry, LeafAttributes, Level, MemoryType, PageProperty, PageSize,
    Pfn, PteFormat,
};
use proptest::prelude::*;

fn page_attributes() -> impl Strategy<Value = PageAttributes> {
    (any::<[bool; 9]>(), 0..8u8, 0..128u8, 0..16u8).prop_map(|(b, low, high, key)| {
        PageAttributes::new()
            .with_writable(b[0])
            .with_user(b[1])
            .with_write_through(b[2])
            .with_cache_disable(b[3])
            .with_accessed(b[4])
            .with_dirty(b[5])
            .with_pat(b[6])
            .with_global(b[7])
            .with_no_execute(b[8])
            .with_available_low(low)
            .with_available_high(high)
            .with_protection_key(key)
    })
}

fn table_attributes() -> impl Strategy<Value = TableAttributes> {
    (any::<[bool; 8]>(), 0..8u8, 0..2048u16).prop_map(|(b, low, high)| {
        TableAttributes::new()
            .with_writable(b[0])
            .with_user(b[1])
            .with_write_through(b[2])
            .with_cache_disable(b[3])
            .with_accessed(b[4])
            .with_dirty_ignored(b[5])
            .with_global_ignored(b[6])
            .with_no_execute(b[7])
            .with_available_low(low)
            .with_available_high(high)
    })
}

fn memory_type() -> impl Strategy<Value = MemoryType> {
    prop_oneof![
        Just(MemoryType::WriteBack),
        Just(MemoryType::WriteCombining),
        Just(MemoryType::Uncached),
        Just(MemoryType::Device),
        Just(MemoryType::WriteThrough),
        Just(MemoryType::WriteProtect),
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
    prop_oneof![
        Just(Level::L2),
        Just(Level::L3),
        Just(Level::L4),
        Just(Level::L5)
    ]
}

fn any_level() -> impl Strategy<Value = Level> {
    proptest::sample::select(LEVELS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    #[test]
    fn software_round_trip(entry in software_entry(true), level in prop_oneof![Just(Level::L1), Just(Level::L2)]) {
        let raw = X86_64::encode(&Entry::Software(entry), level).unwrap();
        prop_assert_eq!(X86_64::decode(raw, level), Ok(Entry::Software(entry)));
        // Never valid to the hardware: P, PS and PROTNONE clear.
        prop_assert_eq!(raw & (1 | 1 << 7 | 1 << 8), 0);
        prop_assert!(!X86_64::is_valid(raw, level));
        // L1TF: bits 12..51 read as a physical address at or above 2^51.
        prop_assert!(raw & ADDRESS_MASK >= 1 << 51, "{raw:#x}");
        // The bitfield view agrees.
        let bits = SwapEntryBits::from_bits(raw);
        prop_assert_eq!(bits.swap_type(), entry.kind.type_number());
        prop_assert_eq!(bits.offset(), entry.kind.offset().unwrap());
        prop_assert_eq!(bits.exclusive(), entry.side.exclusive);
        prop_assert_eq!(bits.uffd_wp(), entry.side.uffd_wp);
        prop_assert_eq!(bits.soft_dirty(), entry.side.soft_dirty);
    }

    #[test]
    fn software_above_level_2_is_refused(entry in software_entry(true), level in prop_oneof![Just(Level::L3), Just(Level::L4), Just(Level::L5)]) {
        prop_assert_eq!(X86_64::encode(&Entry::Software(entry), level), Err(EncodeError::KindNotAllowedAtLevel(level)));
        let raw = X86_64::encode(&Entry::Software(entry), Level::L1).unwrap();
        prop_assert_eq!(X86_64::decode(raw, level), Err(DecodeError::SoftwareAtLevel(level)));
    }

    #[test]
    fn oversized_numbers_are_typed_errors((kind, error) in oversized_kind(), level in prop_oneof![Just(Level::L1), Just(Level::L2)]) {
        let entry = Entry::<X86_64>::Software(devpriv_pte::SoftwareEntry::new(kind));
        prop_assert_eq!(X86_64::encode(&entry, level), Err(error));
    }

    #[test]
    fn erratum_bits_are_ignored(entry in software_entry(true), ad in 0..4u64) {
        let raw = X86_64::encode(&Entry::Software(entry), Level::L1).unwrap();
        prop_assert_eq!(X86_64::decode(raw | ad << 5, Level::L1), Ok(Entry::Software(entry)));
        prop_assert_eq!(X86_64::decode(ad << 5, Level::L1), Ok(Entry::Absent));
    }

    #[test]
    fn leaf_round_trip(level in leaf_level(), frame in 0..(1u64 << 40), attrs in page_attributes()) {
        let size = level.leaf_size().unwrap();
        let pfn = Pfn::new(frame & !(size.frames() - 1));
        let entry = Entry::<X86_64>::Leaf { pfn, size, attrs };
        let raw = X86_64::encode(&entry, level).unwrap();
        prop_assert!(X86_64::is_valid(raw, level));
        prop_assert!(X86_64::is_leaf(raw, level));
        prop_assert_eq!(X86_64::table_pfn(raw, level), None);
        prop_assert_eq!(X86_64::decode(raw, level), Ok(entry));
        // PAT sits at bit 7 in a 4 KiB leaf and at bit 12 in a huge one; PS only there.
        match size {
            PageSize::Size4KiB => prop_assert_eq!(raw >> 7 & 1 != 0, attrs.pat()),
            _ => {
                prop_assert!(raw & 1 << 7 != 0);
                prop_assert_eq!(raw >> 12 & 1 != 0, attrs.pat());
            }
        }
        // Other sizes at this level are refused, as is misalignment or a wide frame.
        for other in [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB] {
            if other != size {
                let e = Entry::<X86_64>::Leaf { pfn, size: other, attrs };
                prop_assert_eq!(X86_64::encode(&e, level), Err(EncodeError::SizeMismatch { level, size: other }));
            }
        }
        if size != PageSize::Size4KiB {
            let e = Entry::<X86_64>::Leaf { pfn: Pfn::new(pfn.number() | 1), size, attrs };
            prop_assert_eq!(X86_64::encode(&e, level), Err(EncodeError::UnalignedFrame));
        }
        let e = Entry::<X86_64>::Leaf { pfn: Pfn::new(pfn.number() | 1 << 40), size, attrs };
        prop_assert_eq!(X86_64::encode(&e, level), Err(EncodeError::FrameTooLarge));
    }

    #[test]
    fn no_leaf_above_level_3(level in prop_oneof![Just(Level::L4), Just(Level::L5)], attrs in page_attributes()) {
        let e = Entry::<X86_64>::Leaf { pfn: Pfn::new(0), size: PageSize::Size1GiB, attrs };
        prop_assert_eq!(X86_64::encode(&e, level), Err(EncodeError::KindNotAllowedAtLevel(level)));
    }

    #[test]
    fn table_round_trip(level in table_level(), frame in 0..(1u64 << 40), attrs in table_attributes()) {
        let entry = Entry::<X86_64>::Table { next: Pfn::new(frame), attrs };
        let raw = X86_64::encode(&entry, level).unwrap();
        prop_assert_eq!(raw & 1 << 7, 0);
        prop_assert_eq!(X86_64::table_pfn(raw, level), Some(Pfn::new(frame)));
        prop_assert!(!X86_64::is_leaf(raw, level));
        prop_assert_eq!(X86_64::decode(raw, level), Ok(entry));
        prop_assert_eq!(X86_64::encode(&entry, Level::L1), Err(EncodeError::KindNotAllowedAtLevel(Level::L1)));
    }

    #[test]
    fn property_round_trip(p in property()) {
        let attrs = PageAttributes::from_property(p);
        prop_assert_eq!(attrs.property(), p);
    }

    #[test]
    fn decode_is_total_and_exact(raw in raw_value(), level in any_level()) {
        let decoded = X86_64::decode(raw, level);
        let leaf = match decoded { Ok(Entry::Leaf { pfn, attrs, .. }) => Some((pfn, attrs)), _ => None };
        prop_assert_eq!(X86_64::leaf(raw, level), leaf);
        let table = match decoded { Ok(Entry::Table { next, .. }) => Some(next), _ => None };
        prop_assert_eq!(X86_64::table_pfn(raw, level), table);
        if let Ok(entry) = decoded {
            // A and D mean nothing in a software entry (hardware may set them) and are
            // dropped; a PROT_NONE entry keeps them.
            let keeps_ad = raw & 1 != 0 || matches!(entry, Entry::ProtNone { .. });
            let mut expected = if keeps_ad { raw } else { raw & !0x60 };
            // An invalidated huge entry (P clear, PS set) re-encodes as PROT_NONE.
            if matches!(entry, Entry::ProtNone { .. }) && level != Level::L1 {
                expected |= 0x100;
            }
            prop_assert_eq!(X86_64::encode(&entry, level), Ok(expected), "{:?}", entry);
            prop_assert_eq!(entry.is_present(), X86_64::is_valid(raw, level));
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
    let t = TableAttributes::default();
    assert!(t.writable() && t.user() && !t.no_execute());
}

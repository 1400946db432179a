//! Conversions to and from the `x86_64` crate's paging types.

use ::x86_64::PhysAddr;
use ::x86_64::structures::paging::{PageTableFlags, PhysFrame, Size1GiB, Size2MiB, Size4KiB};
use devpriv_pte::arch::x86_64::conv::{ConversionError, page_table_entry, raw_of};
use devpriv_pte::arch::x86_64::{PageAttributes, TableAttributes, X86_64};
use devpriv_pte::{EncodeError, Entry, Level, PageSize, Pfn, PteFormat};
use proptest::prelude::*;

fn attrs() -> impl Strategy<Value = PageAttributes> {
    // Any leaf attribute bits: everything but P and the address.
    any::<u64>().prop_map(|b| PageAttributes::from_bits(b & !0x000f_ffff_ffff_f001))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn raw_round_trip(raw in any::<u64>(), level in 1..=5u8) {
        let pte = page_table_entry(raw);
        prop_assert_eq!(raw_of(&pte), raw);
        let level = Level::from_number(level).unwrap();
        prop_assert_eq!(X86_64::decode_page_table_entry(&pte, level), X86_64::decode(raw, level));
        if let Ok(entry) = X86_64::decode(raw, level) {
            let back = X86_64::encode_page_table_entry(&entry, level).unwrap();
            prop_assert_eq!(raw_of(&back), X86_64::encode(&entry, level).unwrap());
        }
    }

    #[test]
    fn four_kib_leaf_frame_and_flags(frame in 0..(1u64 << 40), a in attrs()) {
        let entry = Entry::<X86_64>::Leaf { pfn: Pfn::new(frame), size: PageSize::Size4KiB, attrs: a };
        let (f, flags) = X86_64::leaf_to_frame::<Size4KiB>(&entry).unwrap();
        prop_assert_eq!(f.start_address().as_u64(), frame << 12);
        // PAT is bit 7, which the x86_64 crate calls HUGE_PAGE.
        prop_assert_eq!(flags.contains(PageTableFlags::HUGE_PAGE), a.pat());
        prop_assert_eq!(X86_64::leaf_from_frame(f, flags), Ok(entry));
        // The same bits as the raw encoding.
        let mut pte = ::x86_64::structures::paging::page_table::PageTableEntry::new();
        pte.set_frame(PhysFrame::<Size4KiB>::from_start_address(PhysAddr::new(frame << 12)).unwrap(), flags - PageTableFlags::HUGE_PAGE);
        let raw = X86_64::encode(&entry, Level::L1).unwrap();
        prop_assert_eq!(raw_of(&pte) | (flags & PageTableFlags::HUGE_PAGE).bits(), raw);
    }

    #[test]
    fn huge_leaf_frame_and_flags(frame in 0..(1u64 << 31), a in attrs()) {
        let a = a.with_pat(false);
        let pfn = Pfn::new(frame << 9);
        let entry = Entry::<X86_64>::Leaf { pfn, size: PageSize::Size2MiB, attrs: a };
        let (f, flags) = X86_64::leaf_to_frame::<Size2MiB>(&entry).unwrap();
        prop_assert!(flags.contains(PageTableFlags::HUGE_PAGE | PageTableFlags::PRESENT));
        prop_assert_eq!(Pfn::from(f), pfn);
        prop_assert_eq!(X86_64::leaf_from_frame(f, flags), Ok(entry));
        prop_assert_eq!(flags.bits() | f.start_address().as_u64(), X86_64::encode(&entry, Level::L2).unwrap());
        prop_assert_eq!(X86_64::leaf_to_frame::<Size1GiB>(&entry), Err(ConversionError::SizeMismatch));
        let with_pat = Entry::<X86_64>::Leaf { pfn, size: PageSize::Size2MiB, attrs: a.with_pat(true) };
        prop_assert_eq!(X86_64::leaf_to_frame::<Size2MiB>(&with_pat), Err(ConversionError::PatNotExpressible));
    }

    #[test]
    fn table_frame_and_flags(frame in 0..(1u64 << 40), bits in any::<u64>()) {
        let attrs = TableAttributes::from_bits(bits & !0x000f_ffff_ffff_f081);
        let entry = Entry::<X86_64>::Table { next: Pfn::new(frame), attrs };
        let (f, flags) = X86_64::table_to_frame(&entry).unwrap();
        prop_assert_eq!(flags.bits() | f.start_address().as_u64(), X86_64::encode(&entry, Level::L4).unwrap());
        prop_assert_eq!(X86_64::table_from_frame(f, flags), Ok(entry));
    }
}

#[test]
fn frames_and_errors() {
    assert_eq!(
        PhysFrame::<Size2MiB>::try_from(Pfn::new(1)),
        Err(EncodeError::UnalignedFrame)
    );
    assert_eq!(
        PhysFrame::<Size4KiB>::try_from(Pfn::new(1 << 40)),
        Err(EncodeError::FrameTooLarge)
    );
    let f = PhysFrame::<Size1GiB>::try_from(Pfn::new(1 << 18)).unwrap();
    assert_eq!(f.start_address().as_u64(), 1 << 30);
    assert_eq!(Pfn::from(f), Pfn::new(1 << 18));
    assert_eq!(
        PageAttributes::from_flags(PageTableFlags::WRITABLE, PageSize::Size4KiB),
        Err(ConversionError::NotPresent)
    );
    assert_eq!(
        TableAttributes::from_flags(PageTableFlags::PRESENT | PageTableFlags::HUGE_PAGE),
        Err(ConversionError::WrongKind)
    );
    assert_eq!(
        X86_64::leaf_to_frame::<Size4KiB>(&Entry::Absent),
        Err(ConversionError::NotPresent)
    );
    let table = Entry::<X86_64>::Table {
        next: Pfn::new(5),
        attrs: TableAttributes::default(),
    };
    assert_eq!(
        X86_64::leaf_to_frame::<Size4KiB>(&table),
        Err(ConversionError::WrongKind)
    );
}

/// `PROPTEST_CASES` if set (Miri runs a handful), else 1024.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

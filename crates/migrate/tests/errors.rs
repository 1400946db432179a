//! Bad input is a typed error, and changes nothing.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{PageSize, Pfn};

fn setup_err(
    w: &World<X86_64>,
    start: u64,
    end: u64,
    src_len: usize,
    dst_len: usize,
) -> SetupError {
    let mut src = vec![MigratePfn::EMPTY; src_len];
    let mut dst = vec![MigratePfn::EMPTY; dst_len];
    Migration::setup(MigrateVma {
        address_space: w.space,
        start,
        end,
        select: Select::SYSTEM,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .err()
    .unwrap()
}

#[test]
fn setup_errors() {
    let w = world::<X86_64>(16, 64);
    w.populate(BASE, 4 * KIB4, false);
    assert_eq!(
        setup_err(&w, BASE + 8, BASE + KIB4, 1, 1),
        SetupError::Unaligned { value: BASE + 8 }
    );
    assert_eq!(
        setup_err(&w, BASE, BASE + 12, 1, 1),
        SetupError::Unaligned { value: BASE + 12 }
    );
    assert_eq!(setup_err(&w, BASE, BASE, 0, 0), SetupError::EmptyRange);
    assert_eq!(
        setup_err(&w, BASE + KIB4, BASE, 0, 0),
        SetupError::EmptyRange
    );
    assert_eq!(
        setup_err(&w, BASE, BASE + 2 * KIB4, 1, 2),
        SetupError::SliceLength {
            pages: 2,
            src: 1,
            dst: 2
        }
    );
    assert_eq!(
        setup_err(&w, BASE, BASE + 2 * KIB4, 2, 3),
        SetupError::SliceLength {
            pages: 2,
            src: 2,
            dst: 3
        }
    );
    assert_eq!(
        setup_err(&w, BASE - KIB4, BASE, 1, 1),
        SetupError::OutsideVma { va: BASE - KIB4 }
    );
    assert_eq!(
        setup_err(&w, BASE + REGION - KIB4, BASE + REGION + KIB4, 2, 2),
        SetupError::OutsideVma { va: BASE + REGION }
    );
    // Nothing was collected by the failed calls.
    w.check_pattern(BASE, 4 * KIB4);
    // Every error prints as a sentence.
    let text = SetupError::Unaligned { value: 0x1234 }.to_string();
    assert!(text.contains("0x1234"), "{text}");
}

#[test]
fn fault_page_errors() {
    let w = world::<X86_64>(1024, 64);
    w.populate(BASE, 4 * KIB4, false);
    w.to_device(w.device, BASE, 4 * KIB4, false);
    // A driver that misuses its fault page gets a typed error at setup.
    struct Misuse;
    impl DeviceDriver<P<X86_64>> for Misuse {
        fn migrate_to_ram(
            &self,
            fault: &mut CpuFault<'_, '_, P<X86_64>>,
        ) -> Result<(), FaultError> {
            let space = fault.address_space();
            let address = fault.address();
            let mut src = vec![MigratePfn::EMPTY; 1];
            let mut dst = vec![MigratePfn::EMPTY; 1];
            let outside = Migration::setup(MigrateVma {
                address_space: space,
                start: (address + 2 * KIB4) & !0xfff,
                end: (address + 3 * KIB4) & !0xfff,
                select: Select::DEVICE_PRIVATE,
                owner: devpriv_pagemap::Owner::new(1),
                fault: Some(fault.page()),
                src: &mut src,
                dst: &mut dst,
            });
            assert!(matches!(
                outside.err(),
                Some(SetupError::FaultOutsideRange { .. })
            ));
            let unselected = Migration::setup(MigrateVma {
                address_space: space,
                start: address & !0xfff,
                end: (address & !0xfff) + KIB4,
                select: Select::SYSTEM,
                owner: devpriv_pagemap::Owner::new(1),
                fault: Some(fault.page()),
                src: &mut src,
                dst: &mut dst,
            });
            assert_eq!(unselected.err(), Some(SetupError::FaultPageNotSelected));
            let other_owner = Migration::setup(MigrateVma {
                address_space: space,
                start: address & !0xfff,
                end: (address & !0xfff) + KIB4,
                select: Select::DEVICE_PRIVATE,
                owner: devpriv_pagemap::Owner::new(2),
                fault: Some(fault.page()),
                src: &mut src,
                dst: &mut dst,
            });
            assert_eq!(
                other_owner.err(),
                Some(SetupError::OwnerMismatch {
                    page: devpriv_pagemap::Owner::new(1),
                    migration: devpriv_pagemap::Owner::new(2)
                })
            );
            // Lend it once, then try to lend it again.
            let mut src2 = vec![MigratePfn::EMPTY; 1];
            let mut dst2 = vec![MigratePfn::EMPTY; 1];
            let first = Migration::setup(MigrateVma {
                address_space: space,
                start: address & !0xfff,
                end: (address & !0xfff) + KIB4,
                select: Select::DEVICE_PRIVATE,
                owner: devpriv_pagemap::Owner::new(1),
                fault: Some(fault.page()),
                src: &mut src2,
                dst: &mut dst2,
            })
            .unwrap();
            assert_eq!(first.migrating(), 1);
            drop(first);
            assert!(
                fault.page().folio().is_some(),
                "the fault page is back after the drop"
            );
            Err(FaultError::BusError)
        }
    }
    // Re-register the device's driver: use a fresh pagemap with the misusing driver.
    let meta: &'static mut [devpriv_pagemap::PageMeta] =
        Box::leak((0..16).map(|_| devpriv_pagemap::PageMeta::new()).collect());
    let device: &'static Device = w.device;
    let pm: &'static devpriv_pagemap::DevicePagemap<'static> = Box::leak(Box::new(
        devpriv_pagemap::DevicePagemap::new(16, devpriv_pagemap::Owner::new(1), device, meta)
            .unwrap(),
    ));
    w.devices.register(pm, Box::leak(Box::new(Misuse))).unwrap();
    w.populate(BASE + MIB2, KIB4, false);
    let mut src = vec![MigratePfn::EMPTY; 1];
    let mut dst = vec![MigratePfn::EMPTY; 1];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE + MIB2,
        end: BASE + MIB2 + KIB4,
        select: Select::SYSTEM,
        owner: devpriv_pagemap::Owner::new(1),
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    m.set_device_destination(0, pm.alloc_locked(PageSize::Size4KiB).unwrap())
        .unwrap();
    m.pages().finalize();
    assert_eq!(
        handle_fault(w.space, BASE + MIB2, false),
        Err(FaultError::BusError)
    );
}

#[test]
fn destination_errors() {
    let w = world::<X86_64>(2048, 4096);
    w.populate(BASE, 4 * KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    // Page 2 is on the device already: a mapped folio.
    w.to_device(w.device, BASE + 2 * KIB4, KIB4, false);
    let mapped = w.device.pagemap().allocated_folios().next().unwrap();
    let mut src = vec![MigratePfn::EMPTY; 1024];
    let mut dst = vec![MigratePfn::EMPTY; 1024];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + 2 * MIB2,
        select: Select::SYSTEM | Select::COMPOUND,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    let pm = w.device.pagemap();
    // Out of range.
    let (f, e) = m
        .set_device_destination(1024, pm.alloc_locked(PageSize::Size4KiB).unwrap())
        .unwrap_err();
    assert_eq!(
        e,
        DestinationError::IndexOutOfRange {
            index: 1024,
            pages: 1024
        }
    );
    // Page 2 is device-private (not selected): not migrating.
    let (f, e) = m.set_device_destination(2, f).unwrap_err();
    assert_eq!(e, DestinationError::NotMigrating { index: 2 });
    // Inside the collected 2 MiB page: allowed (it will be split).
    m.set_device_destination(512 + 7, f).unwrap();
    // A folio that is mapped elsewhere would be shared: refused.
    let shared = mapped.head().try_get().unwrap().trylock().unwrap();
    let (shared, e) = m.set_device_destination(0, shared).unwrap_err();
    assert_eq!(e, DestinationError::InUse);
    drop(shared);
    // A folio of a pagemap the device memory does not know.
    struct Nobody;
    impl devpriv_pagemap::PagemapOps for Nobody {
        fn folio_free(&self, _: devpriv_pagemap::Folio<'_>) {}
    }
    let meta: &'static mut [devpriv_pagemap::PageMeta] =
        Box::leak((0..4).map(|_| devpriv_pagemap::PageMeta::new()).collect());
    let foreign: &'static devpriv_pagemap::DevicePagemap<'static> = Box::leak(Box::new(
        devpriv_pagemap::DevicePagemap::new(4, devpriv_pagemap::Owner::new(77), &Nobody, meta)
            .unwrap(),
    ));
    let elsewhere: &'static devpriv_pagemap::DevicePrivateSpace<'static> =
        Box::leak(Box::new(devpriv_pagemap::DevicePrivateSpace::new()));
    elsewhere.register(foreign).unwrap();
    let (_, e) = m
        .set_device_destination(0, foreign.alloc_locked(PageSize::Size4KiB).unwrap())
        .unwrap_err();
    assert_eq!(e, DestinationError::ForeignPagemap);
    // System frames: aligned to their size, no 1 GiB.
    use devpriv_migrate::SystemMemory;
    let frame = w.ram.allocate(PageSize::Size4KiB).unwrap();
    assert_eq!(
        m.set_system_destination(512, frame, PageSize::Size2MiB),
        Err(DestinationError::UnalignedFrame { pfn: frame })
    );
    assert_eq!(
        m.set_system_destination(512, Pfn::new(0), PageSize::Size1GiB),
        Err(DestinationError::UnsupportedSize(PageSize::Size1GiB))
    );
    m.set_system_destination(0, frame, PageSize::Size4KiB)
        .unwrap();
    // Declining releases what was set.
    m.decline(0);
    m.decline(512 + 7);
    assert_eq!(m.dst()[0], MigratePfn::EMPTY);
    drop(m);
    assert!(!w.ram.is_allocated(frame));
    assert_eq!(pm.allocated_pages(), 1);
    w.check_pattern(BASE, 4 * KIB4);
    w.check_pattern(BASE + MIB2, MIB2);
    w.assert_quiescent();
}

/// A 2 MiB destination for a 4 KiB source fails that page (Linux's rule), and the
/// page stays where it was.
#[test]
fn a_large_destination_for_a_small_page_fails_it() {
    let w = world::<X86_64>(2048, 4096);
    w.populate(BASE, KIB4, false);
    let mut src = vec![MigratePfn::EMPTY; 1];
    let mut dst = vec![MigratePfn::EMPTY; 1];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + KIB4,
        select: Select::SYSTEM,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    m.set_device_destination(
        0,
        w.device.pagemap().alloc_locked(PageSize::Size2MiB).unwrap(),
    )
    .unwrap();
    let m = m.pages();
    assert!(!m.src()[0].is_migrating());
    let s = m.finalize();
    assert_eq!((s.migrated, s.restored), (0, 1));
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    w.check_pattern(BASE, KIB4);
}

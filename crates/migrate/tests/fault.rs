//! The CPU fault path: outcomes, waiting, and many CPUs faulting on one page.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use devpriv_migrate::*;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, Level, PageSize};

#[test]
fn outcomes() {
    let w = world::<X86_64>(4096, 4096);
    // Nothing mapped, a present page, an address outside the table: not ours.
    assert_eq!(
        handle_fault(w.space, BASE, false),
        Ok(FaultOutcome::NotDevicePrivate)
    );
    w.populate(BASE, 4 * KIB4, false);
    assert_eq!(
        handle_fault(w.space, BASE, true),
        Ok(FaultOutcome::NotDevicePrivate)
    );
    assert_eq!(
        handle_fault(w.space, 1 << 62, false),
        Ok(FaultOutcome::NotDevicePrivate)
    );
    w.to_device(w.device, BASE, 4 * KIB4, false);
    assert_eq!(
        handle_fault(w.space, BASE + 8, false),
        Ok(FaultOutcome::Resolved)
    );
    assert!(matches!(
        w.space.read().lookup(BASE).unwrap(),
        (Level::L1, Entry::Leaf { .. })
    ));
    assert_eq!(w.device.faults.load(Ordering::Relaxed), 1);
    // A folio someone else holds locked: wait for it.
    let index = match w.space.read().lookup(BASE + KIB4).unwrap().1 {
        Entry::Software(sw) => match sw.kind {
            devpriv_pte::SoftwareKind::DevicePrivate { index, .. } => index,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let page = w.devices.lookup(index).unwrap();
    let held = page.try_get().unwrap().trylock().unwrap();
    match handle_fault(w.space, BASE + KIB4, false) {
        Ok(FaultOutcome::Wait(WaitFor::DeviceFolio(f))) => {
            assert_eq!(f, held.folio());
            assert!(FaultOutcome::Wait(WaitFor::DeviceFolio(f)) != FaultOutcome::Resolved);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.device.faults.load(Ordering::Relaxed),
        1,
        "no migration while locked"
    );
    drop(held);
    assert_eq!(
        handle_fault(w.space, BASE + KIB4, false),
        Ok(FaultOutcome::Resolved)
    );
    // A migration entry: wait for the page.
    let mut src = vec![MigratePfn::EMPTY; 1];
    let mut dst = vec![MigratePfn::EMPTY; 1];
    let m = Migration::setup(MigrateVma {
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
    let Some(PageTarget::System(pfn)) = m.src()[0].target() else {
        panic!()
    };
    assert_eq!(
        handle_fault(w.space, BASE, false),
        Ok(FaultOutcome::Wait(WaitFor::SystemFrame(pfn)))
    );
    drop(m);
    w.check_pattern(BASE, 4 * KIB4);
    w.assert_quiescent();
}

/// A driver that cannot bring the page back makes the fault a bus error.
#[test]
fn a_failing_driver_is_a_bus_error() {
    struct Refuses;
    impl DeviceDriver<P<X86_64>> for Refuses {
        fn migrate_to_ram(&self, _: &mut CpuFault<'_, '_, P<X86_64>>) -> Result<(), FaultError> {
            Err(FaultError::BusError)
        }
    }
    let w = world::<X86_64>(4096, 4096);
    // A third pagemap with a driver that refuses.
    let device: &'static Device = w.device;
    let meta: &'static mut [devpriv_pagemap::PageMeta] =
        Box::leak((0..512).map(|_| devpriv_pagemap::PageMeta::new()).collect());
    let pm: &'static devpriv_pagemap::DevicePagemap<'static> = Box::leak(Box::new(
        devpriv_pagemap::DevicePagemap::new(512, devpriv_pagemap::Owner::new(9), device, meta)
            .unwrap(),
    ));
    w.devices
        .register(pm, Box::leak(Box::new(Refuses)))
        .unwrap();
    w.populate(BASE, KIB4, false);
    let mut src = vec![MigratePfn::EMPTY; 1];
    let mut dst = vec![MigratePfn::EMPTY; 1];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + KIB4,
        select: Select::SYSTEM,
        owner: devpriv_pagemap::Owner::new(9),
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    m.set_device_destination(0, pm.alloc_locked(PageSize::Size4KiB).unwrap())
        .unwrap();
    m.pages().finalize();
    assert_eq!(
        handle_fault(w.space, BASE, false),
        Err(FaultError::BusError)
    );
    assert!(matches!(
        w.cpu().read(BASE),
        Err(model::CpuError::Bus { .. })
    ));
    // The fault path let go of the page.
    assert_eq!(pm.allocated_pages(), 1);
    assert!(!pm.allocated_folios().next().unwrap().is_locked());
}

/// Many CPUs fault on the same device pages at once: each page migrates exactly once,
/// every CPU reads the right bytes.
#[test]
fn many_cpus_fault_on_the_same_pages() {
    for round in 0..20 {
        let w = world::<X86_64>(4096, 8192);
        let pages = 64u64;
        w.populate(BASE, pages * KIB4, false);
        w.populate(BASE + MIB2, MIB2, true);
        w.to_device(w.device, BASE, pages * KIB4, false);
        w.to_device(w.device, BASE + MIB2, MIB2, true);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let w = &w;
                s.spawn(move || {
                    let cpu = w.cpu();
                    for k in 0..pages {
                        let page = (k + t * 7 + round) % pages;
                        let va = BASE + page * KIB4;
                        assert_eq!(cpu.read(va + 8).unwrap(), pattern(page, 1));
                    }
                    let va = BASE + MIB2 + ((t * 97) % 512) * KIB4;
                    assert_eq!(cpu.read(va).unwrap(), pattern((va - BASE) / KIB4, 0));
                });
            }
        });
        // One migration per 4 KiB page, one for the 2 MiB folio.
        assert_eq!(w.device.faults.load(Ordering::Relaxed), pages as usize + 1);
        assert_eq!(w.device.pagemap().allocated_pages(), 0);
        w.check_pattern(BASE, pages * KIB4);
        w.assert_quiescent();
    }
}

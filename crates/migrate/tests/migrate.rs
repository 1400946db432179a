//! Migrations end to end on the software MMU: data, entries, references, frames.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, Level, SoftwareEntry, SoftwareKind};

fn entry_kind<F: PagingFormat>(w: &World<F>, va: u64) -> (Level, Entry<F>) {
    w.space.read().lookup(va).unwrap()
}

fn to_device_and_back<F: PagingFormat>(huge: bool, compound: bool) {
    let w = world::<F>(4096, 8192);
    let len = 4 * MIB2;
    w.populate(BASE, len, huge);
    let ram_before = w.ram.live_frames();
    let summary = w.to_device(w.device, BASE, len, compound);
    assert_eq!(summary.migrated, len / KIB4);
    assert_eq!(w.device.pagemap().allocated_pages(), len / KIB4);
    // The RAM went back.
    assert_eq!(w.ram.live_frames(), ram_before - (len / KIB4) as usize);
    let (level, entry) = entry_kind(&w, BASE + 5 * KIB4);
    assert!(matches!(
        entry,
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { .. },
            ..
        })
    ));
    assert_eq!(level, if compound { Level::L2 } else { Level::L1 });
    // Touch every page from the CPU: each fault brings it back.
    w.check_pattern(BASE, len);
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    assert_eq!(
        w.device.freed.load(std::sync::atomic::Ordering::Relaxed) as u64,
        len / KIB4
    );
    assert_eq!(w.ram.live_frames(), ram_before);
    w.assert_quiescent();
}

#[test]
fn small_pages_to_device_and_back_x86_64() {
    to_device_and_back::<X86_64>(false, false);
}

#[test]
fn small_pages_to_device_and_back_aarch64() {
    to_device_and_back::<Aarch64>(false, false);
}

#[test]
fn huge_pages_to_device_and_back_x86_64() {
    to_device_and_back::<X86_64>(true, true);
}

#[test]
fn huge_pages_split_on_the_way_x86_64() {
    to_device_and_back::<X86_64>(true, false);
}

#[test]
fn huge_pages_to_device_and_back_aarch64() {
    to_device_and_back::<Aarch64>(true, true);
}

fn is_device_private<F: PagingFormat>(e: &Entry<F>) -> bool {
    matches!(
        e,
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { .. },
            ..
        })
    )
}

/// Holes of an anonymous region are populated with device pages; the CPU then reads
/// zeros. A 2 MiB-aligned empty range is one 2 MiB hole with COMPOUND.
fn holes<F: PagingFormat>(compound: bool) {
    let w = world::<F>(4096, 4096);
    let mut src = vec![MigratePfn::EMPTY; 1024];
    let mut dst = vec![MigratePfn::EMPTY; 1024];
    let mut select = Select::SYSTEM;
    if compound {
        select |= Select::COMPOUND;
    }
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + 2 * MIB2,
        select,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    if compound {
        assert!(m.src()[0].is_hole() && m.src()[0].is_compound());
        assert!(m.src()[1..512].iter().all(|s| *s == MigratePfn::EMPTY));
        assert!(m.src()[512].is_hole() && m.src()[512].is_compound());
    } else {
        assert!(m.src().iter().all(|s| s.is_hole() && !s.is_compound()));
    }
    assert_eq!(m.migrating(), 1024);
    let pm = w.device.pagemap();
    let words: Vec<_> = m.src().to_vec();
    for (i, s) in words.iter().enumerate() {
        if s.is_migrating() {
            let f = pm.alloc_locked(s.size()).unwrap();
            w.device.clear(f.index(), f.size());
            m.set_device_destination(i, f).unwrap();
        }
    }
    let summary = m.pages().finalize();
    assert_eq!(summary.populated, 1024);
    let (level, e) = entry_kind(&w, BASE + 3 * KIB4);
    assert!(is_device_private(&e));
    assert_eq!(level, if compound { Level::L2 } else { Level::L1 });
    assert_eq!(pm.allocated_pages(), 1024);
    let cpu = w.cpu();
    for va in (BASE..BASE + 2 * MIB2).step_by(64 * KIB4 as usize) {
        assert_eq!(cpu.read(va + 8).unwrap(), 0);
    }
    // Write, unmap: the device pages that remain go back to the pagemap.
    cpu.write(BASE, 7).unwrap();
    w.unmap(w.space, BASE, 2 * MIB2);
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(w.ram.live_frames(), 0);
    w.assert_quiescent();
}

#[test]
fn holes_x86_64() {
    holes::<X86_64>(false);
}

#[test]
fn compound_holes_x86_64() {
    holes::<X86_64>(true);
}

#[test]
fn compound_holes_aarch64() {
    holes::<Aarch64>(true);
}

/// A fault on one page of a 2 MiB device folio, with a driver that moves only that
/// page: the folio and its entry are split, the other 511 pages stay on the device.
fn fault_splits_a_device_folio<F: PagingFormat>() {
    let w = world::<F>(4096, 4096);
    w.populate(BASE, MIB2, true);
    w.to_device(w.device, BASE, MIB2, true);
    *w.device.policy.lock().unwrap() = FaultPolicy::Page;
    let va = BASE + 300 * KIB4;
    let page = (va - BASE) / KIB4;
    assert_eq!(w.cpu().read(va + 16).unwrap(), pattern(page, 2));
    assert_eq!(
        w.device
            .split_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(matches!(
        entry_kind(&w, va),
        (Level::L1, Entry::Leaf { .. })
    ));
    let (level, e) = entry_kind(&w, va + KIB4);
    assert_eq!(level, Level::L1);
    assert!(is_device_private(&e));
    assert_eq!(w.device.pagemap().allocated_pages(), 511);
    w.check_pattern(BASE, MIB2);
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    w.assert_quiescent();
}

#[test]
fn fault_splits_a_device_folio_x86_64() {
    fault_splits_a_device_folio::<X86_64>();
}

#[test]
fn fault_splits_a_device_folio_aarch64() {
    fault_splits_a_device_folio::<Aarch64>();
}

/// A 2 MiB system allocation failure on the way back: the driver gives 512 4 KiB
/// destinations and the 2 MiB source is split in the middle of the migration.
fn split_on_the_way_back<F: PagingFormat>() {
    let w = world::<F>(4096, 4096);
    w.populate(BASE, MIB2, true);
    w.to_device(w.device, BASE, MIB2, true);
    w.ram.fail_large_allocations(u32::MAX);
    w.check_pattern(BASE, MIB2);
    assert_eq!(
        w.device
            .split_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(matches!(
        entry_kind(&w, BASE),
        (Level::L1, Entry::Leaf { .. })
    ));
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    w.ram.fail_large_allocations(0);
    w.assert_quiescent();
}

#[test]
fn split_on_the_way_back_x86_64() {
    split_on_the_way_back::<X86_64>();
}

#[test]
fn split_on_the_way_back_aarch64() {
    split_on_the_way_back::<Aarch64>();
}

/// A 2 MiB device allocation failure on the way out: 4 KiB device destinations split
/// the 2 MiB system page at commit.
#[test]
fn device_allocation_failure_splits_at_commit() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, MIB2, true);
    w.device.pagemap().inject_alloc_failures(
        devpriv_pte::PageSize::Size2MiB,
        devpriv_pagemap::AllocFailures::Always,
    );
    let summary = w.to_device(w.device, BASE, MIB2, true);
    assert_eq!(summary.migrated, 512);
    let (level, e) = entry_kind(&w, BASE + 7 * KIB4);
    assert_eq!(level, Level::L1);
    assert!(is_device_private(&e));
    // The 2 MiB frame was split and its pieces freed one by one.
    assert_eq!(w.ram.live_frames(), 0);
    w.check_pattern(BASE, MIB2);
    w.assert_quiescent();
}

/// Pages the driver declines keep their entries exactly; nothing is leaked.
fn declined_pages_are_restored<F: PagingFormat>() {
    let w = world::<F>(4096, 4096);
    w.populate(BASE, 8 * KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    let before: Vec<_> = [BASE, BASE + 5 * KIB4, BASE + MIB2]
        .iter()
        .map(|&va| w.space.read().slot(va, entry_kind(&w, va).0).unwrap().raw())
        .collect();
    let mut src = vec![MigratePfn::EMPTY; 1024];
    let mut dst = vec![MigratePfn::EMPTY; 1024];
    let m = Migration::setup(MigrateVma {
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
    assert_eq!(m.migrating(), 1024);
    assert!(matches!(
        entry_kind(&w, BASE),
        (
            Level::L1,
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::Migration { .. },
                ..
            })
        )
    ));
    let summary = m.pages().finalize();
    assert_eq!(summary.migrated, 0);
    assert_eq!(summary.restored, 8 + 512);
    let after: Vec<_> = [BASE, BASE + 5 * KIB4, BASE + MIB2]
        .iter()
        .map(|&va| w.space.read().slot(va, entry_kind(&w, va).0).unwrap().raw())
        .collect();
    assert_eq!(before, after);
    assert_eq!(w.ram.live_frames(), 8 + 512);
    w.check_pattern(BASE, 8 * KIB4);
    w.check_pattern(BASE + MIB2, MIB2);
    w.assert_quiescent();
}

#[test]
fn declined_pages_are_restored_x86_64() {
    declined_pages_are_restored::<X86_64>();
}

#[test]
fn declined_pages_are_restored_aarch64() {
    declined_pages_are_restored::<Aarch64>();
}

/// Dropping a migration at either stage restores every entry and frees every
/// destination, populated holes included.
#[test]
fn dropping_an_unfinished_migration_restores_everything() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 4 * KIB4, false);
    let pm = w.device.pagemap();
    for commit in [false, true] {
        let mut src = vec![MigratePfn::EMPTY; 8];
        let mut dst = vec![MigratePfn::EMPTY; 8];
        let mut m = Migration::setup(MigrateVma {
            address_space: w.space,
            start: BASE,
            end: BASE + 8 * KIB4,
            select: Select::SYSTEM,
            owner: w.device.owner,
            fault: None,
            src: &mut src,
            dst: &mut dst,
        })
        .unwrap();
        assert_eq!(m.migrating(), 8);
        for i in 0..8 {
            let f = pm.alloc_locked(devpriv_pte::PageSize::Size4KiB).unwrap();
            w.device.clear(f.index(), f.size());
            m.set_device_destination(i, f).unwrap();
        }
        if commit {
            let m = m.pages();
            // Holes are populated at commit.
            assert!(is_device_private(&entry_kind(&w, BASE + 6 * KIB4).1));
            drop(m);
        } else {
            drop(m);
        }
        assert_eq!(pm.allocated_pages(), 0);
        assert!(matches!(entry_kind(&w, BASE + 6 * KIB4).1, Entry::Absent));
        w.check_pattern(BASE, 4 * KIB4);
        assert_eq!(w.ram.live_frames(), 4);
    }
    w.assert_quiescent();
}

/// An unmap of part of the range between the steps of a migration: the pages it hit
/// are abandoned, the rest migrate, nothing is leaked.
fn unmap_during_migration<F: PagingFormat>(after_commit: bool) {
    let w = world::<F>(4096, 4096);
    w.populate(BASE, 16 * KIB4, false);
    let pm = w.device.pagemap();
    let mut src = vec![MigratePfn::EMPTY; 16];
    let mut dst = vec![MigratePfn::EMPTY; 16];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + 16 * KIB4,
        select: Select::SYSTEM,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    let words: Vec<_> = m.src().to_vec();
    for (i, s) in words.iter().enumerate() {
        let f = pm.alloc_locked(devpriv_pte::PageSize::Size4KiB).unwrap();
        if let Some(PageTarget::System(pfn)) = s.target() {
            w.device.copy_to_device(f.index(), pfn, f.size());
        }
        m.set_device_destination(i, f).unwrap();
    }
    let unmap = |w: &World<F>| w.unmap(w.space, BASE + 4 * KIB4, 4 * KIB4);
    let summary = if after_commit {
        let m = m.pages();
        unmap(&w);
        m.finalize()
    } else {
        unmap(&w);
        m.pages().finalize()
    };
    assert_eq!(summary.migrated, 12);
    assert_eq!(summary.abandoned, 4);
    assert_eq!(pm.allocated_pages(), 12);
    assert_eq!(w.ram.live_frames(), 0);
    assert!(matches!(entry_kind(&w, BASE + 5 * KIB4).1, Entry::Absent));
    w.check_pattern(BASE, 4 * KIB4);
    w.check_pattern(BASE + 8 * KIB4, 8 * KIB4);
    assert_eq!(pm.allocated_pages(), 0);
    w.assert_quiescent();
}

#[test]
fn unmap_during_migration_x86_64() {
    unmap_during_migration::<X86_64>(false);
    unmap_during_migration::<X86_64>(true);
}

#[test]
fn unmap_during_migration_aarch64() {
    unmap_during_migration::<Aarch64>(false);
    unmap_during_migration::<Aarch64>(true);
}

/// A protection change between the steps: the migrated pages come out read-only.
#[test]
fn protect_during_migration() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 4 * KIB4, false);
    let pm = w.device.pagemap();
    let mut src = vec![MigratePfn::EMPTY; 4];
    let mut dst = vec![MigratePfn::EMPTY; 4];
    let mut m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + 4 * KIB4,
        select: Select::SYSTEM,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    assert!(m.src().iter().all(|s| s.is_writable()));
    // Migrate pages 0 and 1; decline 2 and 3.
    for i in 0..2 {
        let f = pm.alloc_locked(devpriv_pte::PageSize::Size4KiB).unwrap();
        if let Some(PageTarget::System(pfn)) = m.src()[i].target() {
            w.device.copy_to_device(f.index(), pfn, f.size());
        }
        m.set_device_destination(i, f).unwrap();
    }
    w.space.protect(BASE, 4 * KIB4, false).unwrap();
    let summary = m.pages().finalize();
    assert_eq!((summary.migrated, summary.restored), (2, 2));
    assert!(matches!(
        entry_kind(&w, BASE).1,
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate {
                access: devpriv_pte::DeviceAccess::Read,
                ..
            },
            ..
        })
    ));
    match entry_kind(&w, BASE + 3 * KIB4).1 {
        Entry::Leaf { attrs, .. } => {
            use devpriv_pte::LeafAttributes;
            assert!(!attrs.property().writable);
        }
        other => panic!("{other:?}"),
    }
    w.check_pattern(BASE, 4 * KIB4);
    // Writes fault: the region allows them, the kernel makes the pages writable.
    w.cpu().write(BASE, 1).unwrap();
    w.assert_quiescent();
}

/// A pinned system page is collected, then put back and skipped.
#[test]
fn pinned_pages_are_skipped() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 4 * KIB4, false);
    let pinned = match entry_kind(&w, BASE + KIB4).1 {
        Entry::Leaf { pfn, .. } => pfn,
        other => panic!("{other:?}"),
    };
    w.ram.set_pinned(pinned, true);
    let summary = w.to_device(w.device, BASE, 4 * KIB4, false);
    assert_eq!(summary.migrated, 3);
    assert!(matches!(entry_kind(&w, BASE + KIB4).1, Entry::Leaf { pfn, .. } if pfn == pinned));
    w.check_pattern(BASE, 4 * KIB4);
    w.ram.set_pinned(pinned, false);
    w.assert_quiescent();
}

/// A page someone else has locked is skipped (best effort).
#[test]
fn busy_pages_are_skipped() {
    use devpriv_migrate::SystemMemory;
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 4 * KIB4, false);
    let busy = match entry_kind(&w, BASE + 2 * KIB4).1 {
        Entry::Leaf { pfn, .. } => pfn,
        other => panic!("{other:?}"),
    };
    assert!(w.ram.try_lock(busy));
    let summary = w.to_device(w.device, BASE, 4 * KIB4, false);
    assert_eq!(summary.migrated, 3);
    w.ram.unlock(busy);
    w.check_pattern(BASE, 4 * KIB4);
    w.assert_quiescent();
}

/// Device-private pages of another owner are not collected; their own driver brings
/// them back on a fault.
#[test]
fn other_owners_pages_are_left_alone() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 8 * KIB4, false);
    w.to_device(w.other, BASE, 4 * KIB4, false);
    let mut src = vec![MigratePfn::EMPTY; 8];
    let mut dst = vec![MigratePfn::EMPTY; 8];
    let m = Migration::setup(MigrateVma {
        address_space: w.space,
        start: BASE,
        end: BASE + 8 * KIB4,
        select: Select::DEVICE_PRIVATE,
        owner: w.device.owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    })
    .unwrap();
    assert_eq!(m.migrating(), 0);
    drop(m);
    w.check_pattern(BASE, 8 * KIB4);
    assert_eq!(w.other.faults.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(
        w.device.faults.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    w.assert_quiescent();
}

/// A mixed range: 4 KiB pages, a 2 MiB page and holes, to the device and back with
/// the fault in the middle.
fn mixed_range<F: PagingFormat>() {
    let w = world::<F>(4096, 4096);
    w.populate(BASE + MIB2 - 8 * KIB4, 8 * KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    let summary = w.to_device(w.device, BASE, 3 * MIB2, true);
    assert_eq!(summary.migrated, 8 + 512);
    assert_eq!(summary.populated, 512 - 8 + 512);
    // The fault in the middle of the 2 MiB folio brings all of it back.
    w.check_pattern(BASE + MIB2 + 100 * KIB4, KIB4);
    assert!(matches!(
        entry_kind(&w, BASE + MIB2),
        (Level::L2, Entry::Leaf { .. })
    ));
    w.check_pattern(BASE + MIB2 - 8 * KIB4, 8 * KIB4);
    w.check_pattern(BASE + MIB2, MIB2);
    w.assert_quiescent();
}

#[test]
fn mixed_range_x86_64() {
    mixed_range::<X86_64>();
}

#[test]
fn mixed_range_aarch64() {
    mixed_range::<Aarch64>();
}

/// Releasing an address space with pages on the device frees them all.
#[test]
fn release_with_pages_on_the_device() {
    let w = world::<X86_64>(4096, 4096);
    w.populate(BASE, 4 * MIB2, true);
    w.populate(BASE + 4 * MIB2, 16 * KIB4, false);
    w.to_device(w.device, BASE, 4 * MIB2 + 8 * KIB4, true);
    assert_eq!(w.device.pagemap().allocated_pages(), 4 * 512 + 8);
    let ram = w.ram;
    w.space
        .release(|removed| free_removed::<X86_64>(ram, removed));
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    assert_eq!(w.ram.live_frames(), 0);
    assert_eq!(w.memory.live_frames(), 1, "only the root table is left");
    w.assert_quiescent();
}

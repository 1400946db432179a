//! Eviction of device pages through their reverse maps, with no address-space walk.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{DeviceIndex, Entry, Level, PageSize};

/// Evicts every page of `device`'s pagemap, retrying busy pages, until none is left.
fn evict_all<F: PagingFormat>(
    w: &World<F>,
    spaces: &dyn AddressSpaceLookup<'static, P<F>>,
    device: &Device,
) -> Summary {
    let pm = device.pagemap();
    let pages = pm.pages() as usize;
    let mut total = Summary::default();
    for _ in 0..16 {
        if pm.allocated_pages() == 0 {
            break;
        }
        let mut src = vec![MigratePfn::EMPTY; pages];
        let mut dst = vec![MigratePfn::EMPTY; pages];
        let mut m = Migration::evict(
            w.devices,
            spaces,
            w.ram,
            Evict::pagemap(pm),
            &mut src,
            &mut dst,
        )
        .unwrap();
        device.fill_system_destinations(&mut m);
        let s = m.pages().finalize();
        total.migrated += s.migrated;
        total.abandoned += s.abandoned;
        total.restored += s.restored;
    }
    total
}

/// Pages on the device in two address spaces, 4 KiB and 2 MiB, come back through
/// their reverse maps; the pagemap can then be unregistered.
fn evict_from_two_address_spaces<F: PagingFormat>() {
    let w = world::<F>(4096, 8192);
    let (other, other_mmu, other_tlb) = w.another_space(2);
    let spaces: &'static AddressSpaces<'static, P<F>, 4> =
        Box::leak(Box::new(AddressSpaces::new()));
    spaces.register(w.space).unwrap();
    spaces.register(other).unwrap();
    w.populate(BASE, 16 * KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    w.to_device(w.device, BASE, 2 * MIB2, true);
    // The second address space maps its own pages.
    let w2 = World {
        space: other,
        mmu: other_mmu,
        tlb: other_tlb,
        ..w
    };
    w2.populate(BASE + 4 * MIB2, MIB2, true);
    w2.populate(BASE, 8 * KIB4, false);
    w2.to_device(w.device, BASE, 8 * KIB4, false);
    w2.to_device(w.device, BASE + 4 * MIB2, MIB2, true);
    let pm = w.device.pagemap();
    // The first 2 MiB of the first space: 16 pages and 496 populated holes.
    assert_eq!(pm.allocated_pages(), 512 + 512 + 8 + 512);
    let summary = evict_all(&w, spaces, w.device);
    assert_eq!(summary.migrated, 512 + 512 + 8 + 512);
    assert_eq!(pm.allocated_pages(), 0);
    assert!(matches!(
        w.space.read().lookup(BASE + MIB2).unwrap(),
        (Level::L2, Entry::Leaf { .. })
    ));
    w.check_pattern(BASE, 16 * KIB4);
    w.check_pattern(BASE + MIB2, MIB2);
    w2.check_pattern(BASE, 8 * KIB4);
    w2.check_pattern(BASE + 4 * MIB2, MIB2);
    // No fault was needed: eviction moved everything.
    assert_eq!(
        w.device.faults.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let id = pm.id().unwrap();
    w.devices.unregister(id).unwrap();
    w.assert_quiescent();
    w2.assert_quiescent();
}

#[test]
fn evict_from_two_address_spaces_x86_64() {
    evict_from_two_address_spaces::<X86_64>();
}

#[test]
fn evict_from_two_address_spaces_aarch64() {
    evict_from_two_address_spaces::<Aarch64>();
}

/// A busy page is left for the next round; a list that asks for part of a 2 MiB
/// folio splits it.
#[test]
fn busy_pages_and_partial_folios() {
    let w = world::<X86_64>(4096, 8192);
    let spaces: &'static AddressSpaces<'static, P<X86_64>, 4> =
        Box::leak(Box::new(AddressSpaces::new()));
    spaces.register(w.space).unwrap();
    w.populate(BASE, 4 * KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    w.to_device(w.device, BASE, 2 * MIB2, true);
    let pm = w.device.pagemap();
    let base = pm.base().unwrap();
    // Lock the first 4 KiB page: the eviction skips it.
    let first = pm.allocated_folios().next().unwrap();
    let held = first.head().try_get().unwrap().trylock().unwrap();
    let huge = pm
        .allocated_folios()
        .find(|f| f.size() == PageSize::Size2MiB)
        .unwrap();
    // Ask for the locked page, and for two pages of the 2 MiB folio.
    let list = [
        first.index(),
        DeviceIndex::new(huge.index().number() + 3),
        DeviceIndex::new(huge.index().number() + 400),
    ];
    let mut src = vec![MigratePfn::EMPTY; 3];
    let mut dst = vec![MigratePfn::EMPTY; 3];
    let mut m = Migration::evict(
        w.devices,
        spaces,
        w.ram,
        Evict::List(&list),
        &mut src,
        &mut dst,
    )
    .unwrap();
    assert_eq!(m.src()[0], MigratePfn::EMPTY, "busy");
    assert!(m.src()[1].is_migrating() && !m.src()[1].is_compound());
    assert!(m.src()[2].is_migrating());
    w.device.fill_system_destinations(&mut m);
    let s = m.pages().finalize();
    assert_eq!(s.migrated, 2);
    assert_eq!(
        w.device
            .split_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The rest of the split folio stays on the device, as 4 KiB pages (and the first
    // 2 MiB: 4 pages and 508 populated holes).
    assert_eq!(pm.allocated_pages(), 512 + 510);
    drop(held);
    let _ = base;
    evict_all(&w, spaces, w.device);
    assert_eq!(pm.allocated_pages(), 0);
    w.check_pattern(BASE, 4 * KIB4);
    w.check_pattern(BASE + MIB2, MIB2);
    w.assert_quiescent();
}

/// A folio no entry maps (the driver's own) is not evicted; an unknown range is a
/// typed error.
#[test]
fn unmapped_folios_and_bad_ranges() {
    let w = world::<X86_64>(1024, 1024);
    let spaces: &'static AddressSpaces<'static, P<X86_64>, 4> =
        Box::leak(Box::new(AddressSpaces::new()));
    let pm = w.device.pagemap();
    let mine = pm.alloc(PageSize::Size4KiB).unwrap();
    let mut src = vec![MigratePfn::EMPTY; 1024];
    let mut dst = vec![MigratePfn::EMPTY; 1024];
    let m = Migration::evict(
        w.devices,
        spaces,
        w.ram,
        Evict::pagemap(pm),
        &mut src,
        &mut dst,
    )
    .unwrap();
    assert_eq!(m.migrating(), 0);
    drop(m);
    assert_eq!(mine.refcount(), 1);
    let past = DeviceIndex::new(pm.base().unwrap().number() + 1000);
    let mut src = vec![MigratePfn::EMPTY; 100];
    let mut dst = vec![MigratePfn::EMPTY; 100];
    assert_eq!(
        Migration::evict(
            w.devices,
            spaces,
            w.ram,
            Evict::Range {
                first: past,
                pages: 100
            },
            &mut src,
            &mut dst
        )
        .err(),
        Some(SetupError::UnknownIndex {
            index: DeviceIndex::new(past.number() + 99)
        })
    );
    let mut none: [MigratePfn; 0] = [];
    let mut none2: [MigratePfn; 0] = [];
    assert_eq!(
        Migration::evict(
            w.devices,
            spaces,
            w.ram,
            Evict::List(&[]),
            &mut none,
            &mut none2
        )
        .err(),
        Some(SetupError::EmptyRange)
    );
    assert!(matches!(
        Migration::evict(
            w.devices,
            spaces,
            w.ram,
            Evict::pagemap(pm),
            &mut src,
            &mut dst
        )
        .err(),
        Some(SetupError::SliceLength { .. })
    ));
}

/// The registry hands out identifiers below its capacity, once each.
#[test]
fn registry() {
    let w = world::<X86_64>(16, 16);
    let spaces: AddressSpaces<'static, P<X86_64>, 2> = AddressSpaces::new();
    spaces.register(w.space).unwrap();
    assert_eq!(
        spaces.register(w.space),
        Err(RegistryError::Taken { id: w.space.id() })
    );
    let (far, _, _) = w.another_space(5);
    assert!(matches!(
        spaces.register(far),
        Err(RegistryError::IdTooLarge { capacity: 2, .. })
    ));
    assert!(std::ptr::eq(spaces.get(w.space.id()).unwrap(), w.space));
    assert!(std::ptr::eq(
        spaces.unregister(w.space.id()).unwrap(),
        w.space
    ));
    assert!(spaces.get(w.space.id()).is_none());
    assert!(matches!(
        spaces.unregister(w.space.id()),
        Err(RegistryError::NotRegistered { .. })
    ));
}

/// Device pages mapped in the upper half of an x86_64 address space are found again
/// through their reverse maps (which keep addresses modulo the table's reach).
#[test]
fn upper_half_addresses_round_trip_through_reverse_maps() {
    let w = world::<X86_64>(1024, 4096);
    let high: u64 = 0xffff_8000_4000_0000;
    let (space, mmu, tlb) = w.space_with_vma(3, Vma::anonymous(high, high + 4 * MIB2, rw()));
    let spaces: &'static AddressSpaces<'static, P<X86_64>, 4> =
        Box::leak(Box::new(AddressSpaces::new()));
    spaces.register(space).unwrap();
    let hw = World {
        space,
        mmu,
        tlb,
        vma: Vma::anonymous(high, high + 4 * MIB2, rw()),
        ..w
    };
    // Populate through the CPU, then migrate to the device.
    let cpu = hw.cpu();
    for k in 0..8u64 {
        cpu.write(high + k * KIB4, 0x1000 + k).unwrap();
    }
    hw.to_device(w.device, high, 8 * KIB4, false);
    let pm = w.device.pagemap();
    assert_eq!(pm.allocated_pages(), 8);
    let summary = evict_all(&hw, spaces, w.device);
    assert_eq!(summary.migrated, 8);
    for k in 0..8u64 {
        assert_eq!(cpu.read(high + k * KIB4).unwrap(), 0x1000 + k);
    }
    hw.assert_quiescent();
}

//! Behaviour of the public API, and a test for every error variant.
#![cfg(not(loom))]

use std::sync::Mutex;

use devpriv_pagemap::*;
use devpriv_pte::{DeviceIndex, PageSize};

/// A driver that records what the pagemap tells it.
#[derive(Default)]
struct Recorder {
    freed: Mutex<Vec<(u64, PageSize)>>,
    /// `(head, new)` of every `folio_split` call.
    split: Mutex<Vec<(u64, Option<u64>)>>,
}

impl PagemapOps for Recorder {
    fn folio_free(&self, folio: Folio<'_>) {
        self.freed
            .lock()
            .unwrap()
            .push((folio.index().number(), folio.size()));
    }
    fn folio_split(&self, head: Folio<'_>, new: Option<Folio<'_>>) {
        assert_eq!(head.size(), PageSize::Size4KiB);
        self.split
            .lock()
            .unwrap()
            .push((head.index().number(), new.map(|f| f.index().number())));
    }
}

fn metadata(pages: usize) -> Vec<PageMeta> {
    (0..pages).map(|_| PageMeta::new()).collect()
}

#[test]
fn metadata_is_sixteen_bytes_per_page() {
    assert_eq!(METADATA_BYTES_PER_PAGE, 16);
    assert_eq!(std::mem::size_of::<PageMeta>(), METADATA_BYTES_PER_PAGE);
}

#[test]
fn handles_fit_in_two_registers() {
    assert_eq!(std::mem::size_of::<Page<'static>>(), 16);
    assert_eq!(std::mem::size_of::<Folio<'static>>(), 16);
    assert_eq!(std::mem::size_of::<FolioRef<'static>>(), 16);
    assert_eq!(std::mem::size_of::<LockedFolio<'static>>(), 16);
}

#[test]
fn index_layout_covers_the_40_bit_space() {
    assert_eq!(SLOTS, 256);
    assert_eq!(MAX_PAGEMAP_PAGES, 1 << 32);
    assert_eq!(SLOTS as u64 * SLOT_PAGES, DeviceIndex::MAX.number() + 1);
}

#[test]
fn register_lookup_unregister() {
    let ops = Recorder::default();
    let mut meta = metadata(1000);
    let a = DevicePagemap::new(1000, Owner::new(7), &ops, &mut meta).unwrap();
    let mut meta_b = metadata(10);
    let b = DevicePagemap::new(10, Owner::new(8), &ops, &mut meta_b).unwrap();
    let space = DevicePrivateSpace::new();
    let ida = space.register(&a).unwrap();
    let idb = space.register(&b).unwrap();
    assert_ne!(ida.slot(), idb.slot());
    assert_eq!(a.id(), Some(ida));
    assert_eq!(space.registered(), 2);
    assert_eq!(a.base(), Some(ida.base()));

    let p = space
        .lookup(DeviceIndex::new(ida.base().number() + 999))
        .unwrap();
    assert!(std::ptr::eq(p.pagemap(), &a));
    assert_eq!(p.number(), 999);
    assert_eq!(p.pagemap().owner(), Owner::new(7));
    let q = space.lookup(idb.base()).unwrap();
    assert!(std::ptr::eq(q.pagemap(), &b));
    assert_eq!(a.page(999).unwrap(), p);
    assert!(std::ptr::eq(space.pagemap(ida).unwrap(), &a));

    assert!(std::ptr::eq(space.unregister(ida).unwrap(), &a));
    assert_eq!(a.id(), None);
    assert!(space.pagemap(ida).is_none());
    // The pagemap can be registered again; it gets a fresh slot (round-robin).
    let ida2 = space.register(&a).unwrap();
    assert_ne!(ida2.slot(), ida.slot());
}

#[test]
fn lookup_errors() {
    let ops = Recorder::default();
    let mut meta = metadata(100);
    let a = DevicePagemap::new(100, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&a).unwrap();
    let past_end = DeviceIndex::new(id.base().number() + 100);
    assert_eq!(
        space.lookup(past_end),
        Err(LookupError::Unknown { index: past_end })
    );
    let never = DeviceIndex::new(200 << 32);
    assert_eq!(
        space.lookup(never),
        Err(LookupError::Unknown { index: never })
    );
    let beyond = DeviceIndex::new(DeviceIndex::MAX.number() + 1);
    assert_eq!(
        space.lookup(beyond),
        Err(LookupError::OutOfRange { index: beyond })
    );
    space.unregister(id).unwrap();
    assert_eq!(
        space.lookup(id.base()),
        Err(LookupError::FreedPagemap { index: id.base() })
    );
    assert!(matches!(a.page(0), Err(LookupError::Unknown { .. })));
}

#[test]
fn registration_errors() {
    let ops = Recorder::default();
    let mut meta = metadata(8);
    assert_eq!(
        DevicePagemap::new(0, Owner::new(1), &ops, &mut meta).err(),
        Some(RegisterError::ZeroPages)
    );
    assert_eq!(
        DevicePagemap::new(MAX_PAGEMAP_PAGES + 1, Owner::new(1), &ops, &mut meta).err(),
        Some(RegisterError::TooManyPages {
            pages: MAX_PAGEMAP_PAGES + 1,
            max: MAX_PAGEMAP_PAGES
        })
    );
    assert_eq!(
        DevicePagemap::new(9, Owner::new(1), &ops, &mut meta).err(),
        Some(RegisterError::MetadataTooSmall {
            needed: 9,
            given: 8
        })
    );
    let words: Vec<DriverWord> = (0..4).map(|_| DriverWord::new(0)).collect();
    assert_eq!(
        DevicePagemap::new(8, Owner::new(1), &ops, &mut meta)
            .unwrap()
            .with_driver_words(&words)
            .err(),
        Some(RegisterError::DriverWordsTooSmall {
            needed: 8,
            given: 4
        })
    );

    let pm = DevicePagemap::new(8, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let other = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    assert_eq!(space.register(&pm), Err(RegisterError::AlreadyRegistered));
    assert_eq!(other.register(&pm), Err(RegisterError::AlreadyRegistered));
}

/// Two pagemaps over the same metadata would hand out each other's pages. `new` borrows
/// the metadata exclusively, so that does not compile (the `compile_fail` doc test of
/// `DevicePagemap::new`); disjoint parts of one slice are fine, and shared driver words
/// are still refused at registration.
#[test]
fn disjoint_metadata_is_fine_and_aliased_driver_words_are_refused() {
    let ops = Recorder::default();
    let mut meta = metadata(16);
    let (low, high) = meta.split_at_mut(8);
    let first = DevicePagemap::new(8, Owner::new(1), &ops, low).unwrap();
    let disjoint = DevicePagemap::new(8, Owner::new(4), &ops, high).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&first).unwrap();
    space.register(&disjoint).unwrap();
    drop(first.alloc(PageSize::Size4KiB).unwrap());
    space.unregister(id).unwrap();
    let words: Vec<DriverWord> = (0..8).map(|_| DriverWord::new(0)).collect();
    let mut other_meta = metadata(16);
    let with_words = |m| {
        DevicePagemap::new(8, Owner::new(5), &ops, m)
            .unwrap()
            .with_driver_words(&words)
            .unwrap()
    };
    let (m1, m2) = other_meta.split_at_mut(8);
    let w1 = with_words(m1);
    let w2 = with_words(m2);
    let other_space = DevicePrivateSpace::new();
    other_space.register(&w1).unwrap();
    assert_eq!(
        other_space.register(&w2),
        Err(RegisterError::AliasedMetadata),
        "shared driver words alias too"
    );
}

/// Two pagemaps made from one `StaticMetadata`: the first registration claims it for
/// good, so the second is refused in any space, while the first may register again.
#[test]
fn static_metadata_is_claimed_across_spaces() {
    static OPS: Statics = Statics;
    static META: StaticMetadata<16> = StaticMetadata::new();
    struct Statics;
    impl PagemapOps for Statics {
        fn folio_free(&self, _: Folio<'_>) {}
    }
    let first = DevicePagemap::from_static(16, Owner::new(1), &OPS, &META).unwrap();
    let second = DevicePagemap::from_static(8, Owner::new(2), &OPS, &META).unwrap();
    let space = DevicePrivateSpace::new();
    let other_space = DevicePrivateSpace::new();
    assert!(!META.is_claimed());
    let id = space.register(&first).unwrap();
    assert!(META.is_claimed());
    let page = first.alloc(PageSize::Size4KiB).unwrap();
    assert_eq!(
        other_space.register(&second),
        Err(RegisterError::AliasedMetadata),
        "another space would hand out the first pagemap's live pages"
    );
    assert_eq!(space.register(&second), Err(RegisterError::AliasedMetadata));
    drop(page);
    space.unregister(id).unwrap();
    // The claim stays with the first pagemap even while it is not registered.
    assert_eq!(
        other_space.register(&second),
        Err(RegisterError::AliasedMetadata)
    );
    other_space.register(&first).unwrap();
    assert!(second.alloc(PageSize::Size4KiB).is_err());
    // Too small a `StaticMetadata` is refused when the pagemap is made.
    assert_eq!(
        DevicePagemap::from_static(17, Owner::new(3), &OPS, &META).err(),
        Some(RegisterError::MetadataTooSmall {
            needed: 17,
            given: 16
        })
    );
}

#[test]
fn space_full_after_256_pagemaps_and_slot_reuse_bumps_generation() {
    let ops = Recorder::default();
    let mut meta = metadata(SLOTS + 1);
    let maps: Vec<DevicePagemap<'_>> = meta
        .chunks_mut(1)
        .enumerate()
        .map(|(i, m)| DevicePagemap::new(1, Owner::new(i as u64), &ops, m).unwrap())
        .collect();
    let space = DevicePrivateSpace::new();
    let ids: Vec<PagemapId> = maps[..SLOTS]
        .iter()
        .map(|m| space.register(m).unwrap())
        .collect();
    assert_eq!(space.register(&maps[SLOTS]), Err(RegisterError::SpaceFull));
    space.unregister(ids[17]).unwrap();
    let reused = space.register(&maps[SLOTS]).unwrap();
    assert_eq!(reused.slot(), ids[17].slot());
    assert_eq!(reused.generation(), ids[17].generation() + 1);
    // The old id is stale: it neither names nor unregisters the new pagemap.
    assert!(space.pagemap(ids[17]).is_none());
    assert_eq!(
        space.unregister(ids[17]).err(),
        Some(UnregisterError::StaleId)
    );
    assert!(std::ptr::eq(space.pagemap(reused).unwrap(), &maps[SLOTS]));
}

#[test]
fn unregister_refused_while_pages_are_allocated() {
    let ops = Recorder::default();
    let mut meta = metadata(512);
    let pm = DevicePagemap::new(512, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    assert_eq!(
        space.unregister(id).err(),
        Some(UnregisterError::PagesInUse { pages: 1 })
    );
    // Still registered and usable.
    assert!(space.lookup(f.index()).is_ok());
    drop(f);
    space.unregister(id).unwrap();
    assert_eq!(space.unregister(id).err(), Some(UnregisterError::StaleId));
}

#[test]
fn alloc_errors() {
    let ops = Recorder::default();
    let mut meta = metadata(600);
    let pm = DevicePagemap::new(600, Owner::new(1), &ops, &mut meta).unwrap();
    assert_eq!(
        pm.alloc(PageSize::Size4KiB).err(),
        Some(AllocError::NotRegistered)
    );
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    assert_eq!(
        pm.alloc(PageSize::Size1GiB).err(),
        Some(AllocError::UnsupportedSize(PageSize::Size1GiB))
    );
    let big = pm.alloc(PageSize::Size2MiB).unwrap();
    assert_eq!(
        pm.alloc(PageSize::Size2MiB).err(),
        Some(AllocError::OutOfMemory)
    );
    // The 88-page tail still serves 4 KiB folios, then the pagemap is full.
    let small: Vec<_> = (0..88)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    assert_eq!(
        pm.alloc(PageSize::Size4KiB).err(),
        Some(AllocError::OutOfMemory)
    );
    assert_eq!(pm.free_pages(), 0);
    drop(big);
    drop(small);
    assert_eq!(pm.free_pages(), 600);
    assert_eq!(pm.whole_chunks(), 1);
}

#[test]
fn injected_failures() {
    let ops = Recorder::default();
    let mut meta = metadata(2048);
    let pm = DevicePagemap::new(2048, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    pm.inject_alloc_failures(PageSize::Size2MiB, AllocFailures::Next(2));
    assert_eq!(
        pm.alloc(PageSize::Size2MiB).err(),
        Some(AllocError::Injected)
    );
    // 4 KiB allocations are not affected.
    drop(pm.alloc(PageSize::Size4KiB).unwrap());
    assert_eq!(
        pm.alloc(PageSize::Size2MiB).err(),
        Some(AllocError::Injected)
    );
    drop(pm.alloc(PageSize::Size2MiB).unwrap());
    pm.inject_alloc_failures(PageSize::Size4KiB, AllocFailures::Always);
    for _ in 0..3 {
        assert_eq!(
            pm.alloc(PageSize::Size4KiB).err(),
            Some(AllocError::Injected)
        );
    }
    pm.inject_alloc_failures(PageSize::Size4KiB, AllocFailures::Never);
    drop(pm.alloc(PageSize::Size4KiB).unwrap());
}

#[test]
fn references_and_folio_free() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    let view = f.folio();
    assert_eq!(f.refcount(), 1);
    let g = f.get().unwrap();
    let h = space.lookup(f.index()).unwrap().try_get().unwrap();
    assert_eq!(h.folio(), view);
    assert_eq!(view.refcount(), 3);
    drop(f);
    drop(g);
    assert!(ops.freed.lock().unwrap().is_empty());
    drop(h);
    assert_eq!(
        *ops.freed.lock().unwrap(),
        vec![(view.index().number(), PageSize::Size4KiB)]
    );
    assert_eq!(view.refcount(), 0);
    // No reference can be had after the free.
    assert_eq!(view.head().try_get().err(), Some(FolioError::NotAllocated));
    // A never-allocated page is free too.
    assert_eq!(
        pm.page(1000).unwrap().try_get().err(),
        Some(FolioError::NotAllocated)
    );
    assert_eq!(pm.allocated_pages(), 0);
}

#[test]
fn a_reference_travels_through_raw_and_back() {
    let ops = Recorder::default();
    let mut meta = metadata(8);
    let pm = DevicePagemap::new(8, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    // A page-table entry takes over the reference...
    let raw = pm.alloc(PageSize::Size4KiB).unwrap().into_raw();
    assert_eq!(raw.refcount(), 1);
    // ...and a lock, too, can be held by bookkeeping instead of a handle.
    let locked = raw.head().try_get().unwrap().trylock().unwrap().into_raw();
    assert!(locked.is_locked());
    assert_eq!(locked.refcount(), 2);
    // SAFETY: `into_raw` above left one reference and the lock, owned by nothing else.
    drop(unsafe { LockedFolio::from_raw(locked) });
    assert!(!raw.is_locked());
    assert!(ops.freed.lock().unwrap().is_empty());
    // SAFETY: the first `into_raw` left this reference, owned by nothing else.
    drop(unsafe { FolioRef::from_raw(raw) });
    assert_eq!(ops.freed.lock().unwrap().len(), 1);
}

#[test]
fn locks() {
    let ops = Recorder::default();
    let mut meta = metadata(512);
    let pm = DevicePagemap::new(512, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    let other = f.get().unwrap();
    let locked = f.trylock().unwrap();
    assert!(locked.is_locked());
    // The lock is held: a second trylock gives the reference back.
    let other = other.trylock().unwrap_err();
    assert_eq!(other.refcount(), 2);
    // Dropping the other reference while the folio is locked does not free it.
    drop(other);
    assert_eq!(locked.refcount(), 1);
    assert!(ops.freed.lock().unwrap().is_empty());
    // Unlocking keeps the reference; the lock can be taken again.
    let f = locked.unlock();
    assert!(!f.is_locked());
    let locked = f.trylock().unwrap();
    // Dropping the locked handle unlocks and puts: the folio is free.
    let view = locked.folio();
    drop(locked);
    assert!(!view.is_locked());
    assert_eq!(view.refcount(), 0);
    assert_eq!(ops.freed.lock().unwrap().len(), 1);
}

#[test]
fn large_folio_tails_resolve_to_the_head() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let f = pm.alloc(PageSize::Size2MiB).unwrap();
    assert_eq!(f.pages(), 512);
    assert_eq!(f.index().number() % 512, 0);
    assert!(f.contains(DeviceIndex::new(f.index().number() + 511)));
    assert!(!f.contains(DeviceIndex::new(f.index().number() + 512)));
    let mut tails = Vec::new();
    for i in [1, 100, 511] {
        let page = space
            .lookup(DeviceIndex::new(f.index().number() + i))
            .unwrap();
        assert_eq!(page.folio(), f.folio());
        let g = page.try_get().unwrap();
        assert_eq!(g.folio(), f.folio());
        tails.push(g);
    }
    assert_eq!(f.refcount(), 4);
    // A reference taken through a tail is put through the folio.
    drop(tails);
    let view = f.folio();
    drop(f);
    assert_eq!(
        *ops.freed.lock().unwrap(),
        vec![(view.index().number(), PageSize::Size2MiB)]
    );
    assert_eq!(
        space
            .lookup(DeviceIndex::new(view.index().number() + 5))
            .unwrap()
            .try_get()
            .err(),
        Some(FolioError::NotAllocated)
    );
    assert_eq!(pm.whole_chunks(), 2);
}

#[test]
fn split_and_merge() {
    let ops = Recorder::default();
    let mut meta = metadata(512);
    let pm = DevicePagemap::new(512, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let f = pm.alloc(PageSize::Size2MiB).unwrap().trylock().unwrap();
    let head = f.index().number();
    let rmap = ReverseMap::new(AddressSpaceId::new(3).unwrap(), 0x4000).unwrap();
    f.set_reverse_map(Some(rmap));

    // A second reference makes the split busy; the handle comes back.
    let extra = f.get().unwrap();
    let e = f.split().unwrap_err();
    assert_eq!(e.error, FolioError::SplitBusy { refs: 2 });
    let f = e.folio;
    drop(extra);
    let parts = f.split().unwrap();
    assert_eq!(parts.len(), 512);
    assert_eq!(parts.head().index().number(), head);
    // folio_split: once per new folio after the head, then once with none.
    let calls = ops.split.lock().unwrap().clone();
    assert_eq!(calls.len(), 512);
    assert!(
        calls[..511]
            .iter()
            .enumerate()
            .all(|(i, &c)| c == (head, Some(head + 1 + i as u64)))
    );
    assert_eq!(calls[511], (head, None));
    assert_eq!(pm.allocated_pages(), 512);
    assert_eq!(pm.whole_chunks(), 0);
    let parts: Vec<LockedFolio<'_>> = parts.collect();
    for (i, g) in parts.iter().enumerate() {
        let page = pm.page(i as u64).unwrap();
        assert_eq!(g.size(), PageSize::Size4KiB);
        assert_eq!(g.head(), page);
        assert_eq!(g.refcount(), 1);
        assert!(g.is_locked());
        assert_eq!(g.reverse_map(), rmap.offset(i as u64));
        assert_eq!(page.folio(), g.folio());
    }
    // A 4 KiB folio cannot be split.
    let mut parts = parts;
    let last = parts.pop().unwrap();
    let e = last.split().unwrap_err();
    assert_eq!(e.error, FolioError::SplitNotLarge);
    // Free all but one: the chunk is not whole.
    drop(parts);
    assert_eq!(pm.whole_chunks(), 0);
    assert_eq!(
        pm.alloc(PageSize::Size2MiB).err(),
        Some(AllocError::OutOfMemory)
    );
    // 4 KiB allocations reuse the freed pages.
    drop(pm.alloc(PageSize::Size4KiB).unwrap());
    drop(e.folio);
    // All 512 free: whole again.
    assert_eq!(pm.whole_chunks(), 1);
    let whole = pm.alloc(PageSize::Size2MiB).unwrap();
    assert_eq!(whole.index().number(), head);
    assert_eq!(whole.reverse_map(), None);
}

#[test]
fn dropping_a_split_iterator_releases_the_rest() {
    let ops = Recorder::default();
    let mut meta = metadata(512);
    let pm = DevicePagemap::new(512, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let mut parts = pm
        .alloc_locked(PageSize::Size2MiB)
        .unwrap()
        .split()
        .unwrap();
    let first = parts.next().unwrap();
    drop(parts);
    assert_eq!(pm.allocated_pages(), 1);
    assert!(first.is_locked());
    drop(first);
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(ops.freed.lock().unwrap().len(), 512);
}

#[test]
fn reverse_map_and_driver_words() {
    let ops = Recorder::default();
    let mut meta = metadata(16);
    let words: Vec<DriverWord> = (0..16).map(|_| DriverWord::new(0)).collect();
    let pm = DevicePagemap::new(16, Owner::new(1), &ops, &mut meta)
        .unwrap()
        .with_driver_words(&words)
        .unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let f = pm.alloc_locked(PageSize::Size4KiB).unwrap();
    assert_eq!(f.reverse_map(), None);
    let r = ReverseMap::new(
        AddressSpaceId::new(AddressSpaceId::MAX).unwrap(),
        ReverseMap::MAX_VIRTUAL_PAGE,
    )
    .unwrap();
    f.set_reverse_map(Some(r));
    assert_eq!(f.reverse_map(), Some(r));
    f.set_reverse_map(None);
    assert_eq!(f.reverse_map(), None);
    assert_eq!(r.offset(1), None);
    f.head()
        .driver_word()
        .unwrap()
        .store(0xabc, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        words[f.head().number() as usize].load(std::sync::atomic::Ordering::Relaxed),
        0xabc
    );
    drop(f);

    assert_eq!(
        AddressSpaceId::new(AddressSpaceId::MAX + 1),
        Err(ReverseMapError::AddressSpaceTooLarge {
            id: AddressSpaceId::MAX + 1
        })
    );
    assert_eq!(
        ReverseMap::new(
            AddressSpaceId::new(0).unwrap(),
            ReverseMap::MAX_VIRTUAL_PAGE + 1
        ),
        Err(ReverseMapError::VirtualPageTooLarge {
            virtual_page: ReverseMap::MAX_VIRTUAL_PAGE + 1
        })
    );
    let mut meta2 = metadata(4);
    let plain = DevicePagemap::new(4, Owner::new(2), &ops, &mut meta2).unwrap();
    space.register(&plain).unwrap();
    assert!(plain.page(0).unwrap().driver_word().is_none());
}

#[test]
fn a_static_space_works() {
    static SPACE: DevicePrivateSpace<'static> = DevicePrivateSpace::new();
    static OPS: Statics = Statics;
    static META: StaticMetadata<8> = StaticMetadata::new();
    struct Statics;
    impl PagemapOps for Statics {
        fn folio_free(&self, _: Folio<'_>) {}
    }
    // In a static too (not leaked: Miri checks for leaks).
    static PM: std::sync::OnceLock<DevicePagemap<'static>> = std::sync::OnceLock::new();
    let pm = PM.get_or_init(|| DevicePagemap::from_static(8, Owner::new(1), &OPS, &META).unwrap());
    let id = SPACE.register(pm).unwrap();
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    assert_eq!(SPACE.lookup(f.index()).unwrap(), f.head());
    drop(f);
    SPACE.unregister(id).unwrap();
}

#[test]
fn raw_zeroed_metadata() {
    let layout = std::alloc::Layout::array::<PageMeta>(4096).unwrap();
    // SAFETY: non-zero size.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<PageMeta>();
    assert!(!raw.is_null());
    // SAFETY: `raw` is a fresh, zeroed, aligned allocation of 4096 records that only this
    // slice uses until it is freed below.
    let meta = unsafe { PageMeta::slice_from_zeroed_raw(raw, 4096) };
    let ops = Recorder::default();
    {
        let pm = DevicePagemap::new(4096, Owner::new(1), &ops, meta).unwrap();
        let space = DevicePrivateSpace::new();
        space.register(&pm).unwrap();
        drop(pm.alloc(PageSize::Size2MiB).unwrap());
    }
    // SAFETY: allocated above with this layout; the slice is no longer used.
    unsafe { std::alloc::dealloc(raw.cast(), layout) };
}

#[cfg(feature = "alloc")]
#[test]
fn allocated_zeroed_metadata() {
    let mut storage = MetadataStorage::new_zeroed(1 << 20).unwrap();
    let ops = Recorder::default();
    let pm = DevicePagemap::new(1 << 20, Owner::new(1), &ops, &mut storage).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    drop(pm.alloc(PageSize::Size2MiB).unwrap());
}

#[test]
fn page_cache() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let mut early = PageCache::new(&pm);
    assert_eq!(early.alloc().err(), Some(AllocError::NotRegistered));
    drop(early);
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    let mut cache = PageCache::new(&pm);
    let f = cache.alloc().unwrap();
    assert_eq!(f.size(), PageSize::Size4KiB);
    assert_eq!(f.refcount(), 1);
    assert_eq!(space.lookup(f.index()).unwrap(), f.head());
    // The refill took a batch: the rest are free but cached.
    let cached: Vec<u64> = cache.cached().collect();
    assert_eq!(cached.len(), PAGE_CACHE_CAPACITY / 2 - 1);
    assert_eq!(pm.allocated_pages(), PAGE_CACHE_CAPACITY as u64 / 2);
    for &p in &cached {
        assert_eq!(
            pm.page(p).unwrap().try_get().err(),
            Some(FolioError::NotAllocated)
        );
        assert_eq!(pm.page(p).unwrap().folio().refcount(), 0);
    }
    // A chunk with cached pages is not whole, and the pagemap cannot go.
    assert_eq!(pm.whole_chunks(), 1);
    assert!(matches!(
        space.unregister(id),
        Err(UnregisterError::PagesInUse { .. })
    ));
    // A put through the cache calls folio_free and keeps the page.
    let g = f.get().unwrap();
    let page = f.head().number();
    cache.put(g);
    assert!(ops.freed.lock().unwrap().is_empty());
    cache.put(f);
    assert_eq!(ops.freed.lock().unwrap().len(), 1);
    assert_eq!(cache.len(), PAGE_CACHE_CAPACITY / 2);
    assert_eq!(cache.cached().last(), Some(page));
    // Overflowing the cache hands a batch back to the allocator.
    let many: Vec<_> = (0..100)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    for g in many {
        cache.put(g);
        assert!(cache.len() <= PAGE_CACHE_CAPACITY);
    }
    // 2 MiB folios and other pagemaps' folios bypass the cache.
    let big = pm.alloc(PageSize::Size2MiB).unwrap();
    cache.put(big);
    assert_eq!(pm.whole_chunks(), 1);
    // Injected failures apply.
    pm.inject_alloc_failures(PageSize::Size4KiB, AllocFailures::Next(1));
    assert_eq!(cache.alloc().err(), Some(AllocError::Injected));
    cache.drain();
    assert!(cache.is_empty());
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(pm.whole_chunks(), 2);
    // Dropping a cache drains it too.
    let g = cache.alloc().unwrap();
    cache.put(g);
    drop(cache);
    assert_eq!(pm.allocated_pages(), 0);
    space.unregister(id).unwrap();
}

#[test]
fn allocated_folios_walks_heads_only() {
    let ops = Recorder::default();
    let mut meta = metadata(1536 + 10);
    let pm = DevicePagemap::new(1546, Owner::new(1), &ops, &mut meta).unwrap();
    assert_eq!(pm.allocated_folios().count(), 0);
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let large = pm.alloc(PageSize::Size2MiB).unwrap();
    let small: Vec<_> = (0..3)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    let split: Vec<LockedFolio<'_>> = pm
        .alloc_locked(PageSize::Size2MiB)
        .unwrap()
        .split()
        .unwrap()
        .collect();
    let mut cache = PageCache::new(&pm);
    let cached = cache.alloc().unwrap();
    let mut expected: Vec<Folio<'_>> = vec![large.folio(), cached.folio()];
    expected.extend(small.iter().map(|f| f.folio()));
    expected.extend(split.iter().map(|f| f.folio()));
    expected.sort_by_key(|f| f.index());
    let walked: Vec<Folio<'_>> = pm.allocated_folios().collect();
    assert_eq!(walked, expected);
    // Freed folios and cached pages are not reported.
    cache.put(cached);
    drop(large);
    let walked: Vec<Folio<'_>> = pm.allocated_folios().collect();
    assert_eq!(walked.len(), 3 + 512);
    assert!(walked.iter().all(|f| f.size() == PageSize::Size4KiB));
    drop(small);
    drop(split);
    drop(cache);
    assert_eq!(pm.allocated_pages(), 0);
}

#[test]
fn alloc_locked_gives_a_locked_destination() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    for size in [PageSize::Size4KiB, PageSize::Size2MiB] {
        let f = pm.alloc_locked(size).unwrap();
        assert_eq!(f.size(), size);
        assert!(f.is_locked());
        assert_eq!(f.refcount(), 1);
        // Nobody else gets the lock.
        let other = f.get().unwrap();
        let other = other.trylock().unwrap_err();
        drop(other);
        drop(f);
    }
    assert_eq!(
        pm.alloc_locked(PageSize::Size1GiB).err(),
        Some(AllocError::UnsupportedSize(PageSize::Size1GiB))
    );
    // A locked 2 MiB destination can be split straight away (the migration split path).
    let big = pm.alloc_locked(PageSize::Size2MiB).unwrap();
    drop(big.split().unwrap());
    assert_eq!(pm.allocated_pages(), 0);
}

#[test]
fn page_numbers_are_total() {
    let ops = Recorder::default();
    let mut meta = metadata(4);
    let pm = DevicePagemap::new(4, Owner::new(1), &ops, &mut meta).unwrap();
    assert!(matches!(
        pm.page(u64::MAX),
        Err(LookupError::Unknown { .. })
    ));
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    for n in [4, 1 << 40, u64::MAX] {
        assert_eq!(
            pm.page(n),
            Err(LookupError::Unknown {
                index: DeviceIndex::new(id.base().number().saturating_add(n))
            })
        );
    }
    assert_eq!(pm.page(3).unwrap().number(), 3);
}

#[test]
fn callbacks_may_allocate_and_free() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Reentrant<'a> {
        pagemap: OnceLock<&'a DevicePagemap<'a>>,
        nested: AtomicBool,
    }
    impl PagemapOps for Reentrant<'_> {
        fn folio_free(&self, _: Folio<'_>) {
            if !self.nested.swap(true, Ordering::Relaxed) {
                let pm = self.pagemap.get().unwrap();
                drop(pm.alloc(PageSize::Size4KiB).unwrap());
            }
        }
        fn folio_split(&self, _: Folio<'_>, _: Option<Folio<'_>>) {
            let pm = self.pagemap.get().unwrap();
            drop(pm.alloc(PageSize::Size4KiB).unwrap());
        }
    }
    // The ops and the pagemap refer to each other, both on the stack.
    let mut meta = metadata(1024);
    let ops = Reentrant {
        pagemap: OnceLock::new(),
        nested: AtomicBool::new(false),
    };
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    ops.pagemap.set(&pm).ok().unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    drop(pm.alloc(PageSize::Size4KiB).unwrap());
    assert!(ops.nested.load(Ordering::Relaxed));
    let big = pm.alloc_locked(PageSize::Size2MiB).unwrap();
    drop(big.split().unwrap());
    assert_eq!(pm.allocated_pages(), 0);
}

#[test]
fn try_lock_takes_a_reference_and_the_lock_at_once() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    assert_eq!(
        pm.page(3).unwrap().try_lock().err(),
        Some(TryLockError::Free)
    );
    let f = pm.alloc(PageSize::Size2MiB).unwrap();
    // Through a tail page: the whole folio, one more reference, locked.
    let tail = pm.page(f.head().number() + 9).unwrap();
    let locked = tail.try_lock().unwrap();
    assert_eq!(locked.folio(), f.folio());
    assert_eq!(f.refcount(), 2);
    assert!(f.is_locked());
    // Locked: the error names the folio to wait for, and takes no reference.
    assert_eq!(tail.try_lock().err(), Some(TryLockError::Locked(f.folio())));
    assert_eq!(f.refcount(), 2);
    drop(locked);
    assert_eq!(f.refcount(), 1);
    assert!(!f.is_locked());
    drop(f);
    assert_eq!(pm.allocated_pages(), 0);
}

/// Frees that go to the pagemap's stash (no lock) come back from it on the next
/// allocations, and the stash is never seen: the counts, the whole chunks, a full
/// pagemap, unregistering and a split all behave as if the folios were on the free lists.
#[test]
fn the_stash_is_invisible() {
    let ops = Recorder::default();
    // Two full chunks and a tail of 8 pages.
    let mut meta = metadata(1024 + 8);
    let pm = DevicePagemap::new(1024 + 8, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();

    // A batch of 4 KiB folios, freed, then allocated again: the same pages come back
    // (the stash gives back what it took), with fresh state.
    let first: Vec<_> = (0..64)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    let pages: std::collections::BTreeSet<u64> = first.iter().map(|f| f.index().number()).collect();
    drop(first);
    assert_eq!(ops.freed.lock().unwrap().len(), 64);
    let again: Vec<_> = (0..64)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    let pages_again: std::collections::BTreeSet<u64> =
        again.iter().map(|f| f.index().number()).collect();
    assert_eq!(pages, pages_again);
    for f in &again {
        assert_eq!(f.refcount(), 1);
        assert!(!f.is_locked());
        assert_eq!(f.reverse_map(), None);
    }
    assert_eq!(pm.allocated_pages(), 64);
    drop(again);
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(pm.whole_chunks(), 2);

    // 2 MiB folios freed into the stash, then the whole pagemap taken as 4 KiB folios:
    // the allocator drains the stash when it runs out.
    let large: Vec<_> = (0..2)
        .map(|_| pm.alloc(PageSize::Size2MiB).unwrap())
        .collect();
    drop(large);
    let small: Vec<_> = (0..1024 + 8)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    assert_eq!(
        pm.alloc(PageSize::Size4KiB).err(),
        Some(AllocError::OutOfMemory)
    );
    assert_eq!(pm.free_pages(), 0);
    // And back: 4 KiB folios in the stash keep no chunk from being allocated whole.
    drop(small);
    let large: Vec<_> = (0..2)
        .map(|_| pm.alloc(PageSize::Size2MiB).unwrap())
        .collect();
    assert_eq!(
        pm.alloc(PageSize::Size2MiB).err(),
        Some(AllocError::OutOfMemory)
    );
    assert_eq!(pm.allocated_pages(), 1024);

    // A 2 MiB folio from the stash splits like any other; its pieces go back to the
    // allocator and the chunk is whole again.
    let mut large = large.into_iter();
    drop(large.next());
    let f = pm.alloc(PageSize::Size2MiB).unwrap();
    let head = f.index().number();
    let pieces = f.trylock().unwrap().split().unwrap();
    assert_eq!(pieces.len(), 512);
    drop(pieces);
    assert_eq!(pm.allocated_pages(), 512);
    let f = pm.alloc(PageSize::Size2MiB).unwrap();
    assert_eq!(f.index().number(), head);
    drop(f);
    drop(large);

    // A folio that is out keeps the pagemap registered; one in the stash does not.
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    assert_eq!(
        space.unregister(id).err(),
        Some(UnregisterError::PagesInUse { pages: 1 })
    );
    drop(f);
    space.unregister(id).unwrap();
    assert_eq!(
        pm.alloc(PageSize::Size4KiB).err(),
        Some(AllocError::NotRegistered)
    );
    let id = space.register(&pm).unwrap();
    assert_eq!(pm.whole_chunks(), 2);
    drop(pm.alloc(PageSize::Size2MiB).unwrap());
    space.unregister(id).unwrap();
}

/// A folio of the stash put into a `PageCache` leaves the stash for the cache, and the
/// cache hands it out and gives it back like its own pages.
#[test]
fn a_stashed_folio_can_go_into_a_page_cache() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    let batch: Vec<_> = (0..8)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    drop(batch);
    let mut cache = PageCache::new(&pm);
    // From the stash, into the cache.
    let f = pm.alloc(PageSize::Size4KiB).unwrap();
    let page = f.index().number() - id.base().number();
    cache.put(f);
    assert_eq!(cache.cached().last(), Some(page));
    assert_eq!(pm.allocated_pages(), 1);
    let g = cache.alloc().unwrap();
    assert_eq!(g.index().number() - id.base().number(), page);
    // Dropped outside the cache: back to the allocator, not to the stash.
    drop(g);
    drop(cache);
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(pm.whole_chunks(), 2);
    space.unregister(id).unwrap();
}

/// Metadata must be zero: a never-used chunk whose records are not is found when the
/// allocator first opens it, and never handed out; the chunks before it still work.
#[test]
fn non_zero_metadata_is_refused_when_its_chunk_is_opened() {
    let ops = Recorder::default();
    let mut meta = metadata(1024);
    {
        // A pagemap over the second chunk's records leaves them used (a 4 KiB folio
        // never freed): no longer zero.
        let used = DevicePagemap::new(512, Owner::new(2), &ops, &mut meta[512..]).unwrap();
        let space = DevicePrivateSpace::new();
        space.register(&used).unwrap();
        std::mem::forget(used.alloc(PageSize::Size4KiB).unwrap());
    }
    let pm = DevicePagemap::new(1024, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let first = pm.alloc(PageSize::Size2MiB).unwrap();
    let err = AllocError::NonZeroMetadata { page: 512 };
    assert_eq!(pm.alloc(PageSize::Size2MiB).err(), Some(err));
    assert_eq!(pm.alloc(PageSize::Size4KiB).err(), Some(err));
    assert_eq!(PageCache::new(&pm).alloc().err(), Some(err));
    drop(first);
    // The clean chunk is reused; the dirty one still is not.
    let again = pm.alloc(PageSize::Size2MiB).unwrap();
    assert_eq!(pm.alloc(PageSize::Size2MiB).err(), Some(err));
    drop(again);
    assert!(err.to_string().contains("512"));
}

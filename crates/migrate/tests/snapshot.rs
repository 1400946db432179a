//! Range snapshots report every kind of page, fault what they are asked to, and the
//! sequence-retry loop notices invalidations.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, Pfn};

type W = HmmPfn;

fn fault_in<F: PagingFormat>(space: &'static Space<F>) -> impl FnMut(u64, bool) -> bool {
    move |va, write| model::anonymous_fault(space, va, write)
}

fn every_kind<F: PagingFormat>() {
    let w = world::<F>(4096, 4096);
    // Pages: 0 absent, 1 read-only, 2 writable, 3 own device, 4 other device, then a
    // 2 MiB page at +2 MiB, and the page before the region (no VMA).
    w.populate(BASE + KIB4, 4 * KIB4, false);
    w.space.protect(BASE + KIB4, KIB4, false).unwrap();
    w.to_device(w.device, BASE + 3 * KIB4, KIB4, false);
    w.to_device(w.other, BASE + 4 * KIB4, KIB4, false);
    w.populate(BASE + MIB2, MIB2, true);
    let mut pfns = vec![W::none(); 6];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + 6 * KIB4,
        pfns: &mut pfns,
        default_flags: W::none(),
        pfn_flags_mask: W::none(),
        owner: Some(w.device.owner),
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    let frame = |va: u64| match w.space.read().lookup(va).unwrap().1 {
        Entry::Leaf { pfn, .. } => pfn,
        other => panic!("{other:?}"),
    };
    assert_eq!(pfns[0], W::none());
    assert_eq!(pfns[1], W::system(frame(BASE + KIB4), false, 0).unwrap());
    assert_eq!(pfns[2], W::system(frame(BASE + 2 * KIB4), true, 0).unwrap());
    match pfns[3].target() {
        Some(PageTarget::Device(_)) => {
            assert!(pfns[3].is_writable() && pfns[3].is_device_private())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pfns[4], W::none(), "another owner's page, not asked for");
    assert_eq!(pfns[5], W::none());
    // The 2 MiB page: every word has order 9.
    let mut huge = vec![W::none(); 512];
    let mut range = HmmRange {
        start: BASE + MIB2,
        end: BASE + 2 * MIB2,
        pfns: &mut huge,
        default_flags: W::none(),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    let base = frame(BASE + MIB2);
    for (k, word) in huge.iter().enumerate() {
        assert_eq!(
            *word,
            W::system(Pfn::new(base.number() + k as u64), true, 9).unwrap()
        );
    }
    // Outside any region: ERROR, or a failure if faulting is asked for.
    let mut one = vec![W::none(); 1];
    let mut range = HmmRange {
        start: BASE - KIB4,
        end: BASE,
        pfns: &mut one,
        default_flags: W::none(),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    assert_eq!(one[0], W::error());
    let mut range = HmmRange {
        start: BASE - KIB4,
        end: BASE,
        pfns: &mut one,
        default_flags: W::from_raw(W::REQ_FAULT),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    assert_eq!(
        snapshot(w.space, &mut range, &mut fault_in(w.space)),
        Err(SnapshotError::Fault { va: BASE - KIB4 })
    );
    // Asking for every page writable: the absent one is faulted in, the read-only one
    // made writable, the other owner's page brought back; our own stays on the device.
    let mut pfns = vec![W::from_raw(W::DMA_MAPPED); 6];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + 6 * KIB4,
        pfns: &mut pfns,
        default_flags: W::from_raw(W::REQ_FAULT | W::REQ_WRITE),
        pfn_flags_mask: W::from_raw(W::DMA_MAPPED),
        owner: Some(w.device.owner),
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    for (i, word) in pfns.iter().enumerate() {
        assert!(word.is_valid() && word.is_writable(), "page {i}: {word:?}");
        assert!(word.has(W::DMA_MAPPED), "passed through");
        assert_eq!(word.is_device_private(), i == 3);
    }
    assert_eq!(w.other.pagemap().allocated_pages(), 0);
    w.check_pattern(BASE + 4 * KIB4, KIB4);
    w.assert_quiescent();
}

#[test]
fn every_kind_x86_64() {
    every_kind::<X86_64>();
}

#[test]
fn every_kind_aarch64() {
    every_kind::<Aarch64>();
}

/// A page in the middle of a migration is busy when it is asked for.
/// A page the table maps but no region holds (the kernel shrank the region, or made it
/// inaccessible, and the caller looks before the table is cleaned) reads ERROR: the
/// region is looked at before the entry, as Linux looks at the VMA.
#[test]
fn the_region_comes_before_the_entry() {
    /// A memory map of one region, `[BASE, end)`, whose end can move.
    struct Shrinking(std::sync::atomic::AtomicU64);
    impl Vmas for Shrinking {
        fn find(&self, va: u64) -> Option<Vma> {
            let end = self.0.load(std::sync::atomic::Ordering::Relaxed);
            (BASE..end)
                .contains(&va)
                .then(|| Vma::anonymous(BASE, end, rw()))
        }
    }
    let w = world::<X86_64>(16, 4096);
    let map: &'static Shrinking = Box::leak(Box::new(Shrinking((BASE + 2 * KIB4).into())));
    let (space, _mmu, _tlb) = w.space_with_vmas(5, map);
    for va in [BASE, BASE + KIB4] {
        let pfn = w.ram.allocate(devpriv_pte::PageSize::Size4KiB).unwrap();
        space
            .map_page(va, pfn, devpriv_pte::PageSize::Size4KiB, true)
            .unwrap();
    }
    map.0
        .store(BASE + KIB4, std::sync::atomic::Ordering::Relaxed);
    let mut pfns = vec![W::none(); 2];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + 2 * KIB4,
        pfns: &mut pfns,
        default_flags: W::none(),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    snapshot(space, &mut range, &mut fault_in(space)).unwrap();
    assert!(pfns[0].is_valid());
    assert_eq!(pfns[1], W::error());
    let mut range = HmmRange {
        start: BASE,
        end: BASE + 2 * KIB4,
        pfns: &mut pfns,
        default_flags: W::from_raw(W::REQ_FAULT),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    assert_eq!(
        snapshot(space, &mut range, &mut fault_in(space)),
        Err(SnapshotError::Fault { va: BASE + KIB4 })
    );
    map.0
        .store(BASE + 2 * KIB4, std::sync::atomic::Ordering::Relaxed);
    w.unmap(space, BASE, 2 * KIB4);
}

#[test]
fn migration_entries_are_busy() {
    let w = world::<X86_64>(16, 4096);
    w.populate(BASE, KIB4, false);
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
    let mut pfns = vec![W::none(); 1];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + KIB4,
        pfns: &mut pfns,
        default_flags: W::none(),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    assert_eq!(pfns[0], W::none(), "not asked for: not present");
    let mut range = HmmRange {
        start: BASE,
        end: BASE + KIB4,
        pfns: &mut pfns,
        default_flags: W::from_raw(W::REQ_FAULT),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    assert!(matches!(
        snapshot(w.space, &mut range, &mut fault_in(w.space)),
        Err(SnapshotError::Busy(WaitFor::SystemFrame(_)))
    ));
    drop(m);
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    assert!(pfns[0].is_valid());
}

/// The sequence-retry loop: an invalidation between the snapshot and the commit makes
/// it start again; mainline's layout reports device pages as not present.
#[test]
fn snapshot_loop_retries_after_an_invalidation() {
    let w = world::<X86_64>(64, 4096);
    let rec = Recorder::leak();
    let sub = w.space.subscribe(BASE, BASE + REGION, rec).unwrap();
    w.populate(BASE, 4 * KIB4, false);
    let mut pfns = vec![W::none(); 4];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + 4 * KIB4,
        pfns: &mut pfns,
        default_flags: W::from_raw(W::REQ_FAULT),
        pfn_flags_mask: W::none(),
        owner: None,
    };
    let mut locks = 0;
    let mut invalidated = false;
    let got = snapshot_and_commit(
        w.space,
        sub,
        &mut range,
        &mut fault_in(w.space),
        || {
            locks += 1;
            if !invalidated {
                // Something changes the range after the snapshot, before the commit.
                invalidated = true;
                w.space.protect(BASE, KIB4, false).unwrap();
            }
        },
        |_, words| words.iter().filter(|w| w.is_valid()).count(),
        8,
    )
    .unwrap();
    assert_eq!(got, 4);
    assert_eq!(locks, 2, "the first commit was refused");
    assert!(!pfns[0].is_writable(), "the second snapshot saw the change");
    // Mainline's layout cannot name device pages.
    w.to_device(w.device, BASE, KIB4, false);
    let mut mainline = vec![HmmPfn::<Mainline>::none(); 1];
    let mut range = HmmRange {
        start: BASE,
        end: BASE + KIB4,
        pfns: &mut mainline,
        default_flags: HmmPfn::none(),
        pfn_flags_mask: HmmPfn::none(),
        owner: Some(w.device.owner),
    };
    snapshot(w.space, &mut range, &mut fault_in(w.space)).unwrap();
    assert_eq!(range.pfns[0], HmmPfn::none());
    w.space.unsubscribe(sub).unwrap();
    assert_eq!(
        snapshot_and_commit(
            w.space,
            sub,
            &mut range,
            &mut fault_in(w.space),
            || (),
            |_, _| (),
            1
        ),
        Err(SnapshotError::Notifier(NotifierError::Stale))
    );
}

#[test]
fn bad_ranges() {
    let w = world::<X86_64>(16, 16);
    let mut pfns = vec![W::none(); 2];
    for (start, end, err) in [
        (
            BASE + 1,
            BASE + KIB4,
            SnapshotError::Unaligned { value: BASE + 1 },
        ),
        (BASE, BASE, SnapshotError::EmptyRange),
        (
            BASE,
            BASE + KIB4,
            SnapshotError::SliceLength { pages: 1, words: 2 },
        ),
    ] {
        let mut range = HmmRange {
            start,
            end,
            pfns: &mut pfns,
            default_flags: W::none(),
            pfn_flags_mask: W::none(),
            owner: None,
        };
        assert_eq!(
            snapshot(w.space, &mut range, &mut fault_in(w.space)),
            Err(err)
        );
    }
}

//! Loom models of the reference-count, lock and free-list races.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p devpriv-pagemap --release --test loom`.
#![cfg(loom)]

use devpriv_pagemap::*;
use devpriv_pte::PageSize;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// A driver that counts `folio_free` calls.
struct Counter(AtomicUsize);

impl PagemapOps for Counter {
    fn folio_free(&self, _: Folio<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A registered pagemap of `pages` pages, leaked so that loom threads can share it.
struct Fixture {
    ops: &'static Counter,
    pagemap: &'static DevicePagemap<'static>,
}

fn fixture(pages: u64) -> Fixture {
    let ops: &'static Counter = Box::leak(Box::new(Counter(AtomicUsize::new(0))));
    let meta: &'static mut [PageMeta] = Box::leak((0..pages).map(|_| PageMeta::new()).collect());
    let pagemap: &'static DevicePagemap<'static> = Box::leak(Box::new(
        DevicePagemap::new(pages, Owner::new(1), ops, meta).unwrap(),
    ));
    let space: &'static DevicePrivateSpace<'static> =
        Box::leak(Box::new(DevicePrivateSpace::new()));
    space.register(pagemap).unwrap();
    Fixture { ops, pagemap }
}

impl Fixture {
    fn freed(&self) -> usize {
        self.ops.0.load(Ordering::Relaxed)
    }
}

/// Two threads put the last two references: exactly one frees the folio, once.
#[test]
fn two_threads_put_the_last_references() {
    loom::model(|| {
        let fx = fixture(2);
        let f = fx.pagemap.alloc(PageSize::Size4KiB).unwrap();
        let g = f.get().unwrap();
        let view = f.folio();
        let t = thread::spawn(move || drop(g));
        drop(f);
        t.join().unwrap();
        assert_eq!(fx.freed(), 1);
        assert_eq!(fx.pagemap.allocated_pages(), 0);
        assert_eq!(view.refcount(), 0);
    });
}

/// A put of the last reference races a try_get: either the try_get fails and the folio
/// is freed by the put, or it wins and the folio lives until its reference is put.
#[test]
fn put_races_try_get() {
    loom::model(|| {
        let fx = fixture(2);
        let f = fx.pagemap.alloc(PageSize::Size4KiB).unwrap();
        let page = f.head();
        let view = f.folio();
        let t = thread::spawn(move || match page.try_get() {
            Ok(g) => {
                assert_eq!(g.folio(), view);
                drop(g);
                true
            }
            Err(e) => {
                assert_eq!(e, FolioError::NotAllocated);
                false
            }
        });
        drop(f);
        t.join().unwrap();
        assert_eq!(fx.freed(), 1);
        assert_eq!(fx.pagemap.allocated_pages(), 0);
        assert_eq!(fx.pagemap.free_pages(), 2);
    });
}

/// One thread locks the folio, then unlocks and puts its reference; the other puts the
/// other reference at any moment, even while the lock is held: the folio is freed
/// exactly once, by whichever put is last, and never while locked.
#[test]
fn lock_races_free() {
    loom::model(|| {
        let fx = fixture(1);
        let f = fx.pagemap.alloc(PageSize::Size4KiB).unwrap();
        let g = f.get().unwrap();
        let view = f.folio();
        let t = thread::spawn(move || {
            let locked = g.trylock().expect("no one else locks");
            assert!(locked.refcount() >= 1);
            drop(locked);
        });
        drop(f);
        t.join().unwrap();
        assert!(!view.is_locked());
        assert_eq!(fx.freed(), 1);
        assert_eq!(fx.pagemap.allocated_pages(), 0);
    });
}

/// Two threads allocate and free concurrently: distinct pages, nothing lost.
#[test]
fn concurrent_alloc_and_free() {
    loom::model(|| {
        let fx = fixture(3);
        let pm = fx.pagemap;
        let t = thread::spawn(move || pm.alloc(PageSize::Size4KiB).unwrap().into_raw());
        drop(pm.alloc(PageSize::Size4KiB).unwrap());
        let g = pm.alloc(PageSize::Size4KiB).unwrap();
        let theirs = t.join().unwrap();
        assert_ne!(theirs.head(), g.head());
        // SAFETY: the other thread's `into_raw` left this reference to us alone.
        drop(unsafe { FolioRef::from_raw(theirs) });
        drop(g);
        assert_eq!(pm.allocated_pages(), 0);
        assert_eq!(fx.freed(), 3);
    });
}

/// The last put of a folio gives it back to the pagemap's stash (no lock) while another
/// thread allocates (claiming it from the stash, or finding the pagemap full) and a third
/// reads the counts (which drains the stash under the lock): the page is handed out at
/// most once, and never lost.
#[test]
fn stash_put_races_claim_and_drain() {
    loom::model(|| {
        let fx = fixture(1);
        let pm = fx.pagemap;
        // The one page joins the stash when allocated, and goes back there when freed.
        let f = pm.alloc(PageSize::Size4KiB).unwrap();
        let view = f.folio();
        let putter = thread::spawn(move || drop(f));
        let reader = thread::spawn(move || pm.allocated_pages());
        let g = pm.alloc(PageSize::Size4KiB);
        putter.join().unwrap();
        assert!(reader.join().unwrap() <= 1);
        match g {
            Ok(g) => {
                assert_eq!(g.folio(), view);
                assert_eq!(g.refcount(), 1);
                assert_eq!(pm.allocated_pages(), 1);
                drop(g);
                assert_eq!(fx.freed(), 2);
            }
            Err(e) => {
                assert_eq!(e, AllocError::OutOfMemory);
                assert_eq!(fx.freed(), 1);
            }
        }
        assert_eq!(pm.allocated_pages(), 0);
        assert_eq!(view.refcount(), 0);
        // Whatever happened, the page can be allocated again.
        drop(pm.alloc(PageSize::Size4KiB).unwrap());
    });
}

/// A split of a 2 MiB folio races a try_get on one of its tail pages. The try_get
/// either references the whole 2 MiB folio (and the split is refused as busy), fails
/// while the folio is frozen, or references the new 4 KiB folio. Nothing is lost.
#[test]
fn split_races_try_get_on_a_tail() {
    use std::sync::atomic::{AtomicUsize as Seen, Ordering::Relaxed};
    // Which outcomes the exploration reached (busy, got the 4 KiB folio, failed).
    static SEEN: [Seen; 3] = [Seen::new(0), Seen::new(0), Seen::new(0)];
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.max_branches = 50_000;
    builder.check(|| {
        let fx = fixture(512);
        let f = fx.pagemap.alloc_locked(PageSize::Size2MiB).unwrap();
        let view = f.folio();
        let tail = f.page(5).unwrap();
        let t = thread::spawn(move || tail.try_get().ok().map(FolioRef::into_raw));
        let split = f.split();
        // SAFETY: the other thread's `into_raw` left its reference to us alone.
        let got = t.join().unwrap().map(|g| unsafe { FolioRef::from_raw(g) });
        match (split, got) {
            (
                Err(SplitError {
                    folio,
                    error: FolioError::SplitBusy { refs: 2 },
                }),
                Some(g),
            ) => {
                assert_eq!(g.folio(), view);
                SEEN[0].fetch_add(1, Relaxed);
                drop(g);
                drop(folio);
            }
            (Ok(parts), got) => {
                SEEN[if got.is_some() { 1 } else { 2 }].fetch_add(1, Relaxed);
                if let Some(g) = got {
                    assert_eq!(g.head(), tail);
                    assert_eq!(g.size(), PageSize::Size4KiB);
                    drop(g);
                }
                drop(parts);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.pagemap.allocated_pages(), 0);
        assert_eq!(fx.pagemap.whole_chunks(), 1);
    });
    for seen in &SEEN {
        assert!(seen.load(Relaxed) > 0, "an outcome was never explored");
    }
}

/// A page cache turns a chunk's first page (which holds the chunk header) from a folio
/// into a cached page and back without the allocator lock, while another thread
/// changes that header under the lock: neither update may be lost.
#[test]
fn page_cache_races_the_allocator_on_a_chunk_header() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.max_branches = 50_000;
    builder.check(|| {
        let fx = fixture(512);
        let pm = fx.pagemap;
        // A chunk hands out its pages 0, 1 and 2 (which carry its fields) last.
        let others: Vec<_> = (0..509)
            .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
            .collect();
        let first = pm.alloc(PageSize::Size4KiB).unwrap();
        assert_eq!(first.head().number(), 0);
        let t = thread::spawn(move || {
            drop(pm.alloc(PageSize::Size4KiB).unwrap());
        });
        let mut cache = PageCache::new(pm);
        cache.put(first);
        let again = cache.alloc().unwrap();
        assert_eq!(again.head().number(), 0);
        t.join().unwrap();
        cache.put(again);
        drop(cache);
        drop(others);
        assert_eq!(pm.allocated_pages(), 0);
        assert_eq!(pm.whole_chunks(), 1);
        assert_eq!(fx.freed(), 3 + 509);
    });
}

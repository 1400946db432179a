//! Random alloc / free / split / get / try_get / put / lock sequences against a model:
//! no page is lost, none is handed out twice, and every count matches.
#![cfg(not(loom))]

use std::collections::BTreeMap;
use std::sync::Mutex;

use devpriv_pagemap::*;
use devpriv_pte::{DeviceIndex, PageSize};
use proptest::prelude::*;

/// Three full 2 MiB chunks and a 37-page tail that only serves 4 KiB folios.
const FULL_CHUNKS: u64 = 3;
const PAGES: u64 = FULL_CHUNKS * 512 + 37;

#[derive(Default)]
struct Recorder {
    freed: Mutex<Vec<(u64, PageSize)>>,
}

impl PagemapOps for Recorder {
    fn folio_free(&self, folio: Folio<'_>) {
        self.freed
            .lock()
            .unwrap()
            .push((folio.head().number(), folio.size()));
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { large: bool },
    Put(usize),
    Get(usize),
    TryGet(u64),
    Lock(usize),
    Unlock(usize),
    Split(usize),
    FailNext { large: bool, n: u32 },
    CacheAlloc,
    CachePut(usize),
    CacheDrain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(|large| Op::Alloc { large }),
        4 => any::<usize>().prop_map(Op::Put),
        1 => any::<usize>().prop_map(Op::Get),
        2 => (0..PAGES).prop_map(Op::TryGet),
        1 => any::<usize>().prop_map(Op::Lock),
        1 => any::<usize>().prop_map(Op::Unlock),
        1 => any::<usize>().prop_map(Op::Split),
        1 => (any::<bool>(), 0u32..3).prop_map(|(large, n)| Op::FailNext { large, n }),
        3 => Just(Op::CacheAlloc),
        3 => any::<usize>().prop_map(Op::CachePut),
        1 => Just(Op::CacheDrain),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ModelFolio {
    large: bool,
    refs: u64,
    locked: bool,
}

/// A handle the test owns: a reference, or a reference and the lock.
enum Handle<'a> {
    Ref(FolioRef<'a>),
    Locked(LockedFolio<'a>),
}

impl<'a> Handle<'a> {
    fn folio(&self) -> Folio<'a> {
        match self {
            Self::Ref(f) => f.folio(),
            Self::Locked(f) => f.folio(),
        }
    }
}

#[derive(Default)]
struct Model {
    /// Allocated folios by head page number.
    folios: BTreeMap<u64, ModelFolio>,
    fail_small: u32,
    fail_large: u32,
    /// Free pages held by the page cache.
    cached: Vec<u64>,
}

impl Model {
    /// The head of the folio holding page `p`, if allocated.
    fn owner(&self, p: u64) -> Option<u64> {
        let (&head, f) = self.folios.range(..=p).next_back()?;
        let pages = if f.large { 512 } else { 1 };
        (p < head + pages).then_some(head)
    }
    fn allocated_pages(&self) -> u64 {
        self.folios
            .values()
            .map(|f| if f.large { 512 } else { 1 })
            .sum()
    }
    fn chunk_free(&self, c: u64) -> bool {
        (c * 512..(c + 1) * 512).all(|p| self.owner(p).is_none())
            && !self.cached.iter().any(|&p| p / 512 == c)
    }
    /// Pages neither in a folio nor cached.
    fn available(&self) -> u64 {
        PAGES - self.allocated_pages() - self.cached.len() as u64
    }
    fn whole_chunks(&self) -> u64 {
        (0..FULL_CHUNKS).filter(|&c| self.chunk_free(c)).count() as u64
    }
}

fn check(pm: &DevicePagemap<'_>, model: &Model) {
    let cached = model.cached.len() as u64;
    assert_eq!(pm.allocated_pages(), model.allocated_pages() + cached);
    assert_eq!(pm.free_pages(), PAGES - model.allocated_pages() - cached);
    for &p in &model.cached {
        assert!(model.owner(p).is_none(), "a cached page is also a folio");
        assert_eq!(
            pm.page(p).unwrap().try_get().err(),
            Some(FolioError::NotAllocated)
        );
    }
    assert_eq!(pm.whole_chunks(), model.whole_chunks());
    for (&head, f) in &model.folios {
        let folio = pm.page(head).unwrap().folio();
        assert_eq!(folio.head().number(), head);
        assert_eq!(folio.size() == PageSize::Size2MiB, f.large);
        assert_eq!(folio.refcount(), f.refs);
        assert_eq!(folio.is_locked(), f.locked);
    }
}

fn run(ops: Vec<Op>) {
    let ops_impl = Recorder::default();
    let mut meta: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new()).collect();
    let pm = DevicePagemap::new(PAGES, Owner::new(1), &ops_impl, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    let mut model = Model::default();
    let mut cache = PageCache::new(&pm);
    // The handles the test owns; the model counts them per folio.
    let mut held: Vec<Handle<'_>> = Vec::new();
    let head_of = |h: &Handle<'_>, model: &Model| {
        let f = h.folio();
        let head = f.head().number();
        assert_eq!(f.size() == PageSize::Size2MiB, model.folios[&head].large);
        head
    };

    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Alloc { large } => {
                let size = if large {
                    PageSize::Size2MiB
                } else {
                    PageSize::Size4KiB
                };
                let counter = if large {
                    &mut model.fail_large
                } else {
                    &mut model.fail_small
                };
                let result = pm.alloc(size);
                if *counter > 0 {
                    *counter -= 1;
                    assert_eq!(result.err(), Some(AllocError::Injected));
                    continue;
                }
                let possible = if large {
                    model.whole_chunks() > 0
                } else {
                    model.available() > 0
                };
                match result {
                    Ok(f) => {
                        assert!(possible);
                        let head = f.head().number();
                        assert_eq!(f.index(), DeviceIndex::new(id.base().number() + head));
                        if large {
                            assert_eq!(head % 512, 0);
                            assert!(head < FULL_CHUNKS * 512);
                            assert!(model.chunk_free(head / 512), "handed out twice");
                        } else {
                            assert!(model.owner(head).is_none(), "handed out twice");
                        }
                        assert_eq!(f.refcount(), 1);
                        model.folios.insert(
                            head,
                            ModelFolio {
                                large,
                                refs: 1,
                                locked: false,
                            },
                        );
                        held.push(Handle::Ref(f));
                    }
                    Err(e) => {
                        assert_eq!(e, AllocError::OutOfMemory);
                        assert!(!possible, "a page was lost");
                    }
                }
            }
            Op::Put(k) | Op::CachePut(k) if !held.is_empty() => {
                let through_cache = matches!(op, Op::CachePut(_));
                let k = k % held.len();
                let handle = held.swap_remove(k);
                let head = head_of(&handle, &model);
                let f = handle.folio();
                let mf = model.folios.get_mut(&head).unwrap();
                let mf_large = mf.large;
                let freed_before = ops_impl.freed.lock().unwrap().len();
                match handle {
                    // A locked handle unlocks, then puts.
                    Handle::Locked(l) => {
                        mf.locked = false;
                        if through_cache {
                            cache.put(l.unlock());
                        } else {
                            drop(l);
                        }
                    }
                    Handle::Ref(r) if through_cache => cache.put(r),
                    Handle::Ref(r) => drop(r),
                }
                mf.refs -= 1;
                let freed = ops_impl.freed.lock().unwrap().clone();
                if mf.refs == 0 {
                    assert_eq!(freed.len(), freed_before + 1);
                    assert_eq!(freed.last().unwrap().0, head);
                    model.folios.remove(&head);
                    assert_eq!(f.refcount(), 0);
                    assert_eq!(f.head().try_get().err(), Some(FolioError::NotAllocated));
                    if through_cache {
                        // A 4 KiB page went into the cache (which may have handed a
                        // batch back to the allocator to make room).
                        let now: Vec<u64> = cache.cached().collect();
                        if !mf_large {
                            assert_eq!(now.last(), Some(&head));
                        }
                        model.cached = now;
                    }
                } else {
                    assert_eq!(freed.len(), freed_before);
                }
            }
            Op::Get(k) if !held.is_empty() => {
                let handle = &held[k % held.len()];
                let head = head_of(handle, &model);
                let new = match handle {
                    Handle::Ref(r) => r.get().unwrap(),
                    Handle::Locked(l) => l.get().unwrap(),
                };
                model.folios.get_mut(&head).unwrap().refs += 1;
                held.push(Handle::Ref(new));
            }
            Op::TryGet(p) => {
                let page = space
                    .lookup(DeviceIndex::new(id.base().number() + p))
                    .unwrap();
                match model.owner(p) {
                    Some(head) => {
                        let f = page.try_get().unwrap();
                        assert_eq!(f.head().number(), head);
                        model.folios.get_mut(&head).unwrap().refs += 1;
                        held.push(Handle::Ref(f));
                    }
                    None => assert_eq!(page.try_get().err(), Some(FolioError::NotAllocated)),
                }
            }
            Op::Lock(k) if !held.is_empty() => {
                let k = k % held.len();
                let head = head_of(&held[k], &model);
                let mf = model.folios.get_mut(&head).unwrap();
                if let Handle::Ref(_) = held[k] {
                    let Handle::Ref(r) = held.swap_remove(k) else {
                        unreachable!()
                    };
                    match r.trylock() {
                        Ok(l) => {
                            assert!(!mf.locked, "locked twice");
                            mf.locked = true;
                            held.push(Handle::Locked(l));
                        }
                        Err(r) => {
                            assert!(mf.locked, "trylock failed on an unlocked folio");
                            held.push(Handle::Ref(r));
                        }
                    }
                }
            }
            Op::Unlock(k) if !held.is_empty() => {
                let k = k % held.len();
                if let Handle::Locked(_) = held[k] {
                    let Handle::Locked(l) = held.swap_remove(k) else {
                        unreachable!()
                    };
                    let head = l.head().number();
                    held.push(Handle::Ref(l.unlock()));
                    model.folios.get_mut(&head).unwrap().locked = false;
                }
            }
            Op::Split(k) if !held.is_empty() => {
                let k = k % held.len();
                if let Handle::Locked(_) = held[k] {
                    let Handle::Locked(l) = held.swap_remove(k) else {
                        unreachable!()
                    };
                    let head = l.head().number();
                    let mf = model.folios[&head];
                    assert!(mf.locked);
                    let expected = if !mf.large {
                        Err(FolioError::SplitNotLarge)
                    } else if mf.refs != 1 {
                        Err(FolioError::SplitBusy { refs: mf.refs })
                    } else {
                        Ok(())
                    };
                    match l.split() {
                        Ok(parts) => {
                            assert_eq!(expected, Ok(()));
                            for (i, part) in parts.enumerate() {
                                assert_eq!(part.head().number(), head + i as u64);
                                assert_eq!(part.size(), PageSize::Size4KiB);
                                model.folios.insert(
                                    head + i as u64,
                                    ModelFolio {
                                        large: false,
                                        refs: 1,
                                        locked: true,
                                    },
                                );
                                held.push(Handle::Locked(part));
                            }
                        }
                        Err(e) => {
                            assert_eq!(Err(e.error), expected);
                            held.push(Handle::Locked(e.folio));
                        }
                    }
                }
            }
            Op::CacheAlloc => {
                let result = cache.alloc();
                if model.fail_small > 0 {
                    model.fail_small -= 1;
                    assert_eq!(result.err(), Some(AllocError::Injected));
                    continue;
                }
                let possible = !model.cached.is_empty() || model.available() > 0;
                match result {
                    Ok(f) => {
                        assert!(possible);
                        let head = f.head().number();
                        assert_eq!(f.index(), DeviceIndex::new(id.base().number() + head));
                        assert!(model.owner(head).is_none(), "handed out twice");
                        assert_eq!(f.size(), PageSize::Size4KiB);
                        model.folios.insert(
                            head,
                            ModelFolio {
                                large: false,
                                refs: 1,
                                locked: false,
                            },
                        );
                        held.push(Handle::Ref(f));
                        model.cached = cache.cached().collect();
                        assert!(!model.cached.contains(&head));
                    }
                    Err(e) => {
                        assert_eq!(e, AllocError::OutOfMemory);
                        assert!(!possible, "a page was lost");
                    }
                }
            }
            Op::CacheDrain => {
                cache.drain();
                model.cached.clear();
            }
            Op::FailNext { large, n } => {
                let size = if large {
                    PageSize::Size2MiB
                } else {
                    PageSize::Size4KiB
                };
                pm.inject_alloc_failures(size, AllocFailures::Next(n));
                *(if large {
                    &mut model.fail_large
                } else {
                    &mut model.fail_small
                }) = n;
            }
            _ => {}
        }
        // The counts are checked after every third operation only: reading them gives
        // the pagemap's stash back to the allocator, and in between the stash is used.
        if i % 3 == 2 {
            check(&pm, &model);
        }
    }

    // Release everything: the pagemap is whole again and nothing was lost.
    drop(cache);
    model.cached.clear();
    pm.inject_alloc_failures(PageSize::Size4KiB, AllocFailures::Never);
    pm.inject_alloc_failures(PageSize::Size2MiB, AllocFailures::Never);
    for handle in held {
        let head = head_of(&handle, &model);
        let mf = model.folios.get_mut(&head).unwrap();
        if let Handle::Locked(_) = handle {
            mf.locked = false;
        }
        drop(handle);
        mf.refs -= 1;
        if mf.refs == 0 {
            model.folios.remove(&head);
        }
    }
    check(&pm, &model);
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(pm.whole_chunks(), FULL_CHUNKS);
    let large: Vec<_> = (0..FULL_CHUNKS)
        .map(|_| pm.alloc(PageSize::Size2MiB).unwrap())
        .collect();
    let small: Vec<_> = (0..37)
        .map(|_| pm.alloc(PageSize::Size4KiB).unwrap())
        .collect();
    assert_eq!(
        pm.alloc(PageSize::Size4KiB).err(),
        Some(AllocError::OutOfMemory)
    );
    drop(large);
    drop(small);
    space.unregister(id).unwrap();
}

/// Longest operation sequence: Miri, which checks every step slowly, runs short ones.
const MAX_OPS: usize = if cfg!(miri) { 12 } else { 200 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        run(ops);
    }
}

/// A deterministic long run that fills and drains the pagemap many times over.
#[test]
fn fill_and_drain() {
    let mut ops = Vec::new();
    for round in 0..6 {
        for i in 0..600 {
            ops.push(Op::Alloc {
                large: (i + round) % 7 == 0,
            });
        }
        for i in 0..700 {
            ops.push(Op::Put(i * 31 + round));
        }
    }
    run(ops);
}

/// `PROPTEST_CASES` if set (Miri runs a handful), else 256.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

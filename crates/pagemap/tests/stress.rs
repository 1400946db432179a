//! Many threads allocating, splitting, referencing and freeing at once (real threads,
//! not loom): afterwards every page is free and every chunk whole again.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};

use devpriv_pagemap::*;
use devpriv_pte::{DeviceIndex, PageSize};

struct Counter(AtomicUsize);

impl PagemapOps for Counter {
    fn folio_free(&self, _: Folio<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const FULL_CHUNKS: u64 = 4;
const PAGES: u64 = FULL_CHUNKS * 512 + 100;
/// Operations per thread; Miri (which checks them for data races) runs a few hundred.
const OPERATIONS: u64 = if cfg!(miri) { 300 } else { 100_000 };

#[test]
fn threads_hammer_one_pagemap() {
    let ops = Counter(AtomicUsize::new(0));
    let mut meta: Vec<PageMeta> = (0..PAGES).map(|_| PageMeta::new()).collect();
    let pm = DevicePagemap::new(PAGES, Owner::new(1), &ops, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    let id = space.register(&pm).unwrap();
    let allocations = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (pm, space, allocations) = (&pm, &space, &allocations);
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ t;
                let mut rng = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut held: Vec<FolioRef<'_>> = Vec::new();
                let mut cache = PageCache::new(pm);
                for _ in 0..OPERATIONS {
                    let r = rng();
                    match r % 8 {
                        0..=2 => {
                            let f = if r & 16 != 0 {
                                cache.alloc()
                            } else {
                                pm.alloc(PageSize::Size4KiB)
                            };
                            if let Ok(f) = f {
                                allocations.fetch_add(1, Ordering::Relaxed);
                                held.push(f);
                            }
                        }
                        3 => {
                            if let Ok(f) = pm.alloc(PageSize::Size2MiB) {
                                allocations.fetch_add(1, Ordering::Relaxed);
                                if r & 8 != 0 {
                                    // Lock it, split it and keep a few of the pieces.
                                    let locked = f.trylock().expect("no one else locks it");
                                    match locked.split() {
                                        Ok(parts) => {
                                            allocations.fetch_add(511, Ordering::Relaxed);
                                            for (i, g) in parts.enumerate() {
                                                if i % 64 == 0 {
                                                    held.push(g.unlock());
                                                }
                                            }
                                        }
                                        Err(SplitError {
                                            folio,
                                            error: FolioError::SplitBusy { .. },
                                        }) => held.push(folio.unlock()),
                                        Err(e) => panic!("{e:?}"),
                                    }
                                } else {
                                    held.push(f);
                                }
                            }
                        }
                        4 => {
                            // Reference a random page (maybe someone else's) and drop it.
                            let p = (r >> 8) % PAGES;
                            let page = space
                                .lookup(DeviceIndex::new(id.base().number() + p))
                                .unwrap();
                            if let Ok(f) = page.try_get() {
                                // Lock and unlock it if no one holds the lock, then put.
                                let _ = f.trylock();
                            }
                        }
                        _ => {
                            if !held.is_empty() {
                                let k = (r >> 8) as usize % held.len();
                                let f = held.swap_remove(k);
                                if r & 16 != 0 {
                                    cache.put(f);
                                } else {
                                    drop(f);
                                }
                            }
                        }
                    }
                }
                drop(held);
            });
        }
    });
    assert_eq!(pm.allocated_pages(), 0);
    assert_eq!(pm.whole_chunks(), FULL_CHUNKS);
    assert_eq!(
        ops.0.load(Ordering::Relaxed),
        allocations.load(Ordering::Relaxed)
    );
    space.unregister(id).unwrap();
}

//! devpriv-pagemap benchmarks (one criterion group per summary row).
//!
//! - "pagemap: alloc+free order-0" / "order-9": 64 (resp. 16) folios allocated then
//!   freed per iteration, out of 1 GiB of device memory; the peer is
//!   `buddy_system_allocator`'s `FrameAllocator` on the same 262144 frames. Ours is
//!   thread-safe (a compare-exchange on the pagemap's stash per alloc, or the allocator's
//!   spin lock when the stash is empty; an atomic reference count; the driver's
//!   `folio_free` called through `dyn`); the peer is used through `&mut`, unlocked.
//!   For 4 KiB, `devpriv-page-cache` is the same work through a `PageCache`.
//! - "pagemap: index->page lookup": one `DevicePrivateSpace::lookup` over 4 pagemaps.
//! - "pagemap: register 1GiB" / "register 1TiB": where the work of bringing device
//!   memory up goes. `devpriv` is `DevicePagemap::new` + `register` + `unregister` over
//!   zeroed metadata the caller already has (O(1): registration touches no page's
//!   metadata). Beside it, what providing that zeroed metadata costs:
//!   `devpriv-memset-metadata` zeroes the 16-byte records up front (memory allocated
//!   and written once before timing) and then registers; `devpriv-calloc-metadata`
//!   allocates them with `alloc_zeroed` (the host's calloc: for large sizes fresh pages
//!   from `mmap` that nothing writes, so the zeroing happens later, a page fault per
//!   4 KiB of metadata, i.e. per 1 MiB of device memory, the first time the allocator
//!   touches it), registers and frees them. The peer `linux-style-struct-page`
//!   initialises a 64-byte record per page, as `memremap_pages` does, in memory
//!   allocated and written once before timing. For 1 TiB the up-front work does not fit
//!   this bench (4 GiB of metadata, 16 GiB of 64-byte records): the `-extrapolated`
//!   functions do it for 1 GiB of memory (a quarter of the metadata, a sixteenth of the
//!   records; either is far beyond the caches, so it runs at memory speed) and report
//!   the time scaled up linearly (x4, x16).
//! - "pagemap: 1-thread alloc/free" and "2-thread alloc/free": one alloc+free pair of a
//!   4 KiB folio per iteration and thread, all threads on one pagemap. `devpriv` gives
//!   each thread a `PageCache` (Linux's per-CPU lists); `devpriv-no-cache` calls the
//!   pagemap directly (its shared stash and lock); the peer is the frame allocator behind a
//!   `spin::Mutex`, the usual way to share it. Both allocators start in a steady state:
//!   one 4 KiB frame stays allocated throughout, so the peer's free lists hold split
//!   blocks (without it, every pair would split a merged 1 GiB block 18 times and merge
//!   it back) and devpriv's chunk stays split.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use buddy_system_allocator::FrameAllocator;
use criterion::{Criterion, criterion_group, criterion_main};
use devpriv_pagemap::{
    DevicePagemap, DevicePrivateSpace, Folio, Owner, PageCache, PageMeta, PagemapOps,
};
use devpriv_pte::{DeviceIndex, PageSize};

const FRAMES: usize = 1 << 18; // 1 GiB of 4 KiB pages

struct NoDriver;

impl PagemapOps for NoDriver {
    fn folio_free(&self, folio: Folio<'_>) {
        black_box(folio);
    }
}

fn quick<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

fn metadata(pages: usize) -> Vec<PageMeta> {
    (0..pages).map(|_| PageMeta::new()).collect()
}

fn buddy() -> FrameAllocator<33> {
    let mut fa = FrameAllocator::<33>::new();
    fa.add_frame(0, FRAMES);
    fa
}

fn alloc_free(c: &mut Criterion, size: PageSize, batch: usize, name: &str) {
    let mut meta = metadata(FRAMES);
    let pm = DevicePagemap::new(FRAMES as u64, Owner::new(1), &NoDriver, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let mut fa = buddy();
    let frames = size.frames() as usize;
    let mut g = quick(c, name);
    g.bench_function("devpriv", |b| {
        let mut held = Vec::with_capacity(batch);
        b.iter(|| {
            for _ in 0..batch {
                held.push(pm.alloc(size).unwrap());
            }
            held.clear();
        })
    });
    if size == PageSize::Size4KiB {
        g.bench_function("devpriv-page-cache", |b| {
            let mut cache = PageCache::new(&pm);
            let mut held = Vec::with_capacity(batch);
            b.iter(|| {
                for _ in 0..batch {
                    held.push(cache.alloc().unwrap());
                }
                for f in held.drain(..) {
                    cache.put(f);
                }
            })
        });
    }
    g.bench_function("buddy_system_allocator", |b| {
        let mut held = Vec::with_capacity(batch);
        b.iter(|| {
            for _ in 0..batch {
                held.push(black_box(fa.alloc(frames).unwrap()));
            }
            for f in held.drain(..) {
                fa.dealloc(f, frames);
            }
        })
    });
    g.finish();
}

fn alloc_free_order0(c: &mut Criterion) {
    alloc_free(c, PageSize::Size4KiB, 64, "pagemap: alloc+free order-0");
}

fn alloc_free_order9(c: &mut Criterion) {
    alloc_free(c, PageSize::Size2MiB, 16, "pagemap: alloc+free order-9");
}

fn lookup(c: &mut Criterion) {
    let mut meta: Vec<Vec<PageMeta>> = (0..4).map(|_| metadata(1 << 16)).collect();
    let maps: Vec<DevicePagemap<'_>> = meta
        .iter_mut()
        .enumerate()
        .map(|(i, m)| DevicePagemap::new(1 << 16, Owner::new(i as u64), &NoDriver, m).unwrap())
        .collect();
    let space = DevicePrivateSpace::new();
    let bases: Vec<u64> = maps
        .iter()
        .map(|m| space.register(m).unwrap().base().number())
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let indices: Vec<DeviceIndex> = (0..1024)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            DeviceIndex::new(bases[i % 4] + (x & 0xffff))
        })
        .collect();
    let mut g = quick(c, "pagemap: index->page lookup");
    g.bench_function("devpriv", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(space.lookup(black_box(indices[i])).unwrap().number())
        })
    });
    g.finish();
}

/// A 64-byte record like Linux's `struct page` of a ZONE_DEVICE page.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct LinuxStylePage {
    flags: u64,
    pgmap: u64,
    zone_device_data: u64,
    mapping: u64,
    index: u64,
    private: u64,
    mapcount_refcount: u64,
    memcg: u64,
}

/// Registers (and unregisters) a pagemap of `pages` pages over `meta` in a fresh space.
fn register_once(pages: usize, meta: &mut [PageMeta]) {
    let space = DevicePrivateSpace::new();
    let pm = DevicePagemap::new(pages as u64, Owner::new(1), &NoDriver, meta).unwrap();
    let id = space.register(black_box(&pm)).unwrap();
    black_box(space.lookup(id.base()).unwrap().number());
    space.unregister(id).unwrap();
}

/// Initialises `records` as `memremap_pages` initialises `struct page`s.
fn linux_style_init(records: &mut [LinuxStylePage]) {
    let pgmap = black_box(records.as_ptr() as u64);
    for (pfn, p) in records.iter_mut().enumerate() {
        *p = LinuxStylePage {
            flags: 1 << 10 | (pfn as u64 & 0x3f) << 56,
            pgmap,
            zone_device_data: 0,
            mapping: 0,
            index: pfn as u64,
            private: 0,
            mapcount_refcount: 1 << 32 | u32::MAX as u64,
            memcg: 0,
        };
    }
    black_box(records);
}

/// `alloc_zeroed` metadata for `pages` pages, register over it, free it.
fn calloc_and_register(pages: usize) {
    let layout = std::alloc::Layout::array::<PageMeta>(pages).unwrap();
    // SAFETY: non-zero size.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<PageMeta>();
    assert!(!raw.is_null());
    // SAFETY: a fresh zeroed allocation of `pages` records, used only through this slice
    // and freed after its last use below.
    let meta = unsafe { PageMeta::slice_from_zeroed_raw(raw, pages) };
    register_once(pages, meta);
    // SAFETY: allocated above with this layout; `meta` is no longer used.
    unsafe { std::alloc::dealloc(raw.cast(), layout) };
}

/// Times `work` `iters` times and scales the time by `scale` (the `-extrapolated`
/// functions: the work is `1 / scale` of the row's size).
fn scaled(iters: u64, scale: u32, mut work: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        work();
    }
    start.elapsed() * scale
}

fn register_1gib(c: &mut Criterion) {
    const PAGES: usize = 1 << 18;
    let mut g = quick(c, "pagemap: register 1GiB");
    let mut meta = metadata(PAGES);
    g.bench_function("devpriv", |b| b.iter(|| register_once(PAGES, &mut meta)));
    g.bench_function("devpriv-memset-metadata", |b| {
        b.iter(|| {
            meta.fill_with(PageMeta::new);
            register_once(PAGES, black_box(&mut meta));
        })
    });
    g.bench_function("devpriv-calloc-metadata", |b| {
        b.iter(|| calloc_and_register(PAGES))
    });
    let mut records = vec![LinuxStylePage::default(); PAGES];
    g.bench_function("linux-style-struct-page", |b| {
        b.iter(|| linux_style_init(&mut records))
    });
    g.finish();
}

fn register_1tib(c: &mut Criterion) {
    const PAGES: usize = 1 << 28;
    // 1 GiB of memory for each extrapolated function.
    const META_SCALE: u32 = 4;
    const LINUX_SCALE: u32 = 16;
    let mut g = quick(c, "pagemap: register 1TiB");
    {
        // 4 GiB of lazily zero-filled memory that registration never touches.
        let layout = std::alloc::Layout::array::<PageMeta>(PAGES).unwrap();
        // SAFETY: non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<PageMeta>();
        assert!(!raw.is_null());
        // SAFETY: a fresh zeroed allocation of `PAGES` records, used only through this
        // slice and freed after its last use below.
        let meta = unsafe { PageMeta::slice_from_zeroed_raw(raw, PAGES) };
        g.bench_function("devpriv", |b| b.iter(|| register_once(PAGES, &mut *meta)));
        // SAFETY: allocated above with this layout; `meta` is no longer used.
        unsafe { std::alloc::dealloc(raw.cast(), layout) };
    }
    g.bench_function("devpriv-calloc-metadata", |b| {
        b.iter(|| calloc_and_register(PAGES))
    });
    // The long ones: a few iterations per sample.
    g.sampling_mode(criterion::SamplingMode::Flat);
    {
        let part = PAGES / META_SCALE as usize;
        let mut meta = metadata(part);
        g.bench_function("devpriv-memset-metadata-extrapolated", |b| {
            b.iter_custom(|iters| {
                scaled(iters, META_SCALE, || {
                    meta.fill_with(PageMeta::new);
                    black_box(&meta);
                }) + scaled(iters, 1, || register_once(part, &mut meta))
            })
        });
    }
    {
        let mut records = vec![LinuxStylePage::default(); PAGES / LINUX_SCALE as usize];
        g.bench_function("linux-style-struct-page-extrapolated", |b| {
            b.iter_custom(|iters| scaled(iters, LINUX_SCALE, || linux_style_init(&mut records)))
        });
    }
    g.finish();
}

/// Runs `work(iters)` on `threads` threads at once and returns the wall time.
fn concurrently(threads: usize, iters: u64, work: &(dyn Fn(u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                work(iters);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins the threads before returning.
        start
    })
    .elapsed()
}

fn threads(c: &mut Criterion, n: usize, name: &str) {
    let mut meta = metadata(FRAMES);
    let pm = DevicePagemap::new(FRAMES as u64, Owner::new(1), &NoDriver, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    // The steady state: one frame stays allocated on each side (see the module docs).
    let pinned = pm.alloc(PageSize::Size4KiB).unwrap();
    let mut buddy = buddy();
    let buddy_pinned = buddy.alloc(1).unwrap();
    let fa = spin::Mutex::new(buddy);
    let mut g = quick(c, name);
    g.bench_function("devpriv", |b| {
        b.iter_custom(|iters| {
            concurrently(n, iters, &|iters| {
                let mut cache = PageCache::new(&pm);
                for _ in 0..iters {
                    let f = cache.alloc().unwrap();
                    cache.put(f);
                }
            })
        })
    });
    g.bench_function("devpriv-no-cache", |b| {
        b.iter_custom(|iters| {
            concurrently(n, iters, &|iters| {
                for _ in 0..iters {
                    drop(pm.alloc(PageSize::Size4KiB).unwrap());
                }
            })
        })
    });
    g.bench_function("buddy_system_allocator", |b| {
        b.iter_custom(|iters| {
            concurrently(n, iters, &|iters| {
                for _ in 0..iters {
                    let f = fa.lock().alloc(1).unwrap();
                    fa.lock().dealloc(black_box(f), 1);
                }
            })
        })
    });
    g.finish();
    drop(pinned);
    fa.lock().dealloc(buddy_pinned, 1);
}

fn one_thread(c: &mut Criterion) {
    threads(c, 1, "pagemap: 1-thread alloc/free");
}

fn two_threads(c: &mut Criterion) {
    threads(c, 2, "pagemap: 2-thread alloc/free");
}

/// Not timed: prints the metadata cost per page (from `size_of`) with the results.
fn metadata_bytes(_: &mut Criterion) {
    println!(
        "pagemap: metadata bytes per 4 KiB page: devpriv {} (METADATA_BYTES_PER_PAGE), \
         linux-style-struct-page {}",
        devpriv_pagemap::METADATA_BYTES_PER_PAGE,
        std::mem::size_of::<LinuxStylePage>()
    );
}

criterion_group!(
    benches,
    metadata_bytes,
    alloc_free_order0,
    alloc_free_order9,
    lookup,
    register_1gib,
    register_1tib,
    one_thread,
    two_threads
);
criterion_main!(benches);

//! Page-table benchmarks: devpriv-paging against the `x86_64` crate's `OffsetPageTable`
//! (x86_64 format) and `aarch64-paging`'s `IdMap` (aarch64 format), all over host heap
//! memory: a 4 KiB-aligned heap allocation's address serves as its "physical" address
//! (offset mappers with offset 0). Every side gets its table frames from the same kind
//! of heap allocation; only the timed operation is measured (setup and teardown are not).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use devpriv_paging::{FrameAllocator, NoInvalidate, OffsetMapper, OutOfFrames, PageTable};
use devpriv_pte::arch::{aarch64, x86_64 as x86};
use devpriv_pte::{LeafAttributes, Level, PageProperty, PageSize, Pfn};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The virtual (and, for the identity maps, physical) start of the mapped gigabyte.
const VA: u64 = GIB;
/// Start of the 2 MiB-aligned but not 1 GiB-aligned gigabyte for range mapping.
const RANGE_VA: u64 = GIB + 2 * MIB;
const PAGES: u64 = GIB >> 12;
const LOOKUPS: usize = 1 << 20;

/// Table frames from the host heap; freed frames are reused, all are released on drop.
struct HeapFrames {
    all: Vec<u64>,
    free: Vec<u64>,
}

const FRAME: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("bad layout"),
};

impl HeapFrames {
    fn new() -> Self {
        Self {
            all: Vec::with_capacity(1024),
            free: Vec::new(),
        }
    }

    fn allocate_addr(&mut self) -> u64 {
        if let Some(a) = self.free.pop() {
            return a;
        }
        // SAFETY: FRAME has a non-zero size.
        let p = unsafe { alloc_zeroed(FRAME) };
        assert!(!p.is_null());
        let a = p.expose_provenance() as u64;
        self.all.push(a);
        a
    }
}

impl Drop for HeapFrames {
    fn drop(&mut self) {
        for &a in &self.all {
            // SAFETY: every address in `all` came from `alloc_zeroed(FRAME)` once.
            unsafe { dealloc(std::ptr::with_exposed_provenance_mut(a as usize), FRAME) };
        }
    }
}

impl FrameAllocator for HeapFrames {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        Ok(Pfn::containing(self.allocate_addr()))
    }
    fn free(&mut self, frame: Pfn) {
        self.free.push(frame.phys_addr());
    }
}

// SAFETY: frames are 4 KiB heap allocations that live until the allocator is dropped.
unsafe impl ::x86_64::structures::paging::FrameAllocator<::x86_64::structures::paging::Size4KiB>
    for HeapFrames
{
    fn allocate_frame(
        &mut self,
    ) -> Option<::x86_64::structures::paging::PhysFrame<::x86_64::structures::paging::Size4KiB>>
    {
        let a = self.allocate_addr();
        Some(::x86_64::structures::paging::PhysFrame::containing_address(
            ::x86_64::PhysAddr::new(a),
        ))
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

/// Times `run` on a fresh `setup()` per iteration; `teardown` is not timed.
fn timed<S, R>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(&mut S) -> R,
    mut teardown: impl FnMut(S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut state = setup();
        let t = Instant::now();
        black_box(run(&mut state));
        total += t.elapsed();
        teardown(state);
    }
    total
}

fn random_addresses(base: u64, len: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base + x % len
        })
        .collect()
}

// ---------------------------------------------------------------- devpriv, generic

type Devpriv<F> = (PageTable<F, OffsetMapper>, HeapFrames);

fn devpriv_new<F: devpriv_paging::PagingFormat>() -> Devpriv<F> {
    let mut frames = HeapFrames::new();
    // SAFETY: table frames are heap allocations whose address is their "physical"
    // address; they live as long as `frames`, which outlives the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let table = PageTable::new(Level::L4, mapper, &mut frames).unwrap();
    (table, frames)
}

fn rw<F: devpriv_paging::PagingFormat>() -> F::LeafAttributes {
    F::LeafAttributes::from_property(PageProperty {
        writable: true,
        accessed: true,
        ..PageProperty::default()
    })
}

fn devpriv_map_pages<F: devpriv_paging::PagingFormat>(state: &mut Devpriv<F>) {
    let (table, frames) = state;
    let attrs = rw::<F>();
    for i in 0..PAGES {
        let va = VA + (i << 12);
        table
            .map(va, Pfn::containing(va), PageSize::Size4KiB, attrs, frames)
            .unwrap()
            .ignore();
    }
}

fn devpriv_mapped<F: devpriv_paging::PagingFormat>() -> Devpriv<F> {
    let mut state = devpriv_new::<F>();
    let (table, frames) = &mut state;
    table
        .map_range_with_max(VA, VA, GIB, rw::<F>(), PageSize::Size4KiB, frames)
        .unwrap()
        .ignore();
    state
}

fn devpriv_translate<F: devpriv_paging::PagingFormat>(
    table: &PageTable<F, OffsetMapper>,
    addrs: &[u64],
) -> u64 {
    addrs
        .iter()
        .map(|&va| table.translate(va).map_or(0, |t| t.pa))
        .fold(0, u64::wrapping_add)
}

// ---------------------------------------------------------------- x86_64 crate

mod x86_peer {
    use super::*;
    use ::x86_64::structures::paging::{
        Mapper, OffsetPageTable, Page, PageTable as X86Table, PageTableFlags as Flags, PhysFrame,
        Size2MiB, Size4KiB, Translate,
    };
    use ::x86_64::{PhysAddr, VirtAddr};

    pub struct State {
        pub table: OffsetPageTable<'static>,
        pub frames: HeapFrames,
    }

    pub fn new() -> State {
        let mut frames = HeapFrames::new();
        let root = frames.allocate_addr();
        // SAFETY: `root` is a zeroed, 4 KiB-aligned heap frame that lives as long as
        // `frames`; nothing else references it.
        let root: &'static mut X86Table = unsafe { &mut *(root as usize as *mut X86Table) };
        // SAFETY: physical addresses are heap addresses (offset 0).
        let table = unsafe { OffsetPageTable::new(root, VirtAddr::new(0)) };
        State { table, frames }
    }

    pub fn flags() -> Flags {
        Flags::PRESENT | Flags::WRITABLE | Flags::ACCESSED | Flags::NO_EXECUTE
    }

    pub fn map_pages(s: &mut State) {
        for i in 0..PAGES {
            let va = VA + (i << 12);
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
            let frame = PhysFrame::containing_address(PhysAddr::new(va));
            // SAFETY: the mapping is never used for memory accesses.
            unsafe { s.table.map_to(page, frame, flags(), &mut s.frames) }
                .unwrap()
                .ignore();
        }
    }

    pub fn map_range_2m(s: &mut State) {
        for i in 0..GIB / (2 * MIB) {
            let va = RANGE_VA + i * 2 * MIB;
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(va));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(va));
            // SAFETY: the mapping is never used for memory accesses.
            unsafe {
                s.table
                    .map_to(page, frame, flags() | Flags::HUGE_PAGE, &mut s.frames)
            }
            .unwrap()
            .ignore();
        }
    }

    pub fn unmap_pages(s: &mut State) {
        for i in 0..PAGES {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(VA + (i << 12)));
            s.table.unmap(page).unwrap().1.ignore();
        }
    }

    pub fn translate(s: &State, addrs: &[u64]) -> u64 {
        addrs
            .iter()
            .map(|&va| {
                s.table
                    .translate_addr(VirtAddr::new(va))
                    .map_or(0, |p| p.as_u64())
            })
            .fold(0, u64::wrapping_add)
    }
}

// ---------------------------------------------------------------- aarch64-paging

mod arm_peer {
    use super::*;
    use aarch64_paging::descriptor::El1Attributes as A;
    use aarch64_paging::idmap::IdMap;
    use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion};

    pub fn new() -> IdMap<El1And0> {
        IdMap::with_asid(1, 0, El1And0)
    }

    pub fn flags() -> A {
        A::VALID | A::ATTRIBUTE_INDEX_1 | A::INNER_SHAREABLE | A::ACCESSED | A::NON_GLOBAL
    }

    pub fn map_pages(m: &mut IdMap<El1And0>) {
        for i in 0..PAGES {
            let va = (VA + (i << 12)) as usize;
            m.map_range_with_constraints(
                &MemoryRegion::new(va, va + 4096),
                flags(),
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .unwrap();
        }
    }

    pub fn mapped() -> IdMap<El1And0> {
        let mut m = new();
        map_all_4k(&mut m);
        m
    }

    pub fn map_all_4k(m: &mut IdMap<El1And0>) {
        m.map_range_with_constraints(
            &MemoryRegion::new(VA as usize, (VA + GIB) as usize),
            flags(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
        .unwrap();
    }

    pub fn map_range(m: &mut IdMap<El1And0>) {
        m.map_range(
            &MemoryRegion::new(RANGE_VA as usize, (RANGE_VA + GIB) as usize),
            flags(),
        )
        .unwrap();
    }

    pub fn unmap(m: &mut IdMap<El1And0>) {
        m.map_range(
            &MemoryRegion::new(VA as usize, (VA + GIB) as usize),
            A::empty(),
        )
        .unwrap();
    }

    pub fn translate_one(m: &IdMap<El1And0>, va: u64) -> Option<u64> {
        let mut out = None;
        m.walk_range(
            &MemoryRegion::new(va as usize, va as usize + 1),
            &mut |_, d, level| {
                if d.is_valid() {
                    let span = 1u64 << (12 + 9 * (3 - level as u32));
                    out = Some(d.output_address().0 as u64 + (va & (span - 1)));
                }
                Ok(())
            },
        )
        .ok()?;
        out
    }

    pub fn translate(m: &IdMap<El1And0>, addrs: &[u64]) -> u64 {
        addrs
            .iter()
            .map(|&va| translate_one(m, va).unwrap_or(0))
            .fold(0, u64::wrapping_add)
    }
}

// ---------------------------------------------------------------- rows

fn x86_rows(c: &mut Criterion) {
    {
        let mut g = group(c, "paging: map 1GiB as 4KiB pages (x86_64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| timed(n, devpriv_new::<x86::X86_64>, devpriv_map_pages, drop))
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| timed(n, x86_peer::new, x86_peer::map_pages, drop))
        });
        g.finish();
    }
    {
        let addrs = random_addresses(VA, GIB);
        let dp = devpriv_mapped::<x86::X86_64>();
        let mut peer = x86_peer::new();
        x86_peer::map_pages(&mut peer);
        assert_eq!(
            devpriv_translate(&dp.0, &addrs[..1000]),
            x86_peer::translate(&peer, &addrs[..1000])
        );
        let mut g = group(c, "paging: translate 1Mi random addresses (x86_64)");
        g.bench_function("devpriv", |b| b.iter(|| devpriv_translate(&dp.0, &addrs)));
        g.bench_function("x86_64-crate", |b| {
            b.iter(|| x86_peer::translate(&peer, &addrs))
        });
        g.finish();
    }
    {
        let mut g = group(c, "paging: unmap 1GiB of 4KiB pages (x86_64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_mapped::<x86::X86_64>,
                    |(t, f)| t.unmap(VA, GIB, f, &NoInvalidate).unwrap().ignore(),
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    || {
                        let mut s = x86_peer::new();
                        x86_peer::map_pages(&mut s);
                        s
                    },
                    x86_peer::unmap_pages,
                    drop,
                )
            })
        });
        g.finish();
    }
    {
        let mut g = group(c, "paging: map 1GiB with range mapping (x86_64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<x86::X86_64>,
                    |(t, f)| {
                        t.map_range(RANGE_VA, RANGE_VA, GIB, rw::<x86::X86_64>(), f)
                            .unwrap()
                            .ignore()
                    },
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| timed(n, x86_peer::new, x86_peer::map_range_2m, drop))
        });
        g.finish();
    }
    {
        // Range mapping at the same page size: one call for 262144 pages (the peer has
        // no range API; its best is page at a time).
        let mut g = group(
            c,
            "paging: map 1GiB of 4KiB pages in one range call (x86_64)",
        );
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<x86::X86_64>,
                    |(t, f)| {
                        t.map_range_with_max(
                            VA,
                            VA,
                            GIB,
                            rw::<x86::X86_64>(),
                            PageSize::Size4KiB,
                            f,
                        )
                        .unwrap()
                        .ignore()
                    },
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| timed(n, x86_peer::new, x86_peer::map_pages, drop))
        });
        g.finish();
    }
}

fn arm_rows(c: &mut Criterion) {
    type F = aarch64::Aarch64;
    {
        let mut g = group(c, "paging: map 1GiB as 4KiB pages (aarch64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| timed(n, devpriv_new::<F>, devpriv_map_pages, drop))
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| timed(n, arm_peer::new, arm_peer::map_pages, drop))
        });
        g.finish();
    }
    {
        let addrs = random_addresses(VA, GIB);
        let dp = devpriv_mapped::<F>();
        let peer = arm_peer::mapped();
        assert_eq!(
            devpriv_translate(&dp.0, &addrs[..1000]),
            arm_peer::translate(&peer, &addrs[..1000])
        );
        let mut g = group(c, "paging: translate 1Mi random addresses (aarch64)");
        g.bench_function("devpriv", |b| b.iter(|| devpriv_translate(&dp.0, &addrs)));
        g.bench_function("aarch64-paging", |b| {
            b.iter(|| arm_peer::translate(&peer, &addrs))
        });
        g.finish();
    }
    {
        let mut peer = arm_peer::mapped();
        arm_peer::unmap(&mut peer);
        assert_eq!(arm_peer::translate_one(&peer, VA + 0x5000), None);
        let mut g = group(c, "paging: unmap 1GiB of 4KiB pages (aarch64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_mapped::<F>,
                    |(t, f)| t.unmap(VA, GIB, f, &NoInvalidate).unwrap().ignore(),
                    drop,
                )
            })
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| timed(n, arm_peer::mapped, arm_peer::unmap, drop))
        });
        g.finish();
    }
    {
        let mut g = group(c, "paging: map 1GiB with range mapping (aarch64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<F>,
                    |(t, f)| {
                        t.map_range(RANGE_VA, RANGE_VA, GIB, rw::<F>(), f)
                            .unwrap()
                            .ignore()
                    },
                    drop,
                )
            })
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| timed(n, arm_peer::new, arm_peer::map_range, drop))
        });
        g.finish();
    }
    {
        // Range mapping at the same page size: one call for 262144 pages.
        let mut g = group(
            c,
            "paging: map 1GiB of 4KiB pages in one range call (aarch64)",
        );
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<F>,
                    |(t, f)| {
                        t.map_range_with_max(VA, VA, GIB, rw::<F>(), PageSize::Size4KiB, f)
                            .unwrap()
                            .ignore()
                    },
                    drop,
                )
            })
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| timed(n, arm_peer::new, arm_peer::map_all_4k, drop))
        });
        g.finish();
    }
}

criterion_group!(benches, x86_rows, arm_rows);
criterion_main!(benches);

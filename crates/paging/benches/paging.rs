//! Page-table benchmarks: devpriv-paging against the `x86_64` crate's `OffsetPageTable`
//! (x86_64 format) and `aarch64-paging`'s `Mapping` (aarch64 format), all over host heap
//! memory: a 4 KiB-aligned heap address serves as its "physical" address (identity
//! translation, offset 0).
//!
//! Every side takes its table frames from the same source, a [`HeapFrames`] pool carved
//! out of blocks that were allocated and written (so page-faulted in) before any timing,
//! and each side zeroes a new table exactly once, as its API requires (devpriv and the
//! `x86_64` crate zero the frames they get; `aarch64-paging` asks its `Translation` for a
//! zeroed page). No side calls the heap allocator or takes a page fault for table memory
//! inside the timed region, so a row measures page-table work, not the state the host
//! heap was left in by earlier benches. Only the timed operation is measured (setup and
//! teardown are not).

use std::alloc::{Layout, alloc, dealloc};
use std::cell::RefCell;
use std::hint::black_box;
use std::ptr::NonNull;
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

/// Frames per pre-faulted block: more than any row needs for one table (a gigabyte of
/// 4 KiB pages takes 515 table frames on both formats).
const BLOCK_FRAMES: usize = 1024;

const BLOCK: Layout = match Layout::from_size_align(BLOCK_FRAMES * 4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("bad layout"),
};

/// `BLOCK_FRAMES` 4 KiB frames of heap memory, every page written once when allocated.
struct Block(NonNull<u8>);

impl Block {
    fn new() -> Self {
        // SAFETY: BLOCK has a non-zero size.
        let p = NonNull::new(unsafe { alloc(BLOCK) }).expect("out of memory");
        // Write every byte so that every page is faulted in now, not inside a timed
        // region (a fresh zeroed allocation would leave the pages untouched).
        // SAFETY: `p` is valid for writes of BLOCK.size() bytes.
        unsafe { p.as_ptr().write_bytes(0xa5, BLOCK.size()) };
        Self(p)
    }

    fn frame(&self, i: usize) -> u64 {
        assert!(i < BLOCK_FRAMES);
        self.0.as_ptr().expose_provenance() as u64 + (i as u64) * 4096
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `alloc(BLOCK)` and is freed once.
        unsafe { dealloc(self.0.as_ptr(), BLOCK) };
    }
}

thread_local! {
    /// Blocks whose `HeapFrames` was dropped, kept faulted in for the next one.
    static SPARE_BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Table frames for one page table: handed out from pre-faulted blocks (dirty: every
/// side zeroes a new table itself); freed frames are reused. Dropping it returns its
/// blocks to a spare list, still faulted in, for the next `HeapFrames`.
struct HeapFrames {
    blocks: Vec<Block>,
    /// Frames handed out from the last block.
    used: usize,
    free: Vec<u64>,
}

impl HeapFrames {
    /// Takes one block (a spare one if there is one) and room for freed frames, so that
    /// allocating and freeing up to `BLOCK_FRAMES` frames never calls the heap.
    fn new() -> Self {
        let mut blocks = Vec::with_capacity(4);
        blocks.push(
            SPARE_BLOCKS
                .with(|s| s.borrow_mut().pop())
                .unwrap_or_else(Block::new),
        );
        Self {
            blocks,
            used: 0,
            free: Vec::with_capacity(BLOCK_FRAMES),
        }
    }

    fn allocate_addr(&mut self) -> u64 {
        if let Some(a) = self.free.pop() {
            return a;
        }
        if self.used == BLOCK_FRAMES {
            // Not reached by any row; correct, only slower.
            let block = SPARE_BLOCKS
                .with(|s| s.borrow_mut().pop())
                .unwrap_or_else(Block::new);
            self.blocks.push(block);
            self.used = 0;
        }
        self.used += 1;
        self.blocks.last().expect("one block").frame(self.used - 1)
    }
}

impl Drop for HeapFrames {
    fn drop(&mut self) {
        SPARE_BLOCKS.with(|s| s.borrow_mut().append(&mut self.blocks));
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

// SAFETY: frames are 4 KiB pieces of blocks that live until the allocator is dropped,
// each handed out once until freed. The crate zeroes every table it creates.
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

impl ::x86_64::structures::paging::FrameDeallocator<::x86_64::structures::paging::Size4KiB>
    for HeapFrames
{
    unsafe fn deallocate_frame(
        &mut self,
        frame: ::x86_64::structures::paging::PhysFrame<::x86_64::structures::paging::Size4KiB>,
    ) {
        self.free.push(frame.start_address().as_u64());
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

/// Every page index of the gigabyte once, in a fixed pseudo-random order (a Fisher-Yates
/// shuffle driven by xorshift), the same for every side.
fn shuffled_pages() -> Vec<u64> {
    let mut pages: Vec<u64> = (0..PAGES).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..pages.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pages.swap(i, (x % (i as u64 + 1)) as usize);
    }
    pages
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

/// Maps the gigabyte one 4 KiB page per call, in address order.
fn devpriv_map_pages<F: devpriv_paging::PagingFormat>(state: &mut Devpriv<F>) {
    devpriv_map_pages_in(state, 0..PAGES);
}

/// Maps the gigabyte one 4 KiB page per call, page `i` of it for each `i` of `order`.
fn devpriv_map_pages_in<F: devpriv_paging::PagingFormat>(
    state: &mut Devpriv<F>,
    order: impl IntoIterator<Item = u64>,
) {
    let (table, frames) = state;
    let attrs = rw::<F>();
    for i in order {
        let va = VA + (i << 12);
        table
            .map(va, Pfn::containing(va), PageSize::Size4KiB, attrs, frames)
            .unwrap()
            .ignore();
    }
}

/// Unmaps the gigabyte one 4 KiB page per call, in address order.
fn devpriv_unmap_pages<F: devpriv_paging::PagingFormat>(state: &mut Devpriv<F>) {
    devpriv_unmap_pages_in(state, 0..PAGES);
}

/// Unmaps the gigabyte one 4 KiB page per call, page `i` of it for each `i` of `order`.
fn devpriv_unmap_pages_in<F: devpriv_paging::PagingFormat>(
    state: &mut Devpriv<F>,
    order: impl IntoIterator<Item = u64>,
) {
    let (table, frames) = state;
    for i in order {
        table
            .unmap(VA + (i << 12), 4096, frames, &NoInvalidate)
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
    use ::x86_64::structures::paging::mapper::CleanUp;
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
        // SAFETY: `root` is a 4 KiB-aligned heap frame that lives as long as `frames`;
        // nothing else references it.
        let root: &'static mut X86Table = unsafe { &mut *(root as usize as *mut X86Table) };
        // Pool frames are dirty; devpriv's `PageTable::new` zeroes its root too (untimed).
        root.zero();
        // SAFETY: physical addresses are heap addresses (offset 0).
        let table = unsafe { OffsetPageTable::new(root, VirtAddr::new(0)) };
        State { table, frames }
    }

    pub fn flags() -> Flags {
        Flags::PRESENT | Flags::WRITABLE | Flags::ACCESSED | Flags::NO_EXECUTE
    }

    pub fn map_pages(s: &mut State) {
        map_pages_in(s, 0..PAGES);
    }

    pub fn map_pages_in(s: &mut State, order: impl IntoIterator<Item = u64>) {
        for i in order {
            let va = VA + (i << 12);
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
            let frame = PhysFrame::containing_address(PhysAddr::new(va));
            // SAFETY: the mapping is never used for memory accesses.
            unsafe { s.table.map_to(page, frame, flags(), &mut s.frames) }
                .unwrap()
                .ignore();
        }
    }

    pub fn mapped() -> State {
        let mut s = new();
        map_pages(&mut s);
        s
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
        unmap_pages_in(s, 0..PAGES);
    }

    pub fn unmap_pages_in(s: &mut State, order: impl IntoIterator<Item = u64>) {
        for i in order {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(VA + (i << 12)));
            s.table.unmap(page).unwrap().1.ignore();
        }
    }

    /// Frees the tables left empty under the mapped gigabyte, as devpriv's unmap does
    /// as it goes.
    pub fn clean_up(s: &mut State) {
        let range = Page::<Size4KiB>::range_inclusive(
            Page::containing_address(VirtAddr::new(VA)),
            Page::containing_address(VirtAddr::new(VA + GIB - 1)),
        );
        // SAFETY: every table frame belongs to this table alone.
        unsafe { s.table.clean_up_addr_range(range, &mut s.frames) };
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
    use aarch64_paging::Mapping;
    use aarch64_paging::descriptor::{El1Attributes as A, PhysicalAddress};
    use aarch64_paging::paging::{
        Constraints, El1And0, MemoryRegion, PageTable as ArmTable, Translation, VaRange,
    };

    /// An identity translation (what `IdMap` uses) whose tables come from a
    /// [`HeapFrames`] pool instead of the global allocator, like the other sides'.
    pub struct PoolTranslation(HeapFrames);

    impl Translation<A> for PoolTranslation {
        fn allocate_table(&mut self) -> (NonNull<ArmTable<A>>, PhysicalAddress) {
            let a = self.0.allocate_addr();
            let table = NonNull::new(std::ptr::with_exposed_provenance_mut::<u8>(a as usize))
                .expect("frame at address zero");
            // The trait asks for a zeroed page; pool frames are dirty.
            // SAFETY: the frame is 4 KiB of the pool's memory, handed out once.
            unsafe { table.as_ptr().write_bytes(0, 4096) };
            (table.cast(), PhysicalAddress(a as usize))
        }

        unsafe fn deallocate_table(&mut self, page_table: NonNull<ArmTable<A>>) {
            self.0
                .free
                .push(page_table.as_ptr().expose_provenance() as u64);
        }

        fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<ArmTable<A>> {
            NonNull::new(std::ptr::with_exposed_provenance_mut(pa.0)).expect("table at zero")
        }
    }

    pub type Map = Mapping<PoolTranslation, El1And0>;

    pub fn new() -> Map {
        Mapping::with_asid_and_va_range(
            PoolTranslation(HeapFrames::new()),
            1,
            0,
            El1And0,
            VaRange::Lower,
        )
    }

    pub fn flags() -> A {
        A::VALID | A::ATTRIBUTE_INDEX_1 | A::INNER_SHAREABLE | A::ACCESSED | A::NON_GLOBAL
    }

    /// Identity-maps `[start, end)` as `IdMap::map_range_with_constraints` does.
    fn id_map(m: &mut Map, start: u64, end: u64, flags: A, constraints: Constraints) {
        m.map_range(
            &MemoryRegion::new(start as usize, end as usize),
            PhysicalAddress(start as usize),
            flags,
            constraints,
        )
        .unwrap();
    }

    pub fn map_pages(m: &mut Map) {
        map_pages_in(m, 0..PAGES);
    }

    pub fn map_pages_in(m: &mut Map, order: impl IntoIterator<Item = u64>) {
        for i in order {
            let va = VA + (i << 12);
            id_map(m, va, va + 4096, flags(), Constraints::NO_BLOCK_MAPPINGS);
        }
    }

    pub fn mapped() -> Map {
        let mut m = new();
        map_all_4k(&mut m);
        m
    }

    pub fn map_all_4k(m: &mut Map) {
        id_map(m, VA, VA + GIB, flags(), Constraints::NO_BLOCK_MAPPINGS);
    }

    pub fn map_range(m: &mut Map) {
        id_map(m, RANGE_VA, RANGE_VA + GIB, flags(), Constraints::empty());
    }

    /// Unmaps the gigabyte in one call (frees the 513 tables below it).
    pub fn unmap(m: &mut Map) {
        id_map(m, VA, VA + GIB, A::empty(), Constraints::empty());
    }

    /// Unmaps the gigabyte one 4 KiB page per call, in address order (frees no tables:
    /// the crate frees them only when a call covers a whole table's span, or in
    /// `compact_subtables`).
    pub fn unmap_pages(m: &mut Map) {
        unmap_pages_in(m, 0..PAGES);
    }

    /// As [`unmap_pages`], page `i` of the gigabyte for each `i` of `order`.
    pub fn unmap_pages_in(m: &mut Map, order: impl IntoIterator<Item = u64>) {
        for i in order {
            let va = VA + (i << 12);
            id_map(m, va, va + 4096, A::empty(), Constraints::empty());
        }
    }

    pub fn translate_one(m: &Map, va: u64) -> Option<u64> {
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

    pub fn translate(m: &Map, addrs: &[u64]) -> u64 {
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
        // The same pages, one call each, in a shuffled order: no walk can reuse the
        // previous one's level-1 table.
        let order = shuffled_pages();
        let mut g = group(c, "paging: map 1GiB as 4KiB pages in random order (x86_64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<x86::X86_64>,
                    |s| devpriv_map_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    x86_peer::new,
                    |s| x86_peer::map_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
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
        // Page by page on both sides. devpriv also frees each level-1 table as its last
        // page goes (and the level-2 table with the last of them); the crate frees none
        // unless asked: "then clean_up" is its page-by-page unmap followed by its
        // `clean_up_addr_range` over the gigabyte, which leaves the tables as devpriv
        // does (the like-for-like comparison).
        let mut g = group(c, "paging: unmap 1GiB of 4KiB pages page by page (x86_64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| timed(n, devpriv_mapped::<x86::X86_64>, devpriv_unmap_pages, drop))
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| timed(n, x86_peer::mapped, x86_peer::unmap_pages, drop))
        });
        g.bench_function("x86_64-crate, then clean_up", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    x86_peer::mapped,
                    |s| {
                        x86_peer::unmap_pages(s);
                        x86_peer::clean_up(s)
                    },
                    drop,
                )
            })
        });
        g.finish();
    }
    {
        // Page by page in a shuffled order: devpriv still frees each level-1 table as
        // its last page goes; the crate frees none, or all of them at the end with
        // "then clean_up".
        let order = shuffled_pages();
        let mut g = group(
            c,
            "paging: unmap 1GiB of 4KiB pages page by page in random order (x86_64)",
        );
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_mapped::<x86::X86_64>,
                    |s| devpriv_unmap_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    x86_peer::mapped,
                    |s| x86_peer::unmap_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
        });
        g.bench_function("x86_64-crate, then clean_up", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    x86_peer::mapped,
                    |s| {
                        x86_peer::unmap_pages_in(s, order.iter().copied());
                        x86_peer::clean_up(s)
                    },
                    drop,
                )
            })
        });
        g.finish();
    }
    {
        // One call for the whole range: the crate has no range unmap, so this row has
        // no peer (its page-by-page time is the row above).
        let mut g = group(
            c,
            "paging: unmap 1GiB of 4KiB pages in one range call (x86_64)",
        );
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
        let order = shuffled_pages();
        let mut g = group(
            c,
            "paging: map 1GiB as 4KiB pages in random order (aarch64)",
        );
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_new::<F>,
                    |s| devpriv_map_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    arm_peer::new,
                    |m| arm_peer::map_pages_in(m, order.iter().copied()),
                    drop,
                )
            })
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
        // One call for the whole range on both sides; both free the 513 tables.
        let mut g = group(
            c,
            "paging: unmap 1GiB of 4KiB pages in one range call (aarch64)",
        );
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
        let mut peer = arm_peer::mapped();
        arm_peer::unmap_pages(&mut peer);
        assert_eq!(arm_peer::translate_one(&peer, VA + 0x5000), None);
        // Page by page on both sides. devpriv also frees each level-1 table as its last
        // page goes; `aarch64-paging` frees none.
        let mut g = group(c, "paging: unmap 1GiB of 4KiB pages page by page (aarch64)");
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| timed(n, devpriv_mapped::<F>, devpriv_unmap_pages, drop))
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| timed(n, arm_peer::mapped, arm_peer::unmap_pages, drop))
        });
        g.finish();
    }
    {
        let order = shuffled_pages();
        let mut peer = arm_peer::mapped();
        arm_peer::unmap_pages_in(&mut peer, order.iter().copied());
        assert_eq!(arm_peer::translate_one(&peer, VA + 0x5000), None);
        // Page by page in a shuffled order; devpriv frees each level-1 table as its
        // last page goes, `aarch64-paging` frees none.
        let mut g = group(
            c,
            "paging: unmap 1GiB of 4KiB pages page by page in random order (aarch64)",
        );
        g.bench_function("devpriv", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    devpriv_mapped::<F>,
                    |s| devpriv_unmap_pages_in(s, order.iter().copied()),
                    drop,
                )
            })
        });
        g.bench_function("aarch64-paging", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    arm_peer::mapped,
                    |m| arm_peer::unmap_pages_in(m, order.iter().copied()),
                    drop,
                )
            })
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

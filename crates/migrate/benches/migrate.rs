//! devpriv-migrate benchmarks: the bookkeeping of a migration, without the copy.
//!
//! There is no peer to run beside it (Linux's migrate_vma does not run on a host), so
//! these rows have none; the goals come from the copy they sit beside: ≤ 100 ns per
//! 4 KiB page and ≤ 1 µs per 2 MiB folio, under 2 % of a PCIe copy of the same size
//! (about 5.5 µs and 46 µs, see docs/benchmarks.md).
//!
//! - "migrate: 4KiB pages, N per migration": N present 4 KiB pages migrated to the
//!   device and back, over an x86_64 page table in pre-faulted host memory, no copy.
//!   Timed: the migration's own steps (setup, pages, finalize — including freeing the
//!   sources); not timed: the driver's step between them (allocating destinations from
//!   the pagemap or system memory and setting them). The time is per page and
//!   direction: the round trip divided by 2N.
//! - "migrate: 2MiB folios, N per migration": the same with N 2 MiB pages (COMPOUND),
//!   per folio and direction.
//! - "migrate: fault round trip": a CPU fault on a device-private entry, through
//!   `handle_fault`, the driver's `migrate_to_ram` (a one-page migration back) and
//!   the return; the page is put back on the device outside the timed part.
//! - "migrate: evict 1GiB of 4KiB folios" / "of 2MiB folios": a pagemap whose 1 GiB is
//!   mapped in an address space, evicted to system memory (`Migration::evict`, the
//!   pages found through their reverse maps) in one eviction; put back on the device
//!   outside the timed part.

use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use devpriv_migrate::*;
use devpriv_pagemap::{AddressSpaceId, DevicePagemap, Folio, Owner, PageMeta, PagemapOps};
use devpriv_paging::{FrameAllocator, NoInvalidate, OffsetMapper, OutOfFrames, PageTable};
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Level, PageProperty, PageSize, Pfn};

/// Table frames: pre-faulted, 4 KiB-aligned host memory, identity-mapped by frame
/// number (`pfn << 12` is the host address).
struct TableFrames {
    free: Vec<Pfn>,
    _memory: Vec<Box<Page>>,
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

impl TableFrames {
    fn new(frames: usize) -> Self {
        let memory: Vec<Box<Page>> = (0..frames).map(|_| Box::new(Page([0xa5; 4096]))).collect();
        let free = memory
            .iter()
            .map(|p| Pfn::containing(p.as_ref() as *const Page as u64))
            .collect();
        Self {
            free,
            _memory: memory,
        }
    }
}

struct Frames<'f>(&'f Mutex<TableFrames>);

impl FrameAllocator for Frames<'_> {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.0.lock().unwrap().free.pop().ok_or(OutOfFrames)
    }
    fn free(&mut self, frame: Pfn) {
        self.0.lock().unwrap().free.push(frame);
    }
}

/// System memory without bytes: frame numbers from a free list behind a spin lock, as a
/// kernel's page allocator would keep them (no page is touched, so nothing but
/// bookkeeping is timed).
struct Ram {
    small: spin::Mutex<Vec<Pfn>>,
    large: spin::Mutex<Vec<Pfn>>,
}

const RAM_BASE: u64 = 1 << 30;

impl Ram {
    fn new(small: u64, large: u64) -> Self {
        Self {
            small: spin::Mutex::new((0..small).map(|i| Pfn::new(RAM_BASE + i)).collect()),
            large: spin::Mutex::new(
                (0..large)
                    .map(|i| Pfn::new(RAM_BASE + small.next_multiple_of(512) + i * 512))
                    .collect(),
            ),
        }
    }
}

impl SystemMemory for Ram {
    fn allocate(&self, size: PageSize) -> Option<Pfn> {
        match size {
            PageSize::Size4KiB => self.small.lock().pop(),
            PageSize::Size2MiB => self.large.lock().pop(),
            PageSize::Size1GiB => None,
        }
    }
    fn free(&self, pfn: Pfn, size: PageSize) {
        match size {
            PageSize::Size4KiB => self.small.lock().push(pfn),
            _ => self.large.lock().push(pfn),
        }
    }
    fn frame(&self, _: Pfn) -> Option<NonNull<u8>> {
        None
    }
}

struct Bench;

impl Platform for Bench {
    type Format = X86_64;
    type Mapper = OffsetMapper;
    type Tlb = NoInvalidate;
    type TableFrames = Frames<'static>;
    type System = Ram;
}

/// A driver that brings pages back with no copy.
struct Driver {
    ram: &'static Ram,
}

impl PagemapOps for Driver {
    fn folio_free(&self, folio: Folio<'_>) {
        black_box(folio);
    }
}

impl DeviceDriver<Bench> for Driver {
    fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, Bench>) -> Result<(), FaultError> {
        let start = fault.address() & !0xfff;
        let mut src = [MigratePfn::EMPTY; 1];
        let mut dst = [MigratePfn::EMPTY; 1];
        let mut m = Migration::setup(MigrateVma {
            address_space: fault.address_space(),
            start,
            end: start + 4096,
            select: Select::DEVICE_PRIVATE,
            owner: OWNER,
            fault: Some(fault.page()),
            src: &mut src,
            dst: &mut dst,
        })
        .map_err(|_| FaultError::BusError)?;
        if m.src()[0].is_migrating() {
            let pfn = self
                .ram
                .allocate(PageSize::Size4KiB)
                .ok_or(FaultError::BusError)?;
            m.set_system_destination(0, pfn, PageSize::Size4KiB)
                .map_err(|_| FaultError::BusError)?;
        }
        m.pages().finalize();
        Ok(())
    }
}

const OWNER: Owner = Owner::new(1);
const BASE: u64 = 1 << 32;
const DEVICE_PAGES: u64 = 1 << 18; // 1 GiB

struct World {
    space: &'static AddressSpace<'static, Bench>,
    spaces: &'static AddressSpaces<'static, Bench, 2>,
    devices: &'static DeviceMemory<'static, Bench>,
    pagemap: &'static DevicePagemap<'static>,
    ram: &'static Ram,
}

fn world(table_frames: usize) -> World {
    let ram: &'static Ram = Box::leak(Box::new(Ram::new(DEVICE_PAGES + 1024, 1024)));
    let driver: &'static Driver = Box::leak(Box::new(Driver { ram }));
    let meta: &'static mut [PageMeta] =
        Box::leak((0..DEVICE_PAGES).map(|_| PageMeta::new()).collect());
    let pagemap: &'static DevicePagemap<'static> = Box::leak(Box::new(
        DevicePagemap::new(DEVICE_PAGES, OWNER, driver, meta).unwrap(),
    ));
    let devices: &'static DeviceMemory<'static, Bench> = Box::leak(Box::new(DeviceMemory::new()));
    devices.register(pagemap, driver).unwrap();
    let tables: &'static Mutex<TableFrames> =
        Box::leak(Box::new(Mutex::new(TableFrames::new(table_frames))));
    // SAFETY: every table frame is host memory at `pfn << 12`, owned by `tables` (leaked)
    // and used only by this page table.
    let mapper = unsafe { OffsetMapper::identity() };
    let table = PageTable::<X86_64, _>::new(Level::L4, mapper, &mut Frames(tables)).unwrap();
    let vmas: &'static Vma = Box::leak(Box::new(Vma::anonymous(
        BASE,
        BASE + (1 << 31),
        PageProperty {
            writable: true,
            user: true,
            ..PageProperty::default()
        },
    )));
    let space = Box::leak(Box::new(AddressSpace::new(AddressSpaceParts {
        id: AddressSpaceId::new(0).unwrap(),
        table,
        tlb: NoInvalidate,
        table_frames: Frames(tables),
        system: ram,
        devices,
        vmas,
    })));
    let spaces: &'static AddressSpaces<'static, Bench, 2> =
        Box::leak(Box::new(AddressSpaces::new()));
    spaces.register(space).unwrap();
    World {
        space,
        spaces,
        devices,
        pagemap,
        ram,
    }
}

impl World {
    /// Maps `count` pages of `size` from `BASE`.
    fn populate(&self, count: u64, size: PageSize) {
        for i in 0..count {
            let pfn = self.ram.allocate(size).unwrap();
            self.space
                .map_page(BASE + i * size.bytes(), pfn, size, true)
                .unwrap();
        }
    }

    /// Moves `count` pages of `size` from `BASE` to the device (`to_device`) or back,
    /// with `src` and `dst` as the words; returns the time spent in the migration's own
    /// steps (setup, pages, finalize), without the driver's allocation of destinations.
    fn migrate(
        &self,
        count: u64,
        size: PageSize,
        to_device: bool,
        src: &mut [MigratePfn],
        dst: &mut [MigratePfn],
    ) -> Duration {
        let mut select = if to_device {
            Select::SYSTEM
        } else {
            Select::DEVICE_PRIVATE
        };
        if size == PageSize::Size2MiB {
            select |= Select::COMPOUND;
        }
        let pages = (count * size.frames()) as usize;
        let start = Instant::now();
        let mut m = Migration::setup(MigrateVma {
            address_space: self.space,
            start: BASE,
            end: BASE + count * size.bytes(),
            select,
            owner: OWNER,
            fault: None,
            src: &mut src[..pages],
            dst: &mut dst[..pages],
        })
        .unwrap();
        let collected = start.elapsed();
        let step = size.frames() as usize;
        for i in (0..pages).step_by(step) {
            if to_device {
                let folio = self.pagemap.alloc_locked(size).unwrap();
                m.set_device_destination(i, folio).unwrap();
            } else {
                let pfn = self.ram.allocate(size).unwrap();
                m.set_system_destination(i, pfn, size).unwrap();
            }
        }
        let start = Instant::now();
        let s = m.pages().finalize();
        let committed = start.elapsed();
        debug_assert_eq!(s.migrated, pages as u64);
        black_box(s);
        collected + committed
    }

    /// Evicts the whole pagemap.
    fn evict(&self, src: &mut [MigratePfn], dst: &mut [MigratePfn]) {
        let mut m = Migration::evict(
            self.devices,
            self.spaces,
            self.ram,
            Evict::pagemap(self.pagemap),
            src,
            dst,
        )
        .unwrap();
        let sources: Vec<(usize, PageSize)> = m.sources().map(|(i, _, size)| (i, size)).collect();
        for (i, size) in sources {
            let pfn = self.ram.allocate(size).unwrap();
            m.set_system_destination(i, pfn, size).unwrap();
        }
        black_box(m.pages().finalize());
    }
}

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g
}

fn bookkeeping(c: &mut Criterion) {
    for (size, label) in [
        (PageSize::Size4KiB, "4KiB pages"),
        (PageSize::Size2MiB, "2MiB folios"),
    ] {
        for count in [1u64, 64, 512] {
            let w = world(2048);
            w.populate(count, size);
            let words = (count * size.frames()) as usize;
            let mut src = vec![MigratePfn::EMPTY; words];
            let mut dst = vec![MigratePfn::EMPTY; words];
            let mut g = group(c, &format!("migrate: {label}, {count} per migration"));
            g.bench_function("devpriv", |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += w.migrate(count, size, true, &mut src, &mut dst);
                        total += w.migrate(count, size, false, &mut src, &mut dst);
                    }
                    // Per page (or folio) and direction.
                    total / (2 * count as u32)
                })
            });
            g.finish();
        }
    }
}

fn fault_round_trip(c: &mut Criterion) {
    let w = world(64);
    w.populate(1, PageSize::Size4KiB);
    let mut src = vec![MigratePfn::EMPTY; 1];
    let mut dst = vec![MigratePfn::EMPTY; 1];
    let mut g = group(c, "migrate: fault round trip");
    g.bench_function("devpriv", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = w.migrate(1, PageSize::Size4KiB, true, &mut src, &mut dst);
                let start = Instant::now();
                let outcome = handle_fault(w.space, BASE + 8, false).unwrap();
                total += start.elapsed();
                assert_eq!(outcome, FaultOutcome::Resolved);
            }
            total
        })
    });
    g.finish();
}

fn eviction(c: &mut Criterion) {
    for (size, label) in [(PageSize::Size4KiB, "4KiB"), (PageSize::Size2MiB, "2MiB")] {
        let w = world(1024);
        let count = DEVICE_PAGES / size.frames();
        w.populate(count, size);
        let mut src = vec![MigratePfn::EMPTY; DEVICE_PAGES as usize];
        let mut dst = vec![MigratePfn::EMPTY; DEVICE_PAGES as usize];
        let mut g = group(c, &format!("migrate: evict 1GiB of {label} folios"));
        g.bench_function("devpriv", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = w.migrate(count, size, true, &mut src, &mut dst);
                    let start = Instant::now();
                    w.evict(&mut src, &mut dst);
                    total += start.elapsed();
                    assert_eq!(w.pagemap.allocated_pages(), 0);
                }
                total
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bookkeeping, fault_round_trip, eviction);
criterion_main!(benches);

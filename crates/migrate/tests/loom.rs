//! Loom models of the races the migration machinery must win: two CPUs faulting on
//! one device page, a fault racing an eviction, a migration racing an unmap of part of
//! its range, and a snapshot racing an invalidation.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p devpriv-migrate --release --test loom`.
#![cfg(loom)]

use std::ptr::NonNull;

use devpriv_migrate::*;
use devpriv_pagemap::{
    AddressSpaceId, DevicePagemap, Folio, LockedFolio, Owner, PageMeta, PagemapOps, ReverseMap,
};
use devpriv_paging::{
    FrameAllocator, NoInvalidate, OutOfFrames, PageTable, PhysMapper, TableEntries,
};
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, Level, PageProperty, PageSize, Pfn, PteFormat, SoftwareEntry,
    SoftwareKind,
};
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::thread;

/// Values leaked for `'static` borrows across loom threads, freed at the end of each
/// execution (after every thread has joined).
#[derive(Default)]
struct Arena(Vec<Box<dyn FnOnce()>>);

impl Arena {
    fn leak<T: 'static>(&mut self, value: T) -> &'static T {
        let p = Box::into_raw(Box::new(value));
        // SAFETY: `p` came from `Box::into_raw` just above; the reclaimer runs once, at the
        // end of the execution, when every borrow handed out here has ended (the loom
        // threads have joined and the fixture is no longer used).
        self.0
            .push(Box::new(move || drop(unsafe { Box::from_raw(p) })));
        // SAFETY: `p` is valid until the reclaimer runs, which is after every use.
        unsafe { &*p }
    }

    /// As [`Arena::leak`], exclusively: for a pagemap's metadata, which
    /// `DevicePagemap::new` borrows mutably.
    fn leak_mut<T: 'static>(&mut self, value: T) -> &'static mut T {
        let p = Box::into_raw(Box::new(value));
        // SAFETY: as in `leak`.
        self.0
            .push(Box::new(move || drop(unsafe { Box::from_raw(p) })));
        // SAFETY: as in `leak`; the one reference handed out is the only one.
        unsafe { &mut *p }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        while let Some(reclaim) = self.0.pop() {
            reclaim();
        }
    }
}

/// Table frames 1..=4: 1 the level-2 root, 2 its level-1 table, 3 and 4 spare.
struct Frames(Vec<Box<TableEntries>>);

struct Mapper(&'static Frames);

// SAFETY: frame `n` (1..=4) names its own boxed array, which outlives the page table
// (the arena frees it only after the address space); only shared references are made.
unsafe impl PhysMapper for Mapper {
    fn table(&self, frame: Pfn) -> NonNull<TableEntries> {
        NonNull::from(&*self.0.0[frame.number() as usize - 1])
    }
}

struct Pool(&'static Mutex<Vec<Pfn>>);

impl FrameAllocator for Pool {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.0.lock().unwrap().pop().ok_or(OutOfFrames)
    }
    fn free(&mut self, frame: Pfn) {
        self.0.lock().unwrap().push(frame);
    }
}

const RAM_FIRST: u64 = 0x100;
const RAM_FRAMES: usize = 4;

/// System RAM of a few one-word frames.
struct Ram {
    words: Vec<AtomicU64>,
    locked: Vec<AtomicBool>,
    used: Mutex<Vec<bool>>,
    live: AtomicUsize,
}

impl Ram {
    fn index(pfn: Pfn) -> usize {
        (pfn.number() - RAM_FIRST) as usize
    }
}

impl SystemMemory for Ram {
    fn allocate(&self, size: PageSize) -> Option<Pfn> {
        if size != PageSize::Size4KiB {
            return None;
        }
        let mut used = self.used.lock().unwrap();
        let i = used.iter().position(|u| !u)?;
        used[i] = true;
        self.live.fetch_add(1, Ordering::Relaxed);
        Some(Pfn::new(RAM_FIRST + i as u64))
    }
    fn free(&self, pfn: Pfn, _: PageSize) {
        let mut used = self.used.lock().unwrap();
        assert!(
            std::mem::replace(&mut used[Ram::index(pfn)], false),
            "double free"
        );
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
    fn try_lock(&self, pfn: Pfn) -> bool {
        !self.locked[Ram::index(pfn)].swap(true, Ordering::Acquire)
    }
    fn unlock(&self, pfn: Pfn) {
        assert!(self.locked[Ram::index(pfn)].swap(false, Ordering::Release));
    }
    fn frame(&self, _: Pfn) -> Option<NonNull<u8>> {
        None
    }
}

struct LoomPlatform;

impl Platform for LoomPlatform {
    type Format = Aarch64;
    type Mapper = Mapper;
    type Tlb = NoInvalidate;
    type TableFrames = Pool;
    type System = Ram;
}

/// A device with one word of memory per page, whose driver brings one page back.
struct Dev {
    words: Vec<AtomicU64>,
    owner: Owner,
    ram: std::sync::OnceLock<&'static Ram>,
    /// Pages the driver's migrations moved.
    moved: AtomicUsize,
    freed: AtomicUsize,
}

impl PagemapOps for Dev {
    fn folio_free(&self, _: Folio<'_>) {
        self.freed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Dev {
    fn word(&self, index: DeviceIndex) -> &AtomicU64 {
        &self.words[(index.number() & 0xffff_ffff) as usize]
    }

    /// System destinations with the device's words copied in.
    fn bring_back<S>(&self, m: &mut Migration<'_, '_, LoomPlatform, Collected>) {
        let ram = self.ram.get().unwrap();
        let sources: Vec<_> = m.sources().collect();
        for (i, target, _) in sources {
            let PageTarget::Device(index) = target else {
                unreachable!()
            };
            let pfn = ram.allocate(PageSize::Size4KiB).expect("RAM");
            ram.words[Ram::index(pfn)]
                .store(self.word(index).load(Ordering::Relaxed), Ordering::Relaxed);
            m.set_system_destination(i, pfn, PageSize::Size4KiB)
                .unwrap();
        }
    }
}

impl DeviceDriver<LoomPlatform> for Dev {
    fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, LoomPlatform>) -> Result<(), FaultError> {
        let start = fault.address() & !0xfff;
        let mut src = [MigratePfn::EMPTY; 1];
        let mut dst = [MigratePfn::EMPTY; 1];
        let mut m = Migration::setup(MigrateVma {
            address_space: fault.address_space(),
            start,
            end: start + 0x1000,
            select: Select::DEVICE_PRIVATE,
            owner: self.owner,
            fault: Some(fault.page()),
            src: &mut src,
            dst: &mut dst,
        })
        .map_err(|_| FaultError::BusError)?;
        self.bring_back::<()>(&mut m);
        let s = m.pages().finalize();
        self.moved.fetch_add(s.migrated as usize, Ordering::Relaxed);
        Ok(())
    }
}

const VMA: Vma = Vma {
    start: 0,
    end: 0x20_0000,
    property: PageProperty {
        writable: true,
        user: true,
        executable: false,
        global: false,
        accessed: false,
        dirty: false,
        memory: devpriv_pte::MemoryType::WriteBack,
    },
    anonymous: true,
};

struct Fixture {
    space: &'static AddressSpace<'static, LoomPlatform>,
    devices: &'static DeviceMemory<'static, LoomPlatform>,
    dev: &'static Dev,
    pagemap: &'static DevicePagemap<'static>,
    ram: &'static Ram,
    l1: &'static TableEntries,
}

/// The address space: va 0 holds a sentinel page (so the level-1 table never empties);
/// pages 1 and 2 are what the models play with.
fn fixture(arena: &mut Arena) -> Fixture {
    let table_entry = Aarch64::encode(
        &Entry::Table {
            next: Pfn::new(2),
            attrs: Default::default(),
        },
        Level::L2,
    )
    .unwrap();
    let sentinel = Aarch64::encode(
        &Entry::Leaf {
            pfn: Pfn::new(0x50),
            size: PageSize::Size4KiB,
            attrs: VMA.leaf_attributes(true, true, false),
        },
        Level::L1,
    )
    .unwrap();
    let frame = |first: u64| -> Box<TableEntries> {
        Box::new(core::array::from_fn(|i| {
            AtomicU64::new(if i == 0 { first } else { 0 })
        }))
    };
    let frames = arena.leak(Frames(vec![
        frame(table_entry),
        frame(sentinel),
        frame(0),
        frame(0),
    ]));
    let pool = arena.leak(Mutex::new(vec![Pfn::new(3), Pfn::new(4)]));
    let ram = arena.leak(Ram {
        words: (0..RAM_FRAMES).map(|_| AtomicU64::new(0)).collect(),
        locked: (0..RAM_FRAMES).map(|_| AtomicBool::new(false)).collect(),
        used: Mutex::new(vec![false; RAM_FRAMES]),
        live: AtomicUsize::new(0),
    });
    let dev = arena.leak(Dev {
        words: (0..2).map(|_| AtomicU64::new(0)).collect(),
        owner: Owner::new(1),
        ram: std::sync::OnceLock::new(),
        moved: AtomicUsize::new(0),
        freed: AtomicUsize::new(0),
    });
    dev.ram.set(ram).ok().unwrap();
    let meta: &'static mut [PageMeta] = arena
        .leak_mut((0..2).map(|_| PageMeta::new()).collect::<Vec<_>>())
        .as_mut_slice();
    let pagemap = arena.leak(DevicePagemap::new(2, dev.owner, dev, meta).unwrap());
    let devices = arena.leak(DeviceMemory::<LoomPlatform>::new());
    devices.register(pagemap, dev).unwrap();
    let vmas: &'static Vma = arena.leak(VMA);
    // SAFETY: frame 1 is a level-2 table whose one table entry points to frame 2; both
    // are reached through the mapper for as long as the arena lives.
    let table = unsafe { PageTable::from_root(Pfn::new(1), Level::L2, Mapper(frames)) }.unwrap();
    let space = arena.leak(AddressSpace::new(AddressSpaceParts {
        id: AddressSpaceId::new(1).unwrap(),
        table,
        tlb: NoInvalidate,
        table_frames: Pool(pool),
        system: ram,
        devices,
        vmas,
    }));
    Fixture {
        space,
        devices,
        dev,
        pagemap,
        ram,
        l1: &frames.0[1],
    }
}

impl Fixture {
    /// Maps page `n` from a RAM frame holding `value`.
    fn map_ram(&self, n: usize, value: u64) -> Pfn {
        let pfn = self.ram.allocate(PageSize::Size4KiB).unwrap();
        self.ram.words[Ram::index(pfn)].store(value, Ordering::Relaxed);
        let raw = Aarch64::encode(
            &Entry::Leaf {
                pfn,
                size: PageSize::Size4KiB,
                attrs: VMA.leaf_attributes(true, true, true),
            },
            Level::L1,
        )
        .unwrap();
        self.l1[n].store(raw, Ordering::Release);
        pfn
    }

    /// Puts page `n` on the device, holding `value`.
    fn map_device(&self, n: usize, value: u64) -> DeviceIndex {
        let folio: LockedFolio<'static> = self.pagemap.alloc_locked(PageSize::Size4KiB).unwrap();
        let index = folio.index();
        self.dev.word(index).store(value, Ordering::Relaxed);
        folio.set_reverse_map(Some(ReverseMap::new(self.space.id(), n as u64).unwrap()));
        let raw = Aarch64::encode(
            &Entry::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index,
            })),
            Level::L1,
        )
        .unwrap();
        self.l1[n].store(raw, Ordering::Release);
        let _ = folio.unlock().into_raw(); // the entry's reference
        index
    }

    fn entry(&self, n: usize) -> Entry<Aarch64> {
        self.space.read().lookup(n as u64 * 0x1000).unwrap().1
    }

    /// The value page `n` holds, wherever it is.
    fn value(&self, n: usize) -> Option<u64> {
        match self.entry(n) {
            Entry::Leaf { pfn, .. } => {
                Some(self.ram.words[Ram::index(pfn)].load(Ordering::Relaxed))
            }
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DevicePrivate { index, .. },
                ..
            }) => Some(self.dev.word(index).load(Ordering::Relaxed)),
            _ => None,
        }
    }
}

fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.max_branches = 100_000;
    builder
}

/// Two CPUs fault on the same device page: exactly one migration moves it, both end
/// with the page in RAM holding the device's bytes, the folio freed once.
#[test]
fn two_cpus_fault_on_one_device_page() {
    bounded().check(|| {
        let mut arena = Arena::default();
        let fx = fixture(&mut arena);
        fx.map_device(1, 0xabc);
        let space = fx.space;
        let other = thread::spawn(move || handle_fault(space, 0x1008, false).unwrap());
        let mine = handle_fault(space, 0x1010, false).unwrap();
        let theirs = other.join().unwrap();
        for outcome in [mine, theirs] {
            assert!(
                !matches!(outcome, FaultOutcome::Wait(WaitFor::SystemFrame(_))),
                "{outcome:?}"
            );
        }
        assert_eq!(
            fx.dev.moved.load(Ordering::Relaxed),
            1,
            "moved exactly once"
        );
        assert_eq!(fx.value(1), Some(0xabc));
        assert!(matches!(fx.entry(1), Entry::Leaf { .. }));
        assert_eq!(fx.pagemap.allocated_pages(), 0);
        assert_eq!(fx.dev.freed.load(Ordering::Relaxed), 1);
        assert_eq!(fx.ram.live.load(Ordering::Relaxed), 1);
        drop(fx);
    });
}

/// A CPU fault races the eviction of the pagemap: one of them moves the page, the
/// other finds nothing to do; nothing is copied twice or lost.
#[test]
fn a_fault_races_eviction() {
    bounded().check(|| {
        let mut arena = Arena::default();
        let fx = fixture(&mut arena);
        fx.map_device(1, 0x77);
        let spaces = arena.leak(AddressSpaces::<LoomPlatform, 2>::new());
        spaces.register(fx.space).unwrap();
        let (devices, dev, pagemap, ram) = (fx.devices, fx.dev, fx.pagemap, fx.ram);
        let evictor = thread::spawn(move || {
            let mut src = [MigratePfn::EMPTY; 2];
            let mut dst = [MigratePfn::EMPTY; 2];
            let mut m = Migration::evict(
                devices,
                spaces,
                ram,
                Evict::pagemap(pagemap),
                &mut src,
                &mut dst,
            )
            .unwrap();
            dev.bring_back::<()>(&mut m);
            m.pages().finalize().migrated
        });
        let outcome = handle_fault(fx.space, 0x1000, true).unwrap();
        let evicted = evictor.join().unwrap();
        let faulted = fx.dev.moved.load(Ordering::Relaxed) as u64;
        assert!(!matches!(
            outcome,
            FaultOutcome::Wait(WaitFor::SystemFrame(_))
        ));
        // A fault that waited on the folio lock simply retries later: at most one mover.
        assert!(evicted + faulted <= 1);
        if evicted + faulted == 1 {
            assert!(matches!(fx.entry(1), Entry::Leaf { .. }));
            assert_eq!(fx.pagemap.allocated_pages(), 0);
            assert_eq!(fx.ram.live.load(Ordering::Relaxed), 1);
        } else {
            assert_eq!(fx.pagemap.allocated_pages(), 1);
            assert_eq!(fx.ram.live.load(Ordering::Relaxed), 0);
        }
        assert_eq!(fx.value(1), Some(0x77));
        drop(fx);
    });
}

/// A migration to the device of pages 1 and 2 races an unmap of page 2: page 1 moves;
/// page 2 is either unmapped (its frame freed) or, if the unmap came first, a hole that
/// the migration populates; no frame or folio is left unaccounted for.
#[test]
fn a_migration_races_an_unmap_of_part_of_its_range() {
    bounded().check(|| {
        let mut arena = Arena::default();
        let fx = fixture(&mut arena);
        fx.map_ram(1, 0x11);
        fx.map_ram(2, 0x22);
        let (space, ram) = (fx.space, fx.ram);
        let unmapper = thread::spawn(move || {
            space
                .unmap(0x2000, 0x1000, |removed| match removed.entry().unwrap() {
                    Entry::Leaf { pfn, .. } => ram.free(pfn, PageSize::Size4KiB),
                    other => panic!("{other:?}"),
                })
                .unwrap();
        });
        let mut src = [MigratePfn::EMPTY; 2];
        let mut dst = [MigratePfn::EMPTY; 2];
        let mut m = Migration::setup(MigrateVma {
            address_space: space,
            start: 0x1000,
            end: 0x3000,
            select: Select::SYSTEM,
            owner: fx.dev.owner,
            fault: None,
            src: &mut src,
            dst: &mut dst,
        })
        .unwrap();
        for i in 0..2 {
            if !m.src()[i].is_migrating() {
                continue;
            }
            let folio = fx.pagemap.alloc_locked(PageSize::Size4KiB).unwrap();
            let value = match m.src()[i].target() {
                Some(PageTarget::System(pfn)) => ram.words[Ram::index(pfn)].load(Ordering::Relaxed),
                _ => 0,
            };
            fx.dev.word(folio.index()).store(value, Ordering::Relaxed);
            m.set_device_destination(i, folio).unwrap();
        }
        let summary = m.pages().finalize();
        unmapper.join().unwrap();
        assert!(summary.migrated >= 1);
        assert_eq!(fx.value(1), Some(0x11));
        let on_device = match fx.entry(2) {
            Entry::Absent => 0,
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DevicePrivate { .. },
                ..
            }) => {
                assert_eq!(fx.value(2), Some(0), "a populated hole reads zero");
                1
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(fx.pagemap.allocated_pages(), 1 + on_device);
        assert_eq!(
            fx.ram.live.load(Ordering::Relaxed),
            0,
            "both frames given back"
        );
        drop(fx);
    });
}

/// A snapshot loop races an unmap: the mirror never keeps the frame the unmap took.
#[test]
fn a_snapshot_races_an_invalidation() {
    struct Mirror {
        lock: Mutex<()>,
        pfn: AtomicU64,
    }
    impl IntervalNotifier for Mirror {
        fn invalidate(&self, _: SubscriptionId, _: &Invalidation) {
            let _guard = self.lock.lock().unwrap();
            self.pfn.store(0, Ordering::Relaxed);
        }
    }
    bounded().check(|| {
        let mut arena = Arena::default();
        let fx = fixture(&mut arena);
        let frame = fx.map_ram(1, 0x99);
        let mirror = arena.leak(Mirror {
            lock: Mutex::new(()),
            pfn: AtomicU64::new(0),
        });
        let sub = fx.space.subscribe(0x1000, 0x2000, mirror).unwrap();
        let (space, ram) = (fx.space, fx.ram);
        let unmapper = thread::spawn(move || {
            space
                .unmap(0x1000, 0x1000, |removed| match removed.entry().unwrap() {
                    Entry::Leaf { pfn, .. } => ram.free(pfn, PageSize::Size4KiB),
                    other => panic!("{other:?}"),
                })
                .unwrap();
        });
        let mut pfns: [HmmPfn; 1] = [HmmPfn::none()];
        let mut range = HmmRange {
            start: 0x1000,
            end: 0x2000,
            pfns: &mut pfns,
            default_flags: HmmPfn::none(),
            pfn_flags_mask: HmmPfn::none(),
            owner: None,
        };
        let mut never = |_: u64, _: bool| false;
        snapshot_and_commit(
            space,
            sub,
            &mut range,
            &mut never,
            || mirror.lock.lock().unwrap(),
            |_guard, words| {
                if let Some(PageTarget::System(pfn)) = words[0].target() {
                    mirror.pfn.store(pfn.number(), Ordering::Relaxed);
                }
            },
            16,
        )
        .unwrap();
        unmapper.join().unwrap();
        assert!(matches!(fx.entry(1), Entry::Absent));
        assert_ne!(
            mirror.pfn.load(Ordering::Relaxed),
            frame.number(),
            "a stale translation survived"
        );
        drop(fx);
    });
}

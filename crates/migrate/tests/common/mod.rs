//! A small world for the migration tests: tables in the software MMU, system RAM in
//! host memory, one or two devices with their own memory (a `Vec` of pages the CPU
//! cannot reach), drivers that copy with memcpy, and an address space.
#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use devpriv_migrate::model::{Cpu, ModelPlatform, Shootdown, SystemRam};
use devpriv_migrate::*;
use devpriv_pagemap::{DevicePagemap, Folio, LockedFolio, Owner, PageMeta, PagemapOps};
use devpriv_paging::model::{Memory, Mmu};
use devpriv_paging::{PageTable, PagingFormat};
use devpriv_pte::{DeviceIndex, Level, PageProperty, PageSize, Pfn};

pub const KIB4: u64 = 4096;
pub const MIB2: u64 = 2 << 20;
/// Where the test region starts (2 MiB aligned).
pub const BASE: u64 = 0x4000_0000;
/// The test region's size.
pub const REGION: u64 = 64 << 20;

pub type P<F> = ModelPlatform<'static, F>;
pub type Space<F> = AddressSpace<'static, P<F>>;

/// How a device brings a 2 MiB folio back on a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPolicy {
    /// The whole folio (Linux passes no PTE then).
    Whole,
    /// Only the faulting 4 KiB page: the folio is split.
    Page,
}

/// A simulated device: memory the CPU cannot reach, and a driver.
pub struct Device {
    pub owner: Owner,
    /// One page of device memory per pagemap page.
    pub memory: Vec<[AtomicU64; 512]>,
    pub freed: AtomicUsize,
    pub split_calls: AtomicUsize,
    pub faults: AtomicUsize,
    pub policy: Mutex<FaultPolicy>,
    pub ram: &'static SystemRam,
    /// The pagemap, set once registered.
    pub pagemap: std::sync::OnceLock<&'static DevicePagemap<'static>>,
}

impl Device {
    pub fn page_words(&self, index: DeviceIndex) -> &[AtomicU64; 512] {
        &self.memory[(index.number() & 0xffff_ffff) as usize]
    }

    /// Copies `size` from device index `from` to system frame `to`.
    pub fn copy_to_ram(&self, to: Pfn, from: DeviceIndex, size: PageSize) {
        for k in 0..size.frames() {
            let src = self.page_words(DeviceIndex::new(from.number() + k));
            let dst = self.ram.words(Pfn::new(to.number() + k));
            for (d, s) in dst.iter().zip(src.iter()) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Copies `size` from system frame `from` to device index `to`.
    pub fn copy_to_device(&self, to: DeviceIndex, from: Pfn, size: PageSize) {
        for k in 0..size.frames() {
            let src = self.ram.words(Pfn::new(from.number() + k));
            let dst = self.page_words(DeviceIndex::new(to.number() + k));
            for (d, s) in dst.iter().zip(src.iter()) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Clears `size` of device memory from `to`.
    pub fn clear(&self, to: DeviceIndex, size: PageSize) {
        for k in 0..size.frames() {
            for w in self.page_words(DeviceIndex::new(to.number() + k)) {
                w.store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn pagemap(&self) -> &'static DevicePagemap<'static> {
        self.pagemap.get().unwrap()
    }

    /// Gives every collected source of `m` a system destination and copies it there
    /// (2 MiB frames where possible, 512 4 KiB ones where a 2 MiB allocation fails).
    pub fn fill_system_destinations<'a, F: PagingFormat>(
        &self,
        m: &mut Migration<'_, 'a, ModelPlatform<'static, F>, Collected>,
    ) {
        let sources: Vec<_> = m.sources().collect();
        for (i, target, size) in sources {
            let PageTarget::Device(index) = target else {
                panic!("a system page to bring back")
            };
            if let Some(pfn) = self.ram.allocate(size) {
                self.copy_to_ram(pfn, index, size);
                m.set_system_destination(i, pfn, size).unwrap();
            } else if size == PageSize::Size2MiB {
                for k in 0..512 {
                    let Some(pfn) = self.ram.allocate(PageSize::Size4KiB) else {
                        break;
                    };
                    let piece = DeviceIndex::new(index.number() + k as u64);
                    self.copy_to_ram(pfn, piece, PageSize::Size4KiB);
                    m.set_system_destination(i + k, pfn, PageSize::Size4KiB)
                        .unwrap();
                }
            }
        }
    }
}

impl PagemapOps for Device {
    fn folio_free(&self, folio: Folio<'_>) {
        self.freed
            .fetch_add(folio.pages() as usize, Ordering::Relaxed);
    }
    fn folio_split(&self, _head: Folio<'_>, new: Option<Folio<'_>>) {
        if new.is_none() {
            self.split_calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<F: PagingFormat> DeviceDriver<P<F>> for Device {
    fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, P<F>>) -> Result<(), FaultError> {
        self.faults.fetch_add(1, Ordering::Relaxed);
        let whole =
            fault.level() == Level::L2 && *self.policy.lock().unwrap() == FaultPolicy::Whole;
        let (start, pages) = if whole {
            (fault.address() & !(MIB2 - 1), 512)
        } else {
            (fault.address() & !(KIB4 - 1), 1)
        };
        let mut src = vec![MigratePfn::EMPTY; pages];
        let mut dst = vec![MigratePfn::EMPTY; pages];
        let space = fault.address_space();
        let mut select = Select::DEVICE_PRIVATE;
        if whole {
            select |= Select::COMPOUND;
        }
        let mut m = Migration::setup(MigrateVma {
            address_space: space,
            start,
            end: start + pages as u64 * KIB4,
            select,
            owner: self.owner,
            fault: Some(fault.page()),
            src: &mut src,
            dst: &mut dst,
        })
        .map_err(|_| FaultError::BusError)?;
        self.fill_system_destinations(&mut m);
        m.pages().finalize();
        Ok(())
    }
}

/// Everything one test needs, leaked so that the borrows are `'static`.
pub struct World<F: PagingFormat + 'static> {
    pub memory: &'static Memory,
    pub ram: &'static SystemRam,
    pub devices: &'static DeviceMemory<'static, P<F>>,
    pub device: &'static Device,
    pub other: &'static Device,
    pub space: &'static Space<F>,
    pub mmu: &'static Mmu<'static, F>,
    pub tlb: &'static Shootdown<'static, F>,
    pub vma: Vma,
}

pub fn rw() -> PageProperty {
    PageProperty {
        writable: true,
        user: true,
        ..PageProperty::default()
    }
}

fn device(owner: u64, pages: usize, ram: &'static SystemRam) -> &'static Device {
    Box::leak(Box::new(Device {
        owner: Owner::new(owner),
        memory: (0..pages)
            .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
            .collect(),
        freed: AtomicUsize::new(0),
        split_calls: AtomicUsize::new(0),
        faults: AtomicUsize::new(0),
        policy: Mutex::new(FaultPolicy::Whole),
        ram,
        pagemap: std::sync::OnceLock::new(),
    }))
}

fn register<F: PagingFormat>(
    devices: &'static DeviceMemory<'static, P<F>>,
    device: &'static Device,
    pages: u64,
) {
    let meta: &'static mut [PageMeta] = Box::leak((0..pages).map(|_| PageMeta::new()).collect());
    let pagemap: &'static DevicePagemap<'static> = Box::leak(Box::new(
        DevicePagemap::new(pages, device.owner, device, meta).unwrap(),
    ));
    devices.register(pagemap, device).unwrap();
    device.pagemap.set(pagemap).ok().unwrap();
}

/// A world with `device_pages` pages on each of two devices and `ram_frames` frames
/// of system RAM.
pub fn world<F: PagingFormat>(device_pages: u64, ram_frames: usize) -> World<F> {
    let memory: &'static Memory = Box::leak(Box::new(Memory::new(512)));
    let ram: &'static SystemRam = Box::leak(Box::new(SystemRam::new(ram_frames)));
    let devices: &'static DeviceMemory<'static, P<F>> = Box::leak(Box::new(DeviceMemory::new()));
    let dev = device(1, device_pages as usize, ram);
    let other = device(2, device_pages as usize, ram);
    register(devices, dev, device_pages);
    register(devices, other, device_pages);
    let vma = Vma::anonymous(BASE, BASE + REGION, rw());
    let vmas: &'static Vma = Box::leak(Box::new(vma));
    let mut frames = memory;
    let root = if F::is_root_level(Level::L4) {
        Level::L4
    } else {
        Level::L3
    };
    let table = PageTable::<F, _>::new(root, memory, &mut frames).unwrap();
    let mmu: &'static Mmu<'static, F> = Box::leak(Box::new(Mmu::new(memory, table.root(), root)));
    let tlb: &'static Shootdown<'static, F> = Box::leak(Box::new(Shootdown::new(mmu)));
    let space = Box::leak(Box::new(AddressSpace::new(AddressSpaceParts {
        id: devpriv_pagemap::AddressSpaceId::new(1).unwrap(),
        table,
        tlb,
        table_frames: memory,
        system: ram,
        devices,
        vmas,
    })));
    World {
        memory,
        ram,
        devices,
        device: dev,
        other,
        space,
        mmu,
        tlb,
        vma,
    }
}

/// The pattern word `w` of page `page` holds.
pub fn pattern(page: u64, w: u64) -> u64 {
    0x5a5a_0000_0000_0000 ^ (page << 16) ^ w
}

impl<F: PagingFormat> World<F> {
    pub fn cpu(&self) -> Cpu<'static, 'static, F> {
        Cpu::new(self.space)
    }

    /// Maps `[va, va + len)` with fresh RAM, 2 MiB pages if `huge`, each word holding
    /// `pattern(page, word)`.
    pub fn populate(&self, va: u64, len: u64, huge: bool) {
        let size = if huge {
            PageSize::Size2MiB
        } else {
            PageSize::Size4KiB
        };
        let mut at = va;
        while at < va + len {
            let pfn = self.ram.allocate(size).expect("RAM");
            for k in 0..size.frames() {
                let page = (at - BASE) / KIB4 + k;
                self.ram
                    .fill(Pfn::new(pfn.number() + k), PageSize::Size4KiB, |w| {
                        pattern(page, w)
                    });
            }
            self.space.map_page(at, pfn, size, true).unwrap();
            at += size.bytes();
        }
    }

    /// Checks through the CPU that every page of `[va, va + len)` holds its pattern
    /// (sampling a few words per page).
    pub fn check_pattern(&self, va: u64, len: u64) {
        let cpu = self.cpu();
        for page_va in (va..va + len).step_by(KIB4 as usize) {
            let page = (page_va - BASE) / KIB4;
            for w in [0u64, 1, 255, 511] {
                assert_eq!(
                    cpu.read(page_va + w * 8).unwrap(),
                    pattern(page, w),
                    "page {page_va:#x} word {w}"
                );
            }
        }
    }

    /// Migrates `[va, va + len)` to `device` (2 MiB folios where `compound`), copying.
    pub fn to_device(&self, device: &Device, va: u64, len: u64, compound: bool) -> Summary {
        let pages = (len / KIB4) as usize;
        let mut src = vec![MigratePfn::EMPTY; pages];
        let mut dst = vec![MigratePfn::EMPTY; pages];
        let mut select = Select::SYSTEM;
        if compound {
            select |= Select::COMPOUND;
        }
        let mut m = Migration::setup(MigrateVma {
            address_space: self.space,
            start: va,
            end: va + len,
            select,
            owner: device.owner,
            fault: None,
            src: &mut src,
            dst: &mut dst,
        })
        .unwrap();
        let words: Vec<MigratePfn> = m.src().to_vec();
        let pagemap = device.pagemap();
        let mut i = 0;
        while i < pages {
            let s = words[i];
            if !s.is_migrating() {
                i += 1;
                continue;
            }
            let size = s.size();
            let folio = match pagemap.alloc_locked(size) {
                Ok(f) => f,
                Err(_) if size == PageSize::Size2MiB => {
                    // Fall back to 4 KiB destinations: the source is split at commit.
                    for k in 0..512 {
                        let f = pagemap.alloc_locked(PageSize::Size4KiB).unwrap();
                        fill(device, &f, s.target().map(|t| sub(t, k)));
                        m.set_device_destination(i + k as usize, f).unwrap();
                    }
                    i += 512;
                    continue;
                }
                Err(e) => panic!("{e:?}"),
            };
            fill(device, &folio, s.target());
            m.set_device_destination(i, folio).unwrap();
            i += size.frames() as usize;
        }
        m.pages().finalize()
    }

    /// Checks that nothing is held: no folio allocated, no RAM frame but those
    /// `mapped` pages, no lock held, the MMU clean.
    pub fn assert_quiescent(&self) {
        self.mmu.assert_clean();
        assert_eq!(self.ram.locked_frames(), 0, "a RAM frame is still locked");
    }
}

fn sub(t: PageTarget, k: u64) -> PageTarget {
    match t {
        PageTarget::System(p) => PageTarget::System(Pfn::new(p.number() + k)),
        PageTarget::Device(i) => PageTarget::Device(DeviceIndex::new(i.number() + k)),
    }
}

/// Copies the source (or clears, for a hole) into the destination folio.
fn fill(device: &Device, folio: &LockedFolio<'_>, source: Option<PageTarget>) {
    match source {
        Some(PageTarget::System(pfn)) => device.copy_to_device(folio.index(), pfn, folio.size()),
        None => device.clear(folio.index(), folio.size()),
        Some(PageTarget::Device(_)) => panic!("device to device"),
    }
}

/// A notifier that records every invalidation it hears.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Invalidation>>,
}

impl IntervalNotifier for Recorder {
    fn invalidate(&self, _subscription: SubscriptionId, range: &Invalidation) {
        self.seen.lock().unwrap().push(*range);
    }
}

impl Recorder {
    pub fn leak() -> &'static Recorder {
        Box::leak(Box::new(Recorder::default()))
    }

    pub fn events(&self) -> Vec<Invalidation> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl<F: PagingFormat> World<F> {
    /// Another address space over the same memory, devices and RAM, with its own MMU.
    pub fn another_space(
        &self,
        id: u32,
    ) -> (
        &'static Space<F>,
        &'static Mmu<'static, F>,
        &'static Shootdown<'static, F>,
    ) {
        self.space_with_vma(id, self.vma)
    }

    /// Another address space whose one region is `vma`.
    pub fn space_with_vma(
        &self,
        id: u32,
        vma: Vma,
    ) -> (
        &'static Space<F>,
        &'static Mmu<'static, F>,
        &'static Shootdown<'static, F>,
    ) {
        self.space_with_vmas(id, Box::leak(Box::new(vma)))
    }

    /// Another address space whose memory map is `vmas`.
    pub fn space_with_vmas(
        &self,
        id: u32,
        vmas: &'static dyn Vmas,
    ) -> (
        &'static Space<F>,
        &'static Mmu<'static, F>,
        &'static Shootdown<'static, F>,
    ) {
        let mut frames = self.memory;
        let root = if F::is_root_level(Level::L4) {
            Level::L4
        } else {
            Level::L3
        };
        let table = PageTable::<F, _>::new(root, self.memory, &mut frames).unwrap();
        let mmu: &'static Mmu<'static, F> =
            Box::leak(Box::new(Mmu::new(self.memory, table.root(), root)));
        let tlb: &'static Shootdown<'static, F> = Box::leak(Box::new(Shootdown::new(mmu)));
        let space = Box::leak(Box::new(AddressSpace::new(AddressSpaceParts {
            id: devpriv_pagemap::AddressSpaceId::new(id).unwrap(),
            table,
            tlb,
            table_frames: self.memory,
            system: self.ram,
            devices: self.devices,
            vmas,
        })));
        (space, mmu, tlb)
    }

    /// Unmaps `[va, va + len)`, giving the RAM of removed pages back.
    pub fn unmap(&self, space: &Space<F>, va: u64, len: u64) {
        let ram = self.ram;
        space
            .unmap(va, len, |removed| free_removed::<F>(ram, removed))
            .unwrap();
    }
}

/// Frees the RAM an unmapped leaf or device-exclusive entry held.
pub fn free_removed<F: PagingFormat>(ram: &SystemRam, removed: devpriv_paging::RemovedEntry<F>) {
    use devpriv_pte::{Entry, SoftwareEntry, SoftwareKind};
    match removed.entry().unwrap() {
        Entry::Leaf { pfn, size, .. } => ram.free(pfn, size),
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DeviceExclusive { pfn },
            ..
        }) => ram.free(pfn, PageSize::Size4KiB),
        other => panic!("unexpected removed entry {other:?}"),
    }
}

//! The simulated device (Linux's `dmirror`): its own memory, a pagemap over it, a
//! memcpy copy engine, failure injection, and the driver devpriv-migrate calls when a
//! CPU touches one of its pages.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use devpriv_migrate::model::{FRAME_WORDS, SystemRam, zeroed_frames};
use devpriv_migrate::{
    Collected, CpuFault, DeviceDriver, Evict, FaultError, MigrateVma, Migration, PageTarget,
    Select, SystemMemory,
};
use devpriv_pagemap::{
    AllocFailures, DevicePagemap, Folio, LockedFolio, Owner, PageMeta, PagemapOps,
};
use devpriv_paging::PagingFormat;
use devpriv_pte::{DeviceIndex, Level, PageSize, Pfn};

use crate::leak;
use crate::machine::{Machine, Platform};
use crate::mirror::Mirror;
use crate::process::{Process, nth};

/// How a device brings a 2 MiB folio back when a CPU touches one of its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPolicy {
    /// The whole folio (Linux passes no PTE then).
    Whole,
    /// Only the faulting 4 KiB page: the folio is split.
    Page,
}

/// What the device's copy engine does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyEngine {
    /// Copies the bytes (memcpy), as a DMA engine would.
    Memcpy,
    /// Moves nothing: for measuring the migration bookkeeping alone. The bytes of
    /// migrated pages are lost, so only benchmarks use it.
    Skip,
}

/// How a device is built.
#[derive(Clone, Copy, Debug)]
pub struct DeviceConfig {
    /// The owner token of its pagemap.
    pub owner: u64,
    /// 4 KiB pages of device memory.
    pub pages: u64,
    /// What the copy engine does.
    pub copy: CopyEngine,
}

impl Default for DeviceConfig {
    /// Owner 1, 16 MiB of device memory, a memcpy copy engine.
    fn default() -> Self {
        Self {
            owner: 1,
            pages: 4096,
            copy: CopyEngine::Memcpy,
        }
    }
}

/// What the device counts.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// CPU faults its driver handled (`migrate_to_ram` calls).
    pub faults: AtomicU64,
    /// Pages its copy engine moved to the device.
    pub copied_in: AtomicU64,
    /// Pages its copy engine moved to system memory.
    pub copied_out: AtomicU64,
    /// Folios given back to the pagemap (`folio_free`), in 4 KiB pages.
    pub freed: AtomicU64,
    /// 2 MiB folios split (`folio_split` completions).
    pub splits: AtomicU64,
}

/// A simulated device like Linux's `dmirror`.
pub struct Dmirror<F: PagingFormat + 'static> {
    machine: &'static Machine<F>,
    owner: Owner,
    copy: CopyEngine,
    pagemap: std::sync::OnceLock<&'static DevicePagemap<'static>>,
    /// Device memory: one page per pagemap page, reachable only by the copy engine.
    memory: Vec<[AtomicU64; FRAME_WORDS]>,
    policy: Mutex<FaultPolicy>,
    /// Copies to fail, from the next one on (`u32::MAX`: all).
    fail_copies: AtomicU32,
    /// Pages the device may still allocate.
    budget: AtomicI64,
    mirrors: Mutex<Vec<&'static Mirror<F>>>,
    /// What happened.
    pub counters: DeviceCounters,
}

/// Why a device command failed (Linux's errno values, by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// `-EINVAL`: bad arguments (unaligned, empty, no region).
    Invalid,
    /// `-ENOENT`: nothing could be migrated.
    NotFound,
    /// `-EFAULT`: a page could not be faulted in.
    Fault,
    /// `-EPERM`: the access is not allowed (a write to a read-only page, a page no
    /// longer exclusive).
    Permission,
    /// `-ENOMEM`: no device memory.
    NoMemory,
    /// `-EBUSY`: a page kept being migrated.
    Busy,
}

impl<F: PagingFormat> Dmirror<F> {
    pub(crate) fn new(machine: &'static Machine<F>, config: DeviceConfig) -> &'static Self {
        let device: &'static Self = leak(Self {
            machine,
            owner: Owner::new(config.owner),
            copy: config.copy,
            pagemap: std::sync::OnceLock::new(),
            memory: zeroed_frames(config.pages as usize),
            policy: Mutex::new(FaultPolicy::Whole),
            fail_copies: AtomicU32::new(0),
            budget: AtomicI64::new(i64::MAX),
            mirrors: Mutex::new(Vec::new()),
            counters: DeviceCounters::default(),
        });
        let meta: &'static mut [PageMeta] = Box::leak(
            (0..config.pages)
                .map(|_| PageMeta::new())
                .collect::<Box<[_]>>(),
        );
        let pagemap: &'static DevicePagemap<'static> = leak(
            DevicePagemap::new(config.pages, device.owner, device, meta)
                .expect("a device of at least one page"),
        );
        machine
            .devices
            .register(pagemap, device)
            .expect("room in the device-private space");
        assert!(
            device.pagemap.set(pagemap).is_ok(),
            "the pagemap is set once"
        );
        device
    }

    /// The machine the device is in.
    pub fn machine(&self) -> &'static Machine<F> {
        self.machine
    }

    /// The pagemap over the device's memory.
    pub fn pagemap(&self) -> &'static DevicePagemap<'static> {
        self.pagemap.get().expect("registered")
    }

    /// The owner token.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Binds the device to `process` (opening the device file): a mirror of its address
    /// space, kept coherent by an interval notifier.
    pub fn open(&'static self, process: &'static Process<F>) -> &'static Mirror<F> {
        let mirror = Mirror::new(self, process);
        self.mirrors.lock().unwrap().push(mirror);
        mirror
    }

    /// How a CPU fault on a 2 MiB folio is handled.
    pub fn set_fault_policy(&self, policy: FaultPolicy) {
        *self.policy.lock().unwrap() = policy;
    }

    /// Makes the next `n` 2 MiB allocations of device memory fail (`u32::MAX`: all, until
    /// reset with 0): migrations fall back to 4 KiB pages (Linux's
    /// `HMM_DMIRROR_FLAG_FAIL_ALLOC`).
    pub fn fail_large_allocations(&self, n: u32) {
        let failures = match n {
            0 => AllocFailures::Never,
            u32::MAX => AllocFailures::Always,
            n => AllocFailures::Next(n),
        };
        self.pagemap()
            .inject_alloc_failures(PageSize::Size2MiB, failures);
    }

    /// Makes the next `n` copies of the copy engine fail (`u32::MAX`: all).
    pub fn fail_copies(&self, n: u32) {
        self.fail_copies.store(n, Ordering::Relaxed);
    }

    /// Lets the device allocate at most `pages` more pages of its memory.
    pub fn set_budget(&self, pages: i64) {
        self.budget.store(pages, Ordering::Relaxed);
    }

    /// Whether this copy fails (consuming one injected failure).
    fn copy_fails(&self) -> bool {
        self.fail_copies
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }

    /// Whether `index` is a page of this device's memory.
    pub fn owns(&self, index: DeviceIndex) -> bool {
        self.offset(index).is_some()
    }

    /// The page number of `index` inside this device's memory.
    fn offset(&self, index: DeviceIndex) -> Option<usize> {
        let base = self.pagemap().base()?.number();
        let n = index.number().checked_sub(base)?;
        (n < self.pagemap().pages()).then_some(n as usize)
    }

    /// The words of device page `index` (a page of this device: panics otherwise).
    pub fn page_words(&self, index: DeviceIndex) -> &[AtomicU64; FRAME_WORDS] {
        &self.memory[self.offset(index).expect("a page of this device")]
    }

    /// A locked device folio of `size`, if memory and budget allow.
    pub(crate) fn allocate(&self, size: PageSize) -> Option<LockedFolio<'static>> {
        let pages = size.frames() as i64;
        if self.budget.fetch_sub(pages, Ordering::Relaxed) < pages {
            self.budget.fetch_add(pages, Ordering::Relaxed);
            return None;
        }
        match self.pagemap().alloc_locked(size) {
            Ok(folio) => Some(folio),
            Err(_) => {
                self.budget.fetch_add(pages, Ordering::Relaxed);
                None
            }
        }
    }

    fn ram(&self) -> &'static SystemRam {
        self.machine.ram
    }

    /// Copies `size` from system frame `from` to device page `to` (a hole: `from` is
    /// `None`, the page is cleared). `false` if the copy engine failed.
    pub(crate) fn copy_in(&self, to: DeviceIndex, from: Option<Pfn>, size: PageSize) -> bool {
        if self.copy_fails() {
            return false;
        }
        for k in (0..size.frames()).take_while(|_| self.copy == CopyEngine::Memcpy) {
            let dst = self.page_words(DeviceIndex::new(to.number() + k));
            match from {
                Some(pfn) => {
                    for (d, s) in dst.iter().zip(self.ram().words(nth(pfn, k))) {
                        d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                }
                None => dst.iter().for_each(|d| d.store(0, Ordering::Relaxed)),
            }
        }
        self.counters
            .copied_in
            .fetch_add(size.frames(), Ordering::Relaxed);
        true
    }

    /// Copies `size` from device page `from` to system frame `to`. `false` if the copy
    /// engine failed.
    pub(crate) fn copy_out(&self, to: Pfn, from: DeviceIndex, size: PageSize) -> bool {
        if self.copy_fails() {
            return false;
        }
        for k in (0..size.frames()).take_while(|_| self.copy == CopyEngine::Memcpy) {
            let src = self.page_words(DeviceIndex::new(from.number() + k));
            for (d, s) in self.ram().words(nth(to, k)).iter().zip(src) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        self.counters
            .copied_out
            .fetch_add(size.frames(), Ordering::Relaxed);
        true
    }

    /// For each collected device page of `m`, a system destination with the page's
    /// bytes (2 MiB frames where possible, 512 4 KiB ones where a 2 MiB allocation
    /// fails). Returns the words that got one.
    pub(crate) fn bring_back(
        &self,
        m: &mut Migration<'_, '_, Platform<F>, Collected>,
    ) -> Vec<usize> {
        let mut filled = Vec::new();
        let sources: Vec<_> = m.sources().collect();
        for (i, target, size) in sources {
            let PageTarget::Device(index) = target else {
                continue;
            };
            if let Some(pfn) = self.ram().allocate(size) {
                if self.copy_out(pfn, index, size) {
                    m.set_system_destination(i, pfn, size)
                        .expect("a destination for a collected page");
                    filled.push(i);
                } else {
                    self.ram().free(pfn, size);
                }
            } else if size == PageSize::Size2MiB {
                for k in 0..512usize {
                    let Some(pfn) = self.ram().allocate(PageSize::Size4KiB) else {
                        break;
                    };
                    let piece = DeviceIndex::new(index.number() + k as u64);
                    if !self.copy_out(pfn, piece, PageSize::Size4KiB) {
                        self.ram().free(pfn, PageSize::Size4KiB);
                        break;
                    }
                    m.set_system_destination(i + k, pfn, PageSize::Size4KiB)
                        .expect("a destination inside a collected 2 MiB page");
                    filled.push(i + k);
                }
            }
        }
        filled
    }

    /// The mirror of the address space `id`, if the device is open there.
    pub(crate) fn mirror_of(
        &self,
        id: devpriv_pagemap::AddressSpaceId,
    ) -> Option<&'static Mirror<F>> {
        self.mirrors
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.process().space().id() == id)
            .copied()
    }

    /// Moves every page of the device's memory back to system memory (Linux's
    /// `migrate_device_range` on driver unbind, `dmirror_device_evict_chunk`), retrying
    /// busy pages. Returns the pages moved, or [`DeviceError::Busy`] if some stayed.
    pub fn evict(&self) -> Result<u64, DeviceError> {
        let pagemap = self.pagemap();
        let pages = pagemap.pages() as usize;
        let mut src = vec![devpriv_migrate::MigratePfn::EMPTY; pages];
        let mut dst = vec![devpriv_migrate::MigratePfn::EMPTY; pages];
        let mut moved = 0;
        for _ in 0..64 {
            if pagemap.allocated_pages() == 0 {
                return Ok(moved);
            }
            let mut m = Migration::evict(
                self.machine.devices,
                self.machine.spaces,
                self.machine.ram,
                Evict::pagemap(pagemap),
                &mut src,
                &mut dst,
            )
            .map_err(|_| DeviceError::Invalid)?;
            self.bring_back(&mut m);
            let m = m.pages();
            // Mirrors drop the device pages that move (the eviction's notifier window
            // has no owner, so they already did for mapped pages).
            moved += m.finalize().migrated;
            std::thread::yield_now();
        }
        if pagemap.allocated_pages() == 0 {
            Ok(moved)
        } else {
            Err(DeviceError::Busy)
        }
    }
}

impl<F: PagingFormat> Dmirror<F> {
    /// Takes the device away (Linux's device removal, `dmirror_device_remove`): every
    /// page evicted back to system memory, then the pagemap unregistered from the
    /// device-private space. Returns the pages moved. The device cannot migrate again.
    pub fn release(&self) -> Result<u64, DeviceError> {
        let moved = self.evict()?;
        let id = self.pagemap().id().ok_or(DeviceError::Invalid)?;
        self.machine
            .devices
            .unregister(id)
            .map_err(|_| DeviceError::Busy)?;
        Ok(moved)
    }
}

impl<F: PagingFormat> PagemapOps for Dmirror<F> {
    fn folio_free(&self, folio: Folio<'_>) {
        self.counters
            .freed
            .fetch_add(folio.pages(), Ordering::Relaxed);
        self.budget
            .fetch_add(folio.pages() as i64, Ordering::Relaxed);
    }

    fn folio_split(&self, _head: Folio<'_>, new: Option<Folio<'_>>) {
        if new.is_none() {
            self.counters.splits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<F: PagingFormat> DeviceDriver<Platform<F>> for Dmirror<F> {
    /// Linux's `dmirror_devmem_fault`: migrate the faulting page — or, by policy, its
    /// whole 2 MiB folio — back to system memory, dropping it from the mirror.
    fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, Platform<F>>) -> Result<(), FaultError> {
        self.counters.faults.fetch_add(1, Ordering::Relaxed);
        let block = fault.address() & !((2 << 20) - 1);
        // The whole folio only if one region still holds all of it (a protection change
        // may have cut the region since; then the page alone, which splits the folio).
        let whole = fault.level() == Level::L2
            && *self.policy.lock().unwrap() == FaultPolicy::Whole
            && fault
                .address_space()
                .vma(block)
                .is_some_and(|v| v.covers(block, block + (2 << 20)));
        let (start, pages) = if whole {
            (fault.address() & !((2 << 20) - 1), 512)
        } else {
            (fault.address() & !0xfff, 1)
        };
        let mut select = Select::DEVICE_PRIVATE;
        if whole {
            select |= Select::COMPOUND;
        }
        let space = fault.address_space();
        let mut src = vec![devpriv_migrate::MigratePfn::EMPTY; pages];
        let mut dst = vec![devpriv_migrate::MigratePfn::EMPTY; pages];
        let mut m = Migration::setup(MigrateVma {
            address_space: space,
            start,
            end: start + (pages as u64) * 4096,
            select,
            owner: self.owner,
            fault: Some(fault.page()),
            src: &mut src,
            dst: &mut dst,
        })
        .map_err(|_| FaultError::BusError)?;
        // The device stops using the pages before they are copied (as Linux's dmirror
        // erases its entries first): a device write after the copy would be lost.
        if let Some(mirror) = self.mirror_of(space.id()) {
            mirror.forget(start, start + (pages as u64) * 4096);
        }
        let filled = self.bring_back(&mut m);
        if m.sources().next().is_some() && filled.is_empty() {
            return Err(FaultError::BusError);
        }
        m.pages().finalize();
        Ok(())
    }
}

//! The simulated device: its memory is RAM the CPU's own mappings leave out, reached by
//! its copy engine through a window of its own; its pagemap's driver brings pages back
//! when a CPU touches them.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use devpriv_migrate::{
    CpuFault, DeviceDriver, FaultError, MigratePfn, MigrateVma, Migration, PageTarget, Select,
    SystemMemory,
};
use devpriv_pagemap::{DevicePagemap, Folio, Owner, PagemapOps};
use devpriv_pte::{DeviceIndex, Level, PageSize, Pfn};
use spin::{Mutex, Once};

use super::KernelPlatform;
use super::ram::KernelRam;
use crate::platform::Platform;

/// 4 KiB pages of device memory: 8 MiB.
pub const DEVICE_PAGES: usize = 2048;

/// The owner token of the device's pagemap.
pub const DEVICE_OWNER: Owner = Owner::new(0xde71_ce00);

/// What the device counts.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// CPU faults its driver handled.
    pub faults: AtomicU64,
    /// 4 KiB pages its copy engine moved to the device.
    pub copied_in: AtomicU64,
    /// 4 KiB pages its copy engine moved to system memory.
    pub copied_out: AtomicU64,
    /// 4 KiB pages of folios given back to the pagemap.
    pub freed: AtomicU64,
    /// 2 MiB folios split.
    pub splits: AtomicU64,
}

/// Migration words for the driver's own migrations (one fault at a time).
struct FaultWords {
    src: [MigratePfn; 512],
    dst: [MigratePfn; 512],
}

/// The device: a copy engine over its memory window, the pagemap's operations, and
/// the driver of CPU faults.
pub struct SimulatedDevice<P: Platform> {
    /// Virtual address of device page 0 in the copy engine's window.
    window: u64,
    ram: &'static KernelRam,
    pagemap: Once<&'static DevicePagemap<'static>>,
    /// Whether the copy engine moves bytes (off: bookkeeping alone, for timing).
    copy: AtomicBool,
    words: Mutex<FaultWords>,
    /// What happened.
    pub counters: DeviceCounters,
    _platform: PhantomData<fn() -> P>,
}

impl<P: Platform> SimulatedDevice<P> {
    /// A device whose memory the copy engine reaches at `window`, bringing pages back
    /// into `ram`.
    pub const fn new(window: u64, ram: &'static KernelRam) -> Self {
        Self {
            window,
            ram,
            pagemap: Once::new(),
            copy: AtomicBool::new(true),
            words: Mutex::new(FaultWords {
                src: [MigratePfn::EMPTY; 512],
                dst: [MigratePfn::EMPTY; 512],
            }),
            counters: DeviceCounters {
                faults: AtomicU64::new(0),
                copied_in: AtomicU64::new(0),
                copied_out: AtomicU64::new(0),
                freed: AtomicU64::new(0),
                splits: AtomicU64::new(0),
            },
            _platform: PhantomData,
        }
    }

    /// Records the pagemap once it exists.
    pub fn attach(&self, pagemap: &'static DevicePagemap<'static>) {
        self.pagemap.call_once(|| pagemap);
    }

    /// The pagemap.
    pub fn pagemap(&self) -> &'static DevicePagemap<'static> {
        self.pagemap.get().expect("attached at boot")
    }

    /// Turns the copy engine's data movement on or off (off only for timing the
    /// bookkeeping: the bytes of migrated pages are then lost).
    pub fn set_copy(&self, copy: bool) {
        self.copy.store(copy, Ordering::Relaxed);
    }

    /// The window address of device page `index`.
    fn window_address(&self, index: DeviceIndex) -> *mut u64 {
        let base = self.pagemap().base().expect("registered").number();
        let page = index
            .number()
            .checked_sub(base)
            .expect("a page of this device");
        assert!(page < DEVICE_PAGES as u64, "a page of this device");
        (self.window + page * 4096) as *mut u64
    }

    /// Copies `size` from system frame `from` (`None`: a hole, cleared) into device page
    /// `to` — the copy engine, to the device.
    pub fn copy_in(&self, to: DeviceIndex, from: Option<Pfn>, size: PageSize) {
        if self.copy.load(Ordering::Relaxed) {
            let dst = self.window_address(to);
            let words = size.bytes() as usize / 8;
            match from {
                Some(pfn) => {
                    let src = self.ram.frame(pfn).expect("RAM").as_ptr().cast::<u64>();
                    // SAFETY: the migration holds the source frame locked and the
                    // destination folio locked; both are `size` bytes, in different
                    // memories, reachable at these addresses (RAM by `KernelRam`'s
                    // contract, device memory through the window mapped at boot).
                    unsafe { core::ptr::copy_nonoverlapping(src, dst, words) };
                }
                // SAFETY: as above, for the destination alone.
                None => unsafe { core::ptr::write_bytes(dst, 0, words) },
            }
        }
        self.counters
            .copied_in
            .fetch_add(size.frames(), Ordering::Relaxed);
    }

    /// Copies `size` from device page `from` into system frame `to` — the copy engine,
    /// back to system memory.
    pub fn copy_out(&self, to: Pfn, from: DeviceIndex, size: PageSize) {
        if self.copy.load(Ordering::Relaxed) {
            let src = self.window_address(from);
            let dst = self.ram.frame(to).expect("RAM").as_ptr().cast::<u64>();
            // SAFETY: the migration holds the source folio locked and the destination
            // frame was just allocated for it; both are `size` bytes in different
            // memories, reachable at these addresses.
            unsafe { core::ptr::copy_nonoverlapping(src, dst, size.bytes() as usize / 8) };
        }
        self.counters
            .copied_out
            .fetch_add(size.frames(), Ordering::Relaxed);
    }

    /// For every collected device page of `m`, a system frame with its bytes (a 2 MiB
    /// frame for a 2 MiB folio, or 512 4 KiB frames if no 2 MiB frame is free).
    pub fn bring_back(&self, m: &mut Migration<'_, '_, KernelPlatform<P>>) {
        let mut i = 0;
        while i < m.src().len() {
            let word = m.src()[i];
            let frames = word.size().frames() as usize;
            if let (true, Some(PageTarget::Device(index))) = (word.is_migrating(), word.target()) {
                let size = word.size();
                if let Some(pfn) = self.ram.allocate(size) {
                    self.copy_out(pfn, index, size);
                    m.set_system_destination(i, pfn, size)
                        .expect("a destination for a collected page");
                } else if size == PageSize::Size2MiB {
                    for k in 0..512u64 {
                        let Some(pfn) = self.ram.allocate(PageSize::Size4KiB) else {
                            break;
                        };
                        let piece = DeviceIndex::new(index.number() + k);
                        self.copy_out(pfn, piece, PageSize::Size4KiB);
                        m.set_system_destination(i + k as usize, pfn, PageSize::Size4KiB)
                            .expect("a destination inside a collected 2 MiB page");
                    }
                }
            }
            i += frames.max(1);
        }
    }
}

impl<P: Platform> PagemapOps for SimulatedDevice<P> {
    fn folio_free(&self, folio: Folio<'_>) {
        self.counters
            .freed
            .fetch_add(folio.pages(), Ordering::Relaxed);
    }

    fn folio_split(&self, _head: Folio<'_>, new: Option<Folio<'_>>) {
        if new.is_none() {
            self.counters.splits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<P: Platform> DeviceDriver<KernelPlatform<P>> for SimulatedDevice<P> {
    /// Brings the touched page back. A 2 MiB folio comes back whole when a 2 MiB frame
    /// is free; otherwise only the touched page comes back, and the folio (and its
    /// entry) is split, its other 511 pages staying on the device.
    fn migrate_to_ram(
        &self,
        fault: &mut CpuFault<'_, '_, KernelPlatform<P>>,
    ) -> Result<(), FaultError> {
        self.counters.faults.fetch_add(1, Ordering::Relaxed);
        // A 2 MiB frame to bring a 2 MiB folio back into, if one is free.
        let frame = if fault.level() == Level::L2 {
            self.ram.allocate(PageSize::Size2MiB)
        } else {
            None
        };
        let (start, pages, select) = if frame.is_some() {
            (
                fault.address() & !(PageSize::Size2MiB.bytes() - 1),
                512,
                Select::DEVICE_PRIVATE | Select::COMPOUND,
            )
        } else {
            (fault.address() & !0xfff, 1, Select::DEVICE_PRIVATE)
        };
        let space = fault.address_space();
        let mut words = self.words.lock();
        let FaultWords { src, dst } = &mut *words;
        let mut m = Migration::setup(MigrateVma {
            address_space: space,
            start,
            end: start + pages as u64 * 4096,
            select,
            owner: DEVICE_OWNER,
            fault: Some(fault.page()),
            src: &mut src[..pages],
            dst: &mut dst[..pages],
        })
        .map_err(|_| {
            if let Some(pfn) = frame {
                self.ram.free(pfn, PageSize::Size2MiB);
            }
            FaultError::BusError
        })?;
        match (frame, m.src()[0].target()) {
            (Some(pfn), Some(PageTarget::Device(index))) if m.src()[0].is_compound() => {
                self.copy_out(pfn, index, PageSize::Size2MiB);
                m.set_system_destination(0, pfn, PageSize::Size2MiB)
                    .expect("a destination for the collected folio");
            }
            (frame, _) => {
                if let Some(pfn) = frame {
                    self.ram.free(pfn, PageSize::Size2MiB);
                }
                self.bring_back(&mut m);
            }
        }
        m.pages().finalize();
        Ok(())
    }
}

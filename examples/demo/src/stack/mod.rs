//! The whole devpriv stack on the real MMU: a device pagemap (devpriv-pagemap) over RAM
//! the CPU's own mappings leave out, registered in the device-private space; a workload
//! address space (devpriv-migrate's [`AddressSpace`]) over the live page table; and
//! migrations, CPU faults, device-exclusive access and eviction through devpriv-migrate.
//!
//! A kernel keeps everything in one `static` [`StackStorage`] and calls
//! [`StackStorage::build`] once its page table is live; the fault handler sends faults
//! in the workload's region to [`Stack::handle_fault`]; [`steps`] is the transcript.
//!
//! - [`ram`]: the workload's system memory ([`KernelRam`]: frames, frame locks, 2 MiB
//!   allocation failures on cue) and its table frames.
//! - [`device`]: the device ([`SimulatedDevice`]): its copy engine, its pagemap's
//!   operations, and the driver that brings pages back on CPU faults.

pub mod device;
pub mod ram;
pub mod steps;

use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use devpriv_migrate::{
    AddressSpace, AddressSpaceParts, AddressSpaces, DeviceMemory, FaultOutcome, MigratePfn, Vma,
    Vmas, handle_fault,
};
use devpriv_pagemap::{AddressSpaceId, DevicePagemap, PagemapId, StaticMetadata};
use devpriv_paging::{OffsetMapper, PageTable};
use devpriv_pte::{Level, PageProperty, Pfn};
use spin::{Mutex, Once};

use crate::layout::DEMO_BASE;
use crate::platform::Platform;

pub use device::{DEVICE_OWNER, DEVICE_PAGES, SimulatedDevice};
pub use ram::{KernelRam, RamTableFrames, SYSTEM_FRAMES};

/// The workload's region: 16 MiB of anonymous, writable memory, in a 1 GiB of its own
/// (so its tables come from, and go back to, [`KernelRam`]).
pub const USER_BASE: u64 = DEMO_BASE + (1 << 30);
/// Bytes in the workload's region.
pub const USER_LEN: u64 = 16 << 20;
/// Where the copy engine reaches device memory (and nothing else does).
pub const COPY_WINDOW: u64 = DEMO_BASE + (2 << 30);
/// Bytes of device memory.
pub const DEVICE_BYTES: u64 = DEVICE_PAGES as u64 * 4096;

/// devpriv-migrate's platform for a kernel whose demo platform is `P`: the live table
/// reached through a fixed offset, `P`'s TLB maintenance, [`KernelRam`].
pub struct KernelPlatform<P>(PhantomData<fn() -> P>);

impl<P: Platform> devpriv_migrate::Platform for KernelPlatform<P> {
    type Format = P::Format;
    type Mapper = OffsetMapper;
    type Tlb = P::Tlb;
    type TableFrames = RamTableFrames;
    type System = KernelRam;
}

/// The workload's memory map: one anonymous, writable region.
pub struct UserRegion;

impl Vmas for UserRegion {
    fn find(&self, va: u64) -> Option<Vma> {
        let property = PageProperty {
            writable: true,
            user: false,
            global: false,
            ..PageProperty::default()
        };
        let vma = Vma::anonymous(USER_BASE, USER_BASE + USER_LEN, property);
        vma.contains(va).then_some(vma)
    }
}

static USER_REGION: UserRegion = UserRegion;

/// A migration the interrupted code left in flight, and how to finish it: what a
/// device's completion interrupt would do. The fault handler runs it when a CPU waits
/// for a page that migration holds (on one CPU, the waiter can only wait for it by
/// finishing it).
pub struct InFlight {
    migration: AtomicPtr<()>,
    finish: AtomicUsize,
}

impl InFlight {
    const fn new() -> Self {
        Self {
            migration: AtomicPtr::new(core::ptr::null_mut()),
            finish: AtomicUsize::new(0),
        }
    }

    /// Registers `migration`, to be finished by `finish(migration)` from the fault
    /// handler.
    ///
    /// # Safety
    /// `migration` must stay valid, and the code that registered it must not touch it,
    /// until [`take`](Self::take) or the handler's `finish` — that is, only the fault
    /// handler (which runs to completion before the interrupted code goes on) uses it
    /// meanwhile.
    pub unsafe fn set(&self, migration: *mut (), finish: unsafe fn(*mut ())) {
        self.finish.store(finish as usize, Ordering::Relaxed);
        self.migration.store(migration, Ordering::Release);
    }

    /// Unregisters the migration; `true` if the handler had not finished it.
    pub fn take(&self) -> bool {
        !self
            .migration
            .swap(core::ptr::null_mut(), Ordering::Acquire)
            .is_null()
    }

    /// Finishes the registered migration, if any; `true` if there was one.
    fn complete(&self) -> bool {
        let migration = self
            .migration
            .swap(core::ptr::null_mut(), Ordering::Acquire);
        if migration.is_null() {
            return false;
        }
        let finish = self.finish.load(Ordering::Relaxed);
        // SAFETY: `set` stored a valid `unsafe fn(*mut ())` before publishing the
        // pointer (release/acquire), and its contract keeps `migration` valid and
        // untouched by anyone else until now; the swap makes this the only caller.
        unsafe {
            let finish: unsafe fn(*mut ()) = core::mem::transmute(finish);
            finish(migration);
        }
        true
    }
}

/// Everything the stack needs, in one `static` a kernel declares
/// (`static STACK: StackStorage<MyPlatform> = StackStorage::new();`).
pub struct StackStorage<P: Platform> {
    ram: Once<KernelRam>,
    metadata: StaticMetadata<DEVICE_PAGES>,
    device: Once<SimulatedDevice<P>>,
    pagemap: Once<DevicePagemap<'static>>,
    pagemap_id: Once<PagemapId>,
    devices: DeviceMemory<'static, KernelPlatform<P>>,
    space: Once<AddressSpace<'static, KernelPlatform<P>>>,
    spaces: AddressSpaces<'static, KernelPlatform<P>, 2>,
    /// The migration left in flight by the "fault during a migration" step.
    pub in_flight: InFlight,
    words: Mutex<MigrationWords>,
}

/// Most pages one migration of the workload covers: the whole region.
pub const MAX_MIGRATION_PAGES: usize = (USER_LEN / 4096) as usize;

/// The `src` and `dst` arrays of the workload's migrations.
pub struct MigrationWords {
    /// Source words.
    pub src: [MigratePfn; MAX_MIGRATION_PAGES],
    /// Destination words.
    pub dst: [MigratePfn; MAX_MIGRATION_PAGES],
}

/// Where a kernel put the pieces the stack is built on.
#[derive(Clone, Copy, Debug)]
pub struct StackMemory {
    /// The live table's root and its level.
    pub root: Pfn,
    /// The root's level.
    pub root_level: Level,
    /// Virtual address = physical address + this, for table frames and RAM.
    pub phys_offset: u64,
    /// First frame of the workload's system memory ([`SYSTEM_FRAMES`] frames, 2 MiB
    /// aligned).
    pub system: Pfn,
}

impl<P: Platform> StackStorage<P> {
    /// Empty storage.
    pub const fn new() -> Self {
        Self {
            ram: Once::new(),
            metadata: StaticMetadata::new(),
            device: Once::new(),
            pagemap: Once::new(),
            pagemap_id: Once::new(),
            devices: DeviceMemory::new(),
            space: Once::new(),
            spaces: AddressSpaces::new(),
            in_flight: InFlight::new(),
            words: Mutex::new(MigrationWords {
                src: [MigratePfn::EMPTY; MAX_MIGRATION_PAGES],
                dst: [MigratePfn::EMPTY; MAX_MIGRATION_PAGES],
            }),
        }
    }

    /// Builds the stack: system memory, the device and its pagemap (registered in the
    /// device-private space), the workload's address space over the live table. The
    /// kernel has mapped device memory at [`COPY_WINDOW`] and nowhere else.
    ///
    /// # Safety
    /// `memory` must describe the live page table (whose frames are reached at physical
    /// address + `phys_offset` and only changed atomically) and [`SYSTEM_FRAMES`] frames
    /// of RAM nothing else uses, reachable at physical address + `phys_offset`; device
    /// memory must be mapped at [`COPY_WINDOW`] (read-write) and used by nothing else.
    /// Call once.
    pub unsafe fn build(&'static self, memory: StackMemory) -> Stack<P> {
        // SAFETY: the caller gives these frames to the stack alone (this function's
        // contract).
        let ram = self
            .ram
            .call_once(|| unsafe { KernelRam::new(memory.system, memory.phys_offset) });
        let device = self
            .device
            .call_once(|| SimulatedDevice::new(COPY_WINDOW, ram));
        let pagemap = self.pagemap.call_once(|| {
            DevicePagemap::from_static(DEVICE_PAGES as u64, DEVICE_OWNER, device, &self.metadata)
                .expect("a pagemap of DEVICE_PAGES pages over zeroed metadata")
        });
        device.attach(pagemap);
        self.pagemap_id.call_once(|| {
            self.devices
                .register(pagemap, device)
                .expect("room in the device-private space")
        });
        let space = self.space.call_once(|| {
            // SAFETY: the live table's frames are reached at this offset and changed
            // only atomically (this function's contract).
            let table = unsafe {
                PageTable::from_root(
                    memory.root,
                    memory.root_level,
                    OffsetMapper::new(memory.phys_offset),
                )
            }
            .expect("the live table's root");
            AddressSpace::new(AddressSpaceParts {
                id: AddressSpaceId::new(1).expect("a small identifier"),
                table,
                tlb: P::Tlb::default(),
                table_frames: RamTableFrames(ram),
                system: ram,
                devices: &self.devices,
                vmas: &USER_REGION,
            })
        });
        self.spaces
            .register(space)
            .expect("identifier 1 fits the registry");
        Stack { storage: self }
    }
}

impl<P: Platform> Default for StackStorage<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// The built stack.
pub struct Stack<P: Platform + 'static> {
    storage: &'static StackStorage<P>,
}

impl<P: Platform> Clone for Stack<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Platform> Copy for Stack<P> {}

impl<P: Platform> Stack<P> {
    /// The workload's address space.
    pub fn space(&self) -> &'static AddressSpace<'static, KernelPlatform<P>> {
        self.storage.space.get().expect("built")
    }

    /// The address-space registry eviction looks reverse maps up in.
    pub fn spaces(&self) -> &'static AddressSpaces<'static, KernelPlatform<P>, 2> {
        &self.storage.spaces
    }

    /// System memory.
    pub fn ram(&self) -> &'static KernelRam {
        self.storage.ram.get().expect("built")
    }

    /// The device.
    pub fn device(&self) -> &'static SimulatedDevice<P> {
        self.storage.device.get().expect("built")
    }

    /// The device's pagemap.
    pub fn pagemap(&self) -> &'static DevicePagemap<'static> {
        self.storage.pagemap.get().expect("built")
    }

    /// The pagemap's registration.
    pub fn pagemap_id(&self) -> PagemapId {
        *self.storage.pagemap_id.get().expect("built")
    }

    /// The device-private space and its drivers.
    pub fn devices(&self) -> &'static DeviceMemory<'static, KernelPlatform<P>> {
        &self.storage.devices
    }

    /// The migration arrays (one migration of the workload at a time).
    pub fn words(&self) -> spin::MutexGuard<'static, MigrationWords> {
        self.storage.words.lock()
    }

    /// The slot for a migration left in flight.
    pub fn in_flight(&self) -> &'static InFlight {
        &self.storage.in_flight
    }

    /// Whether `va` is in the workload's region (faults there are the stack's).
    pub fn owns(&self, va: u64) -> bool {
        (USER_BASE..USER_BASE + USER_LEN).contains(&va)
    }

    /// A CPU fault in the workload's region: devpriv-migrate's fault path, then the
    /// kernel's anonymous-memory fault for an empty slot. Returns what happened, for the
    /// transcript, or `None` if the access cannot be allowed.
    pub fn handle_fault(&self, va: u64, write: bool) -> Option<StackFault> {
        let space = self.space();
        match handle_fault(space, va, write) {
            Ok(FaultOutcome::Resolved) => Some(StackFault::Resolved),
            Ok(FaultOutcome::Retry) => Some(StackFault::Retry),
            Ok(FaultOutcome::Wait(_)) => {
                if self.in_flight().complete() {
                    Some(StackFault::CompletedInFlight)
                } else {
                    // Another CPU holds the page: on one CPU this cannot happen.
                    None
                }
            }
            Ok(FaultOutcome::NotDevicePrivate) => self.anonymous_fault(va, write),
            Err(_) => None,
        }
    }

    /// The kernel's anonymous fault: a fresh zeroed frame for an empty slot.
    fn anonymous_fault(&self, va: u64, write: bool) -> Option<StackFault> {
        use devpriv_migrate::SystemMemory;
        use devpriv_pte::{Entry, PageSize};
        let space = self.space();
        let page = va & !0xfff;
        let (_, entry) = space.read().lookup(page).ok()?;
        match entry {
            Entry::Absent => {
                let ram = self.ram();
                let pfn = ram.allocate(PageSize::Size4KiB)?;
                // SAFETY: the frame was just allocated to us and is not mapped yet.
                unsafe { ram.clear(pfn, PageSize::Size4KiB) };
                if space.map_page(page, pfn, PageSize::Size4KiB, true).is_err() {
                    ram.free(pfn, PageSize::Size4KiB);
                }
                Some(StackFault::Anonymous)
            }
            // Present (another path mapped it meanwhile): the access runs again, and a
            // write to a read-only page is not allowed (the region is writable, so it is
            // not expected here).
            Entry::Leaf { attrs, .. } => {
                use devpriv_pte::LeafAttributes;
                (!write || attrs.property().writable).then_some(StackFault::Retry)
            }
            _ => None,
        }
    }
}

/// What [`Stack::handle_fault`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackFault {
    /// devpriv-migrate resolved it: a device page came back through the driver's
    /// `migrate_to_ram`, or a device-exclusive entry was restored.
    Resolved,
    /// The entry changed meanwhile; the access runs again.
    Retry,
    /// The page was held by a migration in flight, which the handler finished (the
    /// device's completion); the access runs again.
    CompletedInFlight,
    /// An empty slot got a fresh zeroed frame.
    Anonymous,
}

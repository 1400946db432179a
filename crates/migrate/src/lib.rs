//! Migration of pages between system memory and device-private memory: Linux's
//! `migrate_vma` as a typestate, CPU faults on device-private entries, eviction of a
//! whole pagemap, device-exclusive access, range snapshots (`hmm_range_fault`) and
//! interval notifiers, over [`devpriv_paging`] page tables and [`devpriv_pagemap`]
//! device memory.
//!
//! `no_std`, no allocation: every array a migration or a snapshot needs is the
//! caller's slice.
//!
//! - A kernel describes itself with a [`Platform`] (entry format, table mapper, TLB,
//!   table frames, [`SystemMemory`]) and builds an [`AddressSpace`] per process, over
//!   its [`Vmas`] and one [`DeviceMemory`] (the device-private space and the drivers of
//!   its pagemaps).
//! - A driver moves pages with a [`Migration`]: [`Migration::setup`] (or
//!   [`Migration::evict`]) → destinations and copies → [`Migration::pages`] →
//!   [`Migration::finalize`]; steps out of order do not compile.
//! - The kernel's fault handler calls [`handle_fault`], which brings device pages back
//!   through the driver's [`DeviceDriver::migrate_to_ram`] and revokes device-exclusive
//!   access; [`FaultOutcome::Wait`] names the lock to sleep on.
//! - Mirrors subscribe with [`AddressSpace::subscribe`] and keep coherent with
//!   [`snapshot_and_commit`].
//!
//! [`docs/migrate.md`](https://github.com/devpriv/devpriv/blob/main/docs/migrate.md) (also in the package) explains every step, the locking rules and the decisions.
//!
//! ```
//! use devpriv_migrate::model::{Cpu, ModelPlatform, Shootdown, SystemRam};
//! use devpriv_migrate::*;
//! use devpriv_pagemap::{AddressSpaceId, DevicePagemap, Folio, Owner, PageMeta, PagemapOps};
//! use devpriv_paging::model::{Memory, Mmu};
//! use devpriv_paging::PageTable;
//! use devpriv_pte::{arch::x86_64::X86_64, Level, PageProperty, PageSize};
//! use std::sync::atomic::Ordering::Relaxed;
//!
//! type P<'m> = ModelPlatform<'m, X86_64>;
//!
//! /// A device whose memory is a `Vec`, and whose driver copies with memcpy.
//! struct Device { memory: Vec<std::sync::atomic::AtomicU64>, ram: &'static SystemRam }
//! impl PagemapOps for Device {
//!     fn folio_free(&self, _: Folio<'_>) {}
//! }
//! impl<'m> DeviceDriver<P<'m>> for Device {
//!     fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, P<'m>>) -> Result<(), FaultError> {
//!         let start = fault.address() & !0xfff;
//!         let (mut src, mut dst) = ([MigratePfn::EMPTY; 1], [MigratePfn::EMPTY; 1]);
//!         let mut m = Migration::setup(MigrateVma {
//!             address_space: fault.address_space(), start, end: start + 4096,
//!             select: Select::DEVICE_PRIVATE, owner: Owner::new(1),
//!             fault: Some(fault.page()), src: &mut src, dst: &mut dst,
//!         }).map_err(|_| FaultError::BusError)?;
//!         if let Some(PageTarget::Device(index)) = m.src()[0].target() {
//!             let pfn = self.ram.allocate(PageSize::Size4KiB).ok_or(FaultError::BusError)?;
//!             let word = self.memory[(index.number() & 0xffff_ffff) as usize].load(Relaxed);
//!             self.ram.write(pfn, 0, word); // the copy (one word, for brevity)
//!             m.set_system_destination(0, pfn, PageSize::Size4KiB).unwrap();
//!         }
//!         m.pages().finalize();
//!         Ok(())
//!     }
//! }
//!
//! let ram: &'static SystemRam = Box::leak(Box::new(SystemRam::new(64)));
//! let device = Box::leak(Box::new(Device { memory: (0..16).map(|_| Default::default()).collect(), ram }));
//! let meta: &'static mut [PageMeta] = Box::leak((0..16).map(|_| PageMeta::new()).collect());
//! let pagemap = Box::leak(Box::new(DevicePagemap::new(16, Owner::new(1), device, meta).unwrap()));
//! let devices: &'static DeviceMemory<P> = Box::leak(Box::new(DeviceMemory::new()));
//! devices.register(pagemap, device).unwrap();
//!
//! let memory: &'static Memory = Box::leak(Box::new(Memory::new(16)));
//! let table = PageTable::<X86_64, _>::new(Level::L4, memory, &mut { memory }).unwrap();
//! let mmu = Box::leak(Box::new(Mmu::new(memory, table.root(), Level::L4)));
//! let rw = PageProperty { writable: true, user: true, ..PageProperty::default() };
//! let vma: &'static Vma = Box::leak(Box::new(Vma::anonymous(0x10_0000, 0x20_0000, rw)));
//! let space = AddressSpace::new(AddressSpaceParts {
//!     id: AddressSpaceId::new(1).unwrap(),
//!     table,
//!     tlb: &*Box::leak(Box::new(Shootdown::new(mmu))),
//!     table_frames: memory,
//!     system: ram,
//!     devices,
//!     vmas: vma,
//! });
//!
//! // The CPU writes a page; the device takes it.
//! let cpu = Cpu::new(&space);
//! cpu.write(0x10_0000, 42).unwrap();
//! let (mut src, mut dst) = ([MigratePfn::EMPTY; 1], [MigratePfn::EMPTY; 1]);
//! let mut m = Migration::setup(MigrateVma {
//!     address_space: &space, start: 0x10_0000, end: 0x10_1000,
//!     select: Select::SYSTEM, owner: Owner::new(1),
//!     fault: None, src: &mut src, dst: &mut dst,
//! }).unwrap();
//! let Some(PageTarget::System(pfn)) = m.src()[0].target() else { unreachable!() };
//! let folio = pagemap.alloc_locked(PageSize::Size4KiB).unwrap();
//! device.memory[folio.head().number() as usize].store(ram.read(pfn, 0), Relaxed);
//! m.set_device_destination(0, folio).unwrap();
//! assert_eq!(m.pages().finalize().migrated, 1);
//! assert_eq!(pagemap.allocated_pages(), 1);
//!
//! // The CPU touches it: a fault, and the driver brings it back.
//! assert_eq!(cpu.read(0x10_0000).unwrap(), 42);
//! assert_eq!(pagemap.allocated_pages(), 0);
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "model")]
extern crate std;

mod address_space;
mod devices;
mod exclusive;
mod fault;
mod migration;
#[cfg(feature = "model")]
pub mod model;
mod notifier;
mod platform;
mod registry;
mod snapshot;
mod sync;
pub mod words;

pub use address_space::{
    AddressSpace, AddressSpaceError, AddressSpaceParts, LockedFrames, TableRead, TableWrite,
};
pub use devices::{CpuFault, DeviceDriver, DeviceMemory, FaultError, FaultPage};
/// The entry formats this crate is built on, re-exported so that users name the same
/// version of `devpriv-pte` that this crate uses.
pub use devpriv_pte as pte;
pub use exclusive::{ExclusiveError, ExclusivePage, make_device_exclusive};
pub use fault::{FaultOutcome, WaitFor, handle_fault, handle_fault_spinning};
pub use migration::{
    Collected, Committed, DestinationError, Evict, MigrateVma, Migration, SetupError, Stage,
    Summary,
};
pub use notifier::{
    IntervalNotifier, InvalidateEvent, Invalidation, MAX_SUBSCRIPTIONS, NotifierError,
    SubscriptionId,
};
pub use platform::{Platform, SystemMemory, Vma, Vmas};
pub use registry::{AddressSpaceLookup, AddressSpaces, RegistryError};
pub use snapshot::{HmmRange, SnapshotError, snapshot, snapshot_and_commit};
pub use words::{DevicePrivateSeries, HmmLayout, HmmPfn, Mainline, MigratePfn, PageTarget, Select};

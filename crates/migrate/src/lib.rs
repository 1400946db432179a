//! Migration of pages between system memory and device-private memory: Linux's
//! `migrate_vma` as a typestate, CPU faults on device-private entries, eviction of a
//! whole pagemap, device-exclusive access, range snapshots (`hmm_range_fault`) and
//! interval notifiers, over [`devpriv_paging`] page tables and [`devpriv_pagemap`]
//! device memory.
//!
//! `no_std`, no allocation: every array a migration or a snapshot needs is the
//! caller's slice.
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

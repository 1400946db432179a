//! Architecture-neutral demo logic shared by the devpriv example kernels.
//!
//! The kernels in `examples/kernel-x86_64` and `examples/kernel-aarch64` boot, build their
//! page tables and install trap handlers; everything after that lives here, written once
//! for both architectures:
//!
//! - [`tables`]: the live page table seen through devpriv-pte — a walk that decodes every
//!   level with the format, compare-exchange replacement of an entry, and a small mapper
//!   that creates tables on the way down (4 KiB pages and 2 MiB blocks).
//! - [`fault`]: the fault handler. A kernel's trap entry turns the hardware syndrome
//!   into a [`Fault`] and calls [`Demo::handle_fault`], which walks the live table, decodes
//!   the entry and acts on its kind: a permission or access-flag fault on a present
//!   leaf, or a software entry handed to a [`Resolver`].
//! - [`resolve`]: the hook a fault on a software entry goes through. [`DeviceResolver`]
//!   migrates device-private pages back from a [`DeviceMemory`] array; the devpriv-migrate
//!   fault path and a device pagemap slot in at this trait.
//! - [`scenario`]: the transcript the kernels print — present encodings honoured by the
//!   MMU, device-private, migration and device-exclusive entries resolved on real faults,
//!   and a summary line ([`report::SUMMARY_PREFIX`]).
//! - [`stack`]: part 4, the whole devpriv stack on the real MMU — a device pagemap
//!   (devpriv-pagemap) over memory the CPU does not map, a workload address space, and
//!   migrations, faults, exclusive access and eviction through devpriv-migrate; the
//!   fault handler sends faults in the workload's region there.
//! - `kernel` (bare-metal targets only): what both kernels do the same way — memory set
//!   aside, image sections, the device memory carved out, the boot-stack guard page,
//!   the start of the demo.
//! - [`platform`], [`frames`], [`cell`]: what a kernel supplies (console, TLB flush,
//!   instruction-cache sync), a bump frame allocator, and the cell that holds the demo
//!   state for the trap handler and detects nested faults.
//!
//! Everything except the memory accesses in [`scenario`] runs in host unit tests, with
//! page tables in host memory.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

pub mod cell;
pub mod device;
pub mod fault;
pub mod frames;
pub mod image;
#[cfg(target_os = "none")]
pub mod kernel;
pub mod layout;
pub mod platform;
pub mod report;
pub mod resolve;
pub mod scenario;
pub mod stack;
pub mod tables;

pub use cell::TryCell;
pub use device::{DeviceMemory, DevicePage};
pub use fault::{Access, Cause, Demo, Expectation, Fault, Outcome};
pub use frames::{BumpFrames, FrameSource, TableFrames};
pub use platform::Platform;
pub use report::Stats;
pub use resolve::{DeviceResolver, Resolution, ResolveError, Resolver, SystemMemory};
pub use tables::{LiveTables, TableError, Walk};

#[cfg(test)]
mod tests;

//! A simulated device like Linux's `dmirror` (lib/test_hmm.c), the reference consumer of
//! devpriv-migrate and devpriv-pagemap, and the home of the hmm-tests scenario families
//! ported onto it.
//!
//! - [`Machine`]: one simulated computer — page-table memory for the software MMU,
//!   system RAM, device memory, the registry of address spaces.
//! - [`Process`]: an address space with a memory map (`mmap`, `munmap`, `mprotect`) and
//!   a CPU whose loads and stores go through the MMU, so that touching a device page
//!   runs devpriv-migrate's real fault path.
//! - [`Dmirror`]: a device with its own memory (a pagemap over a `Vec` of pages the CPU
//!   cannot reach), a memcpy copy engine, failure injection (2 MiB allocation failures,
//!   copy failures, an allocation budget) and the driver behind CPU faults.
//! - [`Mirror`]: a device bound to a process (an open device file): the device's own
//!   page table, kept coherent by an interval notifier, and the device commands
//!   (`read`, `write`, `migrate_to_device`, `migrate_to_system`, `snapshot`,
//!   `exclusive`, `check_exclusive`), plus [`Dmirror::evict`].
//!
//! - [`throughput`]: the migration throughput sweep (Linux's THP migration benchmark).
//!
//! `docs/testdev.md` maps every ported scenario to the Linux test it comes from.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod device;
mod machine;
mod mirror;
mod process;
pub mod throughput;

pub use device::{CopyEngine, DeviceConfig, DeviceCounters, DeviceError, Dmirror, FaultPolicy};
pub use machine::{MAX_PROCESSES, Machine, MachineConfig, Platform};
pub use mirror::{
    CommandResult, Mirror, MirrorEntry, PROT_DEV_PRIVATE_LOCAL, PROT_DEV_PRIVATE_REMOTE,
    PROT_ERROR, PROT_NONE, PROT_PMD, PROT_PUD, PROT_READ, PROT_WRITE, PROT_ZERO,
};
pub use process::{MMAP_BASE, MemoryMap, Process, Prot};

/// Moves `value` to the heap for the rest of the program: the simulated machine's
/// memory lives as long as a kernel's does.
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

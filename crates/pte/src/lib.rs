//! Level-aware page-table entry formats for x86_64 and aarch64.
//!
//! `devpriv-pte` encodes and decodes raw 64-bit page-table entries into one portable
//! [`Entry`] enum: absent, table, leaf, and the software (non-present) kinds Linux keeps
//! in entries the hardware ignores — swap, migration, device-private, device-exclusive,
//! hw-poison and markers — with Linux's bit layouts, so that a kernel (or a hypervisor
//! reading a Linux guest) can point its page tables at device-private memory.
//!
//! Every encoding of both architectures is plain arithmetic, compiled and tested on any
//! host. The crate is `no_std` and allocates nothing.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod entry;
pub mod error;
pub mod format;
pub mod frame;
pub mod level;
pub mod software;

pub use entry::Entry;
pub use error::{DecodeError, EncodeError};
pub use format::{Arch, Geometry, LeafAttributes, MemoryType, PageProperty, PteFormat};
pub use frame::{DeviceIndex, Pfn};
pub use level::{Level, PageSize};
pub use software::{
    DeviceAccess, Marker, MigrationAccess, SideBits, SoftwareEntry, SoftwareKind, SwapType,
};

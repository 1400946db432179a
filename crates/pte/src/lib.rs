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
//!
//! - [`arch::x86_64::X86_64`] and [`arch::aarch64::Aarch64`] implement [`PteFormat`];
//!   their modules also export the raw bitfield layouts and the register values
//!   (`PAT_MSR_VALUE`, `MAIR_VALUE`) the memory types assume.
//! - Every encode and decode takes the [`Level`] (1 = 4 KiB ... 5 = x86_64 LA57 root).
//! - What depends on how a kernel was built (physical-address width, type numbering,
//!   memory-attribute tables) is a [`Profile`]: `decode_in`/`encode_in` take one, with
//!   presets for Linux guests; `decode`/`encode` use devpriv's own,
//!   [`Profile::DEVPRIV`]. [`PteFormat::decode_lenient`] reads anything a guest holds.
//! - Decoding is total (any `u64`, any level: an [`Entry`] or a [`DecodeError`]);
//!   encoding never truncates (an [`EncodeError`] instead).
//! - The bit layouts and the Linux names are in [`docs/pte-layout.md`](https://github.com/devpriv/devpriv/blob/main/docs/pte-layout.md) (also in the package).
//!
//! ```
//! use devpriv_pte::arch::x86_64::X86_64;
//! use devpriv_pte::{DeviceAccess, DeviceIndex, Entry, Level, PteFormat, SoftwareEntry, SoftwareKind};
//!
//! // A writable device-private page at device index 0x1234, as Linux would write it.
//! let entry = Entry::<X86_64>::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
//!     access: DeviceAccess::Write,
//!     index: DeviceIndex::new(0x1234),
//! }));
//! let raw = X86_64::encode(&entry, Level::L1).unwrap();
//! assert_eq!(raw, 0xe7ff_ffff_ffdb_9600);
//! assert!(!X86_64::is_valid(raw, Level::L1));
//! assert_eq!(X86_64::decode(raw, Level::L1), Ok(entry));
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod classify;
pub mod entry;
pub mod error;
pub mod format;
pub mod frame;
pub mod level;
pub mod profile;
pub mod software;

pub use classify::{Classified, EntryClass, TableClasses};
pub use entry::Entry;
pub use error::{DecodeError, EncodeError};
pub use format::{
    Arch, Geometry, LeafAttributes, LenientEntry, MemoryType, PageProperty, PteFormat,
};
pub use frame::{DeviceIndex, Pfn};
pub use level::{Level, PageSize};
pub use profile::{AttributeTable, MainlineOptions, Profile, TypeMeaning, TypeNumbering};
pub use software::{
    DeviceAccess, Marker, MigrationAccess, SideBits, SoftwareEntry, SoftwareKind, SwapType,
};

//! Atomic multi-level page tables over the [`devpriv_pte`] entry formats.
//!
//! One generic [`PageTable`] walks and rewrites x86_64 (4- or 5-level) and aarch64 (4 KiB
//! granule, 2 to 4 levels from the VA size) tables. It is `no_std` and allocates
//! nothing: table frames come from the caller's [`FrameAllocator`], table memory is
//! reached through a [`PhysMapper`] (an [`OffsetMapper`] for direct or identity maps is
//! provided), and TLB maintenance goes through a [`TlbInvalidate`] implementation
//! (`tlb::X86_64Tlb` / `tlb::Aarch64Tlb` on the real
//! architectures, the software MMU of the `model` feature on a host).
//!
//! * Entries are atomics. Changes that can race (the cursor, protect, split) use
//!   compare-exchange and report a lost race as a typed outcome.
//! * Every change returns a `#[must_use]` [`Flush`]; a [`FlushBatch`] gathers them and
//!   escalates to a full invalidation past [`FULL_FLUSH_THRESHOLD`] pages.
//! * [`needs_break_before_make`] is a pure function; the table follows it on aarch64.
//! * [`Cursor`] visits every entry of a range at its level — present leaves, software
//!   entries, absent slots — and replaces them with compare-exchange.
//! * [`PageTable::install`] puts one entry of any kind (a leaf, a software entry such as
//!   a device-private one) into an empty slot at any level, creating the tables on the
//!   way, with compare-exchange.
//!
//! The design (walks, flushes, break-before-make, the model) is in
//! [`docs/paging.md`](https://github.com/devpriv/devpriv/blob/main/docs/paging.md) (also in the package).
//!
//! # Example: a kernel identity-maps its own memory
//!
//! ```
//! use devpriv_paging::{FrameAllocator, OffsetMapper, OutOfFrames, PageTable};
//! use devpriv_pte::arch::x86_64::{PageAttributes, X86_64};
//! use devpriv_pte::{LeafAttributes, Level, PageProperty, Pfn};
//!
//! /// A bump allocator over a region of free, identity-mapped frames.
//! struct Bump { next: u64, end: u64 }
//!
//! impl FrameAllocator for Bump {
//!     fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
//!         if self.next == self.end { return Err(OutOfFrames); }
//!         self.next += 4096;
//!         Ok(Pfn::containing(self.next - 4096))
//!     }
//!     fn free(&mut self, _frame: Pfn) {}
//! }
//!
//! # #[repr(C, align(4096))] struct Frames([u8; 16 * 4096]);
//! # let frames = Box::leak(Box::new(Frames([0; 16 * 4096])));
//! # let start = frames as *mut Frames as u64;
//! # let (kernel_start, kernel_end) = (0x20_0000u64, 0x60_0000u64);
//! // In a kernel: frames after the kernel image, identity-mapped by the boot tables.
//! let mut frames = Bump { next: start, end: start + 16 * 4096 };
//! // SAFETY: every frame `frames` hands out is identity-mapped and otherwise unused.
//! let mapper = unsafe { OffsetMapper::identity() };
//! let mut table = PageTable::<X86_64, _>::new(Level::L4, mapper, &mut frames)?;
//! let rwx = PageAttributes::from_property(PageProperty {
//!     writable: true,
//!     executable: true,
//!     global: true,
//!     ..PageProperty::default()
//! });
//! // 2 MiB blocks wherever alignment allows.
//! table
//!     .map_range(kernel_start, kernel_start, kernel_end - kernel_start, rwx, &mut frames)?
//!     .ignore(); // not loaded yet: nothing to invalidate
//! assert_eq!(table.translate(0x30_1234).map(|t| t.pa), Some(0x30_1234));
//! // Then: write `table.root().phys_addr()` to CR3 (TTBR0_EL1 on aarch64).
//! # Ok::<(), devpriv_paging::PagingError>(())
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "model")]
extern crate std;

pub mod bbm;
mod cursor;
mod error;
pub mod flush;
mod format;
mod frames;
mod install;
mod live;
mod map;
mod mapper;
#[cfg(feature = "model")]
pub mod model;
mod split;
mod sync;
mod table;
pub mod tlb;
mod unmap;

pub use bbm::needs_break_before_make;
pub use cursor::{Cursor, ReplaceError, Slot};
/// The entry formats this crate is built on, re-exported so that users name the same
/// version of `devpriv-pte` that this crate uses.
pub use devpriv_pte as pte;
pub use error::PagingError;
pub use flush::{FULL_FLUSH_THRESHOLD, Flush, FlushBatch};
pub use format::{PagingFormat, aarch64_root_level, x86_64_root_level};
pub use frames::{FrameAllocator, OutOfFrames};
pub use mapper::{OffsetMapper, PhysMapper, TableEntries};
pub use split::{software_subentry, split_entry};
pub use table::{PageTable, Translation};
pub use tlb::{NoInvalidate, TlbInvalidate};
pub use unmap::RemovedEntry;

//! The software MMU model (feature `model`, std): host test support for this crate and
//! the crates built on it.
//!
//! * [`Memory`] — simulated physical memory: a fixed arena of table frames. `&Memory`
//!   is the [`FrameAllocator`](crate::FrameAllocator) (tracking every frame: a double
//!   free panics, [`Memory::live_frames`] finds leaks, [`Memory::set_budget`] makes it
//!   run out on cue) and the [`PhysMapper`](crate::PhysMapper) (a use after free panics).
//! * [`Mmu`] — one CPU's MMU: a reference walk with the format's own decoder and level
//!   rules, and a TLB that changes only through [`TlbInvalidate`](crate::TlbInvalidate).
//!   An access through a stale cached translation is an error ([`MmuError::Stale`]); a
//!   cached valid entry overwritten by a valid entry that needed break-before-make, or
//!   whose table was freed before it was invalidated, is recorded as a [`Violation`] at
//!   the next invalidation ([`Mmu::assert_clean`]).
//!
//! ```
//! use devpriv_paging::model::{Access, Memory, Mmu};
//! use devpriv_paging::PageTable;
//! use devpriv_pte::arch::aarch64::{Aarch64, PageAttributes};
//! use devpriv_pte::{Level, PageSize, Pfn};
//!
//! let memory = Memory::new(64);
//! let mut alloc = &memory;
//! let mut table = PageTable::<Aarch64, _>::new(Level::L4, &memory, &mut alloc).unwrap();
//! let mmu = Mmu::<Aarch64>::new(&memory, table.root(), Level::L4);
//! table
//!     .map(0x20_0000, Pfn::new(0x4_0000), PageSize::Size2MiB, PageAttributes::default(), &mut alloc)
//!     .unwrap()
//!     .flush(&mmu);
//! assert_eq!(mmu.access(0x20_1234, Access::Read), Ok(0x4000_1234));
//! table.unmap(0x20_0000, 0x20_0000, &mut alloc, &mmu).unwrap().flush(&mmu);
//! assert!(mmu.access(0x20_1234, Access::Read).is_err());
//! mmu.assert_clean();
//! table.destroy(&mut alloc);
//! assert_eq!(memory.live_frames(), 0);
//! ```

mod memory;
mod mmu;

pub use memory::{FIRST_PFN, Memory};
pub use mmu::{Access, Mmu, MmuError, Violation, ViolationKind, Walk};

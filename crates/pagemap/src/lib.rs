//! The device-private address space, pagemaps, compact page metadata and a device-folio
//! allocator.
//!
//! Device-private memory (a GPU's VRAM, say) has no physical address the CPU could map.
//! Linux nevertheless gives it a window of physical address space and a 64-byte
//! `struct page` per 4 KiB page, initialised one by one when the driver registers its
//! memory. `devpriv-pagemap` does what the "device-private address space" series wants
//! instead, without its remaining costs:
//!
//! - a separate 40-bit index space ([`DevicePrivateSpace`]): an index's high 8 bits pick
//!   one of 256 slots, the low 32 bits a page in the slot's pagemap, so
//!   [`DevicePrivateSpace::lookup`] is a shift, one load and a compare;
//! - 16 bytes of metadata per page ([`PageMeta`], [`METADATA_BYTES_PER_PAGE`]), zero
//!   meaning free, so registering a pagemap of any size ([`DevicePagemap::new`],
//!   [`DevicePrivateSpace::register`]) touches no page's metadata;
//! - an allocator of 4 KiB and 2 MiB folios that keeps its state in that metadata, lazily,
//!   and splits and re-merges 2 MiB chunks in O(1), with per-CPU page caches
//!   ([`PageCache`]) so that CPUs do not contend on it;
//! - reference counts, folio locks and reverse maps with Linux's rules, owned by handles
//!   ([`FolioRef`], [`LockedFolio`]) so that a double put or a forgotten unlock does not
//!   compile.
//!
//! The design (index layout, metadata words, allocator, locking) is in
//! [`docs/pagemap.md`](https://github.com/devpriv/devpriv/blob/main/docs/pagemap.md) (also in the package).
//!
//! ```
//! use devpriv_pagemap::*;
//! use devpriv_pte::PageSize;
//!
//! struct Driver;
//! impl PagemapOps for Driver {
//!     fn folio_free(&self, _folio: Folio<'_>) {}
//! }
//!
//! let mut metadata: Vec<PageMeta> = (0..1024).map(|_| PageMeta::new()).collect();
//! let pagemap = DevicePagemap::new(1024, Owner::new(1), &Driver, &mut metadata).unwrap();
//! let space = DevicePrivateSpace::new();
//! let id = space.register(&pagemap).unwrap();
//!
//! let folio = pagemap.alloc(PageSize::Size2MiB).unwrap(); // one reference, owned
//! let tail = space.lookup(folio.index().checked_add(7).unwrap()).unwrap();
//! assert_eq!(tail.folio(), folio.folio());
//! let locked = folio.trylock().unwrap(); // the lock, and the same reference
//! assert!(space.unregister(id).is_err()); // a page is allocated
//! drop(locked); // unlocks, puts the last reference: the folio is free again
//! space.unregister(id).unwrap();
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod allocator;
pub mod cache;
pub mod error;
pub mod folio;
pub mod meta;
pub mod pagemap;
pub mod space;
mod stash;
#[cfg(all(feature = "alloc", not(loom)))]
pub mod storage;
mod sync;

pub use cache::{PAGE_CACHE_CAPACITY, PageCache};
/// The entry formats this crate is built on, re-exported so that users name the same
/// version of `devpriv-pte` that this crate uses.
pub use devpriv_pte as pte;
pub use error::{
    AllocError, FolioError, LookupError, RegisterError, ReverseMapError, UnregisterError,
};
pub use folio::{Folio, FolioRef, LockedFolio, Page, SplitError, SplitFolios, TryLockError};
#[cfg(not(loom))]
pub use meta::METADATA_BYTES_PER_PAGE;
pub use meta::{AddressSpaceId, DriverWord, PageMeta, ReverseMap};
#[cfg(not(loom))]
pub use pagemap::StaticMetadata;
pub use pagemap::{AllocFailures, AllocatedFolios, DevicePagemap, Owner, PagemapOps};
pub use space::{DevicePrivateSpace, MAX_PAGEMAP_PAGES, PagemapId, SLOT_PAGES, SLOTS};
#[cfg(all(feature = "alloc", not(loom)))]
pub use storage::MetadataStorage;

/// Pages in a 2 MiB folio.
pub const LARGE_FOLIO_PAGES: u64 = allocator::CHUNK_PAGES;

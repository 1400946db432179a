//! The migration state machine (Linux's `migrate_vma_setup` → `migrate_vma_pages` →
//! `migrate_vma_finalize`, and `migrate_device_range` for eviction), as a typestate:
//!
//! ```text
//!   setup / evict ──► Migration<Collected> ──pages()──► Migration<Committed> ──finalize()──► Summary
//!                         │ driver: set_*_destination, copy        │ driver: may still copy
//!                         └──────────── drop: every entry restored ┘
//! ```
//!
//! A migration works over caller-provided `src` and `dst` slices of [`MigratePfn`]
//! words, one per 4 KiB page, and nothing else: what it holds between steps — a
//! reference and the lock of each device folio it collected, the lock of each system
//! frame, each destination — is recorded in those words and in the migration entries
//! it wrote, so it needs no heap.
//!
//! See [`docs/migrate.md`](https://github.com/devpriv/devpriv/blob/main/docs/migrate.md) for the rules each step follows.

mod block;
mod collect;
mod commit;
mod evict;
mod finalize;
mod own;
mod split;

use core::fmt;
use core::marker::PhantomData;

use devpriv_pagemap::{LockedFolio, Owner};
use devpriv_paging::PagingError;
use devpriv_pte::{DeviceIndex, PageSize, Pfn};

use crate::address_space::AddressSpace;
use crate::devices::{DeviceMemory, FaultPage};
use crate::platform::{Platform, Vma};
use crate::registry::AddressSpaceLookup;
use crate::words::{MigratePfn, PageTarget, Select};

pub(crate) use block::{split_block, split_huge_page};
pub use evict::Evict;

/// A migration whose pages are collected: the driver now allocates destinations and
/// copies, then calls [`Migration::pages`].
#[derive(Debug)]
pub enum Collected {}

/// A migration past its commit point: [`Migration::finalize`] ends it.
#[derive(Debug)]
pub enum Committed {}

/// The steps a migration is at (sealed: [`Collected`] and [`Committed`]).
pub trait Stage: sealed::Sealed {}

impl Stage for Collected {}
impl Stage for Committed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Collected {}
    impl Sealed for super::Committed {}
}

/// What to migrate out of an address space (Linux's `struct migrate_vma`).
pub struct MigrateVma<'m, 'a, P: Platform> {
    /// The address space.
    pub address_space: &'m AddressSpace<'a, P>,
    /// First address (4 KiB aligned).
    pub start: u64,
    /// One past the last address (4 KiB aligned, above `start`); `[start, end)` must lie
    /// in one region of the memory map.
    pub end: u64,
    /// Which pages to collect.
    pub select: Select,
    /// The migrating device: device-private pages are collected only if their pagemap
    /// has this owner, and the notifiers see it (`pgmap_owner`).
    pub owner: Owner,
    /// The faulting page, when the migration runs for a CPU fault
    /// ([`CpuFault::page`](crate::CpuFault::page)): it is collected with the lock the
    /// fault path holds, and handed back locked at the end.
    pub fault: Option<&'m mut FaultPage<'a>>,
    /// One word per page, written by the collection.
    pub src: &'m mut [MigratePfn],
    /// One word per page, for the destinations.
    pub dst: &'m mut [MigratePfn],
}

/// Why a migration could not be set up; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The range is empty or wraps.
    EmptyRange,
    /// An address is not 4 KiB aligned.
    Unaligned {
        /// The address.
        value: u64,
    },
    /// The range does not lie in one region of the memory map.
    OutsideVma {
        /// The first address not covered.
        va: u64,
    },
    /// `src` or `dst` does not have one word per page.
    SliceLength {
        /// Pages in the range.
        pages: usize,
        /// Words in `src`.
        src: usize,
        /// Words in `dst`.
        dst: usize,
    },
    /// The fault page's address is outside the range.
    FaultOutsideRange {
        /// The fault address.
        address: u64,
    },
    /// The fault page is not locked by the fault path any more (already lent to another
    /// migration).
    FaultPageNotLocked,
    /// A fault page was given without [`Select::DEVICE_PRIVATE`].
    FaultPageNotSelected,
    /// The fault page belongs to a pagemap of another owner than the migration's.
    OwnerMismatch {
        /// The fault page's pagemap owner.
        page: Owner,
        /// The migration's owner.
        migration: Owner,
    },
    /// A device index range for eviction is not in one pagemap.
    UnknownIndex {
        /// The first index that is not.
        index: DeviceIndex,
    },
    /// The page table refused the range (outside what it translates).
    Paging(PagingError),
}

impl From<PagingError> for SetupError {
    fn from(e: PagingError) -> Self {
        Self::Paging(e)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyRange => f.write_str("the range is empty"),
            Self::Unaligned { value } => write!(f, "{value:#x} is not 4 KiB aligned"),
            Self::OutsideVma { va } => {
                write!(f, "{va:#x} is not in the region the range starts in")
            }
            Self::SliceLength { pages, src, dst } => write!(
                f,
                "{pages} pages need {pages} words, src has {src} and dst {dst}"
            ),
            Self::FaultOutsideRange { address } => {
                write!(f, "the fault address {address:#x} is outside the range")
            }
            Self::FaultPageNotLocked => f.write_str("the fault page is not locked"),
            Self::FaultPageNotSelected => {
                f.write_str("a fault page needs the device-private selection")
            }
            Self::OwnerMismatch { page, migration } => write!(
                f,
                "the fault page belongs to owner {:#x}, the migration to {:#x}",
                page.value(),
                migration.value()
            ),
            Self::UnknownIndex { index } => {
                write!(f, "{index} is not a page of a registered pagemap")
            }
            Self::Paging(e) => write!(f, "page table: {e}"),
        }
    }
}

impl core::error::Error for SetupError {}

/// Why a destination was refused; nothing was changed and the destination stays the
/// caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationError {
    /// The index is not below the number of pages.
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// Pages in the migration.
        pages: usize,
    },
    /// The page at the index is not being migrated (its source word has no MIGRATE
    /// and it is not part of a collected 2 MiB page).
    NotMigrating {
        /// The index.
        index: usize,
    },
    /// The device folio is mapped already: a destination must be a fresh folio
    /// (`alloc_locked`). devpriv-migrate keeps one mapping per device folio; this is
    /// where a second one would start.
    InUse,
    /// The device folio belongs to a pagemap the migration's device memory does not
    /// know.
    ForeignPagemap,
    /// The frame is not aligned to its size.
    UnalignedFrame {
        /// The frame.
        pfn: Pfn,
    },
    /// Destinations are 4 KiB or 2 MiB.
    UnsupportedSize(PageSize),
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, pages } => {
                write!(f, "page {index} of a {pages}-page migration")
            }
            Self::NotMigrating { index } => write!(f, "page {index} is not being migrated"),
            Self::InUse => f.write_str("the device folio is mapped already"),
            Self::ForeignPagemap => {
                f.write_str("the device folio's pagemap is not in this device memory")
            }
            Self::UnalignedFrame { pfn } => write!(f, "{pfn} is not aligned to its size"),
            Self::UnsupportedSize(size) => write!(f, "no destinations of {} bytes", size.bytes()),
        }
    }
}

impl core::error::Error for DestinationError {}

/// What a finished migration did, page by page (4 KiB pages; a 2 MiB page counts 512).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pages now mapped from their destination.
    pub migrated: u64,
    /// Holes populated with their destination.
    pub populated: u64,
    /// Collected pages mapped from their source again (declined, or failed).
    pub restored: u64,
    /// Collected pages whose entry had been removed or replaced meanwhile (an unmap):
    /// source and destination released.
    pub abandoned: u64,
}

/// Where the pages of a migration live.
pub(crate) enum Scope<'m, 'a, P: Platform> {
    /// One range of one address space.
    Range {
        space: &'m AddressSpace<'a, P>,
        start: u64,
        vma: Vma,
    },
    /// Device pages, wherever their reverse maps say they are mapped (eviction).
    Device {
        spaces: &'m dyn AddressSpaceLookup<'a, P>,
        indices: Evict<'m>,
    },
}

/// The state every stage shares.
pub(crate) struct Inner<'m, 'a, P: Platform> {
    pub(crate) scope: Scope<'m, 'a, P>,
    pub(crate) devices: &'a DeviceMemory<'a, P>,
    pub(crate) system: &'a P::System,
    pub(crate) owner: Option<Owner>,
    pub(crate) src: &'m mut [MigratePfn],
    pub(crate) dst: &'m mut [MigratePfn],
    pub(crate) fault: Option<&'m mut FaultPage<'a>>,
    /// Holes populated by `pages` (so that dropping undoes them).
    pub(crate) committed: bool,
    /// A destination was set inside a 2 MiB source, past its first word: the end
    /// must look at the 511 words after each 2 MiB source, not just skip them.
    pub(crate) inner_destinations: bool,
    pub(crate) finished: bool,
}

/// A migration at stage `S` (see the module documentation).
///
/// Steps out of order do not compile; dropping a migration before
/// [`finalize`](Migration::finalize) restores every entry it changed and releases every
/// page it holds.
///
/// ```compile_fail
/// # fn f<P: devpriv_migrate::Platform>(m: devpriv_migrate::Migration<'_, '_, P>) {
/// m.finalize(); // a collected migration must commit (`pages`) first
/// # }
/// ```
///
/// ```compile_fail
/// # fn f<P: devpriv_migrate::Platform>(m: devpriv_migrate::Migration<'_, '_, P, devpriv_migrate::Committed>) {
/// let _ = m.pages(); // committed once: no second commit
/// # }
/// ```
///
/// ```compile_fail
/// # fn f<P: devpriv_migrate::Platform>(m: devpriv_migrate::Migration<'_, '_, P, devpriv_migrate::Committed>, pfn: devpriv_pte::Pfn) {
/// let mut m = m;
/// // destinations are set before the commit point
/// m.set_system_destination(0, pfn, devpriv_pte::PageSize::Size4KiB);
/// # }
/// ```
///
/// ```
/// # fn f<P: devpriv_migrate::Platform>(m: devpriv_migrate::Migration<'_, '_, P>) {
/// let summary = m.pages().finalize(); // the order that compiles
/// # let _ = summary;
/// # }
/// ```
pub struct Migration<'m, 'a, P: Platform, S: Stage = Collected> {
    inner: Inner<'m, 'a, P>,
    stage: PhantomData<S>,
}

impl<'m, 'a, P: Platform> Migration<'m, 'a, P, Collected> {
    /// Collects the pages of `args.start..args.end` that can move (Linux's
    /// `migrate_vma_setup`), under the address space's shared lock and one notifier
    /// invalidation (event [`Migrate`](crate::InvalidateEvent::Migrate), the migration's
    /// owner):
    ///
    /// * empty slots and the zero page of anonymous regions become holes (MIGRATE
    ///   without VALID; with [`Select::COMPOUND`], an aligned empty 2 MiB is one
    ///   COMPOUND hole and 511 zero words);
    /// * present system pages ([`Select::SYSTEM`]) and device-private pages of the
    ///   owner's pagemaps ([`Select::DEVICE_PRIVATE`]) are locked (try-lock: a busy
    ///   page is skipped) and their entry replaced by a migration entry that remembers
    ///   the access, young and dirty bits and the side bits; with
    ///   [`Select::COMPOUND`] an aligned 2 MiB page in the range is taken whole,
    ///   otherwise it is split (entry, and folio or frame) and taken page by page;
    /// * everything else (other owners, swap, markers, poison, pages whose attributes
    ///   are not the region's, pinned pages) gets word 0;
    /// * one TLB flush covers what was present, then pinned pages are put back.
    ///
    /// Bad arguments are a [`SetupError`] with nothing changed; collecting nothing is
    /// not an error.
    pub fn setup(args: MigrateVma<'m, 'a, P>) -> Result<Self, SetupError> {
        let MigrateVma {
            address_space: space,
            start,
            end,
            select,
            owner,
            fault,
            src,
            dst,
        } = args;
        for value in [start, end] {
            if value & 0xfff != 0 {
                return Err(SetupError::Unaligned { value });
            }
        }
        if start >= end {
            return Err(SetupError::EmptyRange);
        }
        let pages = ((end - start) >> 12) as usize;
        if src.len() != pages || dst.len() != pages {
            return Err(SetupError::SliceLength {
                pages,
                src: src.len(),
                dst: dst.len(),
            });
        }
        let vma = space
            .vma(start)
            .ok_or(SetupError::OutsideVma { va: start })?;
        if !vma.covers(start, end) {
            return Err(SetupError::OutsideVma { va: vma.end });
        }
        if let Some(fault) = &fault {
            if !(start..end).contains(&fault.address()) {
                return Err(SetupError::FaultOutsideRange {
                    address: fault.address(),
                });
            }
            let Some(folio) = &fault.folio else {
                return Err(SetupError::FaultPageNotLocked);
            };
            if !select.contains(Select::DEVICE_PRIVATE) {
                return Err(SetupError::FaultPageNotSelected);
            }
            let page = folio.pagemap().owner();
            if page != owner {
                return Err(SetupError::OwnerMismatch {
                    page,
                    migration: owner,
                });
            }
        }
        src.fill(MigratePfn::EMPTY);
        dst.fill(MigratePfn::EMPTY);
        let mut inner = Inner {
            scope: Scope::Range { space, start, vma },
            devices: space.devices(),
            system: space.system(),
            owner: Some(owner),
            src,
            dst,
            fault,
            committed: false,
            inner_destinations: false,
            finished: false,
        };
        inner.collect_range(start, end, select)?;
        Ok(Self {
            inner,
            stage: PhantomData,
        })
    }

    /// Collects device pages for eviction, wherever they are mapped (Linux's
    /// `migrate_device_range` / `migrate_device_pfns`): each allocated folio among
    /// `indices` is referenced and try-locked (free pages and busy pages get word 0;
    /// evict again until the pagemap is empty), found through its reverse map and the
    /// address spaces of `spaces`, and its entry replaced by a migration entry under
    /// that address space's shared lock and a notifier invalidation. A 2 MiB folio is
    /// taken whole (COMPOUND) when its 512 indices follow each other in `indices`,
    /// otherwise split first. Folios that no entry maps are skipped: someone else holds
    /// them.
    pub fn evict(
        devices: &'a DeviceMemory<'a, P>,
        spaces: &'m dyn AddressSpaceLookup<'a, P>,
        system: &'a P::System,
        indices: Evict<'m>,
        src: &'m mut [MigratePfn],
        dst: &'m mut [MigratePfn],
    ) -> Result<Self, SetupError> {
        let pages = indices.len();
        if pages == 0 {
            return Err(SetupError::EmptyRange);
        }
        if src.len() != pages || dst.len() != pages {
            return Err(SetupError::SliceLength {
                pages,
                src: src.len(),
                dst: dst.len(),
            });
        }
        if let Evict::Range { first, pages } = indices {
            // Both ends in one pagemap: the range is that pagemap's (pagemaps are
            // contiguous in the device-private space).
            let last = DeviceIndex::new(first.number() + pages as u64 - 1);
            let pagemap_of = |index| {
                devices
                    .lookup(index)
                    .map(|page| page.pagemap().id())
                    .map_err(|_| SetupError::UnknownIndex { index })
            };
            if pagemap_of(first)? != pagemap_of(last)? {
                return Err(SetupError::UnknownIndex { index: last });
            }
        }
        src.fill(MigratePfn::EMPTY);
        dst.fill(MigratePfn::EMPTY);
        let mut inner = Inner {
            scope: Scope::Device { spaces, indices },
            devices,
            system,
            owner: None,
            src,
            dst,
            fault: None,
            committed: false,
            inner_destinations: false,
            finished: false,
        };
        inner.collect_devices();
        Ok(Self {
            inner,
            stage: PhantomData,
        })
    }

    /// Gives page `index` the device folio `folio` as its destination (fresh from
    /// [`alloc_locked`](devpriv_pagemap::DevicePagemap::alloc_locked): locked and
    /// mapped nowhere), replacing any destination set before. The migration owns
    /// it from now on. A 2 MiB folio goes at the first page of a collected 2 MiB page
    /// (or a 4 KiB page, whose migration then fails, as in Linux); 4 KiB folios may go
    /// at each of the 512 pages of a collected 2 MiB page, which splits it.
    pub fn set_device_destination(
        &mut self,
        index: usize,
        folio: LockedFolio<'a>,
    ) -> Result<(), (LockedFolio<'a>, DestinationError)> {
        self.inner.set_device_destination(index, folio)
    }

    /// Gives page `index` the system frame `pfn` of `size` as its destination (from
    /// [`SystemMemory::allocate`](crate::SystemMemory::allocate)), replacing any set
    /// before; the migration owns it from now on (and frees it if it is not used).
    pub fn set_system_destination(
        &mut self,
        index: usize,
        pfn: Pfn,
        size: PageSize,
    ) -> Result<(), DestinationError> {
        self.inner.set_system_destination(index, pfn, size)
    }

    /// Declines page `index` (dst 0), releasing any destination set for it.
    pub fn decline(&mut self, index: usize) {
        if index < self.inner.dst.len() {
            self.inner.release_destination(index);
        }
    }

    /// Commits (Linux's `migrate_vma_pages`): pages without a destination stop
    /// migrating; holes get their destination installed, if their slot is still empty
    /// or the zero page (under a second notifier invalidation); a 2 MiB source with
    /// 4 KiB destinations is split in the middle of the migration (its entry, and its
    /// folio or frame), filling the 511 source words after it; a 2 MiB destination for
    /// a 4 KiB source fails that page.
    ///
    /// Copies must be complete before this call: a hole's destination becomes visible
    /// to CPUs here (as in Linux, where drivers copy between `migrate_vma_setup` and
    /// `migrate_vma_pages`). The other pages' entries change only in
    /// [`finalize`](Migration::finalize).
    pub fn pages(mut self) -> Migration<'m, 'a, P, Committed> {
        self.inner.commit();
        self.inner.committed = true;
        self.into_stage()
    }
}

impl<'m, 'a, P: Platform> Migration<'m, 'a, P, Committed> {
    /// Ends the migration (Linux's `migrate_vma_finalize`): every migration entry
    /// becomes the destination's entry, or the source's again where the page did not
    /// move; both pages are unlocked and released; a page whose entry was removed
    /// meanwhile is abandoned (both released). The fault page stays locked, back in its
    /// [`FaultPage`].
    pub fn finalize(mut self) -> Summary {
        let summary = self.inner.finalize();
        self.inner.finished = true;
        summary
    }
}

impl<'m, 'a, P: Platform, S: Stage> Migration<'m, 'a, P, S> {
    fn into_stage<T: Stage>(self) -> Migration<'m, 'a, P, T> {
        let Migration { inner, .. } = self;
        Migration {
            inner,
            stage: PhantomData,
        }
    }

    /// The source words.
    pub fn src(&self) -> &[MigratePfn] {
        self.inner.src
    }

    /// The destination words.
    pub fn dst(&self) -> &[MigratePfn] {
        self.inner.dst
    }

    /// Pages still migrating (MIGRATE set), counting a 2 MiB page as 512 (Linux's
    /// `cpages`).
    pub fn migrating(&self) -> u64 {
        self.inner
            .src
            .iter()
            .filter(|w| w.is_migrating())
            .map(|w| w.size().frames())
            .sum()
    }

    /// The virtual address page `index` is at, in a range migration.
    pub fn address(&self, index: usize) -> Option<u64> {
        match &self.inner.scope {
            Scope::Range { start, .. } => Some(start + ((index as u64) << 12)),
            Scope::Device { .. } => None,
        }
    }

    /// The device index page `index` stands for, in an eviction.
    pub fn device_index(&self, index: usize) -> Option<DeviceIndex> {
        match &self.inner.scope {
            Scope::Device { indices, .. } => indices.get(index),
            Scope::Range { .. } => None,
        }
    }

    /// The page each collected source word names, with its index and size: what the
    /// driver copies from.
    pub fn sources(&self) -> impl Iterator<Item = (usize, PageTarget, PageSize)> + '_ {
        self.inner
            .src
            .iter()
            .enumerate()
            .filter(|(_, w)| w.is_migrating())
            .filter_map(|(i, w)| Some((i, w.target()?, w.size())))
    }
}

impl<P: Platform> Drop for Inner<'_, '_, P> {
    fn drop(&mut self) {
        if !self.finished {
            self.abort();
            self.finished = true;
        }
    }
}

impl<P: Platform, S: Stage> fmt::Debug for Migration<'_, '_, P, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("pages", &self.inner.src.len())
            .field("migrating", &self.migrating())
            .field("committed", &self.inner.committed)
            .finish_non_exhaustive()
    }
}

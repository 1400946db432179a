//! The live page table, read and changed through devpriv-pte.
//!
//! [`LiveTables`] starts from the root the MMU uses (CR3, TTBR0_EL1) and reaches table
//! memory through a fixed offset from physical addresses (0 for the identity-mapped
//! kernels). A [`walk`](LiveTables::walk) decodes the entry at every level with the
//! format's level-aware decoder and stops at the first entry that is not a table: a leaf
//! (page or block), a software entry, or an absent slot. Changes are compare-exchanges
//! on the entry, so they are safe against the MMU setting accessed/dirty bits at the
//! same time. New entries (and the tables above them) are installed by devpriv-paging's
//! [`PageTable::install`] on the same tables ([`LiveTables::paging`]).

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use devpriv_paging::{OffsetMapper, PageTable, PagingError, PagingFormat};
use devpriv_pte::{DecodeError, EncodeError, Entry, Level, PageSize, Pfn};

use crate::frames::{FrameSource, TableFrames};

/// Entries per table (4 KiB granule).
const ENTRIES: usize = 512;

/// Why a table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// An entry on the way could not be decoded.
    Decode {
        /// The level of the entry.
        level: Level,
        /// The raw entry.
        raw: u64,
        /// Why.
        error: DecodeError,
    },
    /// The entry could not be encoded.
    Encode(EncodeError),
    /// devpriv-paging refused to install an entry (the slot or a covering entry is
    /// occupied, no frame for a new table, bad alignment, ...).
    Paging(PagingError),
    /// The address or size is not aligned to the entry's size.
    Unaligned,
    /// The entry changed between the read and the compare-exchange (a lost race).
    Raced {
        /// The value found instead of the expected one.
        found: u64,
    },
}

impl From<PagingError> for TableError {
    fn from(e: PagingError) -> Self {
        Self::Paging(e)
    }
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

/// Where a walk stopped: the first entry on the path that is not a table.
#[derive(Debug)]
pub struct Walk<'t, F: PagingFormat> {
    /// The level of the entry.
    pub level: Level,
    /// The entry itself, for compare-exchange.
    pub slot: &'t AtomicU64,
    /// The raw value read.
    pub raw: u64,
    /// The decoded value.
    pub entry: Entry<F>,
}

/// A page table of format `F` reached from its root frame.
///
/// The same tables are also available as a devpriv-paging [`PageTable`]
/// ([`paging`](Self::paging)), which the fault handler uses for its cursor and
/// compare-exchange replacement.
#[derive(Debug)]
pub struct LiveTables<F: PagingFormat> {
    root: Pfn,
    root_level: Level,
    phys_offset: u64,
    paging: PageTable<F, OffsetMapper>,
    format: PhantomData<F>,
}

impl<F: PagingFormat> LiveTables<F> {
    /// The table whose root (a table at `root_level`) is the frame `root`.
    ///
    /// # Safety
    /// `root` and every table frame reachable from it, or added later through `frames`,
    /// must be memory of format-`F` tables readable and writable at physical address +
    /// `phys_offset` for as long as this value is used, and only changed atomically by
    /// anyone else (the MMU, other `LiveTables`). Nothing may free those tables while
    /// this value lives.
    ///
    /// # Panics
    /// If the format cannot start a walk at `root_level`.
    pub unsafe fn new(root: Pfn, root_level: Level, phys_offset: u64) -> Self {
        // SAFETY: this function's contract is devpriv-paging's `OffsetMapper::new` and
        // `PageTable::from_root` contract: every table frame is reached at
        // `phys_offset`, only changed atomically, and never freed under the table.
        let paging = unsafe {
            PageTable::from_root(root, root_level, OffsetMapper::new(phys_offset))
                .expect("the format starts walks at this level")
        };
        Self {
            root,
            root_level,
            phys_offset,
            paging,
            format: PhantomData,
        }
    }

    /// The same tables as a devpriv-paging [`PageTable`].
    pub const fn paging(&self) -> &PageTable<F, OffsetMapper> {
        &self.paging
    }

    /// The root frame.
    pub const fn root(&self) -> Pfn {
        self.root
    }

    /// The root's level.
    pub const fn root_level(&self) -> Level {
        self.root_level
    }

    /// The virtual address through which physical address `pa` is reached.
    pub const fn phys_to_virt(&self, pa: u64) -> u64 {
        pa.wrapping_add(self.phys_offset)
    }

    fn table(&self, pfn: Pfn) -> &[AtomicU64; ENTRIES] {
        let ptr = self.phys_to_virt(pfn.phys_addr()) as *const [AtomicU64; ENTRIES];
        // SAFETY: `new`'s contract: every table frame is mapped at this address, lives as
        // long as `self`, and is only changed atomically.
        unsafe { &*ptr }
    }

    /// Walks the table for `va`, decoding each level, and returns the first entry that
    /// is not a table.
    pub fn walk(&self, va: u64) -> Result<Walk<'_, F>, TableError> {
        let mut table = self.table(self.root);
        let mut level = self.root_level;
        loop {
            let slot = &table[level.table_index(va)];
            let raw = slot.load(Ordering::Acquire);
            let entry =
                F::decode(raw, level).map_err(|error| TableError::Decode { level, raw, error })?;
            match (entry, level.next_lower()) {
                (Entry::Table { next, .. }, Some(lower)) => {
                    table = self.table(next);
                    level = lower;
                }
                _ => {
                    return Ok(Walk {
                        level,
                        slot,
                        raw,
                        entry,
                    });
                }
            }
        }
    }

    /// Installs `entry` for `va` at `level` (any kind but a table: leaf, software,
    /// absent) into the empty slot there, creating the tables above it from `frames`
    /// (devpriv-paging's [`PageTable::install`]). An occupied or covered slot, a lost
    /// race or a bad argument is [`TableError::Paging`] and changes nothing in the slot.
    /// The returned token says what to flush.
    pub fn install(
        &self,
        va: u64,
        level: Level,
        entry: &Entry<F>,
        frames: &mut dyn FrameSource,
    ) -> Result<devpriv_paging::Flush, TableError> {
        Ok(self
            .paging
            .install(va, level, entry, &mut TableFrames(frames))?)
    }

    /// Replaces the entry a walk found with `entry`, if it still holds the value the
    /// walk read. The caller flushes the TLB.
    pub fn replace(&self, walk: &Walk<'_, F>, entry: &Entry<F>) -> Result<u64, TableError> {
        let new = F::encode(entry, walk.level).map_err(TableError::Encode)?;
        walk.slot
            .compare_exchange(walk.raw, new, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|found| TableError::Raced { found })?;
        Ok(new)
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with `attrs`, using 2 MiB blocks where
    /// both addresses are 2 MiB aligned and 4 KiB pages elsewhere. Returns the number of
    /// (4 KiB, 2 MiB) entries written. The caller flushes the TLB (or has the MMU off).
    pub fn map_range(
        &self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: F::LeafAttributes,
        frames: &mut dyn FrameSource,
    ) -> Result<(u64, u64), TableError> {
        const SMALL: u64 = PageSize::Size4KiB.bytes();
        const BLOCK: u64 = PageSize::Size2MiB.bytes();
        if (va | pa | len) & (SMALL - 1) != 0 {
            return Err(TableError::Unaligned);
        }
        let (mut pages, mut blocks) = (0, 0);
        let mut offset = 0;
        while offset < len {
            let (v, p) = (va + offset, pa + offset);
            let size = if (v | p) & (BLOCK - 1) == 0 && len - offset >= BLOCK {
                blocks += 1;
                PageSize::Size2MiB
            } else {
                pages += 1;
                PageSize::Size4KiB
            };
            let leaf = Entry::Leaf {
                pfn: Pfn::containing(p),
                size,
                attrs,
            };
            self.install(v, size.level(), &leaf, frames)?.ignore();
            offset += size.bytes();
        }
        Ok((pages, blocks))
    }
}

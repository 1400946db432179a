//! Splitting a 2 MiB page in the middle of a migration: the table entry (one level-2
//! migration entry becomes 512 level-1 ones) and the folio or frame behind it.

use devpriv_pagemap::{FolioError, LockedFolio, SplitError, SplitFolios};
use devpriv_paging::{FrameAllocator, OutOfFrames, PageTable, PagingError};
use devpriv_pte::Pfn;

use crate::address_space::AddressSpace;
use crate::platform::Platform;
use crate::sync::spin_wait;

/// How often a split waits for a transient reference (another CPU's `try_get` that
/// is about to fail its try-lock and put the reference back) before giving up.
#[cfg(not(loom))]
pub(crate) const BUSY_RETRIES: u32 = 256;
/// Under loom every wait is a yield that multiplies the interleavings: a few suffice to
/// explore both outcomes.
#[cfg(loom)]
pub(crate) const BUSY_RETRIES: u32 = 2;

/// One table frame taken out in advance, so that the table split cannot fail after the
/// folio is split; what it does not use goes back to the address space.
struct Reserved<'f, A: FrameAllocator> {
    frame: Option<Pfn>,
    frames: &'f mut A,
}

impl<A: FrameAllocator> FrameAllocator for Reserved<'_, A> {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.frame.take().ok_or(OutOfFrames)
    }

    fn free(&mut self, frame: Pfn) {
        if self.frame.is_none() {
            self.frame = Some(frame);
        } else {
            self.frames.free(frame);
        }
    }
}

impl<A: FrameAllocator> Drop for Reserved<'_, A> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.frames.free(frame);
        }
    }
}

/// Splits a locked 2 MiB device folio, waiting out transient references.
pub(crate) fn split_folio(mut folio: LockedFolio<'_>) -> Result<SplitFolios<'_>, LockedFolio<'_>> {
    for _ in 0..BUSY_RETRIES {
        match folio.split() {
            Ok(parts) => return Ok(parts),
            Err(SplitError {
                folio: back,
                error: FolioError::SplitBusy { .. },
            }) => {
                folio = back;
                spin_wait();
            }
            Err(SplitError { folio, .. }) => return Err(folio),
        }
    }
    Err(folio)
}

/// The level-2 entry at `va` is a migration entry for the locked 2 MiB device folio
/// `folio`, of which the caller holds the only reference: splits the folio, then the
/// entry into 512 level-1 migration entries for its 512 pages, which come back locked
/// with one reference each, in page order. On failure (a table frame short, a
/// reference that does not go away) nothing changed and the folio comes back.
pub(crate) fn split_device<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    folio: LockedFolio<'a>,
) -> Result<SplitFolios<'a>, LockedFolio<'a>> {
    let mut frames = space.table_frames();
    let Ok(frame) = frames.allocate() else {
        return Err(folio);
    };
    let mut reserved = Reserved {
        frame: Some(frame),
        frames: &mut frames,
    };
    let parts = split_folio(folio)?;
    split_entry(space, table, va, &mut reserved);
    Ok(parts)
}

/// Splits the level-2 migration entry at `va` (a software entry: nothing to flush) with
/// a frame taken in advance.
fn split_entry<P: Platform>(
    space: &AddressSpace<'_, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    frames: &mut impl FrameAllocator,
) {
    // The entry is the caller's migration entry: no one else writes it under the shared
    // lock, and it encodes, so with a frame in hand the split cannot fail.
    let result: Result<_, PagingError> = table.split(va, frames, space.tlb());
    result
        .expect("splitting a held 2 MiB migration entry with a reserved frame")
        .flush(space.tlb());
}

/// The level-2 entry at `va` is a migration entry for the 2 MiB system frame `pfn`,
/// which the caller has locked: splits the entry, then the frame (512 locked frames).
/// `false` if no table frame was to be had; nothing changed then.
pub(crate) fn split_system<P: Platform>(
    space: &AddressSpace<'_, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    pfn: Pfn,
) -> bool {
    use crate::platform::SystemMemory;
    let mut frames = space.table_frames();
    let Ok(frame) = frames.allocate() else {
        return false;
    };
    let mut reserved = Reserved {
        frame: Some(frame),
        frames: &mut frames,
    };
    split_entry(space, table, va, &mut reserved);
    space.system().split(pfn);
    true
}

//! Physical frames for page tables and for pages the fault handler maps.

use devpriv_paging::{FrameAllocator, OutOfFrames};
use devpriv_pte::{PageSize, Pfn};

/// A source of physical frames for page tables and for pages the fault handler maps.
///
/// The kernels' bump allocator implements it; later a pagemap-backed allocator will.
///
/// # Safety
/// Every frame returned must be RAM that nothing else uses, reachable at its physical
/// address plus the offset the tables are built with, and never returned twice.
pub unsafe trait FrameSource {
    /// A naturally aligned run of frames of `size` (one 4 KiB frame or a 2 MiB block),
    /// or `None` when out of memory. The contents are unspecified.
    fn allocate(&mut self, size: PageSize) -> Option<Pfn>;
}

/// A bump allocator over one physical range: frames are handed out in address order,
/// aligned to their size, and never freed. Enough for a demo kernel.
#[derive(Debug)]
pub struct BumpFrames {
    next: u64,
    end: u64,
    allocated: u64,
}

impl BumpFrames {
    /// An allocator over the physical bytes `[start, end)`.
    ///
    /// # Safety
    /// The range must be RAM that nothing else uses, reachable at its physical address
    /// plus the offset the page tables are built with.
    pub const unsafe fn new(start: u64, end: u64) -> Self {
        Self {
            next: start,
            end,
            allocated: 0,
        }
    }

    /// Bytes handed out so far (not counting alignment gaps).
    pub const fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    /// Bytes left at the top of the range.
    pub const fn remaining_bytes(&self) -> u64 {
        self.end.saturating_sub(self.next)
    }
}

// SAFETY: the range is RAM given to the allocator alone (`new`'s contract) and the bump
// pointer only moves up, so no frame is returned twice.
unsafe impl FrameSource for BumpFrames {
    fn allocate(&mut self, size: PageSize) -> Option<Pfn> {
        let bytes = size.bytes();
        let start = self.next.checked_add(bytes - 1)? & !(bytes - 1);
        let end = start.checked_add(bytes)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        self.allocated += bytes;
        Pfn::from_phys_addr(start)
    }
}

/// Page-table frames for devpriv-paging's [`devpriv_paging::PageTable`]: the kernels
/// build their tables with it from the same pool. A bump allocator cannot reuse memory,
/// so a freed table frame is simply abandoned.
impl FrameAllocator for BumpFrames {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        FrameSource::allocate(self, PageSize::Size4KiB).ok_or(OutOfFrames)
    }

    fn free(&mut self, _frame: Pfn) {}
}

/// Page-table frames taken from any [`FrameSource`], for devpriv-paging operations that
/// create tables ([`devpriv_paging::PageTable::install`]). A `FrameSource` cannot take
/// frames back, so a table frame the page table gives back is abandoned, as with
/// [`BumpFrames`].
pub struct TableFrames<'a, A: FrameSource + ?Sized>(pub &'a mut A);

impl<A: FrameSource + ?Sized> FrameAllocator for TableFrames<'_, A> {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.0.allocate(PageSize::Size4KiB).ok_or(OutOfFrames)
    }

    fn free(&mut self, _frame: Pfn) {}
}

//! How the page table reaches table memory: the [`PhysMapper`] trait.

use core::ptr::NonNull;

use devpriv_pte::Pfn;

use crate::sync::AtomicU64;

/// The 512 entries of one 4 KiB table frame.
pub type TableEntries = [AtomicU64; 512];

/// Turns a table frame into a pointer the kernel can dereference.
///
/// # Safety
///
/// For every frame that a [`FrameAllocator`](crate::FrameAllocator) handed to the page
/// table (or that is the root given to [`PageTable::from_root`](crate::PageTable::from_root)),
/// and for as long as the frame is in use as a table, [`table`](Self::table) must return
/// a pointer, aligned to 8 bytes, that is valid for reads and writes of the whole
/// [`TableEntries`] array and that aliases no Rust reference other than the page table's
/// own shared references to those atomics. Different frames must give non-overlapping
/// arrays.
pub unsafe trait PhysMapper {
    /// The entries of the table in `frame`.
    fn table(&self, frame: Pfn) -> NonNull<TableEntries>;
}

/// Reaches physical memory at a constant virtual offset: the direct map (`offset` = the
/// start of the kernel's linear map) or an identity map (`offset` = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetMapper {
    offset: u64,
}

impl OffsetMapper {
    /// A mapper that finds physical address `pa` at virtual address `pa + offset`
    /// (wrapping).
    ///
    /// # Safety
    ///
    /// Every table frame the page table will use must be mapped, readable and writable at
    /// `phys_addr + offset` for as long as the mapper is used, and must not otherwise be
    /// referenced by Rust code (see [`PhysMapper`]).
    pub const unsafe fn new(offset: u64) -> Self {
        Self { offset }
    }

    /// An identity mapper (`offset` 0).
    ///
    /// # Safety
    ///
    /// As for [`new`](Self::new): table frames must be identity-mapped.
    pub const unsafe fn identity() -> Self {
        Self { offset: 0 }
    }

    /// The offset.
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

// SAFETY: `new` and `identity` made the caller promise that every table frame is mapped
// at `phys + offset`; a 4 KiB-aligned physical address plus the offset is 8-byte aligned
// whenever the offset is, and distinct frames give distinct 4 KiB windows.
unsafe impl PhysMapper for OffsetMapper {
    #[inline]
    fn table(&self, frame: Pfn) -> NonNull<TableEntries> {
        let addr = frame.phys_addr().wrapping_add(self.offset) as usize;
        NonNull::new(core::ptr::with_exposed_provenance_mut::<TableEntries>(addr))
            .expect("table frame mapped at address zero")
    }
}

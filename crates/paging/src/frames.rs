//! Where table frames come from: the caller's [`FrameAllocator`].

use devpriv_pte::Pfn;

/// The frame allocator ran out of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfFrames;

impl core::fmt::Display for OutOfFrames {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("out of page-table frames")
    }
}

impl core::error::Error for OutOfFrames {}

/// A source of 4 KiB frames for page tables.
///
/// The page table zeroes every frame it gets before use (through its
/// [`PhysMapper`](crate::PhysMapper)), so the allocator may return dirty frames. Every
/// frame the page table no longer needs is given back with [`free`](Self::free), after
/// any TLB invalidation that makes it unreachable by hardware walkers.
pub trait FrameAllocator {
    /// Allocates one 4 KiB frame, or fails with [`OutOfFrames`].
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames>;

    /// Gives back `frame`, which [`allocate`](Self::allocate) returned earlier.
    fn free(&mut self, frame: Pfn);
}

impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        (**self).allocate()
    }

    fn free(&mut self, frame: Pfn) {
        (**self).free(frame)
    }
}

//! What the kernel supplies: its page-table types, its system memory and its memory map.

use core::ptr::NonNull;

use devpriv_paging::{FrameAllocator, PagingFormat, PhysMapper, TlbInvalidate};
use devpriv_pte::{LeafAttributes, PageProperty, PageSize, Pfn};

/// The types a kernel's memory management is built from, in one place so that the
/// address space, the migration and the drivers name one parameter instead of five.
///
/// ```
/// # use devpriv_migrate::Platform;
/// # use devpriv_paging::{NoInvalidate, OffsetMapper, FrameAllocator, OutOfFrames};
/// # use devpriv_pte::{arch::x86_64::X86_64, PageSize, Pfn};
/// # use core::ptr::NonNull;
/// # struct MyFrames; impl FrameAllocator for MyFrames {
/// #   fn allocate(&mut self) -> Result<Pfn, OutOfFrames> { Err(OutOfFrames) }
/// #   fn free(&mut self, _: Pfn) {} }
/// # struct MyRam; impl devpriv_migrate::SystemMemory for MyRam {
/// #   fn allocate(&self, _: PageSize) -> Option<Pfn> { None }
/// #   fn free(&self, _: Pfn, _: PageSize) {}
/// #   fn frame(&self, _: Pfn) -> Option<NonNull<u8>> { None } }
/// struct MyKernel;
/// impl Platform for MyKernel {
///     type Format = X86_64;
///     type Mapper = OffsetMapper;      // tables reached through the direct map
///     type Tlb = NoInvalidate;         // X86_64Tlb plus a shootdown in a real kernel
///     type TableFrames = MyFrames;     // where page-table frames come from
///     type System = MyRam;             // where user pages come from
/// }
/// ```
pub trait Platform {
    /// The page-table entry format.
    type Format: PagingFormat;
    /// How table frames are reached.
    type Mapper: PhysMapper;
    /// How translations are invalidated (on every CPU that may use the address space).
    type Tlb: TlbInvalidate;
    /// Where the page table's own frames come from.
    type TableFrames: FrameAllocator;
    /// Where the pages the CPU maps come from.
    type System: SystemMemory;
}

/// The kernel's system memory, as migration needs it: frames to migrate into, a lock
/// per frame, and whether a frame can move at all. devpriv never copies page contents;
/// a driver reaches the bytes through [`frame`](Self::frame) to copy them.
///
/// A 2 MiB frame is named by its first 4 KiB frame, and its lock is that frame's lock.
pub trait SystemMemory {
    /// A free frame of `size` (4 KiB or 2 MiB), aligned to it, or `None`. Its contents
    /// are undefined: the migration's driver copies into it, or clears it for a hole.
    fn allocate(&self, size: PageSize) -> Option<Pfn>;

    /// Gives back a frame of `size` that nothing maps any more: the source of a
    /// completed migration, a destination that was not used, or a page unmapped with
    /// the address space's `unmap` (when the kernel lets devpriv release its pages).
    fn free(&self, pfn: Pfn, size: PageSize);

    /// The 2 MiB frame at `pfn`, which the caller has locked, is from now on 512 4 KiB
    /// frames, each locked, each freed on its own (Linux's `split_folio`). Called when a
    /// migration splits a 2 MiB mapping. Default: nothing (an allocator that can free a
    /// 4 KiB piece of a 2 MiB frame, and locks that are per 4 KiB frame anyway, needs
    /// no more).
    fn split(&self, pfn: Pfn) {
        let _ = pfn;
    }

    /// Tries to lock the frame (the 2 MiB frame, if `pfn` starts one that is still
    /// whole): `false` if someone else holds the lock. A migration holds it from
    /// collection to the end, a device-exclusive hand-over until the driver drops it.
    /// devpriv locks only frames that an entry it has just claimed (replaced by
    /// compare-exchange) maps, so the frame is allocated and stays so while locked.
    /// Default: always succeeds (a kernel without page locks relies on the migration
    /// entry alone).
    fn try_lock(&self, pfn: Pfn) -> bool {
        let _ = pfn;
        true
    }

    /// Unlocks a frame the caller locked. Default: nothing.
    fn unlock(&self, pfn: Pfn) {
        let _ = pfn;
    }

    /// Whether the frame cannot move now: pinned for DMA, referenced from elsewhere,
    /// mapped by more than the one entry the migration replaced. Checked after the
    /// entry was replaced by a migration entry (Linux's `migrate_vma_check_page`); a
    /// pinned page is restored and skipped. Default: never.
    fn is_pinned(&self, pfn: Pfn, size: PageSize) -> bool {
        let _ = (pfn, size);
        false
    }

    /// The shared zero page, if the kernel maps untouched anonymous memory to one:
    /// a mapping of it counts as a hole. Default: none.
    fn zero_page(&self) -> Option<Pfn> {
        None
    }

    /// Where the kernel reaches the bytes of `pfn` (for a 2 MiB frame, the start of all
    /// 2 MiB), for a driver's copy engine; `None` if it does not.
    fn frame(&self, pfn: Pfn) -> Option<NonNull<u8>>;
}

/// A region of an address space with one protection (Linux's `vm_area_struct`, the
/// parts migration reads).
///
/// Every page a migration installs in the region is built from `property`, with the
/// writable, accessed and dirty bits of the page in question; only pages whose
/// attributes match `property` in everything else are migrated, so that restoring one
/// is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// The attributes of a page mapped here (`vm_page_prot`); `writable` is whether the
    /// region allows writes (`VM_WRITE`).
    pub property: PageProperty,
    /// Anonymous memory: holes and the zero page may be populated by a migration.
    /// Migration leaves other regions' holes alone.
    pub anonymous: bool,
}

impl Vma {
    /// An anonymous region `[start, end)` with `property`.
    pub const fn anonymous(start: u64, end: u64, property: PageProperty) -> Self {
        Self {
            start,
            end,
            property,
            anonymous: true,
        }
    }

    /// Whether `va` lies in the region.
    pub const fn contains(&self, va: u64) -> bool {
        self.start <= va && va < self.end
    }

    /// Whether `[start, end)` lies in the region.
    pub const fn covers(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end && start < end
    }

    /// The leaf attributes of a page of this region: writable if the page's mapping
    /// allows writes and the region does, with the accessed and dirty bits given.
    pub fn leaf_attributes<A: LeafAttributes>(
        &self,
        writable: bool,
        young: bool,
        dirty: bool,
    ) -> A {
        A::from_property(PageProperty {
            writable: writable && self.property.writable,
            accessed: young,
            dirty,
            ..self.property
        })
    }

    /// Whether a leaf with `attrs` is a page of this region as migration builds them:
    /// attributes that [`PageProperty`] fully describes and that equal the region's but
    /// for the writable, accessed and dirty bits (and writable only if the region is).
    pub fn matches<A: LeafAttributes>(&self, attrs: &A) -> bool {
        let p = attrs.property();
        if A::from_property(p) != *attrs {
            return false;
        }
        if p.writable && !self.property.writable {
            return false;
        }
        let masked = |p: PageProperty| PageProperty {
            writable: false,
            accessed: false,
            dirty: false,
            ..p
        };
        masked(p) == masked(self.property)
    }
}

/// The kernel's memory map: which region, if any, holds an address.
pub trait Vmas: Sync {
    /// The region holding `va`.
    fn find(&self, va: u64) -> Option<Vma>;
}

impl Vmas for Vma {
    fn find(&self, va: u64) -> Option<Vma> {
        self.contains(va).then_some(*self)
    }
}

impl Vmas for [Vma] {
    fn find(&self, va: u64) -> Option<Vma> {
        self.iter().find(|v| v.contains(va)).copied()
    }
}

impl<const N: usize> Vmas for [Vma; N] {
    fn find(&self, va: u64) -> Option<Vma> {
        self.as_slice().find(va)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devpriv_pte::arch::aarch64::PageAttributes as Arm;
    use devpriv_pte::arch::x86_64::PageAttributes as X86;

    fn vma(writable: bool) -> Vma {
        Vma::anonymous(
            0x1000,
            0x5000,
            PageProperty {
                writable,
                user: true,
                ..PageProperty::default()
            },
        )
    }

    fn matches_and_rebuilds<A: LeafAttributes>() {
        let v = vma(true);
        for (w, y, d) in [
            (true, true, true),
            (false, true, false),
            (true, false, false),
        ] {
            let attrs: A = v.leaf_attributes(w, y, d);
            assert!(v.matches(&attrs));
            let p = attrs.property();
            assert_eq!((p.writable, p.accessed), (w, y));
        }
        // Another memory type, kernel-only, or writable in a read-only region: no.
        let other = A::from_property(PageProperty {
            memory: devpriv_pte::MemoryType::Uncached,
            ..v.property
        });
        assert!(!v.matches(&other));
        let kernel = A::from_property(PageProperty {
            user: false,
            ..v.property
        });
        assert!(!v.matches(&kernel));
        let ro = vma(false);
        assert!(!ro.matches(&v.leaf_attributes::<A>(true, false, false)));
        assert!(ro.matches(&ro.leaf_attributes::<A>(true, false, false)));
        assert!(
            !ro.leaf_attributes::<A>(true, true, true)
                .property()
                .writable
        );
    }

    #[test]
    fn leaf_attributes_match_their_region() {
        matches_and_rebuilds::<X86>();
        matches_and_rebuilds::<Arm>();
    }

    #[test]
    fn regions() {
        let v = vma(true);
        assert!(v.contains(0x1000) && !v.contains(0x5000));
        assert!(v.covers(0x1000, 0x5000) && !v.covers(0x1000, 0x6000) && !v.covers(0x2000, 0x2000));
        assert_eq!(v.find(0x4fff), Some(v));
        assert_eq!(v.find(0x5000), None);
        let two = [v, Vma::anonymous(0x8000, 0x9000, v.property)];
        assert_eq!(two.find(0x8000).map(|r| r.start), Some(0x8000));
        assert_eq!(two[..].find(0x6000), None);
    }
}

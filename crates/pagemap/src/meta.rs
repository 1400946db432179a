//! Per-page metadata: two 64-bit words per 4 KiB device page.
//!
//! All-zero metadata means "free, never used", so a pagemap's metadata can be a region
//! of zeroed memory that no one touches at registration (the operating system can even
//! supply it lazily, page by page, as the allocator first reaches it).
//!
//! # The state word
//!
//! | bits   | page of a folio          | meaning                                               |
//! |--------|--------------------------|-------------------------------------------------------|
//! | 0..=26 | head                     | reference count (0 = free, or being freed)            |
//! | 27     | head                     | pooled: the folio belongs to a slot of a stash        |
//! | 28     | head                     | locked                                                |
//! | 29     | head                     | allocated: the page heads an allocated folio          |
//! | 30     | head                     | large: the folio is a 2 MiB (order-9) folio           |
//! | 31     | page                     | cached: free, but held by a `PageCache`               |
//! | 32..=63| chunk pages 0, 1, 2      | allocator fields of the page's 2 MiB chunk (below)    |
//!
//! The low half belongs to the page's folio and changes lock-free (compare-exchange);
//! the high half belongs to the allocator and changes only under the pagemap's
//! allocator lock, with an atomic exclusive-or so it never disturbs the low half. Tail
//! pages of a 2 MiB folio keep a zero low half: a page is a tail exactly when the first
//! page of its 2 MiB chunk is allocated and large, so allocating a 2 MiB folio writes one
//! word, not 512.
//!
//! Chunk fields (high half): page 0 holds the chunk header (state 2 bits: whole / large /
//! split; free-page count 10 bits; never-used watermark 10 bits; free-list head 10 bits);
//! pages 1 and 2 hold the links of the list of partly used chunks. (The allocator keeps
//! the header of the chunk it is currently carving 4 KiB pages from in its own state and
//! writes it back when it moves on.)
//!
//! # The reverse-map word
//!
//! For an allocated folio head: which address space and virtual page map the folio
//! ([`ReverseMap`], 0 = unmapped). For a free page: the allocator's free-list link.

use crate::error::ReverseMapError;
use crate::sync::AtomicU64;

/// Bytes of metadata per 4 KiB device page (Linux's `struct page`: 64).
#[cfg(not(loom))]
pub const METADATA_BYTES_PER_PAGE: usize = core::mem::size_of::<PageMeta>();

#[cfg(not(loom))]
const _: () = assert!(METADATA_BYTES_PER_PAGE <= 16);

/// The metadata of one 4 KiB device page: a state word and a reverse-map word.
///
/// A pagemap's metadata is a slice of these, one per page, all zero to begin with.
#[derive(Debug)]
#[repr(C)]
pub struct PageMeta {
    pub(crate) state: AtomicU64,
    pub(crate) rmap: AtomicU64,
}

impl PageMeta {
    /// Zeroed metadata: a free page.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            rmap: AtomicU64::new(0),
        }
    }

    /// Zeroed metadata: a free page.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            rmap: AtomicU64::new(0),
        }
    }

    /// Views `pages` zeroed records at `ptr` as metadata.
    ///
    /// Use it for metadata in memory the kernel maps itself (a reserved region, lazily
    /// zero-filled anonymous memory): nothing is read or written here, so the cost does
    /// not depend on `pages`.
    ///
    /// # Safety
    ///
    /// `ptr` must be non-null, aligned to 8 bytes and valid for reads and writes of
    /// `pages * METADATA_BYTES_PER_PAGE` bytes for `'a`; those bytes must be zero (any
    /// bit pattern is a valid `PageMeta`, but only zero means "free"); and for `'a` the
    /// memory must not be accessed except through the returned slice.
    #[cfg(not(loom))]
    pub unsafe fn slice_from_zeroed_raw<'a>(
        ptr: *mut PageMeta,
        pages: usize,
    ) -> &'a mut [PageMeta] {
        // SAFETY: the caller guarantees that `ptr` is valid, aligned and exclusively ours
        // for `pages` records for `'a` (so an exclusive slice is sound); `PageMeta` is two
        // `AtomicU64`s, for which every bit pattern (zero in particular) is valid.
        unsafe { core::slice::from_raw_parts_mut(ptr, pages) }
    }
}

impl Default for PageMeta {
    fn default() -> Self {
        Self::new()
    }
}

/// A driver-private word per page, in a separate optional slice
/// ([`DevicePagemap::with_driver_words`](crate::DevicePagemap::with_driver_words)), so
/// that drivers that do not need it do not pay for it.
pub type DriverWord = AtomicU64;

/// Bit layout of the state word (see the module documentation).
pub(crate) mod word {
    /// Reference-count bits.
    pub(crate) const REF_MASK: u64 = (1 << 27) - 1;
    /// Largest reference count.
    pub(crate) const REF_MAX: u64 = REF_MASK;
    /// The folio belongs to a slot of one of its pagemap's stashes (`crate::stash`):
    /// its last put gives it back there. On a free page: held by the stash.
    pub(crate) const POOLED: u64 = 1 << 27;
    /// The folio is locked.
    pub(crate) const LOCKED: u64 = 1 << 28;
    /// The page heads an allocated folio.
    pub(crate) const ALLOCATED: u64 = 1 << 29;
    /// The folio is a 2 MiB folio.
    pub(crate) const LARGE: u64 = 1 << 30;
    /// The page is free but held in a [`PageCache`](crate::PageCache).
    pub(crate) const RESERVED: u64 = 1 << 31;
    /// The half that belongs to the folio.
    pub(crate) const FOLIO_HALF: u64 = 0xffff_ffff;
    /// Shift of the allocator's half.
    pub(crate) const CHUNK_SHIFT: u32 = 32;

    /// The reference count in a state word.
    pub(crate) const fn refs(w: u64) -> u64 {
        w & REF_MASK
    }
}

/// An address-space identifier in a reverse map: which address space (process, VM)
/// maps a device folio. Up to [`AddressSpaceId::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressSpaceId(u32);

impl AddressSpaceId {
    /// The largest identifier a reverse-map word holds (18 bits).
    pub const MAX: u32 = (1 << 18) - 1;

    /// The identifier `id`, or an error above [`AddressSpaceId::MAX`].
    pub const fn new(id: u32) -> Result<Self, ReverseMapError> {
        if id > Self::MAX {
            Err(ReverseMapError::AddressSpaceTooLarge { id })
        } else {
            Ok(Self(id))
        }
    }

    /// The identifier as a number.
    pub const fn value(self) -> u32 {
        self.0
    }
}

/// Which address space and virtual page map a device folio: what eviction needs to
/// find the entry pointing at the folio without scanning page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReverseMap {
    address_space: AddressSpaceId,
    virtual_page: u64,
}

impl ReverseMap {
    /// The largest virtual page number a reverse-map word holds (45 bits: 57-bit
    /// virtual addresses in 4 KiB pages).
    pub const MAX_VIRTUAL_PAGE: u64 = (1 << 45) - 1;

    const VALID: u64 = 1 << 63;
    const ASID_SHIFT: u32 = 45;

    /// The folio is mapped at virtual page `virtual_page` (address / 4 KiB) of
    /// `address_space`.
    pub const fn new(
        address_space: AddressSpaceId,
        virtual_page: u64,
    ) -> Result<Self, ReverseMapError> {
        if virtual_page > Self::MAX_VIRTUAL_PAGE {
            Err(ReverseMapError::VirtualPageTooLarge { virtual_page })
        } else {
            Ok(Self {
                address_space,
                virtual_page,
            })
        }
    }

    /// The address space.
    pub const fn address_space(self) -> AddressSpaceId {
        self.address_space
    }

    /// The virtual page number (virtual address / 4 KiB).
    pub const fn virtual_page(self) -> u64 {
        self.virtual_page
    }

    /// The reverse map of the page `pages` pages further on (same address space), if it
    /// still fits.
    pub const fn offset(self, pages: u64) -> Option<Self> {
        match self.virtual_page.checked_add(pages) {
            Some(v) if v <= Self::MAX_VIRTUAL_PAGE => Some(Self {
                address_space: self.address_space,
                virtual_page: v,
            }),
            _ => None,
        }
    }

    pub(crate) const fn encode(this: Option<Self>) -> u64 {
        match this {
            None => 0,
            Some(r) => {
                Self::VALID | ((r.address_space.0 as u64) << Self::ASID_SHIFT) | r.virtual_page
            }
        }
    }

    pub(crate) const fn decode(raw: u64) -> Option<Self> {
        if raw & Self::VALID == 0 {
            None
        } else {
            Some(Self {
                address_space: AddressSpaceId(
                    ((raw >> Self::ASID_SHIFT) & AddressSpaceId::MAX as u64) as u32,
                ),
                virtual_page: raw & Self::MAX_VIRTUAL_PAGE,
            })
        }
    }
}

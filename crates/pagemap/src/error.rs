//! Typed errors: every kind of bad input has its own variant.

use core::fmt;

use devpriv_pte::{DeviceIndex, PageSize};

/// Why a device index did not resolve to a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The index is above [`DeviceIndex::MAX`]: no software entry can hold it.
    OutOfRange {
        /// The index.
        index: DeviceIndex,
    },
    /// No pagemap ever owned the index's slot, or the index is past the end of the
    /// pagemap that owns the slot.
    Unknown {
        /// The index.
        index: DeviceIndex,
    },
    /// The pagemap that owned the index has been unregistered (a stale index).
    FreedPagemap {
        /// The index.
        index: DeviceIndex,
    },
}

/// Why a pagemap could not be created or registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A pagemap of zero pages.
    ZeroPages,
    /// More pages than one pagemap can have.
    TooManyPages {
        /// Pages asked for.
        pages: u64,
        /// The most a pagemap can have ([`MAX_PAGEMAP_PAGES`](crate::MAX_PAGEMAP_PAGES)).
        max: u64,
    },
    /// The pagemap's metadata (or driver words) overlaps that of a pagemap already
    /// registered in the space, or its [`StaticMetadata`](crate::StaticMetadata) was
    /// claimed by another pagemap: the two would hand out each other's pages.
    AliasedMetadata,
    /// The metadata slice has fewer records than the pagemap has pages.
    MetadataTooSmall {
        /// Records needed.
        needed: u64,
        /// Records given.
        given: u64,
    },
    /// The driver-word slice has fewer words than the pagemap has pages.
    DriverWordsTooSmall {
        /// Words needed.
        needed: u64,
        /// Words given.
        given: u64,
    },
    /// The pagemap is already registered (in this or another space).
    AlreadyRegistered,
    /// Every slot of the space holds a live pagemap.
    SpaceFull,
}

/// Why a pagemap could not be unregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnregisterError {
    /// The identifier names no live pagemap of this space (never registered, or
    /// already unregistered: its generation is stale).
    StaleId,
    /// Pages of the pagemap are still allocated (referenced).
    PagesInUse {
        /// How many pages are allocated.
        pages: u64,
    },
}

/// Why a folio could not be allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// Only 4 KiB and 2 MiB folios exist.
    UnsupportedSize(PageSize),
    /// No free folio of this size.
    OutOfMemory,
    /// The test hook ([`DevicePagemap::inject_alloc_failures`](crate::DevicePagemap::inject_alloc_failures)) failed it.
    Injected,
    /// The pagemap is not registered in a space, so its pages would have no index.
    NotRegistered,
    /// The allocator needed a never-used 2 MiB chunk and found its metadata not all
    /// zero (page `page` of the pagemap is the first non-zero record): the metadata
    /// given to [`DevicePagemap::new`](crate::DevicePagemap::new) broke its contract.
    /// The chunk is never handed out; allocations that need a fresh chunk keep failing
    /// with this, while freed chunks and pages are still reused.
    NonZeroMetadata {
        /// The first page (of the pagemap) whose record is not zero.
        page: u64,
    },
}

/// Why a reference, a lock or a split could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioError {
    /// The folio is free (or being freed, or frozen in the middle of a split): no
    /// reference can be taken.
    NotAllocated,
    /// The reference count would overflow.
    RefcountOverflow,
    /// Split of a folio that is not a 2 MiB folio.
    SplitNotLarge,
    /// Split of a folio someone else also references.
    SplitBusy {
        /// The reference count found (a split needs exactly 1, the caller's).
        refs: u64,
    },
}

/// A reverse map that does not fit the reverse-map word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReverseMapError {
    /// Address-space identifier above [`AddressSpaceId::MAX`](crate::AddressSpaceId::MAX).
    AddressSpaceTooLarge {
        /// The identifier.
        id: u32,
    },
    /// Virtual page above [`ReverseMap::MAX_VIRTUAL_PAGE`](crate::ReverseMap::MAX_VIRTUAL_PAGE).
    VirtualPageTooLarge {
        /// The virtual page number.
        virtual_page: u64,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { index } => write!(f, "{index} is beyond the 40-bit index space"),
            Self::Unknown { index } => write!(f, "no pagemap owns {index}"),
            Self::FreedPagemap { index } => {
                write!(f, "{index} belonged to a pagemap that was unregistered")
            }
        }
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPages => f.write_str("a pagemap needs at least one page"),
            Self::TooManyPages { pages, max } => {
                write!(f, "{pages} pages asked for, a pagemap holds at most {max}")
            }
            Self::MetadataTooSmall { needed, given } => {
                write!(f, "metadata for {given} pages given, {needed} needed")
            }
            Self::DriverWordsTooSmall { needed, given } => {
                write!(f, "{given} driver words given, {needed} needed")
            }
            Self::AlreadyRegistered => f.write_str("the pagemap is already registered"),
            Self::AliasedMetadata => f.write_str(
                "the pagemap's metadata overlaps that of a pagemap already registered, or \
                 another pagemap has claimed it",
            ),
            Self::SpaceFull => f.write_str("every slot of the device-private space is in use"),
        }
    }
}

impl fmt::Display for UnregisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StaleId => f.write_str("no live pagemap has this identifier"),
            Self::PagesInUse { pages } => write!(f, "{pages} pages are still allocated"),
        }
    }
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedSize(size) => {
                write!(
                    f,
                    "the pagemap has no device folios of {} bytes",
                    size.bytes()
                )
            }
            Self::OutOfMemory => f.write_str("no free device folio of this size"),
            Self::Injected => f.write_str("allocation failure injected"),
            Self::NotRegistered => f.write_str("the pagemap is not registered"),
            Self::NonZeroMetadata { page } => write!(
                f,
                "the metadata of never-used page {page} is not zero, so its chunk is not used"
            ),
        }
    }
}

impl fmt::Display for FolioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAllocated => f.write_str("the folio is free"),
            Self::RefcountOverflow => f.write_str("the folio's reference count would overflow"),
            Self::SplitNotLarge => f.write_str("only a 2 MiB folio can be split"),
            Self::SplitBusy { refs } => write!(f, "split needs 1 reference, found {refs}"),
        }
    }
}

impl fmt::Display for ReverseMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddressSpaceTooLarge { id } => {
                write!(f, "address-space id {id} does not fit a reverse map")
            }
            Self::VirtualPageTooLarge { virtual_page } => {
                write!(
                    f,
                    "virtual page {virtual_page:#x} does not fit a reverse map"
                )
            }
        }
    }
}

impl core::error::Error for LookupError {}
impl core::error::Error for RegisterError {}
impl core::error::Error for UnregisterError {}
impl core::error::Error for AllocError {}
impl core::error::Error for FolioError {}
impl core::error::Error for ReverseMapError {}

//! Conversions to and from the `x86_64` crate's paging types.
//!
//! - Raw entries: [`X86_64::decode_page_table_entry`] and
//!   [`X86_64::encode_page_table_entry`] go through the raw value, so they work for
//!   every entry, present or not, at every level.
//! - Frames: `From<PhysFrame<S>> for Pfn` and `TryFrom<Pfn> for PhysFrame<S>` (the frame
//!   must be aligned to `S` and below 2^40).
//! - Present entries as (frame, flags): [`X86_64::leaf_from_frame`],
//!   [`X86_64::leaf_to_frame`], [`X86_64::table_from_frame`],
//!   [`X86_64::table_to_frame`], and the flag conversions on [`PageAttributes`] and
//!   [`TableAttributes`].
//!
//! The `x86_64` crate names bit 7 `HUGE_PAGE` at every level. In a 4 KiB leaf that bit
//! is PAT, and [`PageAttributes::to_flags`] / [`PageAttributes::from_flags`] treat it
//! so. A huge leaf keeps PAT in bit 12, which `PageTableFlags` cannot hold (it is an
//! address bit there and a `PhysFrame<Size2MiB>` is 2 MiB aligned): converting a huge
//! leaf with PAT set to flags is [`ConversionError::PatNotExpressible`]; use the raw
//! conversions for those.

use ::x86_64::PhysAddr;
use ::x86_64::structures::paging::page_table::PageTableEntry;
use ::x86_64::structures::paging::{
    PageSize as X86PageSize, PageTableFlags, PhysFrame, Size2MiB, Size4KiB,
};

use super::hardware::{LEAF_ATTR_MASK, TABLE_ATTR_MASK};
use super::{ADDRESS_MASK, PAGE_SIZE, PFN_BITS, PageAttributes, TableAttributes, X86_64};
use crate::Entry;
use crate::error::{DecodeError, EncodeError};
use crate::format::PteFormat;
use crate::frame::Pfn;
use crate::level::{Level, PageSize};

/// Why a conversion to or from the `x86_64` crate's types failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConversionError {
    /// The flags or the entry are not present.
    NotPresent,
    /// The entry is not of the kind asked for (for example a table where a leaf was
    /// expected).
    WrongKind,
    /// The leaf's size is not the size of the `PhysFrame` type asked for.
    SizeMismatch,
    /// A huge leaf with PAT set: `PageTableFlags` has no bit for it.
    PatNotExpressible,
    /// The frame does not fit or is not aligned.
    Frame(EncodeError),
}

impl core::fmt::Display for ConversionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotPresent => f.write_str("the flags or the entry are not present"),
            Self::WrongKind => f.write_str("the entry is not of the kind asked for"),
            Self::SizeMismatch => {
                f.write_str("the leaf's size is not the size of the frame type asked for")
            }
            Self::PatNotExpressible => {
                f.write_str("PageTableFlags has no bit for the PAT bit of a huge leaf")
            }
            Self::Frame(e) => write!(f, "the frame does not fit: {e}"),
        }
    }
}

impl core::error::Error for ConversionError {}

/// The raw value of an `x86_64` crate entry.
#[inline]
pub fn raw_of(entry: &PageTableEntry) -> u64 {
    entry.addr().as_u64() | entry.flags().bits()
}

/// The `x86_64` crate entry holding `raw`.
#[inline]
pub fn page_table_entry(raw: u64) -> PageTableEntry {
    let mut entry = PageTableEntry::new();
    // The masked address is 4 KiB aligned and below 2^52, so `set_addr` cannot panic.
    entry.set_addr(
        PhysAddr::new(raw & ADDRESS_MASK),
        PageTableFlags::from_bits_retain(raw & !ADDRESS_MASK),
    );
    entry
}

/// The devpriv page size of an `x86_64` crate page size.
fn page_size_of<S: X86PageSize>() -> PageSize {
    match S::SIZE {
        Size4KiB::SIZE => PageSize::Size4KiB,
        Size2MiB::SIZE => PageSize::Size2MiB,
        _ => PageSize::Size1GiB,
    }
}

impl<S: X86PageSize> From<PhysFrame<S>> for Pfn {
    fn from(frame: PhysFrame<S>) -> Self {
        Pfn::containing(frame.start_address().as_u64())
    }
}

impl<S: X86PageSize> TryFrom<Pfn> for PhysFrame<S> {
    type Error = EncodeError;

    /// The frame starting at `pfn`: [`EncodeError::FrameTooLarge`] at or above 2^40,
    /// [`EncodeError::UnalignedFrame`] if not aligned to `S`.
    fn try_from(pfn: Pfn) -> Result<Self, EncodeError> {
        if pfn.number() >> PFN_BITS != 0 {
            return Err(EncodeError::FrameTooLarge);
        }
        PhysFrame::from_start_address(PhysAddr::new(pfn.phys_addr()))
            .map_err(|_| EncodeError::UnalignedFrame)
    }
}

impl PageAttributes {
    /// The `x86_64` crate flags of a present leaf of `size` with these attributes:
    /// `PRESENT`, `HUGE_PAGE` for 2 MiB / 1 GiB, and for a 4 KiB leaf PAT in bit 7 (the
    /// crate's `HUGE_PAGE` position). Fails for a huge leaf with PAT set.
    pub fn to_flags(self, size: PageSize) -> Result<PageTableFlags, ConversionError> {
        let bits = match size {
            PageSize::Size4KiB => self.leaf_4k_bits(),
            PageSize::Size2MiB | PageSize::Size1GiB => {
                if self.pat() {
                    return Err(ConversionError::PatNotExpressible);
                }
                self.leaf_4k_bits() | PAGE_SIZE
            }
        };
        Ok(PageTableFlags::from_bits_retain(bits) | PageTableFlags::PRESENT)
    }

    /// The attributes in the flags of a present leaf of `size`. For a 4 KiB leaf bit 7
    /// (`HUGE_PAGE`) is read as PAT; for a huge leaf it is the PS bit and ignored (the
    /// size says it), and PAT is clear.
    pub fn from_flags(flags: PageTableFlags, size: PageSize) -> Result<Self, ConversionError> {
        if !flags.contains(PageTableFlags::PRESENT) {
            return Err(ConversionError::NotPresent);
        }
        let bits = flags.bits() & LEAF_ATTR_MASK;
        Ok(match size {
            PageSize::Size4KiB => Self::from_bits(bits),
            PageSize::Size2MiB | PageSize::Size1GiB => Self::from_bits(bits & !PAGE_SIZE),
        })
    }
}

impl TableAttributes {
    /// The `x86_64` crate flags of a present table entry with these attributes.
    pub fn to_flags(self) -> PageTableFlags {
        PageTableFlags::from_bits_retain(self.table_bits()) | PageTableFlags::PRESENT
    }

    /// The attributes in the flags of a present table entry; `HUGE_PAGE` set is
    /// [`ConversionError::WrongKind`] (that is a leaf).
    pub fn from_flags(flags: PageTableFlags) -> Result<Self, ConversionError> {
        if !flags.contains(PageTableFlags::PRESENT) {
            return Err(ConversionError::NotPresent);
        }
        if flags.contains(PageTableFlags::HUGE_PAGE) {
            return Err(ConversionError::WrongKind);
        }
        Ok(Self::from_bits(flags.bits() & TABLE_ATTR_MASK))
    }
}

impl X86_64 {
    /// Decodes an `x86_64` crate entry found at `level` (any kind, present or not).
    #[inline]
    pub fn decode_page_table_entry(
        entry: &PageTableEntry,
        level: Level,
    ) -> Result<Entry<Self>, DecodeError> {
        Self::decode(raw_of(entry), level)
    }

    /// Encodes `entry` for `level` as an `x86_64` crate entry.
    #[inline]
    pub fn encode_page_table_entry(
        entry: &Entry<Self>,
        level: Level,
    ) -> Result<PageTableEntry, EncodeError> {
        Self::encode(entry, level).map(page_table_entry)
    }

    /// The leaf mapping `frame` with `flags` (which must contain `PRESENT`).
    pub fn leaf_from_frame<S: X86PageSize>(
        frame: PhysFrame<S>,
        flags: PageTableFlags,
    ) -> Result<Entry<Self>, ConversionError> {
        let size = page_size_of::<S>();
        Ok(Entry::Leaf {
            pfn: frame.into(),
            size,
            attrs: PageAttributes::from_flags(flags, size)?,
        })
    }

    /// The frame and flags of a leaf of size `S`.
    pub fn leaf_to_frame<S: X86PageSize>(
        entry: &Entry<Self>,
    ) -> Result<(PhysFrame<S>, PageTableFlags), ConversionError> {
        match *entry {
            Entry::Leaf { pfn, size, attrs } => {
                if size != page_size_of::<S>() {
                    return Err(ConversionError::SizeMismatch);
                }
                let frame = PhysFrame::try_from(pfn).map_err(ConversionError::Frame)?;
                Ok((frame, attrs.to_flags(size)?))
            }
            Entry::Absent | Entry::Software(_) | Entry::ProtNone { .. } => {
                Err(ConversionError::NotPresent)
            }
            Entry::Table { .. } => Err(ConversionError::WrongKind),
        }
    }

    /// The table entry pointing at `frame` with `flags` (which must contain `PRESENT`
    /// and not `HUGE_PAGE`).
    pub fn table_from_frame(
        frame: PhysFrame<Size4KiB>,
        flags: PageTableFlags,
    ) -> Result<Entry<Self>, ConversionError> {
        Ok(Entry::Table {
            next: frame.into(),
            attrs: TableAttributes::from_flags(flags)?,
        })
    }

    /// The frame and flags of a table entry.
    pub fn table_to_frame(
        entry: &Entry<Self>,
    ) -> Result<(PhysFrame<Size4KiB>, PageTableFlags), ConversionError> {
        match *entry {
            Entry::Table { next, attrs } => {
                let frame = PhysFrame::try_from(next).map_err(ConversionError::Frame)?;
                Ok((frame, attrs.to_flags()))
            }
            Entry::Absent | Entry::Software(_) | Entry::ProtNone { .. } => {
                Err(ConversionError::NotPresent)
            }
            Entry::Leaf { .. } => Err(ConversionError::WrongKind),
        }
    }
}

//! Typed errors for encoding and decoding.

use crate::level::{Level, PageSize};

/// Why an [`Entry`](crate::Entry) could not be encoded at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame number does not fit the format's output-address field.
    FrameTooLarge,
    /// The device index does not fit the software entry's offset field (40 bits).
    IndexTooLarge,
    /// The swap offset does not fit the offset field (42 bits).
    OffsetTooLarge,
    /// The entry kind cannot live at this level (for example a table at level 1, a leaf
    /// at level 4, or a software entry above level 2).
    KindNotAllowedAtLevel(Level),
    /// The leaf's size is not the leaf size of the level it is encoded at.
    SizeMismatch {
        /// The level the entry was encoded at.
        level: Level,
        /// The size the leaf claimed.
        size: PageSize,
    },
    /// The leaf's frame is not aligned to its size.
    UnalignedFrame,
    /// An attribute the format cannot express (for example soft-dirty on aarch64).
    UnsupportedAttribute,
    /// The level does not exist in this format.
    NoSuchLevel(Level),
    /// The entry would encode as 0, which every format reads as an absent entry (on
    /// aarch64, swap type 0 at offset 0: Linux never writes it, offset 0 being the
    /// swap header).
    EncodesAsAbsent,
}

/// Why a raw value could not be decoded at a level. Decoding never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Bits that must be zero (reserved or must-be-zero for this entry type) are set.
    ReservedBitsSet {
        /// The offending bits, in their raw positions.
        bits: u64,
    },
    /// A non-present entry with the PROT_NONE marker: a present-but-inaccessible mapping
    /// (Linux `_PAGE_PROTNONE` / `PTE_PRESENT_INVALID`), which this crate does not model.
    ProtNone,
    /// A software entry whose offset is wider than [`crate::software::OFFSET_BITS`].
    OffsetTooWide,
    /// A software entry where software entries are not defined (above level 2).
    SoftwareAtLevel(Level),
    /// A descriptor type the architecture reserves at this level (for example an aarch64
    /// block descriptor at level 1 or 4, or an x86_64 PS bit at level 4).
    InvalidDescriptor,
    /// The level does not exist in this format.
    NoSuchLevel(Level),
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for EncodeError {}
impl core::error::Error for DecodeError {}

//! Typed errors for encoding and decoding.

use crate::level::{Level, PageSize};

/// Why an [`Entry`](crate::Entry) could not be encoded at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame number does not fit the format's output-address field.
    FrameTooLarge,
    /// The device index does not fit the software entry's offset field (the profile's
    /// [`number_bits`](crate::Profile::number_bits), 40 under devpriv's own).
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
    /// The profile's type numbering has no type number for the kind: a kind whose kernel
    /// option is off, or a swap type the numbering gives to a special kind.
    TypeNotInProfile,
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
    /// A software entry whose offset is wider than [`crate::software::OFFSET_BITS`].
    OffsetTooWide {
        /// The offset bits beyond the limit, in their raw positions (on x86_64 the
        /// offset is stored inverted: these are the raw bits whose inverted value is 1).
        bits: u64,
    },
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
        match self {
            Self::FrameTooLarge => f.write_str("the frame number does not fit the entry"),
            Self::IndexTooLarge => f.write_str("the device index does not fit the entry"),
            Self::OffsetTooLarge => f.write_str("the swap offset is wider than 42 bits"),
            Self::KindNotAllowedAtLevel(level) => {
                write!(
                    f,
                    "this kind of entry cannot be encoded at level {}",
                    *level as u8
                )
            }
            Self::SizeMismatch { level, size } => write!(
                f,
                "a leaf of {:#x} bytes cannot be encoded at level {}",
                size.bytes(),
                *level as u8
            ),
            Self::UnalignedFrame => f.write_str("the frame is not aligned to the leaf size"),
            Self::UnsupportedAttribute => {
                f.write_str("the format cannot express one of the attributes")
            }
            Self::NoSuchLevel(level) => {
                write!(f, "the format has no level {}", *level as u8)
            }
            Self::EncodesAsAbsent => {
                f.write_str("the entry would encode as 0, which reads as an absent entry")
            }
            Self::TypeNotInProfile => {
                f.write_str("the profile's type numbering has no type number for this kind")
            }
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ReservedBitsSet { bits } => {
                write!(f, "reserved bits {bits:#x} are set")
            }
            Self::OffsetTooWide { bits } => write!(
                f,
                "the software entry's offset is wider than 42 bits (raw bits {bits:#x})"
            ),
            Self::SoftwareAtLevel(level) => write!(
                f,
                "a software entry at level {}, where none are defined",
                *level as u8
            ),
            Self::InvalidDescriptor => f.write_str("the descriptor type is reserved at this level"),
            Self::NoSuchLevel(level) => {
                write!(f, "the format has no level {}", *level as u8)
            }
        }
    }
}

impl core::error::Error for EncodeError {}
impl core::error::Error for DecodeError {}

//! The aarch64 entry format: VMSAv8-64 stage 1, 4 KiB granule, 48-bit virtual and
//! output addresses (four levels).
//!
//! | level | Arm level | bits `[1:0]` = 0b11 | bits `[1:0]` = 0b01 | 0b00 / 0b10          |
//! |-------|-----------|------------------|------------------|----------------------|
//! | 4     | 0         | table            | invalid          | absent               |
//! | 3     | 1         | table            | 1 GiB block      | absent               |
//! | 2     | 2         | table            | 2 MiB block      | absent or software   |
//! | 1     | 3         | 4 KiB page       | invalid (reserved) | absent or software |
//!
//! An invalid entry with bit 11 (`PTE_PRESENT_INVALID`) set is a PROT_NONE mapping
//! ([`Entry::ProtNone`]): bits `[1:0]` are 0b10 at level 1 and 0b00 at levels 2 and 3,
//! the rest is laid out as the page or block would be.
//!
//! Level 5 does not exist in this format ([`DecodeError::NoSuchLevel`],
//! [`EncodeError::NoSuchLevel`]). Software entries follow Linux's arm64 layout (see
//! [`software`]). Output addresses have 48 bits (frame numbers below 2^36).
//!
//! The raw layouts are public bitfield types ([`PageDescriptor`], [`BlockDescriptor`],
//! [`TableDescriptor`], [`software::SwapEntryBits`]); [`Aarch64`] implements
//! [`PteFormat`] on top of them. Memory types assume [`MAIR_VALUE`] in MAIR_EL1.

#[cfg(feature = "aarch64-paging")]
pub mod conv;
mod hardware;
pub mod software;

pub use hardware::{
    BlockDescriptor, MAIR_VALUE, OUTPUT_ADDRESS_MASK, PFN_BITS, PageAttributes, PageDescriptor,
    Shareability, TABLE_OR_PAGE, TableAttributes, TableDescriptor, VALID,
};

use hardware::{LEAF_RESERVED, RESERVED_1G, RESERVED_2M, TABLE_RESERVED};

use crate::Entry;
use crate::classify::{Classified, TableClasses};
use crate::error::{DecodeError, EncodeError};
use crate::format::{Arch, Geometry, PteFormat};
use crate::frame::Pfn;
use crate::level::{Level, PageSize};
use crate::profile::Profile;

/// The aarch64 format marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aarch64;

impl Geometry for Aarch64 {
    const GRANULE_SHIFT: u32 = 12;
    const BITS_PER_LEVEL: u32 = 9;
    const OUTPUT_ADDRESS_BITS: u32 = 48;
    const LARGEST_LEAF_LEVEL: Level = Level::L3;
    const MAX_ROOT_LEVEL: Level = Level::L4;
}

const PFN_LIMIT: u64 = 1 << PFN_BITS;

impl Aarch64 {
    /// The frame of the next table if `raw` at `level` is a valid table descriptor; a
    /// fast path for table walkers that does not check reserved bits.
    #[inline]
    pub const fn table_pfn(raw: u64, level: Level) -> Option<Pfn> {
        let is_table = raw & 3 == 3 && matches!(level, Level::L2 | Level::L3 | Level::L4);
        if is_table {
            Some(Pfn::new((raw & OUTPUT_ADDRESS_MASK) >> 12))
        } else {
            None
        }
    }

    /// Whether `raw` at `level` is a valid page (level 1) or block (levels 2, 3).
    #[inline]
    pub const fn is_leaf(raw: u64, level: Level) -> bool {
        match level {
            Level::L1 => raw & 3 == 3,
            Level::L2 | Level::L3 => raw & 3 == 1,
            Level::L4 | Level::L5 => false,
        }
    }

    /// The frame and attributes of `raw` at `level` if it is a valid page or block
    /// whose reserved bits are clear: exactly the `pfn` and `attrs` of the
    /// [`Entry::Leaf`] that [`PteFormat::decode`] returns, and `None` wherever `decode`
    /// returns anything else.
    #[inline]
    pub const fn leaf(raw: u64, level: Level) -> Option<(Pfn, PageAttributes)> {
        let (descriptor_type, reserved) = match level {
            Level::L1 => (0b11, LEAF_RESERVED),
            Level::L2 => (0b01, LEAF_RESERVED | RESERVED_2M),
            Level::L3 => (0b01, LEAF_RESERVED | RESERVED_1G),
            Level::L4 | Level::L5 => return None,
        };
        if raw & 3 == descriptor_type && raw & reserved == 0 {
            Some((
                Pfn::new((raw & OUTPUT_ADDRESS_MASK) >> 12),
                PageAttributes::from_leaf(raw),
            ))
        } else {
            None
        }
    }

    #[inline]
    const fn decode_leaf(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError> {
        let (size, reserved) = match level {
            Level::L1 => (PageSize::Size4KiB, LEAF_RESERVED),
            Level::L2 => (PageSize::Size2MiB, LEAF_RESERVED | RESERVED_2M),
            _ => (PageSize::Size1GiB, LEAF_RESERVED | RESERVED_1G),
        };
        if raw & reserved != 0 {
            return Err(DecodeError::ReservedBitsSet {
                bits: raw & reserved,
            });
        }
        Ok(Entry::Leaf {
            pfn: Pfn::new((raw & OUTPUT_ADDRESS_MASK) >> 12),
            size,
            attrs: PageAttributes::from_leaf(raw),
        })
    }

    /// Decodes an invalid entry with `PTE_PRESENT_INVALID` set.
    #[inline]
    const fn decode_prot_none(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError> {
        let descriptor_type = match level {
            Level::L1 => TABLE_OR_PAGE,
            Level::L2 | Level::L3 => 0,
            Level::L4 | Level::L5 => return Err(DecodeError::InvalidDescriptor),
        };
        if raw & 3 != descriptor_type {
            return Err(DecodeError::InvalidDescriptor);
        }
        match Self::decode_leaf(raw, level) {
            Ok(Entry::Leaf { pfn, size, attrs }) => Ok(Entry::ProtNone { pfn, size, attrs }),
            Ok(_) => Err(DecodeError::InvalidDescriptor),
            Err(e) => Err(e),
        }
    }

    #[inline]
    const fn encode_prot_none(
        pfn: Pfn,
        size: PageSize,
        attrs: PageAttributes,
        level: Level,
    ) -> Result<u64, EncodeError> {
        if !attrs.not_global() {
            // Bit 11 marks the entry PROT_NONE; it cannot also say global.
            return Err(EncodeError::UnsupportedAttribute);
        }
        match Self::encode_leaf(pfn, size, attrs, level) {
            Ok(raw) => Ok(raw & !VALID | software::PRESENT_INVALID),
            Err(e) => Err(e),
        }
    }

    #[inline]
    const fn decode_table(raw: u64) -> Result<Entry<Self>, DecodeError> {
        if raw & TABLE_RESERVED != 0 {
            return Err(DecodeError::ReservedBitsSet {
                bits: raw & TABLE_RESERVED,
            });
        }
        Ok(Entry::Table {
            next: Pfn::new((raw & OUTPUT_ADDRESS_MASK) >> 12),
            attrs: TableAttributes::from_table(raw),
        })
    }

    #[inline]
    const fn encode_leaf(
        pfn: Pfn,
        size: PageSize,
        attrs: PageAttributes,
        level: Level,
    ) -> Result<u64, EncodeError> {
        let Some(level_size) = level.leaf_size() else {
            return Err(EncodeError::KindNotAllowedAtLevel(level));
        };
        if size as u8 != level_size as u8 {
            return Err(EncodeError::SizeMismatch { level, size });
        }
        if pfn.number() >= PFN_LIMIT {
            return Err(EncodeError::FrameTooLarge);
        }
        if !pfn.is_aligned(size.frames()) {
            return Err(EncodeError::UnalignedFrame);
        }
        let descriptor_type = match size {
            PageSize::Size4KiB => VALID | TABLE_OR_PAGE,
            PageSize::Size2MiB | PageSize::Size1GiB => VALID,
        };
        Ok(descriptor_type | attrs.leaf_bits() | pfn.number() << 12)
    }

    #[inline]
    const fn encode_table(
        next: Pfn,
        attrs: TableAttributes,
        level: Level,
    ) -> Result<u64, EncodeError> {
        if matches!(level, Level::L1) {
            return Err(EncodeError::KindNotAllowedAtLevel(level));
        }
        if next.number() >= PFN_LIMIT {
            return Err(EncodeError::FrameTooLarge);
        }
        Ok(VALID | TABLE_OR_PAGE | attrs.table_bits() | next.number() << 12)
    }
}

impl PteFormat for Aarch64 {
    type LeafAttributes = PageAttributes;
    type TableAttributes = TableAttributes;
    const ARCH: Arch = Arch::Aarch64;

    /// Decodes `raw` at `level`. Every value that decodes re-encodes to itself.
    #[inline]
    fn decode_in(raw: u64, level: Level, profile: &Profile) -> Result<Entry<Self>, DecodeError> {
        if matches!(level, Level::L5) {
            return Err(DecodeError::NoSuchLevel(level));
        }
        match raw & 3 {
            0b11 => match level {
                Level::L1 => Self::decode_leaf(raw, level),
                _ => Self::decode_table(raw),
            },
            0b01 => match level {
                Level::L2 | Level::L3 => Self::decode_leaf(raw, level),
                _ => Err(DecodeError::InvalidDescriptor),
            },
            _ if raw == 0 => Ok(Entry::Absent),
            _ if raw & software::PRESENT_INVALID != 0 => Self::decode_prot_none(raw, level),
            _ => match software::decode(raw, level, profile) {
                Ok(sw) => Ok(Entry::Software(sw)),
                Err(e) => Err(e),
            },
        }
    }

    #[inline]
    fn encode_in(entry: &Entry<Self>, level: Level, profile: &Profile) -> Result<u64, EncodeError> {
        if matches!(level, Level::L5) {
            return Err(EncodeError::NoSuchLevel(level));
        }
        match *entry {
            Entry::Absent => Ok(0),
            Entry::Table { next, attrs } => Self::encode_table(next, attrs, level),
            Entry::Leaf { pfn, size, attrs } => Self::encode_leaf(pfn, size, attrs, level),
            Entry::Software(ref sw) => software::encode(sw, level, profile),
            Entry::ProtNone { pfn, size, attrs } => Self::encode_prot_none(pfn, size, attrs, level),
        }
    }

    #[inline]
    fn is_valid(raw: u64, level: Level) -> bool {
        match level {
            Level::L1 | Level::L4 => raw & 3 == 3,
            Level::L2 | Level::L3 => raw & 1 != 0,
            Level::L5 => false,
        }
    }
}

impl Aarch64 {
    /// Classifies `raw` at `level` under `profile` without building the typed
    /// [`Entry`] for the caller: the class [`PteFormat::decode_in`] gives, the frame or
    /// type number and the attribute bits (see [`Classified`]).
    #[inline]
    pub fn classify(raw: u64, level: Level, profile: &Profile) -> Classified {
        Classified::of_decoded(
            Self::decode_in(raw, level, profile),
            raw >> software::TYPE_SHIFT & 31,
            raw,
            PageAttributes::into_bits,
            TableAttributes::into_bits,
        )
    }

    /// Classifies every entry of `table` (at most 512) into one bitmap per class.
    pub fn classify_table(table: &[u64], level: Level, profile: &Profile) -> TableClasses {
        TableClasses::of_each(table, |raw| Self::classify(raw, level, profile).class)
    }
}

//! aarch64 software (invalid) entries, Linux's current arm64 layout bit for bit.
//!
//! ```text
//!  63 62 61                                   12 11 10      6  5  4  3  2  1  0
//! +-----+---------------------------------------+--+---------+-----+--+--+-----+
//! |  0  |           offset (50 bits)            |PI|  type   |  0  |UW|EX| 0 0 |
//! +-----+---------------------------------------+--+---------+-----+--+--+-----+
//! ```
//!
//! - bits `[1:0]` are 0: the descriptor is invalid to the MMU.
//! - EX (bit 2) anon-exclusive, UW (bit 3) userfaultfd write-protect. arm64 has no
//!   soft-dirty bit: encoding one is [`EncodeError::UnsupportedAttribute`].
//! - PI (bit 11) is `PTE_PRESENT_INVALID` (the nG position): set, it marks a
//!   PROT_NONE mapping ([`Entry::ProtNone`](crate::Entry::ProtNone)).
//! - The type numbers and the position of a migration entry's young and dirty bits
//!   come from the [`Profile`].
//! - The offset is stored as it is (not inverted) in bits 12..61.

use bitfield_struct::bitfield;

use crate::error::{DecodeError, EncodeError};
use crate::level::Level;
use crate::profile::Profile;
use crate::software::{SideBits, SoftwareEntry, SoftwareKind};

/// Bit 11 with bit 0 clear: a PROT_NONE mapping (Linux `PTE_PRESENT_INVALID`).
pub const PRESENT_INVALID: u64 = 1 << 11;
/// Bits of an invalid entry that must be clear besides 0 and 11: 1, 4, 5, 62, 63.
pub(crate) const MUST_BE_ZERO: u64 = 1 << 1 | 1 << 4 | 1 << 5 | 3 << 62;
/// First bit of the type field.
pub const TYPE_SHIFT: u32 = 6;
/// First bit of the offset field.
pub const OFFSET_SHIFT: u32 = 12;
/// Width of the offset field.
pub const OFFSET_FIELD_BITS: u32 = 50;

const EXCLUSIVE: u64 = 1 << 2;
const UFFD_WP: u64 = 1 << 3;

/// A software entry as Linux lays it out on arm64.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SwapEntryBits {
    /// Bit 0: clear (invalid).
    pub valid: bool,
    /// Bit 1: must be 0.
    pub reserved_1: bool,
    /// `PTE_SWP_EXCLUSIVE` (bit 2).
    pub exclusive: bool,
    /// `PTE_SWP_UFFD_WP` (bit 3).
    pub uffd_wp: bool,
    /// Bits 4..5: must be 0.
    #[bits(2)]
    pub reserved_4: u8,
    /// Bits 6..10: the Linux type number.
    #[bits(5)]
    pub swap_type: u8,
    /// `PTE_PRESENT_INVALID` (bit 11): must be 0 in a software entry.
    pub present_invalid: bool,
    /// Bits 12..61: the offset.
    #[bits(50)]
    pub offset: u64,
    /// Bits 62..63: must be 0.
    #[bits(2)]
    pub reserved_62: u8,
}

/// Encodes a software entry (Linux `__swp_entry` plus the side bits).
#[inline]
pub(crate) const fn encode(
    sw: &SoftwareEntry,
    level: Level,
    profile: &Profile,
) -> Result<u64, EncodeError> {
    if !matches!(level, Level::L1 | Level::L2) {
        return Err(EncodeError::KindNotAllowedAtLevel(level));
    }
    if sw.side.soft_dirty {
        return Err(EncodeError::UnsupportedAttribute);
    }
    let offset = match sw.kind.offset_in(profile) {
        Ok(o) => o,
        Err(e) => return Err(e),
    };
    let type_number = match sw.kind.type_number_in(profile.types()) {
        Ok(n) => n,
        Err(e) => return Err(e),
    };
    let raw = (offset << OFFSET_SHIFT)
        | ((type_number as u64) << TYPE_SHIFT)
        | ((sw.side.uffd_wp as u64) * UFFD_WP)
        | ((sw.side.exclusive as u64) * EXCLUSIVE);
    if raw == 0 {
        // Swap type 0, offset 0, no side bits: indistinguishable from an empty slot.
        return Err(EncodeError::EncodesAsAbsent);
    }
    Ok(raw)
}

/// Decodes an invalid, non-zero entry without `PTE_PRESENT_INVALID` at a level that is
/// not level 5.
#[inline]
pub(crate) const fn decode(
    raw: u64,
    level: Level,
    profile: &Profile,
) -> Result<SoftwareEntry, DecodeError> {
    if !matches!(level, Level::L1 | Level::L2) {
        return Err(DecodeError::SoftwareAtLevel(level));
    }
    if raw & MUST_BE_ZERO != 0 {
        return Err(DecodeError::ReservedBitsSet {
            bits: raw & MUST_BE_ZERO,
        });
    }
    let offset = (raw >> OFFSET_SHIFT) & ((1 << OFFSET_FIELD_BITS) - 1);
    let type_number = (raw >> TYPE_SHIFT & 0x1f) as u8;
    let kind = match SoftwareKind::from_type_and_offset(profile, type_number, offset) {
        Ok(k) => k,
        Err(e) => return Err(e.at_raw_shift(OFFSET_SHIFT)),
    };
    Ok(SoftwareEntry {
        kind,
        side: SideBits {
            exclusive: raw & EXCLUSIVE != 0,
            uffd_wp: raw & UFFD_WP != 0,
            soft_dirty: false,
        },
    })
}

//! x86_64 software (non-present) entries, Linux's layout bit for bit.
//!
//! ```text
//!  63    59 58                                           9  8  7  6  5  4  3  2  1  0
//! +--------+----------------------------------------------+--+--+--+--+--+--+--+--+--+
//! |  type  |            ~offset (50 bits, inverted)       |PN|PS| D| A| 0|EX|UW|SD| 0|
//! +--------+----------------------------------------------+--+--+--+--+--+--+--+--+--+
//! ```
//!
//! - P (bit 0) is clear: the MMU ignores the entry.
//! - The offset is stored inverted (Linux `__swp_entry`): with offsets limited to 42 bits,
//!   raw bits 51..58 are always set, so bits 12..51 read as a physical address at or
//!   above 2^51, memory that does not exist (the L1 Terminal Fault mitigation).
//! - SD (bit 1) soft-dirty, UW (bit 2) userfaultfd write-protect, EX (bit 3)
//!   anon-exclusive.
//! - A and D (bits 5, 6) are ignored: some CPUs set them on non-present entries (the
//!   Knights Landing erratum), so decoding drops them and encoding writes 0.
//! - PS (bit 7) must be 0 (a level-2 entry with PS reads as present to Linux), PN
//!   (bit 8) is `_PAGE_PROTNONE` and must be 0: with P clear it marks a PROT_NONE
//!   mapping ([`Entry::ProtNone`](crate::Entry::ProtNone)). Bit 4 must be 0.
//! - The type numbers and the position of a migration entry's young and dirty bits
//!   come from the [`Profile`].

use bitfield_struct::bitfield;

use crate::error::{DecodeError, EncodeError};
use crate::level::Level;
use crate::profile::Profile;
use crate::software::{SideBits, SoftwareEntry, SoftwareKind};

/// Bits the MMU may set on a non-present entry (A and D); ignored when decoding.
pub const ERRATUM_BITS: u64 = 0x60;
/// Bit 8 with P clear: a PROT_NONE mapping (Linux `_PAGE_PROTNONE`).
pub const PROT_NONE: u64 = 1 << 8;
/// Bits of a non-present entry that must be clear besides P and PROT_NONE (4 and PS).
pub(crate) const MUST_BE_ZERO: u64 = 1 << 4 | 1 << 7;
/// First bit of the inverted offset field.
pub const OFFSET_SHIFT: u32 = 9;
/// Width of the offset field.
pub const OFFSET_FIELD_BITS: u32 = 50;
/// First bit of the type field.
pub const TYPE_SHIFT: u32 = 59;

const SOFT_DIRTY: u64 = 1 << 1;
const UFFD_WP: u64 = 1 << 2;
const EXCLUSIVE: u64 = 1 << 3;

/// A software entry as Linux lays it out on x86_64.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SwapEntryBits {
    /// P: clear in a software entry.
    pub present: bool,
    /// `_PAGE_SWP_SOFT_DIRTY` (the R/W position).
    pub soft_dirty: bool,
    /// `_PAGE_SWP_UFFD_WP` (the U/S position).
    pub uffd_wp: bool,
    /// `_PAGE_SWP_EXCLUSIVE` (the PWT position).
    pub exclusive: bool,
    /// Bit 4: must be 0.
    pub reserved_4: bool,
    /// A: may be set by hardware (erratum); ignored.
    pub accessed_ignored: bool,
    /// D: may be set by hardware (erratum); ignored.
    pub dirty_ignored: bool,
    /// PS: must be 0.
    pub page_size: bool,
    /// `_PAGE_PROTNONE`: must be 0 in a software entry.
    pub prot_none: bool,
    /// Bits 9..58: the offset, inverted.
    #[bits(50)]
    pub inverted_offset: u64,
    /// Bits 59..63: the Linux type number.
    #[bits(5)]
    pub swap_type: u8,
}

impl SwapEntryBits {
    /// The offset (`swp_offset`): the field read back un-inverted.
    pub const fn offset(self) -> u64 {
        !self.inverted_offset() & ((1 << OFFSET_FIELD_BITS) - 1)
    }
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
    let offset = match sw.kind.offset_in(profile) {
        Ok(o) => o,
        Err(e) => return Err(e),
    };
    let type_number = match sw.kind.type_number_in(profile.types()) {
        Ok(n) => n,
        Err(e) => return Err(e),
    };
    let side = sw.side;
    Ok(((!offset) << (OFFSET_SHIFT + 5) >> 5)
        | ((type_number as u64) << TYPE_SHIFT)
        | ((side.soft_dirty as u64) * SOFT_DIRTY)
        | ((side.uffd_wp as u64) * UFFD_WP)
        | ((side.exclusive as u64) * EXCLUSIVE))
}

/// Decodes a non-present entry that is neither absent nor PROT_NONE (`raw` has P and
/// PROT_NONE clear and some bit other than A/D set).
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
    // Un-invert bits 9..58 into a 50-bit value.
    let offset = (!raw) << 5 >> (OFFSET_SHIFT + 5);
    let type_number = (raw >> TYPE_SHIFT) as u8;
    // Reserved bits are stored inverted: the error reports the positions whose
    // (inverted) value means "set".
    let kind = match SoftwareKind::from_type_and_offset(profile, type_number, offset) {
        Ok(k) => k,
        Err(e) => return Err(e.at_raw_shift(OFFSET_SHIFT)),
    };
    Ok(SoftwareEntry {
        kind,
        side: SideBits {
            exclusive: raw & EXCLUSIVE != 0,
            uffd_wp: raw & UFFD_WP != 0,
            soft_dirty: raw & SOFT_DIRTY != 0,
        },
    })
}

//! What every entry format provides: decode, encode, geometry and portable attributes.

use core::fmt::Debug;
use core::hash::Hash;

use crate::entry::Entry;
use crate::error::{DecodeError, EncodeError};
use crate::level::Level;
use crate::profile::Profile;

/// The architectures this crate encodes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (4-level or 5-level paging).
    X86_64,
    /// aarch64, VMSAv8-64 stage 1.
    Aarch64,
}

/// The shape of a translation regime, as constants, so that other granules and address
/// widths can be added without changing the API.
pub trait Geometry {
    /// log2 of the base page (granule) size: 12 for 4 KiB.
    const GRANULE_SHIFT: u32;
    /// Index bits resolved per level: 9 for a 4 KiB granule.
    const BITS_PER_LEVEL: u32;
    /// Entries per table.
    const ENTRIES_PER_TABLE: usize = 1 << Self::BITS_PER_LEVEL;
    /// Width of the largest output (physical) address the format encodes.
    const OUTPUT_ADDRESS_BITS: u32;
    /// The highest level that may hold a leaf (level 3, 1 GiB blocks, for a 4 KiB granule).
    const LARGEST_LEAF_LEVEL: Level;
    /// The highest level a table walk may start at.
    const MAX_ROOT_LEVEL: Level;
}

/// A memory type a leaf can map with, portable across architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemoryType {
    /// Normal cacheable memory (write-back).
    #[default]
    WriteBack,
    /// Normal memory, write-combining / non-cacheable.
    WriteCombining,
    /// Strongly uncached (x86_64 UC, aarch64 Device-nGnRnE).
    Uncached,
    /// Device memory with early write acknowledgement (x86_64 UC-, aarch64 Device-nGnRE).
    Device,
    /// Normal memory, write-through (x86_64 WT, aarch64 Normal write-through).
    WriteThrough,
    /// Write-protected: reads cached, writes go to memory and invalidate (x86_64 WP).
    WriteProtect,
    /// Normal write-back memory carrying allocation tags (aarch64 Tagged Normal, MTE).
    Tagged,
}

/// The architecture-neutral meaning of a leaf's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PageProperty {
    /// Writes are allowed.
    pub writable: bool,
    /// User mode (ring 3 / EL0) may access the page.
    pub user: bool,
    /// Instructions may be fetched (by the privilege level that may access it).
    pub executable: bool,
    /// The translation is global (not tagged with an address-space identifier).
    pub global: bool,
    /// Accessed (young): set by hardware or by the access-flag fault handler.
    pub accessed: bool,
    /// Dirty: written since the bit was last cleared.
    pub dirty: bool,
    /// The memory type.
    pub memory: MemoryType,
}

/// Leaf attributes of one architecture, convertible to and from [`PageProperty`].
///
/// The memory type is an index into a table the kernel programs (x86_64 PAT, aarch64
/// MAIR); the `_in` methods read it through a [`Profile`]'s table, the plain ones through
/// [`Profile::DEVPRIV`]'s. `from_property_in(p, profile).unwrap().property_in(profile) ==
/// p` for every `p` the format can express; architecture-only bits (protection keys,
/// shareability, software bits) are kept by the concrete type.
pub trait LeafAttributes: Copy + Debug + Eq + Hash + Default {
    /// The architecture-neutral meaning, with the memory type read through `profile`.
    fn property_in(&self, profile: &Profile) -> PageProperty;

    /// Attributes with this meaning and every architecture-only bit at its default, or
    /// `None` if no index of `profile`'s table has the memory type.
    fn from_property_in(property: PageProperty, profile: &Profile) -> Option<Self>;

    /// The architecture-neutral meaning under [`Profile::DEVPRIV`].
    #[inline]
    fn property(&self) -> PageProperty {
        self.property_in(&Profile::DEVPRIV)
    }

    /// Attributes with this meaning under [`Profile::DEVPRIV`]. A memory type devpriv's
    /// table lacks takes the nearest one it has (each format documents which).
    fn from_property(property: PageProperty) -> Self;
}

/// What [`PteFormat::decode_lenient`] saw in a raw entry: always an entry, and what a
/// strict decode would have refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenientEntry<F: PteFormat> {
    /// The entry, read with the unexpected bits taken out.
    pub entry: Entry<F>,
    /// Bits the strict decode refused (reserved bits, an over-wide offset), in their raw
    /// positions; the entry was read as if they held
    /// their expected value. For an entry no decode can read (a descriptor type the
    /// architecture reserves), every bit of the raw value, and the entry is `Absent`.
    pub unexpected_bits: u64,
    /// What [`PteFormat::decode_in`] returned: `None` when it decoded the same entry.
    pub strict_error: Option<DecodeError>,
}

/// An entry format: how [`Entry`] values are laid out in raw 64-bit entries of one
/// architecture.
///
/// Implementors are zero-sized marker types. Decoding is total: any `u64` at any level
/// either decodes or gives a [`DecodeError`], never a panic.
pub trait PteFormat: Copy + Debug + Eq + Hash + Geometry + 'static {
    /// Attributes of a leaf (page or block) entry.
    type LeafAttributes: LeafAttributes;
    /// Attributes of a table entry (hierarchical limits on the levels below).
    type TableAttributes: Copy + Debug + Eq + Hash + Default;

    /// Which architecture this is.
    const ARCH: Arch;

    /// Decodes the raw entry `raw` found at `level`, software entries in `profile`'s
    /// layout.
    fn decode_in(raw: u64, level: Level, profile: &Profile) -> Result<Entry<Self>, DecodeError>;

    /// Encodes `entry` for `level`, software entries in `profile`'s layout.
    fn encode_in(entry: &Entry<Self>, level: Level, profile: &Profile) -> Result<u64, EncodeError>;

    /// Decodes `raw` at `level` under [`Profile::DEVPRIV`].
    #[inline]
    fn decode(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError> {
        Self::decode_in(raw, level, &Profile::DEVPRIV)
    }

    /// Encodes `entry` for `level` under [`Profile::DEVPRIV`].
    #[inline]
    fn encode(entry: &Entry<Self>, level: Level) -> Result<u64, EncodeError> {
        Self::encode_in(entry, level, &Profile::DEVPRIV)
    }

    /// Decodes `raw` at `level` whatever it holds, for a hypervisor reading a guest:
    /// where [`Self::decode_in`] refuses the entry, the bits it names are taken out
    /// (reserved bits, an over-wide offset) and the rest is read; a software entry above
    /// level 2 is read as a level-1 one; a descriptor type the architecture reserves is
    /// reported as `Absent` with every bit unexpected (the MMU faults on it too).
    fn decode_lenient(raw: u64, level: Level, profile: &Profile) -> LenientEntry<Self> {
        let strict_error = match Self::decode_in(raw, level, profile) {
            Ok(entry) => {
                return LenientEntry {
                    entry,
                    unexpected_bits: 0,
                    strict_error: None,
                };
            }
            Err(e) => e,
        };
        let mut value = raw;
        let mut unexpected = 0;
        let mut read_at = level;
        let mut error = strict_error;
        // Each pass takes out one class of bits; an entry has at most a handful.
        for _ in 0..8 {
            match error {
                DecodeError::ReservedBitsSet { bits } | DecodeError::OffsetTooWide { bits }
                    if bits != 0 =>
                {
                    // The bits are named in their raw positions with the meaning "set";
                    // flipping them gives the expected value (x86_64 stores the offset
                    // inverted, so there a named bit is a raw 0).
                    value ^= bits;
                    unexpected |= bits;
                }
                DecodeError::SoftwareAtLevel(_) if read_at != Level::L1 => read_at = Level::L1,
                _ => break,
            }
            match Self::decode_in(value, read_at, profile) {
                Ok(entry) => {
                    return LenientEntry {
                        entry,
                        unexpected_bits: unexpected,
                        strict_error: Some(strict_error),
                    };
                }
                Err(e) => error = e,
            }
        }
        LenientEntry {
            entry: Entry::Absent,
            unexpected_bits: raw,
            strict_error: Some(strict_error),
        }
    }

    /// Whether the hardware walker treats `raw` at `level` as valid (present). A fast
    /// check that does not decode the rest of the entry.
    fn is_valid(raw: u64, level: Level) -> bool;
}

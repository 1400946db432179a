//! What every entry format provides: decode, encode, geometry and portable attributes.

use core::fmt::Debug;
use core::hash::Hash;

use crate::entry::Entry;
use crate::error::{DecodeError, EncodeError};
use crate::level::Level;

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
/// `from_property(p).property() == p` for every `p` whose memory type the format can
/// express; architecture-only bits (protection keys, shareability, software bits) are
/// kept by the concrete type.
pub trait LeafAttributes: Copy + Debug + Eq + Hash + Default {
    /// The architecture-neutral meaning.
    fn property(&self) -> PageProperty;
    /// Attributes with this meaning and every architecture-only bit at its default.
    fn from_property(property: PageProperty) -> Self;
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

    /// Decodes the raw entry `raw` found at `level`.
    fn decode(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError>;

    /// Encodes `entry` for `level`.
    fn encode(entry: &Entry<Self>, level: Level) -> Result<u64, EncodeError>;

    /// Whether the hardware walker treats `raw` at `level` as valid (present). A fast
    /// check that does not decode the rest of the entry.
    fn is_valid(raw: u64, level: Level) -> bool;
}

//! The x86_64 entry format: 4-level and 5-level (LA57) paging, 4 KiB granule.
//!
//! | level | Intel name | present entry with PS clear | with PS set        |
//! |-------|------------|-----------------------------|--------------------|
//! | 5     | PML5E      | table                       | invalid            |
//! | 4     | PML4E      | table                       | invalid            |
//! | 3     | PDPTE      | table                       | 1 GiB leaf         |
//! | 2     | PDE        | table                       | 2 MiB leaf         |
//! | 1     | PTE        | 4 KiB leaf (bit 7 is PAT)   | (4 KiB leaf, PAT)  |
//!
//! Non-present entries are absent (all zero, or only the A/D bits the hardware may set),
//! PROT_NONE mappings (bit 8 set: [`Entry::ProtNone`], with the frame number stored
//! inverted as Linux does since the L1TF mitigation), or, at levels 1 and 2, software
//! entries in Linux's layout (see [`software`]).
//! Physical addresses have up to 52 bits (frame numbers below 2^40).
//!
//! The raw layouts are public bitfield types ([`PageTableEntryBits`], [`HugeLeafBits`],
//! [`TableEntryBits`], [`software::SwapEntryBits`]); [`X86_64`] implements
//! [`PteFormat`] on top of them.

#[cfg(feature = "x86_64")]
pub mod conv;
mod hardware;
pub mod software;

pub use hardware::{
    ADDRESS_MASK, HugeLeafBits, PAGE_SIZE, PAT_4K, PAT_HUGE, PAT_MSR_VALUE, PFN_BITS,
    PageAttributes, PageTableEntryBits, TableAttributes, TableEntryBits,
};

use hardware::{RESERVED_1G, RESERVED_2M};

use crate::Entry;
use crate::classify::{CLASSES, Classified, EntryClass, TableClasses};
use crate::error::{DecodeError, EncodeError};
use crate::format::{Arch, Geometry, PteFormat};
use crate::frame::Pfn;
use crate::level::{Level, PageSize};
use crate::profile::Profile;

/// The x86_64 format marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct X86_64;

impl Geometry for X86_64 {
    const GRANULE_SHIFT: u32 = 12;
    const BITS_PER_LEVEL: u32 = 9;
    const OUTPUT_ADDRESS_BITS: u32 = 52;
    const LARGEST_LEAF_LEVEL: Level = Level::L3;
    const MAX_ROOT_LEVEL: Level = Level::L5;
}

const PFN_LIMIT: u64 = 1 << PFN_BITS;

impl X86_64 {
    /// The frame of the next table if `raw` at `level` is a present table entry; a fast
    /// path for table walkers that does not check reserved bits.
    #[inline]
    pub const fn table_pfn(raw: u64, level: Level) -> Option<Pfn> {
        let is_table =
            raw & hardware::PRESENT != 0 && raw & PAGE_SIZE == 0 && !matches!(level, Level::L1);
        if is_table {
            Some(Pfn::new((raw & ADDRESS_MASK) >> 12))
        } else {
            None
        }
    }

    /// Whether `raw` at `level` is a present leaf (a 4 KiB page at level 1, or PS set at
    /// level 2 or 3).
    #[inline]
    pub const fn is_leaf(raw: u64, level: Level) -> bool {
        raw & hardware::PRESENT != 0
            && match level {
                Level::L1 => true,
                Level::L2 | Level::L3 => raw & PAGE_SIZE != 0,
                Level::L4 | Level::L5 => false,
            }
    }

    /// The frame and attributes of `raw` at `level` if it is a present leaf whose
    /// reserved bits are clear: exactly the `pfn` and `attrs` of the
    /// [`Entry::Leaf`] that [`PteFormat::decode`] returns, and `None` wherever `decode`
    /// returns anything else. Branch-free at level 1, so a loop over many entries can
    /// be vectorized.
    #[inline]
    pub const fn leaf(raw: u64, level: Level) -> Option<(Pfn, PageAttributes)> {
        let (attrs, pfn, ok) = match level {
            Level::L1 => (
                PageAttributes::from_4k_leaf(raw),
                (raw & ADDRESS_MASK) >> 12,
                raw & hardware::PRESENT != 0,
            ),
            Level::L2 | Level::L3 => {
                let reserved = if matches!(level, Level::L2) {
                    RESERVED_2M
                } else {
                    RESERVED_1G
                };
                (
                    PageAttributes::from_huge_leaf(raw),
                    (raw & ADDRESS_MASK & !PAT_HUGE) >> 12,
                    raw & (hardware::PRESENT | PAGE_SIZE) == hardware::PRESENT | PAGE_SIZE
                        && raw & reserved == 0,
                )
            }
            Level::L4 | Level::L5 => return None,
        };
        if ok {
            Some((Pfn::new(pfn), attrs))
        } else {
            None
        }
    }

    /// The size of the huge leaf `raw` at level 2 or 3 (PS set), or the reserved address
    /// bits it sets.
    #[inline]
    const fn huge_leaf_size(raw: u64, level: Level) -> Result<PageSize, DecodeError> {
        let (size, reserved) = if matches!(level, Level::L2) {
            (PageSize::Size2MiB, RESERVED_2M)
        } else {
            (PageSize::Size1GiB, RESERVED_1G)
        };
        if raw & reserved != 0 {
            Err(DecodeError::ReservedBitsSet {
                bits: raw & reserved,
            })
        } else {
            Ok(size)
        }
    }

    /// Decodes a present entry.
    #[inline]
    const fn decode_present(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError> {
        let table = Entry::Table {
            next: Pfn::new((raw & ADDRESS_MASK) >> 12),
            attrs: TableAttributes::from_table(raw),
        };
        match level {
            Level::L1 => Ok(Entry::Leaf {
                pfn: Pfn::new((raw & ADDRESS_MASK) >> 12),
                size: PageSize::Size4KiB,
                attrs: PageAttributes::from_4k_leaf(raw),
            }),
            Level::L2 | Level::L3 => {
                if raw & PAGE_SIZE == 0 {
                    return Ok(table);
                }
                let size = match Self::huge_leaf_size(raw, level) {
                    Ok(size) => size,
                    Err(e) => return Err(e),
                };
                Ok(Entry::Leaf {
                    pfn: Pfn::new((raw & ADDRESS_MASK & !PAT_HUGE) >> 12),
                    size,
                    attrs: PageAttributes::from_huge_leaf(raw),
                })
            }
            Level::L4 | Level::L5 => {
                if raw & PAGE_SIZE != 0 {
                    Err(DecodeError::InvalidDescriptor)
                } else {
                    Ok(table)
                }
            }
        }
    }

    /// The address bits of a leaf of `size` (bits 12..51, 21..51 or 30..51).
    #[inline]
    const fn leaf_address_mask(size: PageSize) -> u64 {
        ADDRESS_MASK & !(size.bytes() - 1)
    }

    /// Decodes a PROT_NONE entry: P clear, `_PAGE_PROTNONE` (bit 8) set, the frame number
    /// inverted (Linux `protnone_mask`), PS set at levels 2 and 3.
    #[inline]
    const fn decode_prot_none(raw: u64, level: Level) -> Result<Entry<Self>, DecodeError> {
        let (size, attrs) = match level {
            Level::L1 => (PageSize::Size4KiB, PageAttributes::from_4k_leaf(raw)),
            Level::L2 | Level::L3 => {
                if raw & PAGE_SIZE == 0 {
                    return Err(DecodeError::InvalidDescriptor);
                }
                let size = match Self::huge_leaf_size(raw, level) {
                    Ok(size) => size,
                    Err(e) => return Err(e),
                };
                (size, PageAttributes::from_huge_leaf(raw))
            }
            Level::L4 | Level::L5 => return Err(DecodeError::InvalidDescriptor),
        };
        Ok(Entry::ProtNone {
            pfn: Pfn::new((!raw & Self::leaf_address_mask(size)) >> 12),
            size,
            // Bit 8 is the PROT_NONE marker here, not G.
            attrs: attrs.with_global(false),
        })
    }

    /// Encodes a PROT_NONE entry (the inverse of [`Self::decode_prot_none`]).
    #[inline]
    const fn encode_prot_none(
        pfn: Pfn,
        size: PageSize,
        attrs: PageAttributes,
        level: Level,
    ) -> Result<u64, EncodeError> {
        if attrs.global() {
            // Bit 8 marks the entry PROT_NONE; it cannot also say global.
            return Err(EncodeError::UnsupportedAttribute);
        }
        let present = match Self::encode_leaf(pfn, size, attrs, level) {
            Ok(raw) => raw,
            Err(e) => return Err(e),
        };
        let mask = Self::leaf_address_mask(size);
        Ok(present & !hardware::PRESENT & !mask | !present & mask | software::PROT_NONE)
    }

    /// Encodes a leaf.
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
        let address = pfn.number() << 12;
        Ok(match size {
            PageSize::Size4KiB => hardware::PRESENT | attrs.leaf_4k_bits() | address,
            PageSize::Size2MiB | PageSize::Size1GiB => {
                hardware::PRESENT | PAGE_SIZE | attrs.huge_leaf_bits() | address
            }
        })
    }

    /// Encodes a table entry.
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
        Ok(hardware::PRESENT | attrs.table_bits() | next.number() << 12)
    }
}

impl PteFormat for X86_64 {
    type LeafAttributes = PageAttributes;
    type TableAttributes = TableAttributes;
    const ARCH: Arch = Arch::X86_64;

    /// Decodes `raw` at `level`.
    ///
    /// Not every raw value re-encodes to itself: the A and D bits of a software entry
    /// are dropped (hardware may set them, see [`software`]), so such a `raw`
    /// re-encodes to `raw & !0x60`; and an invalidated huge entry (P clear, PS set,
    /// bit 8 clear: Linux's `pmdp_invalidate` during a split or protection change)
    /// decodes as [`Entry::ProtNone`] and re-encodes with bit 8 set. Every other decoded
    /// value re-encodes exactly.
    #[inline]
    fn decode_in(raw: u64, level: Level, profile: &Profile) -> Result<Entry<Self>, DecodeError> {
        if raw & hardware::PRESENT != 0 {
            Self::decode_present(raw, level)
        } else if raw & !software::ERRATUM_BITS == 0 {
            Ok(Entry::Absent)
        } else if raw & software::PROT_NONE != 0
            || (raw & PAGE_SIZE != 0 && matches!(level, Level::L2 | Level::L3))
        {
            // PROT_NONE, or a huge entry being invalidated (Linux `pmd_mkinvalid`
            // clears P and keeps PS, and `pmd_present` still says present).
            Self::decode_prot_none(raw, level)
        } else {
            match software::decode(raw, level, profile) {
                Ok(sw) => Ok(Entry::Software(sw)),
                Err(e) => Err(e),
            }
        }
    }

    #[inline]
    fn encode_in(entry: &Entry<Self>, level: Level, profile: &Profile) -> Result<u64, EncodeError> {
        match *entry {
            Entry::Absent => Ok(0),
            Entry::Table { next, attrs } => Self::encode_table(next, attrs, level),
            Entry::Leaf { pfn, size, attrs } => Self::encode_leaf(pfn, size, attrs, level),
            Entry::Software(ref sw) => software::encode(sw, level, profile),
            Entry::ProtNone { pfn, size, attrs } => Self::encode_prot_none(pfn, size, attrs, level),
        }
    }

    #[inline]
    fn is_valid(raw: u64, _level: Level) -> bool {
        raw & hardware::PRESENT != 0
    }
}

impl X86_64 {
    /// Classifies `raw` at `level` under `profile` without building the typed
    /// [`Entry`]: the class [`PteFormat::decode_in`] would give (with the same
    /// validation), the frame or type number and the attribute bits (see
    /// [`Classified`]). At level 1 a present leaf costs one test and two masks; the
    /// other classes take one or two tests more (a software entry's validation is a
    /// table lookup and a select, without a branch).
    #[inline]
    pub fn classify(raw: u64, level: Level, profile: &Profile) -> Classified {
        match level {
            Level::L1 => Self::classify_l1(raw, profile),
            _ => Self::classify_by_decoding(raw, level, profile),
        }
    }

    /// Classifies every entry of `table` (at most 512, the entries of one table at
    /// `level`) into one bitmap per class. Entries beyond 512 are ignored.
    pub fn classify_table(table: &[u64], level: Level, profile: &Profile) -> TableClasses {
        if level != Level::L1 {
            return TableClasses::of_each(table, |raw| Self::classify(raw, level, profile).class);
        }
        let mut classes = TableClasses::EMPTY;
        let table = &table[..table.len().min(512)];
        for (word, chunk) in table.chunks(64).enumerate() {
            // One bitmap word per class.
            let mut bits = [0u64; 6];
            for (i, &raw) in chunk.iter().enumerate() {
                let class = Self::classify_l1(raw, profile).class as usize;
                bits[class] |= 1 << i;
            }
            for (class, &b) in CLASSES.iter().zip(&bits) {
                classes.set_word(word, *class, b);
            }
        }
        classes
    }

    /// [`Self::classify`] at level 1: a present leaf costs one test and two masks.
    #[inline(always)]
    fn classify_l1(raw: u64, profile: &Profile) -> Classified {
        // Present first: a leaf costs one test. (Absent first mispredicts less on a
        // random mix of kinds, but costs a second test per leaf; tables hold runs of one
        // kind, where the single test wins. docs/benchmarks.md has both measured.)
        if raw & hardware::PRESENT != 0 {
            return Classified {
                class: EntryClass::Leaf,
                number: (raw & ADDRESS_MASK) >> 12,
                bits: raw & hardware::LEAF_ATTR_MASK,
            };
        }
        if raw & !software::ERRATUM_BITS == 0 {
            return Classified::ABSENT;
        }
        Self::classify_l1_not_present(raw, profile)
    }

    /// [`Self::classify_l1`] of a non-present, non-absent entry: PROT_NONE, software or
    /// invalid. PROT_NONE entries come in runs (an mprotect or a NUMA scan marks a
    /// range) and invalid ones should not exist, so both branches predict well.
    #[inline(always)]
    fn classify_l1_not_present(raw: u64, profile: &Profile) -> Classified {
        if raw & software::PROT_NONE != 0 {
            // The frame is stored inverted (L1TF); bit 8 is the marker, not G.
            return Classified {
                class: EntryClass::ProtNone,
                number: (!raw & ADDRESS_MASK) >> 12,
                bits: raw & hardware::LEAF_ATTR_MASK & !software::PROT_NONE,
            };
        }
        let type_number = raw >> software::TYPE_SHIFT;
        // The offset is stored inverted: a bit its type does not define must read 1.
        let must_be_set = profile.x86_64_inverted_offset_must_be_set(type_number as u8);
        if (!raw & must_be_set) | (raw & software::MUST_BE_ZERO) != 0 {
            return Classified::INVALID;
        }
        Classified {
            class: EntryClass::Software,
            number: type_number,
            bits: raw,
        }
    }

    /// [`Self::classify`] through the full decode (levels other than 1).
    fn classify_by_decoding(raw: u64, level: Level, profile: &Profile) -> Classified {
        Classified::of_decoded(
            Self::decode_in(raw, level, profile),
            raw >> software::TYPE_SHIFT,
            raw,
            PageAttributes::into_bits,
            TableAttributes::into_bits,
        )
    }
}

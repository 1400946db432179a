//! x86_64 present entries: the hardware layouts and the attribute types.
//!
//! Bit 7 means different things at different levels: in a 4 KiB leaf (level 1) it is
//! PAT, in a level-2/3 entry it is PS ("this is a 2 MiB / 1 GiB leaf"), and there PAT
//! moves to bit 12, the lowest address bit a huge leaf does not need. Each layout has
//! its own type so that no code reads one as the other.

use bitfield_struct::bitfield;

use crate::format::{LeafAttributes, MemoryType, PageProperty};
use crate::profile::{AttributeTable, Profile};

/// Bits 12..51: the physical address of a 4 KiB leaf or of a table.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bit 0: present.
pub const PRESENT: u64 = 1;
/// Bit 7 at levels 2 and 3: this entry is a 2 MiB / 1 GiB leaf (PS).
pub const PAGE_SIZE: u64 = 1 << 7;
/// Bit 7 of a 4 KiB leaf: the high bit of the PAT index.
pub const PAT_4K: u64 = 1 << 7;
/// Bit 12 of a 2 MiB / 1 GiB leaf: the high bit of the PAT index.
pub const PAT_HUGE: u64 = 1 << 12;
/// Widest frame number an x86_64 entry holds (52-bit physical addresses).
pub const PFN_BITS: u32 = 40;

/// Attribute bits of a leaf, in their 4 KiB-leaf positions: everything but P and the
/// address.
pub(crate) const LEAF_ATTR_MASK: u64 = !ADDRESS_MASK & !PRESENT;
/// Attribute bits of a table entry: everything but P, PS and the address.
pub(crate) const TABLE_ATTR_MASK: u64 = !ADDRESS_MASK & !PRESENT & !PAGE_SIZE;
/// Attribute bits of a huge leaf that sit where they sit in a 4 KiB leaf.
const HUGE_SAME_POSITION_MASK: u64 = LEAF_ATTR_MASK & !PAT_4K;
/// Address bits a 2 MiB leaf must leave clear (13..20; bit 12 is PAT).
pub(crate) const RESERVED_2M: u64 = 0x001f_e000;
/// Address bits a 1 GiB leaf must leave clear (13..29; bit 12 is PAT).
pub(crate) const RESERVED_1G: u64 = 0x3fff_e000;

/// The values Linux programs into the IA32_PAT MSR, one byte per PAT index 0..7:
/// WB, WC, UC-, UC, WB, WP, UC-, WT. [`Profile::DEVPRIV`] and the Linux presets assume
/// this layout; a kernel using this crate writes it to MSR 0x277.
///
/// Byte `i` is the IA32_PAT encoding of index `i` (06 WB, 01 WC, 07 UC-, 00 UC,
/// 05 WP, 04 WT), so the value reads 0x04_07_05_06_00_07_01_06.
pub const PAT_MSR_VALUE: u64 = crate::profile::LINUX_PAT_MSR_VALUE;

/// A 4 KiB leaf (level 1) as the MMU reads it.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PageTableEntryBits {
    /// P: the entry is valid.
    pub present: bool,
    /// R/W: writes allowed.
    pub writable: bool,
    /// U/S: user mode may access.
    pub user: bool,
    /// PWT: bit 0 of the PAT index.
    pub write_through: bool,
    /// PCD: bit 1 of the PAT index.
    pub cache_disable: bool,
    /// A: accessed.
    pub accessed: bool,
    /// D: dirty.
    pub dirty: bool,
    /// PAT: bit 2 of the PAT index.
    pub pat: bool,
    /// G: global.
    pub global: bool,
    /// Bits 9..11, ignored by the MMU (free for software).
    #[bits(3)]
    pub available_low: u8,
    /// Bits 12..51: the frame number.
    #[bits(40)]
    pub frame: u64,
    /// Bits 52..58, ignored by the MMU (free for software).
    #[bits(7)]
    pub available_high: u8,
    /// Bits 59..62: the protection key (with CR4.PKE / PKS).
    #[bits(4)]
    pub protection_key: u8,
    /// XD: instruction fetches fault (with EFER.NXE).
    pub no_execute: bool,
}

/// A 2 MiB (level 2) or 1 GiB (level 3) leaf as the MMU reads it (PS set).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct HugeLeafBits {
    /// P: the entry is valid.
    pub present: bool,
    /// R/W: writes allowed.
    pub writable: bool,
    /// U/S: user mode may access.
    pub user: bool,
    /// PWT: bit 0 of the PAT index.
    pub write_through: bool,
    /// PCD: bit 1 of the PAT index.
    pub cache_disable: bool,
    /// A: accessed.
    pub accessed: bool,
    /// D: dirty.
    pub dirty: bool,
    /// PS: set, this is a leaf.
    pub page_size: bool,
    /// G: global.
    pub global: bool,
    /// Bits 9..11, ignored by the MMU.
    #[bits(3)]
    pub available_low: u8,
    /// PAT (bit 12): bit 2 of the PAT index.
    pub pat: bool,
    /// Bits 13..51 of the physical address (the address shifted right by 13). Bits
    /// 13..20 (2 MiB) or 13..29 (1 GiB) of the address are reserved and must be 0.
    #[bits(39)]
    pub address_above_12: u64,
    /// Bits 52..58, ignored by the MMU.
    #[bits(7)]
    pub available_high: u8,
    /// Bits 59..62: the protection key.
    #[bits(4)]
    pub protection_key: u8,
    /// XD: instruction fetches fault.
    pub no_execute: bool,
}

impl HugeLeafBits {
    /// The frame number of the first 4 KiB frame (reserved bits included as they are).
    pub const fn frame(self) -> u64 {
        self.address_above_12() << 1
    }
}

/// A table entry at levels 2..5 (PS clear) as the MMU reads it.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct TableEntryBits {
    /// P: the entry is valid.
    pub present: bool,
    /// R/W: writes allowed below (if clear, the whole subtree is read-only).
    pub writable: bool,
    /// U/S: user mode may access below.
    pub user: bool,
    /// PWT for the access to the next table.
    pub write_through: bool,
    /// PCD for the access to the next table.
    pub cache_disable: bool,
    /// A: the MMU used this entry.
    pub accessed: bool,
    /// Bit 6, ignored in table entries (Linux sets it: `_KERNPG_TABLE` includes D).
    pub dirty_ignored: bool,
    /// PS: must be clear in a table entry.
    pub page_size: bool,
    /// Bit 8, ignored in table entries.
    pub global_ignored: bool,
    /// Bits 9..11, ignored by the MMU.
    #[bits(3)]
    pub available_low: u8,
    /// Bits 12..51: the frame of the next table.
    #[bits(40)]
    pub frame: u64,
    /// Bits 52..62, ignored by the MMU in table entries.
    #[bits(11)]
    pub available_high: u16,
    /// XD: instruction fetches fault anywhere below.
    pub no_execute: bool,
}

/// The attributes of a leaf, kept in the bit positions of a 4 KiB leaf (PAT at bit 7)
/// whatever the leaf's size. The present bit and the address bits are not part of it
/// ([`PteFormat::encode`](crate::PteFormat::encode) ignores whatever they hold).
///
/// `Default` is [`LeafAttributes::from_property`] of the default
/// [`PageProperty`]: read-only, kernel-only, no-execute, not global, write-back.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PageAttributes {
    #[bits(1)]
    __: u8,
    /// R/W: writes allowed.
    pub writable: bool,
    /// U/S: user mode may access.
    pub user: bool,
    /// PWT: bit 0 of the PAT index.
    pub write_through: bool,
    /// PCD: bit 1 of the PAT index.
    pub cache_disable: bool,
    /// A: accessed.
    pub accessed: bool,
    /// D: dirty.
    pub dirty: bool,
    /// PAT: bit 2 of the PAT index (bit 7 of a 4 KiB leaf, bit 12 of a huge leaf).
    pub pat: bool,
    /// G: global.
    pub global: bool,
    /// Bits 9..11, free for software.
    #[bits(3)]
    pub available_low: u8,
    #[bits(40)]
    __: u64,
    /// Bits 52..58, free for software.
    #[bits(7)]
    pub available_high: u8,
    /// Bits 59..62: the protection key.
    #[bits(4)]
    pub protection_key: u8,
    /// XD: instruction fetches fault.
    #[bits(default = true)]
    pub no_execute: bool,
}

impl PageAttributes {
    /// The PAT index (PAT, PCD, PWT) selecting the memory type, 0..=7.
    pub const fn pat_index(self) -> u8 {
        (self.pat() as u8) << 2 | (self.cache_disable() as u8) << 1 | self.write_through() as u8
    }

    /// These attributes with PAT index `index` (its low three bits).
    pub const fn with_pat_index(self, index: u8) -> Self {
        self.with_write_through(index & 1 != 0)
            .with_cache_disable(index & 2 != 0)
            .with_pat(index & 4 != 0)
    }

    /// The memory type of the PAT index under `table`.
    #[inline]
    pub const fn memory_type_in(self, table: &AttributeTable) -> MemoryType {
        table.memory_type(self.pat_index())
    }

    /// The memory type of the PAT index under [`PAT_MSR_VALUE`] (0/4 WB, 1 WC, 2/6 UC-
    /// as [`MemoryType::Device`], 3 UC, 5 WP, 7 WT).
    #[inline]
    pub const fn memory_type(self) -> MemoryType {
        self.memory_type_in(Profile::DEVPRIV.pat())
    }

    /// The PAT index Linux uses for `memory` (0 WB, 1 WC, 2 UC-, 3 UC, 5 WP, 7 WT;
    /// tagged memory, which x86_64 lacks, takes WB).
    pub const fn pat_index_of(memory: MemoryType) -> u8 {
        let nearest = match memory {
            MemoryType::Tagged => MemoryType::WriteBack,
            other => other,
        };
        match Profile::DEVPRIV.pat().index_of(nearest) {
            Some(i) => i,
            None => unreachable!(),
        }
    }

    fn with_property(p: PageProperty, pat_index: u8) -> Self {
        Self::from_bits(0)
            .with_writable(p.writable)
            .with_user(p.user)
            .with_no_execute(!p.executable)
            .with_global(p.global)
            .with_accessed(p.accessed)
            .with_dirty(p.dirty)
            .with_pat_index(pat_index)
    }

    /// The attribute bits as they sit in a 4 KiB leaf.
    #[inline]
    pub(crate) const fn leaf_4k_bits(self) -> u64 {
        self.into_bits() & LEAF_ATTR_MASK
    }

    /// The attribute bits as they sit in a huge leaf: PAT moved from bit 7 to bit 12.
    #[inline]
    pub(crate) const fn huge_leaf_bits(self) -> u64 {
        let bits = self.into_bits();
        bits & HUGE_SAME_POSITION_MASK | (bits & PAT_4K) << 5
    }

    /// The attributes of the 4 KiB leaf `raw`.
    #[inline]
    pub(crate) const fn from_4k_leaf(raw: u64) -> Self {
        Self::from_bits(raw & LEAF_ATTR_MASK)
    }

    /// The attributes of the huge leaf `raw`: PAT moved from bit 12 to bit 7.
    #[inline]
    pub(crate) const fn from_huge_leaf(raw: u64) -> Self {
        Self::from_bits(raw & HUGE_SAME_POSITION_MASK | (raw & PAT_HUGE) >> 5)
    }
}

impl LeafAttributes for PageAttributes {
    fn property_in(&self, profile: &Profile) -> PageProperty {
        PageProperty {
            writable: self.writable(),
            user: self.user(),
            executable: !self.no_execute(),
            global: self.global(),
            accessed: self.accessed(),
            dirty: self.dirty(),
            memory: self.memory_type_in(profile.pat()),
        }
    }

    fn from_property_in(p: PageProperty, profile: &Profile) -> Option<Self> {
        profile
            .pat()
            .index_of(p.memory)
            .map(|i| Self::with_property(p, i))
    }

    fn from_property(p: PageProperty) -> Self {
        Self::with_property(p, Self::pat_index_of(p.memory))
    }
}

/// The attributes of a table entry: limits on everything mapped below it, in their raw
/// positions. The present bit, PS and the address are not part of it.
///
/// `Default` puts no limits: writable and user set, everything else clear.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct TableAttributes {
    #[bits(1)]
    __: u8,
    /// R/W: writes allowed below.
    #[bits(default = true)]
    pub writable: bool,
    /// U/S: user mode may access below.
    #[bits(default = true)]
    pub user: bool,
    /// PWT for the access to the next table.
    pub write_through: bool,
    /// PCD for the access to the next table.
    pub cache_disable: bool,
    /// A: the MMU used this entry.
    pub accessed: bool,
    /// Bit 6, ignored by the MMU (Linux sets it in kernel table entries).
    pub dirty_ignored: bool,
    #[bits(1)]
    __: u8,
    /// Bit 8, ignored by the MMU in table entries.
    pub global_ignored: bool,
    /// Bits 9..11, free for software.
    #[bits(3)]
    pub available_low: u8,
    #[bits(40)]
    __: u64,
    /// Bits 52..62, free for software.
    #[bits(11)]
    pub available_high: u16,
    /// XD: instruction fetches fault anywhere below.
    pub no_execute: bool,
}

impl TableAttributes {
    /// The attribute bits as they sit in a table entry.
    #[inline]
    pub(crate) const fn table_bits(self) -> u64 {
        self.into_bits() & TABLE_ATTR_MASK
    }

    /// The attributes of the table entry `raw`.
    #[inline]
    pub(crate) const fn from_table(raw: u64) -> Self {
        Self::from_bits(raw & TABLE_ATTR_MASK)
    }
}

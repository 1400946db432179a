//! Page-table levels and page sizes.
//!
//! Levels are numbered from the leaf upwards on both architectures: level 1 holds 4 KiB
//! pages, level 2 holds 2 MiB blocks or tables, level 3 holds 1 GiB blocks or tables,
//! level 4 is the x86_64 PML4 / aarch64 level 0 table, level 5 the x86_64 LA57 PML5.
//! (The Arm architecture numbers its levels the other way round: Arm level 3 is our
//! level 1.) The sizes here are those of the 4 KiB granule.

/// A page-table level, numbered from the leaf upwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// 4 KiB pages (x86_64 PT, aarch64 level 3).
    L1 = 1,
    /// 2 MiB blocks or level-1 tables (x86_64 PD, aarch64 level 2).
    L2 = 2,
    /// 1 GiB blocks or level-2 tables (x86_64 PDPT, aarch64 level 1).
    L3 = 3,
    /// Level-3 tables (x86_64 PML4, aarch64 level 0).
    L4 = 4,
    /// Level-4 tables (x86_64 PML5, with LA57).
    L5 = 5,
}

impl Level {
    /// The level's number, 1 to 5.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The level with number `n`, or `None` outside 1..=5.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::L1),
            2 => Some(Self::L2),
            3 => Some(Self::L3),
            4 => Some(Self::L4),
            5 => Some(Self::L5),
            _ => None,
        }
    }

    /// The level below this one, or `None` at level 1.
    pub const fn next_lower(self) -> Option<Self> {
        Self::from_number(self.number() - 1)
    }

    /// The level above this one, or `None` at level 5.
    pub const fn next_higher(self) -> Option<Self> {
        Self::from_number(self.number() + 1)
    }

    /// log2 of the bytes one entry at this level covers (12, 21, 30, 39, 48).
    pub const fn shift(self) -> u32 {
        12 + 9 * (self.number() as u32 - 1)
    }

    /// Bytes one entry at this level covers.
    pub const fn entry_span(self) -> u64 {
        1 << self.shift()
    }

    /// The index (0..512) of the entry for virtual address `va` in a table at this level.
    pub const fn table_index(self, va: u64) -> usize {
        ((va >> self.shift()) & 0x1ff) as usize
    }

    /// The leaf size an entry at this level maps, or `None` where no leaf is allowed.
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Self::L1 => Some(PageSize::Size4KiB),
            Self::L2 => Some(PageSize::Size2MiB),
            Self::L3 => Some(PageSize::Size1GiB),
            Self::L4 | Self::L5 => None,
        }
    }
}

/// The size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// A 4 KiB page, mapped at level 1.
    Size4KiB,
    /// A 2 MiB block (huge page, PMD level), mapped at level 2.
    Size2MiB,
    /// A 1 GiB block (giant page, PUD level), mapped at level 3.
    Size1GiB,
}

impl PageSize {
    /// log2 of the size in bytes (12, 21, 30).
    pub const fn shift(self) -> u32 {
        self.level().shift()
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The allocation order: log2 of the number of 4 KiB pages (0, 9, 18).
    pub const fn order(self) -> u32 {
        self.shift() - 12
    }

    /// The number of 4 KiB frames the size spans.
    pub const fn frames(self) -> u64 {
        1 << self.order()
    }

    /// The level a leaf of this size lives at.
    pub const fn level(self) -> Level {
        match self {
            Self::Size4KiB => Level::L1,
            Self::Size2MiB => Level::L2,
            Self::Size1GiB => Level::L3,
        }
    }
}

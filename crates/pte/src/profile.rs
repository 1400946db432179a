//! Profiles: the kernel-dependent parts of the software-entry layout, as a value.
//!
//! Linux does not lay software entries out one fixed way. Three things depend on how the
//! kernel was built:
//!
//! - **The physical-address width** (`MAX_PHYSMEM_BITS`). A migration entry keeps its
//!   young and dirty bits just above the frame number, at offset bits
//!   `MAX_PHYSMEM_BITS - 12` and one above (x86_64 4-level: 34/35; 5-level: 40/41;
//!   arm64 48-bit: 36/37; 52-bit: 40/41).
//! - **The type numbering.** The special types are numbered down from 31; how many there
//!   are depends on `CONFIG_DEVICE_PRIVATE`, `CONFIG_MIGRATION`, `CONFIG_MEMORY_FAILURE`
//!   and PTE markers, and the device-private address-space series adds three more. The
//!   swap devices take every number below them ([`TypeNumbering`]).
//! - **The memory-attribute tables**: what each x86_64 PAT index and each arm64 AttrIndx
//!   means, which is whatever the kernel wrote to IA32_PAT and MAIR_EL1
//!   ([`AttributeTable`]).
//!
//! A [`Profile`] carries all three. Every decoder and encoder takes one
//! ([`PteFormat::decode_in`](crate::PteFormat::decode_in),
//! [`PteFormat::encode_in`](crate::PteFormat::encode_in),
//! [`LeafAttributes::property_in`](crate::LeafAttributes::property_in)); the plain
//! `decode`/`encode` use [`Profile::DEVPRIV`]. Passing a `const` profile costs nothing:
//! the decoders are `#[inline]` and fold it away.
//!
//! ```
//! use devpriv_pte::arch::aarch64::Aarch64;
//! use devpriv_pte::{Entry, Level, MemoryType, Profile, PteFormat, LeafAttributes};
//!
//! // A Linux arm64 user page: AttrIndx 0, which Linux's MAIR_EL1 makes normal write-back.
//! let raw = 0x00e8_0000_4000_0f43;
//! let Ok(Entry::Leaf { attrs, .. }) = Aarch64::decode_in(raw, Level::L1, &Profile::LINUX_ARM64_48BIT)
//! else {
//!     panic!()
//! };
//! assert_eq!(attrs.property_in(&Profile::LINUX_ARM64_48BIT).memory, MemoryType::WriteBack);
//! ```

use crate::format::MemoryType;
use crate::software::{DeviceAccess, MigrationAccess};

/// What a 5-bit software-entry type number means under a [`TypeNumbering`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeMeaning {
    /// A swap device.
    Swap,
    /// A hardware-poisoned frame (Linux `SWP_HWPOISON`).
    HwPoison,
    /// Migration of a system-memory page (Linux `SWP_MIGRATION_*`).
    Migration(MigrationAccess),
    /// Migration of a device-private page (the series' `SWP_MIGRATION_DEVICE_*`).
    DeviceMigration(MigrationAccess),
    /// A device-private page (Linux `SWP_DEVICE_WRITE` / `SWP_DEVICE_READ`).
    DevicePrivate(DeviceAccess),
    /// Device-exclusive access (Linux `SWP_DEVICE_EXCLUSIVE`).
    DeviceExclusive,
    /// A PTE marker (Linux `SWP_PTE_MARKER`).
    Marker,
}

impl TypeMeaning {
    /// The kebab-case name of the kind (`swap`, `migration-read`, ...,
    /// `device-private-write`, `marker`), as [`SoftwareKind::name`](crate::SoftwareKind::name)
    /// gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Swap => "swap",
            Self::Migration(access) => match access {
                MigrationAccess::Read => "migration-read",
                MigrationAccess::ReadExclusive => "migration-read-exclusive",
                MigrationAccess::Write => "migration-write",
            },
            Self::DeviceMigration(access) => match access {
                MigrationAccess::Read => "device-private-migration-read",
                MigrationAccess::ReadExclusive => "device-private-migration-read-exclusive",
                MigrationAccess::Write => "device-private-migration-write",
            },
            Self::DevicePrivate(access) => match access {
                DeviceAccess::Read => "device-private-read",
                DeviceAccess::Write => "device-private-write",
            },
            Self::DeviceExclusive => "device-exclusive",
            Self::HwPoison => "hw-poison",
            Self::Marker => "marker",
        }
    }
}

/// The kernel options that decide which special types a mainline kernel numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MainlineOptions {
    /// `CONFIG_DEVICE_PRIVATE`: device-private write/read and device-exclusive (3 types).
    pub device_private: bool,
    /// `CONFIG_MIGRATION`: migration read/read-exclusive/write (3 types).
    pub migration: bool,
    /// `CONFIG_MEMORY_FAILURE`: hw-poison (1 type).
    pub memory_failure: bool,
    /// PTE markers (1 type): `CONFIG_PTE_MARKER` where the kernel still has the option,
    /// always on in current kernels.
    pub pte_marker: bool,
}

impl MainlineOptions {
    /// Every option on, as distribution kernels are built.
    pub const ALL: Self = Self {
        device_private: true,
        migration: true,
        memory_failure: true,
        pte_marker: true,
    };
}

/// Which type number each software-entry kind has (Linux's `MAX_SWAPFILES` and the
/// `SWP_*` constants of `include/linux/swap.h`).
///
/// Every one of the 32 numbers means something: the special kinds take the top, the swap
/// devices everything below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TypeNumbering {
    meanings: [TypeMeaning; 32],
    swap_types: u8,
    hwpoison: Option<u8>,
    migration: Option<u8>,
    device: Option<u8>,
    device_migration: Option<u8>,
    marker: Option<u8>,
}

/// Fills `meanings[at..at + n]` with `meaning(i)` for `i` in `0..n`, returns `at + n`.
const fn fill(
    meanings: &mut [TypeMeaning; 32],
    at: u8,
    accesses: &[TypeMeaning],
    enabled: bool,
) -> (Option<u8>, u8) {
    if !enabled {
        return (None, at);
    }
    let mut i = 0;
    while i < accesses.len() {
        meanings[at as usize + i] = accesses[i];
        i += 1;
    }
    (Some(at), at + accesses.len() as u8)
}

const MIGRATIONS: [TypeMeaning; 3] = [
    TypeMeaning::Migration(MigrationAccess::Read),
    TypeMeaning::Migration(MigrationAccess::ReadExclusive),
    TypeMeaning::Migration(MigrationAccess::Write),
];
const DEVICE_MIGRATIONS: [TypeMeaning; 3] = [
    TypeMeaning::DeviceMigration(MigrationAccess::Read),
    TypeMeaning::DeviceMigration(MigrationAccess::ReadExclusive),
    TypeMeaning::DeviceMigration(MigrationAccess::Write),
];
const DEVICE: [TypeMeaning; 3] = [
    TypeMeaning::DevicePrivate(DeviceAccess::Write),
    TypeMeaning::DevicePrivate(DeviceAccess::Read),
    TypeMeaning::DeviceExclusive,
];

impl TypeNumbering {
    /// A mainline kernel built with `options`: from `MAX_SWAPFILES` up, hw-poison,
    /// migration (read, read-exclusive, write), device (write, read, exclusive), marker;
    /// each group only if its option is on. With every option on, swap devices are 0..=23.
    pub const fn mainline(options: MainlineOptions) -> Self {
        Self::build(options, false)
    }

    /// A kernel with the device-private address-space series (not merged): the device
    /// group grows to six (write, read, exclusive, then device-private migration read,
    /// read-exclusive, write), so with every option on swap devices are 0..=20.
    pub const fn device_private_series(options: MainlineOptions) -> Self {
        Self::build(options, true)
    }

    /// devpriv's own numbering (the default): mainline with every option on, except that
    /// the three device-private migration types take the top three swap numbers (21
    /// read, 22 read-exclusive, 23 write), so every mainline special type keeps its
    /// number and swap devices are 0..=20.
    pub const DEVPRIV: Self = {
        let mut t = Self::mainline(MainlineOptions::ALL);
        let (device_migration, _) = fill(&mut t.meanings, 21, &DEVICE_MIGRATIONS, true);
        t.device_migration = device_migration;
        t.swap_types = 21;
        t
    };

    /// Mainline with every option on.
    pub const MAINLINE: Self = Self::mainline(MainlineOptions::ALL);

    /// The series with every option on.
    pub const DEVICE_PRIVATE_SERIES: Self = Self::device_private_series(MainlineOptions::ALL);

    const fn build(options: MainlineOptions, series: bool) -> Self {
        let device_count = if !options.device_private {
            0
        } else if series {
            6
        } else {
            3
        };
        let special = device_count
            + 3 * options.migration as u8
            + options.memory_failure as u8
            + options.pte_marker as u8;
        let swap_types = 32 - special;
        let mut meanings = [TypeMeaning::Swap; 32];
        let at = swap_types;
        let (hwpoison, at) = fill(
            &mut meanings,
            at,
            &[TypeMeaning::HwPoison],
            options.memory_failure,
        );
        let (migration, at) = fill(&mut meanings, at, &MIGRATIONS, options.migration);
        let (device, at) = fill(&mut meanings, at, &DEVICE, options.device_private);
        let (device_migration, at) = fill(
            &mut meanings,
            at,
            &DEVICE_MIGRATIONS,
            options.device_private && series,
        );
        let (marker, _) = fill(
            &mut meanings,
            at,
            &[TypeMeaning::Marker],
            options.pte_marker,
        );
        Self {
            meanings,
            swap_types,
            hwpoison,
            migration,
            device,
            device_migration,
            marker,
        }
    }

    /// What type number `number` means (its low five bits).
    #[inline]
    pub const fn meaning(&self, number: u8) -> TypeMeaning {
        self.meanings[(number & 31) as usize]
    }

    /// The number of swap devices (Linux `MAX_SWAPFILES`): types `0..swap_types()`.
    pub const fn swap_types(&self) -> u8 {
        self.swap_types
    }

    /// The type number of `meaning`, or `None` if this numbering has no such type. For
    /// [`TypeMeaning::Swap`], the first swap type (0).
    #[inline]
    pub const fn number(&self, meaning: TypeMeaning) -> Option<u8> {
        const fn plus(base: Option<u8>, n: u8) -> Option<u8> {
            match base {
                Some(b) => Some(b + n),
                None => None,
            }
        }
        const fn migration(access: MigrationAccess) -> u8 {
            match access {
                MigrationAccess::Read => 0,
                MigrationAccess::ReadExclusive => 1,
                MigrationAccess::Write => 2,
            }
        }
        match meaning {
            TypeMeaning::Swap => Some(0),
            TypeMeaning::HwPoison => self.hwpoison,
            TypeMeaning::Migration(a) => plus(self.migration, migration(a)),
            TypeMeaning::DeviceMigration(a) => plus(self.device_migration, migration(a)),
            TypeMeaning::DevicePrivate(DeviceAccess::Write) => self.device,
            TypeMeaning::DevicePrivate(DeviceAccess::Read) => plus(self.device, 1),
            TypeMeaning::DeviceExclusive => plus(self.device, 2),
            TypeMeaning::Marker => self.marker,
        }
    }
}

/// What each of the eight memory-attribute indices means: the x86_64 PAT index
/// (PAT, PCD, PWT) or the arm64 AttrIndx, as the kernel programmed IA32_PAT or MAIR_EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttributeTable(pub [MemoryType; 8]);

impl AttributeTable {
    /// The table an IA32_PAT MSR value describes (one byte per index: 00 UC, 01 WC,
    /// 04 WT, 05 WP, 06 WB, 07 UC-; the reserved encodings 02 and 03 read as UC).
    pub const fn from_pat_msr(value: u64) -> Self {
        let mut types = [MemoryType::Uncached; 8];
        let mut i = 0;
        while i < 8 {
            types[i] = match (value >> (8 * i)) & 0x7 {
                1 => MemoryType::WriteCombining,
                4 => MemoryType::WriteThrough,
                5 => MemoryType::WriteProtect,
                6 => MemoryType::WriteBack,
                7 => MemoryType::Device,
                _ => MemoryType::Uncached,
            };
            i += 1;
        }
        Self(types)
    }

    /// The table a MAIR_EL1 value describes. Device-nGnRnE (0x00) is
    /// [`MemoryType::Uncached`], the other Device encodings [`MemoryType::Device`];
    /// Tagged Normal (0xf0) is [`MemoryType::Tagged`]; other Normal memory is read from
    /// its inner attribute: write-back, write-through or non-cacheable
    /// ([`MemoryType::WriteCombining`]).
    pub const fn from_mair(value: u64) -> Self {
        let mut types = [MemoryType::Uncached; 8];
        let mut i = 0;
        while i < 8 {
            let attr = (value >> (8 * i)) as u8;
            let inner = attr & 0xf;
            types[i] = if attr == 0 {
                MemoryType::Uncached
            } else if attr & 0xf0 == 0 {
                MemoryType::Device
            } else if attr == 0xf0 {
                MemoryType::Tagged
            } else if inner == 0x4 {
                MemoryType::WriteCombining
            } else if inner & 0xc == 0x4 || inner & 0xc == 0xc {
                MemoryType::WriteBack
            } else {
                // 0b00RW (R/W not both 0) and 0b10RW: write-through.
                MemoryType::WriteThrough
            };
            i += 1;
        }
        Self(types)
    }

    /// The memory type of index `index` (its low three bits).
    #[inline]
    pub const fn memory_type(&self, index: u8) -> MemoryType {
        self.0[(index & 7) as usize]
    }

    /// The first index with memory type `memory`, or `None` if no index has it.
    pub const fn index_of(&self, memory: MemoryType) -> Option<u8> {
        let mut i = 0;
        while i < 8 {
            if self.0[i] as u8 == memory as u8 {
                return Some(i as u8);
            }
            i += 1;
        }
        None
    }
}

/// IA32_PAT as Linux programs it (and devpriv's kernels too): WB, WC, UC-, UC, WB, WP,
/// UC-, WT.
pub const LINUX_PAT_MSR_VALUE: u64 = 0x0407_0506_0007_0106;

/// MAIR_EL1 as Linux programs it on arm64: 0 Normal write-back (0xff), 1 Tagged Normal
/// (0xf0), 2 Normal non-cacheable (0x44), 3 Device-nGnRnE (0x00), 4 Device-nGnRE (0x04).
pub const LINUX_MAIR_VALUE: u64 = 0x04_00_44_f0_ff;

/// Why a profile could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileError {
    /// The physical-address width is outside 32..=52 bits.
    PhysicalAddressBits(u32),
}

impl core::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PhysicalAddressBits(bits) => write!(
                f,
                "a physical-address width of {bits} bits is not supported (32 to 52 are)"
            ),
        }
    }
}

impl core::error::Error for ProfileError {}

/// The kernel-dependent layout of software entries and memory types (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    name: &'static str,
    physical_address_bits: u32,
    types: TypeNumbering,
    pat: AttributeTable,
    mair: AttributeTable,
    /// Per type number, the offset bits its kind defines (derived from the width and the
    /// numbering, kept so that validating an entry is one load).
    offset_masks: [u64; 32],
    /// The same, as the raw x86_64 bits that must read 1 (the offset is stored
    /// inverted in bits 9..58).
    x86_64_must_be_set: [u64; 32],
}

/// [`Profile::x86_64_inverted_offset_must_be_set`] for every type, from the offset masks.
const fn x86_64_must_be_set(offset_masks: &[u64; 32]) -> [u64; 32] {
    const FIELD: u64 = ((1 << 50) - 1) << 9;
    let mut raw = [0; 32];
    let mut t = 0;
    while t < 32 {
        raw[t] = (!offset_masks[t] << 9) & FIELD;
        t += 1;
    }
    raw
}

/// The offset bits each type number's kind defines under `types` with frame numbers of
/// `number_bits` bits.
const fn offset_masks(types: &TypeNumbering, number_bits: u32) -> [u64; 32] {
    let number = (1u64 << number_bits) - 1;
    let mut masks = [0; 32];
    let mut t = 0;
    while t < 32 {
        masks[t] = match types.meaning(t as u8) {
            TypeMeaning::Swap => (1 << crate::software::OFFSET_BITS) - 1,
            TypeMeaning::Migration(_) | TypeMeaning::DeviceMigration(_) => {
                number | 3 << number_bits
            }
            TypeMeaning::HwPoison
            | TypeMeaning::DevicePrivate(_)
            | TypeMeaning::DeviceExclusive => number,
            TypeMeaning::Marker => 0b111,
        };
        t += 1;
    }
    masks
}

/// The lowest physical-address width a profile accepts.
pub const MIN_PHYSICAL_ADDRESS_BITS: u32 = 32;
/// The highest physical-address width a profile accepts (52: frame numbers of 40 bits,
/// which with young and dirty fill the 42 offset bits every software entry has).
pub const MAX_PHYSICAL_ADDRESS_BITS: u32 = 52;

impl Profile {
    /// devpriv's own layout, used by the plain `decode`/`encode`: 52-bit physical
    /// addresses (young/dirty at offset bits 40/41), [`TypeNumbering::DEVPRIV`], Linux's
    /// PAT, and devpriv's MAIR ([`crate::arch::aarch64::MAIR_VALUE`]).
    pub const DEVPRIV: Self = Self {
        name: "devpriv",
        physical_address_bits: 52,
        types: TypeNumbering::DEVPRIV,
        pat: AttributeTable::from_pat_msr(LINUX_PAT_MSR_VALUE),
        mair: AttributeTable::from_mair(crate::arch::aarch64::MAIR_VALUE),
        offset_masks: [0; 32],
        x86_64_must_be_set: [0; 32],
    }
    .with_derived_masks();

    /// A mainline Linux x86_64 guest with 4-level paging (`MAX_PHYSMEM_BITS` 46), every
    /// option on.
    pub const LINUX_X86_64_4LEVEL: Self = Self::linux("linux-x86_64-4level", 46);
    /// A mainline Linux x86_64 guest with 5-level paging (`MAX_PHYSMEM_BITS` 52).
    pub const LINUX_X86_64_5LEVEL: Self = Self::linux("linux-x86_64-5level", 52);
    /// A mainline Linux arm64 guest with 48-bit physical addresses.
    pub const LINUX_ARM64_48BIT: Self = Self::linux("linux-arm64-48bit", 48);
    /// A mainline Linux arm64 guest with 52-bit physical addresses (LPA/LPA2).
    pub const LINUX_ARM64_52BIT: Self = Self::linux("linux-arm64-52bit", 52);
    /// An x86_64 4-level guest running the device-private address-space series.
    pub const SERIES_X86_64_4LEVEL: Self =
        Self::linux("series-x86_64-4level", 46).with_types(TypeNumbering::DEVICE_PRIVATE_SERIES);
    /// An arm64 48-bit guest running the device-private address-space series.
    pub const SERIES_ARM64_48BIT: Self =
        Self::linux("series-arm64-48bit", 48).with_types(TypeNumbering::DEVICE_PRIVATE_SERIES);

    /// Every preset, devpriv's first.
    pub const PRESETS: [Self; 7] = [
        Self::DEVPRIV,
        Self::LINUX_X86_64_4LEVEL,
        Self::LINUX_X86_64_5LEVEL,
        Self::LINUX_ARM64_48BIT,
        Self::LINUX_ARM64_52BIT,
        Self::SERIES_X86_64_4LEVEL,
        Self::SERIES_ARM64_48BIT,
    ];

    const fn linux(name: &'static str, physical_address_bits: u32) -> Self {
        Self {
            name,
            physical_address_bits,
            types: TypeNumbering::MAINLINE,
            pat: AttributeTable::from_pat_msr(LINUX_PAT_MSR_VALUE),
            mair: AttributeTable::from_mair(LINUX_MAIR_VALUE),
            offset_masks: [0; 32],
            x86_64_must_be_set: [0; 32],
        }
        .with_derived_masks()
    }

    /// This profile with the per-type masks recomputed from its width and numbering:
    /// every constructor and `with_*` that changes either ends here.
    const fn with_derived_masks(mut self) -> Self {
        self.offset_masks = offset_masks(&self.types, self.number_bits());
        self.x86_64_must_be_set = x86_64_must_be_set(&self.offset_masks);
        self
    }

    /// The preset called `name` (`devpriv`, `linux-x86_64-4level`, ...), if any.
    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS.into_iter().find(|p| p.name == name)
    }

    /// The profile's name (a preset's name, or the name given to [`Self::named`]).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// This profile under another name.
    pub const fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// This profile with physical addresses of `bits` bits (Linux `MAX_PHYSMEM_BITS`).
    pub const fn with_physical_address_bits(mut self, bits: u32) -> Result<Self, ProfileError> {
        if bits < MIN_PHYSICAL_ADDRESS_BITS || bits > MAX_PHYSICAL_ADDRESS_BITS {
            return Err(ProfileError::PhysicalAddressBits(bits));
        }
        self.physical_address_bits = bits;
        Ok(self.with_derived_masks())
    }

    /// This profile with another type numbering.
    pub const fn with_types(mut self, types: TypeNumbering) -> Self {
        self.types = types;
        self.with_derived_masks()
    }

    /// This profile with another x86_64 PAT table.
    pub const fn with_pat(mut self, pat: AttributeTable) -> Self {
        self.pat = pat;
        self
    }

    /// This profile with another arm64 MAIR table.
    pub const fn with_mair(mut self, mair: AttributeTable) -> Self {
        self.mair = mair;
        self
    }

    /// The physical-address width (Linux `MAX_PHYSMEM_BITS`).
    pub const fn physical_address_bits(&self) -> u32 {
        self.physical_address_bits
    }

    /// Bits of a frame number or device index in a software entry (Linux
    /// `SWP_PFN_BITS`): the physical-address width less the page shift.
    #[inline]
    pub const fn number_bits(&self) -> u32 {
        self.physical_address_bits - 12
    }

    /// The mask of [`number_bits`](Self::number_bits) low bits: the largest frame number
    /// or device index a software entry holds.
    #[inline]
    pub(crate) const fn number_mask(&self) -> u64 {
        (1u64 << self.number_bits()) - 1
    }

    /// The offset bit of a migration entry's young flag (Linux `SWP_MIG_YOUNG_BIT`);
    /// dirty is the bit above.
    #[inline]
    pub const fn migration_young_bit(&self) -> u32 {
        self.number_bits()
    }

    /// The offset bits the kind of type number `number` (its low five bits) defines: a
    /// software entry whose offset has any other bit set does not decode.
    #[inline]
    pub const fn offset_mask(&self, number: u8) -> u64 {
        self.offset_masks[(number & 31) as usize]
    }

    /// [`Self::offset_mask`] as x86_64 stores it: the raw bits of the inverted offset
    /// field (bits 9..58) that must read 1 in a software entry of type `number`.
    #[inline]
    pub const fn x86_64_inverted_offset_must_be_set(&self, number: u8) -> u64 {
        self.x86_64_must_be_set[(number & 31) as usize]
    }

    /// The type numbering.
    pub const fn types(&self) -> &TypeNumbering {
        &self.types
    }

    /// What the x86_64 PAT indices mean.
    pub const fn pat(&self) -> &AttributeTable {
        &self.pat
    }

    /// What the arm64 AttrIndx values mean.
    pub const fn mair(&self) -> &AttributeTable {
        &self.mair
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::DEVPRIV
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainline_numbers_down_from_31() {
        let t = TypeNumbering::MAINLINE;
        assert_eq!(t.swap_types(), 24);
        assert_eq!(t.number(TypeMeaning::HwPoison), Some(24));
        assert_eq!(
            t.number(TypeMeaning::Migration(MigrationAccess::Write)),
            Some(27)
        );
        assert_eq!(t.number(TypeMeaning::DeviceExclusive), Some(30));
        assert_eq!(t.number(TypeMeaning::Marker), Some(31));
        assert_eq!(
            t.number(TypeMeaning::DeviceMigration(MigrationAccess::Read)),
            None
        );
        assert_eq!(t.meaning(23), TypeMeaning::Swap);
    }

    #[test]
    fn the_series_adds_three_device_migration_types() {
        let t = TypeNumbering::DEVICE_PRIVATE_SERIES;
        assert_eq!(t.swap_types(), 21);
        assert_eq!(t.number(TypeMeaning::HwPoison), Some(21));
        assert_eq!(
            t.number(TypeMeaning::DevicePrivate(DeviceAccess::Write)),
            Some(25)
        );
        assert_eq!(
            t.number(TypeMeaning::DeviceMigration(MigrationAccess::Write)),
            Some(30)
        );
        assert_eq!(t.number(TypeMeaning::Marker), Some(31));
    }

    #[test]
    fn options_off_give_the_numbers_to_swap() {
        let t = TypeNumbering::mainline(MainlineOptions {
            device_private: false,
            migration: true,
            memory_failure: false,
            pte_marker: true,
        });
        assert_eq!(t.swap_types(), 28);
        assert_eq!(
            t.number(TypeMeaning::Migration(MigrationAccess::Read)),
            Some(28)
        );
        assert_eq!(t.number(TypeMeaning::HwPoison), None);
        assert_eq!(t.number(TypeMeaning::DeviceExclusive), None);
        assert_eq!(t.number(TypeMeaning::Marker), Some(31));
    }

    #[test]
    fn every_number_has_one_meaning_and_back() {
        for t in [
            TypeNumbering::DEVPRIV,
            TypeNumbering::MAINLINE,
            TypeNumbering::DEVICE_PRIVATE_SERIES,
        ] {
            for n in t.swap_types()..32 {
                assert_eq!(t.number(t.meaning(n)), Some(n), "{t:?} {n}");
            }
        }
    }

    #[test]
    fn attribute_tables_read_the_registers() {
        let pat = AttributeTable::from_pat_msr(LINUX_PAT_MSR_VALUE);
        assert_eq!(pat.memory_type(5), MemoryType::WriteProtect);
        assert_eq!(pat.memory_type(7), MemoryType::WriteThrough);
        assert_eq!(pat.memory_type(2), MemoryType::Device);
        let mair = AttributeTable::from_mair(LINUX_MAIR_VALUE);
        assert_eq!(mair.memory_type(0), MemoryType::WriteBack);
        assert_eq!(mair.memory_type(1), MemoryType::Tagged);
        assert_eq!(mair.memory_type(2), MemoryType::WriteCombining);
        assert_eq!(mair.memory_type(3), MemoryType::Uncached);
        assert_eq!(mair.memory_type(4), MemoryType::Device);
        assert_eq!(
            AttributeTable::from_mair(0xbb).memory_type(0),
            MemoryType::WriteThrough
        );
        assert_eq!(mair.index_of(MemoryType::Device), Some(4));
        assert_eq!(mair.index_of(MemoryType::WriteProtect), None);
    }

    #[test]
    fn widths_outside_the_offset_field_are_refused() {
        assert_eq!(
            Profile::DEVPRIV.with_physical_address_bits(53),
            Err(ProfileError::PhysicalAddressBits(53))
        );
        assert_eq!(
            Profile::DEVPRIV
                .with_physical_address_bits(46)
                .map(|p| p.migration_young_bit()),
            Ok(34)
        );
    }
}

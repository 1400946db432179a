//! Software (non-present) entries: what the kernel records in an entry the hardware
//! ignores.
//!
//! The kinds are Linux's. Their type numbers and the width of the frame number depend on
//! the kernel and come from a [`Profile`]; devpriv's own ([`Profile::DEVPRIV`], used by
//! the plain `encode`/`decode`) numbers swap types 0..=20, device-private migration
//! 21..=23, hw-poison 24, migration 25..=27, device-private write/read 28/29,
//! device-exclusive 30, marker 31. Each architecture module places the type, the offset
//! and the side bits in the raw entry.

use crate::error::{DecodeError, EncodeError};
use crate::frame::{DeviceIndex, Pfn, SOFTWARE_NUMBER_BITS};
use crate::profile::{Profile, TypeMeaning, TypeNumbering};

/// Bits of the offset field that any software entry may use (frame or index plus the
/// young and dirty bits, or a swap offset).
pub const OFFSET_BITS: u32 = SOFTWARE_NUMBER_BITS + 2;

/// Offset bit that records "young" (accessed) in a migration entry under
/// [`Profile::DEVPRIV`] (other profiles: [`Profile::migration_young_bit`]).
pub const MIGRATION_YOUNG_BIT: u32 = SOFTWARE_NUMBER_BITS;

/// Offset bit that records "dirty" in a migration entry under [`Profile::DEVPRIV`].
pub const MIGRATION_DIRTY_BIT: u32 = SOFTWARE_NUMBER_BITS + 1;

/// Number of the highest swap-device type under [`Profile::DEVPRIV`]; types above it are
/// special kinds. Other profiles: [`TypeNumbering::swap_types`].
pub const MAX_SWAP_TYPE: u8 = 20;

/// The 5-bit type numbers of the special kinds under [`Profile::DEVPRIV`].
pub mod type_number {
    /// Device-private migration, read (added by the device-private address space series).
    pub const DEVICE_MIGRATION_READ: u8 = 21;
    /// Device-private migration, read-exclusive.
    pub const DEVICE_MIGRATION_READ_EXCLUSIVE: u8 = 22;
    /// Device-private migration, write.
    pub const DEVICE_MIGRATION_WRITE: u8 = 23;
    /// Hardware-poisoned frame (Linux `SWP_HWPOISON`).
    pub const HWPOISON: u8 = 24;
    /// Migration, read (Linux `SWP_MIGRATION_READ`).
    pub const MIGRATION_READ: u8 = 25;
    /// Migration, read-exclusive (Linux `SWP_MIGRATION_READ_EXCLUSIVE`).
    pub const MIGRATION_READ_EXCLUSIVE: u8 = 26;
    /// Migration, write (Linux `SWP_MIGRATION_WRITE`).
    pub const MIGRATION_WRITE: u8 = 27;
    /// Device-private page, writable (Linux `SWP_DEVICE_WRITE`).
    pub const DEVICE_WRITE: u8 = 28;
    /// Device-private page, read-only (Linux `SWP_DEVICE_READ`).
    pub const DEVICE_READ: u8 = 29;
    /// Device-exclusive access (Linux `SWP_DEVICE_EXCLUSIVE`).
    pub const DEVICE_EXCLUSIVE: u8 = 30;
    /// PTE marker (Linux `SWP_PTE_MARKER`).
    pub const MARKER: u8 = 31;
}

/// A swap device number, 0..=31. How many a kernel has depends on its type numbering
/// ([`TypeNumbering::swap_types`]: 21 under [`Profile::DEVPRIV`], 24 under mainline);
/// encoding a swap type the profile gives to a special kind is
/// [`EncodeError::TypeNotInProfile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwapType(u8);

impl SwapType {
    /// The swap type `n`, or `None` if it does not fit the 5-bit type field (above 31).
    pub const fn new(n: u8) -> Option<Self> {
        if n < 32 { Some(Self(n)) } else { None }
    }

    /// The type number.
    pub const fn number(self) -> u8 {
        self.0
    }
}

/// The access a migration entry remembers, restored when the migration ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MigrationAccess {
    /// The page was mapped read-only (and may be shared).
    Read,
    /// The page was mapped read-only but exclusive to this address space (anonymous).
    ReadExclusive,
    /// The page was mapped writable.
    Write,
}

/// The access a device-private entry grants once the page is migrated back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceAccess {
    /// Read-only.
    Read,
    /// Writable.
    Write,
}

/// The payload of a PTE marker (Linux `PTE_MARKER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Marker {
    /// userfaultfd write-protect of an unpopulated page (payload bit 0).
    pub uffd_wp: bool,
    /// The page was poisoned and must not be touched (payload bit 1).
    pub poisoned: bool,
    /// A guard region: any access faults (payload bit 2).
    pub guard: bool,
}

/// The side bits the architecture keeps outside the type and offset fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SideBits {
    /// The anonymous page is exclusive to this mapping (Linux `_PAGE_SWP_EXCLUSIVE`).
    pub exclusive: bool,
    /// userfaultfd write-protect (Linux `_PAGE_SWP_UFFD_WP`).
    pub uffd_wp: bool,
    /// Soft-dirty tracking (Linux `_PAGE_SWP_SOFT_DIRTY`); x86_64 only, arm64 has no bit.
    pub soft_dirty: bool,
}

/// What a software entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftwareKind {
    /// The page is on swap device `swap_type` at `offset` (in pages).
    Swap {
        /// The swap device.
        swap_type: SwapType,
        /// The slot on the device; at most [`OFFSET_BITS`] bits.
        offset: u64,
    },
    /// A system-memory page is being migrated; faults wait until it is done.
    Migration {
        /// The access to restore.
        access: MigrationAccess,
        /// The frame being migrated.
        pfn: Pfn,
        /// The mapping was young (accessed) when it was replaced.
        young: bool,
        /// The mapping was dirty when it was replaced.
        dirty: bool,
    },
    /// A device-private page is being migrated; faults wait until it is done.
    DeviceMigration {
        /// The access to restore.
        access: MigrationAccess,
        /// The device page being migrated.
        index: DeviceIndex,
        /// The mapping was young when it was replaced.
        young: bool,
        /// The mapping was dirty when it was replaced.
        dirty: bool,
    },
    /// The page lives in device-private memory; a CPU access faults and migrates it back.
    DevicePrivate {
        /// The access the CPU gets once the page is back.
        access: DeviceAccess,
        /// The device page.
        index: DeviceIndex,
    },
    /// A device holds exclusive (atomic) access to the frame; a CPU access revokes it.
    DeviceExclusive {
        /// The frame the device holds.
        pfn: Pfn,
    },
    /// The frame is hardware-poisoned; accesses get a machine-check style error.
    HwPoison {
        /// The poisoned frame.
        pfn: Pfn,
    },
    /// A marker with no page behind it.
    Marker(Marker),
}

impl SoftwareKind {
    /// What the kind's type number means, independent of any numbering.
    #[inline]
    pub const fn meaning(&self) -> TypeMeaning {
        match *self {
            Self::Swap { .. } => TypeMeaning::Swap,
            Self::Migration { access, .. } => TypeMeaning::Migration(access),
            Self::DeviceMigration { access, .. } => TypeMeaning::DeviceMigration(access),
            Self::DevicePrivate { access, .. } => TypeMeaning::DevicePrivate(access),
            Self::DeviceExclusive { .. } => TypeMeaning::DeviceExclusive,
            Self::HwPoison { .. } => TypeMeaning::HwPoison,
            Self::Marker(_) => TypeMeaning::Marker,
        }
    }

    /// The 5-bit type number `types` gives this kind, or
    /// [`EncodeError::TypeNotInProfile`] if it has none (a kind whose kernel option is
    /// off, or a swap type it gives to a special kind).
    #[inline]
    pub const fn type_number_in(&self, types: &TypeNumbering) -> Result<u8, EncodeError> {
        if let Self::Swap { swap_type, .. } = self {
            return if swap_type.number() < types.swap_types() {
                Ok(swap_type.number())
            } else {
                Err(EncodeError::TypeNotInProfile)
            };
        }
        match types.number(self.meaning()) {
            Some(n) => Ok(n),
            None => Err(EncodeError::TypeNotInProfile),
        }
    }

    /// The 5-bit type number under [`Profile::DEVPRIV`] (for a swap kind, its swap type
    /// whatever it is).
    pub const fn type_number(&self) -> u8 {
        match self {
            Self::Swap { swap_type, .. } => swap_type.number(),
            _ => match TypeNumbering::DEVPRIV.number(self.meaning()) {
                Some(n) => n,
                None => unreachable!(),
            },
        }
    }

    /// The kebab-case name of the kind (`swap`, `migration-read`, ...,
    /// `device-private-write`, `marker`).
    pub const fn name(&self) -> &'static str {
        self.meaning().name()
    }

    /// Whether this is a migration entry of either namespace (Linux
    /// `is_migration_entry`): CPU faults on it wait for the migration to finish.
    pub const fn is_migration(&self) -> bool {
        matches!(self, Self::Migration { .. } | Self::DeviceMigration { .. })
    }
}

/// A complete software entry: its kind and the architecture's side bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftwareEntry {
    /// What the entry records.
    pub kind: SoftwareKind,
    /// The side bits outside the type and offset fields.
    pub side: SideBits,
}

impl SoftwareEntry {
    /// An entry of `kind` with no side bits set.
    pub const fn new(kind: SoftwareKind) -> Self {
        Self {
            kind,
            side: SideBits {
                exclusive: false,
                uffd_wp: false,
                soft_dirty: false,
            },
        }
    }
}

/// Why a (type, offset) pair is not a software entry; the arch decoders turn the offset
/// bit mask into raw bit positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OffsetError {
    /// The offset uses bits at or above [`OFFSET_BITS`] (the offset bits given).
    TooWide(u64),
    /// The kind does not define these offset bits (young/dirty outside migration
    /// entries, non-marker bits in a marker payload).
    Reserved(u64),
}

impl OffsetError {
    /// The decode error for an entry whose offset field starts at raw bit
    /// `offset_shift`: reserved offset bits are reported at their raw positions.
    pub(crate) const fn at_raw_shift(self, offset_shift: u32) -> DecodeError {
        match self {
            Self::TooWide(bits) => DecodeError::OffsetTooWide {
                bits: bits << offset_shift,
            },
            Self::Reserved(bits) => DecodeError::ReservedBitsSet {
                bits: bits << offset_shift,
            },
        }
    }
}

/// Mask of every offset bit a software entry may use.
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Marker payload bits: uffd-wp 0, poisoned 1, guard 2.
const MARKER_MASK: u64 = 0b111;

impl Marker {
    /// The payload bits (Linux `pte_marker`): uffd-wp 0, poisoned 1, guard 2.
    pub const fn bits(self) -> u64 {
        self.uffd_wp as u64 | (self.poisoned as u64) << 1 | (self.guard as u64) << 2
    }

    /// The marker with payload `bits`, or `None` if a bit other than 0..=2 is set.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        if bits & !MARKER_MASK != 0 {
            return None;
        }
        Some(Self::from_payload(bits))
    }

    /// The marker with payload bits 0..=2 of `bits` (the rest already checked clear).
    const fn from_payload(bits: u64) -> Self {
        Self {
            uffd_wp: bits & 1 != 0,
            poisoned: bits & 2 != 0,
            guard: bits & 4 != 0,
        }
    }
}

impl SoftwareKind {
    /// The generic offset Linux stores with this kind (`swp_offset`) under `profile`:
    /// the swap offset, the frame number or device index (with young and dirty at
    /// [`Profile::migration_young_bit`] and the bit above for migration kinds), or the
    /// marker payload.
    ///
    /// Fails if the number does not fit: [`EncodeError::OffsetTooLarge`] for a swap
    /// offset of more than [`OFFSET_BITS`] bits, [`EncodeError::FrameTooLarge`] /
    /// [`EncodeError::IndexTooLarge`] for a number of more than
    /// [`Profile::number_bits`] bits.
    #[inline]
    pub const fn offset_in(&self, profile: &Profile) -> Result<u64, EncodeError> {
        /// `number` with `side` bits, or `too_large` if it does not fit `mask`.
        const fn fitting(
            number: u64,
            mask: u64,
            too_large: EncodeError,
            side: u64,
        ) -> Result<u64, EncodeError> {
            if number > mask {
                Err(too_large)
            } else {
                Ok(number | side)
            }
        }
        /// The young and dirty bits of a migration entry, young at `young_bit`.
        const fn young_dirty(young: bool, dirty: bool, young_bit: u32) -> u64 {
            (young as u64) << young_bit | (dirty as u64) << (young_bit + 1)
        }
        let number_mask = profile.number_mask();
        let young_bit = profile.migration_young_bit();
        match *self {
            Self::Swap { offset, .. } => {
                fitting(offset, OFFSET_MASK, EncodeError::OffsetTooLarge, 0)
            }
            Self::Migration {
                pfn, young, dirty, ..
            } => fitting(
                pfn.number(),
                number_mask,
                EncodeError::FrameTooLarge,
                young_dirty(young, dirty, young_bit),
            ),
            Self::DeviceMigration {
                index,
                young,
                dirty,
                ..
            } => fitting(
                index.number(),
                number_mask,
                EncodeError::IndexTooLarge,
                young_dirty(young, dirty, young_bit),
            ),
            Self::DevicePrivate { index, .. } => {
                fitting(index.number(), number_mask, EncodeError::IndexTooLarge, 0)
            }
            Self::DeviceExclusive { pfn } | Self::HwPoison { pfn } => {
                fitting(pfn.number(), number_mask, EncodeError::FrameTooLarge, 0)
            }
            Self::Marker(m) => Ok(m.bits()),
        }
    }

    /// [`Self::offset_in`] under [`Profile::DEVPRIV`] (young at bit 40, dirty at 41).
    #[inline]
    pub const fn offset(&self) -> Result<u64, EncodeError> {
        self.offset_in(&Profile::DEVPRIV)
    }

    /// The kind with type number `type_code` (0..=31) and generic `offset` under
    /// `profile`; the inverse of [`Self::type_number_in`] and [`Self::offset_in`].
    #[inline]
    pub(crate) const fn from_type_and_offset(
        profile: &Profile,
        type_code: u8,
        offset: u64,
    ) -> Result<Self, OffsetError> {
        if offset > OFFSET_MASK {
            return Err(OffsetError::TooWide(offset & !OFFSET_MASK));
        }
        // One load validates every kind: the bits its type does not define.
        let reserved = offset & !profile.offset_mask(type_code);
        if reserved != 0 {
            return Err(OffsetError::Reserved(reserved));
        }
        let number = offset & profile.number_mask();
        let young_bit = profile.migration_young_bit();
        let young = offset >> young_bit & 1 != 0;
        let dirty = offset >> (young_bit + 1) & 1 != 0;
        Ok(match profile.types().meaning(type_code) {
            TypeMeaning::Swap => Self::Swap {
                swap_type: SwapType(type_code & 31),
                offset,
            },
            TypeMeaning::Migration(access) => Self::Migration {
                access,
                pfn: Pfn::new(number),
                young,
                dirty,
            },
            TypeMeaning::DeviceMigration(access) => Self::DeviceMigration {
                access,
                index: DeviceIndex::new(number),
                young,
                dirty,
            },
            TypeMeaning::HwPoison => Self::HwPoison {
                pfn: Pfn::new(number),
            },
            TypeMeaning::DevicePrivate(access) => Self::DevicePrivate {
                access,
                index: DeviceIndex::new(number),
            },
            TypeMeaning::DeviceExclusive => Self::DeviceExclusive {
                pfn: Pfn::new(number),
            },
            // The profile's mask for a marker is the payload's three bits.
            TypeMeaning::Marker => Self::Marker(Marker::from_payload(offset)),
        })
    }
}

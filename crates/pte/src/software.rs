//! Software (non-present) entries: what the kernel records in an entry the hardware
//! ignores.
//!
//! The kinds and their type numbers are Linux's, with every option enabled: swap types
//! 0..=20, device-private migration 21..=23, hw-poison 24, migration 25..=27,
//! device-private write/read 28/29, device-exclusive 30, marker 31. Each architecture
//! module places the type, the offset and the side bits in the raw entry.

use crate::frame::{DeviceIndex, Pfn, SOFTWARE_NUMBER_BITS};

/// Bits of the offset field that any software entry may use (frame or index plus the
/// young and dirty bits, or a swap offset).
pub const OFFSET_BITS: u32 = SOFTWARE_NUMBER_BITS + 2;

/// Offset bit that records "young" (accessed) in a migration entry.
pub const MIGRATION_YOUNG_BIT: u32 = SOFTWARE_NUMBER_BITS;

/// Offset bit that records "dirty" in a migration entry.
pub const MIGRATION_DIRTY_BIT: u32 = SOFTWARE_NUMBER_BITS + 1;

/// Number of the highest swap-device type; types above it are special kinds.
pub const MAX_SWAP_TYPE: u8 = 20;

/// The 5-bit type numbers of the special kinds.
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

/// A swap device number, 0..=20.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwapType(u8);

impl SwapType {
    /// The swap type `n`, or `None` above [`MAX_SWAP_TYPE`].
    pub const fn new(n: u8) -> Option<Self> {
        if n <= MAX_SWAP_TYPE { Some(Self(n)) } else { None }
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
    /// The 5-bit type number Linux gives this kind.
    pub const fn type_number(&self) -> u8 {
        use type_number as t;
        match self {
            Self::Swap { swap_type, .. } => swap_type.number(),
            Self::Migration { access, .. } => match access {
                MigrationAccess::Read => t::MIGRATION_READ,
                MigrationAccess::ReadExclusive => t::MIGRATION_READ_EXCLUSIVE,
                MigrationAccess::Write => t::MIGRATION_WRITE,
            },
            Self::DeviceMigration { access, .. } => match access {
                MigrationAccess::Read => t::DEVICE_MIGRATION_READ,
                MigrationAccess::ReadExclusive => t::DEVICE_MIGRATION_READ_EXCLUSIVE,
                MigrationAccess::Write => t::DEVICE_MIGRATION_WRITE,
            },
            Self::DevicePrivate { access, .. } => match access {
                DeviceAccess::Read => t::DEVICE_READ,
                DeviceAccess::Write => t::DEVICE_WRITE,
            },
            Self::DeviceExclusive { .. } => t::DEVICE_EXCLUSIVE,
            Self::HwPoison { .. } => t::HWPOISON,
            Self::Marker(_) => t::MARKER,
        }
    }

    /// The kebab-case name of the kind (`swap`, `migration-read`, ...,
    /// `device-private-write`, `marker`).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Swap { .. } => "swap",
            Self::Migration { access, .. } => match access {
                MigrationAccess::Read => "migration-read",
                MigrationAccess::ReadExclusive => "migration-read-exclusive",
                MigrationAccess::Write => "migration-write",
            },
            Self::DeviceMigration { access, .. } => match access {
                MigrationAccess::Read => "device-private-migration-read",
                MigrationAccess::ReadExclusive => "device-private-migration-read-exclusive",
                MigrationAccess::Write => "device-private-migration-write",
            },
            Self::DevicePrivate { access, .. } => match access {
                DeviceAccess::Read => "device-private-read",
                DeviceAccess::Write => "device-private-write",
            },
            Self::DeviceExclusive { .. } => "device-exclusive",
            Self::HwPoison { .. } => "hw-poison",
            Self::Marker(_) => "marker",
        }
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
        Self { kind, side: SideBits { exclusive: false, uffd_wp: false, soft_dirty: false } }
    }
}

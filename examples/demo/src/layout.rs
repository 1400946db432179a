//! The demo's virtual address layout, the same on both architectures (48-bit lower half,
//! far away from the identity-mapped kernel).

/// Base of every demo mapping: 256 GiB.
pub const DEMO_BASE: u64 = 0x0000_0040_0000_0000;
/// A 4 KiB page mapped read-only.
pub const READ_ONLY_PAGE: u64 = DEMO_BASE;
/// A 4 KiB page mapped no-execute, holding a `ret` instruction.
pub const NO_EXECUTE_PAGE: u64 = DEMO_BASE + 0x1000;
/// A 4 KiB page mapped with accessed (and dirty) clear.
pub const ACCESSED_DIRTY_PAGE: u64 = DEMO_BASE + 0x2000;
/// A 2 MiB block.
pub const BLOCK_2M: u64 = DEMO_BASE + 0x20_0000;
/// A buffer of 4 KiB pages whose entries are device-private write entries.
pub const DEVICE_BUFFER: u64 = DEMO_BASE + 0x40_0000;
/// Pages in [`DEVICE_BUFFER`].
pub const DEVICE_BUFFER_PAGES: u64 = 4;
/// A 2 MiB region held by one device-private write entry at level 2.
pub const DEVICE_BLOCK_2M: u64 = DEMO_BASE + 0x60_0000;
/// A page behind a migration-write entry.
pub const MIGRATION_WRITE_PAGE: u64 = DEMO_BASE + 0x80_0000;
/// A page behind a migration-read entry.
pub const MIGRATION_READ_PAGE: u64 = DEMO_BASE + 0x80_1000;
/// A page behind a device-private migration-write entry.
pub const DEVICE_MIGRATION_PAGE: u64 = DEMO_BASE + 0x80_2000;
/// A page behind a device-exclusive entry.
pub const DEVICE_EXCLUSIVE_PAGE: u64 = DEMO_BASE + 0x80_3000;

/// A buffer of device-private pages whose faults the demo times.
pub const TIMED_BUFFER: u64 = DEMO_BASE + 0x100_0000;
/// Pages in [`TIMED_BUFFER`].
pub const TIMED_PAGES: u64 = 256;
/// The first device index of [`TIMED_BUFFER`]'s pages.
pub const TIMED_FIRST_INDEX: u64 = 16;

/// The first device index of [`DEVICE_BUFFER`]'s pages.
pub const DEVICE_BUFFER_FIRST_INDEX: u64 = 3;
/// The device index of the device-private migration page.
pub const DEVICE_MIGRATION_INDEX: u64 = 9;
/// The first device index of the 2 MiB device-private block (2 MiB aligned: 512 pages).
pub const DEVICE_BLOCK_FIRST_INDEX: u64 = 512;
/// Pages of device memory the demo needs (indices 0..1024).
pub const DEVICE_PAGES: usize = 1024;

//! The two number spaces a page-table entry can point into.
//!
//! A [`Pfn`] names a frame of *physical* memory. A [`DeviceIndex`] names a page in the
//! *device-private address space*, which the CPU cannot map and which never overlaps
//! physical memory. They are distinct types so that a number from one space can never be
//! used as a number from the other: an entry decoder returns whichever one the entry's
//! type says it holds.

use core::fmt;

/// Bits of a frame number or device index that every software entry can hold.
///
/// 40 bits cover 52-bit physical addresses in 4 KiB frames; Linux's `SWP_PFN_BITS` on
/// x86_64 with 5-level paging has the same value.
pub const SOFTWARE_NUMBER_BITS: u32 = 40;

/// A physical frame number: a physical address divided by 4 KiB.
///
/// Any `u64` is a representable frame number; whether a given format can encode it is
/// checked when the entry is encoded, which returns a typed error if it does not fit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(u64);

impl Pfn {
    /// The frame with this number.
    pub const fn new(number: u64) -> Self {
        Self(number)
    }

    /// The frame containing physical address `addr` (the low 12 bits are dropped).
    pub const fn containing(addr: u64) -> Self {
        Self(addr >> 12)
    }

    /// The frame starting at `addr`, or `None` if `addr` is not 4 KiB aligned.
    pub const fn from_phys_addr(addr: u64) -> Option<Self> {
        if addr & 0xfff == 0 {
            Some(Self(addr >> 12))
        } else {
            None
        }
    }

    /// The frame number.
    pub const fn number(self) -> u64 {
        self.0
    }

    /// The physical address of the first byte of the frame.
    pub const fn phys_addr(self) -> u64 {
        self.0 << 12
    }

    /// The frame `count` frames after this one, or `None` on overflow.
    pub const fn checked_add(self, count: u64) -> Option<Self> {
        match self.0.checked_add(count) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// Whether the frame is aligned to `frames` frames (a power of two; 0 counts as
    /// 2^64, to which only frame 0 is aligned).
    pub const fn is_aligned(self, frames: u64) -> bool {
        self.0 & frames.wrapping_sub(1) == 0
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

/// `pfn 0x1234`.
impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

/// The index of a 4 KiB page in the device-private address space.
///
/// Not a frame number: device-private memory has no physical address the CPU could use.
/// Software entries of the device-private kinds carry one of these in place of a [`Pfn`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DeviceIndex(u64);

impl DeviceIndex {
    /// The largest index a software entry can hold.
    pub const MAX: DeviceIndex = DeviceIndex((1 << SOFTWARE_NUMBER_BITS) - 1);

    /// The device page with this index.
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    /// The index as a number.
    pub const fn number(self) -> u64 {
        self.0
    }

    /// The index `count` pages after this one, or `None` on overflow.
    pub const fn checked_add(self, count: u64) -> Option<Self> {
        match self.0.checked_add(count) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// Whether the index is aligned to `pages` pages (a power of two; 0 counts as
    /// 2^64, to which only index 0 is aligned).
    pub const fn is_aligned(self, pages: u64) -> bool {
        self.0 & pages.wrapping_sub(1) == 0
    }
}

impl fmt::Debug for DeviceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceIndex({:#x})", self.0)
    }
}

/// `device index 0x1234`.
impl fmt::Display for DeviceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device index {:#x}", self.0)
    }
}

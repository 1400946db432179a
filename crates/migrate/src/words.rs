//! The words exchanged with drivers: Linux's `migrate_pfn` and `hmm_pfn` bit layouts as
//! typed `u64`s, so that a physical frame and a device index cannot be confused.
//!
//! # Migrate words ([`MigratePfn`])
//!
//! | bits | meaning |
//! |---|---|
//! | 0 | VALID: a page is named |
//! | 1 | MIGRATE: the page is (still) being migrated |
//! | 2 | unused |
//! | 3 | WRITE: the mapping was writable |
//! | 4 | COMPOUND: a 2 MiB page; the next 511 words are 0 |
//! | 5 | DEVICE_PRIVATE: the number is a device index, not a frame (the device-private address-space series) |
//! | 6.. | the number |
//!
//! # HMM words ([`HmmPfn`])
//!
//! | bits | meaning |
//! |---|---|
//! | 63 | VALID (input: REQ_FAULT) |
//! | 62 | WRITE (input: REQ_WRITE) |
//! | 61 | ERROR |
//! | 60, 59, 58 | DMA_MAPPED, P2PDMA, P2PDMA_BUS: passed from input to output untouched |
//! | 57 | DEVICE_PRIVATE (series layout only) |
//! | 52..=56 or 53..=57 | the mapping order (series / mainline) |
//! | below | the number |
//!
//! Where the device-private bit and the order sit is a version question — the series is
//! not merged, and another series claims bit 57 too — so it lives in one place, the
//! [`HmmLayout`] the words are generic over. The default is the series' layout
//! ([`DevicePrivateSeries`]), since devpriv's device numbers are device-private indices.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{BitOr, BitOrAssign};

use devpriv_pte::{DeviceIndex, PageSize, Pfn};

/// What a migrate or HMM word names: a system frame or a device-private page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageTarget {
    /// A frame of system memory.
    System(Pfn),
    /// A page of device-private memory.
    Device(DeviceIndex),
}

/// One page's word in a migration's `src` or `dst` slice (Linux's `migrate_pfn`
/// encoding, with the series' DEVICE_PRIVATE bit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct MigratePfn(u64);

impl MigratePfn {
    /// A page is named.
    pub const VALID: u64 = 1 << 0;
    /// The page is being migrated (cleared when its migration fails).
    pub const MIGRATE: u64 = 1 << 1;
    /// The mapping was writable.
    pub const WRITE: u64 = 1 << 3;
    /// A 2 MiB page: the 511 words after it are 0.
    pub const COMPOUND: u64 = 1 << 4;
    /// The number is a device index (a device-private page), not a frame.
    pub const DEVICE_PRIVATE: u64 = 1 << 5;
    /// Where the number starts.
    pub const SHIFT: u32 = 6;
    /// The flag bits.
    pub const FLAGS: u64 = (1 << Self::SHIFT) - 1;

    /// The empty word: nothing named, nothing migrating.
    pub const EMPTY: Self = Self(0);

    /// The word with raw value `raw`.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A system frame (VALID).
    pub const fn system(pfn: Pfn) -> Self {
        Self(Self::VALID | pfn.number() << Self::SHIFT)
    }

    /// A device-private page (VALID | DEVICE_PRIVATE).
    pub const fn device(index: DeviceIndex) -> Self {
        Self(Self::VALID | Self::DEVICE_PRIVATE | index.number() << Self::SHIFT)
    }

    /// The word for `target`.
    pub const fn of(target: PageTarget) -> Self {
        match target {
            PageTarget::System(pfn) => Self::system(pfn),
            PageTarget::Device(index) => Self::device(index),
        }
    }

    /// A hole to populate: MIGRATE without VALID.
    pub const fn hole() -> Self {
        Self(Self::MIGRATE)
    }

    /// This word with `flags` set.
    pub const fn with(self, flags: u64) -> Self {
        Self(self.0 | flags)
    }

    /// This word with `flags` clear.
    pub const fn without(self, flags: u64) -> Self {
        Self(self.0 & !flags)
    }

    /// Whether every bit of `flags` is set.
    pub const fn has(self, flags: u64) -> bool {
        self.0 & flags == flags
    }

    /// Whether a page is named (VALID).
    pub const fn is_valid(self) -> bool {
        self.has(Self::VALID)
    }

    /// Whether the page is being migrated (MIGRATE).
    pub const fn is_migrating(self) -> bool {
        self.has(Self::MIGRATE)
    }

    /// Whether this is a hole to populate (MIGRATE without VALID).
    pub const fn is_hole(self) -> bool {
        self.0 & (Self::VALID | Self::MIGRATE) == Self::MIGRATE
    }

    /// Whether the mapping was writable (WRITE).
    pub const fn is_writable(self) -> bool {
        self.has(Self::WRITE)
    }

    /// Whether the word names a 2 MiB page (COMPOUND).
    pub const fn is_compound(self) -> bool {
        self.has(Self::COMPOUND)
    }

    /// The page size the word names.
    pub const fn size(self) -> PageSize {
        if self.is_compound() {
            PageSize::Size2MiB
        } else {
            PageSize::Size4KiB
        }
    }

    /// The page named, if VALID: a frame, or a device index when DEVICE_PRIVATE is set.
    pub const fn target(self) -> Option<PageTarget> {
        if !self.is_valid() {
            return None;
        }
        let number = self.0 >> Self::SHIFT;
        Some(if self.has(Self::DEVICE_PRIVATE) {
            PageTarget::Device(DeviceIndex::new(number))
        } else {
            PageTarget::System(Pfn::new(number))
        })
    }

    /// The word for the `i`-th 4 KiB page of this 2 MiB word: the number advanced by
    /// `i`, COMPOUND cleared, every other flag kept.
    pub const fn subpage(self, i: u64) -> Self {
        Self((self.0 & !Self::COMPOUND) + (i << Self::SHIFT))
    }
}

impl fmt::Debug for MigratePfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("MigratePfn(0)");
        }
        write!(f, "MigratePfn(")?;
        match self.target() {
            Some(PageTarget::System(pfn)) => write!(f, "{pfn:?}")?,
            Some(PageTarget::Device(index)) => write!(f, "{index:?}")?,
            None => f.write_str("hole")?,
        }
        for (bit, name) in [
            (Self::MIGRATE, " MIGRATE"),
            (Self::WRITE, " WRITE"),
            (Self::COMPOUND, " COMPOUND"),
        ] {
            if self.has(bit) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

/// Which pages a migration collects (Linux's `MIGRATE_VMA_SELECT_*`, same bit values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Select(u32);

impl Select {
    /// Nothing (only holes are collected).
    pub const NONE: Self = Self(0);
    /// Present system pages (`MIGRATE_VMA_SELECT_SYSTEM`).
    pub const SYSTEM: Self = Self(1);
    /// Device-private pages of the migration's owner (`MIGRATE_VMA_SELECT_DEVICE_PRIVATE`).
    pub const DEVICE_PRIVATE: Self = Self(2);
    /// Aligned 2 MiB pages and holes whole (`MIGRATE_VMA_SELECT_COMPOUND`).
    pub const COMPOUND: Self = Self(8);

    /// Whether every flag of `other` is selected.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw flags.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for Select {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl BitOrAssign for Select {
    fn bitor_assign(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// Where an HMM word layout puts the order and the device-private bit.
pub trait HmmLayout: Copy + Eq + fmt::Debug + Default + 'static {
    /// A short name for the layout.
    const NAME: &'static str;
    /// The lowest bit of the 5-bit mapping order; the number lies below it.
    const ORDER_SHIFT: u32;
    /// The device-private bit, if the layout has one.
    const DEVICE_PRIVATE: Option<u64>;
}

/// Mainline Linux's layout: order at 53..=57, no device-private bit (device pages are
/// named by a physical frame number there, which devpriv's device pages do not have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Mainline;

impl HmmLayout for Mainline {
    const NAME: &'static str = "mainline";
    const ORDER_SHIFT: u32 = 53;
    const DEVICE_PRIVATE: Option<u64> = None;
}

/// The device-private address-space series' layout: DEVICE_PRIVATE at 57, order at
/// 52..=56, the number (a frame, or a device index with DEVICE_PRIVATE) below 52.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DevicePrivateSeries;

impl HmmLayout for DevicePrivateSeries {
    const NAME: &'static str = "device-private series";
    const ORDER_SHIFT: u32 = 52;
    const DEVICE_PRIVATE: Option<u64> = Some(1 << 57);
}

/// One page's word in a range snapshot (Linux's `hmm_pfn`), in layout `L`.
///
/// As input it asks for something (REQ_FAULT, REQ_WRITE); as output it says what the
/// page is: 0 means "not present but could be faulted in".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct HmmPfn<L: HmmLayout = DevicePrivateSeries>(u64, PhantomData<L>);

impl<L: HmmLayout> HmmPfn<L> {
    /// Output: the page is present (VALID).
    pub const VALID: u64 = 1 << 63;
    /// Output: the mapping is writable (WRITE).
    pub const WRITE: u64 = 1 << 62;
    /// Output: the page cannot be accessed or faulted in (ERROR).
    pub const ERROR: u64 = 1 << 61;
    /// Input: fault the page in if it is not present (`HMM_PFN_REQ_FAULT`, = VALID).
    pub const REQ_FAULT: u64 = Self::VALID;
    /// Input: fault it in writable (`HMM_PFN_REQ_WRITE`, = WRITE).
    pub const REQ_WRITE: u64 = Self::WRITE;
    /// Passed through: `HMM_PFN_DMA_MAPPED`.
    pub const DMA_MAPPED: u64 = 1 << 60;
    /// Passed through: `HMM_PFN_P2PDMA`.
    pub const P2PDMA: u64 = 1 << 59;
    /// Passed through: `HMM_PFN_P2PDMA_BUS`.
    pub const P2PDMA_BUS: u64 = 1 << 58;
    /// The bits passed from input to output untouched.
    pub const PASS_THROUGH: u64 = Self::DMA_MAPPED | Self::P2PDMA | Self::P2PDMA_BUS;
    /// Where the order starts in this layout.
    pub const ORDER_SHIFT: u32 = L::ORDER_SHIFT;
    /// The mask of the number field.
    pub const NUMBER_MASK: u64 = (1 << L::ORDER_SHIFT) - 1;

    /// The word with raw value `raw`.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw, PhantomData)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Output 0: not present, faultable.
    pub const fn none() -> Self {
        Self::from_raw(0)
    }

    /// Output ERROR: cannot be accessed or faulted in.
    pub const fn error() -> Self {
        Self::from_raw(Self::ERROR)
    }

    /// A present system frame mapped with `order` (0 or 9), writable or not. `None` if
    /// the frame does not fit the number field.
    pub const fn system(pfn: Pfn, writable: bool, order: u32) -> Option<Self> {
        if pfn.number() > Self::NUMBER_MASK || order > 31 {
            return None;
        }
        Some(Self::from_raw(
            Self::VALID
                | if writable { Self::WRITE } else { 0 }
                | (order as u64) << L::ORDER_SHIFT
                | pfn.number(),
        ))
    }

    /// A device-private page mapped with `order`, writable or not. `None` in a layout
    /// without a device-private bit, or if the index does not fit.
    pub const fn device(index: DeviceIndex, writable: bool, order: u32) -> Option<Self> {
        let Some(bit) = L::DEVICE_PRIVATE else {
            return None;
        };
        if index.number() > Self::NUMBER_MASK || order > 31 {
            return None;
        }
        Some(Self::from_raw(
            Self::VALID
                | bit
                | if writable { Self::WRITE } else { 0 }
                | (order as u64) << L::ORDER_SHIFT
                | index.number(),
        ))
    }

    /// This word with `flags` set (input flags: REQ_FAULT, REQ_WRITE).
    pub const fn with(self, flags: u64) -> Self {
        Self::from_raw(self.0 | flags)
    }

    /// Whether every bit of `flags` is set.
    pub const fn has(self, flags: u64) -> bool {
        self.0 & flags == flags
    }

    /// Whether the page is present (VALID).
    pub const fn is_valid(self) -> bool {
        self.has(Self::VALID)
    }

    /// Whether the mapping is writable (WRITE).
    pub const fn is_writable(self) -> bool {
        self.has(Self::WRITE)
    }

    /// Whether the page is an error (ERROR).
    pub const fn is_error(self) -> bool {
        self.has(Self::ERROR)
    }

    /// Whether the word names a device-private page.
    pub const fn is_device_private(self) -> bool {
        match L::DEVICE_PRIVATE {
            Some(bit) => self.0 & bit != 0,
            None => false,
        }
    }

    /// The order of the mapping (0 for 4 KiB, 9 for 2 MiB).
    pub const fn order(self) -> u32 {
        ((self.0 >> L::ORDER_SHIFT) & 0x1f) as u32
    }

    /// The page named, if VALID.
    pub const fn target(self) -> Option<PageTarget> {
        if !self.is_valid() {
            return None;
        }
        let number = self.0 & Self::NUMBER_MASK;
        Some(if self.is_device_private() {
            PageTarget::Device(DeviceIndex::new(number))
        } else {
            PageTarget::System(Pfn::new(number))
        })
    }

    /// The request flags of an input word, after `mask` and `default` are applied as
    /// Linux does: `(word & mask) | default`.
    pub const fn request(self, mask: Self, default: Self) -> Self {
        Self::from_raw((self.0 & mask.0) | default.0)
    }
}

impl<L: HmmLayout> fmt::Debug for HmmPfn<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmmPfn({:#x}", self.0)?;
        if let Some(target) = self.target() {
            write!(f, " {target:?} order {}", self.order())?;
        }
        for (bit, name) in [
            (Self::WRITE, " WRITE"),
            (Self::ERROR, " ERROR"),
            (Self::DMA_MAPPED, " DMA_MAPPED"),
        ] {
            if self.has(bit) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every word names what it was made from, with its flags, in both layouts.
        #[test]
        fn words_round_trip(number in 0u64..1 << 40, flags in 0u64..32, order in prop_oneof![Just(0u32), Just(9)], write: bool) {
            let flags = flags & (MigratePfn::MIGRATE | MigratePfn::WRITE | MigratePfn::COMPOUND);
            let s = MigratePfn::system(Pfn::new(number)).with(flags);
            let d = MigratePfn::device(DeviceIndex::new(number)).with(flags);
            prop_assert_eq!(s.target(), Some(PageTarget::System(Pfn::new(number))));
            prop_assert_eq!(d.target(), Some(PageTarget::Device(DeviceIndex::new(number))));
            prop_assert_eq!(s.raw() & MigratePfn::FLAGS & !MigratePfn::VALID, flags);
            prop_assert_eq!(MigratePfn::of(PageTarget::Device(DeviceIndex::new(number))), MigratePfn::device(DeviceIndex::new(number)));
            let hs = HmmPfn::<DevicePrivateSeries>::system(Pfn::new(number), write, order).unwrap();
            prop_assert_eq!(hs.target(), Some(PageTarget::System(Pfn::new(number))));
            prop_assert_eq!((hs.order(), hs.is_writable(), hs.is_device_private()), (order, write, false));
            let hd = HmmPfn::<DevicePrivateSeries>::device(DeviceIndex::new(number), write, order).unwrap();
            prop_assert_eq!(hd.target(), Some(PageTarget::Device(DeviceIndex::new(number))));
            prop_assert_eq!((hd.order(), hd.is_writable(), hd.is_device_private()), (order, write, true));
            let hm = HmmPfn::<Mainline>::system(Pfn::new(number), write, order).unwrap();
            prop_assert_eq!(hm.target(), Some(PageTarget::System(Pfn::new(number))));
            prop_assert_eq!(hm.order(), order);
        }
    }

    #[test]
    fn migrate_bits_are_linuxs() {
        assert_eq!(MigratePfn::VALID, 1);
        assert_eq!(MigratePfn::MIGRATE, 2);
        assert_eq!(MigratePfn::WRITE, 8);
        assert_eq!(MigratePfn::COMPOUND, 16);
        assert_eq!(MigratePfn::DEVICE_PRIVATE, 32);
        assert_eq!(MigratePfn::system(Pfn::new(0x1234)).raw(), 0x1234 << 6 | 1);
        assert_eq!(
            MigratePfn::device(DeviceIndex::new(0x1234)).raw(),
            0x1234 << 6 | 0x21
        );
        assert_eq!(Select::SYSTEM.bits(), 1);
        assert_eq!(Select::DEVICE_PRIVATE.bits(), 2);
        assert_eq!(Select::COMPOUND.bits(), 8);
    }

    #[test]
    fn frames_and_indices_stay_apart() {
        let s = MigratePfn::system(Pfn::new(7)).with(MigratePfn::MIGRATE);
        let d = MigratePfn::device(DeviceIndex::new(7)).with(MigratePfn::WRITE);
        assert_eq!(s.target(), Some(PageTarget::System(Pfn::new(7))));
        assert_eq!(d.target(), Some(PageTarget::Device(DeviceIndex::new(7))));
        assert_ne!(s.raw() >> 6, 0);
        assert_eq!(MigratePfn::hole().target(), None);
        assert!(MigratePfn::hole().is_hole());
        assert!(!s.is_hole());
        let c = d.with(MigratePfn::COMPOUND | MigratePfn::MIGRATE);
        assert_eq!(c.size(), PageSize::Size2MiB);
        let sub = c.subpage(5);
        assert_eq!(sub.target(), Some(PageTarget::Device(DeviceIndex::new(12))));
        assert!(!sub.is_compound() && sub.is_writable() && sub.is_migrating());
    }

    #[test]
    fn hmm_layouts() {
        type S = HmmPfn<DevicePrivateSeries>;
        type M = HmmPfn<Mainline>;
        assert_eq!(S::VALID, 1 << 63);
        assert_eq!(S::WRITE, 1 << 62);
        assert_eq!(S::ERROR, 1 << 61);
        let d = S::device(DeviceIndex::new(0xabc), true, 9).unwrap();
        assert_eq!(d.raw(), 1 << 63 | 1 << 62 | 1 << 57 | 9 << 52 | 0xabc);
        assert_eq!(
            d.target(),
            Some(PageTarget::Device(DeviceIndex::new(0xabc)))
        );
        assert_eq!(d.order(), 9);
        let s = S::system(Pfn::new(0xabc), false, 0).unwrap();
        assert_eq!(s.target(), Some(PageTarget::System(Pfn::new(0xabc))));
        assert!(!s.is_device_private());
        // Mainline: order at 53, and no way to name a device page.
        let m = M::system(Pfn::new(0xabc), true, 9).unwrap();
        assert_eq!(m.raw(), 1 << 63 | 1 << 62 | 9 << 53 | 0xabc);
        assert_eq!(m.order(), 9);
        assert_eq!(M::device(DeviceIndex::new(1), true, 0), None);
        // Too-large numbers do not fit.
        assert_eq!(S::system(Pfn::new(1 << 52), false, 0), None);
        assert!(M::system(Pfn::new(1 << 52), false, 0).is_some());
        // Requests: (word & mask) | default.
        let w = S::from_raw(S::REQ_WRITE | S::DMA_MAPPED);
        let req = w.request(S::from_raw(S::REQ_FAULT), S::from_raw(S::REQ_FAULT));
        assert_eq!(req.raw(), S::REQ_FAULT);
        assert_eq!(S::none().raw(), 0);
    }
}

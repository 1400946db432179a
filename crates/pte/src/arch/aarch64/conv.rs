//! Conversions to and from `aarch64-paging`'s address types (feature `aarch64-paging`).
//!
//! - `From<Pfn> for PhysicalAddress` (the frame's first byte) and
//!   `TryFrom<PhysicalAddress> for Pfn` (the address must be 4 KiB aligned).
//! - [`Aarch64::is_valid`](crate::PteFormat::is_valid) and the decoders take the raw
//!   descriptor value, which `aarch64-paging`'s `Descriptor::bits` gives.
//!
//! `aarch64-cpu` has no address or frame types, so there is nothing to convert there:
//! its `MAIR_EL1` register takes [`super::MAIR_VALUE`] as it is.

use aarch64_paging::descriptor::PhysicalAddress;

use crate::frame::Pfn;

/// A physical address `aarch64-paging` would not accept as a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnalignedAddress(pub usize);

impl core::fmt::Display for UnalignedAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "physical address {:#x} is not 4 KiB aligned", self.0)
    }
}

impl core::error::Error for UnalignedAddress {}

impl From<Pfn> for PhysicalAddress {
    /// The frame's first byte. `usize` is 64 bits on every target this crate encodes
    /// for, so no frame number below 2^52 is truncated.
    fn from(pfn: Pfn) -> Self {
        PhysicalAddress(pfn.phys_addr() as usize)
    }
}

impl TryFrom<PhysicalAddress> for Pfn {
    type Error = UnalignedAddress;

    fn try_from(address: PhysicalAddress) -> Result<Self, Self::Error> {
        Pfn::from_phys_addr(address.0 as u64).ok_or(UnalignedAddress(address.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_addresses_convert_both_ways() {
        let address: PhysicalAddress = Pfn::new(0x8_0000).into();
        assert_eq!(address, PhysicalAddress(0x8000_0000));
        assert_eq!(Pfn::try_from(address), Ok(Pfn::new(0x8_0000)));
        assert_eq!(
            Pfn::try_from(PhysicalAddress(0x8000_0010)),
            Err(UnalignedAddress(0x8000_0010))
        );
    }
}

//! The aarch64 entry format (stub: being implemented).

use crate::format::{Arch, Geometry, LeafAttributes, PageProperty, PteFormat};
use crate::{DecodeError, EncodeError, Entry, Level};

/// The aarch64 format marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aarch64;

/// Leaf attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PageAttributes;

/// Table attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TableAttributes;

impl LeafAttributes for PageAttributes {
    fn property(&self) -> PageProperty {
        todo!()
    }
    fn from_property(_property: PageProperty) -> Self {
        todo!()
    }
}

impl Geometry for Aarch64 {
    const GRANULE_SHIFT: u32 = 12;
    const BITS_PER_LEVEL: u32 = 9;
    const OUTPUT_ADDRESS_BITS: u32 = 52;
    const LARGEST_LEAF_LEVEL: Level = Level::L3;
    const MAX_ROOT_LEVEL: Level = Level::L4;
}

impl PteFormat for Aarch64 {
    type LeafAttributes = PageAttributes;
    type TableAttributes = TableAttributes;
    const ARCH: Arch = Arch::Aarch64;
    fn decode(_raw: u64, _level: Level) -> Result<Entry<Self>, DecodeError> {
        todo!()
    }
    fn encode(_entry: &Entry<Self>, _level: Level) -> Result<u64, EncodeError> {
        todo!()
    }
    fn is_valid(_raw: u64, _level: Level) -> bool {
        todo!()
    }
}

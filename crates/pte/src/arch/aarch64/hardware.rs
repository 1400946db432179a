//! aarch64 valid descriptors (VMSAv8-64 stage 1, 4 KiB granule, 48-bit output
//! addresses): the hardware layouts and the attribute types.

use bitfield_struct::bitfield;

use crate::format::{LeafAttributes, MemoryType, PageProperty};
use crate::profile::{AttributeTable, Profile};

/// Bit 0: the descriptor is valid.
pub const VALID: u64 = 1;
/// Bit 1: table (levels 2..4) or page (level 1) descriptor; clear for a block.
pub const TABLE_OR_PAGE: u64 = 1 << 1;
/// Bits 12..47: the output address (48-bit).
pub const OUTPUT_ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Widest frame number a descriptor holds (48-bit output addresses).
pub const PFN_BITS: u32 = 36;

/// Leaf attribute bits: AttrIndx, NS, AP, SH, AF, nG (2..11) and GP, DBM, Contiguous,
/// PXN, UXN and the software bits (50..58).
pub(crate) const LEAF_ATTR_MASK: u64 = 0x0000_0000_0000_0ffc | 0x07fc_0000_0000_0000;
/// Bits a page or block descriptor must leave clear: 48..49 (RES0 with 48-bit output
/// addresses) and 59..63 (PBHA / ignored, not used by this crate).
pub(crate) const LEAF_RESERVED: u64 = 0x0003_0000_0000_0000 | 0xf800_0000_0000_0000;
/// Address bits a 2 MiB block must leave clear (12..20).
pub(crate) const RESERVED_2M: u64 = 0x001f_f000;
/// Address bits a 1 GiB block must leave clear (12..29).
pub(crate) const RESERVED_1G: u64 = 0x3fff_f000;
/// Table attribute bits: AF (10, FEAT_HAFT), software (55..58), PXNTable, UXNTable,
/// APTable, NSTable (59..63).
pub(crate) const TABLE_ATTR_MASK: u64 = 1 << 10 | 0xff80_0000_0000_0000;
/// Bits a table descriptor must leave clear: the ignored bits 2..9, 11 and 52..54 (not
/// kept by this crate) and the RES0 bits 48..51.
pub(crate) const TABLE_RESERVED: u64 =
    !(TABLE_ATTR_MASK | OUTPUT_ADDRESS_MASK | VALID | TABLE_OR_PAGE);

/// The MAIR_EL1 value devpriv's kernels program and [`Profile::DEVPRIV`] assumes:
/// AttrIndx 0 Device-nGnRnE (0x00), 1 Normal write-back read/write-allocate inner and
/// outer (0xff), 2 Normal non-cacheable (0x44), 3 Device-nGnRE (0x04), 4 Normal
/// write-through read-allocate (0xbb); 5..7 unused (0x00, read as Device-nGnRnE).
/// A Linux guest's is [`crate::profile::LINUX_MAIR_VALUE`].
pub const MAIR_VALUE: u64 = 0xbb_0444_ff00;

/// The shareability field (SH) of a page or block descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Shareability {
    /// Non-shareable.
    NonShareable = 0,
    /// 0b01, reserved by the architecture (kept as it is).
    Reserved = 1,
    /// Outer shareable.
    OuterShareable = 2,
    /// Inner shareable (what Linux uses).
    InnerShareable = 3,
}

impl Shareability {
    /// The field value.
    pub const fn into_bits(self) -> u8 {
        self as u8
    }

    /// The shareability of field value `bits` (its low two bits).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::NonShareable,
            1 => Self::Reserved,
            2 => Self::OuterShareable,
            _ => Self::InnerShareable,
        }
    }
}

/// A page descriptor (level 1, Arm level 3; bits `[1:0]` = 0b11).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PageDescriptor {
    /// Bit 0: valid.
    pub valid: bool,
    /// Bit 1: set for a page descriptor.
    pub page: bool,
    /// AttrIndx (2..4): index into MAIR_EL1.
    #[bits(3)]
    pub attr_indx: u8,
    /// NS (5): non-secure output address (secure state only).
    pub ns: bool,
    /// AP`[1]` (6): EL0 may access.
    pub el0_access: bool,
    /// AP`[2]` (7): read-only.
    pub read_only: bool,
    /// SH (8..9): shareability.
    #[bits(2)]
    pub shareability: Shareability,
    /// AF (10): access flag.
    pub accessed: bool,
    /// nG (11): not global (tagged with the ASID).
    pub not_global: bool,
    /// Bits 12..47: the output frame number.
    #[bits(36)]
    pub frame: u64,
    /// Bits 48..49: RES0 with 48-bit output addresses.
    #[bits(2)]
    pub res0: u8,
    /// GP (50): BTI guarded page.
    pub guarded: bool,
    /// DBM (51): dirty bit modifier.
    pub dbm: bool,
    /// Contiguous (52): one of 16 adjacent entries mapping a contiguous range.
    pub contiguous: bool,
    /// PXN (53): privileged execute-never.
    pub pxn: bool,
    /// UXN (54): unprivileged execute-never.
    pub uxn: bool,
    /// Bits 55..58: reserved for software.
    #[bits(4)]
    pub software: u8,
    /// Bits 59..63: PBHA / ignored; this crate requires them clear.
    #[bits(5)]
    pub ignored_high: u8,
}

/// A block descriptor (levels 2 and 3, Arm levels 2 and 1; bits `[1:0]` = 0b01). The output
/// address bits below the block size (12..20 for 2 MiB, 12..29 for 1 GiB) are RES0.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct BlockDescriptor {
    /// Bit 0: valid.
    pub valid: bool,
    /// Bit 1: clear for a block descriptor.
    pub table: bool,
    /// AttrIndx (2..4): index into MAIR_EL1.
    #[bits(3)]
    pub attr_indx: u8,
    /// NS (5): non-secure output address (secure state only).
    pub ns: bool,
    /// AP`[1]` (6): EL0 may access.
    pub el0_access: bool,
    /// AP`[2]` (7): read-only.
    pub read_only: bool,
    /// SH (8..9): shareability.
    #[bits(2)]
    pub shareability: Shareability,
    /// AF (10): access flag.
    pub accessed: bool,
    /// nG (11): not global.
    pub not_global: bool,
    /// Bits 12..47: the output frame number (its low 9 or 18 bits must be 0).
    #[bits(36)]
    pub frame: u64,
    /// Bits 48..49: RES0 with 48-bit output addresses.
    #[bits(2)]
    pub res0: u8,
    /// GP (50): BTI guarded page.
    pub guarded: bool,
    /// DBM (51): dirty bit modifier.
    pub dbm: bool,
    /// Contiguous (52).
    pub contiguous: bool,
    /// PXN (53): privileged execute-never.
    pub pxn: bool,
    /// UXN (54): unprivileged execute-never.
    pub uxn: bool,
    /// Bits 55..58: reserved for software.
    #[bits(4)]
    pub software: u8,
    /// Bits 59..63: PBHA / ignored; this crate requires them clear.
    #[bits(5)]
    pub ignored_high: u8,
}

/// A table descriptor (levels 2..4, Arm levels 2..0; bits `[1:0]` = 0b11).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct TableDescriptor {
    /// Bit 0: valid.
    pub valid: bool,
    /// Bit 1: set for a table descriptor.
    pub table: bool,
    /// Bits 2..9: ignored by the MMU; this crate requires them clear.
    #[bits(8)]
    pub ignored_low: u8,
    /// Bit 10: table access flag (FEAT_HAFT), ignored without it.
    pub accessed: bool,
    /// Bit 11: ignored; this crate requires it clear.
    pub ignored_11: bool,
    /// Bits 12..47: the frame of the next-level table.
    #[bits(36)]
    pub frame: u64,
    /// Bits 48..51: RES0 with 48-bit output addresses.
    #[bits(4)]
    pub res0: u8,
    /// Bits 52..54: ignored; this crate requires them clear.
    #[bits(3)]
    pub ignored_high: u8,
    /// Bits 55..58: ignored by the MMU, free for software.
    #[bits(4)]
    pub software: u8,
    /// PXNTable (59): no privileged execution below.
    pub pxn_table: bool,
    /// UXNTable (60): no unprivileged execution below.
    pub uxn_table: bool,
    /// APTable`[0]` (61): no EL0 access below.
    pub no_el0_table: bool,
    /// APTable`[1]` (62): no writes below.
    pub read_only_table: bool,
    /// NSTable (63): the levels below are non-secure.
    pub ns_table: bool,
}

/// The attributes of a page or block, in their raw descriptor positions. The valid and
/// type bits and the output address are not part of it.
///
/// `Default` is [`LeafAttributes::from_property`] of the default [`PageProperty`]:
/// normal write-back memory (AttrIndx 1), inner shareable, read-only, EL1-only,
/// PXN and UXN set, not global, AF clear.
///
/// Mapping to [`PageProperty`]: `writable` = AP`[2]` clear or DBM set (hardware
/// dirty-state management clears AP`[2]` on the first write, so Linux maps a writable
/// clean page read-only with DBM); `user` = AP`[1]`;
/// `executable` = !UXN for a user page and !PXN for a kernel page (the other XN bit is
/// set by [`LeafAttributes::from_property`]: user pages are never privileged-executable);
/// `global` = nG clear; `accessed` = AF; `dirty` = DBM set and AP`[2]` clear (hardware
/// dirty-state semantics: a writable-dirty page). A dirty read-only page therefore has
/// no encoding: `from_property` drops `dirty` when `writable` is false.
/// Memory types are read through a profile's MAIR table ([`Profile::mair`]); under
/// [`Profile::DEVPRIV`] they follow [`MAIR_VALUE`], where [`MemoryType::WriteProtect`]
/// has no index and `from_property` gives it write-through, and
/// [`MemoryType::Tagged`] none either and `from_property` gives it write-back.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct PageAttributes {
    #[bits(2)]
    __: u8,
    /// AttrIndx (2..4): index into MAIR_EL1.
    #[bits(3, default = 1)]
    pub attr_indx: u8,
    /// NS (5).
    pub ns: bool,
    /// AP`[1]` (6): EL0 may access.
    pub el0_access: bool,
    /// AP`[2]` (7): read-only.
    #[bits(default = true)]
    pub read_only: bool,
    /// SH (8..9): shareability.
    #[bits(2, default = Shareability::InnerShareable)]
    pub shareability: Shareability,
    /// AF (10): access flag.
    pub accessed: bool,
    /// nG (11): not global.
    #[bits(default = true)]
    pub not_global: bool,
    #[bits(38)]
    __: u64,
    /// GP (50): BTI guarded page.
    pub guarded: bool,
    /// DBM (51): dirty bit modifier.
    pub dbm: bool,
    /// Contiguous (52).
    pub contiguous: bool,
    /// PXN (53): privileged execute-never.
    #[bits(default = true)]
    pub pxn: bool,
    /// UXN (54): unprivileged execute-never.
    #[bits(default = true)]
    pub uxn: bool,
    /// Bits 55..58: reserved for software.
    #[bits(4)]
    pub software: u8,
    #[bits(5)]
    __: u8,
}

impl PageAttributes {
    /// The memory type of the AttrIndx under `table`.
    #[inline]
    pub const fn memory_type_in(self, table: &AttributeTable) -> MemoryType {
        table.memory_type(self.attr_indx())
    }

    /// The memory type of the AttrIndx under [`MAIR_VALUE`].
    #[inline]
    pub const fn memory_type(self) -> MemoryType {
        self.memory_type_in(Profile::DEVPRIV.mair())
    }

    /// The AttrIndx of `memory` under [`MAIR_VALUE`]; a type it lacks takes the nearest
    /// (write-protect: write-through; tagged: write-back).
    pub const fn attr_indx_of(memory: MemoryType) -> u8 {
        let nearest = match memory {
            MemoryType::WriteProtect => MemoryType::WriteThrough,
            MemoryType::Tagged => MemoryType::WriteBack,
            other => other,
        };
        match Profile::DEVPRIV.mair().index_of(nearest) {
            Some(i) => i,
            None => unreachable!(),
        }
    }

    fn with_property(p: PageProperty, attr_indx: u8) -> Self {
        let (pxn, uxn) = if p.user {
            (true, !p.executable)
        } else {
            (!p.executable, true)
        };
        Self::from_bits(0)
            .with_attr_indx(attr_indx)
            .with_el0_access(p.user)
            .with_read_only(!p.writable)
            .with_shareability(Shareability::InnerShareable)
            .with_accessed(p.accessed)
            .with_not_global(!p.global)
            .with_dbm(p.dirty && p.writable)
            .with_pxn(pxn)
            .with_uxn(uxn)
    }

    /// The attribute bits as they sit in a descriptor.
    #[inline]
    pub(crate) const fn leaf_bits(self) -> u64 {
        self.into_bits() & LEAF_ATTR_MASK
    }

    /// The attributes of the page or block descriptor `raw`.
    #[inline]
    pub(crate) const fn from_leaf(raw: u64) -> Self {
        Self::from_bits(raw & LEAF_ATTR_MASK)
    }
}

impl LeafAttributes for PageAttributes {
    fn property_in(&self, profile: &Profile) -> PageProperty {
        PageProperty {
            // With DBM set the hardware clears AP[2] on the first write: a read-only DBM
            // page is writable and clean (how Linux maps every writable page; devpriv
            // never writes AP[2] with DBM).
            writable: !self.read_only() || self.dbm(),
            user: self.el0_access(),
            executable: if self.el0_access() {
                !self.uxn()
            } else {
                !self.pxn()
            },
            global: !self.not_global(),
            accessed: self.accessed(),
            dirty: self.dbm() && !self.read_only(),
            memory: self.memory_type_in(profile.mair()),
        }
    }

    fn from_property_in(p: PageProperty, profile: &Profile) -> Option<Self> {
        profile
            .mair()
            .index_of(p.memory)
            .map(|i| Self::with_property(p, i))
    }

    fn from_property(p: PageProperty) -> Self {
        Self::with_property(p, Self::attr_indx_of(p.memory))
    }
}

/// The attributes of a table descriptor: hierarchical limits on everything below, in
/// their raw positions. `Default` puts no limits (all clear).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct TableAttributes {
    #[bits(10)]
    __: u16,
    /// Bit 10: table access flag (FEAT_HAFT).
    pub accessed: bool,
    #[bits(44)]
    __: u64,
    /// Bits 55..58: free for software.
    #[bits(4)]
    pub software: u8,
    /// PXNTable (59): no privileged execution below.
    pub pxn_table: bool,
    /// UXNTable (60): no unprivileged execution below.
    pub uxn_table: bool,
    /// APTable`[0]` (61): no EL0 access below.
    pub no_el0_table: bool,
    /// APTable`[1]` (62): no writes below.
    pub read_only_table: bool,
    /// NSTable (63): the levels below are non-secure.
    pub ns_table: bool,
}

impl TableAttributes {
    /// The attribute bits as they sit in a table descriptor.
    #[inline]
    pub(crate) const fn table_bits(self) -> u64 {
        self.into_bits() & TABLE_ATTR_MASK
    }

    /// The attributes of the table descriptor `raw`.
    #[inline]
    pub(crate) const fn from_table(raw: u64) -> Self {
        Self::from_bits(raw & TABLE_ATTR_MASK)
    }
}

//! The portable, architecture-neutral view of one page-table entry.

use crate::format::PteFormat;
use crate::frame::Pfn;
use crate::level::PageSize;
use crate::software::SoftwareEntry;

/// One page-table entry as the kernel means it, whatever the architecture.
///
/// `F` is the entry format (for example [`crate::arch::x86_64::X86_64`]); it supplies the
/// architecture's attribute types. Decoding a raw entry with [`PteFormat::decode`] gives
/// an `Entry`, and [`PteFormat::encode`] turns one back into the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<F: PteFormat> {
    /// Nothing is mapped and nothing is recorded (Linux: `pte_none`).
    Absent,
    /// A pointer to the next-lower table.
    Table {
        /// The frame holding the next-lower table.
        next: Pfn,
        /// The table attributes (hierarchical permission limits).
        attrs: F::TableAttributes,
    },
    /// A present mapping of a page or block.
    Leaf {
        /// The first frame of the page or block; aligned to `size`.
        pfn: Pfn,
        /// The size mapped; always the leaf size of the level the entry sits at.
        size: PageSize,
        /// The leaf attributes.
        attrs: F::LeafAttributes,
    },
    /// A non-present entry that records something for the kernel: swap, migration,
    /// device-private, device-exclusive, hw-poison or a marker.
    Software(SoftwareEntry),
    /// A mapping the kernel keeps but the hardware must not use: `PROT_NONE`, or a NUMA
    /// hinting entry (Linux `pte_protnone`: x86_64 `_PAGE_PROTNONE` with P clear, arm64
    /// `PTE_PRESENT_INVALID` with the valid bit clear), or a huge entry Linux is
    /// invalidating (`pmdp_invalidate`: on x86_64 P clear with PS set, on arm64
    /// `PTE_PRESENT_INVALID`). The kernel treats it as present (it holds a frame and
    /// attributes); every CPU access faults.
    ProtNone {
        /// The first frame of the page or block; aligned to `size`.
        pfn: Pfn,
        /// The size mapped; always the leaf size of the level the entry sits at.
        size: PageSize,
        /// The attributes the mapping gets back when it is made accessible. On x86_64
        /// `global` reads false (bit 8 is the PROT_NONE marker); on aarch64 `not_global`
        /// reads true (bit 11 is the marker).
        attrs: F::LeafAttributes,
    },
}

impl<F: PteFormat> Entry<F> {
    /// The kebab-case name of the entry's kind, as `cargo xtask pte decode --json` prints
    /// it: `absent`, `table`, `leaf`, or a software kind name.
    pub const fn kind_name(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Table { .. } => "table",
            Self::Leaf { .. } => "leaf",
            Self::Software(sw) => sw.kind.name(),
            Self::ProtNone { .. } => "prot-none",
        }
    }

    /// Whether the hardware walker treats the entry as valid (a [`Self::ProtNone`] entry
    /// is not: the kernel treats it as present, the hardware does not).
    pub const fn is_present(&self) -> bool {
        matches!(self, Self::Table { .. } | Self::Leaf { .. })
    }
}

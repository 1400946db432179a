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
        }
    }

    /// Whether the hardware walker treats the entry as valid.
    pub const fn is_present(&self) -> bool {
        matches!(self, Self::Table { .. } | Self::Leaf { .. })
    }
}

//! Typed errors of the page-table operations.

use devpriv_pte::{DecodeError, EncodeError, Level};

use crate::frames::OutOfFrames;

/// Why a page-table operation did nothing (every operation that fails leaves the table
/// as it found it, unless the variant says otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PagingError {
    /// An address or length is not aligned to what the operation needs.
    Unaligned {
        /// The offending value.
        value: u64,
        /// The alignment it needs, in bytes.
        required: u64,
    },
    /// The range is empty, or its end is below its start.
    EmptyRange,
    /// The virtual address is outside what the table translates (beyond the root
    /// level's reach, or not canonical).
    OutOfRange {
        /// The offending address.
        va: u64,
    },
    /// Something is already mapped or recorded where the operation wanted an empty slot.
    Occupied {
        /// The start of the occupied entry's span.
        va: u64,
        /// The level of the occupied entry.
        level: Level,
    },
    /// The range cuts through a block (2 MiB or 1 GiB) or software entry; split it first.
    PartialBlock {
        /// The start of the block.
        va: u64,
        /// Its level.
        level: Level,
    },
    /// Nothing is mapped at the address.
    NotMapped {
        /// The address.
        va: u64,
    },
    /// The entry at the address cannot be split (not a block or a level-2 software entry).
    NotSplittable {
        /// The address.
        va: u64,
        /// The level the walk stopped at.
        level: Level,
    },
    /// The 512 entries of the table are not one compatible run (same meaning, contiguous
    /// frames or indices, aligned).
    NotCollapsible {
        /// The start of the table's span.
        va: u64,
    },
    /// The entry at the level asked for is a table ([`PageTable::slot`](crate::PageTable::slot)).
    IsTable {
        /// The start of the table entry's span.
        va: u64,
        /// Its level.
        level: Level,
    },
    /// Another thread changed the entry first; nothing was written.
    Raced {
        /// The address.
        va: u64,
    },
    /// A table entry was given where only leaves, software entries or absent entries
    /// may go ([`PageTable::install`](crate::PageTable::install)): tables are made only
    /// by the page table, from its frame allocator.
    TableEntry,
    /// The root level is not one the format supports.
    InvalidRootLevel(Level),
    /// The frame allocator ran out.
    OutOfFrames,
    /// An entry could not be encoded (for example a frame beyond the output-address width).
    Encode(EncodeError),
    /// An entry in the table does not decode.
    Corrupt {
        /// The address being walked.
        va: u64,
        /// The level of the entry.
        level: Level,
        /// Why it does not decode.
        error: DecodeError,
    },
}

impl From<OutOfFrames> for PagingError {
    fn from(_: OutOfFrames) -> Self {
        Self::OutOfFrames
    }
}

impl From<EncodeError> for PagingError {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unaligned { value, required } => {
                write!(f, "{value:#x} is not aligned to {required:#x} bytes")
            }
            Self::EmptyRange => f.write_str("the range is empty or ends before it starts"),
            Self::OutOfRange { va } => {
                write!(
                    f,
                    "virtual address {va:#x} is outside what the table translates"
                )
            }
            Self::Occupied { va, level } => write!(
                f,
                "the level-{} entry at {va:#x} is already in use",
                level.number()
            ),
            Self::PartialBlock { va, level } => write!(
                f,
                "the range cuts through the level-{} entry at {va:#x}; split it first",
                level.number()
            ),
            Self::NotMapped { va } => write!(f, "nothing is mapped at {va:#x}"),
            Self::NotSplittable { va, level } => write!(
                f,
                "the level-{} entry at {va:#x} cannot be split",
                level.number()
            ),
            Self::NotCollapsible { va } => write!(
                f,
                "the table at {va:#x} does not hold one run of 512 compatible entries"
            ),
            Self::IsTable { va, level } => write!(
                f,
                "the level-{} entry at {va:#x} is a table",
                level.number()
            ),
            Self::Raced { va } => write!(
                f,
                "another thread changed the entry at {va:#x} first; nothing was written"
            ),
            Self::TableEntry => {
                f.write_str("a table entry cannot be installed: tables are made by the page table")
            }
            Self::InvalidRootLevel(level) => write!(
                f,
                "level {} cannot be the root of this format",
                level.number()
            ),
            Self::OutOfFrames => f.write_str("the frame allocator ran out of frames"),
            Self::Encode(e) => write!(f, "the entry cannot be encoded: {e}"),
            Self::Corrupt { va, level, error } => write!(
                f,
                "the level-{} entry for {va:#x} does not decode: {error}",
                level.number()
            ),
        }
    }
}

impl core::error::Error for PagingError {}

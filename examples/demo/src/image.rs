//! Mapping a kernel's own image: the step both example kernels take before they load
//! their page table, and the first thing a kernel porting devpriv writes.

use core::fmt::Write;

use devpriv_paging::{FrameAllocator, PageTable, PagingError, PagingFormat, PhysMapper};
use devpriv_pte::PageSize;

use crate::scenario::kernel_attrs;

/// One section of a kernel image, identity mapped with one set of permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSection {
    /// The name printed in the transcript (`text`, `rodata`, `data+bss`).
    pub name: &'static str,
    /// The first byte (4 KiB aligned, as the linker scripts place sections).
    pub start: u64,
    /// One past the last byte; rounded up to 4 KiB when mapped.
    pub end: u64,
    /// Writes are allowed.
    pub writable: bool,
    /// Instructions may be fetched.
    pub executable: bool,
}

/// Identity-maps every section with the largest sizes alignment allows (4 KiB pages,
/// 2 MiB blocks where the section is 2 MiB aligned) and prints one line per section.
///
/// `dirty_when_writable` pre-sets the dirty bit of writable mappings (x86_64 sets it
/// anyway on the first write; aarch64 without hardware dirty management would fault).
/// The table is not live yet, so nothing needs invalidating.
pub fn map_image<F: PagingFormat, M: PhysMapper>(
    table: &mut PageTable<F, M>,
    sections: &[ImageSection],
    dirty_when_writable: bool,
    frames: &mut impl FrameAllocator,
    console: &mut impl Write,
) -> Result<(), PagingError> {
    for section in sections {
        let (start, end) = (section.start, (section.end + 0xfff) & !0xfff);
        let attrs = kernel_attrs::<F>(
            section.writable,
            section.executable,
            true,
            section.writable && dirty_when_writable,
        );
        table
            .map_range(start, start, end - start, attrs, frames)?
            .ignore(); // not loaded yet: nothing to invalidate
        let (pages, blocks) = leaf_counts(table, start, end);
        let _ = writeln!(
            console,
            "mmu: {:<8} {start:#010x}..{end:#010x} {}{} -> {pages} 4 KiB pages, {blocks} 2 MiB blocks",
            section.name,
            if section.writable { "RW" } else { "R-" },
            if section.executable { "X" } else { "-" },
        );
    }
    Ok(())
}

/// The number of 4 KiB pages and of larger blocks that map `start..end`.
pub fn leaf_counts<F: PagingFormat, M: PhysMapper>(
    table: &PageTable<F, M>,
    start: u64,
    end: u64,
) -> (u64, u64) {
    let (mut pages, mut blocks, mut va) = (0, 0, start);
    while va < end {
        let Some(translation) = table.translate(va) else {
            break;
        };
        let bytes = translation.size.bytes();
        match translation.size {
            PageSize::Size4KiB => pages += 1,
            _ => blocks += 1,
        }
        va = (va & !(bytes - 1)) + bytes;
    }
    (pages, blocks)
}

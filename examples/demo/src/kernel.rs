//! What both example kernels do the same way, written once: the memory they set aside
//! (frame pool, device memory, the workload's system memory), their image's sections
//! (from the symbols both linker scripts define), the device memory carved out of
//! their own mappings, the guard page below the boot stack, and the start of the demo.
//!
//! It assumes what both kernels are: identity mapped (virtual address = physical
//! address for the image), one CPU, and a boot stack whose lowest page is the
//! `boot_stack_guard` symbol.

use core::fmt::Write;

use devpriv_paging::{FrameAllocator, OffsetMapper, PageTable, PagingError, PagingFormat};
use devpriv_pte::{PageSize, Pfn};

use crate::cell::TryCell;
use crate::device::{DeviceMemory, DevicePage};
use crate::fault::Demo;
use crate::frames::BumpFrames;
use crate::image::{ImageSection, map_image};
use crate::platform::Platform;
use crate::resolve::DeviceResolver;
use crate::scenario::kernel_attrs;
use crate::stack::{COPY_WINDOW, DEVICE_BYTES, SYSTEM_FRAMES, StackMemory, StackStorage};

/// Bytes of RAM for page tables and for the pages parts 1–3 map.
pub const FRAME_POOL_BYTES: usize = 12 << 20;
/// Bytes of the workload's system memory.
pub const SYSTEM_BYTES: usize = SYSTEM_FRAMES * 4096;

/// `N` bytes, 2 MiB aligned (so that 2 MiB blocks map them, and 2 MiB frames come from
/// them).
#[repr(C, align(0x200000))]
pub struct Aligned<const N: usize>([u8; N]);

static mut FRAME_POOL: Aligned<FRAME_POOL_BYTES> = Aligned([0; FRAME_POOL_BYTES]);
static mut DEVICE_RAM: Aligned<{ DEVICE_BYTES as usize }> = Aligned([0; DEVICE_BYTES as usize]);
static mut SYSTEM_RAM: Aligned<SYSTEM_BYTES> = Aligned([0; SYSTEM_BYTES]);
static mut RESOLVER_PAGES: [DevicePage; crate::layout::DEVICE_PAGES] =
    [DevicePage::ZERO; crate::layout::DEVICE_PAGES];

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
    static boot_stack_guard: u8;
}

/// The kernel image's sections, from the linker scripts' symbols: text (read, execute),
/// rodata (read), data and bss (read, write).
pub fn image_sections() -> [ImageSection; 3] {
    let section = |name, start: *const u8, end: *const u8, writable, executable| ImageSection {
        name,
        start: start as u64,
        end: end as u64,
        writable,
        executable,
    };
    [
        section(
            "text",
            &raw const __text_start,
            &raw const __text_end,
            false,
            true,
        ),
        section(
            "rodata",
            &raw const __rodata_start,
            &raw const __rodata_end,
            false,
            false,
        ),
        section(
            "data+bss",
            &raw const __data_start,
            &raw const __kernel_end,
            true,
            false,
        ),
    ]
}

/// The frame allocator over the frame pool. Call once.
pub fn frame_pool() -> BumpFrames {
    let start = &raw mut FRAME_POOL as u64;
    // SAFETY: the pool is a static used for nothing else, reached at its physical
    // address (identity mapped, or the MMU is off); this runs once (the kernels call
    // it once, before anything else uses frames).
    unsafe { BumpFrames::new(start, start + FRAME_POOL_BYTES as u64) }
}

/// Builds the kernel's own table: the image identity mapped (see [`map_image`]); the
/// device memory taken out of that mapping and mapped at [`COPY_WINDOW`] instead, for
/// the copy engine alone; and the guard page below the boot stack left unmapped. The
/// table is not live yet, so nothing needs invalidating.
pub fn build_kernel_table<F: PagingFormat>(
    table: &mut PageTable<F, OffsetMapper>,
    dirty_when_writable: bool,
    frames: &mut impl FrameAllocator,
    console: &mut impl Write,
) -> Result<(), PagingError> {
    map_image(
        table,
        &image_sections(),
        dirty_when_writable,
        frames,
        console,
    )?;
    let device = &raw const DEVICE_RAM as u64;
    table
        .unmap(device, DEVICE_BYTES, frames, &devpriv_paging::NoInvalidate)?
        .ignore();
    let attrs = kernel_attrs::<F>(true, false, true, true);
    table
        .map_range(COPY_WINDOW, device, DEVICE_BYTES, attrs, frames)?
        .ignore();
    let _ = writeln!(
        console,
        "mmu: device   {device:#010x}..{:#010x} taken out of the kernel's mapping; the copy \
         engine reaches it at {COPY_WINDOW:#x}",
        device + DEVICE_BYTES
    );
    let guard = &raw const boot_stack_guard as u64;
    if table
        .translate(guard)
        .is_some_and(|t| t.size != PageSize::Size4KiB)
    {
        table
            .split(
                guard & !(PageSize::Size2MiB.bytes() - 1),
                frames,
                &devpriv_paging::NoInvalidate,
            )?
            .ignore();
    }
    table
        .unmap(guard, 4096, frames, &devpriv_paging::NoInvalidate)?
        .ignore();
    let _ = writeln!(
        console,
        "mmu: guard    {guard:#010x} unmapped below the boot stack (an overflow faults)"
    );
    Ok(())
}

/// The rest of a kernel's start, once its table is live and its trap handler borrows
/// `cell`: the demo state, the devpriv stack (built in `storage`), the transcript.
/// Returns whether every check held.
pub fn start<P: Platform>(
    cell: &'static TryCell<Demo<P, BumpFrames, DeviceResolver<'static>>>,
    storage: &'static StackStorage<P>,
    platform: P,
    tables: crate::tables::LiveTables<P::Format>,
    frames: BumpFrames,
) -> bool {
    let pages = &raw mut RESOLVER_PAGES;
    // SAFETY: `start` runs once, so this is the only reference to the static.
    let mut device = DeviceMemory::new(unsafe { &mut *pages });
    device.fill_pattern();
    let (root, root_level) = (tables.root(), tables.root_level());
    let mut demo = Demo::new(platform, tables, frames, DeviceResolver::new(device));
    let system = &raw mut SYSTEM_RAM as u64;
    // SAFETY: the live table is the kernel's (identity mapped, frames changed only
    // atomically from now on); the system memory is a static nothing else uses,
    // identity mapped; `build_kernel_table` mapped the device memory at the copy window
    // and nowhere else; this runs once.
    let stack = unsafe {
        storage.build(StackMemory {
            root,
            root_level,
            phys_offset: 0,
            system: Pfn::containing(system),
        })
    };
    demo.attach_stack(stack);
    if cell.set(demo).is_err() {
        return false;
    }
    crate::scenario::run(cell)
}

//! The kernel's own page table, built with devpriv, and turning the MMU on.
//!
//! QEMU starts us with the MMU off. The kernel allocates a root (Arm level 0, our level
//! 4: 48-bit virtual addresses, 4 KiB granule) from its frame pool and maps its image
//! with devpriv-pte entries — text read-only and executable, rodata read-only, data and
//! bss writable and execute-never, with 2 MiB blocks where the image is 2 MiB aligned
//! (the frame pool) and 4 KiB pages elsewhere — plus the PL011 as Device-nGnRE memory.
//! Then MAIR_EL1 (the memory types devpriv-pte's attribute indices assume), TCR_EL1,
//! TTBR0_EL1 and finally SCTLR_EL1.{M,C,I}.

use core::fmt::Write;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ID_AA64MMFR0_EL1, MAIR_EL1, ReadWriteable, Readable, SCTLR_EL1, TCR_EL1, TTBR0_EL1, Writeable,
};
use devpriv_demo::device::DevicePage;
use devpriv_demo::image::{ImageSection, map_image};
use devpriv_demo::layout::DEVICE_PAGES;
use devpriv_demo::{BumpFrames, LiveTables};
use devpriv_paging::{OffsetMapper, PageTable};
use devpriv_pte::arch::aarch64::{Aarch64, MAIR_VALUE, PageAttributes};
use devpriv_pte::{LeafAttributes, Level, MemoryType, PageProperty, PageSize, Pfn};

use crate::console::{PL011_BASE, Pl011};

/// Bytes of RAM set aside for page tables and for pages the demo maps.
const FRAME_POOL_BYTES: usize = 12 << 20;

/// The frame pool, 2 MiB aligned so 2 MiB blocks can come from it.
#[repr(C, align(0x200000))]
struct FramePool([u8; FRAME_POOL_BYTES]);

static mut FRAME_POOL: FramePool = FramePool([0; FRAME_POOL_BYTES]);
static mut DEVICE_MEMORY: [DevicePage; DEVICE_PAGES] = [DevicePage::ZERO; DEVICE_PAGES];

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The frame allocator over the frame pool. Call once.
pub fn frame_pool() -> BumpFrames {
    let start = &raw mut FRAME_POOL as u64;
    // SAFETY: the pool is a static used for nothing else, reached at its physical
    // address (MMU off, then identity mapped); `frame_pool` runs once.
    unsafe { BumpFrames::new(start, start + FRAME_POOL_BYTES as u64) }
}

/// The demo's device memory. Call once.
pub fn device_memory() -> &'static mut [DevicePage] {
    let pages = &raw mut DEVICE_MEMORY;
    // SAFETY: called once, so this is the only reference to the static.
    unsafe { &mut *pages }
}

/// Builds the kernel's page table, programs MAIR/TCR/TTBR0 and turns the MMU on.
pub fn init(frames: &mut BumpFrames) -> LiveTables<Aarch64> {
    // SAFETY: every frame the pool hands out is reached at its physical address (identity
    // mapped, or the MMU is off) and is used by nothing but the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let mut table = PageTable::<Aarch64, OffsetMapper>::new(Level::L4, mapper, frames)
        .expect("the frame pool has room for the root table");
    let section = |name, start: *const u8, end: *const u8, writable, executable| ImageSection {
        name,
        start: start as u64,
        end: end as u64,
        writable,
        executable,
    };
    let sections = [
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
    ];
    map_image(&mut table, &sections, false, frames, &mut Pl011).expect("mapping the kernel image");
    let uart = PageAttributes::from_property(PageProperty {
        writable: true,
        accessed: true,
        global: true,
        memory: MemoryType::Device,
        ..PageProperty::default()
    });
    table
        .map(
            PL011_BASE,
            Pfn::containing(PL011_BASE),
            PageSize::Size4KiB,
            uart,
            frames,
        )
        .expect("mapping the PL011")
        .ignore(); // not loaded yet: nothing to invalidate
    let _ = writeln!(
        Pl011,
        "mmu: pl011    {PL011_BASE:#010x} RW- Device-nGnRE -> 1 4 KiB page"
    );

    let ips = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
    MAIR_EL1.set(MAIR_VALUE);
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(16)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH0::Inner
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IPS.val(ips),
    );
    TTBR0_EL1.set_baddr(table.root().phys_addr());
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating every EL1 translation touches no memory; nothing is cached
    // from before (the MMU was off) but firmware may have left entries.
    unsafe { core::arch::asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    SCTLR_EL1.modify(
        SCTLR_EL1::M::Enable
            + SCTLR_EL1::C::Cacheable
            + SCTLR_EL1::I::Cacheable
            + SCTLR_EL1::A::Disable
            + SCTLR_EL1::WXN::Disable,
    );
    barrier::isb(barrier::SY);
    let _ = writeln!(
        Pl011,
        "mmu: MAIR_EL1={MAIR_VALUE:#x} TCR_EL1={:#x} (48-bit VA, 4 KiB granule) \
         TTBR0_EL1={:#x}; SCTLR_EL1.M|C|I on (devpriv tables)",
        TCR_EL1.get(),
        table.root().phys_addr()
    );
    // SAFETY: the table's frames came from the identity-mapped pool and are only
    // changed atomically from now on (by the demo and the MMU).
    unsafe { LiveTables::new(table.root(), table.root_level(), 0) }
}

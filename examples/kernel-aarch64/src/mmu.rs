//! The kernel's own page table, built with devpriv, and turning the MMU on.
//!
//! QEMU starts us with the MMU off. The kernel allocates a root (Arm level 0, our level
//! 4: 48-bit virtual addresses, 4 KiB granule) from its frame pool and maps its image
//! with devpriv-pte entries — text read-only and executable, rodata read-only, data and
//! bss writable and execute-never, with 2 MiB blocks where the image is 2 MiB aligned
//! (the frame pool) and 4 KiB pages elsewhere, the device memory taken out of that
//! mapping (the copy engine's window reaches it instead) and the page below the boot
//! stack left unmapped (the shared `devpriv_demo::kernel::build_kernel_table`) — plus
//! the PL011 as Device-nGnRE memory.
//! Then MAIR_EL1 (the memory types devpriv-pte's attribute indices assume), TCR_EL1,
//! TTBR0_EL1 and finally SCTLR_EL1.{M,C,I}.

use core::fmt::Write;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ID_AA64MMFR0_EL1, MAIR_EL1, ReadWriteable, Readable, SCTLR_EL1, TCR_EL1, TTBR0_EL1, Writeable,
};
use devpriv_demo::kernel::build_kernel_table;
use devpriv_demo::{BumpFrames, LiveTables};
use devpriv_paging::{OffsetMapper, PageTable};
use devpriv_pte::arch::aarch64::{Aarch64, MAIR_VALUE, PageAttributes};
use devpriv_pte::{LeafAttributes, Level, MemoryType, PageProperty, PageSize, Pfn};

use crate::console::{PL011_BASE, Pl011};

/// Builds the kernel's page table, programs MAIR/TCR/TTBR0 and turns the MMU on.
pub fn init(frames: &mut BumpFrames) -> LiveTables<Aarch64> {
    // SAFETY: every frame the pool hands out is reached at its physical address (identity
    // mapped, or the MMU is off) and is used by nothing but the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let mut table = PageTable::<Aarch64, OffsetMapper>::new(Level::L4, mapper, frames)
        .expect("the frame pool has room for the root table");
    build_kernel_table(&mut table, false, frames, &mut Pl011)
        .expect("mapping the kernel image and the device memory");
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

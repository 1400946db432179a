//! The kernel's own page table, built with devpriv, and the switch to it.
//!
//! The boot trampoline identity-mapped the first 1 GiB with 2 MiB pages, all writable
//! and executable. Here the kernel allocates a fresh root from its frame pool and maps
//! its image with devpriv-pte entries and the right permissions — text read-only and
//! executable, rodata read-only and no-execute, data and bss writable and no-execute,
//! with 2 MiB blocks where the image is 2 MiB aligned (the frame pool) and 4 KiB pages
//! elsewhere — takes the device memory out of that mapping (the copy engine's window
//! reaches it instead) and leaves the page below the boot stack unmapped (the shared
//! `devpriv_demo::kernel::build_kernel_table`), then programs the control registers the
//! entry format assumes and loads CR3.

use core::fmt::Write;

use devpriv_demo::kernel::build_kernel_table;
use devpriv_demo::{BumpFrames, LiveTables};
use devpriv_paging::{OffsetMapper, PageTable};
use devpriv_pte::Level;
use devpriv_pte::arch::x86_64::{PAT_MSR_VALUE, X86_64};
use x86_64::PhysAddr;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};
use x86_64::structures::paging::PhysFrame;

use crate::serial::Serial;

/// The IA32_PAT MSR.
const IA32_PAT: u32 = 0x277;

/// Builds the kernel's page table, programs PAT, CR4, EFER and CR0, and loads CR3.
pub fn init(frames: &mut BumpFrames) -> LiveTables<X86_64> {
    // SAFETY: every frame the pool hands out is reached at its physical address (identity
    // mapped, or the MMU is off) and is used by nothing but the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let mut table = PageTable::<X86_64, OffsetMapper>::new(Level::L4, mapper, frames)
        .expect("the frame pool has room for the root table");
    build_kernel_table(&mut table, true, frames, &mut Serial)
        .expect("mapping the kernel image and the device memory");

    // SAFETY: PAT_MSR_VALUE keeps index 0 write-back (as at reset), so the memory in use
    // keeps its type; the other indices are what devpriv-pte's memory types assume.
    unsafe { Msr::new(IA32_PAT).write(PAT_MSR_VALUE) };
    // SAFETY: enabling global pages, no-execute and supervisor write protection changes
    // no translation the running code depends on: the new table maps it with the same
    // addresses and with permissions that allow what it does.
    unsafe {
        Cr4::update(|f| f.insert(Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::PAGE_GLOBAL));
        Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
    }
    let frame = PhysFrame::containing_address(PhysAddr::new(table.root().phys_addr()));
    // SAFETY: the new table identity-maps the whole image — this code, its stack, the
    // IDT, the GDT and the frame pool — at the addresses in use now.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    let _ = writeln!(
        Serial,
        "mmu: PAT={PAT_MSR_VALUE:#018x} CR4.PAE|PGE EFER.LME|NXE CR0.WP; CR3={:#x} (devpriv tables)",
        table.root().phys_addr()
    );
    // SAFETY: the table's frames came from the identity-mapped pool and are only
    // changed atomically from now on (by the demo and the MMU).
    unsafe { LiveTables::new(table.root(), table.root_level(), 0) }
}

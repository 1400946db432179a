//! The devpriv example kernel for x86_64, booted by PVH.
#![no_std]
#![no_main]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod boot;
mod exit;
mod fault;
mod serial;
mod traps;

use core::fmt::Write;
use core::panic::PanicInfo;

use serial::Serial;

/// The Rust entry point, called by the boot trampoline in 64-bit mode on the boot
/// page table, with the physical address of the PVH start-info block.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u64) -> ! {
    Serial::init();
    // SAFETY: the loader passes the start-info block's physical address, identity
    // mapped by the boot page table.
    let info = unsafe { *(start_info as *const boot::HvmStartInfo) };
    let _ = writeln!(
        Serial,
        "devpriv-kernel x86_64: PVH start info at {start_info:#x}, magic {:#x}",
        info.magic
    );
    traps::init();
    exit::exit(true)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let _ = writeln!(Serial, "devpriv-kernel: panic: {info}");
    exit::exit(false)
}

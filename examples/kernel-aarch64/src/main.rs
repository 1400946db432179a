//! The devpriv example kernel for aarch64, QEMU `-M virt` at EL1.
#![no_std]
#![no_main]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod boot;
mod console;
mod exit;
mod fault;
mod traps;

use core::fmt::Write;
use core::panic::PanicInfo;

use aarch64_cpu::registers::{CurrentEL, Readable};

use console::Pl011;

/// The Rust entry point, called by `_start` with the MMU off, FP enabled and the
/// vectors installed; `dtb` is what the loader left in `x0`.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(dtb: u64) -> ! {
    let el = CurrentEL.get() >> 2;
    let _ = writeln!(Pl011, "devpriv-kernel aarch64: running at EL{el}, x0={dtb:#x}");
    exit::exit(true)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let _ = writeln!(Pl011, "devpriv-kernel: panic: {info}");
    exit::exit(false)
}

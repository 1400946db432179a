//! Leaving QEMU with a status through the `isa-debug-exit` device at port 0xf4, after
//! the result line both kernels print (`devpriv_demo::report::EXIT_PREFIX`).
//!
//! Writing `v` exits QEMU with status `(v << 1) | 1`: [`SUCCESS`] gives 33, [`FAILURE`]
//! gives 35. Status 0 never means success here (QEMU also exits 0 after a triple fault
//! with `-no-reboot`).

use core::fmt::Write;

use devpriv_demo::report::EXIT_PREFIX;
use x86_64::instructions::port::Port;

use crate::serial::Serial;

/// The value written for success (QEMU exits with 33).
pub const SUCCESS: u32 = 0x10;
/// The value written for failure (QEMU exits with 35).
pub const FAILURE: u32 = 0x11;

/// Exits QEMU with `SUCCESS` or `FAILURE`; halts forever if the device is missing.
pub fn exit(success: bool) -> ! {
    let _ = writeln!(
        Serial,
        "{EXIT_PREFIX}{}",
        if success { "PASS" } else { "FAIL" }
    );
    let value = if success { SUCCESS } else { FAILURE };
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device (or nothing on other machines).
    unsafe { Port::new(0xf4).write(value) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

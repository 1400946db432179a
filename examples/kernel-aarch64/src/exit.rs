//! Leaving QEMU: a result line on the UART, then PSCI `SYSTEM_OFF`.
//!
//! Power-off carries no status, so the line before it is the verdict
//! (`devpriv_demo::report::EXIT_PREFIX` and `PASS` or `FAIL`), which `cargo xtask qemu`
//! reads. Nothing here depends on semihosting, so the kernel exits the same way under
//! KVM on an arm64 host. PSCI is called with `hvc`, the conduit QEMU's `virt` machine
//! offers a kernel started at EL1.

use core::fmt::Write;

use devpriv_demo::report::EXIT_PREFIX;

use crate::console::Pl011;

/// PSCI 0.2 `SYSTEM_OFF`.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

/// Prints the result line and powers the machine off.
pub fn exit(success: bool) -> ! {
    let _ = writeln!(
        Pl011,
        "{EXIT_PREFIX}{}",
        if success { "PASS" } else { "FAIL" }
    );
    // SAFETY: PSCI SYSTEM_OFF takes its function identifier in x0 and does not return
    // when it succeeds; it reads and writes no memory of ours.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") PSCI_SYSTEM_OFF => _, options(nostack));
    }
    // PSCI missing or refused: stop here (xtask's timeout ends the run).
    loop {
        aarch64_cpu::asm::wfe();
    }
}

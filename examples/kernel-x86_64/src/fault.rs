//! Page faults: read CR2 and the error code, hand them to the demo.

use core::fmt::Write;

use crate::serial::Serial;
use crate::traps::TrapFrame;

/// Handles a page fault; returns to re-execute the faulting instruction.
pub fn page_fault(frame: &mut TrapFrame) {
    let address = x86_64::registers::control::Cr2::read_raw();
    let _ = writeln!(
        Serial,
        "page fault at {address:#x} error={:#x} rip={:#x}",
        frame.error_code, frame.rip
    );
    crate::exit::exit(false);
}

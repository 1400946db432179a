//! Synchronous aborts: decode ESR_EL1 and FAR_EL1, hand them to the demo.

use core::fmt::Write;

use crate::console::Pl011;
use crate::traps::TrapFrame;

/// Handles a data or instruction abort taken from EL1; returns to retry it.
pub fn abort(frame: &mut TrapFrame, esr: u64, far: u64) {
    let _ = writeln!(
        Pl011,
        "abort at {far:#x} esr={esr:#x} elr={:#x}",
        frame.elr
    );
    crate::exit::exit(false);
}

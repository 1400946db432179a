//! Synchronous aborts: ESR_EL1 and FAR_EL1 become a [`Fault`] for the demo's handler.

use core::fmt::Write;

use devpriv_demo::{Access, Cause, Fault};

use crate::console::Pl011;
use crate::traps::{EC_INSTRUCTION_ABORT, TrapFrame};

/// ISS bit 6 of a data abort: the access was a write.
const WNR: u64 = 1 << 6;
/// ISS bit 8 of a data abort: cache maintenance (reported as a write; we call it a read).
const CM: u64 = 1 << 8;
/// ISS bit 10: FAR_EL1 is not valid.
const FNV: u64 = 1 << 10;

/// Handles a data or instruction abort taken from EL1; returns to retry it.
pub fn abort(frame: &mut TrapFrame, esr: u64, far: u64) {
    let class = (esr >> 26) & 0x3f;
    let status = esr & 0x3f;
    let cause = match status & 0x3c {
        0x04 => Some(Cause::NotPresent),
        0x08 => Some(Cause::AccessFlag),
        0x0c => Some(Cause::Permission),
        _ => None,
    };
    let (Some(cause), false) = (cause, esr & FNV != 0) else {
        let _ = writeln!(
            Pl011,
            "devpriv-kernel: abort with fault status {status:#x} at {far:#x} (ESR_EL1 {esr:#x}, \
             ELR_EL1 {:#x}) is not a translation, access-flag or permission fault",
            frame.elr
        );
        crate::exit::exit(false);
    };
    let access = if class == EC_INSTRUCTION_ABORT {
        Access::Execute
    } else if esr & WNR != 0 && esr & CM == 0 {
        Access::Write
    } else {
        Access::Read
    };
    let fault = Fault {
        address: far,
        access,
        cause,
    };
    if let Err(why) = devpriv_demo::fault::dispatch(&crate::DEMO, fault) {
        let _ = writeln!(
            Pl011,
            "devpriv-kernel: abort at {far:#x} (ESR_EL1 {esr:#x}, ELR_EL1 {:#x}): {why}",
            frame.elr
        );
        crate::exit::exit(false);
    }
}

//! Page faults: CR2 and the error code become a [`Fault`] for the demo's handler.

use core::fmt::Write;

use devpriv_demo::{Access, Cause, Fault};
use x86_64::registers::control::Cr2;

use crate::serial::Serial;
use crate::traps::TrapFrame;

/// Error code bit 0: the fault was a protection violation (the entry was present).
const PRESENT: u64 = 1 << 0;
/// Error code bit 1: a write.
const WRITE: u64 = 1 << 1;
/// Error code bit 3: a reserved bit was set in a paging entry.
const RESERVED: u64 = 1 << 3;
/// Error code bit 4: an instruction fetch.
const FETCH: u64 = 1 << 4;

/// Handles a page fault; returns to re-execute the faulting instruction.
pub fn page_fault(frame: &mut TrapFrame) {
    let address = Cr2::read_raw();
    let code = frame.error_code;
    if code & RESERVED != 0 {
        let _ = writeln!(
            Serial,
            "devpriv-kernel: page fault at {address:#x}: reserved bit set in a paging entry \
             (error {code:#x}, rip {:#x})",
            frame.rip
        );
        crate::exit::exit(false);
    }
    let access = if code & FETCH != 0 {
        Access::Execute
    } else if code & WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    };
    let cause = if code & PRESENT != 0 {
        Cause::Permission
    } else {
        Cause::NotPresent
    };
    let fault = Fault {
        address,
        access,
        cause,
    };
    if let Err(why) = devpriv_demo::fault::dispatch(&crate::DEMO, fault) {
        let _ = writeln!(
            Serial,
            "devpriv-kernel: page fault at {address:#x} (error {code:#x}, rip {:#x}): {why}",
            frame.rip
        );
        crate::exit::exit(false);
    }
}

//! The demo's architecture hooks for x86_64.

use core::fmt::Write;

use devpriv_demo::Platform;
use devpriv_paging::tlb::X86_64Tlb;
use devpriv_pte::arch::x86_64::X86_64;

use crate::serial::Serial;

/// x86_64: COM1 console, devpriv-paging's `invlpg` TLB maintenance, coherent
/// instruction fetch.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86Platform;

impl Platform for X86Platform {
    type Format = X86_64;
    type Tlb = X86_64Tlb;
    const NAME: &'static str = "x86_64";
    const HARDWARE_ACCESSED_DIRTY: bool = true;
    /// `ret`.
    const RETURN_INSTRUCTION: &'static [u8] = &[0xc3];

    const CYCLE_UNIT: &'static str = "TSC cycles";

    fn cycles() -> u64 {
        // SAFETY: `rdtsc` only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn write_str(&self, s: &str) {
        let _ = Serial.write_str(s);
    }

    fn tlb(&self) -> &X86_64Tlb {
        // `invlpg` per page, CR3 reload for everything; page-table stores are ordinary
        // (TSO) stores, so publishing needs no barrier.
        &X86_64Tlb
    }

    fn sync_icache(&self, _va: u64, _len: usize) {
        // x86 keeps instruction fetch coherent with stores.
    }
}

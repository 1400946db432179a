//! The demo's architecture hooks for x86_64.

use core::fmt::Write;

use devpriv_demo::Platform;
use devpriv_pte::arch::x86_64::X86_64;
use x86_64::VirtAddr;

use crate::serial::Serial;

/// x86_64: COM1 console, `invlpg`, coherent instruction fetch.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86Platform;

impl Platform for X86Platform {
    type Format = X86_64;
    const NAME: &'static str = "x86_64";
    const HARDWARE_ACCESSED_DIRTY: bool = true;
    /// `ret`.
    const RETURN_INSTRUCTION: &'static [u8] = &[0xc3];

    fn write_str(&self, s: &str) {
        let _ = Serial.write_str(s);
    }

    fn flush_page(&self, va: u64) {
        // Page-table stores are ordinary (TSO) stores; `invlpg` drops the page's
        // translation and the paging-structure caches for it.
        x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va));
    }

    fn sync_icache(&self, _va: u64, _len: usize) {
        // x86 keeps instruction fetch coherent with stores.
    }
}

//! The demo's architecture hooks for aarch64.

use core::arch::asm;
use core::fmt::Write;

use devpriv_demo::Platform;
use devpriv_paging::tlb::Aarch64Tlb;
use devpriv_pte::arch::aarch64::Aarch64;

use crate::console::Pl011;

/// aarch64: PL011 console, devpriv-paging's TLB maintenance, explicit instruction-cache
/// maintenance.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64Platform;

impl Platform for Aarch64Platform {
    type Format = Aarch64;
    type Tlb = Aarch64Tlb;
    const NAME: &'static str = "aarch64";
    /// The Cortex-A57 (like many cores) has no FEAT_HAFDBS: the access flag is managed
    /// by software through access-flag faults.
    const HARDWARE_ACCESSED_DIRTY: bool = false;
    /// `ret` (0xd65f03c0), little-endian.
    const RETURN_INSTRUCTION: &'static [u8] = &[0xc0, 0x03, 0x5f, 0xd6];

    const CYCLE_UNIT: &'static str = "generic-timer ticks";

    fn cycles() -> u64 {
        let ticks: u64;
        // SAFETY: `isb; mrs cntvct_el0` only reads the virtual counter (after earlier
        // instructions, so the read is not hoisted).
        unsafe {
            asm!("isb", "mrs {t}, cntvct_el0", t = out(reg) ticks, options(nomem, nostack, preserves_flags));
        }
        ticks
    }

    fn write_str(&self, s: &str) {
        let _ = Pl011.write_str(s);
    }

    fn tlb(&self) -> &Aarch64Tlb {
        // `dsb ishst` before, `tlbi vae1is` per page (the demo's leaves are global),
        // `dsb ish; isb` after.
        &Aarch64Tlb
    }

    fn sync_icache(&self, va: u64, len: usize) {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 (the cache type register) has no side effects.
        unsafe {
            asm!("mrs {c}, ctr_el0", c = out(reg) ctr, options(nomem, nostack, preserves_flags))
        };
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut address = va & !(line - 1);
        while address < va + len as u64 {
            // SAFETY: cleaning a data-cache line to the point of unification writes
            // back what is already there; `va` is mapped.
            unsafe { asm!("dc cvau, {a}", a = in(reg) address, options(nostack, preserves_flags)) };
            address += line;
        }
        // SAFETY: barriers and an instruction-cache invalidation change no data.
        unsafe {
            asm!(
                "dsb ish",
                "ic iallu",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    }
}

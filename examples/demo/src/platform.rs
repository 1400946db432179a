//! What a kernel supplies to the demo: its entry format, console, TLB and cache
//! maintenance.

use core::fmt;

use devpriv_paging::{PagingFormat, TlbInvalidate};

/// The architecture-specific operations the demo needs. Each example kernel implements
/// it in a few lines (`platform.rs` in the kernel crates).
pub trait Platform: 'static {
    /// The page-table entry format the MMU reads.
    type Format: PagingFormat;

    /// TLB maintenance (devpriv-paging's `X86_64Tlb` / `Aarch64Tlb` in the kernels),
    /// made from nothing (the devpriv stack's address space holds its own).
    type Tlb: TlbInvalidate + Default + Send + Sync;

    /// The architecture's name as the transcript prints it (`x86_64`, `aarch64`).
    const NAME: &'static str;

    /// Whether the MMU sets the accessed and dirty bits itself (x86_64). Without it
    /// (aarch64 without FEAT_HAFDBS) an access to a page whose access flag is clear
    /// faults and the handler sets the flag.
    const HARDWARE_ACCESSED_DIRTY: bool;

    /// The machine code of a function that returns immediately (`ret`), used to test
    /// instruction fetch from a no-execute page.
    const RETURN_INSTRUCTION: &'static [u8];

    /// What [`Self::cycles`] counts, for the transcript (`TSC cycles`, `timer ticks`).
    const CYCLE_UNIT: &'static str;

    /// Writes `s` to the console.
    fn write_str(&self, s: &str);

    /// A free-running counter for timing (x86_64 `rdtsc`, aarch64 `CNTVCT_EL0`).
    fn cycles() -> u64;

    /// The TLB maintenance flush tokens are carried out with (x86_64 `invlpg`; aarch64
    /// `dsb ishst; tlbi vae1is; dsb ish; isb`).
    fn tlb(&self) -> &Self::Tlb;

    /// Makes `len` bytes of instructions written by data stores at virtual address `va`
    /// visible to instruction fetch (nothing on x86_64; `dc cvau`, `ic iallu`, barriers
    /// on aarch64).
    fn sync_icache(&self, va: u64, len: usize);
}

/// A [`fmt::Write`] adapter over a platform's console, which can be muted (while the
/// demo times faults, printing would dominate what is measured).
pub struct Console<'a, P: Platform> {
    platform: &'a P,
    muted: bool,
}

impl<'a, P: Platform> Console<'a, P> {
    /// The console of `platform`; writes are dropped if `muted`.
    pub const fn new(platform: &'a P, muted: bool) -> Self {
        Self { platform, muted }
    }
}

impl<P: Platform> fmt::Write for Console<'_, P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.muted {
            self.platform.write_str(s);
        }
        Ok(())
    }
}

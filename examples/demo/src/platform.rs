//! What a kernel supplies to the demo: its entry format, console, TLB and cache
//! maintenance.

use core::fmt;

use devpriv_paging::{PagingFormat, TlbInvalidate};

/// The architecture-specific operations the demo needs. Each example kernel implements
/// it in a few lines (`platform.rs` in the kernel crates).
pub trait Platform {
    /// The page-table entry format the MMU reads.
    type Format: PagingFormat;

    /// TLB maintenance (devpriv-paging's `X86_64Tlb` / `Aarch64Tlb` in the kernels).
    type Tlb: TlbInvalidate;

    /// The architecture's name as the transcript prints it (`x86_64`, `aarch64`).
    const NAME: &'static str;

    /// Whether the MMU sets the accessed and dirty bits itself (x86_64). Without it
    /// (aarch64 without FEAT_HAFDBS) an access to a page whose access flag is clear
    /// faults and the handler sets the flag.
    const HARDWARE_ACCESSED_DIRTY: bool;

    /// The machine code of a function that returns immediately (`ret`), used to test
    /// instruction fetch from a no-execute page.
    const RETURN_INSTRUCTION: &'static [u8];

    /// Writes `s` to the console.
    fn write_str(&self, s: &str);

    /// The TLB maintenance flush tokens are carried out with (x86_64 `invlpg`; aarch64
    /// `dsb ishst; tlbi vae1is; dsb ish; isb`).
    fn tlb(&self) -> &Self::Tlb;

    /// Makes `len` bytes of instructions written by data stores at virtual address `va`
    /// visible to instruction fetch (nothing on x86_64; `dc cvau`, `ic iallu`, barriers
    /// on aarch64).
    fn sync_icache(&self, va: u64, len: usize);
}

/// A [`fmt::Write`] adapter over a platform's console.
pub struct Console<'a, P: Platform>(pub &'a P);

impl<P: Platform> fmt::Write for Console<'_, P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s);
        Ok(())
    }
}

//! TLB invalidation and the barriers around it: the [`TlbInvalidate`] trait and its
//! implementations.
//!
//! The architecture implementations (`X86_64Tlb`, `Aarch64Tlb`) exist only when
//! compiling for that architecture outside tests; every other part of the crate works
//! with any implementation, such as the software MMU of the `model` feature.

/// Invalidates cached translations of the current address space.
///
/// A flush is `publish`, any number of `invalidate_page` / one `invalidate_all`, then
/// `complete`; [`Flush::flush`](crate::Flush::flush) calls them in that order.
pub trait TlbInvalidate {
    /// Makes earlier page-table writes visible to the table walkers of every CPU
    /// (aarch64 `dsb ishst`; nothing on x86_64).
    fn publish(&self) {}

    /// Invalidates the translation of the page or block containing `va`, and any cached
    /// walk through the tables on its path.
    fn invalidate_page(&self, va: u64);

    /// Invalidates every non-global translation (and, where the architecture does, the
    /// global ones too; see the implementation).
    fn invalidate_all(&self);

    /// Waits until the invalidations are complete on every CPU and resynchronises the
    /// instruction stream (aarch64 `dsb ish; isb`; nothing on x86_64).
    fn complete(&self) {}
}

impl<T: TlbInvalidate + ?Sized> TlbInvalidate for &T {
    fn publish(&self) {
        (**self).publish()
    }
    fn invalidate_page(&self, va: u64) {
        (**self).invalidate_page(va)
    }
    fn invalidate_all(&self) {
        (**self).invalidate_all()
    }
    fn complete(&self) {
        (**self).complete()
    }
}

/// Invalidates nothing: for tables that no CPU uses yet (built before they are loaded
/// into CR3 / TTBR), or whose owner flushes by other means.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInvalidate;

impl TlbInvalidate for NoInvalidate {
    fn invalidate_page(&self, _va: u64) {}
    fn invalidate_all(&self) {}
}

/// The x86_64 TLB of the executing CPU: `invlpg` for one page, a CR3 reload for all.
///
/// A CR3 reload leaves global translations in place; tables that map global pages
/// should change them with [`invalidate_page`](TlbInvalidate::invalidate_page) (the
/// batching flusher falls back to a CR3 reload past its threshold). Other CPUs need a
/// shootdown, which is the kernel's business.
#[cfg(all(target_arch = "x86_64", not(test)))]
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64Tlb;

#[cfg(all(target_arch = "x86_64", not(test)))]
impl TlbInvalidate for X86_64Tlb {
    #[inline]
    fn invalidate_page(&self, va: u64) {
        // SAFETY: `invlpg` only drops cached translations; it reads no memory and
        // cannot make any mapping the kernel relies on disappear.
        unsafe {
            core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags));
        }
    }

    #[inline]
    fn invalidate_all(&self) {
        // SAFETY: writing CR3 back with its own value keeps the same address space and
        // only drops the non-global cached translations.
        unsafe {
            core::arch::asm!(
                "mov {tmp}, cr3",
                "mov cr3, {tmp}",
                tmp = out(reg) _,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// The aarch64 TLBs of the inner-shareable domain (every CPU): `tlbi vae1is` for one
/// page, `tlbi vmalle1is` for all, between `dsb ishst` and `dsb ish; isb`.
///
/// The `vae1is` operand carries ASID 0 (bits 63:48 clear), so it invalidates the
/// address's global entries and those tagged with ASID 0 — what a kernel that does not
/// use ASIDs needs. A kernel that does writes its own implementation (with its ASID in
/// the operand, or `vaae1is` for every ASID).
#[cfg(all(target_arch = "aarch64", not(test)))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64Tlb;

#[cfg(all(target_arch = "aarch64", not(test)))]
impl TlbInvalidate for Aarch64Tlb {
    #[inline]
    fn publish(&self) {
        // SAFETY: a barrier; it changes no state the program can observe except ordering.
        unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) }
    }

    #[inline]
    fn invalidate_page(&self, va: u64) {
        // The operand holds VA[55:12] in bits 43:0 and the ASID (0) in bits 63:48.
        let operand = (va >> 12) & ((1 << 44) - 1);
        // SAFETY: TLB maintenance only drops cached translations.
        unsafe {
            core::arch::asm!("tlbi vae1is, {}", in(reg) operand, options(nostack, preserves_flags))
        }
    }

    #[inline]
    fn invalidate_all(&self) {
        // SAFETY: TLB maintenance only drops cached translations.
        unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack, preserves_flags)) }
    }

    #[inline]
    fn complete(&self) {
        // SAFETY: barriers; they change no state the program can observe except ordering.
        unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) }
    }
}

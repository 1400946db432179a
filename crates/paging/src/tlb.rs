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

    /// Invalidates every translation, global ones included. Page-by-page invalidation
    /// reaches global entries, and a full flush stands in for it past
    /// [`FULL_FLUSH_THRESHOLD`](crate::FULL_FLUSH_THRESHOLD) pages, so it must too: a
    /// full flush that kept them (an x86_64 CR3 reload) would leave stale global
    /// translations, possibly into table frames already freed.
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

/// The x86_64 TLB of the executing CPU: `invlpg` for one page; for all, `invpcid`
/// type 2 (every context, global translations included) where the CPU has it, else a
/// toggle of CR4.PGE (which drops global translations too; a CR3 reload would not).
/// Other CPUs need a shootdown, which is the kernel's business.
#[cfg(all(target_arch = "x86_64", not(test)))]
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64Tlb;

/// Whether the CPU has INVPCID: 0 not looked yet, 1 yes, 2 no.
#[cfg(all(target_arch = "x86_64", not(test)))]
static INVPCID: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

#[cfg(all(target_arch = "x86_64", not(test)))]
fn has_invpcid() -> bool {
    use core::sync::atomic::Ordering;
    match INVPCID.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // CPUID leaf 7, EBX bit 10 (leaf 7 exists where leaf 0 says so).
            let max = core::arch::x86_64::__cpuid(0).eax;
            let yes = max >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 10) != 0;
            INVPCID.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

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

    fn invalidate_all(&self) {
        if has_invpcid() {
            // Type 2: every PCID, global translations included; the descriptor is read
            // but its contents are ignored for this type.
            let descriptor = [0u64; 2];
            // SAFETY: `invpcid` only drops cached translations; the descriptor is a
            // valid 16-byte buffer on our stack.
            unsafe {
                core::arch::asm!(
                    "invpcid {kind}, [{desc}]",
                    kind = in(reg) 2u64,
                    desc = in(reg) descriptor.as_ptr(),
                    options(nostack, preserves_flags, readonly),
                );
            }
            return;
        }
        // SAFETY: clearing and restoring CR4.PGE (interrupts off in between, as Linux
        // does) drops every cached translation, global ones included, and changes no
        // mapping; with PGE clear there are no global translations and a CR3 reload
        // drops everything.
        unsafe {
            core::arch::asm!(
                "pushfq",
                "cli",
                "mov {cr4}, cr4",
                "test {cr4}, {pge}",
                "jz 2f",
                "mov {tmp}, {cr4}",
                "xor {tmp}, {pge}",
                "mov cr4, {tmp}",
                "mov cr4, {cr4}",
                "jmp 3f",
                "2:",
                "mov {tmp}, cr3",
                "mov cr3, {tmp}",
                "3:",
                "popfq",
                cr4 = out(reg) _,
                tmp = out(reg) _,
                pge = const 1u64 << 7,
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

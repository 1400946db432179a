//! Break-before-make: which live changes of an entry need an invalid entry and a TLB
//! invalidation in between.
//!
//! The Arm architecture (Arm ARM D8.16, "TLB maintenance requirements and
//! break-before-make") requires the sequence *write invalid, invalidate, write new*
//! when a valid entry is replaced by another valid entry that changes the output
//! address, the block size (block ↔ table), the memory type or shareability, or the
//! nG bit, and for a change of the contiguous hint. Changing only permissions (AP, XN,
//! DBM), the access flag, or software bits needs no break. x86_64 has no such rule (the
//! TLB may hold either translation until the invalidation), so its answer is always no.
//!
//! [`needs_break_before_make`] is a pure function of the two decoded entries;
//! [`PageTable`](crate::PageTable) follows it on every live change.

use devpriv_pte::arch::aarch64::{Aarch64, PageAttributes};
use devpriv_pte::{Entry, Level};

use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::sync::{AtomicU64, Ordering};
use crate::tlb::TlbInvalidate;

/// Whether replacing `old` by `new` in a live table of format `F` needs break-before-make.
pub fn needs_break_before_make<F: PagingFormat>(old: &Entry<F>, new: &Entry<F>) -> bool {
    F::needs_break_before_make(old, new)
}

/// Which step of [`write_break_before_make`] lost a race.
pub(crate) enum BreakLost {
    /// The slot no longer held the old entry; it holds this value and nothing was written.
    Before(u64),
    /// Another thread filled the invalid slot before the new entry went in; the slot holds
    /// that thread's entry.
    After(u64),
}

/// Replaces the valid entry `old` of the `level` slot that maps `va` by `new` with the
/// break-before-make sequence: compare-exchange to the format's
/// [`BREAK_MARKER`](PagingFormat::BREAK_MARKER) (invalid to the hardware), invalidate the
/// translation, compare-exchange to `new`. The new entry needs no further invalidation.
/// Walkers that meet the marker wait ([`settled`]), so no one takes the slot for empty.
pub(crate) fn write_break_before_make<F: PagingFormat>(
    slot: &AtomicU64,
    old: u64,
    new: u64,
    va: u64,
    level: Level,
    tlb: &impl TlbInvalidate,
) -> Result<(), BreakLost> {
    slot.compare_exchange(old, F::BREAK_MARKER, Ordering::AcqRel, Ordering::Acquire)
        .map_err(BreakLost::Before)?;
    Flush::entry(va, level.shift()).flush(tlb);
    slot.compare_exchange(F::BREAK_MARKER, new, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(BreakLost::After)
}

/// The value of a live entry, waiting while break-before-make holds it at
/// [`BREAK_MARKER`](PagingFormat::BREAK_MARKER): a walker never mistakes an entry being
/// changed for an absent one. The wait is as long as one TLB invalidation.
#[inline]
pub(crate) fn settled<F: PagingFormat>(slot: &AtomicU64) -> u64 {
    loop {
        let raw = slot.load(Ordering::Acquire);
        if raw != F::BREAK_MARKER {
            return raw;
        }
        crate::sync::spin_wait();
    }
}

/// The aarch64 rules (see the module documentation).
pub fn aarch64_needs_break_before_make(old: &Entry<Aarch64>, new: &Entry<Aarch64>) -> bool {
    match (old, new) {
        (Entry::Table { next: a, .. }, Entry::Table { next: b, .. }) => a != b,
        (
            Entry::Leaf {
                pfn: pa,
                size: sa,
                attrs: aa,
            },
            Entry::Leaf {
                pfn: pb,
                size: sb,
                attrs: ab,
            },
        ) => pa != pb || sa != sb || leaf_attributes_need_break(aa, ab),
        // Block <-> table: a change of block size.
        (Entry::Table { .. }, Entry::Leaf { .. }) | (Entry::Leaf { .. }, Entry::Table { .. }) => {
            true
        }
        // Anything involving an invalid entry is a break already.
        _ => false,
    }
}

/// Whether a leaf attribute change alone needs break-before-make on aarch64.
fn leaf_attributes_need_break(old: &PageAttributes, new: &PageAttributes) -> bool {
    old.attr_indx() != new.attr_indx()
        || old.shareability() != new.shareability()
        || old.not_global() != new.not_global()
        || old.contiguous() != new.contiguous()
        || old.ns() != new.ns()
}

/// Whether raw `old` → raw `new` at `level` needs break-before-make, decoding both; raw
/// values that do not decode are treated conservatively (a break is needed if both are
/// valid and differ).
pub fn raw_needs_break_before_make<F: PagingFormat>(
    old: u64,
    new: u64,
    level: devpriv_pte::Level,
) -> bool {
    if old == new || !F::is_valid(old, level) || !F::is_valid(new, level) {
        return false;
    }
    match (F::decode(old, level), F::decode(new, level)) {
        (Ok(a), Ok(b)) => F::needs_break_before_make(&a, &b),
        _ => true,
    }
}

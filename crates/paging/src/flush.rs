//! Flush obligations: the [`Flush`] token every change returns, and the batching
//! [`FlushBatch`].

use crate::tlb::TlbInvalidate;

/// Past this many page invalidations a flush invalidates everything instead.
pub const FULL_FLUSH_THRESHOLD: u64 = 32;

/// What a change of the page table obliges the caller to invalidate.
///
/// The token records a virtual range and the smallest leaf size that changed in it:
/// invalidating one address every `1 << shift` bytes reaches every changed entry. The
/// range is kept by its first and last byte, so that a range ending at the top of the
/// address space (whose end would wrap to 0) is a range like any other. A token with
/// nothing to invalidate still asks for the write barrier ([`TlbInvalidate::publish`])
/// before the new mapping is used.
///
/// Dropping the token unused is a warning; [`ignore`](Self::ignore) says so explicitly
/// (for tables no CPU uses yet).
#[must_use = "the TLB may still hold the old translation: flush it, batch it, or ignore() it"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    /// The first byte (aligned to `1 << shift`).
    start: u64,
    /// The last byte.
    last: u64,
    shift: u8,
    empty: bool,
    all: bool,
}

impl Flush {
    /// Nothing to invalidate (only the write barrier).
    pub const fn none() -> Self {
        Self {
            start: 0,
            last: 0,
            shift: 63,
            empty: true,
            all: false,
        }
    }

    /// Invalidate the entry of size `1 << shift` containing `va`.
    pub const fn entry(va: u64, shift: u32) -> Self {
        let size = 1u64 << shift;
        let start = va & !(size - 1);
        Self {
            start,
            last: start + (size - 1),
            shift: shift as u8,
            empty: false,
            all: false,
        }
    }

    /// Invalidate every entry of size `1 << shift` in `[start, end)`, for example every
    /// 4 KiB translation a 2 MiB range may still have cached. `end` 0 with `start`
    /// above it means the top of the address space; an unaligned range covers every
    /// entry it touches; an empty range is [`none`](Self::none).
    pub const fn range(start: u64, end: u64, shift: u32) -> Self {
        if start == end || (end != 0 && end < start) {
            return Self::none();
        }
        let size = 1u64 << shift;
        Self {
            start: start & !(size - 1),
            last: end.wrapping_sub(1),
            shift: shift as u8,
            empty: false,
            all: false,
        }
    }

    /// Invalidate everything.
    pub const fn all() -> Self {
        Self {
            start: 0,
            last: 0,
            shift: 63,
            empty: true,
            all: true,
        }
    }

    /// Whether there is anything to invalidate.
    pub const fn is_empty(&self) -> bool {
        !self.all && self.empty
    }

    /// Whether the token asks for a full invalidation.
    pub const fn is_all(&self) -> bool {
        self.all
    }

    /// The number of page invalidations the token needs (`u64::MAX` for a full one).
    pub const fn pages(&self) -> u64 {
        if self.all {
            u64::MAX
        } else if self.empty {
            0
        } else {
            ((self.last - self.start) >> self.shift).saturating_add(1)
        }
    }

    /// The addresses to invalidate, one per entry of the token's size.
    fn addresses(&self) -> impl Iterator<Item = u64> + use<> {
        let (last, step) = (self.last, 1u64 << self.shift);
        let first = (!self.is_empty() && !self.all).then_some(self.start);
        core::iter::successors(first, move |&va| {
            va.checked_add(step).filter(|&next| next <= last)
        })
    }

    /// Adds the obligations of `other` (a range covering both, the smaller step).
    pub fn merge(&mut self, other: Flush) {
        if other.all {
            self.all = true;
        } else if !other.is_empty() {
            if self.empty {
                self.start = other.start;
                self.last = other.last;
                self.empty = false;
            } else {
                self.start = self.start.min(other.start);
                self.last = self.last.max(other.last);
            }
            self.shift = self.shift.min(other.shift);
            // The start stays aligned to the (possibly smaller) step.
            self.start &= !((1u64 << self.shift) - 1);
        }
    }

    /// Adds the entry of size `1 << shift` containing `va`.
    #[inline]
    pub fn add_entry(&mut self, va: u64, shift: u32) {
        self.merge(Flush::entry(va, shift))
    }

    /// Carries out the invalidation: page by page, or everything past
    /// [`FULL_FLUSH_THRESHOLD`] pages.
    pub fn flush<T: TlbInvalidate + ?Sized>(self, tlb: &T) {
        tlb.publish();
        if self.all || self.pages() > FULL_FLUSH_THRESHOLD {
            tlb.invalidate_all();
        } else {
            for va in self.addresses() {
                tlb.invalidate_page(va);
            }
        }
        tlb.complete();
    }

    /// Drops the obligation: the table is not in use by any CPU, or the caller flushes
    /// by other means.
    pub fn ignore(self) {}
}

/// Collects flush tokens and invalidates once, page by page while at most
/// [`FULL_FLUSH_THRESHOLD`] pages are pending and with one full invalidation past it.
#[must_use = "pending invalidations are lost unless the batch is flushed"]
#[derive(Debug)]
pub struct FlushBatch {
    pages: [(u64, u8); FULL_FLUSH_THRESHOLD as usize],
    len: usize,
    all: bool,
}

impl Default for FlushBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FlushBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            pages: [(0, 0); FULL_FLUSH_THRESHOLD as usize],
            len: 0,
            all: false,
        }
    }

    /// Adds a token's obligations.
    pub fn add(&mut self, flush: Flush) {
        if self.all || flush.is_empty() {
            return;
        }
        if flush.all || flush.pages() > (FULL_FLUSH_THRESHOLD as usize - self.len) as u64 {
            self.all = true;
            return;
        }
        for va in flush.addresses() {
            self.pages[self.len] = (va, flush.shift);
            self.len += 1;
        }
    }

    /// The number of pending page invalidations.
    pub const fn pending(&self) -> usize {
        self.len
    }

    /// Whether the batch has escalated to a full invalidation.
    pub const fn is_all(&self) -> bool {
        self.all
    }

    /// Carries out every pending invalidation and empties the batch.
    pub fn flush<T: TlbInvalidate + ?Sized>(&mut self, tlb: &T) {
        tlb.publish();
        if self.all {
            tlb.invalidate_all();
        } else {
            for &(va, _) in &self.pages[..self.len] {
                tlb.invalidate_page(va);
            }
        }
        tlb.complete();
        self.len = 0;
        self.all = false;
    }

    /// Carries out every pending invalidation and consumes the batch.
    pub fn finish<T: TlbInvalidate + ?Sized>(mut self, tlb: &T) {
        self.flush(tlb)
    }
}

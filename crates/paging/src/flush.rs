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
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// The first byte (aligned to `1 << shift`, so at least to 4 KiB) in the upper bits;
    /// the shift in bits 0..6 and the kind ([`EMPTY`], [`RANGE`], [`ALL`]) in bits 6..8.
    ///
    /// Two whole words, so that a token is returned in registers and copied without a
    /// narrow store followed by a wider load (which stalls store forwarding): a token
    /// is built and merged on every page an unmap clears.
    start: u64,
    /// The last byte.
    last: u64,
}

/// Nothing to invalidate.
const EMPTY: u64 = 0;
/// `start..=last` at `shift`.
const RANGE: u64 = 1;
/// Everything.
const ALL: u64 = 2;
/// The low bits of [`Flush::start`] that hold the shift and the kind.
const META: u64 = 0xff;
/// The smallest shift a token keeps: nothing maps less than a 4 KiB page.
const MIN_SHIFT: u32 = 12;

impl core::fmt::Debug for Flush {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.kind() {
            EMPTY => f.write_str("Flush::none()"),
            ALL => f.write_str("Flush::all()"),
            _ => f
                .debug_struct("Flush")
                .field("start", &format_args!("{:#x}", self.first()))
                .field("last", &format_args!("{:#x}", self.last))
                .field("shift", &self.shift())
                .finish(),
        }
    }
}

/// `shift` within 12..=63, the sizes a token can name.
const fn clamp_shift(shift: u32) -> u32 {
    if shift < MIN_SHIFT {
        MIN_SHIFT
    } else if shift > 63 {
        63
    } else {
        shift
    }
}

impl Flush {
    /// A token of `kind` for `[start, last]` at `shift` (`MIN_SHIFT..=63`).
    #[inline]
    const fn pack(start: u64, last: u64, shift: u32, kind: u64) -> Self {
        Self {
            start: (start & !META) | shift as u64 | kind << 6,
            last,
        }
    }

    #[inline]
    const fn kind(&self) -> u64 {
        (self.start >> 6) & 3
    }

    #[inline]
    const fn shift(&self) -> u32 {
        (self.start & 0x3f) as u32
    }

    #[inline]
    const fn first(&self) -> u64 {
        self.start & !META
    }

    /// Nothing to invalidate (only the write barrier).
    #[inline]
    pub const fn none() -> Self {
        Self::pack(0, 0, 63, EMPTY)
    }

    /// Invalidate the entry of size `1 << shift` containing `va` (a shift below 12 is
    /// taken as 12, one above 63 as 63).
    #[inline]
    pub const fn entry(va: u64, shift: u32) -> Self {
        let shift = clamp_shift(shift);
        let size = 1u64 << shift;
        let start = va & !(size - 1);
        Self::pack(start, start + (size - 1), shift, RANGE)
    }

    /// Invalidate every entry of size `1 << shift` in `[start, end)`, for example every
    /// 4 KiB translation a 2 MiB range may still have cached. `end` 0 with `start`
    /// above it means the top of the address space; an unaligned range covers every
    /// entry it touches; an empty range is [`none`](Self::none). A shift below 12 is
    /// taken as 12.
    #[inline]
    pub const fn range(start: u64, end: u64, shift: u32) -> Self {
        if start == end || (end != 0 && end < start) {
            return Self::none();
        }
        let shift = clamp_shift(shift);
        let size = 1u64 << shift;
        Self::pack(start & !(size - 1), end.wrapping_sub(1), shift, RANGE)
    }

    /// Invalidate everything.
    #[inline]
    pub const fn all() -> Self {
        Self::pack(0, 0, 63, ALL)
    }

    /// Whether there is anything to invalidate.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.kind() == EMPTY
    }

    /// Whether the token asks for a full invalidation.
    #[inline]
    pub const fn is_all(&self) -> bool {
        self.kind() == ALL
    }

    /// The number of page invalidations the token needs (`u64::MAX` for a full one).
    #[inline]
    pub const fn pages(&self) -> u64 {
        match self.kind() {
            ALL => u64::MAX,
            EMPTY => 0,
            _ => ((self.last - self.first()) >> self.shift()).saturating_add(1),
        }
    }

    /// The addresses to invalidate, one per entry of the token's size.
    fn addresses(&self) -> impl Iterator<Item = u64> + use<> {
        let (last, step) = (self.last, 1u64 << self.shift());
        let first = (self.kind() == RANGE).then_some(self.first());
        core::iter::successors(first, move |&va| {
            va.checked_add(step).filter(|&next| next <= last)
        })
    }

    /// Adds the obligations of `other` (a range covering both, the smaller step).
    #[inline]
    pub fn merge(&mut self, other: Flush) {
        let (kind, other_kind) = (self.kind(), other.kind());
        if kind == ALL || other_kind == EMPTY {
            return;
        }
        if other_kind == ALL {
            *self = Self::all();
            return;
        }
        let (start, last) = if kind == EMPTY {
            (other.first(), other.last)
        } else {
            (self.first().min(other.first()), self.last.max(other.last))
        };
        let shift = if kind == EMPTY {
            other.shift()
        } else {
            self.shift().min(other.shift())
        };
        // The start stays aligned to the (possibly smaller) step.
        *self = Self::pack(start & !((1u64 << shift) - 1), last, shift, RANGE);
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
        if self.kind() == ALL || self.pages() > FULL_FLUSH_THRESHOLD {
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
    #[inline]
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
        if flush.is_all() || flush.pages() > (FULL_FLUSH_THRESHOLD as usize - self.len) as u64 {
            self.all = true;
            return;
        }
        for va in flush.addresses() {
            self.pages[self.len] = (va, flush.shift() as u8);
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

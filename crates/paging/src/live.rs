//! How many live entries each level-1 table below one level-2 table holds, so that a
//! single-page `unmap` can tell whether it empties its table without looking at the
//! table's other entries.
//!
//! The look it saves is what made a table emptied in a scattered order slow: the
//! page's own cache line of entries, tested as one word, is empty once in eight pages,
//! which no branch predictor learns, and the branch waited for the line's cache miss.
//! A count turns it into a branch on a hot counter.
//!
//! A count is a hint, never trusted to free a table. The rule that keeps it so: **a
//! known count is never above the number of live entries in its table.** A count that
//! reaches zero is confirmed by reading the table (and corrected, or dropped, if it
//! was low); a count that is low only costs that read. So:
//!
//! - paths that make entries absent follow the count (`unmap`'s fast path and its path
//!   within one table), drop it, or forget every count (the general `unmap`,
//!   `unmap_with`, `collapse`, and a cursor's or slot's replacement that makes an
//!   entry absent or live);
//! - other paths that make entries live may leave it low (`map`, `install`), and
//!   `map_range` keeps it exact: a table it creates gets the number of entries it
//!   writes, a known count grows by them;
//! - a freed table's count is dropped (every count, when its level-2 table goes), so a
//!   table linked at its place later starts unknown.
//!
//! Counts are keyed by the translated bits of an address, so aarch64's upper-half form
//! of an address finds the counts of the lower-half form, whose tables it shares.
//!
//! Entries made absent by code outside the page table (see `PageTable::from_root`) are
//! not seen: a table they empty may outlast the `unmap` that would have freed it.

use devpriv_pte::Level;

use core::sync::atomic::AtomicU16;

use crate::sync::{AtomicU64, Ordering};

/// The key of no level-2 table (no address's key reaches it): no count is known.
const NO_KEY: u64 = u64::MAX;

/// Live-entry counts of the level-1 tables that one level-2 table links, indexed by the
/// level-2 entry. Only counts above 0 are recorded (a table whose count reaches 0 is
/// read, then freed or counted again), so 0 means "not known".
pub(crate) struct LiveCounts {
    /// The translated bits of an address (below the table's `va_bits`): the walk uses
    /// only those, so aarch64's upper-half form of an address reaches the same tables
    /// as the lower-half form and must find the same counts.
    va_mask: u64,
    /// The key ([`key_of`](Self::key_of)) of the addresses the counted level-2 table
    /// covers, or [`NO_KEY`].
    /// Atomic so that a `&self` path can drop every count by storing `NO_KEY`
    /// ([`forget`](Self::forget)); every other access is made under
    /// `&mut PageTable`.
    key: AtomicU64,
    /// Per level-2 entry: the live entries (1..=512) of the level-1 table it links, or
    /// 0 when that is not known. Meaningless while the key is [`NO_KEY`].
    ///
    /// Written only by paths that hold `&mut PageTable` (`map_range` writes them from
    /// its `&self` recursion), so never by two threads at once: relaxed atomics, which
    /// compile to plain loads and stores, only let that recursion write through `&self`.
    /// They are `core`'s even under loom, which has nothing to explore in them.
    slots: [AtomicU16; 512],
}

impl LiveCounts {
    /// No count known, for a table translating `va_bits` bits of an address.
    pub(crate) fn new(va_bits: u32) -> Self {
        Self {
            va_mask: (1 << va_bits) - 1,
            key: AtomicU64::new(NO_KEY),
            slots: [const { AtomicU16::new(0) }; 512],
        }
    }

    /// The key of the level-2 table that translates `va`: its translated bits above
    /// the 1 GiB that one level-2 table covers.
    #[inline(always)]
    fn key_of(&self, va: u64) -> u64 {
        (va & self.va_mask) >> Level::L3.shift()
    }

    /// The counted level-2 table's key. Under `&mut self` no `&self` path runs, and
    /// whatever gave this thread `&mut` ordered their stores before this read.
    #[inline(always)]
    fn key(&self) -> u64 {
        self.key.load(Ordering::Relaxed)
    }

    /// Forgets every count: called where a table may have been unlinked, or level-1
    /// entries changed, without the counts following, including by a `&self` path (a
    /// slot's replacement that made an entry live or absent). Reads first, so that
    /// threads doing that at once share the key's cache line instead of taking it in
    /// turn.
    #[inline]
    pub(crate) fn forget(&self) {
        if self.key() != NO_KEY {
            self.key.store(NO_KEY, Ordering::Relaxed);
        }
    }

    /// The number of live entries in the level-1 table covering `va`, or 0 when it is
    /// not known.
    #[inline(always)]
    pub(crate) fn get(&self, va: u64) -> u16 {
        if self.key_of(va) == self.key() {
            self.slots[Level::L2.table_index(va)].load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Records that the level-1 table covering `va` holds `count` live entries (0:
    /// forgets it), where [`get`](Self::get) knew its count (so the counted level-2
    /// table is `va`'s).
    #[inline(always)]
    pub(crate) fn set(&self, va: u64, count: u16) {
        debug_assert!(self.key_of(va) == self.key() && count <= 512);
        self.slots[Level::L2.table_index(va)].store(count, Ordering::Relaxed);
    }

    /// Adds `n` to the count of `va`'s level-1 table, if it is known: `n` absent entries
    /// of it became live.
    #[inline(always)]
    pub(crate) fn add(&self, va: u64, n: u16) {
        let count = self.get(va);
        if count != 0 {
            // More than a table holds: the count was wrong; forget it.
            let sum = count + n;
            self.set(va, if sum <= 512 { sum } else { 0 });
        }
    }

    /// Records `count` (at most 512) for `va`'s level-1 table, counted by reading it or
    /// made by filling a new table. When `va` lies below another level-2 table than the
    /// counted one (or none is counted), the counts start again for `va`'s: the slots
    /// are cleared (a kilobyte), the others forgotten.
    pub(crate) fn learn(&self, va: u64, count: u16) {
        let key = self.key_of(va);
        if key != self.key() {
            for slot in &self.slots {
                slot.store(0, Ordering::Relaxed);
            }
            self.key.store(key, Ordering::Relaxed);
        }
        self.set(va, count);
    }

    /// Forgets the count of `va`'s level-1 table alone (a store that does not depend on
    /// what the slot held).
    #[inline(always)]
    pub(crate) fn drop_count(&self, va: u64) {
        if self.key_of(va) == self.key() {
            self.slots[Level::L2.table_index(va)].store(0, Ordering::Relaxed);
        }
    }
}

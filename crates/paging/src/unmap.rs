//! Unmapping a range, and changing the attributes of a range.

use core::marker::PhantomData;

use devpriv_pte::{DecodeError, Entry, Level, Pfn};

use crate::bbm::{BreakLost, write_break_before_make};
use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::PhysMapper;
use crate::sync::Ordering;
use crate::table::{FrameChain, PageTable, chunk, is_absent};
use crate::tlb::TlbInvalidate;

/// An entry that [`PageTable::unmap_with`] or [`PageTable::destroy_with`] removed: a
/// leaf or a software entry, never a table or an absent entry.
///
/// It is handed over after the translations it may have left in TLBs were invalidated,
/// so whatever it pointed to (a frame, a device folio's reference) can be released at
/// once.
pub struct RemovedEntry<F: PagingFormat> {
    va: u64,
    level: Level,
    raw: u64,
    format: PhantomData<fn() -> F>,
}

impl<F: PagingFormat> RemovedEntry<F> {
    pub(crate) const fn new(va: u64, level: Level, raw: u64) -> Self {
        Self {
            va,
            level,
            raw,
            format: PhantomData,
        }
    }

    /// The first virtual address the entry covered.
    pub const fn va(&self) -> u64 {
        self.va
    }

    /// The entry's level.
    pub const fn level(&self) -> Level {
        self.level
    }

    /// The raw value it held.
    pub const fn raw(&self) -> u64 {
        self.raw
    }

    /// The entry, decoded.
    pub fn entry(&self) -> Result<Entry<F>, DecodeError> {
        F::decode(self.raw, self.level)
    }
}

impl<F: PagingFormat> core::fmt::Debug for RemovedEntry<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RemovedEntry")
            .field("va", &format_args!("{:#x}", self.va))
            .field("level", &self.level)
            .field("raw", &format_args!("{:#x}", self.raw))
            .finish()
    }
}

/// Where removed entries go: nowhere (plain [`PageTable::unmap`]), or to the caller's
/// closure, in batches after each invalidation.
pub(crate) type Report<'r, F> = Option<&'r mut dyn FnMut(RemovedEntry<F>)>;

/// Removed entries held until the invalidation that must precede their release.
const REMOVED_BATCH: usize = 32;

/// What an unmap has detached and not yet released: whole subtrees by their root
/// (their entries are read when they are freed, never written), the rest chained, and
/// (when reporting) the single entries cleared since the last invalidation.
struct Detached<F: PagingFormat> {
    subtrees: [Option<(Pfn, Level, u64)>; 8],
    chain: FrameChain,
    removed: [(u64, Level, u64); REMOVED_BATCH],
    removed_len: usize,
    format: PhantomData<fn() -> F>,
}

impl<F: PagingFormat> Default for Detached<F> {
    fn default() -> Self {
        Self {
            subtrees: [None; 8],
            chain: FrameChain::default(),
            removed: [(0, Level::L1, 0); REMOVED_BATCH],
            removed_len: 0,
            format: PhantomData,
        }
    }
}

impl<F: PagingFormat> Detached<F> {
    fn is_empty(&self) -> bool {
        self.subtrees[0].is_none() && self.chain.is_empty() && self.removed_len == 0
    }
}

/// What the release of detached entries needs: the frame allocator, the TLB and the
/// caller's report closure.
struct Gather<'g, 'r, A, T, F: PagingFormat> {
    alloc: &'g mut A,
    tlb: &'g T,
    report: &'g mut Report<'r, F>,
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// Fails with [`PagingError::PartialBlock`] if a block or software entry above level
    /// 1 straddles either end of `[start, last]`.
    pub(crate) fn check_block_edges(&self, start: u64, last: u64) -> Result<(), PagingError> {
        for va in [start, last] {
            let (_, level, raw) = self.walk_to(va, Level::L1);
            if level == Level::L1 || is_absent::<F>(raw, level) {
                continue;
            }
            let es = va & !(level.entry_span() - 1);
            let ee = es + (level.entry_span() - 1);
            if es < start || ee > last {
                return Err(PagingError::PartialBlock { va: es, level });
            }
        }
        Ok(())
    }

    /// Removes every leaf and software entry in `[va, va + len)` and frees the tables
    /// that become empty (never the root).
    ///
    /// `va` and `len` must be 4 KiB aligned, and the range must not cut through a block
    /// or a level-2 software entry ([`PagingError::PartialBlock`]; split it first). On
    /// error nothing changed.
    ///
    /// Tables are freed only after their translations are invalidated through `tlb`
    /// (hardware may cache walks through them): when the call frees any table it
    /// flushes itself and returns an empty token; otherwise it returns the token for
    /// the removed leaves. What the removed entries pointed to is forgotten; use
    /// [`unmap_with`](Self::unmap_with) to release it.
    pub fn unmap(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        self.unmap_reporting(va, len, alloc, tlb, None)
    }

    /// As [`unmap`](Self::unmap), and hands every removed leaf and software entry to
    /// `removed` — after invalidating the translations it may have left, so that the
    /// frame, device folio or swap slot it pointed to can be released at once (Linux's
    /// `zap_pte_range` with its `mmu_gather`). Entries are handed over in address order
    /// within each table, in batches, with an invalidation before each batch; the call
    /// does all its own flushing and returns an empty token.
    pub fn unmap_with(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
        mut removed: impl FnMut(RemovedEntry<F>),
    ) -> Result<Flush, PagingError> {
        self.unmap_reporting(va, len, alloc, tlb, Some(&mut removed))
    }

    fn unmap_reporting(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
        mut report: Report<'_, F>,
    ) -> Result<Flush, PagingError> {
        let last = self.check_range(va, len, 4096)?;
        self.check_block_edges(va, last)?;
        self.l1_cache = None;
        let mut flush = Flush::none();
        let mut freed = Detached::default();
        let mut gather = Gather {
            alloc,
            tlb,
            report: &mut report,
        };
        self.clear(
            self.root(),
            self.root_level(),
            va,
            last,
            &mut flush,
            &mut freed,
            &mut gather,
        );
        if freed.is_empty() {
            return Ok(flush);
        }
        self.release(&mut flush, &mut freed, &mut gather);
        Ok(Flush::none())
    }

    /// Invalidates `flush`, then reports and frees everything in `freed`.
    fn release<A: FrameAllocator, T: TlbInvalidate>(
        &self,
        flush: &mut Flush,
        freed: &mut Detached<F>,
        gather: &mut Gather<'_, '_, A, T, F>,
    ) {
        core::mem::replace(flush, Flush::none()).flush(gather.tlb);
        if let Some(report) = gather.report.as_deref_mut() {
            for &(va, level, raw) in &freed.removed[..freed.removed_len] {
                report(RemovedEntry::new(va, level, raw));
            }
        }
        freed.removed_len = 0;
        for (table, level, va) in core::mem::take(&mut freed.subtrees).into_iter().flatten() {
            self.free_subtree_reporting(table, level, va, gather.alloc, gather.report);
            gather.alloc.free(table);
        }
        self.chain_free(core::mem::take(&mut freed.chain), gather.alloc);
    }

    /// Clears `[start, last]` below `table`; returns whether the table is now empty.
    #[allow(clippy::too_many_arguments)]
    fn clear<A: FrameAllocator, T: TlbInvalidate>(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        flush: &mut Flush,
        freed: &mut Detached<F>,
        gather: &mut Gather<'_, '_, A, T, F>,
    ) -> bool {
        let span = level.entry_span();
        let entries = self.entries(table);
        let first = level.table_index(start);
        let final_index = level.table_index(last);
        let mut es = start & !(span - 1);
        let whole = first == 0
            && final_index == 511
            && start & (span - 1) == 0
            && (last & (span - 1)) == span - 1;
        for entry in &entries[first..=final_index] {
            let (_, cs, cl) = chunk(level, es, start, last);
            let raw = crate::bbm::settled::<F>(entry);
            if raw != 0 {
                if let Some(next) = F::table_pfn(raw, level) {
                    let lower = level.next_lower().expect("table entry at level 1");
                    if cs == es && cl == es + (span - 1) {
                        // The whole subtree goes: detach it without clearing its
                        // entries; every translation below may be cached.
                        entry.store(0, Ordering::Release);
                        flush.merge(Flush::range(es, es.wrapping_add(span), 12));
                        let reporting = gather.report.is_some();
                        if reporting && freed.subtrees.iter().all(Option::is_some) {
                            // The subtrees' entries are reported when they are freed,
                            // after an invalidation: make room by doing that now.
                            self.release(flush, freed, gather);
                        }
                        match freed.subtrees.iter_mut().find(|s| s.is_none()) {
                            Some(free_slot) => *free_slot = Some((next, lower, es)),
                            None => self.chain_subtree(next, lower, &mut freed.chain),
                        }
                    } else if self.clear(next, lower, cs, cl, flush, freed, gather) {
                        entry.store(0, Ordering::Release);
                        flush.add_entry(es, level.shift());
                        self.chain_push(&mut freed.chain, next);
                    }
                } else {
                    // A plain store: `&mut self` excludes software writers, and an
                    // accessed/dirty bit the hardware sets meanwhile is dropped with the
                    // entry anyway.
                    entry.store(0, Ordering::Release);
                    if F::is_valid(raw, level) {
                        flush.add_entry(es, level.shift());
                    }
                    if gather.report.is_some() && !is_absent::<F>(raw, level) {
                        if freed.removed_len == REMOVED_BATCH {
                            self.release(flush, freed, gather);
                        }
                        freed.removed[freed.removed_len] = (es, level, raw);
                        freed.removed_len += 1;
                    }
                }
            }
            es = es.wrapping_add(span);
        }
        whole
            || entries
                .iter()
                .all(|e| is_absent::<F>(e.load(Ordering::Acquire), level))
    }

    /// Pushes `table` (detached, at `level`) and every table below it onto `freed`
    /// (only when no entry of it is to be reported: entry 0 becomes the chain link).
    fn chain_subtree(&self, table: Pfn, level: Level, freed: &mut FrameChain) {
        if let Some(lower) = level.next_lower() {
            for entry in self.entries(table) {
                if let Some(next) = F::table_pfn(entry.load(Ordering::Acquire), level) {
                    self.chain_subtree(next, lower, freed);
                }
            }
        }
        // Entry 0 becomes the chain link only after the entries were read.
        self.chain_push(freed, table);
    }

    /// Changes the attributes of every present leaf in `[va, va + len)` to
    /// `change(old attributes)`; absent and software entries are left alone. An entry
    /// the hardware would use but that does not decode (reserved bits set) stops the
    /// call with [`PagingError::Corrupt`]: the leaves before it are changed and already
    /// invalidated through `tlb`, the rest are not changed.
    ///
    /// `va` and `len` must be 4 KiB aligned and the range must not cut through a block
    /// ([`PagingError::PartialBlock`]). Each entry is updated with compare-exchange, so
    /// accessed/dirty bits the hardware sets meanwhile are not lost (`change` sees
    /// them). Where the change needs break-before-make (an aarch64 memory-type,
    /// shareability or nG change) the entry is made invalid and invalidated through
    /// `tlb` before the new value is written; if another thread fills the invalid slot
    /// in between, the call stops with [`PagingError::Raced`].
    ///
    /// Returns the token for the changed leaves.
    pub fn protect(
        &self,
        va: u64,
        len: u64,
        mut change: impl FnMut(F::LeafAttributes) -> F::LeafAttributes,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        let last = self.check_range(va, len, 4096)?;
        self.check_block_edges(va, last)?;
        let mut flush = Flush::none();
        let result = self.protect_in(
            self.root(),
            self.root_level(),
            va,
            last,
            &mut change,
            tlb,
            &mut flush,
        );
        match result {
            Ok(()) => Ok(flush),
            Err(e) => {
                // What changed before the error must not stay cached.
                flush.flush(tlb);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_in(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        change: &mut impl FnMut(F::LeafAttributes) -> F::LeafAttributes,
        tlb: &impl TlbInvalidate,
        flush: &mut Flush,
    ) -> Result<(), PagingError> {
        let span = level.entry_span();
        let entries = self.entries(table);
        let mut es = start & !(span - 1);
        for entry in &entries[level.table_index(start)..=level.table_index(last)] {
            let (ee, cs, cl) = chunk(level, es, start, last);
            let mut raw = crate::bbm::settled::<F>(entry);
            if let Some(next) = F::table_pfn(raw, level) {
                let lower = level.next_lower().expect("table entry at level 1");
                self.protect_in(next, lower, cs, cl, change, tlb, flush)?;
            } else {
                if F::is_valid(raw, level) && F::leaf(raw, level).is_none() {
                    // Valid to the hardware but not a leaf devpriv can read (reserved bits
                    // set): the MMU uses it, so it cannot be skipped silently.
                    if let Err(error) = F::decode(raw, level) {
                        return Err(PagingError::Corrupt {
                            va: es,
                            level,
                            error,
                        });
                    }
                }
                while let Some((pfn, attrs)) = F::leaf(raw, level) {
                    if cs != es || cl != ee {
                        return Err(PagingError::PartialBlock { va: es, level });
                    }
                    let size = level.leaf_size().expect("leaf level");
                    let old = Entry::Leaf { pfn, size, attrs };
                    let new = Entry::Leaf {
                        pfn,
                        size,
                        attrs: change(attrs),
                    };
                    let new_raw = F::encode(&new, level)?;
                    if new_raw == raw {
                        break;
                    }
                    if F::needs_break_before_make(&old, &new) {
                        match write_break_before_make::<F>(entry, raw, new_raw, es, level, tlb) {
                            Ok(()) => break,
                            Err(BreakLost::Before(now)) => {
                                raw = now;
                                continue;
                            }
                            Err(BreakLost::After(_)) => {
                                return Err(PagingError::Raced { va: es });
                            }
                        }
                    }
                    match entry.compare_exchange(raw, new_raw, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            flush.add_entry(es, level.shift());
                            break;
                        }
                        Err(now) => raw = now,
                    }
                }
            }
            es = es.wrapping_add(span);
        }
        Ok(())
    }
}

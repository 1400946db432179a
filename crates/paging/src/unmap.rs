//! Unmapping a range, and changing the attributes of a range.

use core::marker::PhantomData;

use devpriv_pte::{DecodeError, Entry, Level, Pfn};

use crate::bbm::{BreakLost, write_break_before_make};
use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::{PhysMapper, TableEntries};
use crate::sync::Ordering;
use crate::table::{CachedTable, FrameChain, PageTable, chunk, is_absent};
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
/// (their entries are read when they are freed, never written) and the rest chained.
struct Detached {
    subtrees: [Option<(Pfn, Level, u64)>; 8],
    chain: FrameChain,
}

impl Detached {
    const fn new() -> Self {
        Self {
            subtrees: [None; 8],
            chain: FrameChain::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.subtrees[0].is_none() && self.chain.is_empty()
    }
}

/// The single entries an unmap that reports has cleared since the last invalidation
/// (a separate value so that an unmap that does not report never builds it).
struct RemovedBatch {
    entries: [(u64, Level, u64); REMOVED_BATCH],
    len: usize,
}

/// What the release of detached entries needs: the frame allocator, the TLB, and, when
/// reporting, the caller's closure with the batch of entries waiting for it.
struct Gather<'g, 'r, A, T, F: PagingFormat> {
    alloc: &'g mut A,
    tlb: &'g T,
    report: &'g mut Report<'r, F>,
    removed: Option<&'g mut RemovedBatch>,
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// Fails with [`PagingError::PartialBlock`] if a block or software entry above level
    /// 1 straddles either end of `[start, last]`.
    pub(crate) fn check_block_edges(&self, start: u64, last: u64) -> Result<(), PagingError> {
        // Within one level-1 table's span both walks read the same entries down to level
        // 2, and a level-1 entry never straddles a 4 KiB-aligned end: one walk will do.
        let ends = if start >> Level::L2.shift() == last >> Level::L2.shift() {
            &[start][..]
        } else {
            &[start, last][..]
        };
        for &va in ends {
            let (_, level, raw) = self.walk_to(va, Level::L1);
            if level == Level::L1 || is_absent::<F>(raw) {
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
    ///
    /// A small unmap (within one level-1 table's 2 MiB) costs one walk, or none when
    /// it is in the level-1 table the previous `map` or `unmap` used (one read when it
    /// is elsewhere in the level-2 table they used), plus the answer to whether the
    /// table is now empty:
    ///
    /// - in the table the previous call used, with a neighbour of the page still
    ///   mapped (a table unmapped page by page in address order): that one entry;
    /// - else, when the table's live-entry count is known: the count. The value keeps
    ///   counts for the level-1 tables below one level-2 table: `map_range` sets one
    ///   for each table it creates (and adds to a known one), `unmap` follows it, and
    ///   counts a table when it finds the range's cache lines empty. A table emptied
    ///   page by page in a scattered order is then read once more, when its count
    ///   reaches zero;
    /// - else the cache lines the range lies in, each tested as one word (for a single
    ///   page, then its neighbours across the line's edges), then, if those are empty,
    ///   the whole table, counted.
    ///
    /// The counts take a kilobyte of the value and never decide alone that a table is
    /// empty; see [`from_root`](Self::from_root) for updates they do not see.
    #[inline]
    pub fn unmap(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        match self.unmap_page_in_cached_table(va, len) {
            Some(flush) => Ok(flush),
            None => self.unmap_checking(va, len, alloc, tlb),
        }
    }

    /// The fastest case of [`unmap`](Self::unmap), small enough to be inlined into the
    /// caller's loop: one 4 KiB page whose level-1 table is cached (or found through the
    /// cached level-2 table in one read) and stays, because a neighbour is still mapped
    /// (in the table the last call used), its live-entry count says another entry is
    /// left, or, without a count, another entry of its cache line (the line the page's
    /// own entry brings into the cache, tested as one word) or a neighbour across the
    /// line's edge is still mapped.
    ///
    /// Returns `None`, having changed nothing, otherwise.
    #[inline(always)]
    fn unmap_page_in_cached_table(&mut self, va: u64, len: u64) -> Option<Flush> {
        let page = Level::L1.entry_span();
        if len != page || va & (page - 1) != 0 {
            return None;
        }
        let key = va >> Level::L2.shift();
        let same_table = self.l1_cache.holds(key);
        let table = self.cached_level1_table(va, key)?;
        // Linked and translatable, as `unmap_in_one_table` explains.
        let entries = self.entries(table);
        let index = Level::L1.table_index(va);
        let raw = entries[index].load(Ordering::Acquire);
        if raw == F::BREAK_MARKER {
            // Not while `&mut self` is held; the general path would wait for it.
            return None;
        }
        let live_here = !is_absent::<F>(raw);
        // Whether the table stays.
        let by_neighbour = same_table && neighbour_live::<F>(entries, index);
        let keeps_table = if by_neighbour {
            // The same level-1 table as the last call: pages are likely going in address
            // order, and the next or previous entry answers (one read of a line already
            // fetched, a branch predicted right). The table's count, if any, is dropped
            // once rather than followed, which would chain each call to the last one's
            // store of it.
            true
        } else {
            match self.live.get(va) {
                // No count: the page's line, tested as one word (mostly right whatever
                // the order), then its neighbours across the line's edges. Out of line,
                // so that the counted path keeps its registers.
                0 => line_or_neighbour_live::<F>(entries, index, same_table),
                // The count says whether another entry stays: a branch on a hot counter,
                // not on the entries just fetched (in a scattered order, a line of them
                // empties once in eight pages, which no predictor learns).
                count => {
                    let left = count - u16::from(live_here);
                    if left == 0 {
                        // Empty by the count: the path below reads the table before it
                        // frees anything.
                        return None;
                    }
                    self.live.set(va, left);
                    true
                }
            }
        };
        if !keeps_table {
            return None;
        }
        let flush = if raw == 0 {
            Flush::none()
        } else {
            // A plain store, as in `clear`.
            entries[index].store(0, Ordering::Release);
            if F::is_valid(raw, Level::L1) {
                Flush::entry(va, Level::L1.shift())
            } else {
                Flush::none()
            }
        };
        if !by_neighbour {
            self.cache_level1(key, table);
        } else if !self.l1_count_dropped {
            // The table is the cached one already; its count goes once.
            self.live.drop_count(va);
            self.l1_count_dropped = true;
        }
        Some(flush)
    }

    /// [`unmap`](Self::unmap) past its inlined case: a small unmap within one level-1
    /// table, else every check and the general path.
    #[inline(never)]
    fn unmap_checking(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        if let Some(flush) = self.unmap_in_one_table(va, len, alloc, tlb) {
            return Ok(flush);
        }
        let last = self.check_range(va, len, 4096)?;
        self.unmap_reporting(va, last, alloc, tlb, None)
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
        let last = self.check_range(va, len, 4096)?;
        self.unmap_reporting(va, last, alloc, tlb, Some(&mut removed))
    }

    /// Unmaps `[va, last]` (checked by [`check_range`](Self::check_range)).
    fn unmap_reporting(
        &mut self,
        va: u64,
        last: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
        mut report: Report<'_, F>,
    ) -> Result<Flush, PagingError> {
        if va >> Level::L2.shift() != last >> Level::L2.shift() {
            // `clear` meets a block or software entry that straddles an end only after
            // it has changed entries before it: look first.
            self.check_block_edges(va, last)?;
        }
        // Otherwise the range lies within one level-1 table's span and touches one
        // entry per level above level 1: `clear` checks that entry before it writes
        // anything, so the walk is done once.
        self.forget_cached_tables();
        if report.is_none() {
            return self.unmap_gathering(va, last, alloc, tlb, &mut report, None);
        }
        let mut batch = RemovedBatch {
            entries: [(0, Level::L1, 0); REMOVED_BATCH],
            len: 0,
        };
        self.unmap_gathering(va, last, alloc, tlb, &mut report, Some(&mut batch))
    }

    fn unmap_gathering(
        &self,
        va: u64,
        last: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
        report: &mut Report<'_, F>,
        removed: Option<&mut RemovedBatch>,
    ) -> Result<Flush, PagingError> {
        let mut flush = Flush::none();
        let mut freed = Detached::new();
        let mut gather = Gather {
            alloc,
            tlb,
            report,
            removed,
        };
        self.clear(
            self.root(),
            self.root_level(),
            va,
            last,
            &mut flush,
            &mut freed,
            &mut gather,
        )?;
        if freed.is_empty() && gather.removed.as_ref().is_none_or(|b| b.len == 0) {
            return Ok(flush);
        }
        self.release(&mut flush, &mut freed, &mut gather);
        Ok(Flush::none())
    }

    /// The common small unmap — a page, or a few pages of one level-1 table — without
    /// the general path's recursion: the level-1 table found through the cache `map`
    /// keeps (or one walk), its entries cleared, and, only when that leaves the table
    /// empty, a walk that detaches and frees each table that became empty, from the
    /// bottom up (never the root).
    ///
    /// Returns `None`, having changed nothing, unless `[va, va + len)` is a valid
    /// range (aligned, non-empty, translatable) within one level-1 table's span whose
    /// walk reaches level 1: the general path handles the rest, and reports the errors.
    #[inline]
    fn unmap_in_one_table(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Option<Flush> {
        if len == 0 || (va | len) & (Level::L1.entry_span() - 1) != 0 {
            return None;
        }
        let last = va.checked_add(len - 1)?;
        let key = va >> Level::L2.shift();
        if last >> Level::L2.shift() != key {
            return None;
        }
        // `va` and `last` share every bit above 20, so both are translatable, in the
        // same half, exactly when `va` is.
        let table = self.level1_table(va, key)?;
        let entries = self.entries(table);
        let (first, final_index) = (Level::L1.table_index(va), Level::L1.table_index(last));
        // The first and last valid (possibly cached) entries cleared.
        let mut valid: Option<(u64, u64)> = None;
        let mut page = va;
        // Live entries cleared (at most 512).
        let mut cleared: u16 = 0;
        for entry in &entries[first..=final_index] {
            let raw = crate::bbm::settled::<F>(entry);
            if raw != 0 {
                cleared += u16::from(!is_absent::<F>(raw));
                // A plain store, as in `clear`.
                entry.store(0, Ordering::Release);
                if F::is_valid(raw, Level::L1) {
                    valid = Some((valid.map_or(page, |(low, _)| low), page));
                }
            }
            page = page.wrapping_add(Level::L1.entry_span());
        }
        let flush = match valid {
            Some((low, high)) => Flush::range(
                low,
                high.wrapping_add(Level::L1.entry_span()),
                Level::L1.shift(),
            ),
            None => Flush::none(),
        };
        // A known count above `cleared` answers alone. Otherwise the lines the range
        // lies in are read, and when they hold nothing live the whole table is counted,
        // which lets the next unmaps in it go by the count.
        let count = self.live.get(va);
        let stays = if count > cleared {
            self.live.set(va, count - cleared);
            true
        } else if own_lines_live::<F>(entries, first, final_index) {
            // The count, if any, said empty and was wrong.
            self.live.drop_count(va);
            true
        } else {
            let count = live_entries::<F>(entries);
            if count > 0 {
                self.live.learn(va, count);
            }
            count > 0
        };
        if stays {
            self.cache_level1(key, table);
            return Some(flush);
        }
        Some(self.free_empty_tables(va, flush, alloc, tlb))
    }

    /// After the unmap of `va` left its level-1 table empty: detaches and frees it and
    /// every table above it that becomes empty (never the root), after invalidating
    /// `flush` and the walks through them.
    #[inline(never)]
    fn free_empty_tables(
        &mut self,
        va: u64,
        mut flush: Flush,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Flush {
        self.l1_cache = CachedTable::NONE;
        self.l2_cache = CachedTable::NONE;
        self.live.drop_count(va);
        let (table, path, mut depth) = self.path_to_l1(va).expect("the table is linked");
        let mut level = Level::L1;
        let mut chain = FrameChain::new();
        let mut child = table;
        while depth > 0 {
            depth -= 1;
            let (parent, index) = path[depth];
            level = level.next_higher().expect("below the root");
            if level == Level::L3 {
                // The level-2 table goes: every count below it with it.
                self.live.forget();
            }
            self.entry(parent, index).store(0, Ordering::Release);
            flush.add_entry(va, level.shift());
            self.chain_push(&mut chain, child);
            if depth == 0 || has_live_entry::<F>(self.entries(parent), index, index) {
                break;
            }
            child = parent;
        }
        // Tables are freed only after walks through them can no longer be cached.
        flush.flush(tlb);
        self.chain_free(chain, alloc);
        Flush::none()
    }

    /// The level-1 table on the walk to `va`, with the tables above it and the index of
    /// the entry taken in each (from the root down) and their number; `None` if the
    /// walk ends above level 1.
    #[allow(clippy::type_complexity)]
    fn path_to_l1(&self, va: u64) -> Option<(Pfn, [(Pfn, usize); 4], usize)> {
        let mut path = [(Pfn::new(0), 0usize); 4];
        let mut depth = 0;
        let mut table = self.root();
        let mut level = self.root_level();
        while level != Level::L1 {
            let index = level.table_index(va);
            let raw = crate::bbm::settled::<F>(self.entry(table, index));
            let next = F::table_pfn(raw, level)?;
            path[depth] = (table, index);
            depth += 1;
            table = next;
            level = level.next_lower().expect("above level 1");
        }
        Some((table, path, depth))
    }

    /// Invalidates `flush`, then reports and frees everything in `freed`.
    fn release<A: FrameAllocator, T: TlbInvalidate>(
        &self,
        flush: &mut Flush,
        freed: &mut Detached,
        gather: &mut Gather<'_, '_, A, T, F>,
    ) {
        core::mem::replace(flush, Flush::none()).flush(gather.tlb);
        if let (Some(report), Some(batch)) =
            (gather.report.as_deref_mut(), gather.removed.as_deref_mut())
        {
            for &(va, level, raw) in &batch.entries[..batch.len] {
                report(RemovedEntry::new(va, level, raw));
            }
            batch.len = 0;
        }
        for (table, level, va) in core::mem::take(&mut freed.subtrees).into_iter().flatten() {
            self.free_subtree_reporting(table, level, va, gather.alloc, gather.report);
            gather.alloc.free(table);
        }
        self.chain_free(core::mem::take(&mut freed.chain), gather.alloc);
    }

    /// Clears `[start, last]` below `table`; returns whether the table is now empty.
    ///
    /// The emptiness check costs O(1) when the table keeps an entry in the range (a
    /// table below it that is not empty) or in the cache lines the range lies in;
    /// otherwise it scans outwards from the range, a cache line of entries at a time,
    /// and stops at the first entry that is not absent ([`has_live_entry`]). Unmapping
    /// a table page by page in address order therefore reads O(1) entries per page,
    /// plus one full scan when the last page goes.
    ///
    /// Fails with [`PagingError::PartialBlock`] at a block or software entry above level
    /// 1 that the range covers only in part, before it changes that entry: when the
    /// range spans more than one level-1 table the caller checks the ends first
    /// ([`check_block_edges`](Self::check_block_edges)), so that the error cannot come
    /// after other entries were cleared.
    #[allow(clippy::too_many_arguments)]
    fn clear<A: FrameAllocator, T: TlbInvalidate>(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        flush: &mut Flush,
        freed: &mut Detached,
        gather: &mut Gather<'_, '_, A, T, F>,
    ) -> Result<bool, PagingError> {
        let span = level.entry_span();
        let entries = self.entries(table);
        let first = level.table_index(start);
        let final_index = level.table_index(last);
        let mut es = start & !(span - 1);
        let whole = first == 0
            && final_index == 511
            && start & (span - 1) == 0
            && (last & (span - 1)) == span - 1;
        // Whether an entry of the range stays (a table that is not empty).
        let mut kept = false;
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
                    } else if self.clear(next, lower, cs, cl, flush, freed, gather)? {
                        entry.store(0, Ordering::Release);
                        flush.add_entry(es, level.shift());
                        self.chain_push(&mut freed.chain, next);
                    } else {
                        kept = true;
                    }
                } else {
                    if level != Level::L1
                        && (cs != es || cl != es + (span - 1))
                        && !is_absent::<F>(raw)
                    {
                        return Err(PagingError::PartialBlock { va: es, level });
                    }
                    // A plain store: `&mut self` excludes software writers, and an
                    // accessed/dirty bit the hardware sets meanwhile is dropped with the
                    // entry anyway.
                    entry.store(0, Ordering::Release);
                    if F::is_valid(raw, level) {
                        flush.add_entry(es, level.shift());
                    }
                    if gather.removed.is_some() && !is_absent::<F>(raw) {
                        if gather
                            .removed
                            .as_ref()
                            .is_some_and(|b| b.len == REMOVED_BATCH)
                        {
                            self.release(flush, freed, gather);
                        }
                        if let Some(batch) = gather.removed.as_deref_mut() {
                            batch.entries[batch.len] = (es, level, raw);
                            batch.len += 1;
                        }
                    }
                }
            }
            es = es.wrapping_add(span);
        }
        // Every entry of the range is absent now unless one was kept.
        Ok(whole || (!kept && !has_live_entry::<F>(entries, first, final_index)))
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

/// Entries per 64-byte cache line.
const LINE: usize = 8;

/// The entries of cache line `line` of `entries` OR-ed together, leaving out its entry
/// `skip` (`LINE` or more: none): a line holds a live entry exactly when this is not
/// absent.
#[inline(always)]
fn line_bits(entries: &TableEntries, line: usize, skip: usize) -> u64 {
    let mut any = 0;
    for (i, cell) in entries[line * LINE..(line + 1) * LINE].iter().enumerate() {
        let raw = cell.load(Ordering::Acquire);
        any |= if i == skip { 0 } else { raw };
    }
    any
}

/// Whether `entries` holds an entry that is not absent, given that
/// `entries[first..=last]` are all absent.
///
/// It reads what the range's own entries already brought into the cache before anything
/// else: the range's first and last cache lines, each tested as one word (its entries
/// OR-ed together, then [`PagingFormat::ABSENT_BITS`] masked off: one branch per line,
/// not one per entry, which is what keeps a table being emptied in random order from
/// paying a misprediction per entry). Only when those lines hold nothing live does the
/// search move outwards, one line at a time on each side (the first step reads the
/// neighbours across the lines' edges), so it stops after reading about as many entries
/// as lie between the range and the nearest live entry: a whole-table read only when the
/// table is (nearly) empty.
fn has_live_entry<F: PagingFormat>(entries: &TableEntries, first: usize, last: usize) -> bool {
    if own_lines_live::<F>(entries, first, last) {
        return true;
    }
    let lines = entries.len() / LINE;
    let (mut down, mut up) = (first / LINE, last / LINE);
    while down > 0 || up + 1 < lines {
        if up + 1 < lines {
            up += 1;
            if line_live::<F>(entries, up) {
                return true;
            }
        }
        if down > 0 {
            down -= 1;
            if line_live::<F>(entries, down) {
                return true;
            }
        }
    }
    false
}

/// Whether the entry after or before `index` is live.
#[inline(always)]
fn neighbour_live<F: PagingFormat>(entries: &TableEntries, index: usize) -> bool {
    let live = |i: usize| !is_absent::<F>(entries[i].load(Ordering::Acquire));
    (index + 1 < entries.len() && live(index + 1)) || (index > 0 && live(index - 1))
}

/// Whether another entry of `index`'s cache line (tested as one word) is live, or else,
/// unless `neighbours_tested`, the entry after or before it.
#[inline(never)]
fn line_or_neighbour_live<F: PagingFormat>(
    entries: &TableEntries,
    index: usize,
    neighbours_tested: bool,
) -> bool {
    !is_absent::<F>(line_bits(entries, index / LINE, index % LINE))
        || (!neighbours_tested && neighbour_live::<F>(entries, index))
}

/// Whether the first or last cache line of `entries[first..=last]` holds a live entry:
/// the lines the range's own entries brought into the cache, each tested as one word.
#[inline]
fn own_lines_live<F: PagingFormat>(entries: &TableEntries, first: usize, last: usize) -> bool {
    let (own_first, own_last) = (first / LINE, last / LINE);
    line_live::<F>(entries, own_first)
        || (own_last != own_first && line_live::<F>(entries, own_last))
}

/// Whether cache line `line` of `entries` holds a live entry, tested as one word.
#[inline(always)]
fn line_live<F: PagingFormat>(entries: &TableEntries, line: usize) -> bool {
    !is_absent::<F>(line_bits(entries, line, LINE))
}

/// The number of live entries in `entries`, read without a branch per entry.
fn live_entries<F: PagingFormat>(entries: &TableEntries) -> u16 {
    entries
        .iter()
        .map(|e| u16::from(!is_absent::<F>(e.load(Ordering::Acquire))))
        .sum()
}

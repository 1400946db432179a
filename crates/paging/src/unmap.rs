//! Unmapping a range, and changing the attributes of a range.

use devpriv_pte::{Entry, Level, Pfn};

use crate::bbm::{BreakLost, write_break_before_make};
use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::PhysMapper;
use crate::sync::Ordering;
use crate::table::{FrameChain, PageTable, chunk, is_absent};
use crate::tlb::TlbInvalidate;

/// Frames detached by an unmap, freed after the invalidation: whole subtrees by their
/// root (their entries are read when they are freed, never written), the rest chained.
#[derive(Default)]
struct Detached {
    subtrees: [Option<(Pfn, Level)>; 8],
    chain: FrameChain,
}

impl Detached {
    fn is_empty(&self) -> bool {
        self.subtrees[0].is_none() && self.chain.is_empty()
    }
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
    /// the removed leaves.
    pub fn unmap(
        &mut self,
        va: u64,
        len: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        let last = self.check_range(va, len, 4096)?;
        self.check_block_edges(va, last)?;
        self.l1_cache = None;
        let mut flush = Flush::none();
        let mut freed = Detached::default();
        self.clear(
            self.root(),
            self.root_level(),
            va,
            last,
            &mut flush,
            &mut freed,
        );
        if freed.is_empty() {
            return Ok(flush);
        }
        flush.flush(tlb);
        for (table, level) in freed.subtrees.into_iter().flatten() {
            self.free_subtree(table, level, alloc);
            alloc.free(table);
        }
        self.chain_free(freed.chain, alloc);
        Ok(Flush::none())
    }

    /// Clears `[start, last]` below `table`; returns whether the table is now empty.
    fn clear(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        flush: &mut Flush,
        freed: &mut Detached,
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
            let raw = entry.load(Ordering::Acquire);
            if raw != 0 {
                if let Some(next) = F::table_pfn(raw, level) {
                    let lower = level.next_lower().expect("table entry at level 1");
                    if cs == es && cl == es + (span - 1) {
                        // The whole subtree goes: detach it without clearing its
                        // entries; every translation below may be cached.
                        entry.store(0, Ordering::Release);
                        flush.merge(Flush::range(es, es.wrapping_add(span), 12));
                        match freed.subtrees.iter_mut().find(|s| s.is_none()) {
                            Some(free_slot) => *free_slot = Some((next, lower)),
                            None => self.chain_subtree(next, lower, &mut freed.chain),
                        }
                    } else if self.clear(next, lower, cs, cl, flush, freed) {
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
                }
            }
            es = es.wrapping_add(span);
        }
        whole
            || entries
                .iter()
                .all(|e| is_absent::<F>(e.load(Ordering::Acquire), level))
    }

    /// Pushes `table` (detached, at `level`) and every table below it onto `freed`.
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
    /// `change(old attributes)`; absent and software entries are left alone.
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
        self.protect_in(
            self.root(),
            self.root_level(),
            va,
            last,
            &mut change,
            tlb,
            &mut flush,
        )?;
        Ok(flush)
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
            let mut raw = entry.load(Ordering::Acquire);
            if let Some(next) = F::table_pfn(raw, level) {
                let lower = level.next_lower().expect("table entry at level 1");
                self.protect_in(next, lower, cs, cl, change, tlb, flush)?;
            } else {
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
                        match write_break_before_make(entry, raw, new_raw, es, level, tlb) {
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

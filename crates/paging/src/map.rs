//! Mapping: one page or block, or a range with the largest sizes alignment allows.

use devpriv_pte::{Entry, Level, PageSize, Pfn};

use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::PhysMapper;
use crate::sync::Ordering;
use crate::table::{FrameChain, PageTable, chunk, is_absent};

/// What one map call installs.
#[derive(Clone, Copy)]
struct MapPlan<A> {
    /// The largest level a leaf may be put at.
    max_leaf: Level,
    attrs: A,
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// Maps the page or block of `size` at `va` to the frames starting at `pfn`.
    ///
    /// Both must be aligned to `size`. Tables on the way are created as needed. The slot
    /// must be empty: anything present or recorded there (a leaf, a software entry, or
    /// a table below a block-sized slot) gives [`PagingError::Occupied`]. On any error
    /// the table is unchanged and every frame taken from `alloc` has been given back.
    ///
    /// An empty slot is never cached by a TLB, so the returned token only asks for the
    /// write barrier.
    ///
    /// A 4 KiB page whose tables exist costs one walk, or none when it lies in the
    /// level-1 table the previous `map` or `unmap` used, or one read when it lies
    /// elsewhere below the level-2 table they used.
    #[inline]
    pub fn map(
        &mut self,
        va: u64,
        pfn: Pfn,
        size: PageSize,
        attrs: F::LeafAttributes,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Flush, PagingError> {
        if size == PageSize::Size4KiB
            && let Some(result) = self.map_page_in_place(va, pfn, attrs)
        {
            return result;
        }
        self.map_creating(va, pfn, size, attrs, alloc)
    }

    /// The fast path of [`map`](Self::map) for a 4 KiB page: small enough to be inlined
    /// into the caller's loop, so that the walks of successive calls overlap (a walk
    /// to a random page waits mostly on memory).
    ///
    /// Returns `None`, having changed nothing, when `va` is not an aligned, translatable
    /// address whose level-1 table exists, or the leaf does not encode: the general
    /// path handles those and reports the errors.
    #[inline(always)]
    fn map_page_in_place(
        &mut self,
        va: u64,
        pfn: Pfn,
        attrs: F::LeafAttributes,
    ) -> Option<Result<Flush, PagingError>> {
        if va & (Level::L1.entry_span() - 1) != 0 {
            return None;
        }
        let key = va >> Level::L2.shift();
        // Linked and translatable, as `level1_table` explains.
        let table = self.level1_table(va, key)?;
        let leaf = F::encode(
            &Entry::Leaf {
                pfn,
                size: PageSize::Size4KiB,
                attrs,
            },
            Level::L1,
        )
        .ok()?;
        let slot = self.entry(table, Level::L1.table_index(va));
        if !is_absent::<F>(crate::bbm::settled::<F>(slot)) {
            return Some(Err(PagingError::Occupied {
                va,
                level: Level::L1,
            }));
        }
        slot.store(leaf, Ordering::Release);
        self.cache_level1(key, table);
        Some(Ok(Flush::none()))
    }

    /// [`map`](Self::map) past its fast path: every check, creating the missing tables.
    #[inline(never)]
    fn map_creating(
        &mut self,
        va: u64,
        pfn: Pfn,
        size: PageSize,
        attrs: F::LeafAttributes,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Flush, PagingError> {
        let bytes = size.bytes();
        if pfn.phys_addr() & (bytes - 1) != 0 || !pfn.is_aligned(size.frames()) {
            return Err(PagingError::Unaligned {
                value: pfn.phys_addr(),
                required: bytes,
            });
        }
        self.check_range(va, bytes, bytes)?;
        let target = size.level();
        let leaf = F::encode(&Entry::Leaf { pfn, size, attrs }, target)?;
        // Walk down; count the tables the path lacks.
        let (table, level, raw) = self.walk_to(va, target);
        if level == target {
            if !is_absent::<F>(raw) {
                return Err(PagingError::Occupied {
                    va: va & !(bytes - 1),
                    level,
                });
            }
            self.entry(table, level.table_index(va))
                .store(leaf, Ordering::Release);
            if level == Level::L1 {
                self.cache_level1(va >> Level::L2.shift(), table);
            }
            return Ok(Flush::none());
        }
        if !is_absent::<F>(raw) {
            return Err(PagingError::Occupied {
                va: va & !(level.entry_span() - 1),
                level,
            });
        }
        let missing = u64::from(level.number() - target.number());
        let mut pool = FrameChain::default();
        self.chain_fill(&mut pool, missing, alloc)?;
        let mut table = table;
        let mut level = level;
        while level != target {
            let next = self
                .chain_pop(&mut pool)
                .expect("pool holds one frame per level");
            let raw = match Self::table_raw(next, level) {
                Ok(raw) => raw,
                Err(e) => {
                    alloc.free(next);
                    self.chain_free(pool, alloc);
                    return Err(e);
                }
            };
            self.entry(table, level.table_index(va))
                .store(raw, Ordering::Release);
            table = next;
            level = level.next_lower().expect("above the target level");
        }
        self.entry(table, level.table_index(va))
            .store(leaf, Ordering::Release);
        if level == Level::L1 {
            self.cache_level1(va >> Level::L2.shift(), table);
        }
        Ok(Flush::none())
    }

    /// Maps `[va, va + len)` to the physical range starting at `pa`, using the largest
    /// leaves (1 GiB, 2 MiB, 4 KiB) that the alignment of both addresses allows.
    ///
    /// Everything in the range must be empty ([`PagingError::Occupied`] otherwise). Where
    /// a table already exists (even an empty one) the range is mapped below it with
    /// smaller leaves. The call checks the whole range and takes every table frame it
    /// needs before it writes anything, so on any error the table is unchanged and no
    /// frame is leaked.
    pub fn map_range(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: F::LeafAttributes,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Flush, PagingError> {
        self.map_range_with_max(va, pa, len, attrs, PageSize::Size1GiB, alloc)
    }

    /// As [`map_range`](Self::map_range), but with leaves no larger than `max`.
    pub fn map_range_with_max(
        &mut self,
        va: u64,
        pa: u64,
        len: u64,
        attrs: F::LeafAttributes,
        max: PageSize,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Flush, PagingError> {
        let last = self.check_range(va, len, 4096)?;
        if pa & 0xfff != 0 {
            return Err(PagingError::Unaligned {
                value: pa,
                required: 4096,
            });
        }
        let Some(pa_last) = pa.checked_add(len - 1) else {
            return Err(PagingError::Encode(devpriv_pte::EncodeError::FrameTooLarge));
        };
        // Every frame of the range must be encodable.
        F::encode(
            &Entry::Leaf {
                pfn: Pfn::containing(pa_last),
                size: PageSize::Size4KiB,
                attrs,
            },
            Level::L1,
        )?;
        let max_leaf = if max.level() > F::LARGEST_LEAF_LEVEL {
            F::LARGEST_LEAF_LEVEL
        } else {
            max.level()
        };
        let plan = MapPlan { max_leaf, attrs };
        let needed = self.plan_map(self.root(), self.root_level(), va, last, pa, &plan)?;
        let mut pool = FrameChain::default();
        self.chain_fill(&mut pool, needed, alloc)?;
        self.apply_map(
            self.root(),
            self.root_level(),
            va,
            last,
            pa,
            &plan,
            &mut pool,
            false,
        )?;
        debug_assert!(pool.is_empty());
        self.chain_free(pool, alloc);
        Ok(Flush::none())
    }

    /// Whether a chunk `[cs, cl]` of the entry `[es, ee]` at `level`, mapping to `pa`,
    /// becomes one leaf.
    #[inline]
    fn is_leaf_chunk(
        level: Level,
        max_leaf: Level,
        es: u64,
        ee: u64,
        cs: u64,
        cl: u64,
        pa: u64,
    ) -> bool {
        level <= max_leaf && cs == es && cl == ee && pa & (level.entry_span() - 1) == 0
    }

    /// Checks `[start, last]` (below `table` at `level`) is free; returns the number of
    /// tables mapping it needs.
    fn plan_map(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        pa: u64,
        plan: &MapPlan<F::LeafAttributes>,
    ) -> Result<u64, PagingError> {
        let span = level.entry_span();
        let entries = self.entries(table);
        let mut needed = 0;
        let mut es = start & !(span - 1);
        for entry in &entries[level.table_index(start)..=level.table_index(last)] {
            let (ee, cs, cl) = chunk(level, es, start, last);
            let chunk_pa = pa + (cs - start);
            let raw = crate::bbm::settled::<F>(entry);
            let table = F::table_pfn(raw, level);
            if table.is_none()
                && Self::is_leaf_chunk(level, plan.max_leaf, es, ee, cs, cl, chunk_pa)
            {
                if !is_absent::<F>(raw) {
                    return Err(PagingError::Occupied { va: es, level });
                }
            } else if let Some(next) = table {
                // An existing table (even an empty one) is kept: map below it.
                let lower = level.next_lower().expect("table entry at level 1");
                needed += self.plan_map(next, lower, cs, cl, chunk_pa, plan)?;
            } else if is_absent::<F>(raw) {
                needed += 1 + Self::tables_below_absent(level, cs, cl, chunk_pa, plan);
            } else {
                return Err(PagingError::Occupied { va: es, level });
            }
            es = es.wrapping_add(span);
        }
        Ok(needed)
    }

    /// The tables needed below a new (empty) table at `level - 1` for `[start, last]`.
    fn tables_below_absent(
        level: Level,
        start: u64,
        last: u64,
        pa: u64,
        plan: &MapPlan<F::LeafAttributes>,
    ) -> u64 {
        let lower = level.next_lower().expect("descending from level 1");
        if lower == Level::L1 {
            return 0;
        }
        let span = lower.entry_span();
        let mut needed = 0;
        let mut es = start & !(span - 1);
        for _ in lower.table_index(start)..=lower.table_index(last) {
            let (ee, cs, cl) = chunk(lower, es, start, last);
            let chunk_pa = pa + (cs - start);
            if !Self::is_leaf_chunk(lower, plan.max_leaf, es, ee, cs, cl, chunk_pa) {
                needed += 1 + Self::tables_below_absent(lower, cs, cl, chunk_pa, plan);
            }
            es = es.wrapping_add(span);
        }
        needed
    }

    /// Writes the mapping planned by [`plan_map`](Self::plan_map), taking tables from
    /// `pool`; `fresh` says that `table` was created by this call, so that at level 1
    /// its live-entry count is what the call writes. Called under `map_range`'s `&mut
    /// self` (the counts are written only there).
    #[allow(clippy::too_many_arguments)]
    fn apply_map(
        &self,
        table: Pfn,
        level: Level,
        start: u64,
        last: u64,
        pa: u64,
        plan: &MapPlan<F::LeafAttributes>,
        pool: &mut FrameChain,
        fresh: bool,
    ) -> Result<(), PagingError> {
        let span = level.entry_span();
        let entries = self.entries(table);
        if level == Level::L1 {
            // Every level-1 chunk is one whole page, and the plan found every slot empty.
            let raw0 = F::encode(
                &Entry::Leaf {
                    pfn: Pfn::containing(pa),
                    size: PageSize::Size4KiB,
                    attrs: plan.attrs,
                },
                level,
            )?;
            let slots = &entries[level.table_index(start)..=level.table_index(last)];
            for (k, entry) in slots.iter().enumerate() {
                entry.store(raw0 + ((k as u64) << 12), Ordering::Release);
            }
            // At most 512 slots, every one absent before.
            let mapped = slots.len() as u16;
            if fresh {
                self.live.learn(start, mapped);
            } else {
                self.live.add(start, mapped);
            }
            return Ok(());
        }
        let mut es = start & !(span - 1);
        // The first leaf written in this table, to derive the others by adding the
        // address difference (the address field is contiguous and checked to fit).
        let mut first_leaf: Option<(u64, u64)> = None;
        for entry in &entries[level.table_index(start)..=level.table_index(last)] {
            let (ee, cs, cl) = chunk(level, es, start, last);
            let chunk_pa = pa + (cs - start);
            let raw = crate::bbm::settled::<F>(entry);
            let table = F::table_pfn(raw, level);
            if table.is_none()
                && Self::is_leaf_chunk(level, plan.max_leaf, es, ee, cs, cl, chunk_pa)
            {
                let raw = match first_leaf {
                    Some((raw0, pa0)) => raw0 + (chunk_pa - pa0),
                    None => {
                        let size = level.leaf_size().expect("leaf-capable level");
                        let raw0 = F::encode(
                            &Entry::Leaf {
                                pfn: Pfn::containing(chunk_pa),
                                size,
                                attrs: plan.attrs,
                            },
                            level,
                        )?;
                        first_leaf = Some((raw0, chunk_pa));
                        raw0
                    }
                };
                entry.store(raw, Ordering::Release);
            } else {
                let (next, fresh) = match table {
                    Some(next) => (next, false),
                    None => {
                        let next = self.chain_pop(pool).expect("the plan counted every table");
                        entry.store(Self::table_raw(next, level)?, Ordering::Release);
                        (next, true)
                    }
                };
                let lower = level.next_lower().expect("table entry at level 1");
                self.apply_map(next, lower, cs, cl, chunk_pa, plan, pool, fresh)?;
            }
            es = es.wrapping_add(span);
        }
        Ok(())
    }
}

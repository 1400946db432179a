//! The page table: a root frame, its level, and the mapper that reaches table memory.

use core::marker::PhantomData;

use devpriv_pte::{Entry, Level, PageSize, Pfn};

use crate::cursor::Slot;
use crate::error::PagingError;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::live::LiveCounts;
use crate::mapper::{PhysMapper, TableEntries};
use crate::sync::{AtomicU64, Ordering};
use crate::unmap::{RemovedEntry, Report};

/// A multi-level page table of format `F` whose table frames are reached through `M`.
///
/// Entries are [`AtomicU64`](core::sync::atomic::AtomicU64)s, never `&mut`: the
/// hardware walker may set accessed/dirty bits at any time, and other threads may change
/// entries through the `&self` operations (translate, protect, split, the cursor), which
/// use compare-exchange and report a lost race as [`PagingError::Raced`] or
/// [`crate::ReplaceError::Raced`]. Operations that free table frames (unmap, collapse,
/// [`destroy`](Self::destroy)) or install many entries at once (map, map_range) take
/// `&mut self`, so no walker of this value can be inside a table while it is freed.
///
/// Frames come from the caller's [`FrameAllocator`], passed to each operation that
/// needs one; TLB maintenance goes through a [`TlbInvalidate`](crate::TlbInvalidate)
/// where an operation must flush before it can continue (break-before-make, freeing a
/// table), and is otherwise left to the caller through the returned
/// [`Flush`](crate::Flush) token.
///
/// Dropping a `PageTable` frees nothing (the tables may still be loaded in CR3 / TTBR);
/// [`destroy`](Self::destroy) gives every table frame back.
pub struct PageTable<F: PagingFormat, M: PhysMapper> {
    root: Pfn,
    root_level: Level,
    mapper: M,
    /// The level-1 table [`map`](Self::map) or [`unmap`](Self::unmap) last used, keyed
    /// by `va >> 21` (of a translatable address): tables are unlinked only through
    /// `&mut self`, and every such operation clears it (or, in `unmap`, sets it only to a
    /// table it left linked). `&self` operations never unlink a table, so the entry is
    /// right whatever they did meanwhile; it caches where the table is, never what it
    /// holds.
    pub(crate) l1_cache: CachedTable,
    /// Set when `unmap`'s fast path dropped the count of the cached level-1 table (it
    /// then clears entries of that table without following the count); cleared
    /// whenever a table is cached again ([`cache_level1`](Self::cache_level1)), since
    /// the paths that do so may have counted it.
    pub(crate) l1_count_dropped: bool,
    /// The level-2 table (the one holding level-2 entries) that the last walk of a
    /// `map` or `unmap` went through, keyed by `va >> 30`: when `l1_cache` misses, their
    /// walk starts there instead of at the root, like a CPU's paging-structure cache.
    /// It is kept as [`l1_cache`](Self::l1_cache) is: every `&mut self` operation that
    /// may unlink a table clears both ([`forget_cached_tables`](Self::forget_cached_tables)).
    pub(crate) l2_cache: CachedTable,
    /// How many live entries the level-1 tables below one level-2 table hold, where
    /// known, never more than they do: a hint that lets a single-page `unmap` skip the
    /// look at its table's other entries (see [`LiveCounts`]). A kilobyte, most of this
    /// value's size.
    pub(crate) live: LiveCounts,
    format: PhantomData<fn() -> F>,
}

impl<F: PagingFormat, M: PhysMapper> core::fmt::Debug for PageTable<F, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTable")
            .field("root", &self.root)
            .field("root_level", &self.root_level)
            .finish_non_exhaustive()
    }
}

/// A table a `PageTable` remembers where to find, and the key it is found by (`va >> 21`
/// for a level-1 table, `va >> 30` for a level-2 table, of a translatable address).
///
/// Two words and no `Option`, so that caching a table is two stores: in a loop of calls
/// that each cache another table, every store per call takes a store-buffer entry
/// until the call's cache miss retires, which bounds how many of those misses overlap.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedTable {
    /// The key, or [`NO_TABLE`](Self::NO_TABLE) (no key reaches it: `va >> 21` of a
    /// 64-bit address is below 2^43).
    key: u64,
    table: Pfn,
}

impl CachedTable {
    const NO_TABLE: u64 = u64::MAX;

    /// Nothing cached.
    pub(crate) const NONE: Self = Self {
        key: Self::NO_TABLE,
        table: Pfn::new(0),
    };

    /// `table`, found by `key`.
    #[inline(always)]
    pub(crate) const fn new(key: u64, table: Pfn) -> Self {
        Self { key, table }
    }

    /// The table, if it is the one `key` finds.
    #[inline(always)]
    pub(crate) fn get(&self, key: u64) -> Option<Pfn> {
        (self.key == key).then_some(self.table)
    }

    /// Whether the table cached is the one `key` finds.
    #[inline(always)]
    pub(crate) fn holds(&self, key: u64) -> bool {
        self.key == key
    }
}

/// The number of virtual-address bits a table rooted at `root_level` resolves.
const fn va_bits_below(root_level: Level) -> u32 {
    root_level.shift() + 9
}

/// A link in a chain of frames that are not (or no longer) part of the table, kept in the
/// frames' own entry 0. Bit 0 is clear, so a stale walker that still reaches the frame
/// sees an invalid entry on both architectures.
const fn chain_link(next: Option<Pfn>) -> u64 {
    match next {
        Some(p) => (p.number() + 1) << 12,
        None => 0,
    }
}

const fn chain_next(link: u64) -> Option<Pfn> {
    if link == 0 {
        None
    } else {
        Some(Pfn::new((link >> 12) - 1))
    }
}

/// A stack of frames threaded through their entry 0 (no allocation needed).
#[derive(Debug, Default)]
pub(crate) struct FrameChain {
    head: Option<Pfn>,
    len: u64,
}

impl FrameChain {
    pub(crate) const fn new() -> Self {
        Self { head: None, len: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// A new, empty page table with its root at `root_level`, the root frame taken from
    /// `alloc` and zeroed.
    ///
    /// Fails with [`PagingError::InvalidRootLevel`] if the format cannot start a walk at
    /// `root_level` (x86_64: 4 or 5; aarch64: 2, 3 or 4, see
    /// [`aarch64_root_level`](crate::aarch64_root_level)), or
    /// [`PagingError::OutOfFrames`].
    pub fn new(
        root_level: Level,
        mapper: M,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Self, PagingError> {
        if !F::is_root_level(root_level) {
            return Err(PagingError::InvalidRootLevel(root_level));
        }
        let root = alloc.allocate()?;
        let table = Self {
            root,
            root_level,
            mapper,
            l1_cache: CachedTable::NONE,
            l1_count_dropped: false,
            l2_cache: CachedTable::NONE,
            live: LiveCounts::new(va_bits_below(root_level)),
            format: PhantomData,
        };
        table.zero(root);
        Ok(table)
    }

    /// The page table whose root table is `root`, at `root_level`.
    ///
    /// Fails with [`PagingError::InvalidRootLevel`] as [`new`](Self::new) does.
    ///
    /// # Safety
    ///
    /// `root` must hold a table of format `F` at `root_level` whose every table entry
    /// points to a table frame `mapper` reaches (see [`PhysMapper`]), and nothing else
    /// may free or rewrite those tables (other than atomic updates of entries that are
    /// not table entries: a table entry must not be replaced, since the value caches the
    /// level-1 and level-2 tables its walks went through) while the returned value
    /// lives. Frames freed by this value's operations go to the allocator passed to
    /// them, so the tables should have come from that allocator.
    ///
    /// Outside updates that clear live entries are not seen by the value's live-entry
    /// counts (see [`unmap`](Self::unmap)): a level-1 table they empty may outlast the
    /// `unmap` that would otherwise have freed it, until the value has forgotten its
    /// counts and an `unmap` in that table reads it. Clearing entries through
    /// [`slot`](Self::slot) or a [`cursor`](Self::cursor) keeps the counts right.
    pub unsafe fn from_root(root: Pfn, root_level: Level, mapper: M) -> Result<Self, PagingError> {
        if !F::is_root_level(root_level) {
            return Err(PagingError::InvalidRootLevel(root_level));
        }
        Ok(Self {
            root,
            root_level,
            mapper,
            l1_cache: CachedTable::NONE,
            l1_count_dropped: false,
            l2_cache: CachedTable::NONE,
            live: LiveCounts::new(va_bits_below(root_level)),
            format: PhantomData,
        })
    }

    /// The root table's frame (what CR3 / TTBR points to).
    pub const fn root(&self) -> Pfn {
        self.root
    }

    /// The level the walk starts at.
    pub const fn root_level(&self) -> Level {
        self.root_level
    }

    /// The number of virtual-address bits the table resolves (48 for a level-4 root).
    pub const fn va_bits(&self) -> u32 {
        va_bits_below(self.root_level)
    }

    /// The mapper.
    pub const fn mapper(&self) -> &M {
        &self.mapper
    }

    /// Frees every table frame (not the frames leaves point to) and consumes the table.
    ///
    /// The table must not be in use by any CPU (flush its translations first, or switch
    /// to another root). What the leaves and software entries pointed to is forgotten;
    /// use [`destroy_with`](Self::destroy_with) to release it.
    pub fn destroy(self, alloc: &mut impl FrameAllocator) {
        self.free_subtree(self.root, self.root_level, alloc);
        alloc.free(self.root);
    }

    /// As [`destroy`](Self::destroy), and hands every leaf and software entry to
    /// `removed` first, with its virtual address (canonical on x86_64, in the lower half
    /// on aarch64), so that what it pointed to can be released.
    pub fn destroy_with(
        self,
        alloc: &mut impl FrameAllocator,
        mut removed: impl FnMut(RemovedEntry<F>),
    ) {
        let mut report: Report<'_, F> = Some(&mut removed);
        self.free_subtree_reporting(self.root, self.root_level, 0, alloc, &mut report);
        alloc.free(self.root);
    }

    /// Frees every table below `table` (at `level`), not `table` itself.
    pub(crate) fn free_subtree(&self, table: Pfn, level: Level, alloc: &mut impl FrameAllocator) {
        self.free_subtree_reporting(table, level, 0, alloc, &mut None);
    }

    /// Frees every table below `table` (at `level`, covering addresses from `va`), not
    /// `table` itself, reporting every leaf and software entry first when asked.
    pub(crate) fn free_subtree_reporting(
        &self,
        table: Pfn,
        level: Level,
        va: u64,
        alloc: &mut impl FrameAllocator,
        report: &mut Report<'_, F>,
    ) {
        let Some(lower) = level.next_lower() else {
            if let Some(report) = report.as_deref_mut() {
                self.report_entries(table, level, va, report);
            }
            return;
        };
        let span = level.entry_span();
        // Computed only where it is used: freeing a gigabyte's 512 level-1 tables
        // otherwise spends most of its time on it.
        let entry_va = |i: usize| F::canonical(va.wrapping_add(i as u64 * span), self.va_bits());
        for (i, entry) in self.entries(table).iter().enumerate() {
            let raw = entry.load(Ordering::Acquire);
            if let Some(next) = F::table_pfn(raw, level) {
                // A level-1 table holds no tables: no call to find nothing below it,
                // unless its entries are to be reported.
                if lower != Level::L1 || report.is_some() {
                    self.free_subtree_reporting(next, lower, entry_va(i), alloc, report);
                }
                alloc.free(next);
            } else if let Some(report) = report.as_deref_mut()
                && !is_absent::<F>(raw)
            {
                report(RemovedEntry::new(entry_va(i), level, raw));
            }
        }
    }

    /// Reports the leaves and software entries of the level-1 `table` covering `va`.
    fn report_entries(
        &self,
        table: Pfn,
        level: Level,
        va: u64,
        report: &mut dyn FnMut(RemovedEntry<F>),
    ) {
        let span = level.entry_span();
        for (i, entry) in self.entries(table).iter().enumerate() {
            let raw = entry.load(Ordering::Acquire);
            if !is_absent::<F>(raw) {
                let es = F::canonical(va.wrapping_add(i as u64 * span), self.va_bits());
                report(RemovedEntry::new(es, level, raw));
            }
        }
    }

    /// The entries of table `frame`.
    #[inline]
    pub(crate) fn entries(&self, frame: Pfn) -> &TableEntries {
        // SAFETY: by the `PhysMapper` contract the pointer is valid for the whole array
        // while `frame` is a table of this page table; table frames are freed only
        // through `&mut self`, so none is freed while this shared borrow lives. The
        // array holds atomics, so shared references may coexist with hardware and
        // other threads' atomic writes.
        unsafe { self.mapper.table(frame).as_ref() }
    }

    /// The atomic entry `index` of table `frame`.
    #[inline]
    pub(crate) fn entry(&self, frame: Pfn, index: usize) -> &AtomicU64 {
        &self.entries(frame)[index]
    }

    pub(crate) fn zero(&self, frame: Pfn) {
        for entry in self.entries(frame) {
            entry.store(0, Ordering::Relaxed);
        }
    }

    /// The raw table entry pointing to `next` at `level`.
    #[inline]
    pub(crate) fn table_raw(next: Pfn, level: Level) -> Result<u64, PagingError> {
        Ok(F::encode(
            &Entry::Table {
                next,
                attrs: Default::default(),
            },
            level,
        )?)
    }

    /// Checks `[va, va + len)` is non-empty, `align`-aligned (start and length) and
    /// translatable; returns the last address.
    #[inline]
    pub(crate) fn check_range(&self, va: u64, len: u64, align: u64) -> Result<u64, PagingError> {
        if len == 0 {
            return Err(PagingError::EmptyRange);
        }
        if va & (align - 1) != 0 {
            return Err(PagingError::Unaligned {
                value: va,
                required: align,
            });
        }
        if len & (align - 1) != 0 {
            return Err(PagingError::Unaligned {
                value: len,
                required: align,
            });
        }
        let Some(last) = va.checked_add(len - 1) else {
            return Err(PagingError::OutOfRange { va: u64::MAX });
        };
        if !F::is_translatable(va, self.va_bits()) {
            return Err(PagingError::OutOfRange { va });
        }
        if !F::is_translatable_range(va, last, self.va_bits()) {
            return Err(PagingError::OutOfRange { va: last });
        }
        Ok(last)
    }

    /// Checks a single address is translatable.
    pub(crate) fn check_va(&self, va: u64) -> Result<(), PagingError> {
        if F::is_translatable(va, self.va_bits()) {
            Ok(())
        } else {
            Err(PagingError::OutOfRange { va })
        }
    }

    /// Takes a frame from `alloc` and zeroes it.
    pub(crate) fn allocate_table(
        &self,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Pfn, PagingError> {
        let frame = alloc.allocate()?;
        // A frame no table entry can point at is given back at once (as `chain_fill`
        // does), so that no error path after this one has to.
        if let Err(e) = Self::table_raw(frame, Level::L2) {
            alloc.free(frame);
            return Err(e);
        }
        self.zero(frame);
        Ok(frame)
    }

    /// Pushes `frame` (no longer reachable by software walkers) onto `chain`.
    pub(crate) fn chain_push(&self, chain: &mut FrameChain, frame: Pfn) {
        self.entry(frame, 0)
            .store(chain_link(chain.head), Ordering::Relaxed);
        chain.head = Some(frame);
        chain.len += 1;
    }

    /// Pops a frame from `chain`, zeroed.
    pub(crate) fn chain_pop(&self, chain: &mut FrameChain) -> Option<Pfn> {
        let frame = chain.head?;
        chain.head = chain_next(self.entry(frame, 0).load(Ordering::Relaxed));
        chain.len -= 1;
        self.entry(frame, 0).store(0, Ordering::Relaxed);
        Some(frame)
    }

    /// Gives every frame of `chain` back to `alloc`.
    pub(crate) fn chain_free(&self, mut chain: FrameChain, alloc: &mut impl FrameAllocator) {
        while let Some(frame) = self.chain_pop(&mut chain) {
            alloc.free(frame);
        }
    }

    /// Fills `chain` with `count` zeroed frames; on failure gives back what it took.
    pub(crate) fn chain_fill(
        &self,
        chain: &mut FrameChain,
        count: u64,
        alloc: &mut impl FrameAllocator,
    ) -> Result<(), PagingError> {
        for _ in 0..count {
            match alloc.allocate() {
                Ok(frame) => {
                    if let Err(e) = Self::table_raw(frame, Level::L2) {
                        alloc.free(frame);
                        self.chain_free(core::mem::take(chain), alloc);
                        return Err(e);
                    }
                    self.zero(frame);
                    self.chain_push(chain, frame);
                }
                Err(e) => {
                    self.chain_free(core::mem::take(chain), alloc);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// The level-1 table translating `va`, whose level-2 key (`va >> 21`) is `key`:
    /// the cached one, else one read through the cached level-2 table, else one walk;
    /// `None` if `va` is not translatable or no level-1 table holds it. The cached table
    /// is still linked where it was found: only `&mut self` operations unlink tables, and
    /// every one of them clears or updates the cache; its key came from a translatable
    /// address, and `va` has the same upper bits.
    ///
    /// A walk remembers the level-2 table it went through ([`Self::l2_cache`]).
    #[inline(always)]
    pub(crate) fn level1_table(&mut self, va: u64, key: u64) -> Option<Pfn> {
        match self.l1_cache.get(key) {
            Some(table) => Some(table),
            None => self.walk_to_level1_table(va),
        }
    }

    /// The level-1 table translating `va` (whose `va >> 21` is `key`) if the caches
    /// find it without a walk: the cached level-1 table, or the entry of the cached
    /// level-2 table (one read). `None` otherwise, or if that entry is not a table.
    #[inline(always)]
    pub(crate) fn cached_level1_table(&self, va: u64, key: u64) -> Option<Pfn> {
        match self.l1_cache.get(key) {
            Some(table) => Some(table),
            None => self.level1_table_below_cached_level2(va).flatten(),
        }
    }

    /// Through the cached level-2 table, when it is the one `va` goes through (it is
    /// linked where the walk would find it): `Some` of what its entry for `va` holds (a
    /// level-1 table, or `None` for anything else); `None` when it is not cached.
    #[inline(always)]
    fn level1_table_below_cached_level2(&self, va: u64) -> Option<Option<Pfn>> {
        let table = self.l2_cache.get(va >> Level::L3.shift())?;
        // A plain read: a break-before-make marker is not a table, and the caller's
        // slow path waits for it.
        let raw = self
            .entry(table, Level::L2.table_index(va))
            .load(Ordering::Acquire);
        Some(F::table_pfn(raw, Level::L2))
    }

    /// [`level1_table`](Self::level1_table) past its cache: through the cached level-2
    /// table, else one walk from the root.
    #[inline]
    fn walk_to_level1_table(&mut self, va: u64) -> Option<Pfn> {
        self.check_va(va).ok()?;
        if let Some(below_cached) = self.level1_table_below_cached_level2(va) {
            return below_cached;
        }
        match self.walk_to(va, Level::L2) {
            (table, Level::L2, raw) => {
                self.l2_cache = CachedTable::new(va >> Level::L3.shift(), table);
                F::table_pfn(raw, Level::L2)
            }
            _ => None,
        }
    }

    /// Caches level-1 table `table`, whose key (`va >> 21`) is `key`.
    #[inline(always)]
    pub(crate) fn cache_level1(&mut self, key: u64, table: Pfn) {
        self.l1_cache = CachedTable::new(key, table);
        // A store only when it changes: a loop of unmaps in a scattered order keeps a
        // store per call out of the store buffer, which bounds how many of its cache
        // misses overlap.
        if self.l1_count_dropped {
            self.l1_count_dropped = false;
        }
    }

    /// Forgets the cached level-1 and level-2 tables: called by every `&mut self`
    /// operation that may unlink a table, before it does.
    #[inline]
    pub(crate) fn forget_cached_tables(&mut self) {
        self.l1_cache = CachedTable::NONE;
        self.l2_cache = CachedTable::NONE;
        self.live.forget();
    }

    /// Walks from the root towards `va`, stopping at `stop` or at the first entry that
    /// is not a table. Returns the table holding that entry, the entry's level and its
    /// raw value.
    #[inline]
    pub(crate) fn walk_to(&self, va: u64, stop: Level) -> (Pfn, Level, u64) {
        let mut table = self.root;
        let mut level = self.root_level;
        loop {
            let raw = crate::bbm::settled::<F>(self.entry(table, level.table_index(va)));
            if level == stop {
                return (table, level, raw);
            }
            match F::table_pfn(raw, level) {
                Some(next) => {
                    table = next;
                    level = level.next_lower().expect("table entry at level 1");
                }
                None => return (table, level, raw),
            }
        }
    }

    /// The entry at `level` on the walk to `va`, decoded.
    ///
    /// Fails with [`PagingError::NotMapped`] if the walk ends above `level` at an
    /// absent entry, [`PagingError::PartialBlock`] if it ends at a leaf or software
    /// entry above `level`, [`PagingError::OutOfRange`] for an address the table does not
    /// translate or a level above the root, and [`PagingError::Corrupt`] if the entry
    /// does not decode.
    pub fn entry_at(&self, va: u64, level: Level) -> Result<Entry<F>, PagingError> {
        self.check_va(va)?;
        if level > self.root_level {
            return Err(PagingError::OutOfRange { va });
        }
        let (_, found, raw) = self.walk_to(va, level);
        let entry = F::decode(raw, found).map_err(|error| PagingError::Corrupt {
            va,
            level: found,
            error,
        })?;
        if found == level {
            return Ok(entry);
        }
        match entry {
            Entry::Absent => Err(PagingError::NotMapped { va }),
            _ => Err(PagingError::PartialBlock {
                va: va & !(found.entry_span() - 1),
                level: found,
            }),
        }
    }

    /// The slot of the entry at `level` that maps `va`: one entry, read once, that can
    /// be compare-exchanged ([`Slot::replace`]) — the direct form of a one-entry cursor,
    /// for code that knows what it wrote there (a migration entry, say) and wants it
    /// back.
    ///
    /// Fails like [`entry_at`](Self::entry_at) when the walk ends above `level`
    /// ([`PagingError::NotMapped`], [`PagingError::PartialBlock`]) or the address or
    /// level is out of reach ([`PagingError::OutOfRange`]), and with
    /// [`PagingError::IsTable`] when the entry at `level` is a table: a slot holds a
    /// leaf, a software entry or nothing.
    pub fn slot(&self, va: u64, level: Level) -> Result<Slot<'_, F>, PagingError> {
        self.check_va(va)?;
        if level > self.root_level {
            return Err(PagingError::OutOfRange { va });
        }
        let (table, found, raw) = self.walk_to(va, level);
        let es = va & !(found.entry_span() - 1);
        if found != level {
            return Err(if is_absent::<F>(raw) {
                PagingError::NotMapped { va }
            } else {
                PagingError::PartialBlock {
                    va: es,
                    level: found,
                }
            });
        }
        if F::table_pfn(raw, level).is_some() {
            return Err(PagingError::IsTable { va: es, level });
        }
        let cell = self.entry(table, level.table_index(va));
        Ok(Slot::new(es, level, raw, cell, &self.live))
    }

    /// The lowest entry on the walk to `va` (a leaf, a software entry, or an absent
    /// entry at the level the walk stopped), with its level.
    pub fn lookup(&self, va: u64) -> Result<(Level, Entry<F>), PagingError> {
        self.check_va(va)?;
        let (_, level, raw) = self.walk_to(va, Level::L1);
        let entry =
            F::decode(raw, level).map_err(|error| PagingError::Corrupt { va, level, error })?;
        Ok((level, entry))
    }

    /// Translates `va`: the physical address and the leaf entry mapping it, or `None`
    /// if no present leaf maps it (absent, software entry, or an address the table does
    /// not translate).
    #[inline]
    pub fn translate(&self, va: u64) -> Option<Translation<F>> {
        if !F::is_translatable(va, self.va_bits()) {
            return None;
        }
        let (_, level, raw) = self.walk_to(va, Level::L1);
        let (pfn, attrs) = F::leaf(raw, level)?;
        let size = level.leaf_size()?;
        Some(Translation {
            pa: pfn.phys_addr() + (va & (size.bytes() - 1)),
            pfn,
            size,
            attrs,
        })
    }
}

/// The result of [`PageTable::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation<F: PagingFormat> {
    /// The physical address `va` translates to.
    pub pa: u64,
    /// The first frame of the leaf.
    pub pfn: Pfn,
    /// The leaf's size.
    pub size: PageSize,
    /// The leaf's attributes.
    pub attrs: F::LeafAttributes,
}

impl<F: PagingFormat> Translation<F> {
    /// The leaf as an [`Entry`].
    pub fn entry(&self) -> Entry<F> {
        Entry::Leaf {
            pfn: self.pfn,
            size: self.size,
            attrs: self.attrs,
        }
    }
}

/// Whether `raw` means "nothing here" at any level of the format (zero, or x86_64's
/// A/D-only erratum values): exactly when `F::decode` says [`Entry::Absent`], by
/// [`PagingFormat::ABSENT_BITS`].
#[inline(always)]
pub(crate) fn is_absent<F: PagingFormat>(raw: u64) -> bool {
    raw & !F::ABSENT_BITS == 0
}

/// The span of the entry at `level` containing `va`, clipped to `[start, last]`:
/// `(entry_start, entry_last, chunk_start, chunk_last)`.
#[inline]
pub(crate) fn chunk(level: Level, es: u64, start: u64, last: u64) -> (u64, u64, u64) {
    let ee = es + (level.entry_span() - 1);
    (ee, start.max(es), last.min(ee))
}

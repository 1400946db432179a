//! Installing one entry of any kind at a chosen level, creating the tables above it.

use devpriv_pte::{Entry, Level, Pfn};

use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::PhysMapper;
use crate::sync::Ordering;
use crate::table::{FrameChain, PageTable, is_absent};

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// Installs `entry` in the empty slot at `level` for `va`, creating the tables on
    /// the way from `alloc` where the path lacks them.
    ///
    /// `entry` may be of any kind but a table: a leaf at the level of its size, a
    /// software entry (device-private, migration, swap, ...) at any level the format
    /// allows it, or [`Entry::Absent`], which only makes sure the slot exists. `va`
    /// must be aligned to the slot's span ([`PagingError::Unaligned`]) and `level` at
    /// or below the root level ([`PagingError::OutOfRange`]). A table entry gives
    /// [`PagingError::TableEntry`]: tables are made only by the page table, from its
    /// allocator.
    ///
    /// The slot is written with compare-exchange from the empty value it was read
    /// with, so the call is safe against other threads using the `&self` operations on
    /// the same table:
    ///
    /// * a slot that holds anything (a leaf, a software entry, or a table below a
    ///   block-sized slot), or a leaf or software entry above `level` covering `va`,
    ///   gives [`PagingError::Occupied`] for that entry;
    /// * a slot that another thread fills between the read and the write gives
    ///   [`PagingError::Raced`].
    ///
    /// The call counts the missing tables and takes every frame it needs before it
    /// writes anything, so when it fails for a bad argument, an occupied path or
    /// [`PagingError::OutOfFrames`], the table is unchanged and every frame taken from
    /// `alloc` has been given back. Each new table is linked with compare-exchange
    /// too; when another thread links a table at the same place first, the call uses
    /// that one and gives its own frame back. After a lost race ([`PagingError::Raced`])
    /// the tables the call already linked stay (empty, or shared with the winner):
    /// another thread may be using them, and [`unmap`](Self::unmap) or
    /// [`destroy`](Self::destroy) frees them.
    ///
    /// An empty slot is never cached by a TLB, so the returned token only asks for the
    /// write barrier.
    pub fn install(
        &self,
        va: u64,
        level: Level,
        entry: &Entry<F>,
        alloc: &mut impl FrameAllocator,
    ) -> Result<Flush, PagingError> {
        if matches!(entry, Entry::Table { .. }) {
            return Err(PagingError::TableEntry);
        }
        if level > self.root_level() {
            return Err(PagingError::OutOfRange { va });
        }
        let span = level.entry_span();
        self.check_range(va, span, span)?;
        let new = F::encode(entry, level)?;
        let (table, found, raw) = self.walk_to(va, level);
        if !is_absent::<F>(raw) {
            return Err(PagingError::Occupied {
                va: va & !(found.entry_span() - 1),
                level: found,
            });
        }
        let missing = u64::from(found.number() - level.number());
        let mut pool = FrameChain::default();
        self.chain_fill(&mut pool, missing, alloc)?;
        let linked = self.link_path(table, found, raw, va, level, &mut pool);
        // Tables linked by another thread first leave frames unused.
        self.chain_free(pool, alloc);
        let (table, expected) = linked?;
        self.entry(table, level.table_index(va))
            .compare_exchange(expected, new, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| PagingError::Raced { va })?;
        Ok(Flush::none())
    }

    /// From the empty slot `raw` at `found` in `table`, links tables from `pool` down to
    /// `level`; returns the table holding the slot at `level` and that slot's empty
    /// value.
    fn link_path(
        &self,
        mut table: Pfn,
        mut found: Level,
        mut raw: u64,
        va: u64,
        level: Level,
        pool: &mut FrameChain,
    ) -> Result<(Pfn, u64), PagingError> {
        while found != level {
            let slot = self.entry(table, found.table_index(va));
            let next = match F::table_pfn(raw, found) {
                Some(next) => next,
                None if is_absent::<F>(raw) => {
                    let frame = self
                        .chain_pop(pool)
                        .expect("the pool holds a frame for every missing table");
                    let link = Self::table_raw(frame, found)?;
                    // Release: the zeroed table is visible before the entry linking it.
                    match slot.compare_exchange(raw, link, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => frame,
                        Err(current) => {
                            // Another thread wrote the slot first: keep the frame for a
                            // later level and look at what is there now.
                            self.chain_push(pool, frame);
                            raw = current;
                            continue;
                        }
                    }
                }
                None => return Err(PagingError::Raced { va }),
            };
            table = next;
            found = found
                .next_lower()
                .expect("a table entry above the target level");
            raw = crate::bbm::settled::<F>(self.entry(table, found.table_index(va)));
        }
        if is_absent::<F>(raw) {
            Ok((table, raw))
        } else {
            Err(PagingError::Raced { va })
        }
    }
}

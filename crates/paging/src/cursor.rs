//! The cursor: a walk over every entry of a range, at the level it sits at, with
//! compare-exchange replacement.

use devpriv_pte::{DecodeError, EncodeError, Entry, Level, Pfn};

use crate::bbm::{BreakLost, write_break_before_make};
use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::live::LiveCounts;
use crate::mapper::PhysMapper;
use crate::sync::{AtomicU64, Ordering};
use crate::table::{PageTable, is_absent};
use crate::tlb::TlbInvalidate;

/// Why [`Slot::replace`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaceError {
    /// The entry is no longer what the slot saw: another thread (or the hardware's
    /// accessed/dirty update) changed it. `current` is the raw value found.
    Raced {
        /// The raw entry now in the slot.
        current: u64,
    },
    /// The new entry cannot be encoded at the slot's level.
    Encode(EncodeError),
    /// A table entry cannot be written through a slot (tables are made by map and
    /// split), and a slot holding a table is never visited.
    TableNotAllowed,
    /// The change of a valid entry into another valid entry needs break-before-make
    /// ([`crate::needs_break_before_make`]); use [`Slot::replace_break_before_make`].
    NeedsBreakBeforeMake,
}

impl From<EncodeError> for ReplaceError {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

impl core::fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Raced { current } => write!(
                f,
                "the entry changed since it was read (it now holds {current:#x})"
            ),
            Self::Encode(e) => write!(f, "the new entry cannot be encoded: {e}"),
            Self::TableNotAllowed => f.write_str("a table entry cannot be written through a slot"),
            Self::NeedsBreakBeforeMake => {
                f.write_str("changing one valid entry into another needs break-before-make")
            }
        }
    }
}

impl core::error::Error for ReplaceError {}

/// One entry the cursor visits: a leaf, a software entry or an absent slot, at the level
/// where the walk found it. Its span may extend beyond the cursor's range (a 2 MiB block
/// or an absent upper-level slot that the range only partly covers).
pub struct Slot<'a, F: PagingFormat> {
    va: u64,
    level: Level,
    raw: u64,
    cell: &'a AtomicU64,
    live: &'a LiveCounts,
    format: core::marker::PhantomData<fn() -> F>,
}

impl<F: PagingFormat> core::fmt::Debug for Slot<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slot")
            .field("va", &format_args!("{:#x}", self.va))
            .field("level", &self.level)
            .field("raw", &format_args!("{:#x}", self.raw))
            .finish()
    }
}

impl<'a, F: PagingFormat> Slot<'a, F> {
    pub(crate) fn new(
        va: u64,
        level: Level,
        raw: u64,
        cell: &'a AtomicU64,
        live: &'a LiveCounts,
    ) -> Self {
        Self {
            va,
            level,
            raw,
            cell,
            live,
            format: core::marker::PhantomData,
        }
    }

    /// The first virtual address the entry covers.
    pub const fn va(&self) -> u64 {
        self.va
    }

    /// The entry's level.
    pub const fn level(&self) -> Level {
        self.level
    }

    /// The bytes the entry covers.
    pub const fn span(&self) -> u64 {
        self.level.entry_span()
    }

    /// The raw value the cursor read.
    pub const fn raw(&self) -> u64 {
        self.raw
    }

    /// The entry the cursor read, decoded.
    pub fn entry(&self) -> Result<Entry<F>, DecodeError> {
        F::decode(self.raw, self.level)
    }

    /// The value in the slot now (it may have changed since the cursor read it).
    pub fn reload(&self) -> u64 {
        self.cell.load(Ordering::Acquire)
    }

    /// Replaces the entry the cursor read with `new`, if it is still there
    /// (compare-exchange).
    ///
    /// Fails with [`ReplaceError::Raced`] if it changed, and with
    /// [`ReplaceError::NeedsBreakBeforeMake`] if a valid → valid change needs it.
    /// On success the slot holds `new` (later replacements compare against it) and the
    /// token says what to invalidate: the old entry if it was valid.
    pub fn replace(&mut self, new: &Entry<F>) -> Result<Flush, ReplaceError> {
        let new_raw = self.encode(new)?;
        if F::is_valid(self.raw, self.level)
            && F::is_valid(new_raw, self.level)
            && self
                .entry()
                .is_ok_and(|old| F::needs_break_before_make(&old, new))
        {
            return Err(ReplaceError::NeedsBreakBeforeMake);
        }
        self.exchange(self.raw, new_raw)?;
        self.note_written(new_raw);
        let flush = self.flush_for(self.raw);
        self.raw = new_raw;
        Ok(flush)
    }

    /// Replaces the entry with `new` break-before-make: compare-exchange to invalid,
    /// invalidate through `tlb`, then write `new` (compare-exchange from invalid). For
    /// changes that do not need it this is [`replace`](Self::replace).
    ///
    /// If another thread fills the invalid slot in between, fails with
    /// [`ReplaceError::Raced`] and the slot holds that thread's entry.
    pub fn replace_break_before_make(
        &mut self,
        new: &Entry<F>,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, ReplaceError> {
        match self.replace(new) {
            Err(ReplaceError::NeedsBreakBeforeMake) => {}
            other => return other,
        }
        let new_raw = self.encode(new)?;
        match write_break_before_make::<F>(self.cell, self.raw, new_raw, self.va, self.level, tlb) {
            Ok(()) => {
                self.note_written(new_raw);
                self.raw = new_raw;
                Ok(Flush::none())
            }
            Err(BreakLost::Before(current) | BreakLost::After(current)) => {
                self.raw = current;
                Err(ReplaceError::Raced { current })
            }
        }
    }

    /// Tells the table's live-entry counts when the slot's entry went from live to
    /// absent or back (they follow `&mut self` paths only).
    fn note_written(&self, new_raw: u64) {
        if is_absent::<F>(self.raw) != is_absent::<F>(new_raw) {
            self.live.forget();
        }
    }

    fn encode(&self, new: &Entry<F>) -> Result<u64, ReplaceError> {
        if matches!(new, Entry::Table { .. }) {
            return Err(ReplaceError::TableNotAllowed);
        }
        Ok(F::encode(new, self.level)?)
    }

    fn exchange(&mut self, old: u64, new: u64) -> Result<(), ReplaceError> {
        self.cell
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|current| {
                self.raw = current;
                ReplaceError::Raced { current }
            })
    }

    fn flush_for(&self, old: u64) -> Flush {
        if F::is_valid(old, self.level) {
            Flush::entry(self.va, self.level.shift())
        } else {
            Flush::none()
        }
    }
}

/// A walk over `[start, end)` of a [`PageTable`], visiting each entry once, at its level.
///
/// Tables are descended into; everything else (present leaves, software entries,
/// absent slots — including an absent upper-level slot, visited once for its whole
/// span) is returned as a [`Slot`]. A block is one slot unless the caller splits it
/// with [`Cursor::split`], after which the cursor visits the 512 new entries.
///
/// The cursor holds `&PageTable`: entries may change under it (it compares-and-swaps),
/// tables are never freed under it.
#[derive(Debug)]
pub struct Cursor<'a, F: PagingFormat, M: PhysMapper> {
    table: &'a PageTable<F, M>,
    start: u64,
    va: u64,
    last: u64,
    done: bool,
    /// The last table visited, its level and the first address it covers.
    current: Option<(Pfn, Level, u64)>,
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// A cursor over `[va, va + len)`; both 4 KiB aligned.
    pub fn cursor(&self, va: u64, len: u64) -> Result<Cursor<'_, F, M>, PagingError> {
        let last = self.check_range(va, len, 4096)?;
        Ok(Cursor {
            table: self,
            start: va,
            va,
            last,
            done: false,
            current: None,
        })
    }
}

impl<'a, F: PagingFormat, M: PhysMapper> Cursor<'a, F, M> {
    /// The next entry, or `None` past the end of the range.
    pub fn next_slot(&mut self) -> Option<Slot<'a, F>> {
        if self.done {
            return None;
        }
        let va = self.va;
        // Start from the cached table when it covers `va`, else from the root.
        let (mut table, mut level) = match self.current {
            Some((t, l, base)) if va.wrapping_sub(base) < l.entry_span() * 512 => (t, l),
            _ => (self.table.root(), self.table.root_level()),
        };
        loop {
            let cell = self.table.entry(table, level.table_index(va));
            let raw = crate::bbm::settled::<F>(cell);
            if let Some(next) = F::table_pfn(raw, level) {
                level = level.next_lower().expect("table entry at level 1");
                table = next;
                continue;
            }
            let span = level.entry_span();
            let es = va & !(span - 1);
            self.current = Some((table, level, va & !(span * 512 - 1)));
            let ee = es + (span - 1);
            if ee >= self.last {
                self.done = true;
            } else {
                self.va = ee + 1;
            }
            return Some(Slot::new(es, level, raw, cell, &self.table.live));
        }
    }

    /// Moves the cursor back to the start of `slot` (clipped to the range), so that the
    /// next call visits that span again: after a lost race in which another thread
    /// turned the entry into a table (a split), the next calls visit the new entries.
    pub fn rewind(&mut self, slot: &Slot<'a, F>) {
        self.va = slot.va.max(self.start);
        self.done = false;
        self.current = None;
    }

    /// Splits the block or level-2 software entry of `slot` (see [`PageTable::split`])
    /// and moves the cursor back so that the next call visits the new entries.
    pub fn split(
        &mut self,
        slot: &Slot<'a, F>,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        let at = slot.va.max(self.start);
        let flush = self.table.split(at, alloc, tlb)?;
        self.va = at;
        self.done = false;
        self.current = None;
        Ok(flush)
    }
}

impl<'a, F: PagingFormat, M: PhysMapper> Iterator for Cursor<'a, F, M> {
    type Item = Slot<'a, F>;

    fn next(&mut self) -> Option<Slot<'a, F>> {
        self.next_slot()
    }
}

//! Splitting a block (or a level-2 software entry) into 512 entries one level down, and
//! collapsing 512 compatible entries back into one.

use devpriv_pte::{Entry, Level, SoftwareEntry, SoftwareKind};

use crate::bbm::{BreakLost, write_break_before_make};
use crate::error::PagingError;
use crate::flush::Flush;
use crate::format::PagingFormat;
use crate::frames::FrameAllocator;
use crate::mapper::PhysMapper;
use crate::sync::Ordering;
use crate::table::PageTable;
use crate::tlb::TlbInvalidate;

/// The software entry for the `i`-th 4 KiB page of a 2 MiB software entry `sw`: frame
/// numbers, device indices and swap offsets advance by `i`; markers are copied.
///
/// `None` if the number would overflow.
pub fn software_subentry(sw: &SoftwareEntry, i: u64) -> Option<SoftwareEntry> {
    let kind = match sw.kind {
        SoftwareKind::Swap { swap_type, offset } => SoftwareKind::Swap {
            swap_type,
            offset: offset.checked_add(i)?,
        },
        SoftwareKind::Migration {
            access,
            pfn,
            young,
            dirty,
        } => SoftwareKind::Migration {
            access,
            pfn: pfn.checked_add(i)?,
            young,
            dirty,
        },
        SoftwareKind::DeviceMigration {
            access,
            index,
            young,
            dirty,
        } => SoftwareKind::DeviceMigration {
            access,
            index: index.checked_add(i)?,
            young,
            dirty,
        },
        SoftwareKind::DevicePrivate { access, index } => SoftwareKind::DevicePrivate {
            access,
            index: index.checked_add(i)?,
        },
        SoftwareKind::DeviceExclusive { pfn } => SoftwareKind::DeviceExclusive {
            pfn: pfn.checked_add(i)?,
        },
        SoftwareKind::HwPoison { pfn } => SoftwareKind::HwPoison {
            pfn: pfn.checked_add(i)?,
        },
        SoftwareKind::Marker(m) => SoftwareKind::Marker(m),
    };
    Some(SoftwareEntry {
        kind,
        side: sw.side,
    })
}

/// Whether the numbers of a software entry are aligned to `frames` pages (markers are).
fn software_aligned(sw: &SoftwareEntry, frames: u64) -> bool {
    match sw.kind {
        SoftwareKind::Swap { offset, .. } => offset & (frames - 1) == 0,
        SoftwareKind::Migration { pfn, .. }
        | SoftwareKind::DeviceExclusive { pfn }
        | SoftwareKind::HwPoison { pfn } => pfn.is_aligned(frames),
        SoftwareKind::DeviceMigration { index, .. } | SoftwareKind::DevicePrivate { index, .. } => {
            index.is_aligned(frames)
        }
        SoftwareKind::Marker(_) => true,
    }
}

/// The `i`-th of the 512 entries one level below `entry` (at `level`) that mean the same,
/// or `None` if `entry` cannot be split or `i` is not below 512.
pub fn split_entry<F: PagingFormat>(entry: &Entry<F>, level: Level, i: u64) -> Option<Entry<F>> {
    if i >= 512 {
        return None;
    }
    let lower = level.next_lower()?;
    match *entry {
        Entry::Leaf { pfn, attrs, .. } => Some(Entry::Leaf {
            pfn: pfn.checked_add(i * lower.leaf_size()?.frames())?,
            size: lower.leaf_size()?,
            attrs,
        }),
        Entry::Software(ref sw) if lower == Level::L1 => {
            Some(Entry::Software(software_subentry(sw, i)?))
        }
        _ => None,
    }
}

impl<F: PagingFormat, M: PhysMapper> PageTable<F, M> {
    /// Splits the block or level-2 software entry containing `va` into a table of 512
    /// entries one level down with the same meaning (a 2 MiB leaf becomes 512 4 KiB
    /// leaves, a 1 GiB leaf 512 2 MiB leaves, a 2 MiB migration / device-private / swap
    /// entry 512 4 KiB ones with consecutive numbers).
    ///
    /// The new table is filled before it replaces the entry with compare-exchange; a
    /// change of the entry by the hardware's accessed/dirty update is retried. On
    /// aarch64 a present block is replaced break-before-make (invalid, invalidate
    /// through `tlb`, table). Fails with [`PagingError::NotSplittable`] if the walk to
    /// `va` ends at a level-1 entry, an absent entry or a kind that does not split,
    /// [`PagingError::Raced`] if another thread filled the slot during
    /// break-before-make, or [`PagingError::OutOfFrames`]; on error nothing changed and
    /// no frame is leaked.
    pub fn split(
        &self,
        va: u64,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        self.check_va(va)?;
        let (table, level, mut raw) = self.walk_to(va, Level::L1);
        if level == Level::L1 {
            return Err(PagingError::NotSplittable { va, level });
        }
        let es = va & !(level.entry_span() - 1);
        let slot = self.entry(table, level.table_index(va));
        let mut new_table = None;
        loop {
            let old = match F::decode(raw, level) {
                Ok(entry) => entry,
                Err(error) => {
                    if let Some(t) = new_table {
                        alloc.free(t);
                    }
                    return Err(PagingError::Corrupt { va, level, error });
                }
            };
            let fill = self.fill_split(&old, level, &mut new_table, alloc);
            let next = match fill {
                Ok(next) => next,
                Err(e) => {
                    if let Some(t) = new_table {
                        alloc.free(t);
                    }
                    return Err(match e {
                        PagingError::NotSplittable { .. } => {
                            PagingError::NotSplittable { va, level }
                        }
                        other => other,
                    });
                }
            };
            let table_raw = match Self::table_raw(next, level) {
                Ok(raw) => raw,
                Err(e) => {
                    alloc.free(next);
                    return Err(e);
                }
            };
            let table_entry = F::decode(table_raw, level).expect("encoded table decodes");
            if F::is_valid(raw, level) && F::needs_break_before_make(&old, &table_entry) {
                match write_break_before_make::<F>(slot, raw, table_raw, es, level, tlb) {
                    Ok(()) => return Ok(Flush::none()),
                    Err(BreakLost::Before(now)) => {
                        raw = now;
                        continue;
                    }
                    Err(BreakLost::After(_)) => {
                        alloc.free(next);
                        return Err(PagingError::Raced { va: es });
                    }
                }
            }
            match slot.compare_exchange(raw, table_raw, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Ok(if F::is_valid(raw, level) {
                        Flush::entry(es, level.shift())
                    } else {
                        Flush::none()
                    });
                }
                Err(now) => raw = now,
            }
        }
    }

    /// Fills a table (allocated on first use into `table`) with the split of `old`.
    fn fill_split(
        &self,
        old: &Entry<F>,
        level: Level,
        table: &mut Option<devpriv_pte::Pfn>,
        alloc: &mut impl FrameAllocator,
    ) -> Result<devpriv_pte::Pfn, PagingError> {
        let lower = level.next_lower().expect("split above level 1");
        let not = PagingError::NotSplittable { va: 0, level };
        let first = split_entry(old, level, 0).ok_or(not)?;
        // Check the last one encodes before allocating.
        let last = split_entry(old, level, 511).ok_or(not)?;
        F::encode(&last, lower)?;
        let next = match *table {
            Some(t) => t,
            None => {
                let t = self.allocate_table(alloc)?;
                *table = Some(t);
                t
            }
        };
        let entries = self.entries(next);
        match first {
            Entry::Leaf { .. } => {
                let raw0 = F::encode(&first, lower)?;
                let step = lower.entry_span();
                for (i, e) in entries.iter().enumerate() {
                    e.store(raw0 + i as u64 * step, Ordering::Relaxed);
                }
            }
            _ => {
                for (i, e) in entries.iter().enumerate() {
                    let sub = split_entry(old, level, i as u64).ok_or(not)?;
                    e.store(F::encode(&sub, lower)?, Ordering::Relaxed);
                }
            }
        }
        Ok(next)
    }

    /// Collapses the table below the level-`level` entry containing `va` (level 2 or 3)
    /// back into one entry, if its 512 entries are one compatible run: all absent (the
    /// entry becomes absent), present leaves with consecutive frames from an aligned
    /// start and identical attributes (a block), or level-1 software entries of one kind
    /// with consecutive numbers from an aligned start and identical side bits (a level-2
    /// software entry).
    ///
    /// The table entry is first made invalid and invalidated through `tlb`, so the
    /// hardware can no longer set accessed/dirty bits below it; the entries are then
    /// read again and, if they still collapse, the new entry is written and the table
    /// frame freed. Otherwise the table entry is restored and the call fails with
    /// [`PagingError::NotCollapsible`]. The range is unmapped for that moment, as
    /// break-before-make requires on aarch64.
    pub fn collapse(
        &mut self,
        va: u64,
        level: Level,
        alloc: &mut impl FrameAllocator,
        tlb: &impl TlbInvalidate,
    ) -> Result<Flush, PagingError> {
        self.check_va(va)?;
        let es = va & !(level.entry_span() - 1);
        if !matches!(level, Level::L2 | Level::L3) || level >= self.root_level() {
            return Err(PagingError::NotCollapsible { va: es });
        }
        let (table, found, raw) = self.walk_to(va, level);
        let Some(next) = F::table_pfn(raw, found).filter(|_| found == level) else {
            return Err(PagingError::NotCollapsible { va: es });
        };
        self.forget_cached_tables();
        // A cheap check before touching the live entry.
        let merged = self
            .collapsed(next, level)
            .ok_or(PagingError::NotCollapsible { va: es })?;
        let merged_raw = F::encode(&merged, level)?;
        let slot = self.entry(table, level.table_index(va));
        slot.store(F::BREAK_MARKER, Ordering::Release);
        // Every translation below the entry may be cached (4 KiB pages of a 2 MiB range):
        // invalidate them all, or the TLB could hold both sizes at once.
        let lower = level.next_lower().expect("level 2 or 3");
        let end = es.wrapping_add(level.entry_span());
        Flush::range(es, end, lower.shift()).flush(tlb);
        match self.collapsed(next, level) {
            Some(again) if again == merged => {
                slot.store(merged_raw, Ordering::Release);
                alloc.free(next);
                Ok(Flush::none())
            }
            _ => {
                slot.store(raw, Ordering::Release);
                Err(PagingError::NotCollapsible { va: es })
            }
        }
    }

    /// The single entry at `level` that means what the 512 entries of `table` mean.
    fn collapsed(&self, table: devpriv_pte::Pfn, level: Level) -> Option<Entry<F>> {
        let lower = level.next_lower()?;
        let entries = self.entries(table);
        let first = F::decode(entries[0].load(Ordering::Acquire), lower).ok()?;
        let merged = match first {
            Entry::Absent => Entry::Absent,
            Entry::Leaf { pfn, attrs, .. } => {
                let size = level.leaf_size()?;
                if !pfn.is_aligned(size.frames()) {
                    return None;
                }
                Entry::Leaf { pfn, size, attrs }
            }
            Entry::Software(sw) if lower == Level::L1 => {
                if !software_aligned(&sw, 512) {
                    return None;
                }
                Entry::Software(sw)
            }
            _ => return None,
        };
        for (i, e) in entries.iter().enumerate() {
            let entry = F::decode(e.load(Ordering::Acquire), lower).ok()?;
            let expected = match merged {
                Entry::Absent => Entry::Absent,
                _ => split_entry(&merged, level, i as u64)?,
            };
            if entry != expected {
                return None;
            }
        }
        Some(merged)
    }
}

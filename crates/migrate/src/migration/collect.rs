//! Collection (Linux's `migrate_vma_collect` and `migrate_vma_unmap`): walk the range,
//! lock what can move, replace its entries by migration entries, flush once, then put
//! back what turns out to be pinned.

use devpriv_pagemap::LockedFolio;
use devpriv_paging::{Cursor, FlushBatch, PageTable, ReplaceError, Slot};
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, LeafAttributes, Level, PageSize, Pfn, SideBits,
    SoftwareEntry, SoftwareKind,
};

use super::split::{split_device, split_system};
use super::{Inner, Scope, SetupError};
use crate::address_space::AddressSpace;
use crate::address_space::entries::{access_of_device, access_of_leaf};
use crate::notifier::InvalidateEvent;
use crate::platform::{Platform, SystemMemory, Vma};
use crate::words::{MigratePfn, PageTarget, Select};

type Table<P> = PageTable<<P as Platform>::Format, <P as Platform>::Mapper>;

/// What one walk of the range works with.
struct Walk<'t, 'm, 'a, P: Platform> {
    space: &'m AddressSpace<'a, P>,
    table: &'t Table<P>,
    start: u64,
    end: u64,
    vma: Vma,
    select: Select,
    batch: FlushBatch,
    /// The last leaf attributes found to match the region (pages of a range mostly
    /// share them), to skip the comparison.
    matched: Option<<P::Format as devpriv_pte::PteFormat>::LeafAttributes>,
}

impl<'m, 'a, P: Platform> Inner<'m, 'a, P> {
    /// Collects `[start, end)` of the range scope.
    pub(super) fn collect_range(
        &mut self,
        start: u64,
        end: u64,
        select: Select,
    ) -> Result<(), SetupError> {
        let Scope::Range { space, vma, .. } = self.scope else {
            unreachable!("collect_range on an eviction");
        };
        let table = space.table();
        let mut cursor = table.cursor(start, end - start)?;
        let window = space.invalidate(start, end, InvalidateEvent::Migrate, self.owner);
        let mut walk = Walk {
            space,
            table: &table,
            start,
            end,
            vma,
            select,
            batch: FlushBatch::new(),
            matched: None,
        };
        while let Some(slot) = cursor.next_slot() {
            self.collect_slot(&mut walk, &mut cursor, slot);
        }
        // One flush for everything that was present.
        core::mem::take(&mut walk.batch).finish(space.tlb());
        self.put_back_pinned(space, &table, start);
        drop(window);
        Ok(())
    }

    /// The word index of address `va`.
    fn word(start: u64, va: u64) -> usize {
        ((va - start) >> 12) as usize
    }

    fn collect_slot<'t>(
        &mut self,
        walk: &mut Walk<'t, 'm, 'a, P>,
        cursor: &mut Cursor<'t, P::Format, P::Mapper>,
        slot: Slot<'t, P::Format>,
    ) {
        let level = slot.level();
        let es = slot.va();
        let last = es.wrapping_add(slot.span() - 1);
        let cs = es.max(walk.start);
        let cl = last.min(walk.end - 1);
        // The entry lies wholly in the range.
        let whole = es >= walk.start && last < walk.end;
        let compound = walk.select.contains(Select::COMPOUND);
        match slot.entry() {
            // A corrupt entry is not the migration's to touch, nor a PROT_NONE / NUMA
            // hinting one (the kernel that wrote it resolves it first): skipped.
            Err(_) | Ok(Entry::Table { .. }) | Ok(Entry::ProtNone { .. }) => {}
            Ok(Entry::Absent) => {
                if walk.vma.anonymous {
                    self.holes(walk.start, cs, cl, compound && level >= Level::L2);
                }
            }
            Ok(Entry::Leaf { pfn, size, attrs }) => {
                if !walk.select.contains(Select::SYSTEM) {
                    return;
                }
                if size == PageSize::Size4KiB && Some(pfn) == self.system.zero_page() {
                    if walk.vma.anonymous {
                        self.src[Self::word(walk.start, cs)] = MigratePfn::hole();
                    }
                    return;
                }
                if size == PageSize::Size1GiB {
                    return;
                }
                if walk.matched != Some(attrs) {
                    if !walk.vma.matches(&attrs) {
                        return;
                    }
                    walk.matched = Some(attrs);
                }
                if size == PageSize::Size2MiB && !(compound && whole) {
                    self.split_mapping(walk, cursor, slot, pfn, attrs);
                    return;
                }
                self.collect_system(walk, cursor, slot, pfn, size, attrs);
            }
            Ok(Entry::Software(sw)) => {
                let SoftwareKind::DevicePrivate { access, index } = sw.kind else {
                    return;
                };
                if !walk.select.contains(Select::DEVICE_PRIVATE) {
                    return;
                }
                let Ok(page) = self.devices.lookup(index) else {
                    return;
                };
                if Some(page.pagemap().owner()) != self.owner {
                    return;
                }
                let Some(size) = level.leaf_size() else {
                    return;
                };
                let Some(folio) = self.lock_device(page.folio()) else {
                    return;
                };
                if folio.size() != size || folio.index() != index {
                    // Entries map whole folios; anything else is not ours to move.
                    self.release_device(folio, Some(es));
                    return;
                }
                let entry = device_migration_entry(access, index, sw.side);
                let mut slot = slot;
                match slot.replace(&entry) {
                    Ok(flush) => flush.ignore(), // a software entry was never cached
                    Err(ReplaceError::Raced { .. }) => {
                        self.release_device(folio, Some(es));
                        cursor.rewind(&slot);
                        return;
                    }
                    Err(_) => {
                        self.release_device(folio, Some(es));
                        return;
                    }
                }
                Self::drop_entry_reference(folio.folio());
                if size == PageSize::Size2MiB && !(compound && whole) {
                    self.split_device_collect(walk, es, folio, access, index, sw.side);
                    return;
                }
                let mut word = MigratePfn::device(index).with(MigratePfn::MIGRATE);
                if access == DeviceAccess::Write {
                    word = word.with(MigratePfn::WRITE);
                }
                if size == PageSize::Size2MiB {
                    word = word.with(MigratePfn::COMPOUND);
                }
                self.src[Self::word(walk.start, es)] = word;
                let _ = folio.into_raw();
            }
        }
    }

    /// Marks `[cs, cl]` as holes: 2 MiB ones where `compound` and a whole aligned
    /// 2 MiB fits.
    fn holes(&mut self, start: u64, cs: u64, cl: u64, compound: bool) {
        let mut va = cs;
        while va <= cl {
            let i = Self::word(start, va);
            let chunk_last = va.wrapping_add((1 << 21) - 1);
            if compound && va & ((1 << 21) - 1) == 0 && chunk_last <= cl && chunk_last > va {
                self.src[i] = MigratePfn::hole().with(MigratePfn::COMPOUND);
                va = chunk_last.wrapping_add(1);
            } else {
                self.src[i] = MigratePfn::hole();
                va += 1 << 12;
            }
            if va == 0 {
                break;
            }
        }
    }

    /// A present 2 MiB mapping of system memory that only partly lies in the range (or
    /// the range does not take 2 MiB pages whole): the entry becomes a migration entry
    /// (claiming the page), the frame is locked, then the entry and the frame are split;
    /// the pages in the range are collected, the others get their 4 KiB leaves back.
    fn split_mapping<'t>(
        &mut self,
        walk: &mut Walk<'t, 'm, 'a, P>,
        cursor: &mut Cursor<'t, P::Format, P::Mapper>,
        slot: Slot<'t, P::Format>,
        pfn: Pfn,
        attrs: <P::Format as devpriv_pte::PteFormat>::LeafAttributes,
    ) {
        let es = slot.va();
        let leaf = Entry::Leaf {
            pfn,
            size: PageSize::Size2MiB,
            attrs,
        };
        let Some(mut slot) = self.claim_system(walk, cursor, slot, pfn, leaf) else {
            return;
        };
        // The block may still be cached: it must be invalidated before a table takes
        // its place (break-before-make).
        core::mem::take(&mut walk.batch).finish(walk.space.tlb());
        if !split_system(walk.space, walk.table, es, pfn) {
            // No table frame for the split: the page stays whole, and stays.
            put_back(&mut slot, &leaf);
            self.system.unlock(pfn);
            return;
        }
        let writable = attrs.property().writable;
        for k in 0..512u64 {
            let va = es + (k << 12);
            let piece = Pfn::new(pfn.number() + k);
            if (walk.start..walk.end).contains(&va) {
                let mut word = MigratePfn::system(piece).with(MigratePfn::MIGRATE);
                if writable {
                    word = word.with(MigratePfn::WRITE);
                }
                self.src[Self::word(walk.start, va)] = word;
            } else {
                let mut slot = walk
                    .table
                    .slot(va, Level::L1)
                    .expect("the table the split just made");
                put_back(
                    &mut slot,
                    &Entry::Leaf {
                        pfn: piece,
                        size: PageSize::Size4KiB,
                        attrs,
                    },
                );
                self.system.unlock(piece);
            }
        }
    }

    /// Claims the present page `leaf` (of frame `pfn`) in `slot`: replaces it by a
    /// migration entry, then locks the frame. Returns the slot, holding the migration
    /// entry, with the frame locked; `None` if the entry changed meanwhile (the cursor
    /// looks again) or the frame is locked by someone else (the leaf is put back).
    ///
    /// The entry goes first: once the compare-exchange succeeds the migration entry
    /// maps the frame, so nothing can free it, and only then is it locked. Locking
    /// first would lock a frame read from an entry without a lock — one another CPU may
    /// have unmapped and freed meanwhile.
    fn claim_system<'t>(
        &mut self,
        walk: &mut Walk<'t, 'm, 'a, P>,
        cursor: &mut Cursor<'t, P::Format, P::Mapper>,
        mut slot: Slot<'t, P::Format>,
        pfn: Pfn,
        leaf: Entry<P::Format>,
    ) -> Option<Slot<'t, P::Format>> {
        let Entry::Leaf { attrs, .. } = leaf else {
            unreachable!("claim_system of a present page");
        };
        let p = attrs.property();
        let entry = Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
            access: access_of_leaf(p.writable),
            pfn,
            young: p.accessed,
            dirty: p.dirty,
        }));
        match slot.replace(&entry) {
            Ok(flush) => walk.batch.add(flush),
            Err(ReplaceError::Raced { .. }) => {
                // The hardware set accessed or dirty meanwhile, or the page went: look
                // again.
                cursor.rewind(&slot);
                return None;
            }
            Err(_) => return None,
        }
        if !self.system.try_lock(pfn) {
            // A device-exclusive hand-over or another migration holds the frame.
            put_back(&mut slot, &leaf);
            return None;
        }
        Some(slot)
    }

    /// Collects one present system page (4 KiB, or 2 MiB whole).
    fn collect_system<'t>(
        &mut self,
        walk: &mut Walk<'t, 'm, 'a, P>,
        cursor: &mut Cursor<'t, P::Format, P::Mapper>,
        slot: Slot<'t, P::Format>,
        pfn: Pfn,
        size: PageSize,
        attrs: <P::Format as devpriv_pte::PteFormat>::LeafAttributes,
    ) {
        let va = slot.va();
        let leaf = Entry::Leaf { pfn, size, attrs };
        if self.claim_system(walk, cursor, slot, pfn, leaf).is_none() {
            return;
        }
        let mut word = MigratePfn::system(pfn).with(MigratePfn::MIGRATE);
        if attrs.property().writable {
            word = word.with(MigratePfn::WRITE);
        }
        if size == PageSize::Size2MiB {
            word = word.with(MigratePfn::COMPOUND);
        }
        self.src[Self::word(walk.start, va)] = word;
    }

    /// The device folio `view`, referenced and try-locked (or the fault page's, whose
    /// lock the fault path already holds).
    pub(crate) fn lock_device(
        &mut self,
        view: devpriv_pagemap::Folio<'a>,
    ) -> Option<LockedFolio<'a>> {
        if let Some(folio) = self.take_fault_folio(view) {
            return Some(folio);
        }
        view.head().try_lock().ok()
    }

    /// A 2 MiB device folio whose entry (now a migration entry, its reference adopted)
    /// only partly lies in the range: splits both and keeps the pages in the range;
    /// the others get their device-private entries back.
    fn split_device_collect(
        &mut self,
        walk: &mut Walk<'_, 'm, 'a, P>,
        es: u64,
        folio: LockedFolio<'a>,
        access: DeviceAccess,
        index: DeviceIndex,
        side: SideBits,
    ) {
        let parts = match split_device(walk.space, walk.table, es, folio) {
            Ok(parts) => parts,
            Err(folio) => {
                // Put the 2 MiB entry back; the range's pages are not collected.
                self.restore_device_entry(walk.table, es, Level::L2, access, index, side, folio);
                return;
            }
        };
        for (k, piece) in parts.enumerate() {
            let va = es + ((k as u64) << 12);
            let piece_index = DeviceIndex::new(index.number() + k as u64);
            if (walk.start..walk.end).contains(&va) {
                let mut word = MigratePfn::device(piece_index).with(MigratePfn::MIGRATE);
                if access == DeviceAccess::Write {
                    word = word.with(MigratePfn::WRITE);
                }
                self.src[Self::word(walk.start, va)] = word;
                let _ = piece.into_raw();
            } else {
                self.restore_device_entry(
                    walk.table,
                    va,
                    Level::L1,
                    access,
                    piece_index,
                    side,
                    piece,
                );
            }
        }
    }

    /// Puts back the device-private entry at `va` that a migration entry replaced, and
    /// gives it `folio`'s reference.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_device_entry(
        &mut self,
        table: &Table<P>,
        va: u64,
        level: Level,
        access: DeviceAccess,
        index: DeviceIndex,
        side: SideBits,
        folio: LockedFolio<'a>,
    ) {
        let entry = Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { access, index },
            side,
        });
        let restored = table
            .slot(va, level)
            .ok()
            .filter(|slot| {
                matches!(slot.entry(), Ok(Entry::Software(SoftwareEntry {
                    kind: SoftwareKind::DeviceMigration { index: i, .. },
                    ..
                })) if i == index)
            })
            .is_some_and(|mut slot| slot.replace(&entry).is_ok());
        if restored {
            self.give_to_entry(folio, Some(va));
        } else {
            // The entry is gone (unmapped): nothing maps the folio any more.
            self.release_device(folio, Some(va));
        }
    }

    /// After the flush: a pinned system frame cannot move; its entry is put back and its
    /// word cleared (Linux's `migrate_vma_check_page`).
    ///
    /// Device folios are not checked: nothing pins device-private memory, and a
    /// reference held elsewhere (another CPU's fault about to fail its try-lock, a
    /// driver's own) keeps the folio alive after it moved, never its data in place. So
    /// a CPU that wins a device page's lock always moves it, however many others fault
    /// on it at the same time.
    fn put_back_pinned(&mut self, space: &'m AddressSpace<'a, P>, table: &Table<P>, start: u64) {
        let mut i = 0;
        while i < self.src.len() {
            let w = self.src[i];
            i += w.size().frames() as usize;
            let i = i - w.size().frames() as usize;
            if !(w.is_valid() && w.is_migrating()) {
                continue;
            }
            let pinned = match w.target() {
                Some(PageTarget::System(pfn)) => self.system.is_pinned(pfn, w.size()),
                _ => false,
            };
            if pinned {
                self.src[i] = w.without(MigratePfn::MIGRATE);
                let va = start + ((i as u64) << 12);
                self.end_page(i, Some((space, table, va)));
                self.src[i] = MigratePfn::EMPTY;
            }
        }
    }
}

/// The device-private migration entry that remembers a device-private entry.
pub(crate) fn device_migration_entry<F: devpriv_pte::PteFormat>(
    access: DeviceAccess,
    index: DeviceIndex,
    side: SideBits,
) -> Entry<F> {
    Entry::Software(SoftwareEntry {
        kind: SoftwareKind::DeviceMigration {
            access: access_of_device(access, side.exclusive),
            index,
            young: false,
            dirty: false,
        },
        side,
    })
}

/// Puts `entry` back in `slot`, over the migration entry the caller wrote there. Nothing
/// else changes a migration entry while its migration holds the address space's shared
/// lock (unmap and protect take it exclusively; hardware does not write non-present
/// entries), so this cannot fail; the old entry was not present, so nothing is flushed.
fn put_back<F: devpriv_paging::PagingFormat>(slot: &mut Slot<'_, F>, entry: &Entry<F>) {
    slot.replace(entry)
        .expect("a migration entry only its migration changes")
        .ignore();
}

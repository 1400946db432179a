//! The end of a migration (Linux's `migrate_vma_finalize` and
//! `remove_migration_ptes`): each migration entry becomes the destination's entry or
//! the source's again, and everything held is let go. Dropping an unfinished migration
//! ends it the same way, with every page restored.

use devpriv_paging::{FlushBatch, PageTable};
use devpriv_pte::{
    DeviceIndex, Entry, MigrationAccess, PageSize, SideBits, SoftwareEntry, SoftwareKind,
};

use super::{Inner, Scope, Summary};
use crate::address_space::AddressSpace;
use crate::address_space::entries::{device_access, leaf};
use crate::platform::{Platform, Vma};
use crate::words::{MigratePfn, PageTarget};

type Table<P> = PageTable<<P as Platform>::Format, <P as Platform>::Mapper>;

/// Where a collected page's entry is: its address space, the page table (locked
/// shared) and the address.
pub(crate) type Place<'p, 'm, 'a, P> = (&'m AddressSpace<'a, P>, &'p Table<P>, u64);

/// What became of one collected page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageEnd {
    Migrated,
    Restored,
    Abandoned,
}

/// What a migration entry remembers of the mapping it replaced.
#[derive(Clone, Copy)]
struct Remembered {
    access: MigrationAccess,
    young: bool,
    dirty: bool,
    side: SideBits,
}

/// The migration entry for `target` found in `table` at `va`, if it is still there.
fn find_migration_entry<'t, P: Platform>(
    table: &'t Table<P>,
    va: u64,
    size: PageSize,
    target: PageTarget,
) -> Option<(devpriv_paging::Slot<'t, P::Format>, Remembered)> {
    check_migration_entry::<P>(table.slot(va, size.level()).ok()?, va, size, target)
}

/// `slot`, if it is the entry of `size` at `va` and holds the migration entry for
/// `target`.
fn check_migration_entry<P: Platform>(
    slot: devpriv_paging::Slot<'_, P::Format>,
    va: u64,
    size: PageSize,
    target: PageTarget,
) -> Option<(devpriv_paging::Slot<'_, P::Format>, Remembered)> {
    if slot.va() != va || slot.level() != size.level() {
        return None;
    }
    let Ok(Entry::Software(sw)) = slot.entry() else {
        return None;
    };
    let remembered = match (sw.kind, target) {
        (
            SoftwareKind::Migration {
                access,
                pfn,
                young,
                dirty,
            },
            PageTarget::System(p),
        ) if pfn == p => (access, young, dirty),
        (
            SoftwareKind::DeviceMigration {
                access,
                index,
                young,
                dirty,
            },
            PageTarget::Device(i),
        ) if index == i => (access, young, dirty),
        _ => return None,
    };
    Some((
        slot,
        Remembered {
            access: remembered.0,
            young: remembered.1,
            dirty: remembered.2,
            side: sw.side,
        },
    ))
}

/// The entry that maps `target` (of `size`) with what `r` remembers: a present leaf of
/// `vma` for a frame, a device-private entry for a device page.
fn entry_for<P: Platform>(
    vma: &Vma,
    target: PageTarget,
    size: PageSize,
    r: Remembered,
    fresh: bool,
) -> Entry<P::Format> {
    match target {
        // A page that just arrived in system memory is about to be accessed: young.
        PageTarget::System(pfn) => leaf(vma, pfn, size, r.access, r.young || fresh, r.dirty),
        PageTarget::Device(index) => device_private_entry(r.access, index, r.side),
    }
}

/// The device-private entry for `index` with the access a migration entry remembers.
fn device_private_entry<F: devpriv_pte::PteFormat>(
    access: MigrationAccess,
    index: DeviceIndex,
    side: SideBits,
) -> Entry<F> {
    Entry::Software(SoftwareEntry {
        kind: SoftwareKind::DevicePrivate {
            access: device_access(access),
            index,
        },
        side: SideBits {
            exclusive: access != MigrationAccess::Read,
            ..side
        },
    })
}

impl<'m, 'a, P: Platform> Inner<'m, 'a, P> {
    /// Ends collected page `i` at `place`: maps its destination if the page still
    /// migrates and has one, else its source again; or, if its migration entry is
    /// gone, abandons it. Releases what the migration held for it.
    pub(crate) fn end_page(&mut self, i: usize, place: Option<Place<'_, 'm, 'a, P>>) -> PageEnd {
        self.end_page_in(i, place, None)
    }

    /// As [`end_page`](Self::end_page), with the slot at `place` already in hand
    /// (from a walk of the range), if the caller has it.
    fn end_page_in<'t>(
        &mut self,
        i: usize,
        place: Option<Place<'t, 'm, 'a, P>>,
        slot: Option<devpriv_paging::Slot<'t, P::Format>>,
    ) -> PageEnd {
        let s = self.src[i];
        let d = self.dst[i];
        let size = s.size();
        let source = s.target().expect("end_page of a collected page");
        let va = place.map(|(_, _, va)| va);
        let vma = match (&self.scope, place) {
            (Scope::Range { vma, .. }, _) => Some(*vma),
            (Scope::Device { .. }, Some((space, _, va))) => space.vma(va),
            (Scope::Device { .. }, None) => None,
        };
        let found = match (slot, place) {
            (Some(slot), Some((_, _, va))) => check_migration_entry::<P>(slot, va, size, source),
            (None, Some((_, table, va))) => find_migration_entry::<P>(table, va, size, source),
            _ => None,
        };
        let (Some((mut slot, remembered)), Some(vma)) = (found, vma) else {
            self.abandon(i, va);
            return PageEnd::Abandoned;
        };
        let moved = s.is_migrating() && d.is_valid() && d.size() == size;
        if moved {
            let target = d.target().expect("a valid destination");
            let new = entry_for::<P>(&vma, target, size, remembered, true);
            match target {
                PageTarget::Device(index) => {
                    // SAFETY: the destination word records the folio as held; it is
                    // cleared below whatever happens.
                    let folio = unsafe { self.take_held(index) };
                    self.dst[i] = MigratePfn::EMPTY;
                    let (space, _, va) = place.expect("found implies placed");
                    folio.set_reverse_map(space.reverse_map(va));
                    if slot.replace(&new).is_err() {
                        drop(folio);
                        self.abandon(i, Some(va));
                        return PageEnd::Abandoned;
                    }
                    // The migration's reference becomes the entry's.
                    let _ = folio.unlock().into_raw();
                }
                PageTarget::System(_) => {
                    if slot.replace(&new).is_err() {
                        self.abandon(i, va);
                        return PageEnd::Abandoned;
                    }
                    // The frame is the mapping's now.
                    self.dst[i] = MigratePfn::EMPTY;
                }
            }
            self.release_source(i, va, true);
            PageEnd::Migrated
        } else {
            self.restore_source(i, slot, &vma, remembered, va)
        }
    }

    /// Maps page `i`'s source again through `slot` (holding its migration entry) and
    /// releases its destination.
    fn restore_source(
        &mut self,
        i: usize,
        mut slot: devpriv_paging::Slot<'_, P::Format>,
        vma: &Vma,
        remembered: Remembered,
        va: Option<u64>,
    ) -> PageEnd {
        let s = self.src[i].without(MigratePfn::MIGRATE);
        self.src[i] = s;
        let source = s.target().expect("a collected page");
        let new = entry_for::<P>(vma, source, s.size(), remembered, false);
        if slot.replace(&new).is_err() {
            self.abandon(i, va);
            return PageEnd::Abandoned;
        }
        self.release_destination(i);
        self.release_source(i, va, false);
        PageEnd::Restored
    }

    /// Page `i`'s entry is gone: releases both pages.
    fn abandon(&mut self, i: usize, va: Option<u64>) {
        self.src[i] = self.src[i].without(MigratePfn::MIGRATE);
        self.release_destination(i);
        self.release_source(i, va, true);
    }

    /// Lets go of page `i`'s source: freed (`gone`: it moved or its entry is gone), or
    /// back to its entry. The word stays as a record of what happened (MIGRATE set only
    /// on a page that moved); the migration ends each page once.
    fn release_source(&mut self, i: usize, va: Option<u64>, gone: bool) {
        let s = self.src[i];
        match s.target() {
            Some(PageTarget::Device(index)) => {
                // SAFETY: the source word records the folio as held, and from here on
                // it is only read as a record of what happened.
                let folio = unsafe { self.take_held(index) };
                if gone {
                    self.release_device(folio, va);
                } else {
                    self.give_to_entry(folio, va);
                }
            }
            Some(PageTarget::System(pfn)) => self.release_system(pfn, s.size(), gone),
            None => {}
        }
    }

    /// Ends every page (Linux's `migrate_vma_finalize`).
    pub(super) fn finalize(&mut self) -> Summary {
        let mut summary = Summary::default();
        let pages = self.src.len();
        match self.scope {
            Scope::Range { space, start, .. } => {
                let table = space.table();
                // One walk of the range finds every entry (a cursor keeps its place in
                // the last table, where a lookup per page would start at the root).
                let mut cursor = table
                    .cursor(start, (pages as u64) << 12)
                    .expect("the range was checked at setup");
                let mut next = cursor.next_slot();
                let mut i = 0;
                while i < pages {
                    let va = start + ((i as u64) << 12);
                    let mut slot = None;
                    if self.src[i].is_valid() {
                        if next.is_none() {
                            next = cursor.next_slot();
                        }
                        while next
                            .as_ref()
                            .is_some_and(|s| s.va().wrapping_add(s.span() - 1) < va)
                        {
                            next = cursor.next_slot();
                        }
                        if next.as_ref().is_some_and(|s| s.va() == va) {
                            slot = next.take();
                        }
                    }
                    i += self.end_word(i, Some((space, &table, va)), slot, &mut summary);
                }
                // Entries went from non-present to present: publish them.
                FlushBatch::new().finish(space.tlb());
            }
            Scope::Device { .. } => {
                let mut i = 0;
                while i < pages {
                    i += match self.location(i) {
                        Some((space, va)) if self.src[i].is_valid() => {
                            let table = space.table();
                            let step =
                                self.end_word(i, Some((space, &table, va)), None, &mut summary);
                            FlushBatch::new().finish(space.tlb());
                            step
                        }
                        _ => self.end_word(i, None, None, &mut summary),
                    };
                }
            }
        }
        summary
    }

    /// Ends word `i`, whatever it holds; returns how many words it covered (the 511
    /// after a 2 MiB page are 0, and looked at only if a destination was set there).
    fn end_word<'t>(
        &mut self,
        i: usize,
        place: Option<Place<'t, 'm, 'a, P>>,
        slot: Option<devpriv_paging::Slot<'t, P::Format>>,
        summary: &mut Summary,
    ) -> usize {
        let covered = (self.src[i].size().frames() as usize).min(self.src.len() - i);
        self.end_one_word(i, place, slot, summary);
        if covered > 1 && self.inner_destinations {
            for k in i + 1..i + covered {
                self.release_destination(k);
            }
        }
        covered
    }

    /// Ends word `i` alone.
    fn end_one_word<'t>(
        &mut self,
        i: usize,
        place: Option<Place<'t, 'm, 'a, P>>,
        slot: Option<devpriv_paging::Slot<'t, P::Format>>,
        summary: &mut Summary,
    ) {
        let s = self.src[i];
        if s.is_valid() {
            let pages = s.size().frames();
            match self.end_page_in(i, place, slot) {
                PageEnd::Migrated => summary.migrated += pages,
                PageEnd::Restored => summary.restored += pages,
                PageEnd::Abandoned => summary.abandoned += pages,
            }
        } else if s.is_hole() && self.committed {
            // Populated by `pages`: the entry holds its own reference; the migration's
            // handle (a device folio) or nothing (a frame, now mapped) is let go.
            summary.populated += s.size().frames();
            match self.dst[i].target() {
                Some(PageTarget::Device(_)) => self.release_destination(i),
                _ => self.dst[i] = MigratePfn::EMPTY,
            }
        } else {
            self.release_destination(i);
        }
    }

    /// Ends an unfinished migration: undoes populated holes, then restores every page.
    pub(super) fn abort(&mut self) {
        if self.committed
            && let Scope::Range { space, start, .. } = self.scope
        {
            let table = space.table();
            for i in 0..self.src.len() {
                let s = self.src[i];
                if s.is_hole() && s.is_migrating() {
                    let va = start + ((i as u64) << 12);
                    self.unpopulate(space, &table, i, va);
                }
            }
        }
        for w in self.src.iter_mut() {
            *w = w.without(MigratePfn::MIGRATE);
        }
        let _ = self.finalize();
    }

    /// Takes back the destination `pages` installed in hole `i` at `va`.
    fn unpopulate(&mut self, space: &AddressSpace<'a, P>, table: &Table<P>, i: usize, va: u64) {
        let d = self.dst[i];
        let Some(target) = d.target() else {
            return;
        };
        let Ok(mut slot) = table.slot(va, d.size().level()) else {
            return;
        };
        let ours = match (slot.entry(), target) {
            (Ok(Entry::Leaf { pfn, .. }), PageTarget::System(p)) => pfn == p,
            (
                Ok(Entry::Software(SoftwareEntry {
                    kind: SoftwareKind::DevicePrivate { index, .. },
                    ..
                })),
                PageTarget::Device(d),
            ) => index == d,
            _ => false,
        };
        if !ours {
            return;
        }
        if let Ok(flush) = slot.replace(&Entry::Absent) {
            flush.flush(space.tlb());
            if let PageTarget::Device(index) = target {
                Self::drop_entry_reference(self.held_view(index));
            }
        }
    }
}

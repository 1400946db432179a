//! The commit point (Linux's `migrate_vma_pages` / `migrate_device_pages`): holes get
//! their destinations, 2 MiB sources with 4 KiB destinations are split, and pages that
//! cannot move stop migrating.

use devpriv_paging::{PageTable, PagingError};
use devpriv_pte::{DeviceAccess, Entry, Level, PageSize, SideBits, SoftwareEntry, SoftwareKind};

use super::split::{split_device, split_system};
use super::{Inner, Scope};
use crate::address_space::AddressSpace;
use crate::notifier::InvalidateEvent;
use crate::platform::{Platform, SystemMemory, Vma};
use crate::words::{MigratePfn, PageTarget};

type Table<P> = PageTable<<P as Platform>::Format, <P as Platform>::Mapper>;

impl<'m, 'a, P: Platform> Inner<'m, 'a, P> {
    pub(super) fn commit(&mut self) {
        let pages = self.src.len();
        // Holes are populated under a second invalidation of the range.
        let (range_table, window) = match self.scope {
            Scope::Range { space, start, .. } => {
                let table = space.table();
                let holes = self
                    .src
                    .iter()
                    .zip(self.dst.iter())
                    .any(|(s, d)| s.is_hole() && d.is_valid());
                let end = start + ((pages as u64) << 12);
                let window = holes
                    .then(|| space.invalidate(start, end, InvalidateEvent::Migrate, self.owner));
                (Some((space, start, table)), window)
            }
            Scope::Device { .. } => (None, None),
        };
        let mut i = 0;
        while i < pages {
            let s = self.src[i];
            let step = if s.is_compound() { 512 } else { 1 };
            if !s.is_migrating() {
                i += 1;
                continue;
            }
            let d = self.dst[i];
            if !d.is_valid() {
                self.src[i] = s.without(MigratePfn::MIGRATE);
                i += step;
                continue;
            }
            match (s.is_compound(), d.is_compound()) {
                // A 2 MiB destination for a 4 KiB page: that page fails.
                (false, true) => {
                    self.src[i] = s.without(MigratePfn::MIGRATE);
                    i += 1;
                    continue;
                }
                // A 2 MiB source with 4 KiB destinations: split it, then go on page by
                // page from the same index.
                (true, false) => {
                    let split = match &range_table {
                        Some((space, start, table)) => {
                            let va = start + ((i as u64) << 12);
                            self.split_source(i, Some((*space, &**table, va)))
                        }
                        None => match self.location(i) {
                            Some((space, va)) => {
                                let table = space.table();
                                self.split_source(i, Some((space, &table, va)))
                            }
                            None => self.split_source(i, None),
                        },
                    };
                    if !split {
                        self.src[i] = s.without(MigratePfn::MIGRATE);
                        i += 512;
                    }
                    continue;
                }
                _ => {}
            }
            if s.is_hole()
                && let Some((space, start, table)) = &range_table
                && let Scope::Range { vma, .. } = self.scope
            {
                let va = start + ((i as u64) << 12);
                if !self.populate(space, table, &vma, i, va) {
                    self.src[i] = s.without(MigratePfn::MIGRATE);
                }
            }
            i += step;
        }
        drop(window);
    }

    /// Splits 2 MiB source `i` (a hole, a device folio or a system frame, with its
    /// migration entry at `place`) into 512 4 KiB sources at words `i..i + 512`.
    fn split_source(
        &mut self,
        i: usize,
        place: Option<(&AddressSpace<'a, P>, &Table<P>, u64)>,
    ) -> bool {
        let s = self.src[i];
        if i + 512 > self.src.len() {
            return false;
        }
        match s.target() {
            None => {
                // A 2 MiB hole: 512 4 KiB holes.
                for k in 0..512 {
                    self.src[i + k] = MigratePfn::hole();
                }
                true
            }
            Some(PageTarget::Device(index)) => {
                let Some((space, table, va)) = place else {
                    return false;
                };
                if !self.holds_entry(table, va, PageSize::Size2MiB, s) {
                    return false;
                }
                // SAFETY: word `i` records the folio as held; it is rewritten below with
                // the 512 pieces, or the folio goes back to being recorded by it.
                let folio = unsafe { self.take_held(index) };
                match split_device(space, table, va, folio) {
                    Ok(parts) => {
                        for (k, piece) in parts.enumerate() {
                            self.src[i + k] = s.subpage(k as u64);
                            let _ = piece.into_raw();
                        }
                        true
                    }
                    Err(folio) => {
                        let _ = folio.into_raw();
                        false
                    }
                }
            }
            Some(PageTarget::System(pfn)) => {
                let Some((space, table, va)) = place else {
                    return false;
                };
                if !self.holds_entry(table, va, PageSize::Size2MiB, s)
                    || !split_system(space, table, va, pfn)
                {
                    return false;
                }
                for k in 0..512 {
                    self.src[i + k] = s.subpage(k as u64);
                }
                true
            }
        }
    }

    /// Whether the entry of `size` at `va` is still the migration entry of source `s`.
    fn holds_entry(&self, table: &Table<P>, va: u64, size: PageSize, s: MigratePfn) -> bool {
        let Ok(slot) = table.slot(va, size.level()) else {
            return false;
        };
        matches!(
            (slot.entry(), s.target()),
            (Ok(Entry::Software(SoftwareEntry {
                kind: SoftwareKind::Migration { pfn, .. },
                ..
            })), Some(PageTarget::System(p))) if pfn == p
        ) || matches!(
            (slot.entry(), s.target()),
            (Ok(Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DeviceMigration { index, .. },
                ..
            })), Some(PageTarget::Device(d))) if index == d
        )
    }

    /// Installs hole `i`'s destination at `va` if the slot is still empty or maps the
    /// zero page.
    fn populate(
        &mut self,
        space: &AddressSpace<'a, P>,
        table: &Table<P>,
        vma: &Vma,
        i: usize,
        va: u64,
    ) -> bool {
        let d = self.dst[i];
        let size = d.size();
        let Some(target) = d.target() else {
            return false;
        };
        // The kernel may have taken the region away since the collection.
        if !space
            .vma(va)
            .is_some_and(|v| v.covers(va, va + size.bytes()))
        {
            return false;
        }
        let entry: Entry<P::Format> = match target {
            PageTarget::System(pfn) => Entry::Leaf {
                pfn,
                size,
                attrs: vma.leaf_attributes(true, true, vma.property.writable),
            },
            PageTarget::Device(index) => Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DevicePrivate {
                    access: if vma.property.writable {
                        DeviceAccess::Write
                    } else {
                        DeviceAccess::Read
                    },
                    index,
                },
                side: SideBits {
                    exclusive: true,
                    ..SideBits::default()
                },
            }),
        };
        // A device-private entry holds a reference of its own.
        let entry_ref = match target {
            PageTarget::Device(index) => match self.held_view(index).head().try_get() {
                Ok(r) => Some(r),
                Err(_) => return false,
            },
            PageTarget::System(_) => None,
        };
        let installed = match table.install(va, size.level(), &entry, &mut space.table_frames()) {
            Ok(flush) => {
                flush.flush(space.tlb());
                true
            }
            Err(PagingError::Occupied { .. }) => {
                self.replace_zero_page(space, table, va, size, &entry)
            }
            Err(_) => false,
        };
        if !installed {
            return false;
        }
        if let (Some(entry_ref), PageTarget::Device(index)) = (entry_ref, target) {
            let _ = entry_ref.into_raw();
            // SAFETY: the destination word records the folio as held; the handle goes
            // back to being recorded by it right after.
            let folio = unsafe { self.take_held(index) };
            folio.set_reverse_map(space.reverse_map(va));
            let _ = folio.into_raw();
        }
        true
    }

    /// The slot at `va` maps the zero page: replace it by `entry`.
    fn replace_zero_page(
        &self,
        space: &AddressSpace<'a, P>,
        table: &Table<P>,
        va: u64,
        size: PageSize,
        entry: &Entry<P::Format>,
    ) -> bool {
        let Some(zero) = self.system.zero_page() else {
            return false;
        };
        if size != PageSize::Size4KiB {
            return false;
        }
        let Ok(mut slot) = table.slot(va, Level::L1) else {
            return false;
        };
        if !matches!(slot.entry(), Ok(Entry::Leaf { pfn, .. }) if pfn == zero) {
            return false;
        }
        match slot.replace_break_before_make(entry, space.tlb()) {
            Ok(flush) => {
                flush.flush(space.tlb());
                true
            }
            Err(_) => false,
        }
    }
}

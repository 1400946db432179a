//! Collection for eviction (Linux's `migrate_device_range` / `migrate_device_pfns`):
//! device pages found by index, their entries found through their reverse maps.

use devpriv_pagemap::{DevicePagemap, LockedFolio};
use devpriv_pte::{DeviceAccess, DeviceIndex, Entry, Level, PageSize, SoftwareEntry, SoftwareKind};

use super::collect::device_migration_entry;
use super::split::split_device;
use super::{Inner, Scope};
use crate::notifier::InvalidateEvent;
use crate::platform::Platform;
use crate::words::MigratePfn;

/// Which device pages an eviction collects, one word each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evict<'m> {
    /// `pages` consecutive indices from `first` (`migrate_device_range`).
    Range {
        /// The first index.
        first: DeviceIndex,
        /// How many.
        pages: usize,
    },
    /// These indices (`migrate_device_pfns`).
    List(&'m [DeviceIndex]),
}

impl Evict<'_> {
    /// Every page of `pagemap` (which must be registered; an unregistered one gives an
    /// empty range).
    pub fn pagemap(pagemap: &DevicePagemap<'_>) -> Self {
        match pagemap.base() {
            Some(first) => Self::Range {
                first,
                pages: pagemap.pages() as usize,
            },
            None => Self::Range {
                first: DeviceIndex::new(0),
                pages: 0,
            },
        }
    }

    /// The number of pages.
    pub fn len(&self) -> usize {
        match self {
            Self::Range { pages, .. } => *pages,
            Self::List(list) => list.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of page `i`.
    pub fn get(&self, i: usize) -> Option<DeviceIndex> {
        match self {
            Self::Range { first, pages } => {
                (i < *pages).then(|| DeviceIndex::new(first.number() + i as u64))
            }
            Self::List(list) => list.get(i).copied(),
        }
    }

    /// Whether pages `i..i + 512` are the 512 pages from `head` on.
    fn holds_run(&self, i: usize, head: DeviceIndex) -> bool {
        if i + 512 > self.len() {
            return false;
        }
        match self {
            Self::Range { .. } => self.get(i) == Some(head),
            Self::List(list) => list[i..i + 512]
                .iter()
                .enumerate()
                .all(|(k, x)| x.number() == head.number() + k as u64),
        }
    }
}

impl<'m, 'a, P: Platform> Inner<'m, 'a, P> {
    pub(super) fn collect_devices(&mut self) {
        let Scope::Device { indices, .. } = self.scope else {
            unreachable!("collect_devices on a range migration");
        };
        let mut i = 0;
        while i < indices.len() {
            i += self.evict_one(indices, i);
        }
    }

    /// Collects page `i`; returns how many words it covered (512 for a whole 2 MiB
    /// folio).
    fn evict_one(&mut self, indices: Evict<'m>, i: usize) -> usize {
        let Scope::Device { spaces, .. } = self.scope else {
            unreachable!();
        };
        let Some(index) = indices.get(i) else {
            return 1;
        };
        let Ok(page) = self.devices.lookup(index) else {
            return 1;
        };
        // Free pages, and folios someone else has locked, are not collected (busy ones
        // are retried by evicting again).
        let Some(folio) = page.try_get().ok().and_then(|r| r.trylock().ok()) else {
            return 1;
        };
        // A folio no entry maps is someone else's.
        let Some((space, va)) = folio.reverse_map().and_then(|r| {
            spaces
                .address_space(r.address_space())
                .map(|s| (s, s.va_of(r)))
        }) else {
            drop(folio);
            return 1;
        };
        let size = folio.size();
        let head = folio.index();
        let table = space.table();
        let window = space.invalidate(va, va + size.bytes(), InvalidateEvent::Migrate, None);
        let Ok(mut slot) = table.slot(va, size.level()) else {
            drop(folio);
            return 1;
        };
        let Ok(Entry::Software(SoftwareEntry {
            kind:
                SoftwareKind::DevicePrivate {
                    access,
                    index: mapped,
                },
            side,
        })) = slot.entry()
        else {
            drop(folio);
            return 1;
        };
        if mapped != head
            || slot
                .replace(&device_migration_entry(access, head, side))
                .is_err()
        {
            drop(folio);
            return 1;
        }
        Self::drop_entry_reference(folio.folio());
        let whole = size == PageSize::Size2MiB && indices.holds_run(i, head);
        let (folio, word_index) = if size == PageSize::Size2MiB && !whole {
            // Only some of the folio's pages are asked for: split it, keep this one.
            match split_device(space, &table, va, folio) {
                Ok(parts) => {
                    let mut kept = None;
                    for (k, piece) in parts.enumerate() {
                        let piece_index = DeviceIndex::new(head.number() + k as u64);
                        let piece_va = va + ((k as u64) << 12);
                        if piece_index == index {
                            kept = Some(piece);
                        } else {
                            self.restore_device_entry(
                                &table,
                                piece_va,
                                Level::L1,
                                access,
                                piece_index,
                                side,
                                piece,
                            );
                        }
                    }
                    (kept.expect("the folio holds the index"), index)
                }
                Err(folio) => {
                    self.restore_device_entry(&table, va, Level::L2, access, head, side, folio);
                    return 1;
                }
            }
        } else {
            (folio, head)
        };
        drop(window);
        self.record_evicted(i, folio, word_index, access)
    }

    /// Records collected folio `folio` in word `i`.
    fn record_evicted(
        &mut self,
        i: usize,
        folio: LockedFolio<'a>,
        index: DeviceIndex,
        access: DeviceAccess,
    ) -> usize {
        let size = folio.size();
        let mut word = MigratePfn::device(index).with(MigratePfn::MIGRATE);
        if access == DeviceAccess::Write {
            word = word.with(MigratePfn::WRITE);
        }
        if size == PageSize::Size2MiB {
            word = word.with(MigratePfn::COMPOUND);
        }
        self.src[i] = word;
        let _ = folio.into_raw();
        size.frames() as usize
    }
}

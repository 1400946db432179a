//! An address space: one page table, its identifier, its TLB, its memory map, its
//! interval notifiers, and the lock discipline every operation on it follows.
//!
//! # Locking
//!
//! The page table sits behind a reader-writer lock, Linux's mmap lock:
//!
//! | shared (many at once) | exclusive (alone) |
//! |---|---|
//! | CPU faults ([`handle_fault`](crate::handle_fault)) | [`unmap`](AddressSpace::unmap) |
//! | each step of a [`Migration`](crate::Migration) and of an eviction | [`protect`](AddressSpace::protect) |
//! | [`make_device_exclusive`](crate::make_device_exclusive) | [`release`](AddressSpace::release) |
//! | [`snapshot`](crate::snapshot) | [`write`](AddressSpace::write) (the kernel's own structural changes) |
//! | [`map_page`](AddressSpace::map_page), [`read`](AddressSpace::read) | |
//!
//! Shared operations change entries only by compare-exchange, and only entries of pages
//! they have locked (a device folio's lock, a system frame's lock) or empty slots, so
//! they run concurrently with each other. A migration holds no lock between its steps:
//! its migration entries and page locks keep the pages it holds. An exclusive operation
//! may change anything — an unmap may remove a migration's entries between its steps —
//! and the migration then abandons just those pages.
//!
//! Lock order: the page-table lock, then a folio or frame lock (try-locks only, so no
//! deadlock), then a notifier's own lock, then the table-frame allocator's lock.

use core::fmt;
use core::ops::{Deref, DerefMut};

use devpriv_pagemap::{AddressSpaceId, FolioRef, Owner, ReverseMap};
use devpriv_paging::{
    FrameAllocator, OutOfFrames, PageTable, PagingError, PagingFormat, RemovedEntry,
};
use devpriv_pte::{
    DeviceAccess, Entry, LeafAttributes, Level, MigrationAccess, PageSize, Pfn, SoftwareEntry,
    SoftwareKind,
};

use crate::devices::DeviceMemory;
use crate::migration::{split_block, split_huge_page};
use crate::notifier::{
    IntervalNotifier, InvalidateEvent, InvalidationWindow, NotifierError, Notifiers, SubscriptionId,
};
use crate::platform::{Platform, Vma, Vmas};
use crate::sync::{Mutex, ReadGuard, RwLock, WriteGuard, spin_wait};

/// How often [`AddressSpace::unmap`] and [`AddressSpace::protect`] split a 2 MiB entry
/// that an edge of their range cuts through before they give up with
/// [`PagingError::PartialBlock`] (the page stayed busy, or kept being mapped whole).
const BLOCK_SPLIT_RETRIES: u32 = 64;

/// What an [`AddressSpace`] is built from.
pub struct AddressSpaceParts<'a, P: Platform> {
    /// The identifier reverse maps record (unique among the kernel's address spaces).
    pub id: AddressSpaceId,
    /// The page table.
    pub table: PageTable<P::Format, P::Mapper>,
    /// Invalidates the translations of this page table on every CPU that uses it.
    pub tlb: P::Tlb,
    /// Where the page table's own frames come from.
    pub table_frames: P::TableFrames,
    /// System memory.
    pub system: &'a P::System,
    /// Device memory: the device-private space and its drivers.
    pub devices: &'a DeviceMemory<'a, P>,
    /// The memory map.
    pub vmas: &'a dyn Vmas,
}

/// One address space (a process, a VM's stage-2 space...): a page table bound to an
/// [`AddressSpaceId`], a TLB invalidator, the memory map, the interval notifiers of the
/// devices that mirror it, and the lock discipline of the module documentation.
pub struct AddressSpace<'a, P: Platform> {
    id: AddressSpaceId,
    va_bits: u32,
    table: RwLock<PageTable<P::Format, P::Mapper>>,
    tlb: P::Tlb,
    table_frames: Mutex<P::TableFrames>,
    system: &'a P::System,
    devices: &'a DeviceMemory<'a, P>,
    vmas: &'a dyn Vmas,
    notifiers: Notifiers<'a>,
}

/// Why an operation on an [`AddressSpace`] did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpaceError {
    /// No region of the memory map holds the address.
    NoVma {
        /// The address.
        va: u64,
    },
    /// The page table refused (bad range, occupied slot, out of table frames...).
    Paging(PagingError),
}

impl From<PagingError> for AddressSpaceError {
    fn from(e: PagingError) -> Self {
        Self::Paging(e)
    }
}

impl fmt::Display for AddressSpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVma { va } => write!(f, "no region of the memory map holds {va:#x}"),
            Self::Paging(e) => write!(f, "page table: {e}"),
        }
    }
}

impl core::error::Error for AddressSpaceError {}

impl<'a, P: Platform> AddressSpace<'a, P> {
    /// The address space made of `parts`.
    pub fn new(parts: AddressSpaceParts<'a, P>) -> Self {
        Self {
            id: parts.id,
            va_bits: parts.table.va_bits(),
            table: RwLock::new(parts.table),
            tlb: parts.tlb,
            table_frames: Mutex::new(parts.table_frames),
            system: parts.system,
            devices: parts.devices,
            vmas: parts.vmas,
            notifiers: Notifiers::new(),
        }
    }

    /// The identifier.
    pub fn id(&self) -> AddressSpaceId {
        self.id
    }

    /// The TLB invalidator.
    pub fn tlb(&self) -> &P::Tlb {
        &self.tlb
    }

    /// System memory.
    pub fn system(&self) -> &'a P::System {
        self.system
    }

    /// Device memory.
    pub fn devices(&self) -> &'a DeviceMemory<'a, P> {
        self.devices
    }

    /// The memory map.
    pub fn vmas(&self) -> &'a dyn Vmas {
        self.vmas
    }

    /// The region holding `va`.
    pub fn vma(&self, va: u64) -> Option<Vma> {
        self.vmas.find(va)
    }

    /// Shared access to the page table (the lock held in shared mode): for lookups, and
    /// for changes by compare-exchange such as [`PageTable::install`] with
    /// [`table_frames`](Self::table_frames).
    pub fn read(&self) -> TableRead<'_, P> {
        TableRead(self.table.read())
    }

    /// Exclusive access to the page table, for the kernel's own structural changes.
    /// Unmapping and protection changes should go through [`unmap`](Self::unmap) and
    /// [`protect`](Self::protect), which notify the devices and release device pages;
    /// changes made here notify no one.
    pub fn write(&self) -> TableWrite<'_, P> {
        TableWrite(self.table.write())
    }

    /// The page table's frame allocator, locked for each call (so that operations under
    /// the shared lock can take table frames).
    pub fn table_frames(&self) -> LockedFrames<'_, P::TableFrames> {
        LockedFrames(&self.table_frames)
    }

    /// Maps the system frame `pfn` (of `size`) at `va` with the attributes of `va`'s
    /// region, accessed, and writable and dirty if `writable` (and the region allows
    /// writes): what a kernel's anonymous page fault installs. The slot must be empty.
    pub fn map_page(
        &self,
        va: u64,
        pfn: Pfn,
        size: PageSize,
        writable: bool,
    ) -> Result<(), AddressSpaceError> {
        let vma = self.vma(va).ok_or(AddressSpaceError::NoVma { va })?;
        let attrs = vma.leaf_attributes(writable, true, writable);
        let entry = Entry::Leaf { pfn, size, attrs };
        self.read()
            .install(va, size.level(), &entry, &mut self.table_frames())?
            .flush(&self.tlb);
        Ok(())
    }

    /// Unmaps `[va, va + len)` (4 KiB aligned, not cutting through a 2 MiB entry:
    /// [`PagingError::PartialBlock`]), after notifying the devices (event
    /// [`Unmap`](InvalidateEvent::Unmap)), under the exclusive lock.
    ///
    /// A 2 MiB entry the range cuts through — a present page of system memory or a
    /// device-private page — is split first (entry, and frame or folio), as Linux splits
    /// a huge page that `munmap` cuts; the pages outside the range stay mapped.
    ///
    /// Device-private entries give their folio reference back, so a device page that no
    /// entry maps any more is freed. Migration entries are dropped: the migration that
    /// wrote them notices and abandons those pages, releasing what it held. Every other
    /// removed entry — present leaves, device-exclusive entries (their frames), swap
    /// entries, markers — goes to `removed`, after the TLB invalidation, for the kernel
    /// to release.
    pub fn unmap(
        &self,
        va: u64,
        len: u64,
        mut removed: impl FnMut(RemovedEntry<P::Format>),
    ) -> Result<(), AddressSpaceError> {
        self.with_blocks_split(va, len, |table| {
            let _window =
                self.notifiers
                    .invalidate(va, va.saturating_add(len), InvalidateEvent::Unmap, None);
            table
                .unmap_with(va, len, &mut self.table_frames(), &self.tlb, |entry| {
                    release_removed(self.devices, entry, &mut removed)
                })?
                .flush(&self.tlb);
            Ok(())
        })
    }

    /// Splits the 2 MiB entry that maps `va` — a present page of system memory or a
    /// device-private page — into 512 4 KiB entries, and the frame or folio behind it.
    /// A kernel calls it at the edges of a region it is about to cut, while the region
    /// is still there (Linux's `vma_adjust_trans_huge` before the VMA split), so that
    /// the region can go first and the `unmap` after it has nothing left to split.
    /// Fails with [`PagingError::PartialBlock`] if the page stayed busy or whole.
    pub fn split_huge_page(&self, va: u64) -> Result<(), AddressSpaceError> {
        let page = va & !0xfff;
        for _ in 0..BLOCK_SPLIT_RETRIES {
            match self.read().lookup(page) {
                Ok((Level::L2, Entry::Leaf { .. } | Entry::Software(_))) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            split_huge_page(self, page);
            spin_wait();
        }
        Err(PagingError::PartialBlock {
            va: page & !(PageSize::Size2MiB.bytes() - 1),
            level: Level::L2,
        }
        .into())
    }

    /// Runs `change` under the exclusive lock once no 2 MiB entry straddles an edge of
    /// `[va, va + len)`: such an entry (system memory, or a device-private page) is
    /// split first, by [`split_block`]. A split can lose a race (the page was busy, or
    /// was mapped whole again meanwhile): `change` then fails with
    /// [`PagingError::PartialBlock`] having changed nothing, and the split is retried.
    fn with_blocks_split<T>(
        &self,
        va: u64,
        len: u64,
        mut change: impl FnMut(&mut TableWrite<'_, P>) -> Result<T, AddressSpaceError>,
    ) -> Result<T, AddressSpaceError> {
        let mut tries = 0;
        loop {
            for edge in [va, va.saturating_add(len)] {
                split_block(self, edge);
            }
            let mut table = self.write();
            match change(&mut table) {
                Err(AddressSpaceError::Paging(PagingError::PartialBlock { .. }))
                    if tries < BLOCK_SPLIT_RETRIES =>
                {
                    tries += 1;
                    drop(table);
                    spin_wait();
                }
                other => return other,
            }
        }
    }

    /// Makes `[va, va + len)` read-only (`writable == false`) or writable, after
    /// notifying the devices (event [`Protect`](InvalidateEvent::Protect)), under the
    /// exclusive lock (Linux's `mprotect`).
    ///
    /// Present leaves change their writable bit. When write access goes away, the
    /// software entries follow: device-private and migration entries become read-only
    /// ones, and a device-exclusive entry is revoked — the page is mapped again,
    /// read-only. A 2 MiB entry the range cuts through is split first (as for
    /// [`unmap`](Self::unmap)).
    pub fn protect(&self, va: u64, len: u64, writable: bool) -> Result<(), AddressSpaceError> {
        self.with_blocks_split(va, len, |table| {
            self.protect_locked(table, va, len, writable)
        })
    }

    fn protect_locked(
        &self,
        table: &mut TableWrite<'_, P>,
        va: u64,
        len: u64,
        writable: bool,
    ) -> Result<(), AddressSpaceError> {
        let _window =
            self.notifiers
                .invalidate(va, va.saturating_add(len), InvalidateEvent::Protect, None);
        let flush = table.protect(
            va,
            len,
            |attrs| {
                type A<P> = <<P as Platform>::Format as devpriv_pte::PteFormat>::LeafAttributes;
                let mut p = attrs.property();
                if A::<P>::from_property(p) != attrs || p.writable == writable {
                    return attrs;
                }
                p.writable = writable;
                p.dirty &= writable;
                A::<P>::from_property(p)
            },
            &self.tlb,
        )?;
        flush.flush(&self.tlb);
        if writable {
            return Ok(());
        }
        let mut cursor = table.cursor(va, len)?;
        while let Some(mut slot) = cursor.next_slot() {
            let Ok(Entry::Software(sw)) = slot.entry() else {
                continue;
            };
            let new = match sw.kind {
                SoftwareKind::DevicePrivate {
                    access: DeviceAccess::Write,
                    index,
                } => Entry::Software(SoftwareEntry {
                    kind: SoftwareKind::DevicePrivate {
                        access: DeviceAccess::Read,
                        index,
                    },
                    side: sw.side,
                }),
                SoftwareKind::Migration {
                    access: MigrationAccess::Write,
                    pfn,
                    young,
                    dirty,
                } => Entry::Software(SoftwareEntry {
                    kind: SoftwareKind::Migration {
                        access: MigrationAccess::ReadExclusive,
                        pfn,
                        young,
                        dirty,
                    },
                    side: sw.side,
                }),
                SoftwareKind::DeviceMigration {
                    access: MigrationAccess::Write,
                    index,
                    young,
                    dirty,
                } => Entry::Software(SoftwareEntry {
                    kind: SoftwareKind::DeviceMigration {
                        access: MigrationAccess::ReadExclusive,
                        index,
                        young,
                        dirty,
                    },
                    side: sw.side,
                }),
                SoftwareKind::DeviceExclusive { pfn } => {
                    let Some(vma) = self.vma(slot.va()) else {
                        continue;
                    };
                    let Some(size) = slot.level().leaf_size() else {
                        continue;
                    };
                    Entry::Leaf {
                        pfn,
                        size,
                        attrs: vma.leaf_attributes(false, false, true),
                    }
                }
                _ => continue,
            };
            // The exclusive lock keeps every other writer out; only the hardware's
            // accessed/dirty updates race, and they do not touch software entries.
            slot.replace(&new)
                .map_err(|_| PagingError::Raced { va: slot.va() })?
                .flush(&self.tlb);
        }
        Ok(())
    }

    /// Empties the address space (Linux's `exit_mmap`): notifies every device (event
    /// [`Release`](InvalidateEvent::Release)), then unmaps everything, releasing device
    /// pages as [`unmap`](Self::unmap) does and handing every other entry to `removed`,
    /// and frees every table but the root. The address space stays usable (a kernel
    /// that keeps address spaces in a registry for its lifetime reuses it, or drops it
    /// with [`destroy`](Self::destroy)).
    pub fn release(&self, mut removed: impl FnMut(RemovedEntry<P::Format>)) {
        let mut table = self.table.write();
        let _window = self
            .notifiers
            .invalidate(0, u64::MAX, InvalidateEvent::Release, None);
        let half = 1u64 << (table.va_bits() - 1);
        for start in [0, P::Format::canonical(half, table.va_bits())] {
            match table.unmap_with(start, half, &mut self.table_frames(), &self.tlb, |e| {
                release_removed(self.devices, e, &mut removed)
            }) {
                Ok(flush) => flush.flush(&self.tlb),
                // A half the table does not translate (an aarch64 table covers one).
                Err(PagingError::OutOfRange { .. }) => {}
                Err(e) => unreachable!("unmapping a whole half of the table: {e:?}"),
            }
        }
    }

    /// [`release`](Self::release)s the address space, then frees its root table.
    pub fn destroy(self, removed: impl FnMut(RemovedEntry<P::Format>)) {
        self.release(removed);
        let frames = &self.table_frames;
        self.table.into_inner().destroy(&mut LockedFrames(frames));
    }

    /// Subscribes `notifier` to invalidations of `[start, end)` (Linux's
    /// `mmu_interval_notifier_insert`).
    pub fn subscribe(
        &self,
        start: u64,
        end: u64,
        notifier: &'a dyn IntervalNotifier,
    ) -> Result<SubscriptionId, NotifierError> {
        self.notifiers.subscribe(start, end, notifier)
    }

    /// Ends a subscription (Linux's `mmu_interval_notifier_remove`).
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), NotifierError> {
        self.notifiers.unsubscribe(id)
    }

    /// Live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.notifiers.count()
    }

    /// The sequence to check with [`read_retry`](Self::read_retry), waiting (spinning)
    /// while an invalidation of the subscription is in progress
    /// (`mmu_interval_read_begin`).
    pub fn read_begin(&self, id: SubscriptionId) -> Result<u64, NotifierError> {
        self.notifiers.read_begin(id)
    }

    /// As [`read_begin`](Self::read_begin), but `None` instead of waiting.
    pub fn try_read_begin(&self, id: SubscriptionId) -> Result<Option<u64>, NotifierError> {
        self.notifiers.try_read_begin(id)
    }

    /// Whether an invalidation of the subscription began since `read_begin` returned
    /// `seq`; check it under the lock the notifier takes (`mmu_interval_read_retry`).
    pub fn read_retry(&self, id: SubscriptionId, seq: u64) -> bool {
        self.notifiers.read_retry(id, seq)
    }

    /// Begins an invalidation of `[start, end)`.
    pub(crate) fn invalidate(
        &self,
        start: u64,
        end: u64,
        event: InvalidateEvent,
        owner: Option<Owner>,
    ) -> InvalidationWindow<'_, 'a> {
        self.notifiers.invalidate(start, end, event, owner)
    }

    /// The reverse map that records a device folio mapped at `va` here (the address
    /// is kept modulo the table's reach, so upper-half addresses fit).
    pub(crate) fn reverse_map(&self, va: u64) -> Option<ReverseMap> {
        let reach = if self.va_bits >= 64 {
            u64::MAX
        } else {
            (1 << self.va_bits) - 1
        };
        ReverseMap::new(self.id, (va & reach) >> 12).ok()
    }

    /// The address a reverse map of this address space records.
    pub(crate) fn va_of(&self, rmap: ReverseMap) -> u64 {
        P::Format::canonical(rmap.virtual_page() << 12, self.va_bits)
    }

    /// The page table, locked shared, with the crate's internal view.
    pub(crate) fn table(&self) -> ReadGuard<'_, PageTable<P::Format, P::Mapper>> {
        self.table.read()
    }
}

impl<P: Platform> fmt::Debug for AddressSpace<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("id", &self.id)
            .field("subscriptions", &self.notifiers.count())
            .finish_non_exhaustive()
    }
}

/// What unmapping an entry releases: a device-private entry's folio reference here,
/// migration entries nothing, the rest through `removed`.
fn release_removed<P: Platform>(
    devices: &DeviceMemory<'_, P>,
    entry: RemovedEntry<P::Format>,
    removed: &mut impl FnMut(RemovedEntry<P::Format>),
) {
    match entry.entry() {
        Ok(Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { index, .. },
            ..
        })) => {
            if let Ok(page) = devices.lookup(index) {
                // SAFETY: every device-private entry this crate writes holds one reference
                // to its folio (the mapping's), and this entry was just removed under the
                // exclusive lock (or from a table being destroyed), so that reference is
                // ours now.
                drop(unsafe { FolioRef::from_raw(page.folio()) });
            }
        }
        Ok(Entry::Software(sw)) if sw.kind.is_migration() => {}
        _ => removed(entry),
    }
}

/// The page table, locked shared ([`AddressSpace::read`]).
pub struct TableRead<'g, P: Platform>(ReadGuard<'g, PageTable<P::Format, P::Mapper>>);

impl<P: Platform> Deref for TableRead<'_, P> {
    type Target = PageTable<P::Format, P::Mapper>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The page table, locked exclusive ([`AddressSpace::write`]).
pub struct TableWrite<'g, P: Platform>(WriteGuard<'g, PageTable<P::Format, P::Mapper>>);

impl<P: Platform> Deref for TableWrite<'_, P> {
    type Target = PageTable<P::Format, P::Mapper>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<P: Platform> DerefMut for TableWrite<'_, P> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A frame allocator behind the address space's lock, taken for each call.
pub struct LockedFrames<'f, A>(&'f Mutex<A>);

impl<A: FrameAllocator> FrameAllocator for LockedFrames<'_, A> {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.0.lock().allocate()
    }

    fn free(&mut self, frame: Pfn) {
        self.0.lock().free(frame)
    }
}

impl<A> fmt::Debug for LockedFrames<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockedFrames")
    }
}

/// Helpers every module uses to build entries from a region and a migration entry.
pub(crate) mod entries {
    use super::*;

    /// The migration access that remembers a present leaf's writability (anonymous
    /// pages are exclusive to their mapping).
    pub(crate) fn access_of_leaf(writable: bool) -> MigrationAccess {
        if writable {
            MigrationAccess::Write
        } else {
            MigrationAccess::ReadExclusive
        }
    }

    /// The migration access that remembers a device-private entry's access.
    pub(crate) fn access_of_device(access: DeviceAccess, exclusive: bool) -> MigrationAccess {
        match (access, exclusive) {
            (DeviceAccess::Write, _) => MigrationAccess::Write,
            (DeviceAccess::Read, true) => MigrationAccess::ReadExclusive,
            (DeviceAccess::Read, false) => MigrationAccess::Read,
        }
    }

    /// The device-private access a migration access grants.
    pub(crate) fn device_access(access: MigrationAccess) -> DeviceAccess {
        match access {
            MigrationAccess::Write => DeviceAccess::Write,
            _ => DeviceAccess::Read,
        }
    }

    /// A present leaf of `vma` for `pfn`, as a migration entry remembered it.
    pub(crate) fn leaf<F: PagingFormat>(
        vma: &Vma,
        pfn: Pfn,
        size: PageSize,
        access: MigrationAccess,
        young: bool,
        dirty: bool,
    ) -> Entry<F> {
        Entry::Leaf {
            pfn,
            size,
            attrs: vma.leaf_attributes(access == MigrationAccess::Write, young, dirty),
        }
    }
}

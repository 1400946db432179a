//! Device-exclusive access (Linux's `make_device_exclusive`, the current one-address
//! form): a device takes a system page for atomic access; the CPU entry becomes a
//! device-exclusive entry, and a CPU touch takes the page back.

use core::fmt;

use devpriv_pagemap::Owner;
use devpriv_paging::{PageTable, PagingError};
use devpriv_pte::{
    Entry, LeafAttributes, Level, MigrationAccess, PageSize, Pfn, SoftwareEntry, SoftwareKind,
};

use crate::address_space::AddressSpace;
use crate::devices::FaultError;
use crate::fault::{FaultOutcome, WaitFor, handle_fault};
use crate::migration::split_huge_page;
use crate::notifier::InvalidateEvent;
use crate::platform::{Platform, SystemMemory};

/// How often [`make_device_exclusive`] faults the page in and looks again before it
/// gives up.
const ATTEMPTS: u32 = 16;

/// Why [`make_device_exclusive`] did not hand the page over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExclusiveError<'a> {
    /// No region of the memory map holds the address, or it does not allow writes.
    NoWritableVma {
        /// The address.
        va: u64,
    },
    /// The kernel could not fault the page in writable.
    FaultFailed {
        /// The address.
        va: u64,
    },
    /// The page is locked (a migration, another hand-over): wait, then try again.
    Busy(WaitFor<'a>),
    /// The page kept changing under the call.
    Unstable {
        /// The address.
        va: u64,
    },
    /// Bringing a device page back failed.
    Fault(FaultError),
    /// The page table refused (an address it does not translate, no table frame for a
    /// split).
    Paging(PagingError),
}

impl fmt::Display for ExclusiveError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoWritableVma { va } => write!(f, "no writable region holds {va:#x}"),
            Self::FaultFailed { va } => write!(f, "{va:#x} could not be faulted in"),
            Self::Busy(wait) => write!(f, "the page is locked: {wait}"),
            Self::Unstable { va } => write!(f, "the entry at {va:#x} kept changing"),
            Self::Fault(e) => write!(f, "{e}"),
            Self::Paging(e) => write!(f, "page table: {e}"),
        }
    }
}

impl core::error::Error for ExclusiveError<'_> {}

/// A system page handed to a device for exclusive access: locked until dropped
/// (Linux returns the page locked and referenced; the driver maps it, then unlocks).
///
/// The CPU entry stays device-exclusive after the drop, until a CPU touches the page
/// or a protection change revokes it; the driver's notifier hears about either first
/// (events [`Clear`](InvalidateEvent::Clear), [`Protect`](InvalidateEvent::Protect)).
pub struct ExclusivePage<'s, P: Platform> {
    system: &'s P::System,
    pfn: Pfn,
    va: u64,
}

impl<P: Platform> ExclusivePage<'_, P> {
    /// The frame the device now holds.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// The virtual address of the page.
    pub fn va(&self) -> u64 {
        self.va
    }
}

impl<P: Platform> Drop for ExclusivePage<'_, P> {
    fn drop(&mut self) {
        self.system.unlock(self.pfn);
    }
}

impl<P: Platform> fmt::Debug for ExclusivePage<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExclusivePage")
            .field("pfn", &self.pfn)
            .field("va", &format_args!("{:#x}", self.va))
            .finish()
    }
}

/// Gives device `owner` exclusive access to the page at `va`: the page is faulted in
/// writable (through `fault_in`, the kernel's fault handler, which returns whether it
/// succeeded; device pages are brought back, a 2 MiB mapping is split), locked, the
/// devices notified (event [`Exclusive`](InvalidateEvent::Exclusive), `owner`), and its
/// entry replaced by a device-exclusive entry that still counts as the page's mapping.
/// The page comes back locked in an [`ExclusivePage`].
pub fn make_device_exclusive<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    va: u64,
    owner: Owner,
    fault_in: &mut dyn FnMut(u64, bool) -> bool,
) -> Result<ExclusivePage<'a, P>, ExclusiveError<'a>> {
    let va = va & !0xfff;
    let vma = space
        .vma(va)
        .filter(|v| v.property.writable)
        .ok_or(ExclusiveError::NoWritableVma { va })?;
    let system = space.system();
    for _ in 0..ATTEMPTS {
        let table = space.table();
        let (level, entry) = table.lookup(va).map_err(ExclusiveError::Paging)?;
        match entry {
            Entry::Leaf { pfn, size, attrs }
                if attrs.property().writable && vma.matches(&attrs) =>
            {
                if size == PageSize::Size2MiB {
                    drop(table);
                    split_huge_page(space, va);
                    continue;
                }
                if size != PageSize::Size4KiB {
                    return Err(ExclusiveError::Unstable { va });
                }
                // The entry changes first, then the frame is locked: while the
                // device-exclusive entry maps it nothing can free it (locking a frame
                // read without a lock could lock one already freed).
                let window =
                    space.invalidate(va, va + 4096, InvalidateEvent::Exclusive, Some(owner));
                let leaf = Entry::Leaf { pfn, size, attrs };
                let exclusive =
                    Entry::Software(SoftwareEntry::new(SoftwareKind::DeviceExclusive { pfn }));
                let claimed = table.slot(va, Level::L1).ok().and_then(|mut slot| {
                    if slot.entry() != Ok(leaf) {
                        return None;
                    }
                    slot.replace(&exclusive).ok().map(|flush| (slot, flush))
                });
                let Some((mut slot, flush)) = claimed else {
                    drop(window);
                    continue;
                };
                flush.flush(space.tlb());
                if !system.try_lock(pfn) {
                    // A migration or another hand-over holds the frame: put the leaf
                    // back. A CPU may have touched the device-exclusive entry meanwhile;
                    // its fault path then restores the leaf itself once the frame is
                    // free, so a lost compare-exchange here is not an error.
                    if let Ok(flush) = slot.replace(&leaf) {
                        flush.ignore(); // the entry put back was never present
                    }
                    drop(window);
                    return Err(ExclusiveError::Busy(WaitFor::SystemFrame(pfn)));
                }
                drop(window);
                return Ok(ExclusivePage { system, pfn, va });
            }
            Entry::Software(sw)
                if matches!(
                    sw.kind,
                    SoftwareKind::DevicePrivate { .. }
                        | SoftwareKind::DeviceExclusive { .. }
                        | SoftwareKind::Migration { .. }
                        | SoftwareKind::DeviceMigration { .. }
                ) =>
            {
                drop(table);
                match handle_fault(space, va, true).map_err(ExclusiveError::Fault)? {
                    FaultOutcome::Wait(wait) => return Err(ExclusiveError::Busy(wait)),
                    _ => continue,
                }
            }
            _ => {
                let _ = level;
                drop(table);
                if !fault_in(va, true) {
                    return Err(ExclusiveError::FaultFailed { va });
                }
            }
        }
    }
    Err(ExclusiveError::Unstable { va })
}

/// A CPU touched the device-exclusive entry for `pfn` at `va` (`level`): notify the
/// devices (event [`Clear`](InvalidateEvent::Clear)) and map the page again, writable
/// and dirty (Linux's `restore_exclusive_pte`), once the driver no longer holds the
/// frame's lock.
///
/// The entry is claimed before the frame is locked — replaced by a migration entry,
/// which other CPUs wait on — so that the frame locked is one an entry still maps,
/// never one another CPU restored, unmapped and freed after this one read the entry.
/// If the driver still holds the frame, the device-exclusive entry goes back and the
/// CPU waits.
pub(crate) fn restore_exclusive<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    level: Level,
    pfn: Pfn,
) -> FaultOutcome<'a> {
    let system = space.system();
    let Some((vma, size)) = space.vma(va).zip(level.leaf_size()) else {
        return FaultOutcome::NotDevicePrivate;
    };
    let claim = Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
        access: MigrationAccess::Write,
        pfn,
        young: true,
        dirty: true,
    }));
    let Some(mut slot) = table.slot(va, level).ok().filter(|slot| {
        matches!(
            slot.entry(),
            Ok(Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DeviceExclusive { pfn: p },
                ..
            })) if p == pfn
        )
    }) else {
        return FaultOutcome::Retry;
    };
    let Ok(exclusive) = slot.entry() else {
        return FaultOutcome::Retry;
    };
    match slot.replace(&claim) {
        // Neither entry was present: nothing to flush.
        Ok(flush) => flush.ignore(),
        Err(_) => return FaultOutcome::Retry,
    }
    if !system.try_lock(pfn) {
        slot.replace(&exclusive)
            .expect("an entry only this call changes under the shared lock")
            .ignore();
        return FaultOutcome::Wait(WaitFor::SystemFrame(pfn));
    }
    let window = space.invalidate(va, va + size.bytes(), InvalidateEvent::Clear, None);
    let leaf = Entry::Leaf {
        pfn,
        size,
        attrs: vma.leaf_attributes(true, true, true),
    };
    slot.replace(&leaf)
        .expect("an entry only this call changes under the shared lock")
        .ignore();
    drop(window);
    system.unlock(pfn);
    FaultOutcome::Resolved
}

//! Device-exclusive access (Linux's `make_device_exclusive`, the current one-address
//! form): a device takes a system page for atomic access; the CPU entry becomes a
//! device-exclusive entry, and a CPU touch takes the page back.

use core::fmt;

use devpriv_pagemap::Owner;
use devpriv_paging::{PageTable, PagingError};
use devpriv_pte::{Entry, LeafAttributes, Level, PageSize, Pfn, SoftwareEntry, SoftwareKind};

use crate::address_space::AddressSpace;
use crate::devices::FaultError;
use crate::fault::{FaultOutcome, WaitFor, handle_fault};
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
            Self::Busy(wait) => write!(f, "the page is locked: wait for {wait:?}"),
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
                    split_huge(space, &table, va & !((1 << 21) - 1), pfn)?;
                    continue;
                }
                if size != PageSize::Size4KiB {
                    return Err(ExclusiveError::Unstable { va });
                }
                if !system.try_lock(pfn) {
                    return Err(ExclusiveError::Busy(WaitFor::SystemFrame(pfn)));
                }
                let window =
                    space.invalidate(va, va + 4096, InvalidateEvent::Exclusive, Some(owner));
                let replaced = table.slot(va, Level::L1).ok().and_then(|mut slot| {
                    if !matches!(slot.entry(), Ok(Entry::Leaf { pfn: p, .. }) if p == pfn) {
                        return None;
                    }
                    let exclusive =
                        Entry::Software(SoftwareEntry::new(SoftwareKind::DeviceExclusive { pfn }));
                    slot.replace(&exclusive).ok()
                });
                drop(window);
                match replaced {
                    Some(flush) => {
                        flush.flush(space.tlb());
                        return Ok(ExclusivePage { system, pfn, va });
                    }
                    None => {
                        system.unlock(pfn);
                        continue;
                    }
                }
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

/// Splits the present 2 MiB mapping at `va` (and its frame `pfn`) into 4 KiB pages.
fn split_huge<P: Platform>(
    space: &AddressSpace<'_, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    pfn: Pfn,
) -> Result<(), ExclusiveError<'static>> {
    let system = space.system();
    if !system.try_lock(pfn) {
        return Err(ExclusiveError::Busy(WaitFor::SystemFrame(pfn)));
    }
    match table.split(va, &mut space.table_frames(), space.tlb()) {
        Ok(flush) => {
            flush.flush(space.tlb());
            system.split(pfn);
            for k in 0..512 {
                system.unlock(Pfn::new(pfn.number() + k));
            }
            Ok(())
        }
        Err(e) => {
            system.unlock(pfn);
            Err(ExclusiveError::Paging(e))
        }
    }
}

/// A CPU touched the device-exclusive entry for `pfn` at `va` (`level`): notify the
/// devices (event [`Clear`](InvalidateEvent::Clear)) and map the page again, writable
/// and dirty (Linux's `restore_exclusive_pte`).
pub(crate) fn restore_exclusive<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    table: &PageTable<P::Format, P::Mapper>,
    va: u64,
    level: Level,
    pfn: Pfn,
) -> FaultOutcome<'a> {
    let system = space.system();
    if !system.try_lock(pfn) {
        return FaultOutcome::Wait(WaitFor::SystemFrame(pfn));
    }
    let Some((vma, size)) = space.vma(va).zip(level.leaf_size()) else {
        system.unlock(pfn);
        return FaultOutcome::NotDevicePrivate;
    };
    let window = space.invalidate(va, va + size.bytes(), InvalidateEvent::Clear, None);
    let leaf = Entry::Leaf {
        pfn,
        size,
        attrs: vma.leaf_attributes(true, true, true),
    };
    let restored = table.slot(va, level).ok().and_then(|mut slot| {
        let still = matches!(
            slot.entry(),
            Ok(Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DeviceExclusive { pfn: p },
                ..
            })) if p == pfn
        );
        if still {
            slot.replace(&leaf).ok()
        } else {
            None
        }
    });
    drop(window);
    system.unlock(pfn);
    match restored {
        Some(flush) => {
            flush.flush(space.tlb());
            FaultOutcome::Resolved
        }
        None => FaultOutcome::Retry,
    }
}

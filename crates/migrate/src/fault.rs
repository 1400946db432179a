//! The CPU fault path (Linux's `do_swap_page` for device-private, device-exclusive and
//! migration entries): one place that decides what a CPU touch of a software entry
//! does, and who writes the new entry (a migration, always).

use core::fmt;

use devpriv_pagemap::{Folio, TryLockError};
use devpriv_pte::{DeviceIndex, Entry, Pfn, SoftwareEntry, SoftwareKind};

use crate::address_space::AddressSpace;
use crate::devices::{CpuFault, FaultError};
use crate::exclusive::restore_exclusive;
use crate::platform::Platform;

/// What a faulting CPU waits for before it retries: the lock of the page being
/// migrated. Linux used to return and refault at once, which livelocked a real GPU
/// workload; it now sleeps on the folio lock, and so should a kernel here.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WaitFor<'a> {
    /// A device folio's lock (a migration or another fault holds it): wait until
    /// [`Folio::is_locked`] is false.
    DeviceFolio(Folio<'a>),
    /// A system frame's lock ([`SystemMemory::try_lock`](crate::SystemMemory::try_lock)), held by a migration of it or
    /// a device-exclusive hand-over: wait until the kernel's lock of `pfn` is free.
    SystemFrame(Pfn),
}

impl WaitFor<'_> {
    /// Whether the thing waited for may still be held (for a system frame, the kernel
    /// knows; this says `true`). A kernel without wait queues can spin on it.
    pub fn may_be_held(&self) -> bool {
        match self {
            Self::DeviceFolio(folio) => folio.is_locked(),
            Self::SystemFrame(_) => true,
        }
    }
}

/// "wait for the lock of the device folio at device index 0x.." / "... of pfn 0x..".
impl fmt::Display for WaitFor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeviceFolio(folio) => write!(
                f,
                "wait for the lock of the device folio at {}",
                folio.index()
            ),
            Self::SystemFrame(pfn) => write!(f, "wait for the lock of {pfn}"),
        }
    }
}

impl fmt::Debug for WaitFor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeviceFolio(folio) => write!(f, "WaitFor::DeviceFolio({folio:?})"),
            Self::SystemFrame(pfn) => write!(f, "WaitFor::SystemFrame({pfn:?})"),
        }
    }
}

/// What the kernel does after [`handle_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum FaultOutcome<'a> {
    /// The entry was dealt with (the page migrated back, the device's exclusive access
    /// revoked): return from the fault and retry the access.
    Resolved,
    /// The entry changed meanwhile: retry the access.
    Retry,
    /// The page is locked by a migration or another fault: wait for it, then retry the
    /// access. Exactly one CPU migrates a page; the others wait here.
    Wait(WaitFor<'a>),
    /// Not an entry devpriv resolves (absent, present, swap, hw-poison, a marker, or an
    /// address the table does not translate): the kernel's own fault handling.
    NotDevicePrivate,
}

/// Handles a CPU fault at `va` (`write`: the access was a write) on `space`:
///
/// * a device-private entry: its page is looked up, referenced and try-locked; the
///   entry is checked again under the lock; the pagemap's driver is called
///   ([`DeviceDriver::migrate_to_ram`](crate::DeviceDriver::migrate_to_ram)) with no
///   page-table lock held, and migrates the page back; then the page is unlocked and
///   put. A page locked by someone else gives [`FaultOutcome::Wait`];
/// * a migration entry (of either kind): [`FaultOutcome::Wait`] on the page;
/// * a device-exclusive entry: the devices are notified (event
///   [`Clear`](crate::InvalidateEvent::Clear)) and the page is mapped again, writable;
/// * anything else: [`FaultOutcome::NotDevicePrivate`].
///
/// Fails with [`FaultError::BusError`] when the driver cannot bring the page back, or
/// the entry names a device page no registered pagemap (or driver) has.
pub fn handle_fault<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    va: u64,
    write: bool,
) -> Result<FaultOutcome<'a>, FaultError> {
    let table = space.table();
    let Ok((level, _)) = table.lookup(va) else {
        return Ok(FaultOutcome::NotDevicePrivate);
    };
    let Ok(slot) = table.slot(va, level) else {
        return Ok(FaultOutcome::Retry);
    };
    let raw = slot.raw();
    let Ok(Entry::Software(SoftwareEntry { kind, .. })) = slot.entry() else {
        return Ok(FaultOutcome::NotDevicePrivate);
    };
    match kind {
        SoftwareKind::DevicePrivate { index, .. } => {
            let page = space
                .devices()
                .lookup(index)
                .map_err(|_| FaultError::BusError)?;
            let locked = match page.try_lock() {
                Ok(locked) => locked,
                Err(TryLockError::Locked(folio)) => {
                    return Ok(FaultOutcome::Wait(WaitFor::DeviceFolio(folio)));
                }
                // Freed meanwhile: the entry is gone too.
                Err(_) => return Ok(FaultOutcome::Retry),
            };
            // Under the lock, the entry must still be this one.
            if slot.reload() != raw {
                return Ok(FaultOutcome::Retry);
            }
            let driver = space.devices().driver(page).ok_or(FaultError::BusError)?;
            let offset = (va - slot.va()) >> 12;
            // No page-table lock across the driver's call.
            drop(table);
            let faulting = DeviceIndex::new(index.number() + offset);
            let mut fault = CpuFault::new(space, va, write, level, faulting, locked);
            let result = driver.migrate_to_ram(&mut fault);
            // The fault page comes back from the migration locked: unlock and put it.
            drop(fault.into_page());
            result.map(|()| FaultOutcome::Resolved)
        }
        SoftwareKind::DeviceMigration { index, .. } => Ok(match space.devices().lookup(index) {
            Ok(page) => FaultOutcome::Wait(WaitFor::DeviceFolio(page.folio())),
            Err(_) => FaultOutcome::Retry,
        }),
        SoftwareKind::Migration { pfn, .. } => Ok(FaultOutcome::Wait(WaitFor::SystemFrame(pfn))),
        SoftwareKind::DeviceExclusive { pfn } => {
            Ok(restore_exclusive(space, &table, slot.va(), level, pfn))
        }
        _ => Ok(FaultOutcome::NotDevicePrivate),
    }
}

/// Handles a fault like [`handle_fault`], waiting (spinning) and retrying while the
/// page is locked or the entry changes: for kernels without wait queues, and for tests.
/// Returns [`FaultOutcome::Resolved`] or [`FaultOutcome::NotDevicePrivate`] (which
/// includes an entry someone else resolved meanwhile: retry the access).
pub fn handle_fault_spinning<'a, P: Platform>(
    space: &AddressSpace<'a, P>,
    va: u64,
    write: bool,
) -> Result<FaultOutcome<'a>, FaultError> {
    loop {
        match handle_fault(space, va, write)? {
            FaultOutcome::Wait(WaitFor::DeviceFolio(folio)) => {
                while folio.is_locked() {
                    crate::sync::spin_wait();
                }
            }
            FaultOutcome::Wait(WaitFor::SystemFrame(_)) => crate::sync::spin_wait(),
            FaultOutcome::Retry => {}
            outcome => return Ok(outcome),
        }
    }
}

//! Device memory as migration sees it: the device-private space, and for each registered
//! pagemap the driver that brings its pages back to system RAM when the CPU touches
//! them (Linux's `dev_pagemap_ops.migrate_to_ram`).

use core::fmt;

use devpriv_pagemap::{
    DevicePagemap, DevicePrivateSpace, LockedFolio, LookupError, Page, PagemapId, RegisterError,
    SLOTS, UnregisterError,
};
use devpriv_pte::{DeviceIndex, Level};

use crate::address_space::AddressSpace;
use crate::platform::Platform;
use crate::sync::RwLock;

/// Why a driver could not bring a faulting page back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// The page cannot be brought back: the faulting context gets a bus error
    /// (`VM_FAULT_SIGBUS`). Linux drivers must avoid this; so should ours.
    BusError,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the device page could not be brought back to system memory")
    }
}

impl core::error::Error for FaultError {}

/// The faulting device page, locked and referenced by the fault path, which the driver
/// lends to the migration that brings it back ([`MigrateVma::fault`](crate::MigrateVma)).
///
/// The migration takes the folio for its duration and puts back the folio (after a
/// split: the 4 KiB folio) that holds [`address`](Self::address), still locked: the
/// fault path unlocks and puts it when the driver returns, as Linux's does.
#[derive(Debug)]
pub struct FaultPage<'a> {
    address: u64,
    pub(crate) folio: Option<LockedFolio<'a>>,
}

impl<'a> FaultPage<'a> {
    pub(crate) fn new(address: u64, folio: LockedFolio<'a>) -> Self {
        Self {
            address,
            folio: Some(folio),
        }
    }

    /// The faulting virtual address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The faulting folio, unless a migration holds it now.
    pub fn folio(&self) -> Option<&LockedFolio<'a>> {
        self.folio.as_ref()
    }
}

/// A CPU fault on a device-private entry, as the driver's
/// [`migrate_to_ram`](DeviceDriver::migrate_to_ram) receives it (Linux's `struct
/// vm_fault`, trimmed).
pub struct CpuFault<'f, 'a, P: Platform> {
    address_space: &'f AddressSpace<'a, P>,
    write: bool,
    level: Level,
    index: DeviceIndex,
    page: FaultPage<'a>,
}

impl<'f, 'a, P: Platform> CpuFault<'f, 'a, P> {
    pub(crate) fn new(
        address_space: &'f AddressSpace<'a, P>,
        address: u64,
        write: bool,
        level: Level,
        index: DeviceIndex,
        folio: LockedFolio<'a>,
    ) -> Self {
        Self {
            address_space,
            write,
            level,
            index,
            page: FaultPage::new(address, folio),
        }
    }

    /// The address space that faulted.
    pub fn address_space(&self) -> &'f AddressSpace<'a, P> {
        self.address_space
    }

    /// The faulting virtual address.
    pub fn address(&self) -> u64 {
        self.page.address
    }

    /// Whether the access was a write.
    pub fn is_write(&self) -> bool {
        self.write
    }

    /// The level of the device-private entry: [`Level::L2`] for a 2 MiB folio mapped
    /// whole (the driver may move all of it — Linux passes no PTE then — or migrate only
    /// the faulting 4 KiB page, which splits the folio), [`Level::L1`] for a 4 KiB one.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The device index of the faulting 4 KiB page.
    pub fn index(&self) -> DeviceIndex {
        self.index
    }

    /// The faulting page, to lend to the migration ([`MigrateVma::fault`](crate::MigrateVma)).
    pub fn page(&mut self) -> &mut FaultPage<'a> {
        &mut self.page
    }

    pub(crate) fn into_page(self) -> FaultPage<'a> {
        self.page
    }
}

impl<P: Platform> fmt::Debug for CpuFault<'_, '_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuFault")
            .field("address", &format_args!("{:#x}", self.page.address))
            .field("write", &self.write)
            .field("level", &self.level)
            .field("index", &self.index)
            .finish()
    }
}

/// The driver of a device pagemap, as far as CPU faults go.
pub trait DeviceDriver<P: Platform>: Sync {
    /// A CPU touched a page of this driver's pagemap: migrate it (and, at the driver's
    /// choice, its neighbours) back to system memory, typically with a
    /// [`Migration`](crate::Migration) over the faulting range with
    /// [`Select::DEVICE_PRIVATE`](crate::Select::DEVICE_PRIVATE), the pagemap's owner and
    /// [`CpuFault::page`] as the fault page.
    ///
    /// Called with the faulting folio locked and referenced and no page-table lock held.
    /// Returning `Ok` retries the access; if the page did not move, it faults again.
    fn migrate_to_ram(&self, fault: &mut CpuFault<'_, '_, P>) -> Result<(), FaultError>;
}

struct DriverSlot<'a, P: Platform> {
    id: PagemapId,
    driver: &'a dyn DeviceDriver<P>,
}

impl<P: Platform> Clone for DriverSlot<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Platform> Copy for DriverSlot<'_, P> {}

/// The device-private address space and the driver of each of its pagemaps: what the
/// fault path, migrations and eviction look device pages up in.
///
/// A kernel usually has one, borrowed by every [`AddressSpace`].
pub struct DeviceMemory<'a, P: Platform> {
    space: DevicePrivateSpace<'a>,
    drivers: RwLock<[Option<DriverSlot<'a, P>>; SLOTS]>,
}

impl<'a, P: Platform> DeviceMemory<'a, P> {
    /// Device memory with no pagemap.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            space: DevicePrivateSpace::new(),
            drivers: RwLock::new([None; SLOTS]),
        }
    }

    /// Device memory with no pagemap.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            space: DevicePrivateSpace::new(),
            drivers: RwLock::new([None; SLOTS]),
        }
    }

    /// Registers `pagemap` in the space and `driver` as the one that handles CPU faults
    /// on its pages. O(1).
    pub fn register(
        &self,
        pagemap: &'a DevicePagemap<'a>,
        driver: &'a dyn DeviceDriver<P>,
    ) -> Result<PagemapId, RegisterError> {
        let mut drivers = self.drivers.write();
        let id = self.space.register(pagemap)?;
        drivers[id.slot()] = Some(DriverSlot { id, driver });
        Ok(id)
    }

    /// Unregisters the pagemap `id` names; refused while any of its pages is allocated
    /// (evict them first: [`Migration::evict`](crate::Migration::evict)).
    pub fn unregister(&self, id: PagemapId) -> Result<&'a DevicePagemap<'a>, UnregisterError> {
        let mut drivers = self.drivers.write();
        let pagemap = self.space.unregister(id)?;
        drivers[id.slot()] = None;
        Ok(pagemap)
    }

    /// The page with device index `index`.
    #[inline]
    pub fn lookup(&self, index: DeviceIndex) -> Result<Page<'a>, LookupError> {
        self.space.lookup(index)
    }

    /// The driver of `page`'s pagemap.
    pub fn driver(&self, page: Page<'a>) -> Option<&'a dyn DeviceDriver<P>> {
        let id = page.pagemap().id()?;
        let slot = self.drivers.read()[id.slot()]?;
        (slot.id == id).then_some(slot.driver)
    }

    /// The device-private space.
    pub fn space(&self) -> &DevicePrivateSpace<'a> {
        &self.space
    }
}

impl<P: Platform> Default for DeviceMemory<'_, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> fmt::Debug for DeviceMemory<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceMemory")
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

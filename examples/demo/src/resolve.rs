//! The hook a fault on a software entry goes through.
//!
//! The fault handler ([`crate::Demo::handle_fault`]) finds a software entry, reports
//! it, and asks a [`Resolver`] what to map instead. [`DeviceResolver`] plays both the
//! device driver and the migration code: it copies device-private pages back from
//! [`DeviceMemory`] into fresh frames, ends migrations by mapping the frame again, and
//! revokes device-exclusive access. In the next step the devpriv-migrate fault path
//! implements this trait, with pages coming from a device pagemap; the handler does
//! not change.

use core::fmt;

use devpriv_pte::{
    DeviceAccess, DeviceIndex, MigrationAccess, PageSize, Pfn, SoftwareEntry, SoftwareKind,
};

use crate::device::{DeviceMemory, DevicePage, PAGE_WORDS};
use crate::fault::Access;
use crate::frames::FrameSource;

/// A CPU access hit a software entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The start of the page or block the entry covers.
    pub va: u64,
    /// The size the entry covers (4 KiB at level 1, 2 MiB at level 2).
    pub size: PageSize,
    /// The decoded entry.
    pub entry: SoftwareEntry,
    /// The access that faulted.
    pub access: Access,
}

/// What to map in place of the software entry; the handler installs it with a
/// compare-exchange and retries the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The first frame, aligned to the request's size.
    pub pfn: Pfn,
    /// Whether the mapping allows writes.
    pub writable: bool,
    /// Map it accessed (young).
    pub young: bool,
    /// Map it dirty.
    pub dirty: bool,
}

/// Why a software entry could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// This resolver does not handle the entry's kind (swap, hw-poison, markers).
    NotHandled(&'static str),
    /// The device index names no device page.
    UnknownIndex(DeviceIndex),
    /// No system memory for the page.
    OutOfFrames,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHandled(kind) => write!(f, "no resolver for {kind} entries"),
            Self::UnknownIndex(index) => write!(f, "unknown device index {:#x}", index.number()),
            Self::OutOfFrames => f.write_str("out of system memory"),
        }
    }
}

/// System memory as a resolver sees it: fresh frames it can fill.
pub struct SystemMemory<'a> {
    frames: &'a mut dyn FrameSource,
    phys_offset: u64,
}

impl<'a> SystemMemory<'a> {
    /// System memory drawing frames from `frames`, whose frames are reached at
    /// physical address + `phys_offset` (the [`FrameSource`] contract).
    pub fn new(frames: &'a mut dyn FrameSource, phys_offset: u64) -> Self {
        Self {
            frames,
            phys_offset,
        }
    }

    /// A fresh frame run of `size` holding a copy of `pages` (which must cover `size`).
    pub fn allocate_copy(&mut self, size: PageSize, pages: &[DevicePage]) -> Option<Pfn> {
        if pages.len() as u64 != size.frames() {
            return None;
        }
        let pfn = self.frames.allocate(size)?;
        let dst = pfn.phys_addr().wrapping_add(self.phys_offset) as *mut u64;
        let words = pages.len() * PAGE_WORDS;
        // SAFETY: the frame source returned `size` bytes of unused RAM at this address
        // (its safety contract), which `pages` (also `size` bytes) cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(pages.as_ptr().cast::<u64>(), dst, words) };
        Some(pfn)
    }
}

/// Decides what a fault on a software entry maps.
pub trait Resolver {
    /// Resolves `request`, drawing any new frame from `memory`; `log` receives one
    /// indented transcript line per step taken.
    fn resolve(
        &mut self,
        request: &Request,
        memory: &mut SystemMemory<'_>,
        log: &mut dyn fmt::Write,
    ) -> Result<Resolution, ResolveError>;
}

/// The demo's resolver: device-private pages come back from a [`DeviceMemory`].
pub struct DeviceResolver<'a> {
    device: DeviceMemory<'a>,
}

impl<'a> DeviceResolver<'a> {
    /// A resolver over `device`.
    pub fn new(device: DeviceMemory<'a>) -> Self {
        Self { device }
    }

    /// The device memory.
    pub fn device(&self) -> &DeviceMemory<'a> {
        &self.device
    }

    /// Copies the device pages behind `index` into fresh system memory.
    fn migrate_to_ram(
        &mut self,
        index: DeviceIndex,
        size: PageSize,
        memory: &mut SystemMemory<'_>,
        log: &mut dyn fmt::Write,
    ) -> Result<Pfn, ResolveError> {
        let count = size.frames() as usize;
        let pages = self
            .device
            .pages(index, count)
            .ok_or(ResolveError::UnknownIndex(index))?;
        let pfn = memory
            .allocate_copy(size, pages)
            .ok_or(ResolveError::OutOfFrames)?;
        self.device.note_migrated(count as u64);
        let _ = writeln!(
            log,
            "    migrate to RAM: {count} device page(s) from index {} copied to frame {:#x}",
            index.number(),
            pfn.phys_addr()
        );
        Ok(pfn)
    }
}

impl Resolver for DeviceResolver<'_> {
    fn resolve(
        &mut self,
        request: &Request,
        memory: &mut SystemMemory<'_>,
        log: &mut dyn fmt::Write,
    ) -> Result<Resolution, ResolveError> {
        match request.entry.kind {
            SoftwareKind::DevicePrivate { access, index } => {
                let pfn = self.migrate_to_ram(index, request.size, memory, log)?;
                let writable = access == DeviceAccess::Write;
                Ok(Resolution {
                    pfn,
                    writable,
                    young: true,
                    dirty: writable && request.access == Access::Write,
                })
            }
            SoftwareKind::DeviceMigration {
                access,
                index,
                young,
                dirty,
            } => {
                let _ = writeln!(
                    log,
                    "    wait for the migration of device index {} to finish",
                    index.number()
                );
                let pfn = self.migrate_to_ram(index, request.size, memory, log)?;
                Ok(Resolution {
                    pfn,
                    writable: access == MigrationAccess::Write,
                    young,
                    dirty,
                })
            }
            SoftwareKind::Migration {
                access,
                pfn,
                young,
                dirty,
            } => {
                let writable = access == MigrationAccess::Write;
                let _ = writeln!(
                    log,
                    "    wait for the migration of frame {:#x} to finish; map it {} again",
                    pfn.phys_addr(),
                    if writable { "writable" } else { "read-only" }
                );
                Ok(Resolution {
                    pfn,
                    writable,
                    young,
                    dirty,
                })
            }
            SoftwareKind::DeviceExclusive { pfn } => {
                let _ = writeln!(
                    log,
                    "    revoke the device's exclusive access; map frame {:#x} writable again",
                    pfn.phys_addr()
                );
                Ok(Resolution {
                    pfn,
                    writable: true,
                    young: true,
                    dirty: false,
                })
            }
            other => Err(ResolveError::NotHandled(other.name())),
        }
    }
}

/// The report line for a software entry, as the transcript prints it:
/// `device-private write, index 3`, `migration write, pfn 0x1234`, ...
pub struct EntryReport<'a>(pub &'a SoftwareKind);

impl fmt::Display for EntryReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn migration(access: MigrationAccess) -> &'static str {
            match access {
                MigrationAccess::Read => "read",
                MigrationAccess::ReadExclusive => "read-exclusive",
                MigrationAccess::Write => "write",
            }
        }
        match *self.0 {
            SoftwareKind::DevicePrivate { access, index } => {
                let access = match access {
                    DeviceAccess::Read => "read",
                    DeviceAccess::Write => "write",
                };
                write!(f, "device-private {access}, index {}", index.number())
            }
            SoftwareKind::DeviceMigration { access, index, .. } => write!(
                f,
                "device-private migration {}, index {}",
                migration(access),
                index.number()
            ),
            SoftwareKind::Migration { access, pfn, .. } => {
                write!(
                    f,
                    "migration {}, pfn {:#x}",
                    migration(access),
                    pfn.number()
                )
            }
            SoftwareKind::DeviceExclusive { pfn } => {
                write!(f, "device-exclusive, pfn {:#x}", pfn.number())
            }
            ref other => f.write_str(other.name()),
        }
    }
}

//! Splitting the 2 MiB page a range edge cuts through, so that `munmap` and `mprotect`
//! of part of a huge page work (Linux splits the PMD, and the folio, there too).

use devpriv_pagemap::Owner;
use devpriv_pte::{Entry, Level, PageSize, SoftwareEntry, SoftwareKind};

use super::{MigrateVma, Migration};
use crate::address_space::AddressSpace;
use crate::platform::Platform;
use crate::words::{MigratePfn, Select};

/// The owner a split of system memory names in its notifier invalidation: no device's.
const NO_DEVICE: Owner = Owner::new(0);

/// If `va` lies inside (not at the start of) a 2 MiB entry — a present page of system
/// memory or a device-private page — splits it into 512 4 KiB entries, splitting the
/// frame or device folio behind it too.
///
/// It is a migration of the one page at `va` that moves nothing: collecting the page
/// out of a 2 MiB entry splits the entry, and finalizing it without a destination puts
/// all 512 pages back as 4 KiB entries. A page that is busy (locked by a migration or
/// fault) is left whole; callers look again and retry.
pub(crate) fn split_block<P: Platform>(space: &AddressSpace<'_, P>, va: u64) {
    if va & (PageSize::Size2MiB.bytes() - 1) != 0 {
        split_huge_page(space, va);
    }
}

/// Splits the 2 MiB entry that maps `va` (a present page of system memory or a
/// device-private page) into 512 4 KiB entries, and the frame or folio behind it; any
/// other entry is left alone, and so is a page that is busy.
pub(crate) fn split_huge_page<P: Platform>(space: &AddressSpace<'_, P>, va: u64) {
    let page = va & !0xfff;
    let (select, owner) = match space.read().lookup(page) {
        Ok((Level::L2, Entry::Leaf { .. })) => (Select::SYSTEM, NO_DEVICE),
        Ok((
            Level::L2,
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DevicePrivate { index, .. },
                ..
            }),
        )) => match space.devices().lookup(index) {
            Ok(device_page) => (Select::DEVICE_PRIVATE, device_page.pagemap().owner()),
            Err(_) => return,
        },
        _ => return,
    };
    let mut src = [MigratePfn::EMPTY];
    let mut dst = [MigratePfn::EMPTY];
    if let Ok(migration) = Migration::setup(MigrateVma {
        address_space: space,
        start: page,
        end: page + 4096,
        select,
        owner,
        fault: None,
        src: &mut src,
        dst: &mut dst,
    }) {
        migration.pages().finalize();
    }
}

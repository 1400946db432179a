//! What a migration holds, and how it lets go: device folios (a reference and the lock
//! each, recorded by the source and destination words), system frames (the lock of
//! each source, every destination), and the fault page it borrowed.

use devpriv_pagemap::{Folio, FolioRef, LockedFolio};
use devpriv_pte::{DeviceIndex, PageSize, Pfn};

use super::{DestinationError, Inner, Scope};
use crate::address_space::AddressSpace;
use crate::platform::{Platform, SystemMemory};
use crate::words::{MigratePfn, PageTarget};

impl<'m, 'a, P: Platform> Inner<'m, 'a, P> {
    /// The folio whose head is `index`, which a word records as held.
    pub(crate) fn held_view(&self, index: DeviceIndex) -> Folio<'a> {
        self.devices
            .lookup(index)
            .expect("a held device folio's pagemap stays registered")
            .folio()
    }

    /// Takes back the handle of the folio whose head is `index`.
    ///
    /// # Safety
    ///
    /// A word of this migration records the folio as held (a collected device source,
    /// or a device destination), and the caller clears or rewrites that word so that
    /// the handle is not taken twice.
    pub(crate) unsafe fn take_held(&self, index: DeviceIndex) -> LockedFolio<'a> {
        let view = self.held_view(index);
        // SAFETY: the caller's contract: the migration owns one reference and the lock
        // of this folio, recorded by one word only, which the caller gives up.
        unsafe { LockedFolio::from_raw(view) }
    }

    /// Whether `[va, va + size)` holds the fault address.
    fn holds_fault(&self, va: Option<u64>, size: PageSize) -> bool {
        match (&self.fault, va) {
            (Some(fault), Some(va)) => fault.address().wrapping_sub(va) < size.bytes(),
            _ => false,
        }
    }

    /// If `view` is the folio the fault page lent, takes it.
    pub(crate) fn take_fault_folio(&mut self, view: Folio<'a>) -> Option<LockedFolio<'a>> {
        let fault = self.fault.as_mut()?;
        if fault.folio.as_ref().is_some_and(|f| f.folio() == view) {
            fault.folio.take()
        } else {
            None
        }
    }

    /// Lets go of a device folio this migration no longer needs (it moved, or its entry
    /// is gone): back to the fault page if it holds the fault address at `va`, else
    /// unlocked and put (freeing it if nothing else holds it).
    pub(crate) fn release_device(&mut self, folio: LockedFolio<'a>, va: Option<u64>) {
        if self.holds_fault(va, folio.size())
            && let Some(fault) = self.fault.as_mut()
        {
            debug_assert!(fault.folio.is_none());
            fault.folio = Some(folio);
            return;
        }
        drop(folio);
    }

    /// Hands a device folio back to the entry that maps it at `va` again (its
    /// reference becomes the entry's); the lock goes back to the fault page, with a
    /// reference of its own, if the folio holds the fault address.
    pub(crate) fn give_to_entry(&mut self, folio: LockedFolio<'a>, va: Option<u64>) {
        if self.holds_fault(va, folio.size())
            && let Some(fault) = self.fault.as_mut()
            && let Ok(entry_ref) = folio.get()
        {
            let _ = entry_ref.into_raw();
            fault.folio = Some(folio);
            return;
        }
        let _ = folio.unlock().into_raw();
    }

    /// Gives up the reference an entry held, now that the migration holds the folio by
    /// its own handle (the entry was replaced by a migration entry, which holds none).
    pub(crate) fn drop_entry_reference(folio: Folio<'a>) {
        // SAFETY: every device-private entry holds one reference to its folio; the
        // caller replaced that entry by a migration entry, which holds none, so the
        // reference is the caller's. The caller's own handle keeps the folio alive.
        drop(unsafe { FolioRef::from_raw(folio) });
    }

    /// Releases the destination of page `index` (if any) and clears its word.
    pub(crate) fn release_destination(&mut self, index: usize) {
        let word = core::mem::take(&mut self.dst[index]);
        match word.target() {
            // SAFETY: a device destination word records a folio the migration holds,
            // and the word was just cleared.
            Some(PageTarget::Device(folio)) => drop(unsafe { self.take_held(folio) }),
            Some(PageTarget::System(pfn)) => self.system.free(pfn, word.size()),
            None => {}
        }
    }

    /// Releases a collected system source: unlocked, and freed unless mapped again.
    pub(crate) fn release_system(&self, pfn: Pfn, size: PageSize, free: bool) {
        self.system.unlock(pfn);
        if free {
            self.system.free(pfn, size);
        }
    }

    /// Whether a destination may be set for page `index`: its source is migrating, or
    /// it is one of the 512 pages of a migrating 2 MiB source (which the end of the
    /// migration is then told to look at).
    fn destination_allowed(&mut self, index: usize) -> Result<(), DestinationError> {
        let pages = self.src.len();
        if index >= pages {
            return Err(DestinationError::IndexOutOfRange { index, pages });
        }
        if self.src[index].is_migrating() {
            return Ok(());
        }
        // The 511 words after a 2 MiB source are 0: look back for its first word.
        for back in 1..512.min(index + 1) {
            let w = self.src[index - back];
            if w != MigratePfn::EMPTY {
                return if w.is_compound() && w.is_migrating() {
                    self.inner_destinations = true;
                    Ok(())
                } else {
                    Err(DestinationError::NotMigrating { index })
                };
            }
        }
        Err(DestinationError::NotMigrating { index })
    }

    pub(crate) fn set_device_destination(
        &mut self,
        index: usize,
        folio: LockedFolio<'a>,
    ) -> Result<(), (LockedFolio<'a>, DestinationError)> {
        if let Err(e) = self.destination_allowed(index) {
            return Err((folio, e));
        }
        // A destination is mapped nowhere. (Its reference count says nothing: another
        // CPU may hold a transient reference, trying a lock it will not get.)
        if folio.reverse_map().is_some() {
            return Err((folio, DestinationError::InUse));
        }
        let known = self
            .devices
            .lookup(folio.index())
            .is_ok_and(|page| core::ptr::eq(page.pagemap(), folio.pagemap()));
        if !known {
            return Err((folio, DestinationError::ForeignPagemap));
        }
        self.release_destination(index);
        let mut word = MigratePfn::device(folio.index());
        if folio.size() == PageSize::Size2MiB {
            word = word.with(MigratePfn::COMPOUND);
        }
        self.dst[index] = word;
        let _ = folio.into_raw();
        Ok(())
    }

    pub(crate) fn set_system_destination(
        &mut self,
        index: usize,
        pfn: Pfn,
        size: PageSize,
    ) -> Result<(), DestinationError> {
        self.destination_allowed(index)?;
        if size == PageSize::Size1GiB {
            return Err(DestinationError::UnsupportedSize(size));
        }
        if !pfn.is_aligned(size.frames()) {
            return Err(DestinationError::UnalignedFrame { pfn });
        }
        self.release_destination(index);
        let mut word = MigratePfn::system(pfn);
        if size == PageSize::Size2MiB {
            word = word.with(MigratePfn::COMPOUND);
        }
        self.dst[index] = word;
        Ok(())
    }

    /// Where the page of collected source word `index` is mapped: its address space
    /// and virtual address (by position in a range migration, by the folio's reverse
    /// map in an eviction).
    pub(crate) fn location(&self, index: usize) -> Option<(&'m AddressSpace<'a, P>, u64)> {
        match &self.scope {
            Scope::Range { space, start, .. } => Some((*space, start + ((index as u64) << 12))),
            Scope::Device { spaces, .. } => {
                let Some(PageTarget::Device(head)) = self.src[index].target() else {
                    return None;
                };
                let rmap = self.held_view(head).reverse_map()?;
                let space = spaces.address_space(rmap.address_space())?;
                Some((space, space.va_of(rmap)))
            }
        }
    }
}

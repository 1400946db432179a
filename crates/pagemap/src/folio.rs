//! Device pages and folios: references, locks, reverse maps and splitting.
//!
//! Rules (the same as Linux's for device-private folios), kept by the types:
//! - a folio is one 4 KiB page or one 2 MiB chunk of 512 pages; its reference count,
//!   lock and reverse map live in its head page. A tail page finds its head by
//!   arithmetic (the start of its 2 MiB chunk);
//! - [`Page`] and [`Folio`] are plain views for lookups; they own nothing;
//! - a reference is owned by a [`FolioRef`]: [`Page::try_get`] makes one for a caller
//!   that holds none (it fails on a free page), [`FolioRef::get`] another one; dropping
//!   the last calls the driver's [`folio_free`](crate::PagemapOps::folio_free) and
//!   returns the folio to the allocator;
//! - the lock is owned by a [`LockedFolio`], which also owns a reference:
//!   [`FolioRef::trylock`] makes one, dropping it unlocks and puts, so a locked folio is
//!   never freed and never left locked by accident; the reverse map changes only
//!   through it;
//! - a reference or a lock that something else holds for a while (a page-table entry, a
//!   migration's bookkeeping) leaves its handle with `into_raw` and comes back with the
//!   `unsafe` `from_raw`.

use core::fmt;

use devpriv_pte::{DeviceIndex, PageSize};

use crate::allocator::CHUNK_PAGES;
use crate::error::FolioError;
use crate::meta::{DriverWord, PageMeta, ReverseMap, word};
use crate::pagemap::DevicePagemap;
use crate::space::SLOT_PAGE_MASK;
use crate::sync::{AtomicU64, Ordering};

/// A page of a registered pagemap, named by its device index. A plain handle: it holds
/// no reference.
#[derive(Clone, Copy)]
pub struct Page<'a> {
    pagemap: &'a DevicePagemap<'a>,
    index: DeviceIndex,
}

impl<'a> Page<'a> {
    pub(crate) fn new(pagemap: &'a DevicePagemap<'a>, index: DeviceIndex) -> Self {
        Self { pagemap, index }
    }

    /// The pagemap the page belongs to (Linux's `page_pgmap`).
    pub fn pagemap(self) -> &'a DevicePagemap<'a> {
        self.pagemap
    }

    /// The page's device index (Linux's `device_private_page_to_offset`).
    pub fn index(self) -> DeviceIndex {
        self.index
    }

    /// The page's number within its pagemap.
    pub fn number(self) -> u64 {
        self.index.number() & SLOT_PAGE_MASK
    }

    fn meta(self) -> &'a PageMeta {
        &self.pagemap.meta[self.number() as usize]
    }

    /// The page's driver-private word, if its pagemap has driver words.
    pub fn driver_word(self) -> Option<&'a DriverWord> {
        self.pagemap.driver_word(self.number())
    }

    /// The folio the page belongs to now, without taking a reference: stable only while
    /// the caller holds a reference to it.
    pub fn folio(self) -> Folio<'a> {
        let (head, large) = self.resolve();
        Folio::new(head, large)
    }

    /// The head page of the folio containing this page, and whether it is 2 MiB.
    fn resolve(self) -> (Page<'a>, bool) {
        let number = self.number();
        if number < self.pagemap.chunked_pages && number & (CHUNK_PAGES - 1) != 0 {
            let head_number = number & !(CHUNK_PAGES - 1);
            let w = self.pagemap.meta[head_number as usize]
                .state
                .load(Ordering::Acquire);
            if w & (word::ALLOCATED | word::LARGE) == word::ALLOCATED | word::LARGE {
                let head_index = DeviceIndex::new(self.index.number() - (number - head_number));
                return (Page::new(self.pagemap, head_index), true);
            }
        }
        let w = self.meta().state.load(Ordering::Acquire);
        (self, w & word::LARGE != 0)
    }

    /// Takes a reference to the page's folio if it is allocated; fails on a free page
    /// (Linux's `folio_try_get`). The caller need not hold a reference.
    ///
    /// It also fails, with [`FolioError::NotAllocated`], on a folio whose count is
    /// frozen at zero: one being freed, or a 2 MiB folio in the middle of
    /// [`LockedFolio::split`] (Linux's `folio_ref_freeze` has the same effect).
    pub fn try_get(self) -> Result<FolioRef<'a>, FolioError> {
        match self.try_get_with(false) {
            Ok(folio) => Ok(FolioRef(folio)),
            Err(TryLockError::Free) => Err(FolioError::NotAllocated),
            Err(TryLockError::Overflow) => Err(FolioError::RefcountOverflow),
            Err(TryLockError::Locked(_)) => unreachable!("no lock asked for"),
        }
    }

    /// Takes a reference to the page's folio and its lock in one step (Linux's
    /// `folio_try_get` + `folio_trylock`, with one atomic operation where those take
    /// two): fails on a free folio, and on a locked one, which it names so that the
    /// caller can wait for it.
    pub fn try_lock(self) -> Result<LockedFolio<'a>, TryLockError<'a>> {
        self.try_get_with(true).map(LockedFolio)
    }

    /// One reference more on the page's folio, and its lock too if `lock`.
    #[inline]
    fn try_get_with(self, lock: bool) -> Result<Folio<'a>, TryLockError<'a>> {
        loop {
            let (head, large) = self.resolve();
            let state = &head.meta().state;
            let w = state.load(Ordering::Acquire);
            if (w & word::LARGE != 0) != large {
                continue; // the folio changed shape under us; resolve again
            }
            if w & word::ALLOCATED == 0 || word::refs(w) == 0 {
                return Err(TryLockError::Free);
            }
            if word::refs(w) == word::REF_MAX {
                return Err(TryLockError::Overflow);
            }
            let folio = Folio::new(head, large);
            if lock && w & word::LOCKED != 0 {
                return Err(TryLockError::Locked(folio));
            }
            let new = (w + 1) | if lock { word::LOCKED } else { 0 };
            if state
                .compare_exchange_weak(w, new, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(folio);
            }
        }
    }
}

impl fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Page({:?})", self.index)
    }
}

impl PartialEq for Page<'_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.pagemap, other.pagemap) && self.index == other.index
    }
}

impl Eq for Page<'_> {}

/// A device folio: one 4 KiB page or a 2 MiB run of 512, named by its head page.
///
/// A plain view: it holds no reference and no lock, so what it reports (reference count,
/// lock, reverse map, even its size) is stable only while someone holds a reference. The
/// owning handles are [`FolioRef`] (one reference) and [`LockedFolio`] (one reference and
/// the lock); both dereference to this view.
#[derive(Clone, Copy)]
pub struct Folio<'a> {
    pagemap: &'a DevicePagemap<'a>,
    /// The head's device index, with [`Folio::LARGE_BIT`] set for a 2 MiB folio (16
    /// bytes in all, so a folio travels in two registers).
    raw: u64,
}

impl<'a> Folio<'a> {
    const LARGE_BIT: u64 = 1 << 63;

    pub(crate) fn new(head: Page<'a>, large: bool) -> Self {
        Self {
            pagemap: head.pagemap,
            raw: head.index.number() | if large { Self::LARGE_BIT } else { 0 },
        }
    }

    #[inline]
    fn is_large(self) -> bool {
        self.raw & Self::LARGE_BIT != 0
    }

    /// The head page.
    pub fn head(self) -> Page<'a> {
        Page::new(self.pagemap, DeviceIndex::new(self.raw & !Self::LARGE_BIT))
    }

    /// The device index of the head page.
    pub fn index(self) -> DeviceIndex {
        self.head().index
    }

    /// The folio's size.
    pub fn size(self) -> PageSize {
        if self.is_large() {
            PageSize::Size2MiB
        } else {
            PageSize::Size4KiB
        }
    }

    /// Pages in the folio (1 or 512).
    pub fn pages(self) -> u64 {
        if self.is_large() { CHUNK_PAGES } else { 1 }
    }

    /// Page `i` of the folio (0 is the head), if `i < pages()`.
    pub fn page(self, i: u64) -> Option<Page<'a>> {
        (i < self.pages()).then(|| {
            Page::new(
                self.pagemap,
                DeviceIndex::new(self.head().index.number() + i),
            )
        })
    }

    /// Whether device index `index` lies in the folio.
    pub fn contains(self, index: DeviceIndex) -> bool {
        index.number().wrapping_sub(self.index().number()) < self.pages()
    }

    /// The pagemap the folio belongs to.
    pub fn pagemap(self) -> &'a DevicePagemap<'a> {
        self.pagemap
    }

    fn state(self) -> &'a AtomicU64 {
        &self.head().meta().state
    }

    /// The reference count now (0 for a free folio).
    pub fn refcount(self) -> u64 {
        let w = self.state().load(Ordering::Acquire);
        if w & word::ALLOCATED == 0 {
            0
        } else {
            word::refs(w)
        }
    }

    /// Whether the folio is locked now.
    pub fn is_locked(self) -> bool {
        self.state().load(Ordering::Acquire) & word::LOCKED != 0
    }

    /// The folio's reverse map (which address space and virtual page map it), as last
    /// recorded under the folio lock ([`LockedFolio::set_reverse_map`]).
    pub fn reverse_map(self) -> Option<ReverseMap> {
        ReverseMap::decode(self.head().meta().rmap.load(Ordering::Acquire))
    }

    /// Applies `f` to the head word in a compare-exchange loop; `f` returns the new word
    /// or the error to report.
    #[inline]
    fn update(
        self,
        success: Ordering,
        mut f: impl FnMut(u64) -> Result<u64, FolioError>,
    ) -> Result<u64, FolioError> {
        let state = self.state();
        let mut w = state.load(Ordering::Relaxed);
        loop {
            let new = f(w)?;
            match state.compare_exchange_weak(w, new, success, Ordering::Relaxed) {
                Ok(_) => return Ok(w),
                Err(now) => w = now,
            }
        }
    }

    /// Checks that the head word describes an allocated folio of this folio's size.
    fn check_allocated(self, w: u64) -> Result<(), FolioError> {
        if w & word::ALLOCATED == 0
            || word::refs(w) == 0
            || (w & word::LARGE != 0) != self.is_large()
        {
            Err(FolioError::NotAllocated)
        } else {
            Ok(())
        }
    }

    /// Takes one more reference; the caller holds one (Linux's `folio_get`).
    fn get_ref(self) -> Result<FolioRef<'a>, FolioError> {
        self.update(Ordering::Relaxed, |w| {
            self.check_allocated(w)?;
            if word::refs(w) == word::REF_MAX {
                return Err(FolioError::RefcountOverflow);
            }
            Ok(w + 1)
        })?;
        Ok(FolioRef(self))
    }

    /// Drops one reference the caller owns and, if it was the last, frees the folio.
    ///
    /// Panics if no reference was held or the folio is locked by no one else's
    /// reference: both mean an owning handle was forged with `from_raw`.
    #[inline]
    fn put_owned(self) {
        match self.put_ref_word() {
            Ok(w) if word::refs(w) == 1 => self.free(w),
            Ok(_) => {}
            Err(e) => panic!("{self:?}: put of an owned reference failed: {e}"),
        }
    }

    /// Drops one reference; `Ok(true)` if it was the last (the caller then frees).
    #[inline]
    pub(crate) fn put_ref(self) -> Result<bool, FolioError> {
        Ok(word::refs(self.put_ref_word()?) == 1)
    }

    /// Drops one reference; returns the word before.
    #[inline]
    fn put_ref_word(self) -> Result<u64, FolioError> {
        self.update(Ordering::AcqRel, |w| {
            if w & word::ALLOCATED == 0 || word::refs(w) == 0 {
                return Err(FolioError::NotAllocated);
            }
            if (w & word::LARGE != 0) != self.is_large() {
                return Err(FolioError::NotAllocated);
            }
            // The lock is held with a reference: the last reference of a locked folio
            // is the lock holder's, who unlocks before putting.
            if word::refs(w) == 1 && w & word::LOCKED != 0 {
                return Err(FolioError::NotAllocated);
            }
            Ok(w - 1)
        })
    }

    /// The reference count reached zero (from the word `last`): tell the driver, then
    /// give the folio back.
    #[inline]
    fn free(self, last: u64) {
        let pagemap = self.pagemap;
        pagemap.ops.folio_free(self);
        let head = self.head().number();
        // `POOLED` does not change while the folio is allocated.
        if last & word::POOLED != 0 {
            pagemap.stash_put(head, self.is_large());
        } else {
            pagemap
                .alloc
                .lock()
                .release(pagemap.meta, head, self.is_large());
        }
    }

    /// Whether the folio belongs to a slot of its pagemap's stash (stable while the
    /// caller holds a reference).
    pub(crate) fn is_pooled(self) -> bool {
        self.state().load(Ordering::Relaxed) & word::POOLED != 0
    }

    /// Sets the lock bit; `Ok(false)` if it was set already. The caller holds a reference.
    fn trylock_bit(self) -> Result<bool, FolioError> {
        let result = self.update(Ordering::Acquire, |w| {
            self.check_allocated(w)?;
            Ok(w | word::LOCKED)
        })?;
        Ok(result & word::LOCKED == 0)
    }

    /// Clears the lock bit, which the caller holds.
    fn unlock_bit(self) {
        let old = self.state().fetch_and(!word::LOCKED, Ordering::Release);
        assert!(
            old & word::LOCKED != 0,
            "{self:?}: unlock of a folio that is not locked"
        );
    }
}

impl PartialEq for Folio<'_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.pagemap, other.pagemap) && self.raw == other.raw
    }
}

impl Eq for Folio<'_> {}

impl fmt::Debug for Folio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Folio({:?}, {:?})", self.head().index, self.size())
    }
}

/// One reference to a device folio, owned: dropping it puts the reference, and putting
/// the last one calls the driver's [`folio_free`](crate::PagemapOps::folio_free) and
/// returns the folio to the allocator (Linux's `folio_put`).
///
/// Made by [`Page::try_get`], [`DevicePagemap::alloc`](crate::DevicePagemap::alloc),
/// [`FolioRef::get`] and [`LockedFolio::unlock`]. A reference that something else holds
/// for a while — a page-table entry pointing at the folio, say — leaves the handle with
/// [`into_raw`](Self::into_raw) and comes back with [`from_raw`](Self::from_raw).
#[must_use = "dropping the handle puts the reference at once"]
pub struct FolioRef<'a>(Folio<'a>);

impl<'a> FolioRef<'a> {
    /// The folio.
    pub fn folio(&self) -> Folio<'a> {
        self.0
    }

    /// Takes another reference (Linux's `folio_get`).
    pub fn get(&self) -> Result<FolioRef<'a>, FolioError> {
        self.0.get_ref()
    }

    /// Tries to lock the folio (Linux's `folio_trylock`); gives the reference back if
    /// someone else holds the lock.
    pub fn trylock(self) -> Result<LockedFolio<'a>, FolioRef<'a>> {
        match self.0.trylock_bit() {
            Ok(true) => Ok(LockedFolio(self.into_raw())),
            _ => Err(self),
        }
    }

    /// Gives up the handle but not the reference: the caller records it elsewhere (a
    /// page-table entry holds it, say) and later turns it back into a handle with
    /// [`from_raw`](Self::from_raw).
    pub fn into_raw(self) -> Folio<'a> {
        let folio = self.0;
        core::mem::forget(self);
        folio
    }

    /// The handle for a reference that the caller holds by other means.
    ///
    /// # Safety
    ///
    /// The caller owns one reference to `folio` that no other handle owns: one that
    /// [`into_raw`](Self::into_raw) (or [`LockedFolio::into_raw`] followed by an unlock)
    /// left behind and that nothing has put since. Otherwise the folio could be freed —
    /// and its device memory reused — while something still uses it.
    pub unsafe fn from_raw(folio: Folio<'a>) -> Self {
        Self(folio)
    }
}

impl<'a> core::ops::Deref for FolioRef<'a> {
    type Target = Folio<'a>;

    fn deref(&self) -> &Folio<'a> {
        &self.0
    }
}

impl Drop for FolioRef<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.put_owned();
    }
}

impl fmt::Debug for FolioRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FolioRef({:?}, {:?})", self.0.index(), self.0.size())
    }
}

/// A locked device folio with one reference, owned: dropping it unlocks the folio and
/// puts the reference (Linux's `folio_unlock` + `folio_put`).
///
/// Made by [`FolioRef::trylock`] and
/// [`DevicePagemap::alloc_locked`](crate::DevicePagemap::alloc_locked) (a migration
/// destination). The folio's reverse map changes only through this handle.
#[must_use = "dropping the handle unlocks the folio and puts the reference at once"]
pub struct LockedFolio<'a>(Folio<'a>);

impl<'a> LockedFolio<'a> {
    /// The folio.
    pub fn folio(&self) -> Folio<'a> {
        self.0
    }

    /// Takes another reference (Linux's `folio_get`).
    pub fn get(&self) -> Result<FolioRef<'a>, FolioError> {
        self.0.get_ref()
    }

    /// Unlocks the folio, keeping the reference.
    pub fn unlock(self) -> FolioRef<'a> {
        let folio = self.into_raw();
        folio.unlock_bit();
        FolioRef(folio)
    }

    /// Records (or, with `None`, clears) which address space and virtual page map the
    /// folio.
    pub fn set_reverse_map(&self, rmap: Option<ReverseMap>) {
        self.0
            .head()
            .meta()
            .rmap
            .store(ReverseMap::encode(rmap), Ordering::Release);
    }

    /// Splits a 2 MiB folio into 512 4 KiB folios (Linux's split of a device-private
    /// folio in the middle of a migration), each locked with one reference, owned by the
    /// returned iterator in page order.
    ///
    /// The handle must hold the folio's only reference ([`FolioError::SplitBusy`]
    /// otherwise) and the folio must be 2 MiB ([`FolioError::SplitNotLarge`]); on error
    /// the handle comes back unchanged. The reverse map is carried over page by page.
    /// The driver's [`folio_split`](crate::PagemapOps::folio_split) is called once per
    /// new folio after the head, then once with no new folio, after the split.
    pub fn split(self) -> Result<SplitFolios<'a>, SplitError<'a>> {
        let folio = self.0;
        if !folio.is_large() {
            return Err(SplitError {
                folio: self,
                error: FolioError::SplitNotLarge,
            });
        }
        let pagemap = folio.pagemap;
        let mut alloc = pagemap.alloc.lock();
        // Freeze: the only reference moves out of the count, so that try_get fails on
        // the folio while its pages change shape.
        let frozen = folio.update(Ordering::Acquire, |w| {
            folio.check_allocated(w)?;
            if word::refs(w) != 1 {
                return Err(FolioError::SplitBusy {
                    refs: word::refs(w),
                });
            }
            Ok(w - 1)
        });
        if let Err(error) = frozen {
            drop(alloc);
            return Err(SplitError { folio: self, error });
        }
        let rmap = folio.reverse_map();
        let base = folio.head().number() as usize;
        for i in 1..CHUNK_PAGES as usize {
            let m = &pagemap.meta[base + i];
            let r = rmap.and_then(|r| r.offset(i as u64));
            m.rmap.store(ReverseMap::encode(r), Ordering::Relaxed);
            m.state
                .fetch_or(word::ALLOCATED | word::LOCKED | 1, Ordering::Release);
        }
        alloc.split_large(pagemap.meta, folio.head().number());
        // A stashed 2 MiB folio leaves its slot: its pages go back to the allocator.
        let pooled = folio.state().load(Ordering::Relaxed) & word::POOLED;
        if pooled != 0 {
            pagemap
                .large_stash
                .forget(folio.head().number() / CHUNK_PAGES, folio.head().number());
        }
        // Unfreeze as a 4 KiB folio: this publishes the tails as folios of their own.
        folio
            .state()
            .fetch_xor(word::LARGE | pooled | 1, Ordering::Release);
        drop(alloc);
        let head = Folio::new(folio.head(), false);
        for i in 1..CHUNK_PAGES {
            let tail = Folio::new(folio.page(i).expect("a 2 MiB folio has 512 pages"), false);
            pagemap.ops.folio_split(head, Some(tail));
        }
        pagemap.ops.folio_split(head, None);
        core::mem::forget(self);
        Ok(SplitFolios { head, next: 0 })
    }

    /// Gives up the handle but not the reference and the lock: the caller records them
    /// elsewhere and later turns them back into a handle with
    /// [`from_raw`](Self::from_raw).
    pub fn into_raw(self) -> Folio<'a> {
        let folio = self.0;
        core::mem::forget(self);
        folio
    }

    /// The handle for a reference and a lock that the caller holds by other means.
    ///
    /// # Safety
    ///
    /// The caller owns one reference to `folio` and its lock, and no other handle owns
    /// them: what [`into_raw`](Self::into_raw) left behind, with nothing put or
    /// unlocked since. Otherwise the folio could be unlocked under its lock holder, or
    /// freed while still in use.
    pub unsafe fn from_raw(folio: Folio<'a>) -> Self {
        Self(folio)
    }
}

impl<'a> core::ops::Deref for LockedFolio<'a> {
    type Target = Folio<'a>;

    fn deref(&self) -> &Folio<'a> {
        &self.0
    }
}

impl Drop for LockedFolio<'_> {
    fn drop(&mut self) {
        // Unlock and put in one atomic operation.
        let folio = self.0;
        let old = folio.update(Ordering::AcqRel, |w| {
            folio.check_allocated(w)?;
            if w & word::LOCKED == 0 {
                return Err(FolioError::NotAllocated);
            }
            Ok((w & !word::LOCKED) - 1)
        });
        match old {
            Ok(w) if word::refs(w) == 1 => folio.free(w),
            Ok(_) => {}
            Err(e) => panic!("{folio:?}: unlock and put of an owned lock failed: {e}"),
        }
    }
}

/// Why [`Page::try_lock`] got neither reference nor lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryLockError<'a> {
    /// The folio is free (or being freed, or frozen for a split).
    Free,
    /// Someone else holds the lock: wait until `Folio::is_locked` is false.
    Locked(Folio<'a>),
    /// The reference count would overflow.
    Overflow,
}

impl fmt::Debug for LockedFolio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockedFolio({:?}, {:?})", self.0.index(), self.0.size())
    }
}

/// Why [`LockedFolio::split`] did not split; the handle comes back unchanged.
#[derive(Debug)]
pub struct SplitError<'a> {
    /// The folio, still locked and referenced.
    pub folio: LockedFolio<'a>,
    /// Why.
    pub error: FolioError,
}

/// The 512 locked 4 KiB folios of a split, in page order: each one locked with one
/// reference the iterator owns until it yields it. Dropping the iterator unlocks and
/// puts the folios not yet taken.
pub struct SplitFolios<'a> {
    /// The former head, now a 4 KiB folio.
    head: Folio<'a>,
    next: u64,
}

impl<'a> SplitFolios<'a> {
    /// The folio of the former head page, now 4 KiB.
    pub fn head(&self) -> Folio<'a> {
        self.head
    }
}

impl<'a> Iterator for SplitFolios<'a> {
    type Item = LockedFolio<'a>;

    fn next(&mut self) -> Option<LockedFolio<'a>> {
        if self.next == CHUNK_PAGES {
            return None;
        }
        let page = Page::new(
            self.head.pagemap,
            DeviceIndex::new(self.head.index().number() + self.next),
        );
        self.next += 1;
        Some(LockedFolio(Folio::new(page, false)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (CHUNK_PAGES - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for SplitFolios<'_> {}

impl Drop for SplitFolios<'_> {
    fn drop(&mut self) {
        for folio in self.by_ref() {
            drop(folio);
        }
    }
}

impl fmt::Debug for SplitFolios<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitFolios")
            .field("head", &self.head)
            .field("next", &self.next)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{DevicePrivateSpace, Owner, PagemapOps};

    struct NoDriver;
    impl PagemapOps for NoDriver {
        fn folio_free(&self, _: Folio<'_>) {}
    }

    /// 2^27 - 1 references are too many to take one by one in a test: set the count.
    #[test]
    fn refcount_overflow_is_an_error() {
        let mut meta = [const { PageMeta::new() }; 4];
        let pm = DevicePagemap::new(4, Owner::new(1), &NoDriver, &mut meta).unwrap();
        let space = DevicePrivateSpace::new();
        space.register(&pm).unwrap();
        let f = pm.alloc(PageSize::Size4KiB).unwrap();
        f.state().fetch_add(word::REF_MAX - 1, Ordering::Relaxed);
        assert_eq!(f.refcount(), word::REF_MAX);
        assert_eq!(f.get().err(), Some(FolioError::RefcountOverflow));
        assert_eq!(f.head().try_get().err(), Some(FolioError::RefcountOverflow));
        // The count is unchanged, and the lock bit next to it untouched.
        assert_eq!(f.refcount(), word::REF_MAX);
        assert!(!f.is_locked());
        f.state().fetch_sub(word::REF_MAX - 1, Ordering::Relaxed);
        drop(f);
        assert_eq!(pm.allocated_pages(), 0);
    }

    #[test]
    #[should_panic(expected = "put of an owned reference failed")]
    fn a_forged_handle_is_caught_at_drop() {
        let mut meta = [const { PageMeta::new() }; 4];
        let pm = DevicePagemap::new(4, Owner::new(1), &NoDriver, &mut meta).unwrap();
        let space = DevicePrivateSpace::new();
        space.register(&pm).unwrap();
        let folio = pm.alloc(PageSize::Size4KiB).unwrap().into_raw();
        // SAFETY: deliberately wrong: `folio`'s one reference is claimed by two handles,
        // so the first frees it and the second finds it free. The metadata is atomics,
        // so this misuse is caught, not undefined.
        let (a, b) = unsafe { (FolioRef::from_raw(folio), FolioRef::from_raw(folio)) };
        drop(a);
        drop(b);
    }
}

//! Device pages and folios: references, locks, reverse maps and splitting.
//!
//! Rules (the same as Linux's for device-private folios):
//! - a folio is one 4 KiB page or one 2 MiB chunk of 512 pages; its reference count,
//!   lock and reverse map live in its head page. A tail page finds its head by
//!   arithmetic (the start of its 2 MiB chunk);
//! - [`Folio::get`] needs a reference already held; [`Page::try_get`] is for a caller
//!   that holds none (it fails on a free page); [`Folio::put`] of the last reference
//!   calls the driver's [`folio_free`](crate::PagemapOps::folio_free) and returns the
//!   folio to the allocator;
//! - the lock is a try-lock ([`Folio::trylock`]); only a referenced folio can be locked,
//!   and a locked folio is never freed (putting its last reference is an error).

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
    /// [`Folio::split`] (Linux's `folio_ref_freeze` has the same effect).
    pub fn try_get(self) -> Result<Folio<'a>, FolioError> {
        loop {
            let (head, large) = self.resolve();
            let state = &head.meta().state;
            let w = state.load(Ordering::Acquire);
            if (w & word::LARGE != 0) != large {
                continue; // the folio changed shape under us; resolve again
            }
            if w & word::ALLOCATED == 0 || word::refs(w) == 0 {
                return Err(FolioError::NotAllocated);
            }
            if word::refs(w) == word::REF_MAX {
                return Err(FolioError::RefcountOverflow);
            }
            if state
                .compare_exchange_weak(w, w + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Folio::new(head, large));
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
/// A plain handle: it holds no reference by itself; the reference-count methods say
/// what the caller owns.
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

    /// Takes one more reference; the caller must already hold one (Linux's `folio_get`).
    pub fn get(self) -> Result<(), FolioError> {
        self.update(Ordering::Relaxed, |w| {
            self.check_allocated(w)?;
            if word::refs(w) == word::REF_MAX {
                return Err(FolioError::RefcountOverflow);
            }
            Ok(w + 1)
        })
        .map(|_| ())
    }

    /// Puts one reference (Linux's `folio_put`). Putting the last one calls the driver's
    /// `folio_free` and returns the folio to the allocator; it is refused for a locked
    /// folio ([`FolioError::FreeLocked`], the reference stays held).
    pub fn put(self) -> Result<(), FolioError> {
        if self.put_ref()? {
            self.free();
        }
        Ok(())
    }

    /// Drops one reference; `Ok(true)` if it was the last (the caller then frees).
    pub(crate) fn put_ref(self) -> Result<bool, FolioError> {
        let old = self.update(Ordering::AcqRel, |w| {
            if w & word::ALLOCATED == 0 || word::refs(w) == 0 {
                return Err(FolioError::DoublePut);
            }
            if (w & word::LARGE != 0) != self.is_large() {
                return Err(FolioError::NotAllocated);
            }
            if word::refs(w) == 1 && w & word::LOCKED != 0 {
                return Err(FolioError::FreeLocked);
            }
            Ok(w - 1)
        })?;
        Ok(word::refs(old) == 1)
    }

    /// The reference count reached zero: tell the driver, then give the folio back.
    fn free(self) {
        let pagemap = self.pagemap;
        pagemap.ops.folio_free(self);
        pagemap
            .alloc
            .lock()
            .release(pagemap.meta, self.head().number(), self.is_large());
    }

    /// Tries to lock the folio; `Ok(false)` if someone else holds the lock. The caller
    /// must hold a reference (Linux's `folio_trylock`).
    pub fn trylock(self) -> Result<bool, FolioError> {
        let result = self.update(Ordering::Acquire, |w| {
            self.check_allocated(w)?;
            Ok(w | word::LOCKED)
        })?;
        Ok(result & word::LOCKED == 0)
    }

    /// Unlocks the folio (Linux's `folio_unlock`).
    pub fn unlock(self) -> Result<(), FolioError> {
        self.update(Ordering::Release, |w| {
            self.check_allocated(w)?;
            if w & word::LOCKED == 0 {
                return Err(FolioError::NotLocked);
            }
            Ok(w & !word::LOCKED)
        })
        .map(|_| ())
    }

    /// The folio's reverse map (which address space and virtual page map it).
    pub fn reverse_map(self) -> Option<ReverseMap> {
        ReverseMap::decode(self.head().meta().rmap.load(Ordering::Acquire))
    }

    /// Records (or, with `None`, clears) the folio's reverse map. The caller holds a
    /// reference.
    pub fn set_reverse_map(self, rmap: Option<ReverseMap>) -> Result<(), FolioError> {
        self.check_allocated(self.state().load(Ordering::Acquire))?;
        self.head()
            .meta()
            .rmap
            .store(ReverseMap::encode(rmap), Ordering::Release);
        Ok(())
    }

    /// Splits a 2 MiB folio into 512 4 KiB folios (Linux's split of a device-private
    /// folio in the middle of a migration). The caller holds the only reference and the
    /// lock; afterwards it holds one reference to, and the lock of, each of the 512 new
    /// folios (`self.page(i).folio()`; the head's handle is [`Folio::first_after_split`]).
    /// A reverse map is carried over page by page. Calls the driver's `folio_split`.
    pub fn split(self) -> Result<(), FolioError> {
        if !self.is_large() {
            return Err(FolioError::SplitNotLarge);
        }
        let pagemap = self.pagemap;
        let mut alloc = pagemap.alloc.lock();
        // Freeze: the only reference moves out of the count, so that try_get fails on
        // the folio while its pages change shape.
        self.update(Ordering::Acquire, |w| {
            self.check_allocated(w)?;
            if w & word::LOCKED == 0 {
                return Err(FolioError::SplitNotLocked);
            }
            if word::refs(w) != 1 {
                return Err(FolioError::SplitBusy {
                    refs: word::refs(w),
                });
            }
            Ok(w - 1)
        })?;
        let rmap = self.reverse_map();
        let base = self.head().number() as usize;
        for i in 1..CHUNK_PAGES as usize {
            let m = &pagemap.meta[base + i];
            let r = rmap.and_then(|r| r.offset(i as u64));
            m.rmap.store(ReverseMap::encode(r), Ordering::Relaxed);
            m.state
                .fetch_or(word::ALLOCATED | word::LOCKED | 1, Ordering::Release);
        }
        alloc.split_large(pagemap.meta, self.head().number());
        // Unfreeze as a 4 KiB folio: this publishes the tails as folios of their own.
        self.state().fetch_xor(word::LARGE | 1, Ordering::Release);
        drop(alloc);
        pagemap.ops.folio_split(self);
        Ok(())
    }

    /// The 4 KiB folio that the head page of this (former 2 MiB) folio is after
    /// [`Folio::split`].
    pub fn first_after_split(self) -> Folio<'a> {
        Folio::new(self.head(), false)
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{CpuFault, DevicePrivateSpace, FaultError, Owner, PagemapOps};

    struct NoDriver;
    impl PagemapOps for NoDriver {
        fn migrate_to_ram(&self, _: &CpuFault<'_>) -> Result<(), FaultError> {
            Ok(())
        }
        fn folio_free(&self, _: Folio<'_>) {}
    }

    /// 2^28 - 1 references are too many to take one by one in a test: set the count.
    #[test]
    fn refcount_overflow_is_an_error() {
        let meta = [const { PageMeta::new() }; 4];
        let pm = DevicePagemap::new(4, Owner::new(1), &NoDriver, &meta).unwrap();
        let space = DevicePrivateSpace::new();
        space.register(&pm).unwrap();
        let f = pm.alloc(PageSize::Size4KiB).unwrap();
        f.state().fetch_add(word::REF_MAX - 1, Ordering::Relaxed);
        assert_eq!(f.refcount(), word::REF_MAX);
        assert_eq!(f.get(), Err(FolioError::RefcountOverflow));
        assert_eq!(f.head().try_get(), Err(FolioError::RefcountOverflow));
        // The count is unchanged, and the lock bit next to it untouched.
        assert_eq!(f.refcount(), word::REF_MAX);
        assert!(!f.is_locked());
        f.state().fetch_sub(word::REF_MAX - 1, Ordering::Relaxed);
        f.put().unwrap();
        assert_eq!(pm.allocated_pages(), 0);
    }
}

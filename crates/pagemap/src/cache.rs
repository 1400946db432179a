//! A per-CPU (or per-thread) cache of free 4 KiB pages, like Linux's per-CPU page lists:
//! most allocations and frees through it take no lock and touch no shared allocator
//! state, so threads on different CPUs do not contend.
//!
//! Cached pages are free (not folios: `try_get` fails on them) but off the allocator's
//! free lists, and they count as allocated: a pagemap cannot be unregistered, and a
//! 2 MiB chunk is not whole, while a cache holds some of its pages. A cache gives its
//! pages back when dropped, or on [`PageCache::drain`].

use core::fmt;

use devpriv_pte::DeviceIndex;

use crate::LARGE_FOLIO_PAGES;
use crate::error::AllocError;
use crate::folio::{Folio, FolioRef, Page};
use crate::meta::word;
use crate::pagemap::{DevicePagemap, injected};
use crate::sync::Ordering;

/// The most pages a cache holds.
pub const PAGE_CACHE_CAPACITY: usize = 32;
/// How many pages a cache moves to or from the allocator at once.
const BATCH: usize = PAGE_CACHE_CAPACITY / 2;

/// A cache of free 4 KiB pages of one pagemap, owned by one CPU or thread (`&mut`).
pub struct PageCache<'a> {
    pagemap: &'a DevicePagemap<'a>,
    /// The index of the pagemap's page 0 (valid while the cache holds pages: the
    /// pagemap cannot be unregistered meanwhile).
    base: u64,
    pages: [u32; PAGE_CACHE_CAPACITY],
    len: usize,
}

impl<'a> PageCache<'a> {
    /// An empty cache for `pagemap`.
    pub fn new(pagemap: &'a DevicePagemap<'a>) -> Self {
        Self {
            pagemap,
            base: 0,
            pages: [0; PAGE_CACHE_CAPACITY],
            len: 0,
        }
    }

    /// The pagemap this cache serves.
    pub fn pagemap(&self) -> &'a DevicePagemap<'a> {
        self.pagemap
    }

    /// Pages held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The numbers (within the pagemap) of the pages held now.
    pub fn cached(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages[..self.len].iter().map(|&p| u64::from(p))
    }

    /// Allocates a 4 KiB folio with one reference, unlocked, from the cache (refilled
    /// from the allocator, a batch at a time, when empty). Same errors as
    /// [`DevicePagemap::alloc`], including injected failures.
    pub fn alloc(&mut self) -> Result<FolioRef<'a>, AllocError> {
        if injected(&self.pagemap.fail_small) {
            return Err(AllocError::Injected);
        }
        if self.len == 0 {
            self.refill()?;
        }
        self.len -= 1;
        let page = u64::from(self.pages[self.len]);
        let meta = &self.pagemap.meta[page as usize];
        meta.rmap.store(0, Ordering::Relaxed);
        // Reserved -> allocated with one reference. No one else writes the folio half
        // of a cached page.
        flip(self.pagemap, page, word::RESERVED | word::ALLOCATED | 1);
        let index = DeviceIndex::new(self.base + page);
        // SAFETY: the page just became a folio with one reference, which no handle owns.
        Ok(unsafe { FolioRef::from_raw(Folio::new(Page::new(self.pagemap, index), false)) })
    }

    /// Puts the reference `folio` owns, as dropping it would; if it was the last one of
    /// a 4 KiB folio of this cache's pagemap, the page goes into the cache (after the
    /// driver's `folio_free`) instead of back to the allocator.
    pub fn put(&mut self, folio: FolioRef<'a>) {
        if folio.pages() != 1 || !core::ptr::eq(folio.pagemap(), self.pagemap) {
            drop(folio);
            return;
        }
        let folio = folio.into_raw();
        match folio.put_ref() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => panic!("{folio:?}: put of an owned reference failed: {e}"),
        }
        self.pagemap.ops.folio_free(folio);
        if self.len == PAGE_CACHE_CAPACITY {
            self.drain_to(PAGE_CACHE_CAPACITY - BATCH);
        }
        let page = folio.head().number();
        // A folio of the pagemap's stash leaves it for the cache (both count the page as
        // allocated).
        let pooled = if folio.is_pooled() {
            self.pagemap.small_stash.forget(page, page);
            word::POOLED
        } else {
            0
        };
        // Allocated with no reference -> reserved. No one else writes the folio half at
        // reference count zero.
        flip(
            self.pagemap,
            page,
            word::ALLOCATED | pooled | word::RESERVED,
        );
        if self.len == 0 {
            self.base = folio.index().number() - page;
        }
        self.pages[self.len] = page as u32;
        self.len += 1;
    }

    /// Gives every cached page back to the allocator.
    pub fn drain(&mut self) {
        self.drain_to(0);
    }

    fn drain_to(&mut self, keep: usize) {
        if self.len <= keep {
            return;
        }
        let mut alloc = self.pagemap.alloc.lock();
        while self.len > keep {
            self.len -= 1;
            alloc.unreserve(self.pagemap.meta, u64::from(self.pages[self.len]));
        }
    }

    fn refill(&mut self) -> Result<(), AllocError> {
        let mut alloc = self.pagemap.alloc.lock();
        let Some(base) = self.pagemap.base() else {
            return Err(AllocError::NotRegistered);
        };
        self.base = base.number();
        let mut drained = false;
        while self.len < BATCH {
            match alloc.reserve_small(self.pagemap.meta) {
                Some(page) => {
                    self.pages[self.len] = page as u32;
                    self.len += 1;
                }
                // Out of pages: the stashes may hold what is missing.
                None if self.len == 0 && !drained => {
                    self.pagemap.drain_stashes(&mut alloc);
                    drained = true;
                }
                None => break,
            }
        }
        if self.len == 0 {
            Err(alloc.exhausted())
        } else {
            Ok(())
        }
    }
}

/// Flips `bits` of the folio half of a page's state word that only the caller writes.
///
/// The allocator half of pages 0, 1 and 2 of a full 2 MiB chunk may be changed by the
/// allocator (under its lock) at the same time, so there the flip is an atomic
/// exclusive-or; every other page's allocator half is always zero and never written,
/// so a plain store does.
#[inline]
fn flip(pagemap: &DevicePagemap<'_>, page: u64, bits: u64) {
    let state = &pagemap.meta[page as usize].state;
    if page < pagemap.chunked_pages && page % LARGE_FOLIO_PAGES < 3 {
        state.fetch_xor(bits, Ordering::Release);
    } else {
        state.store(state.load(Ordering::Relaxed) ^ bits, Ordering::Release);
    }
}

impl Drop for PageCache<'_> {
    fn drop(&mut self) {
        self.drain();
    }
}

impl fmt::Debug for PageCache<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCache")
            .field("pagemap", self.pagemap)
            .field("len", &self.len)
            .finish()
    }
}

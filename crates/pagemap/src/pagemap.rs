//! A pagemap: one region of device memory, its metadata, its owner and its driver.

use core::fmt;

use devpriv_pte::{DeviceIndex, PageSize};

use crate::allocator::{AllocState, CHUNK_PAGES, FAIL_ALWAYS, LARGE_CHUNK_HALF};
use crate::error::{AllocError, LookupError, RegisterError};
use crate::folio::{Folio, FolioRef, LockedFolio, Page};
use crate::meta::{DriverWord, PageMeta, word};
use crate::space::{MAX_PAGEMAP_PAGES, PagemapId, slot_base};
use crate::stash::{LARGE_SLOTS, SMALL_SLOTS, Stash};
use crate::sync::{AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering};

/// Which device (driver instance) owns a pagemap: an opaque token compared for
/// equality, Linux's `pgmap->owner`. Migration selects device pages by owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(u64);

impl Owner {
    /// The owner token `value`.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// An owner token made from the address of a driver object, as Linux drivers do.
    pub fn from_ptr<T>(ptr: *const T) -> Self {
        Self(ptr as usize as u64)
    }

    /// The token as a number.
    pub const fn value(self) -> u64 {
        self.0
    }
}

/// What the driver of a pagemap does when a folio's life changes (the lifecycle half of
/// Linux's `struct dev_pagemap_ops`; a CPU fault on a device page is handled by
/// devpriv-migrate, whose driver trait adds `migrate_to_ram`).
///
/// The pagemap never calls these with its allocator lock held, so a driver may allocate
/// or free folios from inside them.
pub trait PagemapOps: Sync {
    /// The last reference to `folio` was put. Called before the folio goes back to the
    /// allocator; the driver drops whatever it keeps per folio.
    fn folio_free(&self, folio: Folio<'_>);

    /// A 2 MiB folio was just split into 512 4 KiB folios (Linux's `folio_split`
    /// callback): called once for each new folio after the head, with `head` the
    /// former head (now a 4 KiB folio) and `new` the new folio, so that the driver can
    /// copy what it keeps per folio; then once with `new` = `None` when the split is
    /// complete. Default: nothing.
    fn folio_split(&self, head: Folio<'_>, new: Option<Folio<'_>>) {
        let _ = (head, new);
    }
}

/// Page metadata that a `static` can hold: `N` zeroed records and a flag that the
/// first registration of a pagemap made from it ([`DevicePagemap::from_static`]) claims,
/// so that no second pagemap over the same records registers, in any space.
#[cfg(not(loom))]
pub struct StaticMetadata<const N: usize> {
    records: [PageMeta; N],
    claimed: core::sync::atomic::AtomicBool,
}

#[cfg(not(loom))]
impl<const N: usize> StaticMetadata<N> {
    /// `N` zeroed records, unclaimed. `const`.
    pub const fn new() -> Self {
        Self {
            records: [const { PageMeta::new() }; N],
            claimed: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a pagemap has claimed the records (by registering).
    pub fn is_claimed(&self) -> bool {
        self.claimed.load(core::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(not(loom))]
impl<const N: usize> Default for StaticMetadata<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
impl<const N: usize> fmt::Debug for StaticMetadata<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticMetadata")
            .field("pages", &N)
            .field("claimed", &self.is_claimed())
            .finish()
    }
}

/// How many allocations of one size the test hook fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocFailures {
    /// None (the default).
    Never,
    /// The next `n`.
    Next(u32),
    /// Every one, until changed.
    Always,
}

/// One region of device-private memory: its pages' metadata, its owner and its driver
/// (Linux's `struct dev_pagemap` of type `MEMORY_DEVICE_PRIVATE`).
///
/// Creating one is O(1): the metadata is zeroed memory supplied by the caller and is
/// not touched until pages are allocated. Register it in a
/// [`DevicePrivateSpace`](crate::DevicePrivateSpace) to give its pages indices and to
/// allocate from it.
pub struct DevicePagemap<'a> {
    /// The metadata: borrowed exclusively by the constructor (or claimed at
    /// registration, for [`StaticMetadata`]), kept shared since all access is atomic.
    pub(crate) meta: &'a [PageMeta],
    /// The claim flag of the [`StaticMetadata`] the pagemap was made from, if it was.
    pub(crate) static_claim: Option<&'a core::sync::atomic::AtomicBool>,
    pages: u64,
    /// Pages in full 2 MiB chunks (a page below this may be part of a 2 MiB folio).
    pub(crate) chunked_pages: u64,
    owner: Owner,
    pub(crate) ops: &'a dyn PagemapOps,
    driver_words: Option<&'a [DriverWord]>,
    pub(crate) alloc: Mutex<AllocState>,
    /// Free 4 KiB folios taken and given back without the lock (`crate::stash`).
    pub(crate) small_stash: Stash<SMALL_SLOTS>,
    /// Free 2 MiB folios taken and given back without the lock.
    pub(crate) large_stash: Stash<LARGE_SLOTS>,
    /// Where the pagemap is registered ([`Registration`]): written under the allocator
    /// lock by the space, read with one load.
    pub(crate) registration: AtomicU64,
    pub(crate) fail_small: AtomicU32,
    fail_large: AtomicU32,
}

/// The first `pages` records of `metadata`, or why a pagemap of `pages` pages cannot
/// have it.
const fn checked_metadata(pages: u64, metadata: &[PageMeta]) -> Result<&[PageMeta], RegisterError> {
    if pages == 0 {
        return Err(RegisterError::ZeroPages);
    }
    if pages > MAX_PAGEMAP_PAGES {
        return Err(RegisterError::TooManyPages {
            pages,
            max: MAX_PAGEMAP_PAGES,
        });
    }
    if (metadata.len() as u64) < pages {
        return Err(RegisterError::MetadataTooSmall {
            needed: pages,
            given: metadata.len() as u64,
        });
    }
    Ok(metadata.split_at(pages as usize).0)
}

/// A new, unregistered pagemap value (one literal for the `const` and the loom `new`).
macro_rules! pagemap_value {
    ($meta:expr, $pages:expr, $owner:expr, $ops:expr) => {
        Self {
            meta: $meta,
            static_claim: None,
            pages: $pages,
            chunked_pages: $pages & !(CHUNK_PAGES - 1),
            owner: $owner,
            ops: $ops,
            driver_words: None,
            alloc: Mutex::new(AllocState::new($pages)),
            small_stash: Stash::new(),
            large_stash: Stash::new(),
            registration: AtomicU64::new(0),
            fail_small: AtomicU32::new(0),
            fail_large: AtomicU32::new(0),
        }
    };
}

impl<'a> DevicePagemap<'a> {
    /// A pagemap of `pages` 4 KiB pages owned by `owner`, driven by `ops`, with
    /// `metadata` (at least `pages` records, all zero) as its page metadata. O(1), and
    /// `const`.
    ///
    /// The metadata is borrowed exclusively for `'a`, so that two pagemaps cannot be
    /// built over the same records (they would hand out each other's pages):
    ///
    /// ```compile_fail,E0499
    /// use devpriv_pagemap::{DevicePagemap, Folio, Owner, PageMeta, PagemapOps};
    ///
    /// struct Driver;
    /// impl PagemapOps for Driver {
    ///     fn folio_free(&self, _folio: Folio<'_>) {}
    /// }
    ///
    /// let mut metadata: Vec<PageMeta> = (0..8).map(|_| PageMeta::new()).collect();
    /// let a = DevicePagemap::new(8, Owner::new(1), &Driver, &mut metadata).unwrap();
    /// let b = DevicePagemap::new(8, Owner::new(2), &Driver, &mut metadata).unwrap();
    /// drop((a, b));
    /// ```
    ///
    /// A `static` array cannot be borrowed mutably: a kernel that keeps its pagemap in a
    /// `static` uses [`StaticMetadata`] and [`DevicePagemap::from_static`] instead, whose
    /// exclusivity is checked when the pagemap is registered:
    ///
    /// ```
    /// use devpriv_pagemap::{
    ///     DevicePagemap, DevicePrivateSpace, Folio, Owner, PagemapOps, StaticMetadata,
    /// };
    /// use devpriv_pte::PageSize;
    ///
    /// struct Driver;
    /// impl PagemapOps for Driver {
    ///     fn folio_free(&self, _folio: Folio<'_>) {}
    /// }
    ///
    /// static DRIVER: Driver = Driver;
    /// static METADATA: StaticMetadata<1024> = StaticMetadata::new();
    /// static VRAM: DevicePagemap<'static> =
    ///     match DevicePagemap::from_static(1024, Owner::new(1), &DRIVER, &METADATA) {
    ///         Ok(pagemap) => pagemap,
    ///         Err(_) => panic!("the sizes above are valid"),
    ///     };
    /// static SPACE: DevicePrivateSpace<'static> = DevicePrivateSpace::new();
    ///
    /// SPACE.register(&VRAM).unwrap();
    /// let folio = VRAM.alloc(PageSize::Size2MiB).unwrap();
    /// assert_eq!(folio.size(), PageSize::Size2MiB);
    /// ```
    #[cfg(not(loom))]
    pub const fn new(
        pages: u64,
        owner: Owner,
        ops: &'a dyn PagemapOps,
        metadata: &'a mut [PageMeta],
    ) -> Result<Self, RegisterError> {
        // The exclusive borrow is what keeps other pagemaps off these records; from
        // here on all access is atomic, through a shared reference.
        let metadata: &'a [PageMeta] = metadata;
        match checked_metadata(pages, metadata) {
            Ok(meta) => Ok(pagemap_value!(meta, pages, owner, ops)),
            Err(e) => Err(e),
        }
    }

    /// A pagemap of `pages` pages over the records of `metadata`, which a `static` can
    /// hold (see [`DevicePagemap::new`]). `const`. The first registration of the
    /// pagemap claims `metadata` for it for good: registering another pagemap made from
    /// the same `StaticMetadata`, in any space, fails with
    /// [`RegisterError::AliasedMetadata`].
    #[cfg(not(loom))]
    pub const fn from_static<const N: usize>(
        pages: u64,
        owner: Owner,
        ops: &'a dyn PagemapOps,
        metadata: &'a StaticMetadata<N>,
    ) -> Result<Self, RegisterError> {
        match checked_metadata(pages, &metadata.records) {
            Ok(meta) => {
                let mut pagemap = pagemap_value!(meta, pages, owner, ops);
                pagemap.static_claim = Some(&metadata.claimed);
                Ok(pagemap)
            }
            Err(e) => Err(e),
        }
    }

    /// A pagemap (loom models: the atomics and the lock are loom's, which are not
    /// `const`).
    #[cfg(loom)]
    pub fn new(
        pages: u64,
        owner: Owner,
        ops: &'a dyn PagemapOps,
        metadata: &'a mut [PageMeta],
    ) -> Result<Self, RegisterError> {
        let meta = checked_metadata(pages, metadata)?;
        Ok(pagemap_value!(meta, pages, owner, ops))
    }

    /// Claims this pagemap's [`StaticMetadata`], if it was made from one (the
    /// allocator, locked by the caller: `state`). Fails if another pagemap has it.
    pub(crate) fn claim_static(&self, state: &mut AllocState) -> Result<(), RegisterError> {
        let Some(claimed) = self.static_claim else {
            return Ok(());
        };
        if state.static_claim_held {
            return Ok(());
        }
        // Acquire/release: the records a former claimant wrote are not reused anyway
        // (the claim is never given back); the ordering only keeps the flag honest.
        claimed
            .compare_exchange(
                false,
                true,
                core::sync::atomic::Ordering::AcqRel,
                core::sync::atomic::Ordering::Acquire,
            )
            .map_err(|_| RegisterError::AliasedMetadata)?;
        state.static_claim_held = true;
        Ok(())
    }

    /// Whether this pagemap's metadata or driver words share memory with `other`'s.
    pub(crate) fn overlaps(&self, other: &DevicePagemap<'_>) -> bool {
        fn range<T>(s: &[T]) -> core::ops::Range<usize> {
            let start = s.as_ptr() as usize;
            start..start + core::mem::size_of_val(s)
        }
        fn meet(a: core::ops::Range<usize>, b: core::ops::Range<usize>) -> bool {
            a.start < b.end && b.start < a.end
        }
        meet(range(self.meta), range(other.meta))
            || matches!((self.driver_words, other.driver_words),
                (Some(a), Some(b)) if meet(range(a), range(b)))
    }

    /// Adds a driver-private word per page (at least `pages` words), read and written
    /// by the driver through [`Page::driver_word`]. Pagemaps without one pay nothing.
    pub const fn with_driver_words(
        mut self,
        words: &'a [DriverWord],
    ) -> Result<Self, RegisterError> {
        if (words.len() as u64) < self.pages {
            return Err(RegisterError::DriverWordsTooSmall {
                needed: self.pages,
                given: words.len() as u64,
            });
        }
        self.driver_words = Some(words.split_at(self.pages as usize).0);
        Ok(self)
    }

    /// Number of 4 KiB pages.
    pub const fn pages(&self) -> u64 {
        self.pages
    }

    /// The owner token.
    pub const fn owner(&self) -> Owner {
        self.owner
    }

    /// The driver.
    pub fn ops(&self) -> &'a dyn PagemapOps {
        self.ops
    }

    /// Where the pagemap is registered now (one load).
    #[inline]
    pub(crate) fn registration(&self) -> Option<Registration> {
        Registration::decode(self.registration.load(Ordering::Acquire))
    }

    /// Where the pagemap is registered, if it is.
    pub fn id(&self) -> Option<PagemapId> {
        self.registration().map(Registration::id)
    }

    /// The device index of the pagemap's first page, if it is registered. One load.
    #[inline]
    pub fn base(&self) -> Option<DeviceIndex> {
        self.registration().map(|r| slot_base(r.slot))
    }

    /// Page `number` of this pagemap (0-based), if it exists and the pagemap is
    /// registered (so that the page has an index). One load.
    pub fn page(&self, number: u64) -> Result<Page<'_>, LookupError> {
        match self.base() {
            Some(base) if number < self.pages => {
                Ok(Page::new(self, DeviceIndex::new(base.number() + number)))
            }
            // Past the end: report the index it would have, saturating so that any
            // number is an answer, never an overflow.
            Some(base) => Err(LookupError::Unknown {
                index: DeviceIndex::new(base.number().saturating_add(number)),
            }),
            None => Err(LookupError::Unknown {
                index: DeviceIndex::new(number),
            }),
        }
    }

    /// Pages in allocated folios (including 2 MiB folios' tails, and the pages a
    /// [`PageCache`](crate::PageCache) holds).
    pub fn allocated_pages(&self) -> u64 {
        self.drained().allocated
    }

    /// Free pages.
    pub fn free_pages(&self) -> u64 {
        self.pages - self.allocated_pages()
    }

    /// Free 2 MiB chunks: how many 2 MiB folios could be allocated now.
    pub fn whole_chunks(&self) -> u64 {
        self.drained().whole_chunks()
    }

    /// The allocator, locked, with the stashes' free folios back on its free lists.
    pub(crate) fn drained(&self) -> MutexGuard<'_, AllocState> {
        let mut state = self.alloc.lock();
        self.drain_stashes(&mut state);
        state
    }

    /// Gives the free folios of both stashes back to the allocator (locked by the
    /// caller: `state`).
    pub(crate) fn drain_stashes(&self, state: &mut AllocState) {
        if !state.stash_in_use {
            return;
        }
        let meta = self.meta;
        let small_out = self
            .small_stash
            .drain(state, |state, page| state.release(meta, page, false));
        let large_out = self
            .large_stash
            .drain(state, |state, page| state.release(meta, page, true));
        state.stash_in_use = small_out || large_out;
    }

    /// The stash of folios of `large` size.
    #[inline]
    fn stash_claim(&self, large: bool) -> Option<u64> {
        if large {
            self.large_stash.claim()
        } else {
            self.small_stash.claim()
        }
    }

    /// Reads page `page`'s state word and drops the value: a portable prefetch. The
    /// heads of 2 MiB folios are 8 KiB apart in the metadata, so a batch of more than a
    /// dozen shares one L1 set and misses; reading the head the next allocation (or the
    /// next free of a batch freed in allocation order) will likely touch makes its miss
    /// overlap this operation's instead of following it (about 2 ns of a ~20 ns pair).
    #[inline]
    fn touch(&self, page: u64) {
        core::hint::black_box(self.meta[page as usize].state.load(Ordering::Relaxed));
    }

    /// Gives back to its stash a `POOLED` folio whose last reference was put (the
    /// driver already told): no lock, no atomic read-modify-write.
    #[inline]
    pub(crate) fn stash_put(&self, head: u64, large: bool) {
        let state = &self.meta[head as usize].state;
        // At reference count zero no one else writes the word: folio operations fail on
        // it without writing, and the allocator half of a stashed page is never written
        // while it is stashed (see `crate::stash`), so it is known and a plain store (no
        // load: a 2 MiB head is often out of the L1 cache) does.
        let high = if large { LARGE_CHUNK_HALF } else { 0 };
        debug_assert_eq!(
            state.load(Ordering::Relaxed) & !word::FOLIO_HALF,
            high,
            "a stashed page's allocator half changed"
        );
        state.store(high | word::POOLED, Ordering::Relaxed);
        if large {
            self.large_stash.put(head / CHUNK_PAGES, head);
            if let Some(next) = self.large_stash.next_out(head / CHUNK_PAGES) {
                self.touch(next);
            }
        } else {
            self.small_stash.put(head, head);
        }
    }

    /// The driver-private word of page `number`, if the pagemap has driver words.
    pub(crate) fn driver_word(&self, number: u64) -> Option<&'a DriverWord> {
        self.driver_words.map(|w| &w[number as usize])
    }

    /// Allocates a folio of `size` (4 KiB or 2 MiB) with one reference, unlocked.
    /// O(1); no per-page work, even for a 2 MiB folio.
    #[inline]
    pub fn alloc(&self, size: PageSize) -> Result<FolioRef<'_>, AllocError> {
        let folio = self.alloc_with(size, 0)?;
        // SAFETY: the folio was just allocated with one reference, which no handle owns.
        Ok(unsafe { FolioRef::from_raw(folio) })
    }

    /// Allocates a folio of `size` with one reference, locked: a migration destination
    /// (Linux's `zone_device_folio_init`). Costs the same as [`DevicePagemap::alloc`].
    #[inline]
    pub fn alloc_locked(&self, size: PageSize) -> Result<LockedFolio<'_>, AllocError> {
        let folio = self.alloc_with(size, word::LOCKED)?;
        // SAFETY: the folio was just allocated locked with one reference, which no handle
        // owns.
        Ok(unsafe { LockedFolio::from_raw(folio) })
    }

    // Always inlined: `alloc` and `alloc_locked` are small, and with the size known at
    // the call site the other size's path and the size match fold away.
    #[inline(always)]
    fn alloc_with(&self, size: PageSize, locked: u64) -> Result<Folio<'_>, AllocError> {
        let large = match size {
            PageSize::Size4KiB => false,
            PageSize::Size2MiB => true,
            PageSize::Size1GiB => return Err(AllocError::UnsupportedSize(size)),
        };
        if injected(if large {
            &self.fail_large
        } else {
            &self.fail_small
        }) {
            return Err(AllocError::Injected);
        }
        if let Some(page) = self.stash_claim(large) {
            let meta = &self.meta[page as usize];
            // The claim made the page ours: no one else writes a free page's word, and
            // its allocator half is never written while it is stashed (it is known: no
            // load), so plain stores publish it, as in the allocator.
            let w = if large {
                LARGE_CHUNK_HALF | word::POOLED | word::LARGE
            } else {
                word::POOLED
            };
            debug_assert_eq!(
                meta.state.load(Ordering::Relaxed),
                w & !word::LARGE,
                "a stashed page's word changed"
            );
            meta.rmap.store(0, Ordering::Relaxed);
            meta.state
                .store(w | word::ALLOCATED | locked | 1, Ordering::Release);
            if large && let Some(next) = self.large_stash.next_free() {
                self.touch(next);
            }
            // A stashed page counts as allocated, so the pagemap cannot have been
            // unregistered since it was stashed (unregistering drains the stashes), nor
            // can it be until this folio is freed.
            let Some(Registration { slot, .. }) = self.registration() else {
                // Not reached; should it be, the page goes back where it was.
                self.stash_put(page, large);
                return Err(AllocError::NotRegistered);
            };
            let index = DeviceIndex::new(slot_base(slot).number() + page);
            return Ok(Folio::new(Page::new(self, index), large));
        }
        self.alloc_locked_path(large, locked)
    }

    /// [`alloc_with`](Self::alloc_with) through the allocator, when the stash had no
    /// free folio: the folio joins the stash if its slot is vacant.
    #[inline(never)]
    fn alloc_locked_path(&self, large: bool, locked: u64) -> Result<Folio<'_>, AllocError> {
        let mut state = self.alloc.lock();
        // Read under the lock: unregistering takes it too, so the slot cannot change
        // until the folio is counted as allocated.
        let Some(Registration { slot, .. }) = self.registration() else {
            return Err(AllocError::NotRegistered);
        };
        let mut page = self.alloc_from(&mut state, large, locked);
        if page.is_none() {
            // Out of memory: the stashes' free folios may be what is missing (2 MiB
            // chunks kept split by stashed 4 KiB pages, say).
            self.drain_stashes(&mut state);
            page = self.alloc_from(&mut state, large, locked);
        }
        let page = page.ok_or_else(|| state.exhausted())?;
        drop(state);
        let index = DeviceIndex::new(slot_base(slot).number() + page);
        Ok(Folio::new(Page::new(self, index), large))
    }

    /// One allocation from the (locked) allocator.
    #[inline]
    fn alloc_from(&self, state: &mut AllocState, large: bool, locked: u64) -> Option<u64> {
        if large {
            state.alloc_large(self.meta, |state, chunk| {
                // The head's allocator half (the chunk header) is not written while the
                // folio is allocated or stashed: any 2 MiB folio may join the stash.
                let pooled = self.large_stash.adopt(state, chunk, chunk * CHUNK_PAGES);
                locked | if pooled { word::POOLED } else { 0 }
            })
        } else {
            let chunked = self.chunked_pages;
            state.alloc_small(self.meta, |state, page| {
                // Pages 0, 1 and 2 of a full chunk carry chunk fields that the allocator
                // writes under its lock while the page is in use: not those.
                let eligible = page >= chunked || page % CHUNK_PAGES >= 3;
                let pooled = eligible && self.small_stash.adopt(state, page, page);
                locked | if pooled { word::POOLED } else { 0 }
            })
        }
    }

    /// Makes allocations of `size` fail (a test hook: failing 2 MiB allocations drives
    /// the split path of migration). 1 GiB allocations always fail anyway; for them this
    /// does nothing.
    pub fn inject_alloc_failures(&self, size: PageSize, failures: AllocFailures) {
        let counter = match size {
            PageSize::Size4KiB => &self.fail_small,
            PageSize::Size2MiB => &self.fail_large,
            PageSize::Size1GiB => return,
        };
        let value = match failures {
            AllocFailures::Never => 0,
            AllocFailures::Next(n) => n.min(FAIL_ALWAYS - 1),
            AllocFailures::Always => FAIL_ALWAYS,
        };
        counter.store(value, Ordering::Relaxed);
    }

    /// The folios allocated now, in page order, without taking references: what
    /// evicting a whole pagemap (Linux's `migrate_device_range` on driver unbind) walks.
    /// Each folio is reported if it was allocated when the walk reached it; take a
    /// reference with [`Page::try_get`] before using one. O(pages) loads, no lock.
    pub fn allocated_folios(&self) -> AllocatedFolios<'_> {
        let base = self.base();
        AllocatedFolios {
            pagemap: self,
            base: base.map_or(0, |b| b.number()),
            next: if base.is_some() { 0 } else { self.pages },
        }
    }
}

/// Where a pagemap is registered: its slot and the slot's generation, packed into one
/// word so that reading it is a load (0: not registered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) slot: usize,
    pub(crate) generation: u32,
}

impl Registration {
    const VALID: u64 = 1 << 63;

    pub(crate) const fn encode(this: Option<Self>) -> u64 {
        match this {
            None => 0,
            Some(r) => Self::VALID | (r.generation as u64) << 16 | r.slot as u64,
        }
    }

    pub(crate) const fn decode(raw: u64) -> Option<Self> {
        if raw & Self::VALID == 0 {
            None
        } else {
            Some(Self {
                slot: (raw & 0xffff) as usize,
                generation: (raw >> 16) as u32,
            })
        }
    }

    pub(crate) const fn id(self) -> PagemapId {
        PagemapId::new(self.slot, self.generation)
    }
}

/// The iterator [`DevicePagemap::allocated_folios`] returns.
pub struct AllocatedFolios<'a> {
    pagemap: &'a DevicePagemap<'a>,
    base: u64,
    next: u64,
}

impl<'a> Iterator for AllocatedFolios<'a> {
    type Item = Folio<'a>;

    fn next(&mut self) -> Option<Folio<'a>> {
        while self.next < self.pagemap.pages {
            let page = self.next;
            let w = self.pagemap.meta[page as usize]
                .state
                .load(Ordering::Acquire);
            // Only a folio's head has `ALLOCATED` in its own word; a 2 MiB folio's
            // 511 tails are skipped.
            let large = w & word::LARGE != 0;
            self.next = if large { page + CHUNK_PAGES } else { page + 1 };
            if w & word::ALLOCATED != 0 && word::refs(w) != 0 {
                let index = DeviceIndex::new(self.base + page);
                return Some(Folio::new(Page::new(self.pagemap, index), large));
            }
        }
        None
    }
}

impl fmt::Debug for AllocatedFolios<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocatedFolios")
            .field("next", &self.next)
            .finish()
    }
}

/// Whether the failure counter says to fail this allocation (consuming one if counted).
#[inline]
pub(crate) fn injected(counter: &AtomicU32) -> bool {
    let mut n = counter.load(Ordering::Relaxed);
    loop {
        match n {
            0 => return false,
            FAIL_ALWAYS => return true,
            _ => {
                match counter.compare_exchange_weak(n, n - 1, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => return true,
                    Err(now) => n = now,
                }
            }
        }
    }
}

impl fmt::Debug for DevicePagemap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePagemap")
            .field("pages", &self.pages)
            .field("owner", &self.owner)
            .field("driver_words", &self.driver_words.is_some())
            .finish_non_exhaustive()
    }
}

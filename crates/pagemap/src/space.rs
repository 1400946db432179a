//! The device-private address space: which pagemap owns which device index.
//!
//! The 40-bit index space (what a software page-table entry holds, see
//! [`DeviceIndex::MAX`]) is cut into [`SLOTS`] slots of [`SLOT_PAGES`] pages (16 TiB)
//! each. A registered pagemap owns one slot: its page `n` has index
//! `slot * SLOT_PAGES + n`. Looking an index up is a shift, one load from the slot table
//! and a bounds check: no tree walk, no lock.
//!
//! Slots are handed out round-robin so that a slot freed by unregistering is reused as
//! late as possible: until then a stale index into it is reported as
//! [`LookupError::FreedPagemap`]. Each registration of a slot has a new generation, so a
//! stale [`PagemapId`] never names the pagemap that reused the slot.

use core::fmt;
use core::ptr;

use devpriv_pte::DeviceIndex;

use crate::error::{LookupError, RegisterError, UnregisterError};
use crate::folio::Page;
use crate::pagemap::{DevicePagemap, Registration};
use crate::sync::{AtomicPtr, AtomicU32, Mutex, Ordering};

/// log2 of the pages in one slot.
pub const SLOT_SHIFT: u32 = 32;
/// Pages in one slot (16 TiB of 4 KiB pages); the most one pagemap can have.
pub const SLOT_PAGES: u64 = 1 << SLOT_SHIFT;
/// The most pages one pagemap can have (16 TiB).
pub const MAX_PAGEMAP_PAGES: u64 = SLOT_PAGES;
/// Slots in the space: the most pagemaps registered at once.
pub const SLOTS: usize = ((DeviceIndex::MAX.number() + 1) >> SLOT_SHIFT) as usize;
/// The page-number bits of an index.
pub(crate) const SLOT_PAGE_MASK: u64 = SLOT_PAGES - 1;

const _: () = assert!(SLOTS == 256);

/// The index of the first page of `slot`.
pub(crate) const fn slot_base(slot: usize) -> DeviceIndex {
    DeviceIndex::new((slot as u64) << SLOT_SHIFT)
}

/// Names one registration of a pagemap: its slot and the slot's generation.
///
/// Meaningful only to the space that issued it (a kernel normally has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagemapId {
    slot: u16,
    generation: u32,
}

impl PagemapId {
    pub(crate) const fn new(slot: usize, generation: u32) -> Self {
        Self {
            slot: slot as u16,
            generation,
        }
    }

    /// The slot (0..[`SLOTS`]).
    pub const fn slot(self) -> usize {
        self.slot as usize
    }

    /// How many times the slot had been registered, this time included.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The device index of the pagemap's first page.
    pub const fn base(self) -> DeviceIndex {
        slot_base(self.slot as usize)
    }
}

struct Slot<'a> {
    pagemap: AtomicPtr<DevicePagemap<'a>>,
    /// Registrations of this slot so far (0: never used).
    generation: AtomicU32,
}

impl Slot<'_> {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            pagemap: AtomicPtr::new(ptr::null_mut()),
            generation: AtomicU32::new(0),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            pagemap: AtomicPtr::new(ptr::null_mut()),
            generation: AtomicU32::new(0),
        }
    }
}

/// Which slots are taken, and where the round-robin search for a free one starts: kept
/// under the space's lock so that registering looks only at the registered pagemaps.
struct Occupancy {
    /// The next slot to try.
    next: usize,
    /// Bit `s % 64` of word `s / 64`: slot `s` holds a pagemap.
    used: [u64; SLOTS / 64],
}

impl Occupancy {
    const fn new() -> Self {
        Self {
            next: 0,
            used: [0; SLOTS / 64],
        }
    }

    /// The taken slots.
    fn taken(&self) -> impl Iterator<Item = usize> + '_ {
        self.used.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            core::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }

    /// The first free slot at or after `next`, wrapping around.
    fn free(&self) -> Option<usize> {
        const WORDS: usize = SLOTS / 64;
        let (w0, b0) = (self.next / 64, self.next % 64);
        for i in 0..=WORDS {
            let w = (w0 + i) % WORDS;
            let mut free = !self.used[w];
            if i == 0 {
                free &= u64::MAX << b0; // at or after `next`
            }
            if i == WORDS {
                free &= !(u64::MAX << b0); // before `next`, in its word
            }
            if free != 0 {
                return Some(w * 64 + free.trailing_zeros() as usize);
            }
        }
        None
    }

    fn set(&mut self, slot: usize, taken: bool) {
        let bit = 1 << (slot % 64);
        if taken {
            self.used[slot / 64] |= bit;
        } else {
            self.used[slot / 64] &= !bit;
        }
    }
}

/// The device-private address space: hands index ranges to pagemaps and resolves
/// indices to pages.
///
/// A plain value: a kernel can keep one wherever it likes (a `static` works, since
/// [`DevicePrivateSpace::new`] is `const`). It borrows its pagemaps for `'a`.
pub struct DevicePrivateSpace<'a> {
    slots: [Slot<'a>; SLOTS],
    /// Which slots are taken and the next one to try (round-robin); taken for every
    /// (un)registration.
    cursor: Mutex<Occupancy>,
}

impl<'a> DevicePrivateSpace<'a> {
    /// An empty space.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            slots: [const { Slot::new() }; SLOTS],
            cursor: Mutex::new(Occupancy::new()),
        }
    }

    /// An empty space.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| Slot::new()),
            cursor: Mutex::new(Occupancy::new()),
        }
    }

    /// Registers `pagemap`: gives it a slot, so that its pages get indices and it can
    /// allocate. O(1) in the size of the pagemap. A pagemap whose metadata (or driver
    /// words) overlaps a registered pagemap's, or whose
    /// [`StaticMetadata`](crate::StaticMetadata) another pagemap has claimed, is refused
    /// with [`RegisterError::AliasedMetadata`].
    pub fn register(&self, pagemap: &'a DevicePagemap<'a>) -> Result<PagemapId, RegisterError> {
        let mut cursor = self.cursor.lock();
        // The allocator lock orders registration against allocations, which read the
        // registration under it.
        let mut alloc = pagemap.alloc.lock();
        if pagemap.registration().is_some() {
            return Err(RegisterError::AlreadyRegistered);
        }
        // Two pagemaps over the same metadata would hand out each other's pages. Only
        // the taken slots are looked at.
        for other in cursor.taken() {
            let other = self.slots[other].pagemap.load(Ordering::Acquire);
            // SAFETY: a non-null slot pointer was stored by `register` from a
            // `&'a DevicePagemap`, and unregistering (which clears it) needs the cursor
            // lock this call holds, so the pagemap lives while it is read here.
            if let Some(other) = unsafe { other.as_ref() }
                && pagemap.overlaps(other)
            {
                return Err(RegisterError::AliasedMetadata);
            }
        }
        // A pagemap made from `StaticMetadata` claims it, once and for good: this
        // catches a second pagemap over the same records in another space too.
        pagemap.claim_static(&mut alloc)?;
        let slot = cursor.free().ok_or(RegisterError::SpaceFull)?;
        debug_assert!(self.slots[slot].pagemap.load(Ordering::Relaxed).is_null());
        let s = &self.slots[slot];
        let generation = s.generation.load(Ordering::Relaxed).wrapping_add(1).max(1);
        s.generation.store(generation, Ordering::Relaxed);
        pagemap.registration.store(
            Registration::encode(Some(Registration { slot, generation })),
            Ordering::Release,
        );
        s.pagemap
            .store(ptr::from_ref(pagemap).cast_mut(), Ordering::Release);
        cursor.set(slot, true);
        cursor.next = (slot + 1) % SLOTS;
        Ok(PagemapId::new(slot, generation))
    }

    /// Unregisters the pagemap `id` names; refused while any of its pages is allocated.
    /// Its indices then fail to resolve ([`LookupError::FreedPagemap`]).
    pub fn unregister(&self, id: PagemapId) -> Result<&'a DevicePagemap<'a>, UnregisterError> {
        let mut cursor = self.cursor.lock();
        let s = self.slots.get(id.slot()).ok_or(UnregisterError::StaleId)?;
        let p = s.pagemap.load(Ordering::Acquire);
        if p.is_null() || s.generation.load(Ordering::Relaxed) != id.generation {
            return Err(UnregisterError::StaleId);
        }
        // SAFETY: non-null slot pointers are only ever stored by `register`, from a
        // `&'a DevicePagemap<'a>`, so the pagemap lives (unmoved) for `'a`.
        let pagemap: &'a DevicePagemap<'a> = unsafe { &*p };
        // Pages in the stashes are free but count as allocated: give them back first.
        let alloc = pagemap.drained();
        if alloc.allocated != 0 {
            return Err(UnregisterError::PagesInUse {
                pages: alloc.allocated,
            });
        }
        pagemap
            .registration
            .store(Registration::encode(None), Ordering::Release);
        s.pagemap.store(ptr::null_mut(), Ordering::Release);
        cursor.set(id.slot(), false);
        Ok(pagemap)
    }

    /// The live pagemap `id` names.
    pub fn pagemap(&self, id: PagemapId) -> Option<&'a DevicePagemap<'a>> {
        let s = self.slots.get(id.slot())?;
        let p = s.pagemap.load(Ordering::Acquire);
        if p.is_null() || s.generation.load(Ordering::Relaxed) != id.generation {
            return None;
        }
        // SAFETY: as in `unregister`: the pointer came from a `&'a DevicePagemap<'a>`.
        Some(unsafe { &*p })
    }

    /// The page with device index `index` (Linux's `device_private_offset_to_page`):
    /// a shift, one load and a bounds check.
    #[inline]
    pub fn lookup(&self, index: DeviceIndex) -> Result<Page<'a>, LookupError> {
        let n = index.number();
        let Some(s) = self.slots.get((n >> SLOT_SHIFT) as usize) else {
            return Err(LookupError::OutOfRange { index });
        };
        let p = s.pagemap.load(Ordering::Acquire);
        if p.is_null() {
            return Err(if s.generation.load(Ordering::Relaxed) == 0 {
                LookupError::Unknown { index }
            } else {
                LookupError::FreedPagemap { index }
            });
        }
        // SAFETY: as in `unregister`: the pointer came from a `&'a DevicePagemap<'a>`.
        let pagemap: &'a DevicePagemap<'a> = unsafe { &*p };
        if n & SLOT_PAGE_MASK >= pagemap.pages() {
            return Err(LookupError::Unknown { index });
        }
        Ok(Page::new(pagemap, index))
    }

    /// Live pagemaps.
    pub fn registered(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.pagemap.load(Ordering::Relaxed).is_null())
            .count()
    }
}

impl Default for DevicePrivateSpace<'_> {
    fn default() -> Self {
        Self::new()
    }
}

// The slot table's `AtomicPtr`s make the space `Send + Sync` whatever they point at;
// that is sound because a pagemap is itself `Sync` (atomics and a lock) and the space
// only hands out shared references to it.
const _: () = {
    const fn assert_sync<T: Sync + Send>() {}
    assert_sync::<DevicePagemap<'static>>();
};

impl fmt::Debug for DevicePrivateSpace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePrivateSpace")
            .field("registered", &self.registered())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn occupancy_finds_free_slots_round_robin_and_lists_taken_ones() {
        let mut o = Occupancy::new();
        assert_eq!(o.free(), Some(0));
        for s in 0..SLOTS {
            o.set(s, true);
        }
        assert_eq!(o.free(), None);
        assert_eq!(o.taken().count(), SLOTS);
        // A free slot before `next`, in `next`'s word: found by wrapping around.
        o.set(70, false);
        o.next = 100;
        assert_eq!(o.free(), Some(70));
        o.set(200, false);
        assert_eq!(o.free(), Some(200));
        o.next = 201;
        assert_eq!(o.free(), Some(70));
        o.next = 0;
        assert_eq!(o.free(), Some(70));
        assert_eq!(o.taken().count(), SLOTS - 2);
        assert!(o.taken().all(|s| s != 70 && s != 200));
        let mut few = Occupancy::new();
        few.set(3, true);
        few.set(64, true);
        few.set(255, true);
        let mut taken = few.taken();
        assert_eq!(
            [taken.next(), taken.next(), taken.next(), taken.next()],
            [Some(3), Some(64), Some(255), None]
        );
    }
}

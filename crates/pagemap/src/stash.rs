//! A pagemap's stashes: free folios of one size that an allocation takes, and the last
//! put of such a folio gives back, without the allocator lock.
//!
//! A plain [`DevicePagemap::alloc`](crate::DevicePagemap::alloc) + last put through the
//! allocator costs three atomic read-modify-writes (the lock on alloc; the reference
//! count and the lock again on the last put), and on the development machine each is
//! about 6 ns: most of the pair. A stash brings that to two, which are the floor for a
//! shared allocator (an allocation any CPU may race with needs one; a last put racing a
//! `try_get` needs one):
//!
//! - a stash is an array of slots; page `p` (for 2 MiB folios, chunk `p / 512`) can only
//!   ever be in slot `p % slots`. A slot is *vacant*, *out* (its folio is allocated and
//!   comes back to this slot when freed) or holds a free page;
//! - the allocator (under its lock) *adopts* a folio it allocates when the folio's slot
//!   is vacant: the slot becomes out and the folio's head word gets the `POOLED` bit;
//! - the last put of a `POOLED` folio (after the reference-count update and the driver's
//!   `folio_free`) stores the page into its slot: a plain store, because only the owner
//!   of the one `POOLED` folio of a slot writes an out slot;
//! - an allocation claims a held page with one compare-exchange (held → out), then owns
//!   the page and publishes it with plain stores;
//! - the allocator (under its lock) *drains* the stash: each held page is claimed (held →
//!   vacant) and goes back to the free lists. It does so when it runs out of memory, on
//!   unregistering, and before answering `allocated_pages` or `whole_chunks`, so a stash
//!   is never seen from outside: its pages count as allocated only while they are in it.
//!
//! A stashed page stays counted as allocated in the allocator, so its chunk is not whole
//! and the pagemap cannot be unregistered while a stashed folio is out. Only pages whose
//! allocator half of the state word is never written are stashed (not pages 0, 1 and 2
//! of a full chunk for 4 KiB; the head of a 2 MiB folio, whose chunk header no one
//! changes while the folio is allocated or stashed), so that the plain stores on the
//! folio half never race with the allocator's.

use crate::allocator::AllocState;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Slots of the 4 KiB stash (a batch of 64 pages fits).
#[cfg(not(loom))]
pub(crate) const SMALL_SLOTS: usize = 64;
/// Slots of the 2 MiB stash (32 MiB of device memory at most).
#[cfg(not(loom))]
pub(crate) const LARGE_SLOTS: usize = 16;
/// Slots looked at by one allocation before it goes to the allocator.
#[cfg(not(loom))]
const SCAN: usize = 8;

// Loom explores every interleaving of every atomic access: keep the models small.
#[cfg(loom)]
pub(crate) const SMALL_SLOTS: usize = 2;
#[cfg(loom)]
pub(crate) const LARGE_SLOTS: usize = 2;
#[cfg(loom)]
const SCAN: usize = 2;

/// A slot with no page and no folio out.
const VACANT: u64 = 0;
/// A slot whose folio is allocated: this bit, with the folio's head page number.
const OUT: u64 = 1 << 63;

/// Free folios of one size, each in the slot its page number picks (a value is
/// `page + 1`, [`VACANT`] or [`OUT`]` | page`).
pub(crate) struct Stash<const N: usize> {
    slots: [AtomicU64; N],
    /// Where the next allocation starts looking (a hint: races only cost a longer look).
    cursor: AtomicU32,
}

impl<const N: usize> Stash<N> {
    /// An empty stash.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { AtomicU64::new(VACANT) }; N],
            cursor: AtomicU32::new(0),
        }
    }

    /// An empty stash.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicU64::new(VACANT)),
            cursor: AtomicU32::new(0),
        }
    }

    /// The slot of the folio with key `key` (page number, or chunk number for 2 MiB).
    #[inline]
    fn slot(&self, key: u64) -> &AtomicU64 {
        &self.slots[(key % N as u64) as usize]
    }

    /// Takes a free page out of the stash, if one of the slots it looks at holds one.
    /// The caller then owns the page (free, `POOLED` folio half) and must publish it
    /// as a folio or [`put`](Self::put) it back.
    #[inline]
    pub(crate) fn claim(&self) -> Option<u64> {
        let start = self.cursor.load(Ordering::Relaxed) as usize;
        for i in 0..SCAN.min(N) {
            let s = (start + i) % N;
            let v = self.slots[s].load(Ordering::Relaxed);
            if v != VACANT
                && v & OUT == 0
                && self.slots[s]
                    .compare_exchange(v, OUT | (v - 1), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.cursor.store(((s + 1) % N) as u32, Ordering::Relaxed);
                return Some(v - 1);
            }
        }
        None
    }

    /// Gives the free page `page` (key `key`) back to its slot, which is out: the caller
    /// owns the one `POOLED` folio of that slot, and has written the page's word first.
    #[inline]
    pub(crate) fn put(&self, key: u64, page: u64) {
        let slot = self.slot(key);
        debug_assert_eq!(slot.load(Ordering::Relaxed), OUT | page);
        slot.store(page + 1, Ordering::Release);
    }

    /// The page the next [`claim`](Self::claim) would most likely take (a hint: it may
    /// be gone by then).
    #[inline]
    pub(crate) fn next_free(&self) -> Option<u64> {
        let v =
            self.slots[self.cursor.load(Ordering::Relaxed) as usize % N].load(Ordering::Relaxed);
        (v != VACANT && v & OUT == 0).then(|| v - 1)
    }

    /// The allocated folio of the slot after `key`'s, which a batch freed in the order
    /// it was allocated puts next (a hint).
    #[inline]
    pub(crate) fn next_out(&self, key: u64) -> Option<u64> {
        let v = self.slot(key + 1).load(Ordering::Relaxed);
        (v & OUT != 0).then_some(v & !OUT)
    }

    /// Under the allocator lock (`_locked`): makes the folio with key `key`, being
    /// allocated, the one of its slot if the slot is vacant. True if it did: the folio
    /// must then be published with the `POOLED` bit.
    #[inline]
    pub(crate) fn adopt(&self, locked: &mut AllocState, key: u64, page: u64) -> bool {
        let slot = self.slot(key);
        // A vacant slot is written only under the lock (claims and puts need a page or
        // an out slot), so a plain store does.
        if slot.load(Ordering::Relaxed) == VACANT {
            slot.store(OUT | page, Ordering::Relaxed);
            locked.stash_in_use = true;
            true
        } else {
            false
        }
    }

    /// The `POOLED` folio with key `key` stops being the one of its slot, which becomes
    /// vacant: it is being split, or its last put hands it to a `PageCache`. The caller
    /// owns the folio (the only reference, or the last one just put), so no one else
    /// writes the out slot; a lock holder writes a slot only after seeing it vacant.
    pub(crate) fn forget(&self, key: u64, page: u64) {
        let slot = self.slot(key);
        debug_assert_eq!(slot.load(Ordering::Relaxed), OUT | page);
        slot.store(VACANT, Ordering::Relaxed);
    }

    /// Under the allocator lock: claims every page the stash holds (its slot becomes
    /// vacant) and hands it to `give_back`, which returns it to the allocator. Returns
    /// whether a slot is still out.
    pub(crate) fn drain(
        &self,
        locked: &mut AllocState,
        mut give_back: impl FnMut(&mut AllocState, u64),
    ) -> bool {
        let mut out = false;
        for slot in &self.slots {
            let v = slot.load(Ordering::Relaxed);
            if v == VACANT {
                continue;
            }
            if v & OUT == 0
                && slot
                    .compare_exchange(v, VACANT, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                give_back(locked, v - 1);
            } else {
                // Out, or claimed under us (so out now): it stays in use.
                out = true;
            }
        }
        out
    }
}

//! The device-folio allocator: 4 KiB and 2 MiB folios out of 2 MiB chunks.
//!
//! Everything here runs under the pagemap's allocator lock and keeps its per-chunk state
//! in the metadata itself, so registration does no per-page (or per-chunk) work:
//!
//! - chunks at or above the *watermark* have never been used; their metadata is still
//!   zero. The watermark only moves up, one chunk at a time, when a chunk is first needed;
//! - *whole* chunks below the watermark (all 512 pages free) sit on a LIFO list linked
//!   through the reverse-map word of their first page;
//! - *split* chunks with free pages sit on a doubly linked list of partly used chunks,
//!   linked through the allocator half of the state words of their pages 1 and 2; each
//!   keeps, in the allocator half of its page 0, a free count, a never-used watermark
//!   within the chunk and the head of its own free list (linked through the free pages'
//!   reverse-map words). When its free count reaches 512 it leaves that list and is
//!   whole again, in O(1);
//! - a final chunk of fewer than 512 pages (the *tail*) can only hold 4 KiB folios; its
//!   fields live in [`AllocState`] instead of in metadata.
//!
//! A 2 MiB allocation marks one word (the head); a 4 KiB allocation pops a free list or
//! bumps a watermark; a free is the reverse. All O(1).
//!
//! The header of the *hot* chunk (the one 4 KiB pages were last taken from) is kept in
//! [`AllocState`] and written back when another chunk becomes hot, or when the hot chunk
//! is whole again (so the hot chunk is always a split one). Allocating from the hot
//! chunk while it heads the partly-used list, and freeing into it while it stays partly
//! used, are the fast paths: a few loads and stores of the allocator's own fields, the
//! page's two words and no other metadata.

use crate::error::AllocError;
use crate::meta::{PageMeta, word};
use crate::sync::{AtomicU64, Ordering};

/// log2 of the pages in a chunk.
pub(crate) const CHUNK_ORDER: u32 = 9;
/// Pages in a chunk (one 2 MiB folio).
pub(crate) const CHUNK_PAGES: u64 = 1 << CHUNK_ORDER;

/// Chunk states, in the chunk header.
const WHOLE: u32 = 0;
const LARGE: u32 = 1;
const SPLIT: u32 = 2;

/// The allocator half of the first state word of a chunk that is one 2 MiB folio.
pub(crate) const LARGE_CHUNK_HALF: u64 =
    (Header::new(LARGE, 0, 0, 0).0 as u64) << word::CHUNK_SHIFT;

/// The header of a chunk: the allocator half of its first page's state word.
///
/// | bits   | field                                             |
/// |--------|---------------------------------------------------|
/// | 0..=1  | state: 0 whole, 1 one 2 MiB folio, 2 split        |
/// | 2..=11 | free pages (split)                                |
/// | 12..=21| pages handed out at least once since the split    |
/// | 22..=31| free-list head: page offset + 1, 0 = empty        |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header(u32);

impl Header {
    const fn state(self) -> u32 {
        self.0 & 3
    }
    const fn free(self) -> u64 {
        ((self.0 >> 2) & 0x3ff) as u64
    }
    const fn bump(self) -> u64 {
        ((self.0 >> 12) & 0x3ff) as u64
    }
    const fn head(self) -> u64 {
        ((self.0 >> 22) & 0x3ff) as u64
    }
    const fn new(state: u32, free: u64, bump: u64, head: u64) -> Self {
        Self(state | (free as u32) << 2 | (bump as u32) << 12 | (head as u32) << 22)
    }
}

/// Free-page bookkeeping of a chunk whose fields are kept in [`AllocState`] rather than
/// in metadata: the tail always, the hot chunk while it is hot (unpacked, so that the
/// fast paths do no shifting and masking).
#[derive(Clone, Copy, Debug)]
struct TailChunk {
    free: u64,
    bump: u64,
    head: u64,
}

impl TailChunk {
    /// The fields of a split chunk's header.
    #[inline]
    fn of_split(header: Header) -> Self {
        debug_assert_eq!(header.state(), SPLIT);
        Self {
            free: header.free(),
            bump: header.bump(),
            head: header.head(),
        }
    }

    /// The header of a split chunk with these fields.
    #[inline]
    fn split_header(self) -> Header {
        Header::new(SPLIT, self.free, self.bump, self.head)
    }
}

/// Injected failures for one folio size: 0 none, `u32::MAX` always, else the next n.
pub(crate) const FAIL_ALWAYS: u32 = u32::MAX;

/// The allocator state of one pagemap (under its lock).
#[derive(Debug)]
pub(crate) struct AllocState {
    /// Chunks of 512 pages.
    full_chunks: u64,
    /// Chunks below this have been used at least once.
    watermark: u64,
    /// First whole chunk on the whole list, + 1 (0: empty).
    whole_head: u64,
    /// First chunk on the partly-used list, + 1 (0: empty).
    partial_head: u64,
    /// Whole chunks (listed or above the watermark).
    whole_chunks: u64,
    /// Pages in allocated folios.
    pub(crate) allocated: u64,
    tail: TailChunk,
    /// The chunk 4 KiB pages were last allocated from, + 1 (0: none); always a split
    /// chunk. Its header's fields live in `hot_fields` (the copy in metadata may lag) so
    /// that a run of allocations and frees in one chunk does not write the chunk's first
    /// page, whose folio half other CPUs may be changing, every time.
    hot: u64,
    hot_fields: TailChunk,
    /// Whether a slot of the pagemap's stashes may be in use (out or holding a folio):
    /// set when a folio joins a stash (under this lock), cleared by a drain that leaves
    /// every slot vacant. Draining an unused stash is then free.
    pub(crate) stash_in_use: bool,
    /// Whether this pagemap holds the claim of its [`StaticMetadata`]
    /// (crate::StaticMetadata): taken at its first registration and kept, so that it
    /// may register again and no other pagemap may.
    pub(crate) static_claim_held: bool,
    /// Why the last [`take_whole`](Self::take_whole) found nothing: `Some(page)` if the
    /// next never-used chunk's metadata is not zero (page `page` is the first non-zero
    /// record), `None` if every chunk is in use.
    pub(crate) dirty_page: Option<u64>,
}

impl AllocState {
    /// State for a pagemap of `pages` pages, all free. O(1).
    pub(crate) const fn new(pages: u64) -> Self {
        let full_chunks = pages >> CHUNK_ORDER;
        let tail_pages = pages & (CHUNK_PAGES - 1);
        Self {
            full_chunks,
            watermark: 0,
            whole_head: 0,
            partial_head: 0,
            whole_chunks: full_chunks,
            allocated: 0,
            tail: TailChunk {
                free: tail_pages,
                bump: 0,
                head: 0,
            },
            hot: 0,
            hot_fields: TailChunk {
                free: 0,
                bump: 0,
                head: 0,
            },
            stash_in_use: false,
            static_claim_held: false,
            dirty_page: None,
        }
    }

    /// Why an allocation found nothing: the next never-used chunk's metadata is not zero
    /// ([`dirty_page`](Self::dirty_page)), else the pagemap is out of memory.
    pub(crate) const fn exhausted(&self) -> AllocError {
        match self.dirty_page {
            Some(page) => AllocError::NonZeroMetadata { page },
            None => AllocError::OutOfMemory,
        }
    }

    /// Whole (2 MiB-allocatable) chunks.
    pub(crate) const fn whole_chunks(&self) -> u64 {
        self.whole_chunks
    }

    /// Allocates a 4 KiB page; returns its page number. `folio` gives the folio half's
    /// bits besides `ALLOCATED` and the one reference (the lock, `POOLED`), given the
    /// page number.
    #[inline]
    pub(crate) fn alloc_small(
        &mut self,
        meta: &[PageMeta],
        folio: impl FnOnce(&mut Self, u64) -> u64,
    ) -> Option<u64> {
        let page = self.take_small(meta)?;
        let bits = folio(self, page);
        publish(&meta[page as usize], word::ALLOCATED | bits | 1);
        Some(page)
    }

    /// Takes a 4 KiB page off the free lists for a [`PageCache`](crate::PageCache): it
    /// counts as allocated but stays free (not a folio) with the `RESERVED` mark.
    pub(crate) fn reserve_small(&mut self, meta: &[PageMeta]) -> Option<u64> {
        let page = self.take_small(meta)?;
        let state = &meta[page as usize].state;
        // A free page's word is written only under the lock: a plain store marks it.
        state.store(
            state.load(Ordering::Relaxed) | word::RESERVED,
            Ordering::Relaxed,
        );
        Some(page)
    }

    /// Takes a 4 KiB page off the free lists and counts it as allocated; its word is
    /// left as it is (free).
    #[inline]
    fn take_small(&mut self, meta: &[PageMeta]) -> Option<u64> {
        // The hot chunk heads the partly-used list (so it has a free page): take one
        // there, the common case.
        if self.hot != 0 && self.hot == self.partial_head {
            self.allocated += 1;
            return Some(self.take_hot(meta));
        }
        self.take_small_slow(meta)
    }

    /// [`take_small`](Self::take_small) when the hot chunk does not head the
    /// partly-used list.
    #[inline(never)]
    fn take_small_slow(&mut self, meta: &[PageMeta]) -> Option<u64> {
        let page = if self.partial_head != 0 {
            self.take_from_split(meta, self.partial_head - 1)
        } else if self.tail.free != 0 {
            self.take_from_tail(meta)
        } else {
            let chunk = self.take_whole(meta)?;
            self.set_header(meta, chunk, Header::new(SPLIT, CHUNK_PAGES, 0, 0));
            self.partial_push(meta, chunk);
            self.take_from_split(meta, chunk)
        };
        self.allocated += 1;
        Some(page)
    }

    /// Allocates a 2 MiB folio; returns its head page number. `folio` gives the folio
    /// half's bits besides `ALLOCATED`, `LARGE` and the one reference, given the chunk
    /// number.
    #[inline]
    pub(crate) fn alloc_large(
        &mut self,
        meta: &[PageMeta],
        folio: impl FnOnce(&mut Self, u64) -> u64,
    ) -> Option<u64> {
        let chunk = self.take_whole(meta)?;
        let bits = folio(self, chunk);
        // A whole chunk is never the hot one, and its first word is all zero: a free
        // page (folio half 0) with the header of a whole chunk (0). Only the lock holder
        // writes a free page's word, so one plain store sets the header and publishes
        // the folio.
        debug_assert_ne!(self.hot, chunk + 1);
        let head = &meta[(chunk * CHUNK_PAGES) as usize];
        debug_assert_eq!(head.state.load(Ordering::Relaxed), 0);
        head.rmap.store(0, Ordering::Relaxed);
        head.state.store(
            LARGE_CHUNK_HALF | word::ALLOCATED | word::LARGE | bits | 1,
            Ordering::Release,
        );
        self.allocated += CHUNK_PAGES;
        Some(chunk * CHUNK_PAGES)
    }

    /// Returns a folio whose reference count reached zero.
    #[inline]
    pub(crate) fn release(&mut self, meta: &[PageMeta], head: u64, large: bool) {
        // At reference count zero no one else writes the word (every folio operation
        // fails on it without writing; the allocator half changes only under our lock),
        // so plain stores do.
        let state = &meta[head as usize].state;
        if large {
            // The chunk becomes whole: folio half 0 and a whole chunk's header (0), in
            // one store.
            debug_assert_eq!(Header::new(WHOLE, 0, 0, 0).0, 0);
            state.store(0, Ordering::Release);
            self.allocated -= CHUNK_PAGES;
            self.whole_push(meta, head >> CHUNK_ORDER);
        } else {
            state.store(
                state.load(Ordering::Relaxed) & !word::FOLIO_HALF,
                Ordering::Release,
            );
            self.give_back_small(meta, head);
        }
    }

    /// Returns a page a [`PageCache`](crate::PageCache) reserved (the cache's owner
    /// holds the lock, so no one else writes the word).
    pub(crate) fn unreserve(&mut self, meta: &[PageMeta], page: u64) {
        let state = &meta[page as usize].state;
        let w = state.load(Ordering::Relaxed);
        debug_assert_eq!(w & word::FOLIO_HALF, word::RESERVED);
        state.store(w & !word::FOLIO_HALF, Ordering::Release);
        self.give_back_small(meta, page);
    }

    /// Puts a free 4 KiB page (folio half already zero) back on the free lists.
    #[inline]
    fn give_back_small(&mut self, meta: &[PageMeta], page: u64) {
        self.allocated -= 1;
        let chunk = page >> CHUNK_ORDER;
        if self.hot == chunk + 1 {
            // Into the hot chunk, which stays partly used and stays listed: the common
            // case.
            let h = &mut self.hot_fields;
            if h.free != 0 && h.free != CHUNK_PAGES - 1 {
                meta[page as usize].rmap.store(h.head, Ordering::Relaxed);
                h.head = (page & (CHUNK_PAGES - 1)) + 1;
                h.free += 1;
                return;
            }
        }
        self.give_back_small_slow(meta, page);
    }

    /// [`give_back_small`](Self::give_back_small) (the count already updated) for a page
    /// of the tail, of a chunk that is not hot, or one that makes its chunk whole or
    /// partly used again.
    #[inline(never)]
    fn give_back_small_slow(&mut self, meta: &[PageMeta], head: u64) {
        let chunk = head >> CHUNK_ORDER;
        let offset = head & (CHUNK_PAGES - 1);
        if chunk == self.full_chunks {
            meta[head as usize]
                .rmap
                .store(self.tail.head, Ordering::Relaxed);
            self.tail.head = offset + 1;
            self.tail.free += 1;
            return;
        }
        let h = self.header(meta, chunk);
        debug_assert_eq!(h.state(), SPLIT);
        meta[head as usize].rmap.store(h.head(), Ordering::Relaxed);
        let free = h.free() + 1;
        if free == CHUNK_PAGES {
            self.partial_remove(meta, chunk);
            // A whole chunk is not hot: its header goes to metadata.
            if self.hot == chunk + 1 {
                self.hot = 0;
            }
            write_header(meta, chunk, Header::new(WHOLE, 0, 0, 0));
            self.whole_push(meta, chunk);
        } else {
            self.set_header(meta, chunk, Header::new(SPLIT, free, h.bump(), offset + 1));
            if free == 1 {
                self.partial_push(meta, chunk);
            }
        }
    }

    /// Turns the 2 MiB folio at `head` (frozen by the caller) into 512 allocated pages:
    /// the chunk becomes a split chunk with no free page.
    pub(crate) fn split_large(&mut self, meta: &[PageMeta], head: u64) {
        self.set_header(
            meta,
            head >> CHUNK_ORDER,
            Header::new(SPLIT, 0, CHUNK_PAGES, 0),
        );
    }

    /// Takes a whole chunk: a listed one, else the next never-used one (if its metadata
    /// is zero; else [`dirty_page`](Self::dirty_page) says where it is not).
    #[inline]
    fn take_whole(&mut self, meta: &[PageMeta]) -> Option<u64> {
        let chunk = if self.whole_head != 0 {
            let chunk = self.whole_head - 1;
            self.whole_head = meta[(chunk * CHUNK_PAGES) as usize]
                .rmap
                .load(Ordering::Relaxed);
            chunk
        } else if self.watermark < self.full_chunks {
            // A never-used chunk: its metadata must be zero (free), or its records would
            // be read as allocator and folio state. Checked once, when it is first
            // opened, so creating a pagemap stays O(1).
            let chunk = self.watermark;
            if let Some(page) = first_nonzero(meta, chunk) {
                self.dirty_page = Some(page);
                return None;
            }
            self.watermark += 1;
            chunk
        } else {
            self.dirty_page = None;
            return None;
        };
        self.whole_chunks -= 1;
        Some(chunk)
    }

    #[inline]
    fn whole_push(&mut self, meta: &[PageMeta], chunk: u64) {
        meta[(chunk * CHUNK_PAGES) as usize]
            .rmap
            .store(self.whole_head, Ordering::Relaxed);
        self.whole_head = chunk + 1;
        self.whole_chunks += 1;
    }

    fn take_from_split(&mut self, meta: &[PageMeta], chunk: u64) -> u64 {
        self.make_hot(meta, chunk);
        self.take_hot(meta)
    }

    /// Takes a free page of the hot chunk (which has one).
    #[inline]
    fn take_hot(&mut self, meta: &[PageMeta]) -> u64 {
        let chunk = self.hot - 1;
        let base = chunk * CHUNK_PAGES;
        let h = &mut self.hot_fields;
        debug_assert!(h.free > 0);
        let offset = if h.head != 0 {
            let offset = h.head - 1;
            h.head = meta[(base + offset) as usize].rmap.load(Ordering::Relaxed);
            offset
        } else {
            h.bump += 1;
            bump_offset(h.bump - 1)
        };
        h.free -= 1;
        if h.free == 0 {
            self.partial_remove(meta, chunk);
        }
        base + offset
    }

    fn take_from_tail(&mut self, meta: &[PageMeta]) -> u64 {
        let base = self.full_chunks * CHUNK_PAGES;
        let offset = if self.tail.head != 0 {
            let offset = self.tail.head - 1;
            self.tail.head = meta[(base + offset) as usize].rmap.load(Ordering::Relaxed);
            offset
        } else {
            self.tail.bump += 1;
            self.tail.bump - 1
        };
        self.tail.free -= 1;
        base + offset
    }

    /// The header of `chunk`.
    #[inline]
    fn header(&self, meta: &[PageMeta], chunk: u64) -> Header {
        if self.hot == chunk + 1 {
            self.hot_fields.split_header()
        } else {
            read_header(meta, chunk)
        }
    }

    /// Sets the header of `chunk`.
    #[inline]
    fn set_header(&mut self, meta: &[PageMeta], chunk: u64, new: Header) {
        if self.hot == chunk + 1 {
            // The hot chunk is a split one.
            self.hot_fields = TailChunk::of_split(new);
        } else {
            write_header(meta, chunk, new);
        }
    }

    /// Makes `chunk` the hot chunk, writing the previous one's header back.
    #[inline]
    fn make_hot(&mut self, meta: &[PageMeta], chunk: u64) {
        if self.hot != chunk + 1 {
            if self.hot != 0 {
                write_header(meta, self.hot - 1, self.hot_fields.split_header());
            }
            self.hot = chunk + 1;
            self.hot_fields = TailChunk::of_split(read_header(meta, chunk));
        }
    }

    /// The partly-used list links: `(next + 1, prev + 1)` in pages 1 and 2 of the chunk.
    fn link(meta: &[PageMeta], chunk: u64, which: u64) -> u64 {
        meta[(chunk * CHUNK_PAGES + which) as usize]
            .state
            .load(Ordering::Relaxed)
            >> word::CHUNK_SHIFT
    }

    fn set_link(meta: &[PageMeta], chunk: u64, which: u64, value: u64) {
        set_high(&meta[(chunk * CHUNK_PAGES + which) as usize].state, value);
    }

    fn partial_push(&mut self, meta: &[PageMeta], chunk: u64) {
        Self::set_link(meta, chunk, 1, self.partial_head);
        Self::set_link(meta, chunk, 2, 0);
        if self.partial_head != 0 {
            Self::set_link(meta, self.partial_head - 1, 2, chunk + 1);
        }
        self.partial_head = chunk + 1;
    }

    fn partial_remove(&mut self, meta: &[PageMeta], chunk: u64) {
        let next = Self::link(meta, chunk, 1);
        let prev = Self::link(meta, chunk, 2);
        if prev == 0 {
            self.partial_head = next;
        } else {
            Self::set_link(meta, prev - 1, 1, next);
        }
        if next != 0 {
            Self::set_link(meta, next - 1, 2, prev);
        }
    }
}

/// The page (offset in its chunk) that the `bump`-th first use of a split chunk hands
/// out: 3, 4, ..., 511, then 0, 1, 2. Pages 0, 1 and 2 carry the chunk's fields, which
/// keeps them out of the pagemap's stash, so they are used last: otherwise a CPU that
/// allocates and frees one page at a time would keep getting page 1 back, always through
/// the lock.
const fn bump_offset(bump: u64) -> u64 {
    (bump + 3) % CHUNK_PAGES
}

fn read_header(meta: &[PageMeta], chunk: u64) -> Header {
    let w = meta[(chunk * CHUNK_PAGES) as usize]
        .state
        .load(Ordering::Relaxed);
    Header((w >> word::CHUNK_SHIFT) as u32)
}

/// Sets a chunk header (under the allocator lock).
fn write_header(meta: &[PageMeta], chunk: u64, new: Header) {
    set_high(
        &meta[(chunk * CHUNK_PAGES) as usize].state,
        u64::from(new.0),
    );
}

/// Sets the allocator half of a state word (under the allocator lock), leaving the
/// folio half alone.
///
/// If the folio half is zero (a free page, or a tail of a 2 MiB folio) only the lock
/// holder writes the word, so a plain store does; otherwise the folio half may change
/// concurrently (reference counts, the lock bit) and one atomic exclusive-or of
/// `old ^ new` changes the allocator half alone.
fn set_high(state: &AtomicU64, new: u64) {
    let w = state.load(Ordering::Relaxed);
    if w & word::FOLIO_HALF == 0 {
        state.store(new << word::CHUNK_SHIFT, Ordering::Release);
    } else {
        let old = w >> word::CHUNK_SHIFT;
        state.fetch_xor((old ^ new) << word::CHUNK_SHIFT, Ordering::AcqRel);
    }
}

/// Makes a free page the head of a newly allocated folio with folio half `folio`.
///
/// A free page's word is written only under the allocator lock (every folio operation
/// fails on a free page without writing), so plain stores suffice.
#[inline]
fn publish(meta: &PageMeta, folio: u64) {
    meta.rmap.store(0, Ordering::Relaxed);
    let w = meta.state.load(Ordering::Relaxed);
    debug_assert_eq!(w & word::FOLIO_HALF, 0);
    meta.state.store(w | folio, Ordering::Release);
}

/// The first page of never-used chunk `chunk` whose record is not zero, if any: 512
/// loads of each word, once per chunk in the pagemap's life. Loom models skip the check
/// (their metadata is zero, and the loads would only add states to explore).
#[cfg(not(loom))]
fn first_nonzero(meta: &[PageMeta], chunk: u64) -> Option<u64> {
    let base = chunk * CHUNK_PAGES;
    let records = &meta[base as usize..(base + CHUNK_PAGES) as usize];
    // The allocator lock is held and no one writes a never-used record, so relaxed
    // loads see what the memory holds.
    records
        .iter()
        .position(|m| m.state.load(Ordering::Relaxed) | m.rmap.load(Ordering::Relaxed) != 0)
        .map(|offset| base + offset as u64)
}

/// Loom models' metadata is zero: not checked (see the other `first_nonzero`).
#[cfg(loom)]
fn first_nonzero(_meta: &[PageMeta], _chunk: u64) -> Option<u64> {
    None
}

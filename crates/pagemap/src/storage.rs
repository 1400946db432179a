//! Metadata storage allocated zeroed from the global allocator (feature `alloc`).

extern crate alloc;

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::meta::PageMeta;

/// Zeroed metadata for a pagemap, from the global allocator's `alloc_zeroed`: a kernel
/// (or a host OS) that hands out zero pages lazily makes this O(1) in the size too.
pub struct MetadataStorage {
    ptr: NonNull<PageMeta>,
    pages: usize,
}

impl MetadataStorage {
    /// Zeroed metadata for `pages` pages; `None` if the allocation fails or the size
    /// overflows.
    pub fn new_zeroed(pages: usize) -> Option<Self> {
        let layout = Layout::array::<PageMeta>(pages).ok()?;
        if layout.size() == 0 {
            return Some(Self {
                ptr: NonNull::dangling(),
                pages: 0,
            });
        }
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        Some(Self {
            ptr: NonNull::new(raw.cast::<PageMeta>())?,
            pages,
        })
    }
}

impl Deref for MetadataStorage {
    type Target = [PageMeta];

    fn deref(&self) -> &[PageMeta] {
        // SAFETY: `ptr` points at `pages` records we allocated zeroed (every bit pattern is
        // a valid `PageMeta`) and own until drop; shared access is what atomics allow.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.pages) }
    }
}

impl DerefMut for MetadataStorage {
    fn deref_mut(&mut self) -> &mut [PageMeta] {
        // SAFETY: as in `deref`; `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.pages) }
    }
}

impl Drop for MetadataStorage {
    fn drop(&mut self) {
        if self.pages != 0 {
            let layout =
                Layout::array::<PageMeta>(self.pages).expect("layout was valid at allocation");
            // SAFETY: allocated in `new_zeroed` with this very layout, freed once.
            unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

// SAFETY: the storage owns its records, which are atomics: sending or sharing it is
// sending or sharing a `Box<[PageMeta]>`.
unsafe impl Send for MetadataStorage {}
// SAFETY: as for `Send`.
unsafe impl Sync for MetadataStorage {}

impl fmt::Debug for MetadataStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataStorage")
            .field("pages", &self.pages)
            .finish()
    }
}

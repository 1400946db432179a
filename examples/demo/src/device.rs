//! The demo's device memory: an array of pages indexed by [`DeviceIndex`], standing in
//! for memory the CPU cannot map (a GPU's VRAM). Pages move to system memory by copy.

use devpriv_pte::DeviceIndex;

/// Bytes per page.
pub const PAGE_BYTES: usize = 4096;
/// 64-bit words per page.
pub const PAGE_WORDS: usize = PAGE_BYTES / 8;

/// One 4 KiB page of device memory.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct DevicePage(pub [u64; PAGE_WORDS]);

impl DevicePage {
    /// A zeroed page.
    pub const ZERO: Self = Self([0; PAGE_WORDS]);
}

/// The word a device page holds at `word` after [`DeviceMemory::fill_pattern`]: the
/// index and the word number, so a page copied to the wrong place is caught.
pub const fn device_word(index: DeviceIndex, word: usize) -> u64 {
    0xde00_0000_0000_0000 | index.number() << 16 | word as u64
}

/// The word a system frame the demo prepares holds at `word`: the frame's address tag
/// and the word number.
pub const fn system_word(tag: u64, word: usize) -> u64 {
    0x5e00_0000_0000_0000 | (tag & 0xff_ffff_ffff) << 12 | word as u64
}

/// Device memory: pages `0..len` of the device-private address space.
pub struct DeviceMemory<'a> {
    pages: &'a mut [DevicePage],
    migrated: u64,
}

impl<'a> DeviceMemory<'a> {
    /// Device memory over `pages`; page `i` is device index `i`.
    pub fn new(pages: &'a mut [DevicePage]) -> Self {
        Self { pages, migrated: 0 }
    }

    /// Fills every page with [`device_word`].
    pub fn fill_pattern(&mut self) {
        for (i, page) in self.pages.iter_mut().enumerate() {
            for (w, word) in page.0.iter_mut().enumerate() {
                *word = device_word(DeviceIndex::new(i as u64), w);
            }
        }
    }

    /// The number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether there are no pages.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// `count` pages starting at `first`, or `None` if they are not all device memory.
    pub fn pages(&self, first: DeviceIndex, count: usize) -> Option<&[DevicePage]> {
        let start = usize::try_from(first.number()).ok()?;
        self.pages.get(start..start.checked_add(count)?)
    }

    /// Pages migrated out so far.
    pub fn migrated_pages(&self) -> u64 {
        self.migrated
    }

    /// Records that `count` pages left device memory.
    pub fn note_migrated(&mut self, count: u64) {
        self.migrated += count;
    }
}

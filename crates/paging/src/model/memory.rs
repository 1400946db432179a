//! Simulated physical memory: a fixed arena of frames on the host heap, handed out by a
//! tracking allocator that fails the test on a double free and counts live frames.

use std::boxed::Box;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::vec::Vec;

use devpriv_pte::Pfn;

use crate::frames::{FrameAllocator, OutOfFrames};
use crate::mapper::{PhysMapper, TableEntries};
use crate::sync::{AtomicU64, Ordering};

/// The first frame number of the arena (frame 0 is never handed out, so a zero entry
/// can never point at a real table by accident).
pub const FIRST_PFN: u64 = 0x100;

#[derive(Debug)]
struct State {
    free: Vec<u64>,
    allocated: Vec<bool>,
    live: usize,
    allocations: u64,
    /// Fail every allocation once this many more have succeeded.
    budget: Option<u64>,
}

/// Simulated physical memory: `frames` table frames starting at [`FIRST_PFN`].
///
/// `&Memory` is a [`FrameAllocator`] that tracks every frame (a double free or a free of
/// a frame it never handed out panics) and a [`PhysMapper`] that panics when asked for
/// a frame that is not allocated — a use after free in the page table fails the test.
pub struct Memory {
    frames: Box<[TableEntries]>,
    state: Mutex<State>,
}

impl core::fmt::Debug for Memory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Memory")
            .field("frames", &self.frames.len())
            .field("live", &self.live_frames())
            .finish()
    }
}

impl Memory {
    /// An arena of `frames` zeroed frames, all free.
    pub fn new(frames: usize) -> Self {
        let arena: Box<[TableEntries]> = (0..frames)
            .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        Self {
            frames: arena,
            state: Mutex::new(State {
                free: (0..frames as u64).rev().collect(),
                allocated: std::vec![false; frames],
                live: 0,
                allocations: 0,
                budget: None,
            }),
        }
    }

    /// Frames allocated and not yet freed.
    pub fn live_frames(&self) -> usize {
        self.state.lock().unwrap().live
    }

    /// Successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.state.lock().unwrap().allocations
    }

    /// Lets only `n` more allocations succeed (`None`: no limit).
    pub fn set_budget(&self, n: Option<u64>) {
        self.state.lock().unwrap().budget = n;
    }

    /// Whether `frame` is allocated.
    pub fn is_allocated(&self, frame: Pfn) -> bool {
        let state = self.state.lock().unwrap();
        self.index(frame)
            .is_some_and(|i| state.allocated.get(i).copied().unwrap_or(false))
    }

    fn index(&self, frame: Pfn) -> Option<usize> {
        let i = frame.number().checked_sub(FIRST_PFN)? as usize;
        (i < self.frames.len()).then_some(i)
    }

    /// Writes raw entry `index` of `frame` directly, as hardware (accessed/dirty
    /// updates) or a corrupting bug would. Returns `false` if the frame is not in the
    /// arena.
    pub fn write(&self, frame: Pfn, index: usize, raw: u64) -> bool {
        match self.index(frame) {
            Some(i) => {
                self.frames[i][index].store(raw, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Atomically updates raw entry `index` of `frame` as the hardware's accessed/dirty
    /// update does (compare-exchange loop; `f` returns `None` to leave it). Returns the
    /// previous value, or `None` if `f` declined or the frame is not in the arena.
    pub fn update(
        &self,
        frame: Pfn,
        index: usize,
        f: impl FnMut(u64) -> Option<u64>,
    ) -> Option<u64> {
        let i = self.index(frame)?;
        self.frames[i][index]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, f)
            .ok()
    }

    /// The raw entry `index` of `frame`, allocated or not (the software MMU reads stale
    /// tables through this).
    pub fn read(&self, frame: Pfn, index: usize) -> Option<u64> {
        let i = self.index(frame)?;
        Some(self.frames[i][index].load(Ordering::Acquire))
    }
}

impl FrameAllocator for &Memory {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        let mut state = self.state.lock().unwrap();
        if let Some(budget) = state.budget {
            if budget == 0 {
                return Err(OutOfFrames);
            }
            state.budget = Some(budget - 1);
        }
        let i = state.free.pop().ok_or(OutOfFrames)?;
        state.allocated[i as usize] = true;
        state.live += 1;
        state.allocations += 1;
        // Hand out dirty frames: the page table must zero what it gets.
        for e in &self.frames[i as usize] {
            e.store(0xdead_0000_0000_0001, Ordering::Relaxed);
        }
        Ok(Pfn::new(FIRST_PFN + i))
    }

    fn free(&mut self, frame: Pfn) {
        let i = self
            .index(frame)
            .unwrap_or_else(|| panic!("free of {frame:?}, which is not in the arena"));
        let mut state = self.state.lock().unwrap();
        assert!(state.allocated[i], "double free of {frame:?}");
        state.allocated[i] = false;
        state.live -= 1;
        state.free.push(i as u64);
    }
}

// SAFETY: the arena is allocated once and never moves or shrinks while `Memory` lives;
// each frame is its own `TableEntries` array of atomics, so pointers are aligned, valid
// for the whole array and disjoint. The page table only makes shared references.
unsafe impl PhysMapper for &Memory {
    fn table(&self, frame: Pfn) -> NonNull<TableEntries> {
        let i = self
            .index(frame)
            .unwrap_or_else(|| panic!("{frame:?} is not in the arena"));
        assert!(
            self.state.lock().unwrap().allocated[i],
            "use of {frame:?} after it was freed"
        );
        NonNull::from(&self.frames[i])
    }
}

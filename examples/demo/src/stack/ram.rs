//! System memory for the workload: a range of RAM handed out in 4 KiB frames and 2 MiB
//! blocks, with the frame locks and the 2 MiB allocation failures devpriv-migrate's
//! [`SystemMemory`] asks for. Also the table-frame allocator of the workload's address
//! space.

use core::ptr::NonNull;

use devpriv_migrate::SystemMemory;
use devpriv_paging::{FrameAllocator, OutOfFrames};
use devpriv_pte::{PageSize, Pfn};
use spin::Mutex;

/// Frames of system memory the workload gets: 8 MiB.
pub const SYSTEM_FRAMES: usize = 2048;

/// The state of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Free,
    Small,
    LargeHead,
    LargeTail,
}

struct State {
    frames: [Frame; SYSTEM_FRAMES],
    locked: [bool; SYSTEM_FRAMES],
    live: usize,
    /// The next 4 KiB search starts here.
    hint: usize,
    /// Fail this many 2 MiB allocations.
    fail_large: u32,
}

/// A range of [`SYSTEM_FRAMES`] frames of RAM (2 MiB aligned), reached at physical
/// address + `phys_offset`.
pub struct KernelRam {
    base: Pfn,
    phys_offset: u64,
    state: Mutex<State>,
}

impl KernelRam {
    /// System memory over the frames from `base` (2 MiB aligned).
    ///
    /// # Safety
    /// The [`SYSTEM_FRAMES`] frames from `base` must be RAM that nothing else uses,
    /// reachable (read and write) at their physical address plus `phys_offset`.
    pub const unsafe fn new(base: Pfn, phys_offset: u64) -> Self {
        Self {
            base,
            phys_offset,
            state: Mutex::new(State {
                frames: [Frame::Free; SYSTEM_FRAMES],
                locked: [false; SYSTEM_FRAMES],
                live: 0,
                hint: 0,
                fail_large: 0,
            }),
        }
    }

    fn index(&self, pfn: Pfn) -> usize {
        let i = pfn
            .number()
            .checked_sub(self.base.number())
            .filter(|&i| i < SYSTEM_FRAMES as u64)
            .unwrap_or_else(|| panic!("{pfn:?} is not the workload's RAM"));
        i as usize
    }

    /// 4 KiB frames in use.
    pub fn live_frames(&self) -> usize {
        self.state.lock().live
    }

    /// Makes the next `n` 2 MiB allocations fail (as a fragmented kernel's would).
    pub fn fail_large_allocations(&self, n: u32) {
        self.state.lock().fail_large = n;
    }

    /// Zeroes the frame run `pfn` of `size`.
    ///
    /// # Safety
    /// The caller must own the frames (allocated to it, not freed, not mapped yet).
    pub unsafe fn clear(&self, pfn: Pfn, size: PageSize) {
        let ptr = (pfn.phys_addr() + self.phys_offset) as *mut u8;
        // SAFETY: the frames are RAM reachable at this address (`new`'s contract) that
        // only the caller uses (this function's contract).
        unsafe { core::ptr::write_bytes(ptr, 0, size.bytes() as usize) }
    }
}

impl SystemMemory for KernelRam {
    fn allocate(&self, size: PageSize) -> Option<Pfn> {
        let mut s = self.state.lock();
        let first = match size {
            PageSize::Size4KiB => {
                let start = s.hint;
                let i = (0..SYSTEM_FRAMES)
                    .map(|k| (start + k) % SYSTEM_FRAMES)
                    .find(|&i| s.frames[i] == Frame::Free)?;
                s.frames[i] = Frame::Small;
                s.hint = (i + 1) % SYSTEM_FRAMES;
                s.live += 1;
                i
            }
            PageSize::Size2MiB => {
                if s.fail_large > 0 {
                    s.fail_large -= 1;
                    return None;
                }
                let c = (0..SYSTEM_FRAMES / 512)
                    .map(|c| c * 512)
                    .find(|&c| s.frames[c..c + 512].iter().all(|f| *f == Frame::Free))?;
                s.frames[c] = Frame::LargeHead;
                s.frames[c + 1..c + 512].fill(Frame::LargeTail);
                s.live += 512;
                c
            }
            PageSize::Size1GiB => return None,
        };
        Some(Pfn::new(self.base.number() + first as u64))
    }

    fn free(&self, pfn: Pfn, size: PageSize) {
        let i = self.index(pfn);
        let mut s = self.state.lock();
        assert!(!s.locked[i], "free of {pfn:?}, which is locked");
        match (size, s.frames[i]) {
            (PageSize::Size4KiB, Frame::Small) => {
                s.frames[i] = Frame::Free;
                s.live -= 1;
            }
            (PageSize::Size2MiB, Frame::LargeHead) => {
                s.frames[i..i + 512].fill(Frame::Free);
                s.live -= 512;
            }
            (size, found) => panic!("free of {pfn:?} as {size:?}, but it is {found:?}"),
        }
    }

    fn split(&self, pfn: Pfn) {
        let i = self.index(pfn);
        let mut s = self.state.lock();
        assert_eq!(s.frames[i], Frame::LargeHead, "split of {pfn:?}");
        s.frames[i..i + 512].fill(Frame::Small);
        s.locked[i..i + 512].fill(true);
    }

    fn try_lock(&self, pfn: Pfn) -> bool {
        let i = self.index(pfn);
        let mut s = self.state.lock();
        !core::mem::replace(&mut s.locked[i], true)
    }

    fn unlock(&self, pfn: Pfn) {
        let i = self.index(pfn);
        let mut s = self.state.lock();
        assert!(
            core::mem::replace(&mut s.locked[i], false),
            "unlock of {pfn:?}"
        );
    }

    fn frame(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        NonNull::new((pfn.phys_addr() + self.phys_offset) as *mut u8)
    }
}

/// The workload address space's table frames, taken from [`KernelRam`] and given back
/// to it when a table empties.
pub struct RamTableFrames(pub &'static KernelRam);

impl FrameAllocator for RamTableFrames {
    fn allocate(&mut self) -> Result<Pfn, OutOfFrames> {
        self.0.allocate(PageSize::Size4KiB).ok_or(OutOfFrames)
    }

    fn free(&mut self, frame: Pfn) {
        self.0.free(frame, PageSize::Size4KiB)
    }
}

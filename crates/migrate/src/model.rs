//! Host test support (feature `model`, std): system RAM in host memory, a [`Platform`]
//! over devpriv-paging's software MMU, and a CPU that reads and writes through that MMU
//! and takes real faults through devpriv-migrate's fault path.
//!
//! * [`SystemRam`] — frames of host memory (atomic words, so concurrent CPU and copy
//!   engine accesses are defined behaviour), with a tracking allocator (a double free or
//!   a free of the wrong size panics; [`SystemRam::live_frames`] finds leaks), per-frame
//!   locks, pinned frames, a zero page, an allocation budget and 2 MiB allocation
//!   failures on cue.
//! * [`ModelPlatform`] — the platform: software-MMU tables in a
//!   [`Memory`], the [`Mmu`]
//!   behind a [`Shootdown`] as TLB, [`SystemRam`] as system memory.
//! * [`Cpu`] — loads and stores through the MMU; a fault on a software entry runs
//!   [`handle_fault_spinning`], a fault on an empty slot
//!   maps a fresh zeroed page (the kernel's anonymous fault).

use std::collections::HashSet;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::vec::Vec;

use devpriv_paging::PagingFormat;
use devpriv_paging::model::{Access, Memory, Mmu, MmuError};
use devpriv_pte::{PageSize, Pfn};

use crate::address_space::AddressSpace;
use crate::fault::{FaultOutcome, handle_fault_spinning};
use crate::platform::{Platform, SystemMemory};
use crate::sync::{AtomicU64, Ordering};

/// The first frame number of [`SystemRam`] (4 GiB: far from the table frames of
/// [`Memory`], and 2 MiB aligned).
pub const RAM_FIRST_PFN: u64 = 0x10_0000;

/// 64-bit words in a 4 KiB frame.
pub const FRAME_WORDS: usize = 512;

/// `frames` frames of zeroed atomic words. Outside loom they come from one zeroed
/// allocation, which the host backs lazily: a big simulated memory costs only the frames
/// a test touches.
pub fn zeroed_frames(frames: usize) -> Vec<[AtomicU64; FRAME_WORDS]> {
    #[cfg(not(loom))]
    {
        use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};
        if frames == 0 {
            return Vec::new();
        }
        let layout =
            Layout::array::<[AtomicU64; FRAME_WORDS]>(frames).expect("a frame count that fits");
        // SAFETY: the layout has a non-zero size (frames > 0). All-zero bytes are a
        // valid `AtomicU64` (it has the size and bit validity of `u64`), so the
        // allocation holds `frames` initialized elements; it comes from the global
        // allocator with exactly the layout of a `Vec` of that capacity, so the `Vec`
        // may own and free it.
        unsafe {
            let ptr = alloc_zeroed(layout).cast::<[AtomicU64; FRAME_WORDS]>();
            if ptr.is_null() {
                handle_alloc_error(layout);
            }
            Vec::from_raw_parts(ptr, frames, frames)
        }
    }
    #[cfg(loom)]
    {
        (0..frames)
            .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameState {
    Free,
    Small,
    LargeHead,
    LargeTail,
}

#[derive(Debug)]
struct RamState {
    frames: Vec<FrameState>,
    locked: Vec<bool>,
    pinned: HashSet<u64>,
    live: usize,
    /// Fail every allocation once this many more have succeeded.
    budget: Option<u64>,
    /// Fail this many 2 MiB allocations (`u32::MAX`: all).
    fail_large: u32,
    zero_page: Option<u64>,
    next_small: usize,
    /// The 2 MiB chunk after the last one handed out: the next search starts there.
    next_large: usize,
    /// Whether allocations hand out poisoned (dirty) memory.
    poison: bool,
}

/// System memory in host memory (see the module documentation).
pub struct SystemRam {
    words: Vec<[AtomicU64; FRAME_WORDS]>,
    state: Mutex<RamState>,
}

impl core::fmt::Debug for SystemRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SystemRam")
            .field("frames", &self.words.len())
            .field("live", &self.live_frames())
            .finish()
    }
}

impl SystemRam {
    /// `frames` frames of zeroed RAM, all free, from [`RAM_FIRST_PFN`].
    pub fn new(frames: usize) -> Self {
        Self {
            words: zeroed_frames(frames),
            state: Mutex::new(RamState {
                frames: std::vec![FrameState::Free; frames],
                locked: std::vec![false; frames],
                pinned: HashSet::new(),
                live: 0,
                budget: None,
                fail_large: 0,
                zero_page: None,
                next_small: 0,
                next_large: 0,
                poison: true,
            }),
        }
    }

    fn index(&self, pfn: Pfn) -> usize {
        let i = pfn
            .number()
            .checked_sub(RAM_FIRST_PFN)
            .unwrap_or_else(|| panic!("{pfn:?} is not system RAM"));
        assert!((i as usize) < self.words.len(), "{pfn:?} is not system RAM");
        i as usize
    }

    /// 4 KiB frames allocated and not yet freed.
    pub fn live_frames(&self) -> usize {
        self.state.lock().unwrap().live
    }

    /// Whether the frame is allocated.
    pub fn is_allocated(&self, pfn: Pfn) -> bool {
        let i = self.index(pfn);
        self.state.lock().unwrap().frames[i] != FrameState::Free
    }

    /// Whether the frame is locked.
    pub fn is_locked(&self, pfn: Pfn) -> bool {
        let i = self.index(pfn);
        self.state.lock().unwrap().locked[i]
    }

    /// Frames locked now.
    pub fn locked_frames(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .locked
            .iter()
            .filter(|l| **l)
            .count()
    }

    /// Lets only `n` more allocations succeed (`None`: no limit).
    pub fn set_budget(&self, n: Option<u64>) {
        self.state.lock().unwrap().budget = n;
    }

    /// Makes the next `n` 2 MiB allocations fail (`u32::MAX`: all of them, until reset
    /// with 0).
    pub fn fail_large_allocations(&self, n: u32) {
        self.state.lock().unwrap().fail_large = n;
    }

    /// Marks the frame pinned (or not): migration will not move it.
    pub fn set_pinned(&self, pfn: Pfn, pinned: bool) {
        let mut state = self.state.lock().unwrap();
        if pinned {
            state.pinned.insert(pfn.number());
        } else {
            state.pinned.remove(&pfn.number());
        }
    }

    /// Whether allocations hand out poisoned memory (`0xdeadbeef...` in every word, the
    /// default: a driver that forgets to copy or clear is caught) or leave the old bytes
    /// (for benchmarks of the migration bookkeeping, where poisoning would be most of
    /// the work).
    pub fn set_poisoning(&self, poison: bool) {
        self.state.lock().unwrap().poison = poison;
    }

    /// Allocates a zeroed frame and makes it the zero page.
    pub fn make_zero_page(&self) -> Pfn {
        let pfn = self
            .allocate(PageSize::Size4KiB)
            .expect("RAM for the zero page");
        self.fill(pfn, PageSize::Size4KiB, |_| 0);
        self.state.lock().unwrap().zero_page = Some(pfn.number());
        pfn
    }

    /// The words of frame `pfn`.
    pub fn words(&self, pfn: Pfn) -> &[AtomicU64; FRAME_WORDS] {
        &self.words[self.index(pfn)]
    }

    /// Word `word` (0..512) of frame `pfn`.
    pub fn read(&self, pfn: Pfn, word: usize) -> u64 {
        self.words(pfn)[word].load(Ordering::Relaxed)
    }

    /// Writes word `word` of frame `pfn`.
    pub fn write(&self, pfn: Pfn, word: usize, value: u64) {
        self.words(pfn)[word].store(value, Ordering::Relaxed)
    }

    /// Fills every word of the `size` frames from `pfn` with `value(word index)`.
    pub fn fill(&self, pfn: Pfn, size: PageSize, value: impl Fn(u64) -> u64) {
        for f in 0..size.frames() {
            let words = self.words(Pfn::new(pfn.number() + f));
            for (w, word) in words.iter().enumerate() {
                word.store(value(f * FRAME_WORDS as u64 + w as u64), Ordering::Relaxed);
            }
        }
    }

    /// Copies the `size` frames from `src` to `dst` (the memcpy copy engine).
    pub fn copy(&self, dst: Pfn, src: Pfn, size: PageSize) {
        for f in 0..size.frames() {
            let s = self.words(Pfn::new(src.number() + f));
            let d = self.words(Pfn::new(dst.number() + f));
            for (d, s) in d.iter().zip(s.iter()) {
                d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

impl SystemMemory for SystemRam {
    fn allocate(&self, size: PageSize) -> Option<Pfn> {
        let mut state = self.state.lock().unwrap();
        let large = match size {
            PageSize::Size4KiB => false,
            PageSize::Size2MiB => true,
            PageSize::Size1GiB => return None,
        };
        if large && state.fail_large != 0 {
            if state.fail_large != u32::MAX {
                state.fail_large -= 1;
            }
            return None;
        }
        if let Some(budget) = state.budget {
            if budget == 0 {
                return None;
            }
            state.budget = Some(budget - 1);
        }
        let frames = state.frames.len();
        let first = if large {
            let chunks = frames / 512;
            let start = state.next_large;
            let c = (0..chunks).map(|k| (start + k) % chunks * 512).find(|&c| {
                state.frames[c..c + 512]
                    .iter()
                    .all(|f| *f == FrameState::Free)
            })?;
            state.next_large = (c / 512 + 1) % chunks;
            c
        } else {
            let start = state.next_small;
            let i = (0..frames)
                .map(|k| (start + k) % frames)
                .find(|&i| state.frames[i] == FrameState::Free)?;
            state.next_small = (i + 1) % frames;
            i
        };
        if large {
            state.frames[first] = FrameState::LargeHead;
            for f in &mut state.frames[first + 1..first + 512] {
                *f = FrameState::LargeTail;
            }
            state.live += 512;
        } else {
            state.frames[first] = FrameState::Small;
            state.live += 1;
        }
        // Hand out dirty memory: the driver must copy or clear.
        let poison = state.poison;
        drop(state);
        for f in (0..size.frames() as usize).take_while(|_| poison) {
            for word in &self.words[first + f] {
                word.store(0xdead_beef_dead_beef, Ordering::Relaxed);
            }
        }
        Some(Pfn::new(RAM_FIRST_PFN + first as u64))
    }

    fn free(&self, pfn: Pfn, size: PageSize) {
        let i = self.index(pfn);
        let mut state = self.state.lock().unwrap();
        match (size, state.frames[i]) {
            (PageSize::Size4KiB, FrameState::Small) => {
                state.frames[i] = FrameState::Free;
                state.live -= 1;
            }
            (PageSize::Size2MiB, FrameState::LargeHead) => {
                for f in &mut state.frames[i..i + 512] {
                    *f = FrameState::Free;
                }
                state.live -= 512;
            }
            (size, found) => panic!("free of {pfn:?} as {size:?}, but it is {found:?}"),
        }
        assert!(!state.locked[i], "free of {pfn:?}, which is locked");
    }

    fn split(&self, pfn: Pfn) {
        let i = self.index(pfn);
        let mut state = self.state.lock().unwrap();
        assert_eq!(state.frames[i], FrameState::LargeHead, "split of {pfn:?}");
        assert!(state.locked[i], "split of {pfn:?}, which is not locked");
        for k in i..i + 512 {
            state.frames[k] = FrameState::Small;
            state.locked[k] = true;
        }
    }

    fn try_lock(&self, pfn: Pfn) -> bool {
        let i = self.index(pfn);
        let mut state = self.state.lock().unwrap();
        assert_ne!(state.frames[i], FrameState::Free, "lock of free {pfn:?}");
        !core::mem::replace(&mut state.locked[i], true)
    }

    fn unlock(&self, pfn: Pfn) {
        let i = self.index(pfn);
        let mut state = self.state.lock().unwrap();
        assert!(
            core::mem::replace(&mut state.locked[i], false),
            "unlock of {pfn:?}, which is not locked"
        );
    }

    fn is_pinned(&self, pfn: Pfn, _size: PageSize) -> bool {
        self.state.lock().unwrap().pinned.contains(&pfn.number())
    }

    fn zero_page(&self) -> Option<Pfn> {
        self.state.lock().unwrap().zero_page.map(Pfn::new)
    }

    fn frame(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        Some(NonNull::from(self.words(pfn)).cast())
    }
}

/// The TLBs of the CPUs that run an address space, as a shootdown sees them: one
/// software [`Mmu`] (its TLB shared by the [`Cpu`]s), and a gate that every CPU access
/// holds from translation to the end of its load or store, so that an invalidation
/// waits for accesses in flight — what the inter-processor interrupts of a real
/// shootdown guarantee. Without it a store could land in a frame after its page was
/// copied away.
pub struct Shootdown<'m, F: PagingFormat> {
    mmu: &'m Mmu<'m, F>,
    gate: std::sync::RwLock<()>,
}

impl<'m, F: PagingFormat> Shootdown<'m, F> {
    /// The shootdown for the CPUs using `mmu`.
    pub fn new(mmu: &'m Mmu<'m, F>) -> Self {
        Self {
            mmu,
            gate: std::sync::RwLock::new(()),
        }
    }

    /// The MMU.
    pub fn mmu(&self) -> &'m Mmu<'m, F> {
        self.mmu
    }
}

impl<F: PagingFormat> devpriv_paging::TlbInvalidate for Shootdown<'_, F> {
    fn publish(&self) {
        self.mmu.publish();
    }

    fn invalidate_page(&self, va: u64) {
        let _wait = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.mmu.invalidate_page(va);
    }

    fn invalidate_all(&self) {
        let _wait = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.mmu.invalidate_all();
    }

    fn complete(&self) {
        self.mmu.complete();
    }
}

/// The platform of host tests: tables in simulated [`Memory`], the software [`Mmu`]
/// behind a [`Shootdown`] as TLB, [`SystemRam`] as system memory.
pub struct ModelPlatform<'m, F>(PhantomData<(&'m (), F)>);

impl<'m, F: PagingFormat> Platform for ModelPlatform<'m, F> {
    type Format = F;
    type Mapper = &'m Memory;
    type Tlb = &'m Shootdown<'m, F>;
    type TableFrames = &'m Memory;
    type System = SystemRam;
}

/// Why a [`Cpu`] access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuError {
    /// No region holds the address, or the write is not allowed (SIGSEGV).
    Segv {
        /// The address.
        va: u64,
    },
    /// A device page could not be brought back (SIGBUS).
    Bus {
        /// The address.
        va: u64,
    },
    /// The MMU model objected (a stale TLB entry: a missing flush).
    Mmu(MmuError),
}

/// One CPU running in an address space: loads and stores 64-bit words through the
/// software MMU, taking faults the way a kernel would. Several CPUs (threads) may run
/// the same address space.
pub struct Cpu<'s, 'm, F: PagingFormat> {
    space: &'s AddressSpace<'m, ModelPlatform<'m, F>>,
}

impl<'s, 'm, F: PagingFormat> Cpu<'s, 'm, F> {
    /// A CPU of `space`.
    pub fn new(space: &'s AddressSpace<'m, ModelPlatform<'m, F>>) -> Self {
        Self { space }
    }

    /// Translates `va` and runs `data` on the physical address, with no invalidation
    /// in between (a shootdown waits for it).
    ///
    /// A translation the TLB still caches after its entry changed is used as the
    /// hardware would use it, until the invalidation comes: the data access goes to
    /// the old frame, which must still be allocated. (A migration copies only after
    /// its flush, so such a store is not lost; if it were, the tests that check the
    /// bytes would see it.)
    fn access<T>(&self, va: u64, access: Access, data: impl Fn(u64) -> T) -> Result<T, CpuError> {
        let shootdown = *self.space.tlb();
        let ram = self.space.system();
        for _ in 0..64 {
            let in_flight = shootdown.gate.read().unwrap_or_else(|e| e.into_inner());
            match shootdown.mmu.access(va, access) {
                Ok(pa) => return Ok(data(pa)),
                Err(MmuError::Stale { cached, .. })
                    if access == Access::Read
                        || F::leaf(cached.raw, cached.level).is_some_and(|(_, a)| {
                            devpriv_pte::LeafAttributes::property(&a).writable
                        }) =>
                {
                    assert!(
                        ram.is_allocated(Pfn::containing(cached.pa)),
                        "a stale translation of {va:#x} reaches a freed frame"
                    );
                    return Ok(data(cached.pa));
                }
                Err(MmuError::NotMapped { .. }) | Err(MmuError::ReadOnly) => {
                    // The fault handler may flush: no access is in flight any more.
                    drop(in_flight);
                    self.fault(va, access == Access::Write)?;
                }
                Err(e) => return Err(CpuError::Mmu(e)),
            }
        }
        panic!("the access at {va:#x} keeps faulting")
    }

    /// The kernel's fault handler: devpriv's fault path, then anonymous memory.
    fn fault(&self, va: u64, write: bool) -> Result<(), CpuError> {
        match handle_fault_spinning(self.space, va, write) {
            Err(_) => Err(CpuError::Bus { va }),
            Ok(FaultOutcome::NotDevicePrivate) => {
                if anonymous_fault(self.space, va, write) {
                    Ok(())
                } else {
                    Err(CpuError::Segv { va })
                }
            }
            Ok(_) => Ok(()),
        }
    }

    /// Loads the 64-bit word at `va` (8-byte aligned).
    pub fn read(&self, va: u64) -> Result<u64, CpuError> {
        let ram = self.space.system();
        self.access(va, Access::Read, |pa| {
            ram.read(Pfn::containing(pa), ((pa & 0xfff) >> 3) as usize)
        })
    }

    /// Stores `value` at `va` (8-byte aligned).
    pub fn write(&self, va: u64, value: u64) -> Result<(), CpuError> {
        let ram = self.space.system();
        self.access(va, Access::Write, |pa| {
            ram.write(Pfn::containing(pa), ((pa & 0xfff) >> 3) as usize, value)
        })
    }
}

/// The kernel's anonymous-memory fault at `va`: an empty slot gets a fresh zeroed page
/// (writable if the region is), or the zero page read-only for a read when
/// [`SystemRam::make_zero_page`] made one; a write to the zero page gets a fresh page; a write to a read-only page of a writable region makes
/// it writable. `false` if no region holds `va` or the write is not allowed. This is
/// the `fault_in` callback of [`snapshot`](crate::snapshot) and
/// [`make_device_exclusive`](crate::make_device_exclusive) in host tests.
pub fn anonymous_fault<F: PagingFormat>(
    space: &AddressSpace<'_, ModelPlatform<'_, F>>,
    va: u64,
    write: bool,
) -> bool {
    use devpriv_pte::{Entry, LeafAttributes};
    let Some(vma) = space.vma(va) else {
        return false;
    };
    if write && !vma.property.writable {
        return false;
    }
    let page = va & !0xfff;
    let lookup = space.read().lookup(page);
    match lookup {
        Ok((_, Entry::Absent)) => {
            let ram = space.system();
            if let (false, Some(zero)) = (write, ram.zero_page()) {
                // A read maps the shared zero page, read-only (do_anonymous_page).
                let _ = space.map_page(page, zero, PageSize::Size4KiB, false);
                return true;
            }
            let Some(pfn) = ram.allocate(PageSize::Size4KiB) else {
                return false;
            };
            ram.fill(pfn, PageSize::Size4KiB, |_| 0);
            if space
                .map_page(page, pfn, PageSize::Size4KiB, vma.property.writable)
                .is_err()
            {
                // Someone else mapped it first.
                ram.free(pfn, PageSize::Size4KiB);
            }
            true
        }
        Ok((level, Entry::Leaf { pfn, size, attrs })) => {
            if !write || attrs.property().writable {
                return true;
            }
            let table = space.read();
            let Ok(mut slot) = table.slot(page, level) else {
                return true;
            };
            let ram = space.system();
            if size == PageSize::Size4KiB && Some(pfn) == ram.zero_page() {
                // A write to the zero page gets a page of its own (copy on write).
                let Some(fresh) = ram.allocate(PageSize::Size4KiB) else {
                    return false;
                };
                ram.fill(fresh, PageSize::Size4KiB, |_| 0);
                let new = Entry::Leaf {
                    pfn: fresh,
                    size,
                    attrs: vma.leaf_attributes(true, true, true),
                };
                match slot.replace_break_before_make(&new, space.tlb()) {
                    Ok(flush) => flush.flush(space.tlb()),
                    Err(_) => ram.free(fresh, PageSize::Size4KiB),
                }
                return true;
            }
            let new = Entry::Leaf {
                pfn,
                size,
                attrs: vma.leaf_attributes(true, true, true),
            };
            if let Ok(flush) = slot.replace(&new) {
                flush.flush(space.tlb());
            }
            true
        }
        // devpriv's own entries appeared since the caller looked (a migration or a
        // device took the page): the access retries, and its fault goes to devpriv.
        Ok((
            _,
            Entry::Software(devpriv_pte::SoftwareEntry {
                kind:
                    devpriv_pte::SoftwareKind::Migration { .. }
                    | devpriv_pte::SoftwareKind::DeviceMigration { .. }
                    | devpriv_pte::SoftwareKind::DevicePrivate { .. }
                    | devpriv_pte::SoftwareKind::DeviceExclusive { .. },
                ..
            }),
        )) => true,
        // Swap entries, markers, poison: no swap here.
        _ => false,
    }
}

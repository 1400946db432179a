//! The demo the kernels run after their MMU is on and their trap handler installed.
//!
//! Every step maps something at [`crate::layout`], arms the fault handler for the one
//! fault it is about to cause, touches the memory *outside* the borrowed demo state (so
//! the trap handler can borrow it), and then checks what happened: how many faults hit,
//! what the retried access returned, what the entry holds now.
//!
//! 1. The MMU honours devpriv's present encodings: a write to a read-only page faults;
//!    an instruction fetch from a no-execute page faults; accessed/dirty are set by the
//!    hardware (x86_64) or the access-flag fault is handled (aarch64); a 2 MiB block
//!    translates to the right bytes.
//! 2. Software entries fault and are resolved: device-private write entries at level 1
//!    and one at level 2, migration entries (system memory and device-private) and a
//!    device-exclusive entry.
//! 3. The round trip of a device-private fault, timed over many pages with the
//!    handler's transcript muted (a figure worth reading only under hardware
//!    virtualisation; under TCG it measures QEMU).
//! 4. With the devpriv stack attached: the stack's own part ([`crate::stack::steps`]).
//! 5. A summary line with the counts ([`crate::report::SUMMARY_PREFIX`]).

use core::fmt::{self, Write};

use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, LeafAttributes, Level, MigrationAccess, PageProperty,
    PageSize, Pfn, SoftwareEntry, SoftwareKind,
};

use devpriv_paging::PagingFormat;

use crate::cell::TryCell;
use crate::device::{PAGE_WORDS, device_word, system_word};
use crate::fault::{Access, Demo, Expectation};
use crate::frames::FrameSource;
use crate::layout::*;
use crate::platform::Platform;
use crate::resolve::Resolver;
use crate::tables::TableError;

/// Leaf attributes of a kernel mapping (global, write-back) with the given permissions.
pub fn kernel_attrs<F: PagingFormat>(
    writable: bool,
    executable: bool,
    accessed: bool,
    dirty: bool,
) -> F::LeafAttributes {
    F::LeafAttributes::from_property(PageProperty {
        writable,
        executable,
        accessed,
        dirty,
        global: true,
        ..PageProperty::default()
    })
}

fn software<F: PagingFormat>(kind: SoftwareKind) -> Entry<F> {
    Entry::Software(SoftwareEntry::new(kind))
}

impl<P: Platform, A: FrameSource, R: Resolver> Demo<P, A, R> {
    /// Prints `  ok   <what>` or `  FAIL <what>` and counts the check.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments<'_>) {
        if ok {
            self.stats.checks_passed += 1;
        } else {
            self.stats.checks_failed += 1;
        }
        let _ = writeln!(
            self.console(),
            "  {} {what}",
            if ok { "ok  " } else { "FAIL" }
        );
    }

    /// A fresh frame run of `size` whose word `i` is `fill(pfn, i)`, `pfn` being the
    /// run's first frame.
    pub fn new_frames(&mut self, size: PageSize, fill: impl Fn(Pfn, usize) -> u64) -> Option<Pfn> {
        let pfn = self.frames.allocate(size)?;
        let words = self.frame_words(pfn, size);
        for (i, word) in words.iter_mut().enumerate() {
            *word = fill(pfn, i);
        }
        Some(pfn)
    }

    /// The words of a frame run the demo allocated, through the physical mapping.
    fn frame_words(&mut self, pfn: Pfn, size: PageSize) -> &mut [u64] {
        let ptr = self.tables.phys_to_virt(pfn.phys_addr()) as *mut u64;
        // SAFETY: `pfn` came from `self.frames` (unused RAM reached at this offset, by the
        // `FrameSource` contract); the demo only touches it through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(ptr, size.bytes() as usize / 8) }
    }

    /// Reads word `index` of frame `pfn` through the physical mapping.
    fn frame_word(&self, pfn: Pfn, index: usize) -> u64 {
        let ptr = self.tables.phys_to_virt(pfn.phys_addr()) as *const u64;
        // SAFETY: the frame is RAM reached at this offset (`FrameSource` contract); a
        // volatile read does not assume anything about concurrent MMU-side writes.
        unsafe { ptr.add(index).read_volatile() }
    }

    /// Installs `entry` for `va` at `level` in its empty slot (creating the tables above
    /// it) and flushes what the page table says to.
    fn put(&mut self, va: u64, level: Level, entry: Entry<P::Format>) -> Result<(), TableError> {
        self.tables
            .install(va, level, &entry, &mut self.frames)?
            .flush(self.platform.tlb());
        Ok(())
    }

    /// The leaf's portable attributes at `va`, if a leaf maps it.
    fn leaf_property(&self, va: u64) -> Option<PageProperty> {
        match self.tables.walk(va).ok()?.entry {
            Entry::Leaf { attrs, .. } => Some(attrs.property()),
            _ => None,
        }
    }
}

fn read(va: u64) -> u64 {
    // SAFETY: the demo mapped `va` (or put a software entry there whose fault the handler
    // resolves) before calling; a volatile access is not reordered or elided.
    unsafe { (va as *const u64).read_volatile() }
}

fn write(va: u64, value: u64) {
    // SAFETY: as for `read`.
    unsafe { (va as *mut u64).write_volatile(value) }
}

/// The titles of parts 1–3, in order (`cargo xtask qemu` checks each `step N: title`
/// line).
pub const STEPS: [&str; 10] = [
    "write to a read-only page",
    "instruction fetch from a no-execute page",
    "accessed and dirty",
    "a 2 MiB block",
    "device-private write entries at level 1",
    "a device-private write entry at level 2 (2 MiB)",
    "migration entries",
    "a device-private migration entry",
    "a device-exclusive entry",
    "device-private fault round trips, timed",
];

/// Every `step N: title` line a full run prints: parts 1–3, then the stack's part 4.
pub fn expected_step_lines() -> impl Iterator<Item = (usize, &'static str)> {
    STEPS
        .iter()
        .chain(crate::stack::steps::STEPS.iter())
        .enumerate()
        .map(|(i, title)| (i + 1, *title))
}

/// One step of the demo.
type Step<P, A, R> = fn(&TryCell<Demo<P, A, R>>) -> Result<(), Stop>;

/// Runs the whole demo on the state in `cell` and prints the summary; true if every check
/// held. The kernel's trap handler must borrow the same cell.
pub fn run<P: Platform, A: FrameSource, R: Resolver>(cell: &TryCell<Demo<P, A, R>>) -> bool {
    let functions: [Step<P, A, R>; 10] = [
        read_only_page,
        no_execute_page,
        accessed_dirty,
        block_2m,
        device_private_pages,
        device_private_block,
        migration_entries,
        device_migration_entry,
        device_exclusive_entry,
        timed_round_trips,
    ];
    let steps: [(&str, Step<P, A, R>); 10] = core::array::from_fn(|i| (STEPS[i], functions[i]));
    let arch = cell.with(|d| {
        let _ = writeln!(
            d.console(),
            "devpriv-demo: {} — devpriv page tables on the real MMU",
            P::NAME
        );
        P::NAME
    });
    if arch.is_none() {
        return false;
    }
    for (number, (title, step)) in steps.iter().enumerate() {
        if number == 0 {
            say(
                cell,
                format_args!("devpriv-demo: part 1: the MMU honours devpriv's present encodings"),
            );
        } else if number == 4 {
            say(
                cell,
                format_args!("devpriv-demo: part 2: software entries fault and are resolved"),
            );
        } else if number == 9 {
            say(
                cell,
                format_args!("devpriv-demo: part 3: how long a device-private fault takes"),
            );
        }
        say(cell, format_args!("step {}: {title}", number + 1));
        if let Err(stop) = step(cell) {
            let _ = cell.with(|d| {
                d.check(false, format_args!("step {} stopped: {stop}", number + 1));
            });
        }
    }
    if let Some(stack) = cell.with(|d| d.stack()).flatten() {
        crate::stack::steps::run(cell, stack, steps.len() + 1);
    }
    cell.with(|d| {
        let _ = writeln!(d.console(), "{}", d.stats.summary(P::NAME));
        d.stats.passed()
    })
    .unwrap_or(false)
}

/// Why a step could not go on.
#[derive(Debug)]
pub enum Stop {
    /// The demo state was borrowed when the step needed it.
    Busy,
    /// Out of frames.
    OutOfFrames,
    /// A table operation failed.
    Table(TableError),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy => f.write_str("the demo state was busy"),
            Self::OutOfFrames => f.write_str("out of frames"),
            Self::Table(e) => write!(f, "page-table error {e}"),
        }
    }
}

impl From<TableError> for Stop {
    fn from(e: TableError) -> Self {
        Self::Table(e)
    }
}

fn say<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
    what: fmt::Arguments<'_>,
) {
    let _ = cell.with(|d| writeln!(d.console(), "{what}"));
}

fn with<P: Platform, A: FrameSource, R: Resolver, T>(
    cell: &TryCell<Demo<P, A, R>>,
    f: impl FnOnce(&mut Demo<P, A, R>) -> Result<T, Stop>,
) -> Result<T, Stop> {
    cell.with(f).unwrap_or(Err(Stop::Busy))
}

fn read_only_page<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let va = READ_ONLY_PAGE;
    let pfn = with(cell, |d| {
        let pfn = d
            .new_frames(PageSize::Size4KiB, |pfn, i| system_word(pfn.number(), i))
            .ok_or(Stop::OutOfFrames)?;
        let attrs = kernel_attrs::<P::Format>(false, false, true, true);
        d.put(
            va,
            Level::L1,
            Entry::Leaf {
                pfn,
                size: PageSize::Size4KiB,
                attrs,
            },
        )?;
        Ok(pfn)
    })?;
    let first = read(va);
    with(cell, |d| {
        d.check(
            first == system_word(pfn.number(), 0),
            format_args!("a read of the read-only page returns its frame's data ({first:#x})"),
        );
        d.expect(Expectation {
            start: va,
            len: 4096,
            access: Access::Write,
        });
        Ok(())
    })?;
    write(va + 8, 0x1234_5678);
    with(cell, |d| {
        let hits = d.take_hits();
        d.check(
            hits == 1,
            format_args!("the write faulted once ({hits} fault(s))"),
        );
        let landed = d.frame_word(pfn, 1);
        d.check(
            landed == 0x1234_5678,
            format_args!("the retried write reached the frame ({landed:#x})"),
        );
        Ok(())
    })
}

fn no_execute_page<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let va = NO_EXECUTE_PAGE;
    with(cell, |d| {
        let pfn = d
            .new_frames(PageSize::Size4KiB, |_, _| 0)
            .ok_or(Stop::OutOfFrames)?;
        let code = P::RETURN_INSTRUCTION;
        let dst = d.tables.phys_to_virt(pfn.phys_addr());
        // SAFETY: the frame is fresh RAM of 4 KiB reached at `dst` (FrameSource
        // contract); the instruction is a few bytes.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), dst as *mut u8, code.len()) };
        d.platform.sync_icache(dst, code.len());
        let attrs = kernel_attrs::<P::Format>(false, false, true, false);
        d.put(
            va,
            Level::L1,
            Entry::Leaf {
                pfn,
                size: PageSize::Size4KiB,
                attrs,
            },
        )?;
        d.expect(Expectation {
            start: va,
            len: 4096,
            access: Access::Execute,
        });
        Ok(())
    })?;
    // SAFETY: the page holds a lone `ret` (RETURN_INSTRUCTION), a valid function with the
    // C ABI that takes nothing and returns nothing.
    let function: extern "C" fn() = unsafe { core::mem::transmute(va as *const ()) };
    function();
    with(cell, |d| {
        let hits = d.take_hits();
        d.check(
            hits == 1,
            format_args!("the call faulted once ({hits} fault(s)); the retried call returned"),
        );
        Ok(())
    })
}

fn accessed_dirty<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let va = ACCESSED_DIRTY_PAGE;
    with(cell, |d| {
        let pfn = d
            .new_frames(PageSize::Size4KiB, |_, i| i as u64)
            .ok_or(Stop::OutOfFrames)?;
        let attrs = kernel_attrs::<P::Format>(true, false, false, false);
        d.put(
            va,
            Level::L1,
            Entry::Leaf {
                pfn,
                size: PageSize::Size4KiB,
                attrs,
            },
        )?;
        if !P::HARDWARE_ACCESSED_DIRTY {
            d.expect(Expectation {
                start: va,
                len: 4096,
                access: Access::Read,
            });
        }
        Ok(())
    })?;
    let value = read(va + 16);
    with(cell, |d| {
        let hits = d.take_hits();
        let property = d.leaf_property(va).unwrap_or_default();
        d.check(
            value == 2,
            format_args!("the read returned the frame's data ({value})"),
        );
        if P::HARDWARE_ACCESSED_DIRTY {
            d.check(
                hits == 0 && property.accessed && !property.dirty,
                format_args!("the MMU set accessed, not dirty, on a read"),
            );
        } else {
            d.check(
                hits == 1 && property.accessed,
                format_args!(
                    "the read took an access-flag fault ({hits}); the handler set the flag"
                ),
            );
        }
        Ok(())
    })?;
    write(va + 16, 7);
    with(cell, |d| {
        let property = d.leaf_property(va).unwrap_or_default();
        if P::HARDWARE_ACCESSED_DIRTY {
            d.check(property.dirty, format_args!("the MMU set dirty on a write"));
        } else {
            let _ = writeln!(
                d.console(),
                "  note this CPU has no hardware dirty-bit management; a kernel tracks dirty \
                 with write faults"
            );
        }
        Ok(())
    })
}

fn block_2m<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let va = BLOCK_2M;
    let pfn = with(cell, |d| {
        let pfn = d
            .new_frames(PageSize::Size2MiB, |pfn, i| system_word(pfn.number(), i))
            .ok_or(Stop::OutOfFrames)?;
        let attrs = kernel_attrs::<P::Format>(true, false, true, true);
        d.put(
            va,
            Level::L2,
            Entry::Leaf {
                pfn,
                size: PageSize::Size2MiB,
                attrs,
            },
        )?;
        Ok(pfn)
    })?;
    let probes = [(0usize, 0usize), (1, 7), (255, 100), (511, 511)];
    let mut seen = [0u64; 4];
    for (slot, (page, word)) in seen.iter_mut().zip(probes) {
        *slot = read(va + (page * 4096 + word * 8) as u64);
    }
    with(cell, |d| {
        let good = seen
            .iter()
            .zip(probes)
            .all(|(v, (page, word))| *v == system_word(pfn.number(), page * PAGE_WORDS + word));
        d.check(
            good,
            format_args!("reads at four offsets across the block return the frame's words"),
        );
        let walk = d.tables.walk(va + 0x12_3456).map(|w| (w.level, w.entry));
        let block = matches!(
            walk,
            Ok((Level::L2, Entry::Leaf { size: PageSize::Size2MiB, pfn: p, .. })) if p == pfn
        );
        d.check(
            block,
            format_args!(
                "the walk finds one 2 MiB leaf at level 2 for frame {:#x}",
                pfn.phys_addr()
            ),
        );
        Ok(())
    })
}

fn device_private_pages<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let pages = DEVICE_BUFFER_PAGES;
    with(cell, |d| {
        for i in 0..pages {
            let kind = SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index: DeviceIndex::new(DEVICE_BUFFER_FIRST_INDEX + i),
            };
            d.put(DEVICE_BUFFER + i * 4096, Level::L1, software(kind))?;
        }
        let _ = writeln!(
            d.console(),
            "  {pages} pages at {DEVICE_BUFFER:#x} hold device-private write entries for \
             indices {}..{}",
            DEVICE_BUFFER_FIRST_INDEX,
            DEVICE_BUFFER_FIRST_INDEX + pages
        );
        d.expect(Expectation {
            start: DEVICE_BUFFER,
            len: pages * 4096,
            access: Access::Read,
        });
        Ok(())
    })?;
    let mut values = [0u64; DEVICE_BUFFER_PAGES as usize];
    for (i, value) in values.iter_mut().enumerate() {
        *value = read(DEVICE_BUFFER + i as u64 * 4096 + 8 * (3 * i as u64));
    }
    with(cell, |d| {
        let hits = d.take_hits();
        d.check(
            hits == pages as u32,
            format_args!("one fault per page ({hits} for {pages} pages)"),
        );
        let good = values.iter().enumerate().all(|(i, v)| {
            *v == device_word(
                DeviceIndex::new(DEVICE_BUFFER_FIRST_INDEX + i as u64),
                3 * i,
            )
        });
        d.check(
            good,
            format_args!("every retried read returned the device page's data"),
        );
        Ok(())
    })?;
    write(DEVICE_BUFFER + 8, 0xfeed);
    let back = read(DEVICE_BUFFER + 8);
    with(cell, |d| {
        d.check(
            back == 0xfeed,
            format_args!("the migrated pages are writable without another fault"),
        );
        Ok(())
    })
}

fn device_private_block<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let index = DeviceIndex::new(DEVICE_BLOCK_FIRST_INDEX);
    with(cell, |d| {
        let kind = SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index,
        };
        d.put(DEVICE_BLOCK_2M, Level::L2, software(kind))?;
        d.expect(Expectation {
            start: DEVICE_BLOCK_2M,
            len: PageSize::Size2MiB.bytes(),
            access: Access::Write,
        });
        Ok(())
    })?;
    let offset = 0x12_3458u64;
    write(DEVICE_BLOCK_2M + offset, 0xb10c);
    let probes = [0u64, 0x1000, 0x1f_fff8];
    let mut seen = [0u64; 3];
    for (slot, probe) in seen.iter_mut().zip(probes) {
        *slot = read(DEVICE_BLOCK_2M + probe);
    }
    let written = read(DEVICE_BLOCK_2M + offset);
    with(cell, |d| {
        let hits = d.take_hits();
        d.check(
            hits == 1,
            format_args!("the whole 2 MiB took one fault ({hits})"),
        );
        let good = seen.iter().zip(probes).all(|(v, off)| {
            let page = off as usize / 4096;
            let word = (off as usize % 4096) / 8;
            *v == device_word(index.checked_add(page as u64).unwrap_or(index), word)
        });
        d.check(
            good,
            format_args!(
                "reads across the block return the 512 device pages' data ({:#x}, {:#x}, {:#x})",
                seen[0], seen[1], seen[2]
            ),
        );
        d.check(
            written == 0xb10c,
            format_args!("the faulting write landed ({written:#x})"),
        );
        let level = d.tables.walk(DEVICE_BLOCK_2M).map(|w| w.level);
        d.check(
            level == Ok(Level::L2),
            format_args!("the block is mapped by one level-2 leaf"),
        );
        Ok(())
    })
}

fn migration_entries<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let (write_pfn, read_pfn) = with(cell, |d| {
        let mut frames = [Pfn::new(0); 2];
        for frame in &mut frames {
            *frame = d
                .new_frames(PageSize::Size4KiB, |pfn, i| system_word(pfn.number(), i))
                .ok_or(Stop::OutOfFrames)?;
        }
        let write_kind = SoftwareKind::Migration {
            access: MigrationAccess::Write,
            pfn: frames[0],
            young: true,
            dirty: true,
        };
        let read_kind = SoftwareKind::Migration {
            access: MigrationAccess::Read,
            pfn: frames[1],
            young: true,
            dirty: false,
        };
        d.put(MIGRATION_WRITE_PAGE, Level::L1, software(write_kind))?;
        d.put(MIGRATION_READ_PAGE, Level::L1, software(read_kind))?;
        d.expect(Expectation {
            start: MIGRATION_WRITE_PAGE,
            len: 4096,
            access: Access::Write,
        });
        Ok((frames[0], frames[1]))
    })?;
    write(MIGRATION_WRITE_PAGE + 40, 0xabcd);
    with(cell, |d| {
        let hits = d.take_hits();
        let landed = d.frame_word(write_pfn, 5);
        let kept = d.frame_word(write_pfn, 6);
        d.check(
            hits == 1 && landed == 0xabcd && kept == system_word(write_pfn.number(), 6),
            format_args!("a write to a migration-write entry faulted once and landed in the frame"),
        );
        d.expect(Expectation {
            start: MIGRATION_READ_PAGE,
            len: 4096,
            access: Access::Read,
        });
        Ok(())
    })?;
    let value = read(MIGRATION_READ_PAGE + 72);
    with(cell, |d| {
        let hits = d.take_hits();
        let writable = d.leaf_property(MIGRATION_READ_PAGE).map(|p| p.writable);
        d.check(
            hits == 1 && value == system_word(read_pfn.number(), 9) && writable == Some(false),
            format_args!(
                "a read of a migration-read entry faulted once; the page came back read-only"
            ),
        );
        Ok(())
    })
}

fn device_migration_entry<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let index = DeviceIndex::new(DEVICE_MIGRATION_INDEX);
    with(cell, |d| {
        let kind = SoftwareKind::DeviceMigration {
            access: MigrationAccess::Write,
            index,
            young: true,
            dirty: false,
        };
        d.put(DEVICE_MIGRATION_PAGE, Level::L1, software(kind))?;
        d.expect(Expectation {
            start: DEVICE_MIGRATION_PAGE,
            len: 4096,
            access: Access::Write,
        });
        Ok(())
    })?;
    write(DEVICE_MIGRATION_PAGE + 16, 0x77);
    let other = read(DEVICE_MIGRATION_PAGE + 24);
    let written = read(DEVICE_MIGRATION_PAGE + 16);
    with(cell, |d| {
        let hits = d.take_hits();
        d.check(
            hits == 1 && written == 0x77 && other == device_word(index, 3),
            format_args!("a write to a device-private migration entry faulted once; the page holds the device's data"),
        );
        Ok(())
    })
}

fn device_exclusive_entry<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    let pfn = with(cell, |d| {
        let pfn = d
            .new_frames(PageSize::Size4KiB, |pfn, i| system_word(pfn.number(), i))
            .ok_or(Stop::OutOfFrames)?;
        let kind = SoftwareKind::DeviceExclusive { pfn };
        d.put(DEVICE_EXCLUSIVE_PAGE, Level::L1, software(kind))?;
        d.expect(Expectation {
            start: DEVICE_EXCLUSIVE_PAGE,
            len: 4096,
            access: Access::Write,
        });
        Ok(pfn)
    })?;
    write(DEVICE_EXCLUSIVE_PAGE + 8, 0x55);
    with(cell, |d| {
        let hits = d.take_hits();
        let landed = d.frame_word(pfn, 1);
        let kept = d.frame_word(pfn, 2);
        d.check(
            hits == 1 && landed == 0x55 && kept == system_word(pfn.number(), 2),
            format_args!(
                "a write to a device-exclusive entry faulted once and reached the same frame"
            ),
        );
        Ok(())
    })
}

fn timed_round_trips<P: Platform, A: FrameSource, R: Resolver>(
    cell: &TryCell<Demo<P, A, R>>,
) -> Result<(), Stop> {
    with(cell, |d| {
        for i in 0..TIMED_PAGES {
            let kind = SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index: DeviceIndex::new(TIMED_FIRST_INDEX + i),
            };
            d.put(TIMED_BUFFER + i * 4096, Level::L1, software(kind))?;
        }
        d.expect(Expectation {
            start: TIMED_BUFFER,
            len: TIMED_PAGES * 4096,
            access: Access::Read,
        });
        d.set_quiet(true);
        Ok(())
    })?;
    let mut sum = 0u64;
    let start = P::cycles();
    for i in 0..TIMED_PAGES {
        sum = sum.wrapping_add(read(TIMED_BUFFER + i * 4096 + 8));
    }
    let elapsed = P::cycles().wrapping_sub(start);
    with(cell, |d| {
        d.set_quiet(false);
        let hits = d.take_hits();
        let expected = (0..TIMED_PAGES).fold(0u64, |acc, i| {
            acc.wrapping_add(device_word(DeviceIndex::new(TIMED_FIRST_INDEX + i), 1))
        });
        d.check(
            hits == TIMED_PAGES as u32 && sum == expected,
            format_args!(
                "{TIMED_PAGES} faults on device-private entries, each resolved and retried \
                 ({hits} faults, data {})",
                if sum == expected { "right" } else { "WRONG" }
            ),
        );
        let _ = writeln!(
            d.console(),
            "  time {elapsed} {} for {TIMED_PAGES} faults: {} {} per fault (trap, walk, \
             decode, 4 KiB copy, compare-exchange, return, retry); a figure for devpriv only \
             under KVM on bare metal: under TCG or nested virtualisation it measures the \
             emulator",
            P::CYCLE_UNIT,
            elapsed / TIMED_PAGES,
            P::CYCLE_UNIT
        );
        Ok(())
    })
}

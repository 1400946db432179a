//! Host tests: page tables in host memory (physical address = host address), a platform
//! that records its console and flushes, and the fault handler driven with synthetic
//! faults on both entry formats.

use core::cell::RefCell;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::string::String;
use std::vec::Vec;

use devpriv_paging::{PagingError, PagingFormat, TlbInvalidate};
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, LeafAttributes, Level, MigrationAccess, PageSize, Pfn,
    SoftwareEntry, SoftwareKind, SwapType,
};

use crate::device::{DevicePage, PAGE_WORDS, device_word};
use crate::report::{PASS_MARKER, SUMMARY_PREFIX};
use crate::resolve::EntryReport;
use crate::scenario::kernel_attrs;
use crate::*;

/// 2 MiB-aligned host memory standing in for physical RAM.
struct Ram {
    base: *mut u8,
    layout: Layout,
}

impl Ram {
    fn new(bytes: usize) -> Self {
        let layout = Layout::from_size_align(bytes, 2 << 20).unwrap();
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        Self { base, layout }
    }

    fn frames(&self) -> BumpFrames {
        let start = self.base as u64;
        // SAFETY: the allocation is ours alone and reached at its own address (offset 0).
        unsafe { BumpFrames::new(start, start + self.layout.size() as u64) }
    }

    fn word(pfn: Pfn, index: usize) -> u64 {
        // SAFETY: test frames are inside the live allocation; host address = "physical".
        unsafe { (pfn.phys_addr() as *const u64).add(index).read() }
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) };
    }
}

/// A platform that records what the demo asks of it.
struct Recorder<F> {
    console: RefCell<String>,
    tlb: RecordingTlb,
    format: core::marker::PhantomData<F>,
}

/// TLB maintenance that records the pages it is asked to invalidate.
#[derive(Default)]
struct RecordingTlb {
    flushed: std::sync::Mutex<Vec<u64>>,
}

impl<F> Recorder<F> {
    fn new() -> Self {
        Self {
            console: RefCell::new(String::new()),
            tlb: RecordingTlb::default(),
            format: core::marker::PhantomData,
        }
    }
}

impl TlbInvalidate for RecordingTlb {
    fn invalidate_page(&self, va: u64) {
        self.flushed.lock().unwrap().push(va);
    }

    fn invalidate_all(&self) {
        self.flushed.lock().unwrap().push(u64::MAX);
    }
}

impl<F: PagingFormat> Platform for Recorder<F> {
    type Format = F;
    type Tlb = RecordingTlb;
    const NAME: &'static str = "host";
    const HARDWARE_ACCESSED_DIRTY: bool = true;
    const RETURN_INSTRUCTION: &'static [u8] = &[0xc3];
    const CYCLE_UNIT: &'static str = "host ticks";

    fn cycles() -> u64 {
        0
    }

    fn write_str(&self, s: &str) {
        self.console.borrow_mut().push_str(s);
    }

    fn tlb(&self) -> &RecordingTlb {
        &self.tlb
    }

    fn sync_icache(&self, _va: u64, _len: usize) {}
}

type TestDemo<'a, F> = Demo<Recorder<F>, BumpFrames, DeviceResolver<'a>>;

/// 1024 device pages (indices 0..1024).
fn device_pages() -> Vec<DevicePage> {
    std::vec![DevicePage::ZERO; 1024]
}

/// A demo over fresh host RAM and `pages` of device memory filled with the pattern.
fn demo<'a, F: PagingFormat>(ram: &Ram, pages: &'a mut [DevicePage]) -> TestDemo<'a, F> {
    let mut frames = ram.frames();
    let root = frames.allocate(PageSize::Size4KiB).unwrap();
    // SAFETY: the root and all table frames come from `ram` (zeroed, offset 0) and are
    // only changed through this `LiveTables`.
    let tables = unsafe { LiveTables::<F>::new(root, Level::L4, 0) };
    let mut device = DeviceMemory::new(pages);
    device.fill_pattern();
    Demo::new(Recorder::new(), tables, frames, DeviceResolver::new(device))
}

const VA: u64 = 0x0000_0040_0040_0000;

fn software<F: PagingFormat>(kind: SoftwareKind) -> Entry<F> {
    Entry::Software(SoftwareEntry::new(kind))
}

fn put<F: PagingFormat>(d: &mut TestDemo<'_, F>, va: u64, level: Level, entry: Entry<F>) {
    d.tables
        .install(va, level, &entry, &mut d.frames)
        .unwrap()
        .ignore();
}

fn fault(address: u64, access: Access, cause: Cause) -> Fault {
    Fault {
        address,
        access,
        cause,
    }
}

fn leaf<F: PagingFormat>(
    d: &TestDemo<'_, F>,
    va: u64,
) -> (Level, Pfn, PageSize, F::LeafAttributes) {
    let walk = d.tables.walk(va).unwrap();
    match walk.entry {
        Entry::Leaf { pfn, size, attrs } => (walk.level, pfn, size, attrs),
        other => panic!("expected a leaf at {va:#x}, found {other:?}"),
    }
}

macro_rules! both_formats {
    ($($name:ident),* $(,)?) => {
        mod x86_64_format {
            $(#[test] fn $name() { super::$name::<super::X86_64>(); })*
        }
        mod aarch64_format {
            $(#[test] fn $name() { super::$name::<super::Aarch64>(); })*
        }
    };
}

both_formats!(
    set_and_walk_round_trip_every_kind,
    map_range_uses_blocks_where_aligned,
    covered_and_unaligned_are_errors,
    replace_reports_a_lost_race,
    device_private_page_is_migrated_and_mapped,
    device_private_block_is_migrated_as_one_2m_leaf,
    migration_entries_restore_the_frame_with_their_access,
    device_migration_entry_copies_the_device_page,
    device_exclusive_entry_maps_the_same_frame_writable,
    present_leaf_faults_are_fixed_as_the_cause_says,
    unexpected_faults_fail,
    unhandled_software_kinds_fail_with_the_reason,
);

fn set_and_walk_round_trip_every_kind<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let frame = d.frames.allocate(PageSize::Size4KiB).unwrap();
    let attrs = kernel_attrs::<F>(true, false, true, true);
    let entries = [
        (
            VA,
            Level::L1,
            Entry::Leaf {
                pfn: frame,
                size: PageSize::Size4KiB,
                attrs,
            },
        ),
        (
            VA + 0x1000,
            Level::L1,
            software(SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index: DeviceIndex::new(77),
            }),
        ),
        (
            VA + 0x20_0000,
            Level::L2,
            software(SoftwareKind::Migration {
                access: MigrationAccess::ReadExclusive,
                pfn: Pfn::new(0x1234),
                young: true,
                dirty: false,
            }),
        ),
    ];
    for (va, level, entry) in entries {
        put(&mut d, va, level, entry);
    }
    for (va, level, entry) in entries {
        let walk = d.tables.walk(va + 0x10).unwrap();
        assert_eq!((walk.level, walk.entry), (level, entry));
    }
    let absent = d.tables.walk(VA + 0x2000).unwrap();
    assert_eq!((absent.level, absent.entry), (Level::L1, Entry::Absent));
    let far = d.tables.walk(0x0000_7000_0000_0000).unwrap();
    assert_eq!((far.level, far.entry), (Level::L4, Entry::Absent));
}

fn map_range_uses_blocks_where_aligned<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut frames = ram.frames();
    let root = frames.allocate(PageSize::Size4KiB).unwrap();
    // SAFETY: the root and the table frames come from `ram` (zeroed, offset 0).
    let tables = unsafe { LiveTables::<F>::new(root, Level::L4, 0) };
    let start = 0x4000_0000 - 0x2000;
    let attrs = kernel_attrs::<F>(true, false, true, true);
    let counts = tables
        .map_range(
            start,
            start,
            0x2000 + 0x20_0000 + 0x1000,
            attrs,
            &mut frames,
        )
        .unwrap();
    assert_eq!(counts, (3, 1));
    let (level, pfn, size, _) = {
        let walk = tables.walk(0x4000_0000 + 0x1234).unwrap();
        match walk.entry {
            Entry::Leaf { pfn, size, attrs } => (walk.level, pfn, size, attrs),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        (level, pfn, size),
        (Level::L2, Pfn::new(0x4_0000), PageSize::Size2MiB)
    );
    assert_eq!(
        tables.walk(start).map(|w| w.level),
        Ok(Level::L1),
        "the unaligned head is mapped with 4 KiB pages"
    );
}

fn covered_and_unaligned_are_errors<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let block = d.frames.allocate(PageSize::Size2MiB).unwrap();
    let attrs = kernel_attrs::<F>(true, false, true, true);
    put(
        &mut d,
        VA,
        Level::L2,
        Entry::Leaf {
            pfn: block,
            size: PageSize::Size2MiB,
            attrs,
        },
    );
    let under = d
        .tables
        .install(VA + 0x1000, Level::L1, &Entry::Absent, &mut d.frames);
    assert_eq!(
        under.map(|f| f.ignore()),
        Err(TableError::Paging(PagingError::Occupied {
            va: VA,
            level: Level::L2
        }))
    );
    let unaligned = d
        .tables
        .install(VA + 0x1000, Level::L2, &Entry::Absent, &mut d.frames);
    assert_eq!(
        unaligned.map(|f| f.ignore()),
        Err(TableError::Paging(PagingError::Unaligned {
            value: VA + 0x1000,
            required: 2 << 20
        }))
    );
    // The block is still there, and installing over it is refused too.
    let again = d
        .tables
        .install(VA, Level::L2, &Entry::Absent, &mut d.frames);
    assert_eq!(
        again.map(|f| f.ignore()),
        Err(TableError::Paging(PagingError::Occupied {
            va: VA,
            level: Level::L2
        }))
    );
    assert!(matches!(
        d.tables.walk(VA).unwrap().entry,
        Entry::Leaf { pfn, .. } if pfn == block
    ));
}

fn replace_reports_a_lost_race<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let entry = software::<F>(SoftwareKind::DeviceExclusive { pfn: Pfn::new(9) });
    put(&mut d, VA, Level::L1, entry);
    let walk = d.tables.walk(VA).unwrap();
    // Someone else changes the entry between the walk and the replacement.
    walk.slot.store(0, core::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        d.tables.replace(&walk, &Entry::Absent),
        Err(TableError::Raced { found: 0 })
    );
}

fn device_private_page_is_migrated_and_mapped<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let index = DeviceIndex::new(5);
    put(
        &mut d,
        VA,
        Level::L1,
        software(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index,
        }),
    );
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Read,
    });
    let outcome = d.handle_fault(fault(VA + 24, Access::Read, Cause::NotPresent));
    assert_eq!(outcome, Outcome::Resume);
    assert_eq!(d.take_hits(), 1);
    let (level, pfn, size, attrs) = leaf(&d, VA);
    assert_eq!((level, size), (Level::L1, PageSize::Size4KiB));
    let property = attrs.property();
    assert!(property.writable && property.accessed && !property.executable);
    for word in [0, 3, PAGE_WORDS - 1] {
        assert_eq!(Ram::word(pfn, word), device_word(index, word));
    }
    assert_eq!(d.stats.device_private, 1);
    assert_eq!(d.resolver.device().migrated_pages(), 1);
    assert!(
        d.platform.tlb.flushed.lock().unwrap().is_empty(),
        "an invalid entry is never cached: installing the leaf needs barriers, not an \
         invalidation"
    );
    let console = d.platform.console.borrow();
    assert!(
        console.contains("device-private write, index 5"),
        "{console}"
    );
}

fn device_private_block_is_migrated_as_one_2m_leaf<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let index = DeviceIndex::new(512);
    put(
        &mut d,
        VA,
        Level::L2,
        software(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Read,
            index,
        }),
    );
    d.expect(Expectation {
        start: VA,
        len: 2 << 20,
        access: Access::Read,
    });
    let outcome = d.handle_fault(fault(VA + 0x12_3450, Access::Read, Cause::NotPresent));
    assert_eq!(outcome, Outcome::Resume);
    let (level, pfn, size, attrs) = leaf(&d, VA + 0x1f_f000);
    assert_eq!((level, size), (Level::L2, PageSize::Size2MiB));
    assert!(
        !attrs.property().writable,
        "a device-private read entry comes back read-only"
    );
    assert!(pfn.is_aligned(512));
    for (page, word) in [(0usize, 0usize), (1, 1), (511, 511)] {
        let expected = device_word(index.checked_add(page as u64).unwrap(), word);
        assert_eq!(Ram::word(pfn, page * PAGE_WORDS + word), expected);
    }
    assert_eq!(d.resolver.device().migrated_pages(), 512);
    assert!(
        d.platform
            .console
            .borrow()
            .contains("device-private read, index 512 (2 MiB entry)")
    );
}

fn migration_entries_restore_the_frame_with_their_access<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let cases = [
        (MigrationAccess::Write, true, true),
        (MigrationAccess::Read, false, false),
    ];
    for (i, (access, writable, dirty)) in cases.into_iter().enumerate() {
        let va = VA + i as u64 * 0x1000;
        let pfn = Pfn::new(0x4321 + i as u64);
        put(
            &mut d,
            va,
            Level::L1,
            software(SoftwareKind::Migration {
                access,
                pfn,
                young: true,
                dirty,
            }),
        );
        d.expect(Expectation {
            start: va,
            len: 4096,
            access: Access::Read,
        });
        assert_eq!(
            d.handle_fault(fault(va, Access::Read, Cause::NotPresent)),
            Outcome::Resume
        );
        let (_, mapped, _, attrs) = leaf(&d, va);
        let property = attrs.property();
        assert_eq!(mapped, pfn);
        assert_eq!(property.writable, writable);
        assert!(property.accessed);
        assert_eq!(property.dirty, dirty);
    }
    assert_eq!(d.stats.migration, 2);
    assert!(
        d.platform
            .console
            .borrow()
            .contains("migration write, pfn 0x4321")
    );
}

fn device_migration_entry_copies_the_device_page<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let index = DeviceIndex::new(9);
    put(
        &mut d,
        VA,
        Level::L1,
        software(SoftwareKind::DeviceMigration {
            access: MigrationAccess::Write,
            index,
            young: false,
            dirty: false,
        }),
    );
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Write,
    });
    assert_eq!(
        d.handle_fault(fault(VA + 8, Access::Write, Cause::NotPresent)),
        Outcome::Resume
    );
    let (_, pfn, _, attrs) = leaf(&d, VA);
    assert!(attrs.property().writable);
    assert_eq!(Ram::word(pfn, 1), device_word(index, 1));
    assert_eq!(d.stats.migration, 1);
    assert!(
        d.platform
            .console
            .borrow()
            .contains("device-private migration write, index 9")
    );
}

fn device_exclusive_entry_maps_the_same_frame_writable<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let pfn = Pfn::new(0x777);
    put(
        &mut d,
        VA,
        Level::L1,
        software(SoftwareKind::DeviceExclusive { pfn }),
    );
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Write,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Write, Cause::NotPresent)),
        Outcome::Resume
    );
    let (_, mapped, _, attrs) = leaf(&d, VA);
    assert_eq!(mapped, pfn);
    assert!(attrs.property().writable);
    assert_eq!(d.stats.device_exclusive, 1);
    assert!(
        d.platform
            .console
            .borrow()
            .contains("device-exclusive, pfn 0x777")
    );
}

fn present_leaf_faults_are_fixed_as_the_cause_says<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let frame = d.frames.allocate(PageSize::Size4KiB).unwrap();
    let cases = [
        // (writable, executable, accessed, access, cause, check)
        (false, false, true, Access::Write, Cause::Permission),
        (false, false, true, Access::Execute, Cause::Permission),
        (true, false, false, Access::Read, Cause::AccessFlag),
    ];
    for (i, (writable, executable, accessed, access, cause)) in cases.into_iter().enumerate() {
        let va = VA + i as u64 * 0x1000;
        let attrs = kernel_attrs::<F>(writable, executable, accessed, false);
        put(
            &mut d,
            va,
            Level::L1,
            Entry::Leaf {
                pfn: frame,
                size: PageSize::Size4KiB,
                attrs,
            },
        );
        d.expect(Expectation {
            start: va,
            len: 4096,
            access,
        });
        assert_eq!(d.handle_fault(fault(va, access, cause)), Outcome::Resume);
        let property = leaf(&d, va).3.property();
        match access {
            Access::Write => assert!(property.writable),
            Access::Execute => assert!(property.executable && !property.writable),
            Access::Read => assert!(property.accessed),
        }
    }
    assert_eq!(d.stats.present_faults, 3);
    let flushed = d.platform.tlb.flushed.lock().unwrap().clone();
    for i in 0..3u64 {
        let va = VA + i * 0x1000;
        assert_eq!(
            flushed.iter().filter(|f| **f == va).count(),
            1,
            "the valid leaf at {va:#x} was invalidated once, after the fix"
        );
    }
    // A permission fault for an access the leaf allows is a contradiction: fail.
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Write,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Write, Cause::Permission)),
        Outcome::Fail
    );
    assert!(d.platform.console.borrow().contains("allows this access"));
}

fn unexpected_faults_fail<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let entry = software::<F>(SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(1),
    });
    put(&mut d, VA, Level::L1, entry);
    // Nothing armed.
    assert_eq!(
        d.handle_fault(fault(VA, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    // Armed for another page, or another access.
    d.expect(Expectation {
        start: VA + 0x1000,
        len: 4096,
        access: Access::Read,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Write,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    // Armed, but nothing is there.
    d.expect(Expectation {
        start: VA + 0x5000,
        len: 4096,
        access: Access::Read,
    });
    assert_eq!(
        d.handle_fault(fault(VA + 0x5000, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    assert_eq!(d.take_hits(), 0);
    assert_eq!(d.stats.faults, 4);
    assert_eq!(
        d.tables.walk(VA).unwrap().entry,
        entry,
        "a failed fault changes nothing"
    );
    let console = d.platform.console.borrow();
    assert_eq!(console.matches("UNEXPECTED").count(), 4, "{console}");
}

fn unhandled_software_kinds_fail_with_the_reason<F: PagingFormat>() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<F>(&ram, &mut pages);
    let swap = SoftwareKind::Swap {
        swap_type: SwapType::new(1).unwrap(),
        offset: 0x99,
    };
    put(&mut d, VA, Level::L1, software(swap));
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Read,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    assert!(
        d.platform
            .console
            .borrow()
            .contains("no resolver for swap entries")
    );
    let unknown = SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(5000),
    };
    put(&mut d, VA + 0x1000, Level::L1, software(unknown));
    d.expect(Expectation {
        start: VA + 0x1000,
        len: 4096,
        access: Access::Read,
    });
    assert_eq!(
        d.handle_fault(fault(VA + 0x1000, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    assert!(
        d.platform
            .console
            .borrow()
            .contains("unknown device index 0x1388")
    );
}

#[test]
fn quiet_mode_mutes_resolutions_but_not_failures() {
    let ram = Ram::new(8 << 20);
    let mut pages = device_pages();
    let mut d = demo::<X86_64>(&ram, &mut pages);
    let kind = SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(20),
    };
    put(&mut d, VA, Level::L1, software(kind));
    d.set_quiet(true);
    d.expect(Expectation {
        start: VA,
        len: 4096,
        access: Access::Read,
    });
    assert_eq!(
        d.handle_fault(fault(VA, Access::Read, Cause::NotPresent)),
        Outcome::Resume
    );
    assert!(
        d.platform.console.borrow().is_empty(),
        "a resolved fault prints nothing: {:?}",
        d.platform.console.borrow()
    );
    assert_eq!(d.stats.device_private, 1, "but is counted");
    assert_eq!(
        d.handle_fault(fault(VA + 0x1000, Access::Read, Cause::NotPresent)),
        Outcome::Fail
    );
    let console = d.platform.console.borrow();
    assert!(
        console.starts_with("  fault: read at 0x4000401000 (not present): UNEXPECTED"),
        "{console}"
    );
}

#[test]
fn try_cell_refuses_nested_borrows() {
    let cell = TryCell::new();
    assert_eq!(cell.with(|v: &mut u32| *v), None, "empty");
    assert_eq!(cell.set(7), Ok(None));
    let nested = cell.with(|v| {
        *v += 1;
        assert!(cell.is_busy());
        (cell.with(|_| ()), cell.set(9))
    });
    assert_eq!(nested, Some((None, Err(9))));
    assert_eq!(cell.with(|v| *v), Some(8));
    assert!(!cell.is_busy());
}

#[test]
fn bump_frames_align_and_run_out() {
    // SAFETY: the allocator never touches memory; this test only looks at the numbers.
    let mut frames = unsafe { BumpFrames::new(0x1000, 0x40_0000 + 0x2000) };
    assert_eq!(frames.allocate(PageSize::Size4KiB), Some(Pfn::new(1)));
    assert_eq!(frames.allocate(PageSize::Size2MiB), Some(Pfn::new(0x200)));
    assert_eq!(frames.allocate(PageSize::Size2MiB), None, "only 8 KiB left");
    assert_eq!(frames.allocate(PageSize::Size4KiB), Some(Pfn::new(0x400)));
    assert_eq!(frames.allocated_bytes(), 0x1000 + 0x20_0000 + 0x1000);
    assert_eq!(frames.remaining_bytes(), 0x1000);
}

#[test]
fn bump_frames_feed_devpriv_paging() {
    use devpriv_paging::{FrameAllocator, OffsetMapper, PageTable};
    let ram = Ram::new(4 << 20);
    let mut frames = ram.frames();
    // SAFETY: `ram` is host memory reached at its own address, used only by the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let mut table = PageTable::<X86_64, _>::new(Level::L4, mapper, &mut frames).unwrap();
    let attrs = kernel_attrs::<X86_64>(true, false, true, true);
    table
        .map_range(0x20_0000, 0x20_0000, 0x20_1000, attrs, &mut frames)
        .unwrap()
        .ignore();
    // The same table seen through the demo's walker.
    // SAFETY: the table's frames come from `ram`, reached at their own addresses.
    let live = unsafe { LiveTables::<X86_64>::new(table.root(), Level::L4, 0) };
    assert_eq!(live.walk(0x20_0000).unwrap().level, Level::L2);
    assert_eq!(live.walk(0x40_0000).unwrap().level, Level::L1);
    assert_eq!(frames.allocated_bytes(), 4 * 4096, "root, PDPT, PD, PT");
    // SAFETY: an empty range: the allocator never hands out (or touches) a frame.
    let mut exhausted = unsafe { BumpFrames::new(0x1000, 0x1000) };
    assert!(FrameAllocator::allocate(&mut exhausted).is_err());
}

fn map_image_maps_each_section_with_its_permissions<F: PagingFormat>(dirty_when_writable: bool) {
    use crate::image::{ImageSection, map_image};
    use devpriv_paging::{OffsetMapper, PageTable};
    use devpriv_pte::LeafAttributes;
    let ram = Ram::new(4 << 20);
    let mut frames = ram.frames();
    // SAFETY: `ram` is host memory reached at its own address, used only by the table.
    let mapper = unsafe { OffsetMapper::identity() };
    let mut table = PageTable::<F, _>::new(Level::L4, mapper, &mut frames).unwrap();
    let sections = [
        ImageSection {
            name: "text",
            start: 0x10_0000,
            end: 0x10_3000,
            writable: false,
            executable: true,
        },
        // Ends mid-page: rounded up, so one 2 MiB block and one 4 KiB page.
        ImageSection {
            name: "data+bss",
            start: 0x20_0000,
            end: 0x40_0800,
            writable: true,
            executable: false,
        },
    ];
    let mut out = String::new();
    map_image(
        &mut table,
        &sections,
        dirty_when_writable,
        &mut frames,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        out,
        "mmu: text     0x00100000..0x00103000 R-X -> 3 4 KiB pages, 0 2 MiB blocks\n\
         mmu: data+bss 0x00200000..0x00401000 RW- -> 1 4 KiB pages, 1 2 MiB blocks\n"
    );
    let text = table.translate(0x10_2000).unwrap();
    let data = table.translate(0x40_0000).unwrap();
    assert_eq!((text.pa, text.size), (0x10_2000, PageSize::Size4KiB));
    assert_eq!(table.translate(0x30_0000).unwrap().size, PageSize::Size2MiB);
    let (text, data) = (text.attrs.property(), data.attrs.property());
    assert!(text.executable && !text.writable && !text.dirty);
    assert!(!data.executable && data.writable);
    assert_eq!(data.dirty, dirty_when_writable);
    assert!(
        table.translate(0x10_3000).is_none(),
        "nothing past the section"
    );
}

#[test]
fn map_image_maps_each_section_with_its_permissions_x86_64() {
    map_image_maps_each_section_with_its_permissions::<X86_64>(true);
}

#[test]
fn map_image_maps_each_section_with_its_permissions_aarch64() {
    map_image_maps_each_section_with_its_permissions::<Aarch64>(false);
}

#[test]
fn summary_line_has_a_fixed_format() {
    let stats = Stats {
        checks_passed: 19,
        checks_failed: 0,
        faults: 12,
        present_faults: 3,
        device_private: 5,
        migration: 3,
        device_exclusive: 1,
        devpriv_migrate: 7,
    };
    let line = std::format!("{}", stats.summary("aarch64"));
    assert_eq!(
        line,
        "devpriv-demo: summary arch=aarch64 checks=19/19 faults=12 present=3 \
         device-private=5 migration=3 device-exclusive=1 devpriv-migrate=7 result=PASS"
    );
    assert!(line.starts_with(SUMMARY_PREFIX) && line.ends_with(PASS_MARKER));
    let failed = Stats {
        checks_failed: 1,
        ..stats
    };
    assert!(std::format!("{}", failed.summary("x86_64")).ends_with("result=FAIL"));
    assert!(!Stats::default().passed(), "no checks is not a pass");
}

#[test]
fn entry_reports_name_the_kind_and_number() {
    let cases = [
        (
            SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index: DeviceIndex::new(3),
            },
            "device-private write, index 3",
        ),
        (
            SoftwareKind::DeviceMigration {
                access: MigrationAccess::ReadExclusive,
                index: DeviceIndex::new(4),
                young: false,
                dirty: false,
            },
            "device-private migration read-exclusive, index 4",
        ),
        (
            SoftwareKind::Migration {
                access: MigrationAccess::Read,
                pfn: Pfn::new(0xabc),
                young: false,
                dirty: false,
            },
            "migration read, pfn 0xabc",
        ),
        (
            SoftwareKind::DeviceExclusive {
                pfn: Pfn::new(0x10),
            },
            "device-exclusive, pfn 0x10",
        ),
        (SoftwareKind::HwPoison { pfn: Pfn::new(1) }, "hw-poison"),
    ];
    for (kind, text) in cases {
        assert_eq!(std::format!("{}", EntryReport(&kind)), text);
    }
}

//! Part 4 of the transcript: the whole stack on the real MMU. A workload fills a
//! buffer (anonymous faults), devpriv-migrate moves it to the device pagemap (4 KiB
//! pages and a 2 MiB folio), and every CPU touch afterwards is a hardware fault that the
//! trap handler hands to devpriv-migrate's fault path, which calls the device driver's
//! `migrate_to_ram`. Then a 2 MiB folio split on the way back (the 2 MiB allocation
//! forced to fail), device-exclusive access revoked by a CPU write, a fault on a page
//! whose migration is in flight, timings, and eviction of the whole pagemap followed by
//! unregistering it.

use core::fmt::{self, Write};

use devpriv_migrate::{
    Committed, Evict, MigrateVma, Migration, PageTarget, Select, SystemMemory,
    make_device_exclusive,
};
use devpriv_pte::{Entry, Level, PageSize, SoftwareEntry, SoftwareKind};

use super::{DEVICE_BYTES, DEVICE_OWNER, DEVICE_PAGES, KernelPlatform, Stack, USER_BASE};
use crate::cell::TryCell;
use crate::fault::{Access, Demo, Expectation};
use crate::frames::FrameSource;
use crate::platform::Platform;
use crate::resolve::Resolver;

/// The 4 KiB buffer: 1 MiB.
pub const BUFFER: u64 = USER_BASE;
/// Pages in [`BUFFER`].
pub const BUFFER_PAGES: u64 = 256;
/// The 2 MiB page.
pub const HUGE: u64 = USER_BASE + (4 << 20);
/// Bytes in [`HUGE`].
pub const HUGE_BYTES: u64 = 2 << 20;

type Cell<P, A, R> = TryCell<Demo<P, A, R>>;

/// One step of part 4.
type Step<P, A, R> = fn(&Cell<P, A, R>, Stack<P>);

/// The word `w` of the page at `va` after [`fill`] with `seed`.
pub const fn pattern(va: u64, w: u64, seed: u64) -> u64 {
    0xb0f0_0000_0000_0000 ^ (seed << 40) ^ (va & 0xff_ffff_f000) ^ w
}

fn read(va: u64) -> u64 {
    // SAFETY: `va` is in the workload's region; a fault there is handled (or the run
    // fails) by the trap handler; a volatile access is not elided.
    unsafe { (va as *const u64).read_volatile() }
}

fn write(va: u64, value: u64) {
    // SAFETY: as for `read`.
    unsafe { (va as *mut u64).write_volatile(value) }
}

/// Writes `pattern(page, w, seed)` to every word of `[va, va + len)` through the CPU.
fn fill(va: u64, len: u64, seed: u64) {
    for page in (va..va + len).step_by(4096) {
        for w in 0..512 {
            write(page + w * 8, pattern(page, w, seed));
        }
    }
}

/// Whether every word of `[va, va + len)` holds its pattern, read through the CPU.
fn holds(va: u64, len: u64, seed: u64) -> bool {
    let mut ok = true;
    for page in (va..va + len).step_by(4096) {
        for w in 0..512 {
            ok &= read(page + w * 8) == pattern(page, w, seed);
        }
    }
    ok
}

/// The level and kind of the entry mapping `va`.
fn kind<P: Platform>(stack: Stack<P>, va: u64) -> (Level, &'static str) {
    match stack.space().read().lookup(va) {
        Ok((level, Entry::Leaf { .. })) => (level, "present"),
        Ok((
            level,
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DevicePrivate { .. },
                ..
            }),
        )) => (level, "device-private"),
        Ok((
            level,
            Entry::Software(SoftwareEntry {
                kind: SoftwareKind::DeviceExclusive { .. },
                ..
            }),
        )) => (level, "device-exclusive"),
        Ok((level, Entry::Absent)) => (level, "absent"),
        Ok((level, _)) => (level, "other"),
        Err(_) => (Level::L1, "error"),
    }
}

/// Migrates `[start, start + len)` to the device: 2 MiB folios for whole 2 MiB pages
/// and holes, 4 KiB otherwise. Returns the pages that moved.
pub fn to_device<P: Platform>(stack: Stack<P>, start: u64, len: u64) -> u64 {
    let pages = (len / 4096) as usize;
    let mut words = stack.words();
    let words = &mut *words;
    let Ok(m) = Migration::setup(MigrateVma {
        address_space: stack.space(),
        start,
        end: start + len,
        select: Select::SYSTEM | Select::COMPOUND,
        owner: DEVICE_OWNER,
        fault: None,
        src: &mut words.src[..pages],
        dst: &mut words.dst[..pages],
    }) else {
        return 0;
    };
    let m = set_device_destinations(stack, m);
    m.pages().finalize().migrated
}

/// Gives every collected page of `m` a device folio with its bytes (the copy engine).
fn set_device_destinations<'m, P: Platform>(
    stack: Stack<P>,
    mut m: Migration<'m, 'static, KernelPlatform<P>>,
) -> Migration<'m, 'static, KernelPlatform<P>> {
    let device = stack.device();
    let mut i = 0;
    while i < m.src().len() {
        let word = m.src()[i];
        let size = word.size();
        if let (true, Ok(folio)) = (word.is_migrating(), stack.pagemap().alloc_locked(size)) {
            let from = match word.target() {
                Some(PageTarget::System(pfn)) => Some(pfn),
                _ => None,
            };
            device.copy_in(folio.index(), from, size);
            let _ = m.set_device_destination(i, folio);
        }
        i += size.frames() as usize;
    }
    m
}

/// Migrates the device's pages in `[start, start + len)` back to system memory.
/// Returns the pages that moved.
pub fn to_system<P: Platform>(stack: Stack<P>, start: u64, len: u64) -> u64 {
    let pages = (len / 4096) as usize;
    let mut words = stack.words();
    let words = &mut *words;
    let Ok(mut m) = Migration::setup(MigrateVma {
        address_space: stack.space(),
        start,
        end: start + len,
        select: Select::DEVICE_PRIVATE | Select::COMPOUND,
        owner: DEVICE_OWNER,
        fault: None,
        src: &mut words.src[..pages],
        dst: &mut words.dst[..pages],
    }) else {
        return 0;
    };
    stack.device().bring_back(&mut m);
    m.pages().finalize().migrated
}

fn with<P: Platform, A: FrameSource, R: Resolver>(
    cell: &Cell<P, A, R>,
    f: impl FnOnce(&mut Demo<P, A, R>),
) {
    let _ = cell.with(f);
}

fn check<P: Platform, A: FrameSource, R: Resolver>(
    cell: &Cell<P, A, R>,
    ok: bool,
    what: fmt::Arguments<'_>,
) {
    with(cell, |d| d.check(ok, what));
}

fn say<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, what: fmt::Arguments<'_>) {
    with(cell, |d| {
        let _ = writeln!(d.console(), "{what}");
    });
}

fn expect<P: Platform, A: FrameSource, R: Resolver>(
    cell: &Cell<P, A, R>,
    start: u64,
    len: u64,
    access: Access,
    quiet: bool,
) {
    with(cell, |d| {
        d.expect(Expectation { start, len, access });
        d.set_quiet(quiet);
    });
}

fn hits<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>) -> u32 {
    cell.with(|d| {
        d.set_quiet(false);
        d.take_hits()
    })
    .unwrap_or(u32::MAX)
}

fn faults<P: Platform>(stack: Stack<P>) -> u64 {
    stack
        .device()
        .counters
        .faults
        .load(core::sync::atomic::Ordering::Relaxed)
}

/// The steps of part 4, numbered from `first`.
pub const STEPS: [&str; 10] = [
    "a device pagemap over memory the CPU does not map",
    "a workload fills a buffer: anonymous faults",
    "migrate to the device: 4 KiB pages and a 2 MiB folio",
    "CPU touches fault the pages back through migrate_to_ram",
    "a 2 MiB folio comes back whole",
    "a 2 MiB folio split on the way back (no 2 MiB frame free)",
    "device-exclusive access revoked by a CPU write",
    "a fault on a page whose migration is in flight",
    "fault round trips and migration bookkeeping, timed",
    "eviction of the whole pagemap, then unregistering it",
];

/// Runs part 4 on `stack`, numbering its steps from `first`.
pub fn run<P: Platform, A: FrameSource, R: Resolver>(
    cell: &Cell<P, A, R>,
    stack: Stack<P>,
    first: usize,
) {
    say(
        cell,
        format_args!("devpriv-demo: part 4: the devpriv stack (pagemap, migrate) on the real MMU"),
    );
    let steps: [Step<P, A, R>; 10] = [
        pagemap, populate, migrate, fault_back, huge_whole, huge_split, exclusive, in_flight,
        timed, evict,
    ];
    for (n, (title, step)) in STEPS.iter().zip(steps).enumerate() {
        say(cell, format_args!("step {}: {title}", first + n));
        step(cell, stack);
    }
}

fn pagemap<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let pm = stack.pagemap();
    let base = pm.base().map_or(0, |b| b.number());
    say(
        cell,
        format_args!(
            "  pagemap {:?} owner {:#x}: {} pages ({} MiB) at device indices {base:#x}.., \
             {} bytes of metadata per page",
            stack.pagemap_id(),
            DEVICE_OWNER.value(),
            pm.pages(),
            DEVICE_BYTES >> 20,
            devpriv_pagemap::METADATA_BYTES_PER_PAGE
        ),
    );
    check(
        cell,
        pm.pages() == DEVICE_PAGES as u64 && pm.allocated_pages() == 0,
        format_args!("registered in the device-private space, every page free"),
    );
}

/// Maps a fresh 2 MiB frame of system RAM writable at `HUGE`; whether it worked.
fn map_huge_page<P: Platform>(stack: Stack<P>) -> bool {
    stack.ram().allocate(PageSize::Size2MiB).is_some_and(|pfn| {
        stack
            .space()
            .map_page(HUGE, pfn, PageSize::Size2MiB, true)
            .is_ok()
    })
}

fn populate<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    expect(cell, BUFFER, BUFFER_PAGES * 4096, Access::Write, true);
    fill(BUFFER, BUFFER_PAGES * 4096, 1);
    let n = hits(cell);
    check(
        cell,
        n == BUFFER_PAGES as u32 && kind(stack, BUFFER) == (Level::L1, "present"),
        format_args!(
            "{BUFFER_PAGES} pages written at {BUFFER:#x}: {n} anonymous faults, each a fresh \
             frame"
        ),
    );
    let mapped = map_huge_page(stack);
    fill(HUGE, HUGE_BYTES, 2);
    check(
        cell,
        mapped && kind(stack, HUGE) == (Level::L2, "present"),
        format_args!("a 2 MiB page at {HUGE:#x}, written with no fault"),
    );
}

fn migrate<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let ram_before = stack.ram().live_frames();
    let small = to_device(stack, BUFFER, BUFFER_PAGES * 4096);
    let huge = to_device(stack, HUGE, HUGE_BYTES);
    let ram_after = stack.ram().live_frames();
    check(
        cell,
        small == BUFFER_PAGES && huge == 512,
        format_args!("{small} 4 KiB pages and {huge} pages as one 2 MiB folio moved"),
    );
    check(
        cell,
        kind(stack, BUFFER) == (Level::L1, "device-private")
            && kind(stack, HUGE) == (Level::L2, "device-private"),
        format_args!(
            "the CPU entries are device-private: level 1 for the buffer, level 2 for the \
             2 MiB folio"
        ),
    );
    check(
        cell,
        stack.pagemap().allocated_pages() == BUFFER_PAGES + 512
            && ram_before - ram_after == (BUFFER_PAGES + 512) as usize,
        format_args!(
            "device pages in use: {}; system frames freed: {}",
            stack.pagemap().allocated_pages(),
            ram_before - ram_after
        ),
    );
}

fn fault_back<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let before = faults(stack);
    // Unmuted for the first page, so the transcript shows one fault in full.
    expect(cell, BUFFER, 4096, Access::Read, false);
    let first = read(BUFFER);
    let one = hits(cell);
    expect(cell, BUFFER, BUFFER_PAGES * 4096, Access::Read, true);
    let right = holds(BUFFER, BUFFER_PAGES * 4096, 1);
    let n = hits(cell) + one;
    check(
        cell,
        first == pattern(BUFFER, 0, 1) && right && n == BUFFER_PAGES as u32,
        format_args!(
            "{n} faults, each resolved by devpriv-migrate ({} driver calls); every word right",
            faults(stack) - before
        ),
    );
    check(
        cell,
        kind(stack, BUFFER) == (Level::L1, "present") && stack.pagemap().allocated_pages() == 512,
        format_args!(
            "the buffer is in system memory again; the 2 MiB folio is still on the device"
        ),
    );
}

fn huge_whole<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    expect(cell, HUGE, HUGE_BYTES, Access::Read, false);
    let word = read(HUGE + 300 * 4096 + 8);
    let n = hits(cell);
    check(
        cell,
        n == 1 && word == pattern(HUGE + 300 * 4096, 1, 2),
        format_args!("one fault at page 300 brought all 2 MiB back ({n} fault(s))"),
    );
    let right = holds(HUGE, HUGE_BYTES, 2);
    check(
        cell,
        right && kind(stack, HUGE) == (Level::L2, "present"),
        format_args!("a 2 MiB present entry again, every word right, no further fault"),
    );
}

fn huge_split<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let moved = to_device(stack, HUGE, HUGE_BYTES);
    stack.ram().fail_large_allocations(1);
    let splits = |s: Stack<P>| {
        s.device()
            .counters
            .splits
            .load(core::sync::atomic::Ordering::Relaxed)
    };
    let before = splits(stack);
    expect(cell, HUGE, HUGE_BYTES, Access::Read, false);
    let word = read(HUGE + 300 * 4096 + 8);
    let n = hits(cell);
    check(
        cell,
        moved == 512 && n == 1 && word == pattern(HUGE + 300 * 4096, 1, 2),
        format_args!("the touch of page 300 faulted once and read the right word"),
    );
    check(
        cell,
        splits(stack) == before + 1
            && kind(stack, HUGE + 300 * 4096) == (Level::L1, "present")
            && kind(stack, HUGE) == (Level::L1, "device-private")
            && stack.pagemap().allocated_pages() == 511,
        format_args!(
            "the folio and its entry were split: page 300 is back, 511 pages stay on the \
             device as 4 KiB entries"
        ),
    );
    expect(cell, HUGE, HUGE_BYTES, Access::Read, true);
    let right = holds(HUGE, HUGE_BYTES, 2);
    let n = hits(cell);
    check(
        cell,
        right && n == 511 && stack.pagemap().allocated_pages() == 0,
        format_args!("the other 511 pages faulted back one by one ({n} faults), every word right"),
    );
    // Unmap the 512 pages (freeing their frames and the level-1 table) and map a fresh
    // 2 MiB page there for the steps that follow.
    let ram = stack.ram();
    let unmapped = stack
        .space()
        .unmap(HUGE, HUGE_BYTES, |removed| {
            if let Ok(Entry::Leaf { pfn, size, .. }) = removed.entry() {
                ram.free(pfn, size);
            }
        })
        .is_ok();
    let before = ram.live_frames();
    let mapped = map_huge_page(stack);
    fill(HUGE, HUGE_BYTES, 2);
    check(
        cell,
        unmapped
            && mapped
            && ram.live_frames() == before + 512
            && kind(stack, HUGE) == (Level::L2, "present"),
        format_args!("unmapped (512 frames and a table freed), then a fresh 2 MiB page mapped"),
    );
}

fn exclusive<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let va = BUFFER + 5 * 4096;
    let space = stack.space();
    let mut no_fault_in = |_: u64, _: bool| false;
    let taken = make_device_exclusive(space, va, DEVICE_OWNER, &mut no_fault_in).is_ok();
    check(
        cell,
        taken && kind(stack, va) == (Level::L1, "device-exclusive"),
        format_args!("the device holds page 5 exclusively: a device-exclusive entry"),
    );
    expect(cell, va, 4096, Access::Write, false);
    write(va + 16, 0x000a_701c);
    let n = hits(cell);
    check(
        cell,
        n == 1 && read(va + 16) == 0x000a_701c && kind(stack, va) == (Level::L1, "present"),
        format_args!("the CPU write faulted once, revoked the device's access, and landed"),
    );
    write(va + 16, pattern(va, 2, 1));
}

/// Finishes the migration registered by [`in_flight`]: the device's completion.
///
/// # Safety
/// `migration` points to the `Option<Migration<..., Committed>>` that step registered,
/// valid and untouched by it until the step takes it back.
unsafe fn finish_in_flight<P: Platform>(migration: *mut ()) {
    let slot = migration.cast::<Option<Migration<'_, 'static, KernelPlatform<P>, Committed>>>();
    // SAFETY: this function's contract.
    if let Some(m) = unsafe { (*slot).take() } {
        m.finalize();
    }
}

fn in_flight<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let va = BUFFER + 7 * 4096;
    let before = faults(stack);
    let mut words = stack.words();
    let words = &mut *words;
    let Ok(m) = Migration::setup(MigrateVma {
        address_space: stack.space(),
        start: va,
        end: va + 4096,
        select: Select::SYSTEM,
        owner: DEVICE_OWNER,
        fault: None,
        src: &mut words.src[..1],
        dst: &mut words.dst[..1],
    }) else {
        check(cell, false, format_args!("the migration could not start"));
        return;
    };
    let m = set_device_destinations(stack, m);
    let mut slot = Some(m.pages());
    // SAFETY: `slot` lives until the end of this function and is not touched until
    // `take` below; only the fault handler finishes it meanwhile.
    unsafe {
        stack.in_flight().set(
            (&raw mut slot).cast(),
            finish_in_flight::<P> as unsafe fn(*mut ()),
        )
    };
    say(
        cell,
        format_args!(
            "  page 7 is being migrated (a migration entry, the copy done, not yet \
             finalized); the CPU reads it"
        ),
    );
    expect(cell, va, 4096, Access::Read, false);
    let word = read(va + 8);
    let n = hits(cell);
    let unfinished = stack.in_flight().take();
    if let Some(m) = slot.take() {
        m.finalize();
    }
    check(
        cell,
        !unfinished && n == 2 && word == pattern(va, 1, 1) && faults(stack) == before + 1,
        format_args!(
            "the fault waited for the migration (finished by its completion), then faulted \
             on the device-private entry and brought the page back ({n} faults)"
        ),
    );
}

fn timed<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let unit = P::CYCLE_UNIT;
    // 4 KiB fault round trips.
    to_device(stack, BUFFER, BUFFER_PAGES * 4096);
    expect(cell, BUFFER, BUFFER_PAGES * 4096, Access::Read, true);
    let start = P::cycles();
    let mut sum = 0u64;
    for page in (BUFFER..BUFFER + BUFFER_PAGES * 4096).step_by(4096) {
        sum = sum.wrapping_add(read(page));
    }
    let small = P::cycles().wrapping_sub(start) / BUFFER_PAGES;
    let n = hits(cell);
    let expected = (0..BUFFER_PAGES).fold(0u64, |a, p| {
        a.wrapping_add(pattern(BUFFER + p * 4096, 0, 1))
    });
    // 2 MiB fault round trips.
    const ROUNDS: u64 = 4;
    let mut huge = 0;
    let mut huge_faults = 0;
    for _ in 0..ROUNDS {
        to_device(stack, HUGE, HUGE_BYTES);
        expect(cell, HUGE, HUGE_BYTES, Access::Read, true);
        let start = P::cycles();
        sum = sum.wrapping_add(read(HUGE));
        huge += P::cycles().wrapping_sub(start);
        huge_faults += hits(cell);
    }
    let expected = expected.wrapping_add(ROUNDS.wrapping_mul(pattern(HUGE, 0, 2)));
    check(
        cell,
        n == BUFFER_PAGES as u32 && huge_faults == ROUNDS as u32 && sum == expected,
        format_args!("{n} 4 KiB and {huge_faults} 2 MiB fault round trips, data right"),
    );
    say(
        cell,
        format_args!(
            "  time fault round trip (trap, devpriv-migrate, migrate_to_ram with copy, \
             return, retry): 4 KiB {small} {unit}, 2 MiB {} {unit}",
            huge / ROUNDS
        ),
    );
    // The bookkeeping alone: the copy engine idle.
    stack.device().set_copy(false);
    let start = P::cycles();
    to_device(stack, BUFFER, BUFFER_PAGES * 4096);
    let t1 = P::cycles();
    to_system(stack, BUFFER, BUFFER_PAGES * 4096);
    let t2 = P::cycles();
    to_device(stack, HUGE, HUGE_BYTES);
    let t3 = P::cycles();
    to_system(stack, HUGE, HUGE_BYTES);
    let t4 = P::cycles();
    stack.device().set_copy(true);
    say(
        cell,
        format_args!(
            "  time migration bookkeeping (setup, destinations, pages, finalize; no copy): \
             4 KiB pages {} / {} {unit} per page to / from the device, a 2 MiB folio {} / {} \
             {unit}",
            (t1 - start) / BUFFER_PAGES,
            (t2 - t1) / BUFFER_PAGES,
            t3 - t2,
            t4 - t3
        ),
    );
    // The idle copy engine lost the bytes: write them again (no faults: all present).
    expect(cell, BUFFER, 0, Access::Read, false);
    fill(BUFFER, BUFFER_PAGES * 4096, 1);
    fill(HUGE, HUGE_BYTES, 2);
    let n = hits(cell);
    check(
        cell,
        n == 0 && stack.pagemap().allocated_pages() == 0,
        format_args!("everything back in system memory, refilled"),
    );
}

fn evict<P: Platform, A: FrameSource, R: Resolver>(cell: &Cell<P, A, R>, stack: Stack<P>) {
    let moved = to_device(stack, BUFFER, BUFFER_PAGES * 4096) + to_device(stack, HUGE, HUGE_BYTES);
    let pm = stack.pagemap();
    let in_use = pm.allocated_pages();
    let mut migrated = 0;
    {
        let mut words = stack.words();
        let words = &mut *words;
        let pages = DEVICE_PAGES;
        for _ in 0..4 {
            if pm.allocated_pages() == 0 {
                break;
            }
            let Ok(mut m) = Migration::evict(
                stack.devices(),
                stack.spaces(),
                stack.ram(),
                Evict::pagemap(pm),
                &mut words.src[..pages],
                &mut words.dst[..pages],
            ) else {
                break;
            };
            stack.device().bring_back(&mut m);
            migrated += m.pages().finalize().migrated;
        }
    }
    check(
        cell,
        moved == in_use && migrated == in_use && pm.allocated_pages() == 0,
        format_args!(
            "{in_use} device pages in use; eviction found each through its reverse map and \
             moved {migrated} back"
        ),
    );
    let unregistered = stack.devices().unregister(stack.pagemap_id()).is_ok();
    expect(cell, BUFFER, 0, Access::Read, false);
    let right = holds(BUFFER, BUFFER_PAGES * 4096, 1) && holds(HUGE, HUGE_BYTES, 2);
    let n = hits(cell);
    check(
        cell,
        unregistered,
        format_args!("the pagemap left the device-private space"),
    );
    let huge = kind(stack, HUGE);
    check(
        cell,
        right && n == 0 && huge == (Level::L2, "present"),
        format_args!(
            "every word right ({} faults); the 2 MiB page came back whole (a {} entry at \
             level {})",
            n,
            huge.1,
            huge.0.number()
        ),
    );
}

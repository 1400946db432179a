//! Linux's hmm-tests scenario families (tools/testing/selftests/mm/hmm-tests.c), ported
//! onto the simulated device: every scenario runs on the x86_64 and the aarch64 entry
//! formats, checks the bytes (a pattern per page and word) and the state (entries,
//! device pages, counters), and ends with every device page free, every RAM frame
//! returned, no lock held and the MMU model clean. docs/testdev.md maps each one to
//! the Linux test it comes from.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use devpriv_migrate::model::CpuError;
use devpriv_paging::PagingFormat;
use devpriv_pte::Level;
use devpriv_testdev::*;

/// Instantiates every scenario for both entry formats.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod x86_64 {
            use devpriv_pte::arch::x86_64::X86_64;
            $(#[test] fn $name() { super::$name::<X86_64>() })*
        }
        mod aarch64 {
            use devpriv_pte::arch::aarch64::Aarch64;
            $(#[test] fn $name() { super::$name::<Aarch64>() })*
        }
    };
}

scenarios!(
    open_close,
    anon_read,
    anon_read_prot,
    anon_write,
    anon_write_prot,
    anon_read_multiple,
    anon_write_huge,
    anon_teardown,
    migrate,
    migrate_fault,
    migrate_release,
    migrate_shared,
    migrate_multiple,
    migrate_mixed,
    migrate_mixed_sizes,
    snapshot,
    snapshot_huge,
    double_map,
    exclusive,
    exclusive_cpu_restore,
    exclusive_mprotect,
    compound,
    migrate_anon_huge_empty,
    migrate_anon_huge_zero,
    migrate_anon_huge_free,
    migrate_anon_huge_fault,
    migrate_anon_huge_fault_split,
    migrate_partial_unmap_fault,
    migrate_anon_huge_err,
    migrate_anon_huge_zero_err,
    release_with_pages_on_device,
    evict_from_several_processes,
    two_owners,
    allocation_budget,
    copy_failure,
    pinned_pages,
    bad_arguments,
);

/// `hmm/open_close`: a device opened and closed, nothing else.
fn open_close<F: PagingFormat>() {
    fixture::<F>().finish();
}

/// `anon_read`: the device reads a read-only buffer whose first two pages are never
/// written (the first not even touched): one fault brings the whole range in, the
/// untouched pages read as the zero page.
fn anon_read<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va + 2 * PAGE, LEN - 2 * PAGE, 1);
    assert_eq!(f.process.read(va + PAGE).unwrap(), 0);
    f.process.mprotect(va, LEN, Prot::Read);
    let (data, r) = mirror_read(f.mirror, va, LEN);
    assert_eq!(
        r,
        CommandResult {
            cpages: NPAGES,
            faults: 1
        }
    );
    let mut want = vec![0; 2 * 512];
    want.extend(f.expected(LEN - 2 * PAGE, 1));
    assert_eq!(data, want);
    let mut kinds = bytes(PROT_ZERO | PROT_READ, 2);
    kinds.extend(bytes(PROT_READ, NPAGES - 2));
    assert_bytes(&f.mirror.snapshot(va, LEN).unwrap(), &kinds);
    f.finish();
}

/// `anon_read_prot`: reading a `PROT_NONE` buffer fails with `-EFAULT` and leaves the
/// caller's buffer and the process's memory untouched.
fn anon_read_prot<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 2);
    f.process.mprotect(va, LEN, Prot::None);
    let mut out = vec![!0u64; (LEN / 8) as usize];
    assert_eq!(f.mirror.read(va, &mut out), Err(DeviceError::Fault));
    assert!(
        out.iter().all(|&w| w == !0),
        "the buffer changed on failure"
    );
    assert!(f.mirror.is_empty());
    assert_bytes(
        &f.mirror.snapshot(va, LEN).unwrap(),
        &bytes(PROT_ERROR, NPAGES),
    );
    f.process.mprotect(va, LEN, Prot::Read);
    f.check(va, LEN, 2);
    f.finish();
}

/// `anon_write`: the device writes an untouched buffer: one write fault populates it,
/// and the CPU reads what the device wrote.
fn anon_write<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    let r = f.mirror.write(va, &f.expected(LEN, 3)).unwrap();
    assert_eq!(
        r,
        CommandResult {
            cpages: NPAGES,
            faults: 1
        }
    );
    assert_bytes(
        &f.mirror.snapshot(va, LEN).unwrap(),
        &bytes(PROT_WRITE, NPAGES),
    );
    f.check(va, LEN, 3);
    f.finish();
}

/// `anon_write_prot`: a device write to a read-only buffer fails with `-EPERM` and
/// writes nothing; after `mprotect` it succeeds (the zero page the read mapped is
/// replaced by a page of its own).
fn anon_write_prot<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::Read);
    let (data, r) = mirror_read(f.mirror, va, PAGE);
    assert_eq!(
        r,
        CommandResult {
            cpages: 1,
            faults: 1
        }
    );
    assert!(data.iter().all(|&w| w == 0));
    assert_eq!(
        f.mirror.write(va, &f.expected(LEN, 4)),
        Err(DeviceError::Permission)
    );
    for p in 0..NPAGES {
        assert_eq!(f.process.read(va + p * PAGE).unwrap(), 0, "page {p}");
    }
    f.process.mprotect(va, LEN, Prot::ReadWrite);
    let r = f.mirror.write(va, &f.expected(LEN, 4)).unwrap();
    assert_eq!(
        r,
        CommandResult {
            cpages: NPAGES,
            faults: 1
        }
    );
    f.check(va, LEN, 4);
    f.finish();
}

/// `anon_read_multiple`: ten rounds of map, fill, device read, unmap.
fn anon_read_multiple<F: PagingFormat>() {
    let f = fixture::<F>();
    for round in 0..10 {
        let va = f.process.mmap(LEN, Prot::ReadWrite);
        f.fill(va, LEN, 10 + round);
        let (data, r) = mirror_read(f.mirror, va, LEN);
        assert_eq!(
            r,
            CommandResult {
                cpages: NPAGES,
                faults: 1
            }
        );
        assert_eq!(data, f.expected(LEN, 10 + round), "round {round}");
        f.process.munmap(va, LEN);
        assert!(f.mirror.is_empty(), "munmap left mirror entries");
    }
    f.finish();
}

/// `anon_write_huge`: the device writes through a 2 MiB page, which stays one page.
fn anon_write_huge<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 5);
    let r = f.mirror.write(va, &f.expected(HUGE, 6)).unwrap();
    assert_eq!(
        r,
        CommandResult {
            cpages: 512,
            faults: 1
        }
    );
    assert_eq!(kind(f.process, va), (Level::L2, "leaf"));
    assert_bytes(
        &f.mirror.snapshot(va, HUGE).unwrap(),
        &bytes(PROT_WRITE | PROT_PMD, 512),
    );
    f.check(va, HUGE, 6);
    f.finish();
}

/// `anon_teardown`: a device read races an munmap of half the buffer; the read may
/// fail, but if it succeeds its data is whole.
fn anon_teardown<F: PagingFormat>() {
    let f = fixture::<F>();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut completed = 0;
    for round in 0..10 {
        let va = f.process.mmap(LEN, Prot::ReadWrite);
        f.fill(va, LEN, 20 + round);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = rng % 32;
        let read = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_micros(delay));
                f.process.munmap(va + LEN / 2, LEN / 2);
            });
            let mut out = vec![0; (LEN / 8) as usize];
            f.mirror.read(va, &mut out).map(|r| (r, out))
        });
        if let Ok((r, data)) = read {
            completed += 1;
            assert_eq!(r.cpages, NPAGES);
            assert_eq!(data, f.expected(LEN, 20 + round), "round {round}");
        }
        f.process.munmap(va, LEN / 2);
    }
    println!("anon_teardown: {completed} of 10 reads beat the munmap");
    f.finish();
}

/// `migrate`: a filled buffer moves to the device; the device reads it without a
/// fault; each CPU touch brings one page back.
fn migrate<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 7);
    let ram_before = f.machine.ram.live_frames();
    let r = f.mirror.migrate_to_device(va, LEN).unwrap();
    assert_eq!(r.cpages, NPAGES);
    assert_eq!(f.on_devices(), (NPAGES, 0));
    assert_eq!(f.machine.ram.live_frames(), ram_before - NPAGES as usize);
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    let (data, r) = mirror_read(f.mirror, va, LEN);
    assert_eq!(
        r,
        CommandResult {
            cpages: NPAGES,
            faults: 0
        }
    );
    assert_eq!(data, f.expected(LEN, 7));
    assert_bytes(
        &f.mirror.snapshot(va, LEN).unwrap(),
        &bytes(PROT_DEV_PRIVATE_LOCAL | PROT_WRITE, NPAGES),
    );
    f.check(va, LEN, 7);
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), NPAGES);
    assert_eq!(f.on_devices(), (0, 0));
    assert!(f.mirror.is_empty(), "faulted pages stay in the mirror");
    f.finish();
}

/// `migrate_fault`: migrate, fault half back with the CPU, migrate again: the whole
/// range is on the device again, bytes intact.
fn migrate_fault<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 8);
    assert_eq!(f.mirror.migrate_to_device(va, LEN).unwrap().cpages, NPAGES);
    f.check(va, LEN / 2, 8);
    assert_eq!(f.on_devices(), (NPAGES / 2, 0));
    assert_eq!(f.mirror.migrate_to_device(va, LEN).unwrap().cpages, NPAGES);
    assert_eq!(f.on_devices(), (NPAGES, 0));
    let (data, r) = mirror_read(f.mirror, va, LEN);
    assert_eq!(r.faults, 0);
    assert_eq!(data, f.expected(LEN, 8));
    f.check(va, LEN, 8);
    f.finish();
}

/// `migrate_release`: the device releases its memory (eviction) while the pages are
/// on it; they come back to system memory with their bytes, and leave the mirror.
fn migrate_release<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 9);
    f.mirror.migrate_to_device(va, LEN).unwrap();
    assert_eq!(f.device.evict(), Ok(NPAGES));
    assert_eq!(f.on_devices(), (0, 0));
    assert!(f.mirror.is_empty());
    assert_eq!(kind(f.process, va), (Level::L1, "leaf"));
    f.check(va, LEN / 2, 9);
    f.check(va, LEN, 9);
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 0);
    f.finish();
}

/// `migrate_shared`: shared memory does not migrate: `-ENOENT`.
fn migrate_shared<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap_shared(LEN, Prot::ReadWrite);
    assert_eq!(
        f.mirror.migrate_to_device(va, LEN),
        Err(DeviceError::NotFound)
    );
    assert_eq!(f.on_devices(), (0, 0));
    f.finish();
}

/// `migrate_multiple`: ten rounds of map, fill, migrate, device read, migrate back,
/// CPU check, unmap.
fn migrate_multiple<F: PagingFormat>() {
    let f = fixture::<F>();
    for round in 0..10 {
        let va = f.process.mmap(LEN, Prot::ReadWrite);
        f.fill(va, LEN, 30 + round);
        assert_eq!(f.mirror.migrate_to_device(va, LEN).unwrap().cpages, NPAGES);
        let (data, _) = mirror_read(f.mirror, va, LEN);
        assert_eq!(data, f.expected(LEN, 30 + round));
        assert_eq!(f.mirror.migrate_to_system(va, LEN).unwrap().cpages, NPAGES);
        assert_eq!(f.on_devices(), (0, 0));
        f.check(va, LEN, 30 + round);
        f.process.munmap(va, LEN);
    }
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 0);
    f.finish();
}

/// The layout of `migrate_mixed` and `snapshot`: page 0 `PROT_NONE`, page 1 unmapped,
/// page 2 read-only and read (the zero page), page 3 read-only with data, pages 4..
/// writable; page 4 written with 3.
fn mixed_layout<F: PagingFormat>(f: &Fixture<F>, pages: u64) -> u64 {
    let va = f.process.mmap(pages * PAGE, Prot::None);
    f.process.munmap(va + PAGE, PAGE);
    f.process.mprotect(va + 2 * PAGE, PAGE, Prot::Read);
    assert_eq!(f.process.read(va + 2 * PAGE).unwrap(), 0);
    f.process.mprotect(va + 3 * PAGE, PAGE, Prot::ReadWrite);
    f.process.write(va + 3 * PAGE, 3).unwrap();
    f.process.mprotect(va + 3 * PAGE, PAGE, Prot::Read);
    f.process
        .mprotect(va + 4 * PAGE, (pages - 4) * PAGE, Prot::ReadWrite);
    f.process.write(va + 4 * PAGE, 3).unwrap();
    va
}

/// `migrate_mixed`: regions that cannot be accessed are `-EINVAL`; a range over
/// read-only, zero and writable pages migrates whole; another device's page does not
/// migrate (`-ENOENT`).
fn migrate_mixed<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(6 * PAGE, Prot::None);
    assert_eq!(
        f.other_mirror.migrate_to_device(va, 6 * PAGE),
        Err(DeviceError::Invalid)
    );
    f.process.munmap(va, 6 * PAGE);
    let va = mixed_layout(&f, 6);
    f.process.write(va + 5 * PAGE, 3).unwrap();
    assert_eq!(
        f.other_mirror.migrate_to_device(va, 3 * PAGE),
        Err(DeviceError::Invalid)
    );
    let r = f
        .other_mirror
        .migrate_to_device(va + 2 * PAGE, 4 * PAGE)
        .unwrap();
    assert_eq!(r.cpages, 4);
    assert_eq!(f.on_devices(), (0, 4));
    assert_eq!(
        f.mirror.migrate_to_device(va + 5 * PAGE, PAGE),
        Err(DeviceError::NotFound)
    );
    assert_eq!(f.on_devices(), (0, 4));
    for (page, want) in [(2, 0), (3, 3), (4, 3), (5, 3)] {
        assert_eq!(
            f.process.read(va + page * PAGE).unwrap(),
            want,
            "page {page}"
        );
    }
    assert_eq!(f.other.counters.faults.load(Ordering::Relaxed), 4);
    f.finish();
}

/// Mixed 4 KiB and 2 MiB pages in one range: the 2 MiB pages move as 2 MiB folios,
/// the others one by one, and come back the same way.
fn migrate_mixed_sizes<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(3 * HUGE, Prot::ReadWrite);
    f.huge(va, 40);
    f.fill(va + HUGE, HUGE, 41);
    f.huge(va + 2 * HUGE, 42);
    let r = f.mirror.migrate_to_device(va, 3 * HUGE).unwrap();
    assert_eq!(r.cpages, 3 * 512);
    assert_eq!(kind(f.process, va), (Level::L2, "device"));
    assert_eq!(kind(f.process, va + HUGE), (Level::L1, "device"));
    assert_eq!(kind(f.process, va + 2 * HUGE), (Level::L2, "device"));
    assert_eq!(f.device.pagemap().allocated_folios().count(), 2 + 512);
    f.check(va, HUGE, 40);
    f.check(va + HUGE, HUGE, 41);
    f.check(va + 2 * HUGE, HUGE, 42);
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 2 + 512);
    assert_eq!(kind(f.process, va), (Level::L2, "leaf"));
    f.finish();
}

/// `snapshot`: one byte per page says what the process maps: an error for no access,
/// the zero page, read-only, writable, this device's page, another device's page.
fn snapshot<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = mixed_layout(&f, 7);
    assert_eq!(
        f.mirror
            .migrate_to_device(va + 5 * PAGE, PAGE)
            .unwrap()
            .cpages,
        1
    );
    assert_eq!(
        f.other_mirror
            .migrate_to_device(va + 6 * PAGE, PAGE)
            .unwrap()
            .cpages,
        1
    );
    let got = f.mirror.snapshot(va, 7 * PAGE).unwrap();
    assert_bytes(
        &got,
        &[
            PROT_ERROR,
            PROT_ERROR,
            PROT_ZERO | PROT_READ,
            PROT_READ,
            PROT_WRITE,
            PROT_DEV_PRIVATE_LOCAL | PROT_WRITE,
            PROT_DEV_PRIVATE_REMOTE | PROT_WRITE,
        ],
    );
    // The snapshot faulted nothing in.
    assert_eq!(f.on_devices(), (1, 1));
    f.finish();
}

/// The 2 MiB kinds: a writable huge page, one on this device, one on another, and
/// one unpopulated 2 MiB range.
fn snapshot_huge<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(4 * HUGE, Prot::ReadWrite);
    f.huge(va, 50);
    f.huge(va + HUGE, 51);
    f.huge(va + 2 * HUGE, 52);
    f.mirror.migrate_to_device(va + HUGE, HUGE).unwrap();
    f.other_mirror
        .migrate_to_device(va + 2 * HUGE, HUGE)
        .unwrap();
    let got = f.mirror.snapshot(va, 4 * HUGE).unwrap();
    let mut want = bytes(PROT_WRITE | PROT_PMD, 512);
    want.extend(bytes(PROT_DEV_PRIVATE_LOCAL | PROT_WRITE | PROT_PMD, 512));
    want.extend(bytes(PROT_DEV_PRIVATE_REMOTE | PROT_WRITE | PROT_PMD, 512));
    want.extend(bytes(PROT_NONE, 512));
    assert_bytes(&got, &want);
    f.check(va, HUGE, 50);
    f.check(va + HUGE, HUGE, 51);
    f.check(va + 2 * HUGE, HUGE, 52);
    f.finish();
}

/// `double_map`: two devices read the same read-only buffer; after it moves to the
/// second device, the first faults it back on its next read.
fn double_map<F: PagingFormat>() {
    let f = fixture::<F>();
    let len = 6 * PAGE;
    let va = f.process.mmap(len, Prot::ReadWrite);
    f.fill(va, len, 11);
    f.process.mprotect(va, len, Prot::Read);
    for mirror in [f.mirror, f.other_mirror] {
        let (data, r) = mirror_read(mirror, va, len);
        assert_eq!(
            r,
            CommandResult {
                cpages: 6,
                faults: 1
            }
        );
        assert_eq!(data, f.expected(len, 11));
    }
    assert_eq!(f.other_mirror.migrate_to_device(va, len).unwrap().cpages, 6);
    assert!(
        f.mirror.is_empty(),
        "the other device's migration left entries"
    );
    let (data, r) = mirror_read(f.mirror, va, len);
    assert_eq!(
        r,
        CommandResult {
            cpages: 6,
            faults: 1
        }
    );
    assert_eq!(data, f.expected(len, 11));
    assert_eq!(f.other.counters.faults.load(Ordering::Relaxed), 6);
    assert_eq!(f.on_devices(), (0, 0));
    f.check(va, len, 11);
    f.finish();
}

const EXCLUSIVE_LEN: u64 = 1 << 20;
const EXCLUSIVE_PAGES: u64 = EXCLUSIVE_LEN / PAGE;

/// `exclusive` (the device's part): the device takes a buffer for atomic access and
/// writes it while the CPU cannot map it; the CPU then sees the device's bytes.
fn exclusive<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(EXCLUSIVE_LEN, Prot::ReadWrite);
    f.fill(va, EXCLUSIVE_LEN, 12);
    let r = f.mirror.exclusive(va, EXCLUSIVE_LEN).unwrap();
    assert_eq!(r.cpages, EXCLUSIVE_PAGES);
    assert_eq!(kind(f.process, va), (Level::L1, "exclusive"));
    let (data, r) = mirror_read(f.mirror, va, EXCLUSIVE_LEN);
    assert_eq!(r.faults, 0);
    assert_eq!(data, f.expected(EXCLUSIVE_LEN, 12));
    let r = f.mirror.write(va, &f.expected(EXCLUSIVE_LEN, 13)).unwrap();
    assert_eq!(
        r,
        CommandResult {
            cpages: EXCLUSIVE_PAGES,
            faults: 0
        }
    );
    assert_eq!(
        f.mirror.check_exclusive(va, EXCLUSIVE_LEN),
        Err(DeviceError::Permission)
    );
    f.check(va, EXCLUSIVE_LEN, 13);
    assert_eq!(kind(f.process, va), (Level::L1, "leaf"));
    f.finish();
}

/// `exclusive`: CPU increments of every page end exclusive access page by page
/// (`HMM_DMIRROR_CHECK_EXCLUSIVE` then succeeds) and see the bytes.
fn exclusive_cpu_restore<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(EXCLUSIVE_LEN, Prot::ReadWrite);
    f.fill(va, EXCLUSIVE_LEN, 14);
    f.mirror.exclusive(va, EXCLUSIVE_LEN).unwrap();
    for p in 0..EXCLUSIVE_PAGES {
        let at = va + p * PAGE;
        let old = f.process.read(at).unwrap();
        assert_eq!(old, pattern(14, p, 0));
        f.process.write(at, old + 1).unwrap();
        assert_eq!(f.mirror.entry(at), None, "page {p} still in the mirror");
    }
    assert_eq!(f.mirror.check_exclusive(va, EXCLUSIVE_LEN), Ok(()));
    for p in 0..EXCLUSIVE_PAGES {
        assert_eq!(
            f.process.read(va + p * PAGE).unwrap(),
            pattern(14, p, 0) + 1
        );
    }
    f.finish();
}

/// `exclusive_mprotect`: a protection change ends exclusive access; a device write
/// then fails with `-EPERM`.
fn exclusive_mprotect<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(EXCLUSIVE_LEN, Prot::ReadWrite);
    f.fill(va, EXCLUSIVE_LEN, 15);
    f.mirror.exclusive(va, EXCLUSIVE_LEN).unwrap();
    let (data, _) = mirror_read(f.mirror, va, EXCLUSIVE_LEN);
    assert_eq!(data, f.expected(EXCLUSIVE_LEN, 15));
    f.process.mprotect(va, EXCLUSIVE_LEN, Prot::Read);
    assert_eq!(f.mirror.check_exclusive(va, EXCLUSIVE_LEN), Ok(()));
    assert_eq!(kind(f.process, va), (Level::L1, "leaf"));
    assert_eq!(
        f.mirror.write(va, &f.expected(EXCLUSIVE_LEN, 16)),
        Err(DeviceError::Permission)
    );
    f.check(va, EXCLUSIVE_LEN, 15);
    f.finish();
}

/// `compound`: a 2 MiB page reads as 2 MiB, writable, then read-only after
/// `mprotect`.
fn compound<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 17);
    assert_bytes(
        &f.mirror.snapshot(va, HUGE).unwrap(),
        &bytes(PROT_WRITE | PROT_PMD, 512),
    );
    f.process.mprotect(va, HUGE, Prot::Read);
    assert_bytes(
        &f.mirror.snapshot(va, HUGE).unwrap(),
        &bytes(PROT_READ | PROT_PMD, 512),
    );
    f.check(va, HUGE, 17);
    f.finish();
}

/// `migrate_anon_huge_empty`: an untouched 2 MiB range migrates as one 2 MiB device
/// folio of zeros, and comes back whole on a CPU touch.
fn migrate_anon_huge_empty<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    assert_eq!(kind(f.process, va), (Level::L2, "device"));
    assert_eq!(f.device.pagemap().allocated_folios().count(), 1);
    let mut out = vec![!0u64; (HUGE / 8) as usize];
    assert_eq!(f.mirror.read(va, &mut out).unwrap().faults, 0);
    assert!(out.iter().all(|&w| w == 0));
    assert_eq!(f.process.read(va + 7 * PAGE).unwrap(), 0);
    assert_eq!(kind(f.process, va), (Level::L2, "leaf"));
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 1);
    f.finish();
}

/// `migrate_anon_huge_zero`: a read-only 2 MiB range with the zero page mapped in it
/// migrates (every page a hole), reads as zeros on the device and back on the CPU.
fn migrate_anon_huge_zero<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::Read);
    assert_eq!(f.process.read(va).unwrap(), 0);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    let mut out = vec![!0u64; (HUGE / 8) as usize];
    f.mirror.read(va, &mut out).unwrap();
    assert!(out.iter().all(|&w| w == 0));
    assert_bytes(
        &f.mirror.snapshot(va, PAGE).unwrap(),
        &[PROT_DEV_PRIVATE_LOCAL | PROT_READ],
    );
    // No huge zero page here (Linux has one): the zero page and the empty slots around
    // it are 4 KiB holes, so 512 4 KiB folios.
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    assert_eq!(f.device.pagemap().allocated_folios().count(), 512);
    for p in 0..512 {
        assert_eq!(f.process.read(va + p * PAGE).unwrap(), 0);
    }
    f.finish();
}

/// `migrate_anon_huge_free`: a 2 MiB page migrates whole; freeing the range gives the
/// device folio back.
fn migrate_anon_huge_free<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 18);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    let (data, _) = mirror_read(f.mirror, va, HUGE);
    assert_eq!(data, f.expected(HUGE, 18));
    f.process.munmap(va, HUGE);
    assert_eq!(f.on_devices(), (0, 0));
    assert_eq!(f.device.counters.freed.load(Ordering::Relaxed), 512);
    assert!(f.mirror.is_empty());
    f.finish();
}

/// `migrate_anon_huge_fault`: a 2 MiB page on the device reads as one 2 MiB device
/// page; a CPU touch brings it back whole (the driver migrates the folio).
fn migrate_anon_huge_fault<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 19);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    assert_bytes(
        &f.mirror.snapshot(va, HUGE).unwrap(),
        &bytes(PROT_DEV_PRIVATE_LOCAL | PROT_WRITE | PROT_PMD, 512),
    );
    assert_eq!(
        f.process.read(va + 300 * PAGE).unwrap(),
        pattern(19, 300, 0)
    );
    assert_eq!(kind(f.process, va), (Level::L2, "leaf"));
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 1);
    f.check(va, HUGE, 19);
    f.finish();
}

/// A CPU touch in the middle of a 2 MiB device page, with a driver that brings back
/// only the faulting page: the folio splits, one page comes back, 511 stay.
fn migrate_anon_huge_fault_split<F: PagingFormat>() {
    let f = fixture::<F>();
    f.device.set_fault_policy(FaultPolicy::Page);
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 20);
    f.mirror.migrate_to_device(va, HUGE).unwrap();
    assert_eq!(
        f.process.read(va + 300 * PAGE).unwrap(),
        pattern(20, 300, 0)
    );
    assert_eq!(f.device.counters.splits.load(Ordering::Relaxed), 1);
    assert_eq!(kind(f.process, va + 300 * PAGE), (Level::L1, "leaf"));
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    assert_eq!(f.on_devices(), (511, 0));
    let mut want = bytes(PROT_DEV_PRIVATE_LOCAL | PROT_WRITE, 512);
    want[300] = PROT_WRITE;
    assert_bytes(&f.mirror.snapshot(va, HUGE).unwrap(), &want);
    f.check(va, HUGE, 20);
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 512);
    f.finish();
}

/// `migrate_partial_unmap_fault`: half of a migrated 2 MiB range is unmapped (at the
/// start, a quarter in, in the middle): the 2 MiB device page splits, the unmapped
/// half's device pages are freed, the rest faults back intact. With 4 KiB and 2 MiB
/// pages.
fn migrate_partial_unmap_fault<F: PagingFormat>() {
    let f = fixture::<F>();
    for huge in [false, true] {
        for offset in [0, HUGE / 4, HUGE / 2] {
            let seed = 60 + offset / PAGE + u64::from(huge);
            let va = f.process.mmap(HUGE, Prot::ReadWrite);
            if huge {
                f.huge(va, seed);
            } else {
                f.fill(va, HUGE, seed);
            }
            assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
            f.process.munmap(va + offset, HUGE / 2);
            assert_eq!(f.on_devices(), (256, 0), "huge {huge} offset {offset:#x}");
            for p in (0..512).filter(|p| !(offset / PAGE..(offset + HUGE / 2) / PAGE).contains(p)) {
                assert_eq!(f.process.read(va + p * PAGE).unwrap(), pattern(seed, p, 0));
            }
            assert_eq!(f.on_devices(), (0, 0));
            f.process.munmap(va, HUGE);
        }
    }
    f.finish();
}

/// `migrate_anon_huge_err`: the 2 MiB device allocation fails once: the page is split
/// and moves as 512 4 KiB pages. Then a 2 MiB RAM allocation fails on the way back:
/// it comes back as 512 4 KiB pages.
fn migrate_anon_huge_err<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 21);
    f.device.fail_large_allocations(1);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    assert_eq!(f.device.pagemap().allocated_folios().count(), 512);
    let (data, _) = mirror_read(f.mirror, va, HUGE);
    assert_eq!(data, f.expected(HUGE, 21));
    f.check(va, HUGE, 21);

    let va = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(va, 22);
    f.mirror.migrate_to_device(va, HUGE).unwrap();
    assert_eq!(kind(f.process, va), (Level::L2, "device"));
    f.machine.ram.fail_large_allocations(1);
    assert_eq!(f.mirror.migrate_to_system(va, HUGE).unwrap().cpages, 512);
    assert_eq!(kind(f.process, va), (Level::L1, "leaf"));
    assert_eq!(f.on_devices(), (0, 0));
    f.check(va, HUGE, 22);
    f.finish();
}

/// `migrate_anon_huge_zero_err`: an empty 2 MiB range whose 2 MiB device allocation
/// fails moves as 512 zeroed 4 KiB pages.
fn migrate_anon_huge_zero_err<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(HUGE, Prot::Read);
    f.device.fail_large_allocations(1);
    assert_eq!(f.mirror.migrate_to_device(va, HUGE).unwrap().cpages, 512);
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    let mut out = vec![!0u64; (HUGE / 8) as usize];
    f.mirror.read(va, &mut out).unwrap();
    assert!(out.iter().all(|&w| w == 0));
    assert_eq!(f.process.read(va + 2048 * 8).unwrap(), 0);
    f.finish();
}

/// Teardown with pages on the device (a process exits with its buffer migrated, 4 KiB
/// and 2 MiB): every device page is freed, the mirror emptied.
fn release_with_pages_on_device<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 23);
    let huge = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(huge, 24);
    f.mirror.migrate_to_device(va, LEN).unwrap();
    f.mirror.migrate_to_device(huge, HUGE).unwrap();
    f.other_mirror.migrate_to_device(va, PAGE).unwrap_err();
    assert_eq!(f.on_devices(), (NPAGES + 512, 0));
    f.process.exit();
    assert!(f.mirror.is_empty());
    assert_eq!(f.on_devices(), (0, 0));
    assert_eq!(
        f.device.counters.freed.load(Ordering::Relaxed),
        NPAGES + 512
    );
    f.finish();
}

/// Eviction of a pagemap whose pages are mapped in two processes (4 KiB and 2 MiB):
/// every page comes back through its reverse map, with its bytes, and the pagemap can
/// then leave the device-private space.
fn evict_from_several_processes<F: PagingFormat>() {
    let f = fixture::<F>();
    let second = f.machine.process();
    let second_mirror = f.device.open(second);
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    f.fill(va, LEN, 25);
    let huge = f.process.mmap(HUGE, Prot::ReadWrite);
    f.huge(huge, 26);
    f.mirror.migrate_to_device(va, LEN).unwrap();
    f.mirror.migrate_to_device(huge, HUGE).unwrap();
    let g = Fixture {
        process: second,
        mirror: second_mirror,
        ..f
    };
    let va2 = second.mmap(LEN, Prot::ReadWrite);
    g.fill(va2, LEN, 27);
    second_mirror.migrate_to_device(va2, LEN).unwrap();
    assert_eq!(f.on_devices(), (2 * NPAGES + 512, 0));
    assert_eq!(f.device.evict(), Ok(2 * NPAGES + 512));
    assert_eq!(f.on_devices(), (0, 0));
    assert!(f.mirror.is_empty() && second_mirror.is_empty());
    assert_eq!(
        f.device.release(),
        Ok(0),
        "release after eviction moves nothing"
    );
    assert!(
        f.device.pagemap().id().is_none(),
        "the pagemap left the space"
    );
    f.check(va, LEN, 25);
    f.check(huge, HUGE, 26);
    assert_eq!(kind(f.process, huge), (Level::L2, "leaf"));
    g.check(va2, LEN, 27);
    assert_eq!(f.device.counters.faults.load(Ordering::Relaxed), 0);
    second.mmu().assert_clean();
    second.exit();
    f.finish();
}

/// Two owners in one process: each device migrates, reads back and snapshots only its
/// own pages; a device read of the other's pages faults them back through the other's
/// driver.
fn two_owners<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(2 * LEN, Prot::ReadWrite);
    f.fill(va, 2 * LEN, 28);
    f.mirror.migrate_to_device(va, LEN).unwrap();
    f.other_mirror.migrate_to_device(va + LEN, LEN).unwrap();
    assert_eq!(f.on_devices(), (NPAGES, NPAGES));
    // Migrating back collects only the device's own pages.
    assert_eq!(
        f.mirror.migrate_to_system(va, 2 * LEN).unwrap().cpages,
        NPAGES
    );
    assert_eq!(f.on_devices(), (0, NPAGES));
    let mut want = bytes(PROT_WRITE, NPAGES);
    want.extend(bytes(PROT_DEV_PRIVATE_REMOTE | PROT_WRITE, NPAGES));
    assert_bytes(&f.mirror.snapshot(va, 2 * LEN).unwrap(), &want);
    let (data, r) = mirror_read(f.mirror, va, 2 * LEN);
    assert_eq!(r.faults, 1);
    assert_eq!(data, f.expected(2 * LEN, 28));
    assert_eq!(f.other.counters.faults.load(Ordering::Relaxed), NPAGES);
    assert_eq!(f.on_devices(), (0, 0));
    f.check(va, 2 * LEN, 28);
    f.finish();
}

/// An allocation budget: the device has room for 100 pages of a 256-page range; those
/// move, the rest stays in RAM (`-ENOENT`), and all bytes stay right.
fn allocation_budget<F: PagingFormat>() {
    let f = fixture::<F>();
    let len = 256 * PAGE;
    let va = f.process.mmap(len, Prot::ReadWrite);
    f.fill(va, len, 29);
    f.device.set_budget(100);
    assert_eq!(
        f.mirror.migrate_to_device(va, len),
        Err(DeviceError::NotFound)
    );
    assert_eq!(f.on_devices(), (100, 0));
    let snap = f.mirror.snapshot(va, len).unwrap();
    let local = PROT_DEV_PRIVATE_LOCAL | PROT_WRITE;
    assert_eq!(snap.iter().filter(|&&b| b == local).count(), 100);
    assert_eq!(snap.iter().filter(|&&b| b == PROT_WRITE).count(), 156);
    f.device.set_budget(i64::MAX / 2);
    assert_eq!(f.mirror.migrate_to_device(va, len).unwrap().cpages, 256);
    f.check(va, len, 29);
    f.finish();
}

/// Copy-engine failures: pages whose copy to the device fails stay in RAM; a failed
/// copy back makes the CPU touch a bus error, and the page stays on the device,
/// intact, until the engine works again.
fn copy_failure<F: PagingFormat>() {
    let f = fixture::<F>();
    let len = 64 * PAGE;
    let va = f.process.mmap(len, Prot::ReadWrite);
    f.fill(va, len, 31);
    f.device.fail_copies(10);
    assert_eq!(
        f.mirror.migrate_to_device(va, len),
        Err(DeviceError::NotFound)
    );
    assert_eq!(f.on_devices(), (54, 0));
    assert_eq!(f.mirror.migrate_to_device(va, len).unwrap().cpages, 64);
    f.device.fail_copies(u32::MAX);
    assert!(matches!(f.process.read(va), Err(CpuError::Bus { .. })));
    assert_eq!(kind(f.process, va), (Level::L1, "device"));
    f.device.fail_copies(0);
    f.check(va, len, 31);
    f.finish();
}

/// Pinned system pages do not migrate; unpinned, they do.
fn pinned_pages<F: PagingFormat>() {
    let f = fixture::<F>();
    let len = 4 * PAGE;
    let va = f.process.mmap(len, Prot::ReadWrite);
    f.fill(va, len, 32);
    let (pfn, _) = f.frame(va + PAGE).unwrap();
    f.machine.ram.set_pinned(pfn, true);
    assert_eq!(
        f.mirror.migrate_to_device(va, len),
        Err(DeviceError::NotFound)
    );
    let local = PROT_DEV_PRIVATE_LOCAL | PROT_WRITE;
    assert_bytes(
        &f.mirror.snapshot(va, len).unwrap(),
        &[local, PROT_WRITE, local, local],
    );
    f.machine.ram.set_pinned(pfn, false);
    assert_eq!(f.mirror.migrate_to_device(va, len).unwrap().cpages, 4);
    f.check(va, len, 32);
    f.finish();
}

/// The command prologue: unaligned or empty ranges are `-EINVAL`, and so is a range
/// outside every region.
fn bad_arguments<F: PagingFormat>() {
    let f = fixture::<F>();
    let va = f.process.mmap(LEN, Prot::ReadWrite);
    let mut out = [0u64; 512];
    assert_eq!(f.mirror.read(va + 8, &mut out), Err(DeviceError::Invalid));
    assert_eq!(f.mirror.read(va, &mut []), Err(DeviceError::Invalid));
    assert_eq!(f.mirror.migrate_to_device(va, 0), Err(DeviceError::Invalid));
    assert_eq!(
        f.mirror.migrate_to_device(va + 1, PAGE),
        Err(DeviceError::Invalid)
    );
    assert_eq!(
        f.mirror.migrate_to_device(!0xfff, PAGE),
        Err(DeviceError::Invalid)
    );
    assert_eq!(
        f.mirror.migrate_to_system(va + LEN + HUGE, PAGE),
        Err(DeviceError::Invalid)
    );
    assert_eq!(f.mirror.snapshot(va, 0), Err(DeviceError::Invalid));
    assert_eq!(f.mirror.exclusive(va + 4, PAGE), Err(DeviceError::Invalid));
    assert_eq!(f.mirror.check_exclusive(va, 0), Err(DeviceError::Invalid));
    f.finish();
}
